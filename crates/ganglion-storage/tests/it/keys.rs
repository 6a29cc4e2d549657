//! Device, one-time, fallback and cross-signing keys, signatures and the device-lists stream.

use std::{collections::BTreeSet, sync::Arc};

use ganglion_storage::{
    Backend,
    keys::{self, CrossSigningKeyType, KeySignatureRow, OneTimeKey},
    replication,
};

const CURVE: &str = "signed_curve25519";

fn key(algorithm: &str, key_id: &str, value: &str) -> OneTimeKey {
    OneTimeKey {
        algorithm: algorithm.into(),
        key_id: key_id.into(),
        key_json: format!("{{\"key\":\"{value}\"}}"),
    }
}

fn users(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

on_both_backends!(device_keys_are_kept_per_device, |db| {
    let mut conn = db.conn().await.unwrap();
    keys::upsert_device_keys(&mut conn, "@a:x", "A1", "{\"v\":1}").await.unwrap();
    keys::upsert_device_keys(&mut conn, "@a:x", "A1", "{\"v\":2}").await.unwrap();
    keys::upsert_device_keys(&mut conn, "@a:x", "A2", "{\"v\":3}").await.unwrap();
    keys::upsert_device_keys(&mut conn, "@b:x", "B1", "{\"v\":4}").await.unwrap();
    assert_eq!(keys::device_keys_json(&mut conn, "@a:x", "A1").await.unwrap().as_deref(), Some("{\"v\":2}"));
    assert_eq!(keys::device_keys_json(&mut conn, "@a:x", "A3").await.unwrap(), None);
    let of_a = keys::device_keys_of_users(&mut conn, &users(&["@a:x", "@nobody:x"])).await.unwrap();
    assert_eq!(
        of_a.iter()
            .map(|row| (row.user_id.as_str(), row.device_id.as_str(), row.keys_json.as_str()))
            .collect::<Vec<_>>(),
        vec![("@a:x", "A1", "{\"v\":2}"), ("@a:x", "A2", "{\"v\":3}")]
    );
    // More users than one IN list holds: both ends are found.
    let mut many: Vec<String> = (0..1000).map(|n| format!("@u{n}:x")).collect();
    many.insert(0, "@a:x".to_owned());
    many.push("@b:x".to_owned());
    assert_eq!(keys::device_keys_of_users(&mut conn, &many).await.unwrap().len(), 3);
    assert!(keys::device_keys_of_users(&mut conn, &[]).await.unwrap().is_empty());
});

on_both_backends!(deleting_a_device_deletes_its_keys, |db| {
    let mut conn = db.conn().await.unwrap();
    for device in ["A1", "A2"] {
        keys::upsert_device_keys(&mut conn, "@a:x", device, "{}").await.unwrap();
        keys::insert_one_time_keys(&mut conn, "@a:x", device, &[key(CURVE, "K1", "v")]).await.unwrap();
        keys::upsert_fallback_key(&mut conn, "@a:x", device, &key(CURVE, "F1", "f")).await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    keys::delete_keys_of_device(&mut tx, "@a:x", "A1").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(keys::device_keys_json(&mut conn, "@a:x", "A1").await.unwrap(), None);
    assert!(keys::one_time_key_counts(&mut conn, "@a:x", "A1").await.unwrap().is_empty());
    assert!(keys::unused_fallback_key_types(&mut conn, "@a:x", "A1").await.unwrap().is_empty());
    assert_eq!(keys::claim_fallback_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(), None);
    // The other device keeps everything.
    assert!(keys::device_keys_json(&mut conn, "@a:x", "A2").await.unwrap().is_some());
    assert_eq!(
        keys::one_time_key_counts(&mut conn, "@a:x", "A2").await.unwrap(),
        vec![(CURVE.to_owned(), 1)]
    );
    assert_eq!(
        keys::unused_fallback_key_types(&mut conn, "@a:x", "A2").await.unwrap(),
        vec![CURVE.to_owned()]
    );
    // A sync reads both in one query.
    assert_eq!(
        keys::device_key_state(&mut conn, "@a:x", "A2").await.unwrap(),
        (vec![(CURVE.to_owned(), 1)], vec![CURVE.to_owned()])
    );
    assert_eq!(keys::device_key_state(&mut conn, "@a:x", "A1").await.unwrap(), (vec![], vec![]));
});

on_both_backends!(one_time_keys_are_counted_and_claimed_once, |db| {
    let mut conn = db.conn().await.unwrap();
    let uploaded = vec![key(CURVE, "K2", "b"), key(CURVE, "K1", "a"), key("curve25519", "K1", "c")];
    assert!(keys::insert_one_time_keys(&mut conn, "@a:x", "A1", &uploaded).await.unwrap().is_empty());
    // Uploading the same keys again is fine and adds nothing.
    assert!(keys::insert_one_time_keys(&mut conn, "@a:x", "A1", &uploaded).await.unwrap().is_empty());
    assert_eq!(
        keys::one_time_key_counts(&mut conn, "@a:x", "A1").await.unwrap(),
        vec![("curve25519".to_owned(), 1), (CURVE.to_owned(), 2)]
    );
    // A stored key id with a new value is refused, and nothing of the upload is stored.
    let conflicting = vec![key(CURVE, "K3", "new"), key(CURVE, "K1", "changed")];
    assert_eq!(
        keys::insert_one_time_keys(&mut conn, "@a:x", "A1", &conflicting).await.unwrap(),
        vec![key(CURVE, "K1", "a")]
    );
    assert_eq!(keys::one_time_key_counts(&mut conn, "@a:x", "A1").await.unwrap()[1], (CURVE.to_owned(), 2));
    // Another device may use the same key ids.
    assert!(keys::insert_one_time_keys(&mut conn, "@a:x", "A2", &conflicting).await.unwrap().is_empty());

    assert_eq!(
        keys::claim_one_time_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(),
        Some(key(CURVE, "K1", "a"))
    );
    assert_eq!(
        keys::claim_one_time_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(),
        Some(key(CURVE, "K2", "b"))
    );
    assert_eq!(keys::claim_one_time_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(), None);
    assert_eq!(keys::claim_one_time_key(&mut conn, "@a:x", "A9", CURVE).await.unwrap(), None);
    assert_eq!(
        keys::one_time_key_counts(&mut conn, "@a:x", "A1").await.unwrap(),
        vec![("curve25519".to_owned(), 1)]
    );
    // A claimed key is gone, so its id may be uploaded again.
    assert!(
        keys::insert_one_time_keys(&mut conn, "@a:x", "A1", &[key(CURVE, "K1", "z")])
            .await
            .unwrap()
            .is_empty()
    );
    // Uploads larger than one statement's chunk.
    let many: Vec<_> = (0..1100).map(|n| key(CURVE, &format!("M{n:04}"), "m")).collect();
    let mut tx = db.begin().await.unwrap();
    assert!(keys::insert_one_time_keys(&mut tx, "@a:x", "A3", &many).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(
        keys::one_time_key_counts(&mut conn, "@a:x", "A3").await.unwrap(),
        vec![(CURVE.to_owned(), 1100)]
    );
    let mut changed = many.clone();
    changed[1050].key_json = "{}".to_owned();
    assert_eq!(
        keys::insert_one_time_keys(&mut conn, "@a:x", "A3", &changed).await.unwrap(),
        vec![many[1050].clone()]
    );
});

on_both_backends!(concurrent_claims_hand_out_each_key_once, connections = 20, |db| {
    {
        let mut conn = db.conn().await.unwrap();
        let uploaded: Vec<_> = (0..10).map(|n| key(CURVE, &format!("K{n}"), &n.to_string())).collect();
        assert!(keys::insert_one_time_keys(&mut conn, "@a:x", "A1", &uploaded).await.unwrap().is_empty());
    }
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let claims: Vec<_> = (0..20)
        .map(|_| {
            let db = db.clone();
            let start = start.clone();
            tokio::spawn(async move {
                if db.backend == Backend::Postgres {
                    // Each claim holds its row lock until commit, so the others must wait for it
                    // and find the key gone.
                    let mut tx = db.begin().await.unwrap();
                    start.wait().await;
                    let claimed = keys::claim_one_time_key(&mut tx, "@a:x", "A1", CURVE).await.unwrap();
                    tokio::task::yield_now().await;
                    tx.commit().await.unwrap();
                    claimed
                } else {
                    // SQLite's transactions take the write lock at BEGIN; plain connections race.
                    let mut conn = db.conn().await.unwrap();
                    start.wait().await;
                    keys::claim_one_time_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap()
                }
            })
        })
        .collect();
    let mut handed_out = Vec::new();
    let mut nones = 0;
    for claim in claims {
        match claim.await.unwrap() {
            Some(claimed) => handed_out.push(claimed.key_id),
            None => nones += 1,
        }
    }
    let distinct: BTreeSet<_> = handed_out.iter().cloned().collect();
    assert_eq!(handed_out.len(), 10);
    assert_eq!(distinct.len(), 10);
    assert_eq!(nones, 10);
    let mut conn = db.conn().await.unwrap();
    assert!(keys::one_time_key_counts(&mut conn, "@a:x", "A1").await.unwrap().is_empty());
});

on_both_backends!(fallback_keys_stay_claimable_and_reset_when_replaced, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(keys::claim_fallback_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(), None);
    keys::upsert_fallback_key(&mut conn, "@a:x", "A1", &key(CURVE, "F1", "one")).await.unwrap();
    keys::upsert_fallback_key(&mut conn, "@a:x", "A1", &key("other", "O1", "o")).await.unwrap();
    assert_eq!(
        keys::unused_fallback_key_types(&mut conn, "@a:x", "A1").await.unwrap(),
        vec!["other".to_owned(), CURVE.to_owned()]
    );
    for _ in 0..2 {
        assert_eq!(
            keys::claim_fallback_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(),
            Some(key(CURVE, "F1", "one"))
        );
    }
    assert_eq!(
        keys::unused_fallback_key_types(&mut conn, "@a:x", "A1").await.unwrap(),
        vec!["other".to_owned()]
    );
    // The same key again stays used.
    keys::upsert_fallback_key(&mut conn, "@a:x", "A1", &key(CURVE, "F1", "one")).await.unwrap();
    assert_eq!(
        keys::unused_fallback_key_types(&mut conn, "@a:x", "A1").await.unwrap(),
        vec!["other".to_owned()]
    );
    // A new key replaces it, unused.
    keys::upsert_fallback_key(&mut conn, "@a:x", "A1", &key(CURVE, "F2", "two")).await.unwrap();
    assert_eq!(
        keys::unused_fallback_key_types(&mut conn, "@a:x", "A1").await.unwrap(),
        vec!["other".to_owned(), CURVE.to_owned()]
    );
    assert_eq!(
        keys::claim_fallback_key(&mut conn, "@a:x", "A1", CURVE).await.unwrap(),
        Some(key(CURVE, "F2", "two"))
    );
    // The same id with another value is another key.
    keys::upsert_fallback_key(&mut conn, "@a:x", "A1", &key(CURVE, "F2", "resigned")).await.unwrap();
    assert_eq!(
        keys::unused_fallback_key_types(&mut conn, "@a:x", "A1").await.unwrap(),
        vec!["other".to_owned(), CURVE.to_owned()]
    );
});

on_both_backends!(cross_signing_keys_and_signatures, |db| {
    let mut conn = db.conn().await.unwrap();
    for key_type in CrossSigningKeyType::all() {
        assert_eq!(CrossSigningKeyType::from_name(key_type.as_str()), Some(key_type));
    }
    assert_eq!(CrossSigningKeyType::from_name("device"), None);
    keys::upsert_cross_signing_key(&mut conn, "@a:x", CrossSigningKeyType::Master, "{\"m\":1}")
        .await
        .unwrap();
    keys::upsert_cross_signing_key(&mut conn, "@a:x", CrossSigningKeyType::Master, "{\"m\":2}")
        .await
        .unwrap();
    keys::upsert_cross_signing_key(&mut conn, "@a:x", CrossSigningKeyType::SelfSigning, "{\"s\":1}")
        .await
        .unwrap();
    keys::upsert_cross_signing_key(&mut conn, "@b:x", CrossSigningKeyType::UserSigning, "{\"u\":1}")
        .await
        .unwrap();
    let of_a = keys::cross_signing_keys_of_users(&mut conn, &users(&["@a:x"])).await.unwrap();
    assert_eq!(
        of_a.iter().map(|row| (row.key_type, row.keys_json.as_str())).collect::<Vec<_>>(),
        vec![(CrossSigningKeyType::Master, "{\"m\":2}"), (CrossSigningKeyType::SelfSigning, "{\"s\":1}")]
    );
    assert_eq!(
        keys::cross_signing_keys_of_users(&mut conn, &users(&["@a:x", "@b:x"])).await.unwrap().len(),
        3
    );
    // The table refuses a key type the enum does not know.
    let refused = sqlx::query(
        "INSERT INTO cross_signing_keys (user_id, key_type, keys_json) VALUES ('@a:x', 'device', '{}')",
    )
    .execute(&mut *conn)
    .await;
    assert!(refused.is_err());

    let signature = |signer: &str, target: &str, target_key: &str, value: &str| KeySignatureRow {
        signer_user_id: signer.into(),
        signer_key_id: "ed25519:S".into(),
        target_user_id: target.into(),
        target_key_id: target_key.into(),
        signature: value.into(),
    };
    keys::upsert_key_signature(&mut conn, &signature("@a:x", "@b:x", "MASTERB", "old")).await.unwrap();
    keys::upsert_key_signature(&mut conn, &signature("@a:x", "@b:x", "MASTERB", "new")).await.unwrap();
    keys::upsert_key_signature(&mut conn, &signature("@a:x", "@a:x", "A1", "own")).await.unwrap();
    keys::upsert_key_signature(&mut conn, &signature("@c:x", "@b:x", "B1", "theirs")).await.unwrap();
    assert_eq!(
        keys::signatures_on_keys_of_users(&mut conn, &users(&["@b:x"])).await.unwrap(),
        vec![signature("@c:x", "@b:x", "B1", "theirs"), signature("@a:x", "@b:x", "MASTERB", "new")]
    );
    assert_eq!(
        keys::signatures_on_keys_of_users(&mut conn, &users(&["@a:x", "@b:x"])).await.unwrap().len(),
        3
    );
    assert!(keys::signatures_on_keys_of_users(&mut conn, &users(&["@c:x"])).await.unwrap().is_empty());
});

on_both_backends!(device_list_changes_by_position, |db| {
    let mut conn = db.conn().await.unwrap();
    assert_eq!(keys::max_device_list_stream_pos(&mut conn).await.unwrap(), 0);
    for (position, user) in [(1, "@a:x"), (2, "@b:x"), (3, "@a:x"), (4, "@c:x"), (5, "@b:x")] {
        keys::insert_device_list_change(&mut conn, user, position).await.unwrap();
    }
    // A position is used once.
    let reused = keys::insert_device_list_change(&mut conn, "@d:x", 5).await.unwrap_err();
    assert!(reused.is_unique_violation());
    assert_eq!(keys::max_device_list_stream_pos(&mut conn).await.unwrap(), 5);
    assert_eq!(
        keys::users_with_device_list_changes_between(&mut conn, 0, 5).await.unwrap(),
        vec![("@a:x".to_owned(), 3), ("@c:x".to_owned(), 4), ("@b:x".to_owned(), 5)]
    );
    assert_eq!(
        keys::users_with_device_list_changes_between(&mut conn, 1, 3).await.unwrap(),
        vec![("@b:x".to_owned(), 2), ("@a:x".to_owned(), 3)]
    );
    assert_eq!(
        keys::users_with_device_list_changes_among(&mut conn, &users(&["@b:x", "@a:x", "@z:x"]), 0, 4)
            .await
            .unwrap(),
        vec![("@b:x".to_owned(), 2), ("@a:x".to_owned(), 3)]
    );
    let mut many: Vec<String> = (0..1000).map(|n| format!("@u{n}:x")).collect();
    many.push("@c:x".to_owned());
    many.insert(0, "@b:x".to_owned());
    assert_eq!(
        keys::users_with_device_list_changes_among(&mut conn, &many, 0, 5).await.unwrap(),
        vec![("@c:x".to_owned(), 4), ("@b:x".to_owned(), 5)]
    );
    assert_eq!(
        replication::device_list_rows_between(&mut conn, 2, 5, 2).await.unwrap(),
        vec![(3, "@a:x".to_owned()), (4, "@c:x".to_owned())]
    );
});
