//! Round-robin load balancing across all endpoints of a backend, whatever their address family.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

use crate::model::{Backend, PemSource, Protocol};

/// One upstream endpoint: its address, and the URI authority made from it once (IPv6 bracketed by
/// `SocketAddr`'s `Display`), so no request formats or parses it again.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `addr` as a URI authority.
    pub authority: Authority,
}

/// The endpoints of one backend with a round-robin cursor.
#[derive(Debug)]
pub struct EndpointSet {
    name: String,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    protocol: Protocol,
    ca: Option<PemSource>,
}

impl EndpointSet {
    /// A set named `name` (used in logs) over `endpoints`. An address that cannot be a URI authority (an
    /// IPv6 zone index such as `[fe80::1%eth0]:80`) is left out with an error log.
    pub fn new(name: &str, endpoints: Vec<SocketAddr>) -> Self {
        let endpoints = endpoints
            .into_iter()
            .filter_map(|addr| match Authority::try_from(addr.to_string()) {
                Ok(authority) => Some(Endpoint { addr, authority }),
                Err(e) => {
                    tracing::error!(backend = name, endpoint = %addr, error = %e, "endpoint left out: not a valid URI authority");
                    None
                }
            })
            .collect();
        EndpointSet {
            name: name.to_string(),
            endpoints,
            next: AtomicUsize::new(0),
            protocol: Protocol::Http1,
            ca: None,
        }
    }

    /// The set for backend `name` of a model.
    pub fn for_backend(name: &str, backend: &Backend) -> Self {
        EndpointSet {
            protocol: backend.protocol,
            ca: backend.ca.clone(),
            ..EndpointSet::new(name, backend.endpoints.clone())
        }
    }

    /// The protocol spoken to the endpoints.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The CA bundle TLS endpoints are verified against (`None`: system roots).
    pub fn ca(&self) -> &Option<PemSource> {
        &self.ca
    }

    /// The backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Every endpoint once, starting at the next one in round-robin order: the first is the choice for
    /// this request, the rest are the fallbacks on connect failure.
    pub fn attempt_order(&self) -> impl Iterator<Item = &Endpoint> + '_ {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| &self.endpoints[(start + i) % n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successive_requests_rotate_over_both_families() {
        let eps: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        let set = EndpointSet::new("b", eps.clone());
        let firsts: Vec<_> = (0..4)
            .map(|_| set.attempt_order().next().unwrap().addr)
            .collect();
        assert_eq!(firsts, vec![eps[0], eps[1], eps[0], eps[1]]);
        let order: Vec<_> = set.attempt_order().collect();
        assert_eq!(order.len(), 2);
    }

    #[test]
    fn empty_set_yields_nothing() {
        assert_eq!(EndpointSet::new("b", vec![]).attempt_order().count(), 0);
    }
}
