//! The admin port: Prometheus text on `/metrics`, liveness on `/healthz`, readiness on `/readyz`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Named readiness conditions; the service is ready when every one is true.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<&'static str, bool>>>);

impl Readiness {
    pub fn set(&self, check: &'static str, ready: bool) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(check, ready);
    }

    /// The names of conditions that are not met (empty when ready).
    pub fn failing(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// One service's registry and readiness, served on its admin port.
#[derive(Clone)]
pub struct Admin {
    pub registry: Registry,
    pub readiness: Readiness,
}

impl Admin {
    pub fn new() -> Self {
        Admin {
            registry: Registry::new(),
            readiness: Readiness::default(),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self)
    }

    /// Binds the admin port; a port in use is a start-up error, not a silent background failure.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }

    /// Serves the admin endpoints until `shutdown` fires.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %listener.local_addr()?, "admin endpoints listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&admin.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    let failing = admin.readiness.failing();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"ready": failing.is_empty(), "failing": failing});
    (status, axum::Json(body))
}
