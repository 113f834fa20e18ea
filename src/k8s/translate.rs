//! Ingress objects → [`Model`]: class selection, rules, backends resolved through Services and
//! EndpointSlices, certificates from Secrets.
//!
//! Services, slices and Secrets are indexed by namespace and name once per translation, and a Service
//! port's endpoints are gathered once however many Ingresses use it, so the cost grows with the number
//! of objects, not with their product.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServicePort};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, Ingress, IngressBackend, IngressClass, IngressTLS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::{
    ClusterState, EndpointSlice, IngressKey, Options, Problem, Service, Stats, Translation,
    CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION, SERVICE_NAME_LABEL,
};
use crate::config::parse_host_rule;
use crate::model::{
    Backend, HostMatch, Model, NamedEndpoint, PathKind, PathRule, PemSource, Protocol, Rule,
    TlsCert, TlsHost,
};
use crate::tls::TlsError;

mod update;
pub use update::{apply_endpoint_changes, update_endpoints, EndpointChanges, ServiceSlices};

/// The namespace of an object; objects without one are in `default`, as `kubectl apply` would put them.
pub(crate) fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

fn key_of(meta: &ObjectMeta) -> IngressKey {
    IngressKey {
        namespace: namespace(meta).to_string(),
        name: name(meta).to_string(),
    }
}

fn class_is_ours(class: &IngressClass, opts: &Options) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(opts.controller_name.as_str())
}

fn is_default_class(class: &IngressClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Whether `ingress` is ours: in the watched namespace (when one is set), and
/// - `spec.ingressClassName` names an IngressClass in `classes` whose controller is ours (a class that does
///   not exist is not ours); else
/// - the legacy `kubernetes.io/ingress.class` annotation equals [`Options::ingress_class`]; else, with
///   neither set,
/// - an IngressClass of ours is marked `ingressclass.kubernetes.io/is-default-class: "true"`.
pub fn is_ours(ingress: &Ingress, classes: &[Arc<IngressClass>], opts: &Options) -> bool {
    if let Some(ns) = &opts.watch_namespace {
        if namespace(&ingress.metadata) != ns {
            return false;
        }
    }
    let class_name = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    if let Some(class_name) = class_name {
        return classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(class_name) && class_is_ours(c, opts));
    }
    let annotation = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION));
    if let Some(value) = annotation {
        return *value == opts.ingress_class;
    }
    classes
        .iter()
        .any(|c| class_is_ours(c, opts) && is_default_class(c))
}

/// Translates the Ingresses of our class into one [`Model`] (only `rules`, `default_backend`, `backends`
/// and `tls` are set).
///
/// Ingresses are taken oldest first (creationTimestamp, then namespace/name): on a conflict (the same
/// host, path and path type, `ImplementationSpecific` counting as `Prefix`, or a second `defaultBackend`)
/// the older one wins and the newer one gets a `conflict` [`Problem`]. Certificates come in the same
/// order, so the oldest Ingress's first certificate is the default one.
pub fn translate(state: &ClusterState, opts: &Options) -> Translation {
    translate_with(state, opts, &mut Memo::default())
}

/// What one translation learnt that the next can reuse: each Service port's resolved backend and each
/// Secret's certificate, with the objects they were computed from. An entry is reused only while those
/// very objects (the same `Arc`s in the reflector stores, which replace an object on every change) are
/// still the ones in the cluster state, so one EndpointSlice change among 10,000 Services re-resolves one
/// backend. Entries nothing used in a translation are dropped.
#[derive(Default)]
pub struct Memo {
    backends: FastMap<(String, String, PortKey), MemoBackend>,
    secrets: FastMap<(String, String), (Arc<Secret>, SecretResult)>,
    /// For each Service (namespace, name): the ports the translation resolved and the model backends
    /// that use each, so a change to the Service's EndpointSlices alone can update just those
    /// ([`update_endpoints`]).
    used_by: FastMap<(String, String), Vec<PortUsers>>,
}

/// A Service port and the model backends that use it.
type PortUsers = (PortKey, Vec<String>);

/// A resolved Service port and the objects it came from.
#[derive(Clone)]
struct MemoBackend {
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    resolved: Arc<Resolved>,
}

/// An owned [`PortRef`], for [`Memo`] keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PortKey {
    Number(i32),
    Name(String),
}

impl PortKey {
    fn as_ref(&self) -> PortRef<'_> {
        match self {
            PortKey::Number(n) => PortRef::Number(*n),
            PortKey::Name(n) => PortRef::Name(n),
        }
    }
}

