//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, `postgres` on a free loopback port.
//!
//! The machine's own PostgreSQL (port 5432) is never touched. The cluster is stopped by
//! [`Postgres::stop`], by `Drop`, by an `atexit` hook for the shared instance, and, if the test
//! process dies abruptly, by the kernel: the server is spawned from a dedicated thread that
//! lives as long as the process, with `PR_SET_PDEATHSIG = SIGINT` (PostgreSQL's fast shutdown).

use std::{
    ffi::CString,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::binary::tail;

/// Set to a directory holding `initdb`, `postgres`, `createdb`, `pg_isready` to override discovery.
const BIN_DIR_ENV: &str = "GANGLION_TEST_PG_BIN";
const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(20);

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();

/// Exit status of the postmaster, filled in by the thread that waits on it.
#[derive(Default)]
struct ExitWatch {
    status: Mutex<Option<std::io::Result<ExitStatus>>>,
    changed: Condvar,
}

impl ExitWatch {
    fn exited(&self) -> bool {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Waits until the process has exited; returns whether it did within `deadline`.
    fn wait(&self, deadline: Duration) -> bool {
        let guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, deadline, |status| status.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.is_some()
    }
}

/// A running throwaway PostgreSQL cluster with a `postgres` superuser and trust auth.
pub struct Postgres {
    bin_dir: PathBuf,
    port: u16,
    pid: u32,
    /// Removed once the server has stopped.
    dir: Mutex<Option<tempfile::TempDir>>,
    dir_path: PathBuf,
    exit: Arc<ExitWatch>,
    stopped: AtomicBool,
    databases: AtomicU32,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("port", &self.port).field("pid", &self.pid).finish()
    }
}

impl Postgres {
    /// The instance shared by every test of this process, started on first use and stopped when
    /// the process exits. Blocking: call it from `spawn_blocking` in async code.
    pub fn shared() -> anyhow::Result<&'static Postgres> {
        let shared = SHARED.get_or_init(|| {
            let started = Postgres::start().map_err(|error| format!("{error:#}"));
            if started.is_ok() {
                // SAFETY: registers a plain `extern "C"` function; it only touches `SHARED`.
                unsafe { libc::atexit(stop_shared_at_exit) };
            }
            started
        });
        shared.as_ref().map_err(|message| anyhow::anyhow!("throwaway PostgreSQL: {message}"))
    }

    /// Starts a new cluster owned by the caller; it is stopped on drop. Blocking.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin_dir = find_bin_dir()?;
        for name in ["initdb", "postgres", "createdb", "pg_isready"] {
            anyhow::ensure!(bin_dir.join(name).is_file(), "{} has no `{name}`", bin_dir.display());
        }
        let owner = cluster_owner()?;
        let dir = tempfile::Builder::new().prefix("ganglion-pg-").tempdir().context("temp dir")?;
        let dir_path = dir.path().to_path_buf();
        let data = dir_path.join("data");
        if let Some((uid, gid)) = owner {
            chown(&dir_path, uid, gid)?;
        }

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .current_dir(&dir_path)
            .stdin(Stdio::null());
        as_owner(&mut initdb, owner);
        let output = initdb.output().context("running initdb")?;
        anyhow::ensure!(
            output.status.success(),
            "initdb failed ({}):\n{}\n{}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stdout), 20),
            tail(&String::from_utf8_lossy(&output.stderr), 20)
        );

        // A port picked by the kernel can be taken again before postgres binds it: retry a few times.
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            match spawn_postmaster(&bin_dir, &data, &dir_path, port, owner) {
                Ok((pid, exit)) => {
                    let postgres = Postgres {
                        bin_dir: bin_dir.clone(),
                        port,
                        pid,
                        dir: Mutex::new(None),
                        dir_path: dir_path.clone(),
                        exit,
                        stopped: AtomicBool::new(false),
                        databases: AtomicU32::new(0),
                    };
                    match postgres.wait_ready() {
                        Ok(()) => {
                            *postgres.dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
                            return Ok(postgres);
                        }
                        Err(error) => {
                            let _ = postgres.stop();
                            last_error = Some(error);
                        }
                    }
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the postmaster.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the postmaster process is still running.
    pub fn is_running(&self) -> bool {
        !self.exit.exited()
    }

    /// Connection URL for database `db` (as the `postgres` superuser, trust auth).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, uniquely named database and returns its URL. Blocking.
    pub fn create_database(&self) -> anyhow::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("ganglion_{}_{n}", std::process::id());
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name])
            .stdin(Stdio::null())
            .output()
            .context("running createdb")?;
        anyhow::ensure!(
            output.status.success(),
            "createdb {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(self.url(&name))
    }

    /// Runs one SQL statement with `psql` (if it is in the same bin dir) and returns its
    /// unaligned, tuples-only output. Blocking.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.bin_dir.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        anyhow::ensure!(
            output.status.success(),
            "psql failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Fast shutdown (SIGINT), then SIGKILL if it lingers; then removes the data directory.
    /// Idempotent. Blocking (bounded).
    pub fn stop(&self) -> anyhow::Result<()> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let pid = self.pid as libc::pid_t;
        if !self.exit.exited() {
            // SAFETY: plain syscall; the pid is our own child, reaped only by its waiter thread,
            // which has not seen it exit yet.
            unsafe { libc::kill(pid, libc::SIGINT) };
            if !self.exit.wait(STOP_DEADLINE) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                anyhow::ensure!(self.exit.wait(STOP_DEADLINE), "postgres {pid} did not exit");
            }
        }
        if let Some(dir) = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take() {
            dir.close().context("removing the PostgreSQL data directory")?;
        }
        Ok(())
    }

    /// Polls `pg_isready` until the server accepts connections, within [`START_DEADLINE`].
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if self.exit.exited() {
                anyhow::bail!("postgres exited during start:\n{}", self.log_tail());
            }
            let status = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-t", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("running pg_isready")?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "postgres did not accept connections within {START_DEADLINE:?}:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        tail(&fs::read_to_string(self.dir_path.join("postgres.log")).unwrap_or_default(), 30)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("ganglion-testkit: stopping PostgreSQL: {error:#}");
        }
    }
}

extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(postgres)) = SHARED.get() {
        let _ = postgres.stop();
    }
}

/// Spawns the postmaster from a thread that then waits on it for the rest of its life, so the
/// parent-death signal (which follows the spawning *thread*) only fires when the process dies.
fn spawn_postmaster(
    bin_dir: &Path,
    data: &Path,
    dir: &Path,
    port: u16,
    owner: Option<(libc::uid_t, libc::gid_t)>,
) -> anyhow::Result<(u32, Arc<ExitWatch>)> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("postgres.log"))
        .context("postgres log file")?;
    if let Some((uid, gid)) = owner {
        chown(&dir.join("postgres.log"), uid, gid)?;
    }
    let mut command = Command::new(bin_dir.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(data)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("postgres log file")?)
        .stderr(log);
    as_owner(&mut command, owner);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec. They
    // run after the uid change, which would otherwise clear the parent-death signal.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }

    let exit = Arc::new(ExitWatch::default());
    let watch = exit.clone();
    let (started_tx, started_rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("ganglion-testkit-postgres-{port}"))
        .spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(error) => {
                    let _ = started_tx.send(Err(error));
                    return;
                }
            };
            let _ = started_tx.send(Ok(child.id()));
            let status = child.wait();
            *watch.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
            watch.changed.notify_all();
        })
        .context("spawning the postgres waiter thread")?;
    let pid = started_rx
        .recv_timeout(START_DEADLINE)
        .context("postgres waiter thread did not report")?
        .context("spawning postgres")?;
    Ok((pid, exit))
}

/// Runs the command as `owner` (the `postgres` user) when we are root: PostgreSQL refuses root.
fn as_owner(command: &mut Command, owner: Option<(libc::uid_t, libc::gid_t)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// `None` when not root (run as ourselves); the `postgres` user's ids when root.
fn cluster_owner() -> anyhow::Result<Option<(libc::uid_t, libc::gid_t)>> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer to static storage or null; read it at once. Tests of one
    // process only call this while holding no other passwd lookups.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    anyhow::ensure!(
        !entry.is_null(),
        "running as root and there is no `postgres` user to run the throwaway PostgreSQL as \
         (install the `postgresql` package, or run the tests as a normal user)"
    );
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, uid: libc::uid_t, gid: libc::gid_t) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {} to the postgres user", path.display()))
}

fn free_port() -> anyhow::Result<u16> {
    crate::ports::free_port()
}

/// `$GANGLION_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/<N>/bin`, else the directory of
/// `postgres` found on `PATH` (symlinks resolved).
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("postgres");
        if candidate.is_file() {
            let real = fs::canonicalize(&candidate).unwrap_or(candidate);
            if let Some(parent) = real.parent() {
                return Ok(parent.to_path_buf());
            }
        }
    }
    anyhow::bail!(
        "no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin or on PATH; \
         install the `postgresql` package (scripts/test.sh does) or set {BIN_DIR_ENV}"
    )
}

#[cfg(test)]
mod tests;
