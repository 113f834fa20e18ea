//! Request smuggling and ambiguity defences, and the deadlines after the response head, through real
//! sockets on both families. Requests are written as raw bytes where a client library would normalise them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The values of header `name` as the support upstream echoed them in its body.
fn echoed_all(body: &str, name: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Sends raw bytes on a fresh connection and reads one response: the head plus a `content-length` body,
/// or everything up to EOF.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while !response_complete(&buf) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no complete response within 10s");
    String::from_utf8_lossy(&buf).into_owned()
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    head.lines()
        .filter_map(|l| l.strip_prefix("content-length:"))
        .find_map(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| buf.len() >= end + 4 + n)
}

fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

fn raw_body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

// ----- item 1: Host must be one valid authority -----

#[tokio::test]
async fn two_host_headers_or_an_invalid_host_get_400_and_are_not_forwarded() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let requests: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
    ];
    for addr in [p.v4, p.v6] {
        for req in requests {
            let resp = raw_exchange(addr, req).await;
            assert_eq!(
                raw_status(&resp),
                400,
                "{}\n{resp}",
                String::from_utf8_lossy(req)
            );
        }
    }
    assert_eq!(up.hits(), 0);
    // A valid Host still works.
    let resp = raw_exchange(p.v6, b"GET / HTTP/1.1\r\nHost: a.test:8080\r\n\r\n").await;
    assert_eq!(raw_status(&resp), 200, "{resp}");
}

// ----- item 2: Host is never hop-by-hop -----

#[tokio::test]
async fn connection_naming_host_does_not_remove_it() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(
            addr,
            b"GET /h HTTP/1.1\r\nHost: app.test\r\nConnection: Host, x-drop\r\nx-drop: 1\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&resp), 200, "{resp}");
        let body = raw_body(&resp);
        assert_eq!(echoed_all(body, "host"), ["app.test"], "{body}");
        assert!(echoed_all(body, "x-drop").is_empty(), "{body}");
    }
}

// ----- item 3: only WebSocket upgrades are tunnelled -----

/// Answers 101 with the request's `Upgrade` when it has one (or, with `always`, even without), else 200
/// with `no upgrade`.
async fn switching_upstream(bind: &str, always: bool) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_http1_upstream(bind, move |req: Request<Incoming>| async move {
        let offered = req.headers().get("upgrade").cloned();
        let resp = match (offered, always) {
            (Some(proto), _) => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", proto)
                .body(Full::new(Bytes::new()))
                .unwrap(),
            (None, true) => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "h2c")
                .body(Full::new(Bytes::new()))
                .unwrap(),
            (None, false) => Response::new(Full::new(Bytes::from_static(b"no upgrade"))),
        };
        Ok::<_, Infallible>(resp)
    })
    .await
}

#[tokio::test]
async fn h2c_upgrade_is_not_forwarded_and_an_unasked_101_stays_502() {
    let (up, task) = switching_upstream("127.0.0.1:0", false).await;
    let (up_always, task_always) = switching_upstream("[::1]:0", true).await;
    let p = TestProxy::start(&format!(
        "routes:\n  - host: always.test\n    paths:\n      - path: /\n        backend: always\n\
         defaultBackend: b\n\
         backends:\n  b:\n    endpoints: [\"{up}\"]\n  always:\n    endpoints: [\"{up_always}\"]\n"
    ))
    .await;
    let h2c = b"GET / HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let always =
        b"GET / HTTP/1.1\r\nHost: always.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(addr, h2c).await;
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert_eq!(raw_body(&resp), "no upgrade");
        let resp = raw_exchange(addr, always).await;
        assert_eq!(raw_status(&resp), 502, "{resp}");
    }
    // WebSocket is still passed on.
    let resp = raw_exchange(
        p.v6,
        b"GET / HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&resp), 101, "{resp}");
    task.abort();
    task_always.abort();
}

// ----- item 4: a malformed request body is the client's error -----

/// Reads the whole request body before answering `got N bytes`.
async fn body_reading_upstream(bind: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    spawn_http1_upstream(bind, |req: Request<Incoming>| async move {
        let text = match req.into_body().collect().await {
            Ok(b) => format!("got {} bytes", b.to_bytes().len()),
            Err(e) => format!("body error {e}"),
        };
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
    })
    .await
}

