//! dualstack-ingress: an HTTP reverse proxy and Kubernetes ingress that is correct on IPv4 and IPv6 at the
//! same time. Sources (the static file, the Kubernetes watchers) publish a [`model::Model`]; one apply loop
//! compiles it into an immutable [`snapshot::Snapshot`] and swaps it in whole (see ARCHITECTURE.md).

pub mod admin;
pub mod config;
pub mod demo;
pub mod http_types;
#[cfg(feature = "kubernetes")]
pub mod k8s;
pub mod listen;
pub mod model;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod upstream;
