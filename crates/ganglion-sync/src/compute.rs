//! One sync response: everything the user may see that changed between `since` and `next`.
//!
//! Invariant: every stream is read in `since < position <= next` and `next` becomes
//! `next_batch`, so successive syncs neither lose nor repeat a row. Membership rows may already
//! be ahead of `next`; such a room's membership is read from its state at `next` instead.
//! A room without a change in the range costs no query of its own: an incremental sync reads the
//! user's memberships together with the timeline windows of the changed rooms in one query.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use ganglion_events::{ignored_users::IGNORED_USER_LIST, ruma::events::TimelineEventType};
use ganglion_state::{Caches, KeyCounts, Snapshot, StateError, StoredEvent};
use ganglion_storage::{
    Connect, LazyConn, StorageError,
    streams::{self as stream_store, AccountDataRow, ReceiptRow, UserRoomRow},
};
use ganglion_types::{ErrorClass, EventNid, HasErrorClass, RoomNid, StreamKind, StreamPosition, SyncToken};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    SyncState,
    body::{JoinedRoom, ObjectWriter, SyncEvent},
    e2ee::{self, DeviceListChanges},
    ephemeral,
    filter::Filter,
    memory::{IgnoredUsers, RoomMembers},
    presence,
    timeline::{self, Range, Selection, Timeline, Window},
    unread,
};

const MEMBER: &str = "m.room.member";
/// State a room invite carries so the invitee can show the room (stripped state).
const INVITE_STATE_TYPES: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];
const HEROES: i64 = 5;
/// Member events walked back at most to find where a membership began.
const MAX_MEMBER_WALK: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl HasErrorClass for SyncError {
    fn class(&self) -> ErrorClass {
        match self {
            SyncError::Storage(error) => error.class(),
            SyncError::State(error) => error.class(),
        }
    }
}

/// What the client asked for.
pub(crate) struct SyncRequest<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    /// `None` for an initial sync.
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub filter: &'a Filter,
}

/// A computed response, kept apart from its JSON so the long-poll can tell whether it is empty.
pub(crate) struct SyncBatch {
    pub next_batch: SyncToken,
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: Map<String, Value>,
    pub leave: Map<String, Value>,
    /// Rooms the user knocked on and is waiting to be let in, with their stripped state.
    pub knock: Map<String, Value>,
    pub account_data: Vec<Value>,
    pub to_device: Vec<Value>,
    pub device_lists: DeviceListChanges,
    pub key_counts: KeyCounts,
    pub presence: Vec<Value>,
    /// The rooms the user is joined to (and the filter allows): new rows in them may change
    /// the next response.
    pub joined_room_ids: Vec<Arc<str>>,
    /// Whether computing it queried the database (else it came from memory alone).
    pub from_database: bool,
}

impl SyncBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.invite.is_empty()
            && self.leave.is_empty()
            && self.knock.is_empty()
            && self.account_data.is_empty()
            && self.to_device.is_empty()
            && self.device_lists.is_empty()
            && self.presence.is_empty()
    }

    /// The response body, with every event written as of `now_ms`.
    pub(crate) fn into_body(self, now_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let mut body = ObjectWriter::open(&mut out);
        body.member("next_batch", &self.next_batch.to_string());
        body.object("rooms", |rooms| {
            rooms.object("join", |join| {
                for (room_id, room) in &self.join {
                    join.object(room_id, |section| room.write(section, now_ms));
                }
            });
            rooms.member("invite", &self.invite);
            rooms.member("leave", &self.leave);
            rooms.member("knock", &self.knock);
        });
        body.object("account_data", |data| data.member("events", &self.account_data));
        body.object("presence", |presence| presence.member("events", &self.presence));
        body.object("to_device", |to_device| to_device.member("events", &self.to_device));
        body.object("device_lists", |lists| {
            lists.member("changed", &self.device_lists.changed);
            lists.member("left", &self.device_lists.left);
        });
        body.member("device_one_time_keys_count", &self.key_counts.0);
        body.member("device_unused_fallback_key_types", &self.key_counts.1);
        body.close();
        out
    }
}

/// The token a response ends at: the readable positions, but never behind `since` (a token
/// from a worker further ahead is not replayed).
pub(crate) fn next_token(current: SyncToken, since: Option<&SyncToken>) -> SyncToken {
    let mut next = current;
    if let Some(since) = since {
        for kind in StreamKind::all() {
            let comparable = kind != StreamKind::Typing || since.typing_epoch == current.typing_epoch;
            if comparable && since.get(kind) > next.get(kind) {
                next.set(kind, since.get(kind));
            }
        }
    }
    next
}

/// The user's membership in a room as of `next`.
pub(crate) struct RoomMembership {
    pub room_nid: RoomNid,
    pub room_id: String,
    pub membership: String,
    pub event_nid: EventNid,
    pub stream_pos: i64,
}

