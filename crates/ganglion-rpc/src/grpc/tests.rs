//! A fake `Master` served on a real loopback socket and called through `RemoteMaster`.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use ganglion_events::{
    EventTemplate,
    ruma::{
        OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId,
        owned_event_id, owned_room_id, owned_user_id,
    },
};
use ganglion_proto::master::v1::{self as pb, master_client::MasterClient};
use ganglion_types::{ErrorClass, StreamPosition, SyncToken};
use prost::Message;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, time::Instant};
use tonic::transport::Endpoint;

use super::{RemoteMaster, serve};
use crate::{
    CreateRoomRequest, InitialStateEvent, LoginRequest, Master, MasterError, MasterResult, MembershipChange,
    Preset, ProfileField, RegisterRequest, SessionGrant, TypingSnapshot, trace,
};

const TIMEOUT: Duration = Duration::from_millis(200);

/// Records each call as `name args`, with the trace context it ran in; answers with `failure`
/// when set, after the next queued delay.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    traceparents: Mutex<Vec<Option<String>>>,
    delays: Mutex<VecDeque<Duration>>,
    failure: Mutex<Option<MasterError>>,
}

impl Fake {
    async fn enter(&self, call: String) -> MasterResult<()> {
        self.calls.lock().unwrap().push(call);
        self.traceparents.lock().unwrap().push(trace::current());
        let delay = self.delays.lock().unwrap().pop_front();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match self.failure.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn last_call(&self) -> String {
        self.calls.lock().unwrap().last().cloned().unwrap()
    }

    fn fail_with(&self, error: MasterError) {
        *self.failure.lock().unwrap() = Some(error);
    }
}

fn sync_token() -> SyncToken {
    SyncToken {
        events: StreamPosition(42),
        receipts: StreamPosition(7),
        typing: StreamPosition(3),
        account_data: StreamPosition(9),
        typing_epoch: 1_700_000_000,
    }
}

fn typing_snapshot() -> TypingSnapshot {
    TypingSnapshot {
        epoch: 5,
        position: StreamPosition(12),
        rooms: vec![("!room:test".to_owned(), vec!["@alice:test".to_owned(), "@bob:test".to_owned()])],
    }
}

fn event_id() -> OwnedEventId {
    owned_event_id!("$event:test")
}

#[async_trait]
impl Master for Fake {
    async fn positions(&self) -> MasterResult<SyncToken> {
        // The server also asks after every call to send the positions along; that lookup runs
        // outside the call's trace scope and is not one of the calls under test.
        if trace::current().is_some() {
            self.enter("positions".to_owned()).await?;
        }
        Ok(sync_token())
    }

    async fn typing_snapshot(&self) -> MasterResult<TypingSnapshot> {
        self.enter("typing_snapshot".to_owned()).await?;
        Ok(typing_snapshot())
    }

    async fn register(&self, request: RegisterRequest) -> MasterResult<SessionGrant> {
        self.enter(format!("register {request:?}")).await?;
        Ok(SessionGrant {
            user_id: owned_user_id!("@alice:test"),
            access_token: Some("token".to_owned()),
            device_id: request.device_id.map(Into::into),
        })
    }

    async fn login(&self, request: LoginRequest) -> MasterResult<SessionGrant> {
        self.enter(format!("login {request:?}")).await?;
        Ok(SessionGrant { user_id: request.user_id, access_token: None, device_id: None })
    }

    async fn check_password(&self, user_id: &OwnedUserId, password: &str) -> MasterResult<bool> {
        self.enter(format!("check_password {user_id} {password}")).await?;
        Ok(password == "right")
    }

    async fn logout(&self, access_token: &str) -> MasterResult<()> {
        self.enter(format!("logout {access_token}")).await
    }

    async fn logout_all(&self, user_id: &OwnedUserId) -> MasterResult<()> {
        self.enter(format!("logout_all {user_id}")).await
    }

    async fn set_password(
        &self,
        user_id: &OwnedUserId,
        new_password: &str,
        logout_devices: bool,
        keep_device: Option<&OwnedDeviceId>,
    ) -> MasterResult<()> {
        self.enter(format!("set_password {user_id} {new_password} {logout_devices} {keep_device:?}")).await
    }

