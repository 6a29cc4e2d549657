//! What [`crate::Nginx`] and [`crate::Haproxy`] share: a throwaway proxy process run from a fresh
//! temp dir, waited for (bounded) until its address accepts connections, stopped on drop, with
//! its stderr kept in the temp dir for error messages.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

const READY_DEADLINE: Duration = Duration::from_secs(10);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A running proxy process (in its own process group), stopped on drop.
pub(crate) struct Proxy {
    dir: tempfile::TempDir,
    address: SocketAddr,
    pid: u32,
    /// The exit status, sent by the thread that spawned the proxy and waits on it.
    exit: mpsc::Receiver<std::io::Result<ExitStatus>>,
    exited: bool,
}

impl Proxy {
    /// A fresh temp dir `ganglion-<name in lower case>-…` for the proxy `name`.
    /// `GANGLION_TESTKIT_KEEP=1` keeps the directory (config, stderr.log), as for every process here.
    pub(crate) fn temp_dir(name: &str) -> anyhow::Result<tempfile::TempDir> {
        let keep = std::env::var("GANGLION_TESTKIT_KEEP").is_ok_and(|v| v == "1");
        let prefix = format!("ganglion-{}-", name.to_lowercase());
        let dir = tempfile::Builder::new().prefix(&prefix).disable_cleanup(keep).tempdir()?;
        if keep {
            eprintln!("ganglion-testkit: keeping {name}'s directory {}", dir.path().display());
        }
        Ok(dir)
    }

    /// Runs `command` (its arguments and working directory set by the caller) with no stdin or
    /// stdout, stderr to `<dir>/stderr.log`, in its own process group and with SIGTERM as its
    /// parent-death signal, then waits (bounded) until `address` accepts connections.
    pub(crate) fn start(
        name: &str,
        dir: tempfile::TempDir,
        address: SocketAddr,
        mut command: Command,
    ) -> anyhow::Result<Proxy> {
        let stderr = fs::File::create(stderr_log(dir.path()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group, so whatever it starts (nginx's workers) is killed with it.
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // SIGTERM (HAProxy's hard stop; nginx's master stops its workers too) should the
                // test process die without dropping us.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }

        // The parent-death signal follows the spawning thread, so a thread of our own spawns
        // the proxy and lives as long as it does.
        let (started_tx, started_rx) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel();
        let thread = format!("ganglion-testkit-{}", name.to_lowercase());
        std::thread::Builder::new().name(thread).spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(child.id()));
                let _ = exit_tx.send(child.wait());
            }
            Err(error) => {
                let _ = started_tx.send(Err(error));
            }
        })?;
        let pid = started_rx
            .recv()
            .with_context(|| format!("the thread spawning {name} died"))?
            .with_context(|| format!("spawning {name}"))?;
        let mut proxy = Proxy { dir, address, pid, exit, exited: false };

        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(status) = proxy.exit.try_recv() {
                proxy.exited = true;
                anyhow::bail!(
                    "{name} exited ({status:?}) before listening on {address}:\n{}",
                    proxy.stderr()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(proxy);
            }
            if Instant::now() > deadline {
                proxy.stop();
                anyhow::bail!(
                    "{name} did not listen on {address} within {READY_DEADLINE:?}:\n{}",
                    proxy.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `f.debug_struct(type_name)` with the address and pid.
    pub(crate) fn debug(&self, f: &mut std::fmt::Formatter<'_>, type_name: &str) -> std::fmt::Result {
        f.debug_struct(type_name).field("address", &self.address).field("pid", &self.pid).finish()
    }

    /// `http://<address>`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Everything the proxy wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        fs::read_to_string(stderr_log(self.dir.path())).unwrap_or_default()
    }

    /// Stops the proxy (SIGTERM, then SIGKILL to its process group after a deadline). Idempotent.
    pub(crate) fn stop(&mut self) {
        if self.exited {
            return;
        }
        // SAFETY: plain syscalls on our own child, not reaped until `exit` reports it, so
        // neither the pid nor its process group can have been reused.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        if self.exit.recv_timeout(STOP_DEADLINE).is_err() {
            unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
            let _ = self.exit.recv_timeout(STOP_DEADLINE);
        }
        self.exited = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stderr_log(dir: &Path) -> PathBuf {
    dir.join("stderr.log")
}

/// `address` with a wildcard IP replaced by loopback, as something to connect to.
pub(crate) fn connectable(mut address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    address
}

/// `binary` on `PATH`, else Debian's `/usr/sbin/<binary>` (`/usr/sbin` is not on every user's
/// `PATH`); the error names `package`, which installs it.
pub(crate) fn find_binary(binary: &str, package: &str) -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(binary)).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([Path::new("/usr/sbin").join(binary)])
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .with_context(|| {
            format!("{binary} not found on PATH or at /usr/sbin/{binary} (apt-get install {package})")
        })
}
