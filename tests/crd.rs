//! The checked-in CRD is exactly what `ecs-vnc-controller crd` prints, it carries what users and
//! the API server rely on, and `docs/reference/api.md` is generated from it.

use std::process::Command;

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let generated = ecs_vnc_controller::api::crd_yaml().expect("render CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/vncpassword.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/vncpassword.yaml exists");
    assert!(
        generated == checked_in,
        "crds/vncpassword.yaml is stale: run `cargo run --bin ecs-vnc-controller -- crd > crds/vncpassword.yaml`"
    );
}

/// `docs/reference/api.md` after its intro is generated from every CRD in `crds/`
/// (`support::api_reference`); it fails when they differ, and `UPDATE_GENERATED=1` rewrites it.
#[test]
fn api_reference_matches_the_checked_in_crds() {
    let root = support::repo_root();
    let path = root.join("docs/reference/api.md");
    let page = std::fs::read_to_string(&path).expect("docs/reference/api.md exists");
    let marker = support::api_reference::MARKER;
    let intro_end = page.find(marker).unwrap_or_else(|| {
        panic!("docs/reference/api.md lacks the line that starts its generated part:\n{marker}")
    }) + marker.len();
    let generated = support::api_reference::render(&root.join("crds"), "../../");
    if page[intro_end..] == generated {
        return;
    }
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&path, format!("{}{generated}", &page[..intro_end]))
            .expect("write docs/reference/api.md");
        return;
    }
    panic!(
        "docs/reference/api.md is stale (it is generated from crds/*.yaml): run UPDATE_GENERATED=1 cargo test --test crd api_reference"
    );
}

/// The generator takes every CustomResourceDefinition of the directory's `*.yaml` files in
/// file-name order (a second kind, several versions, a cluster scope), and nothing else.
#[test]
fn api_reference_renders_every_crd_in_file_name_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let crds = dir.path().join("crds");
    std::fs::create_dir(&crds).expect("crds/");
    std::fs::write(
        crds.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [b.yaml]\n",
    )
    .unwrap();
    // JSON is YAML.
    let schema = serde_json::json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.n > 0", "messageExpression": "\"n: \" + string(self.n)"}],
        "properties": {"n": {"type": "integer", "minimum": 1, "x-kubernetes-validations": [{"rule": "self < 9"}]}},
    }}});
    let crd = |kind: &str, scope: &str, versions: &[&str]| {
        let versions: Vec<_> = versions
            .iter()
            .enumerate()
            .map(|(i, name)| {
                serde_json::json!({"name": name, "served": true, "storage": i == 0,
                    "schema": {"openAPIV3Schema": schema}})
            })
            .collect();
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "x"},
            "spec": {"group": "example.com", "scope": scope, "versions": versions,
                "names": {"kind": kind, "plural": kind.to_lowercase()}},
        })
        .to_string()
    };
    std::fs::write(crds.join("b.yaml"), crd("Beta", "Cluster", &["v1", "v2"])).unwrap();
    std::fs::write(crds.join("a.yaml"), crd("Alpha", "Namespaced", &["v1"])).unwrap();
    let page = support::api_reference::render(&crds, "../");
    let alpha = page.find("\n## Alpha\n").expect("Alpha rendered");
    let beta = page.find("\n## Beta\n").expect("Beta rendered");
    assert!(alpha < beta, "file-name order:\n{page}");
    assert!(!page.contains("Kustomization"), "{page}");
    assert!(page.contains("| scope | Cluster |"), "{page}");
    assert!(page.contains("[crds/b.yaml](../crds/b.yaml)"), "{page}");
    // With several versions each heading names its version, so anchors stay apart.
    assert!(page.contains("#### `Beta.spec` (v1)") && page.contains("#### `Beta.spec` (v2)"));
    assert!(page.contains("#### `Alpha.spec`\n"), "{page}");
    assert!(
        page.contains("| `spec.n` | integer; minimum 1 | no |"),
        "{page}"
    );
    assert!(
        page.contains("- (message computed by `\"n: \" + string(self.n)`)"),
        "{page}"
    );
    assert!(page.contains("- `n`: failed rule: `self < 9`"), "{page}");
}

#[test]
fn checked_in_set_crd_matches_the_generated_one() {
    let generated = ecs_vnc_controller::api::set_crd_yaml().expect("render CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/vncpasswordset.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/vncpasswordset.yaml exists");
    assert!(
        generated == checked_in,
        "crds/vncpasswordset.yaml is stale: run `cargo run --bin ecs-vnc-controller -- crd --kind VncPasswordSet > crds/vncpasswordset.yaml`"
    );
}

#[test]
fn the_crd_subcommand_prints_the_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .arg("crd")
        .output()
        .expect("run the binary");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        ecs_vnc_controller::api::crd_yaml().expect("render")
    );
}

