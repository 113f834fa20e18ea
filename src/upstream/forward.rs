//! Sending one request to a backend: pick endpoints in round-robin order, retry on connect failure, bound
//! the wait for the response head.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpInfo;
use hyper_util::client::legacy::ResponseFuture;

use super::happy_eyeballs::{Addrs, ConnectError};
use super::pool::{EndpointPool, Lease, PoolBody, UpstreamBody};
use super::registry::UpstreamClient;
use super::{Endpoint, EndpointSet, ReclaimableBody};
use crate::http_types::BoxError;
use crate::telemetry::{AddrFamily, Metrics};

/// The upstream a log line or error names: the address of the connection, or, for an endpoint named by DNS
/// that no connection was made to (or whose connection's address is not known), its `name:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// The address connected to.
    Addr(SocketAddr),
    /// The endpoint's DNS name and port.
    Name(Authority),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Addr(addr) => addr.fmt(f),
            Peer::Name(authority) => authority.fmt(f),
        }
    }
}

impl Endpoint {
    /// The endpoint as errors name it before a connection to it is known.
    fn peer(&self) -> Peer {
        match self.addrs {
            Addrs::One(addr) => Peer::Addr(addr),
            Addrs::Race(_) => Peer::Name(self.authority.clone()),
        }
    }
}

/// Why a request could not be answered by an upstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The backend has no endpoints (503).
    #[error("backend {backend:?} has no endpoints")]
    NoEndpoints {
        /// Backend name.
        backend: String,
    },
    /// No endpoint accepted a connection (502).
    #[error(
        "could not connect to any endpoint of backend {backend:?}; last tried {endpoint}: {reason}"
    )]
    Connect {
        /// Backend name.
        backend: String,
        /// The last endpoint tried.
        endpoint: Peer,
        /// The connect error.
        reason: String,
    },
    /// The endpoint did not send a response head in time (504).
    #[error("endpoint {endpoint} of backend {backend:?} did not answer within {timeout:?}")]
    Timeout {
        /// Backend name.
        backend: String,
        /// The endpoint that timed out.
        endpoint: Peer,
        /// The configured response timeout.
        timeout: Duration,
    },
    /// Reading the client's request body failed (malformed chunked encoding, client gone): the client's
    /// error, answered 400, not the endpoint's.
    #[error(
        "reading the request body for endpoint {endpoint} of backend {backend:?} failed: {reason}"
    )]
    ClientBody {
        /// Backend name.
        backend: String,
        /// The endpoint the body was being sent to.
        endpoint: Peer,
        /// What went wrong.
        reason: String,
    },
    /// The connection failed after the request was sent (502).
    #[error("endpoint {endpoint} of backend {backend:?} failed: {reason}")]
    Upstream {
        /// Backend name.
        backend: String,
        /// The failing endpoint.
        endpoint: Peer,
        /// What went wrong.
        reason: String,
    },
}

/// Marks an error of the client's request body, so a failed exchange can be blamed on the client.
#[derive(Debug)]
struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Whether `e` or one of its causes is an error of the client's body.
fn caused_by_client_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<ClientBodyError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The parts of a request that every attempt reuses.
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Origin-form path and query, forwarded unchanged.
    pub path_and_query: PathAndQuery,
    /// Headers after hop-by-hop removal and forwarding headers.
    pub headers: HeaderMap,
    /// HTTP version spoken to the upstream.
    pub version: Version,
}

/// Hands one attempt to `client`.
fn send(client: &UpstreamClient, req: Request<ReclaimableBody>) -> Result<ResponseFuture, String> {
    match client {
        UpstreamClient::Plain(c) => Ok(c.request(req)),
        UpstreamClient::Tls(c) => Ok(c.request(req)),
        UpstreamClient::Unavailable(reason) => Err(reason.clone()),
        // Never reached: `forward` sends `http1` requests on the endpoint pools.
        UpstreamClient::Http1(_) => Err("no pooled client for this request".to_string()),
    }
}

