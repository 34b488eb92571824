//! The VncPassword controller: watches VncPasswords and the metadata of Secrets and
//! ServiceAccounts, reconciles one object at a time (bounded concurrency), serves metrics and
//! health, and stops cleanly on SIGTERM.
//! With `--leader-elect` ([`crate::leader`]) the watches and the kube `Controller` run only while
//! this replica holds the Lease: a standby makes no ECS call and writes no status, and losing the
//! Lease drops the running controller at once.
//!
//! Layout, observe → plan → act → record: `plan` (the pure planner: the next step from what was
//! observed), `record` (pure status changes after each step), `decide` (pure failure, phase and
//! condition decisions), `reconcile` (the executor: the I/O of one reconcile), `conditions`
//! (condition merging), `fingerprint` (keyed HMAC and its key Secret), `tenancy` (who may use which
//! credentials), `service_account` (ServiceAccount tokens exchanged for STS credentials, RRSA),
//! `instances` (batched, shared DescribeInstances), `index` (VncPasswords by Secret,
//! ServiceAccount and instance), `schedule` (durations, reboot windows),
//! `context` (what reconciles share), `slots` (the work slots, fair per namespace),
//! `cache` (what the VncPassword cache keeps of an object), `secret_cache` (the Secret metadata
//! watch, trimmed), `secret_read` (bounded Secret reads), `changes` (which watch events wake a
//! reconcile), `resync` (every object again once per `--resync-interval`), `uid` (uids as keys).

pub mod cache;
pub mod changes;
pub mod claims;
pub mod conditions;
pub mod context;
pub mod decide;
pub mod fingerprint;
pub mod index;
pub mod instances;
pub mod namespaces;
pub mod plan;
pub mod reconcile;
pub mod record;
pub mod resync;
pub mod schedule;
pub mod secret_cache;
pub mod secret_read;
pub mod service_account;
pub mod sets;
pub mod shards;
pub mod slots;
pub mod tenancy;
pub mod uid;
pub mod watch_backoff;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, ResourceExt};

use crate::api::VncPasswordSet;
use crate::cli::{EcsArgs, FlagDuration};
use crate::ecs::{CallObserver, CredentialsProvider, EcsClient, ProviderConfig};
use crate::http::Health;
use crate::leader::{self, LeaderConfig, Role};
use crate::metrics::Metrics;
use crate::telemetry::LogFormat;
use cache::CachedVncPassword;
use context::{Clock, Context, Settings};
use reconcile::ReconcileError;
use tenancy::AllowedNamespaces;

