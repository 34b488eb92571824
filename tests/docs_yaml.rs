//! Docs that cannot rot: every ```yaml block of `docs/**/*.md` and every `examples/**/*.yaml` is
//! applied with `kubectl apply --dry-run=server` against the test API server (the VncPassword CRD
//! installed by `support::kubeconfig()`), so the API server's schema, the CRD's CEL rules and
//! defaulting judge them as they would judge a user's `kubectl apply`.
//!
//! - A directory of `examples/` with a `kustomization.yaml` is built with `kubectl kustomize` and
//!   its output applied the same way (its other files are parts of the build, not applied alone).
//! - Kinds whose CRDs the test API server does not have (external-secrets.io ExternalSecret,
//!   Argo CD Application, Flux Kustomization and GitRepository) are parsed and checked by hand:
//!   apiVersion, kind, their required fields, and what they point at in this repository (a path
//!   that exists, a VncPassword the build holds, the Secret a VncPassword names).
//! - A block must hold whole Kubernetes objects (apiVersion, kind, metadata.name): a fragment in a
//!   ```yaml block fails; show fragments in another language or as a whole object.
//! - Every namespace the objects name is created first when missing (for real, labelled
//!   `ecsvnc.io/test=true` like the suite's other namespaces), since a dry run of a Namespace
//!   creates nothing; an existing namespace is left as it is.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml::Value;

/// One YAML text to check and where it came from (`file:line`).
#[derive(Debug, Clone)]
struct Source {
    origin: String,
    text: String,
}

/// The ```yaml blocks of a Markdown text: (line of the opening fence, 1-based; the block's text
/// with the fence's indentation removed). An unclosed fence is an error.
fn yaml_blocks(markdown: &str) -> Result<Vec<(usize, String)>, String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(info) = trimmed
            .strip_prefix("```")
            .or_else(|| trimmed.strip_prefix("~~~"))
        else {
            continue;
        };
        let fence = &trimmed[..3];
        let language = info.split_whitespace().next().unwrap_or("");
        let mut text = String::new();
        let mut closed = false;
        for (_, body) in lines.by_ref() {
            if body.trim() == fence {
                closed = true;
                break;
            }
            let strip = body.len() - body.trim_start().len();
            text.push_str(&body[strip.min(indent)..]);
            text.push('\n');
        }
        if !closed {
            return Err(format!(
                "the code block opened on line {} is never closed",
                n + 1
            ));
        }
        if language == "yaml" || language == "yml" {
            blocks.push((n + 1, text));
        }
    }
    Ok(blocks)
}

fn files_under(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(support::repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every ```yaml block of docs/**/*.md.
fn docs_sources() -> Vec<Source> {
    let mut out = Vec::new();
    for path in files_under(&support::repo_root().join("docs"), "md") {
        let text = std::fs::read_to_string(&path).expect("read a docs page");
        let blocks = yaml_blocks(&text).unwrap_or_else(|e| panic!("{}: {e}", relative(&path)));
        for (line, text) in blocks {
            out.push(Source {
                origin: format!("{}:{line}", relative(&path)),
                text,
            });
        }
    }
    out
}

/// The directories of examples/ that are kustomizations.
fn kustomization_dirs() -> Vec<PathBuf> {
    files_under(&support::repo_root().join("examples"), "yaml")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect()
}

/// Every examples/**/*.yaml outside a kustomization's directory.
fn example_sources() -> Vec<Source> {
    let kustomizations = kustomization_dirs();
    files_under(&support::repo_root().join("examples"), "yaml")
        .into_iter()
        .filter(|p| !kustomizations.iter().any(|d| p.starts_with(d)))
        .map(|p| Source {
            origin: relative(&p),
            text: std::fs::read_to_string(&p).expect("read an example"),
        })
        .collect()
}

/// The documents of a YAML text (empty ones left out).
fn documents(source: &Source) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&source.text) {
        let value = Value::deserialize(document).map_err(|e| format!("not YAML: {e}"))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    if out.is_empty() {
        return Err("holds no object".into());
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = v;
    for key in path {
        at = at.get(*key)?;
    }
    at.as_str()
}

fn need<'a>(v: &'a Value, path: &[&str], errors: &mut Vec<String>) -> Option<&'a str> {
    let found = str_at(v, path).filter(|s| !s.trim().is_empty());
    if found.is_none() {
        errors.push(format!(
            "{} is required (a non-empty string)",
            path.join(".")
        ));
    }
    found
}

fn kind_of(v: &Value) -> (String, String) {
    (
        str_at(v, &["apiVersion"]).unwrap_or("").to_string(),
        str_at(v, &["kind"]).unwrap_or("").to_string(),
    )
}

/// The objects a Kubernetes object needs: apiVersion, kind, metadata.name.
fn check_object_shape(v: &Value) -> Result<(), String> {
    let mut errors = Vec::new();
    need(v, &["apiVersion"], &mut errors);
    need(v, &["kind"], &mut errors);
    need(v, &["metadata", "name"], &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not a whole Kubernetes object ({}): a ```yaml block must hold whole objects",
            errors.join("; ")
        ))
    }
}

