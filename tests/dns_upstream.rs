//! Upstreams named by DNS, end to end: an in-test DNS server on 127.0.0.1 (real DNS messages built with
//! hickory-proto) answers A and AAAA for test names, the proxy's `resolver:` points at it, and real
//! upstreams listen on 127.0.0.1 and [::1] on one port. A name is one endpoint whose connects race its
//! addresses (RFC 8305): IPv6 first, the next address 250 ms later or at once on failure; its `name:port`
//! is the Host and the TLS server name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use support::certs::{tls_upstream_on, Ca};
use support::*;

/// Far above every client deadline below: a request that waited for a connect to a silent address would
/// fail the test, not pass it slowly.
const CONNECT_TIMEOUT: &str = "60s";
/// How long a client waits for any one answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// A DNS server on 127.0.0.1 (UDP) answering A and AAAA from a table the test changes; other names get
/// NXDOMAIN.
struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    /// Starts one whose answers carry `ttl` seconds.
    async fn start(ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Arc<Mutex<HashMap<String, Vec<IpAddr>>>> = Arc::default();
        let table = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&query, &table.lock().unwrap(), ttl);
                let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
            }
        });
        DnsServer { addr, zone, task }
    }

    /// Makes `name` resolve to `addrs` (both families mixed as given).
    fn set(&self, name: &str, addrs: &[IpAddr]) {
        self.zone
            .lock()
            .unwrap()
            .insert(format!("{name}."), addrs.to_vec());
    }

    /// The `resolver:` line naming this server.
    fn resolver_yaml(&self) -> String {
        format!("resolver: [\"{}\"]\n", self.addr)
    }
}

/// The response to `query` from `zone`.
fn answer(query: &Message, zone: &HashMap<String, Vec<IpAddr>>, ttl: u32) -> Message {
    let mut resp = Message::response(query.metadata.id, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.edns = query.edns.clone();
    for q in &query.queries {
        resp.add_query(q.clone());
        let name = q.name().to_ascii().to_ascii_lowercase();
        let Some(addrs) = zone.get(&name) else {
            resp.metadata.response_code = ResponseCode::NXDomain;
            continue;
        };
        for ip in addrs {
            let rdata = match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            resp.add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
        }
    }
    resp
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A listener on 127.0.0.1:P and an IPv6-only socket bound to [::1]:P (not yet listening), for one port P
/// that both families share: a DNS name has one port for all its addresses.
fn same_port() -> (TcpListener, socket2::Socket) {
    for _ in 0..50 {
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        v6.set_only_v6(true).unwrap();
        v6.bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let port = v6.local_addr().unwrap().as_socket().unwrap().port();
        if let Ok(v4) = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
            v4.set_nonblocking(true).unwrap();
            return (TcpListener::from_std(v4).unwrap(), v6);
        }
    }
    panic!("no port free on both 127.0.0.1 and [::1]");
}

/// `socket` listening normally.
fn listening(socket: socket2::Socket) -> TcpListener {
    socket.listen(1024).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpListener::from_std(socket.into()).unwrap()
}

/// `socket` listening with an accept queue filled by connections nobody accepts, so the kernel drops every
/// further SYN: a connect to it neither succeeds nor fails (an address that does not answer). Returns the
/// connections that fill the queue; they must stay open.
fn black_hole(socket: &socket2::Socket) -> Vec<std::net::TcpStream> {
    socket.listen(1).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fill.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("filling the accept queue of {addr}: {e}"),
        }
        assert!(fill.len() < 64, "the accept queue of {addr} never filled");
    }
    // This kernel really drops SYNs now: the race must not wait for this address.
    let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500));
    assert!(
        matches!(&probe, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{addr} still answers: {probe:?}"
    );
    fill
}

/// GET `url` within [`CLIENT_DEADLINE`].
async fn get_soon(url: &str) -> Seen {
    tokio::time::timeout(CLIENT_DEADLINE, get(url, &[]))
        .await
        .unwrap_or_else(|_| panic!("no answer to {url} within {CLIENT_DEADLINE:?}"))
}

