//! The configuration seam: one apply loop is the only writer, every piece of state a request uses comes
//! from the snapshot it started with, compiles run off the runtime, reload results are counted by what
//! really happened, round-robin positions survive reloads, and connect retries are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualstack_ingress::model::{Backend, Bootstrap, ClientTimeouts, ListenAddr, Model};
use dualstack_ingress::server::Server;
use support::certs::{tls_upstream, Ca};
use support::running::Running;
use support::*;

/// Sends SIGHUP to this test process: every file source in it reloads.
fn sighup_self() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_change_storms_with_a_changing_ca_fail_no_request() {
    let ca = Ca::new();
    let other = Ca::new();
    let leaf = ca.leaf(&["127.0.0.1", "::1"]);
    let pem = tempfile::tempdir().unwrap();
    let only_ca = ca.write(pem.path());
    // A bundle of both CAs: another file, other contents, the same trust for this upstream.
    let bundle = pem.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", other.pem(), ca.pem())).unwrap();
    let (up4, _s4) = tls_upstream("127.0.0.1:0", &leaf).await;
    let (up6, _s6) = tls_upstream("[::1]:0", &leaf).await;
    let config = |i: usize| {
        let ca = if i.is_multiple_of(2) {
            &only_ca
        } else {
            &bundle
        };
        let protocol = if i % 4 < 2 { "https" } else { "h2" };
        format!(
            "defaultBackend: b\nbackends:\n  b:\n    protocol: {protocol}\n    ca: \"{}\"\n    endpoints: [\"{up4}\", \"{up6}\"]\n",
            ca.display()
        )
    };
    let p = TestProxy::start_watched(&config(0)).await;
    let (ok0, failed0) = p.server().metrics().reload_counts();

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let mut clients = Vec::new();
    for v6 in [false, true, false, true] {
        let (url, stop) = (p.url(v6, "/delay/20"), stop.clone());
        let (answered, failures) = (answered.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let req = http::Request::get(&url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                let seen = send(&client, req).await;
                if seen.status == 200 {
                    answered.fetch_add(1, Ordering::SeqCst);
                } else {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", seen.status, seen.body));
                }
            }
        }));
    }
    // Rewrites and SIGHUPs overlap: both reach the one source task, which publishes to the one writer.
    for i in 1..=24 {
        p.rewrite(&config(i));
        if i % 3 == 0 {
            sighup_self();
        }
        tokio::time::sleep(Duration::from_millis(if i % 4 == 0 { 150 } else { 15 })).await;
    }
    let applied = |p: &TestProxy| p.server().metrics().reload_counts().0 - ok0;
    wait_until("several reloads applied", Duration::from_secs(10), || {
        let n = applied(&p);
        async move { n >= 4 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed; first: {:?}",
        failures.len(),
        failures.len() + answered.load(Ordering::SeqCst),
        failures.first()
    );
    assert!(answered.load(Ordering::SeqCst) > 20);
    assert_eq!(p.server().metrics().reload_counts().1, failed0);
}

fn bootstrap() -> Bootstrap {
    Bootstrap {
        listen: vec![
            ListenAddr::plain("127.0.0.1:0".parse().unwrap()),
            ListenAddr::plain("[::1]:0".parse().unwrap()),
        ],
        listen_tls: Vec::new(),
        admin: Vec::new(),
        timeouts: ClientTimeouts::default(),
        limits: Default::default(),
        resolver: Vec::new(),
    }
}

fn model_to(endpoints: &[SocketAddr], connect_ms: u64) -> Model {
    let mut model = Model {
        default_backend: Some("b".into()),
        ..Model::default()
    };
    model.timeouts.connect = Duration::from_millis(connect_ms);
    model.backends.insert(
        "b".into(),
        Backend {
            endpoints: endpoints.to_vec(),
            ..Backend::default()
        },
    );
    model
}

#[tokio::test]
async fn round_robin_positions_survive_reloads() {
    let ups = [
        Upstream::start("127.0.0.1:0").await,
        Upstream::start("[::1]:0").await,
        Upstream::start("127.0.0.1:0").await,
    ];
    let endpoints: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let (models, published) =
        tokio::sync::watch::channel(Some(Arc::new(model_to(&endpoints, 5000))));
    let server = Server::start(&bootstrap(), published).await.unwrap();
    let v6 = *server.data_addrs().iter().find(|a| a.is_ipv6()).unwrap();
    // 100 reloads, each followed by one request. Each model differs (its connect timeout), as an
    // EndpointSlice update would: a new table every time, the same backend.
    for i in 0..100u64 {
        models.send_replace(Some(Arc::new(model_to(&endpoints, 5000 + i))));
        server.wait_installed(i + 2).await;
        let seen = get(&format!("http://{v6}/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    let hits: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert!(
        hits.iter().all(|&h| (30..=37).contains(&h)),
        "requests per endpoint across 100 reloads: {hits:?}"
    );
}

/// An address that accepts no connection: a listener whose one-slot accept queue is full, so further
/// SYNs are dropped and a connect attempt hangs until its timeout.
fn never_accepts(keep: &mut Vec<std::net::TcpStream>) -> (SocketAddr, socket2::Socket) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    for _ in 0..2 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            keep.push(s);
        }
    }
    (addr, socket)
}