    async fn delete_devices(&self, user_id: &OwnedUserId, device_ids: &[OwnedDeviceId]) -> MasterResult<()> {
        self.enter(format!("delete_devices {user_id} {device_ids:?}")).await
    }

    async fn rename_device(
        &self,
        user_id: &OwnedUserId,
        device_id: &OwnedDeviceId,
        name: &str,
    ) -> MasterResult<()> {
        self.enter(format!("rename_device {user_id} {device_id} {name}")).await
    }

    async fn create_room(
        &self,
        sender: &OwnedUserId,
        request: CreateRoomRequest,
    ) -> MasterResult<OwnedRoomId> {
        self.enter(format!("create_room {sender} {request:?}")).await?;
        Ok(owned_room_id!("!new:test"))
    }

    async fn send_event(
        &self,
        sender: &OwnedUserId,
        device_id: Option<&OwnedDeviceId>,
        room_id: &OwnedRoomId,
        template: EventTemplate,
        txn_id: Option<&str>,
    ) -> MasterResult<OwnedEventId> {
        self.enter(format!("send_event {sender} {device_id:?} {room_id} {template:?} {txn_id:?}")).await?;
        Ok(event_id())
    }

    async fn update_membership(
        &self,
        sender: &OwnedUserId,
        room_id: &OwnedRoomId,
        target: &OwnedUserId,
        change: MembershipChange,
        reason: Option<String>,
    ) -> MasterResult<OwnedEventId> {
        self.enter(format!("update_membership {sender} {room_id} {target} {change:?} {reason:?}")).await?;
        Ok(event_id())
    }

    async fn forget_room(&self, user_id: &OwnedUserId, room_id: &OwnedRoomId) -> MasterResult<()> {
        self.enter(format!("forget_room {user_id} {room_id}")).await
    }

    async fn set_profile(
        &self,
        user_id: &OwnedUserId,
        field: ProfileField,
        value: Option<String>,
    ) -> MasterResult<()> {
        self.enter(format!("set_profile {user_id} {field:?} {value:?}")).await
    }

    async fn set_typing(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        typing: bool,
        timeout_ms: u64,
    ) -> MasterResult<()> {
        self.enter(format!("set_typing {user_id} {room_id} {typing} {timeout_ms}")).await
    }

    async fn set_receipt(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        receipt_type: &str,
        event_id: &OwnedEventId,
        thread_id: Option<String>,
    ) -> MasterResult<()> {
        self.enter(format!("set_receipt {user_id} {room_id} {receipt_type} {event_id} {thread_id:?}")).await
    }

    async fn set_account_data(
        &self,
        user_id: &OwnedUserId,
        room_id: Option<&OwnedRoomId>,
        data_type: &str,
        content: Value,
    ) -> MasterResult<()> {
        self.enter(format!("set_account_data {user_id} {room_id:?} {data_type} {content}")).await
    }

    async fn create_filter(&self, user_id: &OwnedUserId, filter: Value) -> MasterResult<String> {
        self.enter(format!("create_filter {user_id} {filter}")).await?;
        Ok("filter-1".to_owned())
    }

    async fn set_alias(
        &self,
        user_id: &OwnedUserId,
        alias: &OwnedRoomAliasId,
        room_id: &OwnedRoomId,
    ) -> MasterResult<()> {
        self.enter(format!("set_alias {user_id} {alias} {room_id}")).await
    }

    async fn delete_alias(&self, user_id: &OwnedUserId, alias: &OwnedRoomAliasId) -> MasterResult<()> {
        self.enter(format!("delete_alias {user_id} {alias}")).await
    }

    async fn set_room_visibility(
        &self,
        user_id: &OwnedUserId,
        room_id: &OwnedRoomId,
        public: bool,
    ) -> MasterResult<()> {
        self.enter(format!("set_room_visibility {user_id} {room_id} {public}")).await
    }
}

/// Serves `fake` on `address` (port 0 for any) until the returned sender is dropped or fired.
async fn start_on(fake: Arc<Fake>, address: SocketAddr) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind(address).await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(fake, listener, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

async fn start(fake: Arc<Fake>) -> (RemoteMaster, oneshot::Sender<()>) {
    let (address, stop) = start_on(fake, "127.0.0.1:0".parse().unwrap()).await;
    (RemoteMaster::new(address, TIMEOUT), stop)
}

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:test")
}

fn room() -> OwnedRoomId {
    owned_room_id!("!room:test")
}

#[tokio::test]
async fn calls_round_trip_exactly() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;

