//! Push rules: the `/pushrules` API. A user's rules are the server-default ruleset of the spec's
//! "Predefined Rules", as of v1.12 (the newest version `/versions` advertises: that includes the
//! body-matching rules deprecated in v1.7 and removed in v1.17), with their own changes. Those
//! are stored as `m.push_rules` account data by the master, which applies each change.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use ganglion_events::push_rules::{self, RuleChange};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult, Session};
use ganglion_rpc::UpdatePushRules;
use ganglion_storage::streams as stream_store;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::ClientState;

/// The user's rules as clients see them: the `global` ruleset with every kind listed.
pub(super) async fn global(state: &ClientState, session: &Session) -> MatrixResult<Value> {
    let mut conn = state.db.conn().await?;
    let stored =
        stream_store::account_data_content(&mut conn, session.user_id.as_str(), "", "m.push_rules").await?;
    let stored = stored.and_then(|text| serde_json::from_str::<Value>(&text).ok());
    let ruleset = push_rules::user_ruleset(&session.user_id, stored.as_ref());
    Ok(push_rules::push_rules_content(&ruleset)["global"].take())
}

/// The rule `rule_id` of kind `kind`, or 404.
async fn rule(state: &ClientState, session: &Session, kind: &str, rule_id: &str) -> MatrixResult<Value> {
    push_rules::rule_kind(kind).map_err(|error| MatrixError::invalid_param(error.to_string()))?;
    let mut global = global(state, session).await?;
    let found = global[kind]
        .as_array_mut()
        .and_then(|rules| rules.iter_mut().find(|rule| rule["rule_id"] == rule_id))
        .map(Value::take);
    found.ok_or_else(|| MatrixError::not_found("The push rule was not found"))
}

/// `{field: …}` of one rule (`enabled`, `actions`).
async fn rule_field(
    state: &ClientState,
    session: &Session,
    kind: &str,
    rule_id: &str,
    field: &str,
) -> MatrixResult<Json<Value>> {
    let mut rule = rule(state, session, kind, rule_id).await?;
    Ok(Json(json!({ field: rule[field].take() })))
}

async fn change(state: &ClientState, session: &Session, change: RuleChange) -> MatrixResult<Json<Value>> {
    state.master.update_push_rules(UpdatePushRules { user_id: session.user_id.clone(), change }).await?;
    Ok(Json(json!({})))
}

/// `GET /pushrules/`: every ruleset (only `global` exists).
pub(crate) async fn all_rules(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    Ok(Json(json!({ "global": global(&state, &session).await? })))
}

/// `GET /pushrules/global/`.
pub(crate) async fn global_rules(
    State(state): State<ClientState>,
    Auth(session): Auth,
) -> MatrixResult<Json<Value>> {
    Ok(Json(global(&state, &session).await?))
}

/// `GET /pushrules/global/{kind}/{ruleId}`.
pub(crate) async fn rule_by_id(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    Ok(Json(rule(&state, &session, &kind, &rule_id).await?))
}

#[derive(Deserialize)]
pub(crate) struct Placement {
    before: Option<String>,
    after: Option<String>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}`: adds or replaces a rule of the user's, placed by
/// `before` or `after` (another rule of theirs), or first of its kind.
pub(crate) async fn put_rule(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
    Query(placement): Query<Placement>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let Placement { before, after } = placement;
    let body = Value::Object(body);
    change(&state, &session, RuleChange::Put { kind, rule_id, before, after, body }).await
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`.
pub(crate) async fn delete_rule(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    change(&state, &session, RuleChange::Delete { kind, rule_id }).await
}

/// `GET /pushrules/global/{kind}/{ruleId}/enabled`.
pub(crate) async fn enabled(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    rule_field(&state, &session, &kind, &rule_id, "enabled").await
}

/// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
pub(crate) async fn set_enabled(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let Some(enabled) = body.get("enabled").and_then(Value::as_bool) else {
        return Err(MatrixError::bad_json("`enabled` must be true or false"));
    };
    change(&state, &session, RuleChange::SetEnabled { kind, rule_id, enabled }).await
}

/// `GET /pushrules/global/{kind}/{ruleId}/actions`.
pub(crate) async fn actions(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> MatrixResult<Json<Value>> {
    rule_field(&state, &session, &kind, &rule_id, "actions").await
}

/// `PUT /pushrules/global/{kind}/{ruleId}/actions`.
pub(crate) async fn set_actions(
    State(state): State<ClientState>,
    Auth(session): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let actions = body.get("actions").cloned().unwrap_or(Value::Null);
    change(&state, &session, RuleChange::SetActions { kind, rule_id, actions }).await
}
