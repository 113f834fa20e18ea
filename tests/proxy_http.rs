//! The HTTP/1.1 and HTTP/2 request path through real sockets: upstream families, forwarding headers,
//! hop-by-hop headers, error answers, limits and real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The values of header `name` as the support upstream echoed them in its body (`name: value` lines).
fn echoed_all(body: &str, name: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// The single value of header `name` the upstream saw; panics when it saw none or several.
fn echoed(body: &str, name: &str) -> String {
    let all = echoed_all(body, name);
    assert_eq!(
        all.len(),
        1,
        "expected exactly one {name:?} at the upstream, got {all:?} in:\n{body}"
    );
    all[0].clone()
}

/// Sends raw bytes on a fresh connection and reads one response (head plus a `content-length` body, or
/// everything up to EOF). Write errors are ignored: the proxy may answer and close before reading all of
/// an oversized request.
async fn raw_exchange(addr: SocketAddr, request: Vec<u8>) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if response_complete(&buf) {
                break;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no complete response within 10s");
    writer.abort();
    String::from_utf8_lossy(&buf).into_owned()
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .filter_map(|l| l.strip_prefix("content-length:"))
        .find_map(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => buf.len() >= end + 4 + n,
        None => false,
    }
}

/// The status code of a raw HTTP/1.1 response.
fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

/// The body of a raw HTTP/1.1 response.
fn raw_body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn assert_short_text_error(seen: &Seen, want: StatusCode) {
    assert_eq!(seen.status, want, "{}", seen.body);
    assert!(!seen.body.trim().is_empty(), "{want} without a body");
    assert!(
        seen.body.len() < 512,
        "error body is not short: {}",
        seen.body
    );
    let ct = seen
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("text/plain"),
        "{want} has content-type {ct:?}"
    );
}

// ----- upstream families -----

#[tokio::test]
async fn ipv6_only_upstream_serves_clients_of_both_families() {
    let up6 = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up6.addr])).await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/v6-only"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], up6.addr.to_string());
        assert!(
            seen.body.starts_with(&format!("upstream {}\n", up6.addr)),
            "{}",
            seen.body
        );
    }
    assert_eq!(up6.hits(), 2);
}

#[tokio::test]
async fn ipv4_only_upstream_serves_clients_of_both_families() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up4.addr])).await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/v4-only"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], up4.addr.to_string());
    }
    assert_eq!(up4.hits(), 2);
}

#[tokio::test]
async fn sequential_requests_spread_over_upstreams_of_both_families() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let up6 = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up4.addr, up6.addr])).await;
    let mut answered_by = Vec::new();
    for i in 0..10 {
        // One request at a time, alternating client families.
        let seen = get(&p.url(i % 2 == 1, "/rr"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        answered_by.push(seen.headers["x-upstream"].to_str().unwrap().to_string());
    }
    assert_eq!(up4.hits() + up6.hits(), 10);
    assert!(
        up4.hits() >= 3 && up6.hits() >= 3,
        "one-at-a-time requests were not spread over both families: {answered_by:?}"
    );
}

#[tokio::test]
async fn ipv4_mapped_ipv6_endpoint_is_reachable() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", up4.addr.port())
        .parse()
        .unwrap();
    let p = TestProxy::start(&default_backend_yaml(&[mapped])).await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/mapped"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.headers["x-upstream"], up4.addr.to_string());
    }
    assert_eq!(up4.hits(), 2);
}

// ----- forwarding headers -----

#[tokio::test]
async fn ipv4_client_gets_ipv4_forwarding_headers() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let seen = get(&p.url(false, "/hdr"), &[]).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    let b = &seen.body;
    let host = p.v4.to_string(); // what the client put in Host: 127.0.0.1:PORT
    assert_eq!(echoed(b, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(echoed(b, "x-forwarded-proto"), "http");
    assert_eq!(echoed(b, "x-forwarded-host"), host);
    assert_eq!(echoed(b, "x-forwarded-port"), p.v4.port().to_string());
    assert_eq!(
        echoed(b, "forwarded"),
        format!("for=127.0.0.1;proto=http;host=\"{host}\"")
    );
    assert_eq!(echoed(b, "host"), host);
}

#[tokio::test]
async fn ipv6_client_gets_bare_xff_and_bracketed_quoted_forwarded() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let seen = get(&p.url(true, "/hdr"), &[]).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    let b = &seen.body;
    let host = format!("[::1]:{}", p.v6.port());
    assert_eq!(echoed(b, "x-forwarded-for"), "::1");
    assert_eq!(echoed(b, "x-forwarded-proto"), "http");
    assert_eq!(echoed(b, "x-forwarded-host"), host);
    assert_eq!(echoed(b, "x-forwarded-port"), p.v6.port().to_string());
    assert_eq!(
        echoed(b, "forwarded"),
        format!("for=\"[::1]\";proto=http;host=\"{host}\"")
    );
    assert_eq!(echoed(b, "host"), host);
}

