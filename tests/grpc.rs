//! gRPC end to end with a real gRPC client and server (tonic): unary and server-streaming calls through
//! the proxy over h2c on both address families, and a proper gRPC status from a dead backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

/// The one message type: a text.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

const UNARY: &str = "/test.Echo/Unary";
const STREAM: &str = "/test.Echo/Stream";

struct Unary(SocketAddr);

impl UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Msg>, Status>> + Send>>;
    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        let text = format!("{} via {}", request.into_inner().text, self.0);
        Box::pin(async move { Ok(Response::new(Msg { text })) })
    }
}

struct Streaming;

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

impl ServerStreamingService<Msg> for Streaming {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MsgStream>, Status>> + Send>>;
    fn call(&mut self, request: Request<Msg>) -> Self::Future {
        let text = request.into_inner().text;
        let items: Vec<Result<Msg, Status>> = (0..5)
            .map(|i| {
                Ok(Msg {
                    text: format!("{text} #{i}"),
                })
            })
            .collect();
        Box::pin(async move {
            Ok(Response::new(
                Box::pin(tokio_stream::iter(items)) as MsgStream
            ))
        })
    }
}

/// A gRPC server speaking HTTP/2 (prior knowledge) on `bind`.
async fn grpc_upstream(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind.parse::<SocketAddr>().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let req = req.map(tonic::body::Body::new);
                    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
                    let resp = match req.uri().path() {
                        UNARY => grpc.unary(Unary(addr), req).await,
                        STREAM => grpc.server_streaming(Streaming, req).await,
                        _ => Status::unimplemented("no such method").into_http(),
                    };
                    Ok::<_, Infallible>(resp)
                },
            );
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn client(url: String) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn unary(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    text: &str,
) -> Result<String, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let resp = grpc
        .unary(
            Request::new(Msg {
                text: text.to_string(),
            }),
            PathAndQuery::from_static(UNARY),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await?;
    Ok(resp.into_inner().text)
}

fn backend_yaml(endpoints: &[SocketAddr]) -> String {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "defaultBackend: grpc\nbackends:\n  grpc:\n    protocol: h2c\n    endpoints: [{}]\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn unary_calls_pass_through_both_families_to_both_families() {
    let up4 = grpc_upstream("127.0.0.1:0").await;
    let up6 = grpc_upstream("[::1]:0").await;
    let p = TestProxy::start(&backend_yaml(&[up4, up6])).await;
    for v6 in [false, true] {
        let mut grpc = client(p.url(v6, "")).await;
        let mut served_by = Vec::new();
        for i in 0..4 {
            let text = unary(&mut grpc, &format!("hello {i}")).await.unwrap();
            assert!(text.starts_with(&format!("hello {i} via ")), "{text}");
            served_by.push(text.rsplit(' ').next().unwrap().to_string());
        }
        assert!(served_by.contains(&up4.to_string()), "{served_by:?}");
        assert!(served_by.contains(&up6.to_string()), "{served_by:?}");
    }
}

#[tokio::test]
async fn server_streaming_calls_deliver_every_message_and_the_status() {
    let up6 = grpc_upstream("[::1]:0").await;
    let p = TestProxy::start(&backend_yaml(&[up6])).await;
    for v6 in [false, true] {
        let mut grpc = client(p.url(v6, "")).await;
        grpc.ready().await.unwrap();
        let mut stream = grpc
            .server_streaming(
                Request::new(Msg {
                    text: "tick".into(),
                }),
                PathAndQuery::from_static(STREAM),
                ProstCodec::<Msg, Msg>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(msg) = stream.message().await.unwrap() {
            got.push(msg.text);
        }
        assert_eq!(
            got,
            (0..5).map(|i| format!("tick #{i}")).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn dead_backend_gives_grpc_status_unavailable() {
    let p = TestProxy::start(&backend_yaml(&[dead_addr(true), dead_addr(false)])).await;
    for v6 in [false, true] {
        let mut grpc = client(p.url(v6, "")).await;
        let status = unary(&mut grpc, "anyone?").await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
}

/// Connects every channel to `addr` over TLS (SNI `app.test`, ALPN h2), trusting only `roots`.
#[derive(Clone)]
struct TlsConnector {
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, config) = (self.addr, self.config.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[tokio::test]
async fn unary_calls_over_tls_http2_on_both_families() {
    let ca = support::certs::Ca::new();
    let leaf = ca.leaf(&["app.test"]);
    let up6 = grpc_upstream("[::1]:0").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(dir.path(), "app");
    let yaml = format!(
        "listenTls: [\"127.0.0.1:0\", \"[::1]:0\"]\ntls:\n  - hosts: [\"app.test\"]\n    cert: \"{}\"\n    key: \"{}\"\n{}",
        cert.display(),
        key.display(),
        backend_yaml(&[up6])
    );
    let p = TestProxy::start(&yaml).await;
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = std::sync::Arc::new(config);
    for &addr in p.server().tls_addrs() {
        let channel = tonic::transport::Endpoint::from_static("http://app.test")
            .connect_with_connector(TlsConnector {
                addr,
                config: config.clone(),
            })
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        let text = unary(&mut grpc, &format!("over TLS to {addr}"))
            .await
            .unwrap();
        assert_eq!(text, format!("over TLS to {addr} via {up6}"));
    }
    assert_eq!(p.server().tls_addrs().len(), 2);
}
