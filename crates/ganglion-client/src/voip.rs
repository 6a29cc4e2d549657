//! `GET /voip/turnServer`: credentials for the configured TURN servers, made with the secret
//! they share (the TURN REST API that coturn's `use-auth-secret` checks): the username is the
//! expiry and the user, the password its HMAC-SHA1 under the secret. Nothing is stored.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{Json, extract::State};
use base64::Engine as _;
use ganglion_config::VoipConfig;
use ganglion_http::Auth;
use serde_json::{Value, json};

use crate::ClientState;

pub(crate) async fn turn_server(State(state): State<ClientState>, Auth(session): Auth) -> Json<Value> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    Json(credentials(&state.config.voip, session.user_id.as_str(), now))
}

/// The answer for `user_id` at `now` (seconds since the epoch): `{}` without TURN servers.
pub(crate) fn credentials(voip: &VoipConfig, user_id: &str, now: u64) -> Value {
    if voip.turn_uris.is_empty() {
        return json!({});
    }
    let username = format!("{}:{user_id}", now.saturating_add(voip.turn_user_lifetime_s));
    let key =
        ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, voip.turn_shared_secret.as_bytes());
    let password =
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()));
    json!({
        "username": username,
        "password": password,
        "uris": voip.turn_uris,
        "ttl": voip.turn_user_lifetime_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_turn_rest_api_ones() {
        let mut voip = VoipConfig {
            turn_uris: Vec::new(),
            turn_shared_secret: "s3cret".to_owned(),
            turn_user_lifetime_s: 3600,
        };
        assert_eq!(credentials(&voip, "@a:x", 1_000), json!({}), "no TURN server");
        voip.turn_uris = vec!["turn:turn.example.org:3478?transport=udp".to_owned()];
        let answer = credentials(&voip, "@a:x", 1_000);
        assert_eq!(answer["username"], "4600:@a:x");
        assert_eq!(answer["ttl"], 3600);
        assert_eq!(answer["uris"], json!(["turn:turn.example.org:3478?transport=udp"]));
        // base64(HMAC-SHA1("s3cret", "4600:@a:x")), as `openssl dgst -sha1 -hmac s3cret -binary | base64`
        // computes it.
        assert_eq!(answer["password"], EXPECTED_PASSWORD);
    }

    const EXPECTED_PASSWORD: &str = "8o7KXXBzUTv2oJtBTIV+qTt03wY=";
}
