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
///
/// Costs one pass over the names when the message has none of them, and one hashed removal per header
/// actually present otherwise: `Connection: keep-alive` or `close` (sent by browsers and by clients that
/// open a connection per request) removes one header and allocates nothing.
pub fn strip(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let present = fixed_present(headers);
    if present == 0 {
        return None;
    }
    let mut upgrade_requested = false;
    let mut names_others = false;
    for token in connection_tokens(headers) {
        upgrade_requested |= token.eq_ignore_ascii_case("upgrade");
        names_others |= names_another_present_header(headers, token);
    }
    let upgrade = if upgrade_requested {
        headers.get(header::UPGRADE).and_then(websocket_only)
    } else {
        None
    };
    if names_others {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|token| names_another_present_header(headers, token))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    upgrade
}

/// Which of [`HOP_BY_HOP`] `headers` holds, as a bit per index: one pass over the names, comparisons only.
fn fixed_present(headers: &HeaderMap) -> u8 {
    headers.keys().fold(0, |present, name| {
        match HOP_BY_HOP.iter().position(|hop| hop == name) {
            Some(i) => present | 1 << i,
            None => present,
        }
    })
}

/// The comma-separated tokens of every `Connection` value, trimmed.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether a `Connection` token names a header of `headers` outside the fixed list (never `Host`). The
/// lookup by `&str` is case-insensitive and allocates nothing; a token that is no header name finds none.
fn names_another_present_header(headers: &HeaderMap, token: &str) -> bool {
    !token.eq_ignore_ascii_case(header::HOST.as_str())
        && !HOP_BY_HOP
            .iter()
            .any(|hop| token.eq_ignore_ascii_case(hop.as_str()))
        && headers.contains_key(token)
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

    /// A header map of `pairs`, in order, repeated names appended.
    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(k, v) in pairs {
            h.append(k, HeaderValue::from_static(v));
        }
        h
    }

    /// The names left in `h`, in order.
    fn names(h: &HeaderMap) -> Vec<&str> {
        h.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-kept", "2"),
        ]);
        assert_eq!(
            strip(&mut h),
            None,
            "no upgrade without Connection: upgrade"
        );
        assert_eq!(names(&h), vec!["x-kept"]);
    }

    #[test]
    fn reports_requested_upgrade() {
        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
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
            let mut h = headers(&[("connection", "upgrade"), ("upgrade", value)]);
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
        let mut h = headers(&[
            ("connection", "Host, x-drop"),
            ("host", "app.test"),
            ("x-drop", "1"),
        ]);
        assert_eq!(strip(&mut h), None);
        assert_eq!(names(&h), vec!["host"]);
    }

    #[test]
    fn every_connection_line_counts_and_names_match_in_any_case() {
        let mut h = headers(&[
            ("connection", "close"),
            ("connection", " X-Secret ,, not a name, keep-alive"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("close", "a header that happens to be named close"),
            ("x-kept", "2"),
        ]);
        assert_eq!(strip(&mut h), None);
        assert_eq!(names(&h), vec!["x-kept"]);
    }

    #[test]
    fn connection_close_alone_removes_only_connection() {
        let mut h = headers(&[("connection", "close"), ("x-kept", "1")]);
        assert_eq!(strip(&mut h), None);
        assert_eq!(names(&h), vec!["x-kept"]);
    }
}
