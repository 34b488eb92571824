//! VncPasswordSet end to end: a tag set and a node set against the real kube-apiserver and the
//! ECS simulator, with one in-process controller over all namespaces (a node selector needs the
//! cluster-wide read of Nodes). Both scenarios run at once, so the tag set's one-minute resync
//! overlaps the node set's work.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use ecs_vnc_controller::api::{VncPassword, VncPasswordSet};
use support::TestNamespace;
use support::case::{AK, AK_SECRET};
use support::controller::{ControllerOptions, credentials, start_controller};
use support::sim::Sim;

const WAIT: Duration = Duration::from_secs(90);

async fn put_set(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let set: VncPasswordSet = serde_json::from_value(json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPasswordSet",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a VncPasswordSet");
    Api::<VncPasswordSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &set)
        .await
        .expect("create the VncPasswordSet");
}

/// The children of `set` in `ns`: name → instance.
async fn children(client: &Client, ns: &str, set: &str) -> BTreeSet<(String, String)> {
    Api::<VncPassword>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("ecsvnc.io/set={set}")))
        .await
        .expect("list children")
        .items
        .into_iter()
        .map(|c| (c.name_any(), c.spec.instance_id.clone()))
        .collect()
}

/// Waits until `check` holds for the set's status (and its children), or fails with what was seen.
async fn wait_set(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&VncPasswordSet, &BTreeSet<(String, String)>) -> bool,
) -> VncPasswordSet {
    let api = Api::<VncPasswordSet>::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let set = api.get(name).await.expect("get the set");
        let kids = children(client, ns, name).await;
        if check(&set, &kids) {
            return set;
        }
        if tokio::time::Instant::now() >= deadline {
            let logs = support::leaks::captured_logs();
            let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
            let passes: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains("set pass") && l.contains(ns))
                .collect();
            panic!(
                "{what}: not within {WAIT:?}; status {:?}, children {kids:?}\nlast passes:\n{}",
                set.status,
                passes[passes.len().saturating_sub(30)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ready_count(set: &VncPasswordSet) -> (i64, i64, Option<String>) {
    let status = set.status.clone().unwrap_or_default();
    let ready = status
        .condition("Ready")
        .map(|c| format!("{}/{}", c.status, c.reason));
    (status.selected, status.ready, ready)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|k| format!("i-{prefix}{k:08}")).collect()
}

async fn tag_set(client: Client, sim: &Sim, ns: String) -> VncPasswordSet {
    let instances = ids("tagset", 50);
    for id in &instances {
        sim.add_tagged_instance(id, true, &[("pool", "web"), ("ecsvnc.io/namespace", &ns)]);
    }
    // Another namespace's instance with the same pool tag: the shared credentials never list it.
    sim.add_tagged_instance(
        "i-tagsetother01",
        true,
        &[("pool", "web"), ("ecsvnc.io/namespace", "elsewhere")],
    );
    put_set(
        &client,
        &ns,
        "web",
        json!({"regionId": "cn-hangzhou", "selector": {"instanceTags": {"pool": "web"}},
               "template": {"passwordGeneration": {}}, "resyncInterval": "1m",
               "removalGracePeriod": "0s"}),
    )
    .await;
    let set = wait_set(&client, &ns, "web", "50 children Ready", |s, kids| {
        ready_count(s) == (50, 50, Some("True/AllReady".into())) && kids.len() == 50
    })
    .await;
    let kids = children(&client, &ns, "web").await;
    assert!(kids.contains(&("web-i-tagset00000007".into(), "i-tagset00000007".into())));
    assert!(!kids.iter().any(|(_, id)| id == "i-tagsetother01"));
    // Every instance got its own password, in its own Secret.
    let passwords: BTreeSet<String> = instances
        .iter()
        .map(|id| sim.set_password(id).expect("a password applied"))
        .collect();
    assert_eq!(passwords.len(), 50, "each instance has its own password");
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get("web-i-tagset00000003")
        .await
        .expect("the child's generated Secret");
    assert!(secret.data.unwrap_or_default().contains_key("password"));
    let selected_at = set.status.clone().unwrap().last_selection_time;
    // `kubectl describe` tells the story: children created, then all ready.
    let reasons: Vec<String> =
        Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().fields("involvedObject.kind=VncPasswordSet"))
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
    assert!(
        reasons.iter().any(|r| r == "ChildrenCreated") && reasons.iter().any(|r| r == "AllReady"),
        "{reasons:?}"
    );
    let all_ready = set;

    // A newly tagged instance gets its child within one resync (1m).
    sim.add_tagged_instance(
        "i-tagsetnew0001",
        true,
        &[("pool", "web"), ("ecsvnc.io/namespace", &ns)],
    );
    wait_set(
        &client,
        &ns,
        "web",
        "the new instance's child within one resync",
        |s, kids| {
            ready_count(s) == (51, 51, Some("True/AllReady".into()))
                && kids.contains(&("web-i-tagsetnew0001".into(), "i-tagsetnew0001".into()))
                && s.status.as_ref().unwrap().last_selection_time != selected_at
        },
    )
    .await;

    // A tag removed: the child goes (grace 0s) at the next selection, which a spec change brings
    // at once.
    sim.set_tags("i-tagset00000001", &[("ecsvnc.io/namespace", &ns)]);
    Api::<VncPasswordSet>::namespaced(client.clone(), &ns)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resyncInterval": "2m"}})),
        )
        .await
        .expect("patch the set");
    wait_set(
        &client,
        &ns,
        "web",
        "the untagged instance's child removed",
        |s, kids| {
            ready_count(s) == (50, 50, Some("True/AllReady".into()))
                && !kids.iter().any(|(_, id)| id == "i-tagset00000001")
        },
    )
    .await;

    // A child edited by hand is put back.
    let api = Api::<VncPassword>::namespaced(client.clone(), &ns);
    api.patch(
        "web-i-tagset00000002",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rebootPolicy": "Automatic"}})),
    )
    .await
    .expect("edit a child");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let child = api.get("web-i-tagset00000002").await.expect("child");
        if child.spec.reboot_policy == ecs_vnc_controller::api::RebootPolicy::Manual {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edited child was not put back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Children are owned by the set (Kubernetes' garbage collector deletes them with it).
    let child = api.get("web-i-tagset00000002").await.expect("child");
    let owner = &child.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VncPasswordSet", "web", Some(true))
    );

    // A VncPassword written by hand for one of the instances: the set leaves the instance to it
    // (its child goes) and counts it as stalled, with the reason.
    support::controller::put_vncpassword(
        &client,
        &ns,
        "by-hand",
        json!({"regionId": "cn-hangzhou", "instanceId": "i-tagset00000004",
               "passwordSecretRef": {"name": "by-hand-vnc"}}),
    )
    .await;
    let set = wait_set(
        &client,
        &ns,
        "web",
        "the instance left to the VncPassword written by hand",
        |s, kids| {
            let status = s.status.clone().unwrap_or_default();
            status.stalled == 1
                && !kids.iter().any(|(_, id)| id == "i-tagset00000004")
                && status.condition("Stalled").is_some_and(|c| {
                    c.status == "True"
                        && c.reason == "ChildrenStalled"
                        && c.message.contains("by-hand")
                })
        },
    )
    .await;
    let status = set.status.unwrap();
    assert_eq!(status.ready, 49);
    assert_eq!(
        status.left_to_others,
        [ecs_vnc_controller::api::LeftInstance {
            instance_id: "i-tagset00000004".into(),
            vnc_password: "by-hand".into()
        }]
    );
    // Deleted again: the instance is the set's again, at once (not at the next resync).
    Api::<VncPassword>::namespaced(client.clone(), &ns)
        .delete("by-hand", &DeleteParams::default())
        .await
        .expect("delete the VncPassword written by hand");
    wait_set(
        &client,
        &ns,
        "web",
        "the instance back in the set",
        |s, kids| {
            ready_count(s) == (50, 50, Some("True/AllReady".into()))
                && kids.iter().any(|(_, id)| id == "i-tagset00000004")
        },
    )
    .await;
    all_ready
}

async fn node(client: &Client, name: &str, pool: &str, provider_id: &str) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"alibabacloud.com/nodepool-id": pool}},
        "spec": {"providerID": provider_id},
    }))
    .expect("a Node");
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .expect("create the Node");
}

