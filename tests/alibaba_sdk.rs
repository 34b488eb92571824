//! Alibaba's own SDK as the judge of the signer and the simulator.
//!
//! `tests/alibaba-sdk/` is a small Go program built on Alibaba Cloud's official Go SDK
//! (`github.com/alibabacloud-go/ecs-20140526/v7` v7.7.0 with `darabonba-openapi/v2` v2.1.14,
//! pinned by its go.mod/go.sum). It is built once into the user's cache by
//! `tests/alibaba-sdk/build`, which these tests run themselves; they fail (never skip) when it
//! cannot be built.
//!
//! - Differential properties: random requests signed by this project's signers and by the SDK's own
//!   functions (one long-running `alibaba-sdk oracle` process per property, JSON lines) must agree
//!   byte for byte, stage by stage: the RPC string to sign and signature; the V3 payload hash,
//!   canonical query, canonical headers, signed headers, canonical request, string to sign,
//!   signature and `Authorization`. `ALIBABA_SDK_CASES` (default 10,000) sets the cases per run.
//! - Interop: the SDK's generated ECS client (`alibaba-sdk client`) against the simulator, with the
//!   RPC signature and with V3, with and without an STS token: every action the controller uses,
//!   every documented error of ModifyInstanceVncPasswd, and the typed fields the controller reads;
//!   DescribeInstances with `Tag` filters and `MaxResults`/`NextToken` paging through 250 tagged
//!   instances, the SDK decoding each instance's `Tags` and the `NextToken`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

use ecs_vnc_controller::ecs::{signer, signer_v3};
use ecs_vnc_controller::secret::SecretString;
use ecs_vnc_controller::simulator::{
    AccessKeyConfig, InstanceConfig, RunningSimulator, Simulator, SimulatorConfig,
};

// ---------------------------------------------------------------------------------------------
// The judge process.

/// The judge's binary, built (or found in the cache) by `tests/alibaba-sdk/build`.
fn judge_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/alibaba-sdk/build");
        let started = Instant::now();
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the Alibaba SDK judge could not be built ({}): these tests need Go >= 1.26 and the Go module proxy (first build only)\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.is_file(),
            "{} printed no binary path (got {path:?})\nstderr:\n{stderr}",
            script.display()
        );
        eprintln!(
            "alibaba-sdk judge: {} (ready in {:.1} s)",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        path
    })
}

/// One `alibaba-sdk MODE` process: a JSON line in, a JSON line out. Every answer is awaited for at
/// most [`ANSWER_TIMEOUT`], so a hung judge fails the test instead of hanging it.
struct Judge {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl Judge {
    fn start(mode: &str) -> Self {
        let mut child = Command::new(judge_binary())
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the alibaba-sdk judge");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn ask(&mut self, request: &Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to the judge");
        self.stdin.flush().expect("flush to the judge");
        let line = match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the alibaba-sdk judge did not answer within {ANSWER_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the alibaba-sdk judge exited (see its stderr above)")
            }
        };
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the judge answered something that is not JSON ({e}): {line}")
        });
        if let Some(error) = answer.get("error") {
            panic!("the judge could not serve the request: {error}");
        }
        answer
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Differential properties.

fn cases() -> u32 {
    std::env::var("ALIBABA_SDK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        // Shrinking a failure talks to the judge too; keep it bounded.
        max_shrink_time: 60_000,
        ..Config::default()
    })
}

/// Runs `property` over `strategy` with the judge, then checks the number of cases and reports
/// the time taken.
fn run_differential<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(&mut Judge, S::Value) -> Result<(), TestCaseError>,
) {
    let judge = RefCell::new(Judge::start("oracle"));
    let count = Cell::new(0u32);
    let started = Instant::now();
    let result = runner().run(&strategy, |case| {
        count.set(count.get() + 1);
        property(&mut judge.borrow_mut(), case)
    });
    if let Err(e) = result {
        panic!("{name}: this project's signer and Alibaba's SDK differ: {e}");
    }
    let elapsed = started.elapsed();
    assert!(
        count.get() >= cases(),
        "{name}: only {} cases ran",
        count.get()
    );
    eprintln!(
        "{name}: {} random cases equal to Alibaba's SDK byte for byte in {:.2} s",
        count.get(),
        elapsed.as_secs_f64()
    );
}

/// Parameter values: everything that is encoded differently somewhere.
fn value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[ -~]{0,24}",                         // printable ASCII, every reserved character
        3 => "[~*+/=&% a-zA-Z0-9._-]{0,24}",        // the characters encodings disagree on
        2 => ".{0,16}",                             // any Unicode scalar value
        1 => "[ \t\r\nA-Za-z\u{a0}\u{85}\u{2028}é中\u{1F600}]{0,16}", // whitespace, multi-byte
        1 => chars("ABCXYZabcxyz0189%&=+ ", 300..2000), // long
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A temporary credential's SecurityToken: long, base64 with `+ / =`.
fn sts_token() -> BoxedStrategy<String> {
    (
        chars(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            200..1200,
        ),
        "={0,2}",
    )
        .prop_map(|(body, pad)| format!("CAIS{body}{pad}"))
        .boxed()
}

/// Strings of `len` characters from `alphabet` (cheaper to generate than a long regex).
fn chars(alphabet: &str, len: std::ops::Range<usize>) -> BoxedStrategy<String> {
    let alphabet: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(alphabet), len)
        .prop_map(String::from_iter)
        .boxed()
}

fn secret() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[A-Za-z0-9]{30}",
        1 => ".{0,40}",
    ]
    .boxed()
}

