//! The ECS simulator, driven with raw signed requests built from the signer (and by the real
//! client): authentication failures as ECS reports them, every documented error of
//! ModifyInstanceVncPasswd, reboot semantics, formats, paging, faults, garbage input. Property
//! tests: whatever the client signs verifies; any change to a signed parameter does not.

use std::net::SocketAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use ecs_vnc_controller::ecs::client::{ClientConfig, EcsClient, SignatureVersion};
use ecs_vnc_controller::ecs::retry::RetryPolicy;
use ecs_vnc_controller::ecs::{Credentials, signer};
use ecs_vnc_controller::password::VncPassword;
use ecs_vnc_controller::secret::SecretString;
use ecs_vnc_controller::simulator::{
    AccessKeyConfig, FaultConfig, InstanceConfig, RunningSimulator, Simulator, SimulatorConfig,
};

const KEY: &str = "testid";
const SECRET: &str = "testsecret";

fn instance(id: &str, io: bool, status: &str) -> InstanceConfig {
    InstanceConfig {
        id: id.into(),
        region: "cn-hangzhou".into(),
        io_optimized: io,
        status: status.into(),
        tags: Default::default(),
    }
}

async fn sim() -> RunningSimulator {
    Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: vec![
                AccessKeyConfig {
                    id: KEY.into(),
                    secret: SECRET.into(),
                    security_token: None,
                    account_id: None,
                },
                AccessKeyConfig {
                    id: "STS.key".into(),
                    secret: "stssecret".into(),
                    security_token: Some("CAIS+/tok==".into()),
                    account_id: None,
                },
            ],
            instances: vec![
                instance("i-io000000001", true, "Running"),
                instance("i-nonio0000001", false, "Running"),
                instance("i-starting00001", true, "Starting"),
                instance("i-pending000001", true, "Pending"),
                instance("i-stopping00001", true, "Stopping"),
                instance("i-stopped000001", false, "Stopped"),
                instance("i-released00001", true, "Released"),
                InstanceConfig {
                    region: "cn-beijing".into(),
                    ..instance("i-beijing000001", true, "Running")
                },
            ],
            ..Default::default()
        },
    )
    .await
    .expect("start")
}

/// Common parameters for a fresh request.
fn common(action: &str, key: &str) -> Vec<(String, String)> {
    vec![
        ("Action".into(), action.into()),
        ("Version".into(), "2014-05-26".into()),
        ("Format".into(), "JSON".into()),
        ("AccessKeyId".into(), key.into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), uuid::Uuid::new_v4().to_string()),
        (
            "Timestamp".into(),
            signer::format_timestamp(jiff::Timestamp::now()),
        ),
    ]
}

fn signed(method: &str, mut params: Vec<(String, String)>, secret: &str) -> String {
    let s = signer::sign(
        method,
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &SecretString::new(secret),
    );
    params.retain(|(k, _)| k != "Signature");
    signer::encode_with_signature(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &s.signature,
    )
}

fn http() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        ecs_vnc_controller::ecs::client::install_crypto_provider();
        reqwest::Client::new()
    })
}

