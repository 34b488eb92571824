//! `--shards` on an API server without sharded list and watch (the default test control plane):
//! replicas as real child processes share 4 shards, each filtering on its side (see
//! support::replicas; with the API server's filtering: tests/shard_watch.rs).

mod support;

use std::time::{Duration, Instant};

use support::controller::*;
use support::replicas::*;
use support::sim::Sim;

#[tokio::test]
async fn replicas_share_the_shards_each_object_once_and_take_over_a_killed_ones() {
    let admin = support::client().await;
    ensure_controller_namespace(&admin).await;
    let ns = support::TestNamespace::new(&admin, "shards").await;
    let sim = Sim::start(&[], &sim_keys()).await;
    let lease = format!("shards-{:08x}", rand::random::<u32>());
    let logs = LogDir::new();
    const FIRST: usize = 24;
    // Two replicas: two shards each.
    let (a, b, took) = two_replicas(&admin, &ns.name, &sim, &lease, &logs).await;
    println!("2 replicas: two shards each after {took:?}");
    stable_holders(&admin, &lease, &logs).await;
    served_once_by_both(
        &admin,
        &ns.name,
        &sim,
        0..FIRST,
        &logs,
        [&a, &b],
        "the API server does not filter by shard",
    )
    .await;

    // A third replica asks for its share: the three settle at 2, 1, 1.
    let c = spawn(2, &lease, &ns.name, &sim.url(), logs.path());
    let at = Instant::now();
    let three = support::eventually("three replicas share", Duration::from_secs(60), || async {
        let h = holders(&admin, &lease).await;
        let s = spread(&h);
        (s.len() == 3 && s.values().all(|n| *n >= 1)).then_some(h)
    })
    .await;
    println!("3 replicas: {three:?} after {:?}", at.elapsed());
    // And it stays so.
    stable_holders(&admin, &lease, &logs).await;

    // SIGKILL one: the survivors take its shards once its Leases expire, and serve new objects.
    let killed_id = c.id.clone();
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let killed_at = Instant::now();
    let survivors = support::eventually(
        "the survivors hold every shard",
        Duration::from_secs(30),
        || async {
            let h = holders(&admin, &lease).await;
            let s = spread(&h);
            (h.iter().all(Option::is_some) && !s.contains_key(&killed_id)).then_some(h)
        },
    )
    .await;
    let takeover = killed_at.elapsed();
    println!("after SIGKILL of {killed_id}: {survivors:?} after {takeover:?}");
    const MORE: usize = 16;
    for i in FIRST..FIRST + MORE {
        sim.add_instance(&instance(i), true);
        put_object(&admin, &ns.name, i).await;
    }
    wait_all_ready(&admin, &ns.name, 0..FIRST + MORE).await;
    applied_once(&sim, 0..FIRST + MORE, &logs);
    // Lease 4 s, retry 1.5 s: a takeover is due 4 s after the last renew the survivor saw, then
    // at its next try and the supervisor's next look.
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    drop((a, b));
    ns.delete().await;
}

/// A VncPasswordSet's children hash into every shard: the replica serving the set lists them (it
/// caches only its own shards), so each child is created once, each instance gets one password,
/// applied by whichever replica serves the child, and the set counts all of them.
#[tokio::test]
async fn a_set_served_by_one_replica_counts_children_served_by_both() {
    use ecs_vnc_controller::api::{VncPassword, VncPasswordSet};
    use kube::api::{ListParams, PostParams};
    use kube::{Api, ResourceExt};
    let admin = support::client().await;
    ensure_controller_namespace(&admin).await;
    let ns = support::TestNamespace::new(&admin, "shard-set").await;
    let sim = Sim::start(&[], &sim_keys()).await;
    let lease = format!("shard-set-{:08x}", rand::random::<u32>());
    let logs = LogDir::new();
    let (a, b, _) = two_replicas(&admin, &ns.name, &sim, &lease, &logs).await;
    const N: usize = 16;
    for i in 0..N {
        sim.add_tagged_instance(
            &instance(i),
            true,
            &[("pool", "web"), ("ecsvnc.io/namespace", &ns.name)],
        );
    }
    let set: VncPasswordSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPasswordSet",
        "metadata": {"name": "web"},
        "spec": {"regionId": "cn-hangzhou", "selector": {"instanceTags": {"pool": "web"}},
                 "template": {"passwordGeneration": {}}},
    }))
    .expect("a VncPasswordSet");
    let sets = Api::<VncPasswordSet>::namespaced(admin.clone(), &ns.name);
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create the set");
    support::eventually(
        "the set AllReady with 16",
        Duration::from_secs(90),
        || async {
            let s = sets.get("web").await.ok()?.status?;
            let ready = s.condition("Ready")?;
            (s.selected == N as i64 && s.ready == N as i64 && ready.reason == "AllReady")
                .then_some(())
        },
    )
    .await;
    let children = Api::<VncPassword>::namespaced(admin.clone(), &ns.name)
        .list(&ListParams::default().labels("ecsvnc.io/set=web"))
        .await
        .expect("children");
    assert_eq!(children.items.len(), N, "one child per instance");
    let by_key = applied_once(&sim, 0..N, &logs);
    assert_eq!(
        by_key.len(),
        2,
        "children served by both replicas: {by_key:?} ({:?})",
        children
            .items
            .iter()
            .map(|c| c.name_any())
            .collect::<Vec<_>>()
    );
    drop((a, b));
    ns.delete().await;
}

