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
    AccessKeyConfig, InstanceConfig, MetadataConfig, RoleConfig, RunningSimulator, Simulator,
    SimulatorConfig, StsConfig,
};
use support::controller::*;
use support::{TestNamespace, jwks};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "sts.aliyuncs.com";
const ROLE: &str = "acs:ram::1234567890:role/ecs-vnc-controller";
const PROVIDER: &str = "acs:ram::1234567890:oidc-provider/ack-rrsa-test";
const SA: &str = "ecs-vnc-controller";
const INSTANCE: &str = "i-identity0001";
const INSTANCE2: &str = "i-identity0002";

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
        instances: instances(&[INSTANCE, INSTANCE2]),
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

fn instances(ids: &[&str]) -> Vec<InstanceConfig> {
    ids.iter()
        .map(|id| InstanceConfig {
            id: id.to_string(),
            region: "cn-hangzhou".into(),
            io_optimized: true,
            status: "Running".into(),
            tags: Default::default(),
        })
        .collect()
}

/// A controller of namespace `ns` against `sim`, whose default credentials (for `ns`) come from
/// `provider`.
async fn controller_with(
    client: &Client,
    ns: &str,
    sim: &RunningSimulator,
    provider: CredentialsProvider,
) -> RunningController {
    start_controller(ControllerOptions {
        namespace: Some(ns.to_string()),
        default_provider: Some(provider),
        default_credentials_namespaces: ns.to_string(),
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await
}

/// The spec of a VncPassword for `instance` in cn-hangzhou whose password is the Secret `pw`;
/// with `service_account`, applied with that ServiceAccount's role
/// (`credentials.serviceAccountRef`).
fn spec(instance: &str, service_account: Option<&str>) -> serde_json::Value {
    let mut spec = json!({
        "instanceId": instance, "regionId": "cn-hangzhou", "passwordSecretRef": {"name": "pw"},
    });
    if let Some(sa) = service_account {
        spec["credentials"] = json!({"serviceAccountRef": {"name": sa}});
    }
    spec
}

/// The Secret `pw` with `password`, then the VncPassword `name` with `spec`.
async fn apply(client: &Client, ns: &str, name: &str, password: &str, spec: serde_json::Value) {
    put_secret(client, ns, "pw", &[("password", password)]).await;
    put_vncpassword(client, ns, name, spec).await;
}

/// As [`apply`], then waits (60 s at most) for the VncPassword to be Ready.
async fn apply_ready(
    client: &Client,
    ns: &str,
    name: &str,
    password: &str,
    spec: serde_json::Value,
) {
    apply(client, ns, name, password, spec).await;
    wait_ready(client, ns, name, Duration::from_secs(60)).await;
}

/// A ServiceAccount `name` annotated with the RAM role `role`.
async fn annotated_service_account(client: &Client, ns: &str, name: &str, role: &str) {
    service_account(client, ns, name).await;
    annotate(client, ns, name, Some(role)).await;
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

    let controller = controller_with(&client, &ns.name, &sim, provider.clone()).await;
    apply_ready(&client, &ns.name, "first", "Abc123", spec(INSTANCE, None)).await;
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
    // Keys STS issues belong to the role's account; the controller asked who each key is at most
    // once (rate limits per account), not once per ECS call.
    let creds = provider.credentials().await.expect("credentials");
    let who = sts::get_caller_identity(
        &reqwest::Client::new(),
        &format!("{}/sts", sim.url()),
        &creds,
    )
    .await
    .expect("GetCallerIdentity");
    assert_eq!(who.account_id, "1234567890");
    assert_eq!(who.identity_type.as_deref(), Some("AssumedRoleUser"));
    assert!(
        who.arn
            .as_deref()
            .is_some_and(|a| a.starts_with("acs:ram::1234567890:assumed-role/ecs-vnc-controller/")),
        "{who:?}"
    );
    let lookups = sim.state().caller_identity_calls();
    assert!(
        lookups <= issued + 1,
        "{lookups} look-ups for {issued} keys"
    );
    // A new object long after the first credentials expired applies at once.
    put_vncpassword(&client, &ns.name, "second", spec(INSTANCE2, None)).await;
    wait_ready(&client, &ns.name, "second", Duration::from_secs(30)).await;
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
/// order: the credentials file beats the metadata service (the default file, absent, is passed
/// over as the SDKs do; a file the operator names is never, see below).
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
            account_id: None,
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
    let home = tempfile::tempdir().expect("tempdir");
    let chain = CredentialsProvider::from_lookup(
        lookup(vec![("HOME", home.path().display().to_string())]),
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

/// The node's RAM role is fetched from the metadata service directly, never through the
/// environment's `HTTP_PROXY` (plain http: the proxy would see the node's credentials). The
/// controller binary runs with a proxy set that counts what reaches it, and exits once it has
/// found its credentials (there is no cluster to reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_service_is_never_asked_through_a_proxy() {
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            metadata: Some(MetadataConfig {
                role_name: "EcsVncRole".into(),
                duration_seconds: 3600,
                account_id: None,
            }),
            ..Default::default()
        },
    )
    .await
    .expect("simulator");
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
    let proxied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = proxied.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = proxy.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            use tokio::io::AsyncWriteExt;
            let _ = conn
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let home = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-vnc-controller"))
        .args([
            "run",
            &format!("--metadata-endpoint={}", sim.url()),
            "--metrics-addr=127.0.0.1:0",
            "--log-format=json",
        ])
        .env_clear()
        .env("HOME", home.path())
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("run the controller");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ecs-ram-role:(instance role)"),
        "the chain found the node's role: {stderr}"
    );
    assert!(sim.state().issued("EcsRamRole") >= 1, "{stderr}");
    assert_eq!(
        proxied.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing went through the proxy: {stderr}"
    );
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

// --- spec.credentials.serviceAccountRef: RRSA per namespace ---------------------------------------

const TENANT_ROLE: &str = "acs:ram::1234567890:role/vnc-tenant";
const UNTRUSTING_ROLE: &str = "acs:ram::1234567890:role/trusts-someone-else";

/// A simulator with instances `ids`, whose STS trusts the test API server's tokens: `TENANT_ROLE`
/// for the ServiceAccounts `subjects`, `UNTRUSTING_ROLE` for nobody here.
async fn rrsa_simulator(
    client: &Client,
    ids: &[&str],
    subjects: Vec<String>,
    keys: Vec<AccessKeyConfig>,
) -> RunningSimulator {
    rrsa_simulator_lasting(client, ids, subjects, keys, None).await
}

/// As [`rrsa_simulator`], with STS credentials that last at most `max_duration` seconds.
async fn rrsa_simulator_lasting(
    client: &Client,
    ids: &[&str],
    subjects: Vec<String>,
    keys: Vec<AccessKeyConfig>,
    max_duration: Option<u32>,
) -> RunningSimulator {
    let config = SimulatorConfig {
        access_keys: keys,
        instances: instances(ids),
        sts: Some(StsConfig {
            issuer: ISSUER.into(),
            jwks: jwks(client).await,
            audience: AUDIENCE.into(),
            roles: vec![
                RoleConfig {
                    arn: TENANT_ROLE.into(),
                    oidc_provider_arn: PROVIDER.into(),
                    subjects,
                },
                RoleConfig {
                    arn: UNTRUSTING_ROLE.into(),
                    oidc_provider_arn: PROVIDER.into(),
                    subjects: vec!["system:serviceaccount:elsewhere:someone".into()],
                },
            ],
            max_duration_seconds: max_duration,
        }),
        ..Default::default()
    };
    Simulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("start the simulator")
}

/// A controller of namespace `ns` that exchanges ServiceAccount tokens with `sim`'s STS.
async fn rrsa_controller(client: &Client, ns: &str, sim: &RunningSimulator) -> RunningController {
    start_controller(ControllerOptions {
        namespace: Some(ns.to_string()),
        flags: vec![
            format!("--sts-endpoint={}/sts", sim.url()),
            format!("--oidc-provider-arn={PROVIDER}"),
        ],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await
}

/// A simulator of `INSTANCE` whose STS trusts `TENANT_ROLE` for the ServiceAccount `ns`/`sa`
/// (with credentials lasting at most `max_duration` seconds), and a controller of `ns` using it.
async fn rrsa_setup(
    client: &Client,
    ns: &str,
    sa: &str,
    max_duration: Option<u32>,
) -> (RunningSimulator, RunningController) {
    let sim = rrsa_simulator_lasting(
        client,
        &[INSTANCE],
        vec![format!("system:serviceaccount:{ns}:{sa}")],
        vec![],
        max_duration,
    )
    .await;
    let controller = rrsa_controller(client, ns, &sim).await;
    (sim, controller)
}

/// Sets (or with `None` removes) the ServiceAccount's `ecsvnc.io/role-arn`.
async fn annotate(client: &Client, ns: &str, name: &str, role: Option<&str>) {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"annotations": {"ecsvnc.io/role-arn": role}}}),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("annotate ServiceAccount {ns}/{name}: {e}"));
}

