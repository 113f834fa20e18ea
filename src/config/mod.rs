//! The static YAML (or JSON) configuration file: schema, validation with `FILE:LINE:COLUMN` errors, and
//! file watching for hot reload.

mod address;
mod host;
pub mod source;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::model::{
    self, Backend, Bootstrap, ClientTimeouts, ConnectionLimits, ListenAddr, Model, PathKind,
    PathRule, PemSource, Protocol, Rule, TlsCert, TlsHost, UpstreamTimeouts,
};

pub use address::{parse_dns_server, parse_endpoint, parse_named, parse_range, DNS_PORT};
pub use host::parse_host_rule;

/// The configuration the binary runs when no `--config` is given (`config/example.yaml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/example.yaml");

/// One problem in a configuration file, printed as `FILE:LINE:COLUMN: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration file: what is fixed at start, and the routing model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Listeners and client deadlines.
    pub bootstrap: Bootstrap,
    /// Certificates, rules, backends and upstream timeouts.
    pub model: Model,
}

/// What the file is for: the standalone proxy, or the settings of the Kubernetes controller (whose routes
/// come from Ingress objects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Routes, backends and certificates come from the file.
    Standalone,
    /// `routes`, `backends` and `defaultBackend` are errors; TLS listeners default to port 8443.
    Kubernetes,
}

/// Reads and validates the file at `path` for the standalone proxy.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigErrors> {
    load_for(path, Mode::Standalone)
}

/// Reads and validates the file at `path` for `mode`.
pub fn load_for(path: &Path, mode: Mode) -> Result<ConfigFile, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read file: {e}"),
        }])
    })?;
    parse_for(&name, &text, mode)
}

/// Parses and validates configuration `text` for the standalone proxy; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<ConfigFile, ConfigErrors> {
    parse_for(file, text, Mode::Standalone)
}

/// Parses and validates configuration `text` for `mode`; `file` names it in errors.
pub fn parse_for(file: &str, text: &str, mode: Mode) -> Result<ConfigFile, ConfigErrors> {
    if text.trim().is_empty() {
        // A half-written or truncated file must not replace a working table with an empty one.
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: "the configuration is empty".to_string(),
        }]));
    }
    let raw: RawConfig =
        serde_saphyr::from_str_with_options(text, parser_options()).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = explain_limit(first_line(&e.without_snippet().to_string()));
            ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                line,
                column,
                message,
            }])
        })?;
    let base = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Validator {
        file,
        base,
        mode,
        errors: Vec::new(),
    }
    .validate(raw)
}

/// The most YAML nodes (mappings, sequences, scalars) a configuration may have: a route of one host and one
/// path is about 12, so this admits about 330,000 routes.
pub const MAX_YAML_NODES: usize = 4_000_000;
/// The most parser events a configuration may produce (about two per node).
pub const MAX_YAML_EVENTS: usize = 10_000_000;

/// The parser's limits: large enough for 100,000 routes and more, bounded against hostile input.
fn parser_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    if let Some(budget) = options.budget.as_mut() {
        budget.max_nodes = MAX_YAML_NODES;
        budget.max_events = MAX_YAML_EVENTS;
    }
    options
}

