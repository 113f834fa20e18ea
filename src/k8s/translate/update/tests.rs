//! An endpoints-only update gives exactly what a full translation of the new cluster state gives.

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointConditions;

use super::*;
use crate::k8s::slim::{Endpoint, EndpointSlice};
use crate::k8s::{manifests, translate, translate_with, ClusterState, Options, SERVICE_NAME_LABEL};

fn example() -> ClusterState {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes");
    manifests::load_dir(&dir).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
}

/// What the controller hands over for Service `ns/name` in `state`.
fn slices_now(state: &ClusterState, ns: &str, name: &str) -> ServiceSlices {
    ServiceSlices {
        namespace: ns.to_string(),
        name: name.to_string(),
        service: state
            .services
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata.name.as_deref() == Some(name)
            })
            .cloned(),
        slices: state
            .slices
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns) && service_of(s) == Some(name))
            .cloned()
            .collect(),
    }
}

/// Replaces the slice named `slice` with `edit` applied to a copy (a new object, as a store holds it).
fn edit_slice(state: &mut ClusterState, slice: &str, edit: impl FnOnce(&mut EndpointSlice)) {
    let at = state
        .slices
        .iter()
        .position(|s| s.metadata.name.as_deref() == Some(slice))
        .unwrap_or_else(|| panic!("no slice {slice}"));
    let mut copy = (*state.slices[at]).clone();
    edit(&mut copy);
    state.slices[at] = Arc::new(copy);
}

fn endpoint(address: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    Endpoint {
        addresses: vec![address.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
    }
}

/// Translates `before`, updates to `after` through `update_endpoints` for the Services named, and checks
/// the result against a full translation of `after`; returns the number of backends changed.
fn check(before: &ClusterState, after: &ClusterState, services: &[&str]) -> usize {
    let opts = Options::default();
    let mut memo = Memo::default();
    let first = translate_with(before, &opts, &mut memo);
    let changed: Vec<ServiceSlices> = services
        .iter()
        .map(|s| slices_now(after, "default", s))
        .collect();
    let changes = update_endpoints(&mut memo, &changed).expect("an endpoints-only change");
    let count = changes.len();
    let (mut model, mut stats) = (first.model.clone(), first.stats);
    apply_endpoint_changes(&mut model, &mut stats, changes);
    let full = translate(after, &opts);
    assert_eq!(model, full.model);
    assert_eq!(stats, full.stats);
    assert_eq!(
        first.problems, full.problems,
        "an endpoints-only change changes no problem"
    );
    // The memo stays true to the objects: a later translation through it equals a fresh one.
    assert_eq!(translate_with(after, &opts, &mut memo), full);
    count
}

#[test]
fn a_slice_losing_and_gaining_endpoints_updates_only_its_backends() {
    let before = example();
    let mut after = before.clone();
    edit_slice(&mut after, "web-ipv4", |s| {
        s.endpoints = Some(vec![
            endpoint("169.254.10.1", true, true, false),
            endpoint("169.254.10.9", true, true, false),
        ]);
    });
    assert_eq!(check(&before, &after, &["web"]), 1);
}

#[test]
fn a_service_used_by_two_ingresses_and_two_ports_updates_every_user() {
    let before = example();
    let mut after = before.clone();
    let api_slices: Vec<String> = before
        .slices
        .iter()
        .filter(|s| service_of(s) == Some("api"))
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert!(!api_slices.is_empty());
    for name in &api_slices {
        edit_slice(&mut after, name, |s| {
            if let Some(eps) = s.endpoints.as_mut() {
                eps.truncate(1);
            }
        });
    }
    assert!(check(&before, &after, &["api"]) >= 2);
}

#[test]
fn not_ready_endpoints_leave_and_terminating_ones_serve_only_when_nothing_is_ready() {
    let terminating = |s: &mut EndpointSlice| {
        for e in s.endpoints.get_or_insert_with(Vec::new).iter_mut() {
            let address = e.addresses[0].clone();
            *e = endpoint(&address, false, true, true);
        }
    };
    // IPv4 terminating while IPv6 is ready: only IPv6 serves.
    let before = example();
    let mut v4_leaving = before.clone();
    edit_slice(&mut v4_leaving, "web-ipv4", terminating);
    assert_eq!(check(&before, &v4_leaving, &["web"]), 1);
    // Nothing ready: every serving-and-terminating endpoint is used.
    let mut all_leaving = v4_leaving.clone();
    edit_slice(&mut all_leaving, "web-ipv6", terminating);
    assert_eq!(check(&v4_leaving, &all_leaving, &["web"]), 1);
    // Not serving any more: gone.
    let mut gone = all_leaving.clone();
    edit_slice(&mut gone, "web-ipv4", |s| {
        s.endpoints = Some(vec![endpoint("169.254.10.1", false, false, true)]);
    });
    assert_eq!(check(&all_leaving, &gone, &["web"]), 1);
}

#[test]
fn slices_added_and_removed() {
    let before = example();
    let mut added = before.clone();
    let mut extra = (**added
        .slices
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("web-ipv6"))
        .expect("web-ipv6"))
    .clone();
    extra.metadata.name = Some("web-ipv6-2".to_string());
    extra.endpoints = Some(vec![endpoint("fd00::10:99", true, true, false)]);
    added.slices.push(Arc::new(extra));
    assert_eq!(check(&before, &added, &["web"]), 1);
    // And removed again.
    check(&added, &before, &["web"]);
    let mut emptied = before.clone();
    emptied.slices.retain(|s| service_of(s) != Some("web"));
    assert_eq!(check(&before, &emptied, &["web"]), 1);
}

#[test]
fn unchanged_or_unused_services_change_nothing() {
    let before = example();
    assert_eq!(check(&before, &before, &["web", "api"]), 0);
    assert_eq!(check(&before, &before, &["nobody-uses-this"]), 0);
}

#[test]
fn what_could_change_more_than_endpoints_is_declined() {
    let before = example();
    let opts = Options::default();

    // A slice of an address type we skip gives a problem: only a full translation lists it.
    let mut fqdn = before.clone();
    edit_slice(&mut fqdn, "web-ipv4", |s| {
        s.address_type = "FQDN".to_string();
    });
    let mut memo = Memo::default();
    translate_with(&before, &opts, &mut memo);
    assert!(update_endpoints(&mut memo, &[slices_now(&fqdn, "default", "web")]).is_none());

    // A changed Service object.
    let mut memo = Memo::default();
    translate_with(&before, &opts, &mut memo);
    let mut change = slices_now(&before, "default", "web");
    change.service = change.service.map(|s| Arc::new((*s).clone()));
    assert!(update_endpoints(&mut memo, &[change]).is_none());

    // A backend that had a problem (its Service is missing).
    let mut missing = before.clone();
    missing
        .services
        .retain(|s| s.metadata.name.as_deref() != Some("web"));
    let mut memo = Memo::default();
    translate_with(&missing, &opts, &mut memo);
    assert!(update_endpoints(&mut memo, &[slices_now(&missing, "default", "web")]).is_none());
}
