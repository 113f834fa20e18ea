//! The static file as a configuration source: a task that publishes the file's model at start, whenever
//! the file or a file it names changes, and on `SIGHUP`. It is the only publisher; the server's apply loop
//! is the only writer of what requests use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::watch::FileWatcher;
use super::{load_for, ConfigFile, Mode};
use crate::model::{Bootstrap, Model, PemSource};
use crate::telemetry::Metrics;

/// Where sources publish complete models; a burst of changes collapses to the newest one.
pub type ModelSender = watch::Sender<Option<Arc<Model>>>;

/// Watches `path` (loaded at start as `started`) and publishes each valid version's model into `models`.
/// A file that fails to load is logged as `FILE:LINE:COLUMN: message`, counted as a failed reload, and
/// publishes nothing, so the last good model keeps serving. Changed start-only settings are logged as
/// needing a restart.
pub fn spawn(
    path: PathBuf,
    mode: Mode,
    started: &ConfigFile,
    models: ModelSender,
    metrics: Arc<Metrics>,
) -> std::io::Result<JoinHandle<()>> {
    let (mut watcher, mut changed) = FileWatcher::new().map_err(std::io::Error::other)?;
    watcher
        .set_files(watched_files(&path, &started.model))
        .map_err(std::io::Error::other)?;
    let mut hangup = signal(SignalKind::hangup())?;
    let bootstrap = started.bootstrap.clone();
    tracing::info!(file = %path.display(), "watching the configuration file; SIGHUP reloads it too");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                got = changed.recv() => if got.is_none() { break },
                got = hangup.recv() => if got.is_none() { break },
            }
            let Some(config) = reload(&path, mode, &bootstrap, &metrics).await else {
                continue;
            };
            if let Err(e) = watcher.set_files(watched_files(&path, &config.model)) {
                tracing::warn!(error = %e, "cannot watch the files the new configuration names");
            }
            models.send_replace(Some(Arc::new(config.model)));
        }
    }))
}

/// Reads and validates `path` off the runtime's workers.
async fn reload(
    path: &Path,
    mode: Mode,
    started: &Bootstrap,
    metrics: &Metrics,
) -> Option<ConfigFile> {
    let owned = path.to_path_buf();
    let loaded = match tokio::task::spawn_blocking(move || load_for(&owned, mode)).await {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload did not finish");
            metrics.reload(false);
            return None;
        }
    };
    match loaded {
        Ok(config) => {
            if config.bootstrap != *started {
                tracing::warn!(
                    file = %path.display(),
                    "listen, listenTls, admin, timeouts.headerRead, timeouts.idle, timeouts.drain or limits \
                     (other than maxRequestBody) changed; they take effect after a restart"
                );
            }
            tracing::debug!(file = %path.display(), "configuration file read");
            Some(config)
        }
        Err(errors) => {
            metrics.reload(false);
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            tracing::error!(file = %path.display(), "reload failed; keeping the last good configuration");
            None
        }
    }
}

/// The configuration file and every certificate, key and CA file it names.
fn watched_files<'a>(config: &'a Path, model: &'a Model) -> impl Iterator<Item = &'a Path> {
    let pem_files = model
        .tls
        .iter()
        .flat_map(|t| [&t.cert, &t.key])
        .chain(model.backends.values().filter_map(|b| b.ca.as_ref()))
        .filter_map(|s| match s {
            PemSource::File(p) => Some(p.as_path()),
            PemSource::Inline(_) => None,
        });
    std::iter::once(config).chain(pem_files)
}
