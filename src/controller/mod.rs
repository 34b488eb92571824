//! The VncPassword controller: watches VncPasswords and the metadata of Secrets, reconciles one
//! object at a time (bounded concurrency), serves metrics and health, and stops cleanly on SIGTERM.
//!
//! Layout, observe → plan → act → record: `plan` (the pure planner: the next step from what was
//! observed), `record` (pure status changes after each step), `decide` (pure failure, phase and
//! condition decisions), `reconcile` (the executor: the I/O of one reconcile), `conditions`
//! (condition merging), `fingerprint` (keyed HMAC and its key Secret), `tenancy` (who may use which
//! credentials), `instances` (batched, shared DescribeInstances), `context` (what reconciles share).

pub mod conditions;
pub mod context;
pub mod decide;
pub mod fingerprint;
pub mod instances;
pub mod plan;
pub mod reconcile;
pub mod record;
pub mod schedule;
pub mod tenancy;

use std::collections::{BTreeMap, HashSet};
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
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{VncPassword, condition};
use crate::cli::EcsArgs;
use crate::ecs::{CallObserver, CredentialsProvider, EcsClient, ProviderConfig};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::telemetry::LogFormat;
use context::{Clock, Context, Settings};
use reconcile::ReconcileError;
use tenancy::AllowedNamespaces;

pub const DEFAULT_CONTROLLER_NAMESPACE: &str = "ecs-vnc-system";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub ecs: EcsArgs,
    /// Where STS is, for AssumeRoleWithOIDC (RRSA). Default: as Alibaba's credentials SDKs choose
    /// it (sts[-vpc].<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com, else sts.aliyuncs.com).
    #[arg(long, env = "STS_ENDPOINT", value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// Where the ECS instance metadata service is, for the instance's RAM role.
    #[arg(long, env = "ECS_METADATA_ENDPOINT", value_name = "URL", default_value = crate::ecs::metadata::DEFAULT_ENDPOINT)]
    pub metadata_endpoint: String,
    /// Namespaces whose VncPasswords may use the controller's own credentials (Alibaba's default
    /// credentials chain, see README) when they name no credentials Secret: a comma list, or '*'
    /// for all.
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
    /// Seconds after RebootInstance without a restart seen before the object says
    /// RebootNotObserved (it is never rebooted again without a new reconcile-requested-at token).
    #[arg(long, default_value_t = 900.0, value_name = "SECONDS")]
    pub reboot_timeout: f64,
    /// Seconds between checks of stalls that something outside Kubernetes can fix
    /// (InstanceNotFound, RegionNotFound, AuthFailed, DescribeNotAllowed).
    #[arg(long, default_value_t = 1800.0, value_name = "SECONDS")]
    pub stall_recheck_interval: f64,
    /// Seconds one reconcile may take before it is abandoned (safe at any point). Keep it below the
    /// Pod's terminationGracePeriodSeconds so that a shutdown never cuts a status write short.
    #[arg(long, default_value_t = 50.0, value_name = "SECONDS")]
    pub reconcile_timeout: f64,
}

impl RunArgs {
    /// The arguments as `ecs-vnc-controller run` would parse these flags (defaults for the rest);
    /// for tests, examples and embedders.
    pub fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Run {
            #[command(flatten)]
            args: RunArgs,
        }
        use clap::Parser as _;
        let argv = std::iter::once(std::ffi::OsString::from("run"))
            .chain(flags.into_iter().map(Into::into));
        Run::try_parse_from(argv).map(|r| r.args)
    }
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
    /// The controller's own credentials (Alibaba's default chain), for allowed namespaces.
    pub default_credentials: Option<CredentialsProvider>,
    /// Where the fingerprint key Secret lives.
    pub controller_namespace: String,
    /// The clock the controller plans with.
    pub clock: Clock,
}

impl RunArgs {
    /// Where the credentials chain finds STS and the metadata service.
    pub fn provider_config(&self) -> ProviderConfig {
        let url = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        ProviderConfig {
            sts_endpoint: url(&self.sts_endpoint),
            metadata_endpoint: url(&Some(self.metadata_endpoint.clone())),
            ..ProviderConfig::default()
        }
    }
}

