//! Observability that is tested: the chart's alert rules (charts/ecs-vnc-controller/files/alerts.yaml,
//! also deploy/monitoring/alerts.yaml) checked and unit-tested with promtool, each alert firing and
//! not firing (tests/monitoring/alerts_test.yaml); the Grafana dashboard (files/dashboard.json)
//! valid for the schemaVersion it declares; and a real Prometheus (Debian's `prometheus`, started
//! here on a free port with a generated configuration and the alert rules) scraping an in-process
//! controller while a small wave of VncPasswords runs against the ECS simulator, every panel's
//! query returning data through Prometheus's HTTP API.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use serde_json::{Value, json};

use ecs_vnc_controller::simulator::{RoleConfig, StsConfig};
use support::controller::*;
use support::sim::Sim;

fn chart_file(name: &str) -> PathBuf {
    support::repo_root()
        .join("charts/ecs-vnc-controller/files")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A program from Debian's `prometheus` package: `$PROMTOOL` / `$PROMETHEUS`, else on PATH.
fn tool(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|s| !s.is_empty()) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no {name} on PATH (or ${env}): install Debian's prometheus package \
                 (apt-get install -y --no-install-recommends prometheus; scripts/test does when it can)"
            )
        })
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", program.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The metric names src/metrics.rs documents (its table), with the suffixes Prometheus adds.
fn exported_metrics() -> BTreeSet<String> {
    let source = read(&support::repo_root().join("src/metrics.rs"));
    let mut names = BTreeSet::new();
    for line in source.lines().filter(|l| l.starts_with("//! | `ecs_vnc_")) {
        let name = line.split('`').nth(1).expect("a metric name").to_string();
        let kind = line.split('|').nth(2).unwrap_or_default().trim();
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name);
            }
        }
    }
    // Documented in the table's label column rather than its own row.
    names.insert("ecs_vnc_credential_refreshes_total".into());
    assert!(names.len() > 10, "{names:?}");
    names
}

/// Every `ecs_vnc_...` metric an expression names.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ecs_vnc_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        found.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    found
}

