//! Hand-rolled client-server requests with reqwest, for checks on exact wire behaviour.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};

/// Client API prefix added to paths that do not start with `/_matrix` or `/.well-known`.
const CLIENT_V3: &str = "/_matrix/client/v3";
/// Longer than any long-poll a test asks for (`timeout=30000`), shorter than a hung test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved bytes),
/// e.g. `#alias:localhost` → `%23alias%3Alocalhost`.
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn full_path(path: &str) -> String {
    if path.starts_with("/_matrix") || path.starts_with("/.well-known") {
        path.to_owned()
    } else {
        format!("{CLIENT_V3}{path}")
    }
}

/// A response: status, headers, the raw body and the body parsed as JSON (`Null` if it is not).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Response {
    /// The `errcode` of a Matrix error body.
    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    /// The body of a 200 response; panics with the status and body otherwise.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {} with body {}", self.status, self.text);
        self.body
    }

    /// Asserts a Matrix error with this HTTP status and `errcode`; returns the body for more checks.
    #[track_caller]
    pub fn err(&self, status: u16, errcode: &str) -> &Value {
        assert_eq!(
            (self.status, self.errcode()),
            (status, Some(errcode)),
            "expected {status} {errcode}, got {} with body {}",
            self.status,
            self.text
        );
        &self.body
    }
}

