//! The HTTP types every layer shares (listeners, the proxy, upstreams, admin, the demo upstream): the body
//! and error types, what is known about a client connection, and short text responses.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::proxy::forwarded::PeerText;
use crate::tls::accept::TlsInfo;

/// Errors carried in streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// What is known about one client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client address, canonical (an IPv4-mapped IPv6 peer is shown as IPv4).
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// The TLS session, on TLS listeners.
    pub tls: Option<Arc<TlsInfo>>,
    /// `peer` as the forwarding headers write it.
    pub peer_text: PeerText,
}

impl ConnInfo {
    /// A plain connection from `peer` (canonical) to `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        ConnInfo {
            peer,
            local,
            tls: None,
            peer_text: PeerText::new(peer.ip()),
        }
    }

    /// The same connection, its peer given by the PROXY protocol header instead.
    pub fn with_peer(self, peer: SocketAddr) -> Self {
        if peer.ip() == self.peer.ip() {
            return ConnInfo { peer, ..self };
        }
        ConnInfo {
            peer,
            peer_text: PeerText::new(peer.ip()),
            ..self
        }
    }

    /// `https` on TLS connections, else `http`.
    pub fn proto(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Canonical form of a peer address: `::ffff:a.b.c.d` becomes `a.b.c.d`.
pub fn canonical_peer(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A complete body from bytes.
pub fn full_body(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with `status`, `body` and `content_type`.
pub fn respond(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<ProxyBody> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A response with `status` and a one-line text body: `"<code> <reason>: <detail>\n"`.
pub fn error_response(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    respond(
        status,
        format!("{} {reason}: {detail}\n", status.as_u16()),
        "text/plain; charset=utf-8",
    )
}