#[test]
fn the_crd_has_status_subresource_columns_and_validation() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&ecs_vnc_controller::api::crd_yaml().expect("render")).expect("yaml");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "vncpw");
    assert_eq!(crd["spec"]["names"]["categories"][0], "ecs");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Instance",
            "Region",
            "Ready",
            "Reason",
            "In-Effect",
            "Reboot-Required",
            "Message",
            "Age"
        ]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(required, ["instanceId", "passwordSecretRef", "regionId"]);
    assert!(spec["properties"]["instanceId"]["pattern"].is_string());
    assert!(spec["properties"]["regionId"]["pattern"].is_string());
    // Who names an instance is a field-selector list (the claim, without watching every object).
    assert_eq!(
        version["selectableFields"],
        serde_json::json!([{"jsonPath": ".spec.instanceId"}, {"jsonPath": ".spec.regionId"}])
    );
    assert_eq!(
        spec["properties"]["rebootPolicy"]["enum"],
        serde_json::json!(["Manual", "Automatic"])
    );
    for field in [
        "regionId",
        "instanceId",
        "passwordSecretRef",
        "passwordGeneration",
        "credentials",
        "rebootPolicy",
        "rebootWindows",
    ] {
        assert!(
            spec["properties"][field]["description"].is_string(),
            "{field} has no description for kubectl explain"
        );
    }
}

#[test]
fn the_deprecated_fields_say_so_and_the_status_is_grouped() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&ecs_vnc_controller::api::crd_yaml().expect("render")).expect("yaml");
    let version = &crd["spec"]["versions"][0];
    let message = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "Message")
        .expect("a Message column");
    assert_eq!(message["priority"], 1);
    let schema = &version["schema"]["openAPIV3Schema"]["properties"];
    for field in [
        "generatePassword",
        "rotationInterval",
        "credentialsSecretRef",
        "credentialsServiceAccountRef",
    ] {
        let description = schema["spec"]["properties"][field]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.starts_with("Deprecated: use "),
            "{field}: {description}"
        );
    }
    let status = &schema["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    for (group, field) in [
        ("applied", "time"),
        ("applied", "ecsTime"),
        ("instance", "startTimeAtApply"),
        ("instance", "restartObservedTime"),
        ("reboot", "requestedTime"),
        ("reboot", "nextWindow"),
        ("rotation", "nextTime"),
        ("stall", "checkedTime"),
    ] {
        assert_eq!(
            status[group]["properties"][field]["format"], "date-time",
            "{group}.{field}"
        );
    }
    // The flat fields of the previous version stay readable (not pruned), marked deprecated.
    for field in [
        "appliedPasswordFingerprint",
        "lastAppliedTime",
        "rebootRequestedTime",
        "lastHandledReconcileAt",
    ] {
        let description = status[field]["description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with("Deprecated"),
            "{field}: {description}"
        );
    }
}

mod support;

use kube::api::{Api, PostParams};