#[tokio::test]
async fn existing_x_forwarded_for_is_appended_to() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let seen = get(&p.url(false, "/"), &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(echoed(&seen.body, "x-forwarded-for"), "1.2.3.4, 127.0.0.1");
    let seen = get(&p.url(true, "/"), &[("x-forwarded-for", "2001:db8::7")]).await;
    assert_eq!(echoed(&seen.body, "x-forwarded-for"), "2001:db8::7, ::1");
}

#[tokio::test]
async fn client_host_header_reaches_upstream_unchanged() {
    let up_app = Upstream::start("[::1]:0").await;
    let up_default = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&format!(
        "routes:\n  - host: app.example.com\n    paths:\n      - path: /\n        backend: app\n\
         defaultBackend: other\n\
         backends:\n  app:\n    endpoints: [\"{}\"]\n  other:\n    endpoints: [\"{}\"]\n",
        up_app.addr, up_default.addr
    ))
    .await;

    let seen = get(&p.url(true, "/h"), &[("host", "[::1]:8080")]).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(echoed(&seen.body, "host"), "[::1]:8080");
    assert_eq!(echoed(&seen.body, "x-forwarded-host"), "[::1]:8080");
    assert_eq!(
        seen.headers["x-upstream"],
        up_default.addr.to_string(),
        "an IP-literal host goes to the default backend"
    );

    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/h"), &[("host", "app.example.com")]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(echoed(&seen.body, "host"), "app.example.com");
        assert_eq!(seen.headers["x-upstream"], up_app.addr.to_string());
    }
}

#[tokio::test]
async fn query_string_reaches_upstream_unchanged() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let pq = "/search/a%2Fb?q=a%20b+c&x=1&x=2&empty=&path=%2Fetc%2F&flag";
    for v6 in [false, true] {
        let seen = get(&p.url(v6, pq), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(echoed(&seen.body, "uri"), pq);
    }
}

#[tokio::test]
async fn absolute_form_target_is_routed_by_its_authority_and_sent_in_origin_form() {
    let up_app = Upstream::start("127.0.0.1:0").await;
    let up_other = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&format!(
        "routes:\n  - host: app.test\n    paths:\n      - path: /\n        backend: app\n\
         defaultBackend: other\n\
         backends:\n  app:\n    endpoints: [\"{}\"]\n  other:\n    endpoints: [\"{}\"]\n",
        up_app.addr, up_other.addr
    ))
    .await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(
            addr,
            b"GET http://app.test/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(raw_status(&resp), 200, "{resp}");
        let body = raw_body(&resp);
        assert!(
            body.starts_with(&format!("upstream {}\n", up_app.addr)),
            "not routed by the absolute-form authority: {resp}"
        );
        assert_eq!(echoed(body, "uri"), "/p?q=1");
        assert_eq!(echoed(body, "host"), "app.test");
    }
    assert_eq!(up_app.hits(), 2);
    assert_eq!(up_other.hits(), 0);
}

// ----- hop-by-hop headers -----

#[tokio::test]
async fn hop_by_hop_request_headers_do_not_reach_upstream() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(
            addr,
            b"GET /hop HTTP/1.1\r\nHost: hop.test\r\nConnection: x-drop, keep-alive\r\n\
              x-drop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
              TE: trailers\r\nTrailer: x-trailer\r\nx-normal: kept\r\n\r\n"
                .to_vec(),
        )
        .await;
        assert_eq!(raw_status(&resp), 200, "{resp}");
        let body = raw_body(&resp);
        for gone in [
            "connection",
            "x-drop",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
        ] {
            assert!(
                echoed_all(body, gone).is_empty(),
                "{gone} reached the upstream:\n{body}"
            );
        }
        assert_eq!(echoed(body, "x-normal"), "kept");
    }
}

