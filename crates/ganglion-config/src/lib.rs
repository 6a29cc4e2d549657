//! Configuration loading: defaults, then a TOML file, then `GANGLION_*` environment variables
//! (nested keys joined with `__`, e.g. `GANGLION_HTTP__LISTEN`, in any case). Validation happens
//! here, once, so every other crate can trust the values; errors name the offending key, and a
//! `GANGLION_*` variable that names no key (a typo) stops the server rather than being ignored.
//!
//! Two profiles exist. With no config file the embedded default applies: loopback only, open
//! registration and generous rate limits, because it is meant for trying Ganglion out. With a
//! config file, unspecified keys take production values: registration off, Synapse-like limits.

mod address;
mod env;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use ganglion_types::Role;
use serde::{Deserialize, Serialize};

pub use address::{AddressRange, may_contact};
pub use env::TOOL_VARIABLES;

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
    pub presence: PresenceConfig,
    pub push: PushConfig,
    pub voip: VoipConfig,
    pub user_directory: UserDirectoryConfig,
    pub sync: SyncConfig,
    pub media: MediaConfig,
    /// Cluster mode: Redis carries replication (never the source of truth).
    pub redis: RedisConfig,
    /// Cluster mode: timeouts between processes.
    pub cluster: ClusterConfig,
    /// Cluster mode: every process of the cluster by name. A process finds its own entry by
    /// `worker.name`; its client API listens on the entry's `http` address.
    pub instance_map: BTreeMap<String, InstanceConfig>,
    /// Cluster mode: where the generated nginx config listens.
    pub load_balancer: LoadBalancerConfig,
    /// Prometheus metrics of a single process (a cluster's come from `instance_map`).
    pub metrics: MetricsConfig,
    /// OpenTelemetry traces, exported over OTLP; off unless `otlp_endpoint` is set.
    pub tracing: TracingConfig,
    /// Talking to other homeservers.
    pub federation: FederationConfig,
    /// The file this config was read from, to read it again on SIGHUP.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Federation: the TLS listener other servers reach, how this server finds and trusts them, and
/// which of them it talks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The TLS listener for other servers (`0.0.0.0:8448`); unset: no listener of its own (a
    /// cluster's federation readers are reached through the load balancer, which ends TLS).
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain of the listener; unset (with `tls_private_key`): a self-signed
    /// certificate generated on first start in `<data_dir>/federation-tls.crt`.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of the listener.
    pub tls_private_key: Option<PathBuf>,
    /// Whether other servers' TLS certificates must be valid for their names. Off only for test
    /// federations with self-signed certificates.
    pub verify_certificates: bool,
    /// Internal addresses this server may contact other servers at anyway: loopback, private,
    /// link-local and other internal ranges are refused otherwise.
    pub allowed_address_ranges: Vec<AddressRange>,
    /// The ed25519 signing key; unset: `<data_dir>/signing.key`, generated on first start. Every
    /// process of a cluster must read the same key. Retired keys are kept beside it, in
    /// `<signing_key>.old` (`ganglion rotate-signing-key`).
    pub signing_key: Option<PathBuf>,
    /// How long other servers may cache this server's keys.
    pub key_validity_hours: u64,
    /// Servers asked for another server's keys when it cannot be reached itself, each with the
    /// keys its answers must be signed with. Empty: keys come from their servers only.
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    /// The delegation served at `/.well-known/matrix/server` (`host[:port]`); unset: 404, and
    /// other servers reach this one by its name (SRV, then port 8448).
    pub well_known_server: Option<String>,
    /// How long one request to another server may take.
    pub request_timeout_ms: u64,
    /// The only servers this one federates with (patterns with `*` and `?`); empty: any server.
    /// Reloaded on SIGHUP.
    pub allowed_servers: Vec<String>,
    /// Servers this one never federates with, whatever `allowed_servers` says. Reloaded on SIGHUP.
    pub blocked_servers: Vec<String>,
}

/// A notary: a server trusted to vouch for other servers' keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyServer {
    pub server_name: String,
    /// Key id (`ed25519:abc`) to unpadded base64 public key.
    pub verify_keys: BTreeMap<String, String>,
}

