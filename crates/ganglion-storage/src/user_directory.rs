//! The user directory: whom a user finds by name (`/user_directory/search`). A user is found by
//! those who share a joined room with them, by everyone when they are joined to a room published
//! in the room directory, and, when the server says so, any active local user by anyone.

use ganglion_types::EventNid;
use sqlx::Row;

use crate::{Conn, Result};

/// A local user as the directory shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// `%term%` for `LIKE … ESCAPE '\'`, lowercased, with `%`, `_` and `\` in the term taken as
/// themselves.
pub fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The rooms whose members `searcher` may find: those they are joined to, and those published in
/// the room directory.
const VISIBLE_ROOMS: &str = "(SELECT room_nid FROM memberships WHERE user_id = $1 AND membership = 'join' \
     UNION SELECT room_nid FROM rooms WHERE is_public = 1)";

/// Active local users whose id or display name contains the term of `pattern` (see
/// [`like_pattern`]) and whom `searcher` may find (`all_local`: every one), by user id; at most
/// `limit`.
pub async fn local_users_matching(
    conn: &mut Conn,
    searcher: &str,
    pattern: &str,
    all_local: bool,
    limit: i64,
) -> Result<Vec<DirectoryUser>> {
    let visible = match all_local {
        true => String::new(),
        false => format!(
            " AND EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.user_id AND m.membership = 'join' \
             AND m.room_nid IN {VISIBLE_ROOMS})"
        ),
    };
    let sql = format!(
        "SELECT u.user_id, u.displayname, u.avatar_url FROM users u WHERE u.deactivated = 0 \
         AND (LOWER(u.user_id) LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(u.displayname, '')) LIKE $2 ESCAPE '\\'){visible} \
         ORDER BY u.user_id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(searcher)
        .bind(pattern)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| DirectoryUser { user_id: row.get(0), displayname: row.get(1), avatar_url: row.get(2) })
        .collect())
}

/// Other servers' users joined to a room `searcher` may find members of, whose member event
/// mentions the term of `pattern` anywhere (the caller checks the id and display name), with
/// that member event; at most `limit`, by user id.
pub async fn remote_users_matching(
    conn: &mut Conn,
    searcher: &str,
    pattern: &str,
    limit: i64,
) -> Result<Vec<(String, EventNid)>> {
    let sql = format!(
        "SELECT m.user_id, MAX(m.event_nid) FROM memberships m JOIN events e ON e.event_nid = m.event_nid \
         WHERE m.membership = 'join' AND m.room_nid IN {VISIBLE_ROOMS} \
         AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = m.user_id) \
         AND LOWER(e.json) LIKE $2 ESCAPE '\\' \
         GROUP BY m.user_id ORDER BY m.user_id LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(searcher)
        .bind(pattern)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), EventNid(row.get(1)))).collect())
}
