//! Ignoring users (`m.ignored_user_list`): an ignored user's messages and invites stay out of
//! `/sync`, `/messages` and `/event`, their state events do not; the list is checked and only its
//! owner reads or writes it; a change of the list makes the next `/sync` hand back every joined
//! room with a `limited` timeline, so clients drop what they hold and paginate again.

use ganglion_testkit::{Account, Backend, enc};
use serde_json::{Value, json};

use crate::{
    events_of, get_ok, initial_since, joined_events, message_bodies, paginate, room_in, start, sync_until,
};

on_all_backends!(ignored_users_messages_and_invites_are_hidden_until_unignored);

fn list_path(account: &Account) -> String {
    format!("/user/{}/account_data/m.ignored_user_list", enc(&account.user_id))
}

/// The `content` of the global `m.ignored_user_list` account data in a sync response, if any.
fn ignore_list_in(sync: &Value) -> Option<&Value> {
    events_of(&sync["account_data"])
        .into_iter()
        .find(|event| event["type"] == "m.ignored_user_list")
        .map(|event| &event["content"])
}

/// Every timeline and state event of `room` in the join sections of `syncs`.
fn room_events<'a>(syncs: &'a [Value], room: &str) -> Vec<&'a Value> {
    syncs
        .iter()
        .flat_map(|sync| {
            let mut events = joined_events(sync, room, "timeline");
            events.extend(joined_events(sync, room, "state"));
            events
        })
        .collect()
}

/// Bob's own member event that renames him: a state event of his.
fn is_bobs_rename(event: &Value) -> bool {
    event["type"] == "m.room.member"
        && event["sender"] == "@bob:localhost"
        && event["content"]["displayname"] == "Bobby"
}

