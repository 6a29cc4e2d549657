//! What every room handler shares: parsing identifiers from paths and bodies, finding a room,
//! deciding what part of a room a user may read, and the pagination tokens of the events stream.

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, Request},
};
use ganglion_events::ruma::{
    EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
};
use ganglion_http::{MatrixError, MatrixJson, MatrixResult};
use ganglion_state::{Snapshot, StoredEvent};
use ganglion_storage::{
    Conn, events as event_store,
    rooms::{self as room_store, MembershipRow, RoomRow},
};
use ganglion_types::{ErrorClass, SnapshotNid, SyncToken};
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::ClientState;

/// The longest identifier, in bytes (the spec's limit on room, user, event ids and aliases).
const MAX_IDENTIFIER_BYTES: usize = 255;

/// Refuses an identifier over the spec's 255 bytes. ruma's parsers cannot be relied on for
/// this: their length checks depend on the form of the id and, through the `compat-*` features
/// any crate in the build may turn on, are sometimes off altogether.
fn within_limit(kind: &str, text: &str) -> MatrixResult<()> {
    if text.len() > MAX_IDENTIFIER_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "Invalid {kind}: longer than the maximum of {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn room_id(text: &str) -> MatrixResult<OwnedRoomId> {
    within_limit("room id", text)?;
    RoomId::parse(text)
        .map_err(|error| MatrixError::invalid_param(format!("Invalid room id {text:?}: {error}")))
}

pub(crate) fn user_id(text: &str) -> MatrixResult<OwnedUserId> {
    within_limit("user id", text)?;
    UserId::parse(text)
        .map_err(|error| MatrixError::invalid_param(format!("Invalid user id {text:?}: {error}")))
}

pub(crate) fn event_id(text: &str) -> MatrixResult<OwnedEventId> {
    within_limit("event id", text)?;
    EventId::parse(text)
        .map_err(|error| MatrixError::invalid_param(format!("Invalid event id {text:?}: {error}")))
}

pub(crate) fn room_alias(text: &str) -> MatrixResult<OwnedRoomAliasId> {
    within_limit("room alias", text)?;
    RoomAliasId::parse(text)
        .map_err(|error| MatrixError::invalid_param(format!("Invalid room alias {text:?}: {error}")))
}

/// A request body that must be present and a JSON object. `MatrixJson` reads an empty body as
/// `{}`, which suits endpoints clients call without one (`/join`, `/leave`); the endpoints that
/// send content answer an empty body with `M_NOT_JSON`, as the spec's required body implies.
pub(crate) struct RequiredJson(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for RequiredJson {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await.map_err(
            |rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    MatrixError::new(ErrorClass::TooLarge, "Request body too large")
                } else {
                    MatrixError::bad_json(rejection.body_text())
                }
            },
        )?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(MatrixError::new(ErrorClass::NotJson, "Content not JSON: the body is empty"));
        }
        let request = Request::from_parts(parts, Body::from(bytes));
        let MatrixJson(object) = MatrixJson::from_request(request, state).await?;
        Ok(RequiredJson(object))
    }
}

/// Deserializes a request body that must be a JSON object. (Taking the body as a map first
/// keeps serde from accepting a JSON array for a struct.)
pub(crate) fn from_object<T: DeserializeOwned>(body: Map<String, Value>) -> MatrixResult<T> {
    serde_json::from_value(Value::Object(body))
        .map_err(|error| MatrixError::bad_json(format!("Invalid JSON: {error}")))
}

/// The room with `room_id`, or 404.
pub(crate) async fn room(conn: &mut Conn, room_id: &str) -> MatrixResult<RoomRow> {
    room_store::room_by_id(conn, room_id).await?.ok_or_else(|| MatrixError::not_found("Unknown room"))
}

/// The current membership of a user (`join`, `invite`, `leave`, `ban`, `knock`), `None` when
/// they never had one or forgot the room.
pub(crate) async fn membership(
    conn: &mut Conn,
    room: &RoomRow,
    user_id: &str,
) -> MatrixResult<Option<MembershipRow>> {
    let row = room_store::membership_of_user_in_room(conn, room.room_nid, user_id).await?;
    Ok(row.filter(|row| !row.forgotten))
}

