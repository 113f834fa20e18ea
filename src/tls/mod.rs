//! TLS: the certificate store that picks a certificate per handshake (SNI, then the address the client
//! connected to, then a default), the server-side handshake, and client configurations for TLS upstreams.
//!
//! The store knows nothing about where certificates come from: the static file and, later, Kubernetes
//! Secrets both hand it [`crate::model::TlsCert`] values.

pub mod accept;
pub mod client;
pub mod store;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use store::{CertEntry, CertStore, CertTable, TlsError};

#[cfg(not(feature = "aws-lc-rs"))]
use rustls::crypto::ring as crypto;

#[cfg(feature = "aws-lc-rs")]
use rustls::crypto::aws_lc_rs as crypto;

/// The crypto provider used everywhere: ring, or aws-lc-rs with the `aws-lc-rs` feature.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::default_provider())
}

/// A session-ticket producer from the same provider.
pub fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    crypto::Ticketer::new()
}
