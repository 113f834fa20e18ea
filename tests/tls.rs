//! TLS termination end to end over real sockets on 127.0.0.1 and [::1]: certificate selection (SNI, wildcard,
//! default, IP address SANs), the HTTPS redirect, HTTP/2 via ALPN, 421 on a misdirected HTTP/2 request,
//! forwarding headers, certificate hot swap under load, a broken certificate on reload, and handshake
//! metrics. Clients are the real `curl` binary and, where curl cannot show it (which certificate was
//! served, a second authority on one HTTP/2 connection), a tokio-rustls client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assumption fails the test

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use support::certs::{replace_file, Ca, Leaf};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------------
// Fixture: a CA, certificate files, upstreams on both families.
// ---------------------------------------------------------------------------------------------------------

struct Fixture {
    ca: Ca,
    /// Certificates, keys and `ca.pem` (a directory apart from the proxy's configuration file).
    dir: tempfile::TempDir,
    ca_pem: PathBuf,
    up4: Upstream,
    up6: Upstream,
}

impl Fixture {
    async fn new() -> Fixture {
        let ca = Ca::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = ca.write(dir.path());
        Fixture {
            ca,
            dir,
            ca_pem,
            up4: Upstream::start("127.0.0.1:0").await,
            up6: Upstream::start("[::1]:0").await,
        }
    }

    /// Makes a leaf for `names`, writes `<stem>.crt`/`<stem>.key`, and returns it with its `tls` entry
    /// (selected for `names`).
    fn entry(&self, stem: &str, names: &[&str]) -> (Leaf, String) {
        let leaf = self.ca.leaf(names);
        let (cert, key) = leaf.write(self.dir.path(), stem);
        (leaf, tls_entry(names, &cert, &key))
    }

    /// `listenTls` on both loopbacks, the given `tls` entries, and a default backend on both upstreams.
    fn yaml(&self, entries: &[&str], extra: &str) -> String {
        let mut y = String::from("listenTls: [\"127.0.0.1:0\", \"[::1]:0\"]\n");
        if !entries.is_empty() {
            y.push_str("tls:\n");
            for e in entries {
                y.push_str(e);
            }
        }
        y.push_str(extra);
        y.push_str(&format!(
            "defaultBackend: b\nbackends:\n  b:\n    endpoints: [\"{}\", \"{}\"]\n",
            self.up4.addr, self.up6.addr
        ));
        y
    }

    fn cacert(&self) -> &str {
        self.ca_pem.to_str().unwrap()
    }
}

fn tls_entry(hosts: &[&str], cert: &Path, key: &Path) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "  - hosts: [{}]\n    cert: \"{}\"\n    key: \"{}\"\n",
        hosts.join(", "),
        cert.display(),
        key.display()
    )
}

/// The proxy's TLS listener of one family.
fn tls_addr(p: &TestProxy, v6: bool) -> SocketAddr {
    *p.server()
        .tls_addrs()
        .iter()
        .find(|a| a.is_ipv6() == v6)
        .unwrap_or_else(|| {
            panic!(
                "no TLS listener for ipv6={v6}: {:?}",
                p.server().tls_addrs()
            )
        })
}

/// The loopback address of a family as curl's `--resolve` wants it (IPv6 in brackets).
fn loopback(v6: bool) -> &'static str {
    if v6 {
        "[::1]"
    } else {
        "127.0.0.1"
    }
}

/// `--resolve NAME:PORT:ADDR` for the TLS listener of one family.
fn resolve(p: &TestProxy, name: &str, v6: bool) -> String {
    format!("{name}:{}:{}", tls_addr(p, v6).port(), loopback(v6))
}

// ---------------------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------------------

/// What curl saw.
#[derive(Debug)]
struct Curl {
    /// Exit code (0 = success; 60 = certificate not trusted).
    exit: i32,
    /// `%{http_code}` (0 when no response).
    code: u16,
    /// `%{http_version}`.
    version: String,
    body: String,
    /// Shown in assertion messages.
    #[allow(dead_code)]
    stderr: String,
}

