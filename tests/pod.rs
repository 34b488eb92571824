//! The shipped manifests as real Pods: the image scripts/image builds (no Docker daemon) is
//! imported into a real node's containerd (`tests/control-plane/start DIR --with-node`: kubelet,
//! containerd + runc + CNI bridge, kube-proxy, controller-manager, scheduler), `deploy/` is applied
//! with kustomize as docs/installation.md says, and the Deployment's two Pods run the
//! controller under the Deployment's own constraints (uid 65532, read-only root, no capabilities,
//! the mounted ServiceAccount token, the in-cluster API address through the kubernetes Service,
//! POD_NAMESPACE/POD_NAME from the downward API, the probes).
//!
//! One test, in steps, because the steps share the one Deployment of the one node: install →
//! Running and Ready → JSON logs → one leader → a VncPassword reconciled against the ECS simulator
//! (on the host's address, which Pods reach through the bridge) → the leader Pod deleted: the
//! controller exits 0 within the grace period and another replica takes over and reconciles → the
//! readiness probe fails while the Lease cannot be reached (its RBAC taken away) and passes again
//! once it can.
//!
//! A second test installs the Helm chart the way platform teams do: `helm package`, `helm install`
//! of the archive with the imported image (two Pods Ready, a VncPassword reconciled), `helm
//! upgrade` with a changed value (a rolling update, the Lease handed over cleanly, no second ECS
//! write), `helm uninstall` (the controller gone, the CRD and the VncPassword kept), then
//! namespaced mode installed the same way (its RBAC checked with `kubectl auth can-i` both ways).
//! The two tests share the node, one after the other.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use serde_json::{Value, json};

use ecs_vnc_controller::simulator::Simulator;
use support::controller::*;
use support::kubectl_ok;

const NS: &str = "ecs-vnc-system";
const SELECTOR: &str = "app.kubernetes.io/name=ecs-vnc-controller";
const INSTANCE: &str = "i-podtest0001";

fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(&all)).expect("kubectl -o json")
}

/// The controller's Pods, by name (those not being deleted).
fn pods() -> BTreeMap<String, Value> {
    kubectl_json(&["-n", NS, "get", "pods", "-l", SELECTOR])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p.clone(),
            )
        })
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn lease_holder() -> Option<String> {
    let out = support::kubectl(&["-n", NS, "get", "lease", "ecs-vnc-controller", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Waits for the rollout and for two Running, Ready Pods (not counting those being deleted);
/// returns them.
async fn wait_two_ready_pods() -> BTreeMap<String, Value> {
    let rollout = support::kubectl(&[
        "-n",
        NS,
        "rollout",
        "status",
        "deployment/ecs-vnc-controller",
        "--timeout=180s",
    ]);
    if !rollout.status.success() {
        // What the kubelet saw: the Pods' conditions, probes and Events, and the controllers' logs.
        let describe = support::kubectl(&["-n", NS, "describe", "pods"]);
        let logs = support::kubectl(&[
            "-n",
            NS,
            "logs",
            "-l",
            "app.kubernetes.io/name=ecs-vnc-controller",
            "--tail=30",
            "--prefix",
        ]);
        panic!(
            "the rollout did not finish: {}\n{}\n{}",
            String::from_utf8_lossy(&rollout.stderr),
            String::from_utf8_lossy(&describe.stdout),
            String::from_utf8_lossy(&logs.stdout)
        );
    }
    support::eventually(
        "two Running and Ready controller Pods",
        Duration::from_secs(120),
        || async {
            let pods = pods();
            (pods.len() == 2
                && pods
                    .values()
                    .all(|p| p["status"]["phase"] == "Running" && is_ready(p)))
            .then_some(pods)
        },
    )
    .await
}

/// A kustomize overlay of deploy/, as a platform team writes one: the image scripts/image tagged,
/// where ECS and STS are (the simulator, plain http on the host's address:
/// `--allow-insecure-http`), and the NetworkPolicy egress that endpoint and this cluster's API
/// server need (`egress`: one rule, JSON). The test node's CNI does not enforce NetworkPolicy, so
/// nothing here proves the rule right; it is what a cluster that enforces it would need.
fn write_overlay(dir: &Path, image: &str, ecs_endpoint: &str, egress: &Value) {
    let deploy = support::repo_root().join("deploy");
    // kustomize wants a relative path to a base.
    let up = "../".repeat(dir.components().count() - 1);
    let base = format!("{up}{}", deploy.to_string_lossy().trim_start_matches('/'));
    let (name, tag) = image.rsplit_once(':').expect("image name:tag");
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
images:
  - name: ecs-vnc-controller
    newName: {name}
    newTag: "{tag}"
patches:
  - target:
      kind: Deployment
      name: ecs-vnc-controller
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --ecs-endpoint={ecs_endpoint}
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --sts-endpoint={ecs_endpoint}/sts
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --allow-insecure-http
  - target:
      kind: NetworkPolicy
      name: ecs-vnc-controller
    patch: |-
      - op: add
        path: /spec/egress/-
        value: {egress}
"#
        ),
    )
    .unwrap();
}

fn node_env(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("node.env"))
        .expect("node.env: the control plane has no node")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The terminated state of the container `controller` of `pod`, as the kubelet reports it before
/// the Pod object goes: (exitCode, finishedAt).
async fn watch_termination(pods: Api<Pod>, pod: String) -> Option<(i32, String)> {
    let config = watcher::Config::default().fields(&format!("metadata.name={pod}"));
    let mut events = watcher::watcher(pods, config).boxed();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let objects = match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
            watcher::Event::Delete(p) => {
                let t = terminated(&p);
                return t;
            }
            _ => vec![],
        };
        for p in objects {
            if let Some(t) = terminated(&p) {
                return Some(t);
            }
        }
    }
    None
}

