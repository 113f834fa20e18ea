//! What a connection's deadlines need to know about its requests: whether the first request head has
//! arrived, and how many HTTP/2 streams are open.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{watch, Notify};

use crate::http_types::{BoxError, ProxyBody};

/// Request activity on one connection.
#[derive(Debug)]
pub struct Activity {
    first: AtomicBool,
    first_arrived: Notify,
    http2: AtomicBool,
    open_streams: watch::Sender<usize>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            first: AtomicBool::new(false),
            first_arrived: Notify::new(),
            http2: AtomicBool::new(false),
            open_streams: watch::Sender::new(0),
        }
    }
}

impl Activity {
    /// A request head has arrived. For HTTP/2 requests, returns the open stream, which stays open until
    /// its response body is finished or dropped.
    pub fn request_started(&self, http2: bool) -> Option<OpenStream> {
        if !self.first.load(Ordering::Relaxed) {
            if http2 {
                self.http2.store(true, Ordering::Release);
            }
            if !self.first.swap(true, Ordering::AcqRel) {
                // A stored permit: `first_request` returns even if it starts waiting later.
                self.first_arrived.notify_one();
            }
        }
        http2.then(|| {
            self.open_streams.send_modify(|n| *n += 1);
            OpenStream(self.open_streams.clone())
        })
    }

    /// Returns once the first request head has arrived.
    pub async fn first_request(&self) {
        if !self.first.load(Ordering::Acquire) {
            self.first_arrived.notified().await;
        }
    }

    /// Returns once the connection has had no open HTTP/2 stream for `idle`; never on a connection that has
    /// carried no HTTP/2 request (HTTP/1 connections are bounded by hyper's header-read timeout instead).
    pub async fn idle_http2(&self, idle: Duration) {
        let mut streams = self.open_streams.subscribe();
        if !self.http2.load(Ordering::Acquire) {
            return std::future::pending().await;
        }
        loop {
            if streams.wait_for(|n| *n == 0).await.is_err() {
                return std::future::pending().await;
            }
            match tokio::time::timeout(idle, streams.changed()).await {
                Err(_) => return,
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return std::future::pending().await,
            }
        }
    }
}

/// An open HTTP/2 stream; closes when dropped.
#[derive(Debug)]
pub struct OpenStream(watch::Sender<usize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl OpenStream {
    /// `resp` with a body that keeps this stream open until it is finished or dropped.
    pub fn track(self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        resp.map(|body| {
            TrackedBody {
                inner: body,
                _stream: self,
            }
            .boxed()
        })
    }
}

/// A response body that holds its stream open.
struct TrackedBody {
    inner: ProxyBody,
    _stream: OpenStream,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
