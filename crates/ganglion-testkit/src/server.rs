//! One `ganglion run` process with its own config, data directory and database.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::{
    binary::{ganglion_binary, tail},
    http::{Account, Api},
    postgres::Postgres,
};

/// How long a server may take to print its ready line.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a first `cargo build -p ganglion` may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);
const READY_PREFIX: &str = "ganglion ready ";
const SERVER_NAME: &str = "localhost";
/// Set to `1` to keep each server's directory (config, logs, SQLite) after the test.
const KEEP_ENV: &str = "GANGLION_TESTKIT_KEEP";

/// Where a test server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite in the server's data directory (`database.url = ""`).
    Sqlite,
    /// A fresh database on this process's throwaway PostgreSQL cluster.
    Postgres,
}

impl Backend {
    pub fn all() -> [Backend; 2] {
        [Backend::Sqlite, Backend::Postgres]
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

/// The `[rate_limits]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub enabled: bool,
    pub per_user: Bucket,
    pub per_ip: Bucket,
    pub login: Bucket,
}

impl RateLimits {
    /// Limits no test should hit (the embedded default profile's values).
    pub fn generous() -> RateLimits {
        RateLimits {
            enabled: true,
            per_user: Bucket { per_second: 1000.0, burst: 5000 },
            per_ip: Bucket { per_second: 2000.0, burst: 10000 },
            login: Bucket { per_second: 100.0, burst: 500 },
        }
    }
}

/// What differs between test servers. Everything else is fixed: server name `localhost`,
/// `role = "all"`, a loopback listener on a free port, room version 12 by default.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `[registration] enabled`.
    pub registration: bool,
    /// The `[rate_limits]` table; `None` leaves it out, so the production defaults apply.
    pub rate_limits: Option<RateLimits>,
    /// `[http] max_body_bytes`; `None` leaves the server's default (1 MiB).
    pub max_body_bytes: Option<usize>,
    /// Appended verbatim at the end of the config file: start it with a `[table]` header.
    pub extra_toml: String,
    /// Extra environment for the process (e.g. `GANGLION_HTTP__MAX_BODY_BYTES`). Every other
    /// `GANGLION_*` variable of the test process is removed from the server's environment.
    pub env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    /// Registration on and generous rate limits.
    fn default() -> ServerOptions {
        ServerOptions {
            registration: true,
            rate_limits: Some(RateLimits::generous()),
            max_body_bytes: None,
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

/// A running `ganglion` process, killed (SIGKILL) on drop. Its temp directory holds
/// `ganglion.toml`, `data/`, `stdout.log` and `stderr.log`.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, from the ready line.
    pub base_url: String,
    pub pid: u32,
    pub backend: Backend,
    pub server_name: String,
    port: u16,
    binary: PathBuf,
    database_url: String,
    options: ServerOptions,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("base_url", &self.base_url)
            .field("pid", &self.pid)
            .field("backend", &self.backend)
            .field("dir", &self.dir_path)
            .finish()
    }
}

impl TestServer {
    /// Writes a config, starts `ganglion run --config …` and waits (bounded) until it is ready.
    ///
    /// The process gets `PR_SET_PDEATHSIG = SIGKILL`, so it also dies if the thread that started
    /// it exits (for `#[tokio::test]`, the test's thread or runtime): start servers from the test
    /// task itself, not from `spawn_blocking`.
    pub async fn start(backend: Backend, options: ServerOptions) -> anyhow::Result<TestServer> {
        let binary =
            blocking(BUILD_DEADLINE, "locating or building the ganglion binary", ganglion_binary).await?;
        let database_url = match backend {
            Backend::Sqlite => String::new(),
            Backend::Postgres => {
                blocking(READY_DEADLINE, "provisioning a PostgreSQL database", || {
                    Postgres::shared()?.create_database()
                })
                .await?
            }
        };
        let dir = tempfile::Builder::new().prefix("ganglion-test-").tempdir().context("temp dir")?;
        let dir_path = dir.path().to_path_buf();
        fs::create_dir_all(dir_path.join("data")).context("creating the data dir")?;
        let mut server = TestServer {
            base_url: String::new(),
            pid: 0,
            backend,
            server_name: SERVER_NAME.to_owned(),
            port: 0,
            binary,
            database_url,
            options,
            child: None,
            dir: Some(dir),
            dir_path,
        };
        server.spawn(0).await?;
        Ok(server)
    }

    /// Kills the process with SIGKILL and starts it again on the same port, data directory and
    /// database, so that existing clients keep working.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn(self.port).await
    }

