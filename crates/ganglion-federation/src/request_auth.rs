//! Inbound request authentication: the `Authorization: X-Matrix …` header of a request from
//! another server, checked against that server's key as the key ring knows it.

use ruma::{OwnedServerName, ServerName, api::federation::authentication::XMatrix};

use crate::KeyRing;

#[derive(Debug, thiserror::Error)]
pub enum RequestAuthError {
    #[error("the request carries no X-Matrix authorization")]
    Missing,
    #[error("the X-Matrix authorization is malformed: {0}")]
    Malformed(String),
    #[error("the request is addressed to {0}, not to this server")]
    WrongDestination(String),
    #[error("the signing key of {origin} cannot be found: {reason}")]
    KeyUnavailable { origin: String, reason: String },
    #[error("the request's signature does not verify: {0}")]
    BadSignature(String),
    /// The origin is a server this one does not federate with.
    #[error("this server does not federate with {origin}: {reason}")]
    NotFederating { origin: String, reason: &'static str },
}

/// The server that signed the request made of `parts` and `body`, if its signature verifies.
pub async fn authenticate(
    keyring: &KeyRing,
    policy: &crate::ServerPolicy,
    own_name: &ServerName,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<OwnedServerName, RequestAuthError> {
    // Several X-Matrix headers are allowed; the first that parses is the one checked.
    let mut headers = parts.headers.get_all(http::header::AUTHORIZATION).iter().peekable();
    if headers.peek().is_none() {
        return Err(RequestAuthError::Missing);
    }
    let mut malformed = None;
    let xmatrix = headers
        .find_map(|value| {
            match value
                .to_str()
                .map_err(|e| e.to_string())
                .and_then(|v| XMatrix::parse(v).map_err(|e| e.to_string()))
            {
                Ok(xmatrix) => Some(xmatrix),
                Err(error) => {
                    malformed = Some(error);
                    None
                }
            }
        })
        .ok_or_else(|| RequestAuthError::Malformed(malformed.unwrap_or_default()))?;
    if let Some(destination) = &xmatrix.destination
        && destination != own_name
    {
        return Err(RequestAuthError::WrongDestination(destination.to_string()));
    }
    // Checked before its key is fetched: a refused server is never contacted.
    if let Some(reason) = policy.refusal(xmatrix.origin.as_str()) {
        return Err(RequestAuthError::NotFederating { origin: xmatrix.origin.to_string(), reason });
    }
    let keys = keyring.public_keys(&xmatrix.origin, &[xmatrix.key.as_str()], crate::now_ms()).await.map_err(
        |error| RequestAuthError::KeyUnavailable {
            origin: xmatrix.origin.to_string(),
            reason: error.to_string(),
        },
    )?;
    // The signature covers the method, the URI and the body only.
    let request = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(body)
        .map_err(|error| RequestAuthError::Malformed(error.to_string()))?;
    xmatrix
        .verify_request(&request, own_name, &keys)
        .map_err(|error| RequestAuthError::BadSignature(error.to_string()))?;
    Ok(xmatrix.origin)
}
