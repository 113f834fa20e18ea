//! Upstream endpoints: load balancing over endpoint sets, the keep-alive connection pool, and forwarding
//! one request with connect-failure retry.

mod balance;
mod forward;
mod reclaim;

pub use balance::{Endpoint, EndpointSet};
pub use forward::{ForwardError, RequestHead, Upstreams};
pub use reclaim::ReclaimableBody;
