//! The admin endpoints: `/healthz` (alive), `/readyz` (a table is loaded and we are not draining) and
//! `/metrics` (Prometheus metrics).
//!
//! `/metrics` is always served in the OpenMetrics text format with its own content type,
//! `application/openmetrics-text; version=1.0.0; charset=utf-8`, whatever the `Accept` header says: that is
//! what the encoder writes (counter families typed without their `_total` suffix, a closing `# EOF`), and
//! labelling it as the older `text/plain; version=0.0.4` format would misdescribe it. Prometheus and the usual
//! agents parse OpenMetrics and pick their parser by this content type.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http_types::{error_response, respond, ConnInfo, ProxyBody};
use crate::telemetry::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Readiness as the admin endpoint reports it.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// A routing table has been installed.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Shutdown has begun: `/readyz` fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether `/readyz` succeeds.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// Serves one admin request.
pub async fn handle(
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    _conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    Ok(match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "ok\n", "text/plain; charset=utf-8"),
        "/readyz" if health.is_ready() => {
            respond(StatusCode::OK, "ready\n", "text/plain; charset=utf-8")
        }
        "/readyz" => error_response(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        "/metrics" => respond(StatusCode::OK, metrics.encode(), OPENMETRICS_CONTENT_TYPE),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "admin endpoints are /healthz, /readyz and /metrics",
        ),
    })
}
