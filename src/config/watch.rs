//! Watching the configuration file and the files it names (certificates, keys, CA bundles) for changes.
//!
//! Directories are watched rather than files, so that editors that replace a file and Kubernetes
//! ConfigMap or Secret mounts (where the kubelet swaps a `..data` symlink) are both seen. Bursts of events
//! (write, chmod, rename) are coalesced by `notify-debouncer-full`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// How long the files must be quiet before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches a changing set of files; sends `()` on its channel for each settled batch of relevant events.
pub struct FileWatcher {
    debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    dirs: HashSet<PathBuf>,
    names: Arc<Mutex<HashSet<OsString>>>,
}

impl FileWatcher {
    /// A watcher with no files yet, and the channel its changes arrive on.
    pub fn new() -> notify::Result<(FileWatcher, mpsc::Receiver<()>)> {
        let (tx, rx) = mpsc::channel(1);
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let relevant_names = names.clone();
        let debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
            let Ok(events) = res else { return };
            let names = relevant_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let relevant = events
                .iter()
                // Our own reads open the files; only changes matter.
                .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                .flat_map(|e| e.event.paths.iter())
                .filter_map(|p| p.file_name())
                .any(|n| names.contains(n) || n.to_string_lossy().starts_with(".."));
            if relevant {
                // A full channel already holds a pending reload, which will read the newest files.
                let _ = tx.try_send(());
            }
        })?;
        Ok((
            FileWatcher {
                debouncer,
                dirs: HashSet::new(),
                names,
            },
            rx,
        ))
    }

    /// Watches `files` (adding the directories not watched yet).
    pub fn set_files<'a>(
        &mut self,
        files: impl IntoIterator<Item = &'a Path>,
    ) -> notify::Result<()> {
        let mut names = HashSet::new();
        for file in files {
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !self.dirs.contains(&dir) {
                self.debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
                self.dirs.insert(dir);
            }
            names.extend(file.file_name().map(std::ffi::OsStr::to_os_string));
        }
        *self.names.lock().unwrap_or_else(PoisonError::into_inner) = names;
        Ok(())
    }
}