async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .arg("-q")
        .args(["-sS", "--noproxy", "*", "--max-time", "10"])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the curl binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    let mut words = last.split_whitespace();
    let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let version = words.next().unwrap_or("").to_string();
    Curl {
        exit: out.status.code().unwrap_or(-1),
        code,
        version,
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl `https://NAME:PORT/path` resolved to the TLS listener of one family, trusting the test CA.
async fn curl_name(f: &Fixture, p: &TestProxy, name: &str, v6: bool, path: &str) -> Curl {
    let url = format!("https://{name}:{}{path}", tls_addr(p, v6).port());
    curl(&[
        "--cacert",
        f.cacert(),
        "--resolve",
        &resolve(p, name, v6),
        &url,
    ])
    .await
}

// ---------------------------------------------------------------------------------------------------------
// A rustls client that shows which certificate was served
// ---------------------------------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (handshake signatures are still checked), so a test can look at which
/// certificate the server chose even when it does not match the name.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whom a client trusts.
enum Trust<'a> {
    /// Any certificate (to see which one was served).
    Any,
    /// Only certificates signed by this CA, valid for the name asked for.
    Ca(&'a Ca),
}

/// A client configuration with `alpn`, without session resumption (every handshake is a full one and
/// presents the certificate the server holds now).
fn client_config(trust: Trust<'_>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let mut config = match trust {
        Trust::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
            .with_no_client_auth(),
        Trust::Ca(ca) => builder
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// Connects to `addr` and runs a TLS handshake for `name` (an IP address sends no SNI, as browsers and
/// curl do).
async fn tls_connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(LIMIT, async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(server_name, tcp).await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// The end-entity certificate a TLS connection presented.
fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// The certificate the proxy serves for a handshake with `name` (SNI, or none for an IP address).
async fn served(addr: SocketAddr, name: &str) -> CertificateDer<'static> {
    let tls = tls_connect(client_config(Trust::Any, &[]), addr, name)
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr} for {name}: {e}"));
    presented(&tls)
}

/// One HTTP/1.1 GET over an established TLS connection.
async fn get_over(
    tls: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(LIMIT, send.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A new connection, a full handshake for `app.test` trusting only the CA, and one GET; the certificate
/// presented and the status.
async fn one_request(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> Result<(CertificateDer<'static>, StatusCode), String> {
    let tls = tls_connect(config, addr, "app.test")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let cert = presented(&tls);
    let (status, body) = get_over(tls, "app.test", "/load").await?;
    if status != StatusCode::OK {
        return Err(format!("status {status}: {body}"));
    }
    Ok((cert, status))
}

// ---------------------------------------------------------------------------------------------------------
// Certificate selection
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn sni_selects_the_certificate_on_both_families() {
    let f = Fixture::new().await;
    let (first, e1) = f.entry("first", &["first.test"]);
    let (app, e2) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1, &e2], "")).await;
    for v6 in [false, true] {
        let seen = curl_name(&f, &p, "app.test", v6, "/hello?x=1").await;
        assert_eq!(seen.exit, 0, "ipv6={v6}: {seen:?}");
        assert_eq!(seen.code, 200, "ipv6={v6}: {seen:?}");
        assert!(seen.body.starts_with("upstream "), "{seen:?}");
        assert!(seen.body.contains("uri: /hello?x=1"), "{seen:?}");
        let addr = tls_addr(&p, v6);
        assert!(served(addr, "app.test").await == app.der, "ipv6={v6}");
        assert!(served(addr, "first.test").await == first.der, "ipv6={v6}");
    }
    assert!(f.up4.hits() + f.up6.hits() >= 2);
}

#[tokio::test]
async fn wildcard_certificate_covers_exactly_one_label() {
    let f = Fixture::new().await;
    let (first, e1) = f.entry("first", &["first.test"]);
    let (wild, e2) = f.entry("wild", &["*.wild.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1, &e2], "")).await;
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        let seen = curl_name(&f, &p, "a.wild.test", v6, "/").await;
        assert_eq!((seen.exit, seen.code), (0, 200), "ipv6={v6}: {seen:?}");
        assert!(served(addr, "a.wild.test").await == wild.der, "ipv6={v6}");
        // Two labels below the wildcard, or the bare parent: not covered, so the default certificate.
        assert!(
            served(addr, "a.b.wild.test").await == first.der,
            "ipv6={v6}"
        );
        assert!(served(addr, "wild.test").await == first.der, "ipv6={v6}");
        let seen = curl_name(&f, &p, "a.b.wild.test", v6, "/").await;
        assert_eq!(
            seen.exit, 60,
            "curl must reject the default certificate for a.b.wild.test: {seen:?}"
        );
    }
}

#[tokio::test]
async fn unknown_sni_gets_the_first_certificate() {
    let f = Fixture::new().await;
    let (first, e1) = f.entry("first", &["first.test"]);
    let (app, e2) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1, &e2], "")).await;
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        assert!(served(addr, "unknown.test").await == first.der, "ipv6={v6}");
        assert!(served(addr, "app.test").await == app.der, "ipv6={v6}");
        // No SNI at all (an IP literal) and no certificate for the address: the default too.
        assert!(
            served(addr, &addr.ip().to_string()).await == first.der,
            "ipv6={v6}"
        );
        // The default certificate does not name unknown.test: curl refuses it, and serves with -k.
        let seen = curl_name(&f, &p, "unknown.test", v6, "/").await;
        assert_eq!(seen.exit, 60, "{seen:?}");
        let url = format!("https://unknown.test:{}/", addr.port());
        let resolve = resolve(&p, "unknown.test", v6);
        let seen = curl(&["-k", "--resolve", &resolve, &url]).await;
        assert_eq!((seen.exit, seen.code), (0, 200), "{seen:?}");
    }
}

