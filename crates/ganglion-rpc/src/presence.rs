//! The `Presence` service: a user's presence set by the client, devices that sync, and other
//! servers' users' presence as their servers report it.
//!
//! The master holds the live state and its timeouts; these calls only report what a worker saw.
//! Sync workers throttle `presence_syncing` per device, so a cluster of syncing users costs
//! the master about one call per device every third of `presence.offline_timeout_ms`.

use ganglion_events::{
    presence::PresenceState,
    ruma::{OwnedDeviceId, OwnedUserId},
};
use ganglion_proto::master::v1 as pb;

use crate::wire::{AfterCall, Call, ConvertError, id, unknown_enum};

service! {
    /// Presence updates from clients and from syncing devices.
    pub trait Presence: presence_server::Presence, presence_client::PresenceClient {
        fn set_presence(SetPresence) -> () as pb::Done;
        fn presence_syncing(PresenceSyncing) -> () as pb::Done;
        fn set_remote_presence(SetRemotePresence) -> () as pb::Done;
    }
}

fn state_message(state: PresenceState) -> i32 {
    match state {
        PresenceState::Online => pb::PresenceState::Online,
        PresenceState::Unavailable => pb::PresenceState::Unavailable,
        PresenceState::Offline => pb::PresenceState::Offline,
    }
    .into()
}

fn state_of(value: i32) -> Result<PresenceState, ConvertError> {
    match pb::PresenceState::try_from(value) {
        Ok(pb::PresenceState::Online) => Ok(PresenceState::Online),
        Ok(pb::PresenceState::Unavailable) => Ok(PresenceState::Unavailable),
        Ok(pb::PresenceState::Offline) => Ok(PresenceState::Offline),
        Ok(pb::PresenceState::Unspecified) | Err(_) => Err(unknown_enum("presence", value)),
    }
}

/// `PUT /presence/{userId}/status` from one of the user's devices.
#[derive(Debug, Clone)]
pub struct SetPresence {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub presence: PresenceState,
    /// `None` clears the status message.
    pub status_msg: Option<String>,
}

impl Call for SetPresence {
    type Message = pb::SetPresenceRequest;

    fn into_message(self) -> pb::SetPresenceRequest {
        pb::SetPresenceRequest {
            user_id: self.user_id.into(),
            device_id: self.device_id.into(),
            presence: state_message(self.presence),
            status_msg: self.status_msg,
        }
    }

    fn from_message(message: pb::SetPresenceRequest) -> Result<Self, ConvertError> {
        Ok(SetPresence {
            user_id: id("user_id", message.user_id)?,
            device_id: message.device_id.into(),
            presence: state_of(message.presence)?,
            status_msg: message.status_msg,
        })
    }

    fn after(&self) -> AfterCall {
        // The client may read its presence back at once.
        AfterCall::AwaitReplication
    }
}

/// A device is syncing with `presence` (`online` or `unavailable`; a sync with `offline`
/// changes nothing and is not reported).
#[derive(Debug, Clone)]
pub struct PresenceSyncing {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub presence: PresenceState,
}

impl Call for PresenceSyncing {
    type Message = pb::PresenceSyncingRequest;

    fn into_message(self) -> pb::PresenceSyncingRequest {
        pb::PresenceSyncingRequest {
            user_id: self.user_id.into(),
            device_id: self.device_id.into(),
            presence: state_message(self.presence),
        }
    }

    fn from_message(message: pb::PresenceSyncingRequest) -> Result<Self, ConvertError> {
        Ok(PresenceSyncing {
            user_id: id("user_id", message.user_id)?,
            device_id: message.device_id.into(),
            presence: state_of(message.presence)?,
        })
    }

    fn after(&self) -> AfterCall {
        // The sync that reported it shows the user's own new presence.
        AfterCall::AwaitReplication
    }
}

/// One user's presence in an `m.presence` EDU from their server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePresence {
    pub user_id: OwnedUserId,
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ago_ms: u64,
    pub currently_active: bool,
}

/// Other servers' users' presence, checked by the federation reader to belong to the server
/// that sent it.
#[derive(Debug, Clone)]
pub struct SetRemotePresence {
    pub updates: Vec<RemotePresence>,
}

impl Call for SetRemotePresence {
    type Message = pb::SetRemotePresenceRequest;

    fn into_message(self) -> pb::SetRemotePresenceRequest {
        let updates = self
            .updates
            .into_iter()
            .map(|update| pb::RemotePresence {
                user_id: update.user_id.into(),
                presence: state_message(update.presence),
                status_msg: update.status_msg,
                last_active_ago_ms: update.last_active_ago_ms,
                currently_active: update.currently_active,
            })
            .collect();
        pb::SetRemotePresenceRequest { updates }
    }

    fn from_message(message: pb::SetRemotePresenceRequest) -> Result<Self, ConvertError> {
        let updates = message
            .updates
            .into_iter()
            .map(|update| {
                Ok(RemotePresence {
                    user_id: id("user_id", update.user_id)?,
                    presence: state_of(update.presence)?,
                    status_msg: update.status_msg,
                    last_active_ago_ms: update.last_active_ago_ms,
                    currently_active: update.currently_active,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(SetRemotePresence { updates })
    }

    fn after(&self) -> AfterCall {
        // Its sender is another server, which reads nothing back.
        AfterCall::Nothing
    }
}
