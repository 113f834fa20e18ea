//! The `dualstack-ingress` binary: command line, logging, the configuration source, signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use dualstack_ingress::config;
use dualstack_ingress::server::Server;
use dualstack_ingress::telemetry::{self, LogFormat};
use dualstack_ingress::tls::CertStore;

/// mimalloc: measurably cheaper than glibc's malloc for the many small, short-lived allocations of the
/// request path (see loadtests/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A dual-stack (IPv4 and IPv6) HTTP reverse proxy and Kubernetes ingress.
///
/// Without --config it runs the embedded example configuration (config/example.yaml) together with a
/// demo upstream, so it answers at once on http://127.0.0.1:8080/ and http://[::1]:8080/.
#[derive(Debug, Parser)]
#[command(name = "dualstack-ingress", version)]
struct Cli {
    /// Static configuration file (YAML or JSON); watched and reloaded on change and on SIGHUP.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 when valid, 1 with every error as FILE:LINE:COLUMN: message.
    #[arg(long, requires = "config")]
    check: bool,
    /// Worker threads (default: one per CPU). 1 runs the proxy on a single-threaded runtime, the
    /// cheapest way to serve from one core (like nginx's `worker_processes 1`).
    #[arg(long, value_name = "N", env = "DUALSTACK_INGRESS_THREADS")]
    threads: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check {
        return check(cli.config.as_deref().unwrap_or(std::path::Path::new("")));
    }
    telemetry::init_logging(cli.log_format);
    let runtime = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dualstack-ingress: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dualstack-ingress: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let file = match config::load(path) {
        Ok(file) => file,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let model = &file.model;
    // Certificates, keys and CA bundles are read and checked too, each error naming its file.
    let mut ok = true;
    if !model.tls.is_empty() {
        if let Err(e) = CertStore::new().and_then(|store| store.load(&model.tls)) {
            eprintln!("{e}");
            ok = false;
        }
    }
    for (name, backend) in model.backends.iter().filter(|(_, b)| b.protocol.is_tls()) {
        if let Err(e) = dualstack_ingress::tls::client::client_config(backend.ca.as_ref()) {
            eprintln!("backend {name:?}: {e}");
            ok = false;
        }
    }
    if ok {
        println!("{}: configuration is valid", path.display());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let demo_stop = CancellationToken::new();
    let file = match &cli.config {
        Some(path) => {
            config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?
        }
        None => {
            let file = config::parse("config/example.yaml (embedded)", config::EMBEDDED_DEFAULT)
                .map_err(|e| anyhow::anyhow!("invalid embedded configuration:\n{e}"))?;
            let demo = dualstack_ingress::demo::start_for(&file.model, &demo_stop)
                .context("starting the demo upstream")?;
            tracing::info!(
                ?demo,
                "no --config given: running the embedded example with its demo upstreams"
            );
            file
        }
    };
    let (models, published) = watch::channel(Some(Arc::new(file.model.clone())));
    let server = Server::start(&file.bootstrap, published).await?;
    // The file source owns its watching and SIGHUP. The embedded configuration never changes: its
    // channel is just kept open until the end.
    let mut models = Some(models);
    let _source = match (&cli.config, models.take_if(|_| cli.config.is_some())) {
        (Some(path), Some(models)) => Some(
            config::source::spawn(
                path.clone(),
                config::Mode::Standalone,
                &file,
                models,
                server.metrics().clone(),
            )
            .with_context(|| format!("watching {}", path.display()))?,
        ),
        _ => None,
    };
    wait_for_stop(cli.config.is_none()).await?;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    demo_stop.cancel();
    Ok(())
}

/// Returns on SIGTERM or SIGINT. With `embedded`, SIGHUP is answered with a log line (nothing to reload).
async fn wait_for_stop(embedded: bool) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = if embedded {
        Some(signal(SignalKind::hangup()).context("installing the SIGHUP handler")?)
    } else {
        None
    };
    loop {
        tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: the embedded configuration does not change");
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}
