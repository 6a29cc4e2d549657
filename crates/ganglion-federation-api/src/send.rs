//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs from another
//! server. A transaction is applied once: a retry gets the first answer back. Each PDU and EDU
//! is taken or refused on its own. If the master cannot be reached the whole transaction fails
//! unrecorded, and its origin sends it again. EDUs handled: to-device messages here, typing,
//! receipts and presence in [`crate::edus`].

use axum::{
    Json,
    extract::{Path, State},
};
use std::collections::{HashMap, HashSet};

use ganglion_events::ruma::ServerName;
use ganglion_events::ruma::{CanonicalJsonValue, OwnedDeviceId, RoomVersionId, UserId};
use ganglion_federation::pdu::{CheckedPdu, check_pdu, event_id_of};
use ganglion_http::{MatrixError, MatrixResult};
use ganglion_metrics::{PduOutcome, TransactionResult};
use ganglion_rpc::{AcceptEvents, SendToDevice};
use ganglion_types::ErrorClass;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{FederationState, Signed, edus, gaps::Gaps};

/// Events asked for at most to fill the gap before a PDU.
const MISSING_EVENTS_LIMIT: usize = 10;

/// The spec's bounds of one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

#[derive(Deserialize)]
struct Transaction {
    origin: String,
    #[serde(default)]
    pdus: Vec<Value>,
    #[serde(default)]
    edus: Vec<Edu>,
}

#[derive(Deserialize)]
struct Edu {
    edu_type: String,
    #[serde(default)]
    content: Value,
}