pub const DEFAULT_CONTROLLER_NAMESPACE: &str = "ecs-vnc-system";

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub ecs: EcsArgs,
    /// Where STS is, for AssumeRoleWithOIDC (RRSA). Default: as Alibaba's credentials SDKs choose
    /// it (sts[-vpc].<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com, else sts.aliyuncs.com). http:// only
    /// to loopback, see --allow-insecure-http.
    #[arg(long, env = "ECS_VNC_STS_ENDPOINT", value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// ARN of the RAM OIDC identity provider of this cluster's ServiceAccount token issuer (ACK's
    /// RRSA provider, acs:ram::<account>:oidc-provider/<name>), for VncPasswords with
    /// spec.credentials.serviceAccountRef. Default: the controller's own
    /// ALIBABA_CLOUD_OIDC_PROVIDER_ARN (the variable ACK's RRSA sets; the one exception to the
    /// ECS_VNC_ prefix, as Alibaba's credentials SDKs name it).
    #[arg(long, env = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", value_name = "ARN")]
    pub oidc_provider_arn: Option<String>,
    /// Where the ECS instance metadata service is, for the instance's RAM role.
    #[arg(long, env = "ECS_VNC_METADATA_ENDPOINT", value_name = "URL", default_value = crate::ecs::metadata::DEFAULT_ENDPOINT)]
    pub metadata_endpoint: String,
    /// Namespaces whose VncPasswords may use the controller's own credentials (Alibaba's default
    /// credentials chain, docs/configuration/credentials.md) when they name no credentials Secret: a comma list, or '*'
    /// for all.
    /// Default: none.
    #[arg(
        long,
        env = "ECS_VNC_DEFAULT_CREDENTIALS_NAMESPACES",
        default_value = "",
        value_name = "LIST"
    )]
    pub default_credentials_namespaces: AllowedNamespaces,
    /// Watch only these namespaces, a comma list (default: all namespaces): VncPasswords, Secret
    /// and ServiceAccount metadata are watched in each, so namespaced RBAC (a Role per namespace)
    /// is enough. `--namespace NS` is the same flag under its former name.
    #[arg(
        long,
        alias = "namespace",
        env = "ECS_VNC_WATCH_NAMESPACES",
        default_value = "",
        value_name = "NS,..."
    )]
    pub watch_namespaces: namespaces::WatchNamespaces,
    /// Address of the /metrics endpoint (which answers /healthz and /readyz too).
    #[arg(
        long,
        env = "ECS_VNC_METRICS_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints for the kubelet's probes, apart from
    /// /metrics (deploy/ and the chart use 0.0.0.0:8081). Default: only on --metrics-addr.
    #[arg(long, env = "ECS_VNC_HEALTH_PROBE_ADDR", value_name = "ADDR")]
    pub health_probe_addr: Option<SocketAddr>,
    #[arg(long, env = "ECS_VNC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How often to look at an instance that must restart for its password to take effect (a Go
    /// duration: 30s, 1m; a bare number is seconds).
    #[arg(
        long,
        env = "ECS_VNC_REBOOT_POLL_INTERVAL",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub reboot_poll_interval: FlagDuration,
    /// Reconciles running at once (each object is only ever reconciled by one at a time). Most of
    /// a reconcile's time is spent waiting (for ECS, for a DescribeInstances batch, for its rate
    /// limit), so this is set well above the number of cores. When all are busy, each one that
    /// comes free goes to the namespaces with reconciles waiting, in turn.
    #[arg(long, env = "ECS_VNC_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..), value_name = "N")]
    pub concurrency: u16,
    /// How long after RebootInstance without a restart seen the object says RebootNotObserved (it
    /// is never rebooted again without a new force-apply-requested-at token).
    #[arg(
        long,
        env = "ECS_VNC_REBOOT_TIMEOUT",
        default_value = "15m",
        value_name = "DURATION"
    )]
    pub reboot_timeout: FlagDuration,
    /// How often to check stalls that something outside Kubernetes can fix (InstanceNotFound,
    /// RegionNotFound, AuthFailed, DescribeNotAllowed, InstanceNotAllowed).
    #[arg(
        long,
        env = "ECS_VNC_STALL_RECHECK_INTERVAL",
        default_value = "30m",
        value_name = "DURATION"
    )]
    pub stall_recheck_interval: FlagDuration,
    /// How long one reconcile may take before it is abandoned (safe at any point). Keep it below
    /// the Pod's terminationGracePeriodSeconds so that a shutdown never cuts a status write short.
    #[arg(
        long,
        env = "ECS_VNC_RECONCILE_TIMEOUT",
        default_value = "50s",
        value_name = "DURATION"
    )]
    pub reconcile_timeout: FlagDuration,
    /// How often to look at every object again, whatever woke it meanwhile: a safety net for a lost
    /// event. Each object comes back at a point of the interval fixed by its uid, so objects created
    /// together do not come back together. A look at an unchanged object makes no API or ECS call.
    #[arg(
        long,
        env = "ECS_VNC_RESYNC_INTERVAL",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub resync_interval: FlagDuration,
    /// Run as one of several replicas: only the holder of a coordination.k8s.io/v1 Lease reconciles
    /// (calls ECS, writes status); the others wait to take over. On in deploy/, off by default.
    #[arg(long, env = "ECS_VNC_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Decide instance claims from the API server (a list by the CRD's selectable fields
    /// spec.instanceId and spec.regionId, Kubernetes 1.31 or later) instead of the watch's own
    /// index, which must then not hold every object (sharding sets it). Hidden: for tests.
    #[arg(long, env = "ECS_VNC_CLAIMS_FROM_API", hide = true)]
    pub claims_from_api: bool,
    /// How long a standby waits, after it last saw the Lease renewed, before it takes the Lease
    /// over (whole seconds). Formerly --lease-duration.
    #[arg(
        long,
        alias = "lease-duration",
        env = "ECS_VNC_LEADER_ELECT_LEASE_DURATION",
        default_value = "15s",
        value_name = "DURATION"
    )]
    pub leader_elect_lease_duration: FlagDuration,
    /// How long the leader keeps leading without a successful renew; past it, it stops at once.
    /// Formerly --renew-deadline.
    #[arg(
        long,
        alias = "renew-deadline",
        env = "ECS_VNC_LEADER_ELECT_RENEW_DEADLINE",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub leader_elect_renew_deadline: FlagDuration,
    /// How long between tries to acquire or renew the Lease. Formerly --retry-period.
    #[arg(
        long,
        alias = "retry-period",
        env = "ECS_VNC_LEADER_ELECT_RETRY_PERIOD",
        default_value = "2s",
        value_name = "DURATION"
    )]
    pub leader_elect_retry_period: FlagDuration,
    /// Name of the leader Lease. Formerly --lease-name.
    #[arg(
        long,
        alias = "lease-name",
        env = "ECS_VNC_LEADER_ELECT_RESOURCE_NAME",
        default_value = "ecs-vnc-controller",
        value_name = "NAME"
    )]
    pub leader_elect_resource_name: String,
    /// Namespace of the leader Lease (default: the controller's own, POD_NAMESPACE). Formerly
    /// --lease-namespace.
    #[arg(
        long,
        alias = "lease-namespace",
        env = "ECS_VNC_LEADER_ELECT_RESOURCE_NAMESPACE",
        value_name = "NS"
    )]
    pub leader_elect_resource_namespace: Option<String>,
    /// holderIdentity in the Lease (default: POD_NAME, else hostname and a random suffix).
    /// Formerly --leader-identity.
    #[arg(
        long,
        alias = "leader-identity",
        env = "ECS_VNC_LEADER_ELECT_IDENTITY",
        value_name = "ID"
    )]
    pub leader_elect_identity: Option<String>,
    /// Split the VncPasswords (and VncPasswordSets) into this many shards by a hash of their uid,
    /// each with its own Lease (`<leader-elect-resource-name>-shard-<k>`): every replica serves
    /// the shards it holds, and the replicas share them out (see docs/operations/sharding.md).
    /// Needs --leader-elect above 1; 1 is the single leader Lease.
    #[arg(
        long,
        env = "ECS_VNC_SHARDS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=64),
        value_name = "N"
    )]
    pub shards: u16,
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
    /// Refuses plain http to STS on a host that is not loopback without `--allow-insecure-http`
    /// (the ECS endpoint is checked by the client).
    pub fn check_endpoints(&self) -> Result<(), RunError> {
        if let Some(sts) = self
            .sts_endpoint
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            crate::ecs::transport::check_scheme(
                sts,
                "--sts-endpoint",
                self.ecs.allow_insecure_http,
            )
            .map_err(RunError::Arguments)?;
        }
        Ok(())
    }

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

impl RunArgs {
    /// How ServiceAccount tokens are exchanged (`spec.credentials.serviceAccountRef`).
    pub fn exchange_config(&self) -> service_account::ExchangeConfig {
        use crate::ecs::provider::{ENV_STS_REGION, ENV_VPC_ENDPOINT_ENABLED};
        let config = self.provider_config();
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        service_account::ExchangeConfig {
            oidc_provider_arn: self
                .oidc_provider_arn
                .as_deref()
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string),
            sts_endpoint: config.sts_endpoint.clone().unwrap_or_else(|| {
                crate::ecs::sts::default_endpoint(
                    var(ENV_STS_REGION).as_deref(),
                    var(ENV_VPC_ENDPOINT_ENABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")),
                )
            }),
            duration_seconds: config.duration_seconds,
            timeout: config.timeout,
        }
    }
}

