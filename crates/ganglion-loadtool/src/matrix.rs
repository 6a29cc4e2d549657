//! The few client-server API calls the benchmark makes, over plain HTTP/1.1.
//!
//! Calls used in the measured phase (`send_event`, `send_to_device`, `sync`, the `/keys` calls)
//! return a [`Reply`] and leave retries and counting to the caller. Setup calls retry on 429 (with
//! `backoff`'s waits) and fail the run on anything else.
//!
//! Nothing here needs a Ganglion: registration goes through user-interactive auth's
//! `m.login.dummy` stage as Synapse asks for it, and `X-Ganglion-Instance` is read when present.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backoff::Backoff;
use crate::clock;

/// The header naming the process that answered, `<role>/<name>`.
const INSTANCE_HEADER: &str = "x-ganglion-instance";
/// Ganglion's `/sync` answers say whether they came from memory or needed the database.
const SYNC_SOURCE_HEADER: &str = "x-ganglion-sync-source";

/// Setup calls give up after this many 429s in a row.
const SETUP_RATE_LIMIT_RETRIES: u32 = 50;

/// A logged-in device.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub access_token: String,
}

/// What the server answered.
#[derive(Debug)]
pub enum Reply {
    /// A 2xx, with the body, the clock reading once the whole body had arrived and the
    /// `X-Ganglion-Instance` header (`<role>/<name>` of the process that answered), if any.
    /// `X-Ganglion-Sync-Source` (`memory` or `database`), if any.
    Ok { body: Bytes, received_ns: u64, instance: Option<HeaderValue>, source: Option<HeaderValue> },
    /// A 429, with the wait the server asked for (`retry_after_ms`, else `Retry-After` in
    /// seconds), if it named one. `backoff` turns it into the actual wait.
    RateLimited(Option<Duration>),
    /// Any other status, with the start of the body for the report.
    Failed { status: StatusCode, body: String },
}

/// Errors of one kind of request, never dropped: every non-2xx lands in `by_status`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ErrorCounts {
    /// 429 answers (each was waited out, with back-off, and retried).
    pub rate_limited: u64,
    /// Other non-2xx answers by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Connection failures and timeouts: no status at all.
    pub transport: u64,
    /// 2xx answers whose body could not be parsed.
    pub bad_body: u64,
    /// The first failure of any kind, verbatim, to show what went wrong.
    pub first: Option<String>,
}

impl ErrorCounts {
    pub fn failed(&mut self, status: StatusCode, body: &str) {
        *self.by_status.entry(status.as_u16()).or_default() += 1;
        self.first.get_or_insert_with(|| format!("{status}: {body}"));
    }

    pub fn transport(&mut self, error: &reqwest::Error) {
        self.transport += 1;
        self.first.get_or_insert_with(|| format!("{error:#}"));
    }

    pub fn bad_body(&mut self, error: &serde_json::Error) {
        self.bad_body += 1;
        self.first.get_or_insert_with(|| format!("unparseable 2xx body: {error}"));
    }

