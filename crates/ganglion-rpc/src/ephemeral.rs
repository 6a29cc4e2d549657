//! The `Ephemeral` service: typing, receipts and account data, the per-user streams.

use ganglion_events::{
    push_rules::RuleChange,
    ruma::{OwnedEventId, OwnedRoomId, OwnedUserId},
};
use ganglion_proto::master::v1 as pb;
use serde_json::Value;

use crate::wire::{AfterCall, Call, ConvertError, id, json_value, optional_id};

service! {
    /// Typing, receipts and account data.
    pub trait Ephemeral: ephemeral_server::Ephemeral, ephemeral_client::EphemeralClient {
        fn set_typing(SetTyping) -> () as pb::Done;
        fn set_receipt(SetReceipt) -> () as pb::Done;
        fn set_account_data(SetAccountData) -> () as pb::Done;
        fn update_push_rules(UpdatePushRules) -> () as pb::Done;
        fn set_pusher(SetPusher) -> () as pb::Done;
        fn set_room_tag(SetRoomTag) -> () as pb::Done;
    }
}

#[derive(Debug, Clone)]
pub struct SetTyping {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub typing: bool,
    pub timeout_ms: u64,
}

impl Call for SetTyping {
    type Message = pb::SetTypingRequest;

    fn into_message(self) -> pb::SetTypingRequest {
        pb::SetTypingRequest {
            user_id: self.user_id.into(),
            room_id: self.room_id.into(),
            typing: self.typing,
            timeout_ms: self.timeout_ms,
        }
    }

    fn from_message(message: pb::SetTypingRequest) -> Result<Self, ConvertError> {
        Ok(SetTyping {
            user_id: id("user_id", message.user_id)?,
            room_id: id("room_id", message.room_id)?,
            typing: message.typing,
            timeout_ms: message.timeout_ms,
        })
    }

    fn after(&self) -> AfterCall {
        // Typing is ephemeral and may only reach a worker through Redis: never wait on it.
        AfterCall::Nothing
    }
}

#[derive(Debug, Clone)]
pub struct SetReceipt {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub receipt_type: String,
    pub event_id: OwnedEventId,
    pub thread_id: Option<String>,
    /// When another server's user sent it (`data.ts`); `None` for ours: the master's clock.
    pub ts: Option<i64>,
}

impl Call for SetReceipt {
    type Message = pb::SetReceiptRequest;

    fn into_message(self) -> pb::SetReceiptRequest {
        pb::SetReceiptRequest {
            user_id: self.user_id.into(),
            room_id: self.room_id.into(),
            receipt_type: self.receipt_type,
            event_id: self.event_id.into(),
            thread_id: self.thread_id,
            ts: self.ts,
        }
    }

    fn from_message(message: pb::SetReceiptRequest) -> Result<Self, ConvertError> {
        Ok(SetReceipt {
            user_id: id("user_id", message.user_id)?,
            room_id: id("room_id", message.room_id)?,
            receipt_type: message.receipt_type,
            event_id: id("event_id", message.event_id)?,
            thread_id: message.thread_id,
            ts: message.ts,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

#[derive(Debug, Clone)]
pub struct SetAccountData {
    pub user_id: OwnedUserId,
    /// `None` for global account data.
    pub room_id: Option<OwnedRoomId>,
    pub data_type: String,
    pub content: Value,
}

impl Call for SetAccountData {
    type Message = pb::SetAccountDataRequest;

    fn into_message(self) -> pb::SetAccountDataRequest {
        pb::SetAccountDataRequest {
            user_id: self.user_id.into(),
            room_id: self.room_id.map(Into::into),
            data_type: self.data_type,
            content_json: self.content.to_string(),
        }
    }

    fn from_message(message: pb::SetAccountDataRequest) -> Result<Self, ConvertError> {
        Ok(SetAccountData {
            user_id: id("user_id", message.user_id)?,
            room_id: optional_id("room_id", message.room_id)?,
            data_type: message.data_type,
            content: json_value("content_json", &message.content_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

/// A change to a user's push rules, applied by the master (the single writer of `m.push_rules`).
#[derive(Debug, Clone)]
pub struct UpdatePushRules {
    pub user_id: OwnedUserId,
    pub change: RuleChange,
}

impl Call for UpdatePushRules {
    type Message = pb::UpdatePushRulesRequest;

    fn into_message(self) -> pb::UpdatePushRulesRequest {
        pb::UpdatePushRulesRequest {
            user_id: self.user_id.into(),
            change_json: serde_json::to_string(&self.change).unwrap_or_default(),
        }
    }

    fn from_message(message: pb::UpdatePushRulesRequest) -> Result<Self, ConvertError> {
        let change = serde_json::from_str(&message.change_json)
            .map_err(|error| ConvertError::Json { field: "change_json", reason: error.to_string() })?;
        Ok(UpdatePushRules { user_id: id("user_id", message.user_id)?, change })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

/// `POST /pushers/set`, its body checked by the worker: adds, updates or (`kind: null`)
/// deletes one of the user's pushers.
#[derive(Debug, Clone)]
pub struct SetPusher {
    pub user_id: OwnedUserId,
    pub body: Value,
}

impl Call for SetPusher {
    type Message = pb::SetPusherRequest;

    fn into_message(self) -> pb::SetPusherRequest {
        pb::SetPusherRequest { user_id: self.user_id.into(), body_json: self.body.to_string() }
    }

    fn from_message(message: pb::SetPusherRequest) -> Result<Self, ConvertError> {
        Ok(SetPusher {
            user_id: id("user_id", message.user_id)?,
            body: json_value("body_json", &message.body_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// One of a user's tags on a room set (`content: Some`, the tag's object) or removed (`None`):
/// the master changes that tag of their `m.tag` account data, so concurrent changes of other
/// tags are all kept.
#[derive(Debug, Clone)]
pub struct SetRoomTag {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub tag: String,
    pub content: Option<Value>,
}

impl Call for SetRoomTag {
    type Message = pb::SetRoomTagRequest;

    fn into_message(self) -> pb::SetRoomTagRequest {
        pb::SetRoomTagRequest {
            user_id: self.user_id.into(),
            room_id: self.room_id.into(),
            tag: self.tag,
            content_json: self.content.map(|content| content.to_string()),
        }
    }

    fn from_message(message: pb::SetRoomTagRequest) -> Result<Self, ConvertError> {
        let content = match message.content_json {
            Some(text) => Some(json_value("content_json", &text)?),
            None => None,
        };
        Ok(SetRoomTag {
            user_id: id("user_id", message.user_id)?,
            room_id: id("room_id", message.room_id)?,
            tag: message.tag,
            content,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}
