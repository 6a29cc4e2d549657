//! Room writes: creation, events, membership, profile propagation, aliases and visibility.

use std::collections::BTreeMap;

use ganglion_config::EncryptionByDefault;
use ganglion_events::{
    EventTemplate,
    ruma::{
        OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomVersionId,
        UserId,
    },
};
use ganglion_rpc::{CreateRoomRequest, MasterError, MasterResult, MembershipChange, Preset, ProfileField};
use ganglion_storage::{accounts as account_store, relations as relation_store, rooms as room_store};
use ganglion_types::ErrorClass;
use serde_json::{Map, Value, json};

use crate::{
    MasterService, internal, power,
    writer::{Batch, check_template},
};

/// The longest transaction id, in bytes. The spec sets none; ids are stored in a unique index,
/// which PostgreSQL cannot build over a few KiB, and 255 is the limit of every other identifier.
const MAX_TXN_ID_BYTES: usize = 255;

/// Room-dependent bytes a member event may add to its template: a room id (up to 255 bytes),
/// the auth and prev event ids, depth and timestamp. A profile that leaves less room than this
/// is refused before any member event is built.
const MEMBER_EVENT_ROOM_BYTES: usize = 1024;

pub(crate) async fn send_event(
    svc: &MasterService,
    sender: &OwnedUserId,
    device_id: Option<&OwnedDeviceId>,
    room_id: &OwnedRoomId,
    template: EventTemplate,
    txn_id: Option<&str>,
) -> MasterResult<OwnedEventId> {
    if !template.content.is_object() {
        return Err(MasterError::bad_json("Event content must be a JSON object"));
    }
    check_template(&template, Some(room_id), sender)?;
    if let Some(txn_id) = txn_id
        && txn_id.len() > MAX_TXN_ID_BYTES
    {
        return Err(MasterError::invalid_param(format!(
            "The transaction id is longer than the maximum of {MAX_TXN_ID_BYTES} bytes"
        )));
    }
    crate::sends::submit(&svc.send_queue, |reply| crate::sends::SendJob {
        sender: sender.clone(),
        device_id: device_id.cloned(),
        room_id: room_id.clone(),
        template,
        txn_id: txn_id.map(str::to_owned),
        reply,
        span: tracing::Span::current(),
    })
    .await
}

/// Appends a client's event to the batch, with the checks the client API adds to the auth
/// rules.
pub(crate) async fn append_send(
    batch: &mut Batch<'_>,
    sender: &OwnedUserId,
    room_id: &OwnedRoomId,
    template: &EventTemplate,
    device_id: Option<&OwnedDeviceId>,
    txn_id: Option<&str>,
) -> MasterResult<OwnedEventId> {
    if template.kind == "m.room.create" {
        return Err(MasterError::forbidden("A room has exactly one m.room.create event"));
    }
    if template.kind == "m.room.redaction" {
        check_redaction(batch, sender, room_id, template).await?;
    }
    if template.state_key.is_none() {
        check_relation(batch, sender, template).await?;
    }
    if template.kind == "m.room.canonical_alias" && template.state_key.as_deref() == Some("") {
        let own_server = batch.server_name();
        check_canonical_alias(batch, own_server, room_id, template).await?;
    }
    let txn = match (device_id, txn_id) {
        (Some(device_id), Some(txn_id)) => Some((device_id, txn_id)),
        _ => None,
    };
    let event = batch.append(room_id, sender, template, txn).await?;
    Ok(event.pdu.event_id.clone())
}

