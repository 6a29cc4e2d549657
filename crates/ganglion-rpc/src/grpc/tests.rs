//! A fake master served on a real loopback socket and called through `RemoteMaster`.
//!
//! `service!` implements every service for [`Fake`]: each call is recorded as its request's
//! `Debug` and answered with a [`Canned`] value, so a new call needs no code here, only a line
//! in `calls_round_trip_exactly`.

use std::{
    collections::VecDeque,
    fmt::Debug,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use ganglion_events::{
    EventTemplate,
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, owned_event_id, owned_room_alias_id,
        owned_room_id, owned_user_id,
    },
};
use ganglion_proto::master::v1::{
    self as pb, ephemeral_client::EphemeralClient, key_backup_client::KeyBackupClient,
    rooms_client::RoomsClient,
};
use ganglion_types::{ErrorClass, StreamPosition, SyncToken};
use prost::Message;
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot, time::Instant};
use tonic::transport::Endpoint;

use super::{ReadYourWrites, RemoteMaster, serve};
use crate::{
    Accounts, CheckPassword, ClaimKeys, ClaimedKey, CreateBackupVersion, CreateFilter, CreateRoom,
    CreateRoomRequest, DeleteAlias, DeleteBackupKeys, DeleteBackupVersion, DeleteDevices, Ephemeral,
    ForgetRoom, InitialStateEvent, KeyBackup, KeyClaim, Keys, LoginRequest, Logout, LogoutAll, MasterError,
    MasterResult, MembershipChange, OneTimeKeyCounts, Presence, PresenceSyncing, Preset, ProfileField,
    PutBackupKeys, RegisterRequest, RenameDevice, RoomKeysUpdate, Rooms, SendEvent, SendToDevice,
    SessionGrant, SetAccountData, SetAlias, SetPassword, SetPresence, SetProfile, SetReceipt,
    SetRoomVisibility, SetTyping, SignatureFailure, Streams, TypingSnapshot, UpdateBackupVersion,
    UpdateMembership, UploadKeys, UploadSignatures, UploadSigningKeys, trace,
};

const TIMEOUT: Duration = Duration::from_millis(200);

/// Records each call as its request's `Debug`, with the trace context it ran in; answers with
/// `failure` when set, after the next queued delay.
#[derive(Default)]
pub(crate) struct Fake {
    calls: Mutex<Vec<String>>,
    traceparents: Mutex<Vec<Option<String>>>,
    delays: Mutex<VecDeque<Duration>>,
    failure: Mutex<Option<MasterError>>,
}

/// What the fake answers.
pub(crate) trait Canned {
    fn canned() -> Self;
}

impl Canned for () {
    fn canned() {}
}

impl Canned for bool {
    fn canned() -> bool {
        true
    }
}

impl Canned for String {
    fn canned() -> String {
        "filter-1".to_owned()
    }
}

impl Canned for crate::OpenIdToken {
    fn canned() -> crate::OpenIdToken {
        crate::OpenIdToken { access_token: "openid".to_owned(), expires_in_ms: 3_600_000 }
    }
}

impl Canned for i64 {
    fn canned() -> i64 {
        7
    }
}

impl Canned for RoomKeysUpdate {
    fn canned() -> RoomKeysUpdate {
        RoomKeysUpdate { etag: 3, count: 2 }
    }
}

impl Canned for OwnedEventId {
    fn canned() -> OwnedEventId {
        owned_event_id!("$event:test")
    }
}

impl Canned for OwnedRoomId {
    fn canned() -> OwnedRoomId {
        owned_room_id!("!new:test")
    }
}

impl Canned for OneTimeKeyCounts {
    fn canned() -> OneTimeKeyCounts {
        OneTimeKeyCounts([("signed_curve25519".to_owned(), 49)].into())
    }
}

impl Canned for Vec<ClaimedKey> {
    fn canned() -> Vec<ClaimedKey> {
        vec![ClaimedKey {
            user_id: owned_user_id!("@bob:test"),
            device_id: "BOBPHONE".into(),
            key_id: "signed_curve25519:AAAAHQ".to_owned(),
            key: json!({ "key": "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs", "signatures": {} }),
        }]
    }
}