/// Computes the response for `request` between its `since` and `next`.
pub(crate) async fn sync_batch(
    state: &SyncState,
    request: &SyncRequest<'_>,
    next: SyncToken,
) -> Result<SyncBatch, SyncError> {
    let mut conn = state.db.lazy();
    let mut sync = Computation::new(state, request, next);
    sync.ignored = ignored_users(state, &mut conn, request.user_id).await?;
    let (mut global_data, mut room_data) = sync.account_data(&mut conn).await?;
    // An incremental sync reads the memberships and the timeline windows of the joined rooms
    // (which also tell the changed rooms) in one round trip.
    let (rows, newest_events) = match request.since {
        Some(_) if sync.since_events < next.events.0 => {
            let per_room = sync.per_room_window();
            let (after, up_to) = (sync.since_events, next.events.0);
            let rows = user_rooms(state, &mut conn, request.user_id).await?;
            match newest_events_from_memory(state, &rows, after, up_to, per_room) {
                Some(newest_events) => (rows.as_ref().clone(), newest_events),
                None => {
                    stream_store::rooms_of_user_with_newest_events(
                        conn.connection().await?,
                        request.user_id,
                        after,
                        up_to,
                        per_room as i64,
                    )
                    .await?
                }
            }
        }
        _ => (user_rooms(state, &mut conn, request.user_id).await?.as_ref().clone(), Vec::new()),
    };
    // Most syncs see messages only: memory tells, and spares the membership queries.
    let members_moved = match &request.since {
        Some(since) => {
            let room_ids = rows.iter().map(|row| row.room_id.as_str());
            state.recent.room_membership_changed_after(room_ids, since.events.0) != Some(false)
        }
        None => true,
    };
    // Presence rows are recorded the same way.
    let presence_untouched = match &request.since {
        Some(since) => {
            !members_moved
                && state.recent.changed_after(
                    StreamKind::Presence,
                    sharing_keys(request.user_id, &rows),
                    since.presence.0,
                ) == Some(false)
        }
        None => false,
    };
    let device_lists = match &request.since {
        Some(since) => {
            let rooms: Vec<RoomNid> = rows.iter().map(|row| row.room_nid).collect();
            // A device-list row is recorded under its user and the rooms they were in; without
            // member events in the range, those are the rooms the user shares with them now.
            let devices_moved = since.device_lists < next.device_lists
                && (members_moved
                    || state.recent.changed_after(
                        StreamKind::DeviceLists,
                        sharing_keys(request.user_id, &rows),
                        since.device_lists.0,
                    ) != Some(false));
            e2ee::device_list_changes(
                &mut conn,
                request.user_id,
                &rooms,
                (members_moved, devices_moved),
                since,
                &next,
            )
            .await?
        }
        // An initial sync has no device-list changes: the client fetches every list it needs.
        None => DeviceListChanges::default(),
    };
    let (to_device, to_device_stop) = e2ee::to_device(
        state,
        &mut conn,
        (request.user_id, request.device_id),
        (request.since.map_or(0, |since| since.to_device.0), next.to_device.0),
        e2ee::TO_DEVICE_LIMIT,
    )
    .await?;
    let key_counts = e2ee::key_counts(state, &mut conn, request.user_id, request.device_id).await?;
    let mut joined = Vec::new();
    let mut invited = Vec::new();
    let mut knocked = Vec::new();
    let mut left = Vec::new();
    let mut listen = Vec::new();
    for row in rows {
        if row.forgotten || !request.filter.allows_room(&row.room_id) {
            continue;
        }
        let row_is_join = row.membership == "join";
        let Some(membership) = sync.membership_at_next(&mut conn, row).await? else { continue };
        if row_is_join || membership.membership == "join" {
            listen.push(Arc::from(membership.room_id.as_str()));
        }
        let changed_in_range = membership.stream_pos > sync.since_events;
        match membership.membership.as_str() {
            "join" => joined.push(membership),
            // After a change of the ignore list, pending invites are told again: one that was
            // hidden may now be from a user no longer ignored.
            "invite" if request.since.is_none() || changed_in_range || sync.ignore_list_changed => {
                invited.push(membership)
            }
            "knock" if request.since.is_none() || changed_in_range => knocked.push(membership),
            "leave" | "ban"
                if changed_in_range && (request.since.is_some() || request.filter.room.include_leave) =>
            {
                left.push(membership)
            }
            _ => {}
        }
    }

    let mut next_batch = next;
    if let Some(stop) = to_device_stop {
        next_batch.to_device = stop;
    }
    let mut batch = SyncBatch {
        next_batch,
        join: BTreeMap::new(),
        invite: Map::new(),
        leave: Map::new(),
        knock: Map::new(),
        account_data: Vec::new(),
        to_device,
        device_lists,
        key_counts,
        presence: Vec::new(),
        joined_room_ids: listen,
        from_database: false,
    };
    // Clients such as Element expect push rules as `m.push_rules` account data in the initial
    // sync: the server defaults until the user changes them (then they are stored).
    if request.since.is_none()
        && request.filter.account_data.allows("m.push_rules", None)
        && !global_data.iter().any(|data| data["type"] == "m.push_rules")
    {
        let user_id = ganglion_events::ruma::UserId::parse(request.user_id)
            .map_err(|e| SyncError::Storage(StorageError::Corrupt(format!("session user id: {e}"))))?;
        global_data.push(json!({
            "type": "m.push_rules",
            "content": { "global": ganglion_events::push_rules::default_ruleset(&user_id) },
        }));
    }
    batch.account_data = global_data;
    let mut newcomers = BTreeSet::new();
    sync.joined_rooms(&mut conn, joined, newest_events, &mut room_data, (&mut batch.join, &mut newcomers))
        .await?;
    batch.presence =
        presence::presence_events(state, &mut conn, request, (&next, presence_untouched), newcomers).await?;
    for room in invited {
        // Invites from ignored users are never delivered (the spec's Ignoring Users module).
        let Some(invite_state) = sync.invite_state(&mut conn, &room).await? else { continue };
        batch.invite.insert(room.room_id, json!({ "invite_state": { "events": invite_state } }));
    }
    for room in knocked {
        // The room as the knock saw it: its stripped state and the knock itself.
        let Some(knock_state) = sync.invite_state(&mut conn, &room).await? else { continue };
        batch.knock.insert(room.room_id, json!({ "knock_state": { "events": knock_state } }));
    }
    for room in left {
        let account_data = room_data.remove(&room.room_id).unwrap_or_default();
        let section = sync.left_room(&mut conn, &room, account_data).await?;
        batch.leave.insert(room.room_id, section);
    }
    batch.from_database = conn.used();
    Ok(batch)
}