impl FederationConfig {
    /// Where the signing key is read from.
    pub fn signing_key_path(&self, data_dir: &std::path::Path) -> PathBuf {
        self.signing_key.clone().unwrap_or_else(|| data_dir.join("signing.key"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector spans are exported to (`http://collector:4317`); unset: no spans
    /// are made or exported.
    pub otlp_endpoint: Option<String>,
    /// The share of traces started here that are recorded (0.0 to 1.0); a trace continued from a
    /// caller follows the caller's decision.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> TracingConfig {
        TracingConfig { otlp_endpoint: None, sample_ratio: 1.0 }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/health` and `/ready` are served, off the client API listener; unset:
    /// nowhere. A cluster instance's `metrics` address in `instance_map` takes its place.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub role: Role,
    /// Client API (and health) listener.
    pub http: SocketAddr,
    /// gRPC listener; the master must have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    /// Prometheus metrics listener (`/metrics`, `/health`, `/ready`); unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. Required by every cluster role.
    pub url: String,
    /// Approximate length each Redis Stream is trimmed to (`XADD … MAXLEN ~`).
    pub stream_maxlen: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Deadline of every call to the master.
    pub rpc_timeout_ms: u64,
    /// How long a worker waits for its replication to reach a position a client already saw
    /// (a sync token from another worker, its own write) before answering 503.
    pub replication_wait_ms: u64,
    /// How often a worker reads new stream rows from the database while Redis is unreachable.
    pub fallback_poll_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    pub listen: SocketAddr,
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
    /// Load balancers (IPs or CIDRs) whose `X-Forwarded-For` (or, lacking it, `X-Real-IP`)
    /// names the client, so per-address limits apply to clients rather than to the proxy. Any
    /// other peer is the client itself, whatever headers it sends.
    pub trusted_proxies: Vec<AddressRange>,
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

/// Rate limits on actions, as Synapse's `rc_*` settings: per user where there is one,
/// per client address for unauthenticated actions. Reads (`/sync` included) are never limited,
/// so many users behind one address (an office NAT) do not throttle each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Events sent (messages, state, redactions) and rooms created, per user.
    pub message: Bucket,
    /// Login attempts, per client address.
    pub login_address: Bucket,
    /// Login attempts, per account.
    pub login_account: Bucket,
    /// Failed login attempts (wrong password), per account; once empty, even the right
    /// password is refused until it refills.
    pub login_failed_attempts: Bucket,
    /// Failed login attempts, per client address, across accounts.
    pub login_failed_attempts_address: Bucket,
    /// Accounts registered, per client address.
    pub registration: Bucket,
    /// Rooms joined, per user.
    pub joins: Bucket,
    /// Invites into one room, per room.
    pub invites_per_room: Bucket,
    /// Invites received, per invited user.
    pub invites_per_user: Bucket,
    /// Invites sent, per inviting user.
    pub invites_per_issuer: Bucket,
    /// Media uploads, per user.
    pub media_upload: Bucket,
    /// End-to-end key requests (`/keys/query`, `/keys/claim`), per user.
    pub key_requests: Bucket,
    /// Third-party identifier validation (email/phone tokens), per client address.
    pub threepid_validation: Bucket,
    /// Users (bots, bridges) that no limit applies to.
    pub exempt_users: Vec<String>,
    /// Client addresses (IPs or CIDRs) that no per-address limit applies to.
    pub exempt_addresses: Vec<AddressRange>,
}

/// An action with a rate limit: each names one bucket of [`RateLimitConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitAction {
    Message,
    LoginAddress,
    LoginAccount,
    LoginFailedAttempts,
    LoginFailedAttemptsAddress,
    Registration,
    Joins,
    InvitesPerRoom,
    InvitesPerUser,
    InvitesPerIssuer,
    MediaUpload,
    KeyRequests,
    ThreepidValidation,
}

impl RateLimitAction {
    pub const ALL: [RateLimitAction; 13] = [
        RateLimitAction::Message,
        RateLimitAction::LoginAddress,
        RateLimitAction::LoginAccount,
        RateLimitAction::LoginFailedAttempts,
        RateLimitAction::LoginFailedAttemptsAddress,
        RateLimitAction::Registration,
        RateLimitAction::Joins,
        RateLimitAction::InvitesPerRoom,
        RateLimitAction::InvitesPerUser,
        RateLimitAction::InvitesPerIssuer,
        RateLimitAction::MediaUpload,
        RateLimitAction::KeyRequests,
        RateLimitAction::ThreepidValidation,
    ];

    /// The key under `[rate_limits]`.
    pub fn key(self) -> &'static str {
        match self {
            RateLimitAction::Message => "message",
            RateLimitAction::LoginAddress => "login_address",
            RateLimitAction::LoginAccount => "login_account",
            RateLimitAction::LoginFailedAttempts => "login_failed_attempts",
            RateLimitAction::LoginFailedAttemptsAddress => "login_failed_attempts_address",
            RateLimitAction::Registration => "registration",
            RateLimitAction::Joins => "joins",
            RateLimitAction::InvitesPerRoom => "invites_per_room",
            RateLimitAction::InvitesPerUser => "invites_per_user",
            RateLimitAction::InvitesPerIssuer => "invites_per_issuer",
            RateLimitAction::MediaUpload => "media_upload",
            RateLimitAction::KeyRequests => "key_requests",
            RateLimitAction::ThreepidValidation => "threepid_validation",
        }
    }
}

impl RateLimitConfig {
    /// Every action at `bucket`, no exemptions.
    pub fn uniform(bucket: Bucket) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            message: bucket,
            login_address: bucket,
            login_account: bucket,
            login_failed_attempts: bucket,
            login_failed_attempts_address: bucket,
            registration: bucket,
            joins: bucket,
            invites_per_room: bucket,
            invites_per_user: bucket,
            invites_per_issuer: bucket,
            media_upload: bucket,
            key_requests: bucket,
            threepid_validation: bucket,
            exempt_users: Vec::new(),
            exempt_addresses: Vec::new(),
        }
    }

    /// Close to Synapse's defaults, except where many users share one address: logins and
    /// registrations per address let an office of a few hundred people sign up and open their
    /// clients at once, while failed attempts (per account and per address) stop password
    /// guessing.
    pub fn production() -> RateLimitConfig {
        let bucket = |per_second, burst| Bucket { per_second, burst };
        RateLimitConfig {
            enabled: true,
            message: bucket(0.2, 10),
            login_address: bucket(5.0, 300),
            login_account: bucket(0.17, 3),
            login_failed_attempts: bucket(0.17, 3),
            login_failed_attempts_address: bucket(0.5, 30),
            registration: bucket(1.0, 300),
            joins: bucket(0.1, 10),
            invites_per_room: bucket(0.3, 10),
            invites_per_user: bucket(0.003, 5),
            invites_per_issuer: bucket(0.3, 10),
            media_upload: bucket(10.0, 50),
            key_requests: bucket(20.0, 100),
            threepid_validation: bucket(0.003, 5),
            exempt_users: Vec::new(),
            exempt_addresses: Vec::new(),
        }
    }

    pub fn bucket(&self, action: RateLimitAction) -> Bucket {
        match action {
            RateLimitAction::Message => self.message,
            RateLimitAction::LoginAddress => self.login_address,
            RateLimitAction::LoginAccount => self.login_account,
            RateLimitAction::LoginFailedAttempts => self.login_failed_attempts,
            RateLimitAction::LoginFailedAttemptsAddress => self.login_failed_attempts_address,
            RateLimitAction::Registration => self.registration,
            RateLimitAction::Joins => self.joins,
            RateLimitAction::InvitesPerRoom => self.invites_per_room,
            RateLimitAction::InvitesPerUser => self.invites_per_user,
            RateLimitAction::InvitesPerIssuer => self.invites_per_issuer,
            RateLimitAction::MediaUpload => self.media_upload,
            RateLimitAction::KeyRequests => self.key_requests,
            RateLimitAction::ThreepidValidation => self.threepid_validation,
        }
    }
}

/// A string, or a number taken as its decimal text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Number(u64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::String(text) => text,
        Text::Number(number) => number.to_string(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Room version for new rooms when the client names none. A number is taken too: an
    /// environment variable's `10` arrives as one.
    #[serde(deserialize_with = "string_or_number")]
    pub default_version: String,
    /// Which new rooms get `m.room.encryption` in their initial state.
    #[serde(default)]
    pub encryption_enabled_by_default_for_room_type: EncryptionByDefault,
}

/// Rooms that are encrypted from their creation, whatever the client asks (as Synapse's setting
/// of the same name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncryptionByDefault {
    /// Every new room.
    All,
    /// Rooms created with the `private_chat` or `trusted_private_chat` preset.
    Invite,
    /// None: clients decide.
    #[default]
    Off,
}

