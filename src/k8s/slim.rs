//! `discovery.k8s.io/v1` EndpointSlice and `v1` Service as the controller keeps them: only what
//! translation reads.
//!
//! k8s-openapi's `EndpointSlice` spends 352 bytes on every endpoint (hints, zone, node name, target
//! reference, deprecated topology) before any of its strings, and its `Service` 824 bytes before its
//! selector, cluster IPs and status; routing needs an address and three conditions per endpoint, and a
//! Service's type, external name and ports. At 100,000 endpoints and 10,000 Services that difference is
//! the largest part of the controller's memory, so the watchers deserialize the API server's JSON
//! straight into these types (fields they do not name are skipped) and the stores keep them. They are
//! the same resources, watched through the same kube client; `--manifests` still checks files against
//! the whole k8s-openapi types.

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A Service: its metadata and the part of its spec that routing reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Service {
    /// Name and namespace.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Type, external name and ports.
    #[serde(default)]
    pub spec: Option<ServiceSpec>,
}

/// What routing reads of a Service's spec.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// The DNS name of an `ExternalName` Service.
    #[serde(default)]
    pub external_name: Option<String>,
    /// The Service's ports.
    #[serde(default)]
    pub ports: Option<Vec<ServicePort>>,
}

impl k8s_openapi::Resource for Service {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Service";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "services";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for Service {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<k8s_openapi::api::core::v1::Service> for Service {
    fn from(full: k8s_openapi::api::core::v1::Service) -> Self {
        Service {
            metadata: full.metadata,
            spec: full.spec.map(|s| ServiceSpec {
                type_: s.type_,
                external_name: s.external_name,
                ports: s.ports,
            }),
        }
    }
}

/// An EndpointSlice: its metadata, address type, ports and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Name, namespace and the `kubernetes.io/service-name` label.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Option<Vec<Endpoint>>,
    /// The ports every endpoint of the slice serves.
    #[serde(default)]
    pub ports: Option<Vec<EndpointPort>>,
}

/// One endpoint: its addresses (the API says they are fungible; the first is used) and conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Endpoint {
    /// Addresses of the endpoint, of the slice's address type.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `ready`, `serving`, `terminating`.
    #[serde(default)]
    pub conditions: Option<EndpointConditions>,
}

impl k8s_openapi::Resource for EndpointSlice {
    const API_VERSION: &'static str = "discovery.k8s.io/v1";
    const GROUP: &'static str = "discovery.k8s.io";
    const KIND: &'static str = "EndpointSlice";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "endpointslices";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for EndpointSlice {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<k8s_openapi::api::discovery::v1::EndpointSlice> for EndpointSlice {
    fn from(full: k8s_openapi::api::discovery::v1::EndpointSlice) -> Self {
        EndpointSlice {
            metadata: full.metadata,
            address_type: full.address_type,
            endpoints: full.endpoints.map(|eps| {
                eps.into_iter()
                    .map(|e| Endpoint {
                        addresses: e.addresses,
                        conditions: e.conditions,
                    })
                    .collect()
            }),
            ports: full.ports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_routing_needs_from_the_api_json_and_skips_the_rest() {
        let json = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{
                "addresses": ["fd00::1"],
                "conditions": {"ready": false, "serving": true, "terminating": true},
                "nodeName": "node-1", "zone": "a",
                "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u"},
                "hints": {"forZones": [{"name": "a"}]}
            }]
        });
        let slice: EndpointSlice = serde_json::from_value(json.clone()).expect("a slice");
        let full: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(json).expect("a slice");
        assert_eq!(slice, EndpointSlice::from(full));
        let endpoint = &slice.endpoints.as_deref().unwrap_or_default()[0];
        assert_eq!(endpoint.addresses, ["fd00::1"]);
        let conditions = endpoint.conditions.clone().unwrap_or_default();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
        assert!(std::mem::size_of::<Endpoint>() < 64);
    }

    #[test]
    fn a_service_keeps_its_type_external_name_and_ports() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "api.example.com",
                     "selector": {"app": "api"}, "clusterIPs": ["fd00::10"],
                     "ports": [{"name": "https", "port": 443, "appProtocol": "https"}]},
            "status": {"loadBalancer": {}}
        });
        let service: Service = serde_json::from_value(json.clone()).expect("a service");
        let full: k8s_openapi::api::core::v1::Service =
            serde_json::from_value(json).expect("a service");
        assert_eq!(service, Service::from(full));
        let spec = service.spec.unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert_eq!(spec.external_name.as_deref(), Some("api.example.com"));
        let port = &spec.ports.unwrap_or_default()[0];
        assert_eq!(
            (port.port, port.app_protocol.as_deref()),
            (443, Some("https"))
        );
    }
}
