//! The Kubernetes source: reflectors for IngressClass, Ingress, Service, EndpointSlice and TLS Secrets, one
//! snapshot builder that coalesces their events (about 100 ms after the last change) into one translation,
//! and the model it publishes to the apply loop. The RBAC the controller needs is declared here, next to
//! the watchers that use it.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::changes::{Changes, ServiceKey};
use super::{
    apply_endpoint_changes, translate_with, update_endpoints, ClusterState, Memo, Options, Problem,
    ServiceSlices, Stats, Translation,
};
use super::{EndpointSlice, Service};
use crate::config::source::ModelSender;
use crate::model::Model;
use crate::telemetry::Metrics;

/// Changes closer together than this are coalesced: the first change after a quiet period is translated
/// at once, later ones when the cluster has been quiet this long.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A steady stream of changes is still translated at least this often.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// One RBAC rule: API groups, resources, verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// API groups (`""` is the core group).
    pub api_groups: &'static [&'static str],
    /// Resources (and subresources such as `ingresses/status`).
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// What the controller does cluster-wide: the watchers below, status writes, node addresses for a
/// NodePort publish Service, and Events on Ingresses.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        api_groups: &["networking.k8s.io"],
        resources: &["ingresses", "ingressclasses"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        api_groups: &[""],
        resources: &["services", "secrets"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        api_groups: &["discovery.k8s.io"],
        resources: &["endpointslices"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        api_groups: &["networking.k8s.io"],
        resources: &["ingresses/status"],
        verbs: &["update", "patch"],
    },
    Rule {
        api_groups: &[""],
        resources: &["nodes"],
        verbs: &["get", "list"],
    },
    Rule {
        api_groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// What the controller does in the election namespace: the leader Lease.
pub const ELECTION_RULES: &[Rule] = &[Rule {
    api_groups: &["coordination.k8s.io"],
    resources: &["leases"],
    verbs: &["get", "create", "update", "patch"],
}];

/// The RBAC rules as JSON (`--print-rbac`): `{"clusterRole": [...], "role": [...]}`.
pub fn rbac_json() -> serde_json::Value {
    let rules = |rules: &[Rule]| -> Vec<serde_json::Value> {
        rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "apiGroups": r.api_groups,
                    "resources": r.resources,
                    "verbs": r.verbs,
                })
            })
            .collect()
    };
    serde_json::json!({ "clusterRole": rules(CLUSTER_RULES), "role": rules(ELECTION_RULES) })
}

/// The reflector stores of every kind translation reads.
#[derive(Clone)]
pub struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    secrets: Store<Secret>,
}

impl Stores {
    /// The objects as they are now.
    pub fn state(&self) -> ClusterState {
        ClusterState {
            ingresses: self.ingresses.state(),
            classes: self.classes.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            secrets: self.secrets.state(),
        }
    }

    /// The Services `keys` with their EndpointSlices as the stores hold them now (`changes` knows
    /// which slices belong to which Service).
    fn service_slices(&self, changes: &Changes, keys: &[ServiceKey]) -> Vec<ServiceSlices> {
        keys.iter()
            .map(|(ns, name)| ServiceSlices {
                namespace: ns.clone(),
                name: name.clone(),
                service: self.services.get(&ObjectRef::new(name).within(ns)),
                slices: changes
                    .slices_of(ns, name)
                    .iter()
                    .filter_map(|slice| self.slices.get(&ObjectRef::new(slice).within(ns)))
                    .collect(),
            })
            .collect()
    }

    /// Returns once every store has completed its first list.
    async fn ready(&self) -> bool {
        self.ingresses.wait_until_ready().await.is_ok()
            && self.classes.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok()
            && self.secrets.wait_until_ready().await.is_ok()
    }
}

