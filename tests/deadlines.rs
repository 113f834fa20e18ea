//! Connection deadlines on every listener and both families: a client that sends nothing, stops inside the
//! HTTP/2 preface, or completes a TLS handshake and then sends nothing is closed by `timeouts.headerRead`;
//! kept-alive HTTP/1 connections close after it too; HTTP/2 connections without a stream close after
//! `timeouts.idle` although they answer PINGs. Running out of descriptors recovers by itself, keeps the
//! admin probe answering and keeps the log short.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use dualstack_ingress::telemetry::Deadline;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::certs::Ca;
use support::running::{logged_addr, Running};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any deadline under test: a connection still open then was never going to be closed.
const GIVE_UP: Duration = Duration::from_secs(15);

const SHORT: &str = "timeouts:\n  headerRead: 500ms\n  idle: 1s\n";

/// Whether the peer closes `stream` (EOF or a reset) before [`GIVE_UP`], reading and discarding anything
/// it sends first.
async fn closed_by_peer<S: AsyncRead + Unpin>(mut stream: S) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(GIVE_UP, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

async fn proxy_with_admin(up: SocketAddr, v6_admin: bool) -> TestProxy {
    let admin = if v6_admin { "[::1]:0" } else { "127.0.0.1:0" };
    TestProxy::start(&format!(
        "admin: \"{admin}\"\n{SHORT}{}",
        default_backend_yaml(&[up])
    ))
    .await
}

#[tokio::test]
async fn silent_plain_connections_are_closed_on_both_families() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = proxy_with_admin(up.addr, false).await;
    for addr in [p.v4, p.v6] {
        let stream = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_peer(stream).await,
            "a silent connection to {addr} stayed open"
        );
    }
    let closed = p.server().metrics().closed_by_count(Deadline::HeaderRead);
    assert!(closed >= 2, "closed_by header_read counted {closed}");
    assert!(p
        .server()
        .metrics()
        .encode()
        .contains("dualstack_ingress_connections_closed_by_deadline_total{deadline=\"header_read\",family=\"ipv6\"}"));
}

#[tokio::test]
async fn a_partial_http2_preface_is_closed_on_both_families() {
    let up = Upstream::start("[::1]:0").await;
    let p = proxy_with_admin(up.addr, false).await;
    for addr in [p.v4, p.v6] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        assert!(
            closed_by_peer(stream).await,
            "a partial HTTP/2 preface to {addr} kept the connection open"
        );
    }
}

#[tokio::test]
async fn a_partial_http1_head_is_closed() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = proxy_with_admin(up.addr, false).await;
    for addr in [p.v4, p.v6] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        assert!(
            closed_by_peer(stream).await,
            "an unfinished request head to {addr} kept the connection open"
        );
    }
}

#[tokio::test]
async fn silent_admin_connections_are_closed_on_both_families() {
    let up = Upstream::start("127.0.0.1:0").await;
    for v6 in [false, true] {
        let p = proxy_with_admin(up.addr, v6).await;
        let admin = p.server().admin_addr().unwrap();
        assert_eq!(admin.is_ipv6(), v6);
        let stream = TcpStream::connect(admin).await.unwrap();
        assert!(
            closed_by_peer(stream).await,
            "a silent admin connection to {admin} stayed open"
        );
    }
}

#[tokio::test]
async fn silent_tls_connections_are_closed_after_the_handshake_on_both_families() {
    let up = Upstream::start("127.0.0.1:0").await;
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["localhost"]).write(certs.path(), "leaf");
    let p = TestProxy::start(&format!(
        "listenTls: [\"127.0.0.1:0\", \"[::1]:0\"]\ntls:\n  - hosts: [\"localhost\"]\n    cert: {}\n    key: {}\n{SHORT}{}",
        cert.display(),
        key.display(),
        default_backend_yaml(&[up.addr])
    ))
    .await;
    let connector = ca.connector();
    for &addr in p.server().tls_addrs() {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert!(
            closed_by_peer(tls).await,
            "a silent TLS connection to {addr} stayed open after its handshake"
        );
    }
}

