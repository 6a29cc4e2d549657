//! A real Synapse homeserver as a federation peer on loopback: `matrix-synapse` (PyPI, pinned,
//! installed once per target directory in `<target>/synapse-venv`) on SQLite in a temp directory.
//!
//! Two listeners on 127.0.0.1 only: the client API over plain HTTP, and the federation and key
//! APIs over TLS with a self-signed certificate. The server name is `127.0.0.1:FED`, so servers
//! reach its federation port directly (an IP literal with a port needs no `.well-known` or SRV).
//! Synapse is told to accept anyone's certificate and to federate with loopback addresses, trusts
//! no notary, and has rate limits no test reaches. [`Synapse::stop`] and [`Synapse::restart`]
//! keep the directory, so the peer comes back with the same server name, keys and rooms. Killed
//! on drop (and with the test process); `GANGLION_TESTKIT_KEEP=1` keeps the directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    binary::tail,
    http::Api,
    server::{Supervised, append_log, blocking},
};

/// The pinned Synapse: its wheel (`cp310-abi3`) and every dependency install as binary wheels on
/// CPython 3.11, so nothing is compiled.
const SYNAPSE: &str = "matrix-synapse==1.163.2";
/// How long a first installation from PyPI may take (about half a minute on a good link).
const INSTALL_DEADLINE: Duration = Duration::from_secs(20 * 60);
/// How long Synapse may take to answer on both ports (about two seconds on an idle machine).
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long the certificate and signing key may take to generate.
const KEYS_DEADLINE: Duration = Duration::from_secs(120);
/// How long Synapse may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONFIG_FILE: &str = "homeserver.yaml";
const LOG_CONFIG_FILE: &str = "log.yaml";
/// Synapse's own log (Python logging, INFO and up).
const LOG_FILE: &str = "homeserver.log";
/// Whatever Synapse writes to stdout and stderr (tracebacks before logging is set up).
const OUTPUT_FILE: &str = "synapse.output.log";
const CERTIFICATE_FILE: &str = "tls.crt";
const PRIVATE_KEY_FILE: &str = "tls.key";
const SIGNING_KEY_FILE: &str = "signing.key";
const REGISTRATION_SHARED_SECRET: &str = "ganglion-testkit-registration-secret";

/// `<target>/synapse-venv` with the pinned `matrix-synapse` from PyPI (SQLite needs no extra):
/// made on first use, blocking for as long as that takes; call it from `spawn_blocking`.
pub fn synapse_venv() -> anyhow::Result<PathBuf> {
    let venv = crate::python::python_venv("synapse-venv", &[SYNAPSE])?;
    let installed = fs::read_dir(venv.join("lib"))
        .with_context(|| format!("reading {}/lib", venv.display()))?
        .filter_map(Result::ok)
        .any(|python| python.path().join("site-packages/synapse/app/homeserver.py").is_file());
    anyhow::ensure!(installed, "{} has no synapse package after installing it", venv.display());
    Ok(venv)
}

/// A running (or stopped, see [`Synapse::stop`]) Synapse and the temp directory it keeps
/// everything in: config, TLS certificate, signing key, SQLite database, media and logs.
pub struct Synapse {
    venv: PathBuf,
    /// Removed on drop (unless kept); `None` once kept.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    server_name: String,
    client_port: u16,
    federation_port: u16,
    process: Option<Supervised>,
    /// Plain HTTP and TLS, accepting Synapse's self-signed certificate.
    http: reqwest::Client,
}

impl std::fmt::Debug for Synapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synapse")
            .field("server_name", &self.server_name)
            .field("client_port", &self.client_port)
            .field("pid", &self.process.as_ref().map(Supervised::pid))
            .field("dir", &self.dir_path)
            .finish()
    }
}