/// What a watch event or error is counted as.
pub trait WatchMetrics: Send + Sync + 'static {
    /// An event of `kind` arrived.
    fn event(&self, kind: &'static str);
    /// The watch of `kind` failed (it retries with backoff).
    fn error(&self, kind: &'static str);
}

/// Starts one reflector per kind (namespaced to `namespace` when given); each event is recorded in
/// `changes`.
pub fn start_watchers(
    client: &Client,
    namespace: Option<&str>,
    changes: &Arc<Changes>,
    metrics: &Arc<dyn WatchMetrics>,
    tasks: &mut JoinSet<()>,
) -> Stores {
    let scoped = |c: &Client| -> (Api<Ingress>, Api<Service>, Api<EndpointSlice>, Api<Secret>) {
        match namespace {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (ingresses, services, slices, secrets) = scoped(client);
    let all = watcher::Config::default();
    let mut watch = Watch { metrics, tasks };
    Stores {
        ingresses: watch.reflect(
            ingresses,
            all.clone(),
            "Ingress",
            strip_bookkeeping,
            everything_of(changes),
        ),
        classes: watch.reflect(
            Api::all(client.clone()),
            all.clone(),
            "IngressClass",
            strip_bookkeeping,
            everything_of(changes),
        ),
        services: watch.reflect(
            services,
            all.clone(),
            "Service",
            strip_bookkeeping,
            everything_of(changes),
        ),
        slices: watch.reflect(slices, all.clone(), "EndpointSlice", strip_slice, {
            let changes = Arc::clone(changes);
            move |event: &watcher::Event<EndpointSlice>| changes.slice_event(event)
        }),
        // Only TLS Secrets: the controller never sees other Secrets.
        secrets: watch.reflect(
            secrets,
            all.fields("type=kubernetes.io/tls"),
            "Secret",
            strip_bookkeeping,
            everything_of(changes),
        ),
    }
}

/// A recorder of events that need a full translation.
fn everything_of<K>(changes: &Arc<Changes>) -> impl Fn(&watcher::Event<K>) + Send + 'static {
    let changes = Arc::clone(changes);
    move |_| changes.everything()
}

/// What every reflector shares: the watch metrics and the task set their loops run in.
struct Watch<'a> {
    metrics: &'a Arc<dyn WatchMetrics>,
    tasks: &'a mut JoinSet<()>,
}

impl Watch<'_> {
    /// A reflector for `api`: its store, kept by a task that follows the watch (relisting after a 410 or
    /// a lost connection, with backoff; the store keeps its objects meanwhile) and hands each event to
    /// `record` once the store has it. `strip` drops what translation never reads before the store
    /// keeps an object.
    fn reflect<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        kind: &'static str,
        strip: fn(&mut K),
        record: impl Fn(&watcher::Event<K>) + Send + 'static,
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone,
    {
        let (reader, writer) = reflector::store();
        let stream = watcher(api, config)
            .default_backoff()
            .modify(strip)
            .reflect(writer);
        let metrics = self.metrics.clone();
        self.tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        metrics.event(kind);
                        record(&event);
                    }
                    Err(e) => {
                        metrics.error(kind);
                        tracing::warn!(kind, error = %e, "watch failed; retrying (the last good table keeps serving)");
                    }
                }
            }
        });
        reader
    }
}

/// Drops `metadata.managedFields` and the `kubectl.kubernetes.io/last-applied-configuration` annotation:
/// the server-side bookkeeping that often outweighs an object, never read by translation.
fn strip_bookkeeping<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// [`strip_bookkeeping`], and of a slice's metadata everything but its name, namespace, the
/// `kubernetes.io/service-name` label and what the store's keys use (uid, resourceVersion): there is one
/// slice per Service and family, often more, and their owner references, annotations and other labels
/// are never read.
fn strip_slice(slice: &mut EndpointSlice) {
    strip_bookkeeping(slice);
    let meta = &mut slice.metadata;
    meta.annotations = None;
    meta.owner_references = None;
    meta.generate_name = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == super::SERVICE_NAME_LABEL);
    }
}

