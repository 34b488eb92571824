//! Test support shared by the integration tests: one real Kubernetes control plane per test binary,
//! the project's CRDs installed, a namespace per test, impersonating clients, and the ECS simulator.
//!
//! The control plane is `tests/control-plane/start` (kube-apiserver + etcd built from Go modules),
//! unless `TEST_KUBECONFIG` names an existing cluster (kind, k3d, a real one), which is then used as
//! it is. A watchdog process stops the control plane when the test binary exits, however it exits
//! (success, panic, abort, SIGKILL). When no control plane can be had the tests fail; they never
//! skip.
#![allow(dead_code)]

pub mod api_reference;
pub mod case;
pub mod controller;
pub mod helm;
pub mod image;
pub mod kstatus;
pub mod leaks;
pub mod partition;
pub mod replicas;
pub mod sim;
pub mod time;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static WITH_NODE: AtomicBool = AtomicBool::new(false);

/// Asks for a cluster with a node (`tests/control-plane/start DIR --with-node`: controller-manager,
/// scheduler, kubelet, containerd, kube-proxy), where Pods run. Call it before the first
/// [`kubeconfig`]; with `TEST_KUBECONFIG` the named cluster is used as it is.
pub fn with_node() {
    WITH_NODE.store(true, Ordering::SeqCst);
}

static FEATURE_GATES: OnceLock<String> = OnceLock::new();

/// Asks for a kube-apiserver started with `--feature-gates=GATES` (e.g.
/// `ShardedListAndWatch=true`; `tests/control-plane/start DIR --feature-gates=GATES`). Call it before
/// the first [`kubeconfig`], with the same GATES from every test of the binary; with
/// `TEST_KUBECONFIG` the named cluster is used as it is.
pub fn with_feature_gates(gates: &str) {
    let set = FEATURE_GATES.get_or_init(|| gates.to_string());
    assert_eq!(set, gates, "one set of feature gates per test binary");
}

/// The directory of the control plane this test binary started (None with `TEST_KUBECONFIG`).
pub fn control_plane_dir() -> Option<PathBuf> {
    std::env::var_os("TEST_KUBECONFIG")
        .filter(|v| !v.is_empty())
        .is_none()
        .then(|| kubeconfig().parent().unwrap().to_path_buf())
}

/// The kubeconfig of this test binary's cluster, started on first use.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        let path = match std::env::var_os("TEST_KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => start_control_plane(),
        };
        install_crds(&path);
        path
    })
}

fn start_control_plane() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ecs-vnc-test-cp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let start = repo_root().join("tests/control-plane/start");
    let stop = repo_root().join("tests/control-plane/stop");
    let mut command = Command::new(&start);
    command.arg(&dir);
    if WITH_NODE.load(Ordering::SeqCst) {
        command.arg("--with-node");
    }
    if let Some(gates) = FEATURE_GATES.get() {
        command.arg(format!("--feature-gates={gates}"));
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", start.display()));
    if !output.status.success() {
        let _ = Command::new(&stop).arg(&dir).status();
        panic!(
            "no Kubernetes control plane for the integration tests: {} {} failed ({})\nstdout:\n{}\nstderr:\n{}\n(set TEST_KUBECONFIG to use an existing cluster instead)",
            start.display(),
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The watchdog outlives us only until it notices we are gone, then stops the control plane.
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} {dir}; rmdir {dir} 2>/dev/null",
        pid = std::process::id(),
        stop = shell_quote(&stop.to_string_lossy()),
        dir = shell_quote(&dir.to_string_lossy()),
    );
    // `setsid --fork` returns at once, leaving the watchdog in a session of its own.
    let started = Command::new("setsid")
        .args(["--fork", "bash", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cannot start the control-plane watchdog (setsid, bash)");
    assert!(
        started.success(),
        "the control-plane watchdog did not start"
    );
    dir.join("kubeconfig")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `kubectl` against the test cluster.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl is not installed")
}

/// `kubectl` that must succeed: its standard output.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn install_crds(kubeconfig: &Path) {
    let crds = repo_root().join("crds");
    if !crds.join("vncpassword.yaml").exists() {
        return;
    }
    let run = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("kubectl is not installed");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (file, name) in [
        ("vncpassword.yaml", "crd/vncpasswords.ecsvnc.io"),
        ("vncpasswordset.yaml", "crd/vncpasswordsets.ecsvnc.io"),
    ] {
        let crd = crds.join(file);
        let crd = crd.to_string_lossy();
        run(&["apply", "--server-side", "--force-conflicts", "-f", &crd]);
        run(&["wait", "--for=condition=Established", "--timeout=60s", name]);
    }
}

/// A client for the test cluster (one per test: a client is tied to the runtime that made it).
pub async fn client() -> Client {
    client_as(None).await
}

/// A client that impersonates `system:serviceaccount:<namespace>:<name>`.
pub async fn service_account_client(namespace: &str, name: &str) -> Client {
    client_as(Some((
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ],
    )))
    .await
}

async fn client_as(user: Option<(String, Vec<String>)>) -> Client {
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("readable kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("usable kubeconfig");
    if let Some((user, groups)) = user {
        config.auth_info.impersonate = Some(user);
        config.auth_info.impersonate_groups = Some(groups);
    }
    // The controller's own client stack (HTTP/2 when the API server speaks it), for the test's
    // requests and the controllers it runs alike.
    ecs_vnc_controller::kube_http::client(config)
        .await
        .expect("kube client")
}

/// An admin client that records every request it sends as `METHOD /path` (no query), for tests of
/// which API calls the controller makes.
pub async fn recording_client() -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("usable kubeconfig");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = log.clone();
    let layer = tower::util::MapRequestLayer::new(
        move |request: axum::http::Request<kube::client::Body>| {
            record
                .lock()
                .unwrap()
                .push(format!("{} {}", request.method(), request.uri().path()));
            request
        },
    );
    let client = ecs_vnc_controller::kube_http::builder(config)
        .await
        .expect("kube client")
        .with_layer(&layer)
        .build();
    (client, log)
}

/// A namespace of one test's own, labelled so leftovers on a shared cluster can be found.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        // Whatever a controller in this test binary logs is kept, for the leak check at delete.
        leaks::captured_logs();
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("ecsvnc.io/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        Self {
            name,
            client: client.clone(),
        }
    }

    /// Checks that no secret of the namespace's Secrets reached an Event, a VncPassword's status
    /// or this binary's logs (see [`leaks`]), then deletes the namespace.
    pub async fn delete(self) {
        leaks::assert_no_leak(&self.client, &self.name).await;
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes; the failure names what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The test API server's JSON Web Key Set (`/openid/v1/jwks`), for a simulated STS that verifies
/// its ServiceAccount tokens.
pub async fn jwks(client: &Client) -> serde_json::Value {
    let request = axum::http::Request::get("/openid/v1/jwks")
        .body(Vec::new())
        .expect("request");
    let text = client
        .request_text(request)
        .await
        .expect("GET /openid/v1/jwks");
    serde_json::from_str(&text).expect("JWKS JSON")
}

/// The issuer of the test API server's ServiceAccount tokens (`--service-account-issuer`).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
