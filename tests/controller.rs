//! The ingress controller as a user runs it: the real binary with `--kubernetes`, its real kube client
//! pointed by a kubeconfig at the in-test API server, real upstreams on `127.0.0.1` and `[::1]`, and
//! traffic through the proxy on both families.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use support::certs::Ca;
use support::kube_api::KubeApi;
use support::running::Running;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// The API server, a kubeconfig for it and a directory for the proxy's files.
struct Cluster {
    api: KubeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let api = KubeApi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        api.apply(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "dualstack"},
            "spec": {"controller": "dualstack-ingress.io/controller"}
        }));
        Cluster {
            api,
            dir,
            kubeconfig,
        }
    }

    /// Starts a controller replica named `pod` with `args` added.
    async fn controller(&self, pod: &str, args: &[&str]) -> Proxy {
        let config = self.dir.path().join(format!("{pod}.yaml"));
        std::fs::write(
            &config,
            "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\nlistenTls: [\"127.0.0.1:0\", \"[::1]:0\"]\n\
             admin: [\"127.0.0.1:0\", \"[::1]:0\"]\ntimeouts:\n  connect: 1s\n",
        )
        .unwrap();
        let mut all = vec!["--kubernetes", "--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut bin = Running::start_env(
            self.dir.path(),
            &all,
            &[
                ("KUBECONFIG", self.kubeconfig.to_str().unwrap()),
                ("POD_NAME", pod),
                ("POD_NAMESPACE", "ingress"),
                ("DUALSTACK_INGRESS_LEASE_SECONDS", "2"),
            ],
        );
        let (v4, v6) = bin.data_addrs().await;
        let (t4, t6) = bin.logged_addrs("listening (TLS)").await;
        let (a4, a6) = bin.logged_addrs("admin listening").await;
        let (tls, admin) = (vec![t4, t6], vec![a4, a6]);
        Proxy {
            bin,
            v4,
            v6,
            tls,
            admin,
        }
    }
}

struct Proxy {
    bin: Running,
    v4: SocketAddr,
    v6: SocketAddr,
    tls: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
}

impl Proxy {
    fn url(&self, v6: bool, path: &str) -> String {
        format!("http://{}{path}", if v6 { self.v6 } else { self.v4 })
    }

    /// GET `path` with `Host: host` over one family.
    async fn get(&self, v6: bool, host: &str, path: &str) -> Seen {
        get(&self.url(v6, path), &[("host", host)]).await
    }

    /// Polls until a request for `host` on both families gets `status`.
    async fn wait_status(&self, host: &str, path: &str, status: u16, what: &str) {
        for v6 in [false, true] {
            wait_until(what, LIMIT, || async move {
                self.get(v6, host, path).await.status == status
            })
            .await;
        }
    }

    /// The upstreams that answered `n` requests for `host` on each family.
    async fn answered_by(&self, host: &str, n: usize) -> HashSet<String> {
        let mut seen = HashSet::new();
        for i in 0..n {
            let s = self.get(i % 2 == 1, host, "/").await;
            assert_eq!(s.status, 200, "{}", s.body);
            seen.insert(s.headers["x-upstream"].to_str().unwrap().to_string());
        }
        seen
    }

    async fn ready(&self) -> Vec<u16> {
        let mut codes = Vec::new();
        for a in &self.admin {
            codes.push(
                get(&format!("http://{a}/readyz"), &[])
                    .await
                    .status
                    .as_u16(),
            );
        }
        codes
    }
}

fn ingress(name: &str, class: Option<&str>, host: &str, service: &str, port: Value) -> Value {
    let mut spec = json!({
        "rules": [{"host": host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": port}}
        }]}}]
    });
    if let Some(class) = class {
        spec["ingressClassName"] = json!(class);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec
    })
}

fn service(name: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": ports, "ipFamilyPolicy": "PreferDualStack"}
    })
}

/// An EndpointSlice for `service` with `endpoints` of `(address, ready, serving, terminating)`.
fn slice(
    name: &str,
    service: &str,
    family: &str,
    port: Value,
    endpoints: &[(String, bool, bool, bool)],
) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(a, ready, serving, terminating)| {
            json!({"addresses": [a], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "ports": [port],
        "endpoints": eps
    })
}

