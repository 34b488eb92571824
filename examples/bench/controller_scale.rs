//! The controller at scale: N VncPasswords in K namespaces on a real kube-apiserver
//! (tests/control-plane), the controller running as its own process (`ecs-vnc-controller run`,
//! release build) against the ECS simulator, which limits each API per account like ECS does and
//! adds a fixed latency to every call.
//!
//!     cargo run --release --example controller_scale -- --objects 1000 --namespaces 10 \
//!         --qps 100 --latency-ms 20
//!
//! Prints, for the initial wave (every object created before the controller starts): the time until
//! every I/O-optimized object is Ready and its ratio to N / QPS; ECS calls per object per action and
//! the throttled ones; reconciles and status writes per object; Kubernetes API requests per object
//! (from the API server's own `apiserver_request_total`); the controller's peak RSS. Then a restart
//! with everything applied (ECS calls that write, status writes, time until every object was
//! reconciled once), and Secret rotations one at a time while the rest sit idle (p50/p99 from the
//! Secret update to the status naming its new resourceVersion). Set TEST_KUBECONFIG to use an
//! existing cluster instead of starting a control plane.
//!
//! `--scenario hostile-secrets` instead runs issue 20's item 7: 150 VncPasswords naming one Secret
//! of 0.9 MB that is changed 5 times, and 100 other Secrets carrying a 200 KB annotation each, all
//! in one namespace and created before the controller starts; it prints the time each round took
//! to settle, the Secret reads per round and the controller's peak RSS.
//!
//! `--scenario set` runs issue 24's fleet: N simulated instances (5,000 unless --objects says
//! otherwise) and as many Nodes of one node pool, then ONE VncPasswordSet selecting them by Node
//! label; it prints the time from the set's creation until it reports `Ready=True`/`AllReady` with
//! every instance selected and ready, its ratio to N / QPS, the status writes to the set and per
//! child, API requests and ECS calls per child, whether every instance got its password exactly
//! once, and the controller's peak RSS.
//!
//! `--scenario shards` runs issue 25's benchmark (see controller_scale/shards.rs): N VncPasswords
//! (40,000 unless --objects says otherwise) over --accounts accounts (8; each its own limit of
//! --qps per API, reached through a credentials Secret per namespace), served by --replicas
//! processes (4) with `--leader-elect --shards S` (S = --shards, else --replicas); prints the wave
//! (with the replicas' split of the shards), a restart and rotations, or with --kill-after F
//! SIGKILLs one replica once F x N passwords are accepted and prints the takeover and every
//! password applied more than once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use ecs_vnc_controller::api::{VncPassword, VncPasswordSet, VncPasswordStatus, condition};
#[path = "controller_scale/shards.rs"]
mod shards;

use ecs_vnc_controller::simulator::{
    AccessKeyConfig, FaultConfig, InstanceConfig, RunningSimulator, Simulator, SimulatorConfig,
};

const KEY_ID: &str = "LTAIscale";
const KEY_SECRET: &str = "scale-secret";

#[derive(Parser, Debug)]
struct Args {
    /// VncPasswords (each with its own Secret and instance); with `set`, the instances and Nodes
    /// the one set selects. Default 1,000, 5,000 with `set`.
    #[arg(long)]
    objects: Option<usize>,
    /// Namespaces they are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// ECS's limit per API (calls per second per account and action); the controller is given
    /// the same with --ecs-qps.
    #[arg(long, default_value_t = 100.0)]
    qps: f64,
    /// Latency the simulator adds to every ECS call.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Percent of instances that are not I/O-optimized (they wait for a restart, rebootPolicy
    /// Manual).
    #[arg(long, default_value_t = 10)]
    non_io_percent: usize,
    /// Secret rotations measured one at a time after the wave.
    #[arg(long, default_value_t = 100)]
    rotations: usize,
    /// Extra flags for `ecs-vnc-controller run` (e.g. --extra=--concurrency=64).
    #[arg(long)]
    extra: Vec<String>,
    /// `wave` (the above), `hostile-secrets` (issue 20, item 7; ignores --objects and
    /// --namespaces) or `reboot-herd` (every object Automatic on an instance that is not
    /// I/O-optimized, one reboot window shared by all, RebootInstance limited to --reboot-qps)
    /// or `set` (issue 24: one VncPasswordSet over N Nodes; ignores --namespaces,
    /// --non-io-percent and --rotations) or `shards` (issue 25: N objects over --accounts
    /// accounts, --replicas replicas sharing --shards).
    #[arg(long, value_enum, default_value = "wave")]
    scenario: Scenario,
    /// With `reboot-herd`: RebootInstance calls per second for the account (the controller's
    /// `--ecs-qps ...,RebootInstance=N`).
    #[arg(long, default_value_t = 5.0)]
    reboot_qps: f64,
    /// With `shards`: controller replicas, each its own process (`--leader-elect`).
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// With `shards`: `--shards` of every replica (default: as many as --replicas).
    #[arg(long)]
    shards: Option<u16>,
    /// With `shards`: Alibaba Cloud accounts the objects are spread over (one AccessKey each, in
    /// a credentials Secret per namespace), each with its own limit of --qps per API.
    #[arg(long, default_value_t = 8)]
    accounts: usize,
    /// With `shards`: SIGKILL one replica (the one holding the most shards) once this fraction of
    /// the objects have had their password accepted by ECS; no restart or rotations then.
    #[arg(long)]
    kill_after: Option<f64>,
    /// With `shards`: --leader-elect-lease-duration, -renew-deadline and -retry-period (seconds).
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    #[arg(long, default_value_t = 10)]
    renew_deadline: u64,
    #[arg(long, default_value_t = 2)]
    retry_period: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Wave,
    HostileSecrets,
    RebootHerd,
    Set,
    Shards,
}

