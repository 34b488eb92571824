//! One controller, many tenants: nothing one namespace writes stops the controller, borrows another
//! namespace's power or instances, or locks another team out. Real kube-apiserver, in-process
//! controller, ECS simulator.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use support::TestNamespace;
use support::case::*;

/// A spec the API server refuses, and the message it gives.
async fn refused(client: &kube::Client, ns: &str, name: &str, spec: serde_json::Value) -> String {
    let object: VncPassword = serde_json::from_value(json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("object");
    Api::<VncPassword>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect_err(name)
        .to_string()
}

/// Values that once crashed the controller (a window of 110,000,000 hours overflowed the time
/// arithmetic) are refused at admission with the field named; the same values stored before these
/// rules existed become `Stalled/InvalidSpec` in the planner (its property test).
#[tokio::test]
async fn the_api_server_refuses_specs_that_would_overflow_or_flood_the_planner() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hostilespec").await;
    let base = || {
        json!({"regionId": "cn-hangzhou", "instanceId": "i-hostile000001",
               "passwordSecretRef": {"name": "pw"}, "rebootPolicy": "Automatic"})
    };
    let window = |duration: &str| json!({"schedule": "0 2 * * SUN", "duration": duration});
    let mut huge = base();
    huge["rebootWindows"] = json!([window("110000000h")]);
    let message = refused(&client, &ns.name, "huge", huge).await;
    assert!(message.contains("at most 168h"), "{message}");
    let mut many = base();
    many["rebootWindows"] = json!((0..11).map(|_| window("1h")).collect::<Vec<_>>());
    let message = refused(&client, &ns.name, "many", many).await;
    assert!(
        message.contains("rebootWindows") && message.contains("10"),
        "{message}"
    );
    let mut zero = base();
    zero["rebootWindows"] = json!([window("0s")]);
    let message = refused(&client, &ns.name, "zero", zero).await;
    assert!(message.contains("longer than 0s"), "{message}");
    let mut rotation = base();
    rotation["generatePassword"] = json!(true);
    rotation["rotationInterval"] = json!("9000h");
    let message = refused(&client, &ns.name, "rotation", rotation).await;
    assert!(message.contains("8784h"), "{message}");
    let mut long = base();
    long["rebootWindows"] =
        json!([{"schedule": "0 2 * * SUN", "duration": "1h", "timeZone": "x".repeat(65)}]);
    let message = refused(&client, &ns.name, "longzone", long).await;
    assert!(message.contains("timeZone"), "{message}");
    ns.delete().await;
}

/// The widest values the API server accepts are served like any other spec, and a namespace full
/// of them does not stop another namespace's object from being applied.
#[tokio::test]
async fn extreme_but_valid_specs_never_stop_the_controller() {
    let case = Case::new(
        "extremes",
        &[("i-extremeok0001", true), ("i-extremes00001", false)],
    )
    .await;
    case.secret("fine-vnc", "Fine12").await;
    case.secret("odd-vnc", "Odd123").await;
    case.vncpw(
        "odd",
        "i-extremes00001",
        json!({"rebootPolicy": "Automatic",
               "rebootWindows": (0..10).map(|i| json!({
                   "schedule": if i % 2 == 0 { "0 0 29 2 *" } else { "59 23 31 12 *" },
                   "duration": "168h", "timeZone": "Pacific/Kiritimati"})).collect::<Vec<_>>()}),
    )
    .await;
    case.vncpw("fine", "i-extremeok0001", json!({})).await;
    case.wait("fine", "Ready", "True", Some("Applied")).await;
    // Applied, and waiting for a window (or, inside one, rebooted): never stalled, never stuck.
    let odd = support::eventually("odd to be applied", WAIT, || async {
        let s = status_of(&case, "odd").await;
        s.is_true("Applied").then_some(s)
    })
    .await;
    assert!(!odd.is_true("Stalled"), "{:?}", odd.conditions);
    case.finish().await;
}

/// An operator answering a leaked password sets `ecsvnc.io/rotate-requested-at`: a new password is
/// generated and applied at once, once per token.
#[tokio::test]
async fn the_rotate_annotation_rotates_now_once_per_token() {
    let case = Case::new("rotatenow", &[("i-rotatenow0001", true)]).await;
    case.vncpw("web", "i-rotatenow0001", json!({"generatePassword": true}))
        .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let first = password_in(&secret_of(&case, "web-vnc").await.expect("Secret"));
    let annotate = |token: &'static str| {
        let (client, ns) = (case.client.clone(), case.ns().to_string());
        async move {
            Api::<VncPassword>::namespaced(client, &ns)
                .patch(
                    "web",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                        "ecsvnc.io/rotate-requested-at": token}}})),
                )
                .await
                .expect("annotate");
        }
    };
    annotate("leak-1").await;
    let second = support::eventually(
        "the rotated password to reach ECS",
        Duration::from_secs(20),
        || async {
            let now = password_in(&secret_of(&case, "web-vnc").await?);
            (now != first
                && case.sim.set_password("i-rotatenow0001").as_deref() == Some(now.as_str()))
            .then_some(now)
        },
    )
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    // The same token again (a re-apply of the same manifest): nothing.
    annotate("leak-1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    assert_eq!(
        password_in(&secret_of(&case, "web-vnc").await.expect("Secret")),
        second
    );
    case.finish().await;
}