impl Synapse {
    /// Installs Synapse if need be, writes its config, certificate and signing key into a new
    /// temp directory, starts it on two free loopback ports and waits (bounded) until the client
    /// API answers `/_matrix/client/versions` and the federation port serves its keys over TLS.
    pub async fn start() -> anyhow::Result<Synapse> {
        let venv = blocking(INSTALL_DEADLINE, "installing Synapse from PyPI", synapse_venv).await?;
        let dir = tempfile::Builder::new().prefix("ganglion-synapse-").tempdir().context("temp dir")?;
        let ports = crate::ports::free_ports(2)?;
        let (client_port, federation_port) = (ports[0], ports[1]);
        let server_name = format!("127.0.0.1:{federation_port}");
        let dir_path = dir.path().to_path_buf();
        fs::create_dir_all(dir_path.join("media_store"))?;
        write_json(&dir_path.join(LOG_CONFIG_FILE), &log_config(&dir_path))?;
        write_json(
            &dir_path.join(CONFIG_FILE),
            &homeserver_config(&dir_path, &server_name, client_port, federation_port),
        )?;
        let (keys_venv, keys_dir) = (venv.clone(), dir_path.clone());
        blocking(KEYS_DEADLINE, "generating Synapse's certificate and signing key", move || {
            write_certificate(&keys_venv, &keys_dir)?;
            generate_signing_key(&keys_venv, &keys_dir)
        })
        .await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .tls_danger_accept_invalid_certs(true)
            .build()
            .context("building an HTTP client")?;
        let mut synapse = Synapse {
            venv,
            dir: Some(dir),
            dir_path,
            server_name,
            client_port,
            federation_port,
            process: None,
            http,
        };
        synapse.spawn().await?;
        Ok(synapse)
    }

    /// `127.0.0.1:FED`: the server name in its user and room IDs and in its keys.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `http://127.0.0.1:CLIENT`: the client-server API (no TLS).
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `https://127.0.0.1:FED`: the federation and key APIs (self-signed certificate).
    pub fn federation_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.federation_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn federation_port(&self) -> u16 {
        self.federation_port
    }

    /// [`Api`] on [`Synapse::client_url`], for client-server requests.
    pub fn client_api(&self) -> Api {
        Api::new(self.client_url())
    }

    /// An HTTP client that accepts Synapse's self-signed certificate, for the federation port.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The temp directory: config, `tls.crt`, `signing.key`, `homeserver.db`, logs.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The certificate the federation port presents (PEM), for clients that want to trust it.
    pub fn tls_certificate(&self) -> PathBuf {
        self.dir_path.join(CERTIFICATE_FILE)
    }

    /// Synapse's log file (`homeserver.log`), appended to across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join(LOG_FILE)
    }

    /// The last 200 lines of Synapse's log and the last 30 of its stdout and stderr, for error
    /// messages.
    pub fn log(&self) -> String {
        let read = |file: &str| fs::read_to_string(self.dir_path.join(file)).unwrap_or_default();
        format!(
            "--- {LOG_FILE} (last 200 lines) ---\n{}\n--- {OUTPUT_FILE} (last 30 lines) ---\n{}",
            tail(&read(LOG_FILE), 200),
            tail(&read(OUTPUT_FILE), 30)
        )
    }

    /// Registers `@localpart:127.0.0.1:FED` through the client API (`m.login.dummy`, no
    /// verification); its user ID and access token.
    pub async fn register(&self, localpart: &str, password: &str) -> anyhow::Result<(String, String)> {
        let account = self
            .client_api()
            .register(localpart, password)
            .await
            .with_context(|| format!("registering {localpart} on Synapse {}", self.server_name))?;
        Ok((account.user_id, account.access_token))
    }

    /// The shared secret of the admin registration API (`/_synapse/admin/v1/register`).
    pub fn registration_shared_secret(&self) -> &'static str {
        REGISTRATION_SHARED_SECRET
    }

    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(Supervised::is_running)
    }

    /// Stops Synapse with SIGTERM (SIGKILL after a bounded wait), keeping its directory: the peer
    /// is down until [`Synapse::restart`]. A no-op if it is not running.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(process) = self.process.take() else { return Ok(()) };
        if !process.is_running() {
            return Ok(());
        }
        process.terminate(STOP_DEADLINE).await.map(drop)
    }

    /// Kills Synapse with SIGKILL (a crash), keeping its directory. A no-op if it is not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        match self.process.take() {
            Some(process) => process.kill(),
            None => Ok(()),
        }
    }

    /// Stops Synapse if it runs, then starts it again on the same ports, directory and keys, and
    /// waits (bounded) as [`Synapse::start`] does.
    /// The running homeserver process's id (for its memory in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// Starts `python -m synapse.app.homeserver` and waits until both ports answer.
    async fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "Synapse {} is already running", self.server_name);
        let output = append_log(&self.dir_path.join(OUTPUT_FILE))?;
        let mut command = Command::new(self.venv.join("bin").join("python"));
        command
            .args(["-m", "synapse.app.homeserver", "-c", CONFIG_FILE])
            .current_dir(&self.dir_path)
            .env_remove("SYNAPSE_CONFIG_PATH")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        self.process = Some(Supervised::spawn("synapse", command, libc::SIGKILL, None)?);
        let ready = crate::wait::eventually(START_DEADLINE, "Synapse to answer on both ports", || async {
            if let Some(status) = self.process.as_ref().and_then(|process| process.wait(Duration::ZERO)) {
                anyhow::bail!("Synapse exited: {status:?}");
            }
            Ok(self.answers().await.then_some(()))
        })
        .await;
        if let Err(error) = ready {
            let _ = self.kill();
            anyhow::bail!("Synapse {} did not start: {error:#}\n{}", self.server_name, self.log());
        }
        Ok(())
    }

    /// Whether the client API answers `/versions` and the federation port serves the server's
    /// own keys over TLS.
    async fn answers(&self) -> bool {
        let ok = |url: String| async move {
            let answer = self.http.get(url).timeout(Duration::from_secs(5)).send().await;
            answer.ok().filter(|answer| answer.status().is_success())
        };
        let versions = ok(format!("{}/_matrix/client/versions", self.client_url())).await;
        if versions.is_none() {
            return false;
        }
        match ok(format!("{}/_matrix/key/v2/server", self.federation_url())).await {
            Some(keys) => {
                keys.json::<Value>().await.is_ok_and(|keys| keys["server_name"] == self.server_name)
            }
            None => false,
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            eprintln!("ganglion-testkit: killing Synapse: {error:#}");
        }
        if crate::server::keep_dirs()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("ganglion-testkit: kept {}", dir.keep().display());
        }
    }
}

