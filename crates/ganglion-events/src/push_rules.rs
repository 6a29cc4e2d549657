//! The server-default push rules (spec "Predefined Rules"), built for a user. Clients read
//! them from `/pushrules/` and from `m.push_rules` account data in `/sync`.

use ruma::{
    OwnedRoomId, OwnedUserId, UserId,
    push::{
        Action, FlattenedJson, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
        NewPushRule, NewSimplePushRule, PushConditionPowerLevelsCtx, PushConditionRoomCtx,
        RemovePushRuleError, RuleKind, Ruleset,
    },
    serde::Raw,
};
use serde_json::{Value, json};

/// A server-default rule: `default` is true and every rule starts enabled but the master rule.
fn rule(rule_id: &str, conditions: Value, actions: Value) -> Value {
    json!({
        "rule_id": rule_id,
        "default": true,
        "enabled": rule_id != ".m.rule.master",
        "conditions": conditions,
        "actions": actions,
    })
}

fn event_match(key: &str, pattern: &str) -> Value {
    json!({ "kind": "event_match", "key": key, "pattern": pattern })
}

/// The server-default ruleset for `user_id`.
pub fn default_ruleset(user_id: &UserId) -> Value {
    let sound = |sound: &str| json!({ "set_tweak": "sound", "value": sound });
    let highlight = json!({ "set_tweak": "highlight" });
    let room_notification_permission = json!({ "kind": "sender_notification_permission", "key": "room" });
    let override_rules = vec![
        rule(".m.rule.master", json!([]), json!([])),
        rule(".m.rule.suppress_notices", json!([event_match("content.msgtype", "m.notice")]), json!([])),
        rule(
            ".m.rule.invite_for_me",
            json!([
                event_match("type", "m.room.member"),
                event_match("content.membership", "invite"),
                event_match("state_key", user_id.as_str()),
            ]),
            json!(["notify", sound("default")]),
        ),
        rule(".m.rule.member_event", json!([event_match("type", "m.room.member")]), json!([])),
        rule(
            ".m.rule.is_user_mention",
            json!([{ "kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": user_id }]),
            json!(["notify", sound("default"), highlight]),
        ),
        rule(
            ".m.rule.contains_display_name",
            json!([{ "kind": "contains_display_name" }]),
            json!(["notify", sound("default"), highlight]),
        ),
        rule(
            ".m.rule.is_room_mention",
            json!([
                { "kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true },
                room_notification_permission,
            ]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.roomnotif",
            json!([event_match("content.body", "@room"), room_notification_permission]),
            json!(["notify", highlight]),
        ),
        rule(
            ".m.rule.tombstone",
            json!([event_match("type", "m.room.tombstone"), event_match("state_key", "")]),
            json!(["notify", highlight]),
        ),
        rule(".m.rule.reaction", json!([event_match("type", "m.reaction")]), json!([])),
        rule(
            ".m.rule.room.server_acl",
            json!([event_match("type", "m.room.server_acl"), event_match("state_key", "")]),
            json!([]),
        ),
        rule(
            ".m.rule.suppress_edits",
            json!([{ "kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace" }]),
            json!([]),
        ),
    ];
    let content_rules = vec![json!({
        "rule_id": ".m.rule.contains_user_name",
        "default": true,
        "enabled": true,
        "pattern": user_id.localpart(),
        "actions": ["notify", sound("default"), highlight],
    })];
    let two_members = json!({ "kind": "room_member_count", "is": "2" });
    let underride_rules = vec![
        rule(".m.rule.call", json!([event_match("type", "m.call.invite")]), json!(["notify", sound("ring")])),
        rule(
            ".m.rule.encrypted_room_one_to_one",
            json!([two_members, event_match("type", "m.room.encrypted")]),
            json!(["notify", sound("default")]),
        ),
        rule(
            ".m.rule.room_one_to_one",
            json!([two_members, event_match("type", "m.room.message")]),
            json!(["notify", sound("default")]),
        ),
        rule(".m.rule.message", json!([event_match("type", "m.room.message")]), json!(["notify"])),
        rule(".m.rule.encrypted", json!([event_match("type", "m.room.encrypted")]), json!(["notify"])),
    ];
    json!({
        "override": override_rules,
        "content": content_rules,
        "room": [],
        "sender": [],
        "underride": underride_rules,
    })
}

/// A change to a user's push rules, as the `/pushrules` endpoints ask for it. Applied by the
/// master, the single writer of `m.push_rules`, so that two changes at once cannot lose one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RuleChange {
    /// `PUT /pushrules/global/{kind}/{ruleId}` with its body and `before`/`after`.
    Put { kind: String, rule_id: String, before: Option<String>, after: Option<String>, body: Value },
    /// `DELETE /pushrules/global/{kind}/{ruleId}`.
    Delete { kind: String, rule_id: String },
    /// `PUT …/enabled`.
    SetEnabled { kind: String, rule_id: String, enabled: bool },
    /// `PUT …/actions`.
    SetActions { kind: String, rule_id: String, actions: Value },
}

/// Why a push rule change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("Unknown push rule kind {0:?}")]
    UnknownKind(String),
    #[error("The push rule was not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("Invalid push rule: {0}")]
    BadJson(String),
}

