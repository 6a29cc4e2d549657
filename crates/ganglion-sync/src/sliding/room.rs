//! One room of a sliding sync response: sent whole the first time a connection sees it (or
//! when the user's membership changed), afterwards only what changed since the connection's
//! client last had it: new timeline events, state that changed and that the room's
//! `required_state` asks for, `$LAZY` members not sent before.

use std::{collections::HashSet, sync::Arc};

use ganglion_state::{Snapshot, StoredEvent};
use ganglion_storage::LazyConn;
use ganglion_types::{EventNid, SyncToken, TypeNid};
use serde_json::{Value, json};

use super::{
    connections::{MAX_LAZY_MEMBERS, RoomSent},
    list::Candidate,
    request::RoomConfig,
};
use crate::{
    SyncState,
    body::{ObjectWriter, SyncEvent},
    compute::{self, Computation, SyncError},
    filter::RoomEventFilter,
    timeline::{self, Range, Selection, Timeline, Window},
};

const MEMBER: &str = "m.room.member";
const LAZY: &str = "$LAZY";
const ME: &str = "$ME";
const WILDCARD: &str = "*";
/// State whose change alters how a room is shown (its name, avatar, heroes and counts).
const DISPLAY_TYPES: [&str; 3] = ["m.room.name", "m.room.avatar", MEMBER];

/// A room as it goes out.
pub(crate) struct RoomOut {
    pub room_id: String,
    pub initial: bool,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub heroes: Option<Vec<Value>>,
    pub is_dm: bool,
    pub invite_state: Option<Vec<Value>>,
    pub timeline: Vec<SyncEvent>,
    pub required_state: Vec<SyncEvent>,
    pub prev_batch: Option<String>,
    pub limited: bool,
    pub num_live: usize,
    pub bump_stamp: i64,
    pub counts: Option<(i64, i64)>,
    /// `(notification_count, highlight_count)`, when they go out.
    pub unread: Option<crate::unread::Counts>,
    /// The events of the timeline, for the receipts extension.
    pub timeline_event_ids: Vec<String>,
}

impl RoomOut {
    /// A room with nothing to say yet; each use fills in what it has.
    fn bare(room_id: String, is_dm: bool, bump_stamp: i64) -> RoomOut {
        RoomOut {
            room_id,
            initial: false,
            name: None,
            avatar: None,
            heroes: None,
            is_dm,
            invite_state: None,
            timeline: Vec::new(),
            required_state: Vec::new(),
            prev_batch: None,
            limited: false,
            num_live: 0,
            bump_stamp,
            counts: None,
            unread: None,
            timeline_event_ids: Vec::new(),
        }
    }

    /// A room the client has whole, but whose unread counts moved (a receipt read it).
    pub(crate) fn counts_only(
        room_id: String,
        is_dm: bool,
        bump_stamp: i64,
        unread: crate::unread::Counts,
    ) -> RoomOut {
        RoomOut { unread: Some(unread), ..RoomOut::bare(room_id, is_dm, bump_stamp) }
    }

    pub(crate) fn write(&self, object: &mut ObjectWriter<'_>, now_ms: u64) {
        if self.initial {
            object.member("initial", &true);
        }
        if let Some(name) = &self.name {
            object.member("name", name);
        }
        if let Some(avatar) = &self.avatar {
            object.member("avatar", avatar);
        }
        if let Some(heroes) = &self.heroes {
            object.member("heroes", heroes);
        }
        if self.is_dm {
            object.member("is_dm", &true);
        }
        if let Some(invite_state) = &self.invite_state {
            object.member("invite_state", invite_state);
        }
        object.events("timeline", &self.timeline, now_ms);
        object.events("required_state", &self.required_state, now_ms);
        if let Some(prev_batch) = &self.prev_batch {
            object.member("prev_batch", prev_batch);
        }
        object.member("limited", &self.limited);
        object.member("num_live", &self.num_live);
        object.member("bump_stamp", &self.bump_stamp);
        if let Some((joined, invited)) = self.counts {
            object.member("joined_count", &joined);
            object.member("invited_count", &invited);
        }
        if let Some((notifications, highlights)) = self.unread {
            object.member("notification_count", &notifications);
            object.member("highlight_count", &highlights);
        }
    }
}

