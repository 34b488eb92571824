//! The Helm chart (`charts/ecs-vnc-controller`) with the real Helm (v4.3.2, built from its Go
//! module by tests/helm/build) and the real API server: `helm lint --strict` on the defaults and on
//! every `ci/*-values.yaml` (one per feature), each render applied with a server-side dry run
//! (the Prometheus Operator's CRDs installed from their pinned Go module, tests/prometheus-operator/),
//! the schema refusing wrong values with a message that names them, every flag the chart renders
//! accepted by the controller's own parser, deploy/ equal to the chart's render
//! (scripts/render-deploy), the chart README's table of values equal to values.yaml's comments, and
//! the packaged archive.
//!
//! The real install (`helm install` of the archive on a node, upgrade, uninstall) is in
//! tests/pod.rs; namespaced mode's RBAC in tests/namespaced.rs.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use ecs_vnc_controller::controller::RunArgs;
use support::helm;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The namespaces a render needs before a server-side dry run: its own, the watched ones and the
/// dashboard's.
fn namespaces_of(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str().map(str::to_string))
        .collect()
}

fn ensure_namespace(ns: &str) {
    let out = support::kubectl(&["create", "namespace", ns]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || text.contains("AlreadyExists"),
        "create namespace {ns}: {text}"
    );
}

/// The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from their pinned Go module,
/// installed once into this binary's API server.
fn install_prometheus_operator_crds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = support::repo_root().join("tests/prometheus-operator/crds");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .expect("run tests/prometheus-operator/crds");
        assert!(
            out.status.success(),
            "tests/prometheus-operator/crds: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        for kind in ["servicemonitors", "prometheusrules"] {
            let file = dir.join(format!("monitoring.coreos.com_{kind}.yaml"));
            support::kubectl_ok(&[
                "apply",
                "--server-side",
                "-f",
                file.to_str().expect("UTF-8 path"),
            ]);
            support::kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{kind}.monitoring.coreos.com"),
            ]);
        }
    });
}

/// Whether `cidr` (IPv4) holds `ip`.
fn holds(cidr: &str, ip: std::net::Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

/// Egress rules of a NetworkPolicy that let the Pods reach the ECS metadata service.
fn metadata_reachable(policy: &Value) -> bool {
    let metadata = std::net::Ipv4Addr::new(100, 100, 100, 200);
    policy["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .any(|rule| {
            rule["to"].as_array().is_none_or(|peers| {
                peers.iter().any(|peer| {
                    peer["ipBlock"]["cidr"].as_str().is_some_and(|cidr| {
                        holds(cidr, metadata)
                            && !peer["ipBlock"]["except"]
                                .as_array()
                                .is_some_and(|e| e.iter().any(|c| c == "100.100.100.200/32"))
                    })
                })
            })
        })
}

#[test]
fn helm_lint_strict_passes_on_the_defaults_and_every_feature() {
    let chart = helm::chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let mut files: Vec<(String, Option<PathBuf>)> = vec![("defaults".into(), None)];
    files.extend(
        helm::all_ci_values()
            .into_iter()
            .map(|(name, path)| (name, Some(path))),
    );
    let names: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for feature in [
        "defaults",
        "deploy",
        "namespaced",
        "monitoring",
        "digest",
        "no-networkpolicy",
        "settings",
    ] {
        assert!(names.contains(feature), "a values file for {feature}");
    }
    for (name, values) in &files {
        let mut args = vec!["lint", "--strict", chart, "--namespace", "ecs-vnc-system"];
        if let Some(values) = values {
            args.extend(["--values", values.to_str().expect("UTF-8 path")]);
        }
        let out = helm::run(&args, false);
        let text = helm::text(&out);
        assert!(
            out.status.success() && text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint --strict with {name}:\n{text}"
        );
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint --strict with {name}:\n{text}"
        );
    }
}

