//! Client TLS configurations for `https` and `h2` upstreams: system roots, or a CA bundle per backend.

use rustls::{ClientConfig, RootCertStore};

use super::store::{parse_chain, TlsError};
use crate::model::PemSource;

/// A client configuration that verifies upstream certificates against `ca`, or the system roots when
/// `ca` is `None`. Endpoints are addresses, so the certificate must carry their IP address as a SAN.
pub fn client_config(ca: Option<&PemSource>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(source) => {
            for cert in parse_chain(source)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    source_name: source.to_string(),
                    reason: format!("unusable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "while loading system root certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no system root certificates found; TLS upstreams without `ca` cannot be verified");
            }
        }
    }
    let config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pem {
            source_name: "client TLS".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
