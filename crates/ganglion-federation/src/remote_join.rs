//! One of our users joining a room of other servers: `make_join` on a server in the room, our
//! join event built and signed on its template, `send_join` (v2, the whole state asked for),
//! and the room's state with its auth chain checked event by event (format, id, signatures,
//! hashes). The master then authorises and persists what passed.

use std::time::{SystemTime, UNIX_EPOCH};

use ganglion_events::{EventTemplate, build_pdu, rules_for};
use ruma::{OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Map, Value};

use crate::{
    Federation, FederationError,
    client::encode,
    pdu::{CheckedPdu, check_pdu},
};

/// Events of a joined room's history fetched with the join.
const BACKFILL_LIMIT: usize = 100;

/// A join a server in the room accepted.
#[derive(Debug)]
pub struct RemoteJoin {
    pub room_version: RoomVersionId,
    /// Our join event as the room has it.
    pub join: CheckedPdu,
    /// The room's state before the join, each event checked.
    pub state: Vec<CheckedPdu>,
    /// The auth chain of the state and the join, each event checked.
    pub auth_chain: Vec<CheckedPdu>,
    /// The room's latest events before the join (`/backfill`), each checked: what the user
    /// reads first. Empty when the server would not give them.
    pub history: Vec<CheckedPdu>,
    /// The server that let us in.
    pub via: OwnedServerName,
}

