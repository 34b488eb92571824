//! The controller watching a list of namespaces (`--watch-namespaces`, the chart's
//! `watchNamespaces`) against the real API server: the merged per-namespace watch keeps every
//! namespace's objects when one namespace relists.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config};

use ecs_vnc_controller::controller::namespaces::{self, WatchNamespaces};
use support::controller::put_secret;

/// What the test does to one namespace's watch requests (its lists pass untouched).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    None,
    /// Every watch request of the namespace fails (404: the path is bent), so events there go unseen.
    Blackout,
    /// The next watch request is answered with the API server's `410 Gone` event ("too old
    /// resource version"): the watcher must relist that namespace.
    Expire,
}

#[derive(Default)]
struct Faults {
    namespace: String,
    fault: Mutex<Option<Fault>>,
    /// Requests of the namespace seen: (is a watch, the fault applied).
    seen: Mutex<Vec<(bool, Fault)>>,
}

/// The event the API server streams when a watch's resourceVersion has expired (etcd compacted
/// it, or it fell out of the watch cache), as tests/apiserver_restart.rs gets it after a restart.
const EXPIRED: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (2)","reason":"Expired","code":410}}"#;

type Request = axum::http::Request<kube::client::Body>;
type Response = axum::http::Response<axum::body::Body>;

/// A tower layer applying `Faults` to the requests of one namespace: the API server stays real for
/// everything else (a watch request is bent to a path it answers 404, or answered with the
/// API server's own `410 Gone` event).
#[derive(Clone)]
struct FaultLayer(Arc<Faults>);

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            faults: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct FaultService<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S, B> tower::Service<Request> for FaultService<S>
where
    S: tower::Service<Request, Response = axum::http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let faults = &self.faults;
        let prefix = format!("/api/v1/namespaces/{}/", faults.namespace);
        let uri = request.uri().clone();
        let query = uri.query().unwrap_or_default().to_string();
        let watch = query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
        let mut applied = Fault::None;
        if uri.path().starts_with(&prefix) {
            let mut fault = faults.fault.lock().unwrap();
            applied = match (*fault, watch) {
                (Some(Fault::Blackout), true) => {
                    *request.uri_mut() =
                        format!("{}-blackout?{query}", uri.path()).parse().unwrap();
                    Fault::Blackout
                }
                (Some(Fault::Expire), true) => {
                    *fault = None;
                    Fault::Expire
                }
                _ => Fault::None,
            };
            faults.seen.lock().unwrap().push((watch, applied));
        }
        if applied == Fault::Expire {
            let body = axum::body::Body::from(format!("{EXPIRED}\n"));
            return Box::pin(async move { Ok(axum::http::Response::new(body)) });
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            Ok(response.map(axum::body::Body::new))
        })
    }
}

/// An admin client whose requests for `faults.namespace` go through `faults`.
async fn faulty_client(faults: Arc<Faults>) -> Client {
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(support::kubeconfig()).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("usable kubeconfig");
    kube::client::ClientBuilder::try_from(config)
        .expect("kube client")
        .with_layer(&FaultLayer(faults))
        .build()
}

