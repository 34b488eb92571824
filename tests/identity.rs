//! The controller's own identity: Alibaba's default credentials chain against the simulator's STS
//! and metadata service, with a real OIDC token — a ServiceAccount token from the test
//! kube-apiserver (TokenRequest, audience `sts.aliyuncs.com`), verified by the simulator against
//! the API server's own `/openid/v1/jwks`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;

use ecs_vnc_controller::ecs::provider::{
    ENV_CREDENTIALS_FILE, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE, ENV_ROLE_ARN,
};
use ecs_vnc_controller::ecs::sts::{self, StsError};
use ecs_vnc_controller::ecs::{ClientConfig, CredentialsProvider, EcsClient, ProviderConfig};
use ecs_vnc_controller::secret::SecretString;
use ecs_vnc_controller::simulator::{
    InstanceConfig, MetadataConfig, RoleConfig, RunningSimulator, Simulator, SimulatorConfig,
    StsConfig,
};
use support::TestNamespace;
use support::controller::*;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "sts.aliyuncs.com";
const ROLE: &str = "acs:ram::1234567890:role/ecs-vnc-controller";
const PROVIDER: &str = "acs:ram::1234567890:oidc-provider/ack-rrsa-test";
const SA: &str = "ecs-vnc-controller";
const INSTANCE: &str = "i-identity0001";
const INSTANCE2: &str = "i-identity0002";

async fn jwks(client: &Client) -> serde_json::Value {
    let request = axum::http::Request::get("/openid/v1/jwks")
        .body(Vec::new())
        .expect("request");
    let text = client
        .request_text(request)
        .await
        .expect("GET /openid/v1/jwks");
    serde_json::from_str(&text).expect("JWKS JSON")
}

async fn service_account(client: &Client, ns: &str, name: &str) {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("create ServiceAccount {ns}/{name}: {e}"));
}

async fn token(client: &Client, ns: &str, name: &str, audience: &str) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.into()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{name}: {e}"))
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest status with a token")
}

/// A simulator whose STS trusts the test API server's tokens of `ns`/`SA` for `ROLE`.
async fn simulator(
    client: &Client,
    ns: &str,
    max_duration: Option<u32>,
    metadata: Option<MetadataConfig>,
) -> RunningSimulator {
    let config = SimulatorConfig {
        instances: [INSTANCE, INSTANCE2]
            .iter()
            .map(|id| InstanceConfig {
                id: id.to_string(),
                region: "cn-hangzhou".into(),
                io_optimized: true,
                status: "Running".into(),
            })
            .collect(),
        sts: Some(StsConfig {
            issuer: ISSUER.into(),
            jwks: jwks(client).await,
            audience: AUDIENCE.into(),
            roles: vec![RoleConfig {
                arn: ROLE.into(),
                oidc_provider_arn: PROVIDER.into(),
                subjects: vec![format!("system:serviceaccount:{ns}:{SA}")],
            }],
            max_duration_seconds: max_duration,
        }),
        metadata,
        ..Default::default()
    };
    Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("start the simulator")
}

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&'static str) -> Option<String> {
    let map: HashMap<&'static str, String> = vars.into_iter().collect();
    move |k| map.get(k).cloned()
}

fn ecs(sim: &RunningSimulator) -> EcsClient {
    EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        ..ClientConfig::default()
    })
    .expect("ECS client")
}

fn refused_code(e: StsError) -> String {
    match e {
        StsError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other}"),
    }
}

