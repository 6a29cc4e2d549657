//! Joining by asking and by belonging, through matrix-sdk: a knock seen by the room and in the
//! knocker's `/sync` (`rooms.knock`), then accepted with an invite; a restricted room joined by a
//! member of the space it allows (`join_authorised_via_users_server`), refused to others; and a
//! room upgrade both users follow to the replacement room.

use std::time::Duration;

use ganglion_testkit::{Backend, enc, sdk_client};
use matrix_sdk::{
    RoomState,
    config::SyncSettings,
    ruma::{OwnedRoomOrAliasId, RoomId},
};
use serde_json::{Value, json};

use crate::{PASSWORD, SYNC_DEADLINE};

on_all_backends!(
    a_knock_is_accepted_with_an_invite,
    a_restricted_room_lets_in_members_of_its_space,
    both_users_follow_a_room_upgrade,
);

async fn a_knock_is_accepted_with_an_invite(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice, carol] = <[_; 2]>::try_from(crate::register_all(&server, &["alice", "carol"]).await).unwrap();
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let bob = crate::account_of(&server, &bob_sdk);
    let room = alice
        .create_room(&json!({
            "preset": "private_chat",
            "name": "Members only",
            "room_alias_name": "members",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
        }))
        .await
        .unwrap();

    // Bob may not join, only knock (by alias).
    let join = bob.post(&format!("/rooms/{}/join", enc(&room)), &json!({})).await.unwrap();
    assert_eq!((join.status, join.errcode()), (403, Some("M_FORBIDDEN")), "{}", join.text);
    let alias: OwnedRoomOrAliasId = format!("#members:{}", server.server_name).try_into().unwrap();
    let knocked = bob_sdk.knock(alias, Some("let me in".into()), Vec::new()).await.unwrap();
    assert_eq!(knocked.room_id().as_str(), room);
    assert_eq!(knocked.state(), RoomState::Knocked);

    // Bob's sync has the room under `knock`, with the state he may see.
    let synced = bob.sync("").await.unwrap();
    let knock_state = synced["rooms"]["knock"][&room]["knock_state"]["events"].as_array().unwrap().clone();
    let of_type =
        |kind: &str| knock_state.iter().find(|e| e["type"] == json!(kind)).cloned().unwrap_or(Value::Null);
    assert_eq!(of_type("m.room.name")["content"]["name"], json!("Members only"));
    assert_eq!(of_type("m.room.join_rules")["content"]["join_rule"], json!("knock"));
    assert_eq!(of_type("m.room.member")["content"]["membership"], json!("knock"));
    // The room sees the knock; Carol (not in it, not knocking) cannot knock twice as Bob can't.
    let member = alice
        .get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id)))
        .await
        .unwrap()
        .ok();
    assert_eq!(
        (member["membership"].clone(), member["reason"].clone()),
        (json!("knock"), json!("let me in"))
    );
    let open = carol.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    let refused = carol.post(&format!("/knock/{}", enc(&open)), &json!({})).await.unwrap();
    assert_eq!((refused.status, refused.errcode()), (403, Some("M_FORBIDDEN")), "Carol is in her own room");
    let unknown = carol.post(&format!("/knock/{}", enc("!nowhere:localhost")), &json!({})).await.unwrap();
    assert_eq!((unknown.status, unknown.errcode()), (404, Some("M_NOT_FOUND")));

    // Alice lets him in; his client sees the invite, and he joins.
    alice.invite(&room, &bob.user_id).await.unwrap();
    let room_id = RoomId::parse(&room).unwrap();
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    let settings = SyncSettings::default().timeout(Duration::from_secs(1));
    while bob_sdk.get_room(&room_id).map(|room| room.state()) != Some(RoomState::Invited) {
        assert!(tokio::time::Instant::now() < deadline, "Bob never saw his invite");
        bob_sdk.sync_once(settings.clone()).await.unwrap();
    }
    bob_sdk.get_room(&room_id).unwrap().join().await.unwrap();
    let members = alice.get(&format!("/rooms/{}/joined_members", enc(&room))).await.unwrap().ok();
    assert!(members["joined"].get(&bob.user_id).is_some(), "{members}");
}

