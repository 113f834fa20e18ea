//! The addresses written to `status.loadBalancer.ingress` of the Ingresses we own.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;

/// The addresses clients reach us on, for Ingress status.
///
/// `explicit` addresses (`--publish-address`) win. Otherwise they come from the publish Service:
/// - `LoadBalancer`: its `status.loadBalancer.ingress` (IP and hostname entries);
/// - `NodePort`: the `InternalIP` and `ExternalIP` addresses of every node, both families;
/// - `ClusterIP` (or no type): its `clusterIPs` (`clusterIP` when the list is empty; headless has none);
/// - `ExternalName`: its name.
///
/// The result is de-duplicated: IPv4 addresses sorted, then IPv6 sorted, then host names sorted.
/// Text that is not an IP address where one is expected is skipped.
pub fn publish_addresses(
    service: Option<&Service>,
    nodes: &[Arc<Node>],
    explicit: &[IpAddr],
) -> Vec<IngressLoadBalancerIngress> {
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    if !explicit.is_empty() {
        ips.extend(explicit.iter().copied());
    } else if let Some(service) = service {
        collect(service, nodes, &mut ips, &mut names);
    }
    // `IpAddr`'s order puts every IPv4 address before every IPv6 address.
    ips.into_iter()
        .map(|ip| IngressLoadBalancerIngress {
            ip: Some(ip.to_string()),
            ..Default::default()
        })
        .chain(names.into_iter().map(|h| IngressLoadBalancerIngress {
            hostname: Some(h),
            ..Default::default()
        }))
        .collect()
}

