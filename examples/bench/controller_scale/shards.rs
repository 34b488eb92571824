//! `--scenario shards` (issue 25): N VncPasswords over A accounts, served by R replicas sharing
//! `--shards S`, each replica its own process with its own metrics port and POD_NAME; optionally
//! one replica SIGKILLed mid-wave.
//!
//! Every account has one AccessKey in the simulator (its own limit of --qps per API) and the
//! objects reach it through `spec.credentials.secretRef`: each namespace holds a Secret
//! `aliyun-credentials` with the key of account `namespace index % A`, so every account serves
//! N / A objects. The objects that are not I/O-optimized are `rebootPolicy: Automatic` (no
//! window): the controller reboots them once their password is applied, so a kill can show
//! whether a reboot was ever sent twice.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use tokio::task::JoinHandle;

use super::*;

const MODIFY: &str = "ModifyInstanceVncPasswd";
const REBOOT: &str = "RebootInstance";
const LEASE: &str = "bench-shards";

/// One controller replica.
struct Replica {
    name: String,
    metrics: SocketAddr,
    process: ControllerProcess,
    log: PathBuf,
    /// Its peak RSS, taken before it was killed.
    rss_at_kill: Option<String>,
    /// Its reconciles, scraped before it was killed.
    reconciles_at_kill: Option<f64>,
    /// Its CPU seconds, read before it was killed.
    cpu_at_kill: Option<f64>,
    alive: bool,
}

