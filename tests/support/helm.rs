//! The project's Helm chart as the tests use it: Helm built from its Go module
//! (`tests/helm/build`, cached), run with a private home, on `charts/ecs-vnc-controller`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub const RELEASE: &str = "ecs-vnc-controller";

pub fn chart_dir() -> PathBuf {
    super::repo_root().join("charts/ecs-vnc-controller")
}

/// A values file of the chart's `ci/` directory, by name (`namespaced` → `ci/namespaced-values.yaml`).
pub fn ci_values(name: &str) -> PathBuf {
    chart_dir().join(format!("ci/{name}-values.yaml"))
}

/// Every `ci/*-values.yaml`, by name.
pub fn all_ci_values() -> Vec<(String, PathBuf)> {
    let mut all: Vec<(String, PathBuf)> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/ecs-vnc-controller/ci")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let feature = name.strip_suffix("-values.yaml")?.to_string();
            Some((feature, e.path()))
        })
        .collect();
    all.sort();
    all
}

/// Helm's binary, built (or found in the cache) by `tests/helm/build`; the tests fail, never skip,
/// when it cannot be built.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = super::repo_root().join("tests/helm/build");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "Helm could not be built ({}): it needs Go >= 1.26 and the Go module proxy (first build only)\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .trim(),
        );
        assert!(path.is_file(), "tests/helm/build printed no binary: {path:?}");
        path
    })
}

/// Helm's own directories for this test binary (never the user's).
fn home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// `helm ARGS` with the test cluster's kubeconfig when `cluster` (install, upgrade, ...), else none.
pub fn run(args: &[&str], cluster: bool) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("HELM_CACHE_HOME", home().join("cache"))
        .env("HELM_CONFIG_HOME", home().join("config"))
        .env("HELM_DATA_HOME", home().join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    if cluster {
        command.env("KUBECONFIG", super::kubeconfig());
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("run helm {args:?}: {e}"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm ARGS`, which must succeed: its standard output.
pub fn ok(args: &[&str], cluster: bool) -> String {
    let out = run(args, cluster);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm template RELEASE CHART -n NAMESPACE EXTRA...`: the rendered objects as JSON values.
pub fn template(namespace: &str, extra: &[&str]) -> (String, Vec<Value>) {
    template_as(RELEASE, namespace, extra)
}

/// `helm template` as release `release`.
pub fn template_as(release: &str, namespace: &str, extra: &[&str]) -> (String, Vec<Value>) {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        namespace,
    ];
    args.extend(extra);
    let yaml = ok(&args, false);
    let docs = parse(&yaml);
    (yaml, docs)
}

/// The documents of a YAML stream (empty ones dropped), as JSON values. A key twice in one
/// mapping (which some YAML readers take silently, the last one winning) fails.
pub fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| {
            let strict: serde_yaml::Value = serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("YAML from helm: {e}\n{yaml}"));
            serde_json::to_value(strict).expect("YAML as JSON")
        })
        .filter(|d: &Value| !d.is_null())
        .collect()
}

/// The one object of `kind` (and `name`, when given) among `docs`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name:?} in the render");
    found[0]
}

/// The controller container's args in a render.
pub fn controller_args(docs: &[Value]) -> Vec<String> {
    find(docs, "Deployment", None)["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// `helm package` of the chart into `dir`: the archive's path.
pub fn package(dir: &Path) -> PathBuf {
    let chart = chart_dir();
    let out = ok(
        &[
            "package",
            chart.to_str().expect("UTF-8 path"),
            "--destination",
            dir.to_str().expect("UTF-8 path"),
        ],
        false,
    );
    let path = out
        .trim()
        .rsplit(": ")
        .next()
        .map(PathBuf::from)
        .expect("helm package names the archive");
    assert!(path.is_file(), "{out}");
    path
}
