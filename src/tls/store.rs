//! Certificates: one prepared `rustls::ServerConfig` per certificate in an immutable [`CertTable`], chosen
//! per handshake; a reload builds a new table (reusing what did not change) that is swapped in whole with
//! the routing table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::model::{HostMatch, PemSource, TlsCert, TlsHost};

/// A certificate that could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{source_name}: {reason}")]
    Pem {
        /// The file (or `<inline PEM>`).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (for example, they do not match).
    #[error("{cert} with key {key}: {reason}")]
    Config {
        /// Certificate file.
        cert: String,
        /// Key file.
        key: String,
        /// rustls' reason.
        reason: String,
    },
}

/// One usable certificate: the names it serves and its server configuration.
#[derive(Debug)]
pub struct CertEntry {
    /// The names and addresses this certificate is selected for.
    pub hosts: Vec<TlsHost>,
    /// The handshake configuration (ALPN `h2`, `http/1.1`; TLS 1.2 and 1.3).
    pub config: Arc<ServerConfig>,
    /// Where it came from, to keep the last good one when a reload breaks it.
    source: Option<TlsCert>,
}

impl CertEntry {
    /// Whether this certificate covers the DNS name `host` (lower case): an exact name or a one-label
    /// wildcard of its hosts.
    pub fn covers(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| match h {
            TlsHost::Name(HostMatch::Exact(n)) => n == host,
            TlsHost::Name(HostMatch::Wildcard(suffix)) => host
                .split_once('.')
                .is_some_and(|(_, parent)| parent == suffix),
            TlsHost::Ip(_) => false,
        })
    }
}

/// The certificates in force: one immutable table, chosen from per handshake, built whole by
/// [`CertStore`] and published with the rest of a snapshot.
#[derive(Debug, Default)]
pub struct CertTable {
    entries: Vec<Arc<CertEntry>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    ip: HashMap<IpAddr, usize>,
}

/// Shared pieces every server configuration uses, so sessions resume across certificates and swaps.
#[derive(Debug)]
struct Shared {
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

/// Builds certificate tables; holds the session cache and ticket keys that every table shares, so
/// sessions resume across reloads.
#[derive(Debug)]
pub struct CertStore {
    shared: Shared,
}

impl CertStore {
    /// A store with a fresh session cache and ticketer.
    pub fn new() -> Result<CertStore, TlsError> {
        Ok(CertStore {
            shared: Shared {
                sessions: ServerSessionMemoryCache::new(16 * 1024),
                ticketer: super::ticketer().map_err(|e| TlsError::Pem {
                    source_name: "session ticketer".into(),
                    reason: e.to_string(),
                })?,
            },
        })
    }

    /// Loads every certificate; any that fails is an error. The first is the default; without any, a
    /// self-signed default is generated (with a warning).
    pub fn load(&self, certs: &[TlsCert]) -> Result<CertTable, TlsError> {
        let mut entries = Vec::new();
        for c in certs {
            entries.push(Arc::new(load_entry(c, &self.shared)?));
        }
        if entries.is_empty() {
            entries.push(Arc::new(self_signed(&self.shared)?));
        }
        Ok(CertTable::new(entries))
    }

