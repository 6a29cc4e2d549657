//! Matrix errors: the one place an [`ErrorClass`] becomes an HTTP status and errcode.

use std::fmt::Display;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use ganglion_types::{ErrorClass, HasErrorClass};
use http::StatusCode;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct MatrixError {
    pub class: ErrorClass,
    pub message: String,
    /// Extra top-level fields (UIA `flows`/`session`, …). `retry_after_ms` and `current_version`
    /// come from the class.
    pub extra: Map<String, Value>,
}

pub type MatrixResult<T> = Result<T, MatrixError>;

impl MatrixError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> MatrixError {
        MatrixError { class, message: message.into(), extra: Map::new() }
    }

    pub fn with(mut self, key: &str, value: Value) -> MatrixError {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn forbidden(message: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrorClass::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrorClass::NotFound, message)
    }

    pub fn bad_json(message: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrorClass::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrorClass::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrorClass::MissingParam, message)
    }

    pub fn unrecognized() -> MatrixError {
        MatrixError::new(ErrorClass::Unrecognized, "Unrecognized request")
    }

    pub fn internal(message: impl Into<String>) -> MatrixError {
        MatrixError::new(ErrorClass::Internal, message)
    }

    /// HTTP status and errcode for a class. Every error the server returns goes through here.
    pub fn status_and_errcode(class: &ErrorClass) -> (StatusCode, &'static str) {
        match class {
            ErrorClass::Forbidden => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            ErrorClass::NotFound => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            ErrorClass::NotJson => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            ErrorClass::BadJson => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            ErrorClass::InvalidParam => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            ErrorClass::MissingParam => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
            ErrorClass::UserInUse => (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
            ErrorClass::InvalidUsername => (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
            ErrorClass::RoomInUse => (StatusCode::BAD_REQUEST, "M_ROOM_IN_USE"),
            ErrorClass::AliasInUse => (StatusCode::CONFLICT, "M_UNKNOWN"),
            ErrorClass::Unknown => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            ErrorClass::MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            ErrorClass::UnknownToken => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            ErrorClass::Unauthorized => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            ErrorClass::UserInteractiveAuth => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
            ErrorClass::LimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            ErrorClass::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            ErrorClass::Unrecognized => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            ErrorClass::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            ErrorClass::ServerManaged => (StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
            ErrorClass::InvalidSignature => (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
            ErrorClass::UnsupportedRoomVersion => (StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
            ErrorClass::IncompatibleRoomVersion { .. } => {
                (StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION")
            }
            ErrorClass::GuestAccessForbidden => (StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            ErrorClass::ThreepidDenied => (StatusCode::FORBIDDEN, "M_THREEPID_DENIED"),
            ErrorClass::DuplicateAnnotation => (StatusCode::BAD_REQUEST, "M_DUPLICATE_ANNOTATION"),
            ErrorClass::BadAlias => (StatusCode::BAD_REQUEST, "M_BAD_ALIAS"),
            ErrorClass::Exclusive => (StatusCode::BAD_REQUEST, "M_EXCLUSIVE"),
            ErrorClass::WrongRoomKeysVersion { .. } => (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
            ErrorClass::UnknownPos => (StatusCode::BAD_REQUEST, "M_UNKNOWN_POS"),
            ErrorClass::CannotOverwriteMedia => (StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
            ErrorClass::NotYetUploaded => (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
            ErrorClass::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            ErrorClass::BadGateway => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            ErrorClass::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }
}

impl<E: HasErrorClass + Display> From<E> for MatrixError {
    fn from(error: E) -> MatrixError {
        let class = error.class();
        if class == ErrorClass::Internal {
            tracing::error!(%error, "internal error");
            return MatrixError::new(class, "Internal server error");
        }
        MatrixError::new(class, error.to_string())
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let (status, errcode) = MatrixError::status_and_errcode(&self.class);
        let mut body = Map::new();
        // A UIA challenge is a bare flows object unless it reports a failed stage.
        if self.class != ErrorClass::UserInteractiveAuth || !self.message.is_empty() {
            body.insert("errcode".into(), json!(errcode));
            body.insert("error".into(), json!(self.message));
        }
        if let ErrorClass::LimitExceeded { retry_after } = &self.class {
            body.insert("retry_after_ms".into(), json!(retry_after.as_millis() as u64));
        }
        if let ErrorClass::WrongRoomKeysVersion { current_version } = &self.class {
            body.insert("current_version".into(), json!(current_version));
        }
        if let ErrorClass::IncompatibleRoomVersion { room_version } = &self.class {
            body.insert("room_version".into(), json!(room_version));
        }
        body.extend(self.extra);
        let mut response = (status, Json(Value::Object(body))).into_response();
        if let ErrorClass::LimitExceeded { retry_after } = &self.class {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(value) = http::HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}
