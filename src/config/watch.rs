//! Watching the configuration file for changes.
//!
//! The directory is watched rather than the file, so that editors that replace the file and Kubernetes
//! ConfigMap mounts (where the kubelet swaps a `..data` symlink) are both seen.

use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Starts watching `file`'s directory; `changed` receives a message for each batch of relevant events.
/// Keep the returned watcher alive for as long as events are wanted.
pub fn watch(file: &Path) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| match p.file_name() {
            Some(n) => Some(n) == name.as_deref() || n.to_string_lossy().starts_with(".."),
            None => false,
        });
        if relevant {
            // A full channel already holds a pending reload, which will read the newest file.
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok((watcher, rx))
}
