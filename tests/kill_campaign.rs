//! The kill campaign: the controller as a real process, SIGKILLed at random moments while 200
//! VncPasswords are applied, a third of them rebooted (`rebootPolicy: Automatic`, reboots taking
//! 20–60 s) and a third rotated. At the end every object has converged, no applied password was
//! followed by two RebootInstance calls, and a password was sent to ECS again only across a kill
//! (one that fell between ECS accepting it and the status recording it; a kill mid-wave can catch
//! several objects so) or when a person asked. Bounded: 20 kills, then at most `CONVERGE` to
//! converge.
//!
//! A kill that falls between the recorded reboot intent and the RebootInstance call leaves an
//! intent that was never sent. At most once means the controller does not guess: after
//! `--reboot-timeout` the object says `RebootNotObserved`, and the campaign then does what the
//! message tells a person to do (a new `ecsvnc.io/force-apply-requested-at`), after checking that
//! ECS really received no reboot for that password. Such objects are counted and printed.
//!
//! Figures (kills, ECS calls, time to converge) are printed; docs/development/benchmarks.md shows them.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::ListParams;
use rand::Rng;
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use ecs_vnc_controller::simulator::{RunningSimulator, Simulator, SimulatorConfig};
use support::TestNamespace;
use support::controller::{put_secret, put_vncpassword};

const OBJECTS: usize = 200;
const KILLS: usize = 20;
const AK: &str = "LTAIkillcampaign";
const AK_SECRET: &str = "kill-campaign-secret";
const CONVERGE: Duration = Duration::from_secs(420);

fn instance(i: usize) -> String {
    format!("i-kill{i:08}")
}

/// Every third object is on a non-I/O-optimized instance with `rebootPolicy: Automatic`.
fn automatic(i: usize) -> bool {
    i.is_multiple_of(3)
}

fn password(i: usize, generation: u32) -> String {
    format!("K{generation}{i:04}")
}

/// How many times a password was sent again (`sent`: its positions in the call log) with no kill
/// (`kill_marks`: log positions) after the previous send: each kill explains one repeat.
fn repeats_without_kill(sent: &[usize], kill_marks: &[usize]) -> usize {
    sent.windows(2)
        .filter(|w| !kill_marks.iter().any(|&m| w[0] < m && m <= w[1]))
        .count()
}

#[test]
fn a_repeat_is_explained_only_by_a_kill_between_the_two_sends() {
    assert_eq!(repeats_without_kill(&[3], &[]), 0);
    assert_eq!(repeats_without_kill(&[3, 9], &[5]), 0);
    assert_eq!(repeats_without_kill(&[3, 9], &[]), 1);
    assert_eq!(repeats_without_kill(&[3, 9], &[2, 10]), 1);
    // One kill explains one repeat, not two.
    assert_eq!(repeats_without_kill(&[3, 6, 9], &[5]), 1);
    // A call logged at the mark came after the kill.
    assert_eq!(repeats_without_kill(&[3, 5], &[5]), 0);
    assert_eq!(repeats_without_kill(&[5, 7], &[5]), 1);
}

/// The controller binary, killed when dropped.
struct Controller {
    child: Child,
}

