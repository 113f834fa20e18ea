//! Validation of the static configuration: every error a user can make is reported as
//! `FILE:LINE:COLUMN: message` pointing at the offending value, and valid files produce the expected model.

use std::net::SocketAddr;

use super::*;
use crate::model::HostMatch;

/// The errors for `text`, each as the user sees it (`f.yaml:LINE:COLUMN: message`).
fn errors(text: &str) -> Vec<String> {
    match parse("f.yaml", text) {
        Ok(model) => panic!("expected errors, got a model: {model:?}\n--- input:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// The single error for `text`.
fn error(text: &str) -> String {
    let all = errors(text);
    assert_eq!(all.len(), 1, "expected exactly one error, got {all:#?}");
    all.into_iter().next().unwrap()
}

fn file(text: &str) -> ConfigFile {
    parse("f.yaml", text).unwrap_or_else(|e| panic!("{e}\n--- input:\n{text}"))
}

fn ok(text: &str) -> Model {
    file(text).model
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn unbracketed_ipv6_endpoint_is_quoted_with_the_bracketed_fix() {
    let e = error("backends:\n  b:\n    endpoints: [\"fd00::5:8080\"]\n");
    assert_eq!(
        e,
        "f.yaml:3:17: backend \"b\": \"fd00::5:8080\" is not a valid socket address: an IPv6 address \
         with a port must be bracketed; write \"[fd00::5]:8080\""
    );
}

#[test]
fn unbracketed_ipv6_endpoint_in_block_sequence_points_at_the_value() {
    let e = error(
        "backends:\n  web:\n    endpoints:\n      - \"127.0.0.1:9001\"\n      - fd00::5:8080\n",
    );
    assert!(e.starts_with("f.yaml:5:9: "), "{e}");
    assert!(e.contains("\"fd00::5:8080\""), "{e}");
    assert!(e.contains("[fd00::5]:8080"), "{e}");
    assert!(e.contains("backend \"web\""), "{e}");
}

#[test]
fn endpoint_that_is_not_a_socket_address() {
    for (endpoint, hint) in [
        ("local host:80", "NAME:PORT"),
        ("10.0.0.1", "no port"),
        ("[::1]", "no port"),
        (
            "127.0.0.1:99999",
            "port \"99999\" is not a number from 0 to 65535",
        ),
    ] {
        let e = error(&format!(
            "backends:\n  b:\n    endpoints: [\"{endpoint}\"]\n"
        ));
        assert!(e.starts_with("f.yaml:3:17: backend \"b\": "), "{e}");
        assert!(e.contains(&format!("{endpoint:?}")), "{e}");
        assert!(e.contains(hint), "{endpoint}: {e}");
    }
}

#[test]
fn listen_and_admin_addresses_are_validated_too() {
    let all = errors("listen: [\"::1:80\", \"0.0.0.0:8080\"]\nadmin: \"::1:9901\"\n");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0].starts_with("f.yaml:1:10: listen: \"::1:80\"") && all[0].contains("\"[::1]:80\""),
        "{}",
        all[0]
    );
    assert!(
        all[1].starts_with("f.yaml:2:8: admin: \"::1:9901\"") && all[1].contains("\"[::1]:9901\""),
        "{}",
        all[1]
    );
}

#[test]
fn route_to_an_undefined_backend_names_it() {
    let e = error(
        "routes:\n  - host: app.example.com\n    paths:\n      - path: /\n        backend: missing\nbackends:\n  b: {}\n",
    );
    assert_eq!(
        e,
        "f.yaml:5:18: backend \"missing\" is not defined under \"backends\""
    );
}

#[test]
fn undefined_default_backend_names_it() {
    let e = error("defaultBackend: nope\nbackends:\n  b: {}\n");
    assert_eq!(
        e,
        "f.yaml:1:17: backend \"nope\" is not defined under \"backends\""
    );
}

#[test]
fn path_must_start_with_slash() {
    let e =
        error("routes:\n  - paths:\n      - path: api\n        backend: b\nbackends:\n  b: {}\n");
    assert_eq!(e, "f.yaml:3:15: path \"api\" must start with \"/\"");
}

#[test]
fn ip_literal_hosts_are_rejected() {
    for host in ["10.0.0.1", "\"::1\"", "\"[::1]\"", "\"[2001:db8::1]\""] {
        let e = error(&format!(
            "routes:\n  - host: {host}\n    paths: [{{path: /, backend: b}}]\nbackends:\n  b: {{}}\n"
        ));
        assert!(e.starts_with("f.yaml:2:11: host "), "{host}: {e}");
        assert!(e.contains("is an IP address"), "{host}: {e}");
    }
}

#[test]
fn bare_star_host_is_rejected() {
    let e =
        error("routes:\n  - host: \"*\"\n    paths: [{path: /, backend: b}]\nbackends:\n  b: {}\n");
    assert_eq!(
        e,
        "f.yaml:2:11: host \"*\": a bare \"*\" is not allowed; omit host to match any host"
    );
}

#[test]
fn malformed_hosts_are_rejected() {
    for host in [
        "\"a b\"",
        "\"a.*.com\"",
        "\"*a.com\"",
        "-a.com",
        "\"a..com\"",
    ] {
        let e = error(&format!(
            "routes:\n  - host: {host}\n    paths: [{{path: /, backend: b}}]\nbackends:\n  b: {{}}\n"
        ));
        assert!(e.starts_with("f.yaml:2:11: host "), "{host}: {e}");
    }
}

#[test]
fn uppercase_host_is_folded_not_an_error() {
    let m = ok(
        "routes:\n  - host: App.EXAMPLE.com\n    paths: [{path: /, backend: b}]\n  - host: \"*.Example.COM.\"\n    paths: [{path: /, backend: b}]\nbackends:\n  b: {}\n",
    );
    assert_eq!(
        m.rules[0].host,
        Some(HostMatch::Exact("app.example.com".into()))
    );
    assert_eq!(
        m.rules[1].host,
        Some(HostMatch::Wildcard("example.com".into()))
    );
}

#[test]
fn unknown_top_level_key_has_a_location() {
    let e = error("backends:\n  b: {}\nbogus: 1\n");
    assert!(e.starts_with("f.yaml:3:1: unknown field `bogus`"), "{e}");
    assert!(e.contains("defaultBackend"), "lists the valid keys: {e}");
}

#[test]
fn misspelled_nested_keys_have_a_location() {
    let cases = [
        (
            "routes:\n  - paths:\n      - path: /\n        pathtype: Exact\n        backend: b\nbackends:\n  b: {}\n",
            "f.yaml:4:9: unknown field `pathtype`",
        ),
        (
            "routes:\n  - paths: [{path: /, pathtype: Exact, backend: b}]\nbackends:\n  b: {}\n",
            "f.yaml:2:23: unknown field `pathtype`",
        ),
        (
            "backends:\n  b:\n    endpoint: []\n",
            "f.yaml:3:5: unknown field `endpoint`",
        ),
        (
            "timeouts:\n  connect: 1s\n  conect: 2s\n",
            "f.yaml:3:3: unknown field `conect`",
        ),
        (
            "routes:\n  - hosts: a.example.com\n    paths: []\n",
            "f.yaml:2:5: unknown field `hosts`",
        ),
    ];
    for (text, want) in cases {
        let e = error(text);
        assert!(e.starts_with(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn invalid_path_type_is_rejected() {
    let e = error(
        "routes:\n  - paths:\n      - path: /\n        pathType: Regex\n        backend: b\nbackends:\n  b: {}\n",
    );
    assert_eq!(
        e,
        "f.yaml:4:19: pathType \"Regex\" is not one of Exact, Prefix, ImplementationSpecific"
    );
    // Case matters, as in Kubernetes.
    let e = error(
        "routes:\n  - paths:\n      - path: /\n        pathType: exact\n        backend: b\nbackends:\n  b: {}\n",
    );
    assert!(e.starts_with("f.yaml:4:19: pathType \"exact\""), "{e}");
}

#[test]
fn path_types_map_to_kinds() {
    let m = ok(
        "routes:\n  - paths:\n      - {path: /a, pathType: Exact, backend: b}\n      - {path: /b, pathType: Prefix, backend: b}\n      - {path: /c, pathType: ImplementationSpecific, backend: b}\n      - {path: /d, backend: b}\nbackends:\n  b: {}\n",
    );
    let kinds: Vec<PathKind> = m.rules[0].paths.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            PathKind::Exact,
            PathKind::Prefix,
            PathKind::Prefix,
            PathKind::Prefix
        ]
    );
}

#[test]
fn several_errors_in_one_file_are_all_reported() {
    let text = "\
listen: [\"0.0.0.0:8080\"]
routes:
  - host: \"*\"
    paths:
      - path: /ok
        backend: web
  - host: app.example.com
    paths:
      - path: nope
        pathType: Sometimes
        backend: ghost
defaultBackend: phantom
backends:
  web:
    endpoints: [\"127.0.0.1:9001\", \"fd00::5:8080\"]
timeouts:
  connect: soon
";
    let all = errors(text);
    let locations: Vec<&str> = all.iter().map(|e| e.split(": ").next().unwrap()).collect();
    let mut sorted = locations.clone();
    sorted.sort_by_key(|l| {
        let mut it = l.split(':').skip(1).map(|n| n.parse::<u64>().unwrap());
        (it.next(), it.next())
    });
    assert_eq!(
        locations, sorted,
        "errors are reported in file order: {all:#?}"
    );
    let want = [
        ("f.yaml:3:11", "a bare \"*\" is not allowed"),
        ("f.yaml:9:15", "path \"nope\" must start with \"/\""),
        ("f.yaml:10:19", "pathType \"Sometimes\""),
        ("f.yaml:11:18", "backend \"ghost\" is not defined"),
        ("f.yaml:12:17", "backend \"phantom\" is not defined"),
        ("f.yaml:15:35", "write \"[fd00::5]:8080\""),
        (
            "f.yaml:17:12",
            "timeouts.connect: \"soon\" is not a duration",
        ),
    ];
    assert_eq!(all.len(), want.len(), "{all:#?}");
    for (loc, fragment) in want {
        assert!(
            all.iter()
                .any(|e| e.starts_with(&format!("{loc}: ")) && e.contains(fragment)),
            "missing {loc}: ...{fragment}... in {all:#?}"
        );
    }
}

#[test]
fn errors_display_one_per_line() {
    let e = parse(
        "dir/f.yaml",
        "defaultBackend: x\nroutes:\n  - paths: [{path: /, backend: y}]\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "dir/f.yaml:1:17: backend \"x\" is not defined under \"backends\"\n\
         dir/f.yaml:3:32: backend \"y\" is not defined under \"backends\""
    );
}

#[test]
fn json_with_the_same_keys_loads() {
    let json = r#"{
  "listen": ["127.0.0.1:8080", "[::1]:8080"],
  "admin": "[::1]:9901",
  "routes": [
    {"host": "app.example.com",
     "paths": [{"path": "/api", "pathType": "Exact", "backend": "api"}]},
    {"paths": [{"path": "/", "backend": "web"}]}
  ],
  "defaultBackend": "web",
  "backends": {
    "api": {"endpoints": ["[fd00::5]:8080"]},
    "web": {"endpoints": ["127.0.0.1:9001", "[::1]:9002"]}
  },
  "timeouts": {"connect": "250ms"}
}"#;
    let f = file(json);
    assert_eq!(
        f.bootstrap.listen,
        [addr("127.0.0.1:8080"), addr("[::1]:8080")]
    );
    assert_eq!(f.bootstrap.admin, [addr("[::1]:9901")]);
    let m = f.model;
    assert_eq!(m.default_backend.as_deref(), Some("web"));
    assert_eq!(m.rules.len(), 2);
    assert_eq!(
        m.rules[0].host,
        Some(HostMatch::Exact("app.example.com".into()))
    );
    assert_eq!(m.rules[0].paths[0].kind, PathKind::Exact);
    assert_eq!(m.rules[1].host, None);
    assert_eq!(m.backends["api"].endpoints, [addr("[fd00::5]:8080")]);
    assert_eq!(
        m.backends["web"].endpoints,
        [addr("127.0.0.1:9001"), addr("[::1]:9002")]
    );
    assert_eq!(m.timeouts.connect, Duration::from_millis(250));
}

#[test]
fn json_errors_have_locations_too() {
    let all =
        errors(r#"{"backends": {"b": {"endpoints": ["fd00::5:8080"]}}, "defaultBackend": "x"}"#);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0].starts_with("f.yaml:1:35: ") && all[0].contains("[fd00::5]:8080"),
        "{all:#?}"
    );
    assert!(all[1].starts_with("f.yaml:1:72: backend \"x\""), "{all:#?}");
    let e = error(r#"{"backends": {"b": {}}, "bogus": 1}"#);
    assert!(e.starts_with("f.yaml:1:25: unknown field `bogus`"), "{e}");
}

#[test]
fn defaults_when_omitted() {
    let f = file("backends:\n  b: {}\n");
    let (b, m) = (f.bootstrap, f.model);
    assert_eq!(b.listen, [addr("0.0.0.0:8080"), addr("[::]:8080")]);
    assert_eq!(b.listen, model::default_listen());
    assert!(b.admin.is_empty());
    assert!(m.rules.is_empty());
    assert_eq!(m.default_backend, None);
    assert_eq!(
        b.timeouts,
        ClientTimeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            drain: Duration::from_secs(30),
        }
    );
    assert_eq!(
        m.timeouts,
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            upstream_read: Duration::from_secs(60),
            client_write: Duration::from_secs(60),
        }
    );
    assert_eq!(m.connect_retries, 2);
    assert!(m.redirect_to_https);
    assert!(b.listen_tls.is_empty());
    assert_eq!(m.backends["b"].endpoints, []);
    assert_eq!(m.backends["b"].protocol, Protocol::Http1);
}

#[test]
fn a_file_with_only_a_comment_or_listen_still_loads() {
    let f = file("listen: [\"[::1]:0\"]\n");
    assert_eq!(f.bootstrap.listen, [addr("[::1]:0")]);
    assert!(f.model.backends.is_empty());
}

#[test]
fn timeouts_parse_human_durations_and_keep_defaults_for_the_rest() {
    let f = file("timeouts:\n  connect: 500ms\n  response: 2m\n  drain: \"1m 30s\"\n");
    let d = ClientTimeouts::default();
    assert_eq!(f.model.timeouts.connect, Duration::from_millis(500));
    assert_eq!(f.model.timeouts.response, Duration::from_secs(120));
    assert_eq!(f.bootstrap.timeouts.drain, Duration::from_secs(90));
    assert_eq!(f.bootstrap.timeouts.header_read, d.header_read);
    assert_eq!(f.bootstrap.timeouts.idle, d.idle);
}

#[test]
fn invalid_and_zero_timeouts_are_rejected() {
    let e = error("timeouts:\n  connect: 5 parsecs\n");
    assert!(
        e.starts_with("f.yaml:2:12: timeouts.connect: \"5 parsecs\" is not a duration"),
        "{e}"
    );
    let e = error("timeouts:\n  idle: 0s\n");
    assert_eq!(e, "f.yaml:2:9: timeouts.idle must be greater than zero");
}

#[test]
fn an_empty_file_is_an_error() {
    for text in ["", "\n", "   \n\t\n"] {
        assert_eq!(
            error(text),
            "f.yaml:1:1: the configuration is empty",
            "{text:?}"
        );
    }
}

#[test]
fn yaml_syntax_errors_have_a_line_and_column() {
    let cases = [
        ("routes: [\n", "f.yaml:1:9: "),
        (
            "backends:\n  b: {endpoints: [\"127.0.0.1:1\"]\n",
            "f.yaml:2:6: ",
        ),
        ("backends:\n  b:\n\tendpoints: []\n", "f.yaml:3:2: "),
        (
            "backends:\n  b:\n    endpoints: []\n   c: {}\n",
            "f.yaml:4:4: ",
        ),
    ];
    for (text, want) in cases {
        let e = error(text);
        assert!(e.starts_with(want), "{text:?}: want {want:?}, got {e:?}");
        let message = &e[want.len()..];
        assert!(!message.is_empty() && !message.contains('\n'), "{e:?}");
    }
}

#[test]
fn wrong_types_have_a_line_and_column() {
    let cases = [
        ("routes: 5\n", "f.yaml:1:9: "),
        ("backends:\n  b:\n    endpoints: 5\n", "f.yaml:3:16: "),
        (
            "backends:\n  b: {}\nredirectToHttps: maybe\n",
            "f.yaml:3:18: ",
        ),
        ("- a\n- b\n", "f.yaml:1:1: "),
    ];
    for (text, want) in cases {
        let e = error(text);
        assert!(e.starts_with(want), "{text:?}: want {want:?}, got {e:?}");
    }
}

#[test]
fn windows_line_endings_and_a_byte_order_mark_keep_locations_right() {
    assert_eq!(
        error("backends:\r\n  b: {}\r\ndefaultBackend: nope\r\n"),
        "f.yaml:3:17: backend \"nope\" is not defined under \"backends\""
    );
    assert_eq!(
        error("\u{feff}defaultBackend: nope\nbackends:\n  b: {}\n"),
        "f.yaml:1:17: backend \"nope\" is not defined under \"backends\""
    );
}

#[test]
fn load_names_the_file_and_reports_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("dsi-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "defaultBackend: nope\n").unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:1:17: backend \"nope\" is not defined under \"backends\"",
            path.display()
        )
    );
    let missing = dir.join("missing.yaml");
    let e = load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:0:0: cannot read file", missing.display())),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_embedded_example_is_valid() {
    let f = file(EMBEDDED_DEFAULT);
    assert_eq!(f.bootstrap.listen, model::default_listen());
    assert_eq!(
        f.bootstrap.admin,
        [addr("127.0.0.1:9901"), addr("[::1]:9901")]
    );
    assert_eq!(f.bootstrap.timeouts, ClientTimeouts::default());
    let m = f.model;
    assert!(m
        .backends
        .values()
        .any(|b| b.endpoints.iter().any(std::net::SocketAddr::is_ipv4)));
    assert!(m
        .backends
        .values()
        .any(|b| b.endpoints.iter().any(std::net::SocketAddr::is_ipv6)));
}

#[test]
fn errors_under_an_invalid_host_are_reported_too() {
    let all = errors(
        "routes:\n  - host: \"*\"\n    paths:\n      - path: nope\n        backend: ghost\n",
    );
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all[0].starts_with("f.yaml:2:11: host \"*\""), "{all:#?}");
    assert!(all[1].starts_with("f.yaml:4:15: path \"nope\""), "{all:#?}");
    assert!(
        all[2].starts_with("f.yaml:5:18: backend \"ghost\""),
        "{all:#?}"
    );
}