/// What computing one room needs.
pub(crate) struct RoomContext<'a> {
    pub state: &'a SyncState,
    pub sync: &'a Computation<'a>,
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub next: SyncToken,
    /// The events position of the connection's previous response: newer events are live.
    pub live_after: Option<i64>,
    /// `next`, shared by every room this response covers.
    pub covered_at: Arc<SyncToken>,
    /// Event types found never interned during this response: no state it reads can hold them,
    /// so other rooms need not ask the database again (`m.room.tombstone` on a server that has
    /// none, asked for by every room of Element X's list).
    pub unknown_types: parking_lot::Mutex<HashSet<String>>,
}

/// The room's part of the response (`None` when its client already has everything) and what the
/// client holds of it afterwards.
pub(crate) async fn room(
    cx: &RoomContext<'_>,
    conn: &mut LazyConn,
    candidate: &Candidate,
    config: &Arc<RoomConfig>,
    sent: Option<&RoomSent>,
    is_dm: bool,
) -> Result<(Option<RoomOut>, RoomSent), SyncError> {
    let room = &candidate.room;
    let required = &config.required_state;
    let initial = sent.is_none_or(|sent| *sent.membership != *room.membership);
    let state_config_changed = sent
        .is_some_and(|sent| !Arc::ptr_eq(&sent.config, config) && sent.config.required_state != *required);
    let mut now_sent = RoomSent {
        up_to: cx.next.events.0,
        membership: Arc::from(room.membership.as_str()),
        config: config.clone(),
        lazy_members: match (initial, sent) {
            (false, Some(sent)) => sent.lazy_members.clone(),
            _ => Arc::default(),
        },
        covered_at: cx.covered_at.clone(),
        unread: sent.map_or((0, 0), |sent| sent.unread),
    };
    let mut out = RoomOut { initial, ..RoomOut::bare(room.room_id.clone(), is_dm, candidate.bump_stamp) };
    match room.membership.as_str() {
        "join" => {}
        "invite" | "knock" => {
            if !initial {
                return Ok((None, now_sent));
            }
            out.invite_state = cx.sync.invite_state(conn, room).await?;
            return Ok((Some(out), now_sent));
        }
        _ => {
            // Left or banned: the member event that says so is all the room shows now.
            if !initial {
                return Ok((None, now_sent));
            }
            let leave = cx.state.caches.events(conn, &[room.event_nid]).await?;
            out.timeline = cx.sync.sync_events(conn, &leave, Some((cx.user_id, cx.device_id))).await?;
            out.timeline_event_ids = leave.iter().map(|event| event.row.event_id.clone()).collect();
            now_sent.up_to = room.stream_pos;
            return Ok((Some(out), now_sent));
        }
    }

    let limit = config.timeline_limit();
    let mut range =
        Range { after: if initial { 0 } else { sent.map_or(0, |sent| sent.up_to) }, up_to: cx.next.events.0 };
    if initial && let Some(first_visible) = cx.sync.first_visible_position(conn, room.event_nid).await? {
        range.after = range.after.max(first_visible - 1);
    }
    let window =
        match (initial, cx.state.recent.newest_between(&room.room_id, range.after, range.up_to, limit + 1)) {
            (false, Some(newest_first)) => Window { newest_first, requested: limit + 1 },
            _ => Window::read(conn, room.room_nid, range, limit + 1).await?,
        };
    if !initial && !state_config_changed && window.newest_first.is_empty() {
        return Ok((None, now_sent));
    }
    let filter = RoomEventFilter::default();
    let selection = Selection { filter: &filter, ignored: &cx.sync.ignored, limit };
    let timeline =
        Timeline::select(conn, &cx.state.caches, (room.room_nid, &room.room_id), range, window, &selection)
            .await?;
    // The newest event of the range carries the state after it: no need to look it up.
    let newest = match timeline.newest_in_range {
        Some(nid) => cx.state.caches.event(conn, nid).await?,
        None => None,
    };
    let current = match newest {
        Some(newest) => cx.state.caches.snapshot(conn, newest.row.snapshot_nid).await?,
        None => timeline::state_after_position(conn, &cx.state.caches, room.room_nid, range.up_to).await?,
    };

    // Required state: all of it that matches when the room is new to the client or the
    // config changed, else what changed in the range.
    let mut state_events: Vec<StoredEvent> = if initial || state_config_changed {
        matching_state(cx, conn, &current, required).await?
    } else if timeline.gap || timeline.events.iter().any(|event| event.pdu.is_state()) {
        let before =
            timeline::state_after_position(conn, &cx.state.caches, room.room_nid, range.after).await?;
        let changed: Vec<EventNid> = compute::changed_entries(&before, &current).collect();
        let mut events = cx.state.caches.events(conn, &changed).await?;
        events.retain(|event| matches(required, event, cx.user_id));
        events
    } else {
        Vec::new()
    };
    // Lazy-loaded members below change nothing: they are state the client did not have.
    let display_changed = initial
        || timeline.events.iter().chain(&state_events).any(|event| {
            event.pdu.is_state() && DISPLAY_TYPES.contains(&event.pdu.kind.to_string().as_str())
        });
    if required.iter().any(|(kind, key)| kind == MEMBER && key == LAZY) {
        let mut lazy = now_sent.lazy_members.as_ref().clone();
        if lazy.len() > MAX_LAZY_MEMBERS {
            lazy.clear();
        }
        let senders: Vec<String> = timeline.events.iter().map(|event| event.pdu.sender.to_string()).collect();
        for sender in senders {
            if lazy.contains(&sender) {
                continue;
            }
            if let Some(member) = state_event(cx, conn, &current, MEMBER, &sender).await? {
                state_events.push(member);
            }
            lazy.insert(sender);
        }
        now_sent.lazy_members = Arc::new(lazy);
    }
    let mut seen = HashSet::new();
    state_events.retain(|event| seen.insert(event.row.event_nid));
    state_events.sort_by_key(|event| event.row.stream_pos);

    if display_changed {
        let name = content_string(cx, conn, &current, "m.room.name", "name").await?;
        out.avatar = content_string(cx, conn, &current, "m.room.avatar", "url").await?;
        let summary = cx.sync.summary(conn, room).await?;
        if name.is_none() {
            let mut heroes = Vec::with_capacity(summary.heroes.len());
            for hero in &summary.heroes {
                heroes.push(hero_of(cx, conn, &current, hero).await?);
            }
            out.heroes = Some(heroes);
        }
        out.name = name;
        out.counts = Some((summary.joined, summary.invited));
    }
    out.num_live = match cx.live_after {
        Some(live_after) => timeline.events.iter().filter(|event| event.row.stream_pos > live_after).count(),
        None => 0,
    };
    out.limited = timeline.limited;
    out.prev_batch = Some(timeline.prev_batch(range));
    out.timeline_event_ids = timeline.events.iter().map(|event| event.row.event_id.clone()).collect();
    out.timeline = cx.sync.sync_events(conn, &timeline.events, Some((cx.user_id, cx.device_id))).await?;
    if timeline.limited {
        cx.sync.bundle_aggregations(conn, &timeline.events, &mut out.timeline, range.up_to).await?;
    }
    out.required_state = cx.sync.sync_events(conn, &state_events, None).await?;
    Ok((Some(out), now_sent))
}

