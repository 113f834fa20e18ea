//! `limits.maxRequestBody`: the largest request body the proxy forwards.
//!
//! - A body whose declared length (`Content-Length`, HTTP/1 or HTTP/2) is over the limit is answered **413**
//!   before anything is sent upstream, and its bytes are never read.
//! - A body without a declared length (HTTP/1 chunked, HTTP/2 DATA frames without `content-length`) streams
//!   upstream as it arrives, counted. When the count passes the limit the body fails: the upstream request is
//!   aborted (HTTP/1: its connection is closed before the body's last chunk; HTTP/2: the stream is reset),
//!   so the upstream never receives a complete request, and the client gets **413** unless the upstream has
//!   already started its response (then that response is cut). Buffering such bodies instead would let every
//!   open stream hold the limit in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Either, LengthLimitError, Limited};

use crate::http_types::{BoxError, ProxyBody};

/// Whether the body of `req` declares a length over `limit` bytes (`None`: no limit).
pub fn declared_over<B: Body>(req: &Request<B>, limit: Option<u64>) -> bool {
    let Some(limit) = limit else { return false };
    // hyper has validated Content-Length (one value, digits only) and reports it as the body's lower bound.
    let from_header = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    from_header.is_some_and(|n| n > limit) || req.body().size_hint().lower() > limit
}

/// Set when a capped body passed its limit (never set for a body that is not counted).
#[derive(Debug, Clone, Default)]
pub struct Exceeded(Option<Arc<AtomicBool>>);

impl Exceeded {
    /// Whether the body passed its limit.
    pub fn get(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
    }
}

/// `body`, failing as soon as more than `limit` bytes have arrived (`None`: never); the flag tells the
/// caller that a failed upstream exchange was this limit's doing. Only a body without a declared length is
/// counted: one with a length (an empty one included) was checked by [`declared_over`], and hyper holds it
/// to that length, so it costs nothing here.
pub fn cap<B>(
    body: B,
    limit: Option<u64>,
) -> (
    impl Body<Data = Bytes, Error = BoxError> + Send + 'static,
    Exceeded,
)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let max = match limit {
        Some(n) if body.size_hint().exact().is_none() => usize::try_from(n).unwrap_or(usize::MAX),
        _ => {
            let body = body.map_err(Into::into);
            return (Either::Left(body), Exceeded::default());
        }
    };
    let flag = Arc::new(AtomicBool::new(false));
    let exceeded = Exceeded(Some(Arc::clone(&flag)));
    let body = Limited::new(body, max).map_err(move |e: BoxError| {
        if e.is::<LengthLimitError>() {
            flag.store(true, Ordering::Release);
        }
        e
    });
    (Either::Right(body), exceeded)
}

/// The 413 for a request body over `limit` bytes, from `fail` (a text body, or a gRPC status). An HTTP/1
/// connection is closed after it: the rest of the body is never read.
pub fn too_large(
    version: Version,
    limit: Option<u64>,
    fail: impl Fn(StatusCode, &str) -> Response<ProxyBody>,
) -> Response<ProxyBody> {
    let limit = limit.unwrap_or(u64::MAX);
    tracing::info!(
        limit,
        "request body larger than limits.maxRequestBody; answered 413"
    );
    let mut resp = fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than {limit} bytes"),
    );
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
