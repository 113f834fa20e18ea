//! The floor for the load tests: the least an HTTP/1.1 reverse proxy on hyper can do per request, to compare
//! the proxy's CPU per request with (`loadtests/ab.sh`).
//!
//! ```sh
//! cargo build --release --example minimal_proxy
//! minimal_proxy 127.0.0.1:29290 127.0.0.1:29291
//! minimal_proxy '127.0.0.1:28080,[::1]:28080' 127.0.0.1:28001   # several listeners (loadtests/run.sh)
//! ```
//!
//! One thread; each client connection's task owns one upstream connection (`hyper::client::conn::http1`,
//! polled by the same task, no pool, no hand-off between tasks); each request gets one `X-Forwarded-For`.
//! No routing, no timeouts, no limits, no metrics, no logs: not a proxy to run, a measure of what hyper
//! itself costs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a measuring tool: a failed assumption ends it

use std::net::SocketAddr;

use http::{HeaderValue, Request};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

async fn serve(client: TcpStream, peer: SocketAddr, upstream: SocketAddr) {
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return;
    };
    let xff = HeaderValue::from_str(&peer.ip().to_string()).unwrap();
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let service = service_fn(move |mut req: Request<Incoming>| {
        let sender = sender.clone();
        let xff = xff.clone();
        async move {
            req.headers_mut().insert("x-forwarded-for", xff);
            sender.lock().await.send_request(req).await
        }
    });
    let server =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service);
    // Both halves in one task: the server connection ends the task. The upstream connection may end first
    // (an upstream that closes after its answer); the client then still gets that answer.
    tokio::pin!(server);
    tokio::select! {
        _ = &mut server => {}
        _ = conn => {
            let _ = server.await;
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: Vec<SocketAddr> = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:29290".into())
        .split(',')
        .map(|a| a.parse().expect("listen address"))
        .collect();
    let upstream: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:29291".into())
        .parse()
        .expect("upstream address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut accept_loops = tokio::task::JoinSet::new();
        for addr in listen {
            let listener = TcpListener::bind(addr).await.expect("bind");
            accept_loops.spawn(async move {
                loop {
                    let Ok((client, peer)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(client, peer, upstream));
                }
            });
        }
        while accept_loops.join_next().await.is_some() {}
    });
}
