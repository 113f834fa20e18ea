//! Round-robin load balancing across all endpoints of a backend, whatever their address family. An endpoint
//! is an address, or a DNS name whose resolved addresses are raced on connect (one endpoint however many
//! addresses it has).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::uri::Authority;
use http::HeaderValue;

use super::happy_eyeballs::Addrs;
use super::pool::EndpointPool;
use super::registry::UpstreamClient;
use crate::model::{NamedEndpoint, Protocol};
use crate::telemetry::BackendMetrics;

/// One upstream endpoint: where it connects, and the URI authority and `Host` value made once from its
/// address (IPv6 bracketed by `SocketAddr`'s `Display`) or its DNS name and port, so no request formats or
/// parses it again. For `https` and `h2` the authority is also the TLS server name (SNI) and the name the
/// certificate is checked against.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where to connect: one address, or the addresses of a DNS name, raced.
    pub addrs: Addrs,
    /// The address or `name:port` as a URI authority.
    pub authority: Authority,
    /// The endpoint's keep-alive pool, for `http1` backends: the one an earlier set of the backend used,
    /// else made by the first request (most endpoints of a large cluster never need one).
    pool: OnceLock<Arc<EndpointPool>>,
    /// For an endpoint named by DNS of an `h2c`, `https` or `h2` backend: its own client, whose connector
    /// races the name's addresses (the backend's client connects to the address in the URI).
    pub client: Option<Arc<UpstreamClient>>,
}

impl Endpoint {
    /// An endpoint reached at `addrs`, known as `authority`, keeping the pool its address already has
    /// in `client` (an `http1` backend's).
    fn new(
        addrs: Addrs,
        authority: Authority,
        client: &UpstreamClient,
        own_client: Option<Arc<UpstreamClient>>,
    ) -> Endpoint {
        let pool = OnceLock::new();
        if let UpstreamClient::Http1(c) = client {
            if let Some(existing) = c.existing_pool(&addrs) {
                let _ = pool.set(existing);
            }
        }
        Endpoint {
            addrs,
            authority,
            pool,
            client: own_client,
        }
    }

    /// The keep-alive pool of this endpoint in `client` (the set's), for `http1` backends.
    pub fn pool(&self, client: &UpstreamClient) -> Option<&Arc<EndpointPool>> {
        match client {
            UpstreamClient::Http1(c) => Some(self.pool.get_or_init(|| c.pool(self.addrs.clone()))),
            _ => None,
        }
    }

    /// `authority` as a `Host` header value, for requests that came without one (HTTP/1.0); made when
    /// needed rather than kept per endpoint.
    pub fn host(&self) -> HeaderValue {
        // An authority is always a valid header value.
        HeaderValue::from_str(self.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The address of an endpoint given by address; `None` for one named by DNS.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.addrs {
            Addrs::One(addr) => Some(addr),
            Addrs::Race(_) => None,
        }
    }
}

/// An endpoint named by DNS as a set is built from it: the name, its resolved addresses in race order
/// ([`Addrs::race`]), and for `h2c`, `https` and `h2` the client that connects to them.
#[derive(Debug, Clone)]
pub struct NamedTarget {
    /// The name and port.
    pub name: NamedEndpoint,
    /// Its addresses ([`Addrs::Race`]).
    pub addrs: Addrs,
    /// Its own client (see [`Endpoint::client`]).
    pub client: Option<Arc<UpstreamClient>>,
}

/// The endpoints of one backend, the client that reaches them, a round-robin cursor and the backend's
/// metric handles, both of which survive reloads (they live in the [`super::Registry`]).
#[derive(Debug)]
pub struct EndpointSet {
    name: String,
    endpoints: Vec<Endpoint>,
    next: Arc<AtomicUsize>,
    protocol: Protocol,
    client: Arc<UpstreamClient>,
    attempts: usize,
    metrics: Arc<BackendMetrics>,
}

impl EndpointSet {
    /// A set named `name` (used in logs and metrics) over `endpoints`, spoken to with `protocol` through
    /// `client`, rotating with `cursor`, recording into `metrics`; a failed connect is retried on at most
    /// `connect_retries` further endpoints. An address that cannot be a URI authority (an IPv6 zone index such as
    /// `[fe80::1%eth0]:80`) is left out with an error log.
    pub fn new(
        name: &str,
        endpoints: Vec<SocketAddr>,
        protocol: Protocol,
        client: Arc<UpstreamClient>,
        cursor: Arc<AtomicUsize>,
        connect_retries: usize,
        metrics: Arc<BackendMetrics>,
    ) -> Self {
        let endpoints = endpoints
            .into_iter()
            .filter_map(|addr| match Authority::try_from(addr.to_string()) {
                Ok(authority) => Some(Endpoint::new(Addrs::One(addr), authority, &client, None)),
                Err(e) => {
                    tracing::error!(backend = name, endpoint = %addr, error = %e, "endpoint left out: not a valid URI authority");
                    None
                }
            })
            .collect();
        EndpointSet {
            name: name.to_string(),
            endpoints,
            next: cursor,
            protocol,
            client,
            attempts: connect_retries.saturating_add(1),
            metrics,
        }
    }

