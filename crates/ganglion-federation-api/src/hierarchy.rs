//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space of ours as another server's user
//! browses it, one level deep (the asking server walks further): the space's summary with its
//! `m.space.child` events, the children this server has and the asking server may see, and the
//! children it has but may not.

use axum::{
    Json,
    extract::{Path, State},
};
use ganglion_events::ruma::{RoomId, ServerName};
use ganglion_http::{MatrixError, MatrixQuery, MatrixResult, lenient};
use ganglion_state::{
    Caches,
    hierarchy::{SpaceRoom, space_room},
};
use ganglion_storage::{Conn, federation_reads::server_has_joined_member, rooms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{FederationState, Signed};

#[derive(Deserialize)]
pub(crate) struct HierarchyQuery {
    #[serde(default, deserialize_with = "lenient::bool_opt")]
    suggested_only: Option<bool>,
}

pub(crate) async fn hierarchy(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    query: MatrixResult<MatrixQuery<HierarchyQuery>>,
    signed: Signed,
) -> MatrixResult<Json<Value>> {
    let MatrixQuery(HierarchyQuery { suggested_only }) = query?;
    let suggested_only = suggested_only.unwrap_or(false);
    RoomId::parse(&room_id)
        .map_err(|_| MatrixError::invalid_param(format!("{room_id:?} is not a room id")))?;
    let mut conn = state.db.conn().await?;
    // This request's own caches: the process's shared ones are not ours.
    let caches = Caches::new();
    let unknown = || MatrixError::not_found(format!("{room_id} is not a room this server can show"));
    let room = known_room(&mut conn, &room_id).await?.ok_or_else(unknown)?;
    let space = space_room(&caches, &mut conn, &room).await?;
    if !accessible(&mut conn, &space, &room, &signed.origin).await? {
        return Err(unknown());
    }
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for (child_id, suggested) in &space.children {
        if suggested_only && !suggested {
            continue;
        }
        // A room this server is not in is left to the servers the child event names.
        let Some(child_room) = known_room(&mut conn, child_id).await? else { continue };
        let child = space_room(&caches, &mut conn, &child_room).await?;
        if accessible(&mut conn, &child, &child_room, &signed.origin).await? {
            let mut summary = child.summary;
            if let Some(entry) = summary.as_object_mut() {
                entry.remove("children_state");
            }
            children.push(summary);
        } else {
            inaccessible.push(child_id.clone());
        }
    }
    Ok(Json(json!({ "room": space.summary, "children": children, "inaccessible_children": inaccessible })))
}

/// A room this server is in (has events of, not just an invite to).
async fn known_room(conn: &mut Conn, room_id: &str) -> MatrixResult<Option<rooms::RoomRow>> {
    Ok(rooms::room_by_id(conn, room_id).await?.filter(|room| room.latest_event_nid.is_some()))
}

/// Whether `origin`'s users may see the room: anyone may join, knock on or read it, `origin`
/// has a user in it, or its join rule lets in members of a room `origin` has a user in.
async fn accessible(
    conn: &mut Conn,
    space: &SpaceRoom,
    room: &rooms::RoomRow,
    origin: &ServerName,
) -> MatrixResult<bool> {
    if matches!(space.join_rule.as_deref(), Some("public" | "knock" | "knock_restricted"))
        || space.summary["world_readable"] == json!(true)
        || server_has_joined_member(conn, room.room_nid, origin.as_str()).await?
    {
        return Ok(true);
    }
    if space.join_rule.as_deref() == Some("restricted") {
        for allowed in &space.allowed_room_ids {
            if let Some(allowed) = known_room(conn, allowed).await?
                && server_has_joined_member(conn, allowed.room_nid, origin.as_str()).await?
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