fn terminated(p: &Pod) -> Option<(i32, String)> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "controller")?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| {
            (
                t.exit_code,
                t.finished_at
                    .as_ref()
                    .map(|f| f.0.to_string())
                    .unwrap_or_default(),
            )
        })
}

/// The node is shared by this file's tests, one at a time: each installs a controller that
/// serves every namespace, and removes it when done.
static NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_deployment_runs_as_real_pods() {
    let _node = NODE.lock().await;
    support::with_node();
    let started = Instant::now();
    let dir = support::control_plane_dir().expect(
        "this test needs the node of tests/control-plane/start --with-node (unset TEST_KUBECONFIG)",
    );
    let node = node_env(&dir);
    let node_ip: IpAddr = node["NODE_IP"].parse().unwrap();
    eprintln!(">> control plane with a node: {:.0?}", started.elapsed());

    // --- the image, into the node's containerd ------------------------------------------------
    let t = Instant::now();
    let image = support::image::build();
    eprintln!(
        ">> scripts/image: {} in {:.0?}",
        image.reference,
        t.elapsed()
    );
    let load = support::repo_root().join("tests/control-plane/load-image");
    let out = Command::new(&load)
        .arg(&dir)
        .arg(&image.tarball)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "load-image failed");
    let imported = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(imported, format!("docker.io/library/{}", image.reference));

    // --- the ECS simulator, where Pods reach it (the host's address) -----------------------------
    let sim = Simulator::start(
        SocketAddr::new(node_ip, 0),
        support::sim::fleet(
            "LTAIpodtest",
            "pod-test-secret",
            [(INSTANCE.to_string(), true)],
        ),
    )
    .await
    .expect("start the ECS simulator");

    // --- kubectl apply -k ---------------------------------------------------------------------------
    // The simulator's port and the API server's endpoint (the kubernetes Service's translation)
    // are neither 443 nor 6443 here.
    let endpoints = kubectl_json(&[
        "-n",
        "default",
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=kubernetes",
    ]);
    let slice = &endpoints["items"][0];
    let egress = json!({
        "to": [
            {"ipBlock": {"cidr": format!("{node_ip}/32")}},
            {"ipBlock": {"cidr": format!("{}/32", slice["endpoints"][0]["addresses"][0].as_str().unwrap())}},
        ],
        "ports": [
            {"port": sim.addr().port(), "protocol": "TCP"},
            {"port": slice["ports"][0]["port"], "protocol": "TCP"},
        ],
    });
    let overlay = tempfile::tempdir().unwrap();
    write_overlay(overlay.path(), &image.reference, &sim.url(), &egress);
    let overlay_path = overlay.path().to_string_lossy().into_owned();
    let apply = || {
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            &overlay_path,
        ])
    };
    apply();
    let deployment = kubectl_json(&["-n", NS, "get", "deployment", "ecs-vnc-controller"]);
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], image.reference.as_str());
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    // The NetworkPolicy applied (with the overlay's rule) and selects the Deployment's Pods.
    let policy = kubectl_json(&["-n", NS, "get", "networkpolicy", "ecs-vnc-controller"]);
    let egress_rules = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress_rules.last(), Some(&egress), "{policy}");
    let selector: Vec<String> = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();

    let t = Instant::now();
    let first = wait_two_ready_pods().await;
    let selected = kubectl_json(&["-n", NS, "get", "pods", "-l", &selector.join(",")]);
    let selected: BTreeSet<&str> = selected["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        selected,
        first.keys().map(String::as_str).collect(),
        "the NetworkPolicy selects the controller's Pods"
    );
    let config_digest = image.manifest()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!(
        ">> two Pods Running and Ready {:.0?} after apply",
        t.elapsed()
    );
    for (name, pod) in &first {
        let status = &pod["status"]["containerStatuses"][0];
        assert_eq!(status["restartCount"], 0, "{name} restarted: {status}");
        assert_eq!(
            status["image"],
            format!("docker.io/library/{}", image.reference).as_str()
        );
        // The image the kubelet ran is the one scripts/image built: its manifest (repo digest) or
        // config digest.
        let image_id = status["imageID"].as_str().unwrap_or_default();
        assert!(
            image_id.ends_with(&image.digest) || image_id.ends_with(&config_digest),
            "{name} runs {image_id}, scripts/image built {} (config {config_digest})",
            image.digest
        );
        assert_eq!(pod["spec"]["nodeName"], node["NODE_NAME"].as_str());
    }

    // --- JSON logs, one leader -------------------------------------------------------------------------
    let leader = support::eventually("a leader in the Lease", Duration::from_secs(60), || async {
        lease_holder().filter(|h| first.contains_key(h))
    })
    .await;
    for name in first.keys() {
        let logs = kubectl_ok(&["-n", NS, "logs", name]);
        let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{name} logged nothing");
        for line in &lines {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: a log line that is not JSON ({e}): {line}"));
            assert!(v.is_object(), "{name}: {line}");
        }
        assert!(
            logs.contains("/readyz"),
            "{name}: no line about serving /metrics, /healthz, /readyz:\n{logs}"
        );
    }
    eprintln!(">> logs are JSON; leader {leader}");

    // --- a VncPassword, reconciled by the Pod against the simulator ----------------------------------
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "pod").await;
    put_secret(
        &client,
        &ns.name,
        "aliyun-credentials",
        &[
            ("accessKeyId", "LTAIpodtest"),
            ("accessKeySecret", "pod-test-secret"),
        ],
    )
    .await;
    put_secret(&client, &ns.name, "web-vnc", &[("password", "Pod001")]).await;
    put_vncpassword(
        &client,
        &ns.name,
        "web",
        json!({
            "regionId": "cn-hangzhou",
            "instanceId": INSTANCE,
            "passwordSecretRef": {"name": "web-vnc"},
            "credentials": {"secretRef": {"name": "aliyun-credentials"}},
        }),
    )
    .await;
    let t = Instant::now();
    wait_ready(&client, &ns.name, "web", Duration::from_secs(90)).await;
    assert_eq!(
        sim.state()
            .instance(INSTANCE)
            .and_then(|i| i.set_password)
            .as_deref(),
        Some("Pod001")
    );
    eprintln!(">> VncPassword Ready {:.0?} after create", t.elapsed());

    // --- a VncPasswordSet, run by the Pod with the shipped RBAC; deleted with its children -------
    // Its children and their Secrets (secretDeletionPolicy Delete) go through ownerReferences, by
    // this cluster's garbage collector (kube-controller-manager).
    for id in ["i-podset00000001", "i-podset00000002"] {
        sim.state()
            .add_instance(ecs_vnc_controller::simulator::InstanceConfig {
                id: id.into(),
                region: "cn-hangzhou".into(),
                io_optimized: true,
                status: "Running".into(),
                tags: [("fleet".to_string(), "pod".to_string())].into(),
            });
    }
    let set = json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPasswordSet",
        "metadata": {"name": "fleet", "namespace": ns.name},
        "spec": {"regionId": "cn-hangzhou", "selector": {"instanceTags": {"fleet": "pod"}},
                 "template": {"passwordGeneration": {"secretDeletionPolicy": "Delete"},
                              "credentials": {"secretRef": {"name": "aliyun-credentials"}}}},
    });
    let sets: Api<ecs_vnc_controller::api::VncPasswordSet> =
        Api::namespaced(client.clone(), &ns.name);
    sets.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(set).unwrap(),
    )
    .await
    .expect("create the VncPasswordSet");
    let t = Instant::now();
    support::eventually(
        "the set Ready with 2 children",
        Duration::from_secs(90),
        || async {
            let status = sets.get("fleet").await.ok()?.status?;
            let ready = status.condition("Ready")?;
            (ready.status == "True" && status.selected == 2 && status.ready == 2).then_some(())
        },
    )
    .await;
    eprintln!(">> VncPasswordSet Ready {:.0?} after create", t.elapsed());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    assert!(
        secrets
            .get_opt("fleet-i-podset00000001")
            .await
            .unwrap()
            .is_some(),
        "a child's generated Secret"
    );
    sets.delete("fleet", &Default::default())
        .await
        .expect("delete the set");
    let children: Api<ecs_vnc_controller::api::VncPassword> =
        Api::namespaced(client.clone(), &ns.name);
    support::eventually(
        "the set's children and their Secrets garbage-collected",
        Duration::from_secs(60),
        || async {
            let kids = children
                .list(&kube::api::ListParams::default().labels("ecsvnc.io/set=fleet"))
                .await
                .ok()?;
            let secret = secrets.get_opt("fleet-i-podset00000001").await.ok()?;
            (kids.items.is_empty() && secret.is_none()).then_some(())
        },
    )
    .await;
    eprintln!(">> VncPasswordSet deleted: children and Secrets gone");

    // --- delete the leader Pod: a clean exit within the grace period, the standby takes over -----
    let standby = first.keys().find(|n| **n != leader).unwrap().clone();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let termination = tokio::spawn(watch_termination(pods_api.clone(), leader.clone()));
    // The watch is established before the delete: its initial list carries the running Pod.
    support::eventually(
        "the watch on the leader Pod",
        Duration::from_secs(10),
        || async { pods_api.get_opt(&leader).await.ok().flatten().map(|_| ()) },
    )
    .await;
    let t = Instant::now();
    kubectl_ok(&["-n", NS, "delete", "pod", &leader, "--wait=false"]);
    let (exit_code, finished_at) =
        tokio::time::timeout(Duration::from_secs(grace + 30), termination)
            .await
            .expect("the deleted leader Pod's container did not terminate")
            .unwrap()
            .expect("the watch ended before the container terminated");
    let stopped_in = t.elapsed();
    eprintln!(
        ">> deleted leader {leader}: exit code {exit_code} at {finished_at}, {stopped_in:.1?} after the delete (grace {grace} s)"
    );
    assert_eq!(
        exit_code, 0,
        "the controller did not exit cleanly on SIGTERM"
    );
    assert!(
        stopped_in < Duration::from_secs(grace),
        "the controller took {stopped_in:?}, the grace period is {grace} s"
    );
    // The Lease goes to another replica: the standby at its next try (every 2 s), or the
    // ReplicaSet's replacement Pod if that one asks first; never back to the deleted Pod.
    let t = Instant::now();
    let new_leader = support::eventually(
        "another replica to take the Lease",
        Duration::from_secs(30),
        || async { lease_holder().filter(|h| *h != leader) },
    )
    .await;
    let which = if new_leader == standby {
        "the standby"
    } else {
        "the replacement Pod"
    };
    eprintln!(
        ">> {new_leader} ({which}) leads {:.1?} after the delete",
        t.elapsed()
    );
    let second = wait_two_ready_pods().await;
    assert!(second.contains_key(&standby));
    // The new leader does the job: a changed password reaches ECS.
    put_secret(&client, &ns.name, "web-vnc", &[("password", "Pod002")]).await;
    support::eventually(
        "the new leader to apply Pod002",
        Duration::from_secs(90),
        || async {
            (sim.state()
                .instance(INSTANCE)
                .and_then(|i| i.set_password)
                .as_deref()
                == Some("Pod002"))
            .then_some(())
        },
    )
    .await;
    wait_ready(&client, &ns.name, "web", Duration::from_secs(60)).await;

    // --- readiness: a replica that cannot reach the Lease is not Ready (and not restarted) ------
    // /readyz turns ok once the Lease answered (src/controller/mod.rs, LeaderObserver::reached_api);
    // without the Role's lease rules every Lease request is Forbidden, so it never does.
    let role = kubectl_json(&["-n", NS, "get", "role", "ecs-vnc-controller"]);
    let lease_rules: Vec<usize> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "leases")
        })
        .map(|(i, _)| i)
        .collect();
    assert!(!lease_rules.is_empty(), "the Role grants leases: {role}");
    let patch: Vec<Value> = lease_rules
        .iter()
        .rev()
        .map(|i| json!({"op": "remove", "path": format!("/rules/{i}")}))
        .collect();
    kubectl_ok(&[
        "-n",
        NS,
        "patch",
        "role",
        "ecs-vnc-controller",
        "--type=json",
        "-p",
        &serde_json::to_string(&patch).unwrap(),
    ]);
    let victim = second.keys().find(|n| **n != new_leader).unwrap().clone();
    kubectl_ok(&["-n", NS, "delete", "pod", &victim, "--wait=false"]);
    let before: BTreeSet<String> = second.keys().cloned().collect();
    let fresh = support::eventually(
        "a replacement Pod running",
        Duration::from_secs(120),
        || async {
            pods().into_iter().find(|(n, p)| {
                !before.contains(n)
                    && !p["status"]["containerStatuses"][0]["state"]["running"].is_null()
            })
        },
    )
    .await
    .0;
    let unhealthy = support::eventually(
        "the replacement Pod's readiness probe to fail",
        Duration::from_secs(60),
        || async {
            let events = kubectl_json(&[
                "-n",
                NS,
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={fresh},reason=Unhealthy"),
            ]);
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["message"].as_str().unwrap_or("").to_string())
                // The probe reached /readyz and got 503 (earlier failures may be "connection
                // refused", before the controller listens).
                .find(|m| m.contains("Readiness probe failed") && m.contains("statuscode: 503"))
        },
    )
    .await;
    eprintln!(">> {fresh}: {unhealthy}");
    let now = pods();
    let pod = &now[&fresh];
    assert!(
        !is_ready(pod),
        "{fresh} is Ready without reaching the Lease"
    );
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "liveness kept passing"
    );
    // /readyz and /healthz as the kubelet sees them, through the API server's Pod proxy.
    let readyz = support::kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{NS}/pods/{fresh}:8081/proxy/readyz"),
    ]);
    assert!(
        !readyz.status.success(),
        "/readyz answered ok without the Lease"
    );
    let healthz = kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{NS}/pods/{fresh}:8081/proxy/healthz"),
    ]);
    assert_eq!(healthz.trim(), "ok");

    // The shipped RBAC back: every replica Ready again.
    apply();
    let t = Instant::now();
    let third = wait_two_ready_pods().await;
    assert!(third.contains_key(&fresh), "{fresh} became Ready in place");
    eprintln!(
        ">> Ready again {:.1?} after the Role was restored",
        t.elapsed()
    );

    ns.delete().await;
    // The controller goes (the CRD, RBAC and policies stay): the node's next test installs its own.
    kubectl_ok(&[
        "-n",
        NS,
        "delete",
        "deployment",
        "ecs-vnc-controller",
        "--wait=true",
    ]);
    support::eventually(
        "the kustomize-installed Pods gone",
        Duration::from_secs(90),
        || async { pods().is_empty().then_some(()) },
    )
    .await;
    eprintln!(">> the whole walk took {:.0?}", started.elapsed());
}

