//! The container image: `scripts/image` (umoci, no Docker daemon) builds what the Dockerfile
//! describes — the same files, user, entrypoint, command and port — and builds it reproducibly.
//!
//! The Dockerfile itself is not built here (no Docker engine on CI); its final stage is read as
//! text and compared with the image scripts/image wrote.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// Both tests build into the same target/image/: one at a time.
static BUILD: Mutex<()> = Mutex::new(());

/// What the final stage of the Dockerfile says.
#[derive(Debug, Default)]
struct FinalStage {
    base: String,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: String,
    expose: Vec<String>,
    files: BTreeSet<String>,
}

fn final_stage(dockerfile: &str) -> FinalStage {
    // Continuation lines joined, comments dropped; only the instructions after the last FROM.
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let mut stage = FinalStage::default();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let exec_form = |s: &str| -> Vec<String> {
            serde_json::from_str(s).unwrap_or_else(|e| panic!("not exec form JSON: {s}: {e}"))
        };
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => {
                stage = FinalStage {
                    base: rest.split_whitespace().next().unwrap().to_string(),
                    ..Default::default()
                }
            }
            "ENTRYPOINT" => stage.entrypoint = exec_form(rest),
            "CMD" => stage.cmd = exec_form(rest),
            "USER" => stage.user = rest.to_string(),
            "EXPOSE" => stage.expose = rest.split_whitespace().map(str::to_string).collect(),
            "COPY" | "ADD" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                assert_eq!(
                    words.len(),
                    2,
                    "one source, one destination per COPY: {line}"
                );
                stage
                    .files
                    .insert(words[1].trim_start_matches('/').to_string());
            }
            _ => {}
        }
    }
    stage
}

/// Regular files of a gzip layer: path -> (mode, uid/gid), from `tar -tvz`.
fn layer_files(layer: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(layer)
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar -tvzf {}", layer.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5..].join(" ");
            let path = path.trim_start_matches("./").trim_start_matches('/');
            (path.to_string(), f[0].to_string(), f[1].to_string())
        })
        .collect()
}

fn file_of_layer(layer: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["-xzOf"])
        .arg(layer)
        .arg(path)
        .output()
        .expect("tar");
    assert!(out.status.success(), "no {path} in {}", layer.display());
    out.stdout
}

/// ELF program header types of a 64-bit little-endian executable.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn the_image_is_what_the_dockerfile_describes() {
    let dockerfile = std::fs::read_to_string(support::repo_root().join("Dockerfile")).unwrap();
    let stage = final_stage(&dockerfile);
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(stage.base, "scratch", "the image has no base layers");

    let image = support::image::build();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(image.reference, format!("ecs-vnc-controller:{version}"));

    let config = image.config();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let c = &config["config"];
    assert_eq!(strings(&c["Entrypoint"]), stage.entrypoint, "entrypoint");
    assert_eq!(strings(&c["Cmd"]), stage.cmd, "cmd");
    assert_eq!(c["User"].as_str().unwrap_or(""), stage.user, "user");
    let ports: Vec<String> = c["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let expected_ports: Vec<String> = stage
        .expose
        .iter()
        .map(|p| {
            if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    assert_eq!(ports, expected_ports, "exposed ports");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    // The files: exactly the Dockerfile's COPY destinations, owned by root, the binary executable.
    let layers = image.layers();
    assert_eq!(layers.len(), 1, "one layer");
    let files = layer_files(&layers[0]);
    let paths: BTreeSet<String> = files.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(
        paths, stage.files,
        "files of the image vs COPY of the Dockerfile"
    );
    for (path, mode, owner) in &files {
        assert_eq!(owner, "0/0", "{path} owned by root");
        let expected = if path == "ecs-vnc-controller" {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, expected, "mode of {path}");
    }

    // The user of USER exists, and the binary needs no dynamic loader (no PT_INTERP).
    let (uid, gid) = stage.user.split_once(':').unwrap();
    let passwd = String::from_utf8(file_of_layer(&layers[0], "etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid) && l.split(':').nth(3) == Some(gid)),
        "no passwd entry for {uid}:{gid}: {passwd}"
    );
    let group = String::from_utf8(file_of_layer(&layers[0], "etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.split(':').nth(2) == Some(gid)),
        "{group}"
    );
    let certs = String::from_utf8(file_of_layer(
        &layers[0],
        "etc/ssl/certs/ca-certificates.crt",
    ))
    .unwrap();
    assert!(
        certs.matches("BEGIN CERTIFICATE").count() > 50,
        "a CA bundle"
    );
    let binary = file_of_layer(&layers[0], "ecs-vnc-controller");
    const PT_INTERP: u32 = 3;
    assert!(
        !program_header_types(&binary).contains(&PT_INTERP),
        "the binary asks for a dynamic loader"
    );
}

#[test]
fn two_builds_give_the_same_digest() {
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let first = support::image::build();
    let first_tar = std::fs::read(&first.tarball).unwrap();
    let second = support::image::build();
    let second_tar = std::fs::read(&second.tarball).unwrap();
    assert_eq!(first.digest, second.digest, "manifest digest");
    assert!(first_tar == second_tar, "the archives differ byte for byte");
}
