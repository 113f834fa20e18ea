//! What changed in the reflector stores since the model builder last looked.
//!
//! An EndpointSlice change is recorded by the Service the slice belongs to: the builder can apply it to
//! the last translation alone ([`super::update_endpoints`]). Any other change, and every relist, asks for
//! a full translation. The record also knows which slices belong to which Service, so the builder
//! fetches just those from the store instead of walking every slice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use kube::runtime::watcher;
use tokio::sync::watch;

use super::{EndpointSlice, SERVICE_NAME_LABEL};

/// A Service by namespace and name.
pub type ServiceKey = (String, String);

/// The change record shared by the watchers (which write it) and the model builder (which takes it).
pub struct Changes {
    state: Mutex<State>,
    tick: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Something other than an EndpointSlice changed, or nothing has been translated yet.
    everything: bool,
    /// Services whose EndpointSlices changed.
    services: HashSet<ServiceKey>,
    /// The Service of each slice, by (namespace, slice name).
    service_of: HashMap<(String, String), String>,
    /// The slices of each Service, by name.
    members: HashMap<ServiceKey, BTreeSet<String>>,
    /// The slices seen so far in a relist (between `Init` and `InitDone`).
    relist: Option<HashMap<(String, String), String>>,
}

/// What changed since the last [`Changes::take`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Translate everything.
    pub everything: bool,
    /// Services whose EndpointSlices changed (meaningful when `everything` is false).
    pub services: Vec<ServiceKey>,
}

impl Default for Changes {
    fn default() -> Self {
        Self::new()
    }
}

impl Changes {
    /// A record that asks for a full translation first.
    pub fn new() -> Self {
        Changes {
            state: Mutex::new(State {
                everything: true,
                ..State::default()
            }),
            tick: watch::Sender::new(0),
        }
    }

    /// A receiver that sees every recorded change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records a change that needs a full translation.
    pub fn everything(&self) {
        self.update(|s| s.everything = true);
    }

    /// Records an EndpointSlice watch event.
    pub fn slice_event(&self, event: &watcher::Event<EndpointSlice>) {
        self.update(|s| match event {
            watcher::Event::Apply(slice) => {
                let (key, service) = slice_key(slice);
                let before = match service {
                    Some(service) => s.service_of.insert(key.clone(), service.to_string()),
                    None => s.service_of.remove(&key),
                };
                if before.as_deref() != service {
                    if let Some(before) = before {
                        s.leave(&key, before);
                    }
                    if let Some(service) = service {
                        s.members
                            .entry((key.0.clone(), service.to_string()))
                            .or_default()
                            .insert(key.1.clone());
                    }
                }
                if let Some(service) = service {
                    s.services.insert((key.0, service.to_string()));
                }
            }
            watcher::Event::Delete(slice) => {
                let (key, _) = slice_key(slice);
                if let Some(before) = s.service_of.remove(&key) {
                    s.leave(&key, before);
                }
            }
            watcher::Event::Init => s.relist = Some(HashMap::new()),
            watcher::Event::InitApply(slice) => {
                if let (key, Some(service)) = slice_key(slice) {
                    s.relist
                        .get_or_insert_with(HashMap::new)
                        .insert(key, service.to_string());
                }
            }
            watcher::Event::InitDone => {
                // A relist replaces what the watch knew (an `InitDone` without its `Init` keeps it).
                if let Some(relist) = s.relist.take() {
                    s.service_of = relist;
                }
                s.members.clear();
                for ((ns, slice), service) in &s.service_of {
                    s.members
                        .entry((ns.clone(), service.clone()))
                        .or_default()
                        .insert(slice.clone());
                }
                s.everything = true;
            }
        });
    }

    /// What changed since the last call, forgetting it.
    pub fn take(&self) -> Pending {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let services = std::mem::take(&mut s.services);
        Pending {
            everything: std::mem::take(&mut s.everything),
            services: services.into_iter().collect(),
        }
    }

    /// The names of the EndpointSlices of Service `ns/service`.
    pub fn slices_of(&self, ns: &str, service: &str) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.members
            .get(&(ns.to_string(), service.to_string()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl State {
    /// Slice `key` no longer belongs to `service`: that Service changed.
    fn leave(&mut self, key: &(String, String), service: String) {
        let service_key = (key.0.clone(), service);
        if let Some(names) = self.members.get_mut(&service_key) {
            names.remove(&key.1);
            if names.is_empty() {
                self.members.remove(&service_key);
            }
        }
        self.services.insert(service_key);
    }
}

/// A slice's (namespace, name) and the Service it belongs to.
fn slice_key(slice: &EndpointSlice) -> ((String, String), Option<&str>) {
    let meta = &slice.metadata;
    let key = (
        super::translate::namespace(meta).to_string(),
        meta.name.clone().unwrap_or_default(),
    );
    let service = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(String::as_str);
    (key, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(name: &str, service: Option<&str>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("ns".to_string()),
                labels: service.map(|s| {
                    [(SERVICE_NAME_LABEL.to_string(), s.to_string())]
                        .into_iter()
                        .collect()
                }),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".to_string(),
            endpoints: None,
            ports: None,
        }
    }

    fn key(service: &str) -> ServiceKey {
        ("ns".to_string(), service.to_string())
    }

    #[test]
    fn the_first_take_asks_for_everything_then_only_what_changed() {
        let changes = Changes::new();
        assert!(changes.take().everything);
        assert_eq!(changes.take(), Pending::default());
        changes.slice_event(&watcher::Event::Apply(slice("a-1", Some("a"))));
        changes.slice_event(&watcher::Event::Apply(slice("a-2", Some("a"))));
        assert_eq!(
            changes.take(),
            Pending {
                everything: false,
                services: vec![key("a")]
            }
        );
        assert_eq!(changes.slices_of("ns", "a"), ["a-1", "a-2"]);
        changes.everything();
        assert!(changes.take().everything);
    }

    #[test]
    fn a_slice_that_moves_or_goes_changes_its_services() {
        let changes = Changes::new();
        changes.take();
        changes.slice_event(&watcher::Event::Apply(slice("s", Some("a"))));
        changes.take();
        changes.slice_event(&watcher::Event::Apply(slice("s", Some("b"))));
        let mut moved = changes.take().services;
        moved.sort();
        assert_eq!(moved, [key("a"), key("b")]);
        assert!(changes.slices_of("ns", "a").is_empty());
        assert_eq!(changes.slices_of("ns", "b"), ["s"]);
        changes.slice_event(&watcher::Event::Delete(slice("s", Some("b"))));
        assert_eq!(changes.take().services, [key("b")]);
        assert!(changes.slices_of("ns", "b").is_empty());
        // A slice without the label belongs to no Service.
        changes.slice_event(&watcher::Event::Apply(slice("x", None)));
        assert_eq!(changes.take(), Pending::default());
    }

    #[test]
    fn a_relist_replaces_the_membership_and_asks_for_everything() {
        let changes = Changes::new();
        changes.take();
        changes.slice_event(&watcher::Event::Apply(slice("old", Some("a"))));
        changes.take();
        changes.slice_event(&watcher::Event::Init);
        changes.slice_event(&watcher::Event::InitApply(slice("new", Some("a"))));
        changes.slice_event(&watcher::Event::InitDone);
        assert!(changes.take().everything);
        assert_eq!(changes.slices_of("ns", "a"), ["new"]);
    }
}