/// `homeserver.yaml`, written as JSON (which YAML reads as is).
fn homeserver_config(dir: &Path, server_name: &str, client_port: u16, federation_port: u16) -> Value {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut config = json!({
        "server_name": server_name,
        "public_baseurl": format!("http://127.0.0.1:{client_port}/"),
        "pid_file": path("homeserver.pid"),
        "listeners": [
            {
                "port": client_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": false,
                "x_forwarded": false,
                "resources": [{ "names": ["client"], "compress": false }],
            },
            {
                "port": federation_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": true,
                "resources": [{ "names": ["federation", "keys"], "compress": false }],
            },
        ],
        "tls_certificate_path": path(CERTIFICATE_FILE),
        "tls_private_key_path": path(PRIVATE_KEY_FILE),
        "signing_key_path": path(SIGNING_KEY_FILE),
        "database": { "name": "sqlite3", "args": { "database": path("homeserver.db") } },
        "log_config": path(LOG_CONFIG_FILE),
        "media_store_path": path("media_store"),
        "report_stats": false,
        "enable_metrics": false,
        "url_preview_enabled": false,
        "registration_shared_secret": REGISTRATION_SHARED_SECRET,
        "macaroon_secret_key": "ganglion-testkit-macaroon-secret",
        "form_secret": "ganglion-testkit-form-secret",
        "enable_registration": true,
        "enable_registration_without_verification": true,
        "presence": { "enabled": true },
        "allow_public_rooms_over_federation": true,
        "allow_public_rooms_without_auth": true,
        // Synapse lets only its admins publish rooms unless told otherwise.
        "room_list_publication_rules": [{ "action": "allow" }],
        // Peers present self-signed certificates, and the only notary is the peer itself.
        "federation_verify_certificates": false,
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        // Synapse reads the old names only (`ip_range_blocklist` is not a key it knows): an empty
        // blacklist drops its default of every private range, loopback included, and the
        // whitelist lets loopback through whatever the blacklist says.
        "ip_range_blacklist": [],
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        // A peer that was down is tried again within seconds rather than after ten minutes (and
        // then hours) of backoff; a request to it is retried at most five seconds apart.
        "federation": {
            "destination_min_retry_interval": "1s",
            "destination_retry_multiplier": 1.5,
            "destination_max_retry_interval": "10s",
            "max_long_retry_delay": "5s",
            "max_short_retry_delay": "1s",
        },
    });
    if let Value::Object(limits) = rate_limits() {
        for (key, limit) in limits {
            config[key] = limit;
        }
    }
    config
}

