//! Listening sockets: one socket per address with socket2 (`IPV6_V6ONLY` on IPv6, `SO_REUSEADDR`), and the
//! accept loop that serves HTTP/1.1 and HTTP/2 (prior knowledge) on each, with its connection deadlines.

mod activity;
mod limit;
#[doc(hidden)]
pub mod proxy_protocol;
mod reserve;
mod serve;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use crate::model::ListenAddr;

pub use reserve::FdReserve;
pub use serve::{http_builder, serve, CertsInForce, ConnHandler, ServeOptions, Transport};

/// A listen address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    /// The address, as configured.
    pub addr: SocketAddr,
    /// The OS error (part of the message, so it is not repeated as a separate cause).
    pub error: io::Error,
}

/// Binds one listening socket. IPv6 sockets get `IPV6_V6ONLY`, so `0.0.0.0:P` and `[::]:P` can both be
/// bound and each family arrives on its own socket.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let wrap = |error| BindError { addr, error };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(wrap)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(wrap)?;
    }
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.listen(1024).map_err(wrap)?;
    TcpListener::from_std(socket.into()).map_err(wrap)
}

/// Whether a bind error means "this address family is not available on this host" (IPv6 disabled, no
/// IPv4 address), as opposed to a real problem such as a port in use.
pub fn family_unavailable(e: &BindError) -> bool {
    matches!(
        e.error.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Binds every address. An address whose family the host lacks is skipped with a warning; any other
/// failure, or having nothing left to listen on, is an error.
pub fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, BindError> {
    let bound = bind_list(addrs, |a| a)?;
    Ok(bound.into_iter().map(|(l, _)| l).collect())
}

/// Like [`bind_all`] for data listeners: each bound socket with the entry it came from (and so whether its
/// connections start with a PROXY protocol header).
pub fn bind_listen(addrs: &[ListenAddr]) -> Result<Vec<(TcpListener, ListenAddr)>, BindError> {
    bind_list(addrs, |a| a.addr)
}

fn bind_list<T: Copy>(
    items: &[T],
    addr_of: impl Fn(T) -> SocketAddr,
) -> Result<Vec<(TcpListener, T)>, BindError> {
    let mut listeners = Vec::new();
    let mut skipped = None;
    for &item in items {
        match bind(addr_of(item)) {
            Ok(l) => listeners.push((l, item)),
            Err(e) if family_unavailable(&e) => {
                tracing::warn!(error = %e, "address family unavailable on this host; continuing without it");
                skipped = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    match (listeners.is_empty(), skipped) {
        (true, Some(e)) => Err(e),
        _ => Ok(listeners),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let v4 = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = bind(SocketAddr::from(([0u16; 8], port))).unwrap();
        assert_eq!(v6.local_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn v6only_socket_refuses_ipv4_clients() {
        let v6 = bind("[::1]:0".parse().unwrap()).unwrap();
        let port = v6.local_addr().unwrap().port();
        let v6_any = bind(SocketAddr::from(([0u16; 8], 0))).unwrap();
        let any_port = v6_any.local_addr().unwrap().port();
        assert!(tokio::net::TcpStream::connect(("::1", port)).await.is_ok());
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", any_port))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        // A listening socket without SO_REUSEPORT cannot be bound twice.
        let err = bind(addr).unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