// --- the Helm chart on the node -----------------------------------------------------------------

/// `kubectl -n NS get pods -l SELECTOR`, those not being deleted.
fn pods_in(namespace: &str) -> BTreeMap<String, Value> {
    kubectl_json(&["-n", namespace, "get", "pods", "-l", SELECTOR])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p.clone(),
            )
        })
        .collect()
}

fn holder_in(namespace: &str) -> Option<String> {
    let out = support::kubectl(&[
        "-n",
        namespace,
        "get",
        "lease",
        "ecs-vnc-controller",
        "-o",
        "json",
    ]);
    if !out.status.success() {
        return None;
    }
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

async fn wait_ready_pods(
    namespace: &str,
    deployment: &str,
    count: usize,
) -> BTreeMap<String, Value> {
    kubectl_ok(&[
        "-n",
        namespace,
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=180s",
    ]);
    support::eventually(
        &format!("{count} Running and Ready controller Pods in {namespace}"),
        Duration::from_secs(120),
        || async {
            let pods = pods_in(namespace);
            (pods.len() == count
                && pods
                    .values()
                    .all(|p| p["status"]["phase"] == "Running" && is_ready(p)))
            .then_some(pods)
        },
    )
    .await
}

/// A value of the controller's /metrics in `pod`, through the API server's Pod proxy.
fn pod_metric(namespace: &str, pod: &str, line_prefix: &str) -> Option<f64> {
    let out = support::kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{namespace}/pods/{pod}:8080/proxy/metrics"),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `kubectl logs -f` of a Pod's controller, to the container's end, on a thread of its own; returns
/// once the first lines have arrived (the stream is attached).
fn follow_logs(namespace: &str, pod: &str) -> std::thread::JoinHandle<String> {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(support::kubeconfig())
        .args(["-n", namespace, "logs", "-f", pod, "-c", "controller"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let (attached_tx, attached) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut out = String::new();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            out.push_str(&line);
            out.push('\n');
            let _ = attached_tx.send(());
        }
        let _ = child.wait();
        out
    });
    attached
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("kubectl logs -f {pod}: no line in 30 s"));
    handle
}

