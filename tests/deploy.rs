//! `deploy/` against the real API server: it applies (server-side dry run), the shipped RBAC is
//! enough for the controller to do its whole job (the controller runs here as the deployed
//! ServiceAccount, by impersonation), and it is no more than that (SubjectAccessReview via
//! `kubectl auth can-i`).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use ecs_vnc_controller::simulator::{RoleConfig, StsConfig};
use support::controller::*;
use support::kubectl_ok;
use support::sim::Sim;

const SA: &str = "system:serviceaccount:ecs-vnc-system:ecs-vnc-controller";

fn deploy_dir() -> String {
    support::repo_root()
        .join("deploy")
        .to_string_lossy()
        .into_owned()
}

/// Installs deploy/ for real (the Deployment's pod never runs: this control plane has no nodes),
/// once per test binary: two tests installing at once race (a dry-run create of an object the
/// other's apply has just created is refused with AlreadyExists).
fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_once);
}

fn install_once() {
    // A server-side dry run of namespaced objects needs their namespace to exist already.
    kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        &format!("{}/namespace.yaml", deploy_dir()),
    ]);
    kubectl_ok(&["apply", "--dry-run=server", "-k", &deploy_dir()]);
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        &deploy_dir(),
    ]);
}

fn can_i(verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let (resource, subresource) = match (
        resource.strip_suffix("/status"),
        resource.strip_suffix("/token"),
    ) {
        (Some(r), _) => (r, Some("--subresource=status")),
        (_, Some(r)) => (r, Some("--subresource=token")),
        _ => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", SA];
    args.extend(subresource);
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    let out = support::kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

#[tokio::test]
async fn the_shipped_rbac_is_sufficient_for_the_whole_job() {
    install();
    let admin = support::client().await;
    let ns = support::TestNamespace::new(&admin, "rbac").await;
    put_secret(&admin, &ns.name, "web-vnc", &[("password", "Rbac12")]).await;
    put_secret(
        &admin,
        &ns.name,
        "creds",
        &[
            ("accessKeyId", "LTAIrbac"),
            ("accessKeySecret", "rbac-secret"),
        ],
    )
    .await;
    // The ServiceAccount a second VncPassword names (RRSA per namespace), and an STS that trusts
    // its tokens for the role its annotation names.
    let role = "acs:ram::1234567890:role/rbac-tenant";
    let provider = "acs:ram::1234567890:oidc-provider/rbac-test";
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "vnc", "annotations": {"ecsvnc.io/role-arn": role}},
            }))
            .expect("ServiceAccount"),
        )
        .await
        .expect("create the ServiceAccount");
    let mut config = support::sim::fleet(
        "LTAIrbac",
        "rbac-secret",
        [
            ("i-rbac00000001".to_string(), false),
            ("i-rbac00000002".to_string(), true),
            ("i-rbac00000003".to_string(), true),
        ],
    );
    config.sts = Some(StsConfig {
        issuer: support::SERVICE_ACCOUNT_ISSUER.into(),
        jwks: support::jwks(&admin).await,
        audience: "sts.aliyuncs.com".into(),
        roles: vec![RoleConfig {
            arn: role.into(),
            oidc_provider_arn: provider.into(),
            subjects: vec![format!("system:serviceaccount:{}:vnc", ns.name)],
        }],
        max_duration_seconds: None,
    });
    let sim = Sim::from_config(config).await;

    // The controller as deployed: all namespaces, its own namespace, nothing but its RBAC.
    let as_sa = support::service_account_client("ecs-vnc-system", "ecs-vnc-controller").await;
    // With leader election as deployed: the Lease ecs-vnc-system/ecs-vnc-controller, as the
    // ServiceAccount too (short timings, the defaults' proportions).
    let mut options = ControllerOptions::new(as_sa, sim.url());
    options.flags = [
        "--leader-elect",
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
        "--leader-identity=rbac-test",
        &format!("--sts-endpoint={}/sts", sim.url()),
        &format!("--oidc-provider-arn={provider}"),
    ]
    .map(String::from)
    .to_vec();
    let controller = start_controller(options).await;
    put_vncpassword(
        &admin,
        &ns.name,
        "web",
        json!({
            "regionId": "cn-hangzhou", "instanceId": "i-rbac00000001",
            "passwordSecretRef": {"name": "web-vnc"}, "credentials": {"secretRef": {"name": "creds"}},
            "rebootPolicy": "Automatic",
        }),
    )
    .await;
    // Apply, describe, reboot, status writes, Events, the key Secret: all as the ServiceAccount.
    // An Automatic reboot waits for a later minute than the apply.
    wait_ready(&admin, &ns.name, "web", Duration::from_secs(120)).await;
    assert_eq!(sim.calls("RebootInstance"), 1);
    // The ServiceAccount's annotation, its token (TokenRequest) and the exchange, as the
    // controller's ServiceAccount.
    put_vncpassword(
        &admin,
        &ns.name,
        "rrsa",
        json!({
            "regionId": "cn-hangzhou", "instanceId": "i-rbac00000002",
            "passwordSecretRef": {"name": "web-vnc"}, "credentials": {"serviceAccountRef": {"name": "vnc"}},
        }),
    )
    .await;
    wait_ready(&admin, &ns.name, "rrsa", Duration::from_secs(60)).await;
    assert_eq!(sim.state().issued("AssumeRoleWithOIDC"), 1);
    // The same in the controller's own namespace: token-policy.yaml refuses the TokenRequest, and
    // the object says why (not that RBAC is missing).
    let own = "ecs-vnc-system";
    let refused_sa = format!("vnc-{}", ns.name);
    Api::<ServiceAccount>::namespaced(admin.clone(), own)
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": refused_sa, "annotations": {"ecsvnc.io/role-arn": role}},
            }))
            .expect("ServiceAccount"),
        )
        .await
        .expect("create the ServiceAccount");
    put_secret(&admin, own, &refused_sa, &[("password", "Rbac56")]).await;
    put_vncpassword(
        &admin,
        own,
        &refused_sa,
        json!({
            // An instance of its own: on rrsa's instance it would be InstanceClaimed (rrsa has
            // proven access) before any TokenRequest.
            "regionId": "cn-hangzhou", "instanceId": "i-rbac00000003",
            "passwordSecretRef": {"name": refused_sa}, "credentials": {"serviceAccountRef": {"name": refused_sa}},
        }),
    )
    .await;
    let status = wait_condition(
        &admin,
        own,
        &refused_sa,
        "Ready",
        "False",
        Some("TokenRequestForbidden"),
        Duration::from_secs(60),
    )
    .await;
    let message = &status.condition("Ready").expect("Ready").message;
    assert!(
        message.contains("may not request ServiceAccount tokens in kube-system"),
        "{message}"
    );
    assert_eq!(sim.state().issued("AssumeRoleWithOIDC"), 1);
    kubectl_ok(&["delete", "-n", own, "vncpassword", &refused_sa]);
    kubectl_ok(&["delete", "-n", own, "secret,serviceaccount", &refused_sa]);
    let events = kubectl_ok(&["get", "events", "-n", &ns.name, "-o", "json"]);
    assert!(
        events.contains("\"Applied\"") && events.contains("RebootRequested"),
        "{events}"
    );
    kubectl_ok(&[
        "get",
        "secret",
        "-n",
        "ecs-vnc-system",
        "ecs-vnc-controller-fingerprint-key",
    ]);
    // A rotation is noticed through the Secret watch, as the ServiceAccount.
    put_secret(&admin, &ns.name, "web-vnc", &[("password", "Rbac34")]).await;
    support::eventually("the rotated password", Duration::from_secs(30), || async {
        (sim.set_password("i-rbac00000001").as_deref() == Some("Rbac34")).then_some(())
    })
    .await;
    let obj = Api::<VncPassword>::namespaced(admin.clone(), &ns.name)
        .get("web")
        .await
        .expect("get");
    assert!(obj.status.is_some());
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        admin.clone(),
        "ecs-vnc-system",
    );
    let held = lease.get("ecs-vnc-controller").await.expect("the Lease");
    assert_eq!(
        held.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rbac-test")
    );
    controller.stop().await;
    // Released on shutdown (an update, as the ServiceAccount).
    let released = lease.get("ecs-vnc-controller").await.expect("the Lease");
    assert_eq!(
        released
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty()),
        None
    );
    ns.delete().await;
}

