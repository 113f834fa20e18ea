//! The test Kubernetes API server (`tests/support/kube_api.rs`) against the real `kube` client: lists,
//! watches through `kube::runtime`, selectors, a restart that forces a relist, status patches, leases through
//! `kube-lease-manager`, and an unavailable server.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{json, Value};
use support::kube_api::KubeApi;
use support::wait_until;

const LIMIT: Duration = Duration::from_secs(20);
const NET: &str = "networking.k8s.io/v1";

fn ingress(ns: &str, name: &str, host: &str) -> Value {
    json!({
        "apiVersion": NET,
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ingressClassName": "dualstack", "rules": [{"host": host}]},
    })
}

fn endpoint_slice(ns: &str, name: &str, service: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn secret(ns: &str, name: &str, type_: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": type_,
        "data": {},
    })
}

/// "ns/name host" of every Ingress in the store, sorted.
fn ingress_view(store: &Store<Ingress>) -> Vec<String> {
    let mut v: Vec<String> = store
        .state()
        .iter()
        .map(|i| {
            let host = i
                .spec
                .as_ref()
                .and_then(|s| s.rules.as_ref())
                .and_then(|r| r.first())
                .and_then(|r| r.host.clone())
                .unwrap_or_default();
            format!(
                "{}/{} {host}",
                i.namespace().unwrap_or_default(),
                i.name_any()
            )
        })
        .collect();
    v.sort();
    v
}

fn server_ingress_view(server: &KubeApi) -> Vec<String> {
    let mut v: Vec<String> = server
        .list(NET, "Ingress")
        .iter()
        .map(|i| {
            format!(
                "{}/{} {}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap(),
                i["spec"]["rules"][0]["host"].as_str().unwrap_or_default()
            )
        })
        .collect();
    v.sort();
    v
}

/// Runs a reflector over `api` with `config` in a task; returns its store once it is ready.
async fn start_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(LIMIT, reader.wait_until_ready())
        .await
        .expect("reflector ready in time")
        .expect("reflector ready");
    (reader, task)
}

