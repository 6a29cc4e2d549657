//! Presence vocabulary shared by the master, the client-reader and the sync roles: the three
//! states, and the `m.presence` content a client sees (the same in `/sync` and in
//! `GET /presence/{userId}/status`).

use serde_json::{Map, Value, json};

/// A user's presence, as the spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PresenceState {
    // Ordered by priority: a user's devices combine to the highest.
    Offline,
    Unavailable,
    Online,
}

impl PresenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Online => "online",
            PresenceState::Unavailable => "unavailable",
            PresenceState::Offline => "offline",
        }
    }

    /// The state a spec string names; `None` for anything else.
    pub fn parse(text: &str) -> Option<PresenceState> {
        match text {
            "online" => Some(PresenceState::Online),
            "unavailable" => Some(PresenceState::Unavailable),
            "offline" => Some(PresenceState::Offline),
            _ => None,
        }
    }
}

/// The content of an `m.presence` event (and the `GET` answer) at `now_ms`. As Synapse:
/// `last_active_ago` only when the user was ever active, `status_msg` only when set and not
/// empty, `currently_active` only while online.
pub fn presence_content(
    state: PresenceState,
    status_msg: Option<&str>,
    last_active_ts: i64,
    currently_active: bool,
    now_ms: i64,
) -> Value {
    let mut content = Map::new();
    content.insert("presence".into(), json!(state.as_str()));
    if last_active_ts > 0 {
        content.insert("last_active_ago".into(), json!((now_ms - last_active_ts).max(0)));
    }
    if let Some(status_msg) = status_msg.filter(|status_msg| !status_msg.is_empty()) {
        content.insert("status_msg".into(), json!(status_msg));
    }
    if state == PresenceState::Online {
        content.insert("currently_active".into(), json!(currently_active));
    }
    Value::Object(content)
}
