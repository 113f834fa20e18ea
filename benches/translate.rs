//! Controller translation cost (criterion): the cluster state of `controller_scale` (10,000 Ingresses, each
//! its own host and Service, 100,000 endpoints, half IPv4 and half IPv6) translated into a model, and the
//! model compiled into a routing table with its endpoint sets — the CPU an EndpointSlice change costs
//! before the new table serves.
//!
//! ```sh
//! cargo bench --bench translate
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark code: a failed assumption aborts it

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dualstack_ingress::k8s::{translate, translate_with, ClusterState, Memo, Options};
use dualstack_ingress::routing::Table;
use dualstack_ingress::upstream::Registry;
use serde_json::json;

const INGRESSES: usize = 10_000;
const ENDPOINTS_PER_SERVICE: usize = 10;

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<K> {
    Arc::new(serde_json::from_value(value).unwrap())
}

fn state() -> ClusterState {
    let mut state = ClusterState {
        classes: vec![object(json!({
            "metadata": {"name": "dualstack"}, "spec": {"controller": "dualstack-ingress.io/controller"}
        }))],
        ..ClusterState::default()
    };
    for i in 0..INGRESSES {
        state.services.push(object(json!({
            "metadata": {"name": format!("svc{i}"), "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        })));
        for family in ["IPv4", "IPv6"] {
            let eps: Vec<_> = (0..ENDPOINTS_PER_SERVICE / 2)
                .map(|e| {
                    let n = i * ENDPOINTS_PER_SERVICE + e;
                    let a = if family == "IPv4" {
                        format!("169.254.{}.{}", (n >> 8) & 0xff, n & 0xff)
                    } else {
                        format!("fd00::{:x}:{:x}", n >> 16, n & 0xffff)
                    };
                    json!({"addresses": [a], "conditions": {"ready": true}})
                })
                .collect();
            state.slices.push(object(json!({
                "metadata": {"name": format!("svc{i}-{}", family.to_lowercase()), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
                "addressType": family, "ports": [{"name": "http", "port": 8080}], "endpoints": eps
            })));
        }
        state.ingresses.push(object(json!({
            "metadata": {"name": format!("ing{i}"), "namespace": "default"},
            "spec": {"ingressClassName": "dualstack", "rules": [{"host": format!("h{i}.example.com"),
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": format!("svc{i}"), "port": {"name": "http"}}}}]}}]}
        })));
    }
    state
}

fn bench(c: &mut Criterion) {
    let state = state();
    let opts = Options::default();
    let mut group = c.benchmark_group("controller");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("translate 10,000 Ingresses", |b| {
        b.iter(|| black_box(translate(&state, &opts)));
    });
    // One EndpointSlice changes between translations (a new object, as the reflector store holds it).
    let mut changed = state.clone();
    let last = changed.slices.len() - 1;
    changed.slices[last] = Arc::new((*changed.slices[last]).clone());
    let states = [state.clone(), changed];
    let mut memo = Memo::default();
    let mut turn = 0;
    group.bench_function(
        "translate 10,000 Ingresses after one EndpointSlice change",
        |b| {
            b.iter(|| {
                turn += 1;
                black_box(translate_with(&states[turn % 2], &opts, &mut memo))
            });
        },
    );
    let model = translate(&state, &opts).model;
    group.bench_function("compile 10,000 Ingresses from scratch", |b| {
        b.iter(|| black_box(Table::compile_fresh(&model)));
    });
    // What the apply loop pays on a change: the registry keeps every unchanged backend's endpoint set.
    let mut registry = Registry::new(Duration::from_secs(90));
    let _ = registry.endpoint_sets(&model);
    group.bench_function("compile 10,000 Ingresses with a warm registry", |b| {
        b.iter(|| {
            let _ = registry.endpoint_sets(&model);
            black_box(Table::compile(&model, &registry, None))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