/// The parser's own words for a breached limit (`budget breached: Nodes { nodes: 250001 }`) become a
/// sentence that names the limit.
fn explain_limit(message: String) -> String {
    if message.contains("budget") {
        format!(
            "the configuration is larger than the parser reads: at most {MAX_YAML_NODES} YAML nodes (about {} \
             routes of one host and path each) and {MAX_YAML_EVENTS} parser events ({message})",
            MAX_YAML_NODES / 12
        )
    } else {
        message
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    // serde-saphyr may append " at line L, column C"; the location is already in front.
    let line = match line.rfind(" at line ") {
        Some(i) => &line[..i],
        None => line,
    };
    // The parser's message may quote a value of any size.
    match line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// The longest parser message reported, in characters.
const MAX_MESSAGE_CHARS: usize = 256;

/// The longest prefix of a user value quoted in an error, in characters.
const QUOTE_MAX_CHARS: usize = 64;

/// `value` quoted for an error message: whole when short, else its first 64 characters followed by `…` and
/// its length, so a huge value never becomes a huge log line.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_MAX_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    listen: Option<Vec<Spanned<RawListen>>>,
    listen_tls: Option<Vec<Spanned<RawListen>>>,
    admin: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    tls: Vec<RawTls>,
    redirect_to_https: Option<bool>,
    https_redirect_port: Option<Spanned<u16>>,
    routes: Option<Spanned<Vec<RawRoute>>>,
    default_backend: Option<Spanned<String>>,
    backends: Option<Spanned<BTreeMap<String, Spanned<RawBackend>>>>,
    timeouts: Option<RawTimeouts>,
    connect_retries: Option<Spanned<i64>>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    limits: Option<RawLimits>,
    resolver: Option<Spanned<OneOrMany>>,
}

/// One `listen` or `listenTls` entry: an address (`"[::]:8080"`) or a map
/// (`{address: "[::]:8080", proxyProtocol: true}`).
#[derive(Debug)]
enum RawListen {
    Plain(String),
    Map {
        address: Spanned<String>,
        proxy_protocol: bool,
    },
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a map with \"address\" and \"proxyProtocol\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen::Plain(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawListen, A::Error> {
                const FIELDS: &[&str] = &["address", "proxyProtocol"];
                let mut address: Option<Spanned<String>> = None;
                let mut proxy_protocol: Option<bool> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" if address.is_none() => address = Some(map.next_value()?),
                        "proxyProtocol" if proxy_protocol.is_none() => {
                            proxy_protocol = Some(map.next_value()?);
                        }
                        "address" | "proxyProtocol" => {
                            return Err(serde::de::Error::custom(format!(
                                "duplicate field `{key}`"
                            )))
                        }
                        other => return Err(serde::de::Error::unknown_field(other, FIELDS)),
                    }
                }
                let address = address.ok_or_else(|| serde::de::Error::missing_field("address"))?;
                Ok(RawListen::Map {
                    address,
                    proxy_protocol: proxy_protocol.unwrap_or(false),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// An address or a list of addresses (`admin: "127.0.0.1:9901"` or `admin: ["0.0.0.0:9901", "[::]:9901"]`).
/// Wrapped in `Spanned`, so a single address keeps its location; list items carry their own.
#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address or a list of addresses")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element()? {
                    list.push(item);
                }
                Ok(OneOrMany::Many(list))
            }
        }
        d.deserialize_any(V)
    }
}

