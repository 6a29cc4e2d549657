//! Requests to other servers: resolved by [`Discovery`], signed with X-Matrix (the spec's
//! request authentication), over TLS whose certificates are verified unless
//! `federation.verify_certificates` is off (test federations).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt as _;
use ganglion_config::FederationConfig;
use ganglion_events::ServerKey;
use http::{Method, header};
use ruma::{
    OwnedServerName, ServerName,
    api::federation::authentication::{ServerSignaturesInput, XMatrix},
};
use serde_json::Value;

use crate::{FederationError, discovery::Discovery};

/// The largest answer read from another server (a room's state with its auth chain is the
/// largest the spec has).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub struct FederationClient {
    server_name: OwnedServerName,
    key: Arc<ServerKey>,
    http: reqwest::Client,
    discovery: Arc<Discovery>,
    policy: Arc<crate::ServerPolicy>,
}

impl FederationClient {
    pub fn new(
        server_name: &str,
        key: Arc<ServerKey>,
        discovery: Arc<Discovery>,
        policy: Arc<crate::ServerPolicy>,
        config: &FederationConfig,
    ) -> Result<FederationClient, FederationError> {
        let server_name = ServerName::parse(server_name).map_err(|error| FederationError::Refused {
            destination: server_name.to_owned(),
            reason: format!("this server's name is not a server name: {error}"),
        })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Ganglion/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(!config.verify_certificates)
            .dns_resolver(discovery.connection_resolver())
            .build()
            .map_err(|error| FederationError::Refused {
                destination: "-".into(),
                reason: format!("the HTTP client cannot be built: {error}"),
            })?;
        Ok(FederationClient { server_name, key, http, discovery, policy })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// This server's signing key, for the events it builds for other servers' rooms.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// `GET /_matrix/federation/v1/query/profile` of a user of another server.
    pub async fn profile(
        &self,
        user_id: &ruma::UserId,
        field: Option<&str>,
    ) -> Result<Value, FederationError> {
        let mut path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode(user_id.as_str()));
        if let Some(field) = field {
            path.push_str(&format!("&field={}", encode(field)));
        }
        self.get(user_id.server_name(), &path).await
    }

    /// `GET /_matrix/federation/v1/query/directory` of an alias of another server.
    pub async fn room_alias(&self, alias: &ruma::RoomAliasId) -> Result<Value, FederationError> {
        let path = format!("/_matrix/federation/v1/query/directory?room_alias={}", encode(alias.as_str()));
        self.get(alias.server_name(), &path).await
    }

    /// `POST /_matrix/federation/v1/user/keys/query` on `server` (its users' keys).
    pub async fn query_keys(&self, server: &ServerName, body: &Value) -> Result<Value, FederationError> {
        self.request(Method::POST, server, "/_matrix/federation/v1/user/keys/query", Some(body)).await
    }

    /// `POST /_matrix/federation/v1/user/keys/claim` on `server` (one-time keys of its users).
    pub async fn claim_keys(&self, server: &ServerName, body: &Value) -> Result<Value, FederationError> {
        self.request(Method::POST, server, "/_matrix/federation/v1/user/keys/claim", Some(body)).await
    }

