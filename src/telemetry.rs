//! Logging (tracing subscriber, access log) and the Prometheus metric registry.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: piped logs (journald, kubectl logs, files) stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Address family of a listener or peer, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl AddrFamily {
    /// The family of `addr`.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            AddrFamily::Ipv4
        } else {
            AddrFamily::Ipv6
        }
    }

    /// `ipv4` or `ipv6`.
    pub fn label(self) -> &'static str {
        match self {
            AddrFamily::Ipv4 => "ipv4",
            AddrFamily::Ipv6 => "ipv6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    code: &'static str,
    family: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FamilyLabels {
    family: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeadlineLabels {
    deadline: &'static str,
    family: &'static str,
}

/// A connection deadline, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// No complete request head within `timeouts.headerRead` (from accept, or from the end of the last
    /// response on a kept-alive HTTP/1 connection).
    HeaderRead,
    /// An HTTP/2 connection without an open stream for `timeouts.idle`.
    Idle,
}

impl Deadline {
    /// `header_read` or `idle`.
    pub fn label(self) -> &'static str {
        match self {
            Deadline::HeaderRead => "header_read",
            Deadline::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandshakeLabels {
    family: &'static str,
    result: &'static str,
    version: &'static str,
    alpn: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    family: &'static str,
    code: &'static str,
    backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    family: &'static str,
    backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The status class of `status` as an index into [`CLASSES`].
fn class_index(status: http::StatusCode) -> usize {
    usize::from((status.as_u16() / 100).clamp(1, 5)) - 1
}

/// Latency buckets in seconds, the ones ingress-nginx uses (Prometheus' default buckets), so dashboards
/// and alerts written for it carry over.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `backend` label of requests that were not routed to a backend (no route, not ready, rejected).
pub const NO_BACKEND: &str = "-";

/// The Kubernetes object kinds the controller watches; their counters are created up front.
pub const K8S_KINDS: [&str; 5] = [
    "Ingress",
    "IngressClass",
    "Service",
    "EndpointSlice",
    "Secret",
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The request-duration and upstream-response histograms of one backend.
///
/// Built once per backend when its endpoint set is built (and kept across reloads by the upstream
/// registry), so the request path never hashes labels nor allocates: each (family, status class) slot is
/// resolved on its first observation (one lookup in the metric family) and is an atomic load afterwards.
/// Resolving on first use keeps series that never saw a request out of the exposition. A series, once
/// created, stays registered for the life of the process, also after its backend is removed (its values
/// then stay frozen); the number of series is bounded by the backends seen since start.
#[derive(Debug)]
pub struct BackendMetrics {
    name: String,
    durations: HistogramFamily<DurationLabels>,
    upstreams: HistogramFamily<UpstreamLabels>,
    /// `[listener family][status class]`.
    request: [[OnceLock<Histogram>; 5]; 2],
    /// `[endpoint family]`.
    upstream: [OnceLock<Histogram>; 2],
}

impl BackendMetrics {
    /// The backend name, as the `backend` label shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one answered request: `elapsed` from the start of the request to the response head, on a
    /// listener of `family`.
    pub fn observe_request(&self, family: AddrFamily, status: http::StatusCode, elapsed: Duration) {
        let class = class_index(status);
        self.request[family as usize][class]
            .get_or_init(|| {
                self.durations.get_or_create_owned(&DurationLabels {
                    family: family.label(),
                    code: CLASSES[class],
                    backend: self.name.clone(),
                })
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records the time from handing a request to an endpoint of `family` to its response head.
    pub fn observe_upstream(&self, family: AddrFamily, elapsed: Duration) {
        self.upstream[family as usize]
            .get_or_init(|| {
                self.upstreams.get_or_create_owned(&UpstreamLabels {
                    family: family.label(),
                    backend: self.name.clone(),
                })
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// Every metric the proxy exports. The request path updates pre-resolved handles only: counters are
/// atomics, and a histogram observation takes that one histogram's short mutex, never a family's lock.
pub struct Metrics {
    registry: Registry,
    durations: HistogramFamily<DurationLabels>,
    upstreams: HistogramFamily<UpstreamLabels>,
    /// The histograms of requests that reached no backend.
    no_backend: BackendMetrics,
    k8s_events: Family<KindLabels, Counter>,
    k8s_errors: Family<KindLabels, Counter>,
    /// Indexed like [`K8S_KINDS`].
    k8s_events_known: [Counter; 5],
    k8s_errors_known: [Counter; 5],
    table_swaps: Counter,
    last_table_swap: Gauge<f64, AtomicU64>,
    translation_problems: Family<ReasonLabels, Gauge>,
    /// Every reason set so far, so that a later call can set the ones it does not mention to 0.
    problem_reasons: Mutex<Vec<&'static str>>,
    leader: Gauge,
    status_writes_ok: Counter,
    status_writes_failed: Counter,
    /// `[family][class]`, created up front so the request path never touches the family's lock.
    requests: [[Counter; 5]; 2],
    connect_errors: [Counter; 2],
    active_connections: [Gauge; 2],
    reloads_ok: Counter,
    reloads_failed: Counter,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    /// `[deadline][family]`.
    closed_by_deadline: [[Counter; 2]; 2],
    /// By listener family.
    proxy_protocol_rejected: [Counter; 2],
    /// By listener family.
    over_connection_limit: [Counter; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under the `dualstack_ingress` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dualstack_ingress");
        let requests = Family::<RequestLabels, Counter>::default();
        let connect_errors = Family::<FamilyLabels, Counter>::default();
        let active = Family::<FamilyLabels, Gauge>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by status class and listener address family",
            requests.clone(),
        );
        registry.register(
            "upstream_connect_errors",
            "Failed connection attempts to upstream endpoints, by endpoint address family",
            connect_errors.clone(),
        );
        registry.register(
            "active_connections",
            "Open client connections, by listener address family",
            active.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes, by listener address family, result, TLS version and ALPN protocol",
            tls_handshakes.clone(),
        );
        let closed = Family::<DeadlineLabels, Counter>::default();
        registry.register(
            "connections_closed_by_deadline",
            "Client and admin connections closed by a deadline: header_read (no complete request head in \
             timeouts.headerRead) or idle (HTTP/2 without a stream for timeouts.idle), by listener family",
            closed.clone(),
        );
        let rejected = Family::<FamilyLabels, Counter>::default();
        registry.register(
            "proxy_protocol_rejected",
            "Connections to PROXY protocol listeners closed without a valid PROXY header (malformed, \
             cut short, or not complete within timeouts.headerRead), by listener family",
            rejected.clone(),
        );
        let over_limit = Family::<FamilyLabels, Counter>::default();
        registry.register(
            "connections_over_limit",
            "Client connections closed at once because their listener had limits.maxConnections open, by \
             listener family",
            over_limit.clone(),
        );
        let durations: HistogramFamily<DurationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the start of a request to its response head, by listener address family, status \
             class and backend (- when no backend was chosen)",
            durations.clone(),
        );
        let upstreams: HistogramFamily<UpstreamLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_response_seconds",
            "Time from handing a request to an upstream endpoint to its response head, by endpoint address \
             family and backend",
            upstreams.clone(),
        );
        let k8s_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "k8s_watch_events",
            "Kubernetes watch events received, by object kind",
            k8s_events.clone(),
        );
        let k8s_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "k8s_watch_errors",
            "Kubernetes watch errors, by object kind",
            k8s_errors.clone(),
        );
        let table_swaps = Counter::default();
        registry.register(
            "table_swaps",
            "Routing tables published by the Kubernetes controller",
            table_swaps.clone(),
        );
        let last_table_swap = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_table_swap_timestamp_seconds",
            "Unix time of the last routing table published by the Kubernetes controller",
            last_table_swap.clone(),
        );
        let translation_problems = Family::<ReasonLabels, Gauge>::default();
        registry.register(
            "k8s_translation_problems",
            "Problems found by the last translation of Kubernetes objects, by reason",
            translation_problems.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "k8s_leader",
            "1 when this replica holds the leader lease (writes Ingress status), else 0",
            leader.clone(),
        );
        let status_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "k8s_status_writes",
            "Ingress status writes, by result",
            status_writes.clone(),
        );
        let fams = [AddrFamily::Ipv4, AddrFamily::Ipv6];
        let reloads_ok = reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .clone();
        let reloads_failed = reloads
            .get_or_create(&ResultLabels { result: "failed" })
            .clone();
        let kinds = |family: &Family<KindLabels, Counter>| {
            K8S_KINDS.map(|kind| family.get_or_create_owned(&KindLabels { kind }))
        };
        Metrics {
            no_backend: backend_metrics(NO_BACKEND, &durations, &upstreams),
            k8s_events_known: kinds(&k8s_events),
            k8s_errors_known: kinds(&k8s_errors),
            status_writes_ok: status_writes.get_or_create_owned(&ResultLabels { result: "ok" }),
            status_writes_failed: status_writes
                .get_or_create_owned(&ResultLabels { result: "failed" }),
            durations,
            upstreams,
            k8s_events,
            k8s_errors,
            table_swaps,
            last_table_swap,
            translation_problems,
            problem_reasons: Mutex::new(Vec::new()),
            leader,
            requests: fams.map(|family| {
                CLASSES.map(|code| {
                    requests
                        .get_or_create(&RequestLabels {
                            code,
                            family: family.label(),
                        })
                        .clone()
                })
            }),
            connect_errors: fams.map(|family| {
                connect_errors
                    .get_or_create(&FamilyLabels {
                        family: family.label(),
                    })
                    .clone()
            }),
            active_connections: fams.map(|family| {
                active
                    .get_or_create(&FamilyLabels {
                        family: family.label(),
                    })
                    .clone()
            }),
            closed_by_deadline: [Deadline::HeaderRead, Deadline::Idle].map(|deadline| {
                fams.map(|family| {
                    closed
                        .get_or_create(&DeadlineLabels {
                            deadline: deadline.label(),
                            family: family.label(),
                        })
                        .clone()
                })
            }),
            proxy_protocol_rejected: fams.map(|family| {
                rejected.get_or_create_owned(&FamilyLabels {
                    family: family.label(),
                })
            }),
            over_connection_limit: fams.map(|family| {
                over_limit.get_or_create_owned(&FamilyLabels {
                    family: family.label(),
                })
            }),
            reloads_ok,
            reloads_failed,
            tls_handshakes,
            registry,
        }
    }

    /// Counts one answered request on a listener of `family` and records its duration (`elapsed`, to the
    /// response head) under `backend`, or under `-` when no backend was chosen.
    pub fn request(
        &self,
        family: AddrFamily,
        status: http::StatusCode,
        backend: Option<&BackendMetrics>,
        elapsed: Duration,
    ) {
        self.requests[family as usize][class_index(status)].inc();
        backend
            .unwrap_or(&self.no_backend)
            .observe_request(family, status, elapsed);
    }

    /// The histograms of backend `name`, for its endpoint set (resolved once, see [`BackendMetrics`]).
    pub fn backend(&self, name: &str) -> BackendMetrics {
        backend_metrics(name, &self.durations, &self.upstreams)
    }

    /// Counts one Kubernetes watch event for objects of `kind`.
    pub fn k8s_watch_event(&self, kind: &'static str) {
        match K8S_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.k8s_events_known[i].inc(),
            None => self.k8s_events.get_or_create(&KindLabels { kind }).inc(),
        };
    }

    /// Counts one Kubernetes watch error for objects of `kind`.
    pub fn k8s_watch_error(&self, kind: &'static str) {
        match K8S_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.k8s_errors_known[i].inc(),
            None => self.k8s_errors.get_or_create(&KindLabels { kind }).inc(),
        };
    }

    /// Counts a routing table published by the controller and records when.
    pub fn table_swapped(&self) {
        self.table_swaps.inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_table_swap.set(now);
    }

    /// Sets the translation problems by reason: the given reasons to their counts, every other reason set
    /// before to 0 (so a fixed problem shows 0 rather than its last count).
    pub fn set_translation_problems(&self, by_reason: &[(&'static str, u64)]) {
        let mut seen = self
            .problem_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for reason in seen.iter() {
            if !by_reason.iter().any(|(r, _)| r == reason) {
                self.translation_problems
                    .get_or_create(&ReasonLabels { reason })
                    .set(0);
            }
        }
        for &(reason, count) in by_reason {
            self.translation_problems
                .get_or_create(&ReasonLabels { reason })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            if !seen.contains(&reason) {
                seen.push(reason);
            }
        }
    }

    /// Sets whether this replica is the leader.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts one Ingress status write by its result.
    pub fn status_write(&self, ok: bool) {
        if ok {
            &self.status_writes_ok
        } else {
            &self.status_writes_failed
        }
        .inc();
    }

    /// Counts one failed connection attempt to `endpoint`.
    pub fn upstream_connect_error(&self, endpoint: SocketAddr) {
        self.connect_errors[AddrFamily::of(&endpoint) as usize].inc();
    }

    /// A client connection opened; the returned guard closes it when dropped.
    pub fn connection_opened(&self, family: AddrFamily) -> ConnectionGuard {
        let gauge = self.active_connections[family as usize].clone();
        gauge.inc();
        ConnectionGuard(gauge)
    }

    /// Counts a connection closed by `deadline` on a listener of `family`.
    pub fn closed_by(&self, deadline: Deadline, family: AddrFamily) {
        self.closed_by_deadline[deadline as usize][family as usize].inc();
    }

    /// Connections closed by `deadline` so far, both families.
    pub fn closed_by_count(&self, deadline: Deadline) -> u64 {
        self.closed_by_deadline[deadline as usize]
            .iter()
            .map(Counter::get)
            .sum()
    }

    /// Counts a connection to a PROXY protocol listener of `family` closed without a valid header.
    pub fn proxy_protocol_rejected(&self, family: AddrFamily) {
        self.proxy_protocol_rejected[family as usize].inc();
    }

    /// Connections closed without a valid PROXY protocol header so far, both families.
    pub fn proxy_protocol_rejected_count(&self) -> u64 {
        self.proxy_protocol_rejected.iter().map(Counter::get).sum()
    }

    /// Counts a client connection to a listener of `family` closed because the listener was full.
    pub fn connection_over_limit(&self, family: AddrFamily) {
        self.over_connection_limit[family as usize].inc();
    }

    /// Counts a reload by its result.
    pub fn reload(&self, ok: bool) {
        if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        }
        .inc();
    }

    /// Counts one TLS handshake.
    pub fn tls_handshake(
        &self,
        family: AddrFamily,
        result: &'static str,
        version: &'static str,
        alpn: &'static str,
    ) {
        let labels = HandshakeLabels {
            family: family.label(),
            result,
            version,
            alpn,
        };
        self.tls_handshakes.get_or_create(&labels).inc();
    }

    /// Number of reloads so far: (ok, failed).
    pub fn reload_counts(&self) -> (u64, u64) {
        (self.reloads_ok.get(), self.reloads_failed.get())
    }

    /// The exposition of every metric in the OpenMetrics text format (it ends with `# EOF`); serve it as
    /// [`OPENMETRICS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn backend_metrics(
    name: &str,
    durations: &HistogramFamily<DurationLabels>,
    upstreams: &HistogramFamily<UpstreamLabels>,
) -> BackendMetrics {
    BackendMetrics {
        name: name.to_string(),
        durations: durations.clone(),
        upstreams: upstreams.clone(),
        request: Default::default(),
        upstream: Default::default(),
    }
}

/// Decrements the active-connection gauge when dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::StatusCode;

    /// The sample lines of `text` whose name is `name` and which carry every label in `labels`.
    fn samples<'a>(text: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .collect()
    }

    /// The value of the one sample of `name` with `labels`.
    fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
        let found = samples(text, name, labels);
        assert_eq!(found.len(), 1, "{name} {labels:?} in:\n{text}");
        found[0].rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn exposition_is_openmetrics_and_ends_with_eof() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE dualstack_ingress_requests counter"));
        // A histogram family without a series is left out until its first observation.
        assert!(!text.contains("request_duration_seconds"), "{text}");
        let b = m.backend("b");
        m.request(AddrFamily::Ipv4, StatusCode::OK, Some(&b), Duration::ZERO);
        b.observe_upstream(AddrFamily::Ipv4, Duration::ZERO);
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE dualstack_ingress_request_duration_seconds histogram"));
        assert!(text.contains("# TYPE dualstack_ingress_upstream_response_seconds histogram"));
        assert!(OPENMETRICS_CONTENT_TYPE.starts_with("application/openmetrics-text"));
    }

    #[test]
    fn request_durations_by_family_class_and_backend() {
        let m = Metrics::new();
        let api = m.backend("default/web/api:80");
        m.request(
            AddrFamily::Ipv6,
            StatusCode::OK,
            Some(&api),
            Duration::from_millis(30),
        );
        m.request(
            AddrFamily::Ipv6,
            StatusCode::CREATED,
            Some(&api),
            Duration::from_millis(3),
        );
        m.request(
            AddrFamily::Ipv4,
            StatusCode::NOT_FOUND,
            None,
            Duration::from_millis(1),
        );
        let text = m.encode();
        let name = "dualstack_ingress_request_duration_seconds";
        let api6 = [
            "family=\"ipv6\"",
            "code=\"2xx\"",
            "backend=\"default/web/api:80\"",
        ];
        assert_eq!(value(&text, &format!("{name}_count"), &api6), 2.0);
        let sum = value(&text, &format!("{name}_sum"), &api6);
        assert!((sum - 0.033).abs() < 1e-9, "{sum}");
        let le = |b: &'static str| [api6[0], api6[1], api6[2], b];
        assert_eq!(
            value(&text, &format!("{name}_bucket"), &le("le=\"0.005\"")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("{name}_bucket"), &le("le=\"0.05\"")),
            2.0
        );
        assert_eq!(
            value(&text, &format!("{name}_bucket"), &le("le=\"+Inf\"")),
            2.0
        );
        // Every ingress-nginx bucket, plus +Inf.
        assert_eq!(
            samples(&text, &format!("{name}_bucket"), &api6).len(),
            LATENCY_BUCKETS.len() + 1
        );
        let none4 = ["family=\"ipv4\"", "code=\"4xx\"", "backend=\"-\""];
        assert_eq!(value(&text, &format!("{name}_count"), &none4), 1.0);
        // Only observed series are exported.
        assert!(samples(&text, &format!("{name}_count"), &["code=\"5xx\""]).is_empty());
        // The counters keep counting.
        assert_eq!(
            value(
                &text,
                "dualstack_ingress_requests_total",
                &["family=\"ipv6\"", "code=\"2xx\""]
            ),
            2.0
        );
    }

    #[test]
    fn handles_of_one_backend_share_its_series() {
        let m = Metrics::new();
        let (first, second) = (m.backend("api"), m.backend("api"));
        first.observe_upstream(AddrFamily::Ipv4, Duration::from_millis(2));
        second.observe_upstream(AddrFamily::Ipv4, Duration::from_millis(2));
        second.observe_upstream(AddrFamily::Ipv6, Duration::from_secs(20));
        let text = m.encode();
        let name = "dualstack_ingress_upstream_response_seconds";
        assert_eq!(
            value(
                &text,
                &format!("{name}_count"),
                &["family=\"ipv4\"", "backend=\"api\""]
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                &format!("{name}_bucket"),
                &["family=\"ipv6\"", "backend=\"api\"", "le=\"10.0\""]
            ),
            0.0
        );
        assert_eq!(first.name(), "api");
    }

    #[test]
    fn controller_metrics() {
        let m = Metrics::new();
        m.k8s_watch_event("Ingress");
        m.k8s_watch_event("Ingress");
        m.k8s_watch_event("Gateway");
        m.k8s_watch_error("EndpointSlice");
        m.set_leader(true);
        m.status_write(true);
        m.status_write(false);
        m.status_write(false);
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        m.table_swapped();
        m.table_swapped();
        let text = m.encode();
        let events = "dualstack_ingress_k8s_watch_events_total";
        assert_eq!(value(&text, events, &["kind=\"Ingress\""]), 2.0);
        assert_eq!(value(&text, events, &["kind=\"Gateway\""]), 1.0);
        // Every known kind is exported from the start.
        for kind in K8S_KINDS {
            assert_eq!(
                samples(&text, events, &[&format!("kind=\"{kind}\"")]).len(),
                1
            );
        }
        let errors = "dualstack_ingress_k8s_watch_errors_total";
        assert_eq!(value(&text, errors, &["kind=\"EndpointSlice\""]), 1.0);
        assert_eq!(value(&text, errors, &["kind=\"Secret\""]), 0.0);
        assert_eq!(value(&text, "dualstack_ingress_k8s_leader", &[]), 1.0);
        let writes = "dualstack_ingress_k8s_status_writes_total";
        assert_eq!(value(&text, writes, &["result=\"ok\""]), 1.0);
        assert_eq!(value(&text, writes, &["result=\"failed\""]), 2.0);
        assert_eq!(
            value(&text, "dualstack_ingress_table_swaps_total", &[]),
            2.0
        );
        let at = value(
            &text,
            "dualstack_ingress_last_table_swap_timestamp_seconds",
            &[],
        );
        assert!(
            at >= before.floor() && at < before + 60.0,
            "{at} vs {before}"
        );
        m.set_leader(false);
        assert_eq!(value(&m.encode(), "dualstack_ingress_k8s_leader", &[]), 0.0);
    }

    #[test]
    fn translation_problems_not_reported_again_drop_to_zero() {
        let m = Metrics::new();
        let name = "dualstack_ingress_k8s_translation_problems";
        m.set_translation_problems(&[("ServiceNotFound", 3), ("TlsSecretMissing", 1)]);
        let text = m.encode();
        assert_eq!(value(&text, name, &["reason=\"ServiceNotFound\""]), 3.0);
        assert_eq!(value(&text, name, &["reason=\"TlsSecretMissing\""]), 1.0);
        m.set_translation_problems(&[("PortNotFound", 2)]);
        let text = m.encode();
        assert_eq!(value(&text, name, &["reason=\"ServiceNotFound\""]), 0.0);
        assert_eq!(value(&text, name, &["reason=\"TlsSecretMissing\""]), 0.0);
        assert_eq!(value(&text, name, &["reason=\"PortNotFound\""]), 2.0);
        m.set_translation_problems(&[]);
        let text = m.encode();
        assert_eq!(samples(&text, name, &[]).len(), 3);
        assert!(samples(&text, name, &[]).iter().all(|l| l.ends_with(" 0")));
    }
}
