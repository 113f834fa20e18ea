//! Leader election over a `coordination.k8s.io/v1` Lease ([`LEASE_NAME`] in the election namespace).
//!
//! Every replica serves traffic; only the one holding the lease writes Ingress status. [`spawn_election`]
//! campaigns with `kube-lease-manager` and publishes `true` on a watch channel while this replica holds
//! the lease, `false` otherwise.
//!
//! Losing the lease stops the leadership before the lease runs out: `kube-lease-manager` renews the lease
//! `grace` seconds before it expires; a watchdog reads the Lease (`get`) shortly before each expiry and,
//! when no renewal by this replica shows up (a renewal failed, hangs, or another holder took over), reports
//! `false` a little before the lease's end, then starts campaigning again from scratch. An error of the
//! lease manager also reports `false` at once and campaigns again with backoff. Nothing here panics; if
//! the lease manager ever does, the campaign restarts.
//!
//! RBAC: `leases` `get`, `create`, `update`, `patch` in the election namespace.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the Lease the replicas campaign for.
pub const LEASE_NAME: &str = "dualstack-ingress-leader";

/// The default lease duration: how long a holder that stopped renewing keeps the lease.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Campaigns for the lease [`LEASE_NAME`] in `namespace` as `identity` until `stop` fires (or the handle
/// is aborted). The receiver is `true` while this replica holds the lease.
///
/// `lease_duration` is rounded up to whole seconds, at least 2 (the Lease API counts seconds); the holder
/// renews a third of it (at least 1 s) before it runs out. On `stop` the receiver turns `false` first,
/// then the lease is released (bounded by the lease duration) so another replica takes over at once;
/// then the task ends. Errors are logged, reported as not-leader and retried with backoff.
pub fn spawn_election(
    client: kube::Client,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let timing = Timing::new(lease_duration);
    let handle = tokio::spawn(async move {
        // Aborting this task cancels the campaign it runs.
        let inner_stop = stop.child_token();
        let _cancel_on_drop = inner_stop.clone().drop_guard();
        let mut backoff = Backoff::new(timing.max_backoff());
        loop {
            let campaign = Campaign {
                client: client.clone(),
                namespace: namespace.clone(),
                identity: identity.clone(),
                timing,
                tx: tx.clone(),
                stop: inner_stop.clone(),
            };
            let ended = tokio::spawn(campaign.run()).await;
            tx.send_replace(false);
            if inner_stop.is_cancelled() {
                break;
            }
            if let Err(e) = ended {
                tracing::error!(error = %e, "leader election failed; campaigning again");
            }
            tokio::select! {
                () = inner_stop.cancelled() => break,
                () = tokio::time::sleep(backoff.next()) => {}
            }
        }
        tracing::debug!(%identity, "leader election stopped");
    });
    (rx, handle)
}

/// Lease timing in the whole seconds the Lease API uses.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Lease duration (at least 2).
    duration: u64,
    /// The holder renews this long before the lease runs out (at least 1, less than `duration`).
    grace: u64,
}

impl Timing {
    fn new(lease_duration: Duration) -> Self {
        let secs = lease_duration.as_secs() + u64::from(lease_duration.subsec_nanos() > 0);
        let duration = secs.clamp(2, 3600);
        let grace = (duration / 3).max(1);
        Timing { duration, grace }
    }

    fn duration(self) -> Duration {
        Duration::from_secs(self.duration)
    }

    fn grace(self) -> Duration {
        Duration::from_secs(self.grace)
    }

    /// Stop claiming the lease this long before it runs out.
    fn margin(self) -> Duration {
        self.grace() / 4
    }

    /// How often the watchdog reads the lease again while a renewal is late.
    fn recheck(self) -> Duration {
        self.grace() / 8
    }

    fn max_backoff(self) -> Duration {
        self.grace().max(Duration::from_secs(1))
    }
}

/// Exponential backoff from 200 ms, doubling up to a maximum.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);

    fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST,
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Why following one lease manager ended.
enum End {
    Stopped,
    Failed(String),
}

struct Campaign {
    client: kube::Client,
    namespace: String,
    identity: String,
    timing: Timing,
    tx: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
}