fn method() -> BoxedStrategy<String> {
    prop_oneof![Just("GET".to_string()), Just("POST".to_string())].boxed()
}

/// What a masked failure report shows of a text.
fn shown(text: &str) -> String {
    signer_v3::mask(text)
}

/// Compares named stages; on a difference, reports both sides (secrets masked) and the input.
fn compare(stages: &[(&str, &str, &str)], input: impl Fn() -> String) -> Result<(), TestCaseError> {
    let differing: Vec<String> = stages
        .iter()
        .filter(|(_, ours, sdk)| ours != sdk)
        .map(|(name, ours, sdk)| {
            format!(
                "{name}:\n  ours: {:?}\n  SDK:  {:?}",
                shown(ours),
                shown(sdk)
            )
        })
        .collect();
    if differing.is_empty() {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "\n{}\ninput (secret masked): {}",
            differing.join("\n"),
            input()
        )))
    }
}

/// An RPC case: method, parameters (distinct names, never `Signature`), secret. `Debug` (which
/// proptest prints for a failing case) masks the secret and the secret parameters.
#[derive(Clone)]
struct RpcCase {
    method: String,
    params: BTreeMap<String, String>,
    secret: String,
}

impl std::fmt::Debug for RpcCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcCase")
            .field("method", &self.method)
            .field("params", &mask_params(&self.params))
            .field("secret", &format_args!("*** ({} bytes)", self.secret.len()))
            .finish()
    }
}

fn rpc_case() -> impl Strategy<Value = RpcCase> {
    let name = prop_oneof![
        3 => "[A-Za-z][A-Za-z0-9.]{0,20}",     // ECS-like names (Tag.1.Key)
        1 => "[ -~]{0,12}",                    // reserved characters in names too
        1 => ".{0,8}",
    ]
    .prop_filter("Signature is never signed", |n| n != "Signature");
    let arbitrary = prop::collection::btree_map(name, value(), 0..40);
    // A realistic request: the common parameters, an STS token sometimes, business parameters.
    let realistic = (
        "[A-Za-z]{6,24}",
        "[0-9a-f-]{36}",
        prop::option::of(sts_token()),
        prop::collection::btree_map("[A-Z][A-Za-z0-9.]{1,20}", value(), 0..12),
    )
        .prop_map(|(action, nonce, token, business)| {
            let mut p: BTreeMap<String, String> = business;
            for (k, v) in [
                ("Action", action.as_str()),
                ("Version", "2014-05-26"),
                ("Format", "JSON"),
                ("AccessKeyId", "LTAI5tTestAccessKeyId"),
                ("SignatureMethod", "HMAC-SHA1"),
                ("SignatureVersion", "1.0"),
                ("SignatureNonce", nonce.as_str()),
                ("Timestamp", "2026-11-27T10:00:05Z"),
            ] {
                p.insert(k.into(), v.into());
            }
            if let Some(token) = token {
                p.insert("SecurityToken".into(), token);
            }
            p
        });
    (method(), prop_oneof![arbitrary, realistic], secret()).prop_map(|(method, params, secret)| {
        RpcCase {
            method,
            params,
            secret,
        }
    })
}

#[test]
fn rpc_signature_equals_alibabas_sdk_on_random_requests() {
    run_differential("RPC signature (HMAC-SHA1)", rpc_case(), |judge, case| {
        let RpcCase {
            method,
            params,
            secret,
        } = &case;
        let sdk = judge.ask(&json!({
            "kind": "rpc",
            "method": method,
            "params": params.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
            "secret": secret,
        }));
        let ours = signer::sign(
            method,
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &SecretString::new(secret.as_str()),
        );
        compare(
            &[
                (
                    "string to sign",
                    &ours.string_to_sign,
                    sdk["stringToSign"].as_str().unwrap_or_default(),
                ),
                (
                    "signature",
                    &ours.signature,
                    sdk["signature"].as_str().unwrap_or_default(),
                ),
            ],
            || format!("{case:?}"),
        )
    });
}

fn mask_params(params: &BTreeMap<String, String>) -> BTreeMap<&str, String> {
    params
        .iter()
        .map(|(k, v)| {
            let shown = if signer::SENSITIVE_PARAMETERS.contains(&k.as_str()) {
                "***".to_string()
            } else {
                v.clone()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// A V3 case as the client would build it, plus arbitrary extra headers and query parameters.
/// `Debug` masks the secret and the STS token.
#[derive(Clone)]
struct V3Case {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: String,
    access_key_id: String,
    secret: String,
}

/// Header names are HTTP tokens (ASCII); mixed case, so that a name may come twice in two cases.
fn header_name() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[xX]-[aA][cC][sS]-[A-Za-z0-9-]{1,12}",
        1 => "(Content-Type|content-type|Host|HOST|x-acs-date|X-Acs-Action)",
        2 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}",   // any token, mostly not signed
    ]
    .boxed()
}

/// Header values: visible ASCII with surrounding whitespace to trim, and (the functions being
/// pure) Unicode, including the whitespace both Go's TrimSpace and Rust's trim remove.
fn header_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[ \t]{0,2}[!-~]{0,30}[ \t]{0,2}",
        1 => "[ \u{a0}\u{85}\u{2003}\u{3000}]{0,2}.{0,12}[ \u{a0}\u{2028}]{0,2}",
        1 => Just(String::new()),
    ]
    .boxed()
}

