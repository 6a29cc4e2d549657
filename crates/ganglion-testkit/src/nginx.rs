//! A throwaway nginx running a given config (the generated one, usually) from a fresh temp dir
//! as its prefix, so load balancer tests go through the real proxy. Stopped, workers included,
//! on drop.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    process::Command,
};

use anyhow::Context as _;

use crate::proxy::{Proxy, connectable, find_binary};

/// A running nginx. Its stderr (nginx logs there) is kept in the temp dir for error messages.
pub struct Nginx {
    proxy: Proxy,
}

impl std::fmt::Debug for Nginx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.proxy.debug(f, "Nginx")
    }
}

impl Nginx {
    /// Writes `config_text` as `nginx.conf` into a fresh temp dir, runs
    /// `nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'` and waits (bounded) until the
    /// config's first `listen` address accepts connections.
    pub fn start(config_text: &str) -> anyhow::Result<Nginx> {
        let address = listen_address(config_text)?;
        let dir = Proxy::temp_dir("nginx")?;
        // Started as root, nginx runs its workers as `nobody`: they must reach the temp paths.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let conf = dir.path().join("nginx.conf");
        fs::write(&conf, config_text)?;

        let mut command = Command::new(find_binary("nginx", "nginx-light")?);
        // `-e stderr`: errors before the config is read go there too, not to /var/log/nginx.
        command.arg("-p").arg(dir.path()).arg("-c").arg(&conf).args(["-e", "stderr", "-g", "daemon off;"]);
        Ok(Nginx { proxy: Proxy::start("nginx", dir, address, command)? })
    }

    /// `http://<listen address>`, with a wildcard address replaced by loopback.
    pub fn base_url(&self) -> String {
        self.proxy.base_url()
    }

    /// Stops nginx (SIGTERM, then SIGKILL to its process group after a deadline). Idempotent.
    pub fn stop(&mut self) {
        self.proxy.stop();
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
    let address: SocketAddr = match value.parse::<u16>() {
        Ok(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Err(_) => value
            .replace("localhost:", "127.0.0.1:")
            .parse()
            .with_context(|| format!("`listen {value}` is not an address this helper understands"))?,
    };
    Ok(connectable(address))
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

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
