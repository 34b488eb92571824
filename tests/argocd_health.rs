//! The Argo CD health check `deploy/argocd/health.lua`, run by a real Lua interpreter on sample
//! VncPassword objects, the way Argo CD runs it: a global `obj` holding the live object, and the
//! script's returned table read for `status` and `message`.
//!
//! And the health table `docs/reference/health.md`: every state the controller can report, as the
//! executor writes it to a real kube-apiserver, judged by kstatus (what Flux uses,
//! `tests/kstatus/`) and by this Argo CD health check.
//!
//! Needs a Lua interpreter: `lua5.4`, `lua5.3` or `lua` on PATH (Debian: `apt-get install -y
//! lua5.4`), or its path in `LUA`. Without one these tests fail; they never skip.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn health_script() -> String {
    let path = repo_root().join("deploy/argocd/health.lua");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn lua_interpreter() -> PathBuf {
    if let Some(lua) = std::env::var_os("LUA").filter(|s| !s.is_empty()) {
        return PathBuf::from(lua);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["lua5.4", "lua5.3", "lua"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Lua interpreter found (looked for lua5.4, lua5.3, lua on PATH, and $LUA): \
         install one, e.g. `apt-get install -y lua5.4`, to test deploy/argocd/health.lua"
    );
}

/// A Lua string literal for `s`: decimal escapes for everything but printable ASCII, so any
/// message (quotes, newlines, UTF-8) round-trips byte for byte.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// `value` as a Lua table constructor, as Argo CD hands objects to health scripts: JSON objects
/// become tables keyed by string, arrays become sequences (1-based), null becomes nil (absent).
fn to_lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            assert!(
                !items.iter().any(Value::is_null),
                "null inside an array has no Lua sequence equivalent"
            );
            let items: Vec<String> = items.iter().map(to_lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), to_lua(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Health {
    status: String,
    message: String,
}

fn health_of_with(lua: &Path, obj: &Value) -> Health {
    // The script's top level `return hs` becomes the wrapping function's return value.
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{}\nend)()\n\
         assert(type(hs) == \"table\", \"health.lua must return a table\")\n\
         assert(type(hs.status) == \"string\", \"hs.status must be a string\")\n\
         assert(type(hs.message) == \"string\", \"hs.message must be a string\")\n\
         io.write(hs.status, \"\\n\", hs.message)\n",
        to_lua(obj),
        health_script()
    );
    let mut child = Command::new(lua)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", lua.display()));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(program.as_bytes())
        .expect("write the program to lua");
    let out = child.wait_with_output().expect("wait for lua");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}\nprogram:\n{program}",
        lua.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let (status, message) = stdout
        .split_once('\n')
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    Health {
        status: status.to_string(),
        message: message.to_string(),
    }
}

fn health_of(obj: &Value) -> Health {
    health_of_with(&lua_interpreter(), obj)
}

fn health(status: &str, message: &str) -> Health {
    Health {
        status: status.to_string(),
        message: message.to_string(),
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 2,
        "lastTransitionTime": "2026-01-02T03:04:05Z",
    })
}

/// A VncPassword at generation 2, as the API server returns it.
fn vncpassword(status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "ecsvnc.io/v1alpha1",
        "kind": "VncPassword",
        "metadata": {
            "name": "web-2",
            "namespace": "team-a",
            "generation": 2,
            "uid": "0b6f3c1e-0000-4000-8000-000000000002",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"ecsvnc.io/v1alpha1\"}\n"
            },
        },
        "spec": {
            "regionId": "cn-hangzhou",
            "instanceId": "i-bp67acfmxazb4ph0002",
            "passwordSecretRef": {"name": "web-2-vnc", "key": "password"},
            "credentials": {"secretRef": {"name": "aliyun-credentials"}},
            "rebootPolicy": "Manual",
        },
    });
    if let Some(status) = status {
        obj["status"] = status;
    }
    obj
}

fn with_conditions(conditions: Vec<Value>) -> Value {
    vncpassword(Some(json!({
        "observedGeneration": 2,
        "conditions": conditions,
    })))
}

const IN_EFFECT: &str =
    "the password is in effect: instance i-bp67acfmxazb4ph0002 restarted after it was applied";

#[test]
fn a_new_object_without_status_is_progressing_waiting_for_the_controller() {
    assert_eq!(
        health_of(&vncpassword(None)),
        health("Progressing", "Waiting for the controller")
    );
    assert_eq!(
        health_of(&vncpassword(Some(json!({})))),
        health("Progressing", "Waiting for the controller")
    );
    assert_eq!(
        health_of(&vncpassword(Some(
            json!({"observedGeneration": 2, "conditions": []})
        ))),
        health("Progressing", "Waiting for the controller")
    );
}

#[test]
fn status_of_an_older_generation_is_progressing_even_if_it_said_ready() {
    let mut obj = with_conditions(vec![condition("Ready", "True", "Applied", IN_EFFECT)]);
    obj["metadata"]["generation"] = json!(3);
    assert_eq!(
        health_of(&obj),
        health(
            "Progressing",
            "Waiting for the controller to observe generation 3"
        )
    );
    obj["status"]
        .as_object_mut()
        .expect("status is an object")
        .remove("observedGeneration");
    assert_eq!(health_of(&obj).status, "Progressing");
}

