//! [`RemoteMaster`]: the [`Master`] trait over gRPC, for workers in cluster mode.
//!
//! Every call carries a deadline and the caller's trace context. Only `send_event` with a device
//! and a transaction id is retried, because the master deduplicates it; any other call may have
//! taken effect even when its answer was lost.

use std::{future::Future, net::SocketAddr, time::Duration};

use async_trait::async_trait;
use ganglion_events::{
    EventTemplate,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId},
};
use ganglion_proto::master::v1::{self as pb, master_client::MasterClient};
use ganglion_types::{ErrorClass, SyncToken};
use serde_json::Value;
use tokio::time::Instant;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint, Uri},
};

use super::{POSITIONS, TRACEPARENT, convert::*};
use crate::{
    CreateRoomRequest, LoginRequest, Master, MasterResult, MembershipChange, ProfileField, RegisterRequest,
    SessionGrant, TypingSnapshot, trace,
};

/// Beyond this a master that does not accept connections counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idempotent calls get this many attempts within twice the call timeout.
const ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// The generated client method `$method` as a closure for [`RemoteMaster::call`].
macro_rules! rpc {
    ($method:ident) => {
        |mut client: MasterClient<Channel>, request| async move { client.$method(request).await }
    };
}

/// A [`Master`] in another process. Cheap to share; one HTTP/2 connection carries every call.
#[derive(Debug, Clone)]
pub struct RemoteMaster {
    client: MasterClient<Channel>,
    timeout: Duration,
}

impl RemoteMaster {
    /// Connects lazily, so a master that is down (or not up yet) fails calls with `Unavailable`
    /// rather than the worker's start; the channel reconnects by itself when it comes back.
    /// Each call waits at most `timeout`. Must be called within a Tokio runtime.
    pub fn new(address: SocketAddr, timeout: Duration) -> RemoteMaster {
        // Rebuilt without an IPv6 scope id, which a URI cannot carry.
        let authority = SocketAddr::new(address.ip(), address.port()).to_string();
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/")
            .build()
            .expect("a socket address is a valid URI authority");
        let channel = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Pings find a dead master (or a silently dropped connection) between calls too.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        RemoteMaster { client: MasterClient::new(channel), timeout }
    }

    /// One attempt: never retried, since the master may have acted on a call whose answer was lost.
    async fn call<Req, Res, Fut>(
        &self,
        message: Req,
        rpc: impl FnOnce(MasterClient<Channel>, Request<Req>) -> Fut,
    ) -> MasterResult<Res>
    where
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        self.attempt(message, self.timeout, rpc).await
    }

    /// Retries an idempotent call while the master is unavailable, within twice the timeout.
    async fn call_idempotent<Req: Clone, Res, Fut>(
        &self,
        message: Req,
        rpc: impl Fn(MasterClient<Channel>, Request<Req>) -> Fut,
    ) -> MasterResult<Res>
    where
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        let deadline = Instant::now() + 2 * self.timeout;
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.attempt(message.clone(), self.timeout.min(remaining), &rpc).await {
                Err(error) if error.class == ErrorClass::Unavailable && attempt < ATTEMPTS => {
                    let backoff = RETRY_BACKOFF * attempt;
                    if Instant::now() + backoff >= deadline {
                        return Err(error);
                    }
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn attempt<Req, Res, Fut>(
        &self,
        message: Req,
        timeout: Duration,
        rpc: impl FnOnce(MasterClient<Channel>, Request<Req>) -> Fut,
    ) -> MasterResult<Res>
    where
        Fut: Future<Output = Result<Response<Res>, Status>>,
    {
        let mut request = Request::new(message);
        // Sent as grpc-timeout, so the master stops working on a call nobody waits for.
        request.set_timeout(timeout);
        let traceparent =
            trace::current().map_or_else(trace::new_traceparent, |parent| trace::child_of(&parent));
        if let Ok(value) = traceparent.parse() {
            request.metadata_mut().insert(TRACEPARENT, value);
        }
        // grpc-timeout bounds the call once connected; this also bounds connecting.
        match tokio::time::timeout(timeout, rpc(self.client.clone(), request)).await {
            Ok(Ok(response)) => {
                if let Some(positions) = response
                    .metadata()
                    .get(POSITIONS)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| SyncToken::parse(value).ok())
                {
                    let _ = POSITIONS_AFTER.try_with(|cell| cell.set(Some(positions)));
                }
                Ok(response.into_inner())
            }
            Ok(Err(status)) => Err(error_from_status(&status)),
            Err(_elapsed) => Err(unavailable()),
        }
    }
}

