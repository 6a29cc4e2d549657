//! A split cluster for tests: a fresh PostgreSQL database, a throwaway [`Redis`], the `master`,
//! two `sync` workers, two `client-reader`s and nginx in front, configured from `ganglion routes
//! --format nginx`. One config file describes every process, as in production. [`Cluster::haproxy`]
//! adds HAProxy, configured from `ganglion routes --format haproxy`, in front of the same processes.
//!
//! Everything lives in one temp directory: `cluster.toml`, `data/` (shared: the master writes the
//! signing key there), `redis/`, `nginx.conf` and `haproxy.cfg` (as generated) and each process's
//! `<name>.stdout.log` and `<name>.stderr.log` (appended to across restarts). Every port is a free
//! loopback port picked at start and kept for the cluster's life, so restarted processes come back
//! where clients expect them. Processes are killed by pid, never by name.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::{
    binary::{ganglion_binary, tail},
    haproxy::Haproxy,
    nginx::Nginx,
    postgres::Postgres,
    redis::Redis,
    server::{
        BUILD_DEADLINE, ConfigSettings, READY_DEADLINE, SERVER_NAME, ServerOptions, Supervised, append_log,
        blocking, config_toml, ganglion_command, keep_dirs, port_of_url, quote, read_stdout, ready_url,
        without_ganglion_env,
    },
    wait::eventually,
};

/// The name of the master process in `instance_map`.
pub(crate) const MASTER: &str = "master";
/// Every process of the cluster, `(name, role)`, in start order: the master first (it migrates
/// the database and creates the signing key), then the workers. [`Cluster::start_with`] may leave
/// out `sync2` and `reader2`.
const INSTANCES: [(&str, &str); 7] = [
    (MASTER, "master"),
    ("sync1", "sync"),
    ("sync2", "sync"),
    ("reader1", "client-reader"),
    ("reader2", "client-reader"),
    // Both keep files in `data/media`, one directory, as a shared filesystem would.
    ("media1", "media"),
    ("media2", "media"),
];
const CONFIG_FILE: &str = "cluster.toml";
/// The address nginx (and HAProxy) connect to the processes from (`proxy_bind`, `source`), their
/// one trusted proxy.
pub(crate) const NGINX_ADDRESS: &str = "127.0.0.2";
/// How long `ganglion routes --format nginx` (or `haproxy`) may take.
const ROUTES_DEADLINE: Duration = Duration::from_secs(60);
/// How long nginx (or HAProxy) may take to answer `/_matrix/client/versions` through to a worker.
const NGINX_DEADLINE: Duration = Duration::from_secs(30);

/// The federation reader and the two federation senders [`Cluster::start_federating`] adds.
const FEDERATING: [(&str, &str); 3] = [
    ("federation1", "federation-reader"),
    ("fedsender1", "federation-sender"),
    ("fedsender2", "federation-sender"),
];

/// The two pusher workers [`Cluster::start_pushing`] adds.
const PUSHING: [(&str, &str); 2] = [("pusher1", "pusher"), ("pusher2", "pusher")];

/// One process of the cluster.
struct Instance {
    name: &'static str,
    role: &'static str,
    http_port: u16,
    grpc_port: Option<u16>,
    metrics_port: u16,
    /// `None` until started and after a kill.
    process: Option<Supervised>,
}

impl Instance {
    fn running(&self) -> Option<&Supervised> {
        self.process.as_ref().filter(|process| process.is_running())
    }
}

/// A running cluster; every process it started is killed on drop (by pid).
pub struct Cluster {
    /// nginx's `http://127.0.0.1:PORT`.
    base_url: String,
    binary: PathBuf,
    database_url: String,
    options: ServerOptions,
    config: String,
    config_path: PathBuf,
    instances: Vec<Instance>,
    /// `None` only while [`Cluster::start`] runs.
    nginx: Option<Nginx>,
    /// Started by [`Cluster::haproxy`].
    haproxy: Option<Haproxy>,
    redis: Redis,
    /// A PostgreSQL of the cluster's own ([`Cluster::start_with_own_postgres`]).
    postgres: Option<Postgres>,
    /// nginx's federation port (TLS), for [`Cluster::start_federating`].
    federation_port: Option<u16>,
    /// HAProxy's federation port (TLS), once [`Cluster::haproxy`] started it on a federating cluster.
    haproxy_federation_port: Option<u16>,
    server_name: String,
    /// Declared last: removed once everything above is dead.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pids: Vec<(&str, Option<u32>)> =
            self.instances.iter().map(|i| (i.name, i.running().map(Supervised::pid))).collect();
        f.debug_struct("Cluster")
            .field("base_url", &self.base_url)
            .field("instances", &pids)
            .field("redis", &self.redis)
            .field("dir", &self.dir_path)
            .finish()
    }
}