/// Kinds the test API server has no CRD for, checked by hand.
fn checked_by_hand(v: &Value) -> bool {
    let (api_version, kind) = kind_of(v);
    matches!(
        (api_version.as_str(), kind.as_str()),
        ("external-secrets.io/v1", "ExternalSecret")
            | ("argoproj.io/v1alpha1", "Application")
            | ("kustomize.toolkit.fluxcd.io/v1", "Kustomization")
            | ("source.toolkit.fluxcd.io/v1", "GitRepository")
    )
}

/// A path of this repository named by a GitOps object: it must exist and be a kustomization.
fn check_repo_path(path: &str, errors: &mut Vec<String>) -> Option<PathBuf> {
    let dir = support::repo_root().join(path.trim_start_matches("./"));
    if !dir.join("kustomization.yaml").is_file() {
        errors.push(format!(
            "path {path:?} is not a directory of this repository with a kustomization.yaml"
        ));
        return None;
    }
    Some(dir)
}

/// `kubectl kustomize DIR`, parsed.
fn kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl is not installed");
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {} failed:\n{}",
            relative(dir),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    documents(&Source {
        origin: relative(dir),
        text: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// The hand checks of one object of a kind without a CRD here; `siblings` are the other objects
/// of the same block or file.
fn check_by_hand(v: &Value, siblings: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    need(v, &["metadata", "name"], &mut errors);
    let (_, kind) = kind_of(v);
    match kind.as_str() {
        "ExternalSecret" => {
            // external-secrets.io/v1: spec.secretStoreRef, spec.target, spec.data or dataFrom.
            need(v, &["spec", "secretStoreRef", "name"], &mut errors);
            match str_at(v, &["spec", "secretStoreRef", "kind"]) {
                Some("SecretStore" | "ClusterSecretStore") => {}
                other => errors.push(format!(
                    "spec.secretStoreRef.kind must be SecretStore or ClusterSecretStore, not {other:?}"
                )),
            }
            let target = need(v, &["spec", "target", "name"], &mut errors);
            let data = v
                .get("spec")
                .and_then(|s| s.get("data"))
                .and_then(Value::as_sequence);
            let keys: Vec<&str> = data
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    if str_at(d, &["remoteRef", "key"]).is_none() {
                        errors.push("every spec.data entry needs remoteRef.key".into());
                    }
                    let key = str_at(d, &["secretKey"]);
                    if key.is_none() {
                        errors.push("every spec.data entry needs secretKey".into());
                    }
                    key
                })
                .collect();
            if keys.is_empty() && v.get("spec").and_then(|s| s.get("dataFrom")).is_none() {
                errors.push("spec.data or spec.dataFrom is required".into());
            }
            // The Secret it produces is the one a VncPassword of the same file names.
            if let Some(target) = target {
                let namespace = str_at(v, &["metadata", "namespace"]);
                let users: Vec<&Value> = siblings
                    .iter()
                    .filter(|s| kind_of(s).1 == "VncPassword")
                    .filter(|s| str_at(s, &["metadata", "namespace"]) == namespace)
                    .filter(|s| str_at(s, &["spec", "passwordSecretRef", "name"]) == Some(target))
                    .collect();
                if users.is_empty() {
                    errors.push(format!(
                        "no VncPassword of this file names the Secret {target:?} it produces"
                    ));
                }
                for user in users {
                    let key =
                        str_at(user, &["spec", "passwordSecretRef", "key"]).unwrap_or("password");
                    if !keys.contains(&key) {
                        errors.push(format!(
                            "the VncPassword reads the key {key:?}, which spec.data does not produce"
                        ));
                    }
                }
            }
        }
        "Application" => {
            // argoproj.io/v1alpha1: spec.project, spec.source (or sources), spec.destination.
            need(v, &["metadata", "namespace"], &mut errors);
            need(v, &["spec", "project"], &mut errors);
            need(v, &["spec", "source", "repoURL"], &mut errors);
            if let Some(path) = need(v, &["spec", "source", "path"], &mut errors) {
                check_repo_path(path, &mut errors);
            }
            if str_at(v, &["spec", "destination", "server"]).is_none()
                && str_at(v, &["spec", "destination", "name"]).is_none()
            {
                errors.push("spec.destination.server or spec.destination.name is required".into());
            }
        }
        "GitRepository" => {
            need(v, &["spec", "url"], &mut errors);
            need(v, &["spec", "interval"], &mut errors);
        }
        "Kustomization" => {
            // kustomize.toolkit.fluxcd.io/v1: interval, prune and sourceRef are required.
            need(v, &["spec", "interval"], &mut errors);
            need(v, &["spec", "sourceRef", "name"], &mut errors);
            match str_at(v, &["spec", "sourceRef", "kind"]) {
                Some("GitRepository" | "OCIRepository" | "Bucket" | "ExternalArtifact") => {}
                other => errors.push(format!(
                    "spec.sourceRef.kind {other:?} is not a Flux source"
                )),
            }
            if v.get("spec")
                .and_then(|s| s.get("prune"))
                .and_then(Value::as_bool)
                .is_none()
            {
                errors.push("spec.prune (a boolean) is required".into());
            }
            let wait = v
                .get("spec")
                .and_then(|s| s.get("wait"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let checks = v
                .get("spec")
                .and_then(|s| s.get("healthChecks"))
                .and_then(Value::as_sequence);
            if wait && checks.is_some() {
                errors.push("Flux ignores spec.healthChecks when spec.wait is true".into());
            }
            let built = str_at(v, &["spec", "path"])
                .and_then(|p| check_repo_path(p, &mut errors))
                .map(|dir| kustomize(&dir));
            for check in checks.into_iter().flatten() {
                let (api_version, kind) = kind_of(check);
                let name = str_at(check, &["name"]);
                let namespace = str_at(check, &["namespace"]);
                if api_version.is_empty() || kind.is_empty() || name.is_none() {
                    errors.push("every healthChecks entry needs apiVersion, kind and name".into());
                    continue;
                }
                let Some(Ok(objects)) = &built else { continue };
                let found = objects.iter().any(|o| {
                    kind_of(o) == (api_version.clone(), kind.clone())
                        && str_at(o, &["metadata", "name"]) == name
                        && str_at(o, &["metadata", "namespace"]) == namespace
                });
                if !found {
                    errors.push(format!(
                        "healthChecks names {kind} {namespace:?}/{name:?}, which the build of spec.path does not hold"
                    ));
                }
            }
            if let Some(Err(e)) = built {
                errors.push(e);
            }
            for dependency in v
                .get("spec")
                .and_then(|s| s.get("dependsOn"))
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let name = str_at(dependency, &["name"]);
                let known = siblings
                    .iter()
                    .any(|s| kind_of(s) == kind_of(v) && str_at(s, &["metadata", "name"]) == name);
                if !known {
                    errors.push(format!(
                        "dependsOn names {name:?}, no Kustomization of this file"
                    ));
                }
            }
        }
        _ => unreachable!("only kinds of checked_by_hand"),
    }
    errors
}

/// The Secrets a VncPassword of a kustomize build names must be in the build (unless the
/// controller generates it): a secretGenerator's hash suffix must reach the VncPassword.
fn check_build_references(objects: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let has = |kind: &str, namespace: Option<&str>, name: &str| {
        objects.iter().any(|o| {
            kind_of(o).1 == kind
                && str_at(o, &["metadata", "namespace"]) == namespace
                && str_at(o, &["metadata", "name"]) == Some(name)
        })
    };
    for vnc in objects.iter().filter(|o| kind_of(o).1 == "VncPassword") {
        let namespace = str_at(vnc, &["metadata", "namespace"]);
        let spec = vnc.get("spec");
        let generated = spec.and_then(|s| s.get("passwordGeneration")).is_some();
        if let Some(name) = str_at(vnc, &["spec", "passwordSecretRef", "name"])
            && !generated
            && !has("Secret", namespace, name)
        {
            errors.push(format!(
                "VncPassword {}/{} names the Secret {name:?}, which the build does not hold",
                namespace.unwrap_or(""),
                str_at(vnc, &["metadata", "name"]).unwrap_or("")
            ));
        }
        if let Some(name) = str_at(vnc, &["spec", "credentials", "secretRef", "name"])
            && !has("Secret", namespace, name)
        {
            errors.push(format!(
                "credentials.secretRef {name:?} is not in the build"
            ));
        }
        if let Some(name) = str_at(vnc, &["spec", "credentials", "serviceAccountRef", "name"])
            && !has("ServiceAccount", namespace, name)
        {
            errors.push(format!(
                "credentials.serviceAccountRef {name:?} is not in the build"
            ));
        }
    }
    errors
}

/// Creates every namespace the objects live in (or are), so that their dry runs can be admitted.
fn create_namespaces(objects: &[Value]) {
    let mut names = BTreeSet::new();
    for o in objects {
        if let Some(ns) = str_at(o, &["metadata", "namespace"]) {
            names.insert(ns.to_string());
        }
        if kind_of(o) == ("v1".to_string(), "Namespace".to_string())
            && let Some(name) = str_at(o, &["metadata", "name"])
        {
            names.insert(name.to_string());
        }
    }
    for name in names {
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"ecsvnc.io/test": "true"}},
        });
        // Created only when missing (labelled as the suite's namespaces are): on a shared cluster
        // (TEST_KUBECONFIG) an existing namespace is left as it is.
        match kubectl_with_file(&["create"], &manifest.to_string()) {
            Ok(_) => {}
            Err(e) if e.contains("AlreadyExists") || e.contains("already exists") => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }
}