/// The keys under which `RecentEvents` records device-list and presence rows that may concern
/// the user: the user and every room they are joined or invited to.
pub(crate) fn sharing_keys<'r>(user_id: &'r str, rows: &'r [UserRoomRow]) -> impl Iterator<Item = &'r str> {
    std::iter::once(user_id).chain(
        rows.iter()
            .filter(|row| row.membership == "join" || row.membership == "invite")
            .map(|row| row.room_id.as_str()),
    )
}

/// The rooms a user is joined to now (the rooms a long-poll listens to, besides the user).
pub(crate) async fn joined_room_ids(state: &SyncState, user_id: &str) -> Result<Vec<Arc<str>>, SyncError> {
    let mut conn = state.db.lazy();
    let rows = user_rooms(state, &mut conn, user_id).await?;
    Ok(rows
        .iter()
        .filter(|row| row.membership == "join")
        .map(|row| Arc::from(row.room_id.as_str()))
        .collect())
}

/// The user's rooms, from the membership cache or the database.
pub(crate) async fn user_rooms(
    state: &SyncState,
    conn: &mut LazyConn,
    user_id: &str,
) -> Result<Arc<Vec<UserRoomRow>>, SyncError> {
    if let Some(rows) = state.memory.memberships.get(&state.recent, user_id) {
        return Ok(rows);
    }
    // Read the position first: a member event published after it invalidates this entry.
    let loaded_at = state.positions.get(StreamKind::Events).0;
    let rows = Arc::new(stream_store::rooms_of_user(conn.connection().await?, user_id).await?);
    // Forgetting a left room changes no stream, so nothing would invalidate an entry holding one:
    // users with left rooms are read from the database every time.
    if rows.iter().all(|row| row.membership == "join" || row.membership == "invite") {
        state.memory.memberships.insert(user_id, loaded_at, rows.clone());
    }
    Ok(rows)
}

/// The users `user_id` ignores, from the cache or the database.
pub(crate) async fn ignored_users(
    state: &SyncState,
    conn: &mut LazyConn,
    user_id: &str,
) -> Result<IgnoredUsers, SyncError> {
    if let Some(ignored) = state.memory.ignored_users.get(&state.recent, user_id) {
        return Ok(ignored);
    }
    // Read the position first: account data published after it invalidates this entry.
    let loaded_at = state.positions.get(StreamKind::AccountData).0;
    let content =
        stream_store::account_data_content(conn.connection().await?, user_id, "", IGNORED_USER_LIST).await?;
    let ignored = Arc::new(
        content
            .map(|content| ganglion_events::ignored_users::ignored_users_of(&content, user_id))
            .unwrap_or_default(),
    );
    state.memory.ignored_users.insert(user_id, loaded_at, ignored.clone());
    Ok(ignored)
}

/// The newest events of the rooms whose timelines a sync reads (joined now, or membership
/// changed after `up_to`), from memory; `None` when memory does not reach back to `after`.
fn newest_events_from_memory(
    state: &SyncState,
    rows: &[UserRoomRow],
    after: i64,
    up_to: i64,
    per_room: usize,
) -> Option<Vec<(RoomNid, EventNid, i64)>> {
    let mut newest = Vec::new();
    for row in rows.iter().filter(|row| row.membership == "join" || row.stream_pos > up_to) {
        let events = state.recent.newest_between(&row.room_id, after, up_to, per_room)?;
        newest.extend(events.into_iter().map(|(event_nid, position)| (row.room_nid, event_nid, position)));
    }
    Some(newest)
}

/// The state of one computation.
pub(crate) struct Computation<'a> {
    caches: &'a Caches,
    state: &'a SyncState,
    request: &'a SyncRequest<'a>,
    next: SyncToken,
    /// `since`'s events position, 0 for an initial sync.
    since_events: i64,
    /// `since`'s typing position, 0 when it is from another typing epoch.
    since_typing: StreamPosition,
    timeline_limit: usize,
    /// The users the user ignores: their non-state events and invites are left out.
    pub(crate) ignored: IgnoredUsers,
    /// The ignore list changed in the range (an incremental sync): every joined room comes
    /// with a `limited` timeline, so clients drop what they hold and paginate again under the
    /// new list.
    ignore_list_changed: bool,
}