impl Cluster {
    /// Starts a cluster on a fresh database of the shared throwaway PostgreSQL
    /// ([`Postgres::shared`]) and waits (bounded) until every process is ready and nginx answers.
    /// `options` apply to every process (`env` included).
    pub async fn start(options: ServerOptions) -> anyhow::Result<Cluster> {
        Cluster::start_on(options, false, &INSTANCES, false).await
    }

    /// Like [`Cluster::start`], plus a federation reader and two federation senders (`fedsender1`,
    /// `fedsender2`, sharing the destinations), federating as a test federation on loopback does: server name `127.0.0.1:FED_PORT`, where nginx ends federation TLS (a
    /// self-signed certificate made with `openssl`) and passes requests to `federation1`; peers'
    /// certificates not verified, loopback peers allowed.
    pub async fn start_federating(options: ServerOptions) -> anyhow::Result<Cluster> {
        let mut instances = INSTANCES.to_vec();
        instances.extend(FEDERATING);
        Cluster::start_on(options, false, &instances, true).await
    }

    /// Like [`Cluster::start`], plus two pusher workers (`pusher1`, `pusher2`) sharing the
    /// users' pushers.
    pub async fn start_pushing(options: ServerOptions) -> anyhow::Result<Cluster> {
        let mut instances = INSTANCES.to_vec();
        instances.extend(PUSHING);
        Cluster::start_on(options, false, &instances, false).await
    }

    /// `127.0.0.1:FED_PORT` of [`Cluster::start_federating`], else `localhost`.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `https://127.0.0.1:FED_PORT`: nginx's federation listener ([`Cluster::start_federating`]).
    pub fn federation_url(&self) -> Option<String> {
        self.federation_port.map(|port| format!("https://127.0.0.1:{port}"))
    }

    /// HAProxy's federation listener (TLS), on a federating cluster once [`Cluster::haproxy`]
    /// started it.
    pub fn haproxy_federation_url(&self) -> Option<String> {
        self.haproxy_federation_port.map(|port| format!("https://127.0.0.1:{port}"))
    }

    /// Like [`Cluster::start`], with `sync_workers` `sync` workers and `client_readers`
    /// `client-reader`s (1 or 2 each; [`Cluster::start`] runs 2 of each), and `pushers` pusher
    /// workers (0 to 2). nginx's upstreams hold only the processes that exist, so with one sync
    /// worker every `/sync` goes to `sync1`.
    pub async fn start_with(
        options: ServerOptions,
        sync_workers: usize,
        client_readers: usize,
        pushers: usize,
    ) -> anyhow::Result<Cluster> {
        let instances = layout(sync_workers, client_readers, pushers)?;
        Cluster::start_on(options, false, &instances, false).await
    }

    /// Like [`Cluster::start`], on a PostgreSQL of its own (see [`Cluster::own_postgres`]), for
    /// tests that stop the database.
    pub async fn start_with_own_postgres(options: ServerOptions) -> anyhow::Result<Cluster> {
        Cluster::start_on(options, true, &INSTANCES, false).await
    }