/// What the API server admits and refuses of the spec (the CRD's CEL rules and patterns), with
/// the message a user sees.
#[tokio::test]
async fn the_api_server_admits_the_new_shape_and_refuses_mixed_or_invalid_specs() {
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "crd-admission").await;
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::discovery::ApiResource {
            group: "ecsvnc.io".into(),
            version: "v1alpha1".into(),
            api_version: "ecsvnc.io/v1alpha1".into(),
            kind: "VncPassword".into(),
            plural: "vncpasswords".into(),
        },
    );
    let base = || {
        serde_json::json!({
            "regionId": "cn-hangzhou",
            "instanceId": "i-bp67acfmxazb4ph0001",
            "passwordSecretRef": {"name": "web-vnc"},
        })
    };
    let with = |extra: serde_json::Value| {
        let mut spec = base();
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    let admitted = [
        with(serde_json::json!({
            "passwordGeneration": {"rotationInterval": "720h", "secretDeletionPolicy": "Delete"},
            "credentials": {"secretRef": {"name": "c", "accessKeyIdKey": "id", "accessKeySecretKey": "s"}},
            "rebootPolicy": "Automatic",
            "rebootWindows": [{"schedule": "0 2 * * SUN", "duration": "2h", "timeZone": "Europe/Berlin"}],
        })),
        with(serde_json::json!({"passwordGeneration": {}})),
        with(
            serde_json::json!({"credentials": {"secretRef": {"name": "c", "credentialsFileKey": "credentials"}}}),
        ),
        with(serde_json::json!({"credentials": {"serviceAccountRef": {"name": "sa"}}})),
        // The deprecated spelling, alone, is still accepted.
        with(
            serde_json::json!({"generatePassword": true, "rotationInterval": "720h", "credentialsSecretRef": {"name": "c"}}),
        ),
    ];
    for (i, spec) in admitted.into_iter().enumerate() {
        let obj = serde_json::json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"name": format!("ok-{i}")}, "spec": spec,
        });
        let dynamic: kube::api::DynamicObject =
            serde_json::from_value(obj.clone()).expect("object");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("ok-{i} refused: {e}\n{obj}"));
    }
    let refused = [
        (
            with(serde_json::json!({"generatePassword": true, "passwordGeneration": {}})),
            "generatePassword is deprecated and cannot be combined with passwordGeneration",
        ),
        (
            with(
                serde_json::json!({"generatePassword": true, "rotationInterval": "720h", "passwordGeneration": {}}),
            ),
            "rotationInterval is deprecated and cannot be combined with passwordGeneration",
        ),
        (
            with(
                serde_json::json!({"credentialsSecretRef": {"name": "c"}, "credentials": {"secretRef": {"name": "d"}}}),
            ),
            "credentialsSecretRef is deprecated and cannot be combined with credentials",
        ),
        (
            with(
                serde_json::json!({"credentialsServiceAccountRef": {"name": "sa"}, "credentials": {"serviceAccountRef": {"name": "sa"}}}),
            ),
            "credentialsServiceAccountRef is deprecated and cannot be combined with credentials",
        ),
        (
            with(serde_json::json!({"credentials": {}})),
            "set exactly one of credentials.secretRef and credentials.serviceAccountRef",
        ),
        (
            with(
                serde_json::json!({"credentials": {"secretRef": {"name": "c"}, "serviceAccountRef": {"name": "sa"}}}),
            ),
            "set exactly one of credentials.secretRef and credentials.serviceAccountRef",
        ),
        (
            with(
                serde_json::json!({"credentials": {"secretRef": {"name": "c", "credentialsFileKey": "f", "accessKeyIdKey": "id"}}}),
            ),
            "credentialsFileKey cannot be combined",
        ),
        (
            with(serde_json::json!({"passwordGeneration": {"rotationInterval": "30m"}})),
            "rotationInterval must be between 1h and 8784h",
        ),
        (
            with(serde_json::json!({"passwordGeneration": {"secretDeletionPolicy": "Orphan"}})),
            "secretDeletionPolicy",
        ),
        (
            with(
                serde_json::json!({"passwordGeneration": {}, "passwordSecretRef": {"name": "w", "key": "previous"}}),
            ),
            "the key 'previous' is reserved",
        ),
        (
            with(
                serde_json::json!({"rebootWindows": [{"schedule": "0 2 * * SUN", "duration": "2h"}]}),
            ),
            "rebootWindows needs rebootPolicy: Automatic",
        ),
        (
            with(
                serde_json::json!({"rebootPolicy": "Automatic", "rebootWindows": [{"schedule": "0 2 * *", "duration": "2h"}]}),
            ),
            "schedule",
        ),
        (
            with(
                serde_json::json!({"rebootPolicy": "Automatic", "rebootWindows": [{"schedule": "0 2 * * SUN;", "duration": "2h"}]}),
            ),
            "schedule",
        ),
        (
            with(
                serde_json::json!({"rebootPolicy": "Automatic", "rebootWindows": [{"schedule": "0 2 * * SUN", "duration": "2h", "timeZone": "Europe/../etc"}]}),
            ),
            "timeZone",
        ),
    ];
    for (i, (spec, message)) in refused.into_iter().enumerate() {
        let obj = serde_json::json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"name": format!("bad-{i}")}, "spec": spec,
        });
        let dynamic: kube::api::DynamicObject =
            serde_json::from_value(obj.clone()).expect("object");
        match api.create(&PostParams::default(), &dynamic).await {
            Err(kube::Error::Api(s)) => assert!(
                s.code == 422 && s.message.contains(message),
                "bad-{i}: expected a refusal saying {message:?}, got {}: {}",
                s.code,
                s.message
            ),
            other => panic!("bad-{i} was not refused: {other:?}\n{obj}"),
        }
    }
    ns.delete().await;
}