/// The aliases of an `m.room.canonical_alias` (`alias` and `alt_aliases`) must be valid, and
/// those of this server must exist and point to the room (400 `M_BAD_ALIAS` otherwise, as the
/// spec asks). Other servers' aliases are not looked up.
async fn check_canonical_alias(
    batch: &mut Batch<'_>,
    own_server: String,
    room_id: &OwnedRoomId,
    template: &EventTemplate,
) -> MasterResult<()> {
    let content = &template.content;
    let mut aliases = Vec::new();
    match content.get("alias") {
        None | Some(Value::Null) => {}
        Some(Value::String(alias)) => aliases.push(alias.clone()),
        Some(_) => return Err(MasterError::invalid_param("`alias` must be a string")),
    }
    match content.get("alt_aliases") {
        None => {}
        Some(Value::Array(alt)) => {
            for alias in alt {
                let Some(alias) = alias.as_str() else {
                    return Err(MasterError::invalid_param("`alt_aliases` must be strings"));
                };
                aliases.push(alias.to_owned());
            }
        }
        Some(_) => return Err(MasterError::invalid_param("`alt_aliases` must be a list")),
    }
    for alias in aliases {
        let parsed = RoomAliasId::parse(&alias)
            .map_err(|_| MasterError::invalid_param(format!("{alias:?} is not a room alias")))?;
        if parsed.server_name().as_str() != own_server {
            continue;
        }
        let conn = batch.connection().await?;
        let target = room_store::room_id_by_alias(conn, parsed.as_str()).await.map_err(internal)?;
        if target.as_deref() != Some(room_id.as_str()) {
            return Err(MasterError::new(
                ErrorClass::BadAlias,
                format!("The alias {alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

/// What the spec asks a server to refuse of a client's relation: a thread started off an event
/// that itself relates to another (400 `M_UNKNOWN`), and a second annotation with the same key
/// by the same user on the same event (400 `M_DUPLICATE_ANNOTATION`). Checked under the writer
/// lock, so two such sends at once cannot both pass.
async fn check_relation(
    batch: &mut Batch<'_>,
    sender: &OwnedUserId,
    template: &EventTemplate,
) -> MasterResult<()> {
    let Some(relates_to) = template.content.get("m.relates_to") else { return Ok(()) };
    let (Some(rel_type), Some(parent)) = (
        relates_to.get("rel_type").and_then(Value::as_str),
        relates_to.get("event_id").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    match rel_type {
        "m.thread" => {
            let conn = batch.connection().await?;
            if relation_store::rel_type_of(conn, parent).await.map_err(internal)?.is_some() {
                return Err(MasterError::new(
                    ErrorClass::Unknown,
                    "A thread cannot start from an event that relates to another",
                ));
            }
        }
        "m.annotation" => {
            let Some(key) = relates_to.get("key").and_then(Value::as_str) else { return Ok(()) };
            let conn = batch.connection().await?;
            if relation_store::annotation_exists(conn, parent, key, sender.as_str(), &template.kind)
                .await
                .map_err(internal)?
            {
                return Err(MasterError::new(
                    ErrorClass::DuplicateAnnotation,
                    "You already annotated this event with this key",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Users may redact their own events; redacting another's needs the `redact` power level.
async fn check_redaction(
    batch: &mut Batch<'_>,
    sender: &OwnedUserId,
    room_id: &OwnedRoomId,
    template: &EventTemplate,
) -> MasterResult<()> {
    let Some(target_id) = &template.redacts else {
        return Err(MasterError::bad_json("Redaction without a target event"));
    };
    let target = batch.event_by_id(target_id.as_str()).await?;
    let Some(target) = target.filter(|target| &target.pdu.room_id == room_id) else {
        return Err(MasterError::not_found("Event not found in this room"));
    };
    if target.pdu.sender == *sender {
        return Ok(());
    }
    let head = batch.head(room_id).await?.ok_or_else(|| MasterError::not_found("Unknown room"))?;
    let create = batch.state_event(&head, "m.room.create", "").await?;
    let power_levels = batch.state_event(&head, "m.room.power_levels", "").await?;
    let Some(create) = create else { return Err(MasterError::internal("room without create event")) };
    let power_levels = power_levels.as_ref().map(|event| &*event.pdu);
    let mine = power::user_power(&head.rules.authorization, &create.pdu, power_levels, sender.as_str());
    if mine < power::required_power(power_levels, "redact", 50) {
        return Err(MasterError::forbidden("You may only redact your own events"));
    }
    Ok(())
}

fn member_content(membership: &str, profile: &account_store::Profile, reason: Option<String>) -> Value {
    let mut content = Map::new();
    content.insert("membership".into(), json!(membership));
    if let Some(displayname) = &profile.displayname {
        content.insert("displayname".into(), json!(displayname));
    }
    if let Some(avatar_url) = &profile.avatar_url {
        content.insert("avatar_url".into(), json!(avatar_url));
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), json!(reason));
    }
    Value::Object(content)
}

async fn profile(svc: &MasterService, user_id: &str) -> MasterResult<account_store::Profile> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    Ok(account_store::profile_of_user(&mut conn, user_id).await.map_err(internal)?.unwrap_or_default())
}

pub(crate) async fn update_membership(
    svc: &MasterService,
    sender: &OwnedUserId,
    room_id: &OwnedRoomId,
    target: &OwnedUserId,
    change: MembershipChange,
    reason: Option<String>,
) -> MasterResult<OwnedEventId> {
    let (membership, target) = match change {
        MembershipChange::Join => ("join", sender),
        MembershipChange::Leave => ("leave", sender),
        MembershipChange::Invite => ("invite", target),
        MembershipChange::Kick | MembershipChange::Unban => ("leave", target),
        MembershipChange::Ban => ("ban", target),
        MembershipChange::Knock => ("knock", sender),
    };
    // The member event of a join, invite or knock carries the profile of the user it is about.
    let profile = match change {
        MembershipChange::Join | MembershipChange::Invite | MembershipChange::Knock => {
            profile(svc, target.as_str()).await?
        }
        _ => account_store::Profile::default(),
    };
    let content = member_content(membership, &profile, reason);
    let mut template = EventTemplate::state("m.room.member", target.as_str(), content);
    check_template(&template, Some(room_id), sender)?;
    if change == MembershipChange::Invite && target.server_name() == svc.config.server_name.as_str() {
        let mut conn = svc.db.conn().await.map_err(internal)?;
        if !account_store::user_exists(&mut conn, target.as_str()).await.map_err(internal)? {
            return Err(MasterError::not_found("Unknown user"));
        }
    }
    let mut batch = Batch::begin(svc).await?;
    let Some(head) = batch.head(room_id).await? else {
        return Err(MasterError::not_found("Unknown room"));
    };
    let current = batch.state_event(&head, "m.room.member", target.as_str()).await?;
    let current = current.as_ref().and_then(|event| {
        event.pdu.content_value().get("membership").and_then(Value::as_str).map(str::to_owned)
    });
    match change {
        MembershipChange::Unban if current.as_deref() != Some("ban") => {
            return Err(MasterError::forbidden("The user is not banned"));
        }
        MembershipChange::Kick if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) => {
            return Err(MasterError::forbidden("The user is not in the room"));
        }
        MembershipChange::Join if current.as_deref() == Some("join") => {
            // Joining twice is idempotent for the client; no new event unless the profile moved.
        }
        MembershipChange::Knock if matches!(current.as_deref(), Some("join" | "invite" | "ban")) => {
            return Err(MasterError::forbidden(
                "You cannot knock on a room you are in, invited to or banned from",
            ));
        }
        MembershipChange::Join => {
            if let Some(authoriser) = restricted_join_authoriser(&mut batch, &head, sender).await?
                && let Some(content) = template.content.as_object_mut()
            {
                content.insert("join_authorised_via_users_server".into(), json!(authoriser));
            }
        }
        _ => {}
    }
    let event = batch.append(room_id, sender, &template, None).await?;
    batch.commit().await?;
    Ok(event.pdu.event_id.clone())
}

/// Under a `restricted` or `knock_restricted` join rule, the member of ours who authorises
/// `user`'s join (`join_authorised_via_users_server`): a joined local user who may invite, when
/// `user` is joined to one of the rooms the rule allows. `None` when the rule is another, the
/// user is already invited or joined (no authorisation needed), or nothing lets them in (the
/// auth rules then refuse the join).
pub(crate) async fn restricted_join_authoriser(
    batch: &mut Batch<'_>,
    head: &crate::writer::RoomHead,
    user: &UserId,
) -> MasterResult<Option<String>> {
    if !head.rules.authorization.restricted_join_rule {
        return Ok(None);
    }
    let Some(join_rules) = batch.state_event(head, "m.room.join_rules", "").await? else { return Ok(None) };
    let content = join_rules.pdu.content_value();
    if !matches!(content.get("join_rule").and_then(Value::as_str), Some("restricted" | "knock_restricted")) {
        return Ok(None);
    }
    let current = batch.state_event(head, "m.room.member", user.as_str()).await?;
    if current.is_some_and(|event| matches!(event.pdu.membership().as_str(), "join" | "invite")) {
        return Ok(None);
    }
    let allowed: Vec<String> = content
        .get("allow")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|allow| allow.get("type").and_then(Value::as_str) == Some("m.room_membership"))
        .filter_map(|allow| allow.get("room_id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut in_allowed_room = false;
    for room_id in allowed {
        let conn = batch.connection().await?;
        if let Some(room) = room_store::room_by_id(conn, &room_id).await.map_err(internal)?
            && room_store::membership_of_user_in_room(conn, room.room_nid, user.as_str())
                .await
                .map_err(internal)?
                .is_some_and(|row| row.membership == "join")
        {
            in_allowed_room = true;
            break;
        }
    }
    if !in_allowed_room {
        return Ok(None);
    }
    let create = batch.state_event(head, "m.room.create", "").await?;
    let power_levels = batch.state_event(head, "m.room.power_levels", "").await?;
    let Some(create) = create else { return Err(MasterError::internal("room without create event")) };
    let power_levels = power_levels.as_ref().map(|event| &*event.pdu);
    let needed = power::required_power(power_levels, "invite", 0);
    Ok(head
        .local_joined
        .iter()
        .find(|member| {
            power::user_power(&head.rules.authorization, &create.pdu, power_levels, member.as_str()) >= needed
        })
        .map(ToString::to_string))
}

pub(crate) async fn forget_room(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
) -> MasterResult<()> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let Some(room) = room_store::room_by_id(&mut conn, room_id.as_str()).await.map_err(internal)? else {
        return Err(MasterError::not_found("Unknown room"));
    };
    let membership = room_store::membership_of_user_in_room(&mut conn, room.room_nid, user_id.as_str())
        .await
        .map_err(internal)?;
    match membership.as_ref().map(|m| m.membership.as_str()) {
        Some("leave" | "ban") => {
            room_store::set_membership_forgotten(&mut conn, room.room_nid, user_id.as_str())
                .await
                .map_err(internal)
        }
        Some(_) => Err(MasterError::new(ErrorClass::Unknown, "You must leave the room before forgetting it")),
        None => Err(MasterError::not_found("You were never in this room")),
    }
}

pub(crate) async fn set_profile(
    svc: &MasterService,
    user_id: &OwnedUserId,
    field: ProfileField,
    value: Option<String>,
) -> MasterResult<()> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let Some(mut profile) =
        account_store::profile_of_user(&mut conn, user_id.as_str()).await.map_err(internal)?
    else {
        return Err(MasterError::not_found("Unknown user"));
    };
    match field {
        ProfileField::Displayname => profile.displayname = value.filter(|v| !v.is_empty()),
        ProfileField::AvatarUrl => profile.avatar_url = value.filter(|v| !v.is_empty()),
    }
    // Refused here rather than room by room: the member event of every joined room carries it.
    let template =
        EventTemplate::state("m.room.member", user_id.as_str(), member_content("join", &profile, None));
    if ganglion_events::minimum_pdu_bytes(&template, None, user_id) + MEMBER_EVENT_ROOM_BYTES
        > ganglion_events::MAX_PDU_BYTES
    {
        return Err(MasterError::new(
            ErrorClass::TooLarge,
            format!(
                "The profile would make member events larger than the maximum of {} bytes",
                ganglion_events::MAX_PDU_BYTES
            ),
        ));
    }
    account_store::set_profile(&mut conn, user_id.as_str(), &profile).await.map_err(internal)?;
    let memberships = room_store::memberships_of_user(&mut conn, user_id.as_str()).await.map_err(internal)?;
    let joined: Vec<_> =
        memberships.into_iter().filter(|m| m.membership == "join").map(|m| m.room_nid).collect();
    let rooms = room_store::rooms_by_nid(&mut conn, &joined).await.map_err(internal)?;
    drop(conn);
    for room in rooms {
        let Ok(room_id) = OwnedRoomId::try_from(room.room_id.as_str()) else { continue };
        let mut batch = Batch::begin(svc).await?;
        // A room where the user may no longer change their member event (e.g. a racing ban)
        // keeps the old profile; the profile itself is already updated.
        match batch.append(&room_id, user_id, &template, None).await {
            Ok(_) => {
                batch.commit().await?;
            }
            Err(error) if error.class == ErrorClass::Forbidden => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn power_levels_content(
    rules: &ganglion_events::ruma::room_version_rules::RoomVersionRules,
    creator: &OwnedUserId,
    preset: Preset,
    invite: &[OwnedUserId],
    override_content: Option<&Map<String, Value>>,
) -> Value {
    let mut users = Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), json!(100));
        if preset == Preset::TrustedPrivateChat {
            for user in invite {
                users.insert(user.to_string(), json!(100));
            }
        }
    }
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": { "room": 50 },
    });
    if let (Some(override_content), Some(object)) = (override_content, content.as_object_mut()) {
        for (key, value) in override_content {
            object.insert(key.clone(), value.clone());
        }
    }
    content
}

pub(crate) async fn create_room(
    svc: &MasterService,
    sender: &OwnedUserId,
    request: CreateRoomRequest,
) -> MasterResult<OwnedRoomId> {
    let version = match &request.room_version {
        Some(version) => version.clone(),
        None => RoomVersionId::try_from(svc.config.rooms.default_version.as_str())
            .map_err(|e| MasterError::internal(e.to_string()))?,
    };
    let Some(rules) = ganglion_events::rules_for(&version) else {
        return Err(MasterError::new(
            ErrorClass::UnsupportedRoomVersion,
            format!("Room version {version} is not supported"),
        ));
    };
    // Parsed only once the events are known not to be too large: a 100 KB alias is a too-large
    // `m.room.canonical_alias` before it is an invalid alias.
    let alias_text =
        request.room_alias_name.as_ref().map(|name| format!("#{name}:{}", svc.config.server_name));
    let preset =
        request.preset.unwrap_or(if request.public { Preset::PublicChat } else { Preset::PrivateChat });
    let sender_profile = profile(svc, sender.as_str()).await?;

    let mut create_content = request.creation_content.clone().unwrap_or_default();
    create_content.insert("room_version".into(), json!(version.as_str()));
    if rules.authorization.use_room_create_sender {
        create_content.remove("creator");
    } else {
        create_content.insert("creator".into(), json!(sender.as_str()));
    }
    if rules.authorization.additional_room_creators
        && preset == Preset::TrustedPrivateChat
        && !request.invite.is_empty()
    {
        let creators: Vec<Value> = request.invite.iter().map(|user| json!(user.as_str())).collect();
        create_content.insert("additional_creators".into(), Value::Array(creators));
    }

    // Later entries of the same (type, state_key) replace earlier ones, in spec order.
    let mut state: Vec<((String, String), Value)> = Vec::new();
    let mut put = |kind: &str, key: &str, content: Value| {
        let id = (kind.to_owned(), key.to_owned());
        state.retain(|(existing, _)| existing != &id);
        state.push((id, content));
    };
    put(
        "m.room.power_levels",
        "",
        power_levels_content(
            &rules,
            sender,
            preset,
            &request.invite,
            request.power_level_content_override.as_ref(),
        ),
    );
    if let Some(alias) = &alias_text {
        put("m.room.canonical_alias", "", json!({ "alias": alias }));
    }
    let join_rule = if preset == Preset::PublicChat { "public" } else { "invite" };
    put("m.room.join_rules", "", json!({ "join_rule": join_rule }));
    put("m.room.history_visibility", "", json!({ "history_visibility": "shared" }));
    let guest_access = if preset == Preset::PublicChat { "forbidden" } else { "can_join" };
    put("m.room.guest_access", "", json!({ "guest_access": guest_access }));
    let encrypted = match svc.config.rooms.encryption_enabled_by_default_for_room_type {
        EncryptionByDefault::All => true,
        EncryptionByDefault::Invite => preset != Preset::PublicChat,
        EncryptionByDefault::Off => false,
    };
    if encrypted {
        // Before `initial_state`, which may name another algorithm.
        put("m.room.encryption", "", json!({ "algorithm": "m.megolm.v1.aes-sha2" }));
    }
    for event in &request.initial_state {
        if event.kind == "m.room.create" || event.kind == "m.room.member" {
            return Err(MasterError::bad_json(format!("initial_state may not contain {}", event.kind)));
        }
        put(&event.kind, &event.state_key, Value::Object(event.content.clone()));
    }
    if let Some(name) = &request.name {
        put("m.room.name", "", json!({ "name": name }));
    }
    if let Some(topic) = &request.topic {
        put(
            "m.room.topic",
            "",
            json!({ "topic": topic, "m.topic": [{ "body": topic, "mimetype": "text/plain" }] }),
        );
    }

    let create = Value::Object(create_content);
    // After the create event: the creator's join, then power levels so the creator may send the
    // rest, the other state in order, and the invites.
    let mut templates = vec![EventTemplate::state(
        "m.room.member",
        sender.as_str(),
        member_content("join", &sender_profile, None),
    )];
    templates
        .extend(state.into_iter().map(|((kind, key), content)| EventTemplate::state(kind, key, content)));
    let mut invite_profiles = BTreeMap::new();
    // Other servers' users are invited once the room exists, through their servers.
    let own_server = svc.config.server_name.as_str();
    for user in request.invite.iter().filter(|user| user.server_name().as_str() == own_server) {
        if !invite_profiles.contains_key(user) {
            invite_profiles.insert(user.clone(), profile(svc, user.as_str()).await?);
        }
    }
    for (user, user_profile) in &invite_profiles {
        let mut content = member_content("invite", user_profile, None);
        if request.is_direct {
            content["is_direct"] = json!(true);
        }
        templates.push(EventTemplate::state("m.room.member", user.as_str(), content));
    }

    // Every event is checked before the batch starts, sizes first (413) then identifiers (400),
    // so a request that cannot succeed leaves no room behind and holds no lock.
    let create_template = EventTemplate::state("m.room.create", "", create.clone());
    for template in std::iter::once(&create_template).chain(&templates) {
        ganglion_events::check_template_size(template, None, sender).map_err(internal)?;
    }
    for template in std::iter::once(&create_template).chain(&templates) {
        ganglion_events::check_template_fields(template).map_err(internal)?;
    }
    let alias = match &alias_text {
        Some(alias) => {
            if alias.len() > ganglion_events::MAX_EVENT_FIELD_BYTES {
                return Err(MasterError::invalid_param(format!(
                    "Invalid room_alias_name: the alias is longer than {} bytes",
                    ganglion_events::MAX_EVENT_FIELD_BYTES
                )));
            }
            let alias = RoomAliasId::parse(alias)
                .map_err(|e| MasterError::invalid_param(format!("Invalid room_alias_name: {e}")))?;
            let mut conn = svc.db.conn().await.map_err(internal)?;
            if room_store::room_id_by_alias(&mut conn, alias.as_str()).await.map_err(internal)?.is_some() {
                return Err(MasterError::new(ErrorClass::RoomInUse, "Room alias already taken"));
            }
            Some(alias)
        }
        None => None,
    };

    let mut batch = Batch::begin(svc).await?;
    let (room_id, _) = batch.create_room(&version, sender, create, request.public).await?;
    for template in &templates {
        batch.append(&room_id, sender, template, None).await?;
    }
    if let Some(alias) = &alias {
        let conn = batch.connection().await?;
        if !room_store::insert_alias(conn, alias.as_str(), room_id.as_str(), sender.as_str())
            .await
            .map_err(internal)?
        {
            return Err(MasterError::new(ErrorClass::RoomInUse, "Room alias already taken"));
        }
    }
    batch.commit().await?;
    Ok(room_id)
}

pub(crate) async fn set_alias(
    svc: &MasterService,
    user_id: &OwnedUserId,
    alias: &OwnedRoomAliasId,
    room_id: &OwnedRoomId,
) -> MasterResult<()> {
    if alias.server_name() != svc.config.server_name.as_str() {
        return Err(MasterError::invalid_param("Alias must be on this server"));
    }
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let Some(room) = room_store::room_by_id(&mut conn, room_id.as_str()).await.map_err(internal)? else {
        return Err(MasterError::not_found("Unknown room"));
    };
    // As Synapse does by default: only a member may point an alias at a room, or anyone could
    // dress up a stranger's private room under a name of their choosing.
    let membership = room_store::membership_of_user_in_room(&mut conn, room.room_nid, user_id.as_str())
        .await
        .map_err(internal)?;
    if membership.is_none_or(|m| m.membership != "join") {
        return Err(MasterError::forbidden("You must be in the room to create an alias for it"));
    }
    if !room_store::insert_alias(&mut conn, alias.as_str(), room_id.as_str(), user_id.as_str())
        .await
        .map_err(internal)?
    {
        return Err(MasterError::new(ErrorClass::AliasInUse, "Room alias already exists"));
    }
    Ok(())
}

pub(crate) async fn delete_alias(
    svc: &MasterService,
    user_id: &OwnedUserId,
    alias: &OwnedRoomAliasId,
) -> MasterResult<()> {
    let mut conn = svc.db.conn().await.map_err(internal)?;
    let Some((room_id, creator)) = room_store::alias(&mut conn, alias.as_str()).await.map_err(internal)?
    else {
        return Err(MasterError::not_found("Unknown alias"));
    };
    drop(conn);
    if creator != user_id.as_str() {
        let room_id = OwnedRoomId::try_from(room_id).map_err(|e| MasterError::internal(e.to_string()))?;
        require_state_power(svc, user_id, &room_id).await?;
    }
    let mut conn = svc.db.conn().await.map_err(internal)?;
    room_store::delete_alias(&mut conn, alias.as_str()).await.map_err(internal)?;
    Ok(())
}

pub(crate) async fn set_room_visibility(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    public: bool,
) -> MasterResult<()> {
    let room_nid = require_state_power(svc, user_id, room_id).await?;
    let mut conn = svc.db.conn().await.map_err(internal)?;
    room_store::set_room_public(&mut conn, room_nid, public).await.map_err(internal)
}

/// Requires the user to have the `state_default` power level in the room; returns its NID.
async fn require_state_power(
    svc: &MasterService,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
) -> MasterResult<ganglion_types::RoomNid> {
    let mut batch = Batch::begin(svc).await?;
    let Some(head) = batch.head(room_id).await? else { return Err(MasterError::not_found("Unknown room")) };
    let create = batch.state_event(&head, "m.room.create", "").await?;
    let power_levels = batch.state_event(&head, "m.room.power_levels", "").await?;
    let Some(create) = create else { return Err(MasterError::internal("room without create event")) };
    let power_levels = power_levels.as_ref().map(|event| &*event.pdu);
    let mine = power::user_power(&head.rules.authorization, &create.pdu, power_levels, user_id.as_str());
    if mine < power::required_power(power_levels, "state_default", 50) {
        return Err(MasterError::forbidden("You do not have permission to do that in this room"));
    }
    Ok(head.room_nid)
}

/// Keeps a user's report for the server's operators (the client-reader checked that its target
/// exists and that the reporter may see it).
pub(crate) async fn file_report(svc: &MasterService, report: ganglion_rpc::FileReport) -> MasterResult<()> {
    use ganglion_rpc::ReportTarget;
    let (kind, room_id, event_id, user_id) = match &report.target {
        ReportTarget::Event { room_id, event_id } => {
            ("event", Some(room_id.to_string()), Some(event_id.to_string()), None)
        }
        ReportTarget::Room { room_id } => ("room", Some(room_id.to_string()), None, None),
        ReportTarget::User { user_id } => ("user", None, None, Some(user_id.to_string())),
    };
    let row = ganglion_storage::reports::ReportRow {
        report_id: 0,
        kind: kind.to_owned(),
        reporter: report.reporter.to_string(),
        room_id,
        event_id,
        user_id,
        reason: report.reason,
        score: report.score,
        received_ts: 0,
    };
    let mut conn = svc.db.conn().await.map_err(internal)?;
    ganglion_storage::reports::insert_report(&mut conn, &row, ganglion_storage::now_ms())
        .await
        .map_err(internal)?;
    tracing::warn!(
        reporter = %row.reporter,
        kind,
        room_id = row.room_id.as_deref(),
        event_id = row.event_id.as_deref(),
        user_id = row.user_id.as_deref(),
        "a user filed a report"
    );
    Ok(())
}

/// The state an upgrade copies to the replacement room, as the spec recommends (membership
/// never: other servers' users cannot be joined for them).
const TRANSFERRED_STATE: [&str; 9] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.power_levels",
];

/// Replaces a room by a new one of another version, as the spec's room upgrades module says:
/// the sender must be allowed to send `m.room.tombstone`; the new room's create event names its
/// `predecessor` (and keeps the old `type`); the transferable state is copied; our aliases move
/// (the canonical alias with them); the directory listing moves; the old room gets its
/// tombstone, and power levels that keep anyone but moderators from talking or inviting.
pub(crate) async fn upgrade_room(
    svc: &MasterService,
    request: ganglion_rpc::UpgradeRoom,
) -> MasterResult<OwnedRoomId> {
    let ganglion_rpc::UpgradeRoom { sender, room_id, new_version, additional_creators } = request;
    let Some(new_rules) = ganglion_events::rules_for(&new_version) else {
        return Err(MasterError::new(
            ErrorClass::UnsupportedRoomVersion,
            format!("Room version {new_version} is not supported"),
        ));
    };
    // What the old room holds, read under the writer and written nothing.
    let (copied, room_type, federate, latest, old_power, canonical) = {
        let mut batch = Batch::begin(svc).await?;
        let Some(head) = batch.head(&room_id).await? else {
            return Err(MasterError::not_found("Unknown room"));
        };
        let member = batch.state_event(&head, "m.room.member", sender.as_str()).await?;
        if member.is_none_or(|event| event.pdu.membership() != "join") {
            return Err(MasterError::forbidden("You are not joined to this room"));
        }
        let Some(create) = batch.state_event(&head, "m.room.create", "").await? else {
            return Err(MasterError::internal("room without create event"));
        };
        let power_levels = batch.state_event(&head, "m.room.power_levels", "").await?;
        let levels = power_levels.as_ref().map(|event| &*event.pdu);
        let needed = levels
            .and_then(|levels| levels.content_value()["events"]["m.room.tombstone"].as_i64())
            .unwrap_or_else(|| {
                power::required_power(levels, "state_default", if levels.is_some() { 50 } else { 0 })
            });
        if power::user_power(&head.rules.authorization, &create.pdu, levels, sender.as_str()) < needed {
            return Err(MasterError::forbidden("You may not upgrade this room"));
        }
        let create_content = create.pdu.content_value();
        let mut copied = Vec::new();
        for kind in TRANSFERRED_STATE {
            if let Some(event) = batch.state_event(&head, kind, "").await? {
                copied.push((kind, event.pdu.content_value()));
            }
        }
        let canonical =
            batch.state_event(&head, "m.room.canonical_alias", "").await?.map(|e| e.pdu.content_value());
        (
            copied,
            create_content.get("type").cloned(),
            create_content.get("m.federate").cloned(),
            head.latest_event_id.clone(),
            power_levels.map(|event| event.pdu.content_value()),
            canonical,
        )
    };

    let mut creation = Map::new();
    let mut predecessor = json!({ "room_id": room_id });
    if let Some(latest) = &latest {
        predecessor["event_id"] = json!(latest);
    }
    creation.insert("predecessor".into(), predecessor);
    if let Some(room_type) = room_type {
        creation.insert("type".into(), room_type);
    }
    if let Some(federate) = federate {
        creation.insert("m.federate".into(), federate);
    }
    if new_rules.authorization.additional_room_creators && !additional_creators.is_empty() {
        creation.insert("additional_creators".into(), json!(additional_creators));
    }
    let mut initial_state = Vec::new();
    for (kind, content) in copied {
        let mut content = content.as_object().cloned().unwrap_or_default();
        if kind == "m.room.power_levels"
            && let Some(Value::Object(users)) = content.get_mut("users")
        {
            // The new room's creators have their power from the create event where the room
            // version says so, and may then not be listed; elsewhere the upgrader keeps theirs.
            if new_rules.authorization.explicitly_privilege_room_creators {
                users.remove(sender.as_str());
                for creator in &additional_creators {
                    users.remove(creator.as_str());
                }
            } else if !users.contains_key(sender.as_str()) {
                users.insert(sender.to_string(), json!(100));
            }
        }
        initial_state.push(ganglion_rpc::InitialStateEvent {
            kind: kind.to_owned(),
            state_key: String::new(),
            content,
        });
    }
    let create_request = CreateRoomRequest {
        room_version: Some(new_version),
        creation_content: Some(creation),
        initial_state,
        preset: Some(Preset::PrivateChat),
        ..CreateRoomRequest::default()
    };
    let new_room = create_room(svc, &sender, create_request).await?;

    // Our aliases and the directory listing move to the new room.
    let mut conn = svc.db.conn().await.map_err(internal)?;
    for alias in room_store::aliases_of_room(&mut conn, room_id.as_str()).await.map_err(internal)? {
        let creator =
            room_store::alias(&mut conn, &alias).await.map_err(internal)?.map(|(_, creator)| creator);
        room_store::delete_alias(&mut conn, &alias).await.map_err(internal)?;
        room_store::insert_alias(
            &mut conn,
            &alias,
            new_room.as_str(),
            creator.as_deref().unwrap_or(sender.as_str()),
        )
        .await
        .map_err(internal)?;
    }
    let old = room_store::room_by_id(&mut conn, room_id.as_str()).await.map_err(internal)?;
    let new = room_store::room_by_id(&mut conn, new_room.as_str()).await.map_err(internal)?;
    if let (Some(old), Some(new)) = (old, new)
        && old.is_public
    {
        room_store::set_room_public(&mut conn, new.room_nid, true).await.map_err(internal)?;
        room_store::set_room_public(&mut conn, old.room_nid, false).await.map_err(internal)?;
    }
    drop(conn);

    let mut templates = Vec::new();
    if let Some(canonical) = canonical.filter(|content| content.as_object().is_some_and(|c| !c.is_empty())) {
        templates.push((new_room.clone(), EventTemplate::state("m.room.canonical_alias", "", canonical)));
        templates.push((room_id.clone(), EventTemplate::state("m.room.canonical_alias", "", json!({}))));
    }
    templates.push((
        room_id.clone(),
        EventTemplate::state(
            "m.room.tombstone",
            "",
            json!({ "body": "This room has been replaced", "replacement_room": new_room }),
        ),
    ));
    if let Some(mut levels) = old_power {
        let users_default = levels.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let restricted = 50.max(users_default + 1);
        levels["events_default"] = json!(restricted);
        levels["invite"] = json!(restricted);
        templates.push((room_id.clone(), EventTemplate::state("m.room.power_levels", "", levels)));
    }
    for (target, template) in templates {
        let mut batch = Batch::begin(svc).await?;
        let tombstone = template.kind == "m.room.tombstone";
        match append_send(&mut batch, &sender, &target, &template, None, None).await {
            Ok(_) => {
                batch.commit().await?;
            }
            // The tombstone is what makes it an upgrade; the rest is best effort (an upgrader
            // who may send tombstones but not change power levels, say).
            Err(error) if !tombstone && error.class == ErrorClass::Forbidden => {}
            Err(error) => return Err(error),
        }
    }
    tracing::info!(%room_id, %new_room, %sender, "upgraded a room");
    Ok(new_room)
}