#[test]
fn admin_is_one_address_or_a_list() {
    let f = file("admin: \"127.0.0.1:9901\"\n");
    assert_eq!(f.bootstrap.admin, [addr("127.0.0.1:9901")]);
    let f = file("admin: [\"0.0.0.0:9901\", \"[::]:9901\"]\n");
    assert_eq!(f.bootstrap.admin, [addr("0.0.0.0:9901"), addr("[::]:9901")]);
    let e = error("admin: [\"0.0.0.0:9901\", \"::9901\"]\n");
    assert!(e.starts_with("f.yaml:1:25: admin: \"::9901\""), "{e}");
}

#[test]
fn connect_retries_is_bounded() {
    assert_eq!(ok("connectRetries: 0\n").connect_retries, 0);
    assert_eq!(ok("connectRetries: 5\n").connect_retries, 5);
    let e = error("connectRetries: 100\n");
    assert_eq!(e, "f.yaml:1:17: connectRetries must be between 0 and 16");
    let e = error("connectRetries: -1\n");
    assert!(e.starts_with("f.yaml:1:17: connectRetries"), "{e}");
}

#[test]
fn kubernetes_mode_rejects_routing_keys_and_defaults_tls_listeners() {
    let text =
        "listen: [\"[::]:8080\"]\nroutes:\n  - paths: []\ndefaultBackend: b\nbackends:\n  b: {}\n";
    let all: Vec<String> = match parse_for("f.yaml", text, Mode::Kubernetes) {
        Ok(f) => panic!("expected errors, got {f:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all[0].starts_with("f.yaml:3:3: \"routes\" is not allowed with --kubernetes"),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("f.yaml:4:17: \"defaultBackend\" is not allowed"),
        "{all:#?}"
    );
    assert!(
        all[2].starts_with("f.yaml:6:3: \"backends\" is not allowed"),
        "{all:#?}"
    );
    let f = parse_for("f.yaml", "redirectToHttps: false\n", Mode::Kubernetes).unwrap();
    assert_eq!(f.bootstrap.listen_tls, model::default_listen_tls());
    assert!(!f.model.redirect_to_https);
}