/// Sends the request to `set`, trying the next endpoint when a connection cannot be established (at most
/// the backend's `connect_retries` further endpoints, each connect bounded by `timeouts.connect`).
/// Returns the response and the address that produced it (for an endpoint named by DNS, the address its
/// connection reached), and records in the backend's upstream-response
/// histogram the time from handing the request to that endpoint's client to the response head (connecting,
/// when no pooled connection was free, included; earlier failed attempts not).
/// The body is not buffered: a failed connect never reads it, so it is taken back for the next attempt.
pub async fn forward<B>(
    head: RequestHead,
    body: B,
    set: &EndpointSet,
    response_timeout: Duration,
    metrics: &Metrics,
) -> Result<(Response<UpstreamBody>, SocketAddr), ForwardError>
where
    B: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static,
{
    let body =
        http_body_util::BodyExt::map_err(body, |e| -> BoxError { Box::new(ClientBodyError(e)) });
    if let UpstreamClient::Http1(_) = set.client() {
        let body = PoolBody::new(body);
        return forward_pooled(head, body, set, response_timeout, metrics).await;
    }
    // Boxed: the common `http1` path's future (moved whole into the request's task) stays small.
    Box::pin(forward_legacy(head, body, set, response_timeout, metrics))
        .await
        .map(|(resp, endpoint)| (resp.map(|b| UpstreamBody::new(b, None)), endpoint))
}

/// Why a request on a pooled connection got no response head.
enum SendError {
    /// No connection: the request was not sent and comes back for the next endpoint.
    Connect(ConnectError, Box<Request<PoolBody>>),
    /// The exchange failed.
    Http(hyper::Error),
}

/// Sends `req` on `conn`; a reused connection that the upstream closed before the request went out gets
/// the request back unsent, which is then sent once more on a new connection (as hyper-util's client
/// retries such requests).
async fn send_pooled(
    mut sender: SendRequest<PoolBody>,
    reused: bool,
    peer: SocketAddr,
    req: Request<PoolBody>,
    pool: &EndpointPool,
) -> Result<(Response<Incoming>, SendRequest<PoolBody>, SocketAddr), SendError> {
    let unsent = match sender.try_send_request(req).await {
        Ok(resp) => return Ok((resp, sender, peer)),
        Err(mut e) => match e.take_message() {
            Some(req) if reused => req,
            _ => return Err(SendError::Http(e.into_error())),
        },
    };
    // Boxed: the rare path; inline, its futures would make every request's future larger.
    Box::pin(send_on_new_connection(unsent, pool)).await
}

/// Sends `req` on a new connection of `pool`.
async fn send_on_new_connection(
    req: Request<PoolBody>,
    pool: &EndpointPool,
) -> Result<(Response<Incoming>, SendRequest<PoolBody>, SocketAddr), SendError> {
    let (mut sender, peer) = match pool.connect().await {
        Ok(s) => s,
        Err(ce) => return Err(SendError::Connect(ce, Box::new(req))),
    };
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, sender, peer)),
        Err(e) => Err(SendError::Http(e)),
    }
}