/// `kubectl apply --server-side --dry-run=server -f FILE` of a YAML (or JSON) text.
fn dry_run(text: &str) -> Result<String, String> {
    kubectl_with_file(
        &[
            "apply",
            "--server-side",
            "--field-manager=docs-yaml-test",
            "--dry-run=server",
        ],
        text,
    )
}

/// `kubectl ARGS -f FILE`, FILE holding `text`: its standard output, or its standard error.
fn kubectl_with_file(args: &[&str], text: &str) -> Result<String, String> {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write temp file");
    let path = file.path().to_string_lossy().into_owned();
    let mut args = args.to_vec();
    args.extend(["-f", &path]);
    let out = support::kubectl(&args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Checks one source: its objects' shape, the hand-checked kinds by hand, the rest by the API
/// server (one dry run for the whole source, as a user would apply it). The errors, by origin.
fn check_source(source: &Source, built_by_kustomize: bool) -> Vec<String> {
    let objects = match documents(source) {
        Ok(objects) => objects,
        Err(e) => return vec![format!("{}: {e}", source.origin)],
    };
    let mut errors = Vec::new();
    let mut served = Vec::new();
    for object in &objects {
        if let Err(e) = check_object_shape(object) {
            errors.push(format!("{}: {e}", source.origin));
            continue;
        }
        let (api_version, kind) = kind_of(object);
        if api_version.starts_with("kustomize.config.k8s.io/") && !built_by_kustomize {
            errors.push(format!(
                "{}: a kustomization belongs in a kustomization.yaml of examples/ (built by this test), not here",
                source.origin
            ));
        } else if checked_by_hand(object) {
            for e in check_by_hand(object, &objects) {
                errors.push(format!("{}: {kind} {api_version}: {e}", source.origin));
            }
        } else {
            served.push(object.clone());
        }
    }
    if built_by_kustomize {
        errors.extend(
            check_build_references(&objects)
                .into_iter()
                .map(|e| format!("{}: {e}", source.origin)),
        );
    }
    if !served.is_empty() {
        create_namespaces(&served);
        let text = served
            .iter()
            .map(|o| serde_yaml::to_string(o).expect("YAML"))
            .collect::<Vec<_>>()
            .join("---\n");
        if let Err(e) = dry_run(&text) {
            errors.push(format!(
                "{}: kubectl apply --dry-run=server refused it:\n{e}",
                source.origin
            ));
        }
    }
    errors
}

fn assert_all_valid(sources: &[Source], built_by_kustomize: bool) {
    let errors: Vec<String> = sources
        .iter()
        .flat_map(|s| check_source(s, built_by_kustomize))
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} YAML sources are invalid:\n\n{}",
        errors.len(),
        sources.len(),
        errors.join("\n\n")
    );
}

