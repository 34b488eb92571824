//! ECS chaos: 300 VncPasswords while ECS answers 30 % of calls with 5xx, throttles in bursts (and
//! beyond 40 calls per second), adds
//! 0–3 s of latency and drops 5 % of connections, for `CHAOS`. Once the chaos stops everything
//! converges; ECS write calls per object stay within a stated bound; the controller never sends
//! more than its configured rate.
//!
//! A RebootInstance that got a 5xx or no answer may have happened, so the controller never sends it
//! again for that password: after `--reboot-timeout` such objects say `RebootNotObserved`, and the
//! test then does what the message tells a person to do (a new `force-apply-requested-at`).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use ecs_vnc_controller::simulator::{FaultConfig, Simulator, SimulatorConfig};
use support::TestNamespace;
use support::controller::{
    ControllerOptions, credentials, put_secret, put_vncpassword, start_controller,
};

const OBJECTS: usize = 300;
const AK: &str = "LTAIchaos";
const AK_SECRET: &str = "chaos-secret";
const CHAOS: Duration = Duration::from_secs(120);
const CONVERGE: Duration = Duration::from_secs(300);
const QPS: f64 = 50.0;
const BURST: u32 = 25;
/// ModifyInstanceVncPasswd and RebootInstance attempts per object: the per-object backoff (5 s
/// doubling, jittered down to half) allows at most 7 reconciles in the 120 s of chaos, each
/// making at most one write call with at most 2 retries (21), plus a re-request afterwards.
const WRITES_PER_OBJECT: usize = 24;

fn instance(i: usize) -> String {
    format!("i-chaos{i:07}")
}

/// Every tenth object is on a non-I/O-optimized instance with `rebootPolicy: Automatic`.
fn automatic(i: usize) -> bool {
    i.is_multiple_of(10)
}

fn chaos() -> FaultConfig {
    FaultConfig {
        error_rate: 0.3,
        drop_rate: 0.05,
        latency_ms: 0,
        latency_jitter_ms: 3000,
        qps_per_access_key: Some(40.0),
        ..FaultConfig::default()
    }
}

/// ECS calls sent so far, per action (the controller's rate limits are per account, region and
/// action, as ECS's are).
async fn ecs_calls_sent(metrics: SocketAddr) -> HashMap<String, f64> {
    let mut sent = HashMap::new();
    let Ok(response) = reqwest::get(format!("http://{metrics}/metrics")).await else {
        return sent;
    };
    let text = response.text().await.unwrap_or_default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("ecs_vnc_ecs_calls_total{action=\""))
    {
        let action = line["ecs_vnc_ecs_calls_total{action=\"".len()..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string();
        if let Some(n) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sent.entry(action).or_default() += n;
        }
    }
    sent
}