/// Runs the controller until SIGTERM/Ctrl-C, with the kubeconfig (KUBECONFIG or in-cluster) and
/// credentials of the process environment (Alibaba's default chain).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    crate::ecs::client::install_crypto_provider();
    // Before anything is sent (the credentials chain may call STS or the metadata service).
    args.check_endpoints()?;
    crate::ecs::EcsClient::new(args.ecs.client_config().map_err(RunError::Arguments)?)?;
    let chain = CredentialsProvider::from_env(&args.provider_config()).await;
    for warning in &chain.warnings {
        tracing::warn!("{warning}");
    }
    match &chain.provider {
        Some(p) => {
            tracing::info!(identity = p.identity(), skipped = ?chain.skipped, "the controller's own credentials")
        }
        None => {
            tracing::info!(skipped = ?chain.skipped, "the controller has no credentials of its own")
        }
    }
    let env = Environment {
        client: crate::kube_http::client(
            kube::Config::infer()
                .await
                .map_err(kube::Error::InferConfig)?,
        )
        .await?,
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
    let poll = args.reboot_poll_interval.0;
    let plan_settings = plan::PlanSettings {
        poll,
        reboot_timeout: args.reboot_timeout.0,
        stall_recheck: args.stall_recheck_interval.0,
    };
    let reconcile_timeout = args.reconcile_timeout.0;
    let resync_interval = args.resync_interval.0;
    args.check_endpoints()?;
    if args.shards > 1 && !args.leader_elect {
        return Err(RunError::Arguments(
            "--shards above 1 needs --leader-elect: each shard is served by the holder of its Lease"
                .into(),
        ));
    }
    let metrics = Arc::new(Metrics::new());
    let health = Health::new();

    let mut ecs_config = args.ecs.client_config().map_err(RunError::Arguments)?;
    // Rate limits per account, learnt from the STS the controller already uses.
    ecs_config.sts_endpoint = Some(args.exchange_config().sts_endpoint);
    // The controller backs off per object; within one call, retry briefly only, and never wait
    // out throttling in a worker: a throttled object is looked at again when its bucket has room.
    ecs_config.retry.max_retries = match args.ecs.ecs_max_retries {
        None => 2,
        Some(n) if n > 2 => {
            tracing::warn!(
                ecs_max_retries = n,
                "run retries an ECS call at most 2 times (objects are retried with backoff instead); --ecs-max-retries is taken as 2"
            );
            2
        }
        Some(n) => n,
    };
    ecs_config.retry.retry_throttled = false;
    let leader = if args.leader_elect {
        let config = LeaderConfig {
            lease_name: args.leader_elect_resource_name.clone(),
            namespace: args
                .leader_elect_resource_namespace
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| own_namespace.clone()),
            identity: args
                .leader_elect_identity
                .clone()
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(leader::default_identity),
            lease_duration: args.leader_elect_lease_duration.0,
            renew_deadline: args.leader_elect_renew_deadline.0,
            retry_period: args.leader_elect_retry_period.0,
        };
        config.validate().map_err(RunError::Arguments)?;
        // Fencing by time: a leader that cannot renew stops at its renew deadline (dropping every
        // reconcile, so no further attempt or retry starts); a standby can lead no sooner than the
        // lease duration after that leader's last renew. So one ECS attempt started just before the
        // deadline must be over within lease-duration - renew-deadline (5 s by default).
        let margin = config.fencing_margin();
        for (flag, set, timeout) in [
            (
                "--ecs-timeout",
                args.ecs.ecs_timeout.is_some(),
                &mut ecs_config.request_timeout,
            ),
            (
                "--ecs-connect-timeout",
                args.ecs.ecs_connect_timeout.is_some(),
                &mut ecs_config.connect_timeout,
            ),
        ] {
            if *timeout > margin {
                // The defaults are documented as capped; a value the operator set is not capped
                // silently.
                if set {
                    tracing::warn!(
                        flag,
                        cut_off_s = margin.as_secs_f64(),
                        "--leader-elect: an ECS attempt is cut off after leader-elect-lease-duration - leader-elect-renew-deadline, shorter than this flag"
                    );
                }
                *timeout = margin;
            }
        }
        Some(config)
    } else {
        None
    };
    let observer: Arc<dyn CallObserver> = metrics.clone();
    let ecs = EcsClient::with_observer(ecs_config, Some(observer))?;

    if args.default_credentials_namespaces != AllowedNamespaces::None
        && default_credentials.is_none()
    {
        tracing::warn!(
            "--default-credentials-namespaces is set but the controller has no credentials of its own (see the credentials chain in docs/configuration/credentials.md): VncPasswords without spec.credentials will be Stalled"
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
    let probe_listener = match args.health_probe_addr {
        Some(addr) if addr != args.metrics_addr => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Metrics { addr, source })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /healthz, /readyz");
            Some(listener)
        }
        _ => None,
    };

    let reporter = Reporter {
        controller: "ecs-vnc-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let leader_reporter = Reporter {
        controller: "ecs-vnc-controller".into(),
        instance: leader.as_ref().map(|l| l.identity.clone()),
    };
    let service_accounts = service_account::ServiceAccountCredentials::new(args.exchange_config());
    service_accounts.set_observer(metrics.clone());
    let settings = Settings {
        allowed_default_credentials: args.default_credentials_namespaces.clone(),
        default_credentials,
        service_accounts,
        plan: plan_settings,
        reconcile_timeout,
        resync_interval,
        concurrency: usize::from(args.concurrency),
        clock,
        // With shards the watch holds only this replica's objects: who else names an instance is
        // asked of the API server.
        claims_from_api: args.claims_from_api || args.shards > 1,
        served_namespaces: args.watch_namespaces.clone(),
    };
    // A fresh Context (per-object memory, instance cache) for every term of leadership: nothing
    // learnt while another replica led is trusted.
    let index_key = key.clone();
    let make_ctx = {
        let client = client.clone();
        let metrics = metrics.clone();
        move |watched: context::Watched| {
            Arc::new(Context::new(
                client.clone(),
                ecs.clone(),
                instances::InstanceCache::new(ecs.clone(), poll * 4, poll / 2),
                key.clone(),
                settings.clone(),
                reporter.clone(),
                metrics.clone(),
                watched,
            ))
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let probes = probe_listener.map(|listener| {
            let mut stop = stop_rx.clone();
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::spawn(crate::http::serve_router(
                listener,
                crate::http::probe_router(health.clone()),
                shutdown,
            ))
        });
        let metrics_server = tokio::spawn(crate::http::serve(
            listener,
            metrics.clone(),
            health.clone(),
            shutdown,
        ));
        async move {
            if let Some(probes) = probes {
                let _ = probes.await;
            }
            metrics_server.await
        }
    };
    // SIGTERM (or the caller's trigger) as a flag every part can wait on.
    let (term_tx, term_rx) = tokio::sync::watch::channel(false);
    let term_task = tokio::spawn(async move {
        shutdown.await;
        let _ = term_tx.send(true);
    });
    let terminating = terminated;

    match leader {
        None => {
            metrics.set_leader(true);
            run_controller(
                &args,
                &client,
                &index_key,
                &make_ctx,
                &metrics,
                Some(health.clone()),
                terminating(&term_rx),
                None,
            )
            .await;
        }
        Some(config) => {
            metrics.set_leader(false);
            let n = args.shards.max(1);
            let sharded = n > 1;
            // Every shard's election takes a free shard only while the supervisor says this
            // replica holds fewer than its share (always, for the single leader Lease).
            let (gate_tx, gate_rx) = tokio::sync::watch::channel(!sharded);
            // The shards this replica leads now: the union of the elections' roles.
            let (held_tx, held_rx) = tokio::sync::watch::channel(shards::Held::new());
            let (resign_tx, resign_rx) = tokio::sync::watch::channel(false);
            let mut seen = Vec::new();
            let mut electors = Vec::new();
            let mut observers = Vec::new();
            let mut roles = Vec::new();
            let mut releases = Vec::new();
            for k in 0..n {
                let shard_config = if sharded {
                    metrics.set_shard_owned(k, false);
                    LeaderConfig {
                        lease_name: shards::lease_name(&config.lease_name, k),
                        ..config.clone()
                    }
                } else {
                    config.clone()
                };
                let (view_tx, view_rx) = tokio::sync::watch::channel(None);
                let (role_tx, role_rx) = tokio::sync::watch::channel(Role::Candidate);
                seen.push(shards::Seen {
                    view: view_rx,
                    role: role_rx.clone(),
                });
                roles.push(shards::follow_role(k, role_rx, held_tx.clone()));
                let observer = Arc::new(LeaderObserver {
                    metrics: metrics.clone(),
                    health: health.clone(),
                    recorder: Recorder::new(client.clone(), leader_reporter.clone()),
                    lease: lease_reference(&shard_config),
                    identity: shard_config.identity.clone(),
                    shard: sharded.then_some(k),
                    publishing: Default::default(),
                });
                let (release_tx, release_rx) = tokio::sync::watch::channel(0u64);
                releases.push(release_tx);
                let elector = leader::Elector::new(client.clone(), shard_config)
                    .with_gate(gate_rx.clone())
                    .with_view(view_tx)
                    .with_release(release_rx);
                electors.push(tokio::spawn(elector.run(
                    role_tx,
                    resign_rx.clone(),
                    observer.clone(),
                )));
                observers.push(observer);
            }
            drop(held_tx);
            let supervisor = async {
                if sharded {
                    shards::supervise(
                        client.clone(),
                        config.clone(),
                        seen,
                        gate_tx,
                        terminating(&term_rx),
                    )
                    .await
                }
            };
            let terms = lead(
                &args,
                &client,
                &index_key,
                &make_ctx,
                &metrics,
                &term_rx,
                held_rx,
                &releases,
                sharded,
                &config.namespace,
            );
            let run = async {
                futures::join!(terms, supervisor);
                // The terms have stopped: now give the Leases up, so that other replicas take
                // over at their next try instead of after the lease duration.
                let _ = resign_tx.send(true);
            };
            futures::join!(run, futures::future::join_all(roles));
            for elector in electors {
                let _ = elector.await;
            }
            for observer in observers {
                observer.flush(Duration::from_secs(5)).await;
            }
            metrics.set_leader(false);
        }
    }
    tracing::info!("shutting down");
    health.set_ready(false);
    let _ = stop_tx.send(true);
    term_task.abort();
    if let Some(r) = refresher {
        r.abort();
    }
    let _ = server.await;
    Ok(())
}