/// [`forward`] for plain `http1` backends: each attempt checks a connection out of its endpoint's pool
/// (connecting within `timeouts.connect` when none is idle) before the request is built, so a failed
/// connect leaves the request, body and headers untouched for the next endpoint.
async fn forward_pooled(
    head: RequestHead,
    body: PoolBody,
    set: &EndpointSet,
    response_timeout: Duration,
    metrics: &Metrics,
) -> Result<(Response<UpstreamBody>, SocketAddr), ForwardError> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.uri_mut() = Uri::from(head.path_and_query);
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = head.headers;
    // An HTTP/1.0 client may send no Host; the upstream then gets the endpoint's authority.
    let set_host = !req.headers().contains_key(header::HOST);
    let mut pending = Some(req);
    let mut last_connect_error = None;
    for ep in set.attempt_order() {
        let Some(pool) = ep.pool(set.client()) else {
            continue;
        };
        // One clock reading for both the histogram and the deadline.
        let handed = tokio::time::Instant::now();
        let deadline = handed + response_timeout;
        let timed_out = |endpoint| ForwardError::Timeout {
            backend: set.name().to_string(),
            endpoint,
            timeout: response_timeout,
        };
        // An idle connection needs no timer; only connecting does.
        let conn = match pool.take_idle() {
            Some(conn) => conn,
            None => match tokio::time::timeout_at(deadline, pool.connect_new()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    last_connect_error = Some(connect_failed(set, ep, &e, metrics));
                    continue;
                }
                Err(_) => return Err(timed_out(ep.peer())),
            },
        };
        let Some(mut req) = pending.take() else {
            break;
        };
        if set_host {
            req.headers_mut().insert(header::HOST, ep.host());
        }
        let endpoint = Peer::Addr(conn.peer);
        match tokio::time::timeout_at(
            deadline,
            send_pooled(conn.sender, conn.reused, conn.peer, req, pool),
        )
        .await
        {
            Ok(Ok((resp, sender, peer))) => {
                set.metrics()
                    .observe_upstream(AddrFamily::of(&peer), handed.elapsed());
                // A connection that switched protocols belongs to the upgrade, never to the pool.
                let lease = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| Lease::new(sender, Arc::clone(pool), peer));
                return Ok((resp.map(|b| UpstreamBody::new(b, lease)), peer));
            }
            Ok(Err(SendError::Connect(e, req))) => {
                last_connect_error = Some(connect_failed(set, ep, &e, metrics));
                pending = Some(*req);
            }
            Ok(Err(SendError::Http(e))) if caused_by_client_body(&e) => {
                return Err(ForwardError::ClientBody {
                    backend: set.name().to_string(),
                    endpoint,
                    reason: error_chain(&e),
                })
            }
            Ok(Err(SendError::Http(e))) => {
                return Err(ForwardError::Upstream {
                    backend: set.name().to_string(),
                    endpoint,
                    reason: error_chain(&e),
                })
            }
            Err(_) => return Err(timed_out(endpoint)),
        }
    }
    no_answer(set, last_connect_error)
}

/// Counts and logs a failed connect; returns what the 502 names if no later endpoint answers.
fn connect_failed(
    set: &EndpointSet,
    ep: &Endpoint,
    e: &ConnectError,
    metrics: &Metrics,
) -> (Peer, String) {
    count_connect_error(ep, e.last_addr(), metrics);
    let endpoint = ep.peer();
    let reason = error_chain(e);
    tracing::warn!(backend = set.name(), %endpoint, error = %reason, "upstream connect failed; trying next endpoint");
    (endpoint, reason)
}

/// Counts a failed connect by the family of the endpoint's address, or for a DNS name of the address its
/// race tried last (a name without addresses tried none, and is not counted).
fn count_connect_error(ep: &Endpoint, raced: Option<SocketAddr>, metrics: &Metrics) {
    if let Some(addr) = ep.addr().or(raced) {
        metrics.upstream_connect_error(addr);
    }
}

/// The `ConnectError` behind a hyper-util client's connect error, if it is one of ours.
fn our_connect_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e ConnectError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(ce) = err.downcast_ref::<ConnectError>() {
            return Some(ce);
        }
        cur = err.source();
    }
    None
}

/// The address a hyper-util client's response came from: the endpoint's, or for a DNS name the address
/// its connection reached (the connector reports it).
fn answered_by<B>(ep: &Endpoint, resp: &Response<B>) -> SocketAddr {
    match &ep.addrs {
        Addrs::One(addr) => *addr,
        Addrs::Race(list) => resp
            .extensions()
            .get::<HttpInfo>()
            .map(HttpInfo::remote_addr)
            .or_else(|| list.first().copied())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
    }
}

/// The error when every attempt failed to connect, or there was nothing to try.
fn no_answer<T>(
    set: &EndpointSet,
    last_connect_error: Option<(Peer, String)>,
) -> Result<T, ForwardError> {
    match last_connect_error {
        Some((endpoint, reason)) => Err(ForwardError::Connect {
            backend: set.name().to_string(),
            endpoint,
            reason,
        }),
        None => Err(ForwardError::NoEndpoints {
            backend: set.name().to_string(),
        }),
    }
}

