//! Running the proxy: bind every listener of a [`Bootstrap`], apply the models a source publishes, and drain
//! on shutdown.
//!
//! The apply loop is the only writer of what requests use: for each model it compiles the routing table,
//! the endpoint sets (with clients and round-robin positions from the upstream registry) and the
//! certificates off the runtime's workers (`spawn_blocking`), then publishes them as one [`Snapshot`] with
//! one store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Health};
use crate::listen::{self, BindError, FdReserve, ServeOptions, Transport};
use crate::model::{Bootstrap, ListenAddr, Model};
use crate::proxy::{self, Shared};
use crate::routing::Table;
use crate::snapshot::Snapshot;
use crate::telemetry::Metrics;
use crate::tls::{CertStore, CertTable, TlsError};
use crate::upstream::dns::{Names, Resolved};
use crate::upstream::Registry;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The TLS session machinery could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Where a source publishes models and the apply loop reads them.
pub type Models = watch::Receiver<Option<Arc<Model>>>;

/// A running proxy.
pub struct Server {
    shared: Arc<Shared>,
    health: Arc<Health>,
    data_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    admin_addrs: Vec<SocketAddr>,
    drain: Duration,
    installs: watch::Receiver<u64>,
    stop_data: CancellationToken,
    stop_admin: CancellationToken,
    data_loops: JoinSet<()>,
    admin_loops: JoinSet<()>,
    apply: JoinHandle<()>,
    /// Keeps a fixed model's channel open ([`Server::start_with`]).
    _fixed: Option<watch::Sender<Option<Arc<Model>>>>,
}

impl Server {
    /// Binds the data, TLS and admin listeners of `bootstrap` and starts serving the models published on
    /// `models`. When a model is already published, returns once it is installed; otherwise, until the
    /// first one is, requests get 503 and `/readyz` fails.
    pub async fn start(bootstrap: &Bootstrap, models: Models) -> Result<Server, StartError> {
        let published = models.borrow().is_some();
        let metrics = Arc::new(Metrics::new());
        let plain = listen::bind_listen(&bootstrap.listen)?;
        let tls = if bootstrap.listen_tls.is_empty() {
            Vec::new()
        } else {
            listen::bind_listen(&bootstrap.listen_tls)?
        };
        // Like the data listeners, a missing address family is a warning, not a failure to start.
        let admin = match listen::bind_all(&bootstrap.admin) {
            Ok(listeners) => listeners,
            Err(e) if listen::family_unavailable(&e) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let bound = |ls: &[tokio::net::TcpListener]| -> Vec<SocketAddr> {
            ls.iter().filter_map(|l| l.local_addr().ok()).collect()
        };
        let bound_listen = |ls: &[(tokio::net::TcpListener, ListenAddr)]| -> Vec<SocketAddr> {
            ls.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
        };
        let (data_addrs, tls_addrs, admin_addrs) =
            (bound_listen(&plain), bound_listen(&tls), bound(&admin));
        let certs = if tls.is_empty() {
            None
        } else {
            Some(Arc::new(CertStore::new()?))
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            metrics: metrics.clone(),
            upgraded: TaskTracker::new(),
            drain_over: CancellationToken::new(),
        });
        let health = Arc::new(Health::default());
        let (installed, installs) = watch::channel(0);
        let apply = tokio::spawn(
            Apply {
                shared: shared.clone(),
                health: health.clone(),
                certs,
                registry: Some(Registry::with_metrics(
                    bootstrap.timeouts.idle,
                    metrics.clone(),
                )),
                // The HTTPS redirect names the port a TLS listener really has (port 0 is chosen at bind).
                tls_port: tls_addrs.first().map(SocketAddr::port),
                resolver: bootstrap.resolver.clone(),
                installed,
            }
            .run(models),
        );

        let builder = Arc::new(listen::http_builder(&bootstrap.timeouts, &bootstrap.limits));
        let stop_data = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let plain_options = ServeOptions {
            max_connections: Some(bootstrap.limits.max_connections),
            ..ServeOptions::plain(&bootstrap.timeouts, Some(metrics.clone()))
        };
        let with_proxy = |options: &ServeOptions, entry: ListenAddr| ServeOptions {
            proxy_protocol: entry.proxy_protocol,
            ..options.clone()
        };
        let mut data: Vec<_> = plain
            .into_iter()
            .map(|(l, entry)| (l, with_proxy(&plain_options, entry)))
            .collect();
        let snapshot_certs = {
            let shared = shared.clone();
            move || -> Arc<CertTable> {
                match &shared.snapshot.load().certs {
                    Some(table) => table.clone(),
                    None => Arc::new(CertTable::default()),
                }
            }
        };
        let tls_options = ServeOptions {
            transport: Transport::Tls(Arc::new(snapshot_certs)),
            ..plain_options.clone()
        };
        data.extend(
            tls.into_iter()
                .map(|(l, entry)| (l, with_proxy(&tls_options, entry))),
        );
        let mut data_loops = JoinSet::new();
        for (l, options) in data {
            let s = shared.clone();
            // Boxed: hyper keeps a slot for the response future of every connection, also while it is
            // idle, and moves the future into it per request; a box keeps both at the size of a pointer.
            let handler = move |conn, req| Box::pin(proxy::handle(s.clone(), conn, req));
            data_loops.spawn(listen::serve(
                l,
                builder.clone(),
                options,
                handler,
                stop_data.clone(),
            ));
        }
        // Admin connections are not counted as client connections, and keep a descriptor in reserve so
        // that probes are answered even when clients have taken every other one.
        let admin_options = ServeOptions {
            count_active: false,
            max_connections: None,
            reserve: Some(FdReserve::new()),
            ..plain_options
        };
        let mut admin_loops = JoinSet::new();
        for l in admin {
            let (h, m) = (health.clone(), metrics.clone());
            let handler = move |conn, req| admin::handle(h.clone(), m.clone(), conn, req);
            admin_loops.spawn(listen::serve(
                l,
                builder.clone(),
                admin_options.clone(),
                handler,
                stop_admin.clone(),
            ));
        }
        if published {
            let mut installs = installs.clone();
            let _ = installs.wait_for(|n| *n >= 1).await;
        }
        for addr in &data_addrs {
            tracing::info!(%addr, "listening");
        }
        for addr in &tls_addrs {
            tracing::info!(%addr, "listening (TLS)");
        }
        for addr in &admin_addrs {
            tracing::info!(%addr, "admin listening");
        }
        Ok(Server {
            shared,
            health,
            data_addrs,
            tls_addrs,
            admin_addrs,
            drain: bootstrap.timeouts.drain,
            installs,
            stop_data,
            stop_admin,
            data_loops,
            admin_loops,
            apply,
            _fixed: None,
        })
    }