impl From<PortRef<'_>> for PortKey {
    fn from(port: PortRef<'_>) -> PortKey {
        match port {
            PortRef::Number(n) => PortKey::Number(n),
            PortRef::Name(n) => PortKey::Name(n.to_string()),
        }
    }
}

fn same<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
}

/// [`translate`], reusing what `memo` holds from the previous translation for objects that have not
/// changed, and leaving in it what this one computed.
pub fn translate_with(state: &ClusterState, opts: &Options, memo: &mut Memo) -> Translation {
    let mut ours: Vec<&Ingress> = state
        .ingresses
        .iter()
        .map(|i| &**i)
        .filter(|i| is_ours(i, &state.classes, opts))
        .collect();
    ours.sort_by(|a, b| age_key(a).cmp(&age_key(b)));

    let capacity = (memo.backends.len(), memo.secrets.len());
    let mut builder = Builder {
        index: Index::new(state),
        model: Model::default(),
        problems: Vec::new(),
        host_rules: FastMap::default(),
        routes: FastMap::default(),
        default_owner: None,
        resolved: FastMap::default(),
        secrets: FastMap::default(),
        certs: FastMap::default(),
        users: FastMap::default(),
        memo: std::mem::take(memo),
        next_memo: Memo {
            backends: FastMap::with_capacity_and_hasher(capacity.0, Default::default()),
            secrets: FastMap::with_capacity_and_hasher(capacity.1, Default::default()),
            used_by: FastMap::default(),
        },
    };
    let mut owned = Vec::with_capacity(ours.len());
    for ingress in ours {
        let key = key_of(&ingress.metadata);
        builder.ingress(&key, ingress);
        owned.push(key);
    }
    let Builder {
        model,
        problems,
        mut next_memo,
        users,
        ..
    } = builder;
    for ((ns, service, port), names) in users {
        next_memo
            .used_by
            .entry((ns.to_string(), service.to_string()))
            .or_default()
            .push((PortKey::from(port), names));
    }
    *memo = next_memo;
    let stats = stats(&model);
    Translation {
        model,
        problems,
        owned,
        stats,
    }
}

/// Oldest first: creationTimestamp (none sorts first), then namespace, then name.
fn age_key(i: &Ingress) -> (Option<&Time>, &str, &str) {
    (
        i.metadata.creation_timestamp.as_ref(),
        namespace(&i.metadata),
        name(&i.metadata),
    )
}

fn stats(model: &Model) -> Stats {
    let mut s = Stats {
        hosts: model.rules.iter().filter(|r| r.host.is_some()).count(),
        paths: model.rules.iter().map(|r| r.paths.len()).sum(),
        certificates: model.tls.len(),
        ..Stats::default()
    };
    for b in model.backends.values() {
        for e in &b.endpoints {
            if e.is_ipv4() {
                s.endpoints_v4 += 1;
            } else {
                s.endpoints_v6 += 1;
            }
        }
    }
    s
}

/// Services, slices and Secrets by `(namespace, name)`; slices by the Service they belong to.
struct Index<'a> {
    services: FastMap<(&'a str, &'a str), &'a Arc<Service>>,
    slices: FastMap<(&'a str, &'a str), Vec<Arc<EndpointSlice>>>,
    secrets: FastMap<(&'a str, &'a str), &'a Arc<Secret>>,
}

/// A hash map with a fast seeded hasher, for the translation's own indexes (keys are object names).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl<'a> Index<'a> {
    fn new(state: &'a ClusterState) -> Index<'a> {
        let services = state
            .services
            .iter()
            .map(|s| ((namespace(&s.metadata), name(&s.metadata)), s))
            .collect();
        let secrets = state
            .secrets
            .iter()
            .map(|s| ((namespace(&s.metadata), name(&s.metadata)), s))
            .collect();
        let mut slices: FastMap<_, Vec<Arc<EndpointSlice>>> = FastMap::default();
        for slice in &state.slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices
                    .entry((namespace(&slice.metadata), service.as_str()))
                    .or_default()
                    .push(slice.clone());
            }
        }
        // A stable order (the stores' is not), so an unchanged Service compares equal to its memo.
        for list in slices.values_mut() {
            list.sort_by(|a, b| name(&a.metadata).cmp(name(&b.metadata)));
        }
        Index {
            services,
            slices,
            secrets,
        }
    }
}

/// How an Ingress backend names the Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
}

