//! The real binary: `--check` exit codes and messages, log formats, SIGHUP reload and graceful drain on
//! SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::running::*;
use support::*;

/// Runs the binary to completion in `dir` with `args`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Replaces `path` atomically (write a sibling, then rename).
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.yaml",
        "listen: [\"0.0.0.0:8080\", \"[::]:8080\"]\nroutes:\n  - host: app.example.com\n    paths:\n      - path: /\n        backend: web\ndefaultBackend: web\nbackends:\n  web:\n    endpoints: [\"127.0.0.1:9001\", \"[::1]:9002\", \"[fd00::5]:8080\"]\n",
    );
    let out = run_in(dir.path(), &["--config", "good.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "good.yaml: configuration is valid\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn check_accepts_json_and_the_example_config() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.json",
        r#"{"routes": [{"paths": [{"path": "/", "pathType": "Prefix", "backend": "b"}]}],
            "backends": {"b": {"endpoints": ["[::1]:9002"]}}}"#,
    );
    let out = run_in(dir.path(), &["--config", "good.json", "--check"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
    let out = run_in(
        dir.path(),
        &["--config", example.to_str().unwrap(), "--check"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn check_reports_every_error_as_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.yaml",
        "\
listen: [\"0.0.0.0:8080\"]
routes:
  - host: app.example.com
    paths:
      - path: /
        backend: missing
backends:
  web:
    endpoints: [\"127.0.0.1:9001\", \"fd00::5:8080\"]
",
    );
    let out = run_in(dir.path(), &["--config", "bad.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    assert_eq!(
        text(&out.stdout),
        "",
        "nothing on stdout for an invalid file"
    );
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "bad.yaml:6:18: backend \"missing\" is not defined under \"backends\"",
            "bad.yaml:9:35: backend \"web\": \"fd00::5:8080\" is not a valid socket address: an IPv6 \
             address with a port must be bracketed; write \"[fd00::5]:8080\"",
        ],
        "stderr was:\n{stderr}"
    );
}

#[test]
fn check_reports_syntax_errors_unknown_keys_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "syntax.yaml", "backends:\n  b: {endpoints: [\n");
    let out = run_in(dir.path(), &["--config", "syntax.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("syntax.yaml:2:"), "{stderr}");

    write(
        dir.path(),
        "typo.yaml",
        "routes:\n  - paths:\n      - path: /\n        pathtype: Exact\n        backend: b\nbackends:\n  b: {}\n",
    );
    let out = run_in(dir.path(), &["--config", "typo.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("typo.yaml:4:9: unknown field `pathtype`"),
        "{stderr}"
    );

    write(dir.path(), "empty.yaml", "");
    let out = run_in(dir.path(), &["--config", "empty.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "empty.yaml:1:1: the configuration is empty\n"
    );

    let out = run_in(dir.path(), &["--config", "missing.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("missing.yaml:") && stderr.contains("cannot read file"),
        "{stderr}"
    );
}

#[test]
fn check_without_config_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["--check"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--config"),
        "{}",
        text(&out.stderr)
    );
}

/// A value from a JSON log line (`"key":"value"` or `"key":number`), without a JSON parser.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split_once(&format!("\"{key}\":"))?.1;
    match rest.strip_prefix('"') {
        Some(s) => s.split_once('"').map(|(v, _)| v),
        None => rest.split([',', '}']).next(),
    }
}

/// The status of GET `url`, or `None` when the connection fails.
async fn try_status(url: &str) -> Option<u16> {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    client()
        .request(req)
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\n{extra}defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{upstream}\"]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let up = Upstream::start("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "proxy.yaml",
        &config(up.addr, "admin: \"127.0.0.1:0\"\ntimeouts:\n  drain: 15s\n"),
    );
    let mut bin = Running::start(dir.path(), &["--config", "proxy.yaml"]);
    let (v4, v6) = bin.data_addrs().await;
    let admin_line = bin
        .wait_line("the admin listening line", |l| {
            logged_addr(l, "admin listening").is_some()
        })
        .await;
    let admin = logged_addr(&admin_line, "admin listening").unwrap();

    for addr in [v4, v6] {
        let seen = get(&format!("http://{addr}/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
    }
    assert_eq!(
        try_status(&format!("http://{admin}/readyz")).await,
        Some(200)
    );

    let hits_before = up.hits();
    let slow_url = format!("http://{v6}/delay/2000");
    let slow = tokio::spawn(async move { get(&slow_url, &[]).await });
    wait_until(
        "the slow request reaches the upstream",
        Duration::from_secs(10),
        || {
            let hits = up.hits();
            async move { hits > hits_before }
        },
    )
    .await;

    bin.signal("-TERM");

    // While the slow request is in flight: no new connections on either family, and /readyz fails.
    for addr in [v4, v6] {
        wait_until(
            &format!("new connections to {addr} are refused"),
            Duration::from_secs(10),
            || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
        )
        .await;
    }
    let readyz = format!("http://{admin}/readyz");
    wait_until(
        "/readyz fails while draining",
        Duration::from_secs(10),
        || {
            let readyz = readyz.clone();
            async move { try_status(&readyz).await != Some(200) }
        },
    )
    .await;
    assert!(
        bin.running() && !slow.is_finished(),
        "the drain did not wait for the in-flight request"
    );

    let seen = slow.await.unwrap();
    assert_eq!(seen.status, 200, "in-flight request failed: {}", seen.body);
    assert!(
        seen.body.starts_with(&format!("upstream {}", up.addr)),
        "{}",
        seen.body
    );

    let status = bin.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr:\n{}",
        bin.stderr().join("\n")
    );
    let stderr = bin.stderr().join("\n");
    assert!(stderr.contains("draining"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_also_exits_0() {
    let up = Upstream::start("[::1]:0").await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "proxy.yaml", &config(up.addr, ""));
    let mut bin = Running::start(dir.path(), &["--config", "proxy.yaml"]);
    let (v4, _) = bin.data_addrs().await;
    assert_eq!(get(&format!("http://{v4}/"), &[]).await.status, 200);
    bin.signal("-INT");
    assert_eq!(bin.wait_exit().await.code(), Some(0));
}

/// A process that may use one CPU runs on the single-threaded runtime by default, as `--threads 1` does;
/// with more CPUs it gets a worker per CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_runtime_follows_the_cpus_the_process_may_use() {
    let up = Upstream::start("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "proxy.yaml", &config(up.addr, ""));
    let mut pinned = Running::start_on_one_cpu(dir.path(), &["--config", "proxy.yaml"]);
    let line = pinned
        .wait_line("runtime", |l| l.contains(" runtime"))
        .await;
    assert!(line.contains("single-threaded runtime"), "{line}");
    let (v4, v6) = pinned.data_addrs().await;
    assert_eq!(get(&format!("http://{v4}/"), &[]).await.status, 200);
    assert_eq!(get(&format!("http://{v6}/"), &[]).await.status, 200);
    pinned.signal("-TERM");
    assert_eq!(pinned.wait_exit().await.code(), Some(0));

    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut free = Running::start(dir.path(), &["--config", "proxy.yaml"]);
    let line = free.wait_line("runtime", |l| l.contains(" runtime")).await;
    if cpus > 1 {
        assert!(line.contains("multi-threaded runtime"), "{line}");
        assert!(line.contains(&format!("workers={cpus}")), "{line}");
    } else {
        assert!(line.contains("single-threaded runtime"), "{line}");
    }
    free.signal("-TERM");
    assert_eq!(free.wait_exit().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_into_a_pipe_have_no_colour_codes() {
    let up = Upstream::start("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "proxy.yaml", &config(up.addr, ""));
    let mut bin = Running::start(dir.path(), &["--config", "proxy.yaml"]);
    let (_, v6) = bin.data_addrs().await;
    assert_eq!(get(&format!("http://{v6}/"), &[]).await.status, 200);
    bin.wait_line("an access log line", |l| {
        strip_ansi(l).contains(" access: ")
    })
    .await;
    bin.signal("-TERM");
    assert_eq!(bin.wait_exit().await.code(), Some(0));
    let lines = bin.stderr();
    let coloured: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(
        coloured.is_empty(),
        "ANSI escape codes in piped logs: {coloured:?}"
    );
    let access = lines.iter().find(|l| l.contains(" access: ")).unwrap();
    for field in [
        "client=::1",
        "method=GET",
        "path=\"/\"",
        &format!("host=\"{v6}\""),
        "status=200",
        &format!("upstream={}", up.addr),
    ] {
        assert!(access.contains(field), "{field} missing in {access}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let up = Upstream::start("127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "proxy.yaml", &config(up.addr, ""));
    let mut bin = Running::start(
        dir.path(),
        &["--config", "proxy.yaml", "--log-format", "json"],
    );
    let line = bin
        .wait_line("a JSON listening line for IPv6", |l| {
            json_field(l, "message") == Some("listening")
                && json_field(l, "addr").is_some_and(|a| a.starts_with('['))
        })
        .await;
    let v6: SocketAddr = json_field(&line, "addr").unwrap().parse().unwrap();

    let seen = get(&format!("http://{v6}/json"), &[]).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    let access = bin
        .wait_line("a JSON access log line", |l| {
            json_field(l, "target") == Some("access")
        })
        .await;
    assert_eq!(json_field(&access, "client"), Some("::1"), "{access}");
    assert_eq!(json_field(&access, "path"), Some("/json"), "{access}");
    assert_eq!(json_field(&access, "status"), Some("200"), "{access}");
    let upstream = up.addr.to_string();
    assert_eq!(json_field(&access, "upstream"), Some(upstream.as_str()));

    bin.signal("-TERM");
    assert_eq!(bin.wait_exit().await.code(), Some(0));
    let lines = bin.stderr();
    assert!(lines.len() >= 4, "{lines:#?}");
    for l in &lines {
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON line: {l}"
        );
        assert!(json_field(l, "level").is_some(), "no level: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_broken_one_is_logged_and_ignored() {
    let first = Upstream::start("127.0.0.1:0").await;
    let second = Upstream::start("[::1]:0").await;
    // The binary reads `conf/proxy.yaml`, a symlink into `data/`: the directory watcher does not see
    // changes behind the symlink, so only SIGHUP can apply them.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let real = write(&data, "real.yaml", &config(first.addr, ""));
    std::os::unix::fs::symlink(&real, conf.join("proxy.yaml")).unwrap();
    let mut bin = Running::start(&conf, &["--config", "proxy.yaml"]);
    let (v4, v6) = bin.data_addrs().await;
    let answered = |seen: &Seen| seen.headers["x-upstream"].to_str().unwrap().to_string();
    assert_eq!(
        answered(&get(&format!("http://{v4}/"), &[]).await),
        first.addr.to_string()
    );

    // A broken file: the error is logged as FILE:LINE:COLUMN and the old table keeps serving.
    replace(
        &real,
        "listen: [\"127.0.0.1:0\", \"[::1]:0\"]\ndefaultBackend: nowhere\nbackends: {}\n",
    );
    bin.signal("-HUP");
    let error = bin
        .wait_line("the reload error", |l| l.contains("proxy.yaml:2:17: "))
        .await;
    assert!(
        strip_ansi(&error)
            .ends_with("proxy.yaml:2:17: backend \"nowhere\" is not defined under \"backends\""),
        "{error}"
    );
    bin.wait_line("the reload failure", |l| l.contains("reload failed"))
        .await;
    for addr in [v4, v6] {
        let seen = get(&format!("http://{addr}/"), &[]).await;
        assert_eq!(seen.status, 200, "{}", seen.body);
        assert_eq!(answered(&seen), first.addr.to_string());
    }

    // A good file applies on the next SIGHUP.
    replace(&real, &config(second.addr, ""));
    bin.signal("-HUP");
    for addr in [v4, v6] {
        let url = format!("http://{addr}/");
        let want = second.addr.to_string();
        wait_until(
            "the new configuration applies after SIGHUP",
            Duration::from_secs(10),
            || {
                let (url, want) = (url.clone(), want.clone());
                async move { answered(&get(&url, &[]).await) == want }
            },
        )
        .await;
    }
    bin.wait_line("the reload log line", |l| {
        l.contains("configuration reloaded")
    })
    .await;
    assert!(bin.running());
}