impl std::fmt::Debug for V3Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut headers = self.headers.clone();
        if let Some(token) = headers.get_mut(signer_v3::HEADER_SECURITY_TOKEN) {
            *token = "***".into();
        }
        f.debug_struct("V3Case")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &mask_params(&self.query))
            .field("headers", &headers)
            .field("body", &self.body)
            .field("access_key_id", &self.access_key_id)
            .field("secret", &format_args!("*** ({} bytes)", self.secret.len()))
            .finish()
    }
}

fn v3_case() -> impl Strategy<Value = V3Case> {
    // Query names: ECS's names are [A-Za-z0-9.]; any RFC 3986 unreserved name is compared (see
    // `v3_query_names_outside_unreserved_are_a_documented_corner` for the rest).
    let query = prop::collection::btree_map("[A-Za-z0-9._~-]{1,20}", value(), 0..16);
    let path = prop_oneof![
        4 => Just("/".to_string()),
        1 => "(/[A-Za-z0-9._~-]{1,8}){1,3}/?",
    ];
    let common = (
        "[a-z0-9.-]{3,30}(:[0-9]{1,5})?",
        "[A-Za-z]{6,24}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        "[0-9a-f]{32}",
        prop::option::of(sts_token()),
    );
    let extra = prop::collection::btree_map(header_name(), header_value(), 0..8);
    (
        method(),
        path,
        query,
        common,
        extra,
        prop_oneof![3 => "[a-zA-Z0-9=&%._-]{0,200}", 1 => ".{0,200}"],
        "[A-Za-z0-9.]{8,30}",
        secret(),
    )
        .prop_map(
            |(
                method,
                path,
                query,
                (host, action, date, nonce, token),
                extra,
                body,
                key,
                secret,
            )| {
                let mut headers: BTreeMap<String, String> = extra;
                headers.insert("host".into(), host);
                headers.insert(signer_v3::HEADER_ACTION.into(), action);
                headers.insert(signer_v3::HEADER_VERSION.into(), "2014-05-26".into());
                headers.insert(signer_v3::HEADER_DATE.into(), date);
                headers.insert(signer_v3::HEADER_NONCE.into(), nonce);
                headers.insert(
                    signer_v3::HEADER_CONTENT_SHA256.into(),
                    signer_v3::hashed_payload(body.as_bytes()),
                );
                if let Some(token) = token {
                    headers.insert(signer_v3::HEADER_ACCESS_KEY_ID.into(), key.clone());
                    headers.insert(signer_v3::HEADER_SECURITY_TOKEN.into(), token);
                }
                headers.insert("user-agent".into(), "ecs-vnc-controller/test".into());
                V3Case {
                    method,
                    path,
                    query,
                    headers,
                    body,
                    access_key_id: key,
                    secret,
                }
            },
        )
}

fn v3_request(case: &V3Case) -> Value {
    json!({
        "kind": "v3",
        "method": case.method,
        "path": case.path,
        "query": case.query.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
        "headers": case.headers.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
        "body": case.body,
        "accessKeyId": case.access_key_id,
        "secret": case.secret,
    })
}

#[test]
fn v3_signature_equals_alibabas_sdk_on_random_requests() {
    run_differential(
        "V3 signature (ACS3-HMAC-SHA256)",
        v3_case(),
        |judge, case| {
            let sdk = judge.ask(&v3_request(&case));
            let query: Vec<(&str, &str)> = case
                .query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let headers: Vec<(&str, &str)> = case
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let hashed = signer_v3::hashed_payload(case.body.as_bytes());
            let (canonical_headers, signed_headers) =
                signer_v3::canonical_headers(headers.iter().copied());
            let ours = signer_v3::sign(
                &signer_v3::Request {
                    method: &case.method,
                    path: &case.path,
                    query: &query,
                    headers: &headers,
                    hashed_payload: &hashed,
                },
                &case.access_key_id,
                &SecretString::new(case.secret.as_str()),
            );
            let s = |name: &str| sdk[name].as_str().unwrap_or_default().to_string();
            compare(
                &[
                    ("hashed payload", &hashed, &s("hashedPayload")),
                    (
                        "canonical query",
                        &signer_v3::canonical_query(query.iter().copied()),
                        &s("canonicalQuery"),
                    ),
                    (
                        "canonical headers",
                        &canonical_headers,
                        &s("canonicalHeaders"),
                    ),
                    ("signed headers", &signed_headers, &s("signedHeaders")),
                    (
                        "canonical request",
                        &ours.canonical_request,
                        &s("canonicalRequest"),
                    ),
                    ("string to sign", &ours.string_to_sign, &s("stringToSign")),
                    ("signature", &ours.signature, &s("signature")),
                    ("Authorization", &ours.authorization, &s("authorization")),
                ],
                || format!("{case:?}"),
            )
        },
    );
}