/// Requires the user to be joined to the room now.
pub(crate) async fn joined_room(conn: &mut Conn, room_id: &str, user_id: &str) -> MatrixResult<RoomRow> {
    let room = room(conn, room_id).await?;
    match membership(conn, &room, user_id).await? {
        Some(row) if row.membership == "join" => Ok(room),
        _ => Err(MatrixError::forbidden("You are not joined to this room")),
    }
}

/// A room as one user may read it.
pub(crate) struct ReadableRoom {
    pub room: RoomRow,
    /// The state the user sees: the current state, or the state when they left.
    pub snapshot_nid: Option<SnapshotNid>,
    /// The events-stream position of the user's leave (or ban), when they are a former member.
    pub left_at: Option<i64>,
}

/// The room if the user may read it: joined now (current state), or a former member (the state
/// when they left), or anyone when the room is world-readable. Otherwise 403.
pub(crate) async fn readable_room(
    state: &ClientState,
    conn: &mut Conn,
    room_id: &str,
    user_id: &str,
) -> MatrixResult<ReadableRoom> {
    self::room_id(room_id)?;
    let room = room(conn, room_id).await?;
    let current = room.current_snapshot_nid;
    match membership(conn, &room, user_id).await? {
        Some(row) if row.membership == "join" => {
            Ok(ReadableRoom { room, snapshot_nid: current, left_at: None })
        }
        Some(row) if matches!(row.membership.as_str(), "leave" | "ban") => {
            let leave = state.caches.event(conn, row.event_nid).await?;
            let snapshot_nid = leave.map(|event| event.row.snapshot_nid);
            Ok(ReadableRoom { room, snapshot_nid, left_at: Some(row.stream_pos) })
        }
        _ => {
            let snapshot = snapshot(state, conn, current).await?;
            if history_visibility(state, conn, &snapshot).await? == HistoryVisibility::WorldReadable {
                Ok(ReadableRoom { room, snapshot_nid: current, left_at: None })
            } else {
                Err(MatrixError::forbidden("You are not a member of this room"))
            }
        }
    }
}

/// The snapshot with `nid`, or the empty state.
pub(crate) async fn snapshot(
    state: &ClientState,
    conn: &mut Conn,
    nid: Option<SnapshotNid>,
) -> MatrixResult<Snapshot> {
    match nid {
        Some(nid) => Ok(state.caches.snapshot(conn, nid).await?),
        None => Ok(Snapshot::empty()),
    }
}

/// The string field `field` of the content of the state event `(kind, key)` in `snapshot`.
pub(crate) async fn state_string(
    state: &ClientState,
    conn: &mut Conn,
    snapshot: &Snapshot,
    kind: &str,
    key: &str,
    field: &str,
) -> MatrixResult<Option<String>> {
    let Some(event) = state.caches.state_event(conn, snapshot, kind, key).await? else { return Ok(None) };
    let content = state.caches.visible_content(conn, &event).await?;
    Ok(content.get(field).and_then(Value::as_str).map(str::to_owned))
}

/// The history visibility of the room in `snapshot`.
pub(crate) async fn history_visibility(
    state: &ClientState,
    conn: &mut Conn,
    snapshot: &Snapshot,
) -> MatrixResult<HistoryVisibility> {
    let value =
        state_string(state, conn, snapshot, "m.room.history_visibility", "", "history_visibility").await?;
    Ok(HistoryVisibility::parse(value.as_deref()))
}

/// The value of `m.room.history_visibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryVisibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl HistoryVisibility {
    /// A missing or unknown value counts as `shared`, as the spec says.
    pub(crate) fn parse(value: Option<&str>) -> HistoryVisibility {
        match value {
            Some("world_readable") => HistoryVisibility::WorldReadable,
            Some("invited") => HistoryVisibility::Invited,
            Some("joined") => HistoryVisibility::Joined,
            _ => HistoryVisibility::Shared,
        }
    }
}

