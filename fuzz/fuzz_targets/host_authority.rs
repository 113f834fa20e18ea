//! The request host parser (`routing::host::parse`): what the router matches a `Host` header or an HTTP/2
//! `:authority` against.
//!
//! Properties, for any text:
//! - `Missing` only for the empty string.
//! - Text that `http::uri::Authority` refuses is `Invalid`; so is anything with `,` or `@`.
//! - `Name(n)`: `n` is non-empty, lower case, made only of RFC 3986 reg-name characters (unreserved and
//!   sub-delims other than `,`), has no empty label (`..`, a trailing `.`), is not an IPv4 address, and
//!   the input is `n` (ignoring ASCII case), then at most one `.`, then optionally `:` and digits. `n`
//!   parses again to `Name(n)`, and is a valid header value and authority.
//! - `IpLiteral`: the host is a dotted-quad IPv4 address (a trailing dot allowed), or a bracketed IPv6 address (with an optional
//!   RFC 6874 zone id), followed only by an optional `:` and digits.
//! - The result does not depend on the caller's scratch buffer.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use dualstack_ingress::routing::host::parse;
use dualstack_ingress::routing::RequestHost;
use libfuzzer_sys::fuzz_target;

fn reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=".contains(&b)
}

/// `rest` is empty or `:` followed by digits only.
fn is_port_part(rest: &str) -> bool {
    rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[IPv6]` or `[IPv6%25zone]` (RFC 6874).
fn is_ipv6_literal(host: &str) -> bool {
    let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) else {
        return false;
    };
    let (addr, zone) = match inner.split_once("%25") {
        Some((a, z)) => (a, Some(z)),
        None => (inner, None),
    };
    addr.parse::<Ipv6Addr>().is_ok()
        && zone.is_none_or(|z| {
            !z.is_empty()
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}

fn check(text: &str) {
    let mut scratch = String::new();
    let got = parse(text, &mut scratch);

    // The scratch buffer's previous contents never matter.
    let mut dirty = String::from("STALE.example");
    assert_eq!(
        parse(text, &mut dirty),
        got,
        "{text:?} with a dirty scratch buffer"
    );

    if text.is_empty() {
        assert_eq!(got, RequestHost::Missing);
        return;
    }
    assert_ne!(got, RequestHost::Missing, "{text:?}");
    let authority_ok = text.parse::<http::uri::Authority>().is_ok();
    if !authority_ok || text.contains([',', '@']) {
        assert_eq!(got, RequestHost::Invalid, "{text:?} is not an authority");
    }

    match got {
        RequestHost::Name(name) => {
            assert!(!name.is_empty(), "{text:?}: empty name");
            assert!(
                name.bytes().all(reg_name_byte),
                "{text:?}: name {name:?} has a byte outside RFC 3986 reg-name"
            );
            assert!(
                !name.bytes().any(|b| b.is_ascii_uppercase()),
                "{text:?}: name {name:?} is not lower case"
            );
            // Round trip: the input is the name, an optional trailing dot and an optional port.
            let lower = text.to_ascii_lowercase();
            let rest = lower
                .strip_prefix(name)
                .unwrap_or_else(|| panic!("{text:?} does not start with {name:?}"));
            let rest = rest.strip_prefix('.').unwrap_or(rest);
            assert!(
                is_port_part(rest),
                "{text:?}: {rest:?} left after the name {name:?}"
            );
            assert!(
                name.parse::<Ipv4Addr>().is_err(),
                "{text:?}: an IPv4 address as a name"
            );
            // No empty label: one trailing dot is dropped, two dots in a row are refused.
            assert!(
                !name.ends_with('.') && !name.contains(".."),
                "{text:?}: name {name:?}"
            );
            // A name is a fixed point, and usable as a header value and as an authority of its own.
            let owned = name.to_string();
            let mut again = String::new();
            assert_eq!(
                parse(&owned, &mut again),
                RequestHost::Name(owned.as_str()),
                "{owned:?}"
            );
            assert!(http::HeaderValue::from_str(&owned).is_ok(), "{owned:?}");
            assert!(owned.parse::<http::uri::Authority>().is_ok(), "{owned:?}");
        }
        RequestHost::IpLiteral => {
            let (host, rest) = match text.find(']') {
                Some(i) if text.starts_with('[') => text.split_at(i + 1),
                _ => text.split_at(text.find(':').unwrap_or(text.len())),
            };
            assert!(
                is_ipv6_literal(host)
                    || host
                        .strip_suffix('.')
                        .unwrap_or(host)
                        .parse::<Ipv4Addr>()
                        .is_ok(),
                "{text:?}: host {host:?} taken for an IP literal"
            );
            assert!(
                is_port_part(rest),
                "{text:?}: {rest:?} after the IP literal"
            );
        }
        RequestHost::Invalid | RequestHost::Missing => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // Header values reach the router through `HeaderValue::to_str` (visible ASCII, space, tab); HTTP/2
    // authorities through `http::uri::Authority`. Any UTF-8 is a superset of both.
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
});