fn names(store: &Store<PartialObjectMeta<Secret>>, ns: &[&str]) -> BTreeSet<String> {
    store
        .state()
        .iter()
        .filter(|s| ns.contains(&s.metadata.namespace.as_deref().unwrap_or_default()))
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// The controller's Secret-metadata watch over two namespaces, one store: namespace A is cut off
/// (its watch requests fail) while one of its Secrets is deleted and another created, then its
/// watch is answered `410 Gone` by the API server and A relists. The store ends with A's new
/// Secrets and without the deleted one, and never — at any event — lacks B's.
#[tokio::test]
async fn one_namespace_relisting_keeps_the_other_namespaces_objects() {
    let admin = support::client().await;
    let a = support::TestNamespace::new(&admin, "relist-a").await;
    let b = support::TestNamespace::new(&admin, "relist-b").await;
    for (ns, name) in [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")] {
        put_secret(&admin, &ns.name, name, &[("password", "Keep12")]).await;
    }
    let faults = Arc::new(Faults {
        namespace: a.name.clone(),
        ..Default::default()
    });
    let client = faulty_client(faults.clone()).await;
    let watched: WatchNamespaces = format!("{},{}", a.name, b.name).parse().unwrap();
    let (store, writer) = reflector::store::<PartialObjectMeta<Secret>>();
    // Watches end after 1 s (timeoutSeconds) and are started again from where they were, so the
    // faults below reach the next watch request soon.
    let config = watcher::Config::default().timeout(1);
    let events = namespaces::watch(
        &client,
        &watched,
        config,
        namespaces::held_in(store.clone()),
    )
    .reflect(writer);
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let b_names: BTreeSet<String> = [format!("{}/b1", b.name), format!("{}/b2", b.name)].into();
    let consumer = {
        let (log, store, b_ns, b_names) =
            (log.clone(), store.clone(), b.name.clone(), b_names.clone());
        tokio::spawn(async move {
            let mut events = Box::pin(events);
            let mut ready = false;
            while let Some(event) = events.next().await {
                let line = match event {
                    Ok(Event::Init) => "Init".to_string(),
                    Ok(Event::InitDone) => {
                        ready = true;
                        "InitDone".to_string()
                    }
                    Ok(Event::InitApply(s) | Event::Apply(s)) => {
                        format!("Apply {}", s.metadata.name.unwrap_or_default())
                    }
                    Ok(Event::Delete(s)) => {
                        format!("Delete {}", s.metadata.name.unwrap_or_default())
                    }
                    Err(e) => format!("Error {e}"),
                };
                // After every event (the reflector has applied it), B's Secrets are all there.
                if ready && !b_names.is_subset(&names(&store, &[&b_ns])) {
                    panic!(
                        "after {line}: the store lost B's Secrets: {:?}",
                        names(&store, &[&b_ns])
                    );
                }
                log.lock().unwrap().push(line);
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready())
        .await
        .expect("the merged watch listed both namespaces")
        .unwrap();
    let both = [a.name.as_str(), b.name.as_str()];
    let expect = |list: &[&str]| -> BTreeSet<String> {
        list.iter()
            .map(|n| {
                let ns = if n.starts_with('a') { &a.name } else { &b.name };
                format!("{ns}/{n}")
            })
            .collect()
    };
    assert_eq!(names(&store, &both), expect(&["a1", "a2", "b1", "b2"]));

    // A is cut off: a watch request of A's has failed since.
    *faults.fault.lock().unwrap() = Some(Fault::Blackout);
    support::eventually("a watch of A refused", Duration::from_secs(30), || async {
        faults
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|(watch, f)| *watch && *f == Fault::Blackout)
            .then_some(())
    })
    .await;
    let secrets = Api::<Secret>::namespaced(admin.clone(), &a.name);
    secrets
        .delete("a1", &DeleteParams::default())
        .await
        .unwrap();
    put_secret(&admin, &a.name, "a3", &[("password", "New123")]).await;
    put_secret(&admin, &b.name, "b3", &[("password", "New456")]).await;
    // B's watch goes on meanwhile.
    support::eventually("B's new Secret", Duration::from_secs(30), || async {
        names(&store, &both)
            .contains(&format!("{}/b3", b.name))
            .then_some(())
    })
    .await;
    assert!(
        names(&store, &both).contains(&format!("{}/a1", a.name)),
        "A's deletion went unseen while cut off (else this test proves nothing)"
    );
    let lists_before = faults
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, _)| !*w)
        .count();

    // A's next watch is answered 410 Gone: A relists.
    *faults.fault.lock().unwrap() = Some(Fault::Expire);
    support::eventually("A relisted", Duration::from_secs(60), || async {
        (names(&store, &both) == expect(&["a2", "a3", "b1", "b2", "b3"])).then_some(())
    })
    .await;
    let seen = faults.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(w, f)| *w && *f == Fault::Expire),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|(w, _)| !*w).count() > lists_before,
        "A was listed again: {seen:?} {:?}",
        log.lock().unwrap()
    );
    let log = log.lock().unwrap().clone();
    eprintln!(">> the merged stream's events: {log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("Error") && l.contains("too old resource version")),
        "the API server's 410 reached the watcher: {log:?}"
    );
    assert_eq!(log.iter().filter(|l| *l == "Init").count(), 1, "{log:?}");
    assert!(log.contains(&"Delete a1".to_string()), "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("Delete b")), "{log:?}");
    consumer.abort();
    a.delete().await;
    b.delete().await;
}

// --- namespaced mode as the chart installs it -----------------------------------------------------

/// The chart rendered in namespaced mode (`watchNamespaces`: two namespaces of its own) and applied
/// for real: a release namespace, two watched namespaces and one that is not.
struct Install {
    own: support::TestNamespace,
    a: support::TestNamespace,
    b: support::TestNamespace,
    other: support::TestNamespace,
    /// The controller's ServiceAccount.
    service_account: String,
}

