//! Hot reload through the real file watcher: new configurations apply, broken ones are counted and ignored,
//! a reload storm under load on both address families fails no request, and in-flight requests finish on
//! the table they started with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

/// A configuration whose default backend is the single endpoint `to`.
fn default_to(to: SocketAddr) -> String {
    format!("defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{to}\"]\n")
}

/// The upstream that answered, from the `x-upstream` header.
fn answered_by(seen: &Seen) -> String {
    seen.headers
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string()
}

/// Polls until a fresh request on either family is answered by `up`.
async fn wait_for_upstream(p: &TestProxy, up: SocketAddr, what: &str) {
    let want = up.to_string();
    for v6 in [false, true] {
        let url = p.url(v6, "/");
        let want = want.clone();
        wait_until(what, Duration::from_secs(10), || {
            let (url, want) = (url.clone(), want.clone());
            async move {
                let seen = get(&url, &[]).await;
                seen.status == 200 && answered_by(&seen) == want
            }
        })
        .await;
    }
}

#[tokio::test]
async fn rewritten_file_moves_traffic_to_the_new_backend() {
    let old = Upstream::start("127.0.0.1:0").await;
    let new = Upstream::start("[::1]:0").await;
    let p = TestProxy::start_watched(&default_to(old.addr)).await;

    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(answered_by(&seen), old.addr.to_string());
    }
    let (ok_before, failed_before) = p.server().metrics().reload_counts();

    p.rewrite(&default_to(new.addr));
    wait_for_upstream(&p, new.addr, "requests reach the new IPv6 upstream").await;

    // Once switched, every request goes to the new upstream, on both families.
    let old_hits = old.hits();
    for v6 in [false, true, false, true] {
        let seen = get(&p.url(v6, "/x"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(answered_by(&seen), new.addr.to_string());
    }
    assert_eq!(
        old.hits(),
        old_hits,
        "the old upstream got traffic after the switch"
    );
    let (ok_after, failed_after) = p.server().metrics().reload_counts();
    assert!(ok_after > ok_before, "reload-ok counter did not grow");
    assert_eq!(
        failed_after, failed_before,
        "a valid file was counted as failed"
    );
}

#[tokio::test]
async fn broken_reload_keeps_serving_the_last_good_table() {
    let first = Upstream::start("127.0.0.1:0").await;
    let second = Upstream::start("[::1]:0").await;
    let p = TestProxy::start_watched(&default_to(first.addr)).await;
    let metrics = || p.server().metrics().reload_counts();
    let (ok0, failed0) = metrics();

    // Invalid: an unbracketed IPv6 endpoint pointing elsewhere (made by hand on purpose). It must be
    // rejected as a whole.
    p.rewrite(&format!(
        "defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{}:{}\"]\n",
        second.addr.ip(),
        second.addr.port()
    ));
    wait_until(
        "the failed reload is counted",
        Duration::from_secs(10),
        || {
            let failed = metrics().1;
            async move { failed > failed0 }
        },
    )
    .await;
    assert_eq!(
        metrics().0,
        ok0,
        "a broken file was counted as a good reload"
    );
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/still"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(answered_by(&seen), first.addr.to_string());
    }

    // A YAML syntax error is just as harmless.
    let (_, failed1) = metrics();
    p.rewrite("routes: [\n");
    wait_until(
        "the second failed reload is counted",
        Duration::from_secs(10),
        || {
            let failed = metrics().1;
            async move { failed > failed1 }
        },
    )
    .await;
    let seen = get(&p.url(true, "/still"), &[]).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(answered_by(&seen), first.addr.to_string());
    assert_eq!(second.hits(), 0);

    // A good file applies again.
    p.rewrite(&default_to(second.addr));
    wait_for_upstream(&p, second.addr, "the good file applies after broken ones").await;
    assert!(metrics().0 > ok0, "reload-ok counter did not grow");
}

