//! The VncPassword controller end to end: a real kube-apiserver (tests/control-plane), the
//! controller in-process, and the ECS simulator. Each test has its own namespace, simulator and
//! controller (watching only that namespace), so tests run in parallel without sharing state.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use support::case::*;
use support::controller::*;
use support::leaks::captured_logs;
use support::sim::Sim;
use support::{TestNamespace, eventually};

/// The controller's Kubernetes client (`kube_http`) speaks HTTP/2 to the API server, which offers
/// it, and keeps kube's layers: impersonation here, so a user with no rights is refused.
#[tokio::test]
async fn the_kubernetes_client_speaks_http2_and_keeps_kubes_layers() {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(support::kubeconfig()).expect("readable kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("usable kubeconfig");
    let versions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = versions.clone();
    let layer = tower::util::MapResponseLayer::new(
        move |response: http::Response<Box<kube::client::DynBody>>| {
            seen.lock().unwrap().push(response.version());
            response
        },
    );
    let admin = ecs_vnc_controller::kube_http::builder(config.clone())
        .await
        .expect("client")
        .with_layer(&layer)
        .build();
    admin.apiserver_version().await.expect("the version");
    Api::<k8s_openapi::api::core::v1::Secret>::all(admin)
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .expect("an admin lists Secrets");
    config.auth_info.impersonate = Some("system:serviceaccount:default:nobody-at-all".into());
    let nobody = ecs_vnc_controller::kube_http::builder(config)
        .await
        .expect("client")
        .with_layer(&layer)
        .build();
    let refused = Api::<k8s_openapi::api::core::v1::Secret>::all(nobody)
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .expect_err("impersonated, no rights");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 403),
        "{refused:?}"
    );
    let versions = versions.lock().unwrap().clone();
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert!(
        versions.iter().all(|v| *v == http::Version::HTTP_2),
        "{versions:?}"
    );
}

