//! Token-bucket rate limits per user, per client IP and for login attempts.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use axum::extract::ConnectInfo;
use ganglion_config::{Bucket, RateLimitConfig};
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

    /// Takes one token for `key`, or says how long until one is available.
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
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
            level.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - level.tokens) / self.config.per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

pub struct RateLimiter {
    enabled: bool,
    per_user: Buckets,
    per_ip: Buckets,
    login: Buckets,
}

fn limited(retry_after: Duration) -> MatrixError {
    MatrixError::new(ErrorClass::LimitExceeded { retry_after }, "Too many requests")
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> RateLimiter {
        RateLimiter {
            enabled: config.enabled,
            per_user: Buckets::new(config.per_user),
            per_ip: Buckets::new(config.per_ip),
            login: Buckets::new(config.login),
        }
    }

    pub fn check_user(&self, user_id: &str) -> Result<(), MatrixError> {
        if !self.enabled {
            return Ok(());
        }
        self.per_user.take(user_id, Instant::now()).map_err(limited)
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), MatrixError> {
        if !self.enabled {
            return Ok(());
        }
        self.per_ip.take(&ip.to_string(), Instant::now()).map_err(limited)
    }

    /// Login and registration attempts, per client IP.
    pub fn check_login(&self, ip: IpAddr) -> Result<(), MatrixError> {
        if !self.enabled {
            return Ok(());
        }
        self.login.take(&ip.to_string(), Instant::now()).map_err(limited)
    }
}

/// The client's IP: the connection's peer address.
pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}
