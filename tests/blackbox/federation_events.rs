//! Another server reading a room's events over federation: `/event`, `/state_ids`, `/state`,
//! `/event_auth`, `/backfill` and `/get_missing_events`, signed by node B's key and sent to node A
//! (two embedded nodes, `scripts/federation-node.sh`), and who may read what.

use std::collections::BTreeSet;

use ganglion_testkit::{Account, FederationNode, enc};
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

use crate::federation::{node_key, send_signed, signed_get, x_matrix};

/// Node B reading node A: signs as B for A.
struct Asker<'a> {
    a: &'a FederationNode,
    b: &'a FederationNode,
    key: Ed25519KeyPair,
}

impl Asker<'_> {
    async fn get(&self, uri: &str) -> (u16, Value) {
        let response = signed_get(self.a, uri, self.b.server_name(), self.a.server_name(), &self.key).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, uri: &str, body: &[u8]) -> (u16, Value) {
        let header = x_matrix("POST", uri, body, self.b.server_name(), self.a.server_name(), &self.key);
        let response =
            send_signed(reqwest::Method::POST, &self.a.federation_url(), uri, header, Some(body.to_vec()))
                .await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET` that must answer 200: its body.
    async fn ok(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, 200, "{uri}: {body}\n{}", self.a.log());
        body
    }

    async fn missing_events(&self, room: &str, body: Value) -> Vec<Value> {
        let uri = format!("/_matrix/federation/v1/get_missing_events/{}", enc(room));
        let (status, answer) = self.post(&uri, &serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status, 200, "{body}: {answer}\n{}", self.a.log());
        answer["events"].as_array().unwrap().clone()
    }
}

fn assert_error(answer: &(u16, Value), status: u16, errcode: &str, why: &str) {
    assert_eq!(answer.0, status, "{why}: {}", answer.1);
    assert_eq!(answer.1["errcode"], errcode, "{why}: {}", answer.1);
}

/// Bodies of the message PDUs of a list, in order.
fn bodies(pdus: &[Value]) -> Vec<&str> {
    pdus.iter()
        .filter(|pdu| pdu["type"] == "m.room.message")
        .filter_map(|pdu| pdu["content"]["body"].as_str())
        .collect()
}

fn types(pdus: &Value) -> BTreeSet<&str> {
    pdus.as_array().unwrap().iter().filter_map(|pdu| pdu["type"].as_str()).collect()
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect()
}

/// The current state of a room as its member sees it: event id by `(type, state_key)`.
async fn state_ids_of(account: &Account, room: &str) -> Vec<(String, String, String)> {
    let state = account.get(&format!("/rooms/{}/state", enc(room))).await.unwrap().ok();
    state
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let field = |name: &str| event[name].as_str().unwrap().to_owned();
            (field("type"), field("state_key"), field("event_id"))
        })
        .collect()
}

fn id_of<'a>(state: &'a [(String, String, String)], kind: &str) -> &'a str {
    &state.iter().find(|(t, _, _)| t == kind).unwrap_or_else(|| panic!("no {kind} in {state:?}")).2
}

#[tokio::test]
async fn another_server_reads_a_world_readable_room_and_nothing_else() {
    crate::run(async {
        let (a, b) = tokio::join!(FederationNode::start(), FederationNode::start());
        let (a, b) = (a.unwrap(), b.unwrap());
        let alice = a.client_api().register("alice", crate::PASSWORD).await.unwrap();
        let room = alice
            .create_room(&json!({ "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "world_readable" },
            }]}))
            .await
            .unwrap();
        let first_name =
            alice.send_state(&room, "m.room.name", "", &json!({ "name": "first" })).await.unwrap();
        let second_name =
            alice.send_state(&room, "m.room.name", "", &json!({ "name": "second" })).await.unwrap();
        let mut messages = Vec::new();
        for n in 0..4 {
            messages.push(alice.send_text(&room, &format!("message {n}")).await.unwrap());
        }
        let state = state_ids_of(&alice, &room).await;
        let create = id_of(&state, "m.room.create").to_owned();
        let asker = Asker { a: &a, b: &b, key: node_key(&b) };
        let room_path = enc(&room);

        // One event, as stored: the signed PDU, without an event id (room versions 3 and on).
        let answer = asker.ok(&format!("/_matrix/federation/v1/event/{}", enc(&messages[1]))).await;
        assert_eq!(answer["origin"], a.server_name(), "{answer}");
        assert!(answer["origin_server_ts"].as_i64().is_some(), "{answer}");
        let pdu = &answer["pdus"][0];
        assert_eq!(answer["pdus"].as_array().unwrap().len(), 1, "{answer}");
        assert_eq!((&pdu["type"], &pdu["content"]["body"]), (&json!("m.room.message"), &json!("message 1")));
        assert_eq!(pdu["room_id"], room.as_str());
        assert!(pdu.get("event_id").is_none(), "{pdu}");
        assert!(
            pdu["signatures"][a.server_name()].is_object() && pdu["hashes"]["sha256"].is_string(),
            "{pdu}"
        );

        // The state at a message: the room's state now (no state came after), and its auth chain.
        let uri = format!("/_matrix/federation/v1/state_ids/{room_path}?event_id={}", enc(&messages[0]));
        let answer = asker.ok(&uri).await;
        let pdu_ids = ids(&answer["pdu_ids"]);
        let current: BTreeSet<String> = state.iter().map(|(_, _, id)| id.clone()).collect();
        assert_eq!(pdu_ids, current, "{answer}");
        for kind in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.history_visibility"] {
            assert!(pdu_ids.contains(id_of(&state, kind)), "{kind}: {answer}");
        }
        let auth_chain_ids = ids(&answer["auth_chain_ids"]);
        assert!(auth_chain_ids.contains(&create), "{answer}");
        assert!(auth_chain_ids.contains(id_of(&state, "m.room.power_levels")), "{answer}");
        assert!(auth_chain_ids.is_subset(&current), "{answer}");
        // The state before a state event: without it, with the event it replaced.
        let uri = format!("/_matrix/federation/v1/state_ids/{room_path}?event_id={}", enc(&second_name));
        let before = ids(&asker.ok(&uri).await["pdu_ids"]);
        assert!(before.contains(&first_name) && !before.contains(&second_name), "{before:?}");
        assert_eq!(before.len(), current.len());
        let uri = format!("/_matrix/federation/v1/state_ids/{room_path}?event_id={}", enc(&create));
        assert_eq!(asker.ok(&uri).await, json!({ "pdu_ids": [], "auth_chain_ids": [] }));

        // The same with whole PDUs.
        let uri = format!("/_matrix/federation/v1/state/{room_path}?event_id={}", enc(&messages[0]));
        let answer = asker.ok(&uri).await;
        assert_eq!(answer["pdus"].as_array().unwrap().len(), current.len(), "{answer}");
        let state_types = types(&answer["pdus"]);
        for kind in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules"] {
            assert!(state_types.contains(kind), "{kind}: {answer}");
        }
        assert!(
            answer["pdus"].as_array().unwrap().iter().any(|pdu| pdu["content"]["name"] == "second"),
            "{answer}"
        );
        assert!(types(&answer["auth_chain"]).contains("m.room.create"), "{answer}");
        assert_eq!(answer["auth_chain"].as_array().unwrap().len(), auth_chain_ids.len(), "{answer}");

        // A message's auth chain: the create, power levels and sender's member events, not itself.
        let uri = format!("/_matrix/federation/v1/event_auth/{room_path}/{}", enc(&messages[2]));
        let answer = asker.ok(&uri).await;
        let chain_types = types(&answer["auth_chain"]);
        assert_eq!(
            chain_types,
            BTreeSet::from(["m.room.create", "m.room.member", "m.room.power_levels"]),
            "{answer}"
        );
        assert!(bodies(answer["auth_chain"].as_array().unwrap()).is_empty(), "{answer}");

        // Backfill: the given events and those before, newest first, `limit` at most.
        let uri = format!("/_matrix/federation/v1/backfill/{room_path}?v={}&limit=3", enc(&messages[3]));
        let answer = asker.ok(&uri).await;
        assert_eq!(answer["origin"], a.server_name());
        let pdus = answer["pdus"].as_array().unwrap();
        assert_eq!(bodies(pdus), ["message 3", "message 2", "message 1"], "{answer}");
        assert_eq!(pdus.len(), 3, "{answer}");
        // From two events, with room for everything: the whole room, each event once, newest first
        // down to the create event.
        let uri = format!(
            "/_matrix/federation/v1/backfill/{room_path}?v={}&v={}&limit=1000",
            enc(&messages[1]),
            enc(&messages[3])
        );
        let answer = asker.ok(&uri).await;
        let pdus = answer["pdus"].as_array().unwrap();
        assert_eq!(bodies(pdus), ["message 3", "message 2", "message 1", "message 0"], "{answer}");
        let depths: Vec<i64> = pdus.iter().map(|pdu| pdu["depth"].as_i64().unwrap()).collect();
        assert!(depths.windows(2).all(|pair| pair[0] > pair[1]), "{depths:?}");
        // The whole room, as its member pages through it (newest first too).
        let history = crate::paginate(&alice, &room, "b", None, 100).await;
        let kinds = |events: &[Value]| events.iter().map(|event| event["type"].clone()).collect::<Vec<_>>();
        assert_eq!(kinds(pdus), kinds(&history), "{answer}");
        assert_eq!(pdus.last().unwrap()["type"], "m.room.create", "{answer}");

        // Missing events: between what B has and what it saw, oldest first, neither end included.
        let events = asker
            .missing_events(
                &room,
                json!({ "earliest_events": [&messages[0]], "latest_events": [&messages[3]] }),
            )
            .await;
        assert_eq!(bodies(&events), ["message 1", "message 2"], "{events:?}");
        assert_eq!(events.len(), 2, "{events:?}");
        let events = asker
            .missing_events(
                &room,
                json!({ "earliest_events": [&messages[0]], "latest_events": [&messages[3]], "limit": 1 }),
            )
            .await;
        assert_eq!(bodies(&events), ["message 2"], "the nearest to the latest first: {events:?}");
        let events = asker
            .missing_events(
                &room,
                json!({ "earliest_events": [], "latest_events": [&messages[1]], "limit": 100 }),
            )
            .await;
        assert_eq!(events.len(), history.len() - 3, "the whole room before message 1: {events:?}");
        assert_eq!(events[0]["type"], "m.room.create");
        let min_depth = events.last().unwrap()["depth"].as_i64().unwrap();
        let events = asker
            .missing_events(
                &room,
                json!({ "earliest_events": [], "latest_events": [&messages[3]], "min_depth": min_depth }),
            )
            .await;
        assert_eq!(bodies(&events), ["message 0", "message 1", "message 2"], "{events:?}");

        // A room that is not world-readable, with no user of B's in it: refused.
        let private = alice.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
        let secret = alice.send_text(&private, "secret").await.unwrap();
        let private_path = enc(&private);
        let refusals = [
            format!("/_matrix/federation/v1/event/{}", enc(&secret)),
            format!("/_matrix/federation/v1/state_ids/{private_path}?event_id={}", enc(&secret)),
            format!("/_matrix/federation/v1/state/{private_path}?event_id={}", enc(&secret)),
            format!("/_matrix/federation/v1/event_auth/{private_path}/{}", enc(&secret)),
            format!("/_matrix/federation/v1/backfill/{private_path}?v={}&limit=10", enc(&secret)),
        ];
        for uri in &refusals {
            assert_error(&asker.get(uri).await, 403, "M_FORBIDDEN", uri);
        }
        let body = serde_json::to_vec(&json!({ "earliest_events": [], "latest_events": [&secret] })).unwrap();
        let uri = format!("/_matrix/federation/v1/get_missing_events/{private_path}");
        assert_error(&asker.post(&uri, &body).await, 403, "M_FORBIDDEN", "get_missing_events");

        // The event nearest to a time, either way.
        let ts_of = |answer: &Value| answer["pdus"][0]["origin_server_ts"].as_i64().unwrap();
        let last_ts = ts_of(&asker.ok(&format!("/_matrix/federation/v1/event/{}", enc(&messages[3]))).await);
        let nearest = |ts: i64, dir: &str| {
            format!("/_matrix/federation/v1/timestamp_to_event/{room_path}?ts={ts}&dir={dir}")
        };
        let answer = asker.ok(&nearest(last_ts, "b")).await;
        assert_eq!(answer, json!({ "event_id": &messages[3], "origin_server_ts": last_ts }));
        assert_eq!(asker.ok(&nearest(0, "f")).await["event_id"], create.as_str());
        assert_error(
            &asker.get(&nearest(last_ts + 3_600_000, "f")).await,
            404,
            "M_NOT_FOUND",
            "nothing after",
        );
        assert_error(&asker.get(&nearest(0, "b")).await, 404, "M_NOT_FOUND", "nothing before");
        assert_error(&asker.get(&nearest(0, "x")).await, 400, "M_INVALID_PARAM", "bad dir");
        let no_dir = format!("/_matrix/federation/v1/timestamp_to_event/{room_path}?ts=0");
        assert_error(&asker.get(&no_dir).await, 400, "M_MISSING_PARAM", "no dir");
        let private_nearest = format!("/_matrix/federation/v1/timestamp_to_event/{private_path}?ts=0&dir=f");
        assert_error(&asker.get(&private_nearest).await, 403, "M_FORBIDDEN", "timestamp_to_event");

        // A space of A's with three children: the world-readable room (suggested), the private
        // room, and a room A is not in. B sees the first, is told the second is out of reach,
        // and is left to ask elsewhere about the third.
        let elsewhere = "!elsewhere:elsewhere.example";
        let child = |room: &str, suggested: bool| {
            json!({ "type": "m.space.child", "state_key": room,
                    "content": { "via": [a.server_name()], "suggested": suggested } })
        };
        let space = alice
            .create_room(&json!({
                "preset": "public_chat",
                "name": "The space",
                "creation_content": { "type": "m.space" },
                "initial_state": [child(&room, true), child(&private, false), child(elsewhere, false)],
            }))
            .await
            .unwrap();
        let answer = asker.ok(&format!("/_matrix/federation/v1/hierarchy/{}", enc(&space))).await;
        assert_eq!(answer["room"]["room_id"], space.as_str(), "{answer}");
        assert_eq!(answer["room"]["name"], "The space", "{answer}");
        assert_eq!(answer["room"]["room_type"], "m.space", "{answer}");
        assert_eq!(answer["room"]["join_rule"], "public", "{answer}");
        let children_state: Vec<&str> = answer["room"]["children_state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| {
                assert!(
                    event["origin_server_ts"].is_i64() && event["sender"] == alice.user_id.as_str(),
                    "{event}"
                );
                event["state_key"].as_str().unwrap()
            })
            .collect();
        let mut expected = vec![room.as_str(), private.as_str(), elsewhere];
        expected.sort();
        assert_eq!(children_state, expected, "{answer}");
        let children = answer["children"].as_array().unwrap();
        assert_eq!(children.len(), 1, "{answer}");
        assert_eq!(
            (
                &children[0]["room_id"],
                &children[0]["name"],
                &children[0]["world_readable"],
                &children[0]["num_joined_members"]
            ),
            (&json!(room), &json!("second"), &json!(true), &json!(1)),
            "{answer}"
        );
        assert!(children[0].get("children_state").is_none(), "{answer}");
        assert_eq!(answer["inaccessible_children"], json!([&private]), "{answer}");
        let suggested =
            asker.ok(&format!("/_matrix/federation/v1/hierarchy/{}?suggested_only=true", enc(&space))).await;
        assert_eq!(suggested["children"].as_array().unwrap().len(), 1, "{suggested}");
        assert_eq!(suggested["inaccessible_children"], json!([]), "{suggested}");
        // A room that is no space answers with no children; one B may not see, not at all.
        let plain = asker.ok(&format!("/_matrix/federation/v1/hierarchy/{room_path}")).await;
        assert_eq!(
            (&plain["room"]["children_state"], &plain["children"]),
            (&json!([]), &json!([])),
            "{plain}"
        );
        for uri in [
            format!("/_matrix/federation/v1/hierarchy/{private_path}"),
            format!("/_matrix/federation/v1/hierarchy/{}", enc(elsewhere)),
        ] {
            assert_error(&asker.get(&uri).await, 404, "M_NOT_FOUND", &uri);
        }
        assert_error(
            &asker.get("/_matrix/federation/v1/hierarchy/nope").await,
            400,
            "M_INVALID_PARAM",
            "hierarchy of no room id",
        );

        // Unknown events and rooms, and an event asked of a room it is not in: not found.
        let unknown = "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let not_found = [
            format!("/_matrix/federation/v1/event/{}", enc(unknown)),
            format!("/_matrix/federation/v1/state_ids/{room_path}?event_id={}", enc(unknown)),
            format!("/_matrix/federation/v1/event_auth/{room_path}/{}", enc(&secret)),
            format!("/_matrix/federation/v1/backfill/{room_path}?v={}&limit=10", enc(unknown)),
            format!(
                "/_matrix/federation/v1/state_ids/{}?event_id={}",
                enc("!nowhere:elsewhere.example"),
                enc(&create)
            ),
        ];
        for uri in &not_found {
            assert_error(&asker.get(uri).await, 404, "M_NOT_FOUND", uri);
        }
        let body = serde_json::to_vec(&json!({ "earliest_events": [], "latest_events": [unknown] })).unwrap();
        let uri = format!("/_matrix/federation/v1/get_missing_events/{room_path}");
        assert_error(
            &asker.post(&uri, &body).await,
            404,
            "M_NOT_FOUND",
            "get_missing_events of an unknown event",
        );

        // Bad parameters: 400, never a 5xx.
        let bad = [
            (format!("/_matrix/federation/v1/state_ids/{room_path}"), "M_INVALID_PARAM"),
            (format!("/_matrix/federation/v1/state_ids/{room_path}?event_id=nope"), "M_INVALID_PARAM"),
            (
                format!("/_matrix/federation/v1/backfill/{room_path}?v={}", enc(&messages[3])),
                "M_MISSING_PARAM",
            ),
            (
                format!("/_matrix/federation/v1/backfill/{room_path}?v={}&limit=-1", enc(&messages[3])),
                "M_INVALID_PARAM",
            ),
            ("/_matrix/federation/v1/event/nope".to_owned(), "M_INVALID_PARAM"),
        ];
        for (uri, errcode) in &bad {
            assert_error(&asker.get(uri).await, 400, errcode, uri);
        }
        for body in [
            &br#"{"earliest_events": [], "latest_events": "x"}"#[..],
            br#"{"earliest_events": [], "latest_events": [], "limit": "ten"}"#,
            br#"{"latest_events": []}"#,
        ] {
            let answer = asker.post(&uri, body).await;
            assert_error(&answer, 400, "M_BAD_JSON", &String::from_utf8_lossy(body));
        }

        // Unsigned: 401, whatever the room.
        let unsigned = a
            .http()
            .get(format!("{}/_matrix/federation/v1/event/{}", a.federation_url(), enc(&messages[1])))
            .send()
            .await
            .unwrap();
        assert_eq!(unsigned.status(), 401);
        let body: Value = unsigned.json().await.unwrap();
        assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    })
    .await
}
