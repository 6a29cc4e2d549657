//! Room tags through matrix-sdk: set on one device, seen on another after a sync, removed; and
//! with plain requests, tags set at once all kept (the master changes one tag at a time) and bad
//! ones refused.

use std::{str::FromStr as _, time::Duration};

use ganglion_testkit::{Backend, enc, sdk_client, sdk_login};
use matrix_sdk::{
    config::SyncSettings,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::tag::{TagInfo, TagName, UserTagName},
    },
};
use serde_json::json;

use crate::{PASSWORD, SYNC_DEADLINE};

on_all_backends!(tags_set_on_one_device_reach_the_others, tags_set_at_once_are_all_kept_and_bad_ones_refused);

async fn tags_set_on_one_device_reach_the_others(backend: Backend) {
    let server = crate::start(backend).await;
    let laptop = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let room = laptop.create_room(CreateRoom::new()).await.unwrap();
    let mut favourite = TagInfo::new();
    favourite.order = Some(0.25);
    room.set_tag(TagName::Favorite, favourite).await.unwrap();
    let work = TagName::User(UserTagName::from_str("u.work").unwrap());
    room.set_tag(work.clone(), TagInfo::new()).await.unwrap();

    let phone = sdk_login(&server.base_url, "alice", PASSWORD).await.unwrap();
    phone.sync_once(SyncSettings::default()).await.unwrap();
    let on_phone = phone.get_room(room.room_id()).unwrap();
    let tags = on_phone.tags().await.unwrap().expect("the phone has the tags");
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert_eq!(tags[&TagName::Favorite].order, Some(0.25));
    assert!(tags.contains_key(&work));
    assert!(on_phone.is_favourite());

    room.remove_tag(TagName::Favorite).await.unwrap();
    let settings = SyncSettings::default().timeout(Duration::from_secs(1));
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    while on_phone.is_favourite() {
        assert!(tokio::time::Instant::now() < deadline, "the phone still sees the room as a favourite");
        phone.sync_once(settings.clone()).await.unwrap();
    }
    let tags = on_phone.tags().await.unwrap().unwrap();
    assert_eq!(tags.keys().collect::<Vec<_>>(), vec![&work]);

    let alice = crate::account_of(&server, &laptop);
    let path = format!("/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(room.room_id().as_str()));
    assert_eq!(alice.get(&path).await.unwrap().ok(), json!({ "tags": { "u.work": {} } }));
}

async fn tags_set_at_once_are_all_kept_and_bad_ones_refused(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice, bob] = <[_; 2]>::try_from(crate::register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({})).await.unwrap();
    let tags = format!("/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    assert_eq!(alice.get(&tags).await.unwrap().ok(), json!({ "tags": {} }), "never tagged");

    // Twelve tags at once, from as many requests: none is lost.
    let puts = (0..12).map(|i| {
        let (alice, path) = (&alice, format!("{tags}/u.tag{i}"));
        async move { alice.put(&path, &json!({ "order": f64::from(i) / 12.0 })).await.unwrap().ok() }
    });
    futures_util::future::join_all(puts).await;
    let all = alice.get(&tags).await.unwrap().ok();
    assert_eq!(all["tags"].as_object().unwrap().len(), 12, "{all}");
    assert_eq!(all["tags"]["u.tag6"], json!({ "order": 0.5 }));

    // Removing one leaves the others; removing one never set is fine.
    alice.delete(&format!("{tags}/u.tag0"), None).await.unwrap().ok();
    alice.delete(&format!("{tags}/u.never"), None).await.unwrap().ok();
    let left = alice.get(&tags).await.unwrap().ok();
    assert_eq!(left["tags"].as_object().unwrap().len(), 11, "{left}");
    assert!(left["tags"].get("u.tag0").is_none());

    let bad = alice.put(&format!("{tags}/u.bad"), &json!({ "order": "first" })).await.unwrap();
    assert_eq!((bad.status, bad.errcode()), (400, Some("M_BAD_JSON")), "{}", bad.text);
    let long = alice.put(&format!("{tags}/u.{}", "x".repeat(300)), &json!({})).await.unwrap();
    assert_eq!((long.status, long.errcode()), (400, Some("M_INVALID_PARAM")), "{}", long.text);
    let not_json = alice
        .api
        .raw(
            reqwest::Method::PUT,
            &format!("{tags}/u.x"),
            Some(&alice.access_token),
            Some("application/json"),
            Some(b"[".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!((not_json.status, not_json.errcode()), (400, Some("M_NOT_JSON")));
    let others = bob.get(&tags).await.unwrap();
    assert_eq!((others.status, others.errcode()), (403, Some("M_FORBIDDEN")), "{}", others.text);
    let others = bob.put(&format!("{tags}/u.mine"), &json!({})).await.unwrap();
    assert_eq!(others.status, 403);
    assert_eq!(alice.get(&tags).await.unwrap().ok()["tags"].as_object().unwrap().len(), 11, "nothing stored");
}