#[test]
fn every_feature_renders_and_passes_a_server_side_dry_run() {
    install_prometheus_operator_crds();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files: Vec<(String, Option<PathBuf>)> = vec![("defaults".into(), None)];
    files.extend(
        helm::all_ci_values()
            .into_iter()
            .map(|(name, path)| (name, Some(path))),
    );
    for (name, values) in &files {
        let namespace = format!("chart-{name}");
        let mut extra: Vec<&str> = Vec::new();
        if let Some(values) = values {
            extra.extend(["--values", values.to_str().expect("UTF-8 path")]);
        }
        let (yaml, docs) = helm::template(&namespace, &extra);
        // What the render promises, whatever the values.
        let deployment = helm::find(&docs, "Deployment", None);
        let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
        let args = helm::controller_args(&docs);
        assert_eq!(
            args.iter().any(|a| a == "--leader-elect"),
            replicas > 1,
            "{name}: leader election on exactly when replicas > 1 (as no values file forces it)"
        );
        assert_eq!(
            docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
            replicas > 1,
            "{name}: a PDB only with more than one replica"
        );
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env");
        let instance_role = env
            .iter()
            .find(|e| e["name"] == "ALIBABA_CLOUD_ECS_METADATA_DISABLED")
            .expect("ALIBABA_CLOUD_ECS_METADATA_DISABLED")["value"]
            == "false";
        match docs.iter().find(|d| d["kind"] == "NetworkPolicy") {
            Some(policy) => assert_eq!(
                metadata_reachable(policy),
                instance_role,
                "{name}: the metadata address is reachable exactly when the instance role is opted in"
            ),
            None => assert_eq!(name, "no-networkpolicy", "a NetworkPolicy by default"),
        }
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let ns = doc["metadata"]["namespace"].as_str();
            let cluster_scoped = [
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "Namespace",
            ]
            .contains(&kind);
            assert_eq!(
                ns.is_none(),
                cluster_scoped,
                "{name}: {kind} {}",
                doc["metadata"]
            );
        }
        // The admission policies follow the release's namespace and ServiceAccount.
        let sa = helm::find(&docs, "ServiceAccount", None)["metadata"]["name"]
            .as_str()
            .expect("ServiceAccount name")
            .to_string();
        for policy in docs
            .iter()
            .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        {
            let condition = policy["spec"]["matchConditions"][0]["expression"]
                .as_str()
                .expect("matchConditions");
            assert_eq!(
                condition,
                format!("request.userInfo.username == 'system:serviceaccount:{namespace}:{sa}'"),
                "{name}"
            );
            assert!(
                !serde_json::to_string(policy)
                    .unwrap()
                    .contains("ecs-vnc-system"),
                "{name}: the policy names ecs-vnc-system: {policy}"
            );
        }

        // The API server's verdict (a dry run: nothing persists).
        for ns in namespaces_of(&docs) {
            ensure_namespace(&ns);
        }
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &yaml).expect("write render");
        let out = support::kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            file.to_str().expect("UTF-8 path"),
        ]);
        assert!(
            out.status.success(),
            "{name}: the API server refused the render:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let applied = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            applied.lines().count(),
            docs.len(),
            "{name}: every object applied:\n{applied}"
        );
    }
}

/// A wrong value is refused by `helm template` (as by `helm install`) with a message naming it.
#[test]
fn the_schema_refuses_wrong_values_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "replicas=0"],
            "at '/replicas': minimum: got 0, want 1",
        ),
        (
            &["--set", "watchNamespaces={Team-A}"],
            "at '/watchNamespaces/0': 'Team-A' does not match pattern",
        ),
        (
            &["--set", "ecs.signature=v2"],
            "at '/ecs/signature': value must be one of '', 'v1', 'v3'",
        ),
        (
            &["--set", "image.digest=sha256:abc"],
            "at '/image/digest': 'sha256:abc' does not match pattern",
        ),
        (
            &["--set", "log.format=yaml"],
            "at '/log/format': value must be one of 'json', 'text'",
        ),
        (&["--set", "ecs.qps=-1"], "exclusiveMinimum: got -1, want 0"),
        (
            &["--set", "ecs.qps.Describe-Instances=3"],
            "'Describe-Instances' does not match pattern",
        ),
        (
            &["--set", "replicaCount=2"],
            "additional properties 'replicaCount' not allowed",
        ),
        (
            &["--set", "leaderElection.leaseDurationSeconds=2.5"],
            "at '/leaderElection/leaseDurationSeconds'",
        ),
        (
            &["--set", "networkPolicy.apiServerCIDRs={10.0.0.1}"],
            "at '/networkPolicy/apiServerCIDRs/0': '10.0.0.1' does not match pattern",
        ),
        (
            &[
                "--set",
                "sts.oidcProviderArn=arn:aws:iam::1:oidc-provider/x",
            ],
            "at '/sts/oidcProviderArn'",
        ),
        (
            &["--set", "extraArgs={concurrency=4}"],
            "at '/extraArgs/0': 'concurrency=4' does not match pattern '^--'",
        ),
        // What the schema cannot say, the templates refuse.
        (
            &[
                "--set",
                "replicas=2",
                "--set",
                "leaderElection.enabled=false",
            ],
            "replicas: 2 needs leader election",
        ),
        (
            &[
                "--set",
                "serviceMonitor.enabled=true",
                "--set",
                "metrics.service.enabled=false",
            ],
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ];
    let chart = helm::chart_dir();
    for (args, message) in cases {
        let mut all = vec!["template", "x", chart.to_str().expect("UTF-8 path")];
        all.extend(*args);
        let out = helm::run(&all, false);
        let text = helm::text(&out);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            text.contains(message),
            "{args:?}: the refusal does not say {message:?}:\n{text}"
        );
    }
}

