//! Upstream state that outlives a reload: the HTTP clients (with their keep-alive pools) and the
//! round-robin position of every backend. The apply loop owns the registry and asks it for each backend's
//! endpoint set when it compiles a model; an unchanged backend keeps its clients and position.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::dns::Resolved;
use super::happy_eyeballs::{Addrs, Connector};
use super::pool::Http1Client;
use super::{EndpointSet, NamedTarget, ReclaimableBody};
use crate::model::{Model, NamedEndpoint, PemSource, Protocol};
use crate::telemetry::{BackendMetrics, Metrics};
use crate::tls::client::client_config;
use crate::tls::store::read_pem;

/// Idle keep-alive connections kept per upstream endpoint.
pub const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// The client that sends a backend's requests: plain TCP or TLS, HTTP/1.1 or HTTP/2, or the reason none
/// could be built (its CA bundle failed to load), which its requests get as 502.
#[derive(Debug)]
pub enum UpstreamClient {
    /// `http1`: a keep-alive pool per endpoint, each request sent on a connection it checks out.
    Http1(Http1Client),
    /// `h2c`.
    Plain(Client<Connector, ReclaimableBody>),
    /// `https` and `h2`.
    Tls(Client<hyper_rustls::HttpsConnector<Connector>, ReclaimableBody>),
    /// No client: why.
    Unavailable(String),
}

/// What makes two backends share a client (and so a connection pool per endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    protocol: Protocol,
    /// The CA bundle's bytes (not its path: a rotated file must build a new client), or why it could not
    /// be read.
    ca: Option<Result<Vec<u8>, String>>,
    connect: Duration,
}

