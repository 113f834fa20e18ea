//! The configuration loader (`config::parse_for`, YAML or JSON) on arbitrary text, in both modes, and the
//! routing table compiled from whatever it accepts.
//!
//! Properties:
//! - Every error names the file and a location inside the text (line and column from 1; the line at most
//!   within the text), and is one line of bounded length whatever the size of the input (values are
//!   quoted by a short prefix).
//! - The same text gives the same answer twice.
//! - An accepted file is consistent: in Kubernetes mode it has no routes, backends or default backend; in
//!   standalone mode every path names a defined backend and starts with `/`, rule hosts are lower-case DNS
//!   names, timeouts are positive and `connectRetries` is within its bound. Its routing table compiles, and
//!   a simple path of an exact-host rule is found again.
//! - Memory stays bounded: libFuzzer's `-rss_limit_mb` / `-malloc_limit_mb` fail the run otherwise.
#![no_main]

use dualstack_ingress::config::{parse_for, ConfigFile, Mode, MAX_CONNECT_RETRIES};
use dualstack_ingress::model::HostMatch;
use dualstack_ingress::routing::{RequestHost, Table};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "/nonexistent-fuzz/ingress.yaml";
/// The longest error line accepted: the parser's message is cut at 256 characters, values at 64.
const MAX_MESSAGE: usize = 1024;

fn check_accepted(cfg: &ConfigFile, mode: Mode) {
    let model = &cfg.model;
    if mode == Mode::Kubernetes {
        assert!(
            model.rules.is_empty() && model.backends.is_empty() && model.default_backend.is_none()
        );
    }
    for rule in &model.rules {
        if let Some(HostMatch::Exact(h) | HostMatch::Wildcard(h)) = &rule.host {
            assert!(
                !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()),
                "rule host {h:?}"
            );
            assert!(
                h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
                "rule host {h:?}"
            );
        }
        for p in &rule.paths {
            assert!(p.path.starts_with('/'), "path {:?}", p.path);
            assert!(
                model.backends.contains_key(&p.backend),
                "undefined backend {:?}",
                p.backend
            );
        }
    }
    if let Some(d) = &model.default_backend {
        assert!(model.backends.contains_key(d));
    }
    assert!(model.connect_retries <= MAX_CONNECT_RETRIES);
    let t = &cfg.bootstrap.timeouts;
    let u = &model.timeouts;
    for d in [
        t.header_read,
        t.idle,
        t.drain,
        u.connect,
        u.response,
        u.upstream_read,
        u.client_write,
    ] {
        assert!(!d.is_zero());
    }

    let table = Table::compile_fresh(model);
    for rule in &model.rules {
        let Some(HostMatch::Exact(host)) = &rule.host else {
            continue;
        };
        for p in &rule.paths {
            // Paths the normaliser leaves alone, so the table sees them as written.
            if p.path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_')
                && !p.path.contains("//")
            {
                assert!(
                    table.lookup(&RequestHost::Name(host), &p.path).is_some(),
                    "{host} {} not found in its own table",
                    p.path
                );
            }
        }
    }
}

fn check(text: &str, mode: Mode) {
    let result = parse_for(FILE, text, mode);
    assert_eq!(
        parse_for(FILE, text, mode),
        result,
        "same text, same answer"
    );
    match &result {
        Ok(cfg) => check_accepted(cfg, mode),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error list is never empty");
            // YAML line breaks: LF, CR LF and a lone CR.
            let breaks = text.matches('\n').count() + text.matches('\r').count()
                - text.matches("\r\n").count();
            let lines = u64::try_from(breaks + 1).unwrap_or(u64::MAX);
            for e in &errors.0 {
                assert_eq!(e.file, FILE);
                assert!(e.line >= 1 && e.column >= 1, "no location: {e}");
                assert!(
                    e.line <= lines,
                    "line {} of a {lines}-line text: {e}",
                    e.line
                );
                assert!(
                    !e.message.is_empty(),
                    "empty message at {}:{}",
                    e.line,
                    e.column
                );
                assert!(!e.message.contains('\n'), "multi-line message: {e}");
                assert!(
                    e.message.len() <= MAX_MESSAGE,
                    "message of {} bytes: {:.200}",
                    e.message.len(),
                    e.message
                );
            }
            // In file order.
            assert!(errors
                .0
                .windows(2)
                .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text, Mode::Standalone);
    check(&text, Mode::Kubernetes);
});
