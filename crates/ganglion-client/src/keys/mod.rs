//! The end-to-end encryption module's endpoints: device keys, one-time and fallback keys,
//! cross-signing and signatures, to-device messages, server-side key backup. Reads go to the
//! database; every write goes to the master, which checks every key against what it stores.

mod backup;
mod devices;

use ganglion_http::Route;
use ganglion_types::EndpointClass::{ClientRead, ClientWrite};

use crate::ClientState;

// One route per line, even past the line width: the table reads as data.
#[rustfmt::skip]
pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![
        Route::post("/_matrix/client/v3/keys/upload", ClientWrite, devices::upload),
        Route::post("/_matrix/client/v3/keys/query", ClientRead, devices::query),
        Route::post("/_matrix/client/v3/keys/claim", ClientWrite, devices::claim),
        Route::post("/_matrix/client/v3/keys/device_signing/upload", ClientWrite, devices::upload_signing_keys),
        Route::post("/_matrix/client/v3/keys/signatures/upload", ClientWrite, devices::upload_signatures),
        Route::put("/_matrix/client/v3/sendToDevice/{eventType}/{txnId}", ClientWrite, devices::send_to_device),
        // Server-side key backup.
        Route::post("/_matrix/client/v3/room_keys/version", ClientWrite, backup::create_version),
        Route::get("/_matrix/client/v3/room_keys/version", ClientRead, backup::current_version),
        Route::get("/_matrix/client/v3/room_keys/version/{version}", ClientRead, backup::version),
        Route::put("/_matrix/client/v3/room_keys/version/{version}", ClientWrite, backup::update_version),
        Route::delete("/_matrix/client/v3/room_keys/version/{version}", ClientWrite, backup::delete_version),
        Route::get("/_matrix/client/v3/room_keys/keys", ClientRead, backup::keys),
        Route::put("/_matrix/client/v3/room_keys/keys", ClientWrite, backup::put_keys),
        Route::delete("/_matrix/client/v3/room_keys/keys", ClientWrite, backup::delete_keys),
        Route::get("/_matrix/client/v3/room_keys/keys/{roomId}", ClientRead, backup::room_keys),
        Route::put("/_matrix/client/v3/room_keys/keys/{roomId}", ClientWrite, backup::put_room_keys),
        Route::delete("/_matrix/client/v3/room_keys/keys/{roomId}", ClientWrite, backup::delete_room_keys),
        Route::get("/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", ClientRead, backup::session_key),
        Route::put("/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", ClientWrite, backup::put_session_key),
        Route::delete("/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}", ClientWrite, backup::delete_session_key),
    ]
}