async fn node_set(client: Client, sim: &Sim, ns: String) -> VncPasswordSet {
    let pool = format!("np-{}", &ns[ns.len() - 8..]);
    let instances = ids("nodeset", 4);
    let mut nodes = Vec::new();
    for (k, id) in instances.iter().enumerate() {
        sim.add_tagged_instance(id, true, &[("ecsvnc.io/namespace", &ns)]);
        let name = format!("{pool}-node-{k}");
        // Three in the pool; the fourth in another pool.
        let in_pool = if k < 3 {
            pool.clone()
        } else {
            format!("{pool}-other")
        };
        node(&client, &name, &in_pool, &format!("cn-hangzhou.{id}")).await;
        nodes.push(name);
    }
    // A Node of the pool in another region is not selected.
    node(
        &client,
        &format!("{pool}-node-sh"),
        &pool,
        "cn-shanghai.i-nodesetsh000001",
    )
    .await;
    nodes.push(format!("{pool}-node-sh"));
    put_set(
        &client,
        &ns,
        "pool",
        json!({"regionId": "cn-hangzhou",
               "selector": {"nodes": {"matchLabels": {"alibabacloud.com/nodepool-id": pool}}},
               "template": {"passwordGeneration": {}},
               "removalGracePeriod": "0s"}),
    )
    .await;
    let expected: BTreeSet<(String, String)> = instances[..3]
        .iter()
        .map(|id| (format!("pool-{id}"), id.clone()))
        .collect();
    wait_set(
        &client,
        &ns,
        "pool",
        "a child per Node of the pool",
        |s, kids| ready_count(s) == (3, 3, Some("True/AllReady".into())) && *kids == expected,
    )
    .await;

    // A Node deleted and its instance released (a scale-in): its child goes, and with it its
    // Secret, whose password is live nowhere now (made owned by the child before the child is
    // deleted, so Kubernetes' garbage collector deletes it; this control plane runs none).
    sim.set_status(&instances[0], "Released");
    Api::<Node>::all(client.clone())
        .delete(&nodes[0], &DeleteParams::default())
        .await
        .expect("delete a Node");
    wait_set(
        &client,
        &ns,
        "pool",
        "the deleted Node's child removed",
        |s, kids| ready_count(s) == (2, 2, Some("True/AllReady".into())) && kids.len() == 2,
    )
    .await;
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get(&format!("pool-{}", instances[0]))
        .await
        .expect("the released instance's Secret (no garbage collector here)");
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|o| o.kind == "VncPassword"
                && o.name == format!("pool-{}", instances[0])
                && o.controller == Some(true)),
        "the Secret of a released instance goes with its child: {:?}",
        secret.owner_references()
    );
    for name in &nodes[1..] {
        let _ = Api::<Node>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    // No Node left in the pool: NothingSelected, a stall with the reason.
    let set = wait_set(&client, &ns, "pool", "NothingSelected", |s, _| {
        s.status
            .as_ref()
            .and_then(|st| st.condition("Stalled"))
            .is_some_and(|c| c.status == "True" && c.reason == "NothingSelected")
    })
    .await;
    assert_eq!(set.status.as_ref().unwrap().selected, 0);
    set
}

#[tokio::test]
async fn sets_follow_tags_and_node_pools() {
    let client = support::client().await;
    let tags_ns = TestNamespace::new(&client, "settags").await;
    let nodes_ns = TestNamespace::new(&client, "setnodes").await;
    let sim = Sim::start(&[], &[(AK, AK_SECRET, None)]).await;
    let controller = start_controller(ControllerOptions {
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: format!("{},{}", tags_ns.name, nodes_ns.name),
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    let (all_ready, nothing_selected) = tokio::join!(
        tag_set(client.clone(), &sim, tags_ns.name.clone()),
        node_set(client.clone(), &sim, nodes_ns.name.clone()),
    );
    controller.stop().await;
    // kstatus itself (what Flux and `kubectl wait` use) reads the sets as the docs say: all ready
    // is Current, a selector that matches nothing is Failed at once.
    let verdicts = support::kstatus::judge(&[
        serde_json::to_value(&all_ready).unwrap(),
        serde_json::to_value(&nothing_selected).unwrap(),
    ]);
    let statuses: Vec<&str> = verdicts.iter().map(|v| v.status.as_str()).collect();
    assert_eq!(statuses, ["Current", "Failed"], "{verdicts:?}");
}
