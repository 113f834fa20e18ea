//! Keep-alive HTTP/1.1 connections to plain `http1` endpoints, one small pool per endpoint.
//!
//! A request checks a connection out of its endpoint's pool (the most recently used idle one, or a new one
//! made with `hyper::client::conn::http1` within `timeouts.connect`), sends its request on it and gets
//! back a response whose body carries the connection: when that body has been read to its end the
//! connection goes back to the pool, ready for the next request. There is no pool-wide lock keyed by
//! authority and no task per request: the endpoint's pool is found when the endpoint set is built, and a
//! checkout is one short lock of that endpoint's idle list.
//!
//! Idle connections are closed after `timeouts.idle` by a reaper task that runs only while the pool holds
//! idle connections; at most [`super::MAX_IDLE_PER_ENDPOINT`] are kept per endpoint.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::happy_eyeballs::{self, Addrs, ConnectError};
use crate::http_types::BoxError;

/// The request body sent on pooled connections: nothing (most requests, with no allocation), or the
/// client's body streamed through.
pub enum PoolBody {
    /// No body.
    Empty,
    /// The client's body.
    Streaming(UnsyncBoxBody<Bytes, BoxError>),
}

impl PoolBody {
    /// `body`, or [`PoolBody::Empty`] when it has already ended (a request without a body).
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        if body.is_end_stream() {
            PoolBody::Empty
        } else {
            PoolBody::Streaming(UnsyncBoxBody::new(body))
        }
    }
}

impl Body for PoolBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            PoolBody::Empty => Poll::Ready(None),
            PoolBody::Streaming(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PoolBody::Empty => true,
            PoolBody::Streaming(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PoolBody::Empty => SizeHint::with_exact(0),
            PoolBody::Streaming(b) => b.size_hint(),
        }
    }
}

/// The HTTP/1.1 client of plain `http1` backends: one [`EndpointPool`] per endpoint address (or per set of
/// addresses a DNS name resolves to), shared by every endpoint set that names it (and so kept across
/// reloads while it is in use; a name whose addresses change gets a new pool, so its connections move).
pub struct Http1Client {
    connect: Duration,
    idle: Duration,
    max_idle: usize,
    pools: Mutex<Pools>,
}

/// The pool of every endpoint address some set uses, and the size at which the map is next pruned of
/// addresses no set uses any more.
#[derive(Default)]
struct Pools {
    by_addr: HashMap<Addrs, Weak<EndpointPool>>,
    prune_at: usize,
}

impl fmt::Debug for Http1Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http1Client")
            .field("connect", &self.connect)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Http1Client {
    /// A client that connects within `connect`, closes connections idle for `idle` and keeps at most
    /// `max_idle` idle connections per endpoint.
    pub fn new(connect: Duration, idle: Duration, max_idle: usize) -> Self {
        Http1Client {
            connect,
            idle,
            max_idle,
            pools: Mutex::new(Pools::default()),
        }
    }

    /// The pool of `addrs` when some endpoint set already made it (so a rebuilt set keeps its warm
    /// connections).
    pub fn existing_pool(&self, addrs: &Addrs) -> Option<Arc<EndpointPool>> {
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.by_addr.get(addrs).and_then(Weak::upgrade)
    }

    /// The pool of `addrs`: the one already in use, else a new one. Called once per endpoint, by its
    /// first request.
    pub fn pool(&self, addrs: Addrs) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.by_addr.get(&addrs).and_then(Weak::upgrade) {
            return pool;
        }
        // Endpoints no set uses any more are forgotten here, so the map does not grow with churn. Pruning
        // only when the map has doubled keeps building 100,000 endpoints linear, not quadratic.
        if pools.by_addr.len() >= pools.prune_at {
            pools.by_addr.retain(|_, p| p.strong_count() > 0);
            pools.prune_at = (pools.by_addr.len() * 2).max(64);
        }
        let pool = Arc::new(EndpointPool {
            addrs: addrs.clone(),
            connect: self.connect,
            idle: self.idle,
            max_idle: self.max_idle,
            state: Mutex::new(Idle::default()),
        });
        pools.by_addr.insert(addrs, Arc::downgrade(&pool));
        pool
    }
}

/// The idle connections of one endpoint (with the address each is connected to), most recently used last.
#[derive(Default)]
struct Idle {
    conns: Vec<(SendRequest<PoolBody>, Instant, SocketAddr)>,
    reaper: bool,
}

