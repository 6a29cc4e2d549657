//! Server-name resolution, per the spec ("Resolving server names"): an IP literal or an explicit
//! port is used as it is; otherwise `/.well-known/matrix/server` may delegate to another host,
//! then SRV records (`_matrix-fed._tcp`, then the deprecated `_matrix._tcp`) name the host and
//! port, else port 8448. Results are cached (well-known answers for their `Cache-Control`
//! lifetime within the spec's bounds, failures for an hour).
//!
//! Every address a name resolves to passes [`ganglion_config::may_contact`] before anything
//! connects to it, at connection time (so a name cannot be re-pointed at an internal address
//! between the check and the connection): internal ranges are refused unless
//! `federation.allowed_address_ranges` lets them through.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ganglion_config::{AddressRange, FederationConfig};
use parking_lot::{Mutex, RwLock};
use ruma::ServerName;

use crate::FederationError;

const DEFAULT_PORT: u16 = 8448;
/// How long a well-known answer is kept without `Cache-Control`, and the bounds of what one may
/// ask for.
const WELL_KNOWN_DEFAULT: Duration = Duration::from_secs(24 * 60 * 60);
const WELL_KNOWN_MIN: Duration = Duration::from_secs(5 * 60);
const WELL_KNOWN_MAX: Duration = Duration::from_secs(48 * 60 * 60);
/// How long a name with no usable well-known is resolved without asking again.
const WELL_KNOWN_FAILURE: Duration = Duration::from_secs(60 * 60);
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
const WELL_KNOWN_MAX_BYTES: usize = 50 * 1024;

/// Where requests for a server go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The authority of request URLs (`host[:port]`); TLS names the certificate after its host.
    pub authority: String,
    /// The `Host` header requests carry.
    pub host: String,
}

/// SRV records as `(target, port)`, by preference.
pub type SrvFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Vec<(String, u16)>> + Send + 'a>>;

/// Looks up SRV records: `(target, port)` by preference, empty when there are none.
pub trait SrvLookup: Send + Sync {
    fn lookup<'a>(&'a self, name: &'a str) -> SrvFuture<'a>;
}

/// SRV records from the system's DNS servers, through hickory.
struct HickorySrv(hickory_resolver::TokioResolver);

impl SrvLookup for HickorySrv {
    fn lookup<'a>(&'a self, name: &'a str) -> SrvFuture<'a> {
        Box::pin(async move {
            match self.0.srv_lookup(format!("{name}.")).await {
                Ok(lookup) => {
                    let mut records: Vec<_> = lookup.iter().cloned().collect();
                    records.sort_by_key(|srv| (srv.priority(), std::cmp::Reverse(srv.weight())));
                    records
                        .into_iter()
                        .map(|srv| (srv.target().to_utf8().trim_end_matches('.').to_owned(), srv.port()))
                        // "." as the target means the service is not offered there.
                        .filter(|(target, _)| !target.is_empty())
                        .collect()
                }
                Err(error) => {
                    if !error.is_no_records_found() {
                        tracing::debug!(%name, %error, "SRV lookup failed");
                    }
                    Vec::new()
                }
            }
        })
    }
}

/// Names of hosts that SRV records pointed at other hosts and ports: the connection resolver
/// sends the request URL's host there.
type SrvTargets = Arc<RwLock<HashMap<String, Vec<(String, u16)>>>>;

pub struct Discovery {
    well_known: reqwest::Client,
    srv: Box<dyn SrvLookup>,
    cache: Mutex<HashMap<String, (Resolved, Instant)>>,
    srv_targets: SrvTargets,
    allowed: Arc<Vec<AddressRange>>,
}

impl Discovery {
    pub fn new(config: &FederationConfig) -> Result<Discovery, FederationError> {
        let resolver = match hickory_resolver::TokioResolver::builder_tokio() {
            Ok(builder) => builder.build(),
            Err(error) => {
                tracing::warn!(%error, "no system DNS configuration; SRV lookups use public resolvers");
                hickory_resolver::TokioResolver::builder_with_config(
                    hickory_resolver::config::ResolverConfig::default(),
                    hickory_resolver::name_server::TokioConnectionProvider::default(),
                )
                .build()
            }
        };
        Discovery::with_srv(config, Box::new(HickorySrv(resolver)))
    }

    /// With SRV records from `srv` (tests).
    pub fn with_srv(
        config: &FederationConfig,
        srv: Box<dyn SrvLookup>,
    ) -> Result<Discovery, FederationError> {
        let allowed = Arc::new(config.allowed_address_ranges.clone());
        let well_known = reqwest::Client::builder()
            .no_proxy()
            .timeout(WELL_KNOWN_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .tls_danger_accept_invalid_certs(!config.verify_certificates)
            .dns_resolver(Arc::new(CheckedResolver { allowed: allowed.clone(), srv_targets: None }))
            .build()
            .map_err(|error| FederationError::Refused {
                destination: "-".into(),
                reason: format!("the HTTP client cannot be built: {error}"),
            })?;
        Ok(Discovery {
            well_known,
            srv,
            cache: Mutex::new(HashMap::new()),
            srv_targets: Arc::default(),
            allowed,
        })
    }

    /// The resolver federation connections use: SRV targets, then the address check.
    pub(crate) fn connection_resolver(&self) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(CheckedResolver {
            allowed: self.allowed.clone(),
            srv_targets: Some(self.srv_targets.clone()),
        })
    }