#[tokio::test]
async fn everything_converges_after_ecs_chaos_with_bounded_calls_and_rate() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "chaos").await;
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            reboot_seconds: 5.0,
            reboot_seconds_max: 15.0,
            faults: chaos(),
            ..support::sim::fleet(
                AK,
                AK_SECRET,
                (0..OBJECTS).map(|i| (instance(i), !automatic(i))),
            )
        },
    )
    .await
    .expect("simulator");
    let state = sim.state().clone();
    let controller = start_controller(ControllerOptions {
        namespace: Some(ns.name.clone()),
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: ns.name.clone(),
        controller_namespace: Some(ns.name.clone()),
        flags: vec![
            format!("--ecs-qps={QPS}"),
            format!("--ecs-burst={BURST}"),
            "--ecs-max-retries=2".into(),
            "--ecs-timeout=10".into(),
            "--reboot-timeout=30".into(),
            "--concurrency=16".into(),
        ],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    let started = Instant::now();
    futures::stream::iter(0..OBJECTS)
        .for_each_concurrent(16, |i| {
            let (client, ns) = (client.clone(), ns.name.clone());
            async move {
                put_secret(
                    &client,
                    &ns,
                    &format!("pw-{i}"),
                    &[("password", &format!("C{i:05}"))],
                )
                .await;
                let mut spec = json!({
                    "regionId": "cn-hangzhou", "instanceId": instance(i),
                    "passwordSecretRef": {"name": format!("pw-{i}")},
                });
                if automatic(i) {
                    spec["rebootPolicy"] = json!("Automatic");
                }
                put_vncpassword(&client, &ns, &format!("vp-{i}"), spec).await;
            }
        })
        .await;

    // The rate the controller sends each action at, from its own counter, once a second during
    // the chaos.
    let mut per_second: Vec<HashMap<String, f64>> = Vec::new();
    let mut last = ecs_calls_sent(controller.metrics_addr).await;
    let mut bursts = 0;
    while started.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Throttling bursts: the next 40 calls refused, twice.
        if started.elapsed() > Duration::from_secs(30 + 40 * bursts) && bursts < 2 {
            state.throttle_next(40, None);
            bursts += 1;
        }
        let now = ecs_calls_sent(controller.metrics_addr).await;
        per_second.push(
            now.iter()
                .map(|(a, n)| (a.clone(), n - last.get(a).copied().unwrap_or(0.0)))
                .collect(),
        );
        last = now;
    }
    state.set_faults(FaultConfig::default());
    let chaos_calls = state.total_calls();

    let api: Api<VncPassword> = Api::namespaced(client.clone(), &ns.name);
    let deadline = Instant::now() + CONVERGE;
    let mut re_requested = 0usize;
    loop {
        let objects = api.list(&ListParams::default()).await.expect("list");
        let mut not_ready = 0;
        for o in &objects.items {
            let ready = o.status.as_ref().and_then(|s| s.condition("Ready"));
            match ready {
                Some(c) if c.status == "True" => {}
                Some(c) if c.reason == "RebootNotObserved" => {
                    not_ready += 1;
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let token = o
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("ecsvnc.io/force-apply-requested-at"))
                        .cloned();
                    if token.is_none() {
                        api.patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"annotations": {
                                "ecsvnc.io/force-apply-requested-at": "after-chaos"}}})),
                        )
                        .await
                        .expect("annotate");
                        re_requested += 1;
                    }
                }
                _ => not_ready += 1,
            }
        }
        let wrong = (0..OBJECTS)
            .filter(|i| {
                state
                    .instance(&instance(*i))
                    .and_then(|v| v.effective_password)
                    != Some(format!("C{i:05}"))
            })
            .count();
        if not_ready == 0 && wrong == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not converged {CONVERGE:?} after the chaos: {not_ready} not Ready, {wrong} instances without their password"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let converged = started.elapsed();

    let mut writes: HashMap<String, usize> = HashMap::new();
    for call in state.call_log() {
        if matches!(
            call.action.as_str(),
            "ModifyInstanceVncPasswd" | "RebootInstance"
        ) && let Some(id) = call.instance_id
        {
            *writes.entry(id).or_default() += 1;
        }
    }
    let max_writes = writes.values().copied().max().unwrap_or_default();
    // The busiest action's busiest second, and the busiest action's mean.
    let max_rate = per_second
        .iter()
        .flat_map(|s| s.values().copied())
        .fold(0.0, f64::max);
    let mut totals: HashMap<&str, f64> = HashMap::new();
    for second in &per_second {
        for (action, n) in second {
            *totals.entry(action.as_str()).or_default() += n;
        }
    }
    let mean_rate = totals.values().copied().fold(0.0, f64::max) / per_second.len().max(1) as f64;
    println!(
        "ECS chaos: {OBJECTS} objects, {:.0} s of chaos ({} ECS calls, {} 5xx, {} throttled, {} dropped); all converged after {:.0} s; \
         write calls per object max {max_writes} (bound {WRITES_PER_OBJECT}); sent per second of one action max {max_rate:.0}, mean {mean_rate:.1} \
         (--ecs-qps {QPS}, --ecs-burst {BURST}); reboots re-requested after RebootNotObserved: {re_requested}",
        CHAOS.as_secs_f64(),
        chaos_calls,
        state
            .call_log()
            .iter()
            .filter(|c| c.http_status >= 500)
            .count(),
        state
            .call_log()
            .iter()
            .filter(|c| c.code.starts_with("Throttling"))
            .count(),
        state
            .call_log()
            .iter()
            .filter(|c| c.code == "ConnectionDropped")
            .count(),
        converged.as_secs_f64(),
    );
    assert!(
        max_writes <= WRITES_PER_OBJECT,
        "{max_writes} write calls for one object"
    );
    // A token bucket per action of QPS per second with BURST tokens: no second sees more of one
    // action than both.
    assert!(
        max_rate <= QPS + f64::from(BURST),
        "{max_rate} calls in one second"
    );
    assert!(mean_rate <= QPS, "{mean_rate} calls per second on average");
    controller.stop().await;
    ns.delete().await;
}