/// Long-polled `/sync`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The least time between two answers to one device's long-polls: what arrives meanwhile
    /// goes out in one answer, so a busy user costs a bounded number of answers per second.
    /// 0 answers at once.
    pub answer_interval_ms: u64,
}

/// The media repository (the `media` role, or `all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// The directory files are kept in, named by their content's SHA-256; every media worker of
    /// a cluster must see the same one (a shared filesystem). Unset: `<data_dir>/media`.
    pub path: Option<PathBuf>,
    /// The largest file accepted, in bytes (advertised as `m.upload.size`).
    pub max_upload_bytes: u64,
    /// The bytes one user's uploads may take in all; unset: no quota.
    pub user_quota_bytes: Option<u64>,
    /// The spec's freeze of unauthenticated media (Synapse's setting of the same name): media
    /// uploaded while it is on are served only by the authenticated `/_matrix/client/v1/media`
    /// endpoints, not by the legacy `/_matrix/media/v3/download`.
    pub enable_authenticated_media: bool,
    /// How long a media id from `/create` waits for its upload before it is dropped.
    pub unused_expiry_secs: u64,
    /// Media ids from `/create` awaiting their upload that one user may hold at once.
    pub max_pending_uploads: u32,
    /// The thumbnail sizes rendered; a request snaps to the smallest at least as large. Empty:
    /// no thumbnails.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Images with more pixels than this are not thumbnailed (refused from their header, before
    /// decoding).
    pub max_thumbnail_source_pixels: u64,
    /// Thumbnails rendered at once by one process (each on a blocking thread).
    pub thumbnail_concurrency: u32,
    /// ClamAV's `clamd`, which scans every file before it is first served: `unix:<socket>` or
    /// `tcp://host:port`. Unset: files are not scanned.
    pub clamd: Option<String>,
    /// How long one scan may take; past it the file is not served (fail closed).
    pub scan_timeout_ms: u64,
    /// An S3-compatible object store for the files instead of the directory (`path`).
    pub s3: Option<S3Config>,
    /// Whether `preview_url` fetches pages for users (off: 404 `M_UNRECOGNIZED`).
    pub url_preview_enabled: bool,
    /// Internal addresses a preview may fetch from anyway; loopback, private, link-local and
    /// other internal ranges are refused otherwise.
    pub url_preview_allowed_ranges: Vec<AddressRange>,
    /// The largest page or image a preview reads.
    pub url_preview_max_bytes: u64,
}