/// The accepted ModifyInstanceVncPasswd and RebootInstance calls, from the simulator's call log
/// (which keeps only the last 10,000 calls: read every 500 ms, each call once).
struct Calls {
    records: Arc<Mutex<Vec<ecs_vnc_controller::simulator::CallRecord>>>,
    /// Reads that did not find the previous read's last call (calls may have been missed).
    gaps: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

fn collect_calls(state: Arc<ecs_vnc_controller::simulator::SimState>) -> Calls {
    let records = Arc::new(Mutex::new(Vec::new()));
    let gaps = Arc::new(Mutex::new(0));
    let task = {
        let (records, gaps) = (records.clone(), gaps.clone());
        tokio::spawn(async move {
            let mut last: Option<ecs_vnc_controller::simulator::CallRecord> = None;
            loop {
                drain(&state, &mut last, &records, &gaps);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    Calls {
        records,
        gaps,
        task,
    }
}

fn drain(
    state: &ecs_vnc_controller::simulator::SimState,
    last: &mut Option<ecs_vnc_controller::simulator::CallRecord>,
    records: &Mutex<Vec<ecs_vnc_controller::simulator::CallRecord>>,
    gaps: &Mutex<usize>,
) {
    let log = state.call_log();
    let start = match last.as_ref() {
        None => 0,
        Some(l) => match log.iter().rposition(|c| c == l) {
            Some(p) => p + 1,
            None => {
                *gaps.lock().unwrap() += 1;
                0
            }
        },
    };
    records.lock().unwrap().extend(
        log[start..]
            .iter()
            .filter(|c| c.code == "Success" && (c.action == MODIFY || c.action == REBOOT))
            .cloned(),
    );
    if let Some(c) = log.last() {
        *last = Some(c.clone());
    }
}

fn key_of_account(a: usize) -> (String, String, String) {
    (
        format!("LTAIacct{a}"),
        format!("acct-secret-{a}"),
        format!("{}", 2_000_000_000_000_000u64 + a as u64),
    )
}

/// The shards a replica serves, by its own metrics: `ecs_vnc_shard_owned` with --shards above 1,
/// else `ecs_vnc_leader` (shard 0).
fn owned(addr: SocketAddr, shards: u16) -> BTreeSet<u16> {
    let text = scrape(addr);
    if shards <= 1 {
        return if text.lines().any(|l| l == "ecs_vnc_leader 1") {
            [0].into()
        } else {
            BTreeSet::new()
        };
    }
    text.lines()
        .filter(|l| l.starts_with("ecs_vnc_shard_owned{") && l.ends_with(" 1"))
        .filter_map(|l| {
            let start = l.find("shard=\"")? + "shard=\"".len();
            let end = l[start..].find('"')? + start;
            l[start..end].parse().ok()
        })
        .collect()
}

fn spread(replicas: &[Replica], shards: u16) -> Vec<BTreeSet<u16>> {
    replicas
        .iter()
        .map(|r| {
            if r.alive {
                owned(r.metrics, shards)
            } else {
                BTreeSet::new()
            }
        })
        .collect()
}

/// Every shard served by exactly one live replica, each live replica serving its share (N divided
/// by the live replicas, rounded down or up).
fn settled(replicas: &[Replica], spread: &[BTreeSet<u16>], shards: u16) -> bool {
    let n = usize::from(shards);
    let live: Vec<&BTreeSet<u16>> = replicas
        .iter()
        .zip(spread)
        .filter(|(r, _)| r.alive)
        .map(|(_, s)| s)
        .collect();
    let all: BTreeSet<u16> = live.iter().copied().flatten().copied().collect();
    let total: usize = live.iter().map(|s| s.len()).sum();
    let (floor, ceil) = (n / live.len().max(1), n.div_ceil(live.len().max(1)));
    all.len() == n && total == n && live.iter().all(|s| (floor..=ceil).contains(&s.len()))
}

fn show(spread: &[BTreeSet<u16>]) -> String {
    spread
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Log lines of a replica containing `needle`.
fn log_count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

pub(super) async fn shards_scenario(
    client: &Client,
    binary: &Path,
    kubeconfig: &Path,
    args: &Args,
) {
    let n = args.objects.unwrap_or(40_000);
    let accounts = args.accounts.max(1);
    let replicas_wanted = args.replicas.max(1);
    let shards = args.shards.unwrap_or(replicas_wanted as u16).max(1);
    let ns_count = args.namespaces.max(accounts).div_ceil(accounts) * accounts;
    let namespaces: Vec<String> = (0..ns_count).map(|j| format!("shard-{j}")).collect();
    create_namespaces(client, namespaces.iter().map(String::as_str)).await;
    let instance = |i: usize| format!("i-shard{i:08}");
    let non_io = |i: usize| i % 100 < args.non_io_percent;
    let place = |i: usize| (namespaces[i % ns_count].clone(), format!("vm-{i}"));
    let io_count = (0..n).filter(|i| !non_io(*i)).count();
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: (0..accounts)
                .map(|a| {
                    let (id, secret, account) = key_of_account(a);
                    AccessKeyConfig {
                        id,
                        secret,
                        security_token: None,
                        account_id: Some(account),
                    }
                })
                .collect(),
            instances: (0..n)
                .map(|i| InstanceConfig {
                    id: instance(i),
                    region: "cn-hangzhou".into(),
                    io_optimized: !non_io(i),
                    status: "Running".into(),
                    tags: Default::default(),
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
    .expect("simulator");

    println!(
        "creating {n} Secrets and VncPasswords in {ns_count} namespaces over {accounts} accounts ..."
    );
    let created = Instant::now();
    for (j, ns) in namespaces.iter().enumerate() {
        let (id, secret, _) = key_of_account(j % accounts);
        let credentials: Secret = serde_json::from_value(json!({
            "metadata": {"name": "aliyun-credentials"},
            "stringData": {"accessKeyId": id, "accessKeySecret": secret},
        }))
        .expect("credentials");
        let _ = Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &credentials)
            .await;
    }
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (ns, name) = place(i);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let vncpw: Api<VncPassword> = Api::namespaced(client.clone(), &ns);
            let instance = instance(i);
            let automatic = non_io(i);
            async move {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-vnc")}, "stringData": {"password": format!("P{i:05}")}
                })).expect("secret");
                let _ = secrets.create(&PostParams::default(), &secret).await;
                let mut spec = json!({"regionId": "cn-hangzhou", "instanceId": instance,
                    "passwordSecretRef": {"name": format!("{name}-vnc")},
                    "credentials": {"secretRef": {"name": "aliyun-credentials"}}});
                if automatic {
                    spec["rebootPolicy"] = json!("Automatic");
                }
                let obj = json!({"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
                    "metadata": {"name": name}, "spec": spec});
                vncpw.patch(&name, &PatchParams::apply("scale"), &Patch::Apply(&obj)).await.expect("apply");
            }
        })
        .await;
    println!("  created in {:.1} s", created.elapsed().as_secs_f64());

    let (seen, watch) = watch_seen(client);
    let is_io = |key: &str| {
        key.rsplit_once("/vm-")
            .and_then(|(_, i)| i.parse::<usize>().ok())
            .is_some_and(|i| !non_io(i))
    };
    let io_ready = |seen: &Seen| seen.ready.keys().filter(|k| is_io(k)).count();

    let logs = tempfile::tempdir().expect("log dir").keep();
    let flags = |metrics: SocketAddr| -> Vec<String> {
        let mut flags = vec![
            format!("--ecs-endpoint={}", sim.url()),
            format!("--sts-endpoint={}/sts", sim.url()),
            format!("--ecs-qps={}", args.qps),
            format!("--metrics-addr={metrics}"),
            "--leader-elect".to_string(),
            format!("--shards={shards}"),
            format!("--leader-elect-resource-name={LEASE}"),
            format!("--leader-elect-lease-duration={}s", args.lease_duration),
            format!("--leader-elect-renew-deadline={}s", args.renew_deadline),
            format!("--leader-elect-retry-period={}s", args.retry_period),
        ];
        flags.extend(args.extra.iter().cloned());
        flags
    };
    let start = |round: &str| -> Vec<Replica> {
        (0..replicas_wanted)
            .map(|k| {
                let name = format!("replica-{k}");
                let metrics = free_addr();
                let log = logs.join(format!("{name}-{round}.log"));
                let file = std::fs::File::create(&log).expect("log file");
                let child = Command::new(binary)
                    .arg("run")
                    .args(flags(metrics))
                    .env("KUBECONFIG", kubeconfig)
                    .env("POD_NAMESPACE", "ecs-vnc-system")
                    .env("POD_NAME", &name)
                    .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
                    .env(
                        "RUST_LOG",
                        "warn,ecs_vnc_controller::controller=info,ecs_vnc_controller::controller::reconcile=warn,ecs_vnc_controller::leader=info",
                    )
                    .stdin(Stdio::null())
                    .stdout(file.try_clone().expect("log file"))
                    .stderr(file)
                    .spawn()
                    .expect("start a replica");
                Replica {
                    name,
                    metrics,
                    process: ControllerProcess(child),
                    log,
                    rss_at_kill: None,
                    reconciles_at_kill: None,
                    cpu_at_kill: None,
                    alive: true,
                }
            })
            .collect()
    };
    let cp_dir = kubeconfig.parent().expect("the control plane's directory");
    let calls = collect_calls(sim.state().clone());

    // 1. The initial wave.
    let before = apiserver_requests(client).await;
    let wall0 = jiff::Timestamp::now();
    let started = Instant::now();
    let mut replicas = start("wave");
    let mut pids: Vec<(String, Option<u32>)> = vec![
        ("kube-apiserver".into(), pid_in(cp_dir, "kube-apiserver")),
        ("etcd".into(), pid_in(cp_dir, "etcd")),
        ("benchmark and simulator".into(), Some(std::process::id())),
    ];
    pids.extend(
        replicas
            .iter()
            .map(|r| (r.name.clone(), Some(r.process.id()))),
    );
    let cpu_before: Vec<f64> = pids
        .iter()
        .map(|(_, p)| p.map_or(0.0, cpu_seconds))
        .collect();
    let machine_before = machine_cpu();
    let mut timeline: Vec<(f64, Vec<BTreeSet<u16>>)> = Vec::new();
    let mut t_split: Option<f64> = None;
    let mut t_io: Option<f64> = None;
    // The kill: when, whom, which shards, when the survivors served every shard again.
    let mut killed: Option<(usize, BTreeSet<u16>, f64, jiff::Timestamp, usize)> = None;
    let mut t_takeover: Option<f64> = None;
    let deadline = started + Duration::from_secs(3600);
    loop {
        let at = started.elapsed().as_secs_f64();
        let now_spread = spread(&replicas, shards);
        if timeline.last().is_none_or(|(_, s)| *s != now_spread) {
            timeline.push((at, now_spread.clone()));
        }
        if t_split.is_none() && settled(&replicas, &now_spread, shards) {
            t_split = Some(at);
        }
        let (io, all) = {
            let seen = seen.lock().unwrap();
            (io_ready(&seen), seen.ready.len())
        };
        if t_io.is_none() && io >= io_count {
            t_io = Some(at);
        }
        let modified = sim.state().calls_with_code(MODIFY, "Success");
        if let Some(fraction) = args.kill_after
            && killed.is_none()
            && modified as f64 >= fraction * n as f64
        {
            // The live replica serving the most shards (the first of them).
            let (victim, held) = now_spread
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(&a.0)))
                .map(|(k, s)| (k, s.clone()))
                .expect("a replica");
            let r = &mut replicas[victim];
            r.rss_at_kill = Some(peak_rss(r.process.id()));
            r.reconciles_at_kill = Some(scrape_sum(r.metrics, "ecs_vnc_reconciles_total{"));
            r.cpu_at_kill = Some(cpu_seconds(r.process.id()));
            let _ = r.process.0.kill();
            let _ = r.process.0.wait();
            r.alive = false;
            println!(
                "  SIGKILL {} at {at:.1} s (serving shards {held:?}; {modified} passwords accepted so far)",
                r.name
            );
            killed = Some((victim, held, at, jiff::Timestamp::now(), modified));
        }
        if let Some((_, _, killed_at, _, _)) = &killed
            && t_takeover.is_none()
        {
            let served: BTreeSet<u16> = spread(&replicas, shards).into_iter().flatten().collect();
            if served.len() == usize::from(shards) {
                t_takeover = Some(at - killed_at);
            }
        }
        if all >= n && t_io.is_some() && (killed.is_none() || t_takeover.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not done within an hour: {all} of {n} Ready, spread {}",
            show(&now_spread)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t_settled = started.elapsed().as_secs_f64();
    let t_io = t_io.unwrap_or(t_settled);
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|((name, p), b)| {
            let killed = replicas
                .iter()
                .find(|r| r.name == *name)
                .and_then(|r| r.cpu_at_kill);
            killed.unwrap_or_else(|| p.map_or(0.0, cpu_seconds)) - b
        })
        .collect();
    let machine = {
        let (busy, total) = machine_cpu();
        (busy - machine_before.0, total - machine_before.1)
    };
    // The status writes of the last objects have been seen; give the gauges and the last calls a
    // moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = apiserver_requests(client).await;
    let counts = sim.state().counts();
    let bound = n as f64 / (args.qps * accounts as f64);
    let per = |x: f64| x / n as f64;

    println!(
        "\nshards: {n} VncPasswords in {ns_count} namespaces over {accounts} accounts ({} non-I/O-optimized, Automatic), ECS limit {} QPS per API and account, {} ms per call; {} replica(s), flags {:?}",
        n - io_count,
        args.qps,
        args.latency_ms,
        replicas.len(),
        flags(SocketAddr::from(([127, 0, 0, 1], 0)))
    );
    println!(
        "initial wave: all {io_count} I/O-optimized Ready in {t_io:.1} s = {:.2} x N/(QPS x accounts) ({bound:.1} s); all {n} Ready (the Automatic ones rebooted) in {t_settled:.1} s",
        t_io / bound
    );
    match t_split {
        Some(t) => println!(
            "  shards shared out ({} per replica at most) at {t:.1} s",
            usize::from(shards).div_ceil(replicas.len())
        ),
        None => println!("  shards never shared out evenly during the wave"),
    }
    println!(
        "  who serves which shards (s: replica-0 replica-1 ...; from each replica's ecs_vnc_shard_owned / ecs_vnc_leader):"
    );
    for (at, s) in &timeline {
        println!("    {at:7.1}: {}", show(s));
    }
    for (action, codes) in &counts {
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
    // Per instance, from the call log: accepted Modify and RebootInstance calls.
    let records = calls.records.lock().unwrap().clone();
    let mut per_instance: HashMap<(String, String), Vec<jiff::Timestamp>> = HashMap::new();
    for c in &records {
        per_instance
            .entry((c.action.clone(), c.instance_id.clone().unwrap_or_default()))
            .or_default()
            .push(c.time.parse().unwrap_or(wall0));
    }
    let histogram = |action: &str| -> BTreeMap<usize, usize> {
        let mut h: BTreeMap<usize, usize> = BTreeMap::new();
        for i in 0..n {
            let count = per_instance
                .get(&(action.to_string(), instance(i)))
                .map_or(0, Vec::len);
            *h.entry(count).or_default() += 1;
        }
        h
    };
    let reboots: BTreeMap<u32, usize> =
        sim.state()
            .instances()
            .iter()
            .fold(BTreeMap::new(), |mut m, v| {
                *m.entry(v.reboot_count).or_default() += 1;
                m
            });
    println!(
        "  instances by accepted ModifyInstanceVncPasswd (call log: {} accepted calls collected, {} reads that may have missed some): {:?}",
        records.len(),
        *calls.gaps.lock().unwrap(),
        histogram(MODIFY)
    );
    println!(
        "  instances by reboot count (simulator): {reboots:?}; by accepted RebootInstance (call log): {:?}",
        histogram(REBOOT)
    );
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
    let mut total_reconciles = 0.0;
    for r in &replicas {
        let reconciles = r
            .reconciles_at_kill
            .unwrap_or_else(|| scrape_sum(r.metrics, "ecs_vnc_reconciles_total{"));
        total_reconciles += reconciles;
        println!(
            "  {}: {} ; reconciles {reconciles:.0}; peak RSS (VmHWM) {}; terms restarted {} times, asked for a shard {} times, handed one over {} times",
            r.name,
            if r.alive {
                format!("serves {:?}", owned(r.metrics, shards))
            } else {
                "killed".to_string()
            },
            r.rss_at_kill
                .clone()
                .unwrap_or_else(|| peak_rss(r.process.id())),
            log_count(&r.log, "the shards to serve changed"),
            log_count(&r.log, "asked for this one"),
            log_count(&r.log, "finishing the work in flight"),
        );
    }
    println!(
        "  reconciles per object, all replicas: {:.2}",
        per(total_reconciles)
    );
    println!(
        "  {}",
        cpu_line(pids.iter().map(|(name, _)| name.to_string()), &cpu, machine)
    );

    if let Some((victim, held, killed_at, killed_wall, modified)) = &killed {
        println!(
            "kill: {} SIGKILLed {killed_at:.1} s into the wave ({modified} passwords accepted), serving shards {held:?}; lease duration {} s",
            replicas[*victim].name, args.lease_duration
        );
        match t_takeover {
            Some(t) => println!("  the survivors served every shard {t:.1} s after the kill"),
            None => println!("  the survivors did NOT serve every shard"),
        }
        // Extra applies: which shard each such object is in, and when its calls came.
        let uids: HashMap<String, String> = Api::<VncPassword>::all(client.clone())
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|o| (o.spec.instance_id.clone(), o.uid().unwrap_or_default()))
            .collect();
        let shard_of = |uid: &str| {
            (0..shards)
                .find(|k| ecs_vnc_controller::shard::ShardRange::of(*k, shards).contains_uid(uid))
                .unwrap_or(u16::MAX)
        };
        let (mut extra, mut explained) = (0, 0);
        for ((action, id), times) in &per_instance {
            if action != MODIFY || times.len() < 2 {
                continue;
            }
            extra += times.len() - 1;
            let shard = uids.get(id).map_or(u16::MAX, |u| shard_of(u));
            let first = times.iter().min().copied().unwrap_or(wall0);
            let in_victims = held.contains(&shard);
            let before_kill = first <= *killed_wall;
            if in_victims && before_kill && times.len() == 2 {
                explained += 1;
            }
            println!(
                "  {id}: {} accepted Modify calls at {}; shard {shard}{}",
                times.len(),
                times
                    .iter()
                    .map(|t| format!("{:.1} s", t.duration_since(wall0).as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(", "),
                if in_victims {
                    " (the killed replica's)"
                } else {
                    ""
                }
            );
        }
        println!(
            "  Modify calls beyond one per object: {extra}, of which {explained} on objects of the killed replica's shards whose first apply came before the kill"
        );
    } else {
        // 2. A restart with everything applied.
        for r in &mut replicas {
            stop(&mut r.process);
        }
        let before = apiserver_requests(client).await;
        let calls_before = sim.state().counts();
        let restarted = Instant::now();
        replicas = start("restart");
        let mut t_all: Option<f64> = None;
        let mut t_split: Option<f64> = None;
        wait_until(Duration::from_secs(900), || {
            let at = restarted.elapsed().as_secs_f64();
            let s = spread(&replicas, shards);
            if t_split.is_none() && settled(&replicas, &s, shards) {
                t_split = Some(at);
            }
            let reconciles: f64 = replicas
                .iter()
                .map(|r| scrape_sum(r.metrics, "ecs_vnc_reconciles_total{"))
                .sum();
            if t_all.is_none() && reconciles as usize >= n {
                t_all = Some(at);
            }
            t_all.is_some() && t_split.is_some()
        })
        .await;
        // What a term restarted by a late handover does after that.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = apiserver_requests(client).await;
        let calls_after = sim.state().counts();
        let sum = |c: &BTreeMap<String, BTreeMap<String, u64>>, actions: &[&str]| -> u64 {
            actions
                .iter()
                .filter_map(|a| c.get(*a))
                .flat_map(|codes| codes.values())
                .sum()
        };
        let delta = diff(&before, &after);
        let reconciles: f64 = replicas
            .iter()
            .map(|r| scrape_sum(r.metrics, "ecs_vnc_reconciles_total{"))
            .sum();
        println!(
            "restart: reconciles reached N in {:.1} s, shards shared out in {:.1} s; then 5 s more: ECS calls that write: {}; DescribeInstances: {}; status writes: {}; reconciles per object {:.2}; Kubernetes API requests: {:.0} ({})",
            t_all.unwrap_or_default(),
            t_split.unwrap_or_default(),
            sum(&calls_after, &[MODIFY, REBOOT]) - sum(&calls_before, &[MODIFY, REBOOT]),
            sum(&calls_after, &["DescribeInstances"]) - sum(&calls_before, &["DescribeInstances"]),
            status_writes(&delta),
            per(reconciles),
            delta.values().sum::<f64>(),
            describe(&delta, 1)
        );
        for r in &replicas {
            println!(
                "  {}: serves {:?}; terms restarted {} times, asked {} times, handed over {} times",
                r.name,
                owned(r.metrics, shards),
                log_count(&r.log, "the shards to serve changed"),
                log_count(&r.log, "asked for this one"),
                log_count(&r.log, "finishing the work in flight"),
            );
        }

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
        rotations(client, &seen, &targets, n).await;
        println!(
            "peak RSS after the restart and the rotations (VmHWM): {}",
            replicas
                .iter()
                .map(|r| format!("{} {}", r.name, peak_rss(r.process.id())))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Who holds each Lease at the end, as the API server has it.
    let leases = Api::<Lease>::namespaced(client.clone(), "ecs-vnc-system");
    let mut holders = Vec::new();
    for k in 0..shards {
        let name = if shards > 1 {
            format!("{LEASE}-shard-{k}")
        } else {
            LEASE.to_string()
        };
        holders.push(
            leases
                .get_opt(&name)
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default(),
        );
    }
    println!(
        "Lease holders at the end: {holders:?}; the replicas' logs are in {}",
        logs.display()
    );
    for r in &mut replicas {
        if r.alive {
            stop(&mut r.process);
        }
    }
    calls.task.abort();
    watch.abort();
}