impl Campaign {
    /// Builds a lease manager and follows it; after a failure, reports not-leader and starts over with a
    /// new one. Returns when `stop` fires, after releasing the lease.
    async fn run(self) {
        let t = self.timing;
        let mut backoff = Backoff::new(t.max_backoff());
        loop {
            let build = LeaseManagerBuilder::new(self.client.clone(), LEASE_NAME)
                .with_namespace(self.namespace.clone())
                .with_identity(self.identity.clone())
                .with_duration(t.duration)
                .with_grace(t.grace)
                .build();
            let built = tokio::select! {
                () = self.stop.cancelled() => return,
                built = tokio::time::timeout(t.duration(), build) => built,
            };
            let failure = match built {
                Ok(Ok(manager)) => {
                    let started = Instant::now();
                    match self.follow(&manager).await {
                        End::Stopped => {
                            self.tx.send_replace(false);
                            self.release(&manager).await;
                            return;
                        }
                        End::Failed(why) => {
                            // Worked for a while: the trouble is new, try again soon.
                            if started.elapsed() > t.duration() {
                                backoff.reset();
                            }
                            why
                        }
                    }
                }
                Ok(Err(e)) => format!("setting up the lease: {e}"),
                Err(_) => "setting up the lease timed out".to_string(),
            };
            self.tx.send_replace(false);
            tracing::warn!(lease = LEASE_NAME, namespace = %self.namespace, error = %failure,
                "not leader; campaigning again");
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff.next()) => {}
            }
        }
    }

    /// Publishes every change the manager reports; while leader, watches that the lease keeps being
    /// renewed and gives up before it would run out.
    async fn follow(&self, manager: &LeaseManager) -> End {
        let t = self.timing;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut leader = false;
        loop {
            let changed = manager.changed();
            tokio::pin!(changed);
            // Until the watchdog has read the lease: the lease was written just before `changed` returned.
            let mut deadline = Instant::now() + t.duration().saturating_sub(t.grace());
            let mut check_at = Instant::now();
            let result = loop {
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return End::Stopped,
                    r = &mut changed => break r,
                    () = tokio::time::sleep_until(check_at.min(deadline)), if leader => {
                        if Instant::now() >= deadline {
                            return End::Failed("the lease was not renewed in time".to_string());
                        }
                        // Bounded by the deadline: a read that hangs must not keep us leader past it.
                        let give_up = deadline.min(Instant::now() + t.grace() / 2);
                        let read = tokio::time::timeout_at(give_up, leases.get(LEASE_NAME)).await;
                        check_at = Instant::now() + t.recheck();
                        match read.map(|r| r.map(|lease| held_until(&lease, &self.identity))) {
                            Ok(Ok(Some(end))) => {
                                let left = end.duration_since(SystemTime::now()).unwrap_or_default();
                                let end = Instant::now() + left;
                                if end.checked_sub(t.margin()).is_some_and(|d| d > deadline) {
                                    // Renewed: look again shortly before the next renewal is due to
                                    // have happened.
                                    deadline = end - t.margin();
                                    check_at = (end - t.grace() / 2).max(check_at);
                                }
                            }
                            Ok(Ok(None)) => {
                                return End::Failed("the lease is held by another replica".to_string());
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "reading the lease"),
                            Err(_) => tracing::debug!("reading the lease timed out"),
                        }
                    }
                }
            };
            match result {
                Ok(now_leader) => {
                    if now_leader != leader {
                        tracing::info!(lease = LEASE_NAME, namespace = %self.namespace,
                            identity = %self.identity, leader = now_leader, "leadership changed");
                    }
                    leader = now_leader;
                    self.tx.send_replace(leader);
                }
                Err(e) => return End::Failed(e.to_string()),
            }
        }
    }

    /// Gives the lease up (bounded by the lease duration) so another replica can take it at once.
    async fn release(&self, manager: &LeaseManager) {
        match tokio::time::timeout(self.timing.duration(), manager.release()).await {
            Ok(Ok(())) => tracing::debug!(identity = %self.identity, "lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

/// When the lease runs out, if `identity` holds it (`None` if another replica or nobody does).
fn held_until(lease: &Lease, identity: &str) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
    let secs = u64::try_from(spec.lease_duration_seconds?).ok()?;
    renewed.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_rounds_up_and_keeps_grace_below_duration() {
        let t = Timing::new(Duration::from_secs(15));
        assert_eq!((t.duration, t.grace), (15, 5));
        let t = Timing::new(Duration::from_millis(1500));
        assert_eq!((t.duration, t.grace), (2, 1));
        let t = Timing::new(Duration::ZERO);
        assert_eq!((t.duration, t.grace), (2, 1));
        let t = Timing::new(Duration::from_secs(4));
        assert_eq!((t.duration, t.grace), (4, 1));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(700));
        let seen: Vec<u128> = (0..4).map(|_| b.next().as_millis()).collect();
        assert_eq!(seen, [200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(200));
    }
}
