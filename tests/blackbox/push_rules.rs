//! The `/pushrules` API: the server-default rules, a user's own rules added, placed, enabled,
//! given other actions and deleted, errors per the spec, and the rules in `/sync` as
//! `m.push_rules` account data.

use ganglion_testkit::{Account, Backend};
use serde_json::{Value, json};

use crate::{account_of, get_ok, register_all, start};

on_all_backends!(
    users_change_their_push_rules_and_see_them_in_sync,
    matrix_sdk_notification_settings_keywords_and_muted_rooms,
    bad_push_rule_changes_get_matrix_errors_and_change_nothing,
    concurrent_changes_all_take_effect,
);

const RULES: &str = "/pushrules/global";

/// The rule ids of `kind`, in order.
async fn ids(account: &Account, kind: &str) -> Vec<String> {
    let global = get_ok(account, &format!("{RULES}/")).await;
    global[kind].as_array().unwrap().iter().map(|rule| rule["rule_id"].as_str().unwrap().to_owned()).collect()
}

async fn put_rule(account: &Account, path: &str, body: Value) -> ganglion_testkit::Response {
    account.put(&format!("{RULES}/{path}"), &body).await.unwrap()
}

fn push_rules_in(sync: &Value) -> Option<Value> {
    sync["account_data"]["events"]
        .as_array()?
        .iter()
        .find(|event| event["type"] == "m.push_rules")
        .map(|event| event["content"]["global"].clone())
}

async fn users_change_their_push_rules_and_see_them_in_sync(backend: Backend) {
    let server = start(backend).await;
    let [alice, bob] = <[Account; 2]>::try_from(register_all(&server, &["alice", "bob"]).await).unwrap();
    // The server defaults, every kind listed.
    let all = get_ok(&alice, "/pushrules/").await;
    let global = &all["global"];
    assert_eq!(global["override"][0]["rule_id"], ".m.rule.master", "{all}");
    assert_eq!(global["override"][0]["enabled"], false);
    assert_eq!(global["content"][0]["rule_id"], ".m.rule.contains_user_name");
    assert_eq!(global["content"][0]["pattern"], "alice");
    assert_eq!((&global["room"], &global["sender"]), (&json!([]), &json!([])));
    let first = alice.get("/sync?timeout=0").await.unwrap().ok();
    assert_eq!(push_rules_in(&first).as_ref(), Some(global), "the defaults in the initial sync");
    let since = first["next_batch"].as_str().unwrap().to_owned();

    // A keyword rule, first of its kind; two more placed around it.
    let highlight = json!({ "pattern": "cake", "actions": ["notify", { "set_tweak": "highlight" }] });
    put_rule(&alice, "content/cake", highlight).await.ok();
    let rule = get_ok(&alice, &format!("{RULES}/content/cake")).await;
    assert_eq!(
        (&rule["pattern"], &rule["enabled"], &rule["default"]),
        (&json!("cake"), &json!(true), &json!(false)),
        "{rule}"
    );
    put_rule(&alice, "content/pie?after=cake", json!({ "pattern": "pie", "actions": ["notify"] })).await.ok();
    put_rule(&alice, "content/tart?before=cake", json!({ "pattern": "tart", "actions": [] })).await.ok();
    assert_eq!(ids(&alice, "content").await[..4], ["tart", "cake", "pie", ".m.rule.contains_user_name"]);
    // Moved: after pie now.
    put_rule(&alice, "content/tart?after=pie", json!({ "pattern": "tart", "actions": [] })).await.ok();
    assert_eq!(ids(&alice, "content").await[..3], ["cake", "pie", "tart"]);
    // Room, sender and override rules.
    let room = alice.create_room(&json!({})).await.unwrap();
    put_rule(&alice, &format!("room/{}", ganglion_testkit::enc(&room)), json!({ "actions": [] })).await.ok();
    put_rule(
        &alice,
        &format!("sender/{}", ganglion_testkit::enc(&bob.user_id)),
        json!({ "actions": ["notify"] }),
    )
    .await
    .ok();
    let conditions = json!([{ "kind": "event_match", "key": "content.body", "pattern": "*urgent*" }]);
    put_rule(&alice, "override/urgent", json!({ "conditions": conditions, "actions": ["notify"] }))
        .await
        .ok();
    assert_eq!(ids(&alice, "room").await, vec![room.to_owned()]);
    assert_eq!(ids(&alice, "sender").await, vec![bob.user_id.to_owned()]);
    // Before the server defaults, but after the master rule, which stays first.
    assert_eq!(ids(&alice, "override").await[..3], [".m.rule.master", "urgent", ".m.rule.suppress_notices"]);
    let urgent = get_ok(&alice, &format!("{RULES}/override/urgent")).await;
    assert_eq!(urgent["conditions"], conditions);

    // Enabled and actions, of a default rule too.
    put_rule(&alice, "override/.m.rule.suppress_notices/enabled", json!({ "enabled": false })).await.ok();
    let enabled = get_ok(&alice, &format!("{RULES}/override/.m.rule.suppress_notices/enabled")).await;
    assert_eq!(enabled, json!({ "enabled": false }));
    put_rule(&alice, "content/cake/actions", json!({ "actions": ["notify"] })).await.ok();
    assert_eq!(
        get_ok(&alice, &format!("{RULES}/content/cake/actions")).await,
        json!({ "actions": ["notify"] })
    );
    put_rule(&alice, "underride/.m.rule.message/actions", json!({ "actions": [] })).await.ok();
    let message = get_ok(&alice, &format!("{RULES}/underride/.m.rule.message")).await;
    assert_eq!((&message["actions"], &message["default"]), (&json!([]), &json!(true)), "{message}");

    // Deleted.
    alice.delete(&format!("{RULES}/content/pie"), None).await.unwrap().ok();
    alice.get(&format!("{RULES}/content/pie")).await.unwrap().err(404, "M_NOT_FOUND");
    assert_eq!(ids(&alice, "content").await[..2], ["cake", "tart"]);

    // Alice's devices learn of the changes as account data; Bob's rules are his own.
    let sync = alice.get(&format!("/sync?timeout=0&since={since}")).await.unwrap().ok();
    let synced = push_rules_in(&sync).expect("m.push_rules in the incremental sync");
    assert_eq!(synced, get_ok(&alice, &format!("{RULES}/")).await);
    let initial = alice.get("/sync?timeout=0").await.unwrap().ok();
    assert_eq!(push_rules_in(&initial).as_ref(), Some(&synced), "the stored rules in a new initial sync");
    let account_data = format!("/user/{}/account_data/m.push_rules", ganglion_testkit::enc(&alice.user_id));
    assert_eq!(get_ok(&alice, &account_data).await, json!({ "global": synced }));
    let bobs = format!("/user/{}/account_data/m.push_rules", ganglion_testkit::enc(&bob.user_id));
    assert_eq!(get_ok(&bob, &bobs).await, json!({ "global": get_ok(&bob, &format!("{RULES}/")).await }));
    assert_eq!(ids(&bob, "content").await, [".m.rule.contains_user_name"]);
    assert_eq!(
        get_ok(&bob, &format!("{RULES}/override/.m.rule.suppress_notices/enabled")).await,
        json!({ "enabled": true })
    );
}

