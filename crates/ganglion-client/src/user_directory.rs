//! `POST /user_directory/search`: users found by part of their id or display name, among those
//! the searcher may find (see `ganglion_storage::user_directory`; `user_directory.search_all_users`
//! widens it to every active local user).

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use ganglion_http::{Auth, MatrixError, MatrixJson, MatrixResult};
use ganglion_storage::user_directory::{self as store, like_pattern};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{ClientState, rooms::from_object};

/// A user found: (display name, avatar URL).
type Profile = (Option<String>, Option<String>);

/// Results a search answers at most.
const MAX_LIMIT: u64 = 50;
/// Other servers' users a search looks at most (their display names live in member events).
const MAX_REMOTE_CANDIDATES: i64 = 500;

#[derive(Deserialize)]
struct SearchBody {
    search_term: String,
    limit: Option<u64>,
}

pub(crate) async fn search(
    State(state): State<ClientState>,
    Auth(session): Auth,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> MatrixResult<Json<Value>> {
    let body: SearchBody = from_object(body)?;
    let limit = body.limit.unwrap_or(10).clamp(1, MAX_LIMIT) as usize;
    let term = body.search_term.trim().to_lowercase();
    if term.len() > 255 {
        return Err(MatrixError::invalid_param("`search_term` is longer than 255 bytes"));
    }
    if term.is_empty() {
        return Ok(Json(json!({ "results": [], "limited": false })));
    }
    let pattern = like_pattern(&term);
    let searcher = session.user_id.as_str();
    let mut conn = state.db.conn().await?;
    let all_local = state.config.user_directory.search_all_users;
    // By user id: (display name, avatar URL).
    let mut found: BTreeMap<String, Profile> = BTreeMap::new();
    for user in
        store::local_users_matching(&mut conn, searcher, &pattern, all_local, limit as i64 + 1).await?
    {
        found.insert(user.user_id, (user.displayname, user.avatar_url));
    }
    let remote = store::remote_users_matching(&mut conn, searcher, &pattern, MAX_REMOTE_CANDIDATES).await?;
    let nids: Vec<_> = remote.iter().map(|(_, nid)| *nid).collect();
    for event in state.caches.events(&mut conn, &nids).await? {
        let Some(user_id) = event.pdu.state_key.clone() else { continue };
        let content = state.caches.visible_content(&mut conn, &event).await?;
        let text = |field: &str| content.get(field).and_then(Value::as_str).map(str::to_owned);
        let displayname = text("displayname");
        let matches = user_id.to_lowercase().contains(&term)
            || displayname.as_ref().is_some_and(|name| name.to_lowercase().contains(&term));
        if matches {
            found.insert(user_id, (displayname, text("avatar_url")));
        }
    }
    // Those whose name or localpart starts with the term first, then by user id.
    let starts = |user_id: &str, name: &Option<String>| {
        user_id[1..].to_lowercase().starts_with(&term)
            || name.as_ref().is_some_and(|name| name.to_lowercase().starts_with(&term))
    };
    let mut results: Vec<(String, Profile)> = found.into_iter().collect();
    results.sort_by_key(|(user_id, (name, _))| !starts(user_id, name));
    let limited = results.len() > limit;
    results.truncate(limit);
    let results: Vec<Value> = results
        .into_iter()
        .map(|(user_id, (displayname, avatar_url))| {
            let mut entry = Map::new();
            entry.insert("user_id".into(), json!(user_id));
            if let Some(name) = displayname {
                entry.insert("display_name".into(), json!(name));
            }
            if let Some(url) = avatar_url {
                entry.insert("avatar_url".into(), json!(url));
            }
            Value::Object(entry)
        })
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}
