//! The edge of the proxy behind load balancers, over real sockets on both families: PROXY protocol v1 and
//! v2 headers (IPv4, IPv6 and IPv4 clients carried over IPv6, `LOCAL`, TLS after the header), connections
//! without a valid header, forwarding headers from untrusted and trusted peers, and per-path allow lists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::certs::Ca;
use support::running::Running;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Both loopback listeners expect a PROXY header.
const PROXY_LISTEN: &str = "listen:\n  - {address: \"127.0.0.1:0\", proxyProtocol: true}\n  - {address: \"[::1]:0\", proxyProtocol: true}\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `dst` in the family of `src`, as a load balancer writes both addresses of a header: an IPv4 client
/// reaching an IPv6 balancer is written with IPv4-mapped addresses.
fn same_family(src: SocketAddr, dst: SocketAddr) -> SocketAddr {
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V6(_)) => SocketAddr::from(([192, 0, 2, 254], dst.port())),
        (IpAddr::V6(_), IpAddr::V4(d)) => {
            SocketAddr::new(IpAddr::V6(d.to_ipv6_mapped()), dst.port())
        }
        _ => dst,
    }
}

/// A v1 header naming `src` (`TCP4` or `TCP6` by its family).
fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let dst = same_family(src, dst);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 `PROXY` header naming `src`, with a TLV the proxy must skip.
fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let dst = same_family(src, dst);
    ppp::v2::Builder::with_addresses(0x21, ppp::v2::Protocol::Stream, (src, dst))
        .write_tlv(ppp::v2::Type::Authority, b"lb.example")
        .unwrap()
        .build()
        .unwrap()
}

/// A v2 `LOCAL` header (a load balancer's own health check).
fn v2_local() -> Vec<u8> {
    ppp::v2::Builder::new(0x20, 0x00).build().unwrap()
}

/// Sends `prefix` and a GET for `path` with `headers` in one write (so the request arrives with the
/// header), and returns the status and the whole raw answer.
async fn raw_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    prefix: &[u8],
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n").as_bytes());
    for (k, v) in headers {
        bytes.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"Connection: close\r\n\r\n");
    stream.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// GET `path` on a new connection to `addr` that starts with `prefix`.
async fn get_via(
    addr: SocketAddr,
    prefix: &[u8],
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    raw_get(
        TcpStream::connect(addr).await.unwrap(),
        prefix,
        path,
        headers,
    )
    .await
}

/// Whether `answer` (the upstream's echo of its request headers) has `name: value`.
fn echoed(answer: &str, name: &str, value: &str) -> bool {
    answer.lines().any(|l| l == format!("{name}: {value}"))
}

#[tokio::test]
async fn proxy_headers_name_the_client_on_both_listeners() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start_listen(PROXY_LISTEN, &default_backend_yaml(&[up.addr])).await;
    let cases = [
        ("198.51.100.7:4000", "198.51.100.7", "for=198.51.100.7"),
        ("[2001:db8::7]:4000", "2001:db8::7", "for=\"[2001:db8::7]\""),
        // An IPv4 client through an IPv6 load balancer, written as a mapped address: shown as IPv4.
        (
            "[::ffff:203.0.113.9]:4000",
            "203.0.113.9",
            "for=203.0.113.9",
        ),
    ];
    for listener in [p.v4, p.v6] {
        for (src, xff, forwarded) in cases {
            let src = sa(src);
            for (version, header) in [("v1", v1(src, listener)), ("v2", v2(src, listener))] {
                let (status, answer) = get_via(listener, &header, "/", &[]).await;
                assert_eq!(status, 200, "{version} {src} via {listener}: {answer}");
                assert!(
                    echoed(&answer, "x-forwarded-for", xff),
                    "{version} {src} via {listener}: {answer}"
                );
                assert!(
                    answer
                        .lines()
                        .any(|l| l.starts_with("forwarded: ") && l.contains(forwarded)),
                    "{version} {src} via {listener}: {answer}"
                );
            }
        }
    }
    // An IPv4 client in a TCP4 v1 header over an IPv6 connection.
    let (status, answer) = get_via(p.v6, &v1(sa("192.0.2.44:1"), p.v6), "/", &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(echoed(&answer, "x-forwarded-for", "192.0.2.44"), "{answer}");
}

