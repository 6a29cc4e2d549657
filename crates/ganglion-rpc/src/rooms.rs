//! The `Rooms` service: rooms, their events and memberships, profiles, aliases and the directory.

use ganglion_events::{
    EventTemplate,
    ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId},
};
use ganglion_proto::master::v1 as pb;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    MasterError,
    wire::{
        AfterCall, Answer, Call, ConvertError, id, ids, json_object, json_value, object_json, optional_id,
        unknown_enum,
    },
};

service! {
    /// Rooms, their events and memberships, profiles, aliases and the room directory.
    pub trait Rooms: rooms_server::Rooms, rooms_client::RoomsClient {
        fn create_room(CreateRoom) -> OwnedRoomId as pb::CreateRoomResponse;
        /// Builds, authorises and persists an event. Idempotent per `(sender, device, txn_id)`:
        /// a retry returns the first event's id.
        fn send_event(SendEvent) -> OwnedEventId as pb::EventIdResponse;
        fn update_membership(UpdateMembership) -> OwnedEventId as pb::EventIdResponse;
        fn forget_room(ForgetRoom) -> () as pb::Done;
        /// Updates the profile and the user's member event in every joined room.
        fn set_profile(SetProfile) -> () as pb::Done;
        fn set_alias(SetAlias) -> () as pb::Done;
        fn delete_alias(DeleteAlias) -> () as pb::Done;
        fn set_room_visibility(SetRoomVisibility) -> () as pb::Done;
        /// Other servers' events, checked by a federation reader: each authorised and persisted
        /// or refused on its own.
        fn accept_events(AcceptEvents) -> Vec<EventOutcome> as pb::AcceptEventsResponse;
        /// The template of a join of another server's user: `{room_version, event}`.
        fn make_join(MakeJoin) -> MadeJoin as pb::MakeJoinResponse;
        /// A room of other servers one of our users joined: persisted with its state and the
        /// join. Answers the join's id.
        fn import_room(ImportRoom) -> OwnedEventId as pb::EventIdResponse;
        /// An invite of another server's user (`change` is `Invite`), built and checked but not
        /// persisted until that server countersigned it.
        fn prepare_invite(UpdateMembership) -> PreparedInvite as pb::PreparedInviteResponse;
        /// The prepared invite, countersigned: authorised again and persisted.
        fn persist_invite(AcceptEvents) -> Vec<EventOutcome> as pb::AcceptEventsResponse;
        /// Another server's invite of one of our users to a room this server is not in.
        fn store_invite(StoreInvite) -> () as pb::Done;
        /// Older events of a room from another server (`/backfill`), kept as history below every
        /// event this server has (not published on the events stream).
        fn backfill(AcceptEvents) -> Vec<EventOutcome> as pb::AcceptEventsResponse;
        /// A user's report of an event, a room or a user, kept for the server's operators.
        fn file_report(FileReport) -> () as pb::Done;
        /// Replaces a room by a new one of `new_version`: the replacement's id.
        fn upgrade_room(UpgradeRoom) -> OwnedRoomId as pb::CreateRoomResponse;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    PrivateChat,
    PublicChat,
    TrustedPrivateChat,
}

/// One entry of `createRoom`'s `initial_state`.
#[derive(Debug, Clone, Deserialize)]
pub struct InitialStateEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state_key: String,
    pub content: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct CreateRoomRequest {
    pub public: bool,
    pub room_alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub room_version: Option<RoomVersionId>,
    pub creation_content: Option<Map<String, Value>>,
    pub initial_state: Vec<InitialStateEvent>,
    pub preset: Option<Preset>,
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub sender: OwnedUserId,
    pub request: CreateRoomRequest,
}

impl Call for CreateRoom {
    type Message = pb::CreateRoomRequest;

    fn into_message(self) -> pb::CreateRoomRequest {
        let request = self.request;
        pb::CreateRoomRequest {
            sender: self.sender.into(),
            public: request.public,
            room_alias_name: request.room_alias_name,
            name: request.name,
            topic: request.topic,
            invite: request.invite.into_iter().map(Into::into).collect(),
            room_version: request.room_version.map(Into::into),
            creation_content_json: request.creation_content.map(object_json),
            initial_state: request
                .initial_state
                .into_iter()
                .map(|event| pb::InitialStateEvent {
                    r#type: event.kind,
                    state_key: event.state_key,
                    content_json: object_json(event.content),
                })
                .collect(),
            preset: request.preset.map_or(pb::Preset::Unspecified, |preset| match preset {
                Preset::PrivateChat => pb::Preset::PrivateChat,
                Preset::PublicChat => pb::Preset::PublicChat,
                Preset::TrustedPrivateChat => pb::Preset::TrustedPrivateChat,
            }) as i32,
            is_direct: request.is_direct,
            power_level_content_override_json: request.power_level_content_override.map(object_json),
        }
    }

    fn from_message(message: pb::CreateRoomRequest) -> Result<Self, ConvertError> {
        let preset = match pb::Preset::try_from(message.preset) {
            Ok(pb::Preset::Unspecified) => None,
            Ok(pb::Preset::PrivateChat) => Some(Preset::PrivateChat),
            Ok(pb::Preset::PublicChat) => Some(Preset::PublicChat),
            Ok(pb::Preset::TrustedPrivateChat) => Some(Preset::TrustedPrivateChat),
            Err(_) => return Err(unknown_enum("preset", message.preset)),
        };
        let initial_state = message
            .initial_state
            .into_iter()
            .map(|event| {
                Ok(InitialStateEvent {
                    kind: event.r#type,
                    state_key: event.state_key,
                    content: json_object("initial_state.content_json", &event.content_json)?,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        let optional_object =
            |field, text: Option<String>| -> Result<Option<Map<String, Value>>, ConvertError> {
                text.as_deref().map(|text| json_object(field, text)).transpose()
            };
        let request = CreateRoomRequest {
            public: message.public,
            room_alias_name: message.room_alias_name,
            name: message.name,
            topic: message.topic,
            invite: ids("invite", message.invite)?,
            room_version: optional_id::<RoomVersionId>("room_version", message.room_version)?,
            creation_content: optional_object("creation_content_json", message.creation_content_json)?,
            initial_state,
            preset,
            is_direct: message.is_direct,
            power_level_content_override: optional_object(
                "power_level_content_override_json",
                message.power_level_content_override_json,
            )?,
        };
        Ok(CreateRoom { sender: id("sender", message.sender)?, request })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

#[derive(Debug, Clone)]
pub struct SendEvent {
    pub sender: OwnedUserId,
    pub device_id: Option<OwnedDeviceId>,
    pub room_id: OwnedRoomId,
    pub template: EventTemplate,
    pub txn_id: Option<String>,
}

impl Call for SendEvent {
    type Message = pb::SendEventRequest;

    fn into_message(self) -> pb::SendEventRequest {
        let template = self.template;
        pb::SendEventRequest {
            sender: self.sender.into(),
            device_id: self.device_id.map(Into::into),
            room_id: self.room_id.into(),
            template: Some(pb::EventTemplate {
                r#type: template.kind,
                content_json: template.content.to_string(),
                state_key: template.state_key,
                redacts: template.redacts.map(Into::into),
            }),
            txn_id: self.txn_id,
        }
    }

    fn from_message(message: pb::SendEventRequest) -> Result<Self, ConvertError> {
        let template = message
            .template
            .ok_or(ConvertError::InvalidParam { field: "template", reason: "missing".to_owned() })?;
        Ok(SendEvent {
            sender: id("sender", message.sender)?,
            device_id: optional_id("device_id", message.device_id)?,
            room_id: id("room_id", message.room_id)?,
            template: EventTemplate {
                kind: template.r#type,
                content: json_value("template.content_json", &template.content_json)?,
                state_key: template.state_key,
                redacts: optional_id("template.redacts", template.redacts)?,
            },
            txn_id: message.txn_id,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }

    fn idempotent(&self) -> bool {
        // The master returns the first event's id for a repeated (sender, device_id, txn_id);
        // without a device it cannot tell a retry from a new send.
        self.device_id.is_some() && self.txn_id.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    Join,
    Invite,
    Leave,
    Kick,
    Ban,
    Unban,
    /// Asks to be let in a room whose join rule is `knock` or `knock_restricted`.
    Knock,
}

#[derive(Debug, Clone)]
pub struct UpdateMembership {
    pub sender: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub target: OwnedUserId,
    pub change: MembershipChange,
    pub reason: Option<String>,
}

impl Call for UpdateMembership {
    type Message = pb::UpdateMembershipRequest;

    fn into_message(self) -> pb::UpdateMembershipRequest {
        let change = match self.change {
            MembershipChange::Join => pb::MembershipChange::Join,
            MembershipChange::Invite => pb::MembershipChange::Invite,
            MembershipChange::Leave => pb::MembershipChange::Leave,
            MembershipChange::Kick => pb::MembershipChange::Kick,
            MembershipChange::Ban => pb::MembershipChange::Ban,
            MembershipChange::Unban => pb::MembershipChange::Unban,
            MembershipChange::Knock => pb::MembershipChange::Knock,
        };
        pb::UpdateMembershipRequest {
            sender: self.sender.into(),
            room_id: self.room_id.into(),
            target: self.target.into(),
            change: change.into(),
            reason: self.reason,
        }
    }

    fn from_message(message: pb::UpdateMembershipRequest) -> Result<Self, ConvertError> {
        let change = match pb::MembershipChange::try_from(message.change) {
            Ok(pb::MembershipChange::Join) => MembershipChange::Join,
            Ok(pb::MembershipChange::Invite) => MembershipChange::Invite,
            Ok(pb::MembershipChange::Leave) => MembershipChange::Leave,
            Ok(pb::MembershipChange::Kick) => MembershipChange::Kick,
            Ok(pb::MembershipChange::Ban) => MembershipChange::Ban,
            Ok(pb::MembershipChange::Unban) => MembershipChange::Unban,
            Ok(pb::MembershipChange::Knock) => MembershipChange::Knock,
            Ok(pb::MembershipChange::Unspecified) | Err(_) => {
                return Err(unknown_enum("change", message.change));
            }
        };
        Ok(UpdateMembership {
            sender: id("sender", message.sender)?,
            room_id: id("room_id", message.room_id)?,
            target: id("target", message.target)?,
            change,
            reason: message.reason,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

#[derive(Debug, Clone)]
pub struct ForgetRoom {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
}

impl Call for ForgetRoom {
    type Message = pb::ForgetRoomRequest;

    fn into_message(self) -> pb::ForgetRoomRequest {
        pb::ForgetRoomRequest { user_id: self.user_id.into(), room_id: self.room_id.into() }
    }

    fn from_message(message: pb::ForgetRoomRequest) -> Result<Self, ConvertError> {
        Ok(ForgetRoom { user_id: id("user_id", message.user_id)?, room_id: id("room_id", message.room_id)? })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    Displayname,
    AvatarUrl,
}

#[derive(Debug, Clone)]
pub struct SetProfile {
    pub user_id: OwnedUserId,
    pub field: ProfileField,
    /// `None` clears the field.
    pub value: Option<String>,
}

impl Call for SetProfile {
    type Message = pb::SetProfileRequest;

    fn into_message(self) -> pb::SetProfileRequest {
        let field = match self.field {
            ProfileField::Displayname => pb::ProfileField::Displayname,
            ProfileField::AvatarUrl => pb::ProfileField::AvatarUrl,
        };
        pb::SetProfileRequest { user_id: self.user_id.into(), field: field.into(), value: self.value }
    }

    fn from_message(message: pb::SetProfileRequest) -> Result<Self, ConvertError> {
        let field = match pb::ProfileField::try_from(message.field) {
            Ok(pb::ProfileField::Displayname) => ProfileField::Displayname,
            Ok(pb::ProfileField::AvatarUrl) => ProfileField::AvatarUrl,
            Ok(pb::ProfileField::Unspecified) | Err(_) => return Err(unknown_enum("field", message.field)),
        };
        Ok(SetProfile { user_id: id("user_id", message.user_id)?, field, value: message.value })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}

#[derive(Debug, Clone)]
pub struct SetAlias {
    pub user_id: OwnedUserId,
    pub alias: OwnedRoomAliasId,
    pub room_id: OwnedRoomId,
}

impl Call for SetAlias {
    type Message = pb::SetAliasRequest;

    fn into_message(self) -> pb::SetAliasRequest {
        pb::SetAliasRequest {
            user_id: self.user_id.into(),
            alias: self.alias.into(),
            room_id: self.room_id.into(),
        }
    }

    fn from_message(message: pb::SetAliasRequest) -> Result<Self, ConvertError> {
        Ok(SetAlias {
            user_id: id("user_id", message.user_id)?,
            alias: id("alias", message.alias)?,
            room_id: id("room_id", message.room_id)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

#[derive(Debug, Clone)]
pub struct DeleteAlias {
    pub user_id: OwnedUserId,
    pub alias: OwnedRoomAliasId,
}

impl Call for DeleteAlias {
    type Message = pb::DeleteAliasRequest;

    fn into_message(self) -> pb::DeleteAliasRequest {
        pb::DeleteAliasRequest { user_id: self.user_id.into(), alias: self.alias.into() }
    }

    fn from_message(message: pb::DeleteAliasRequest) -> Result<Self, ConvertError> {
        Ok(DeleteAlias { user_id: id("user_id", message.user_id)?, alias: id("alias", message.alias)? })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

#[derive(Debug, Clone)]
pub struct SetRoomVisibility {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub public: bool,
}

impl Call for SetRoomVisibility {
    type Message = pb::SetRoomVisibilityRequest;

    fn into_message(self) -> pb::SetRoomVisibilityRequest {
        pb::SetRoomVisibilityRequest {
            user_id: self.user_id.into(),
            room_id: self.room_id.into(),
            public: self.public,
        }
    }

    fn from_message(message: pb::SetRoomVisibilityRequest) -> Result<Self, ConvertError> {
        Ok(SetRoomVisibility {
            user_id: id("user_id", message.user_id)?,
            room_id: id("room_id", message.room_id)?,
            public: message.public,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

/// Events of `origin` for the master to authorise and persist.
#[derive(Debug, Clone, Default)]
pub struct AcceptEvents {
    pub origin: String,
    /// `(event id, canonical JSON without event_id and unsigned)`.
    pub events: Vec<(OwnedEventId, String)>,
    /// Events fetched to learn the state at gaps before `events`, kept as outliers first.
    pub outliers: Vec<(OwnedEventId, String)>,
    /// The state at each prev event of `events` that this server does not have.
    pub gaps: Vec<GapState>,
}

/// The state at a prev event this server does not have, as another server has it.
#[derive(Debug, Clone)]
pub struct GapState {
    /// The missing prev event (one of [`AcceptEvents::outliers`]).
    pub event_id: OwnedEventId,
    /// The room's state before it.
    pub state_before: Vec<OwnedEventId>,
}

impl Call for AcceptEvents {
    type Message = pb::AcceptEventsRequest;

    fn into_message(self) -> pb::AcceptEventsRequest {
        let remote = |events: Vec<(OwnedEventId, String)>| {
            events
                .into_iter()
                .map(|(event_id, json)| pb::RemoteEvent { event_id: event_id.into(), json })
                .collect()
        };
        pb::AcceptEventsRequest {
            origin: self.origin,
            events: remote(self.events),
            outliers: remote(self.outliers),
            gaps: self
                .gaps
                .into_iter()
                .map(|gap| pb::GapState {
                    event_id: gap.event_id.into(),
                    state_before: gap.state_before.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }
    }

    fn from_message(message: pb::AcceptEventsRequest) -> Result<Self, ConvertError> {
        let remote = |events: Vec<pb::RemoteEvent>| {
            events
                .into_iter()
                .map(|event| Ok((id("events.event_id", event.event_id)?, event.json)))
                .collect::<Result<Vec<_>, ConvertError>>()
        };
        let gaps = message
            .gaps
            .into_iter()
            .map(|gap| {
                Ok(GapState {
                    event_id: id("gaps.event_id", gap.event_id)?,
                    state_before: gap
                        .state_before
                        .into_iter()
                        .map(|event_id| id("gaps.state_before", event_id))
                        .collect::<Result<_, ConvertError>>()?,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(AcceptEvents {
            origin: message.origin,
            events: remote(message.events)?,
            outliers: remote(message.outliers)?,
            gaps,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }

    fn idempotent(&self) -> bool {
        true
    }
}

/// What became of one event of [`AcceptEvents`].
#[derive(Debug, Clone)]
pub struct EventOutcome {
    pub event_id: OwnedEventId,
    /// Why it was refused; `None` when it is persisted.
    pub error: Option<MasterError>,
}

/// How the message of a soft-failed event's error starts (allowed by its auth events, refused by
/// the room's current state).
pub const SOFT_FAILED: &str = "Soft-failed";

impl EventOutcome {
    pub fn soft_failed(&self) -> bool {
        self.error.as_ref().is_some_and(|error| error.message.starts_with(SOFT_FAILED))
    }
}

impl Answer<pb::AcceptEventsResponse> for Vec<EventOutcome> {
    fn into_message(self) -> pb::AcceptEventsResponse {
        pb::AcceptEventsResponse {
            outcomes: self
                .into_iter()
                .map(|outcome| pb::EventOutcome {
                    event_id: outcome.event_id.into(),
                    failure: outcome.error.map(|error| crate::grpc::failure_of(&error).0),
                })
                .collect(),
        }
    }

    fn from_message(message: pb::AcceptEventsResponse) -> Result<Self, ConvertError> {
        message
            .outcomes
            .into_iter()
            .map(|outcome| {
                Ok(EventOutcome {
                    event_id: id("outcomes.event_id", outcome.event_id)?,
                    error: outcome.failure.map(crate::grpc::error_of_failure),
                })
            })
            .collect()
    }
}

/// A room of other servers joined by one of our users, checked by the worker that joined.
/// Events are `(event id, canonical JSON without event_id and unsigned)`.
#[derive(Debug, Clone)]
pub struct ImportRoom {
    pub room_id: OwnedRoomId,
    pub room_version: RoomVersionId,
    pub join: (OwnedEventId, String),
    pub state: Vec<(OwnedEventId, String)>,
    /// The auth chain: kept outside the room's state and timeline.
    pub auth_chain: Vec<(OwnedEventId, String)>,
    /// The latest events before the join: the room's timeline as far back as it is known here.
    pub history: Vec<(OwnedEventId, String)>,
}

fn remote_events(events: Vec<(OwnedEventId, String)>) -> Vec<pb::RemoteEvent> {
    events.into_iter().map(|(event_id, json)| pb::RemoteEvent { event_id: event_id.into(), json }).collect()
}

fn from_remote_events(
    field: &'static str,
    events: Vec<pb::RemoteEvent>,
) -> Result<Vec<(OwnedEventId, String)>, ConvertError> {
    events.into_iter().map(|event| Ok((id(field, event.event_id)?, event.json))).collect()
}

impl Call for ImportRoom {
    type Message = pb::ImportRoomRequest;

    fn into_message(self) -> pb::ImportRoomRequest {
        pb::ImportRoomRequest {
            room_id: self.room_id.into(),
            room_version: self.room_version.into(),
            join: remote_events(vec![self.join]).pop(),
            state: remote_events(self.state),
            auth_chain: remote_events(self.auth_chain),
            history: remote_events(self.history),
        }
    }

    fn from_message(message: pb::ImportRoomRequest) -> Result<Self, ConvertError> {
        let join =
            message.join.ok_or(ConvertError::InvalidParam { field: "join", reason: "missing".to_owned() })?;
        Ok(ImportRoom {
            room_id: id("room_id", message.room_id)?,
            room_version: id("room_version", message.room_version)?,
            join: (id("join.event_id", join.event_id)?, join.json),
            state: from_remote_events("state.event_id", message.state)?,
            auth_chain: from_remote_events("auth_chain.event_id", message.auth_chain)?,
            history: from_remote_events("history.event_id", message.history)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }

    fn idempotent(&self) -> bool {
        true
    }
}

/// An invite built for another server to countersign.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedInvite {
    pub room_version: RoomVersionId,
    pub event_id: OwnedEventId,
    /// The signed event's canonical JSON.
    pub json: String,
    /// Stripped state for the invitee.
    pub invite_room_state: Value,
}

impl Answer<pb::PreparedInviteResponse> for PreparedInvite {
    fn into_message(self) -> pb::PreparedInviteResponse {
        pb::PreparedInviteResponse {
            room_version: self.room_version.into(),
            event: Some(pb::RemoteEvent { event_id: self.event_id.into(), json: self.json }),
            invite_room_state_json: self.invite_room_state.to_string(),
        }
    }

    fn from_message(message: pb::PreparedInviteResponse) -> Result<Self, ConvertError> {
        let event = message
            .event
            .ok_or(ConvertError::InvalidParam { field: "event", reason: "missing".to_owned() })?;
        Ok(PreparedInvite {
            room_version: id("room_version", message.room_version)?,
            event_id: id("event.event_id", event.event_id)?,
            json: event.json,
            invite_room_state: json_value("invite_room_state_json", &message.invite_room_state_json)?,
        })
    }
}

/// Another server's invite of one of our users, countersigned by us.
#[derive(Debug, Clone)]
pub struct StoreInvite {
    pub room_id: OwnedRoomId,
    pub room_version: RoomVersionId,
    pub event: (OwnedEventId, String),
    pub invite_room_state: Value,
}

impl Call for StoreInvite {
    type Message = pb::StoreInviteRequest;

    fn into_message(self) -> pb::StoreInviteRequest {
        pb::StoreInviteRequest {
            room_id: self.room_id.into(),
            room_version: self.room_version.into(),
            event: remote_events(vec![self.event]).pop(),
            invite_room_state_json: self.invite_room_state.to_string(),
        }
    }

    fn from_message(message: pb::StoreInviteRequest) -> Result<Self, ConvertError> {
        let event = message
            .event
            .ok_or(ConvertError::InvalidParam { field: "event", reason: "missing".to_owned() })?;
        Ok(StoreInvite {
            room_id: id("room_id", message.room_id)?,
            room_version: id("room_version", message.room_version)?,
            event: (id("event.event_id", event.event_id)?, event.json),
            invite_room_state: json_value("invite_room_state_json", &message.invite_room_state_json)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }

    fn idempotent(&self) -> bool {
        true
    }
}

/// `make_join` for `user_id` (of another server) in a room of ours.
#[derive(Debug, Clone)]
pub struct MakeJoin {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub versions: Vec<String>,
    /// A leave template (`make_leave`) instead of a join.
    pub leave: bool,
    /// A knock template (`make_knock`) instead of a join.
    pub knock: bool,
}

impl Call for MakeJoin {
    type Message = pb::MakeJoinRequest;

    fn into_message(self) -> pb::MakeJoinRequest {
        pb::MakeJoinRequest {
            room_id: self.room_id.into(),
            user_id: self.user_id.into(),
            versions: self.versions,
            leave: self.leave,
            knock: self.knock,
        }
    }

    fn from_message(message: pb::MakeJoinRequest) -> Result<Self, ConvertError> {
        Ok(MakeJoin {
            room_id: id("room_id", message.room_id)?,
            user_id: id("user_id", message.user_id)?,
            versions: message.versions,
            leave: message.leave,
            knock: message.knock,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }

    fn idempotent(&self) -> bool {
        true
    }
}

/// The room's version and the join event's template, for the joining server to sign.
#[derive(Debug, Clone, PartialEq)]
pub struct MadeJoin {
    pub room_version: RoomVersionId,
    pub event: Value,
}

impl Answer<pb::MakeJoinResponse> for MadeJoin {
    fn into_message(self) -> pb::MakeJoinResponse {
        pb::MakeJoinResponse { room_version: self.room_version.into(), event_json: self.event.to_string() }
    }

    fn from_message(message: pb::MakeJoinResponse) -> Result<Self, ConvertError> {
        Ok(MadeJoin {
            room_version: id("room_version", message.room_version)?,
            event: json_value("event_json", &message.event_json)?,
        })
    }
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    Event { room_id: OwnedRoomId, event_id: OwnedEventId },
    Room { room_id: OwnedRoomId },
    User { user_id: OwnedUserId },
}

#[derive(Debug, Clone)]
pub struct FileReport {
    pub reporter: OwnedUserId,
    pub target: ReportTarget,
    pub reason: String,
    pub score: Option<i64>,
}

impl Call for FileReport {
    type Message = pb::FileReportRequest;

    fn into_message(self) -> pb::FileReportRequest {
        let (kind, room_id, event_id, user_id) = match self.target {
            ReportTarget::Event { room_id, event_id } => {
                ("event", room_id.into(), event_id.into(), String::new())
            }
            ReportTarget::Room { room_id } => ("room", room_id.into(), String::new(), String::new()),
            ReportTarget::User { user_id } => ("user", String::new(), String::new(), user_id.into()),
        };
        pb::FileReportRequest {
            reporter: self.reporter.into(),
            kind: kind.to_owned(),
            room_id,
            event_id,
            user_id,
            reason: self.reason,
            score: self.score,
        }
    }

    fn from_message(message: pb::FileReportRequest) -> Result<Self, ConvertError> {
        let target = match message.kind.as_str() {
            "event" => ReportTarget::Event {
                room_id: id("room_id", message.room_id)?,
                event_id: id("event_id", message.event_id)?,
            },
            "room" => ReportTarget::Room { room_id: id("room_id", message.room_id)? },
            "user" => ReportTarget::User { user_id: id("user_id", message.user_id)? },
            _ => {
                return Err(ConvertError::InvalidParam {
                    field: "kind",
                    reason: format!("unknown kind {}", message.kind),
                });
            }
        };
        Ok(FileReport {
            reporter: id("reporter", message.reporter)?,
            target,
            reason: message.reason,
            score: message.score,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::Nothing
    }
}

#[derive(Debug, Clone)]
pub struct UpgradeRoom {
    pub sender: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub new_version: RoomVersionId,
    /// Room version 12 on: more creators of the new room.
    pub additional_creators: Vec<OwnedUserId>,
}

impl Call for UpgradeRoom {
    type Message = pb::UpgradeRoomRequest;

    fn into_message(self) -> pb::UpgradeRoomRequest {
        pb::UpgradeRoomRequest {
            sender: self.sender.into(),
            room_id: self.room_id.into(),
            new_version: self.new_version.into(),
            additional_creators: self.additional_creators.into_iter().map(Into::into).collect(),
        }
    }

    fn from_message(message: pb::UpgradeRoomRequest) -> Result<Self, ConvertError> {
        Ok(UpgradeRoom {
            sender: id("sender", message.sender)?,
            room_id: id("room_id", message.room_id)?,
            new_version: id("new_version", message.new_version)?,
            additional_creators: ids("additional_creators", message.additional_creators)?,
        })
    }

    fn after(&self) -> AfterCall {
        AfterCall::AwaitReplication
    }
}