#[tokio::test]
async fn reflector_lists_and_follows_ingresses() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    server.apply(ingress("team", "b", "b.example"));
    let api: Api<Ingress> = Api::all(server.client());
    let (store, task) = start_reflector(api, watcher::Config::default()).await;
    assert_eq!(
        ingress_view(&store),
        ["default/a a.example", "team/b b.example"]
    );

    server.apply(ingress("default", "c", "c.example"));
    server.apply(ingress("default", "a", "a2.example"));
    assert!(server.delete(NET, "Ingress", "team", "b"));
    let want = ["default/a a2.example", "default/c c.example"];
    wait_until("the store follows the server", LIMIT, || {
        let view = ingress_view(&store);
        async move { view == want }
    })
    .await;
    task.abort();

    // The same through a streaming list (sendInitialEvents, ended by the initial-events-end bookmark).
    let api: Api<Ingress> = Api::all(server.client());
    let (store, task) = start_reflector(api, watcher::Config::default().streaming_lists()).await;
    assert_eq!(ingress_view(&store), want);
    server.apply(ingress("team", "d", "d.example"));
    wait_until("the streaming-list store follows", LIMIT, || {
        let ok = ingress_view(&store) == server_ingress_view(&server);
        async move { ok }
    })
    .await;

    let a = server.get(NET, "Ingress", "default", "a").unwrap();
    assert_eq!(a["metadata"]["generation"], 2);
    assert!(a["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(a["metadata"]["creationTimestamp"].is_string());
    task.abort();
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = KubeApi::start().await;
    server.apply(endpoint_slice("default", "web-1", "web", "10.0.0.1"));
    server.apply(endpoint_slice("other", "web-2", "web", "10.0.0.2"));
    server.apply(endpoint_slice("default", "api-1", "api", "10.0.0.3"));
    server.apply(secret("default", "cert", "kubernetes.io/tls"));
    server.apply(secret("default", "plain", "Opaque"));
    let client = server.client();

    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let web = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    let mut names: Vec<String> = web.items.iter().map(kube::ResourceExt::name_any).collect();
    names.sort();
    assert_eq!(names, ["web-1", "web-2"]);
    let not_web = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name!=web"))
        .await
        .unwrap();
    assert_eq!(not_web.items.len(), 1);
    let in_default: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let set = in_default
        .list(&ListParams::default().labels("kubernetes.io/service-name in (web,api)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 2);

    let secrets: Api<Secret> = Api::all(client.clone());
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(tls.items.len(), 1);
    assert_eq!(tls.items[0].name_any(), "cert");
    let by_name = secrets
        .list(&ListParams::default().fields("metadata.namespace=default,metadata.name=plain"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(by_name.items[0].name_any(), "plain");

    // A watch with a label selector: an object that stops matching leaves the store, one that starts
    // matching enters it.
    let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let (store, task) = start_reflector(slices, config).await;
    assert_eq!(store.state().len(), 2);
    server.apply(endpoint_slice("other", "web-2", "api", "10.0.0.2"));
    server.apply(endpoint_slice("default", "api-1", "web", "10.0.0.3"));
    wait_until("the selector is applied to changes", LIMIT, || {
        let mut names: Vec<String> = store.state().iter().map(|s| s.name_any()).collect();
        names.sort();
        async move { names == ["api-1", "web-1"] }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn restart_forces_a_relist_and_the_store_converges() {
    let server = KubeApi::start().await;
    for i in 0..5 {
        server.apply(ingress(
            "default",
            &format!("i{i}"),
            &format!("h{i}.example"),
        ));
    }
    let api: Api<Ingress> = Api::all(server.client());
    let (store, task) = start_reflector(api, watcher::Config::default()).await;
    wait_until("the watch is open", LIMIT, || {
        let n = server.watch_count();
        async move { n >= 1 }
    })
    .await;
    let lists_before = server.list_requests();

    server.restart();
    server.delete(NET, "Ingress", "default", "i0");
    server.apply(ingress("default", "i1", "changed.example"));
    server.apply(ingress("default", "new", "new.example"));

    wait_until("the store converges after the restart", LIMIT, || {
        let ok = ingress_view(&store) == server_ingress_view(&server);
        async move { ok }
    })
    .await;
    assert!(
        server.list_requests() > lists_before,
        "the watcher relisted after 410"
    );
    assert!(server
        .requests()
        .iter()
        .all(|r| r.method != "POST" && r.method != "PUT"));

    // Still following after the relist.
    server.apply(ingress("default", "later", "later.example"));
    wait_until("the store follows after the relist", LIMIT, || {
        let ok = ingress_view(&store) == server_ingress_view(&server);
        async move { ok }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_resume_from_compacted_history_gets_410_in_the_stream() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    let old = server.resource_version();
    server.compact();
    let api: Api<Ingress> = Api::all(server.client());
    let mut stream = api
        .watch(&kube::api::WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(kube::api::WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    // A resume from the current resourceVersion replays later changes.
    let now = server.resource_version();
    server.apply(ingress("default", "b", "b.example"));
    let mut stream = api
        .watch(&kube::api::WatchParams::default(), &now.to_string())
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(kube::api::WatchEvent::Added(i))) => assert_eq!(i.name_any(), "b"),
        other => panic!("expected ADDED b, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_get_bookmarks() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    let api: Api<Ingress> = Api::all(server.client());
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&kube::api::WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    server.apply(ingress("default", "b", "b.example"));
    let now = server.resource_version();
    // Bookmarks may come before the change; after it, one comes that carries its resourceVersion.
    let mut added = false;
    loop {
        match tokio::time::timeout(LIMIT, stream.next()).await.unwrap() {
            Some(Ok(kube::api::WatchEvent::Added(i))) => {
                assert_eq!(i.name_any(), "b");
                added = true;
            }
            Some(Ok(kube::api::WatchEvent::Bookmark(b))) if added => {
                assert_eq!(b.metadata.resource_version, now.to_string());
                break;
            }
            Some(Ok(kube::api::WatchEvent::Bookmark(_))) => {}
            other => panic!("expected ADDED b or a bookmark, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn holds_ten_thousand_ingresses() {
    let server = KubeApi::start().await;
    for i in 0..10_000 {
        server.apply(ingress(
            &format!("ns{}", i % 100),
            &format!("ing{i}"),
            &format!("h{i}.example"),
        ));
    }
    let api: Api<Ingress> = Api::all(server.client());
    let (store, task) = start_reflector(api, watcher::Config::default()).await;
    assert_eq!(store.state().len(), 10_000);
    let one_ns: Api<Ingress> = Api::namespaced(server.client(), "ns7");
    assert_eq!(
        one_ns
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        100
    );
    server.delete(NET, "Ingress", "ns7", "ing7");
    wait_until("the delete reaches the store", LIMIT, || {
        let n = store.state().len();
        async move { n == 9_999 }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn status_patches_change_only_the_status() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");

    let merged = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"ingressClassName": "ignored"},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
            })),
        )
        .await
        .unwrap();
    let lb = |i: &Ingress| -> Vec<String> {
        i.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .map(|l| l.iter().filter_map(|e| e.ip.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(lb(&merged), ["192.0.2.1"]);
    assert_eq!(
        merged.spec.as_ref().unwrap().ingress_class_name.as_deref(),
        Some("dualstack")
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/status/loadBalancer/ingress/-", "value": {"ip": "2001:db8::1"}},
        {"op": "replace", "path": "/spec/ingressClassName", "value": "ignored"},
    ]))
    .unwrap();
    let patched = api
        .patch_status("a", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap();
    assert_eq!(lb(&patched), ["192.0.2.1", "2001:db8::1"]);

    let stored = server.get(NET, "Ingress", "default", "a").unwrap();
    assert_eq!(stored["spec"]["ingressClassName"], "dualstack");
    assert_eq!(stored["metadata"]["generation"], 1);
    assert_eq!(
        stored["status"]["loadBalancer"]["ingress"][1]["ip"],
        "2001:db8::1"
    );

    let writes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(writes.len(), 2);
    for w in &writes {
        assert_eq!(
            w.path,
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses/a/status"
        );
        assert_eq!(w.status, 200);
    }
    assert_eq!(
        writes[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        writes[0].json()["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.1"
    );
    assert_eq!(
        writes[1].content_type.as_deref(),
        Some("application/json-patch+json")
    );

    // A patch of the object itself keeps the status and counts a generation.
    let spec = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingressClassName": "other"}, "status": null})),
        )
        .await
        .unwrap();
    assert_eq!(lb(&spec), ["192.0.2.1", "2001:db8::1"]);
    assert_eq!(spec.metadata.generation, Some(2));
}

#[tokio::test]
async fn create_replace_delete_and_errors() {
    let server = KubeApi::start().await;
    let api: Api<Ingress> = Api::namespaced(server.client(), "default");
    let obj: Ingress = serde_json::from_value(ingress("default", "x", "x.example")).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let err = api.create(&PostParams::default(), &obj).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"));

    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.spec.as_mut().unwrap().ingress_class_name = Some("new".into());
    let replaced = api
        .replace("x", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    stale.spec.as_mut().unwrap().ingress_class_name = Some("stale".into());
    let err = api
        .replace("x", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"));

    let err = api.get("missing").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"));
    assert!(api.get_opt("missing").await.unwrap().is_none());

    // Server-side apply creates when missing and merges otherwise.
    let pp = PatchParams::apply("test").force();
    let applied = api
        .patch(
            "y",
            &pp,
            &Patch::Apply(ingress("default", "y", "y.example")),
        )
        .await
        .unwrap();
    assert_eq!(applied.name_any(), "y");
    api.patch(
        "y",
        &pp,
        &Patch::Apply(
            json!({"apiVersion": NET, "kind": "Ingress", "metadata": {"name": "y"},
            "spec": {"ingressClassName": "z"}}),
        ),
    )
    .await
    .unwrap();
    let y = server.get(NET, "Ingress", "default", "y").unwrap();
    assert_eq!(y["spec"]["ingressClassName"], "z");
    assert_eq!(y["spec"]["rules"][0]["host"], "y.example");

    api.delete("x", &Default::default()).await.unwrap();
    assert!(server.get(NET, "Ingress", "default", "x").is_none());

    // Bad input gets a 400 Status, not a dropped connection.
    let req = http::Request::post("/apis/networking.k8s.io/v1/namespaces/default/ingresses")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let err = server.client().request::<Ingress>(req).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 400));
    let req = http::Request::get("/apis/networking.k8s.io/v1/ingresses?labelSelector=a%20in%20(")
        .body(Vec::new())
        .unwrap();
    let err = server.client().request::<Value>(req).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 400));
}

#[tokio::test]
async fn lease_manager_acquires_and_excludes_a_second_holder() {
    let server = KubeApi::start().await;
    let client = server.client();
    let one = LeaseManagerBuilder::new(client.clone(), "leader")
        .with_namespace("default")
        .with_identity("one")
        .with_duration(3)
        .with_grace(1)
        .build()
        .await
        .unwrap();
    let (one_rx, one_task) = one.watch().await;
    wait_until("one becomes the leader", LIMIT, || {
        let leader = *one_rx.borrow();
        async move { leader }
    })
    .await;
    let holder = |server: &KubeApi| {
        server
            .get("coordination.k8s.io/v1", "Lease", "default", "leader")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    assert_eq!(holder(&server).as_deref(), Some("one"));

    let two = LeaseManagerBuilder::new(client.clone(), "leader")
        .with_namespace("default")
        .with_identity("two")
        .with_duration(3)
        .with_grace(1)
        .build()
        .await
        .unwrap();
    let (two_rx, two_task) = two.watch().await;
    // Past the lease duration twice over, "one" keeps renewing and "two" stays out.
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let mut last = renew_time(&leases.get("leader").await.unwrap());
    let mut renewals = 0;
    let deadline = Instant::now() + LIMIT;
    while renewals < 2 {
        assert!(Instant::now() < deadline, "timed out waiting for renewals");
        let now = renew_time(&leases.get("leader").await.unwrap());
        if now != last {
            renewals += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !*two_rx.borrow(),
        "two must not lead while one holds the lease"
    );
    assert_eq!(holder(&server).as_deref(), Some("one"));

    // "one" steps down (its receiver is gone, it releases the lease); "two" takes over.
    drop(one_rx);
    one_task.await.unwrap().unwrap();
    wait_until("two becomes the leader", LIMIT, || {
        let leader = *two_rx.borrow();
        async move { leader }
    })
    .await;
    assert_eq!(holder(&server).as_deref(), Some("two"));
    drop(two_rx);
    two_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn unavailable_server_answers_503() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    let mut config = server.config();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<Ingress> = Api::all(client.clone());
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    server.set_unavailable(true);
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 503));
    let ns: Api<Ingress> = Api::namespaced(client, "default");
    let err = ns.get("a").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 503));
    assert_eq!(server.rejected_requests(), 2);

    server.set_unavailable(false);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    // kube's default client retries a 503: a request made while unavailable succeeds once the server is back.
    server.set_unavailable(true);
    let retrying: Api<Ingress> = Api::namespaced(server.client(), "default");
    let pending = tokio::spawn(async move { retrying.get("a").await });
    wait_until("the retrying client is turned away", LIMIT, || {
        let n = server.rejected_requests();
        async move { n >= 4 }
    })
    .await;
    server.set_unavailable(false);
    assert_eq!(pending.await.unwrap().unwrap().name_any(), "a");
}

#[tokio::test]
async fn a_down_server_fails_requests_and_cuts_watches() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    let api: Api<Ingress> = Api::all(server.client());
    let (store, task) = start_reflector(api.clone(), watcher::Config::default()).await;
    wait_until("the watch is open", LIMIT, || {
        let n = server.watch_count();
        async move { n >= 1 }
    })
    .await;

    server.set_down(true);
    assert_eq!(server.watch_count(), 0);
    assert!(api.list(&ListParams::default()).await.is_err());
    server.apply(ingress("default", "b", "b.example"));

    server.set_down(false);
    wait_until("the watcher reconnects and sees b", LIMIT, || {
        let view = ingress_view(&store);
        async move { view == ["default/a a.example", "default/b b.example"] }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn kubeconfig_file_is_accepted_by_kube() {
    let server = KubeApi::start().await;
    server.apply(ingress("default", "a", "a.example"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<Ingress> = Api::default_namespaced(client);
    assert_eq!(api.get("a").await.unwrap().name_any(), "a");
}
