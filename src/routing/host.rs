//! The request host, parsed per RFC 3986 from a `Host` header or an absolute-form authority.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What the request names as its host, ready for rule matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost<'a> {
    /// A DNS name, lower case, without a trailing dot and without the port.
    Name(&'a str),
    /// An IP literal (`[::1]`, `127.0.0.1`): never matches a host rule.
    IpLiteral,
    /// No host (or an empty one).
    Missing,
    /// A host that is not a valid authority (`a b`, `a,b`, userinfo `u@h`): the request gets 400
    /// (RFC 9112 section 3.2) and is never routed.
    Invalid,
}

/// Parses an authority such as `[::1]:8080`, `example.com:8080` or `EXAMPLE.com.`. The caller provides
/// `scratch` to hold the lower-cased name, so the common (already lower case) path does not allocate.
///
/// The verdict for the last authority parsed on this thread is remembered: a keep-alive connection sends
/// the same `Host` on every request, and the parse (through `http::uri::Authority`, which copies the text)
/// costs more than the comparison.
pub fn parse<'a>(authority: &'a str, scratch: &'a mut String) -> RequestHost<'a> {
    thread_local! {
        static LAST: RefCell<(String, Verdict)> = const { RefCell::new((String::new(), Verdict::Missing)) };
    }
    let remembered = LAST.with(|last| {
        let last = last.borrow();
        (last.0 == authority).then_some(last.1)
    });
    let verdict = match remembered {
        Some(v) => v,
        None => {
            let v = verdict(authority);
            if authority.len() <= MEMO_MAX {
                LAST.with(|last| {
                    let mut last = last.borrow_mut();
                    last.0.clear();
                    last.0.push_str(authority);
                    last.1 = v;
                });
            }
            v
        }
    };
    match verdict {
        Verdict::Missing => RequestHost::Missing,
        Verdict::Invalid => RequestHost::Invalid,
        Verdict::IpLiteral => RequestHost::IpLiteral,
        Verdict::Name { len, lower: false } => RequestHost::Name(&authority[..len]),
        Verdict::Name { len, lower: true } => {
            scratch.clear();
            scratch.push_str(&authority[..len]);
            scratch.make_ascii_lowercase();
            RequestHost::Name(scratch.as_str())
        }
    }
}

/// The longest authority remembered (longer ones are parsed every time).
const MEMO_MAX: usize = 255;

/// What [`parse`] found, without borrowing: a name is the authority's first `len` bytes, to be lower-cased
/// when `lower`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Missing,
    Invalid,
    IpLiteral,
    Name { len: usize, lower: bool },
}

/// The parse itself.
fn verdict(authority: &str) -> Verdict {
    if authority.is_empty() {
        return Verdict::Missing;
    }
    // A comma can only come from joined or folded values; userinfo is not allowed in `Host`.
    if authority.bytes().any(|b| b == b',' || b == b'@') {
        return Verdict::Invalid;
    }
    let host = match authority.parse::<http::uri::Authority>() {
        Ok(a) => a.host().len(),
        Err(_) => return Verdict::Invalid,
    };
    let (host, port) = authority.split_at(host);
    if !port
        .strip_prefix(':')
        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && !port.is_empty()
    {
        return Verdict::Invalid;
    }
    // `http::uri::Authority` checks only where the brackets are: what is inside them must be an IPv6
    // address (RFC 3986 IP-literal), and a bracket anywhere else is not a host character at all.
    if let Some(literal) = host.strip_prefix('[') {
        return match literal.strip_suffix(']') {
            Some(inner) if is_ipv6_literal(inner) => Verdict::IpLiteral,
            _ => Verdict::Invalid,
        };
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // `10.0.0.1.` is the same IPv4 address (as resolvers and browsers read it), not a name.
    if name.parse::<Ipv4Addr>().is_ok() {
        return Verdict::IpLiteral;
    }
    // No bracket outside an IP literal, and no empty label (`a..b`, `a..`), as nginx refuses them.
    if host.contains(['[', ']']) || host.contains("..") {
        return Verdict::Invalid;
    }
    let host = name;
    if host.is_empty() {
        return Verdict::Invalid;
    }
    Verdict::Name {
        len: host.len(),
        lower: host.bytes().any(|b| b.is_ascii_uppercase()),
    }
}

/// The inside of `[...]`: an IPv6 address, optionally with an RFC 6874 zone id (`fe80::1%25eth0`).
fn is_ipv6_literal(inner: &str) -> bool {
    let (addr, zone) = match inner.split_once("%25") {
        Some((addr, zone)) => (addr, Some(zone)),
        None => (inner, None),
    };
    addr.parse::<Ipv6Addr>().is_ok()
        && zone.is_none_or(|z| {
            !z.is_empty()
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_table() {
        let cases = [
            ("example.com", RequestHost::Name("example.com")),
            ("example.com:8080", RequestHost::Name("example.com")),
            ("EXAMPLE.com.", RequestHost::Name("example.com")),
            ("Example.COM.:443", RequestHost::Name("example.com")),
            ("[::1]:8080", RequestHost::IpLiteral),
            ("[::1]", RequestHost::IpLiteral),
            ("[2001:db8::1]:80", RequestHost::IpLiteral),
            ("127.0.0.1:8080", RequestHost::IpLiteral),
            ("", RequestHost::Missing),
            ("bad host", RequestHost::Invalid),
            ("a b", RequestHost::Invalid),
            ("a, b", RequestHost::Invalid),
            ("a,b", RequestHost::Invalid),
            ("user@example.com", RequestHost::Invalid),
            ("u@h:80", RequestHost::Invalid),
            (":80", RequestHost::Invalid),
            ("example.com:http", RequestHost::Invalid),
            ("[fe80::1%25eth0]:80", RequestHost::IpLiteral),
            ("[::ffff:10.0.0.1]", RequestHost::IpLiteral),
        ];
        for (text, want) in cases {
            let mut scratch = String::new();
            assert_eq!(parse(text, &mut scratch), want, "{text:?}");
        }
    }

    /// Found by the `host_authority` fuzz target: `http::uri::Authority` accepts any text in brackets, so
    /// these were routed as IP literals or names (and forwarded verbatim) instead of answered 400.
    #[test]
    fn brackets_hold_an_ipv6_address_and_nothing_else() {
        let cases = [
            ("[::ffff:127f:10.1]:80", RequestHost::Invalid),
            ("[zz]", RequestHost::Invalid),
            ("[]:80", RequestHost::Invalid),
            ("[127.0.0.1]", RequestHost::Invalid),
            ("[fe80::1%25]", RequestHost::Invalid),
            ("[v1.fe]", RequestHost::Invalid),
            ("a[::1]", RequestHost::Invalid),
            ("x[]", RequestHost::Invalid),
            // Also found by fuzzing: with its trailing dot an IPv4 address was taken for a name.
            ("12.0.0.82.", RequestHost::IpLiteral),
            ("12.0.0.82.:80", RequestHost::IpLiteral),
            ("12.0.0.82..", RequestHost::Invalid),
            ("a..", RequestHost::Invalid),
            ("a..b:80", RequestHost::Invalid),
            ("..", RequestHost::Invalid),
        ];
        for (text, want) in cases {
            let mut scratch = String::new();
            assert_eq!(parse(text, &mut scratch), want, "{text:?}");
        }
    }
}