/// RRSA end to end: the chain picks OIDC, the controller applies a password with the assumed
/// role, and across several expiries of 6-second credentials no ECS call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_credentials_are_refreshed_before_expiry_with_no_failed_ecs_call() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-oidc").await;
    service_account(&client, &ns.name, SA).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token(&client, &ns.name, SA, AUDIENCE).await).expect("write");
    let sim = simulator(&client, &ns.name, Some(6), None).await;

    let chain = CredentialsProvider::from_lookup(
        lookup(vec![
            (ENV_ROLE_ARN, ROLE.into()),
            (ENV_OIDC_PROVIDER_ARN, PROVIDER.into()),
            (ENV_OIDC_TOKEN_FILE, token_file.display().to_string()),
            (ENV_CREDENTIALS_FILE, "/nonexistent".into()),
        ]),
        &ProviderConfig {
            sts_endpoint: Some(format!("{}/sts", sim.url())),
            metadata_endpoint: Some("http://127.0.0.1:9".into()),
            ..ProviderConfig::default()
        },
    )
    .await;
    let provider = chain.provider.expect("the chain finds the OIDC role");
    assert_eq!(provider.identity(), format!("oidc:{ROLE}"));

    let controller = start_controller(ControllerOptions {
        namespace: Some(ns.name.clone()),
        default_provider: Some(provider.clone()),
        default_credentials_namespaces: ns.name.clone(),
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    put_secret(&client, &ns.name, "pw", &[("password", "Abc123")]).await;
    put_vncpassword(
        &client,
        &ns.name,
        "first",
        json!({"instanceId": INSTANCE, "regionId": "cn-hangzhou", "passwordSecretRef": {"name": "pw"}}),
    )
    .await;
    wait_condition(
        &client,
        &ns.name,
        "first",
        "Ready",
        "True",
        None,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        sim.state()
            .instance(INSTANCE)
            .and_then(|i| i.set_password)
            .as_deref(),
        Some("Abc123")
    );

    // 20 s of ECS calls with whatever the provider hands out: more than three lifetimes.
    let ecs = ecs(&sim);
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let creds = provider.credentials().await.expect("credentials");
        ecs.describe_instances(&creds, "cn-hangzhou", &[INSTANCE.to_string()])
            .await
            .unwrap_or_else(|e| panic!("ECS call {calls} after {:?}: {e}", started.elapsed()));
        calls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let issued = sim.state().issued("AssumeRoleWithOIDC");
    assert!(
        issued >= 4,
        "only {issued} exchanges in 20 s of 6 s credentials"
    );
    // A new object long after the first credentials expired applies at once.
    put_vncpassword(
        &client,
        &ns.name,
        "second",
        json!({"instanceId": INSTANCE2, "regionId": "cn-hangzhou", "passwordSecretRef": {"name": "pw"}}),
    )
    .await;
    wait_condition(
        &client,
        &ns.name,
        "second",
        "Ready",
        "True",
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        sim.state()
            .instance(INSTANCE2)
            .and_then(|i| i.set_password)
            .as_deref(),
        Some("Abc123")
    );
    for code in [
        "InvalidSecurityToken.Expired",
        "InvalidSecurityToken.MismatchWithAccessKey",
        "InvalidAccessKeyId.NotFound",
    ] {
        assert_eq!(
            sim.state().calls_with_code("DescribeInstances", code),
            0,
            "{code}"
        );
        assert_eq!(
            sim.state().calls_with_code("ModifyInstanceVncPasswd", code),
            0,
            "{code}"
        );
    }
    controller.stop().await;
    ns.delete().await;
}

/// The simulated STS checks what real STS checks: signature, audience, expiry, trust; and the
/// simulated ECS refuses STS keys past their Expiration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refuses_tampered_foreign_untrusted_and_expired_tokens() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-sts").await;
    service_account(&client, &ns.name, SA).await;
    service_account(&client, &ns.name, "someone-else").await;
    let sim = simulator(&client, &ns.name, None, None).await;
    let http = reqwest::Client::new();
    let endpoint = format!("{}/sts", sim.url());
    let exchange = |token: String, role: &'static str| {
        let http = http.clone();
        let endpoint = endpoint.clone();
        async move {
            let token = SecretString::new(token);
            sts::assume_role_with_oidc(
                &http,
                &endpoint,
                &sts::AssumeRoleWithOidc {
                    role_arn: role,
                    oidc_provider_arn: PROVIDER,
                    oidc_token: &token,
                    role_session_name: "identity-test",
                    duration_seconds: 900,
                },
            )
            .await
        }
    };
    let good = token(&client, &ns.name, SA, AUDIENCE).await;
    let t = exchange(good.clone(), ROLE)
        .await
        .expect("a good token is exchanged");
    assert!(t.credentials.access_key_id.starts_with("STS."));
    assert!(t.credentials.security_token.is_some());

    // One character of the payload changed: the signature no longer matches.
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Vec<char> = parts[1].chars().collect();
    let i = payload.len() / 2;
    payload[i] = if payload[i] == 'A' { 'B' } else { 'A' };
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        payload.into_iter().collect::<String>(),
        parts[2]
    );
    assert_eq!(
        refused_code(exchange(tampered, ROLE).await.unwrap_err()),
        "AuthenticationFail.OIDCToken.InvalidSignature"
    );
    let foreign = token(&client, &ns.name, SA, "https://kubernetes.default.svc").await;
    assert_eq!(
        refused_code(exchange(foreign, ROLE).await.unwrap_err()),
        "AuthenticationFail.OIDCToken.AudienceNotMatch"
    );
    let other = token(&client, &ns.name, "someone-else", AUDIENCE).await;
    assert_eq!(
        refused_code(exchange(other, ROLE).await.unwrap_err()),
        "AuthenticationFail.NoPermission"
    );
    assert_eq!(
        refused_code(
            exchange(good.clone(), "acs:ram::1234567890:role/nope")
                .await
                .unwrap_err()
        ),
        "EntityNotExist.Role"
    );
    assert_eq!(
        refused_code(exchange("not-a-jwt".into(), ROLE).await.unwrap_err()),
        "AuthenticationFail.OIDCToken.Invalid"
    );

    // Two hours later (TokenRequest tokens live at most 10 minutes here): the token is expired,
    // and so are the STS credentials issued for 15 minutes.
    fn later() -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)
    }
    sim.state().set_clock(later);
    assert_eq!(
        refused_code(exchange(good, ROLE).await.unwrap_err()),
        "AuthenticationFail.OIDCToken.Expired"
    );
    let ecs = EcsClient::new(ClientConfig {
        endpoint: Some(sim.url()),
        clock: later,
        ..ClientConfig::default()
    })
    .expect("ECS client");
    let e = ecs
        .describe_instances(&t.credentials, "cn-hangzhou", &[INSTANCE.to_string()])
        .await
        .expect_err("expired STS credentials");
    assert_eq!(e.code(), Some("InvalidSecurityToken.Expired"), "{e}");
    ns.delete().await;
}

