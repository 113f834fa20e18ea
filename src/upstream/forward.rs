//! Sending one request to a backend: pick endpoints in round-robin order, retry on connect failure, bound
//! the wait for the response head.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{EndpointSet, ReclaimableBody};
use crate::model::{Model, PemSource, Protocol, Timeouts};
use crate::proxy::BoxError;
use crate::telemetry::Metrics;
use crate::tls::client::client_config;

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
        endpoint: SocketAddr,
        /// The connect error.
        reason: String,
    },
    /// The endpoint did not send a response head in time (504).
    #[error("endpoint {endpoint} of backend {backend:?} did not answer within {timeout:?}")]
    Timeout {
        /// Backend name.
        backend: String,
        /// The endpoint that timed out.
        endpoint: SocketAddr,
        /// The configured response timeout.
        timeout: Duration,
    },
    /// The connection failed after the request was sent (502).
    #[error("endpoint {endpoint} of backend {backend:?} failed: {reason}")]
    Upstream {
        /// Backend name.
        backend: String,
        /// The failing endpoint.
        endpoint: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

type PlainClient = Client<HttpConnector, ReclaimableBody>;
type TlsClient = Client<HttpsConnector<HttpConnector>, ReclaimableBody>;

/// The clients for TLS upstreams verified against one CA bundle (or the system roots).
struct TlsClients {
    https: TlsClient,
    h2: TlsClient,
}

/// The shared upstream clients: one keep-alive pool per endpoint address and protocol.
pub struct Upstreams {
    http1: PlainClient,
    h2c: PlainClient,
    tls: ArcSwap<HashMap<Option<PemSource>, Arc<TlsClients>>>,
    timeouts: Timeouts,
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

impl Upstreams {
    /// Clients whose connect timeout and pool idle timeout come from `timeouts`.
    pub fn new(timeouts: &Timeouts) -> Self {
        Upstreams {
            http1: client_builder(timeouts).build(tcp_connector(timeouts)),
            h2c: client_builder(timeouts)
                .http2_only(true)
                .build(tcp_connector(timeouts)),
            tls: ArcSwap::from_pointee(HashMap::new()),
            timeouts: *timeouts,
        }
    }

    /// Builds the TLS clients the backends of `model` need (reading their CA bundles), off the request
    /// path. Returns one message per backend whose TLS client could not be built; its requests get 502.
    pub fn prepare(&self, model: &Model) -> Vec<String> {
        let mut errors = Vec::new();
        let current = self.tls.load_full();
        let mut next: HashMap<Option<PemSource>, Arc<TlsClients>> = HashMap::new();
        for (name, backend) in model.backends.iter().filter(|(_, b)| b.protocol.is_tls()) {
            if next.contains_key(&backend.ca) {
                continue;
            }
            if let Some(existing) = current.get(&backend.ca) {
                next.insert(backend.ca.clone(), existing.clone());
                continue;
            }
            match client_config(backend.ca.as_ref()) {
                Ok(config) => {
                    let connector = |alpn_h2: bool| {
                        let b = HttpsConnectorBuilder::new()
                            .with_tls_config(config.clone())
                            .https_only();
                        let mut http = tcp_connector(&self.timeouts);
                        http.enforce_http(false);
                        if alpn_h2 {
                            b.enable_http2().wrap_connector(http)
                        } else {
                            b.enable_http1().wrap_connector(http)
                        }
                    };
                    let clients = TlsClients {
                        https: client_builder(&self.timeouts).build(connector(false)),
                        h2: client_builder(&self.timeouts)
                            .http2_only(true)
                            .build(connector(true)),
                    };
                    next.insert(backend.ca.clone(), Arc::new(clients));
                }
                Err(e) => errors.push(format!("backend {name:?}: {e}")),
            }
        }
        self.tls.store(Arc::new(next));
        errors
    }

    fn send(
        &self,
        set: &EndpointSet,
        req: Request<ReclaimableBody>,
    ) -> Result<ResponseFuture, String> {
        Ok(match set.protocol() {
            Protocol::Http1 => self.http1.request(req),
            Protocol::H2c => self.h2c.request(req),
            p @ (Protocol::Https | Protocol::H2) => {
                let clients = self.tls.load();
                let Some(c) = clients.get(set.ca()) else {
                    return Err(
                        "no TLS client for this backend (its CA bundle failed to load)".into(),
                    );
                };
                if p == Protocol::H2 {
                    c.h2.request(req)
                } else {
                    c.https.request(req)
                }
            }
        })
    }

    /// Sends the request to `set`, trying the next endpoint when a connection cannot be established.
    /// Returns the response and the endpoint that produced it.
    /// The body is not buffered: a failed connect never reads it, so it is taken back for the next attempt.
    pub async fn forward<B>(
        &self,
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
        let attempts = set.endpoints().len();
        let mut attempt = Some(ReclaimableBody::new(body));
        let mut last_connect_error = None;
        for (i, ep) in set.attempt_order().enumerate() {
            let endpoint = ep.addr;
            let Some((body, reclaim)) = attempt.take() else {
                break;
            };
            // Only a later attempt needs the headers again; the last one takes them.
            let headers = if i + 1 == attempts {
                std::mem::take(&mut head.headers)
            } else {
                head.headers.clone()
            };
            let sent = build_request(&head, headers, scheme.clone(), ep.authority.clone(), body)
                .and_then(|req| self.send(set, req));
            let sent = match sent {
                Ok(f) => f,
                Err(reason) => {
                    return Err(ForwardError::Upstream {
                        backend: set.name().to_string(),
                        endpoint,
                        reason,
                    })
                }
            };
            match tokio::time::timeout(response_timeout, sent).await {
                Ok(Ok(resp)) => return Ok((resp, endpoint)),
                Ok(Err(e)) if e.is_connect() => {
                    metrics.upstream_connect_error(endpoint);
                    let reason = error_chain(&e);
                    tracing::warn!(backend = set.name(), %endpoint, error = %reason, "upstream connect failed; trying next endpoint");
                    last_connect_error = Some((endpoint, reason));
                    attempt = reclaim.reclaim();
                }
                Ok(Err(e)) => {
                    return Err(ForwardError::Upstream {
                        backend: set.name().to_string(),
                        endpoint,
                        reason: error_chain(&e),
                    })
                }
                Err(_) => {
                    return Err(ForwardError::Timeout {
                        backend: set.name().to_string(),
                        endpoint,
                        timeout: response_timeout,
                    })
                }
            }
        }
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
}

/// The upstream request for one attempt: absolute URI built from the endpoint's `SocketAddr` (IPv6
/// bracketed by `Display`), which the client turns into origin-form on the wire.
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

fn tcp_connector(timeouts: &Timeouts) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    connector
}

fn client_builder(timeouts: &Timeouts) -> Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(timeouts.idle)
        // Enough warm connections per endpoint for heavy keep-alive traffic, without keeping one for
        // every request of a past burst (each idle connection holds its buffers).
        .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    b
}

/// Idle keep-alive connections kept per upstream endpoint.
pub const MAX_IDLE_PER_ENDPOINT: usize = 256;

impl ForwardError {
    /// The endpoint the error is about, if one was tried.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self {
            ForwardError::Connect { endpoint, .. }
            | ForwardError::Timeout { endpoint, .. }
            | ForwardError::Upstream { endpoint, .. } => Some(*endpoint),
            ForwardError::NoEndpoints { .. } => None,
        }
    }
}