#[tokio::test]
async fn io_optimized_instance_becomes_ready_with_exactly_one_modify_call() {
    let case = Case::new("io", &[("i-io0000000001", true)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-io0000000001", json!({})).await;
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(status.instance.io_optimized, Some(true));
    assert!(
        status
            .applied
            .fingerprint
            .as_deref()
            .is_some_and(|f| f.starts_with("hmac-sha256:"))
    );
    assert!(status.applied.request_id.is_some());
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
    // Rate limits per account as ECS counts them, learnt from STS: the series name the account,
    // never an AccessKeyId (anyone who reads /metrics could copy one).
    let account = format!(
        "account=\"{}\"",
        ecs_vnc_controller::simulator::DEFAULT_ACCOUNT_ID
    );
    assert!(
        metrics.contains(&format!(
            "ecs_vnc_ecs_rate_limit_qps{{{account},region=\"cn-hangzhou\",action=\"ModifyInstanceVncPasswd\"}}"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(AK),
        "an AccessKeyId on /metrics:\n{metrics}"
    );
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
        m.contains(&format!(
            "ecs_vnc_vncpasswords{{namespace=\"{}\",ready_reason=\"Applied\"}} 1",
            case.ns()
        ))
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
    // Applied, and only a person can restart the instance: Ready (kstatus Current), not in effect.
    let status = case
        .wait("web", "InEffect", "False", Some("RebootRequired"))
        .await;
    assert_eq!(
        support::controller::condition(&status, "Ready"),
        Some(("True".into(), "RebootRequired".into()))
    );
    assert_eq!(
        support::controller::condition(&status, "RebootRequired").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        support::controller::condition(&status, "Reconciling").map(|c| c.0),
        Some("False".into())
    );
    assert_eq!(
        support::controller::condition(&status, "Applied").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(status.instance.io_optimized, Some(false));
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
    let status = case
        .wait("web", "InEffect", "True", Some("Restarted"))
        .await;
    assert_eq!(
        support::controller::condition(&status, "Ready"),
        Some(("True".into(), "Applied".into()))
    );
    assert_eq!(
        support::controller::condition(&status, "RebootRequired"),
        Some(("False".into(), "Restarted".into()))
    );
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    assert_eq!(case.sim.calls("RebootInstance"), 0);
    // The Event follows the status write.
    eventually("the Restarted Event", WAIT, || async {
        case.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Restarted"))
            .then_some(())
    })
    .await;
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
    case.wait("web", "InEffect", "True", None).await;
    let first = support::controller::status(&case.client, case.ns(), "web")
        .await
        .and_then(|s| s.applied.fingerprint);
    case.secret("web-vnc", "Second").await;
    eventually("the rotated password to reach ECS", WAIT, || async {
        (case.sim.set_password("i-rotate0000001").as_deref() == Some("Second")).then_some(())
    })
    .await;
    let status = case.wait("web", "InEffect", "True", None).await;
    assert_ne!(status.applied.fingerprint, first);
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
    case.wait("web", "InEffect", "True", None).await;
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
    case.wait("web", "InEffect", "True", None).await;
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
    case.wait("a", "InEffect", "True", None).await;

    // 5xx on every call, then healthy again.
    case.sim.set_error_rate(1.0);
    case.secret("c-vnc", "Ecs123").await;
    case.vncpw("c", "i-fivexx0000001", json!({})).await;
    case.wait("c", "Reconciling", "True", Some("EcsUnavailable"))
        .await;
    case.sim.set_error_rate(0.0);
    case.wait("c", "InEffect", "True", None).await;

    // Throttling of more calls than one reconcile retries.
    case.sim.throttle_next(3);
    case.secret("b-vnc", "Ecs123").await;
    case.vncpw("b", "i-throttle00001", json!({})).await;
    case.wait("b", "InEffect", "True", None).await;
    assert!(
        case.sim
            .calls_with_code("ModifyInstanceVncPasswd", "Throttling.User")
            >= 1
    );
    case.finish().await;
}

#[tokio::test]
async fn a_controller_restart_makes_no_ecs_write_and_no_api_call_for_settled_objects() {
    let mut case = Case::new(
        "restart",
        &[
            ("i-restart000001", true),
            ("i-restart000002", false),
            ("i-restart000003", false),
        ],
    )
    .await;
    case.secret("a-vnc", "Ecs123").await;
    case.secret("b-vnc", "Ecs456").await;
    case.secret("c-vnc", "Ecs789").await;
    case.vncpw("a", "i-restart000001", json!({})).await;
    case.vncpw("b", "i-restart000002", json!({})).await;
    case.vncpw("c", "i-restart000003", json!({})).await;
    case.wait("a", "InEffect", "True", None).await;
    case.wait("b", "RebootRequired", "True", None).await;
    case.wait("c", "RebootRequired", "True", None).await;
    case.sim.console_reboot("i-restart000002");
    case.wait("b", "InEffect", "True", None).await;
    let writes = case.sim.calls("ModifyInstanceVncPasswd") + case.sim.calls("RebootInstance");
    assert_eq!(writes, 3);
    case.stop_controller().await;

    // The new controller's every request to the API server is recorded.
    let (client, requests) = support::recording_client().await;
    case.controller_client = Some(client);
    case.start_controller(true).await;
    let addr = case.controller.as_ref().expect("controller").metrics_addr;
    eventually(
        "every object reconciled by the new controller",
        WAIT,
        || async {
            let m = reqwest::get(format!("http://{addr}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let reconciled: f64 = m
                .lines()
                .filter(|l| l.starts_with("ecs_vnc_reconciles_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            // c waits for a restart: it is looked at again every poll interval (1 s here).
            (reconciled >= 4.0).then_some(())
        },
    )
    .await;
    case.wait("a", "InEffect", "True", None).await;
    case.wait("b", "InEffect", "True", None).await;
    case.wait("c", "RebootRequired", "True", None).await;
    assert_eq!(
        case.sim.calls("ModifyInstanceVncPasswd") + case.sim.calls("RebootInstance"),
        writes
    );
    // Nothing to do: no Secret read, no status write, no Event. The watches list and watch, and
    // the fingerprint key is read once; nothing is asked about one object.
    let ns = case.ns().to_string();
    let per_object: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| {
            r.contains(&format!("/namespaces/{ns}/secrets/"))
                || r.contains(&format!("/namespaces/{ns}/vncpasswords/"))
                || r.contains(&format!("/namespaces/{ns}/events"))
        })
        .cloned()
        .collect();
    assert!(
        per_object.is_empty(),
        "requests about single objects after the restart: {per_object:?}"
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
            .is_some_and(|c| c.message.contains("credentials.secretRef"))
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
        json!({"credentials": {"secretRef": {"name": "aliyun"}}}),
    )
    .await;
    case.wait("web", "InEffect", "True", None).await;
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
        json!({"credentials": {"secretRef": {"name": "bad-creds"}}}),
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
async fn kubectl_wait_for_ready_and_for_in_effect_return_when_each_holds() {
    let case = Case::new("kwait", &[("i-kwait00000001", false)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-kwait00000001", json!({})).await;
    case.wait("web", "RebootRequired", "True", None).await;
    // Applied, a person must restart the instance: the controller's part is done, so Ready is
    // True at once (no pipeline waits on a person) ...
    let ready = support::kubectl(&[
        "wait",
        "--for=condition=Ready",
        "-n",
        case.ns(),
        "vncpassword/web",
        "--timeout=10s",
    ]);
    assert!(
        ready.status.success(),
        "kubectl wait --for=condition=Ready failed while a Manual restart is pending: {}",
        String::from_utf8_lossy(&ready.stderr)
    );
    // ... and InEffect is not: kubectl wait for it times out until the restart.
    let early = support::kubectl(&[
        "wait",
        "--for=condition=InEffect",
        "-n",
        case.ns(),
        "vncpassword/web",
        "--timeout=2s",
    ]);
    assert!(
        !early.status.success(),
        "kubectl wait --for=condition=InEffect returned before the restart"
    );
    case.sim.console_reboot("i-kwait00000001");
    let ns = case.ns().to_string();
    let out = tokio::task::spawn_blocking(move || {
        support::kubectl(&[
            "wait",
            "--for=condition=InEffect",
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
    case.wait("web", "InEffect", "True", None).await;
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
    annotate(json!({"ecsvnc.io/force-apply-requested-at": "one"})).await;
    eventually("a forced re-apply", WAIT, || async {
        (case.sim.calls("ModifyInstanceVncPasswd") == 2).then_some(())
    })
    .await;
    let status = case.wait("web", "InEffect", "True", None).await;
    assert_eq!(status.applied.force_apply_token.as_deref(), Some("one"));
    // The deprecated name is still honoured, with one Warning Event per token.
    annotate(json!({"ecsvnc.io/force-apply-requested-at": null, "ecsvnc.io/reconcile-requested-at": "two"})).await;
    eventually(
        "a forced re-apply by the deprecated annotation",
        WAIT,
        || async { (case.sim.calls("ModifyInstanceVncPasswd") == 3).then_some(()) },
    )
    .await;
    let deprecated = || async {
        case.events()
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some("DeprecatedAnnotation"))
            // A repeat of the same Event shows as a series (or a count above 1).
            .map(|e| {
                e.series
                    .as_ref()
                    .and_then(|s| s.count)
                    .unwrap_or(1)
                    .max(e.count.unwrap_or(1))
            })
            .sum::<i32>()
    };
    eventually("the DeprecatedAnnotation Event", WAIT, || async {
        (deprecated().await == 1).then_some(())
    })
    .await;
    let status = case.wait("web", "InEffect", "True", None).await;
    assert_eq!(status.applied.force_apply_token.as_deref(), Some("two"));
    annotate(json!({"ecsvnc.io/paused": "true"})).await;
    case.wait("web", "Ready", "True", Some("Paused")).await;
    case.secret("web-vnc", "Ecs456").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 3);
    annotate(json!({"ecsvnc.io/paused": null})).await;
    // InEffect stays as it was while paused (True, for the earlier password): wait for the apply
    // of the new one, then for Ready to say so.
    eventually("the apply after the pause", WAIT, || async {
        (case.sim.calls("ModifyInstanceVncPasswd") == 4).then_some(())
    })
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    case.wait("web", "InEffect", "True", None).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 4);
    // Once per token: the later reconciles (a new Secret version) said nothing more.
    assert_eq!(deprecated().await, 1);
    case.finish().await;
}

// --- Safe side effects: one test per finding, each failing on the controller before the planner ---

/// The controller's clock 5 minutes behind ECS's; the instance booted 2 minutes (ECS time) before
/// the password is applied. By the controller's clock that boot lies after the apply: it must not
/// count as the restart that puts the password in effect.
#[tokio::test]
async fn a_controller_clock_behind_ecs_reports_no_restart_that_did_not_happen() {
    let ecs = SharedClock::default();
    let case = case_with_skew("skewbehind", &ecs, -300).await;
    case.sim.add_instance("i-skewbehind001", false);
    case.sim.console_reboot("i-skewbehind001");
    ecs.advance(120);
    case.secret("web-vnc", "Skew12").await;
    case.vncpw("web", "i-skewbehind001", json!({})).await;
    let status = case
        .wait("web", "RebootRequired", "True", Some("RebootRequired"))
        .await;
    assert!(!status.is_true("InEffect"), "{:?}", status.conditions);
    assert!(
        status.applied.ecs_time.is_some(),
        "ECS's time of the apply is kept"
    );
    // Stays so: nothing restarted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!status_of(&case, "web").await.is_true("InEffect"));
    // A real restart in a later minute (ECS's clock) puts it in effect.
    ecs.advance(60);
    case.sim.console_reboot("i-skewbehind001");
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let offset = metric_value(&case, "ecs_vnc_clock_offset_seconds").await;
    assert!(offset.is_some(), "the measured offset is exported");
    case.finish().await;
}

/// The controller's clock 5 minutes ahead of ECS's, and the instance restarts before the
/// controller's first look after the apply (the look fails): ECS's own times still show the restart.
#[tokio::test]
async fn a_controller_clock_ahead_of_ecs_still_sees_a_restart_before_its_first_look() {
    let ecs = SharedClock::default();
    let case = case_with_skew("skewahead", &ecs, 300).await;
    case.sim.add_instance("i-skewahead0001", false);
    // Every DescribeInstances fails for a while: the first look after the apply cannot be made.
    case.sim
        .fail_next("DescribeInstances", "ServiceUnavailable", 503, 1000);
    case.secret("web-vnc", "Skew34").await;
    case.vncpw("web", "i-skewahead0001", json!({})).await;
    case.wait("web", "Reconciling", "True", Some("EcsUnavailable"))
        .await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    ecs.advance(60);
    case.sim.console_reboot("i-skewahead0001");
    case.sim.with_faults(|f| f.fail_next.clear());
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    assert!(status.instance.restart_observed_time.is_some());
    case.finish().await;
}

#[tokio::test]
async fn a_recreated_object_with_a_corrected_instance_is_applied_after_a_stall() {
    let case = Case::new("recreate", &[("i-recreate00001", true)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-wrongid000001", json!({})).await;
    case.wait("web", "Stalled", "True", Some("InstanceNotFound"))
        .await;
    let api: Api<VncPassword> = Api::namespaced(case.client.clone(), case.ns());
    api.delete("web", &Default::default())
        .await
        .expect("delete");
    eventually("the object to be gone", WAIT, || async {
        api.get_opt("web")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await;
    // Same name, generation 1 again, same Secret: only the instance differs.
    case.vncpw("web", "i-recreate00001", json!({})).await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(
        case.sim.set_password("i-recreate00001").as_deref(),
        Some("Ecs123")
    );
    case.finish().await;
}

#[tokio::test]
async fn a_stall_survives_a_controller_restart_without_another_ecs_call() {
    let mut case = Case::new("stallmemo", &[]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-nowhere000001", json!({})).await;
    case.wait("web", "Stalled", "True", Some("InstanceNotFound"))
        .await;
    let calls = case.sim.total_calls();
    assert_eq!(calls, 1);
    case.stop_controller().await;
    case.start_controller(true).await;
    // The new controller lists the object and reconciles it: the stall is in its status.
    eventually("the restarted controller to be ready", WAIT, || async {
        let addr = case.controller.as_ref()?.metrics_addr;
        let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.total_calls(), calls);
    case.finish().await;
}

#[tokio::test]
async fn facts_of_the_old_instance_are_never_used_after_an_instance_change() {
    let case = Case::new(
        "swap",
        &[("i-swapio0000001", true), ("i-swapslow00001", false)],
    )
    .await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-swapio0000001", json!({})).await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    // DescribeInstances is throttled right after the apply to the new instance.
    case.sim
        .fail_next("DescribeInstances", "Throttling.User", 400, 2);
    case.vncpw("web", "i-swapslow00001", json!({})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status_of(&case, "web").await;
        let generation2 = s.observed_generation == Some(2);
        if generation2 {
            assert!(
                !s.is_true("InEffect"),
                "in effect on facts about another instance: {:?}",
                s.conditions
            );
        }
        if generation2 && s.is_true("RebootRequired") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never RebootRequired: {:?}",
            s.conditions
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    case.finish().await;
}

#[tokio::test]
async fn losing_the_fingerprint_key_calls_ecs_for_nothing_that_is_unchanged() {
    let mut case = Case::new(
        "keyloss",
        &[("i-keyio00000001", true), ("i-keyauto000001", false)],
    )
    .await;
    // This test's controller keeps its key in the test namespace, not the shared one.
    let own = case.ns().to_string();
    case.stop_controller().await;
    case.controller_namespace = Some(own.clone());
    case.start_controller(true).await;
    case.secret("a-vnc", "Ecs123").await;
    case.secret("b-vnc", "Ecs456").await;
    case.vncpw("a", "i-keyio00000001", json!({})).await;
    case.vncpw("b", "i-keyauto000001", json!({"rebootPolicy": "Automatic"}))
        .await;
    case.wait("a", "InEffect", "True", None).await;
    case.wait("b", "InEffect", "True", None).await;
    assert_eq!(case.sim.successes("RebootInstance"), 1);
    let before = status_of(&case, "a").await.applied.fingerprint;
    let writes = |sim: &Sim| sim.calls("ModifyInstanceVncPasswd") + sim.calls("RebootInstance");
    let calls = writes(&case.sim);
    case.stop_controller().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(case.client.clone(), &own);
    secrets
        .delete(
            ecs_vnc_controller::controller::fingerprint::KEY_SECRET_NAME,
            &Default::default(),
        )
        .await
        .expect("delete the key Secret");
    case.start_controller(true).await;
    // Both objects are re-recorded under the new key.
    eventually("fingerprints under the new key", WAIT, || async {
        let a = status_of(&case, "a").await.applied.fingerprint;
        (a.is_some() && a != before).then_some(())
    })
    .await;
    case.wait("b", "InEffect", "True", None).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(&case.sim), calls, "ECS writes after a key change");
    assert!(status_of(&case, "a").await.is_true("InEffect"));
    case.finish().await;
}

#[tokio::test]
async fn a_same_minute_start_is_never_mistaken_and_the_automatic_reboot_is_seen() {
    let clock = SharedClock::default();
    // Put the shared clock at second 5 of a minute.
    let s = jiff::Timestamp::now().as_second();
    clock.advance(60 - s.rem_euclid(60) + 5);
    let mut case = Case::new("sameminute", &[]).await;
    case.sim.state().set_clock({
        let c = clock.clone();
        move || c.now()
    });
    case.sim.add_instance("i-sameminute001", false);
    // The instance (re)started a moment ago: StartTime is this minute.
    case.sim.console_reboot("i-sameminute001");
    case.stop_controller().await;
    case.clock = Some(clock.clock());
    case.start_controller(true).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw(
        "web",
        "i-sameminute001",
        json!({"rebootPolicy": "Automatic"}),
    )
    .await;
    // Applied within the instance's start minute: the reboot waits for a later minute.
    let status = case
        .wait("web", "RebootRequired", "True", Some("RebootRequired"))
        .await;
    let message = status
        .condition("RebootRequired")
        .map(|c| c.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("will be called after")),
        "{message:?}"
    );
    assert_eq!(case.sim.calls("RebootInstance"), 0);
    clock.advance(60);
    case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(case.sim.successes("RebootInstance"), 1);
    assert_eq!(
        case.sim.effective_password("i-sameminute001").as_deref(),
        Some("Ecs123")
    );
    case.finish().await;
}

#[tokio::test]
async fn a_credentials_secret_briefly_missing_leaves_applied_and_ready_alone() {
    let case = Case::new("credgap", &[("i-credgap000001", true)]).await;
    put_secret(
        &case.client,
        case.ns(),
        "creds",
        &[("accessKeyId", AK), ("accessKeySecret", AK_SECRET)],
    )
    .await;
    case.secret("web-vnc", "Ecs123").await;
    // The deprecated credentialsSecretRef (still accepted) names the credentials here, so one
    // test runs it end to end; the others use credentials.secretRef.
    case.vncpw(
        "web",
        "i-credgap000001",
        json!({"credentialsSecretRef": {"name": "creds"}}),
    )
    .await;
    case.wait("web", "InEffect", "True", None).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(case.client.clone(), case.ns());
    secrets
        .delete("creds", &Default::default())
        .await
        .expect("delete");
    // Watch the status through the gap: the watch event reaches the controller at once.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let s = status_of(&case, "web").await;
        assert!(
            s.is_true("InEffect") && s.is_true("Applied"),
            "{:?}",
            s.conditions
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put_secret(
        &case.client,
        case.ns(),
        "creds",
        &[("accessKeyId", AK), ("accessKeySecret", AK_SECRET)],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status_of(&case, "web").await.is_true("InEffect"));
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    case.finish().await;
}

#[tokio::test]
async fn an_operation_conflict_is_retried_and_ends_ready_with_nobody_acting() {
    let case = Case::new("conflict", &[("i-conflict00001", true)]).await;
    case.sim
        .fail_next("ModifyInstanceVncPasswd", "OperationConflict", 409, 1);
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-conflict00001", json!({})).await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(
        case.sim
            .calls_with_code("ModifyInstanceVncPasswd", "OperationConflict"),
        1
    );
    case.finish().await;
}

#[tokio::test]
async fn credentials_that_may_not_describe_say_describe_not_allowed() {
    let case = Case::new("nodescribe", &[("i-nodescribe001", false)]).await;
    case.sim
        .with_faults(|f| f.describe_denied_keys = vec![AK.to_string()]);
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-nodescribe001", json!({})).await;
    let status = case
        .wait("web", "Stalled", "True", Some("DescribeNotAllowed"))
        .await;
    let stalled = status.condition("Stalled").expect("Stalled");
    assert!(
        stalled.message.contains("ecs:DescribeInstances"),
        "{}",
        stalled.message
    );
    assert!(status.is_true("Applied"));
    case.finish().await;
}

#[tokio::test]
async fn a_stall_fixable_outside_kubernetes_is_checked_again() {
    let mut case = Case::new("recheck", &[]).await;
    case.stop_controller().await;
    case.flags = vec!["--stall-recheck-interval=2".into()];
    case.start_controller(true).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-latecomer0001", json!({})).await;
    case.wait("web", "Stalled", "True", Some("InstanceNotFound"))
        .await;
    // The instance is created a little later, outside Kubernetes.
    case.sim.add_instance("i-latecomer0001", true);
    case.wait("web", "Ready", "True", Some("Applied")).await;
    case.finish().await;
}

#[tokio::test]
async fn an_unknown_ecs_refusal_is_retried_slowly_not_stalled() {
    let case = Case::new("unknown", &[("i-unknown000001", true)]).await;
    // ECS keeps refusing: a watch event (the Secret's, say) may bring one early retry, and then the
    // slow backoff (150 s or more) holds.
    case.sim
        .fail_next("ModifyInstanceVncPasswd", "Brand.NewRefusal", 400, 10);
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-unknown000001", json!({})).await;
    let status = case
        .wait("web", "Reconciling", "True", Some("EcsUnknownError"))
        .await;
    assert!(!status.is_true("Stalled"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = case
        .sim
        .calls_with_code("ModifyInstanceVncPasswd", "Brand.NewRefusal");
    assert!(attempts <= 2, "{attempts} attempts within seconds");
    let message = status.condition("Ready").map(|c| c.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("Brand.NewRefusal")),
        "{message:?}"
    );
    case.finish().await;
}

// --- Declare it and forget it: generated passwords, rotation, reboot windows ----------------

#[tokio::test]
async fn a_generated_password_secret_is_created_once_and_never_overwritten() {
    let case = Case::new("generate", &[("i-generate00001", true)]).await;
    case.vncpw("web", "i-generate00001", json!({"generatePassword": true}))
        .await;
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    let secret = secret_of(&case, "web-vnc")
        .await
        .expect("the generated Secret");
    let password = password_in(&secret);
    assert!(
        password.len() == 6
            && password.bytes().any(|b| b.is_ascii_uppercase())
            && password.bytes().any(|b| b.is_ascii_lowercase())
            && password.bytes().any(|b| b.is_ascii_digit()),
        "a generated password breaks the rule"
    );
    assert_eq!(
        case.sim.set_password("i-generate00001"),
        Some(password.clone())
    );
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("ecs-vnc-controller")
    );
    // The deprecated generatePassword means secretDeletionPolicy: Retain: not owned (a delete of
    // the VncPassword leaves the live password), known as this VncPassword's by its uid.
    assert!(
        secret
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
    );
    assert_known_by_uid(&case, &secret, "web").await;
    assert!(status.rotation.next_time.is_none());
    eventually("the DeprecatedField Event", WAIT, || async {
        case.events()
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("DeprecatedField")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref().is_some_and(|n| {
                        n.contains("spec.generatePassword") && n.contains("spec.passwordGeneration")
                    })
            })
            .then_some(())
    })
    .await;
    // A re-apply asked for by annotation uses the same Secret: nothing regenerated.
    Api::<VncPassword>::namespaced(case.client.clone(), case.ns())
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"ecsvnc.io/force-apply-requested-at": "again"}}}),
            ),
        )
        .await
        .expect("annotate");
    eventually("the re-apply", WAIT, || async {
        (case.sim.calls("ModifyInstanceVncPasswd") == 2).then_some(())
    })
    .await;
    let after = secret_of(&case, "web-vnc").await.expect("Secret");
    assert_eq!(
        after.metadata.resource_version,
        secret.metadata.resource_version
    );
    assert_eq!(case.sim.set_password("i-generate00001"), Some(password));
    case.finish().await;
}

/// `passwordGeneration.secretDeletionPolicy`: `Delete` owns the Secret (it goes with the
/// VncPassword), `Retain` does not; a change of policy is applied to the existing Secret without
/// any ECS call; deleting a `Retain` VncPassword leaves its Secret.
/// The Secret's `ecsvnc.io/owner-uid` is the uid of VncPassword `name` as it is now.
async fn assert_known_by_uid(case: &Case, secret: &k8s_openapi::api::core::v1::Secret, name: &str) {
    let uid = Api::<VncPassword>::namespaced(case.client.clone(), case.ns())
        .get(name)
        .await
        .expect("get")
        .metadata
        .uid;
    assert_eq!(
        secret
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get("ecsvnc.io/owner-uid"),
        uid.as_ref()
    );
}

/// Deletes VncPassword `name` and waits until the API server no longer has it.
async fn delete_and_wait(case: &Case, name: &str) {
    let api = Api::<VncPassword>::namespaced(case.client.clone(), case.ns());
    api.delete(name, &Default::default()).await.expect("delete");
    eventually("the VncPassword gone", WAIT, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_secret_deletion_policy_decides_who_owns_the_generated_secret() {
    let case = Case::new("ownership", &[("i-ownership0001", true)]).await;
    case.vncpw(
        "web",
        "i-ownership0001",
        json!({"passwordGeneration": {"secretDeletionPolicy": "Delete"}}),
    )
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let owned = |s: &k8s_openapi::api::core::v1::Secret| {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "VncPassword" && o.controller == Some(true))
    };
    let secret = secret_of(&case, "web-vnc").await.expect("Secret");
    assert!(owned(&secret), "Delete: owned by the VncPassword");
    let password = password_in(&secret);
    // To Retain: the ownerReference goes, the password stays, ECS is not called again.
    case.vncpw(
        "web",
        "i-ownership0001",
        json!({"passwordGeneration": {"secretDeletionPolicy": "Retain"}}),
    )
    .await;
    eventually("the ownerReference removed", WAIT, || async {
        let s = secret_of(&case, "web-vnc").await?;
        (!owned(&s)).then_some(())
    })
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let secret = secret_of(&case, "web-vnc").await.expect("Secret");
    assert_eq!(password_in(&secret), password);
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    // Deleting the VncPassword leaves the Secret (and the password in effect readable).
    delete_and_wait(&case, "web").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(secret_of(&case, "web-vnc").await.is_some());
    // A new VncPassword of that name for another instance does not take the old Secret for its
    // own: a password is never reused for another instance.
    case.sim.add_instance("i-ownership0002", true);
    case.vncpw("web", "i-ownership0002", json!({"passwordGeneration": {}}))
        .await;
    case.wait("web", "Stalled", "True", Some("SecretNotOwned"))
        .await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    assert_eq!(case.sim.set_password("i-ownership0002"), None);
    delete_and_wait(&case, "web").await;
    // Re-created for the same instance (a `kubectl delete -k` and apply): the kept Secret is
    // adopted, its password kept and applied again; nothing stalls.
    case.vncpw("web", "i-ownership0001", json!({"passwordGeneration": {}}))
        .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let secret = secret_of(&case, "web-vnc").await.expect("Secret");
    assert_eq!(
        password_in(&secret),
        password,
        "the kept password is the one in effect"
    );
    assert_eq!(
        case.sim.set_password("i-ownership0001").as_deref(),
        Some(password.as_str())
    );
    assert_known_by_uid(&case, &secret, "web").await;
    case.finish().await;
}

#[tokio::test]
async fn a_secret_the_controller_did_not_create_is_left_alone() {
    let case = Case::new("notours", &[("i-notours000001", true)]).await;
    case.secret("web-vnc", "User12").await;
    let before = secret_of(&case, "web-vnc").await.expect("Secret");
    case.vncpw("web", "i-notours000001", json!({"passwordGeneration": {}}))
        .await;
    let status = case
        .wait("web", "Stalled", "True", Some("SecretNotOwned"))
        .await;
    assert!(
        status
            .condition("Stalled")
            .is_some_and(|c| c.message.contains("not created by this VncPassword"))
    );
    let after = secret_of(&case, "web-vnc").await.expect("Secret");
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(case.sim.total_calls(), 0);
    case.finish().await;
}

#[tokio::test]
async fn rotation_applies_once_after_the_interval_and_survives_restarts() {
    let clock = SharedClock::default();
    let mut case = case_on_clock("rotate", &[("i-rotation00001", true)], &clock).await;
    case.vncpw(
        "web",
        "i-rotation00001",
        json!({"passwordGeneration": {"rotationInterval": "1h"}}),
    )
    .await;
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    assert!(status.rotation.next_time.is_some());
    let first = password_in(&secret_of(&case, "web-vnc").await.expect("Secret"));
    // The controller is down when the rotation falls due; the next one rotates once.
    case.stop_controller().await;
    clock.advance(3600 + 60);
    case.start_controller(true).await;
    eventually("the rotated password to reach ECS", WAIT, || async {
        let now = password_in(&secret_of(&case, "web-vnc").await?);
        (now != first && case.sim.set_password("i-rotation00001") == Some(now)).then_some(())
    })
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    // Another restart before the next rotation: nothing.
    case.stop_controller().await;
    case.start_controller(true).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    case.finish().await;
}

#[tokio::test]
async fn an_automatic_reboot_waits_for_its_window_and_happens_once_inside_it() {
    automatic_reboot_in_a_window(0).await;
}

/// The same a year from now on the controller's clock (ECS keeps today's): no test instant is a
/// calendar date, and the controller never needs its clock to agree with ECS's.
#[tokio::test]
async fn the_window_test_passes_with_the_controller_clock_a_year_ahead() {
    automatic_reboot_in_a_window(365).await;
}

/// The controller's clock is put on the first Saturday 12:00 UTC at least a day after today plus
/// `days_ahead`; the window opens the next Sunday 02:00 UTC for 2 h.
async fn automatic_reboot_in_a_window(days_ahead: i64) {
    let clock = SharedClock::default();
    let now = jiff::Timestamp::now();
    let target = support::time::next_saturday_noon_utc(
        now + jiff::SignedDuration::from_hours(24 * days_ahead),
    );
    clock.advance(target.as_second() - now.as_second());
    let opens = target + jiff::SignedDuration::from_hours(14);
    let prefix = if days_ahead == 0 {
        "window"
    } else {
        "windowyear"
    };
    let case = case_on_clock(prefix, &[("i-window0000001", false)], &clock).await;
    case.secret("web-vnc", "Win123").await;
    case.vncpw(
        "web",
        "i-window0000001",
        json!({"rebootPolicy": "Automatic",
               "rebootWindows": [{"schedule": "0 2 * * SUN", "duration": "2h", "timeZone": "UTC"}]}),
    )
    .await;
    let status = case
        .wait("web", "RebootRequired", "True", Some("RebootRequired"))
        .await;
    assert_eq!(
        status.reboot.next_window.as_deref(),
        Some(opens.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().as_str())
    );
    assert!(
        status
            .condition("Ready")
            .is_some_and(|c| c.message.contains("reboot window"))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("RebootInstance"), 0);
    // Into the window.
    clock.advance(14 * 3600 + 600);
    let status = case.wait("web", "Ready", "True", Some("Applied")).await;
    assert!(status.reboot.next_window.is_none());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.successes("RebootInstance"), 1);
    case.finish().await;
}

#[tokio::test]
async fn two_objects_naming_one_instance_never_take_turns() {
    let case = Case::new("claim", &[("i-claimed000001", true)]).await;
    case.secret("first-vnc", "First1").await;
    case.secret("second-vnc", "Secnd2").await;
    case.vncpw("first", "i-claimed000001", json!({})).await;
    case.wait("first", "InEffect", "True", None).await;
    case.vncpw("second", "i-claimed000001", json!({})).await;
    let status = case
        .wait("second", "Stalled", "True", Some("InstanceClaimed"))
        .await;
    assert!(
        status
            .condition("Stalled")
            .is_some_and(|c| c.message.contains("VncPassword first")),
        "{:?}",
        status.conditions
    );
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 1);
    assert_eq!(
        case.sim.set_password("i-claimed000001").as_deref(),
        Some("First1")
    );
    // The owner goes: the other takes over.
    Api::<VncPassword>::namespaced(case.client.clone(), case.ns())
        .delete("first", &Default::default())
        .await
        .expect("delete");
    case.wait("second", "InEffect", "True", None).await;
    assert_eq!(
        case.sim.set_password("i-claimed000001").as_deref(),
        Some("Secnd2")
    );
    case.finish().await;
}

#[tokio::test]
async fn a_password_ecs_refuses_beyond_the_local_rule_says_what_ecs_may_want() {
    let case = Case::new("allkinds", &[("i-allkinds00001", true)]).await;
    case.sim
        .with_faults(|f| f.password_requires_all_kinds = true);
    case.secret("web-vnc", "abcdef").await;
    case.vncpw("web", "i-allkinds00001", json!({})).await;
    let status = case
        .wait("web", "Stalled", "True", Some("InvalidPassword"))
        .await;
    let message = status
        .condition("Stalled")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("one upper-case letter, one lower-case letter and one digit"),
        "{message}"
    );
    case.secret("web-vnc", "Abcde1").await;
    case.wait("web", "InEffect", "True", None).await;
    case.finish().await;
}

#[tokio::test]
async fn the_suite_wide_leak_check_finds_a_password_in_an_event() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "leakcheck").await;
    put_secret(&client, &ns.name, "x-vnc", &[("password", "Lk9x7Q")]).await;
    // Clean: the check passes.
    support::leaks::assert_no_leak(&client, &ns.name).await;
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "leaky"},
        "involvedObject": {"kind": "Secret", "name": "x-vnc", "namespace": ns.name},
        "reason": "Oops", "message": "the password is Lk9x7Q", "type": "Normal"
    }))
    .unwrap();
    Api::<CoreEvent>::namespaced(client.clone(), &ns.name)
        .create(&Default::default(), &event)
        .await
        .expect("create event");
    let (check_client, name) = (client.clone(), ns.name.clone());
    let check =
        tokio::spawn(async move { support::leaks::assert_no_leak(&check_client, &name).await })
            .await;
    let panic = check.expect_err("the leak is found");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(message.contains("Event leaky"), "{message}");
    assert!(
        !message.contains("Lk9x7Q"),
        "the check never prints the secret"
    );
    let _ = Api::<CoreEvent>::namespaced(client.clone(), &ns.name)
        .delete("leaky", &Default::default())
        .await;
    ns.delete().await;
}

/// A test that moves a clock derives every instant from the time it runs, never from a calendar
/// date: a fixed date that a clock offset, a schedule or an expiry is computed from makes the
/// suite fail once that date has passed (as `2026-12-05T12:00:00Z` once did here). The rule, checked
/// over every test file that moves a clock: no RFC 3339 date literal in it.
#[test]
fn no_test_that_moves_a_clock_names_a_calendar_date() {
    let dir = support::repo_root().join("tests");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let moves_a_clock = ["set_clock(", ".advance(", "SharedClock"]
            .iter()
            .any(|needle| text.contains(needle));
        if !moves_a_clock {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let bytes = line.as_bytes();
            let dated = bytes.windows(14).any(|w| {
                w[0] == b'"'
                    && w[1..5].iter().all(u8::is_ascii_digit)
                    && w[5] == b'-'
                    && w[6..8].iter().all(u8::is_ascii_digit)
                    && w[8] == b'-'
                    && w[9..11].iter().all(u8::is_ascii_digit)
                    && w[11] == b'T'
                    && w[12..14].iter().all(u8::is_ascii_digit)
            });
            if dated {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "derive instants from now (tests/support/time.rs), not from a date:\n{}",
        offenders.join("\n")
    );
}

/// A look at the instance from before an apply never judges that apply: the instance shows
/// Stopped, then Running again without a restart; the password is rotated; the first look after the
/// apply fails. The cached "Stopped" answer, taken before the apply, must not count as "left running
/// after the apply", or the next "Running" would be taken for the restart that puts the new
/// password in effect.
#[tokio::test]
async fn an_answer_from_before_the_apply_never_counts_as_a_restart_after_it() {
    let mut case = Case::new("factsafter", &[("i-factsafter001", false)]).await;
    case.stop_controller().await;
    // Half a poll interval (what a cached answer may be old) longer than the backoff after a
    // failed look.
    case.flags = vec!["--reboot-poll-interval=20".into()];
    case.start_controller(true).await;
    let id = "i-factsafter001";
    case.secret("web-vnc", "First1").await;
    case.vncpw("web", id, json!({})).await;
    case.wait("web", "RebootRequired", "True", None).await;
    // The controller's next look must come from ECS, not from the answer it already has.
    tokio::time::sleep(Duration::from_secs(11)).await;
    case.sim.set_status(id, "Stopped");
    case.annotate("web", "ecsvnc.io/paused", Some("true")).await;
    case.wait("web", "Ready", "True", Some("Paused")).await;
    case.annotate("web", "ecsvnc.io/paused", None).await;
    let stopped = eventually("the look at the Stopped instance", WAIT, || async {
        let s = status_of(&case, "web").await;
        (s.instance.status.as_deref() == Some("Stopped")).then_some(s)
    })
    .await;
    assert!(stopped.instance.restart_observed_time.is_none());
    // Running again, never restarted; a new password; the first look after its apply fails.
    case.sim.set_status(id, "Running");
    case.sim
        .fail_next("DescribeInstances", "ServiceUnavailable", 503, 3);
    case.secret("web-vnc", "Second").await;
    eventually("the new password at ECS", WAIT, || async {
        (case.sim.set_password(id).as_deref() == Some("Second")).then_some(())
    })
    .await;
    // Past the next poll: never Ready, since nothing restarted.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < until {
        let s = status_of(&case, "web").await;
        assert!(
            !s.is_true("InEffect"),
            "in effect with the new password not in effect: {:?}",
            s.conditions
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(case.sim.effective_password(id).as_deref(), Some("Second"));
    case.finish().await;
}

/// An object nothing wakes is looked at again every resync interval (a safety net for a lost
/// event), and a look at an unchanged object asks nothing of the API server or ECS.
#[tokio::test]
async fn settled_objects_are_resynced_without_any_api_or_ecs_call() {
    let mut case = Case::new("resync", &[("i-resync0000001", true)]).await;
    case.stop_controller().await;
    let (client, requests) = support::recording_client().await;
    case.controller_client = Some(client);
    case.flags = vec!["--resync-interval=1".into()];
    case.start_controller(true).await;
    case.secret("web-vnc", "Sync12").await;
    case.vncpw("web", "i-resync0000001", json!({})).await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let calls = case.sim.total_calls();
    let addr = case.controller.as_ref().expect("controller").metrics_addr;
    let unchanged = || async move {
        let m = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.lines()
            .find_map(|l| l.strip_prefix("ecs_vnc_reconciles_total{result=\"unchanged\"} "))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let before = unchanged().await.unwrap_or(0.0);
    requests.lock().unwrap().clear();
    eventually("three resyncs of the settled object", WAIT, || async {
        (unchanged().await.unwrap_or(0.0) >= before + 3.0).then_some(())
    })
    .await;
    assert_eq!(
        case.sim.total_calls(),
        calls,
        "no ECS call for an unchanged object"
    );
    let ns = case.ns().to_string();
    let per_object: Vec<String> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains(&format!("/namespaces/{ns}/")))
        .cloned()
        .collect();
    assert!(
        per_object.is_empty(),
        "requests for a resync: {per_object:?}"
    );
    case.finish().await;
}

/// Reboots come in herds. With RebootInstance limited to 1 call a second and reconciles cut after
/// 10 s, thirty objects due together each get exactly one reboot and none is left announced and
/// unsent: a slot is reserved before the intent is written, an object whose slot is too far off
/// writes no intent and comes back when it frees, and a recorded intent is never cut off.
#[tokio::test]
async fn a_herd_of_reboots_under_a_tight_limit_ends_in_exactly_one_reboot_each() {
    const N: usize = 30;
    let ids: Vec<String> = (0..N).map(|i| format!("i-herd{i:010}")).collect();
    let instances: Vec<(&str, bool)> = ids.iter().map(|i| (i.as_str(), false)).collect();
    let mut case = Case::new("herd", &instances).await;
    // ECS's clock, moved on so that the later-minute rule lets the reboots go at once.
    let ecs = SharedClock::default();
    case.sim.state().set_clock({
        let c = ecs.clone();
        move || c.now()
    });
    case.stop_controller().await;
    case.flags = vec![
        "--ecs-qps=200,RebootInstance=1".into(),
        "--ecs-burst=1".into(),
        "--reconcile-timeout=10".into(),
        "--reboot-timeout=600".into(),
    ];
    case.start_controller(true).await;
    for (i, id) in ids.iter().enumerate() {
        case.secret(&format!("web-{i}-vnc"), "Herd12").await;
        case.vncpw(
            &format!("web-{i}"),
            id,
            json!({"rebootPolicy": "Automatic"}),
        )
        .await;
    }
    for i in 0..N {
        case.wait(&format!("web-{i}"), "RebootRequired", "True", None)
            .await;
    }
    ecs.advance(120);
    for i in 0..N {
        wait_condition(
            &case.client,
            case.ns(),
            &format!("web-{i}"),
            "Ready",
            "True",
            Some("Applied"),
            Duration::from_secs(180),
        )
        .await;
    }
    for id in &ids {
        assert_eq!(case.sim.reboot_count(id), 1, "{id}");
    }
    assert_eq!(case.sim.successes("RebootInstance"), N);
    case.finish().await;
}

/// After a burst of throttled DescribeInstances answers, the controller follows ECS back within
/// seconds: the bucket's own pause, not the client's retries, a halved rate and a per-object
/// backoff on top of each other.
#[tokio::test]
async fn after_throttling_ends_the_controller_follows_ecs_back_within_seconds() {
    let case = Case::new("throttleback", &[("i-throttleback1", false)]).await;
    let ecs = SharedClock::default();
    case.sim.state().set_clock({
        let c = ecs.clone();
        move || c.now()
    });
    case.secret("web-vnc", "Thro12").await;
    case.vncpw("web", "i-throttleback1", json!({})).await;
    case.wait("web", "RebootRequired", "True", None).await;
    case.sim
        .fail_next("DescribeInstances", "Throttling.User", 400, 12);
    eventually("the throttling to be used up", WAIT, || async {
        (case
            .sim
            .calls_with_code("DescribeInstances", "Throttling.User")
            >= 12)
            .then_some(())
    })
    .await;
    // ECS answers again; the instance restarts (in a later minute): seen at the next poll, not
    // minutes later.
    ecs.advance(60);
    case.sim.console_reboot("i-throttleback1");
    wait_condition(
        &case.client,
        case.ns(),
        "web",
        "Ready",
        "True",
        Some("Applied"),
        Duration::from_secs(20),
    )
    .await;
    case.finish().await;
}

/// An upgrade from the version with the flat status: a status written by it (through the API
/// server, by the controller's field manager, as it wrote it) is kept by the new CRD's schema,
/// read by the new controller, which makes no ECS write and no reboot for it, and replaced by the
/// grouped status at its first write.
#[tokio::test]
async fn a_status_in_the_previous_flat_shape_is_read_after_the_upgrade_without_any_ecs_write() {
    let mut case = Case::new("upgrade", &[("i-upgrade000001", false)]).await;
    case.secret("web-vnc", "Ecs123").await;
    case.vncpw("web", "i-upgrade000001", json!({"rebootPolicy": "Manual"}))
        .await;
    case.wait("web", "RebootRequired", "True", None).await;
    case.sim.console_reboot("i-upgrade000001");
    let grouped = case
        .wait("web", "InEffect", "True", Some("Restarted"))
        .await;
    case.stop_controller().await;
    // The same facts as the previous version wrote them.
    let since = jiff::Timestamp::now().to_string();
    let old = json!({
        "observedGeneration": grouped.observed_generation,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Applied", "message": "the password is in effect: instance i-upgrade000001 restarted after it was applied", "lastTransitionTime": since},
            {"type": "Applied", "status": "True", "reason": "Applied", "message": "ECS accepted the Secret's current password", "lastTransitionTime": since},
            {"type": "RebootRequired", "status": "False", "reason": "Restarted", "message": "the password is in effect: instance i-upgrade000001 restarted after it was applied", "lastTransitionTime": since},
            {"type": "Reconciling", "status": "False", "reason": "Applied", "message": "", "lastTransitionTime": since},
            {"type": "Stalled", "status": "False", "reason": "AsExpected", "message": "", "lastTransitionTime": since},
        ],
        "ioOptimized": false,
        "instanceStatus": "Running",
        "describedInstance": grouped.instance.key,
        "lastAppliedTime": grouped.applied.time,
        "lastAppliedEcsTime": grouped.applied.ecs_time,
        "lastRequestId": grouped.applied.request_id,
        "appliedPasswordFingerprint": grouped.applied.fingerprint,
        "appliedInstance": grouped.applied.instance,
        "accessProof": grouped.applied.access_proof,
        "appliedSecret": grouped.applied.secret,
        // The previous version kept ECS's minute-precision StartTime as it came.
        "startTimeAtApply": grouped.instance.start_time_at_apply.as_deref().map(|t| t.replace(":00Z", "Z")),
        "restartObservedTime": grouped.instance.restart_observed_time,
    });
    let api = Api::<VncPassword>::namespaced(case.client.clone(), case.ns());
    let uid = api.get("web").await.expect("get").metadata.uid;
    api.patch_status(
        "web",
        &PatchParams::apply(ecs_vnc_controller::api::FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"name": "web", "uid": uid}, "status": old,
        })),
    )
    .await
    .expect("write the old status");
    let raw = |client: kube::Client, ns: String| async move {
        let request = axum::http::Request::get(format!(
            "/apis/ecsvnc.io/v1alpha1/namespaces/{ns}/vncpasswords/web"
        ))
        .body(Vec::new())
        .expect("request");
        let text = client.request_text(request).await.expect("read");
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["status"].clone()
    };
    // Stored as written: the schema keeps the flat fields (nothing pruned), and the grouped
    // ones the same manager wrote before are gone.
    let stored = raw(case.client.clone(), case.ns().to_string()).await;
    assert_eq!(
        stored["appliedPasswordFingerprint"],
        json!(grouped.applied.fingerprint)
    );
    assert_eq!(stored["appliedSecret"], json!(grouped.applied.secret));
    assert!(stored.get("applied").is_none(), "{stored}");
    let writes_before = (
        case.sim.calls("ModifyInstanceVncPasswd"),
        case.sim.calls("RebootInstance"),
    );
    case.start_controller(true).await;
    eventually(
        "the status rewritten in the grouped shape",
        WAIT,
        || async {
            let s = raw(case.client.clone(), case.ns().to_string()).await;
            (s.get("applied").is_some() && s.get("appliedPasswordFingerprint").is_none())
                .then_some(s)
        },
    )
    .await;
    let now = case
        .wait("web", "InEffect", "True", Some("Restarted"))
        .await;
    assert_eq!(now.applied.fingerprint, grouped.applied.fingerprint);
    assert_eq!(now.applied.secret, grouped.applied.secret);
    assert_eq!(
        now.instance.start_time_at_apply,
        grouped.instance.start_time_at_apply
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (
            case.sim.calls("ModifyInstanceVncPasswd"),
            case.sim.calls("RebootInstance")
        ),
        writes_before,
        "the upgrade made an ECS write"
    );
    case.finish().await;
}
