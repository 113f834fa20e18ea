//! The compiled routing table: built from a [`Model`] off the request path, then looked up per request
//! without locks or allocation.
//!
//! Host lookup is one hash probe for exact hosts and one for wildcards (the host minus its first label);
//! path lookup walks a segment trie, so its cost grows with the number of path segments only.

pub mod host;
pub mod normalize;
mod path;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{HostMatch, Model, UpstreamTimeouts};
use crate::upstream::{EndpointSet, Registry};

pub use host::RequestHost;
pub use path::PathTable;

/// Where a matched path sends a request, and who may ask.
#[derive(Debug, Clone)]
pub struct Target {
    /// The backend's endpoint set.
    pub backend: Arc<EndpointSet>,
    /// Client ranges allowed on the path; `None`: every client.
    pub allow: Option<Arc<[IpNet]>>,
}

impl Target {
    /// Whether `client` (canonical: an IPv4-mapped IPv6 address shown as IPv4) may use this path.
    pub fn allows(&self, client: IpAddr) -> bool {
        self.allow
            .as_deref()
            .is_none_or(|ranges| ranges.iter().any(|r| r.contains(&client)))
    }
}

/// An immutable routing table; swapped whole when the configuration changes.
#[derive(Debug, Default)]
pub struct Table {
    exact: HashMap<Box<str>, PathTable>,
    wildcard: HashMap<Box<str>, PathTable>,
    any_host: Option<PathTable>,
    default_backend: Option<Target>,
    /// Peers whose forwarding headers are believed; empty: none.
    pub trusted_proxies: Box<[IpNet]>,
    /// Upstream timeouts that apply to requests served by this table.
    pub timeouts: UpstreamTimeouts,
    /// Port of the first TLS listener when plain-HTTP requests for hosts with a certificate are redirected.
    pub https_redirect_port: Option<u16>,
}

impl Table {
    /// Compiles `model` with the endpoint set of each backend, as `registry` last built them
    /// ([`Registry::endpoint_sets`]).
    /// `tls_port` is the port of the first bound TLS listener, if any: plain-HTTP requests for hosts with a
    /// certificate are redirected there when the model asks for it. Paths naming a backend the model does
    /// not define are skipped (validation reports them before a model gets here).
    pub fn compile(model: &Model, registry: &Registry, tls_port: Option<u16>) -> Table {
        let mut table = Table {
            timeouts: model.timeouts,
            https_redirect_port: tls_port
                .map(|bound| model.https_redirect_port.unwrap_or(bound))
                .filter(|_| model.redirect_to_https && !model.tls.is_empty()),
            default_backend: model
                .default_backend
                .as_deref()
                .and_then(|n| registry.set(n).cloned())
                .map(|backend| Target {
                    backend,
                    allow: None,
                }),
            trusted_proxies: model.trusted_proxies.as_slice().into(),
            ..Table::default()
        };
        for rule in &model.rules {
            let paths = match &rule.host {
                None => table.any_host.get_or_insert_with(PathTable::default),
                Some(HostMatch::Exact(h)) => table.exact.entry(h.as_str().into()).or_default(),
                Some(HostMatch::Wildcard(s)) => {
                    table.wildcard.entry(s.as_str().into()).or_default()
                }
            };
            for p in &rule.paths {
                if let Some(backend) = registry.set(&p.backend) {
                    let target = Target {
                        backend: backend.clone(),
                        allow: (!p.allow.is_empty()).then(|| p.allow.as_slice().into()),
                    };
                    paths.insert(&p.path, p.kind, target);
                }
            }
        }
        table
    }

    /// Compiles `model` with fresh upstream state and no TLS listener (benchmarks, tests).
    pub fn compile_fresh(model: &Model) -> Table {
        let mut registry = Registry::new(std::time::Duration::from_secs(90));
        let _ = registry.endpoint_sets(model);
        Table::compile(model, &registry, None)
    }

    /// Finds the target for a request. The host picks one set of paths (exact host, else wildcard, else the
    /// rules without a host); when none of its paths match, the default backend answers.
    pub fn lookup(&self, host: &RequestHost<'_>, path: &str) -> Option<&Target> {
        self.paths_for(host)
            .and_then(|paths| paths.lookup(path))
            .or(self.default_backend.as_ref())
    }

    fn paths_for(&self, host: &RequestHost<'_>) -> Option<&PathTable> {
        if let RequestHost::Name(name) = host {
            if let Some(paths) = self.exact.get(*name) {
                return Some(paths);
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(paths) = self.wildcard.get(parent) {
                    return Some(paths);
                }
            }
        }
        self.any_host.as_ref()
    }
}

#[cfg(test)]
mod tests;
