//! Logging (tracing subscriber, access log) and the Prometheus metric registry.

use std::net::SocketAddr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every metric the proxy exports; cheap to clone, lock-free to update on the request path.
pub struct Metrics {
    registry: Registry,
    /// `[family][class]`, created up front so the request path never touches the family's lock.
    requests: [[Counter; 5]; 2],
    connect_errors: [Counter; 2],
    active_connections: [Gauge; 2],
    reloads_ok: Counter,
    reloads_failed: Counter,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    /// `[deadline][family]`.
    closed_by_deadline: [[Counter; 2]; 2],
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
        let fams = [AddrFamily::Ipv4, AddrFamily::Ipv6];
        let reloads_ok = reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .clone();
        let reloads_failed = reloads
            .get_or_create(&ResultLabels { result: "failed" })
            .clone();
        Metrics {
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
            reloads_ok,
            reloads_failed,
            tls_handshakes,
            registry,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, family: AddrFamily, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[family as usize][class].inc();
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

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the active-connection gauge when dropped.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
