//! The source-independent desired state: what to listen on, which requests go where, and how long to wait.
//!
//! What is fixed at start is a [`Bootstrap`]; what a source may change at any time is a [`Model`]. Both the
//! static file (`config`) and the Kubernetes watchers (`k8s`) produce models; everything after that
//! (compiling the routing table, serving) is shared.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// What is fixed when the process starts: sockets and the deadlines of client connections. A source that
/// changes these later is told that they take effect after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Data-plane listen addresses, each its own socket.
    pub listen: Vec<ListenAddr>,
    /// TLS listen addresses, each its own socket.
    pub listen_tls: Vec<ListenAddr>,
    /// Admin listener addresses (`/healthz`, `/readyz`, `/metrics`), each its own socket.
    pub admin: Vec<SocketAddr>,
    /// Deadlines of client connections.
    pub timeouts: ClientTimeouts,
    /// Limits of client connections (connections per listener, HTTP/2 settings).
    pub limits: ConnectionLimits,
    /// DNS servers that resolve upstreams named by DNS (`resolver:`); empty: the system's
    /// (`/etc/resolv.conf`).
    pub resolver: Vec<SocketAddr>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            listen: default_listen(),
            listen_tls: Vec::new(),
            admin: Vec::new(),
            timeouts: ClientTimeouts::default(),
            limits: ConnectionLimits::default(),
            resolver: Vec::new(),
        }
    }
}

/// Limits of client connections, fixed at start (`limits:` in the configuration file, except
/// `maxRequestBody`, which is [`Model::max_request_body`]); see the README for each one's reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open client connections per data listener (each socket counts its own); a connection over it is
    /// accepted and closed at once.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: streams one client connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` in bytes; also bounds the CONTINUATION frames of one header
    /// block (a flood of them closes the connection).
    pub http2_max_header_list_size: u32,
    /// HTTP/2 streams a client may open and reset before they are served (rapid reset, CVE-2023-44487);
    /// more close the connection with GOAWAY.
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the proxy may reset because the client broke the protocol on them
    /// (RUSTSEC-2024-0003); more close the connection with GOAWAY.
    pub http2_max_local_error_reset_streams: usize,
}

/// Open client connections per data listener, unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Request bodies larger than this many bytes get 413, unless configured otherwise (1 MiB, as
/// ingress-nginx's `proxy-body-size`).
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 1024 * 1024;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http2_max_concurrent_streams: 128,
            http2_max_header_list_size: 64 * 1024,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
        }
    }
}

/// One data-plane listen address and how its connections start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// The address to bind.
    pub addr: SocketAddr,
    /// Whether every connection starts with a PROXY protocol (v1 or v2) header naming the client.
    pub proxy_protocol: bool,
}

impl ListenAddr {
    /// A listener whose connections carry no PROXY protocol header.
    pub fn plain(addr: SocketAddr) -> ListenAddr {
        ListenAddr {
            addr,
            proxy_protocol: false,
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::plain(addr)
    }
}

impl PartialEq<SocketAddr> for ListenAddr {
    fn eq(&self, other: &SocketAddr) -> bool {
        !self.proxy_protocol && self.addr == *other
    }
}

/// The desired routing state, which a source may change at any time: certificates, rules, backends and
/// the upstream timeouts. Everything a request uses is compiled from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Certificates for TLS termination; the first one is the default.
    pub tls: Vec<TlsCert>,
    /// Whether plain-HTTP requests for a host that has a certificate are redirected to HTTPS (301).
    pub redirect_to_https: bool,
    /// The port HTTPS redirects name (clients' port, e.g. 443 behind a Service); `None`: the TLS
    /// listener's own port.
    pub https_redirect_port: Option<u16>,
    /// Host rules in the order they were written.
    pub rules: Vec<Rule>,
    /// Backend for requests that match no rule.
    pub default_backend: Option<String>,
    /// Backends by name.
    pub backends: BTreeMap<String, Backend>,
    /// Timeouts towards upstreams.
    pub timeouts: UpstreamTimeouts,
    /// After a failed connect, at most this many further endpoints of the backend are tried.
    pub connect_retries: usize,
    /// Peers whose `X-Forwarded-For`, `-Proto`, `-Host` and `-Port` are believed (load balancers in
    /// front); empty: none.
    pub trusted_proxies: Vec<IpNet>,
    /// Request bodies larger than this many bytes get 413 and are not forwarded; `None`: no limit.
    pub max_request_body: Option<u64>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            tls: Vec::new(),
            redirect_to_https: true,
            https_redirect_port: None,
            rules: Vec::new(),
            default_backend: None,
            backends: BTreeMap::new(),
            timeouts: UpstreamTimeouts::default(),
            connect_retries: DEFAULT_CONNECT_RETRIES,
            trusted_proxies: Vec::new(),
            max_request_body: Some(DEFAULT_MAX_REQUEST_BODY),
        }
    }
}

