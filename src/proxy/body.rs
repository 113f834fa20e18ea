//! The upstream response body on its way to the client, with the two deadlines that apply after the
//! response head:
//!
//! - `timeouts.upstreamRead`: the longest the upstream may stay silent while the proxy waits for the next
//!   body frame. A timer is armed when a poll finds no frame ready and disarmed when one arrives; when it
//!   fires the body fails, so hyper cuts the response (HTTP/1: the connection closes before the body is
//!   complete; HTTP/2: the stream is reset).
//! - `timeouts.clientWrite`: the longest a frame may wait to be taken by the client. hyper polls the body
//!   only when it can write to the client, so the time from handing hyper a frame to hyper's next poll is
//!   the time the client left the response unread. A body that does not poll cannot time itself out, so
//!   from the second frame on (single-frame bodies, the common case, never need it) a small watchdog task
//!   watches the time of the last hand-over; when hyper has not polled again within `clientWrite` it drops
//!   the upstream body (closing or resetting the upstream connection), and the next poll, if any, fails.
//!
//! A body error (upstream truncated the response, or either deadline) is logged at warn with the endpoint,
//! and as a line on the `access` target with `truncated` set.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::http_types::BoxError;

/// Why the proxy cut a response body.
#[derive(Debug, thiserror::Error)]
pub enum CutBody {
    /// No body data from the upstream within `timeouts.upstreamRead`.
    #[error("no response body data from the upstream within {0:?} (timeouts.upstreamRead)")]
    UpstreamRead(Duration),
    /// The client left a frame untaken for `timeouts.clientWrite`.
    #[error("the client did not read the response within {0:?} (timeouts.clientWrite)")]
    ClientWrite(Duration),
}

/// Who the response is for and from, for the log lines.
#[derive(Debug, Clone, Copy)]
pub struct Parties {
    /// The client's address.
    pub client: IpAddr,
    /// The upstream endpoint that answered.
    pub endpoint: SocketAddr,
}

/// An upstream response body with the `upstreamRead` and `clientWrite` deadlines.
pub struct Guarded {
    source: Source,
    upstream_read: Duration,
    client_write: Duration,
    /// The `upstreamRead` timer, created the first time the body has to wait.
    idle: Option<Pin<Box<Sleep>>>,
    /// Whether `idle` is armed for the current wait.
    armed: bool,
    frames: u32,
    parties: Parties,
}

enum Source {
    /// Polled in place; no watchdog yet.
    Direct(UpstreamBody),
    /// Shared with the `clientWrite` watchdog, which may take it away.
    Watched(Arc<Watch>),
    /// Finished, failed or cut.
    Done,
}

/// What a body shares with its watchdog.
struct Watch {
    body: Mutex<Option<UpstreamBody>>,
    base: Instant,
    /// One plus the nanoseconds after `base` at which the last frame was handed to hyper, or 0 while hyper
    /// is polling (a wait for the upstream is `upstreamRead`'s business).
    handed_at: AtomicU64,
    /// Ends the watchdog when the body finishes or is dropped.
    stop: Notify,
}

impl Watch {
    fn mark_handed(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.handed_at.store(nanos + 1, Ordering::Release);
    }
}

impl Guarded {
    /// Wraps `body` with the deadlines of `upstream_read` and `client_write`.
    pub fn new(
        body: UpstreamBody,
        upstream_read: Duration,
        client_write: Duration,
        parties: Parties,
    ) -> Guarded {
        Guarded {
            source: Source::Direct(body),
            upstream_read,
            client_write,
            idle: None,
            armed: false,
            frames: 0,
            parties,
        }
    }

    fn finish(&mut self) {
        if let Source::Watched(w) = &self.source {
            w.stop.notify_one();
        }
        self.source = Source::Done;
    }

    fn fail(&mut self, error: BoxError) -> BoxError {
        self.finish();
        let Parties { client, endpoint } = self.parties;
        tracing::warn!(%endpoint, %client, error = %error, "response body cut");
        tracing::info!(target: "access", %client, upstream = %endpoint, truncated = %error);
        error
    }

    /// After a frame went to hyper: from the second frame on, make sure a watchdog is running.
    fn handed(&mut self) {
        self.frames = self.frames.saturating_add(1);
        match &self.source {
            Source::Watched(w) => w.mark_handed(),
            Source::Direct(b) if self.frames >= 2 && !b.is_end_stream() => {
                let Source::Direct(body) = std::mem::replace(&mut self.source, Source::Done) else {
                    return;
                };
                let watch = Arc::new(Watch {
                    body: Mutex::new(Some(body)),
                    base: Instant::now(),
                    handed_at: AtomicU64::new(0),
                    stop: Notify::new(),
                });
                watch.mark_handed();
                tokio::spawn(watchdog(watch.clone(), self.client_write, self.parties));
                self.source = Source::Watched(watch);
            }
            Source::Direct(_) | Source::Done => {}
        }
    }
}

/// Drops the upstream body when hyper has not taken a new frame within `limit` of the last hand-over.
async fn watchdog(watch: Arc<Watch>, limit: Duration, parties: Parties) {
    loop {
        let at = watch.handed_at.load(Ordering::Acquire);
        let deadline = match at {
            0 => Instant::now() + limit,
            n => watch.base + Duration::from_nanos(n - 1) + limit,
        };
        tokio::select! {
            () = watch.stop.notified() => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
        if at != 0 && watch.handed_at.load(Ordering::Acquire) == at {
            let body = watch
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(body);
            let Parties { client, endpoint } = parties;
            tracing::warn!(%endpoint, %client, "client did not read the response within timeouts.clientWrite; upstream dropped");
            return;
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Source::Watched(w) = &self.source {
            w.stop.notify_one();
        }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Done => return Poll::Ready(None),
            Source::Direct(b) => Pin::new(b).poll_frame(cx),
            Source::Watched(w) => {
                w.handed_at.store(0, Ordering::Release);
                let mut slot = w.body.lock().unwrap_or_else(PoisonError::into_inner);
                match slot.as_mut() {
                    Some(b) => Pin::new(b).poll_frame(cx),
                    None => {
                        drop(slot);
                        let limit = this.client_write;
                        return Poll::Ready(Some(Err(
                            this.fail(CutBody::ClientWrite(limit).into())
                        )));
                    }
                }
            }
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                this.handed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(this.fail(e.into())))),
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.armed {
                    let deadline = Instant::now() + this.upstream_read;
                    match &mut this.idle {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => this.idle = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.armed = true;
                }
                let expired = this
                    .idle
                    .as_mut()
                    .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                if expired {
                    let limit = this.upstream_read;
                    Poll::Ready(Some(Err(this.fail(CutBody::UpstreamRead(limit).into()))))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Done => true,
            Source::Direct(b) => b.is_end_stream(),
            Source::Watched(w) => w
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                // A body the watchdog took is not at its end: the next poll must fail, not finish it.
                .is_some_and(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Done => SizeHint::with_exact(0),
            Source::Direct(b) => b.size_hint(),
            Source::Watched(w) => w
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map_or_else(SizeHint::default, Body::size_hint),
        }
    }
}
