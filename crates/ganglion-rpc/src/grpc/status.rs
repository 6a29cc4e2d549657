//! Errors across the wire: a `MasterError` becomes a status carrying a `MasterFailure`, and a
//! status becomes the master's own error again, or `Unavailable` when the call failed on the way.

use std::time::Duration;

use ganglion_proto::master::v1 as pb;
use ganglion_types::ErrorClass;
use prost::Message;
use tonic::{Code, Status};

use crate::{ConvertError, MasterError};

/// Shown to the Matrix client whenever the master cannot be reached or did not answer in time.
pub(crate) const UNAVAILABLE_MESSAGE: &str = "The master is unavailable; try again shortly";

pub(crate) fn unavailable() -> MasterError {
    MasterError::new(ErrorClass::Unavailable, UNAVAILABLE_MESSAGE)
}

/// For the client: the master answered something this worker cannot read.
pub fn invalid_answer(error: ConvertError) -> MasterError {
    MasterError::internal(format!("the master's answer is invalid: {error}"))
}

/// A status with the gRPC code a proxy or a generic client understands, and the exact class in
/// a `MasterFailure` in its details for a worker.
pub(crate) fn status_from_error(error: MasterError) -> Status {
    let (failure, code) = failure_of(&error);
    Status::with_details(code, error.message, failure.encode_to_vec().into())
}

/// The `MasterFailure` naming `error` exactly, and the gRPC code closest to its class.
pub(crate) fn failure_of(error: &MasterError) -> (pb::MasterFailure, Code) {
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
        ErrorClass::InvalidSignature => (Wire::InvalidSignature, Code::InvalidArgument),
        ErrorClass::UnsupportedRoomVersion => (Wire::UnsupportedRoomVersion, Code::InvalidArgument),
        ErrorClass::GuestAccessForbidden => (Wire::GuestAccessForbidden, Code::PermissionDenied),
        ErrorClass::Exclusive => (Wire::Exclusive, Code::PermissionDenied),
        ErrorClass::DuplicateAnnotation => (Wire::DuplicateAnnotation, Code::AlreadyExists),
        ErrorClass::BadAlias => (Wire::BadAlias, Code::InvalidArgument),
        ErrorClass::WrongRoomKeysVersion { .. } => (Wire::WrongRoomKeysVersion, Code::FailedPrecondition),
        ErrorClass::IncompatibleRoomVersion { .. } => (Wire::IncompatibleRoomVersion, Code::InvalidArgument),
        // Answered by the workers themselves (sync, media, the client's third-party
        // identifiers), never by the master.
        ErrorClass::UnknownPos
        | ErrorClass::ThreepidDenied
        | ErrorClass::CannotOverwriteMedia
        | ErrorClass::NotYetUploaded
        | ErrorClass::Unauthorized
        | ErrorClass::BadGateway => (Wire::Unknown, Code::FailedPrecondition),
        ErrorClass::Unavailable => (Wire::Unavailable, Code::Unavailable),
        ErrorClass::Internal => (Wire::Internal, Code::Internal),
    };
    let retry_after_ms = match &error.class {
        ErrorClass::LimitExceeded { retry_after } => {
            u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)
        }
        _ => 0,
    };
    let current_version = match &error.class {
        ErrorClass::WrongRoomKeysVersion { current_version } => current_version.clone(),
        ErrorClass::IncompatibleRoomVersion { room_version } => room_version.clone(),
        _ => String::new(),
    };
    let failure = pb::MasterFailure {
        class: class as i32,
        message: error.message.clone(),
        retry_after_ms,
        current_version,
    };
    (failure, code)
}

/// The master's error a `MasterFailure` names (`Internal` for a class this worker cannot name).
pub(crate) fn error_of_failure(failure: pb::MasterFailure) -> MasterError {
    match error_class(&failure) {
        Some(class) => MasterError::new(class, failure.message),
        // A class from a newer master that this worker cannot name.
        None => MasterError::internal(failure.message),
    }
}

/// The master's own error when the status carries one; otherwise the call failed on the way
/// (transport, deadline, a proxy), and the worker reports the master as unavailable.
pub(crate) fn error_from_status(status: &Status) -> MasterError {
    if !status.details().is_empty()
        && let Ok(failure) = pb::MasterFailure::decode(status.details())
    {
        return error_of_failure(failure);
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
        Wire::InvalidSignature => ErrorClass::InvalidSignature,
        Wire::UnsupportedRoomVersion => ErrorClass::UnsupportedRoomVersion,
        Wire::GuestAccessForbidden => ErrorClass::GuestAccessForbidden,
        Wire::Exclusive => ErrorClass::Exclusive,
        Wire::DuplicateAnnotation => ErrorClass::DuplicateAnnotation,
        Wire::BadAlias => ErrorClass::BadAlias,
        Wire::IncompatibleRoomVersion => {
            ErrorClass::IncompatibleRoomVersion { room_version: failure.current_version.clone() }
        }
        Wire::WrongRoomKeysVersion => {
            ErrorClass::WrongRoomKeysVersion { current_version: failure.current_version.clone() }
        }
        Wire::Unavailable => ErrorClass::Unavailable,
        Wire::Internal => ErrorClass::Internal,
    })
}