#[tokio::test]
async fn malformed_chunked_body_gets_400() {
    let (up, task) = body_reading_upstream("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up])).await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(
            addr,
            b"POST /up HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&resp), 400, "{resp}");
        // A well-formed chunked body still goes through.
        let resp = raw_exchange(
            addr,
            b"POST /up HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert_eq!(raw_body(&resp), "got 5 bytes");
    }
    task.abort();
}

// ----- item 5: framing and request-target forms -----

#[tokio::test]
async fn transfer_coding_other_than_chunked_gets_501() {
    let (up, task) = body_reading_upstream("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up])).await;
    for addr in [p.v4, p.v6] {
        let resp = raw_exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(raw_status(&resp), 501, "{resp}");
    }
    task.abort();
}

#[tokio::test]
async fn authority_form_and_asterisk_form_targets_get_400() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        for req in [
            &b"GET app.test:80 HTTP/1.1\r\nHost: app.test\r\n\r\n"[..],
            b"GET * HTTP/1.1\r\nHost: app.test\r\n\r\n",
            b"POST * HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n",
        ] {
            let resp = raw_exchange(addr, req).await;
            assert_eq!(
                raw_status(&resp),
                400,
                "{}\n{resp}",
                String::from_utf8_lossy(req)
            );
        }
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn http2_cookies_are_joined_for_an_http1_upstream() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let c = h2c_client();
    for v6 in [false, true] {
        let req = Request::get(p.url(v6, "/cookies"))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let seen = send(&c, req).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(
            echoed_all(&seen.body, "cookie"),
            ["a=1; b=2"],
            "{}",
            seen.body
        );
    }
}

// ----- item 6: one normalised path for routing and the upstream -----

#[tokio::test]
async fn path_is_normalised_before_routing_and_forwarded_normalised() {
    let admin = Upstream::start("127.0.0.1:0").await;
    let other = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&format!(
        "routes:\n  - paths:\n      - path: /admin\n        pathType: Exact\n        backend: admin\n\
         defaultBackend: other\n\
         backends:\n  admin:\n    endpoints: [\"{}\"]\n  other:\n    endpoints: [\"{}\"]\n",
        admin.addr, other.addr
    ))
    .await;
    let cases = [
        ("/api/../admin", "/admin"),
        ("/api/%2e%2e/admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/api/./../admin?q=%2e%2e/x&y", "/admin?q=%2e%2e/x&y"),
    ];
    for addr in [p.v4, p.v6] {
        for (target, forwarded) in cases {
            let resp = raw_exchange(
                addr,
                format!("GET {target} HTTP/1.1\r\nHost: x.test\r\n\r\n").as_bytes(),
            )
            .await;
            assert_eq!(raw_status(&resp), 200, "{target}: {resp}");
            let body = raw_body(&resp);
            assert!(
                body.starts_with(&format!("upstream {}\n", admin.addr)),
                "{target} was not routed to the Exact /admin route: {body}"
            );
            assert_eq!(echoed_all(body, "uri"), [forwarded], "{target}");
        }
        for above in ["/../admin", "/api/../../admin", "/%2e%2e/admin"] {
            let resp = raw_exchange(
                addr,
                format!("GET {above} HTTP/1.1\r\nHost: x.test\r\n\r\n").as_bytes(),
            )
            .await;
            assert_eq!(raw_status(&resp), 400, "{above}: {resp}");
        }
    }
    assert_eq!(admin.hits(), 2 * cases.len());
    assert_eq!(other.hits(), 0);
}

// ----- item 7: deadlines after the response head -----

/// A raw upstream: reads one request head, writes `head`, then runs `after` on the socket.
async fn raw_upstream<F, Fut>(
    bind: &str,
    head: &'static [u8],
    after: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    spawn_server(bind, move |mut stream| {
        let after = after.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if stream.write_all(head).await.is_ok() {
                after(stream).await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn upstream_silence_after_the_head_cuts_the_response_after_upstream_read() {
    let (up, task) = raw_upstream(
        "[::1]:0",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        |stream| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(stream);
        },
    )
    .await;
    let p = TestProxy::start(&format!(
        "{}timeouts: {{upstreamRead: 300ms}}\n",
        default_backend_yaml(&[up])
    ))
    .await;
    for addr in [p.v4, p.v6] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .expect("the proxy kept the connection open past upstreamRead")
            .ok();
        let resp = String::from_utf8_lossy(&buf);
        assert_eq!(raw_status(&resp), 200, "{resp}");
        assert_eq!(
            raw_body(&resp),
            "0123456789",
            "the body must end incomplete"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    task.abort();
}

#[tokio::test]
async fn a_client_that_does_not_read_gets_the_upstream_dropped_after_client_write() {
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (up, task) = raw_upstream(
        "127.0.0.1:0",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        move |mut stream| {
            let closed_tx = closed_tx.clone();
            async move {
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b'x', 0x10000));
                chunk.extend_from_slice(b"\r\n");
                let started = Instant::now();
                // Streams until the proxy drops the connection (or for at most a minute).
                while started.elapsed() < Duration::from_secs(60) {
                    if stream.write_all(&chunk).await.is_err() {
                        let _ = closed_tx.send(started.elapsed());
                        return;
                    }
                }
            }
        },
    )
    .await;
    let p = TestProxy::start(&format!(
        "{}timeouts: {{clientWrite: 300ms}}\n",
        default_backend_yaml(&[up])
    ))
    .await;
    for addr in [p.v4, p.v6] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: x.test\r\n\r\n")
            .await
            .unwrap();
        // The client never reads; the upstream must see its connection dropped.
        let after = tokio::time::timeout(Duration::from_secs(20), closed_rx.recv())
            .await
            .expect("the upstream was not dropped while the client did not read")
            .unwrap();
        assert!(after >= Duration::from_millis(300), "{after:?}");
        drop(client);
    }
    task.abort();
}
