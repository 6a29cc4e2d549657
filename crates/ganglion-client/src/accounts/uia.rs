//! User-interactive authentication: the 401 challenge, the sessions that remember completed
//! stages, and the two stages we offer (`m.login.dummy` for registration, `m.login.password`
//! for sensitive account operations).
//!
//! Sessions are in memory, bounded and short-lived. Each is bound to one operation (method,
//! path and user), so a session opened for one request cannot authorise another.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use ganglion_events::ruma::OwnedUserId;
use ganglion_http::{MatrixError, MatrixResult};
use ganglion_types::ErrorClass;
use parking_lot::Mutex;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::login::{UserIdentifier, identified_user};
use crate::ClientState;
use ganglion_rpc::CheckPassword;

pub(crate) const DUMMY: &str = "m.login.dummy";
pub(crate) const PASSWORD: &str = "m.login.password";

/// One way through user-interactive auth: the stages to complete, in order.
pub(crate) type Flow = &'static [&'static str];

/// How many sessions may be open at once; the oldest goes when a new one needs room.
const MAX_SESSIONS: usize = 10_000;
/// How long a session stays usable after it is opened.
const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The `auth` object of a user-interactive request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthData {
    /// Absent when the client only asks whether the session is complete.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<String>,
    // `m.login.password`:
    pub identifier: Option<UserIdentifier>,
    /// The deprecated form of `identifier`.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// What a session has proved so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Completed stages, in the order they were completed.
    pub completed: Vec<String>,
    /// The user a password stage proved to be.
    pub user_id: Option<OwnedUserId>,
}

struct UiaSession {
    binding: String,
    progress: Progress,
    expires: Instant,
}

/// In-progress user-interactive auth sessions (a session lives for one registration or one
/// sensitive operation).
pub struct UiaSessions {
    sessions: Mutex<HashMap<String, UiaSession>>,
    capacity: usize,
    lifetime: Duration,
}

impl Default for UiaSessions {
    fn default() -> UiaSessions {
        UiaSessions::new(MAX_SESSIONS, SESSION_LIFETIME)
    }
}

impl UiaSessions {
    pub fn new(capacity: usize, lifetime: Duration) -> UiaSessions {
        UiaSessions { sessions: Mutex::new(HashMap::new()), capacity: capacity.max(1), lifetime }
    }

    /// Opens a session for the operation `binding` and returns its id.
    pub(crate) fn open(&self, binding: &str, now: Instant) -> String {
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.capacity {
            sessions.retain(|_, session| session.expires > now);
        }
        if sessions.len() >= self.capacity {
            let oldest = sessions.iter().min_by_key(|(_, session)| session.expires).map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        let id: String =
            rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect();
        let session = UiaSession {
            binding: binding.to_owned(),
            progress: Progress::default(),
            expires: now + self.lifetime,
        };
        sessions.insert(id.clone(), session);
        id
    }

    /// The progress of session `id`, if it exists, has not expired and was opened for `binding`.
    pub(crate) fn progress(&self, id: &str, binding: &str, now: Instant) -> Option<Progress> {
        let sessions = self.sessions.lock();
        let session = sessions.get(id)?;
        (session.expires > now && session.binding == binding).then(|| session.progress.clone())
    }

    /// Records `stage` as completed (and the user it proved, if any). `None` when the session
    /// is unknown, expired or bound to another operation.
    pub(crate) fn complete_stage(
        &self,
        id: &str,
        binding: &str,
        stage: &str,
        user_id: Option<OwnedUserId>,
        now: Instant,
    ) -> Option<Progress> {
        let mut sessions = self.sessions.lock();
        let session = sessions.get_mut(id)?;
        if session.expires <= now || session.binding != binding {
            return None;
        }
        if !session.progress.completed.iter().any(|done| done == stage) {
            session.progress.completed.push(stage.to_owned());
        }
        if user_id.is_some() {
            session.progress.user_id = user_id;
        }
        Some(session.progress.clone())
    }

    /// Ends a session once its operation succeeded: completed stages authorise one operation.
    pub(crate) fn close(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().len()
    }
}

/// Whether `stage` may come next: some flow starts with the completed stages, in order, and
/// continues with `stage`.
pub(crate) fn stage_is_next(flows: &[Flow], completed: &[String], stage: &str) -> bool {
    flows.iter().any(|flow| {
        flow.len() > completed.len()
            && flow.iter().zip(completed).all(|(wanted, done)| wanted == done)
            && flow[completed.len()] == stage
    })
}

/// Whether the completed stages are exactly one whole flow.
pub(crate) fn flow_is_complete(flows: &[Flow], completed: &[String]) -> bool {
    flows.iter().any(|flow| {
        flow.len() == completed.len() && flow.iter().zip(completed).all(|(wanted, done)| wanted == done)
    })
}

/// The 401 answer: the flows, the session and what it has completed, plus the reason when an
/// attempted stage failed.
pub(crate) fn challenge(
    flows: &[Flow],
    session: &str,
    completed: &[String],
    failure: Option<&str>,
) -> MatrixError {
    let flows: Vec<Value> = flows.iter().map(|stages| json!({ "stages": stages })).collect();
    let mut error = MatrixError::new(ErrorClass::UserInteractiveAuth, failure.unwrap_or(""))
        .with("flows", Value::Array(flows))
        .with("params", json!({}))
        .with("session", json!(session));
    if !completed.is_empty() {
        error = error.with("completed", json!(completed));
    }
    error
}

/// A user-interactive request to authorise.
pub(crate) struct Uia<'a> {
    pub flows: &'a [Flow],
    /// The operation: a session opened for another binding does not count.
    pub binding: String,
    /// The user the request's access token belongs to; a password stage must prove this user.
    pub user_id: Option<&'a OwnedUserId>,
}

