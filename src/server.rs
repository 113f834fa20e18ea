//! Running the proxy: bind every listener, install tables, reload, and drain on shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Health};
use crate::config::watch::FileWatcher;
use crate::config::{self, ConfigErrors};
use crate::listen::{self, BindError, Transport};
use crate::model::{Model, PemSource};
use crate::proxy::{self, Shared};
use crate::routing::Table;
use crate::telemetry::Metrics;
use crate::tls::{CertStore, TlsError};
use crate::upstream::Upstreams;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A certificate could not be loaded.
    #[error("TLS certificate: {0}")]
    Tls(#[from] TlsError),
}

/// A running proxy.
pub struct Server {
    shared: Arc<Shared>,
    health: Arc<Health>,
    running: Model,
    data_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    stop_data: CancellationToken,
    stop_admin: CancellationToken,
    data_loops: JoinSet<()>,
    admin_loops: JoinSet<()>,
}

impl Server {
    /// Binds the data, TLS and admin listeners of `model`, loads its certificates, installs its table and
    /// starts serving.
    pub async fn start(model: Model) -> Result<Server, StartError> {
        let metrics = Arc::new(Metrics::new());
        let certs = if model.listen_tls.is_empty() {
            None
        } else {
            Some(Arc::new(CertStore::new(&model.tls)?))
        };
        let upstreams = Upstreams::new(&model.timeouts);
        for e in upstreams.prepare(&model) {
            tracing::error!("{e}");
        }
        let plain = listen::bind_all(&model.listen)?;
        let tls = match &certs {
            Some(_) => listen::bind_all(&model.listen_tls)?,
            None => Vec::new(),
        };
        let admin = match model.admin {
            // Like the data listeners, a missing address family is a warning, not a failure to start.
            Some(addr) => match listen::bind_all(&[addr]) {
                Ok(listeners) => listeners,
                Err(e) if listen::family_unavailable(&e) => Vec::new(),
                Err(e) => return Err(e.into()),
            },
            None => Vec::new(),
        };
        let bound = |ls: &[tokio::net::TcpListener]| -> Vec<SocketAddr> {
            ls.iter().filter_map(|l| l.local_addr().ok()).collect()
        };
        let (data_addrs, tls_addrs) = (bound(&plain), bound(&tls));
        let admin_addr = bound(&admin).first().copied();
        let shared = Arc::new(Shared {
            // The HTTPS redirect names the port a TLS listener really has (port 0 is chosen at bind time).
            table: ArcSwap::from_pointee(compile(&model, &tls_addrs)),
            upstreams,
            metrics: metrics.clone(),
            upgraded: TaskTracker::new(),
            drain_over: CancellationToken::new(),
            certs: certs.clone(),
        });
        let health = Arc::new(Health::default());
        let builder = Arc::new(listen::http_builder(&model.timeouts));
        let stop_data = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let plain_options = listen::ServeOptions::plain(&model.timeouts, Some(metrics.clone()));
        let mut data: Vec<_> = plain
            .into_iter()
            .map(|l| (l, plain_options.clone()))
            .collect();
        if let Some(store) = certs {
            let tls_options = listen::ServeOptions {
                transport: Transport::Tls(store),
                ..plain_options.clone()
            };
            data.extend(tls.into_iter().map(|l| (l, tls_options.clone())));
        }
        let mut data_loops = JoinSet::new();
        for (l, options) in data {
            let s = shared.clone();
            let handler = move |conn, req| proxy::handle(s.clone(), conn, req);
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
        let admin_options = listen::ServeOptions {
            count_active: false,
            reserve: Some(listen::FdReserve::new()),
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
        health.set_ready();
        for addr in &data_addrs {
            tracing::info!(%addr, "listening");
        }
        for addr in &tls_addrs {
            tracing::info!(%addr, "listening (TLS)");
        }
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin listening");
        }
        Ok(Server {
            shared,
            health,
            running: model,
            data_addrs,
            tls_addrs,
            admin_addr,
            stop_data,
            stop_admin,
            data_loops,
            admin_loops,
        })
    }

    /// The bound data-plane addresses (with real ports when the configuration asked for port 0).
    pub fn data_addrs(&self) -> &[SocketAddr] {
        &self.data_addrs
    }

    /// The bound TLS addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The bound admin address, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The metrics this server counts into.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A handle that compiles and installs new models while the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
            started_with: self.running.clone(),
            tls_addrs: self.tls_addrs.clone(),
        }
    }

    /// Stops accepting, lets in-flight requests (and upgraded connections) finish for at most the
    /// configured drain time, then closes what is left. `/readyz` fails from the start of the drain.
    pub async fn shutdown(mut self) {
        let drain = self.shared.table.load().timeouts.drain;
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
        tracing::info!("stopped");
    }
}

