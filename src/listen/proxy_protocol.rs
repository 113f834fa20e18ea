//! The PROXY protocol (v1 text and v2 binary, as HAProxy defines them): a load balancer in front names the
//! client it accepted before the client's own bytes. The header is read off the connection before anything
//! else; whatever arrived after it is handed on first by [`Prefixed`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ppp::v1;
use ppp::v2::{Addresses as V2Addresses, Command};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The longest v1 header (`PROXY TCP6 <max> <max> 65535 65535\r\n`).
const V1_MAX: usize = 107;
/// The fixed part of a v2 header; its last two bytes give the length of the rest.
const V2_FIXED: usize = 16;
/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The bytes are not a PROXY protocol header.
    #[error("not a valid PROXY protocol header: {0}")]
    Invalid(String),
    /// The peer closed the connection before the header was complete.
    #[error("connection closed inside the PROXY protocol header")]
    Closed,
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// What a complete header says.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The client address it names; `None` for `LOCAL` (v2) and `UNKNOWN` (v1), whose connections are the
    /// load balancer's own (health checks): the connection's peer stands.
    pub source: Option<SocketAddr>,
    /// Bytes that arrived after the header: the start of the client's stream.
    pub leftover: Vec<u8>,
}

/// Reads one PROXY protocol header (v1 or v2) from `stream`. Bytes are read in chunks, and whatever follows
/// the header is returned in [`Header::leftover`]; no more than the header's own length (v1: 107 bytes, v2:
/// 16 plus its length field) is ever looked at before deciding. The caller bounds the time it may take.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, HeaderError> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(header) = parse(&buf)? {
            return Ok(header);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `Ok(None)` while `buf` could still become a valid header.
fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if V2_SIGNATURE.starts_with(&buf[..buf.len().min(V2_SIGNATURE.len())]) {
        if buf.len() < V2_FIXED {
            return Ok(None);
        }
        let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if buf.len() < len {
            return Ok(None);
        }
        let header = ppp::v2::Header::try_from(&buf[..len])
            .map_err(|e| HeaderError::Invalid(e.to_string()))?;
        // LOCAL, and unspecified or UNIX sources: the receiver uses the connection's own addresses.
        let source = match (header.command, header.addresses) {
            (Command::Proxy, V2Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (Command::Proxy, V2Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        };
        return Ok(Some(Header {
            source,
            leftover: buf[len..].to_vec(),
        }));
    }
    // v1: "PROXY ..." up to the first CR LF, within 107 bytes. The line is parsed once it is complete
    // (a partial line can look like a wrong one), but anything that cannot start one is refused at once.
    let prefix = v1::PROTOCOL_PREFIX.as_bytes();
    if !buf.starts_with(prefix) && !prefix.starts_with(buf) {
        return Err(HeaderError::Invalid(
            "neither a v1 nor a v2 PROXY protocol header".into(),
        ));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::Invalid(
                "v1 header longer than 107 bytes".into(),
            ));
        }
        return Ok(None);
    };
    if cr + 1 >= buf.len() {
        return Ok(None);
    }
    // The line ends with CR LF; a CR followed by anything else would take a byte of the client's stream.
    if buf[cr + 1] != b'\n' {
        return Err(HeaderError::Invalid(
            "v1 header line does not end with CR LF".into(),
        ));
    }
    let header =
        v1::Header::try_from(&buf[..cr + 2]).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    let source = match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    };
    Ok(Some(Header {
        source,
        leftover: buf[cr + 2..].to_vec(),
    }))
}

/// A stream that yields `leftover` before reading from `inner` (writes go straight to `inner`).
#[derive(Debug)]
pub struct Prefixed<S> {
    leftover: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `leftover` read first.
    pub fn new(leftover: Vec<u8>, inner: S) -> Self {
        Prefixed {
            leftover,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.leftover.len() {
            let rest = &this.leftover[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.leftover.len() {
                this.leftover = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, addrs: (SocketAddr, SocketAddr), tlv: bool) -> Vec<u8> {
        let mut b =
            ppp::v2::Builder::with_addresses(0x20 | command, ppp::v2::Protocol::Stream, addrs);
        if tlv {
            b = b
                .write_tlv(ppp::v2::Type::Authority, b"example.com")
                .unwrap();
        }
        b.build().unwrap()
    }

    async fn read(bytes: &[u8]) -> Result<Header, HeaderError> {
        // One byte at a time: every partial state is seen.
        read_header(&mut OneByte(bytes.to_vec(), 0)).await
    }

    /// Yields its bytes one per read, then end of stream.
    struct OneByte(Vec<u8>, usize);

    impl AsyncRead for OneByte {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(b) = this.0.get(this.1) {
                buf.put_slice(&[*b]);
                this.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn v1_ipv4_and_ipv6_with_the_rest_left_over() {
        let h = read(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\nGET /")
            .await
            .unwrap();
        assert_eq!(h.source, Some("192.0.2.1:1234".parse().unwrap()));
        assert_eq!(h.leftover, b"");
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1234".parse().unwrap()));
        assert_eq!(h.leftover, b"GET /");
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(h.source, None);
    }

    #[tokio::test]
    async fn v2_proxy_local_and_tlvs() {
        let c: SocketAddr = "[::ffff:198.51.100.7]:5000".parse().unwrap();
        let d: SocketAddr = "[2001:db8::2]:80".parse().unwrap();
        let mut bytes = v2(1, (c, d), true);
        bytes.extend_from_slice(b"\x16\x03");
        let h = read(&bytes).await.unwrap();
        assert_eq!(h.source, Some(c));
        let h = parse(&bytes).unwrap().unwrap();
        assert_eq!(h.leftover, b"\x16\x03");
        let local = v2(
            0,
            (
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ),
            false,
        );
        assert_eq!(read(&local).await.unwrap().source, None);
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_refused() {
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\n\r\n").await,
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            read(b"PROXY TCP4 1.2.3.4").await,
            Err(HeaderError::Closed)
        ));
        // Found by the `proxy_header` fuzz target: a CR not followed by LF ended an `UNKNOWN` line, and the
        // byte after it (the client's) was swallowed as if it were the LF.
        assert!(matches!(
            read(b"PROXY UNKNOWN \n\r\r\nP").await,
            Err(HeaderError::Invalid(_))
        ));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\rGET / HTTP/1.1\r\n"),
            Err(HeaderError::Invalid(_))
        ));
        let long = [b'P'; 200];
        assert!(matches!(read(&long).await, Err(HeaderError::Invalid(_))));
        let mut bad_version = v2(
            1,
            ("1.2.3.4:1".parse().unwrap(), "1.2.3.4:2".parse().unwrap()),
            false,
        );
        bad_version[12] = 0x11;
        assert!(matches!(
            read(&bad_version).await,
            Err(HeaderError::Invalid(_))
        ));
    }
}
