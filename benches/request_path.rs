//! The per-request work of the proxy that touches no socket (criterion): parse the authority, normalise
//! the path, look the route up, strip hop-by-hop headers and add the forwarding headers, on a copy of a
//! typical browser request's headers. A regression here shows without a load test.
//!
//! ```sh
//! cargo bench --bench request_path
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use dualstack_ingress::config;
use dualstack_ingress::proxy::{forwarded, hop};
use dualstack_ingress::routing::{self, Table};
use http::header::{HeaderMap, HeaderName, HeaderValue};

const CONFIG: &str = r#"
listen: ["127.0.0.1:0"]
routes:
  - host: app.example.com
    paths:
      - path: /api
        backend: api
      - path: /
        backend: web
  - host: "*.example.com"
    paths:
      - path: /
        backend: web
backends:
  api:
    endpoints: ["127.0.0.1:9001", "[::1]:9002"]
  web:
    endpoints: ["127.0.0.1:9003"]
"#;

/// The headers of a typical browser request (what hyper hands the proxy).
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("connection", "keep-alive"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn request_path(c: &mut Criterion) {
    let model = config::parse("bench.yaml", CONFIG).expect("valid").model;
    let table = Table::compile_fresh(&model);
    let headers = request_headers();
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    let v6: IpAddr = "2001:db8::7".parse().unwrap();
    let mut group = c.benchmark_group("request_path");
    for (name, client) in [("ipv4 client", v4), ("ipv6 client", v6)] {
        // Made once per client connection.
        let client = forwarded::PeerText::new(client);
        group.bench_function(name, |b| {
            let mut scratch = String::new();
            b.iter(|| {
                let mut h = headers.clone();
                let host = h
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let request_host = routing::host::parse(&host, &mut scratch);
                let path = routing::normalize::normalize("/api/v1/users/42").unwrap();
                let target = table.lookup(&request_host, &path).expect("routed");
                black_box(target);
                black_box(hop::strip(&mut h));
                forwarded::apply(
                    &mut h,
                    &forwarded::ClientSide {
                        client: &client,
                        proto: "http",
                        host: Some(&host),
                        listener_port: 8080,
                        trusted_peer: false,
                    },
                );
                h
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = request_path
}
criterion_main!(benches);