    /// Loads `certs` for a reload. A certificate that fails to load is logged with its path and the one
    /// loaded before from the same sources (in `previous`) keeps serving; returns the errors too.
    pub fn update(
        &self,
        certs: &[TlsCert],
        previous: Option<&CertTable>,
    ) -> (CertTable, Vec<TlsError>) {
        let mut errors = Vec::new();
        let mut entries = Vec::new();
        for c in certs {
            let unchanged = previous.and_then(|old| {
                old.entries.iter().find(|e| {
                    e.source
                        .as_ref()
                        .is_some_and(|s| s == c && matches!(s.cert, PemSource::Inline(_)))
                })
            });
            if let Some(same) = unchanged {
                // Inline PEM (a Kubernetes Secret) that did not change: nothing to read or parse again.
                entries.push(same.clone());
                continue;
            }
            match load_entry(c, &self.shared) {
                Ok(e) => entries.push(Arc::new(e)),
                Err(err) => {
                    tracing::error!(error = %err, "certificate could not be loaded; keeping the previous one");
                    let kept = previous.and_then(|old| {
                        old.entries.iter().find(|e| {
                            e.source
                                .as_ref()
                                .is_some_and(|s| s.cert == c.cert && s.key == c.key)
                        })
                    });
                    entries.extend(kept.cloned());
                    errors.push(err);
                }
            }
        }
        if entries.is_empty() {
            match previous.and_then(|old| old.entries.iter().find(|e| e.source.is_none())) {
                Some(fallback) => entries.push(fallback.clone()),
                None => match self_signed(&self.shared) {
                    Ok(e) => entries.push(Arc::new(e)),
                    Err(err) => errors.push(err),
                },
            }
        }
        (CertTable::new(entries), errors)
    }
}

impl CertTable {
    /// The certificate for a handshake: by SNI name (exact, then one-label wildcard), else by the local
    /// address the client connected to (clients send no SNI for IP literals), else the default.
    pub fn select(&self, sni: Option<&str>, local_ip: IpAddr) -> Option<Arc<CertEntry>> {
        let by_name = sni.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&name).copied().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).copied()
            })
        });
        let local_ip = local_ip.to_canonical();
        let index = by_name
            .or_else(|| self.ip.get(&local_ip).copied())
            .unwrap_or(0);
        // A table that failed to build even a self-signed default is empty: the handshake fails, no panic.
        self.entries.get(index).or(self.entries.first()).cloned()
    }

    /// Whether some configured certificate is selected by the DNS name `host` (lower case), for the
    /// HTTPS redirect: two hash probes.
    pub fn has_certificate_for(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || host
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains_key(parent))
    }

    fn new(entries: Vec<Arc<CertEntry>>) -> CertTable {
        let mut t = CertTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            ip: HashMap::new(),
            entries,
        };
        for (i, e) in t.entries.iter().enumerate() {
            for h in &e.hosts {
                match h {
                    TlsHost::Name(HostMatch::Exact(n)) => {
                        t.exact.entry(n.clone()).or_insert(i);
                    }
                    TlsHost::Name(HostMatch::Wildcard(s)) => {
                        t.wildcard.entry(s.clone()).or_insert(i);
                    }
                    TlsHost::Ip(ip) => {
                        t.ip.entry(*ip).or_insert(i);
                    }
                }
            }
        }
        t
    }
}

/// Reads PEM bytes from a file or inline source.
pub fn read_pem(source: &PemSource) -> Result<Vec<u8>, TlsError> {
    match source {
        PemSource::File(path) => std::fs::read(path).map_err(|e| TlsError::Pem {
            source_name: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        }),
        PemSource::Inline(bytes) => Ok(bytes.to_vec()),
    }
}

/// Parses a PEM certificate chain (leaf first).
pub fn parse_chain(source: &PemSource) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(source)?;
    let err = |reason: String| TlsError::Pem {
        source_name: source.to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("invalid PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(chain)
}

fn load_entry(c: &TlsCert, shared: &Shared) -> Result<CertEntry, TlsError> {
    let chain = parse_chain(&c.cert)?;
    let key_pem = read_pem(&c.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        source_name: c.key.to_string(),
        reason: format!("no usable private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let config = server_config(chain, key, shared).map_err(|reason| TlsError::Config {
        cert: c.cert.to_string(),
        key: c.key.to_string(),
        reason,
    })?;
    Ok(CertEntry {
        hosts: c.hosts.clone(),
        config,
        source: Some(c.clone()),
    })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    shared: &Shared,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = shared.sessions.clone();
    config.ticketer = shared.ticketer.clone();
    // One TLS 1.3 ticket per handshake is enough for a client to resume; each one costs an encryption.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

fn self_signed(shared: &Shared) -> Result<CertEntry, TlsError> {
    tracing::warn!("no TLS certificate configured as default; serving a generated self-signed one");
    let err = |reason: String| TlsError::Pem {
        source_name: "self-signed certificate".into(),
        reason,
    };
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| err(e.to_string()))?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| err(e.to_string()))?;
    let config = server_config(vec![generated.cert.der().clone()], key, shared).map_err(err)?;
    Ok(CertEntry {
        hosts: Vec::new(),
        config,
        source: None,
    })
}
