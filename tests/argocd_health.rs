//! The Argo CD health check `deploy/argocd/health.lua`, run by a real Lua interpreter on sample
//! VncPassword objects, the way Argo CD runs it: a global `obj` holding the live object, and the
//! script's returned table read for `status` and `message`.
//!
//! Needs a Lua interpreter: `lua5.4`, `lua5.3` or `lua` on PATH (Debian: `apt-get install -y
//! lua5.4`), or its path in `LUA`. Without one these tests fail; they never skip.

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
            "credentialsSecretRef": {"name": "aliyun-credentials"},
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
fn a_pending_reboot_is_suspended_saying_the_password_was_applied() {
    let message = "instance i-bp67acfmxazb4ph0002 is not I/O-optimized: restart it for the new password to take effect";
    let obj = with_conditions(vec![
        condition("Ready", "False", "RebootRequired", message),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "True", "RebootRequired", message),
        condition(
            "Reconciling",
            "True",
            "WaitingForRestart",
            "waiting for instance i-bp67acfmxazb4ph0002 to restart",
        ),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health(
            "Suspended",
            &format!("Password applied; waiting for instance restart ({message})")
        )
    );
}

#[test]
fn a_reboot_waiting_for_its_maintenance_window_is_suspended_saying_when() {
    let message = "instance i-1 is not I/O-optimized: RebootInstance waits for the next reboot window (spec.rebootWindows), which opens at 2026-12-06T02:00:00Z";
    let obj = with_conditions(vec![
        condition("Ready", "False", "RebootRequired", message),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "True", "RebootRequired", message),
        condition("Reconciling", "True", "WaitingForRestart", message),
        condition("Stalled", "False", "AsExpected", ""),
    ]);
    assert_eq!(
        health_of(&obj),
        health(
            "Suspended",
            &format!("Password applied; waiting for instance restart ({message})")
        )
    );
}

#[test]
fn a_reboot_that_was_never_observed_is_degraded_saying_what_to_check() {
    let message = "RebootInstance was requested for instance i-1 at 2026-01-01T10:01:05Z, but no restart has been seen since (--reboot-timeout): check the instance in the ECS console";
    let obj = with_conditions(vec![
        condition("Ready", "False", "RebootNotObserved", message),
        condition(
            "Applied",
            "True",
            "Applied",
            "ECS accepted the Secret's current password",
        ),
        condition("RebootRequired", "True", "RebootRequested", message),
        condition("Reconciling", "True", "RebootNotObserved", message),
        condition("Stalled", "False", "AsExpected", ""),
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
        condition("Ready", "False", "Paused", message),
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
    let script = patch["data"]["resource.customizations.health.ecsvnc.io_VncPassword"]
        .as_str()
        .expect("the health key Argo CD reads for ecsvnc.io/VncPassword");
    assert!(
        script == health_script(),
        "deploy/argocd/argocd-cm-patch.yaml differs from deploy/argocd/health.lua: \
         copy health.lua into the patch (indented by 4 spaces)"
    );
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
