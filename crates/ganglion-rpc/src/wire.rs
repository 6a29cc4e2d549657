//! How a call and its answer cross the process boundary, and the parsing helpers their
//! conversions share.
//!
//! Parsing a message can fail with a [`ConvertError`]. On the server that is the caller's bad
//! input and becomes a typed `BadJson` or `InvalidParam`; on the client it is a master that broke
//! the contract, and becomes `Internal`.

use std::fmt::{Debug, Display};

use ganglion_events::ruma::{OwnedEventId, OwnedRoomId};
use ganglion_proto::master::v1 as pb;
use ganglion_types::{ErrorClass, HasErrorClass};
use serde_json::{Map, Value};

use crate::MasterError;

/// What a worker does once the master has answered a call, so that the client's next request
/// to this worker sees the call's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// The call changed nothing a worker caches or replicates.
    Nothing,
    /// The call advanced a stream: wait (bounded) until this worker's replication reaches the
    /// master's positions after the call.
    AwaitReplication,
    /// The call revoked access tokens: drop this worker's cached sessions at once rather than
    /// when the invalidation arrives.
    ForgetSessions,
}

/// A request to the master, with its gRPC message.
pub trait Call: Debug + Send + Sized + 'static {
    type Message: prost::Message + Clone + Default + Send + 'static;

    fn into_message(self) -> Self::Message;
    fn from_message(message: Self::Message) -> Result<Self, ConvertError>;
    fn after(&self) -> AfterCall;

    /// Whether the master recognises a repeat of this call, so a worker may retry it after a
    /// timeout. Any other call may have taken effect even when its answer was lost.
    fn idempotent(&self) -> bool {
        false
    }
}

/// An answer of the master, as it crosses the wire in the message `M`.
pub trait Answer<M>: Sized {
    fn into_message(self) -> M;
    fn from_message(message: M) -> Result<Self, ConvertError>;
}

impl Answer<pb::Done> for () {
    fn into_message(self) -> pb::Done {
        pb::Done {}
    }

    fn from_message(_: pb::Done) -> Result<(), ConvertError> {
        Ok(())
    }
}

impl Answer<pb::EventIdResponse> for OwnedEventId {
    fn into_message(self) -> pb::EventIdResponse {
        pb::EventIdResponse { event_id: self.into() }
    }

    fn from_message(message: pb::EventIdResponse) -> Result<OwnedEventId, ConvertError> {
        id("event_id", message.event_id)
    }
}

impl Answer<pb::CreateRoomResponse> for OwnedRoomId {
    fn into_message(self) -> pb::CreateRoomResponse {
        pb::CreateRoomResponse { room_id: self.into() }
    }

    fn from_message(message: pb::CreateRoomResponse) -> Result<OwnedRoomId, ConvertError> {
        id("room_id", message.room_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{field} is not valid JSON: {reason}")]
    Json { field: &'static str, reason: String },
    #[error("{field} is invalid: {reason}")]
    InvalidParam { field: &'static str, reason: String },
}

impl HasErrorClass for ConvertError {
    fn class(&self) -> ErrorClass {
        match self {
            ConvertError::Json { .. } => ErrorClass::BadJson,
            ConvertError::InvalidParam { .. } => ErrorClass::InvalidParam,
        }
    }
}

impl From<ConvertError> for MasterError {
    fn from(error: ConvertError) -> MasterError {
        MasterError::new(error.class(), error.to_string())
    }
}

/// Parses any ruma identifier (or other `TryFrom<String>` type) from a message field.
pub(crate) fn id<T>(field: &'static str, value: String) -> Result<T, ConvertError>
where
    T: TryFrom<String>,
    T::Error: Display,
{
    T::try_from(value).map_err(|error| ConvertError::InvalidParam { field, reason: error.to_string() })
}

pub(crate) fn optional_id<T>(field: &'static str, value: Option<String>) -> Result<Option<T>, ConvertError>
where
    T: TryFrom<String>,
    T::Error: Display,
{
    value.map(|value| id(field, value)).transpose()
}

pub(crate) fn ids<T>(field: &'static str, values: Vec<String>) -> Result<Vec<T>, ConvertError>
where
    T: TryFrom<String>,
    T::Error: Display,
{
    values.into_iter().map(|value| id(field, value)).collect()
}

pub(crate) fn json_value(field: &'static str, text: &str) -> Result<Value, ConvertError> {
    serde_json::from_str(text).map_err(|error| ConvertError::Json { field, reason: error.to_string() })
}

pub(crate) fn json_object(field: &'static str, text: &str) -> Result<Map<String, Value>, ConvertError> {
    match json_value(field, text)? {
        Value::Object(object) => Ok(object),
        _ => Err(ConvertError::Json { field, reason: "not a JSON object".to_owned() }),
    }
}

pub(crate) fn object_json(object: Map<String, Value>) -> String {
    Value::Object(object).to_string()
}

pub(crate) fn unknown_enum(field: &'static str, value: i32) -> ConvertError {
    ConvertError::InvalidParam { field, reason: format!("unknown value {value}") }
}