/// What the load generators saw.
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    failed: AtomicUsize,
    first_failure: Mutex<Option<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.first_failure.lock().unwrap().get_or_insert(what);
    }
}

/// Sends GETs over one keep-alive client until `stop`; counts successes per client in `mine`.
async fn generate(url: String, load: Arc<Load>, mine: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let client = client();
    // Bounded: ends on `stop`, or after this many requests at the latest.
    for i in 0..1_000_000u32 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let req = Request::get(format!("{url}/load/{i}?n={i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        match client.request(req).await {
            Ok(resp) => {
                let status = resp.status();
                match resp.into_body().collect().await {
                    Ok(_) if status == 200 => {
                        load.ok.fetch_add(1, Ordering::SeqCst);
                        mine.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => load.fail(format!("{url}: status {status}")),
                    Err(e) => load.fail(format!("{url}: body error: {e}")),
                }
            }
            Err(e) => load.fail(format!("{url}: request error: {e:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_storm_under_load_on_both_families_fails_no_request() {
    // Odd: the storm ends on the IPv6 upstream, so waiting for it proves the last rewrite applied.
    const RELOADS: usize = 31;
    let up4 = Upstream::start("127.0.0.1:0").await;
    let up6 = Upstream::start("[::1]:0").await;
    // Two valid configurations that differ in routes and backends; both backends are live.
    let config = |i: usize| {
        let (name, to) = if i.is_multiple_of(2) {
            ("four", up4.addr)
        } else {
            ("six", up6.addr)
        };
        format!(
            "routes:\n  - paths:\n      - path: /load\n        backend: {name}\ndefaultBackend: {name}\n\
             backends:\n  {name}:\n    endpoints: [\"{to}\"]\n"
        )
    };
    let p = TestProxy::start_watched(&config(0)).await;
    let (ok0, failed0) = p.server().metrics().reload_counts();

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut per_client = Vec::new();
    let mut tasks = Vec::new();
    for v6 in [false, false, true, true] {
        let mine = Arc::new(AtomicUsize::new(0));
        per_client.push(mine.clone());
        tasks.push(tokio::spawn(generate(
            p.url(v6, ""),
            load.clone(),
            mine,
            stop.clone(),
        )));
    }
    wait_until(
        "every client has a request answered",
        Duration::from_secs(10),
        || {
            let all = per_client.iter().all(|c| c.load(Ordering::SeqCst) > 0);
            async move { all }
        },
    )
    .await;

    let during_start: Vec<usize> = per_client
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();
    for i in 1..=RELOADS {
        p.rewrite(&config(i));
        // Pacing only: bursts of rewrites (which the watcher coalesces) with pauses longer than its
        // debounce, so that several reloads apply under load.
        let pause = if i % 5 == 0 {
            dualstack_ingress::config::watch::DEBOUNCE * 3
        } else {
            Duration::from_millis(5)
        };
        tokio::time::sleep(pause).await;
    }
    // The last rewrite must end up applied.
    let last = if RELOADS.is_multiple_of(2) {
        up4.addr
    } else {
        up6.addr
    };
    wait_for_upstream(&p, last, "the last configuration of the storm applies").await;

    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let failed = load.failed.load(Ordering::SeqCst);
    assert_eq!(
        failed,
        0,
        "{failed} failed requests (of {}); first: {:?}",
        failed + load.ok.load(Ordering::SeqCst),
        load.first_failure.lock().unwrap()
    );
    for (i, c) in per_client.iter().enumerate() {
        assert!(
            c.load(Ordering::SeqCst) > during_start[i],
            "client {i} sent no request during the storm"
        );
    }
    let (ok1, failed1) = p.server().metrics().reload_counts();
    eprintln!(
        "storm: {} requests answered, {} of {RELOADS} rewrites applied, upstream hits v4={} v6={}",
        load.ok.load(Ordering::SeqCst),
        ok1 - ok0,
        up4.hits(),
        up6.hits()
    );
    assert!(
        ok1 > ok0 + 1,
        "only {} reloads applied during the storm",
        ok1 - ok0
    );
    assert_eq!(
        failed1, failed0,
        "a valid file failed to load during the storm"
    );
    assert!(
        up4.hits() > 0 && up6.hits() > 0,
        "traffic did not alternate"
    );
}

#[tokio::test]
async fn in_flight_request_finishes_on_the_table_it_started_with() {
    let old = Upstream::start("127.0.0.1:0").await;
    let new = Upstream::start("[::1]:0").await;
    let p = TestProxy::start_watched(&default_to(old.addr)).await;

    let slow_url = p.url(true, "/delay/1000");
    let slow = tokio::spawn(async move { get(&slow_url, &[]).await });
    wait_until(
        "the slow request reaches the old upstream",
        Duration::from_secs(10),
        || {
            let hits = old.hits();
            async move { hits == 1 }
        },
    )
    .await;

    // The new table sends elsewhere and allows upstreams only 200ms to answer.
    p.rewrite(&format!(
        "{}timeouts:\n  response: 200ms\n",
        default_to(new.addr)
    ));
    wait_for_upstream(&p, new.addr, "the new table is in use").await;
    assert!(
        !slow.is_finished(),
        "the slow request finished before the new table was installed; the test proves nothing"
    );

    let seen = slow.await.unwrap();
    assert_eq!(seen.status, 200, "in-flight request failed: {}", seen.body);
    assert_eq!(answered_by(&seen), old.addr.to_string());
    assert!(seen.body.contains("uri: /delay/1000"), "{}", seen.body);

    // The same slow request started now uses the new table: its 200ms response timeout applies.
    let seen = get(&p.url(false, "/delay/1000"), &[]).await;
    assert_eq!(seen.status, 504, "{}", seen.body);
}

/// An HTTP/1.1 upstream on `bind` that counts the connections it accepts and answers every request with
/// a short keep-alive response.
async fn counting_upstream(
    bind: &str,
) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (addr, task) = spawn_server(bind, move |stream| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                    Bytes::from_static(b"ok\n"),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        }
    })
    .await;
    (addr, accepted, task)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_survive_a_reload_that_keeps_the_backend() {
    let (v4, v4_conns, _t4) = counting_upstream("127.0.0.1:0").await;
    let (v6, v6_conns, _t6) = counting_upstream("[::1]:0").await;
    let config = |extra: &str| {
        format!("defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{v4}\", \"{v6}\"]\n{extra}")
    };
    let p = TestProxy::start_watched(&config("")).await;
    let c = client();
    // Sequential requests, with and without a body: one connection per endpoint carries them all.
    for i in 0..20 {
        let body = if i % 2 == 0 {
            Bytes::new()
        } else {
            Bytes::from_static(b"payload")
        };
        let req = Request::post(p.url(i % 4 < 2, "/"))
            .body(Full::new(body))
            .unwrap();
        let seen = send(&c, req).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    assert_eq!(
        v4_conns.load(Ordering::SeqCst),
        1,
        "IPv4 endpoint connections"
    );
    assert_eq!(
        v6_conns.load(Ordering::SeqCst),
        1,
        "IPv6 endpoint connections"
    );

    // A reload that changes the routes but keeps backend "b" as it was keeps its pools.
    let (ok0, _) = p.server().metrics().reload_counts();
    p.rewrite(&config(
        "routes:\n  - host: other.test\n    paths:\n      - path: /\n        backend: b\n",
    ));
    wait_until("the reload is applied", Duration::from_secs(10), || async {
        p.server().metrics().reload_counts().0 > ok0
    })
    .await;
    for i in 0..10 {
        let seen = get(&p.url(i % 2 == 0, "/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    assert_eq!(
        v4_conns.load(Ordering::SeqCst),
        1,
        "IPv4 connections after the reload"
    );
    assert_eq!(
        v6_conns.load(Ordering::SeqCst),
        1,
        "IPv6 connections after the reload"
    );
}
