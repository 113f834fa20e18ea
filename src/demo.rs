//! A tiny upstream for the embedded default configuration, so that a fresh `dualstack-ingress` answers at
//! once. It replies with its own address and what the proxy told it about the client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::http_types::{full_body, ConnInfo, ProxyBody};
use crate::listen::{self, BindError};
use crate::model::{ClientTimeouts, Model};

/// Starts a demo upstream on every loopback endpoint of `model`; returns the addresses served. An
/// address whose family the host lacks is skipped with a warning, like every listener.
pub fn start_for(model: &Model, stop: &CancellationToken) -> Result<Vec<SocketAddr>, BindError> {
    let mut addrs: Vec<SocketAddr> = model
        .backends
        .values()
        .flat_map(|b| b.endpoints.iter().copied())
        .filter(|a| a.ip().is_loopback())
        .collect();
    addrs.sort();
    addrs.dedup();
    let builder = Arc::new(listen::http_builder(
        &ClientTimeouts::default(),
        &crate::model::ConnectionLimits::default(),
    ));
    let mut served = Vec::new();
    for addr in addrs {
        let listener = match listen::bind(addr) {
            Ok(l) => l,
            Err(e) if listen::family_unavailable(&e) => {
                tracing::warn!(error = %e, "demo upstream: address family unavailable; skipping");
                continue;
            }
            Err(e) => return Err(e),
        };
        served.push(addr);
        tokio::spawn(listen::serve(
            listener,
            builder.clone(),
            listen::ServeOptions::plain(&ClientTimeouts::default(), None),
            reply,
            stop.clone(),
        ));
    }
    Ok(served)
}

async fn reply(conn: ConnInfo, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let body = format!(
        "hello from the demo upstream at {}\nrequest: {} {}\nhost: {}\nx-forwarded-for: {}\nforwarded: {}\n",
        conn.local,
        req.method(),
        req.uri(),
        header("host"),
        header("x-forwarded-for"),
        header("forwarded"),
    );
    Ok(Response::new(full_body(body)))
}
