//! The `Streams` service: what a starting worker reads from the master. Both calls are reads,
//! so the trait is written out rather than declared with `service!`.

use async_trait::async_trait;
use ganglion_proto::master::v1 as pb;
use ganglion_types::{StreamPosition, SyncToken};

use crate::{
    MasterResult,
    wire::{Answer, ConvertError},
};

#[async_trait]
pub trait Streams: Send + Sync + 'static {
    /// The positions every stream has been committed and published up to.
    async fn positions(&self) -> MasterResult<SyncToken>;
    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot>;
}

/// The typing stream as the master holds it: workers start from this and follow the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypingSnapshot {
    /// Identifies the master's run; typing positions restart with it.
    pub epoch: u64,
    pub position: StreamPosition,
    /// Rooms where someone is typing, with the users typing, sorted.
    pub rooms: Vec<(String, Vec<String>)>,
}

impl Answer<pb::TypingSnapshot> for TypingSnapshot {
    fn into_message(self) -> pb::TypingSnapshot {
        pb::TypingSnapshot {
            epoch: self.epoch,
            position: self.position.0,
            rooms: self
                .rooms
                .into_iter()
                .map(|(room_id, user_ids)| pb::TypingRoom { room_id, user_ids })
                .collect(),
        }
    }

    fn from_message(message: pb::TypingSnapshot) -> Result<TypingSnapshot, ConvertError> {
        Ok(TypingSnapshot {
            epoch: message.epoch,
            position: StreamPosition(message.position),
            rooms: message.rooms.into_iter().map(|room| (room.room_id, room.user_ids)).collect(),
        })
    }
}

impl Answer<pb::PositionsResponse> for SyncToken {
    fn into_message(self) -> pb::PositionsResponse {
        pb::PositionsResponse { sync_token: self.to_string() }
    }

    fn from_message(message: pb::PositionsResponse) -> Result<SyncToken, ConvertError> {
        SyncToken::parse(&message.sync_token)
            .map_err(|error| ConvertError::InvalidParam { field: "sync_token", reason: error.to_string() })
    }
}