/// A backend's client and, for `https` and `h2`, the TLS configuration it was built with (the clients of
/// the backend's DNS-named endpoints are built with it too).
#[derive(Debug, Clone)]
struct Built {
    client: Arc<UpstreamClient>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Clients, round-robin positions and metric handles, reused across compiles.
pub struct Registry {
    idle: Duration,
    clients: HashMap<ClientKey, Built>,
    /// The clients of DNS-named endpoints of `h2c`, `https` and `h2` backends, by their backend's client
    /// settings and the addresses they race: a name whose addresses change gets a new client (and so new
    /// connections), and so does every name sharing them.
    named_clients: HashMap<(ClientKey, Addrs), Arc<UpstreamClient>>,
    metrics: Arc<Metrics>,
    /// What each backend keeps across compiles, by name; updated in place by each compile.
    backends: HashMap<String, BackendState, foldhash::fast::RandomState>,
    /// Counts compiles; a backend not marked with the current one is no longer in the model.
    generation: u64,
}

/// A backend's state across compiles: its round-robin position and metric handles, and its endpoint set
/// with what the set was built from. An unchanged backend keeps its set, so a change to one backend among
/// thousands rebuilds one set.
#[derive(Debug)]
struct BackendState {
    /// The compile that last saw the backend in its model.
    seen: u64,
    cursor: Arc<AtomicUsize>,
    metrics: Arc<BackendMetrics>,
    inputs: SetInputs,
    set: Arc<EndpointSet>,
}

/// What an endpoint set is built from (its cursor and metric handles are the backend's, by name).
#[derive(Debug, PartialEq)]
struct SetInputs {
    endpoints: Vec<SocketAddr>,
    /// Each DNS name, its addresses in race order, and the identity of its own client, if any.
    named: Vec<(NamedEndpoint, Addrs, usize)>,
    protocol: Protocol,
    client: usize,
    connect_retries: usize,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("idle", &self.idle)
            .field("clients", &self.clients)
            .field("backends", &self.backends.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry whose pools close connections idle for `idle`, recording into a private metric
    /// registry that nothing serves (benchmarks, tests); the proxy uses [`Registry::with_metrics`].
    pub fn new(idle: Duration) -> Self {
        Registry::with_metrics(idle, Arc::new(Metrics::new()))
    }

    /// An empty registry whose pools close connections idle for `idle` and whose endpoint sets record
    /// their request and upstream-response times into `metrics`.
    pub fn with_metrics(idle: Duration, metrics: Arc<Metrics>) -> Self {
        Registry {
            idle,
            clients: HashMap::new(),
            named_clients: HashMap::new(),
            metrics,
            backends: HashMap::default(),
            generation: 0,
        }
    }

    /// Builds the endpoint set of every backend of `model` (then [`Registry::set`] hands them out), reusing
    /// the clients, round-robin positions and metric handles of backends seen before, and the very set of
    /// a backend that has not changed; state no backend uses any more is dropped (requests in flight keep
    /// theirs). Returns one message per backend whose TLS client could not be built; its requests get 502.
    pub fn endpoint_sets(&mut self, model: &Model) -> Vec<String> {
        self.endpoint_sets_resolved(model, &Resolved::new())
    }

    /// The endpoint set of backend `name` as the last [`Registry::endpoint_sets`] built it.
    pub fn set(&self, name: &str) -> Option<&Arc<EndpointSet>> {
        self.backends.get(name).map(|state| &state.set)
    }

    /// Like [`Registry::endpoint_sets`], with the backends' DNS names as endpoints whose connects race
    /// their addresses from `resolved` (a name not in it has none: its connects fail).
    pub fn endpoint_sets_resolved(&mut self, model: &Model, resolved: &Resolved) -> Vec<String> {
        let mut errors = Vec::new();
        let mut clients: HashMap<ClientKey, Built> = HashMap::new();
        let mut named_clients = HashMap::new();
        self.generation += 1;
        let generation = self.generation;
        for (name, backend) in &model.backends {
            let ca = match (&backend.ca, backend.protocol.is_tls()) {
                (Some(source), true) => Some(read_pem(source).map_err(|e| e.to_string())),
                _ => None,
            };
            let key = ClientKey {
                protocol: backend.protocol,
                ca,
                connect: model.timeouts.connect,
            };
            let built = match clients.get(&key).or_else(|| self.clients.get(&key)) {
                Some(b) => b.clone(),
                None => self.client(&key),
            };
            let client = Arc::clone(&built.client);
            if let UpstreamClient::Unavailable(reason) = client.as_ref() {
                errors.push(format!("backend {name:?}: {reason}"));
            }
            let mut named = Vec::with_capacity(backend.named.len());
            for n in &backend.named {
                let addrs = Addrs::race(resolved.get(n).map_or(&[][..], Vec::as_slice));
                // `http1` connects through the endpoint's pool, an unavailable client fails every request.
                let own = match client.as_ref() {
                    UpstreamClient::Plain(_) | UpstreamClient::Tls(_) => {
                        let id = (key.clone(), addrs.clone());
                        let c = match named_clients
                            .get(&id)
                            .or_else(|| self.named_clients.get(&id))
                        {
                            Some(c) => Arc::clone(c),
                            None => Arc::new(self.legacy_client(&key, built.tls.clone(), &addrs)),
                        };
                        named_clients.insert(id, Arc::clone(&c));
                        Some(c)
                    }
                    UpstreamClient::Http1(_) | UpstreamClient::Unavailable(_) => None,
                };
                named.push(NamedTarget {
                    name: n.clone(),
                    addrs,
                    client: own,
                });
            }
            clients.insert(key, built);
            let inputs = SetInputs {
                endpoints: backend.endpoints.clone(),
                named: named
                    .iter()
                    .map(|t| {
                        let id = t.client.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize);
                        (t.name.clone(), t.addrs.clone(), id)
                    })
                    .collect(),
                protocol: backend.protocol,
                // Identity, not contents: a new client (a changed CA or connect timeout) means a new set.
                client: Arc::as_ptr(&client) as usize,
                connect_retries: model.connect_retries,
            };
            // Updated in place: an unchanged backend costs one lookup and one comparison per compile.
            match self.backends.get_mut(name.as_str()) {
                Some(state) => {
                    state.seen = generation;
                    if state.inputs != inputs {
                        state.set =
                            new_set(name, &inputs, named, client, &state.cursor, &state.metrics);
                        state.inputs = inputs;
                    }
                }
                None => {
                    let cursor = Arc::default();
                    let metrics = Arc::new(self.metrics.backend(name));
                    let set = new_set(name, &inputs, named, client, &cursor, &metrics);
                    let state = BackendState {
                        seen: generation,
                        cursor,
                        metrics,
                        inputs,
                        set,
                    };
                    self.backends.insert(name.clone(), state);
                }
            }
        }
        self.backends.retain(|_, state| state.seen == generation);
        self.clients = clients;
        self.named_clients = named_clients;
        errors
    }

