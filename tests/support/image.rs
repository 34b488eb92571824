//! The controller's container image as `scripts/image` builds it (no Docker daemon: umoci).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// What `scripts/image` wrote.
pub struct Image {
    /// The reference it printed, e.g. `ecs-vnc-controller:0.1.0`.
    pub reference: String,
    /// `target/image/oci`, the OCI image layout.
    pub layout: PathBuf,
    /// `target/image/ecs-vnc-controller.oci.tar`.
    pub tarball: PathBuf,
    /// The manifest digest (`sha256:...`).
    pub digest: String,
}

/// Runs `scripts/image` (it builds the static binary in a Cargo target directory of its own, so it
/// can run while `cargo test` holds the main one) and returns what it wrote.
pub fn build() -> Image {
    let script = super::repo_root().join("scripts/image");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); its output is above",
        script.display(),
        out.status
    );
    let reference = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("scripts/image printed no image reference")
        .trim()
        .to_string();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join("target"));
    let layout = target.join("image/oci");
    let tarball = target.join("image/ecs-vnc-controller.oci.tar");
    let index: Value = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("index.json names no manifest")
        .to_string();
    assert!(tarball.is_file(), "{} missing", tarball.display());
    Image {
        reference,
        layout,
        tarball,
        digest,
    }
}

pub fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Image {
    /// A blob of the layout by digest.
    pub fn blob(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').expect("digest algo:hex");
        self.layout.join("blobs").join(algo).join(hex)
    }

    pub fn manifest(&self) -> Value {
        read_json(&self.blob(&self.digest))
    }

    /// The image configuration (https://github.com/opencontainers/image-spec/blob/main/config.md).
    pub fn config(&self) -> Value {
        let manifest = self.manifest();
        read_json(&self.blob(manifest["config"]["digest"].as_str().unwrap()))
    }

    /// The layer blobs, in order.
    pub fn layers(&self) -> Vec<PathBuf> {
        self.manifest()["layers"]
            .as_array()
            .expect("manifest layers")
            .iter()
            .map(|l| self.blob(l["digest"].as_str().unwrap()))
            .collect()
    }
}
