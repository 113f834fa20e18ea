//! The routing table as text, for `--manifests DIR --check`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::translate::host_label;
use super::Translation;
use crate::model::{PathKind, PathRule, Protocol, TlsHost};

/// Renders what a translation routes, in a stable order: a summary line; routes per host (sorted, `*` for
/// rules without a host last), each path with its type and backend; the default backend; every backend
/// with its protocol and endpoints (each tagged `ipv4` or `ipv6`) or DNS names; certificates with their
/// hosts (the first one is the default); then every problem as `namespace/name: message`.
pub fn render(t: &Translation) -> String {
    let mut out = String::new();
    let s = &t.stats;
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let _ = writeln!(
        out,
        "{}, {}, {}, {}, {}, {}, {}",
        plural(t.owned.len(), "ingress", "ingresses"),
        plural(s.hosts, "host", "hosts"),
        plural(s.paths, "path", "paths"),
        plural(s.endpoints_v4, "IPv4 endpoint", "IPv4 endpoints"),
        plural(s.endpoints_v6, "IPv6 endpoint", "IPv6 endpoints"),
        plural(s.certificates, "certificate", "certificates"),
        plural(t.problems.len(), "problem", "problems"),
    );

    let m = &t.model;
    // (rules without a host sort last, host) → paths
    let mut hosts: BTreeMap<(bool, String), Vec<&PathRule>> = BTreeMap::new();
    for rule in &m.rules {
        hosts
            .entry((rule.host.is_none(), host_label(rule.host.as_ref())))
            .or_default()
            .extend(&rule.paths);
    }
    out.push_str("routes:\n");
    if hosts.is_empty() {
        out.push_str("  (none)\n");
    }
    for ((_, host), mut paths) in hosts {
        paths.sort_by(|a, b| (&a.path, kind_order(a.kind)).cmp(&(&b.path, kind_order(b.kind))));
        let width = paths.iter().map(|p| p.path.len()).max().unwrap_or(0);
        let _ = writeln!(out, "  {host}");
        for p in paths {
            let _ = writeln!(
                out,
                "    {:<width$}  {:<6}  -> {}",
                p.path,
                kind_name(p.kind),
                p.backend
            );
        }
    }
    let _ = writeln!(
        out,
        "default backend: {}",
        m.default_backend
            .as_deref()
            .unwrap_or("(none: unmatched requests get 404)")
    );

    out.push_str("backends:\n");
    if m.backends.is_empty() {
        out.push_str("  (none)\n");
    }
    for (name, b) in &m.backends {
        let _ = writeln!(out, "  {name}  {}", protocol_name(b.protocol));
        for e in &b.endpoints {
            let family = if e.is_ipv4() { "ipv4" } else { "ipv6" };
            let _ = writeln!(out, "    {e}  {family}");
        }
        for n in &b.named {
            let _ = writeln!(out, "    {n}  dns");
        }
        if b.endpoints.is_empty() && b.named.is_empty() {
            out.push_str("    (no endpoints: requests get 503)\n");
        }
    }

    out.push_str("certificates:\n");
    if m.tls.is_empty() {
        out.push_str("  (none)\n");
    }
    for (i, c) in m.tls.iter().enumerate() {
        let hosts: Vec<String> = c
            .hosts
            .iter()
            .map(|h| match h {
                TlsHost::Name(n) => host_label(Some(n)),
                TlsHost::Ip(ip) => ip.to_string(),
            })
            .collect();
        let hosts = if hosts.is_empty() {
            "(no hosts)".to_string()
        } else {
            hosts.join(", ")
        };
        let default = if i == 0 { "  (default)" } else { "" };
        let _ = writeln!(out, "  {hosts}{default}");
    }

    out.push_str("problems:\n");
    if t.problems.is_empty() {
        out.push_str("  (none)\n");
    }
    for p in &t.problems {
        let _ = writeln!(out, "  {p}");
    }
    out
}

fn kind_order(kind: PathKind) -> u8 {
    match kind {
        PathKind::Exact => 0,
        PathKind::Prefix => 1,
    }
}

fn kind_name(kind: PathKind) -> &'static str {
    match kind {
        PathKind::Exact => "Exact",
        PathKind::Prefix => "Prefix",
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http1 => "http1",
        Protocol::H2c => "h2c",
        Protocol::Https => "https",
        Protocol::H2 => "h2",
    }
}
