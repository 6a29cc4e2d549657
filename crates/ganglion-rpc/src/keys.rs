//! The `Keys` service: end-to-end encryption keys and to-device messages.

use std::collections::BTreeMap;

use ganglion_events::ruma::{OwnedDeviceId, OwnedUserId};
use ganglion_proto::master::v1 as pb;
use serde_json::Value;

use crate::{
    MasterError,
    wire::{AfterCall, Answer, Call, ConvertError, id, json_value},
};

service! {
    /// Device keys, one-time and fallback keys, cross-signing keys and signatures, to-device.
    pub trait Keys: keys_server::Keys, keys_client::KeysClient {
        /// Stores a device's keys; answers its unclaimed one-time keys by algorithm.
        fn upload_keys(UploadKeys) -> OneTimeKeyCounts as pb::OneTimeKeyCounts;
        /// Hands out one key per claim: a one-time key, else the unused fallback key.
        fn claim_keys(ClaimKeys) -> Vec<ClaimedKey> as pb::ClaimKeysResponse;
        fn upload_signing_keys(UploadSigningKeys) -> () as pb::Done;
        /// Answers the signatures refused, for `/keys/signatures/upload`'s `failures`.
        fn upload_signatures(UploadSignatures) -> Vec<SignatureFailure> as pb::UploadSignaturesResponse;
        /// Idempotent per (sender, device, txn_id).
        fn send_to_device(SendToDevice) -> () as pb::Done;
        /// Other servers' users whose device lists changed: our users sharing a room with them
        /// see them in `device_lists.changed`.
        fn remote_device_lists_changed(RemoteDeviceListsChanged) -> () as pb::Done;
    }
}

#[derive(Debug, Clone)]
pub struct RemoteDeviceListsChanged {
    pub user_ids: Vec<OwnedUserId>,
}

impl Call for RemoteDeviceListsChanged {
    type Message = pb::RemoteDeviceListsChangedRequest;

    fn into_message(self) -> pb::RemoteDeviceListsChangedRequest {
        pb::RemoteDeviceListsChangedRequest { user_ids: self.user_ids.into_iter().map(Into::into).collect() }
    }

    fn from_message(message: pb::RemoteDeviceListsChangedRequest) -> Result<Self, ConvertError> {
        Ok(RemoteDeviceListsChanged { user_ids: crate::wire::ids("user_ids", message.user_ids)? })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }

    fn idempotent(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
pub struct UploadKeys {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub device_keys: Option<Value>,
    pub one_time_keys: Option<Value>,
    pub fallback_keys: Option<Value>,
}

fn optional_json(field: &'static str, text: Option<String>) -> Result<Option<Value>, ConvertError> {
    text.map(|text| json_value(field, &text)).transpose()
}

impl Call for UploadKeys {
    type Message = pb::UploadKeysRequest;

    fn into_message(self) -> pb::UploadKeysRequest {
        pb::UploadKeysRequest {
            user_id: self.user_id.into(),
            device_id: self.device_id.into(),
            device_keys_json: self.device_keys.map(|value| value.to_string()),
            one_time_keys_json: self.one_time_keys.map(|value| value.to_string()),
            fallback_keys_json: self.fallback_keys.map(|value| value.to_string()),
        }
    }

    fn from_message(message: pb::UploadKeysRequest) -> Result<Self, ConvertError> {
        Ok(UploadKeys {
            user_id: id("user_id", message.user_id)?,
            device_id: id("device_id", message.device_id)?,
            device_keys: optional_json("device_keys_json", message.device_keys_json)?,
            one_time_keys: optional_json("one_time_keys_json", message.one_time_keys_json)?,
            fallback_keys: optional_json("fallback_keys_json", message.fallback_keys_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        // New device keys change the user's device list, which the next sync reports.
        if self.device_keys.is_some() { AfterCall::AwaitReplication } else { AfterCall::Nothing }
    }
}

/// Unclaimed one-time keys of a device, by algorithm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneTimeKeyCounts(pub BTreeMap<String, u64>);

impl Answer<pb::OneTimeKeyCounts> for OneTimeKeyCounts {
    fn into_message(self) -> pb::OneTimeKeyCounts {
        pb::OneTimeKeyCounts { counts: self.0.into_iter().collect() }
    }

    fn from_message(message: pb::OneTimeKeyCounts) -> Result<Self, ConvertError> {
        Ok(OneTimeKeyCounts(message.counts.into_iter().collect()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub algorithm: String,
}

#[derive(Debug, Clone)]
pub struct ClaimKeys {
    pub claims: Vec<KeyClaim>,
}

impl Call for ClaimKeys {
    type Message = pb::ClaimKeysRequest;

    fn into_message(self) -> pb::ClaimKeysRequest {
        pb::ClaimKeysRequest {
            claims: self
                .claims
                .into_iter()
                .map(|claim| pb::KeyClaim {
                    user_id: claim.user_id.into(),
                    device_id: claim.device_id.into(),
                    algorithm: claim.algorithm,
                })
                .collect(),
        }
    }

    fn from_message(message: pb::ClaimKeysRequest) -> Result<Self, ConvertError> {
        let claims = message
            .claims
            .into_iter()
            .map(|claim| {
                Ok(KeyClaim {
                    user_id: id("claims.user_id", claim.user_id)?,
                    device_id: id("claims.device_id", claim.device_id)?,
                    algorithm: claim.algorithm,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(ClaimKeys { claims })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// One key handed out by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKey {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// `<algorithm>:<key id>`.
    pub key_id: String,
    pub key: Value,
}

impl Answer<pb::ClaimKeysResponse> for Vec<ClaimedKey> {
    fn into_message(self) -> pb::ClaimKeysResponse {
        pb::ClaimKeysResponse {
            keys: self
                .into_iter()
                .map(|key| pb::ClaimedKey {
                    user_id: key.user_id.into(),
                    device_id: key.device_id.into(),
                    key_id: key.key_id,
                    key_json: key.key.to_string(),
                })
                .collect(),
        }
    }

    fn from_message(message: pb::ClaimKeysResponse) -> Result<Self, ConvertError> {
        message
            .keys
            .into_iter()
            .map(|key| {
                Ok(ClaimedKey {
                    user_id: id("keys.user_id", key.user_id)?,
                    device_id: id("keys.device_id", key.device_id)?,
                    key_id: key.key_id,
                    key: json_value("keys.key_json", &key.key_json)?,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct UploadSigningKeys {
    pub user_id: OwnedUserId,
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    pub user_signing_key: Option<Value>,
}

impl Call for UploadSigningKeys {
    type Message = pb::UploadSigningKeysRequest;

    fn into_message(self) -> pb::UploadSigningKeysRequest {
        pb::UploadSigningKeysRequest {
            user_id: self.user_id.into(),
            master_key_json: self.master_key.map(|value| value.to_string()),
            self_signing_key_json: self.self_signing_key.map(|value| value.to_string()),
            user_signing_key_json: self.user_signing_key.map(|value| value.to_string()),
        }
    }

    fn from_message(message: pb::UploadSigningKeysRequest) -> Result<Self, ConvertError> {
        Ok(UploadSigningKeys {
            user_id: id("user_id", message.user_id)?,
            master_key: optional_json("master_key_json", message.master_key_json)?,
            self_signing_key: optional_json("self_signing_key_json", message.self_signing_key_json)?,
            user_signing_key: optional_json("user_signing_key_json", message.user_signing_key_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

#[derive(Debug, Clone)]
pub struct UploadSignatures {
    pub user_id: OwnedUserId,
    /// The request body: user id → key id → signed object.
    pub signatures: Value,
}

impl Call for UploadSignatures {
    type Message = pb::UploadSignaturesRequest;

    fn into_message(self) -> pb::UploadSignaturesRequest {
        pb::UploadSignaturesRequest {
            user_id: self.user_id.into(),
            signatures_json: self.signatures.to_string(),
        }
    }

    fn from_message(message: pb::UploadSignaturesRequest) -> Result<Self, ConvertError> {
        Ok(UploadSignatures {
            user_id: id("user_id", message.user_id)?,
            signatures: json_value("signatures_json", &message.signatures_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

/// A signature the master refused: the signed key's owner and id, and why.
#[derive(Debug, Clone)]
pub struct SignatureFailure {
    pub user_id: String,
    /// A device id or a cross-signing public key.
    pub key_id: String,
    pub error: MasterError,
}

impl Answer<pb::UploadSignaturesResponse> for Vec<SignatureFailure> {
    fn into_message(self) -> pb::UploadSignaturesResponse {
        let failures = self
            .into_iter()
            .map(|failure| pb::SignatureFailure {
                user_id: failure.user_id,
                key_id: failure.key_id,
                failure: Some(crate::grpc::failure_of(&failure.error).0),
            })
            .collect();
        pb::UploadSignaturesResponse { failures }
    }

    fn from_message(message: pb::UploadSignaturesResponse) -> Result<Self, ConvertError> {
        Ok(message
            .failures
            .into_iter()
            .map(|failure| SignatureFailure {
                user_id: failure.user_id,
                key_id: failure.key_id,
                error: failure.failure.map_or_else(
                    || MasterError::internal("a refused signature without its error"),
                    crate::grpc::error_of_failure,
                ),
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct SendToDevice {
    pub sender: OwnedUserId,
    pub sender_device: OwnedDeviceId,
    pub event_type: String,
    pub txn_id: String,
    /// The request body: `{"messages": {user id: {device id or "*": content}}}`.
    pub body: Value,
}

impl Call for SendToDevice {
    type Message = pb::SendToDeviceRequest;

    fn into_message(self) -> pb::SendToDeviceRequest {
        pb::SendToDeviceRequest {
            sender: self.sender.into(),
            sender_device: self.sender_device.into(),
            event_type: self.event_type,
            txn_id: self.txn_id,
            body_json: self.body.to_string(),
        }
    }

    fn from_message(message: pb::SendToDeviceRequest) -> Result<Self, ConvertError> {
        Ok(SendToDevice {
            sender: id("sender", message.sender)?,
            sender_device: id("sender_device", message.sender_device)?,
            event_type: message.event_type,
            txn_id: message.txn_id,
            body: json_value("body_json", &message.body_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        // The sender never reads its messages back; recipients learn of them by replication.
        AfterCall::Nothing
    }

    fn idempotent(&self) -> bool {
        true
    }
}