    let request = RegisterRequest {
        username: Some("alice".to_owned()),
        password: Some("hunter2".to_owned()),
        device_id: Some("PHONE".to_owned()),
        initial_device_display_name: Some("Alice's phone".to_owned()),
        inhibit_login: true,
    };
    let grant = master.register(request.clone()).await.unwrap();
    assert_eq!(fake.last_call(), format!("register {request:?}"));
    assert_eq!(grant.user_id, alice());
    assert_eq!(grant.access_token.as_deref(), Some("token"));
    assert_eq!(grant.device_id.as_deref().map(|device_id| device_id.as_str()), Some("PHONE"));

    let request = CreateRoomRequest {
        public: true,
        room_alias_name: Some("lobby".to_owned()),
        name: Some("Lobby".to_owned()),
        topic: None,
        invite: vec![owned_user_id!("@bob:test")],
        room_version: Some(RoomVersionId::V11),
        creation_content: json!({ "m.federate": false }).as_object().cloned(),
        initial_state: vec![InitialStateEvent {
            kind: "m.room.history_visibility".to_owned(),
            state_key: String::new(),
            content: json!({ "history_visibility": "joined" }).as_object().cloned().unwrap(),
        }],
        preset: Some(Preset::TrustedPrivateChat),
        is_direct: true,
        power_level_content_override: json!({ "users": { "@bob:test": 100 }, "ban": 75 })
            .as_object()
            .cloned(),
    };
    let room_id = master.create_room(&alice(), request.clone()).await.unwrap();
    assert_eq!(fake.last_call(), format!("create_room @alice:test {request:?}"));
    assert_eq!(room_id, owned_room_id!("!new:test"));

    let template = EventTemplate {
        kind: "m.room.message".to_owned(),
        content: json!({ "msgtype": "m.text", "body": "hi", "nested": [1, 2.5, null] }),
        state_key: None,
        redacts: Some(owned_event_id!("$old:test")),
    };
    let device_id = OwnedDeviceId::from("PHONE");
    let sent = master.send_event(&alice(), Some(&device_id), &room(), template.clone(), Some("txn-1")).await;
    let sent = sent.unwrap();
    assert_eq!(
        fake.last_call(),
        format!("send_event @alice:test Some({device_id:?}) !room:test {template:?} Some(\"txn-1\")")
    );
    assert_eq!(sent, event_id());

    let content = json!({ "tags": { "u.work": { "order": 0.5 } } });
    master.set_account_data(&alice(), Some(&room()), "m.tag", content.clone()).await.unwrap();
    assert_eq!(fake.last_call(), format!("set_account_data @alice:test Some({:?}) m.tag {content}", room()));
    master.set_account_data(&alice(), None, "m.push_rules", json!({})).await.unwrap();
    assert_eq!(fake.last_call(), "set_account_data @alice:test None m.push_rules {}");

    assert_eq!(master.positions().await.unwrap(), sync_token());
    assert_eq!(master.typing_snapshot().await.unwrap(), typing_snapshot());

    let target = owned_user_id!("@bob:test");
    let membership = master.update_membership(&alice(), &room(), &target, MembershipChange::Ban, None).await;
    assert_eq!(membership.unwrap(), event_id());
    assert_eq!(fake.last_call(), "update_membership @alice:test !room:test @bob:test Ban None");
    master.set_profile(&alice(), ProfileField::AvatarUrl, Some("mxc://test/a".to_owned())).await.unwrap();
    assert_eq!(fake.last_call(), "set_profile @alice:test AvatarUrl Some(\"mxc://test/a\")");
    assert!(master.check_password(&alice(), "right").await.unwrap());
    assert!(!master.check_password(&alice(), "wrong").await.unwrap());
    assert_eq!(master.create_filter(&alice(), json!({ "room": {} })).await.unwrap(), "filter-1");
    assert_eq!(fake.last_call(), r#"create_filter @alice:test {"room":{}}"#);
}

#[tokio::test]
async fn errors_arrive_with_their_class_and_message() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    let errors = [
        MasterError::forbidden("You are not invited to this room."),
        MasterError::new(
            ErrorClass::LimitExceeded { retry_after: Duration::from_millis(1500) },
            "Too many requests",
        ),
        MasterError::new(ErrorClass::UserInteractiveAuth, "session-abc"),
        MasterError::new(ErrorClass::UserInUse, "User ID already taken."),
        MasterError::not_found("Unknown room"),
        MasterError::new(ErrorClass::Unknown, "Cannot leave a room you are not in"),
        MasterError::internal("disk on fire"),
    ];
    for error in errors {
        fake.fail_with(error.clone());
        let received = master.forget_room(&alice(), &room()).await.unwrap_err();
        assert_eq!((received.class, received.message), (error.class, error.message));
    }
}

