//! The batched DescribeInstances cache against the ECS simulator: one shared call per account and
//! region, its error shared too, one bad ID never failing the others, bounded memory.

mod support;

use std::time::{Duration, Instant};

use ecs_vnc_controller::controller::instances::InstanceCache;
use ecs_vnc_controller::ecs::retry::RetryPolicy;
use ecs_vnc_controller::ecs::{ClientConfig, EcsClient};
use support::controller::credentials;
use support::sim::Sim;

const AK: &str = "LTAIcache";
const SECRET: &str = "cache-secret";

fn cache(sim: &Sim, forget_after: Duration) -> InstanceCache {
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(1000.0),
        burst: 100,
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        ..ClientConfig::default()
    })
    .expect("client");
    InstanceCache::new(client, forget_after, Duration::from_secs(30))
}

fn ids(n: usize) -> Vec<(String, bool)> {
    (0..n).map(|i| (format!("i-cache{i:08}"), true)).collect()
}

async fn sim_with(n: usize) -> Sim {
    let instances = ids(n);
    let refs: Vec<(&str, bool)> = instances.iter().map(|(i, io)| (i.as_str(), *io)).collect();
    Sim::start(&refs, &[(AK, SECRET, None)]).await
}

#[tokio::test]
async fn concurrent_look_ups_share_one_call_and_its_failure() {
    let sim = sim_with(10).await;
    let cache = cache(&sim, Duration::from_secs(60));
    let creds = credentials(AK, SECRET, None);
    // Slow enough that every look-up joins the first call.
    sim.with_faults(|f| f.latency_ms = 300);
    sim.fail_next("DescribeInstances", "ServiceUnavailable", 503, 100);
    let now = Instant::now();
    let look_ups = ids(10).into_iter().map(|(id, _)| {
        let cache = cache.clone();
        let creds = creds.clone();
        async move { cache.describe(&creds, "cn-hangzhou", &id, now).await }
    });
    let results = futures::future::join_all(look_ups).await;
    // ECS keeps failing: the first call covered the first look-up; the others waited for it and
    // then shared one more call, rather than each repeating the failing call in turn.
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(
        sim.calls("DescribeInstances") <= 2,
        "{} calls for 10 look-ups",
        sim.calls("DescribeInstances")
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Some("ServiceUnavailable"));
    }
}

#[tokio::test]
async fn a_batch_refused_for_one_id_still_answers_the_others() {
    let sim = sim_with(3).await;
    sim.with_faults(|f| f.refuse_describe_ids = vec!["i-cache00000001".into()]);
    let cache = cache(&sim, Duration::from_secs(60));
    let creds = credentials(AK, SECRET, None);
    let start = Instant::now();
    // All three are wanted, so the next call batches them.
    for (id, _) in ids(3) {
        let _ = cache.describe(&creds, "cn-hangzhou", &id, start).await;
    }
    let fresh = Instant::now();
    let good = cache
        .describe(&creds, "cn-hangzhou", "i-cache00000002", fresh)
        .await
        .expect("the good ID is answered despite its batch's refusal");
    assert_eq!(
        good.map(|i| i.instance_id).as_deref(),
        Some("i-cache00000002")
    );
    let bad = cache
        .describe(&creds, "cn-hangzhou", "i-cache00000001", Instant::now())
        .await;
    assert_eq!(
        bad.err()
            .and_then(|e| e.code().map(str::to_string))
            .as_deref(),
        Some("InvalidInstanceIds.Malformed")
    );
}