/// What the benchmark's own watch has seen.
#[derive(Default)]
struct Seen {
    /// (namespace/name) → when Ready turned True.
    ready: HashMap<String, Instant>,
    /// (namespace/name) → status.applied.secret.resourceVersion, when it changed.
    applied_rv: HashMap<String, (String, Instant)>,
    /// Objects not I/O-optimized whose instance was looked at after the apply (the start-time
    /// baseline a restart is judged by, `status.instance.startTimeAtApply`).
    baselined: HashSet<String>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.objects.unwrap_or(1000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = build_controller(&root);
    ecs_vnc_controller::ecs::client::install_crypto_provider();

    let (kubeconfig, cp_dir) = match std::env::var_os("TEST_KUBECONFIG") {
        Some(k) => (PathBuf::from(k), None),
        None => {
            let dir = std::env::temp_dir().join(format!("ecs-vnc-scale-{}", std::process::id()));
            let ok = Command::new(root.join("tests/control-plane/start"))
                .arg(&dir)
                .status()
                .expect("start");
            assert!(ok.success(), "tests/control-plane/start failed");
            (dir.join("kubeconfig"), Some(dir))
        }
    };
    let client = client(&kubeconfig).await;
    // Both CRDs: the controller watches VncPasswordSets too, whatever the scenario.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (file, name) in [
        ("crds/vncpassword.yaml", "vncpasswords.ecsvnc.io"),
        ("crds/vncpasswordset.yaml", "vncpasswordsets.ecsvnc.io"),
    ] {
        let crd: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join(file)).unwrap()).unwrap();
        crds.patch(
            name,
            &PatchParams::apply("scale").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD");
        kube::runtime::wait::await_condition(
            crds.clone(),
            name,
            kube::runtime::wait::conditions::is_crd_established(),
        )
        .await
        .expect("CRD established");
    }
    if args.scenario == Scenario::HostileSecrets {
        hostile_secrets(&client, &binary, &kubeconfig, &args).await;
        stop_control_plane(&root, cp_dir);
        return;
    }
    if args.scenario == Scenario::Set {
        set_scenario(&client, &binary, &kubeconfig, &args).await;
        stop_control_plane(&root, cp_dir);
        return;
    }
    if args.scenario == Scenario::Shards {
        shards::shards_scenario(&client, &binary, &kubeconfig, &args).await;
        stop_control_plane(&root, cp_dir);
        return;
    }
    if args.scenario == Scenario::RebootHerd {
        reboot_herd(&client, &binary, &kubeconfig, &args).await;
        stop_control_plane(&root, cp_dir);
        return;
    }
    let namespaces: Vec<String> = (0..args.namespaces.max(1))
        .map(|i| format!("scale-{i}"))
        .collect();
    create_namespaces(&client, namespaces.iter().map(String::as_str)).await;

    let instance = |i: usize| format!("i-scale{i:08}");
    let non_io = |i: usize| i % 100 < args.non_io_percent;
    let place = |i: usize| (namespaces[i % namespaces.len()].clone(), format!("vm-{i}"));
    let sim = simulator(&args, (0..n).map(|i| (instance(i), !non_io(i), place(i).0))).await;
    println!(
        "creating {n} Secrets and VncPasswords in {} namespaces ...",
        namespaces.len()
    );
    let created = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (ns, name) = place(i);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let vncpw: Api<VncPassword> = Api::namespaced(client.clone(), &ns);
            let instance = instance(i);
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-vnc")}, "stringData": {"password": format!("P{i:05}")}
                })).expect("secret");
                let _ = secrets.create(&PostParams::default(), &secret).await;
                let obj = json!({"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword", "metadata": {"name": name},
                    "spec": {"regionId": "cn-hangzhou", "instanceId": instance, "passwordSecretRef": {"name": format!("{name}-vnc")}}});
                vncpw.patch(&name, &PatchParams::apply("scale"), &Patch::Apply(&obj)).await.expect("apply");
            }
        })
        .await;
    println!("  created in {:.1} s", created.elapsed().as_secs_f64());

    // The benchmark's own view: one watch over every VncPassword.
    let (seen, watch) = watch_seen(&client);
    let io_count = (0..n).filter(|i| !non_io(*i)).count();

    // 1. The initial wave.
    let before = apiserver_requests(&client).await;
    let metrics_addr = free_addr();
    let started = Instant::now();
    let mut controller = start_controller(&binary, &kubeconfig, &sim, &args, metrics_addr);
    wait_until(Duration::from_secs(1800), || {
        seen.lock().unwrap().ready.len() >= io_count
    })
    .await;
    let t_ready = started.elapsed();
    // The rest settle: RebootRequired for the others, and their instance looked at once after the
    // apply (its start-time baseline, the poll `--poll-interval` later, queued behind the wave):
    // no more ECS or status work pending.
    wait_until(Duration::from_secs(1800), || {
        scrape_sum(metrics_addr, "ecs_vnc_vncpasswords{") as usize >= n
            && scrape_reason(metrics_addr, "RebootRequired") as usize >= n - io_count
            && seen.lock().unwrap().baselined.len() >= n - io_count
    })
    .await;
    let t_settled = started.elapsed();
    let reconciles = scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{");
    let calls = sim.state().counts();
    let after = apiserver_requests(&client).await;
    let rss_wave = peak_rss(controller.id());
    let bound = n as f64 / args.qps;
    let per = |x: f64| x / n as f64;

    println!(
        "\ncontroller at scale: {n} VncPasswords in {} namespaces ({} non-I/O-optimized), ECS limit {} QPS per API, {} ms per call, controller flags {:?}",
        namespaces.len(),
        n - io_count,
        args.qps,
        args.latency_ms,
        controller_flags(&sim, &args, metrics_addr)
    );
    println!(
        "initial wave: all {io_count} I/O-optimized Ready in {:.1} s = {:.2} x N/QPS ({bound:.1} s); everything settled in {:.1} s",
        t_ready.as_secs_f64(),
        t_ready.as_secs_f64() / bound,
        t_settled.as_secs_f64()
    );
    for (action, codes) in &calls {
        let total: u64 = codes.values().sum();
        let throttled: u64 = codes
            .iter()
            .filter(|(c, _)| c.starts_with("Throttling"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "  ECS {action}: {total} calls ({:.3} per object), {throttled} throttled",
            per(total as f64)
        );
    }
    println!("  reconciles per object: {:.2}", per(reconciles));
    let delta = diff(&before, &after);
    println!(
        "  status writes per object: {:.2}",
        per(status_writes(&delta))
    );
    println!(
        "  Kubernetes API requests per object: {:.2} ({})",
        per(delta.values().sum()),
        describe(&delta, n)
    );
    println!("  controller peak RSS (VmHWM): {rss_wave}");

    // 2. A restart with everything applied.
    stop(&mut controller);
    let before = apiserver_requests(&client).await;
    let calls_before = sim.state().counts();
    let restarted = Instant::now();
    let mut controller = start_controller(&binary, &kubeconfig, &sim, &args, metrics_addr);
    wait_until(Duration::from_secs(600), || {
        scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{") as usize >= n
    })
    .await;
    let t_restart = restarted.elapsed();
    let after = apiserver_requests(&client).await;
    let calls_after = sim.state().counts();
    let writes = |c: &BTreeMap<String, BTreeMap<String, u64>>| -> u64 {
        ["ModifyInstanceVncPasswd", "RebootInstance"]
            .iter()
            .filter_map(|a| c.get(*a))
            .flat_map(|codes| codes.values())
            .sum()
    };
    let describes = |c: &BTreeMap<String, BTreeMap<String, u64>>| -> u64 {
        c.get("DescribeInstances")
            .map_or(0, |codes| codes.values().sum())
    };
    let delta = diff(&before, &after);
    println!(
        "restart: every object reconciled once in {:.1} s; ECS calls that write: {}; DescribeInstances: {}; status writes: {}; Kubernetes API requests: {:.0} ({})",
        t_restart.as_secs_f64(),
        writes(&calls_after) - writes(&calls_before),
        describes(&calls_after) - describes(&calls_before),
        status_writes(&delta),
        delta.values().sum::<f64>(),
        describe(&delta, 1)
    );

    // 3. Rotations, one at a time, the other objects idle.
    let targets: Vec<(String, String)> = (0..args.rotations.min(io_count))
        .map(|k| {
            let i = (0..n)
                .filter(|i| !non_io(*i))
                .nth(k * io_count / args.rotations.max(1))
                .unwrap();
            place(i)
        })
        .collect();
    rotations(&client, &seen, &targets, n).await;
    println!(
        "controller peak RSS after the restart and the rotations (VmHWM): {}",
        peak_rss(controller.id())
    );

    stop(&mut controller);
    watch.abort();
    stop_control_plane(&root, cp_dir);
}

/// Rotates the Secret `<name>-vnc` of each of these objects (namespace, name), one at a time, and
/// prints the p50/p99/max from the Secret's update to the status naming its new resourceVersion.
async fn rotations(client: &Client, seen: &Mutex<Seen>, targets: &[(String, String)], n: usize) {
    let mut latencies = Vec::new();
    for (k, (ns, name)) in targets.iter().enumerate() {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let patch = json!({"stringData": {"password": format!("R{k:05}")}});
        let t0 = Instant::now();
        let written = secrets
            .patch(
                &format!("{name}-vnc"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("rotate");
        let rv = written.resource_version().unwrap_or_default();
        let key = format!("{ns}/{name}");
        wait_until(Duration::from_secs(60), || {
            seen.lock()
                .unwrap()
                .applied_rv
                .get(&key)
                .is_some_and(|(r, _)| *r == rv)
        })
        .await;
        let at = seen.lock().unwrap().applied_rv[&key].1;
        latencies.push(at.duration_since(t0));
    }
    latencies.sort();
    if !latencies.is_empty() {
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        println!(
            "rotation -> applied ({} Secrets, one at a time, {} objects idle): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            latencies.len(),
            n - 1,
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            latencies.last().unwrap().as_secs_f64() * 1000.0
        );
    }
}

/// The benchmark's own view: one watch over every VncPassword, recording when each turned Ready
/// and when its applied Secret version changed.
fn watch_seen(client: &Client) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = {
        let seen = seen.clone();
        let api: Api<VncPassword> = Api::all(client.clone());
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(o)) = stream.next().await {
                let now = Instant::now();
                let mut seen = seen.lock().unwrap();
                let status = o.status.as_ref();
                let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
                if status.is_some_and(|s| s.is_true(condition::READY)) {
                    seen.ready.entry(key.clone()).or_insert(now);
                }
                if status.is_some_and(|s| {
                    s.instance.io_optimized == Some(false)
                        && s.instance.start_time_at_apply.is_some()
                }) {
                    seen.baselined.insert(key.clone());
                }
                if let Some(rv) = status
                    .and_then(|s| s.applied.secret.as_ref())
                    .map(|a| a.resource_version.clone())
                    && seen.applied_rv.get(&key).is_none_or(|(r, _)| *r != rv)
                {
                    seen.applied_rv.insert(key, (rv, now));
                }
            }
        })
    };
    (seen, watch)
}