fn set_password(sim: &RunningSimulator, id: &str) -> Option<String> {
    sim.state().instance(id).and_then(|i| i.set_password)
}

/// Waits for a Stalled condition with `reason`, and returns its message.
async fn stalled(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let status = wait_condition(
        client,
        ns,
        name,
        "Stalled",
        "True",
        Some(reason),
        Duration::from_secs(60),
    )
    .await;
    status
        .condition("Stalled")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A VncPassword naming a ServiceAccount of its namespace is applied with the RAM role of the
/// ServiceAccount's annotation; a changed annotation is used at once (a role that does not trust
/// the ServiceAccount: Stalled AuthFailed with STS's code), and changing it back heals the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_ref_is_applied_end_to_end_and_follows_its_role_annotation() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "rrsa-e2e").await;
    annotated_service_account(&client, &ns.name, "vnc", TENANT_ROLE).await;
    let (sim, controller) = rrsa_setup(&client, &ns.name, "vnc", None).await;
    apply_ready(
        &client,
        &ns.name,
        "web",
        "Rrsa12",
        spec(INSTANCE, Some("vnc")),
    )
    .await;
    assert_eq!(set_password(&sim, INSTANCE).as_deref(), Some("Rrsa12"));
    let modify = sim
        .state()
        .call_log()
        .into_iter()
        .find(|c| c.action == "ModifyInstanceVncPasswd" && c.code == "Success")
        .expect("a successful ModifyInstanceVncPasswd");
    assert!(
        modify
            .access_key_id
            .as_deref()
            .is_some_and(|k| k.starts_with("STS.")),
        "signed with STS credentials: {modify:?}"
    );
    let exchanges = sim.state().issued("AssumeRoleWithOIDC");
    assert_eq!(exchanges, 1);

    // Cached: another password change is applied without another exchange.
    put_secret(&client, &ns.name, "pw", &[("password", "Rrsa34")]).await;
    support::eventually("the second password", Duration::from_secs(30), || async {
        (set_password(&sim, INSTANCE).as_deref() == Some("Rrsa34")).then_some(())
    })
    .await;
    assert_eq!(sim.state().issued("AssumeRoleWithOIDC"), exchanges);

    // The annotation names a role whose trust policy does not admit this ServiceAccount: the next
    // apply is refused by STS, and the user sees STS's code (never the token).
    annotate(&client, &ns.name, "vnc", Some(UNTRUSTING_ROLE)).await;
    put_secret(&client, &ns.name, "pw", &[("password", "Rrsa56")]).await;
    let message = stalled(&client, &ns.name, "web", "AuthFailed").await;
    assert!(
        message.contains("AuthenticationFail.NoPermission") && message.contains(UNTRUSTING_ROLE),
        "{message}"
    );
    assert!(!message.contains("eyJ"), "no token in {message}");
    assert_eq!(set_password(&sim, INSTANCE).as_deref(), Some("Rrsa34"));

    // Back to the trusted role: the ServiceAccount watch brings the reconcile that applies.
    annotate(&client, &ns.name, "vnc", Some(TENANT_ROLE)).await;
    support::eventually("the third password", Duration::from_secs(60), || async {
        (set_password(&sim, INSTANCE).as_deref() == Some("Rrsa56")).then_some(())
    })
    .await;
    wait_ready(&client, &ns.name, "web", Duration::from_secs(30)).await;
    controller.stop().await;
    ns.delete().await;
}

