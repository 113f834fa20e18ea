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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::Timeouts;
use crate::proxy::{canonical_peer, ConnInfo, ProxyBody};
use crate::telemetry::{AddrFamily, Metrics};
use crate::tls::accept::handshake;
use crate::tls::CertStore;

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
        // hyper's default of 100 headers keeps its parser's header array on the stack; more get 431.
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Some(timeouts.idle / 2))
        .keep_alive_timeout(timeouts.idle / 2);
    builder
}

/// What a listener serves: plain HTTP, or TLS with certificates from a store.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS; the handshake must finish within the given time.
    Tls(Arc<CertStore>, Duration),
}

/// Accepts connections on `listener` until `stop` fires, then asks every open connection to finish its
/// in-flight requests and close, and returns once they have.
pub async fn serve<H: ConnHandler>(
    listener: TcpListener,
    builder: Arc<Builder<TokioExecutor>>,
    transport: Transport,
    metrics: Option<Arc<Metrics>>,
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
        // The local address of the accepted socket: the real destination even on a wildcard listener.
        let local = stream.local_addr().unwrap_or(local);
        let conn = ConnInfo {
            peer: canonical_peer(peer),
            local,
            tls: None,
        };
        let (builder, handler, transport, metrics) = (
            builder.clone(),
            handler.clone(),
            transport.clone(),
            metrics.clone(),
        );
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _open = metrics.as_deref().map(|m| m.connection_opened(family));
            match transport {
                Transport::Plain => {
                    serve_io(&builder, TokioIo::new(stream), conn, handler, watcher).await
                }
                Transport::Tls(store, timeout) => {
                    match handshake(&store, stream, local, timeout, metrics.as_deref()).await {
                        Ok((tls, info)) => {
                            let conn = ConnInfo {
                                tls: Some(Arc::new(info)),
                                ..conn
                            };
                            serve_io(&builder, TokioIo::new(tls), conn, handler, watcher).await;
                        }
                        Err(e) => {
                            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed")
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves HTTP/1.1 or HTTP/2 (by preface) on one established connection.
async fn serve_io<I, H>(
    builder: &Builder<TokioExecutor>,
    io: I,
    conn: ConnInfo,
    handler: H,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: ConnHandler,
{
    let peer = conn.peer;
    let service = service_fn(move |req| handler.call(conn.clone(), req));
    let connection = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