    /// SIGKILL and reap the process (no-op if it is not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; its exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server is not running")?;
        // SAFETY: plain syscall on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let waited = blocking(deadline, "the server to exit after SIGTERM", move || {
            child.wait().context("waiting for the server")
        })
        .await;
        if waited.is_err() {
            // SAFETY: as above; the waiting thread reaps it once it dies.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        waited
    }

    /// A reqwest helper for this server.
    pub fn api(&self) -> Api {
        Api::new(self.base_url.clone())
    }

    /// Registers `username` over plain HTTP (UIA `m.login.dummy`).
    pub async fn register(&self, username: &str, password: &str) -> anyhow::Result<Account> {
        self.api().register(username, password).await
    }

    /// `@localpart:localhost`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// The server's temp directory (config, logs, `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// `database.url` as written to the config (empty for SQLite).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        fs::read_to_string(self.dir_path.join("stderr.log")).unwrap_or_default()
    }

    fn config(&self, port: u16) -> String {
        let mut toml = String::new();
        let data_dir = self.dir_path.join("data");
        let _ = writeln!(toml, "server_name = {}", quote(&self.server_name));
        let _ = writeln!(toml, "data_dir = {}", quote(&data_dir.to_string_lossy()));
        let _ = writeln!(toml, "\n[worker]\nrole = \"all\"\nname = \"main\"");
        let _ = writeln!(toml, "\n[http]\nlisten = \"127.0.0.1:{port}\"");
        if let Some(max) = self.options.max_body_bytes {
            let _ = writeln!(toml, "max_body_bytes = {max}");
        }
        let _ = writeln!(toml, "\n[database]\nurl = {}\nmax_connections = 8", quote(&self.database_url));
        let _ = writeln!(toml, "\n[registration]\nenabled = {}", self.options.registration);
        if let Some(limits) = &self.options.rate_limits {
            let bucket = |b: &Bucket| format!("{{ per_second = {:?}, burst = {} }}", b.per_second, b.burst);
            let _ = writeln!(
                toml,
                "\n[rate_limits]\nenabled = {}\nper_user = {}\nper_ip = {}\nlogin = {}",
                limits.enabled,
                bucket(&limits.per_user),
                bucket(&limits.per_ip),
                bucket(&limits.login)
            );
        }
        let _ = writeln!(toml, "\n[rooms]\ndefault_version = \"12\"");
        if !self.options.extra_toml.is_empty() {
            let _ = writeln!(toml, "\n{}", self.options.extra_toml);
        }
        toml
    }

    /// Writes the config for `port` (0 = any), spawns the process and waits for its ready line.
    async fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        let config_path = self.dir_path.join("ganglion.toml");
        fs::write(&config_path, self.config(port)).context("writing ganglion.toml")?;
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir_path.join("stderr.log"))
            .context("stderr log")?;
        let stdout_log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir_path.join("stdout.log"))
            .context("stdout log")?;

        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GANGLION_") {
                command.env_remove(&key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command.env("RUST_BACKTRACE", "1");
        command.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| format!("spawning {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        self.pid = child.id();
        self.child = Some(child);

        let (ready_tx, ready_rx) = oneshot::channel::<Result<String, String>>();
        std::thread::Builder::new()
            .name(format!("ganglion-stdout-{}", self.pid))
            .spawn(move || read_stdout(stdout, stdout_log, ready_tx))
            .context("spawning the stdout reader")?;

        let ready = match tokio::time::timeout(READY_DEADLINE, ready_rx).await {
            Ok(Ok(Ok(url))) => Ok(url),
            Ok(Ok(Err(problem))) => Err(problem),
            Ok(Err(_)) => Err("stdout reader vanished".to_owned()),
            Err(_) => Err(format!("no ready line within {READY_DEADLINE:?}")),
        };
        let url = match ready {
            Ok(url) => url,
            Err(problem) => {
                self.kill();
                anyhow::bail!(
                    "ganglion ({} backend, {}) did not start: {problem}\n--- ganglion.toml ---\n{}\n\
                     --- stderr (tail) ---\n{}",
                    self.backend.name(),
                    self.binary.display(),
                    self.config(port),
                    tail(&self.stderr_log(), 60)
                );
            }
        };
        self.port = url
            .rsplit_once(':')
            .and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
            .with_context(|| format!("no port in the ready line's URL {url:?}"))?;
        anyhow::ensure!(port == 0 || self.port == port, "asked for port {port}, got {url}");
        self.base_url = url.trim_end_matches('/').to_owned();
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- ganglion ({} backend, {}) stderr (tail) ---\n{}\n---",
                self.backend.name(),
                self.base_url,
                tail(&self.stderr_log(), 40)
            );
        }
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
            && let Some(dir) = self.dir.take()
        {
            eprintln!("ganglion-testkit: kept {}", dir.keep().display());
        }
    }
}

/// Copies the server's stdout to `log`; reports the URL of the first ready line (or why none came).
fn read_stdout(
    stdout: std::process::ChildStdout,
    mut log: fs::File,
    ready: oneshot::Sender<Result<String, String>>,
) {
    let mut ready = Some(ready);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        if let Some(url) = line.strip_prefix(READY_PREFIX)
            && let Some(sender) = ready.take()
        {
            let _ = sender.send(Ok(url.trim().to_owned()));
        }
    }
    if let Some(sender) = ready.take() {
        let _ = sender.send(Err("the process closed stdout (exited?) before its ready line".to_owned()));
    }
}

/// Runs blocking work off the async threads, with a deadline.
async fn blocking<T: Send + 'static>(
    deadline: Duration,
    what: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(anyhow::anyhow!("{what}: {join}")),
        Err(_) => Err(anyhow::anyhow!("{what}: timed out after {deadline:?}")),
    }
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