fn backend_yaml(dns: &DnsServer, endpoint: &str) -> String {
    format!(
        "{}timeouts:\n  connect: {CONNECT_TIMEOUT}\ndefaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{endpoint}\"]\n",
        dns.resolver_yaml()
    )
}

#[tokio::test]
async fn a_silent_ipv6_address_loses_the_race_to_ipv4() {
    let dns = DnsServer::start(60).await;
    let (v4, v6) = same_port();
    let port = v4.local_addr().unwrap().port();
    let live = Upstream::on(v4);
    let _fill = black_hole(&v6);
    dns.set("silent6.test", &[V4, V6]);
    let p = TestProxy::start(&backend_yaml(&dns, &format!("silent6.test:{port}"))).await;
    for v6_client in [false, true, false] {
        // `/close`: every request needs a new upstream connection, so every one races.
        let started = Instant::now();
        let seen = get_soon(&p.url(v6_client, "/close")).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], live.addr.to_string().as_str());
        // IPv6 first; IPv4 only after the 250 ms Connection Attempt Delay.
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "IPv4 was tried before the attempt delay: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(live.hits(), 3);
}

#[tokio::test]
async fn with_both_families_live_ipv6_is_used_and_the_name_is_the_host() {
    let dns = DnsServer::start(60).await;
    let (v4, v6) = same_port();
    let port = v4.local_addr().unwrap().port();
    let up4 = Upstream::on(v4);
    let up6 = Upstream::on(listening(v6));
    dns.set("both.test", &[V4, V6]);
    let p = TestProxy::start(&backend_yaml(&dns, &format!("both.test:{port}"))).await;
    for v6_client in [false, true, false, true] {
        let seen = get_soon(&p.url(v6_client, "/close")).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], up6.addr.to_string().as_str());
    }
    assert_eq!((up6.hits(), up4.hits()), (4, 0));

    // An HTTP/1.0 client sends no Host: the upstream gets the endpoint's authority, the name.
    let mut conn = tokio::net::TcpStream::connect(p.v4).await.unwrap();
    conn.write_all(b"GET /plain HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(CLIENT_DEADLINE, conn.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(
        text.contains(&format!("host: both.test:{port}\n")),
        "the upstream did not get the name as Host:\n{text}"
    );
}

#[tokio::test]
async fn a_refusing_ipv6_address_falls_back_to_ipv4_at_once() {
    let dns = DnsServer::start(60).await;
    // [::1]:P is bound but not listening: connects are refused.
    let (v4, _refusing) = same_port();
    let port = v4.local_addr().unwrap().port();
    let live = Upstream::on(v4);
    dns.set("refused6.test", &[V6, V4]);
    let p = TestProxy::start(&backend_yaml(&dns, &format!("refused6.test:{port}"))).await;
    let mut fastest = Duration::MAX;
    for v6_client in [false, true, false] {
        let started = Instant::now();
        let seen = get_soon(&p.url(v6_client, "/close")).await;
        fastest = fastest.min(started.elapsed());
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], live.addr.to_string().as_str());
    }
    // A refusal starts the next attempt at once, not after the 250 ms attempt delay.
    assert!(
        fastest < Duration::from_millis(250),
        "the fallback waited for the attempt delay: fastest request took {fastest:?}"
    );
}

