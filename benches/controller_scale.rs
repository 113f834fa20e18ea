//! Controller scale: the release binary as an ingress controller against the in-test API server holding
//! 10,000 Ingresses (each its own host and Service) and 100,000 endpoints (10 per Service, half IPv4, half
//! IPv6). Measures the initial sync (start to `/readyz` answering 200, every Ingress routed), the time from
//! one EndpointSlice change to the new endpoint serving, and the controller's resident memory.
//!
//! `cargo bench --bench controller_scale` (set `INGRESSES` to change the size). Prints one line per figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark code: a failed assumption aborts it

#[path = "../tests/support/mod.rs"]
#[allow(missing_docs)]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::kube_api::KubeApi;
use support::running::{logged_addr, Running};
use support::{get, Upstream};

const ENDPOINTS_PER_SERVICE: usize = 10;

fn endpoint(i: usize, e: usize) -> (String, &'static str) {
    let n = i * ENDPOINTS_PER_SERVICE + e;
    if e.is_multiple_of(2) {
        (format!("169.254.{}.{}", (n >> 8) & 0xff, n & 0xff), "IPv4")
    } else {
        (format!("fd00::{:x}:{:x}", n >> 16, n & 0xffff), "IPv6")
    }
}

fn slice(i: usize, family: &'static str, port: u16, addrs: &[String]) -> serde_json::Value {
    let eps: Vec<_> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc{i}-{}", family.to_lowercase()), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
        "addressType": family, "ports": [{"name": "http", "port": port}], "endpoints": eps
    })
}

/// `VmRSS` (resident now) or `VmHWM` (the peak) of `pid`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let ingresses: usize = std::env::var("INGRESSES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "dualstack"}, "spec": {"controller": "dualstack-ingress.io/controller"}
    }));
    let loaded = Instant::now();
    for i in 0..ingresses {
        api.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc{i}"), "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }));
        for family in ["IPv4", "IPv6"] {
            let addrs: Vec<String> = (0..ENDPOINTS_PER_SERVICE)
                .map(|e| endpoint(i, e))
                .filter(|(_, f)| *f == family)
                .map(|(a, _)| a)
                .collect();
            api.apply(slice(i, family, 8080, &addrs));
        }
        api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": format!("ing{i}"), "namespace": "default"},
            "spec": {"ingressClassName": "dualstack", "rules": [{"host": format!("h{i}.example.com"),
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": format!("svc{i}"), "port": {"name": "http"}}}}]}}]}
        }));
    }
    eprintln!(
        "loaded {ingresses} Ingresses, {} endpoints into the API server in {:?}",
        ingresses * ENDPOINTS_PER_SERVICE,
        loaded.elapsed()
    );

    let config = dir.path().join("controller.yaml");
    std::fs::write(
        &config,
        "listen: [\"127.0.0.1:0\"]\nlistenTls: []\nadmin: [\"127.0.0.1:0\"]\ntimeouts:\n  connect: 100ms\n",
    )
    .unwrap();
    let started = Instant::now();
    let mut bin = Running::start_env(
        dir.path(),
        &["--kubernetes", "--config", config.to_str().unwrap()],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUST_LOG", "warn,dualstack_ingress=info,access=off"),
        ],
    );
    let (data, _) = (
        logged_addr(
            &bin.wait_line("listening", |l| logged_addr(l, "listening").is_some())
                .await,
            "listening",
        )
        .unwrap(),
        (),
    );
    let admin = logged_addr(
        &bin.wait_line("admin", |l| logged_addr(l, "admin listening").is_some())
            .await,
        "admin listening",
    )
    .unwrap();
    loop {
        if get(&format!("http://{admin}/readyz"), &[]).await.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sync = started.elapsed();
    let pid = bin.child.id();
    let rss_ready = status_kib(pid, "VmRSS:");

    // A cluster at rest, then one change: the last Service's IPv4 slice points at a live upstream.
    let up = Upstream::start("127.0.0.1:0").await;
    let last = ingresses - 1;
    let host = format!("h{last}.example.com");
    // The allocator returns freed pages to the system about a second after they were freed (mimalloc's
    // purge delay): the resident size a second or two after the sync is the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_settled = status_kib(pid, "VmRSS:");
    let metric = |name: &'static str| {
        let url = format!("http://{admin}/metrics");
        async move {
            get(&url, &[])
                .await
                .body
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .map(|v| v.trim().parse::<f64>().unwrap_or(0.0))
                })
                .unwrap_or(0.0)
        }
    };
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // The swap is seen in the log, not by polling /metrics: a scrape renders the histograms of 10,000
    // backends, and scraping every few milliseconds would take the CPU the swap itself needs.
    let swaps = |bin: &Running| {
        bin.stderr()
            .iter()
            .filter(|l| {
                l.contains("configuration reloaded") || l.contains("configuration installed")
            })
            .count()
    };
    let before = swaps(&bin);
    let applied_at = unix_now();
    api.apply(slice(
        last,
        "IPv4",
        up.addr.port(),
        &[up.addr.ip().to_string()],
    ));
    while swaps(&bin) == before {
        assert!(unix_now() - applied_at < 60.0, "the change never applied");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The swap's own timestamp: the time spent polling /metrics is not part of the figure.
    let swapped_at = metric("dualstack_ingress_last_table_swap_timestamp_seconds ").await;
    let change = Duration::from_secs_f64((swapped_at - applied_at).max(0.0));
    // Requests for that host now reach the live upstream (round robin over it and the IPv6 endpoints,
    // which fail over to it within the connect timeout).
    let seen = get(&format!("http://{data}/"), &[("host", &host)]).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    if std::env::var_os("SHOW_LOG").is_some() {
        for l in bin.stderr().iter().rev().take(6).rev() {
            eprintln!("{l}");
        }
    }
    println!(
        "controller_scale ingresses={ingresses} endpoints={}",
        ingresses * ENDPOINTS_PER_SERVICE
    );
    println!("initial sync (start to ready): {:.2} s", sync.as_secs_f64());
    println!(
        "EndpointSlice change to serving: {:.0} ms",
        change.as_secs_f64() * 1000.0
    );
    let mb = |kib: u64| kib as f64 / 1024.0;
    println!("resident memory at ready: {:.1} MB", mb(rss_ready));
    println!("resident memory 2 s after ready: {:.1} MB", mb(rss_settled));
    println!(
        "resident memory after the change: {:.1} MB",
        mb(status_kib(pid, "VmRSS:"))
    );
    println!(
        "peak resident memory (VmHWM): {:.1} MB",
        mb(status_kib(pid, "VmHWM:"))
    );
    drop(bin);
}
