//! The source-independent desired state: what to listen on, which requests go where, and how long to wait.
//!
//! Both the static file (`config`) and, later, the Kubernetes watchers produce a [`Model`]; everything after
//! that (compiling the routing table, serving) is shared.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The complete desired state of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Data-plane listen addresses, each its own socket.
    pub listen: Vec<SocketAddr>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`), if any.
    pub admin: Option<SocketAddr>,
    /// Host rules in the order they were written.
    pub rules: Vec<Rule>,
    /// Backend for requests that match no rule.
    pub default_backend: Option<String>,
    /// Backends by name.
    pub backends: BTreeMap<String, Backend>,
    /// Timeouts for clients and upstreams.
    pub timeouts: Timeouts,
}

/// One host rule: an optional host and the paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None` matches every host.
    pub host: Option<HostMatch>,
    /// Paths of this rule.
    pub paths: Vec<PathRule>,
}

/// How a rule matches the request host. Names are lower case, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// `app.example.com`
    Exact(String),
    /// `*.example.com`, stored as the suffix `example.com`; matches exactly one more label.
    Wildcard(String),
}

/// One path of a rule and the backend it sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// The path, starting with `/`.
    pub path: String,
    /// How the path is compared.
    pub kind: PathKind,
    /// Name of the backend in [`Model::backends`].
    pub backend: String,
}

/// Ingress `pathType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Byte-exact, case-sensitive.
    Exact,
    /// Element-wise prefix on `/` (`ImplementationSpecific` is treated the same).
    Prefix,
}

/// A set of upstream endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backend {
    /// Addresses to connect to, never text.
    pub endpoints: Vec<SocketAddr>,
}

/// Timeouts; see the README for what each one bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to send a complete request head; hyper starts this clock as soon as an HTTP/1
    /// connection waits for a request, so it also closes idle keep-alive connections.
    pub header_read: Duration,
    /// Idle time after which pooled upstream connections are closed, and HTTP/2 clients that stop
    /// answering pings are dropped.
    pub idle: Duration,
    /// Time to establish a TCP connection to one upstream endpoint.
    pub connect: Duration,
    /// Time from sending a request upstream until its response head arrives.
    pub response: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            drain: Duration::from_secs(30),
        }
    }
}

/// The listen addresses used when a configuration names none.
pub fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([0, 0, 0, 0], 8080)),
        SocketAddr::from(([0u16; 8], 8080)),
    ]
}