impl ganglion_types::HasErrorClass for RuleError {
    fn class(&self) -> ganglion_types::ErrorClass {
        use ganglion_types::ErrorClass;
        match self {
            RuleError::UnknownKind(_) | RuleError::Invalid(_) => ErrorClass::InvalidParam,
            RuleError::NotFound => ErrorClass::NotFound,
            RuleError::BadJson(_) => ErrorClass::BadJson,
        }
    }
}

/// The rule kind named `kind` in a `/pushrules` path.
pub fn rule_kind(kind: &str) -> Result<RuleKind, RuleError> {
    match kind {
        "override" => Ok(RuleKind::Override),
        "underride" => Ok(RuleKind::Underride),
        "sender" => Ok(RuleKind::Sender),
        "room" => Ok(RuleKind::Room),
        "content" => Ok(RuleKind::Content),
        other => Err(RuleError::UnknownKind(other.to_owned())),
    }
}

/// A user's push rules: the `global` ruleset of their stored `m.push_rules` content, with the
/// server-default rules brought up to date (a new default appears; the user's `enabled` and
/// `actions` of the others are kept), or the defaults when nothing is stored.
pub fn user_ruleset(user_id: &UserId, stored: Option<&Value>) -> Ruleset {
    let defaults: Ruleset =
        serde_json::from_value(default_ruleset(user_id)).unwrap_or_else(|_| Ruleset::server_default(user_id));
    let stored = stored.and_then(|content| serde_json::from_value::<Ruleset>(content["global"].clone()).ok());
    match stored {
        Some(mut ruleset) => {
            ruleset.update_with_server_default(defaults);
            ruleset
        }
        None => defaults,
    }
}

/// The `m.push_rules` account data content for `ruleset`, with every kind listed (ruma leaves
/// empty ones out; clients read all five).
pub fn push_rules_content(ruleset: &Ruleset) -> Value {
    let mut global = serde_json::to_value(ruleset).unwrap_or_else(|_| json!({}));
    if let Some(kinds) = global.as_object_mut() {
        for kind in ["override", "content", "room", "sender", "underride"] {
            kinds.entry(kind).or_insert_with(|| json!([]));
        }
    }
    json!({ "global": global })
}