fn alert_rules() -> Vec<Value> {
    let rules: Value = serde_yaml::from_str(&read(&chart_file("alerts.yaml"))).expect("YAML");
    rules["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .clone()
}

#[test]
fn promtool_checks_the_alerts_and_their_unit_tests_pass() {
    let promtool = tool("promtool", "PROMTOOL");
    for file in [
        chart_file("alerts.yaml"),
        support::repo_root().join("deploy/monitoring/alerts.yaml"),
    ] {
        let out = run(&promtool, &["check", "rules", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "promtool check rules {}:\n{}",
            file.display(),
            text(&out)
        );
        assert!(
            text(&out).contains("SUCCESS: 9 rules found"),
            "{}",
            text(&out)
        );
    }
    let tests = support::repo_root().join("tests/monitoring/alerts_test.yaml");
    let out = run(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));

    // Every alert is tested firing and not firing, and says what to do.
    let cases: Value = serde_yaml::from_str(&read(&tests)).expect("YAML");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in cases["tests"].as_array().unwrap() {
        for check in test["alert_rule_test"].as_array().unwrap() {
            let name = check["alertname"].as_str().unwrap().to_string();
            if check["exp_alerts"].as_array().unwrap().is_empty() {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let runbooks = read(&support::repo_root().join("docs/operations/runbooks.md"));
    let mut names = BTreeSet::new();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().expect("alert name").to_string();
        assert!(firing.contains(&name), "{name} is never tested firing");
        assert!(quiet.contains(&name), "{name} is never tested not firing");
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| s.len() > 10),
                "{name} has no {annotation}"
            );
        }
        let anchor = format!("docs/operations/runbooks.md#{}", name.to_lowercase());
        assert_eq!(rule["annotations"]["runbook"], anchor.as_str());
        assert!(
            runbooks.contains(&format!("\n#### {name}\n")),
            "docs/operations/runbooks.md has no runbook section #### {name}"
        );
        assert!(
            metrics_in(rule["expr"].as_str().unwrap()).is_subset(&exported_metrics()),
            "{name} names a metric the controller does not export"
        );
        names.insert(name);
    }
    for wanted in [
        "EcsVncControllerDown",
        "EcsVncLeaderCount",
        "EcsVncObjectsStalled",
        "EcsVncRebootNotObserved",
        "EcsVncThrottled",
        "EcsVncCredentialRefreshFailing",
        "EcsVncReconcileErrors",
        "EcsVncReconcilePanics",
    ] {
        assert!(names.contains(wanted), "no alert {wanted}");
    }
    // The stalled alert covers exactly the reasons of the Stalled rows of the health table.
    let health = read(&support::repo_root().join("docs/reference/health.md"));
    let stalled: BTreeSet<String> = health
        .lines()
        .filter(|l| l.starts_with("| Failed (Stalled) |"))
        .map(|l| {
            l.split('|')
                .nth(2)
                .unwrap()
                .trim()
                .trim_matches('`')
                .to_string()
        })
        .collect();
    let rule = alert_rules()
        .into_iter()
        .find(|r| r["alert"] == "EcsVncObjectsStalled")
        .unwrap();
    let expr = rule["expr"].as_str().unwrap();
    let regex = expr
        .split("ready_reason=~\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let in_rule: BTreeSet<String> = regex.split('|').map(str::to_string).collect();
    assert_eq!(
        in_rule, stalled,
        "EcsVncObjectsStalled's reasons vs docs/reference/health.md"
    );
}

/// The dashboard against the classic dashboard model of the schemaVersion it declares (Grafana's
/// `kinds/dashboard` schema: what is required of the dashboard, its panels, grid positions,
/// variables and annotations), built on metrics the controller exports, covering what operators
/// look at.
#[test]
fn the_dashboard_is_valid_for_its_schema_version() {
    let d: Value = serde_json::from_str(&read(&chart_file("dashboard.json"))).expect("JSON");
    assert_eq!(
        read(&chart_file("dashboard.json")),
        read(&support::repo_root().join("deploy/monitoring/dashboard.json"))
    );
    assert_eq!(
        d["schemaVersion"], 39,
        "the schema version the checks below follow"
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let uid = d["uid"].as_str().expect("uid");
    assert!(
        (8..=40).contains(&uid.len())
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "uid {uid}: 8 to 40 characters"
    );
    assert!(d["editable"].is_boolean());
    assert!([0, 1, 2].contains(&d["graphTooltip"].as_u64().expect("graphTooltip")));
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());
    assert!(d["version"].is_u64() && d["refresh"].is_string() && d["tags"].is_array());
    // Variables: a Prometheus data source, which every panel and query uses.
    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let kinds = [
        "query",
        "adhoc",
        "constant",
        "datasource",
        "interval",
        "textbox",
        "custom",
        "system",
    ];
    for v in variables {
        assert!(
            kinds.contains(&v["type"].as_str().expect("variable type")),
            "{v}"
        );
        assert!(v["name"].as_str().is_some_and(|n| !n.is_empty()), "{v}");
        assert!(
            [0, 1, 2].contains(&v["hide"].as_u64().expect("hide")),
            "{v}"
        );
    }
    let source = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(source["query"], "prometheus");
    let source_ref =
        json!({"type": "prometheus", "uid": format!("${{{}}}", source["name"].as_str().unwrap())});
    for a in d["annotations"]["list"]
        .as_array()
        .expect("annotations.list")
    {
        assert!(a["name"].is_string() && a["datasource"].is_object(), "{a}");
        assert!(
            a["enable"].is_boolean() && a["iconColor"].is_string(),
            "{a}"
        );
    }
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut queried = BTreeSet::new();
    let known = exported_metrics();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = p["title"].as_str().expect("title");
        assert!(
            p["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{title}: type"
        );
        let g = &p["gridPos"];
        let (h, w, x, y) = (
            g["h"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
        );
        assert!(
            h > 0 && w > 0 && w <= 24 && x < 24 && x + w <= 24,
            "{title}: gridPos {g}"
        );
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("{title} overlaps panel {other}");
                }
            }
        }
        assert!(p["options"].is_object(), "{title}: options");
        assert!(p["transformations"].is_array(), "{title}: transformations");
        assert!(
            p["fieldConfig"]["defaults"].is_object(),
            "{title}: fieldConfig.defaults"
        );
        assert!(
            p["fieldConfig"]["overrides"].is_array(),
            "{title}: fieldConfig.overrides"
        );
        assert_eq!(p["datasource"], source_ref, "{title}: datasource");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds");
        for t in targets {
            assert_eq!(t["datasource"], source_ref, "{title}: target datasource");
            let expr = t["expr"].as_str().expect("expr");
            let metrics = metrics_in(expr);
            assert!(
                !metrics.is_empty() && metrics.is_subset(&known),
                "{title}: {expr}"
            );
            queried.extend(metrics);
        }
    }
    for wanted in [
        "ecs_vnc_vncpasswords",
        "ecs_vnc_pending_reboots",
        "ecs_vnc_reconciles_waiting",
        "ecs_vnc_ecs_calls_total",
        "ecs_vnc_ecs_call_duration_seconds_bucket",
        "ecs_vnc_ecs_rate_limit_qps",
        "ecs_vnc_ecs_throttles_total",
        "ecs_vnc_reconciles_total",
        "ecs_vnc_reconcile_duration_seconds_bucket",
        "ecs_vnc_reconcile_panics_total",
        "ecs_vnc_leader",
        "ecs_vnc_credential_refreshes_total",
    ] {
        assert!(queried.contains(wanted), "no panel shows {wanted}");
    }
}