/// One rule the `kubectl auth can-i --list` table shows: (resource, resource names, verb); a
/// non-resource URL as (`url:<path>`, "", verb).
type Rule = (String, String, String);

/// Everything `user` may do in `namespace` (including what cluster-wide rules grant there), as
/// `kubectl auth can-i --list --as` says it (a SelfSubjectRulesReview).
fn rules_of(user: &str, namespace: &str) -> BTreeSet<Rule> {
    let table = kubectl_ok(&["auth", "can-i", "--list", "--as", user, "-n", namespace]);
    let mut rules = BTreeSet::new();
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        // Resources   Non-Resource URLs   Resource Names   Verbs: the last three are [lists].
        let (resource, rest) = line.split_at(line.find('[').expect("a [list] column"));
        let lists: Vec<&str> = rest
            .split(']')
            .map(|c| c.trim().trim_start_matches('['))
            .collect();
        let (urls, names, verbs) = (lists[0], lists[1], lists[2]);
        let subject = match resource.trim() {
            "" => format!("url:{urls}"),
            r => r.to_string(),
        };
        for verb in verbs.split_whitespace() {
            rules.insert((subject.clone(), names.to_string(), verb.to_string()));
        }
    }
    rules
}

/// What the controller's ServiceAccount may do in `namespace` beyond what any ServiceAccount of
/// its namespace may (discovery, self-reviews and whatever else the cluster grants everyone).
fn controller_rules(namespace: &str) -> BTreeSet<Rule> {
    let everyone = rules_of(
        "system:serviceaccount:ecs-vnc-system:no-bindings-baseline",
        namespace,
    );
    rules_of(SA, namespace)
        .difference(&everyone)
        .cloned()
        .collect()
}

