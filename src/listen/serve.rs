//! The accept loop: one task per listener, one task per connection, hyper-util's auto builder (HTTP/1.1
//! and h2c prior knowledge on the same port), the connection deadlines, and graceful shutdown on request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::Activity;
use super::limit::{ConnectionLimit, Counted};
use super::proxy_protocol::{self, Prefixed};
use super::reserve::{AcceptErrors, FdReserve};
use crate::http_types::{canonical_peer, ConnInfo, ProxyBody};
use crate::model::{ClientTimeouts, ConnectionLimits};
use crate::telemetry::{AddrFamily, Deadline, Metrics};
use crate::tls::accept::handshake;
use crate::tls::CertTable;

/// Largest request head accepted; a larger one gets 431 from hyper and is never forwarded.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves one request of one connection.
pub trait ConnHandler: Clone + Send + Sync + 'static {
    /// The response future.
    type Future: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static;
    /// Handles `req` that arrived on `conn`.
    fn call(&self, conn: ConnInfo, req: Request<Incoming>) -> Self::Future;
}

impl<F, Fut> ConnHandler for F
where
    F: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, conn: ConnInfo, req: Request<Incoming>) -> Fut {
        self(conn, req)
    }
}

/// The connection builder with the proxy's limits and timeouts. Every HTTP/2 protection hyper and h2 offer
/// is set explicitly from `limits`, so none depends on a library default.
pub fn http_builder(
    timeouts: &ClientTimeouts,
    limits: &ConnectionLimits,
) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // From the end of one response to the next request head on a kept-alive connection.
        .header_read_timeout(timeouts.header_read)
        // hyper's default of 100 headers keeps its parser's header array on the stack; more get 431.
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        // Also bounds a header block's CONTINUATION frames: h2 closes the connection (GOAWAY
        // ENHANCE_YOUR_CALM) after about this size over 16 KiB frames (CVE-2024-27316 and relatives).
        .max_header_list_size(limits.http2_max_header_list_size)
        // Rapid reset (CVE-2023-44487): streams opened and reset before they are served.
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        // Streams reset by the proxy because the client broke the protocol on them (RUSTSEC-2024-0003).
        .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
        .keep_alive_interval(Some(timeouts.idle / 2))
        .keep_alive_timeout(timeouts.idle / 2);
    builder
}

/// Gives the certificate table in force (the current snapshot's).
pub type CertsInForce = Arc<dyn Fn() -> Arc<CertTable> + Send + Sync>;

/// What a listener serves: plain HTTP, or TLS with certificates from a store.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS, with the certificates in force at each handshake.
    Tls(CertsInForce),
}

/// How one listener serves its connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Plain or TLS.
    pub transport: Transport,
    /// Where connections and closed-by-deadline counts go (`None`: not counted, as for the demo upstream).
    pub metrics: Option<Arc<Metrics>>,
    /// Whether connections count as client connections in the active-connection gauge (admin ones do not).
    pub count_active: bool,
    /// From accept to the first complete request head (TLS handshake and protocol detection included).
    pub header_read: Duration,
    /// An HTTP/2 connection without an open stream for this long is closed.
    pub idle: Duration,
    /// A descriptor kept in reserve, released to accept one connection when the process has none left.
    pub reserve: Option<Arc<FdReserve>>,
    /// Whether every connection starts with a PROXY protocol header (v1 or v2) naming the client; it must
    /// arrive within `header_read` of the accept.
    pub proxy_protocol: bool,
    /// Open connections allowed on this listener (`None`: no limit); one over it is closed at once and
    /// counted.
    pub max_connections: Option<usize>,
}

impl ServeOptions {
    /// Plain HTTP with the deadlines of `timeouts`, counted in `metrics` as client connections.
    pub fn plain(timeouts: &ClientTimeouts, metrics: Option<Arc<Metrics>>) -> ServeOptions {
        ServeOptions {
            transport: Transport::Plain,
            metrics,
            count_active: true,
            header_read: timeouts.header_read,
            idle: timeouts.idle,
            reserve: None,
            proxy_protocol: false,
            max_connections: None,
        }
    }
}