    /// Where requests for `server` go.
    pub async fn resolve(&self, server: &ServerName) -> Result<Resolved, FederationError> {
        if let Some((resolved, until)) = self.cache.lock().get(server.as_str())
            && *until > Instant::now()
        {
            return Ok(resolved.clone());
        }
        let (resolved, lifetime) = self.resolve_uncached(server).await?;
        self.cache.lock().insert(server.as_str().to_owned(), (resolved.clone(), Instant::now() + lifetime));
        Ok(resolved)
    }

    async fn resolve_uncached(&self, server: &ServerName) -> Result<(Resolved, Duration), FederationError> {
        let host = server.host();
        if let Some(ip) = ip_literal(host) {
            self.check_ip(server.as_str(), ip)?;
            let authority = with_port(host, server.port().unwrap_or(DEFAULT_PORT));
            return Ok((Resolved { authority: authority.clone(), host: authority }, WELL_KNOWN_MAX));
        }
        if let Some(port) = server.port() {
            let authority = with_port(host, port);
            return Ok((Resolved { authority: authority.clone(), host: authority }, WELL_KNOWN_MAX));
        }
        let (delegated, lifetime) = match self.well_known(host).await {
            Some((delegated, lifetime)) => (Some(delegated), lifetime),
            None => (None, WELL_KNOWN_FAILURE),
        };
        if let Some(delegated) = delegated {
            let (delegated_host, delegated_port) = split_port(&delegated);
            if let Some(ip) = ip_literal(delegated_host) {
                self.check_ip(server.as_str(), ip)?;
                let authority = with_port(delegated_host, delegated_port.unwrap_or(DEFAULT_PORT));
                return Ok((Resolved { authority: authority.clone(), host: authority }, lifetime));
            }
            if let Some(port) = delegated_port {
                let authority = with_port(delegated_host, port);
                return Ok((Resolved { authority: authority.clone(), host: authority }, lifetime));
            }
            return Ok((self.srv_or_default(delegated_host).await, lifetime));
        }
        Ok((self.srv_or_default(host).await, lifetime))
    }

    /// SRV records of `host`, else `host:8448`; the `Host` header is `host` either way.
    async fn srv_or_default(&self, host: &str) -> Resolved {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let targets = self.srv.lookup(&format!("{service}.{host}")).await;
            if !targets.is_empty() {
                self.srv_targets.write().insert(host.to_owned(), targets);
                return Resolved { authority: host.to_owned(), host: host.to_owned() };
            }
        }
        Resolved { authority: with_port(host, DEFAULT_PORT), host: host.to_owned() }
    }

    /// `m.server` from `https://<host>/.well-known/matrix/server`, and how long to keep it.
    async fn well_known(&self, host: &str) -> Option<(String, Duration)> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = match self.well_known.get(&url).send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                tracing::debug!(%host, status = response.status().as_u16(), "no server well-known");
                return None;
            }
            Err(error) => {
                tracing::debug!(%host, %error, "no server well-known");
                return None;
            }
        };
        let lifetime = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age)
            .map_or(WELL_KNOWN_DEFAULT, |age| age.clamp(WELL_KNOWN_MIN, WELL_KNOWN_MAX));
        let body = crate::client::read_limited(response, WELL_KNOWN_MAX_BYTES).await.ok()?;
        let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let delegated = value.get("m.server")?.as_str()?;
        // The delegated name must itself be a valid server name.
        ServerName::parse(delegated).ok()?;
        Some((delegated.to_owned(), lifetime))
    }

    fn check_ip(&self, destination: &str, ip: IpAddr) -> Result<(), FederationError> {
        if ganglion_config::may_contact(ip, &self.allowed) {
            Ok(())
        } else {
            Err(refused_address(destination, ip))
        }
    }
}

fn refused_address(destination: &str, ip: IpAddr) -> FederationError {
    FederationError::Refused {
        destination: destination.to_owned(),
        reason: format!("{ip} is an internal address (allow it with federation.allowed_address_ranges)"),
    }
}

/// Resolves connection names, through SRV targets where discovery found some, and refuses
/// internal addresses.
struct CheckedResolver {
    allowed: Arc<Vec<AddressRange>>,
    srv_targets: Option<SrvTargets>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let targets = self
            .srv_targets
            .as_ref()
            .and_then(|targets| targets.read().get(&host).cloned())
            .unwrap_or_else(|| vec![(host.clone(), 0)]);
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let mut addresses = Vec::new();
            let mut refused = None;
            for (target, port) in targets {
                let Ok(found) = tokio::net::lookup_host((target.as_str(), port)).await else {
                    continue;
                };
                for address in found {
                    if ganglion_config::may_contact(address.ip(), &allowed) {
                        addresses.push(address);
                    } else {
                        refused = Some(address.ip());
                    }
                }
            }
            if addresses.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(ip) => Box::new(refused_address(&host, ip)),
                    None => format!("{host} does not resolve").into(),
                };
                return Err(error);
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// `host:port`, with an IPv6 literal in brackets.
fn with_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host` and its port, if it names one (`[::1]:8448`, `example.org:443`).
fn split_port(name: &str) -> (&str, Option<u16>) {
    match name.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            match port.parse() {
                Ok(port) => (host, Some(port)),
                Err(_) => (name, None),
            }
        }
        _ => (name, None),
    }
}

fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        (name.eq_ignore_ascii_case("max-age")).then(|| value.trim().parse().ok().map(Duration::from_secs))?
    })
}

#[cfg(test)]
mod tests;
