//! The PROXY protocol header reader (`listen::proxy_protocol::read_header`), over an in-memory stream that
//! hands out its bytes in different chunkings.
//!
//! Properties, for any byte stream:
//! - The outcome (address, or which error) is the same whether the bytes arrive at once, one per read, or
//!   in chunks of sizes taken from the input: a partial header is never judged early.
//! - An accepted stream starts with `PROXY ` or the v2 signature; the header length computed here
//!   independently (v1: up to the first CR LF, at most 107 bytes; v2: 16 plus its length field) splits the
//!   stream, and `leftover` followed by what the reader still holds, read back through `Prefixed`, is
//!   exactly the bytes after the header: nothing after the header is lost or reordered.
//! - `leftover` is less than one read (512 bytes).
//! - The source address is the one the header carries (v1 `TCP4`/`TCP6` text, v2 `PROXY` with an IPv4 or
//!   IPv6 address block), `None` for v1 `UNKNOWN`, v2 `LOCAL` and v2 without IP addresses.
//! - `Closed` only when the stream ended before a header could be complete.
#![no_main]

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use dualstack_ingress::listen::proxy_protocol::{read_header, Header, HeaderError, Prefixed};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_MAX: usize = 107;

/// An in-memory stream that is always ready and hands out at most `sizes[i % len]` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: Vec<usize>,
    reads: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let size = this.sizes[this.reads % this.sizes.len()];
        this.reads += 1;
        let n = size.min(buf.remaining()).min(this.data.len() - this.pos);
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose I/O is always ready: it must finish on the first poll.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an always-ready stream left the future pending"),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Source(Option<SocketAddr>),
    Invalid,
    Closed,
}

fn outcome(r: &Result<Header, HeaderError>) -> Outcome {
    match r {
        Ok(h) => Outcome::Source(h.source),
        Err(HeaderError::Invalid(_)) => Outcome::Invalid,
        Err(HeaderError::Closed) => Outcome::Closed,
        Err(HeaderError::Io(e)) => panic!("an in-memory stream cannot fail: {e}"),
    }
}

/// The header's length and source address, computed without the crate under test.
fn expected(data: &[u8]) -> Option<(usize, Option<SocketAddr>)> {
    if data.starts_with(V2_SIGNATURE) {
        let len = 16 + usize::from(u16::from_be_bytes([*data.get(14)?, *data.get(15)?]));
        let body = data.get(16..len)?;
        let command = data[12] & 0x0f;
        let source = match (command, data[13] >> 4) {
            (1, 1) => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(body.get(0..4)?).ok()?)),
                u16::from_be_bytes([*body.get(8)?, *body.get(9)?]),
            )),
            (1, 2) => Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(body.get(0..16)?).ok()?)),
                u16::from_be_bytes([*body.get(32)?, *body.get(33)?]),
            )),
            _ => None,
        };
        return Some((len, source));
    }
    let cr = data.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&data[..cr]).ok()?;
    let words: Vec<&str> = line.split(' ').collect();
    let source = match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", "TCP4" | "TCP6", src, _dst, sport, _dport] => {
            Some(SocketAddr::new(src.parse().ok()?, sport.parse().ok()?))
        }
        _ => return None,
    };
    Some((cr + 2, source))
}

fn check(data: &[u8]) {
    // Chunk sizes from the input itself, so the fuzzer explores splits of every header it finds.
    let from_input: Vec<usize> = data
        .iter()
        .take(16)
        .map(|b| usize::from(b % 17) + 1)
        .collect();
    let chunkings: [Vec<usize>; 3] = [
        vec![usize::MAX],
        vec![1],
        if from_input.is_empty() {
            vec![3]
        } else {
            from_input
        },
    ];
    let mut first: Option<Outcome> = None;
    for sizes in chunkings {
        let mut stream = Chunked {
            data,
            pos: 0,
            sizes,
            reads: 0,
        };
        let result = run(read_header(&mut stream));
        let got = outcome(&result);
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(&got, f, "outcome depends on how the bytes arrive"),
        }
        match result {
            Ok(header) => {
                let (len, source) = expected(data).expect("accepted a stream without a header");
                assert!(data.starts_with(b"PROXY ") || data.starts_with(V2_SIGNATURE));
                if data.starts_with(b"PROXY ") {
                    assert!(len <= V1_MAX, "v1 header of {len} bytes accepted");
                }
                assert_eq!(header.source, source, "source address");
                assert!(
                    header.leftover.len() < 512,
                    "leftover of {} bytes",
                    header.leftover.len()
                );
                assert_eq!(
                    stream.pos,
                    len + header.leftover.len(),
                    "bytes read = header + leftover"
                );
                // Everything after the header comes back through Prefixed, in order.
                let rest_pos = stream.pos;
                let rest = Chunked {
                    data: &data[rest_pos..],
                    pos: 0,
                    sizes: vec![5],
                    reads: 0,
                };
                let mut after = Vec::new();
                run(Prefixed::new(header.leftover, rest).read_to_end(&mut after))
                    .expect("in-memory read");
                assert_eq!(after, &data[len..], "bytes after the header");
            }
            Err(HeaderError::Closed) => {
                assert_eq!(
                    stream.pos,
                    data.len(),
                    "closed before the stream was read to its end"
                );
                if let Some((len, _)) = expected(data) {
                    // A complete, well-formed header cannot end in Closed.
                    assert!(
                        len > data.len(),
                        "complete header of {len} bytes reported as closed"
                    );
                }
            }
            Err(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| check(data));
