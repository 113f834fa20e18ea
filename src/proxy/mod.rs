//! The hyper service: route, rewrite headers, forward, stream the answer back, and turn every failure into
//! a short 4xx/5xx.

mod body;
mod body_limit;
mod error;
pub mod forwarded;
pub mod hop;
mod upgrade;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routing;
use crate::snapshot::Snapshot;
use crate::telemetry::{AddrFamily, Metrics};
use crate::upstream::{EndpointSet, ForwardError, Peer};

pub use crate::http_types::{canonical_peer, error_response, BoxError, ConnInfo, ProxyBody};

/// State shared by every connection: the snapshot in force, metrics, upgraded connections.
pub struct Shared {
    /// Everything requests use; each request loads it once and keeps it to the end.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Spliced upgraded connections, so the drain can wait for them.
    pub upgraded: TaskTracker,
    /// Fires when the drain period is over: upgraded connections close.
    pub drain_over: CancellationToken,
}

/// Serves one request.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    // Cheap reference-counted clones (no copy of the text) kept for the access log.
    let uri = req.uri().clone();
    let host_header = req.headers().get(header::HOST).cloned();
    let host = request_host(&uri, host_header.as_ref());
    // Loaded here, not in `route_and_forward`, so the chosen backend (borrowed from it) outlives the call.
    let snapshot = shared.snapshot.load_full();
    let client = Client::of(&snapshot, &conn, req.headers());
    let (resp, endpoint, backend) =
        route_and_forward(&shared, &snapshot, &conn, client, req, host).await;
    let status = resp.status();
    shared.metrics.request(
        AddrFamily::of(&conn.local),
        status,
        backend.map(EndpointSet::metrics),
        started.elapsed(),
    );
    tracing::info!(
        target: "access",
        client = %client.addr,
        method = %method,
        host = host.unwrap_or("-"),
        path = uri.path(),
        status = status.as_u16(),
        upstream = %DisplayOr(endpoint),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(resp)
}

/// Who a request is from.
#[derive(Debug, Clone, Copy)]
struct Client {
    /// The client address the access log and allow lists use: the peer, or, behind trusted proxies, the
    /// rightmost untrusted `X-Forwarded-For` entry.
    addr: IpAddr,
    /// Whether the peer is a trusted proxy (its `X-Forwarded-Proto`, `-Host` and `-Port` are kept).
    trusted_peer: bool,
}

impl Client {
    /// With no trusted proxies configured this is the peer, at the cost of one emptiness check.
    fn of(snapshot: &Snapshot, conn: &ConnInfo, headers: &http::HeaderMap) -> Client {
        let peer = conn.peer.ip();
        let trusted = &snapshot.table.trusted_proxies;
        if trusted.is_empty() || !forwarded::is_trusted(peer, trusted) {
            return Client {
                addr: peer,
                trusted_peer: false,
            };
        }
        Client {
            addr: forwarded::client_address(peer, headers, trusted),
            trusted_peer: true,
        }
    }
}

/// Displays the value or `-`.
struct DisplayOr<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for DisplayOr<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// The host the client asked for: the absolute-form or HTTP/2 authority, else the `Host` header
/// (RFC 9112 section 3.2.2).
fn request_host<'a>(uri: &'a http::Uri, host_header: Option<&'a HeaderValue>) -> Option<&'a str> {
    match uri.authority() {
        Some(a) => Some(a.as_str()),
        None => host_header.and_then(|v| v.to_str().ok()),
    }
}

