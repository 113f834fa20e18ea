//! The upstream for `loadtests/run.sh`: a minimal HTTP/1.1 server that answers every request with a fixed
//! `200 OK` and a short body, on one thread, with keep-alive.
//!
//! ```sh
//! cargo build --release --example fixed_upstream
//! fixed_upstream 127.0.0.1:28001 '[::1]:28002'
//! ```
//!
//! Each argument is one listen address (IPv6 bracketed); every address gets its own socket. It runs until
//! it is killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from the fixed upstream\n";

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

async fn serve(listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                eprintln!("fixed_upstream: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let addrs: Vec<SocketAddr> = match std::env::args()
        .skip(1)
        .map(|a| a.parse::<SocketAddr>().map_err(|e| format!("{a:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            eprintln!("usage: fixed_upstream ADDR:PORT ['[V6]:PORT' ...]");
            return std::process::ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("fixed_upstream: not a socket address: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fixed_upstream: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for addr in addrs {
            match TcpListener::bind(addr).await {
                Ok(l) => tasks.push(tokio::spawn(serve(l))),
                Err(e) => {
                    eprintln!("fixed_upstream: cannot listen on {addr}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        eprintln!("fixed_upstream: listening");
        for t in tasks {
            let _ = t.await;
        }
        std::process::ExitCode::SUCCESS
    })
}
