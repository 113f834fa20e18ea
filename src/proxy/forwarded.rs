//! Forwarding headers: `X-Forwarded-*` and RFC 7239 `Forwarded`.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// What the proxy knows about the client side of one request.
pub struct ClientSide<'a> {
    /// The client's address, already canonical (IPv4-mapped IPv6 shown as IPv4).
    pub client: IpAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for (its `Host` or authority), if any.
    pub host: Option<&'a str>,
    /// Port of the listener the client connected to.
    pub listener_port: u16,
}

/// Appends the client to `X-Forwarded-For` and `Forwarded`, and sets `X-Forwarded-Proto`, `-Host` and
/// `-Port`.
pub fn apply(headers: &mut HeaderMap, side: &ClientSide<'_>) {
    let mut xff = joined(headers, &X_FORWARDED_FOR);
    if !xff.is_empty() {
        xff.push_str(", ");
    }
    let _ = write!(xff, "{}", side.client);
    set(headers, &X_FORWARDED_FOR, &xff);

    let mut fwd = joined(headers, &http::header::FORWARDED);
    if !fwd.is_empty() {
        fwd.push_str(", ");
    }
    match side.client {
        IpAddr::V4(ip) => {
            let _ = write!(fwd, "for={ip}");
        }
        IpAddr::V6(ip) => {
            let _ = write!(fwd, "for=\"[{ip}]\"");
        }
    }
    let _ = write!(fwd, ";proto={}", side.proto);
    if let Some(host) = side.host {
        fwd.push_str(";host=");
        push_token_or_quoted(&mut fwd, host);
    }
    set(headers, &http::header::FORWARDED, &fwd);

    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(side.proto),
    );
    match side.host.map(HeaderValue::from_str) {
        Some(Ok(v)) => {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        _ => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.insert(
        X_FORWARDED_PORT.clone(),
        HeaderValue::from(side.listener_port),
    );
}

/// All values of `name` joined with `, ` (the list form of RFC 9110 section 5.3).
fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(s);
        }
    }
    out
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

/// RFC 7239 values are tokens or quoted strings; a host with `:` or `[` must be quoted.
fn push_token_or_quoted(out: &mut String, value: &str) {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(is_tchar) {
        out.push_str(value);
    } else {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        client: &str,
        host: Option<&str>,
        existing: &[(&'static str, &'static str)],
    ) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in existing {
            h.append(*k, HeaderValue::from_static(v));
        }
        apply(
            &mut h,
            &ClientSide {
                client: client.parse().unwrap(),
                proto: "http",
                host,
                listener_port: 8080,
            },
        );
        h
    }

    #[test]
    fn ipv6_client_is_bare_in_xff_and_quoted_bracketed_in_forwarded() {
        let h = run("2001:db8::1", Some("[::1]:8080"), &[]);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=http;host=\"[::1]:8080\""
        );
        assert_eq!(h["x-forwarded-host"], "[::1]:8080");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn ipv4_client_appends_to_existing_lists() {
        let h = run(
            "192.0.2.7",
            Some("app.example.com"),
            &[
                ("x-forwarded-for", "203.0.113.1"),
                ("forwarded", "for=203.0.113.1"),
            ],
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.1, for=192.0.2.7;proto=http;host=app.example.com"
        );
    }
}