/// Whether a state event is one `required` asks for.
fn matches(required: &[(String, String)], event: &StoredEvent, user_id: &str) -> bool {
    let Some(key) = event.pdu.state_key.as_deref() else { return false };
    let kind = event.pdu.kind.to_string();
    required.iter().any(|(wanted_kind, wanted_key)| {
        (wanted_kind == WILDCARD || *wanted_kind == kind)
            && (wanted_key == WILDCARD || wanted_key == key || (wanted_key == ME && key == user_id))
    })
}

/// The state events of `snapshot` that `required` asks for (`$LAZY` members aside).
async fn matching_state(
    cx: &RoomContext<'_>,
    conn: &mut LazyConn,
    snapshot: &Snapshot,
    required: &[(String, String)],
) -> Result<Vec<StoredEvent>, SyncError> {
    let caches = &cx.state.caches;
    let mut events = Vec::new();
    for (kind, key) in required {
        match (kind.as_str(), key.as_str()) {
            (_, LAZY) => {}
            (WILDCARD, _) => {
                let mut all = caches.state_events(conn, snapshot, None).await?;
                all.retain(|event| matches(required, event, cx.user_id));
                return Ok(all);
            }
            (kind, WILDCARD) => {
                if type_nid(cx, conn, kind).await?.is_some() {
                    events.extend(caches.state_events(conn, snapshot, Some(kind)).await?);
                }
            }
            (kind, ME) => events.extend(state_event(cx, conn, snapshot, kind, cx.user_id).await?),
            (kind, key) => events.extend(state_event(cx, conn, snapshot, kind, key).await?),
        }
    }
    Ok(events)
}

