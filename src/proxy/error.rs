//! Short plain-text error responses.

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::ProxyBody;
use crate::http_types::error_response as text;

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
        StatusCode::PAYLOAD_TOO_LARGE => "8",
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
