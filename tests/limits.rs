//! The `limits:` section through real sockets on both families: the connection limit per listener (reached,
//! counted, recovered; an upgraded WebSocket keeps its slot until it closes), the request body limit (413, nothing complete reaches the upstream) over HTTP/1 and
//! HTTP/2, the HTTP/2 protections against rapid reset and CONTINUATION floods (raw frames, so nothing
//! normalises the attack), and configuration errors naming FILE:LINE:COLUMN.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long any single wait in these tests may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

// ----- an upstream that reads every body to its end before answering -----

/// Counts request heads and complete bodies (with their sizes); answers `got N bytes` once the whole body
/// has arrived.
struct CountingUpstream {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
    complete: Arc<Mutex<Vec<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingUpstream {
    async fn start(bind: &str) -> CountingUpstream {
        let heads = Arc::new(AtomicUsize::new(0));
        let complete: Arc<Mutex<Vec<usize>>> = Arc::default();
        let (h, c) = (heads.clone(), complete.clone());
        let (addr, task) = spawn_http1_upstream(bind, move |req: Request<Incoming>| {
            let (h, c) = (h.clone(), c.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let resp = match req.into_body().collect().await {
                    Ok(body) => {
                        let n = body.to_bytes().len();
                        c.lock().unwrap().push(n);
                        Response::new(Full::new(Bytes::from(format!("got {n} bytes"))))
                    }
                    Err(_) => Response::builder()
                        .status(StatusCode::BAD_REQUEST)
                        .body(Full::new(Bytes::from_static(b"incomplete body")))
                        .unwrap(),
                };
                Ok::<_, Infallible>(resp)
            }
        })
        .await;
        CountingUpstream {
            addr,
            heads,
            complete,
            task,
        }
    }

    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    fn complete(&self) -> Vec<usize> {
        self.complete.lock().unwrap().clone()
    }
}

// ----- clients -----

type AnyBody = BoxBody<Bytes, Infallible>;

fn body_client(http2: bool) -> Client<HttpConnector, AnyBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(HttpConnector::new())
}

/// A body of `len` bytes with a declared length (`Content-Length`).
fn sized(len: usize) -> AnyBody {
    Full::new(Bytes::from(vec![b'x'; len])).boxed()
}

/// A body of `chunks` chunks of `size` bytes and no declared length (HTTP/1 chunked, HTTP/2 DATA frames
/// without `content-length`).
fn unsized_body(chunks: usize, size: usize) -> AnyBody {
    let frames =
        (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'y'; size]))));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// POSTs `body` to `url` and returns the status and body text; `None` when the exchange failed.
async fn post(
    client: &Client<HttpConnector, AnyBody>,
    url: &str,
    body: AnyBody,
) -> Option<(StatusCode, String)> {
    let req = Request::post(url).body(body).unwrap();
    let resp = tokio::time::timeout(LIMIT, client.request(req))
        .await
        .expect("no answer within the limit")
        .ok()?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = tokio::time::timeout(LIMIT, resp.into_body().collect())
        .await
        .expect("no body within the limit")
        .ok()?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        assert_eq!(
            content_type.as_deref(),
            Some("text/plain; charset=utf-8"),
            "{text}"
        );
    }
    Some((status, text))
}

// ----- the connection limit -----

/// The value of `dualstack_ingress_connections_over_limit_total` for `family` on `admin`'s `/metrics`.
async fn over_limit(admin: SocketAddr, family: &str) -> u64 {
    let seen = get(&format!("http://{admin}/metrics"), &[]).await;
    let prefix = format!("dualstack_ingress_connections_over_limit_total{{family=\"{family}\"}} ");
    seen.body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{}", seen.body))
        .trim()
        .parse()
        .unwrap()
}

/// Sends one keep-alive GET on `stream` and returns the status, reading the head and its
/// `content-length` body; `None` when the connection closed (or was reset) without an answer.
/// Waits (up to `LIMIT`) until a new connection to `addr` gets a 200.
async fn wait_served(addr: SocketAddr, what: &str) {
    wait_until(what, LIMIT, || async {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        keep_alive_get(&mut s).await == Some(200)
    })
    .await;
}

async fn keep_alive_get(stream: &mut TcpStream) -> Option<u16> {
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: limits.test\r\n\r\n")
        .await;
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    return head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("neither an answer nor a close within the limit")
}

