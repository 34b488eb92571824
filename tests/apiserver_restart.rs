//! The API server goes away and comes back (etcd kept, its history compacted meanwhile, so the old
//! watches expire with 410 Gone): the controller's watches resume by relisting, a Secret rotated
//! right after the restart and an object created then are both applied, and nothing that did not
//! change is written to ECS again. A test binary of its own: it restarts its control plane's
//! kube-apiserver with the same command line and port.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use support::controller::*;
use support::sim::Sim;
use support::{TestNamespace, eventually};

const AK: &str = "LTAIrestart";
const AK_SECRET: &str = "restart-secret";
const WAIT: Duration = Duration::from_secs(90);
/// From the API server's readiness to a change made then reaching ECS: a watch's next attempt comes
/// at most 30.8 s after its last failure (kube-runtime's backoff cap and jitter), its 410 is
/// followed by a relist at once (`controller::watch_backoff`), then a list and a reconcile.
const RESUME: Duration = Duration::from_secs(45);

fn control_plane_dir() -> PathBuf {
    support::kubeconfig()
        .parent()
        .expect("the kubeconfig's directory")
        .to_path_buf()
}

fn pid_of(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("kube-apiserver.pid"))
        .expect("kube-apiserver.pid (TEST_KUBECONFIG clusters cannot be restarted by this test)")
        .trim()
        .parse()
        .expect("a pid")
}

/// Stops kube-apiserver, waits `down`, starts it again with the same command line, and waits until
/// it answers /readyz. The new pid goes to the pid file, so `stop` still finds it.
async fn restart_apiserver(down: Duration) {
    let dir = control_plane_dir();
    let pid = pid_of(&dir);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let gone = move || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("State:\tZ"))
    };
    // As `stop` does: TERM, and KILL when it still drains its watches after 5 s.
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    };
    signal("-TERM");
    for _ in 0..50 {
        if gone() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !gone() {
        signal("-KILL");
    }
    eventually(
        "kube-apiserver to stop",
        Duration::from_secs(30),
        || async move { gone().then_some(()) },
    )
    .await;
    tokio::time::sleep(down).await;
    // Compact etcd to its current revision: the resourceVersions the controller's watches had
    // are gone, so resuming them answers 410 Gone and the watcher must relist.
    let etcd = argv
        .iter()
        .position(|a| a == "--etcd-servers")
        .and_then(|i| argv.get(i + 1))
        .expect("--etcd-servers")
        .clone();
    compact_etcd(&etcd).await;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("kube-apiserver.log"))
        .expect("log");
    // setsid: the new server belongs to the control plane, not to this test's process group; the
    // control plane's `stop` (run by the watchdog, through the pid file) ends it, not this process.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new("setsid")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start kube-apiserver again");
    std::fs::write(dir.join("kube-apiserver.pid"), child.id().to_string()).expect("pid file");
    let kubeconfig = support::kubeconfig().to_path_buf();
    eventually(
        "kube-apiserver to be ready again",
        Duration::from_secs(90),
        || {
            let kubeconfig = kubeconfig.clone();
            async move {
                let out = std::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["get", "--raw", "/readyz"])
                    .output()
                    .ok()?;
                out.status.success().then_some(())
            }
        },
    )
    .await;
}

/// Compacts etcd's history up to its current revision (etcd's JSON gateway, `/v3/kv/...`).
async fn compact_etcd(etcd: &str) {
    let http = reqwest::Client::new();
    let range = http
        .post(format!("{etcd}/v3/kv/range"))
        .body(json!({"key": "AA=="}).to_string())
        .send()
        .await
        .expect("etcd range")
        .text()
        .await
        .expect("etcd range answer");
    let range: serde_json::Value = serde_json::from_str(&range).expect("JSON");
    let revision = range["header"]["revision"]
        .as_str()
        .expect("etcd's current revision")
        .to_string();
    let compacted = http
        .post(format!("{etcd}/v3/kv/compaction"))
        .body(json!({"revision": revision, "physical": true}).to_string())
        .send()
        .await
        .expect("etcd compaction");
    assert!(compacted.status().is_success(), "{compacted:?}");
}

#[tokio::test]
async fn watches_resume_after_an_api_server_restart_and_nothing_is_lost() {
    // The watch errors the controller logs at warn (a 410 among them) show in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,kube=info".into()),
        ))
        .with_test_writer()
        .try_init();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "apirestart").await;
    let sim = Sim::start(
        &[
            ("i-restart000001", true),
            ("i-restart000002", true),
            ("i-restart000003", true),
        ],
        &[(AK, AK_SECRET, None)],
    )
    .await;
    let controller = start_controller(ControllerOptions {
        namespace: Some(ns.name.clone()),
        default_credentials: Some(credentials(AK, AK_SECRET, None)),
        default_credentials_namespaces: ns.name.clone(),
        controller_namespace: Some(ns.name.clone()),
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    for (name, id, pw) in [
        ("a", "i-restart000001", "Aaaaa1"),
        ("b", "i-restart000002", "Bbbbb2"),
    ] {
        put_secret(
            &client,
            &ns.name,
            &format!("{name}-vnc"),
            &[("password", pw)],
        )
        .await;
        put_vncpassword(
            &client,
            &ns.name,
            name,
            json!({"regionId": "cn-hangzhou", "instanceId": id, "passwordSecretRef": {"name": format!("{name}-vnc")}}),
        )
        .await;
        wait_ready(&client, &ns.name, name, WAIT).await;
    }
    assert_eq!(sim.calls("ModifyInstanceVncPasswd"), 2);

    restart_apiserver(Duration::from_secs(3)).await;

    // A fresh client: the old one's connections died with the server.
    let client = support::client().await;
    put_secret(&client, &ns.name, "a-vnc", &[("password", "Rotat3")]).await;
    put_secret(&client, &ns.name, "c-vnc", &[("password", "Ccccc3")]).await;
    put_vncpassword(
        &client,
        &ns.name,
        "c",
        json!({"regionId": "cn-hangzhou", "instanceId": "i-restart000003", "passwordSecretRef": {"name": "c-vnc"}}),
    )
    .await;
    eventually(
        "the rotation after the restart to reach ECS",
        RESUME,
        || async {
            (sim.set_password("i-restart000001").as_deref() == Some("Rotat3")).then_some(())
        },
    )
    .await;
    wait_ready(&client, &ns.name, "c", WAIT).await;
    wait_ready(&client, &ns.name, "b", WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // a rotated, c new; b unchanged and not applied again.
    assert_eq!(sim.calls("ModifyInstanceVncPasswd"), 4);
    controller.stop().await;
    ns.delete().await;
}