impl std::fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// A Service port resolved to a backend, with what went wrong on the way (reason, message).
struct Resolved {
    backend: Backend,
    problems: Vec<(&'static str, String)>,
}

/// What an Ingress backend points at.
enum Target<'a> {
    Service {
        name: &'a str,
        port: PortRef<'a>,
    },
    /// Something we cannot serve; the path answers 503 and the Problem says why.
    Unusable(&'static str, String),
}

type SecretResult = Result<(Arc<[u8]>, Arc<[u8]>), (&'static str, String)>;

struct Builder<'a> {
    index: Index<'a>,
    model: Model,
    problems: Vec<Problem>,
    /// Position of each host's rule in `model.rules`.
    host_rules: FastMap<Option<HostMatch>, usize>,
    /// Who routes each (host, normalised path, kind).
    routes: FastMap<(Option<HostMatch>, String, PathKind), IngressKey>,
    default_owner: Option<IngressKey>,
    /// Service ports already resolved, by (namespace, service, port).
    resolved: FastMap<(&'a str, &'a str, PortRef<'a>), Arc<Resolved>>,
    /// The model backends that use each Service port.
    users: FastMap<(&'a str, &'a str, PortRef<'a>), Vec<String>>,
    /// Secrets already read, by (namespace, name).
    secrets: FastMap<(&'a str, &'a str), SecretResult>,
    /// Position in `model.tls` of each Secret's certificate.
    certs: FastMap<(&'a str, &'a str), usize>,
    /// What the previous translation resolved.
    memo: Memo,
    /// What this translation resolved, for the next one.
    next_memo: Memo,
}

impl<'a> Builder<'a> {
    fn problem(&mut self, key: &IngressKey, reason: &'static str, message: String) {
        self.problems.push(Problem {
            ingress: key.clone(),
            reason,
            message,
        });
    }

    fn ingress(&mut self, key: &IngressKey, ingress: &'a Ingress) {
        let Some(spec) = &ingress.spec else { return };
        let ns = namespace(&ingress.metadata);
        if let Some(backend) = &spec.default_backend {
            if let Some(owner) = &self.default_owner {
                let message =
                    format!("defaultBackend is ignored: {owner} already sets the default backend");
                self.problem(key, "conflict", message);
            } else {
                let name = self.backend(key, ns, backend);
                self.model.default_backend = Some(name);
                self.default_owner = Some(key.clone());
            }
        }
        for rule in spec.rules.iter().flatten() {
            let host = match rule.host.as_deref() {
                None | Some("") => None,
                Some(text) => match parse_host_rule(text) {
                    Ok(h) => Some(h),
                    Err(message) => {
                        self.problem(key, "bad-host", format!("rule skipped: {message}"));
                        continue;
                    }
                },
            };
            for path in rule.http.iter().flat_map(|h| &h.paths) {
                self.path(key, ns, &host, path);
            }
        }
        for tls in spec.tls.iter().flatten() {
            self.tls(key, ns, tls);
        }
    }

    fn path(
        &mut self,
        key: &IngressKey,
        ns: &'a str,
        host: &Option<HostMatch>,
        path: &'a HTTPIngressPath,
    ) {
        let text = path.path.as_deref().unwrap_or("/");
        let kind = match path.path_type.as_str() {
            "Exact" => PathKind::Exact,
            "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
            other => {
                let message = format!(
                    "path {text:?} skipped: pathType {other:?} is not one of Exact, Prefix, ImplementationSpecific"
                );
                self.problem(key, "bad-path", message);
                return;
            }
        };
        if !text.starts_with('/') {
            let message = format!("path {text:?} skipped: it must start with \"/\"");
            self.problem(key, "bad-path", message);
            return;
        }
        let normalised = match kind {
            // The routing table compares prefixes segment by segment: "/a" and "/a/" are the same path.
            PathKind::Prefix => {
                let mut n = String::with_capacity(text.len());
                for seg in text.split('/').filter(|s| !s.is_empty()) {
                    n.push('/');
                    n.push_str(seg);
                }
                if n.is_empty() {
                    n.push('/');
                }
                n
            }
            PathKind::Exact => text.to_string(),
        };
        match self.routes.entry((host.clone(), normalised, kind)) {
            Entry::Occupied(owner) => {
                let message = format!(
                    "path {text:?} ({}) on host {} is ignored: {} already routes it",
                    kind_label(kind),
                    host_label(host.as_ref()),
                    owner.get()
                );
                self.problem(key, "conflict", message);
                return;
            }
            Entry::Vacant(v) => {
                v.insert(key.clone());
            }
        }
        let backend = self.backend(key, ns, &path.backend);
        let next = self.model.rules.len();
        let at = *self.host_rules.entry(host.clone()).or_insert(next);
        if at == next {
            self.model.rules.push(Rule {
                host: host.clone(),
                paths: Vec::new(),
            });
        }
        if let Some(rule) = self.model.rules.get_mut(at) {
            rule.paths.push(PathRule {
                path: text.to_string(),
                kind,
                backend,
                allow: Vec::new(),
            });
        }
    }

    /// Names the backend for `backend` of the Ingress `key` and makes sure the model has it.
    fn backend(&mut self, key: &IngressKey, ns: &'a str, backend: &'a IngressBackend) -> String {
        let (name, target) = backend_target(key, backend);
        if self.model.backends.contains_key(&name) {
            return name;
        }
        let resolved = match target {
            Target::Unusable(reason, message) => {
                self.problem(key, reason, message);
                Backend::default()
            }
            Target::Service {
                name: service,
                port,
            } => {
                let r = match self.resolved.get(&(ns, service, port)) {
                    Some(r) => Arc::clone(r),
                    None => {
                        let r = self.resolve_memoised(ns, service, port);
                        self.resolved.insert((ns, service, port), Arc::clone(&r));
                        r
                    }
                };
                for (reason, message) in &r.problems {
                    self.problem(key, reason, message.clone());
                }
                self.users
                    .entry((ns, service, port))
                    .or_default()
                    .push(name.clone());
                r.backend.clone()
            }
        };
        self.model.backends.insert(name.clone(), resolved);
        name
    }

    /// Resolves a Service port, reusing the previous translation's result when neither the Service nor
    /// any of its EndpointSlices has changed since.
    fn resolve_memoised(
        &mut self,
        ns: &'a str,
        service: &'a str,
        port: PortRef<'a>,
    ) -> Arc<Resolved> {
        let svc = self
            .index
            .services
            .get(&(ns, service))
            .map(|s| Arc::clone(s));
        let slices = self
            .index
            .slices
            .get(&(ns, service))
            .cloned()
            .unwrap_or_default();
        let memo_key = (ns.to_string(), service.to_string(), PortKey::from(port));
        let resolved = match self.memo.backends.remove(&memo_key) {
            Some(m)
                if m.service.as_ref().map(Arc::as_ptr) == svc.as_ref().map(Arc::as_ptr)
                    && same(&m.slices, &slices) =>
            {
                m.resolved
            }
            _ => Arc::new(resolve(&self.index, ns, service, port)),
        };
        self.next_memo.backends.insert(
            memo_key,
            MemoBackend {
                service: svc,
                slices,
                resolved: Arc::clone(&resolved),
            },
        );
        resolved
    }

    /// Reads a Secret's certificate and key, reusing the previous translation's result for an unchanged
    /// Secret.
    fn secret_memoised(&mut self, ns: &'a str, name: &'a str) -> SecretResult {
        let Some(secret) = self.index.secrets.get(&(ns, name)).map(|s| Arc::clone(s)) else {
            return load_secret(&self.index, ns, name);
        };
        let memo_key = (ns.to_string(), name.to_string());
        let loaded = match self.memo.secrets.remove(&memo_key) {
            Some((was, loaded)) if Arc::ptr_eq(&was, &secret) => loaded,
            _ => load_secret(&self.index, ns, name),
        };
        self.next_memo
            .secrets
            .insert(memo_key, (secret, loaded.clone()));
        loaded
    }

    fn tls(&mut self, key: &IngressKey, ns: &'a str, tls: &'a IngressTLS) {
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            tracing::debug!(ingress = %key, "tls entry without secretName: its hosts get the default certificate");
            return;
        };
        let mut hosts = Vec::new();
        for text in tls.hosts.iter().flatten() {
            match tls_host(text) {
                Ok(h) => hosts.push(h),
                Err(message) => {
                    let message = format!("tls host skipped: {message}");
                    self.problem(key, "bad-host", message);
                }
            }
        }
        if hosts.is_empty() && tls.hosts.as_ref().is_some_and(|h| !h.is_empty()) {
            return;
        }
        let loaded = match self.secrets.get(&(ns, secret)) {
            Some(loaded) => loaded.clone(),
            None => {
                let loaded = self.secret_memoised(ns, secret);
                self.secrets.insert((ns, secret), loaded.clone());
                loaded
            }
        };
        let (cert, key_pem) = match loaded {
            Ok(pair) => pair,
            Err((reason, message)) => {
                self.problem(key, reason, message);
                return;
            }
        };
        // Every use of one Secret shares one certificate entry with the union of the hosts.
        match self.certs.entry((ns, secret)) {
            Entry::Occupied(at) => {
                if let Some(existing) = self.model.tls.get_mut(*at.get()) {
                    for h in hosts {
                        if !existing.hosts.contains(&h) {
                            existing.hosts.push(h);
                        }
                    }
                }
            }
            Entry::Vacant(v) => {
                v.insert(self.model.tls.len());
                self.model.tls.push(TlsCert {
                    hosts,
                    cert: PemSource::Inline(cert),
                    key: PemSource::Inline(key_pem),
                });
            }
        }
    }
}

fn kind_label(kind: PathKind) -> &'static str {
    match kind {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
    }
}

/// A host as users write it; `*` for rules without a host.
pub(crate) fn host_label(host: Option<&HostMatch>) -> String {
    match host {
        None => "*".to_string(),
        Some(HostMatch::Exact(h)) => h.clone(),
        Some(HostMatch::Wildcard(s)) => format!("*.{s}"),
    }
}

fn tls_host(text: &str) -> Result<TlsHost, String> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(TlsHost::Ip(ip));
    }
    parse_host_rule(text).map(TlsHost::Name)
}

