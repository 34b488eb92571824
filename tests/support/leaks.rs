//! The suite-wide leak check: every test that ends with `TestNamespace::delete` checks that no
//! secret it put into a Secret of its namespace (passwords, AccessKeySecrets, STS tokens) appears
//! in an Event of that namespace, in a VncPassword's status, or in anything the controllers of the
//! test binary logged (every in-process controller logs into [`captured_logs`], at debug level).
//! Controllers run as child processes (leader, kill campaign) scan their own output.

use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::ListParams;
use kube::{Api, Client};

use ecs_vnc_controller::api::VncPassword;

/// Secret keys whose values are not secret (an AccessKeyId names the key in every request).
const NOT_SECRET: &[&str] = &["accessKeyId"];

/// Everything the controllers log in this test binary. Installs the capturing subscriber once.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,kube=info,tower=info,h2=info,rustls=info,reqwest=info",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The secret values of the namespace's Secrets (at least 6 bytes: a VNC password is 6).
async fn secrets_of(client: &Client, namespace: &str) -> Vec<String> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut values: Vec<String> = secrets
        .into_iter()
        .flat_map(|s| s.data.unwrap_or_default())
        .filter(|(k, _)| !NOT_SECRET.contains(&k.as_str()))
        .filter_map(|(_, v)| String::from_utf8(v.0).ok())
        .flat_map(|v| {
            // A credentials file holds its secret on one of its lines.
            let mut parts = vec![v.trim().to_string()];
            parts.extend(v.lines().filter_map(|l| {
                let (k, val) = l.split_once('=')?;
                let k = k.trim().to_ascii_lowercase();
                (k.contains("secret") || k.contains("token") || k.contains("password"))
                    .then(|| val.trim().to_string())
            }));
            parts
        })
        .filter(|v| v.len() >= 6)
        .collect();
    values.sort();
    values.dedup();
    values
}

/// Panics, naming where (never the secret itself), when a secret of `namespace` leaked.
pub async fn assert_no_leak(client: &Client, namespace: &str) {
    let secrets = secrets_of(client, namespace).await;
    if secrets.is_empty() {
        return;
    }
    let mut places: Vec<(String, String)> = Vec::new();
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for e in events {
        places.push((
            format!(
                "Event {} ({})",
                e.metadata.name.unwrap_or_default(),
                e.reason.clone().unwrap_or_default()
            ),
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            ),
        ));
    }
    let objects = Api::<VncPassword>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for o in objects {
        places.push((
            format!(
                "the status of VncPassword {}",
                o.metadata.name.unwrap_or_default()
            ),
            serde_json::to_string(&o.status).unwrap_or_default(),
        ));
    }
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap_or_else(|p| p.into_inner()))
        .into_owned();
    places.push(("the controllers' logs".to_string(), logs));
    let leaks: Vec<String> = places
        .iter()
        .filter_map(|(place, text)| {
            let (secret, at) = secrets
                .iter()
                .find_map(|s| leaked_at(text, s).map(|at| (s, at)))?;
            Some(format!("{place}: …{}…", masked_context(text, secret, at)))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "a secret of a Secret in namespace {namespace} appears in (secret masked): {leaks:#?}"
    );
}

/// Where `secret` stands in `text` as a token of its own: not inside a longer run of letters and
/// digits. A 6-character test password such as `C00123` otherwise "appears" by chance inside the
/// upper-case hex of a logged RequestId (the simulator's are upper-case UUIDs): with 300 such
/// passwords one RequestId in about 5,600 holds one (10 places × 300 / 16^6), a chaos run logs
/// hundreds, and it failed a CI run. A real leak shows the password as a token (`VncPassword=C00123&`, `"C00123"`,
/// `: C00123`); one glued to other letters or digits is not caught.
pub fn leaked_at(text: &str, secret: &str) -> Option<usize> {
    let word = |c: char| c.is_ascii_alphanumeric();
    text.match_indices(secret).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + secret.len()..].chars().next();
        let glued_before = secret.starts_with(word) && before.is_some_and(word);
        let glued_after = secret.ends_with(word) && after.is_some_and(word);
        !glued_before && !glued_after
    })
}

/// Up to 80 characters either side of the leak at `at`, the secret itself starred out.
fn masked_context(text: &str, secret: &str, at: usize) -> String {
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(79)
        .map_or(0, |(i, _)| i);
    let end = text[at + secret.len()..]
        .char_indices()
        .nth(80)
        .map_or(text.len(), |(i, _)| at + secret.len() + i);
    text[start..end].replace(secret, "******")
}

#[cfg(test)]
mod tests {
    use super::leaked_at;

    #[test]
    fn a_secret_counts_as_leaked_only_as_a_token_of_its_own() {
        let id = "RequestId: 7AC00123-3F2B-4E55-9C00-1234A5B6C7D8";
        assert_eq!(leaked_at(id, "C00123"), None);
        assert_eq!(leaked_at("body VncPassword=C00123&x", "C00123"), Some(17));
        assert_eq!(leaked_at("{\"p\":\"C00123\"}", "C00123"), Some(6));
        assert_eq!(leaked_at("C00123", "C00123"), Some(0));
        assert_eq!(leaked_at("xC00123 then C00123.", "C00123"), Some(13));
        assert_eq!(leaked_at("secret: chaos-secret", "chaos-secret"), Some(8));
    }
}