/// The keep-alive connections of one endpoint.
pub struct EndpointPool {
    addrs: Addrs,
    connect: Duration,
    idle: Duration,
    max_idle: usize,
    state: Mutex<Idle>,
}

impl fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointPool")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// A connection checked out of a pool, and whether it was reused (a reused connection the upstream has
/// just closed may refuse a request unsent; the request is then sent again on a new connection).
pub struct Conn {
    /// The connection's request sender.
    pub sender: SendRequest<PoolBody>,
    /// Whether it came from the idle list.
    pub reused: bool,
    /// The address it is connected to.
    pub peer: SocketAddr,
}

impl EndpointPool {
    /// The most recently used idle connection that is ready for a request, if there is one.
    pub fn take_idle(&self) -> Option<Conn> {
        self.pop_idle().map(|(sender, peer)| Conn {
            sender,
            reused: true,
            peer,
        })
    }

    /// A new connection, for when no idle one is ready.
    pub async fn connect_new(&self) -> Result<Conn, ConnectError> {
        // Boxed: connecting is the rare path, and its futures would otherwise make every request's
        // future larger.
        Box::pin(self.connect()).await.map(|(sender, peer)| Conn {
            sender,
            reused: false,
            peer,
        })
    }

    /// A new connection (to the one address, or the winner of the race over a DNS name's addresses) and
    /// the address it reached, its connection task spawned.
    pub async fn connect(&self) -> Result<(SendRequest<PoolBody>, SocketAddr), ConnectError> {
        let (stream, peer) = happy_eyeballs::connect(&self.addrs, self.connect).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(endpoint = %peer, error = %e, "upstream connection ended with an error");
            }
        });
        Ok((sender, peer))
    }

    fn pop_idle(&self) -> Option<(SendRequest<PoolBody>, SocketAddr)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since, peer)) = state.conns.pop() {
            // Only ready connections are put back; one the upstream has closed since is dropped.
            if sender.is_ready() && since.elapsed() < self.idle {
                return Some((sender, peer));
            }
        }
        None
    }

    /// Takes back a connection whose last response was read to the end. It is usually ready for the next
    /// request at once; if hyper has not yet finished the exchange (the request body is still being
    /// sent), a small task waits for it, at most `timeouts.idle`.
    fn put(self: &Arc<Self>, mut sender: SendRequest<PoolBody>, peer: SocketAddr) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let pool = Arc::clone(self);
            rt.spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(pool.idle, sender.ready()).await {
                    pool.put_ready(sender, peer);
                }
            });
            return;
        }
        self.put_ready(sender, peer);
    }

    fn put_ready(self: &Arc<Self>, sender: SendRequest<PoolBody>, peer: SocketAddr) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.conns.len() >= self.max_idle {
            return;
        }
        state.conns.push((sender, Instant::now(), peer));
        if !state.reaper {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                state.reaper = true;
                rt.spawn(reap(Arc::downgrade(self), self.idle));
            }
        }
    }
}

/// Closes the idle connections of a pool that have waited `idle`, for as long as it has any.
async fn reap(pool: Weak<EndpointPool>, idle: Duration) {
    let period = (idle / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut state = pool.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .conns
            .retain(|(sender, since, _)| !sender.is_closed() && since.elapsed() < idle);
        if state.conns.is_empty() {
            state.reaper = false;
            return;
        }
    }
}

/// A connection on loan to one response: it returns to its pool when the response body has ended, and is
/// closed if the body is dropped before that.
pub struct Lease {
    sender: SendRequest<PoolBody>,
    pool: Arc<EndpointPool>,
    peer: SocketAddr,
}

impl Lease {
    /// Lends `sender` of `pool`, connected to `peer`.
    pub fn new(sender: SendRequest<PoolBody>, pool: Arc<EndpointPool>, peer: SocketAddr) -> Self {
        Lease { sender, pool, peer }
    }

    /// Gives the connection back.
    pub fn release(self) {
        self.pool.put(self.sender, self.peer);
    }
}

/// An upstream response body; on a pooled HTTP/1.1 connection it gives the connection back to its pool
/// as soon as the body has ended.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    /// `inner`, releasing `lease` when it ends (at once if it is already empty).
    pub fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        let mut body = UpstreamBody { inner, lease };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // hyper stops polling a body of known length after its last byte, so the end is also seen here.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(None) => self.release(),
            // A failed body leaves the connection unusable: dropping the lease closes it.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