/// Plain HTTP access to one server. Paths without a `/_matrix` or `/.well-known` prefix are
/// taken relative to `/_matrix/client/v3`, so `api.get("/login", None)` hits the v3 login.
#[derive(Debug, Clone)]
pub struct Api {
    base_url: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base_url: impl Into<String>) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a reqwest client with no TLS settings always builds");
        Api { base_url: base_url.into().trim_end_matches('/').to_owned(), http }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends raw bytes with an optional content type; the lowest-level helper.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response> {
        let url = format!("{}{}", self.base_url, full_path(path));
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.with_context(|| format!("reading the body of {method} {url}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Response { status, headers, text, body })
    }

    /// Sends `body` (if any) as JSON.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        match body {
            Some(body) => {
                let bytes = serde_json::to_vec(body)?;
                self.raw(method, path, token, Some("application/json"), Some(bytes)).await
            }
            None => self.raw(method, path, token, None, None).await,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Response> {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Response> {
        self.request(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> anyhow::Result<Response> {
        self.request(Method::PUT, path, token, Some(body)).await
    }

    /// Registers `username` with the user-interactive `m.login.dummy` flow: a first request
    /// without `auth` (expected 401 with a `session`), then the same with `auth.session`.
    pub async fn register(&self, username: &str, password: &str) -> anyhow::Result<Account> {
        let mut body = json!({
            "username": username,
            "password": password,
            "initial_device_display_name": "ganglion-testkit register",
        });
        let first = self.post("/register", None, &body).await?;
        let done = match first.status {
            200 => first,
            401 => {
                let session = first.body["session"]
                    .as_str()
                    .with_context(|| format!("401 from /register without a session: {}", first.text))?;
                body["auth"] = json!({ "type": "m.login.dummy", "session": session });
                self.post("/register", None, &body).await?
            }
            status => anyhow::bail!("POST /register answered {status}: {}", first.text),
        };
        anyhow::ensure!(done.status == 200, "registering {username}: {} {}", done.status, done.text);
        self.account_from(&done.body).with_context(|| format!("registration response {}", done.text))
    }

    /// Logs in with `m.login.password` and a `m.id.user` identifier: a new device each time.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<Account> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": username },
            "password": password,
            "initial_device_display_name": "ganglion-testkit login",
        });
        let response = self.post("/login", None, &body).await?;
        anyhow::ensure!(response.status == 200, "login {username}: {} {}", response.status, response.text);
        self.account_from(&response.body).with_context(|| format!("login response {}", response.text))
    }

    fn account_from(&self, body: &Value) -> anyhow::Result<Account> {
        let field = |name: &str| {
            body[name].as_str().map(str::to_owned).with_context(|| format!("no `{name}` in the response"))
        };
        Ok(Account {
            api: self.clone(),
            user_id: field("user_id")?,
            access_token: field("access_token")?,
            device_id: field("device_id")?,
        })
    }
}

/// A logged-in device: its ids and token, with request helpers that send the token.
#[derive(Debug, Clone)]
pub struct Account {
    pub api: Api,
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Account {
    /// An account from a token obtained elsewhere (e.g. `matrix_sdk::Client::access_token`).
    pub fn new(api: Api, user_id: &str, access_token: &str, device_id: &str) -> Account {
        Account {
            api,
            user_id: user_id.to_owned(),
            access_token: access_token.to_owned(),
            device_id: device_id.to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Response> {
        self.api.get(path, Some(&self.access_token)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        self.api.post(path, Some(&self.access_token), body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Response> {
        self.api.put(path, Some(&self.access_token), body).await
    }

    pub async fn delete(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Response> {
        self.api.request(Method::DELETE, path, Some(&self.access_token), body).await
    }

    /// `POST /createRoom`; the new room id (errors unless 200).
    pub async fn create_room(&self, body: &Value) -> anyhow::Result<String> {
        let response = self.post("/createRoom", body).await?;
        anyhow::ensure!(response.status == 200, "createRoom: {} {}", response.status, response.text);
        response.body["room_id"].as_str().map(str::to_owned).context("createRoom without room_id")
    }

    /// `POST /join/{roomIdOrAlias}`; the joined room id.
    pub async fn join(&self, room_id_or_alias: &str) -> anyhow::Result<String> {
        let response = self.post(&format!("/join/{}", enc(room_id_or_alias)), &json!({})).await?;
        anyhow::ensure!(response.status == 200, "join: {} {}", response.status, response.text);
        response.body["room_id"].as_str().map(str::to_owned).context("join without room_id")
    }

    /// `POST /rooms/{roomId}/invite`.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> anyhow::Result<()> {
        let response =
            self.post(&format!("/rooms/{}/invite", enc(room_id)), &json!({ "user_id": user_id })).await?;
        anyhow::ensure!(response.status == 200, "invite: {} {}", response.status, response.text);
        Ok(())
    }

    /// Sends an `m.room.message` of msgtype `m.text` with a fresh transaction id; the event id.
    pub async fn send_text(&self, room_id: &str, text: &str) -> anyhow::Result<String> {
        self.send_event(room_id, "m.room.message", &json!({ "msgtype": "m.text", "body": text })).await
    }

    /// `PUT /rooms/{roomId}/send/{eventType}/{txnId}` with a fresh transaction id; the event id.
    pub async fn send_event(
        &self,
        room_id: &str,
        event_type: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let txn = format!("t{}", next_txn());
        let path = format!("/rooms/{}/send/{}/{txn}", enc(room_id), enc(event_type));
        let response = self.put(&path, content).await?;
        anyhow::ensure!(response.status == 200, "send: {} {}", response.status, response.text);
        response.body["event_id"].as_str().map(str::to_owned).context("send without event_id")
    }

    /// `PUT /rooms/{roomId}/state/{eventType}/{stateKey}`; the event id.
    pub async fn send_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let path = format!("/rooms/{}/state/{}/{}", enc(room_id), enc(event_type), enc(state_key));
        let response = self.put(&path, content).await?;
        anyhow::ensure!(response.status == 200, "state: {} {}", response.status, response.text);
        response.body["event_id"].as_str().map(str::to_owned).context("state without event_id")
    }

    /// `GET /sync` with a raw query string (`since=…&timeout=…&filter=…`); errors unless 200.
    pub async fn sync(&self, query: &str) -> anyhow::Result<Value> {
        let path = if query.is_empty() { "/sync".to_owned() } else { format!("/sync?{query}") };
        let response = self.get(&path).await?;
        anyhow::ensure!(response.status == 200, "sync: {} {}", response.status, response.text);
        Ok(response.body)
    }
}

fn next_txn() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", nanos.as_nanos(), NEXT.fetch_add(1, Ordering::Relaxed))
}
