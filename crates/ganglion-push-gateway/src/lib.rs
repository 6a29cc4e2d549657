//! Talking to push gateways (the Push Gateway API): a gateway's URL is checked against the
//! internal address ranges when a pusher is set and again before each notification, which then
//! goes to the addresses checked (no second lookup to rebind).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use ganglion_config::AddressRange;
pub use reqwest::Url;
use serde_json::Value;

/// How long a gateway has to answer one notification.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot be resolved: {0}")]
    Unresolved(String),
    #[error("is at {0}, an address this server does not contact")]
    Refused(String),
    #[error("could not be reached: {0}")]
    Unreachable(String),
    #[error("answered {0}")]
    Status(u16),
}

impl GatewayError {
    /// Whether trying the same notification again later may succeed (a 4xx will not).
    pub fn is_transient(&self) -> bool {
        match self {
            GatewayError::Status(status) => *status >= 500 || *status == 429 || *status == 408,
            GatewayError::Refused(_) => false,
            GatewayError::Unresolved(_) | GatewayError::Unreachable(_) => true,
        }
    }
}

/// The addresses `url`'s host resolves to, all of which this server may contact.
pub async fn check_gateway(url: &Url, allowed: &[AddressRange]) -> Result<Vec<SocketAddr>, GatewayError> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| GatewayError::Unresolved(host.clone()))?
        .collect();
    if addresses.is_empty() {
        return Err(GatewayError::Unresolved(host));
    }
    if let Some(refused) =
        addresses.iter().find(|address| !ganglion_config::may_contact(address.ip(), allowed))
    {
        return Err(GatewayError::Refused(refused.ip().to_string()));
    }
    Ok(addresses)
}

/// Clients kept at most: one per gateway host and checked addresses, so a server pushing to
/// a few gateways keeps their connections open between notifications.
const MAX_CLIENTS: usize = 256;

/// HTTP clients to push gateways, each pinned to the addresses its host was checked at, and
/// kept (with their open connections) from one notification to the next: a new connection,
/// and for HTTPS a new handshake, per notification would bound a pusher's rate.
#[derive(Default)]
pub struct Gateways {
    clients: parking_lot::Mutex<HashMap<(String, Vec<SocketAddr>), reqwest::Client>>,
}

impl Gateways {
    /// Posts one notification (`{"notification": …}`) to the gateway at `url`; the pushkeys the
    /// gateway rejected (the app will never take them again).
    pub async fn notify(
        &self,
        url: &Url,
        body: &Value,
        allowed: &[AddressRange],
    ) -> Result<Vec<String>, GatewayError> {
        let addresses = check_gateway(url, allowed).await?;
        let host =
            url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let client = self.client(host, addresses)?;
        let response = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| GatewayError::Unreachable(error.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(GatewayError::Status(status.as_u16()));
        }
        let answer: Value = response
            .bytes()
            .await
            .ok()
            .and_then(|body| serde_json::from_slice(&body).ok())
            .unwrap_or(Value::Null);
        Ok(answer["rejected"]
            .as_array()
            .map(|rejected| rejected.iter().filter_map(|key| key.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// The client for `host` at `addresses`, made on first use.
    fn client(&self, host: String, addresses: Vec<SocketAddr>) -> Result<reqwest::Client, GatewayError> {
        let mut clients = self.clients.lock();
        let key = (host, addresses);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .resolve_to_addrs(&key.0, &key.1)
            .build()
            .map_err(|error| GatewayError::Unreachable(error.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}