impl Canned for Vec<SignatureFailure> {
    fn canned() -> Vec<SignatureFailure> {
        vec![SignatureFailure {
            user_id: "@bob:test".to_owned(),
            key_id: "BOBPHONE".to_owned(),
            error: MasterError::new(ErrorClass::InvalidSignature, "no"),
        }]
    }
}

impl Canned for Vec<crate::EventOutcome> {
    fn canned() -> Self {
        vec![
            crate::EventOutcome { event_id: owned_event_id!("$taken"), error: None },
            crate::EventOutcome {
                event_id: owned_event_id!("$refused"),
                error: Some(MasterError::forbidden("Rejected by its auth events")),
            },
        ]
    }
}

impl Canned for crate::MadeJoin {
    fn canned() -> Self {
        crate::MadeJoin {
            room_version: RoomVersionId::V11,
            event: json!({ "type": "m.room.member", "content": { "membership": "join" }, "depth": 3 }),
        }
    }
}

impl Canned for crate::PreparedInvite {
    fn canned() -> Self {
        crate::PreparedInvite {
            room_version: RoomVersionId::V12,
            event_id: owned_event_id!("$invite"),
            json: r#"{"type":"m.room.member"}"#.to_owned(),
            invite_room_state: json!([{ "type": "m.room.name", "content": { "name": "x" } }]),
        }
    }
}

impl Canned for SessionGrant {
    fn canned() -> SessionGrant {
        SessionGrant {
            user_id: alice(),
            access_token: Some("token".to_owned()),
            device_id: Some("PHONE".into()),
        }
    }
}

impl Fake {
    pub(crate) async fn answer<T: Canned>(&self, request: impl Debug) -> MasterResult<T> {
        self.enter(format!("{request:?}")).await?;
        Ok(T::canned())
    }

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
        to_device: StreamPosition(4),
        device_lists: StreamPosition(8),
        presence: StreamPosition(1),
    }
}

fn typing_snapshot() -> TypingSnapshot {
    TypingSnapshot {
        epoch: 5,
        position: StreamPosition(12),
        rooms: vec![("!room:test".to_owned(), vec!["@alice:test".to_owned(), "@bob:test".to_owned()])],
    }
}

#[async_trait]
impl Streams for Fake {
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
}