    pub fn merge(&mut self, other: ErrorCounts) {
        self.rate_limited += other.rate_limited;
        for (status, count) in other.by_status {
            *self.by_status.entry(status).or_default() += count;
        }
        self.transport += other.transport;
        self.bad_body += other.bad_body;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    /// Failures other than 429s.
    pub fn failures(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.transport + self.bad_body
    }
}

/// One HTTP client bound to one server. Each clone shares the connection pool.
#[derive(Debug, Clone)]
pub struct Api {
    base_url: String,
    http: reqwest::Client,
}

/// The answer to `/register` and `/login`.
#[derive(Deserialize)]
struct RegisterResponse {
    user_id: String,
    device_id: String,
    access_token: String,
}

/// A 401 from `/register`: user-interactive auth's session and the flows it offers.
#[derive(Debug, Deserialize)]
pub struct InteractiveAuth {
    pub session: Option<String>,
    #[serde(default)]
    pub flows: Vec<AuthFlow>,
}

#[derive(Debug, Deserialize)]
pub struct AuthFlow {
    #[serde(default)]
    pub stages: Vec<String>,
}

/// The only stage the load tool can complete.
const DUMMY_STAGE: &str = "m.login.dummy";

impl InteractiveAuth {
    /// The session to complete with `m.login.dummy`, or why registration cannot go on: a server
    /// that wants a captcha, an email or a token for every account cannot be loaded this way.
    pub fn dummy_session(self) -> Result<String, String> {
        let session = self.session.ok_or("401 without an auth session")?;
        let offered = self.flows.is_empty()
            || self.flows.iter().any(|flow| flow.stages.iter().all(|stage| stage == DUMMY_STAGE));
        if !offered {
            let flows: Vec<String> = self.flows.iter().map(|flow| flow.stages.join(" + ")).collect();
            return Err(format!(
                "the server offers no registration flow of `{DUMMY_STAGE}` alone (flows: {}); allow \
                 registration without verification (Synapse: enable_registration_without_verification)",
                flows.join(", ")
            ));
        }
        Ok(session)
    }
}

#[derive(Deserialize)]
struct RoomIdResponse {
    room_id: String,
}

#[derive(Deserialize)]
struct RateLimitBody {
    retry_after_ms: Option<u64>,
}

impl Api {
    /// `pool_size` idle connections are kept per host: size it for every request that can be in
    /// flight at once, or connections get closed and reopened under load.
    pub fn new(base_url: &str, pool_size: usize, timeout: Duration) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool_size)
            .tcp_nodelay(true)
            .timeout(timeout)
            .build()
            .context("building the HTTP client")?;
        Ok(Api { base_url: base_url.trim_end_matches('/').to_owned(), http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_matrix/client{path}", self.base_url)
    }

    /// Sends a request and reads the whole body.
    pub async fn execute(&self, request: RequestBuilder) -> Result<Reply, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status();
        let retry_after_header = response_retry_after(response.headers());
        let instance = response.headers().get(INSTANCE_HEADER).cloned();
        let source = response.headers().get(SYNC_SOURCE_HEADER).cloned();
        let body = response.bytes().await?;
        let received_ns = clock::now_ns();
        if status.is_success() {
            return Ok(Reply::Ok { body, received_ns, instance, source });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Ok(Reply::RateLimited(rate_limit_hint(&body, retry_after_header.as_deref())));
        }
        let body = String::from_utf8_lossy(&body);
        let body: String = body.chars().take(300).collect();
        Ok(Reply::Failed { status, body })
    }

    /// Runs a setup call: 429s are counted in `rate_limited` and waited out with back-off, any
    /// other failure ends the run with `what` in the message.
    async fn setup_call(
        &self,
        what: &str,
        rate_limited: &AtomicU64,
        request: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<Bytes> {
        let mut backoff = Backoff::default();
        for _ in 0..SETUP_RATE_LIMIT_RETRIES {
            match self.execute(request()).await.with_context(|| format!("{what}: request failed"))? {
                Reply::Ok { body, .. } => return Ok(body),
                Reply::RateLimited(asked) => {
                    rate_limited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.rate_limited(asked)).await;
                }
                Reply::Failed { status, body } => bail!("{what}: {status}: {body}"),
            }
        }
        bail!("{what}: still rate limited after {SETUP_RATE_LIMIT_RETRIES} retries")
    }