#[test]
fn endpoints_may_be_dns_names() {
    let m = ok("backends:\n  b:\n    endpoints: [\"127.0.0.1:1\", \"Svc.Example.:8080\"]\n");
    assert_eq!(m.backends["b"].endpoints, [addr("127.0.0.1:1")]);
    assert_eq!(
        m.backends["b"].named,
        [crate::model::NamedEndpoint {
            host: "svc.example".into(),
            port: 8080
        }]
    );
}

#[test]
fn upstream_read_and_client_write_parse_and_are_validated() {
    let m = ok("timeouts:\n  upstreamRead: 250ms\n  clientWrite: 2m\n");
    assert_eq!(m.timeouts.upstream_read, Duration::from_millis(250));
    assert_eq!(m.timeouts.client_write, Duration::from_secs(120));
    assert_eq!(m.timeouts.response, UpstreamTimeouts::default().response);
    let e = error("timeouts:\n  upstreamRead: 0s\n");
    assert_eq!(
        e,
        "f.yaml:2:17: timeouts.upstreamRead must be greater than zero"
    );
    let e = error("timeouts:\n  clientWrite: soon\n");
    assert!(
        e.starts_with("f.yaml:2:16: timeouts.clientWrite: \"soon\" is not a duration"),
        "{e}"
    );
}

