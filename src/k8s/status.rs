//! Writing `status.loadBalancer.ingress` of Ingresses: the leader's job (see [`super::leader`]).
//!
//! [`resolve_addresses`] finds the addresses to publish now; [`reconcile`] makes every Ingress's status
//! agree with them, from the Ingresses as they are (not from what was written before), so a restarted
//! leader converges the same way a running one does.
//!
//! # What counts as ours
//!
//! After a restart the addresses published before are unknown, so the rule only uses the current ones:
//! - an Ingress we own gets exactly our current addresses: its whole list is replaced, so addresses we
//!   no longer publish (a node that left) disappear with the next write;
//! - an Ingress we do not own loses every entry equal to one of our *current* addresses (IP addresses
//!   compared as addresses, host names without regard to case) and keeps every other entry.
//!
//! So an Ingress that stops being ours while our addresses also change keeps the addresses that were ours
//! before the change and are no longer published. And another controller that publishes some of the same
//! addresses (node addresses of a `NodePort` Service) loses them from the Ingresses it owns, until it
//! writes them back.
//!
//! RBAC: `services` `get`; `nodes` `list` (only for a `NodePort` publish Service); `ingresses/status`
//! `patch`.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;

use super::addresses::publish_addresses;
use super::IngressKey;

/// Status writes in flight at once.
const WRITE_CONCURRENCY: usize = 8;

/// Where the published addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// These addresses (`--publish-address`), both families.
    Addresses(Vec<IpAddr>),
    /// The addresses of this Service: see [`publish_addresses`].
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// No addresses.
    Nothing,
}

/// The addresses to publish now, sorted and de-duplicated as [`publish_addresses`] returns them:
/// the explicit ones, or those of the publish Service (one `get`) and, when it is a `NodePort` Service,
/// the `InternalIP` and `ExternalIP` addresses of every node (one `list`). [`Publish::Nothing`] gives an
/// empty list.
///
/// # Errors
///
/// A missing publish Service is an error (a `404` [`kube::Error::Api`]), as is any failed request: the
/// caller keeps the status as it is rather than clearing it while the Service is being replaced.
/// A `LoadBalancer` Service without addresses yet is not an error: the list is empty.
pub async fn resolve_addresses(
    client: &kube::Client,
    publish: &Publish,
) -> Result<Vec<IngressLoadBalancerIngress>, kube::Error> {
    match publish {
        Publish::Nothing => Ok(Vec::new()),
        Publish::Addresses(ips) => Ok(publish_addresses(None, &[], ips)),
        Publish::Service { namespace, name } => {
            let services: Api<Service> = Api::namespaced(client.clone(), namespace);
            let service = services.get(name).await?;
            let node_port =
                service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort");
            let nodes = if node_port {
                let nodes: Api<Node> = Api::all(client.clone());
                nodes
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .map(Arc::new)
                    .collect()
            } else {
                Vec::new()
            };
            Ok(publish_addresses(Some(&service), &nodes, &[]))
        }
    }
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusOutcome {
    /// Ingresses whose status was written.
    pub written: usize,
    /// Ingresses whose status needed a write that failed (the Ingress is gone, a conflict, the API
    /// server); the next reconcile tries again.
    pub failed: usize,
    /// Ingresses whose status already agreed.
    pub unchanged: usize,
}

/// Makes the status of every Ingress in `ingresses` agree with `ours` (see the [module](self) for the
/// rule): Ingresses in `owned` get exactly `ours`; the others lose the entries equal to one of `ours`.
/// Only Ingresses whose status differs are written, each with one merge patch of its `status`
/// subresource (a removal from an Ingress not owned carries its resourceVersion, so entries written
/// meanwhile by someone else are not lost: that write fails with a conflict instead). One failed write
/// does not stop the others.
pub async fn reconcile(
    client: &kube::Client,
    ingresses: &[Arc<Ingress>],
    owned: &HashSet<IngressKey>,
    ours: &[IngressLoadBalancerIngress],
) -> StatusOutcome {
    let mut outcome = StatusOutcome::default();
    let our_addresses: BTreeSet<Address> = ours.iter().filter_map(address).collect();
    let mut writes = Vec::new();
    for ingress in ingresses {
        let Some(name) = ingress.metadata.name.clone() else {
            continue;
        };
        let key = IngressKey {
            namespace: ingress
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name,
        };
        let current = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_deref())
            .unwrap_or_default();
        if owned.contains(&key) {
            if current == ours {
                outcome.unchanged += 1;
            } else {
                writes.push(Write {
                    key,
                    entries: ours.to_vec(),
                    resource_version: None,
                });
            }
        } else {
            let kept: Vec<IngressLoadBalancerIngress> = current
                .iter()
                .filter(|e| address(e).is_none_or(|a| !our_addresses.contains(&a)))
                .cloned()
                .collect();
            if kept.len() == current.len() {
                outcome.unchanged += 1;
            } else {
                writes.push(Write {
                    key,
                    entries: kept,
                    resource_version: ingress.metadata.resource_version.clone(),
                });
            }
        }
    }
    let results: Vec<bool> = stream::iter(writes)
        .map(|w| w.send(client))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    for ok in results {
        if ok {
            outcome.written += 1;
        } else {
            outcome.failed += 1;
        }
    }
    outcome
}

/// An address as status entries are compared: IP addresses by value, host names without case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Address {
    Ip(IpAddr),
    Name(String),
}

fn address(entry: &IngressLoadBalancerIngress) -> Option<Address> {
    if let Some(ip) = entry.ip.as_deref().filter(|s| !s.is_empty()) {
        return Some(match ip.parse::<IpAddr>() {
            Ok(ip) => Address::Ip(ip.to_canonical()),
            Err(_) => Address::Name(ip.to_ascii_lowercase()),
        });
    }
    entry
        .hostname
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|h| Address::Name(h.to_ascii_lowercase()))
}

/// One status write.
struct Write {
    key: IngressKey,
    entries: Vec<IngressLoadBalancerIngress>,
    /// Precondition: the write fails with a conflict if the Ingress changed since.
    resource_version: Option<String>,
}

impl Write {
    async fn send(self, client: &kube::Client) -> bool {
        let api: Api<Ingress> = Api::namespaced(client.clone(), &self.key.namespace);
        // `null` removes the list: an Ingress without addresses has `loadBalancer: {}`.
        let list = if self.entries.is_empty() {
            serde_json::Value::Null
        } else {
            json!(self.entries)
        };
        let mut patch = json!({"status": {"loadBalancer": {"ingress": list}}});
        if let Some(rv) = &self.resource_version {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
        match api
            .patch_status(
                &self.key.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(ingress = %self.key, addresses = self.entries.len(), "Ingress status written");
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!(ingress = %self.key, "Ingress gone before its status was written");
                false
            }
            Err(e) => {
                tracing::warn!(ingress = %self.key, error = %e, "writing the Ingress status failed");
                false
            }
        }
    }
}