/// `namespace/ingress/service:port`, built without the formatting machinery (it runs once per path of
/// every Ingress on every translation).
fn service_backend_name(key: &IngressKey, service: &str, port: PortRef<'_>) -> String {
    let number;
    let port = match port {
        PortRef::Number(n) => {
            number = n.to_string();
            number.as_str()
        }
        PortRef::Name(name) => name,
    };
    let parts = [
        key.namespace.as_str(),
        "/",
        &key.name,
        "/",
        service,
        ":",
        port,
    ];
    let mut name = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        name.push_str(p);
    }
    name
}

/// The model name of an Ingress backend, `namespace/ingress/service:port`, and what it points at.
fn backend_target<'b>(key: &IngressKey, backend: &'b IngressBackend) -> (String, Target<'b>) {
    let prefix = || format!("{}/{}", key.namespace, key.name);
    if let Some(service) = &backend.service {
        let port = service.port.as_ref().and_then(|p| {
            match (p.number, p.name.as_deref().filter(|n| !n.is_empty())) {
                (Some(n), _) => Some(PortRef::Number(n)),
                (None, Some(name)) => Some(PortRef::Name(name)),
                (None, None) => None,
            }
        });
        return match port {
            Some(port) => (
                service_backend_name(key, &service.name, port),
                Target::Service {
                    name: &service.name,
                    port,
                },
            ),
            None => (
                format!("{}/{}", prefix(), service.name),
                Target::Unusable(
                    "bad-backend",
                    format!(
                        "backend service {} names no port (port.number or port.name)",
                        service.name
                    ),
                ),
            ),
        };
    }
    match &backend.resource {
        Some(r) => (
            format!("{}/{}:{}", prefix(), r.kind, r.name),
            Target::Unusable(
                "bad-backend",
                format!(
                    "resource backend {} {} is not supported; its paths answer 503",
                    r.kind, r.name
                ),
            ),
        ),
        None => (
            format!("{}/-", prefix()),
            Target::Unusable(
                "bad-backend",
                "backend names neither a service nor a resource".to_string(),
            ),
        ),
    }
}