// --- a real Prometheus ---------------------------------------------------------------------------

/// Debian's Prometheus on a free loopback port, scraping `target` every second, with the chart's
/// alert rules; stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = dir.path().join("alerts.yaml");
        std::fs::copy(chart_file("alerts.yaml"), &rules).expect("copy the rules");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yaml]\n\
                 scrape_configs:\n  - job_name: ecs-vnc-controller\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let listen = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(tool("prometheus", "PROMETHEUS"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            url: format!("http://{listen}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let ready = format!("{}/-/ready", prometheus.url);
        support::eventually("Prometheus ready", Duration::from_secs(30), || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                let r = http.get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        prometheus
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let body = reqwest::Client::new()
            .get(format!("{}{path}?{query}", self.url))
            .send()
            .await
            .expect("Prometheus answers")
            .text()
            .await
            .expect("body");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["status"], "success", "{path} {params:?}: {v}");
        v["data"].clone()
    }

    /// `query` over [start, now], one point a second.
    async fn range(&self, query: &str, start: f64) -> Vec<Value> {
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        let (start, end) = (format!("{start:.3}"), format!("{now:.3}"));
        let data = self
            .get(
                "/api/v1/query_range",
                &[
                    ("query", query),
                    ("start", &start),
                    ("end", &end),
                    ("step", "1"),
                ],
            )
            .await;
        data["result"].as_array().expect("matrix").clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a matrix has a finite sample.
fn has_data(matrix: &[Value]) -> bool {
    matrix.iter().any(|series| {
        series["values"].as_array().is_some_and(|values| {
            values.iter().any(|p| {
                p[1].as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            })
        })
    })
}

/// A real Prometheus scrapes the controller while a small wave of VncPasswords (applied, one
/// waiting for a reboot, one naming a missing instance, one through a ServiceAccount's RAM role,
/// a few throttled calls) runs against the simulator: every query of every dashboard panel
/// returns data through Prometheus's HTTP API, the object panel shows the wave as it is, and
/// every alert rule evaluates cleanly, none firing.
#[tokio::test]
async fn every_dashboard_panel_shows_data_from_a_real_prometheus() {
    let admin = support::client().await;
    let ns = support::TestNamespace::new(&admin, "dashboard").await;
    let role = "acs:ram::1234567890:role/dashboard";
    let provider = "acs:ram::1234567890:oidc-provider/dashboard-test";
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "vnc", "annotations": {"ecsvnc.io/role-arn": role}},
            }))
            .unwrap(),
        )
        .await
        .expect("create the ServiceAccount");
    let instances: Vec<(String, bool)> = (1..=6)
        .map(|i| (format!("i-dashboard0000{i}"), i != 5))
        .collect();
    let mut config = support::sim::fleet("LTAIdashboard", "dashboard-secret", instances.clone());
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
    sim.throttle_next(3);
    let mut options = ControllerOptions::new(admin.clone(), sim.url());
    options.namespace = Some(ns.name.clone());
    options.flags = vec![format!("--oidc-provider-arn={provider}")];
    let controller = start_controller(options).await;
    let prometheus = Prometheus::start(controller.metrics_addr).await;
    let start = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0 - 5.0;

    put_secret(
        &admin,
        &ns.name,
        "creds",
        &[
            ("accessKeyId", "LTAIdashboard"),
            ("accessKeySecret", "dashboard-secret"),
        ],
    )
    .await;
    put_secret(&admin, &ns.name, "web-vnc", &[("password", "Dash12")]).await;
    let spec = |instance: &str| {
        json!({
            "regionId": "cn-hangzhou", "instanceId": instance,
            "passwordSecretRef": {"name": "web-vnc"}, "credentials": {"secretRef": {"name": "creds"}},
        })
    };
    for (i, (instance, _)) in instances.iter().enumerate().take(4) {
        put_vncpassword(&admin, &ns.name, &format!("web-{i}"), spec(instance)).await;
    }
    // Not I/O optimized: waits for a restart (a pending reboot).
    put_vncpassword(&admin, &ns.name, "legacy", spec(&instances[4].0)).await;
    // No such instance: an ECS error, and a stall.
    put_vncpassword(&admin, &ns.name, "missing", spec("i-dashboardnone1")).await;
    // Through the ServiceAccount's RAM role: a credential refresh (STS AssumeRoleWithOIDC).
    let mut rrsa = spec(&instances[5].0);
    rrsa["credentials"] = json!({"serviceAccountRef": {"name": "vnc"}});
    put_vncpassword(&admin, &ns.name, "rrsa", rrsa).await;
    for i in 0..4 {
        wait_ready(
            &admin,
            &ns.name,
            &format!("web-{i}"),
            Duration::from_secs(60),
        )
        .await;
    }
    wait_condition(
        &admin,
        &ns.name,
        "legacy",
        "Ready",
        "True",
        Some("RebootRequired"),
        Duration::from_secs(60),
    )
    .await;
    wait_condition(
        &admin,
        &ns.name,
        "missing",
        "Ready",
        "False",
        Some("InstanceNotFound"),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        sim.state().issued("AssumeRoleWithOIDC") >= 1,
        "the RRSA object used STS"
    );

    // Every panel's every query, as Grafana sends it ($__rate_interval: 4 scrape intervals).
    let dashboard: Value = serde_json::from_str(&read(&chart_file("dashboard.json"))).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "4s");
            let what = format!("data for panel {title:?}: {expr}");
            support::eventually(&what, Duration::from_secs(60), || async {
                has_data(&prometheus.range(&expr, start).await).then_some(())
            })
            .await;
        }
    }
    // The object panel shows the wave as it is (the gauges are refreshed every 5 s).
    let by_reason = "sum by (ready_reason) (ecs_vnc_vncpasswords)";
    support::eventually(
        "the wave in the object panel",
        Duration::from_secs(30),
        || async {
            let data = prometheus
                .get("/api/v1/query", &[("query", by_reason)])
                .await;
            let now: BTreeMap<String, String> = data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["metric"]["ready_reason"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        s["value"][1].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (now.get("Applied").map(String::as_str) == Some("5")
                && now.get("RebootRequired").map(String::as_str) == Some("1")
                && now.get("InstanceNotFound").map(String::as_str) == Some("1"))
            .then_some(())
        },
    )
    .await;
    // The alert rules evaluate against the real series without error, and none fires.
    support::eventually("every rule evaluated", Duration::from_secs(30), || async {
        let data = prometheus.get("/api/v1/rules", &[]).await;
        let rules: Vec<Value> = data["groups"][0]["rules"].as_array()?.clone();
        (rules.len() == 9
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
            }))
        .then_some(rules)
    })
    .await;
    // None fires; the stalled object makes EcsVncObjectsStalled pending (it fires after 15 min).
    support::eventually(
        "EcsVncObjectsStalled pending",
        Duration::from_secs(30),
        || async {
            let data = prometheus.get("/api/v1/alerts", &[]).await;
            let alerts = data["alerts"].as_array()?.clone();
            assert!(
                alerts.iter().all(|a| a["state"] != "firing"),
                "an alert fires: {alerts:?}"
            );
            alerts
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "EcsVncObjectsStalled"
                        && a["labels"]["ready_reason"] == "InstanceNotFound"
                        && a["state"] == "pending"
                })
                .then_some(())
        },
    )
    .await;

    drop(prometheus);
    controller.stop().await;
    ns.delete().await;
}
