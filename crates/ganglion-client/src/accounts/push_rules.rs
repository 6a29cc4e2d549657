//! Push rules. Users cannot change them yet, so every user has the server-default ruleset of
//! the spec's "Predefined Rules", as of v1.12 (the newest version `/versions` advertises):
//! that includes the body-matching rules deprecated in v1.7 and removed in v1.17.

use axum::{Json, extract::Path};
use ganglion_events::push_rules::default_ruleset;
use ganglion_http::{Auth, MatrixError, MatrixResult};
use serde_json::{Value, json};

/// The rule kinds, in the order they are checked.
const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// `GET /pushrules/`: every ruleset (only `global` exists).
pub(crate) async fn all_rules(Auth(session): Auth) -> Json<Value> {
    Json(json!({ "global": default_ruleset(&session.user_id) }))
}

/// `GET /pushrules/global/`.
pub(crate) async fn global_rules(Auth(session): Auth) -> Json<Value> {
    Json(default_ruleset(&session.user_id))
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
pub(crate) async fn rule_by_id(
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    if !KINDS.contains(&kind.as_str()) {
        return Err(MatrixError::invalid_param(format!("Unknown push rule kind {kind:?}")));
    }
    let ruleset = default_ruleset(&session.user_id);
    let found = ruleset[kind.as_str()]
        .as_array()
        .and_then(|rules| rules.iter().find(|rule| rule["rule_id"] == rule_id.as_str()))
        .cloned();
    found.map(Json).ok_or_else(|| MatrixError::not_found("The push rule was not found"))
}
