//! Room previews and spaces: the room summary through matrix-sdk's room preview (a public room,
//! a private one it hides, by alias, without signing in), and a space's hierarchy (breadth first,
//! pages, `max_depth`, `suggested_only`, rooms the user may not see left out).

use ganglion_testkit::{Backend, enc, sdk_client};
use matrix_sdk::ruma::{OwnedRoomOrAliasId, api::client::space::get_hierarchy::v1::Request as Hierarchy};
use serde_json::{Value, json};

use crate::PASSWORD;

on_all_backends!(room_previews_through_matrix_sdk, space_hierarchy_pages_and_depth);

async fn room_previews_through_matrix_sdk(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice] = <[_; 1]>::try_from(crate::register_all(&server, &["alice"]).await).unwrap();
    let carol_sdk = sdk_client(&server.base_url, "carol", PASSWORD).await.unwrap();
    let public = alice
        .create_room(&json!({
            "preset": "public_chat",
            "name": "Town square",
            "topic": "Everything local",
            "room_alias_name": "square",
        }))
        .await
        .unwrap();
    let private =
        alice.create_room(&json!({ "preset": "private_chat", "name": "Back office" })).await.unwrap();

    let by_alias: OwnedRoomOrAliasId = format!("#square:{}", server.server_name).try_into().unwrap();
    let preview = carol_sdk.get_room_preview(&by_alias, Vec::new()).await.unwrap();
    assert_eq!(preview.room_id.as_str(), public);
    assert_eq!(preview.name.as_deref(), Some("Town square"));
    assert_eq!(preview.topic.as_deref(), Some("Everything local"));
    assert_eq!(preview.num_joined_members, 1);

    let path = |room: &str| format!("/_matrix/client/v1/room_summary/{}", enc(room));
    let summary = server.api().get(&path(&public), None).await.unwrap().ok();
    assert_eq!(summary["join_rule"], json!("public"));
    assert_eq!(summary["room_version"], json!("12"));
    assert!(summary.get("membership").is_none(), "no membership without a token");
    let own = alice.get(&path(&private)).await.unwrap().ok();
    assert_eq!((own["name"].clone(), own["membership"].clone()), (json!("Back office"), json!("join")));
    let hidden = crate::account_of(&server, &carol_sdk).get(&path(&private)).await.unwrap();
    assert_eq!((hidden.status, hidden.errcode()), (404, Some("M_NOT_FOUND")));
    let anonymous = server.api().get(&path(&private), None).await.unwrap();
    assert_eq!(anonymous.status, 404);
    let unknown = server.api().get(&path("#nowhere:localhost"), None).await.unwrap();
    assert_eq!(unknown.status, 404);
}

/// A space with a room, a suggested subspace holding another room, and a private room.
async fn space_hierarchy_pages_and_depth(backend: Backend) {
    let server = crate::start(backend).await;
    let [alice] = <[_; 1]>::try_from(crate::register_all(&server, &["alice"]).await).unwrap();
    let bob_sdk = sdk_client(&server.base_url, "bob", PASSWORD).await.unwrap();
    let bob = crate::account_of(&server, &bob_sdk);
    let space_of = |name: &str| json!({ "preset": "public_chat", "name": name, "creation_content": { "type": "m.space" } });
    let space = alice.create_room(&space_of("Ministry")).await.unwrap();
    let lobby = alice.create_room(&json!({ "preset": "public_chat", "name": "Lobby" })).await.unwrap();
    let team = alice.create_room(&space_of("Team")).await.unwrap();
    let desk = alice.create_room(&json!({ "preset": "public_chat", "name": "Desk" })).await.unwrap();
    let secret = alice.create_room(&json!({ "preset": "private_chat", "name": "Secret" })).await.unwrap();
    let via = json!([server.server_name]);
    // `order` sorts the children whatever their room ids.
    for (parent, child, suggested, order) in [
        (&space, &secret, false, "c"),
        (&space, &team, true, "b"),
        (&space, &lobby, false, "a"),
        (&team, &desk, false, "a"),
    ] {
        let content = json!({ "via": via, "suggested": suggested, "order": order });
        alice.send_state(parent, "m.space.child", child, &content).await.unwrap();
    }
    let names = |response: &Value| {
        response["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|room| room["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    // Bob (in none of them) sees the public rooms, breadth first; the secret room is left out.
    let request = Hierarchy::new(space.as_str().try_into().unwrap());
    let response = bob_sdk.send(request).await.unwrap();
    let sdk_names: Vec<String> =
        response.rooms.iter().map(|room| room.summary.name.clone().unwrap_or_default()).collect();
    assert_eq!(sdk_names, ["Ministry", "Lobby", "Team", "Desk"]);
    let root = &response.rooms[0];
    assert_eq!(root.children_state.len(), 3, "the space's child events, the secret one too");

    let path = |query: &str| format!("/_matrix/client/v1/rooms/{}/hierarchy{query}", enc(&space));
    let page = bob.get(&path("?limit=2")).await.unwrap().ok();
    assert_eq!(names(&page), ["Ministry", "Lobby"]);
    let next = page["next_batch"].as_str().unwrap().to_owned();
    let rest = bob.get(&path(&format!("?limit=2&from={}", enc(&next)))).await.unwrap().ok();
    assert_eq!(names(&rest), ["Team", "Desk"]);
    assert!(rest.get("next_batch").is_none());
    let mismatched = bob.get(&path(&format!("?limit=2&max_depth=1&from={}", enc(&next)))).await.unwrap();
    assert_eq!((mismatched.status, mismatched.errcode()), (400, Some("M_INVALID_PARAM")));

    assert_eq!(names(&bob.get(&path("?max_depth=1")).await.unwrap().ok()), ["Ministry", "Lobby", "Team"]);
    // Only suggested children are followed: Team is, Desk (under Team) is not.
    assert_eq!(names(&bob.get(&path("?suggested_only=true")).await.unwrap().ok()), ["Ministry", "Team"]);
    // Alice is in the secret room.
    assert_eq!(
        names(&alice.get(&path("")).await.unwrap().ok()),
        ["Ministry", "Lobby", "Team", "Secret", "Desk"]
    );

    let forbidden = bob.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&secret))).await.unwrap();
    assert_eq!((forbidden.status, forbidden.errcode()), (403, Some("M_FORBIDDEN")));
}
