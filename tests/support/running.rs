//! The real binary running in the background, its stderr collected line by line, and the addresses it logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dualstack-ingress");

/// The binary running in the background, its stderr collected line by line.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Starts the binary in `dir` with `args` and `RUST_LOG=info`.
    pub fn start(dir: &Path, args: &[&str]) -> Running {
        Self::start_env(dir, args, &[])
    }

    /// Starts the binary in `dir` with `args`, `RUST_LOG=info` and the environment variables `env`.
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        Self::spawn(Command::new(BIN), dir, args, env)
    }

    /// Starts the binary in `dir` with `args`, allowed to run on CPU 0 only (`taskset -c 0`).
    pub fn start_on_one_cpu(dir: &Path, args: &[&str]) -> Running {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", "0", BIN]);
        Self::spawn(taskset, dir, args, &[])
    }

    fn spawn(mut command: Command, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = command
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, lines }
    }

    pub fn stderr(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a stderr line that satisfies `pred` and returns it.
    pub async fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.stderr().into_iter().find(|l| pred(l)) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the binary exited ({status}) before logging {what}; stderr:\n{}",
                    self.stderr().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stderr:\n{}",
                self.stderr().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The data listeners (`listening addr=...`) in text log format, IPv4 first.
    pub async fn data_addrs(&mut self) -> (SocketAddr, SocketAddr) {
        self.logged_addrs("listening").await
    }

    /// The IPv4 and the IPv6 address of the log lines `<message> addr=...` (e.g. `listening (TLS)`,
    /// `admin listening`).
    pub async fn logged_addrs(&mut self, message: &str) -> (SocketAddr, SocketAddr) {
        let mut found = Vec::new();
        for v6 in [false, true] {
            let line = self
                .wait_line(message, |l| {
                    logged_addr(l, message).is_some_and(|a| a.is_ipv6() == v6)
                })
                .await;
            found.push(logged_addr(&line, message).unwrap());
        }
        (found[0], found[1])
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the binary did not exit; stderr:\n{}",
                self.stderr().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Removes ANSI colour sequences, so parsing works whatever the colour setting.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address in a text log line `...: <message> addr=<addr>` (`message` is `listening` or
/// `admin listening`).
pub fn logged_addr(line: &str, message: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let rest = line.split_once(&format!(": {message} addr="))?.1;
    rest.split_whitespace().next()?.parse().ok()
}
