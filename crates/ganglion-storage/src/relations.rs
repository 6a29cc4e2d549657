//! Relations between events (`m.relates_to`): threads, edits, annotations and references, for
//! `/relations`, `/threads` and the aggregations bundled with events.
//!
//! Only timeline events count (`outlier = 0`), and only up to the position a reader may see.

use std::collections::HashSet;

use ganglion_types::{EventNid, RoomNid};
use sqlx::Row;

use crate::{
    Conn, Result,
    events::{EventRow, event_columns_of, event_from_row},
    state::{placeholders, row_placeholders},
};

/// One event's relation to its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationRow {
    pub event_nid: EventNid,
    pub room_nid: RoomNid,
    pub parent_id: String,
    pub rel_type: String,
    /// An annotation's key.
    pub key: Option<String>,
}

/// Rows for events just written; an event already indexed keeps its row (the backlog may meet
/// an event written since).
pub async fn insert_relations(conn: &mut Conn, rows: &[RelationRow]) -> Result<()> {
    const COLUMNS: usize = 5;
    for chunk in rows.chunks(500) {
        let sql = format!(
            "INSERT INTO event_relations (event_nid, room_nid, parent_id, rel_type, aggregation_key) VALUES {} \
             ON CONFLICT (event_nid) DO NOTHING",
            row_placeholders(chunk.len(), COLUMNS)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.event_nid.0)
                .bind(row.room_nid.0)
                .bind(row.parent_id.as_str())
                .bind(row.rel_type.as_str())
                .bind(row.key.as_deref());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn delete_relation_of(conn: &mut Conn, event_id: &str) -> Result<()> {
    sqlx::query(
        "DELETE FROM event_relations WHERE event_nid = (SELECT event_nid FROM events WHERE event_id = $1)",
    )
    .bind(event_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The `rel_type` of the event's own relation, if it has one.
pub async fn rel_type_of(conn: &mut Conn, event_id: &str) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT r.rel_type FROM event_relations r JOIN events e ON e.event_nid = r.event_nid WHERE e.event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

/// Whether `sender` already annotated `parent_id` with `key` in an event of `event_type` that is
/// not redacted.
pub async fn annotation_exists(
    conn: &mut Conn,
    parent_id: &str,
    key: &str,
    sender: &str,
    event_type: &str,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 FROM event_relations r JOIN events e ON e.event_nid = r.event_nid \
         WHERE r.parent_id = $1 AND r.rel_type = 'm.annotation' AND r.aggregation_key = $2 \
         AND e.sender = $3 AND e.outlier = 0 \
         AND e.type_nid = (SELECT type_nid FROM event_types WHERE event_type = $4) LIMIT 1",
    )
    .bind(parent_id)
    .bind(key)
    .bind(sender)
    .bind(event_type)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// What `/relations` asks for: the children of `parent_id` in `room_nid` at positions in
/// `(after, up_to]`, down to `depth` levels of relations of relations (1 for direct children).
#[derive(Debug, Clone)]
pub struct RelatedQuery<'a> {
    pub parent_id: &'a str,
    pub room_nid: RoomNid,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub depth: i64,
    pub after: i64,
    pub up_to: i64,
    pub limit: i64,
    pub newest_first: bool,
}

/// The events related to a parent, as [`RelatedQuery`] asks, in stream order.
pub async fn related_events(conn: &mut Conn, query: &RelatedQuery<'_>) -> Result<Vec<EventRow>> {
    let mut filters = String::new();
    let mut next = 7;
    if query.rel_type.is_some() {
        filters.push_str(&format!(" AND r.rel_type = ${next}"));
        next += 1;
    }
    if query.event_type.is_some() {
        filters.push_str(&format!(
            " AND e.type_nid = (SELECT type_nid FROM event_types WHERE event_type = ${next})"
        ));
    }
    let order = if query.newest_first { "DESC" } else { "ASC" };
    // The tree holds the parent and, when recursing, those of its descendants within the depth
    // whose children are wanted too.
    let sql = format!(
        "WITH RECURSIVE tree(event_id, depth) AS ( \
             SELECT CAST($1 AS TEXT), 1 \
             UNION \
             SELECT child.event_id, tree.depth + 1 FROM tree \
             JOIN event_relations link ON link.parent_id = tree.event_id \
             JOIN events child ON child.event_nid = link.event_nid \
             WHERE tree.depth < $2 AND child.room_nid = $3 AND child.outlier = 0 \
         ) \
         SELECT {} FROM event_relations r JOIN events e ON e.event_nid = r.event_nid \
         WHERE r.parent_id IN (SELECT event_id FROM tree) AND e.room_nid = $3 AND e.outlier = 0 \
         AND e.stream_pos > $4 AND e.stream_pos <= $5{filters} \
         ORDER BY e.stream_pos {order} LIMIT $6",
        event_columns_of("e")
    );
    let mut sql_query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(query.parent_id)
        .bind(query.depth.max(1))
        .bind(query.room_nid.0)
        .bind(query.after)
        .bind(query.up_to)
        .bind(query.limit);
    if let Some(rel_type) = query.rel_type {
        sql_query = sql_query.bind(rel_type);
    }
    if let Some(event_type) = query.event_type {
        sql_query = sql_query.bind(event_type);
    }
    let rows = sql_query.fetch_all(conn).await?;
    Ok(rows.into_iter().map(event_from_row).collect())
}

/// A thread of a room: its root and the position of its newest reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRow {
    pub root_id: String,
    pub latest_pos: i64,
}

/// The room's threads whose newest reply (up to `up_to`) is below `below`, newest activity
/// first; with `participant`, only those whose root or a reply that user sent.
pub async fn thread_roots(
    conn: &mut Conn,
    room_nid: RoomNid,
    participant: Option<&str>,
    below: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<ThreadRow>> {
    let participated = match participant {
        Some(_) => " AND MAX(CASE WHEN e.sender = $5 OR root.sender = $5 THEN 1 ELSE 0 END) = 1",
        None => "",
    };
    let sql = format!(
        "SELECT r.parent_id, MAX(e.stream_pos) FROM event_relations r \
         JOIN events e ON e.event_nid = r.event_nid \
         LEFT JOIN events root ON root.event_id = r.parent_id \
         WHERE r.room_nid = $1 AND r.rel_type = 'm.thread' AND e.outlier = 0 AND e.stream_pos <= $3 \
         GROUP BY r.parent_id HAVING MAX(e.stream_pos) < $2{participated} \
         ORDER BY MAX(e.stream_pos) DESC LIMIT $4"
    );
    let mut query =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_nid.0).bind(below).bind(up_to).bind(limit);
    if let Some(participant) = participant {
        query = query.bind(participant);
    }
    let rows = query.fetch_all(conn).await?;
    Ok(rows.into_iter().map(|row| ThreadRow { root_id: row.get(0), latest_pos: row.get(1) }).collect())
}

/// Those of `parent_ids` with a child the aggregations sum up (a thread reply, an edit or a
/// reference).
pub async fn parents_with_children(conn: &mut Conn, parent_ids: &[&str]) -> Result<HashSet<String>> {
    let mut parents = HashSet::new();
    for chunk in parent_ids.chunks(400) {
        let sql = format!(
            "SELECT DISTINCT parent_id FROM event_relations WHERE parent_id IN ({}) \
             AND rel_type IN ('m.thread', 'm.replace', 'm.reference')",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for parent_id in chunk {
            query = query.bind(*parent_id);
        }
        parents.extend(query.fetch_all(&mut *conn).await?.into_iter().map(|row| row.get::<String, _>(0)));
    }
    Ok(parents)
}

/// A child event, as the aggregations need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildRow {
    pub parent_id: String,
    pub rel_type: String,
    pub event_nid: EventNid,
    pub event_id: String,
    pub sender: String,
    pub origin_server_ts: i64,
    pub stream_pos: i64,
}

/// The children of `parent_ids` by relations of `rel_type` at positions up to `up_to`, oldest
/// first.
pub async fn children_of(
    conn: &mut Conn,
    parent_ids: &[&str],
    rel_type: &str,
    up_to: i64,
) -> Result<Vec<ChildRow>> {
    let mut children = Vec::new();
    for chunk in parent_ids.chunks(400) {
        let sql = format!(
            "SELECT r.parent_id, r.rel_type, e.event_nid, e.event_id, e.sender, e.origin_server_ts, e.stream_pos \
             FROM event_relations r JOIN events e ON e.event_nid = r.event_nid \
             WHERE r.rel_type = $1 AND e.outlier = 0 AND e.stream_pos <= $2 AND r.parent_id IN ({}) \
             ORDER BY e.stream_pos",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(rel_type).bind(up_to);
        for parent_id in chunk {
            query = query.bind(*parent_id);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        children.extend(rows.into_iter().map(|row| ChildRow {
            parent_id: row.get(0),
            rel_type: row.get(1),
            event_nid: EventNid(row.get(2)),
            event_id: row.get(3),
            sender: row.get(4),
            origin_server_ts: row.get(5),
            stream_pos: row.get(6),
        }));
    }
    Ok(children)
}

/// One sender's part in a thread: how many replies they sent and the position of their newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSenderRow {
    pub root_id: String,
    pub sender: String,
    pub count: i64,
    pub latest_pos: i64,
}

/// Each sender's replies to the threads of `root_ids`, up to position `up_to`: the thread
/// summaries (count, newest reply, participation) are made from these, leaving ignored users
/// out, without reading every reply of a long thread.
pub async fn thread_senders(conn: &mut Conn, root_ids: &[&str], up_to: i64) -> Result<Vec<ThreadSenderRow>> {
    let mut senders = Vec::new();
    for chunk in root_ids.chunks(400) {
        let sql = format!(
            "SELECT r.parent_id, e.sender, COUNT(*), MAX(e.stream_pos) \
             FROM event_relations r JOIN events e ON e.event_nid = r.event_nid \
             WHERE r.rel_type = 'm.thread' AND e.outlier = 0 AND e.stream_pos <= $1 AND r.parent_id IN ({}) \
             GROUP BY r.parent_id, e.sender",
            placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(up_to);
        for root_id in chunk {
            query = query.bind(*root_id);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        senders.extend(rows.into_iter().map(|row| ThreadSenderRow {
            root_id: row.get(0),
            sender: row.get(1),
            count: row.get(2),
            latest_pos: row.get(3),
        }));
    }
    Ok(senders)
}

/// Rooms whose events predate the relations table.
pub async fn backlog(conn: &mut Conn) -> Result<Vec<RoomNid>> {
    let rows =
        sqlx::query("SELECT room_nid FROM relations_backlog ORDER BY room_nid").fetch_all(conn).await?;
    Ok(rows.into_iter().map(|row| RoomNid(row.get(0))).collect())
}

/// A backlog room's unredacted non-state events that may relate to another, as
/// `(nid, event id, json)`.
pub async fn events_with_relations(
    conn: &mut Conn,
    room: RoomNid,
) -> Result<Vec<(EventNid, String, String)>> {
    let rows = sqlx::query(
        "SELECT event_nid, event_id, json FROM events WHERE room_nid = $1 AND state_key_nid IS NULL \
         AND redacted_by IS NULL AND json LIKE '%m.relates_to%'",
    )
    .bind(room.0)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (EventNid(row.get(0)), row.get(1), row.get(2))).collect())
}

pub async fn clear_backlog(conn: &mut Conn, room: RoomNid) -> Result<()> {
    sqlx::query("DELETE FROM relations_backlog WHERE room_nid = $1").bind(room.0).execute(conn).await?;
    Ok(())
}