fn rule_set(rules: &[(&str, &str, &[&str])]) -> BTreeSet<Rule> {
    rules
        .iter()
        .flat_map(|(resource, names, verbs)| {
            verbs
                .iter()
                .map(|v| (resource.to_string(), names.to_string(), v.to_string()))
        })
        .collect()
}

/// The whole of the controller's permissions, both ways: exactly these rules and nothing else, in
/// a team's namespace, in kube-system and in its own namespace. A widened rule fails here.
#[tokio::test]
async fn the_shipped_rbac_is_exactly_what_the_controller_uses() {
    install();
    // Cluster-wide (the ClusterRole), so the same in every namespace.
    let cluster: &[(&str, &str, &[&str])] = &[
        // The VncPassword watch (list + watch; the controller never GETs one: it reads its cache).
        ("vncpasswords.ecsvnc.io", "", &["list", "watch"]),
        ("vncpasswords.ecsvnc.io/status", "", &["patch"]),
        // VncPasswordSets: the watch, the status, and their children (never a GET).
        ("vncpasswordsets.ecsvnc.io", "", &["list", "watch"]),
        ("vncpasswordsets.ecsvnc.io/status", "", &["patch"]),
        (
            "vncpasswords.ecsvnc.io",
            "",
            &["create", "patch", "update", "delete"],
        ),
        // selector.nodes: the Node watch (cluster-scoped).
        ("nodes", "", &["list", "watch"]),
        // get: the Secrets a VncPassword names; list + watch: the metadata-only Secret watch (RBAC
        // cannot tell it from a list with data); create + patch: passwordGeneration (narrowed by
        // secret-policy.yaml).
        ("secrets", "", &["get", "list", "watch", "create", "patch"]),
        ("serviceaccounts", "", &["get", "list", "watch"]),
        // Narrowed by token-policy.yaml.
        ("serviceaccounts/token", "", &["create"]),
        // kube-runtime's Recorder writes events.k8s.io/v1 only.
        ("events.events.k8s.io", "", &["create", "patch"]),
    ];
    // Its own namespace (the Role): the Lease of leader election, the fingerprint key.
    let own: &[(&str, &str, &[&str])] = &[
        ("leases.coordination.k8s.io", "", &["create"]),
        (
            "leases.coordination.k8s.io",
            "ecs-vnc-controller",
            &["get", "update"],
        ),
        ("secrets", "ecs-vnc-controller-fingerprint-key", &["get"]),
    ];
    for ns in ["team-rbac-exact", "kube-system", "default"] {
        assert_eq!(
            controller_rules(ns),
            rule_set(cluster),
            "the controller's permissions in {ns}"
        );
    }
    let mut in_own = rule_set(cluster);
    in_own.extend(rule_set(own));
    assert_eq!(
        controller_rules("ecs-vnc-system"),
        in_own,
        "the controller's permissions in ecs-vnc-system"
    );
}

