//! History fetched from other servers (`/backfill`): events older than any this server has of a
//! room, kept below every other event (negative positions, oldest lowest) so that `/messages`
//! pages back into them while `/sync`, which reads forward from a position, never sees them. They
//! are not rows of the events stream and change no state: the room's state is the one it has.

use std::{collections::HashMap, sync::Arc};

use ganglion_events::{
    Pdu, check_auth,
    ruma::{OwnedEventId, OwnedRoomId, events::StateEventType},
};
use ganglion_rpc::{EventOutcome, MasterError, MasterResult};
use ganglion_storage::events as event_store;
use ganglion_types::EventNid;

use super::Batch;
use crate::internal;

impl Batch<'_> {
    /// Keeps `events` (of one room this server is in) as history: each that its own auth events
    /// (known here, or among `events`) allow; the others refused. Newest first, each below the
    /// last.
    pub(crate) async fn backfill(&mut self, mut events: Vec<Pdu>) -> MasterResult<Vec<EventOutcome>> {
        let Some(room_id) = events.first().map(|event| event.room_id.clone()) else { return Ok(Vec::new()) };
        let head = self
            .head(&room_id)
            .await?
            .ok_or_else(|| MasterError::not_found("This server is not in the room"))?;
        events
            .sort_by(|a, b| b.depth.cmp(&a.depth).then_with(|| b.origin_server_ts.cmp(&a.origin_server_ts)));
        let given: HashMap<OwnedEventId, Arc<Pdu>> =
            events.iter().map(|event| (event.event_id.clone(), Arc::new(event.clone()))).collect();
        let create = self.state_event(&head, "m.room.create", "").await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for pdu in events {
            let event_id = pdu.event_id.clone();
            // An event kept with the join for the room's state or auth chain (its creation, say)
            // that the history reaches takes its place in the timeline.
            if let Some(existing) = self.event_by_id(event_id.as_str()).await?
                && existing.row.room_nid == head.room_nid
            {
                let position = self.history_pos - 1;
                let conn = self.connection().await?;
                if event_store::promote_outlier(conn, existing.row.event_nid, position)
                    .await
                    .map_err(internal)?
                {
                    self.history_pos = position;
                }
                outcomes.push(EventOutcome { event_id, error: None });
                continue;
            }
            let result = self.keep_history(&head, &pdu, &given, create.as_ref().map(|c| c.pdu.clone())).await;
            if self.poisoned {
                return Err(result.err().unwrap_or_else(|| MasterError::internal("the batch failed")));
            }
            outcomes.push(EventOutcome { event_id, error: result.err() });
        }
        Ok(outcomes)
    }

    /// Keeps events fetched to learn the state at gaps (the state there and its auth chain, of
    /// rooms this server is in) as outliers: each that its own auth events (known here, or
    /// among `events`) allow, oldest first; the others are left out.
    pub(crate) async fn keep_outliers(&mut self, events: Vec<Pdu>) -> MasterResult<()> {
        let mut by_room: HashMap<OwnedRoomId, Vec<Pdu>> = HashMap::new();
        for event in events {
            by_room.entry(event.room_id.clone()).or_default().push(event);
        }
        for (room_id, mut events) in by_room {
            let Some(head) = self.head(&room_id).await? else {
                tracing::info!(%room_id, "left out the state at a gap of a room this server is not in");
                continue;
            };
            events.sort_by_key(|event| (u64::from(event.depth), u64::from(event.origin_server_ts.0)));
            let given: HashMap<OwnedEventId, Arc<Pdu>> =
                events.iter().map(|event| (event.event_id.clone(), Arc::new(event.clone()))).collect();
            let create = self.state_event(&head, "m.room.create", "").await?;
            let mut kept = Vec::new();
            for pdu in events {
                match self.keep_history(&head, &pdu, &given, create.as_ref().map(|c| c.pdu.clone())).await {
                    Ok(nid) => kept.extend(nid),
                    Err(error) if self.poisoned => return Err(error),
                    Err(error) => {
                        tracing::info!(event_id = %pdu.event_id, %error, "left out an event of the state at a gap")
                    }
                }
            }
            let conn = self.connection().await?;
            event_store::mark_outliers(conn, &kept).await.map_err(internal)?;
        }
        Ok(())
    }

    /// Keeps `pdu` below every other event if its auth events allow it; its NID, or `None` if it
    /// was here already.
    async fn keep_history(
        &mut self,
        head: &super::RoomHead,
        pdu: &Pdu,
        given: &HashMap<OwnedEventId, Arc<Pdu>>,
        create: Option<Arc<Pdu>>,
    ) -> MasterResult<Option<EventNid>> {
        if pdu.room_id.as_str() != given.values().next().map_or("", |e| e.room_id.as_str()) {
            return Err(MasterError::bad_json("The events are not all of one room"));
        }
        if self.event_by_id(pdu.event_id.as_str()).await?.is_some() {
            return Ok(None);
        }
        let mut auth: Vec<Arc<Pdu>> = Vec::with_capacity(pdu.auth_events.len());
        for id in &pdu.auth_events {
            match self.event_by_id(id.as_str()).await? {
                Some(event) if event.pdu.room_id == pdu.room_id => auth.push(event.pdu.clone()),
                Some(_) => return Err(MasterError::forbidden(format!("Auth event {id} is of another room"))),
                None => match given.get(id) {
                    Some(event) => auth.push(event.clone()),
                    None => return Err(MasterError::forbidden(format!("Unknown auth event {id}"))),
                },
            }
        }
        let mut by_id: HashMap<OwnedEventId, &Pdu> =
            auth.iter().map(|e| (e.event_id.clone(), &**e)).collect();
        if let Some(create) = &create {
            by_id.entry(create.event_id.clone()).or_insert(&**create);
        }
        let by_key: HashMap<(String, String), &Pdu> =
            by_id.values().filter_map(|e| Some(((e.kind.to_string(), e.state_key.clone()?), *e))).collect();
        check_auth(&head.rules.authorization, pdu, &by_id, |kind: &StateEventType, key: &str| {
            by_key.get(&(kind.to_string(), key.to_owned())).copied()
        })
        .map_err(|e| MasterError::forbidden(format!("Rejected by its auth events: {e}")))?;
        self.store_outside_stream(head, pdu).await.map(Some)
    }

    /// Stores `pdu` below every other event, outside the events stream (no client is told of it
    /// and no state changes): history, or an outlier once marked as one.
    pub(crate) async fn store_outside_stream(
        &mut self,
        head: &super::RoomHead,
        pdu: &Pdu,
    ) -> MasterResult<EventNid> {
        let caches = self.svc.caches.clone();
        let type_nid = caches.type_nid(self.tx(), pdu.kind.to_string().as_str()).await.map_err(internal)?;
        let state_key_nid = match &pdu.state_key {
            Some(key) => Some(caches.state_key_nid(self.tx(), key).await.map_err(internal)?),
            None => None,
        };
        let snapshot_nid = head.snapshot.nid.ok_or_else(|| MasterError::internal("room without state"))?;
        let event_nid = EventNid(self.next_nid);
        self.next_nid += 1;
        self.history_pos -= 1;
        let row = Arc::new(event_store::EventRow {
            event_nid,
            stream_pos: self.history_pos,
            event_id: pdu.event_id.to_string(),
            room_nid: head.room_nid,
            depth: i64::try_from(u64::from(pdu.depth)).unwrap_or(i64::MAX),
            type_nid,
            state_key_nid,
            sender: pdu.sender.to_string(),
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            json: pdu.json.to_string(),
            snapshot_nid,
            replaces_nid: None,
            redacted_by: None,
        });
        let unindexed = super::resolve::unindexed(head, event_nid, pdu);
        let tx = self.tx();
        tx.push_event(row, pdu);
        tx.unindexed.extend(unindexed);
        Ok(event_nid)
    }

    /// Keeps another server's soft-failed event (allowed by its auth events, not by the room's
    /// current state): found by id when later events name it, but outside the timeline, the
    /// state and the forward extremities, as the spec says.
    pub(crate) async fn keep_soft_failed(&mut self, head: &super::RoomHead, pdu: &Pdu) -> MasterResult<()> {
        let nid = self.store_outside_stream(head, pdu).await?;
        let conn = self.connection().await?;
        event_store::mark_soft_failed(conn, nid).await.map_err(internal)
    }
}
