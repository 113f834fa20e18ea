//! Running out of file descriptors without spinning: a descriptor kept in reserve for the listener that
//! must keep answering (the admin probes), and accept errors logged once per interval with a count.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// First pause after a failed accept; doubles up to [`MAX_BACKOFF`] while accept keeps failing.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while they fail.
pub const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// Accept failures are logged at most once per this interval, with the number since the last line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// One descriptor held open (`/dev/null`) so that a listener can still accept a connection when the process
/// has no descriptor left: released to accept, reopened when that connection ends.
#[derive(Debug)]
pub struct FdReserve {
    file: Mutex<Option<std::fs::File>>,
}

/// Holds a rescued connection's claim on the reserve; reopens the reserve when dropped.
#[derive(Debug)]
pub struct ReserveGuard(Arc<FdReserve>);

impl FdReserve {
    /// Opens the reserve descriptor.
    pub fn new() -> Arc<FdReserve> {
        Arc::new(FdReserve {
            file: Mutex::new(Self::open()),
        })
    }

    fn open() -> Option<std::fs::File> {
        std::fs::File::open("/dev/null").ok()
    }

    /// Whether `e` means the process or the system is out of descriptors.
    pub fn is_exhaustion(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }

    /// Releases the reserve and accepts the pending connection with the descriptor it frees. `None` when
    /// the reserve is already in use or nothing could be accepted (the reserve is then reopened).
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
    ) -> Option<(TcpStream, SocketAddr, ReserveGuard)> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        drop(file);
        let guard = ReserveGuard(self.clone());
        // A connection is pending (accept just failed on it); do not wait long if it went away.
        match tokio::time::timeout(MAX_BACKOFF, listener.accept()).await {
            Ok(Ok((stream, peer))) => Some((stream, peer, guard)),
            _ => None,
        }
    }
}

impl Drop for ReserveGuard {
    fn drop(&mut self) {
        let mut slot = self.0.file.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = FdReserve::open();
        }
    }
}

/// Accept failures of one listener: the backoff, and a log line at most once per [`LOG_INTERVAL`].
#[derive(Debug)]
pub struct AcceptErrors {
    local: SocketAddr,
    backoff: Duration,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    /// No failures yet on the listener at `local`.
    pub fn new(local: SocketAddr) -> Self {
        AcceptErrors {
            local,
            backoff: MIN_BACKOFF,
            unlogged: 0,
            last_logged: None,
        }
    }

    /// Counts a failure, logging it if the last line is older than the interval.
    pub fn failed(&mut self, e: &io::Error) {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|at| at.elapsed() >= LOG_INTERVAL);
        if due {
            tracing::warn!(
                listener = %self.local,
                error = %e,
                failures = self.unlogged,
                "accept failed; backing off (logged at most every {}s)",
                LOG_INTERVAL.as_secs()
            );
            self.unlogged = 0;
            self.last_logged = Some(Instant::now());
        }
    }

    /// The pause before the next attempt; grows while failures continue.
    pub fn backoff(&mut self) -> Duration {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        pause
    }

    /// An accept succeeded: the next failure starts with a short pause again, and the failures not yet
    /// logged are reported.
    pub fn recovered(&mut self) {
        if self.unlogged > 0 {
            tracing::warn!(
                listener = %self.local,
                failures = self.unlogged,
                "accept failed; recovered"
            );
            self.unlogged = 0;
        }
        self.backoff = MIN_BACKOFF;
    }
}