/// Rate limits no test reaches, for every limiter Synapse has (one `json!` would exceed the
/// macro recursion limit together with the rest of the config).
fn rate_limits() -> Value {
    let generous = json!({ "per_second": 100_000, "burst_count": 1_000_000 });
    json!({
        "federation_rr_transactions_per_room_per_second": 100_000,
        "rc_message": generous,
        "rc_registration": generous,
        "rc_registration_token_validity": generous,
        "rc_login": { "address": generous, "account": generous, "failed_attempts": generous },
        "rc_admin_redaction": generous,
        "rc_joins": { "local": generous, "remote": generous },
        "rc_joins_per_room": generous,
        "rc_key_requests": generous,
        "rc_3pid_validation": generous,
        "rc_invites": { "per_room": generous, "per_user": generous, "per_issuer": generous },
        "rc_third_party_invite": generous,
        "rc_media_create": generous,
        "rc_presence": { "per_user": generous },
        "rc_delayed_event_mgmt": generous,
        "rc_room_creation": generous,
        "rc_reports": generous,
        "rc_user_directory": generous,
        "rc_profile": generous,
        "rc_federation": {
            "window_size": 1000,
            "sleep_limit": 100_000,
            "sleep_delay": 1,
            "reject_limit": 1_000_000,
            "concurrent": 1000,
        },
        "remote_media_download_per_second": "1G",
        "remote_media_download_burst_count": "10G",
    })
}

/// Python logging to `homeserver.log` in `dir`, unbuffered, so a failing test sees every line.
fn log_config(dir: &Path) -> Value {
    json!({
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s",
            },
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": dir.join(LOG_FILE).display().to_string(),
                "encoding": "utf8",
            },
        },
        // DEBUG would log access tokens.
        "loggers": { "synapse.storage.SQL": { "level": "INFO" } },
        "root": { "level": "INFO", "handlers": ["file"] },
        "disable_existing_loggers": false,
    })
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A self-signed certificate for `127.0.0.1` (`tls.crt`, `tls.key`): with the `openssl` command
/// if there is one, else with the `cryptography` package Synapse depends on.
fn write_certificate(venv: &Path, dir: &Path) -> anyhow::Result<()> {
    let has_openssl =
        Command::new("openssl").arg("version").output().is_ok_and(|output| output.status.success());
    if has_openssl {
        let mut openssl = Command::new("openssl");
        openssl
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"])
            .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-keyout", PRIVATE_KEY_FILE, "-out", CERTIFICATE_FILE])
            .current_dir(dir);
        return run(&mut openssl, "openssl req -x509");
    }
    let mut python = Command::new(venv.join("bin").join("python"));
    python.args(["-c", CERTIFICATE_PY, CERTIFICATE_FILE, PRIVATE_KEY_FILE]).current_dir(dir);
    run(&mut python, "generating a certificate with Python's cryptography")
}

/// `python -c CERTIFICATE_PY CERT KEY`: what the `openssl req -x509` above writes.
const CERTIFICATE_PY: &str = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
certificate = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=3650))
    .add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
    )
    .sign(key, hashes.SHA256())
)
with open(sys.argv[1], "wb") as out:
    out.write(certificate.public_bytes(serialization.Encoding.PEM))
with open(sys.argv[2], "wb") as out:
    out.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
"#;

/// The server's ed25519 signing key (`signing.key`), made by Synapse itself from its config.
fn generate_signing_key(venv: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut command = Command::new(venv.join("bin").join("python"));
    command
        .args(["-m", "synapse.app.homeserver", "-c", CONFIG_FILE, "--generate-keys"])
        .current_dir(dir)
        .env_remove("SYNAPSE_CONFIG_PATH");
    run(&mut command, "synapse --generate-keys")?;
    let key = dir.join(SIGNING_KEY_FILE);
    anyhow::ensure!(key.is_file(), "synapse --generate-keys wrote no {}", key.display());
    Ok(())
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        tail(&String::from_utf8_lossy(&output.stdout), 20),
        tail(&String::from_utf8_lossy(&output.stderr), 30)
    );
    Ok(())
}
