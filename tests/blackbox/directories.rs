//! Directories through matrix-sdk: the user directory (users who share a room or are in a
//! published room; everyone with `user_directory.search_all_users`), an alias resolved by
//! another user and the canonical alias checked against the aliases, and a published room found
//! by search term, paged both ways.

use ganglion_testkit::{Backend, ServerOptions, enc, sdk_client};
use matrix_sdk::ruma::{
    RoomAliasId, api::client::directory::get_public_rooms_filtered::v3::Request as PublicRooms,
    directory::Filter,
};
use serde_json::json;

use crate::PASSWORD;

on_all_backends!(
    the_user_directory_finds_those_one_may_find,
    aliases_resolve_and_the_canonical_alias_is_checked,
    published_rooms_are_found_by_search_term_and_paged_both_ways,
);

async fn the_user_directory_finds_those_one_may_find(backend: Backend) {
    let server = crate::start(backend).await;
    let alice_sdk = sdk_client(&server.base_url, "alice", PASSWORD).await.unwrap();
    let alice = crate::account_of(&server, &alice_sdk);
    let [bob, carol, dave, erin] =
        <[_; 4]>::try_from(crate::register_all(&server, &["bob", "carol", "dave", "erin"]).await).unwrap();
    for (account, name) in
        [(&bob, "Bob Builder"), (&carol, "Carol Baker"), (&dave, "Dave Baker"), (&erin, "Erin Baker")]
    {
        let path = format!("/profile/{}/displayname", enc(&account.user_id));
        assert_eq!(account.put(&path, &json!({ "displayname": name })).await.unwrap().status, 200);
    }
    // Alice shares a private room with Bob; Carol is in a published room; Dave and Erin in a
    // private room of their own.
    let shared = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    alice.invite(&shared, &bob.user_id).await.unwrap();
    bob.join(&shared).await.unwrap();
    carol.create_room(&json!({ "preset": "public_chat", "visibility": "public" })).await.unwrap();
    let hidden = dave.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    dave.invite(&hidden, &erin.user_id).await.unwrap();
    erin.join(&hidden).await.unwrap();

    let found = |response: matrix_sdk::ruma::api::client::user_directory::search_users::v3::Response| {
        response.results.iter().map(|user| user.user_id.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(found(alice_sdk.search_users("builder", 10).await.unwrap()), vec![bob.user_id.clone()]);
    let bakers = alice_sdk.search_users("BAKER", 10).await.unwrap();
    assert_eq!(found(bakers.clone()), vec![carol.user_id.clone()], "Dave and Erin share nothing with Alice");
    assert_eq!(bakers.results[0].display_name.as_deref(), Some("Carol Baker"));
    assert!(!bakers.limited);
    // By localpart too; Dave finds Erin (they share a room) and Carol (published).
    let by_id = dave.post("/user_directory/search", &json!({ "search_term": "erin" })).await.unwrap().ok();
    assert_eq!(by_id["results"][0]["user_id"], json!(erin.user_id));
    let limited = dave
        .post("/user_directory/search", &json!({ "search_term": "baker", "limit": 1 }))
        .await
        .unwrap()
        .ok();
    assert_eq!((limited["results"].as_array().unwrap().len(), limited["limited"].clone()), (1, json!(true)));
    // `%` is only a character.
    let wildcard = alice.post("/user_directory/search", &json!({ "search_term": "%" })).await.unwrap().ok();
    assert_eq!(wildcard["results"], json!([]));
    let bad = alice.post("/user_directory/search", &json!({ "limit": 3 })).await.unwrap();
    assert_eq!((bad.status, bad.errcode()), (400, Some("M_BAD_JSON")));
}

/// With `search_all_users`, every active local user (the documented setting).
#[tokio::test]
async fn search_all_users_finds_everyone() {
    crate::run(async {
        let options = ServerOptions {
            extra_toml: "[user_directory]\nsearch_all_users = true".into(),
            ..ServerOptions::default()
        };
        let server = ganglion_testkit::TestServer::start(Backend::Sqlite, options).await.unwrap();
        let [alice, bob] = <[_; 2]>::try_from(crate::register_all(&server, &["alice", "bob"]).await).unwrap();
        let found =
            alice.post("/user_directory/search", &json!({ "search_term": "bob" })).await.unwrap().ok();
        assert_eq!(found["results"][0]["user_id"], json!(bob.user_id));
    })
    .await
}

async fn aliases_resolve_and_the_canonical_alias_is_checked(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice] = <[_; 1]>::try_from(crate::register_all(&server, &["alice"]).await).unwrap();
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let room =
        alice.create_room(&json!({ "preset": "public_chat", "room_alias_name": "harbour" })).await.unwrap();
    let alias = format!("#harbour:{}", server.server_name);
    let resolved =
        bob_sdk.resolve_room_alias(<&RoomAliasId>::try_from(alias.as_str()).unwrap()).await.unwrap();
    assert_eq!(resolved.room_id.as_str(), room);
    assert_eq!(
        resolved.servers.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        [server.server_name.as_str()]
    );

    let other = alice.create_room(&json!({ "room_alias_name": "elsewhere" })).await.unwrap();
    let canonical = |content: serde_json::Value| {
        let alice = alice.clone();
        let path = format!("/rooms/{}/state/m.room.canonical_alias/", enc(&room));
        async move { alice.put(&path, &content).await.unwrap() }
    };
    // An alias of another room, one that does not exist, one that is not an alias.
    for content in [
        json!({ "alias": format!("#elsewhere:{}", server.server_name) }),
        json!({ "alias": alias, "alt_aliases": [format!("#nothing:{}", server.server_name)] }),
    ] {
        let refused = canonical(content).await;
        assert_eq!((refused.status, refused.errcode()), (400, Some("M_BAD_ALIAS")), "{}", refused.text);
    }
    let invalid = canonical(json!({ "alias": "harbour" })).await;
    assert_eq!((invalid.status, invalid.errcode()), (400, Some("M_INVALID_PARAM")));
    let set = alice
        .put(
            &format!("/directory/room/{}", enc(&format!("#quay:{}", server.server_name))),
            &json!({ "room_id": room }),
        )
        .await
        .unwrap();
    assert_eq!(set.status, 200);
    let accepted = canonical(json!({ "alias": alias, "alt_aliases": [format!("#quay:{}", server.server_name), "#remote:example.org"] })).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    let _ = other;
}

async fn published_rooms_are_found_by_search_term_and_paged_both_ways(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice] = <[_; 1]>::try_from(crate::register_all(&server, &["alice"]).await).unwrap();
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let mut gardens = Vec::new();
    for i in 0..5 {
        let name = if i % 2 == 0 { format!("Garden club {i}") } else { format!("Chess club {i}") };
        let room = alice
            .create_room(&json!({ "preset": "public_chat", "visibility": "public", "name": name }))
            .await
            .unwrap();
        if i % 2 == 0 {
            gardens.push(room);
        }
    }

    let mut request = PublicRooms::new();
    let mut filter = Filter::new();
    filter.generic_search_term = Some("garden".to_owned());
    request.filter = filter;
    request.limit = Some(2u32.into());
    let first = bob_sdk.public_rooms_filtered(request.clone()).await.unwrap();
    assert_eq!(first.chunk.len(), 2);
    assert!(first.prev_batch.is_none());
    request.since = first.next_batch.clone();
    let second = bob_sdk.public_rooms_filtered(request.clone()).await.unwrap();
    assert_eq!(second.chunk.len(), 1);
    let mut seen: Vec<String> =
        first.chunk.iter().chain(&second.chunk).map(|room| room.room_id.to_string()).collect();
    seen.sort();
    gardens.sort();
    assert_eq!(seen, gardens, "every garden once, no chess");

    // Back from the second page: the first page again.
    request.since = second.prev_batch.clone();
    assert!(request.since.is_some(), "a filtered page after the first has a prev_batch");
    let back = bob_sdk.public_rooms_filtered(request).await.unwrap();
    let ids = |chunk: &[matrix_sdk::ruma::directory::PublicRoomsChunk]| {
        chunk.iter().map(|r| r.room_id.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&back.chunk), ids(&first.chunk));
    assert!(back.prev_batch.is_none(), "nothing before the first page");
}
