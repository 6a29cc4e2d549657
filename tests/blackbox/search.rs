//! `POST /search` through matrix-sdk: a keyword finds a message, not a redacted one nor one in
//! a room the user is not in; best match or newest first, paged, with context and profiles,
//! grouped, with the rooms' state; history visibility holds; bad requests are refused.

use ganglion_testkit::{Account, Backend, enc, sdk_client};
use matrix_sdk::ruma::{
    UInt,
    api::client::{
        filter::RoomEventFilter,
        search::search_events::v3::{Categories, Criteria, EventContext, OrderBy, Request},
    },
};
use serde_json::{Value, json};

use crate::PASSWORD;

on_all_backends!(keyword_search_through_matrix_sdk, search_pages_groups_and_refuses_bad_requests);

fn criteria(term: &str) -> Criteria {
    Criteria::new(term.to_owned())
}

async fn search_sdk(client: &matrix_sdk::Client, criteria: Criteria) -> Vec<(String, String)> {
    let mut categories = Categories::new();
    categories.room_events = Some(criteria);
    let response = client.send(Request::new(categories)).await.unwrap();
    response
        .search_categories
        .room_events
        .results
        .iter()
        .map(|result| {
            let event: Value = result.result.as_ref().unwrap().deserialize_as().unwrap();
            (
                event["event_id"].as_str().unwrap().to_owned(),
                event["content"]["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn search(
    account: &Account,
    room_events: Value,
    next_batch: Option<&str>,
) -> ganglion_testkit::Response {
    let path = match next_batch {
        Some(token) => format!("/search?next_batch={}", enc(token)),
        None => "/search".to_owned(),
    };
    account.post(&path, &json!({ "search_categories": { "room_events": room_events } })).await.unwrap()
}

async fn keyword_search_through_matrix_sdk(backend: Backend) {
    let server = crate::start(backend).await;
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let bob = crate::account_of(&server, &bob_sdk);
    let [alice, carol, dave] =
        <[_; 3]>::try_from(crate::register_all(&server, &["alice", "carol", "dave"]).await).unwrap();
    let room = alice
        .create_room(&json!({
            "preset": "public_chat",
            "name": "Finance office",
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
        }))
        .await
        .unwrap();
    bob.join(&room).await.unwrap();
    let meeting = alice.send_text(&room, "The quarterly budget meeting is on Friday").await.unwrap();
    alice.send_text(&room, "lunch anyone?").await.unwrap();
    let draft = bob.send_text(&room, "budget draft attached").await.unwrap();
    let secret = alice.send_text(&room, "budget password is hunter2").await.unwrap();
    let redacted = alice
        .put(&format!("/rooms/{}/redact/{}/r1", enc(&room), enc(&secret)), &json!({ "reason": "oops" }))
        .await
        .unwrap();
    assert_eq!(redacted.status, 200, "{}", redacted.text);
    let elsewhere = carol.create_room(&json!({})).await.unwrap();
    carol.send_text(&elsewhere, "budget of another room").await.unwrap();

    // Bob finds both budget messages of his room: not the redacted one, not Carol's room.
    let found = search_sdk(&bob_sdk, criteria("budget")).await;
    let mut ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    let mut expected = vec![meeting.as_str(), draft.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "{found:?}");

    // Newest first; best match first (both words, stemmed: "meetings" finds "meeting").
    let mut recent = criteria("budget");
    recent.order_by = Some(OrderBy::Recent);
    let found = search_sdk(&bob_sdk, recent).await;
    assert_eq!(
        found.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        vec![draft.clone(), meeting.clone()]
    );
    let found = search_sdk(&bob_sdk, criteria("Budget meetings")).await;
    assert_eq!(found, vec![(meeting.clone(), "The quarterly budget meeting is on Friday".to_owned())]);
    assert!(
        search_sdk(&bob_sdk, criteria("hunter2")).await.is_empty(),
        "the redacted message left the index"
    );
    assert!(search_sdk(&bob_sdk, criteria("another")).await.is_empty(), "Carol's room is not Bob's");
    let mut in_other_room = criteria("budget");
    in_other_room.filter = RoomEventFilter::default();
    in_other_room.filter.not_rooms = vec![room.as_str().try_into().unwrap()];
    assert!(search_sdk(&bob_sdk, in_other_room).await.is_empty(), "the filter leaves his only room out");

    // Context around a result, with the senders' profiles.
    let mut with_context = criteria("draft");
    let mut context = EventContext::new();
    context.before_limit = UInt::from(1u32);
    context.after_limit = UInt::from(1u32);
    context.include_profile = true;
    with_context.event_context = context;
    let mut categories = Categories::new();
    categories.room_events = Some(with_context);
    let response = bob_sdk.send(Request::new(categories)).await.unwrap();
    let results = &response.search_categories.room_events.results;
    assert_eq!(results.len(), 1);
    let context = &results[0].context;
    let before: Vec<Value> = context.events_before.iter().map(|e| e.deserialize_as().unwrap()).collect();
    assert_eq!(before[0]["content"]["body"], json!("lunch anyone?"));
    let after: Vec<Value> = context.events_after.iter().map(|e| e.deserialize_as().unwrap()).collect();
    assert_eq!(after[0]["event_id"], json!(secret), "the redacted event is still in the timeline");
    assert!(
        context.profile_info.keys().any(|user| user.as_str() == alice.user_id),
        "{:?}",
        context.profile_info
    );

    // A room's name is searchable in its own key (by Alice: Bob joined after it was set).
    let names = search(&alice, json!({ "search_term": "office", "keys": ["content.name"] }), None).await.ok();
    let results = names["search_categories"]["room_events"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["result"]["type"], json!("m.room.name"));
    let bodies_only =
        search(&alice, json!({ "search_term": "office", "keys": ["content.body"] }), None).await.ok();
    assert_eq!(bodies_only["search_categories"]["room_events"]["results"], json!([]));

    // Dave joins a room whose history is for members since they joined: only what came after.
    dave.join(&room).await.unwrap();
    assert_eq!(
        search(&dave, json!({ "search_term": "budget" }), None).await.ok()["search_categories"]["room_events"]
            ["results"],
        json!([])
    );
    let later = alice.send_text(&room, "budget approved").await.unwrap();
    let seen = search(&dave, json!({ "search_term": "budget" }), None).await.ok();
    let results = seen["search_categories"]["room_events"]["results"].as_array().unwrap();
    assert_eq!(
        results.iter().map(|r| r["result"]["event_id"].clone()).collect::<Vec<_>>(),
        vec![json!(later)]
    );
}

async fn search_pages_groups_and_refuses_bad_requests(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice, bob] = <[_; 2]>::try_from(crate::register_all(&server, &["alice", "bob"]).await).unwrap();
    let first_room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    let second_room = alice.create_room(&json!({ "preset": "public_chat" })).await.unwrap();
    bob.join(&first_room).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(alice.send_text(&first_room, &format!("report number {i}")).await.unwrap());
        sent.push(bob.send_text(&first_room, &format!("report reply {i}")).await.unwrap());
    }
    sent.push(alice.send_text(&second_room, "report in the second room").await.unwrap());

    // Newest first, two per page, until no next_batch.
    let criteria = json!({ "search_term": "report", "order_by": "recent", "filter": { "limit": 2 } });
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let page = search(&alice, criteria.clone(), next.as_deref()).await.ok();
        let room_events = &page["search_categories"]["room_events"];
        assert_eq!(room_events["count"], json!(7));
        assert_eq!(room_events["highlights"], json!(["report"]));
        pages.extend(
            room_events["results"].as_array().unwrap().iter().map(|r| r["result"]["event_id"].clone()),
        );
        next = room_events["next_batch"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    let newest_first: Vec<Value> = sent.iter().rev().map(|id| json!(id)).collect();
    assert_eq!(pages, newest_first);

    // By rank, paged: every match once.
    let mut ranked = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let page =
            search(&alice, json!({ "search_term": "report", "filter": { "limit": 3 } }), next.as_deref())
                .await
                .ok();
        let room_events = &page["search_categories"]["room_events"];
        for result in room_events["results"].as_array().unwrap() {
            assert!(result["rank"].as_f64().unwrap() > 0.0, "{result}");
            ranked.push(result["result"]["event_id"].as_str().unwrap().to_owned());
        }
        next = room_events["next_batch"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    ranked.sort();
    let mut all = sent.clone();
    all.sort();
    assert_eq!(ranked, all);

    // Grouped by room and by sender, with the rooms' state.
    let grouped = search(
        &alice,
        json!({
            "search_term": "report",
            "order_by": "recent",
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        }),
        None,
    )
    .await
    .ok();
    let room_events = &grouped["search_categories"]["room_events"];
    let by_room = &room_events["groups"]["room_id"];
    assert_eq!(by_room[&second_room]["results"], json!([sent[6]]));
    assert_eq!(by_room[&second_room]["order"], json!(1), "the newest result is in the second room");
    assert_eq!(by_room[&first_room]["results"].as_array().unwrap().len(), 6);
    assert_eq!(room_events["groups"]["sender"][&bob.user_id]["results"].as_array().unwrap().len(), 3);
    let state = room_events["state"][&first_room].as_array().unwrap();
    assert!(state.iter().any(|event| event["type"] == json!("m.room.create")));

    // Bad requests.
    let bad_order = search(&alice, json!({ "search_term": "report", "order_by": "loudest" }), None).await;
    assert_eq!((bad_order.status, bad_order.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_key = search(&alice, json!({ "search_term": "report", "keys": ["content.url"] }), None).await;
    assert_eq!((bad_key.status, bad_key.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_group = search(
        &alice,
        json!({ "search_term": "report", "groupings": { "group_by": [{ "key": "type" }] } }),
        None,
    )
    .await;
    assert_eq!((bad_group.status, bad_group.errcode()), (400, Some("M_INVALID_PARAM")));
    let bad_token = search(&alice, json!({ "search_term": "report" }), Some("t-yesterday")).await;
    assert_eq!((bad_token.status, bad_token.errcode()), (400, Some("M_INVALID_PARAM")));
    let no_term = search(&alice, json!({}), None).await;
    assert_eq!((no_term.status, no_term.errcode()), (400, Some("M_BAD_JSON")));
    let no_categories = alice.post("/search", &json!({})).await.unwrap();
    assert_eq!((no_categories.status, no_categories.errcode()), (400, Some("M_BAD_JSON")));
    let syntax = search(&alice, json!({ "search_term": "\"report OR (number* -" }), None).await.ok();
    assert!(syntax["search_categories"]["room_events"]["results"].is_array(), "query syntax is only text");
}
