//! Relations through matrix-sdk: a thread with replies and its summary (`/threads`, bundled in
//! `unsigned.m.relations`), an edit seen as the new content, a reaction listed by `/relations`
//! and refused twice, relations of relations with `recurse`, `/context` around an event; and
//! what a user may not see (an ignored user's replies, a room they are not in).

use ganglion_testkit::{Account, Backend, enc, sdk_client};
use matrix_sdk::{
    Room,
    config::SyncSettings,
    room::{IncludeRelations, ListThreadsOptions, RelationsOptions},
    ruma::{
        OwnedEventId, RoomId, UInt,
        api::{Direction, client::threads::get_threads::v1::IncludeThreads},
        events::{
            reaction::ReactionEventContent,
            relation::{Annotation, RelationType, Thread},
            room::message::{OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent},
        },
    },
};
use serde_json::{Value, json};

use crate::PASSWORD;

on_all_backends!(threads_edits_and_reactions_through_matrix_sdk, context_and_what_a_user_may_not_see);

fn event_id(id: &str) -> OwnedEventId {
    OwnedEventId::try_from(id).unwrap()
}

async fn sdk_room(client: &matrix_sdk::Client, room_id: &str) -> Room {
    client.sync_once(SyncSettings::default()).await.unwrap();
    client.get_room(&RoomId::parse(room_id).unwrap()).expect("the client knows the room")
}

async fn thread_reply(room: &Room, root: &OwnedEventId, text: &str) -> OwnedEventId {
    let mut content = RoomMessageEventContent::text_plain(text);
    content.relates_to = Some(Relation::Thread(Thread::plain(root.clone(), root.clone())));
    room.send(content).await.unwrap().response.event_id
}

async fn reply_in_thread(account: &Account, room_id: &str, root: &str, body: &str) -> String {
    let content = json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    account.send_event(room_id, "m.room.message", &content).await.unwrap()
}

fn relations_path(room: &str, event: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/relations/{}{rest}", enc(room), enc(event))
}