#[tokio::test]
async fn without_certificates_a_generated_self_signed_one_is_served() {
    let f = Fixture::new().await;
    let p = TestProxy::start(&f.yaml(&[], "")).await;
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        let url = format!("https://{addr}/self");
        let seen = curl(&["-k", "-g", &url]).await;
        assert_eq!((seen.exit, seen.code), (0, 200), "ipv6={v6}: {seen:?}");
        assert!(seen.body.contains("uri: /self"), "{seen:?}");
        // Not signed by anyone curl trusts.
        let seen = curl(&["--cacert", f.cacert(), "-g", &url]).await;
        assert_eq!(seen.exit, 60, "ipv6={v6}: {seen:?}");
        // Self-signed: the certificate is its own issuer, so it verifies as its own root.
        let cert = served(addr, "localhost").await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &cert,
                &[],
                &ServerName::try_from("localhost").unwrap(),
                &[],
                UnixTime::now(),
            )
            .expect("a self-signed certificate for localhost");
    }
}

#[tokio::test]
async fn ip_address_sans_verify_for_both_literals() {
    let f = Fixture::new().await;
    // The IP certificate is not the first entry, so only selection by address can pick it.
    let (_app, e1) = f.entry("app", &["app.test"]);
    let (ip, e2) = f.entry("ip", &["127.0.0.1", "::1"]);
    let p = TestProxy::start(&f.yaml(&[&e1, &e2], "")).await;
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        let url = format!("https://{addr}/ip");
        let seen = curl(&["--cacert", f.cacert(), "-g", &url]).await;
        assert_eq!((seen.exit, seen.code), (0, 200), "{url}: {seen:?}");
        assert!(seen.body.contains("uri: /ip"), "{seen:?}");
        assert!(served(addr, &addr.ip().to_string()).await == ip.der);
        // The rustls client verifies the IP SAN too.
        let tls = tls_connect(
            client_config(Trust::Ca(&f.ca), &[]),
            addr,
            &addr.ip().to_string(),
        )
        .await;
        assert!(tls.is_ok(), "{url}: {:?}", tls.err());
    }
}