/// POSTs the form body; returns (HTTP status, body).
async fn post(sim: &RunningSimulator, body: String) -> (u16, String) {
    let r = http()
        .post(format!("{}/", sim.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn get(sim: &RunningSimulator, query: String) -> (u16, String) {
    let r = http()
        .get(format!("{}/?{query}", sim.url()))
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.text().await.expect("body"))
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["Code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn modify(sim: &RunningSimulator, region: &str, id: &str, password: &str) -> (u16, String) {
    let mut p = common("ModifyInstanceVncPasswd", KEY);
    p.extend([
        ("RegionId".into(), region.into()),
        ("InstanceId".into(), id.into()),
        ("VncPassword".into(), password.into()),
    ]);
    post(sim, signed("POST", p, SECRET)).await
}

#[tokio::test]
async fn every_documented_error_of_modify_instance_vnc_passwd_with_its_status() {
    let sim = sim().await;
    for (region, id, password, status, expected) in [
        (
            "cn-hangzhou",
            "i-io000000001",
            "bad!!1",
            400,
            "IncorrectVncPassword.Malformed",
        ),
        (
            "cn-hangzhou",
            "i-io000000001",
            "Ecs1234",
            400,
            "IncorrectVncPassword.Malformed",
        ),
        (
            "xx-nowhere-1",
            "i-io000000001",
            "Ecs123",
            404,
            "InvalidRegionId.NotFound",
        ),
        (
            "cn-hangzhou",
            "i-unknown00001",
            "Ecs123",
            404,
            "InvalidInstanceId.NotFound",
        ),
        (
            "cn-hangzhou",
            "i-beijing000001",
            "Ecs123",
            404,
            "InvalidInstanceId.NotFound",
        ),
        (
            "cn-hangzhou",
            "i-released00001",
            "Ecs123",
            404,
            "NoSuchResource",
        ),
        (
            "cn-hangzhou",
            "i-starting00001",
            "Ecs123",
            403,
            "IncorrectInstanceStatus",
        ),
        (
            "cn-hangzhou",
            "i-pending000001",
            "Ecs123",
            403,
            "IncorrectInstanceStatus",
        ),
        (
            "cn-hangzhou",
            "i-stopping00001",
            "Ecs123",
            403,
            "IncorrectInstanceStatus",
        ),
    ] {
        let (got_status, body) = modify(&sim, region, id, password).await;
        assert_eq!(
            (got_status, code(&body)),
            (status, expected.to_string()),
            "{region} {id}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["RequestId"].as_str().is_some_and(|r| r.len() == 36));
    }
    let mut p = common("ModifyInstanceVncPasswd", KEY);
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    p.push(("InstanceId".into(), "i-io000000001".into()));
    let (status, body) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((status, code(&body).as_str()), (400, "MissingParameter"));
    assert!(body.contains("VncPassword"));
}

#[tokio::test]
async fn signing_mistakes_are_caught_as_ecs_catches_them() {
    let sim = sim().await;
    // Missing common parameter.
    let mut p = common("DescribeInstances", KEY);
    p.retain(|(k, _)| k != "SignatureNonce");
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (400, "MissingParameter"));
    // Unknown key.
    let mut p = common("DescribeInstances", "nobody");
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (404, "InvalidAccessKeyId.NotFound"));
    // Wrong secret: the message ends with the server's string to sign.
    let mut p = common("DescribeInstances", KEY);
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let (s, b) = post(&sim, signed("POST", p.clone(), "wrong")).await;
    assert_eq!((s, code(&b).as_str()), (400, "SignatureDoesNotMatch"));
    let expected = signer::sign(
        "POST",
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &SecretString::new(SECRET),
    )
    .string_to_sign;
    let message = serde_json::from_str::<Value>(&b).unwrap()["Message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.ends_with(&format!("server string to sign is:{expected}")),
        "{message}"
    );
    // Signed as GET, sent as POST: the method is part of what is signed.
    let (s, b) = post(&sim, signed("GET", p.clone(), SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (400, "SignatureDoesNotMatch"));
    // Expired timestamp.
    let mut p = common("DescribeInstances", KEY);
    p.retain(|(k, _)| k != "Timestamp");
    p.push((
        "Timestamp".into(),
        signer::format_timestamp(jiff::Timestamp::now() - jiff::SignedDuration::from_mins(16)),
    ));
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (400, "InvalidTimeStamp.Expired"));
    // Reused nonce.
    let mut p = common("DescribeInstances", KEY);
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let body = signed("POST", p, SECRET);
    assert_eq!(post(&sim, body.clone()).await.0, 200);
    let (s, b) = post(&sim, body).await;
    assert_eq!((s, code(&b).as_str()), (400, "SignatureNonceUsed"));
}

#[tokio::test]
async fn sts_keys_need_their_own_token() {
    let sim = sim().await;
    let call = |token: Option<&str>| {
        let mut p = common("DescribeInstances", "STS.key");
        p.push(("RegionId".into(), "cn-hangzhou".into()));
        if let Some(t) = token {
            p.push(("SecurityToken".into(), t.into()));
        }
        signed("POST", p, "stssecret")
    };
    let (s, b) = post(&sim, call(None)).await;
    assert!(
        s == 400 && code(&b).starts_with("InvalidSecurityToken."),
        "{b}"
    );
    let (s, b) = post(&sim, call(Some("CAIS+/other=="))).await;
    assert!(
        s == 400 && code(&b).starts_with("InvalidSecurityToken."),
        "{b}"
    );
    let (s, _) = post(&sim, call(Some("CAIS+/tok=="))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn get_with_a_query_works_and_xml_is_the_default_format() {
    let sim = sim().await;
    let mut p = common("DescribeInstances", KEY);
    p.retain(|(k, _)| k != "Format");
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    p.push(("InstanceIds".into(), r#"["i-io000000001"]"#.into()));
    let (s, body) = get(&sim, signed("GET", p, SECRET)).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.starts_with("<?xml"), "{body}");
    assert!(
        body.contains("<DescribeInstancesResponse>")
            && body.contains("<InstanceId>i-io000000001</InstanceId>"),
        "{body}"
    );
    assert!(body.contains("<IoOptimized>true</IoOptimized>"));
    // Errors are XML too.
    let mut p = common("Nope", KEY);
    p.retain(|(k, _)| k != "Format");
    let (s, body) = get(&sim, signed("GET", p, SECRET)).await;
    assert_eq!(s, 404);
    assert!(
        body.contains("<Error>") && body.contains("<Code>InvalidAction.NotFound</Code>"),
        "{body}"
    );
}

#[tokio::test]
async fn describe_instances_pages_and_reports_documented_types() {
    let sim = sim().await;
    let page = |n: &str| {
        let mut p = common("DescribeInstances", KEY);
        p.extend([
            ("RegionId".into(), "cn-hangzhou".into()),
            ("PageSize".into(), "2".into()),
            ("PageNumber".into(), n.into()),
        ]);
        signed("POST", p, SECRET)
    };
    let first: Value = serde_json::from_str(&post(&sim, page("1")).await.1).unwrap();
    assert_eq!(
        first["TotalCount"], 6,
        "released and other regions are left out: {first}"
    );
    assert_eq!(first["Instances"]["Instance"].as_array().unwrap().len(), 2);
    let last: Value = serde_json::from_str(&post(&sim, page("3")).await.1).unwrap();
    assert_eq!(last["Instances"]["Instance"].as_array().unwrap().len(), 2);
    let i = &first["Instances"]["Instance"][0];
    assert!(i["IoOptimized"].is_boolean());
    let start = i["StartTime"].as_str().unwrap();
    assert!(
        start.len() == 17 && start.ends_with('Z'),
        "minute precision: {start}"
    );
    // DescribeInstanceAttribute reports IoOptimized as a word.
    let mut p = common("DescribeInstanceAttribute", KEY);
    p.push(("InstanceId".into(), "i-nonio0000001".into()));
    let v: Value = serde_json::from_str(&post(&sim, signed("POST", p, SECRET)).await.1).unwrap();
    assert_eq!(v["IoOptimized"], "none");
    assert!(v.get("StartTime").is_none());
}

#[tokio::test]
async fn a_non_io_optimized_password_takes_effect_only_after_a_restart() {
    let sim = sim().await;
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-nonio0000001", "Ecs123")
            .await
            .0,
        200
    );
    let before = sim.state().instance("i-nonio0000001").unwrap();
    assert_eq!(before.set_password.as_deref(), Some("Ecs123"));
    assert_eq!(before.effective_password, None);
    let mut p = common("RebootInstance", KEY);
    p.push(("InstanceId".into(), "i-nonio0000001".into()));
    assert_eq!(post(&sim, signed("POST", p, SECRET)).await.0, 200);
    let after = sim.state().instance("i-nonio0000001").unwrap();
    assert_eq!(after.effective_password.as_deref(), Some("Ecs123"));
    assert_eq!(after.reboot_count, 1);
    assert!(after.start_time > before.start_time);
    // A stopped instance cannot be rebooted.
    let mut p = common("RebootInstance", KEY);
    p.push(("InstanceId".into(), "i-stopped000001".into()));
    let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (403, "IncorrectInstanceStatus"));
    // I/O-optimized: at once.
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs456")
            .await
            .0,
        200
    );
    assert_eq!(
        sim.state()
            .instance("i-io000000001")
            .unwrap()
            .effective_password
            .as_deref(),
        Some("Ecs456")
    );
}

#[tokio::test]
async fn faults_throttle_fail_and_drop_and_the_admin_api_reports_them() {
    let sim = sim().await;
    sim.state().throttle_next(2, None);
    for _ in 0..2 {
        let (s, b) = modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123").await;
        assert_eq!((s, code(&b).as_str()), (400, "Throttling.User"));
    }
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123")
            .await
            .0,
        200
    );

    sim.state().set_faults(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    let (s, b) = modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123").await;
    assert!(
        s >= 500 && ["ServiceUnavailable", "InternalError"].contains(&code(&b).as_str()),
        "{s} {b}"
    );

    sim.state().set_faults(FaultConfig {
        drop_rate: 1.0,
        ..Default::default()
    });
    let mut p = common("DescribeInstances", KEY);
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let dropped = http()
        .post(format!("{}/", sim.url()))
        .body(signed("POST", p, SECRET))
        .send()
        .await;
    assert!(
        dropped.is_err() || dropped.unwrap().text().await.is_err(),
        "a dropped connection gives no answer"
    );

    sim.state().set_faults(FaultConfig {
        qps_per_access_key: Some(2.0),
        ..Default::default()
    });
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(code(
            &modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123")
                .await
                .1,
        ));
    }
    assert!(
        codes.iter().filter(|c| *c == "Throttling.User").count() >= 3,
        "{codes:?}"
    );

    let admin: Value = http()
        .get(format!("{}/_simulator/calls", sim.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(
        admin["counts"]["ModifyInstanceVncPasswd"]["Throttling.User"]
            .as_u64()
            .unwrap()
            >= 5
    );
    let instances: Value = http()
        .get(format!("{}/_simulator/instances", sim.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(
        instances
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["effectivePassword"] == "Ecs123")
    );
    let r = http()
        .post(format!(
            "{}/_simulator/instances/i-nonio0000001/reboot",
            sim.url()
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        sim.state().instance("i-nonio0000001").unwrap().reboot_count,
        1
    );
}

#[tokio::test]
async fn garbage_input_gets_an_ecs_shaped_error_never_a_crash() {
    let sim = sim().await;
    for body in [
        b"%FF%FE=%C3%28".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"&&&==&".to_vec(),
        vec![b'a'; 2 * 1024 * 1024],
    ] {
        let r = http()
            .post(format!("{}/", sim.url()))
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 400);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("<Error>") && text.contains("<Code>"),
            "{text}"
        );
    }
    // Still serving.
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123")
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn the_real_client_passes_against_the_simulator() {
    the_real_client_passes_with(SignatureVersion::V1).await;
}

#[tokio::test]
async fn the_real_client_passes_against_the_simulator_with_signature_v3() {
    the_real_client_passes_with(SignatureVersion::V3).await;
}

async fn the_real_client_passes_with(signature: SignatureVersion) {
    let sim = sim().await;
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        retry: RetryPolicy {
            max_retries: 0,
            ..Default::default()
        },
        signature,
        ..Default::default()
    })
    .unwrap();
    let sts = Credentials::new(
        "STS.key",
        SecretString::new("stssecret"),
        Some(SecretString::new("CAIS+/tok==")),
    );
    let pw = VncPassword::parse("Ecs789").unwrap();
    client
        .modify_instance_vnc_passwd(&sts, "cn-hangzhou", "i-nonio0000001", &pw)
        .await
        .unwrap();
    let ids = vec!["i-nonio0000001".to_string(), "i-unknown00001".to_string()];
    let found = client
        .describe_instances(&sts, "cn-hangzhou", &ids)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(!found[0].io_optimized && found[0].started_at().is_some());
    client
        .reboot_instance(&sts, "cn-hangzhou", "i-nonio0000001")
        .await
        .unwrap();
    assert_eq!(
        sim.state()
            .instance("i-nonio0000001")
            .unwrap()
            .effective_password
            .as_deref(),
        Some("Ecs789")
    );
    let err = client
        .modify_instance_vnc_passwd(&sts, "cn-hangzhou", "i-unknown00001", &pw)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceId.NotFound"));
    let expected = Some(signature.as_str().to_string());
    assert!(
        sim.state()
            .call_log()
            .iter()
            .all(|c| c.signature == expected),
        "{:?}",
        sim.state().call_log()
    );
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn shared_sim() -> &'static RunningSimulator {
    static SIM: OnceLock<RunningSimulator> = OnceLock::new();
    SIM.get_or_init(|| runtime().block_on(sim()))
}

fn value() -> impl Strategy<Value = String> {
    // Printable ASCII and a few multi-byte characters, including everything signature V1 encodes.
    proptest::string::string_regex("[ -~éü中\u{1F600}]{0,24}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_request_the_client_signs_verifies(extra in value(), token_like in "[A-Za-z0-9+/=]{1,40}") {
        let sim = shared_sim();
        let client = EcsClient::new(ClientConfig {
            endpoint: Some(sim.url()),
            qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(10_000.0),
            burst: 100,
            retry: RetryPolicy { max_retries: 0, ..Default::default() },
            ..Default::default()
        }).unwrap();
        let sts = Credentials::new("STS.key", SecretString::new("stssecret"), Some(SecretString::new("CAIS+/tok==")));
        // A Tag.N.Value needs its Tag.N.Key (else InvalidTag.Mismatch, as ECS answers).
        let params = [("RegionId", "cn-hangzhou"), ("InstanceName", extra.as_str()), ("Tag.1.Key", "signed"), ("Tag.1.Value", token_like.as_str())];
        let result = runtime().block_on(client.call::<Value>(&sts, "cn-hangzhou", "DescribeInstances", &params));
        prop_assert!(result.is_ok(), "{:?}", result.err());
    }

    #[test]
    fn any_change_to_a_signed_parameter_fails_verification(extra in value(), index in 0usize..9, replacement in "[A-Za-z0-9 *~/+=&]{1,12}") {
        let sim = shared_sim();
        let mut p = common("DescribeInstances", KEY);
        p.push(("RegionId".into(), "cn-hangzhou".into()));
        p.push(("InstanceName".into(), extra));
        let s = signer::sign("POST", p.iter().map(|(k, v)| (k.as_str(), v.as_str())), &SecretString::new(SECRET));
        let i = index % p.len();
        prop_assume!(p[i].1 != replacement);
        // AccessKeyId changes are an unknown key rather than a bad signature; both are refusals.
        p[i].1 = replacement;
        let body = signer::encode_with_signature(p.iter().map(|(k, v)| (k.as_str(), v.as_str())), &s.signature);
        let (status, body) = runtime().block_on(post(sim, body));
        prop_assert!(status >= 400, "tampered request accepted: {}", body);
    }
}

/// A V3 request built by hand: the signed headers and body, and the Authorization.
struct V3Built {
    method: &'static str,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: String,
}

fn v3_build(sim: &RunningSimulator, action: &str, params: &[(&str, &str)]) -> V3Built {
    use ecs_vnc_controller::ecs::signer_v3;
    let body = signer::encode_form(params.iter().copied());
    let hashed = signer_v3::hashed_payload(body.as_bytes());
    let host = sim.url().trim_start_matches("http://").to_string();
    let nonce = uuid::Uuid::new_v4().to_string();
    let mut headers: Vec<(String, String)> = signer_v3::CommonHeaders {
        host: &host,
        action,
        version: "2014-05-26",
        date: jiff::Timestamp::now(),
        nonce: &nonce,
        hashed_payload: &hashed,
        access_key_id: KEY,
        security_token: None,
    }
    .to_vec()
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    headers.push((
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    V3Built {
        method: "POST",
        query: Vec::new(),
        headers,
        body,
    }
}

fn v3_sign(built: &mut V3Built) {
    use ecs_vnc_controller::ecs::signer_v3;
    let headers: Vec<(&str, &str)> = built
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let query: Vec<(&str, &str)> = built
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signed = signer_v3::sign(
        &signer_v3::Request {
            method: built.method,
            path: "/",
            query: &query,
            headers: &headers,
            hashed_payload: &signer_v3::hashed_payload(built.body.as_bytes()),
        },
        KEY,
        &SecretString::new(SECRET),
    );
    built
        .headers
        .push(("authorization".into(), signed.authorization));
}

async fn v3_send(sim: &RunningSimulator, built: &V3Built) -> (u16, String) {
    let query = signer::encode_form(built.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let url = if query.is_empty() {
        format!("{}/", sim.url())
    } else {
        format!("{}/?{query}", sim.url())
    };
    let mut request = http().request(built.method.parse().unwrap(), url);
    for (name, value) in &built.headers {
        if name != "host" {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let r = request.body(built.body.clone()).send().await.expect("send");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test]
async fn signature_v3_by_hand_json_by_default_query_or_body_and_replays_refused() {
    let sim = sim().await;
    // Parameters in the body (as this project's client sends them).
    let mut built = v3_build(
        &sim,
        "DescribeInstanceAttribute",
        &[("InstanceId", "i-io000000001")],
    );
    v3_sign(&mut built);
    let (status, body) = v3_send(&sim, &built).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("V3 answers JSON without Format");
    assert_eq!(v["IoOptimized"], "optimized");
    let (status, body) = v3_send(&sim, &built).await;
    assert_eq!((status, code(&body).as_str()), (400, "SignatureNonceUsed"));

    // Parameters in the query (as Alibaba's generated SDK sends them), a GET.
    let mut built = v3_build(&sim, "DescribeInstanceAttribute", &[]);
    built.method = "GET";
    built.headers.retain(|(k, _)| k != "content-type");
    built.query = vec![("InstanceId".into(), "i-nonio0000001".into())];
    v3_sign(&mut built);
    let (status, body) = v3_send(&sim, &built).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["IoOptimized"],
        "none"
    );

    // An old date.
    let mut built = v3_build(
        &sim,
        "DescribeInstanceAttribute",
        &[("InstanceId", "i-io000000001")],
    );
    for (k, v) in built.headers.iter_mut() {
        if k == "x-acs-date" {
            *v = signer::format_timestamp(
                jiff::Timestamp::now() - jiff::SignedDuration::from_mins(16),
            );
        }
    }
    v3_sign(&mut built);
    let (status, body) = v3_send(&sim, &built).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "InvalidTimeStamp.Expired")
    );
    // `Format=XML` still asks for XML.
    let mut built = v3_build(
        &sim,
        "DescribeInstanceAttribute",
        &[("InstanceId", "i-io000000001"), ("Format", "XML")],
    );
    v3_sign(&mut built);
    let (status, body) = v3_send(&sim, &built).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("<?xml"), "{body}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any change to what a V3 request signed — a body parameter, a signed header, the method, an
    /// added query parameter, an added unsigned x-acs-* header — is refused.
    #[test]
    fn any_change_to_a_signed_v3_request_fails_verification(extra in value(), what in 0usize..6, replacement in "[A-Za-z0-9 *~/+=&]{1,12}") {
        let sim = shared_sim();
        let mut built = v3_build(sim, "DescribeInstances", &[("RegionId", "cn-hangzhou"), ("InstanceName", &extra)]);
        v3_sign(&mut built);
        match what {
            0 => {
                let changed = signer::encode_form([("RegionId", "cn-hangzhou"), ("InstanceName", replacement.as_str())]);
                prop_assume!(changed != built.body);
                built.body = changed;
            }
            1 => built.headers.iter_mut().filter(|(k, _)| k == "x-acs-action").for_each(|(_, v)| *v = "DescribeInstanceAttribute".into()),
            2 => built.method = "PUT",
            3 => built.query.push(("PageSize".into(), "1".into())),
            4 => built.headers.push(("x-acs-extra".into(), replacement.clone())),
            _ => built.headers.iter_mut().filter(|(k, _)| k == "content-type").for_each(|(_, v)| *v = "text/plain".into()),
        }
        let (status, body) = runtime().block_on(v3_send(sim, &built));
        prop_assert!(status >= 400, "tampered V3 request ({what}) accepted: {}", body);
        let code = code(&body);
        prop_assert!(["SignatureDoesNotMatch", "IncompleteSignature"].contains(&code.as_str()), "{}", body);
    }
}

#[tokio::test]
async fn instances_waiting_for_a_restart_are_described_in_one_batched_call() {
    use ecs_vnc_controller::controller::instances::InstanceCache;
    use std::time::{Duration, Instant};
    let sim = sim().await;
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        ..Default::default()
    })
    .unwrap();
    let cache = InstanceCache::new(client, Duration::from_secs(60), Duration::from_millis(50));
    let creds = Credentials::new(KEY, SecretString::new(SECRET), None);
    let ids = ["i-io000000001", "i-nonio0000001", "i-stopped000001"];
    // Each instance is looked up once (as its VncPassword is reconciled).
    for id in ids {
        let found = cache
            .describe(&creds, "cn-hangzhou", id, Instant::now())
            .await
            .unwrap();
        assert_eq!(found.map(|i| i.instance_id), Some(id.to_string()));
    }
    // Once the answers are older than the poll interval's half, a poll round is due.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let before = sim.state().calls("DescribeInstances");
    // A poll round: every waiting instance asks, and an answer no older than they accept serves all.
    let round = Instant::now();
    let answers = futures::future::join_all(
        ids.iter()
            .map(|id| cache.describe(&creds, "cn-hangzhou", id, round)),
    )
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(Option::is_some))
    );
    assert_eq!(
        sim.state().calls("DescribeInstances") - before,
        1,
        "one call for the whole round"
    );
    let last = sim
        .state()
        .call_log()
        .into_iter()
        .rev()
        .find(|c| c.action == "DescribeInstances")
        .unwrap();
    assert_eq!(last.code, "Success");
    // A caller who knows only the AccessKeyId gets nothing from the cache.
    let impostor = Credentials::new(KEY, SecretString::new("guessed"), None);
    assert!(
        cache
            .describe(&impostor, "cn-hangzhou", ids[0], round)
            .await
            .is_err()
    );
    // Unknown instances are absent, not an error.
    assert_eq!(
        cache
            .describe(&creds, "cn-hangzhou", "i-unknown00001", Instant::now())
            .await
            .unwrap(),
        None
    );
}