/// The published vectors, through the judge: the SDK agrees with Alibaba's documents too, so the
/// judge itself is not wrong in the same way as the signer.
#[test]
fn the_judge_reproduces_alibabas_published_vectors() {
    let mut judge = Judge::start("oracle");
    // Signature V1 documentation, DescribeDedicatedHosts (see `ecs::signer`'s vector B).
    let rpc = judge.ask(
        &json!({"kind": "rpc", "method": "GET", "secret": "testsecret", "params": [
        ["AccessKeyId", "testid"], ["Action", "DescribeDedicatedHosts"], ["Format", "JSON"],
        ["RegionId", "cn-beijing"], ["SignatureMethod", "HMAC-SHA1"],
        ["SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"], ["SignatureVersion", "1.0"],
        ["Timestamp", "2023-03-13T08:34:30Z"], ["Version", "2014-05-26"]]}),
    );
    assert_eq!(rpc["signature"], "9NaGiOspFP5UPcwX8Iwt2YJXXuk=");
    // "V3 request structure and signature", fixed parameter values:
    // https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature
    let v3 = judge.ask(&json!({"kind": "v3", "method": "POST", "path": "/",
        "accessKeyId": "YourAccessKeyId", "secret": "YourAccessKeySecret", "body": "",
        "query": [["ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"], ["RegionId", "cn-shanghai"]],
        "headers": [["host", "ecs.cn-shanghai.aliyuncs.com"], ["x-acs-action", "RunInstances"],
            ["x-acs-content-sha256", signer_v3::EMPTY_PAYLOAD_SHA256],
            ["x-acs-date", "2023-10-26T10:22:32Z"], ["x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"],
            ["x-acs-version", "2014-05-26"]]}));
    assert_eq!(
        v3["stringToSign"],
        "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    );
    assert_eq!(
        v3["signature"],
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    );
}

/// Where the SDK and Alibaba's document disagree, and which side the signer takes. The SDK's
/// `getCanonicalQueryString` leaves parameter *names* unencoded (only values are encoded), while
/// the document encodes names and values. No ECS parameter name has a character outside
/// `A-Z a-z 0-9 .`, so the two never differ for a real request; the signer follows the document,
/// and this test pins the difference so that a change on either side is noticed.
#[test]
fn v3_query_names_outside_unreserved_are_a_documented_corner() {
    let mut judge = Judge::start("oracle");
    let mut case = V3Case {
        method: "POST".into(),
        path: "/".into(),
        query: BTreeMap::from([("a b".to_string(), "x y".to_string())]),
        headers: BTreeMap::from([("host".to_string(), "h".to_string())]),
        body: String::new(),
        access_key_id: "id".into(),
        secret: "s".into(),
    };
    let sdk = judge.ask(&v3_request(&case));
    assert_eq!(sdk["canonicalQuery"], "a b=x%20y");
    assert_eq!(signer_v3::canonical_query([("a b", "x y")]), "a%20b=x%20y");
    case.query = BTreeMap::from([("a/b".to_string(), "x/y".to_string())]);
    let sdk = judge.ask(&v3_request(&case));
    assert_eq!(sdk["canonicalQuery"], "a/b=x%2Fy");
    assert_eq!(signer_v3::canonical_query([("a/b", "x/y")]), "a%2Fb=x%2Fy");
}

// ---------------------------------------------------------------------------------------------
// Interop: the SDK's ECS client against the simulator.

const REGION: &str = "cn-hangzhou";
const KEY: (&str, &str) = ("LTAI5tSdkInterop", "sdk-interop-secret");
const STS: (&str, &str, &str) = (
    "STS.NTestSdkInterop",
    "sts-interop-secret",
    "CAIS+/sdk-interop-token==",
);

struct Interop {
    _runtime: tokio::runtime::Runtime,
    sim: RunningSimulator,
    judge: Judge,
}

fn instance(id: &str, io: bool, status: &str) -> InstanceConfig {
    InstanceConfig {
        id: id.into(),
        region: REGION.into(),
        io_optimized: io,
        status: status.into(),
        tags: Default::default(),
    }
}

impl Interop {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = runtime
            .block_on(Simulator::start(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SimulatorConfig {
                    access_keys: vec![
                        AccessKeyConfig {
                            id: KEY.0.into(),
                            secret: KEY.1.into(),
                            security_token: None,
                            account_id: None,
                        },
                        AccessKeyConfig {
                            id: STS.0.into(),
                            secret: STS.1.into(),
                            security_token: Some(STS.2.into()),
                            account_id: None,
                        },
                    ],
                    instances: vec![
                        instance("i-sdkio0000001", true, "Running"),
                        instance("i-sdknonio00001", false, "Running"),
                        instance("i-sdkio0000002", true, "Running"),
                        instance("i-sdkstarting01", true, "Starting"),
                        instance("i-sdkreleased01", true, "Released"),
                        InstanceConfig {
                            region: "cn-beijing".into(),
                            ..instance("i-sdkbeijing001", true, "Running")
                        },
                    ],
                    ..Default::default()
                },
            ))
            .expect("start the simulator");
        Self {
            _runtime: runtime,
            sim,
            judge: Judge::start("client"),
        }
    }

    fn endpoint(&self) -> String {
        self.sim.url().trim_start_matches("http://").to_string()
    }

    /// One call by the SDK: `signature` "rpc" or "v3", `sts` to use the temporary key.
    fn call(&mut self, signature: &str, sts: bool, action: &str, params: Value) -> Value {
        let (id, secret, token) = if sts { STS } else { (KEY.0, KEY.1, "") };
        self.call_as(signature, (id, secret, token), action, params)
    }

    fn call_as(
        &mut self,
        signature: &str,
        key: (&str, &str, &str),
        action: &str,
        params: Value,
    ) -> Value {
        let request = json!({
            "endpoint": self.endpoint(), "protocol": "http", "signature": signature,
            "accessKeyId": key.0, "accessKeySecret": key.1, "securityToken": key.2,
            "action": action, "params": params,
        });
        self.judge.ask(&request)
    }
}

fn ok_body<'a>(answer: &'a Value, what: &str) -> &'a Value {
    assert_eq!(answer["ok"], true, "{what}: the SDK reported {answer}");
    assert_eq!(answer["statusCode"], 200, "{what}: {answer}");
    let request_id = answer["body"]["RequestId"].as_str().unwrap_or_default();
    assert!(
        request_id.len() == 36
            && request_id
                .chars()
                .all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{what}: the SDK decoded no RequestId: {answer}"
    );
    &answer["body"]
}