    /// `POST /_matrix/media/v3/upload`: the `mxc://` URI's `server/id`.
    pub async fn upload(&self, session: &Session, content_type: &str, body: Bytes) -> anyhow::Result<String> {
        let request = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base_url))
            .bearer_auth(&session.access_token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let body = match self.execute(request).await.context("upload")? {
            Reply::Ok { body, .. } => body,
            Reply::RateLimited(_) => bail!("upload: rate limited"),
            Reply::Failed { status, body } => bail!("upload: {status}: {body}"),
        };
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let uri = answer["content_uri"].as_str().context("upload answer without content_uri")?;
        Ok(uri.trim_start_matches("mxc://").to_owned())
    }

    /// `GET /_matrix/client/v1/media/<path>` (`download/server/id`, `thumbnail/server/id?…`),
    /// streamed: the bytes received.
    pub async fn media_get(&self, session: &Session, path: &str) -> anyhow::Result<u64> {
        let response = self
            .http
            .get(format!("{}/_matrix/client/v1/media/{path}", self.base_url))
            .bearer_auth(&session.access_token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET {path}: {status}: {}", body.chars().take(300).collect::<String>());
        }
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            received += chunk.with_context(|| format!("GET {path}"))?.len() as u64;
        }
        Ok(received)
    }

    /// Checks that a Matrix server answers at all.
    pub async fn versions(&self) -> anyhow::Result<()> {
        let url = self.url("/versions");
        match self.execute(self.http.get(&url)).await.with_context(|| format!("GET {url}"))? {
            Reply::Ok { .. } => Ok(()),
            Reply::RateLimited(_) => bail!("GET {url}: rate limited"),
            Reply::Failed { status, body } => bail!("GET {url}: {status}: {body}"),
        }
    }

    /// Registers a user through user-interactive auth: a POST without `auth` answers 401 with a
    /// `session` and its `flows` (Synapse and Ganglion both do), and the POST that returns it with
    /// `m.login.dummy` creates the account. A server that registers on the first POST is fine
    /// too; one that offers no dummy-only flow fails the run with its flows in the message.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        rate_limited: &AtomicU64,
    ) -> anyhow::Result<Session> {
        let url = self.url("/v3/register");
        let what = format!("registering {username}");
        let mut auth_session = None;
        let mut backoff = Backoff::default();
        for _ in 0..SETUP_RATE_LIMIT_RETRIES {
            let mut body = json!({
                "username": username,
                "password": password,
                "initial_device_display_name": "ganglion-load",
            });
            if let Some(session) = &auth_session {
                body["auth"] = json!({ "type": "m.login.dummy", "session": session });
            }
            let response = self
                .http
                .post(&url)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("{what}: request failed"))?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.with_context(|| format!("{what}: reading the response"))?;
            match status {
                status if status.is_success() => {
                    let registered: RegisterResponse = serde_json::from_slice(&bytes)
                        .with_context(|| format!("{what}: unexpected response"))?;
                    return Ok(Session {
                        user_id: registered.user_id,
                        device_id: registered.device_id,
                        access_token: registered.access_token,
                    });
                }
                StatusCode::UNAUTHORIZED if auth_session.is_none() => {
                    let challenge: InteractiveAuth = serde_json::from_slice(&bytes)
                        .with_context(|| format!("{what}: 401 without an auth session"))?;
                    let session =
                        challenge.dummy_session().map_err(|error| anyhow::anyhow!("{what}: {error}"))?;
                    auth_session = Some(session);
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    rate_limited.fetch_add(1, Ordering::Relaxed);
                    let retry_after = response_retry_after(&headers);
                    tokio::time::sleep(backoff.rate_limited(rate_limit_hint(&bytes, retry_after.as_deref())))
                        .await;
                }
                status => {
                    let body = String::from_utf8_lossy(&bytes);
                    bail!("{what}: {status}: {}", body.chars().take(300).collect::<String>());
                }
            }
        }
        bail!("{what}: still rate limited after {SETUP_RATE_LIMIT_RETRIES} retries")
    }

    /// Logs `username` in again: a new device of the user.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        rate_limited: &AtomicU64,
    ) -> anyhow::Result<Session> {
        let url = self.url("/v3/login");
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": username },
            "password": password,
            "initial_device_display_name": "ganglion-load",
        });
        let bytes = self
            .setup_call(&format!("logging in {username}"), rate_limited, || self.http.post(&url).json(&body))
            .await?;
        let logged_in: RegisterResponse =
            serde_json::from_slice(&bytes).context("login: unexpected response")?;
        Ok(Session {
            user_id: logged_in.user_id,
            device_id: logged_in.device_id,
            access_token: logged_in.access_token,
        })
    }

    /// Creates a public room and returns its ID; an encrypted one has `m.room.encryption`
    /// (megolm) in its initial state.
    pub async fn create_room(
        &self,
        session: &Session,
        name: &str,
        encrypted: bool,
        rate_limited: &AtomicU64,
    ) -> anyhow::Result<String> {
        let url = self.url("/v3/createRoom");
        let mut body = json!({ "preset": "public_chat", "name": name });
        if encrypted {
            body["initial_state"] = json!([{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": crate::e2ee::MEGOLM_ALGORITHM },
            }]);
        }
        let bytes = self
            .setup_call(&format!("creating room {name}"), rate_limited, || {
                self.http.post(&url).bearer_auth(&session.access_token).json(&body)
            })
            .await?;
        let created: RoomIdResponse =
            serde_json::from_slice(&bytes).context("createRoom: no room_id in the response")?;
        Ok(created.room_id)
    }

    pub async fn join(
        &self,
        session: &Session,
        room_id: &str,
        rate_limited: &AtomicU64,
    ) -> anyhow::Result<()> {
        let url = self.url(&format!("/v3/join/{}", encode_component(room_id)));
        let what = format!("{} joining {room_id}", session.user_id);
        self.setup_call(&what, rate_limited, || {
            self.http.post(&url).bearer_auth(&session.access_token).json(&json!({}))
        })
        .await?;
        Ok(())
    }

    /// `POST /pushers/set` in setup.
    pub async fn set_pusher(
        &self,
        session: &Session,
        body: &serde_json::Value,
        rate_limited: &AtomicU64,
    ) -> anyhow::Result<()> {
        let url = self.url("/v3/pushers/set");
        let what = format!("setting a pusher of {}", session.user_id);
        self.setup_call(&what, rate_limited, || {
            self.http.post(&url).bearer_auth(&session.access_token).json(body)
        })
        .await?;
        Ok(())
    }

    /// Uploads one-time and fallback keys in setup; answers the server's one-time key counts.
    pub async fn setup_upload_keys(
        &self,
        session: &Session,
        body: &serde_json::Value,
        rate_limited: &AtomicU64,
    ) -> anyhow::Result<Bytes> {
        let url = self.url("/v3/keys/upload");
        let what = format!("uploading keys of {} {}", session.user_id, session.device_id);
        self.setup_call(&what, rate_limited, || {
            self.http.post(&url).bearer_auth(&session.access_token).json(body)
        })
        .await
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}`.
    pub async fn send_event(
        &self,
        session: &Session,
        room_id: &str,
        event_type: &str,
        txn_id: &str,
        content: &serde_json::Value,
    ) -> Result<Reply, reqwest::Error> {
        let url = self.url(&format!(
            "/v3/rooms/{}/send/{}/{}",
            encode_component(room_id),
            encode_component(event_type),
            encode_component(txn_id)
        ));
        let request = self.http.put(url).bearer_auth(&session.access_token).json(content);
        self.execute(request).await
    }

    /// `PUT /sendToDevice/{eventType}/{txnId}`; `body` is `{"messages": …}`.
    pub async fn send_to_device(
        &self,
        session: &Session,
        event_type: &str,
        txn_id: &str,
        body: &serde_json::Value,
    ) -> Result<Reply, reqwest::Error> {
        let url = self.url(&format!(
            "/v3/sendToDevice/{}/{}",
            encode_component(event_type),
            encode_component(txn_id)
        ));
        let request = self.http.put(url).bearer_auth(&session.access_token).json(body);
        self.execute(request).await
    }

    /// `POST /keys/upload`, `/keys/claim` or `/keys/query`, by `endpoint` (`upload`, …).
    pub async fn keys(
        &self,
        session: &Session,
        endpoint: KeysEndpoint,
        body: &serde_json::Value,
    ) -> Result<Reply, reqwest::Error> {
        let url = self.url(&format!("/v3/keys/{}", endpoint.as_str()));
        let request = self.http.post(url).bearer_auth(&session.access_token).json(body);
        self.execute(request).await
    }

    /// `GET /sync`; `filter` is an inline JSON filter, sent as is.
    pub async fn sync(
        &self,
        session: &Session,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut url = self.url(&format!("/v3/sync?timeout={timeout_ms}"));
        if let Some(since) = since {
            let _ = write!(url, "&since={}", encode_component(since));
        }
        if let Some(filter) = filter {
            let _ = write!(url, "&filter={}", encode_component(filter));
        }
        let request = self.http.get(url).bearer_auth(&session.access_token);
        self.execute(request).await
    }
    /// `POST /unstable/org.matrix.simplified_msc3575/sync` (simplified sliding sync, MSC4186):
    /// `pos` from the last answer (none for a new connection), `timeout_ms` to wait for news.
    pub async fn sliding_sync(
        &self,
        session: &Session,
        pos: Option<&str>,
        timeout_ms: u64,
        body: &serde_json::Value,
    ) -> Result<Reply, reqwest::Error> {
        let mut url = self.url(&format!("/unstable/org.matrix.simplified_msc3575/sync?timeout={timeout_ms}"));
        if let Some(pos) = pos {
            let _ = write!(url, "&pos={}", encode_component(pos));
        }
        let request = self.http.post(url).bearer_auth(&session.access_token).json(body);
        self.execute(request).await
    }
}

/// The `/keys` endpoints the keys workloads call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysEndpoint {
    Upload,
    Claim,
    Query,
}

impl KeysEndpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            KeysEndpoint::Upload => "upload",
            KeysEndpoint::Claim => "claim",
            KeysEndpoint::Query => "query",
        }
    }
}

/// The wait a 429 asks for: `retry_after_ms` in its body, else a `Retry-After` header in whole
/// seconds (an HTTP date is not understood and treated as absent).
pub fn rate_limit_hint(body: &[u8], retry_after_header: Option<&str>) -> Option<Duration> {
    let from_body = serde_json::from_slice::<RateLimitBody>(body)
        .ok()
        .and_then(|limit| limit.retry_after_ms)
        .map(Duration::from_millis);
    from_body.or_else(|| {
        retry_after_header.and_then(|value| value.trim().parse::<u64>().ok()).map(Duration::from_secs)
    })
}

/// The `Retry-After` header's text, if any.
fn response_retry_after(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?;
    value.to_str().ok().map(str::to_owned)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a path segment or a query
/// value (room IDs carry `!` and `:`, sync tokens may carry anything).
pub fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests;