/// The annotation `kubectl apply` keeps a copy of the whole object in.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the status writer needs after each translation.
#[derive(Debug, Clone, Default)]
pub struct Translated {
    /// Every Ingress as the store has it.
    pub ingresses: Vec<Arc<Ingress>>,
    /// The Ingresses of our class.
    pub owned: HashSet<super::IngressKey>,
    /// Problems of this translation.
    pub problems: Vec<Problem>,
}

/// Translates the stores whenever they change and publishes the model. `base` carries what the
/// configuration file sets (timeouts, redirect, connect retries); rules, backends and certificates come
/// from the cluster. Nothing is published before every store has completed its first list.
///
/// When only EndpointSlices changed since the last translation, only the backends of their Services
/// are re-resolved ([`update_endpoints`]); anything else translates every Ingress again.
pub async fn build_models(
    stores: Stores,
    options: Options,
    base: Model,
    changes: Arc<Changes>,
    models: ModelSender,
    translated: watch::Sender<Arc<Translated>>,
    stop: CancellationToken,
) {
    let mut changed = changes.subscribe();
    tokio::select! {
        ready = stores.ready() => if !ready { return },
        () = stop.cancelled() => return,
    }
    tracing::info!("Kubernetes caches synced");
    let mut builder = Builder {
        options,
        base,
        models,
        translated,
        published: None,
        memo: Memo::default(),
        logged: HashSet::new(),
    };
    loop {
        // Everything changed up to here is in this pass.
        changed.borrow_and_update();
        let pending = changes.take();
        let updated = !pending.everything
            && builder
                .update_endpoints(stores.service_slices(&changes, &pending.services))
                .await;
        if !updated {
            builder.translate(&stores).await;
        }
        let translated_at = tokio::time::Instant::now();
        if !settle(&mut changed, &stop, translated_at).await {
            return;
        }
    }
}

/// The model builder's state between passes.
struct Builder {
    options: Options,
    base: Model,
    models: ModelSender,
    translated: watch::Sender<Arc<Translated>>,
    /// The last model published, its counts and the number of Ingresses of ours in it.
    published: Option<(Arc<Model>, Stats, usize)>,
    /// What the last translation resolved (empty while a pass runs).
    memo: Memo,
    /// Problems logged, so each is logged once while it lasts.
    logged: HashSet<String>,
}

impl Builder {
    /// Applies EndpointSlice changes to the last published model; false when a full translation is
    /// needed instead (nothing published yet, or the change could alter more than endpoints).
    async fn update_endpoints(&mut self, slices: Vec<ServiceSlices>) -> bool {
        let Some((model, stats, owned)) = self.published.clone() else {
            return false;
        };
        let mut memo = std::mem::take(&mut self.memo);
        let job = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let updated = update_endpoints(&mut memo, &slices).map(|changes| {
                (!changes.is_empty()).then(|| {
                    let (mut model, mut stats) = ((*model).clone(), stats);
                    let backends = changes.len();
                    apply_endpoint_changes(&mut model, &mut stats, changes);
                    (model, stats, backends)
                })
            });
            (updated, memo, started.elapsed())
        });
        match job.await {
            Ok((updated, memo, took)) => {
                self.memo = memo;
                match updated {
                    None => false,
                    Some(None) => true,
                    Some(Some((model, stats, backends))) => {
                        tracing::debug!(backends, "endpoints changed");
                        self.publish(model, stats, owned, took);
                        true
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "endpoint update failed; translating everything");
                false
            }
        }
    }

    /// Translates every Ingress and publishes the result when it differs from the last one.
    async fn translate(&mut self, stores: &Stores) {
        let (state, opts) = (stores.state(), self.options.clone());
        let ingresses = state.ingresses.clone();
        let mut memo = std::mem::take(&mut self.memo);
        let job = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let translation = translate_with(&state, &opts, &mut memo);
            (translation, memo, started.elapsed())
        });
        let (translation, took) = match job.await {
            Ok((t, memo, took)) => {
                self.memo = memo;
                (t, took)
            }
            Err(e) => {
                tracing::error!(error = %e, "translation failed; keeping the last good table");
                return;
            }
        };
        let Translation {
            model,
            problems,
            owned,
            stats,
        } = translation;
        let model = Model {
            rules: model.rules,
            default_backend: model.default_backend,
            backends: model.backends,
            tls: model.tls,
            ..self.base.clone()
        };
        log_problems(&problems, &mut self.logged);
        if self.published.as_ref().map(|(m, _, _)| &**m) != Some(&model) {
            self.publish(model, stats, owned.len(), took);
        }
        self.translated.send_replace(Arc::new(Translated {
            ingresses,
            owned: owned.into_iter().collect(),
            problems,
        }));
    }

    /// Sends `model` to the apply loop and logs what changed.
    fn publish(&mut self, model: Model, stats: Stats, owned: usize, took: Duration) {
        log_change(
            self.published.as_ref().map(|(_, s, _)| s),
            &stats,
            owned,
            took,
        );
        let model = Arc::new(model);
        self.models.send_replace(Some(Arc::clone(&model)));
        self.published = Some((model, stats, owned));
    }
}

