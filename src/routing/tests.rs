//! Kubernetes Ingress v1 routing semantics, table-driven: each case is (Host header, path, expected backend
//! name or `None` for 404) against a table compiled from a YAML model.

use super::*;

/// Backends `a` .. `h` and `dflt`, without endpoints: routing only looks at names.
const BACKENDS: &str = "
backends:
  a: {}
  b: {}
  c: {}
  d: {}
  e: {}
  f: {}
  g: {}
  h: {}
  dflt: {}
";

fn table(yaml: &str) -> Table {
    let text = format!("{yaml}\n{BACKENDS}");
    let model = crate::config::parse("test.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .model;
    Table::compile_fresh(&model)
}

/// The backend chosen for a request with `Host: host` and `path`, by name.
fn route(table: &Table, host: &str, path: &str) -> Option<String> {
    let mut scratch = String::new();
    let host = host::parse(host, &mut scratch);
    table
        .lookup(&host, path)
        .map(|t| t.backend.name().to_string())
}

/// Checks every `(host, path, want)` case and reports all mismatches at once.
fn check(table: &Table, cases: &[(&str, &str, Option<&str>)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(host, path, want)| {
            let got = route(table, host, path);
            (got.as_deref() != want)
                .then(|| format!("Host {host:?} path {path:?}: want {want:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn request_host_parsing() {
    let cases = [
        ("[::1]:8080", RequestHost::IpLiteral),
        ("[::1]", RequestHost::IpLiteral),
        ("[2001:db8::1]:443", RequestHost::IpLiteral),
        ("[::ffff:127.0.0.1]:80", RequestHost::IpLiteral),
        ("127.0.0.1", RequestHost::IpLiteral),
        ("127.0.0.1:8080", RequestHost::IpLiteral),
        ("example.com", RequestHost::Name("example.com")),
        ("example.com:8080", RequestHost::Name("example.com")),
        ("EXAMPLE.com.", RequestHost::Name("example.com")),
        ("EXAMPLE.com.:8080", RequestHost::Name("example.com")),
        ("Bar.Foo.Com", RequestHost::Name("bar.foo.com")),
        ("", RequestHost::Missing),
    ];
    // Each case twice in a row (the second answer is the remembered one), and the cases one after another
    // (each replaces the remembered one).
    for (text, want) in cases {
        for round in ["first", "remembered"] {
            let mut scratch = String::new();
            assert_eq!(
                host::parse(text, &mut scratch),
                want,
                "Host {text:?}, {round} parse"
            );
        }
    }
}

#[test]
fn exact_host_beats_wildcard_and_wildcard_is_one_label() {
    // The wildcard rule comes first in the file: order must not matter.
    let t = table(
        r#"
routes:
  - host: "*.foo.com"
    paths: [{path: /, backend: a}]
  - host: bar.foo.com
    paths: [{path: /, backend: b}]
defaultBackend: dflt
"#,
    );
    check(
        &t,
        &[
            ("bar.foo.com", "/", Some("b")),
            ("BAR.foo.com.", "/x", Some("b")),
            ("bar.foo.com:8080", "/x", Some("b")),
            ("qux.foo.com", "/", Some("a")),
            ("Qux.FOO.com:81", "/deep/path", Some("a")),
            // Exactly one label: not the parent, not two labels.
            ("foo.com", "/", Some("dflt")),
            ("baz.bar.foo.com", "/", Some("dflt")),
            ("barfoo.com", "/", Some("dflt")),
            ("other.org", "/", Some("dflt")),
        ],
    );
}

#[test]
fn ip_literal_host_skips_host_rules_then_hostless_rules_then_default() {
    let t = table(
        r#"
routes:
  - host: localhost
    paths: [{path: /, backend: a}]
  - host: "*.foo.com"
    paths: [{path: /, backend: b}]
  - paths: [{path: /api, backend: c}]
defaultBackend: dflt
"#,
    );
    check(
        &t,
        &[
            ("localhost", "/api", Some("a")),
            ("localhost:8080", "/anything", Some("a")),
            ("x.foo.com", "/api", Some("b")),
            // IP literals never match a host rule.
            ("[::1]:8080", "/api", Some("c")),
            ("[::1]", "/api/v1", Some("c")),
            ("127.0.0.1:8080", "/api", Some("c")),
            ("[::1]:8080", "/other", Some("dflt")),
            ("127.0.0.1", "/", Some("dflt")),
            // A host matching no rule also uses the host-less rules.
            ("unknown.example", "/api", Some("c")),
            ("unknown.example", "/web", Some("dflt")),
            // No Host at all: host-less rules, then default.
            ("", "/api", Some("c")),
            ("", "/", Some("dflt")),
        ],
    );
}

#[test]
fn exact_path_is_byte_exact_and_case_sensitive() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths:
      - {path: /foo, pathType: Exact, backend: a}
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/foo", Some("a")),
            ("app.example.com", "/foo/", None),
            ("app.example.com", "/Foo", None),
            ("app.example.com", "/FOO", None),
            ("app.example.com", "/foo/bar", None),
            ("app.example.com", "/fo", None),
            ("app.example.com", "//foo", None),
            ("app.example.com", "/", None),
        ],
    );
}

#[test]
fn prefix_matches_element_by_element() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths:
      - {path: /aaa/bbb, pathType: Prefix, backend: a}
      - {path: /foo/, pathType: Prefix, backend: b}
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/aaa/bbb", Some("a")),
            ("app.example.com", "/aaa/bbb/", Some("a")),
            ("app.example.com", "/aaa/bbb/ccc", Some("a")),
            ("app.example.com", "/aaa/bbb/ccc/ddd/", Some("a")),
            ("app.example.com", "/aaa/bbbxyz", None),
            ("app.example.com", "/aaa/bb", None),
            ("app.example.com", "/aaa", None),
            ("app.example.com", "/aaa/", None),
            ("app.example.com", "/AAA/bbb", None),
            // A trailing slash in the rule does not matter.
            ("app.example.com", "/foo", Some("b")),
            ("app.example.com", "/foo/", Some("b")),
            ("app.example.com", "/foo/x", Some("b")),
            ("app.example.com", "/foobar", None),
        ],
    );
}

