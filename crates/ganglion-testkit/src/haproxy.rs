//! A throwaway HAProxy running a given config (the generated one, usually) from a fresh temp
//! dir, so load balancer tests go through the real proxy, as [`crate::Nginx`] does for nginx.
//! The config is checked with `haproxy -c` first, so a bad one fails with HAProxy's own words.
//! Stopped on drop.

use std::{
    fs,
    net::SocketAddr,
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::proxy::{Proxy, connectable, find_binary};

/// A running HAProxy, in the foreground (`-db`). Its stderr (alerts and warnings go there) is
/// kept in the temp dir for error messages.
pub struct Haproxy {
    proxy: Proxy,
}

impl std::fmt::Debug for Haproxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.proxy.debug(f, "Haproxy")
    }
}

impl Haproxy {
    /// Writes `config_text` as `haproxy.cfg` into a fresh temp dir, checks it with
    /// `haproxy -c -f <dir>/haproxy.cfg`, runs `haproxy -f <dir>/haproxy.cfg -db` and waits
    /// (bounded) until the config's first `bind` address accepts connections.
    pub fn start(config_text: &str) -> anyhow::Result<Haproxy> {
        let address = bind_address(config_text)?;
        let binary = find_binary("haproxy", "haproxy")?;
        let dir = Proxy::temp_dir("HAProxy")?;
        let cfg = dir.path().join("haproxy.cfg");
        fs::write(&cfg, config_text)?;

        let check = Command::new(&binary)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} -c", binary.display()))?;
        anyhow::ensure!(
            check.status.success(),
            "haproxy -c refuses the config ({}):\n{}{}",
            check.status,
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let mut command = Command::new(&binary);
        command.arg("-f").arg(&cfg).arg("-db").current_dir(dir.path());
        Ok(Haproxy { proxy: Proxy::start("HAProxy", dir, address, command)? })
    }

    /// `http://<bind address>`, with a wildcard address replaced by loopback.
    pub fn base_url(&self) -> String {
        self.proxy.base_url()
    }

    /// Everything HAProxy wrote to stderr so far (alerts: servers going down, and so on).
    pub fn stderr(&self) -> String {
        self.proxy.stderr()
    }

    /// Stops HAProxy (SIGTERM, then SIGKILL to its process group after a deadline). Idempotent.
    pub fn stop(&mut self) {
        self.proxy.stop();
    }
}

/// The first `bind` line's address (`host:port`, `[v6]:port`, `:port` or `*:port`), as
/// something to connect to.
fn bind_address(config_text: &str) -> anyhow::Result<SocketAddr> {
    let value = config_text
        .lines()
        .find_map(|line| line.trim().strip_prefix("bind ")?.split_whitespace().next())
        .context("the HAProxy config has no `bind` line")?;
    let value = match value.strip_prefix(':').or_else(|| value.strip_prefix("*:")) {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.replace("localhost:", "127.0.0.1:"),
    };
    let address: SocketAddr =
        value.parse().with_context(|| format!("`bind {value}` is not an address this helper understands"))?;
    Ok(connectable(address))
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;
    use crate::free_port;

    #[test]
    fn bind_address_is_read_from_the_config() {
        let address = |text| bind_address(text).unwrap().to_string();
        assert_eq!(address("frontend f\n    bind 127.0.0.1:8448\n"), "127.0.0.1:8448");
        assert_eq!(address("    bind :8080 name web"), "127.0.0.1:8080");
        assert_eq!(address("    bind *:8081"), "127.0.0.1:8081");
        assert_eq!(address("bind 0.0.0.0:81"), "127.0.0.1:81");
        assert_eq!(address("bind [::]:82"), "[::1]:82");
        assert!(bind_address("defaults\n    mode http\n").is_err());
    }

    #[test]
    fn haproxy_serves_a_config_and_stops() {
        let port = free_port();
        let config = format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             frontend f\n    bind 127.0.0.1:{port}\n    http-request return status 204\n"
        );
        let mut haproxy = Haproxy::start(&config).unwrap();
        assert_eq!(haproxy.base_url(), format!("http://127.0.0.1:{port}"));
        haproxy.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

        // `haproxy -c` catches it, and its words are in the error.
        let error = Haproxy::start(&config.replace("mode http", "no_such_keyword")).unwrap_err();
        assert!(error.to_string().contains("no_such_keyword"), "{error:#}");
    }
}
