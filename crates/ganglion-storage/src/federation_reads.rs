//! What other servers may read of a room through the federation API.

use ganglion_types::RoomNid;

use crate::{Conn, Result};

/// Whether some user of `server` (the part of the user id after its first `:`) is joined to
/// the room now.
pub async fn server_has_joined_member(conn: &mut Conn, room_nid: RoomNid, server: &str) -> Result<bool> {
    let suffix = format!(":{server}");
    let colons = suffix.matches(':').count() as i64;
    // An exact, case-sensitive suffix match on both backends (SQLite's LIKE ignores case), and
    // no `:` before it: else `@a:b:8448` would count as a user of a server named `8448`.
    let row = sqlx::query(
        "SELECT 1 FROM memberships WHERE room_nid = $1 AND membership = 'join'
         AND substr(user_id, length(user_id) - length($2) + 1) = $2
         AND length(user_id) - length(replace(user_id, ':', '')) = $3
         LIMIT 1",
    )
    .bind(room_nid.0)
    .bind(suffix.as_str())
    .bind(colons)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}
