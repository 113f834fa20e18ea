//! A host without one address family: the proxy warns and serves the other family instead of failing.
//! Each test makes its own network namespace (root and `ip` from iproute2 are required, as in CI), so
//! its ports and sysctls are private and the default ports can be used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A network namespace that is deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("dsi-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full)
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the proxy in the namespace")
    }

    /// curl inside the namespace; the body on success.
    fn curl(&self, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                "curl",
                "-sS",
                "-g",
                "--max-time",
                "2",
                url,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed (these tests need root and iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `url` inside `ns` until it answers or 20 s pass.
/// Polls `url` inside `ns` until its body contains `expected` (the listener answers 503 until the
/// configuration is installed); returns that body.
fn wait_for(ns: &Netns, url: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = ns.curl(url);
        if let Some(body) = body.as_ref().filter(|b| b.contains(expected)) {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered with {expected:?} inside {}; last answer: {body:?}",
            ns.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("proxy exits");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn embedded_default_without_ipv6_warns_and_serves_ipv4() {
    let ns = Netns::new("no6");
    for key in ["all", "default", "lo"] {
        ns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
        ]);
    }
    let proxy = ns.spawn(&[env!("CARGO_BIN_EXE_dualstack-ingress")]);
    let body = wait_for(
        &ns,
        "http://127.0.0.1:8080/",
        "hello from the demo upstream at 127.0.0.1:",
    );
    assert!(body.starts_with("hello from the demo upstream"), "{body}");
    assert_eq!(
        ns.curl("http://[::1]:8080/"),
        None,
        "no IPv6 in this namespace"
    );
    let logs = stop(proxy);
    assert!(logs.contains("address family unavailable"), "{logs}");
}

#[test]
fn listeners_without_ipv4_warn_and_serve_ipv6() {
    let ns = Netns::new("no4");
    ns.exec(&["ip", "-4", "addr", "flush", "dev", "lo"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        "listen: [\"127.0.0.1:8080\", \"[::1]:8080\"]\nadmin: \"127.0.0.1:9901\"\n\
         defaultBackend: none\nbackends:\n  none:\n    endpoints: []\n",
    )
    .unwrap();
    let proxy = ns.spawn(&[
        env!("CARGO_BIN_EXE_dualstack-ingress"),
        "--config",
        config.to_str().unwrap(),
    ]);
    // The backend has no endpoints, so a served request is a 503 from the proxy itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "curl",
                "-s",
                "-g",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{http_code}", "http://[::1]:8080/"])
            .output()
            .expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        if code != "000" || Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, "503");
    assert_eq!(
        ns.curl("http://127.0.0.1:8080/"),
        None,
        "no IPv4 in this namespace"
    );
    let logs = stop(proxy);
    assert!(logs.contains("address family unavailable"), "{logs}");
}