/// An S3-compatible bucket (AWS, MinIO, Ceph, Garage, …) that every media worker shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// The store's URL (`https://s3.example.org`); unset: AWS's endpoint for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    /// Unset: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` from the environment.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Keys go under this prefix (several servers sharing one bucket).
    pub prefix: Option<String>,
    /// Allows an `http://` endpoint (a store on a private network, tests).
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> S3Config {
        S3Config {
            bucket: String::new(),
            endpoint: None,
            region: "us-east-1".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            prefix: None,
            allow_http: false,
        }
    }
}

/// One rendered thumbnail size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

/// The spec's thumbnail methods: `crop` fills the size exactly, `scale` fits within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

impl MediaConfig {
    /// The media store's directory.
    pub fn directory(&self, data_dir: &std::path::Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join("media"))
    }
}

/// Push notifications: the push rules the master evaluates for each new event (unread counts,
/// `/notifications`, what the pushers deliver).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Off: no event is evaluated, so unread counts stay 0 and nothing is notified or pushed
    /// (for servers whose users never look, and to measure what evaluation costs).
    pub enabled: bool,
    /// Internal addresses a push gateway may be at anyway (as `federation.allowed_address_ranges`
    /// for other servers): a pusher whose URL resolves elsewhere in an internal range is refused.
    pub allowed_address_ranges: Vec<AddressRange>,
}

/// TURN servers for voice and video calls (`GET /voip/turnServer`): clients get credentials that
/// expire, made from the secret the TURN server shares (coturn's `use-auth-secret`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoipConfig {
    /// The TURN servers' `turn:` and `turns:` URIs; none: `/voip/turnServer` answers `{}`.
    pub turn_uris: Vec<String>,
    /// The secret shared with the TURN servers (coturn's `static-auth-secret`).
    pub turn_shared_secret: String,
    /// How long the credentials handed out last, in seconds.
    pub turn_user_lifetime_s: u64,
}

/// `/user_directory/search`: whom a user finds by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDirectoryConfig {
    /// Every active user of this server, not only those who share a room with the searcher or
    /// are in a room published in the room directory.
    pub search_all_users: bool,
}