/// Waits for a change. A change after a quiet period (nothing translated for [`DEBOUNCE`]) returns at once,
/// so a single EndpointSlice update serves within milliseconds; otherwise waits until the cluster has been
/// quiet for [`DEBOUNCE`] (at most [`MAX_DELAY`]), so a burst becomes one translation. False when stopped.
async fn settle(
    changed: &mut watch::Receiver<u64>,
    stop: &CancellationToken,
    translated_at: tokio::time::Instant,
) -> bool {
    tokio::select! {
        got = changed.changed() => if got.is_err() { return false },
        () = stop.cancelled() => return false,
    }
    if translated_at.elapsed() >= DEBOUNCE {
        return true;
    }
    let latest = tokio::time::Instant::now() + MAX_DELAY;
    loop {
        let quiet = tokio::time::Instant::now() + DEBOUNCE;
        tokio::select! {
            got = changed.changed() => if got.is_err() { return false },
            () = tokio::time::sleep_until(quiet.min(latest)) => return true,
            () = stop.cancelled() => return false,
        }
        if tokio::time::Instant::now() >= latest {
            return true;
        }
    }
}

/// Logs each problem once while it persists.
fn log_problems(problems: &[Problem], logged: &mut HashSet<String>) {
    let now: HashSet<String> = problems.iter().map(ToString::to_string).collect();
    for p in &now {
        if !logged.contains(p) {
            tracing::warn!(problem = %p, "Ingress problem");
        }
    }
    *logged = now;
}

/// Logs a table change with what changed.
fn log_change(before: Option<&Stats>, after: &Stats, owned: usize, took: Duration) {
    let b = before.copied().unwrap_or_default();
    tracing::info!(
        translate_ms = took.as_millis(),
        ingresses = owned,
        hosts = after.hosts,
        hosts_before = b.hosts,
        paths = after.paths,
        paths_before = b.paths,
        endpoints_ipv4 = after.endpoints_v4,
        endpoints_ipv4_before = b.endpoints_v4,
        endpoints_ipv6 = after.endpoints_v6,
        endpoints_ipv6_before = b.endpoints_v6,
        certificates = after.certificates,
        certificates_before = b.certificates,
        "routing table changed"
    );
}