/// Sizes of a model, for the log line of each installed table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelStats {
    /// Distinct host rules (a rule without a host counts as one).
    pub hosts: usize,
    /// Paths over all rules.
    pub paths: usize,
    /// IPv4 endpoints over all backends.
    pub endpoints_v4: usize,
    /// IPv6 endpoints over all backends.
    pub endpoints_v6: usize,
}

impl Model {
    /// Counts hosts, paths and endpoints by family.
    pub fn stats(&self) -> ModelStats {
        let hosts: std::collections::HashSet<_> = self.rules.iter().map(|r| &r.host).collect();
        let endpoints = self.backends.values().flat_map(|b| &b.endpoints);
        let v4 = endpoints.clone().filter(|e| e.is_ipv4()).count();
        ModelStats {
            hosts: hosts.len(),
            paths: self.rules.iter().map(|r| r.paths.len()).sum(),
            endpoints_v4: v4,
            endpoints_v6: endpoints.count() - v4,
        }
    }
}

/// Further endpoints tried after a failed connect, unless configured otherwise.
pub const DEFAULT_CONNECT_RETRIES: usize = 2;

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
    /// Client address ranges allowed on this path (IPv4 ranges also match IPv4-mapped IPv6 clients);
    /// empty: every client. Others get 403.
    pub allow: Vec<IpNet>,
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
    /// DNS names resolved in the background (both families), each one endpoint whose connects race its
    /// addresses (happy eyeballs).
    pub named: Vec<NamedEndpoint>,
    /// The protocol spoken to the endpoints.
    pub protocol: Protocol,
    /// CA bundle to verify TLS upstreams against instead of the system roots.
    pub ca: Option<PemSource>,
}

/// An upstream given by DNS name and port (a Kubernetes `ExternalName` Service, or `name:port` in the
/// static file). Requests never wait for DNS: names are resolved off the request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamedEndpoint {
    /// The DNS name, lower case, without a trailing dot.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
}

impl std::fmt::Display for NamedEndpoint {
    /// `name:port`: the host is always a DNS name (never an IP literal), so it needs no brackets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over TCP.
    H2c,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

impl Protocol {
    /// Whether the protocol is HTTP/2 (`h2c` or `h2`).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }

    /// Whether the protocol runs over TLS (`https` or `h2`).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::H2)
    }
}

/// PEM data, from a file or given inline (as a Kubernetes Secret provides it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PemSource {
    /// A file, read when the certificate store is (re)built.
    File(PathBuf),
    /// PEM bytes.
    Inline(Arc<[u8]>),
}

impl std::fmt::Display for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File(p) => write!(f, "{}", p.display()),
            PemSource::Inline(_) => f.write_str("<inline PEM>"),
        }
    }
}

/// A certificate chain and key, and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    /// SNI names (exact or one-label wildcard) and IP addresses (for clients that send no SNI, matched
    /// against the address they connected to).
    pub hosts: Vec<TlsHost>,
    /// PEM certificate chain, leaf first.
    pub cert: PemSource,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PemSource,
}

/// One name a certificate serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlsHost {
    /// A DNS name or wildcard.
    Name(HostMatch),
    /// An IP address.
    Ip(IpAddr),
}

/// Deadlines of client connections, fixed at start; see the README for what each one bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// From accept to the first complete request head (TLS handshake and protocol detection included),
    /// and from the end of a response to the next head on a kept-alive HTTP/1 connection.
    pub header_read: Duration,
    /// An HTTP/2 client connection without an open stream, and a pooled upstream connection, is closed after
    /// this long; HTTP/2 clients are pinged every half of it.
    pub idle: Duration,
    /// Time in-flight requests get to finish on shutdown.
    pub drain: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            drain: Duration::from_secs(30),
        }
    }
}

/// Timeouts towards upstreams, which a reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamTimeouts {
    /// Time to establish a TCP connection to one upstream endpoint.
    pub connect: Duration,
    /// Time from sending a request upstream until its response head arrives.
    pub response: Duration,
    /// Longest silence while reading an upstream response body; then the client's response is cut.
    pub upstream_read: Duration,
    /// Longest a client may leave a response body frame untaken; then the upstream is dropped.
    pub client_write: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            upstream_read: Duration::from_secs(60),
            client_write: Duration::from_secs(60),
        }
    }
}

/// The TLS listen addresses used when certificates exist and the configuration names none.
pub fn default_listen_tls() -> Vec<ListenAddr> {
    vec![
        ListenAddr::plain(SocketAddr::from(([0, 0, 0, 0], 8443))),
        ListenAddr::plain(SocketAddr::from(([0u16; 8], 8443))),
    ]
}

/// The listen addresses used when a configuration names none.
pub fn default_listen() -> Vec<ListenAddr> {
    vec![
        ListenAddr::plain(SocketAddr::from(([0, 0, 0, 0], 8080))),
        ListenAddr::plain(SocketAddr::from(([0u16; 8], 8080))),
    ]
}