#[tokio::test]
async fn kept_alive_http1_connections_close_after_header_read() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = proxy_with_admin(up.addr, false).await;
    for addr in [p.v4, p.v6] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", "a.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        // Idle after a complete response: the proxy closes the connection, which ends the client's task.
        let ended = tokio::time::timeout(GIVE_UP, conn).await;
        assert!(
            ended.is_ok(),
            "an idle kept-alive connection to {addr} stayed open"
        );
    }
}

#[tokio::test]
async fn idle_http2_connections_close_although_they_answer_pings() {
    let up = Upstream::start("[::1]:0").await;
    let p = proxy_with_admin(up.addr, false).await;
    for addr in [p.v4, p.v6] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        // The client answers the proxy's PINGs (h2 does so by itself) but opens no further stream.
        let ended = tokio::time::timeout(GIVE_UP, conn).await;
        assert!(
            ended.is_ok(),
            "an HTTP/2 connection to {addr} without streams stayed open"
        );
    }
    let idle = p.server().metrics().closed_by_count(Deadline::Idle);
    assert!(idle >= 2, "closed_by idle counted {idle}");
}

#[tokio::test]
async fn an_http2_stream_in_progress_keeps_its_connection() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = proxy_with_admin(up.addr, false).await;
    let tcp = TcpStream::connect(p.v6).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // The upstream answers after 2.5 s, longer than `idle` (1 s): the open stream keeps the connection.
    let req = Request::get(format!("http://{}/delay/2500", p.v6))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).starts_with("upstream "));
}

/// Number of open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Sets the descriptor limit of process `pid` with `prlimit --nofile` (util-linux).
fn set_fd_limit(pid: u32, limit: usize) {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux) is needed");
    assert!(status.success(), "prlimit failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_recovers_by_itself_and_keeps_admin_answering() {
    const HEADER_READ: Duration = Duration::from_secs(3);
    let up = Upstream::start("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\nadmin: \"127.0.0.1:0\"\ntimeouts:\n  headerRead: {}s\n{}",
            HEADER_READ.as_secs(),
            default_backend_yaml(&[up.addr])
        ),
    )
    .unwrap();
    let mut bin = Running::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let (v4, v6) = bin.data_addrs().await;
    let admin_line = bin
        .wait_line("the admin listening line", |l| {
            logged_addr(l, "admin listening").is_some()
        })
        .await;
    let admin = logged_addr(&admin_line, "admin listening").unwrap();
    let pid = bin.child.id();
    let headroom = 30;
    set_fd_limit(pid, open_fds(pid) + headroom);

    // More silent clients than the proxy has descriptors: the rest wait in the listen backlogs.
    let mut silent = Vec::new();
    for i in 0..headroom + 20 {
        let addr = if i % 2 == 0 { v4 } else { v6 };
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let saturated_at = tokio::time::Instant::now();
    bin.wait_line("an accept failure", |l| l.contains("accept failed"))
        .await;

    // The admin probe still answers: its listener keeps a descriptor in reserve.
    let healthz = tokio::time::timeout(
        Duration::from_secs(2),
        get(&format!("http://{admin}/healthz"), &[]),
    )
    .await
    .expect("/healthz did not answer while the data listeners were out of descriptors");
    assert_eq!(healthz.status, 200);

    // Without a restart, a normal request is served once the silent clients' headerRead has passed.
    let seen = tokio::time::timeout_at(
        saturated_at + HEADER_READ + Duration::from_secs(1),
        get(&format!("http://{v4}/"), &[]),
    )
    .await
    .expect("no request was served within headerRead plus a second of the descriptors running out");
    assert_eq!(seen.status, 200, "{}", seen.body);
    let seen = tokio::time::timeout(GIVE_UP, get(&format!("http://{v6}/"), &[]))
        .await
        .expect("the IPv6 listener did not recover");
    assert_eq!(seen.status, 200, "{}", seen.body);

    // The log stays short: accept failures are summarised, not written once per attempt.
    let accept_lines = bin
        .stderr()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        accept_lines <= 8,
        "{accept_lines} accept-failure lines:\n{}",
        bin.stderr().join("\n")
    );
    drop(silent);
}
