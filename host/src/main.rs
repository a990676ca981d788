//! The `weir` command: reads flags and config, sets up logging, runs.

/// mimalloc: see BENCHMARKS.md section 13 for what it saves per request.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use weir::config::Scheduler;
use weir::demo::{self, DemoBackend};
use weir::{Config, Server};

/// weir: an HTTP load balancer whose balancing policies are WebAssembly
/// components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax (`info`, `weir=debug`).
    #[arg(long, env = "WEIR_LOG", default_value = "info", global = true)]
    log: String,
    /// Log line format.
    #[arg(
        long,
        env = "WEIR_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and load every plugin it names, then exit.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Start three demo backends and weir in front of them, balancing with
    /// the round-robin plugin.
    Demo {
        /// Directory holding round-robin.wasm (`cargo xtask plugins` builds it).
        #[arg(long, env = "WEIR_PLUGIN_DIR")]
        plugin_dir: PathBuf,
        /// Where weir listens.
        #[arg(long, env = "WEIR_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => weir::logging::LogFormat::Text,
        LogFormat::Json => weir::logging::LogFormat::Json,
    };
    let log = match weir::logging::init(&cli.log, format) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("weir: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match runtime_for(&cli.command) {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(error) => Err(error),
    };
    // Write out the queued log lines before the last word, so it comes last.
    drop(log);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime `command` runs on. `weir run` reads its config first for
/// `[runtime]`: with the shared scheduler, a work-stealing pool of
/// `workers` threads serves everything; per worker, the workers are
/// threads of the server's own (`weir::workers`) and this runtime keeps
/// the admin API, reloads and health checks, on one thread.
fn runtime_for(command: &Command) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = match command {
        Command::Run { config } => Config::load(config)?.runtime,
        _ => weir::config::RuntimeConfig::default(),
    };
    let built = match runtime.effective_scheduler() {
        Scheduler::Shared => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(runtime.workers.resolve())
            .enable_all()
            .build(),
        Scheduler::PerWorker => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    built.map_err(|error| anyhow::anyhow!("cannot start the async runtime: {error}"))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            let server = Server::start(config).await?;
            wait_for_signal(Some(&server)).await;
            tracing::info!("shutting down: finishing in-flight requests");
            server.shutdown(Duration::from_secs(10)).await;
            Ok(())
        }
        Command::Check { config: path } => {
            let config = Config::load(&path)?;
            let store = weir::plugin::PluginStore::new(weir::server::runtime_for(&config)?);
            let listeners = config.listeners.len();
            let snapshot = weir::snapshot::Snapshot::build(config, &store)?;
            let plugins: Vec<String> = snapshot
                .upstreams()
                .filter_map(|(_, u)| u.balancer().map(|b| b.pool.plugin().name().to_string()))
                .collect();
            let mut filters: Vec<String> = snapshot
                .routes()
                .iter()
                .flat_map(|r| r.filters.iter().map(|f| f.pool.plugin().name().to_string()))
                .collect();
            filters.sort();
            filters.dedup();
            let list = |names: &[String]| {
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            };
            println!(
                "{}: OK ({listeners} listener(s), {} upstream(s), plugins: {}, filters: {})",
                path.display(),
                snapshot.upstreams().count(),
                list(&plugins),
                list(&filters)
            );
            Ok(())
        }
        Command::Demo { plugin_dir, listen } => {
            let plugin_dir = std::path::absolute(&plugin_dir)?;
            if !plugin_dir.join("round-robin.wasm").is_file() {
                anyhow::bail!(
                    "{} has no round-robin.wasm: build the plugins first with `cargo xtask plugins` (or run `cargo xtask demo`)",
                    plugin_dir.display()
                );
            }
            let mut backends = Vec::new();
            for i in 1..=3 {
                backends.push(DemoBackend::start(&format!("backend-{i}")).await?);
            }
            let addrs: Vec<SocketAddr> = backends.iter().map(DemoBackend::addr).collect();
            let server = Server::start(demo::config(listen, &addrs, &plugin_dir)?).await?;
            let url = format!("http://{}/", server.local_addrs()[0]);
            println!("weir demo: listening on {url}");
            println!(
                "round-robin plugin over 3 backends: {}",
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("try:  for i in 1 2 3 4 5 6; do curl -s {url}; done");
            if let Some(admin) = server.admin_addr() {
                println!(
                    "admin API (no token in the demo):  curl -s http://{admin}/upstreams   curl -s http://{admin}/metrics"
                );
            }
            println!("one JSON access log line per request follows. Ctrl-C stops it.");
            wait_for_signal(None).await;
            server.shutdown(Duration::from_secs(2)).await;
            Ok(())
        }
    }
}

/// Waits for Ctrl-C or SIGTERM; on SIGHUP reloads `server`'s config and
/// plugins and keeps waiting.
async fn wait_for_signal(server: Option<&Server>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    if let Some(server) = server {
                        // Errors are logged by the reload itself.
                        let _ = server.reload().await;
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = tokio::signal::ctrl_c().await;
    }
}
