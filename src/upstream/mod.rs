//! Upstream endpoints: load balancing over endpoint sets, the clients and keep-alive pools that survive
//! reloads, and forwarding one request with a bounded connect-failure retry.

mod balance;
pub mod dns;
mod forward;
pub mod happy_eyeballs;
mod pool;
mod reclaim;
mod registry;

pub use balance::{Endpoint, EndpointSet, NamedTarget};
pub use forward::{forward, ForwardError, Peer, RequestHead};
pub use happy_eyeballs::{Addrs, ConnectError};
pub use pool::{EndpointPool, Http1Client, Lease, PoolBody, UpstreamBody};
pub use reclaim::ReclaimableBody;
pub use registry::{Registry, UpstreamClient, MAX_IDLE_PER_ENDPOINT};