/// One term of reconciling: the watches, the kube Controller and the gauges, until `shutdown`
/// (graceful: no new reconcile, those in flight finish). Dropping the future stops everything at
/// once. With `ready`, /readyz turns ready once the VncPassword watch has synced.
#[allow(clippy::too_many_arguments)]
async fn run_controller(
    args: &RunArgs,
    client: &Client,
    key: &fingerprint::FingerprintKey,
    make_ctx: &impl Fn(context::Watched) -> Arc<Context>,
    metrics: &Arc<Metrics>,
    ready: Option<Arc<Health>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    scope: Option<ShardScope>,
) {
    // The caches: every VncPassword (with an index by Secret and by instance) and the metadata of
    // every Secret, both slimmed (see `cache`, `secret_cache`). Lists are paged (`cache::LIST_PAGE`
    // VncPasswords a page, `secret_cache::LIST_PAGE` Secrets): an "any resourceVersion" list would
    // be served from the API server's cache in one piece, which at 10,000 objects is a peak of tens
    // of MB in the controller.
    let (store, writer) = reflector::store();
    let secret_directory = secret_cache::SecretDirectory::new();
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let index = Arc::new(index::Index::with_key(key.clone()));
    let ctx = make_ctx(context::Watched {
        objects: store.clone(),
        index: index.clone(),
        secrets: secret_directory.clone(),
        secrets_synced: synced_rx,
    });
    // One watch per listed namespace (--watch-namespaces), or one over all (see `namespaces`).
    let watched = &args.watch_namespaces;
    let config = watcher::Config::default;
    // With --shards, only this shard's VncPasswords and VncPasswordSets (by a hash of their uid).
    let objects_client = scope.as_ref().map_or(client, |s| &s.objects);
    let ranges = scope.as_ref().map(|s| s.ranges.clone());
    let vncpasswords = shards::in_range_opt(
        namespaces::watch::<CachedVncPassword>(
            objects_client,
            watched,
            config().page_size(cache::LIST_PAGE),
            namespaces::held_in(store.clone()),
        ),
        ranges.clone(),
    );
    let secrets = namespaces::watch::<PartialObjectMeta<Secret>>(
        client,
        watched,
        secret_cache::config(),
        secret_directory.held(),
    );
    // The controller's own status writes do not wake it: only what a user changes (spec, the
    // paused, force-apply-requested-at (or its deprecated reconcile-requested-at) and
    // rotate-requested-at annotations, deletion) and the
    // Secrets it reads do;
    // requeues it asked for still come.
    // Sets are woken by their children's changes and by Node changes through this queue. Bounded:
    // a wake that does not fit is dropped, as the set looks again on its own (`sets::plan`'s
    // rechecks) and the kube queue holds one entry per set anyway.
    let (set_wake_tx, set_wake_rx) = tokio::sync::mpsc::channel::<ObjectRef<VncPasswordSet>>(1024);
    let (set_store, set_writer) = reflector::store::<VncPasswordSet>();
    let objects = {
        let index = index.clone();
        let set_wakes = set_wake_tx.clone();
        let set_store = set_store.clone();
        let ctx = ctx.clone();
        let trigger_ctx = ctx.clone();
        vncpasswords
            .map_ok(move |event| {
                index.apply(&event);
                // A deleted object's place in the work-slot queue goes to the next.
                if let watcher::Event::Delete(obj) = &event {
                    ctx.slots.cancel(&slots::ticket(obj));
                }
                if let watcher::Event::Apply(obj) | watcher::Event::Delete(obj) = &event {
                    // A child wakes its set; a VncPassword written by hand wakes the sets of its
                    // namespace (it may name one of their instances, which they then leave to it).
                    for set in sets::to_wake(&set_store, obj) {
                        let _ = set_wakes.try_send(set);
                    }
                }
                event
            })
            .reflect(writer)
            .try_filter({
                let mut changes = changes::Changes::new(wakes_reconcile);
                move |event| std::future::ready(changes.admit(event))
            })
            .applied_objects()
            .try_filter(move |obj| std::future::ready(admit_trigger(&trigger_ctx.slots, obj)))
    };
    // A watch event (of the object, its Secret or its ServiceAccount) goes on to kube's queue only
    // with one of the `--concurrency` work slots reserved for it; when none is free it leaves a
    // ticket in their queue, served fairly per namespace, and its object is woken when its turn
    // comes (`admit_trigger`, `slots`). kube's own queue deduplicates and schedules what passes;
    // it hands `reconcile` a few more objects at once than there are work slots
    // (`slots::kube_window`), and `reconcile` takes its slot, or (a requeue) leaves a ticket and
    // ends at once. Wakes pass the same gate: a change of who may claim an instance wakes every
    // object naming it, a ticket's turn wakes its object, and every object comes back once per
    // `--resync-interval` (`resync`). So neither kube's scheduler nor its runner holds thousands
    // of objects in a wave or a restart (a restart's initial list wakes every proven claim).
    let admit_ref = {
        let (ctx, store) = (ctx.clone(), store.clone());
        move |r: &ObjectRef<CachedVncPassword>| {
            store
                .get(r)
                .is_none_or(|obj| admit_trigger(&ctx.slots, &obj))
        }
    };
    let wakes = {
        let admit_ref = admit_ref.clone();
        futures::stream::select(
            index.clone().wakes(),
            resync::sweep(store.clone(), ctx.settings.resync_interval),
        )
        .filter(move |r| std::future::ready(admit_ref(r)))
    };
    let controller = Controller::for_stream(objects, store.clone())
        .with_config(
            ControllerConfig::default()
                .concurrency(slots::kube_window(usize::from(args.concurrency))),
        )
        .trigger_backoff(watch_backoff::Unpaced)
        .reconcile_on(wakes);
    // Only Secret metadata is watched (`PartialObjectMeta`: metadata-only list and watch); a
    // Secret's data is read only when a reconcile needs it (see reconcile::observe).
    let secret_events = secret_cache::store(secrets, secret_directory)
        .map_ok(move |event| {
            // During a relist (after a restart of the API server, a 410) the store keeps the old
            // list until InitDone, while the relisted Secrets already trigger reconciles: those wait
            // for the new list (or read the Secrets) instead of trusting the old one.
            match event {
                watcher::Event::Init => {
                    synced_tx.send_replace(false);
                }
                watcher::Event::InitDone => {
                    synced_tx.send_replace(true);
                }
                _ => {}
            }
            event
        })
        .touched_objects();
    let sa_index = index.clone();
    let late_index = index.clone();
    let admitted =
        move |refs: Vec<ObjectRef<CachedVncPassword>>| -> Vec<ObjectRef<CachedVncPassword>> {
            refs.into_iter().filter(|r| admit_ref(r)).collect()
        };
    let sa_admitted = admitted.clone();
    let controller =
        controller.watches_stream(secret_events, move |secret| match secret.namespace() {
            Some(namespace) => admitted(index.referencing(&namespace, &secret.name_any())),
            None => Vec::new(),
        });
    // ServiceAccount metadata too (its `ecsvnc.io/role-arn` annotation is metadata): one created
    // or annotated after the VncPassword that names it wakes that VncPassword.
    let service_accounts =
        namespaces::triggers::<PartialObjectMeta<ServiceAccount>>(client, watched, config())
            .touched_objects();
    let controller = controller.watches_stream(service_accounts, move |sa| match sa.namespace() {
        Some(namespace) => {
            sa_admitted(sa_index.referencing_service_account(&namespace, &sa.name_any()))
        }
        None => Vec::new(),
    });

    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let readiness = {
        let store = store.clone();
        let mut done = done_rx.clone();
        async move {
            let Some(health) = ready else { return };
            // The store's readiness signal wakes only its latest waiter, and the controller waits
            // on it too: ask again until it answers.
            loop {
                tokio::select! {
                    _ = done.wait_for(|s| *s) => return,
                    r = tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()) => match r {
                        Ok(Ok(())) => {
                            health.set_ready(true);
                            tracing::info!("VncPassword watch synced; ready");
                            return;
                        }
                        Ok(Err(_)) => return,
                        Err(_) => continue,
                    },
                }
            }
        }
    };
    let gauges = update_gauges(store.clone(), metrics.clone(), ctx.clone(), done_rx);
    // The VncPasswordSet controller, in the same term and namespaces.
    let set_events = shards::in_range_opt(
        namespaces::watch::<VncPasswordSet>(
            objects_client,
            watched,
            config(),
            namespaces::held_in(set_store.clone()),
        ),
        ranges,
    )
    .reflect(set_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, PredicateConfig::default());
    let node_cache = watched.is_all().then(|| {
        let set_store = set_store.clone();
        let wakes = set_wake_tx.clone();
        sets::nodes::NodeCache::new(
            client.clone(),
            Arc::new(move || {
                for set in sets::node_sets(&set_store) {
                    let _ = wakes.try_send(set);
                }
            }),
        )
    });
    let set_ctx = Arc::new(sets::SetContext::new(
        ctx.clone(),
        node_cache,
        scope.is_some(),
    ));
    let (set_stop_tx, set_stop_rx) = tokio::sync::watch::channel(false);
    let set_never_ready = never_ready(set_store.clone(), set_stop_rx.clone());
    let set_controller = async move {
        tokio::select! {
            _ = sets::run(
                set_ctx,
                set_events,
                set_store,
                tokio_stream_of(set_wake_rx),
                async move {
                    let mut stop = set_stop_rx;
                    let _ = stop.wait_for(|s| *s).await;
                },
            ) => {}
            _ = set_never_ready => {}
        }
    };
    let late = Arc::new(LateObjects::new(late_index));
    // On shutdown the reconciles waiting for a slot end at once; those holding one finish.
    let stop_seen = set_stop_tx.subscribe();
    let shutdown = {
        let ctx = ctx.clone();
        async move {
            shutdown.await;
            let _ = set_stop_tx.send(true);
            ctx.slots.close();
        }
    };
    let unready_at_stop = never_ready(store.clone(), stop_seen);
    let run = async move {
        let controller = controller
            .graceful_shutdown_on(shutdown)
            .run(reconcile::reconcile, error_policy, ctx)
            .for_each(|result| {
                let late = late.clone();
                async move {
                use kube::runtime::controller::Error as ControllerError;
                match result {
                    Ok(_) => {}
                    // Logged with the object by error_policy.
                    Err(ControllerError::ReconcilerFailed(..)) => {}
                    // Not in the store (yet): created during a relist, whose list the store takes
                    // in only at its end, or deleted meanwhile. Asked for again until the store
                    // has settled, so an object created in a watch gap is never lost.
                    Err(ControllerError::ObjectNotFound(object)) => {
                        tracing::debug!(object = %object, "not in the store yet; asking again shortly");
                        late.retry(&object);
                    }
                    // Watch failures (RBAC, the API server gone, an expired resourceVersion): the
                    // watcher retries with backoff, but an operator must see them.
                    Err(e) => {
                        tracing::warn!(error = %e, "watch or queue error; retrying with backoff")
                    }
                }
                }
            });
        tokio::select! {
            _ = controller => {}
            _ = unready_at_stop => {}
        }
        let _ = done_tx.send(true);
    };
    futures::join!(run, readiness, gauges, set_controller);
}

