//! A request body that can be taken back when the request never reached an upstream, so a connect
//! failure can be retried on another endpoint without buffering the body.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::proxy::BoxError;

type Inner = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// The body sent upstream. The first poll takes the inner body out of the shared slot; until then
/// [`ReclaimableBody::reclaim`] on a sibling handle can take it back.
pub struct ReclaimableBody {
    slot: Arc<Mutex<Option<Inner>>>,
    taken: Option<Inner>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl ReclaimableBody {
    /// Wraps `body`; returns the body to send and a handle to reclaim it.
    pub fn new<B>(body: B) -> (ReclaimableBody, Reclaim)
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let end_stream = body.is_end_stream();
        let size_hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(Box::pin(body) as Inner)));
        (
            ReclaimableBody {
                slot: slot.clone(),
                taken: None,
                end_stream,
                size_hint,
            },
            Reclaim {
                slot,
                end_stream,
                size_hint: size_hint_clone(&size_hint),
            },
        )
    }
}

fn size_hint_clone(h: &SizeHint) -> SizeHint {
    let mut c = SizeHint::new();
    c.set_lower(h.lower());
    if let Some(u) = h.upper() {
        c.set_upper(u);
    }
    c
}

/// The handle that takes an unsent body back.
pub struct Reclaim {
    slot: Arc<Mutex<Option<Inner>>>,
    end_stream: bool,
    size_hint: SizeHint,
}

impl Reclaim {
    /// A fresh body for a retry, if the previous attempt never started reading the body.
    pub fn reclaim(&self) -> Option<(ReclaimableBody, Reclaim)> {
        let inner = self
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let slot = Arc::new(Mutex::new(Some(inner)));
        Some((
            ReclaimableBody {
                slot: slot.clone(),
                taken: None,
                end_stream: self.end_stream,
                size_hint: size_hint_clone(&self.size_hint),
            },
            Reclaim {
                slot,
                end_stream: self.end_stream,
                size_hint: size_hint_clone(&self.size_hint),
            },
        ))
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
            let inner = self
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match inner {
                Some(b) => self.taken = Some(b),
                None => return Poll::Ready(None),
            }
        }
        match self.taken.as_mut() {
            Some(b) => b.as_mut().poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(b) => b.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(b) => b.size_hint(),
            None => size_hint_clone(&self.size_hint),
        }
    }
}