#[test]
fn errors_quote_only_a_short_prefix_of_a_huge_value() {
    let huge = "a".repeat(1_000_000);
    let cases = [
        format!("defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{huge}\"]\n"),
        format!("routes:\n  - host: \"{huge}!\"\n    paths: []\n"),
        format!("routes:\n  - paths:\n      - path: \"{huge}\"\n        backend: b\nbackends:\n  b: {{}}\n"),
        format!("defaultBackend: \"{huge}\"\n"),
        format!("timeouts:\n  connect: \"{huge}\"\n"),
        format!("listen: [\"127.0.0.1:{huge}\"]\n"),
        format!("defaultBackend: b\nbackends:\n  b:\n    protocol: \"{huge}\"\n"),
        format!("routes:\n  - paths:\n      - path: /\n        pathType: \"{huge}\"\n        backend: b\nbackends:\n  b: {{}}\n"),
    ];
    for text in &cases {
        for e in errors(text) {
            assert!(e.len() < 400, "{} bytes: {}…", e.len(), &e[..200]);
            assert!(e.contains(&format!("\"{}\"… (", "a".repeat(64))), "{e}");
        }
    }
    assert_eq!(quote("short"), "\"short\"");
    assert_eq!(
        quote(&"é".repeat(65)),
        format!("{:?}… (130 bytes)", "é".repeat(64))
    );
}