    /// Starts with one fixed model (which never changes) and returns once it is installed.
    pub async fn start_with(bootstrap: &Bootstrap, model: Model) -> Result<Server, StartError> {
        let (tx, rx) = watch::channel(Some(Arc::new(model)));
        let mut server = Server::start(bootstrap, rx).await?;
        server._fixed = Some(tx);
        Ok(server)
    }

    /// Returns once at least `count` models have been installed since start.
    pub async fn wait_installed(&self, count: u64) {
        let mut installs = self.installs.clone();
        let _ = installs.wait_for(|n| *n >= count).await;
    }

    /// Models installed since start.
    pub fn installs(&self) -> u64 {
        *self.installs.borrow()
    }

    /// The bound data-plane addresses (with real ports when the configuration asked for port 0).
    pub fn data_addrs(&self) -> &[SocketAddr] {
        &self.data_addrs
    }

    /// The bound TLS addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The bound admin addresses.
    pub fn admin_addrs(&self) -> &[SocketAddr] {
        &self.admin_addrs
    }

    /// The first bound admin address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addrs.first().copied()
    }

    /// The metrics this server counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Stops accepting, lets in-flight requests (and upgraded connections) finish for at most the
    /// configured drain time, then closes what is left. `/readyz` fails from the start of the drain.
    pub async fn shutdown(mut self) {
        let drain = self.drain;
        self.health.set_draining();
        self.stop_data.cancel();
        self.shared.upgraded.close();
        let data_loops = &mut self.data_loops;
        let upgraded = self.shared.upgraded.clone();
        let finished = tokio::time::timeout(drain, async move {
            while data_loops.join_next().await.is_some() {}
            upgraded.wait().await;
        })
        .await;
        if finished.is_err() {
            tracing::warn!(?drain, "drain time over; closing remaining connections");
        }
        self.shared.drain_over.cancel();
        self.data_loops.abort_all();
        self.stop_admin.cancel();
        self.admin_loops.abort_all();
        self.apply.abort();
        tracing::info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.apply.abort();
    }
}

/// The apply loop's state.
struct Apply {
    shared: Arc<Shared>,
    health: Arc<Health>,
    /// Present when TLS listeners exist.
    certs: Option<Arc<CertStore>>,
    /// Taken into each compile and given back; `None` only while a compile runs.
    registry: Option<Registry>,
    tls_port: Option<u16>,
    /// DNS servers for upstream names; empty: the system's.
    resolver: Vec<SocketAddr>,
    installed: watch::Sender<u64>,
}

