//! The operator CLI end to end: `ecs-vnc-controller modify-vnc-password` against the
//! `ecs-simulator` binary, both run as a user would run them.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct SimProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    fn start() -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// The simulator listening on `ip` (the URL names that address).
    fn start_on(ip: std::net::IpAddr) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let child = Command::new(env!("CARGO_BIN_EXE_ecs-simulator"))
            .args(["--listen", &format!("{ip}:0"), "--port-file"])
            .arg(&port_file)
            .args([
                "--access-key",
                "LTAItest:cli-secret",
                "--access-key",
                "STS.cli:sts-secret:CAIS+/tok==",
            ])
            .args(["--instance", "i-cliio00000001,cn-hangzhou,io-optimized"])
            .args(["--instance", "i-clinonio00001,cn-hangzhou,non-io-optimized"])
            .args([
                "--instance",
                "i-clistart00001,cn-hangzhou,io-optimized,Starting",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ecs-simulator");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "ecs-simulator wrote no port file"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            url: format!("http://{ip}:{port}"),
            _dir: dir,
        }
    }

    fn calls(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-fsS", &format!("{}/_simulator/calls", self.url)])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).expect("admin json")
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(sim: &SimProcess, args: &[&str], stdin: &str, key: (&str, &str, Option<&str>)) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"));
    cmd.arg("modify-vnc-password")
        .args(args)
        .env("ECS_VNC_ECS_ENDPOINT", &sim.url)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", key.0)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", key.1)
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .env_remove("ECS_VNC_ECS_SIGNATURE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = key.2 {
        cmd.env("ALIBABA_CLOUD_SECURITY_TOKEN", token);
    }
    let mut child = cmd.spawn().expect("run the CLI");
    write_stdin(&mut child, stdin.as_bytes());
    child.wait_with_output().expect("wait")
}

const KEY: (&str, &str, Option<&str>) = ("LTAItest", "cli-secret", None);

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn changes_a_password_and_says_whether_a_reboot_is_required() {
    let sim = SimProcess::start();
    let out = cli(
        &sim,
        &[
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-cliio00000001",
        ],
        "Ecs123\n",
        KEY,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("RequestId: ") && l.len() > 20),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "reboot-required: false"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "Vnc987\n").unwrap();
    let out = cli(
        &sim,
        &[
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-clinonio00001",
            "--password-file",
            file.to_str().unwrap(),
        ],
        "",
        KEY,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l == "reboot-required: true"),
        "{stdout}"
    );
    let calls = sim.calls();
    let modify: Vec<_> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "ModifyInstanceVncPasswd")
        .collect();
    assert_eq!(modify.len(), 2);
    assert_eq!(modify[1]["vncPassword"], "Vnc987");
}

#[test]
fn works_with_an_sts_token() {
    let sim = SimProcess::start();
    let out = cli(
        &sim,
        &[
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-cliio00000001",
        ],
        "Ecs123\n",
        ("STS.cli", "sts-secret", Some("CAIS+/tok==")),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let out = cli(
        &sim,
        &[
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-cliio00000001",
        ],
        "Ecs123\n",
        ("STS.cli", "sts-secret", Some("CAIS+/wrong==")),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("Code: InvalidSecurityToken."), "{stderr}");
    assert!(!stderr.contains("CAIS"), "{stderr}");
}

#[test]
fn an_invalid_password_never_leaves_the_machine() {
    let sim = SimProcess::start();
    for (input, rule) in [
        ("Ecs12\n", "has 5 characters"),
        ("Ecs 12\n", "other than A-Z"),
        ("\n", "empty"),
    ] {
        let out = cli(
            &sim,
            &[
                "--region-id",
                "cn-hangzhou",
                "--instance-id",
                "i-cliio00000001",
            ],
            input,
            KEY,
        );
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(
            stderr.contains(rule) && stderr.contains("nothing was sent"),
            "{stderr}"
        );
        assert!(!stderr.contains("Ecs"), "the password is echoed: {stderr}");
    }
    assert_eq!(sim.calls()["calls"].as_array().map(Vec::len), Some(0));
}

#[test]
fn ecs_errors_show_code_message_and_request_id() {
    let sim = SimProcess::start();
    for (instance, region, code) in [
        (
            "i-clinothere001",
            "cn-hangzhou",
            "InvalidInstanceId.NotFound",
        ),
        (
            "i-cliio00000001",
            "xx-nowhere-1",
            "InvalidRegionId.NotFound",
        ),
    ] {
        let out = cli(
            &sim,
            &["--region-id", region, "--instance-id", instance],
            "Ecs123\n",
            KEY,
        );
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("Code: {code}")), "{stderr}");
        assert!(
            stderr.contains("Message: ") && stderr.contains("RequestId: "),
            "{stderr}"
        );
    }
}