async fn bad_push_rule_changes_get_matrix_errors_and_change_nothing(backend: Backend) {
    let server = start(backend).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    put_rule(&alice, "content/cake", json!({ "pattern": "cake", "actions": ["notify"] })).await.ok();
    let before = get_ok(&alice, "/pushrules/").await;
    let notify = json!({ "pattern": "x", "actions": ["notify"] });
    put_rule(&alice, "unknown/x", notify.clone()).await.err(400, "M_INVALID_PARAM");
    put_rule(&alice, "content/.m.rule.mine", notify.clone()).await.err(400, "M_INVALID_PARAM");
    put_rule(&alice, "content/x", json!({ "actions": ["notify"] })).await.err(400, "M_BAD_JSON");
    put_rule(&alice, "content/x", json!({ "pattern": "x" })).await.err(400, "M_BAD_JSON");
    put_rule(&alice, "content/x", json!({ "pattern": "x", "actions": "notify" }))
        .await
        .err(400, "M_BAD_JSON");
    put_rule(&alice, "content/x?before=nothing", notify.clone()).await.err(404, "M_NOT_FOUND");
    put_rule(&alice, "content/x?after=.m.rule.contains_user_name", notify.clone())
        .await
        .err(400, "M_INVALID_PARAM");
    put_rule(&alice, "room/not-a-room", json!({ "actions": [] })).await.err(400, "M_INVALID_PARAM");
    put_rule(&alice, "sender/not-a-user", json!({ "actions": [] })).await.err(400, "M_INVALID_PARAM");
    let conditions = json!({ "conditions": [{ "kind": "event_match" }], "actions": [] });
    put_rule(&alice, "override/x", conditions).await.err(400, "M_BAD_JSON");
    put_rule(&alice, "content/cake/enabled", json!({ "enabled": "yes" })).await.err(400, "M_BAD_JSON");
    put_rule(&alice, "content/nothing/enabled", json!({ "enabled": true })).await.err(404, "M_NOT_FOUND");
    put_rule(&alice, "content/nothing/actions", json!({ "actions": [] })).await.err(404, "M_NOT_FOUND");
    let deleted = alice.delete(&format!("{RULES}/override/.m.rule.master"), None).await.unwrap();
    deleted.err(400, "M_INVALID_PARAM");
    alice.delete(&format!("{RULES}/content/nothing"), None).await.unwrap().err(404, "M_NOT_FOUND");
    alice.get(&format!("{RULES}/content/nothing")).await.unwrap().err(404, "M_NOT_FOUND");
    alice.get(&format!("{RULES}/unknown/x")).await.unwrap().err(400, "M_INVALID_PARAM");
    assert_eq!(get_ok(&alice, "/pushrules/").await, before, "a refused change changed the rules");
    // Not settable as plain account data.
    let account_data = format!("/user/{}/account_data/m.push_rules", ganglion_testkit::enc(&alice.user_id));
    let refused = alice.put(&account_data, &json!({ "global": {} })).await.unwrap();
    assert_eq!(refused.status, 405, "{}", refused.text);
}