/// Accepts connections on `listener` until `stop` fires, then asks every open connection to finish its
/// in-flight requests and close, and returns once they have.
pub async fn serve<H: ConnHandler>(
    listener: TcpListener,
    builder: Arc<Builder<TokioExecutor>>,
    options: ServeOptions,
    handler: H,
    stop: CancellationToken,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    let family = AddrFamily::of(&local);
    let connections = TaskTracker::new();
    let mut errors = AcceptErrors::new(local);
    let mut limit = ConnectionLimit::new(options.max_connections, local);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer, reserved) = match accepted {
            Ok((stream, peer)) => {
                errors.recovered();
                (stream, peer, None)
            }
            Err(e) => {
                // Out of descriptors: a listener with a reserve gives it up to take this one connection
                // (the admin listener, so probes still answer); every other failure backs off instead of
                // spinning, and is logged once per interval with a count.
                let rescued = match &options.reserve {
                    Some(reserve) if FdReserve::is_exhaustion(&e) => {
                        reserve.accept(&listener).await
                    }
                    _ => None,
                };
                match rescued {
                    Some((stream, peer, guard)) => (stream, peer, Some(guard)),
                    None => {
                        errors.failed(&e);
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(errors.backoff()) => continue,
                        }
                    }
                }
            }
        };
        let Some(slot) = limit.admit() else {
            // Over the limit: closed at once (the accept loop never waits for a slot, so it never spins).
            if let Some(m) = &options.metrics {
                m.connection_over_limit(family);
            }
            drop(stream);
            continue;
        };
        let deadline = Instant::now() + options.header_read;
        let _ = stream.set_nodelay(true);
        // The local address of the accepted socket: the real destination even on a wildcard listener.
        let local = stream.local_addr().unwrap_or(local);
        let conn = ConnInfo::new(canonical_peer(peer), local);
        // The slot lives as long as the socket, also when an upgrade hands it to a splice.
        let stream = Counted::new(stream, slot);
        let (builder, handler, options, stop) = (
            builder.clone(),
            handler.clone(),
            options.clone(),
            stop.clone(),
        );
        // Boxed before it is spawned: spawning moves a future several times on its way into the task (about
        // ten copies of its 2.8 KB, more instructions than parsing a request); a box moves as a pointer.
        connections.spawn(Box::pin(async move {
            let _reserved = reserved;
            let metrics = options.metrics.as_deref();
            let _open = metrics
                .filter(|_| options.count_active)
                .map(|m| m.connection_opened(family));
            let limits = Limits {
                deadline,
                idle: options.idle,
                family,
                metrics,
            };
            if !options.proxy_protocol {
                serve_stream(
                    &builder,
                    stream,
                    conn,
                    &options.transport,
                    handler,
                    limits,
                    stop,
                )
                .await;
                return;
            }
            // Boxed, as TLS is: a PROXY protocol connection's reader and stream type would otherwise size
            // every connection task.
            Box::pin(async move {
                let Some((stream, conn)) = proxied(stream, conn, &limits, &stop).await else {
                    return;
                };
                serve_stream(
                    &builder,
                    stream,
                    conn,
                    &options.transport,
                    handler,
                    limits,
                    stop,
                )
                .await;
            })
            .await;
        }));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Reads the PROXY protocol header that starts `stream` by `limits.deadline`: the connection as the client
/// it names (the connection's own peer for `LOCAL` and `UNKNOWN`), with the bytes after the header read
/// first. `None`, counted, when no valid header arrives in time; `None` as well when `stop` fires first (a
/// connection without a request has nothing to drain).
async fn proxied<S: AsyncRead + Unpin>(
    mut stream: S,
    conn: ConnInfo,
    limits: &Limits<'_>,
    stop: &CancellationToken,
) -> Option<(Prefixed<S>, ConnInfo)> {
    let read = tokio::time::timeout_at(limits.deadline, proxy_protocol::read_header(&mut stream));
    let read = tokio::select! {
        read = read => read,
        () = stop.cancelled() => return None,
    };
    match read {
        Ok(Ok(header)) => {
            let peer = header.source.map_or(conn.peer, canonical_peer);
            Some((Prefixed::new(header.leftover, stream), conn.with_peer(peer)))
        }
        Ok(Err(e)) => {
            if let Some(m) = limits.metrics {
                m.proxy_protocol_rejected(limits.family);
            }
            tracing::debug!(peer = %conn.peer, error = %e, "PROXY protocol header refused; closing");
            None
        }
        Err(_) => {
            limits.closed_by(Deadline::HeaderRead);
            if let Some(m) = limits.metrics {
                m.proxy_protocol_rejected(limits.family);
            }
            tracing::debug!(peer = %conn.peer, "no PROXY protocol header within timeouts.headerRead; closing");
            None
        }
    }
}