fn is_minute_start_time(text: &str) -> bool {
    // yyyy-MM-ddTHH:mmZ, as ECS documents StartTime.
    let b = text.as_bytes();
    b.len() == 17 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b'Z'
}

#[test]
fn the_sdk_is_served_every_action_the_controller_uses_with_both_signatures() {
    let mut t = Interop::start();
    for signature in ["rpc", "v3"] {
        for sts in [false, true] {
            let what = |action: &str| format!("{action} ({signature}, sts {sts})");
            let password = if sts { "Sts123" } else { "Key123" };
            let password = format!(
                "{}{}",
                &password[..5],
                if signature == "rpc" { "1" } else { "3" }
            );

            // ModifyInstanceVncPasswd on an I/O-optimized and a non-I/O-optimized instance.
            for id in ["i-sdkio0000001", "i-sdknonio00001"] {
                let a = t.call(
                    signature,
                    sts,
                    "ModifyInstanceVncPasswd",
                    json!({"RegionId": REGION, "InstanceId": id, "VncPassword": password}),
                );
                ok_body(&a, &what("ModifyInstanceVncPasswd"));
                let i = t.sim.state().instance(id).unwrap();
                assert_eq!(
                    i.set_password.as_deref(),
                    Some(password.as_str()),
                    "{}",
                    what("ModifyInstanceVncPasswd")
                );
            }

            // DescribeInstances: paging fields, IoOptimized a boolean, StartTime, Status.
            let ids = json!(["i-sdkio0000001", "i-sdknonio00001", "i-sdkunknown001"]).to_string();
            let a = t.call(signature, sts, "DescribeInstances",
                json!({"RegionId": REGION, "InstanceIds": ids, "PageSize": "100", "PageNumber": "1"}));
            let body = ok_body(&a, &what("DescribeInstances"));
            assert_eq!(body["TotalCount"], 2, "{a}");
            assert_eq!(body["PageNumber"], 1, "{a}");
            assert_eq!(body["PageSize"], 100, "{a}");
            let instances = body["Instances"]["Instance"]
                .as_array()
                .expect("Instances.Instance");
            assert_eq!(instances.len(), 2, "{a}");
            for i in instances {
                let id = i["InstanceId"].as_str().unwrap();
                assert_eq!(
                    i["IoOptimized"],
                    json!(id == "i-sdkio0000001"),
                    "IoOptimized is a boolean: {i}"
                );
                assert_eq!(i["Status"], "Running", "{i}");
                assert_eq!(i["RegionId"], REGION, "{i}");
                let start = i["StartTime"].as_str().unwrap_or_default();
                assert!(is_minute_start_time(start), "StartTime {start:?}: {i}");
            }

            // Paging: one per page.
            let a = t.call(
                signature,
                sts,
                "DescribeInstances",
                json!({"RegionId": REGION, "InstanceIds": ids, "PageSize": "1", "PageNumber": "2"}),
            );
            let body = ok_body(&a, &what("DescribeInstances page 2"));
            assert_eq!(
                (
                    body["TotalCount"].clone(),
                    body["PageNumber"].clone(),
                    body["PageSize"].clone()
                ),
                (json!(2), json!(2), json!(1)),
                "{a}"
            );
            assert_eq!(
                body["Instances"]["Instance"].as_array().map(Vec::len),
                Some(1),
                "{a}"
            );

            // DescribeInstanceAttribute: IoOptimized a string there.
            for (id, io) in [("i-sdkio0000001", "optimized"), ("i-sdknonio00001", "none")] {
                let a = t.call(
                    signature,
                    sts,
                    "DescribeInstanceAttribute",
                    json!({"InstanceId": id}),
                );
                let body = ok_body(&a, &what("DescribeInstanceAttribute"));
                assert_eq!(body["IoOptimized"], io, "IoOptimized is a string: {a}");
                assert_eq!(body["Status"], "Running", "{a}");
                assert_eq!(body["InstanceId"], id, "{a}");
            }

            // RebootInstance makes the pending password effective.
            let before = t.sim.state().instance("i-sdknonio00001").unwrap();
            assert_ne!(
                before.effective_password.as_deref(),
                Some(password.as_str())
            );
            let a = t.call(
                signature,
                sts,
                "RebootInstance",
                json!({"InstanceId": "i-sdknonio00001"}),
            );
            ok_body(&a, &what("RebootInstance"));
            let after = t.sim.state().instance("i-sdknonio00001").unwrap();
            assert_eq!(after.effective_password.as_deref(), Some(password.as_str()));
            assert_eq!(after.reboot_count, before.reboot_count + 1);
        }
    }
    // Every call above was authenticated the way it was meant to be.
    assert_eq!(
        t.sim
            .state()
            .counts()
            .values()
            .flat_map(|c| c.keys())
            .filter(|code| *code != "Success")
            .count(),
        0,
        "{:?}",
        t.sim.state().counts()
    );
}

