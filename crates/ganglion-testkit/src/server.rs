//! One `ganglion run` process with its own config, data directory and database, or (with
//! [`Backend::Cluster`]) a whole [`Cluster`] behind the same interface.
//!
//! Also the pieces every launcher of this crate shares: the config file ([`config_toml`]), the
//! `ganglion` command line ([`ganglion_command`]), the ready line, and [`Supervised`] child
//! processes (used by [`Cluster`] and [`crate::Redis`]).

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, mpsc},
    time::Duration,
};

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::{
    binary::{ganglion_binary, tail},
    cluster::Cluster,
    http::{Account, Api},
    postgres::Postgres,
};

/// How long a server may take to print its ready line.
pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a first `cargo build -p ganglion` may take.
pub(crate) const BUILD_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// How long a process may take to die after SIGKILL (and be reaped).
pub(crate) const KILL_DEADLINE: Duration = Duration::from_secs(10);
const READY_PREFIX: &str = "ganglion ready ";
pub(crate) const SERVER_NAME: &str = "localhost";
/// Set to `1` to keep each server's directory (config, logs, SQLite) after the test.
const KEEP_ENV: &str = "GANGLION_TESTKIT_KEEP";

/// Whether `GANGLION_TESTKIT_KEEP=1`: temp directories are kept (and their path printed).
pub(crate) fn keep_dirs() -> bool {
    std::env::var(KEEP_ENV).is_ok_and(|v| v == "1")
}

/// Where a test server keeps its data, and how many processes serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// One `role = "all"` process on SQLite in its data directory (`database.url = ""`).
    Sqlite,
    /// One `role = "all"` process on a fresh database of this process's throwaway PostgreSQL.
    Postgres,
    /// A split [`Cluster`] (master, two sync workers, two client-readers) on a fresh PostgreSQL
    /// database and a throwaway Redis, behind nginx.
    Cluster,
}

impl Backend {
    /// The single-process backends (what every black-box scenario runs on by default).
    pub fn all() -> [Backend; 2] {
        [Backend::Sqlite, Backend::Postgres]
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Cluster => "cluster",
        }
    }
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

/// The `[rate_limits]` table: the buckets of the actions it names (`message`,
/// `login_address`, …; the others keep the production defaults of a config file) and the
/// exemptions.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub enabled: bool,
    pub buckets: Vec<(&'static str, Bucket)>,
    pub exempt_users: Vec<String>,
    pub exempt_addresses: Vec<String>,
}

impl RateLimits {
    /// The production defaults (a config file's), changed only where [`RateLimits::with`] says.
    pub fn production() -> RateLimits {
        RateLimits {
            enabled: true,
            buckets: Vec::new(),
            exempt_users: Vec::new(),
            exempt_addresses: Vec::new(),
        }
    }

    /// Every action at `bucket`.
    pub fn all(bucket: Bucket) -> RateLimits {
        let mut limits = RateLimits::production();
        for action in ganglion_config::RateLimitAction::ALL {
            limits = limits.with(action.key(), bucket);
        }
        limits
    }

    /// Limits no test should hit.
    pub fn generous() -> RateLimits {
        RateLimits::all(Bucket { per_second: 1000.0, burst: 5000 })
    }

    /// `action` (a key of `[rate_limits]`) at `bucket`.
    pub fn with(mut self, action: &'static str, bucket: Bucket) -> RateLimits {
        self.buckets.retain(|(name, _)| *name != action);
        self.buckets.push((action, bucket));
        self
    }
}

/// What differs between test servers. Everything else is fixed: server name `localhost`,
/// loopback listeners on free ports, room version 12 by default, and the topology the
/// [`Backend`] implies (`role = "all"`, or a [`Cluster`]).
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