// ---------------------------------------------------------------------------------------------------------
// HTTPS redirect
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_http_for_a_host_with_a_certificate_is_redirected_to_https() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1], "")).await;
    // The redirect names the first TLS listener (the IPv4 one here).
    let tls_port = p.server().tls_addrs()[0].port();
    assert_ne!(tls_port, 0);
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/path?q=1"), &[("host", "app.test")]).await;
        assert_eq!(seen.status, 301, "ipv6={v6}: {}", seen.body);
        assert_eq!(
            seen.headers.get("location").and_then(|v| v.to_str().ok()),
            Some(format!("https://app.test:{tls_port}/path?q=1").as_str()),
            "ipv6={v6}"
        );
        // A host without a certificate stays on plain HTTP.
        let seen = get(&p.url(v6, "/path?q=1"), &[("host", "plain.test")]).await;
        assert_eq!(seen.status, 200, "ipv6={v6}: {}", seen.body);
        assert!(
            seen.body.contains("x-forwarded-proto: http\n"),
            "{}",
            seen.body
        );
    }
    // curl follows the redirect to HTTPS and verifies the certificate.
    let plain_port = p.v4.port();
    let url = format!("http://app.test:{plain_port}/path?q=1");
    let seen = curl(&[
        "-L",
        "--cacert",
        f.cacert(),
        "--resolve",
        &format!("app.test:{plain_port}:127.0.0.1"),
        "--resolve",
        &format!("app.test:{tls_port}:127.0.0.1"),
        &url,
    ])
    .await;
    assert_eq!((seen.exit, seen.code), (0, 200), "{seen:?}");
    assert!(seen.body.contains("x-forwarded-proto: https"), "{seen:?}");
    assert!(seen.body.contains("uri: /path?q=1"), "{seen:?}");
}

#[tokio::test]
async fn https_redirect_port_names_the_port_clients_use() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    for (port, want) in [
        ("443", "https://app.test/p?q=1"),
        ("9443", "https://app.test:9443/p?q=1"),
    ] {
        let p = TestProxy::start(&f.yaml(&[&e1], &format!("httpsRedirectPort: {port}\n"))).await;
        for v6 in [false, true] {
            let seen = get(&p.url(v6, "/p?q=1"), &[("host", "app.test")]).await;
            assert_eq!(seen.status, 301, "ipv6={v6}: {}", seen.body);
            assert_eq!(
                seen.headers.get("location").and_then(|v| v.to_str().ok()),
                Some(want),
                "ipv6={v6}"
            );
        }
    }
}

#[tokio::test]
async fn redirect_to_https_false_disables_the_redirect() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1], "redirectToHttps: false\n")).await;
    for v6 in [false, true] {
        let seen = get(&p.url(v6, "/path?q=1"), &[("host", "app.test")]).await;
        assert_eq!(seen.status, 200, "ipv6={v6}: {}", seen.body);
        assert!(seen.headers.get("location").is_none());
        assert!(seen.body.contains("uri: /path?q=1"), "{}", seen.body);
    }
}

#[tokio::test]
async fn redirect_follows_reloads_and_keeps_the_bound_tls_port() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start_watched(&f.yaml(&[&e1], "")).await;
    let location = format!(
        "https://app.test:{}/r?q=1",
        p.server().tls_addrs()[0].port()
    );
    let redirected = |v6: bool| {
        let url = p.url(v6, "/r?q=1");
        async move {
            let seen = get(&url, &[("host", "app.test")]).await;
            (seen.status == 301).then(|| {
                seen.headers
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            })
        }
    };
    assert_eq!(redirected(false).await.as_deref(), Some(location.as_str()));

    p.rewrite(&f.yaml(&[&e1], "redirectToHttps: false\n"));
    wait_until("the redirect is switched off", LIMIT, || async {
        redirected(false).await.is_none() && redirected(true).await.is_none()
    })
    .await;

    p.rewrite(&f.yaml(&[&e1], "redirectToHttps: true\n"));
    wait_until("the redirect is back", LIMIT, || async {
        redirected(false).await.is_some() && redirected(true).await.is_some()
    })
    .await;
    for v6 in [false, true] {
        assert_eq!(redirected(v6).await.as_deref(), Some(location.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP/2, 421, forwarding headers
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn alpn_negotiates_http2_on_both_families() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1], "")).await;
    for v6 in [false, true] {
        let url = format!("https://app.test:{}/h2", tls_addr(&p, v6).port());
        let resolve = resolve(&p, "app.test", v6);
        let seen = curl(&[
            "--http2",
            "--cacert",
            f.cacert(),
            "--resolve",
            &resolve,
            &url,
        ])
        .await;
        assert_eq!((seen.exit, seen.code), (0, 200), "ipv6={v6}: {seen:?}");
        assert_eq!(seen.version, "2", "ipv6={v6}: {seen:?}");
        assert!(seen.body.contains("uri: /h2"), "{seen:?}");
        let seen = curl(&[
            "--http1.1",
            "--cacert",
            f.cacert(),
            "--resolve",
            &resolve,
            &url,
        ])
        .await;
        assert_eq!((seen.exit, seen.code), (0, 200), "ipv6={v6}: {seen:?}");
        assert_eq!(seen.version, "1.1", "ipv6={v6}: {seen:?}");
    }
}

