//! Leader election against the real API server and the ECS simulator: two controllers at once never
//! both call ECS, and killing the leader (SIGKILL, a real child process) hands over to the standby
//! without a duplicate RebootInstance. Short lease timings (3 s / 2 s / 0.5 s) keep the run short;
//! the failover times printed scale with them (see docs/operations/high-availability.md).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::json;

use support::controller::*;
use support::sim::Sim;

const AK: &str = "LTAIleader";
const AK_SECRET: &str = "leader-secret";
const LEASE_FLAGS: [&str; 4] = [
    "--leader-elect",
    "--leader-elect-lease-duration=3s",
    "--leader-elect-renew-deadline=2s",
    "--leader-elect-retry-period=500ms",
];

async fn holder(client: &Client, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .get_opt(lease)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// The sum of a metric's samples whose line starts with `prefix`, from a controller's /metrics.
async fn metric(addr: std::net::SocketAddr, prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

fn instance(i: usize) -> String {
    format!("i-ha{i:011}")
}

async fn put_object(admin: &Client, ns: &str, i: usize) {
    put_secret(admin, ns, &format!("vnc-{i}"), &[("password", "Lead01")]).await;
    put_vncpassword(
        admin,
        ns,
        &format!("web-{i}"),
        json!({
            "regionId": "cn-hangzhou", "instanceId": instance(i),
            "passwordSecretRef": {"name": format!("vnc-{i}")},
            "rebootPolicy": "Automatic",
        }),
    )
    .await;
}

#[tokio::test]
async fn two_controllers_at_once_for_sixty_seconds_only_one_calls_ecs() {
    let admin = support::client().await;
    let ns = support::TestNamespace::new(&admin, "ha-two").await;
    let sim = Sim::start(&[], &[(AK, AK_SECRET, None)]).await;
    let lease = format!("ha-two-{:08x}", rand::random::<u32>());
    let start = |identity: &str| {
        let mut options = ControllerOptions::new(admin.clone(), sim.url());
        options.namespace = Some(ns.name.clone());
        options.default_credentials = Some(credentials(AK, AK_SECRET, None));
        options.default_credentials_namespaces = ns.name.clone();
        options.flags = LEASE_FLAGS
            .iter()
            .map(|f| f.to_string())
            .chain([
                format!("--leader-elect-resource-name={lease}"),
                format!("--leader-identity={identity}"),
            ])
            .collect();
        start_controller(options)
    };
    let a = start("two-a").await;
    let b = start("two-b").await;

    // 60 s of work for both: objects created, then their passwords rotated, every few seconds.
    let began = Instant::now();
    let mut created = 0;
    while began.elapsed() < Duration::from_secs(60) {
        if created < 6 {
            sim.add_instance(&instance(created), true);
            put_object(&admin, &ns.name, created).await;
            created += 1;
        } else {
            let i = rand::random_range(0..created);
            let password = format!("Rot{:03}", rand::random_range(0..1000));
            put_secret(
                &admin,
                &ns.name,
                &format!("vnc-{i}"),
                &[("password", &password)],
            )
            .await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for i in 0..created {
        wait_ready(
            &admin,
            &ns.name,
            &format!("web-{i}"),
            Duration::from_secs(30),
        )
        .await;
    }
    let calls = [
        metric(a.metrics_addr, "ecs_vnc_ecs_calls_total").await,
        metric(b.metrics_addr, "ecs_vnc_ecs_calls_total").await,
    ];
    let leaders = [
        metric(a.metrics_addr, "ecs_vnc_leader ").await,
        metric(b.metrics_addr, "ecs_vnc_leader ").await,
    ];
    println!("ECS calls by two-a, two-b: {calls:?}; ecs_vnc_leader: {leaders:?}");
    assert_eq!(
        calls.iter().filter(|c| **c > 0.0).count(),
        1,
        "exactly one controller calls ECS: {calls:?}"
    );
    assert_eq!(
        calls.iter().sum::<f64>() as usize,
        sim.total_calls(),
        "the simulator saw no call but the leader's"
    );
    assert_eq!(leaders.iter().sum::<f64>(), 1.0, "{leaders:?}");
    let leader = holder(&admin, &lease).await.expect("a holder");
    let lead = if leader == "two-a" { 0 } else { 1 };
    assert!(calls[lead] > 0.0 && leaders[lead] == 1.0, "{leader} leads");

    a.stop().await;
    b.stop().await;
    ns.delete().await;
}

/// A controller as a real child process, so it can be SIGKILLed.
struct Process {
    id: String,
    child: Child,
}

/// A failed test must not leave controllers running.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(id: &str, lease: &str, ns: &str, ecs: &str, log_dir: &std::path::Path) -> Process {
    let log = std::fs::File::create(log_dir.join(format!("{id}.log"))).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .arg("run")
        .args(LEASE_FLAGS)
        .args([
            format!("--leader-elect-resource-name={lease}"),
            format!("--namespace={ns}"),
            format!("--default-credentials-namespaces={ns}"),
            format!("--ecs-endpoint={ecs}"),
            format!("--sts-endpoint={ecs}/sts"),
            format!("--metrics-addr={}", free_port()),
            // Reboots in a herd: one RebootInstance a second for the whole account.
            "--ecs-qps=200,RebootInstance=1".into(),
            "--ecs-burst=50".into(),
            "--reboot-poll-interval=1".into(),
            // An intent recorded by a leader killed before its RebootInstance is never acted on
            // again (at most once): such an object says RebootNotObserved after this long.
            "--reboot-timeout=20".into(),
        ])
        .env("KUBECONFIG", support::kubeconfig())
        .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
        .env("POD_NAME", id)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start ecs-vnc-controller");
    Process {
        id: id.to_string(),
        child,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test]
async fn killing_the_leader_hands_over_without_a_duplicate_reboot() {
    const KILLS: usize = 10;
    const PER_ROUND: usize = 2;
    let admin = support::client().await;
    ensure_controller_namespace(&admin).await;
    let ns = support::TestNamespace::new(&admin, "ha-kill").await;
    let sim = Sim::start(&[], &[(AK, AK_SECRET, None)]).await;
    let lease = format!("ha-kill-{:08x}", rand::random::<u32>());
    let logs = tempfile::tempdir().expect("log dir");
    let mut live = vec![
        spawn("kill-0", &lease, &ns.name, &sim.url(), logs.path()),
        spawn("kill-1", &lease, &ns.name, &sim.url(), logs.path()),
    ];
    let mut objects = 0;
    let mut failovers = Vec::new();
    for round in 0..KILLS {
        // A leader among the live processes.
        let ids: Vec<String> = live.iter().map(|p| p.id.clone()).collect();
        let leader = support::eventually("a live leader", Duration::from_secs(30), || async {
            holder(&admin, &lease).await.filter(|h| ids.contains(h))
        })
        .await;
        // Work in flight: new objects (each on an instance of its own, not I/O-optimized, so each
        // must be rebooted exactly once).
        for _ in 0..PER_ROUND {
            sim.add_instance(&instance(objects), false);
            put_object(&admin, &ns.name, objects).await;
            objects += 1;
        }
        if round == 2 {
            // Once, in the middle of the reboots: right after the first RebootInstance of a batch
            // (the Automatic reboots wait for a later minute than the apply).
            let before = sim.calls("RebootInstance");
            support::eventually("a RebootInstance", Duration::from_secs(90), || async {
                (sim.calls("RebootInstance") > before).then_some(())
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(rand::random_range(300..2500))).await;
        }
        let at = live.iter().position(|p| p.id == leader).expect("leader");
        let mut killed = live.remove(at);
        killed.child.kill().expect("SIGKILL the leader");
        let killed_at = Instant::now();
        let _ = killed.child.wait();
        // The next "Pod" starts, as a Deployment would start it.
        live.push(spawn(
            &format!("kill-{}", round + 2),
            &lease,
            &ns.name,
            &sim.url(),
            logs.path(),
        ));
        let ids: Vec<String> = live.iter().map(|p| p.id.clone()).collect();
        let new = support::eventually(
            "the standby to take over",
            Duration::from_secs(30),
            || async { holder(&admin, &lease).await.filter(|h| ids.contains(h)) },
        )
        .await;
        failovers.push(killed_at.elapsed());
        println!(
            "kill {round}: {leader} SIGKILLed, {new} leads after {:?}",
            killed_at.elapsed()
        );
    }

    // Every object converges: Ready (rebooted once), or, when a kill fell between the recorded
    // intent and the RebootInstance call, RebootNotObserved (never rebooted: at most once).
    let mut ready = Vec::new();
    for i in 0..objects {
        let name = format!("web-{i}");
        let (st, _) = support::eventually(
            &format!("{name} Ready=True or RebootNotObserved"),
            Duration::from_secs(150),
            || async {
                let s = status(&admin, &ns.name, &name).await?;
                let (st, reason) = condition(&s, "Ready")?;
                (st == "True" || reason == "RebootNotObserved").then_some((st, reason))
            },
        )
        .await;
        ready.push(st == "True");
    }
    let reboots: Vec<u32> = (0..objects)
        .map(|i| sim.reboot_count(&instance(i)))
        .collect();
    // A clean handoff: SIGTERM the leader, the standby takes over at its next try.
    let leader = holder(&admin, &lease).await.expect("a leader");
    let at = live.iter().position(|p| p.id == leader).expect("leader");
    let mut stopped = live.remove(at);
    let term_at = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &stopped.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let other = live[0].id.clone();
    support::eventually("a clean handoff", Duration::from_secs(10), || async {
        (holder(&admin, &lease).await.as_deref() == Some(other.as_str())).then_some(())
    })
    .await;
    let handoff = term_at.elapsed();
    let exit = stopped.child.wait().expect("wait");
    for p in &mut live {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }

    failovers.sort();
    println!(
        "failover after SIGKILL ({KILLS} kills, lease 3 s, retry 0.5 s): p50 {:?}, max {:?}; clean handoff after SIGTERM: {handoff:?}",
        percentile(&failovers, 0.5),
        failovers[failovers.len() - 1],
    );
    assert!(exit.success(), "SIGTERM exits cleanly: {exit}");
    // Its LeaderLost Event was published before it exited.
    let events = support::kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        CONTROLLER_NAMESPACE,
        &format!("--field-selector=regarding.name={lease}"),
        "-o",
        "jsonpath={range .items[*]}{.note}{\"\\n\"}{end}",
    ]);
    let notes = String::from_utf8_lossy(&events.stdout);
    assert!(
        notes
            .lines()
            .any(|n| n.starts_with(&format!("{} stopped leading", stopped.id))),
        "no LeaderLost Event of the SIGTERMed leader {}: {notes}",
        stopped.id
    );
    let abandoned = ready.iter().filter(|r| !**r).count();
    println!(
        "{objects} objects: {} Ready, {abandoned} with an intent abandoned by a killed leader; reboots per instance {reboots:?}",
        objects - abandoned
    );
    let expected: Vec<u32> = ready.iter().map(|r| u32::from(*r)).collect();
    assert_eq!(
        reboots,
        expected,
        "Ready instances rebooted exactly once, the others never (logs in {})",
        logs.keep().display()
    );
    assert_eq!(sim.calls("RebootInstance"), objects - abandoned);
    ns.delete().await;
}

/// The renew deadline: a leader whose renews fail (here: its Lease RBAC revoked, as the deployed
/// ServiceAccount) steps down within the renew deadline and makes no ECS call after that.
#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_at_its_renew_deadline_and_stops_calling_ecs() {
    let admin = support::client().await;
    ensure_controller_namespace(&admin).await;
    let deploy = support::repo_root().join("deploy");
    for file in ["serviceaccount.yaml", "rbac.yaml"] {
        let path = deploy.join(file);
        let out = support::kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &path.to_string_lossy(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let ns = support::TestNamespace::new(&admin, "ha-fence").await;
    let sim = Sim::start(&[("i-fence0000001", true)], &[(AK, AK_SECRET, None)]).await;
    let as_sa = support::service_account_client(CONTROLLER_NAMESPACE, "ecs-vnc-controller").await;
    let mut options = ControllerOptions::new(as_sa, sim.url());
    options.namespace = Some(ns.name.clone());
    options.default_credentials = Some(credentials(AK, AK_SECRET, None));
    options.default_credentials_namespaces = ns.name.clone();
    options.flags = LEASE_FLAGS
        .iter()
        .map(|f| f.to_string())
        .chain(["--leader-identity=fence".to_string()])
        .collect();
    let controller = start_controller(options).await;
    put_secret(&admin, &ns.name, "web-vnc", &[("password", "Fence1")]).await;
    put_vncpassword(
        &admin,
        &ns.name,
        "web",
        json!({
            "regionId": "cn-hangzhou", "instanceId": "i-fence0000001",
            "passwordSecretRef": {"name": "web-vnc"},
        }),
    )
    .await;
    wait_ready(&admin, &ns.name, "web", Duration::from_secs(30)).await;
    assert_eq!(
        metric(controller.metrics_addr, "ecs_vnc_leader ").await,
        1.0
    );

    // Renews now fail (403); the Lease itself stays as it was.
    let revoked_at = Instant::now();
    let out = support::kubectl(&[
        "delete",
        "rolebinding",
        "-n",
        CONTROLLER_NAMESPACE,
        "ecs-vnc-controller",
    ]);
    assert!(out.status.success(), "{out:?}");
    support::eventually(
        "the leader to step down",
        Duration::from_secs(10),
        || async {
            (metric(controller.metrics_addr, "ecs_vnc_leader ").await == 0.0).then_some(())
        },
    )
    .await;
    let stepped_down = revoked_at.elapsed();
    println!("renews refused: stepped down after {stepped_down:?} (renew deadline 2 s)");
    assert!(
        stepped_down < Duration::from_secs(2) + Duration::from_millis(1500),
        "{stepped_down:?}"
    );
    // Each transition is an Event on the Lease.
    support::eventually("the leadership Events", Duration::from_secs(10), || async {
        let out = support::kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            CONTROLLER_NAMESPACE,
            "--field-selector=regarding.name=ecs-vnc-controller",
            "-o",
            "json",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        (text.contains("\"LeaderElected\"") && text.contains("fence stopped leading")).then_some(())
    })
    .await;
    // A rotation now wakes no reconcile: no ECS call at all.
    let calls = sim.total_calls();
    put_secret(&admin, &ns.name, "web-vnc", &[("password", "Fence2")]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sim.total_calls(), calls, "a stepped-down leader called ECS");
    assert_eq!(
        sim.set_password("i-fence0000001").as_deref(),
        Some("Fence1")
    );

    controller.stop().await;
    ns.delete().await;
}

/// A deposed leader's status write that was already on its way when the network failed lands
/// late, after the new leader recorded its reboot intent, rebooted and saw the restart. Every status
/// write carries the resourceVersion it was computed from, so the API server refuses the late one:
/// no stale status, no second reboot.
#[tokio::test]
async fn a_deposed_leaders_late_status_write_is_refused_by_the_api_server() {
    use support::partition::{Partition, partitioned_client};
    let admin = support::client().await;
    let ns = support::TestNamespace::new(&admin, "ha-fence").await;
    let sim = Sim::start(&[("i-fenced000001", false)], &[(AK, AK_SECRET, None)]).await;
    // ECS's clock, moved a minute on so that the new leader's reboot need not wait for it.
    let ecs = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    sim.state().set_clock({
        let ecs = ecs.clone();
        move || {
            jiff::Timestamp::now()
                + jiff::SignedDuration::from_secs(ecs.load(std::sync::atomic::Ordering::SeqCst))
        }
    });
    let lease = format!("ha-fence-{:08x}", rand::random::<u32>());
    let options = |client: Client, identity: &str| {
        let mut options = ControllerOptions::new(client, sim.url());
        options.namespace = Some(ns.name.clone());
        options.default_credentials = Some(credentials(AK, AK_SECRET, None));
        options.default_credentials_namespaces = ns.name.clone();
        options.flags = LEASE_FLAGS
            .iter()
            .map(|f| f.to_string())
            .chain([
                format!("--leader-elect-resource-name={lease}"),
                format!("--leader-identity={identity}"),
            ])
            .collect();
        options
    };
    let partition = Partition::default();
    let a = start_controller(options(partitioned_client(&partition).await, "fence-a")).await;
    support::eventually("fence-a to lead", Duration::from_secs(20), || async {
        (holder(&admin, &lease).await.as_deref() == Some("fence-a")).then_some(())
    })
    .await;
    let b = start_controller(options(admin.clone(), "fence-b")).await;
    // The leader's next status write of the object is held on its way.
    partition.hold_next("PATCH", "/vncpasswords/web/status");
    put_secret(&admin, &ns.name, "web-vnc", &[("password", "Fence1")]).await;
    put_vncpassword(
        &admin,
        &ns.name,
        "web",
        json!({"regionId": "cn-hangzhou", "instanceId": "i-fenced000001",
               "passwordSecretRef": {"name": "web-vnc"}, "rebootPolicy": "Automatic"}),
    )
    .await;
    partition.wait_held().await;
    // Its network fails: it cannot renew, steps down, and the other replica takes over.
    partition.cut();
    support::eventually("fence-b to lead", Duration::from_secs(30), || async {
        (holder(&admin, &lease).await.as_deref() == Some("fence-b")).then_some(())
    })
    .await;
    ecs.fetch_add(60, std::sync::atomic::Ordering::SeqCst);
    let ready = wait_ready(&admin, &ns.name, "web", Duration::from_secs(90)).await;
    assert!(
        ready.reboot.requested_time.is_some() && ready.instance.restart_observed_time.is_some()
    );
    assert_eq!(sim.successes("RebootInstance"), 1);
    // The late write lands now: refused.
    let answer = partition.release().await;
    assert_eq!(
        answer, 409,
        "the API server refuses the deposed leader's write"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status(&admin, &ns.name, "web").await.expect("status");
    assert_eq!(after, ready, "the new leader's status stands");
    assert_eq!(sim.successes("RebootInstance"), 1);
    partition.heal();
    a.stop().await;
    b.stop().await;
    ns.delete().await;
}
