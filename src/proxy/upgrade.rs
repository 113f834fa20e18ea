//! Splicing an upgraded (e.g. WebSocket) client connection to its upstream after a `101`.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Waits for both sides to finish upgrading, then copies bytes both ways until either side closes or
/// `stop` fires (the end of the drain period).
pub fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    tasks: &TaskTracker,
    stop: CancellationToken,
) {
    tasks.spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            () = stop.cancelled() => tracing::debug!("closing upgraded connection at the end of the drain"),
        }
    });
}
