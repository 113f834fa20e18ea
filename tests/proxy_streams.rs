//! Streaming through the proxy: chunked and long bodies both ways, WebSocket upgrades, h2c streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for any single wait in these tests (a hang fails instead of blocking forever).
const LIMIT: Duration = Duration::from_secs(10);

type TestBody = BoxBody<Bytes, Infallible>;

/// A body of unknown length fed from a channel: each message is one data frame.
fn channel_body(rx: mpsc::Receiver<Bytes>) -> TestBody {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// An HTTP/1.1 client whose request bodies can stream.
fn streaming_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Deterministic, non-repeating-looking bytes.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads the next data frame of `body`, skipping trailers; `None` at the end.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("no frame within the limit")?
            .expect("body error");
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Some(data);
            }
        }
    }
}

// ----- large and chunked bodies -----

#[tokio::test]
async fn five_mib_post_is_echoed_byte_identical_over_both_families() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let up6 = Upstream::start("[::1]:0").await;
    // Over the default limits.maxRequestBody (1 MiB): uploads this size need a larger one.
    let p = TestProxy::start(&format!(
        "limits:\n  maxRequestBody: 8388608\n{}",
        default_backend_yaml(&[up4.addr, up6.addr])
    ))
    .await;
    let payload = Bytes::from(pattern(5 * 1024 * 1024));
    let c = client();
    for v6 in [false, true, false, true] {
        let req = Request::post(p.url(v6, "/echo/large"))
            .body(Full::new(payload.clone()))
            .unwrap();
        let resp = tokio::time::timeout(LIMIT, c.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let got = tokio::time::timeout(LIMIT, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(got.len(), payload.len(), "client on ipv6={v6}");
        assert!(got == payload, "body changed in transit (ipv6={v6})");
    }
    assert!(up4.hits() >= 1 && up6.hits() >= 1);
}

#[tokio::test]
async fn chunked_request_body_is_echoed_intact_as_a_chunked_response() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[up.addr])).await;
    let c = streaming_client();
    for v6 in [false, true] {
        let chunks: Vec<Bytes> = (0..50)
            .map(|i| Bytes::from(format!("chunk {i:03} {}\n", "x".repeat(i * 97))))
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let (tx, rx) = mpsc::channel(4);
        let feeder = tokio::spawn(async move {
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let req = Request::post(p.url(v6, "/echo/chunked"))
            .body(channel_body(rx))
            .unwrap();
        let resp = tokio::time::timeout(LIMIT, c.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers().get("content-length").is_none(),
            "a body of unknown length came back with a length: {:?}",
            resp.headers()
        );
        assert_eq!(
            resp.headers()
                .get("transfer-encoding")
                .map(|v| v.to_str().unwrap()),
            Some("chunked")
        );
        let got = tokio::time::timeout(LIMIT, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
        feeder.await.unwrap();
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn request_body_reaches_upstream_before_the_client_finishes_it() {
    // The upstream reports the first chunk it reads, then echoes the rest of the body.
    let (first_tx, mut first_rx) = mpsc::channel::<Bytes>(4);
    let (up, task) = spawn_http1_upstream("127.0.0.1:0", move |req: Request<Incoming>| {
        let first_tx = first_tx.clone();
        async move {
            let mut body = req.into_body();
            let first = next_data(&mut body).await.unwrap_or_default();
            let _ = first_tx.send(first).await;
            let rest = body
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok(Response::new(Full::new(rest).boxed()))
        }
    })
    .await;
    let p = TestProxy::start(&default_backend_yaml(&[up])).await;
    let c = streaming_client();
    for v6 in [false, true] {
        let (tx, rx) = mpsc::channel(4);
        let req = Request::post(p.url(v6, "/stream-up"))
            .body(channel_body(rx))
            .unwrap();
        let pending = tokio::spawn(c.request(req));
        tx.send(Bytes::from_static(b"first part")).await.unwrap();
        let seen_first = tokio::time::timeout(LIMIT, first_rx.recv())
            .await
            .expect("the upstream did not get the first chunk while the client was still sending")
            .unwrap();
        assert_eq!(seen_first, "first part");
        tx.send(Bytes::from_static(b"second part")).await.unwrap();
        drop(tx);
        let resp = tokio::time::timeout(LIMIT, pending)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let rest = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(rest, "second part");
    }
    task.abort();
}

// ----- streaming responses -----

/// An upstream that answers one request with `first`, then holds the body open until `release` fires,
/// then sends `rest` and ends it.
async fn gated_upstream(
    bind: &str,
    first: &'static str,
    rest: &'static str,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let (addr, task) = spawn_http1_upstream(bind, move |_req: Request<Incoming>| {
        let release = release.clone();
        async move {
            let (tx, rx) = mpsc::channel(4);
            tx.send(Bytes::from_static(first.as_bytes())).await.unwrap();
            let gate = release.lock().unwrap().take();
            tokio::spawn(async move {
                if let Some(gate) = gate {
                    // Waits for the test; an error means the test is gone, so end the body anyway.
                    let _ = gate.await;
                }
                let _ = tx.send(Bytes::from_static(rest.as_bytes())).await;
            });
            Ok(Response::new(channel_body(rx)))
        }
    })
    .await;
    (addr, release_tx, task)
}

#[tokio::test]
async fn first_response_chunk_reaches_client_before_upstream_finishes() {
    for (client_v6, upstream_bind) in [(false, "[::1]:0"), (true, "127.0.0.1:0")] {
        let (up, release, task) = gated_upstream(upstream_bind, "first chunk;", "the rest.").await;
        let p = TestProxy::start(&default_backend_yaml(&[up])).await;
        let resp = tokio::time::timeout(
            LIMIT,
            client().request(
                Request::get(p.url(client_v6, "/slow-body"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            ),
        )
        .await
        .expect("response head did not arrive while the upstream body was open")
        .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        // The upstream cannot send more until `release` fires, so this chunk was streamed, not buffered.
        let first = next_data(&mut body).await.expect("body ended early");
        assert_eq!(first, "first chunk;");
        assert!(!release.is_closed(), "the upstream stopped waiting");
        release.send(()).unwrap();
        let mut rest = Vec::new();
        while let Some(data) = next_data(&mut body).await {
            rest.extend_from_slice(&data);
        }
        assert_eq!(String::from_utf8_lossy(&rest), "the rest.");
        task.abort();
    }
}

// ----- WebSocket -----

#[tokio::test]
async fn websocket_upgrade_is_spliced_through_on_both_families() {
    let (ws4, task4) = websocket_echo_upstream("127.0.0.1:0").await;
    let (ws6, task6) = websocket_echo_upstream("[::1]:0").await;
    let p = TestProxy::start(&default_backend_yaml(&[ws4, ws6])).await;
    // Two connections per client family, so round robin takes each client family to both upstreams.
    for (i, v6) in [false, false, true, true].into_iter().enumerate() {
        let addr = if v6 { p.v6 } else { p.v4 };
        let url = format!("ws://{addr}/ws");
        let (mut ws, resp) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(&url))
            .await
            .expect("handshake timed out")
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(resp.status(), 101);
        for n in 0..3 {
            let text = format!("hello {i}.{n} over {url}");
            ws.send(Message::text(text.clone())).await.unwrap();
            let echoed = tokio::time::timeout(LIMIT, ws.next())
                .await
                .expect("no echo")
                .expect("stream ended")
                .unwrap();
            assert_eq!(echoed, Message::text(text));
        }
        let binary = Bytes::from(pattern(100_000));
        ws.send(Message::binary(binary.clone())).await.unwrap();
        let echoed = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("no echo")
            .expect("stream ended")
            .unwrap();
        assert_eq!(echoed, Message::binary(binary));
        ws.close(None).await.unwrap();
    }
    task4.abort();
    task6.abort();
}