#[test]
fn the_parser_limit_admits_100000_routes() {
    let mut text = String::from("backends:\n  b: {}\nroutes:\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "  - host: h{i}.example.com\n    paths: [{{path: /p, backend: b}}]\n"
        ));
    }
    assert_eq!(ok(&text).rules.len(), 100_000);
}

#[test]
fn a_breached_parser_limit_is_named_in_words() {
    let e = explain_limit("budget breached: Nodes { nodes: 4000001 }".into());
    assert!(
        e.starts_with(
            "the configuration is larger than the parser reads: at most 4000000 YAML nodes"
        ),
        "{e}"
    );
    assert_eq!(
        explain_limit("unknown field `x`".into()),
        "unknown field `x`"
    );
}

#[test]
fn listen_entries_may_be_maps_with_proxy_protocol() {
    let f = file(
        "listen:\n  - \"127.0.0.1:8080\"\n  - {address: \"[::]:8080\", proxyProtocol: true}\nlistenTls:\n  - address: \"[::1]:8443\"\n",
    );
    assert_eq!(
        f.bootstrap.listen,
        [
            model::ListenAddr::plain(addr("127.0.0.1:8080")),
            model::ListenAddr {
                addr: addr("[::]:8080"),
                proxy_protocol: true,
            },
        ]
    );
    assert_eq!(f.bootstrap.listen_tls, [addr("[::1]:8443")]);
}

