//! The auth chain index: each state event's whole auth chain by NID, written with the event, so
//! a chain is one query away however deep it is (a room's power levels and memberships make
//! chains thousands of events long).

use std::collections::{HashMap, HashSet};

use ganglion_types::{EventNid, RoomNid};
use sqlx::Row;

use crate::{
    Conn, Result,
    state::{placeholders, row_placeholders},
};

/// A state event to index: its auth events by id (for a room v12, its create event included
/// though the event does not list it).
#[derive(Debug, Clone)]
pub struct Unindexed {
    pub event_nid: EventNid,
    pub room_nid: RoomNid,
    pub auth_events: Vec<String>,
}

/// Indexes `events`, already written, in any order: an event's chain is its auth events of the
/// same room and their chains, whether those were indexed before or are among `events`. An auth
/// event this server does not have is left out, with its ancestors.
pub async fn index(conn: &mut Conn, events: &[Unindexed]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events
        .iter()
        .flat_map(|event| event.auth_events.iter().map(String::as_str))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let known = nids_by_id(conn, &ids).await?;
    let direct: HashMap<EventNid, Vec<EventNid>> = events
        .iter()
        .map(|event| {
            let auth = event
                .auth_events
                .iter()
                .filter_map(|id| known.get(id.as_str()))
                .filter(|(_, room)| *room == event.room_nid)
                .map(|(nid, _)| *nid)
                .collect();
            (event.event_nid, auth)
        })
        .collect();
    let outside: Vec<EventNid> = direct
        .values()
        .flatten()
        .filter(|nid| !direct.contains_key(nid))
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut chains: HashMap<EventNid, HashSet<EventNid>> =
        outside.iter().map(|nid| (*nid, HashSet::new())).collect();
    for (event, ancestor) in chain_rows(conn, &outside).await? {
        chains.entry(event).or_default().insert(ancestor);
    }
    close(&direct, &mut chains);
    let rows: Vec<(EventNid, EventNid)> = events
        .iter()
        .flat_map(|event| {
            let chain = chains.get(&event.event_nid);
            chain.into_iter().flatten().map(|ancestor| (event.event_nid, *ancestor))
        })
        .collect();
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO event_auth_chains (event_nid, ancestor_nid) VALUES {} ON CONFLICT DO NOTHING",
            row_placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (event, ancestor) in chunk {
            query = query.bind(event.0).bind(ancestor.0);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Fills `chains` for every event of `direct` (its auth events), children first, without
/// recursion: `chains` already holds the chains of every auth event outside `direct`.
fn close(direct: &HashMap<EventNid, Vec<EventNid>>, chains: &mut HashMap<EventNid, HashSet<EventNid>>) {
    let mut visited: HashSet<EventNid> = HashSet::new();
    for start in direct.keys() {
        let mut stack = vec![(*start, false)];
        while let Some((nid, expanded)) = stack.pop() {
            let auth = &direct[&nid];
            if expanded {
                let mut chain = HashSet::with_capacity(auth.len());
                for parent in auth {
                    chain.insert(*parent);
                    // A parent missing here sits on a cycle, which hashed event ids cannot form
                    // honestly: its chain is left out.
                    if let Some(ancestors) = chains.get(parent) {
                        chain.extend(ancestors.iter().copied());
                    }
                }
                chains.insert(nid, chain);
            } else if !chains.contains_key(&nid) && visited.insert(nid) {
                stack.push((nid, true));
                stack.extend(
                    auth.iter().filter(|parent| direct.contains_key(parent)).map(|parent| (*parent, false)),
                );
            }
        }
    }
}

/// The NIDs and rooms of the events of `ids` this server has.
async fn nids_by_id(conn: &mut Conn, ids: &[&str]) -> Result<HashMap<String, (EventNid, RoomNid)>> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT event_id, event_nid, room_nid FROM events WHERE event_id IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.insert(row.get(0), (EventNid(row.get(1)), RoomNid(row.get(2))));
        }
    }
    Ok(found)
}

/// `(event, ancestor)` for every ancestor in the auth chains of `events`.
pub async fn chain_rows(conn: &mut Conn, events: &[EventNid]) -> Result<Vec<(EventNid, EventNid)>> {
    let mut rows = Vec::new();
    for chunk in events.chunks(500) {
        let sql = format!(
            "SELECT event_nid, ancestor_nid FROM event_auth_chains WHERE event_nid IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for nid in chunk {
            query = query.bind(nid.0);
        }
        rows.extend(
            query
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|row| (EventNid(row.get(0)), EventNid(row.get(1)))),
        );
    }
    Ok(rows)
}

/// The union of the auth chains of `events`.
pub async fn chain_of(conn: &mut Conn, events: &[EventNid]) -> Result<HashSet<EventNid>> {
    Ok(chain_rows(conn, events).await?.into_iter().map(|(_, ancestor)| ancestor).collect())
}

/// Rooms with events written before the index existed.
pub async fn backlog(conn: &mut Conn) -> Result<Vec<RoomNid>> {
    let rows =
        sqlx::query("SELECT room_nid FROM auth_chain_backlog ORDER BY room_nid").fetch_all(conn).await?;
    Ok(rows.into_iter().map(|row| RoomNid(row.get(0))).collect())
}

/// A room's state events as `(nid, event id, json)`, for indexing its backlog.
pub async fn state_events_of_room(conn: &mut Conn, room: RoomNid) -> Result<Vec<(EventNid, String, String)>> {
    let rows = sqlx::query(
        "SELECT event_nid, event_id, json FROM events WHERE room_nid = $1 AND state_key_nid IS NOT NULL",
    )
    .bind(room.0)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (EventNid(row.get(0)), row.get(1), row.get(2))).collect())
}

pub async fn clear_backlog(conn: &mut Conn, room: RoomNid) -> Result<()> {
    sqlx::query("DELETE FROM auth_chain_backlog WHERE room_nid = $1").bind(room.0).execute(conn).await?;
    Ok(())
}