/// Applies `change` to `ruleset`, as the spec's `/pushrules` endpoints describe.
pub fn apply(ruleset: &mut Ruleset, change: &RuleChange) -> Result<(), RuleError> {
    match change {
        RuleChange::Put { kind, rule_id, before, after, body } => {
            let kind = rule_kind(kind)?;
            let actions = actions_of(body.get("actions").unwrap_or(&Value::Null))?;
            let rule = match kind {
                RuleKind::Override | RuleKind::Underride => {
                    let conditions = match body.get("conditions") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(conditions) => serde_json::from_value(conditions.clone())
                            .map_err(|e| RuleError::BadJson(format!("`conditions`: {e}")))?,
                    };
                    let rule = NewConditionalPushRule::new(rule_id.clone(), conditions, actions);
                    if kind == RuleKind::Override {
                        NewPushRule::Override(rule)
                    } else {
                        NewPushRule::Underride(rule)
                    }
                }
                RuleKind::Content => {
                    let Some(pattern) = body.get("pattern").and_then(Value::as_str) else {
                        return Err(RuleError::BadJson("a content rule needs a `pattern`".into()));
                    };
                    NewPushRule::Content(NewPatternedPushRule::new(
                        rule_id.clone(),
                        pattern.to_owned(),
                        actions,
                    ))
                }
                RuleKind::Room => {
                    let room_id = OwnedRoomId::try_from(rule_id.as_str())
                        .map_err(|_| RuleError::Invalid("A room rule's id is the room's id".into()))?;
                    NewPushRule::Room(NewSimplePushRule::new(room_id, actions))
                }
                RuleKind::Sender => {
                    let user_id = OwnedUserId::try_from(rule_id.as_str()).map_err(|_| {
                        RuleError::Invalid("A sender rule's id is the sender's user id".into())
                    })?;
                    NewPushRule::Sender(NewSimplePushRule::new(user_id, actions))
                }
                _ => return Err(RuleError::UnknownKind(format!("{kind:?}"))),
            };
            // On a copy: ruma keeps the rule even when it then refuses `before` or `after`.
            let mut changed = ruleset.clone();
            // ruma moves an existing rule one place too far down (it takes the neighbour's index
            // from before taking the rule out): placed anew, it lands where asked.
            if (before.is_some() || after.is_some())
                && changed.get(kind.clone(), rule_id).is_some_and(|rule| !rule.is_server_default())
            {
                let _ = changed.remove(kind, rule_id);
            }
            changed.insert(rule, after.as_deref(), before.as_deref()).map_err(|error| match error {
                InsertPushRuleError::UnknownRuleId => RuleError::NotFound,
                other => RuleError::Invalid(other.to_string()),
            })?;
            *ruleset = changed;
            Ok(())
        }
        RuleChange::Delete { kind, rule_id } => {
            ruleset.remove(rule_kind(kind)?, rule_id).map_err(|error| match error {
                RemovePushRuleError::NotFound => RuleError::NotFound,
                other => RuleError::Invalid(other.to_string()),
            })
        }
        RuleChange::SetEnabled { kind, rule_id, enabled } => {
            ruleset.set_enabled(rule_kind(kind)?, rule_id, *enabled).map_err(|_| RuleError::NotFound)
        }
        RuleChange::SetActions { kind, rule_id, actions } => {
            let actions = actions_of(actions)?;
            ruleset.set_actions(rule_kind(kind)?, rule_id, actions).map_err(|_| RuleError::NotFound)
        }
    }
}

fn actions_of(actions: &Value) -> Result<Vec<Action>, RuleError> {
    if !actions.is_array() {
        return Err(RuleError::BadJson("`actions` must be a list".into()));
    }
    serde_json::from_value(actions.clone()).map_err(|e| RuleError::BadJson(format!("`actions`: {e}")))
}

#[cfg(test)]
mod change_tests {
    use super::*;

    fn alice() -> OwnedUserId {
        OwnedUserId::try_from("@alice:example.org").unwrap()
    }

    fn put(kind: &str, rule_id: &str, before: Option<&str>, after: Option<&str>, body: Value) -> RuleChange {
        RuleChange::Put {
            kind: kind.into(),
            rule_id: rule_id.into(),
            before: before.map(Into::into),
            after: after.map(Into::into),
            body,
        }
    }