    async fn start_on(
        mut options: ServerOptions,
        own_postgres: bool,
        layout: &[(&'static str, &'static str)],
        federating: bool,
    ) -> anyhow::Result<Cluster> {
        let binary =
            blocking(BUILD_DEADLINE, "locating or building the ganglion binary", ganglion_binary).await?;
        let dir = tempfile::Builder::new().prefix("ganglion-cluster-").tempdir().context("temp dir")?;
        let dir_path = dir.path().to_path_buf();
        fs::create_dir_all(dir_path.join("data")).context("creating the data dir")?;

        let (postgres, database_url) = if own_postgres {
            let postgres = blocking(READY_DEADLINE, "starting a PostgreSQL cluster", Postgres::start).await?;
            let database_url = postgres.create_database()?;
            (Some(postgres), database_url)
        } else {
            let database_url = blocking(READY_DEADLINE, "provisioning a PostgreSQL database", || {
                Postgres::shared()?.create_database()
            })
            .await?;
            (None, database_url)
        };
        let redis_dir = dir_path.join("redis");
        let redis = blocking(READY_DEADLINE, "starting Redis", move || Redis::start_in(&redis_dir)).await?;

        let mut ports = crate::ports::free_ports(2 * layout.len() + 3)?;
        let spare_port = ports.pop().context("ports")?;
        let load_balancer_port = ports.pop().context("ports")?;
        let grpc_port = ports.pop().context("ports")?;
        let metrics_ports = ports.split_off(layout.len());
        let instances: Vec<Instance> = layout
            .iter()
            .zip(ports)
            .zip(metrics_ports)
            .map(|((&(name, role), http_port), metrics_port)| Instance {
                name,
                role,
                http_port,
                grpc_port: (name == MASTER).then_some(grpc_port),
                metrics_port,
                process: None,
            })
            .collect();

        let federation_port = federating.then_some(spare_port);
        let server_name = match federation_port {
            Some(port) => {
                let (certificate, key) = (dir_path.join("federation.crt"), dir_path.join("federation.key"));
                self_signed_certificate(&certificate, &key)?;
                options.extra_toml = format!(
                    "{}\n[federation]\nlisten = \"127.0.0.1:{port}\"\ntls_certificate = {}\ntls_private_key = {}\n\
                     verify_certificates = false\nallowed_address_ranges = [\"127.0.0.0/8\", \"::1/128\"]\n",
                    options.extra_toml,
                    quote(&certificate.to_string_lossy()),
                    quote(&key.to_string_lossy()),
                );
                format!("127.0.0.1:{port}")
            }
            None => SERVER_NAME.to_owned(),
        };
        let data_dir = dir_path.join("data");
        let settings = ConfigSettings {
            server_name: &server_name,
            data_dir: &data_dir,
            database_url: &database_url,
            options: &options,
            trusted_proxies: &[NGINX_ADDRESS],
        };
        let config = config_toml(&settings, None, &topology(&redis.url(), load_balancer_port, &instances));
        let config_path = dir_path.join(CONFIG_FILE);
        fs::write(&config_path, &config).with_context(|| format!("writing {}", config_path.display()))?;

        let mut cluster = Cluster {
            base_url: String::new(),
            binary,
            database_url,
            options,
            config,
            config_path,
            instances,
            nginx: None,
            haproxy: None,
            redis,
            postgres,
            federation_port,
            haproxy_federation_port: None,
            server_name,
            dir: Some(dir),
            dir_path,
        };
        // From here on, a failure drops `cluster`, which kills whatever it started.
        cluster.start_all_ganglion().await?;
        let nginx_config = cluster.load_balancer_config("nginx", &[]).await?;
        // nginx reaches the processes from an address of its own, as in production, so that
        // trusting it (`http.trusted_proxies`) does not also trust the tests' clients on 127.0.0.1.
        let proxy = "proxy_http_version 1.1;";
        anyhow::ensure!(nginx_config.contains(proxy), "no `{proxy}` in the generated nginx config");
        let nginx_config =
            nginx_config.replace(proxy, &format!("{proxy}\n        proxy_bind {NGINX_ADDRESS};"));
        let nginx = Nginx::start(&nginx_config).with_context(|| {
            format!(
                "starting nginx with the generated config ({})",
                cluster.dir_path.join("nginx.conf").display()
            )
        })?;
        cluster.base_url = nginx.base_url().trim_end_matches('/').to_owned();
        cluster.nginx = Some(nginx);
        cluster.wait_for_load_balancer(&cluster.base_url, "nginx.conf").await?;
        Ok(cluster)
    }