fn stop_control_plane(root: &Path, dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        let _ = Command::new(root.join("tests/control-plane/stop"))
            .arg(&dir)
            .status();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Issue 20, item 7: one large Secret named by many VncPasswords and changed, and Secrets padded
/// with large foreign annotations, as a tenant could write them.
async fn hostile_secrets(client: &Client, binary: &Path, kubeconfig: &Path, args: &Args) {
    const OBJECTS: usize = 150;
    const BIG_SECRET_BYTES: usize = 900_000;
    const CHANGES: usize = 5;
    const PADDED_SECRETS: usize = 100;
    const ANNOTATION_BYTES: usize = 200_000;
    let ns = "hostile-0";
    create_namespaces(client, [ns].into_iter()).await;
    let instance = |i: usize| format!("i-hostile{i:07}");
    let sim = simulator(
        args,
        (0..OBJECTS).map(|i| (instance(i), true, ns.to_string())),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let vncpw: Api<VncPassword> = Api::namespaced(client.clone(), ns);
    println!(
        "creating a Secret of {BIG_SECRET_BYTES} bytes named by {OBJECTS} VncPasswords, and {PADDED_SECRETS} Secrets with a {ANNOTATION_BYTES}-byte annotation ..."
    );
    let big: Secret = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "stringData": {"password": "Big000", "padding": "p".repeat(BIG_SECRET_BYTES)},
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &big)
        .await
        .expect("big Secret");
    futures::stream::iter(0..PADDED_SECRETS)
        .for_each_concurrent(8, |i| {
            let secrets = secrets.clone();
            async move {
                let padded: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("padded-{i}"),
                                 "annotations": {"example.com/padding": "a".repeat(ANNOTATION_BYTES)}},
                    "stringData": {"password": format!("Pad{i:03}")},
                }))
                .expect("secret");
                secrets
                    .create(&PostParams::default(), &padded)
                    .await
                    .expect("padded Secret");
            }
        })
        .await;
    futures::stream::iter(0..OBJECTS)
        .for_each_concurrent(16, |i| {
            let vncpw = vncpw.clone();
            async move {
                let name = format!("vm-{i}");
                let obj = json!({"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword", "metadata": {"name": name},
                    "spec": {"regionId": "cn-hangzhou", "instanceId": instance(i), "passwordSecretRef": {"name": "big"}}});
                vncpw
                    .patch(&name, &PatchParams::apply("scale"), &Patch::Apply(&obj))
                    .await
                    .expect("apply");
            }
        })
        .await;

    // Settled: every object applied the Secret's version `rv`, or stalled on it.
    let settled = |rv: String| {
        let vncpw = vncpw.clone();
        async move {
            let list = vncpw.list(&Default::default()).await.expect("list");
            list.items.len() == OBJECTS
                && list.items.iter().all(|o| {
                    let Some(s) = o.status.as_ref() else {
                        return false;
                    };
                    let applied = s.is_true(condition::READY)
                        && s.applied
                            .secret
                            .as_ref()
                            .is_some_and(|a| a.resource_version == rv);
                    applied || s.is_true(condition::STALLED)
                })
        }
    };
    let secret_reads =
        |d: &BTreeMap<String, f64>| d.get("GET secrets").copied().unwrap_or_default();
    let metrics_addr = free_addr();
    let before = apiserver_requests(client).await;
    let started = Instant::now();
    let mut controller = start_controller(binary, kubeconfig, &sim, args, metrics_addr);
    let rv = secrets
        .get("big")
        .await
        .expect("big")
        .resource_version()
        .unwrap_or_default();
    wait_until_async(Duration::from_secs(600), || settled(rv.clone())).await;
    let after = apiserver_requests(client).await;
    println!(
        "\nhostile Secrets: {OBJECTS} VncPasswords naming one {BIG_SECRET_BYTES}-byte Secret, {PADDED_SECRETS} Secrets with {ANNOTATION_BYTES}-byte annotations, controller flags {:?}",
        controller_flags(&sim, args, metrics_addr)
    );
    println!(
        "  start: settled in {:.1} s, Secret reads {:.0}, peak RSS so far {}",
        started.elapsed().as_secs_f64(),
        secret_reads(&diff(&before, &after)),
        peak_rss(controller.id())
    );
    for change in 1..=CHANGES {
        let reconciles = scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{");
        let before = apiserver_requests(client).await;
        let t0 = Instant::now();
        let written = secrets
            .patch(
                "big",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"password": format!("Big{change:03}")}})),
            )
            .await
            .expect("change the big Secret");
        let rv = written.resource_version().unwrap_or_default();
        // Every object is looked at again (stalled ones too), then settles.
        wait_until(Duration::from_secs(600), || {
            scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{") >= reconciles + OBJECTS as f64
        })
        .await;
        wait_until_async(Duration::from_secs(600), || settled(rv.clone())).await;
        let after = apiserver_requests(client).await;
        println!(
            "  change {change}: settled in {:.1} s, Secret reads {:.0}, peak RSS so far {}",
            t0.elapsed().as_secs_f64(),
            secret_reads(&diff(&before, &after)),
            peak_rss(controller.id())
        );
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for o in vncpw.list(&Default::default()).await.expect("list").items {
        let reason = o
            .status
            .as_ref()
            .and_then(|s| s.condition(condition::READY))
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        *reasons.entry(reason).or_default() += 1;
    }
    println!(
        "  objects by Ready reason: {reasons:?}\n  controller peak RSS (VmHWM): {}",
        peak_rss(controller.id())
    );
    stop(&mut controller);
}