/// Whether the request is gRPC, whose clients need errors as `grpc-status`, not HTML or text pages.
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether the client asked for trailers (`TE: trailers`), which gRPC over HTTP/2 requires upstream.
fn wants_trailers(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The answer, the endpoint that gave it (if one was tried) and the backend chosen (if the request was
/// routed).
type Outcome<'s> = (Response<ProxyBody>, Option<Peer>, Option<&'s EndpointSet>);

async fn route_and_forward<'s>(
    shared: &Shared,
    snapshot: &'s Snapshot,
    conn: &ConnInfo,
    client: Client,
    mut req: Request<Incoming>,
    host: Option<&str>,
) -> Outcome<'s> {
    let grpc = is_grpc(&req);
    let fail = |status: StatusCode, detail: &str| {
        if grpc {
            error::grpc(status, detail)
        } else {
            error_response(status, detail)
        }
    };
    if req.method() == Method::CONNECT {
        let mut resp = error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported");
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return (resp, None, None);
    }
    if let Some(resp) = refuse_malformed(&req) {
        return (resp, None, None);
    }
    let (version, body_limit) = (req.version(), snapshot.max_request_body);
    if body_limit::declared_over(&req, body_limit) {
        return (body_limit::too_large(version, body_limit, fail), None, None);
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return (
            error_response(StatusCode::BAD_REQUEST, "missing Host header"),
            None,
            None,
        );
    }
    if !snapshot.installed {
        return (
            fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no configuration loaded yet",
            ),
            None,
            None,
        );
    }
    let table = &snapshot.table;
    let mut scratch = String::new();
    let request_host = host.map_or(routing::RequestHost::Missing, |h| {
        routing::host::parse(h, &mut scratch)
    });

    if request_host == routing::RequestHost::Invalid {
        return (
            error_response(StatusCode::BAD_REQUEST, "invalid Host header"),
            None,
            None,
        );
    }

    if let routing::RequestHost::Name(name) = request_host {
        if let Some(resp) = redirect_or_misdirected(snapshot, conn, name, &req, fail) {
            return (resp, None, None);
        }
    }

    // Routing and the upstream must agree on the path: normalise it once, route on it, forward it.
    let path = match routing::normalize::normalize(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            return (
                error_response(StatusCode::BAD_REQUEST, &e.to_string()),
                None,
                None,
            )
        }
    };
    let Some(target) = table.lookup(&request_host, &path) else {
        return (
            fail(StatusCode::NOT_FOUND, "no route for this host and path"),
            None,
            None,
        );
    };
    let backend = &target.backend;
    if !target.allows(client.addr) {
        return (
            fail(
                StatusCode::FORBIDDEN,
                "the client address is not allowed on this path",
            ),
            None,
            Some(backend),
        );
    }

    let normalized_target = match path {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(p) => match with_query(p, req.uri().query()) {
            Some(pq) => Some(pq),
            None => {
                return (
                    error_response(StatusCode::BAD_REQUEST, "invalid request target"),
                    None,
                    None,
                )
            }
        },
    };
    let client_http2 = req.version() == Version::HTTP_2;
    let te_trailers = wants_trailers(req.headers());
    let upgrade = hop::strip(req.headers_mut()).filter(|_| req.version() == Version::HTTP_11);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (body, over_limit) = body_limit::cap(body, body_limit);
    let mut headers = parts.headers;
    if let Some(authority) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
    forwarded::apply(
        &mut headers,
        &forwarded::ClientSide {
            client: &conn.peer_text,
            proto: conn.proto(),
            host,
            listener_port: conn.local.port(),
            trusted_peer: client.trusted_peer,
        },
    );
    if let Some(up) = upgrade.clone() {
        hop::restore_upgrade(&mut headers, up);
    }
    let http2 = backend.protocol().is_http2();
    if http2 && te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if client_http2 && !http2 {
        join_cookies(&mut headers);
    }
    let head = crate::upstream::RequestHead {
        method: parts.method,
        path_and_query: normalized_target.unwrap_or_else(|| {
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
        }),
        headers,
        version: if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        },
    };
    // Boxed: the forwarding future is most of a request's state; held inline, every enclosing future (and
    // the copies made as each is created and moved into place) would carry its size.
    let result = Box::pin(crate::upstream::forward(
        head,
        body,
        backend,
        table.timeouts.response,
        &shared.metrics,
    ))
    .await;
    match result {
        // The body passed limits.maxRequestBody and the upstream request was aborted.
        Err(e) if over_limit.get() => (
            body_limit::too_large(version, body_limit, fail),
            e.endpoint(),
            Some(backend),
        ),
        Ok((resp, endpoint)) => (
            relay(
                shared,
                resp,
                client_upgrade,
                &table.timeouts,
                body::Parties {
                    client: client.addr,
                    endpoint,
                },
                fail,
            ),
            Some(Peer::Addr(endpoint)),
            Some(backend),
        ),
        Err(ForwardError::ClientBody {
            endpoint, reason, ..
        }) => {
            // The client's fault (malformed chunked body, client gone): not the endpoint's.
            tracing::info!(client = %client.addr, %endpoint, error = %reason, "client request body failed");
            (
                error_response(StatusCode::BAD_REQUEST, "malformed request body"),
                Some(endpoint),
                Some(backend),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "request failed");
            let (status, detail) = match &e {
                ForwardError::NoEndpoints { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "no upstream endpoints")
                }
                ForwardError::Connect { .. } => {
                    (StatusCode::BAD_GATEWAY, "could not connect to an upstream")
                }
                ForwardError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
                ForwardError::Upstream { .. } | ForwardError::ClientBody { .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream connection failed")
                }
            };
            (fail(status, detail), e.endpoint(), Some(backend))
        }
    }
}