async fn ignored_users_messages_and_invites_are_hidden_until_unignored(backend: Backend) {
    let server = start(backend).await;
    let ([alice, bob, carol], room) = crate::three_in_a_public_room(&server).await;
    let list = list_path(&alice);
    let ignoring_bob = json!({ "ignored_users": { bob.user_id.as_str(): {} } });

    // Junk and strangers are refused, with the spec's codes and never a 5xx.
    let yourself = json!({ "ignored_users": { alice.user_id.as_str(): {} } });
    alice.put(&list, &yourself).await.unwrap().err(400, "M_INVALID_PARAM");
    for junk in [
        json!({}),
        json!({ "ignored_users": [bob.user_id.as_str()] }),
        json!({ "ignored_users": { "bob": {} } }),
        json!({ "ignored_users": { bob.user_id.as_str(): true } }),
    ] {
        alice.put(&list, &junk).await.unwrap().err(400, "M_BAD_JSON");
    }
    alice.put(&list, &json!(["not", "an", "object"])).await.unwrap().err(400, "M_BAD_JSON");
    bob.put(&list, &json!({ "ignored_users": {} })).await.unwrap().err(403, "M_FORBIDDEN");
    bob.get(&list).await.unwrap().err(403, "M_FORBIDDEN");
    alice.get(&list).await.unwrap().err(404, "M_NOT_FOUND");

    let mut since = initial_since(&alice, "").await;
    alice.put(&list, &ignoring_bob).await.unwrap().ok();
    assert_eq!(get_ok(&alice, &list).await, ignoring_bob);
    bob.get(&list).await.unwrap().err(403, "M_FORBIDDEN");
    let syncs = sync_until(&alice, &mut since, "", |sync| ignore_list_in(sync).is_some()).await;
    let changed = syncs.last().unwrap();
    assert_eq!(ignore_list_in(changed), Some(&ignoring_bob));
    assert_eq!(
        room_in(changed, "join", &room)["timeline"]["limited"],
        json!(true),
        "a change of the ignore list hands the room back with a limited timeline: {changed}"
    );

    let hidden = bob.send_text(&room, "bob while ignored").await.unwrap();
    let rename = json!({ "membership": "join", "displayname": "Bobby" });
    let rename = bob.send_state(&room, "m.room.member", &bob.user_id, &rename).await.unwrap();
    carol.send_text(&room, "carol").await.unwrap();
    let syncs = sync_until(&alice, &mut since, "", |sync| {
        message_bodies(&joined_events(sync, &room, "timeline")).contains(&"carol".to_owned())
    })
    .await;
    let events = room_events(&syncs, &room);
    assert!(!message_bodies(&events).contains(&"bob while ignored".to_owned()), "{syncs:#?}");
    assert!(events.iter().any(|event| is_bobs_rename(event)), "bob's state is shown: {syncs:#?}");
    for sync in &syncs {
        assert_ne!(room_in(sync, "join", &room)["timeline"]["limited"], json!(true), "no change, no gap");
    }
    let initial = alice.sync("").await.unwrap();
    let timeline = joined_events(&initial, &room, "timeline");
    assert_eq!(message_bodies(&timeline), ["carol"], "initial sync: {initial}");
    assert!(
        room_events(std::slice::from_ref(&initial), &room).iter().any(|e| is_bobs_rename(e)),
        "initial sync without bob's rename: {initial}"
    );

    // `/messages` both ways, and `/event`: Bob's message is gone for Alice only.
    for dir in ["b", "f"] {
        let page = paginate(&alice, &room, dir, None, 2).await;
        let page: Vec<&Value> = page.iter().collect();
        assert_eq!(message_bodies(&page), ["carol"], "dir={dir}: {page:#?}");
        assert!(page.iter().any(|event| is_bobs_rename(event)), "dir={dir}: {page:#?}");
        let bobs_view = paginate(&bob, &room, dir, None, 2).await;
        let bobs_view: Vec<&Value> = bobs_view.iter().collect();
        assert!(message_bodies(&bobs_view).contains(&"bob while ignored".to_owned()));
    }
    let event_path = |event_id: &str| format!("/rooms/{}/event/{}", enc(&room), enc(event_id));
    alice.get(&event_path(&hidden)).await.unwrap().err(404, "M_NOT_FOUND");
    assert_eq!(get_ok(&alice, &event_path(&rename)).await["event_id"], json!(rename));
    assert_eq!(get_ok(&carol, &event_path(&hidden)).await["event_id"], json!(hidden));

    // Bob's invite never reaches Alice; Carol's, sent after it, does.
    let bobs_room = bob.create_room(&json!({})).await.unwrap();
    bob.invite(&bobs_room, &alice.user_id).await.unwrap();
    let carols_room = carol.create_room(&json!({})).await.unwrap();
    carol.invite(&carols_room, &alice.user_id).await.unwrap();
    let syncs =
        sync_until(&alice, &mut since, "", |sync| room_in(sync, "invite", &carols_room).is_object()).await;
    for sync in &syncs {
        assert!(room_in(sync, "invite", &bobs_room).is_null(), "bob's invite was delivered: {sync}");
    }
    let initial = alice.sync("").await.unwrap();
    assert!(room_in(&initial, "invite", &carols_room).is_object(), "{initial}");
    assert!(room_in(&initial, "invite", &bobs_room).is_null(), "bob's invite in an initial sync: {initial}");

    // Un-ignoring: the next sync gives the room back limited and the pending invite; Bob's new
    // messages flow again, and paginating shows what he sent meanwhile.
    let nobody = json!({ "ignored_users": {} });
    alice.put(&list, &nobody).await.unwrap().ok();
    let syncs = sync_until(&alice, &mut since, "", |sync| ignore_list_in(sync) == Some(&nobody)).await;
    let changed = syncs.last().unwrap();
    assert_eq!(room_in(changed, "join", &room)["timeline"]["limited"], json!(true), "{changed}");
    assert!(room_in(changed, "invite", &bobs_room).is_object(), "the pending invite is told: {changed}");
    bob.send_text(&room, "bob again").await.unwrap();
    sync_until(&alice, &mut since, "", |sync| {
        message_bodies(&joined_events(sync, &room, "timeline")).contains(&"bob again".to_owned())
    })
    .await;
    let page = paginate(&alice, &room, "b", None, 5).await;
    let page: Vec<&Value> = page.iter().collect();
    assert_eq!(message_bodies(&page), ["bob again", "carol", "bob while ignored"]);
}
