//! Everything a request uses, compiled from one model by the apply loop and published with one store: the
//! routing table (whose endpoint sets carry their upstream clients) and the certificates. A request loads
//! the snapshot once and uses it to the end.

use std::sync::Arc;

use crate::routing::Table;
use crate::tls::CertTable;

/// One immutable, complete state of the proxy.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Routes, backends and upstream timeouts.
    pub table: Table,
    /// Certificates, when TLS listeners exist.
    pub certs: Option<Arc<CertTable>>,
    /// Whether a source has delivered a model yet; before that nothing is routed (503) and `/readyz` fails.
    pub installed: bool,
    /// Request bodies larger than this many bytes get 413 (`limits.maxRequestBody`); `None`: no limit.
    pub max_request_body: Option<u64>,
}
