//! Ingress status, leader election and problem Events against the test API server with the real `kube`
//! client: the addresses to publish (explicit, LoadBalancer, NodePort), status reconciliation (both
//! families, no needless writes, removal from Ingresses no longer owned, one failed write), the Lease
//! election (one leader, hand-over, stepping down when the API server is gone) and Events.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualstack_ingress::k8s::events::ProblemEvents;
use dualstack_ingress::k8s::leader::{spawn_election, LEASE_NAME};
use dualstack_ingress::k8s::status::{reconcile, resolve_addresses, Publish, StatusOutcome};
use dualstack_ingress::k8s::{IngressKey, Problem};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::ListParams;
use kube::Api;
use serde_json::{json, Value};
use support::kube_api::KubeApi;
use support::wait_until;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);
const NET: &str = "networking.k8s.io/v1";

fn key(ns: &str, name: &str) -> IngressKey {
    IngressKey {
        namespace: ns.to_string(),
        name: name.to_string(),
    }
}

fn ingress(ns: &str, name: &str, status: &[&str]) -> Value {
    let entries: Vec<Value> = status
        .iter()
        .map(|a| {
            if a.parse::<IpAddr>().is_ok() {
                json!({"ip": a})
            } else {
                json!({"hostname": a})
            }
        })
        .collect();
    let mut obj = json!({
        "apiVersion": NET,
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ingressClassName": "dualstack", "rules": [{"host": format!("{name}.example")}]},
    });
    if !entries.is_empty() {
        obj["status"] = json!({"loadBalancer": {"ingress": entries}});
    }
    obj
}

fn entries(addresses: &[&str]) -> Vec<IngressLoadBalancerIngress> {
    addresses
        .iter()
        .map(|a| IngressLoadBalancerIngress {
            ip: Some(a.to_string()),
            ..Default::default()
        })
        .collect()
}

/// The addresses of a status list as text (IP, else host name).
fn texts(list: &[IngressLoadBalancerIngress]) -> Vec<String> {
    list.iter()
        .map(|e| {
            e.ip.clone()
                .or_else(|| e.hostname.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The status addresses of an Ingress as stored on the server.
fn stored_status(server: &KubeApi, ns: &str, name: &str) -> Vec<String> {
    let obj = server.get(NET, "Ingress", ns, name).unwrap();
    obj["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    e["ip"]
                        .as_str()
                        .or_else(|| e["hostname"].as_str())
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every Ingress, as a reflector store would hand them out.
async fn ingresses(client: &kube::Client) -> Vec<Arc<Ingress>> {
    Api::<Ingress>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// The status writes the server received.
fn status_patches(server: &KubeApi) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/status"))
        .map(|r| r.path)
        .collect()
}

// ----- resolve_addresses -----

#[tokio::test]
async fn explicit_addresses_of_both_families() {
    let server = KubeApi::start().await;
    let ips: Vec<IpAddr> = ["fd00::7", "169.254.7.1", "2001:db8::1", "169.254.7.1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let got = resolve_addresses(&server.client(), &Publish::Addresses(ips))
        .await
        .unwrap();
    assert_eq!(texts(&got), ["169.254.7.1", "2001:db8::1", "fd00::7"]);
    assert!(resolve_addresses(&server.client(), &Publish::Nothing)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn load_balancer_service_publishes_its_ipv4_and_ipv6_ingress_ips() {
    let server = KubeApi::start().await;
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "proxy", "namespace": "ingress"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8::50"}, {"ip": "192.0.2.50"}]}},
    }));
    // Nodes do not matter for a LoadBalancer Service.
    server.apply(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "169.254.1.1"}]},
    }));
    let publish = Publish::Service {
        namespace: "ingress".into(),
        name: "proxy".into(),
    };
    let got = resolve_addresses(&server.client(), &publish).await.unwrap();
    assert_eq!(texts(&got), ["192.0.2.50", "2001:db8::50"]);
    // One GET of the Service: no node list.
    assert_eq!(server.list_requests(), 0);
}

#[tokio::test]
async fn node_port_service_publishes_every_node_address_of_both_families() {
    let server = KubeApi::start().await;
    server.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "proxy", "namespace": "ingress"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]},
    }));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "169.254.1.1"},
            {"type": "InternalIP", "address": "fd00::1:1"},
            {"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "192.0.2.11"},
        ]},
    }));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "169.254.1.2"},
            {"type": "InternalIP", "address": "fd00::1:2"},
        ]},
    }));
    let publish = Publish::Service {
        namespace: "ingress".into(),
        name: "proxy".into(),
    };
    let got = resolve_addresses(&server.client(), &publish).await.unwrap();
    assert_eq!(
        texts(&got),
        [
            "169.254.1.1",
            "169.254.1.2",
            "192.0.2.11",
            "fd00::1:1",
            "fd00::1:2"
        ]
    );
    assert_eq!(server.list_requests(), 1, "one list of the nodes");
}