/// A running `ganglion` server, killed (SIGKILL) on drop: one process, whose temp directory holds
/// `ganglion.toml`, `data/`, `stdout.log` and `stderr.log`; or, with [`Backend::Cluster`], a
/// [`Cluster`] reached through its nginx (see [`TestServer::cluster`]).
pub struct TestServer {
    /// `http://127.0.0.1:PORT`, from the ready line (for a cluster: nginx).
    pub base_url: String,
    /// The process id (for a cluster: the master's).
    pub pid: u32,
    pub backend: Backend,
    pub server_name: String,
    port: u16,
    binary: PathBuf,
    database_url: String,
    options: ServerOptions,
    child: Option<Child>,
    /// `Some` for [`Backend::Cluster`]; every other field then only mirrors it.
    cluster: Option<Cluster>,
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
    /// Writes a config, starts `ganglion run --config …` and waits (bounded) until it is ready;
    /// with [`Backend::Cluster`], starts a whole [`Cluster`] (see [`Cluster::start`]).
    ///
    /// A single process gets `PR_SET_PDEATHSIG = SIGKILL`, so it also dies if the thread that
    /// started it exits (for `#[tokio::test]`, the test's thread or runtime): start servers from
    /// the test task itself, not from `spawn_blocking`.
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
            Backend::Cluster => return Ok(TestServer::over_cluster(Cluster::start(options).await?)),
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
            cluster: None,
            dir: Some(dir),
            dir_path,
        };
        server.spawn(0).await?;
        Ok(server)
    }

    /// Like [`TestServer::start`], with [`Backend::Cluster`] a cluster with two pusher workers
    /// ([`Cluster::start_pushing`]).
    pub async fn start_with_pushers(backend: Backend, options: ServerOptions) -> anyhow::Result<TestServer> {
        match backend {
            Backend::Cluster => Ok(TestServer::over_cluster(Cluster::start_pushing(options).await?)),
            _ => TestServer::start(backend, options).await,
        }
    }

    fn over_cluster(cluster: Cluster) -> TestServer {
        TestServer {
            base_url: cluster.base_url(),
            pid: cluster.pid_of(crate::cluster::MASTER).unwrap_or(0),
            backend: Backend::Cluster,
            server_name: SERVER_NAME.to_owned(),
            port: 0,
            binary: cluster.binary().to_path_buf(),
            database_url: cluster.database_url().to_owned(),
            options: cluster.options().clone(),
            child: None,
            dir: None,
            dir_path: cluster.dir().to_path_buf(),
            cluster: Some(cluster),
        }
    }

    /// Kills the process with SIGKILL and starts it again on the same port, data directory and
    /// database, so that existing clients keep working. A cluster: every `ganglion` process
    /// (nginx, Redis and PostgreSQL keep running).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(cluster) = &mut self.cluster {
            cluster.restart_all_ganglion().await?;
            self.pid = cluster.pid_of(crate::cluster::MASTER).unwrap_or(0);
            return Ok(());
        }
        self.kill();
        self.spawn(self.port).await
    }

    /// SIGKILL and reap the process (no-op if it is not running); a cluster: every `ganglion`
    /// process.
    pub fn kill(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            if let Err(error) = cluster.kill_all_ganglion() {
                eprintln!("ganglion-testkit: killing the cluster: {error:#}");
            }
            return;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; its exit status. A cluster:
    /// SIGTERM to every `ganglion` process at once; the master's exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(cluster) = &mut self.cluster {
            let statuses = cluster.terminate_all_ganglion(deadline).await?;
            return statuses
                .into_iter()
                .find_map(|(name, status)| (name == crate::cluster::MASTER).then_some(status))
                .context("the cluster's master was not running");
        }
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

    /// The cluster behind this server, for cluster-specific tests (`None` for one process).
    pub fn cluster(&mut self) -> Option<&mut Cluster> {
        self.cluster.as_mut()
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

    /// The server's temp directory (config, logs, `data/`); a cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The config file the server runs with (a cluster's: the one every process runs with), for
    /// the binary's other commands (`ganglion reports --config …`).
    pub fn config_path(&self) -> PathBuf {
        match &self.cluster {
            Some(cluster) => cluster.config_path().to_path_buf(),
            None => self.dir_path.join("ganglion.toml"),
        }
    }

    /// `database.url` as written to the config (empty for SQLite).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Everything the server wrote to stderr so far (a cluster: every process, one after another).
    pub fn stderr_log(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.stderr_logs(),
            None => fs::read_to_string(self.dir_path.join("stderr.log")).unwrap_or_default(),
        }
    }

    fn config(&self, port: u16) -> String {
        let data_dir = self.dir_path.join("data");
        let settings = ConfigSettings {
            server_name: &self.server_name,
            data_dir: &data_dir,
            database_url: &self.database_url,
            options: &self.options,
            trusted_proxies: &[],
        };
        config_toml(
            &settings,
            Some(&format!("127.0.0.1:{port}")),
            "\n[worker]\nrole = \"all\"\nname = \"main\"\n",
        )
    }

    /// Writes the config for `port` (0 = any), spawns the process and waits for its ready line.
    async fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        let config_path = self.dir_path.join("ganglion.toml");
        fs::write(&config_path, self.config(port)).context("writing ganglion.toml")?;
        let stderr = append_log(&self.dir_path.join("stderr.log"))?;
        let stdout_log = append_log(&self.dir_path.join("stdout.log"))?;

        let mut command =
            ganglion_command(&self.binary, &config_path, None, &self.dir_path, &self.options.env, stderr);
        die_with_parent(&mut command, libc::SIGKILL);
        let mut child = command.spawn().with_context(|| format!("spawning {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        self.pid = child.id();
        self.child = Some(child);

        let (ready_tx, ready_rx) = oneshot::channel::<Result<String, String>>();
        std::thread::Builder::new()
            .name(format!("ganglion-stdout-{}", self.pid))
            .spawn(move || read_stdout(stdout, stdout_log, ready_tx))
            .context("spawning the stdout reader")?;

        let url = match ready_url(ready_rx).await {
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
        self.port = port_of_url(&url).with_context(|| format!("no port in the ready line's URL {url:?}"))?;
        anyhow::ensure!(port == 0 || self.port == port, "asked for port {port}, got {url}");
        self.base_url = url.trim_end_matches('/').to_owned();
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.cluster.is_some() {
            // The cluster kills its processes, reports their logs and keeps its directory itself.
            return;
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- ganglion ({} backend, {}) stderr (tail) ---\n{}\n---",
                self.backend.name(),
                self.base_url,
                tail(&self.stderr_log(), 40)
            );
        }
        if keep_dirs()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("ganglion-testkit: kept {}", dir.keep().display());
        }
    }
}