/// The presence module: online, unavailable (idle) and offline, shown to users who share a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// Off: nothing is stored or sent, `GET /presence/{userId}/status` says `offline` and `PUT`
    /// does nothing (as Synapse's `presence.enabled = false`).
    pub enabled: bool,
    /// An online user with no activity (an online sync, a `PUT`) for this long becomes
    /// `unavailable`.
    pub idle_timeout_ms: u64,
    /// A user whose devices have neither synced nor been active for this long becomes
    /// `offline`. Sync workers tell the master about syncing devices at most every third of it.
    pub offline_timeout_ms: u64,
    /// How often our users who are not offline have their presence sent again to the servers
    /// that share a room with them, changed or not: Synapse takes a user it has heard nothing
    /// of for 30 minutes to be offline, and pings its own every 25.
    pub federation_ping_interval_ms: u64,
}

impl PresenceConfig {
    /// How long after their last activity a user counts as `currently_active` (Synapse's
    /// `LAST_ACTIVE_GRANULARITY`, a minute), kept under half the idle timeout.
    pub fn last_active_granularity_ms(&self) -> u64 {
        (60_000u64).min(self.idle_timeout_ms / 2)
    }

    /// How often a sync worker tells the master that a device still syncs: a third of the
    /// offline timeout, and often enough that a syncing user stays `currently_active`.
    pub fn syncing_report_interval_ms(&self) -> u64 {
        (self.offline_timeout_ms / 3).min(self.last_active_granularity_ms() / 2).max(1)
    }
}

/// Shortest idle and offline timeouts: the master checks them a few times a second at most.
pub const MIN_PRESENCE_TIMEOUT_MS: u64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Load(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error(
        "environment variable {variable} names no config key (`{key}`): config variables are \
         GANGLION_<SECTION>__<KEY>, e.g. GANGLION_HTTP__LISTEN (tools' variables: {tools})",
        tools = TOOL_VARIABLES.join(", ")
    )]
    UnknownVariable { variable: String, key: String },
}

