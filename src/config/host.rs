//! Validation of rule hosts (`host:` keys), following Ingress v1: a DNS-1123 subdomain, optionally with a
//! single leading `*` label; never an IP address.

use std::net::IpAddr;

use super::quote;
use crate::model::HostMatch;

/// Parses a rule host: lower-cases it, drops one trailing dot, and rejects IP literals, a bare `*` and
/// anything that is not a DNS name.
pub fn parse_host_rule(text: &str) -> Result<HostMatch, String> {
    let quoted = || quote(text);
    let folded = text.trim_end_matches('.').to_ascii_lowercase();
    let unbracketed = folded.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "host {} is an IP address; Ingress hosts are DNS names (omit host to match any host)",
            quoted()
        ));
    }
    if folded == "*" {
        return Err(format!(
            "host {}: a bare \"*\" is not allowed; omit host to match any host",
            quoted()
        ));
    }
    let (wildcard, name) = match folded.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, folded.as_str()),
    };
    if name.contains('*') {
        return Err(format!(
            "host {}: \"*\" is only allowed as the whole first label, as in \"*.example.com\"",
            quoted()
        ));
    }
    if !is_dns_subdomain(name) {
        return Err(format!(
            "host {} is not a valid DNS name (letters, digits, '-' and '.', labels of at most 63 characters)",
            quoted()
        ));
    }
    Ok(if wildcard {
        HostMatch::Wildcard(name.to_string())
    } else {
        HostMatch::Exact(name.to_string())
    })
}

/// RFC 1123 subdomain as Kubernetes validates it (lower case already applied).
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_table() {
        let ok = [
            (
                "app.example.com",
                HostMatch::Exact("app.example.com".into()),
            ),
            (
                "APP.Example.com",
                HostMatch::Exact("app.example.com".into()),
            ),
            (
                "app.example.com.",
                HostMatch::Exact("app.example.com".into()),
            ),
            ("*.example.com", HostMatch::Wildcard("example.com".into())),
            ("localhost", HostMatch::Exact("localhost".into())),
        ];
        for (text, want) in ok {
            assert_eq!(parse_host_rule(text), Ok(want), "{text}");
        }
        for bad in [
            "*",
            "10.0.0.1",
            "::1",
            "[::1]",
            "a.*.com",
            "*a.com",
            "exa mple.com",
            "-a.com",
            "",
        ] {
            assert!(parse_host_rule(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_host_rule("10.0.0.1")
            .unwrap_err()
            .contains("IP address"));
    }
}
