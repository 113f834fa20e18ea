//! Kubernetes as a source of the [`Model`]: the pure translation from Ingress, IngressClass, Service,
//! EndpointSlice and Secret objects to routes, backends and certificates.
//!
//! Everything here is a plain function over k8s-openapi types, with no I/O except [`manifests::load_dir`]
//! (which reads objects from files for `--manifests DIR --check` and tests). The watchers hand the objects
//! of their reflector stores to [`translate`] as a [`ClusterState`]; whatever a single object gets wrong
//! becomes a [`Problem`] naming the Ingress it affects, never a failed snapshot.

pub mod addresses;
pub mod changes;
pub mod controller;
pub mod events;
pub mod leader;
pub mod manifests;
pub mod report;
pub mod slim;
pub mod status;
mod translate;

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::model::Model;
pub use slim::{EndpointSlice, Service};

pub use translate::{
    apply_endpoint_changes, is_ours, translate, translate_with, update_endpoints, EndpointChanges,
    Memo, ServiceSlices,
};

/// The controller name an IngressClass's `spec.controller` must carry for its Ingresses to be ours.
pub const DEFAULT_CONTROLLER_NAME: &str = "dualstack-ingress.io/controller";
/// The default `--ingress-class`: the value of the legacy `kubernetes.io/ingress.class` annotation.
pub const DEFAULT_INGRESS_CLASS: &str = "dualstack";
/// Legacy Ingress annotation naming the class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// IngressClass annotation marking the class used by Ingresses that name none.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects translation reads, as the reflector stores hand them out.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    /// Ingresses of every class; those that are not ours are ignored.
    pub ingresses: Vec<Arc<Ingress>>,
    /// IngressClasses.
    pub classes: Vec<Arc<IngressClass>>,
    /// Services referenced by Ingress backends.
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices, matched to Services by their `kubernetes.io/service-name` label.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Secrets referenced by `spec.tls[].secretName`.
    pub secrets: Vec<Arc<Secret>>,
}

/// Which Ingresses are ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Value of the legacy `kubernetes.io/ingress.class` annotation that selects us (`--ingress-class`).
    pub ingress_class: String,
    /// `spec.controller` of the IngressClasses that are ours.
    pub controller_name: String,
    /// Only Ingresses in this namespace count, when set.
    pub watch_namespace: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_class: DEFAULT_INGRESS_CLASS.to_string(),
            controller_name: DEFAULT_CONTROLLER_NAME.to_string(),
            watch_namespace: None,
        }
    }
}

/// Namespace and name of an Ingress; displayed as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IngressKey {
    /// Namespace (`default` when the object has none).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for IngressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Something in an Ingress (or an object it refers to) that could not be used. Only the part that uses
/// it is affected: a path to a missing Service still routes (to a backend without endpoints), a broken
/// certificate is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The Ingress it affects.
    pub ingress: IngressKey,
    /// Short, fixed label for metrics and events: `service-not-found`, `port-not-found`,
    /// `secret-not-found`, `bad-certificate`, `conflict`, `bad-host`, `bad-path`, `bad-backend`,
    /// `bad-external-name`, `fqdn-slice`.
    pub reason: &'static str,
    /// What is wrong, naming the objects involved (without the Ingress itself, see `Display`).
    pub message: String,
}

impl fmt::Display for Problem {
    /// `namespace/name: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.ingress, self.message)
    }
}

/// Counts of what a translation produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Distinct hosts with rules (rules without a host not counted).
    pub hosts: usize,
    /// Paths over all rules.
    pub paths: usize,
    /// IPv4 endpoints over all backends.
    pub endpoints_v4: usize,
    /// IPv6 endpoints over all backends.
    pub endpoints_v6: usize,
    /// Certificates.
    pub certificates: usize,
}

/// The result of [`translate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// Routes, backends, default backend and certificates; every other field is left at its default.
    pub model: Model,
    /// Everything that could not be used, in Ingress order (oldest first).
    pub problems: Vec<Problem>,
    /// Every Ingress of our class (and namespace), oldest first: the ones whose status we write.
    pub owned: Vec<IngressKey>,
    /// Counts for logs and metrics.
    pub stats: Stats,
}

#[cfg(test)]
mod tests;
