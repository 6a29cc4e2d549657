//! `/_matrix/key/v2/server` (this server's keys) and `/_matrix/key/v2/query` (the notary: other
//! servers' keys as they signed them, countersigned by this server).

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{CanonicalJsonObject, ServerName};
use ganglion_federation::own_keys::{own_key_response, sign};
use ganglion_http::{MatrixError, MatrixJson, MatrixQuery, MatrixResult, lenient};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::FederationState;

/// Servers one notary query may ask about.
const MAX_SERVERS_PER_QUERY: usize = 1000;

fn validity_ms(state: &FederationState) -> i64 {
    (state.config.federation.key_validity_hours * 60 * 60 * 1000) as i64
}

/// `GET /_matrix/key/v2/server`.
pub(crate) async fn server_keys(State(state): State<FederationState>) -> Json<CanonicalJsonObject> {
    Json(own_key_response(&state.key, ganglion_storage::now_ms(), validity_ms(&state)))
}

#[derive(Deserialize)]
pub(crate) struct QueryOne {
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    minimum_valid_until_ts: Option<u64>,
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub(crate) async fn query_one(
    State(state): State<FederationState>,
    Path(server): Path<String>,
    MatrixQuery(query): MatrixQuery<QueryOne>,
) -> MatrixResult<Json<Value>> {
    let minimum = query.minimum_valid_until_ts.unwrap_or(0) as i64;
    answer(&state, BTreeMap::from([(server, minimum)])).await
}

#[derive(Deserialize)]
pub(crate) struct QueryBody {
    server_keys: BTreeMap<String, BTreeMap<String, KeyCriteria>>,
}

#[derive(Deserialize)]
struct KeyCriteria {
    #[serde(default)]
    minimum_valid_until_ts: Option<i64>,
}

/// `POST /_matrix/key/v2/query`.
pub(crate) async fn query(
    State(state): State<FederationState>,
    MatrixJson(body): MatrixJson<QueryBody>,
) -> MatrixResult<Json<Value>> {
    if body.server_keys.len() > MAX_SERVERS_PER_QUERY {
        return Err(MatrixError::invalid_param(format!(
            "At most {MAX_SERVERS_PER_QUERY} servers can be asked about at once"
        )));
    }
    let wanted = body
        .server_keys
        .into_iter()
        .map(|(server, criteria)| {
            let minimum = criteria.values().filter_map(|c| c.minimum_valid_until_ts).max().unwrap_or(0);
            (server, minimum)
        })
        .collect();
    answer(&state, wanted).await
}

/// The answers for `wanted` (server name → the validity the asker needs), each countersigned.
/// A server this notary cannot vouch for is left out, as the spec says.
async fn answer(state: &FederationState, wanted: BTreeMap<String, i64>) -> MatrixResult<Json<Value>> {
    let mut answers = Vec::new();
    for (server, minimum) in wanted {
        let Ok(server) = ServerName::parse(&server) else {
            continue;
        };
        if state.federation.policy.refusal(server.as_str()).is_some() {
            continue;
        }
        match state.federation.keyring.answers_for_notary(&server, minimum, validity_ms(state)).await {
            Ok(found) => {
                for mut answer in found {
                    if server.as_str() != state.key.server_name {
                        sign(&state.key, &mut answer);
                    }
                    answers.push(answer);
                }
            }
            Err(error) => tracing::info!(%server, %error, "a notary query found no keys"),
        }
    }
    Ok(Json(json!({ "server_keys": answers })))
}