/// The protocol for a Service port's `appProtocol`.
fn protocol(app_protocol: Option<&str>) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("kubernetes.io/h2c" | "h2c") => Protocol::H2c,
        Some("https" | "tls") => Protocol::Https,
        Some("h2") => Protocol::H2,
        _ => Protocol::Http1,
    }
}

fn find_port<'s>(ports: &'s [ServicePort], port: PortRef<'_>) -> Option<&'s ServicePort> {
    ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == n,
        PortRef::Name(name) => p.name.as_deref() == Some(name),
    })
}

/// Resolves `service`'s port `port` in `ns` to a backend: its endpoints from every EndpointSlice of the
/// Service (ready ones; serving-and-terminating ones only when none is ready), or its DNS name for an
/// `ExternalName` Service.
fn resolve(index: &Index<'_>, ns: &str, service: &str, port: PortRef<'_>) -> Resolved {
    let fail = |reason: &'static str, message: String| Resolved {
        backend: Backend::default(),
        problems: vec![(reason, message)],
    };
    let Some(svc) = index.services.get(&(ns, service)) else {
        return fail(
            "service-not-found",
            format!("service {ns}/{service} not found"),
        );
    };
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let service_port = find_port(ports, port);

    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        // ExternalName Services often list no ports; the Ingress's port number is the one to use then.
        let number = service_port.map(|p| p.port).or(match port {
            PortRef::Number(n) => Some(n),
            PortRef::Name(_) => None,
        });
        let Some(number) = number
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
        else {
            return fail(
                "port-not-found",
                format!("service {ns}/{service} has no port {port}"),
            );
        };
        let text = spec.and_then(|s| s.external_name.as_deref()).unwrap_or("");
        let Ok(HostMatch::Exact(host)) = parse_host_rule(text) else {
            return fail(
                "bad-external-name",
                format!("service {ns}/{service}: externalName {text:?} is not a DNS name"),
            );
        };
        return Resolved {
            backend: Backend {
                named: vec![NamedEndpoint { host, port: number }],
                protocol: protocol(service_port.and_then(|p| p.app_protocol.as_deref())),
                ..Backend::default()
            },
            problems: Vec::new(),
        };
    }

    let Some(service_port) = service_port else {
        return fail(
            "port-not-found",
            format!("service {ns}/{service} has no port {port}"),
        );
    };
    let port_name = service_port.name.as_deref().unwrap_or("");
    let mut problems = Vec::new();
    let mut ready = Vec::new();
    let mut fallback = Vec::new();
    for slice in index
        .slices
        .get(&(ns, service))
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| &**s)
    {
        match slice.address_type.as_str() {
            "IPv4" | "IPv6" => {}
            other => {
                let slice_name = name(&slice.metadata);
                tracing::debug!(%ns, %service, slice = %slice_name, address_type = %other, "EndpointSlice skipped");
                problems.push((
                    "fqdn-slice",
                    format!(
                        "EndpointSlice {ns}/{slice_name} of service {ns}/{service} has addressType {other}; only IPv4 and IPv6 are used"
                    ),
                ));
                continue;
            }
        }
        // Port numbers may differ between slices; the name is what ties a slice port to the Service port.
        let slice_port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        let Some(slice_port) = slice_port else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let Ok(ip) = address.parse::<IpAddr>() else {
                tracing::debug!(%ns, slice = %name(&slice.metadata), %address, "endpoint address is not an IP address");
                continue;
            };
            let c = endpoint.conditions.as_ref();
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let addr = SocketAddr::new(ip, slice_port);
            if is_ready {
                ready.push(addr);
            } else if serving && terminating {
                fallback.push(addr);
            }
        }
    }
    let mut endpoints = if ready.is_empty() { fallback } else { ready };
    endpoints.sort_unstable();
    endpoints.dedup();
    Resolved {
        backend: Backend {
            endpoints,
            protocol: protocol(service_port.app_protocol.as_deref()),
            ..Backend::default()
        },
        problems,
    }
}

