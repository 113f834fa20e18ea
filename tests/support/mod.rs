//! Shared helpers for the integration tests: real upstream servers on loopback (both families), the proxy
//! started in-process from a YAML file, a real hyper client, and polling with a deadline.
#![allow(dead_code)]

pub mod certs;
#[cfg(feature = "kubernetes")]
pub mod kube_api;
pub mod running;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dualstack_ingress::server::Server;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Accepts connections on `bind` and runs `serve` on each in its own task, until the handle is aborted.
pub async fn spawn_server<F, Fut>(bind: &str, serve: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(bind.parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    serve_listener(listener, serve)
}

/// Like [`spawn_server`] on a listener already bound (e.g. to a port chosen for both families).
pub fn serve_listener<F, Fut>(
    listener: TcpListener,
    serve: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(stream));
        }
    });
    (addr, task)
}

/// Serves `handler` with HTTP/1.1 (upgrades allowed) on `bind`.
pub async fn spawn_http1_upstream<F, Fut, B>(
    bind: &str,
    handler: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    spawn_server(bind, move |stream| {
        let handler = handler.clone();
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handler))
                .with_upgrades()
                .await;
        }
    })
    .await
}

/// A configuration whose default backend `b` has `endpoints` (IPv6 bracketed by `SocketAddr`'s Display).
pub fn default_backend_yaml(endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "defaultBackend: b\nbackends:\n  b:\n    endpoints: [{}]\n",
        list.join(", ")
    )
}

/// A real HTTP/1.1 upstream on a loopback address.
///
/// Behaviour by path:
/// - `/echo...`: streams the request body back unchanged.
/// - `/delay/<ms>...`: waits `ms` milliseconds, then answers like the default.
/// - `/close...`: answers like the default with `Connection: close` (the next request needs a new connection).
/// - anything else: `upstream <addr>\n` followed by every request header as `name: value` lines (in order),
///   then `uri: <request-target>`.
///
/// Every response carries `x-upstream: <addr>`.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests served so far.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts one on `bind` (e.g. `"127.0.0.1:0"` or `"[::1]:0"`).
    pub async fn start(bind: &str) -> Upstream {
        let listener = TcpListener::bind(bind.parse::<SocketAddr>().unwrap())
            .await
            .unwrap();
        Upstream::on(listener)
    }

    /// Starts one on `listener`.
    pub fn on(listener: TcpListener) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let (addr, task) = serve_listener(listener, move |stream| {
            let counter = counter.clone();
            async move {
                let local = stream.local_addr().unwrap();
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    respond(local, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            }
        });
        Upstream { addr, hits, task }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn respond(addr: SocketAddr, req: Request<Incoming>) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_string();
    let mut resp = if path.starts_with("/echo") {
        Response::new(req.into_body().boxed())
    } else {
        if let Some(ms) = path
            .strip_prefix("/delay/")
            .and_then(|r| r.split('/').next())
        {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut text = format!("upstream {addr}\n");
        for (name, value) in req.headers() {
            text.push_str(&format!(
                "{}: {}\n",
                name,
                value.to_str().unwrap_or("<binary>")
            ));
        }
        text.push_str(&format!("uri: {}\n", req.uri()));
        Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        )
    };
    resp.headers_mut()
        .insert("x-upstream", addr.to_string().parse().unwrap());
    if path.starts_with("/close") {
        resp.headers_mut()
            .insert(http::header::CONNECTION, "close".parse().unwrap());
    }
    Ok(resp)
}

/// The `listen` key of [`TestProxy::start`]: plain loopback listeners of both families on free ports.
pub const LOOPBACK_LISTEN: &str = "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\n";

/// The proxy running in-process from a configuration file in a temporary directory.
pub struct TestProxy {
    /// The running server.
    pub server: Option<Server>,
    /// Its IPv4 data listener.
    pub v4: SocketAddr,
    /// Its IPv6 data listener.
    pub v6: SocketAddr,
    /// The configuration file (watched when started with [`TestProxy::start_watched`]).
    pub path: PathBuf,
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    watch: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    /// Starts the proxy on `127.0.0.1:0` and `[::1]:0` with `yaml`, which must not contain `listen`.
    pub async fn start(yaml: &str) -> TestProxy {
        Self::start_listen(LOOPBACK_LISTEN, yaml).await
    }

