//! The connection limit of one listener (`limits.maxConnections`): a slot per open connection, held by the
//! socket itself, so a connection counts until its descriptor is closed (also after an upgrade hands the
//! socket to a WebSocket splice). A connection accepted when every slot is taken is closed at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::reserve::LOG_INTERVAL;

/// The slots of one listener; `None` limit: every connection is admitted.
#[derive(Debug)]
pub struct ConnectionLimit {
    slots: Option<Arc<Semaphore>>,
    max: usize,
    local: SocketAddr,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl ConnectionLimit {
    /// At most `max` open connections on the listener at `local` (`None`: no limit).
    pub fn new(max: Option<usize>, local: SocketAddr) -> ConnectionLimit {
        let max = max.map(|m| m.clamp(1, Semaphore::MAX_PERMITS));
        ConnectionLimit {
            slots: max.map(|m| Arc::new(Semaphore::new(m))),
            max: max.unwrap_or(0),
            local,
            unlogged: 0,
            last_logged: None,
        }
    }

    /// A slot for a connection just accepted, or `None` when the listener is full. A refusal is logged at
    /// most once per [`LOG_INTERVAL`] with the number since the last line.
    pub fn admit(&mut self) -> Option<Slot> {
        let Some(slots) = &self.slots else {
            return Some(Slot { _permit: None });
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Some(Slot {
                _permit: Some(permit),
            });
        }
        self.unlogged += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= LOG_INTERVAL)
        {
            tracing::warn!(
                listener = %self.local,
                max_connections = self.max,
                refused = self.unlogged,
                "connection limit reached (limits.maxConnections); closing new connections at once \
                 (logged at most every {}s)",
                LOG_INTERVAL.as_secs()
            );
            self.unlogged = 0;
            self.last_logged = Some(Instant::now());
        }
        None
    }
}

/// One connection's claim on its listener's limit; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A stream that holds its connection's [`Slot`] until it is dropped (its descriptor closed).
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    _slot: Slot,
}

impl<S> Counted<S> {
    /// `inner`, holding `slot` for as long as it lives.
    pub fn new(inner: S, slot: Slot) -> Counted<S> {
        Counted { inner, _slot: slot }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_dropped() {
        let mut limit = ConnectionLimit::new(Some(2), "127.0.0.1:1".parse().unwrap());
        let a = limit.admit().unwrap();
        let _b = limit.admit().unwrap();
        assert!(limit.admit().is_none());
        drop(a);
        assert!(limit.admit().is_some());
    }

    #[test]
    fn no_limit_admits_everyone() {
        let mut limit = ConnectionLimit::new(None, "[::1]:1".parse().unwrap());
        let slots: Vec<_> = (0..1000).map(|_| limit.admit().unwrap()).collect();
        assert_eq!(slots.len(), 1000);
    }
}
