//! EndpointSlice changes without a full translation.
//!
//! Most changes in a cluster are endpoints coming and going: a pod becomes ready, a Deployment rolls.
//! Such a change alters the endpoints of the backends that use one Service, and nothing else: no rule,
//! host, certificate or problem. [`update_endpoints`] re-resolves only those backends from what the last
//! translation left in its [`Memo`], so the cost follows the size of the change rather than the size of
//! the cluster (the same split Envoy makes between its endpoint and route updates). Whenever the change
//! could affect more than endpoints (a backend with a problem before or after), it declines and the
//! caller translates everything.

use std::sync::Arc;

use super::{name, resolve, same, FastMap, Index, Memo, MemoBackend};
use crate::k8s::{EndpointSlice, Service, Stats};
use crate::model::{Backend, Model};

/// One Service whose EndpointSlices changed, with its objects as the stores hold them now.
#[derive(Debug, Clone)]
pub struct ServiceSlices {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name (the slices' `kubernetes.io/service-name` label).
    pub name: String,
    /// The Service object, when it exists.
    pub service: Option<Arc<Service>>,
    /// Every EndpointSlice labelled with the Service's name, in any order.
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// Model backends whose endpoints changed, by name, with their new contents.
pub type EndpointChanges = Vec<(String, Backend)>;

/// The backends that the EndpointSlice changes in `changed` alter, re-resolved with the objects given;
/// `memo` is brought up to date. `None` when this cannot be decided without a full translation: the
/// Service object itself changed, or a backend involved has a problem before or after the change
/// (problems name Ingresses, which only a full translation lists). Services no Ingress of ours uses
/// change nothing.
pub fn update_endpoints(memo: &mut Memo, changed: &[ServiceSlices]) -> Option<EndpointChanges> {
    let mut changes = EndpointChanges::new();
    for change in changed {
        let service_key = (change.namespace.clone(), change.name.clone());
        let Some(ports) = memo.used_by.get(&service_key) else {
            continue;
        };
        let mut slices = change.slices.clone();
        slices.sort_by(|a, b| name(&a.metadata).cmp(name(&b.metadata)));
        for (port, users) in ports {
            let memo_key = (change.namespace.clone(), change.name.clone(), port.clone());
            let previous = memo.backends.get(&memo_key)?;
            let same_service = previous.service.as_ref().map(Arc::as_ptr)
                == change.service.as_ref().map(Arc::as_ptr);
            if !same_service || !previous.resolved.problems.is_empty() {
                return None;
            }
            if same(&previous.slices, &slices) {
                continue;
            }
            let resolved = resolve(
                &service_index(change, &slices),
                &change.namespace,
                &change.name,
                port.as_ref(),
            );
            if !resolved.problems.is_empty() {
                return None;
            }
            if resolved.backend != previous.resolved.backend {
                changes.extend(
                    users
                        .iter()
                        .map(|user| (user.clone(), resolved.backend.clone())),
                );
            }
            let resolved = Arc::new(resolved);
            memo.backends.insert(
                memo_key,
                MemoBackend {
                    service: change.service.clone(),
                    slices: slices.clone(),
                    resolved,
                },
            );
        }
    }
    Some(changes)
}

/// An index holding one Service and its slices: all [`resolve`] reads for it.
fn service_index<'a>(change: &'a ServiceSlices, slices: &[Arc<EndpointSlice>]) -> Index<'a> {
    let key = (change.namespace.as_str(), change.name.as_str());
    let mut index = Index {
        services: FastMap::default(),
        slices: FastMap::default(),
        secrets: FastMap::default(),
    };
    if let Some(service) = &change.service {
        index.services.insert(key, service);
    }
    index.slices.insert(key, slices.to_vec());
    index
}

/// Puts `changes` into `model` and keeps `stats`' endpoint counts in line with them.
pub fn apply_endpoint_changes(model: &mut Model, stats: &mut Stats, changes: EndpointChanges) {
    for (name, backend) in changes {
        let (v4, v6) = families(&backend);
        stats.endpoints_v4 += v4;
        stats.endpoints_v6 += v6;
        if let Some(old) = model.backends.insert(name, backend) {
            let (v4, v6) = families(&old);
            stats.endpoints_v4 = stats.endpoints_v4.saturating_sub(v4);
            stats.endpoints_v6 = stats.endpoints_v6.saturating_sub(v6);
        }
    }
}

/// IPv4 and IPv6 endpoints of `backend`.
fn families(backend: &Backend) -> (usize, usize) {
    let v4 = backend.endpoints.iter().filter(|e| e.is_ipv4()).count();
    (v4, backend.endpoints.len() - v4)
}

#[cfg(test)]
mod tests;