#[tokio::test]
async fn http2_request_for_a_host_the_certificate_does_not_cover_gets_421() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let (_other, e2) = f.entry("other", &["other.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1, &e2], "")).await;
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        let tls = tls_connect(client_config(Trust::Ca(&f.ca), &[b"h2"]), addr, "app.test")
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut status_for = |authority: &str| {
            let req = Request::get(format!("https://{authority}/misdirected"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let fut = send.send_request(req);
            async move {
                let resp = tokio::time::timeout(LIMIT, fut).await.unwrap().unwrap();
                assert_eq!(resp.version(), http::Version::HTTP_2);
                resp.status()
            }
        };
        assert_eq!(status_for("app.test").await, StatusCode::OK, "ipv6={v6}");
        assert_eq!(
            status_for("other.test").await,
            StatusCode::MISDIRECTED_REQUEST,
            "ipv6={v6}"
        );
        // The connection stays usable for the host it was made for.
        assert_eq!(status_for("app.test").await, StatusCode::OK, "ipv6={v6}");
    }
}

#[tokio::test]
async fn forwarding_headers_say_https() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1], "")).await;
    for v6 in [false, true] {
        let seen = curl_name(&f, &p, "app.test", v6, "/fwd").await;
        assert_eq!((seen.exit, seen.code), (0, 200), "ipv6={v6}: {seen:?}");
        assert!(
            seen.body.contains("\nx-forwarded-proto: https\n"),
            "{}",
            seen.body
        );
        let forwarded = seen
            .body
            .lines()
            .find(|l| l.starts_with("forwarded: "))
            .unwrap_or_else(|| panic!("no Forwarded header: {}", seen.body));
        let client = if v6 { "for=\"[::1]\"" } else { "for=127.0.0.1" };
        assert!(forwarded.contains(client), "{forwarded}");
        assert!(forwarded.contains(";proto=https"), "{forwarded}");
        let port = tls_addr(&p, v6).port();
        assert!(
            seen.body.contains(&format!("\nx-forwarded-port: {port}\n")),
            "{}",
            seen.body
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Hot swap
// ---------------------------------------------------------------------------------------------------------

/// Requests on new connections (full handshakes, trusting only the CA) until `stop` or `cap` requests;
/// returns the failures.
async fn load(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    cap: usize,
) -> Vec<String> {
    let mut failures = Vec::new();
    for _ in 0..cap {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match one_request(config.clone(), addr).await {
            Ok(_) => {
                ok.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_rotation_under_load_has_no_failed_requests() {
    let f = Fixture::new().await;
    let (old, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start_watched(&f.yaml(&[&e1], "")).await;
    let config = client_config(Trust::Ca(&f.ca), &[]);
    for v6 in [false, true] {
        let (cert, _) = one_request(config.clone(), tls_addr(&p, v6)).await.unwrap();
        assert!(cert == old.der);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut tasks = Vec::new();
    for v6 in [false, true] {
        for _ in 0..3 {
            tasks.push(tokio::spawn(load(
                config.clone(),
                tls_addr(&p, v6),
                stop.clone(),
                ok[v6 as usize].clone(),
                20_000,
            )));
        }
    }
    let running = |n: usize| {
        let ok = ok.clone();
        move || {
            let done = (ok[0].load(Ordering::SeqCst), ok[1].load(Ordering::SeqCst));
            async move { done.0 >= n && done.1 >= n }
        }
    };
    wait_until("load runs on both families", LIMIT, running(10)).await;

    let new = f.ca.leaf(&["app.test"]);
    assert!(new.der != old.der);
    new.replace(f.dir.path(), "app");
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        let config = config.clone();
        let new = new.der.clone();
        wait_until("new handshakes present the new certificate", LIMIT, || {
            let (config, new) = (config.clone(), new.clone());
            async move { matches!(one_request(config, addr).await, Ok((cert, _)) if cert == new) }
        })
        .await;
    }
    // Keep the load going across the new certificate for a while.
    let after = ok[0]
        .load(Ordering::SeqCst)
        .min(ok[1].load(Ordering::SeqCst));
    wait_until("load continues after the swap", LIMIT, running(after + 50)).await;
    stop.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(p.server().metrics().reload_counts().0 >= 1);
}

#[tokio::test]
async fn broken_certificate_on_reload_keeps_the_old_one() {
    let f = Fixture::new().await;
    let (old, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start_watched(&f.yaml(&[&e1], "")).await;
    let config = client_config(Trust::Ca(&f.ca), &[]);
    let (ok_before, failed_before) = p.server().metrics().reload_counts();

    replace_file(
        &f.dir.path().join("app.crt"),
        b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    // A reload whose certificate does not load counts as failed, not as a success.
    wait_until("the change is picked up", LIMIT, || async {
        p.server().metrics().reload_counts().1 > failed_before
    })
    .await;
    assert_eq!(p.server().metrics().reload_counts().0, ok_before);
    for v6 in [false, true] {
        let (cert, _) = one_request(config.clone(), tls_addr(&p, v6))
            .await
            .unwrap_or_else(|e| panic!("ipv6={v6}: {e}"));
        assert!(
            cert == old.der,
            "ipv6={v6}: the old certificate keeps serving"
        );
        let seen = curl_name(&f, &p, "app.test", v6, "/still").await;
        assert_eq!((seen.exit, seen.code), (0, 200), "ipv6={v6}: {seen:?}");
    }

    // A good certificate afterwards is picked up.
    let new = f.ca.leaf(&["app.test"]);
    new.replace(f.dir.path(), "app");
    for v6 in [false, true] {
        let addr = tls_addr(&p, v6);
        wait_until("the repaired certificate is served", LIMIT, || async {
            served(addr, "app.test").await == new.der
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------------------

fn handshake_count(metrics: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("dualstack_ingress_tls_handshakes_total{"))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn handshakes_are_counted_by_family_and_result() {
    let f = Fixture::new().await;
    let (_app, e1) = f.entry("app", &["app.test"]);
    let p = TestProxy::start(&f.yaml(&[&e1], "")).await;
    let ok6 = ["family=\"ipv6\"", "result=\"ok\""];
    let failed4 = ["family=\"ipv4\"", "result=\"failed\""];
    let metrics = p.server().metrics();
    assert_eq!(handshake_count(&metrics.encode(), &ok6), 0);

    let seen = curl(&[
        "--http2",
        "--cacert",
        f.cacert(),
        "--resolve",
        &resolve(&p, "app.test", true),
        &format!("https://app.test:{}/", tls_addr(&p, true).port()),
    ])
    .await;
    assert_eq!((seen.exit, seen.code), (0, 200), "{seen:?}");
    wait_until("an ok IPv6 handshake is counted", LIMIT, || async {
        handshake_count(&metrics.encode(), &ok6) >= 1
    })
    .await;
    let text = metrics.encode();
    assert!(
        text.lines()
            .any(|l| l.starts_with("dualstack_ingress_tls_handshakes_total{")
                && l.contains("family=\"ipv6\"")
                && l.contains("result=\"ok\"")
                && l.contains("alpn=\"h2\"")),
        "{text}"
    );

    // A client that does not trust the certificate aborts the handshake: counted as failed, on IPv4.
    assert_eq!(handshake_count(&text, &failed4), 0);
    let seen = curl(&[
        "--resolve",
        &resolve(&p, "app.test", false),
        &format!("https://app.test:{}/", tls_addr(&p, false).port()),
    ])
    .await;
    assert_eq!(seen.exit, 60, "{seen:?}");
    wait_until("a failed IPv4 handshake is counted", LIMIT, || async {
        handshake_count(&metrics.encode(), &failed4) >= 1
    })
    .await;
}
