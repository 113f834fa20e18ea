//! Sending one request to a backend: pick endpoints in round-robin order, retry on connect failure, bound
//! the wait for the response head.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::reclaim::Reclaim;
use super::{EndpointSet, ReclaimableBody};
use crate::model::Timeouts;
use crate::telemetry::Metrics;

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

/// The shared upstream client: one keep-alive pool per endpoint address.
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpConnector, ReclaimableBody>,
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
    /// A client whose connect timeout and pool idle timeout come from `timeouts`.
    pub fn new(timeouts: &Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(timeouts.idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstreams { client }
    }

    /// Sends the request to `set`, trying the next endpoint when a connection cannot be established.
    /// Returns the response and the endpoint that produced it.
    pub async fn forward(
        &self,
        head: RequestHead,
        body: ReclaimableBody,
        reclaim: Reclaim,
        set: &EndpointSet,
        response_timeout: Duration,
        metrics: &Metrics,
    ) -> Result<(Response<Incoming>, SocketAddr), ForwardError> {
        let mut attempt = Some((body, reclaim));
        let mut last_connect_error = None;
        for endpoint in set.attempt_order() {
            let Some((body, reclaim)) = attempt.take() else {
                break;
            };
            let req = match build_request(&head, endpoint, body) {
                Ok(r) => r,
                Err(reason) => {
                    return Err(ForwardError::Upstream {
                        backend: set.name().to_string(),
                        endpoint,
                        reason,
                    })
                }
            };
            match tokio::time::timeout(response_timeout, self.client.request(req)).await {
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
    endpoint: SocketAddr,
    body: ReclaimableBody,
) -> Result<Request<ReclaimableBody>, String> {
    let authority = Authority::try_from(endpoint.to_string())
        .map_err(|e| format!("endpoint {endpoint} is not a valid URI authority: {e}"))?;
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(head.path_and_query.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
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
