//! Tenants against each other, with one controller serving every namespace, as deployed: claims on
//! instances follow proven access, and what one namespace may learn of another. Each test runs a
//! cluster-wide controller, so the tests of this file take turns (`SERIAL`).

mod support;

use std::time::Duration;

use serde_json::json;

use support::controller::*;
use support::sim::Sim;
use support::{TestNamespace, eventually};

const AK: &str = "LTAI5tTenancyKey";
const AK_SECRET: &str = "TenancyKeySecretValue0123";
const WAIT: Duration = Duration::from_secs(90);

/// One cluster-wide controller at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn creds_secret(client: &kube::Client, ns: &str, id: &str, secret: &str) {
    put_secret(
        client,
        ns,
        "creds",
        &[("accessKeyId", id), ("accessKeySecret", secret)],
    )
    .await;
}

async fn vncpw(client: &kube::Client, ns: &str, name: &str, instance: &str, password: &str) {
    put_secret(
        client,
        ns,
        &format!("{name}-vnc"),
        &[("password", password)],
    )
    .await;
    put_vncpassword(
        client,
        ns,
        name,
        json!({"regionId": "cn-hangzhou", "instanceId": instance,
               "passwordSecretRef": {"name": format!("{name}-vnc")},
               "credentials": {"secretRef": {"name": "creds"}}}),
    )
    .await;
}

/// A tenant that knows another team's instance ID (node providerIDs and console URLs show them)
/// creates a VncPassword for it first, with credentials that cannot reach it. It claims nothing:
/// the owner's object, created later with working credentials, is applied and Ready; the squatter
/// is refused by ECS on its own credentials and never learns the owner's object's name.
#[tokio::test]
async fn a_squatter_without_access_cannot_lock_the_owner_out() {
    let _serial = SERIAL.lock().await;
    let client = support::client().await;
    let sim = Sim::start(&[("i-squatted00001", true)], &[(AK, AK_SECRET, None)]).await;
    let controller = start_controller(ControllerOptions::new(client.clone(), sim.url())).await;
    let evil = TestNamespace::new(&client, "squatter").await;
    let team = TestNamespace::new(&client, "owner").await;
    creds_secret(&client, &evil.name, AK, "not-the-secret").await;
    vncpw(&client, &evil.name, "grab", "i-squatted00001", "Evil12").await;
    wait_condition(
        &client,
        &evil.name,
        "grab",
        "Stalled",
        "True",
        Some("AuthFailed"),
        WAIT,
    )
    .await;
    // Creation times have whole seconds: the owner's object is certainly the younger one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    creds_secret(&client, &team.name, AK, AK_SECRET).await;
    vncpw(&client, &team.name, "web", "i-squatted00001", "Team12").await;
    wait_ready(&client, &team.name, "web", WAIT).await;
    assert_eq!(
        sim.set_password("i-squatted00001").as_deref(),
        Some("Team12")
    );
    // The squatter still has nothing but its own refusal.
    let squatter = status(&client, &evil.name, "grab").await.expect("status");
    let stalled = squatter.condition("Stalled").expect("Stalled");
    assert_eq!(stalled.reason, "AuthFailed");
    assert!(!stalled.message.contains(&team.name) && !stalled.message.contains("web"));
    controller.stop().await;
    evil.delete().await;
    team.delete().await;
}