#[tokio::test]
async fn the_shipped_rbac_allows_nothing_more() {
    install();
    let team = "team-rbac-check";
    // What the controller needs.
    for (verb, resource, ns) in [
        ("list", "vncpasswords.ecsvnc.io", None),
        ("watch", "vncpasswords.ecsvnc.io", None),
        ("patch", "vncpasswords.ecsvnc.io/status", Some(team)),
        // VncPasswordSets and their children.
        ("watch", "vncpasswordsets.ecsvnc.io", None),
        ("patch", "vncpasswordsets.ecsvnc.io/status", Some(team)),
        ("create", "vncpasswords.ecsvnc.io", Some(team)),
        ("delete", "vncpasswords.ecsvnc.io", Some(team)),
        ("list", "nodes", None),
        ("get", "secrets", Some(team)),
        ("watch", "secrets", None),
        // What remains (docs/concepts/security.md): the metadata-only Secret watch needs
        // list, and RBAC's list returns data.
        ("list", "secrets", None),
        ("create", "events.events.k8s.io", Some(team)),
        // credentials.serviceAccountRef: the ServiceAccount's annotation, its watch, its token.
        ("get", "serviceaccounts", Some(team)),
        ("watch", "serviceaccounts", None),
        ("create", "serviceaccounts/token", Some(team)),
        // RBAC cannot exclude a namespace: token-policy.yaml refuses these (tested below).
        ("create", "serviceaccounts/token", Some("kube-system")),
        ("create", "secrets", Some("ecs-vnc-system")),
        // passwordGeneration; narrowed to its own Secrets by the admission policy (tested below).
        ("create", "secrets", Some(team)),
        ("patch", "secrets", Some(team)),
        (
            "get",
            "secrets/ecs-vnc-controller-fingerprint-key",
            Some("ecs-vnc-system"),
        ),
        // Leader election: create the Lease, then read and write it (PUT).
        (
            "create",
            "leases.coordination.k8s.io",
            Some("ecs-vnc-system"),
        ),
        (
            "get",
            "leases.coordination.k8s.io/ecs-vnc-controller",
            Some("ecs-vnc-system"),
        ),
        (
            "update",
            "leases.coordination.k8s.io/ecs-vnc-controller",
            Some("ecs-vnc-system"),
        ),
    ] {
        assert!(
            can_i(verb, resource, ns),
            "the controller cannot {verb} {resource} in {ns:?}"
        );
    }
    // Nothing else: no Secret update or delete, no spec writes, nothing unrelated.
    for (verb, resource, ns) in [
        // The controller reads VncPasswords from its watch cache only.
        ("get", "vncpasswords.ecsvnc.io", Some(team)),
        // core/v1 Events: never written (kube-runtime's Recorder uses events.k8s.io/v1).
        ("create", "events", Some(team)),
        ("patch", "events", Some(team)),
        ("update", "secrets", Some(team)),
        ("delete", "secrets", Some(team)),
        ("delete", "secrets", Some("ecs-vnc-system")),
        (
            "update",
            "secrets/ecs-vnc-controller-fingerprint-key",
            Some("ecs-vnc-system"),
        ),
        // Leases: only its own, only in its own namespace, only the verbs used.
        ("create", "leases.coordination.k8s.io", Some(team)),
        (
            "get",
            "leases.coordination.k8s.io/ecs-vnc-controller",
            Some(team),
        ),
        (
            "update",
            "leases.coordination.k8s.io/ecs-vnc-controller",
            Some(team),
        ),
        (
            "update",
            "leases.coordination.k8s.io/kube-scheduler",
            Some("ecs-vnc-system"),
        ),
        (
            "get",
            "leases.coordination.k8s.io/other",
            Some("ecs-vnc-system"),
        ),
        (
            "delete",
            "leases.coordination.k8s.io/ecs-vnc-controller",
            Some("ecs-vnc-system"),
        ),
        (
            "patch",
            "leases.coordination.k8s.io/ecs-vnc-controller",
            Some("ecs-vnc-system"),
        ),
        ("list", "leases.coordination.k8s.io", Some("ecs-vnc-system")),
        (
            "watch",
            "leases.coordination.k8s.io",
            Some("ecs-vnc-system"),
        ),
        // ServiceAccounts: tokens only, never the accounts themselves.
        ("create", "serviceaccounts", Some(team)),
        ("update", "serviceaccounts", Some(team)),
        ("patch", "serviceaccounts", Some(team)),
        ("delete", "serviceaccounts", Some(team)),
        ("update", "vncpasswordsets.ecsvnc.io", Some(team)),
        ("delete", "vncpasswordsets.ecsvnc.io", Some(team)),
        ("get", "nodes", None),
        ("update", "nodes", None),
        ("create", "pods", Some(team)),
        ("get", "configmaps", Some(team)),
        ("create", "deployments.apps", Some("ecs-vnc-system")),
        ("update", "clusterroles.rbac.authorization.k8s.io", None),
        ("*", "*", None),
    ] {
        assert!(
            !can_i(verb, resource, ns),
            "the controller CAN {verb} {resource} in {ns:?}"
        );
    }
    // And the rules name no wildcard.
    let rbac = std::fs::read_to_string(format!("{}/rbac.yaml", deploy_dir())).expect("rbac.yaml");
    assert!(
        !rbac
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("\"*\"") || l.contains("'*'") || l.contains("[*]"))
    );
}