tokio::task_local! {
    static POSITIONS_AFTER: std::cell::Cell<Option<SyncToken>>;
}

/// Runs `call` (calls of a [`RemoteMaster`]) and returns with its output the master's positions
/// after the last call that answered, when the master sent them.
pub async fn with_positions_after<F: Future>(call: F) -> (F::Output, Option<SyncToken>) {
    POSITIONS_AFTER
        .scope(std::cell::Cell::new(None), async move {
            let output = call.await;
            (output, POSITIONS_AFTER.with(std::cell::Cell::get))
        })
        .await
}

#[async_trait]
impl Master for RemoteMaster {
    async fn positions(&self) -> MasterResult<SyncToken> {
        let response = self.call(pb::PositionsRequest {}, rpc!(positions)).await?;
        sync_token(&response.sync_token).map_err(invalid_answer)
    }

    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot> {
        Ok(typing_snapshot(self.call(pb::TypingSnapshotRequest {}, rpc!(typing_snapshot)).await?))
    }

    async fn register(&self, request: RegisterRequest) -> MasterResult<SessionGrant> {
        let grant = self.call(register_message(request), rpc!(register)).await?;
        session_grant(grant).map_err(invalid_answer)
    }

    async fn login(&self, request: LoginRequest) -> MasterResult<SessionGrant> {
        let grant = self.call(login_message(request), rpc!(login)).await?;
        session_grant(grant).map_err(invalid_answer)
    }

    async fn check_password(&self, user_id: &OwnedUserId, password: &str) -> MasterResult<bool> {
        let message =
            pb::CheckPasswordRequest { user_id: user_id.to_string(), password: password.to_owned() };
        Ok(self.call(message, rpc!(check_password)).await?.matches)
    }

    async fn logout(&self, access_token: &str) -> MasterResult<()> {
        let message = pb::LogoutRequest { access_token: access_token.to_owned() };
        self.call(message, rpc!(logout)).await.map(drop)
    }

    async fn logout_all(&self, user_id: &OwnedUserId) -> MasterResult<()> {
        let message = pb::LogoutAllRequest { user_id: user_id.to_string() };
        self.call(message, rpc!(logout_all)).await.map(drop)
    }

    async fn set_password(
        &self,
        user_id: &OwnedUserId,
        new_password: &str,
        logout_devices: bool,
        keep_device: Option<&OwnedDeviceId>,
    ) -> MasterResult<()> {
        let message = pb::SetPasswordRequest {
            user_id: user_id.to_string(),
            new_password: new_password.to_owned(),
            logout_devices,
            keep_device: keep_device.map(ToString::to_string),
        };
        self.call(message, rpc!(set_password)).await.map(drop)
    }

    async fn delete_devices(&self, user_id: &OwnedUserId, device_ids: &[OwnedDeviceId]) -> MasterResult<()> {
        let message = pb::DeleteDevicesRequest {
            user_id: user_id.to_string(),
            device_ids: device_ids.iter().map(ToString::to_string).collect(),
        };
        self.call(message, rpc!(delete_devices)).await.map(drop)
    }

    async fn rename_device(
        &self,
        user_id: &OwnedUserId,
        device_id: &OwnedDeviceId,
        name: &str,
    ) -> MasterResult<()> {
        let message = pb::RenameDeviceRequest {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            name: name.to_owned(),
        };
        self.call(message, rpc!(rename_device)).await.map(drop)
    }

    async fn create_room(
        &self,
        sender: &OwnedUserId,
        request: CreateRoomRequest,
    ) -> MasterResult<OwnedRoomId> {
        let response = self.call(create_room_message(sender, request), rpc!(create_room)).await?;
        id("room_id", response.room_id).map_err(invalid_answer)
    }

    async fn send_event(
        &self,
        sender: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        room_id: &OwnedRoomId,
        template: EventTemplate,
        txn_id: Option<&str>,
    ) -> MasterResult<OwnedEventId> {
        let message = pb::SendEventRequest {
            sender: sender.to_string(),
            device_id: device_id.map(ToString::to_string),
            room_id: room_id.to_string(),
            template: Some(event_template_message(template)),
            txn_id: txn_id.map(str::to_owned),
        };
        let response = match (device_id, txn_id) {
            // The master returns the first event's id for a repeated (sender, device_id, txn_id);
            // without a device it cannot tell a retry from a new send.
            (Some(_), Some(_)) => self.call_idempotent(message, rpc!(send_event)).await?,
            _ => self.call(message, rpc!(send_event)).await?,
        };
        id("event_id", response.event_id).map_err(invalid_answer)
    }