/// What one compile produced.
struct Compiled {
    snapshot: Snapshot,
    errors: Vec<String>,
    registry: Registry,
}

impl Apply {
    /// Installs each model `models` publishes (the newest, when several arrive during one compile) until
    /// the source goes away.
    async fn run(mut self, mut models: Models) {
        let mut names = Names::with_servers(&self.resolver);
        let mut current: Option<Arc<Model>> = None;
        loop {
            let model = models.borrow_and_update().clone();
            if let Some(model) = model {
                names.refresh(&model).await;
                self.install(model.clone(), names.resolved(), true).await;
                current = Some(model);
            }
            // Until the next model, re-resolve upstream DNS names when their records expire, and recompile
            // the current model when their addresses change.
            loop {
                let due = names.next_refresh();
                tokio::select! {
                    changed = models.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    () = async { match due { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                        if let Some(model) = current.clone() {
                            if names.refresh(&model).await {
                                tracing::info!("upstream DNS names resolve to other addresses; recompiling");
                                self.install(model, names.resolved(), false).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Compiles and installs `model` with the addresses of its DNS names; `reload` counts it as a
    /// configuration reload (a recompile after a DNS change is not one).
    async fn install(&mut self, model: Arc<Model>, resolved: Resolved, reload: bool) {
        let registry = self.registry.take().unwrap_or_else(|| {
            Registry::with_metrics(Duration::from_secs(90), self.shared.metrics.clone())
        });
        let previous = self.shared.snapshot.load_full();
        let (certs, tls_port) = (self.certs.clone(), self.tls_port);
        let job = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            compile(
                started,
                &model,
                &resolved,
                registry,
                certs.as_deref(),
                &previous,
                tls_port,
            )
        });
        let Compiled {
            snapshot,
            errors,
            registry,
        } = match job.await {
            Ok(compiled) => compiled,
            Err(e) => {
                tracing::error!(error = %e, "compiling the configuration failed; keeping the last good table");
                self.shared.metrics.reload(false);
                return;
            }
        };
        self.registry = Some(registry);
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.metrics.table_swapped();
        for e in &errors {
            tracing::error!("{e}");
        }
        let first = *self.installed.borrow() == 0;
        if first {
            tracing::info!("configuration installed");
        } else if reload {
            // A reload counts as failed when part of it could not be applied (a certificate or CA bundle
            // that does not load); what could be applied serves, the rest keeps its last good state.
            self.shared.metrics.reload(errors.is_empty());
            if errors.is_empty() {
                tracing::info!("configuration reloaded");
            } else {
                tracing::error!(
                    problems = errors.len(),
                    "configuration reloaded with problems; see the errors above"
                );
            }
        }
        self.health.set_ready();
        self.installed.send_modify(|n| *n += 1);
    }
}

/// Builds everything requests use from `model`: endpoint sets (reusing the registry's clients and
/// positions), the routing table and the certificates (keeping the previous one of any that fails).
fn compile(
    started: std::time::Instant,
    model: &Model,
    resolved: &Resolved,
    mut registry: Registry,
    certs: Option<&CertStore>,
    previous: &Snapshot,
    tls_port: Option<u16>,
) -> Compiled {
    let mut errors = registry.endpoint_sets_resolved(model, resolved);
    let table = Table::compile(model, &registry, tls_port);
    let certs = match certs {
        Some(store) => {
            let (table, cert_errors) = store.update(&model.tls, previous.certs.as_deref());
            errors.extend(cert_errors.iter().map(ToString::to_string));
            Some(Arc::new(table))
        }
        None => {
            if !model.tls.is_empty() {
                tracing::warn!(
                    certificates = model.tls.len(),
                    "certificates are configured but the process started without TLS listeners \
                     (listenTls): restart to serve them"
                );
            }
            None
        }
    };
    let stats = model.stats();
    tracing::info!(
        hosts = stats.hosts,
        paths = stats.paths,
        backends = model.backends.len(),
        endpoints_ipv4 = stats.endpoints_v4,
        endpoints_ipv6 = stats.endpoints_v6,
        certificates = model.tls.len(),
        compile_ms = started.elapsed().as_millis(),
        "routing table compiled"
    );
    Compiled {
        snapshot: Snapshot {
            table,
            certs,
            installed: true,
            max_request_body: model.max_request_body,
        },
        errors,
        registry,
    }
}