impl Controller {
    fn start(ns: &str, sim: &str, log: &std::path::Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
            .args([
                "run",
                &format!("--namespace={ns}"),
                &format!("--ecs-endpoint={sim}"),
                &format!("--sts-endpoint={sim}/sts"),
                &format!("--default-credentials-namespaces={ns}"),
                "--metrics-addr=127.0.0.1:0",
                "--reboot-poll-interval=2",
                "--reboot-timeout=45",
                // The reboots come as a herd: two RebootInstance a second for the account.
                "--ecs-qps=200,RebootInstance=2",
                "--ecs-burst=50",
                "--log-format=json",
            ])
            .env("KUBECONFIG", support::kubeconfig())
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .env("POD_NAMESPACE", ns)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the controller binary");
        Self { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn simulator() -> RunningSimulator {
    let config = SimulatorConfig {
        reboot_seconds: 20.0,
        reboot_seconds_max: 60.0,
        ..support::sim::fleet(
            AK,
            AK_SECRET,
            (0..OBJECTS).map(|i| (instance(i), !automatic(i))),
        )
    };
    Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("simulator")
}

#[tokio::test]
async fn sigkill_at_random_moments_never_reboots_twice_and_everything_converges() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "kill").await;
    let sim = simulator().await;
    let log = std::env::temp_dir().join(format!("ecs-vnc-kill-campaign-{}.log", ns.name));
    let started = Instant::now();

    // Secrets and objects first, then the controller: it starts on a full backlog.
    let mut generation: HashMap<usize, u32> = (0..OBJECTS).map(|i| (i, 1)).collect();
    futures::stream::iter(0..OBJECTS)
        .for_each_concurrent(16, |i| {
            let (client, ns) = (client.clone(), ns.name.clone());
            async move {
                put_secret(
                    &client,
                    &ns,
                    &format!("pw-{i}"),
                    &[("password", &password(i, 1))],
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

    let mut controller = Controller::start(&ns.name, &sim.url(), &log);
    let mut rng = rand::rng();
    // A third of the objects are rotated during the kills, in three waves.
    let rotated: Vec<usize> = (0..OBJECTS)
        .filter(|i| i % 3 == 1 || i.is_multiple_of(9))
        .take(OBJECTS / 3)
        .collect();
    // Where each kill falls in ECS's call log: the number of calls logged once the killed process
    // is gone (and what it had already sent has landed), before the next one starts.
    let mut kill_marks: Vec<usize> = Vec::new();
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..6000))).await;
        controller.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        kill_marks.push(sim.state().call_log().len());
        if kill % 7 == 3 {
            let wave = kill / 7;
            for &i in rotated
                .iter()
                .skip(wave * rotated.len() / 3)
                .take(rotated.len() / 3 + 1)
            {
                let g = generation.entry(i).or_default();
                if *g == 1 {
                    *g = 2;
                    put_secret(
                        &client,
                        &ns.name,
                        &format!("pw-{i}"),
                        &[("password", &password(i, 2))],
                    )
                    .await;
                }
            }
        }
        controller = Controller::start(&ns.name, &sim.url(), &log);
    }
    let kills_done = started.elapsed();

    // Converged: every object Ready, every instance's effective password the Secret's.
    let api: Api<VncPassword> = Api::namespaced(client.clone(), &ns.name);
    let deadline = Instant::now() + CONVERGE;
    let state = sim.state().clone();
    let mut asked_a_person: Vec<String> = Vec::new();
    loop {
        let objects = api.list(&ListParams::default()).await.expect("list");
        let ready_reason = |o: &VncPassword| {
            o.status
                .as_ref()
                .and_then(|s| s.condition("Ready"))
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let not_ready: Vec<String> = objects
            .items
            .iter()
            // In effect (Ready alone is also True for a restart a person must make).
            .filter(|o| !o.status.as_ref().is_some_and(|s| s.is_true("InEffect")))
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        // An intent never sent: ECS got no RebootInstance after the last apply to the instance.
        for o in &objects.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            if ready_reason(o).is_some_and(|(_, r)| r == "RebootNotObserved")
                && !asked_a_person.contains(&name)
            {
                let id = o.spec.instance_id.clone();
                let calls: Vec<_> = state
                    .call_log()
                    .into_iter()
                    .filter(|c| c.code == "Success" && c.instance_id.as_deref() == Some(&id))
                    .collect();
                let last_apply = calls
                    .iter()
                    .rposition(|c| c.action == "ModifyInstanceVncPasswd");
                let rebooted_after = calls
                    .iter()
                    .skip(last_apply.map_or(0, |i| i + 1))
                    .any(|c| c.action == "RebootInstance");
                assert!(
                    !rebooted_after,
                    "{name}: RebootNotObserved although ECS rebooted the instance"
                );
                api.patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                        "ecsvnc.io/force-apply-requested-at": "kill-campaign"}}})),
                )
                .await
                .expect("annotate");
                asked_a_person.push(name);
            }
        }
        let wrong: Vec<usize> = (0..OBJECTS)
            .filter(|i| {
                state
                    .instance(&instance(*i))
                    .and_then(|v| v.effective_password)
                    != Some(password(*i, generation[i]))
            })
            .collect();
        if not_ready.is_empty() && wrong.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "not converged after {CONVERGE:?}: {} not Ready (e.g. {:?}), {} instances without the Secret's password (e.g. {:?}); controller log: {}",
                not_ready.len(),
                not_ready.iter().take(5).collect::<Vec<_>>(),
                wrong.len(),
                wrong
                    .iter()
                    .take(5)
                    .map(|i| instance(*i))
                    .collect::<Vec<_>>(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let converged = started.elapsed();
    controller.kill();

    // Per instance, in call order: which password was last applied when each reboot was asked for.
    let mut applied: HashMap<String, String> = HashMap::new();
    let mut reboots: HashMap<(String, String), u32> = HashMap::new();
    let mut modifies = 0usize;
    // Per (instance, password): the log positions of its successful ModifyInstanceVncPasswd.
    let mut sent: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (at, call) in state.call_log().into_iter().enumerate() {
        if call.code != "Success" {
            continue;
        }
        let Some(id) = call.instance_id.clone() else {
            continue;
        };
        match call.action.as_str() {
            "ModifyInstanceVncPasswd" => {
                modifies += 1;
                let password = call.vnc_password.clone().unwrap_or_default();
                sent.entry((id.clone(), password.clone()))
                    .or_default()
                    .push(at);
                applied.insert(id, password);
            }
            "RebootInstance" => {
                let password = applied.get(&id).cloned().unwrap_or_default();
                *reboots.entry((id, password)).or_default() += 1;
            }
            _ => {}
        }
    }
    let duplicates: Vec<_> = reboots.iter().filter(|(_, n)| **n > 1).collect();
    let rotations = generation.values().filter(|g| **g == 2).count();
    // Each object a person re-applied costs one more apply, by request.
    let expected_modifies = OBJECTS + rotations + asked_a_person.len();
    let describes = state.calls("DescribeInstances");
    println!(
        "kill campaign: {OBJECTS} objects ({} Automatic, {rotations} rotated), {KILLS} SIGKILLs in {:.0} s; converged after {:.0} s; \
         ModifyInstanceVncPasswd {modifies} (expected {expected_modifies}, {} extra), RebootInstance {} (for {} applied passwords), \
         duplicate reboots {}, DescribeInstances {describes}; killed between reboot intent and call (RebootNotObserved, re-requested): {}",
        (0..OBJECTS).filter(|i| automatic(*i)).count(),
        kills_done.as_secs_f64(),
        converged.as_secs_f64(),
        modifies.saturating_sub(expected_modifies),
        reboots.values().sum::<u32>(),
        reboots.len(),
        duplicates.len(),
        asked_a_person.len(),
    );
    assert!(asked_a_person.len() <= KILLS);
    assert!(
        duplicates.is_empty(),
        "RebootInstance twice for one applied password: {duplicates:?}"
    );
    // A password is sent again only because a kill fell between ECS accepting it and the status
    // recording it (up to every object in flight at that moment, so a kill in the middle of the
    // wave costs several), or because a person asked: never by a controller on its own, and at most
    // once per kill.
    let asked: Vec<String> = (0..OBJECTS)
        .filter(|i| asked_a_person.contains(&format!("vp-{i}")))
        .map(instance)
        .collect();
    let unexplained: Vec<_> = sent
        .iter()
        .filter(|((id, _), at)| {
            repeats_without_kill(at, &kill_marks) > usize::from(asked.contains(id))
        })
        .map(|((id, _), at)| (id, at.len()))
        .collect();
    assert!(
        unexplained.is_empty(),
        "{modifies} ModifyInstanceVncPasswd for {expected_modifies} passwords: the same password sent again \
         with no kill in between (instance, times sent): {unexplained:?}"
    );
    // Leak scan: no password and no AccessKeySecret in the controller's log (20 processes), the
    // Events or the statuses.
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("events");
    let statuses = api.list(&ListParams::default()).await.expect("list");
    let mut produced = std::fs::read_to_string(&log).expect("controller log");
    produced.push_str(&serde_json::to_string(&events.items).expect("events json"));
    for o in &statuses.items {
        produced.push_str(&serde_json::to_string(&o.status).expect("status json"));
    }
    let mut secrets: Vec<String> = vec![AK_SECRET.to_string()];
    for i in 0..OBJECTS {
        secrets.push(password(i, 1));
        secrets.push(password(i, 2));
    }
    let leaks: Vec<&String> = secrets
        .iter()
        .filter(|s| support::leaks::leaked_at(&produced, s).is_some())
        .collect();
    assert!(
        leaks.is_empty(),
        "{} secrets appear in logs, Events or statuses ({} bytes scanned)",
        leaks.len(),
        produced.len()
    );
    println!(
        "leak scan: {} secrets searched in {} bytes of log, Events and statuses: 0 found",
        secrets.len(),
        produced.len()
    );
    ns.delete().await;
    let _ = std::fs::remove_file(&log);
}
