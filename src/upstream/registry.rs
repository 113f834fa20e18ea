//! Upstream state that outlives a reload: the HTTP clients (with their keep-alive pools) and the
//! round-robin position of every backend. The apply loop owns the registry and asks it for each backend's
//! endpoint set when it compiles a model; an unchanged backend keeps its clients and position.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::dns::Resolved;
use super::pool::Http1Client;
use super::{EndpointSet, ReclaimableBody};
use crate::model::{Model, PemSource, Protocol};
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
    Plain(Client<HttpConnector, ReclaimableBody>),
    /// `https` and `h2`.
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, ReclaimableBody>),
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

/// Clients, round-robin positions and metric handles, reused across compiles.
pub struct Registry {
    idle: Duration,
    clients: HashMap<ClientKey, Arc<UpstreamClient>>,
    metrics: Arc<Metrics>,
    /// What each backend keeps across compiles, by name.
    backends: HashMap<String, BackendState, foldhash::fast::RandomState>,
}

/// A backend's state across compiles: its round-robin position and metric handles, and its endpoint set
/// with what the set was built from. An unchanged backend keeps its set, so a change to one backend among
/// thousands rebuilds one set.
#[derive(Debug)]
struct BackendState {
    cursor: Arc<AtomicUsize>,
    metrics: Arc<BackendMetrics>,
    inputs: SetInputs,
    set: Arc<EndpointSet>,
}

/// What an endpoint set is built from (its cursor and metric handles are the backend's, by name).
#[derive(Debug, PartialEq)]
struct SetInputs {
    endpoints: Vec<std::net::SocketAddr>,
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
            metrics,
            backends: HashMap::default(),
        }
    }

    /// The endpoint set of every backend of `model`, reusing the clients, round-robin positions and metric
    /// handles of backends seen before; state no backend uses any more is dropped (requests in flight keep theirs).
    /// Returns one message per backend whose TLS client could not be built; its requests get 502.
    pub fn endpoint_sets(
        &mut self,
        model: &Model,
    ) -> (HashMap<String, Arc<EndpointSet>>, Vec<String>) {
        self.endpoint_sets_resolved(model, &Resolved::new())
    }

    /// Like [`Registry::endpoint_sets`], with the addresses of the backends' DNS names from `resolved`
    /// added to their endpoints.
    pub fn endpoint_sets_resolved(
        &mut self,
        model: &Model,
        resolved: &Resolved,
    ) -> (HashMap<String, Arc<EndpointSet>>, Vec<String>) {
        let mut errors = Vec::new();
        let mut clients = HashMap::new();
        let mut sets = HashMap::with_capacity(model.backends.len());
        let mut kept = HashMap::with_capacity_and_hasher(model.backends.len(), Default::default());
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
            let client = match clients.get(&key).or_else(|| self.clients.get(&key)) {
                Some(c) => Arc::clone(c),
                None => Arc::new(self.client(&key)),
            };
            if let UpstreamClient::Unavailable(reason) = client.as_ref() {
                errors.push(format!("backend {name:?}: {reason}"));
            }
            clients.insert(key, client.clone());
            let mut endpoints = backend.endpoints.clone();
            for named in &backend.named {
                for addr in resolved.get(named).into_iter().flatten() {
                    if !endpoints.contains(addr) {
                        endpoints.push(*addr);
                    }
                }
            }
            let inputs = SetInputs {
                endpoints,
                protocol: backend.protocol,
                // Identity, not contents: a new client (a changed CA or connect timeout) means a new set.
                client: Arc::as_ptr(&client) as usize,
                connect_retries: model.connect_retries,
            };
            // The name moves from the old map to the new one: no copy per backend per compile.
            let (name, state) = match self.backends.remove_entry(name.as_str()) {
                Some((name, old)) if old.inputs == inputs => (name, old),
                Some((name, old)) => {
                    let set = new_set(&name, &inputs, client, &old.cursor, &old.metrics);
                    let state = BackendState { inputs, set, ..old };
                    (name, state)
                }
                None => {
                    let cursor = Arc::default();
                    let metrics = Arc::new(self.metrics.backend(name));
                    let set = new_set(name, &inputs, client, &cursor, &metrics);
                    let state = BackendState {
                        cursor,
                        metrics,
                        inputs,
                        set,
                    };
                    (name.clone(), state)
                }
            };
            sets.insert(name.clone(), Arc::clone(&state.set));
            kept.insert(name, state);
        }
        self.clients = clients;
        self.backends = kept;
        (sets, errors)
    }

    fn client(&self, key: &ClientKey) -> UpstreamClient {
        if key.protocol == Protocol::Http1 {
            return UpstreamClient::Http1(Http1Client::new(
                key.connect,
                self.idle,
                MAX_IDLE_PER_ENDPOINT,
            ));
        }
        let builder = client_builder(self.idle, key.protocol.is_http2());
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(key.connect));
        http.set_nodelay(true);
        if !key.protocol.is_tls() {
            http.enforce_http(true);
            return UpstreamClient::Plain(builder.build(http));
        }
        http.enforce_http(false);
        let ca = match &key.ca {
            Some(Err(reason)) => return UpstreamClient::Unavailable(reason.clone()),
            Some(Ok(bytes)) => Some(PemSource::Inline(bytes.as_slice().into())),
            None => None,
        };
        match client_config(ca.as_ref()) {
            Ok(config) => {
                let tls = HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_only();
                let connector = if key.protocol.is_http2() {
                    tls.enable_http2().wrap_connector(http)
                } else {
                    tls.enable_http1().wrap_connector(http)
                };
                UpstreamClient::Tls(builder.build(connector))
            }
            Err(e) => UpstreamClient::Unavailable(format!("no TLS client: {e}")),
        }
    }
}

/// The endpoint set of backend `name` built from `inputs`, with the backend's cursor and metric handles.
fn new_set(
    name: &str,
    inputs: &SetInputs,
    client: Arc<UpstreamClient>,
    cursor: &Arc<AtomicUsize>,
    metrics: &Arc<BackendMetrics>,
) -> Arc<EndpointSet> {
    Arc::new(EndpointSet::new(
        name,
        inputs.endpoints.clone(),
        inputs.protocol,
        client,
        Arc::clone(cursor),
        inputs.connect_retries,
        Arc::clone(metrics),
    ))
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
