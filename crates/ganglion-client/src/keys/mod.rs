//! End-to-end encryption: device keys, one-time and fallback keys, cross-signing and
//! signatures, to-device messages. Writes go to the master, which checks every key against what
//! it stores; queries read the database.

mod devices;

use ganglion_http::Route;
use ganglion_types::EndpointClass::{ClientRead, ClientWrite};

use crate::ClientState;

pub(crate) fn routes() -> Vec<Route<ClientState>> {
    vec![
        Route::post("/_matrix/client/v3/keys/upload", ClientWrite, devices::upload),
        Route::post("/_matrix/client/v3/keys/query", ClientRead, devices::query),
        Route::post("/_matrix/client/v3/keys/claim", ClientWrite, devices::claim),
        Route::post(
            "/_matrix/client/v3/keys/device_signing/upload",
            ClientWrite,
            devices::upload_signing_keys,
        ),
        Route::post("/_matrix/client/v3/keys/signatures/upload", ClientWrite, devices::upload_signatures),
        Route::put(
            "/_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
            ClientWrite,
            devices::send_to_device,
        ),
    ]
}