#[test]
fn the_deployment_is_hardened() {
    let docs = rendered();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let seccomp = pod["securityContext"]["seccompProfile"]["type"]
        .as_str()
        .or(sc["seccompProfile"]["type"].as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"));
    for k in ["requests", "limits"] {
        assert!(
            container["resources"][k]["memory"].is_string()
                && container["resources"][k]["cpu"].is_string(),
            "{k}"
        );
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The probes on their own port, the one --health-probe-addr serves.
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "health", "{probe}");
    }
    let health_port = container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "health"))
        .map(|p| p["containerPort"].clone());
    assert_eq!(health_port, Some(json!(8081)));
    let args: Vec<&str> = container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(
        args.contains(&"--health-probe-addr=0.0.0.0:8081"),
        "{args:?}"
    );
    // Two replicas with leader election, never fewer than two during a rollout, one at most
    // evicted at a time, spread across nodes.
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert!(
        container["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--leader-elect"))
    );
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = docs
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let env = container["env"].as_array().expect("env");
    assert!(env.iter().any(|e| e["name"] == "POD_NAMESPACE"
        && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"));
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name")
    );
    // The default credentials: the Secret mounted as a credentials file (a whole-volume mount, which
    // the kubelet updates, never subPath), optional, never environment variables (which change only
    // on a restart).
    assert!(
        !env.iter()
            .any(|e| e["valueFrom"]["secretKeyRef"].is_object()),
        "no Secret in the environment"
    );
    let file = env
        .iter()
        .find(|e| e["name"] == "ALIBABA_CLOUD_CREDENTIALS_FILE")
        .and_then(|e| e["value"].as_str())
        .expect("ALIBABA_CLOUD_CREDENTIALS_FILE");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == "ecs-vnc-default-credentials")
        .expect("the default-credentials Secret as a volume");
    assert_eq!(volume["secret"]["optional"], true);
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("mounted");
    assert!(
        mount["subPath"].is_null(),
        "subPath mounts are never updated"
    );
    let path = volume["secret"]["items"][0]["path"]
        .as_str()
        .expect("item path");
    assert_eq!(
        file,
        format!("{}/{path}", mount["mountPath"].as_str().expect("mountPath"))
    );
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    // No silent identity: the ECS instance's RAM role (the metadata service, last in the default
    // credentials chain) is off unless an operator opts in.
    assert!(
        env.iter()
            .any(|e| e["name"] == "ALIBABA_CLOUD_ECS_METADATA_DISABLED" && e["value"] == "true"),
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true in {env:?}"
    );
}