/// With `--shards`, which objects a term of reconciling serves: those whose uid hashes into one
/// of the shards this replica holds.
#[derive(Clone)]
struct ShardScope {
    ranges: Vec<crate::shard::ShardRange>,
    /// The client for the VncPassword and VncPasswordSet lists and watches.
    objects: Client,
}

/// The client for a term's VncPassword and VncPasswordSet lists and watches: one that asks the API
/// server to filter by `ranges` when it does (asked at every term's start, never assumed), else the
/// plain one. What arrives is filtered by the ranges on this side either way.
async fn objects_client(
    client: &Client,
    lease_namespace: &str,
    ranges: &[crate::shard::ShardRange],
) -> Client {
    let Some(selector) = crate::shard::selector(ranges) else {
        return client.clone();
    };
    match crate::shard::server_filters(client, lease_namespace).await {
        Ok(true) => {
            tracing::info!(%selector, "the API server filters lists and watches by shard (ShardedListAndWatch): receiving only these shards' objects");
            crate::shard::sharded_client(client.clone(), selector)
        }
        Ok(false) => {
            tracing::info!(
                "the API server does not filter by shard (no ShardedListAndWatch): receiving every object and keeping this replica's shards"
            );
            client.clone()
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not ask the API server whether it filters by shard: filtering on this side only");
            client.clone()
        }
    }
}