    async fn update_membership(
        &self,
        sender: &OwnedUserId,
        room_id: &OwnedRoomId,
        target: &OwnedUserId,
        change: MembershipChange,
        reason: Option<String>,
    ) -> MasterResult<OwnedEventId> {
        let message = pb::UpdateMembershipRequest {
            sender: sender.to_string(),
            room_id: room_id.to_string(),
            target: target.to_string(),
            change: membership_change_message(change).into(),
            reason,
        };
        let response = self.call(message, rpc!(update_membership)).await?;
        id("event_id", response.event_id).map_err(invalid_answer)
    }

    async fn forget_room(&self, user_id: &OwnedUserId, room_id: &OwnedRoomId) -> MasterResult<()> {
        let message = pb::ForgetRoomRequest { user_id: user_id.to_string(), room_id: room_id.to_string() };
        self.call(message, rpc!(forget_room)).await.map(drop)
    }

    async fn set_profile(
        &self,
        user_id: &OwnedUserId,
        field: ProfileField,
        value: Option<String>,
    ) -> MasterResult<()> {
        let message = pb::SetProfileRequest {
            user_id: user_id.to_string(),
            field: profile_field_message(field).into(),
            value,
        };
        self.call(message, rpc!(set_profile)).await.map(drop)
    }

    async fn set_typing(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        typing: bool,
        timeout_ms: u64,
    ) -> MasterResult<()> {
        let message = pb::SetTypingRequest {
            user_id: user_id.to_string(),
            room_id: room_id.to_string(),
            typing,
            timeout_ms,
        };
        self.call(message, rpc!(set_typing)).await.map(drop)
    }

    async fn set_receipt(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        receipt_type: &str,
        event_id: &OwnedEventId,
        thread_id: Option<String>,
    ) -> MasterResult<()> {
        let message = pb::SetReceiptRequest {
            user_id: user_id.to_string(),
            room_id: room_id.to_string(),
            receipt_type: receipt_type.to_owned(),
            event_id: event_id.to_string(),
            thread_id,
        };
        self.call(message, rpc!(set_receipt)).await.map(drop)
    }

    async fn set_account_data(
        &self,
        user_id: &OwnedUserId,
        room_id: Option<&OwnedRoomId>,
        data_type: &str,
        content: Value,
    ) -> MasterResult<()> {
        let message = pb::SetAccountDataRequest {
            user_id: user_id.to_string(),
            room_id: room_id.map(ToString::to_string),
            data_type: data_type.to_owned(),
            content_json: content.to_string(),
        };
        self.call(message, rpc!(set_account_data)).await.map(drop)
    }

    async fn create_filter(&self, user_id: &OwnedUserId, filter: Value) -> MasterResult<String> {
        let message =
            pb::CreateFilterRequest { user_id: user_id.to_string(), filter_json: filter.to_string() };
        Ok(self.call(message, rpc!(create_filter)).await?.filter_id)
    }

    async fn set_alias(
        &self,
        user_id: &OwnedUserId,
        alias: &OwnedRoomAliasId,
        room_id: &OwnedRoomId,
    ) -> MasterResult<()> {
        let message = pb::SetAliasRequest {
            user_id: user_id.to_string(),
            alias: alias.to_string(),
            room_id: room_id.to_string(),
        };
        self.call(message, rpc!(set_alias)).await.map(drop)
    }

    async fn delete_alias(&self, user_id: &OwnedUserId, alias: &OwnedRoomAliasId) -> MasterResult<()> {
        let message = pb::DeleteAliasRequest { user_id: user_id.to_string(), alias: alias.to_string() };
        self.call(message, rpc!(delete_alias)).await.map(drop)
    }

    async fn set_room_visibility(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        public: bool,
    ) -> MasterResult<()> {
        let message = pb::SetRoomVisibilityRequest {
            user_id: user_id.to_string(),
            room_id: room_id.to_string(),
            public,
        };
        self.call(message, rpc!(set_room_visibility)).await.map(drop)
    }
}