/// What a test config file says besides its topology.
pub(crate) struct ConfigSettings<'a> {
    pub(crate) server_name: &'a str,
    pub(crate) data_dir: &'a Path,
    pub(crate) database_url: &'a str,
    pub(crate) options: &'a ServerOptions,
    /// `http.trusted_proxies`: a cluster's nginx; none for one process.
    pub(crate) trusted_proxies: &'a [&'a str],
}

/// The config file of a test topology: `settings` and the [`ServerOptions`] tables, `http_listen`
/// as `http.listen` (a cluster process takes its listener from `instance_map` instead), and
/// `topology`, TOML tables placed after the top-level keys (one process's `[worker]`; a cluster's
/// `[redis]`, `[load_balancer]` and `instance_map`). The options' `extra_toml` comes last.
pub(crate) fn config_toml(
    settings: &ConfigSettings<'_>,
    http_listen: Option<&str>,
    topology: &str,
) -> String {
    let options = settings.options;
    let mut toml = String::new();
    let _ = writeln!(toml, "server_name = {}", quote(settings.server_name));
    let _ = writeln!(toml, "data_dir = {}", quote(&settings.data_dir.to_string_lossy()));
    toml.push_str(topology);
    let _ = write!(toml, "\n[http]\n");
    let proxies: Vec<String> = settings.trusted_proxies.iter().map(|proxy| quote(proxy)).collect();
    let _ = writeln!(toml, "trusted_proxies = [{}]", proxies.join(", "));
    if let Some(listen) = http_listen {
        let _ = writeln!(toml, "listen = {}", quote(listen));
    }
    if let Some(max) = options.max_body_bytes {
        let _ = writeln!(toml, "max_body_bytes = {max}");
    }
    let _ = writeln!(toml, "\n[database]\nurl = {}\nmax_connections = 8", quote(settings.database_url));
    let _ = writeln!(toml, "\n[registration]\nenabled = {}", options.registration);
    if let Some(limits) = &options.rate_limits {
        let _ = writeln!(toml, "\n[rate_limits]\nenabled = {}", limits.enabled);
        for (action, b) in &limits.buckets {
            let _ = writeln!(toml, "{action} = {{ per_second = {:?}, burst = {} }}", b.per_second, b.burst);
        }
        let list = |items: &[String]| items.iter().map(|item| quote(item)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(toml, "exempt_users = [{}]", list(&limits.exempt_users));
        let _ = writeln!(toml, "exempt_addresses = [{}]", list(&limits.exempt_addresses));
    }
    let _ = writeln!(toml, "\n[rooms]\ndefault_version = \"12\"");
    if !options.extra_toml.is_empty() {
        let _ = writeln!(toml, "\n{}", options.extra_toml);
    }
    toml
}

/// `ganglion run --config <config> [--worker <worker>]` in `dir`, with stdin closed, stdout piped
/// (for the ready line) and stderr to `stderr`. Every `GANGLION_*` variable of the test process is
/// removed; `RUST_LOG=info` unless set, backtraces on, then `env`.
pub(crate) fn ganglion_command(
    binary: &Path,
    config: &Path,
    worker: Option<&str>,
    dir: &Path,
    env: &[(String, String)],
    stderr: fs::File,
) -> Command {
    let mut command = Command::new(binary);
    command.arg("run").arg("--config").arg(config);
    if let Some(worker) = worker {
        command.arg("--worker").arg(worker);
    }
    command.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
    without_ganglion_env(&mut command);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    command.env("RUST_BACKTRACE", "1");
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Removes every `GANGLION_*` variable of the test process from the command's environment.
pub(crate) fn without_ganglion_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GANGLION_") {
            command.env_remove(&key);
        }
    }
}