#[tokio::test]
async fn connection_limit_closes_extra_connections_counts_them_and_recovers() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&format!(
        "admin: \"127.0.0.1:0\"\nlimits:\n  maxConnections: 3\n{}",
        default_backend_yaml(&[up.addr])
    ))
    .await;
    let admin = p.server().admin_addr().unwrap();
    for (addr, family, other) in [(p.v4, "ipv4", p.v6), (p.v6, "ipv6", p.v4)] {
        // Three connections, each proven admitted by an answered request, and kept open.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(keep_alive_get(&mut s).await, Some(200), "{family}");
            held.push(s);
        }
        let before = over_limit(admin, family).await;

        // A fourth is accepted and closed at once, with no answer, and counted.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            keep_alive_get(&mut extra).await,
            None,
            "{family}: a fourth connection was served"
        );
        wait_until("the refused connection is counted", LIMIT, || async {
            over_limit(admin, family).await > before
        })
        .await;

        // Each listener has its own limit: the other family's listener still serves (once the previous
        // round's connections to it have closed).
        wait_served(other, "the listener of the other family serves").await;

        // The held connections still work.
        assert_eq!(keep_alive_get(&mut held[0]).await, Some(200), "{family}");

        // Closing one frees its slot: a new connection is served again.
        drop(held.pop());
        wait_served(addr, "a new connection is served after one closed").await;
        drop(held);
    }
}

#[tokio::test]
async fn an_upgraded_connection_keeps_its_slot_until_it_closes() {
    let up = Upstream::start("127.0.0.1:0").await;
    let (ws_up, _task) = websocket_echo_upstream("[::1]:0").await;
    let p = TestProxy::start(&format!(
        "admin: \"[::1]:0\"\nlimits:\n  maxConnections: 1\nroutes:\n  - paths:\n      - path: /ws\n        backend: ws\n\
         defaultBackend: b\nbackends:\n  ws:\n    endpoints: [\"{ws_up}\"]\n  b:\n    endpoints: [\"{}\"]\n",
        up.addr
    ))
    .await;
    let admin = p.server().admin_addr().unwrap();
    for (addr, family) in [(p.v4, "ipv4"), (p.v6, "ipv6")] {
        let url = format!("ws://{addr}/ws");
        let (mut ws, resp) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(&url))
            .await
            .expect("handshake timed out")
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("spliced")).await.unwrap();
        let echoed = tokio::time::timeout(LIMIT, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text("spliced"));

        // The WebSocket is the listener's one connection, although HTTP is done with it.
        let before = over_limit(admin, family).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            keep_alive_get(&mut s).await,
            None,
            "{family}: served beside the WebSocket"
        );
        assert!(over_limit(admin, family).await > before);

        ws.close(None).await.unwrap();
        drop(ws);
        wait_served(addr, "a connection is served after the WebSocket closed").await;
    }
}

// ----- the request body limit -----

const BODY_LIMIT: usize = 1000;

async fn body_limited_proxy(up: &CountingUpstream) -> TestProxy {
    TestProxy::start(&format!(
        "limits:\n  maxRequestBody: {BODY_LIMIT}\n{}",
        default_backend_yaml(&[up.addr])
    ))
    .await
}

