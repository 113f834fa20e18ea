//! A request body that can be taken back when the request never reached an upstream, so a connect
//! failure can be retried on another endpoint without buffering the body.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::http_types::BoxError;

type Inner = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;
type Slot = Arc<Mutex<Option<Inner>>>;

/// The body sent upstream. Its first poll takes the inner body out of a slot shared with a [`Reclaim`];
/// until then, the [`Reclaim`] can take it back for another attempt.
pub struct ReclaimableBody {
    slot: Slot,
    taken: Option<Inner>,
    end_stream: bool,
    size_hint: SizeHint,
}

/// The handle that takes an unsent body back.
pub struct Reclaim {
    slot: Slot,
    end_stream: bool,
    size_hint: SizeHint,
}

impl ReclaimableBody {
    /// Wraps `body`; returns the body to send and the handle that can reclaim it.
    pub fn new<B>(body: B) -> (ReclaimableBody, Reclaim)
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let (end_stream, size_hint) = (body.is_end_stream(), body.size_hint());
        pair(Box::pin(body), end_stream, size_hint)
    }
}

fn pair(inner: Inner, end_stream: bool, size_hint: SizeHint) -> (ReclaimableBody, Reclaim) {
    let slot = Arc::new(Mutex::new(Some(inner)));
    let body = ReclaimableBody {
        slot: slot.clone(),
        taken: None,
        end_stream,
        size_hint,
    };
    (
        body,
        Reclaim {
            slot,
            end_stream,
            size_hint,
        },
    )
}

fn take(slot: &Slot) -> Option<Inner> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

impl Reclaim {
    /// A fresh body for a retry, if the previous attempt never started reading the body.
    pub fn reclaim(&self) -> Option<(ReclaimableBody, Reclaim)> {
        take(&self.slot).map(|inner| pair(inner, self.end_stream, self.size_hint))
    }
}

impl Body for ReclaimableBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            self.taken = take(&self.slot);
        }
        match self.taken.as_mut() {
            Some(b) => b.as_mut().poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.taken
            .as_ref()
            .map_or(self.end_stream, http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.taken
            .as_ref()
            .map_or(self.size_hint, http_body::Body::size_hint)
    }
}
