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
    /// Prints the route table, or the nginx config that routes a cluster's traffic by it.
    Routes {
        #[arg(long, value_enum, default_value = "json")]
        format: RouteFormat,
        /// The cluster's config file, whose `instance_map` and `load_balancer` the nginx config
        /// is rendered from.
        #[arg(long, required_if_eq("format", "nginx"))]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RouteFormat {
    Json,
    /// A complete nginx.conf: `nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;'`.
    Nginx,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Routes { format, config } => routes(format, config),
        Command::Run { config, worker } => run(config, worker),
    }
}

fn routes(format: RouteFormat, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let table = ganglion_app::route_table();
    match format {
        RouteFormat::Json => writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&table)?)?,
        RouteFormat::Nginx => {
            // clap insists on --config with nginx; the embedded default has no cluster to route.
            let rendered = ganglion_config::Config::load(config_path.as_deref())
                .map_err(|error| error.to_string())
                .and_then(|config| {
                    ganglion_app::nginx::nginx_config(&config, &table).map_err(|e| e.to_string())
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,ruma_state_res=warn")),
        )
        .init();
    let config = match ganglion_config::Config::load_instance(config_path.as_deref(), worker.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ganglion: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
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