/// Which events of a room one user may see, by the spec's history visibility rules, from the
/// user's membership changes and the room's history visibility changes (both with the stream
/// position of the event that made them).
#[derive(Debug, Clone, Default)]
pub(crate) struct HistoryRules {
    memberships: Vec<(i64, String)>,
    visibilities: Vec<(i64, HistoryVisibility)>,
}

impl HistoryRules {
    pub(crate) fn new(
        mut memberships: Vec<(i64, String)>,
        mut visibilities: Vec<(i64, HistoryVisibility)>,
    ) -> HistoryRules {
        memberships.sort_by_key(|(position, _)| *position);
        visibilities.sort_by_key(|(position, _)| *position);
        HistoryRules { memberships, visibilities }
    }

    /// Whether the user may see the event at `position`. The state "at" an event is the state
    /// before it; for the user's own member events and history visibility changes the state
    /// after it counts too (`two_sided`), so a user sees their own join and leave.
    pub(crate) fn can_see(&self, position: i64, two_sided: bool) -> bool {
        let before =
            self.allows(self.membership_at(position, false), self.visibility_at(position, false), position);
        before
            || two_sided
                && self.allows(
                    self.membership_at(position, true),
                    self.visibility_at(position, true),
                    position,
                )
    }

    /// The last position the user may see anything at, or `None` when newer events stay visible
    /// (the user is joined, or the room is readable to them). Lets a former member's pagination
    /// skip everything after their leave without reading it.
    pub(crate) fn visible_up_to(&self) -> Option<i64> {
        let (last_change, membership) = match self.memberships.last() {
            Some((position, membership)) => (*position, Some(membership.as_str())),
            None => (0, None),
        };
        // After the last membership change the membership is fixed and no join follows, so only
        // the history visibility in effect decides.
        let later = self.visibilities.iter().filter(|(position, _)| *position > last_change).map(|(_, v)| *v);
        let mut in_effect = std::iter::once(self.visibility_at(last_change, true)).chain(later);
        let allows = |visibility: HistoryVisibility| {
            visibility == HistoryVisibility::WorldReadable
                || membership == Some("join")
                || membership == Some("invite") && visibility == HistoryVisibility::Invited
        };
        if in_effect.any(allows) { None } else { Some(last_change) }
    }

    fn allows(&self, membership: Option<&str>, visibility: HistoryVisibility, position: i64) -> bool {
        match visibility {
            HistoryVisibility::WorldReadable => true,
            _ if membership == Some("join") => true,
            HistoryVisibility::Shared => self.joins_after(position),
            HistoryVisibility::Invited => membership == Some("invite"),
            HistoryVisibility::Joined => false,
        }
    }

    fn membership_at(&self, position: i64, inclusive: bool) -> Option<&str> {
        self.memberships
            .iter()
            .rev()
            .find(|(at, _)| if inclusive { *at <= position } else { *at < position })
            .map(|(_, membership)| membership.as_str())
    }

    fn visibility_at(&self, position: i64, inclusive: bool) -> HistoryVisibility {
        self.visibilities
            .iter()
            .rev()
            .find(|(at, _)| if inclusive { *at <= position } else { *at < position })
            .map_or(HistoryVisibility::Shared, |(_, visibility)| *visibility)
    }

    fn joins_after(&self, position: i64) -> bool {
        self.memberships.iter().any(|(at, membership)| *at > position && membership == "join")
    }
}

/// The history rules of `user_id` in a room, from the events up to `up_to`.
pub(crate) async fn history_rules(
    state: &ClientState,
    conn: &mut Conn,
    room: &RoomRow,
    user_id: &str,
    up_to: i64,
) -> MatrixResult<HistoryRules> {
    let current = snapshot(state, conn, room.current_snapshot_nid).await?;
    let memberships =
        state_key_history(state, conn, room, &current, "m.room.member", user_id, "membership", up_to).await?;
    let visibilities = state_key_history(
        state,
        conn,
        room,
        &current,
        "m.room.history_visibility",
        "",
        "history_visibility",
        up_to,
    )
    .await?;
    Ok(HistoryRules::new(
        memberships.into_iter().filter_map(|(position, value)| Some((position, value?))).collect(),
        visibilities
            .into_iter()
            .map(|(position, value)| (position, HistoryVisibility::parse(value.as_deref())))
            .collect(),
    ))
}

