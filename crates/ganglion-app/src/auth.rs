//! Access-token lookup against the database.

use std::sync::Arc;

use ganglion_events::ruma::{OwnedDeviceId, OwnedUserId};
use ganglion_http::{Authenticator, MatrixError, MatrixResult, RateLimiter, Session};
use ganglion_state::Caches;
use ganglion_storage::{Db, accounts};

/// Resolves access tokens, through the shared cache (the master clears it on every logout).
pub struct DbAuthenticator {
    db: Db,
    caches: Arc<Caches>,
    limiter: Arc<RateLimiter>,
}

impl DbAuthenticator {
    pub fn new(db: Db, caches: Arc<Caches>, limiter: Arc<RateLimiter>) -> DbAuthenticator {
        DbAuthenticator { db, caches, limiter }
    }

    async fn lookup(&self, access_token: &str) -> MatrixResult<Option<Session>> {
        let (user_id, device_id) = match self.caches.session(access_token) {
            Some(session) => session,
            None => {
                let generation = self.caches.sessions_generation();
                let mut conn = self.db.conn().await.map_err(MatrixError::from)?;
                let found =
                    accounts::session_by_token(&mut conn, access_token).await.map_err(MatrixError::from)?;
                let Some((user_id, device_id)) = found else { return Ok(None) };
                self.caches.remember_session(generation, access_token, &user_id, &device_id);
                (user_id, device_id)
            }
        };
        let user_id = OwnedUserId::try_from(user_id).map_err(|e| MatrixError::internal(e.to_string()))?;
        Ok(Some(Session {
            user_id,
            device_id: OwnedDeviceId::from(device_id),
            access_token: access_token.to_owned(),
        }))
    }
}

impl Authenticator for DbAuthenticator {
    fn session<'a>(
        &'a self,
        access_token: &'a str,
    ) -> ganglion_http::BoxFuture<'a, MatrixResult<Option<Session>>> {
        Box::pin(self.lookup(access_token))
    }

    fn rate_limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}