fn ready(addr: SocketAddr) -> (String, bool, bool, bool) {
    (addr.ip().to_string(), true, true, false)
}

/// A dual-stack Service `web` with a named port `http` whose number differs per family: one IPv4 slice
/// (to `v4`) and one IPv6 slice (to `v6`).
fn dual_stack_web(api: &KubeApi, v4: SocketAddr, v6: SocketAddr) {
    api.apply(service("web", json!([{"name": "http", "port": 80}])));
    api.apply(slice(
        "web-v4",
        "web",
        "IPv4",
        json!({"name": "http", "port": v4.port()}),
        &[ready(v4)],
    ));
    api.apply(slice(
        "web-v6",
        "web",
        "IPv6",
        json!({"name": "http", "port": v6.port()}),
        &[ready(v6)],
    ));
}

/// A Service `web` (port 80, unnamed) with one slice of `to`'s family.
fn single_family_web(api: &KubeApi, to: SocketAddr) {
    let family = if to.is_ipv4() { "IPv4" } else { "IPv6" };
    api.apply(service("web", json!([{"port": 80}])));
    api.apply(slice(
        &format!("web-{}", family.to_lowercase()),
        "web",
        family,
        json!({"port": to.port()}),
        &[ready(to)],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_service_routes_to_both_families_and_follows_the_cluster() {
    let c = Cluster::start().await;
    let (up4, up6) = (
        Upstream::start("127.0.0.1:0").await,
        Upstream::start("[::1]:0").await,
    );
    // Before the first sync nothing is routed and /readyz fails.
    c.api.set_down(true);
    let p = c.controller("replica-a", &[]).await;
    assert_eq!(p.ready().await, [503, 503]);
    assert_eq!(p.get(false, "app.test", "/").await.status, 503);
    c.api.set_down(false);

    dual_stack_web(&c.api, up4.addr, up6.addr);
    c.api.apply(ingress(
        "web",
        Some("dualstack"),
        "app.test",
        "web",
        json!({"name": "http"}),
    ));
    p.wait_status("app.test", "/", 200, "the Ingress routes")
        .await;
    assert_eq!(p.ready().await, [200, 200]);
    let seen = p.answered_by("app.test", 8).await;
    let want: HashSet<String> = [up4.addr.to_string(), up6.addr.to_string()].into();
    assert_eq!(
        seen, want,
        "endpoints of both families, each by its slice's port"
    );

    // An endpoint turning not-ready leaves rotation.
    c.api.apply(slice(
        "web-v4",
        "web",
        "IPv4",
        json!({"name": "http", "port": up4.addr.port()}),
        &[(up4.addr.ip().to_string(), false, true, false)],
    ));
    let want6: HashSet<String> = [up6.addr.to_string()].into();
    wait_until("the not-ready endpoint leaves", LIMIT, || async {
        p.answered_by("app.test", 4).await == want6
    })
    .await;
    // With nothing ready, serving-and-terminating endpoints are used.
    c.api.apply(slice(
        "web-v6",
        "web",
        "IPv6",
        json!({"name": "http", "port": up6.addr.port()}),
        &[(up6.addr.ip().to_string(), false, false, true)],
    ));
    c.api.apply(slice(
        "web-v4",
        "web",
        "IPv4",
        json!({"name": "http", "port": up4.addr.port()}),
        &[(up4.addr.ip().to_string(), false, true, true)],
    ));
    let want4: HashSet<String> = [up4.addr.to_string()].into();
    wait_until(
        "the serving terminating endpoint is the fallback",
        LIMIT,
        || async { p.answered_by("app.test", 4).await == want4 },
    )
    .await;

    // Editing the Ingress changes routing; deleting it removes the route.
    c.api.apply(ingress(
        "web",
        Some("dualstack"),
        "other.test",
        "web",
        json!({"name": "http"}),
    ));
    p.wait_status("other.test", "/", 200, "the edited host routes")
        .await;
    p.wait_status("app.test", "/", 404, "the old host is gone")
        .await;
    c.api
        .delete("networking.k8s.io/v1", "Ingress", "default", "web");
    p.wait_status("other.test", "/", 404, "the deleted Ingress is gone")
        .await;

    let log = p.bin.stderr().join("\n");
    assert!(log.contains("routing table changed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_are_respected_and_a_broken_ingress_affects_only_itself() {
    let c = Cluster::start().await;
    let (up4, up6) = (
        Upstream::start("127.0.0.1:0").await,
        Upstream::start("[::1]:0").await,
    );
    dual_stack_web(&c.api, up4.addr, up6.addr);
    c.api.apply(ingress(
        "mine",
        Some("dualstack"),
        "mine.test",
        "web",
        json!({"number": 80}),
    ));
    c.api.apply(ingress(
        "theirs",
        Some("nginx"),
        "theirs.test",
        "web",
        json!({"number": 80}),
    ));
    let mut legacy = ingress("legacy", None, "legacy.test", "web", json!({"number": 80}));
    legacy["metadata"]["annotations"] = json!({"kubernetes.io/ingress.class": "dualstack"});
    c.api.apply(legacy);
    c.api.apply(ingress(
        "classless",
        None,
        "classless.test",
        "web",
        json!({"number": 80}),
    ));
    c.api.apply(ingress(
        "broken",
        Some("dualstack"),
        "broken.test",
        "missing",
        json!({"number": 80}),
    ));
    let p = c
        .controller(
            "replica-a",
            &["--publish-address", "192.0.2.10,2001:db8::10"],
        )
        .await;

    p.wait_status("mine.test", "/", 200, "our Ingress routes")
        .await;
    p.wait_status("legacy.test", "/", 200, "the legacy annotation routes")
        .await;
    for v6 in [false, true] {
        assert_eq!(
            p.get(v6, "theirs.test", "/").await.status,
            404,
            "another class is ignored"
        );
        assert_eq!(
            p.get(v6, "classless.test", "/").await.status,
            404,
            "no default class yet"
        );
        assert_eq!(
            p.get(v6, "broken.test", "/").await.status,
            503,
            "a missing Service: 503"
        );
    }
    // Our class becomes the default: class-less Ingresses are ours.
    c.api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": "dualstack", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "dualstack-ingress.io/controller"}
    }));
    p.wait_status(
        "classless.test",
        "/",
        200,
        "the default class adopts class-less Ingresses",
    )
    .await;

    // The leader writes both families' addresses into our Ingresses' status, also the broken one, and
    // posts an Event for the missing Service.
    for name in ["mine", "broken", "legacy"] {
        wait_until("status written", LIMIT, || async {
            let ing = c
                .api
                .get("networking.k8s.io/v1", "Ingress", "default", name)
                .unwrap();
            let ips: HashSet<String> = ing["status"]["loadBalancer"]["ingress"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e["ip"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            ips == HashSet::from(["192.0.2.10".to_string(), "2001:db8::10".to_string()])
        })
        .await;
    }
    let theirs = c
        .api
        .get("networking.k8s.io/v1", "Ingress", "default", "theirs")
        .unwrap();
    assert!(theirs["status"]["loadBalancer"]["ingress"]
        .as_array()
        .is_none_or(Vec::is_empty));
    wait_until("an Event names the missing Service", LIMIT, || async {
        c.api.list("events.k8s.io/v1", "Event").iter().any(|e| {
            e["regarding"]["name"] == "broken"
                && e["note"].as_str().is_some_and(|n| n.contains("missing"))
        })
    })
    .await;

    // An Ingress that leaves our class gets our addresses removed.
    c.api.apply(ingress(
        "mine",
        Some("nginx"),
        "mine.test",
        "web",
        json!({"number": 80}),
    ));
    wait_until("our addresses are removed", LIMIT, || async {
        let ing = c
            .api
            .get("networking.k8s.io/v1", "Ingress", "default", "mine")
            .unwrap();
        ing["status"]["loadBalancer"]["ingress"]
            .as_array()
            .is_none_or(Vec::is_empty)
    })
    .await;
    p.wait_status("mine.test", "/", 404, "the Ingress that left is not routed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_status_and_a_second_replica_takes_over() {
    let c = Cluster::start().await;
    let up = Upstream::start("[::1]:0").await;
    single_family_web(&c.api, up.addr);
    c.api.apply(ingress(
        "web",
        Some("dualstack"),
        "app.test",
        "web",
        json!({"number": 80}),
    ));
    let args = ["--publish-address", "192.0.2.20,2001:db8::20"];
    let a = c.controller("replica-a", &args).await;
    let holder = || {
        c.api
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                "ingress",
                "dualstack-ingress-leader",
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    wait_until("replica-a leads", LIMIT, || async {
        holder().as_deref() == Some("replica-a")
    })
    .await;
    let b = c.controller("replica-b", &args).await;
    // Both serve traffic; only the leader writes.
    b.wait_status("app.test", "/", 200, "the second replica serves")
        .await;
    a.wait_status("app.test", "/", 200, "the leader serves")
        .await;
    assert_eq!(holder().as_deref(), Some("replica-a"));
    let metrics = get(&format!("http://{}/metrics", b.admin[1]), &[])
        .await
        .body;
    assert!(
        metrics.contains("dualstack_ingress_k8s_leader 0"),
        "{metrics}"
    );

    // The leader goes away: the other replica takes the lease and keeps status right.
    drop(a);
    wait_until("replica-b leads", LIMIT, || async {
        holder().as_deref() == Some("replica-b")
    })
    .await;
    let mut ing = c
        .api
        .get("networking.k8s.io/v1", "Ingress", "default", "web")
        .unwrap();
    ing["status"] = json!({});
    c.api.apply(ing);
    wait_until("replica-b writes status", LIMIT, || async {
        let ing = c
            .api
            .get("networking.k8s.io/v1", "Ingress", "default", "web")
            .unwrap();
        ing["status"]["loadBalancer"]["ingress"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_ingress_serves_its_secret_by_sni_and_rotates() {
    let c = Cluster::start().await;
    let up = Upstream::start("127.0.0.1:0").await;
    single_family_web(&c.api, up.addr);
    let (ca1, ca2) = (Ca::new(), Ca::new());
    let secret = |ca: &Ca| {
        let leaf = ca.leaf(&["secure.test"]);
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "secure-tls", "namespace": "default"},
            "stringData": {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem}
        })
    };
    c.api.apply(secret(&ca1));
    let mut ing = ingress(
        "secure",
        Some("dualstack"),
        "secure.test",
        "web",
        json!({"number": 80}),
    );
    ing["spec"]["tls"] = json!([{"hosts": ["secure.test"], "secretName": "secure-tls"}]);
    c.api.apply(ing);
    let p = c.controller("replica-a", &[]).await;
    let (f1, f2) = (ca1.write(c.dir.path()), {
        let d = c.dir.path().join("ca2");
        std::fs::create_dir_all(&d).unwrap();
        ca2.write(&d)
    });
    let curl_ok = |addr: SocketAddr, ca: PathBuf| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
            .arg(format!("secure.test:{}:{}", addr.port(), addr.ip()))
            .arg("--cacert")
            .arg(&ca)
            .arg(format!("https://secure.test:{}/", addr.port()))
            .output()
            .await
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) != "200" {
            eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
            return false;
        }
        true
    };
    for &addr in &p.tls {
        wait_until("the Secret's certificate is served", LIMIT, || {
            curl_ok(addr, f1.clone())
        })
        .await;
    }
    // Plain HTTP for a host with a certificate is redirected to HTTPS.
    let seen = p.get(true, "secure.test", "/x").await;
    assert_eq!(seen.status, 301, "{}", seen.body);
    // A Secret update rotates the certificate.
    c.api.apply(secret(&ca2));
    for &addr in &p.tls {
        wait_until("the rotated certificate is served", LIMIT, || {
            curl_ok(addr, f2.clone())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_keeps_the_table_and_recovers() {
    let c = Cluster::start().await;
    let (up4, up6) = (
        Upstream::start("127.0.0.1:0").await,
        Upstream::start("[::1]:0").await,
    );
    dual_stack_web(&c.api, up4.addr, up6.addr);
    c.api.apply(ingress(
        "web",
        Some("dualstack"),
        "app.test",
        "web",
        json!({"name": "http"}),
    ));
    let p = c.controller("replica-a", &[]).await;
    p.wait_status("app.test", "/", 200, "the Ingress routes")
        .await;

    // Every watch dropped and the history compacted: resuming gets 410 Gone, the watchers relist.
    c.api.restart();
    c.api.set_down(true);
    for _ in 0..5 {
        assert_eq!(
            p.answered_by("app.test", 2).await.len(),
            2,
            "the last good table serves"
        );
    }
    assert_eq!(p.ready().await, [200, 200]);
    c.api.set_down(false);
    c.api.restart();
    c.api.apply(ingress(
        "web2",
        Some("dualstack"),
        "new.test",
        "web",
        json!({"name": "http"}),
    ));
    p.wait_status("new.test", "/", 200, "changes after the restart apply")
        .await;
    p.wait_status("app.test", "/", 200, "the old route is still there")
        .await;
    let metrics = get(&format!("http://{}/metrics", p.admin[0]), &[])
        .await
        .body;
    assert!(
        metrics.contains("dualstack_ingress_k8s_watch_events_total{kind=\"Ingress\"}"),
        "{metrics}"
    );
}

#[test]
fn print_rbac_names_what_the_controller_uses() {
    let out = std::process::Command::new(support::running::BIN)
        .arg("--print-rbac")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    for needle in ["ingresses/status", "endpointslices", "leases", "\"nodes\""] {
        assert!(text.contains(needle), "{text}");
    }
    assert!(!text.contains('*'), "no wildcards: {text}");
}

#[test]
fn manifests_check_prints_the_table_of_the_example() {
    let out = std::process::Command::new(support::running::BIN)
        .args(["--manifests", "config/kubernetes", "--check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ipv4") && text.contains("ipv6"), "{text}");
    assert!(
        text.contains("[fd00::"),
        "IPv6 endpoints are bracketed: {text}"
    );
}

/// Runs `cmd` (with sudo-free root rights), failing the test with its output when it fails.
fn sh(cmd: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces and a veth pair, removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &format!("{}h", self.0)])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_only_pod_network_in_a_namespace_is_reached_over_ula() {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let has_ip = std::process::Command::new("ip").arg("-V").output().is_ok();
    if !root || !has_ip {
        eprintln!("SKIPPED an_ipv6_only_pod_network_in_a_namespace_is_reached_over_ula: needs root and iproute2");
        return;
    }
    // A "pod": a network namespace whose only address is a ULA, reachable over a veth pair by IPv6 only.
    let name = format!("dsi{}", std::process::id() % 100_000);
    let _ns = Netns(name.clone());
    let (host_if, pod_if) = (format!("{name}h"), format!("{name}p"));
    sh(&format!("ip netns add {name}"));
    sh(&format!(
        "ip link add {host_if} type veth peer name {pod_if}"
    ));
    sh(&format!("ip link set {pod_if} netns {name}"));
    sh(&format!(
        "ip addr add fd00:d5:1::1/64 dev {host_if} nodad && ip link set {host_if} up"
    ));
    sh(&format!(
        "ip netns exec {name} sh -c 'ip link set lo up && ip addr add fd00:d5:1::2/64 dev {pod_if} nodad && ip link set {pod_if} up'"
    ));
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &name,
            "python3",
            "-m",
            "http.server",
            "--bind",
            "fd00:d5:1::2",
            "8080",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let c = Cluster::start().await;
    c.api
        .apply(service("pods", json!([{"port": 80, "targetPort": 8080}])));
    c.api.apply(slice(
        "pods-v6",
        "pods",
        "IPv6",
        json!({"port": 8080}),
        &[("fd00:d5:1::2".into(), true, true, false)],
    ));
    c.api.apply(ingress(
        "pods",
        Some("dualstack"),
        "pods.test",
        "pods",
        json!({"number": 80}),
    ));
    let p = c.controller("replica-a", &[]).await;
    p.wait_status(
        "pods.test",
        "/README.md",
        200,
        "the IPv6-only pod answers through the proxy",
    )
    .await;
    let seen = p.get(false, "pods.test", "/README.md").await;
    assert!(
        seen.body.starts_with("# dualstack-ingress"),
        "{}",
        seen.body
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn routes_in_the_config_file_are_an_error_in_kubernetes_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "listen: [\"127.0.0.1:0\"]\ndefaultBackend: b\nbackends:\n  b:\n    endpoints: [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::running::BIN)
        .args(["--kubernetes", "--config", config.to_str().unwrap()])
        .env("KUBECONFIG", dir.path().join("none"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("c.yaml:2:17: \"defaultBackend\" is not allowed with --kubernetes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("c.yaml:4:3: \"backends\" is not allowed"),
        "{stderr}"
    );
}