#[tokio::test]
async fn https_and_h2_backends_named_by_dns_verify_the_certificate_for_the_name() {
    let dns = DnsServer::start(60).await;
    let ca = Ca::new();
    // A certificate for the name only: verification against an IP address would fail.
    let leaf = ca.leaf(&["secure.test"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let (v4, v6) = same_port();
    let port = v4.local_addr().unwrap().port();
    let (_up4, _serving) = tls_upstream_on(v4, &leaf);
    // The IPv6 address does not answer: the TLS clients race too.
    let _fill = black_hole(&v6);
    dns.set("secure.test", &[V4, V6]);
    dns.set("other.test", &[V4]);
    let yaml = format!(
        "{resolver}timeouts:\n  connect: {CONNECT_TIMEOUT}\n\
         routes:\n  - paths:\n      - path: /h1\n        backend: h1\n      - path: /h2\n        backend: h2\n      - path: /wrong\n        backend: wrong\n\
         backends:\n  h1:\n    protocol: https\n    ca: \"{ca}\"\n    endpoints: [\"secure.test:{port}\"]\n\
         \x20 h2:\n    protocol: h2\n    ca: \"{ca}\"\n    endpoints: [\"secure.test:{port}\"]\n\
         \x20 wrong:\n    protocol: https\n    ca: \"{ca}\"\n    endpoints: [\"other.test:{port}\"]\n",
        resolver = dns.resolver_yaml(),
        ca = ca_file.display(),
    );
    let p = TestProxy::start(&yaml).await;
    for v6_client in [false, true] {
        let seen = get_soon(&p.url(v6_client, "/h1")).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.body, "tls upstream HTTP/1.1 /h1\n");
        let seen = get_soon(&p.url(v6_client, "/h2")).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.body, "tls upstream HTTP/2.0 /h2\n");
    }
    // Same address, another name: the certificate does not cover it.
    let seen = get_soon(&p.url(false, "/wrong")).await;
    assert_eq!(seen.status, 502, "{}", seen.body);
}

#[tokio::test]
async fn when_the_records_change_new_connections_go_to_the_new_address() {
    let dns = DnsServer::start(1).await;
    let (v4, v6) = same_port();
    let port = v4.local_addr().unwrap().port();
    let old = Upstream::on(v4);
    let new = Upstream::on(listening(v6));
    dns.set("moving.test", &[V4]);
    let p = TestProxy::start(&backend_yaml(&dns, &format!("moving.test:{port}"))).await;
    let seen = get_soon(&p.url(false, "/")).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.headers["x-upstream"], old.addr.to_string().as_str());

    dns.set("moving.test", &[V6]);
    // Keep-alive requests (no `/close`): the move must not wait for the old connection to go idle.
    let (proxy, target) = (&p, &new);
    wait_until(
        "requests reach the new address",
        Duration::from_secs(15),
        || async move {
            let (p, new) = (proxy, target);
            let seen = get_soon(&p.url(false, "/")).await;
            assert_eq!(seen.status, 200, "{}", seen.body);
            seen.headers["x-upstream"] == new.addr.to_string().as_str()
        },
    )
    .await;
    let before = old.hits();
    for _ in 0..3 {
        let seen = get_soon(&p.url(true, "/")).await;
        assert_eq!(seen.headers["x-upstream"], new.addr.to_string().as_str());
    }
    assert_eq!(old.hits(), before, "a request went to the old address");
}

#[tokio::test]
async fn a_name_without_addresses_is_an_endpoint_that_cannot_connect() {
    let dns = DnsServer::start(1).await;
    let up = Upstream::start("127.0.0.1:0").await;
    // `nowhere.test` is NXDOMAIN: alone it gives 502; next to a live endpoint the request falls over.
    let yaml = format!(
        "{}routes:\n  - paths:\n      - path: /alone\n        backend: alone\n      - path: /mixed\n        backend: mixed\n\
         backends:\n  alone:\n    endpoints: [\"nowhere.test:80\"]\n  mixed:\n    endpoints: [\"nowhere.test:80\", \"{}\"]\n",
        dns.resolver_yaml(),
        up.addr
    );
    let p = TestProxy::start(&yaml).await;
    let seen = get_soon(&p.url(false, "/alone")).await;
    assert_eq!(seen.status, 502, "{}", seen.body);
    for _ in 0..4 {
        let seen = get_soon(&p.url(false, "/mixed")).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    assert_eq!(up.hits(), 4);
}
