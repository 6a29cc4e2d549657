//! Server discovery: `/.well-known/matrix/client`, `/versions` and `/capabilities`.

use axum::{Json, extract::State};
use ganglion_config::Config;
use ganglion_events::SUPPORTED_ROOM_VERSIONS;
use ganglion_http::Auth;
use serde_json::{Map, Value, json};

use crate::ClientState;

/// The spec versions whose client-server API we serve. The `r0` releases are listed because
/// every `r0` path is served too, and older clients gate features on them (Element enables
/// lazy-loaded members only when it sees `r0.5.0`).
const SPEC_VERSIONS: [&str; 20] = [
    "r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3",
    "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
];

/// The base URL clients should use: the configured public one, else the listener's address.
pub(crate) fn base_url(config: &Config) -> String {
    match &config.http.public_baseurl {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", config.http.listen),
    }
}

/// `GET /.well-known/matrix/client`.
pub(crate) async fn well_known(State(state): State<ClientState>) -> Json<Value> {
    Json(json!({ "m.homeserver": { "base_url": base_url(&state.config) } }))
}

/// `GET /_matrix/client/versions`, with the unstable features we serve.
pub(crate) async fn versions() -> Json<Value> {
    // Element X looks for simplified sliding sync here before it logs in.
    Json(json!({
        "versions": SPEC_VERSIONS,
        "unstable_features": { "org.matrix.simplified_msc3575": true },
    }))
}

/// The capabilities object: password changes and profile edits are allowed, third-party
/// identifiers are not, and the room versions we can create.
pub(crate) fn capabilities_of(config: &Config) -> Value {
    let available: Map<String, Value> =
        SUPPORTED_ROOM_VERSIONS.iter().map(|version| (version.to_string(), json!("stable"))).collect();
    json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": config.rooms.default_version, "available": available },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
        }
    })
}

/// `GET /_matrix/client/v3/capabilities`.
pub(crate) async fn capabilities(State(state): State<ClientState>, Auth(_session): Auth) -> Json<Value> {
    Json(capabilities_of(&state.config))
}