impl Install {
    async fn new(admin: &Client) -> Self {
        let own = support::TestNamespace::new(admin, "nsd-own").await;
        let a = support::TestNamespace::new(admin, "nsd-a").await;
        let b = support::TestNamespace::new(admin, "nsd-b").await;
        let other = support::TestNamespace::new(admin, "nsd-other").await;
        // Cluster-scoped names (the admission policies) are the release's: one of its own.
        let release = format!("vnc-{:08x}", rand::random::<u32>());
        let watch = format!("watchNamespaces={{{},{}}}", a.name, b.name);
        let (yaml, docs) = support::helm::template_as(
            &release,
            &own.name,
            &["--set", &watch, "--set", "replicas=1"],
        );
        assert!(
            !docs
                .iter()
                .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
            "namespaced mode renders nothing cluster-wide for RBAC"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("namespaced.yaml");
        std::fs::write(&file, yaml).unwrap();
        support::kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
        let service_account =
            support::helm::find(&docs, "ServiceAccount", None)["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string();
        Self {
            own,
            a,
            b,
            other,
            service_account,
        }
    }

    fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.own.name, self.service_account
        )
    }

    async fn delete(self) {
        for ns in [self.a, self.b, self.other, self.own] {
            ns.delete().await;
        }
    }
}

/// `kubectl auth can-i VERB RESOURCE (-n NS | -A) --as USER`.
fn can_i(user: &str, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = support::kubectl(&args);
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

type Rule = (String, String, String);

/// What `user` may do in `namespace`, as `kubectl auth can-i --list --as` says it.
fn rules_of(user: &str, namespace: &str) -> BTreeSet<Rule> {
    let table = support::kubectl_ok(&["auth", "can-i", "--list", "--as", user, "-n", namespace]);
    let mut rules = BTreeSet::new();
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (resource, rest) = line.split_at(line.find('[').expect("a [list] column"));
        let lists: Vec<&str> = rest
            .split(']')
            .map(|c| c.trim().trim_start_matches('['))
            .collect();
        let subject = match resource.trim() {
            "" => format!("url:{}", lists[0]),
            r => r.to_string(),
        };
        for verb in lists[2].split_whitespace() {
            rules.insert((subject.clone(), lists[1].to_string(), verb.to_string()));
        }
    }
    rules
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

/// Namespaced mode's RBAC both ways: in a watched namespace exactly what the controller uses there,
/// in its own namespace its Lease, fingerprint key and Lease Events, and nothing anywhere else — no
/// Secret of another namespace, no cluster-wide list.
#[tokio::test]
async fn namespaced_mode_grants_the_watched_namespaces_and_nothing_else() {
    let admin = support::client().await;
    let install = Install::new(&admin).await;
    let user = install.user();
    let baseline = format!(
        "system:serviceaccount:{}:no-bindings-baseline",
        install.own.name
    );
    let beyond_baseline = |ns: &str| -> BTreeSet<Rule> {
        rules_of(&user, ns)
            .difference(&rules_of(&baseline, ns))
            .cloned()
            .collect()
    };
    let watched = rule_set(&[
        ("vncpasswords.ecsvnc.io", "", &["list", "watch"]),
        ("vncpasswords.ecsvnc.io/status", "", &["patch"]),
        ("vncpasswordsets.ecsvnc.io", "", &["list", "watch"]),
        ("vncpasswordsets.ecsvnc.io/status", "", &["patch"]),
        (
            "vncpasswords.ecsvnc.io",
            "",
            &["create", "patch", "update", "delete"],
        ),
        ("secrets", "", &["get", "list", "watch", "create", "patch"]),
        ("serviceaccounts", "", &["get", "list", "watch"]),
        ("serviceaccounts/token", "", &["create"]),
        ("events.events.k8s.io", "", &["create", "patch"]),
    ]);
    let own = rule_set(&[
        ("secrets", "", &["create"]),
        ("events.events.k8s.io", "", &["create", "patch"]),
        ("secrets", "ecs-vnc-controller-fingerprint-key", &["get"]),
        ("leases.coordination.k8s.io", "", &["create"]),
        (
            "leases.coordination.k8s.io",
            "ecs-vnc-controller",
            &["get", "update"],
        ),
    ]);
    for ns in [&install.a.name, &install.b.name] {
        assert_eq!(
            beyond_baseline(ns),
            watched,
            "in the watched namespace {ns}"
        );
    }
    assert_eq!(
        beyond_baseline(&install.own.name),
        own,
        "in its own namespace"
    );
    for ns in [install.other.name.as_str(), "kube-system", "default"] {
        assert_eq!(beyond_baseline(ns), BTreeSet::new(), "in {ns}, not watched");
    }
    // The same, one question at a time, as an auditor would ask.
    let (a, other) = (
        Some(install.a.name.as_str()),
        Some(install.other.name.as_str()),
    );
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
    ] {
        assert!(
            can_i(&user, verb, resource, a),
            "{verb} {resource} in a watched namespace"
        );
        assert!(
            !can_i(&user, verb, resource, other),
            "{verb} {resource} in another namespace"
        );
        assert!(
            !can_i(&user, verb, resource, Some("kube-system")),
            "{verb} {resource} in kube-system"
        );
        assert!(
            !can_i(&user, verb, resource, None),
            "{verb} {resource} in all namespaces"
        );
    }
    assert!(!can_i(&user, "list", "vncpasswords.ecsvnc.io", None));
    assert!(!can_i(&user, "list", "vncpasswords.ecsvnc.io", other));
    assert!(!can_i(&user, "create", "serviceaccounts/token", other));
    install.delete().await;
}