    /// The client of backends with `key` (and the TLS configuration of `https` and `h2`).
    fn client(&self, key: &ClientKey) -> Built {
        if key.protocol == Protocol::Http1 {
            let client = UpstreamClient::Http1(Http1Client::new(
                key.connect,
                self.idle,
                MAX_IDLE_PER_ENDPOINT,
            ));
            return Built {
                client: Arc::new(client),
                tls: None,
            };
        }
        let unavailable = |reason: String| Built {
            client: Arc::new(UpstreamClient::Unavailable(reason)),
            tls: None,
        };
        let tls = if key.protocol.is_tls() {
            let ca = match &key.ca {
                Some(Err(reason)) => return unavailable(reason.clone()),
                Some(Ok(bytes)) => Some(PemSource::Inline(bytes.as_slice().into())),
                None => None,
            };
            match client_config(ca.as_ref()) {
                Ok(config) => Some(Arc::new(config)),
                Err(e) => return unavailable(format!("no TLS client: {e}")),
            }
        } else {
            None
        };
        let client = self.legacy(key, tls.as_deref(), Connector::new(key.connect));
        Built {
            client: Arc::new(client),
            tls,
        }
    }

    /// The client of a DNS-named endpoint of an `h2c`, `https` or `h2` backend with `key`: like the
    /// backend's, its connector racing `addrs`.
    fn legacy_client(
        &self,
        key: &ClientKey,
        tls: Option<Arc<rustls::ClientConfig>>,
        addrs: &Addrs,
    ) -> UpstreamClient {
        self.legacy(
            key,
            tls.as_deref(),
            Connector::to(addrs.clone(), key.connect),
        )
    }

    /// A hyper-util client for `h2c` (`tls` is `None`), `https` or `h2` over `connector`.
    fn legacy(
        &self,
        key: &ClientKey,
        tls: Option<&rustls::ClientConfig>,
        connector: Connector,
    ) -> UpstreamClient {
        let builder = client_builder(self.idle, key.protocol.is_http2());
        let Some(config) = tls else {
            return UpstreamClient::Plain(builder.build(connector));
        };
        let tls = HttpsConnectorBuilder::new()
            .with_tls_config(config.clone())
            .https_only();
        let connector = if key.protocol.is_http2() {
            tls.enable_http2().wrap_connector(connector)
        } else {
            tls.enable_http1().wrap_connector(connector)
        };
        UpstreamClient::Tls(builder.build(connector))
    }
}

/// The endpoint set of backend `name` built from `inputs`, with the backend's cursor and metric handles.
fn new_set(
    name: &str,
    inputs: &SetInputs,
    named: Vec<NamedTarget>,
    client: Arc<UpstreamClient>,
    cursor: &Arc<AtomicUsize>,
    metrics: &Arc<BackendMetrics>,
) -> Arc<EndpointSet> {
    Arc::new(
        EndpointSet::new(
            name,
            inputs.endpoints.clone(),
            inputs.protocol,
            client,
            Arc::clone(cursor),
            inputs.connect_retries,
            Arc::clone(metrics),
        )
        .with_named(named),
    )
}

fn client_builder(idle: Duration, http2_only: bool) -> Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(idle)
        // Enough warm connections per endpoint for heavy keep-alive traffic, without keeping one for
        // every request of a past burst (each idle connection holds its buffers).
        .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(http2_only);
    b
}
