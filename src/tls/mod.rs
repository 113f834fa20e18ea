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

pub use store::{CertEntry, CertStore, TlsError};

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