#[test]
fn listen_map_errors_keep_their_location() {
    let e =
        error("listen:\n  - \"127.0.0.1:8080\"\n  - {address: \"::1:80\", proxyProtocol: true}\n");
    assert!(e.starts_with("f.yaml:3:15: listen: \"::1:80\""), "{e}");
    assert!(e.contains("[::1]:80"), "{e}");
    let e = error("listen:\n  - {address: \"[::1]:80\", proxy: true}\n");
    assert!(e.starts_with("f.yaml:2:"), "{e}");
    assert!(e.contains("proxy"), "{e}");
    let e = error("listenTls:\n  - {proxyProtocol: true}\n");
    assert!(e.starts_with("f.yaml:2:"), "{e}");
    assert!(e.contains("address"), "{e}");
}

#[test]
fn trusted_proxies_and_allow_lists_are_ranges() {
    let m = ok("trustedProxies: [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.1\"]\nroutes:\n  - paths:\n      - path: /admin\n        backend: b\n        allow: [\"10.1.2.3/16\", \"::ffff:198.51.100.0/120\", \"2001:db8::/32\"]\nbackends:\n  b: {}\n");
    let nets = |l: &[&str]| -> Vec<ipnet::IpNet> { l.iter().map(|n| n.parse().unwrap()).collect() };
    assert_eq!(
        m.trusted_proxies,
        nets(&["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"])
    );
    assert_eq!(
        m.rules[0].paths[0].allow,
        nets(&["10.1.0.0/16", "198.51.100.0/24", "2001:db8::/32"])
    );
    assert!(ok("defaultBackend: b\nbackends:\n  b: {}\n")
        .trusted_proxies
        .is_empty());
}