#[test]
fn every_documented_error_of_modify_instance_vnc_passwd_reaches_the_sdk() {
    let mut t = Interop::start();
    for signature in ["rpc", "v3"] {
        for (region, id, password, status, code) in [
            (
                REGION,
                "i-sdkio0000001",
                Some("bad!!1"),
                400,
                "IncorrectVncPassword.Malformed",
            ),
            (
                REGION,
                "i-sdkio0000001",
                Some("Ecs1234"),
                400,
                "IncorrectVncPassword.Malformed",
            ),
            (
                "xx-nowhere-1",
                "i-sdkio0000001",
                Some("Ecs123"),
                404,
                "InvalidRegionId.NotFound",
            ),
            (
                REGION,
                "i-sdkunknown001",
                Some("Ecs123"),
                404,
                "InvalidInstanceId.NotFound",
            ),
            (
                REGION,
                "i-sdkbeijing001",
                Some("Ecs123"),
                404,
                "InvalidInstanceId.NotFound",
            ),
            (
                REGION,
                "i-sdkreleased01",
                Some("Ecs123"),
                404,
                "NoSuchResource",
            ),
            (
                REGION,
                "i-sdkstarting01",
                Some("Ecs123"),
                403,
                "IncorrectInstanceStatus",
            ),
            (REGION, "i-sdkio0000001", None, 400, "MissingParameter"),
        ] {
            let mut params = json!({"RegionId": region, "InstanceId": id});
            if let Some(p) = password {
                params["VncPassword"] = json!(p);
            }
            let a = t.call(signature, false, "ModifyInstanceVncPasswd", params);
            assert_eq!(a["ok"], false, "{signature} {code}: {a}");
            assert_eq!(
                (a["code"].as_str(), a["statusCode"].as_i64()),
                (Some(code), Some(status)),
                "{signature}: {a}"
            );
            let request_id = a["requestId"].as_str().unwrap_or_default();
            assert_eq!(
                request_id.len(),
                36,
                "{signature} {code}: no RequestId in the SDKError: {a}"
            );
        }
    }
}

#[test]
fn the_sdk_sees_authentication_and_throttling_errors_as_ecs_reports_them() {
    let mut t = Interop::start();
    let describe = json!({"InstanceId": "i-sdkio0000001"});
    for signature in ["rpc", "v3"] {
        let cases: [((&str, &str, &str), u16, &str); 5] = [
            ((KEY.0, "not-the-secret", ""), 400, "SignatureDoesNotMatch"),
            (
                ("LTAI5tUnknownKey", KEY.1, ""),
                404,
                "InvalidAccessKeyId.NotFound",
            ),
            ((STS.0, STS.1, ""), 400, "InvalidSecurityToken.Malformed"),
            (
                (STS.0, STS.1, "CAIS-other"),
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
            ),
            (
                (KEY.0, KEY.1, "CAIS-unexpected"),
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
            ),
        ];
        for (key, status, code) in cases {
            let a = t.call_as(
                signature,
                key,
                "DescribeInstanceAttribute",
                describe.clone(),
            );
            assert_eq!(
                (a["code"].as_str(), a["statusCode"].as_i64()),
                (Some(code), Some(i64::from(status))),
                "{signature}: {a}"
            );
            assert!(
                !a["message"].as_str().unwrap_or_default().contains("CAIS"),
                "{a}"
            );
        }
        t.sim
            .state()
            .throttle_next(1, Some("DescribeInstanceAttribute"));
        let a = t.call(
            signature,
            false,
            "DescribeInstanceAttribute",
            describe.clone(),
        );
        assert_eq!(
            (a["code"].as_str(), a["statusCode"].as_i64()),
            (Some("Throttling.User"), Some(400)),
            "{a}"
        );
    }
}