#[tokio::test]
async fn local_and_unknown_headers_keep_the_connection_peer() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start_listen(PROXY_LISTEN, &default_backend_yaml(&[up.addr])).await;
    for (listener, peer) in [(p.v4, "127.0.0.1"), (p.v6, "::1")] {
        for header in [v2_local(), b"PROXY UNKNOWN\r\n".to_vec()] {
            let (status, answer) = get_via(listener, &header, "/", &[]).await;
            assert_eq!(status, 200, "{answer}");
            assert!(echoed(&answer, "x-forwarded-for", peer), "{answer}");
        }
    }
}

#[tokio::test]
async fn the_request_may_follow_the_header_in_a_later_packet() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start_listen(PROXY_LISTEN, &default_backend_yaml(&[up.addr])).await;
    for listener in [p.v4, p.v6] {
        let mut tcp = TcpStream::connect(listener).await.unwrap();
        let header = v2(sa("[2001:db8::99]:1"), listener);
        // The header itself in two pieces, then the request through hyper.
        tcp.write_all(&header[..10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(&header[10..]).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/")
            .header("host", "app.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(echoed(&body, "x-forwarded-for", "2001:db8::99"), "{body}");
    }
}

/// Whether the proxy closes `stream` without answering.
async fn closed_without_answer(mut stream: TcpStream) -> bool {
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_and_counted() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start_listen(
        PROXY_LISTEN,
        &format!(
            "timeouts:\n  headerRead: 500ms\n{}",
            default_backend_yaml(&[up.addr])
        ),
    )
    .await;
    let metrics = p.server().metrics().clone();
    for listener in [p.v4, p.v6] {
        // Plain HTTP where a PROXY header belongs.
        let mut tcp = TcpStream::connect(listener).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_without_answer(tcp).await, "{listener}");
        // A broken v1 line, and a v2 header with a bad version.
        let mut tcp = TcpStream::connect(listener).await.unwrap();
        tcp.write_all(b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\n")
            .await
            .unwrap();
        assert!(closed_without_answer(tcp).await, "{listener}");
        let mut bad = v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"));
        bad[12] = 0x31;
        let mut tcp = TcpStream::connect(listener).await.unwrap();
        tcp.write_all(&bad).await.unwrap();
        assert!(closed_without_answer(tcp).await, "{listener}");
        // Half a header, then silence: closed by headerRead.
        let mut tcp = TcpStream::connect(listener).await.unwrap();
        tcp.write_all(b"PROXY TCP6 2001:db8::1").await.unwrap();
        assert!(closed_without_answer(tcp).await, "{listener}");
    }
    wait_until(
        "8 rejected connections counted",
        Duration::from_secs(5),
        || {
            let m = metrics.clone();
            async move { m.proxy_protocol_rejected_count() == 8 }
        },
    )
    .await;
    let text = metrics.encode();
    for family in ["ipv4", "ipv6"] {
        let line =
            format!("dualstack_ingress_proxy_protocol_rejected_total{{family=\"{family}\"}} 4");
        assert!(text.contains(&line), "{line} missing in\n{text}");
    }
    assert_eq!(
        metrics.closed_by_count(dualstack_ingress::telemetry::Deadline::HeaderRead),
        2
    );
    // The listeners still serve valid connections.
    let (status, _) = get_via(p.v6, &v1(sa("192.0.2.3:1"), p.v6), "/", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_proxy_protocol_tls_listener_reads_the_header_then_the_handshake() {
    let up = Upstream::start("127.0.0.1:0").await;
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["localhost"]).write(certs.path(), "leaf");
    let p = TestProxy::start(&format!(
        "listenTls:\n  - {{address: \"127.0.0.1:0\", proxyProtocol: true}}\n  - {{address: \"[::1]:0\", proxyProtocol: true}}\ntls:\n  - hosts: [\"localhost\"]\n    cert: {}\n    key: {}\n{}",
        cert.display(),
        key.display(),
        default_backend_yaml(&[up.addr])
    ))
    .await;
    let connector = ca.connector();
    let tls_addrs = p.server().tls_addrs().to_vec();
    assert_eq!(tls_addrs.len(), 2);
    for addr in tls_addrs {
        for (src, xff) in [
            (sa("[::ffff:198.51.100.20]:9"), "198.51.100.20"),
            (sa("[2001:db8::20]:9"), "2001:db8::20"),
        ] {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&v2(src, addr)).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            let (status, answer) = raw_get(tls, b"", "/", &[]).await;
            assert_eq!(status, 200, "{answer}");
            assert!(echoed(&answer, "x-forwarded-for", xff), "{addr}: {answer}");
            assert!(echoed(&answer, "x-forwarded-proto", "https"), "{answer}");
        }
        // A TLS ClientHello where the header belongs is refused.
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        assert!(connector.connect(name, tcp).await.is_err(), "{addr}");
    }
    // The plain listeners of this proxy take no header.
    let (status, answer) = get_via(p.v4, b"", "/", &[]).await;
    assert_eq!(status, 200, "{answer}");
}

/// Routes `/private` only to 192.0.2.0/24, everything else to the upstream.
fn allow_yaml(up: SocketAddr, trusted: &str) -> String {
    format!(
        "{trusted}routes:\n  - paths:\n      - path: /private\n        backend: b\n        allow: [\"192.0.2.0/24\"]\n      - path: /\n        backend: b\n{}",
        default_backend_yaml(&[up])
    )
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_not_believed() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&allow_yaml(up.addr, "trustedProxies: [\"10.0.0.0/8\"]\n")).await;
    let spoofed = [
        ("X-Forwarded-For", "192.0.2.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
    ];
    for (listener, peer) in [(p.v4, "127.0.0.1"), (p.v6, "::1")] {
        let (status, answer) = get_via(listener, b"", "/private", &spoofed).await;
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains("not allowed"), "{answer}");
        let (status, answer) = get_via(listener, b"", "/", &spoofed).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            echoed(&answer, "x-forwarded-for", &format!("192.0.2.1, {peer}")),
            "{answer}"
        );
        assert!(echoed(&answer, "x-forwarded-proto", "http"), "{answer}");
        let port = listener.port().to_string();
        assert!(echoed(&answer, "x-forwarded-port", &port), "{answer}");
    }
}