#[tokio::test]
async fn bad_input_is_a_typed_invalid_argument() {
    let fake = Arc::new(Fake::default());
    let (address, _stop) = start_on(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let channel = Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut client = MasterClient::new(channel);

    let bad_user = pb::ForgetRoomRequest { user_id: "alice".to_owned(), room_id: "!room:test".to_owned() };
    let status = client.forget_room(bad_user).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let failure = pb::MasterFailure::decode(status.details()).unwrap();
    assert_eq!(failure.class(), pb::ErrorCode::InvalidParam);
    assert!(failure.message.starts_with("user_id is invalid"), "{}", failure.message);

    let bad_json = pb::SetAccountDataRequest {
        user_id: "@alice:test".to_owned(),
        room_id: None,
        data_type: "m.tag".to_owned(),
        content_json: "{not json".to_owned(),
    };
    let status = client.set_account_data(bad_json).await.unwrap_err();
    let failure = pb::MasterFailure::decode(status.details()).unwrap();
    assert_eq!(failure.class(), pb::ErrorCode::BadJson);

    let no_template = pb::SendEventRequest {
        sender: "@alice:test".to_owned(),
        room_id: "!room:test".to_owned(),
        ..Default::default()
    };
    let status = client.send_event(no_template).await.unwrap_err();
    assert_eq!(pb::MasterFailure::decode(status.details()).unwrap().class(), pb::ErrorCode::InvalidParam);

    let unknown_change = pb::UpdateMembershipRequest {
        sender: "@alice:test".to_owned(),
        room_id: "!room:test".to_owned(),
        target: "@bob:test".to_owned(),
        change: 99,
        reason: None,
    };
    let status = client.update_membership(unknown_change).await.unwrap_err();
    assert_eq!(pb::MasterFailure::decode(status.details()).unwrap().class(), pb::ErrorCode::InvalidParam);

    assert!(fake.calls().is_empty(), "the master saw {:?}", fake.calls());
}

#[tokio::test]
async fn a_slow_master_is_unavailable_after_the_deadline() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    fake.delays.lock().unwrap().push_back(Duration::from_secs(5));

    let started = Instant::now();
    let error = master.positions().await.unwrap_err();
    assert_eq!(error.class, ErrorClass::Unavailable);
    assert_eq!(error.message, "The master is unavailable; try again shortly");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    // Not retried: the master may have acted on it.
    assert_eq!(fake.calls(), ["positions"]);
}

#[tokio::test]
async fn the_client_recovers_when_the_master_comes_back() {
    // A port nothing listens on until the master starts.
    let address = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let master = RemoteMaster::new(address, TIMEOUT);
    assert_eq!(master.positions().await.unwrap_err().class, ErrorClass::Unavailable);

    let fake = Arc::new(Fake::default());
    let (_, stop) = start_on(fake.clone(), address).await;
    assert_eq!(master.positions().await.unwrap(), sync_token());

    // A restart breaks the open connection; the same client reconnects.
    stop.send(()).unwrap();
    wait_until_unavailable(&master).await;
    let (_, _stop) = start_on(fake, address).await;
    assert_eq!(master.positions().await.unwrap(), sync_token());
}

/// Waits (boundedly) for a stopped master's connection to close.
async fn wait_until_unavailable(master: &RemoteMaster) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match master.positions().await {
            Err(error) if error.class == ErrorClass::Unavailable => return,
            result => assert!(Instant::now() < deadline, "still answering: {result:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn send_event_with_a_txn_id_is_retried_after_a_timeout() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    fake.delays.lock().unwrap().push_back(Duration::from_secs(5));

    let template = EventTemplate::message("m.room.message", json!({ "body": "hi" }));
    let device_id = OwnedDeviceId::from("PHONE");
    let started = Instant::now();
    let sent = master.send_event(&alice(), Some(&device_id), &room(), template, Some("txn-7")).await.unwrap();
    assert_eq!(sent, event_id());
    assert!(started.elapsed() < 2 * TIMEOUT + Duration::from_millis(300), "took {:?}", started.elapsed());
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|call| call.ends_with("Some(\"txn-7\")")), "{calls:?}");
}