    /// The set with `named` appended: one endpoint per DNS name, whose authority (and so `Host` when the
    /// client sent none, and the TLS server name) is `name:port`.
    pub fn with_named(mut self, named: Vec<NamedTarget>) -> Self {
        for target in named {
            let text = target.name.to_string();
            match Authority::try_from(text.as_str()) {
                Ok(authority) => self.endpoints.push(Endpoint::new(
                    target.addrs,
                    authority,
                    &self.client,
                    target.client,
                )),
                Err(e) => {
                    tracing::error!(backend = self.name, endpoint = text, error = %e, "endpoint left out: not a valid URI authority");
                }
            }
        }
        self
    }

    /// The backend's request and upstream-response histograms.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    /// The protocol spoken to the endpoints.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The client that sends this backend's requests.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoints one request may try, starting at the next one in round-robin order: the first is the
    /// choice for this request, the rest (at most `connect_retries` of them) the fallbacks on connect failure.
    pub fn attempt_order(&self) -> impl ExactSizeIterator<Item = &Endpoint> + '_ {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n.min(self.attempts)).map(move |i| &self.endpoints[(start + i) % n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<BackendMetrics> {
        Arc::new(crate::telemetry::Metrics::new().backend("b"))
    }

    fn set(eps: &[SocketAddr], retries: usize) -> EndpointSet {
        let client = Arc::new(UpstreamClient::Unavailable("test".into()));
        EndpointSet::new(
            "b",
            eps.to_vec(),
            Protocol::Http1,
            client,
            Arc::default(),
            retries,
            metrics(),
        )
    }

    #[test]
    fn successive_requests_rotate_over_both_families() {
        let eps: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        let set = set(&eps, 2);
        let firsts: Vec<_> = (0..4)
            .map(|_| set.attempt_order().next().unwrap().addr().unwrap())
            .collect();
        assert_eq!(firsts, vec![eps[0], eps[1], eps[0], eps[1]]);
        assert_eq!(set.attempt_order().len(), 2);
    }

    #[test]
    fn attempts_are_capped_by_connect_retries() {
        let eps: Vec<SocketAddr> = (1..=10)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        assert_eq!(set(&eps, 2).attempt_order().len(), 3);
        assert_eq!(set(&eps, 0).attempt_order().len(), 1);
        assert_eq!(set(&eps, 16).attempt_order().len(), 10);
    }

    #[test]
    fn a_shared_cursor_continues_where_the_previous_set_stopped() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let cursor = Arc::new(AtomicUsize::new(0));
        let client = Arc::new(UpstreamClient::Unavailable("test".into()));
        let first = EndpointSet::new(
            "b",
            eps.clone(),
            Protocol::Http1,
            client.clone(),
            cursor.clone(),
            2,
            metrics(),
        );
        first.attempt_order().next();
        let second = EndpointSet::new(
            "b",
            eps.clone(),
            Protocol::Http1,
            client,
            cursor,
            2,
            metrics(),
        );
        assert_eq!(
            second.attempt_order().next().unwrap().addr().unwrap(),
            eps[1]
        );
    }

    #[test]
    fn a_dns_name_is_one_endpoint_named_by_its_name() {
        let resolved: Vec<SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
        ];
        let set = set(&["127.0.0.1:1".parse().unwrap()], 2).with_named(vec![NamedTarget {
            name: NamedEndpoint {
                host: "api.example".into(),
                port: 8080,
            },
            addrs: Addrs::race(&resolved),
            client: None,
        }]);
        assert_eq!(set.endpoints().len(), 2);
        let named = &set.endpoints()[1];
        assert_eq!(named.authority.as_str(), "api.example:8080");
        assert_eq!(named.host(), "api.example:8080");
        assert_eq!(named.addr(), None);
        assert_eq!(
            named.addrs,
            Addrs::Race(vec![resolved[1], resolved[0]].into())
        );
    }

    #[test]
    fn empty_set_yields_nothing() {
        assert_eq!(set(&[], 2).attempt_order().count(), 0);
    }
}
