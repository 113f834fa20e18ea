//! The forwarding-header builder (`proxy::forwarded::apply`) and the client-address walk
//! (`proxy::forwarded::client_address`), for arbitrary client addresses of both families (IPv4-mapped
//! IPv6 included), hosts and forwarding headers already on the request.
//!
//! Properties:
//! - `Forwarded` is one valid header value that parses as an RFC 7239 list (checked by the parser below,
//!   written from the RFC's grammar); the existing values that parse are kept, in order, and the last
//!   element is ours: `for=` the client (IPv4 as a token, IPv6 quoted and bracketed in RFC 5952 text,
//!   checked against a formatter written here from RFC 5952 section 4), `proto=` and `host=` the host
//!   exactly (after unquoting).
//! - `X-Forwarded-For` is one value: the existing list, then the client.
//! - `X-Forwarded-Proto`, `-Host`, `-Port` are ours unless the peer is trusted and sent its own.
//! - `client_address` is the peer when the peer is not trusted, else the peer or an `X-Forwarded-For` entry.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Unstructured};
use dualstack_ingress::proxy::forwarded::{apply, client_address, ClientSide, PeerText};
use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

/// One case. The input is laid out so that real header values can be written into seeds: a flags byte
/// (bits 0-1: IPv4, IPv6, IPv4-mapped IPv6, IPv6; bit 2: https; bit 3: the peer is trusted), the listener
/// port (2 bytes), 16 address bytes (an IPv4 client uses the first 4), then text lines `name: value` with
/// `host`, `forwarded`, `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`, `x-forwarded-port`
/// (header values, repeatable, as bytes) and `trusted` (`address/length`, repeatable).
#[derive(Debug)]
struct Input {
    client: IpAddr,
    https: bool,
    trusted_peer: bool,
    listener_port: u16,
    host: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
    trusted: Vec<IpNet>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let flags = u8::arbitrary(u)?;
        let port = <[u8; 2]>::arbitrary(u)?;
        let addr = <[u8; 16]>::arbitrary(u)?;
        let v4 = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
        let client = match flags & 3 {
            0 => IpAddr::V4(v4),
            2 => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => IpAddr::V6(Ipv6Addr::from(addr)),
        };
        let mut input = Input {
            client,
            https: flags & 4 != 0,
            trusted_peer: flags & 8 != 0,
            listener_port: u16::from_be_bytes(port),
            host: None,
            headers: Vec::new(),
            trusted: Vec::new(),
        };
        let rest = u.bytes(u.len())?;
        for line in rest.split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let value = value.strip_prefix(b" ").unwrap_or(value).to_vec();
            const HEADERS: [&str; 5] = [
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
            ];
            match name {
                b"host" => input.host = Some(value),
                b"trusted" => {
                    if let Some(net) = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                    {
                        input.trusted.push(net);
                    }
                }
                _ => {
                    if let Some(h) = HEADERS.iter().find(|h| h.as_bytes() == name) {
                        input.headers.push((h, value));
                    }
                }
            }
        }
        Ok(input)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 7239 section 4 over RFC 9110 lists: `1#forwarded-element`, each `[pair] *(";" [pair])`, a pair
/// `token "=" (token / quoted-string)`. Optional white space is allowed around `,` (and, as common
/// senders write it, around `;`); empty list elements are tolerated as RFC 9110 section 5.6.1.2 asks.
/// Returns the elements with their pairs, values unquoted.
fn parse_forwarded(s: &str) -> Option<Vec<Vec<(String, String)>>> {
    let b = s.as_bytes();
    let mut i = 0;
    let ows = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let mut elements = vec![Vec::new()];
    ows(&mut i);
    while i < b.len() {
        match b[i] {
            b',' => {
                elements.push(Vec::new());
                i += 1;
                ows(&mut i);
                continue;
            }
            b';' => {
                i += 1;
                ows(&mut i);
                continue;
            }
            _ => {}
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start || b.get(i) != Some(&b'=') {
            return None;
        }
        let name = s[start..i].to_ascii_lowercase();
        i += 1;
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                match *b.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        let c = *b.get(i + 1)?;
                        if !(c == b'\t' || (b' '..=b'~').contains(&c)) {
                            return None;
                        }
                        v.push(char::from(c));
                        i += 2;
                    }
                    c if c == b'\t'
                        || c == b' '
                        || c == b'!'
                        || (b'#'..=b'[').contains(&c)
                        || (b']'..=b'~').contains(&c) =>
                    {
                        v.push(char::from(c));
                        i += 1;
                    }
                    _ => return None,
                }
            }
            i += 1;
            v
        } else {
            let vs = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            if i == vs {
                return None;
            }
            s[vs..i].to_string()
        };
        elements.last_mut()?.push((name, value));
        ows(&mut i);
        match b.get(i) {
            None | Some(b',') | Some(b';') => {}
            Some(_) => return None,
        }
    }
    if elements.iter().all(Vec::is_empty) {
        return None;
    }
    Some(elements)
}