async fn threads_edits_and_reactions_through_matrix_sdk(backend: Backend) {
    let server = crate::start(backend).await;
    let alice_sdk = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let alice = crate::account_of(&server, &alice_sdk);
    let bob = crate::account_of(&server, &bob_sdk);
    let [carol] = <[_; 1]>::try_from(crate::register_all(&server, &["carol"]).await).unwrap();
    let room_id = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&room_id).await.unwrap();
    carol.join(&room_id).await.unwrap();
    let room = sdk_room(&alice_sdk, &room_id).await;
    let bob_room = sdk_room(&bob_sdk, &room_id).await;

    // A thread: Alice's root, two replies from Bob.
    let root =
        room.send(RoomMessageEventContent::text_plain("shall we meet?")).await.unwrap().response.event_id;
    let first = thread_reply(&bob_room, &root, "tuesday?").await;
    let second = thread_reply(&bob_room, &root, "or wednesday").await;
    room.send(RoomMessageEventContent::text_plain("not in the thread")).await.unwrap();

    // A limited /sync timeline bundles the summary; so does sliding sync's.
    let filter = json!({ "room": { "timeline": { "limit": 4 } } }).to_string();
    let synced = alice.sync(&format!("filter={}", enc(&filter))).await.unwrap();
    let timeline = &synced["rooms"]["join"][&room_id]["timeline"];
    assert_eq!(timeline["limited"], json!(true));
    let root_json =
        timeline["events"].as_array().unwrap().iter().find(|e| e["event_id"] == json!(root)).unwrap();
    assert_eq!(root_json["unsigned"]["m.relations"]["m.thread"]["count"], json!(2), "{root_json}");
    let sliding = alice
        .post(
            "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
            &json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 4 } } }),
        )
        .await
        .unwrap()
        .ok();
    let events = sliding["rooms"][&room_id]["timeline"].as_array().unwrap();
    let root_json = events.iter().find(|e| e["event_id"] == json!(root)).unwrap();
    assert_eq!(root_json["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"], json!(second));

    let threads = room.list_threads(ListThreadsOptions::default()).await.unwrap();
    assert_eq!(threads.chunk.len(), 1, "one thread");
    let listed = &threads.chunk[0];
    assert_eq!(listed.event_id().as_ref(), Some(&root));
    let summary = listed.thread_summary.summary().expect("the root carries its thread summary");
    assert_eq!((summary.num_replies, summary.latest_reply.as_ref()), (2, Some(&second)));
    let raw: Value = listed.raw().deserialize_as().unwrap();
    let bundled = &raw["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(bundled["latest_event"]["content"]["body"], json!("or wednesday"));
    assert_eq!(bundled["current_user_participated"], json!(true), "Alice sent the root");

    // Participation: Bob replied, Carol did neither.
    let participated =
        ListThreadsOptions { include_threads: IncludeThreads::Participated, ..Default::default() };
    assert_eq!(bob_room.list_threads(participated).await.unwrap().chunk.len(), 1);
    let carols = carol
        .get(&format!("/_matrix/client/v1/rooms/{}/threads?include=participated", enc(&room_id)))
        .await
        .unwrap();
    assert_eq!(carols.ok()["chunk"], json!([]));
    let all = carol.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room_id))).await.unwrap().ok();
    assert_eq!(
        all["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
        json!(false)
    );

    // The thread's events, newest first, one per page.
    let mut options = RelationsOptions {
        include_relations: IncludeRelations::RelationsOfType(RelationType::Thread),
        limit: Some(UInt::from(1u32)),
        ..Default::default()
    };
    let page = room.relations(root.clone(), options.clone()).await.unwrap();
    assert_eq!(page.chunk.iter().map(|e| e.event_id().unwrap()).collect::<Vec<_>>(), vec![second.clone()]);
    options.from = Some(page.next_batch_token.expect("a second page"));
    let page = room.relations(root.clone(), options.clone()).await.unwrap();
    assert_eq!(page.chunk.iter().map(|e| e.event_id().unwrap()).collect::<Vec<_>>(), vec![first.clone()]);
    options.from = page.next_batch_token;
    if options.from.is_some() {
        assert!(room.relations(root.clone(), options).await.unwrap().chunk.is_empty());
    }
    let forwards = RelationsOptions { dir: Direction::Forward, ..Default::default() };
    let page = room.relations(root.clone(), forwards).await.unwrap();
    assert_eq!(
        page.chunk.iter().map(|e| e.event_id().unwrap()).collect::<Vec<_>>(),
        vec![first.clone(), second.clone()]
    );

    // A thread cannot start from a reply.
    let nested = bob
        .put(
            &format!("/rooms/{}/send/m.room.message/nested", enc(&room_id)),
            &json!({ "msgtype": "m.text", "body": "x", "m.relates_to": { "rel_type": "m.thread", "event_id": first } }),
        )
        .await
        .unwrap();
    assert_eq!((nested.status, nested.errcode()), (400, Some("M_UNKNOWN")), "{}", nested.text);

    // Edits: the newest of Alice's edits is bundled; Bob may not edit her message.
    let hello = alice.send_text(&room_id, "helo").await.unwrap();
    for (sender, body) in [(&alice, "hello"), (&alice, "hello, all"), (&bob, "bob was here")] {
        sender
            .send_event(
                &room_id,
                "m.room.message",
                &json!({
                    "msgtype": "m.text",
                    "body": format!("* {body}"),
                    "m.new_content": { "msgtype": "m.text", "body": body },
                    "m.relates_to": { "rel_type": "m.replace", "event_id": hello },
                }),
            )
            .await
            .unwrap();
    }
    let original = bob_room.event(&event_id(&hello), None).await.unwrap();
    let original: OriginalSyncRoomMessageEvent = serde_json::from_str(original.raw().json().get()).unwrap();
    let edit = original.unsigned.relations.replace.expect("the edit is bundled");
    match edit.content.relates_to {
        Some(Relation::Replacement(replacement)) => {
            assert_eq!(replacement.new_content.msgtype.body(), "hello, all")
        }
        other => panic!("the bundled edit is not a replacement: {other:?}"),
    }
    let messages =
        alice.get(&format!("/rooms/{}/messages?dir=b&limit=10", enc(&room_id))).await.unwrap().ok();
    let in_page =
        messages["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == json!(hello)).unwrap();
    assert_eq!(
        in_page["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"],
        json!("hello, all")
    );
    assert_eq!(in_page["content"]["body"], json!("helo"), "the original content is left as sent");

    // A reaction: listed by /relations of its type, refused a second time, allowed again once
    // the first is redacted.
    let thumbs = ReactionEventContent::new(Annotation::new(event_id(&hello), "👍".to_owned()));
    let reaction = bob_room.send(thumbs.clone()).await.unwrap().response.event_id;
    let reactions = room
        .relations(
            event_id(&hello),
            RelationsOptions {
                include_relations: IncludeRelations::RelationsOfTypeAndEventType(
                    RelationType::Annotation,
                    "m.reaction".into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        reactions.chunk.iter().map(|e| e.event_id().unwrap()).collect::<Vec<_>>(),
        vec![reaction.clone()]
    );
    let again = bob
        .put(
            &format!("/rooms/{}/send/m.reaction/again", enc(&room_id)),
            &json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": hello, "key": "👍" } }),
        )
        .await
        .unwrap();
    assert_eq!((again.status, again.errcode()), (400, Some("M_DUPLICATE_ANNOTATION")), "{}", again.text);
    alice_sdk.sync_once(SyncSettings::default()).await.unwrap();
    bob_room.redact(&reaction, None, None).await.unwrap();
    let annotations = alice.get(&relations_path(&room_id, &hello, "/m.annotation")).await.unwrap().ok();
    assert_eq!(annotations["chunk"], json!([]), "a redacted reaction is no longer related");
    bob_room.send(thumbs).await.unwrap();

    // Relations of relations: an edit of a thread reply is found from the root with `recurse`.
    let reply_edit = bob
        .send_event(
            &room_id,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "* tuesday!",
                "m.new_content": { "msgtype": "m.text", "body": "tuesday!" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": first },
            }),
        )
        .await
        .unwrap();
    let direct = alice.get(&relations_path(&room_id, root.as_str(), "")).await.unwrap().ok();
    let ids = |page: &Value| {
        page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>()
    };
    assert!(!ids(&direct).contains(&json!(reply_edit)));
    assert!(direct.get("recursion_depth").is_none());
    let deep = alice.get(&relations_path(&room_id, root.as_str(), "?recurse=true")).await.unwrap().ok();
    assert_eq!(ids(&deep), vec![json!(reply_edit), json!(second), json!(first)]);
    assert_eq!(deep["recursion_depth"], json!(3));
    let deep_edits =
        alice.get(&relations_path(&room_id, root.as_str(), "/m.replace?recurse=true")).await.unwrap().ok();
    assert_eq!(ids(&deep_edits), vec![json!(reply_edit)]);
    // The thread summary's newest reply carries its own edit.
    let threads =
        alice.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room_id))).await.unwrap().ok();
    let latest = &threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"];
    assert_eq!(latest["event_id"], json!(second));
    let first_event =
        alice.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(first.as_str()))).await.unwrap().ok();
    assert_eq!(first_event["unsigned"]["m.relations"]["m.replace"]["event_id"], json!(reply_edit));
}