impl OneOrMany {
    fn into_vec(outer: Spanned<OneOrMany>) -> Vec<Spanned<String>> {
        match outer.value {
            OneOrMany::One(a) => vec![Spanned::new(a, outer.referenced, outer.defined)],
            OneOrMany::Many(list) => list,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRoute {
    host: Option<Spanned<String>>,
    #[serde(default)]
    paths: Vec<RawPath>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPath {
    path: Spanned<String>,
    path_type: Option<Spanned<String>>,
    backend: Spanned<String>,
    allow: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBackend {
    #[serde(default)]
    endpoints: Vec<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTls {
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimeouts {
    header_read: Option<Spanned<String>>,
    idle: Option<Spanned<String>>,
    connect: Option<Spanned<String>>,
    response: Option<Spanned<String>>,
    upstream_read: Option<Spanned<String>>,
    client_write: Option<Spanned<String>>,
    drain: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLimits {
    max_connections: Option<Spanned<i64>>,
    max_request_body: Option<Spanned<i64>>,
    http2_max_concurrent_streams: Option<Spanned<i64>>,
    http2_max_header_list_size: Option<Spanned<i64>>,
    http2_max_pending_accept_reset_streams: Option<Spanned<i64>>,
    http2_max_local_error_reset_streams: Option<Spanned<i64>>,
}

/// The largest `limits.maxConnections`.
pub const MAX_CONNECTIONS_LIMIT: i64 = 16_777_216;
/// The smallest and largest `limits.http2MaxHeaderListSize`: below 1 KiB ordinary requests do not fit; above
/// 16 MiB one header block could hold that much memory.
pub const HTTP2_HEADER_LIST_RANGE: (i64, i64) = (1024, 16 * 1024 * 1024);
/// The largest value of the other HTTP/2 limits.
pub const HTTP2_COUNT_LIMIT: i64 = 1_000_000;

struct Validator<'a> {
    file: &'a str,
    /// Relative certificate and CA paths are resolved against the configuration file's directory.
    base: PathBuf,
    mode: Mode,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            message,
        });
    }

    fn validate(mut self, raw: RawConfig) -> Result<ConfigFile, ConfigErrors> {
        if self.mode == Mode::Kubernetes {
            self.kubernetes_only(&raw);
        }
        let listen = match &raw.listen {
            None => model::default_listen(),
            Some(list) => list
                .iter()
                .filter_map(|a| self.listen_entry("listen", a))
                .collect(),
        };
        let admin = match raw.admin {
            None => Vec::new(),
            Some(list) => OneOrMany::into_vec(list)
                .iter()
                .filter_map(|a| self.listen_addr("admin", a))
                .collect(),
        };
        let tls: Vec<TlsCert> = raw.tls.iter().filter_map(|t| self.tls_cert(t)).collect();
        let listen_tls = match &raw.listen_tls {
            None if raw.tls.is_empty() && self.mode == Mode::Standalone => Vec::new(),
            None => model::default_listen_tls(),
            Some(list) => list
                .iter()
                .filter_map(|a| self.listen_entry("listenTls", a))
                .collect(),
        };

        let raw_backends = raw.backends.map(|b| b.value).unwrap_or_default();
        let raw_routes = raw.routes.map(|r| r.value).unwrap_or_default();
        let mut backends = BTreeMap::new();
        for (name, spanned) in &raw_backends {
            let mut endpoints = Vec::new();
            let mut named = Vec::new();
            for ep in &spanned.value.endpoints {
                match parse_endpoint(&ep.value) {
                    Ok(addr) => endpoints.push(addr),
                    Err(message) => match parse_named(&ep.value) {
                        Some(n) => named.push(n),
                        None => self.error(ep, format!("backend {}: {message}", quote(name))),
                    },
                }
            }
            let protocol = match spanned.value.protocol.as_ref().map(|p| p.value.as_str()) {
                None | Some("http1") => Protocol::Http1,
                Some("h2c") => Protocol::H2c,
                Some("https") => Protocol::Https,
                Some("h2") => Protocol::H2,
                Some(other) => {
                    if let Some(p) = &spanned.value.protocol {
                        self.error(
                            p,
                            format!(
                                "backend {}: protocol {} is not one of http1, h2c, https, h2",
                                quote(name),
                                quote(other)
                            ),
                        );
                    }
                    Protocol::Http1
                }
            };
            let ca = spanned
                .value
                .ca
                .as_ref()
                .map(|c| PemSource::File(self.base.join(c)));
            backends.insert(
                name.clone(),
                Backend {
                    endpoints,
                    named,
                    protocol,
                    ca,
                },
            );
        }

        let mut rules = Vec::new();
        for route in &raw_routes {
            let host = match &route.host {
                None => None,
                Some(h) => match parse_host_rule(&h.value) {
                    Ok(m) => Some(m),
                    Err(message) => {
                        // Keep validating the paths so every error in the file is reported at once.
                        self.error(h, message);
                        None
                    }
                },
            };
            let mut paths = Vec::new();
            for p in &route.paths {
                if !p.path.value.starts_with('/') {
                    self.error(
                        &p.path,
                        format!("path {} must start with \"/\"", quote(&p.path.value)),
                    );
                }
                let kind = match p.path_type.as_ref().map(|t| t.value.as_str()) {
                    None | Some("Prefix") | Some("ImplementationSpecific") => PathKind::Prefix,
                    Some("Exact") => PathKind::Exact,
                    Some(other) => {
                        if let Some(t) = &p.path_type {
                            self.error(
                                t,
                                format!(
                                    "pathType {} is not one of Exact, Prefix, ImplementationSpecific",
                                    quote(other)
                                ),
                            );
                        }
                        PathKind::Prefix
                    }
                };
                self.check_backend_name(&backends, &p.backend);
                let allow = self.ranges("allow", p.allow.as_deref().unwrap_or_default());
                paths.push(PathRule {
                    path: p.path.value.clone(),
                    kind,
                    backend: p.backend.value.clone(),
                    allow,
                });
            }
            rules.push(Rule { host, paths });
        }
        if let Some(d) = &raw.default_backend {
            self.check_backend_name(&backends, d);
        }

        let trusted_proxies = self.ranges(
            "trustedProxies",
            raw.trusted_proxies.as_deref().unwrap_or_default(),
        );
        let (client_timeouts, upstream_timeouts) = self.timeouts(raw.timeouts.unwrap_or_default());
        let (limits, max_request_body) = self.limits(raw.limits.unwrap_or_default());
        let resolver = match raw.resolver {
            None => Vec::new(),
            Some(list) => OneOrMany::into_vec(list)
                .iter()
                .filter_map(|s| match parse_dns_server(&s.value) {
                    Ok(addr) => Some(addr),
                    Err(message) => {
                        self.error(s, format!("resolver: {message}"));
                        None
                    }
                })
                .collect(),
        };
        let connect_retries = match raw.connect_retries {
            None => model::DEFAULT_CONNECT_RETRIES,
            Some(n) => match usize::try_from(n.value) {
                Ok(n) if n <= MAX_CONNECT_RETRIES => n,
                _ => {
                    self.error(
                        &n,
                        format!("connectRetries must be between 0 and {MAX_CONNECT_RETRIES}"),
                    );
                    model::DEFAULT_CONNECT_RETRIES
                }
            },
        };

        if self.errors.is_empty() {
            Ok(ConfigFile {
                bootstrap: Bootstrap {
                    listen,
                    listen_tls,
                    admin,
                    timeouts: client_timeouts,
                    limits,
                    resolver,
                },
                model: Model {
                    tls,
                    redirect_to_https: raw.redirect_to_https.unwrap_or(true),
                    https_redirect_port: raw.https_redirect_port.map(|p| p.value),
                    rules,
                    default_backend: raw.default_backend.map(|d| d.value),
                    backends,
                    timeouts: upstream_timeouts,
                    connect_retries,
                    trusted_proxies,
                    max_request_body,
                },
            })
        } else {
            // Report in file order, whatever order the checks ran in.
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(self.errors))
        }
    }

    /// In Kubernetes mode routing comes from Ingress objects: the routing keys are errors.
    fn kubernetes_only(&mut self, raw: &RawConfig) {
        let message = |key: &str| {
            format!("{key:?} is not allowed with --kubernetes: routes and backends come from Ingress objects")
        };
        if let Some(r) = &raw.routes {
            self.error(r, message("routes"));
        }
        if let Some(b) = &raw.backends {
            self.error(b, message("backends"));
        }
        if let Some(d) = &raw.default_backend {
            self.error(d, message("defaultBackend"));
        }
    }

    fn listen_entry(&mut self, key: &str, entry: &Spanned<RawListen>) -> Option<ListenAddr> {
        match &entry.value {
            RawListen::Plain(text) => {
                let at = Spanned::new(text.clone(), entry.referenced, entry.defined);
                self.listen_addr(key, &at).map(ListenAddr::plain)
            }
            RawListen::Map {
                address,
                proxy_protocol,
            } => self.listen_addr(key, address).map(|addr| ListenAddr {
                addr,
                proxy_protocol: *proxy_protocol,
            }),
        }
    }

    /// Address ranges under `key`, each error at its own entry.
    fn ranges(&mut self, key: &str, list: &[Spanned<String>]) -> Vec<ipnet::IpNet> {
        list.iter()
            .filter_map(|r| match parse_range(&r.value) {
                Ok(net) => Some(net),
                Err(message) => {
                    self.error(r, format!("{key}: {message}"));
                    None
                }
            })
            .collect()
    }

    fn listen_addr(&mut self, key: &str, a: &Spanned<String>) -> Option<std::net::SocketAddr> {
        match parse_endpoint(&a.value) {
            Ok(addr) => Some(addr),
            Err(message) => {
                self.error(a, format!("{key}: {message}"));
                None
            }
        }
    }

    fn tls_cert(&mut self, raw: &RawTls) -> Option<TlsCert> {
        let mut hosts = Vec::new();
        for h in &raw.hosts {
            let text = h.value.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = text.parse::<std::net::IpAddr>() {
                hosts.push(TlsHost::Ip(ip));
                continue;
            }
            match parse_host_rule(&h.value) {
                Ok(m) => hosts.push(TlsHost::Name(m)),
                Err(message) => self.error(h, format!("tls: {message}")),
            }
        }
        let mut file = |s: &Spanned<String>, what: &str| {
            let path = self.base.join(&s.value);
            if path.is_file() {
                Some(PemSource::File(path))
            } else {
                self.error(
                    s,
                    format!(
                        "tls {what} file {} does not exist",
                        quote(&path.display().to_string())
                    ),
                );
                None
            }
        };
        let cert = file(&raw.cert, "cert");
        let key = file(&raw.key, "key");
        Some(TlsCert {
            hosts,
            cert: cert?,
            key: key?,
        })
    }

    fn check_backend_name(&mut self, backends: &BTreeMap<String, Backend>, name: &Spanned<String>) {
        if !backends.contains_key(&name.value) {
            self.error(
                name,
                format!(
                    "backend {} is not defined under \"backends\"",
                    quote(&name.value)
                ),
            );
        }
    }

    fn timeouts(&mut self, raw: RawTimeouts) -> (ClientTimeouts, UpstreamTimeouts) {
        let (c, u) = (ClientTimeouts::default(), UpstreamTimeouts::default());
        (
            ClientTimeouts {
                header_read: self.duration("headerRead", raw.header_read, c.header_read),
                idle: self.duration("idle", raw.idle, c.idle),
                drain: self.duration("drain", raw.drain, c.drain),
            },
            UpstreamTimeouts {
                connect: self.duration("connect", raw.connect, u.connect),
                response: self.duration("response", raw.response, u.response),
                upstream_read: self.duration("upstreamRead", raw.upstream_read, u.upstream_read),
                client_write: self.duration("clientWrite", raw.client_write, u.client_write),
            },
        )
    }

    /// The `limits` section: what is fixed at start, and the request body limit (`None`: no limit).
    fn limits(&mut self, raw: RawLimits) -> (ConnectionLimits, Option<u64>) {
        let d = ConnectionLimits::default();
        let (lo, hi) = HTTP2_HEADER_LIST_RANGE;
        let limits = ConnectionLimits {
            max_connections: self.count(
                "maxConnections",
                raw.max_connections,
                (1, MAX_CONNECTIONS_LIMIT),
                d.max_connections,
            ),
            http2_max_concurrent_streams: self.count(
                "http2MaxConcurrentStreams",
                raw.http2_max_concurrent_streams,
                (1, HTTP2_COUNT_LIMIT),
                d.http2_max_concurrent_streams,
            ),
            http2_max_header_list_size: self.count(
                "http2MaxHeaderListSize",
                raw.http2_max_header_list_size,
                (lo, hi),
                d.http2_max_header_list_size,
            ),
            http2_max_pending_accept_reset_streams: self.count(
                "http2MaxPendingAcceptResetStreams",
                raw.http2_max_pending_accept_reset_streams,
                (1, HTTP2_COUNT_LIMIT),
                d.http2_max_pending_accept_reset_streams,
            ),
            http2_max_local_error_reset_streams: self.count(
                "http2MaxLocalErrorResetStreams",
                raw.http2_max_local_error_reset_streams,
                (1, HTTP2_COUNT_LIMIT),
                d.http2_max_local_error_reset_streams,
            ),
        };
        let max_request_body = match raw.max_request_body {
            None => Some(model::DEFAULT_MAX_REQUEST_BODY),
            Some(n) => match u64::try_from(n.value) {
                Ok(0) => None,
                Ok(bytes) => Some(bytes),
                Err(_) => {
                    self.error(
                        &n,
                        "limits.maxRequestBody must be a number of bytes, 0 or more (0: no limit)"
                            .to_string(),
                    );
                    None
                }
            },
        };
        (limits, max_request_body)
    }

    /// A whole number under `limits.<key>` within `lo..=hi`, else an error at the value and `default`.
    fn count<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        raw: Option<Spanned<i64>>,
        (lo, hi): (i64, i64),
        default: T,
    ) -> T {
        let Some(raw) = raw else { return default };
        match T::try_from(raw.value) {
            Ok(v) if (lo..=hi).contains(&raw.value) => v,
            _ => {
                self.error(
                    &raw,
                    format!(
                        "limits.{key} must be between {lo} and {hi}, not {}",
                        raw.value
                    ),
                );
                default
            }
        }
    }

    fn duration(&mut self, key: &str, raw: Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.value.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(&raw, format!("timeouts.{key} must be greater than zero"));
                default
            }
            Err(e) => {
                self.error(
                    &raw,
                    format!(
                        "timeouts.{key}: {} is not a duration ({}); write e.g. \"500ms\", \"30s\" or \"2m\"",
                        quote(&raw.value),
                        first_line(&e.to_string())
                    ),
                );
                default
            }
        }
    }
}

/// The largest `connectRetries`: a request never tries more than this many further endpoints.
pub const MAX_CONNECT_RETRIES: usize = 16;

#[cfg(test)]
mod tests;
