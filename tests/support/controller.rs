//! Running the controller in-process against the test cluster and an in-process ECS simulator.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use ecs_vnc_controller::api::{VncPassword, VncPasswordStatus};
use ecs_vnc_controller::controller::context::{Clock, system_clock};
use ecs_vnc_controller::controller::{Environment, RunArgs, run_with};
use ecs_vnc_controller::ecs::Credentials;
use ecs_vnc_controller::secret::SecretString;

pub const CONTROLLER_NAMESPACE: &str = "ecs-vnc-system";

/// A controller running in this process, stopped on `stop()` (or when dropped).
pub struct RunningController {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub metrics_addr: SocketAddr,
}

impl RunningController {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub struct ControllerOptions {
    /// Watch only this namespace (`None`: all, as deployed).
    pub namespace: Option<String>,
    pub ecs_endpoint: String,
    pub default_credentials: Option<Credentials>,
    /// The controller's own credentials as a provider (wins over `default_credentials`).
    pub default_provider: Option<ecs_vnc_controller::ecs::CredentialsProvider>,
    pub default_credentials_namespaces: String,
    pub client: Client,
    /// More `run` flags, e.g. `--reboot-timeout=5`.
    pub flags: Vec<String>,
    /// The controller's clock (default: the system's).
    pub clock: Option<Clock>,
    /// Where the controller keeps its fingerprint key (default `ecs-vnc-system`, shared).
    pub controller_namespace: Option<String>,
}

impl ControllerOptions {
    pub fn new(client: Client, ecs_endpoint: String) -> Self {
        Self {
            namespace: None,
            ecs_endpoint,
            default_credentials: None,
            default_provider: None,
            default_credentials_namespaces: String::new(),
            client,
            flags: Vec::new(),
            clock: None,
            controller_namespace: None,
        }
    }
}

pub async fn ensure_controller_namespace(client: &Client) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(CONTROLLER_NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create namespace {CONTROLLER_NAMESPACE}: {e}"),
    }
}

pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub async fn start_controller(options: ControllerOptions) -> RunningController {
    ensure_controller_namespace(&super::client().await).await;
    let metrics_addr = free_port();
    let mut flags = vec![
        format!("--ecs-endpoint={}", options.ecs_endpoint),
        // The simulator's STS names each credential's account (rate limits per account).
        format!(
            "--sts-endpoint={}/sts",
            options.ecs_endpoint.trim_end_matches('/')
        ),
        "--ecs-qps=200".to_string(),
        "--ecs-burst=50".to_string(),
        "--ecs-max-retries=1".to_string(),
        "--ecs-connect-timeout=2".to_string(),
        "--ecs-timeout=5".to_string(),
        format!(
            "--default-credentials-namespaces={}",
            options.default_credentials_namespaces
        ),
        format!("--metrics-addr={metrics_addr}"),
        "--reboot-poll-interval=1".to_string(),
        "--concurrency=8".to_string(),
    ];
    if let Some(ns) = &options.namespace {
        flags.push(format!("--namespace={ns}"));
    }
    // A flag the test passes replaces the default of the same name.
    let name = |f: &str| f.split('=').next().unwrap_or_default().to_string();
    flags.retain(|f| !options.flags.iter().any(|o| name(o) == name(f)));
    flags.extend(options.flags.iter().cloned());
    let args = RunArgs::from_flags(&flags).unwrap_or_else(|e| panic!("run flags {flags:?}: {e}"));
    let env = Environment {
        client: options.client,
        default_credentials: options.default_provider.or_else(|| {
            options
                .default_credentials
                .map(ecs_vnc_controller::ecs::CredentialsProvider::fixed)
        }),
        controller_namespace: options
            .controller_namespace
            .unwrap_or_else(|| CONTROLLER_NAMESPACE.into()),
        clock: options.clock.unwrap_or_else(system_clock),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        if let Err(e) = run_with(args, env, shutdown).await {
            panic!("controller failed: {e}");
        }
    });
    RunningController {
        stop: Some(stop_tx),
        task: Some(task),
        metrics_addr,
    }
}

pub fn credentials(id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials::new(id, SecretString::new(secret), token.map(SecretString::new))
}

pub async fn put_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("ecs-vnc-tests").force(),
            &Patch::Apply(&secret_apply(secret)),
        )
        .await
        .unwrap_or_else(|e| panic!("apply Secret {namespace}/{name}: {e}"));
}

/// Replaces a Secret's whole data (delete and create), as `kubectl replace` would.
pub async fn replace_secret(client: &Client, namespace: &str, name: &str, data: &[(&str, &str)]) {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let _ = api.delete(name, &Default::default()).await;
    put_secret(client, namespace, name, data).await;
}

fn secret_apply(secret: Secret) -> serde_json::Value {
    let mut v = serde_json::to_value(secret).expect("secret json");
    v["apiVersion"] = "v1".into();
    v["kind"] = "Secret".into();
    v
}

/// Applies a VncPassword from a JSON spec.
pub async fn put_vncpassword(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) {
    let obj = serde_json::json!({
        "apiVersion": "ecsvnc.io/v1alpha1",
        "kind": "VncPassword",
        "metadata": {"name": name},
        "spec": spec,
    });
    Api::<VncPassword>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("ecs-vnc-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply VncPassword {namespace}/{name}: {e}"));
}

pub async fn status(client: &Client, namespace: &str, name: &str) -> Option<VncPasswordStatus> {
    Api::<VncPassword>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .ok()
        .and_then(|o| o.status)
}

/// (status, reason) of a condition.
pub fn condition(status: &VncPasswordStatus, type_: &str) -> Option<(String, String)> {
    status
        .condition(type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until condition `type_` has `want_status` (and `want_reason` when given).
pub async fn wait_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    want_status: &str,
    want_reason: Option<&str>,
    timeout: Duration,
) -> VncPasswordStatus {
    let what = format!("{namespace}/{name} {type_}={want_status} {want_reason:?}");
    super::eventually(&what, timeout, || async {
        let s = status(client, namespace, name).await?;
        let (st, reason) = condition(&s, type_)?;
        (st == want_status && want_reason.is_none_or(|r| r == reason)).then_some(s)
    })
    .await
}

/// Waits until the VncPassword's password is in effect (InEffect=True).
pub async fn wait_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> VncPasswordStatus {
    // In effect (Ready alone is also True for a restart only a person can make).
    wait_condition(client, namespace, name, "InEffect", "True", None, timeout).await
}
