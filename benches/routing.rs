//! Routing micro-benchmarks (criterion): the per-request lookup with 10, 1,000 and 100,000 rules, and
//! compiling a table of 10,000 routes with 50,000 endpoints (what every reload pays).
//!
//! ```sh
//! cargo bench --bench routing
//! ```
//!
//! A table of `n` rules holds `n/2` exact hosts (`host-{i}.example.com`, each with `/` and `/api/v1`),
//! `n/4` one-label wildcards (`*.w{i}.example.com`) and `n/4` deep prefix paths
//! (`/p{i}/a/b/c/d/e/f/g` under `deep.example.com`). Each lookup parses the request authority as the proxy
//! does (`routing::host::parse`) and then looks the path up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dualstack_ingress::config;
use dualstack_ingress::model::{Backend, HostMatch, Model, PathKind, PathRule, Rule};
use dualstack_ingress::routing::{self, Table};

/// A model with no rules and the backends `b0`..`b{backends}` of `endpoints` endpoints each, half IPv4
/// and half IPv6.
fn base_model(backends: usize, endpoints: usize) -> Model {
    let mut model = config::parse(
        "bench.yaml",
        "listen: [\"127.0.0.1:0\"]\nbackends:\n  seed:\n    endpoints: [\"127.0.0.1:1\"]\n",
    )
    .expect("the seed configuration is valid")
    .model;
    model.backends.clear();
    for b in 0..backends {
        let eps = (0..endpoints)
            .map(|e| {
                let n = (b * endpoints + e) as u32;
                if e % 2 == 0 {
                    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | n), 8080))
                } else {
                    SocketAddr::from((
                        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16),
                        8080,
                    ))
                }
            })
            .collect();
        model.backends.insert(
            format!("b{b}"),
            Backend {
                endpoints: eps,
                ..Backend::default()
            },
        );
    }
    model
}

fn path(path: &str, kind: PathKind, backend: usize) -> PathRule {
    PathRule {
        path: path.to_string(),
        kind,
        backend: format!("b{backend}"),
        allow: Vec::new(),
    }
}

/// The mixed table of `n` rules described in the module documentation, over 16 backends.
fn mixed_model(n: usize) -> Model {
    let mut model = base_model(16, 2);
    let (exact, wildcard) = (n / 2, n / 4);
    let deep = n - exact - wildcard;
    for i in 0..exact {
        model.rules.push(Rule {
            host: Some(HostMatch::Exact(format!("host-{i}.example.com"))),
            paths: vec![
                path("/", PathKind::Prefix, i % 16),
                path("/api/v1", PathKind::Prefix, (i + 1) % 16),
            ],
        });
    }
    for i in 0..wildcard {
        model.rules.push(Rule {
            host: Some(HostMatch::Wildcard(format!("w{i}.example.com"))),
            paths: vec![path("/", PathKind::Prefix, i % 16)],
        });
    }
    model.rules.push(Rule {
        host: Some(HostMatch::Exact("deep.example.com".to_string())),
        paths: (0..deep)
            .map(|i| path(&format!("/p{i}/a/b/c/d/e/f/g"), PathKind::Prefix, i % 16))
            .collect(),
    });
    model
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    for n in [10usize, 1_000, 100_000] {
        let table = Table::compile_fresh(&mixed_model(n));
        let exact_host = format!("host-{}.example.com:8080", n / 4);
        let wildcard_host = format!("api.w{}.example.com", n / 8);
        let deep_path = format!("/p{}/a/b/c/d/e/f/g/h/i/j", (n - n / 2 - n / 4) / 2);
        let cases = [
            ("exact_host", exact_host.as_str(), "/api/v1/users/42"),
            ("wildcard", wildcard_host.as_str(), "/static/app.js"),
            ("deep_path", "deep.example.com", deep_path.as_str()),
            ("miss", "nowhere.example.org", "/"),
        ];
        for (name, host, path) in cases {
            // Every case must reach a backend except the miss (no default backend in this table).
            let mut scratch = String::new();
            let found = table
                .lookup(&routing::host::parse(host, &mut scratch), path)
                .is_some();
            assert_eq!(found, name != "miss", "{name} with {n} rules");
            group.bench_with_input(
                BenchmarkId::new(name, n),
                &(host, path),
                |b, (host, path)| {
                    let mut scratch = String::new();
                    b.iter(|| {
                        let h = routing::host::parse(black_box(host), &mut scratch);
                        black_box(table.lookup(&h, black_box(path)).is_some())
                    });
                },
            );
        }
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(10);
    // 10,000 routes, each to its own backend of 5 endpoints: 50,000 endpoints.
    let mut model = base_model(10_000, 5);
    for i in 0..10_000 {
        model.rules.push(Rule {
            host: Some(HostMatch::Exact(format!("svc-{i}.example.com"))),
            paths: vec![path("/", PathKind::Prefix, i)],
        });
    }
    let endpoints: usize = model.backends.values().map(|b| b.endpoints.len()).sum();
    assert_eq!(endpoints, 50_000);
    group.bench_function("10k_routes_50k_endpoints", |b| {
        b.iter(|| Table::compile_fresh(black_box(&model)));
    });
    group.finish();
}

criterion_group!(benches, lookup, compile);
criterion_main!(benches);