/// Installs new models into a running server.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    started_with: Model,
    tls_addrs: Vec<SocketAddr>,
}

impl Reloader {
    /// Compiles `model` and swaps it in whole; requests in flight keep the table they started with.
    pub fn install(&self, model: &Model) {
        if model.listen != self.started_with.listen || model.admin != self.started_with.admin {
            tracing::warn!("listen and admin addresses changed; they take effect after a restart");
        }
        for e in self.shared.upstreams.prepare(model) {
            tracing::error!("{e}");
        }
        if let Some(certs) = &self.shared.certs {
            certs.update(&model.tls);
        }
        self.shared
            .table
            .store(Arc::new(compile(model, &self.tls_addrs)));
    }

    /// Reads, validates and installs the file at `path`. A broken file is logged and counted, and the
    /// last good table keeps serving.
    pub fn reload_file(&self, path: &Path) -> Result<Model, ConfigErrors> {
        match config::load(path) {
            Ok(model) => {
                self.install(&model);
                self.shared.metrics.reload(true);
                tracing::info!(file = %path.display(), "configuration reloaded");
                Ok(model)
            }
            Err(errors) => {
                self.shared.metrics.reload(false);
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                tracing::error!(file = %path.display(), "reload failed; keeping the last good configuration");
                Err(errors)
            }
        }
    }

    /// Reloads `path` whenever it, or a certificate or key file it names, changes on disk, until the
    /// returned task is aborted. Rapid successive changes are coalesced into one reload.
    pub fn watch_file(self, path: PathBuf) -> notify::Result<tokio::task::JoinHandle<()>> {
        let (mut watcher, mut changed) = FileWatcher::new()?;
        watcher.set_files(watched_files(&path, &self.started_with))?;
        Ok(tokio::spawn(async move {
            while changed.recv().await.is_some() {
                // Let a burst of events (write, chmod, rename) settle, then read the newest files once.
                tokio::time::sleep(Duration::from_millis(10)).await;
                while changed.try_recv().is_ok() {}
                if let Ok(model) = self.reload_file(&path) {
                    if let Err(e) = watcher.set_files(watched_files(&path, &model)) {
                        tracing::warn!(error = %e, "cannot watch the files the new configuration names");
                    }
                }
            }
        }))
    }
}

/// Compiles `model`; the HTTPS redirect names the first bound TLS listener's port (listen addresses take
/// effect only at start, and a configured port 0 is chosen at bind time).
fn compile(model: &Model, tls_addrs: &[SocketAddr]) -> Table {
    let mut table = Table::compile(model);
    if table.https_redirect_port.is_some() {
        table.https_redirect_port = tls_addrs.first().map(|a| a.port());
    }
    table
}

/// The configuration file and every certificate and key file it names.
fn watched_files<'a>(config: &'a Path, model: &'a Model) -> impl Iterator<Item = &'a Path> {
    let pem_files = model
        .tls
        .iter()
        .flat_map(|t| [&t.cert, &t.key])
        .filter_map(|s| match s {
            PemSource::File(p) => Some(p.as_path()),
            PemSource::Inline(_) => None,
        });
    std::iter::once(config).chain(pem_files)
}