#[test]
fn bad_ranges_and_zone_ids_are_errors_at_their_entry() {
    let all = errors(
        "trustedProxies: [\"10.0.0.0/33\", \"fe80::1%eth0/64\"]\nroutes:\n  - paths:\n      - path: /\n        backend: b\n        allow:\n          - \"not a range\"\n          - \"fe80::%2/10\"\nbackends:\n  b: {}\n",
    );
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(
        all[0].starts_with("f.yaml:1:18: trustedProxies: \"10.0.0.0/33\" is not an address range"),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("f.yaml:1:33: trustedProxies: \"fe80::1%eth0/64\": zone ids"),
        "{all:#?}"
    );
    assert!(
        all[2].starts_with("f.yaml:7:13: allow: \"not a range\" is not an address range"),
        "{all:#?}"
    );
    assert!(
        all[3].starts_with("f.yaml:8:13: allow: \"fe80::%2/10\": zone ids"),
        "{all:#?}"
    );
}

#[test]
fn limits_default_and_configured() {
    let f = file("backends: {}\n");
    assert_eq!(f.bootstrap.limits, ConnectionLimits::default());
    assert_eq!(
        f.model.max_request_body,
        Some(model::DEFAULT_MAX_REQUEST_BODY)
    );
    let f = file(
        "limits:\n  maxConnections: 10\n  maxRequestBody: 2048\n  http2MaxConcurrentStreams: 5\n  \
         http2MaxHeaderListSize: 8192\n  http2MaxPendingAcceptResetStreams: 3\n  \
         http2MaxLocalErrorResetStreams: 4\n",
    );
    assert_eq!(
        f.bootstrap.limits,
        ConnectionLimits {
            max_connections: 10,
            http2_max_concurrent_streams: 5,
            http2_max_header_list_size: 8192,
            http2_max_pending_accept_reset_streams: 3,
            http2_max_local_error_reset_streams: 4,
        }
    );
    assert_eq!(f.model.max_request_body, Some(2048));
    // 0: no body limit, as nginx's client_max_body_size 0.
    assert_eq!(ok("limits:\n  maxRequestBody: 0\n").max_request_body, None);
}