/// The Events on the Lease (LeaderElected, LeaderLost), as "reason: note".
fn lease_events(namespace: &str) -> Vec<String> {
    kubectl_json(&[
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Lease",
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_helm_chart_installs_upgrades_and_uninstalls_on_a_node() {
    let _node = NODE.lock().await;
    support::with_node();
    let started = Instant::now();
    let dir = support::control_plane_dir().expect(
        "this test needs the node of tests/control-plane/start --with-node (unset TEST_KUBECONFIG)",
    );
    let node = node_env(&dir);
    let node_ip: IpAddr = node["NODE_IP"].parse().unwrap();
    let image = support::image::build();
    let load = support::repo_root().join("tests/control-plane/load-image");
    let out = Command::new(&load)
        .arg(&dir)
        .arg(&image.tarball)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "load-image failed");
    let sim = Simulator::start(
        SocketAddr::new(node_ip, 0),
        support::sim::fleet(
            "LTAIhelmtest",
            "helm-test-secret",
            ["i-helmtest0001", "i-helmtest0002"].map(|i| (i.to_string(), true)),
        ),
    )
    .await
    .expect("start the ECS simulator");
    eprintln!(
        ">> node, image and simulator ready: {:.0?}",
        started.elapsed()
    );

    // --- helm package, and values as a platform team writes them -----------------------------------
    let work = tempfile::tempdir().unwrap();
    let archive = support::helm::package(work.path());
    let archive = archive.to_str().unwrap();
    let endpoints = kubectl_json(&[
        "-n",
        "default",
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=kubernetes",
    ]);
    let slice = &endpoints["items"][0];
    let (repository, tag) = image.reference.rsplit_once(':').expect("image name:tag");
    let values = json!({
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "ecs": {"endpoint": sim.url()},
        "sts": {"endpoint": format!("{}/sts", sim.url())},
        "allowInsecureHttp": true,
        // The simulator and this API server's port, where a CNI that enforces the policy needs them.
        "networkPolicy": {"extraEgress": [{
            "to": [
                {"ipBlock": {"cidr": format!("{node_ip}/32")}},
                {"ipBlock": {"cidr": format!("{}/32", slice["endpoints"][0]["addresses"][0].as_str().unwrap())}},
            ],
            "ports": [
                {"port": sim.addr().port(), "protocol": "TCP"},
                {"port": slice["ports"][0]["port"], "protocol": "TCP"},
            ],
        }]},
    });
    let values_file = work.path().join("values.yaml");
    std::fs::write(&values_file, serde_yaml::to_string(&values).unwrap()).unwrap();
    let values_file = values_file.to_str().unwrap();

    // --- helm install of the archive ---------------------------------------------------------------
    const REL_NS: &str = "vnc-helm";
    let deployment = "vnc-ecs-vnc-controller";
    let t = Instant::now();
    support::helm::ok(
        &[
            "install",
            "vnc",
            archive,
            "--namespace",
            REL_NS,
            "--create-namespace",
            "--values",
            values_file,
            "--wait",
            "--timeout",
            "180s",
        ],
        true,
    );
    let first = wait_ready_pods(REL_NS, deployment, 2).await;
    eprintln!(
        ">> helm install: two Pods Ready {:.1?} after it started",
        t.elapsed()
    );
    let leader = support::eventually("a leader", Duration::from_secs(60), || async {
        holder_in(REL_NS).filter(|h| first.contains_key(h))
    })
    .await;
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "helm").await;
    put_secret(
        &client,
        &ns.name,
        "aliyun-credentials",
        &[
            ("accessKeyId", "LTAIhelmtest"),
            ("accessKeySecret", "helm-test-secret"),
        ],
    )
    .await;
    put_secret(&client, &ns.name, "web-vnc", &[("password", "Helm01")]).await;
    put_vncpassword(
        &client,
        &ns.name,
        "web",
        json!({
            "regionId": "cn-hangzhou",
            "instanceId": "i-helmtest0001",
            "passwordSecretRef": {"name": "web-vnc"},
            "credentials": {"secretRef": {"name": "aliyun-credentials"}},
        }),
    )
    .await;
    wait_ready(&client, &ns.name, "web", Duration::from_secs(90)).await;
    assert_eq!(
        sim.state()
            .instance("i-helmtest0001")
            .and_then(|i| i.set_password)
            .as_deref(),
        Some("Helm01")
    );
    let writes = sim.state().calls("ModifyInstanceVncPasswd");
    assert_eq!(writes, 1);
    eprintln!(">> {leader} leads; the VncPassword is Ready");

    // --- helm upgrade with a changed value: a rolling update, the Lease handed over cleanly ---------
    // The old replicas' logs to their end, and their containers' exit codes.
    let followed: Vec<(String, std::thread::JoinHandle<String>)> = first
        .keys()
        .map(|pod| (pod.clone(), follow_logs(REL_NS, pod)))
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), REL_NS);
    let terminations: Vec<_> = first
        .keys()
        .map(|pod| {
            (
                pod.clone(),
                tokio::spawn(watch_termination(pods_api.clone(), pod.clone())),
            )
        })
        .collect();
    let t = Instant::now();
    support::helm::ok(
        &[
            "upgrade",
            "vnc",
            archive,
            "--namespace",
            REL_NS,
            "--values",
            values_file,
            "--set",
            "podAnnotations.example\\.com/upgraded=yes",
            "--wait",
            "--timeout",
            "180s",
        ],
        true,
    );
    let second = wait_ready_pods(REL_NS, deployment, 2).await;
    eprintln!(">> helm upgrade: rolled out in {:.1?}", t.elapsed());
    for (name, pod) in &second {
        assert!(
            !first.contains_key(name),
            "{name} survived the rolling update"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["example.com/upgraded"],
            "yes"
        );
    }
    let new_leader = support::eventually("a new leader", Duration::from_secs(60), || async {
        holder_in(REL_NS).filter(|h| second.contains_key(h))
    })
    .await;
    // Every old replica that led released the Lease as it stopped (no takeover by expiry), and
    // exited cleanly.
    for (pod, log) in followed {
        let log = log.join().expect("kubectl logs -f");
        if log.contains("became the leader") {
            assert!(
                log.lines().any(|l| l.contains("stopped leading")
                    && l.contains("shutting down; released the Lease")),
                "{pod} led but did not release the Lease on its way out:\n{log}"
            );
            eprintln!(">> {pod} led and released the Lease on SIGTERM");
        }
    }
    for (pod, termination) in terminations {
        let (code, _) = tokio::time::timeout(Duration::from_secs(120), termination)
            .await
            .unwrap_or_else(|_| panic!("{pod}: its container did not terminate"))
            .unwrap()
            .unwrap_or_else(|| panic!("{pod}: the watch ended before its container terminated"));
        assert_eq!(code, 0, "{pod} did not exit cleanly");
    }
    let events = lease_events(REL_NS);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("LeaderElected") && e.contains(&new_leader)),
        "{events:?}"
    );
    // The new leader has looked at the object (an unchanged reconcile) and wrote nothing to ECS.
    support::eventually(
        "the new leader to reconcile the object",
        Duration::from_secs(60),
        || async {
            pod_metric(
                REL_NS,
                &new_leader,
                "ecs_vnc_reconciles_total{result=\"unchanged\"}",
            )
            .filter(|n| *n >= 1.0)
        },
    )
    .await;
    assert_eq!(
        sim.state().calls("ModifyInstanceVncPasswd"),
        writes,
        "the upgrade wrote the password to ECS again"
    );
    wait_ready(&client, &ns.name, "web", Duration::from_secs(10)).await;
    eprintln!(">> {new_leader} leads after the upgrade; no second ECS write");

    // --- helm uninstall: the controller goes, the CRD and the VncPassword stay ---------------------
    let t = Instant::now();
    support::helm::ok(
        &[
            "uninstall",
            "vnc",
            "--namespace",
            REL_NS,
            "--wait",
            "--timeout",
            "120s",
        ],
        true,
    );
    support::eventually(
        "the controller's Pods gone",
        Duration::from_secs(90),
        || async { pods_in(REL_NS).is_empty().then_some(()) },
    )
    .await;
    eprintln!(
        ">> helm uninstall: Pods gone {:.1?} after it started",
        t.elapsed()
    );
    for (kind, name, namespaced) in [
        ("deployment", deployment, true),
        ("serviceaccount", deployment, true),
        ("clusterrole", deployment, false),
        (
            "validatingadmissionpolicy",
            "vnc-ecs-vnc-controller-secrets",
            false,
        ),
    ] {
        let mut args = vec!["get", kind, name];
        if namespaced {
            args.extend(["-n", REL_NS]);
        }
        assert!(
            !support::kubectl(&args).status.success(),
            "{kind} {name} outlived helm uninstall"
        );
    }
    kubectl_ok(&["get", "crd", "vncpasswords.ecsvnc.io"]);
    let kept = kubectl_json(&["-n", &ns.name, "get", "vncpassword", "web"]);
    assert!(
        kept["status"]["conditions"].is_array(),
        "the VncPassword and its status are kept"
    );

    // --- namespaced mode, installed the same way ---------------------------------------------------
    const NS_REL_NS: &str = "vnc-helm-ns";
    let team = support::TestNamespace::new(&client, "helm-team").await;
    let t = Instant::now();
    support::helm::ok(
        &[
            "install",
            "vnc-ns",
            archive,
            "--namespace",
            NS_REL_NS,
            "--create-namespace",
            "--values",
            values_file,
            "--set",
            &format!("watchNamespaces={{{}}}", team.name),
            "--set",
            "replicas=1",
            "--wait",
            "--timeout",
            "180s",
        ],
        true,
    );
    let only = wait_ready_pods(NS_REL_NS, "vnc-ns-ecs-vnc-controller", 1).await;
    let pod = only.values().next().unwrap();
    let args = pod["spec"]["containers"][0]["args"].as_array().unwrap();
    assert!(
        args.contains(&json!(format!("--watch-namespaces={}", team.name))),
        "{args:?}"
    );
    assert!(
        !args.contains(&json!("--leader-elect")),
        "one replica: no leader election"
    );
    put_secret(
        &client,
        &team.name,
        "aliyun-credentials",
        &[
            ("accessKeyId", "LTAIhelmtest"),
            ("accessKeySecret", "helm-test-secret"),
        ],
    )
    .await;
    put_secret(&client, &team.name, "web-vnc", &[("password", "Team01")]).await;
    put_vncpassword(
        &client,
        &team.name,
        "web",
        json!({
            "regionId": "cn-hangzhou",
            "instanceId": "i-helmtest0002",
            "passwordSecretRef": {"name": "web-vnc"},
            "credentials": {"secretRef": {"name": "aliyun-credentials"}},
        }),
    )
    .await;
    wait_ready(&client, &team.name, "web", Duration::from_secs(90)).await;
    assert_eq!(
        sim.state()
            .instance("i-helmtest0002")
            .and_then(|i| i.set_password)
            .as_deref(),
        Some("Team01")
    );
    eprintln!(
        ">> namespaced install: Ready and reconciling {:.1?} after helm install",
        t.elapsed()
    );
    let sa = format!("system:serviceaccount:{NS_REL_NS}:vnc-ns-ecs-vnc-controller");
    let can_i = |verb: &str, resource: &str, namespace: Option<&str>| {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &sa];
        match namespace {
            Some(n) => args.extend(["-n", n]),
            None => args.push("--all-namespaces"),
        }
        String::from_utf8_lossy(&support::kubectl(&args).stdout).trim() == "yes"
    };
    for verb in ["get", "list", "watch"] {
        assert!(
            can_i(verb, "secrets", Some(&team.name)),
            "{verb} secrets in the watched namespace"
        );
        assert!(
            !can_i(verb, "secrets", Some(&ns.name)),
            "{verb} secrets in another namespace"
        );
        assert!(
            !can_i(verb, "secrets", Some("kube-system")),
            "{verb} secrets in kube-system"
        );
        assert!(
            !can_i(verb, "secrets", None),
            "{verb} secrets in all namespaces"
        );
    }
    assert!(can_i("list", "vncpasswords.ecsvnc.io", Some(&team.name)));
    assert!(!can_i("list", "vncpasswords.ecsvnc.io", None));
    // The cluster-wide object it cannot see stays as the first install left it.
    assert_eq!(sim.state().calls("ModifyInstanceVncPasswd"), writes + 1);
    support::helm::ok(
        &[
            "uninstall",
            "vnc-ns",
            "--namespace",
            NS_REL_NS,
            "--wait",
            "--timeout",
            "120s",
        ],
        true,
    );
    support::eventually(
        "the namespaced controller gone",
        Duration::from_secs(90),
        || async { pods_in(NS_REL_NS).is_empty().then_some(()) },
    )
    .await;
    team.delete().await;
    ns.delete().await;
    eprintln!(">> the Helm walk took {:.0?}", started.elapsed());
}