/// Issue 21's herd: N objects, Automatic, on instances that are not I/O-optimized, all applied
/// before one shared reboot window opens; RebootInstance limited to --reboot-qps for the account.
/// Prints the time from the window's opening until every object is Ready, its ratio to
/// N / reboot-qps, reboots per instance, and what the controller spent on the way.
async fn reboot_herd(client: &Client, binary: &Path, kubeconfig: &Path, args: &Args) {
    let n = args.objects.unwrap_or(1000);
    let namespaces: Vec<String> = (0..args.namespaces.max(1))
        .map(|i| format!("herd-{i}"))
        .collect();
    create_namespaces(client, namespaces.iter().map(String::as_str)).await;
    let instance = |i: usize| format!("i-herd{i:09}");
    let place = |i: usize| (namespaces[i % namespaces.len()].clone(), format!("vm-{i}"));
    let sim = simulator(args, (0..n).map(|i| (instance(i), false, place(i).0))).await;
    // Created with a window twelve hours away; once every object is applied and waits for it, the
    // window is moved to open at the next whole minute (at least a minute ahead) for everyone, so
    // the measurement starts with the whole herd waiting however long the apply wave took.
    let window_at = |t: jiff::Timestamp| {
        let s = t.as_second();
        let opens = jiff::Timestamp::from_second(s - s.rem_euclid(60) + 60).unwrap();
        let at = opens.to_zoned(jiff::tz::TimeZone::UTC);
        (opens, format!("{} {} * * *", at.minute(), at.hour()))
    };
    let (_, schedule) = window_at(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(12));
    println!("creating {n} Automatic VncPasswords, their shared window closed ...");
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (ns, name) = place(i);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let vncpw: Api<VncPassword> = Api::namespaced(client.clone(), &ns);
            let (instance, schedule) = (instance(i), schedule.clone());
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-vnc")}, "stringData": {"password": format!("H{i:05}")}
                })).expect("secret");
                secrets.create(&PostParams::default(), &secret).await.expect("Secret");
                let obj = json!({"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword", "metadata": {"name": name},
                    "spec": {"regionId": "cn-hangzhou", "instanceId": instance, "passwordSecretRef": {"name": format!("{name}-vnc")},
                             "rebootPolicy": "Automatic",
                             "rebootWindows": [{"schedule": schedule, "duration": "2h", "timeZone": "UTC"}]}});
                vncpw.patch(&name, &PatchParams::apply("scale"), &Patch::Apply(&obj)).await.expect("apply");
            }
        })
        .await;
    let metrics_addr = free_addr();
    let flags: Vec<String> = controller_flags(&sim, args, metrics_addr)
        .into_iter()
        .map(|f| {
            if f.starts_with("--ecs-qps=") {
                format!("--ecs-qps={},RebootInstance={}", args.qps, args.reboot_qps)
            } else {
                f
            }
        })
        .collect();
    let mut controller = spawn_controller(binary, kubeconfig, &flags);
    let all: Api<VncPassword> = Api::all(client.clone());
    // How many objects' status `holds`.
    let count_where = |holds: fn(&VncPasswordStatus, &str) -> bool, arg: &'static str| {
        let all = all.clone();
        async move {
            all.list(&Default::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|o| o.status.as_ref().is_some_and(|s| holds(s, arg)))
                        .count()
                })
                .unwrap_or(0)
        }
    };
    let by_reason = |s: &VncPasswordStatus, reason: &str| {
        s.condition(condition::READY)
            .is_some_and(|c| c.reason == reason)
    };
    let count = |reason: &'static str| count_where(by_reason, reason);
    let waiting = || count_where(|s, _| s.is_true(condition::REBOOT_REQUIRED), "");
    wait_until_async(Duration::from_secs(1800), || async { waiting().await == n }).await;
    let (opens, schedule) = window_at(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60));
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (ns, name) = place(i);
            let vncpw: Api<VncPassword> = Api::namespaced(client.clone(), &ns);
            let schedule = schedule.clone();
            async move {
                let patch = json!({"spec": {"rebootWindows": [{"schedule": schedule, "duration": "2h", "timeZone": "UTC"}]}});
                vncpw.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("window");
            }
        })
        .await;
    println!(
        "all {n} applied and waiting; their window now opens at {opens} ({schedule} UTC, 2h) ..."
    );
    let before = apiserver_requests(client).await;
    let reconciles = scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{");
    let until_open = opens.duration_since(jiff::Timestamp::now());
    if let Ok(d) = Duration::try_from(until_open) {
        tokio::time::sleep(d).await;
    }
    let t0 = Instant::now();
    wait_until_async(Duration::from_secs(3600), || async {
        count("Applied").await == n
    })
    .await;
    let elapsed = t0.elapsed();
    let after = apiserver_requests(client).await;
    let ideal = n as f64 / args.reboot_qps;
    let reboots: BTreeMap<u32, usize> = (0..n).fold(BTreeMap::new(), |mut m, i| {
        let count = sim
            .state()
            .instance(&instance(i))
            .map(|v| v.reboot_count)
            .unwrap_or(0);
        *m.entry(count).or_default() += 1;
        m
    });
    println!(
        "\nreboot herd: {n} objects, RebootInstance={} /s, one window, controller flags {flags:?}",
        args.reboot_qps,
    );
    println!(
        "  every object Ready {:.1} s after the window opened = {:.2} x N/QPS ({ideal:.0} s)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / ideal
    );
    println!("  instances by reboot count: {reboots:?}");
    println!(
        "  RebootNotObserved: {}, reconciles per object in the window: {:.2}",
        count("RebootNotObserved").await,
        (scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{") - reconciles) / n as f64
    );
    println!(
        "  API requests in the window: {}\n  controller peak RSS (VmHWM): {}",
        describe(&diff(&before, &after), n),
        peak_rss(controller.id())
    );
    stop(&mut controller);
}

/// Issue 24's fleet: N I/O-optimized instances behind N Nodes of one node pool (created before
/// the controller starts), then ONE VncPasswordSet selecting them by Node label, created once the
/// controller runs. Prints the time from the set's creation until its status says
/// `Ready=True`/`AllReady` with all N selected and ready, its ratio to N / QPS (the children's
/// ModifyInstanceVncPasswd under ECS's limit), status writes to the set and per child, API
/// requests and ECS calls per child, whether every instance got its own password exactly once, a
/// timeline of the wave, and the controller's peak RSS.
async fn set_scenario(client: &Client, binary: &Path, kubeconfig: &Path, args: &Args) {
    const POOL: &str = "np-bench";
    const SET: &str = "bench";
    const MODIFY: &str = "ModifyInstanceVncPasswd";
    let n = args.objects.unwrap_or(5000);
    let ns = "fleet-0";
    create_namespaces(client, [ns].into_iter()).await;
    let instance = |i: usize| format!("i-fleet{i:08}");
    let sim = simulator(args, (0..n).map(|i| (instance(i), true, ns.to_string()))).await;
    println!("creating {n} Nodes of node pool {POOL} ...");
    let created = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let nodes = nodes.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": format!("fleet-node-{i}"),
                                 "labels": {"alibabacloud.com/nodepool-id": POOL}},
                    "spec": {"providerID": format!("cn-hangzhou.{}", instance(i))},
                }))
                .expect("a Node");
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("creating a Node: {e}"),
                }
            }
        })
        .await;
    println!("  created in {:.1} s", created.elapsed().as_secs_f64());

    let metrics_addr = free_addr();
    let flags = controller_flags(&sim, args, metrics_addr);
    let mut controller = spawn_controller(binary, kubeconfig, &flags);
    wait_until(Duration::from_secs(60), || {
        scrape(metrics_addr)
            .lines()
            .any(|l| l == "ecs_vnc_leader 1")
    })
    .await;
    // Its watches' initial lists (nothing of the namespace exists yet).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sets: Api<VncPasswordSet> = Api::namespaced(client.clone(), ns);
    let set: VncPasswordSet = serde_json::from_value(json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPasswordSet", "metadata": {"name": SET},
        "spec": {"regionId": "cn-hangzhou",
                 "selector": {"nodes": {"matchLabels": {"alibabacloud.com/nodepool-id": POOL}}},
                 "template": {"passwordGeneration": {}}},
    }))
    .expect("a VncPasswordSet");
    let before = apiserver_requests(client).await;
    let latency_before = apiserver_latency(client).await;
    // CPU seconds of each process during the wave, and of the whole machine.
    let cp_dir = kubeconfig.parent().expect("the control plane's directory");
    let pids: Vec<(&str, Option<u32>)> = vec![
        ("controller", Some(controller.id())),
        ("kube-apiserver", pid_in(cp_dir, "kube-apiserver")),
        ("etcd", pid_in(cp_dir, "etcd")),
        ("benchmark and simulator", Some(std::process::id())),
    ];
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|(_, p)| p.map_or(0.0, cpu_seconds))
        .collect();
    let machine_before = machine_cpu();
    let wall0 = jiff::Timestamp::now();
    let started = Instant::now();
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create the VncPasswordSet");

    // Poll the set's status (and the controller's gauges, and the simulator's call count) until
    // it says AllReady with every instance selected and ready.
    struct Sample {
        at: f64,
        children_ready: f64,
        waiting: f64,
        modify: usize,
        selected: i64,
        ready: i64,
        ready_condition: String,
    }
    let mut samples: Vec<Sample> = Vec::new();
    let mut milestones: BTreeMap<&str, f64> = BTreeMap::new();
    let mut set_polls = 0;
    let deadline = started + Duration::from_secs(1800);
    loop {
        let status = sets
            .get(SET)
            .await
            .expect("get the set")
            .status
            .unwrap_or_default();
        set_polls += 1;
        let at = started.elapsed().as_secs_f64();
        let ready_condition = status
            .condition(condition::READY)
            .map(|c| format!("{}/{}", c.status, c.reason))
            .unwrap_or_default();
        let text = scrape(metrics_addr);
        let ready_gauge = || -> f64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("ecs_vnc_vncpasswords{{namespace=\"{ns}\"")))
                .filter(|l| l.contains("ready_reason=\"Applied\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let waiting = text
            .lines()
            .find(|l| l.starts_with("ecs_vnc_reconciles_waiting "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        let sample = Sample {
            at,
            children_ready: ready_gauge(),
            waiting,
            modify: sim.state().calls_with_code(MODIFY, "Success"),
            selected: status.selected,
            ready: status.ready,
            ready_condition,
        };
        let n_f = n as f64;
        for (name, reached) in [
            ("set selects all", sample.selected as usize >= n),
            ("all passwords applied (ECS)", sample.modify >= n),
            ("all children Ready (gauge)", sample.children_ready >= n_f),
        ] {
            if reached {
                milestones.entry(name).or_insert(at);
            }
        }
        let done = sample.selected as usize == n
            && sample.ready as usize == n
            && sample.ready_condition == "True/AllReady";
        samples.push(sample);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the set was not AllReady within 30 minutes: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t_ready = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|((_, p), b)| p.map_or(0.0, cpu_seconds) - b)
        .collect();
    let machine = {
        let (busy, total) = machine_cpu();
        (busy - machine_before.0, total - machine_before.1)
    };
    let after = apiserver_requests(client).await;
    let latency_after = apiserver_latency(client).await;
    let rss = peak_rss(controller.id());
    // When each child was created (one list once done; creationTimestamp has whole seconds).
    let created_at: Vec<f64> = Api::<VncPassword>::namespaced(client.clone(), ns)
        .list_metadata(&kube::api::ListParams::default().labels(&format!("ecsvnc.io/set={SET}")))
        .await
        .expect("list the children")
        .items
        .iter()
        .filter_map(|c| c.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.duration_since(wall0).as_secs_f64())
        .collect();
    let created_by = |at: f64| created_at.iter().filter(|c| **c <= at).count();
    if let Some(last) = created_at.iter().copied().reduce(f64::max) {
        milestones.insert(
            "all children created (creationTimestamp, whole seconds)",
            last,
        );
    }
    let reconciles = scrape_sum(metrics_addr, "ecs_vnc_reconciles_total{");
    let calls = sim.state().counts();
    let log = sim.state().call_log();
    let bound = n as f64 / args.qps;
    let per = |x: f64| x / n as f64;

    println!(
        "\nVncPasswordSet over {n} Nodes: ECS limit {} QPS per API, {} ms per call, controller flags {flags:?}",
        args.qps, args.latency_ms
    );
    println!(
        "  set AllReady (selected {n}, ready {n}) {t_ready:.1} s after its creation = {:.2} x N/QPS ({bound:.1} s: {n} ModifyInstanceVncPasswd at {} QPS)",
        t_ready / bound,
        args.qps
    );
    // The ECS side of the same wave, from the simulator's call log (its clock is the wall clock).
    let modify_times: Vec<f64> = log
        .iter()
        .filter(|c| c.action == MODIFY && c.code == "Success")
        .filter_map(|c| c.time.parse::<jiff::Timestamp>().ok())
        .map(|t| t.duration_since(wall0).as_secs_f64())
        .collect();
    if let (Some(first), Some(last)) = (
        modify_times.iter().copied().reduce(f64::min),
        modify_times.iter().copied().reduce(f64::max),
    ) {
        println!(
            "  ModifyInstanceVncPasswd: first at {first:.1} s, last at {last:.1} s ({:.1} per second between them)",
            (modify_times.len().saturating_sub(1)) as f64 / (last - first).max(0.001)
        );
    }
    for (name, at) in &milestones {
        println!("  {name} at {at:.1} s");
    }
    for (action, codes) in &calls {
        let total: u64 = codes.values().sum();
        let throttled: u64 = codes
            .iter()
            .filter(|(c, _)| c.starts_with("Throttling"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "  ECS {action}: {total} calls ({:.3} per instance), {throttled} throttled",
            per(total as f64)
        );
    }
    // Exactly once: every instance has a password, they differ, and ECS accepted N of them.
    let mut passwords = std::collections::HashSet::new();
    let mut without = 0;
    for i in 0..n {
        match sim
            .state()
            .instance(&instance(i))
            .and_then(|v| v.set_password)
        {
            Some(p) => {
                passwords.insert(p);
            }
            None => without += 1,
        }
    }
    let accepted = calls
        .get(MODIFY)
        .and_then(|c| c.get("Success"))
        .copied()
        .unwrap_or(0);
    let mut per_instance: HashMap<String, u32> = HashMap::new();
    for c in log
        .iter()
        .filter(|c| c.action == MODIFY && c.code == "Success")
    {
        *per_instance
            .entry(c.instance_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let histogram: BTreeMap<u32, usize> =
        per_instance.values().fold(BTreeMap::new(), |mut m, count| {
            *m.entry(*count).or_default() += 1;
            m
        });
    println!(
        "  passwords: {} distinct over {n} instances, {without} without one; ECS accepted {accepted} (instances by accepted calls, from the call log: {histogram:?}): {}",
        passwords.len(),
        if without == 0 && passwords.len() == n && accepted == n as u64 {
            "each applied exactly once"
        } else {
            "NOT exactly once"
        }
    );
    let delta = diff(&before, &after);
    let set_status_writes = ["APPLY", "PATCH", "PUT"]
        .iter()
        .filter_map(|v| delta.get(&format!("{v} vncpasswordsets/status")))
        .sum::<f64>();
    // The benchmark's own requests: its create and its polls of the set.
    let controller_delta: BTreeMap<String, f64> = delta
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "GET vncpasswordsets" | "POST vncpasswordsets"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    println!(
        "  status writes to the set: {set_status_writes:.0} in {t_ready:.0} s (one per {:.1} s); status writes per child: {:.2}; VncPassword reconciles per child: {:.2}",
        t_ready / set_status_writes.max(1.0),
        per(status_writes(&delta)),
        per(reconciles)
    );
    println!(
        "  Kubernetes API requests per child (the benchmark's {set_polls} polls of the set left out): {:.2} ({})",
        per(controller_delta.values().sum()),
        describe(&controller_delta, n)
    );
    println!("  controller peak RSS (VmHWM): {rss}");
    println!(
        "  {}",
        cpu_line(pids.iter().map(|(name, _)| name.to_string()), &cpu, machine)
    );
    let mean_latency = |key: &str| {
        let (s1, c1) = latency_after.get(key).copied().unwrap_or_default();
        let (s0, c0) = latency_before.get(key).copied().unwrap_or_default();
        if c1 > c0 {
            format!("{key} {:.1} ms", 1000.0 * (s1 - s0) / (c1 - c0))
        } else {
            format!("{key} -")
        }
    };
    println!(
        "  API server's mean latency in the wave: {}",
        [
            "POST vncpasswords",
            "APPLY vncpasswords/status",
            "POST secrets",
            "GET secrets",
            "POST events",
            "APPLY vncpasswordsets/status"
        ]
        .map(mean_latency)
        .join(", ")
    );
    // Children created per second of the wave (the set's passes: at most 100 each, one a second).
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for c in &created_at {
        *per_second.entry(c.round() as i64).or_default() += 1;
    }
    let last_second = per_second.keys().copied().max().unwrap_or(0);
    println!(
        "  children created per second: {}",
        (per_second.keys().copied().min().unwrap_or(0)..=last_second)
            .map(|s| per_second.get(&s).copied().unwrap_or(0).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  timeline (s: children created, children Ready by the controller's gauge (updated every 5 s), ModifyInstanceVncPasswd accepted, reconciles waiting for a slot | the set's status selected/ready, Ready):"
    );
    let mut next = 0.0;
    for s in &samples {
        if s.at >= next || std::ptr::eq(s, samples.last().unwrap()) {
            println!(
                "    {:6.1}: {:5} {:5.0} {:5} {:5.0} | {}/{} {}",
                s.at,
                created_by(s.at),
                s.children_ready,
                s.modify,
                s.waiting,
                s.selected,
                s.ready,
                s.ready_condition
            );
            next = s.at + 5.0;
        }
    }
    stop(&mut controller);
}

/// The ECS simulator with these instances (ID, I/O-optimized, the namespace whose VncPassword names
/// it) in cn-hangzhou, limiting each API per account to --qps and adding --latency-ms to every call.
/// Each instance carries the ECS tag `ecsvnc.io/namespace` of its namespace, which the controller's
/// default credentials (what the benchmark uses) require.
async fn simulator(
    args: &Args,
    instances: impl Iterator<Item = (String, bool, String)>,
) -> RunningSimulator {
    Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: vec![AccessKeyConfig {
                id: KEY_ID.into(),
                secret: KEY_SECRET.into(),
                security_token: None,
                account_id: None,
            }],
            instances: instances
                .map(|(id, io_optimized, namespace)| InstanceConfig {
                    id,
                    region: "cn-hangzhou".into(),
                    io_optimized,
                    status: "Running".into(),
                    tags: [("ecsvnc.io/namespace".to_string(), namespace)].into(),
                })
                .collect(),
            faults: FaultConfig {
                qps_per_api: Some(args.qps),
                latency_ms: args.latency_ms,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("simulator")
}

/// Creates these namespaces and the controller's own (those that exist are left alone).
async fn create_namespaces<'a>(client: &Client, names: impl Iterator<Item = &'a str>) {
    for name in names.chain(["ecs-vnc-system"]) {
        let _ = Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await;
    }
}

async fn wait_until_async<F, Fut>(limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Builds the release controller binary next to this example and returns its path.
fn build_controller(root: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    // `cargo run` gives this process its package's CARGO_PKG_*, CARGO_MANIFEST_* and the like;
    // build scripts that watch those variables (ring's does) would then see them change between
    // the two builds and rebuild ring and all that depends on it, every run, in both builds.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || name == "OUT_DIR"
        {
            build.env_remove(name.as_ref());
        }
    }
    let ok = build
        .current_dir(root)
        // With this example in the same build, dependencies get the same features as in the
        // `cargo run --example` that started us (dev-dependencies unify theirs into an example's
        // build, not into a binary's), so neither build undoes the other.
        .args([
            "build",
            "--release",
            "--bin",
            "ecs-vnc-controller",
            "--example",
            "controller_scale",
        ])
        .status()
        .expect("cargo build");
    assert!(
        ok.success(),
        "cargo build --release --bin ecs-vnc-controller --example controller_scale"
    );
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/controller_scale → target/release/ecs-vnc-controller
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("ecs-vnc-controller"))
        .expect("target dir")
}

async fn client(kubeconfig: &Path) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    Client::try_from(config).expect("client")
}

fn controller_flags(sim: &RunningSimulator, args: &Args, metrics: SocketAddr) -> Vec<String> {
    let mut flags = vec![
        format!("--ecs-endpoint={}", sim.url()),
        // The simulator's STS names the key's account: rate limits per account, as ECS counts.
        format!("--sts-endpoint={}/sts", sim.url()),
        format!("--ecs-qps={}", args.qps),
        "--default-credentials-namespaces=*".to_string(),
        format!("--metrics-addr={metrics}"),
        "--log-format=json".to_string(),
    ];
    flags.extend(args.extra.iter().cloned());
    flags
}

fn start_controller(
    binary: &Path,
    kubeconfig: &Path,
    sim: &RunningSimulator,
    args: &Args,
    metrics: SocketAddr,
) -> ControllerProcess {
    spawn_controller(binary, kubeconfig, &controller_flags(sim, args, metrics))
}

/// The controller's process, killed when dropped: a scenario that panics must not leave it running.
struct ControllerProcess(Child);

impl ControllerProcess {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_controller(binary: &Path, kubeconfig: &Path, flags: &[String]) -> ControllerProcess {
    let child = Command::new(binary)
        .arg("run")
        .args(flags)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", "ecs-vnc-system")
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the controller");
    ControllerProcess(child)
}

/// SIGTERM, then wait for the exit.
fn stop(controller: &mut ControllerProcess) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(controller.id().to_string())
        .status();
    let _ = controller.0.wait();
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The sum of every sample whose line starts with `prefix`.
fn scrape_sum(addr: SocketAddr, prefix: &str) -> f64 {
    scrape(addr)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `ecs_vnc_vncpasswords` of every namespace with this Ready reason.
fn scrape_reason(addr: SocketAddr, reason: &str) -> f64 {
    let label = format!("ready_reason=\"{reason}\"}}");
    scrape(addr)
        .lines()
        .filter(|l| l.starts_with("ecs_vnc_vncpasswords{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The API server's `/metrics` text.
async fn apiserver_metrics(client: &Client) -> String {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    client.request_text(request).await.expect("/metrics")
}

/// The samples of the API server's request metric whose lines start with `prefix`, each keyed
/// "VERB resource[/subresource]" (a sample without verb or resource is left out).
fn request_samples<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = (String, f64)> + 'a {
    text.lines()
        .filter(move |l| l.starts_with(prefix))
        .filter_map(|line| {
            // A label's name follows `{` or `,`: `resource` is never found inside `subresource`.
            let label = |name: &str| {
                let start = [format!("{{{name}=\""), format!(",{name}=\"")]
                    .iter()
                    .find_map(|at| line.find(at.as_str()).map(|i| i + at.len()))?;
                let end = line[start..].find('"')? + start;
                Some(line[start..end].to_string())
            };
            let (verb, resource) = (label("verb")?, label("resource")?);
            let key = match label("subresource").filter(|s| !s.is_empty()) {
                Some(sub) => format!("{verb} {resource}/{sub}"),
                None => format!("{verb} {resource}"),
            };
            let value = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            Some((key, value))
        })
}

/// `apiserver_request_total` summed by "VERB resource[/subresource]".
async fn apiserver_requests(client: &Client) -> BTreeMap<String, f64> {
    let text = apiserver_metrics(client).await;
    let mut out = BTreeMap::new();
    for (key, value) in request_samples(&text, "apiserver_request_total{") {
        *out.entry(key).or_default() += value;
    }
    out
}

/// `apiserver_request_duration_seconds` (sum, count) by "VERB resource[/subresource]".
async fn apiserver_latency(client: &Client) -> BTreeMap<String, (f64, f64)> {
    let text = apiserver_metrics(client).await;
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (key, sum) in request_samples(&text, "apiserver_request_duration_seconds_sum{") {
        out.entry(key).or_default().0 += sum;
    }
    for (key, count) in request_samples(&text, "apiserver_request_duration_seconds_count{") {
        out.entry(key).or_default().1 += count;
    }
    out
}

/// The pid the test control plane recorded for `name` (`DIR/name.pid`).
fn pid_in(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// User and system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the command; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's (busy, total) CPU seconds so far, all cores.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

/// Server-side apply shows as verb APPLY, other patches as PATCH.
fn status_writes(delta: &BTreeMap<String, f64>) -> f64 {
    ["APPLY", "PATCH", "PUT"]
        .iter()
        .filter_map(|v| delta.get(&format!("{v} vncpasswords/status")))
        .sum::<f64>()
        + 0.0
}

fn diff(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The largest contributors, per object.
fn describe(delta: &BTreeMap<String, f64>, n: usize) -> String {
    let mut items: Vec<_> = delta.iter().collect();
    items.sort_by(|a, b| b.1.total_cmp(a.1));
    items
        .iter()
        .take(6)
        .map(|(k, v)| {
            if n > 1 {
                format!("{k} {:.2}", *v / n as f64)
            } else {
                format!("{k} {v:.0}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// VmHWM, in MiB (the goals' unit) and as the kernel gives it (kB there are KiB).
fn peak_rss(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let kib: f64 = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .trim_start_matches("VmHWM:")
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(format!("{:.1} MiB ({kib} kB)", kib / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What each process and the whole machine spent during a wave: CPU seconds per process (named),
/// the machine's busy share of its core-seconds (`machine`: busy, total) and the load average.
fn cpu_line(names: impl Iterator<Item = String>, cpu: &[f64], machine: (f64, f64)) -> String {
    format!(
        "CPU during the wave (s of one core; the machine has {}): {}; the whole machine {:.0} % busy ({:.0} of {:.0} core-seconds), load average now {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        names
            .zip(cpu)
            .map(|(name, c)| format!("{name} {c:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * machine.0 / machine.1.max(1.0),
        machine.0,
        machine.1,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    )
}
