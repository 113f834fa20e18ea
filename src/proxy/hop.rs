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

/// Removes `Connection`, every header it names, and the fixed hop-by-hop headers. Returns the `Upgrade`
/// value when the message asked for a protocol upgrade (`Connection: upgrade` plus `Upgrade`).
pub fn strip(headers: &mut HeaderMap) -> Option<HeaderValue> {
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
            HeaderName::from_bytes(token.as_bytes()).ok()
        })
        .collect();
    let upgrade = if upgrade_requested {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    upgrade
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
}
