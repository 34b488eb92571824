//! Running the controller in-process against the test cluster and an in-process ECS simulator.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use ecs_vnc_controller::api::{VncPassword, VncPasswordStatus};
use ecs_vnc_controller::cli::EcsArgs;
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
    pub default_credentials_namespaces: String,
    pub client: Client,
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
    let args = RunArgs {
        ecs: EcsArgs {
            ecs_endpoint: Some(options.ecs_endpoint),
            ecs_qps: 200.0,
            ecs_burst: 50,
            ecs_max_retries: 1,
            ecs_connect_timeout: 2.0,
            ecs_timeout: 5.0,
            ecs_signature: Default::default(),
        },
        default_credentials_namespaces: options
            .default_credentials_namespaces
            .parse()
            .expect("namespace list"),
        namespace: options.namespace,
        metrics_addr,
        log_format: ecs_vnc_controller::telemetry::LogFormat::Text,
        reboot_poll_interval: 1.0,
        concurrency: 8,
    };
    let env = Environment {
        client: options.client,
        default_credentials: options.default_credentials,
        controller_namespace: CONTROLLER_NAMESPACE.into(),
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