/// The child gets `signal` when the thread that spawns it exits (`PR_SET_PDEATHSIG`), and exits at
/// once if the test process already died between fork and exec.
pub(crate) fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A log file opened for appending (created if need be).
pub(crate) fn append_log(path: &Path) -> anyhow::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Waits (bounded by [`READY_DEADLINE`]) for the URL of the ready line, or why none came.
pub(crate) async fn ready_url(ready: oneshot::Receiver<Result<String, String>>) -> Result<String, String> {
    match tokio::time::timeout(READY_DEADLINE, ready).await {
        Ok(Ok(Ok(url))) => Ok(url),
        Ok(Ok(Err(problem))) => Err(problem),
        Ok(Err(_)) => Err("stdout reader vanished".to_owned()),
        Err(_) => Err(format!("no ready line within {READY_DEADLINE:?}")),
    }
}

/// The port of `http://host:PORT[/]`.
pub(crate) fn port_of_url(url: &str) -> Option<u16> {
    url.rsplit_once(':').and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
}

/// Copies the server's stdout to `log`; reports the URL of the first ready line (or why none came).
pub(crate) fn read_stdout(
    stdout: ChildStdout,
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
pub(crate) async fn blocking<T: Send + 'static>(
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
pub(crate) fn quote(value: &str) -> String {
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

/// Exit status of a [`Supervised`] process, filled in by the thread that waits on it.
#[derive(Default)]
struct ExitWatch {
    /// `Err` when `wait` itself failed.
    status: Mutex<Option<Result<ExitStatus, String>>>,
    changed: Condvar,
}

impl ExitWatch {
    fn status(&self) -> Option<Result<ExitStatus, String>> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn wait(&self, deadline: Duration) -> Option<Result<ExitStatus, String>> {
        let guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, deadline, |status| status.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.clone()
    }
}

/// A child process spawned from a thread of its own, which then waits on it for the rest of its
/// life. The parent-death signal follows the spawning *thread*, so it fires only when the test
/// process dies, not when some pool retires the thread that happened to start the child; and
/// the exit status is known without blocking anyone. SIGKILLed (and reaped) on drop.
pub(crate) struct Supervised {
    name: String,
    pid: u32,
    exit: Arc<ExitWatch>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised").field("name", &self.name).field("pid", &self.pid).finish()
    }
}

impl Supervised {
    /// Spawns `command` (named `name` in errors) with parent-death signal `death_signal`. If its
    /// stdout is piped, the supervising thread hands it to `stdout` (which should read it to the
    /// end) before waiting for the exit.
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        death_signal: libc::c_int,
        stdout: Option<Box<dyn FnOnce(ChildStdout) + Send>>,
    ) -> anyhow::Result<Supervised> {
        die_with_parent(&mut command, death_signal);
        let exit = Arc::new(ExitWatch::default());
        let watch = exit.clone();
        let (started_tx, started_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("ganglion-testkit-{name}"))
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(child.id()));
                match (child.stdout.take(), stdout) {
                    (Some(pipe), Some(read)) => read(pipe),
                    (pipe, _) => drop(pipe),
                }
                let status = child.wait().map_err(|error| error.to_string());
                *watch.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                watch.changed.notify_all();
            })
            .with_context(|| format!("spawning the thread that supervises {name}"))?;
        let pid = started_rx
            .recv_timeout(READY_DEADLINE)
            .with_context(|| format!("the thread supervising {name} did not report"))?
            .with_context(|| format!("spawning {name}"))?;
        Ok(Supervised { name: name.to_owned(), pid, exit })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn is_running(&self) -> bool {
        self.exit.status().is_none()
    }

    /// Sends `signal` if the process has not exited (so its pid cannot have been reused).
    pub(crate) fn signal(&self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: plain syscall; the pid is our own child, reaped only by its supervising
            // thread, which has not seen it exit yet.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    /// Blocks until the process exits or `deadline` passes; its exit status if it exited.
    pub(crate) fn wait(&self, deadline: Duration) -> Option<Result<ExitStatus, String>> {
        self.exit.wait(deadline)
    }

    /// Like [`Supervised::wait`] without blocking the async thread (polls every 10 ms).
    pub(crate) async fn exited_within(&self, deadline: Duration) -> Option<Result<ExitStatus, String>> {
        let polls = async {
            loop {
                if let Some(status) = self.exit.status() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(deadline, polls).await.ok()
    }

    /// SIGKILL, then blocks (bounded) until the process is reaped. A no-op if it already exited.
    pub(crate) fn kill(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGKILL);
        anyhow::ensure!(
            self.wait(KILL_DEADLINE).is_some(),
            "{} (pid {}) still running {KILL_DEADLINE:?} after SIGKILL",
            self.name,
            self.pid
        );
        Ok(())
    }

    /// SIGTERM, then waits up to `deadline` for the exit (SIGKILL and an error after that).
    pub(crate) async fn terminate(&self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        anyhow::ensure!(self.is_running(), "{} is not running", self.name);
        self.signal(libc::SIGTERM);
        self.exit_status_within(deadline).await
    }

    /// The exit status once the process exits within `deadline` (it is SIGKILLed if not).
    pub(crate) async fn exit_status_within(&self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        match self.exited_within(deadline).await {
            Some(status) => status.map_err(|error| anyhow::anyhow!("waiting for {}: {error}", self.name)),
            None => {
                let _ = self.kill();
                anyhow::bail!("{} (pid {}) did not exit within {deadline:?}; killed it", self.name, self.pid)
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            eprintln!("ganglion-testkit: {error:#}");
        }
    }
}