/// The controller does its whole job with nothing but namespaced mode's RBAC (as the chart's
/// ServiceAccount, by impersonation, with leader election on its Lease): objects in both watched
/// namespaces are applied (one with a generated password Secret, one rotated through the Secret
/// watch), and one in a namespace it does not watch is never touched.
#[tokio::test]
async fn the_controller_does_its_job_with_namespaced_rbac_only() {
    use ecs_vnc_controller::simulator::Simulator;
    use support::controller::*;
    let admin = support::client().await;
    let install = Install::new(&admin).await;
    let sim = Simulator::start(
        "127.0.0.1:0".parse().unwrap(),
        support::sim::fleet(
            "LTAInamespaced",
            "namespaced-secret",
            ["i-nsd00000000a", "i-nsd00000000b", "i-nsd00000000c"].map(|i| (i.to_string(), true)),
        ),
    )
    .await
    .expect("simulator");
    let objects = [
        (&install.other, "i-nsd00000000c", false),
        (&install.a, "i-nsd00000000a", false),
        (&install.b, "i-nsd00000000b", true),
    ];
    for (ns, instance, generate) in objects {
        put_secret(
            &admin,
            &ns.name,
            "creds",
            &[
                ("accessKeyId", "LTAInamespaced"),
                ("accessKeySecret", "namespaced-secret"),
            ],
        )
        .await;
        let mut spec = serde_json::json!({
            "regionId": "cn-hangzhou", "instanceId": instance,
            "passwordSecretRef": {"name": "web-vnc"}, "credentials": {"secretRef": {"name": "creds"}},
        });
        if generate {
            spec["passwordGeneration"] = serde_json::json!({});
        } else {
            put_secret(&admin, &ns.name, "web-vnc", &[("password", "Nsd123")]).await;
        }
        put_vncpassword(&admin, &ns.name, "web", spec).await;
    }
    let as_sa = support::service_account_client(&install.own.name, &install.service_account).await;
    let mut options = ControllerOptions::new(as_sa, sim.url());
    options.controller_namespace = Some(install.own.name.clone());
    options.flags = vec![
        format!("--watch-namespaces={},{}", install.a.name, install.b.name),
        "--leader-elect".into(),
        "--lease-duration=3".into(),
        "--renew-deadline=2".into(),
        "--retry-period=0.5".into(),
        "--leader-identity=namespaced-test".into(),
    ];
    let controller = start_controller(options).await;
    wait_ready(&admin, &install.a.name, "web", Duration::from_secs(60)).await;
    wait_ready(&admin, &install.b.name, "web", Duration::from_secs(60)).await;
    // The generated password Secret, created under the Role (and the admission policy).
    let generated = Api::<Secret>::namespaced(admin.clone(), &install.b.name)
        .get("web-vnc")
        .await
        .expect("the generated Secret");
    assert_eq!(
        generated.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
        "ecs-vnc-controller"
    );
    // A rotation reaches ECS through the namespaced Secret watch.
    put_secret(
        &admin,
        &install.a.name,
        "web-vnc",
        &[("password", "Nsd456")],
    )
    .await;
    support::eventually("the rotated password", Duration::from_secs(30), || async {
        (sim.state()
            .instance("i-nsd00000000a")
            .and_then(|i| i.set_password)
            .as_deref()
            == Some("Nsd456"))
        .then_some(())
    })
    .await;
    // The object outside the watched namespaces, created first, was never looked at.
    assert!(
        status(&admin, &install.other.name, "web").await.is_none(),
        "a VncPassword outside watchNamespaces got a status"
    );
    assert_eq!(
        sim.state()
            .instance("i-nsd00000000c")
            .and_then(|i| i.set_password),
        None
    );
    // Its Lease and fingerprint key, in its own namespace.
    support::kubectl_ok(&[
        "get",
        "lease",
        "ecs-vnc-controller",
        "-n",
        &install.own.name,
    ]);
    support::kubectl_ok(&[
        "get",
        "secret",
        "ecs-vnc-controller-fingerprint-key",
        "-n",
        &install.own.name,
    ]);
    controller.stop().await;
    install.delete().await;
}
