//! Server-side shard filtering (Kubernetes sharded list and watch, KEP-5866) on a control plane
//! with the alpha gate `ShardedListAndWatch` on: the probe sees it, lists of VncPasswords through
//! the sharded client hold exactly the uids of their ranges, and a watcher through it sees only the
//! new objects of its range. (The gate-off probe is in tests/kube_api.rs, on a default control plane.)

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::ListParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use ecs_vnc_controller::shard::{ShardRange, selector, server_filters, sharded_client};
use support::TestNamespace;
use support::controller::put_vncpassword;

const GATE: &str = "ShardedListAndWatch=true";

async fn client() -> Client {
    support::with_feature_gates(GATE);
    support::client().await
}

async fn put(client: &Client, ns: &str, name: &str) {
    put_vncpassword(
        client,
        ns,
        name,
        json!({"regionId": "cn-hangzhou", "instanceId": "i-shard0000000001", "passwordSecretRef": {"name": "vnc"}}),
    )
    .await;
}

/// (name, uid) of every VncPassword of `ns` that `client` lists, a page of 7 at a time.
async fn list(client: Client, ns: &str) -> BTreeSet<(String, String)> {
    let api: Api<VncPassword> = Api::namespaced(client, ns);
    let mut seen = BTreeSet::new();
    let mut params = ListParams::default().limit(7);
    loop {
        let page = api.list(&params).await.expect("list");
        seen.extend(page.items.iter().map(|o| (o.name_any(), o.uid().unwrap())));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return seen,
        }
    }
}

#[tokio::test]
async fn four_ranges_partition_the_vncpasswords_and_the_probe_sees_the_gate() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "shard-list").await;
    futures::stream::iter(0..40)
        .for_each_concurrent(8, |i| {
            let (client, ns) = (&client, &ns.name);
            async move { put(client, ns, &format!("p{i:02}")).await }
        })
        .await;

    assert!(server_filters(&client, &ns.name).await.expect("probe"));

    let all = list(client.clone(), &ns.name).await;
    assert_eq!(all.len(), 40);
    let mut union = BTreeSet::new();
    let mut slices = Vec::new();
    for shard in 0..4 {
        let range = ShardRange::of(shard, 4);
        let sharded = sharded_client(client.clone(), selector(&[range]).unwrap());
        let got = list(sharded, &ns.name).await;
        let expected: BTreeSet<_> = all
            .iter()
            .filter(|(_, uid)| range.contains_uid(uid))
            .cloned()
            .collect();
        assert_eq!(got, expected, "shard {shard}/4");
        assert!(union.is_disjoint(&got), "shard {shard}/4 overlaps");
        union.extend(got.iter().cloned());
        slices.push(got);
    }
    assert_eq!(union, all);
    // 40 random uids leave a quarter of the space empty with probability 4 * (3/4)^40 < 1e-4.
    assert!(slices.iter().all(|s| !s.is_empty()), "{slices:?}");

    // Two ranges in one selector: the union of their slices.
    let two = sharded_client(
        client.clone(),
        selector(&[ShardRange::of(0, 4), ShardRange::of(2, 4)]).unwrap(),
    );
    let expected: BTreeSet<_> = slices[0].union(&slices[2]).cloned().collect();
    assert_eq!(list(two, &ns.name).await, expected);
    ns.delete().await;
}

/// Both ways a watcher starts (a paged list then a watch; a streaming list, `sendInitialEvents`).
#[tokio::test]
async fn a_watcher_through_the_sharded_client_sees_only_its_range() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "shard-watch").await;
    for i in 0..6 {
        put(&client, &ns.name, &format!("old{i}")).await;
    }
    let range = ShardRange::of(1, 2);
    let sharded = sharded_client(client.clone(), selector(&[range]).unwrap());
    let api: Api<VncPassword> = Api::namespaced(sharded, &ns.name);
    let configs = [
        ("list", watcher::Config::default().page_size(2)),
        ("streaming", watcher::Config::default().streaming_lists()),
    ];
    let mut streams = Vec::new();
    for (mode, config) in configs {
        let mut events = watcher::watcher(api.clone(), config).boxed();
        let mut initial = BTreeSet::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.try_next()).await {
                Ok(Ok(Some(Event::InitApply(o)))) => {
                    initial.insert(o.uid().unwrap());
                }
                Ok(Ok(Some(Event::InitDone))) => break,
                Ok(Ok(Some(_))) => continue,
                other => panic!("{mode}: watch did not start: {other:?}"),
            }
        }
        let expected: BTreeSet<_> = list(client.clone(), &ns.name)
            .await
            .into_iter()
            .map(|(_, uid)| uid)
            .filter(|uid| range.contains_uid(uid))
            .collect();
        assert_eq!(initial, expected, "{mode}: initial objects");
        streams.push((mode, events));
    }

    // New objects until at least two fell outside the range, the last one inside: a watch delivers
    // in resourceVersion order, so once the last is seen every earlier event has been too.
    let plain: Api<VncPassword> = Api::namespaced(client.clone(), &ns.name);
    let (mut inside, mut outside) = (BTreeSet::new(), BTreeSet::new());
    for i in 0.. {
        assert!(i < 200, "uids kept missing a half of the space");
        let name = format!("new{i:03}");
        put(&client, &ns.name, &name).await;
        let uid = plain.get(&name).await.expect("get").uid().unwrap();
        if range.contains_uid(&uid) {
            inside.insert(name.clone());
            if outside.len() >= 2 {
                break;
            }
        } else {
            outside.insert(name);
        }
    }
    let last = inside.last().unwrap().clone();
    for (mode, events) in &mut streams {
        let mut seen = BTreeSet::new();
        while !seen.contains(&last) {
            match tokio::time::timeout(Duration::from_secs(30), events.try_next()).await {
                Ok(Ok(Some(Event::Apply(o)))) => {
                    assert!(range.contains_uid(&o.uid().unwrap()), "{mode}: {o:?}");
                    seen.insert(o.name_any());
                }
                Ok(Ok(Some(_))) => continue,
                other => panic!("{mode}: watch ended or stalled: {other:?}"),
            }
        }
        assert_eq!(seen, inside, "{mode}: new objects seen");
        assert!(seen.is_disjoint(&outside), "{mode}");
    }
    ns.delete().await;
}

/// Two replicas with `--shards 4` on this API server: each asks it for its own shards' objects
/// (and says so), and every object is applied exactly once, by one of them.
#[tokio::test]
async fn two_replicas_receive_only_their_shards_from_the_api_server() {
    use support::replicas::*;
    let admin = client().await;
    support::controller::ensure_controller_namespace(&admin).await;
    let ns = TestNamespace::new(&admin, "shard-replicas").await;
    let sim = support::sim::Sim::start(&[], &sim_keys()).await;
    let lease = format!("shard-watch-{:08x}", rand::random::<u32>());
    let logs = LogDir::new();
    let (a, b, _) = two_replicas(&admin, &ns.name, &sim, &lease, &logs).await;
    served_once_by_both(
        &admin,
        &ns.name,
        &sim,
        0..24,
        &logs,
        [&a, &b],
        "the API server filters lists and watches by shard",
    )
    .await;
    drop((a, b));
    ns.delete().await;
}
