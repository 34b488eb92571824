//! One test's world, as the controller tests use it: a namespace, an ECS simulator and an
//! in-process controller watching only that namespace; and a clock the test moves.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::json;

use super::TestNamespace;
use super::controller::*;
use super::leaks::captured_logs;
use super::sim::Sim;

pub const AK: &str = "LTAI5tTestKeyId";
pub const AK_SECRET: &str = "TestKeySecretValue0123456789";
/// Generous: an Automatic reboot waits for a later minute than the apply (up to 60 s).
pub const WAIT: Duration = Duration::from_secs(90);

pub struct Case {
    pub client: Client,
    pub ns: TestNamespace,
    pub sim: Sim,
    pub controller: Option<RunningController>,
    /// More `run` flags for the controller.
    pub flags: Vec<String>,
    pub clock: Option<ecs_vnc_controller::controller::context::Clock>,
    /// Where the controller keeps its fingerprint key (default: the shared `ecs-vnc-system`).
    pub controller_namespace: Option<String>,
    /// The controller's Kubernetes client, when not `client`.
    pub controller_client: Option<Client>,
}

impl Case {
    /// A namespace, a simulator with `instances` (id, io_optimized) in cn-hangzhou, and a
    /// controller that may use its default credentials in this namespace.
    pub async fn new(prefix: &str, instances: &[(&str, bool)]) -> Self {
        Self::with(prefix, instances, true).await
    }

    pub async fn with(prefix: &str, instances: &[(&str, bool)], allow_default: bool) -> Self {
        captured_logs();
        let client = super::client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let sim = Sim::start(
            instances,
            &[
                (AK, AK_SECRET, None),
                ("STS.TestTempKey", "TempSecret", Some("CAIS+/token==")),
            ],
        )
        .await;
        let mut case = Self {
            client,
            ns,
            sim,
            controller: None,
            flags: Vec::new(),
            clock: None,
            controller_namespace: None,
            controller_client: None,
        };
        case.start_controller(allow_default).await;
        case
    }

    pub async fn start_controller(&mut self, allow_default: bool) {
        self.controller = Some(
            start_controller(ControllerOptions {
                namespace: Some(self.ns.name.clone()),
                default_credentials: Some(credentials(AK, AK_SECRET, None)),
                default_credentials_namespaces: if allow_default {
                    self.ns.name.clone()
                } else {
                    String::new()
                },
                flags: self.flags.clone(),
                clock: self.clock.clone(),
                controller_namespace: self.controller_namespace.clone(),
                ..ControllerOptions::new(
                    self.controller_client
                        .clone()
                        .unwrap_or_else(|| self.client.clone()),
                    self.sim.url(),
                )
            })
            .await,
        );
    }

    pub async fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
    }

    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    pub async fn secret(&self, name: &str, password: &str) {
        put_secret(&self.client, self.ns(), name, &[("password", password)]).await;
    }

    pub async fn vncpw(&self, name: &str, instance: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "regionId": "cn-hangzhou",
            "instanceId": instance,
            "passwordSecretRef": {"name": format!("{name}-vnc")},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        put_vncpassword(&self.client, self.ns(), name, spec).await;
    }

    pub async fn wait(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> ecs_vnc_controller::api::VncPasswordStatus {
        wait_condition(&self.client, self.ns(), name, type_, status, reason, WAIT).await
    }

    pub async fn events(&self) -> Vec<CoreEvent> {
        Api::<CoreEvent>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Sets (or with `None` removes) an annotation of VncPassword `name`.
    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        Api::<ecs_vnc_controller::api::VncPassword>::namespaced(self.client.clone(), self.ns())
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .unwrap_or_else(|e| panic!("annotate {name}: {e}"));
    }

    pub async fn finish(mut self) {
        self.stop_controller().await;
        self.ns.delete().await;
    }
}

/// The controller's and the simulator's clock: the system's plus an offset the test moves.
#[derive(Clone, Default)]
pub struct SharedClock(pub Arc<std::sync::atomic::AtomicI64>);

impl SharedClock {
    pub fn now(&self) -> jiff::Timestamp {
        let offset = self.0.load(std::sync::atomic::Ordering::SeqCst);
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset)
    }
    pub fn advance(&self, seconds: i64) {
        self.0
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn clock(&self) -> ecs_vnc_controller::controller::context::Clock {
        self.skewed(0)
    }
    /// This clock, `seconds` off (it moves with it).
    pub fn skewed(&self, seconds: i64) -> ecs_vnc_controller::controller::context::Clock {
        let me = self.clone();
        Arc::new(move || me.now() + jiff::SignedDuration::from_secs(seconds))
    }
}

/// A sample's value on the controller's /metrics (the first series of that name).
pub async fn metric_value(case: &Case, name: &str) -> Option<f64> {
    let addr = case.controller.as_ref()?.metrics_addr;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A case whose simulator runs on `ecs` and whose controller runs `skew` seconds off it.
pub async fn case_with_skew(prefix: &str, ecs: &SharedClock, skew: i64) -> Case {
    let mut case = Case::new(prefix, &[]).await;
    case.sim.state().set_clock({
        let c = ecs.clone();
        move || c.now()
    });
    case.stop_controller().await;
    case.clock = Some(ecs.skewed(skew));
    case.start_controller(true).await;
    case
}

pub async fn status_of(case: &Case, name: &str) -> ecs_vnc_controller::api::VncPasswordStatus {
    super::controller::status(&case.client, case.ns(), name)
        .await
        .unwrap_or_default()
}

pub async fn secret_of(case: &Case, name: &str) -> Option<k8s_openapi::api::core::v1::Secret> {
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(case.client.clone(), case.ns())
        .get_opt(name)
        .await
        .expect("get Secret")
}

pub fn password_in(secret: &k8s_openapi::api::core::v1::Secret) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("password"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// A Case whose controller runs on `clock` (the simulator keeps the real one).
pub async fn case_on_clock(prefix: &str, instances: &[(&str, bool)], clock: &SharedClock) -> Case {
    let mut case = Case::new(prefix, instances).await;
    case.stop_controller().await;
    case.clock = Some(clock.clock());
    case.start_controller(true).await;
    case
}