#[test]
fn a_signature_mismatch_shows_both_strings_to_sign_with_secrets_masked() {
    let sim = SimProcess::start();
    let out = cli(
        &sim,
        &[
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-cliio00000001",
        ],
        "Ecs123\n",
        ("LTAItest", "not-the-secret", None),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("Code: SignatureDoesNotMatch"), "{stderr}");
    assert!(
        stderr.contains("client string to sign: POST&%2F&"),
        "{stderr}"
    );
    assert!(
        stderr.contains("server string to sign: POST&%2F&"),
        "{stderr}"
    );
    assert!(stderr.contains("VncPassword%3D***"), "{stderr}");
    assert!(
        !stderr.contains("Ecs123") && !stderr.contains("not-the-secret"),
        "{stderr}"
    );
}

/// The CLI with extra environment variables (ECS_VNC_ECS_SIGNATURE).
fn cli_env(
    sim: &SimProcess,
    args: &[&str],
    env: &[(&str, &str)],
    key: (&str, &str, Option<&str>),
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"));
    cmd.arg("modify-vnc-password")
        .args(args)
        .env("ECS_VNC_ECS_ENDPOINT", &sim.url)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", key.0)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", key.1)
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .env_remove("ECS_VNC_ECS_SIGNATURE")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = key.2 {
        cmd.env("ALIBABA_CLOUD_SECURITY_TOKEN", token);
    }
    let mut child = cmd.spawn().expect("run the CLI");
    write_stdin(&mut child, b"Ecs123\n");
    child.wait_with_output().expect("wait")
}

/// The signature of each call in the simulator's log, in order.
fn signatures(sim: &SimProcess) -> Vec<String> {
    sim.calls()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["signature"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn signature_v3_is_chosen_by_flag_or_environment_and_v1_stays_the_default() {
    let sim = SimProcess::start();
    let target = [
        "--region-id",
        "cn-hangzhou",
        "--instance-id",
        "i-cliio00000001",
    ];
    let out = cli_env(&sim, &target, &[], KEY);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        signatures(&sim),
        ["v1", "v1"],
        "Modify and Describe, V1 by default"
    );

    let mut flagged = target.to_vec();
    flagged.extend(["--ecs-signature", "v3"]);
    let out = cli_env(&sim, &flagged, &[], KEY);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l == "reboot-required: false"),
        "{stdout}"
    );
    let out = cli_env(
        &sim,
        &target,
        &[("ECS_VNC_ECS_SIGNATURE", "v3")],
        ("STS.cli", "sts-secret", Some("CAIS+/tok==")),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(signatures(&sim), ["v1", "v1", "v3", "v3", "v3", "v3"]);

    let out = cli_env(&sim, &target, &[("ECS_VNC_ECS_SIGNATURE", "v2")], KEY);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("v2") && stderr.contains("v3"), "{stderr}");
    assert_eq!(signatures(&sim).len(), 6, "nothing was sent");

    // The former name is refused with its new one, not silently ignored.
    let out = cli_env(&sim, &target, &[("ECS_SIGNATURE", "v3")], KEY);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ECS_SIGNATURE is now ECS_VNC_ECS_SIGNATURE"),
        "{stderr}"
    );
    assert_eq!(signatures(&sim).len(), 6, "nothing was sent");
}

#[test]
fn a_v3_signature_mismatch_shows_both_canonical_requests_with_secrets_masked() {
    let sim = SimProcess::start();
    let out = cli_env(
        &sim,
        &[
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-cliio00000001",
            "--ecs-signature",
            "v3",
        ],
        &[],
        ("STS.cli", "not-the-secret", Some("CAIS+/tok==")),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Code: SignatureDoesNotMatch"), "{stderr}");
    for side in ["client", "server"] {
        let heading = format!("  {side} canonical request:\n    POST\n    /\n");
        assert!(stderr.contains(&heading), "{side}: {stderr}");
    }
    assert_eq!(
        stderr.matches("    x-acs-security-token:***").count(),
        2,
        "{stderr}"
    );
    assert!(
        !stderr.contains("CAIS")
            && !stderr.contains("Ecs123")
            && !stderr.contains("not-the-secret"),
        "{stderr}"
    );
}

#[test]
fn missing_credentials_are_named() {
    let sim = SimProcess::start();
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .args([
            "modify-vnc-password",
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-cliio00000001",
            "--ecs-endpoint",
            &sim.url,
        ])
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"Ecs123\n")?;
            c.wait_with_output()
        })
        .expect("run");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_ID is not set"),
        "{stderr}"
    );
}