/// Joins `user_id` to `room_id` through the first of `servers` that lets it in. `content` is
/// the join's content (profile, reason) without `membership`.
pub async fn join_remote(
    federation: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    content: Map<String, Value>,
    servers: &[OwnedServerName],
) -> Result<RemoteJoin, FederationError> {
    let mut last_error = None;
    for server in servers {
        if server.as_str() == federation.client.server_name().as_str() {
            continue;
        }
        match join_through(federation, server, room_id, user_id, content.clone()).await {
            Ok(join) => return Ok(join),
            Err(error) => {
                tracing::info!(%server, %room_id, %error, "joining through a server failed");
                // A refusal from the room itself (banned, invite-only) is the answer.
                if matches!(error, FederationError::Remote { status: 403, .. }) {
                    return Err(error);
                }
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| FederationError::Remote {
        destination: room_id.to_string(),
        status: 404,
        errcode: "M_NOT_FOUND".into(),
        error: "No server to join the room through".into(),
    }))
}

async fn join_through(
    federation: &Federation,
    server: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    mut content: Map<String, Value>,
) -> Result<RemoteJoin, FederationError> {
    let client = &federation.client;
    let bad = |message: String| FederationError::BadResponse { destination: server.to_string(), message };
    let versions: String =
        ganglion_events::SUPPORTED_ROOM_VERSIONS.iter().map(|version| format!("&ver={version}")).collect();
    let path = format!(
        "/_matrix/federation/v1/make_join/{}/{}?{}",
        encode(room_id.as_str()),
        encode(user_id.as_str()),
        &versions[1..]
    );
    let made = client.get(server, &path).await?;
    let version = made["room_version"].as_str().unwrap_or("1");
    let room_version =
        RoomVersionId::try_from(version).map_err(|_| bad(format!("room version {version:?}")))?;
    let rules =
        rules_for(&room_version).ok_or_else(|| FederationError::UnsupportedRoomVersion(version.into()))?;
    let template = &made["event"];
    let ids = |field: &str| template_ids(template, field).map_err(bad);
    let (prev_events, auth_events) = (ids("prev_events")?, ids("auth_events")?);
    let depth = template["depth"].as_u64().ok_or_else(|| bad("no depth in the template".into()))?;
    // A restricted room's template names the user who authorises the join.
    if let Some(authoriser) = template["content"].get("join_authorised_via_users_server") {
        content.insert("join_authorised_via_users_server".into(), authoriser.clone());
    }
    content.insert("membership".into(), "join".into());
    let event = EventTemplate::state("m.room.member", user_id.as_str(), Value::Object(content));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let pdu = build_pdu(
        client.key(),
        &rules,
        Some(room_id),
        user_id,
        &event,
        &prev_events,
        &auth_events,
        depth,
        now,
    )
    .map_err(|error| bad(format!("the join event cannot be built: {error}")))?;
    let body: Value = serde_json::from_str(&pdu.json).map_err(|e| bad(e.to_string()))?;
    let path = format!(
        "/_matrix/federation/v2/send_join/{}/{}?omit_members=false",
        encode(room_id.as_str()),
        encode(pdu.event_id.as_str())
    );
    let answer = client.request(http::Method::PUT, server, &path, Some(&body)).await?;
    // The resident server countersigns a restricted join; otherwise ours is the event.
    let join_json = answer.get("event").filter(|event| event.is_object()).unwrap_or(&body);
    let join = check_pdu(&federation.keyring, &room_version, join_json)
        .await
        .map_err(|error| bad(format!("our join event came back unusable: {error}")))?;
    if join.event_id != pdu.event_id {
        return Err(bad("the join event came back changed".into()));
    }
    let state = check_all(federation, &room_version, &answer["state"], server).await?;
    let auth_chain = check_all(federation, &room_version, &answer["auth_chain"], server).await?;
    let history = backfill(federation, &room_version, server, room_id, &prev_events).await;
    Ok(RemoteJoin { room_version, join, state, auth_chain, history, via: server.to_owned() })
}

/// The latest events before `from` that `server` gives (`/backfill`), checked; none when it
/// fails: the join stands without them.
async fn backfill(
    federation: &Federation,
    version: &RoomVersionId,
    server: &ServerName,
    room_id: &RoomId,
    from: &[OwnedEventId],
) -> Vec<CheckedPdu> {
    if from.is_empty() {
        return Vec::new();
    }
    let vs: String = from.iter().map(|id| format!("&v={}", encode(id.as_str()))).collect();
    let path =
        format!("/_matrix/federation/v1/backfill/{}?limit={BACKFILL_LIMIT}{vs}", encode(room_id.as_str()));
    match federation.client.get(server, &path).await {
        Ok(answer) => check_all(federation, version, &answer["pdus"], server).await.unwrap_or_default(),
        Err(error) => {
            tracing::info!(%server, %room_id, %error, "the history before a join could not be fetched");
            Vec::new()
        }
    }
}

/// Each PDU of `list` that passes the checks; one that does not is left out (the master then
/// refuses what depended on it).
async fn check_all(
    federation: &Federation,
    version: &RoomVersionId,
    list: &Value,
    server: &ServerName,
) -> Result<Vec<CheckedPdu>, FederationError> {
    let Some(list) = list.as_array() else {
        return Err(FederationError::BadResponse {
            destination: server.to_string(),
            message: "send_join answered without state or auth_chain".into(),
        });
    };
    let mut checked = Vec::with_capacity(list.len());
    for pdu in list {
        match check_pdu(&federation.keyring, version, pdu).await {
            Ok(pdu) => checked.push(pdu),
            Err(error) => tracing::info!(%server, %error, "left out an event of a room's state"),
        }
    }
    Ok(checked)
}

/// Our user declining an invite to a room of other servers: `make_leave` on `server`, our leave
/// signed on its template, `send_leave` v2. Answers the room's version and the leave event.
pub async fn leave_remote(
    federation: &Federation,
    server: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
) -> Result<(RoomVersionId, ganglion_events::Pdu), FederationError> {
    let client = &federation.client;
    let bad = |message: String| FederationError::BadResponse { destination: server.to_string(), message };
    let path = format!(
        "/_matrix/federation/v1/make_leave/{}/{}",
        encode(room_id.as_str()),
        encode(user_id.as_str())
    );
    let made = client.get(server, &path).await?;
    let version = made["room_version"].as_str().unwrap_or("1");
    let room_version =
        RoomVersionId::try_from(version).map_err(|_| bad(format!("room version {version:?}")))?;
    let rules =
        rules_for(&room_version).ok_or_else(|| FederationError::UnsupportedRoomVersion(version.into()))?;
    let template = &made["event"];
    let ids = |field: &str| template_ids(template, field).map_err(bad);
    let depth = template["depth"].as_u64().ok_or_else(|| bad("no depth in the template".into()))?;
    let event =
        EventTemplate::state("m.room.member", user_id.as_str(), serde_json::json!({ "membership": "leave" }));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let pdu = build_pdu(
        client.key(),
        &rules,
        Some(room_id),
        user_id,
        &event,
        &ids("prev_events")?,
        &ids("auth_events")?,
        depth,
        now,
    )
    .map_err(|error| bad(format!("the leave event cannot be built: {error}")))?;
    let body: Value = serde_json::from_str(&pdu.json).map_err(|e| bad(e.to_string()))?;
    let path = format!(
        "/_matrix/federation/v2/send_leave/{}/{}",
        encode(room_id.as_str()),
        encode(pdu.event_id.as_str())
    );
    client.request(http::Method::PUT, server, &path, Some(&body)).await?;
    Ok((room_version, pdu))
}

/// Our user's knock on a room of other servers, as a server in the room accepted it.
#[derive(Debug)]
pub struct RemoteKnock {
    pub room_version: RoomVersionId,
    pub knock: ganglion_events::Pdu,
    /// The stripped state the room shows knockers (`knock_room_state`).
    pub knock_room_state: Value,
}

/// Knocks `user_id` on `room_id` through the first of `servers` that takes it: `make_knock`,
/// our knock signed on its template, `send_knock`. `content` is the knock's content (profile,
/// reason) without `membership`.
pub async fn knock_remote(
    federation: &Federation,
    room_id: &RoomId,
    user_id: &UserId,
    content: Map<String, Value>,
    servers: &[OwnedServerName],
) -> Result<RemoteKnock, FederationError> {
    let mut last_error = None;
    for server in servers {
        if server.as_str() == federation.client.server_name().as_str() {
            continue;
        }
        match knock_through(federation, server, room_id, user_id, content.clone()).await {
            Ok(knock) => return Ok(knock),
            Err(error) => {
                tracing::info!(%server, %room_id, %error, "knocking through a server failed");
                if matches!(error, FederationError::Remote { status: 403, .. }) {
                    return Err(error);
                }
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| FederationError::Remote {
        destination: room_id.to_string(),
        status: 404,
        errcode: "M_NOT_FOUND".into(),
        error: "No server to knock on the room through".into(),
    }))
}

async fn knock_through(
    federation: &Federation,
    server: &ServerName,
    room_id: &RoomId,
    user_id: &UserId,
    mut content: Map<String, Value>,
) -> Result<RemoteKnock, FederationError> {
    let client = &federation.client;
    let bad = |message: String| FederationError::BadResponse { destination: server.to_string(), message };
    let versions: String =
        ganglion_events::SUPPORTED_ROOM_VERSIONS.iter().map(|version| format!("&ver={version}")).collect();
    let path = format!(
        "/_matrix/federation/v1/make_knock/{}/{}?{}",
        encode(room_id.as_str()),
        encode(user_id.as_str()),
        &versions[1..]
    );
    let made = client.get(server, &path).await?;
    let version = made["room_version"].as_str().unwrap_or("1");
    let room_version =
        RoomVersionId::try_from(version).map_err(|_| bad(format!("room version {version:?}")))?;
    let rules =
        rules_for(&room_version).ok_or_else(|| FederationError::UnsupportedRoomVersion(version.into()))?;
    let template = &made["event"];
    let ids = |field: &str| template_ids(template, field).map_err(bad);
    let depth = template["depth"].as_u64().ok_or_else(|| bad("no depth in the template".into()))?;
    content.insert("membership".into(), "knock".into());
    let event = EventTemplate::state("m.room.member", user_id.as_str(), Value::Object(content));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let pdu = build_pdu(
        client.key(),
        &rules,
        Some(room_id),
        user_id,
        &event,
        &ids("prev_events")?,
        &ids("auth_events")?,
        depth,
        now,
    )
    .map_err(|error| bad(format!("the knock event cannot be built: {error}")))?;
    let body: Value = serde_json::from_str(&pdu.json).map_err(|e| bad(e.to_string()))?;
    let path = format!(
        "/_matrix/federation/v1/send_knock/{}/{}",
        encode(room_id.as_str()),
        encode(pdu.event_id.as_str())
    );
    let answer = client.request(http::Method::PUT, server, &path, Some(&body)).await?;
    let knock_room_state = answer.get("knock_room_state").filter(|state| state.is_array()).cloned();
    let knock_room_state = knock_room_state.unwrap_or_else(|| Value::Array(Vec::new()));
    Ok(RemoteKnock { room_version, knock: pdu, knock_room_state })
}

/// The event ids a `make_join` or `make_leave` template lists in `field` (plain, or as the
/// `[id, hashes]` pairs of room versions 1 and 2).
fn template_ids(template: &Value, field: &str) -> Result<Vec<OwnedEventId>, String> {
    let entries = template[field].as_array().ok_or_else(|| format!("{field}: not a list"))?;
    entries
        .iter()
        .map(|entry| {
            ganglion_events::event_ref_id(entry)
                .and_then(|id| OwnedEventId::try_from(id).ok())
                .ok_or_else(|| format!("{field}: {entry} is not an event id"))
        })
        .collect()
}