#[tokio::test]
async fn declared_body_over_the_limit_gets_413_and_the_upstream_sees_nothing() {
    let up = CountingUpstream::start("[::1]:0").await;
    let p = body_limited_proxy(&up).await;
    for http2 in [false, true] {
        let c = body_client(http2);
        for v6 in [false, true] {
            let url = p.url(v6, "/upload");
            // Just over, and far over (more than the sockets buffer).
            for len in [BODY_LIMIT + 1, 4 * 1024 * 1024] {
                let (status, text) = post(&c, &url, sized(len))
                    .await
                    .unwrap_or_else(|| panic!("no answer to {len} bytes (http2={http2}, v6={v6})"));
                assert_eq!(status, 413, "{len} bytes (http2={http2}, v6={v6}): {text}");
                assert!(
                    text.starts_with("413 ")
                        && text.contains(&format!("larger than {BODY_LIMIT} bytes")),
                    "{text}"
                );
            }
            assert_eq!(
                up.heads(),
                0,
                "the upstream saw a request (http2={http2}, v6={v6})"
            );

            // At the limit: forwarded whole.
            let (status, text) = post(&c, &url, sized(BODY_LIMIT)).await.unwrap();
            assert_eq!(
                (status, text.as_str()),
                (StatusCode::OK, "got 1000 bytes"),
                "http2={http2}, v6={v6}"
            );
            assert_eq!(up.complete().last(), Some(&BODY_LIMIT));
            let before = up.heads();
            // An empty GET is never refused.
            assert_eq!(get(&p.url(v6, "/"), &[]).await.status, 200);
            assert_eq!(up.heads(), before + 1);
            // Reset for the next round.
            up.heads.store(0, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn curl_upload_over_the_limit_gets_413_without_sending_the_body() {
    let up = CountingUpstream::start("127.0.0.1:0").await;
    let p = body_limited_proxy(&up).await;
    let file = p.dir.path().join("upload.bin");
    std::fs::write(&file, vec![b'z'; 2 * 1024 * 1024]).unwrap();
    for v6 in [false, true] {
        // curl asks `Expect: 100-continue` for a body this large and waits for the answer.
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "-g",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(p.url(v6, "/upload"))
            .output()
            .await
            .expect("curl is installed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.ends_with("\n413") && stdout.contains("larger than 1000 bytes"),
            "v6={v6}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(up.heads(), 0, "the upstream saw a request");
}

#[tokio::test]
async fn undeclared_body_over_the_limit_gets_413_and_no_complete_request_reaches_the_upstream() {
    let up = CountingUpstream::start("127.0.0.1:0").await;
    let p = body_limited_proxy(&up).await;
    for http2 in [false, true] {
        let c = body_client(http2);
        for v6 in [false, true] {
            let url = p.url(v6, "/stream");
            // 10 x 300 bytes: the limit is passed in the fourth chunk.
            let (status, text) = post(&c, &url, unsized_body(10, 300))
                .await
                .unwrap_or_else(|| panic!("no answer (http2={http2}, v6={v6})"));
            assert_eq!(status, 413, "http2={http2}, v6={v6}: {text}");
            assert!(
                text.contains(&format!("larger than {BODY_LIMIT} bytes")),
                "{text}"
            );
            assert!(
                up.complete().is_empty(),
                "the upstream got a complete body: {:?}",
                up.complete()
            );

            // Under the limit without a declared length: forwarded whole.
            let (status, text) = post(&c, &url, unsized_body(3, 300)).await.unwrap();
            assert_eq!(
                (status, text.as_str()),
                (StatusCode::OK, "got 900 bytes"),
                "http2={http2}, v6={v6}"
            );
            assert_eq!(up.complete(), [900]);
            up.complete.lock().unwrap().clear();
        }
    }
}

// ----- HTTP/2 attacks, as raw frames -----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `GET http://limits.test/`: static-table entries and one literal (no dynamic table).
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 11];
    b.extend_from_slice(b"limits.test");
    b
}

/// One valid header field (`x-flood: xx`, a literal without indexing), as a flood carries in each frame.
fn flood_field() -> Vec<u8> {
    let mut f = vec![0x00, 7];
    f.extend_from_slice(b"x-flood");
    f.push(2);
    f.extend_from_slice(b"xx");
    f
}

/// The client preface and an empty SETTINGS frame.
fn opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// Reads one frame: its type, flags and payload; `None` at EOF or on a reset connection.
async fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

/// Reads frames until a GOAWAY: its error code and debug data. Fails when the connection ends without one
/// or none arrives within the limit.
async fn goaway(s: &mut TcpStream, what: &str) -> (u32, String) {
    let read = async {
        while let Some((kind, _, payload)) = read_frame(s).await {
            if kind == GOAWAY {
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                return Some((code, String::from_utf8_lossy(&payload[8..]).into_owned()));
            }
        }
        None
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the connection stayed open without a GOAWAY"))
        .unwrap_or_else(|| panic!("{what}: the connection ended without a GOAWAY"))
}

/// Waits until the peer has closed `s` (EOF or reset), discarding what arrives.
async fn closed(s: &mut TcpStream, what: &str) {
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(LIMIT, drain)
        .await
        .unwrap_or_else(|_| panic!("{what}: the connection stayed open"));
}

/// Requests over HTTP/1 and HTTP/2 on both families succeed.
async fn still_serving(p: &TestProxy, what: &str) {
    for v6 in [false, true] {
        assert_eq!(
            get(&p.url(v6, "/"), &[]).await.status,
            200,
            "{what}: HTTP/1 v6={v6}"
        );
        let seen = send(
            &h2c_client(),
            Request::get(p.url(v6, "/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(seen.status, 200, "{what}: HTTP/2 v6={v6}");
    }
}

#[tokio::test]
async fn http2_rapid_reset_gets_goaway_and_the_proxy_keeps_serving() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // 500 streams, each opened and at once cancelled, in one burst.
        let mut attack = opening();
        for i in 0..500u32 {
            let id = 2 * i + 1;
            attack.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &get_block()));
            attack.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        s.write_all(&attack).await.unwrap();
        let (code, debug) = goaway(&mut s, &format!("rapid reset to {addr}")).await;
        assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY {code:#x} {debug:?}");
        closed(&mut s, "after the rapid-reset GOAWAY").await;
        still_serving(&p, "after a rapid reset").await;
    }
}

#[tokio::test]
async fn http2_continuation_flood_gets_goaway_and_the_proxy_keeps_serving() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    for addr in [p.v4, p.v6] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames without it.
        let mut attack = opening();
        attack.extend(frame(HEADERS, END_STREAM, 1, &get_block()));
        for _ in 0..100 {
            attack.extend(frame(CONTINUATION, 0, 1, &flood_field()));
        }
        s.write_all(&attack).await.unwrap();
        let (code, debug) = goaway(&mut s, &format!("CONTINUATION flood to {addr}")).await;
        assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY {code:#x} {debug:?}");
        // Keep flooding: the connection is gone, so the writes fail before the limit.
        let flood = frame(CONTINUATION, 0, 1, &flood_field()).repeat(1000);
        let keep_writing = async {
            loop {
                if s.write_all(&flood).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(LIMIT, keep_writing)
            .await
            .expect("the flooded connection still accepted data");
        still_serving(&p, "after a CONTINUATION flood").await;
    }
}

#[tokio::test]
async fn http2_settings_carry_the_configured_limits() {
    let up = Upstream::start("127.0.0.1:0").await;
    let p = TestProxy::start(&format!(
        "limits:\n  http2MaxConcurrentStreams: 7\n  http2MaxHeaderListSize: 4096\n{}",
        default_backend_yaml(&[up.addr])
    ))
    .await;
    for addr in [p.v4, p.v6] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&opening()).await.unwrap();
        let (kind, _, payload) = tokio::time::timeout(LIMIT, read_frame(&mut s))
            .await
            .unwrap()
            .expect("no SETTINGS from the proxy");
        assert_eq!(kind, SETTINGS);
        let settings: Vec<(u16, u32)> = payload
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect();
        // SETTINGS_MAX_CONCURRENT_STREAMS (3) and SETTINGS_MAX_HEADER_LIST_SIZE (6).
        assert!(settings.contains(&(3, 7)), "{settings:?}");
        assert!(settings.contains(&(6, 4096)), "{settings:?}");

        // A header list over the limit is refused, and the stream never reaches the upstream.
        let before = up.hits();
        let mut block = get_block();
        // A literal header without indexing, new name: "x-big" with a 5000-byte value.
        block.extend_from_slice(&[0x00, 5]);
        block.extend_from_slice(b"x-big");
        block.extend_from_slice(&[
            0x7f,
            (5000 - 127) as u8 & 0x7f | 0x80,
            ((5000 - 127) >> 7) as u8,
        ]);
        block.extend(std::iter::repeat_n(b'v', 5000));
        let mut out = frame(SETTINGS, 1, 0, &[]); // ACK the proxy's settings
        out.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &block));
        s.write_all(&out).await.unwrap();
        // h2 answers 431 (`:status` as a Huffman-coded literal: 0x83 0x69 0x90 0xff) and ends the stream.
        let answer = async {
            while let Some((kind, flags, payload)) = read_frame(&mut s).await {
                if kind == HEADERS || kind == RST_STREAM {
                    return Some((kind, flags, payload));
                }
            }
            None
        };
        let (kind, flags, payload) = tokio::time::timeout(LIMIT, answer)
            .await
            .expect("an oversized header list was not answered")
            .expect("the connection ended without an answer");
        assert_eq!(
            (kind, flags & END_STREAM),
            (HEADERS, END_STREAM),
            "{payload:x?}"
        );
        assert!(
            payload.windows(4).any(|w| w == [0x83, 0x69, 0x90, 0xff])
                || payload.windows(3).any(|w| w == b"431"),
            "not a 431: {payload:x?}"
        );
        assert_eq!(
            up.hits(),
            before,
            "an oversized header list reached the upstream"
        );
    }
}

// ----- configuration errors -----

fn check(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(support::running::BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `file:LINE:COLUMN:` of the first occurrence of `value` on the line that contains `key`.
fn at(file: &str, text: &str, key: &str, value: &str) -> String {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(key))
        .unwrap();
    let col = line.find(value).unwrap() + 1;
    format!("{file}:{}:{col}:", i + 1)
}

#[test]
fn bad_limits_are_errors_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = "listen: [\"127.0.0.1:0\"]\nlimits:\n  maxConnections: 0\n  maxRequestBody: -5\n  http2MaxConcurrentStreams: 0\n  http2MaxHeaderListSize: 10\n  http2MaxPendingAcceptResetStreams: 0\n  http2MaxLocalErrorResetStreams: 99999999\n";
    std::fs::write(dir.path().join("bad.yaml"), text).unwrap();
    let (code, stderr) = check(dir.path(), &["--config", "bad.yaml", "--check"]);
    assert_eq!(code, Some(1), "{stderr}");
    for (key, value) in [
        ("maxConnections", "0"),
        ("maxRequestBody", "-5"),
        ("http2MaxConcurrentStreams", "0"),
        ("http2MaxHeaderListSize", "10"),
        ("http2MaxPendingAcceptResetStreams", "0"),
        ("http2MaxLocalErrorResetStreams", "99999999"),
    ] {
        let prefix = format!(
            "{} limits.{key}",
            at("bad.yaml", text, &format!("{key}:"), value)
        );
        assert!(
            stderr.lines().any(|l| l.starts_with(&prefix)),
            "no line starting {prefix:?} in:\n{stderr}"
        );
    }

    // An unknown key is an error at the key, and so is a value that is not a number.
    let typo = "limits:\n  maxBodySize: 5\n";
    std::fs::write(dir.path().join("typo.yaml"), typo).unwrap();
    let (code, stderr) = check(dir.path(), &["--config", "typo.yaml", "--check"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("typo.yaml:2:3: ") && stderr.contains("maxBodySize"),
        "{stderr}"
    );
    let words = "limits:\n  maxRequestBody: 1m\n";
    std::fs::write(dir.path().join("words.yaml"), words).unwrap();
    let (code, stderr) = check(dir.path(), &["--config", "words.yaml", "--check"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("words.yaml:2:19: "), "{stderr}");
}

#[test]
fn kubernetes_mode_accepts_limits() {
    let dir = tempfile::tempdir().unwrap();
    let text = "listen: [\"127.0.0.1:0\"]\nlimits:\n  maxConnections: 100\n  maxRequestBody: 0\n  http2MaxConcurrentStreams: 50\n";
    std::fs::write(dir.path().join("controller.yaml"), text).unwrap();
    let (code, stderr) = check(
        dir.path(),
        &["--kubernetes", "--config", "controller.yaml", "--check"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let file = dualstack_ingress::config::load_for(
        &dir.path().join("controller.yaml"),
        dualstack_ingress::config::Mode::Kubernetes,
    )
    .unwrap();
    assert_eq!(file.bootstrap.limits.max_connections, 100);
    assert_eq!(file.bootstrap.limits.http2_max_concurrent_streams, 50);
    assert_eq!(file.model.max_request_body, None);

    // In that mode an unknown key under limits is still an error.
    std::fs::write(
        dir.path().join("typo.yaml"),
        "limits:\n  maxConections: 5\n",
    )
    .unwrap();
    let (code, stderr) = check(
        dir.path(),
        &["--kubernetes", "--config", "typo.yaml", "--check"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("typo.yaml:2:3: "), "{stderr}");
}
