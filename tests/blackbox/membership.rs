//! Membership changes and what they allow: leave, ban, kick, unban, forget, power to change
//! state, and the member lists (`/members`, `/joined_members`, `/joined_rooms`).

use std::collections::BTreeMap;

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{
    events_of, filter_param, get_ok, initial_since, joined_events, message_ids, register_all, room_in, start,
    sync_until,
};

on_all_backends!(
    leave_hides_later_messages_and_ban_blocks_rejoin,
    powerless_user_cannot_rename_the_room,
    kick_unban_and_forget,
    member_lists_filter_by_membership_and_time,
);

fn room_path(room: &str, rest: &str) -> String {
    format!("/rooms/{}/{rest}", enc(room))
}

/// Content of the `m.room.member` state of `user` in `room`, as `viewer` sees it.
async fn membership_of(viewer: &Account, room: &str, user: &str) -> Value {
    get_ok(viewer, &room_path(room, &format!("state/m.room.member/{}", enc(user)))).await
}

async fn joined_rooms(account: &Account) -> Vec<String> {
    let body = get_ok(account, "/joined_rooms").await;
    body["joined_rooms"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

async fn leave_hides_later_messages_and_ban_blocks_rejoin(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    let other = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room).await.unwrap();
    bob.join(&other).await.unwrap();
    let before = alice.send_text(&room, "before leave").await.unwrap();
    let mut since = initial_since(&bob, "").await;

    bob.post(&room_path(&room, "leave"), &json!({})).await.unwrap().ok();
    let syncs = sync_until(&bob, &mut since, "", |sync| room_in(sync, "leave", &room).is_object()).await;
    let left = syncs.last().unwrap();
    assert!(room_in(left, "join", &room).is_null(), "room both joined and left: {left}");
    let mut events = events_of(&room_in(left, "leave", &room)["timeline"]);
    events.extend(events_of(&room_in(left, "leave", &room)["state"]));
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == "@bob:localhost"
            && e["content"]["membership"] == "leave"),
        "leave section without bob's leave event: {left}"
    );
    assert!(!joined_rooms(&bob).await.contains(&room));

    // Messages after the leave never reach bob. The marker in a room he is still in is sent
    // later, so a sync that carries it would also carry a leaked message.
    let after = alice.send_text(&room, "after leave").await.unwrap();
    let marker = alice.send_text(&other, "marker").await.unwrap();
    let syncs = sync_until(&bob, &mut since, "", |sync| {
        message_ids(&joined_events(sync, &other, "timeline")).contains(&marker)
    })
    .await;
    for sync in &syncs {
        assert!(!sync.to_string().contains(&after), "bob received a message sent after he left: {sync}");
    }
    bob.get(&room_path(&room, &format!("event/{}", enc(&after)))).await.unwrap().err(404, "M_NOT_FOUND");
    let seen_before = get_ok(&bob, &room_path(&room, &format!("event/{}", enc(&before)))).await;
    assert_eq!(seen_before["content"]["body"], "before leave", "history from his membership stays readable");
    let history = bob.get(&room_path(&room, "messages?dir=b&limit=50")).await.unwrap();
    if history.status == 200 {
        assert!(!history.text.contains(&after), "/messages shows a post-leave message: {}", history.text);
    } else {
        history.err(403, "M_FORBIDDEN");
    }

    // Rejoining after a leave works; after a ban it does not.
    bob.join(&room).await.unwrap();
    alice
        .post(&room_path(&room, "ban"), &json!({ "user_id": "@bob:localhost", "reason": "spam" }))
        .await
        .unwrap()
        .ok();
    let banned = membership_of(&alice, &room, "@bob:localhost").await;
    assert_eq!(banned["membership"], "ban");
    assert_eq!(banned["reason"], "spam");
    bob.post(&format!("/join/{}", enc(&room)), &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
    bob.post(&room_path(&room, "join"), &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
    let message = json!({ "msgtype": "m.text", "body": "x" });
    bob.put(&room_path(&room, "send/m.room.message/banned-1"), &message)
        .await
        .unwrap()
        .err(403, "M_FORBIDDEN");
    let syncs = sync_until(&bob, &mut since, "", |sync| {
        let section = room_in(sync, "leave", &room);
        let mut events = events_of(&section["timeline"]);
        events.extend(events_of(&section["state"]));
        events.iter().any(|e| e["state_key"] == "@bob:localhost" && e["content"]["membership"] == "ban")
    })
    .await;
    assert!(room_in(syncs.last().unwrap(), "join", &room).is_null());
}

async fn powerless_user_cannot_rename_the_room(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat", "name": "Original" })).await.unwrap();
    bob.join(&room).await.unwrap();

    let name_path = room_path(&room, "state/m.room.name/");
    bob.put(&name_path, &json!({ "name": "Hijacked" })).await.unwrap().err(403, "M_FORBIDDEN");
    assert_eq!(get_ok(&bob, &name_path).await["name"], "Original");
    let levels = get_ok(&bob, &room_path(&room, "state/m.room.power_levels/")).await;
    let mut grab = levels.clone();
    grab["users"]["@bob:localhost"] = json!(100);
    bob.put(&room_path(&room, "state/m.room.power_levels/"), &grab).await.unwrap().err(403, "M_FORBIDDEN");
    assert_eq!(get_ok(&bob, &room_path(&room, "state/m.room.power_levels/")).await, levels);

    // Sending messages needs no power; the creator can rename.
    bob.send_text(&room, "hello").await.unwrap();
    alice.put(&name_path, &json!({ "name": "Renamed" })).await.unwrap().ok();
    assert_eq!(get_ok(&bob, &name_path).await["name"], "Renamed");
}

async fn kick_unban_and_forget(backend: Backend) {
    let server = start(backend).await;
    let ([alice, bob, carol], room) = crate::three_in_a_public_room(&server).await;

    // Kick: bob is out, by alice's hand, and may come back.
    let kick = json!({ "user_id": "@bob:localhost", "reason": "cool off" });
    alice.post(&room_path(&room, "kick"), &kick).await.unwrap().ok();
    let state = get_ok(&alice, &room_path(&room, "state")).await;
    let member = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .unwrap();
    assert_eq!(member["content"]["membership"], "leave");
    assert_eq!(member["content"]["reason"], "cool off");
    assert_eq!(member["sender"], "@alice:localhost", "a kick is a leave sent by someone else");
    assert!(!joined_rooms(&bob).await.contains(&room));
    bob.join(&room).await.unwrap();
    let kick_carol = json!({ "user_id": "@carol:localhost" });
    bob.post(&room_path(&room, "kick"), &kick_carol).await.unwrap().err(403, "M_FORBIDDEN");
    assert_eq!(membership_of(&alice, &room, "@carol:localhost").await["membership"], "join");

    // Ban, then unban: back to `leave`, and carol may join again.
    alice.post(&room_path(&room, "ban"), &json!({ "user_id": "@carol:localhost" })).await.unwrap().ok();
    carol.post(&format!("/join/{}", enc(&room)), &json!({})).await.unwrap().err(403, "M_FORBIDDEN");
    alice.post(&room_path(&room, "unban"), &json!({ "user_id": "@carol:localhost" })).await.unwrap().ok();
    assert_eq!(membership_of(&alice, &room, "@carol:localhost").await["membership"], "leave");
    carol.join(&room).await.unwrap();
    assert!(joined_rooms(&carol).await.contains(&room));

    // Forget: refused while joined; after leaving, the room vanishes from bob's syncs.
    let forget = bob.post(&room_path(&room, "forget"), &json!({})).await.unwrap();
    assert_eq!(forget.status, 400, "forgetting a joined room: {}", forget.text);
    bob.post(&room_path(&room, "leave"), &json!({})).await.unwrap().ok();
    // Two different queries, so no response cache for identical requests can answer the second.
    let include_leave = |limit: u32| {
        filter_param(&json!({ "room": { "include_leave": true, "timeline": { "limit": limit } } }))
    };
    let before = bob.sync(&include_leave(5)).await.unwrap();
    assert!(room_in(&before, "leave", &room).is_object(), "include_leave must show the left room: {before}");
    bob.post(&room_path(&room, "forget"), &json!({})).await.unwrap().ok();
    let after = bob.sync(&include_leave(6)).await.unwrap();
    for section in ["join", "invite", "leave"] {
        assert!(room_in(&after, section, &room).is_null(), "forgotten room in {section}: {after}");
    }
    assert!(joined_rooms(&alice).await.contains(&room), "forgetting is per user");
    bob.join(&room).await.unwrap();
}

async fn member_lists_filter_by_membership_and_time(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob, carol, dave] =
        <[Account; 4]>::try_from(register_all(&server, &["alice", "bob", "carol", "dave"]).await).unwrap();
    let room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    alice.send_text(&room, "checkpoint").await.unwrap();
    // A token from before anyone else joined: the prev_batch of a one-event window.
    let window = alice.sync(&filter_param(&json!({ "room": { "timeline": { "limit": 1 } } }))).await.unwrap();
    let early = room_in(&window, "join", &room)["timeline"]["prev_batch"].as_str().unwrap().to_owned();

    bob.join(&room).await.unwrap();
    carol.join(&room).await.unwrap();
    carol.post(&room_path(&room, "leave"), &json!({})).await.unwrap().ok();

    let members = |query: String| {
        let alice = alice.clone();
        let path = room_path(&room, &format!("members{query}"));
        async move {
            let body = get_ok(&alice, &path).await;
            body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    assert_eq!(e["type"], "m.room.member");
                    (
                        e["state_key"].as_str().unwrap().to_owned(),
                        e["content"]["membership"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<BTreeMap<String, String>>()
        }
    };
    let expect = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(user, membership)| (format!("@{user}:localhost"), membership.to_string()))
            .collect()
    };
    assert_eq!(
        members(String::new()).await,
        expect(&[("alice", "join"), ("bob", "join"), ("carol", "leave")])
    );
    assert_eq!(members("?membership=join".into()).await, expect(&[("alice", "join"), ("bob", "join")]));
    assert_eq!(members("?membership=leave".into()).await, expect(&[("carol", "leave")]));
    assert_eq!(members("?not_membership=join".into()).await, expect(&[("carol", "leave")]));
    assert_eq!(
        members(format!("?at={}", enc(&early))).await,
        expect(&[("alice", "join")]),
        "members at a past token"
    );

    let joined = get_ok(&bob, &room_path(&room, "joined_members")).await;
    let names: Vec<&String> = joined["joined"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["@alice:localhost", "@bob:localhost"]);
    assert!(joined_rooms(&alice).await.contains(&room));
    assert!(joined_rooms(&bob).await.contains(&room));
    assert!(!joined_rooms(&carol).await.contains(&room));
    assert!(joined_rooms(&dave).await.is_empty());
    dave.get(&room_path(&room, "members")).await.unwrap().err(403, "M_FORBIDDEN");
}