#[tokio::test]
async fn connect_failures_are_retried_on_at_most_two_more_endpoints() {
    let mut fillers = Vec::new();
    let mut listeners = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..10 {
        let (addr, l) = never_accepts(&mut fillers);
        endpoints.push(addr);
        listeners.push(l);
    }
    let server = Server::start_with(&bootstrap(), model_to(&endpoints, 300))
        .await
        .unwrap();
    let v4 = *server.data_addrs().iter().find(|a| a.is_ipv4()).unwrap();
    let errors_before = connect_errors(&server);
    let seen = get(&format!("http://{v4}/"), &[]).await;
    assert_eq!(seen.status, 502, "{}", seen.body);
    assert_eq!(
        connect_errors(&server) - errors_before,
        3,
        "connect attempts for one request over 10 endpoints that never accept"
    );
}

fn connect_errors(server: &Server) -> u64 {
    server
        .metrics()
        .encode()
        .lines()
        .filter(|l| l.starts_with("dualstack_ingress_upstream_connect_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_added_by_reload_are_served_or_said_to_need_a_restart() {
    let up = Upstream::start("127.0.0.1:0").await;
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["added.test"]).write(dir.path(), "added");
    let base = format!(
        "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\ndefaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{}\"]\n",
        up.addr
    );
    let tls = format!(
        "tls:\n  - hosts: [\"added.test\"]\n    cert: {}\n    key: {}\n",
        cert.display(),
        key.display()
    );

    // Started without TLS listeners: a reload that adds certificates says that it takes a restart.
    let path = write(dir.path(), "plain.yaml", &base);
    let mut bin = Running::start(dir.path(), &["--config", path.to_str().unwrap()]);
    bin.wait_line("the watcher", |l| {
        l.contains("watching the configuration file")
    })
    .await;
    write(dir.path(), "plain.yaml", &format!("{base}{tls}"));
    let line = bin
        .wait_line("the restart warning", |l| {
            l.contains("without TLS listeners")
        })
        .await;
    assert!(line.contains("restart"), "{line}");
    drop(bin);

    // Started with TLS listeners and no certificate: the added certificate is served by SNI.
    let with_tls = format!("{base}listenTls: [\"127.0.0.1:0\", \"[::1]:0\"]\n");
    let path = write(dir.path(), "tls.yaml", &with_tls);
    let mut bin = Running::start(dir.path(), &["--config", path.to_str().unwrap()]);
    let (t4, t6) = bin.logged_addrs("listening (TLS)").await;
    let tls_addrs = [t4, t6];
    bin.wait_line("the watcher", |l| {
        l.contains("watching the configuration file")
    })
    .await;
    write(dir.path(), "tls.yaml", &format!("{with_tls}{tls}"));
    let ca_file = ca.write(dir.path());
    for addr in tls_addrs {
        let url = format!("https://added.test:{}/", addr.port());
        let resolve = format!("added.test:{}:{}", addr.port(), addr.ip());
        wait_until(
            "the added certificate is served",
            Duration::from_secs(10),
            || {
                let (url, resolve, ca_file) = (url.clone(), resolve.clone(), ca_file.clone());
                async move {
                    let out = tokio::process::Command::new("curl")
                        .args([
                            "-sS",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                            "--resolve",
                            &resolve,
                        ])
                        .arg("--cacert")
                        .arg(&ca_file)
                        .arg(&url)
                        .output()
                        .await
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout) == "200"
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_10000_routes_stalls_no_request_on_a_single_thread() {
    let old = Upstream::start("127.0.0.1:0").await;
    let new = Upstream::start("[::1]:0").await;
    let dir = tempfile::tempdir().unwrap();
    let big = |to: SocketAddr| {
        let mut yaml = format!(
            "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\ndefaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{to}\"]\nroutes:\n"
        );
        for i in 0..10_000 {
            yaml.push_str(&format!(
                "  - host: h{i}.example.com\n    paths:\n      - path: /p{i}\n        backend: b\n"
            ));
        }
        yaml
    };
    let path = write(dir.path(), "big.yaml", &big(old.addr));
    let mut bin = Running::start(
        dir.path(),
        &["--config", path.to_str().unwrap(), "--threads", "1"],
    );
    let (v4, _) = bin.data_addrs().await;
    let url = format!("http://{v4}/");
    assert_eq!(get(&url, &[]).await.status, 200);

    // A client measures every request's latency while the file is replaced: the reload (read, parse,
    // compile of 10,000 routes) takes far longer than a request, so a request that waited for it on the
    // one runtime thread would show it.
    let started = Instant::now();
    write(dir.path(), "big.yaml", &big(new.addr));
    let client = client();
    let mut latencies = Vec::new();
    loop {
        let t = Instant::now();
        let req = http::Request::get(&url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let seen = send(&client, req).await;
        latencies.push(t.elapsed());
        assert_eq!(seen.status, 200, "{}", seen.body);
        if seen.headers["x-upstream"] == new.addr.to_string().as_str() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the reload never applied"
        );
    }
    let reload = started.elapsed();
    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "reload of 10,000 routes took {reload:?}; {} requests meanwhile, slowest {worst:?}",
        latencies.len()
    );
    assert!(latencies.len() >= 5, "too few requests during the reload");
    assert!(
        worst * 4 < reload,
        "a request waited {worst:?} during a reload of {reload:?}: the compile blocked the runtime"
    );
}

#[tokio::test]
async fn an_endpoint_named_by_dns_is_resolved_and_served() {
    let up = Upstream::start("127.0.0.1:0").await;
    // `localhost` resolves through /etc/hosts: no DNS server is needed.
    let p = TestProxy::start(&format!(
        "defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"localhost:{}\"]\n",
        up.addr.port()
    ))
    .await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], up.addr.to_string().as_str());
    }
}
