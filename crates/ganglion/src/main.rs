//! The `ganglion` binary: `run` starts the roles named in the config, `routes` prints the route
//! table. Everything else lives in `ganglion-app`.

use std::{io::Write, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: the server allocates many small JSON values per request, and returns large freed
/// blocks (password hashing) to the OS, which glibc's per-thread arenas keep.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ganglion", version, about = "A Matrix homeserver built as a cluster of workers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the homeserver. Without --config: the embedded default (localhost, 127.0.0.1:8008,
    /// SQLite under ./ganglion-data, open registration).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Cluster mode: which process of the config's `instance_map` this is (sets
        /// `worker.name` and takes `worker.role` from the map).
        #[arg(long)]
        worker: Option<String>,
    },
    /// Prints the route table, or an nginx or HAProxy config routing a cluster's traffic by it.
    Routes {
        #[arg(long, value_enum, default_value = "json")]
        format: RouteFormat,
        /// The cluster's config file, whose `instance_map` and `load_balancer` the nginx or
        /// HAProxy config is rendered from.
        #[arg(long, required_if_eq_any([("format", "nginx"), ("format", "haproxy")]))]
        config: Option<PathBuf>,
    },
    /// Retires the server's signing key and generates a new one. The old key's public half stays
    /// in `<signing key>.old`, served to other servers as `old_verify_keys` so what it signed
    /// still verifies. Restart every process afterwards.
    RotateSigningKey {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints the newest reports users filed about events, rooms and users, newest first, one
    /// JSON object a line.
    Reports {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RouteFormat {
    Json,
    /// A complete nginx.conf: `nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'`.
    Nginx,
    /// A complete haproxy.cfg: `haproxy -f haproxy.cfg -db` (check it with `haproxy -c -f`).
    Haproxy,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Routes { format, config } => routes(format, config),
        Command::Run { config, worker } => run(config, worker),
        Command::RotateSigningKey { config } => rotate_signing_key(config),
        Command::Reports { config, limit } => reports(config, limit),
    }
}

fn reports(config_path: Option<PathBuf>, limit: i64) -> anyhow::Result<()> {
    let config =
        ganglion_config::Config::load(config_path.as_deref()).map_err(|error| anyhow::anyhow!("{error}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reports = runtime.block_on(ganglion_app::newest_reports(&config, limit.clamp(1, 100_000)))?;
    let mut out = std::io::stdout().lock();
    for report in reports {
        writeln!(out, "{report}")?;
    }
    Ok(())
}

fn rotate_signing_key(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config =
        ganglion_config::Config::load(config_path.as_deref()).map_err(|error| anyhow::anyhow!("{error}"))?;
    let path = config.federation.signing_key_path(&config.data_dir);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let key_id = match ganglion_events::ServerKey::rotate(&path, now_ms) {
        Ok(key_id) => key_id,
        Err(error) => {
            eprintln!("ganglion: {error}");
            std::process::exit(1);
        }
    };
    writeln!(
        std::io::stdout(),
        "{}: new signing key {key_id}; the old one is kept in {}. Restart every process.",
        path.display(),
        ganglion_events::retired_path(&path).display()
    )?;
    Ok(())
}

fn routes(format: RouteFormat, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let table = ganglion_app::route_table();
    match format {
        RouteFormat::Json => writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&table)?)?,
        RouteFormat::Nginx | RouteFormat::Haproxy => {
            // clap insists on --config with both; the embedded default has no cluster to route.
            let rendered = ganglion_config::Config::load(config_path.as_deref())
                .map_err(|error| error.to_string())
                .and_then(|config| match format {
                    RouteFormat::Haproxy => {
                        ganglion_app::haproxy::haproxy_config(&config, &table).map_err(|e| e.to_string())
                    }
                    _ => ganglion_app::nginx::nginx_config(&config, &table).map_err(|e| e.to_string()),
                });
            match rendered {
                Ok(text) => std::io::stdout().write_all(text.as_bytes())?,
                Err(error) => {
                    eprintln!("ganglion: {error}");
                    std::process::exit(2);
                }
            }
        }
    }
    Ok(())
}

/// Keeps glibc's heap (still used by SQLite's C code) from holding on to memory: a fixed mmap
/// threshold returns large blocks to the OS when freed, and fewer arenas bound fragmentation.
/// Logs to stderr (filtered by `RUST_LOG`), and exports spans when `tracing.otlp_endpoint` is set.
fn init_logging(config: &ganglion_config::Config) -> anyhow::Result<Option<ganglion_telemetry::Exporter>> {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,ruma_state_res=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let traces =
        ganglion_telemetry::layer(&config.tracing, config.worker.role.as_str(), &config.worker.name)?;
    let (otel, exporter) = traces.map_or((None, None), |(layer, exporter)| (Some(layer), Some(exporter)));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).init();
    if let Some(endpoint) = &config.tracing.otlp_endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    Ok(exporter)
}

fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn run(config_path: Option<PathBuf>, worker: Option<String>) -> anyhow::Result<()> {
    tune_allocator();
    let config = match ganglion_config::Config::load_instance(config_path.as_deref(), worker.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ganglion: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Inside the runtime: the OTLP exporter's connection lives on it.
    let exporter = std::sync::Arc::new(runtime.block_on(async { init_logging(&config) })?);
    let exporting = exporter.clone();
    runtime.block_on(async move {
        // SIGINT or SIGTERM: stop accepting, finish in-flight requests, exit.
        let shutdown = async {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate => {}
            }
            // Long-polls may hold requests open for minutes; give them a moment, not forever.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                if let Some(exporter) = exporting.as_ref() {
                    exporter.flush();
                }
                std::process::exit(0);
            });
        };
        let result = ganglion_app::run(config, shutdown, |address| {
            // The one line on stdout: tools and tests wait for it.
            println!("ganglion ready http://{address}");
            let _ = std::io::stdout().flush();
        })
        .await;
        if let Err(error) = result {
            eprintln!("ganglion: {error}");
            std::process::exit(1);
        }
    });
    Ok(())
}