#[tokio::test]
async fn send_event_is_not_retried_without_a_device_and_txn_id() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    let device_id = OwnedDeviceId::from("PHONE");
    for (device_id, txn_id) in [(None, Some("txn-8")), (Some(&device_id), None)] {
        fake.calls.lock().unwrap().clear();
        fake.delays.lock().unwrap().push_back(Duration::from_secs(5));
        let template = EventTemplate::message("m.room.message", json!({ "body": "hi" }));
        let error = master.send_event(&alice(), device_id, &room(), template, txn_id).await.unwrap_err();
        assert_eq!(error.class, ErrorClass::Unavailable);
        assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());
    }
}

#[tokio::test]
async fn the_trace_follows_the_call_with_a_new_span() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;

    let traceparent = trace::new_traceparent();
    trace::scope(traceparent.clone(), master.positions()).await.unwrap();
    master.positions().await.unwrap();

    let seen = fake.traceparents.lock().unwrap().clone();
    let fields = |traceparent: &str| traceparent.split('-').map(str::to_owned).collect::<Vec<_>>();
    let (sent, inside) = (fields(&traceparent), fields(seen[0].as_deref().unwrap()));
    assert_eq!(inside[1], sent[1], "same trace id");
    assert_ne!(inside[2], sent[2], "new span id");
    // Outside any scope the call still starts a trace of its own.
    let outside = fields(seen[1].as_deref().unwrap());
    assert_ne!(outside[1], sent[1]);
}

#[test]
fn every_error_class_crosses_the_wire() {
    let classes = [
        ErrorClass::Forbidden,
        ErrorClass::NotFound,
        ErrorClass::NotJson,
        ErrorClass::BadJson,
        ErrorClass::InvalidParam,
        ErrorClass::MissingParam,
        ErrorClass::UserInUse,
        ErrorClass::InvalidUsername,
        ErrorClass::RoomInUse,
        ErrorClass::AliasInUse,
        ErrorClass::Unknown,
        ErrorClass::MissingToken,
        ErrorClass::UnknownToken,
        ErrorClass::UserInteractiveAuth,
        ErrorClass::LimitExceeded { retry_after: Duration::from_secs(3) },
        ErrorClass::TooLarge,
        ErrorClass::Unrecognized,
        ErrorClass::MethodNotAllowed,
        ErrorClass::ServerManaged,
        ErrorClass::UnsupportedRoomVersion,
        ErrorClass::GuestAccessForbidden,
        ErrorClass::Exclusive,
        ErrorClass::Unavailable,
        ErrorClass::Internal,
    ];
    for class in classes {
        let status = super::convert::status_from_error(MasterError::new(class.clone(), "why"));
        let error = super::convert::error_from_status(&status);
        assert_eq!((error.class, error.message.as_str()), (class, "why"));
    }
}

#[test]
fn a_status_without_details_is_unavailable_or_internal() {
    use tonic::{Code, Status};
    for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Unknown] {
        let error = super::convert::error_from_status(&Status::new(code, "h2 error"));
        assert_eq!(error.class, ErrorClass::Unavailable, "{code:?}");
        assert_eq!(error.message, "The master is unavailable; try again shortly");
    }
    let error = super::convert::error_from_status(&Status::unimplemented("no such method"));
    assert_eq!(error.class, ErrorClass::Internal);
}

#[tokio::test]
async fn answers_carry_the_masters_positions_after_the_call() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    let (result, after) =
        super::with_positions_after(master.create_filter(&alice(), json!({"room": {}}))).await;
    result.unwrap();
    assert_eq!(after, Some(sync_token()));
    // A failed call brings none.
    fake.fail_with(crate::MasterError::forbidden("no"));
    let (result, after) = super::with_positions_after(master.create_filter(&alice(), json!({}))).await;
    assert!(result.is_err());
    assert_eq!(after, None);
}
