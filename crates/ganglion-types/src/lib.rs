//! Vocabulary with no IO: stream kinds and positions, the sync token, roles, endpoint classes
//! and the closed set of error classes every error in Ganglion maps to.
//!
//! Nothing here talks to a database, a socket or a clock.

mod error;
mod nid;
mod stream;
mod token;

pub use error::{ErrorClass, HasErrorClass};
pub use nid::{BlockNid, EventNid, RoomNid, SnapshotNid, StateKeyNid, TypeNid};
pub use stream::{StreamKind, StreamPosition};
pub use token::{SyncToken, TokenParseError};

use serde::{Deserialize, Serialize};

/// A process role. `All` runs every role in one process (the embedded default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    All,
    Master,
    Sync,
    ClientReader,
    Media,
    FederationReader,
    /// Sends other servers what they are owed; serves no endpoint.
    FederationSender,
    /// Delivers notifications to push gateways; serves no endpoint.
    Pusher,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Master => "master",
            Role::Sync => "sync",
            Role::ClientReader => "client-reader",
            Role::Media => "media",
            Role::FederationReader => "federation-reader",
            Role::FederationSender => "federation-sender",
            Role::Pusher => "pusher",
        }
    }

    /// Whether a process of this role serves requests of `class`.
    pub fn serves(self, class: EndpointClass) -> bool {
        match self {
            Role::All => true,
            Role::Master => matches!(class, EndpointClass::WellKnown),
            Role::Sync => matches!(class, EndpointClass::Sync | EndpointClass::WellKnown),
            Role::ClientReader => matches!(
                class,
                EndpointClass::ClientRead
                    | EndpointClass::ClientWrite
                    | EndpointClass::Auth
                    | EndpointClass::WellKnown
            ),
            // Other servers' media requests need the media store.
            Role::Media => {
                matches!(
                    class,
                    EndpointClass::Media | EndpointClass::FederationMedia | EndpointClass::WellKnown
                )
            }
            Role::FederationReader => {
                matches!(class, EndpointClass::Federation | EndpointClass::Keys | EndpointClass::WellKnown)
            }
            Role::FederationSender | Role::Pusher => false,
        }
    }
}

/// Which of `shards` shards owns `key` (a destination server, a user): the same answer in every
/// process and every release, so processes that share work by it agree without talking.
/// `shards` must not be 0.
pub fn shard_of(key: &str, shards: usize) -> usize {
    // FNV-1a: stable, unlike std's randomly seeded hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

/// What kind of traffic an endpoint carries; the load balancer routes by it (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointClass {
    Sync,
    ClientRead,
    ClientWrite,
    Auth,
    Media,
    Federation,
    FederationMedia,
    Keys,
    Admin,
    WellKnown,
}

impl EndpointClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Sync => "sync",
            EndpointClass::ClientRead => "client_read",
            EndpointClass::ClientWrite => "client_write",
            EndpointClass::Auth => "auth",
            EndpointClass::Media => "media",
            EndpointClass::Federation => "federation",
            EndpointClass::FederationMedia => "federation_media",
            EndpointClass::Keys => "keys",
            EndpointClass::Admin => "admin",
            EndpointClass::WellKnown => "well_known",
        }
    }
}

#[cfg(test)]
mod tests;