async fn a_restricted_room_lets_in_members_of_its_space(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice, bob, carol] =
        <[_; 3]>::try_from(crate::register_all(&server, &["alice", "bob", "carol"]).await).unwrap();
    let space = alice
        .create_room(&json!({ "preset": "private_chat", "name": "Ministry", "creation_content": { "type": "m.space" } }))
        .await
        .unwrap();
    alice.invite(&space, &bob.user_id).await.unwrap();
    bob.join(&space).await.unwrap();
    let restricted =
        json!({ "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] });
    let room = alice
        .create_room(&json!({
            "preset": "private_chat",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": restricted }],
        }))
        .await
        .unwrap();
    alice.send_state(&space, "m.space.child", &room, &json!({ "via": [server.server_name] })).await.unwrap();

    // Bob, a member of the space, joins through matrix-sdk; Alice vouched for him.
    let bob_sdk = ganglion_testkit::sdk_login(&server.base_url, "bob", PASSWORD).await.unwrap();
    let joined = bob_sdk.join_room_by_id(&RoomId::parse(&room).unwrap()).await.unwrap();
    assert_eq!(joined.room_id().as_str(), room);
    let member = alice
        .get(&format!("/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id)))
        .await
        .unwrap()
        .ok();
    assert_eq!(member["membership"], json!("join"));
    assert_eq!(member["join_authorised_via_users_server"], json!(alice.user_id));
    // Carol is in no allowed room.
    let refused = carol.post(&format!("/rooms/{}/join", enc(&room)), &json!({})).await.unwrap();
    assert_eq!((refused.status, refused.errcode()), (403, Some("M_FORBIDDEN")), "{}", refused.text);
    let knock = carol.post(&format!("/knock/{}", enc(&room)), &json!({})).await.unwrap();
    assert_eq!(
        (knock.status, knock.errcode()),
        (403, Some("M_FORBIDDEN")),
        "a restricted room takes no knocks"
    );

    // `knock_restricted`: members of the space walk in, others knock.
    let rule = json!({ "join_rule": "knock_restricted", "allow": [{ "type": "m.room_membership", "room_id": space }] });
    let lounge = alice
        .create_room(&json!({
            "preset": "private_chat",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": rule }],
        }))
        .await
        .unwrap();
    bob.join(&lounge).await.unwrap();
    let knock = carol.post(&format!("/knock/{}", enc(&lounge)), &json!({ "reason": "hello" })).await.unwrap();
    assert_eq!(knock.status, 200, "{}", knock.text);
    let member = alice
        .get(&format!("/rooms/{}/state/m.room.member/{}", enc(&lounge), enc(&carol.user_id)))
        .await
        .unwrap()
        .ok();
    assert_eq!(member["membership"], json!("knock"));
}

async fn both_users_follow_a_room_upgrade(backend: Backend) {
    let server = crate::start(backend).await;
    let alice_sdk = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let alice = crate::account_of(&server, &alice_sdk);
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let bob = crate::account_of(&server, &bob_sdk);
    let old = alice
        .create_room(&json!({
            "preset": "public_chat",
            "room_version": "10",
            "name": "Old hall",
            "topic": "Where we met",
            "room_alias_name": "hall",
            "visibility": "public",
        }))
        .await
        .unwrap();
    bob.join(&old).await.unwrap();
    alice.send_text(&old, "moving soon").await.unwrap();

    // Bob may not upgrade; a version this server lacks is refused.
    let upgrade = |account: &ganglion_testkit::Account, version: &str| {
        let path = format!("/rooms/{}/upgrade", enc(&old));
        let (account, body) = (account.clone(), json!({ "new_version": version }));
        async move { account.post(&path, &body).await.unwrap() }
    };
    let refused = upgrade(&bob, "12").await;
    assert_eq!((refused.status, refused.errcode()), (403, Some("M_FORBIDDEN")), "{}", refused.text);
    let unsupported = upgrade(&alice, "99").await;
    assert_eq!((unsupported.status, unsupported.errcode()), (400, Some("M_UNSUPPORTED_ROOM_VERSION")));

    let new = upgrade(&alice, "12").await.ok()["replacement_room"].as_str().unwrap().to_owned();
    // The tombstone, the predecessor, the copied state, the alias and the directory moved.
    let tombstone = bob.get(&format!("/rooms/{}/state/m.room.tombstone/", enc(&old))).await.unwrap().ok();
    assert_eq!(tombstone["replacement_room"], json!(new));
    let create = alice.get(&format!("/rooms/{}/state/m.room.create/", enc(&new))).await.unwrap().ok();
    assert_eq!(
        (create["room_version"].clone(), create["predecessor"]["room_id"].clone()),
        (json!("12"), json!(old))
    );
    let name = alice.get(&format!("/rooms/{}/state/m.room.name/", enc(&new))).await.unwrap().ok();
    assert_eq!(name["name"], json!("Old hall"));
    let resolved = bob
        .get(&format!("/directory/room/{}", enc(&format!("#hall:{}", server.server_name))))
        .await
        .unwrap()
        .ok();
    assert_eq!(resolved["room_id"], json!(new));
    let canonical =
        alice.get(&format!("/rooms/{}/state/m.room.canonical_alias/", enc(&new))).await.unwrap().ok();
    assert_eq!(canonical["alias"], json!(format!("#hall:{}", server.server_name)));
    let listed = bob.get("/publicRooms").await.unwrap().ok();
    let listed: Vec<&str> =
        listed["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(listed, [new.as_str()]);
    let levels = alice.get(&format!("/rooms/{}/state/m.room.power_levels/", enc(&old))).await.unwrap().ok();
    assert_eq!((levels["events_default"].clone(), levels["invite"].clone()), (json!(50), json!(50)));
    let silenced = bob.send_text(&old, "still here?").await;
    assert!(silenced.is_err(), "Bob may no longer talk in the old room");

    // Both follow through their clients: the old room names its successor, the new its
    // predecessor.
    for (client, account) in [(&alice_sdk, &alice), (&bob_sdk, &bob)] {
        client.sync_once(SyncSettings::default()).await.unwrap();
        let old_room = client.get_room(&RoomId::parse(&old).unwrap()).unwrap();
        let successor = old_room.successor_room().expect("the old room names its successor");
        assert_eq!(successor.room_id.as_str(), new);
        let joined = client.join_room_by_id(&successor.room_id).await.unwrap();
        client.sync_once(SyncSettings::default()).await.unwrap();
        let predecessor = joined.predecessor_room().expect("the new room names its predecessor");
        assert_eq!(predecessor.room_id.as_str(), old);
        account.send_text(&new, &format!("{} made it", account.user_id)).await.unwrap();
    }
    let members = alice.get(&format!("/rooms/{}/joined_members", enc(&new))).await.unwrap().ok();
    assert_eq!(members["joined"].as_object().unwrap().len(), 2, "{members}");
}