    /// A signed `GET` of `path_and_query` on `destination`, answering its JSON.
    pub async fn get(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<Value, FederationError> {
        self.request(Method::GET, destination, path_and_query, None).await
    }

    /// A signed `GET` whose answer is not JSON (media): its `Content-Type` and body, refused
    /// past `limit` bytes. A failed request's error is read from its JSON body as usual.
    pub async fn get_raw(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        limit: usize,
    ) -> Result<(Option<String>, Bytes), FederationError> {
        let authorization = self.authorization(&Method::GET, destination, path_and_query, &[])?;
        let (content_type, body) = self
            .send_raw(Method::GET, destination, path_and_query, Some(authorization), Vec::new(), limit)
            .await?;
        Ok((content_type, body))
    }

    fn authorization(
        &self,
        method: &Method,
        destination: &ServerName,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<http::HeaderValue, FederationError> {
        let to_sign = http::Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .body(body)
            .map_err(|error| bad_request(destination, error))?;
        let authorization = XMatrix::try_from_http_request(
            &to_sign,
            ServerSignaturesInput::new(self.server_name.clone(), destination.to_owned(), &self.key.key_pair),
        )
        .map_err(|error| bad_request(destination, error))?;
        Ok(http::HeaderValue::from(&authorization))
    }

    /// A signed request with a JSON body.
    pub async fn request(
        &self,
        method: Method,
        destination: &ServerName,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, FederationError> {
        let body = match body {
            Some(body) => serde_json::to_vec(body).map_err(|error| FederationError::BadResponse {
                destination: destination.to_string(),
                message: format!("the request body does not serialise: {error}"),
            })?,
            None => Vec::new(),
        };
        let authorization = self.authorization(&method, destination, path_and_query, &body)?;
        self.send(method, destination, path_and_query, Some(authorization), body).await
    }

    /// An unsigned `GET` (the key endpoints take none).
    pub async fn get_unsigned(
        &self,
        destination: &ServerName,
        path_and_query: &str,
    ) -> Result<Value, FederationError> {
        self.send(Method::GET, destination, path_and_query, None, Vec::new()).await
    }

    /// An unsigned `POST` with a JSON body (a notary's key query).
    pub async fn post_unsigned(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        body: &Value,
    ) -> Result<Value, FederationError> {
        let body = serde_json::to_vec(body).map_err(|error| bad_request(destination, error))?;
        self.send(Method::POST, destination, path_and_query, None, body).await
    }

    async fn send(
        &self,
        method: Method,
        destination: &ServerName,
        path_and_query: &str,
        authorization: Option<http::HeaderValue>,
        body: Vec<u8>,
    ) -> Result<Value, FederationError> {
        let (_, body) = self
            .send_raw(method, destination, path_and_query, authorization, body, MAX_RESPONSE_BYTES)
            .await?;
        serde_json::from_slice(&body).map_err(|_| FederationError::BadResponse {
            destination: destination.to_string(),
            message: "the answer is not JSON".into(),
        })
    }

    /// The answer's `Content-Type` and body, or the error a failed answer's JSON names.
    async fn send_raw(
        &self,
        method: Method,
        destination: &ServerName,
        path_and_query: &str,
        authorization: Option<http::HeaderValue>,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<(Option<String>, Bytes), FederationError> {
        if let Some(reason) = self.policy.refusal(destination.as_str()) {
            return Err(FederationError::Refused {
                destination: destination.to_string(),
                reason: reason.to_owned(),
            });
        }
        let resolved = self.discovery.resolve(destination).await?;
        let url = format!("https://{}{path_and_query}", resolved.authority);
        let mut request = self.http.request(method, &url).header(header::HOST, &resolved.host);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|error| unreachable(destination, &error))?;
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = read_limited(response, limit).await.map_err(|error| unreachable(destination, &error))?;
        if !status.is_success() {
            let value: Option<Value> = serde_json::from_slice(&body).ok();
            let field = |name: &str| {
                value
                    .as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Err(FederationError::Remote {
                destination: destination.to_string(),
                status: status.as_u16(),
                errcode: field("errcode"),
                error: field("error"),
            });
        }
        Ok((content_type, body))
    }
}

/// `text` as a path segment or query value.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn bad_request(destination: &ServerName, error: impl std::fmt::Display) -> FederationError {
    FederationError::BadResponse {
        destination: destination.to_string(),
        message: format!("the request cannot be built: {error}"),
    }
}

fn unreachable(destination: &ServerName, error: &reqwest::Error) -> FederationError {
    use std::error::Error as _;
    // A refused address surfaces as the resolver's error, deep in the chain.
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(FederationError::Refused { reason, .. }) = cause.downcast_ref::<FederationError>() {
            return FederationError::Refused { destination: destination.to_string(), reason: reason.clone() };
        }
        source = cause.source();
    }
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    FederationError::Unreachable { destination: destination.to_string(), message }
}

/// The body of `response`, at most `limit` bytes.
pub(crate) async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            // Dropping the stream closes the connection; what was read is not valid JSON.
            return Ok(Bytes::new());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}
