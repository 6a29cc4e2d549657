//! `GET /_matrix/client/v3/sync`: parses the query (token, filter, timeout) and hands over to
//! the long-poll.

use std::{sync::Arc, time::Duration};

use axum::extract::State;
use ganglion_events::presence::PresenceState;
use ganglion_http::{Auth, MatrixError, MatrixQuery, MatrixResult, lenient};
use ganglion_storage::accounts;
use ganglion_types::SyncToken;
use http::{HeaderName, HeaderValue, header::CONTENT_TYPE};
use serde::Deserialize;

use crate::{SyncState, compute::SyncRequest, filter::Filter, wait};

/// Whether the answer came from memory alone or needed the database (for tests and operators).
pub(crate) const SYNC_SOURCE: &str = "x-ganglion-sync-source";

/// Longest a request may be held open, whatever `timeout` asks.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
pub(crate) struct SyncQuery {
    filter: Option<String>,
    since: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    full_state: Option<bool>,
    set_presence: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64_opt")]
    timeout: Option<u64>,
}

/// `GET /sync`.
pub(crate) async fn sync(
    State(state): State<SyncState>,
    Auth(session): Auth,
    MatrixQuery(query): MatrixQuery<SyncQuery>,
) -> MatrixResult<([(HeaderName, HeaderValue); 2], Vec<u8>)> {
    let since = match query.since.as_deref() {
        None | Some("") => None,
        Some(token) => {
            Some(SyncToken::parse(token).map_err(|_| MatrixError::invalid_param("Invalid `since` token"))?)
        }
    };
    // A token from another worker may be ahead of this one: wait for replication rather than
    // answer from an older state (which would repeat or skip rows).
    if let (Some(catch_up), Some(since)) = (&state.catch_up, &since)
        && !catch_up.reach(*since, Duration::from_millis(state.config.cluster.replication_wait_ms)).await
    {
        return Err(MatrixError::new(
            ganglion_types::ErrorClass::Unavailable,
            "This server is catching up; try again shortly",
        ));
    }
    let presence = presence_of(query.set_presence.as_deref())?;
    let filter = match query.filter.as_deref() {
        None | Some("") => Arc::new(Filter::default()),
        Some(filter) => filter_of_user(&state, session.user_id.as_str(), filter).await?,
    };
    let timeout = Duration::from_millis(query.timeout.unwrap_or(0)).min(MAX_TIMEOUT);
    // Counts the device as syncing (online by default) until the response is ready.
    let _syncing = state.syncing.sync_started(&session.user_id, &session.device_id, presence).await;
    let request = SyncRequest {
        user_id: session.user_id.as_str(),
        device_id: session.device_id.as_str(),
        since,
        full_state: query.full_state.unwrap_or(false),
        filter: &filter,
    };
    let batch = wait::sync_within(&state, &request, timeout).await?;
    state.memory.stats.count(batch.from_database);
    let source = if batch.from_database { "database" } else { "memory" };
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (HeaderName::from_static(SYNC_SOURCE), HeaderValue::from_static(source)),
    ];
    let now_ms = u64::try_from(ganglion_storage::now_ms()).unwrap_or(0);
    Ok((headers, batch.into_body(now_ms)))
}

/// The presence `?set_presence=` asks for while the device syncs (online when absent).
pub(crate) fn presence_of(set_presence: Option<&str>) -> MatrixResult<PresenceState> {
    match set_presence {
        None => Ok(PresenceState::Online),
        Some(presence) => PresenceState::parse(presence).ok_or_else(|| {
            MatrixError::invalid_param("`set_presence` must be online, offline or unavailable")
        }),
    }
}

/// The filter of `?filter=`: inline JSON when it starts with `{`, else the id of one of the
/// user's stored filters (cached: a stored filter never changes).
async fn filter_of_user(state: &SyncState, user_id: &str, filter: &str) -> MatrixResult<Arc<Filter>> {
    if filter.starts_with('{') {
        if let Some(parsed) = state.memory.inline_filters.get(filter) {
            return Ok(parsed);
        }
        let parsed = Arc::new(Filter::parse(filter)?);
        state.memory.inline_filters.insert(filter, parsed.clone());
        return Ok(parsed);
    }
    let filter_id: i64 = filter.parse().map_err(|_| MatrixError::invalid_param("Unknown filter id"))?;
    if let Some(filter) = state.memory.filters.get(user_id, filter_id) {
        return Ok(filter);
    }
    let mut conn = state.db.conn().await?;
    let Some(stored) = accounts::filter_by_id(&mut conn, user_id, filter_id).await? else {
        return Err(MatrixError::invalid_param("Unknown filter id"));
    };
    let filter = Arc::new(Filter::parse(&stored)?);
    state.memory.filters.insert(user_id, filter_id, filter.clone());
    Ok(filter)
}
