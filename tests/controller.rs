//! The VncPassword controller end to end: a real kube-apiserver (tests/control-plane), the
//! controller in-process, and the ECS simulator. Each test has its own namespace, simulator and
//! controller (watching only that namespace), so tests run in parallel without sharing state.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use support::controller::*;
use support::sim::Sim;
use support::{TestNamespace, eventually};

const AK: &str = "LTAI5tTestKeyId";
const AK_SECRET: &str = "TestKeySecretValue0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// Everything the controllers log in this test binary, to check that no secret reaches a log.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,kube=info,tower=info,h2=info,rustls=info,reqwest=info",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Case {
    client: Client,
    ns: TestNamespace,
    sim: Sim,
    controller: Option<RunningController>,
}

impl Case {
    /// A namespace, a simulator with `instances` (id, io_optimized) in cn-hangzhou, and a
    /// controller that may use its default credentials in this namespace.
    async fn new(prefix: &str, instances: &[(&str, bool)]) -> Self {
        Self::with(prefix, instances, true).await
    }

    async fn with(prefix: &str, instances: &[(&str, bool)], allow_default: bool) -> Self {
        captured_logs();
        let client = support::client().await;
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
        };
        case.start_controller(allow_default).await;
        case
    }

    async fn start_controller(&mut self, allow_default: bool) {
        self.controller = Some(
            start_controller(ControllerOptions {
                namespace: Some(self.ns.name.clone()),
                ecs_endpoint: self.sim.url(),
                default_credentials: Some(credentials(AK, AK_SECRET, None)),
                default_credentials_namespaces: if allow_default {
                    self.ns.name.clone()
                } else {
                    String::new()
                },
                client: self.client.clone(),
            })
            .await,
        );
    }

    async fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
    }

    fn ns(&self) -> &str {
        &self.ns.name
    }

    async fn secret(&self, name: &str, password: &str) {
        put_secret(&self.client, self.ns(), name, &[("password", password)]).await;
    }

    async fn vncpw(&self, name: &str, instance: &str, extra: serde_json::Value) {
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

    async fn wait(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> ecs_vnc_controller::api::VncPasswordStatus {
        wait_condition(&self.client, self.ns(), name, type_, status, reason, WAIT).await
    }

    async fn events(&self) -> Vec<CoreEvent> {
        Api::<CoreEvent>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    async fn finish(mut self) {
        self.stop_controller().await;
        self.ns.delete().await;
    }
}

#[tokio::test]
async fn io_optimized_instance_becomes_ready_with_exactly_one_modify_call() {
    let case = Case::new("io", &[("i-io0000000001", true)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-io0000000001", json!({})).await;
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(status.io_optimized, Some(true));
    assert!(
        status
            .applied_password_fingerprint
            .as_deref()
            .is_some_and(|f| f.starts_with("hmac-sha256:"))
    );
    assert!(status.last_request_id.is_some());
    assert_eq!(
        support::controller::condition(&status, "RebootRequired").map(|c| c.0),
        Some("False".into())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    assert_eq!(
        case.sim.effective_password("i-io0000000001").as_deref(),
        Some("Ecs123")
    );
    // The health and metrics endpoint tells the same story.
    let addr = case.controller.as_ref().expect("controller").metrics_addr;
    let http = reqwest::Client::new();
    let readyz = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(readyz.status().as_u16(), 200);
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    for needle in [
        "ecs_vnc_ecs_calls_total{action=\"ModifyInstanceVncPasswd\",code=\"Success\"} 1",
        "ecs_vnc_reconciles_total{result=\"applied\"} 1",
        "ecs_vnc_ecs_call_duration_seconds_bucket",
        "ecs_vnc_reconcile_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    eventually("the Ready-reason gauge", WAIT, || async {
        let m = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.contains("ecs_vnc_vncpasswords{ready_reason=\"Applied\"} 1")
            .then_some(())
    })
    .await;
    case.finish().await;
}

#[tokio::test]
async fn non_io_optimized_instance_waits_for_a_restart_then_is_ready_without_another_modify() {
    let case = Case::new("nonio", &[("i-nonio00000001", false)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-nonio00000001", json!({})).await;
    let status = case
        .wait("web", "Ready", "False", Some("RebootRequired"))
        .await;
    assert_eq!(
        support::controller::condition(&status, "RebootRequired").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        support::controller::condition(&status, "Applied").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(status.io_optimized, Some(false));
    assert_eq!(
        case.sim.set_password("i-nonio00000001").as_deref(),
        Some("Ecs123")
    );
    assert_ne!(
        case.sim.effective_password("i-nonio00000001").as_deref(),
        Some("Ecs123")
    );
    // Make sure the reboot happens in a later minute than the apply would not be needed: the
    // baseline rule recognises a restart in the same minute too.
    case.sim.console_reboot("i-nonio00000001");
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(
        support::controller::condition(&status, "RebootRequired"),
        Some(("False".into(), "Restarted".into()))
    );
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    assert_eq!(case.sim.calls("RebootInstance"), 0);
    assert!(
        case.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("RestartObserved"))
    );
    case.finish().await;
}

#[tokio::test]
async fn automatic_reboot_policy_reboots_exactly_once_then_is_ready() {
    let case = Case::new("auto", &[("i-auto000000001", false)]).await;
    case.secret("web-vnc", "Auto12").await;
    case.vncpw(
        "web",
        "i-auto000000001",
        json!({"rebootPolicy": "Automatic"}),
    )
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("RebootInstance"), 1);
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    assert_eq!(
        case.sim.effective_password("i-auto000000001").as_deref(),
        Some("Auto12")
    );
    let reasons: Vec<_> = case
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.iter().any(|r| r == "RebootRequested"),
        "{reasons:?}"
    );
    case.finish().await;
}

#[tokio::test]
async fn rotating_the_secret_applies_once_more_and_unrelated_secrets_change_nothing() {
    let case = Case::new("rotate", &[("i-rotate0000001", true)]).await;
    case.secret("web-vnc", "First1").await;
    case.vncpw("web", "i-rotate0000001", json!({})).await;
    case.wait("web", "Ready", "True", None).await;
    let first = support::controller::status(&case.client, case.ns(), "web")
        .await
        .and_then(|s| s.applied_password_fingerprint);
    case.secret("web-vnc", "Second").await;
    eventually("the rotated password to reach ECS", WAIT, || async {
        (case.sim.set_password("i-rotate0000001").as_deref() == Some("Second")).then_some(())
    })
    .await;
    let status = case.wait("web", "Ready", "True", None).await;
    assert_ne!(status.applied_password_fingerprint, first);
    put_secret(
        &case.client,
        case.ns(),
        "unrelated",
        &[("password", "Other1")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    case.finish().await;
}

#[tokio::test]
async fn a_secret_created_after_its_vncpassword_turns_it_ready() {
    let case = Case::new("late", &[("i-late000000001", true)]).await;
    case.vncpw("web", "i-late000000001", json!({})).await;
    let status = case
        .wait("web", "Stalled", "True", Some("SecretNotFound"))
        .await;
    let (ready, reason) = support::controller::condition(&status, "Ready").expect("Ready present");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "SecretNotFound")
    );
    case.secret("web-vnc", "Late12").await;
    case.wait("web", "Ready", "True", None).await;
    case.finish().await;
}

#[tokio::test]
async fn an_invalid_password_stalls_without_any_ecs_call_until_fixed() {
    let case = Case::new("invalid", &[("i-invalid000001", true)]).await;
    case.secret("web-vnc", "bad pw!").await;
    case.vncpw("web", "i-invalid000001", json!({})).await;
    let status = case
        .wait("web", "Stalled", "True", Some("InvalidPassword"))
        .await;
    let message = status
        .condition("Stalled")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("6 characters"), "{message}");
    assert!(!message.contains("bad pw"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(case.sim.total_calls(), 0);
    // A missing key is its own reason.
    replace_secret(&case.client, case.ns(), "web-vnc", &[("other", "x")]).await;
    case.wait("web", "Stalled", "True", Some("SecretKeyNotFound"))
        .await;
    case.secret("web-vnc", "Fixed1").await;
    case.wait("web", "Ready", "True", None).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    case.finish().await;
}

#[tokio::test]
async fn unknown_instance_and_region_stall_without_a_retry_storm() {
    let case = Case::new("unknown", &[("i-known00000001", true)]).await;
    case.secret("gone-vnc", "Ecs123").await;
    case.secret("far-vnc", "Ecs123").await;
    case.vncpw("gone", "i-doesnotexist01", json!({})).await;
    put_vncpassword(&case.client, case.ns(), "far", json!({
        "regionId": "xx-nowhere-9", "instanceId": "i-known00000001", "passwordSecretRef": {"name": "far-vnc"},
    })).await;
    case.wait("gone", "Stalled", "True", Some("InstanceNotFound"))
        .await;
    case.wait("far", "Stalled", "True", Some("RegionNotFound"))
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let calls = case.sim.total_calls();
    assert!(
        calls <= 4,
        "{calls} ECS calls in 30 s for two stalled objects"
    );
    case.finish().await;
}

#[tokio::test]
async fn transient_failures_reconcile_with_backoff_and_recover() {
    let case = Case::new(
        "transient",
        &[
            ("i-starting00001", true),
            ("i-throttle00001", true),
            ("i-fivexx0000001", true),
        ],
    )
    .await;
    // IncorrectInstanceStatus while the instance is Starting.
    case.sim.set_status("i-starting00001", "Starting");
    case.secret("a-vnc", "Ecs123").await;
    case.vncpw("a", "i-starting00001", json!({})).await;
    case.wait("a", "Reconciling", "True", Some("IncorrectInstanceStatus"))
        .await;
    let status = support::controller::status(&case.client, case.ns(), "a")
        .await
        .expect("status");
    assert_eq!(
        support::controller::condition(&status, "Ready"),
        Some(("False".into(), "IncorrectInstanceStatus".into()))
    );
    assert_eq!(
        support::controller::condition(&status, "Stalled").map(|c| c.0),
        Some("False".into())
    );
    case.sim.set_status("i-starting00001", "Running");
    case.wait("a", "Ready", "True", None).await;

    // 5xx on every call, then healthy again.
    case.sim.set_error_rate(1.0);
    case.secret("c-vnc", "Ecs123").await;
    case.vncpw("c", "i-fivexx0000001", json!({})).await;
    case.wait("c", "Reconciling", "True", Some("EcsUnavailable"))
        .await;
    case.sim.set_error_rate(0.0);
    case.wait("c", "Ready", "True", None).await;

    // Throttling of more calls than one reconcile retries.
    case.sim.throttle_next(3);
    case.secret("b-vnc", "Ecs123").await;
    case.vncpw("b", "i-throttle00001", json!({})).await;
    case.wait("b", "Ready", "True", None).await;
    assert!(
        case.sim
            .calls_with_code("ModifyInstanceVncPasswd", "Throttling.User")
            >= 1
    );
    case.finish().await;
}

#[tokio::test]
async fn a_controller_restart_makes_no_ecs_write_calls_for_applied_objects() {
    let mut case = Case::new(
        "restart",
        &[("i-restart000001", true), ("i-restart000002", false)],
    )
    .await;
    case.secret("a-vnc", "Ecs123").await;
    case.secret("b-vnc", "Ecs456").await;
    case.vncpw("a", "i-restart000001", json!({})).await;
    case.vncpw("b", "i-restart000002", json!({})).await;
    case.wait("a", "Ready", "True", None).await;
    case.wait("b", "RebootRequired", "True", None).await;
    case.sim.console_reboot("i-restart000002");
    case.wait("b", "Ready", "True", None).await;
    let writes = case.sim.calls("ModifyInstanceVncPasswd") + case.sim.calls("RebootInstance");
    assert_eq!(writes, 2);
    case.stop_controller().await;
    case.start_controller(true).await;
    // Let the new controller list and reconcile everything.
    tokio::time::sleep(Duration::from_secs(5)).await;
    case.wait("a", "Ready", "True", None).await;
    case.wait("b", "Ready", "True", None).await;
    assert_eq!(
        case.sim.calls("ModifyInstanceVncPasswd") + case.sim.calls("RebootInstance"),
        writes
    );
    case.finish().await;
}

#[tokio::test]
async fn default_credentials_need_an_allowed_namespace_and_an_sts_secret_works() {
    let case = Case::with("tenancy", &[("i-tenancy000001", true)], false).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-tenancy000001", json!({})).await;
    let status = case
        .wait("web", "Stalled", "True", Some("CredentialsNotAllowed"))
        .await;
    assert!(
        status
            .condition("Stalled")
            .is_some_and(|c| c.message.contains("credentialsSecretRef"))
    );
    assert_eq!(case.sim.total_calls(), 0);
    put_secret(
        &case.client,
        case.ns(),
        "aliyun",
        &[
            ("accessKeyId", "STS.TestTempKey"),
            ("accessKeySecret", "TempSecret"),
            ("securityToken", "CAIS+/token=="),
        ],
    )
    .await;
    case.vncpw(
        "web",
        "i-tenancy000001",
        json!({"credentialsSecretRef": {"name": "aliyun"}}),
    )
    .await;
    case.wait("web", "Ready", "True", None).await;
    // A wrong token is a credentials failure, not a retry loop.
    put_secret(
        &case.client,
        case.ns(),
        "aliyun",
        &[
            ("accessKeyId", "STS.TestTempKey"),
            ("accessKeySecret", "TempSecret"),
            ("securityToken", "CAIS+/wrong=="),
        ],
    )
    .await;
    case.secret("web-vnc", "Ecs789").await;
    case.wait("web", "Stalled", "True", Some("AuthFailed"))
        .await;
    case.finish().await;
}

#[tokio::test]
async fn no_password_or_key_secret_reaches_status_events_or_logs() {
    let passwords = ["Sec0rA", "Sec0rB", "s3cr t"];
    let case = Case::new("secrets", &[("i-secrets000001", false)]).await;
    case.secret("web-vnc", passwords[0]).await;
    case.vncpw("web", "i-secrets000001", json!({})).await;
    case.wait("web", "RebootRequired", "True", None).await;
    case.secret("web-vnc", passwords[1]).await;
    eventually("rotation", WAIT, || async {
        (case.sim.set_password("i-secrets000001").as_deref() == Some(passwords[1])).then_some(())
    })
    .await;
    case.secret("web-vnc", passwords[2]).await;
    case.wait("web", "Stalled", "True", Some("InvalidPassword"))
        .await;
    // A signature failure (wrong key secret) whose server message echoes the string to sign.
    put_secret(
        &case.client,
        case.ns(),
        "bad-creds",
        &[
            ("accessKeyId", AK),
            ("accessKeySecret", "WrongSecretValue"),
            ("securityToken", "CAIS+/leak=="),
        ],
    )
    .await;
    case.secret("web-vnc", "Sec0rC").await;
    case.vncpw(
        "web",
        "i-secrets000001",
        json!({"credentialsSecretRef": {"name": "bad-creds"}}),
    )
    .await;
    case.wait("web", "Stalled", "True", Some("AuthFailed"))
        .await;

    let obj = Api::<VncPassword>::namespaced(case.client.clone(), case.ns())
        .get("web")
        .await
        .expect("get");
    let status_text = serde_json::to_string(&obj.status).expect("json");
    let events_text = serde_json::to_string(&case.events().await).expect("json");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap_or_else(|p| p.into_inner()))
        .to_string();
    assert!(
        !logs.is_empty(),
        "the controller logged nothing: the log check would prove nothing"
    );
    for secret in passwords.iter().chain(&[
        "Sec0rC",
        AK_SECRET,
        "WrongSecretValue",
        "CAIS+/leak==",
        "CAIS%2B%2Fleak",
        "TempSecret",
    ]) {
        assert!(!status_text.contains(secret), "status contains {secret}");
        assert!(!events_text.contains(secret), "events contain {secret}");
        assert!(!logs.contains(secret), "logs contain {secret}");
    }
    case.finish().await;
}

#[tokio::test]
async fn kubectl_wait_for_ready_returns_when_the_object_is_ready() {
    let case = Case::new("kwait", &[("i-kwait00000001", false)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-kwait00000001", json!({})).await;
    case.wait("web", "RebootRequired", "True", None).await;
    // Not ready yet: kubectl wait times out.
    let early = support::kubectl(&[
        "wait",
        "--for=condition=Ready",
        "-n",
        case.ns(),
        "vncpassword/web",
        "--timeout=2s",
    ]);
    assert!(
        !early.status.success(),
        "kubectl wait returned before the restart"
    );
    case.sim.console_reboot("i-kwait00000001");
    let ns = case.ns().to_string();
    let out = tokio::task::spawn_blocking(move || {
        support::kubectl(&[
            "wait",
            "--for=condition=Ready",
            "-n",
            &ns,
            "vncpassword/web",
            "--timeout=60s",
        ])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl get shows the printer columns.
    let get = support::kubectl(&["get", "vncpw", "-n", case.ns()]);
    let table = String::from_utf8_lossy(&get.stdout);
    for column in [
        "INSTANCE",
        "REGION",
        "READY",
        "REASON",
        "REBOOT-REQUIRED",
        "AGE",
    ] {
        assert!(table.contains(column), "{table}");
    }
    assert!(
        table.contains("i-kwait00000001") && table.contains("True"),
        "{table}"
    );
    case.finish().await;
}

#[tokio::test]
async fn paused_objects_make_no_ecs_calls_and_say_so_and_reconcile_requests_reapply() {
    let case = Case::new("annot", &[("i-annot00000001", true)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-annot00000001", json!({})).await;
    case.wait("web", "Ready", "True", None).await;
    let api = Api::<VncPassword>::namespaced(case.client.clone(), case.ns());
    let annotate = |value: serde_json::Value| {
        let api = api.clone();
        async move {
            api.patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": value}})),
            )
            .await
            .expect("annotate");
        }
    };
    annotate(json!({"ecsvnc.io/reconcile-requested-at": "one"})).await;
    eventually("a forced re-apply", WAIT, || async {
        (case.sim.calls("ModifyInstanceVncPasswd") == 2).then_some(())
    })
    .await;
    let status = case.wait("web", "Ready", "True", None).await;
    assert_eq!(status.last_handled_reconcile_at.as_deref(), Some("one"));
    annotate(json!({"ecsvnc.io/paused": "true"})).await;
    case.wait("web", "Ready", "False", Some("Paused")).await;
    case.secret("web-vnc", "Ecs456").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    annotate(json!({"ecsvnc.io/paused": null})).await;
    case.wait("web", "Ready", "True", None).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 3);
    case.finish().await;
}