/// Every flag the chart renders is one the controller accepts (its own clap parser), for the
/// defaults and every values file; the values that name a flag reach it.
#[test]
fn every_rendered_flag_is_accepted_by_the_controller() {
    let mut files: Vec<(String, Vec<String>)> = vec![("defaults".into(), Vec::new())];
    for (name, path) in helm::all_ci_values() {
        files.push((name, vec!["--values".into(), path.display().to_string()]));
    }
    for (name, extra) in &files {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (_, docs) = helm::template("ecs-vnc-system", &extra);
        let args = helm::controller_args(&docs);
        assert_eq!(args[0], "run", "{name}");
        let parsed = RunArgs::from_flags(&args[1..])
            .unwrap_or_else(|e| panic!("{name}: the controller refuses {args:?}: {e}"));
        if name == "settings" {
            let names: Vec<&str> = parsed.watch_namespaces.names().collect();
            assert!(names.is_empty());
            assert_eq!(
                parsed.ecs.ecs_endpoint.as_deref(),
                Some("https://ecs-vpc.{region}.aliyuncs.com")
            );
            assert_eq!(parsed.reboot_timeout.0, Duration::from_secs(1200));
            assert_eq!(
                parsed.leader_elect_lease_duration.0,
                Duration::from_secs(20)
            );
            assert_eq!(
                parsed.leader_elect_retry_period.0,
                Duration::from_millis(2500)
            );
            assert_eq!(parsed.metrics_addr.port(), 9090);
            assert_eq!(parsed.concurrency, 64);
            assert!(parsed.leader_elect);
            assert_eq!(parsed.shards, 3);
            // The Role may read and write exactly the three shard Leases.
            let names: Vec<String> = docs
                .iter()
                .filter(|d| d["kind"] == "Role")
                .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
                .filter(|r| r["resources"][0] == "leases" && r["verbs"][0] == "get")
                .flat_map(|r| r["resourceNames"].as_array().cloned().unwrap_or_default())
                .map(|n| n.as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(
                names,
                [
                    "ecs-vnc-controller-shard-0",
                    "ecs-vnc-controller-shard-1",
                    "ecs-vnc-controller-shard-2"
                ]
            );
            assert_eq!(
                parsed.oidc_provider_arn.as_deref(),
                Some("acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0123456789")
            );
            let qps = args.iter().find(|a| a.starts_with("--ecs-qps=")).unwrap();
            assert_eq!(
                qps,
                "--ecs-qps=5,DescribeInstances=50,ModifyInstanceVncPasswd=20"
            );
        }
        if name == "namespaced" {
            let names: Vec<&str> = parsed.watch_namespaces.names().collect();
            assert_eq!(names, ["team-a", "team-b"]);
            assert!(!parsed.leader_elect, "one replica: no leader election");
        }
    }
    // The flags are rendered in one place only.
    let templates = helm::chart_dir().join("templates");
    for entry in std::fs::read_dir(&templates).expect("templates") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "_controller.tpl") {
            continue;
        }
        let text = read(&path);
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("- \"--") || l.contains("printf \"--")),
            "{} renders a controller flag outside _controller.tpl",
            path.display()
        );
    }
}

