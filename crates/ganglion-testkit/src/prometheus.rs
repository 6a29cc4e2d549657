//! A throwaway Prometheus (Debian package `prometheus`) scraping given targets every second, with
//! the given rule files, from a fresh temp dir. Killed on drop.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running Prometheus and the HTTP API it answers on.
pub struct Prometheus {
    dir: tempfile::TempDir,
    port: u16,
    process: Child,
    http: reqwest::Client,
}

impl Prometheus {
    /// Scrapes each `(instance, host:port)` in job `ganglion` every second (the instance label is
    /// the name given), evaluates `rule_files` every second, and waits (bounded) until ready.
    pub async fn start(targets: &[(String, String)], rule_files: &[PathBuf]) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new().prefix("ganglion-prometheus-").tempdir()?;
        let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for file in rule_files {
                writeln!(config, "  - {:?}", file.display().to_string())?;
            }
        }
        config.push_str("scrape_configs:\n  - job_name: ganglion\n    static_configs:\n");
        for (instance, address) in targets {
            writeln!(config, "      - targets: [{address:?}]\n        labels: {{ instance: {instance:?} }}")?;
        }
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, &config)?;
        let check = Command::new(binary()).arg("--version").output();
        anyhow::ensure!(check.is_ok(), "prometheus (Debian package prometheus) is not installed");
        let port = crate::ports::free_port()?;
        let log = fs::File::create(dir.path().join("prometheus.log"))?;
        let process = Command::new(binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let prometheus =
            Prometheus { dir, port, process, http: reqwest::Client::builder().no_proxy().build()? };
        let ready = crate::wait::eventually(READY_DEADLINE, "Prometheus to be ready", || async {
            let answer = prometheus.http.get(format!("{}/-/ready", prometheus.base_url())).send().await;
            Ok(answer.ok().filter(|answer| answer.status().is_success()).map(drop))
        })
        .await;
        if let Err(error) = ready {
            anyhow::bail!("{error:#}\n{}", prometheus.log());
        }
        Ok(prometheus)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The result of an instant query (`data.result`), or the error Prometheus gave.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let answer: serde_json::Value = self
            .http
            .post(format!("{}/api/v1/query", self.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("query={}", crate::enc(expr)))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(answer["status"] == "success", "Prometheus refused {expr}: {answer}");
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /api/v1/<path>`'s `data`.
    pub async fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let answer: serde_json::Value =
            self.http.get(format!("{}/api/v1/{path}", self.base_url())).send().await?.json().await?;
        anyhow::ensure!(answer["status"] == "success", "Prometheus /api/v1/{path}: {answer}");
        Ok(answer["data"].clone())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prometheus's log, for error messages.
    pub fn log(&self) -> String {
        crate::binary::tail(
            &fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default(),
            30,
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn binary() -> PathBuf {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}
