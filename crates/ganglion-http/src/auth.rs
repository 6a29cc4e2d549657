//! Access tokens: the `Auth` extractor resolves the token through the state's `Authenticator`,
//! which also holds the process's rate limiter for the handlers' actions.

use std::{future::Future, pin::Pin, sync::Arc};

use axum::extract::{FromRef, FromRequestParts};
use ganglion_types::ErrorClass;
use http::request::Parts;
use ruma::{OwnedDeviceId, OwnedUserId};

use crate::{MatrixError, MatrixResult, RateLimiter};

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves access tokens; the role composing the router provides it through `FromRef`.
pub trait Authenticator: Send + Sync + 'static {
    fn session<'a>(&'a self, access_token: &'a str) -> BoxFuture<'a, MatrixResult<Option<Session>>>;
    fn rate_limiter(&self) -> &RateLimiter;
}

/// The access token of a request: `Authorization: Bearer …` or the deprecated `access_token`
/// query parameter.
pub fn access_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned());
    }
    parts.uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token").then(|| value.to_owned())
    })
}

/// An authenticated request.
pub struct Auth(pub Session);

impl<S> FromRequestParts<S> for Auth
where
    S: Send + Sync,
    Arc<dyn Authenticator>: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = Arc::<dyn Authenticator>::from_ref(state);
        let Some(token) = access_token(parts) else {
            return Err(MatrixError::new(ErrorClass::MissingToken, "Missing access token"));
        };
        let Some(session) = authenticator.session(&token).await? else {
            return Err(MatrixError::new(ErrorClass::UnknownToken, "Unknown access token")
                .with("soft_logout", serde_json::Value::Bool(false)));
        };
        Ok(Auth(session))
    }
}

/// An optionally authenticated request (for endpoints where auth is optional, such as UIA).
pub struct MaybeAuth(pub Option<Session>);

impl<S> FromRequestParts<S> for MaybeAuth
where
    S: Send + Sync,
    Arc<dyn Authenticator>: FromRef<S>,
{
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if access_token(parts).is_none() {
            return Ok(MaybeAuth(None));
        }
        Auth::from_request_parts(parts, state).await.map(|Auth(session)| MaybeAuth(Some(session)))
    }
}
