//! The events stream's writer: room heads, and batches of events built, authorised and
//! persisted in one transaction.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};
use tracing::Instrument as _;

use ganglion_events::{
    EventTemplate, Pdu, auth_event_types, build_pdu, check_auth,
    ruma::{
        OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
        events::StateEventType, push::PushConditionPowerLevelsCtx, room_version_rules::RoomVersionRules,
    },
};
use ganglion_replication::StreamRow;
use ganglion_rpc::{MasterError, MasterResult};
use ganglion_state::{Snapshot, StoredEvent};
use ganglion_storage::{
    Connect, Db, auth_chains, events as event_store, rooms as room_store, state::StateEntry,
};
use ganglion_types::{ErrorClass, EventNid, RoomNid, StreamPosition};
use tokio::sync::MutexGuard;

use crate::{MasterService, internal};

mod history;
mod push;
mod resolve;

/// Positions of the streams the master writes, and the heads of rooms it has touched.
pub struct Writer {
    pub(crate) last_event_pos: i64,
    /// Event NIDs are handed out here, not by the database, so an event's row can wait for the
    /// batch's single insert while later events of the batch already refer to it.
    last_event_nid: i64,
    /// The lowest position of any event (0 until history is fetched from other servers, which
    /// takes the positions below it).
    first_event_pos: i64,
    pub(crate) last_receipt_pos: i64,
    pub(crate) last_account_data_pos: i64,
    pub(crate) last_to_device_pos: i64,
    pub(crate) last_device_list_pos: i64,
    pub(crate) last_presence_pos: i64,
    heads: HashMap<OwnedRoomId, RoomHead>,
    /// State resolutions already computed, by their input snapshots.
    resolved: HashMap<resolve::MemoKey, resolve::Resolved>,
    /// Users' push rules and ignore lists, for evaluating new events.
    recipients: HashMap<OwnedUserId, Arc<push::Recipient>>,
}

/// What the writer needs to append to a room: its current state and newest event.
#[derive(Clone)]
pub(crate) struct RoomHead {
    pub room_nid: RoomNid,
    pub rules: Arc<RoomVersionRules>,
    pub snapshot: Snapshot,
    pub latest_event_id: Option<OwnedEventId>,
    pub latest_event_nid: Option<EventNid>,
    /// Events nothing newer refers to yet: the latest, and other servers' concurrent ones. Our
    /// next event names them all as its `prev_events`, which joins the branches.
    pub extremities: Vec<OwnedEventId>,
    pub max_depth: i64,
    /// Position of the room's newest event that bumps it up room lists.
    pub bump_pos: i64,
    /// Joined users of other servers: the servers our events in the room are sent to.
    pub remote_joined: Arc<BTreeSet<OwnedUserId>>,
    /// Joined users of ours: whose push rules each new event is evaluated against.
    pub local_joined: Arc<BTreeSet<OwnedUserId>>,
    /// What push rule evaluation reads of the room's state, kept until the state changes.
    pub push: PushState,
}

/// What evaluating push rules reads of a room's state, made when first needed after a change
/// (reading member events for display names once per event and member would cost the writer a
/// lookup each, from the database once the event cache has moved on).
#[derive(Clone, Default)]
pub(crate) struct PushState {
    pub power: Option<Arc<PushConditionPowerLevelsCtx>>,
    /// Members' display names in the room (empty for none).
    pub names: Arc<HashMap<OwnedUserId, Arc<str>>>,
}

/// The most `prev_events` an event of ours names, as Synapse bounds it: more extremities than
/// this are joined over several events.
const MAX_PREV_EVENTS: usize = 10;

impl RoomHead {
    /// A room with no event yet: its create event (ours, or a joined room's) comes next.
    fn empty(room_nid: RoomNid, rules: RoomVersionRules) -> RoomHead {
        RoomHead {
            room_nid,
            rules: Arc::new(rules),
            snapshot: Snapshot::empty(),
            latest_event_id: None,
            latest_event_nid: None,
            extremities: Vec::new(),
            max_depth: 0,
            bump_pos: 0,
            remote_joined: Arc::default(),
            local_joined: Arc::default(),
            push: PushState::default(),
        }
    }

    /// Records a member's new membership in the joined sets.
    pub(crate) fn set_membership(&mut self, user: OwnedUserId, membership: &str, own_server: &str) {
        let joined = match user.server_name().as_str() == own_server {
            true => Arc::make_mut(&mut self.local_joined),
            false => Arc::make_mut(&mut self.remote_joined),
        };
        if membership == "join" {
            joined.insert(user);
        } else {
            joined.remove(&user);
        }
    }

    /// The servers other than ours with a joined member.
    pub(crate) fn remote_servers(&self) -> BTreeSet<String> {
        self.remote_joined.iter().map(|user| user.server_name().to_string()).collect()
    }
}

impl Writer {
    pub(crate) async fn load(db: &Db) -> MasterResult<Writer> {
        resolve::index_backlog(db).await?;
        index_relations_backlog(db).await?;
        index_search_backlog(db).await?;
        let mut conn = db.conn().await.map_err(internal)?;
        Ok(Writer {
            last_event_pos: event_store::max_event_stream_pos(&mut conn).await.map_err(internal)?,
            last_event_nid: event_store::max_event_nid(&mut conn).await.map_err(internal)?,
            first_event_pos: event_store::min_event_stream_pos(&mut conn).await.map_err(internal)?.min(0),
            last_receipt_pos: ganglion_storage::streams::max_receipt_stream_pos(&mut conn)
                .await
                .map_err(internal)?,
            last_account_data_pos: ganglion_storage::streams::max_account_data_stream_pos(&mut conn)
                .await
                .map_err(internal)?,
            last_to_device_pos: ganglion_storage::to_device::max_to_device_stream_pos(&mut conn)
                .await
                .map_err(internal)?,
            last_device_list_pos: ganglion_storage::keys::max_device_list_stream_pos(&mut conn)
                .await
                .map_err(internal)?,
            last_presence_pos: ganglion_storage::presence::max_presence_stream_pos(&mut conn)
                .await
                .map_err(internal)?,
            heads: HashMap::new(),
            resolved: HashMap::new(),
            recipients: HashMap::new(),
        })
    }
}

fn search_row(row: &event_store::EventRow, pdu: &Pdu) -> Option<ganglion_storage::search::SearchRow> {
    let (key, text) = pdu.searchable_text()?;
    Some(ganglion_storage::search::SearchRow {
        event_nid: row.event_nid,
        room_nid: row.room_nid,
        key: key.to_owned(),
        text,
    })
}

