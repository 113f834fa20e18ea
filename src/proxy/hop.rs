//! Hop-by-hop header removal (RFC 9110 section 7.6.1).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that apply to one connection only and are never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The only upgrade protocol passed through: anything else (`h2c`, `TLS/1.0`, ...) would make the proxy
/// splice a protocol it does not understand, so those tokens are dropped from the request.
const FORWARDED_UPGRADE: &str = "websocket";

/// Removes `Connection`, every header it names (never `Host`, which is end-to-end and was used for
/// routing), and the fixed hop-by-hop headers. Returns the `Upgrade` value to pass on when the message asked
/// for a protocol upgrade (`Connection: upgrade` plus `Upgrade`) that names `websocket`.
pub fn strip(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // Most messages carry none of them: one pass over the names (comparisons, no hashing) settles that.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return None;
    }
    let mut upgrade_requested = false;
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| {
            let token = token.trim();
            if token.eq_ignore_ascii_case("upgrade") {
                upgrade_requested = true;
            }
            HeaderName::from_bytes(token.as_bytes())
                .ok()
                .filter(|name| *name != header::HOST)
        })
        .collect();
    let upgrade = if upgrade_requested {
        headers.get(header::UPGRADE).and_then(websocket_only)
    } else {
        None
    };
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    upgrade
}

/// The `Upgrade` value to forward: the value itself when it is `websocket`, `websocket` when the list
/// names it among others, else nothing.
fn websocket_only(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    if text.trim().eq_ignore_ascii_case(FORWARDED_UPGRADE) {
        return Some(value.clone());
    }
    text.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(FORWARDED_UPGRADE))
        .then(|| HeaderValue::from_static(FORWARDED_UPGRADE))
}

/// Puts back the two headers an HTTP/1.1 upgrade needs on the next hop.
pub fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-kept", "2"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        assert_eq!(
            strip(&mut h),
            None,
            "no upgrade without Connection: upgrade"
        );
        let left: Vec<_> = h.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn reports_requested_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(strip(&mut h), Some(HeaderValue::from_static("websocket")));
        assert!(h.is_empty());
    }

    #[test]
    fn only_websocket_upgrades_are_passed_on() {
        for (value, want) in [
            ("WebSocket", Some("WebSocket")),
            ("h2c", None),
            ("TLS/1.0", None),
            ("h2c, websocket", Some("websocket")),
        ] {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static("upgrade"));
            h.insert("upgrade", HeaderValue::from_static(value));
            assert_eq!(
                strip(&mut h),
                want.map(HeaderValue::from_static),
                "Upgrade: {value}"
            );
            assert!(h.is_empty(), "Upgrade: {value}");
        }
    }

    #[test]
    fn host_is_never_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Host, x-drop"));
        h.insert("host", HeaderValue::from_static("app.test"));
        h.insert("x-drop", HeaderValue::from_static("1"));
        assert_eq!(strip(&mut h), None);
        let left: Vec<_> = h.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(left, vec!["host"]);
    }
}
