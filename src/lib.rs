//! dualstack-ingress: an HTTP reverse proxy and Kubernetes ingress that is correct on IPv4 and IPv6 at the
//! same time. See `DESIGN.md` for the architecture: sources produce a [`model::Model`], which is compiled
//! into an immutable [`routing::Table`] and swapped in whole.

pub mod admin;
pub mod config;
pub mod demo;
pub mod k8s;
pub mod listen;
pub mod model;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
