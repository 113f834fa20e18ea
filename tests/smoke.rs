//! The smallest end-to-end check: a client of each family reaches upstreams of both families.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test
mod support;
use support::*;

#[tokio::test]
async fn both_families_reach_both_families() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let up6 = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&format!(
        "defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{}\", \"{}\"]\n",
        up4.addr, up6.addr
    ))
    .await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/x?q=1"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    assert_eq!(up4.hits() + up6.hits(), 2);
}
