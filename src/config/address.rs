//! Parsing socket addresses written by people, with a precise hint for the classic unbracketed IPv6 mistake.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};

use super::quote;
use crate::model::NamedEndpoint;

/// Parses `ip:port` (IPv6 in brackets, RFC 3986 / RFC 5952 style) into a [`SocketAddr`].
///
/// The error quotes the input and, for an unbracketed IPv6 address followed by a port such as
/// `fd00::5:8080`, says to write `[fd00::5]:8080`.
pub fn parse_endpoint(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(suggestion) = bracketed_suggestion(text) {
        return Err(format!(
            "{} is not a valid socket address: an IPv6 address with a port must be bracketed; \
             write {suggestion:?}",
            quote(text)
        ));
    }
    let unbracketed = text.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{} has no port; write it as IP:PORT (IPv6 as [IP]:PORT)",
            quote(text)
        ));
    }
    if let Some((ip, port)) = text.rsplit_once(':') {
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        if ip.parse::<IpAddr>().is_ok() && port.parse::<u16>().is_err() {
            return Err(format!(
                "{}: port {} is not a number from 0 to 65535",
                quote(text),
                quote(port)
            ));
        }
    }
    Err(format!(
        "{} is not a valid socket address; write IP:PORT or NAME:PORT, e.g. \"127.0.0.1:8080\", \
         \"[fd00::5]:8080\" or \"api.internal:8080\"",
        quote(text)
    ))
}

/// The port of a DNS server written without one.
pub const DNS_PORT: u16 = 53;

/// Parses a DNS server for `resolver`: `IP:PORT` or `[IPv6]:PORT`, or the address alone (`10.96.0.10`,
/// `[fd00::10]`) for port 53. An IPv6 address must be bracketed even without a port: `fd00::10:53` could
/// mean either.
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{}: port 0 is not a DNS server port", quote(text)));
        }
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, DNS_PORT)));
    }
    if let Some(ip) = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<Ipv6Addr>().ok())
    {
        return Ok(SocketAddr::from((ip, DNS_PORT)));
    }
    if let Ok(ip) = text.parse::<Ipv6Addr>() {
        return Err(format!(
            "{}: an IPv6 DNS server must be bracketed; write {:?} (port {DNS_PORT}) or \"[{ip}]:PORT\"",
            quote(text),
            format!("[{ip}]")
        ));
    }
    Err(format!(
        "{} is not a DNS server address; write IP or IP:PORT (IPv6 as [IP] or [IP]:PORT; port {DNS_PORT} \
         when omitted), e.g. \"10.96.0.10\", \"1.1.1.1:53\" or \"[2001:4860:4860::8888]:53\"",
        quote(text)
    ))
}

/// Parses an address range for `allow` and `trustedProxies`: `CIDR` (`10.0.0.0/8`, `2001:db8::/32`) or a
/// single address (`/32` or `/128`). Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`); an IPv4-mapped
/// IPv6 range (`::ffff:10.0.0.0/104`) becomes the IPv4 range it covers, since clients are compared in
/// canonical form. Zone ids (`fe80::1%eth0/64`) are refused: a range names addresses, not interfaces.
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if text.contains('%') {
        return Err(format!(
            "{}: zone ids (\"%eth0\") are not allowed in address ranges; write the range without one, \
             e.g. \"fe80::/64\"",
            quote(text)
        ));
    }
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "{} is not an address range; write CIDR such as \"10.0.0.0/8\" or \
                     \"2001:db8::/32\", or a single address",
                    quote(text)
                ))
            }
        },
    };
    Ok(canonical_range(net.trunc()))
}

/// `::ffff:a.b.c.d/N` with `N >= 96` as the IPv4 range `a.b.c.d/(N-96)`; any other range unchanged.
fn canonical_range(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

/// Parses `name:port` with a DNS name (letters, digits, `-` and `.`, at least one letter; lower-cased,
/// without a trailing dot), for upstreams resolved in the background. `None` when `text` is not of that
/// shape (IP addresses are [`parse_endpoint`]'s).
pub fn parse_named(text: &str) -> Option<NamedEndpoint> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let is_name = host.len() <= 253
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && host.split('.').all(valid_label);
    (is_name && port != 0).then_some(NamedEndpoint { host, port })
}

/// For `fd00::5:8080` returns `[fd00::5]:8080`: the text before the last `:` is an IPv6 address and the rest
/// a port.
fn bracketed_suggestion(text: &str) -> Option<String> {
    let (ip, port) = text.rsplit_once(':')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some(SocketAddr::from((ip, port)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_ports_are_upstreams_resolved_later() {
        let n = parse_named("API.Internal.:8080").unwrap();
        assert_eq!((n.host.as_str(), n.port), ("api.internal", 8080));
        assert_eq!(parse_named("localhost:80").unwrap().host, "localhost");
        for not in [
            "localhost",
            "10.0.0.1:80",
            "fd00::5:80",
            "a b:80",
            "-x:80",
            "x:0",
            "x:99999",
            "[::1]:80",
        ] {
            assert!(parse_named(not).is_none(), "{not}");
        }
    }

    #[test]
    fn dns_servers_default_to_port_53_and_ipv6_needs_brackets() {
        for (text, want) in [
            ("10.96.0.10", "10.96.0.10:53"),
            ("127.0.0.1:5353", "127.0.0.1:5353"),
            ("[fd00::10]", "[fd00::10]:53"),
            ("[::1]:5353", "[::1]:5353"),
        ] {
            assert_eq!(
                parse_dns_server(text).map(|a| a.to_string()),
                Ok(want.to_string()),
                "{text}"
            );
        }
        let e = parse_dns_server("fd00::10").unwrap_err();
        assert!(e.contains("write \"[fd00::10]\""), "{e}");
        for bad in ["dns.example:53", "10.0.0.1:0", "10.0.0.1:99999", ""] {
            assert!(parse_dns_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accepts_both_families_and_mapped() {
        for (text, want) in [
            ("127.0.0.1:9001", "127.0.0.1:9001"),
            ("[::1]:9002", "[::1]:9002"),
            ("[fd00::5]:8080", "[fd00::5]:8080"),
            ("[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:80"),
        ] {
            assert_eq!(
                parse_endpoint(text).map(|a| a.to_string()),
                Ok(want.to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn unbracketed_ipv6_with_port_gets_a_bracketed_suggestion() {
        let err = parse_endpoint("fd00::5:8080").unwrap_err();
        assert!(err.contains("\"fd00::5:8080\""), "{err}");
        assert!(err.contains("write \"[fd00::5]:8080\""), "{err}");
    }

    #[test]
    fn host_names_and_missing_ports_are_rejected() {
        assert!(parse_endpoint("localhost:80")
            .unwrap_err()
            .contains("\"localhost:80\""));
        assert!(parse_endpoint("10.0.0.1").unwrap_err().contains("no port"));
        assert!(parse_endpoint("[::1]").is_err());
        let err = parse_endpoint("127.0.0.1:99999").unwrap_err();
        assert!(
            err.contains("port \"99999\" is not a number from 0 to 65535"),
            "{err}"
        );
        assert!(parse_endpoint("[::1]:http")
            .unwrap_err()
            .contains("port \"http\""));
    }
}
