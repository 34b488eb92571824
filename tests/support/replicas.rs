//! Controllers with `--shards` as real child processes, for tests/shards.rs (API server without
//! sharded watch) and tests/shard_watch.rs (with it). Each replica calls ECS with an AccessKey of
//! its own (keys of one account in the simulator), so the simulator's call log says which replica
//! applied each password. Short lease timings (4 s / 3 s / 1.5 s) keep the runs short; the retry
//! period is above 1 s on purpose, longer than the 1 s a released Lease used to be left to its asker
//! (a replica then took back the shard it had just handed over).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::json;

use super::controller::*;
use super::sim::Sim;

pub const SHARDS: u16 = 4;
pub const KEYS: [(&str, &str); 3] = [
    ("LTAIshard0", "shard-secret-0"),
    ("LTAIshard1", "shard-secret-1"),
    ("LTAIshard2", "shard-secret-2"),
];

/// A controller as a real child process, killed when dropped.
pub struct Replica {
    pub id: String,
    pub child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(k: usize, lease: &str, ns: &str, ecs: &str, logs: &std::path::Path) -> Replica {
    let id = format!("replica-{k}");
    let log = std::fs::File::create(logs.join(format!("{id}.log"))).expect("log file");
    let (ak, secret) = KEYS[k];
    let child = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .arg("run")
        .args([
            "--leader-elect".to_string(),
            "--leader-elect-lease-duration=4s".into(),
            "--leader-elect-renew-deadline=3s".into(),
            "--leader-elect-retry-period=1500ms".into(),
            format!("--shards={SHARDS}"),
            format!("--leader-elect-resource-name={lease}"),
            format!("--namespace={ns}"),
            format!("--default-credentials-namespaces={ns}"),
            format!("--ecs-endpoint={ecs}"),
            format!("--sts-endpoint={ecs}/sts"),
            format!("--metrics-addr={}", free_port()),
        ])
        .env("KUBECONFIG", super::kubeconfig())
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
pub async fn holders(client: &Client, lease: &str) -> Vec<Option<String>> {
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
pub fn spread(holders: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for h in holders.iter().flatten() {
        *out.entry(h.clone()).or_default() += 1;
    }
    out
}

pub fn instance(i: usize) -> String {
    format!("i-shard{i:09}")
}

pub async fn put_object(admin: &Client, ns: &str, i: usize) {
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
pub fn appliers(sim: &Sim) -> BTreeMap<String, Vec<String>> {
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

pub async fn wait_all_ready(admin: &Client, ns: &str, objects: std::ops::Range<usize>) {
    for i in objects {
        wait_ready(admin, ns, &format!("web-{i}"), Duration::from_secs(60)).await;
    }
}

/// The simulator's keys for the replicas.
pub fn sim_keys() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    KEYS.iter().map(|(a, s)| (*a, *s, None)).collect()
}

/// Every instance in `range` applied exactly once (by one replica), and the AccessKeys that did.
pub fn applied_once(
    sim: &Sim,
    range: std::ops::Range<usize>,
    logs: &LogDir,
) -> std::collections::BTreeSet<String> {
    let applied = appliers(sim);
    let mut keys = std::collections::BTreeSet::new();
    for i in range {
        let by = applied.get(&instance(i)).cloned().unwrap_or_default();
        assert_eq!(
            by.len(),
            1,
            "{}: applied once, by one replica: {by:?} (logs in {})",
            instance(i),
            logs.path().display()
        );
        keys.extend(by);
    }
    keys
}

/// Whether replica `id`'s log has a line containing `text`.
pub fn logged(logs: &LogDir, id: &str, text: &str) -> bool {
    std::fs::read_to_string(logs.path().join(format!("{id}.log")))
        .unwrap_or_default()
        .contains(text)
}

/// The replicas' logs: removed after a test that passed, kept (and named) after one that failed.
pub struct LogDir(std::path::PathBuf);

impl LogDir {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("log dir").keep())
    }

    pub fn path(&self) -> &std::path::Path {
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

/// Replicas 0 and 1 on `lease`, once they hold two of the four shards each; with how long that took.
pub async fn two_replicas(
    admin: &Client,
    ns: &str,
    sim: &Sim,
    lease: &str,
    logs: &LogDir,
) -> (Replica, Replica, Duration) {
    let started = std::time::Instant::now();
    let a = spawn(0, lease, ns, &sim.url(), logs.path());
    let b = spawn(1, lease, ns, &sim.url(), logs.path());
    super::eventually("two shards each", Duration::from_secs(60), || async {
        let s = spread(&holders(admin, lease).await);
        (s.get(&a.id) == Some(&2) && s.get(&b.id) == Some(&2)).then_some(())
    })
    .await;
    (a, b, started.elapsed())
}

/// The shard Leases keep the holders they have now for 6 s (a lease duration and a half, sampled
/// every 500 ms): no shard goes back and forth once the replicas have shared them out. Returns them.
pub async fn stable_holders(admin: &Client, lease: &str, logs: &LogDir) -> Vec<Option<String>> {
    let settled = holders(admin, lease).await;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            holders(admin, lease).await,
            settled,
            "the shards changed hands after settling (logs in {})",
            logs.path().display()
        );
    }
    settled
}

/// Objects `range` created and Ready, each applied exactly once, by both `replicas` between them,
/// each of which logged `said` (what it learnt of the API server's filtering).
pub async fn served_once_by_both(
    admin: &Client,
    ns: &str,
    sim: &Sim,
    range: std::ops::Range<usize>,
    logs: &LogDir,
    replicas: [&Replica; 2],
    said: &str,
) {
    for i in range.clone() {
        sim.add_instance(&instance(i), true);
        put_object(admin, ns, i).await;
    }
    wait_all_ready(admin, ns, range.clone()).await;
    let by_key = applied_once(sim, range, logs);
    assert_eq!(
        by_key.len(),
        2,
        "both replicas applied passwords: {by_key:?}"
    );
    for replica in replicas {
        assert!(
            logged(logs, &replica.id, said),
            "{} did not log {said:?} (logs in {})",
            replica.id,
            logs.path().display()
        );
    }
}
