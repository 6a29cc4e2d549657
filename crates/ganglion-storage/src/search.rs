//! Full-text search over room events: PostgreSQL's text search (a `tsvector` per event under a
//! GIN index) in clusters, SQLite's FTS5 in the embedded default. One row per searchable event
//! (a message's `body`, a room's `name` or `topic`), written with the event; a redaction deletes
//! it, so a redacted event is never found.

use ganglion_types::{EventNid, RoomNid};
use sqlx::Row;

use crate::{Conn, Result, state::placeholders};

/// The text search configuration of PostgreSQL: English stemming, as SQLite's `porter`
/// tokenizer does, so both backends find "meetings" for "meeting".
const PG_CONFIG: &str = "english";

/// One event's searchable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRow {
    pub event_nid: EventNid,
    pub room_nid: RoomNid,
    /// Which field the text is: `content.body`, `content.name` or `content.topic`.
    pub key: String,
    pub text: String,
}

fn is_postgres(conn: &Conn) -> bool {
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

pub async fn insert_search_rows(conn: &mut Conn, rows: &[SearchRow]) -> Result<()> {
    const COLUMNS: usize = 4;
    let postgres = is_postgres(conn);
    for chunk in rows.chunks(200) {
        let values = (0..chunk.len())
            .map(|row| {
                let base = row * COLUMNS;
                match postgres {
                    true => format!(
                        "(${}, ${}, ${}, to_tsvector('{PG_CONFIG}', ${}))",
                        base + 1,
                        base + 2,
                        base + 3,
                        base + 4
                    ),
                    false => format!("(${}, ${}, ${}, ${})", base + 1, base + 2, base + 3, base + 4),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = match postgres {
            true => format!(
                "INSERT INTO event_search (event_nid, room_nid, search_key, vector) VALUES {values} \
                 ON CONFLICT (event_nid) DO NOTHING"
            ),
            false => format!("INSERT INTO event_search (rowid, room_nid, search_key, body) VALUES {values}"),
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.event_nid.0)
                .bind(row.room_nid.0)
                .bind(row.key.as_str())
                .bind(row.text.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn delete_search_row_of(conn: &mut Conn, event_id: &str) -> Result<()> {
    let sql = match is_postgres(conn) {
        true => {
            "DELETE FROM event_search WHERE event_nid = (SELECT event_nid FROM events WHERE event_id = $1)"
        }
        false => "DELETE FROM event_search WHERE rowid = (SELECT event_nid FROM events WHERE event_id = $1)",
    };
    sqlx::query(sql).bind(event_id).execute(conn).await?;
    Ok(())
}

/// How the matches are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first (then newest).
    Rank,
    /// Newest first.
    Recent,
}

/// A search: the words to find (all of them), where, in which fields, and which page.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub term: &'a str,
    pub rooms: &'a [RoomNid],
    pub keys: &'a [&'a str],
    pub order: SearchOrder,
    /// Matches to skip (paging by rank).
    pub offset: i64,
    /// Only matches below this position (paging by recency).
    pub below: Option<i64>,
    pub limit: i64,
}

/// A matching event, with its rank (higher is better) and position.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub event_nid: EventNid,
    pub rank: f64,
    pub stream_pos: i64,
}

/// The FTS5 query for a search term: each word quoted (so nothing in it is query syntax), all
/// required. `None` when the term has no word.
fn fts5_query(term: &str) -> Option<String> {
    let words: Vec<String> = term
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| format!("\"{word}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Builds the shared tail of a search: the rooms, keys and position conditions, numbering
/// placeholders from `first`.
fn conditions(query: &SearchQuery<'_>, first: usize, room_column: &str) -> (String, usize) {
    let mut next = first;
    let rooms = placeholders(query.rooms.len(), next);
    next += query.rooms.len();
    let keys = placeholders(query.keys.len(), next);
    next += query.keys.len();
    let mut sql = format!(" AND {room_column} IN ({rooms}) AND search_key IN ({keys}) AND e.outlier = 0");
    if query.below.is_some() {
        sql.push_str(&format!(" AND e.stream_pos < ${next}"));
        next += 1;
    }
    (sql, next)
}

/// One page of the events matching `query`.
pub async fn search_events(conn: &mut Conn, query: &SearchQuery<'_>) -> Result<Vec<SearchHit>> {
    if query.rooms.is_empty() || query.keys.is_empty() {
        return Ok(Vec::new());
    }
    let postgres = is_postgres(conn);
    let term = match postgres {
        true => query.term.to_owned(),
        false => match fts5_query(query.term) {
            Some(term) => term,
            None => return Ok(Vec::new()),
        },
    };
    let order = match query.order {
        SearchOrder::Rank => "rank DESC, e.stream_pos DESC",
        SearchOrder::Recent => "e.stream_pos DESC",
    };
    let sql = match postgres {
        true => {
            let (conditions, next) = conditions(query, 2, "s.room_nid");
            format!(
                "SELECT s.event_nid, CAST(ts_rank(s.vector, q.query) AS DOUBLE PRECISION) AS rank, e.stream_pos \
                 FROM event_search s JOIN events e ON e.event_nid = s.event_nid, \
                 websearch_to_tsquery('{PG_CONFIG}', $1) AS q(query) \
                 WHERE s.vector @@ q.query{conditions} ORDER BY {order} LIMIT ${next} OFFSET ${}",
                next + 1
            )
        }
        false => {
            let (conditions, next) = conditions(query, 2, "event_search.room_nid");
            format!(
                "SELECT event_search.rowid, -bm25(event_search) AS rank, e.stream_pos \
                 FROM event_search JOIN events e ON e.event_nid = event_search.rowid \
                 WHERE event_search MATCH $1{conditions} ORDER BY {order} LIMIT ${next} OFFSET ${}",
                next + 1
            )
        }
    };
    let mut sql_query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(term);
    for room in query.rooms {
        sql_query = sql_query.bind(room.0);
    }
    for key in query.keys {
        sql_query = sql_query.bind(*key);
    }
    if let Some(below) = query.below {
        sql_query = sql_query.bind(below);
    }
    let rows = sql_query.bind(query.limit).bind(query.offset).fetch_all(conn).await?;
    Ok(rows
        .into_iter()
        .map(|row| SearchHit { event_nid: EventNid(row.get(0)), rank: row.get(1), stream_pos: row.get(2) })
        .collect())
}

/// How many events match `query` (its page aside), before the reader's visibility is applied:
/// the spec's approximate `count`.
pub async fn count_matches(conn: &mut Conn, query: &SearchQuery<'_>) -> Result<i64> {
    if query.rooms.is_empty() || query.keys.is_empty() {
        return Ok(0);
    }
    let postgres = is_postgres(conn);
    let unpaged = SearchQuery { below: None, ..query.clone() };
    let term = match postgres {
        true => query.term.to_owned(),
        false => match fts5_query(query.term) {
            Some(term) => term,
            None => return Ok(0),
        },
    };
    let sql = match postgres {
        true => {
            let (conditions, _) = conditions(&unpaged, 2, "s.room_nid");
            format!(
                "SELECT COUNT(*) FROM event_search s JOIN events e ON e.event_nid = s.event_nid \
                 WHERE s.vector @@ websearch_to_tsquery('{PG_CONFIG}', $1){conditions}"
            )
        }
        false => {
            let (conditions, _) = conditions(&unpaged, 2, "event_search.room_nid");
            format!(
                "SELECT COUNT(*) FROM event_search JOIN events e ON e.event_nid = event_search.rowid \
                 WHERE event_search MATCH $1{conditions}"
            )
        }
    };
    let mut sql_query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(term);
    for room in unpaged.rooms {
        sql_query = sql_query.bind(room.0);
    }
    for key in unpaged.keys {
        sql_query = sql_query.bind(*key);
    }
    Ok(sql_query.fetch_one(conn).await?.get(0))
}

/// Rooms whose events predate the search index.
pub async fn backlog(conn: &mut Conn) -> Result<Vec<RoomNid>> {
    let rows = sqlx::query("SELECT room_nid FROM search_backlog ORDER BY room_nid").fetch_all(conn).await?;
    Ok(rows.into_iter().map(|row| RoomNid(row.get(0))).collect())
}

/// A backlog room's unredacted timeline events of the searchable types, as `(nid, event id,
/// json)`.
pub async fn searchable_events(conn: &mut Conn, room: RoomNid) -> Result<Vec<(EventNid, String, String)>> {
    let rows = sqlx::query(
        "SELECT e.event_nid, e.event_id, e.json FROM events e JOIN event_types t ON t.type_nid = e.type_nid \
         WHERE e.room_nid = $1 AND e.redacted_by IS NULL \
         AND t.event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')",
    )
    .bind(room.0)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (EventNid(row.get(0)), row.get(1), row.get(2))).collect())
}

pub async fn clear_backlog(conn: &mut Conn, room: RoomNid) -> Result<()> {
    sqlx::query("DELETE FROM search_backlog WHERE room_nid = $1").bind(room.0).execute(conn).await?;
    Ok(())
}