#[test]
fn the_password_is_never_accepted_on_the_command_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .args([
            "modify-vnc-password",
            "--region-id",
            "cn-hangzhou",
            "--instance-id",
            "i-x",
            "--password",
            "Ecs123",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_simulator_takes_keys_instances_and_faults_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        "accessKeys:\n  - {id: LTAIfile, secret: file-secret}\ninstances:\n  - {id: i-fileio000001, region: cn-shanghai, ioOptimized: true}\nfaults:\n  throttleNext: 1\n",
    )
    .unwrap();
    let port_file = dir.path().join("port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecs-simulator"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ecs-simulator");
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut first_line,
    )
    .expect("first line");
    assert!(
        first_line.starts_with("listening on http://127.0.0.1:"),
        "{first_line}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        match std::fs::read_to_string(&port_file) {
            Ok(p) if !p.trim().is_empty() => break p,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("no port file"),
        }
    };
    let sim = SimProcess {
        child,
        url: format!("http://127.0.0.1:{}", port.trim()),
        _dir: dir,
    };
    let key = ("LTAIfile", "file-secret", None);
    let args = [
        "--region-id",
        "cn-shanghai",
        "--instance-id",
        "i-fileio000001",
        "--ecs-max-retries",
        "0",
    ];
    let throttled = cli(&sim, &args, "Ecs123\n", key);
    assert_eq!(throttled.status.code(), Some(1));
    assert!(text(&throttled).1.contains("Code: Throttling.User"));
    let ok = cli(&sim, &args, "Ecs123\n", key);
    assert!(ok.status.success(), "{:?}", text(&ok));
}

#[test]
fn the_simulator_refuses_a_config_whose_tags_ecs_would_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        "instances:\n  - {id: i-filetag00001, region: cn-shanghai, ioOptimized: true, tags: {acs:system: x}}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-simulator"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run ecs-simulator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("i-filetag00001") && stderr.contains("acs:system"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "it never listened");
}

/// This machine's address on its route to a documentation address (no packet is sent): a host
/// that is not loopback.
fn non_loopback_ip() -> std::net::IpAddr {
    [
        "192.0.2.254:9",
        "198.51.100.1:9",
        "203.0.113.1:9",
        "10.255.255.254:9",
    ]
    .iter()
    .find_map(|peer| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.connect(peer).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    })
    .expect("this machine has an address that is not loopback")
}

/// Plain http to anything but loopback carries signatures, STS tokens and VNC passwords in clear:
/// refused before anything is sent, naming the override; `--allow-insecure-http` (or
/// `ECS_VNC_ALLOW_INSECURE_HTTP`) lets an operator point at a test endpoint on purpose.
#[test]
fn plain_http_to_a_host_that_is_not_loopback_needs_allow_insecure_http() {
    let ip = non_loopback_ip();
    let sim = SimProcess::start_on(ip);
    let args = [
        "--region-id",
        "cn-hangzhou",
        "--instance-id",
        "i-cliio00000001",
    ];
    let refused = cli(&sim, &args, "Ecs123\n", KEY);
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--allow-insecure-http"), "{stderr}");
    assert!(stderr.contains(&sim.url), "{stderr}");
    assert_eq!(sim.calls()["calls"].as_array().unwrap().len(), 0);

    let mut allowed = args.to_vec();
    allowed.push("--allow-insecure-http");
    let ok = cli(&sim, &allowed, "Ecs123\n", KEY);
    assert!(ok.status.success(), "{:?}", text(&ok));
    let ok = cli_env(&sim, &args, &[("ECS_VNC_ALLOW_INSECURE_HTTP", "true")], KEY);
    assert!(ok.status.success(), "{:?}", text(&ok));

    // `run` refuses at start-up, for ECS and for STS alike, before it needs a cluster.
    for flag in [
        format!("--ecs-endpoint={}", sim.url),
        format!("--sts-endpoint={}/sts", sim.url),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
            .args(["run", &flag, "--metrics-addr=127.0.0.1:0"])
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
            .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
            .env_remove("ECS_VNC_ALLOW_INSECURE_HTTP")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(stderr.contains("--allow-insecure-http"), "{flag}: {stderr}");
    }
}

/// docs/reference/cli.md holds `run --help` as the binary prints it (no environment variable set,
/// so no value shows); UPDATE_GENERATED=1 rewrites it.
#[test]
fn run_help_in_the_cli_reference_is_the_binarys() {
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("UTF-8");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference/cli.md");
    let page = std::fs::read_to_string(&path).expect("docs/reference/cli.md");
    let heading = page
        .find("### `run --help`")
        .expect("the run --help section");
    let start = heading + page[heading..].find("```text\n").expect("its text block") + 8;
    let end = start + page[start..].find("\n```").expect("the block's end") + 1;
    if page[start..end] == help {
        return;
    }
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        let updated = format!("{}{help}{}", &page[..start], &page[end..]);
        std::fs::write(&path, updated).expect("write docs/reference/cli.md");
        return;
    }
    panic!(
        "docs/reference/cli.md's run --help is stale: run UPDATE_GENERATED=1 cargo test --test cli run_help"
    );
}

/// Writes `input` to the child's standard input. A CLI that refuses its arguments or environment
/// exits before it reads anything: the broken pipe that leaves is not the test's failure, its
/// output says what happened.
fn write_stdin(child: &mut Child, input: &[u8]) {
    let mut stdin = child.stdin.take().expect("stdin");
    match stdin.write_all(input) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("write stdin: {e}"),
    }
}
