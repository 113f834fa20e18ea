//! Short plain-text error responses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;

/// A response with `status` and a one-line text body: `"<code> <reason>: <detail>\n"`.
pub fn text(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!("{} {reason}: {detail}\n", status.as_u16());
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A `301 Moved Permanently` to `location`.
pub fn redirect(location: &str) -> Response<ProxyBody> {
    let mut resp = text(StatusCode::MOVED_PERMANENTLY, location);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A gRPC "trailers-only" error: HTTP 200 with `grpc-status` and `grpc-message` in the headers, so gRPC
/// clients see a status code (14 UNAVAILABLE for 502/503) instead of an HTTP error page.
pub fn grpc(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let code = match status {
        StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::MISDIRECTED_REQUEST => "14",
        StatusCode::GATEWAY_TIMEOUT => "4",
        StatusCode::NOT_FOUND => "12",
        _ => "2",
    };
    let mut resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(detail) {
        h.insert("grpc-message", v);
    }
    resp
}