/// What a user sees while the ServiceAccount is missing or not annotated, and that creating and
/// annotating it later is enough (the ServiceAccount watch). The CRD refuses naming both a Secret
/// and a ServiceAccount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unannotated_service_account_stalls_until_it_is_created_and_annotated() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "rrsa-late").await;
    let (sim, controller) = rrsa_setup(&client, &ns.name, "late", None).await;
    apply(
        &client,
        &ns.name,
        "web",
        "Late12",
        spec(INSTANCE, Some("late")),
    )
    .await;
    let message = stalled(&client, &ns.name, "web", "ServiceAccountNotFound").await;
    assert!(
        message.contains("late") && message.contains(&ns.name),
        "{message}"
    );

    service_account(&client, &ns.name, "late").await;
    let message = stalled(&client, &ns.name, "web", "RoleArnNotSet").await;
    assert!(message.contains("ecsvnc.io/role-arn"), "{message}");
    assert_eq!(sim.state().issued("AssumeRoleWithOIDC"), 0);
    assert_eq!(
        sim.state().total_calls(),
        0,
        "no ECS call without credentials"
    );

    // Not a RAM role ARN: its own reason.
    annotate(&client, &ns.name, "late", Some("vnc-rotator")).await;
    let message = stalled(&client, &ns.name, "web", "RoleArnInvalid").await;
    assert!(message.contains("not a RAM role ARN"), "{message}");
    assert_eq!(sim.state().issued("AssumeRoleWithOIDC"), 0);

    annotate(&client, &ns.name, "late", Some(TENANT_ROLE)).await;
    wait_ready(&client, &ns.name, "web", Duration::from_secs(60)).await;
    assert_eq!(set_password(&sim, INSTANCE).as_deref(), Some("Late12"));

    // Both kinds of credentials at once: refused by the API server, with the rule's message.
    let both = serde_json::from_value::<ecs_vnc_controller::api::VncPassword>(json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
        "metadata": {"name": "both"},
        "spec": {
            "instanceId": INSTANCE2, "regionId": "cn-hangzhou", "passwordSecretRef": {"name": "pw"},
            "credentialsSecretRef": {"name": "creds"}, "credentialsServiceAccountRef": {"name": "late"},
        },
    }))
    .expect("object");
    let refused = Api::<ecs_vnc_controller::api::VncPassword>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &both)
        .await
        .expect_err("both credentials references");
    assert!(
        refused
            .to_string()
            .contains("set at most one of credentialsSecretRef and credentialsServiceAccountRef"),
        "{refused}"
    );
    controller.stop().await;
    ns.delete().await;
}