pub const SUPPORTED_ROOM_VERSIONS: [&str; 11] = ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

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
                // Nothing proxies for the embedded default, which listens on loopback.
                trusted_proxies: Vec::new(),
            },
            database: DatabaseConfig { url: String::new(), max_connections: 8 },
            registration: RegistrationConfig { enabled: true },
            // For trying out locally: on, but no one person at a keyboard reaches these.
            rate_limits: RateLimitConfig::uniform(Bucket { per_second: 100.0, burst: 1000 }),
            rooms: RoomsConfig {
                default_version: "12".into(),
                encryption_enabled_by_default_for_room_type: EncryptionByDefault::Off,
            },
            // Synapse's idle timer; offline after a minute without a sync.
            presence: PresenceConfig {
                enabled: true,
                idle_timeout_ms: 5 * 60 * 1000,
                offline_timeout_ms: 60_000,
                federation_ping_interval_ms: 25 * 60 * 1000,
            },
            push: PushConfig { enabled: true, allowed_address_ranges: Vec::new() },
            voip: VoipConfig {
                turn_uris: Vec::new(),
                turn_shared_secret: String::new(),
                turn_user_lifetime_s: 86_400,
            },
            user_directory: UserDirectoryConfig { search_all_users: false },
            // Short enough to go unnoticed; under load it bounds each device to 50 answers/s.
            sync: SyncConfig { answer_interval_ms: 20 },
            // Synapse's limits; all media served by every endpoint, so older clients work.
            media: MediaConfig {
                path: None,
                max_upload_bytes: 50 * 1024 * 1024,
                user_quota_bytes: None,
                enable_authenticated_media: false,
                unused_expiry_secs: 24 * 60 * 60,
                max_pending_uploads: 50,
                // The sizes the spec recommends.
                thumbnail_sizes: [
                    (32, 32, ThumbnailMethod::Crop),
                    (96, 96, ThumbnailMethod::Crop),
                    (320, 240, ThumbnailMethod::Scale),
                    (640, 480, ThumbnailMethod::Scale),
                    (800, 600, ThumbnailMethod::Scale),
                ]
                .map(|(width, height, method)| ThumbnailSize { width, height, method })
                .to_vec(),
                // Synapse's `max_image_pixels`.
                max_thumbnail_source_pixels: 32_000_000,
                thumbnail_concurrency: 2,
                clamd: None,
                scan_timeout_ms: 60_000,
                s3: None,
                url_preview_enabled: false,
                url_preview_allowed_ranges: Vec::new(),
                // Synapse's `max_spider_size`.
                url_preview_max_bytes: 10 * 1024 * 1024,
            },
            redis: RedisConfig { url: String::new(), stream_maxlen: 10_000 },
            cluster: ClusterConfig {
                rpc_timeout_ms: 10_000,
                replication_wait_ms: 5_000,
                fallback_poll_ms: 250,
            },
            instance_map: BTreeMap::new(),
            load_balancer: LoadBalancerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8008)) },
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            federation: FederationConfig {
                listen: None,
                tls_certificate: None,
                tls_private_key: None,
                verify_certificates: true,
                allowed_address_ranges: Vec::new(),
                signing_key: None,
                // Synapse's `key_refresh_interval`.
                key_validity_hours: 24,
                trusted_key_servers: Vec::new(),
                well_known_server: None,
                request_timeout_ms: 30_000,
                allowed_servers: Vec::new(),
                blocked_servers: Vec::new(),
            },
            source: None,
        }
    }

    /// Defaults that apply under a config file: registration off, limits close to Synapse's.
    pub fn production_default() -> Config {
        let mut config = Config::embedded_default();
        config.registration.enabled = false;
        config.rate_limits = RateLimitConfig::production();
        // New media only through the authenticated endpoints, as the spec asks of servers.
        config.media.enable_authenticated_media = true;
        config
    }

    /// Loads the config: defaults, then `file` (if any), then `GANGLION_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        Config::load_instance(file, None)
    }

    /// Loads the config of the cluster process `instance`, which takes its role from the
    /// instance map: one file describes the whole cluster.
    pub fn load_instance(
        file: Option<&std::path::Path>,
        instance: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let variables = std::env::vars_os()
            .map(|(name, value)| (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()));
        Config::load_with_variables(file, instance, variables)
    }

    /// [`Config::load_instance`] with these environment variables instead of the process's.
    pub fn load_with_variables(
        file: Option<&std::path::Path>,
        instance: Option<&str>,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let figment = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Load(format!("file {} does not exist", path.display())));
                }
                Figment::from(Serialized::defaults(Config::production_default())).merge(Toml::file(path))
            }
            None => Figment::from(Serialized::defaults(Config::embedded_default())),
        };
        let env = env::Overrides::from_variables(variables)?;
        let mut figment = figment.merge(env);
        if let Some(name) = instance {
            figment = figment.merge(Serialized::default("worker.name", name));
            let map: BTreeMap<String, InstanceConfig> =
                figment.extract_inner("instance_map").unwrap_or_default();
            let Some(entry) = map.get(name) else {
                return Err(ConfigError::Invalid {
                    key: "instance_map",
                    problem: format!("has no instance named {name:?}"),
                });
            };
            figment = figment.merge(Serialized::default("worker.role", entry.role));
        }
        let mut config = Config::from_figment(figment)?;
        config.source = file.map(std::path::Path::to_path_buf);
        Ok(config)
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|error| {
            let key = error.path.join(".");
            let mut message = error.kind.to_string();
            if !key.is_empty() {
                message = format!("key `{key}`: {message}");
            }
            if let Some(metadata) = &error.metadata {
                if metadata.name.contains("environment") && !error.path.is_empty() {
                    let variable = metadata.interpolate(&figment::Profile::Default, &error.path);
                    message = format!("{message} (set by the environment variable {variable})");
                } else {
                    message = format!("{message} (in {})", metadata.name);
                }
            }
            ConfigError::Load(message)
        })?;
        config.validate()?;
        let mut config = config;
        if let Some((http, metrics)) = config.instance().map(|instance| (instance.http, instance.metrics)) {
            config.http.listen = http;
            if metrics.is_some() {
                config.metrics.listen = metrics;
            }
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| Err(ConfigError::Invalid { key, problem: problem.to_owned() });
        if ruma_server_name_is_valid(&self.server_name).is_err() {
            return invalid("server_name", "not a valid Matrix server name (host[:port])");
        }
        self.validate_cluster()?;
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return invalid("tracing.sample_ratio", "must be between 0.0 and 1.0");
        }
        if let Some(endpoint) = &self.tracing.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return invalid("tracing.otlp_endpoint", "must be an http:// or https:// URL");
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
        if !self.voip.turn_uris.is_empty() && self.voip.turn_shared_secret.is_empty() {
            return invalid("voip.turn_shared_secret", "must be set when voip.turn_uris is");
        }
        if let Some(uri) =
            self.voip.turn_uris.iter().find(|uri| !(uri.starts_with("turn:") || uri.starts_with("turns:")))
        {
            return invalid("voip.turn_uris", &format!("{uri:?} is not a turn: or turns: URI"));
        }
        if self.voip.turn_user_lifetime_s == 0 {
            return invalid("voip.turn_user_lifetime_s", "must be at least 1");
        }
        if self.media.max_upload_bytes == 0 {
            return invalid("media.max_upload_bytes", "must be at least 1");
        }
        if self.media.thumbnail_sizes.iter().any(|size| size.width == 0 || size.height == 0) {
            return invalid("media.thumbnail_sizes", "widths and heights must be at least 1");
        }
        if let Some(clamd) = &self.media.clamd
            && !(clamd.starts_with("unix:/") || clamd.starts_with("tcp://"))
        {
            return invalid("media.clamd", "must be unix:/path/to/socket or tcp://host:port");
        }
        if let Some(s3) = &self.media.s3 {
            if s3.bucket.is_empty() {
                return invalid("media.s3.bucket", "must name the bucket");
            }
            match s3.endpoint.as_deref() {
                None => {}
                Some(endpoint) if endpoint.starts_with("https://") => {}
                Some(endpoint) if endpoint.starts_with("http://") && s3.allow_http => {}
                Some(endpoint) if endpoint.starts_with("http://") => {
                    return invalid("media.s3.endpoint", "is http://: set media.s3.allow_http to allow it");
                }
                Some(_) => return invalid("media.s3.endpoint", "must be an http:// or https:// URL"),
            }
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return invalid(
                    "media.s3.access_key_id",
                    "and media.s3.secret_access_key go together (or both come from AWS_* variables)",
                );
            }
        }
        if self.media.thumbnail_concurrency == 0 {
            return invalid("media.thumbnail_concurrency", "must be at least 1");
        }
        if self.media.unused_expiry_secs == 0 {
            return invalid("media.unused_expiry_secs", "must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            return invalid("http.max_body_bytes", "must be at least 1024");
        }
        for action in RateLimitAction::ALL {
            let bucket = self.rate_limits.bucket(action);
            if !(bucket.per_second > 0.0 && bucket.per_second.is_finite()) || bucket.burst == 0 {
                return Err(ConfigError::Invalid {
                    key: "rate_limits",
                    problem: format!("{}: per_second must be > 0 and burst at least 1", action.key()),
                });
            }
        }
        if let Some(user) =
            self.rate_limits.exempt_users.iter().find(|user| ruma::UserId::parse(user.as_str()).is_err())
        {
            return Err(ConfigError::Invalid {
                key: "rate_limits.exempt_users",
                problem: format!("{user:?} is not a user id (@localpart:server)"),
            });
        }
        if !SUPPORTED_ROOM_VERSIONS.contains(&self.rooms.default_version.as_str()) {
            return invalid("rooms.default_version", "must be one of 2 to 12");
        }
        if self.federation.tls_certificate.is_some() != self.federation.tls_private_key.is_some() {
            return invalid(
                "federation.tls_certificate",
                "and federation.tls_private_key go together (or neither: a self-signed certificate)",
            );
        }
        if self.federation.key_validity_hours == 0 || self.federation.key_validity_hours > 24 * 7 {
            return invalid("federation.key_validity_hours", "must be between 1 and 168 (a week)");
        }
        if self.federation.request_timeout_ms == 0 {
            return invalid("federation.request_timeout_ms", "must be at least 1");
        }
        if let Some(server) = &self.federation.well_known_server
            && ruma_server_name_is_valid(server).is_err()
        {
            return invalid("federation.well_known_server", "not a valid server name (host[:port])");
        }
        for (key, patterns) in [
            ("federation.allowed_servers", &self.federation.allowed_servers),
            ("federation.blocked_servers", &self.federation.blocked_servers),
        ] {
            if let Some(bad) = patterns.iter().find(|pattern| {
                pattern.is_empty()
                    || !pattern.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]*?".contains(c))
            }) {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!("{bad:?} is not a server name pattern (letters, digits, -.:[] and * ?)"),
                });
            }
        }
        for notary in &self.federation.trusted_key_servers {
            if ruma_server_name_is_valid(&notary.server_name).is_err() || notary.verify_keys.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "federation.trusted_key_servers",
                    problem: format!("{:?} needs a valid server_name and verify_keys", notary.server_name),
                });
            }
        }
        let too_short = format!("must be at least {MIN_PRESENCE_TIMEOUT_MS} ms");
        if self.presence.idle_timeout_ms < MIN_PRESENCE_TIMEOUT_MS {
            return invalid("presence.idle_timeout_ms", &too_short);
        }
        if self.presence.offline_timeout_ms < MIN_PRESENCE_TIMEOUT_MS {
            return invalid("presence.offline_timeout_ms", &too_short);
        }
        if self.presence.federation_ping_interval_ms < MIN_PRESENCE_TIMEOUT_MS {
            return invalid("presence.federation_ping_interval_ms", &too_short);
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        let masters: Vec<(&String, &InstanceConfig)> =
            self.instance_map.iter().filter(|(_, i)| i.role == Role::Master).collect();
        if !self.instance_map.is_empty() {
            if masters.len() != 1 {
                return invalid("instance_map", format!("needs exactly one master, has {}", masters.len()));
            }
            if masters[0].1.grpc.is_none() {
                return invalid("instance_map", format!("master {:?} needs a grpc address", masters[0].0));
            }
            if let Some((name, _)) = self.instance_map.iter().find(|(_, i)| i.role == Role::All) {
                return invalid(
                    "instance_map",
                    format!("instance {name:?}: role \"all\" cannot be in a cluster"),
                );
            }
        }
        if self.worker.role == Role::All {
            return Ok(());
        }
        match self.instance_map.get(&self.worker.name) {
            None => {
                return invalid(
                    "worker.name",
                    format!("{:?} is not in instance_map (every cluster process must be)", self.worker.name),
                );
            }
            Some(instance) if instance.role != self.worker.role => {
                return invalid(
                    "worker.role",
                    format!(
                        "is {} but instance_map.{} says {}",
                        self.worker.role.as_str(),
                        self.worker.name,
                        instance.role.as_str()
                    ),
                );
            }
            Some(_) => {}
        }
        if !self.database.url.starts_with("postgres://") && !self.database.url.starts_with("postgresql://") {
            return invalid(
                "database.url",
                "cluster roles share one PostgreSQL database (postgres://…)".into(),
            );
        }
        if !self.redis.url.starts_with("redis://") {
            return invalid("redis.url", "cluster roles need Redis (redis://host:port)".into());
        }
        if self.cluster.rpc_timeout_ms == 0 || self.cluster.fallback_poll_ms == 0 {
            return invalid("cluster", "timeouts must be at least 1 ms".into());
        }
        Ok(())
    }

    /// This process's entry in the instance map (none for `role = "all"`).
    pub fn instance(&self) -> Option<&InstanceConfig> {
        if self.worker.role == Role::All { None } else { self.instance_map.get(&self.worker.name) }
    }

    /// The master's gRPC address.
    pub fn master_grpc(&self) -> Option<SocketAddr> {
        self.instance_map.values().find(|i| i.role == Role::Master).and_then(|i| i.grpc)
    }

    /// Names and entries of the instances of `role`.
    pub fn instances_of(&self, role: Role) -> Vec<(&str, &InstanceConfig)> {
        self.instance_map.iter().filter(|(_, i)| i.role == role).map(|(n, i)| (n.as_str(), i)).collect()
    }

    /// This process's share of work its role's instances split between them by
    /// [`ganglion_types::shard_of`]: `(index, count)`, the index in name order. `None` for a
    /// process not in `instance_map`.
    pub fn own_shard(&self) -> Option<(usize, usize)> {
        let instances = self.instances_of(self.worker.role);
        let index = instances.iter().position(|(name, _)| *name == self.worker.name)?;
        Some((index, instances.len()))
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

/// Which share of a sharded role's work (federation destinations, pushers' users) a process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// None: a cluster's master once `role` has instances, and processes of other roles.
    Nothing,
    /// All of it: the embedded default, and a cluster's master while `role` has no instances.
    Everything,
    /// The keys [`ganglion_types::shard_of`] puts in share `index` of `of`.
    Share { index: usize, of: usize },
}

impl Duty {
    /// This process's duty for the work of `role` under `config`.
    pub fn of(config: &Config, role: Role) -> Duty {
        match config.worker.role {
            Role::All => Duty::Everything,
            Role::Master if config.instances_of(role).is_empty() => Duty::Everything,
            own if own == role => match config.own_shard() {
                Some((index, of)) => Duty::Share { index, of },
                None => Duty::Nothing,
            },
            _ => Duty::Nothing,
        }
    }

    /// Whether the work keyed by `key` (a destination, a user ID) is this process's.
    pub fn covers(self, key: &str) -> bool {
        match self {
            Duty::Nothing => false,
            Duty::Everything => true,
            Duty::Share { index, of } => ganglion_types::shard_of(key, of) == index,
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