#[test]
fn every_yaml_block_of_the_docs_applies() {
    let sources = docs_sources();
    assert!(
        sources.len() >= 5,
        "only {} ```yaml blocks found under docs/: is the extractor broken?",
        sources.len()
    );
    assert_all_valid(&sources, false);
}

#[test]
fn every_example_applies() {
    let sources = example_sources();
    assert!(
        sources.len() >= 10,
        "only {} example files found: is the walk broken?",
        sources.len()
    );
    assert_all_valid(&sources, false);
}

#[test]
fn every_example_kustomization_builds_and_its_output_applies() {
    let dirs = kustomization_dirs();
    assert!(
        dirs.len() >= 2,
        "only {} kustomizations found under examples/",
        dirs.len()
    );
    let mut sources = Vec::new();
    for dir in dirs {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl is not installed");
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed:\n{}",
            relative(&dir),
            String::from_utf8_lossy(&out.stderr)
        );
        sources.push(Source {
            origin: format!("kubectl kustomize {}", relative(&dir)),
            text: String::from_utf8_lossy(&out.stdout).into_owned(),
        });
    }
    assert_all_valid(&sources, true);
}

/// The checker is not vacuous: what the API server or the CRD refuses, it reports.
#[test]
fn an_invalid_object_is_reported() {
    let cases = [
        // The CRD's pattern: an instance ID starts with `i-`.
        "apiVersion: ecsvnc.io/v1alpha1\nkind: VncPassword\nmetadata: {name: bad, namespace: docs-yaml-self-test}\nspec: {regionId: cn-hangzhou, instanceId: web-1, passwordSecretRef: {name: s}}\n",
        // The CRD's CEL rule: rebootWindows only with rebootPolicy Automatic.
        "apiVersion: ecsvnc.io/v1alpha1\nkind: VncPassword\nmetadata: {name: bad, namespace: docs-yaml-self-test}\nspec: {regionId: cn-hangzhou, instanceId: i-bp67acfmxazb4ph0001, passwordSecretRef: {name: s}, rebootWindows: [{schedule: '0 2 * * SUN', duration: 2h}]}\n",
        // A field the schema does not know (server-side apply validates fields strictly).
        "apiVersion: ecsvnc.io/v1alpha1\nkind: VncPassword\nmetadata: {name: bad, namespace: docs-yaml-self-test}\nspec: {regionId: cn-hangzhou, instanceId: i-bp67acfmxazb4ph0001, passwordSecretRef: {name: s}, generatePasswords: true}\n",
        // A fragment, not an object.
        "credentials:\n  secretRef: {name: aliyun-credentials}\n",
        // A hand-checked kind without its required fields.
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: bad, namespace: docs-yaml-self-test}\nspec: {target: {name: s}}\n",
    ];
    for text in cases {
        let source = Source {
            origin: "self-test".into(),
            text: text.into(),
        };
        assert!(
            !check_source(&source, false).is_empty(),
            "this should have been refused:\n{text}"
        );
    }
}

