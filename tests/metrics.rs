//! `/metrics` through real sockets on both families: request-duration histograms by listener family, status
//! class and backend (`-` when no backend was chosen), upstream-response histograms by endpoint family, and
//! the content type that matches the OpenMetrics body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::SocketAddr;

use support::{dead_addr, get, Seen, TestProxy, Upstream};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const DURATION: &str = "dualstack_ingress_request_duration_seconds";
const UPSTREAM: &str = "dualstack_ingress_upstream_response_seconds";

/// The value of the one sample named `name` that carries every label of `labels` (`key="value"`).
fn value(body: &str, name: &str, labels: &[&str]) -> f64 {
    let found: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one sample {name} {labels:?} in:\n{body}"
    );
    found[0]
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {:?}", found[0]))
}

/// Whether any sample named `name` carries every label of `labels`.
fn has(body: &str, name: &str, labels: &[&str]) -> bool {
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .any(|l| labels.iter().all(|want| l.contains(want)))
}

async fn metrics(admin: SocketAddr, accept: Option<&str>) -> Seen {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let seen = get(&format!("http://{admin}/metrics"), &headers).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    seen
}

#[tokio::test]
async fn request_and_upstream_histograms_by_family_and_backend_over_both_admin_families() {
    let up4 = Upstream::start("127.0.0.1:0").await;
    let up6 = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&format!(
        "admin: [\"127.0.0.1:0\", \"[::1]:0\"]\n\
         routes:\n\
         \x20 - paths:\n\
         \x20     - path: /api\n\
         \x20       backend: api\n\
         \x20     - path: /down\n\
         \x20       backend: down\n\
         backends:\n\
         \x20 api:\n\
         \x20   endpoints: [\"{}\", \"{}\"]\n\
         \x20 down:\n\
         \x20   endpoints: [\"{}\"]\n",
        up4.addr,
        up6.addr,
        dead_addr(false),
    ))
    .await;
    let admins = p.server().admin_addrs().to_vec();
    assert!(admins.iter().any(SocketAddr::is_ipv4), "{admins:?}");
    assert!(admins.iter().any(SocketAddr::is_ipv6), "{admins:?}");

    // Two requests per listener family; round robin sends them to both endpoint families.
    for v6 in [false, false, true, true] {
        assert_eq!(get(&p.url(v6, "/api/x"), &[]).await.status, 200);
    }
    assert_eq!((up4.hits(), up6.hits()), (2, 2));
    // No route: 404 before any backend is chosen.
    assert_eq!(get(&p.url(false, "/nothing"), &[]).await.status, 404);
    // Routed, but the endpoint refuses the connection: 502 under the backend, no upstream response time.
    assert_eq!(get(&p.url(true, "/down"), &[]).await.status, 502);

    for admin in &admins {
        let seen = metrics(*admin, None).await;
        let body = &seen.body;
        assert_eq!(
            seen.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(OPENMETRICS),
            "over {admin}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains(&format!("# TYPE {DURATION} histogram")),
            "{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {UPSTREAM} histogram")),
            "{body}"
        );

        for family in ["family=\"ipv4\"", "family=\"ipv6\""] {
            let api = [family, "code=\"2xx\"", "backend=\"api\""];
            assert_eq!(value(body, &format!("{DURATION}_count"), &api), 2.0);
            let all = [family, "code=\"2xx\"", "backend=\"api\"", "le=\"+Inf\""];
            assert_eq!(value(body, &format!("{DURATION}_bucket"), &all), 2.0);
            // ingress-nginx's buckets: 0.005 s up to 10 s.
            let top = [family, "code=\"2xx\"", "backend=\"api\"", "le=\"10.0\""];
            assert_eq!(value(body, &format!("{DURATION}_bucket"), &top), 2.0);
            assert!(has(
                body,
                &format!("{DURATION}_bucket"),
                &[family, "backend=\"api\"", "le=\"0.005\""]
            ));
            assert!(value(body, &format!("{DURATION}_sum"), &api) > 0.0);

            let endpoint = [family, "backend=\"api\""];
            assert_eq!(value(body, &format!("{UPSTREAM}_count"), &endpoint), 2.0);
            assert!(has(
                body,
                &format!("{UPSTREAM}_bucket"),
                &[family, "backend=\"api\"", "le=\"0.005\""]
            ));
        }
        let no_route = ["family=\"ipv4\"", "code=\"4xx\"", "backend=\"-\""];
        assert_eq!(value(body, &format!("{DURATION}_count"), &no_route), 1.0);
        assert!(!has(
            body,
            &format!("{DURATION}_count"),
            &["code=\"4xx\"", "backend=\"api\""]
        ));
        let down = ["family=\"ipv6\"", "code=\"5xx\"", "backend=\"down\""];
        assert_eq!(value(body, &format!("{DURATION}_count"), &down), 1.0);
        assert!(!has(
            body,
            &format!("{UPSTREAM}_count"),
            &["backend=\"down\""]
        ));

        // The counters stay as they were.
        assert_eq!(
            value(
                body,
                "dualstack_ingress_requests_total",
                &["family=\"ipv4\"", "code=\"4xx\""]
            ),
            1.0
        );
        assert_eq!(
            value(
                body,
                "dualstack_ingress_requests_total",
                &["family=\"ipv6\"", "code=\"2xx\""]
            ),
            2.0
        );
    }
}

#[tokio::test]
async fn the_content_type_is_openmetrics_whatever_the_client_accepts() {
    let up = Upstream::start("[::1]:0").await;
    let p = TestProxy::start(&format!(
        "admin: [\"127.0.0.1:0\", \"[::1]:0\"]\n{}",
        support::default_backend_yaml(&[up.addr])
    ))
    .await;
    let accepts = [
        None,
        // What Prometheus sends by default.
        Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
        Some("text/plain;version=0.0.4"),
        Some("*/*"),
    ];
    for admin in p.server().admin_addrs() {
        for accept in accepts {
            let seen = metrics(*admin, accept).await;
            assert_eq!(
                seen.headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some(OPENMETRICS),
                "over {admin} with Accept {accept:?}"
            );
            assert!(seen.body.ends_with("# EOF\n"), "{}", seen.body);
        }
    }
}
