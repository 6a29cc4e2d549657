//! Conversions between the `ganglion.master.v1` messages and the domain types, both ways.
//!
//! Parsing a message can fail with a [`ConvertError`]. On the server that is the caller's bad
//! input and becomes a typed `BadJson` or `InvalidParam`; on the client it is a master that broke
//! the contract, and becomes `Internal`.

use std::{fmt::Display, time::Duration};

use ganglion_events::{EventTemplate, ruma::OwnedUserId};
use ganglion_proto::master::v1 as pb;
use ganglion_types::{ErrorClass, HasErrorClass, StreamPosition, SyncToken};
use prost::Message;
use serde_json::{Map, Value};
use tonic::{Code, Status};

use crate::{
    CreateRoomRequest, InitialStateEvent, LoginRequest, MasterError, MembershipChange, Preset, ProfileField,
    RegisterRequest, SessionGrant, TypingSnapshot,
};

/// Shown to the Matrix client whenever the master cannot be reached or did not answer in time.
pub(crate) const UNAVAILABLE_MESSAGE: &str = "The master is unavailable; try again shortly";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConvertError {
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

pub(crate) fn unavailable() -> MasterError {
    MasterError::new(ErrorClass::Unavailable, UNAVAILABLE_MESSAGE)
}

/// For the client: the master answered something this worker cannot read.
pub(crate) fn invalid_answer(error: ConvertError) -> MasterError {
    MasterError::internal(format!("the master's answer is invalid: {error}"))
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

fn object_json(object: Map<String, Value>) -> String {
    Value::Object(object).to_string()
}

pub(crate) fn sync_token(text: &str) -> Result<SyncToken, ConvertError> {
    SyncToken::parse(text)
        .map_err(|error| ConvertError::InvalidParam { field: "sync_token", reason: error.to_string() })
}

fn unknown_enum(field: &'static str, value: i32) -> ConvertError {
    ConvertError::InvalidParam { field, reason: format!("unknown value {value}") }
}

pub(crate) fn register_message(request: RegisterRequest) -> pb::RegisterRequest {
    pb::RegisterRequest {
        username: request.username,
        password: request.password,
        device_id: request.device_id,
        initial_device_display_name: request.initial_device_display_name,
        inhibit_login: request.inhibit_login,
    }
}

pub(crate) fn register_request(message: pb::RegisterRequest) -> RegisterRequest {
    RegisterRequest {
        username: message.username,
        password: message.password,
        device_id: message.device_id,
        initial_device_display_name: message.initial_device_display_name,
        inhibit_login: message.inhibit_login,
    }
}

pub(crate) fn login_message(request: LoginRequest) -> pb::LoginRequest {
    pb::LoginRequest {
        user_id: request.user_id.into(),
        password: request.password,
        device_id: request.device_id,
        initial_device_display_name: request.initial_device_display_name,
    }
}

pub(crate) fn login_request(message: pb::LoginRequest) -> Result<LoginRequest, ConvertError> {
    Ok(LoginRequest {
        user_id: id("user_id", message.user_id)?,
        password: message.password,
        device_id: message.device_id,
        initial_device_display_name: message.initial_device_display_name,
    })
}

pub(crate) fn session_grant_message(grant: SessionGrant) -> pb::SessionGrant {
    pb::SessionGrant {
        user_id: grant.user_id.into(),
        access_token: grant.access_token,
        device_id: grant.device_id.map(Into::into),
    }
}

pub(crate) fn session_grant(message: pb::SessionGrant) -> Result<SessionGrant, ConvertError> {
    Ok(SessionGrant {
        user_id: id("user_id", message.user_id)?,
        access_token: message.access_token,
        device_id: optional_id("device_id", message.device_id)?,
    })
}

pub(crate) fn typing_snapshot_message(snapshot: TypingSnapshot) -> pb::TypingSnapshot {
    pb::TypingSnapshot {
        epoch: snapshot.epoch,
        position: snapshot.position.0,
        rooms: snapshot
            .rooms
            .into_iter()
            .map(|(room_id, user_ids)| pb::TypingRoom { room_id, user_ids })
            .collect(),
    }
}

pub(crate) fn typing_snapshot(message: pb::TypingSnapshot) -> TypingSnapshot {
    TypingSnapshot {
        epoch: message.epoch,
        position: StreamPosition(message.position),
        rooms: message.rooms.into_iter().map(|room| (room.room_id, room.user_ids)).collect(),
    }
}

pub(crate) fn create_room_message(sender: &OwnedUserId, request: CreateRoomRequest) -> pb::CreateRoomRequest {
    pb::CreateRoomRequest {
        sender: sender.to_string(),
        public: request.public,
        room_alias_name: request.room_alias_name,
        name: request.name,
        topic: request.topic,
        invite: request.invite.into_iter().map(Into::into).collect(),
        room_version: request.room_version.map(Into::into),
        creation_content_json: request.creation_content.map(object_json),
        initial_state: request
            .initial_state
            .into_iter()
            .map(|event| pb::InitialStateEvent {
                r#type: event.kind,
                state_key: event.state_key,
                content_json: object_json(event.content),
            })
            .collect(),
        preset: request.preset.map_or(pb::Preset::Unspecified, |preset| match preset {
            Preset::PrivateChat => pb::Preset::PrivateChat,
            Preset::PublicChat => pb::Preset::PublicChat,
            Preset::TrustedPrivateChat => pb::Preset::TrustedPrivateChat,
        }) as i32,
        is_direct: request.is_direct,
        power_level_content_override_json: request.power_level_content_override.map(object_json),
    }
}

pub(crate) fn create_room_request(
    message: pb::CreateRoomRequest,
) -> Result<(OwnedUserId, CreateRoomRequest), ConvertError> {
    let preset = match pb::Preset::try_from(message.preset) {
        Ok(pb::Preset::Unspecified) => None,
        Ok(pb::Preset::PrivateChat) => Some(Preset::PrivateChat),
        Ok(pb::Preset::PublicChat) => Some(Preset::PublicChat),
        Ok(pb::Preset::TrustedPrivateChat) => Some(Preset::TrustedPrivateChat),
        Err(_) => return Err(unknown_enum("preset", message.preset)),
    };
    let initial_state = message
        .initial_state
        .into_iter()
        .map(|event| {
            Ok(InitialStateEvent {
                kind: event.r#type,
                state_key: event.state_key,
                content: json_object("initial_state.content_json", &event.content_json)?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let request = CreateRoomRequest {
        public: message.public,
        room_alias_name: message.room_alias_name,
        name: message.name,
        topic: message.topic,
        invite: ids("invite", message.invite)?,
        room_version: optional_id("room_version", message.room_version)?,
        creation_content: message
            .creation_content_json
            .as_deref()
            .map(|text| json_object("creation_content_json", text))
            .transpose()?,
        initial_state,
        preset,
        is_direct: message.is_direct,
        power_level_content_override: message
            .power_level_content_override_json
            .as_deref()
            .map(|text| json_object("power_level_content_override_json", text))
            .transpose()?,
    };
    Ok((id("sender", message.sender)?, request))
}

pub(crate) fn event_template_message(template: EventTemplate) -> pb::EventTemplate {
    pb::EventTemplate {
        r#type: template.kind,
        content_json: template.content.to_string(),
        state_key: template.state_key,
        redacts: template.redacts.map(Into::into),
    }
}

pub(crate) fn event_template(message: Option<pb::EventTemplate>) -> Result<EventTemplate, ConvertError> {
    let message =
        message.ok_or(ConvertError::InvalidParam { field: "template", reason: "missing".to_owned() })?;
    Ok(EventTemplate {
        kind: message.r#type,
        content: json_value("template.content_json", &message.content_json)?,
        state_key: message.state_key,
        redacts: optional_id("template.redacts", message.redacts)?,
    })
}

pub(crate) fn membership_change_message(change: MembershipChange) -> pb::MembershipChange {
    match change {
        MembershipChange::Join => pb::MembershipChange::Join,
        MembershipChange::Invite => pb::MembershipChange::Invite,
        MembershipChange::Leave => pb::MembershipChange::Leave,
        MembershipChange::Kick => pb::MembershipChange::Kick,
        MembershipChange::Ban => pb::MembershipChange::Ban,
        MembershipChange::Unban => pb::MembershipChange::Unban,
    }
}

pub(crate) fn membership_change(value: i32) -> Result<MembershipChange, ConvertError> {
    match pb::MembershipChange::try_from(value) {
        Ok(pb::MembershipChange::Join) => Ok(MembershipChange::Join),
        Ok(pb::MembershipChange::Invite) => Ok(MembershipChange::Invite),
        Ok(pb::MembershipChange::Leave) => Ok(MembershipChange::Leave),
        Ok(pb::MembershipChange::Kick) => Ok(MembershipChange::Kick),
        Ok(pb::MembershipChange::Ban) => Ok(MembershipChange::Ban),
        Ok(pb::MembershipChange::Unban) => Ok(MembershipChange::Unban),
        Ok(pb::MembershipChange::Unspecified) | Err(_) => Err(unknown_enum("change", value)),
    }
}

pub(crate) fn profile_field_message(field: ProfileField) -> pb::ProfileField {
    match field {
        ProfileField::Displayname => pb::ProfileField::Displayname,
        ProfileField::AvatarUrl => pb::ProfileField::AvatarUrl,
    }
}

pub(crate) fn profile_field(value: i32) -> Result<ProfileField, ConvertError> {
    match pb::ProfileField::try_from(value) {
        Ok(pb::ProfileField::Displayname) => Ok(ProfileField::Displayname),
        Ok(pb::ProfileField::AvatarUrl) => Ok(ProfileField::AvatarUrl),
        Ok(pb::ProfileField::Unspecified) | Err(_) => Err(unknown_enum("field", value)),
    }
}

/// A status with the gRPC code a proxy or a generic client understands, and the exact class in
/// a `MasterFailure` in its details for a worker.
pub(crate) fn status_from_error(error: MasterError) -> Status {
    use pb::ErrorCode as Wire;
    let (class, code) = match &error.class {
        ErrorClass::Forbidden => (Wire::Forbidden, Code::PermissionDenied),
        ErrorClass::NotFound => (Wire::NotFound, Code::NotFound),
        ErrorClass::NotJson => (Wire::NotJson, Code::InvalidArgument),
        ErrorClass::BadJson => (Wire::BadJson, Code::InvalidArgument),
        ErrorClass::InvalidParam => (Wire::InvalidParam, Code::InvalidArgument),
        ErrorClass::MissingParam => (Wire::MissingParam, Code::InvalidArgument),
        ErrorClass::UserInUse => (Wire::UserInUse, Code::AlreadyExists),
        ErrorClass::InvalidUsername => (Wire::InvalidUsername, Code::InvalidArgument),
        ErrorClass::RoomInUse => (Wire::RoomInUse, Code::AlreadyExists),
        ErrorClass::AliasInUse => (Wire::AliasInUse, Code::AlreadyExists),
        ErrorClass::Unknown => (Wire::Unknown, Code::FailedPrecondition),
        ErrorClass::MissingToken => (Wire::MissingToken, Code::Unauthenticated),
        ErrorClass::UnknownToken => (Wire::UnknownToken, Code::Unauthenticated),
        ErrorClass::UserInteractiveAuth => (Wire::UserInteractiveAuth, Code::Unauthenticated),
        ErrorClass::LimitExceeded { .. } => (Wire::LimitExceeded, Code::ResourceExhausted),
        ErrorClass::TooLarge => (Wire::TooLarge, Code::InvalidArgument),
        ErrorClass::Unrecognized => (Wire::Unrecognized, Code::Unimplemented),
        ErrorClass::MethodNotAllowed => (Wire::MethodNotAllowed, Code::Unimplemented),
        ErrorClass::ServerManaged => (Wire::ServerManaged, Code::InvalidArgument),
        ErrorClass::UnsupportedRoomVersion => (Wire::UnsupportedRoomVersion, Code::InvalidArgument),
        ErrorClass::GuestAccessForbidden => (Wire::GuestAccessForbidden, Code::PermissionDenied),
        ErrorClass::Exclusive => (Wire::Exclusive, Code::PermissionDenied),
        ErrorClass::Unavailable => (Wire::Unavailable, Code::Unavailable),
        ErrorClass::Internal => (Wire::Internal, Code::Internal),
    };
    let retry_after_ms = match &error.class {
        ErrorClass::LimitExceeded { retry_after } => {
            u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)
        }
        _ => 0,
    };
    let failure = pb::MasterFailure { class: class as i32, message: error.message.clone(), retry_after_ms };
    Status::with_details(code, error.message, failure.encode_to_vec().into())
}

/// The master's own error when the status carries one; otherwise the call failed on the way
/// (transport, deadline, a proxy), and the worker reports the master as unavailable.
pub(crate) fn error_from_status(status: &Status) -> MasterError {
    if !status.details().is_empty()
        && let Ok(failure) = pb::MasterFailure::decode(status.details())
    {
        return match error_class(&failure) {
            Some(class) => MasterError::new(class, failure.message),
            // A class from a newer master that this worker cannot name.
            None => MasterError::internal(failure.message),
        };
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => unavailable(),
        code => MasterError::internal(format!("master call failed ({code:?}): {}", status.message())),
    }
}

fn error_class(failure: &pb::MasterFailure) -> Option<ErrorClass> {
    use pb::ErrorCode as Wire;
    Some(match Wire::try_from(failure.class).ok()? {
        Wire::Unspecified => return None,
        Wire::Forbidden => ErrorClass::Forbidden,
        Wire::NotFound => ErrorClass::NotFound,
        Wire::NotJson => ErrorClass::NotJson,
        Wire::BadJson => ErrorClass::BadJson,
        Wire::InvalidParam => ErrorClass::InvalidParam,
        Wire::MissingParam => ErrorClass::MissingParam,
        Wire::UserInUse => ErrorClass::UserInUse,
        Wire::InvalidUsername => ErrorClass::InvalidUsername,
        Wire::RoomInUse => ErrorClass::RoomInUse,
        Wire::AliasInUse => ErrorClass::AliasInUse,
        Wire::Unknown => ErrorClass::Unknown,
        Wire::MissingToken => ErrorClass::MissingToken,
        Wire::UnknownToken => ErrorClass::UnknownToken,
        Wire::UserInteractiveAuth => ErrorClass::UserInteractiveAuth,
        Wire::LimitExceeded => {
            ErrorClass::LimitExceeded { retry_after: Duration::from_millis(failure.retry_after_ms) }
        }
        Wire::TooLarge => ErrorClass::TooLarge,
        Wire::Unrecognized => ErrorClass::Unrecognized,
        Wire::MethodNotAllowed => ErrorClass::MethodNotAllowed,
        Wire::ServerManaged => ErrorClass::ServerManaged,
        Wire::UnsupportedRoomVersion => ErrorClass::UnsupportedRoomVersion,
        Wire::GuestAccessForbidden => ErrorClass::GuestAccessForbidden,
        Wire::Exclusive => ErrorClass::Exclusive,
        Wire::Unavailable => ErrorClass::Unavailable,
        Wire::Internal => ErrorClass::Internal,
    })
}