#[tokio::test]
async fn groups_and_answers_nobody_wants_are_forgotten() {
    let sim = sim_with(2).await;
    let cache = cache(&sim, Duration::from_millis(200));
    for i in 0..20 {
        // Twenty credentials (rotated STS tokens, say), each used once.
        let creds = credentials(AK, SECRET, None);
        let creds = ecs_vnc_controller::ecs::Credentials::new(
            creds.access_key_id.clone(),
            ecs_vnc_controller::secret::SecretString::new(format!("{SECRET}{i}")),
            None,
        );
        let _ = cache
            .describe(&creds, "cn-hangzhou", "i-cache00000000", Instant::now())
            .await;
    }
    assert!(cache.size().0 >= 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let creds = credentials(AK, SECRET, None);
    cache
        .describe(&creds, "cn-hangzhou", "i-cache00000001", Instant::now())
        .await
        .expect("describe");
    assert_eq!(cache.size(), (1, 1), "(groups, answers)");
}

#[tokio::test]
async fn a_wave_of_look_ups_goes_out_in_full_batches_and_a_lone_one_at_once() {
    let sim = sim_with(300).await;
    sim.with_faults(|f| f.latency_ms = 20);
    let wave = cache(&sim, Duration::from_secs(60));
    let creds = credentials(AK, SECRET, None);
    // 300 new objects, one every 2 ms (500 a second), each describing its instance after its apply.
    let look_ups = ids(300).into_iter().enumerate().map(|(i, (id, _))| {
        let wave = wave.clone();
        let creds = creds.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
            wave.describe(&creds, "cn-hangzhou", &id, Instant::now())
                .await
        }
    });
    let results = futures::future::join_all(look_ups).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Some(_)))),
        "every instance described"
    );
    // The first goes out alone at once; the rest fill batches of up to 100 IDs.
    let calls = sim.calls("DescribeInstances");
    assert!(
        calls <= 300 / 100 + 3,
        "{calls} DescribeInstances for 300 look-ups"
    );

    // Much later, a lone look-up is not held back for a batch.
    let quiet = cache(&sim, Duration::from_secs(60));
    let before = sim.calls("DescribeInstances");
    let started = Instant::now();
    quiet
        .describe(&creds, "cn-hangzhou", "i-cache00000007", Instant::now())
        .await
        .expect("describe");
    assert_eq!(sim.calls("DescribeInstances"), before + 1);
    assert!(
        started.elapsed() < ecs_vnc_controller::controller::instances::LINGER,
        "a lone look-up waited {:?}",
        started.elapsed()
    );
}

/// What a tag rule of the controller will read: the tags ECS reports on each instance, through the
/// controller's own client and parser; a change made in the console is seen on the next call.
#[tokio::test]
async fn the_client_reads_the_tags_each_instance_carries() {
    let sim = sim_with(1).await;
    sim.add_tagged_instance(
        "i-tagged0000001",
        false,
        &[("ecsvnc.io/namespace", "team-a"), ("owner", "")],
    );
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        ..ClientConfig::default()
    })
    .expect("client");
    let creds = credentials(AK, SECRET, None);
    let ids = vec!["i-cache00000000".to_string(), "i-tagged0000001".to_string()];
    let describe = || client.describe_instances(&creds, "cn-hangzhou", &ids);
    let found = describe().await.expect("describe");
    let tags = |id: &str| {
        found
            .iter()
            .find(|i| i.instance_id == id)
            .map(|i| i.tags.clone())
            .expect("described")
    };
    assert!(tags("i-cache00000000").is_empty());
    let as_map = |tags: ecs_vnc_controller::ecs::types::Tags| {
        tags.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(as_map(tags("i-tagged0000001")), sim.tags("i-tagged0000001"));
    assert_eq!(tags("i-tagged0000001")["ecsvnc.io/namespace"], "team-a");
    assert_eq!(tags("i-tagged0000001")["owner"], "");

    sim.set_tags("i-tagged0000001", &[("ecsvnc.io/namespace", "team-b")]);
    sim.set_tags("i-cache00000000", &[("ecsvnc.io/namespace", "team-a")]);
    let found = describe().await.expect("describe");
    let namespace = |id: &str| {
        found
            .iter()
            .find(|i| i.instance_id == id)
            .and_then(|i| i.tags.get("ecsvnc.io/namespace").cloned())
    };
    assert_eq!(namespace("i-tagged0000001").as_deref(), Some("team-b"));
    assert_eq!(namespace("i-cache00000000").as_deref(), Some("team-a"));
    sim.set_tags("i-tagged0000001", &[]);
    let found = describe().await.expect("describe");
    assert!(
        found
            .iter()
            .find(|i| i.instance_id == "i-tagged0000001")
            .is_some_and(|i| i.tags.is_empty())
    );
}

/// A batch whose every waiter gave up (a reconcile past its deadline, a lost Lease) still completes
/// and leaves the cache: it never stays behind holding credentials and a slot.
#[tokio::test]
async fn a_batch_whose_waiters_all_gave_up_still_completes_and_leaves() {
    let sim = sim_with(3).await;
    let cache = cache(&sim, Duration::from_secs(60));
    let creds = credentials(AK, SECRET, None);
    sim.with_faults(|f| f.latency_ms = 500);
    let id = ids(1).remove(0).0;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        cache.describe(&creds, "cn-hangzhou", &id, Instant::now()),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the look-up was cancelled while the call was on its way"
    );
    support::eventually("the batch to complete", Duration::from_secs(10), || async {
        (cache.in_flight() == 0).then_some(())
    })
    .await;
    assert_eq!(sim.calls("DescribeInstances"), 1);
    // Its answer serves the next look-up without another call.
    let answer = cache
        .describe(
            &creds,
            "cn-hangzhou",
            &id,
            Instant::now() - Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert!(answer.is_some());
    assert_eq!(sim.calls("DescribeInstances"), 1);
}