/// [`forward`] through hyper-util's client (`h2c`, `https`, `h2`).
async fn forward_legacy<B>(
    mut head: RequestHead,
    body: B,
    set: &EndpointSet,
    response_timeout: Duration,
    metrics: &Metrics,
) -> Result<(Response<Incoming>, SocketAddr), ForwardError>
where
    B: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static,
{
    let scheme = if set.protocol().is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let order = set.attempt_order();
    let attempts = order.len();
    let mut attempt = Some(ReclaimableBody::new(body));
    let mut last_connect_error = None;
    for (i, ep) in order.enumerate() {
        let Some((body, reclaim)) = attempt.take() else {
            break;
        };
        // Only a later attempt needs the headers again; the last one takes them.
        let headers = if i + 1 == attempts {
            std::mem::take(&mut head.headers)
        } else {
            head.headers.clone()
        };
        let handed = Instant::now();
        let client = ep.client.as_deref().unwrap_or(set.client());
        let sent = build_request(&head, headers, scheme.clone(), ep.authority.clone(), body)
            .and_then(|req| send(client, req));
        let sent = match sent {
            Ok(f) => f,
            Err(reason) => {
                return Err(ForwardError::Upstream {
                    backend: set.name().to_string(),
                    endpoint: ep.peer(),
                    reason,
                })
            }
        };
        match tokio::time::timeout(response_timeout, sent).await {
            Ok(Ok(resp)) => {
                let peer = answered_by(ep, &resp);
                set.metrics()
                    .observe_upstream(AddrFamily::of(&peer), handed.elapsed());
                return Ok((resp, peer));
            }
            Ok(Err(e)) if e.is_connect() => {
                count_connect_error(
                    ep,
                    our_connect_error(&e).and_then(ConnectError::last_addr),
                    metrics,
                );
                let endpoint = ep.peer();
                let reason = error_chain(&e);
                tracing::warn!(backend = set.name(), %endpoint, error = %reason, "upstream connect failed; trying next endpoint");
                last_connect_error = Some((endpoint, reason));
                attempt = reclaim.reclaim();
            }
            Ok(Err(e)) if caused_by_client_body(&e) => {
                return Err(ForwardError::ClientBody {
                    backend: set.name().to_string(),
                    endpoint: ep.peer(),
                    reason: error_chain(&e),
                })
            }
            Ok(Err(e)) => {
                return Err(ForwardError::Upstream {
                    backend: set.name().to_string(),
                    endpoint: ep.peer(),
                    reason: error_chain(&e),
                })
            }
            Err(_) => {
                return Err(ForwardError::Timeout {
                    backend: set.name().to_string(),
                    endpoint: ep.peer(),
                    timeout: response_timeout,
                })
            }
        }
    }
    no_answer(set, last_connect_error)
}

/// The upstream request for one attempt: absolute URI built from the endpoint's authority (its `SocketAddr`,
/// IPv6 bracketed by `Display`, or its `name:port`), which the client turns into origin-form on the wire.
fn build_request(
    head: &RequestHead,
    headers: HeaderMap,
    scheme: Scheme,
    authority: Authority,
    body: ReclaimableBody,
) -> Result<Request<ReclaimableBody>, String> {
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(head.path_and_query.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = head.version;
    *req.headers_mut() = headers;
    Ok(req)
}

/// `error: cause: cause` for logs and error bodies.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

impl ForwardError {
    /// The endpoint the error is about, if one was tried.
    pub fn endpoint(&self) -> Option<Peer> {
        match self {
            ForwardError::Connect { endpoint, .. }
            | ForwardError::Timeout { endpoint, .. }
            | ForwardError::ClientBody { endpoint, .. }
            | ForwardError::Upstream { endpoint, .. } => Some(endpoint.clone()),
            ForwardError::NoEndpoints { .. } => None,
        }
    }
}