#[test]
fn ready_is_healthy_with_the_ready_message() {
    let obj = with_conditions(vec![
        condition("Ready", "True", "Applied", IN_EFFECT),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "False", "Restarted", IN_EFFECT),
        condition("Reconciling", "False", "Applied", ""),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(health_of(&obj), health("Healthy", IN_EFFECT));
}

#[test]
fn stalled_is_degraded_with_the_stalled_reason_and_message() {
    let message =
        "the password in Secret web-2-vnc key \"password\" must be exactly 6 letters or digits";
    let obj = with_conditions(vec![
        condition("Ready", "False", "InvalidPassword", message),
        condition(
            "Applied",
            "False",
            "InvalidPassword",
            "the Secret's current password has not been applied",
        ),
        condition("Reconciling", "False", "InvalidPassword", ""),
        condition("Stalled", "True", "InvalidPassword", message),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Degraded", &format!("InvalidPassword: {message}"))
    );
}

#[test]
fn a_pending_manual_reboot_is_healthy_saying_the_password_is_not_in_effect_yet() {
    let message = "instance i-bp67acfmxazb4ph0002 is not I/O-optimized: restart it for the new password to take effect";
    let obj = with_conditions(vec![
        condition("Ready", "True", "RebootRequired", message),
        condition("InEffect", "False", "RebootRequired", message),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "True", "RebootRequired", message),
        condition("Reconciling", "False", "RebootRequired", ""),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Healthy", &format!("RebootRequired: {message}"))
    );
}

#[test]
fn a_reboot_waiting_for_its_maintenance_window_is_healthy_saying_when() {
    let message = "instance i-1 is not I/O-optimized: RebootInstance waits for the next reboot window (spec.rebootWindows), which opens at 2026-12-06T02:00:00Z";
    let obj = with_conditions(vec![
        condition("Ready", "True", "RebootScheduled", message),
        condition("InEffect", "False", "RebootScheduled", message),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "True", "RebootRequired", message),
        condition("Reconciling", "False", "RebootScheduled", ""),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Healthy", &format!("RebootScheduled: {message}"))
    );
}

#[test]
fn an_imminent_or_requested_reboot_is_progressing() {
    let message = "RebootInstance was requested for instance i-1 at 2026-01-01T10:01:05Z; waiting for it to start again";
    let obj = with_conditions(vec![
        condition("Ready", "False", "RebootRequested", message),
        condition("InEffect", "False", "RebootRequested", message),
        condition("RebootRequired", "True", "RebootRequested", message),
        condition("Reconciling", "True", "RebootRequested", message),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Progressing", &format!("RebootRequested: {message}"))
    );
}

#[test]
fn a_reboot_that_was_never_observed_is_degraded_saying_what_to_check() {
    let message = "RebootInstance was requested for instance i-1 at 2026-01-01T10:01:05Z, but no restart has been seen since (--reboot-timeout): check the instance in the ECS console";
    let obj = with_conditions(vec![
        condition("Ready", "False", "RebootNotObserved", message),
        condition("InEffect", "False", "RebootNotObserved", message),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "True", "RebootRequested", message),
        condition("Reconciling", "False", "RebootNotObserved", ""),
        condition("Stalled", "True", "RebootNotObserved", message),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Degraded", &format!("RebootNotObserved: {message}"))
    );
}

#[test]
fn the_paused_annotation_is_suspended_whatever_the_status_says() {
    let mut obj = with_conditions(vec![condition("Ready", "True", "Applied", IN_EFFECT)]);
    obj["metadata"]["annotations"]["ecsvnc.io/paused"] = json!("true");
    let h = health_of(&obj);
    assert_eq!(h.status, "Suspended");
    assert!(h.message.starts_with("Paused"), "{h:?}");

    // Paused before the controller ever saw it (or while it is down).
    let mut fresh = vncpassword(None);
    fresh["metadata"]["annotations"]["ecsvnc.io/paused"] = json!("true");
    assert_eq!(health_of(&fresh).status, "Suspended");

    // Only "true" pauses.
    obj["metadata"]["annotations"]["ecsvnc.io/paused"] = json!("false");
    assert_eq!(health_of(&obj).status, "Healthy");
}

#[test]
fn a_ready_reason_of_paused_is_suspended() {
    let message = "ecsvnc.io/paused is \"true\": no ECS calls are made for this object until the annotation is removed";
    let obj = with_conditions(vec![
        condition("Ready", "True", "Paused", message),
        condition("Reconciling", "False", "Paused", ""),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Suspended", &format!("Paused: {message}"))
    );
}

#[test]
fn a_retry_after_a_transient_failure_is_progressing_with_the_ready_message() {
    let message = "ECS throttled the request (Throttling.User); retrying";
    let obj = with_conditions(vec![
        condition("Ready", "False", "Throttled", message),
        condition(
            "Applied",
            "False",
            "Throttled",
            "the Secret's current password has not been applied",
        ),
        condition("Reconciling", "True", "Throttled", message),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Progressing", &format!("Throttled: {message}"))
    );
}

#[test]
fn without_a_ready_message_progressing_falls_back_to_reconciling() {
    let obj = with_conditions(vec![
        condition("Ready", "Unknown", "Progressing", ""),
        condition("Reconciling", "True", "Applying", "applying the password"),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Progressing", "Applying: applying the password")
    );
    let obj = with_conditions(vec![condition("Stalled", "False", "AsExpected", "")]);
    assert_eq!(
        health_of(&obj),
        health("Progressing", "Waiting for the controller")
    );
}

#[test]
fn messages_with_quotes_newlines_and_unicode_arrive_intact() {
    let message = "bad \"value\"\\ with\nnewline and ünïcode ✓";
    let obj = with_conditions(vec![
        condition("Ready", "False", "EcsRejected", message),
        condition("Stalled", "True", "EcsRejected", message),
    ]);
    assert_eq!(
        health_of(&obj),
        health("Degraded", &format!("EcsRejected: {message}"))
    );
}

#[test]
fn the_argocd_cm_patch_carries_health_lua_verbatim() {
    let path = repo_root().join("deploy/argocd/argocd-cm-patch.yaml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let patch: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    assert_eq!(patch["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(patch["metadata"]["name"].as_str(), Some("argocd-cm"));
    for kind in ["VncPassword", "VncPasswordSet"] {
        let script = patch["data"][format!("resource.customizations.health.ecsvnc.io_{kind}")]
            .as_str()
            .unwrap_or_else(|| panic!("the health key Argo CD reads for ecsvnc.io/{kind}"));
        assert!(
            script == health_script(),
            "deploy/argocd/argocd-cm-patch.yaml differs from deploy/argocd/health.lua for {kind}: \
             copy health.lua into the patch (indented by 4 spaces)"
        );
    }
}

#[test]
fn the_json_to_lua_converter_round_trips() {
    let value = json!({"a": [1, 2, {"b": "x\"y"}], "n": null, "t": true, "f": -1.5});
    let program = format!(
        "local v = {}\nio.write(#v.a, ' ', v.a[3].b, ' ', tostring(v.n), ' ', tostring(v.t), ' ', v.f)",
        to_lua(&value)
    );
    let out = Command::new(lua_interpreter())
        .args(["-e", &program])
        .output()
        .expect("run lua");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3 x\"y nil true -1.5");
}

// ---------------------------------------------------------------------------------------------
// The health table: every state the controller reports, judged by kstatus and by Argo CD.

use std::collections::{BTreeMap, BTreeSet};

use ecs_vnc_controller::api::{FIELD_MANAGER, Reason, VncPassword, VncPasswordStatus};
use ecs_vnc_controller::controller::conditions;
use ecs_vnc_controller::controller::decide::{Failure, Pace, Phase, Waiting, conditions_for};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

const HEALTH_TABLE: &str = "docs/reference/health.md";

/// The reasons `Phase::Failed` carries with `Failure::Stalled`, as the controller builds them
/// (`decide::failure_from_ecs`, `reconcile/inputs.rs`, `reconcile/report.rs`, `tenancy.rs`,
/// `service_account.rs`, `plan.rs`; `InternalError` after a caught panic, `reconcile.rs`).
const STALLED: [Reason; 20] = [
    Reason::InvalidPassword,
    Reason::SecretNotFound,
    Reason::SecretKeyNotFound,
    Reason::InstanceNotFound,
    Reason::RegionNotFound,
    Reason::CredentialsNotFound,
    Reason::CredentialsNotAllowed,
    Reason::AuthFailed,
    Reason::DescribeNotAllowed,
    Reason::EcsRejected,
    Reason::SecretNotOwned,
    Reason::InvalidSpec,
    Reason::InstanceClaimed,
    Reason::ServiceAccountNotFound,
    Reason::RoleArnNotSet,
    Reason::RoleArnInvalid,
    Reason::OidcProviderNotConfigured,
    Reason::InternalError,
    Reason::InstanceNotAllowed,
    Reason::SecretTooLarge,
];

/// The reasons `Phase::Failed` carries with `Failure::Retry` (`decide::failure_from_ecs`; STS,
/// TokenRequest and credential-provider errors: one reason per cause).
const RETRIED: [Reason; 9] = [
    Reason::IncorrectInstanceStatus,
    Reason::OperationConflict,
    Reason::Throttled,
    Reason::EcsUnavailable,
    Reason::EcsUnknownError,
    Reason::StsUnavailable,
    Reason::TokenRequestFailed,
    Reason::TokenRequestForbidden,
    Reason::CredentialsFileUnreadable,
];

/// `Reason::ALL` values the controller never puts in a `Failure`: each is another phase's own, or
/// the reason of a condition other than `Ready` (the table says where, from what was stored).
/// Together with [`STALLED`] and [`RETRIED`] this is every reason; a new one must be placed.
const NEVER_A_FAILURE: [Reason; 11] = [
    Reason::Applied,
    Reason::RebootRequired,
    Reason::RebootScheduled,
    Reason::RebootRequested,
    Reason::RebootNotObserved,
    Reason::Restarted,
    Reason::IoOptimized,
    Reason::Paused,
    Reason::WaitingForRestart,
    Reason::NotApplied,
    Reason::AsExpected,
];

/// `Phase::Ready { how }` is only ever built with these (`plan.rs`).
const READY_HOW: [Reason; 2] = [Reason::IoOptimized, Reason::Restarted];

/// One state of the table and who must act on it.
struct Row {
    phase: Phase,
    who: &'static str,
    ender: Ender,
}

/// What ends a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ender {
    /// The controller's own work (retries, an imminent or requested reboot, an instance changing
    /// state): in progress for both judges.
    Controller,
    /// Only a person (a change, a restart, a RAM fix) or a reboot window that is closed now: no
    /// pipeline may wait on it (never InProgress / Progressing).
    PersonOrWindow,
    /// Nothing to end: done.
    Nothing,
}

fn stalled_who(reason: Reason) -> &'static str {
    match reason {
        Reason::InvalidPassword => {
            "the user: a password of 6 letters or digits in the Secret (ECS may want upper, lower and digit)"
        }
        Reason::SecretNotFound => {
            "the user: create the password Secret, or fix `passwordSecretRef`"
        }
        Reason::SecretKeyNotFound => {
            "the user: add the key to the Secret, or fix `passwordSecretRef.key`"
        }
        Reason::InstanceNotFound => {
            "the user (`instanceId`, `regionId`, credentials of the right account) or the cloud admin (the instance); ECS is asked again every 30 min"
        }
        Reason::RegionNotFound => {
            "the user: fix `regionId` (or the cloud admin enables it); asked again every 30 min"
        }
        Reason::CredentialsNotFound => {
            "the user: create the credentials Secret (with its keys), or fix `credentials.secretRef`"
        }
        Reason::CredentialsNotAllowed => {
            "the user: name credentials; or the operator: list the namespace in `--default-credentials-namespaces`"
        }
        Reason::AuthFailed => {
            "the cloud admin: the AccessKey, RAM policy or role trust; asked again every 30 min"
        }
        Reason::DescribeNotAllowed => {
            "the cloud admin: grant `ecs:DescribeInstances`; asked again every 30 min"
        }
        Reason::EcsRejected => {
            "the user: change what ECS refused (spec, Secret); or the operator: `--ecs-endpoint`"
        }
        Reason::SecretNotOwned => {
            "the user: delete that Secret, name another, or remove `passwordGeneration`"
        }
        Reason::InvalidSpec => "the user: fix the spec field the message names",
        Reason::InstanceClaimed => {
            "the user: delete one of the VncPasswords naming the instance (the next oldest with proven access takes over)"
        }
        Reason::ServiceAccountNotFound => "the user: create the ServiceAccount",
        Reason::RoleArnNotSet => "the user: annotate the ServiceAccount with `ecsvnc.io/role-arn`",
        Reason::RoleArnInvalid => {
            "the user: make `ecsvnc.io/role-arn` a RAM role ARN, `acs:ram::<account>:role/<name>`"
        }
        Reason::OidcProviderNotConfigured => {
            "the operator: start the controller with `--oidc-provider-arn`"
        }
        Reason::InternalError => {
            "the controller's maintainers: a bug, logged at error level; retried with backoff"
        }
        Reason::InstanceNotAllowed => {
            "the instance's owner: tag it `ecsvnc.io/namespace=<namespace>` in ECS; or the user: name credentials of the namespace"
        }
        Reason::SecretTooLarge => {
            "the user: keep only the password (or the AccessKey) in the Secret the message names"
        }
        other => panic!("{other} is not a stall reason"),
    }
}

fn retried_who(reason: Reason) -> &'static str {
    match reason {
        Reason::IncorrectInstanceStatus => {
            "nobody: retried with backoff until the instance's state allows the change"
        }
        Reason::OperationConflict => "nobody: retried with backoff after the other operation",
        Reason::Throttled => "nobody: retried with backoff",
        Reason::EcsUnavailable => "nobody: retried with backoff",
        Reason::EcsUnknownError => {
            "nobody at first (retried slowly); a person if it lasts: look the code up"
        }
        Reason::StsUnavailable => {
            "nobody: retried with backoff (check the egress to STS if it lasts)"
        }
        Reason::TokenRequestFailed => "nobody: retried with backoff",
        Reason::TokenRequestForbidden => {
            "the operator: let the controller create `serviceaccounts/token` (RBAC, `deploy/token-policy.yaml`); retried with backoff"
        }
        Reason::CredentialsFileUnreadable => {
            "the operator: mount the controller's credentials (or OIDC token) file; read again at every use"
        }
        other => panic!("{other} is not a retried reason"),
    }
}

/// Every state the controller reports: each `Phase` variant with every reason it carries.
fn health_rows() -> Vec<Row> {
    let at = || "2026-12-06T02:00:00Z".parse::<jiff::Timestamp>().unwrap();
    let mut rows = vec![Row {
        phase: Phase::Paused,
        who: "the user: remove the `ecsvnc.io/paused` annotation",
        ender: Ender::PersonOrWindow,
    }];
    for reason in STALLED {
        rows.push(Row {
            phase: Phase::Failed {
                failure: Failure::stalled(reason, format!("{reason}: what to change")),
                applied: false,
            },
            who: stalled_who(reason),
            ender: Ender::PersonOrWindow,
        });
    }
    for reason in RETRIED {
        rows.push(Row {
            phase: Phase::Failed {
                failure: Failure::retry(reason, format!("{reason}: retrying"), Pace::Normal),
                applied: false,
            },
            who: retried_who(reason),
            ender: Ender::Controller,
        });
    }
    let waiting = [
        (
            Waiting::Manual,
            "someone with access to the instance: restart it (or set `rebootPolicy: Automatic`)",
            Ender::PersonOrWindow,
        ),
        (
            Waiting::Stopped,
            "someone with access to the instance: start it",
            Ender::PersonOrWindow,
        ),
        (
            Waiting::InTransition("Starting".to_string()),
            "nobody: the instance is changing state",
            Ender::Controller,
        ),
        (
            Waiting::RebootAfter(at()),
            "nobody: the controller reboots the instance after the time in the message",
            Ender::Controller,
        ),
        (
            Waiting::RebootWindow(at()),
            "the reboot window: the controller reboots the instance when it opens",
            Ender::PersonOrWindow,
        ),
        (
            Waiting::RebootRequested(at().to_string()),
            "nobody: the requested reboot is under way",
            Ender::Controller,
        ),
        (
            Waiting::RebootNotObserved(at().to_string()),
            "a person: check the instance in the ECS console and restart it, or set a new `ecsvnc.io/force-apply-requested-at`",
            Ender::PersonOrWindow,
        ),
    ];
    for (waiting, who, ender) in waiting {
        rows.push(Row {
            phase: Phase::WaitingForRestart(waiting),
            who,
            ender,
        });
    }
    for how in READY_HOW {
        rows.push(Row {
            phase: Phase::Ready { how },
            who: "nobody",
            ender: Ender::Nothing,
        });
    }
    rows
}

fn phase_name(phase: &Phase) -> String {
    match phase {
        Phase::Paused => "Paused".to_string(),
        Phase::Failed {
            failure: Failure::Stalled { .. },
            ..
        } => "Failed (Stalled)".to_string(),
        Phase::Failed {
            failure: Failure::Retry { .. },
            ..
        } => "Failed (Retry)".to_string(),
        Phase::WaitingForRestart(waiting) => {
            let kind = match waiting {
                Waiting::Manual => "Manual",
                Waiting::Stopped => "Stopped",
                Waiting::InTransition(_) => "InTransition",
                Waiting::RebootAfter(_) => "RebootAfter",
                Waiting::RebootWindow(_) => "RebootWindow",
                Waiting::RebootRequested(_) => "RebootRequested",
                Waiting::RebootNotObserved(_) => "RebootNotObserved",
            };
            format!("WaitingForRestart ({kind})")
        }
        Phase::Ready { how } => format!("Ready ({how})"),
    }
}

/// The same state reached from another one: `Applied=True` and the `RebootRequired` of an earlier
/// phase kept by `conditions::merge`. Neither judge may tell it from the first status.
fn with_history(phase: &Phase) -> (Phase, Phase) {
    match phase {
        Phase::Failed { failure, .. } => (
            Phase::Failed {
                failure: failure.clone(),
                applied: true,
            },
            Phase::WaitingForRestart(Waiting::Manual),
        ),
        Phase::WaitingForRestart(_) => (
            phase.clone(),
            Phase::Ready {
                how: Reason::Restarted,
            },
        ),
        _ => (phase.clone(), Phase::WaitingForRestart(Waiting::Manual)),
    }
}

/// The status the executor writes for `phase` (`reconcile/report.rs`, `finish`): the phase's
/// conditions merged into `before`'s, `observedGeneration` = `metadata.generation`.
fn status_for(
    phase: &Phase,
    before: Option<&Phase>,
    instance_id: &str,
    generation: i64,
) -> VncPasswordStatus {
    let now = jiff::Timestamp::now();
    let earlier = now - jiff::SignedDuration::from_hours(1);
    let current = before
        .map(|b| {
            conditions::merge(
                &[],
                &conditions_for(b, instance_id),
                Some(generation),
                earlier,
            )
        })
        .unwrap_or_default();
    VncPasswordStatus {
        observed_generation: Some(generation),
        conditions: conditions::merge(
            &current,
            &conditions_for(phase, instance_id),
            Some(generation),
            now,
        ),
        ..Default::default()
    }
}

/// Creates the VncPassword, writes `status` through the status subresource as the controller does
/// (server-side apply, its field manager, the object's uid), and reads the object back as stored.
async fn store(
    client: &Client,
    namespace: &str,
    name: &str,
    instance_id: &str,
    paused: bool,
    phase: &Phase,
    before: Option<&Phase>,
) -> (Value, VncPasswordStatus) {
    let api: Api<VncPassword> = Api::namespaced(client.clone(), namespace);
    let mut object = json!({
        "apiVersion": "ecsvnc.io/v1alpha1",
        "kind": "VncPassword",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "regionId": "cn-hangzhou",
            "instanceId": instance_id,
            "passwordSecretRef": {"name": format!("{name}-vnc"), "key": "password"},
            "rebootPolicy": "Manual",
        },
    });
    if paused {
        object["metadata"]["annotations"] = json!({"ecsvnc.io/paused": "true"});
    }
    let object: VncPassword = serde_json::from_value(object).expect("a VncPassword");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create VncPassword {name}: {e}"));
    let generation = created
        .metadata
        .generation
        .expect("the API server sets generation");
    let status = status_for(phase, before, instance_id, generation);
    let patch = json!({
        "apiVersion": "ecsvnc.io/v1alpha1",
        "kind": "VncPassword",
        "metadata": {"name": name, "uid": created.metadata.uid},
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .unwrap_or_else(|e| panic!("write the status of VncPassword {name}: {e}"));
    // The object exactly as the API server serves it to Argo CD and Flux.
    let request = axum::http::Request::get(format!(
        "/apis/ecsvnc.io/v1alpha1/namespaces/{namespace}/vncpasswords/{name}"
    ))
    .body(Vec::new())
    .expect("request");
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("read VncPassword {name} back: {e}"));
    (serde_json::from_str(&text).expect("JSON"), status)
}

fn stored_condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn text_of<'a>(c: &'a Value, field: &str) -> &'a str {
    c[field].as_str().unwrap_or_default()
}

/// `Ready False`, `Reconciling True (WaitingForRestart)`, `RebootRequired —`: the status of each
/// condition, and its reason where it differs from `Ready`'s.
fn conditions_cell(obj: &Value) -> String {
    let ready_reason = stored_condition(obj, "Ready").map_or("", |c| text_of(c, "reason"));
    [
        "Ready",
        "InEffect",
        "Reconciling",
        "Stalled",
        "RebootRequired",
    ]
    .iter()
    .map(|t| match stored_condition(obj, t) {
        None => format!("{t} —"),
        Some(c) if text_of(c, "reason") == ready_reason => {
            format!("{t} {}", text_of(c, "status"))
        }
        Some(c) => format!("{t} {} ({})", text_of(c, "status"), text_of(c, "reason")),
    })
    .collect::<Vec<_>>()
    .join(", ")
}

fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `text` as a Markdown code span inside a table cell.
fn literal(text: &str) -> String {
    let fence = if text.contains('`') { "``" } else { "`" };
    format!("{fence}{}{fence}", markdown_cell(text))
}

/// Where a judge's message comes from: conditions' reasons and messages named (looked up in the
/// order that judge reads them), anything else quoted as code.
fn message_cell(message: &str, obj: &Value, order: &[&str]) -> String {
    if message.is_empty() {
        return "no message".to_string();
    }
    for t in order {
        let Some(c) = stored_condition(obj, t) else {
            continue;
        };
        let (reason, text) = (text_of(c, "reason"), text_of(c, "message"));
        if text.is_empty() {
            continue;
        }
        if message == format!("{reason}: {text}") {
            return format!("{t}'s reason: message");
        }
        if message == text {
            return format!("{t}'s message");
        }
        if let Some((head, tail)) = message.split_once(text) {
            let part = |s: &str| {
                if s.is_empty() {
                    String::new()
                } else {
                    literal(s)
                }
            };
            return format!("{} {t}'s message {}", part(head), part(tail))
                .trim()
                .to_string();
        }
    }
    literal(message)
}

/// kstatus's and Argo CD's words for the same thing; Argo CD's `Suspended` (paused) is kstatus's
/// `Current`, which has no word for it.
fn judges_agree(kstatus: &str, argocd: &str) -> bool {
    matches!(
        (kstatus, argocd),
        ("Current", "Healthy" | "Suspended")
            | ("InProgress", "Progressing")
            | ("Failed", "Degraded")
    )
}

#[tokio::test]
async fn every_state_is_judged_by_kstatus_and_argocd_as_the_health_table_says() {
    // Every reason is placed: carried by a Failure (stalled or retried) or listed where it shows.
    let mut placed: Vec<Reason> = STALLED.to_vec();
    placed.extend(RETRIED);
    placed.extend(NEVER_A_FAILURE);
    for reason in Reason::ALL {
        assert!(
            placed.contains(&reason),
            "Reason::{reason} is in neither STALLED, RETRIED nor NEVER_A_FAILURE of {}: place it, and add a row if a phase carries it",
            file!()
        );
    }
    for reason in NEVER_A_FAILURE {
        assert!(
            !STALLED.contains(&reason) && !RETRIED.contains(&reason),
            "{reason} is listed as never a Failure and as a Failure's reason"
        );
    }

    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "health").await;
    let rows = health_rows();
    // Each state twice: as a first status, and reached from another state (see `with_history`).
    let mut objects_to_store = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let paused = matches!(row.phase, Phase::Paused);
        let (later, before) = with_history(&row.phase);
        let id = format!("i-health{i:04}");
        objects_to_store.push((
            format!("s{i}-first"),
            id.clone(),
            paused,
            row.phase.clone(),
            None,
        ));
        objects_to_store.push((format!("s{i}-later"), id, paused, later, Some(before)));
    }
    let stored = futures::future::join_all(objects_to_store.iter().map(
        |(name, id, paused, phase, before)| {
            store(&client, &ns.name, name, id, *paused, phase, before.as_ref())
        },
    ))
    .await;

    // Stored as written: the judges see what the controller wrote.
    for (obj, status) in &stored {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(
            obj["status"]["observedGeneration"], obj["metadata"]["generation"],
            "{name}"
        );
        let written = serde_json::to_value(&status.conditions).expect("JSON");
        assert_eq!(
            obj["status"]["conditions"], written,
            "{name}: the API server stored other conditions than were written"
        );
    }

    let objects: Vec<Value> = stored.iter().map(|(obj, _)| obj.clone()).collect();
    let kstatus = support::kstatus::judge(&objects);
    let lua = lua_interpreter();
    let argocd: Vec<Health> = objects.iter().map(|o| health_of_with(&lua, o)).collect();

    let mut table = String::new();
    let mut disagree: Vec<(String, String, String)> = Vec::new();
    // reason -> "Type=Status" -> the phases (without their detail) where a stored condition has it.
    let mut shows: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let (first, later) = (2 * i, 2 * i + 1);
        let obj = &objects[first];
        let name = phase_name(&row.phase);
        assert_eq!(
            (&kstatus[first], &argocd[first]),
            (&kstatus[later], &argocd[later]),
            "{name}: the verdicts depend on the conditions an earlier phase left (Applied, RebootRequired), which the health table does not show; objects:\n{}\n{}",
            objects[first],
            objects[later]
        );
        // A state without a word of why is a state nobody can act on.
        for (judge, status, message) in [
            ("kstatus", &kstatus[first].status, &kstatus[first].message),
            ("Argo CD", &argocd[first].status, &argocd[first].message),
        ] {
            assert!(
                !message.is_empty(),
                "{name}: {judge} says {status} without a message"
            );
        }
        let family = name.split(' ').next().unwrap_or_default().to_string();
        for o in [obj, &objects[later]] {
            for c in o["status"]["conditions"].as_array().into_iter().flatten() {
                shows
                    .entry(text_of(c, "reason").to_string())
                    .or_default()
                    .entry(format!("{}={}", text_of(c, "type"), text_of(c, "status")))
                    .or_default()
                    .insert(family.clone());
            }
        }
        let reason = stored_condition(obj, "Ready").map_or("—", |c| text_of(c, "reason"));
        let (k, a) = (&kstatus[first], &argocd[first]);
        table.push_str(&format!(
            "| {name} | `{reason}` | {} | **{}**: {} | **{}**: {} | {} |\n",
            conditions_cell(obj),
            k.status,
            message_cell(&k.message, obj, &["Reconciling", "Stalled", "Ready"]),
            a.status,
            message_cell(
                &a.message,
                obj,
                &["Stalled", "Reconciling", "InEffect", "Ready"]
            ),
            row.who
        ));
        // The rule: a state only a person or a closed window can end never leaves a pipeline
        // waiting; the controller's own work is in progress; done is done.
        let verdicts = (k.status.as_str(), a.status.as_str());
        match row.ender {
            Ender::PersonOrWindow => assert!(
                matches!(
                    verdicts,
                    ("Current", "Healthy" | "Suspended") | ("Failed", "Degraded")
                ),
                "{name} ({reason}): only a person or a window ends it, yet kstatus says {} and Argo CD {}",
                k.status,
                a.status
            ),
            Ender::Controller => assert_eq!(
                verdicts,
                ("InProgress", "Progressing"),
                "{name} ({reason}): the controller's own work"
            ),
            Ender::Nothing => assert_eq!(verdicts, ("Current", "Healthy"), "{name} ({reason})"),
        }
        if !judges_agree(&k.status, &a.status) {
            disagree.push((
                format!("kstatus **{}**, Argo CD **{}**", k.status, a.status),
                name,
                reason.to_string(),
            ));
        }
    }
    for reason in Reason::ALL {
        assert!(
            shows.contains_key(reason.as_str()),
            "no state of the health table carries Reason::{reason}: add its row, or list it as not reachable"
        );
    }

    let mut doc = String::from(
        "# Health of a VncPassword: kstatus (Flux) and Argo CD\n\n\
         <!-- Generated by tests/argocd_health.rs; do not edit. Regenerate with:\n     \
         UPDATE_GENERATED=1 cargo test --features failpoints --test argocd_health every_state -->\n\n\
         Every state the controller reports: each `Phase` of `src/controller/decide.rs` with every reason it\n\
         carries. For each, the test builds the status the executor writes (`decide::conditions_for`, merged\n\
         by `conditions::merge`, `observedGeneration` = `metadata.generation`), creates the VncPassword in a\n\
         real kube-apiserver, writes that status through the status subresource, reads the object back and\n\
         judges it as stored with kstatus (`sigs.k8s.io/cli-utils` v0.37.2, what Flux uses for health;\n\
         `tests/kstatus/`, its rules in `tests/kstatus/README.md`) and with the Argo CD health check\n\
         (`deploy/argocd/health.lua`). The `Paused` object carries the `ecsvnc.io/paused: \"true\"` annotation\n\
         that puts it there.\n\n\
         *reason* is `Ready`'s reason, what `kubectl get vncpw` shows. *conditions*: each condition's status,\n\
         with its reason where it differs from `Ready`'s; `—`: the phase does not set it, so it keeps what an\n\
         earlier phase left (absent on a first status). Each state is also judged as reached from another:\n\
         `Paused`, `Failed` (then with `Applied=True`) and `Ready` after a pending restart, a pending restart\n\
         after `Ready`; both judges give the same verdicts (checked). A judge's message is named after the\n\
         condition it comes from.\n\n\
         The rule (asserted): `Ready=True` (kstatus `Current`) whenever the controller's part is done and only\n\
         a person or a reboot window that is closed now can move the object on, so no state that only they can\n\
         end is `InProgress`/`Progressing` (a sync or `kubectl wait --for=condition=Ready` never hangs on it);\n\
         `InEffect` says whether the console accepts the applied password (`kubectl wait\n\
         --for=condition=InEffect`). `Reconciling=True` only while the controller itself works through\n\
         something; `Stalled=True` for every state a person must look at.\n\n\
         | phase | reason | conditions | kstatus | Argo CD | who must act |\n\
         |---|---|---|---|---|---|\n",
    );
    doc.push_str(&table);
    doc.push_str(
        "\n## Where the two judges disagree\n\n\
         kstatus knows `Current`, `InProgress` and `Failed`; Argo CD `Healthy`, `Progressing`, `Degraded`\n\
         and `Suspended`. They agree when they say `Current`/`Healthy` (or `Suspended`, Argo CD's word for\n\
         paused, which kstatus does not have), `InProgress`/`Progressing` or `Failed`/`Degraded`; the test\n\
         fails on any other pair.\n\n",
    );
    if disagree.is_empty() {
        doc.push_str("None.\n");
    }
    for (verdicts, phase, reason) in &disagree {
        doc.push_str(&format!("- {verdicts}: {phase}, `{reason}`\n"));
    }
    assert!(
        disagree.is_empty(),
        "kstatus and Argo CD disagree: {disagree:?}"
    );
    doc.push_str(
        "\n## Not reachable\n\n\
         `Phase::Failed` carries only the reasons of its rows above; `Phase::Ready` only `IoOptimized` and\n\
         `Restarted`. These reasons are never a failure's; each shows only as listed (condition, in which\n\
         phases):\n\n",
    );
    for reason in NEVER_A_FAILURE {
        let places: Vec<String> = shows[reason.as_str()]
            .iter()
            .map(|(condition, phases)| {
                let phases: Vec<&str> = phases.iter().map(String::as_str).collect();
                format!("`{condition}` ({})", phases.join(", "))
            })
            .collect();
        doc.push_str(&format!("- `{reason}`: {}\n", places.join("; ")));
    }

    let path = support::repo_root().join(HEALTH_TABLE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if std::env::var_os("UPDATE_GENERATED").is_some_and(|v| !v.is_empty()) {
        if committed != doc {
            std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
            std::fs::write(&path, &doc).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            eprintln!("rewrote {HEALTH_TABLE}");
        }
    } else {
        assert!(
            committed == doc,
            "{HEALTH_TABLE} differs from what the judges say today; if the change is intended, regenerate it \
             with `UPDATE_GENERATED=1 cargo test --features failpoints --test argocd_health every_state` \
             and commit it. Generated:\n{doc}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn a_spec_change_the_controller_has_not_seen_is_in_progress_for_both_judges() {
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "health-gen").await;
    let ready = Phase::Ready {
        how: Reason::IoOptimized,
    };
    let (stored, _) = store(
        &client,
        &ns.name,
        "moved",
        "i-generation1",
        false,
        &ready,
        None,
    )
    .await;
    assert_eq!(stored["metadata"]["generation"], 1);
    // A user edits the spec; the controller has not written a status since.
    let api: Api<VncPassword> = Api::namespaced(client.clone(), &ns.name);
    api.patch(
        "moved",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"instanceId": "i-generation2"}})),
    )
    .await
    .expect("change the spec");
    let request = axum::http::Request::get(format!(
        "/apis/ecsvnc.io/v1alpha1/namespaces/{}/vncpasswords/moved",
        ns.name
    ))
    .body(Vec::new())
    .expect("request");
    let text = client.request_text(request).await.expect("read it back");
    let obj: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(obj["metadata"]["generation"], 2);
    assert_eq!(obj["status"]["observedGeneration"], 1);

    assert_eq!(
        support::kstatus::judge(std::slice::from_ref(&obj)),
        [support::kstatus::Verdict {
            status: "InProgress".to_string(),
            message: "VncPassword generation is 2, but latest observed generation is 1".to_string(),
        }]
    );
    assert_eq!(
        health_of(&obj),
        health(
            "Progressing",
            "Waiting for the controller to observe generation 2"
        )
    );
    ns.delete().await;
}
