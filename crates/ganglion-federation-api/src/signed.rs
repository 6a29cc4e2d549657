//! Requests signed by another server (X-Matrix): the extractor every authenticated federation
//! endpoint takes. A missing or bad signature is 401 `M_UNAUTHORIZED`, per the spec.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use ganglion_events::ruma::{OwnedServerName, ServerName};
use ganglion_federation::request_auth::{RequestAuthError, authenticate};
use ganglion_http::MatrixError;
use ganglion_types::ErrorClass;

use crate::FederationState;

/// A request whose signature verified: the server that signed it and its body.
pub struct Signed {
    pub origin: OwnedServerName,
    pub body: Bytes,
}

impl FromRequest<FederationState> for Signed {
    type Rejection = MatrixError;

    async fn from_request(request: Request, state: &FederationState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await.map_err(
            |rejection| {
                if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    MatrixError::new(ErrorClass::TooLarge, "Request body too large")
                } else {
                    MatrixError::bad_json(rejection.body_text())
                }
            },
        )?;
        let own_name = ServerName::parse(&state.config.server_name)
            .map_err(|_| MatrixError::internal("the server name is not a server name"))?;
        let federation = &state.federation;
        let origin = authenticate(&federation.keyring, &federation.policy, &own_name, &parts, &body)
            .await
            .map_err(|error: RequestAuthError| {
                tracing::info!(%error, uri = %parts.uri, "refused a federation request");
                let class = match error {
                    RequestAuthError::NotFederating { .. } => ErrorClass::Forbidden,
                    _ => ErrorClass::Unauthorized,
                };
                MatrixError::new(class, error.to_string())
            })?;
        Ok(Signed { origin, body })
    }
}
