//! A throwaway nginx running a given config (the generated one, usually) from a fresh temp dir
//! as its prefix, so load balancer tests go through the real proxy. Stopped, workers included,
//! on drop.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

const READY_DEADLINE: Duration = Duration::from_secs(10);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A running nginx. Its stderr (nginx logs there) is kept in the temp dir for error messages.
pub struct Nginx {
    dir: tempfile::TempDir,
    address: SocketAddr,
    pid: u32,
    /// The exit status, sent by the thread that spawned nginx and waits on it.
    exit: mpsc::Receiver<std::io::Result<ExitStatus>>,
    exited: bool,
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nginx").field("address", &self.address).field("pid", &self.pid).finish()
    }
}

impl Nginx {
    /// Writes `config_text` as `nginx.conf` into a fresh temp dir, runs
    /// `nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'` and waits (bounded) until the
    /// config's first `listen` address accepts connections.
    pub fn start(config_text: &str) -> anyhow::Result<Nginx> {
        let address = listen_address(config_text)?;
        // `GANGLION_TESTKIT_KEEP=1` keeps the directory (config, stderr.log), as for every process here.
        let keep = std::env::var("GANGLION_TESTKIT_KEEP").is_ok_and(|v| v == "1");
        let dir = tempfile::Builder::new().prefix("ganglion-nginx-").disable_cleanup(keep).tempdir()?;
        if keep {
            eprintln!("ganglion-testkit: keeping nginx's directory {}", dir.path().display());
        }
        // Started as root, nginx runs its workers as `nobody`: they must reach the temp paths.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let conf = dir.path().join("nginx.conf");
        fs::write(&conf, config_text)?;
        let stderr = fs::File::create(dir.path().join("stderr.log"))?;

        let mut command = Command::new(nginx_binary()?);
        // `-e stderr`: errors before the config is read go there too, not to /var/log/nginx.
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group, so a stuck master can be killed together with its workers.
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // SIGTERM makes the master stop its workers too, should the test process die
                // without dropping us.
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
        // nginx and lives as long as it does.
        let (started_tx, started_rx) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel();
        std::thread::Builder::new().name("ganglion-testkit-nginx".into()).spawn(move || {
            match command.spawn() {
                Ok(mut child) => {
                    let _ = started_tx.send(Ok(child.id()));
                    let _ = exit_tx.send(child.wait());
                }
                Err(error) => {
                    let _ = started_tx.send(Err(error));
                }
            }
        })?;
        let pid = started_rx.recv().context("the thread spawning nginx died")?.context("spawning nginx")?;
        let mut nginx = Nginx { dir, address, pid, exit, exited: false };

        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(status) = nginx.exit.try_recv() {
                nginx.exited = true;
                anyhow::bail!("nginx exited ({status:?}) before listening on {address}:\n{}", nginx.stderr());
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                nginx.stop();
                anyhow::bail!(
                    "nginx did not listen on {address} within {READY_DEADLINE:?}:\n{}",
                    nginx.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://<listen address>`, with a wildcard address replaced by loopback.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops nginx (SIGTERM, then SIGKILL to its process group after a deadline). Idempotent.
    pub fn stop(&mut self) {
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

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on right now (see `ports`).
pub fn free_port() -> u16 {
    crate::ports::free_port().expect("finding a free port")
}

/// The first `listen` directive's address (`host:port` or a bare port), as something to connect to.
fn listen_address(config_text: &str) -> anyhow::Result<SocketAddr> {
    let value = config_text
        .lines()
        .find_map(|line| line.trim().strip_prefix("listen ")?.split([' ', ';']).find(|part| !part.is_empty()))
        .context("the nginx config has no `listen` directive")?;
    let mut address: SocketAddr = match value.parse::<u16>() {
        Ok(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Err(_) => value
            .replace("localhost:", "127.0.0.1:")
            .parse()
            .with_context(|| format!("`listen {value}` is not an address this helper understands"))?,
    };
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    Ok(address)
}

/// `nginx` on `PATH`, else Debian's `/usr/sbin/nginx` (`/usr/sbin` is not on every user's `PATH`).
fn nginx_binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("nginx")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .context("nginx not found on PATH or at /usr/sbin/nginx (apt-get install nginx-light)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_is_read_from_the_config() {
        let address = |text| listen_address(text).unwrap().to_string();
        assert_eq!(address("server {\n    listen 127.0.0.1:8448;\n}"), "127.0.0.1:8448");
        assert_eq!(address("    listen 8080 default_server;"), "127.0.0.1:8080");
        assert_eq!(address("listen 0.0.0.0:81;"), "127.0.0.1:81");
        assert_eq!(address("listen [::]:82;"), "[::1]:82");
        assert!(listen_address("events {}").is_err());
    }

    #[test]
    fn nginx_serves_a_config_and_stops() {
        let port = free_port();
        let config = format!(
            "pid nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n    access_log off;\n    \
             client_body_temp_path client_body_temp;\n    proxy_temp_path proxy_temp;\n    \
             fastcgi_temp_path fastcgi_temp;\n    uwsgi_temp_path uwsgi_temp;\n    scgi_temp_path scgi_temp;\n    \
             server {{\n        listen 127.0.0.1:{port};\n        return 204;\n    }}\n}}\n"
        );
        let mut nginx = Nginx::start(&config).unwrap();
        assert_eq!(nginx.base_url(), format!("http://127.0.0.1:{port}"));
        nginx.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

        let error = Nginx::start(&config.replace("return 204;", "no_such_directive;")).unwrap_err();
        assert!(error.to_string().contains("no_such_directive"), "{error:#}");
    }
}