impl<'a> Computation<'a> {
    pub(crate) fn new(
        state: &'a SyncState,
        request: &'a SyncRequest<'a>,
        next: SyncToken,
    ) -> Computation<'a> {
        let since_typing = match &request.since {
            Some(since) if since.typing_epoch == next.typing_epoch => since.typing,
            _ => StreamPosition::ZERO,
        };
        Computation {
            caches: &state.caches,
            state,
            request,
            next,
            since_events: request.since.map_or(0, |since| since.events.0),
            since_typing,
            timeline_limit: request.filter.timeline_limit(),
            ignored: IgnoredUsers::default(),
            ignore_list_changed: false,
        }
    }

    fn timeline_selection(&self) -> Selection<'_> {
        Selection {
            filter: &self.request.filter.room.timeline,
            ignored: &self.ignored,
            limit: self.timeline_limit,
        }
    }

    /// Events read ahead per room: one more than the timeline holds, to tell `limited`.
    fn per_room_window(&self) -> usize {
        self.timeline_limit + 1
    }

    fn viewer(&self) -> Option<(&str, &str)> {
        Some((self.request.user_id, self.request.device_id))
    }

    /// The user's membership as of `next`: the row itself unless it moved past `next`.
    pub(crate) async fn membership_at_next(
        &self,
        conn: &mut LazyConn,
        row: UserRoomRow,
    ) -> Result<Option<RoomMembership>, SyncError> {
        if row.stream_pos <= self.next.events.0 {
            return Ok(Some(RoomMembership {
                room_nid: row.room_nid,
                room_id: row.room_id,
                membership: row.membership,
                event_nid: row.event_nid,
                stream_pos: row.stream_pos,
            }));
        }
        let Some(event) = self.member_event_at(conn, row.room_nid, self.next.events.0).await? else {
            return Ok(None);
        };
        let Some(membership) = membership_of(&event) else { return Ok(None) };
        Ok(Some(RoomMembership {
            room_nid: row.room_nid,
            room_id: row.room_id,
            membership,
            event_nid: event.row.event_nid,
            stream_pos: event.row.stream_pos,
        }))
    }

    /// The user's member event in the room's state after `position`.
    async fn member_event_at(
        &self,
        conn: &mut LazyConn,
        room_nid: RoomNid,
        position: i64,
    ) -> Result<Option<StoredEvent>, SyncError> {
        let snapshot = timeline::state_after_position(conn, self.caches, room_nid, position).await?;
        Ok(self.caches.state_event(conn, &snapshot, MEMBER, self.request.user_id).await?)
    }

    /// Whether the user was joined to the room at `since`.
    async fn joined_at_since(&self, conn: &mut LazyConn, room_nid: RoomNid) -> Result<bool, SyncError> {
        if self.request.since.is_none() {
            return Ok(false);
        }
        let event = self.member_event_at(conn, room_nid, self.since_events).await?;
        Ok(event.as_ref().and_then(membership_of).as_deref() == Some("join"))
    }

    /// Global account data events, and room account data by room id. Notes whether the ignore
    /// list changed in the range.
    async fn account_data(
        &mut self,
        conn: &mut LazyConn,
    ) -> Result<(Vec<Value>, HashMap<String, Vec<AccountDataRow>>), SyncError> {
        let after = self.request.since.map_or(0, |since| since.account_data.0);
        let up_to = self.next.account_data.0;
        let untouched =
            self.state.recent.account_data_changed_after(self.request.user_id, after) == Some(false);
        if after >= up_to || untouched {
            return Ok((Vec::new(), HashMap::new()));
        }
        let mut global = Vec::new();
        let mut by_room: HashMap<String, Vec<AccountDataRow>> = HashMap::new();
        for row in
            stream_store::account_data_between(conn.connection().await?, self.request.user_id, after, up_to)
                .await?
        {
            if row.room_id.is_empty() {
                if row.data_type == IGNORED_USER_LIST && self.request.since.is_some() {
                    self.ignore_list_changed = true;
                }
                if self.request.filter.account_data.allows(&row.data_type, None) {
                    global.push(account_data_event(&row));
                }
            } else {
                by_room.entry(row.room_id.clone()).or_default().push(row);
            }
        }
        Ok((global, by_room))
    }

    /// Room account data events of one room that the filter allows.
    fn room_account_data(&self, room_id: &str, rows: Vec<AccountDataRow>) -> Vec<Value> {
        let filter = &self.request.filter.room.account_data;
        if !filter.allows_room(room_id) {
            return Vec::new();
        }
        rows.iter().filter(|row| filter.allows_type(&row.data_type)).map(account_data_event).collect()
    }

    /// Receipts of the joined rooms that moved in the range, by room id.
    async fn receipts(
        &self,
        conn: &mut LazyConn,
        room_ids: &[String],
    ) -> Result<HashMap<String, Vec<ReceiptRow>>, SyncError> {
        let after = self.request.since.map_or(0, |since| since.receipts.0);
        let up_to = self.next.receipts.0;
        let untouched =
            self.state.recent.changed_after(StreamKind::Receipts, room_ids.iter().map(String::as_str), after)
                == Some(false);
        if after >= up_to || room_ids.is_empty() || untouched {
            return Ok(HashMap::new());
        }
        if let Some(receipts) = self.state.recent.receipts_between(room_ids, after, up_to) {
            return Ok(ephemeral::receipts_by_room(receipts));
        }
        Ok(ephemeral::receipts_by_room(
            stream_store::receipts_between(conn.connection().await?, room_ids, after, up_to).await?,
        ))
    }

    /// The `join` section: every joined room with something new (every joined room for an
    /// initial or `full_state` sync).
    async fn joined_rooms(
        &self,
        conn: &mut LazyConn,
        rooms: Vec<RoomMembership>,
        newest_events: Vec<(RoomNid, EventNid, i64)>,
        room_data: &mut HashMap<String, Vec<AccountDataRow>>,
        (out, newcomers): (&mut BTreeMap<String, JoinedRoom>, &mut BTreeSet<String>),
    ) -> Result<(), SyncError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let range = Range { after: self.since_events, up_to: self.next.events.0 };
        let per_room = self.per_room_window();
        let mut windows: HashMap<RoomNid, Vec<(EventNid, i64)>> = HashMap::new();
        for (room_nid, event_nid, position) in newest_events {
            windows.entry(room_nid).or_default().push((event_nid, position));
        }
        let room_ids: Vec<String> = rooms.iter().map(|room| room.room_id.clone()).collect();
        let mut receipts = self.receipts(conn, &room_ids).await?;
        let mut sent = Vec::new();
        // The limited timelines' events, whose aggregations are looked up together below.
        let mut limited: Vec<(String, Vec<StoredEvent>)> = Vec::new();

        for room in rooms {
            let typing_changed =
                self.state.typing.changed_between(&room.room_id, self.since_typing, self.next.typing);
            let receipts = receipts.remove(&room.room_id).unwrap_or_default();
            let account_data = room_data.remove(&room.room_id).unwrap_or_default();
            let newly_joined =
                room.stream_pos > self.since_events && !self.joined_at_since(conn, room.room_nid).await?;
            let full = self.request.since.is_none() || self.request.full_state || newly_joined;
            let mut range = range;
            if full && let Some(first_visible) = self.first_visible_position(conn, room.event_nid).await? {
                range.after = range.after.max(first_visible - 1);
            }
            let window = match self.request.since {
                Some(_) => {
                    let mut newest_first = windows.remove(&room.room_nid).unwrap_or_default();
                    // Dropping the oldest events keeps the window a suffix of the range.
                    newest_first.retain(|(_, position)| *position > range.after);
                    Window { newest_first, requested: per_room }
                }
                None => Window::read(conn, room.room_nid, range, per_room).await?,
            };
            let relimit = self.ignore_list_changed && !full;
            if !full
                && !relimit
                && window.newest_first.is_empty()
                && !typing_changed
                && receipts.is_empty()
                && account_data.is_empty()
            {
                continue;
            }

            let mut timeline = Timeline::select(
                conn,
                self.caches,
                (room.room_nid, &room.room_id),
                range,
                window,
                &self.timeline_selection(),
            )
            .await?;
            if relimit {
                // What the client holds was chosen under the old list: a gap tells it to drop
                // that and paginate back (the state section covers the range).
                timeline.limited = true;
                timeline.gap = true;
            }
            let state = self.room_state(conn, &room, &timeline, range, full).await?;

            let mut ephemeral = Vec::new();
            let ephemeral_filter = &self.request.filter.room.ephemeral;
            if ephemeral_filter.allows_room(&room.room_id) {
                if ephemeral_filter.allows_type("m.typing") && (typing_changed || full) {
                    let mut typing = self.state.typing.typing_in_room(&room.room_id);
                    typing.retain(|user_id| !self.ignored.contains(user_id));
                    if typing_changed || !typing.is_empty() {
                        ephemeral.push(ephemeral::typing_event(typing));
                    }
                }
                if ephemeral_filter.allows_type("m.receipt") {
                    let mut receipts = receipts;
                    receipts.retain(|receipt| !self.ignored.contains(&receipt.user_id));
                    ephemeral.extend(ephemeral::receipt_event(&receipts, self.request.user_id));
                }
            }
            let account_data = self.room_account_data(&room.room_id, account_data);

            if !full
                && !relimit
                && timeline.events.is_empty()
                && state.is_empty()
                && ephemeral.is_empty()
                && account_data.is_empty()
            {
                // Only rows this user may not see (or filtered out) changed.
                continue;
            }
            let mut members_changed = false;
            for event in timeline.events.iter().chain(state.iter()) {
                if event.pdu.kind != TimelineEventType::RoomMember {
                    continue;
                }
                members_changed = true;
                // A join in the range, or any member of a room new to the user: not a member
                // event lazy loading repeats for a timeline's sender.
                if (full || event.row.stream_pos > self.since_events)
                    && let Some(member) = event.pdu.state_key.as_deref()
                    && member != self.request.user_id
                    && membership_of(event).as_deref() == Some("join")
                {
                    newcomers.insert(member.to_owned());
                }
            }
            let summary = match full || members_changed {
                true => Some(self.summary(conn, &room).await?.into_json()),
                false => None,
            };
            let timeline_events = self.sync_events(conn, &timeline.events, self.viewer()).await?;
            if timeline.limited {
                limited.push((room.room_id.clone(), timeline.events.clone()));
            }
            let section = JoinedRoom {
                timeline: timeline_events,
                limited: timeline.limited,
                prev_batch: timeline.prev_batch(range),
                state: self.sync_events(conn, &state, None).await?,
                ephemeral,
                account_data,
                summary,
                unread: Default::default(),
                per_thread: self.request.filter.room.timeline.unread_thread_notifications,
            };
            sent.push((room.room_nid, room.room_id.clone()));
            out.insert(room.room_id, section);
        }
        // One look-up for every limited timeline of the response, not one per room.
        if !limited.is_empty() {
            let events: Vec<StoredEvent> =
                limited.iter().flat_map(|(_, events)| events.iter().cloned()).collect();
            let viewer = ganglion_state::AggregationViewer {
                user_id: self.request.user_id,
                ignored: &self.ignored,
                up_to: range.up_to,
            };
            let mut bundles = self.caches.aggregations_by_id(conn, &events, &viewer).await?;
            for (room_id, events) in &limited {
                let Some(section) = out.get_mut(room_id) else { continue };
                for (event, written) in events.iter().zip(section.timeline.iter_mut()) {
                    if let Some(bundle) = bundles.remove(&event.row.event_id) {
                        written.relations = Some(Value::Object(bundle).to_string());
                    }
                }
            }
        }
        // Every room that goes out shows its counts as of `next`.
        let rooms: Vec<(RoomNid, &str)> =
            sent.iter().map(|(nid, room_id)| (*nid, room_id.as_str())).collect();
        let mut unread =
            unread::unread_counts(self.state, conn, self.request.user_id, &rooms, &self.next).await?;
        for (room_id, counts) in unread.drain() {
            if let Some(section) = out.get_mut(&room_id) {
                section.unread = counts;
            }
        }
        Ok(())
    }

    /// Events in their shared serialised form, with the viewer's transaction ids.
    pub(crate) async fn sync_events(
        &self,
        conn: &mut LazyConn,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<SyncEvent>, SyncError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut txn_ids = self.caches.transaction_ids(conn, events, viewer).await?;
        let shared = self.caches.shared_client_events(conn, events).await?;
        Ok(events
            .iter()
            .zip(shared)
            .map(|(event, shared)| SyncEvent {
                shared,
                txn_id: txn_ids.remove(&event.row.event_id),
                relations: None,
            })
            .collect())
    }

    /// Adds their bundled aggregations to the events of a limited timeline (the spec bundles
    /// them there: a client that missed the children cannot sum them up itself), counting the
    /// children up to `up_to`.
    pub(crate) async fn bundle_aggregations(
        &self,
        conn: &mut LazyConn,
        events: &[StoredEvent],
        written: &mut [SyncEvent],
        up_to: i64,
    ) -> Result<(), SyncError> {
        let viewer = ganglion_state::AggregationViewer {
            user_id: self.request.user_id,
            ignored: &self.ignored,
            up_to,
        };
        let mut bundles = self.caches.aggregations_by_id(conn, events, &viewer).await?;
        if bundles.is_empty() {
            return Ok(());
        }
        for (event, out) in events.iter().zip(written.iter_mut()) {
            if let Some(bundle) = bundles.remove(&event.row.event_id) {
                out.relations = Some(Value::Object(bundle).to_string());
            }
        }
        Ok(())
    }

    /// A `leave` section: the timeline up to and including the user's leave (or ban), nothing
    /// after it.
    async fn left_room(
        &self,
        conn: &mut LazyConn,
        room: &RoomMembership,
        account_data: Vec<AccountDataRow>,
    ) -> Result<Value, SyncError> {
        let account_data = self.room_account_data(&room.room_id, account_data);
        let range = Range { after: self.since_events, up_to: room.stream_pos };
        let Some(leave) = self.caches.event(conn, room.event_nid).await? else {
            return Err(StorageError::Corrupt(format!("missing member event {}", room.event_nid)).into());
        };
        let previous = match leave.row.replaces_nid {
            Some(nid) => self.caches.event(conn, nid).await?.as_ref().and_then(membership_of),
            None => None,
        };
        let joined_at_since = self.joined_at_since(conn, room.room_nid).await?;
        if previous.as_deref() != Some("join") && !joined_at_since {
            // Never joined in the range (a rejected invite, a ban after leaving): the member
            // event is all the user may see.
            let timeline =
                Timeline { events: vec![leave], limited: false, gap: false, newest_in_range: None };
            return Ok(json!({
                "timeline": self.timeline_json(conn, &timeline, range).await?,
                "state": { "events": [] },
                "account_data": { "events": account_data },
            }));
        }
        let full = !joined_at_since;
        let mut range = range;
        if let (Some("join"), Some(join)) = (previous.as_deref(), leave.row.replaces_nid)
            && let Some(first_visible) = self.first_visible_position(conn, join).await?
        {
            range.after = range.after.max(first_visible - 1);
        }
        let window = Window::read(conn, room.room_nid, range, self.timeline_limit + 1).await?;
        let timeline = Timeline::select(
            conn,
            self.caches,
            (room.room_nid, &room.room_id),
            range,
            window,
            &self.timeline_selection(),
        )
        .await?;
        let state = self.room_state(conn, room, &timeline, range, full).await?;
        Ok(json!({
            "timeline": self.timeline_json(conn, &timeline, range).await?,
            "state": { "events": self.client_events(conn, &state, None).await? },
            "account_data": { "events": account_data },
        }))
    }

    /// The `state` section: the whole state at the timeline's start when `full`, else the state
    /// that changed between `since` and the timeline's start. With lazy-loaded members, member
    /// events only for the timeline's senders (and, on a full state, the user), plus the member
    /// changes hidden in a gap.
    async fn room_state(
        &self,
        conn: &mut LazyConn,
        room: &RoomMembership,
        timeline: &Timeline,
        range: Range,
        full: bool,
    ) -> Result<Vec<StoredEvent>, SyncError> {
        let filter = &self.request.filter.room.state;
        if !filter.allows_room(&room.room_id) {
            return Ok(Vec::new());
        }
        let lazy = filter.lazy_load_members;
        let senders_needed = lazy && !timeline.events.is_empty();
        if !full && !timeline.gap && !senders_needed {
            return Ok(Vec::new());
        }
        let start = timeline.state_at_start(conn, self.caches, room.room_nid, range).await?;
        let member_type = self.caches.existing_type_nid(conn, MEMBER).await?;
        let mut chosen: Vec<EventNid> = Vec::new();
        if full {
            chosen.extend(
                start
                    .entries()
                    .filter(|entry| !lazy || Some(entry.type_nid) != member_type)
                    .map(|entry| entry.event_nid),
            );
        } else if timeline.gap {
            let at_since =
                timeline::state_after_position(conn, self.caches, room.room_nid, range.after).await?;
            chosen.extend(changed_entries(&at_since, &start));
        }
        if lazy {
            let mut members: Vec<&str> =
                timeline.events.iter().map(|event| event.pdu.sender.as_str()).collect();
            let mut heroes = Vec::new();
            if full {
                // The user's own member event lets the client show the user's name and avatar.
                members.push(self.request.user_id);
                // A room without a name or alias is named after its heroes, so the client needs
                // their member events too (the spec asks for them).
                if !self.has_name_or_alias(conn, &start).await? {
                    heroes = self.summary(conn, room).await?.heroes;
                }
            }
            members.extend(heroes.iter().map(String::as_str));
            members.sort_unstable();
            members.dedup();
            if let Some(member_type) = member_type {
                for user_id in members {
                    if let Some(key) = self.caches.existing_state_key_nid(conn, user_id).await? {
                        chosen.extend(start.get(member_type, key));
                    }
                }
            }
        }
        if filter.types.is_some() || !filter.not_types.is_empty() {
            chosen = self.nids_of_allowed_types(conn, &start, chosen, filter).await?;
        }
        let in_timeline: HashSet<EventNid> =
            timeline.events.iter().map(|event| event.row.event_nid).collect();
        let mut seen = HashSet::with_capacity(chosen.len());
        chosen.retain(|nid| !in_timeline.contains(nid) && seen.insert(*nid));
        let mut events: Vec<StoredEvent> = self
            .caches
            .events(conn, &chosen)
            .await?
            .into_iter()
            .filter(|event| timeline::event_passes(filter, event))
            .collect();
        events.sort_by_key(|event| event.row.stream_pos);
        Ok(events)
    }

    /// Whether the room's state has an `m.room.name` or `m.room.canonical_alias` event.
    async fn has_name_or_alias(&self, conn: &mut LazyConn, snapshot: &Snapshot) -> Result<bool, SyncError> {
        for kind in ["m.room.name", "m.room.canonical_alias"] {
            if self.caches.state_event(conn, snapshot, kind, "").await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Keeps the state entries whose type the filter allows, judged by the interned type names
    /// before any event is loaded.
    async fn nids_of_allowed_types(
        &self,
        conn: &mut LazyConn,
        snapshot: &Snapshot,
        chosen: Vec<EventNid>,
        filter: &crate::filter::RoomEventFilter,
    ) -> Result<Vec<EventNid>, SyncError> {
        let chosen_set: HashSet<EventNid> = chosen.iter().copied().collect();
        let mut type_nids: Vec<_> = snapshot.entries().map(|entry| entry.type_nid).collect();
        type_nids.sort_unstable();
        type_nids.dedup();
        let names = self.caches.type_names(conn, &type_nids).await?;
        let allowed: HashSet<EventNid> = snapshot
            .entries()
            .filter(|entry| chosen_set.contains(&entry.event_nid))
            .filter(|entry| names.get(&entry.type_nid).is_some_and(|name| filter.allows_type(name)))
            .map(|entry| entry.event_nid)
            .collect();
        Ok(chosen.into_iter().filter(|nid| allowed.contains(nid)).collect())
    }

    /// The `invite_state` of an invited room: stripped state at the invite; `None` when the
    /// inviter is ignored.
    pub(crate) async fn invite_state(
        &self,
        conn: &mut LazyConn,
        room: &RoomMembership,
    ) -> Result<Option<Vec<Value>>, SyncError> {
        let Some(invite) = self.caches.event(conn, room.event_nid).await? else {
            return Err(StorageError::Corrupt(format!("missing member event {}", room.event_nid)).into());
        };
        if self.ignored.contains(invite.pdu.sender.as_str()) {
            return Ok(None);
        }
        // Another server's room that this server is not in: the state its invite came with.
        let remote =
            ganglion_storage::federation::remote_invite_state(conn.connection().await?, room.event_nid)
                .await?;
        if let Some(remote) = remote {
            let mut stripped: Vec<Value> = serde_json::from_str(&remote).unwrap_or_default();
            stripped.push(json!({
                "type": "m.room.member",
                "state_key": invite.pdu.state_key.as_deref().unwrap_or(""),
                "content": invite.pdu.content_value(),
                "sender": invite.pdu.sender.as_str(),
            }));
            return Ok(Some(stripped));
        }
        let snapshot = self.caches.snapshot(conn, invite.row.snapshot_nid).await?;
        let mut events = Vec::with_capacity(INVITE_STATE_TYPES.len() + 2);
        for kind in INVITE_STATE_TYPES {
            if let Some(event) = self.caches.state_event(conn, &snapshot, kind, "").await? {
                events.push(event);
            }
        }
        if invite.pdu.sender.as_str() != self.request.user_id
            && let Some(inviter) =
                self.caches.state_event(conn, &snapshot, MEMBER, invite.pdu.sender.as_str()).await?
        {
            events.push(inviter);
        }
        events.push(invite);
        let mut stripped = Vec::with_capacity(events.len());
        for event in &events {
            stripped.push(json!({
                "type": event.pdu.kind.to_string(),
                "state_key": event.pdu.state_key.as_deref().unwrap_or(""),
                "content": self.caches.visible_content(conn, event).await?,
                "sender": event.pdu.sender.as_str(),
            }));
        }
        Ok(Some(stripped))
    }

    /// The room summary, from the current memberships (kept in memory per room until a member
    /// event of the room comes along).
    pub(crate) async fn summary(
        &self,
        conn: &mut LazyConn,
        room: &RoomMembership,
    ) -> Result<Summary, SyncError> {
        let members = match self.state.memory.room_members.get(&self.state.recent, &room.room_id) {
            Some(members) => members,
            None => {
                // Read the position first: a member event published after it invalidates this.
                let loaded_at = self.state.positions.get(StreamKind::Events).0;
                let (joined, invited) =
                    stream_store::member_counts_of_room(conn.connection().await?, room.room_nid).await?;
                // Enough members to leave `HEROES` once the viewer is taken out.
                let active = stream_store::heroes_of_room(
                    conn.connection().await?,
                    room.room_nid,
                    "",
                    &["join", "invite"],
                    HEROES + 1,
                )
                .await?;
                let departed = stream_store::heroes_of_room(
                    conn.connection().await?,
                    room.room_nid,
                    "",
                    &["leave", "ban"],
                    HEROES + 1,
                )
                .await?;
                let members = Arc::new(RoomMembers { joined, invited, active, departed });
                self.state.memory.room_members.insert(&room.room_id, loaded_at, members.clone());
                members
            }
        };
        let user_id = self.request.user_id;
        let heroes_among = |users: &[String]| -> Vec<String> {
            users.iter().filter(|user| *user != user_id).take(HEROES as usize).cloned().collect()
        };
        let mut heroes = heroes_among(&members.active);
        if heroes.is_empty() {
            heroes = heroes_among(&members.departed);
        }
        Ok(Summary { joined: members.joined, invited: members.invited, heroes })
    }

    /// The first position of a room's timeline the user may see through the membership that
    /// `member_nid` (a join) belongs to, when the room's history visibility hides what came
    /// before (`joined`, `invited`); `None` when the whole history is visible.
    pub(crate) async fn first_visible_position(
        &self,
        conn: &mut LazyConn,
        member_nid: EventNid,
    ) -> Result<Option<i64>, SyncError> {
        let Some(mut join) = self.caches.event(conn, member_nid).await? else { return Ok(None) };
        if membership_of(&join).as_deref() != Some("join") {
            return Ok(None);
        }
        // Profile changes are joins too: walk back to the join that started the membership.
        let mut invite = None;
        for _ in 0..MAX_MEMBER_WALK {
            let Some(previous_nid) = join.row.replaces_nid else { break };
            let Some(previous) = self.caches.event(conn, previous_nid).await? else { break };
            match membership_of(&previous).as_deref() {
                Some("join") => join = previous,
                Some("invite") => {
                    invite = Some(previous);
                    break;
                }
                _ => break,
            }
        }
        let snapshot = self.caches.snapshot(conn, join.row.snapshot_nid).await?;
        let visibility = self.caches.state_event(conn, &snapshot, "m.room.history_visibility", "").await?;
        let visibility = visibility.as_ref().and_then(history_visibility_of);
        Ok(match visibility.as_deref() {
            Some("joined") => Some(join.row.stream_pos),
            Some("invited") => Some(invite.as_ref().unwrap_or(&join).row.stream_pos),
            _ => None,
        })
    }

    async fn timeline_json(
        &self,
        conn: &mut LazyConn,
        timeline: &Timeline,
        range: Range,
    ) -> Result<Value, SyncError> {
        Ok(json!({
            "events": self.client_events(conn, &timeline.events, self.viewer()).await?,
            "limited": timeline.limited,
            "prev_batch": timeline.prev_batch(range),
        }))
    }

    /// Client-format events without `room_id` (the section names the room).
    async fn client_events(
        &self,
        conn: &mut LazyConn,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<Value>, SyncError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut formatted = self.caches.client_events(conn, events, viewer).await?;
        for event in &mut formatted {
            if let Some(object) = event.as_object_mut() {
                object.remove("room_id");
            }
        }
        Ok(formatted)
    }
}

/// The entries of `after` that differ from `before`.
pub(crate) fn changed_entries<'s>(
    before: &'s Snapshot,
    after: &'s Snapshot,
) -> impl Iterator<Item = EventNid> + 's {
    let same = before.nid.is_some() && before.nid == after.nid;
    after
        .entries()
        .filter(move |entry| {
            !same && before.get(entry.type_nid, entry.state_key_nid) != Some(entry.event_nid)
        })
        .map(|entry| entry.event_nid)
}

pub(crate) fn account_data_event(row: &AccountDataRow) -> Value {
    let content: Value = serde_json::from_str(&row.content).unwrap_or_else(|_| json!({}));
    json!({ "type": row.data_type, "content": content })
}

/// `m.joined_member_count`, `m.invited_member_count` and `m.heroes`.
pub(crate) struct Summary {
    pub joined: i64,
    pub invited: i64,
    pub heroes: Vec<String>,
}

impl Summary {
    fn into_json(self) -> Value {
        json!({
            "m.joined_member_count": self.joined,
            "m.invited_member_count": self.invited,
            "m.heroes": self.heroes,
        })
    }
}

/// The `history_visibility` of an `m.room.history_visibility` event's content.
fn history_visibility_of(event: &StoredEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct VisibilityContent {
        history_visibility: String,
    }
    serde_json::from_str::<VisibilityContent>(event.pdu.content.get())
        .ok()
        .map(|content| content.history_visibility)
}

/// The `membership` of a member event's content.
pub(crate) fn membership_of(event: &StoredEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct MemberContent {
        membership: String,
    }
    serde_json::from_str::<MemberContent>(event.pdu.content.get()).ok().map(|content| content.membership)
}