#[test]
fn bad_limits_point_at_their_values() {
    let all = errors("limits:\n  maxConnections: -1\n  http2MaxHeaderListSize: 20000000\n");
    assert_eq!(
        all,
        [
            "f.yaml:2:19: limits.maxConnections must be between 1 and 16777216, not -1",
            "f.yaml:3:27: limits.http2MaxHeaderListSize must be between 1024 and 16777216, not 20000000",
        ]
    );
    let e = error("limits:\n  maxRequestBody: -1\n");
    assert!(e.starts_with("f.yaml:2:19: limits.maxRequestBody"), "{e}");
    let e = error("limits:\n  maxConnection: 5\n");
    assert!(e.starts_with("f.yaml:2:3: "), "{e}");
    assert!(e.contains("maxConnection"), "{e}");
}

#[test]
fn kubernetes_mode_accepts_limits() {
    let f = parse_for(
        "f.yaml",
        "limits:\n  maxConnections: 7\n  maxRequestBody: 10\n",
        Mode::Kubernetes,
    )
    .unwrap();
    assert_eq!(f.bootstrap.limits.max_connections, 7);
    assert_eq!(f.model.max_request_body, Some(10));
}

#[test]
fn resolver_is_a_list_of_dns_servers_fixed_at_start() {
    let f = file("resolver: [\"127.0.0.1:5353\", \"[::1]\", \"10.96.0.10\"]\n");
    assert_eq!(
        f.bootstrap.resolver,
        [
            addr("127.0.0.1:5353"),
            addr("[::1]:53"),
            addr("10.96.0.10:53")
        ]
    );
    assert_eq!(
        file("resolver: \"1.1.1.1\"\n").bootstrap.resolver,
        [addr("1.1.1.1:53")]
    );
    assert!(
        file("defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"127.0.0.1:1\"]\n")
            .bootstrap
            .resolver
            .is_empty()
    );
    let e = error("resolver:\n  - \"127.0.0.1\"\n  - fd00::10\n");
    assert!(
        e.starts_with("f.yaml:3:5: resolver: \"fd00::10\": an IPv6 DNS server must be bracketed"),
        "{e}"
    );
    let e = error("resolver: [\"dns.example\"]\n");
    assert!(
        e.starts_with("f.yaml:1:12: resolver: \"dns.example\" is not a DNS server address"),
        "{e}"
    );
    // A controller's settings file may name DNS servers too (ExternalName Services).
    let k = parse_for("f.yaml", "resolver: [\"[::1]:5353\"]\n", Mode::Kubernetes).unwrap();
    assert_eq!(k.bootstrap.resolver, [addr("[::1]:5353")]);
}
