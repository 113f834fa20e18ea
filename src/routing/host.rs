//! The request host, parsed per RFC 3986 from a `Host` header or an absolute-form authority.

use std::net::Ipv4Addr;

/// What the request names as its host, ready for rule matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost<'a> {
    /// A DNS name, lower case, without a trailing dot and without the port.
    Name(&'a str),
    /// An IP literal (`[::1]`, `127.0.0.1`): never matches a host rule.
    IpLiteral,
    /// No host, or one that does not parse.
    Missing,
}

/// Parses an authority such as `[::1]:8080`, `example.com:8080` or `EXAMPLE.com.`. The caller provides
/// `scratch` to hold the lower-cased name, so the common (already lower case) path does not allocate.
pub fn parse<'a>(authority: &'a str, scratch: &'a mut String) -> RequestHost<'a> {
    let host = match authority.parse::<http::uri::Authority>() {
        Ok(_) if authority.is_empty() => return RequestHost::Missing,
        Ok(a) => host_len(&a, authority),
        Err(_) => return RequestHost::Missing,
    };
    let host = &authority[..host];
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return RequestHost::IpLiteral;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return RequestHost::Missing;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        scratch.clear();
        scratch.push_str(host);
        scratch.make_ascii_lowercase();
        RequestHost::Name(scratch.as_str())
    } else {
        RequestHost::Name(host)
    }
}

/// Length of the host part of `text`, which `a` was parsed from (userinfo is not allowed in `Host`).
fn host_len(a: &http::uri::Authority, text: &str) -> usize {
    if text.contains('@') {
        return 0;
    }
    a.host().len()
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
            ("bad host", RequestHost::Missing),
            ("user@example.com", RequestHost::Missing),
        ];
        for (text, want) in cases {
            let mut scratch = String::new();
            assert_eq!(parse(text, &mut scratch), want, "{text:?}");
        }
    }
}
