//! `--shards`: replicas as real child processes share 4 shards of the VncPasswords. Each replica
//! calls ECS with an AccessKey of its own (two keys of one account in the simulator), so the
//! simulator's call log says which replica applied each password. Short lease timings
//! (3 s / 2 s / 0.5 s) keep the run short.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::json;

use support::controller::*;
use support::sim::Sim;

const SHARDS: u16 = 4;
const KEYS: [(&str, &str); 3] = [
    ("LTAIshard0", "shard-secret-0"),
    ("LTAIshard1", "shard-secret-1"),
    ("LTAIshard2", "shard-secret-2"),
];

/// A controller as a real child process, killed when dropped.
struct Replica {
    id: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(k: usize, lease: &str, ns: &str, ecs: &str, logs: &std::path::Path) -> Replica {
    let id = format!("replica-{k}");
    let log = std::fs::File::create(logs.join(format!("{id}.log"))).expect("log file");
    let (ak, secret) = KEYS[k];
    let child = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .arg("run")
        .args([
            "--leader-elect".to_string(),
            "--leader-elect-lease-duration=3s".into(),
            "--leader-elect-renew-deadline=2s".into(),
            "--leader-elect-retry-period=500ms".into(),
            format!("--shards={SHARDS}"),
            format!("--leader-elect-resource-name={lease}"),
            format!("--namespace={ns}"),
            format!("--default-credentials-namespaces={ns}"),
            format!("--ecs-endpoint={ecs}"),
            format!("--sts-endpoint={ecs}/sts"),
            format!("--metrics-addr={}", free_port()),
        ])
        .env("KUBECONFIG", support::kubeconfig())
        .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
        .env("POD_NAME", &id)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", ak)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start ecs-vnc-controller");
    Replica { id, child }
}

/// Who holds each shard's Lease now (valid or not).
async fn holders(client: &Client, lease: &str) -> Vec<Option<String>> {
    let api = Api::<Lease>::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let mut out = Vec::new();
    for k in 0..SHARDS {
        out.push(
            api.get_opt(&format!("{lease}-shard-{k}"))
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
        );
    }
    out
}

/// Shards per holder.
fn spread(holders: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for h in holders.iter().flatten() {
        *out.entry(h.clone()).or_default() += 1;
    }
    out
}

fn instance(i: usize) -> String {
    format!("i-shard{i:09}")
}

async fn put_object(admin: &Client, ns: &str, i: usize) {
    put_secret(admin, ns, &format!("vnc-{i}"), &[("password", "Shrd01")]).await;
    put_vncpassword(
        admin,
        ns,
        &format!("web-{i}"),
        json!({
            "regionId": "cn-hangzhou", "instanceId": instance(i),
            "passwordSecretRef": {"name": format!("vnc-{i}")},
        }),
    )
    .await;
}

/// The AccessKeys that applied a password to each instance, one entry per successful call.
fn appliers(sim: &Sim) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for call in sim.state().call_log() {
        if let ("ModifyInstanceVncPasswd", "Success", Some(id), Some(ak)) = (
            call.action.as_str(),
            call.code.as_str(),
            call.instance_id,
            call.access_key_id,
        ) {
            out.entry(id).or_default().push(ak);
        }
    }
    out
}

async fn wait_all_ready(admin: &Client, ns: &str, objects: std::ops::Range<usize>) {
    for i in objects {
        wait_ready(admin, ns, &format!("web-{i}"), Duration::from_secs(60)).await;
    }
}

#[tokio::test]
async fn replicas_share_the_shards_each_object_once_and_take_over_a_killed_ones() {
    let admin = support::client().await;
    ensure_controller_namespace(&admin).await;
    let ns = support::TestNamespace::new(&admin, "shards").await;
    let keys: Vec<(&str, &str, Option<&str>)> = KEYS.iter().map(|(a, s)| (*a, *s, None)).collect();
    let sim = Sim::start(&[], &keys).await;
    let lease = format!("shards-{:08x}", rand::random::<u32>());
    let logs = LogDir::new();
    const FIRST: usize = 24;
    // Two replicas: two shards each.
    let a = spawn(0, &lease, &ns.name, &sim.url(), logs.path());
    let b = spawn(1, &lease, &ns.name, &sim.url(), logs.path());
    let started = Instant::now();
    let two_each = support::eventually("two shards each", Duration::from_secs(60), || async {
        let h = holders(&admin, &lease).await;
        let s = spread(&h);
        (s.get(&a.id) == Some(&2) && s.get(&b.id) == Some(&2)).then_some(h)
    })
    .await;
    println!("2 replicas: {two_each:?} after {:?}", started.elapsed());
    for i in 0..FIRST {
        sim.add_instance(&instance(i), true);
        put_object(&admin, &ns.name, i).await;
    }
    wait_all_ready(&admin, &ns.name, 0..FIRST).await;
    let applied = appliers(&sim);
    let by_key: BTreeSet<&String> = applied.values().flatten().collect();
    for i in 0..FIRST {
        let keys = applied.get(&instance(i)).cloned().unwrap_or_default();
        assert_eq!(
            keys.len(),
            1,
            "{}: applied once, by one replica: {keys:?}",
            instance(i)
        );
    }
    assert_eq!(
        by_key.len(),
        2,
        "both replicas applied passwords: {by_key:?}"
    );

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
    let applied = appliers(&sim);
    for i in 0..FIRST + MORE {
        let keys = applied.get(&instance(i)).cloned().unwrap_or_default();
        assert_eq!(
            keys.len(),
            1,
            "{}: applied once: {keys:?} (logs in {})",
            instance(i),
            logs.path().display()
        );
    }
    // Lease 3 s, retry 0.5 s: a takeover is due 3 s after the last renew the survivor saw, then
    // at its next try and the supervisor's next look.
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?}"
    );
    drop((a, b));
    ns.delete().await;
}

/// The replicas' logs: removed after a test that passed, kept (and named) after one that failed.
struct LogDir(std::path::PathBuf);

impl LogDir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("log dir").keep())
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the replicas' logs are in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
