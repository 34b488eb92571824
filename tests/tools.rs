//! The tools later work is held to work here, before there is a chart or alert rules to hold:
//!
//! - Helm, built from `helm.sh/helm/v4` (`tests/helm/`, once into the user's cache by
//!   `tests/helm/build`): it reports the pinned version, lints and renders a chart, and rejects a
//!   broken one.
//! - promtool, from Debian's `prometheus` package (`scripts/test` installs it when missing), or
//!   `$PROMTOOL`: it checks rule files, rejects a broken one, and runs rule unit tests.
//!
//! These tests fail (never skip) when a tool is missing or cannot be built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Helm's binary, built (or found in the cache) by `tests/helm/build`.
fn helm_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = repo_root().join("tests/helm/build");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "Helm could not be built ({}): it needs Go >= 1.26 and the Go module proxy (first build only)\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.is_file(),
            "{} printed no binary path (got {path:?})\nstderr:\n{stderr}",
            script.display()
        );
        path
    })
}

/// The Helm version `tests/helm/go.mod` pins.
fn pinned_helm_version() -> String {
    let go_mod = std::fs::read_to_string(repo_root().join("tests/helm/go.mod"))
        .expect("read tests/helm/go.mod");
    go_mod
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("helm.sh/helm/v4"))
                .then(|| words.next())
                .flatten()
                .map(str::to_string)
        })
        .expect("tests/helm/go.mod requires helm.sh/helm/v4")
}

/// Helm with its cache, configuration and data in `home` (never the user's).
fn helm(home: &Path, args: &[&str]) -> Output {
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run helm {args:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A minimal chart: one ConfigMap whose data comes from values.
fn throwaway_chart(dir: &Path) -> PathBuf {
    let chart = dir.join("throwaway");
    write(
        &chart.join("Chart.yaml"),
        "apiVersion: v2\nname: throwaway\ndescription: a chart only the smoke test sees\nversion: 0.1.0\nicon: https://example.com/icon.png\n",
    );
    write(&chart.join("values.yaml"), "greeting: hello\n");
    write(
        &chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n  namespace: {{ .Release.Namespace }}\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    );
    chart
}

#[test]
fn helm_reports_the_pinned_version_lints_and_renders_a_chart() {
    let home = tempfile::tempdir().expect("temp dir");
    let version = helm(home.path(), &["version", "--template", "{{.Version}}"]);
    assert!(version.status.success(), "{}", text(&version));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        pinned_helm_version(),
        "helm version"
    );

    let chart = throwaway_chart(home.path());
    let chart = chart.to_str().expect("UTF-8 path");
    let lint = helm(home.path(), &["lint", "--strict", chart]);
    assert!(lint.status.success(), "helm lint: {}", text(&lint));
    assert!(
        text(&lint).contains("1 chart(s) linted, 0 chart(s) failed"),
        "helm lint: {}",
        text(&lint)
    );

    let rendered = helm(
        home.path(),
        &[
            "template",
            "smoke",
            chart,
            "--namespace",
            "team-a",
            "--set",
            "greeting=hi there",
        ],
    );
    assert!(
        rendered.status.success(),
        "helm template: {}",
        text(&rendered)
    );
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_slice(&rendered.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML from helm template"))
        .filter(|d: &serde_yaml::Value| !d.is_null())
        .collect();
    assert_eq!(docs.len(), 1, "{}", text(&rendered));
    assert_eq!(docs[0]["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(docs[0]["metadata"]["name"].as_str(), Some("smoke-settings"));
    assert_eq!(docs[0]["metadata"]["namespace"].as_str(), Some("team-a"));
    assert_eq!(docs[0]["data"]["greeting"].as_str(), Some("hi there"));
}

#[test]
fn helm_lint_rejects_a_broken_template_naming_it() {
    let home = tempfile::tempdir().expect("temp dir");
    let chart = throwaway_chart(home.path());
    write(
        &chart.join("templates/broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name\n",
    );
    let lint = helm(home.path(), &["lint", chart.to_str().expect("UTF-8 path")]);
    assert!(
        !lint.status.success(),
        "helm lint passed a broken chart: {}",
        text(&lint)
    );
    assert!(
        text(&lint).contains("templates/broken.yaml"),
        "helm lint does not name the broken template: {}",
        text(&lint)
    );
}

/// promtool: `$PROMTOOL`, else on PATH.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL").filter(|s| !s.is_empty()) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no promtool on PATH (or $PROMTOOL): install Debian's prometheus package \
                 (apt-get install -y --no-install-recommends prometheus; scripts/test does when it can)"
            )
        })
}

fn run_promtool(args: &[&str]) -> Output {
    Command::new(promtool())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run promtool {args:?}: {e}"))
}

const RULES: &str = r#"groups:
  - name: smoke
    rules:
      - alert: VncPasswordStalled
        expr: max by (namespace, name) (smoke_stalled) > 0
        for: 5m
        labels: {severity: warning}
        annotations: {summary: "VncPassword {{ $labels.namespace }}/{{ $labels.name }} is stalled"}
"#;

#[test]
fn promtool_runs_checks_rules_and_tests_them() {
    let version = run_promtool(&["--version"]);
    assert!(version.status.success(), "{}", text(&version));
    assert!(
        text(&version).contains("promtool, version"),
        "promtool --version: {}",
        text(&version)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    write(&rules, RULES);
    let rules = rules.to_str().expect("UTF-8 path");
    let check = run_promtool(&["check", "rules", rules]);
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        text(&check)
    );
    assert!(
        text(&check).contains("SUCCESS: 1 rules found"),
        "promtool check rules: {}",
        text(&check)
    );

    // Rule unit tests, which alert rules will be held to: fires after `for`, not before.
    let tests = dir.path().join("rules_test.yaml");
    write(
        &tests,
        r#"rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'smoke_stalled{namespace="team-a", name="web-1"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 3m
        alertname: VncPasswordStalled
        exp_alerts: []
      - eval_time: 6m
        alertname: VncPasswordStalled
        exp_alerts:
          - exp_labels: {severity: warning, namespace: team-a, name: web-1}
            exp_annotations: {summary: "VncPassword team-a/web-1 is stalled"}
"#,
    );
    let unit = run_promtool(&["test", "rules", tests.to_str().expect("UTF-8 path")]);
    assert!(
        unit.status.success(),
        "promtool test rules: {}",
        text(&unit)
    );

    let broken = dir.path().join("broken.yaml");
    write(&broken, &RULES.replace("> 0", "> > 0"));
    let check = run_promtool(&["check", "rules", broken.to_str().expect("UTF-8 path")]);
    assert!(
        !check.status.success() && text(&check).contains("parse error"),
        "promtool passed a broken expression, or did not say why: {}",
        text(&check)
    );
}
