//! Token-bucket rate limits on actions (sending, joining, inviting, logging in, registering…),
//! per user where there is one and per client address otherwise. Nothing here limits reads:
//! handlers call the limiter for the actions they perform. Limits are per process (in a
//! cluster, the load balancer keeps a client on one worker).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use axum::extract::ConnectInfo;
use ganglion_config::{AddressRange, Bucket, RateLimitAction, RateLimitConfig};
use ganglion_types::ErrorClass;
use http::request::Parts;
use parking_lot::Mutex;

use crate::MatrixError;

struct Level {
    tokens: f64,
    updated: Instant,
}

struct Buckets {
    config: Bucket,
    levels: Mutex<HashMap<String, Level>>,
}

impl Buckets {
    fn new(config: Bucket) -> Buckets {
        Buckets { config, levels: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key` (if `take`), or says how long until one is available.
    fn try_take(&self, key: &str, now: Instant, take: bool) -> Result<(), Duration> {
        let mut levels = self.levels.lock();
        if levels.len() > 100_000 {
            // Drop keys whose buckets have refilled: they carry no information.
            let config = self.config;
            levels.retain(|_, level| {
                level.tokens + now.duration_since(level.updated).as_secs_f64() * config.per_second
                    < f64::from(config.burst)
            });
        }
        let burst = f64::from(self.config.burst);
        let level = levels.entry(key.to_owned()).or_insert(Level { tokens: burst, updated: now });
        let elapsed = now.saturating_duration_since(level.updated).as_secs_f64();
        level.tokens = (level.tokens + elapsed * self.config.per_second).min(burst);
        level.updated = now;
        if level.tokens >= 1.0 {
            if take {
                level.tokens -= 1.0;
            }
            Ok(())
        } else {
            let wait = (1.0 - level.tokens) / self.config.per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

pub struct RateLimiter {
    enabled: bool,
    /// One per action, in the order of [`RateLimitAction::ALL`].
    buckets: Vec<Buckets>,
    exempt_users: HashSet<String>,
    exempt_addresses: Vec<AddressRange>,
}

fn limited(retry_after: Duration) -> MatrixError {
    MatrixError::new(ErrorClass::LimitExceeded { retry_after }, "Too many requests")
}

fn index(action: RateLimitAction) -> usize {
    RateLimitAction::ALL.iter().position(|a| *a == action).unwrap_or_default()
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            enabled: config.enabled,
            buckets: RateLimitAction::ALL.iter().map(|action| Buckets::new(config.bucket(*action))).collect(),
            exempt_users: config.exempt_users.iter().cloned().collect(),
            exempt_addresses: config.exempt_addresses.clone(),
        }
    }

    fn take(&self, action: RateLimitAction, key: &str, take: bool) -> Result<(), MatrixError> {
        if !self.enabled {
            return Ok(());
        }
        self.buckets[index(action)].try_take(key, Instant::now(), take).map_err(limited)
    }

    fn user_is_exempt(&self, user_id: &str) -> bool {
        self.exempt_users.contains(user_id)
    }

    fn address_is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt_addresses.iter().any(|range| range.contains(ip))
    }

    /// `user_id` performs `action` (a message, a join, a media upload, a key request…).
    pub fn check_user(&self, action: RateLimitAction, user_id: &str) -> Result<(), MatrixError> {
        if self.user_is_exempt(user_id) {
            return Ok(());
        }
        self.take(action, user_id, true)
    }

    /// An unauthenticated `action` (registration, a login, a 3pid validation) from `ip`.
    pub fn check_address(&self, action: RateLimitAction, ip: IpAddr) -> Result<(), MatrixError> {
        if self.address_is_exempt(ip) {
            return Ok(());
        }
        self.take(action, &ip.to_canonical().to_string(), true)
    }

    /// `user_id` performs `action`, counted against `key` (invites: the room, the invitee).
    pub fn check_on_behalf_of(
        &self,
        action: RateLimitAction,
        key: &str,
        user_id: &str,
    ) -> Result<(), MatrixError> {
        if self.user_is_exempt(user_id) {
            return Ok(());
        }
        self.take(action, key, true)
    }

    /// Before checking a password for `user_id` from `ip`: refused while either has used up
    /// its failed attempts, so a guesser learns nothing, even from the right password.
    pub fn check_failed_logins(&self, user_id: &str, ip: IpAddr) -> Result<(), MatrixError> {
        if !self.user_is_exempt(user_id) {
            self.take(RateLimitAction::LoginFailedAttempts, user_id, false)?;
        }
        if !self.address_is_exempt(ip) {
            self.take(RateLimitAction::LoginFailedAttemptsAddress, &ip.to_canonical().to_string(), false)?;
        }
        Ok(())
    }

    /// A wrong password for `user_id` from `ip`.
    pub fn record_failed_login(&self, user_id: &str, ip: IpAddr) {
        let _ = self.take(RateLimitAction::LoginFailedAttempts, user_id, true);
        let _ = self.take(RateLimitAction::LoginFailedAttemptsAddress, &ip.to_canonical().to_string(), true);
    }
}

/// The client's IP: the connection's peer address (which the app replaces with the address a
/// trusted proxy names).
pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_canonical())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// The client behind the connection from `peer`. Only a trusted proxy's word counts: its
/// `X-Forwarded-For` names the client as the right-most hop that is not itself a trusted proxy
/// (hops further left are whatever the client sent, so a forged header changes nothing); with
/// no `X-Forwarded-For`, its `X-Real-IP`. Any other peer is the client.
pub fn forwarded_client(peer: IpAddr, headers: &http::HeaderMap, trusted_proxies: &[AddressRange]) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|range| range.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    if hops.is_empty() {
        return headers
            .get("x-real-ip")
            .and_then(|value| value.to_str().ok())
            .and_then(hop_address)
            .unwrap_or(peer);
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop we cannot read: the chain is broken, so the nearest trusted hop is all we know.
        let Some(address) = hop_address(hop) else { return client };
        client = address;
        if !trusted(address) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` hop: an IP, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|address| address.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}
