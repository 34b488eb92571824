//! Faults injected into the controller itself (the `failpoints` feature, which only tests enable:
//! `cargo test --features failpoints`), and the API server behaviour the at-most-once reboot rests
//! on. Real kube-apiserver, in-process controller and ECS simulator.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use support::controller::*;
use support::sim::Sim;
use support::{TestNamespace, eventually};

const AK: &str = "LTAI5tFaultKeyId";
const AK_SECRET: &str = "FaultKeySecretValue012345";
/// An Automatic reboot waits for a later minute than the apply (up to 60 s).
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_status_write_refused_right_after_a_reboot_never_leads_to_a_second_reboot() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "failpoint").await;
    let sim = Sim::start(&[("i-failpoint0001", false)], &[(AK, AK_SECRET, None)]).await;
    // Every status write that follows a RebootInstance in the same reconcile is refused.
    let scenario = fail::FailScenario::setup();
    fail::cfg("status-write-after-reboot", "return").expect("failpoint");
    let controller = start_controller(ControllerOptions {
        namespace: Some(ns.name.clone()),
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: ns.name.clone(),
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    put_secret(&client, &ns.name, "web-vnc", &[("password", "Fail12")]).await;
    put_vncpassword(
        &client,
        &ns.name,
        "web",
        json!({
            "regionId": "cn-hangzhou", "instanceId": "i-failpoint0001",
            "passwordSecretRef": {"name": "web-vnc"}, "rebootPolicy": "Automatic",
        }),
    )
    .await;
    eventually("RebootInstance", WAIT, || async {
        (sim.successes("RebootInstance") >= 1).then_some(())
    })
    .await;
    // The write after the call failed; the retries that follow find the intent in the status.
    wait_ready(&client, &ns.name, "web", WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.successes("RebootInstance"), 1);
    assert_eq!(sim.reboot_count("i-failpoint0001"), 1);
    assert_eq!(
        sim.effective_password("i-failpoint0001").as_deref(),
        Some("Fail12")
    );
    scenario.teardown();
    controller.stop().await;
    ns.delete().await;
}

#[tokio::test]
async fn a_status_apply_with_a_stale_resource_version_is_refused() {
    // The reboot intent is written by server-side apply with metadata.resourceVersion: the API
    // server must refuse it when the object changed since it was read.
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "precondition").await;
    put_vncpassword(
        &client,
        &ns.name,
        "web",
        json!({"regionId": "cn-hangzhou", "instanceId": "i-precond000001", "passwordSecretRef": {"name": "x"}}),
    )
    .await;
    let api: Api<VncPassword> = Api::namespaced(client.clone(), &ns.name);
    let read = api.get("web").await.expect("get");
    let stale = read.metadata.resource_version.clone().expect("rv");
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}})),
    )
    .await
    .expect("touch");
    let apply = |rv: &str| {
        json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"name": "web", "resourceVersion": rv},
            "status": {"rebootRequestedTime": "2026-01-01T00:00:00Z"},
        })
    };
    let params = PatchParams::apply("ecs-vnc-controller").force();
    match api
        .patch_status("web", &params, &Patch::Apply(&apply(&stale)))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale resourceVersion was accepted: {other:?}"),
    }
    let fresh = api
        .get("web")
        .await
        .expect("get")
        .metadata
        .resource_version
        .expect("rv");
    api.patch_status("web", &params, &Patch::Apply(&apply(&fresh)))
        .await
        .expect("the current resourceVersion is accepted");
    ns.delete().await;
}

/// A reconcile that panics (a bug) ends that reconcile only: the process goes on, other objects
/// are served, the metric counts it, and the object says `Stalled`, reason `InternalError`, until a
/// retry succeeds.
#[tokio::test]
async fn a_panic_in_one_reconcile_stops_neither_the_process_nor_other_objects() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "panic").await;
    let sim = Sim::start(
        &[("i-panicboom0001", true), ("i-panicfine0001", true)],
        &[(AK, AK_SECRET, None)],
    )
    .await;
    let scenario = fail::FailScenario::setup();
    fail::cfg("reconcile-panic", "return(boom)").expect("failpoint");
    let controller = start_controller(ControllerOptions {
        namespace: Some(ns.name.clone()),
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: ns.name.clone(),
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    for (name, instance, password) in [
        ("boom", "i-panicboom0001", "Boom12"),
        ("fine", "i-panicfine0001", "Fine12"),
    ] {
        put_secret(
            &client,
            &ns.name,
            &format!("{name}-vnc"),
            &[("password", password)],
        )
        .await;
        put_vncpassword(
            &client,
            &ns.name,
            name,
            json!({"regionId": "cn-hangzhou", "instanceId": instance,
                   "passwordSecretRef": {"name": format!("{name}-vnc")}}),
        )
        .await;
    }
    wait_ready(&client, &ns.name, "fine", WAIT).await;
    wait_condition(
        &client,
        &ns.name,
        "boom",
        "Stalled",
        "True",
        Some("InternalError"),
        WAIT,
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", controller.metrics_addr))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let panics = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ecs_vnc_reconcile_panics_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(
        panics >= 1.0,
        "ecs_vnc_reconcile_panics_total in\n{metrics}"
    );
    // The bug is gone (an upgrade): the next retry applies it.
    fail::remove("reconcile-panic");
    wait_ready(&client, &ns.name, "boom", WAIT).await;
    assert_eq!(
        sim.set_password("i-panicboom0001").as_deref(),
        Some("Boom12")
    );
    scenario.teardown();
    controller.stop().await;
    ns.delete().await;
}