async fn admin(
    sim: &RunningSimulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http().request(method, format!("{}/_simulator/{path}", sim.url()));
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().await.expect("admin call");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_api_adds_instances_changes_status_reboots_and_resets_the_log() {
    use reqwest::Method;
    let sim = sim().await;
    let (s, v) = admin(
        &sim,
        Method::POST,
        "instances",
        Some(
            serde_json::json!({"id": "i-new0000001", "region": "eu-west-9", "ioOptimized": false}),
        ),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (201, Some("Running")), "{v}");
    // The new instance's region is known from now on.
    assert_eq!(
        modify(&sim, "eu-west-9", "i-new0000001", "Abc123").await.0,
        200
    );
    let (_, v) = admin(&sim, Method::GET, "instances/i-new0000001", None).await;
    assert_eq!(
        (v["setPassword"].as_str(), v["effectivePassword"].as_str()),
        (Some("Abc123"), None),
        "{v}"
    );
    let (s, v) = admin(&sim, Method::POST, "instances/i-new0000001/reboot", None).await;
    assert_eq!(
        (
            s,
            v["effectivePassword"].as_str(),
            v["rebootCount"].as_u64()
        ),
        (200, Some("Abc123"), Some(1)),
        "{v}"
    );
    let (s, _) = admin(
        &sim,
        Method::POST,
        "instances/i-new0000001/status",
        Some(serde_json::json!({"status": "Released"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = modify(&sim, "eu-west-9", "i-new0000001", "Abc123").await;
    assert_eq!((s, code(&b).as_str()), (404, "NoSuchResource"));
    let (s, v) = admin(
        &sim,
        Method::POST,
        "instances/i-new0000001/status",
        Some(serde_json::json!({"status": "Dancing"})),
    )
    .await;
    assert!(s == 400 && v["error"].is_string(), "{v}");
    let (s, _) = admin(&sim, Method::GET, "instances/i-nothing", None).await;
    assert_eq!(s, 404);

    let (_, v) = admin(&sim, Method::GET, "calls", None).await;
    assert_eq!(v["counts"]["ModifyInstanceVncPasswd"]["Success"], 1, "{v}");
    assert_eq!(
        v["counts"]["ModifyInstanceVncPasswd"]["NoSuchResource"], 1,
        "{v}"
    );
    let first = &v["calls"][0];
    assert_eq!(
        (
            first["action"].as_str(),
            first["code"].as_str(),
            first["instanceId"].as_str(),
            first["vncPassword"].as_str()
        ),
        (
            Some("ModifyInstanceVncPasswd"),
            Some("Success"),
            Some("i-new0000001"),
            Some("Abc123")
        ),
        "{v}"
    );
    assert!(first["time"].is_string());
    let (s, _) = admin(&sim, Method::DELETE, "calls", None).await;
    assert_eq!(s, 204);
    assert_eq!(sim.state().total_calls(), 0);
    assert!(sim.state().call_log().is_empty());

    // Faults over HTTP: a typo is refused rather than silently ignored.
    let (s, _) = admin(
        &sim,
        Method::PUT,
        "faults",
        Some(serde_json::json!({"errorrate": 1.0})),
    )
    .await;
    assert!((400..500).contains(&s), "{s}");
    let (s, v) = admin(
        &sim,
        Method::PUT,
        "faults",
        Some(serde_json::json!({"errorRate": 3.0, "latencyMs": 0})),
    )
    .await;
    assert_eq!(
        (s, v["errorRate"].as_f64()),
        (200, Some(1.0)),
        "clamped: {v}"
    );
    let (s, v) = admin(
        &sim,
        Method::POST,
        "faults/throttle",
        Some(serde_json::json!({"count": 1, "action": "DescribeInstances"})),
    )
    .await;
    assert_eq!((s, v["throttleNext"].as_u64()), (200, Some(1)), "{v}");
}

#[tokio::test]
async fn a_slow_reboot_passes_through_starting_on_the_simulators_clock() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let sim = sim().await;
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    sim.state().set_clock(move || {
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(o.load(Ordering::Relaxed))
    });
    sim.state()
        .set_reboot_duration(std::time::Duration::from_secs(60));
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-nonio0000001", "Slow12")
            .await
            .0,
        200
    );
    let mut p = common("RebootInstance", KEY);
    p.extend([
        ("RegionId".into(), "cn-hangzhou".into()),
        ("InstanceId".into(), "i-nonio0000001".into()),
    ]);
    assert_eq!(post(&sim, signed("POST", p, SECRET)).await.0, 200);
    let i = sim.state().instance("i-nonio0000001").unwrap();
    assert_eq!(
        (i.status.as_str(), i.effective_password.as_deref()),
        ("Starting", Some("Slow12"))
    );
    // While Starting: no password change, no second reboot.
    let (s, b) = modify(&sim, "cn-hangzhou", "i-nonio0000001", "Slow34").await;
    assert_eq!((s, code(&b).as_str()), (403, "IncorrectInstanceStatus"));
    offset.store(61, Ordering::Relaxed);
    assert_eq!(
        sim.state().instance("i-nonio0000001").unwrap().status,
        "Running"
    );
    // The client's clock is now 61 s behind the simulator's: well inside the window.
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-nonio0000001", "Slow34")
            .await
            .0,
        200
    );
    // Requests are judged by the simulator's clock: a client whose clock is a minute behind it
    // still passes; 16 minutes is too far.
    offset.store(16 * 60, Ordering::Relaxed);
    let (s, b) = modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123").await;
    assert_eq!((s, code(&b).as_str()), (400, "InvalidTimeStamp.Expired"));
}

#[tokio::test]
async fn throttling_one_action_leaves_the_others_alone_and_latency_is_added() {
    let sim = sim().await;
    sim.state().throttle_next(1, Some("DescribeInstances"));
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123")
            .await
            .0,
        200
    );
    let describe = || {
        let mut p = common("DescribeInstances", KEY);
        p.push(("RegionId".into(), "cn-hangzhou".into()));
        signed("POST", p, SECRET)
    };
    let (s, b) = post(&sim, describe()).await;
    assert_eq!((s, code(&b).as_str()), (400, "Throttling.User"));
    assert_eq!(post(&sim, describe()).await.0, 200);

    sim.state().set_faults(FaultConfig {
        latency_ms: 120,
        latency_jitter_ms: 30,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    assert_eq!(post(&sim, describe()).await.0, 200);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(120),
        "at least the fixed latency"
    );

    // A dropped call is logged under its action.
    sim.state().set_faults(FaultConfig {
        drop_rate: 1.0,
        ..Default::default()
    });
    let _ = http()
        .post(format!("{}/", sim.url()))
        .body(describe())
        .send()
        .await;
    assert_eq!(
        sim.state()
            .calls_with_code("DescribeInstances", "ConnectionDropped"),
        1
    );
}

#[tokio::test]
async fn answers_have_the_documented_shapes_and_a_fresh_upper_case_request_id() {
    let sim = sim().await;
    // JSON error: all five fields.
    let (s, b) = modify(&sim, "cn-hangzhou", "i-unknown00001", "Ecs123").await;
    assert_eq!(s, 404);
    let v: Value = serde_json::from_str(&b).unwrap();
    for field in ["RequestId", "HostId", "Code", "Message", "Recommend"] {
        assert!(v[field].is_string(), "{field} in {b}");
    }
    assert_eq!(v["Message"], "The specified InstanceId does not exist.");
    // XML error for a bad signature over GET, with the server's string to sign.
    let mut p = common("DescribeInstances", KEY);
    p.retain(|(k, _)| k != "Format");
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    let (s, b) = get(&sim, signed("GET", p, "wrong")).await;
    assert_eq!(s, 400);
    assert!(
        b.contains("<Error><RequestId>")
            && b.contains("<Code>SignatureDoesNotMatch</Code>")
            && b.contains("server string to sign is:GET&amp;%2F&amp;AccessKeyId%3Dtestid"),
        "{b}"
    );
    // XML success of ModifyInstanceVncPasswd, and RequestIds.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        let mut p = common("ModifyInstanceVncPasswd", KEY);
        p.retain(|(k, _)| k != "Format");
        p.extend([
            ("RegionId".into(), "cn-hangzhou".into()),
            ("InstanceId".into(), "i-io000000001".into()),
            ("VncPassword".into(), "Ecs123".into()),
        ]);
        let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
        assert_eq!(s, 200, "{b}");
        let id = b
            .split("<RequestId>")
            .nth(1)
            .and_then(|r| r.split("</RequestId>").next())
            .unwrap()
            .to_string();
        assert!(
            b.contains("<ModifyInstanceVncPasswdResponse><RequestId>"),
            "{b}"
        );
        assert!(
            uuid::Uuid::parse_str(&id).is_ok() && id == id.to_uppercase(),
            "{id}"
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 3);
    // Another API version is refused.
    let mut p = common("DescribeInstances", KEY);
    p.retain(|(k, _)| k != "Version");
    p.extend([
        ("Version".into(), "2016-03-14".into()),
        ("RegionId".into(), "cn-hangzhou".into()),
    ]);
    let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (400, "InvalidVersion"));
}

#[tokio::test]
async fn describe_instances_filters_by_ids_and_limits_the_page_size() {
    let sim = sim().await;
    let describe = |extra: Vec<(&str, &str)>| {
        let mut p = common("DescribeInstances", KEY);
        p.push(("RegionId".into(), "cn-hangzhou".into()));
        p.extend(
            extra
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        signed("POST", p, SECRET)
    };
    let (s, b) = post(
        &sim,
        describe(vec![(
            "InstanceIds",
            r#"["i-io000000001","i-beijing000001","i-released00001","i-nope"]"#,
        )]),
    )
    .await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (s, v["TotalCount"].as_u64()),
        (200, Some(1)),
        "other regions and released ones are absent: {b}"
    );
    assert_eq!(
        (v["PageNumber"].as_u64(), v["PageSize"].as_u64()),
        (Some(1), Some(10))
    );
    let (s, b) = post(&sim, describe(vec![("PageSize", "100")])).await;
    assert_eq!(s, 200, "{b}");
    for bad in [
        vec![("PageSize", "101")],
        vec![("PageNumber", "0")],
        vec![("InstanceIds", "i-io000000001")],
    ] {
        let (s, b) = post(&sim, describe(bad)).await;
        assert_eq!((s, code(&b).as_str()), (400, "InvalidParameter"), "{b}");
    }
    let mut p = common("DescribeInstances", KEY);
    p.push(("RegionId".into(), "xx-nowhere-1".into()));
    let (s, b) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!((s, code(&b).as_str()), (404, "InvalidRegionId.NotFound"));
}

#[tokio::test]
async fn more_garbage_never_crashes_and_is_counted() {
    let sim = sim().await;
    let base = sim.url();
    for url in [
        format!("{base}/?%FF%FE=1"),
        format!("{base}/?Action=%"),
        format!("{base}/?&&="),
        format!("{base}/?Format=JSON&Action=ModifyInstanceVncPasswd"),
    ] {
        let r = http().get(&url).send().await.expect("answered");
        assert_eq!(r.status().as_u16() / 100, 4, "{url}");
        assert!(r.text().await.unwrap().contains("Code"), "{url}");
    }
    let r = http()
        .put(format!("{base}/"))
        .body("Action=DescribeInstances")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(sim.state().calls("(unparsable)") >= 1);
    assert_eq!(
        modify(&sim, "cn-hangzhou", "i-io000000001", "Ecs123")
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn a_throttled_client_waits_as_long_as_the_rate_limit_header_says() {
    let sim = sim().await;
    // One call per second: the second call in a row is throttled with TimeLeft:1000.
    let mut faults = sim.state().faults();
    faults.qps_per_access_key = Some(1.0);
    sim.state().set_faults(faults);
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(100.0),
        burst: 10,
        retry: RetryPolicy {
            max_retries: 3,
            // A guess that would retry far too early, were the header ignored.
            throttle_base_delay: std::time::Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        ..ClientConfig::default()
    })
    .expect("client");
    let creds = Credentials::new(KEY, SecretString::new(SECRET), None);
    let ids = vec!["i-io000000001".to_string()];
    client
        .describe_instances(&creds, "cn-hangzhou", &ids)
        .await
        .expect("first call");
    let started = std::time::Instant::now();
    client
        .describe_instances(&creds, "cn-hangzhou", &ids)
        .await
        .expect("the second call succeeds after waiting");
    assert_eq!(
        sim.state()
            .calls_with_code("DescribeInstances", "Throttling.User"),
        1
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "retried after {:?}, before ECS's TimeLeft",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Tags, Tag filters and NextToken paging of DescribeInstances.

fn tagged(id: &str, region: &str, status: &str, tags: &[(&str, &str)]) -> InstanceConfig {
    InstanceConfig {
        region: region.into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..instance(id, true, status)
    }
}

/// A fleet in cn-hangzhou: team-a's prod and dev machines, team-b's, untagged ones, and tagged
/// ones ECS would not show here (released, another region).
async fn tagged_sim() -> RunningSimulator {
    let ns = "ecsvnc.io/namespace";
    one_key_sim(vec![
        tagged(
            "i-a-prod-1",
            "cn-hangzhou",
            "Running",
            &[(ns, "team-a"), ("env", "prod")],
        ),
        tagged(
            "i-a-prod-2",
            "cn-hangzhou",
            "Stopped",
            &[(ns, "team-a"), ("env", "prod")],
        ),
        tagged(
            "i-a-dev-1",
            "cn-hangzhou",
            "Running",
            &[(ns, "team-a"), ("env", "dev")],
        ),
        tagged(
            "i-b-prod-1",
            "cn-hangzhou",
            "Running",
            &[(ns, "team-b"), ("env", "prod")],
        ),
        tagged(
            "i-b-none-1",
            "cn-hangzhou",
            "Running",
            &[(ns, "team-b"), ("env", "")],
        ),
        tagged("i-untagged-1", "cn-hangzhou", "Running", &[]),
        tagged(
            "i-a-gone-1",
            "cn-hangzhou",
            "Released",
            &[(ns, "team-a"), ("env", "prod")],
        ),
        tagged(
            "i-a-bj-1",
            "cn-beijing",
            "Running",
            &[(ns, "team-a"), ("env", "prod")],
        ),
    ])
    .await
}

/// A simulator with the one access key `KEY` and these instances.
async fn one_key_sim(instances: Vec<InstanceConfig>) -> RunningSimulator {
    Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: vec![AccessKeyConfig {
                id: KEY.into(),
                secret: SECRET.into(),
                security_token: None,
                account_id: None,
            }],
            instances,
            ..Default::default()
        },
    )
    .await
    .expect("start the simulator")
}

/// A signed DescribeInstances in cn-hangzhou (JSON) with these extra parameters.
async fn describe_with(sim: &RunningSimulator, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut p = common("DescribeInstances", KEY);
    p.push(("RegionId".into(), "cn-hangzhou".into()));
    p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (status, body) = post(sim, signed("POST", p, SECRET)).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

fn described_ids(answer: &Value) -> Vec<String> {
    answer["Instances"]["Instance"]
        .as_array()
        .unwrap_or_else(|| panic!("no Instances.Instance: {answer}"))
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn describe_instances_filters_by_tags_anded_key_only_and_with_the_other_filters() {
    let sim = tagged_sim().await;
    let ns = "ecsvnc.io/namespace";
    for (filters, expected) in [
        // One tag: every instance carrying it, Stopped too; released and other regions absent.
        (
            vec![("Tag.1.Key", ns), ("Tag.1.Value", "team-a")],
            vec!["i-a-dev-1", "i-a-prod-1", "i-a-prod-2"],
        ),
        // Several tags are ANDed.
        (
            vec![
                ("Tag.1.Key", ns),
                ("Tag.1.Value", "team-a"),
                ("Tag.2.Key", "env"),
                ("Tag.2.Value", "prod"),
            ],
            vec!["i-a-prod-1", "i-a-prod-2"],
        ),
        // The numbering need not start at 1 nor be contiguous.
        (
            vec![
                ("Tag.3.Key", "env"),
                ("Tag.3.Value", "prod"),
                ("Tag.20.Key", ns),
                ("Tag.20.Value", "team-b"),
            ],
            vec!["i-b-prod-1"],
        ),
        // A key alone matches any value, the empty one too; an empty value is no value filter.
        (
            vec![("Tag.1.Key", "env")],
            vec![
                "i-a-dev-1",
                "i-a-prod-1",
                "i-a-prod-2",
                "i-b-none-1",
                "i-b-prod-1",
            ],
        ),
        (
            vec![
                ("Tag.1.Key", ns),
                ("Tag.1.Value", ""),
                ("Tag.2.Key", "env"),
                ("Tag.2.Value", "dev"),
            ],
            vec!["i-a-dev-1"],
        ),
        // Values match exactly.
        (vec![("Tag.1.Key", ns), ("Tag.1.Value", "team")], vec![]),
        (vec![("Tag.1.Key", ns), ("Tag.1.Value", "TEAM-A")], vec![]),
        (vec![("Tag.1.Key", "nobody-has-this")], vec![]),
        // ANDed with InstanceIds.
        (
            vec![
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", "prod"),
                (
                    "InstanceIds",
                    r#"["i-a-prod-2","i-b-prod-1","i-a-dev-1","i-a-bj-1"]"#,
                ),
            ],
            vec!["i-a-prod-2", "i-b-prod-1"],
        ),
        // The deprecated lower-case spelling (documented, to be removed) still filters.
        (
            vec![("Tag.1.key", ns), ("Tag.1.value", "team-b")],
            vec!["i-b-none-1", "i-b-prod-1"],
        ),
    ] {
        for paging in [vec![], vec![("MaxResults", "100")]] {
            let mut params = filters.clone();
            params.extend(paging);
            let (status, answer) = describe_with(&sim, &params).await;
            assert_eq!(status, 200, "{params:?}: {answer}");
            assert_eq!(described_ids(&answer), expected, "{params:?}: {answer}");
        }
    }
    // The region is a filter too: team-a's Beijing machine is described there only.
    let mut p = common("DescribeInstances", KEY);
    p.extend([
        ("RegionId".into(), "cn-beijing".into()),
        ("Tag.1.Key".into(), ns.into()),
        ("Tag.1.Value".into(), "team-a".into()),
    ]);
    let answer: Value =
        serde_json::from_str(&post(&sim, signed("POST", p, SECRET)).await.1).unwrap();
    assert_eq!(described_ids(&answer), ["i-a-bj-1"], "{answer}");
}

#[tokio::test]
async fn describe_instances_reports_each_instances_tags_in_json_and_xml() {
    let sim = tagged_sim().await;
    let (_, answer) = describe_with(
        &sim,
        &[(
            "InstanceIds",
            r#"["i-a-prod-1","i-untagged-1","i-b-none-1"]"#,
        )],
    )
    .await;
    let instances = answer["Instances"]["Instance"].as_array().unwrap();
    let tags_of = |id: &str| -> Value {
        instances
            .iter()
            .find(|i| i["InstanceId"] == id)
            .map(|i| i["Tags"].clone())
            .unwrap_or_else(|| panic!("{id} not described: {answer}"))
    };
    let mut tags: Vec<Value> = tags_of("i-a-prod-1")["Tag"].as_array().unwrap().clone();
    tags.sort_by_key(|t| t["TagKey"].as_str().unwrap().to_string());
    assert_eq!(
        tags,
        [
            serde_json::json!({"TagKey": "ecsvnc.io/namespace", "TagValue": "team-a"}),
            serde_json::json!({"TagKey": "env", "TagValue": "prod"}),
        ]
    );
    assert!(
        tags_of("i-b-none-1")["Tag"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"TagKey": "env", "TagValue": ""})),
        "{answer}"
    );
    assert!(
        tags_of("i-untagged-1").is_null(),
        "no tags, no Tags: {answer}"
    );
    // XML (the default format): Tags/Tag repeated, as ECS's XML answer nests them.
    let mut p = common("DescribeInstances", KEY);
    p.retain(|(k, _)| k != "Format");
    p.extend([
        ("RegionId".into(), "cn-hangzhou".into()),
        ("InstanceIds".into(), r#"["i-a-prod-1"]"#.into()),
    ]);
    let (status, body) = post(&sim, signed("POST", p, SECRET)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<Tags><Tag><TagKey>ecsvnc.io/namespace</TagKey><TagValue>team-a</TagValue></Tag><Tag><TagKey>env</TagKey><TagValue>prod</TagValue></Tag></Tags>"),
        "{body}"
    );
    // A change made in the console is what the next answer reports.
    let (s, v) = admin(
        &sim,
        reqwest::Method::PUT,
        "instances/i-untagged-1/tags",
        Some(serde_json::json!({"ecsvnc.io/namespace": "team-c"})),
    )
    .await;
    assert_eq!(
        (s, v["tags"]["ecsvnc.io/namespace"].as_str()),
        (200, Some("team-c")),
        "{v}"
    );
    let (_, answer) = describe_with(
        &sim,
        &[
            ("Tag.1.Key", "ecsvnc.io/namespace"),
            ("Tag.1.Value", "team-c"),
        ],
    )
    .await;
    assert_eq!(described_ids(&answer), ["i-untagged-1"]);
}

#[tokio::test]
async fn describe_instances_refuses_bad_tag_filters_with_ecs_codes() {
    let sim = tagged_sim().await;
    let twenty_one: Vec<(String, String)> = (1..=21)
        .flat_map(|n| {
            [
                (format!("Tag.{n}.Key"), format!("k{n}")),
                (format!("Tag.{n}.Value"), "v".into()),
            ]
        })
        .collect();
    let twenty_one: Vec<(&str, &str)> = twenty_one
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let twenty: Vec<(&str, &str)> = twenty_one[..40].to_vec();
    let (status, answer) = describe_with(&sim, &twenty).await;
    assert_eq!(status, 200, "20 tags are allowed: {answer}");
    assert!(described_ids(&answer).is_empty());
    for (filters, code) in [
        (twenty_one.clone(), "InvalidTagCount"),
        (vec![("Tag.21.Key", "env")], "InvalidTagCount"),
        (vec![("Tag.0.Key", "env")], "InvalidTagCount"),
        (vec![("Tag.99999999999.Key", "env")], "InvalidTagCount"),
        (
            vec![("Tag.1.Key", ""), ("Tag.1.Value", "prod")],
            "InvalidTag.Mismatch",
        ),
        (vec![("Tag.1.Key", "")], "InvalidTag.Mismatch"),
        (vec![("Tag.1.Value", "prod")], "InvalidTag.Mismatch"),
        (
            vec![("Tag.1.Key", "env"), ("Tag.2.Value", "prod")],
            "InvalidTag.Mismatch",
        ),
    ] {
        let (status, answer) = describe_with(&sim, &filters).await;
        assert_eq!(
            (status, answer["Code"].as_str()),
            (400, Some(code)),
            "{filters:?}: {answer}"
        );
    }
}

#[tokio::test]
async fn describe_instances_pages_by_next_token_without_duplicates_or_gaps() {
    let sim = tagged_sim().await;
    // 137 more team-a machines, a third of them also tagged env=prod.
    for n in 0..137 {
        let mut tags = vec![("ecsvnc.io/namespace", "team-a")];
        if n % 3 == 0 {
            tags.push(("env", "prod"));
        }
        sim.state().add_instance(tagged(
            &format!("i-fleet-{n:04}"),
            "cn-hangzhou",
            "Running",
            &tags,
        ));
    }
    let held = |filter: &dyn Fn(&ecs_vnc_controller::simulator::InstanceView) -> bool| {
        let mut ids: Vec<String> = sim
            .state()
            .instances()
            .into_iter()
            .filter(|i| i.region == "cn-hangzhou" && i.status != "Released" && filter(i))
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    };
    let team_a = |i: &ecs_vnc_controller::simulator::InstanceView| {
        i.tags.get("ecsvnc.io/namespace").map(String::as_str) == Some("team-a")
    };
    let team_a_prod = |i: &ecs_vnc_controller::simulator::InstanceView| {
        team_a(i) && i.tags.get("env").map(String::as_str) == Some("prod")
    };
    let everything = |_: &ecs_vnc_controller::simulator::InstanceView| true;
    for (filters, max_results, per_page, expected) in [
        (vec![], "25", 25, held(&everything)),
        (
            vec![
                ("Tag.1.Key", "ecsvnc.io/namespace"),
                ("Tag.1.Value", "team-a"),
            ],
            "100",
            100,
            held(&team_a),
        ),
        (
            vec![
                ("Tag.1.Key", "ecsvnc.io/namespace"),
                ("Tag.1.Value", "team-a"),
                ("Tag.2.Key", "env"),
                ("Tag.2.Value", "prod"),
            ],
            "10",
            10,
            held(&team_a_prod),
        ),
        // MaxResults below 10 means 10, above 100 means 100 (the documented defaults).
        (
            vec![("Tag.1.Key", "ecsvnc.io/namespace")],
            "4",
            10,
            held(&|i| i.tags.contains_key("ecsvnc.io/namespace")),
        ),
        (vec![], "500", 100, held(&everything)),
    ] {
        let mut seen: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut params = filters.clone();
            params.push(("MaxResults", max_results));
            if let Some(t) = token.as_deref() {
                params.push(("NextToken", t));
            }
            let (status, answer) = describe_with(&sim, &params).await;
            assert_eq!(status, 200, "{params:?}: {answer}");
            let ids = described_ids(&answer);
            pages += 1;
            let next = answer["NextToken"]
                .as_str()
                .expect("NextToken in every answer");
            if next.is_empty() {
                assert!(ids.len() <= per_page, "{params:?}");
                seen.extend(ids);
                break;
            }
            assert_eq!(
                ids.len(),
                per_page,
                "a page before the last is full: {params:?}"
            );
            seen.extend(ids);
            assert!(pages < 100, "paging does not end: {params:?}");
            token = Some(next.to_string());
        }
        assert_eq!(
            pages,
            expected.len().div_ceil(per_page).max(1),
            "{filters:?} by {max_results}"
        );
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            seen.len(),
            "duplicates across pages: {filters:?}"
        );
        assert_eq!(
            sorted, expected,
            "what was paged through is what the simulator holds: {filters:?}"
        );
    }
    // Tokens are the simulator's own: anything else is refused for what it is.
    let (_, first) = describe_with(&sim, &[("MaxResults", "10")]).await;
    let token = first["NextToken"].as_str().unwrap().to_string();
    let other = tagged_sim().await;
    for n in 0..10 {
        other.state().add_instance(tagged(
            &format!("i-fleet-{n:04}"),
            "cn-hangzhou",
            "Running",
            &[],
        ));
    }
    let (_, foreign) = describe_with(&other, &[("MaxResults", "10")]).await;
    let foreign = foreign["NextToken"].as_str().unwrap().to_string();
    assert!(!foreign.is_empty());
    for bad in ["bogus", "sim-10", &token[..token.len() - 1], &foreign] {
        let (status, answer) =
            describe_with(&sim, &[("MaxResults", "10"), ("NextToken", bad)]).await;
        assert_eq!(
            (status, answer["Code"].as_str()),
            (400, Some("InvalidParameter.NextToken")),
            "{bad}: {answer}"
        );
    }
    // NextToken alone pages too (MaxResults defaults to 10); a MaxResults that is no number is refused.
    let (status, answer) = describe_with(&sim, &[("NextToken", &token)]).await;
    assert_eq!(
        (status, described_ids(&answer).len()),
        (200, 10),
        "{answer}"
    );
    let (status, answer) = describe_with(&sim, &[("MaxResults", "ten")]).await;
    assert_eq!(
        (status, answer["Code"].as_str()),
        (400, Some("InvalidParameter")),
        "{answer}"
    );
}

#[tokio::test]
async fn the_admin_api_sets_replaces_and_removes_tags_within_ecs_limits() {
    use reqwest::Method;
    let sim = sim().await;
    let (s, v) = admin(
        &sim,
        Method::POST,
        "instances",
        Some(
            serde_json::json!({"id": "i-tags0000001", "region": "cn-hangzhou", "ioOptimized": true,
            "tags": {"ecsvnc.io/namespace": "team-a", "env": ""}}),
        ),
    )
    .await;
    assert_eq!(
        (s, v["tags"]["ecsvnc.io/namespace"].as_str()),
        (201, Some("team-a")),
        "{v}"
    );
    assert_eq!(v["tags"]["env"], "", "{v}");
    // PUT replaces the whole set.
    let (s, v) = admin(
        &sim,
        Method::PUT,
        "instances/i-tags0000001/tags",
        Some(serde_json::json!({"owner": "ops"})),
    )
    .await;
    assert_eq!(
        (s, v["tags"].clone()),
        (200, serde_json::json!({"owner": "ops"})),
        "{v}"
    );
    let (_, v) = admin(&sim, Method::GET, "instances/i-tags0000001", None).await;
    assert_eq!(v["tags"], serde_json::json!({"owner": "ops"}), "{v}");
    // Outside ECS's limits: refused, and nothing changes.
    let twenty_one: serde_json::Map<String, Value> = (0..21)
        .map(|i| (format!("k{i}"), Value::from("v")))
        .collect();
    for bad in [
        Value::Object(twenty_one),
        serde_json::json!({"": "v"}),
        serde_json::json!({"aliyun-x": "v"}),
        serde_json::json!({"acs:x": "v"}),
        serde_json::json!({"k".repeat(129): "v"}),
        serde_json::json!({"k": "v".repeat(129)}),
        serde_json::json!({"k": "acs:v"}),
        serde_json::json!({"k": "see https://example.com"}),
    ] {
        let (s, v) = admin(
            &sim,
            Method::PUT,
            "instances/i-tags0000001/tags",
            Some(bad.clone()),
        )
        .await;
        assert!(s == 400 && v["error"].is_string(), "{bad}: {s} {v}");
    }
    let (s, v) = admin(
        &sim,
        Method::POST,
        "instances",
        Some(
            serde_json::json!({"id": "i-tags0000002", "region": "cn-hangzhou", "ioOptimized": true,
            "tags": {"acs:x": "v"}}),
        ),
    )
    .await;
    assert!(s == 400 && v["error"].is_string(), "{s} {v}");
    assert!(sim.state().instance("i-tags0000002").is_none());
    assert_eq!(sim.state().instance("i-tags0000001").unwrap().tags.len(), 1);
    let (s, _) = admin(
        &sim,
        Method::PUT,
        "instances/i-nothing/tags",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(s, 404);
    // An empty map removes them all.
    let (s, v) = admin(
        &sim,
        Method::PUT,
        "instances/i-tags0000001/tags",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!((s, v["tags"].clone()), (200, serde_json::json!({})), "{v}");
}

// --- accounts: STS GetCallerIdentity, and rate limits per account as ECS counts them -----------

const ACCOUNT_A: &str = "1111111111111111";
const ACCOUNT_B: &str = "2222222222222222";

fn key(id: &str, secret: &str, account: Option<&str>) -> AccessKeyConfig {
    AccessKeyConfig {
        id: id.into(),
        secret: secret.into(),
        security_token: None,
        account_id: account.map(str::to_string),
    }
}

/// Two RAM users of account A, one of account B, one key without an account (the default), and
/// the instance's RAM role in account A.
async fn accounts_sim(faults: FaultConfig) -> RunningSimulator {
    Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: vec![
                key("LTAIteamA1", "secret-a1", Some(ACCOUNT_A)),
                key("LTAIteamA2", "secret-a2", Some(ACCOUNT_A)),
                key("LTAIteamB", "secret-b", Some(ACCOUNT_B)),
                key("LTAIplain", "secret-plain", None),
            ],
            instances: vec![instance("i-io000000001", true, "Running")],
            metadata: Some(ecs_vnc_controller::simulator::MetadataConfig {
                role_name: "NodeRole".into(),
                duration_seconds: 3600,
                account_id: Some(ACCOUNT_A.into()),
            }),
            faults,
            ..Default::default()
        },
    )
    .await
    .expect("start")
}

/// GetCallerIdentity signed by hand (signature V1, STS's version), as STS answers it.
async fn caller_identity(sim: &RunningSimulator, id: &str, secret: &str) -> (u16, Value) {
    let mut p = common("GetCallerIdentity", id);
    p.retain(|(k, _)| k != "Version");
    p.push(("Version".into(), "2015-04-01".into()));
    let r = http()
        .post(format!("{}/sts", sim.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(signed("POST", p, secret))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn get_caller_identity_names_each_keys_account_and_refuses_a_copied_key_id() {
    let sim = accounts_sim(FaultConfig::default()).await;
    for (id, secret, account) in [
        ("LTAIteamA1", "secret-a1", ACCOUNT_A),
        ("LTAIteamA2", "secret-a2", ACCOUNT_A),
        ("LTAIteamB", "secret-b", ACCOUNT_B),
        (
            "LTAIplain",
            "secret-plain",
            ecs_vnc_controller::simulator::DEFAULT_ACCOUNT_ID,
        ),
    ] {
        let (status, v) = caller_identity(&sim, id, secret).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["AccountId"], account, "{v}");
        assert_eq!(v["IdentityType"], "RAMUser", "{v}");
        let arn = v["Arn"].as_str().unwrap();
        assert!(arn.starts_with(&format!("acs:ram::{account}:user/")), "{v}");
        for field in ["PrincipalId", "UserId", "RequestId"] {
            assert!(
                !v[field].as_str().unwrap_or_default().is_empty(),
                "{field}: {v}"
            );
        }
    }
    // Another team's AccessKeyId with a secret of one's own: refused as ECS refuses it.
    let (status, v) = caller_identity(&sim, "LTAIteamA1", "junk").await;
    assert_eq!(
        (status, v["Code"].as_str()),
        (400, Some("SignatureDoesNotMatch")),
        "{v}"
    );
    let (status, v) = caller_identity(&sim, "LTAInobody", "junk").await;
    assert_eq!(
        (status, v["Code"].as_str()),
        (404, Some("InvalidAccessKeyId.NotFound")),
        "{v}"
    );
    // Keys the metadata service issues belong to the role's account.
    let role = ecs_vnc_controller::ecs::CredentialsProvider::ecs_ram_role(
        sim.url(),
        Some("NodeRole".into()),
        std::time::Duration::from_secs(5),
    )
    .credentials()
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let who = ecs_vnc_controller::ecs::sts::get_caller_identity(
        &http,
        &format!("{}/sts", sim.url()),
        &role,
    )
    .await
    .unwrap();
    assert_eq!(who.account_id, ACCOUNT_A);
    assert_eq!(who.identity_type.as_deref(), Some("AssumedRoleUser"));
    assert!(
        who.arn
            .as_deref()
            .unwrap_or_default()
            .contains(":assumed-role/NodeRole/"),
        "{who:?}"
    );
    assert_eq!(sim.state().caller_identity_calls(), 7);
}

/// `qpsPerApi` counts per account and action, as ECS does: two RAM users of one account share it.
#[tokio::test]
async fn qps_per_api_counts_per_account() {
    let sim = accounts_sim(FaultConfig {
        qps_per_api: Some(2.0),
        ..Default::default()
    })
    .await;
    let describe = |id: &'static str, secret: &'static str| {
        let sim = &sim;
        async move {
            let mut p = common("DescribeInstances", id);
            p.push(("RegionId".into(), "cn-hangzhou".into()));
            code(&post(sim, signed("POST", p, secret)).await.1)
        }
    };
    assert_eq!(describe("LTAIteamA1", "secret-a1").await, "");
    assert_eq!(describe("LTAIteamA2", "secret-a2").await, "");
    assert_eq!(describe("LTAIteamA2", "secret-a2").await, "Throttling.User");
    assert_eq!(describe("LTAIteamA1", "secret-a1").await, "Throttling.User");
    assert_eq!(
        describe("LTAIteamB", "secret-b").await,
        "",
        "another account"
    );
}

/// The client's buckets are per account, learnt with GetCallerIdentity once per credential: RAM
/// users and roles of one account share one, and another team's AccessKeyId copied with a junk
/// secret gets a bucket of its own (and ECS's own refusal), so it can drain nobody's.
#[tokio::test]
async fn the_clients_buckets_are_per_account_and_a_copied_key_id_shares_nothing() {
    use std::time::{Duration, Instant};
    let sim = accounts_sim(FaultConfig::default()).await;
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        sts_endpoint: Some(format!("{}/sts", sim.url())),
        qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(2.0),
        burst: 1,
        retry: RetryPolicy {
            max_retries: 0,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let creds = |id: &str, secret: &str| Credentials::new(id, SecretString::new(secret), None);
    let pw = VncPassword::parse("Ecs123").unwrap();
    let modify = |c: Credentials| {
        let client = client.clone();
        let pw = pw.clone();
        async move {
            let started = Instant::now();
            let r = client
                .modify_instance_vnc_passwd(&c, "cn-hangzhou", "i-io000000001", &pw)
                .await;
            (r, started.elapsed())
        }
    };
    let a1 = creds("LTAIteamA1", "secret-a1");
    let (r, _) = modify(a1.clone()).await;
    r.unwrap();
    // The instance's role (account A) and the other RAM user of account A wait their turn.
    let role = ecs_vnc_controller::ecs::CredentialsProvider::ecs_ram_role(
        sim.url(),
        Some("NodeRole".into()),
        Duration::from_secs(5),
    )
    .credentials()
    .await
    .unwrap();
    let (r, waited) = modify(role.clone()).await;
    r.unwrap();
    assert!(
        waited >= Duration::from_millis(400),
        "shared bucket: {waited:?}"
    );
    let (r, waited) = modify(creds("LTAIteamA2", "secret-a2")).await;
    r.unwrap();
    assert!(
        waited >= Duration::from_millis(400),
        "shared bucket: {waited:?}"
    );
    // Account B has its own.
    let (r, waited) = modify(creds("LTAIteamB", "secret-b")).await;
    r.unwrap();
    assert!(
        waited < Duration::from_millis(400),
        "own bucket: {waited:?}"
    );

    // A1's AccessKeyId with a junk secret: its calls queue in a bucket of their own.
    let junk = creds("LTAIteamA1", "junk-secret");
    let calls: Vec<_> = (0..6).map(|_| tokio::spawn(modify(junk.clone()))).collect();
    // Waits for the signal (the junk bucket's queue), not for a time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.backlog(&junk, "cn-hangzhou", "ModifyInstanceVncPasswd")
        < Duration::from_millis(1500)
    {
        assert!(Instant::now() < deadline, "the junk calls never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a1_backlog = client.backlog(&a1, "cn-hangzhou", "ModifyInstanceVncPasswd");
    assert!(
        a1_backlog < Duration::from_millis(1000),
        "A1's bucket is not drained: {a1_backlog:?}"
    );
    for call in calls {
        let (r, _) = call.await.unwrap();
        assert_eq!(r.unwrap_err().code(), Some("SignatureDoesNotMatch"));
    }
    // One GetCallerIdentity per credential, however many calls: A1, role, A2, B, junk.
    assert_eq!(sim.state().caller_identity_calls(), 5);
}

/// The client's tag discovery (VncPasswordSet's `instanceTags`) follows `NextToken` through every
/// page, keeps only instances with all the tags (an empty value: any value of the key), and says
/// when ECS's 1,000-instance limit for tag filters was reached.
#[tokio::test]
async fn tag_discovery_pages_through_every_tagged_instance_and_flags_the_limit() {
    let mut instances: Vec<InstanceConfig> = (0..250)
        .map(|n| {
            tagged(
                &format!("i-pool{n:06}"),
                "cn-hangzhou",
                "Running",
                &[("pool", "web"), ("env", "prod")],
            )
        })
        .collect();
    instances.push(tagged(
        "i-poolother1",
        "cn-hangzhou",
        "Running",
        &[("pool", "db"), ("env", "prod")],
    ));
    instances.push(tagged(
        "i-poolgone01",
        "cn-hangzhou",
        "Released",
        &[("pool", "web"), ("env", "prod")],
    ));
    instances.extend((0..1000).map(|n| {
        tagged(
            &format!("i-big{n:07}"),
            "cn-hangzhou",
            "Running",
            &[("big", "yes")],
        )
    }));
    let sim = one_key_sim(instances).await;
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let client = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(1000.0),
        burst: 100,
        ..ClientConfig::default()
    })
    .expect("client");
    let creds = Credentials::new(KEY, SecretString::new(SECRET), None);
    let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let before = sim.state().calls("DescribeInstances");
    let web = client
        .describe_instances_by_tags(
            &creds,
            "cn-hangzhou",
            &tags(&[("pool", "web"), ("env", "")]),
        )
        .await
        .expect("tagged instances");
    assert_eq!(
        sim.state().calls("DescribeInstances") - before,
        3,
        "250 instances are 3 pages of 100"
    );
    assert!(!web.truncated);
    let ids: Vec<String> = web
        .instances
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    assert_eq!(ids.len(), 250);
    assert_eq!(ids.first().map(String::as_str), Some("i-pool000000"));
    assert!(
        !ids.iter()
            .any(|id| id == "i-poolother1" || id == "i-poolgone01")
    );
    let big = client
        .describe_instances_by_tags(&creds, "cn-hangzhou", &tags(&[("big", "yes")]))
        .await
        .expect("tagged instances");
    assert_eq!(big.instances.len(), 1000);
    assert!(
        big.truncated,
        "1,000 is ECS's most for tag filters: more may carry the tags"
    );
}
