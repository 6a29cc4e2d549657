//! A node of a test federation, started as `docs/federation.md` says: by
//! `scripts/federation-node.sh start DIR CLIENT_PORT FED_PORT` (an embedded Ganglion with server
//! name `127.0.0.1:FED_PORT`, its federation listener on TLS with a self-signed certificate), and
//! stopped by `scripts/federation-node.sh stop DIR`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{Api, binary::tail};

pub struct FederationNode {
    dir: tempfile::TempDir,
    client_port: u16,
    federation_port: u16,
    server_name: String,
    running: bool,
    http: reqwest::Client,
    /// Environment variables the node starts with (`GANGLION_<SECTION>__<KEY>` config).
    env: Vec<(String, String)>,
}

impl std::fmt::Debug for FederationNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationNode").field("server_name", &self.server_name).finish()
    }
}

impl FederationNode {
    /// Starts a node on two free loopback ports in a new temp directory.
    pub async fn start() -> anyhow::Result<FederationNode> {
        FederationNode::start_with_env(&[]).await
    }

    /// Starts a node as [`start`](Self::start) does, with `env` in its environment at each start
    /// (config keys as `GANGLION_<SECTION>__<KEY>`, as an operator sets them).
    pub async fn start_with_env(env: &[(&str, &str)]) -> anyhow::Result<FederationNode> {
        let dir = tempfile::Builder::new().prefix("ganglion-federation-").tempdir().context("temp dir")?;
        let ports = crate::ports::free_ports(2)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut node = FederationNode {
            dir,
            client_port: ports[0],
            federation_port: ports[1],
            server_name: format!("127.0.0.1:{}", ports[1]),
            running: false,
            http,
            env: env.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
        };
        node.start_again().await?;
        Ok(node)
    }

    /// Starts the node again (same directory, ports, name and keys) after [`stop`](Self::stop).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let args = [
            "start".to_owned(),
            self.dir.path().display().to_string(),
            self.client_port.to_string(),
            self.federation_port.to_string(),
        ];
        script(args, self.env.clone())
            .await
            .with_context(|| format!("starting {}:\n{}", self.server_name, self.log()))?;
        self.running = true;
        Ok(())
    }

    /// Stops the node and waits until it is gone.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        script(["stop".to_owned(), self.dir.path().display().to_string()], Vec::new()).await?;
        self.running = false;
        Ok(())
    }

    /// Puts `lines` at the end of the node's config file (its last table is `[federation]`), in
    /// place of those of an earlier call, and sends the process SIGHUP, as an operator changing
    /// the allow and block lists does. The script writes the config afresh at the next start.
    pub fn reconfigure(&self, lines: &str) -> anyhow::Result<()> {
        const MARKER: &str = "# Changed while running:\n";
        let path = self.config_path();
        let config = std::fs::read_to_string(&path)?;
        let original = config.split(MARKER).next().unwrap_or_default();
        std::fs::write(&path, format!("{original}{MARKER}{lines}\n"))?;
        let pid: i32 = std::fs::read_to_string(self.dir.path().join("ganglion.pid"))?.trim().parse()?;
        // SAFETY: kill(2) with a pid read from the node's pid file and a valid signal number.
        anyhow::ensure!(unsafe { libc::kill(pid, libc::SIGHUP) } == 0, "SIGHUP to {pid} failed");
        Ok(())
    }

    /// The running node's process id, from the script's pid file.
    pub fn pid(&self) -> anyhow::Result<u32> {
        Ok(std::fs::read_to_string(self.dir.path().join("ganglion.pid"))?.trim().parse()?)
    }

    /// `127.0.0.1:FED_PORT`.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The client API (plain HTTP).
    pub fn client_api(&self) -> Api {
        Api::new(format!("http://127.0.0.1:{}", self.client_port))
    }

    /// `https://127.0.0.1:FED_PORT` (a self-signed certificate).
    pub fn federation_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.federation_port)
    }

    /// An HTTP client that accepts the node's self-signed certificate.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the script wrote.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ganglion.toml")
    }

    /// The end of the node's log.
    pub fn log(&self) -> String {
        tail(&std::fs::read_to_string(self.dir.path().join("ganglion.log")).unwrap_or_default(), 60)
    }
}

impl Drop for FederationNode {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("bash")
                .arg(crate::binary::workspace_root().join("scripts/federation-node.sh"))
                .args(["stop".as_ref(), self.dir.path().as_os_str()])
                .output();
        }
    }
}

/// Runs `scripts/federation-node.sh ARGS` with the testkit's `ganglion` binary.
async fn script<const N: usize>(args: [String; N], env: Vec<(String, String)>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let binary = crate::ganglion_binary()?;
        let output = Command::new("bash")
            .arg(crate::binary::workspace_root().join("scripts/federation-node.sh"))
            .args(&args)
            .env("GANGLION_BIN", binary)
            .envs(env)
            .output()
            .context("running scripts/federation-node.sh")?;
        anyhow::ensure!(
            output.status.success(),
            "scripts/federation-node.sh {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    })
    .await?
}