/// Indexes the searchable text of the rooms whose events predate the search index, one room
/// per transaction.
async fn index_search_backlog(db: &Db) -> MasterResult<()> {
    use ganglion_storage::search;
    let mut conn = db.conn().await.map_err(internal)?;
    let rooms = search::backlog(&mut conn).await.map_err(internal)?;
    drop(conn);
    for room_nid in rooms {
        let mut tx = db.begin().await.map_err(internal)?;
        let mut rows = Vec::new();
        for (event_nid, event_id, json) in
            search::searchable_events(&mut tx, room_nid).await.map_err(internal)?
        {
            let Ok(event_id) = OwnedEventId::try_from(event_id) else { continue };
            let Ok(pdu) = Pdu::from_json(event_id, Arc::from(json)) else { continue };
            if let Some((key, text)) = pdu.searchable_text() {
                rows.push(search::SearchRow { event_nid, room_nid, key: key.to_owned(), text });
            }
        }
        search::insert_search_rows(&mut tx, &rows).await.map_err(internal)?;
        search::clear_backlog(&mut tx, room_nid).await.map_err(internal)?;
        tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
        tracing::info!(?room_nid, events = rows.len(), "indexed the searchable text of a room");
    }
    Ok(())
}

/// Indexes the relations of the rooms whose events predate the relations table, one room per
/// transaction.
async fn index_relations_backlog(db: &Db) -> MasterResult<()> {
    use ganglion_storage::relations;
    let mut conn = db.conn().await.map_err(internal)?;
    let rooms = relations::backlog(&mut conn).await.map_err(internal)?;
    drop(conn);
    for room_nid in rooms {
        let mut tx = db.begin().await.map_err(internal)?;
        let mut rows = Vec::new();
        for (event_nid, event_id, json) in
            relations::events_with_relations(&mut tx, room_nid).await.map_err(internal)?
        {
            let Ok(event_id) = OwnedEventId::try_from(event_id) else { continue };
            let Ok(pdu) = Pdu::from_json(event_id, Arc::from(json)) else { continue };
            if let Some(relation) = pdu.relation() {
                rows.push(relations::RelationRow {
                    event_nid,
                    room_nid,
                    parent_id: relation.parent.to_string(),
                    rel_type: relation.rel_type,
                    key: relation.key,
                });
            }
        }
        relations::insert_relations(&mut tx, &rows).await.map_err(internal)?;
        relations::clear_backlog(&mut tx, room_nid).await.map_err(internal)?;
        tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
        tracing::info!(?room_nid, relations = rows.len(), "indexed the relations of a room");
    }
    Ok(())
}

fn now_ms() -> u64 {
    ganglion_storage::now_ms().max(0) as u64
}

fn build_error(error: ganglion_events::BuildError) -> MasterError {
    internal(error)
}

/// Refuses a template that cannot become an event (too large whatever the room adds, or a
/// `type` or `state_key` too long) before a batch starts, so nothing is written or locked for
/// it; `build_pdu` checks the exact size again inside the batch.
pub(crate) fn check_template(
    template: &EventTemplate,
    room_id: Option<&RoomId>,
    sender: &UserId,
) -> MasterResult<()> {
    ganglion_events::check_template(template, room_id, sender).map_err(internal)
}

/// A batch's transaction with the rows it has yet to write: event and transaction-id rows wait
/// for the first query that needs the database (or the commit) and go in one statement each,
/// since every round trip to the database delays the whole batch.
struct BatchTx {
    tx: ganglion_storage::Tx,
    events: Vec<Arc<event_store::EventRow>>,
    txns: Vec<(event_store::TxnKey, String)>,
    /// State events of `events`, for the auth chain index.
    unindexed: Vec<auth_chains::Unindexed>,
    /// Our events owed to other servers: `(destination, event, traceparent)`.
    outbox: Vec<ganglion_storage::federation::QueuedPdu>,
    /// What the push rules decided for the events' recipients.
    push_notices: Vec<ganglion_storage::push_actions::PushNoticeRow>,
    /// The relations of `events` to others.
    relations: Vec<ganglion_storage::relations::RelationRow>,
    /// The searchable text of `events`.
    search: Vec<ganglion_storage::search::SearchRow>,
}

impl BatchTx {
    async fn flush(&mut self) -> ganglion_storage::Result<()> {
        if !self.events.is_empty() {
            event_store::insert_events(&mut self.tx, &self.events).await?;
            self.events.clear();
        }
        if !self.relations.is_empty() {
            ganglion_storage::relations::insert_relations(&mut self.tx, &self.relations).await?;
            self.relations.clear();
        }
        if !self.search.is_empty() {
            ganglion_storage::search::insert_search_rows(&mut self.tx, &self.search).await?;
            self.search.clear();
        }
        if !self.txns.is_empty() {
            event_store::insert_txns(&mut self.tx, &self.txns).await?;
            self.txns.clear();
        }
        if !self.outbox.is_empty() {
            let now = ganglion_storage::now_ms();
            ganglion_storage::federation::insert_outbox_pdus(&mut self.tx, &self.outbox, now).await?;
            self.outbox.clear();
        }
        if !self.push_notices.is_empty() {
            ganglion_storage::push_actions::insert_push_notices(&mut self.tx, &self.push_notices).await?;
            self.push_notices.clear();
        }
        Ok(())
    }
}

impl BatchTx {
    /// Queues an event's row, with its relation to another and its searchable text if it has
    /// them.
    fn push_event(&mut self, row: Arc<event_store::EventRow>, pdu: &Pdu) {
        if let Some(search) = search_row(&row, pdu) {
            self.search.push(search);
        }
        if let Some(relation) = pdu.relation() {
            self.relations.push(ganglion_storage::relations::RelationRow {
                event_nid: row.event_nid,
                room_nid: row.room_nid,
                parent_id: relation.parent.to_string(),
                rel_type: relation.rel_type,
                key: relation.key,
            });
        }
        self.events.push(row);
    }

    /// Indexes the auth chains of the batch's state events so far. Not on every flush: an event
    /// kept before its own auth event (history comes newest first) would miss that event's chain.
    async fn index_auth_chains(&mut self) -> ganglion_storage::Result<()> {
        if !self.unindexed.is_empty() {
            self.flush().await?;
            auth_chains::index(&mut self.tx, &self.unindexed).await?;
            self.unindexed.clear();
        }
        Ok(())
    }
}

impl Connect for BatchTx {
    async fn connection(&mut self) -> ganglion_storage::Result<&mut ganglion_storage::Conn> {
        self.flush().await?;
        Ok(&mut **self.tx)
    }
}

/// Events appended in one transaction. Dropping a batch without committing rolls it back.
pub(crate) struct Batch<'w> {
    svc: &'w MasterService,
    writer: MutexGuard<'w, Writer>,
    tx: Option<BatchTx>,
    heads: HashMap<OwnedRoomId, RoomHead>,
    next_pos: i64,
    next_nid: i64,
    appended: Vec<Appended>,
    committed: bool,
    /// Set when a database error hit the transaction: it can only be rolled back.
    poisoned: bool,
    /// When the batch took the writer.
    started: std::time::Instant,
    /// The trace of the event being appended, for its stream row.
    trace: Option<Arc<str>>,
    /// Resolutions computed by this batch: remembered by the writer once it commits (a snapshot
    /// of a batch rolled back does not exist).
    resolved: Vec<(resolve::MemoKey, resolve::Resolved)>,
    /// The position of the last history event this batch kept (see `history.rs`).
    history_pos: i64,
    /// The state before prev events this server did not have, as the origin of the events
    /// naming them told it (see `resolve.rs`).
    gaps: HashMap<OwnedEventId, Vec<OwnedEventId>>,
    /// A state event placed on a fork, in the states being resolved before it is persisted.
    placing: Option<(StateEntry, Arc<Pdu>)>,
}