#[test]
fn prefix_without_trailing_slash_matches_path_with_one() {
    let t = table(
        r#"
routes:
  - paths: [{path: /foo, backend: a}]
"#,
    );
    check(
        &t,
        &[
            ("h.example", "/foo", Some("a")),
            ("h.example", "/foo/", Some("a")),
            ("h.example", "/foo/bar", Some("a")),
            ("h.example", "/foobar", None),
            ("h.example", "/fo", None),
        ],
    );
}

#[test]
fn longest_matching_path_wins() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths:
      - {path: /, backend: a}
      - {path: /aaa/bbb/ccc, backend: c}
      - {path: /aaa, backend: b}
      - {path: /aaa/bbb/ccc/ddd, pathType: Exact, backend: d}
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/", Some("a")),
            ("app.example.com", "/x", Some("a")),
            ("app.example.com", "/aaa", Some("b")),
            ("app.example.com", "/aaa/bbb", Some("b")),
            ("app.example.com", "/aaa/bbb/ccc", Some("c")),
            ("app.example.com", "/aaa/bbb/ccc/x", Some("c")),
            ("app.example.com", "/aaa/bbb/ccc/ddd", Some("d")),
            // The Exact rule does not match with a trailing slash; the longest prefix does.
            ("app.example.com", "/aaa/bbb/ccc/ddd/", Some("c")),
            ("app.example.com", "/aaab", Some("a")),
        ],
    );
}

#[test]
fn on_a_tie_exact_beats_prefix_whatever_the_order() {
    let exact_first = table(
        r#"
routes:
  - host: app.example.com
    paths:
      - {path: /foo, pathType: Exact, backend: a}
      - {path: /foo, pathType: Prefix, backend: b}
"#,
    );
    let prefix_first = table(
        r#"
routes:
  - host: app.example.com
    paths:
      - {path: /foo, pathType: Prefix, backend: b}
      - {path: /foo, pathType: Exact, backend: a}
"#,
    );
    let cases = [
        ("app.example.com", "/foo", Some("a")),
        ("app.example.com", "/foo/", Some("b")),
        ("app.example.com", "/foo/bar", Some("b")),
        ("app.example.com", "/foobar", None),
    ];
    check(&exact_first, &cases);
    check(&prefix_first, &cases);
}

#[test]
fn host_matches_but_no_path_goes_to_default_backend() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths: [{path: /api, backend: a}]
  - paths: [{path: /, backend: b}]