/// Runs the controller until SIGTERM/Ctrl-C, with the kubeconfig (KUBECONFIG or in-cluster) and
/// credentials of the process environment (Alibaba's default chain).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    crate::ecs::client::install_crypto_provider();
    let chain = CredentialsProvider::from_env(&args.provider_config()).await;
    match &chain.provider {
        Some(p) => {
            tracing::info!(identity = p.identity(), skipped = ?chain.skipped, "the controller's own credentials")
        }
        None => {
            tracing::info!(skipped = ?chain.skipped, "the controller has no credentials of its own")
        }
    }
    let env = Environment {
        client: Client::try_default().await?,
        default_credentials: chain.provider,
        controller_namespace: controller_namespace(),
        clock: context::system_clock(),
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
        clock,
    } = env;
    let seconds = |flag: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(RunError::Arguments(format!(
                "--{flag} must be a positive number of seconds"
            )))
        }
    };
    let poll = seconds("reboot-poll-interval", args.reboot_poll_interval)?;
    let plan_settings = plan::PlanSettings {
        poll,
        reboot_timeout: seconds("reboot-timeout", args.reboot_timeout)?,
        stall_recheck: seconds("stall-recheck-interval", args.stall_recheck_interval)?,
    };
    let reconcile_timeout = seconds("reconcile-timeout", args.reconcile_timeout)?;
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
            "--default-credentials-namespaces is set but the controller has no credentials of its own (see the credentials chain in the README): VncPasswords without credentialsSecretRef will be Stalled"
        );
    }
    // Temporary credentials are refreshed ahead of expiry, in the background.
    let refresher = default_credentials.as_ref().and_then(|p| {
        p.set_observer(metrics.clone());
        p.spawn_refresher()
    });
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
    // The VncPassword cache, shared by the controller and the reconciles (claims on an instance).
    let (store, writer) = reflector::store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        ecs.clone(),
        instances::InstanceCache::new(ecs, poll * 4, poll / 2),
        key,
        Settings {
            allowed_default_credentials: args.default_credentials_namespaces.clone(),
            default_credentials,
            plan: plan_settings,
            reconcile_timeout,
            clock,
        },
        Recorder::new(client.clone(), reporter),
        metrics.clone(),
        store.clone(),
    ));

    let (vncpasswords, secrets): (Api<VncPassword>, Api<PartialObjectMeta<Secret>>) =
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    // The controller's own status writes do not wake it: only what a user changes (spec,
    // the paused and reconcile-requested-at annotations, deletion) and the Secrets it reads do;
    // requeues it asked for still come.
    let objects = watcher(vncpasswords, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(wakes_reconcile, PredicateConfig::default());
    let controller = Controller::for_stream(objects, store.clone())
        .with_config(ControllerConfig::default().concurrency(args.concurrency.max(1)));
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
        ctx.clone(),
        stop_rx.clone(),
    ));

    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            use kube::runtime::controller::Error as ControllerError;
            match result {
                Ok(_) => {}
                // Logged with the object by error_policy.
                Err(ControllerError::ReconcilerFailed(..)) => {}
                // A reconcile requested for an object deleted meanwhile: nothing to do.
                Err(e @ ControllerError::ObjectNotFound(_)) => {
                    tracing::debug!(error = %e, "controller event");
                }
                // Watch failures (RBAC, the API server gone, an expired resourceVersion): the
                // watcher retries with backoff, but an operator must see them.
                Err(e) => tracing::warn!(error = %e, "watch or queue error; retrying with backoff"),
            }
        })
        .await;
    tracing::info!("shutting down");
    health.set_ready(false);
    let _ = stop_tx.send(true);
    readiness.abort();
    if let Some(r) = refresher {
        r.abort();
    }
    let _ = gauges.await;
    let _ = server.await;
    Ok(())
}

/// What of a VncPassword, when it changes, calls for a reconcile: never its status.
fn wakes_reconcile(obj: &VncPassword) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    obj.metadata.deletion_timestamp.is_some().hash(&mut h);
    let annotations = obj.annotations();
    for key in [
        crate::api::ANNOTATION_PAUSED,
        crate::api::ANNOTATION_RECONCILE_REQUESTED_AT,
    ] {
        annotations.get(key).hash(&mut h);
    }
    Some(h.finish())
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

/// Kubernetes-side failures (a Secret read or a status write refused, a reconcile past its deadline):
/// per-object exponential backoff, 5 s doubling to 5 min, jittered.
fn error_policy(obj: Arc<VncPassword>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let failures = obj.uid().map(|uid| ctx.failed(&uid)).unwrap_or(1);
    let delay = decide::backoff(failures, decide::Pace::Normal, rand::random());
    tracing::warn!(namespace = ?obj.namespace(), name = %obj.name_any(), error = %error, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Keeps `ecs_vnc_vncpasswords{ready_reason}` and `ecs_vnc_pending_reboots` current.
/// Also forgets the per-object memory of objects that no longer exist.
async fn update_gauges(
    store: Store<VncPassword>,
    metrics: Arc<Metrics>,
    ctx: Arc<Context>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let live: HashSet<String> = store.state().iter().filter_map(|o| o.uid()).collect();
        ctx.retain_objects(&live);
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