/// deploy/ is exactly what scripts/render-deploy makes of the chart, and the chart's CRD is the
/// generated one.
#[test]
fn deploy_is_rendered_from_the_chart() {
    let root = support::repo_root();
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(root.join("scripts/render-deploy"))
        .args(["--out", out.path().to_str().expect("UTF-8 path")])
        .env("HELM", helm::binary())
        .stdin(Stdio::null())
        .status()
        .expect("run scripts/render-deploy");
    assert!(status.success(), "scripts/render-deploy failed");
    let listing = |dir: &Path| -> BTreeSet<PathBuf> {
        let mut files = BTreeSet::new();
        for sub in ["", "monitoring"] {
            for e in std::fs::read_dir(dir.join(sub)).expect("dir").flatten() {
                let p = e.path();
                if p.is_file() && p.file_name().is_some_and(|n| n != "kustomization.yaml") {
                    files.insert(Path::new(sub).join(e.file_name()));
                }
            }
        }
        files
    };
    let deploy = root.join("deploy");
    assert_eq!(
        listing(&deploy),
        listing(out.path()),
        "the files of deploy/ (argocd/ and kustomization.yaml aside) are the rendered ones"
    );
    for file in listing(out.path()) {
        assert!(
            read(&deploy.join(&file)) == read(&out.path().join(&file)),
            "deploy/{} differs from the chart's render: run scripts/render-deploy",
            file.display()
        );
    }
    for crd in ["vncpassword.yaml", "vncpasswordset.yaml"] {
        assert!(
            read(&root.join("crds").join(crd)) == read(&helm::chart_dir().join("crds").join(crd)),
            "charts/ecs-vnc-controller/crds/{crd} differs from crds/: run scripts/render-deploy"
        );
    }
    // kustomize still builds the base, as docs/installation.md says (`kubectl apply -k deploy/`).
    let built = Command::new("kubectl")
        .args(["kustomize", deploy.to_str().expect("UTF-8 path")])
        .output()
        .expect("kubectl kustomize");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let kinds: BTreeSet<String> = helm::parse(&String::from_utf8_lossy(&built.stdout))
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ValidatingAdmissionPolicy",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(
            kinds.contains(kind),
            "kubectl kustomize deploy/ has no {kind}"
        );
    }
}

/// The PrometheusRule and the dashboard ConfigMap carry the chart's files unchanged, and
/// Chart.yaml's appVersion is the controller's version (the image's default tag).
#[test]
fn the_monitoring_objects_carry_the_chart_files() {
    let (_, docs) = helm::template(
        "ecs-vnc-system",
        &["--values", helm::ci_values("monitoring").to_str().unwrap()],
    );
    let rule = helm::find(&docs, "PrometheusRule", None);
    let alerts: Value =
        serde_yaml::from_str(&read(&helm::chart_dir().join("files/alerts.yaml"))).expect("YAML");
    assert_eq!(rule["spec"], alerts);
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let dashboard = helm::find(&docs, "ConfigMap", None);
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard["data"]["ecs-vnc-controller.json"]
            .as_str()
            .unwrap(),
    )
    .expect("the ConfigMap's dashboard is JSON");
    let file: Value = serde_json::from_str(&read(&helm::chart_dir().join("files/dashboard.json")))
        .expect("dashboard.json");
    assert_eq!(json, file);
    let monitor = helm::find(&docs, "ServiceMonitor", None);
    let service = helm::find(&docs, "Service", None);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
    // Without them asked for, none of the three is rendered (no CRD needed by default).
    let (_, defaults) = helm::template("ecs-vnc-system", &[]);
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(
            !defaults.iter().any(|d| d["kind"] == kind),
            "{kind} by default"
        );
    }
    // The metrics port is admitted from the release namespace and the monitoring namespaces only.
    let policy = helm::find(&defaults, "NetworkPolicy", None);
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "from": [
                {"podSelector": {}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            ],
        }])
    );

    let chart: Value =
        serde_yaml::from_str(&read(&helm::chart_dir().join("Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let image = helm::find(&defaults, "Deployment", None)["spec"]["template"]["spec"]["containers"]
        [0]["image"]
        .clone();
    assert_eq!(
        image,
        format!("ecs-vnc-controller:{}", env!("CARGO_PKG_VERSION"))
    );
}

/// `helm package` makes an archive with the CRD, the schema, the README and the monitoring files,
/// which renders as the chart directory does.
#[test]
fn the_packaged_chart_holds_everything_and_renders_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = helm::package(dir.path());
    assert_eq!(
        archive.file_name().unwrap().to_string_lossy(),
        "ecs-vnc-controller-0.1.0.tgz"
    );
    let listing = Command::new("tar")
        .args(["-tzf", archive.to_str().unwrap()])
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for file in [
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "README.md",
        "crds/vncpassword.yaml",
        "crds/vncpasswordset.yaml",
        "files/alerts.yaml",
        "files/dashboard.json",
        "templates/_controller.tpl",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l == format!("ecs-vnc-controller/{file}")),
            "the archive has no {file}:\n{listing}"
        );
    }
    let from_archive = helm::ok(
        &[
            "template",
            helm::RELEASE,
            archive.to_str().unwrap(),
            "--namespace",
            "ecs-vnc-system",
        ],
        false,
    );
    let (from_dir, _) = helm::template("ecs-vnc-system", &[]);
    assert_eq!(from_archive, from_dir);
}

