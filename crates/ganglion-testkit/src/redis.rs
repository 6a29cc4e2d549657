//! A throwaway Redis: the installed `redis-server` on a free loopback port, persisting nothing,
//! in a directory of its own.
//!
//! The machine's own Redis (port 6379) is never touched. The server dies with the test process
//! (parent-death signal) and is killed on drop. Every method blocks, always with a deadline; the
//! waits are milliseconds in practice, so async tests may call them directly.

use std::{
    fs,
    io::{BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    binary::tail,
    server::{Supervised, append_log},
};

/// Set to the path of a `redis-server` binary to override discovery.
const BIN_ENV: &str = "GANGLION_TEST_REDIS_BIN";
const FALLBACK_BIN: &str = "/usr/bin/redis-server";
const START_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Connect, read and write timeout of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_FILE: &str = "redis.log";

/// A running (or stopped, see [`Redis::stop`]) throwaway `redis-server`.
pub struct Redis {
    binary: PathBuf,
    port: u16,
    process: Option<Supervised>,
    /// The temp directory, removed on drop; `None` when the caller owns the directory.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("port", &self.port)
            .field("pid", &self.process.as_ref().map(Supervised::pid))
            .field("dir", &self.dir_path)
            .finish()
    }
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR …`: the server refused the command.
    Error(String),
    Integer(i64),
    /// `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Status(text) => Some(text.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

impl Redis {
    /// Starts `redis-server` in a new temp directory on a free port and waits (bounded) until it
    /// answers `PING`.
    pub fn start() -> anyhow::Result<Redis> {
        let dir = tempfile::Builder::new().prefix("ganglion-redis-").tempdir().context("temp dir")?;
        let dir_path = dir.path().to_path_buf();
        Redis::start_with_dir(Some(dir), dir_path)
    }

    /// Like [`Redis::start`], in `dir` (created if need be, never removed): its log is
    /// `<dir>/redis.log`.
    pub fn start_in(dir: &Path) -> anyhow::Result<Redis> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Redis::start_with_dir(None, dir.to_path_buf())
    }

    fn start_with_dir(dir: Option<tempfile::TempDir>, dir_path: PathBuf) -> anyhow::Result<Redis> {
        let binary = find_binary()?;
        // A port picked by the kernel can be taken again before redis binds it: retry a few times.
        let mut last_error = None;
        for _ in 0..3 {
            let port = crate::ports::free_port()?;
            let mut redis =
                Redis { binary: binary.clone(), port, process: None, dir: None, dir_path: dir_path.clone() };
            match redis.spawn() {
                Ok(()) => {
                    redis.dir = dir;
                    return Ok(redis);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the server; `None` once it was stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().filter(|process| process.is_running()).map(Supervised::pid)
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(Supervised::is_running)
    }

    /// The server's directory (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir_path.join(LOG_FILE)).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded) for the exit; SIGKILL if it lingers. A no-op when not running.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(process) = self.process.take() else { return Ok(()) };
        process.signal(libc::SIGTERM);
        if process.wait(STOP_DEADLINE).is_none() {
            process.kill()?;
            anyhow::bail!(
                "redis-server on port {} ignored SIGTERM for {STOP_DEADLINE:?}; killed it",
                self.port
            );
        }
        Ok(())
    }

    /// SIGKILL (a crash) and wait until it is reaped. A no-op when not running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        match self.process.take() {
            Some(process) => process.kill(),
            None => Ok(()),
        }
    }

    /// Starts the server again after [`Redis::stop`] or [`Redis::kill`], on the same port and
    /// directory, empty (nothing is persisted). Fails if it is running.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "redis-server on port {} is still running", self.port);
        self.process = None;
        self.spawn()
    }

    /// `FLUSHALL`: drops every key (streams included).
    pub fn flushall(&self) -> anyhow::Result<()> {
        match self.command(&["FLUSHALL"])? {
            Reply::Status(status) if status == "OK" => Ok(()),
            other => anyhow::bail!("FLUSHALL answered {other:?}"),
        }
    }

    /// Sends one command over a new connection and reads its reply (bounded by timeouts).
    /// A refusal by the server is `Ok(Reply::Error(…))`; only I/O and protocol problems fail.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<Reply> {
        send_command(self.port, args)
    }

    /// Spawns the server on `self.port` and waits until it answers `PING`.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = append_log(&self.dir_path.join(LOG_FILE))?;
        let mut command = Command::new(&self.binary);
        command
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir_path)
            .args(["--daemonize", "no", "--logfile", ""])
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("redis log file")?)
            .stderr(log);
        let name = format!("redis-{}", self.port);
        let process = Supervised::spawn(&name, command, libc::SIGKILL, None)?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = process.wait(Duration::ZERO) {
                anyhow::bail!(
                    "redis-server ({}) on port {} exited during start ({status:?}):\n{}",
                    self.binary.display(),
                    self.port,
                    tail(&self.log(), 30)
                );
            }
            if matches!(send_command(self.port, &["PING"]), Ok(Reply::Status(pong)) if pong == "PONG") {
                self.process = Some(process);
                return Ok(());
            }
            if Instant::now() > deadline {
                drop(process);
                anyhow::bail!(
                    "redis-server on port {} did not answer PING within {START_DEADLINE:?}:\n{}",
                    self.port,
                    tail(&self.log(), 30)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            eprintln!("ganglion-testkit: killing Redis: {error:#}");
        }
        if crate::server::keep_dirs()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("ganglion-testkit: kept {}", dir.keep().display());
        }
    }
}

/// `$GANGLION_TEST_REDIS_BIN`, else `redis-server` on `PATH`, else `/usr/bin/redis-server`.
fn find_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "{BIN_ENV}={} is not a file", path.display());
        return Ok(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|dir| dir.join("redis-server")).find(|c| c.is_file());
    let binary = on_path.unwrap_or_else(|| PathBuf::from(FALLBACK_BIN));
    anyhow::ensure!(
        binary.is_file(),
        "no `redis-server` on PATH or at {FALLBACK_BIN}; install the `redis-server` package or set {BIN_ENV}"
    );
    Ok(binary)
}

/// One command as a RESP array of bulk strings over a fresh connection; its reply.
fn send_command(port: u16, args: &[&str]) -> anyhow::Result<Reply> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, COMMAND_TIMEOUT)
        .with_context(|| format!("connecting to redis on port {port}"))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).with_context(|| format!("sending {:?} to redis", args.first()))?;
    read_reply(&mut BufReader::new(stream))
        .with_context(|| format!("reading redis's reply to {:?}", args.first()))
}

/// Reads one RESP2 reply (nested arrays included).
fn read_reply(reader: &mut impl std::io::BufRead) -> anyhow::Result<Reply> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.strip_suffix("\r\n").with_context(|| format!("truncated reply line {line:?}"))?;
    let (kind, rest) = line.split_at_checked(1).context("empty reply line")?;
    let number = || rest.parse::<i64>().with_context(|| format!("bad length or integer {rest:?}"));
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(number()?),
        "$" => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut bytes = vec![0; len + 2];
                reader.read_exact(&mut bytes)?;
                anyhow::ensure!(bytes.ends_with(b"\r\n"), "bulk string without CRLF");
                bytes.truncate(len);
                Reply::Bulk(Some(bytes))
            }
        },
        "*" => match usize::try_from(number()?) {
            Err(_) => Reply::Array(None),
            Ok(len) => {
                Reply::Array(Some((0..len).map(|_| read_reply(reader)).collect::<anyhow::Result<_>>()?))
            }
        },
        other => anyhow::bail!("unknown reply type {other:?}"),
    })
}

#[cfg(test)]
mod tests;
