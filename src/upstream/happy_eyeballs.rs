//! Connecting to an endpoint: an endpoint given by address is one `connect()`; an endpoint named by DNS
//! races its resolved addresses the RFC 8305 ("Happy Eyeballs v2") way. The addresses are sorted once, when
//! the endpoint set is built (IPv6 first, the families interleaved, section 4); a connect starts a new attempt
//! every [`CONNECTION_ATTEMPT_DELAY`] (section 5) or as soon as the previous one fails, the first
//! established connection wins and the others are dropped, and the whole race is bounded by
//! `timeouts.connect`. The addresses come from the background resolution (`super::dns`): connecting never
//! waits for DNS.
//!
//! Every upstream protocol connects through here: the `http1` pools directly, the hyper-util clients of
//! `h2c`, `https` and `h2` through [`Connector`]. hyper-util's `HttpConnector` has a happy-eyeballs mode
//! too, but it tries the addresses of one family one after another (each with a share of the connect
//! timeout) and starts the other family once, after a delay; it neither interleaves nor staggers, and the
//! `http1` pools do not use it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::uri::Scheme;
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// RFC 8305 section 5's recommended Connection Attempt Delay: the next address is tried when the previous
/// attempt has neither succeeded nor failed after this long.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Where an endpoint connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addrs {
    /// An endpoint given by address: one connect, no race.
    One(SocketAddr),
    /// The resolved addresses of an endpoint named by DNS, in the order they are tried (see [`Addrs::race`]);
    /// empty while the name resolves to nothing.
    Race(Arc<[SocketAddr]>),
}

impl Addrs {
    /// The addresses of a DNS name, ordered for racing: IPv6 first, then the families alternating
    /// (RFC 8305 section 4), each family's addresses in their given order.
    pub fn race(resolved: &[SocketAddr]) -> Addrs {
        let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) =
            resolved.iter().partition(|a| a.is_ipv6());
        let mut order = Vec::with_capacity(resolved.len());
        let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
        loop {
            match (v6.next(), v4.next()) {
                (None, None) => break,
                (a, b) => order.extend(a.into_iter().chain(b)),
            }
        }
        Addrs::Race(order.into())
    }
}