/// deploy/ rendered by kustomize, as a list of objects.
fn rendered() -> Vec<serde_json::Value> {
    let out = support::kubectl(&["kustomize", &deploy_dir()]);
    assert!(out.status.success());
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect()
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

/// The NetworkPolicy of the controller's Pods, as written (enforcement is the CNI's; the test
/// node has none that enforces, see docs/concepts/security.md): it selects the Deployment's Pods, admits only the
/// metrics/health port, and lets out only DNS, the API server's ports and HTTPS, never to the ECS
/// metadata address.
#[test]
fn the_network_policy_admits_metrics_only_and_lets_out_dns_api_and_https_only() {
    let docs = rendered();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let policies: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "NetworkPolicy")
        .collect();
    assert_eq!(policies.len(), 1, "one NetworkPolicy");
    let policy = &policies[0];
    assert_eq!(policy["metadata"]["namespace"], "ecs-vnc-system");
    let spec = &policy["spec"];
    let selected = spec["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector.matchLabels");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(
        !selected.is_empty() && selected.iter().all(|(k, v)| labels[k] == *v),
        "the policy selects the controller's Pods: {selected:?} vs {labels}"
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    let ports = |rules: &serde_json::Value| -> BTreeSet<(String, String)> {
        rules
            .as_array()
            .expect("rules")
            .iter()
            .flat_map(|r| {
                let ports = r["ports"].as_array().expect("every rule names its ports");
                assert!(!ports.is_empty(), "a rule without ports: {r}");
                ports.iter().map(|p| {
                    assert!(p["endPort"].is_null(), "a port range: {p}");
                    let protocol = p["protocol"].as_str().expect("an explicit protocol");
                    (p["port"].to_string(), protocol.to_string())
                })
            })
            .collect()
    };
    let pairs = |l: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        l.iter()
            .map(|(p, proto)| (p.to_string(), proto.to_string()))
            .collect()
    };
    assert_eq!(ports(&spec["ingress"]), pairs(&[("8080", "TCP")]));
    assert_eq!(
        ports(&spec["egress"]),
        pairs(&[
            ("53", "UDP"),
            ("53", "TCP"),
            ("443", "TCP"),
            ("6443", "TCP")
        ])
    );
    // The metadata service: every egress peer that could hold 100.100.100.200 excepts it, and no
    // egress rule is open to every destination.
    let metadata = std::net::Ipv4Addr::new(100, 100, 100, 200);
    for rule in spec["egress"].as_array().expect("egress") {
        let peers = rule["to"]
            .as_array()
            .expect("every egress rule names its peers");
        assert!(!peers.is_empty(), "an egress rule to everywhere: {rule}");
        for peer in peers {
            let Some(cidr) = peer["ipBlock"]["cidr"].as_str() else {
                // A pod or namespace selector: Pods, never the metadata address.
                continue;
            };
            if holds(cidr, metadata) {
                let except = peer["ipBlock"]["except"].as_array();
                assert!(
                    except.is_some_and(|e| e.iter().any(|c| c == "100.100.100.200/32")),
                    "{cidr} lets the controller reach the metadata service: {rule}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_admission_policy_keeps_the_controller_to_its_own_secrets() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams, PostParams};
    install();
    let admin = support::client().await;
    let ns = support::TestNamespace::new(&admin, "secret-policy").await;
    let as_sa = support::service_account_client("ecs-vnc-system", "ecs-vnc-controller").await;
    let sa_secrets: kube::Api<Secret> = kube::Api::namespaced(as_sa, &ns.name);
    put_secret(&admin, &ns.name, "users-own", &[("password", "User12")]).await;
    // How a generated Secret is marked: `Delete` owns it, `Retain` annotates its VncPassword's uid.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unmanaged,
        Owned,
        Annotated,
        LabelOnly,
    }
    let secret_marked = |name: &str, mark: Mark| -> Secret {
        let mut v = json!({
            "metadata": {"name": name},
            "stringData": {"password": "Gen123"},
        });
        if mark != Mark::Unmanaged {
            v["metadata"]["labels"] = json!({
                "app.kubernetes.io/managed-by": "ecs-vnc-controller",
                "ecsvnc.io/vncpassword": "web",
            });
        }
        if mark == Mark::Owned {
            v["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword", "name": "web",
                "uid": "6b1f5c1e-0000-4000-8000-000000000001", "controller": true,
            }]);
        }
        if mark == Mark::Annotated {
            v["metadata"]["annotations"] =
                json!({"ecsvnc.io/owner-uid": "6b1f5c1e-0000-4000-8000-000000000001"});
        }
        serde_json::from_value(v).expect("secret")
    };
    let secret = |name: &str, managed: bool| {
        secret_marked(
            name,
            if managed {
                Mark::Owned
            } else {
                Mark::Unmanaged
            },
        )
    };
    // Eventually: a new policy takes a moment to reach the admission chain.
    support::eventually(
        "the policy to refuse an unmanaged Secret",
        Duration::from_secs(30),
        || {
            let api = sa_secrets.clone();
            let s = secret("not-managed", false);
            async move {
                match api.create(&PostParams::default(), &s).await {
                    Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => Some(()),
                    Ok(_) => {
                        let _ = api.delete("not-managed", &Default::default()).await;
                        None
                    }
                    Err(_) => None,
                }
            }
        },
    )
    .await;
    sa_secrets
        .create(&PostParams::default(), &secret("managed", true))
        .await
        .expect("the controller may create a Secret it manages");
    sa_secrets
        .create(
            &PostParams::default(),
            &secret_marked("retained", Mark::Annotated),
        )
        .await
        .expect("the controller may create a Secret it manages without an ownerReference (Retain)");
    match sa_secrets
        .create(
            &PostParams::default(),
            &secret_marked("label-only", Mark::LabelOnly),
        )
        .await
    {
        Err(kube::Error::Api(e)) => assert!(e.code == 403 || e.code == 422, "{e:?}"),
        Ok(_) => panic!("a labelled Secret neither owned nor annotated was created"),
        Err(e) => panic!("{e}"),
    }
    let patch = Patch::Merge(json!({"stringData": {"password": "Rot123"}}));
    sa_secrets
        .patch("managed", &PatchParams::default(), &patch)
        .await
        .expect("the controller may rotate a Secret it manages");
    match sa_secrets
        .patch("users-own", &PatchParams::default(), &patch)
        .await
    {
        Err(kube::Error::Api(e)) => assert!(e.code == 403 || e.code == 422, "{e:?}"),
        Ok(_) => panic!("the controller changed a user's Secret"),
        Err(e) => panic!("{e}"),
    }
    ns.delete().await;
}

/// `kubectl create token <sa> -n <namespace> <args> --as=<the controller>`: the token, or why not.
fn create_token_as_controller(
    service_account: &str,
    namespace: &str,
    args: &[&str],
) -> Result<String, String> {
    let mut all = vec![
        "create",
        "token",
        service_account,
        "-n",
        namespace,
        "--as",
        SA,
    ];
    all.extend(args);
    let out = support::kubectl(&all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The claims of a JWT (its signature is the API server's business; this only reads them).
fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A stolen controller token mints no Kubernetes credential: RBAC lets the controller create
/// tokens of every ServiceAccount (it cannot name namespaces), and token-policy.yaml keeps that to
/// what the controller itself asks for: audience sts.aliyuncs.com only, at most an hour, no bound
/// object, never in kube-system or the controller's own namespace.
#[tokio::test]
async fn a_stolen_controller_token_mints_only_short_sts_tokens_of_team_namespaces() {
    install();
    let admin = support::client().await;
    let team = support::TestNamespace::new(&admin, "team-tokens").await;
    for ns in ["kube-system", "ecs-vnc-system", team.name.as_str()] {
        let created = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
            .create(
                &Default::default(),
                &serde_json::from_value(json!({"metadata": {"name": "vnc"}}))
                    .expect("ServiceAccount"),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create ServiceAccount {ns}/vnc: {e}"),
        }
    }
    const POLICY: &str = "ValidatingAdmissionPolicy 'ecs-vnc-controller-tokens'";
    let sts = ["--audience", "sts.aliyuncs.com", "--duration", "10m"];
    // A new policy takes a moment to reach the admission chain.
    support::eventually(
        "the controller to be refused a kube-system token by the token policy",
        Duration::from_secs(30),
        || async {
            create_token_as_controller("vnc", "kube-system", &sts)
                .err()
                .filter(|e| e.contains(POLICY))
        },
    )
    .await;
    // --audience left out: the API server fills in its own audience (its issuer here), before
    // admission.
    let api_audience = support::SERVICE_ACCOUNT_ISSUER;
    let refused: &[(&str, &[&str], &str)] = &[
        ("kube-system", &sts, "in kube-system"),
        ("ecs-vnc-system", &sts, "in the controller's own namespace"),
        (
            &team.name,
            &["--audience", api_audience, "--duration", "10m"],
            "for the API server's audience",
        ),
        (&team.name, &["--duration", "10m"], "with no audience"),
        (
            &team.name,
            &[
                "--audience",
                "sts.aliyuncs.com",
                "--audience",
                api_audience,
                "--duration",
                "10m",
            ],
            "for the API server's audience besides STS",
        ),
        (
            &team.name,
            &["--audience", "sts.aliyuncs.com", "--duration", "2h"],
            "for 2 hours",
        ),
        (
            &team.name,
            &["--audience", "sts.aliyuncs.com", "--duration", "3601s"],
            "for 3601 s",
        ),
        (
            &team.name,
            &[
                "--audience",
                "sts.aliyuncs.com",
                "--duration",
                "10m",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "web",
            ],
            "bound to a Pod",
        ),
        (
            &team.name,
            &[
                "--audience",
                "sts.aliyuncs.com",
                "--duration",
                "10m",
                "--bound-object-kind",
                "Secret",
                "--bound-object-name",
                "web",
            ],
            "bound to a Secret",
        ),
        (
            &team.name,
            &[
                "--audience",
                "sts.aliyuncs.com",
                "--duration",
                "10m",
                "--bound-object-kind",
                "Node",
                "--bound-object-name",
                "node-1",
            ],
            "bound to a Node",
        ),
    ];
    for (ns, args, what) in refused {
        match create_token_as_controller("vnc", ns, args) {
            Ok(token) => panic!(
                "the controller got a token {what} ({ns}, {args:?}): {}",
                claims(&token)
            ),
            Err(e) => assert!(
                e.contains(POLICY) && e.contains("forbidden"),
                "a token {what} ({ns}, {args:?}) was refused, but not by the token policy: {e}"
            ),
        }
    }
    // What the controller asks for (src/controller/service_account.rs), and the hour at most.
    for (duration, seconds) in [("10m", 600), ("1h", 3600)] {
        let token = create_token_as_controller(
            "vnc",
            &team.name,
            &["--audience", "sts.aliyuncs.com", "--duration", duration],
        )
        .unwrap_or_else(|e| panic!("the controller's own TokenRequest ({duration}): {e}"));
        let c = claims(&token);
        assert_eq!(c["aud"], json!(["sts.aliyuncs.com"]), "{c}");
        assert_eq!(
            c["sub"],
            format!("system:serviceaccount:{}:vnc", team.name),
            "{c}"
        );
        assert_eq!(
            c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"),
            seconds,
            "{c}"
        );
    }
    // Only the controller is narrowed: an administrator still gets a kube-system token.
    let token = kubectl_ok(&["create", "token", "vnc", "-n", "kube-system"]);
    assert_eq!(claims(token.trim())["aud"], json!([api_audience]));
    team.delete().await;
}
