//! Forwarding headers: `X-Forwarded-*` and RFC 7239 `Forwarded`.

use std::net::{IpAddr, SocketAddr};

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The address of a client connection's peer as the forwarding headers write it, made once per connection
/// (formatting an address costs more than the rest of the headers together, and a keep-alive connection
/// carries many requests).
#[derive(Debug, Clone)]
pub struct PeerText {
    /// The `X-Forwarded-For` element: `192.0.2.1`, `2001:db8::1`.
    xff: HeaderValue,
    /// The `Forwarded` node (RFC 7239 section 6): `for=192.0.2.1`, `for="[2001:db8::1]"`.
    forwarded_for: HeaderValue,
}

impl PeerText {
    /// The text of `ip`, which should be canonical (IPv4-mapped IPv6 shown as IPv4).
    ///
    /// Both values share one buffer: `for=192.0.2.1` or `for="[2001:db8::1]"`, the `X-Forwarded-For`
    /// element being the address inside it. IPv6 text is `Ipv6Addr`'s `Display` (RFC 5952); IPv4 is written
    /// digit by digit, which costs a tenth of `core::fmt` and is paid by every new connection.
    pub fn new(ip: IpAddr) -> Self {
        const V4_PREFIX: &[u8] = b"for=";
        const V6_PREFIX: &[u8] = b"for=\"[";
        let mut text = Vec::with_capacity(V6_PREFIX.len() + 41);
        let (start, end) = match ip {
            IpAddr::V4(v4) => {
                text.extend_from_slice(V4_PREFIX);
                push_ipv4(&mut text, v4);
                (V4_PREFIX.len(), text.len())
            }
            IpAddr::V6(v6) => {
                use std::io::Write as _;
                text.extend_from_slice(V6_PREFIX);
                // Writing to a Vec cannot fail.
                let _ = write!(text, "{v6}");
                let end = text.len();
                text.extend_from_slice(b"]\"");
                (V6_PREFIX.len(), end)
            }
        };
        let forwarded_for = bytes::Bytes::from(text);
        let xff = forwarded_for.slice(start..end);
        // The text of an address is always a valid header value.
        let valid = |text: bytes::Bytes| {
            HeaderValue::from_maybe_shared(text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        PeerText {
            xff: valid(xff),
            forwarded_for: valid(forwarded_for),
        }
    }
}

/// Appends the dotted-decimal text of `ip` (`192.0.2.1`), as `Ipv4Addr`'s `Display` writes it.
fn push_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

/// `text` as a header value, without copying it, if it is a valid one.
fn header_value(text: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// What the proxy knows about the client side of one request.
pub struct ClientSide<'a> {
    /// The peer's address (the client's, or the last proxy's), as text.
    pub client: &'a PeerText,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for (its `Host` or authority), if any.
    pub host: Option<&'a str>,
    /// Port of the listener the client connected to.
    pub listener_port: u16,
    /// Whether the peer is a trusted proxy: its `X-Forwarded-Proto`, `-Host` and `-Port` are kept.
    pub trusted_peer: bool,
}

/// Whether `ip` is in one of `ranges`.
pub fn is_trusted(ip: IpAddr, ranges: &[IpNet]) -> bool {
    ranges.iter().any(|r| r.contains(&ip))
}

/// The client address of a request from `peer` (canonical): the peer itself, or, when the peer is in
/// `trusted`, the rightmost `X-Forwarded-For` entry that is not. When every entry is trusted, the leftmost
/// one; an entry that is not an address ends the walk at the hop to its right.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    // Later header lines come after earlier ones in the list; walk all of them from the right.
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','));
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            return ip;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: `a.b.c.d`, `2001:db8::1`, `[2001:db8::1]`, or either with a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = match entry.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match entry.parse::<SocketAddr>() {
            Ok(sa) => sa.ip(),
            Err(_) => entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))?
                .parse()
                .ok()?,
        },
    };
    Some(ip.to_canonical())
}