/// Two teams with working credentials name the same instance: the claim goes to the oldest object
/// that proved access. A younger object that applied first loses the claim when the older one
/// proves it: it leaves `Ready=True` at once (woken by the change of claim, not by a timer), says
/// `InstanceClaimed` naming only "another namespace", and ECS holds the winner's password.
#[tokio::test]
async fn a_claim_moves_to_the_oldest_proven_object_and_the_loser_leaves_ready() {
    let _serial = SERIAL.lock().await;
    let client = support::client().await;
    let sim = Sim::start(&[("i-contested0001", true)], &[(AK, AK_SECRET, None)]).await;
    let controller = start_controller(ControllerOptions {
        flags: vec!["--stall-recheck-interval=3600".into()],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    let old = TestNamespace::new(&client, "older").await;
    let young = TestNamespace::new(&client, "younger").await;
    // The older object first, but it cannot act yet: its password Secret is missing.
    creds_secret(&client, &old.name, AK, AK_SECRET).await;
    put_vncpassword(
        &client,
        &old.name,
        "web",
        json!({"regionId": "cn-hangzhou", "instanceId": "i-contested0001",
               "passwordSecretRef": {"name": "web-vnc"}, "credentials": {"secretRef": {"name": "creds"}}}),
    )
    .await;
    wait_condition(
        &client,
        &old.name,
        "web",
        "Stalled",
        "True",
        Some("SecretNotFound"),
        WAIT,
    )
    .await;
    // A second later, the younger one: nothing proven is older than it, so it applies.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    creds_secret(&client, &young.name, AK, AK_SECRET).await;
    vncpw(&client, &young.name, "web", "i-contested0001", "Young1").await;
    wait_ready(&client, &young.name, "web", WAIT).await;
    // The older one gets its Secret and proves access: it wins.
    put_secret(&client, &old.name, "web-vnc", &[("password", "Older1")]).await;
    wait_ready(&client, &old.name, "web", WAIT).await;
    let lost = wait_condition(
        &client,
        &young.name,
        "web",
        "Stalled",
        "True",
        Some("InstanceClaimed"),
        Duration::from_secs(20),
    )
    .await;
    assert!(!lost.is_true("Ready"), "{:?}", lost.conditions);
    let message = &lost.condition("Stalled").expect("Stalled").message;
    assert!(
        message.contains("another namespace") && !message.contains(&old.name),
        "{message}"
    );
    eventually("ECS to hold the winner's password", WAIT, || async {
        (sim.set_password("i-contested0001").as_deref() == Some("Older1")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.set_password("i-contested0001").as_deref(),
        Some("Older1")
    );
    controller.stop().await;
    old.delete().await;
    young.delete().await;
}

/// With the controller's own credentials shared by several namespaces, one namespace cannot take
/// an instance of another: the controller writes to an instance only when it carries the ECS tag
/// `ecsvnc.io/namespace` naming the VncPassword's namespace, and says which tag to set.
#[tokio::test]
async fn shared_credentials_act_only_on_instances_tagged_for_the_namespace() {
    let _serial = SERIAL.lock().await;
    let client = support::client().await;
    let sim = Sim::start(
        &[("i-theirs000001", false), ("i-ours00000001", true)],
        &[(AK, AK_SECRET, None)],
    )
    .await;
    let a = TestNamespace::new(&client, "shared-a").await;
    let b = TestNamespace::new(&client, "shared-b").await;
    sim.set_tags(
        "i-theirs000001",
        &[("ecsvnc.io/namespace", b.name.as_str())],
    );
    sim.set_tags(
        "i-ours00000001",
        &[("ecsvnc.io/namespace", a.name.as_str())],
    );
    let controller = start_controller(ControllerOptions {
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: format!("{},{}", a.name, b.name),
        flags: vec!["--stall-recheck-interval=2".into()],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    let default_vncpw =
        |ns: String, name: &'static str, instance: &'static str, pw: &'static str| {
            let client = client.clone();
            async move {
                put_secret(&client, &ns, &format!("{name}-vnc"), &[("password", pw)]).await;
                put_vncpassword(
                    &client,
                    &ns,
                    name,
                    json!({"regionId": "cn-hangzhou", "instanceId": instance,
                       "passwordSecretRef": {"name": format!("{name}-vnc")},
                       "rebootPolicy": "Automatic"}),
                )
                .await;
            }
        };
    // Namespace a names b's instance: refused before any write, with the tag to set.
    default_vncpw(a.name.clone(), "grab", "i-theirs000001", "Grab12").await;
    let refused = wait_condition(
        &client,
        &a.name,
        "grab",
        "Stalled",
        "True",
        Some("InstanceNotAllowed"),
        WAIT,
    )
    .await;
    let message = &refused.condition("Stalled").expect("Stalled").message;
    assert!(
        message.contains(&format!("ecsvnc.io/namespace={}", a.name)),
        "{message}"
    );
    // Its own instance: applied.
    default_vncpw(a.name.clone(), "web", "i-ours00000001", "Ours12").await;
    wait_ready(&client, &a.name, "web", WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.set_password("i-theirs000001"),
        None,
        "no write to b's instance"
    );
    assert_eq!(sim.calls("RebootInstance"), 0);
    // b's own object for its instance works.
    default_vncpw(b.name.clone(), "web", "i-theirs000001", "Bees12").await;
    wait_condition(
        &client,
        &b.name,
        "web",
        "RebootRequired",
        "True",
        None,
        WAIT,
    )
    .await;
    assert_eq!(
        sim.set_password("i-theirs000001").as_deref(),
        Some("Bees12")
    );
    controller.stop().await;
    a.delete().await;
    b.delete().await;
}

/// With claims decided from the API server (`--claims-from-api`, as a replica of a sharded
/// deployment runs, whose watch does not hold every object), the claim goes the same way: the
/// older proven object keeps the instance, the younger one is `Stalled`, `InstanceClaimed`, and
/// makes no ModifyInstanceVncPasswd; once the owner is gone, it takes over. The controller's own
/// index is made blind to the other objects (failpoint `claims-index-blind`, as a shard that
/// holds none of them), so the claim rests on the API server's list alone.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn claims_asked_of_the_api_server_go_to_the_oldest_proven_object() {
    let _serial = SERIAL.lock().await;
    let scenario = fail::FailScenario::setup();
    fail::cfg("claims-index-blind", "return").expect("failpoint");
    let client = support::client().await;
    let sim = Sim::start(&[("i-apiclaimed001", true)], &[(AK, AK_SECRET, None)]).await;
    let controller = start_controller(ControllerOptions {
        flags: vec!["--claims-from-api".into()],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    let old = TestNamespace::new(&client, "api-older").await;
    let young = TestNamespace::new(&client, "api-younger").await;
    creds_secret(&client, &old.name, AK, AK_SECRET).await;
    vncpw(&client, &old.name, "web", "i-apiclaimed001", "Older1").await;
    wait_ready(&client, &old.name, "web", WAIT).await;
    // Creation times have whole seconds: the younger one is certainly younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    creds_secret(&client, &young.name, AK, AK_SECRET).await;
    vncpw(&client, &young.name, "web", "i-apiclaimed001", "Young1").await;
    let lost = wait_condition(
        &client,
        &young.name,
        "web",
        "Stalled",
        "True",
        Some("InstanceClaimed"),
        WAIT,
    )
    .await;
    assert!(!lost.is_true("Ready"), "{:?}", lost.conditions);
    let message = &lost.condition("Stalled").expect("Stalled").message;
    assert!(
        message.contains("another namespace") && !message.contains(&old.name),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.calls("ModifyInstanceVncPasswd"),
        1,
        "only the owner's apply"
    );
    assert_eq!(
        sim.set_password("i-apiclaimed001").as_deref(),
        Some("Older1")
    );
    let metrics = reqwest::get(format!("http://{}/metrics", controller.metrics_addr))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let lookups: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ecs_vnc_claim_lookups_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("ecs_vnc_claim_lookups_total in\n{metrics}"));
    assert!(lookups >= 2.0, "both objects asked: {lookups}");
    // The young one goes on asking (every 30 s, which this test does not wait for) and writes
    // nothing meanwhile.
    // The owner goes: the younger one takes over.
    kube::Api::<ecs_vnc_controller::api::VncPassword>::namespaced(client.clone(), &old.name)
        .delete("web", &Default::default())
        .await
        .expect("delete the owner");
    wait_ready(&client, &young.name, "web", WAIT).await;
    assert_eq!(
        sim.set_password("i-apiclaimed001").as_deref(),
        Some("Young1")
    );
    controller.stop().await;
    old.delete().await;
    young.delete().await;
    scenario.teardown();
}
