//! The accept loop: one task per listener, one task per connection, hyper-util's auto builder (HTTP/1.1
//! and h2c prior knowledge on the same port), graceful shutdown on request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::Timeouts;
use crate::proxy::{canonical_peer, ConnInfo, ProxyBody};
use crate::telemetry::{AddrFamily, Metrics};

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

/// The connection builder with the proxy's limits and timeouts.
pub fn http_builder(timeouts: &Timeouts) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(256);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Some(timeouts.idle / 2))
        .keep_alive_timeout(timeouts.idle / 2);
    builder
}

/// Accepts connections on `listener` until `stop` fires, then asks every open connection to finish its
/// in-flight requests and close, and returns once they have.
pub async fn serve<H: ConnHandler>(
    listener: TcpListener,
    builder: Arc<Builder<TokioExecutor>>,
    proto: &'static str,
    metrics: Arc<Metrics>,
    handler: H,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    let family = AddrFamily::of(&local);
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%local, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer: canonical_peer(peer),
            local,
            proto,
        };
        let handler = handler.clone();
        let service = service_fn(move |req| handler.call(conn, req));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        let guard = metrics.connection_opened(family);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            }
            drop(guard);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
