//! The published room directory (`/publicRooms`), one page at a time: what the client API
//! serves our users and the federation API serves other servers.

use ganglion_storage::{Conn, rooms as room_store, rooms::RoomRow};
use ganglion_types::{ErrorClass, HasErrorClass};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{Caches, Snapshot, StateError};

const DEFAULT_PUBLIC_ROOMS_LIMIT: u64 = 100;
const MAX_PUBLIC_ROOMS_LIMIT: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("Invalid `since` token")]
    BadSince,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Storage(#[from] ganglion_storage::StorageError),
}

impl HasErrorClass for DirectoryError {
    fn class(&self) -> ErrorClass {
        match self {
            DirectoryError::BadSince => ErrorClass::InvalidParam,
            DirectoryError::State(error) => error.class(),
            DirectoryError::Storage(error) => error.class(),
        }
    }
}

/// What a page asks for: the body of `POST /publicRooms` (`GET` has only `limit` and `since`).
#[derive(Debug, Default, Deserialize)]
pub struct DirectorySearch {
    pub limit: Option<u64>,
    pub since: Option<String>,
    #[serde(default)]
    pub filter: DirectoryFilter,
}

#[derive(Debug, Default, Deserialize)]
pub struct DirectoryFilter {
    pub generic_search_term: Option<String>,
    pub room_types: Option<Vec<Option<String>>>,
}

/// The string field `field` of the content of the state event `(kind, key)` in `snapshot`.
async fn state_string(
    caches: &Caches,
    conn: &mut Conn,
    snapshot: &Snapshot,
    kind: &str,
    key: &str,
    field: &str,
) -> Result<Option<String>, DirectoryError> {
    let Some(event) = caches.state_event(conn, snapshot, kind, key).await? else { return Ok(None) };
    let content = caches.visible_content(conn, &event).await?;
    Ok(content.get(field).and_then(Value::as_str).map(str::to_owned))
}

/// A `since` token of `/publicRooms`: the offset into the directory, newest room first.
pub fn directory_offset(token: &str) -> Option<i64> {
    offset_after(token, 'o')
}

fn offset_after(token: &str, prefix: char) -> Option<i64> {
    let digits = token.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn directory_token(offset: i64) -> String {
    format!("o{offset}")
}

/// The token of the page before offset `offset` of a filtered search: the rooms matching the
/// filter just before it, read backwards.
fn backward_token(offset: i64) -> String {
    format!("b{offset}")
}

/// Where a page starts: forwards from an offset (`o…`), or backwards from one (`b…`, a
/// filtered search's `prev_batch`).
enum Since {
    Forwards(i64),
    Backwards(i64),
}

/// One page of the directory. Without a filter `since` is a plain offset; with one, rooms are
/// read in batches from the offset and `next_batch` is the offset after the last room read, so
/// the next page continues where this one stopped; its `prev_batch` reads backwards from where
/// the page started, to the `limit` matching rooms before it.
pub async fn public_rooms_page(
    caches: &Caches,
    conn: &mut Conn,
    search: DirectorySearch,
) -> Result<Value, DirectoryError> {
    let limit = search.limit.unwrap_or(DEFAULT_PUBLIC_ROOMS_LIMIT).clamp(1, MAX_PUBLIC_ROOMS_LIMIT) as i64;
    let since = match search.since.as_deref() {
        Some(token) => match (directory_offset(token), offset_after(token, 'b')) {
            (Some(offset), _) => Since::Forwards(offset),
            (None, Some(offset)) => Since::Backwards(offset),
            (None, None) => return Err(DirectoryError::BadSince),
        },
        None => Since::Forwards(0),
    };
    let term =
        search.filter.generic_search_term.as_deref().map(str::to_lowercase).filter(|term| !term.is_empty());
    let filtered = term.is_some() || search.filter.room_types.is_some();
    // A filter may skip many rooms, so read more than a page at a time.
    let batch = if filtered { limit.max(100) } else { limit };
    let matches = async |conn: &mut Conn, room_id: &str| -> Result<Option<Value>, DirectoryError> {
        let Some(room) = room_store::room_by_id(conn, room_id).await? else { return Ok(None) };
        let summary = summary_of(caches, conn, &room).await?;
        Ok(summary
            .matches(term.as_deref(), search.filter.room_types.as_deref())
            .then(|| summary.to_json(&room.room_id)))
    };
    let mut chunk = Vec::new();
    let (first, next_batch) = match since {
        Since::Forwards(start) => {
            let mut offset = start;
            let mut next_batch = None;
            'pages: loop {
                let room_ids = room_store::public_room_ids(conn, batch, offset).await?;
                let exhausted = (room_ids.len() as i64) < batch;
                for room_id in room_ids {
                    offset += 1;
                    if let Some(entry) = matches(conn, &room_id).await? {
                        chunk.push(entry);
                        if chunk.len() as i64 == limit {
                            next_batch = Some(offset);
                            break 'pages;
                        }
                    }
                }
                if exhausted {
                    break;
                }
            }
            (start, next_batch)
        }
        Since::Backwards(end) => {
            // Read down from `end`; the page is the `limit` matches nearest before it.
            let mut offset = end;
            while offset > 0 && (chunk.len() as i64) < limit {
                let from = (offset - batch).max(0);
                let room_ids = room_store::public_room_ids(conn, offset - from, from).await?;
                let mut full = false;
                for room_id in room_ids.iter().rev() {
                    offset -= 1;
                    if let Some(entry) = matches(conn, room_id).await? {
                        chunk.push(entry);
                        if chunk.len() as i64 == limit {
                            full = true;
                            break;
                        }
                    }
                }
                if !full {
                    offset = from;
                }
            }
            chunk.reverse();
            (offset, Some(end))
        }
    };
    let mut response = Map::new();
    response.insert("chunk".into(), Value::Array(chunk));
    if let Some(next) = next_batch {
        response.insert("next_batch".into(), json!(directory_token(next)));
    }
    if first > 0 {
        let prev = match filtered {
            true => backward_token(first),
            false => directory_token((first - limit).max(0)),
        };
        response.insert("prev_batch".into(), json!(prev));
    }
    response.insert("total_room_count_estimate".into(), json!(room_store::public_room_count(conn).await?));
    Ok(Value::Object(response))
}

