//! The closed set of error classes. Every library error reports one; `ganglion-http` maps each
//! class to an HTTP status and Matrix errcode in a single `match`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is not allowed (auth rules, power levels, membership).
    Forbidden,
    NotFound,
    /// The body is not JSON.
    NotJson,
    /// The body is JSON but not of the expected shape.
    BadJson,
    /// A parameter has an invalid value.
    InvalidParam,
    MissingParam,
    UserInUse,
    InvalidUsername,
    RoomInUse,
    /// The alias is taken (409).
    AliasInUse,
    /// A request that is well-formed but not valid now (400 `M_UNKNOWN`).
    Unknown,
    MissingToken,
    UnknownToken,
    /// A federation request whose X-Matrix signature is missing or does not verify (401
    /// `M_UNAUTHORIZED`).
    Unauthorized,
    /// The request needs user-interactive authentication; carries the session id.
    UserInteractiveAuth,
    LimitExceeded {
        retry_after: Duration,
    },
    TooLarge,
    Unrecognized,
    MethodNotAllowed,
    /// Data only the server may write through this endpoint (405 `M_BAD_JSON`, as the spec
    /// says for `m.push_rules` and `m.fully_read` account data).
    ServerManaged,
    /// A signature on uploaded keys does not verify (400 `M_INVALID_SIGNATURE`).
    InvalidSignature,
    UnsupportedRoomVersion,
    /// A server asked to join a room whose version it does not support (400
    /// `M_INCOMPATIBLE_ROOM_VERSION`); the answer names the room's version.
    IncompatibleRoomVersion {
        room_version: String,
    },
    GuestAccessForbidden,
    /// This server takes no third-party identifier (email, phone) as a contact.
    ThreepidDenied,
    /// A second annotation with the same key on the same event by the same user (400
    /// `M_DUPLICATE_ANNOTATION`).
    DuplicateAnnotation,
    /// An `m.room.canonical_alias` naming an alias that does not point to the room (400
    /// `M_BAD_ALIAS`).
    BadAlias,
    Exclusive,
    /// A key backup write named a backup version that is not the user's current one (403
    /// `M_WRONG_ROOM_KEYS_VERSION`); the answer names the current version.
    WrongRoomKeysVersion {
        current_version: String,
    },
    /// A sliding sync `pos` this server does not know (expired, or from another worker or an
    /// earlier process): the client starts its connection over (400 `M_UNKNOWN_POS`).
    UnknownPos,
    /// An upload to a media id that already has its content (409 `M_CANNOT_OVERWRITE_MEDIA`).
    CannotOverwriteMedia,
    /// A download of a media id whose content has not arrived in time (504 `M_NOT_YET_UPLOADED`).
    NotYetUploaded,
    /// The request needs a dependency that is down (e.g. the master); retry later.
    Unavailable,
    /// Something the server fetched for the request failed (a URL to preview): 502 `M_UNKNOWN`.
    BadGateway,
    Internal,
}

pub trait HasErrorClass {
    fn class(&self) -> ErrorClass;
}
