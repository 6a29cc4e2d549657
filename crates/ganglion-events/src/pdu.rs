//! A persisted event, parsed from its exact canonical JSON.

use std::sync::Arc;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::TimelineEventType, room_version_rules::AuthorizationRules,
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

#[derive(Debug, thiserror::Error)]
#[error("malformed PDU: {0}")]
pub struct PduError(pub String);

/// A PDU. `json` is the exact canonical JSON that was hashed and signed: without `event_id`,
/// except in room versions 1 and 2, whose events carry their id.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to. In room version 12 the create event carries no `room_id`;
    /// it is filled in from the event id here.
    pub room_id: OwnedRoomId,
    room_id_in_json: bool,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: UInt,
    pub json: Arc<str>,
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default, deserialize_with = "event_refs")]
    prev_events: Vec<OwnedEventId>,
    #[serde(default, deserialize_with = "event_refs")]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Its auth events, with the room's create event in a room version whose room id names it
    /// (v12), where no event but the create event itself lists it.
    pub fn auth_events_with_create(&self, rules: &AuthorizationRules) -> Vec<OwnedEventId> {
        let mut auth = self.auth_events.clone();
        if rules.room_create_event_id_as_room_id
            && self.kind != TimelineEventType::RoomCreate
            && let Ok(create) = EventId::parse(format!("${}", &self.room_id.as_str()[1..]))
            && !auth.contains(&create)
        {
            auth.push(create);
        }
        auth
    }

    pub fn from_json(event_id: OwnedEventId, json: Arc<str>) -> Result<Pdu, PduError> {
        let fields: Fields = serde_json::from_str(&json).map_err(|e| PduError(e.to_string()))?;
        let room_id_in_json = fields.room_id.is_some();
        let room_id = match fields.room_id {
            Some(room_id) => room_id,
            // Room v12: the create event's id, with the `!` sigil, is the room id.
            None if fields.kind == TimelineEventType::RoomCreate => {
                RoomId::parse(format!("!{}", &event_id.as_str()[1..])).map_err(|e| PduError(e.to_string()))?
            }
            None => return Err(PduError("missing room_id".into())),
        };
        let redacts = match fields.redacts {
            Some(redacts) => Some(redacts),
            None if fields.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(fields.content.get()).ok().and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Pdu {
            event_id,
            room_id,
            room_id_in_json,
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts,
            depth: fields.depth,
            json,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    /// A member event's `membership`, `leave` when it has none (an event that is not one).
    pub fn membership(&self) -> String {
        self.content_value().get("membership").and_then(|m| m.as_str()).unwrap_or("leave").to_owned()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_in_json.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}

impl AsRef<EventId> for Pdu {
    fn as_ref(&self) -> &EventId {
        &self.event_id
    }
}

/// The ids of a PDU's `prev_events` or `auth_events`: plain ids, or (room versions 1 and 2)
/// `[id, hashes]` pairs, of which the id is kept.
fn event_refs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<OwnedEventId>, D::Error> {
    struct Refs;
    impl<'de> serde::de::Visitor<'de> for Refs {
        type Value = Vec<OwnedEventId>;
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a list of event ids or [event id, hashes] pairs")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(EventRef(id)) = seq.next_element()? {
                ids.push(id);
            }
            Ok(ids)
        }
    }
    deserializer.deserialize_seq(Refs)
}

/// One reference: an event id, or an `[id, hashes]` pair.
struct EventRef(OwnedEventId);

impl<'de> Deserialize<'de> for EventRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<EventRef, D::Error> {
        struct Ref;
        impl<'de> serde::de::Visitor<'de> for Ref {
            type Value = EventRef;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an event id or an [event id, hashes] pair")
            }
            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<EventRef, E> {
                EventId::parse(id).map(EventRef).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EventRef, A::Error> {
                let id: OwnedEventId =
                    seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(EventRef(id))
            }
        }
        deserializer.deserialize_any(Ref)
    }
}

/// The event id of one entry of a PDU's `prev_events` or `auth_events` as JSON: the id, or the
/// id of an `[id, hashes]` pair (room versions 1 and 2).
pub fn event_ref_id(entry: &serde_json::Value) -> Option<&str> {
    match entry {
        serde_json::Value::String(id) => Some(id),
        serde_json::Value::Array(pair) => pair.first().and_then(serde_json::Value::as_str),
        _ => None,
    }
}

/// [`event_ref_id`] over canonical JSON.
pub fn canonical_event_ref_id(entry: &ruma::CanonicalJsonValue) -> Option<&str> {
    match entry {
        ruma::CanonicalJsonValue::String(id) => Some(id),
        ruma::CanonicalJsonValue::Array(pair) => match pair.first() {
            Some(ruma::CanonicalJsonValue::String(id)) => Some(id),
            _ => None,
        },
        _ => None,
    }
}

/// An event's relation to another (`content.m.relates_to` with a `rel_type`). Replies
/// (`m.in_reply_to` alone) are not relations in this sense: `/relations` does not list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub rel_type: String,
    pub parent: OwnedEventId,
    /// An annotation's `key`.
    pub key: Option<String>,
}

#[derive(Deserialize)]
struct RelatesToInContent {
    #[serde(rename = "m.relates_to")]
    relates_to: Option<RelatesTo>,
}

#[derive(Deserialize)]
struct RelatesTo {
    rel_type: Option<String>,
    event_id: Option<OwnedEventId>,
    key: Option<String>,
}

impl Pdu {
    /// The event's relation, if its content names one (a state event has none: state events
    /// take no part in relations).
    pub fn relation(&self) -> Option<Relation> {
        if self.is_state() || !self.content.get().contains("m.relates_to") {
            return None;
        }
        let content: RelatesToInContent = serde_json::from_str(self.content.get()).ok()?;
        let relates_to = content.relates_to?;
        let key = match relates_to.rel_type.as_deref() {
            Some("m.annotation") => relates_to.key,
            _ => None,
        };
        Some(Relation { rel_type: relates_to.rel_type?, parent: relates_to.event_id?, key })
    }
}

impl Pdu {
    /// The text `/search` finds the event by, with the field it is in: a message's
    /// `content.body`, a room's `content.name` or `content.topic`.
    pub fn searchable_text(&self) -> Option<(&'static str, String)> {
        let (key, field) = match self.kind {
            TimelineEventType::RoomMessage if !self.is_state() => ("content.body", "body"),
            TimelineEventType::RoomName if self.state_key.as_deref() == Some("") => ("content.name", "name"),
            TimelineEventType::RoomTopic if self.state_key.as_deref() == Some("") => {
                ("content.topic", "topic")
            }
            _ => return None,
        };
        let text = self.content_value().get(field)?.as_str()?.to_owned();
        (!text.trim().is_empty()).then_some((key, text))
    }
}
