//! Another server's user joining a room of ours: `make_join` hands out the event to sign, built
//! by the master on the room's current state; `send_join` checks the signed event, has the
//! master authorise and persist it, and answers the room's state before it with its auth chain.
//! `make_leave` and `send_leave` do the same for a leave (an invite declined), `make_knock` and
//! `send_knock` for a knock on a room whose join rule allows it (answered with the room's
//! stripped state, for the knocking user's client to show).

use axum::{
    Json,
    extract::{Path, RawQuery, State},
};
use ganglion_events::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId};
use ganglion_federation::pdu::check_pdu;
use ganglion_http::{MatrixError, MatrixResult};
use ganglion_rpc::{AcceptEvents, MakeJoin};
use serde_json::{Value, json};

use crate::{FederationState, Signed, events::Reader};

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=…`.
pub(crate) async fn make_join(
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    // Without `ver` the joining server supports only version 1, as the spec says.
    let mut versions = versions_of(query.as_deref());
    if versions.is_empty() {
        versions.push("1".to_owned());
    }
    template(&state, (room_id, user_id), &signed, versions, Template::Join).await
}

/// What a `make_*` asks for.
enum Template {
    Join,
    Leave,
    Knock,
}

/// The member event `make_join`, `make_leave` or `make_knock` hands out for a user of the asking
/// server to sign, built by the master: `{room_version, event}`.
async fn template(
    state: &FederationState,
    (room_id, user_id): (String, String),
    signed: &Signed,
    versions: Vec<String>,
    kind: Template,
) -> MatrixResult<Json<Value>> {
    let room_id = OwnedRoomId::try_from(room_id).map_err(|_| MatrixError::invalid_param("Not a room id"))?;
    let user_id = OwnedUserId::try_from(user_id).map_err(|_| MatrixError::invalid_param("Not a user id"))?;
    if user_id.server_name() != signed.origin {
        return Err(MatrixError::forbidden("The user is not a user of the requesting server"));
    }
    let (leave, knock) = (matches!(kind, Template::Leave), matches!(kind, Template::Knock));
    let made = state.master.make_join(MakeJoin { room_id, user_id, versions, leave, knock }).await?;
    Ok(Json(json!({ "room_version": made.room_version, "event": made.event })))
}

/// The room versions named by `ver` in a query string.
fn versions_of(query: Option<&str>) -> Vec<String> {
    form_pairs(query).filter(|(key, _)| key == "ver").map(|(_, value)| value).collect()
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`. `omit_members` is ignored: the
/// whole state is answered, and `members_omitted` says so.
pub(crate) async fn send_join(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let (room, join, pdu) = take_membership(&state, (&room_id, &event_id), &signed, "join").await?;
    let mut reader = Reader::new(&state).await?;
    let join = reader.event_in_room(join.as_str(), room.room_nid).await?;
    let state_events = reader.state_before(&join).await?;
    let mut chain_of = state_events.clone();
    chain_of.push(join.clone());
    let auth_chain = reader.auth_chain(room.room_nid, &chain_of).await?;
    let servers_in_room: Vec<String> = {
        let mut servers: Vec<String> = state_events
            .iter()
            .chain(std::iter::once(&join))
            .filter(|event| {
                event.pdu.kind.to_string() == "m.room.member"
                    && event.pdu.content_value()["membership"] == "join"
            })
            .filter_map(|event| {
                Some(UserId::parse(event.pdu.state_key.as_deref()?).ok()?.server_name().to_string())
            })
            .collect();
        servers.sort();
        servers.dedup();
        servers
    };
    Ok(Json(json!({
        "origin": state.config.server_name,
        "event": pdu,
        "state": reader.pdus(&state_events).await?,
        "auth_chain": reader.pdus(&auth_chain).await?,
        "members_omitted": false,
        "servers_in_room": servers_in_room,
    })))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`: for a user of the asking server
/// who was invited (or is joined) and leaves.
pub(crate) async fn make_leave(
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    template(&state, (room_id, user_id), &signed, Vec::new(), Template::Leave).await
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=…`.
pub(crate) async fn make_knock(
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let versions = versions_of(query.as_deref());
    if versions.is_empty() {
        return Err(MatrixError::missing_param("`ver` names the room versions the knocking server supports"));
    }
    template(&state, (room_id, user_id), &signed, versions, Template::Knock).await
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`.
pub(crate) async fn send_knock(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let (room, _, _) = take_membership(&state, (&room_id, &event_id), &signed, "knock").await?;
    let mut conn = state.db.conn().await?;
    let room = ganglion_storage::rooms::room_by_id(&mut conn, room.room_id.as_str()).await?.unwrap_or(room);
    let Some(snapshot_nid) = room.current_snapshot_nid else {
        return Err(MatrixError::not_found("Unknown room"));
    };
    let snapshot = state.caches.snapshot(&mut conn, snapshot_nid).await?;
    let mut stripped = Vec::new();
    for kind in ganglion_events::STRIPPED_STATE_TYPES {
        if let Some(event) = state.caches.state_event(&mut conn, &snapshot, kind, "").await? {
            stripped.push(json!({
                "type": kind,
                "state_key": "",
                "content": event.pdu.content_value(),
                "sender": event.pdu.sender.as_str(),
            }));
        }
    }
    Ok(Json(json!({ "knock_room_state": stripped })))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`.
pub(crate) async fn send_leave(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    take_membership(&state, (&room_id, &event_id), &signed, "leave").await?;
    Ok(Json(json!({})))
}

/// Checks a member event of the asking server's user (`membership` being what it must be) and
/// has the master authorise and persist it.
async fn take_membership(
    state: &FederationState,
    (room_id, event_id): (&str, &str),
    signed: &Signed,
    membership: &str,
) -> MatrixResult<(ganglion_storage::rooms::RoomRow, OwnedEventId, Value)> {
    let pdu: Value = serde_json::from_slice(&signed.body)
        .map_err(|error| MatrixError::bad_json(format!("Invalid event: {error}")))?;
    let room = {
        let mut conn = state.db.conn().await?;
        ganglion_storage::rooms::room_by_id(&mut conn, room_id).await?
    };
    let Some(room) = room.filter(|room| room.latest_event_nid.is_some()) else {
        return Err(MatrixError::not_found("Unknown room"));
    };
    let version = RoomVersionId::try_from(room.room_version.as_str())
        .map_err(|_| MatrixError::internal("a stored room version does not parse"))?;
    let checked = check_pdu(&state.federation.keyring, &version, &pdu).await?;
    if checked.event_id.as_str() != event_id {
        return Err(MatrixError::bad_json(format!("The event's id is {}, not {event_id}", checked.event_id)));
    }
    if checked.room_id.as_str() != room_id {
        return Err(MatrixError::bad_json("The event is not of this room"));
    }
    let field = |name: &str| pdu.get(name).and_then(Value::as_str).unwrap_or_default();
    let sender =
        UserId::parse(field("sender")).map_err(|_| MatrixError::bad_json("sender is not a user id"))?;
    if field("type") != "m.room.member"
        || field("state_key") != sender.as_str()
        || pdu["content"]["membership"] != membership
    {
        return Err(MatrixError::bad_json(format!("Not a {membership} event of its sender")));
    }
    if sender.server_name() != signed.origin {
        return Err(MatrixError::forbidden("The user is not a user of the requesting server"));
    }
    if checked.redacted {
        return Err(MatrixError::bad_json("The event's content does not match its hash"));
    }
    let outcomes = state
        .master
        .accept_events(AcceptEvents {
            origin: signed.origin.to_string(),
            events: vec![(checked.event_id.clone(), checked.json.clone())],
            ..AcceptEvents::default()
        })
        .await?;
    if let Some(error) = outcomes.into_iter().find_map(|outcome| outcome.error) {
        return Err(error.into());
    }
    Ok((room, checked.event_id, pdu))
}

/// `key=value` pairs of a query string, decoded (a key may repeat).
pub(crate) fn form_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
}