/// Two VncPasswords naming one instance, served by different replicas: the younger one's replica
/// asks the API server who else names the instance (a field selector on spec.instanceId) and
/// leaves it to the older one, as a single replica would; once the older is deleted, it applies.
#[tokio::test]
async fn a_claim_across_shards_is_decided_like_on_one_replica() {
    use ecs_vnc_controller::api::VncPassword;
    use ecs_vnc_controller::shard::ShardRange;
    use kube::api::DeleteParams;
    use kube::{Api, ResourceExt};
    let admin = support::client().await;
    ensure_controller_namespace(&admin).await;
    let ns = support::TestNamespace::new(&admin, "shard-claim").await;
    let sim = Sim::start(&[], &sim_keys()).await;
    let lease = format!("shard-claim-{:08x}", rand::random::<u32>());
    let logs = LogDir::new();
    let (a, b, _) = two_replicas(&admin, &ns.name, &sim, &lease, &logs).await;
    sim.add_instance(&instance(0), true);
    put_object(&admin, &ns.name, 0).await;
    wait_ready(&admin, &ns.name, "web-0", Duration::from_secs(60)).await;
    let api = Api::<VncPassword>::namespaced(admin.clone(), &ns.name);
    let holder_of = |uid: &str, holders: &[Option<String>]| {
        (0..4u16)
            .find(|k| ShardRange::of(*k, 4).contains_uid(uid))
            .and_then(|k| holders[usize::from(k)].clone())
    };
    let holders = holders(&admin, &lease).await;
    let old_uid = api.get("web-0").await.expect("web-0").uid().expect("uid");
    let old_replica = holder_of(&old_uid, &holders).expect("web-0's shard is held");
    // Younger objects naming the same instance, until one lands with the other replica (each
    // try has an even chance). Named after web-0: a claim between objects created in the same
    // second goes to the first by name.
    put_secret(&admin, &ns.name, "vnc-late", &[("password", "Late01")]).await;
    let mut late = None;
    for k in 0..16 {
        let name = format!("young-{k}");
        put_vncpassword(
            &admin,
            &ns.name,
            &name,
            serde_json::json!({"regionId": "cn-hangzhou", "instanceId": instance(0),
                               "passwordSecretRef": {"name": "vnc-late"}}),
        )
        .await;
        let uid = api.get(&name).await.expect("young").uid().expect("uid");
        if holder_of(&uid, &holders).as_deref() != Some(old_replica.as_str()) {
            late = Some(name);
            break;
        }
    }
    let late = late.expect("an object in the other replica's shards");
    wait_condition(
        &admin,
        &ns.name,
        &late,
        "Ready",
        "False",
        Some("InstanceClaimed"),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        appliers(&sim).get(&instance(0)).map(Vec::len),
        Some(1),
        "only the older object applied (logs in {})",
        logs.path().display()
    );
    // The older one goes: the younger one (and its siblings in either shard) may have the instance.
    api.delete("web-0", &DeleteParams::default())
        .await
        .expect("delete web-0");
    support::eventually(
        "a younger object applies",
        Duration::from_secs(90),
        || async { (sim.set_password(&instance(0)).as_deref() == Some("Late01")).then_some(()) },
    )
    .await;
    drop((a, b));
    ns.delete().await;
}