defaultBackend: dflt
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/api/x", Some("a")),
            // The host rule matched, so host-less rules are not consulted: the default answers.
            ("app.example.com", "/web", Some("dflt")),
            ("other.example.com", "/web", Some("b")),
        ],
    );
}

#[test]
fn without_default_backend_unmatched_requests_get_nothing() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths: [{path: /api, backend: a}]
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/api", Some("a")),
            ("app.example.com", "/web", None),
            ("other.example.com", "/api", None),
            ("[::1]:8080", "/api", None),
        ],
    );
    let empty = table("routes: []");
    check(&empty, &[("app.example.com", "/", None), ("", "/", None)]);
}

#[test]
fn default_backend_alone_answers_everything() {
    let t = table("defaultBackend: dflt");
    check(
        &t,
        &[
            ("app.example.com", "/", Some("dflt")),
            ("[::1]:8080", "/x/y", Some("dflt")),
            ("", "/", Some("dflt")),
        ],
    );
}

#[test]
fn root_prefix_matches_everything() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths: [{path: /, pathType: Prefix, backend: a}]
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/", Some("a")),
            ("app.example.com", "/x", Some("a")),
            ("app.example.com", "/x/y/z/", Some("a")),
            ("app.example.com", "//", Some("a")),
            ("app.example.com", "/%2F", Some("a")),
            ("other.example.com", "/", None),
        ],
    );
}

#[test]
fn implementation_specific_behaves_like_prefix() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths:
      - {path: /aaa/bbb, pathType: ImplementationSpecific, backend: a}
      - {path: /foo/, pathType: ImplementationSpecific, backend: b}
      - {path: /x, pathType: Exact, backend: c}
      - {path: /x, pathType: ImplementationSpecific, backend: d}
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/aaa/bbb", Some("a")),
            ("app.example.com", "/aaa/bbb/", Some("a")),
            ("app.example.com", "/aaa/bbb/ccc", Some("a")),
            ("app.example.com", "/aaa/bbbxyz", None),
            ("app.example.com", "/foo", Some("b")),
            ("app.example.com", "/x", Some("c")),
            ("app.example.com", "/x/y", Some("d")),
        ],
    );
}

#[test]
fn path_type_defaults_to_prefix() {
    let t = table(
        r#"
routes:
  - paths: [{path: /aaa, backend: a}]
"#,
    );
    check(
        &t,
        &[
            ("h.example", "/aaa/b", Some("a")),
            ("h.example", "/aaab", None),
        ],
    );
}

#[test]
fn uppercase_and_trailing_dot_rule_hosts_are_folded() {
    let t = table(
        r#"
routes:
  - host: APP.Example.COM.
    paths: [{path: /, backend: a}]
  - host: "*.Wild.Example.com"
    paths: [{path: /, backend: b}]
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/", Some("a")),
            ("APP.EXAMPLE.COM", "/", Some("a")),
            ("x.wild.example.com", "/", Some("b")),
            ("X.WILD.EXAMPLE.COM.:8443", "/", Some("b")),
        ],
    );
}

#[test]
fn several_hosts_each_with_their_own_paths() {
    let t = table(
        r#"
routes:
  - host: a.example.com
    paths: [{path: /p, backend: a}]
  - host: b.example.com
    paths: [{path: /p, backend: b}]
  - host: "*.example.com"
    paths: [{path: /p, backend: c}]
  - host: "*.sub.example.com"
    paths: [{path: /p, backend: d}]
defaultBackend: dflt
"#,
    );
    check(
        &t,
        &[
            ("a.example.com", "/p", Some("a")),
            ("b.example.com", "/p", Some("b")),
            ("c.example.com", "/p", Some("c")),
            ("sub.example.com", "/p", Some("c")),
            ("x.sub.example.com", "/p", Some("d")),
            ("y.x.sub.example.com", "/p", Some("dflt")),
            ("a.example.com", "/q", Some("dflt")),
        ],
    );
}

#[test]
fn same_host_in_two_rules_merges_paths_first_rule_wins_on_duplicates() {
    let t = table(
        r#"
routes:
  - host: app.example.com
    paths: [{path: /one, backend: a}, {path: /dup, backend: a}]
  - host: app.example.com
    paths: [{path: /two, backend: b}, {path: /dup, backend: b}]
"#,
    );
    check(
        &t,
        &[
            ("app.example.com", "/one", Some("a")),
            ("app.example.com", "/two", Some("b")),
            ("app.example.com", "/dup", Some("a")),
        ],
    );
}
