//! A network partition between one in-process controller and the API server, as a tower layer of
//! that controller's Kubernetes client: requests can be cut (they fail at once, as when the node
//! loses the network) and one chosen request can be held *in flight* and released later — it is
//! already on its way, so dropping the caller (a deposed leader dropping its reconciles) does not
//! stop it; it lands whenever the network lets it, which is what a fenced write must survive.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use kube::client::Body;
use tower::{BoxError, Service, ServiceExt};

type Request = axum::http::Request<Body>;

#[derive(Default)]
struct State {
    cut: AtomicBool,
    /// (method, path suffix) of the next request to hold.
    hold: Mutex<Option<(String, String)>>,
    /// Opened by `release`.
    gate: tokio::sync::watch::Sender<bool>,
    /// What the held request came to: the HTTP status, or 0 for a transport error.
    outcome: tokio::sync::watch::Sender<Option<u16>>,
    held: tokio::sync::watch::Sender<bool>,
}

/// The switchboard the test holds.
#[derive(Clone, Default)]
pub struct Partition(Arc<State>);

impl Partition {
    /// From now on every new request fails (the node is cut off).
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.0.cut.store(false, Ordering::SeqCst);
    }

    /// Holds the next request with this method whose path ends with `path_suffix`.
    pub fn hold_next(&self, method: &str, path_suffix: &str) {
        *self.0.hold.lock().unwrap() = Some((method.to_string(), path_suffix.to_string()));
    }

    /// Waits until a request is being held.
    pub async fn wait_held(&self) {
        let mut held = self.0.held.subscribe();
        let _ = held.wait_for(|h| *h).await;
    }

    /// Lets the held request go on, and returns the HTTP status the API server answered it with.
    pub async fn release(&self) -> u16 {
        let mut outcome = self.0.outcome.subscribe();
        self.0.gate.send_replace(true);
        let done = outcome.wait_for(|o| o.is_some()).await.expect("outcome");
        done.unwrap_or(0)
    }

    pub fn layer(&self) -> PartitionLayer {
        PartitionLayer(self.clone())
    }
}

#[derive(Clone)]
pub struct PartitionLayer(Partition);

impl<S, B> tower::Layer<S> for PartitionLayer
where
    B: Send + 'static,
    S: Service<Request, Response = axum::http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
{
    type Service = PartitionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PartitionService {
            inner: tower::buffer::Buffer::new(inner, 64),
            partition: self.0.clone(),
        }
    }
}

pub struct PartitionService<S>
where
    S: Service<Request>,
{
    inner: tower::buffer::Buffer<Request, S::Future>,
    partition: Partition,
}

impl<S, B> Service<Request> for PartitionService<S>
where
    B: Send + 'static,
    S: Service<Request, Response = axum::http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
{
    type Response = axum::http::Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<axum::http::Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let state = self.partition.0.clone();
        let matches = {
            let mut hold = state.hold.lock().unwrap();
            let hit = hold.as_ref().is_some_and(|(method, suffix)| {
                request.method().as_str() == method
                    && request.uri().path().ends_with(suffix.as_str())
            });
            if hit {
                *hold = None;
            }
            hit
        };
        if matches {
            // Already sent, as far as the caller knows: it goes on in a task of its own.
            let inner = self.inner.clone();
            let mut gate = state.gate.subscribe();
            state.held.send_replace(true);
            let task = tokio::spawn(async move {
                let _ = gate.wait_for(|open| *open).await;
                let result = inner.oneshot(request).await;
                let status = result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                state.outcome.send_replace(Some(status));
                result
            });
            return Box::pin(async move { task.await.map_err(BoxError::from)? });
        }
        if state.cut.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(BoxError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "partitioned by the test",
                )))
            });
        }
        let call = self.inner.call(request);
        Box::pin(call)
    }
}

/// An admin client whose requests go through `partition`.
pub async fn partitioned_client(partition: &Partition) -> kube::Client {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(super::kubeconfig()).expect("readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("usable kubeconfig");
    kube::client::ClientBuilder::try_from(config)
        .expect("kube client")
        .with_layer(&partition.layer())
        .build()
}