/// The answer to a request for DNS name `host` that must not be routed on this connection: a redirect to
/// HTTPS on plain connections, or 421 on an HTTP/2 TLS connection whose certificate does not cover it.
fn redirect_or_misdirected<B>(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    host: &str,
    req: &Request<B>,
    fail: impl Fn(StatusCode, &str) -> Response<ProxyBody>,
) -> Option<Response<ProxyBody>> {
    match &conn.tls {
        None => https_redirect(snapshot, host, req).map(|location| error::redirect(&location)),
        // RFC 9110 section 15.5.20: an HTTP/2 connection may be reused for another host only if the
        // certificate covers it; otherwise the client must retry on a new connection.
        Some(tls)
            if req.version() == Version::HTTP_2
                && tls.sni.as_deref() != Some(host)
                && !tls.cert.covers(host) =>
        {
            Some(fail(
                StatusCode::MISDIRECTED_REQUEST,
                "this connection's certificate does not cover the host",
            ))
        }
        Some(_) => None,
    }
}

/// The upstream's response on its way to the client: hop-by-hop headers removed, or, for a `101` to an
/// upgrade the client asked for, both connections spliced.
fn relay(
    shared: &Shared,
    mut resp: Response<crate::upstream::UpstreamBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    timeouts: &crate::model::UpstreamTimeouts,
    parties: body::Parties,
    fail: impl Fn(StatusCode, &str) -> Response<ProxyBody>,
) -> Response<ProxyBody> {
    let endpoint = parties.endpoint;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let offered = hop::strip(resp.headers_mut());
        let (Some(client), Some(protocol)) = (client_upgrade, offered) else {
            tracing::warn!(%endpoint, "upstream answered 101 to a request that asked for no upgrade");
            return fail(
                StatusCode::BAD_GATEWAY,
                "upstream switched protocols unexpectedly",
            );
        };
        hop::restore_upgrade(resp.headers_mut(), protocol);
        let upstream = hyper::upgrade::on(&mut resp);
        upgrade::splice(
            client,
            upstream,
            &shared.upgraded,
            shared.drain_over.clone(),
        );
        return resp.map(|b| b.map_err(BoxError::from).boxed());
    }
    hop::strip(resp.headers_mut());
    let (upstream_read, client_write) = (timeouts.upstream_read, timeouts.client_write);
    resp.map(|b| body::Guarded::new(b, upstream_read, client_write, parties).boxed())
}

/// Refuses what RFC 9112 and RFC 9110 say a server must not act on: an authority-form target outside
/// `CONNECT` and an asterisk-form one outside `OPTIONS` (400), several `Host` headers (400, section 3.2),
/// and a transfer coding other than `chunked` (501: the coding would be lost when the body is re-framed).
fn refuse_malformed<B>(req: &Request<B>) -> Option<Response<ProxyBody>> {
    let uri = req.uri();
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Some(error_response(
            StatusCode::BAD_REQUEST,
            "authority-form request target is only allowed with CONNECT",
        ));
    }
    if uri.path() == "*" && req.method() != Method::OPTIONS {
        return Some(error_response(
            StatusCode::BAD_REQUEST,
            "asterisk-form request target is only allowed with OPTIONS",
        ));
    }
    let headers = req.headers();
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some(error_response(
            StatusCode::BAD_REQUEST,
            "more than one Host header",
        ));
    }
    let unsupported_coding = headers.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str().map_or(true, |s| {
            s.split(',')
                .map(str::trim)
                .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case("chunked"))
        })
    });
    if unsupported_coding {
        return Some(error_response(
            StatusCode::NOT_IMPLEMENTED,
            "only the chunked transfer coding is supported",
        ));
    }
    None
}

/// `path?query` as a request target.
fn with_query(path: String, query: Option<&str>) -> Option<http::uri::PathAndQuery> {
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    http::uri::PathAndQuery::try_from(target).ok()
}

/// HTTP/2 may split `cookie` into several fields; an HTTP/1.1 upstream must get one, joined with `; `
/// (RFC 9113 section 8.2.3).
fn join_cookies(headers: &mut http::HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in &headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// `https://host[:port]/path?query` when plain-HTTP requests for `host` must move to HTTPS: redirects are
/// on, a TLS listener exists, and a certificate is selected by the host.
fn https_redirect<B>(snapshot: &Snapshot, host: &str, req: &Request<B>) -> Option<String> {
    let port = snapshot.table.https_redirect_port?;
    let store = snapshot.certs.as_ref()?;
    if !store.has_certificate_for(host) {
        return None;
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Some(match port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    })
}