    /// Like [`TestProxy::start`] with the `listen` key given (`listen` must name one IPv4 and one IPv6
    /// address, e.g. maps with `proxyProtocol`).
    pub async fn start_listen(listen: &str, yaml: &str) -> TestProxy {
        let (dir, path, file) = Self::write_config_with(listen, yaml);
        let server = Server::start_with(&file.bootstrap, file.model)
            .await
            .unwrap();
        Self::assemble(server, dir, path, None)
    }

    /// Like [`TestProxy::start`], with the file as the configuration source: reloaded whenever it changes
    /// (and on SIGHUP), as the binary does.
    pub async fn start_watched(yaml: &str) -> TestProxy {
        let (dir, path, file) = Self::write_config(yaml);
        let (models, published) = tokio::sync::watch::channel(Some(Arc::new(file.model.clone())));
        let server = Server::start(&file.bootstrap, published).await.unwrap();
        let watch = dualstack_ingress::config::source::spawn(
            path.clone(),
            dualstack_ingress::config::Mode::Standalone,
            &file,
            models,
            server.metrics().clone(),
        )
        .unwrap();
        Self::assemble(server, dir, path, Some(watch))
    }

    /// Writes `yaml` with loopback listeners of both families into a new directory and loads it.
    fn write_config(
        yaml: &str,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        dualstack_ingress::config::ConfigFile,
    ) {
        Self::write_config_with(LOOPBACK_LISTEN, yaml)
    }

    fn write_config_with(
        listen: &str,
        yaml: &str,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        dualstack_ingress::config::ConfigFile,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        let full = format!("{listen}{yaml}");
        std::fs::write(&path, full).unwrap();
        let file = dualstack_ingress::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        (dir, path, file)
    }

    fn assemble(
        server: Server,
        dir: tempfile::TempDir,
        path: PathBuf,
        watch: Option<tokio::task::JoinHandle<()>>,
    ) -> TestProxy {
        let v4 = *server.data_addrs().iter().find(|a| a.is_ipv4()).unwrap();
        let v6 = *server.data_addrs().iter().find(|a| a.is_ipv6()).unwrap();
        TestProxy {
            server: Some(server),
            v4,
            v6,
            path,
            dir,
            watch,
        }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Replaces the configuration file atomically (write a temporary file, then rename), as editors and
    /// the kubelet do. `yaml` must not contain `listen`.
    pub fn rewrite(&self, yaml: &str) {
        let full = format!("listen: [\"127.0.0.1:0\", \"[::1]:0\"]\n{yaml}");
        let tmp = self.dir.path().join(".proxy.yaml.tmp");
        std::fs::write(&tmp, full).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    /// `http://127.0.0.1:P` or `http://[::1]:P` (from `SocketAddr`'s Display, which brackets IPv6).
    pub fn url(&self, v6: bool, path_and_query: &str) -> String {
        let addr = if v6 { self.v6 } else { self.v4 };
        format!("http://{addr}{path_and_query}")
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

/// A plain HTTP/1.1 hyper client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A hyper client that speaks HTTP/2 with prior knowledge (h2c).
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// What a client saw.
#[derive(Debug)]
pub struct Seen {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body as text.
    pub body: String,
}

/// Sends `req` and reads the whole answer.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Seen {
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Seen {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `url` with optional extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Seen {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(&client(), b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Polls `cond` until it holds or `limit` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback address with nothing listening on it: a socket stays bound to it without listening (for
/// the rest of the test process), so connects are refused and no other test can take the port.
pub fn dead_addr(v6: bool) -> SocketAddr {
    let bind: SocketAddr = if v6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.bind(&bind.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(socket);
    addr
}

/// A WebSocket upstream on `bind` that echoes every text and binary message until the client closes.
pub async fn websocket_echo_upstream(bind: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    spawn_server(bind, |stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    })
    .await
}
