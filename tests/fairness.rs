//! Fair service per namespace: one controller over every namespace (this binary's own control
//! plane, so no other test's objects are in it), one namespace flooding it. Real kube-apiserver,
//! in-process controller, ECS simulator.

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use support::controller::*;
use support::sim::Sim;
use support::{TestNamespace, eventually};

const AK: &str = "LTAI5tFairKeyId";
const AK_SECRET: &str = "FairKeySecretValue0123456";
const FLOOD: usize = 300;

async fn ready_in(client: &kube::Client, ns: &str) -> usize {
    Api::<VncPassword>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|o| o.status.as_ref().is_some_and(|s| s.is_true("Ready")))
                .count()
        })
        .unwrap_or_default()
}

/// 300 objects of one namespace wait for four workers on a slow ECS; an object created in another
/// namespace meanwhile is served next, long before the flood is done, instead of behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespaces_flood_does_not_hold_every_worker() {
    let client = support::client().await;
    let flood = TestNamespace::new(&client, "flood").await;
    let quiet = TestNamespace::new(&client, "quiet").await;
    let instance = |i: usize| format!("i-fair{i:09}");
    let mut config = support::sim::fleet(AK, AK_SECRET, (0..=FLOOD).map(|i| (instance(i), true)));
    config.faults.latency_ms = 100;
    let sim = Sim::from_config(config).await;
    futures::stream::iter(0..FLOOD)
        .for_each_concurrent(16, |i| {
            let (client, ns) = (client.clone(), flood.name.clone());
            async move {
                let secret = format!("vm-{i}-vnc");
                put_secret(&client, &ns, &secret, &[("password", "Flood1")]).await;
                put_vncpassword(
                    &client,
                    &ns,
                    &format!("vm-{i}"),
                    json!({"regionId": "cn-hangzhou", "instanceId": instance(i),
                           "passwordSecretRef": {"name": secret}}),
                )
                .await;
            }
        })
        .await;
    put_secret(&client, &quiet.name, "web-vnc", &[("password", "Quiet1")]).await;
    let controller = start_controller(ControllerOptions {
        namespace: None,
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: format!("{},{}", flood.name, quiet.name),
        flags: vec!["--concurrency=4".into()],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    // The flood is under way, the rest of it queued.
    eventually("the flood to start", Duration::from_secs(60), || async {
        (ready_in(&client, &flood.name).await > 0).then_some(())
    })
    .await;
    put_vncpassword(
        &client,
        &quiet.name,
        "web",
        json!({"regionId": "cn-hangzhou", "instanceId": instance(FLOOD),
               "passwordSecretRef": {"name": "web-vnc"}}),
    )
    .await;
    wait_ready(&client, &quiet.name, "web", Duration::from_secs(300)).await;
    let flood_done = ready_in(&client, &flood.name).await;
    eprintln!("the other namespace's object was Ready after {flood_done} of the flood's {FLOOD}");
    assert!(
        flood_done < FLOOD / 4,
        "the other namespace's object was Ready only after {flood_done} of the flood's {FLOOD}"
    );
    // And the flood is served too.
    eventually("the whole flood", Duration::from_secs(300), || async {
        (ready_in(&client, &flood.name).await == FLOOD).then_some(())
    })
    .await;
    controller.stop().await;
    quiet.delete().await;
    flood.delete().await;
}
