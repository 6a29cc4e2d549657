//! Plain HTTP(S) `GET`s of URLs that others name (a page to preview, a file another server's
//! media answer points at with `Location`): every address a host name resolves to is checked
//! against the internal ranges before anything connects, the request goes to the addresses
//! checked (no second lookup to rebind), each redirect is checked again, and the body is read
//! only up to a limit.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt as _;
use ganglion_config::AddressRange;
use ganglion_http::MatrixError;
use ganglion_types::ErrorClass;
use reqwest::Url;

const MAX_REDIRECTS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Limits<'a> {
    /// Internal ranges that may be fetched from anyway.
    pub allowed: &'a [AddressRange],
    pub max_bytes: u64,
    pub verify_certificates: bool,
    pub user_agent: &'a str,
}

pub(crate) struct Fetched {
    /// Where the body came from, after redirects.
    pub url: Url,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("cannot resolve {0}")]
    Unresolved(String),
    #[error("{0} is an address this server does not fetch from")]
    Refused(String),
    #[error("fetching it failed: {0}")]
    Failed(String),
    #[error("it answered {0}")]
    Status(u16),
    #[error("a redirect without a usable Location")]
    BadRedirect,
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
}

impl FetchError {
    /// The error a user sees for `what` (a page, a file) that could not be fetched.
    pub(crate) fn into_matrix(self, what: &str) -> MatrixError {
        match self {
            FetchError::Refused(_) => {
                MatrixError::forbidden(format!("The {what} is at an address the server does not fetch from"))
            }
            error => {
                MatrixError::new(ErrorClass::BadGateway, format!("The {what} could not be fetched: {error}"))
            }
        }
    }
}

/// `GET url`, following redirects, from checked addresses only, within the limits.
pub(crate) async fn get(mut url: Url, limits: &Limits<'_>) -> Result<Fetched, FetchError> {
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::BadRedirect);
        }
        let host =
            url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| FetchError::Unresolved(host.clone()))?
            .collect();
        if addresses.is_empty() {
            return Err(FetchError::Unresolved(host));
        }
        if let Some(refused) =
            addresses.iter().find(|address| !ganglion_config::may_contact(address.ip(), limits.allowed))
        {
            tracing::info!(%url, address = %refused.ip(), "refused to fetch from an internal address");
            return Err(FetchError::Refused(refused.ip().to_string()));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .user_agent(limits.user_agent)
            .tls_danger_accept_invalid_certs(!limits.verify_certificates)
            .resolve_to_addrs(&host, &addresses)
            .build()
            .map_err(|error| FetchError::Failed(error.to_string()))?;
        let failed = |error: reqwest::Error| FetchError::Failed(error.to_string());
        let response = client.get(url.clone()).send().await.map_err(failed)?;
        if response.status().is_redirection() {
            url = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or(FetchError::BadRedirect)?;
            continue;
        }
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|length| length > limits.max_bytes) {
            return Err(FetchError::TooLarge(limits.max_bytes));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            if (body.len() + chunk.len()) as u64 > limits.max_bytes {
                return Err(FetchError::TooLarge(limits.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(Fetched { url, headers, body: Bytes::from(body) });
    }
    Err(FetchError::TooManyRedirects)
}