/// Tags and paging as the SDK's typed DescribeInstances sends and decodes them: `Tag` filters
/// (ANDed, a key alone, none matching), `MaxResults`/`NextToken` through 250 tagged instances page
/// by page, each instance's `Tags.Tag[]` and the `NextToken` decoded by the SDK's models and
/// compared with what the simulator holds; bad filters and a bad token refused with ECS's codes.
#[test]
fn the_sdk_filters_by_tags_and_pages_by_next_token() {
    let mut t = Interop::start();
    const NS: &str = "ecsvnc.io/namespace";
    for n in 0..250 {
        let mut tags = BTreeMap::from([(NS.to_string(), "sdk-team".to_string())]);
        if n % 5 == 0 {
            tags.insert("env".into(), "prod".into());
        }
        t.sim.state().add_instance(InstanceConfig {
            tags,
            ..instance(&format!("i-sdktag{n:05}"), n % 2 == 0, "Running")
        });
    }
    // A namesake in another region and a released one: never described here.
    t.sim.state().add_instance(InstanceConfig {
        region: "cn-beijing".into(),
        tags: BTreeMap::from([(NS.to_string(), "sdk-team".to_string())]),
        ..instance("i-sdktagbj0001", true, "Running")
    });
    t.sim.state().add_instance(InstanceConfig {
        tags: BTreeMap::from([(NS.to_string(), "sdk-team".to_string())]),
        ..instance("i-sdktaggone01", true, "Released")
    });
    let held = |state: &ecs_vnc_controller::simulator::SimState,
                want: &dyn Fn(&BTreeMap<String, String>) -> bool| {
        state
            .instances()
            .into_iter()
            .filter(|i| i.region == REGION && i.status != "Released" && want(&i.tags))
            .map(|i| (i.id, i.tags))
            .collect::<BTreeMap<_, _>>()
    };
    let team = held(t.sim.state(), &|tags| {
        tags.get(NS).is_some_and(|v| v == "sdk-team")
    });
    let prod = held(t.sim.state(), &|tags| {
        tags.get(NS).is_some_and(|v| v == "sdk-team")
            && tags.get("env").is_some_and(|v| v == "prod")
    });
    let with_env = held(t.sim.state(), &|tags| tags.contains_key("env"));
    assert_eq!((team.len(), prod.len(), with_env.len()), (250, 50, 50));
    let everything = held(t.sim.state(), &|_| true);

    for signature in ["rpc", "v3"] {
        for (filters, max_results, per_page, expected) in [
            (
                json!({"Tag.1.Key": NS, "Tag.1.Value": "sdk-team"}),
                "100",
                100,
                &team,
            ),
            (
                json!({"Tag.1.Key": NS, "Tag.1.Value": "sdk-team"}),
                "30",
                30,
                &team,
            ),
            (
                json!({"Tag.1.Key": NS, "Tag.1.Value": "sdk-team", "Tag.2.Key": "env", "Tag.2.Value": "prod"}),
                "20",
                20,
                &prod,
            ),
            (json!({"Tag.1.Key": "env"}), "100", 100, &with_env),
            (json!({}), "100", 100, &everything),
        ] {
            let what = format!("{signature} {filters} by {max_results}");
            let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let mut token: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut params = filters.clone();
                params["RegionId"] = json!(REGION);
                params["MaxResults"] = json!(max_results);
                if let Some(token) = &token {
                    params["NextToken"] = json!(token);
                }
                let a = t.call(signature, pages % 2 == 1, "DescribeInstances", params);
                let body = ok_body(&a, &what);
                pages += 1;
                let instances = body["Instances"]["Instance"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for i in &instances {
                    let id = i["InstanceId"].as_str().unwrap().to_string();
                    let tags: BTreeMap<String, String> = i["Tags"]["Tag"]
                        .as_array()
                        .map(|tags| {
                            tags.iter()
                                .map(|t| {
                                    (
                                        t["TagKey"].as_str().unwrap().to_string(),
                                        t["TagValue"].as_str().unwrap_or_default().to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    assert!(
                        seen.insert(id.clone(), tags).is_none(),
                        "{what}: {id} twice"
                    );
                }
                let next = body["NextToken"].as_str().unwrap_or_default();
                if next.is_empty() {
                    assert!(instances.len() <= per_page, "{what}: {a}");
                    break;
                }
                assert_eq!(
                    instances.len(),
                    per_page,
                    "{what}: a page before the last is full"
                );
                assert!(pages < 50, "{what}: paging does not end");
                token = Some(next.to_string());
            }
            assert_eq!(pages, expected.len().div_ceil(per_page), "{what}");
            assert_eq!(
                &seen, expected,
                "{what}: tags and instances as the simulator holds them"
            );
        }

        // Refused as ECS refuses them, as an SDKError with the code and HTTP status.
        let twenty_one: serde_json::Map<String, Value> = (1..=21)
            .flat_map(|n| {
                [
                    (format!("Tag.{n}.Key"), json!(format!("k{n}"))),
                    (format!("Tag.{n}.Value"), json!("v")),
                ]
            })
            .collect();
        for (params, code) in [
            (Value::Object(twenty_one), "InvalidTagCount"),
            (json!({"Tag.1.Value": "sdk-team"}), "InvalidTag.Mismatch"),
            (
                json!({"Tag.1.Key": "", "Tag.1.Value": "sdk-team"}),
                "InvalidTag.Mismatch",
            ),
            (
                json!({"MaxResults": "10", "NextToken": "caeba0bbb2be03f84eb48b699f0a4883"}),
                "InvalidParameter.NextToken",
            ),
        ] {
            let mut params = params;
            params["RegionId"] = json!(REGION);
            let a = t.call(signature, false, "DescribeInstances", params.clone());
            assert_eq!(
                (
                    a["ok"].as_bool(),
                    a["code"].as_str(),
                    a["statusCode"].as_i64()
                ),
                (Some(false), Some(code), Some(400)),
                "{signature} {params}: {a}"
            );
        }
    }
}

/// Values with every reserved character, spaces and non-ASCII, as the SDK puts them on the wire
/// (query string, `+` for spaces), verify in the simulator with both signatures.
#[test]
fn the_sdk_wire_encoding_of_awkward_values_verifies_in_the_simulator() {
    let mut t = Interop::start();
    for signature in ["rpc", "v3"] {
        for awkward in [
            "a b*c~d+e/f=g&h%i",
            "中文 é \u{1F600}",
            " lead and trail ",
            "%20%2B+",
            "",
        ] {
            let ids = json!([format!("i-{awkward}")]).to_string();
            let a = t.call(
                signature,
                true,
                "DescribeInstances",
                json!({"RegionId": REGION, "InstanceIds": ids, "PageSize": "10"}),
            );
            let body = ok_body(
                &a,
                &format!("DescribeInstances with {awkward:?} ({signature})"),
            );
            assert_eq!(body["TotalCount"], 0, "{a}");
        }
        // A malformed password full of reserved characters is refused for what it is, not for its
        // signature.
        let a = t.call(
            signature,
            false,
            "ModifyInstanceVncPasswd",
            json!({"RegionId": REGION, "InstanceId": "i-sdkio0000002", "VncPassword": "a+b c&"}),
        );
        assert_eq!(
            a["code"], "IncorrectVncPassword.Malformed",
            "{signature}: {a}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// This project's client, as it goes on the wire, judged by the SDK's signing functions.

/// One request as a server received it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A server that records every request and answers `{"RequestId": ...}`.
fn capture_server(
    runtime: &tokio::runtime::Runtime,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Captured>>>) {
    use axum::extract::{Request, State};
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Captured>>>;
    async fn handle(State(seen): State<Seen>, request: Request) -> axum::response::Response {
        use axum::response::IntoResponse;
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let headers = request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec();
        seen.lock().unwrap().push(Captured {
            method,
            uri,
            headers,
            body,
        });
        (
            [("content-type", "application/json;charset=utf-8")],
            r#"{"RequestId":"6A1E2C9D-0000-4000-8000-000000000000"}"#,
        )
            .into_response()
    }
    let seen: Seen = Default::default();
    let app = axum::Router::new()
        .route("/", axum::routing::any(handle))
        .with_state(seen.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Whatever this project's client sends — either signature, with or without an STS token, any
/// parameter values — carries the signature Alibaba's SDK computes for the request as received:
/// the V1 `Signature` equals `GetRPCSignature` over the received parameters, the V3
/// `Authorization` equals `GetAuthorization` over the received method, query, headers and body.
/// (This checks the client's encoding and HTTP layer too, and it does not use this project's
/// signer to verify anything.) Also: the password and the token never travel in the URL.
#[test]
fn our_client_on_the_wire_is_signed_as_alibabas_sdk_signs_it() {
    use ecs_vnc_controller::ecs::Credentials;
    use ecs_vnc_controller::ecs::client::{ClientConfig, EcsClient, SignatureVersion};
    use ecs_vnc_controller::ecs::retry::RetryPolicy;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, seen) = capture_server(&runtime);
    let judge = RefCell::new(Judge::start("oracle"));
    let count = Cell::new(0u32);
    /// `Debug` masks the token and the secret.
    #[derive(Clone)]
    struct WireCase {
        signature: SignatureVersion,
        token: Option<String>,
        name: String,
        tag: String,
        secret: String,
    }
    impl std::fmt::Debug for WireCase {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WireCase")
                .field("signature", &self.signature)
                .field("token", &self.token.as_ref().map(|_| "***"))
                .field("name", &self.name)
                .field("tag", &self.tag)
                .field("secret", &format_args!("*** ({} bytes)", self.secret.len()))
                .finish()
        }
    }
    let strategy = (
        prop_oneof![Just(SignatureVersion::V1), Just(SignatureVersion::V3)],
        prop::option::of(sts_token()),
        value(),
        value(),
        secret(),
    )
        .prop_map(|(signature, token, name, tag, secret)| WireCase {
            signature,
            token,
            name,
            tag,
            secret,
        });
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |case| {
        let WireCase {
            signature,
            token,
            name,
            tag,
            secret,
        } = case;
        count.set(count.get() + 1);
        let client = EcsClient::new(ClientConfig {
            endpoint: Some(url.clone()),
            qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(100_000.0),
            burst: 1000,
            retry: RetryPolicy { max_retries: 0, ..Default::default() },
            signature,
            ..Default::default()
        })
        .unwrap();
        let credentials = Credentials::new(
            "LTAI5tWireTest",
            SecretString::new(secret.as_str()),
            token.clone().map(SecretString::new),
        );
        let params = [
            ("RegionId", "cn-hangzhou"),
            ("InstanceId", "i-wire00000001"),
            ("VncPassword", "Wire12"),
            ("InstanceName", name.as_str()),
            ("Tag.1.Value", tag.as_str()),
        ];
        seen.lock().unwrap().clear();
        let sent: Result<Value, _> =
            runtime.block_on(client.call(&credentials, "cn-hangzhou", "ModifyInstanceVncPasswd", &params));
        prop_assert!(sent.is_ok(), "{:?}", sent.err());
        let request = seen.lock().unwrap().pop().expect("one request");
        let body = String::from_utf8(request.body.clone()).expect("a UTF-8 body");
        prop_assert_eq!(request.method.as_str(), "POST");
        prop_assert_eq!(request.uri.as_str(), "/", "nothing travels in the URL");
        let header = |name: &str| request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let in_form = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        prop_assert_eq!(in_form("VncPassword"), Some("Wire12".to_string()));
        prop_assert_eq!(in_form("InstanceName"), Some(name.clone()));
        match signature {
            SignatureVersion::V1 => {
                let sent_signature = in_form("Signature").expect("a Signature");
                let signed: Vec<[&String; 2]> = form.iter().filter(|(k, _)| k != "Signature").map(|(k, v)| [k, v]).collect();
                prop_assert_eq!(in_form("SecurityToken"), token.clone());
                let sdk = judge.borrow_mut().ask(&json!({"kind": "rpc", "method": "POST", "params": signed, "secret": secret}));
                prop_assert_eq!(sdk["signature"].as_str(), Some(sent_signature.as_str()),
                    "V1 request not signed as the SDK signs it; SDK string to sign {}", shown(sdk["stringToSign"].as_str().unwrap_or_default()));
            }
            SignatureVersion::V3 => {
                let authorization = header("authorization").expect("an Authorization header");
                prop_assert_eq!(header("x-acs-security-token"), token.clone());
                prop_assert_eq!(header("x-acs-action"), Some("ModifyInstanceVncPasswd".to_string()));
                prop_assert!(in_form("SecurityToken").is_none() && in_form("Signature").is_none());
                let headers: Vec<[&String; 2]> = request.headers.iter().filter(|(k, _)| k != "authorization").map(|(k, v)| [k, v]).collect();
                let sdk = judge.borrow_mut().ask(&json!({"kind": "v3", "method": "POST", "path": "/", "query": [],
                    "headers": headers, "body": body, "accessKeyId": "LTAI5tWireTest", "secret": secret}));
                prop_assert_eq!(sdk["authorization"].as_str(), Some(authorization.as_str()),
                    "V3 request not signed as the SDK signs it; SDK canonical request {}", shown(sdk["canonicalRequest"].as_str().unwrap_or_default()));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("a request of this project's client is not signed as Alibaba's SDK signs it: {e}");
    }
    assert!(count.get() >= 500);
}