/// A request whose session has completed a flow. Call `UiaSessions::close` once the operation
/// succeeded.
pub(crate) struct Passed {
    pub session: String,
    /// The user a password stage proved to be.
    pub user_id: Option<OwnedUserId>,
}

/// Runs one step of user-interactive auth: `Ok` when the session (with this request's stage)
/// has completed a flow, otherwise the 401 challenge to answer.
pub(crate) async fn authenticate(
    state: &ClientState,
    uia: Uia<'_>,
    auth: Option<AuthData>,
    client_ip: IpAddr,
) -> MatrixResult<Passed> {
    let now = Instant::now();
    let Some(auth) = auth else {
        let session = state.uia.open(&uia.binding, now);
        return Err(challenge(uia.flows, &session, &[], None));
    };
    // A client may attempt the first stage without asking for a session first.
    let session = match auth.session.clone() {
        Some(session) => session,
        None => state.uia.open(&uia.binding, now),
    };
    let Some(mut progress) = state.uia.progress(&session, &uia.binding, now) else {
        let fresh = state.uia.open(&uia.binding, now);
        return Err(challenge(uia.flows, &fresh, &[], Some("Unknown or expired session")));
    };
    if let Some(stage) = auth.kind.as_deref() {
        // A completed stage cannot be retried; the request goes on as if it only named the session.
        if !progress.completed.iter().any(|done| done == stage) {
            if !stage_is_next(uia.flows, &progress.completed, stage) {
                let failure = format!("Stage {stage} is not expected now");
                return Err(challenge(uia.flows, &session, &progress.completed, Some(&failure)));
            }
            let proved_user = match stage {
                PASSWORD => match password_stage(state, &auth, uia.user_id, client_ip).await? {
                    Ok(user_id) => Some(user_id),
                    Err(failure) => {
                        return Err(challenge(uia.flows, &session, &progress.completed, Some(failure)));
                    }
                },
                DUMMY => None,
                // Never accept a stage nothing here checks, whatever a flow lists.
                other => {
                    let failure = format!("Stage {other} is not supported");
                    return Err(challenge(uia.flows, &session, &progress.completed, Some(&failure)));
                }
            };
            progress =
                match state.uia.complete_stage(&session, &uia.binding, stage, proved_user, Instant::now()) {
                    Some(progress) => progress,
                    None => {
                        let fresh = state.uia.open(&uia.binding, Instant::now());
                        return Err(challenge(uia.flows, &fresh, &[], Some("Unknown or expired session")));
                    }
                };
        }
    }
    if flow_is_complete(uia.flows, &progress.completed) {
        Ok(Passed { session, user_id: progress.user_id })
    } else {
        Err(challenge(uia.flows, &session, &progress.completed, None))
    }
}

/// Checks an `m.login.password` stage: `Ok(Ok(user))` when the password is right, `Ok(Err)`
/// with the reason for a failed attempt the client may repeat.
async fn password_stage(
    state: &ClientState,
    auth: &AuthData,
    expected_user: Option<&OwnedUserId>,
    client_ip: IpAddr,
) -> MatrixResult<Result<OwnedUserId, &'static str>> {
    let Some(password) = auth.password.clone() else { return Ok(Err("Missing password")) };
    let user_id = match (&auth.identifier, &auth.user, expected_user) {
        // An authenticated request may leave out whom the password is for.
        (None, None, Some(expected)) => expected.clone(),
        (identifier, user, _) => {
            match identified_user(identifier.as_ref(), user.as_deref(), false, &state.config.server_name) {
                Ok(user_id) => user_id,
                Err(_) => return Ok(Err("Invalid username or password")),
            }
        }
    };
    if expected_user.is_some_and(|expected| *expected != user_id) {
        return Ok(Err("The password must be that of the logged-in user"));
    }
    // Password guesses count against the same failed-attempt limits as logins.
    let limiter = state.authenticator.rate_limiter();
    limiter.check_failed_logins(user_id.as_str(), client_ip)?;
    // The master owns password hashes (and bounds how many argon2 runs at once).
    let matches = state.master.check_password(CheckPassword { user_id: user_id.clone(), password }).await?;
    if !matches {
        limiter.record_failed_login(user_id.as_str(), client_ip);
    }
    Ok(if matches { Ok(user_id) } else { Err("Invalid username or password") })
}
