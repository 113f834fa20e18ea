//! Upstream endpoints: load balancing over endpoint sets, the clients and keep-alive pools that survive
//! reloads, and forwarding one request with a bounded connect-failure retry.

mod balance;
pub mod dns;
mod forward;
mod pool;
mod reclaim;
mod registry;

pub use balance::{Endpoint, EndpointSet};
pub use forward::{forward, ForwardError, RequestHead};
pub use pool::{ConnectError, EndpointPool, Http1Client, Lease, PoolBody, UpstreamBody};
pub use reclaim::ReclaimableBody;
pub use registry::{Registry, UpstreamClient, MAX_IDLE_PER_ENDPOINT};
