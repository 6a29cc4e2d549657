//! Serves a [`Master`] over gRPC, for the master process in cluster mode.
//!
//! The adapter only converts: messages to domain types (bad input is a typed `BadJson` or
//! `InvalidParam`, never a panic), and `MasterError` to a status carrying a `MasterFailure`.

use std::{future::Future, sync::Arc, time::Duration};

use ganglion_proto::master::v1::{
    self as pb,
    master_server::{self, MasterServer},
};
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tracing::Instrument;

use super::{POSITIONS, TRACEPARENT, convert::*};
use crate::{Master, MasterResult, trace};

/// Serves `master` on `listener` until `shutdown` completes, then waits for open calls to end.
pub async fn serve(
    master: Arc<dyn Master>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        // Notices a worker that vanished without closing its connection.
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .serve_with_incoming_shutdown(MasterServer::new(Adapter { master }), incoming, shutdown)
        .await
}

struct Adapter {
    master: Arc<dyn Master>,
}

impl Adapter {
    /// Runs one call inside the caller's trace context, then encodes the error if any.
    async fn call<Req, Res, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        handler: impl FnOnce(Arc<dyn Master>, Req) -> Fut,
    ) -> Result<Response<Res>, Status>
    where
        Fut: Future<Output = MasterResult<Res>>,
    {
        let traceparent = request
            .metadata()
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .filter(|value| trace::is_valid(value))
            .map_or_else(trace::new_traceparent, str::to_owned);
        let span = tracing::info_span!("rpc", method, traceparent = %traceparent);
        let result = trace::scope(traceparent, handler(self.master.clone(), request.into_inner()))
            .instrument(span)
            .await;
        let mut response = Response::new(result.map_err(status_from_error)?);
        if let Ok(positions) = self.master.positions().await
            && let Ok(value) = positions.to_string().parse()
        {
            response.metadata_mut().insert(POSITIONS, value);
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl master_server::Master for Adapter {
    async fn positions(
        &self,
        request: Request<pb::PositionsRequest>,
    ) -> Result<Response<pb::PositionsResponse>, Status> {
        self.call("Positions", request, |master, _| async move {
            Ok(pb::PositionsResponse { sync_token: master.positions().await?.to_string() })
        })
        .await
    }

    async fn typing_snapshot(
        &self,
        request: Request<pb::TypingSnapshotRequest>,
    ) -> Result<Response<pb::TypingSnapshot>, Status> {
        self.call("TypingSnapshot", request, |master, _| async move {
            Ok(typing_snapshot_message(master.typing_snapshot().await?))
        })
        .await
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::SessionGrant>, Status> {
        self.call("Register", request, |master, message| async move {
            Ok(session_grant_message(master.register(register_request(message)).await?))
        })
        .await
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::SessionGrant>, Status> {
        self.call("Login", request, |master, message| async move {
            Ok(session_grant_message(master.login(login_request(message)?).await?))
        })
        .await
    }

    async fn check_password(
        &self,
        request: Request<pb::CheckPasswordRequest>,
    ) -> Result<Response<pb::CheckPasswordResponse>, Status> {
        self.call("CheckPassword", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let matches = master.check_password(&user_id, &message.password).await?;
            Ok(pb::CheckPasswordResponse { matches })
        })
        .await
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.call("Logout", request, |master, message| async move {
            master.logout(&message.access_token).await?;
            Ok(pb::LogoutResponse {})
        })
        .await
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        self.call("LogoutAll", request, |master, message| async move {
            master.logout_all(&id("user_id", message.user_id)?).await?;
            Ok(pb::LogoutAllResponse {})
        })
        .await
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        self.call("SetPassword", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let keep_device = optional_id("keep_device", message.keep_device)?;
            master
                .set_password(&user_id, &message.new_password, message.logout_devices, keep_device.as_ref())
                .await?;
            Ok(pb::SetPasswordResponse {})
        })
        .await
    }

    async fn delete_devices(
        &self,
        request: Request<pb::DeleteDevicesRequest>,
    ) -> Result<Response<pb::DeleteDevicesResponse>, Status> {
        self.call("DeleteDevices", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            master.delete_devices(&user_id, &ids("device_ids", message.device_ids)?).await?;
            Ok(pb::DeleteDevicesResponse {})
        })
        .await
    }

    async fn rename_device(
        &self,
        request: Request<pb::RenameDeviceRequest>,
    ) -> Result<Response<pb::RenameDeviceResponse>, Status> {
        self.call("RenameDevice", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let device_id = id("device_id", message.device_id)?;
            master.rename_device(&user_id, &device_id, &message.name).await?;
            Ok(pb::RenameDeviceResponse {})
        })
        .await
    }

    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        self.call("CreateRoom", request, |master, message| async move {
            let (sender, request) = create_room_request(message)?;
            let room_id = master.create_room(&sender, request).await?;
            Ok(pb::CreateRoomResponse { room_id: room_id.into() })
        })
        .await
    }

    async fn send_event(
        &self,
        request: Request<pb::SendEventRequest>,
    ) -> Result<Response<pb::SendEventResponse>, Status> {
        self.call("SendEvent", request, |master, message| async move {
            let sender = id("sender", message.sender)?;
            let device_id = optional_id("device_id", message.device_id)?;
            let room_id = id("room_id", message.room_id)?;
            let template = event_template(message.template)?;
            let txn_id = message.txn_id.as_deref();
            let event_id = master.send_event(&sender, device_id.as_ref(), &room_id, template, txn_id).await?;
            Ok(pb::SendEventResponse { event_id: event_id.into() })
        })
        .await
    }

    async fn update_membership(
        &self,
        request: Request<pb::UpdateMembershipRequest>,
    ) -> Result<Response<pb::UpdateMembershipResponse>, Status> {
        self.call("UpdateMembership", request, |master, message| async move {
            let sender = id("sender", message.sender)?;
            let room_id = id("room_id", message.room_id)?;
            let target = id("target", message.target)?;
            let change = membership_change(message.change)?;
            let event_id =
                master.update_membership(&sender, &room_id, &target, change, message.reason).await?;
            Ok(pb::UpdateMembershipResponse { event_id: event_id.into() })
        })
        .await
    }

    async fn forget_room(
        &self,
        request: Request<pb::ForgetRoomRequest>,
    ) -> Result<Response<pb::ForgetRoomResponse>, Status> {
        self.call("ForgetRoom", request, |master, message| async move {
            master.forget_room(&id("user_id", message.user_id)?, &id("room_id", message.room_id)?).await?;
            Ok(pb::ForgetRoomResponse {})
        })
        .await
    }

    async fn set_profile(
        &self,
        request: Request<pb::SetProfileRequest>,
    ) -> Result<Response<pb::SetProfileResponse>, Status> {
        self.call("SetProfile", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            master.set_profile(&user_id, profile_field(message.field)?, message.value).await?;
            Ok(pb::SetProfileResponse {})
        })
        .await
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        self.call("SetTyping", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let room_id = id("room_id", message.room_id)?;
            master.set_typing(&user_id, &room_id, message.typing, message.timeout_ms).await?;
            Ok(pb::SetTypingResponse {})
        })
        .await
    }

    async fn set_receipt(
        &self,
        request: Request<pb::SetReceiptRequest>,
    ) -> Result<Response<pb::SetReceiptResponse>, Status> {
        self.call("SetReceipt", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let room_id = id("room_id", message.room_id)?;
            let event_id = id("event_id", message.event_id)?;
            master
                .set_receipt(&user_id, &room_id, &message.receipt_type, &event_id, message.thread_id)
                .await?;
            Ok(pb::SetReceiptResponse {})
        })
        .await
    }

    async fn set_account_data(
        &self,
        request: Request<pb::SetAccountDataRequest>,
    ) -> Result<Response<pb::SetAccountDataResponse>, Status> {
        self.call("SetAccountData", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let room_id = optional_id("room_id", message.room_id)?;
            let content = json_value("content_json", &message.content_json)?;
            master.set_account_data(&user_id, room_id.as_ref(), &message.data_type, content).await?;
            Ok(pb::SetAccountDataResponse {})
        })
        .await
    }

    async fn create_filter(
        &self,
        request: Request<pb::CreateFilterRequest>,
    ) -> Result<Response<pb::CreateFilterResponse>, Status> {
        self.call("CreateFilter", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let filter = json_value("filter_json", &message.filter_json)?;
            Ok(pb::CreateFilterResponse { filter_id: master.create_filter(&user_id, filter).await? })
        })
        .await
    }

    async fn set_alias(
        &self,
        request: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::SetAliasResponse>, Status> {
        self.call("SetAlias", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let alias = id("alias", message.alias)?;
            master.set_alias(&user_id, &alias, &id("room_id", message.room_id)?).await?;
            Ok(pb::SetAliasResponse {})
        })
        .await
    }

    async fn delete_alias(
        &self,
        request: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        self.call("DeleteAlias", request, |master, message| async move {
            master.delete_alias(&id("user_id", message.user_id)?, &id("alias", message.alias)?).await?;
            Ok(pb::DeleteAliasResponse {})
        })
        .await
    }

    async fn set_room_visibility(
        &self,
        request: Request<pb::SetRoomVisibilityRequest>,
    ) -> Result<Response<pb::SetRoomVisibilityResponse>, Status> {
        self.call("SetRoomVisibility", request, |master, message| async move {
            let user_id = id("user_id", message.user_id)?;
            let room_id = id("room_id", message.room_id)?;
            master.set_room_visibility(&user_id, &room_id, message.public).await?;
            Ok(pb::SetRoomVisibilityResponse {})
        })
        .await
    }
}