async fn context_and_what_a_user_may_not_see(backend: Backend) {
    let server = crate::start(backend).await;
    let alice_sdk = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let alice = crate::account_of(&server, &alice_sdk);
    let [bob, carol, dave] =
        <[_; 3]>::try_from(crate::register_all(&server, &["bob", "carol", "dave"]).await).unwrap();
    let room_id = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    for member in [&bob, &carol] {
        alice.invite(&room_id, &member.user_id).await.unwrap();
        member.join(&room_id).await.unwrap();
    }
    let mut sent = Vec::new();
    for (i, sender) in [&alice, &bob, &alice, &bob, &alice].iter().enumerate() {
        sent.push(sender.send_text(&room_id, &format!("message {i}")).await.unwrap());
    }
    let room = sdk_room(&alice_sdk, &room_id).await;

    // Two events either side of the middle one.
    let context = room.event_with_context(&event_id(&sent[2]), false, UInt::from(4u32), None).await.unwrap();
    let ids = |events: &[matrix_sdk::deserialized_responses::TimelineEvent]| {
        events.iter().map(|e| e.event_id().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(
        context.event.as_ref().and_then(|e| e.event_id()).map(|id| id.to_string()),
        Some(sent[2].clone())
    );
    assert_eq!(ids(&context.events_before), vec![sent[1].clone(), sent[0].clone()], "newest first");
    assert_eq!(ids(&context.events_after), vec![sent[3].clone(), sent[4].clone()]);
    assert!(context.state.len() > 3, "the room's whole state: {}", context.state.len());

    // The page tokens continue with /messages.
    let raw =
        alice.get(&format!("/rooms/{}/context/{}?limit=2", enc(&room_id), enc(&sent[2]))).await.unwrap().ok();
    let older = alice
        .get(&format!(
            "/rooms/{}/messages?dir=b&limit=1&from={}",
            enc(&room_id),
            raw["start"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .ok();
    assert_eq!(older["chunk"][0]["event_id"], json!(sent[0]));
    let newer = alice
        .get(&format!(
            "/rooms/{}/messages?dir=f&limit=1&from={}",
            enc(&room_id),
            raw["end"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .ok();
    assert_eq!(newer["chunk"][0]["event_id"], json!(sent[4]));

    // Filtered: Bob's messages only, with his member event alone as the state.
    let filter = json!({ "senders": [bob.user_id], "types": ["m.room.message"], "lazy_load_members": true })
        .to_string();
    let filtered = alice
        .get(&format!("/rooms/{}/context/{}?limit=10&filter={}", enc(&room_id), enc(&sent[2]), enc(&filter)))
        .await
        .unwrap()
        .ok();
    let chunk_ids = |key: &str| {
        filtered[key].as_array().unwrap().iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(chunk_ids("events_before"), vec![json!(sent[1])]);
    assert_eq!(chunk_ids("events_after"), vec![json!(sent[3])]);
    let members: Vec<&Value> =
        filtered["state"].as_array().unwrap().iter().map(|e| &e["state_key"]).collect();
    assert_eq!(members.len(), 2, "Alice (the event's sender) and Bob: {members:?}");
    assert!(members.contains(&&json!(bob.user_id)) && members.contains(&&json!(alice.user_id)));

    // Carol ignores Bob: his replies leave her thread summary and her /relations.
    let root = &sent[0];
    reply_in_thread(&bob, &room_id, root, "from bob").await;
    let from_alice = reply_in_thread(&alice, &room_id, root, "from alice").await;
    let ignore = carol
        .put(
            &format!("/user/{}/account_data/m.ignored_user_list", enc(&carol.user_id)),
            &json!({ "ignored_users": { bob.user_id.clone(): {} } }),
        )
        .await
        .unwrap();
    assert_eq!(ignore.status, 200);
    let seen = carol.get(&relations_path(&room_id, root, "/m.thread")).await.unwrap().ok();
    assert_eq!(seen["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(seen["chunk"][0]["event_id"], json!(from_alice));
    let root_for_carol =
        carol.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(root))).await.unwrap().ok();
    assert_eq!(root_for_carol["unsigned"]["m.relations"]["m.thread"]["count"], json!(1));
    let root_for_alice =
        alice.get(&format!("/rooms/{}/event/{}", enc(&room_id), enc(root))).await.unwrap().ok();
    assert_eq!(root_for_alice["unsigned"]["m.relations"]["m.thread"]["count"], json!(2));

    // Dave is not in the room; an unknown event is not found; bad parameters are refused.
    let outsider = dave.get(&relations_path(&room_id, root, "")).await.unwrap();
    assert_eq!((outsider.status, outsider.errcode()), (403, Some("M_FORBIDDEN")));
    let outsider = dave.get(&format!("/rooms/{}/context/{}", enc(&room_id), enc(root))).await.unwrap();
    assert_eq!(outsider.status, 403);
    let outsider = dave.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room_id))).await.unwrap();
    assert_eq!(outsider.status, 403);
    let unknown = alice.get(&relations_path(&room_id, "$nothing:localhost", "")).await.unwrap();
    assert_eq!((unknown.status, unknown.errcode()), (404, Some("M_NOT_FOUND")));
    let unknown =
        alice.get(&format!("/rooms/{}/context/{}", enc(&room_id), enc("$nothing:localhost"))).await.unwrap();
    assert_eq!((unknown.status, unknown.errcode()), (404, Some("M_NOT_FOUND")));
    let bad_dir = alice.get(&relations_path(&room_id, root, "?dir=up")).await.unwrap();
    assert_eq!((bad_dir.status, bad_dir.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_include =
        alice.get(&format!("/_matrix/client/v1/rooms/{}/threads?include=some", enc(&room_id))).await.unwrap();
    assert_eq!((bad_include.status, bad_include.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_token = alice.get(&relations_path(&room_id, root, "?from=yesterday")).await.unwrap();
    assert_eq!((bad_token.status, bad_token.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_filter =
        alice.get(&format!("/rooms/{}/context/{}?filter=notjson", enc(&room_id), enc(root))).await.unwrap();
    assert_eq!((bad_filter.status, bad_filter.errcode()), (400, Some("M_INVALID_PARAM")));
}
