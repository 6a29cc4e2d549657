//! Push rules evaluated for each new event of a room, once per member of ours, inside the
//! event's batch: the rows it writes (`push_actions`) commit with the event, so the unread
//! counts, `/notifications` and the pushers never see one without the other.

use std::{collections::HashSet, sync::Arc};

use ganglion_events::{
    Pdu,
    push_rules::{self, Evaluated},
    ruma::{
        OwnedUserId, RoomId, UInt, UserId,
        push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    },
};
use ganglion_replication::Notified;
use ganglion_rpc::MasterResult;
use ganglion_storage::{push_actions::PushNoticeRow, streams as stream_store};
use ganglion_types::EventNid;
use serde_json::Value;

use super::{Batch, RoomHead, Writer};
use crate::internal;

/// A user's push rules and ignored users, as the master evaluates them.
pub(crate) struct Recipient {
    ruleset: Ruleset,
    ignored: HashSet<String>,
    /// No rules of their own: the server defaults.
    default_rules: bool,
}

/// Recipients kept in memory at most; past this the cache starts again.
const MAX_RECIPIENTS: usize = 100_000;

impl Writer {
    /// Forgets what is cached of a user's push rules or ignore list, after either changed.
    pub(crate) fn forget_recipient(&mut self, user_id: &UserId) {
        self.recipients.remove(user_id);
    }
}