// --- the README's table of values, from values.yaml's `# --` comments ---------------------------

/// (path, description) of every documented value, in file order; panics on an undocumented one.
fn documented_values(values_yaml: &str) -> Vec<(String, String)> {
    let mut documented = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<String> = None;
    // A documented key's subtree is covered by its description.
    let mut covered: Option<(usize, String)> = None;
    let lines: Vec<&str> = values_yaml.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(text) = trimmed.strip_prefix("# --") {
            pending = Some(text.trim().to_string());
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            if let Some(p) = pending.as_mut() {
                p.push(' ');
                p.push_str(text.trim());
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        if key.contains(' ') {
            continue;
        }
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        let path = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        stack.push((indent, key.to_string()));
        if let Some((depth, _)) = &covered {
            if indent > *depth {
                pending = None;
                continue;
            }
            covered = None;
        }
        let has_children = rest.trim().is_empty()
            && lines[i + 1..]
                .iter()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .is_some_and(|next| next.len() - next.trim_start().len() > indent);
        match pending.take() {
            Some(description) => {
                documented.push((path.clone(), description));
                covered = Some((indent, path));
            }
            None if has_children => {}
            None => panic!("values.yaml: {path} has no `# --` description"),
        }
    }
    documented
}

fn value_at<'a>(values: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(values, |v, k| &v[k])
}

fn values_table() -> String {
    let text = read(&helm::chart_dir().join("values.yaml"));
    let values: Value = serde_yaml::from_str(&text).expect("values.yaml");
    let mut table = String::from("| Value | Default | Description |\n| --- | --- | --- |\n");
    for (path, description) in documented_values(&text) {
        let default = serde_json::to_string(value_at(&values, &path)).expect("JSON");
        table.push_str(&format!(
            "| `{path}` | `{}` | {} |\n",
            default.replace('|', "\\|"),
            description.replace('|', "\\|")
        ));
    }
    table
}

/// The chart README's table of values is generated from values.yaml's comments; it fails when
/// they differ (`UPDATE_GENERATED=1 cargo test --features failpoints --test chart values_table`
/// rewrites it), and every value in values.yaml is documented.
#[test]
fn the_readme_values_table_matches_values_yaml() {
    let readme_path = helm::chart_dir().join("README.md");
    let readme = read(&readme_path);
    let (begin, end) = ("<!-- values:begin -->\n", "<!-- values:end -->");
    let start = readme
        .find(begin)
        .expect("README.md: <!-- values:begin -->")
        + begin.len();
    let stop = readme.find(end).expect("README.md: <!-- values:end -->");
    let table = values_table();
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
        std::fs::write(&readme_path, updated).expect("write README.md");
        return;
    }
    assert!(
        readme[start..stop] == table,
        "charts/ecs-vnc-controller/README.md's table of values is stale: run UPDATE_GENERATED=1 cargo test --features failpoints --test chart values_table"
    );
    // And the schema knows every top-level value, and values.yaml every one the schema knows.
    let schema: Value =
        serde_json::from_str(&read(&helm::chart_dir().join("values.schema.json"))).unwrap();
    let values: Value =
        serde_yaml::from_str(&read(&helm::chart_dir().join("values.yaml"))).unwrap();
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&schema["properties"]), keys(&values));
}