/// Serves `fake` on `address` (port 0 for any) until the returned sender is dropped or fired.
async fn start_on(fake: Arc<Fake>, address: SocketAddr) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind(address).await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(fake, listener, None, async {
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

fn send(device_id: Option<&str>, txn_id: Option<&str>) -> SendEvent {
    SendEvent {
        sender: alice(),
        device_id: device_id.map(Into::into),
        room_id: room(),
        template: EventTemplate::message("m.room.message", json!({ "body": "hi" })),
        txn_id: txn_id.map(str::to_owned),
    }
}

/// Makes `call` through gRPC and checks the master saw exactly `request`.
async fn round_trip<R: Debug + Clone, T>(
    fake: &Fake,
    request: R,
    call: impl AsyncFnOnce(R) -> MasterResult<T>,
) -> T {
    let expected = format!("{request:?}");
    let answer = call(request).await.unwrap();
    assert_eq!(fake.last_call(), expected);
    answer
}

#[tokio::test]
async fn calls_round_trip_exactly() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    let m = &master;
    let f = &fake;

    let register = RegisterRequest {
        username: Some("alice".to_owned()),
        password: Some("hunter2".to_owned()),
        device_id: Some("PHONE".to_owned()),
        initial_device_display_name: Some("Alice's phone".to_owned()),
        inhibit_login: true,
    };
    let grant = round_trip(f, register, async |r| m.register(r).await).await;
    assert_eq!(format!("{grant:?}"), format!("{:?}", SessionGrant::canned()));
    let login = LoginRequest {
        user_id: alice(),
        password: "pw".to_owned(),
        device_id: Some("PHONE".to_owned()),
        initial_device_display_name: None,
    };
    round_trip(f, login, async |r| m.login(r).await).await;
    let check = CheckPassword { user_id: alice(), password: "right".to_owned() };
    assert!(round_trip(f, check, async |r| m.check_password(r).await).await);
    round_trip(f, Logout { access_token: "tok".to_owned() }, async |r| m.logout(r).await).await;
    round_trip(f, LogoutAll { user_id: alice() }, async |r| m.logout_all(r).await).await;
    let set_password = SetPassword {
        user_id: alice(),
        new_password: "new".to_owned(),
        logout_devices: true,
        keep_device: Some("PHONE".into()),
    };
    round_trip(f, set_password, async |r| m.set_password(r).await).await;
    let delete = DeleteDevices { user_id: alice(), device_ids: vec!["A".into(), "B".into()] };
    round_trip(f, delete, async |r| m.delete_devices(r).await).await;
    let rename = RenameDevice { user_id: alice(), device_id: "A".into(), name: "Laptop".to_owned() };
    round_trip(f, rename, async |r| m.rename_device(r).await).await;
    let filter = CreateFilter { user_id: alice(), filter: json!({ "room": { "timeline": { "limit": 5 } } }) };
    assert_eq!(round_trip(f, filter, async |r| m.create_filter(r).await).await, "filter-1");
    let deactivate = crate::DeactivateAccount { user_id: alice(), erase: true };
    round_trip(f, deactivate, async |r| m.deactivate_account(r).await).await;
    let openid = crate::CreateOpenIdToken { user_id: alice() };
    assert_eq!(
        round_trip(f, openid, async |r| m.create_open_id_token(r).await).await,
        crate::OpenIdToken::canned()
    );
    for target in [
        crate::ReportTarget::Event {
            room_id: owned_room_id!("!room:test"),
            event_id: owned_event_id!("$event:test"),
        },
        crate::ReportTarget::Room { room_id: owned_room_id!("!room:test") },
        crate::ReportTarget::User { user_id: owned_user_id!("@bob:test") },
    ] {
        let report =
            crate::FileReport { reporter: alice(), target, reason: "rude".to_owned(), score: Some(-100) };
        round_trip(f, report, async |r| m.file_report(r).await).await;
    }
    let upgrade = crate::UpgradeRoom {
        sender: alice(),
        room_id: owned_room_id!("!room:test"),
        new_version: RoomVersionId::V12,
        additional_creators: vec![owned_user_id!("@bob:test")],
    };
    round_trip(f, upgrade, async |r| m.upgrade_room(r).await).await;

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
    let create = CreateRoom { sender: alice(), request };
    assert_eq!(round_trip(f, create, async |r| m.create_room(r).await).await, OwnedRoomId::canned());
    let send_event = SendEvent {
        template: EventTemplate {
            kind: "m.room.message".to_owned(),
            content: json!({ "msgtype": "m.text", "body": "hi", "nested": [1, 2.5, null] }),
            state_key: None,
            redacts: Some(owned_event_id!("$old:test")),
        },
        ..send(Some("PHONE"), Some("txn-1"))
    };
    assert_eq!(round_trip(f, send_event, async |r| m.send_event(r).await).await, OwnedEventId::canned());
    let ban = UpdateMembership {
        sender: alice(),
        room_id: room(),
        target: owned_user_id!("@bob:test"),
        change: MembershipChange::Ban,
        reason: Some("spam".to_owned()),
    };
    round_trip(f, ban, async |r| m.update_membership(r).await).await;
    round_trip(f, ForgetRoom { user_id: alice(), room_id: room() }, async |r| m.forget_room(r).await).await;
    let profile = SetProfile {
        user_id: alice(),
        field: ProfileField::AvatarUrl,
        value: Some("mxc://test/a".to_owned()),
    };
    round_trip(f, profile, async |r| m.set_profile(r).await).await;
    let alias = SetAlias { user_id: alice(), alias: owned_room_alias_id!("#lobby:test"), room_id: room() };
    round_trip(f, alias, async |r| m.set_alias(r).await).await;
    let alias = DeleteAlias { user_id: alice(), alias: owned_room_alias_id!("#lobby:test") };
    round_trip(f, alias, async |r| m.delete_alias(r).await).await;
    let visibility = SetRoomVisibility { user_id: alice(), room_id: room(), public: true };
    round_trip(f, visibility, async |r| m.set_room_visibility(r).await).await;
    let accept = crate::AcceptEvents {
        origin: "remote.test".to_owned(),
        events: vec![(owned_event_id!("$taken"), r#"{"type":"m.room.message"}"#.to_owned())],
        outliers: vec![(owned_event_id!("$prev"), r#"{"type":"m.room.member"}"#.to_owned())],
        gaps: vec![crate::GapState {
            event_id: owned_event_id!("$prev"),
            state_before: vec![owned_event_id!("$create"), owned_event_id!("$member")],
        }],
    };
    let outcomes = round_trip(f, accept, async |r| m.accept_events(r).await).await;
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].error.is_none());
    let refused = outcomes[1].error.as_ref().unwrap();
    assert_eq!(
        (refused.class.clone(), refused.message.as_str()),
        (ErrorClass::Forbidden, "Rejected by its auth events")
    );
    let make_join = crate::MakeJoin {
        room_id: room(),
        user_id: owned_user_id!("@bob:remote.test"),
        versions: vec!["10".to_owned(), "11".to_owned()],
        leave: true,
        knock: true,
    };
    let made = round_trip(f, make_join, async |r| m.make_join(r).await).await;
    assert_eq!(made, crate::MadeJoin::canned());
    let import = crate::ImportRoom {
        room_id: room(),
        room_version: RoomVersionId::V12,
        join: (owned_event_id!("$join"), r#"{"type":"m.room.member"}"#.to_owned()),
        state: vec![(owned_event_id!("$create"), r#"{"type":"m.room.create"}"#.to_owned())],
        auth_chain: vec![(owned_event_id!("$create"), r#"{"type":"m.room.create"}"#.to_owned())],
        history: vec![(owned_event_id!("$hello"), r#"{"type":"m.room.message"}"#.to_owned())],
    };
    round_trip(f, import, async |r| m.import_room(r).await).await;
    let invite = UpdateMembership {
        sender: alice(),
        room_id: room(),
        target: owned_user_id!("@bob:remote.test"),
        change: MembershipChange::Invite,
        reason: None,
    };
    let prepared = round_trip(f, invite, async |r| m.prepare_invite(r).await).await;
    assert_eq!(prepared, crate::PreparedInvite::canned());
    let countersigned = crate::AcceptEvents {
        origin: "remote.test".to_owned(),
        events: vec![(owned_event_id!("$invite"), r#"{"type":"m.room.member"}"#.to_owned())],
        ..crate::AcceptEvents::default()
    };
    round_trip(f, countersigned, async |r| m.persist_invite(r).await).await;
    let store = crate::StoreInvite {
        room_id: room(),
        room_version: RoomVersionId::V11,
        event: (owned_event_id!("$invite"), r#"{"type":"m.room.member"}"#.to_owned()),
        invite_room_state: json!([{ "type": "m.room.create" }]),
    };
    round_trip(f, store, async |r| m.store_invite(r).await).await;

    let typing = SetTyping { user_id: alice(), room_id: room(), typing: true, timeout_ms: 30_000 };
    round_trip(f, typing, async |r| m.set_typing(r).await).await;
    let receipt = SetReceipt {
        user_id: alice(),
        room_id: room(),
        receipt_type: "m.read".to_owned(),
        event_id: owned_event_id!("$event:test"),
        thread_id: Some("main".to_owned()),
        ts: Some(1_700_000_000_000),
    };
    round_trip(f, receipt, async |r| m.set_receipt(r).await).await;
    let tags = SetAccountData {
        user_id: alice(),
        room_id: Some(room()),
        data_type: "m.tag".to_owned(),
        content: json!({ "tags": { "u.work": { "order": 0.5 } } }),
    };
    round_trip(f, tags, async |r| m.set_account_data(r).await).await;
    let global = SetAccountData {
        user_id: alice(),
        room_id: None,
        data_type: "m.direct".to_owned(),
        content: json!({}),
    };
    round_trip(f, global, async |r| m.set_account_data(r).await).await;

    let upload = UploadKeys {
        user_id: alice(),
        device_id: "PHONE".into(),
        device_keys: Some(json!({ "user_id": "@alice:test", "device_id": "PHONE", "keys": {} })),
        one_time_keys: Some(json!({ "signed_curve25519:AAAAHQ": { "key": "k" } })),
        fallback_keys: None,
    };
    let counts = round_trip(f, upload, async |r| m.upload_keys(r).await).await;
    assert_eq!(counts, OneTimeKeyCounts::canned());
    let claim = ClaimKeys {
        claims: vec![KeyClaim {
            user_id: owned_user_id!("@bob:test"),
            device_id: "BOBPHONE".into(),
            algorithm: "signed_curve25519".to_owned(),
        }],
    };
    assert_eq!(round_trip(f, claim, async |r| m.claim_keys(r).await).await, Vec::<ClaimedKey>::canned());
    let signing = UploadSigningKeys {
        user_id: alice(),
        master_key: Some(json!({ "usage": ["master"] })),
        self_signing_key: None,
        user_signing_key: Some(json!({ "usage": ["user_signing"] })),
    };
    round_trip(f, signing, async |r| m.upload_signing_keys(r).await).await;
    let signatures =
        UploadSignatures { user_id: alice(), signatures: json!({ "@alice:test": { "PHONE": {} } }) };
    let failures = round_trip(f, signatures, async |r| m.upload_signatures(r).await).await;
    assert_eq!(format!("{failures:?}"), format!("{:?}", Vec::<SignatureFailure>::canned()));
    let to_device = SendToDevice {
        sender: alice(),
        sender_device: "PHONE".into(),
        event_type: "m.room_key_request".to_owned(),
        txn_id: "t1".to_owned(),
        body: json!({ "messages": { "@bob:test": { "*": { "action": "cancellation" } } } }),
    };
    round_trip(f, to_device, async |r| m.send_to_device(r).await).await;
    let changed = crate::RemoteDeviceListsChanged { user_ids: vec![owned_user_id!("@bob:remote.test")] };
    round_trip(f, changed, async |r| m.remote_device_lists_changed(r).await).await;
    let auth_data = r#"{"public_key":"abc","signatures":{}}"#.to_owned();
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2".to_owned();
    let create =
        CreateBackupVersion { user_id: alice(), algorithm: algorithm.clone(), auth_data: auth_data.clone() };
    assert_eq!(round_trip(f, create, async |r| m.create_backup_version(r).await).await, 7);
    let update = UpdateBackupVersion { user_id: alice(), version: 7, algorithm, auth_data };
    round_trip(f, update, async |r| m.update_backup_version(r).await).await;
    let delete = DeleteBackupVersion { user_id: alice(), version: 6 };
    round_trip(f, delete, async |r| m.delete_backup_version(r).await).await;
    let key_data = json!({
        "first_message_index": 3,
        "forwarded_count": 1,
        "is_verified": true,
        "session_data": { "ciphertext": "c", "ephemeral": "e", "mac": "m" },
    });
    // The largest count JSON can carry exactly.
    let unverified = json!({
        "first_message_index": 0,
        "forwarded_count": 9_007_199_254_740_991_u64,
        "is_verified": false,
        "session_data": {},
    });
    let body = json!({ "rooms": { "!room:test": { "sessions": { "s1": key_data, "s2": unverified } } } });
    let keys = ganglion_keys::check_room_keys(&body).unwrap();
    let put = PutBackupKeys { user_id: alice(), version: 7, keys };
    let update = round_trip(f, put, async |r| m.put_backup_keys(r).await).await;
    assert_eq!(update, RoomKeysUpdate::canned());
    let delete = DeleteBackupKeys {
        user_id: alice(),
        version: 7,
        room_id: Some(room()),
        session_id: Some("s1".to_owned()),
    };
    round_trip(f, delete, async |r| m.delete_backup_keys(r).await).await;
    let delete = DeleteBackupKeys { user_id: alice(), version: 7, room_id: None, session_id: None };
    round_trip(f, delete, async |r| m.delete_backup_keys(r).await).await;
    use ganglion_events::presence::PresenceState;
    let status = SetPresence {
        user_id: alice(),
        device_id: "PHONE".into(),
        presence: PresenceState::Unavailable,
        status_msg: Some("lunch".to_owned()),
    };
    round_trip(f, status, async |r| m.set_presence(r).await).await;
    let offline = SetPresence {
        user_id: alice(),
        device_id: "PHONE".into(),
        presence: PresenceState::Offline,
        status_msg: None,
    };
    round_trip(f, offline, async |r| m.set_presence(r).await).await;
    let syncing =
        PresenceSyncing { user_id: alice(), device_id: "LAPTOP".into(), presence: PresenceState::Online };
    round_trip(f, syncing, async |r| m.presence_syncing(r).await).await;
    let remote = |presence, status_msg: Option<&str>| crate::RemotePresence {
        user_id: "@bob:remote.example".try_into().unwrap(),
        presence,
        status_msg: status_msg.map(str::to_owned),
        last_active_ago_ms: 1234,
        currently_active: presence == PresenceState::Online,
    };
    let updates = vec![remote(PresenceState::Online, Some("at sea")), remote(PresenceState::Offline, None)];
    round_trip(f, crate::SetRemotePresence { updates }, async |r| m.set_remote_presence(r).await).await;

    assert_eq!(master.positions().await.unwrap(), sync_token());
    assert_eq!(master.typing_snapshot().await.unwrap(), typing_snapshot());
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
        let received =
            master.forget_room(ForgetRoom { user_id: alice(), room_id: room() }).await.unwrap_err();
        assert_eq!((received.class, received.message), (error.class, error.message));
    }
}

#[tokio::test]
async fn bad_input_is_a_typed_invalid_argument() {
    let fake = Arc::new(Fake::default());
    let (address, _stop) = start_on(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let channel = Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let mut rooms = RoomsClient::new(channel.clone());
    let mut ephemeral = EphemeralClient::new(channel.clone());
    let mut key_backup = KeyBackupClient::new(channel.clone());
    let mut presence = ganglion_proto::master::v1::presence_client::PresenceClient::new(channel);

    let bad_user = pb::ForgetRoomRequest { user_id: "alice".to_owned(), room_id: "!room:test".to_owned() };
    let status = rooms.forget_room(bad_user).await.unwrap_err();
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
    let status = ephemeral.set_account_data(bad_json).await.unwrap_err();
    let failure = pb::MasterFailure::decode(status.details()).unwrap();
    assert_eq!(failure.class(), pb::ErrorCode::BadJson);

    let no_template = pb::SendEventRequest {
        sender: "@alice:test".to_owned(),
        room_id: "!room:test".to_owned(),
        ..Default::default()
    };
    let status = rooms.send_event(no_template).await.unwrap_err();
    assert_eq!(pb::MasterFailure::decode(status.details()).unwrap().class(), pb::ErrorCode::InvalidParam);

    let unknown_change = pb::UpdateMembershipRequest {
        sender: "@alice:test".to_owned(),
        room_id: "!room:test".to_owned(),
        target: "@bob:test".to_owned(),
        change: 99,
        reason: None,
    };
    let status = rooms.update_membership(unknown_change).await.unwrap_err();
    assert_eq!(pb::MasterFailure::decode(status.details()).unwrap().class(), pb::ErrorCode::InvalidParam);

    let key = pb::BackupRoomKey {
        room_id: "!room:test".to_owned(),
        session_id: "s1".to_owned(),
        session_data_json: "{}".to_owned(),
        ..Default::default()
    };
    let put = |key: pb::BackupRoomKey| pb::PutBackupKeysRequest {
        user_id: "@alice:test".to_owned(),
        version: 1,
        keys: vec![key],
    };
    let not_an_object = pb::BackupRoomKey { session_data_json: "[]".to_owned(), ..key.clone() };
    let status = key_backup.put_backup_keys(put(not_an_object)).await.unwrap_err();
    assert_eq!(pb::MasterFailure::decode(status.details()).unwrap().class(), pb::ErrorCode::BadJson);
    let beyond_json = pb::BackupRoomKey { first_message_index: 1 << 53, ..key };
    let status = key_backup.put_backup_keys(put(beyond_json)).await.unwrap_err();
    assert_eq!(pb::MasterFailure::decode(status.details()).unwrap().class(), pb::ErrorCode::InvalidParam);
    let no_state = pb::PresenceSyncingRequest {
        user_id: "@alice:test".to_owned(),
        device_id: "PHONE".to_owned(),
        presence: 0,
    };
    let status = presence.presence_syncing(no_state).await.unwrap_err();
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

    let started = Instant::now();
    let sent = master.send_event(send(Some("PHONE"), Some("txn-7"))).await.unwrap();
    assert_eq!(sent, OwnedEventId::canned());
    assert!(started.elapsed() < 2 * TIMEOUT + Duration::from_millis(300), "took {:?}", started.elapsed());
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|call| call.contains("txn_id: Some(\"txn-7\")")), "{calls:?}");
}

#[tokio::test]
async fn send_event_is_not_retried_without_a_device_and_txn_id() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    for (device_id, txn_id) in [(None, Some("txn-8")), (Some("PHONE"), None)] {
        fake.calls.lock().unwrap().clear();
        fake.delays.lock().unwrap().push_back(Duration::from_secs(5));
        let error = master.send_event(send(device_id, txn_id)).await.unwrap_err();
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
        ErrorClass::InvalidSignature,
        ErrorClass::UnsupportedRoomVersion,
        ErrorClass::GuestAccessForbidden,
        ErrorClass::Exclusive,
        ErrorClass::DuplicateAnnotation,
        ErrorClass::BadAlias,
        ErrorClass::WrongRoomKeysVersion { current_version: "42".to_owned() },
        ErrorClass::IncompatibleRoomVersion { room_version: "11".to_owned() },
        ErrorClass::Unavailable,
        ErrorClass::Internal,
    ];
    for class in classes {
        let status = super::status::status_from_error(MasterError::new(class.clone(), "why"));
        let error = super::status::error_from_status(&status);
        assert_eq!((error.class, error.message.as_str()), (class, "why"));
    }
}

#[test]
fn a_status_without_details_is_unavailable_or_internal() {
    use tonic::{Code, Status};
    for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Unknown] {
        let error = super::status::error_from_status(&Status::new(code, "h2 error"));
        assert_eq!(error.class, ErrorClass::Unavailable, "{code:?}");
        assert_eq!(error.message, "The master is unavailable; try again shortly");
    }
    let error = super::status::error_from_status(&Status::unimplemented("no such method"));
    assert_eq!(error.class, ErrorClass::Internal);
}

/// Records what the client asked of the worker after each call.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl ReadYourWrites for Recorder {
    async fn reach(&self, positions: SyncToken) {
        self.seen.lock().unwrap().push(format!("reach {positions}"));
    }

    fn forget_sessions(&self) {
        self.seen.lock().unwrap().push("forget sessions".to_owned());
    }
}

#[tokio::test]
async fn the_worker_waits_for_its_own_writes_as_each_call_asks() {
    let fake = Arc::new(Fake::default());
    let (master, _stop) = start(fake.clone()).await;
    let recorder = Arc::new(Recorder::default());
    let master = master.reading_own_writes(recorder.clone());
    let seen = || std::mem::take(&mut *recorder.seen.lock().unwrap());

    // A write to a stream waits for the positions the master sent along with its answer.
    master.send_event(send(Some("PHONE"), Some("t"))).await.unwrap();
    assert_eq!(seen(), [format!("reach {}", sync_token())]);
    // Revoking sessions drops the cached ones; a write outside the streams waits for nothing.
    master.logout(Logout { access_token: "tok".to_owned() }).await.unwrap();
    assert_eq!(seen(), ["forget sessions"]);
    master
        .set_typing(SetTyping { user_id: alice(), room_id: room(), typing: true, timeout_ms: 1 })
        .await
        .unwrap();
    master.check_password(CheckPassword { user_id: alice(), password: "pw".to_owned() }).await.unwrap();
    // Backups are no stream: the master committed them before answering.
    let put = PutBackupKeys { user_id: alice(), version: 1, keys: Vec::new() };
    master.put_backup_keys(put).await.unwrap();
    assert!(seen().is_empty());
    // A failed call asks nothing of the worker.
    fake.fail_with(MasterError::forbidden("no"));
    assert!(master.send_event(send(Some("PHONE"), Some("u"))).await.is_err());
    assert!(master.logout(Logout { access_token: "tok".to_owned() }).await.is_err());
    assert!(seen().is_empty());
}