impl Batch<'_> {
    /// The user's rules and ignore list, loaded from their account data on first use.
    async fn recipient(&mut self, user_id: &OwnedUserId) -> MasterResult<Arc<Recipient>> {
        if let Some(recipient) = self.writer.recipients.get(user_id) {
            return Ok(recipient.clone());
        }
        let conn = self.connection().await?;
        let rules = stream_store::account_data_content(conn, user_id.as_str(), "", "m.push_rules")
            .await
            .map_err(internal)?
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        let ignored = stream_store::account_data_content(conn, user_id.as_str(), "", "m.ignored_user_list")
            .await
            .map_err(internal)?
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        let ignored = ignored
            .as_ref()
            .and_then(|content| content.get("ignored_users"))
            .and_then(Value::as_object)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default();
        let recipient = Arc::new(Recipient {
            ruleset: push_rules::user_ruleset(user_id, rules.as_ref()),
            ignored,
            default_rules: rules.is_none(),
        });
        if self.writer.recipients.len() >= MAX_RECIPIENTS {
            self.writer.recipients.clear();
        }
        self.writer.recipients.insert(user_id.clone(), recipient.clone());
        Ok(recipient)
    }

    /// Who may notify the room (`@room`), from the room's current power levels; `None` in a
    /// room without a create event, where no one may.
    async fn push_power(
        &mut self,
        head: &mut RoomHead,
    ) -> MasterResult<Option<Arc<PushConditionPowerLevelsCtx>>> {
        if let Some(power) = &head.push.power {
            return Ok(Some(power.clone()));
        }
        let Some(create) = self.state_event(head, "m.room.create", "").await? else { return Ok(None) };
        let power_levels = self.state_event(head, "m.room.power_levels", "").await?;
        let power = Arc::new(push_rules::power_levels_context(
            &head.rules.authorization,
            &create.pdu,
            power_levels.as_ref().map(|event| event.pdu.as_ref()),
        ));
        head.push.power = Some(power.clone());
        Ok(Some(power))
    }

    /// Evaluates the push rules of every member of ours the event may notify (the joined ones
    /// but its sender, and the user an invite names) and queues a row for each it notifies.
    /// Returns whom it notified, for the event's stream row.
    pub(super) async fn evaluate_push(
        &mut self,
        room_id: &RoomId,
        head: &mut RoomHead,
        pdu: &Pdu,
        (event_nid, position): (EventNid, i64),
    ) -> MasterResult<Notified> {
        let joined = head.local_joined.clone();
        let mut invited = None;
        if pdu.kind.to_string() == "m.room.member"
            && let Some(target) = &pdu.state_key
            && let Ok(target) = OwnedUserId::try_from(target.as_str())
            && target.server_name().as_str() == self.svc.config.server_name
            && target != pdu.sender
            && !joined.contains(&target)
            && pdu.membership() == "invite"
        {
            invited = Some(target);
        }
        let users = joined.iter().filter(|user| **user != pdu.sender).chain(invited.as_ref());
        if joined.iter().all(|user| *user == pdu.sender) && invited.is_none() {
            return Ok(Notified::default());
        }
        let power = self.push_power(head).await?;
        let member_count = head.local_joined.len() + head.remote_joined.len();
        let mut context = PushConditionRoomCtx::new(
            room_id.to_owned(),
            UInt::try_from(member_count).unwrap_or(UInt::MAX),
            pdu.sender.clone(),
            String::new(),
        );
        if let Some(power) = power {
            context = context.with_power_levels((*power).clone());
        }
        let event = Evaluated::new(pdu);
        let mut notified = Notified { thread_id: Arc::from(event.thread_id.as_str()), users: Vec::new() };
        // `{user: [highlight, index into the distinct action lists]}`, written as it goes (most
        // users share one action list).
        let mut notices = String::from("{");
        let mut action_lists: Vec<String> = Vec::new();
        // The decision for members with the default rules whom the event does not single out:
        // `(highlight, index into action_lists)` when it notifies them.
        let mut shared: Option<Option<(bool, usize)>> = None;
        for user in users {
            let recipient = self.recipient(user).await?;
            if recipient.ignored.contains(pdu.sender.as_str()) {
                continue;
            }
            let display_name = self.display_name(head, user).await?;
            let alike = recipient.default_rules && !event.may_single_out(user, &display_name);
            let decision = match shared.filter(|_| alike) {
                Some(decision) => decision,
                None => {
                    context.user_display_name.clear();
                    context.user_display_name.push_str(&display_name);
                    context.user_id = user.clone();
                    let decision = match event.decide(&recipient.ruleset, &context).await {
                        Some(notify) => {
                            let actions =
                                serde_json::to_string(notify.actions).unwrap_or_else(|_| "[]".to_owned());
                            let index = match action_lists.iter().position(|known| *known == actions) {
                                Some(index) => index,
                                None => {
                                    action_lists.push(actions);
                                    action_lists.len() - 1
                                }
                            };
                            Some((notify.highlight, index))
                        }
                        None => None,
                    };
                    if alike {
                        shared = Some(decision);
                    }
                    decision
                }
            };
            let Some((highlight, index)) = decision else { continue };
            notified.users.push((Arc::from(user.as_str()), highlight));
            if notices.len() > 1 {
                notices.push(',');
            }
            notices.push_str(&Value::from(user.as_str()).to_string());
            notices.push_str(&format!(":[{},{index}]", u8::from(highlight)));
        }
        notices.push('}');
        if !notified.users.is_empty() {
            self.tx().push_notices.push(PushNoticeRow {
                stream_pos: position,
                room_nid: head.room_nid,
                event_nid,
                thread_id: event.thread_id.clone(),
                users: notices,
                actions: format!("[{}]", action_lists.join(",")),
                ts: ganglion_storage::now_ms(),
            });
        }
        Ok(notified)
    }

    /// The user's display name in the room (empty without one: no name to be mentioned by).
    async fn display_name(&mut self, head: &mut RoomHead, user: &OwnedUserId) -> MasterResult<Arc<str>> {
        if let Some(name) = head.push.names.get(user) {
            return Ok(name.clone());
        }
        let member = self.state_event(head, "m.room.member", user.as_str()).await?;
        let name: Arc<str> = member
            .and_then(|event| event.pdu.content_value().get("displayname")?.as_str().map(Arc::from))
            .unwrap_or_else(|| Arc::from(""));
        Arc::make_mut(&mut head.push.names).insert(user.clone(), name.clone());
        Ok(name)
    }
}