/// Reads `tls.crt` and `tls.key` of the Secret `ns/name` and checks that they parse.
fn load_secret(index: &Index<'_>, ns: &str, name: &str) -> SecretResult {
    let Some(secret) = index.secrets.get(&(ns, name)) else {
        return Err(("secret-not-found", format!("secret {ns}/{name} not found")));
    };
    let bad = |what: String| ("bad-certificate", format!("secret {ns}/{name}: {what}"));
    let field = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
    };
    let cert = field("tls.crt").ok_or_else(|| bad("has no tls.crt".to_string()))?;
    let key = field("tls.key").ok_or_else(|| bad("has no tls.key".to_string()))?;
    let cert: Arc<[u8]> = Arc::from(cert);
    let chain = match crate::tls::store::parse_chain(&PemSource::Inline(cert.clone())) {
        Ok(chain) => chain,
        Err(e) => {
            let reason = match e {
                TlsError::Pem { reason, .. } => reason,
                other => other.to_string(),
            };
            return Err(bad(format!("tls.crt: {reason}")));
        }
    };
    let parsed_key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        bad(format!(
            "tls.key: no usable private key (PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })?;
    // The certificate store would refuse a key that does not belong to the certificate; say so here.
    if let Err(e) = CertifiedKey::from_der(chain, parsed_key, &crate::tls::provider()) {
        return Err(bad(format!("tls.key does not fit tls.crt: {e}")));
    }
    Ok((cert, Arc::from(key)))
}