/// `passwordGeneration` is atomic for server-side apply: a GitOps tool that applies
/// `passwordGeneration: {}` after `{secretDeletionPolicy: Delete}` keeps generation on, with the
/// default policy (a granular object was left `null`, which turned generation off).
#[tokio::test]
async fn applying_an_emptied_password_generation_keeps_it_on() {
    use kube::api::{Patch, PatchParams};
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "crd-ssa").await;
    let api: Api<ecs_vnc_controller::api::VncPassword> = Api::namespaced(client.clone(), &ns.name);
    let apply = |generation: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"name": "web"},
            "spec": {"regionId": "cn-hangzhou", "instanceId": "i-bp67acfmxazb4ph0001",
                     "passwordSecretRef": {"name": "web-vnc"}, "passwordGeneration": generation},
        })
    };
    let params = PatchParams::apply("gitops");
    let mut seen = Vec::new();
    for generation in [
        serde_json::json!({"secretDeletionPolicy": "Delete"}),
        serde_json::json!({}),
        serde_json::json!({"rotationInterval": "24h"}),
        serde_json::json!({}),
    ] {
        let obj = api
            .patch("web", &params, &Patch::Apply(apply(generation)))
            .await
            .expect("server-side apply");
        seen.push(obj.spec.password_generation.clone());
    }
    use ecs_vnc_controller::api::{PasswordGeneration, SecretDeletionPolicy::*};
    let g = |rotation: Option<&str>, policy| {
        Some(PasswordGeneration {
            rotation_interval: rotation.map(str::to_string),
            secret_deletion_policy: policy,
        })
    };
    assert_eq!(
        seen,
        vec![
            g(None, Delete),
            g(None, Retain),
            g(Some("24h"), Retain),
            g(None, Retain)
        ]
    );
}

/// `spec.instanceId` and `spec.regionId` are selectable fields: the API server answers who names
/// an instance (as the controller asks when it decides a claim without watching every object),
/// with kubectl's `--field-selector` and with a list's `fieldSelector` alike.
#[tokio::test]
async fn the_api_server_lists_the_objects_naming_an_instance_by_field_selector() {
    use kube::api::ListParams;
    let client = support::client().await;
    let a = support::TestNamespace::new(&client, "crd-select-a").await;
    let b = support::TestNamespace::new(&client, "crd-select-b").await;
    let put = |ns: String, name: &'static str, region: &'static str, instance: &'static str| {
        let client = client.clone();
        async move {
            let api: Api<ecs_vnc_controller::api::VncPassword> = Api::namespaced(client, &ns);
            let obj = serde_json::from_value(serde_json::json!({
                "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
                "metadata": {"name": name},
                "spec": {"regionId": region, "instanceId": instance,
                         "passwordSecretRef": {"name": "web-vnc"}},
            }))
            .expect("a VncPassword");
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create");
        }
    };
    put(a.name.clone(), "one", "cn-hangzhou", "i-selected000001").await;
    put(b.name.clone(), "two", "cn-hangzhou", "i-selected000001").await;
    put(
        b.name.clone(),
        "elsewhere",
        "cn-beijing",
        "i-selected000001",
    )
    .await;
    put(a.name.clone(), "other", "cn-hangzhou", "i-notselected0001").await;
    let ours = |items: Vec<ecs_vnc_controller::api::VncPassword>| {
        let mut names: Vec<String> = items
            .into_iter()
            .filter(|o| {
                let ns = o.metadata.namespace.as_deref();
                ns == Some(&a.name) || ns == Some(&b.name)
            })
            .map(|o| {
                format!(
                    "{}/{}",
                    o.metadata.namespace.unwrap(),
                    o.metadata.name.unwrap()
                )
            })
            .collect();
        names.sort();
        names
    };
    let all: Api<ecs_vnc_controller::api::VncPassword> = Api::all(client.clone());
    let by_instance = all
        .list(&ListParams::default().fields("spec.instanceId=i-selected000001"))
        .await
        .expect("list by spec.instanceId");
    assert_eq!(
        ours(by_instance.items),
        [
            format!("{}/one", a.name),
            format!("{}/elsewhere", b.name),
            format!("{}/two", b.name)
        ]
    );
    let by_both = all
        .list(
            &ListParams::default()
                .fields("spec.instanceId=i-selected000001,spec.regionId=cn-hangzhou"),
        )
        .await
        .expect("list by both fields");
    assert_eq!(
        ours(by_both.items),
        [format!("{}/one", a.name), format!("{}/two", b.name)]
    );
    let namespaced: Api<ecs_vnc_controller::api::VncPassword> =
        Api::namespaced(client.clone(), &b.name);
    let in_b = namespaced
        .list(&ListParams::default().fields("spec.regionId=cn-beijing"))
        .await
        .expect("list in a namespace by spec.regionId");
    assert_eq!(ours(in_b.items), [format!("{}/elsewhere", b.name)]);
    // kubectl, as an operator would ask.
    let out = support::kubectl_ok(&[
        "get",
        "vncpasswords",
        "-A",
        "--field-selector",
        "spec.instanceId=i-selected000001,spec.regionId=cn-hangzhou",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
    ]);
    let mut names: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    names.sort();
    assert_eq!(
        names,
        [format!("{}/one", a.name), format!("{}/two", b.name)]
    );
    // A field that is not selectable is refused, not ignored.
    let refused = all
        .list(&ListParams::default().fields("spec.passwordSecretRef.name=web-vnc"))
        .await
        .expect_err("not a selectable field");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 400),
        "{refused:?}"
    );
    a.delete().await;
    b.delete().await;
}
