//! The ECS client against a local HTTP server that recomputes and checks every signature and
//! answers from a script: success, each documented error, throttling and 5xx then success,
//! timeouts, garbage bodies, STS tokens.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use ecs_vnc_controller::ecs::CredentialsProvider;
use ecs_vnc_controller::ecs::client::{ClientConfig, EcsClient, EcsError};
use ecs_vnc_controller::ecs::provider::OidcRole;
use ecs_vnc_controller::ecs::retry::RetryPolicy;
use ecs_vnc_controller::ecs::{Credentials, ErrorClass};
use ecs_vnc_controller::ecs::{signer, signer_v3};
use ecs_vnc_controller::password::VncPassword;
use ecs_vnc_controller::secret::SecretString;

const SECRET: &str = "scripted-secret";

#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    delay: Duration,
}

fn json(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        content_type: "application/json;charset=utf-8",
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn ecs_error(status: u16, code: &str, message: &str) -> Reply {
    json(
        status,
        serde_json::json!({"RequestId": format!("REQ-{code}"), "HostId": "ecs.aliyuncs.com", "Code": code, "Message": message, "Recommend": "https://api.aliyun.com/troubleshoot"}),
    )
}

fn ok() -> Reply {
    json(200, serde_json::json!({"RequestId": "REQ-OK"}))
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    /// Parameters of every request, after the signature was checked.
    seen: Vec<Vec<(String, String)>>,
    bad_signatures: usize,
    user_agents: Vec<String>,
}

type Shared = Arc<Mutex<Script>>;

async fn handle(State(script): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let signature = params
        .iter()
        .find(|(k, _)| k == "Signature")
        .map(|(_, v)| v.clone());
    let expected = signer::sign(
        "POST",
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &SecretString::new(SECRET),
    );
    let reply = {
        let mut s = script.lock().unwrap();
        s.user_agents.push(
            headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        );
        if signature.as_deref() != Some(expected.signature.as_str()) {
            s.bad_signatures += 1;
            ecs_error(
                400,
                "SignatureDoesNotMatch",
                &format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{}",
                    expected.string_to_sign
                ),
            )
        } else {
            s.seen.push(params);
            s.replies.pop_front().unwrap_or_else(ok)
        }
    };
    tokio::time::sleep(reply.delay).await;
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [("content-type", reply.content_type)],
        reply.body,
    )
        .into_response()
}