pub(crate) async fn send_transaction(
    State(state): State<FederationState>,
    Path(txn_id): Path<String>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let transaction: Transaction = serde_json::from_slice(&signed.body)
        .map_err(|error| MatrixError::bad_json(format!("Invalid transaction: {error}")))?;
    if transaction.origin != signed.origin.as_str() {
        return Err(MatrixError::forbidden("The transaction's origin is not the server that signed it"));
    }
    if transaction.pdus.len() > MAX_PDUS || transaction.edus.len() > MAX_EDUS {
        return Err(MatrixError::bad_json(format!(
            "A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let origin = signed.origin.as_str();
    {
        let mut conn = state.db.conn().await?;
        if let Some(answer) =
            ganglion_storage::federation::inbound_transaction_response(&mut conn, origin, &txn_id).await?
        {
            return Ok(Json(serde_json::from_str(&answer).unwrap_or_else(|_| json!({ "pdus": {} }))));
        }
    }
    let answer = apply(&state, origin, &txn_id, transaction).await;
    state.metrics.received(match &answer {
        Ok(_) => TransactionResult::Ok,
        Err(error) if matches!(error.class, ErrorClass::Unavailable | ErrorClass::Internal) => {
            TransactionResult::Failed
        }
        Err(_) => TransactionResult::Refused,
    });
    answer.map(Json)
}

/// Takes a transaction's PDUs and EDUs and records the answer, so a resend gets it again.
async fn apply(
    state: &FederationState,
    origin: &str,
    txn_id: &str,
    transaction: Transaction,
) -> MatrixResult<Value> {
    let pdus = take_pdus(state, origin, &transaction.pdus).await?;
    for edu in transaction.edus {
        match edu.edu_type.as_str() {
            "m.direct_to_device" => match to_device(state, origin, &edu.content).await {
                Ok(()) => {}
                // Not taken for now (the master is down): the whole transaction fails unrecorded,
                // and its origin sends it again.
                Err(error) if matches!(error.class, ErrorClass::Unavailable | ErrorClass::Internal) => {
                    return Err(error);
                }
                Err(error) => tracing::info!(%origin, ?error, "a to-device EDU was refused"),
            },
            // Each drops what it cannot take and fails only when the master cannot be reached.
            "m.typing" => edus::typing(state, origin, &edu.content).await?,
            "m.receipt" => edus::receipts(state, origin, &edu.content).await?,
            "m.presence" => edus::presence(state, origin, &edu.content).await?,
            "m.device_list_update" | "m.signing_key_update" => {
                edus::device_list_update(state, origin, &edu.content).await?
            }
            other => {
                tracing::debug!(%origin, edu_type = other, "an EDU of a kind not handled yet was dropped")
            }
        }
    }
    let answer = json!({ "pdus": pdus });
    let mut conn = state.db.conn().await?;
    ganglion_storage::federation::insert_inbound_transaction(
        &mut conn,
        origin,
        txn_id,
        &answer.to_string(),
        ganglion_storage::now_ms(),
    )
    .await?;
    Ok(answer)
}

/// Checks each PDU (format, id, signatures, hash) and hands those that pass to the master in
/// one call, which authorises and persists each on its own. Answers each PDU's outcome by id.
/// A PDU of a room this server is not in, or of a version it does not support, is refused.
async fn take_pdus(
    state: &FederationState,
    origin: &str,
    pdus: &[Value],
) -> MatrixResult<Map<String, Value>> {
    let mut answers = Map::new();
    let mut checked = Vec::with_capacity(pdus.len());
    let mut versions: HashMap<String, Option<RoomVersionId>> = HashMap::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut gaps = Gaps::default();
    for pdu in pdus {
        let Some(room_id) = pdu.get("room_id").and_then(Value::as_str) else {
            tracing::info!(%origin, "a PDU without a room id was dropped");
            continue;
        };
        if !versions.contains_key(room_id) {
            let mut conn = state.db.conn().await?;
            let room = ganglion_storage::rooms::room_by_id(&mut conn, room_id).await?;
            let version = room
                .filter(|room| room.latest_event_nid.is_some())
                .and_then(|room| RoomVersionId::try_from(room.room_version.as_str()).ok());
            versions.insert(room_id.to_owned(), version);
        }
        let Some(version) = versions[room_id].clone() else {
            // Without the room's version the event has no id to answer under.
            tracing::info!(%origin, %room_id, "a PDU of a room this server is not in was dropped");
            continue;
        };
        match check_pdu(&state.federation.keyring, &version, pdu).await {
            Ok(pdu) => {
                let mut events = fill_gap(state, origin, &version, &pdu, &taken).await?;
                events.push(pdu);
                gaps.fill(state, origin, &version, &events, &taken).await?;
                for event in events {
                    taken.insert(event.event_id.to_string());
                    checked.push((event.event_id, event.json));
                }
            }
            Err(error) => {
                let event_id = CanonicalJsonValue::try_from(pdu.clone()).ok().and_then(|value| match value {
                    CanonicalJsonValue::Object(mut object) => {
                        object.remove("unsigned");
                        version.rules().and_then(|rules| event_id_of(&object, &rules).ok())
                    }
                    _ => None,
                });
                tracing::info!(%origin, ?event_id, %error, "refused a PDU");
                state.metrics.pdu_received(PduOutcome::Rejected);
                if let Some(event_id) = event_id {
                    answers.insert(event_id.to_string(), json!({ "error": error.to_string() }));
                }
            }
        }
    }
    if checked.is_empty() {
        return Ok(answers);
    }
    let request = AcceptEvents {
        origin: origin.to_owned(),
        events: checked,
        outliers: gaps.outliers.into_iter().map(|event| (event.event_id, event.json)).collect(),
        gaps: gaps.states,
    };
    let outcomes = state.master.accept_events(request).await?;
    for outcome in outcomes {
        state.metrics.pdu_received(match &outcome.error {
            None => PduOutcome::Accepted,
            Some(_) if outcome.soft_failed() => PduOutcome::SoftFailed,
            Some(_) => PduOutcome::Rejected,
        });
        let soft_failed = outcome.soft_failed();
        let answer = match outcome.error {
            // Soft-failed events are not rejected (the spec): kept, but not in the timeline.
            None => json!({}),
            Some(_) if soft_failed => json!({}),
            Some(error) => json!({ "error": error.message }),
        };
        answers.insert(outcome.event_id.to_string(), answer);
    }
    Ok(answers)
}

/// The events missing between the room's forward extremities here and `pdu` (its unknown
/// `prev_events` and theirs), asked of `origin` with `get_missing_events` (at most 10, checked
/// like any PDU), oldest first; none when nothing is missing or the origin cannot say.
async fn fill_gap(
    state: &FederationState,
    origin: &str,
    version: &RoomVersionId,
    pdu: &CheckedPdu,
    taken: &HashSet<String>,
) -> MatrixResult<Vec<CheckedPdu>> {
    let prev_events: Vec<String> =
        pdu.referenced("prev_events").into_iter().filter(|id| !taken.contains(id)).collect();
    if prev_events.is_empty() {
        return Ok(Vec::new());
    }
    let (known, room) = {
        let mut conn = state.db.conn().await?;
        let known = ganglion_storage::events::events_by_id(&mut conn, &prev_events).await?;
        let room = ganglion_storage::rooms::room_by_id(&mut conn, pdu.room_id.as_str()).await?;
        (known, room)
    };
    if known.len() == prev_events.len() {
        return Ok(Vec::new());
    }
    let Some(room) = room else { return Ok(Vec::new()) };
    let mut earliest: Vec<String> = room
        .forward_extremities
        .as_deref()
        .and_then(|ids| serde_json::from_str(ids).ok())
        .unwrap_or_default();
    if earliest.is_empty()
        && let Some(latest) = room.latest_event_nid
    {
        let mut conn = state.db.conn().await?;
        earliest.extend(
            ganglion_storage::events::events_by_nid(&mut conn, &[latest])
                .await?
                .into_iter()
                .map(|row| row.event_id),
        );
    }
    let Ok(server) = ServerName::parse(origin) else { return Ok(Vec::new()) };
    let path = format!(
        "/_matrix/federation/v1/get_missing_events/{}",
        ganglion_federation::client::encode(pdu.room_id.as_str())
    );
    let body = json!({
        "earliest_events": earliest,
        "latest_events": [pdu.event_id],
        "limit": MISSING_EVENTS_LIMIT,
        "min_depth": 0,
    });
    let answer = match state.federation.client.request(http::Method::POST, &server, &path, Some(&body)).await
    {
        Ok(answer) => answer,
        Err(error) => {
            tracing::info!(%origin, event_id = %pdu.event_id, %error, "the events before a gap could not be fetched");
            return Ok(Vec::new());
        }
    };
    let mut missing = Vec::new();
    for event in answer["events"].as_array().into_iter().flatten() {
        match check_pdu(&state.federation.keyring, version, event).await {
            Ok(event) if event.room_id == pdu.room_id && !taken.contains(event.event_id.as_str()) => {
                missing.push(event)
            }
            Ok(_) => {}
            Err(error) => tracing::info!(%origin, %error, "refused a missing event"),
        }
    }
    let depth = |event: &CheckedPdu| match event.object.get("depth") {
        Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
        _ => 0,
    };
    missing.sort_by_key(depth);
    Ok(missing)
}

/// An `m.direct_to_device` EDU: messages from a user of `origin` to devices of ours, queued
/// through the master like a local `/sendToDevice` (its message id deduplicates a repeat).
async fn to_device(state: &FederationState, origin: &str, content: &Value) -> Result<(), MatrixError> {
    let field = |name: &str| content.get(name).and_then(Value::as_str).unwrap_or_default();
    let sender =
        UserId::parse(field("sender")).map_err(|_| MatrixError::bad_json("sender is not a user id"))?;
    if sender.server_name().as_str() != origin {
        return Err(MatrixError::forbidden("The sender is not a user of the origin"));
    }
    let (event_type, message_id) = (field("type"), field("message_id"));
    if message_id.is_empty() {
        return Err(MatrixError::bad_json("message_id is required"));
    }
    let messages = content.get("messages").cloned().unwrap_or_else(|| json!({}));
    state
        .master
        .send_to_device(SendToDevice {
            sender,
            // Remote senders' messages are deduplicated apart from any local device's.
            sender_device: OwnedDeviceId::from(format!("federation:{origin}")),
            event_type: event_type.to_owned(),
            txn_id: message_id.to_owned(),
            body: json!({ "messages": messages }),
        })
        .await?;
    Ok(())
}
