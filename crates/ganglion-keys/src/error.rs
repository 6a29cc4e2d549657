//! Why an upload is refused, and the class the HTTP edge answers with.

use ganglion_types::{ErrorClass, HasErrorClass};

/// Why a key, signature or message a client sent is refused. `what` names the offending part as
/// a path into the request body (`device_keys.keys`, `one_time_keys.signed_curve25519:AAAAHg`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A field is missing or of the wrong type, or the JSON is not canonical (floats, integers
    /// beyond 2^53), so it could never be signed.
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
    /// A key names another user or device than the session's.
    #[error("{what} is {found}, not {expected}")]
    WrongOwner { what: String, expected: String, found: String },
    /// Well-formed JSON with a value the spec or our limits forbid.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// The signature the spec requires is absent or does not verify.
    #[error("{what} has no valid signature by {signer}")]
    InvalidSignature { what: String, signer: String },
    /// A self-signing or user-signing key came with no master key to check it against.
    #[error("no master signing key is available")]
    NoMasterKey,
    /// A signature was uploaded over an object that is not the key we hold for that id.
    #[error("{what} does not match the stored key")]
    KeyMismatch { what: String },
    #[error("{what} is {bytes} bytes, more than {max}")]
    TooLarge { what: String, bytes: usize, max: usize },
}

impl KeyError {
    pub(crate) fn malformed(what: &str, reason: impl Into<String>) -> KeyError {
        KeyError::Malformed { what: what.to_owned(), reason: reason.into() }
    }

    pub(crate) fn invalid(what: &str, reason: impl Into<String>) -> KeyError {
        KeyError::Invalid { what: what.to_owned(), reason: reason.into() }
    }
}

impl HasErrorClass for KeyError {
    fn class(&self) -> ErrorClass {
        match self {
            KeyError::Malformed { .. } => ErrorClass::BadJson,
            KeyError::WrongOwner { .. } | KeyError::Invalid { .. } | KeyError::KeyMismatch { .. } => {
                ErrorClass::InvalidParam
            }
            KeyError::InvalidSignature { .. } => ErrorClass::InvalidSignature,
            // The spec's `/keys/device_signing/upload` answers M_MISSING_PARAM here.
            KeyError::NoMasterKey => ErrorClass::MissingParam,
            KeyError::TooLarge { .. } => ErrorClass::TooLarge,
        }
    }
}
