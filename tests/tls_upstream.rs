//! TLS upstreams: `protocol: https` (HTTP/1.1 over TLS) and `protocol: h2` (ALPN h2), verified against a
//! `ca` bundle, with endpoints of both families; a certificate from another CA gets 502.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use support::certs::{tls_upstream, Ca};
use support::*;

#[tokio::test]
async fn https_and_h2_upstreams_of_both_families_are_verified_against_the_ca() {
    let ca = Ca::new();
    let other_ca = Ca::new();
    let leaf = ca.leaf(&["127.0.0.1", "::1"]);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca_file = other_ca.write(other_dir.path());
    let (up4, _serving4) = tls_upstream("127.0.0.1:0", &leaf).await;
    let (up6, _serving6) = tls_upstream("[::1]:0", &leaf).await;
    let eps = format!("[\"{up4}\", \"{up6}\"]");
    let yaml = format!(
        "routes:\n  - paths:\n      - path: /h1\n        backend: h1\n      - path: /h2\n        backend: h2\n      - path: /untrusted\n        backend: untrusted\n\
         backends:\n  h1:\n    protocol: https\n    ca: \"{ca}\"\n    endpoints: {eps}\n\
         \x20 h2:\n    protocol: h2\n    ca: \"{ca}\"\n    endpoints: {eps}\n\
         \x20 untrusted:\n    protocol: https\n    ca: \"{other}\"\n    endpoints: {eps}\n",
        ca = ca_file.display(),
        other = other_ca_file.display(),
    );
    let p = TestProxy::start(&yaml).await;
    for v6 in [false, true] {
        // Two requests each, so round robin reaches the IPv4 and the IPv6 endpoint.
        for _ in 0..2 {
            let seen = get(&p.url(v6, "/h1"), &[]).await;
            assert_eq!(seen.status, 200, "{}", seen.body);
            assert_eq!(seen.body, "tls upstream HTTP/1.1 /h1\n");
            let seen = get(&p.url(v6, "/h2"), &[]).await;
            assert_eq!(seen.status, 200, "{}", seen.body);
            assert_eq!(seen.body, "tls upstream HTTP/2.0 /h2\n");
        }
        let seen = get(&p.url(v6, "/untrusted"), &[]).await;
        assert_eq!(seen.status, 502, "{}", seen.body);
    }
}