#[tokio::test]
async fn a_missing_publish_service_is_a_not_found_error() {
    let server = KubeApi::start().await;
    let publish = Publish::Service {
        namespace: "ingress".into(),
        name: "gone".into(),
    };
    let err = resolve_addresses(&server.client(), &publish)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err:?}"
    );
}

// ----- reconcile -----

#[tokio::test]
async fn owned_ingresses_get_both_families_and_a_second_reconcile_writes_nothing() {
    let server = KubeApi::start().await;
    let client = server.client();
    server.apply(ingress("default", "web", &[]));
    // An owned Ingress's list is ours alone: the stale entry goes.
    server.apply(ingress("shop", "cart", &["192.0.2.99"]));
    let owned: HashSet<IngressKey> = [key("default", "web"), key("shop", "cart")].into();
    let ours = entries(&["192.0.2.1", "2001:db8::1"]);

    let outcome = reconcile(&client, &ingresses(&client).await, &owned, &ours).await;
    assert_eq!(
        outcome,
        StatusOutcome {
            written: 2,
            failed: 0,
            unchanged: 0
        }
    );
    for (ns, name) in [("default", "web"), ("shop", "cart")] {
        assert_eq!(
            stored_status(&server, ns, name),
            ["192.0.2.1", "2001:db8::1"]
        );
    }
    let patches = server.requests();
    assert_eq!(patches.len(), 2);
    for r in &patches {
        assert_eq!(r.method, "PATCH");
        assert!(r.path.ends_with("/status"), "{}", r.path);
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(r.status, 200);
    }

    // Same input, read again: nothing to write.
    server.clear_requests();
    let outcome = reconcile(&client, &ingresses(&client).await, &owned, &ours).await;
    assert_eq!(
        outcome,
        StatusOutcome {
            written: 0,
            failed: 0,
            unchanged: 2
        }
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // Fewer addresses (a node left): the whole list is replaced; none clears it.
    let outcome = reconcile(
        &client,
        &ingresses(&client).await,
        &owned,
        &entries(&["2001:db8::1"]),
    )
    .await;
    assert_eq!(outcome.written, 2);
    assert_eq!(stored_status(&server, "default", "web"), ["2001:db8::1"]);
    let outcome = reconcile(&client, &ingresses(&client).await, &owned, &[]).await;
    assert_eq!(outcome.written, 2);
    let web = server.get(NET, "Ingress", "default", "web").unwrap();
    assert!(
        web["status"]["loadBalancer"].get("ingress").is_none(),
        "{web}"
    );
    let outcome = reconcile(&client, &ingresses(&client).await, &owned, &[]).await;
    assert_eq!(outcome.unchanged, 2);
}

#[tokio::test]
async fn an_ingress_no_longer_owned_loses_our_entries_and_keeps_foreign_ones() {
    let server = KubeApi::start().await;
    let client = server.client();
    // As a previous leader left it: ours (one IPv6 address written in another spelling) plus a foreign
    // address and host name.
    server.apply(ingress(
        "default",
        "was-ours",
        &[
            "192.0.2.1",
            "2001:0db8:0:0::1",
            "198.51.100.7",
            "lb.other.example",
        ],
    ));
    server.apply(ingress("default", "foreign", &["198.51.100.8"]));
    server.apply(ingress("default", "bare", &[]));
    let ours = entries(&["192.0.2.1", "2001:db8::1"]);

    let outcome = reconcile(&client, &ingresses(&client).await, &HashSet::new(), &ours).await;
    assert_eq!(
        outcome,
        StatusOutcome {
            written: 1,
            failed: 0,
            unchanged: 2
        }
    );
    assert_eq!(
        stored_status(&server, "default", "was-ours"),
        ["198.51.100.7", "lb.other.example"]
    );
    assert_eq!(
        stored_status(&server, "default", "foreign"),
        ["198.51.100.8"]
    );
    assert_eq!(status_patches(&server).len(), 1);

    // Written meanwhile by someone else: our entry goes, theirs stay.
    server.apply(ingress(
        "default",
        "foreign",
        &["198.51.100.8", "192.0.2.1", "203.0.113.5"],
    ));
    let outcome = reconcile(&client, &ingresses(&client).await, &HashSet::new(), &ours).await;
    assert_eq!(outcome.written, 1);
    assert_eq!(
        stored_status(&server, "default", "foreign"),
        ["198.51.100.8", "203.0.113.5"]
    );
    // The removal is conditional on the resourceVersion it was computed from: a stale view conflicts
    // instead of dropping an entry written since.
    let mut conflicting = server.apply(ingress("default", "foreign", &["192.0.2.1"]));
    let old = Arc::new(serde_json::from_value::<Ingress>(conflicting.take()).unwrap());
    server.apply(ingress("default", "foreign", &["192.0.2.1", "203.0.113.6"]));
    let outcome = reconcile(&client, &[old], &HashSet::new(), &ours).await;
    assert_eq!(outcome.failed, 1);
    assert_eq!(
        stored_status(&server, "default", "foreign"),
        ["192.0.2.1", "203.0.113.6"]
    );
}

#[tokio::test]
async fn a_failed_write_counts_and_the_others_are_still_written() {
    let server = KubeApi::start().await;
    let client = server.client();
    for name in ["a", "b", "c"] {
        server.apply(ingress("default", name, &[]));
    }
    let owned: HashSet<IngressKey> = ["a", "b", "c"].iter().map(|n| key("default", n)).collect();
    let view = ingresses(&client).await;
    // Deleted between the read and the write.
    assert!(server.delete(NET, "Ingress", "default", "b"));
    let ours = entries(&["192.0.2.1", "fd00::1"]);
    let outcome = reconcile(&client, &view, &owned, &ours).await;
    assert_eq!(
        outcome,
        StatusOutcome {
            written: 2,
            failed: 1,
            unchanged: 0
        }
    );
    assert_eq!(
        stored_status(&server, "default", "a"),
        ["192.0.2.1", "fd00::1"]
    );
    assert_eq!(
        stored_status(&server, "default", "c"),
        ["192.0.2.1", "fd00::1"]
    );
    let codes: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(codes.iter().filter(|c| **c == 404).count(), 1, "{codes:?}");
}

// ----- leader election -----

fn holder(server: &KubeApi, ns: &str) -> Option<String> {
    server
        .get("coordination.k8s.io/v1", "Lease", ns, LEASE_NAME)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

#[tokio::test]
async fn one_leader_at_a_time_and_the_other_takes_over_when_it_stops() {
    let server = KubeApi::start().await;
    let lease = Duration::from_secs(2);
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let (a, a_task) = spawn_election(
        server.client(),
        "ingress".into(),
        "pod-a".into(),
        lease,
        stop_a.clone(),
    );
    wait_until("a leads", LIMIT, || {
        let l = *a.borrow();
        async move { l }
    })
    .await;
    // The second one starts once the lease is taken: the test server has no server-side-apply
    // conflicts, which the real one uses to settle two replicas taking a free lease at the same moment.
    let (b, b_task) = spawn_election(
        server.client(),
        "ingress".into(),
        "pod-b".into(),
        lease,
        stop_b.clone(),
    );
    // Over three lease durations (a renews, b keeps trying): never both, never a change of leader.
    let until = Instant::now() + 3 * lease;
    while Instant::now() < until {
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(la && !lb, "exactly one leader, a (a: {la}, b: {lb})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (leader, leader_stop, leader_task, other, other_id) = (a, stop_a, a_task, b, "pod-b");
    assert_eq!(holder(&server, "ingress").as_deref(), Some("pod-a"));
    assert!(server
        .get("coordination.k8s.io/v1", "Lease", "default", LEASE_NAME)
        .is_none());

    let stopped = Instant::now();
    leader_stop.cancel();
    tokio::time::timeout(LIMIT, leader_task)
        .await
        .expect("the stopped election ends")
        .unwrap();
    assert!(!*leader.borrow(), "a stopped election is not leader");
    wait_until("the other replica takes over", LIMIT, || {
        let l = *other.borrow();
        async move { l }
    })
    .await;
    assert!(
        stopped.elapsed() < 2 * lease + Duration::from_secs(2),
        "took over after {:?}",
        stopped.elapsed()
    );
    assert_eq!(holder(&server, "ingress").as_deref(), Some(other_id));
    stop_b.cancel();
    tokio::time::timeout(LIMIT, b_task).await.unwrap().unwrap();
    assert_eq!(holder(&server, "ingress"), None, "released on stop");
}

#[tokio::test]
async fn the_leader_steps_down_within_the_lease_when_the_api_server_is_gone() {
    let server = KubeApi::start().await;
    let lease = Duration::from_secs(2);
    let stop = CancellationToken::new();
    let (rx, task) = spawn_election(
        server.client(),
        "default".into(),
        "pod-a".into(),
        lease,
        stop.clone(),
    );
    wait_until("leader", LIMIT, || {
        let l = *rx.borrow();
        async move { l }
    })
    .await;
    let down = Instant::now();
    server.set_down(true);
    wait_until("not leader", LIMIT, || {
        let l = *rx.borrow();
        async move { !l }
    })
    .await;
    assert!(
        down.elapsed() < lease,
        "stepped down after {:?}",
        down.elapsed()
    );
    server.set_down(false);
    wait_until("leader again", LIMIT, || {
        let l = *rx.borrow();
        async move { l }
    })
    .await;
    assert_eq!(holder(&server, "default").as_deref(), Some("pod-a"));
    stop.cancel();
    tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    assert!(!*rx.borrow());
    // Released on stop.
    assert_eq!(holder(&server, "default"), None);
}

/// A TCP relay to the API server that can stop passing bytes while keeping every connection open: requests
/// then hang, as they do when the network drops packets (kube sets no read timeout).
struct FreezingRelay {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FreezingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FreezingRelay {
    async fn start(target: std::net::SocketAddr) -> FreezingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::join!(pump(cr, uw, flag.clone()), pump(ur, cw, flag));
                });
            }
        });
        FreezingRelay { addr, frozen, task }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hold = || async {
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        hold().await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        hold().await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn the_leader_steps_down_within_the_lease_when_requests_hang() {
    let server = KubeApi::start().await;
    let relay = FreezingRelay::start(server.addr()).await;
    let lease = Duration::from_secs(2);
    let stop = CancellationToken::new();
    let (rx, task) = spawn_election(
        relay.client(),
        "default".into(),
        "pod-a".into(),
        lease,
        stop.clone(),
    );
    wait_until("leader", LIMIT, || {
        let l = *rx.borrow();
        async move { l }
    })
    .await;
    let frozen = Instant::now();
    relay.freeze(true);
    wait_until("not leader", LIMIT, || {
        let l = *rx.borrow();
        async move { !l }
    })
    .await;
    assert!(
        frozen.elapsed() < lease,
        "stepped down after {:?}",
        frozen.elapsed()
    );
    relay.freeze(false);
    wait_until("leader again", LIMIT, || {
        let l = *rx.borrow();
        async move { l }
    })
    .await;
    stop.cancel();
    tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
}

// ----- Events -----

#[tokio::test]
async fn problems_are_posted_once_as_events_on_the_ingress() {
    let server = KubeApi::start().await;
    let client = server.client();
    server.apply(ingress("default", "web", &[]));
    let uid = server.get(NET, "Ingress", "default", "web").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let view = ingresses(&client).await;
    let missing = Problem {
        ingress: key("default", "web"),
        reason: "service-not-found",
        message: "Service default/api not found".into(),
    };
    let mut events = ProblemEvents::new(client.clone(), "pod-a".into());
    events.post(std::slice::from_ref(&missing), &view).await;
    let list = server.list("events.k8s.io/v1", "Event");
    assert_eq!(list.len(), 1, "{list:?}");
    let ev = &list[0];
    assert_eq!(ev["metadata"]["namespace"], "default");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "ServiceNotFound");
    assert_eq!(ev["note"], "Service default/api not found");
    assert_eq!(ev["reportingController"], "dualstack-ingress");
    assert_eq!(ev["reportingInstance"], "pod-a");
    assert_eq!(ev["regarding"]["apiVersion"], NET);
    assert_eq!(ev["regarding"]["kind"], "Ingress");
    assert_eq!(ev["regarding"]["name"], "web");
    assert_eq!(ev["regarding"]["namespace"], "default");
    assert_eq!(ev["regarding"]["uid"], uid.as_str());

    // Still there: nothing new.
    server.clear_requests();
    events.post(std::slice::from_ref(&missing), &view).await;
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_eq!(server.count("events.k8s.io/v1", "Event"), 1);

    // Another message with the same reason is its own Event, with its own note.
    let other = Problem {
        message: "Service default/db not found".into(),
        ..missing.clone()
    };
    events.post(&[missing.clone(), other.clone()], &view).await;
    let notes: HashSet<String> = server
        .list("events.k8s.io/v1", "Event")
        .iter()
        .map(|e| e["note"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        notes,
        HashSet::from([
            "Service default/api not found".to_string(),
            "Service default/db not found".to_string()
        ])
    );

    // Gone, then back: posted again.
    events.post(std::slice::from_ref(&other), &view).await;
    assert_eq!(server.count("events.k8s.io/v1", "Event"), 2);
    events.post(&[missing, other], &view).await;
    assert_eq!(server.count("events.k8s.io/v1", "Event"), 3);
}

#[tokio::test]
async fn a_failed_post_is_tried_again() {
    let server = KubeApi::start().await;
    let problem = Problem {
        ingress: key("shop", "cart"),
        reason: "bad-certificate",
        message: "Secret shop/tls: no certificate".into(),
    };
    let mut events = ProblemEvents::new(server.client(), "pod-a".into());
    server.set_down(true);
    events.post(std::slice::from_ref(&problem), &[]).await;
    server.set_down(false);
    assert_eq!(server.count("events.k8s.io/v1", "Event"), 0);
    events.post(std::slice::from_ref(&problem), &[]).await;
    let list = server.list("events.k8s.io/v1", "Event");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["reason"], "BadCertificate");
    // Not in the list of Ingresses: named by namespace and name.
    assert_eq!(list[0]["metadata"]["namespace"], "shop");
    assert_eq!(list[0]["regarding"]["name"], "cart");
    assert_eq!(list[0]["regarding"]["kind"], "Ingress");
}