#[tokio::test]
async fn behind_a_trusted_peer_the_client_is_the_rightmost_untrusted_entry() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&allow_yaml(
        up.addr,
        "trustedProxies: [\"127.0.0.0/8\", \"::1\", \"10.0.0.0/8\"]\n",
    ))
    .await;
    for listener in [p.v4, p.v6] {
        let via_lb = [
            ("X-Forwarded-For", "192.0.2.1, 10.0.0.5"),
            ("X-Forwarded-Proto", "https"),
        ];
        let (status, answer) = get_via(listener, b"", "/private", &via_lb).await;
        assert_eq!(status, 200, "{answer}");
        assert!(echoed(&answer, "x-forwarded-proto", "https"), "{answer}");
        // A client that prepends an allowed address of its own is still itself.
        let spoofing = [("X-Forwarded-For", "192.0.2.1, 198.51.100.1, 10.0.0.5")];
        let (status, answer) = get_via(listener, b"", "/private", &spoofing).await;
        assert_eq!(status, 403, "{answer}");
        // Without forwarding headers the trusted peer is the client.
        let (status, answer) = get_via(listener, b"", "/private", &[]).await;
        assert_eq!(status, 403, "{answer}");
        let (status, answer) = get_via(listener, b"", "/", &[]).await;
        assert_eq!(status, 200, "{answer}");
        assert!(echoed(&answer, "x-forwarded-proto", "http"), "{answer}");
    }
}