/// RFC 5952 section 4 text for `ip`, written from the RFC: lower-case hex without leading zeros, the
/// longest run of two or more zero groups (the first of equal runs) as `::`, IPv4-mapped addresses with a
/// dotted quad (section 5).
fn rfc5952(ip: Ipv6Addr) -> String {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return format!("::ffff:{v4}");
    }
    let g = ip.segments();
    let (mut best, mut best_len) = (0, 0);
    let mut i = 0;
    while i < 8 {
        if g[i] == 0 {
            let start = i;
            while i < 8 && g[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                (best, best_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    let hex = |s: &[u16]| {
        s.iter()
            .map(|x| format!("{x:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best_len >= 2 {
        format!("{}::{}", hex(&g[..best]), hex(&g[best + best_len..]))
    } else {
        hex(&g)
    }
}

fn check(input: Input) {
    let client = input.client;
    // A host reaches the builder from a header value (`to_str`: visible ASCII, space, tab) or an
    // `http::uri::Authority`.
    let host = match input.host {
        Some(h) if !h.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) => return,
        Some(h) => Some(String::from_utf8(h).expect("ASCII")),
        None => None,
    };
    let proto = if input.https { "https" } else { "http" };

    let mut headers = HeaderMap::new();
    for (name, v) in &input.headers {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(*name, v);
        }
    }
    let sent = |name: &str| headers.contains_key(name);
    let (xf_proto, xf_host, xf_port) = (
        sent("x-forwarded-proto"),
        sent("x-forwarded-host"),
        sent("x-forwarded-port"),
    );
    let before = headers.clone();

    // The client walk: the peer unless trusted; else the peer or one of the listed addresses.
    let trusted = &input.trusted;
    let peer = client.to_canonical();
    let walked = client_address(peer, &before, trusted);
    if !trusted.iter().any(|n| n.contains(&peer)) {
        assert_eq!(walked, peer, "untrusted peer replaced by {walked}");
    } else if walked != peer {
        let listed = before
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|e| xff_entry(e.trim()) == Some(walked));
        assert!(
            listed,
            "client {walked} is neither the peer nor listed in X-Forwarded-For"
        );
    }

    apply(
        &mut headers,
        &ClientSide {
            client: &PeerText::new(client),
            proto,
            host: host.as_deref(),
            listener_port: input.listener_port,
            trusted_peer: input.trusted_peer,
        },
    );

    // Forwarded: one value, a valid RFC 7239 list, the valid old elements first, ours last.
    let values: Vec<&HeaderValue> = headers.get_all("forwarded").iter().collect();
    assert_eq!(values.len(), 1, "Forwarded values: {values:?}");
    let text = values[0].to_str().expect("Forwarded is visible ASCII");
    let elements =
        parse_forwarded(text).unwrap_or_else(|| panic!("Forwarded does not parse: {text:?}"));
    let kept: Vec<&str> = before
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| parse_forwarded(v).is_some())
        .collect();
    let ours = ours_text(client, proto, host.as_deref());
    let mut want = kept.join(", ");
    if !want.is_empty() {
        want.push_str(", ");
    }
    want.push_str(&ours);
    assert_eq!(text, want, "Forwarded is the valid old values, then ours");

    let last = elements.last().expect("one element at least");
    let for_value = match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{}]", rfc5952(v6)),
    };
    assert_eq!(last[0], ("for".to_string(), for_value.clone()), "{text:?}");
    if client.is_ipv6() {
        assert!(
            text.ends_with(&ours) && ours.starts_with(&format!("for=\"{for_value}\"")),
            "IPv6 must be quoted: {text:?}"
        );
        let inner = for_value.trim_start_matches('[').trim_end_matches(']');
        assert_eq!(
            inner.parse::<IpAddr>().ok(),
            Some(client),
            "{inner:?} parses back"
        );
    } else {
        assert_eq!(last[0].1.parse::<IpAddr>().ok(), Some(client));
    }
    assert_eq!(last[1], ("proto".to_string(), proto.to_string()));
    match &host {
        Some(h) => {
            assert_eq!(last.len(), 3);
            assert_eq!(
                last[2],
                ("host".to_string(), h.clone()),
                "host round trip in {text:?}"
            );
        }
        None => assert_eq!(last.len(), 2),
    }

    // X-Forwarded-For: the old list's entries, then the client.
    let xff: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1);
    let entries = |values: Vec<&str>| -> Vec<String> {
        values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect()
    };
    let mut want = entries(
        before
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect(),
    );
    want.push(client.to_string());
    assert_eq!(entries(vec![xff[0].to_str().expect("ASCII")]), want);

    // X-Forwarded-Proto, -Host, -Port: a trusted peer's own values are kept, else ours.
    let kept_or = |name: &str, sent: bool, ours: Option<HeaderValue>| {
        let got: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        match sent {
            true if input.trusted_peer => {
                let old: Vec<&HeaderValue> = before.get_all(name).iter().collect();
                assert_eq!(got, old, "{name} from a trusted peer is kept");
            }
            _ => assert_eq!(got, ours.iter().collect::<Vec<_>>(), "{name}"),
        }
    };
    kept_or(
        "x-forwarded-proto",
        xf_proto,
        Some(HeaderValue::from_static(proto)),
    );
    kept_or(
        "x-forwarded-host",
        xf_host,
        host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()),
    );
    kept_or(
        "x-forwarded-port",
        xf_port,
        Some(HeaderValue::from(input.listener_port)),
    );
}

/// An `X-Forwarded-For` entry as an address: bare, bracketed, or either with a port; canonical.
fn xff_entry(e: &str) -> Option<IpAddr> {
    let ip = e
        .parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// The element the builder appends, written out here: `for=`, `proto=`, `host=` (a token when it is one,
/// else a quoted string with `"` and `\` escaped).
fn ours_text(client: IpAddr, proto: &str, host: Option<&str>) -> String {
    let mut s = match client {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{}]\"", rfc5952(v6)),
    };
    s.push_str(";proto=");
    s.push_str(proto);
    if let Some(h) = host {
        s.push_str(";host=");
        if !h.is_empty() && h.bytes().all(is_tchar) {
            s.push_str(h);
        } else {
            s.push('"');
            for c in h.chars() {
                if c == '"' || c == '\\' {
                    s.push('\\');
                }
                s.push(c);
            }
            s.push('"');
        }
    }
    s
}

fuzz_target!(|input: Input| check(input));