/// Counts of problems by reason, for the metrics.
pub fn problems_by_reason(problems: &[Problem]) -> Vec<(&'static str, u64)> {
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for p in problems {
        *counts.entry(p.reason).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The controller: where to watch, what is ours, where status addresses come from, who we are.
pub struct Controller {
    /// The API client.
    pub client: Client,
    /// Which Ingresses are ours.
    pub options: Options,
    /// Timeouts, redirect and retries from the configuration file.
    pub base: Model,
    /// The addresses written into Ingress status.
    pub publish: super::status::Publish,
    /// Namespace of the leader Lease.
    pub election_namespace: String,
    /// This replica's name in the Lease.
    pub identity: String,
    /// How long a Lease is held without renewal.
    pub lease_duration: Duration,
}

/// `NS/NAME` of `--publish-service`.
pub fn publish_service(text: &str) -> Result<super::status::Publish, String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(super::status::Publish::Service {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(format!(
            "--publish-service {text:?}: write it as NAMESPACE/NAME"
        )),
    }
}

/// The Lease duration: `DUALSTACK_INGRESS_LEASE_SECONDS` when set (tests), else 15 s.
pub fn lease_duration() -> Duration {
    std::env::var("DUALSTACK_INGRESS_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(15), Duration::from_secs)
}

/// This replica's identity in the Lease: the pod name (`POD_NAME` or `HOSTNAME`), else the process id.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("dualstack-ingress-{}", std::process::id()))
}

/// Watch events and errors counted in the proxy's metrics.
struct Counted(Arc<Metrics>);

impl WatchMetrics for Counted {
    fn event(&self, kind: &'static str) {
        self.0.k8s_watch_event(kind);
    }
    fn error(&self, kind: &'static str) {
        self.0.k8s_watch_error(kind);
    }
}

/// Status writes happen at most this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Status is also reconciled this often, so addresses of a publish Service or its nodes are followed.
const STATUS_RESYNC: Duration = Duration::from_secs(30);

impl Controller {
    /// Starts the watchers, the model builder, leader election and (on the leader) status writes and
    /// problem Events; returns the tasks.
    pub fn spawn(
        self,
        models: ModelSender,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        let changes = Arc::new(Changes::new());
        let counted: Arc<dyn WatchMetrics> = Arc::new(Counted(metrics.clone()));
        let stores = start_watchers(
            &self.client,
            self.options.watch_namespace.as_deref(),
            &changes,
            &counted,
            &mut tasks,
        );
        let (translated_tx, translated) = watch::channel(Arc::new(Translated::default()));
        tasks.spawn(build_models(
            stores,
            self.options.clone(),
            self.base.clone(),
            changes,
            models,
            translated_tx,
            stop.clone(),
        ));
        let (leader, election) = super::leader::spawn_election(
            self.client.clone(),
            self.election_namespace.clone(),
            self.identity.clone(),
            self.lease_duration,
            stop.clone(),
        );
        tasks.spawn(async move {
            let _ = election.await;
        });
        tasks.spawn(write_status(self, translated, leader, metrics, stop));
        tasks
    }
}

/// On the leader: keeps every Ingress's status in line with the published addresses, and posts problem
/// Events. Stops writing as soon as leadership is lost.
async fn write_status(
    controller: Controller,
    mut translated: watch::Receiver<Arc<Translated>>,
    mut leader: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut events =
        super::events::ProblemEvents::new(controller.client.clone(), controller.identity.clone());
    loop {
        metrics.set_leader(*leader.borrow_and_update());
        if *leader.borrow() {
            let current = translated.borrow_and_update().clone();
            metrics.set_translation_problems(&problems_by_reason(&current.problems));
            match super::status::resolve_addresses(&controller.client, &controller.publish).await {
                Ok(ours) => {
                    let outcome = super::status::reconcile(
                        &controller.client,
                        &current.ingresses,
                        &current.owned,
                        &ours,
                    )
                    .await;
                    for _ in 0..outcome.written {
                        metrics.status_write(true);
                    }
                    for _ in 0..outcome.failed {
                        metrics.status_write(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resolve the addresses to publish; status not written");
                }
            }
            events.post(&current.problems, &current.ingresses).await;
        } else {
            let current = translated.borrow_and_update().clone();
            metrics.set_translation_problems(&problems_by_reason(&current.problems));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = leader.changed() => if changed.is_err() { return },
            changed = translated.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(STATUS_RESYNC) => {}
        }
        // Coalesce bursts of changes into one pass.
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
    }
}
