//! The controller at scale: N VncPasswords (half on non-I/O-optimized instances) on a real
//! kube-apiserver (tests/control-plane) against the in-process ECS simulator.
//!
//!     cargo run --release --example controller_scale [-- N [ECS_QPS]]
//!
//! Prints how long until every object settles (Ready, or RebootRequired for non-I/O-optimized
//! instances), how long after a mass console reboot until all are Ready, the ECS calls made per
//! action (DescribeInstances batching shows here), and the controller process's peak RSS.
//! Set TEST_KUBECONFIG to use an existing cluster instead of starting a control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use ecs_vnc_controller::api::{Reason, VncPassword, condition};
use ecs_vnc_controller::controller::{Environment, RunArgs, run_with};
use ecs_vnc_controller::ecs::{Credentials, CredentialsProvider};
use ecs_vnc_controller::secret::SecretString;
use ecs_vnc_controller::simulator::{AccessKeyConfig, InstanceConfig, Simulator, SimulatorConfig};

const NS: &str = "scale";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let qps: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200.0);
    ecs_vnc_controller::ecs::client::install_crypto_provider();

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
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
    let kubectl = |args: &[&str]| {
        let ok = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(
            ok.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        root.join("crds/vncpassword.yaml").to_str().unwrap(),
    ]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/vncpasswords.ecsvnc.io",
    ]);
    for ns in [NS, "ecs-vnc-system"] {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["create", "ns", ns])
            .output();
    }
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");

    let instance = |i: usize| format!("i-scale{i:08}");
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: vec![AccessKeyConfig {
                id: "LTAIscale".into(),
                secret: "scale-secret".into(),
                security_token: None,
            }],
            instances: (0..n)
                .map(|i| InstanceConfig {
                    id: instance(i),
                    region: "cn-hangzhou".into(),
                    io_optimized: i % 2 == 0,
                    status: "Running".into(),
                })
                .collect(),
            ..Default::default()
        },
    )
    .await
    .expect("simulator");

    println!("creating {n} Secrets and VncPasswords in namespace {NS} ...");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), NS);
    let vncpw: Api<VncPassword> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (secrets, vncpw) = (secrets.clone(), vncpw.clone());
            let name = format!("vm-{i}");
            let instance = instance(i);
            async move {
                let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("{name}-vnc")}, "stringData": {"password": format!("P{i:05}")}
                })).expect("secret");
                let _ = secrets.create(&PostParams::default(), &secret).await;
                let obj = json!({"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword", "metadata": {"name": name},
                    "spec": {"regionId": "cn-hangzhou", "instanceId": instance, "passwordSecretRef": {"name": format!("{name}-vnc")}}});
                vncpw.patch(&name, &PatchParams::apply("scale"), &Patch::Apply(&obj)).await.expect("apply");
            }
        })
        .await;

    let args = RunArgs::from_flags([
        format!("--ecs-endpoint={}", sim.url()),
        format!("--ecs-qps={qps}"),
        format!("--ecs-burst={}", qps.max(1.0) as u32),
        "--ecs-max-retries=2".to_string(),
        format!("--default-credentials-namespaces={NS}"),
        "--metrics-addr=127.0.0.1:0".to_string(),
        "--reboot-poll-interval=5".to_string(),
        "--concurrency=16".to_string(),
    ])
    .expect("run flags");
    let env = Environment {
        client: client.clone(),
        default_credentials: Some(CredentialsProvider::fixed(Credentials::new(
            "LTAIscale",
            SecretString::new("scale-secret"),
            None,
        ))),
        controller_namespace: "ecs-vnc-system".into(),
        clock: ecs_vnc_controller::controller::context::system_clock(),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let controller = tokio::spawn(run_with(args, env, async move {
        let _ = stop_rx.await;
    }));

    let settled = |o: &VncPassword| {
        o.status
            .as_ref()
            .and_then(|s| s.condition(condition::READY))
            .is_some_and(|c| c.status == "True" || c.reason == Reason::RebootRequired.as_str())
    };
    let ready = |o: &VncPassword| {
        o.status
            .as_ref()
            .is_some_and(|s| s.is_true(condition::READY))
    };
    wait_all(&vncpw, n, settled).await;
    let t_settle = started.elapsed();
    let calls_settle = counts(&sim);

    let reboot_started = Instant::now();
    for i in (0..n).filter(|i| i % 2 == 1) {
        let _ = sim.state().reboot(None, &instance(i));
    }
    wait_all(&vncpw, n, ready).await;
    let t_reboot = reboot_started.elapsed();
    let calls_total = counts(&sim);

    println!(
        "\ncontroller at scale: {n} VncPasswords ({} non-I/O-optimized), ECS limit {qps} QPS, concurrency 16",
        n / 2
    );
    println!(
        "all settled (Ready or RebootRequired): {:.1} s  ({:.0} objects/s)",
        t_settle.as_secs_f64(),
        n as f64 / t_settle.as_secs_f64()
    );
    println!("  ECS calls: {calls_settle}");
    println!(
        "all Ready after a mass console reboot: {:.1} s (poll interval 5 s)",
        t_reboot.as_secs_f64()
    );
    println!("  ECS calls in total: {calls_total}");
    println!(
        "controller process peak RSS (VmHWM, includes the in-process simulator): {}",
        peak_rss()
    );

    let _ = stop_tx.send(());
    let _ = controller.await;
    if let Some(dir) = cp_dir {
        let _ = Command::new(root.join("tests/control-plane/stop"))
            .arg(&dir)
            .status();
        let _ = std::fs::remove_dir(&dir);
    }
}

async fn wait_all(api: &Api<VncPassword>, n: usize, done: impl Fn(&VncPassword) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        if list.items.len() >= n && list.items.iter().all(&done) {
            return;
        }
        assert!(Instant::now() < deadline, "not settled within 30 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn counts(sim: &ecs_vnc_controller::simulator::RunningSimulator) -> String {
    [
        "ModifyInstanceVncPasswd",
        "DescribeInstances",
        "RebootInstance",
    ]
    .iter()
    .map(|a| format!("{a} {}", sim.state().calls(a)))
    .collect::<Vec<_>>()
    .join(", ")
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
