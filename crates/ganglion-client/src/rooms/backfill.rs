//! Older history of a room shared with other servers, fetched when a client pages back past the
//! oldest event this server has (`/messages`): asked of the servers of the room's other members
//! (`/_matrix/federation/v1/backfill`), checked like any PDU, and kept by the master below every
//! other event.

use ganglion_events::ruma::{RoomVersionId, ServerName, UserId};
use ganglion_rpc::AcceptEvents;
use ganglion_storage::{Conn, events as event_store, rooms as room_store, rooms::RoomRow};
use serde_json::Value;

use crate::ClientState;

/// Events asked for per request.
const BATCH: usize = 100;
/// Servers asked in turn before giving up.
const MAX_SERVERS: usize = 3;

/// Fetches the history before the room's oldest event here; how many events were kept. Never
/// fails the page that asked: a server that cannot answer is logged and the next one asked.
pub(crate) async fn fetch_older(state: &ClientState, conn: &mut Conn, room: &RoomRow) -> usize {
    match try_fetch_older(state, conn, room).await {
        Ok(kept) => kept,
        Err(error) => {
            tracing::info!(room_id = %room.room_id, %error, "fetching older history failed");
            0
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn try_fetch_older(state: &ClientState, conn: &mut Conn, room: &RoomRow) -> Result<usize, BoxError> {
    let Some(oldest) = event_store::oldest_event_in_room(conn, room.room_nid).await? else { return Ok(0) };
    let oldest = ganglion_state::StoredEvent::from_row(oldest)?;
    // The room's beginning is here: nothing older exists.
    if oldest.pdu.kind.to_string() == "m.room.create" {
        return Ok(0);
    }
    let own = state.config.server_name.as_str();
    let mut servers: Vec<String> = room_store::memberships_of_room(conn, room.room_nid, Some("join"))
        .await?
        .into_iter()
        .filter_map(|member| Some(UserId::parse(member.user_id).ok()?.server_name().to_string()))
        .filter(|server| server != own)
        .collect();
    servers.sort();
    servers.dedup();
    let version = RoomVersionId::try_from(room.room_version.as_str())?;
    for server in servers.into_iter().take(MAX_SERVERS) {
        let Ok(destination) = ServerName::parse(&server) else { continue };
        let path = format!(
            "/_matrix/federation/v1/backfill/{}?v={}&limit={BATCH}",
            ganglion_federation::client::encode(room.room_id.as_str()),
            ganglion_federation::client::encode(oldest.pdu.event_id.as_str()),
        );
        let answer = match state.federation.client.get(&destination, &path).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::info!(%server, %error, "a server could not answer for older history");
                continue;
            }
        };
        let mut events = Vec::new();
        for pdu in answer.get("pdus").and_then(Value::as_array).into_iter().flatten() {
            match ganglion_federation::pdu::check_pdu(&state.federation.keyring, &version, pdu).await {
                Ok(checked) if checked.room_id.as_str() == room.room_id => {
                    events.push((checked.event_id, checked.json))
                }
                Ok(_) => {}
                Err(error) => tracing::info!(%server, %error, "refused a backfilled PDU"),
            }
        }
        if events.is_empty() {
            continue;
        }
        let outcomes =
            state.master.backfill(AcceptEvents { origin: server, events, ..AcceptEvents::default() }).await?;
        let kept = outcomes.iter().filter(|outcome| outcome.error.is_none()).count();
        // Only events older than what was here count: a server that answers with what this one
        // has already is not asked again for this page.
        let now_oldest = event_store::oldest_event_in_room(conn, room.room_nid).await?;
        if kept > 0 && now_oldest.is_some_and(|row| row.event_id != oldest.pdu.event_id.as_str()) {
            return Ok(kept);
        }
    }
    Ok(0)
}