/// Resolves once `rx` (SIGTERM or the caller's trigger) turns true.
fn terminated(
    rx: &tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Terms of reconciling while this replica leads: one term for every shard it holds (`held`; the
/// single leader Lease counts as shard 0 without `sharded`), started again whenever that set
/// changes, so one watch and one cache serve all its shards. A shard asked for by another replica
/// ([`Role::Yielding`]) is left out of the next term, and released (`releases`) once the term that
/// served it has stopped. Until SIGTERM (`term_rx`).
#[allow(clippy::too_many_arguments)]
async fn lead(
    args: &RunArgs,
    client: &Client,
    key: &fingerprint::FingerprintKey,
    make_ctx: &impl Fn(context::Watched) -> Arc<Context>,
    metrics: &Arc<Metrics>,
    term_rx: &tokio::sync::watch::Receiver<bool>,
    held: tokio::sync::watch::Receiver<shards::Held>,
    releases: &[tokio::sync::watch::Sender<u64>],
    sharded: bool,
    lease_namespace: &str,
) {
    use tracing::Instrument;
    let n = args.shards.max(1);
    // No term serves a yielding shard now: its Lease can go.
    let release_yielding = |held: &shards::Held| {
        for (k, role) in held {
            if *role == Role::Yielding
                && let Some(r) = releases.get(usize::from(*k))
            {
                r.send_modify(|g| *g = g.wrapping_add(1));
            }
        }
    };
    loop {
        release_yielding(&held.borrow());
        let leading = {
            let mut held = held.clone();
            async move { held.wait_for(|h| !h.is_empty()).await.is_ok() }
        };
        let became_leader = tokio::select! {
            biased;
            _ = terminated(term_rx) => false,
            ok = leading => ok,
        };
        if !became_leader {
            break;
        }
        let now_held = held.borrow().clone();
        let shards = shards::serving(&now_held);
        if shards.is_empty() {
            // Only shards being handed over: release them and wait for a change.
            release_yielding(&now_held);
            let mut changed = held.clone();
            tokio::select! {
                _ = terminated(term_rx) => break,
                _ = changed.wait_for(|h| *h != now_held) => continue,
            }
        }
        // A shard lost stops the term at once (below); any other change (a shard gained, or asked
        // for by another replica) stops it gracefully (the reconciles in flight finish) and it
        // starts again with the shards it serves then.
        let lost = {
            let mut held = held.clone();
            let shards = shards.clone();
            async move {
                let _ = held
                    .wait_for(|h| shards.iter().any(|k| !h.contains_key(k)))
                    .await;
            }
        };
        let changed = {
            let mut held = held.clone();
            let shards = shards.clone();
            let term = terminated(term_rx);
            async move {
                tokio::select! {
                    _ = held.wait_for(|h| shards::serving(h) != shards) => {}
                    _ = term => {}
                }
            }
        };
        let scope = if sharded {
            let ranges: Vec<crate::shard::ShardRange> = shards
                .iter()
                .map(|k| crate::shard::ShardRange::of(*k, n))
                .collect();
            Some(ShardScope {
                objects: objects_client(client, lease_namespace, &ranges).await,
                ranges,
            })
        } else {
            None
        };
        let list = shards
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let span = if sharded {
            tracing::info_span!("term", shards = %list)
        } else {
            tracing::Span::none()
        };
        // Losing a Lease drops the term at once, reconciles in flight included: no ECS call
        // starts after that (abandoning a reconcile is safe at any point; a reboot is only called
        // after its intent is in the status).
        tokio::select! {
            biased;
            _ = lost => {
                let now: Vec<u16> = held.borrow().keys().copied().collect();
                tracing::warn!(held_before = %list, held_now = ?now, "not holding a Lease any more: reconciling stopped")
            }
            _ = run_controller(args, client, key, make_ctx, metrics, None, changed, scope).instrument(span) => {
                if !*term_rx.borrow() {
                    let now: Vec<u16> = shards::serving(&held.borrow()).into_iter().collect();
                    tracing::info!(served_before = %list, serving_now = ?now, "the shards to serve changed: reconciling again with them");
                }
            }
        }
        // The object gauges are the leader's: a standby reports none, so that a sum over the
        // replicas counts every object once.
        metrics.set_ready_reasons(&BTreeMap::new());
        metrics.set_pending_reboots(0);
        metrics.set_reconciles_waiting(0);
        if *term_rx.borrow() {
            break;
        }
    }
}

/// Resolves when `stop` turns true while `store` has not listed everything yet. kube's graceful
/// shutdown would then never end: its runner waits for the store to be ready before it runs
/// anything, and the shutdown has stopped the watch that would make it ready. Nothing has run, so
/// the controller can simply be dropped.
async fn never_ready<K>(store: Store<K>, mut stop: tokio::sync::watch::Receiver<bool>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    let _ = stop.wait_for(|s| *s).await;
    if store.wait_until_ready().now_or_never().is_some() {
        std::future::pending::<()>().await;
    }
}

/// The receiving end of a bounded queue as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Objects a trigger named that the store did not hold: asked for again every
/// [`LateObjects::RETRY`], at most [`LateObjects::ATTEMPTS`] times (an object deleted meanwhile
/// is then given up), through the index's wake queue. Bounded: one entry per object named, each
/// forgotten after its last attempt.
struct LateObjects {
    index: Arc<index::Index>,
    attempts:
        std::sync::Mutex<std::collections::HashMap<(String, String), (u32, std::time::Instant)>>,
}

impl LateObjects {
    const RETRY: Duration = Duration::from_secs(1);
    const ATTEMPTS: u32 = 60;

    fn new(index: Arc<index::Index>) -> Self {
        Self {
            index,
            attempts: Default::default(),
        }
    }

    fn retry(&self, object: &kube::runtime::reflector::ObjectRef<kube::core::DynamicObject>) {
        let Some(namespace) = object.namespace.clone() else {
            return;
        };
        let key = (namespace.clone(), object.name.clone());
        {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            // Entries of objects the store has found meanwhile are not told of: they go by age.
            let horizon = Self::RETRY * (Self::ATTEMPTS + 10);
            attempts.retain(|_, (_, since)| since.elapsed() < horizon);
            let (n, _) = attempts
                .entry(key.clone())
                .or_insert((0, std::time::Instant::now()));
            *n += 1;
            if *n > Self::ATTEMPTS {
                attempts.remove(&key);
                return;
            }
        }
        let index = self.index.clone();
        let wanted = kube::runtime::reflector::ObjectRef::<CachedVncPassword>::new(&object.name)
            .within(&namespace);
        tokio::spawn(async move {
            tokio::time::sleep(Self::RETRY).await;
            index.wake(wanted);
        });
    }
}

/// The Lease as the subject of leadership Events.
fn lease_reference(config: &LeaderConfig) -> ObjectReference {
    ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: Some(config.lease_name.clone()),
        namespace: Some(config.namespace.clone()),
        ..Default::default()
    }
}

/// Every leadership transition: a log line, `ecs_vnc_leader`, and an Event on the Lease.
struct LeaderObserver {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    recorder: Recorder,
    lease: ObjectReference,
    identity: String,
    /// The shard this Lease is (`--shards`), or none for the single leader Lease.
    shard: Option<u16>,
    /// The Events being published, awaited before the process exits (a LeaderLost on SIGTERM
    /// would otherwise die with it).
    publishing: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl LeaderObserver {
    /// Waits up to `limit` for the Events still being published.
    async fn flush(&self, limit: Duration) {
        let pending: Vec<_> =
            std::mem::take(&mut *self.publishing.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::time::timeout(limit, futures::future::join_all(pending)).await;
    }
}

impl leader::Observer for LeaderObserver {
    fn transition(&self, role: Role, why: &str) {
        let leading = role == Role::Leader;
        match self.shard {
            Some(k) => self.metrics.set_shard_owned(k, leading),
            None => self.metrics.set_leader(leading),
        }
        let (became, stopped) = match self.shard {
            Some(k) => (
                format!("became the holder of shard {k}"),
                format!("stopped holding shard {k}"),
            ),
            None => (
                "became the leader".to_string(),
                "stopped leading".to_string(),
            ),
        };
        let (reason, note) = if leading {
            tracing::info!(identity = %self.identity, shard = ?self.shard, why, "{became}: reconciling");
            (
                "LeaderElected",
                format!("{} {became}: {why}", self.identity),
            )
        } else {
            tracing::warn!(identity = %self.identity, shard = ?self.shard, why, "{stopped}");
            ("LeaderLost", format!("{} {stopped}: {why}", self.identity))
        };
        let event = Event {
            type_: if leading {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: reason.into(),
            note: Some(note),
            action: "LeaderElection".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        let lease = self.lease.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &lease).await {
                tracing::warn!(error = %e, "could not publish the leadership Event");
            }
        });
        let mut publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        publishing.retain(|t| !t.is_finished());
        publishing.push(task);
    }

    /// /readyz says the process serves and reaches the API server, whether or not it leads: a
    /// standby is a healthy replica, and a rollout must not wait for leadership.
    fn reached_api(&self) {
        self.health.set_ready(true);
    }
}

/// Whether a trigger of `obj` goes on to kube-runtime's queue now, in its share of the work slots
/// (`slots::FairSlots::trigger`): with a slot reserved for it, or else as a ticket that wakes it
/// when its turn comes.
fn admit_trigger(slots: &slots::FairSlots, obj: &CachedVncPassword) -> bool {
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    slots.trigger(
        &sets::share(namespace, sets::owning_set(obj).is_some()),
        &slots::ticket(obj),
    )
}

/// What of a VncPassword, when it changes, calls for a reconcile: never its status.
fn wakes_reconcile(obj: &CachedVncPassword) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.metadata.generation.hash(&mut h);
    obj.metadata.deletion_timestamp.is_some().hash(&mut h);
    let annotations = obj.annotations();
    for key in [
        crate::api::ANNOTATION_PAUSED,
        crate::api::ANNOTATION_FORCE_APPLY_REQUESTED_AT,
        crate::api::ANNOTATION_RECONCILE_REQUESTED_AT,
        crate::api::ANNOTATION_ROTATE_REQUESTED_AT,
    ] {
        annotations.get(key).hash(&mut h);
    }
    Some(h.finish())
}

/// Kubernetes-side failures (a Secret read or a status write refused, a reconcile past its deadline):
/// per-object exponential backoff, 5 s doubling to 5 min, jittered.
fn error_policy(obj: Arc<CachedVncPassword>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let failures = obj.uid().map(|uid| ctx.failed(&uid)).unwrap_or(1);
    let delay = decide::backoff(failures, decide::Pace::Normal, rand::random());
    tracing::warn!(namespace = ?obj.namespace(), name = %obj.name_any(), error = %error, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Keeps `ecs_vnc_vncpasswords{namespace,ready_reason}` and `ecs_vnc_pending_reboots` current.
/// Also forgets the per-object memory of objects that no longer exist.
async fn update_gauges(
    store: Store<CachedVncPassword>,
    metrics: Arc<Metrics>,
    ctx: Arc<Context>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let live: HashSet<uid::Uid> = store
            .state()
            .iter()
            .filter_map(|o| o.metadata.uid.as_deref().map(uid::Uid::from))
            .collect();
        ctx.retain_objects(&live);
        ctx.retain_secret_versions();
        let mut by_reason: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut pending = 0;
        for obj in store.state() {
            let summary = obj.summary();
            let reason = summary
                .ready_reason
                .as_deref()
                .unwrap_or("Unknown")
                .to_string();
            let namespace = obj.metadata.namespace.clone().unwrap_or_default();
            *by_reason.entry((namespace, reason)).or_default() += 1;
            if summary.reboot_required {
                pending += 1;
            }
        }
        metrics.set_ready_reasons(&by_reason);
        metrics.set_pending_reboots(pending);
        metrics.set_reconciles_waiting(ctx.slots.waiting());
        ctx.slots.expire();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn duration_flags_take_go_durations_and_the_former_leader_flag_names() {
        let new = RunArgs::from_flags([
            "--leader-elect-lease-duration=20s",
            "--leader-elect-renew-deadline=15s",
            "--leader-elect-retry-period=500ms",
            "--leader-elect-resource-name=l",
            "--reboot-timeout=15m",
        ])
        .unwrap();
        let old = RunArgs::from_flags([
            "--lease-duration=20",
            "--renew-deadline=15",
            "--retry-period=0.5",
            "--lease-name=l",
            "--reboot-timeout=900",
        ])
        .unwrap();
        for a in [&new, &old] {
            assert_eq!(a.leader_elect_lease_duration.0, Duration::from_secs(20));
            assert_eq!(a.leader_elect_renew_deadline.0, Duration::from_secs(15));
            assert_eq!(a.leader_elect_retry_period.0, Duration::from_millis(500));
            assert_eq!(a.leader_elect_resource_name, "l");
            assert_eq!(a.reboot_timeout.0, Duration::from_secs(900));
        }
        let defaults = RunArgs::from_flags(Vec::<String>::new()).unwrap();
        assert_eq!(defaults.reboot_timeout.0, Duration::from_secs(900));
        assert_eq!(defaults.resync_interval.0, Duration::from_secs(600));
        assert_eq!(defaults.health_probe_addr, None);
        for refused in [
            "--reboot-timeout=0s",
            "--reboot-timeout=15 minutes",
            "--concurrency=0",
        ] {
            assert!(
                RunArgs::from_flags([refused]).is_err(),
                "{refused} was taken"
            );
        }
    }

    /// A trigger for an object the store does not hold yet (created during a relist) is asked for
    /// again shortly, through the index's wake queue, and given up after its attempts.
    #[tokio::test]
    async fn an_object_not_in_the_store_yet_is_asked_for_again_then_given_up() {
        let index = Arc::new(index::Index::new());
        let late = LateObjects::new(index.clone());
        let missing = kube::runtime::reflector::ObjectRef::<CachedVncPassword>::new("web")
            .within("team-a")
            .erase();
        late.retry(&missing);
        let mut wakes = Box::pin(index.clone().wakes());
        let woken = tokio::time::timeout(LateObjects::RETRY * 2, wakes.next())
            .await
            .expect("asked for again")
            .expect("a wake");
        assert_eq!(
            (woken.name.as_str(), woken.namespace.as_deref()),
            ("web", Some("team-a"))
        );
        for _ in 1..LateObjects::ATTEMPTS {
            late.retry(&missing);
        }
        // Past its last attempt: given up, and forgotten.
        late.retry(&missing);
        assert!(late.attempts.lock().unwrap().is_empty());
    }
}