async fn server(replies: Vec<Reply>) -> (String, Shared) {
    let script: Shared = Arc::new(Mutex::new(Script {
        replies: replies.into(),
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/", axum::routing::post(handle))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, script)
}

fn client(url: &str) -> EcsClient {
    EcsClient::new(ClientConfig {
        endpoint: Some(url.to_string()),
        request_timeout: Duration::from_millis(800),
        retry: RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(10),
            throttle_base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            retry_throttled: true,
        },
        qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(1000.0),
        burst: 100,
        ..Default::default()
    })
    .unwrap()
}

fn creds() -> Credentials {
    Credentials::new("testid", SecretString::new(SECRET), None)
}

fn pw() -> VncPassword {
    VncPassword::parse("Ecs123").unwrap()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn success_sends_every_common_parameter_signed() {
    let (url, script) = server(vec![ok()]).await;
    let id = client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap()
        .request_id;
    assert_eq!(id, "REQ-OK");
    let s = script.lock().unwrap();
    assert_eq!(s.bad_signatures, 0);
    let p = &s.seen[0];
    for (name, value) in [
        ("Action", "ModifyInstanceVncPasswd"),
        ("Version", "2014-05-26"),
        ("Format", "JSON"),
        ("AccessKeyId", "testid"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("RegionId", "cn-hangzhou"),
        ("InstanceId", "i-abc12345678"),
        ("VncPassword", "Ecs123"),
    ] {
        assert_eq!(param(p, name), Some(value), "{name}");
    }
    assert!(param(p, "SignatureNonce").is_some_and(|n| n.len() >= 32));
    assert!(param(p, "Timestamp").is_some_and(|t| t.ends_with('Z') && t.len() == 20));
    assert_eq!(param(p, "SecurityToken"), None);
    assert!(s.user_agents[0].starts_with("ecs-vnc-controller/"));
}

#[tokio::test]
async fn every_documented_error_reaches_the_caller_with_its_code_and_status() {
    for (status, code, class) in [
        (404, "InvalidInstanceId.NotFound", ErrorClass::Terminal),
        (404, "InvalidRegionId.NotFound", ErrorClass::Terminal),
        (403, "IncorrectInstanceStatus", ErrorClass::Transient),
        (400, "IncorrectVncPassword.Malformed", ErrorClass::Terminal),
        (404, "NoSuchResource", ErrorClass::Terminal),
    ] {
        // Transient errors are retried: script enough of them to exhaust the retries.
        let (url, script) = server(vec![ecs_error(status, code, "documented"); 4]).await;
        let err = client(&url)
            .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
            .await
            .unwrap_err();
        let api = err.api_error().unwrap_or_else(|| panic!("{code}: {err}"));
        assert_eq!((api.http_status, api.code.as_str()), (status, code));
        assert_eq!(
            api.request_id.as_deref(),
            Some(format!("REQ-{code}").as_str())
        );
        assert_eq!(err.class(), class);
        let attempts = script.lock().unwrap().seen.len();
        assert_eq!(
            attempts,
            if class == ErrorClass::Terminal { 1 } else { 4 },
            "{code}"
        );
    }
}

#[tokio::test]
async fn throttling_then_success_is_retried_with_a_fresh_nonce_each_time() {
    let (url, script) = server(vec![
        ecs_error(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        ),
        ecs_error(400, "Throttling", "throttled"),
    ])
    .await;
    client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap();
    let s = script.lock().unwrap();
    assert_eq!(s.seen.len(), 3);
    let nonces: std::collections::HashSet<_> = s
        .seen
        .iter()
        .map(|p| param(p, "SignatureNonce").unwrap().to_string())
        .collect();
    assert_eq!(nonces.len(), 3);
}

#[tokio::test]
async fn server_errors_then_success_are_retried_but_not_forever() {
    let (url, script) = server(vec![
        ecs_error(503, "ServiceUnavailable", "busy"),
        ecs_error(500, "InternalError", "oops"),
    ])
    .await;
    client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap();
    assert_eq!(script.lock().unwrap().seen.len(), 3);

    let (url, script) = server(vec![ecs_error(503, "ServiceUnavailable", "busy"); 10]).await;
    let err = client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert_eq!(
        script.lock().unwrap().seen.len(),
        4,
        "1 attempt + 3 retries"
    );
}

#[tokio::test]
async fn stale_signatures_are_resigned_and_credentials_errors_are_not_retried() {
    let (url, script) = server(vec![
        ecs_error(400, "SignatureNonceUsed", "nonce"),
        ecs_error(400, "InvalidTimeStamp.Expired", "ts"),
    ])
    .await;
    client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap();
    assert_eq!(script.lock().unwrap().seen.len(), 3);

    let (url, script) = server(vec![ecs_error(
        404,
        "InvalidAccessKeyId.NotFound",
        "Specified access key is not found.",
    )])
    .await;
    let err = client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Credentials);
    assert_eq!(script.lock().unwrap().seen.len(), 1);
}

#[tokio::test]
async fn a_wrong_secret_gets_both_strings_to_sign_with_secrets_masked() {
    let (url, _script) = server(vec![]).await;
    let wrong = Credentials::new(
        "testid",
        SecretString::new("not-the-secret"),
        Some(SecretString::new("CAIS+/tok==")),
    );
    let err = client(&url)
        .modify_instance_vnc_passwd(&wrong, "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap_err();
    let EcsError::Api {
        error,
        client_string_to_sign,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(error.code, "SignatureDoesNotMatch");
    let server_side = error.server_string_to_sign().unwrap();
    let client_side = client_string_to_sign.as_deref().unwrap();
    for text in [
        server_side,
        client_side,
        &err.to_string(),
        &format!("{err:?}"),
    ] {
        assert!(!text.contains("Ecs123"), "{text}");
        assert!(!text.contains("CAIS"), "{text}");
        assert!(!text.contains("not-the-secret"), "{text}");
    }
    assert!(client_side.contains("SecurityToken%3D***"));
    // Apart from the nonce-free parts, both sides signed the same parameter names.
    assert!(server_side.starts_with("POST&%2F&AccessKeyId%3Dtestid"));
}

#[tokio::test]
async fn an_sts_token_is_sent_and_signed() {
    let (url, script) = server(vec![ok()]).await;
    let sts = Credentials::new(
        "STS.id",
        SecretString::new(SECRET),
        Some(SecretString::new("CAIS+/abc==")),
    );
    client(&url)
        .modify_instance_vnc_passwd(&sts, "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap();
    let s = script.lock().unwrap();
    assert_eq!(s.bad_signatures, 0);
    assert_eq!(param(&s.seen[0], "SecurityToken"), Some("CAIS+/abc=="));
}

#[tokio::test]
async fn a_timeout_is_a_network_error_after_bounded_retries() {
    let slow = Reply {
        delay: Duration::from_secs(3),
        ..ok()
    };
    let (url, script) = server(vec![slow; 4]).await;
    let err = client(&url)
        .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EcsError::Network { timeout: true, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(script.lock().unwrap().seen.len(), 4);
}

#[tokio::test]
async fn reboots_are_not_retried_after_a_timeout_since_they_may_have_happened() {
    let slow = Reply {
        delay: Duration::from_secs(3),
        ..ok()
    };
    let (url, script) = server(vec![slow; 4]).await;
    let err = client(&url)
        .reboot_instance(&creds(), "cn-hangzhou", "i-abc12345678")
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::Network { .. }), "{err}");
    assert_eq!(script.lock().unwrap().seen.len(), 1);
}

#[tokio::test]
async fn garbage_bodies_are_errors_naming_status_and_an_excerpt() {
    for (reply, expect) in [
        (
            Reply {
                status: 502,
                content_type: "text/html",
                body: "<html><h1>502 Bad Gateway</h1></html>".into(),
                delay: Duration::ZERO,
            },
            "502 Bad Gateway",
        ),
        (
            Reply {
                status: 403,
                content_type: "text/html",
                body: "<html>Access denied by proxy</html>".into(),
                delay: Duration::ZERO,
            },
            "Access denied by proxy",
        ),
        (
            Reply {
                status: 200,
                content_type: "application/json",
                body: "{\"RequestId\": \"trunc".into(),
                delay: Duration::ZERO,
            },
            "RequestId",
        ),
        (
            Reply {
                status: 500,
                content_type: "application/json",
                body: String::new(),
                delay: Duration::ZERO,
            },
            "empty body",
        ),
        (
            Reply {
                status: 200,
                content_type: "text/plain",
                body: "hello".into(),
                delay: Duration::ZERO,
            },
            "hello",
        ),
    ] {
        let status = reply.status;
        let (url, _) = server(vec![reply; 4]).await;
        let err = client(&url)
            .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EcsError::UnexpectedBody { .. }), "{text}");
        assert!(text.contains(&format!("HTTP {status}")), "{text}");
        assert!(text.contains(expect), "{text}");
    }
}

#[tokio::test]
async fn describe_instances_pages_by_next_token_and_reads_io_optimized() {
    let page = |next: &str, ids: &[&str]| {
        json(
            200,
            serde_json::json!({
                "RequestId": "R", "TotalCount": 2, "MaxResults": 100, "NextToken": next,
                "Instances": {"Instance": ids.iter().map(|id| serde_json::json!({"InstanceId": id, "RegionId": "cn-hangzhou", "Status": "Running", "IoOptimized": id.ends_with('1'), "StartTime": "2026-01-01T00:00Z"})).collect::<Vec<_>>()}
            }),
        )
    };
    let (url, script) = server(vec![
        page("tok-2", &["i-a0000001"]),
        page("", &["i-a0000002"]),
    ])
    .await;
    let ids = vec!["i-a0000001".to_string(), "i-a0000002".to_string()];
    let got = client(&url)
        .describe_instances(&creds(), "cn-hangzhou", &ids)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].io_optimized && !got[1].io_optimized);
    let s = script.lock().unwrap();
    assert_eq!(s.seen.len(), 2, "the empty NextToken ends the paging");
    assert_eq!(
        param(&s.seen[0], "InstanceIds"),
        Some(r#"["i-a0000001","i-a0000002"]"#)
    );
    assert_eq!(param(&s.seen[0], "MaxResults"), Some("100"));
    assert_eq!(param(&s.seen[0], "NextToken"), None);
    assert_eq!(param(&s.seen[1], "NextToken"), Some("tok-2"));
    assert_eq!(param(&s.seen[1], "PageNumber"), None);
}

#[tokio::test]
async fn the_rate_limiter_is_shared_by_all_calls_of_a_client() {
    let (url, _) = server(vec![]).await;
    let c = EcsClient::new(ClientConfig {
        endpoint: Some(url),
        qps: ecs_vnc_controller::ecs::ratelimit::QpsLimits::uniform(5.0),
        burst: 1,
        ..Default::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let calls = (0..3).map(|_| {
        let c = c.clone();
        async move {
            c.modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
                .await
                .unwrap()
        }
    });
    futures::future::join_all(calls).await;
    // Three calls at 5/s with a burst of 1 take at least two periods (0.4 s).
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "{:?}",
        started.elapsed()
    );
}

/// One V3 request as received: the URI, the headers (lower-case names) and the body.
type V3Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>, Bytes)>>>;

async fn v3_server(replies: Vec<Reply>) -> (String, V3Seen) {
    async fn handle(
        State((seen, replies)): State<(V3Seen, Arc<Mutex<VecDeque<Reply>>>)>,
        request: axum::extract::Request,
    ) -> Response {
        let uri = request.uri().to_string();
        let headers = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap();
        seen.lock().unwrap().push((uri, headers, body));
        let reply = replies.lock().unwrap().pop_front().unwrap_or_else(ok);
        (
            StatusCode::from_u16(reply.status).unwrap(),
            [("content-type", reply.content_type)],
            reply.body,
        )
            .into_response()
    }
    let seen: V3Seen = Default::default();
    let app = axum::Router::new()
        .route("/", axum::routing::any(handle))
        .with_state((seen.clone(), Arc::new(Mutex::new(replies.into()))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn v3_client(url: &str) -> EcsClient {
    use ecs_vnc_controller::ecs::SignatureVersion;
    let c = client(url);
    EcsClient::new(ClientConfig {
        signature: SignatureVersion::V3,
        ..c.config().clone()
    })
    .unwrap()
}

#[tokio::test]
async fn v3_signs_headers_and_the_form_body_and_puts_nothing_in_the_url() {
    let (url, seen) = v3_server(vec![ok()]).await;
    let sts = Credentials::new(
        "STS.id",
        SecretString::new(SECRET),
        Some(SecretString::new("CAIS+/abc==")),
    );
    v3_client(&url)
        .modify_instance_vnc_passwd(&sts, "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap();
    let (uri, headers, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        uri, "/",
        "no query: the password and the token stay out of the URL"
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("x-acs-action"), Some("ModifyInstanceVncPasswd"));
    assert_eq!(header("x-acs-version"), Some("2014-05-26"));
    assert_eq!(header("x-acs-security-token"), Some("CAIS+/abc=="));
    assert_eq!(header("x-acs-accesskey-id"), Some("STS.id"));
    assert!(header("x-acs-date").is_some_and(|d| d.len() == 20 && d.ends_with('Z')));
    assert!(header("x-acs-signature-nonce").is_some_and(|n| n.len() >= 32));
    assert_eq!(
        header("x-acs-content-sha256"),
        Some(signer_v3::hashed_payload(&body).as_str())
    );
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    assert_eq!(param(&form, "VncPassword"), Some("Ecs123"));
    assert_eq!(param(&form, "InstanceId"), Some("i-abc12345678"));
    for v1_only in [
        "Signature",
        "SecurityToken",
        "AccessKeyId",
        "Action",
        "Format",
    ] {
        assert_eq!(param(&form, v1_only), None, "{v1_only} is not sent with V3");
    }
    // The signature is what this server computes over what it received.
    let authorization = signer_v3::parse_authorization(header("authorization").unwrap()).unwrap();
    assert_eq!(authorization.credential, "STS.id");
    assert_eq!(
        authorization.signed_headers,
        "content-type;host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version"
    );
    let received: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != "authorization")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = signer_v3::sign(
        &signer_v3::Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &received,
            hashed_payload: &signer_v3::hashed_payload(&body),
        },
        "STS.id",
        &SecretString::new(SECRET),
    );
    assert_eq!(authorization.signature, expected.signature);
}

#[tokio::test]
async fn v3_resigns_every_attempt_and_masks_its_canonical_request_on_a_mismatch() {
    let mismatch = ecs_error(
        400,
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation. server string to sign is:ACS3-HMAC-SHA256\nabc server canonical request is:POST\n/\n\nx-acs-security-token:CAIS+/abc==\n",
    );
    let (url, seen) = v3_server(vec![
        ecs_error(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        ),
        mismatch,
    ])
    .await;
    let sts = Credentials::new(
        "STS.id",
        SecretString::new(SECRET),
        Some(SecretString::new("CAIS+/abc==")),
    );
    let err = v3_client(&url)
        .modify_instance_vnc_passwd(&sts, "cn-hangzhou", "i-abc12345678", &pw())
        .await
        .unwrap_err();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the throttled attempt is retried");
    let nonce = |i: usize| {
        seen[i]
            .1
            .iter()
            .find(|(k, _)| k == "x-acs-signature-nonce")
            .map(|(_, v)| v.clone())
    };
    assert_ne!(nonce(0), nonce(1), "a fresh nonce for every attempt");
    let EcsError::Api {
        error,
        client_string_to_sign,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    let client_side = client_string_to_sign.as_deref().unwrap();
    assert!(client_side.starts_with("POST\n/\n\n"), "{client_side}");
    assert!(
        client_side.contains("x-acs-security-token:***\n"),
        "{client_side}"
    );
    assert_eq!(
        error.server_canonical_request(),
        Some("POST\n/\n\nx-acs-security-token:***")
    );
    assert_eq!(error.server_string_to_sign(), Some("ACS3-HMAC-SHA256\nabc"));
    for text in [
        client_side,
        &error.message,
        &err.to_string(),
        &format!("{err:?}"),
    ] {
        assert!(!text.contains("CAIS"), "{text}");
        assert!(!text.contains("Ecs123"), "{text}");
    }
}

// --- hostile endpoints: redirects, endless answers, endless paging ------------------------------

/// A server that answers every request with `status` and `Location: target`.
async fn redirector(status: u16, target: &str) -> String {
    let target = target.to_string();
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move {
            (
                StatusCode::from_u16(status).unwrap(),
                [("location", target)],
                "",
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A server whose every answer is `status` with a body that never ends.
async fn endless(status: u16) -> String {
    let app = axum::Router::new().fallback(move || async move {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            axum::body::Body::from_stream(stream),
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn requests_seen(script: &Shared) -> usize {
    script.lock().unwrap().user_agents.len()
}

/// A redirect would re-send the signed body (signature, SecurityToken, VNC password) wherever it
/// points: it is an error naming that place, never followed, and a redirected RebootInstance is
/// known not to have happened.
#[tokio::test]
async fn a_redirect_is_never_followed_and_the_error_says_where_it_pointed() {
    let (target, script) = server(vec![]).await;
    for status in [301, 302, 303, 307, 308] {
        let url = redirector(status, &format!("{target}/elsewhere")).await;
        let c = client(&url);
        let err = c
            .modify_instance_vnc_passwd(&creds(), "cn-hangzhou", "i-abc12345678", &pw())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&status.to_string()), "{text}");
        assert!(text.contains(&format!("{target}/elsewhere")), "{text}");
        assert!(text.contains("not followed"), "{text}");
        let err = c
            .reboot_instance(&creds(), "cn-hangzhou", "i-abc12345678")
            .await
            .unwrap_err();
        assert!(
            !ecs_vnc_controller::controller::decide::reboot_may_have_happened(&err),
            "a redirected RebootInstance never reached ECS: {err}"
        );
    }
    // STS and the metadata service (the OIDC token, the role's credentials) likewise.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOi.the-oidc-token.sig").unwrap();
    let url = redirector(307, &format!("{target}/sts")).await;
    let oidc = CredentialsProvider::oidc(
        OidcRole {
            role_arn: "acs:ram::1:role/r".into(),
            oidc_provider_arn: "acs:ram::1:oidc-provider/p".into(),
            token_file,
            role_session_name: "s".into(),
            sts_endpoint: url,
            duration_seconds: 900,
        },
        Duration::from_secs(2),
    );
    let e = oidc.credentials().await.unwrap_err();
    assert!(
        e.message.contains("307") && e.message.contains(&format!("{target}/sts")),
        "{e}"
    );
    assert!(!e.message.contains("the-oidc-token"), "{e}");
    let url = redirector(308, &format!("{target}/imds")).await;
    let imds = CredentialsProvider::ecs_ram_role(url, Some("r".into()), Duration::from_secs(2));
    let e = imds.credentials().await.unwrap_err();
    assert!(
        e.message.contains("308") && e.message.contains(&format!("{target}/imds")),
        "{e}"
    );
    assert_eq!(
        requests_seen(&script),
        0,
        "nothing reached the redirect's target"
    );
}

/// An answer that never ends is cut at 4 MiB, read as it arrives, with an error that says so (not
/// a timeout, not memory without bound).
#[tokio::test]
async fn an_endless_answer_is_cut_at_4_mib_by_every_client() {
    for status in [200, 500] {
        let url = endless(status).await;
        let c = EcsClient::new(ClientConfig {
            endpoint: Some(url.clone()),
            request_timeout: Duration::from_secs(20),
            retry: RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            },
            ..Default::default()
        })
        .unwrap();
        let started = std::time::Instant::now();
        let err = c
            .describe_instances(&creds(), "cn-hangzhou", &["i-abc12345678".to_string()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("4 MiB"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(15), "{err}");
    }
    let url = endless(200).await;
    let imds = CredentialsProvider::ecs_ram_role(url.clone(), None, Duration::from_secs(20));
    let e = imds.credentials().await.unwrap_err();
    assert!(e.message.contains("4 MiB"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a.b.c").unwrap();
    let oidc = CredentialsProvider::oidc(
        OidcRole {
            role_arn: "acs:ram::1:role/r".into(),
            oidc_provider_arn: "acs:ram::1:oidc-provider/p".into(),
            token_file,
            role_session_name: "s".into(),
            sts_endpoint: url,
            duration_seconds: 900,
        },
        Duration::from_secs(20),
    );
    let e = oidc.credentials().await.unwrap_err();
    assert!(e.message.contains("4 MiB"), "{e}");
}

/// 100 IDs fit one page of DescribeInstances; a server that keeps handing out new NextTokens is an
/// error after a few pages, not a loop.
#[tokio::test]
async fn describe_instances_stops_a_server_that_keeps_paging() {
    let pages: Vec<Reply> = (0..50)
        .map(|i| {
            json(
                200,
                serde_json::json!({
                    "RequestId": "R", "TotalCount": 1000, "MaxResults": 100, "NextToken": format!("tok-{}", i + 1),
                    "Instances": {"Instance": [{"InstanceId": format!("i-page{i:08}"), "RegionId": "cn-hangzhou", "Status": "Running", "IoOptimized": true, "StartTime": "2026-01-01T00:00Z"}]}
                }),
            )
        })
        .collect();
    let (url, script) = server(pages).await;
    let err = client(&url)
        .describe_instances(&creds(), "cn-hangzhou", &["i-page00000000".to_string()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pages"), "{err}");
    let sent = script.lock().unwrap().seen.len();
    assert!((2..=5).contains(&sent), "{sent} pages asked for");
}