    fn ids(ruleset: &Ruleset, kind: &str) -> Vec<String> {
        push_rules_content(ruleset)["global"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["rule_id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_defaults_parse_and_changes_apply_in_order() {
        let mut ruleset = user_ruleset(&alice(), None);
        assert_eq!(push_rules_content(&ruleset)["global"], default_ruleset(&alice()));
        let notify = json!({ "actions": ["notify"], "pattern": "cake" });
        apply(&mut ruleset, &put("content", "cake", None, None, notify.clone())).unwrap();
        apply(&mut ruleset, &put("content", "pie", None, None, json!({ "actions": [], "pattern": "pie" })))
            .unwrap();
        // A new rule goes first; `after` places one behind another.
        assert_eq!(&ids(&ruleset, "content")[..2], ["pie", "cake"]);
        apply(
            &mut ruleset,
            &put("content", "pie", None, Some("cake"), json!({ "actions": [], "pattern": "pie" })),
        )
        .unwrap();
        assert_eq!(&ids(&ruleset, "content")[..2], ["cake", "pie"], "{:?}", ids(&ruleset, "content"));
        // Unknown neighbours, server-default ids, a pattern-less content rule, a bad kind.
        let before_refusal = push_rules_content(&ruleset);
        let error =
            apply(&mut ruleset, &put("content", "x", Some("nope"), None, notify.clone())).unwrap_err();
        assert!(matches!(error, RuleError::NotFound), "{error}");
        assert_eq!(push_rules_content(&ruleset), before_refusal, "a refused change changes nothing");
        let error =
            apply(&mut ruleset, &put("override", ".m.rule.mine", None, None, json!({ "actions": [] })));
        assert!(matches!(error, Err(RuleError::Invalid(_))));
        let error = apply(&mut ruleset, &put("content", "x", None, None, json!({ "actions": [] })));
        assert!(matches!(error, Err(RuleError::BadJson(_))));
        let error = apply(&mut ruleset, &put("global", "x", None, None, notify.clone()));
        assert!(matches!(error, Err(RuleError::UnknownKind(_))));
        let error = apply(&mut ruleset, &put("room", "not a room", None, None, json!({ "actions": [] })));
        assert!(matches!(error, Err(RuleError::Invalid(_))));
        // Enabled and actions, on a default rule too; deleting a default rule is refused.
        apply(
            &mut ruleset,
            &RuleChange::SetEnabled {
                kind: "override".into(),
                rule_id: ".m.rule.master".into(),
                enabled: true,
            },
        )
        .unwrap();
        let content = push_rules_content(&ruleset);
        assert_eq!(content["global"]["override"][0]["enabled"], true);
        apply(
            &mut ruleset,
            &RuleChange::SetActions { kind: "content".into(), rule_id: "cake".into(), actions: json!([]) },
        )
        .unwrap();
        let error = apply(
            &mut ruleset,
            &RuleChange::Delete { kind: "override".into(), rule_id: ".m.rule.master".into() },
        );
        assert!(matches!(error, Err(RuleError::Invalid(_))));
        apply(&mut ruleset, &RuleChange::Delete { kind: "content".into(), rule_id: "pie".into() }).unwrap();
        let error =
            apply(&mut ruleset, &RuleChange::Delete { kind: "content".into(), rule_id: "pie".into() });
        assert!(matches!(error, Err(RuleError::NotFound)));
        // Stored and read back, the user's rules and changes stay, beside the defaults.
        let stored = push_rules_content(&ruleset);
        let again = user_ruleset(&alice(), Some(&stored));
        assert_eq!(push_rules_content(&again), stored);
        assert_eq!(ids(&again, "content")[0], "cake");
    }
}

/// What a user's rules decided for an event that notifies them.
#[derive(Debug, Clone)]
pub struct Notify<'r> {
    pub highlight: bool,
    /// The matched rule's actions.
    pub actions: &'r [Action],
}

/// An event prepared once for evaluating every member's rules against it.
pub struct Evaluated {
    flat: FlattenedJson,
    /// The thread root's event id for an event in a thread, else `main`.
    pub thread_id: String,
    /// Whether the event has `m.mentions`, which turns the legacy mention rules off.
    mentions: bool,
    /// `content.body` in lower case, and the users `m.mentions` names, for `may_single_out`.
    body: String,
    mentioned: Vec<String>,
    state_key: Option<String>,
    /// The text matches already made for this event, by a hash of what they compared: most
    /// members' rules are the server defaults, alike but for a few user-specific patterns, and
    /// each match lowercases the text it looks in.
    matches: std::sync::Mutex<std::collections::HashMap<u64, bool>>,
}

/// The legacy mention rules, off for an event with `m.mentions` (as ruma applies them).
const LEGACY_MENTION_RULES: [&str; 3] =
    [".m.rule.roomnotif", ".m.rule.contains_display_name", ".m.rule.contains_user_name"];

impl Evaluated {
    pub fn new(pdu: &crate::Pdu) -> Evaluated {
        let flat = match serde_json::value::RawValue::from_string(pdu.json.to_string()) {
            Ok(raw) => FlattenedJson::from_raw(&Raw::<Value>::from_json(raw)),
            Err(_) => FlattenedJson::from_raw(&Raw::<Value>::from_json(pdu.content.clone())),
        };
        let thread_id = match (
            flat.get_str("content.m\\.relates_to.rel_type"),
            flat.get_str("content.m\\.relates_to.event_id"),
        ) {
            (Some("m.thread"), Some(root)) => root.to_owned(),
            _ => "main".to_owned(),
        };
        let mentions = flat.contains_mentions();
        let content = pdu.content_value();
        let body = content.get("body").and_then(Value::as_str).unwrap_or_default().to_lowercase();
        let mentioned = content
            .get("m.mentions")
            .and_then(|mentions| mentions.get("user_ids"))
            .and_then(Value::as_array)
            .map(|users| users.iter().filter_map(|user| user.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Evaluated {
            flat,
            thread_id,
            mentions,
            body,
            mentioned,
            state_key: pdu.state_key.clone(),
            matches: Default::default(),
        }
    }

    /// Whether the server-default rules could decide differently for `user_id` than for another
    /// member: the event names them (`m.mentions`, a member event about them) or its body holds
    /// their localpart or display name. When not, every member with the default rules gets the
    /// same decision, made once. A superset: the rules match whole words only.
    pub fn may_single_out(&self, user_id: &UserId, display_name: &str) -> bool {
        self.state_key.as_deref() == Some(user_id.as_str())
            || self.mentioned.iter().any(|user| user == user_id.as_str())
            || self.body.contains(&user_id.localpart().to_lowercase())
            || (!display_name.is_empty() && self.body.contains(&display_name.to_lowercase()))
    }

    /// A text match (an `event_match` condition, a content rule's pattern, a display name),
    /// made once per event and `what` it compares.
    fn matched(&self, what: (u8, &str, &str), compute: impl FnOnce() -> bool) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        what.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(known) = self.matches.lock().ok().and_then(|matches| matches.get(&key).copied()) {
            return known;
        }
        let result = compute();
        if let Ok(mut matches) = self.matches.lock() {
            matches.insert(key, result);
        }
        result
    }

    /// Whether `condition` holds: as ruma's `PushCondition::applies`, with the text matches
    /// shared between members.
    async fn holds(&self, condition: &ruma::push::PushCondition, context: &PushConditionRoomCtx) -> bool {
        use ruma::push::PushCondition;
        match condition {
            PushCondition::EventMatch(data) => self.matched((0, &data.key, &data.pattern), || {
                let single = ruma::push::PushCondition::EventMatch(data.clone());
                ready_now(single.applies(&self.flat, context))
            }),
            #[allow(deprecated)]
            PushCondition::ContainsDisplayName => self.matched((1, &context.user_display_name, ""), || {
                ready_now(condition.applies(&self.flat, context))
            }),
            other => other.applies(&self.flat, context).await,
        }
    }

    /// Whether `rule` applies (the sender is never notified of their own event; checked by
    /// `decide`).
    async fn applies(&self, rule: ruma::push::AnyPushRuleRef<'_>, context: &PushConditionRoomCtx) -> bool {
        use ruma::push::AnyPushRuleRef;
        if !rule.enabled() || (self.mentions && LEGACY_MENTION_RULES.contains(&rule.rule_id())) {
            return false;
        }
        match rule {
            AnyPushRuleRef::Override(rule) | AnyPushRuleRef::Underride(rule) => {
                for condition in &rule.conditions {
                    if !self.holds(condition, context).await {
                        return false;
                    }
                }
                true
            }
            AnyPushRuleRef::Content(content) => self.matched((0, "content.body", &content.pattern), || {
                content.applies_to("content.body", &self.flat, context)
            }),
            other => other.applies(&self.flat, context).await,
        }
    }

    /// The first of the user's rules that applies decides (the spec's order of kinds and of
    /// rules within them); `None` when it does not notify, or when no rule applies.
    pub async fn decide<'r>(
        &self,
        ruleset: &'r Ruleset,
        context: &PushConditionRoomCtx,
    ) -> Option<Notify<'r>> {
        if self.flat.get_str("sender") == Some(context.user_id.as_str()) {
            return None;
        }
        for rule in ruleset.iter() {
            if self.applies(rule, context).await {
                let actions = rule.actions();
                if !actions.iter().any(Action::should_notify) {
                    return None;
                }
                return Some(Notify { highlight: actions.iter().any(Action::is_highlight), actions });
            }
        }
        None
    }
}

/// The answer of a condition check that never waits (ruma's conditions are `async` only for
/// the thread subscription condition, which this build leaves out); `false` if one ever did.
fn ready_now<F: std::future::Future<Output = bool>>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => false,
    }
}

/// The power levels part of a room's push rule context: who may notify the whole room.
pub fn power_levels_context(
    rules: &ruma::room_version_rules::AuthorizationRules,
    create: &crate::Pdu,
    power_levels: Option<&crate::Pdu>,
) -> PushConditionPowerLevelsCtx {
    use ruma::events::room::power_levels::{
        RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
    };
    let source = power_levels
        .and_then(|event| serde_json::from_str::<RoomPowerLevelsEventContent>(event.content.get()).ok())
        .map_or(RoomPowerLevelsSource::None, RoomPowerLevelsSource::Original);
    let mut creators = vec![create.sender.clone()];
    if let Some(additional) = create.content_value().get("additional_creators").and_then(Value::as_array) {
        creators.extend(additional.iter().filter_map(|user| OwnedUserId::try_from(user.as_str()?).ok()));
    }
    RoomPowerLevels::new(source, rules, creators).into()
}