async fn concurrent_changes_all_take_effect(backend: Backend) {
    let server = start(backend).await;
    let [alice] = <[Account; 1]>::try_from(register_all(&server, &["alice"]).await).unwrap();
    let puts = (0..10).map(|n| {
        let alice = alice.clone();
        async move {
            put_rule(
                &alice,
                &format!("content/word{n}"),
                json!({ "pattern": format!("word{n}"), "actions": ["notify"] }),
            )
            .await
        }
    });
    for response in futures_util::future::join_all(puts).await {
        response.ok();
    }
    let mut found = ids(&alice, "content").await;
    found.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("word{n}")).collect();
    expected.push(".m.rule.contains_user_name".to_owned());
    expected.sort();
    assert_eq!(found, expected, "a change made beside another was lost");
}

/// What Element X does through matrix-sdk's `NotificationSettings`: a keyword, a muted room, a
/// default rule turned off; the SDK reads its rules back from `/sync`.
async fn matrix_sdk_notification_settings_keywords_and_muted_rooms(backend: Backend) {
    use ganglion_events::ruma::push::RuleKind;
    use matrix_sdk::{config::SyncSettings, notification_settings::RoomNotificationMode};

    let server = start(backend).await;
    let client = ganglion_testkit::sdk_client(&server.base_url, "alice", crate::PASSWORD).await.unwrap();
    let account = account_of(&server, &client);
    let room = account.create_room(&json!({ "preset": "private_chat" })).await.unwrap();
    let room_id = ganglion_events::ruma::OwnedRoomId::try_from(room.as_str()).unwrap();
    let settings = SyncSettings::default().timeout(std::time::Duration::from_secs(0));
    client.sync_once(settings.clone()).await.unwrap();

    let notifications = client.notification_settings().await;
    notifications.add_keyword("cake".to_owned()).await.unwrap();
    notifications.set_room_notification_mode(&room_id, RoomNotificationMode::Mute).await.unwrap();
    notifications.set_push_rule_enabled(RuleKind::Override, ".m.rule.suppress_notices", false).await.unwrap();

    // On the server: a keyword rule, a rule that silences the room, the default rule off.
    let global = get_ok(&account, &format!("{RULES}/")).await;
    let cake = global["content"].as_array().unwrap().iter().find(|rule| rule["pattern"] == "cake");
    assert!(cake.is_some_and(|rule| rule["enabled"] == true), "{global}");
    let mute = global["override"].as_array().unwrap().iter().find(|rule| rule["rule_id"] == room.as_str());
    assert!(mute.is_some_and(|rule| rule["actions"] == json!([])), "{global}");
    assert_eq!(
        get_ok(&account, &format!("{RULES}/override/.m.rule.suppress_notices/enabled")).await["enabled"],
        false
    );

    // A fresh look from the SDK, after a sync, sees the same.
    client.sync_once(settings).await.unwrap();
    let notifications = client.notification_settings().await;
    assert!(notifications.enabled_keywords().await.contains("cake"));
    assert_eq!(
        notifications.get_user_defined_room_notification_mode(&room_id).await,
        Some(RoomNotificationMode::Mute)
    );
    assert!(
        !notifications.is_push_rule_enabled(RuleKind::Override, ".m.rule.suppress_notices").await.unwrap()
    );
}
