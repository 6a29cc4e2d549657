//! The state at a gap: when `get_missing_events` could not reach back to events this server
//! has, the earliest event it got names prev events still unknown here. The state after each
//! such prev event is asked of the origin (`/state_ids`), the events of it this server lacks are
//! fetched and checked like any PDU, and the master keeps them as outliers and takes the event
//! on that state, as a new forward extremity (the spec's "state at a gap").

use std::collections::HashSet;

use ganglion_events::ruma::{OwnedEventId, RoomVersionId, ServerName};
use ganglion_federation::{
    client::encode,
    pdu::{CheckedPdu, check_pdu},
};
use ganglion_http::MatrixResult;
use ganglion_rpc::GapState;
use serde_json::Value;

use crate::FederationState;

/// Gaps one transaction fills at most (each costs requests to the origin).
const MAX_GAPS: usize = 5;
/// Past this many unknown events at a gap, the whole state is fetched at once (`/state`)
/// rather than event by event (`/event`).
const MAX_SINGLE_FETCHES: usize = 50;

/// What the master needs to take events at gaps: the events to keep as outliers (the missing
/// prev events, the state before them and its auth chain) and the state before each.
#[derive(Default)]
pub(crate) struct Gaps {
    pub(crate) outliers: Vec<CheckedPdu>,
    pub(crate) states: Vec<GapState>,
    /// Gaps filled so far in this transaction.
    filled: usize,
}

fn string_ids(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|id| id.as_str().map(str::to_owned)).collect()
}

impl Gaps {
    /// Learns the state at each prev event of `events` (one room's, oldest first) that is
    /// neither here, among `events`, nor already `taken` in this transaction.
    pub(crate) async fn fill(
        &mut self,
        state: &FederationState,
        origin: &str,
        version: &RoomVersionId,
        events: &[CheckedPdu],
        taken: &HashSet<String>,
    ) -> MatrixResult<()> {
        let Some(first) = events.first() else { return Ok(()) };
        let room_id = first.room_id.clone();
        let ours: HashSet<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
        let mut prevs: Vec<String> = events
            .iter()
            .flat_map(|event| event.referenced("prev_events"))
            .filter(|id| !ours.contains(id.as_str()) && !taken.contains(id))
            .filter(|id| !self.states.iter().any(|gap| gap.event_id.as_str() == id))
            .collect();
        prevs.sort_unstable();
        prevs.dedup();
        if prevs.is_empty() {
            return Ok(());
        }
        let known: HashSet<String> = {
            let mut conn = state.db.conn().await?;
            ganglion_storage::events::events_by_id(&mut conn, &prevs)
                .await?
                .into_iter()
                .map(|row| row.event_id)
                .collect()
        };
        let Ok(server) = ServerName::parse(origin) else { return Ok(()) };
        for prev in prevs.into_iter().filter(|id| !known.contains(id)) {
            if self.filled >= MAX_GAPS {
                tracing::info!(%origin, %room_id, "more gaps than one transaction fills: the rest are left");
                break;
            }
            self.filled += 1;
            match self.fill_one(state, &server, version, room_id.as_str(), &prev).await {
                Ok(()) => tracing::info!(%origin, %room_id, %prev, "learnt the state at a gap"),
                Err(error) => {
                    tracing::info!(%origin, %room_id, %prev, %error, "the state at a gap could not be learnt")
                }
            }
        }
        Ok(())
    }

    async fn fill_one(
        &mut self,
        state: &FederationState,
        server: &ServerName,
        version: &RoomVersionId,
        room_id: &str,
        prev: &str,
    ) -> Result<(), String> {
        let client = &state.federation.client;
        let at = format!("{}?event_id={}", encode(room_id), encode(prev));
        let ids = client
            .get(server, &format!("/_matrix/federation/v1/state_ids/{at}"))
            .await
            .map_err(|error| error.to_string())?;
        let state_before = string_ids(&ids["pdu_ids"]);
        let prev_pdu = self.fetch_event(state, server, version, room_id, prev).await?;
        let mut wanted: Vec<String> = state_before
            .iter()
            .cloned()
            .chain(string_ids(&ids["auth_chain_ids"]))
            .chain(prev_pdu.referenced("auth_events"))
            .filter(|id| !self.outliers.iter().any(|event| event.event_id.as_str() == id))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let known: HashSet<String> = {
            let mut conn = state.db.conn().await.map_err(|error| error.to_string())?;
            ganglion_storage::events::events_by_id(&mut conn, &wanted)
                .await
                .map_err(|error| error.to_string())?
                .into_iter()
                .map(|row| row.event_id)
                .collect()
        };
        let unknown: Vec<String> = wanted.into_iter().filter(|id| !known.contains(id)).collect();
        if unknown.len() > MAX_SINGLE_FETCHES {
            let whole = client
                .get(server, &format!("/_matrix/federation/v1/state/{at}"))
                .await
                .map_err(|error| error.to_string())?;
            let unknown: HashSet<&str> = unknown.iter().map(String::as_str).collect();
            for event in whole["pdus"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(whole["auth_chain"].as_array().into_iter().flatten())
            {
                match check_pdu(&state.federation.keyring, version, event).await {
                    Ok(event)
                        if event.room_id.as_str() == room_id && unknown.contains(event.event_id.as_str()) =>
                    {
                        self.outliers.push(event)
                    }
                    Ok(_) => {}
                    Err(error) => tracing::info!(%server, %error, "refused an event of the state at a gap"),
                }
            }
        } else {
            for id in &unknown {
                match self.fetch_event(state, server, version, room_id, id).await {
                    Ok(event) => self.outliers.push(event),
                    Err(error) => {
                        tracing::info!(%server, %id, %error, "an event of the state at a gap is missing")
                    }
                }
            }
        }
        let event_id: OwnedEventId = prev_pdu.event_id.clone();
        self.outliers.push(prev_pdu);
        self.states.push(GapState {
            event_id,
            state_before: state_before
                .iter()
                .filter_map(|id| OwnedEventId::try_from(id.as_str()).ok())
                .collect(),
        });
        Ok(())
    }

    /// One event of the room from `server`, checked like any PDU.
    async fn fetch_event(
        &self,
        state: &FederationState,
        server: &ServerName,
        version: &RoomVersionId,
        room_id: &str,
        event_id: &str,
    ) -> Result<CheckedPdu, String> {
        let answer = state
            .federation
            .client
            .get(server, &format!("/_matrix/federation/v1/event/{}", encode(event_id)))
            .await
            .map_err(|error| error.to_string())?;
        let pdu = answer["pdus"].get(0).ok_or("no event in the answer")?;
        let event =
            check_pdu(&state.federation.keyring, version, pdu).await.map_err(|error| error.to_string())?;
        if event.event_id.as_str() != event_id || event.room_id.as_str() != room_id {
            return Err(format!("{server} answered another event"));
        }
        Ok(event)
    }
}