/// An upstream that answers every request with hop-by-hop headers next to a normal one.
async fn hop_header_upstream(bind: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_http1_upstream(bind, |_req: Request<Incoming>| async {
        let resp = Response::builder()
            .header("connection", "x-resp-drop")
            .header("x-resp-drop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("x-resp-normal", "kept")
            .body(Full::new(Bytes::from_static(b"hop response")))
            .unwrap();
        Ok::<_, Infallible>(resp)
    })
    .await
}

#[tokio::test]
async fn hop_by_hop_response_headers_do_not_reach_client() {
    let (up, task) = hop_header_upstream("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up])).await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(seen.body, "hop response");
        assert_eq!(seen.headers["x-resp-normal"], "kept");
        for gone in ["x-resp-drop", "keep-alive", "proxy-connection"] {
            assert!(
                seen.headers.get(gone).is_none(),
                "{gone} reached the client: {:?}",
                seen.headers
            );
        }
        if let Some(c) = seen.headers.get("connection") {
            assert!(
                !c.to_str().unwrap().contains("x-resp-drop"),
                "the upstream's Connection header reached the client: {c:?}"
            );
        }
    }
    task.abort();
}

// ----- errors -----

#[tokio::test]
async fn backend_without_endpoints_gets_503() {
    let p = TestProxy::start("defaultBackend: b\nbackends:\n  b:\n    endpoints: []\n").await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/"), &[]).await;
        assert_short_text_error(&seen, StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn all_endpoints_dead_gets_502() {
    let p = TestProxy::start(&default_backend_yaml(&[dead_addr(false), dead_addr(true)])).await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/"), &[]).await;
        assert_short_text_error(&seen, StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test]
async fn dead_endpoint_is_skipped_and_every_get_succeeds() {
    let live = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[dead_addr(true), live.addr])).await;
    for i in 0..6 {
        let seen = get(&p.url(i % 2 == 0, "/retry"), &[]).await;
        assert_eq!(seen.status, 200, "request {i}: {}", seen.body);
        assert_eq!(seen.headers["x-upstream"], live.addr.to_string());
    }
    assert_eq!(live.hits(), 6);
}

#[tokio::test]
async fn post_body_arrives_intact_when_first_endpoint_is_dead() {
    let live = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[dead_addr(false), live.addr])).await;
    let c = client();
    // Round robin starts every other request at the dead endpoint, so some of these must be retried.
    for i in 0..4 {
        let payload = format!("post body number {i} ").repeat(200);
        let req = Request::post(p.url(i % 2 == 1, "/echo/retry"))
            .body(Full::new(Bytes::from(payload.clone())))
            .unwrap();
        let seen = send(&c, req).await;
        assert_eq!(seen.status, 200, "request {i}: {}", seen.body);
        assert_eq!(seen.headers["x-upstream"], live.addr.to_string());
        assert!(seen.body == payload, "request {i}: body changed in transit");
    }
    assert_eq!(live.hits(), 4);
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&format!(
        "{}timeouts: {{response: 200ms}}\n",
        default_backend_yaml(&[up.addr])
    ))
    .await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/delay/2000"), &[]).await;
        assert_short_text_error(&seen, StatusCode::GATEWAY_TIMEOUT);
    }
    // A fast request on the same proxy still works.
    assert_eq!(get(&p.url(true, "/fast"), &[]).await.status, 200);
}

