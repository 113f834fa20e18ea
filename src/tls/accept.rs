//! The server side of a TLS handshake: read the ClientHello, pick the certificate, finish the handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use super::{CertEntry, CertTable};
use crate::telemetry::{AddrFamily, Metrics};

/// What a finished handshake established.
#[derive(Debug)]
pub struct TlsInfo {
    /// The SNI name the client sent, lower case.
    pub sni: Option<Box<str>>,
    /// The certificate served.
    pub cert: Arc<CertEntry>,
}

/// Runs the handshake on `stream` until `deadline`, choosing the certificate from the table `certs` gives
/// (the one in force when the ClientHello arrives) by SNI and by the local address `local`; counts the
/// result in `metrics`, if given.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    certs: &(dyn Fn() -> Arc<CertTable> + Send + Sync),
    stream: S,
    local: SocketAddr,
    deadline: tokio::time::Instant,
    metrics: Option<&Metrics>,
) -> io::Result<(TlsStream<S>, TlsInfo)> {
    let family = AddrFamily::of(&local);
    let result = tokio::time::timeout_at(deadline, async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let sni: Option<Box<str>> = start
            .client_hello()
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase().into());
        let cert = certs()
            .select(sni.as_deref(), local.ip())
            .ok_or_else(|| io::Error::other("no TLS certificate loaded"))?;
        let tls = start.into_stream(cert.config.clone()).await?;
        Ok::<_, io::Error>((tls, TlsInfo { sni, cert }))
    })
    .await
    .unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        ))
    });
    match &result {
        Ok((tls, _)) => {
            let conn = tls.get_ref().1;
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "other",
            };
            let alpn = match conn.alpn_protocol() {
                Some(b"h2") => "h2",
                Some(b"http/1.1") => "http/1.1",
                Some(_) => "other",
                None => "none",
            };
            if let Some(m) = metrics {
                m.tls_handshake(family, "ok", version, alpn);
            }
        }
        Err(_) => {
            if let Some(m) = metrics {
                m.tls_handshake(family, "failed", "none", "none");
            }
        }
    }
    result
}