/// A tenant cannot use another namespace's ServiceAccount: the reference has only a name, always
/// looked up in the VncPassword's own namespace, so no token is requested and STS is never asked.
/// A controller without an OIDC provider ARN says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_namespaces_service_account_is_never_used() {
    let client = support::client().await;
    let owner = TestNamespace::new(&client, "rrsa-owner").await;
    let tenant = TestNamespace::new(&client, "rrsa-tenant").await;
    annotated_service_account(&client, &owner.name, "deployer", TENANT_ROLE).await;
    // The role trusts the owner's ServiceAccount (and, were it asked, would trust anyone's).
    let sim = rrsa_simulator(&client, &[INSTANCE], vec![], vec![]).await;
    let controller = rrsa_controller(&client, &tenant.name, &sim).await;
    let steal = spec(INSTANCE, Some("deployer"));
    apply(&client, &tenant.name, "steal", "Xns123", steal.clone()).await;
    let message = stalled(&client, &tenant.name, "steal", "ServiceAccountNotFound").await;
    assert!(message.contains(&tenant.name), "{message}");
    assert_eq!(
        sim.state().issued("AssumeRoleWithOIDC"),
        0,
        "STS never asked"
    );
    assert_eq!(sim.state().total_calls(), 0, "ECS never called");
    assert_eq!(set_password(&sim, INSTANCE), None);
    controller.stop().await;

    // The same ServiceAccount in the tenant's own namespace, but a controller with no OIDC
    // provider ARN: a clear stall, no exchange.
    annotated_service_account(&client, &tenant.name, "deployer", TENANT_ROLE).await;
    let controller = start_controller(ControllerOptions {
        namespace: Some(tenant.name.clone()),
        flags: vec![
            format!("--sts-endpoint={}/sts", sim.url()),
            "--oidc-provider-arn=".into(),
        ],
        ..ControllerOptions::new(client.clone(), sim.url())
    })
    .await;
    let mut manual = steal;
    manual["rebootPolicy"] = json!("Manual");
    put_vncpassword(&client, &tenant.name, "steal", manual).await;
    let message = stalled(&client, &tenant.name, "steal", "OidcProviderNotConfigured").await;
    assert!(message.contains("--oidc-provider-arn"), "{message}");
    assert_eq!(sim.state().issued("AssumeRoleWithOIDC"), 0);
    controller.stop().await;
    owner.delete().await;
    tenant.delete().await;
}

