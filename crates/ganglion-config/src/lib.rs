//! Configuration loading: defaults, then a TOML file, then `GANGLION_*` environment variables
//! (nested keys joined with `__`, e.g. `GANGLION_HTTP__LISTEN`). Validation happens here, once,
//! so every other crate can trust the values; errors name the offending key.
//!
//! Two profiles exist. With no config file the embedded default applies: loopback only, open
//! registration and generous rate limits, because it is meant for trying Ganglion out. With a
//! config file, unspecified keys take production values: registration off, Synapse-like limits.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use ganglion_types::Role;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server name in user ids and room aliases (`@alice:<server_name>`).
    pub server_name: String,
    /// Where the SQLite database (if used) and the signing key live.
    pub data_dir: PathBuf,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub rate_limits: RateLimitConfig,
    pub rooms: RoomsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub role: Role,
    /// This process's name in logs and the `X-Ganglion-Instance` response header.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the client API listener. Port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Base URL advertised in `/.well-known/matrix/client`; defaults to `http://<listen>`.
    pub public_baseurl: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user@host:port/db`. Empty means SQLite under `data_dir`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    pub enabled: bool,
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Every authenticated request, per user.
    pub per_user: Bucket,
    /// Every request, per client IP.
    pub per_ip: Bucket,
    /// Login and registration attempts, per client IP.
    pub login: Bucket,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Room version for new rooms when the client names none.
    pub default_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

pub const SUPPORTED_ROOM_VERSIONS: [&str; 3] = ["10", "11", "12"];

impl Config {
    /// The embedded default: what `ganglion run` uses with no config file.
    pub fn embedded_default() -> Config {
        Config {
            server_name: "localhost".into(),
            data_dir: PathBuf::from("./ganglion-data"),
            worker: WorkerConfig { role: Role::All, name: "main".into() },
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
                max_body_bytes: 1024 * 1024,
                public_baseurl: None,
            },
            database: DatabaseConfig { url: String::new(), max_connections: 8 },
            registration: RegistrationConfig { enabled: true },
            rate_limits: RateLimitConfig {
                enabled: true,
                per_user: Bucket { per_second: 1000.0, burst: 5000 },
                per_ip: Bucket { per_second: 2000.0, burst: 10000 },
                login: Bucket { per_second: 100.0, burst: 500 },
            },
            rooms: RoomsConfig { default_version: "12".into() },
        }
    }

    /// Defaults that apply under a config file: registration off, limits close to Synapse's.
    pub fn production_default() -> Config {
        let mut config = Config::embedded_default();
        config.registration.enabled = false;
        config.rate_limits = RateLimitConfig {
            enabled: true,
            per_user: Bucket { per_second: 10.0, burst: 50 },
            per_ip: Bucket { per_second: 20.0, burst: 100 },
            login: Bucket { per_second: 0.17, burst: 3 },
        };
        config
    }

    /// Loads the config: defaults, then `file` (if any), then `GANGLION_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let figment = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Load(format!("file {} does not exist", path.display())));
                }
                Figment::from(Serialized::defaults(Config::production_default())).merge(Toml::file(path))
            }
            None => Figment::from(Serialized::defaults(Config::embedded_default())),
        };
        Config::from_figment(figment.merge(Env::prefixed("GANGLION_").split("__")))
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|error| {
            let key = error.path.join(".");
            let mut message = error.kind.to_string();
            if !key.is_empty() {
                message = format!("key `{key}`: {message}");
            }
            if let Some(metadata) = &error.metadata {
                message = format!("{message} (in {})", metadata.name);
            }
            ConfigError::Load(message)
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if ruma_server_name_is_valid(&self.server_name).is_err() {
            return invalid("server_name", "not a valid Matrix server name (host[:port])");
        }
        if self.worker.role != Role::All {
            return invalid(
                "worker.role",
                "only \"all\" is available in this build; cluster roles come with cluster mode",
            );
        }
        if !self.database.url.is_empty()
            && !self.database.url.starts_with("sqlite:")
            && !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return invalid("database.url", "must start with sqlite: or postgres://");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            return invalid("http.max_body_bytes", "must be at least 1024");
        }
        for (key, bucket) in [
            ("rate_limits.per_user", self.rate_limits.per_user),
            ("rate_limits.per_ip", self.rate_limits.per_ip),
            ("rate_limits.login", self.rate_limits.login),
        ] {
            if !(bucket.per_second > 0.0 && bucket.per_second.is_finite()) || bucket.burst == 0 {
                return invalid(key, "per_second must be > 0 and burst at least 1");
            }
        }
        if !SUPPORTED_ROOM_VERSIONS.contains(&self.rooms.default_version.as_str()) {
            return invalid("rooms.default_version", "must be one of 10, 11, 12");
        }
        Ok(())
    }

    /// The database URL, with the SQLite default filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}/ganglion.db?mode=rwc", self.data_dir.display())
        } else {
            self.database.url.clone()
        }
    }
}

/// Server name grammar from the spec appendix: a hostname, IPv4 or bracketed IPv6, optional port.
fn ruma_server_name_is_valid(name: &str) -> Result<(), ()> {
    if name.is_empty() || name.len() > 255 {
        return Err(());
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            if host.contains(':') && !host.starts_with('[') { (name, None) } else { (host, Some(port)) }
        }
        _ => (name, None),
    };
    if let Some(port) = port {
        port.parse::<u16>().map_err(|_| ())?;
    }
    if host.starts_with('[') {
        return if host.ends_with(']') { Ok(()) } else { Err(()) };
    }
    if host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') && !host.is_empty() {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests;