    /// Puts HAProxy in front of the same processes, beside nginx, and waits (bounded) until a
    /// request through it reaches a worker; its `http://127.0.0.1:PORT`. The config is what
    /// `ganglion routes --format haproxy --config cluster.toml` prints, with `load_balancer.listen`
    /// overridden to a free port of its own (nginx has the configured one), saved as `haproxy.cfg`
    /// in the cluster's directory. Started once: a second call returns the same URL. Stopped with
    /// the cluster, or by [`Cluster::stop_haproxy`].
    pub async fn haproxy(&mut self) -> anyhow::Result<String> {
        if let Some(haproxy) = &self.haproxy {
            return Ok(haproxy.base_url());
        }
        let listen = format!("127.0.0.1:{}", crate::ports::free_port()?);
        let mut env = vec![("GANGLION_LOAD_BALANCER__LISTEN", listen.clone())];
        if self.federation_port.is_some() {
            // Beside nginx's federation listener, on a port of its own; HAProxy reads the key
            // from `<certificate>.key`.
            let port = crate::ports::free_port()?;
            env.push(("GANGLION_FEDERATION__LISTEN", format!("127.0.0.1:{port}")));
            fs::copy(self.dir_path.join("federation.key"), self.dir_path.join("federation.crt.key"))
                .context("copying the federation key for HAProxy")?;
            self.haproxy_federation_port = Some(port);
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
        let text = self.load_balancer_config("haproxy", &env).await?;
        anyhow::ensure!(
            text.contains(&format!("bind {listen}")),
            "the HAProxy config does not bind {listen}"
        );
        // As for nginx: the processes trust the proxy's own address, not the clients'.
        anyhow::ensure!(
            text.contains("\ndefaults\n"),
            "no `defaults` section in the generated HAProxy config"
        );
        let text = text.replacen("\ndefaults\n", &format!("\ndefaults\n    source {NGINX_ADDRESS}\n"), 1);
        let haproxy = Haproxy::start(&text).with_context(|| {
            format!(
                "starting HAProxy with the generated config ({})",
                self.dir_path.join("haproxy.cfg").display()
            )
        })?;
        let base_url = haproxy.base_url();
        self.haproxy = Some(haproxy);
        self.wait_for_load_balancer(&base_url, "haproxy.cfg").await?;
        Ok(base_url)
    }

    /// Stops the HAProxy of [`Cluster::haproxy`] (a no-op without one).
    pub fn stop_haproxy(&mut self) {
        self.haproxy = None;
    }

    /// nginx's `http://127.0.0.1:PORT`: where clients go.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `http://127.0.0.1:PORT` of one process, bypassing nginx (whether it runs or not).
    ///
    /// # Panics
    /// If the cluster has no process `name` (see [`Cluster::instance_names`]).
    pub fn url_of(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.instance(name).http_port)
    }

