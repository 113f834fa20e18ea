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
#[cfg(feature = "kubernetes")]
use dualstack_ingress::k8s;
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
    /// Validate and exit: with --config, 0 when valid, else 1 with every error as FILE:LINE:COLUMN: message;
    /// with --manifests, print the routing table those objects give and every problem (1 when any).
    #[arg(long)]
    check: bool,
    /// Run as a Kubernetes ingress controller: routes, backends and certificates come from Ingress,
    /// IngressClass, Service, EndpointSlice and TLS Secret objects (in-cluster service account, else
    /// KUBECONFIG or ~/.kube/config). --config then sets only listeners, admin, timeouts, limits and the
    /// other non-routing settings.
    #[arg(long, conflicts_with = "manifests")]
    kubernetes: bool,
    /// Serve what the controller would serve for the Kubernetes objects in the YAML files of DIR (with
    /// --check: print it and exit).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    #[cfg(feature = "kubernetes")]
    /// The legacy `kubernetes.io/ingress.class` annotation value that selects this controller.
    #[arg(long, value_name = "NAME", default_value = k8s::DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    #[cfg(feature = "kubernetes")]
    /// The IngressClass `spec.controller` value this controller owns.
    #[arg(long, value_name = "NAME", default_value = k8s::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    #[cfg(feature = "kubernetes")]
    /// Only watch Ingresses (and their Services, EndpointSlices, Secrets) in this namespace.
    #[arg(long, value_name = "NS")]
    watch_namespace: Option<String>,
    #[cfg(feature = "kubernetes")]
    /// The Service whose addresses go into Ingress status (its load-balancer addresses, or for NodePort the
    /// nodes' addresses).
    #[arg(long, value_name = "NS/NAME", conflicts_with = "publish_address")]
    publish_service: Option<String>,
    #[cfg(feature = "kubernetes")]
    /// Addresses to put into Ingress status, comma-separated, any mix of families.
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    publish_address: Vec<std::net::IpAddr>,
    #[cfg(feature = "kubernetes")]
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        value_name = "NS",
        env = "POD_NAMESPACE",
        default_value = "default"
    )]
    election_namespace: String,
    /// Print the Kubernetes RBAC rules the controller needs (JSON) and exit.
    #[arg(long)]
    print_rbac: bool,
    /// Worker threads (default: one per CPU the process may use, after its CPU affinity and cgroup
    /// quota). 1 runs the proxy on a single-threaded runtime, the cheapest way to serve from one core
    /// (like nginx's `worker_processes 1`); that is also the default when the process may use one CPU.
    #[arg(long, value_name = "N", env = "DUALSTACK_INGRESS_THREADS")]
    threads: Option<usize>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_rbac {
        return print_rbac();
    }
    if cli.check {
        return match (&cli.manifests, &cli.config) {
            (Some(dir), _) => check_manifests(dir, &cli),
            (None, Some(path)) => check(path, mode(&cli)),
            (None, None) => {
                eprintln!("error: --check needs --config FILE or --manifests DIR");
                ExitCode::from(2)
            }
        };
    }
    telemetry::init_logging(cli.log_format);
    // One usable CPU (a pinned process, a container limited to one CPU) gets the single-threaded runtime:
    // a multi-threaded one with one worker pays for cross-thread wakeups and work stealing for nothing.
    let workers = cli
        .threads
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(std::num::NonZero::get)
        })
        .unwrap_or(1)
        .max(1);
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dualstack-ingress: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if workers == 1 {
        tracing::info!("single-threaded runtime");
    } else {
        tracing::info!(workers, "multi-threaded runtime");
    }
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("dualstack-ingress: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How the configuration file is read: for the controller modes, without routes.
fn mode(cli: &Cli) -> config::Mode {
    if cli.kubernetes || cli.manifests.is_some() {
        config::Mode::Kubernetes
    } else {
        config::Mode::Standalone
    }
}

/// `--print-rbac`: the RBAC rules the controller needs.
#[cfg(feature = "kubernetes")]
fn print_rbac() -> ExitCode {
    println!("{:#}", k8s::controller::rbac_json());
    ExitCode::SUCCESS
}

/// Why `--kubernetes`, `--manifests` and `--print-rbac` are refused by a binary built without the controller.
#[cfg(not(feature = "kubernetes"))]
const NO_CONTROLLER: &str =
    "this binary was built without the Kubernetes ingress controller (cargo feature `kubernetes`)";

#[cfg(not(feature = "kubernetes"))]
fn no_controller() -> ExitCode {
    eprintln!("error: {NO_CONTROLLER}");
    ExitCode::from(2)
}

#[cfg(not(feature = "kubernetes"))]
fn print_rbac() -> ExitCode {
    no_controller()
}

#[cfg(not(feature = "kubernetes"))]
fn check_manifests(_: &std::path::Path, _: &Cli) -> ExitCode {
    no_controller()
}

#[cfg(not(feature = "kubernetes"))]
async fn run_controller(_: Cli, _: Signals) -> anyhow::Result<()> {
    anyhow::bail!(NO_CONTROLLER)
}

/// Which Ingresses are ours, from the flags.
#[cfg(feature = "kubernetes")]
fn k8s_options(cli: &Cli) -> k8s::Options {
    k8s::Options {
        ingress_class: cli.ingress_class.clone(),
        controller_name: cli.controller_name.clone(),
        watch_namespace: cli.watch_namespace.clone(),
    }
}

/// `--manifests DIR --check`: the routing table and every problem; 1 when anything is wrong.
#[cfg(feature = "kubernetes")]
fn check_manifests(dir: &std::path::Path, cli: &Cli) -> ExitCode {
    if let Some(path) = &cli.config {
        if let Err(errors) = config::load_for(path, config::Mode::Kubernetes) {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    }
    let state = match k8s::manifests::load_dir(dir) {
        Ok(state) => state,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let translation = k8s::translate(&state, &k8s_options(cli));
    print!("{}", k8s::report::render(&translation));
    if translation.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check(path: &std::path::Path, mode: config::Mode) -> ExitCode {
    let file = match config::load_for(path, mode) {
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
    let mut signals = Signals::install()?;
    if cli.kubernetes || cli.manifests.is_some() {
        return run_controller(cli, signals).await;
    }
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
    signals.wait_for_stop(cli.config.is_none()).await;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    demo_stop.cancel();
    Ok(())
}

/// The signals the process answers, installed before anything else starts, so that a signal arriving during
/// start-up is handled (SIGTERM/SIGINT drain and exit 0; SIGHUP never kills the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Returns on SIGTERM or SIGINT. SIGHUP reloads a configuration file (its source listens for it too);
    /// with `embedded` it is answered with a log line.
    async fn wait_for_stop(&mut self, embedded: bool) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => if embedded {
                    tracing::info!("SIGHUP: the embedded configuration does not change");
                },
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
            }
        }
    }
}

/// `--kubernetes` and `--manifests DIR`: the controller's sources on the standalone proxy's server.
#[cfg(feature = "kubernetes")]
async fn run_controller(cli: Cli, mut signals: Signals) -> anyhow::Result<()> {
    let file = match &cli.config {
        Some(path) => config::load_for(path, config::Mode::Kubernetes)
            .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?,
        None => config::ConfigFile {
            bootstrap: dualstack_ingress::model::Bootstrap {
                listen_tls: dualstack_ingress::model::default_listen_tls(),
                ..Default::default()
            },
            model: dualstack_ingress::model::Model::default(),
        },
    };
    let options = k8s_options(&cli);
    if let Some(dir) = &cli.manifests {
        let state = k8s::manifests::load_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot load {}:\n{}", dir.display(), e.join("\n")))?;
        let translation = k8s::translate(&state, &options);
        for p in &translation.problems {
            tracing::warn!(problem = %p, "Ingress problem");
        }
        let model = dualstack_ingress::model::Model {
            rules: translation.model.rules,
            default_backend: translation.model.default_backend,
            backends: translation.model.backends,
            tls: translation.model.tls,
            ..file.model
        };
        let server = Server::start_with(&file.bootstrap, model).await?;
        signals.wait_for_stop(false).await;
        server.shutdown().await;
        return Ok(());
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account, KUBECONFIG or ~/.kube/config)")?;
    let (models, published) = watch::channel(None);
    let server = Server::start(&file.bootstrap, published).await?;
    let stop = CancellationToken::new();
    let controller = k8s::controller::Controller {
        client,
        options,
        base: file.model,
        publish: match (&cli.publish_service, cli.publish_address.is_empty()) {
            (Some(s), _) => k8s::controller::publish_service(s).map_err(anyhow::Error::msg)?,
            (None, false) => k8s::status::Publish::Addresses(cli.publish_address.clone()),
            (None, true) => k8s::status::Publish::Nothing,
        },
        election_namespace: cli.election_namespace.clone(),
        identity: k8s::controller::identity(),
        lease_duration: k8s::controller::lease_duration(),
    };
    let mut running = controller.spawn(models, server.metrics().clone(), stop.clone());
    signals.wait_for_stop(false).await;
    tracing::info!("shutting down: draining in-flight requests");
    stop.cancel();
    server.shutdown().await;
    running.abort_all();
    Ok(())
}