/// The ECS RAM role: hardened mode only (no token, 401), the role discovered, and the chain's
/// order: the credentials file beats the metadata service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_ram_role_in_token_mode_and_the_file_before_it() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-imds").await;
    let sim = simulator(
        &client,
        &ns.name,
        None,
        Some(MetadataConfig {
            role_name: "EcsVncRole".into(),
            duration_seconds: 3600,
        }),
    )
    .await;
    let http = reqwest::Client::new();
    let bare = http
        .get(format!(
            "{}/latest/meta-data/ram/security-credentials/",
            sim.url()
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(bare.status().as_u16(), 401, "no token, no answer");

    let config = ProviderConfig {
        sts_endpoint: Some(format!("{}/sts", sim.url())),
        metadata_endpoint: Some(sim.url()),
        ..ProviderConfig::default()
    };
    let chain = CredentialsProvider::from_lookup(
        lookup(vec![(ENV_CREDENTIALS_FILE, "/nonexistent".into())]),
        &config,
    )
    .await;
    let provider = chain
        .provider
        .expect("the chain finds the instance's RAM role");
    assert_eq!(provider.identity(), "ecs-ram-role:(instance role)");
    assert_eq!(chain.skipped.len(), 3, "{:?}", chain.skipped);
    let creds = provider.credentials().await.expect("credentials");
    ecs(&sim)
        .describe_instances(&creds, "cn-hangzhou", &[INSTANCE.to_string()])
        .await
        .expect("the role's credentials work with ECS");
    assert!(sim.state().issued("EcsRamRole") >= 1);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[default]\ntype = access_key\naccess_key_id = LTAIfile\naccess_key_secret = s\n",
    )
    .expect("write");
    let chain = CredentialsProvider::from_lookup(
        lookup(vec![(ENV_CREDENTIALS_FILE, file.display().to_string())]),
        &config,
    )
    .await;
    assert_eq!(
        chain.provider.expect("file").identity(),
        "profile:default:LTAIfile"
    );
    ns.delete().await;
}

/// A refresh that fails is retried and reported while the credentials in hand still work; only
/// once they have expired does the provider fail, naming the cause (never the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_refresh_keeps_valid_credentials_until_they_expire() {
    #[derive(Default)]
    struct Count(std::sync::Mutex<(u32, u32)>);
    impl ecs_vnc_controller::ecs::provider::RefreshObserver for Count {
        fn refreshed(&self, _source: &'static str, ok: bool) {
            let mut c = self.0.lock().unwrap();
            if ok { c.0 += 1 } else { c.1 += 1 }
        }
    }
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-fail").await;
    service_account(&client, &ns.name, SA).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    let token = token(&client, &ns.name, SA, AUDIENCE).await;
    std::fs::write(&token_file, &token).expect("write");
    let sim = simulator(&client, &ns.name, Some(6), None).await;
    let provider = CredentialsProvider::oidc(
        ecs_vnc_controller::ecs::provider::OidcRole {
            role_arn: ROLE.into(),
            oidc_provider_arn: PROVIDER.into(),
            token_file: token_file.clone(),
            role_session_name: "identity-test".into(),
            sts_endpoint: format!("{}/sts", sim.url()),
            duration_seconds: 900,
        },
        Duration::from_secs(5),
    );
    let count = std::sync::Arc::new(Count::default());
    provider.set_observer(count.clone());
    let first = provider.credentials().await.expect("first exchange");
    let fetched = Instant::now();
    std::fs::remove_file(&token_file).expect("remove the token file");
    // Due after 4 s, expired after 6 s: in between the refresh fails and the old ones are served.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let again = provider.credentials().await.expect("still valid");
    assert_eq!(again.access_key_id, first.access_key_id);
    ecs(&sim)
        .describe_instances(&again, "cn-hangzhou", &[INSTANCE.to_string()])
        .await
        .expect("the credentials in hand still work");
    assert!(
        count.0.lock().unwrap().1 >= 1,
        "the failed refresh is reported"
    );
    tokio::time::sleep(
        Duration::from_secs(6).saturating_sub(fetched.elapsed()) + Duration::from_millis(1500),
    )
    .await;
    let e = provider
        .credentials()
        .await
        .expect_err("expired, and no refresh works");
    assert!(
        e.message.contains("token file") && !e.message.contains(&token),
        "{e}"
    );
    // The file back: the next attempt (after the backoff) works again.
    std::fs::write(&token_file, &token).expect("write");
    let back = eventually_ok(&provider).await;
    assert_ne!(back.access_key_id, first.access_key_id);
    let (ok, failed) = *count.0.lock().unwrap();
    assert!(ok >= 2 && failed >= 2, "ok {ok}, failed {failed}");
    ns.delete().await;
}

async fn eventually_ok(provider: &CredentialsProvider) -> ecs_vnc_controller::ecs::Credentials {
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        match provider.credentials().await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("never recovered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
