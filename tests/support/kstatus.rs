//! kstatus as a judge: `tests/kstatus/` (sigs.k8s.io/cli-utils's `pkg/kstatus/status`, what Flux
//! uses for health), built once into the user's cache by `tests/kstatus/build`. Fails (never skips)
//! when it cannot be built.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::channel;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// kstatus's verdict on one object: `status.Compute`'s status (`InProgress`, `Current`, `Failed`,
/// `Terminating`) and message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verdict {
    pub status: String,
    #[serde(default)]
    pub message: String,
}

/// How long one batch may take before the judge is taken for hung.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a build script of `tests/` and returns the path it prints last; panics, naming `what`,
/// when it fails.
pub fn built(script: &Path, what: &str) -> PathBuf {
    let out = Command::new(script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} could not be built by {} ({}): it needs Go >= 1.26 and the Go module proxy (first build only)\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        out.status
    );
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        path.is_file(),
        "{} printed no binary path (got {path:?})\nstderr:\n{stderr}",
        script.display()
    );
    path
}

/// The judge's binary, built (or found in the cache) by `tests/kstatus/build`.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        built(
            &super::repo_root().join("tests/kstatus/build"),
            "the kstatus judge",
        )
    })
}

/// kstatus's verdict on each of `objects`, in order (one judge process for all of them).
pub fn judge(objects: &[Value]) -> Vec<Verdict> {
    let mut input = String::new();
    for object in objects {
        // serde_json writes no raw newline inside a value: one object per line.
        input.push_str(&object.to_string());
        input.push('\n');
    }
    let mut child = Command::new(binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // The judge's stdout ends when it exits: that is the signal awaited, for at most TIMEOUT.
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = tx.send(stdout.read_to_end(&mut bytes).map(|_| bytes));
    });
    let bytes = match rx.recv_timeout(TIMEOUT) {
        Ok(read) => read.expect("read the kstatus judge's answers"),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the kstatus judge did not answer within {TIMEOUT:?}");
        }
    };
    let status = child.wait().expect("wait for the kstatus judge");
    writer
        .join()
        .expect("writer thread")
        .expect("write the objects to the kstatus judge");
    assert!(
        status.success(),
        "the kstatus judge failed ({status}):\n{}",
        errors.join().unwrap_or_default()
    );
    let stdout = String::from_utf8(bytes).expect("UTF-8 from the kstatus judge");
    let verdicts: Vec<Verdict> = stdout
        .lines()
        .zip(objects)
        .map(|(line, object)| {
            let answer: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("the kstatus judge answered {line:?}: {e}"));
            if let Some(error) = answer.get("error") {
                panic!("kstatus could not judge {object}: {error}");
            }
            serde_json::from_value(answer)
                .unwrap_or_else(|e| panic!("the kstatus judge answered {line:?}: {e}"))
        })
        .collect();
    assert_eq!(
        verdicts.len(),
        objects.len(),
        "the kstatus judge answered {} of {} objects:\n{stdout}",
        verdicts.len(),
        objects.len()
    );
    verdicts
}