// --- the default credentials as a mounted file ---------------------------------------------------

/// The controller's credentials file (a mounted Secret) rotated in place, as the kubelet does it
/// (a new file swapped in): the next ECS call is signed with the new key, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_credentials_file_signs_the_next_ecs_call_without_a_restart() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-file").await;
    let key = |id: &str, secret: &str| AccessKeyConfig {
        id: id.into(),
        secret: secret.into(),
        security_token: None,
        account_id: None,
    };
    let sim = rrsa_simulator(
        &client,
        &[INSTANCE],
        vec![],
        vec![key("LTAIold", "old-secret"), key("LTAInew", "new-secret")],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    let write = |id: &str, secret: &str| {
        let tmp = dir.path().join("..data_tmp");
        std::fs::write(
            &tmp,
            format!(
                "[default]\ntype = access_key\naccess_key_id = {id}\naccess_key_secret = {secret}\n"
            ),
        )
        .expect("write");
        std::fs::rename(&tmp, &file).expect("swap");
    };
    write("LTAIold", "old-secret");
    let chain = CredentialsProvider::from_lookup(
        lookup(vec![
            (ENV_CREDENTIALS_FILE, file.display().to_string()),
            ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true".into()),
        ]),
        &ProviderConfig::default(),
    )
    .await;
    let provider = chain.provider.expect("the credentials file");
    let controller = controller_with(&client, &ns.name, &sim, provider).await;
    apply_ready(&client, &ns.name, "web", "File12", spec(INSTANCE, None)).await;
    let signer = |password: &'static str| {
        let sim = &sim;
        async move {
            sim.state()
                .call_log()
                .into_iter()
                .find(|c| {
                    c.action == "ModifyInstanceVncPasswd"
                        && c.code == "Success"
                        && c.vnc_password.as_deref() == Some(password)
                })
                .and_then(|c| c.access_key_id)
        }
    };
    assert_eq!(signer("File12").await.as_deref(), Some("LTAIold"));

    write("LTAInew", "new-secret");
    put_secret(&client, &ns.name, "pw", &[("password", "File34")]).await;
    let key = support::eventually(
        "the rotated password applied",
        Duration::from_secs(30),
        || signer("File34"),
    )
    .await;
    assert_eq!(key, "LTAInew", "signed with the rotated key");
    controller.stop().await;
    ns.delete().await;
}

