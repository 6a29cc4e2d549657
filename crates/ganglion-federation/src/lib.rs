//! Talking to other homeservers, for every role that does: the server's own key answer
//! (`own_keys`), a key ring of other servers' keys (`keyring`), X-Matrix request authentication
//! both ways (`request_auth`, `client`), finding a server from its name (`discovery`) and the
//! TLS of the federation listener (`tls`).
//!
//! Nothing here knows HTTP routes or the master: the federation API crate serves, the roles
//! compose.

pub mod client;
pub mod discovery;
pub mod keyring;
pub mod own_keys;
pub mod pdu;
pub mod policy;
pub mod remote_invite;
pub mod remote_join;
pub mod request_auth;
pub mod tls;

use std::sync::Arc;

pub use client::FederationClient;
pub use discovery::Discovery;
pub use keyring::KeyRing;
pub use policy::ServerPolicy;

/// Why a request to another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The server's name or the address it resolves to is not one this server contacts.
    #[error("{destination} is not contacted: {reason}")]
    Refused { destination: String, reason: String },
    /// No answer: DNS, connection, TLS or timeout.
    #[error("{destination} cannot be reached: {message}")]
    Unreachable { destination: String, message: String },
    /// The server answered with an error.
    #[error("{destination} answered {status}: {errcode} {error}")]
    Remote { destination: String, status: u16, errcode: String, error: String },
    /// The server answered something that is not what the spec says it answers.
    #[error("{destination} answered unexpectedly: {message}")]
    BadResponse { destination: String, message: String },
    #[error("storage: {0}")]
    Storage(#[from] ganglion_storage::StorageError),
    /// A room of a version this server does not take part in.
    #[error("the room's version {0} is not supported by this server")]
    UnsupportedRoomVersion(String),
}

impl ganglion_types::HasErrorClass for FederationError {
    fn class(&self) -> ganglion_types::ErrorClass {
        use ganglion_types::ErrorClass;
        match self {
            FederationError::Refused { .. } => ErrorClass::Forbidden,
            FederationError::Remote { status: 404, .. } => ErrorClass::NotFound,
            // The room's version is one this server did not offer to join with.
            FederationError::Remote { errcode, .. } if errcode == "M_INCOMPATIBLE_ROOM_VERSION" => {
                ErrorClass::UnsupportedRoomVersion
            }
            FederationError::Remote { status: 403, .. } => ErrorClass::Forbidden,
            FederationError::Remote { .. }
            | FederationError::Unreachable { .. }
            | FederationError::BadResponse { .. } => ErrorClass::BadGateway,
            FederationError::Storage(error) => error.class(),
            FederationError::UnsupportedRoomVersion(_) => ErrorClass::UnsupportedRoomVersion,
        }
    }
}

/// What every part that talks to other servers shares.
#[derive(Clone)]
pub struct Federation {
    pub client: Arc<FederationClient>,
    pub keyring: Arc<KeyRing>,
    /// Which servers this one federates with (reloaded on SIGHUP).
    pub policy: Arc<ServerPolicy>,
}

impl Federation {
    /// The client and the key ring of a process, from its config and signing key.
    pub fn new(
        config: &ganglion_config::Config,
        key: Arc<ganglion_events::ServerKey>,
        db: ganglion_storage::Db,
    ) -> Result<Federation, FederationError> {
        let discovery = Arc::new(Discovery::new(&config.federation)?);
        let policy = Arc::new(ServerPolicy::new(&config.server_name, &config.federation));
        let client = Arc::new(FederationClient::new(
            &config.server_name,
            key.clone(),
            discovery,
            policy.clone(),
            &config.federation,
        )?);
        let keyring = Arc::new(KeyRing::new(db, client.clone(), key, &config.federation));
        Ok(Federation { client, keyring, policy })
    }
}

pub(crate) fn now_ms() -> i64 {
    ganglion_storage::now_ms()
}