fn collect(
    service: &Service,
    nodes: &[Arc<Node>],
    ips: &mut BTreeSet<IpAddr>,
    names: &mut BTreeSet<String>,
) {
    let spec = service.spec.as_ref();
    let mut add_ip = |text: &str| match text.parse::<IpAddr>() {
        Ok(ip) => {
            ips.insert(ip.to_canonical());
        }
        Err(_) => tracing::debug!(address = %text, "publish address is not an IP address; skipped"),
    };
    match spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP") {
        "LoadBalancer" => {
            let ingress = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref());
            for entry in ingress.into_iter().flatten() {
                if let Some(ip) = entry.ip.as_deref().filter(|s| !s.is_empty()) {
                    add_ip(ip);
                }
                if let Some(h) = entry.hostname.as_deref().filter(|s| !s.is_empty()) {
                    names.insert(h.to_ascii_lowercase());
                }
            }
        }
        "NodePort" => {
            let addresses = nodes
                .iter()
                .filter_map(|n| n.status.as_ref())
                .filter_map(|s| s.addresses.as_ref())
                .flatten();
            for a in addresses {
                if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                    add_ip(&a.address);
                }
            }
        }
        "ExternalName" => {
            if let Some(h) = spec.and_then(|s| s.external_name.as_deref()) {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                if !h.is_empty() {
                    names.insert(h);
                }
            }
        }
        _ => {
            let listed = spec
                .and_then(|s| s.cluster_ips.as_deref())
                .unwrap_or_default();
            let single = spec.and_then(|s| s.cluster_ip.as_deref());
            let all: Vec<&str> = if listed.is_empty() {
                single.into_iter().collect()
            } else {
                listed.iter().map(String::as_str).collect()
            };
            for ip in all {
                // "None" marks a headless Service.
                if ip != "None" && !ip.is_empty() {
                    add_ip(ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeStatus, ServiceSpec,
        ServiceStatus,
    };

    fn service(type_: &str) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(type_.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(addresses: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn texts(list: &[IngressLoadBalancerIngress]) -> Vec<String> {
        list.iter()
            .map(|e| match (&e.ip, &e.hostname) {
                (Some(ip), _) => ip.clone(),
                (None, Some(h)) => format!("host:{h}"),
                (None, None) => "?".to_string(),
            })
            .collect()
    }

    #[test]
    fn explicit_addresses_win_and_are_sorted_ipv4_first() {
        let explicit: Vec<IpAddr> = [
            "fd00::2",
            "169.254.1.2",
            "fd00::1",
            "169.254.1.1",
            "fd00::1",
        ]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
        let mut svc = service("ClusterIP");
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ips = Some(vec!["169.254.9.9".into()]);
        }
        let got = publish_addresses(Some(&svc), &[], &explicit);
        assert_eq!(
            texts(&got),
            ["169.254.1.1", "169.254.1.2", "fd00::1", "fd00::2"]
        );
    }

    #[test]
    fn load_balancer_uses_status_ips_and_hostnames() {
        let mut svc = service("LoadBalancer");
        let entry = |ip: Option<&str>, host: Option<&str>| LoadBalancerIngress {
            ip: ip.map(String::from),
            hostname: host.map(String::from),
            ..Default::default()
        };
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    entry(Some("2001:db8::5"), None),
                    entry(Some("192.0.2.7"), None),
                    entry(None, Some("LB.example.com")),
                    entry(Some("192.0.2.7"), None),
                    entry(Some("not-an-ip"), None),
                ]),
            }),
            ..Default::default()
        });
        let got = publish_addresses(Some(&svc), &[], &[]);
        assert_eq!(
            texts(&got),
            ["192.0.2.7", "2001:db8::5", "host:lb.example.com"]
        );
    }

    #[test]
    fn load_balancer_without_status_publishes_nothing() {
        assert!(publish_addresses(Some(&service("LoadBalancer")), &[], &[]).is_empty());
    }

    #[test]
    fn node_port_uses_internal_and_external_node_addresses_of_both_families() {
        let nodes = [
            node(&[
                ("InternalIP", "169.254.20.2"),
                ("InternalIP", "fd00::20:2"),
                ("Hostname", "node-a"),
                ("ExternalIP", "192.0.2.20"),
            ]),
            node(&[
                ("InternalIP", "169.254.20.1"),
                ("InternalDNS", "node-b.local"),
            ]),
            node(&[
                ("InternalIP", "169.254.20.1"),
                ("ExternalIP", "2001:db8::20"),
            ]),
        ];
        let got = publish_addresses(Some(&service("NodePort")), &nodes, &[]);
        assert_eq!(
            texts(&got),
            [
                "169.254.20.1",
                "169.254.20.2",
                "192.0.2.20",
                "2001:db8::20",
                "fd00::20:2"
            ]
        );
    }

    #[test]
    fn cluster_ip_uses_cluster_ips_of_both_families() {
        let mut svc = service("ClusterIP");
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ip = Some("169.254.30.1".into());
            spec.cluster_ips = Some(vec!["fd00::30:1".into(), "169.254.30.1".into()]);
        }
        let got = publish_addresses(Some(&svc), &[], &[]);
        assert_eq!(texts(&got), ["169.254.30.1", "fd00::30:1"]);
    }

    #[test]
    fn cluster_ip_falls_back_to_single_cluster_ip_and_skips_headless() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("169.254.30.2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            texts(&publish_addresses(Some(&svc), &[], &[])),
            ["169.254.30.2"]
        );
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ip = Some("None".into());
        }
        assert!(publish_addresses(Some(&svc), &[], &[]).is_empty());
    }

    #[test]
    fn external_name_publishes_the_name() {
        let mut svc = service("ExternalName");
        if let Some(spec) = svc.spec.as_mut() {
            spec.external_name = Some("Ingress.Example.com.".into());
        }
        assert_eq!(
            texts(&publish_addresses(Some(&svc), &[], &[])),
            ["host:ingress.example.com"]
        );
    }

    #[test]
    fn nothing_to_publish_without_service_or_addresses() {
        assert!(publish_addresses(None, &[node(&[("InternalIP", "169.254.1.1")])], &[]).is_empty());
    }
}