#[test]
fn yaml_blocks_are_extracted_with_their_indentation_removed() {
    let md = "# T\n\n```yaml\na: 1\n```\n\n- item:\n\n  ```yaml\n  b: 2\n  c:\n    d: 3\n  ```\n\n```sh\nx: 1\n```\n";
    let blocks = yaml_blocks(md).unwrap();
    assert_eq!(
        blocks,
        [
            (3, "a: 1\n".to_string()),
            (9, "b: 2\nc:\n  d: 3\n".to_string())
        ]
    );
    assert!(yaml_blocks("```yaml\na: 1\n").is_err());
}

/// GitHub's anchor of a heading (the generated API reference makes its links the same way).
use support::api_reference::anchor;

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
        } else if !in_code && trimmed.starts_with('#') {
            out.insert(anchor(
                trimmed.trim_start_matches('#').replace('`', "").as_str(),
            ));
        }
    }
    out
}

/// A Markdown text without its code blocks and code spans, where `](` is text, not a link (a
/// pattern such as `^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$` in docs/reference/api.md).
fn without_code(markdown: &str) -> String {
    let mut prose = String::new();
    let mut in_block = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_block = !in_block;
        } else if !in_block {
            prose.push_str(line);
        }
        prose.push('\n');
    }
    // A code span opens with a run of backticks and closes at the next run of the same length.
    let mut out = String::with_capacity(prose.len());
    let mut rest = prose.as_str();
    while let Some(at) = rest.find('`') {
        out.push_str(&rest[..at]);
        let run = rest[at..].len() - rest[at..].trim_start_matches('`').len();
        let after = &rest[at + run..];
        let mut search = after;
        let close = loop {
            let Some(i) = search.find('`') else {
                break None;
            };
            let len = search[i..].len() - search[i..].trim_start_matches('`').len();
            let offset = after.len() - search.len() + i;
            if len == run {
                break Some(offset);
            }
            search = &search[i + len..];
        };
        match close {
            Some(offset) => {
                out.push(' ');
                rest = &after[offset + run..];
            }
            None => {
                out.push_str(&rest[at..at + run]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn code_is_not_searched_for_links() {
    assert_eq!(
        without_code("a `x](y)` b ``c ` ](d)`` [e](f)\n```\n[g](h)\n```\n"),
        "a   b   [e](f)\n\n\n\n"
    );
    assert_eq!(without_code("an ` alone [e](f)"), "an ` alone [e](f)\n");
}

/// Every relative link `](target)` of the user documentation and the root files this test
/// covers (README.md among them) points at a file that exists, and at a heading of it when it names
/// one.
#[test]
fn every_relative_link_of_the_docs_resolves() {
    let root = support::repo_root();
    let mut pages = files_under(&root.join("docs"), "md");
    for file in [
        "README.md",
        "examples/README.md",
        "SECURITY.md",
        "CONTRIBUTING.md",
    ] {
        pages.push(root.join(file));
    }
    let mut errors = Vec::new();
    for page in &pages {
        let text = without_code(&std::fs::read_to_string(page).expect("read a page"));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match target.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (target, None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !path.exists() {
                errors.push(format!("{}: {target}: no such file", relative(page)));
                continue;
            }
            if let Some(fragment) = fragment
                && path.extension().is_some_and(|e| e == "md")
            {
                let text = std::fs::read_to_string(&path).expect("read a linked page");
                if !anchors(&text).contains(fragment) {
                    errors.push(format!("{}: {target}: no such heading", relative(page)));
                }
            }
        }
    }
    assert!(errors.is_empty(), "broken links:\n{}", errors.join("\n"));
}

/// Every annotation and label `src/api.rs` declares, and the ECS tag of `src/controller/tenancy.rs`,
/// is in the reference page `docs/reference/annotations.md` (a new one fails here until listed).
#[test]
fn the_annotations_reference_lists_every_annotation_and_label() {
    let root = support::repo_root();
    let page = std::fs::read_to_string(root.join("docs/reference/annotations.md"))
        .expect("docs/reference/annotations.md");
    let mut declared = Vec::new();
    for file in ["src/api.rs", "src/controller/tenancy.rs"] {
        let source = std::fs::read_to_string(root.join(file)).expect("read the source");
        for line in source.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("pub const ") else {
                continue;
            };
            let is_key = ["ANNOTATION_", "LABEL_", "NAMESPACE_TAG"]
                .iter()
                .any(|p| rest.starts_with(p));
            if let Some(value) = rest
                .split_once("&str = \"")
                .and_then(|(_, v)| v.strip_suffix("\";"))
                .filter(|_| is_key)
            {
                declared.push(value.to_string());
            }
        }
    }
    assert!(
        declared.len() >= 12,
        "only {declared:?} found in src/api.rs: is the scan broken?"
    );
    let missing: Vec<&String> = declared
        .iter()
        .filter(|key| !page.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference/annotations.md does not list {missing:?}"
    );
}
