//! Media metadata: uploads, ids created ahead of their upload, the quota's sum and expiry.

use ganglion_storage::{
    media::{self, MediaContent},
    secrets,
};

fn content(sha256: &str, size_bytes: i64) -> MediaContent<'_> {
    MediaContent {
        content_sha256: sha256,
        content_type: "image/png",
        filename: Some("cat.png"),
        size_bytes,
        authenticated_only: true,
    }
}

on_both_backends!(uploads_and_created_ids_take_their_content_once, |db| {
    let mut conn = db.conn().await.unwrap();
    media::insert_media(&mut conn, "up1", "@a:x", 1_000, &content("aa", 10)).await.unwrap();
    let row = media::media_by_id(&mut conn, "up1").await.unwrap().unwrap();
    assert_eq!(row.content_sha256.as_deref(), Some("aa"));
    assert_eq!((row.size_bytes, row.authenticated_only, row.quarantined), (10, true, false));
    assert_eq!(row.filename.as_deref(), Some("cat.png"));
    assert_eq!(row.unused_expires_ts, None);
    assert!(media::media_by_id(&mut conn, "nope").await.unwrap().is_none());

    media::insert_pending_media(&mut conn, "later", "@a:x", 1_000, 5_000).await.unwrap();
    media::insert_pending_media(&mut conn, "stale", "@a:x", 1_000, 2_000).await.unwrap();
    assert_eq!(media::pending_media_count(&mut conn, "@a:x", 1_500).await.unwrap(), 2);
    assert_eq!(media::pending_media_count(&mut conn, "@a:x", 3_000).await.unwrap(), 1);
    // Only its creator, before it expires, once.
    assert!(
        !media::complete_pending_media(&mut conn, "later", "@b:x", 3_000, &content("bb", 5)).await.unwrap()
    );
    assert!(
        !media::complete_pending_media(&mut conn, "stale", "@a:x", 3_000, &content("bb", 5)).await.unwrap()
    );
    assert!(
        media::complete_pending_media(&mut conn, "later", "@a:x", 3_000, &content("bb", 5)).await.unwrap()
    );
    assert!(
        !media::complete_pending_media(&mut conn, "later", "@a:x", 3_100, &content("cc", 5)).await.unwrap()
    );
    let row = media::media_by_id(&mut conn, "later").await.unwrap().unwrap();
    assert_eq!((row.content_sha256.as_deref(), row.unused_expires_ts), (Some("bb"), None));

    assert_eq!(media::bytes_uploaded_by(&mut conn, "@a:x").await.unwrap(), 15);
    assert_eq!(media::bytes_uploaded_by(&mut conn, "@b:x").await.unwrap(), 0);
    assert_eq!(media::delete_expired_pending_media(&mut conn, 3_000).await.unwrap(), 1);
    assert!(media::media_by_id(&mut conn, "stale").await.unwrap().is_none());
    assert!(media::media_by_id(&mut conn, "later").await.unwrap().is_some());
});

on_both_backends!(thumbnails_are_kept_per_source_size_method_and_animation, |db| {
    let mut conn = db.conn().await.unwrap();
    let first =
        media::ThumbnailRow { content_sha256: "t1".into(), content_type: "image/png".into(), size_bytes: 7 };
    let second =
        media::ThumbnailRow { content_sha256: "t2".into(), content_type: "image/gif".into(), size_bytes: 9 };
    assert_eq!(media::thumbnail_of(&mut conn, "src", 96, 96, "crop", false).await.unwrap(), None);
    media::insert_thumbnail(&mut conn, "src", 96, 96, "crop", false, &first, 1).await.unwrap();
    media::insert_thumbnail(&mut conn, "src", 96, 96, "crop", true, &second, 1).await.unwrap();
    // A second rendering of the same thumbnail keeps the first.
    media::insert_thumbnail(&mut conn, "src", 96, 96, "crop", false, &second, 2).await.unwrap();
    assert_eq!(media::thumbnail_of(&mut conn, "src", 96, 96, "crop", false).await.unwrap(), Some(first));
    assert_eq!(media::thumbnail_of(&mut conn, "src", 96, 96, "crop", true).await.unwrap(), Some(second));
    assert_eq!(media::thumbnail_of(&mut conn, "src", 96, 96, "scale", false).await.unwrap(), None);
});

on_both_backends!(scan_verdicts_are_kept_once_per_content, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(media::scan_verdict_of(&mut conn, "aa").await.unwrap(), None);
    let infected = media::ScanVerdict { clean: false, info: Some("Eicar".into()) };
    media::insert_scan_verdict(&mut conn, "aa", &infected, 1).await.unwrap();
    media::insert_scan_verdict(&mut conn, "aa", &media::ScanVerdict { clean: true, info: None }, 2)
        .await
        .unwrap();
    assert_eq!(media::scan_verdict_of(&mut conn, "aa").await.unwrap(), Some(infected));
});

on_both_backends!(an_infected_plaintext_overrides_a_clean_ciphertext, |db| {
    let mut conn = db.conn().await.unwrap();
    media::insert_scan_verdict(&mut conn, "bb", &media::ScanVerdict { clean: true, info: None }, 1)
        .await
        .unwrap();
    media::record_infected(&mut conn, "bb", "Eicar", 2).await.unwrap();
    media::record_infected(&mut conn, "cc", "Eicar", 2).await.unwrap();
    for content in ["bb", "cc"] {
        assert_eq!(
            media::scan_verdict_of(&mut conn, content).await.unwrap(),
            Some(media::ScanVerdict { clean: false, info: Some("Eicar".into()) })
        );
    }
});

on_both_backends!(a_shared_secret_is_created_once, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(secrets::secret_named(&mut conn, "scanner").await.unwrap(), None);
    assert_eq!(secrets::secret_named_or_insert(&mut conn, "scanner", "first", 1).await.unwrap(), "first");
    assert_eq!(secrets::secret_named_or_insert(&mut conn, "scanner", "second", 2).await.unwrap(), "first");
    assert_eq!(secrets::secret_named(&mut conn, "scanner").await.unwrap().as_deref(), Some("first"));
});

on_both_backends!(url_previews_are_kept_until_they_are_too_old, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(media::url_preview_of(&mut conn, "https://a.example/", 0).await.unwrap(), None);
    media::insert_url_preview(&mut conn, "https://a.example/", "{\"og:title\":\"A\"}", 100).await.unwrap();
    assert_eq!(
        media::url_preview_of(&mut conn, "https://a.example/", 50).await.unwrap().as_deref(),
        Some("{\"og:title\":\"A\"}")
    );
    assert_eq!(media::url_preview_of(&mut conn, "https://a.example/", 100).await.unwrap(), None);
    media::insert_url_preview(&mut conn, "https://a.example/", "{}", 200).await.unwrap();
    assert_eq!(
        media::url_preview_of(&mut conn, "https://a.example/", 150).await.unwrap().as_deref(),
        Some("{}")
    );
});
