//! The static YAML (or JSON) configuration file: schema, validation with `FILE:LINE:COLUMN` errors, and
//! file watching for hot reload.

mod address;
mod host;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::model::{
    self, Backend, Model, PathKind, PathRule, PemSource, Protocol, Rule, Timeouts, TlsCert, TlsHost,
};

pub use address::parse_endpoint;
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

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Model, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read file: {e}"),
        }])
    })?;
    parse(&name, &text)
}

/// Parses and validates configuration `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Model, ConfigErrors> {
    if text.trim().is_empty() {
        // A half-written or truncated file must not replace a working table with an empty one.
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: "the configuration is empty".to_string(),
        }]));
    }
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            message: first_line(&e.without_snippet().to_string()),
        }])
    })?;
    let base = Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Validator {
        file,
        base,
        errors: Vec::new(),
    }
    .validate(raw)
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    // serde-saphyr may append " at line L, column C"; the location is already in front.
    match line.rfind(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    listen: Option<Vec<Spanned<String>>>,
    listen_tls: Option<Vec<Spanned<String>>>,
    admin: Option<Spanned<String>>,
    #[serde(default)]
    tls: Vec<RawTls>,
    redirect_to_https: Option<bool>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    default_backend: Option<Spanned<String>>,
    #[serde(default)]
    backends: BTreeMap<String, Spanned<RawBackend>>,
    timeouts: Option<RawTimeouts>,
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
    drain: Option<Spanned<String>>,
}

struct Validator<'a> {
    file: &'a str,
    /// Relative certificate and CA paths are resolved against the configuration file's directory.
    base: PathBuf,
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

    fn validate(mut self, raw: RawConfig) -> Result<Model, ConfigErrors> {
        let listen = match &raw.listen {
            None => model::default_listen(),
            Some(list) => list
                .iter()
                .filter_map(|a| self.listen_addr("listen", a))
                .collect(),
        };
        let admin = raw
            .admin
            .as_ref()
            .and_then(|a| self.listen_addr("admin", a));
        let tls: Vec<TlsCert> = raw.tls.iter().filter_map(|t| self.tls_cert(t)).collect();
        let listen_tls = match &raw.listen_tls {
            None if raw.tls.is_empty() => Vec::new(),
            None => model::default_listen_tls(),
            Some(list) => list
                .iter()
                .filter_map(|a| self.listen_addr("listenTls", a))
                .collect(),
        };

        let mut backends = BTreeMap::new();
        for (name, spanned) in &raw.backends {
            let mut endpoints = Vec::new();
            for ep in &spanned.value.endpoints {
                match parse_endpoint(&ep.value) {
                    Ok(addr) => endpoints.push(addr),
                    Err(message) => self.error(ep, format!("backend {name:?}: {message}")),
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
                            format!("backend {name:?}: protocol {other:?} is not one of http1, h2c, https, h2"),
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
                    protocol,
                    ca,
                    ..Backend::default()
                },
            );
        }

        let mut rules = Vec::new();
        for route in &raw.routes {
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
                        format!("path {:?} must start with \"/\"", p.path.value),
                    );
                }
                let kind = match p.path_type.as_ref().map(|t| t.value.as_str()) {
                    None | Some("Prefix") | Some("ImplementationSpecific") => PathKind::Prefix,
                    Some("Exact") => PathKind::Exact,
                    Some(other) => {
                        if let Some(t) = &p.path_type {
                            self.error(
                                t,
                                format!("pathType {other:?} is not one of Exact, Prefix, ImplementationSpecific"),
                            );
                        }
                        PathKind::Prefix
                    }
                };
                self.check_backend_name(&backends, &p.backend);
                paths.push(PathRule {
                    path: p.path.value.clone(),
                    kind,
                    backend: p.backend.value.clone(),
                });
            }
            rules.push(Rule { host, paths });
        }
        if let Some(d) = &raw.default_backend {
            self.check_backend_name(&backends, d);
        }

        let timeouts = self.timeouts(raw.timeouts.unwrap_or_default());

        if self.errors.is_empty() {
            Ok(Model {
                listen,
                listen_tls,
                admin,
                tls,
                redirect_to_https: raw.redirect_to_https.unwrap_or(true),
                rules,
                default_backend: raw.default_backend.map(|d| d.value),
                backends,
                timeouts,
            })
        } else {
            // Report in file order, whatever order the checks ran in.
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(self.errors))
        }
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
                    format!("tls {what} file {} does not exist", path.display()),
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
                format!("backend {:?} is not defined under \"backends\"", name.value),
            );
        }
    }

    fn timeouts(&mut self, raw: RawTimeouts) -> Timeouts {
        let d = Timeouts::default();
        Timeouts {
            header_read: self.duration("headerRead", raw.header_read, d.header_read),
            idle: self.duration("idle", raw.idle, d.idle),
            connect: self.duration("connect", raw.connect, d.connect),
            response: self.duration("response", raw.response, d.response),
            drain: self.duration("drain", raw.drain, d.drain),
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
                    format!("timeouts.{key}: {:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\" or \"2m\"", raw.value),
                );
                default
            }
        }
    }
}

/// Where the configuration came from: a file on disk or the embedded default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file given with `--config`; watched for changes.
    File(PathBuf),
    /// [`EMBEDDED_DEFAULT`].
    Embedded,
}

#[cfg(test)]
mod tests;
