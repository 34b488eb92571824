//! The VncPassword controller: watches VncPasswords and the metadata of Secrets, reconciles one
//! object at a time (bounded concurrency), serves metrics and health, and stops cleanly on SIGTERM.
//!
//! Layout: `decide` (pure decisions), `conditions` (condition merging), `fingerprint` (keyed HMAC and
//! its key Secret), `tenancy` (who may use which credentials), `instances` (batched
//! DescribeInstances), `reconcile` (the I/O of one reconcile), `context` (what reconciles share).

pub mod conditions;
pub mod context;
pub mod decide;
pub mod fingerprint;
pub mod instances;
pub mod reconcile;
pub mod tenancy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{VncPassword, condition};
use crate::cli::EcsArgs;
use crate::ecs::{CallObserver, Credentials, EcsClient};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::telemetry::LogFormat;
use context::{Context, Settings};
use reconcile::ReconcileError;
use tenancy::AllowedNamespaces;

pub const DEFAULT_CONTROLLER_NAMESPACE: &str = "ecs-vnc-system";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub ecs: EcsArgs,
    /// Namespaces whose VncPasswords may use the controller's own credentials (environment
    /// ALIBABA_CLOUD_*) when they name no credentials Secret: a comma list, or '*' for all.
    /// Default: none.
    #[arg(long, default_value = "", value_name = "LIST")]
    pub default_credentials_namespaces: AllowedNamespaces,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds between looks at an instance that must restart for its password to take effect.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub reboot_poll_interval: f64,
    /// Reconciles running at once (each object is only ever reconciled by one at a time).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub concurrency: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid arguments: {0}")]
    Arguments(String),
    #[error("cannot build a Kubernetes client (KUBECONFIG or in-cluster config): {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Key(#[from] fingerprint::KeyError),
    #[error(transparent)]
    Ecs(#[from] crate::ecs::EcsError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The namespace the controller keeps its own things in: `POD_NAMESPACE`, else the in-cluster
/// service account's, else `ecs-vnc-system`.
pub fn controller_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_CONTROLLER_NAMESPACE.to_string())
}

/// What the controller takes from its environment; tests pass their own.
#[derive(Clone)]
pub struct Environment {
    pub client: Client,
    /// The controller's own credentials (ALIBABA_CLOUD_*), for allowed namespaces.
    pub default_credentials: Option<Credentials>,
    /// Where the fingerprint key Secret lives.
    pub controller_namespace: String,
}

/// Runs the controller until SIGTERM/Ctrl-C, with the kubeconfig (KUBECONFIG or in-cluster) and
/// credentials of the process environment.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    crate::ecs::client::install_crypto_provider();
    let env = Environment {
        client: Client::try_default().await?,
        default_credentials: Credentials::from_env().ok(),
        controller_namespace: controller_namespace(),
    };
    run_with(args, env, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the controller until `shutdown` resolves. Tests use this with an impersonating client and
/// their own shutdown trigger.
pub async fn run_with(
    args: RunArgs,
    env: Environment,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    let Environment {
        client,
        default_credentials,
        controller_namespace: own_namespace,
    } = env;
    if !(args.reboot_poll_interval.is_finite() && args.reboot_poll_interval > 0.0) {
        return Err(RunError::Arguments(
            "--reboot-poll-interval must be a positive number of seconds".into(),
        ));
    }
    let poll = Duration::from_secs_f64(args.reboot_poll_interval);
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();

    let mut ecs_config = args.ecs.client_config().map_err(RunError::Arguments)?;
    // The controller backs off per object; within one call, retry briefly only.
    ecs_config.retry.max_retries = ecs_config.retry.max_retries.min(2);
    let observer: Arc<dyn CallObserver> = metrics.clone();
    let ecs = EcsClient::with_observer(ecs_config, Some(observer))?;

    if args.default_credentials_namespaces != AllowedNamespaces::None
        && default_credentials.is_none()
    {
        tracing::warn!(
            "--default-credentials-namespaces is set but ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET are not: VncPasswords without credentialsSecretRef will be Stalled"
        );
    }
    let key = fingerprint::load_or_create(client.clone(), &own_namespace).await?;

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RunError::Metrics {
            addr: args.metrics_addr,
            source,
        })?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(args.metrics_addr), "serving /metrics, /healthz, /readyz");

    let reporter = Reporter {
        controller: "ecs-vnc-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        instances: instances::InstanceCache::new(ecs.clone(), poll * 4, poll / 2),
        ecs,
        key,
        settings: Settings {
            allowed_default_credentials: args.default_credentials_namespaces.clone(),
            default_credentials,
            reboot_poll_interval: poll,
        },
        recorder: Recorder::new(client.clone(), reporter),
        metrics: metrics.clone(),
        failures: Default::default(),
        stalls: Default::default(),
    });

    let (vncpasswords, secrets): (Api<VncPassword>, Api<PartialObjectMeta<Secret>>) =
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let controller = Controller::new(vncpasswords, watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(args.concurrency.max(1)));
    let store = controller.store();
    // Only Secret metadata is watched (`PartialObjectMeta`: metadata-only list and watch, nothing
    // cached); a referenced Secret is read when its VncPasswords are reconciled.
    let mapper_store = store.clone();
    let controller = controller.watches(
        secrets,
        watcher::Config::default().any_semantic(),
        move |secret| {
            referencing(
                &mapper_store,
                secret.namespace().as_deref(),
                &secret.name_any(),
            )
        },
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::spawn(crate::http::serve(
            listener,
            metrics.clone(),
            health.clone(),
            shutdown,
        ))
    };
    let readiness = {
        let store = store.clone();
        let health = health.clone();
        tokio::spawn(async move {
            // The store's readiness signal wakes only its latest waiter, and the controller waits
            // on it too: ask again until it answers.
            loop {
                match tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => {
                        health.set_ready(true);
                        tracing::info!("VncPassword watch synced; ready");
                        return;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
        })
    };
    let gauges = tokio::spawn(update_gauges(
        store.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));

    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    tracing::info!("shutting down");
    health.set_ready(false);
    let _ = stop_tx.send(true);
    readiness.abort();
    let _ = gauges.await;
    let _ = server.await;
    Ok(())
}

/// VncPasswords in `namespace` that reference the Secret `name` (password or credentials).
fn referencing(
    store: &Store<VncPassword>,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<VncPassword>> {
    let Some(namespace) = namespace else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|o| o.namespace().as_deref() == Some(namespace))
        .filter(|o| {
            o.spec.password_secret_ref.name == name
                || o.spec
                    .credentials_secret_ref
                    .as_ref()
                    .is_some_and(|c| c.name == name)
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn error_policy(obj: Arc<VncPassword>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = ?obj.namespace(), name = %obj.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5) + Duration::from_millis(rand::random::<u64>() % 5000))
}

/// Keeps `ecs_vnc_vncpasswords{ready_reason}` and `ecs_vnc_pending_reboots` current.
async fn update_gauges(
    store: Store<VncPassword>,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let mut by_reason: BTreeMap<String, i64> = BTreeMap::new();
        let mut pending = 0;
        for obj in store.state() {
            let status = obj.status.as_ref();
            let reason = status
                .and_then(|s| s.condition(condition::READY))
                .map(|c| c.reason.clone())
                .unwrap_or_else(|| "Unknown".to_string());
            *by_reason.entry(reason).or_default() += 1;
            if status.is_some_and(|s| s.is_true(condition::REBOOT_REQUIRED)) {
                pending += 1;
            }
        }
        metrics.set_ready_reasons(&by_reason);
        metrics.set_pending_reboots(pending);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