/// Serves one accepted connection on `transport`: straight to HTTP, or after a TLS handshake that shares
/// the connection's first deadline.
async fn serve_stream<S, H>(
    builder: &Builder<TokioExecutor>,
    stream: S,
    conn: ConnInfo,
    transport: &Transport,
    handler: H,
    limits: Limits<'_>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: ConnHandler,
{
    match transport {
        Transport::Plain => {
            serve_io(builder, TokioIo::new(stream), conn, handler, limits, stop).await;
        }
        // Boxed: the handshake and a TLS connection's state are far larger than a plain connection's, and
        // inline they would size every connection task (and so every idle keep-alive connection) to them.
        Transport::Tls(store) => {
            Box::pin(serve_tls(
                builder, store, stream, conn, handler, limits, stop,
            ))
            .await;
        }
    }
}

/// [`serve_stream`] over TLS: the handshake within the first deadline, then HTTP.
async fn serve_tls<S, H>(
    builder: &Builder<TokioExecutor>,
    store: &CertsInForce,
    stream: S,
    conn: ConnInfo,
    handler: H,
    limits: Limits<'_>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: ConnHandler,
{
    match handshake(
        store.as_ref(),
        stream,
        conn.local,
        limits.deadline,
        limits.metrics,
    )
    .await
    {
        Ok((tls, info)) => {
            let conn = ConnInfo {
                tls: Some(Arc::new(info)),
                ..conn
            };
            serve_io(builder, TokioIo::new(tls), conn, handler, limits, stop).await;
        }
        Err(e) => {
            if e.kind() == std::io::ErrorKind::TimedOut {
                limits.closed_by(Deadline::HeaderRead);
            }
            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
        }
    }
}

/// The deadlines of one connection.
struct Limits<'a> {
    /// The first complete request head must have arrived by then.
    deadline: Instant,
    /// HTTP/2 connections without an open stream for this long are closed.
    idle: Duration,
    family: AddrFamily,
    metrics: Option<&'a Metrics>,
}

impl Limits<'_> {
    fn closed_by(&self, deadline: Deadline) {
        if let Some(m) = self.metrics {
            m.closed_by(deadline, self.family);
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (by preface) on one established connection, enforcing its deadlines:
/// no complete request head by `limits.deadline` closes it, and so does an HTTP/2 connection that has had
/// no open stream for `limits.idle`. `stop` asks it to finish its in-flight requests and close.
async fn serve_io<I, H>(
    builder: &Builder<TokioExecutor>,
    io: I,
    conn: ConnInfo,
    handler: H,
    limits: Limits<'_>,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: ConnHandler,
{
    let peer = conn.peer;
    let activity = Arc::new(Activity::default());
    let seen = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let stream = seen.request_started(req.version() == Version::HTTP_2);
        let response = handler.call(conn.clone(), req);
        async move {
            let resp = response.await?;
            Ok::<_, Infallible>(match stream {
                // The stream stays open until the response body is finished or dropped.
                Some(stream) => stream.track(resp),
                None => resp,
            })
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);

    // Until the first request head: TLS handshake, protocol detection and the head itself share one deadline.
    tokio::select! {
        biased;
        result = connection.as_mut() => return log_end(peer, result, &limits),
        () = activity.first_request() => {}
        () = tokio::time::sleep_until(limits.deadline) => {
            limits.closed_by(Deadline::HeaderRead);
            tracing::debug!(%peer, "no complete request head within timeouts.headerRead; closing");
            return;
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            return log_end(peer, connection.await, &limits);
        }
    }

    let idle = activity.idle_http2(limits.idle);
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return log_end(peer, result, &limits),
            () = &mut idle, if !closing => {
                limits.closed_by(Deadline::Idle);
                tracing::debug!(%peer, "HTTP/2 connection without a stream for timeouts.idle; closing");
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = stop.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Logs how a connection ended; hyper's header-read timeout on a kept-alive HTTP/1 connection counts as
/// closed by `headerRead`.
fn log_end(
    peer: std::net::SocketAddr,
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    limits: &Limits<'_>,
) {
    if let Err(e) = result {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            limits.closed_by(Deadline::HeaderRead);
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
