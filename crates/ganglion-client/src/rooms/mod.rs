//! Rooms: creation, membership, sending and reading events, state, members, typing, receipts,
//! aliases and the room directory.
//!
//! Reads go to the database and never past the readable positions; every write goes to the
//! master.

pub(crate) mod access;

pub(crate) use access::{from_object, room_id as room_id_param, user_id as user_id_param};
mod backfill;
mod create;
mod directory;
mod ephemeral;
mod filter;
mod members;
mod membership;
mod messages;
mod relations;
mod report;
mod search;
mod send;
mod spaces;
mod state;
mod upgrade;
mod visibility;

use ganglion_http::Route;
use ganglion_types::EndpointClass::{ClientRead, ClientWrite};

use crate::ClientState;

// One route per line, even past the line width: the table reads as data.
#[rustfmt::skip]
pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![
        Route::post("/_matrix/client/v3/createRoom", ClientWrite, create::create_room),
        // Membership.
        Route::post("/_matrix/client/v3/join/{roomIdOrAlias}", ClientWrite, membership::join_by_id_or_alias),
        Route::post("/_matrix/client/v3/rooms/{roomId}/join", ClientWrite, membership::join),
        Route::post("/_matrix/client/v3/knock/{roomIdOrAlias}", ClientWrite, membership::knock),
        Route::post("/_matrix/client/v3/rooms/{roomId}/invite", ClientWrite, membership::invite),
        Route::post("/_matrix/client/v3/rooms/{roomId}/leave", ClientWrite, membership::leave),
        Route::post("/_matrix/client/v3/rooms/{roomId}/forget", ClientWrite, membership::forget),
        Route::post("/_matrix/client/v3/rooms/{roomId}/upgrade", ClientWrite, upgrade::upgrade),
        Route::post("/_matrix/client/v3/rooms/{roomId}/kick", ClientWrite, membership::kick),
        Route::post("/_matrix/client/v3/rooms/{roomId}/ban", ClientWrite, membership::ban),
        Route::post("/_matrix/client/v3/rooms/{roomId}/unban", ClientWrite, membership::unban),
        // Sending. An empty state key may be written with or without the trailing slash, and
        // the router needs a route for each form.
        Route::put("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", ClientWrite, send::send_message),
        Route::put("/_matrix/client/v3/rooms/{roomId}/state/{eventType}", ClientWrite, send::send_state_without_key),
        Route::put("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/", ClientWrite, send::send_state_without_key),
        Route::put("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", ClientWrite, send::send_state),
        Route::put("/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}", ClientWrite, send::redact),
        // Reading.
        Route::get("/_matrix/client/v3/rooms/{roomId}/state", ClientRead, state::room_state),
        Route::get("/_matrix/client/v3/rooms/{roomId}/state/{eventType}", ClientRead, state::state_event_without_key),
        Route::get("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/", ClientRead, state::state_event_without_key),
        Route::get("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", ClientRead, state::state_event),
        Route::get("/_matrix/client/v3/rooms/{roomId}/event/{eventId}", ClientRead, messages::event),
        Route::get("/_matrix/client/v3/rooms/{roomId}/messages", ClientRead, messages::messages),
        Route::get(
            "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event",
            ClientRead,
            messages::timestamp_to_event,
        ),
        Route::get("/_matrix/client/v3/rooms/{roomId}/context/{eventId}", ClientRead, relations::context),
        // Relations and threads.
        Route::get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", ClientRead, relations::relations),
        Route::get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}", ClientRead, relations::relations_of_type),
        Route::get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", ClientRead, relations::relations_of_type_and_event_type),
        Route::get("/_matrix/client/v1/rooms/{roomId}/threads", ClientRead, relations::threads),
        Route::get("/_matrix/client/v3/rooms/{roomId}/members", ClientRead, members::members),
        Route::get("/_matrix/client/v3/rooms/{roomId}/joined_members", ClientRead, members::joined_members),
        Route::get("/_matrix/client/v3/joined_rooms", ClientRead, members::joined_rooms),
        // Previews and spaces.
        Route::get("/_matrix/client/v1/room_summary/{roomIdOrAlias}", ClientRead, spaces::room_summary),
        // MSC3266's path, where clients (matrix-sdk) ask a server advertising spec versions
        // before v1.15.
        Route::get("/_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary", ClientRead, spaces::room_summary),
        Route::get("/_matrix/client/v1/rooms/{roomId}/hierarchy", ClientRead, spaces::hierarchy),
        // Reports to the server's operators.
        Route::post("/_matrix/client/v3/rooms/{roomId}/report/{eventId}", ClientWrite, report::report_event),
        Route::post("/_matrix/client/v3/rooms/{roomId}/report", ClientWrite, report::report_room),
        Route::post("/_matrix/client/v3/users/{userId}/report", ClientWrite, report::report_user),
        // Typing, receipts and read markers.
        Route::put("/_matrix/client/v3/rooms/{roomId}/typing/{userId}", ClientWrite, ephemeral::typing),
        Route::post("/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}", ClientWrite, ephemeral::receipt),
        Route::post("/_matrix/client/v3/rooms/{roomId}/read_markers", ClientWrite, ephemeral::read_markers),
        // Aliases and the room directory.
        Route::get("/_matrix/client/v3/directory/room/{roomAlias}", ClientRead, directory::alias),
        Route::put("/_matrix/client/v3/directory/room/{roomAlias}", ClientWrite, directory::set_alias),
        Route::delete("/_matrix/client/v3/directory/room/{roomAlias}", ClientWrite, directory::delete_alias),
        Route::get("/_matrix/client/v3/rooms/{roomId}/aliases", ClientRead, directory::room_aliases),
        Route::get("/_matrix/client/v3/directory/list/room/{roomId}", ClientRead, visibility::visibility),
        Route::put("/_matrix/client/v3/directory/list/room/{roomId}", ClientWrite, visibility::set_visibility),
        Route::get("/_matrix/client/v3/publicRooms", ClientRead, directory::public_rooms),
        // Searches, so reads, though they are POSTs.
        Route::post("/_matrix/client/v3/publicRooms", ClientRead, directory::search_public_rooms),
        Route::post("/_matrix/client/v3/search", ClientRead, search::search),
    ]
}

#[cfg(test)]
mod tests;