/// `(stream_pos, content[field])` of every event up to `up_to` that set the state
/// `(kind, key)`, oldest first. Walks back from the current holder through the events each one
/// replaced, so the cost follows the length of that history, not the size of the room; then
/// through history fetched from other servers, which replaces nothing. Reads the original
/// content: `membership` and `history_visibility` both survive redaction.
#[allow(clippy::too_many_arguments)]
async fn state_key_history(
    state: &ClientState,
    conn: &mut Conn,
    room: &RoomRow,
    current: &Snapshot,
    kind: &str,
    key: &str,
    field: &str,
    up_to: i64,
) -> MatrixResult<Vec<(i64, Option<String>)>> {
    let value_of =
        |event: &StoredEvent| event.pdu.content_value().get(field).and_then(Value::as_str).map(str::to_owned);
    let mut history = Vec::new();
    let mut next = state.caches.state_event(conn, current, kind, key).await?;
    let mut oldest = None;
    while let Some(event) = next {
        let position = event.row.stream_pos;
        if position <= up_to {
            history.push((position, value_of(&event)));
        }
        next = match event.row.replaces_nid {
            // Each step goes back in the stream, so a corrupt chain cannot loop.
            Some(nid) => state.caches.event(conn, nid).await?.filter(|older| older.row.stream_pos < position),
            None => None,
        };
        oldest = Some(event);
    }
    if let Some(oldest) = oldest {
        if event_store::is_outlier(conn, oldest.row.event_nid).await? {
            // It came with a join, and the fetched history has not reached it: it was set
            // before all of that history, whatever position it was stored at.
            history.retain(|(position, _)| *position != oldest.row.stream_pos);
            history.push((HISTORY_FLOOR, value_of(&oldest)));
        } else {
            let below = oldest.row.stream_pos;
            for row in event_store::history_state_events(conn, room.room_nid, kind, key, below).await? {
                let event = StoredEvent::from_row(row)?;
                if event.row.stream_pos <= up_to {
                    history.push((event.row.stream_pos, value_of(&event)));
                }
            }
        }
    }
    history.sort_by_key(|(position, _)| *position);
    Ok(history)
}

/// Parses a pagination token into a point of the events stream: `p<position>` (ours), `n<n>`
/// for position `-n` (history fetched from other servers sits below 0), or a sync token. A point
/// stands just after the event at that position, between two events.
pub(crate) fn stream_point(token: &str) -> Option<i64> {
    for (prefix, sign) in [('p', 1), ('n', -1)] {
        if let Some(digits) = token.strip_prefix(prefix) {
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            return digits
                .parse::<i64>()
                .ok()
                .map(|value| sign * value)
                .filter(|value| *value >= HISTORY_FLOOR);
        }
    }
    SyncToken::parse(token).ok().map(|token| token.events.0)
}

/// [`stream_point`], failing with `M_INVALID_PARAM`.
pub(crate) fn parse_stream_point(token: &str, parameter: &str) -> MatrixResult<i64> {
    stream_point(token).ok_or_else(|| MatrixError::invalid_param(format!("Invalid `{parameter}` token")))
}

/// The token for the point just after the event at `position`.
pub(crate) fn point_token(position: i64) -> String {
    let position = position.max(HISTORY_FLOOR);
    if position < 0 { format!("n{}", -position) } else { format!("p{position}") }
}

/// Below every position: pagination backwards ends here.
pub(crate) const HISTORY_FLOOR: i64 = -(1 << 62);

/// Checks that a parameter is one of `allowed` (400 `M_INVALID_PARAM` otherwise).
pub(crate) fn one_of<'a>(value: &'a str, allowed: &[&str], parameter: &str) -> MatrixResult<&'a str> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(MatrixError::invalid_param(format!("`{parameter}` must be one of {}", allowed.join(", "))))
    }
}