struct Appended {
    event: StoredEvent,
    txn: Option<(String, String)>,
    snapshot: Option<Snapshot>,
    redacted: Option<EventNid>,
    /// The `traceparent` of the span that persisted it, when traces are exported.
    trace: Option<Arc<str>>,
    /// Whom it notified.
    push: ganglion_replication::Notified,
}

impl<'w> Batch<'w> {
    pub(crate) async fn begin(svc: &'w MasterService) -> MasterResult<Batch<'w>> {
        let writer = svc.writer.lock().await;
        let started = std::time::Instant::now();
        let tx = svc.db.begin().await.map_err(internal)?;
        let next_pos = writer.last_event_pos + 1;
        let next_nid = writer.last_event_nid + 1;
        let history_pos = writer.first_event_pos;
        Ok(Batch {
            svc,
            writer,
            tx: Some(BatchTx {
                tx,
                events: Vec::new(),
                txns: Vec::new(),
                unindexed: Vec::new(),
                outbox: Vec::new(),
                push_notices: Vec::new(),
                relations: Vec::new(),
                search: Vec::new(),
            }),
            heads: HashMap::new(),
            next_pos,
            next_nid,
            appended: Vec::new(),
            committed: false,
            poisoned: false,
            started,
            trace: None,
            resolved: Vec::new(),
            history_pos,
            gaps: HashMap::new(),
            placing: None,
        })
    }

    /// This server's name.
    pub(crate) fn server_name(&self) -> String {
        self.svc.config.server_name.clone()
    }

    /// The transaction, for the caches (which reach the database only on a miss).
    fn tx(&mut self) -> &mut BatchTx {
        self.tx.as_mut().expect("transaction is open until commit")
    }

    /// The batch's transaction with every row appended so far written, for queries and for rows
    /// that commit with its events (aliases).
    pub(crate) async fn connection(&mut self) -> MasterResult<&mut ganglion_storage::Conn> {
        if let Err(error) = self.tx().flush().await {
            self.poisoned = true;
            return Err(internal(error));
        }
        Ok(&mut **self.tx().tx)
    }

    /// The head of a room, or `None` for an unknown room.
    pub(crate) async fn head(&mut self, room_id: &RoomId) -> MasterResult<Option<RoomHead>> {
        if let Some(head) = self.heads.get(room_id) {
            return Ok(Some(head.clone()));
        }
        if let Some(head) = self.writer.heads.get(room_id) {
            return Ok(Some(head.clone()));
        }
        let caches = self.svc.caches.clone();
        let Some(room) =
            room_store::room_by_id(self.connection().await?, room_id.as_str()).await.map_err(internal)?
        else {
            return Ok(None);
        };
        let (Some(snapshot_nid), Some(latest_nid)) = (room.current_snapshot_nid, room.latest_event_nid)
        else {
            return Ok(None);
        };
        let conn = self.tx();
        let snapshot = caches.snapshot(conn, snapshot_nid).await.map_err(internal)?;
        let latest = caches.event(conn, latest_nid).await.map_err(internal)?;
        let version = RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|e| MasterError::internal(e.to_string()))?;
        let rules = version.rules().ok_or_else(|| MasterError::internal("room version without rules"))?;
        let latest_event_id = latest.map(|event| event.pdu.event_id.clone());
        let extremities =
            match room.forward_extremities.as_deref().map(serde_json::from_str::<Vec<OwnedEventId>>) {
                Some(Ok(ids)) if !ids.is_empty() => ids,
                _ => latest_event_id.iter().cloned().collect(),
            };
        let own_server = self.svc.config.server_name.clone();
        let members = room_store::memberships_of_room(self.connection().await?, room.room_nid, Some("join"))
            .await
            .map_err(internal)?;
        let (local_joined, remote_joined) = members
            .into_iter()
            .filter_map(|member| OwnedUserId::try_from(member.user_id).ok())
            .partition(|user| user.server_name().as_str() == own_server);
        let head = RoomHead {
            room_nid: room.room_nid,
            rules: Arc::new(rules),
            snapshot,
            latest_event_id,
            latest_event_nid: Some(latest_nid),
            extremities,
            max_depth: room.max_depth,
            bump_pos: room.bump_stream_pos,
            remote_joined: Arc::new(remote_joined),
            local_joined: Arc::new(local_joined),
            push: PushState::default(),
        };
        self.writer.heads.insert(room_id.to_owned(), head.clone());
        Ok(Some(head))
    }

    /// The room's row (made if missing) and a head with no state or events yet, for a room of
    /// other servers this batch starts storing; its NID.
    async fn empty_head(
        &mut self,
        room_id: &RoomId,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
    ) -> MasterResult<RoomNid> {
        let conn = self.connection().await?;
        let room_nid = match room_store::room_by_id(conn, room_id.as_str()).await.map_err(internal)? {
            Some(room) => room.room_nid,
            None => room_store::insert_room(conn, room_id.as_str(), version.as_str(), false)
                .await
                .map_err(internal)?,
        };
        self.heads.insert(room_id.to_owned(), RoomHead::empty(room_nid, rules.clone()));
        Ok(room_nid)
    }

    /// The current state event `(kind, key)` of a room, as this batch sees it.
    pub(crate) async fn state_event(
        &mut self,
        head: &RoomHead,
        kind: &str,
        key: &str,
    ) -> MasterResult<Option<StoredEvent>> {
        let caches = self.svc.caches.clone();
        caches.state_event(self.tx(), &head.snapshot, kind, key).await.map_err(internal)
    }

    pub(crate) async fn event_by_id(&mut self, event_id: &str) -> MasterResult<Option<StoredEvent>> {
        let caches = self.svc.caches.clone();
        caches.event_by_id(self.tx(), event_id).await.map_err(internal)
    }