/// The directory's entry of a room (`PublicRoomsChunk`), from its current state.
pub async fn room_summary(caches: &Caches, conn: &mut Conn, room: &RoomRow) -> Result<Value, DirectoryError> {
    Ok(summary_of(caches, conn, room).await?.to_json(&room.room_id))
}

/// What the directory shows of a room, from its current state.
struct RoomSummary {
    name: Option<String>,
    topic: Option<String>,
    canonical_alias: Option<String>,
    avatar_url: Option<String>,
    join_rule: Option<String>,
    room_type: Option<String>,
    world_readable: bool,
    guest_can_join: bool,
    num_joined_members: i64,
}

async fn summary_of(caches: &Caches, conn: &mut Conn, room: &RoomRow) -> Result<RoomSummary, DirectoryError> {
    let snapshot = match room.current_snapshot_nid {
        Some(nid) => caches.snapshot(conn, nid).await?,
        None => Snapshot::empty(),
    };
    let name = state_string(caches, conn, &snapshot, "m.room.name", "", "name").await?;
    let canonical_alias =
        state_string(caches, conn, &snapshot, "m.room.canonical_alias", "", "alias").await?;
    let avatar_url = state_string(caches, conn, &snapshot, "m.room.avatar", "", "url").await?;
    let join_rule = state_string(caches, conn, &snapshot, "m.room.join_rules", "", "join_rule").await?;
    let room_type = state_string(caches, conn, &snapshot, "m.room.create", "", "type").await?;
    let guest_access =
        state_string(caches, conn, &snapshot, "m.room.guest_access", "", "guest_access").await?;
    let topic = match caches.state_event(conn, &snapshot, "m.room.topic", "").await? {
        Some(event) => plain_topic(&caches.visible_content(conn, &event).await?),
        None => None,
    };
    Ok(RoomSummary {
        name: name.filter(|name| !name.is_empty()),
        topic,
        canonical_alias,
        avatar_url: avatar_url.filter(|url| !url.is_empty()),
        join_rule,
        room_type,
        world_readable: state_string(
            caches,
            conn,
            &snapshot,
            "m.room.history_visibility",
            "",
            "history_visibility",
        )
        .await?
        .as_deref()
            == Some("world_readable"),
        guest_can_join: guest_access.as_deref() == Some("can_join"),
        num_joined_members: room_store::joined_member_count(conn, room.room_nid).await?,
    })
}

/// The plain-text topic: the `text/plain` entry of `m.topic`, else the `topic` field.
pub fn plain_topic(content: &Value) -> Option<String> {
    let rich = content.get("m.topic").and_then(Value::as_array).and_then(|entries| {
        entries.iter().find_map(|entry| {
            let plain = entry.get("mimetype").and_then(Value::as_str).is_none_or(|mime| mime == "text/plain");
            plain.then(|| entry.get("body").and_then(Value::as_str)).flatten()
        })
    });
    rich.or_else(|| content.get("topic").and_then(Value::as_str)).map(str::to_owned)
}

impl RoomSummary {
    /// Whether the room matches the search term (in name, topic or alias, case-insensitive) and
    /// the room types (`None` in the list stands for rooms without a type).
    fn matches(&self, term: Option<&str>, room_types: Option<&[Option<String>]>) -> bool {
        let type_ok = room_types.is_none_or(|types| types.contains(&self.room_type));
        let term_ok = term.is_none_or(|term| {
            [&self.name, &self.topic, &self.canonical_alias]
                .into_iter()
                .flatten()
                .any(|text| text.to_lowercase().contains(term))
        });
        type_ok && term_ok
    }

    fn to_json(&self, room_id: &str) -> Value {
        let mut entry = Map::new();
        entry.insert("room_id".into(), json!(room_id));
        entry.insert("num_joined_members".into(), json!(self.num_joined_members));
        entry.insert("world_readable".into(), json!(self.world_readable));
        entry.insert("guest_can_join".into(), json!(self.guest_can_join));
        for (key, value) in [
            ("name", &self.name),
            ("topic", &self.topic),
            ("canonical_alias", &self.canonical_alias),
            ("avatar_url", &self.avatar_url),
            ("join_rule", &self.join_rule),
            ("room_type", &self.room_type),
        ] {
            if let Some(value) = value {
                entry.insert(key.into(), json!(value));
            }
        }
        Value::Object(entry)
    }
}