    /// `http://127.0.0.1:PORT` of one process's metrics listener (`/metrics`, `/health`,
    /// `/ready`).
    ///
    /// # Panics
    /// If the cluster has no process `name`.
    pub fn metrics_url_of(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.instance(name).metrics_port)
    }

    /// The role (`master`, `sync`, `client-reader`) of process `name`, as in
    /// `X-Ganglion-Instance: <role>/<name>`.
    ///
    /// # Panics
    /// If the cluster has no process `name`.
    pub fn role_of(&self, name: &str) -> &'static str {
        self.instance(name).role
    }

    /// The process id of `name`, `None` when it is not running.
    ///
    /// # Panics
    /// If the cluster has no process `name`.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        self.instance(name).running().map(Supervised::pid)
    }

    /// Takes `instance_map.<name>` out of `cluster.toml` (the process keeps running until
    /// killed) and answers the section taken out; send [`Cluster::hangup`] to the others for them
    /// to see it.
    pub fn remove_from_config(&mut self, name: &str) -> anyhow::Result<String> {
        let header = format!("[instance_map.{name}]");
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        let mut skipping = false;
        for line in self.config.lines() {
            if line.starts_with('[') {
                skipping = line.trim() == header;
            }
            if skipping {
                removed.push(line);
            } else {
                kept.push(line);
            }
        }
        anyhow::ensure!(!removed.is_empty(), "no {header} in the config");
        let removed = removed.join("\n") + "\n";
        self.config = kept.join("\n") + "\n";
        fs::write(&self.config_path, &self.config)
            .with_context(|| format!("writing {}", self.config_path.display()))?;
        Ok(removed)
    }

    /// Adds `lines` to the start of `[section]` of `cluster.toml`; send [`Cluster::hangup`] to
    /// the processes for them to see it.
    pub fn add_to_section(&mut self, section: &str, lines: &str) -> anyhow::Result<()> {
        let header = format!("[{section}]\n");
        let at = self.config.find(&header).with_context(|| format!("no {header} in the config"))?;
        self.config.insert_str(at + header.len(), &format!("{}\n", lines.trim_end()));
        fs::write(&self.config_path, &self.config)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    /// Puts a section [`Cluster::remove_from_config`] took out back at the end of `cluster.toml`.
    pub fn add_to_config(&mut self, section: &str) -> anyhow::Result<()> {
        self.config.push_str(section);
        fs::write(&self.config_path, &self.config)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    /// SIGHUP to process `name`: it reads the config file again.
    pub fn hangup(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid_of(name).with_context(|| format!("{name} is not running"))?;
        let pid = i32::try_from(pid)?;
        // SAFETY: kill(2) with the pid of a process this cluster started and a valid signal.
        anyhow::ensure!(unsafe { libc::kill(pid, libc::SIGHUP) } == 0, "SIGHUP to {name} ({pid}) failed");
        Ok(())
    }

    /// Every process name, in start order: `master`, `sync1`, `sync2`, `reader1`, `reader2` (fewer
    /// after [`Cluster::start_with`]).
    pub fn instance_names(&self) -> Vec<&'static str> {
        self.instances.iter().map(|instance| instance.name).collect()
    }

    /// SIGKILL (a crash) of process `name` and wait until it is reaped; a no-op if it is not running.
    ///
    /// # Panics
    /// If the cluster has no process `name`, or the process outlives SIGKILL by seconds.
    pub fn kill(&mut self, name: &str) {
        let index = self.index_of(name).unwrap_or_else(|error| panic!("{error:#}"));
        if let Some(process) = self.instances[index].process.take() {
            process.kill().unwrap_or_else(|error| panic!("{error:#}"));
        }
    }

    /// Starts process `name` (stopped or killed before) with the same config and port, and waits
    /// (bounded) for its ready line. Fails if it is running.
    pub async fn start_instance(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self.index_of(name)?;
        if let Some(process) = self.instances[index].running() {
            anyhow::bail!("{name} is already running (pid {})", process.pid());
        }
        self.instances[index].process = None;
        let (role, port) = (self.instances[index].role, self.instances[index].http_port);
        let stderr = append_log(&self.stderr_path(name))?;
        let stdout_log = append_log(&self.dir_path.join(format!("{name}.stdout.log")))?;
        let command = ganglion_command(
            &self.binary,
            &self.config_path,
            Some(name),
            &self.dir_path,
            &self.options.env,
            stderr,
        );
        let (ready_tx, ready_rx) = oneshot::channel();
        let process = Supervised::spawn(
            &format!("ganglion-{name}"),
            command,
            libc::SIGKILL,
            Some(Box::new(move |stdout| read_stdout(stdout, stdout_log, ready_tx))),
        )?;
        let problem = match ready_url(ready_rx).await {
            Ok(url) if port_of_url(&url) == Some(port) => {
                self.instances[index].process = Some(process);
                return Ok(());
            }
            Ok(url) => format!("its ready line says {url}, not port {port}"),
            Err(problem) => match process.exited_within(Duration::from_secs(1)).await {
                Some(Ok(status)) => format!("{problem}; {status}"),
                _ => problem,
            },
        };
        drop(process);
        anyhow::bail!(
            "ganglion {name} ({role}, {}) did not start: {problem}\n--- {} ---\n{}\n--- {name}.stderr.log (tail) ---\n{}",
            self.binary.display(),
            self.config_path.display(),
            self.config,
            tail(&self.stderr_log(name), 60)
        )
    }

    /// [`Cluster::kill`] then [`Cluster::start_instance`]: a crash and a restart on the same port.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self.index_of(name)?;
        if let Some(process) = self.instances[index].process.take() {
            process.kill()?;
        }
        self.start_instance(name).await
    }

    /// SIGKILL every `ganglion` process at once and wait until each is reaped. Redis, nginx and
    /// PostgreSQL keep running.
    pub fn kill_all_ganglion(&mut self) -> anyhow::Result<()> {
        let processes: Vec<Supervised> = self.instances.iter_mut().filter_map(|i| i.process.take()).collect();
        for process in &processes {
            process.signal(libc::SIGKILL);
        }
        processes.iter().try_for_each(Supervised::kill)
    }

    /// Kills every `ganglion` process (SIGKILL) and starts them all again, in start order, on the
    /// same ports; waits until each is ready.
    pub async fn restart_all_ganglion(&mut self) -> anyhow::Result<()> {
        self.kill_all_ganglion()?;
        self.start_all_ganglion().await
    }

    /// SIGTERM to process `name` and its exit status once it exits within `deadline` (it is
    /// SIGKILLed after that, and this fails).
    pub async fn terminate(&mut self, name: &str, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let index = self.index_of(name)?;
        let process =
            self.instances[index].process.take().with_context(|| format!("{name} is not running"))?;
        process.terminate(deadline).await
    }

    /// SIGTERM to every running `ganglion` process at once; each one's exit status, in start order.
    /// Fails (after waiting for all of them) if one outlives `deadline`; it is SIGKILLed.
    pub async fn terminate_all_ganglion(
        &mut self,
        deadline: Duration,
    ) -> anyhow::Result<Vec<(String, ExitStatus)>> {
        let processes: Vec<(&'static str, Supervised)> = self
            .instances
            .iter_mut()
            .filter_map(|i| i.process.take().filter(Supervised::is_running).map(|p| (i.name, p)))
            .collect();
        for (_, process) in &processes {
            process.signal(libc::SIGTERM);
        }
        let end = Instant::now() + deadline;
        let mut statuses = Vec::new();
        let mut failures = Vec::new();
        for (name, process) in &processes {
            match process.exit_status_within(end.saturating_duration_since(Instant::now())).await {
                Ok(status) => statuses.push(((*name).to_owned(), status)),
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        anyhow::ensure!(failures.is_empty(), "after SIGTERM: {}", failures.join("; "));
        Ok(statuses)
    }

    /// The cluster's Redis, to stop, kill, flush or restart it.
    pub fn redis(&mut self) -> &mut Redis {
        &mut self.redis
    }

    /// The cluster's nginx.
    pub fn nginx(&mut self) -> &mut Nginx {
        self.nginx.as_mut().expect("nginx runs once Cluster::start has returned")
    }

    /// The PostgreSQL of [`Cluster::start_with_own_postgres`] (`None` on the shared one).
    pub fn own_postgres(&self) -> Option<&Postgres> {
        self.postgres.as_ref()
    }

    /// `database.url` of every process.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The cluster's temp directory.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The config file every process runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Everything process `name` wrote to stderr so far (across restarts).
    pub fn stderr_log(&self, name: &str) -> String {
        fs::read_to_string(self.stderr_path(name)).unwrap_or_default()
    }

    /// Every process's stderr log, one after another, each under a `--- <name> ---` line.
    pub fn stderr_logs(&self) -> String {
        let mut all = String::new();
        for instance in &self.instances {
            let _ = writeln!(all, "--- {} ---\n{}", instance.name, self.stderr_log(instance.name));
        }
        all
    }

    pub(crate) fn binary(&self) -> &Path {
        &self.binary
    }

    pub(crate) fn options(&self) -> &ServerOptions {
        &self.options
    }

    fn stderr_path(&self, name: &str) -> PathBuf {
        self.dir_path.join(format!("{name}.stderr.log"))
    }

    fn index_of(&self, name: &str) -> anyhow::Result<usize> {
        self.instances.iter().position(|instance| instance.name == name).with_context(|| {
            format!("the cluster has no process named {name:?} (it has {:?})", self.instance_names())
        })
    }

    fn instance(&self, name: &str) -> &Instance {
        match self.index_of(name) {
            Ok(index) => &self.instances[index],
            Err(error) => panic!("{error:#}"),
        }
    }

    /// Starts every process that is not running, in start order.
    async fn start_all_ganglion(&mut self) -> anyhow::Result<()> {
        for name in self.instance_names() {
            if self.pid_of(name).is_none() {
                self.start_instance(name).await?;
            }
        }
        Ok(())
    }

    /// Runs `ganglion routes --format <format> --config cluster.toml` (bounded; `env` on top of
    /// the processes' own variables); its output, also saved in the cluster's directory as
    /// `nginx.conf` or `haproxy.cfg`.
    async fn load_balancer_config(&self, format: &str, env: &[(&str, &str)]) -> anyhow::Result<String> {
        let file = if format == "haproxy" { "haproxy.cfg" } else { "nginx.conf" };
        let output_path = self.dir_path.join(file);
        let stderr_path = self.dir_path.join("routes.stderr.log");
        let output =
            fs::File::create(&output_path).with_context(|| format!("creating {}", output_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args(["routes", "--format", format, "--config"])
            .arg(&self.config_path)
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(append_log(&stderr_path)?);
        without_ganglion_env(&mut command);
        // The same overrides as the processes, so the proxy agrees with them (body size, listeners).
        command.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        command.envs(env.iter().copied());
        let mut child =
            command.spawn().with_context(|| format!("spawning {} routes", self.binary.display()))?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for `ganglion routes`")? {
                break status;
            }
            if started.elapsed() > ROUTES_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "`ganglion routes --format {format}` did not finish within {ROUTES_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        anyhow::ensure!(
            status.success(),
            "`{} routes --format {format} --config {}` failed ({status}):\n{}",
            self.binary.display(),
            self.config_path.display(),
            tail(&stderr, 30)
        );
        let text =
            fs::read_to_string(&output_path).with_context(|| format!("reading {}", output_path.display()))?;
        anyhow::ensure!(!text.trim().is_empty(), "`ganglion routes --format {format}` printed nothing");
        Ok(text)
    }

    /// Waits (bounded) until a request through the load balancer at `base_url` (configured by
    /// `file` in the cluster's directory) reaches a worker.
    async fn wait_for_load_balancer(&self, base_url: &str, file: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let url = format!("{base_url}/_matrix/client/versions");
        let last = std::sync::Mutex::new(String::from("no answer yet"));
        let what = format!("{base_url} ({file}) to answer /_matrix/client/versions");
        let reached = eventually(NGINX_DEADLINE, &what, || {
            let request = http.get(&url).send();
            let last = &last;
            async move {
                let problem = match request.await {
                    Ok(response) if response.status().is_success() => return Ok(Some(())),
                    Ok(response) => format!("status {}", response.status()),
                    Err(error) => error.to_string(),
                };
                *last.lock().unwrap_or_else(|p| p.into_inner()) = problem;
                Ok(None)
            }
        })
        .await;
        reached.map_err(|error| {
            let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            anyhow::anyhow!(
                "{error:#} (last: {last})\n--- {} ---\n{}",
                self.dir_path.join(file).display(),
                tail(&fs::read_to_string(self.dir_path.join(file)).unwrap_or_default(), 40)
            )
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.kill_all_ganglion() {
            eprintln!("ganglion-testkit: killing the cluster: {error:#}");
        }
        if std::thread::panicking() {
            for instance in &self.instances {
                eprintln!(
                    "--- ganglion {} ({}, {}) stderr (tail) ---\n{}\n---",
                    instance.name,
                    instance.role,
                    self.url_of(instance.name),
                    tail(&self.stderr_log(instance.name), 40)
                );
            }
            if let Some(haproxy) = &self.haproxy {
                eprintln!("--- HAProxy stderr (tail) ---\n{}\n---", tail(&haproxy.stderr(), 40));
            }
        }
        if keep_dirs()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("ganglion-testkit: kept {}", dir.keep().display());
        }
    }
}

/// The processes of a cluster with `sync_workers` sync workers and `client_readers`
/// client-readers, in start order: a subset of [`INSTANCES`].
fn layout(
    sync_workers: usize,
    client_readers: usize,
    pushers: usize,
) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    anyhow::ensure!(
        (1..=2).contains(&sync_workers) && (1..=2).contains(&client_readers) && pushers <= 2,
        "a test cluster has 1 or 2 sync workers, 1 or 2 client-readers and up to 2 pushers, not \
         {sync_workers}, {client_readers} and {pushers}"
    );
    Ok(INSTANCES
        .into_iter()
        .filter(|&(name, _)| {
            !(name == "sync2" && sync_workers < 2 || name == "reader2" && client_readers < 2)
        })
        .chain(PUSHING.into_iter().take(pushers))
        .collect())
}

/// A self-signed certificate for 127.0.0.1, by the `openssl` command.
pub fn self_signed_certificate(certificate: &Path, key: &Path) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(certificate)
        .output()
        .context("running openssl (Debian package openssl)")?;
    anyhow::ensure!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The cluster's own tables: `[redis]`, `[load_balancer]` and the `instance_map`.
fn topology(redis_url: &str, load_balancer_port: u16, instances: &[Instance]) -> String {
    let mut toml = String::new();
    let _ = writeln!(toml, "\n[redis]\nurl = {}", quote(redis_url));
    let _ = writeln!(toml, "\n[load_balancer]\nlisten = \"127.0.0.1:{load_balancer_port}\"");
    for instance in instances {
        let _ = writeln!(
            toml,
            "\n[instance_map.{}]\nrole = {}\nhttp = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"",
            instance.name,
            quote(instance.role),
            instance.http_port,
            instance.metrics_port
        );
        if let Some(grpc) = instance.grpc_port {
            let _ = writeln!(toml, "grpc = \"127.0.0.1:{grpc}\"");
        }
    }
    toml
}

#[cfg(test)]
mod tests;
