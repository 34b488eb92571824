//! The health and metrics endpoint, one plain-HTTP listener (the Deployment's port `metrics`):
//!
//! - `GET /metrics`: [`Metrics::encode`], OpenMetrics text;
//! - `GET /healthz`: `200 ok` while the process serves requests (liveness);
//! - `GET /readyz`: `200 ok` once the controller's watches have synced ([`Health::set_ready`]),
//!   `503` before (readiness).
//!
//! Nothing here is secret, and nothing here writes: the listener needs no authentication.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{self, Metrics};

/// The readiness flag the controller flips once its caches are warm.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Not ready until [`Health::set_ready`]`(true)`.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

pub const NOT_READY: &str = "not ready: watches have not synced";

/// The routes of `--metrics-addr`, for embedding; [`serve`] is the usual entry point.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    probe_router(health).merge(
        Router::new()
            .route("/metrics", get(metrics_handler))
            .with_state(metrics),
    )
}

/// The probes alone, the routes of `--health-probe-addr`.
pub fn probe_router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
    }
}

/// Serves the routes on `listener` until `shutdown` completes, then finishes in-flight requests
/// and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(metrics, health), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight requests.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::ecs::CallObserver;

    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(metrics: Arc<Metrics>, health: Arc<Health>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            let addr = listener.local_addr().expect("local addr");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, metrics, health, async move {
                let _ = rx.await;
            }));
            Server {
                addr,
                stop: Some(tx),
                task,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            let result = tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("server stops after the shutdown signal")
                .expect("server task did not panic");
            assert!(result.is_ok(), "serve returned {result:?}");
        }
    }

    async fn get(url: &str) -> (u16, Option<String>, String) {
        // reqwest (feature `rustls-no-provider`) refuses to build any client, even for plain
        // http, until the process-wide provider is installed.
        crate::ecs::client::install_crypto_provider();
        let response = reqwest::get(url).await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.expect("body");
        (status, content_type, body)
    }

    #[tokio::test]
    async fn the_probe_address_answers_the_probes_and_not_metrics() {
        let health = Health::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_router(
            listener,
            probe_router(health.clone()),
            async move {
                let _ = rx.await;
            },
        ));
        assert_eq!(get(&format!("http://{addr}/healthz")).await.0, 200);
        assert_eq!(get(&format!("http://{addr}/readyz")).await.0, 503);
        health.set_ready(true);
        assert_eq!(get(&format!("http://{addr}/readyz")).await.0, 200);
        assert_eq!(get(&format!("http://{addr}/metrics")).await.0, 404);
        let _ = tx.send(());
        task.await.expect("no panic").expect("served");
    }

    #[tokio::test]
    async fn readyz_fails_until_the_watches_have_synced_while_healthz_always_passes() {
        let health = Health::new();
        let server = Server::start(Arc::new(Metrics::new()), health.clone()).await;

        assert_eq!(
            get(&server.url("/readyz")).await,
            (
                503,
                Some("text/plain; charset=utf-8".into()),
                NOT_READY.into()
            )
        );
        let (status, _, body) = get(&server.url("/healthz")).await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        health.set_ready(true);
        let (status, _, body) = get(&server.url("/readyz")).await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        health.set_ready(false);
        let (status, _, _) = get(&server.url("/readyz")).await;
        assert_eq!(status, 503);

        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_serves_openmetrics_text_with_live_values() {
        let metrics = Arc::new(Metrics::new());
        let server = Server::start(metrics.clone(), Health::new()).await;

        metrics.reconcile_finished("applied", Duration::from_millis(3));
        metrics.observe(
            "ModifyInstanceVncPasswd",
            "Success",
            Duration::from_millis(40),
        );
        metrics.set_pending_reboots(2);

        let (status, content_type, body) = get(&server.url("/metrics")).await;
        assert_eq!(status, 200);
        assert_eq!(content_type.as_deref(), Some(metrics::CONTENT_TYPE));
        for line in [
            "ecs_vnc_reconciles_total{result=\"applied\"} 1",
            "ecs_vnc_ecs_calls_total{action=\"ModifyInstanceVncPasswd\",code=\"Success\"} 1",
            "ecs_vnc_pending_reboots 2",
            "# EOF",
        ] {
            assert!(body.lines().any(|l| l == line), "missing {line} in\n{body}");
        }

        server.stop().await;
    }

    #[tokio::test]
    async fn unknown_paths_are_404() {
        let server = Server::start(Arc::new(Metrics::new()), Health::new()).await;
        let (status, _, _) = get(&server.url("/debug/pprof")).await;
        assert_eq!(status, 404);
        server.stop().await;
    }
}
