//! Upstreams named by DNS (Kubernetes `ExternalName` Services, `name:port` in the static file), resolved in
//! the background by the apply loop, never on the request path: both families (A and AAAA), each name
//! re-resolved when its records expire (TTL). Each name is one endpoint of its backend whose connects race
//! its current addresses (`super::happy_eyeballs`); a change of addresses recompiles the endpoint sets, so
//! new connections use the new addresses. A name that does not resolve has no addresses (its connects fail
//! and the next endpoint is tried, else 502) and is retried.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::model::{Model, NamedEndpoint};

/// Shortest time a resolution is kept (a TTL of 0 does not mean "resolve continuously").
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest time a resolution is kept, whatever its TTL.
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// A name that failed to resolve is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);
/// One lookup gives up after this long.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses of every name a model uses.
pub type Resolved = HashMap<NamedEndpoint, Vec<SocketAddr>>;

/// The names of the current model and their addresses.
pub struct Names {
    resolver: Option<TokioResolver>,
    entries: HashMap<NamedEndpoint, Entry>,
}

struct Entry {
    addrs: Vec<SocketAddr>,
    refresh_at: Instant,
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    /// A resolver with the system configuration (`/etc/resolv.conf`, `/etc/hosts`) asking for both
    /// address families.
    pub fn new() -> Self {
        Self::with_servers(&[])
    }

    /// A resolver asking `servers` (UDP, and TCP for truncated answers) for both address families, or
    /// with the system configuration when `servers` is empty. `/etc/hosts` is consulted either way.
    pub fn with_servers(servers: &[SocketAddr]) -> Self {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio()
        } else {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            Ok(TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            ))
        };
        let resolver = match builder {
            Ok(mut builder) => {
                builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
                match builder.build() {
                    Ok(resolver) => Some(resolver),
                    Err(e) => {
                        tracing::warn!(error = %e, "no DNS resolver: upstreams named by DNS get no addresses");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no system DNS configuration: upstreams named by DNS get no addresses");
                None
            }
        };
        Names {
            resolver,
            entries: HashMap::new(),
        }
    }

    /// Resolves every name `model` uses that is new or due, forgets names it no longer uses, and returns
    /// whether any name's addresses changed.
    pub async fn refresh(&mut self, model: &Model) -> bool {
        let wanted: HashSet<&NamedEndpoint> =
            model.backends.values().flat_map(|b| &b.named).collect();
        let before = self.entries.len();
        self.entries.retain(|name, _| wanted.contains(name));
        let mut changed = self.entries.len() != before;
        let now = Instant::now();
        let due: Vec<NamedEndpoint> = wanted
            .into_iter()
            .filter(|n| self.entries.get(*n).is_none_or(|e| e.refresh_at <= now))
            .cloned()
            .collect();
        let lookups = due.iter().map(|name| self.lookup(name));
        for (name, entry) in due
            .iter()
            .zip(futures_util::future::join_all(lookups).await)
        {
            let old = self.entries.insert(name.clone(), entry);
            changed |= old.map(|o| o.addrs) != self.entries.get(name).map(|e| e.addrs.clone());
        }
        changed
    }

    async fn lookup(&self, name: &NamedEndpoint) -> Entry {
        let Some(resolver) = &self.resolver else {
            return Entry {
                addrs: Vec::new(),
                refresh_at: Instant::now() + MAX_REFRESH,
            };
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(name.host.as_str())).await {
            Ok(Ok(found)) => {
                let mut addrs: Vec<SocketAddr> = found
                    .iter()
                    .map(|ip| SocketAddr::new(ip.to_canonical(), name.port))
                    .collect();
                addrs.sort();
                addrs.dedup();
                let ttl = found
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now())
                    .clamp(MIN_REFRESH, MAX_REFRESH);
                tracing::debug!(name = %name.host, ?addrs, ?ttl, "resolved");
                Entry {
                    addrs,
                    refresh_at: Instant::now() + ttl,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(name = %name.host, error = %e, "upstream name does not resolve; retrying");
                Entry {
                    addrs: Vec::new(),
                    refresh_at: Instant::now() + RETRY,
                }
            }
            Err(_) => {
                tracing::warn!(name = %name.host, "upstream name lookup timed out; retrying");
                Entry {
                    addrs: Vec::new(),
                    refresh_at: Instant::now() + RETRY,
                }
            }
        }
    }

    /// Every name's current addresses.
    pub fn resolved(&self) -> Resolved {
        self.entries
            .iter()
            .map(|(n, e)| (n.clone(), e.addrs.clone()))
            .collect()
    }

    /// When the next name is due, if any.
    pub fn next_refresh(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.refresh_at).min()
    }
}