/// A credentials file the operator configured (`ALIBABA_CLOUD_CREDENTIALS_FILE`, a Secret mounted
/// `optional: true`) that is not there at start: the controller never falls through to the node's
/// RAM role, even with a metadata service that answers. Objects using the default credentials say
/// `CredentialsFileUnreadable`, naming the file; once the file appears it is used, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_credentials_file_that_is_missing_never_falls_back_to_the_node_role() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-nofile").await;
    let sim = Simulator::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimulatorConfig {
            access_keys: vec![AccessKeyConfig {
                id: "LTAIlatefile".into(),
                secret: "late-secret".into(),
                security_token: None,
                account_id: None,
            }],
            instances: instances(&[INSTANCE]),
            metadata: Some(MetadataConfig {
                role_name: "NodeRole".into(),
                duration_seconds: 3600,
                account_id: None,
            }),
            ..Default::default()
        },
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("credentials");
    let chain = CredentialsProvider::from_lookup(
        lookup(vec![(ENV_CREDENTIALS_FILE, file.display().to_string())]),
        &ProviderConfig {
            metadata_endpoint: Some(sim.url()),
            ..ProviderConfig::default()
        },
    )
    .await;
    let provider = chain
        .provider
        .expect("the configured file, read at every use");
    assert!(
        provider.identity().starts_with("profile:"),
        "{}",
        provider.identity()
    );
    assert!(
        chain
            .warnings
            .iter()
            .any(|w| w.contains(&file.display().to_string())),
        "a warning at start names the file: {:?}",
        chain.warnings
    );
    let controller = controller_with(&client, &ns.name, &sim, provider).await;
    apply(&client, &ns.name, "web", "Late12", spec(INSTANCE, None)).await;
    let status = wait_condition(
        &client,
        &ns.name,
        "web",
        "Ready",
        "False",
        Some("CredentialsFileUnreadable"),
        Duration::from_secs(30),
    )
    .await;
    let message = status
        .condition("Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(&file.display().to_string()) && message.contains("every use"),
        "{message}"
    );
    assert_eq!(
        sim.state().issued("EcsRamRole"),
        0,
        "the node's role was never asked for"
    );
    assert_eq!(set_password(&sim, INSTANCE), None);

    std::fs::write(
        &file,
        "[default]\ntype = access_key\naccess_key_id = LTAIlatefile\naccess_key_secret = late-secret\n",
    )
    .expect("write");
    wait_ready(&client, &ns.name, "web", Duration::from_secs(120)).await;
    assert_eq!(set_password(&sim, INSTANCE).as_deref(), Some("Late12"));
    assert_eq!(sim.state().issued("EcsRamRole"), 0);
    controller.stop().await;
    ns.delete().await;
}

/// Why the controller may hold STS-audience tokens: the API server itself refuses them (their
/// audience is not one of its `--api-audiences`, by default its issuer), while a token of the same
/// ServiceAccount with the API server's audience is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_sts_is_refused_by_the_kubernetes_api() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "identity-aud").await;
    service_account(&client, &ns.name, "vnc").await;
    let review = |token: String| {
        let client = client.clone();
        async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token,
                    ..Default::default()
                },
                ..Default::default()
            };
            Api::<TokenReview>::all(client)
                .create(&PostParams::default(), &review)
                .await
                .expect("TokenReview")
                .status
                .and_then(|s| s.authenticated)
                .unwrap_or(false)
        }
    };
    assert!(
        !review(token(&client, &ns.name, "vnc", AUDIENCE).await).await,
        "a token for sts.aliyuncs.com must not authenticate to the API server"
    );
    assert!(
        review(token(&client, &ns.name, "vnc", ISSUER).await).await,
        "the same ServiceAccount's token for the API server's own audience does"
    );
    ns.delete().await;
}

/// A ServiceAccount's STS credentials are exchanged again before they expire (here they last 6 s,
/// due after 4 s): across several lifetimes of password changes no ECS call meets expired
/// credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_credentials_are_exchanged_again_before_they_expire() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "rrsa-refresh").await;
    annotated_service_account(&client, &ns.name, "vnc", TENANT_ROLE).await;
    let (sim, controller) = rrsa_setup(&client, &ns.name, "vnc", Some(6)).await;
    apply_ready(
        &client,
        &ns.name,
        "web",
        "Rf0000",
        spec(INSTANCE, Some("vnc")),
    )
    .await;
    // 15 s of password changes, each applied before the next: more than two lifetimes.
    let started = Instant::now();
    let mut i = 1;
    while started.elapsed() < Duration::from_secs(15) {
        let password = format!("Rf{i:04}");
        put_secret(&client, &ns.name, "pw", &[("password", password.as_str())]).await;
        support::eventually(&password, Duration::from_secs(20), || async {
            (set_password(&sim, INSTANCE).as_deref() == Some(password.as_str())).then_some(())
        })
        .await;
        i += 1;
    }
    let exchanges = sim.state().issued("AssumeRoleWithOIDC");
    assert!(
        exchanges >= 3,
        "only {exchanges} exchanges in 15 s of 6 s credentials"
    );
    for code in [
        "InvalidSecurityToken.Expired",
        "InvalidAccessKeyId.NotFound",
    ] {
        assert_eq!(
            sim.state().calls_with_code("ModifyInstanceVncPasswd", code)
                + sim.state().calls_with_code("DescribeInstances", code),
            0,
            "{code}"
        );
    }
    wait_ready(&client, &ns.name, "web", Duration::from_secs(30)).await;
    controller.stop().await;
    ns.delete().await;
}
