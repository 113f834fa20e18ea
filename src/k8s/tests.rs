//! Table-driven translation tests. Each file in `src/k8s/fixtures/` holds the input objects and one
//! `kind: Expect` document with the outcome; adding a case is adding a file.
//!
//! ```yaml
//! apiVersion: test.dualstack-ingress.io/v1
//! kind: Expect
//! options: {ingressClass: dualstack, controllerName: ..., watchNamespace: ...}   # optional
//! owned: [ns/name, ...]                                 # optional; Ingresses of our class, oldest first
//! routes: ["HOST PATH KIND -> BACKEND", ...]            # in model order; HOST is * without a host
//! defaultBackend: NAME                                  # optional
//! backends:                                             # every backend of the model
//!   NAME: {protocol: http1, endpoints: ["IP:PORT", ...], named: ["HOST:PORT", ...]}
//! tls: ["HOST, HOST", ...]                               # certificates in model order
//! problems: ["ns/name REASON: message", ...]
//! stats: {hosts: 1, paths: 2, endpointsV4: 1, endpointsV6: 1, certificates: 0}   # optional
//! report: |                                             # optional: the exact `report::render` output
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
    IngressRule, IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::translate::host_label;
use super::*;
use crate::model::{PathKind, Protocol, TlsHost};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    options: Option<ExpectOptions>,
    #[serde(default)]
    owned: Option<Vec<String>>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    default_backend: Option<String>,
    #[serde(default)]
    backends: BTreeMap<String, ExpectBackend>,
    #[serde(default)]
    tls: Vec<String>,
    #[serde(default)]
    problems: Vec<String>,
    #[serde(default)]
    stats: Option<ExpectStats>,
    #[serde(default)]
    report: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectOptions {
    ingress_class: Option<String>,
    controller_name: Option<String>,
    watch_namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectBackend {
    #[serde(default = "http1")]
    protocol: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    named: Vec<String>,
}

fn http1() -> String {
    "http1".to_string()
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectStats {
    hosts: usize,
    paths: usize,
    endpoints_v4: usize,
    endpoints_v6: usize,
    certificates: usize,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/k8s/fixtures")
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http1 => "http1",
        Protocol::H2c => "h2c",
        Protocol::Https => "https",
        Protocol::H2 => "h2",
    }
}

fn routes_of(t: &Translation) -> Vec<String> {
    let mut out = Vec::new();
    for rule in &t.model.rules {
        for p in &rule.paths {
            let kind = match p.kind {
                PathKind::Exact => "Exact",
                PathKind::Prefix => "Prefix",
            };
            out.push(format!(
                "{} {} {kind} -> {}",
                host_label(rule.host.as_ref()),
                p.path,
                p.backend
            ));
        }
    }
    out
}

fn backends_of(t: &Translation) -> BTreeMap<String, ExpectBackend> {
    t.model
        .backends
        .iter()
        .map(|(name, b)| {
            (
                name.clone(),
                ExpectBackend {
                    protocol: protocol_name(b.protocol).to_string(),
                    endpoints: b
                        .endpoints
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect(),
                    named: b.named.iter().map(ToString::to_string).collect(),
                },
            )
        })
        .collect()
}

fn tls_of(t: &Translation) -> Vec<String> {
    t.model
        .tls
        .iter()
        .map(|c| {
            c.hosts
                .iter()
                .map(|h| match h {
                    TlsHost::Name(n) => host_label(Some(n)),
                    TlsHost::Ip(ip) => ip.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

fn problems_of(t: &Translation) -> Vec<String> {
    t.problems
        .iter()
        .map(|p| format!("{} {}: {}", p.ingress, p.reason, p.message))
        .collect()
}

/// Runs one fixture; returns what differs.
fn run_fixture(path: &Path) -> Vec<String> {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("cannot read: {e}")],
    };
    let mut state = ClusterState::default();
    if let Err(errors) = manifests::parse_str(&file, &text, &mut state) {
        return errors;
    }
    let docs: Vec<serde_json::Value> = match serde_saphyr::from_multiple(&text) {
        Ok(d) => d,
        Err(e) => return vec![e.to_string()],
    };
    let mut expects = docs
        .into_iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Expect"));
    let (Some(expect), None) = (expects.next(), expects.next()) else {
        return vec!["needs exactly one `kind: Expect` document".to_string()];
    };
    let expect: Expect = match serde_json::from_value(expect) {
        Ok(e) => e,
        Err(e) => return vec![format!("Expect: {e}")],
    };
    let mut opts = Options::default();
    if let Some(o) = expect.options {
        if let Some(c) = o.ingress_class {
            opts.ingress_class = c;
        }
        if let Some(c) = o.controller_name {
            opts.controller_name = c;
        }
        opts.watch_namespace = o.watch_namespace;
    }

    let t = translate(&state, &opts);
    let mut diffs = Vec::new();
    let mut check = |what: &str, want: String, got: String| {
        if want != got {
            diffs.push(format!("{what}:\n  want: {want}\n  got:  {got}"));
        }
    };
    if let Some(owned) = &expect.owned {
        let got: Vec<String> = t
            .owned
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        check("owned", format!("{owned:#?}"), format!("{got:#?}"));
    }
    check(
        "routes",
        format!("{:#?}", expect.routes),
        format!("{:#?}", routes_of(&t)),
    );
    check(
        "defaultBackend",
        format!("{:?}", expect.default_backend),
        format!("{:?}", t.model.default_backend),
    );
    check(
        "backends",
        format!("{:#?}", expect.backends),
        format!("{:#?}", backends_of(&t)),
    );
    check(
        "tls",
        format!("{:#?}", expect.tls),
        format!("{:#?}", tls_of(&t)),
    );
    check(
        "problems",
        format!("{:#?}", expect.problems),
        format!("{:#?}", problems_of(&t)),
    );
    if let Some(s) = &expect.stats {
        let got = ExpectStats {
            hosts: t.stats.hosts,
            paths: t.stats.paths,
            endpoints_v4: t.stats.endpoints_v4,
            endpoints_v6: t.stats.endpoints_v6,
            certificates: t.stats.certificates,
        };
        check("stats", format!("{s:?}"), format!("{got:?}"));
    }
    if let Some(report) = &expect.report {
        check("report", report.clone(), report::render(&t));
    }
    // Only the four routing fields are ever set.
    let rest = crate::model::Model {
        rules: Vec::new(),
        default_backend: None,
        backends: BTreeMap::new(),
        tls: Vec::new(),
        ..t.model.clone()
    };
    if rest != crate::model::Model::default() {
        diffs.push("fields other than rules, defaultBackend, backends, tls were set".to_string());
    }
    diffs
}

#[test]
fn fixtures() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    let mut failures = Vec::new();
    for f in &files {
        let diffs = run_fixture(f);
        if !diffs.is_empty() {
            failures.push(format!("{}:\n{}", f.display(), diffs.join("\n")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn example_manifests_translate_without_problems() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes");
    let state = manifests::load_dir(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
    let t = translate(&state, &Options::default());
    assert!(t.problems.is_empty(), "{:#?}", t.problems);
    let text = report::render(&t);
    for line in [
        "    169.254.10.1:8080  ipv4",
        "    [fd00::10:1]:8081  ipv6",
        "  default/web/api:9000  h2c",
        "  app.example.com  (default)",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    assert_eq!(t.owned.len(), 2, "{:?}", t.owned);
    assert_eq!(t.stats.certificates, 1);
    assert!(
        t.stats.endpoints_v4 >= 2 && t.stats.endpoints_v6 >= 2,
        "{:?}",
        t.stats
    );
    // The certificate parses as a rustls certificate and key, as the store will load it.
    assert!(crate::tls::CertStore::new()
        .and_then(|s| s.load(&t.model.tls))
        .is_ok());
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

/// 10,000 Ingresses, each with its own dual-stack Service of 10 endpoints (100,000 in all), translate to
/// the expected counts. Cost is linear: a quadratic step would take minutes here.
#[test]
fn ten_thousand_ingresses_and_a_hundred_thousand_endpoints() {
    const INGRESSES: usize = 10_000;
    const PER_SERVICE: usize = 10;
    let mut state = ClusterState {
        classes: vec![Arc::new(IngressClass {
            metadata: meta("", "dualstack"),
            spec: Some(IngressClassSpec {
                controller: Some(DEFAULT_CONTROLLER_NAME.to_string()),
                ..IngressClassSpec::default()
            }),
        })],
        ..ClusterState::default()
    };
    for i in 0..INGRESSES {
        let ns = format!("ns{}", i % 100);
        let name = format!("app{i}");
        let backend = IngressBackend {
            service: Some(IngressServiceBackend {
                name: name.clone(),
                port: Some(ServiceBackendPort {
                    name: Some("http".to_string()),
                    number: None,
                }),
            }),
            resource: None,
        };
        state.ingresses.push(Arc::new(Ingress {
            metadata: meta(&ns, &name),
            spec: Some(IngressSpec {
                ingress_class_name: Some("dualstack".to_string()),
                rules: Some(vec![IngressRule {
                    host: Some(format!("app{i}.example.com")),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![
                            HTTPIngressPath {
                                path: Some("/".to_string()),
                                path_type: "Prefix".to_string(),
                                backend: backend.clone(),
                            },
                            HTTPIngressPath {
                                path: Some("/healthz".to_string()),
                                path_type: "Exact".to_string(),
                                backend,
                            },
                        ],
                    }),
                }]),
                ..IngressSpec::default()
            }),
            status: None,
        }));
        state.services.push(Arc::new(Service::from(
            k8s_openapi::api::core::v1::Service {
                metadata: meta(&ns, &name),
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        name: Some("http".to_string()),
                        port: 80,
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                status: None,
            },
        )));
        for family in ["IPv4", "IPv6"] {
            let endpoints = (0..PER_SERVICE / 2)
                .map(|j| {
                    let n = u32::try_from(i * PER_SERVICE / 2 + j).unwrap_or(0);
                    let ip: IpAddr = if family == "IPv4" {
                        // 169.254.0.0/16 holds all 50,000 IPv4 endpoints.
                        Ipv4Addr::from(0xA9FE_0000 | n).into()
                    } else {
                        Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(n)).into()
                    };
                    Endpoint {
                        addresses: vec![ip.to_string()],
                        ..Endpoint::default()
                    }
                })
                .collect();
            let mut slice_meta = meta(&ns, &format!("{name}-{family}"));
            slice_meta.labels = Some(
                [(SERVICE_NAME_LABEL.to_string(), name.clone())]
                    .into_iter()
                    .collect(),
            );
            state.slices.push(Arc::new(EndpointSlice::from(
                k8s_openapi::api::discovery::v1::EndpointSlice {
                    metadata: slice_meta,
                    address_type: family.to_string(),
                    endpoints: Some(endpoints),
                    ports: Some(vec![EndpointPort {
                        name: Some("http".to_string()),
                        port: Some(8080),
                        ..EndpointPort::default()
                    }]),
                },
            )));
        }
    }
    let t = translate(&state, &Options::default());
    assert!(t.problems.is_empty(), "{:?}", t.problems.first());
    assert_eq!(t.owned.len(), INGRESSES);
    assert_eq!(t.model.backends.len(), INGRESSES);
    assert_eq!(
        t.stats,
        Stats {
            hosts: INGRESSES,
            paths: 2 * INGRESSES,
            endpoints_v4: INGRESSES * PER_SERVICE / 2,
            endpoints_v6: INGRESSES * PER_SERVICE / 2,
            certificates: 0,
        }
    );
}

#[test]
fn problem_display_names_the_ingress() {
    let p = Problem {
        ingress: IngressKey {
            namespace: "default".into(),
            name: "web".into(),
        },
        reason: "service-not-found",
        message: "service default/missing not found".into(),
    };
    assert_eq!(
        p.to_string(),
        "default/web: service default/missing not found"
    );
}

/// A memoised translation equals a fresh one after each kind of change, and sees every change.
#[test]
fn memoised_translation_follows_every_change() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes");
    let state = manifests::load_dir(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
    let opts = Options::default();
    let mut memo = super::Memo::default();
    let first = super::translate_with(&state, &opts, &mut memo);
    assert_eq!(first, translate(&state, &opts));
    // Unchanged: the same result from the memo.
    assert_eq!(super::translate_with(&state, &opts, &mut memo), first);

    // One slice loses its endpoints: the memoised result follows, as a fresh translation does.
    let mut changed = state.clone();
    let at = changed
        .slices
        .iter()
        .position(|s| s.endpoints.as_ref().is_some_and(|e| !e.is_empty()))
        .expect("the example has a slice with endpoints");
    let mut slice: EndpointSlice = (*changed.slices[at]).clone();
    slice.endpoints = Some(Vec::new());
    changed.slices[at] = std::sync::Arc::new(slice);
    let after = super::translate_with(&changed, &opts, &mut memo);
    assert_eq!(after, translate(&changed, &opts));
    assert_ne!(after.model.backends, first.model.backends);

    // A Secret or Service removed: the memo never answers for an object that is gone.
    let mut gone = changed.clone();
    gone.secrets.clear();
    gone.services.clear();
    let after = super::translate_with(&gone, &opts, &mut memo);
    assert_eq!(after, translate(&gone, &opts));
    assert!(after
        .problems
        .iter()
        .any(|p| p.reason == "secret-not-found"));
    assert!(after
        .problems
        .iter()
        .any(|p| p.reason == "service-not-found"));

    // And back: everything is found again.
    assert_eq!(super::translate_with(&state, &opts, &mut memo), first);
}