/// Why no connection could be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed.
    #[error("tcp connect error")]
    Tcp(#[source] io::Error),
    /// The TCP connect did not finish within `timeouts.connect`.
    #[error("tcp connect timed out after {0:?} (timeouts.connect)")]
    Timeout(Duration),
    /// The endpoint's DNS name currently resolves to no address.
    #[error("the name resolves to no address")]
    NoAddresses,
    /// Every resolved address of the name failed.
    #[error("all {tried} addresses failed; the last, {last}")]
    Race {
        /// Addresses tried.
        tried: usize,
        /// The address that failed last.
        last: SocketAddr,
        /// Its error.
        #[source]
        source: io::Error,
    },
    /// No resolved address of the name connected within `timeouts.connect`.
    #[error("no address connected within {timeout:?} (timeouts.connect; {tried} tried, the last {last})")]
    RaceTimeout {
        /// The connect timeout.
        timeout: Duration,
        /// Addresses tried.
        tried: usize,
        /// The address tried last.
        last: SocketAddr,
    },
    /// The URI given to a [`Connector`] without addresses names no IP address.
    #[error("{0} is not an IP address")]
    NotAnAddress(String),
    /// The HTTP/1 handshake on the new connection failed.
    #[error("http/1.1 handshake failed")]
    Handshake(#[source] hyper::Error),
}

impl ConnectError {
    /// The address a failed race tried last (for the connect-error metric of a named endpoint).
    pub fn last_addr(&self) -> Option<SocketAddr> {
        match self {
            ConnectError::Race { last, .. } | ConnectError::RaceTimeout { last, .. } => Some(*last),
            _ => None,
        }
    }
}

/// A TCP connection to `addrs` (Nagle off) and the address it reached, within `timeout`.
pub async fn connect(
    addrs: &Addrs,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let (stream, peer) = match addrs {
        Addrs::One(addr) => match tokio::time::timeout(timeout, TcpStream::connect(*addr)).await {
            Ok(Ok(s)) => (s, *addr),
            Ok(Err(e)) => return Err(ConnectError::Tcp(e)),
            Err(_) => return Err(ConnectError::Timeout(timeout)),
        },
        Addrs::Race(list) => race(list, CONNECTION_ATTEMPT_DELAY, timeout).await?,
    };
    // Without Nagle a request head is not held back waiting for an ACK.
    let _ = stream.set_nodelay(true);
    Ok((stream, peer))
}

/// Races connections to `addrs` in their order: the next attempt starts `delay` after the previous one, or
/// at once when every started attempt has failed; the first connection wins, the others are dropped; all
/// within `timeout`.
pub async fn race(
    addrs: &[SocketAddr],
    delay: Duration,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let deadline = Instant::now() + timeout;
    let mut pending = addrs.iter().copied();
    let mut attempts = FuturesUnordered::new();
    let mut tried = 0;
    let mut last_started = None;
    let mut last_failed = None;
    let mut next_at = Instant::now();
    loop {
        if attempts.is_empty() {
            let Some(addr) = pending.next() else {
                return Err(match last_failed {
                    Some((last, source)) => ConnectError::Race {
                        tried,
                        last,
                        source,
                    },
                    None => ConnectError::NoAddresses,
                });
            };
            attempts.push(attempt(addr));
            tried += 1;
            last_started = Some(addr);
            next_at = Instant::now() + delay;
        }
        let more = pending.len() > 0;
        tokio::select! {
            Some((addr, result)) = attempts.next() => match result {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connection attempt failed; trying the next address");
                    last_failed = Some((addr, e));
                    // A failure starts the next attempt at once (RFC 8305 section 5).
                    if let Some(next) = pending.next() {
                        attempts.push(attempt(next));
                        tried += 1;
                        last_started = Some(next);
                        next_at = Instant::now() + delay;
                    }
                }
            },
            () = tokio::time::sleep_until(next_at), if more => {
                if let Some(next) = pending.next() {
                    attempts.push(attempt(next));
                    tried += 1;
                    last_started = Some(next);
                    next_at = Instant::now() + delay;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(ConnectError::RaceTimeout {
                    timeout,
                    tried,
                    last: last_started.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                });
            }
        }
    }
}

/// One connection attempt, tagged with its address.
async fn attempt(addr: SocketAddr) -> (SocketAddr, io::Result<TcpStream>) {
    (addr, TcpStream::connect(addr).await)
}

/// The connector of the hyper-util clients (`h2c`, `https`, `h2`): without addresses it connects to the IP
/// address the URI names (an endpoint given by address, whose URI authority is that address); with
/// addresses (an endpoint named by DNS, whose URI authority is its name) it races them, whatever the URI
/// says. Either way within `timeouts.connect`.
#[derive(Debug, Clone)]
pub struct Connector {
    timeout: Duration,
    addrs: Option<Addrs>,
}

impl Connector {
    /// A connector to the IP address of each URI.
    pub fn new(timeout: Duration) -> Self {
        Connector {
            timeout,
            addrs: None,
        }
    }

    /// A connector to `addrs`, for the client of one endpoint named by DNS.
    pub fn to(addrs: Addrs, timeout: Duration) -> Self {
        Connector {
            timeout,
            addrs: Some(addrs),
        }
    }
}

/// The address an endpoint URI names (`http://[::1]:8080`, `https://127.0.0.1` is port 443).
fn literal(uri: &Uri) -> Result<Addrs, ConnectError> {
    let host = uri.host().unwrap_or_default();
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| ConnectError::NotAnAddress(host.to_string()))?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme() == Some(&Scheme::HTTPS) {
            443
        } else {
            80
        });
    Ok(Addrs::One(SocketAddr::new(ip, port)))
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let timeout = self.timeout;
        let addrs = match &self.addrs {
            Some(addrs) => Ok(addrs.clone()),
            None => literal(&uri),
        };
        Box::pin(async move {
            let (stream, _) = connect(&addrs?, timeout).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn ipv6_comes_first_and_the_families_alternate() {
        let Addrs::Race(order) = Addrs::race(&addrs(&[
            "192.0.2.1:80",
            "192.0.2.2:80",
            "192.0.2.3:80",
            "[2001:db8::1]:80",
            "[2001:db8::2]:80",
        ])) else {
            panic!("not a race");
        };
        assert_eq!(
            &order[..],
            &addrs(&[
                "[2001:db8::1]:80",
                "192.0.2.1:80",
                "[2001:db8::2]:80",
                "192.0.2.2:80",
                "192.0.2.3:80",
            ])[..]
        );
        let Addrs::Race(only_v4) = Addrs::race(&addrs(&["192.0.2.1:80", "192.0.2.2:80"])) else {
            panic!("not a race");
        };
        assert_eq!(&only_v4[..], &addrs(&["192.0.2.1:80", "192.0.2.2:80"])[..]);
    }

    /// A loopback port with nothing listening: connects are refused at once.
    fn refused(bind: &str) -> (SocketAddr, socket2::Socket) {
        let addr: SocketAddr = bind.parse().unwrap();
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        s.bind(&addr.into()).unwrap();
        (s.local_addr().unwrap().as_socket().unwrap(), s)
    }

    #[tokio::test]
    async fn a_refused_address_falls_over_to_the_next_at_once() {
        let (dead, _keep) = refused("[::1]:0");
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let started = std::time::Instant::now();
        // A delay far above the test's patience: only "at once on failure" can pass.
        let (_, peer) = race(
            &[dead, live_addr],
            Duration::from_secs(30),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(peer, live_addr);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn every_address_refused_names_the_last_one() {
        let (a, _ka) = refused("[::1]:0");
        let (b, _kb) = refused("127.0.0.1:0");
        match race(&[a, b], CONNECTION_ATTEMPT_DELAY, Duration::from_secs(5)).await {
            Err(ConnectError::Race { tried: 2, last, .. }) => assert_eq!(last, b),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn no_addresses_is_an_error_not_a_wait() {
        assert!(matches!(
            connect(&Addrs::race(&[]), Duration::from_secs(5)).await,
            Err(ConnectError::NoAddresses)
        ));
    }

    #[tokio::test]
    async fn a_connector_without_addresses_connects_to_the_uri_address() {
        let live = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let uri: Uri = format!("http://{}/", live.local_addr().unwrap())
            .parse()
            .unwrap();
        let mut c = Connector::new(Duration::from_secs(5));
        let io = tower_service::Service::call(&mut c, uri).await.unwrap();
        assert_eq!(io.inner().peer_addr().unwrap(), live.local_addr().unwrap());
        let named: Uri = "http://example.test:80/".parse().unwrap();
        assert!(matches!(
            tower_service::Service::call(&mut c, named).await,
            Err(ConnectError::NotAnAddress(_))
        ));
    }
}