#[tokio::test]
async fn unmatched_host_or_path_without_default_backend_gets_404() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&format!(
        "routes:\n  - host: app.test\n    paths:\n      - path: /only\n        backend: b\n\
         backends:\n  b:\n    endpoints: [\"{}\"]\n",
        up.addr
    ))
    .await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/only"), &[("host", "other.test")]).await;
        assert_short_text_error(&seen, StatusCode::NOT_FOUND);
        let seen = get(&p.url(v6, "/elsewhere"), &[("host", "app.test")]).await;
        assert_short_text_error(&seen, StatusCode::NOT_FOUND);
        let seen = get(&p.url(v6, "/only/sub"), &[("host", "app.test")]).await;
        assert_eq!(seen.status, 200, "the matching route still works");
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn connect_method_is_refused_with_405_and_never_forwarded() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(
            addr,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(raw_status(&resp), 405, "{resp}");
        assert!(!raw_body(&resp).trim().is_empty(), "{resp}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn request_head_over_64_kib_gets_431_and_is_not_forwarded() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let big = "a".repeat(70_000);
    for addr in [p.v4, p.v6] {
        let req = format!("GET /big HTTP/1.1\r\nHost: big.test\r\nx-big: {big}\r\n\r\n");
        let resp = raw_exchange(addr, req.into_bytes()).await;
        assert_eq!(raw_status(&resp), 431, "{resp}");
    }
    assert_eq!(up.hits(), 0);
    // A head just under the limit still goes through.
    let fits = "b".repeat(60_000);
    let seen = get(&p.url(true, "/fits"), &[("x-fits", fits.as_str())]).await;
    assert_eq!(seen.status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn garbage_request_line_gets_400() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(addr, b"NOT HTTP\r\n\r\n".to_vec()).await;
        assert_eq!(raw_status(&resp), 400, "{resp}");
    }
    assert_eq!(up.hits(), 0);
}

// ----- clients -----

#[tokio::test]
async fn h2c_prior_knowledge_clients_work_on_both_families() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let up6 = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up4.addr, up6.addr])).await;
    let c = h2c_client();
    for v6 in [false, true] {
        let resp = c
            .request(
                Request::get(p.url(v6, "/h2?x=1"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        let listener = if v6 { p.v6 } else { p.v4 };
        // HTTP/2 has no Host header; the upstream (HTTP/1.1) gets one from the :authority.
        assert_eq!(echoed(&body, "host"), listener.to_string());
        assert_eq!(echoed(&body, "uri"), "/h2?x=1");
        assert_eq!(
            echoed(&body, "x-forwarded-for"),
            if v6 { "::1" } else { "127.0.0.1" }
        );
    }
    assert_eq!(up4.hits() + up6.hits(), 2);
}

#[tokio::test]
async fn curl_over_ipv6_gets_a_proxied_answer() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let url = format!("http://[::1]:{}/from/curl?x=1", p.v6.port());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-g", "-i", "--max-time", "10", &url])
        .output()
        .await
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status_line = stdout.lines().next().unwrap_or_default();
    assert!(
        status_line.starts_with("HTTP/1.1 200"),
        "status line {status_line:?}"
    );
    let body = stdout.replace("\r\n", "\n");
    let body = body.split_once("\n\n").map_or("", |(_, b)| b);
    assert!(
        body.starts_with(&format!("upstream {}\n", up.addr)),
        "{stdout}"
    );
    assert_eq!(echoed(body, "uri"), "/from/curl?x=1");
    assert_eq!(echoed(body, "x-forwarded-for"), "::1");
    assert_eq!(echoed(body, "host"), format!("[::1]:{}", p.v6.port()));
    assert_eq!(up.hits(), 1);
}

// ----- admin -----

/// The value of the sample `series` (name and labels) in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn admin_on_ipv6_serves_health_and_counts_requests_by_family() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&format!(
        "admin: \"[::1]:0\"\n{}",
        default_backend_yaml(&[up.addr])
    ))
    .await;
    let admin = p.server().admin_addr().expect("admin listener is bound");
    assert!(admin.is_ipv6(), "{admin}");
    assert_ne!(admin.port(), 0);
    let admin_url = |path: &str| format!("http://{admin}{path}");

    assert_eq!(get(&admin_url("/healthz"), &[]).await.status, 200);
    assert_eq!(get(&admin_url("/readyz"), &[]).await.status, 200);

    let seen = get(&p.url(true, "/counted"), &[]).await;
    assert_eq!(seen.status, 200);

    let metrics = get(&admin_url("/metrics"), &[]).await;
    assert_eq!(metrics.status, 200);
    let v6_2xx = sample(
        &metrics.body,
        "dualstack_ingress_requests_total{code=\"2xx\",family=\"ipv6\"}",
    );
    assert!(
        v6_2xx.is_some_and(|n| n >= 1.0),
        "no ipv6 2xx count in:\n{}",
        metrics.body
    );
    let v4_2xx = sample(
        &metrics.body,
        "dualstack_ingress_requests_total{code=\"2xx\",family=\"ipv4\"}",
    );
    assert_eq!(
        v4_2xx.unwrap_or(0.0),
        0.0,
        "an IPv6 request was counted as IPv4:\n{}",
        metrics.body
    );
}
