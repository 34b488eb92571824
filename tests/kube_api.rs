//! The test control plane is a real Kubernetes API: a namespaced object is created, watched and
//! deleted through the Rust client, and /version reports the pinned Kubernetes version.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

#[tokio::test]
async fn a_namespaced_object_is_created_watched_and_deleted() {
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "smoke").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // The initial (empty) list completes before anything is created.
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(Ok(Event::InitDone))) => break,
            Ok(Some(Ok(_))) => continue,
            other => panic!("watch did not start: {other:?}"),
        }
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let seen = next_matching(
        &mut events,
        |e| matches!(e, Event::Apply(o) if o.name_any() == "hello"),
    )
    .await;
    assert!(
        matches!(seen, Event::Apply(o) if o.data.as_ref().and_then(|d| d.get("k")).map(String::as_str) == Some("v"))
    );
    api.delete("hello", &DeleteParams::default())
        .await
        .expect("delete");
    next_matching(
        &mut events,
        |e| matches!(e, Event::Delete(o) if o.name_any() == "hello"),
    )
    .await;
    assert!(api.get_opt("hello").await.expect("get").is_none());
    ns.delete().await;
}

async fn next_matching<S>(
    events: &mut S,
    want: impl Fn(&Event<ConfigMap>) -> bool,
) -> Event<ConfigMap>
where
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(Ok(e))) if want(&e) => return e,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected watch event did not arrive: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_api_server_reports_the_pinned_kubernetes_version() {
    if std::env::var_os("TEST_KUBECONFIG").is_some() {
        // Another cluster runs whatever version it runs; the pin is about our own control plane.
        return;
    }
    let client = support::client().await;
    let version = client.apiserver_version().await.expect("/version");
    let pinned =
        std::fs::read_to_string(support::repo_root().join("tests/control-plane/versions.env"))
            .expect("versions.env");
    let pinned = pinned
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION");
    assert_eq!(version.git_version, pinned);
    assert_eq!(
        version.minor, "37",
        "k8s-openapi's v1_37 feature must match the control plane"
    );
}

/// Without the alpha gate `ShardedListAndWatch` (our default control plane) the API server drops
/// `shardSelector` silently: the probe says so, and a selector excluding the one VncPassword of the
/// namespace still returns it. (With the gate on: tests/shard_watch.rs.)
#[tokio::test]
async fn without_the_shard_gate_the_probe_says_the_server_does_not_filter() {
    use ecs_vnc_controller::api::VncPassword;
    use ecs_vnc_controller::shard::{
        ShardRange, fnv1a64, selector, server_filters, sharded_client,
    };
    if std::env::var_os("TEST_KUBECONFIG").is_some() {
        // Another cluster may run with the gate on.
        return;
    }
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "noshard").await;
    support::controller::put_vncpassword(
        &client,
        &ns.name,
        "p",
        serde_json::json!({"regionId": "cn-hangzhou", "instanceId": "i-shard0000000001", "passwordSecretRef": {"name": "vnc"}}),
    )
    .await;
    assert!(!server_filters(&client, &ns.name).await.expect("probe"));
    let api: Api<VncPassword> = Api::namespaced(client.clone(), &ns.name);
    let uid = api.get("p").await.expect("get").uid().unwrap();
    let hash = fnv1a64(uid.as_bytes());
    // The half of the space without the object's hash.
    let half = (0..2)
        .map(|k| ShardRange::of(k, 2))
        .find(|r| !r.contains(hash))
        .unwrap();
    let sharded = sharded_client(client.clone(), selector(&[half]).unwrap());
    let listed = Api::<VncPassword>::namespaced(sharded, &ns.name)
        .list(&kube::api::ListParams::default())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    ns.delete().await;
}