    /// Starts a room: builds and persists its create event. Returns the new room's id.
    pub(crate) async fn create_room(
        &mut self,
        version: &RoomVersionId,
        sender: &UserId,
        create_content: serde_json::Value,
        public: bool,
    ) -> MasterResult<(OwnedRoomId, StoredEvent)> {
        let rules = version.rules().ok_or_else(|| {
            MasterError::new(ErrorClass::UnsupportedRoomVersion, "unsupported room version")
        })?;
        let template = EventTemplate::state("m.room.create", "", create_content);
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            Some(random_room_id(&self.svc.config.server_name)?)
        };
        let mut ts = now_ms();
        let pdu = loop {
            let pdu =
                build_pdu(&self.svc.key, &rules, room_id.as_deref(), sender, &template, &[], &[], 1, ts)
                    .map_err(build_error)?;
            // Where the room id is the create event's hash, the same creator and content in the
            // same millisecond would name a room that exists: a later timestamp names a new one.
            // The writer lock is held, so no other room can take the id in between.
            if room_id.is_some()
                || room_store::room_by_id(self.connection().await?, pdu.room_id.as_str())
                    .await
                    .map_err(internal)?
                    .is_none()
            {
                break pdu;
            }
            ts += 1;
        };
        check_auth(&rules.authorization, &pdu, &HashMap::new(), |_: &StateEventType, _: &str| None::<&Pdu>)
            .map_err(|e| MasterError::bad_json(format!("invalid m.room.create: {e}")))?;
        let room_id = pdu.room_id.clone();
        let room_nid =
            room_store::insert_room(self.connection().await?, room_id.as_str(), version.as_str(), public)
                .await
                .map_err(|e| {
                    if e.is_unique_violation() {
                        MasterError::new(ErrorClass::RoomInUse, "room exists")
                    } else {
                        internal(e)
                    }
                })?;
        self.heads.insert(room_id.clone(), RoomHead::empty(room_nid, rules));
        let event = self.persist(&room_id, pdu, None).await?;
        Ok((room_id, event))
    }

    /// Whether a database error hit the transaction (only a rollback is possible then).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The events already sent under any of `keys` (client transaction ids), in one query.
    pub(crate) async fn event_ids_by_txns(
        &mut self,
        keys: &[event_store::TxnKey],
    ) -> MasterResult<HashMap<event_store::TxnKey, OwnedEventId>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let found = event_store::event_ids_by_txns(self.connection().await?, keys).await;
        let found = found.map_err(|e| {
            self.poisoned = true;
            internal(e)
        })?;
        found
            .into_iter()
            .map(|(key, id)| {
                OwnedEventId::try_from(id)
                    .map(|id| (key, id))
                    .map_err(|e| MasterError::internal(e.to_string()))
            })
            .collect()
    }

    /// Builds an event on top of the room's head, checks it against the auth rules and the
    /// current state, and persists it in this batch.
    pub(crate) async fn append(
        &mut self,
        room_id: &RoomId,
        sender: &UserId,
        template: &EventTemplate,
        txn: Option<(&OwnedDeviceId, &str)>,
    ) -> MasterResult<StoredEvent> {
        // Exported, persisting an event is a span that the workers' spans for it continue.
        let span = if ganglion_telemetry::exporting() {
            tracing::info_span!("master.persist", otel.name = "persist event", event.type = %template.kind, room.id = %room_id)
        } else {
            tracing::Span::none()
        };
        self.trace = ganglion_telemetry::traceparent(&span).map(Arc::from);
        let result = self.append_unchecked(room_id, sender, template, txn).instrument(span).await;
        if let Err(error) = &result {
            match error.class {
                ErrorClass::Internal | ErrorClass::Unavailable => self.poisoned = true,
                ErrorClass::Forbidden => self.svc.count_rejected("forbidden"),
                ErrorClass::TooLarge => self.svc.count_rejected("too_large"),
                ErrorClass::NotFound => self.svc.count_rejected("unknown_room"),
                _ => self.svc.count_rejected("invalid"),
            }
        }
        result
    }

    async fn append_unchecked(
        &mut self,
        room_id: &RoomId,
        sender: &UserId,
        template: &EventTemplate,
        txn: Option<(&OwnedDeviceId, &str)>,
    ) -> MasterResult<StoredEvent> {
        let pdu = self.build_checked(room_id, sender, template).await?;
        self.persist(room_id, pdu, txn).await
    }

    /// Builds an event on top of the room's head and checks it against the auth rules and the
    /// current state, without persisting it.
    pub(crate) async fn build_checked(
        &mut self,
        room_id: &RoomId,
        sender: &UserId,
        template: &EventTemplate,
    ) -> MasterResult<Pdu> {
        let Some(head) = self.head(room_id).await? else {
            return Err(MasterError::not_found("Unknown room"));
        };
        let rules = head.rules.clone();
        let content = serde_json::value::to_raw_value(&template.content)
            .map_err(|e| MasterError::bad_json(e.to_string()))?;
        let types = auth_event_types(
            &rules.authorization,
            &template.kind,
            sender,
            template.state_key.as_deref(),
            &content,
        )
        .map_err(|e| MasterError::bad_json(e.0))?;
        let mut state: HashMap<(String, String), StoredEvent> = HashMap::new();
        let wanted = types
            .iter()
            .map(|(kind, key)| (kind.to_string(), key.clone()))
            .chain(std::iter::once(("m.room.create".to_owned(), String::new())));
        for (kind, key) in wanted.collect::<Vec<_>>() {
            if let Some(event) = self.state_event(&head, &kind, &key).await? {
                state.insert((kind, key), event);
            }
        }
        let auth_events: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| {
                state.get(&(kind.to_string(), key.clone())).map(|e| e.pdu.event_id.clone())
            })
            .collect();
        let skip = head.extremities.len().saturating_sub(MAX_PREV_EVENTS);
        let prev_events: Vec<OwnedEventId> = head.extremities[skip..].to_vec();
        let depth = (head.max_depth + 1) as u64;
        let pdu = build_pdu(
            &self.svc.key,
            &rules,
            Some(room_id),
            sender,
            template,
            &prev_events,
            &auth_events,
            depth,
            now_ms(),
        )
        .map_err(build_error)?;
        let by_id: HashMap<OwnedEventId, &Pdu> =
            state.values().map(|e| (e.pdu.event_id.clone(), &*e.pdu)).collect();
        check_auth(&rules.authorization, &pdu, &by_id, |kind: &StateEventType, key: &str| {
            state.get(&(kind.to_string(), key.to_owned())).map(|e| &*e.pdu)
        })
        .map_err(|e| MasterError::forbidden(format!("Event not allowed: {e}")))?;
        Ok(pdu)
    }

    /// Takes another server's event, whose signatures, hashes and id the federation reader
    /// checked: its auth events must be known here; it must pass the auth rules against its
    /// own auth events (else it is rejected) and against the room's current state (else it is
    /// soft-failed: not persisted, so it never reaches a timeline). An event already persisted
    /// is taken again without effect.
    /// `own` takes an event of ours that another server countersigned (an invite of its user)
    /// instead.
    pub(crate) async fn append_remote(&mut self, pdu: Pdu, own: bool) -> MasterResult<Option<StoredEvent>> {
        if self.event_by_id(pdu.event_id.as_str()).await?.is_some() {
            return Ok(None);
        }
        let conn = self.connection().await?;
        if let Some(reason) =
            event_store::rejection_of(conn, pdu.event_id.as_str()).await.map_err(internal)?
        {
            return Err(MasterError::forbidden(reason));
        }
        let result = self.append_remote_checked(pdu.clone(), own).await;
        // Refused by the auth rules: recorded, so it is refused again at once if sent again.
        if let Err(error) = &result
            && error.class == ErrorClass::Forbidden
            && error.message.starts_with("Rejected by")
            && !self.poisoned
        {
            let conn = self.connection().await?;
            event_store::insert_rejected_event(
                conn,
                pdu.event_id.as_str(),
                &error.message,
                ganglion_storage::now_ms(),
            )
            .await
            .map_err(internal)?;
        }
        result
    }

    async fn append_remote_checked(&mut self, pdu: Pdu, own: bool) -> MasterResult<Option<StoredEvent>> {
        let Some(head) = self.head(&pdu.room_id).await? else {
            return Err(MasterError::not_found("This server is not in the room"));
        };
        if (pdu.sender.server_name().as_str() == self.svc.config.server_name) != own {
            return Err(MasterError::forbidden("The event's sender is not of the server it came from"));
        }
        let rules = head.rules.clone();
        let mut auth_events = Vec::with_capacity(pdu.auth_events.len());
        for id in &pdu.auth_events {
            match self.event_by_id(id.as_str()).await? {
                Some(event) if event.pdu.room_id == pdu.room_id => auth_events.push(event),
                _ => return Err(MasterError::forbidden(format!("Unknown auth event {id}"))),
            }
        }
        // Missing prev events leave a gap in the history (filled by backfill, not here); the
        // event is checked against the current state like any other.
        // The room's create event is an auth event of everything in v12, where it is not listed.
        let create = self.state_event(&head, "m.room.create", "").await?;
        let mut by_id: HashMap<OwnedEventId, &Pdu> =
            auth_events.iter().map(|e| (e.pdu.event_id.clone(), &*e.pdu)).collect();
        if let Some(create) = &create {
            by_id.entry(create.pdu.event_id.clone()).or_insert(&*create.pdu);
        }
        let by_key: HashMap<(String, String), &Pdu> =
            by_id.values().filter_map(|e| Some(((e.kind.to_string(), e.state_key.clone()?), *e))).collect();
        check_auth(&rules.authorization, &pdu, &by_id, |kind: &StateEventType, key: &str| {
            by_key.get(&(kind.to_string(), key.to_owned())).copied()
        })
        .map_err(|e| MasterError::forbidden(format!("Rejected by its auth events: {e}")))?;
        // An event that does not follow exactly the room's forward extremities sits on a fork:
        // the state before it is the resolution of the states after its known prev events, and
        // it must pass the auth rules against that state too.
        // A prev event this server did not have (at a gap the origin could not fill) brings the
        // state after it as the origin told it.
        let mut prevs = Vec::with_capacity(pdu.prev_events.len());
        let mut gap_states = Vec::new();
        for id in &pdu.prev_events {
            if let Some(state_before) = self.gaps.get(id).cloned() {
                gap_states.extend(self.state_after_gap(&head, id, &state_before).await?);
            } else if let Some(event) = self.event_by_id(id.as_str()).await?
                && event.pdu.room_id == pdu.room_id
            {
                prevs.push(event);
            }
        }
        let follows_head = (gap_states.is_empty() && prevs.is_empty()) || {
            let mut prev_ids: Vec<&OwnedEventId> = pdu.prev_events.iter().collect();
            let mut extremities: Vec<&OwnedEventId> = head.extremities.iter().collect();
            prev_ids.sort();
            prev_ids.dedup();
            extremities.sort();
            prev_ids == extremities
        };
        let fork = if follows_head {
            None
        } else {
            let mut afters = gap_states;
            for prev in &prevs {
                afters.push(self.state_after(prev).await?);
            }
            let before = self.resolve(&head, afters).await?;
            let caches = self.svc.caches.clone();
            let mut in_before: HashMap<(String, String), StoredEvent> = HashMap::new();
            let types = auth_event_types(
                &rules.authorization,
                &pdu.kind.to_string(),
                &pdu.sender,
                pdu.state_key.as_deref(),
                &pdu.content,
            )
            .map_err(|e| MasterError::bad_json(e.0))?;
            for (kind, key) in types.iter().map(|(kind, key)| (kind.to_string(), key.clone())) {
                if let Some(event) =
                    caches.state_event(self.tx(), &before, &kind, &key).await.map_err(internal)?
                {
                    in_before.insert((kind, key), event);
                }
            }
            if let Some(create) = &create {
                in_before.insert(("m.room.create".to_owned(), String::new()), create.clone());
            }
            check_auth(&rules.authorization, &pdu, &by_id, |kind: &StateEventType, key: &str| {
                in_before.get(&(kind.to_string(), key.to_owned())).map(|e| &*e.pdu)
            })
            .map_err(|e| MasterError::forbidden(format!("Rejected by the state before it: {e}")))?;
            Some(before)
        };
        let types = auth_event_types(
            &rules.authorization,
            &pdu.kind.to_string(),
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
        )
        .map_err(|e| MasterError::bad_json(e.0))?;
        let mut current: HashMap<(String, String), StoredEvent> = HashMap::new();
        for (kind, key) in types.iter().map(|(kind, key)| (kind.to_string(), key.clone())) {
            if let Some(event) = self.state_event(&head, &kind, &key).await? {
                current.insert((kind, key), event);
            }
        }
        if let Some(create) = &create {
            current.insert(("m.room.create".to_owned(), String::new()), create.clone());
        }
        let allowed_now =
            check_auth(&rules.authorization, &pdu, &by_id, |kind: &StateEventType, key: &str| {
                current.get(&(kind.to_string(), key.to_owned())).map(|e| &*e.pdu)
            });
        if let Err(e) = allowed_now {
            self.keep_soft_failed(&head, &pdu).await?;
            return Err(MasterError::forbidden(format!(
                "{} against the current state: {e}",
                ganglion_rpc::rooms::SOFT_FAILED
            )));
        }
        let room_id = pdu.room_id.clone();
        match fork {
            None => self.persist(&room_id, pdu, None).await.map(Some),
            Some(before) => self.persist_on_fork(&room_id, pdu, before).await.map(Some),
        }
    }

    /// Persists another server's event that sits on a fork of the room's event graph: the state
    /// after it is `before` with it applied, the room's new current state the resolution of the
    /// states after each new forward extremity.
    async fn persist_on_fork(
        &mut self,
        room_id: &RoomId,
        pdu: Pdu,
        before: Snapshot,
    ) -> MasterResult<StoredEvent> {
        let mut head = self.head(room_id).await?.ok_or_else(|| MasterError::not_found("Unknown room"))?;
        let caches = self.svc.caches.clone();
        let after = match &pdu.state_key {
            Some(key) => {
                let type_nid =
                    caches.type_nid(self.tx(), pdu.kind.to_string().as_str()).await.map_err(internal)?;
                let state_key_nid = caches.state_key_nid(self.tx(), key).await.map_err(internal)?;
                let entry = StateEntry { type_nid, state_key_nid, event_nid: EventNid(self.next_nid) };
                self.placing = Some((entry, Arc::new(pdu.clone())));
                caches.write_snapshot(self.tx(), head.room_nid, &before, &[entry]).await.map_err(internal)?
            }
            None => before,
        };
        let mut states = vec![after.clone()];
        for id in head.extremities.clone() {
            if pdu.prev_events.contains(&id) {
                continue;
            }
            if let Some(extremity) = self.event_by_id(id.as_str()).await? {
                states.push(self.state_after(&extremity).await?);
            }
        }
        let current_before = head.snapshot.clone();
        tracing::info!(%room_id, event_id = %pdu.event_id, branches = states.len(), "an event on a fork of the room's graph: resolving the room's state");
        let current = self.resolve(&head, states).await;
        self.placing = None;
        let current = current?;
        head.snapshot = current.clone();
        head.push = PushState::default();
        self.heads.insert(room_id.to_owned(), head);
        // Not as state: its effect on the room's state is the resolution's.
        let event = self.persist_event(room_id, pdu, None, false, true).await?;
        let mut head = self.head(room_id).await?.ok_or_else(|| MasterError::not_found("Unknown room"))?;
        self.apply_membership_changes(&mut head, &current_before, &current, event.row.stream_pos).await?;
        self.heads.insert(room_id.to_owned(), head);
        if after.nid != current.nid
            && let Some(after_nid) = after.nid
        {
            let conn = self.connection().await?;
            event_store::insert_state_after(conn, event.row.event_nid, after_nid).await.map_err(internal)?;
        }
        Ok(event)
    }

    /// Starts a room of other servers that one of our users joins: its auth chain and state
    /// (checked by the worker), oldest first, each against its own auth events (one that fails
    /// is left out), the state events making up the room's state and the others persisted
    /// outside it; then the join, checked against that state. The join is the room's only
    /// forward extremity: our next event follows it.
    pub(crate) async fn import_room(
        &mut self,
        room_id: &RoomId,
        version: &RoomVersionId,
        mut events: Vec<(Pdu, bool)>,
        history: &std::collections::HashSet<OwnedEventId>,
        join: Pdu,
    ) -> MasterResult<StoredEvent> {
        let rules = ganglion_events::rules_for(version).ok_or_else(|| {
            MasterError::new(ErrorClass::UnsupportedRoomVersion, "unsupported room version")
        })?;
        if self.head(room_id).await?.is_none() {
            let room_nid = self.empty_head(room_id, version, &rules).await?;
            events.sort_by_key(|(pdu, _)| (u64::from(pdu.depth), u64::from(pdu.origin_server_ts.0)));
            let mut known: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
            let mut create: Option<Arc<Pdu>> = None;
            // Those stored before, in one query (looking each up would also write each event's
            // row on its own instead of in the batch's few inserts).
            let ids: Vec<String> = events.iter().map(|(pdu, _)| pdu.event_id.to_string()).collect();
            let conn = self.connection().await?;
            let mut stored_before: HashMap<String, StoredEvent> = HashMap::new();
            for row in event_store::events_by_id(conn, &ids).await.map_err(internal)? {
                let event = StoredEvent::from_row(row).map_err(internal)?;
                stored_before.insert(event.row.event_id.clone(), event);
            }
            // The events the auth rules allow, each checked against the events before it.
            let mut accepted: Vec<(Pdu, bool)> = Vec::new();
            // Events stored before the join (an invite of ours) that are part of the state.
            let mut earlier_state: Vec<StoredEvent> = Vec::new();
            for (pdu, in_state) in events {
                if pdu.room_id != room_id || known.contains_key(&pdu.event_id) {
                    continue;
                }
                if let Some(stored) = stored_before.remove(pdu.event_id.as_str()) {
                    if in_state && stored.row.room_nid == room_nid && stored.pdu.state_key.is_some() {
                        earlier_state.push(stored.clone());
                    }
                    if stored.pdu.kind.to_string() == "m.room.create" {
                        create = Some(stored.pdu.clone());
                    }
                    known.insert(pdu.event_id.clone(), stored.pdu.clone());
                    continue;
                }
                let mut by_id: HashMap<OwnedEventId, &Pdu> = HashMap::new();
                for id in pdu.auth_events.iter() {
                    if let Some(event) = known.get(id) {
                        by_id.insert(id.clone(), event);
                    }
                }
                // Room v12 names the create event by the room id, not in auth_events.
                if let Some(create) = &create {
                    by_id.entry(create.event_id.clone()).or_insert(create);
                }
                let by_key: HashMap<(String, String), &Pdu> = by_id
                    .values()
                    .filter_map(|e| Some(((e.kind.to_string(), e.state_key.clone()?), *e)))
                    .collect();
                let allowed =
                    check_auth(&rules.authorization, &pdu, &by_id, |kind: &StateEventType, key: &str| {
                        by_key.get(&(kind.to_string(), key.to_owned())).copied()
                    });
                if let Err(error) = allowed {
                    tracing::info!(event_id = %pdu.event_id, %error, "left out an event of a joined room's state");
                    continue;
                }
                let shared = Arc::new(pdu.clone());
                if pdu.kind.to_string() == "m.room.create" {
                    create = Some(shared.clone());
                }
                known.insert(pdu.event_id.clone(), shared);
                accepted.push((pdu, in_state));
            }
            self.import_state(room_id, room_nid, accepted, earlier_state, history).await?;
        }
        let head =
            self.head(room_id).await?.ok_or_else(|| MasterError::internal("imported room without head"))?;
        let types = auth_event_types(
            &rules.authorization,
            &join.kind.to_string(),
            &join.sender,
            join.state_key.as_deref(),
            &join.content,
        )
        .map_err(|e| MasterError::bad_json(e.0))?;
        let mut current: HashMap<(String, String), StoredEvent> = HashMap::new();
        let wanted = types
            .iter()
            .map(|(kind, key)| (kind.to_string(), key.clone()))
            .chain(std::iter::once(("m.room.create".to_owned(), String::new())));
        for (kind, key) in wanted.collect::<Vec<_>>() {
            if let Some(event) = self.state_event(&head, &kind, &key).await? {
                current.insert((kind, key), event);
            }
        }
        let by_id: HashMap<OwnedEventId, &Pdu> =
            current.values().map(|e| (e.pdu.event_id.clone(), &*e.pdu)).collect();
        check_auth(&rules.authorization, &join, &by_id, |kind: &StateEventType, key: &str| {
            current.get(&(kind.to_string(), key.to_owned())).map(|e| &*e.pdu)
        })
        .map_err(|e| MasterError::forbidden(format!("The room's state does not allow the join: {e}")))?;
        let join_id = join.event_id.clone();
        let event = self.persist(room_id, join, None).await?;
        if let Some(head) = self.heads.get_mut(room_id) {
            head.extremities = vec![join_id];
        }
        Ok(event)
    }

    /// Stores another server's invite of one of our users to a room this server is not in: the
    /// event (found by id, with its membership, for the invitee's sync) and the stripped state
    /// sent with it. The room gets no state or head here: joining it imports them. Our user's
    /// rejection of such an invite is stored the same way.
    pub(crate) async fn store_remote_invite(
        &mut self,
        version: &RoomVersionId,
        pdu: Pdu,
        invite_state: &str,
    ) -> MasterResult<()> {
        if self.event_by_id(pdu.event_id.as_str()).await?.is_some() {
            return Ok(());
        }
        let room_id = pdu.room_id.clone();
        if self.head(&room_id).await?.is_some() {
            // A room we are in: the invite is one more event of it.
            return self.append_remote(pdu, false).await.map(|_| ());
        }
        let rules = ganglion_events::rules_for(version).ok_or_else(|| {
            MasterError::new(ErrorClass::UnsupportedRoomVersion, "unsupported room version")
        })?;
        self.empty_head(&room_id, version, &rules).await?;
        // An invite or a knock keeps the stripped state the room showed with it.
        let is_invite = matches!(pdu.content_value()["membership"].as_str(), Some("invite" | "knock"));
        let event = self.persist_event(&room_id, pdu, None, true, true).await;
        // Not a head: the room's state is not known here.
        self.heads.remove(&room_id);
        let event = event?;
        if !is_invite {
            return Ok(());
        }
        let conn = self.connection().await?;
        ganglion_storage::federation::insert_remote_invite_state(conn, event.row.event_nid, invite_state)
            .await
            .map_err(internal)
    }

    /// Persists a joined room's past (`accepted`, oldest first, each allowed by its auth events):
    /// the events marked as state, with `earlier_state`, become the room's state in one snapshot
    /// and its memberships in one statement, rather than one of each per event (a room of 10,000
    /// members has 10,000 member events); the events not in `history` are outliers.
    async fn import_state(
        &mut self,
        room_id: &RoomId,
        room_nid: RoomNid,
        accepted: Vec<(Pdu, bool)>,
        earlier_state: Vec<StoredEvent>,
        history: &std::collections::HashSet<OwnedEventId>,
    ) -> MasterResult<()> {
        let caches = self.svc.caches.clone();
        let keys: Vec<&str> = accepted
            .iter()
            .filter(|(_, in_state)| *in_state)
            .filter_map(|(pdu, _)| pdu.state_key.as_deref())
            .collect();
        let key_nids = caches.state_key_nids(self.tx(), &keys).await.map_err(internal)?;
        let mut entries: Vec<StateEntry> = earlier_state
            .iter()
            .filter_map(|event| {
                let state_key_nid = event.row.state_key_nid?;
                Some(StateEntry {
                    type_nid: event.row.type_nid,
                    state_key_nid,
                    event_nid: event.row.event_nid,
                })
            })
            .collect();
        // `persist_event` hands out NIDs in order: the accepted events get the next ones.
        for (index, (pdu, in_state)) in accepted.iter().enumerate() {
            let (true, Some(key)) = (*in_state, pdu.state_key.as_deref()) else { continue };
            let type_nid =
                caches.type_nid(self.tx(), pdu.kind.to_string().as_str()).await.map_err(internal)?;
            let state_key_nid =
                *key_nids.get(key).ok_or_else(|| MasterError::internal("a state key was not interned"))?;
            let event_nid = EventNid(self.next_nid + index as i64);
            entries.push(StateEntry { type_nid, state_key_nid, event_nid });
        }
        let snapshot = caches
            .write_snapshot(self.tx(), room_nid, &Snapshot::empty(), &entries)
            .await
            .map_err(internal)?;
        if let Some(head) = self.heads.get_mut(room_id) {
            head.snapshot = snapshot;
            head.push = PushState::default();
        }
        let own_server = self.svc.config.server_name.clone();
        let membership_of = |event: &StoredEvent| -> Option<(String, String, EventNid, i64)> {
            (event.pdu.kind.to_string() == "m.room.member").then_some(())?;
            let membership = event.pdu.membership();
            Some((event.pdu.state_key.clone()?, membership, event.row.event_nid, event.row.stream_pos.max(0)))
        };
        let mut memberships: Vec<(String, String, EventNid, i64)> =
            earlier_state.iter().filter_map(membership_of).collect();
        let mut outliers = Vec::new();
        for (index, (pdu, in_state)) in accepted.into_iter().enumerate() {
            let expected = EventNid(self.next_nid);
            // As state: the snapshot above already holds it.
            let stored = self.persist_imported(room_id, pdu, false).await?;
            if stored.row.event_nid != expected {
                return Err(MasterError::internal(format!("imported event {index} took an unexpected NID")));
            }
            if in_state {
                memberships.extend(membership_of(&stored));
            }
            if !history.contains(&stored.pdu.event_id) {
                outliers.push(stored.row.event_nid);
            }
        }
        let (local_joined, remote_joined): (BTreeSet<OwnedUserId>, BTreeSet<OwnedUserId>) = memberships
            .iter()
            .filter(|(_, membership, _, _)| membership == "join")
            .filter_map(|(user, _, _, _)| OwnedUserId::try_from(user.as_str()).ok())
            .partition(|user| user.server_name().as_str() == own_server);
        if let Some(head) = self.heads.get_mut(room_id) {
            head.remote_joined = Arc::new(remote_joined);
            head.local_joined = Arc::new(local_joined);
        }
        let conn = self.connection().await?;
        room_store::upsert_memberships(conn, room_nid, &memberships).await.map_err(internal)?;
        let conn = self.connection().await?;
        event_store::mark_outliers(conn, &outliers).await.map_err(internal)
    }

    /// Persists an event of a joined room's past: a state event `in_state` becomes part of the
    /// room's state, any other is kept only to be found by id (an auth event replaced since).
    async fn persist_imported(
        &mut self,
        room_id: &RoomId,
        pdu: Pdu,
        in_state: bool,
    ) -> MasterResult<StoredEvent> {
        let event = self.persist_event(room_id, pdu, None, in_state, false).await?;
        // The room's servers have their past already, an event of ours among it too.
        let nid = event.row.event_nid;
        self.tx().outbox.retain(|(_, queued, _)| *queued != nid);
        Ok(event)
    }

    async fn persist(
        &mut self,
        room_id: &RoomId,
        pdu: Pdu,
        txn: Option<(&OwnedDeviceId, &str)>,
    ) -> MasterResult<StoredEvent> {
        self.persist_event(room_id, pdu, txn, true, true).await
    }

    /// Persists an event; a state event changes the room's state (and memberships) only when
    /// `as_state`. A `live` event (not one of a joined room's past) is evaluated against the
    /// push rules of the members it may notify.
    async fn persist_event(
        &mut self,
        room_id: &RoomId,
        pdu: Pdu,
        txn: Option<(&OwnedDeviceId, &str)>,
        as_state: bool,
        live: bool,
    ) -> MasterResult<StoredEvent> {
        let mut head = match self.heads.get(room_id) {
            Some(head) => head.clone(),
            None => self.head(room_id).await?.ok_or_else(|| MasterError::not_found("Unknown room"))?,
        };
        let caches = self.svc.caches.clone();
        let position = self.next_pos;
        let event_nid = EventNid(self.next_nid);
        let type_nid = caches.type_nid(self.tx(), pdu.kind.to_string().as_str()).await.map_err(internal)?;
        let state_key_nid = match &pdu.state_key {
            Some(key) => Some(caches.state_key_nid(self.tx(), key).await.map_err(internal)?),
            None => None,
        };
        let replaces_nid =
            state_key_nid.filter(|_| as_state).and_then(|key_nid| head.snapshot.get(type_nid, key_nid));
        let depth = i64::try_from(u64::from(pdu.depth)).unwrap_or(i64::MAX);
        let event_id = pdu.event_id.to_string();
        let sender = pdu.sender.to_string();
        let mut new_snapshot = None;
        if let Some(state_key_nid) = state_key_nid.filter(|_| as_state) {
            let entry = StateEntry { type_nid, state_key_nid, event_nid };
            let snapshot = caches
                .write_snapshot(self.tx(), head.room_nid, &head.snapshot, &[entry])
                .await
                .map_err(internal)?;
            head.snapshot = snapshot.clone();
            head.push = PushState::default();
            new_snapshot = Some(snapshot);
        }
        let snapshot_nid = head.snapshot.nid.ok_or_else(|| MasterError::internal("room without state"))?;
        // The room's row is written once per batch, at commit.
        // Our events go to every other server in the room, before the event and after it (a
        // server whose last member is kicked learns of the kick).
        let own_server = self.svc.config.server_name.as_str();
        let mut destinations = if pdu.sender.server_name().as_str() == own_server {
            head.remote_servers()
        } else {
            BTreeSet::new()
        };
        if as_state
            && pdu.kind.to_string() == "m.room.member"
            && let Some(target) = &pdu.state_key
        {
            let membership = pdu.membership();
            if let Ok(target_user) = OwnedUserId::try_from(target.as_str()) {
                let remote = target_user.server_name().as_str() != own_server;
                head.set_membership(target_user, &membership, own_server);
                if remote && pdu.sender.server_name().as_str() == own_server {
                    destinations.extend(head.remote_servers());
                }
            }
            let conn = self.connection().await?;
            room_store::upsert_membership(conn, head.room_nid, target, &membership, event_nid, position)
                .await
                .map_err(internal)?;
        }
        let mut redacted = None;
        if let Some(target) = &pdu.redacts
            && let Some(target_row) =
                event_store::event_by_id(self.connection().await?, target.as_str()).await.map_err(internal)?
            && target_row.room_nid == head.room_nid
        {
            let conn = self.connection().await?;
            event_store::set_redacted_by(conn, target.as_str(), &event_id).await.map_err(internal)?;
            redacted = Some(target_row.event_nid);
        }
        let push = match live && self.svc.config.push.enabled {
            true => self.evaluate_push(room_id, &mut head, &pdu, (event_nid, position)).await?,
            false => ganglion_replication::Notified::default(),
        };
        let row = Arc::new(event_store::EventRow {
            event_nid,
            stream_pos: position,
            event_id,
            room_nid: head.room_nid,
            depth,
            type_nid,
            state_key_nid,
            sender,
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            json: pdu.json.to_string(),
            snapshot_nid,
            replaces_nid,
            redacted_by: None,
        });
        let trace = self.trace.clone();
        let unindexed = resolve::unindexed(&head, event_nid, &pdu);
        let tx = self.tx();
        tx.push_event(row.clone(), &pdu);
        tx.unindexed.extend(unindexed);
        tx.outbox.extend(destinations.into_iter().map(|destination| (destination, event_nid, trace.clone())));
        if let Some((device_id, txn_id)) = txn {
            let key = (row.sender.clone(), device_id.to_string(), txn_id.to_owned());
            tx.txns.push((key, row.event_id.clone()));
        }
        head.latest_event_id = Some(pdu.event_id.clone());
        head.latest_event_nid = Some(event_nid);
        head.extremities.retain(|id| !pdu.prev_events.contains(id));
        head.extremities.push(pdu.event_id.clone());
        // Another server's event may sit lower in the graph than our newest.
        head.max_depth = head.max_depth.max(depth);
        if ganglion_events::BUMP_EVENT_TYPES.contains(&pdu.kind.to_string().as_str()) {
            head.bump_pos = position;
        }
        self.heads.insert(room_id.to_owned(), head);
        self.next_pos += 1;
        self.next_nid += 1;
        let event = StoredEvent { row, pdu: Arc::new(pdu) };
        self.appended.push(Appended {
            event: event.clone(),
            txn: txn.map(|(device, txn_id)| (device.to_string(), txn_id.to_owned())),
            snapshot: new_snapshot,
            redacted,
            trace: self.trace.take(),
            push,
        });
        Ok(event)
    }

    /// Commits, then updates caches and heads and publishes every event, in position order.
    pub(crate) async fn commit(mut self) -> MasterResult<Vec<StoredEvent>> {
        let heads: Vec<room_store::RoomHeadRow> = self
            .heads
            .values()
            .filter_map(|head| {
                Some((
                    head.room_nid,
                    head.latest_event_nid?,
                    head.snapshot.nid?,
                    head.max_depth,
                    head.bump_pos,
                    serde_json::to_string(&head.extremities).unwrap_or_else(|_| "[]".to_owned()),
                ))
            })
            .collect();
        let conn = self.connection().await?;
        room_store::set_room_heads(conn, &heads).await.map_err(internal)?;
        self.tx().index_auth_chains().await.map_err(internal)?;
        let tx = self.tx.take().expect("transaction is open until commit");
        tx.tx.commit().await.map_err(|e| internal(ganglion_storage::StorageError::from(e)))?;
        self.committed = true;
        if let Some(metrics) = self.svc.metrics.get() {
            metrics.committed(self.appended.len() as u64, self.started.elapsed());
        }
        let caches = self.svc.caches.clone();
        for (room_id, head) in self.heads.drain() {
            self.writer.heads.insert(room_id, head);
        }
        for (key, resolved) in std::mem::take(&mut self.resolved) {
            resolve::remember(&mut self.writer.resolved, key, resolved);
        }
        let mut events = Vec::with_capacity(self.appended.len());
        let mut rows = Vec::with_capacity(self.appended.len());
        let mut redacted_events = Vec::new();
        for appended in self.appended.drain(..) {
            if let Some(snapshot) = &appended.snapshot {
                caches.remember_snapshot(snapshot);
            }
            if let Some(redacted) = appended.redacted {
                caches.forget_event(redacted);
                redacted_events.push(redacted);
            }
            caches.remember_event(appended.event.clone());
            let txn = appended.txn.as_ref().map(|(device, txn_id)| (device.as_str(), txn_id.as_str()));
            caches.remember_event_txn(appended.event.row.event_nid, txn);
            self.writer.last_event_pos = appended.event.row.stream_pos;
            self.writer.last_event_nid = appended.event.row.event_nid.0;
            rows.push(
                StreamRow::event(
                    StreamPosition(appended.event.row.stream_pos),
                    appended.event.pdu.room_id.as_str(),
                    appended.event.row.event_nid,
                    &appended.event.pdu.kind.to_string(),
                    appended.event.pdu.state_key.as_deref(),
                    Some(appended.event.row.clone()),
                )
                .with_txn(txn)
                .with_trace(appended.trace)
                .with_push(appended.push),
            );
            events.push(appended.event);
        }
        // History events take NIDs (and positions below all others) without being stream rows.
        self.writer.last_event_nid = self.writer.last_event_nid.max(self.next_nid - 1);
        self.writer.first_event_pos = self.writer.first_event_pos.min(self.history_pos);
        // Invalidations first: a reader woken by the redaction must not serve the stale copy.
        for redacted in redacted_events {
            self.svc.bus.invalidate(ganglion_replication::Invalidation::Event(redacted));
        }
        self.svc.bus.publish_all(rows);
        Ok(events)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // A rolled-back transaction may have interned names or written blocks whose ids the
        // database hands out again; forget everything cached since.
        if !self.committed && !self.appended.is_empty() {
            self.svc.caches.clear();
        }
    }
}

fn random_room_id(server_name: &str) -> MasterResult<OwnedRoomId> {
    use rand::Rng;
    let localpart: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(18).map(char::from).collect();
    RoomId::parse(format!("!{localpart}:{server_name}")).map_err(|e| MasterError::internal(e.to_string()))
}