/// Appends the client to `X-Forwarded-For` and `Forwarded`, and sets `X-Forwarded-Proto`, `-Host` and
/// `-Port` (a trusted peer's own values of these are kept). Each header is looked up once (one hash of
/// its name through the entry API), and the text of both lists is built in one buffer.
pub fn apply(headers: &mut HeaderMap, side: &ClientSide<'_>) {
    append_to_list(headers, &X_FORWARDED_FOR, side.client.xff.clone(), |_| true);

    let node = side.client.forwarded_for.as_bytes();
    // `;proto=` and the proto, `;host=` and the host, perhaps quoted.
    let capacity = node.len() + 7 + side.proto.len() + side.host.map_or(0, |h| 6 + h.len() + 2);
    let mut buf = Vec::with_capacity(capacity);
    buf.extend_from_slice(node);
    buf.extend_from_slice(b";proto=");
    buf.extend_from_slice(side.proto.as_bytes());
    if let Some(host) = side.host {
        buf.extend_from_slice(b";host=");
        push_token_or_quoted(&mut buf, host);
    }
    // A malformed incoming value is dropped, not extended: an unterminated quoted string in it would
    // swallow the element appended here.
    if let Some(ours) = header_value(buf) {
        append_to_list(headers, &http::header::FORWARDED, ours, is_forwarded_list);
    }

    let trusted = side.trusted_peer;
    // A trusted load balancer's own values win; anyone else's are replaced.
    set_unless_trusted(headers, &X_FORWARDED_PROTO, trusted, || {
        Some(HeaderValue::from_static(side.proto))
    });
    // A trusted load balancer's X-Forwarded-Host names what its own client asked for. The host is usually
    // the request's `Host` value itself, which is then shared rather than copied.
    let host_value = side
        .host
        .and_then(|h| match headers.get(http::header::HOST) {
            Some(v) if v.as_bytes() == h.as_bytes() => Some(v.clone()),
            _ => HeaderValue::from_str(h).ok(),
        });
    set_unless_trusted(headers, &X_FORWARDED_HOST, trusted, || host_value);
    set_unless_trusted(headers, &X_FORWARDED_PORT, trusted, || {
        Some(port_value(side.listener_port))
    });
}

/// `value` appended to the list in `name` (its lines that `keep` accepts joined with `, `, RFC 9110
/// section 5.3), as one line.
fn append_to_list(
    headers: &mut HeaderMap,
    name: &'static HeaderName,
    value: HeaderValue,
    keep: fn(&str) -> bool,
) {
    match headers.entry(name) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(mut lines) => {
            let mut joined = Vec::with_capacity(value.len() + 64);
            for v in lines.iter() {
                if let Some(s) = v.to_str().ok().filter(|s| keep(s)) {
                    if !joined.is_empty() {
                        joined.extend_from_slice(b", ");
                    }
                    joined.extend_from_slice(s.as_bytes());
                }
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
            if let Some(v) = header_value(joined) {
                lines.insert(v);
            }
        }
    }
}

/// Sets `name` to `value()` (or removes it when that is `None`), unless a trusted peer sent one.
fn set_unless_trusted(
    headers: &mut HeaderMap,
    name: &'static HeaderName,
    trusted: bool,
    value: impl FnOnce() -> Option<HeaderValue>,
) {
    match (headers.entry(name), value()) {
        (Entry::Occupied(_), _) if trusted => {}
        (Entry::Occupied(mut e), Some(v)) => {
            e.insert(v);
        }
        (Entry::Occupied(e), None) => {
            e.remove_entry_mult();
        }
        (Entry::Vacant(e), Some(v)) => {
            e.insert(v);
        }
        (Entry::Vacant(_), None) => {}
    }
}

/// Whether `value` is an RFC 7239 `Forwarded` list: elements separated by `,`, each of `;`-separated
/// `token=value` pairs, a value being a token or a quoted string. White space is allowed around `,` and
/// `;`, and empty elements are tolerated (RFC 9110 section 5.6.1.2); at least one pair is required.
fn is_forwarded_list(value: &str) -> bool {
    let b = value.as_bytes();
    let text = |c: u8| c == b'\t' || (b' '..=b'~').contains(&c);
    let mut i = 0;
    let mut pairs = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b',' | b';' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let name = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == name || b.get(i) != Some(&b'=') {
            return false;
        }
        i += 1;
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    Some(b'"') => break,
                    Some(b'\\') if b.get(i + 1).is_some_and(|&c| text(c)) => i += 2,
                    Some(&c) if c != b'\\' && text(c) => i += 1,
                    _ => return false,
                }
            }
            i += 1;
        } else {
            let start = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            if i == start {
                return false;
            }
        }
        pairs += 1;
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i < b.len() && !matches!(b[i], b',' | b';') {
            return false;
        }
    }
    pairs > 0
}