#[tokio::test]
async fn allow_lists_match_mapped_ipv4_clients_and_keep_families_apart() {
    let up = Upstream::start("127.0.0.1:0").await;
    let path = |path: &str, allow: &str| {
        format!("      - path: {path}\n        backend: b\n        allow: [{allow}]\n")
    };
    let yaml = format!(
        "routes:\n  - paths:\n{}{}{}{}",
        path("/v4net", "\"203.0.113.0/24\""),
        path("/any4", "\"0.0.0.0/0\""),
        path("/any6", "\"::/0\""),
        path("/mapped", "\"::ffff:203.0.113.0/120\""),
    ) + &default_backend_yaml(&[up.addr]);
    let p = TestProxy::start_listen(PROXY_LISTEN, &yaml).await;
    let mapped = v2(sa("[::ffff:203.0.113.5]:7"), p.v6);
    let v6_client = v2(sa("[2001:db8::5]:7"), p.v6);
    let v4_client = v1(sa("203.0.113.6:7"), p.v4);
    for (header, listener, path, want) in [
        (&mapped, p.v6, "/v4net", 200),
        (&mapped, p.v6, "/any4", 200),
        (&mapped, p.v6, "/any6", 403),
        (&mapped, p.v6, "/mapped", 200),
        (&v6_client, p.v6, "/any4", 403),
        (&v6_client, p.v6, "/any6", 200),
        (&v6_client, p.v6, "/v4net", 403),
        (&v4_client, p.v4, "/v4net", 200),
        (&v4_client, p.v4, "/mapped", 200),
        (&v4_client, p.v4, "/any6", 403),
    ] {
        let (status, answer) = get_via(listener, header, path, &[]).await;
        assert_eq!(status, want, "{path} via {listener}: {answer}");
    }
    // A route without an allow list takes everyone.
    let (status, _) = get_via(p.v6, &v6_client, "/other", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn allow_lists_on_plain_listeners_of_both_families() {
    let up = Upstream::start("127.0.0.1:0").await;
    let yaml = format!(
        "routes:\n  - paths:\n      - path: /any4\n        backend: b\n        allow: [\"0.0.0.0/0\"]\n      - path: /any6\n        backend: b\n        allow: [\"::/0\"]\n{}",
        default_backend_yaml(&[up.addr])
    );
    let p = TestProxy::start(&yaml).await;
    assert_eq!(get(&p.url(false, "/any4"), &[]).await.status, 200);
    assert_eq!(get(&p.url(true, "/any4"), &[]).await.status, 403);
    assert_eq!(get(&p.url(true, "/any6"), &[]).await.status, 200);
    let seen = get(&p.url(false, "/any6"), &[]).await;
    assert_eq!(seen.status, 403);
    assert!(seen.body.starts_with("403 Forbidden"), "{}", seen.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_client_of_the_proxy_header() {
    let up = Upstream::start("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("proxy.yaml"),
        format!("{PROXY_LISTEN}{}", default_backend_yaml(&[up.addr])),
    )
    .unwrap();
    let mut bin = Running::start(dir.path(), &["--config", "proxy.yaml"]);
    let (v4, v6) = bin.data_addrs().await;
    for (listener, src, client) in [
        (v6, sa("[::ffff:198.51.100.77]:1"), "198.51.100.77"),
        (v4, sa("[2001:db8::77]:1"), "2001:db8::77"),
    ] {
        let (status, answer) = get_via(listener, &v2(src, listener), "/logged", &[]).await;
        assert_eq!(status, 200, "{answer}");
        let needle = format!("client={client}");
        bin.wait_line("an access line naming the PROXY client", |l| {
            let l = support::running::strip_ansi(l);
            l.contains(" access: ") && l.contains(&needle)
        })
        .await;
    }
}