/// A string field of a state event's content (`None` when absent or empty).
async fn content_string(
    cx: &RoomContext<'_>,
    conn: &mut LazyConn,
    snapshot: &Snapshot,
    kind: &str,
    field: &str,
) -> Result<Option<String>, SyncError> {
    let Some(event) = state_event(cx, conn, snapshot, kind, "").await? else { return Ok(None) };
    let content = cx.state.caches.visible_content(conn, &event).await?;
    Ok(content.get(field).and_then(Value::as_str).filter(|value| !value.is_empty()).map(str::to_owned))
}

/// A hero: the member's id, display name and avatar.
async fn hero_of(
    cx: &RoomContext<'_>,
    conn: &mut LazyConn,
    snapshot: &Snapshot,
    user_id: &str,
) -> Result<Value, SyncError> {
    let mut hero = json!({ "user_id": user_id });
    if let Some(member) = state_event(cx, conn, snapshot, MEMBER, user_id).await? {
        let content = cx.state.caches.visible_content(conn, &member).await?;
        for (field, key) in [("displayname", "displayname"), ("avatar_url", "avatar_url")] {
            if let Some(value) = content.get(field).and_then(Value::as_str) {
                hero[key] = json!(value);
            }
        }
    }
    Ok(hero)
}

/// `kind`'s type NID, `None` when it was never interned (remembered for the rest of the
/// response: every snapshot it reads is older than the lookup, so none can hold the type).
async fn type_nid(
    cx: &RoomContext<'_>,
    conn: &mut LazyConn,
    kind: &str,
) -> Result<Option<TypeNid>, SyncError> {
    if cx.unknown_types.lock().contains(kind) {
        return Ok(None);
    }
    let nid = cx.state.caches.existing_type_nid(conn, kind).await?;
    if nid.is_none() {
        cx.unknown_types.lock().insert(kind.to_owned());
    }
    Ok(nid)
}

/// The state event `(kind, key)` of `snapshot`.
async fn state_event(
    cx: &RoomContext<'_>,
    conn: &mut LazyConn,
    snapshot: &Snapshot,
    kind: &str,
    key: &str,
) -> Result<Option<StoredEvent>, SyncError> {
    let Some(type_nid) = type_nid(cx, conn, kind).await? else { return Ok(None) };
    let Some(key_nid) = cx.state.caches.existing_state_key_nid(conn, key).await? else { return Ok(None) };
    match snapshot.get(type_nid, key_nid) {
        Some(nid) => Ok(cx.state.caches.event(conn, nid).await?),
        None => Ok(None),
    }
}