/// An RFC 9110 token character.
fn is_tchar(c: u8) -> bool {
    matches!(c,
        b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// The `X-Forwarded-Port` value of a listener port: the same few ports every time, so the value is made
/// once per thread and port and then shared (a `HeaderValue` clone is a reference count).
fn port_value(port: u16) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u16, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some((p, v)) if *p == port => v.clone(),
            _ => {
                let v = HeaderValue::from(port);
                *last = Some((port, v.clone()));
                v
            }
        }
    })
}

/// RFC 7239 values are tokens or quoted strings; a host with `:` or `[` must be quoted.
fn push_token_or_quoted(out: &mut Vec<u8>, value: &str) {
    if !value.is_empty() && value.bytes().all(is_tchar) {
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(b'"');
        for b in value.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
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
                client: &PeerText::new(client.parse().unwrap()),
                proto: "http",
                host,
                listener_port: 8080,
                trusted_peer: false,
            },
        );
        h
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn client_is_the_peer_unless_the_peer_is_trusted() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff("203.0.113.9, 10.0.0.2");
        let untrusted: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_address(untrusted, &h, &trusted), untrusted);
        assert_eq!(client_address(untrusted, &h, &[]), untrusted);
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(lb, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn rightmost_untrusted_entry_wins_and_spoofed_left_entries_are_ignored() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let lb: IpAddr = "fd00::1".parse().unwrap();
        let h = xff("1.1.1.1, [2001:db8::7]:443, fd00::2");
        assert_eq!(
            client_address(lb, &h, &trusted),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        let h = xff("::ffff:198.51.100.4");
        assert_eq!(
            client_address(lb, &h, &trusted),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        // Every entry trusted: the leftmost one; garbage stops the walk at the hop to its right.
        let h = xff("10.1.1.1, 10.2.2.2");
        assert_eq!(
            client_address(lb, &h, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        let h = xff("unknown, 10.2.2.2");
        assert_eq!(
            client_address(lb, &h, &trusted),
            "10.2.2.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_trusted_peer_keeps_proto_host_and_port() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-proto", HeaderValue::from_static("https"));
        h.append("x-forwarded-port", HeaderValue::from_static("443"));
        apply(
            &mut h,
            &ClientSide {
                client: &PeerText::new("10.0.0.1".parse().unwrap()),
                proto: "http",
                host: Some("app.example.com"),
                listener_port: 8080,
                trusted_peer: true,
            },
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
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

    /// Found by the `forwarded` fuzz target: an unterminated quoted string in a client's `Forwarded` ran to
    /// the end of the joined value, so the element this proxy appended no longer parsed as one.
    #[test]
    fn malformed_forwarded_values_are_dropped_not_extended() {
        let h = run(
            "2001:db8::1",
            None,
            &[
                ("forwarded", "for=\"[2001:db8::7"),
                ("forwarded", "for=192.0.2.1;proto=https"),
                ("forwarded", "for=a b"),
                ("forwarded", "for=\"x\\"),
                ("forwarded", ", ;"),
            ],
        );
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.1;proto=https, for=\"[2001:db8::1]\";proto=http"
        );
        for ok in [
            "for=1.2.3.4",
            "for=\"[2001:db8::1]:80\"; proto=http , by=_x",
            "For=\"\\\"\";;",
            "for=a,,for=b",
        ] {
            assert!(is_forwarded_list(ok), "{ok}");
        }
        for bad in [
            "", "for", "for=", "=a", "for=\"a", "for=a b", "for=a=b", ", ;",
        ] {
            assert!(!is_forwarded_list(bad), "{bad}");
        }
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

    #[test]
    fn peer_text_is_the_display_text_of_the_address() {
        for text in [
            "0.0.0.0",
            "9.99.100.255",
            "10.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "1.22.133.4",
            "::1",
            "2001:db8::1",
            "fe80::1:0:0:1",
            "2001:db8:0:1:1:1:1:1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let peer = PeerText::new(ip);
            assert_eq!(peer.xff, ip.to_string(), "{text}");
            let node = match ip {
                IpAddr::V4(_) => format!("for={ip}"),
                IpAddr::V6(_) => format!("for=\"[{ip}]\""),
            };
            assert_eq!(peer.forwarded_for, node, "{text}");
        }
    }
}
