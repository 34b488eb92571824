//! The ECS RPC client: signed calls with a fresh nonce and timestamp per attempt, rate limits per
//! account, region and action ([`super::ratelimit`]; the account learnt from STS, see
//! [`super::accounts`]), timeouts, and bounded retries with capped exponential backoff and full
//! jitter.
//!
//! Requests are sent as `POST` with a form body, so the VNC password and the SecurityToken never
//! appear in a URL (proxy and access logs record URLs). Two signatures:
//!
//! - [`SignatureVersion::V1`] (the default): the HMAC-SHA1 RPC signature (`SignatureVersion=1.0`,
//!   which Alibaba's newer documents call "V2"), every parameter in the form body, `Format=JSON`.
//! - [`SignatureVersion::V3`]: `ACS3-HMAC-SHA256` ([`super::signer_v3`]), the action, version, date,
//!   nonce, payload hash and STS token in `x-acs-*` headers, the action's own parameters in the
//!   form body (its SHA-256 is signed, and `content-type` with it). Alibaba's SDK core supports
//!   exactly this shape for RPC-style APIs (`DoRequest` with a `formData` body in
//!   `github.com/alibabacloud-go/darabonba-openapi/v2`); the generated ECS SDK itself puts ECS's
//!   parameters in the query string instead, which would put the VNC password in the URL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::clock::{ClockReading, LatestReading, parse_http_date};
use super::credentials::Credentials;
use super::error::{ApiError, ErrorClass, UnexpectedBody, parse_error_body};
use super::ratelimit::{BucketKey, BucketState, QpsLimits, RateLimits, Reservation};
use super::retry::RetryPolicy;
use super::signer;
use super::signer_v3;
use super::transport;
use super::types::{DescribeInstancesResponse, Instance, RequestIdResponse};
use crate::password::VncPassword;

pub const API_VERSION: &str = "2014-05-26";
pub const USER_AGENT: &str = concat!(
    "ecs-vnc-controller/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/ecs-vnc-controller)"
);

/// The request signature the client uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureVersion {
    /// HMAC-SHA1 RPC signature (`SignatureVersion=1.0`; "V2" in Alibaba's newer documents).
    #[default]
    V1,
    /// `ACS3-HMAC-SHA256`, the signature Alibaba recommends and its SDKs use by default.
    V3,
}

impl SignatureVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V3 => "v3",
        }
    }
}

impl std::fmt::Display for SignatureVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client reaches ECS and how hard it may push.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// One base URL for every region (a VPC endpoint, a simulator); `None` for
    /// `https://ecs.<region>.aliyuncs.com`.
    pub endpoint: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Calls per second per account, region and action: ECS's own unit of flow control.
    pub qps: QpsLimits,
    /// Where STS is, to learn each credential's account (`GetCallerIdentity`, once per
    /// credential). `None`: no look-up, each credential is an account of its own.
    pub sts_endpoint: Option<String>,
    /// Calls one bucket may send at once before its rate applies.
    pub burst: u32,
    pub retry: RetryPolicy,
    /// The clock for the `Timestamp` parameter (replaced in tests of clock skew).
    pub clock: fn() -> jiff::Timestamp,
    pub signature: SignatureVersion,
    /// Plain http to an endpoint that is not loopback (`--allow-insecure-http`).
    pub allow_insecure_http: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            qps: QpsLimits::default(),
            sts_endpoint: None,
            burst: 10,
            retry: RetryPolicy::default(),
            clock: jiff::Timestamp::now,
            signature: SignatureVersion::V1,
            allow_insecure_http: false,
        }
    }
}

/// Told about every HTTP attempt (for metrics). `result` is `Success`, the ECS error code, or one
/// of `NetworkError`, `Timeout`, `UnexpectedResponse`.
pub trait CallObserver: Send + Sync {
    fn observe(&self, action: &str, result: &str, elapsed: Duration);
    /// A rate-limit bucket's state after a call took a slot from it or was throttled.
    fn rate_limit(&self, _key: &BucketKey, _state: BucketState) {}
    /// ECS's clock (its answer's `Date`) minus the client's clock, at an answer that had a `Date`.
    fn clock_offset(&self, _offset: jiff::SignedDuration) {}
}

/// ECS accepted a write call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub request_id: String,
    /// ECS's own time of the answer (its HTTP `Date`), when it sent one.
    pub server_time: Option<jiff::Timestamp>,
}

/// Everything that can go wrong with one call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EcsError {
    /// ECS answered with an error. `client_string_to_sign` (masked) is kept for
    /// `SignatureDoesNotMatch`, to set beside the server's: the V1 string to sign, or with V3 the
    /// canonical request (the V3 string to sign is only its hash).
    #[error("{action}: {error}")]
    Api {
        action: &'static str,
        error: Box<ApiError>,
        client_string_to_sign: Option<String>,
    },
    /// The answer was not what ECS sends (a proxy page, an empty or truncated body).
    #[error("{action}: {body}")]
    UnexpectedBody {
        action: &'static str,
        body: UnexpectedBody,
    },
    /// The endpoint answered with a redirect, which is never followed: it would re-send the signed
    /// request (and a VNC password, an STS token) to wherever it points. ECS never saw the call.
    #[error(
        "{action}: the ECS endpoint {endpoint} answered HTTP {status} redirecting to {location}; redirects are not followed (they would re-send the signed request elsewhere): check --ecs-endpoint"
    )]
    Redirected {
        action: &'static str,
        endpoint: String,
        status: u16,
        location: String,
    },
    /// No answer: connection refused or reset, DNS, TLS, timeout.
    #[error("{action}: could not reach {endpoint}: {reason}")]
    Network {
        action: &'static str,
        endpoint: String,
        reason: String,
        timeout: bool,
        /// The connection was never made (refused, DNS, TLS): the request certainly never left.
        never_sent: bool,
    },
    /// The request could not be built (bad endpoint or region). Not retryable.
    #[error("{0}")]
    InvalidRequest(String),
}

impl EcsError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { error, .. } => error.class(),
            Self::UnexpectedBody { body, .. } => {
                let s = body.http_status;
                if s >= 500 || s == 429 || (200..300).contains(&s) {
                    ErrorClass::Transient
                } else {
                    // Not ECS speaking (a proxy, a gateway): retried slowly, never a stall.
                    ErrorClass::Unknown
                }
            }
            Self::Network { .. } => ErrorClass::Transient,
            // Not ECS speaking (a proxy, a misconfigured endpoint): retried slowly, never a stall.
            Self::Redirected { .. } => ErrorClass::Unknown,
            Self::InvalidRequest(_) => ErrorClass::Terminal,
        }
    }

    /// The ECS error code, when ECS gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }

    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Api { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }

    /// A bounded label for metrics: the ECS code or the kind of failure.
    pub fn result_label(&self) -> &str {
        match self {
            Self::Api { error, .. } => &error.code,
            Self::UnexpectedBody { .. } => "UnexpectedResponse",
            Self::Redirected { .. } => "Redirected",
            Self::Network { timeout: true, .. } => "Timeout",
            Self::Network { .. } => "NetworkError",
            Self::InvalidRequest(_) => "InvalidRequest",
        }
    }
}

/// A cheap-to-clone handle: clones share the HTTP connection pool and the rate limiter.
#[derive(Clone)]
pub struct EcsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    limits: Arc<RateLimits>,
    accounts: super::accounts::Accounts,
    observer: Option<Arc<dyn CallObserver>>,
    /// ECS's clock as its latest answer with a `Date` told it.
    ecs_clock: LatestReading,
}

impl std::fmt::Debug for EcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Installs the one rustls crypto provider of this build (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What a failed RebootInstance means for the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootOutcome {
    /// ECS certainly did not reboot: it refused with an answer (throttling of any status, a
    /// stale timestamp, a bad parameter), or the request never left (no connection, a redirect not
    /// followed, a request that could not be built). It may be asked for again.
    Refused,
    /// It may have happened: no answer (timeout, a connection dropped after sending), a 5xx, a
    /// proxy's 408/499/502/504, or `SignatureNonceUsed` (ECS saw this nonce before: a copy was
    /// delivered). Never sent again for the same intent.
    MayHaveHappened,
}

/// Classifies a failed RebootInstance ([`RebootOutcome`]).
pub fn reboot_outcome(error: &EcsError) -> RebootOutcome {
    use RebootOutcome::*;
    match error {
        EcsError::Api { error, .. } => match error.code.as_str() {
            "SignatureNonceUsed" => MayHaveHappened,
            _ if error.class() == ErrorClass::Throttled => Refused,
            _ if error.http_status >= 500 => MayHaveHappened,
            _ => Refused,
        },
        EcsError::UnexpectedBody { body, .. } => match body.http_status {
            408 | 499 => MayHaveHappened,
            s if !(400..500).contains(&s) => MayHaveHappened,
            _ => Refused,
        },
        EcsError::Network { never_sent, .. } => {
            if *never_sent {
                Refused
            } else {
                MayHaveHappened
            }
        }
        EcsError::Redirected { .. } | EcsError::InvalidRequest(_) => Refused,
    }
}

/// Whether an action may be sent twice without a second effect. A reboot that timed out may have
/// happened, so it is only retried when ECS said it refused it (throttled, stale signature).
fn is_idempotent(action: &str) -> bool {
    action != "RebootInstance"
}

impl EcsClient {
    pub fn new(config: ClientConfig) -> Result<Self, EcsError> {
        Self::with_observer(config, None)
    }

    pub fn with_observer(
        config: ClientConfig,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Result<Self, EcsError> {
        if let Some(endpoint) = &config.endpoint {
            validate_endpoint(endpoint, config.allow_insecure_http)?;
        }
        if let Some(sts) = &config.sts_endpoint {
            transport::check_scheme(sts, "--sts-endpoint", config.allow_insecure_http)
                .map_err(EcsError::InvalidRequest)?;
        }
        let http = transport::builder(
            config.connect_timeout,
            config.request_timeout,
            transport::Proxy::FromEnvironment,
        )
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| EcsError::InvalidRequest(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                accounts: super::accounts::Accounts::new(
                    config.sts_endpoint.clone().map(|sts| (http.clone(), sts)),
                ),
                http,
                limits: Arc::new(RateLimits::new(config.qps.clone(), config.burst)),
                config,
                observer,
                ecs_clock: LatestReading::default(),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// ECS's clock as the latest answer with a `Date` header told it.
    pub fn ecs_clock(&self) -> Option<ClockReading> {
        self.inner.ecs_clock.get()
    }

    /// How long a call of `action` in `region` with these credentials would now wait for its
    /// rate-limit slot (nothing, while their account is not known yet).
    pub fn backlog(
        &self,
        credentials: &Credentials,
        region: &str,
        action: &'static str,
    ) -> Duration {
        let Some(account) = self.inner.accounts.cached(credentials) else {
            return Duration::ZERO;
        };
        self.inner.limits.backlog(
            &BucketKey {
                account,
                region: region.to_string(),
                action,
            },
            Instant::now(),
        )
    }

    /// The account `credentials` belong to, as the rate limits count it: the account ID STS
    /// names, or `unverified.<hash>` (learnt once per credential, then cached).
    pub async fn account_of(&self, credentials: &Credentials) -> String {
        self.inner.accounts.account(credentials).await
    }

    fn report_rate(&self, bucket: &BucketKey) {
        if let (Some(observer), Some(state)) =
            (&self.inner.observer, self.inner.limits.state(bucket))
        {
            observer.rate_limit(bucket, state);
        }
    }

    /// The base URL calls for `region` go to. The region is checked first, whatever the endpoint:
    /// it becomes part of a host name and of every request.
    pub fn endpoint_for(&self, region: &str) -> Result<String, EcsError> {
        validate_region(region)?;
        match &self.inner.config.endpoint {
            Some(endpoint) if endpoint.contains("{region}") => {
                Ok(super::endpoints::from_template(endpoint, region))
            }
            Some(endpoint) => Ok(endpoint.trim_end_matches('/').to_string()),
            None => Ok(super::endpoints::endpoint_for_region(region)),
        }
    }

    /// Sets the VNC password of an instance.
    pub async fn modify_instance_vnc_passwd(
        &self,
        credentials: &Credentials,
        region: &str,
        instance_id: &str,
        password: &VncPassword,
    ) -> Result<Accepted, EcsError> {
        let (response, server_time) = self
            .call_dated::<RequestIdResponse>(
                credentials,
                region,
                "ModifyInstanceVncPasswd",
                &[
                    ("RegionId", region),
                    ("InstanceId", instance_id),
                    ("VncPassword", password.expose()),
                ],
            )
            .await?;
        Ok(Accepted {
            request_id: response.request_id,
            server_time,
        })
    }

    /// Restarts a `Running` instance.
    pub async fn reboot_instance(
        &self,
        credentials: &Credentials,
        region: &str,
        instance_id: &str,
    ) -> Result<Accepted, EcsError> {
        let reservation = self.reserve(credentials, region, "RebootInstance").await;
        self.reboot_instance_on(reservation, credentials, region, instance_id)
            .await
    }

    /// Takes a slot of `action`'s rate-limit bucket for these credentials now, ahead of the call
    /// (given back if dropped unused): a caller learns how long it would wait before it commits to
    /// anything, and the call then goes out on that slot.
    pub async fn reserve(
        &self,
        credentials: &Credentials,
        region: &str,
        action: &'static str,
    ) -> Reservation {
        let key = BucketKey {
            account: self.account_of(credentials).await,
            region: region.to_string(),
            action,
        };
        Reservation::take(self.inner.limits.clone(), key)
    }

    /// RebootInstance on a slot reserved ahead ([`Self::reserve`]): waits for it, then sends. A
    /// retry happens only after an answer that proves ECS did not reboot ([`reboot_outcome`]).
    pub async fn reboot_instance_on(
        &self,
        reservation: Reservation,
        credentials: &Credentials,
        region: &str,
        instance_id: &str,
    ) -> Result<Accepted, EcsError> {
        let (response, server_time) = self
            .call_with::<RequestIdResponse>(
                Some(reservation),
                credentials,
                region,
                "RebootInstance",
                &[("RegionId", region), ("InstanceId", instance_id)],
            )
            .await?;
        Ok(Accepted {
            request_id: response.request_id,
            server_time,
        })
    }

    /// Describes instances of one region by ID, 100 IDs per call, following pages (at most
    /// [`MAX_PAGES`] per 100 IDs: they fit one). Instances ECS does not know are simply absent from
    /// the result.
    pub async fn describe_instances(
        &self,
        credentials: &Credentials,
        region: &str,
        instance_ids: &[String],
    ) -> Result<Vec<Instance>, EcsError> {
        const MAX_IDS: usize = 100;
        let mut found = Vec::with_capacity(instance_ids.len());
        for chunk in instance_ids.chunks(MAX_IDS) {
            let ids = serde_json::to_string(chunk)
                .map_err(|e| EcsError::InvalidRequest(format!("cannot encode InstanceIds: {e}")))?;
            // NextToken/MaxResults: ECS documents PageNumber/PageSize as being retired.
            let mut next_token: Option<String> = None;
            for page in 1.. {
                if page > MAX_PAGES {
                    // 100 IDs fit one page: an endpoint that keeps paging is not ECS.
                    return Err(EcsError::UnexpectedBody {
                        action: "DescribeInstances",
                        body: UnexpectedBody {
                            http_status: 200,
                            content_type: None,
                            excerpt: String::new(),
                            note: Some(format!(
                                "it kept answering a NextToken for {} instance IDs after {MAX_PAGES} pages (100 IDs fit one)",
                                chunk.len()
                            )),
                        },
                    });
                }
                let params = [
                    ("RegionId", region),
                    ("InstanceIds", ids.as_str()),
                    ("MaxResults", "100"),
                ];
                let (instances, next) = self
                    .describe_page(credentials, region, &params, next_token.as_deref())
                    .await?;
                found.extend(instances);
                match next {
                    Some(token) => next_token = Some(token),
                    None => break,
                }
            }
        }
        Ok(found)
    }

    /// The instances of one region that carry every tag of `tags` (key, value; an empty value
    /// matches any value of the key), from DescribeInstances' `Tag.N.Key`/`Tag.N.Value` filters
    /// (N from 1 to 20), 100 a page, following `NextToken`. ECS lists at most
    /// [`MAX_TAGGED_INSTANCES`] instances for tag filters ("up to 1,000 resources",
    /// https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-describeinstances):
    /// `truncated` says the answer reached that many, so more may carry the tags.
    pub async fn describe_instances_by_tags(
        &self,
        credentials: &Credentials,
        region: &str,
        tags: &[(String, String)],
    ) -> Result<TaggedInstances, EcsError> {
        let names: Vec<(String, String)> = (1..=tags.len())
            .map(|n| (format!("Tag.{n}.Key"), format!("Tag.{n}.Value")))
            .collect();
        let mut found: Vec<Instance> = Vec::new();
        let mut next_token: Option<String> = None;
        // 1,000 instances are 10 pages of 100; one more tells an endless NextToken apart.
        for _ in 0..=MAX_TAGGED_INSTANCES / 100 {
            let mut params: Vec<(&str, &str)> = vec![("RegionId", region), ("MaxResults", "100")];
            for ((key_name, value_name), (key, value)) in names.iter().zip(tags) {
                params.push((key_name, key));
                if !value.is_empty() {
                    params.push((value_name, value));
                }
            }
            let (instances, next) = self
                .describe_page(credentials, region, &params, next_token.as_deref())
                .await?;
            found.extend(instances);
            match next {
                Some(token) if found.len() < MAX_TAGGED_INSTANCES => next_token = Some(token),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        found.dedup_by(|a, b| a.instance_id == b.instance_id);
        Ok(TaggedInstances {
            truncated: found.len() >= MAX_TAGGED_INSTANCES,
            instances: found,
        })
    }

    /// One DescribeInstances page after `after` (the previous page's `NextToken`): its instances
    /// and the next page's token; `None` on the last page, and when ECS repeats the token or sends
    /// an empty page with one (paging that would never end).
    async fn describe_page(
        &self,
        credentials: &Credentials,
        region: &str,
        params: &[(&str, &str)],
        after: Option<&str>,
    ) -> Result<(Vec<Instance>, Option<String>), EcsError> {
        let mut params = params.to_vec();
        if let Some(token) = after {
            params.push(("NextToken", token));
        }
        let response: DescribeInstancesResponse = self
            .call(credentials, region, "DescribeInstances", &params)
            .await?;
        let instances = response.instances.instance;
        let next = response
            .next_token
            .filter(|t| !t.is_empty() && !instances.is_empty() && Some(t.as_str()) != after);
        Ok((instances, next))
    }

    /// One action with retries. `params` are the action's own parameters; common parameters and the
    /// signature are added here, afresh for every attempt.
    pub async fn call<T: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        region: &str,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<T, EcsError> {
        self.call_dated(credentials, region, action, params)
            .await
            .map(|(value, _)| value)
    }

    /// [`Self::call`], with ECS's own time of the answer (its `Date` header) when it sent one.
    pub async fn call_dated<T: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        region: &str,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<(T, Option<jiff::Timestamp>), EcsError> {
        self.call_with(None, credentials, region, action, params)
            .await
    }

    /// One action with retries; the first attempt on `reservation` when given.
    async fn call_with<T: DeserializeOwned>(
        &self,
        mut reservation: Option<Reservation>,
        credentials: &Credentials,
        region: &str,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<(T, Option<jiff::Timestamp>), EcsError> {
        let endpoint = self.endpoint_for(region)?;
        let policy = &self.inner.config.retry;
        let bucket = match &reservation {
            Some(r) => r.key().clone(),
            None => BucketKey {
                account: self.account_of(credentials).await,
                region: region.to_string(),
                action,
            },
        };
        let mut attempt = 0u32;
        loop {
            match reservation.take() {
                Some(r) => r.ready().await.used(),
                None => self.inner.limits.acquire(&bucket).await,
            }
            self.report_rate(&bucket);
            let started = Instant::now();
            let result = self
                .attempt::<T>(&endpoint, credentials, action, params)
                .await;
            if let Some(observer) = &self.inner.observer {
                let label = match &result {
                    Ok(_) => "Success",
                    Err(e) => e.result_label(),
                };
                observer.observe(action, label, started.elapsed());
            }
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let class = error.class();
            let may_retry = match class {
                // A reboot is sent again only when ECS certainly did not do it (a throttled or
                // stale request: never a nonce ECS has already seen, never a lost answer).
                ErrorClass::Throttled => policy.retry_throttled,
                _ if !is_idempotent(action) => reboot_outcome(&error) == RebootOutcome::Refused,
                ErrorClass::Resign | ErrorClass::Transient => true,
                ErrorClass::Terminal | ErrorClass::Credentials | ErrorClass::Unknown => false,
            };
            // ECS says when its throttling window resets (`TimeLeft`): wait that long (capped),
            // instead of guessing.
            let told = error
                .api_error()
                .and_then(|e| e.retry_after)
                .filter(|_| class == ErrorClass::Throttled)
                .map(|t| t.min(policy.max_delay));
            if class == ErrorClass::Throttled {
                // The bucket slows down for every caller, not only this one.
                self.inner.limits.throttled(&bucket, Instant::now(), told);
                self.report_rate(&bucket);
            }
            let delay = policy
                .delay(class, attempt, rand::random::<f64>())
                .map(|guess| told.unwrap_or(guess));
            match delay {
                Some(delay) if may_retry => {
                    tracing::debug!(
                        action,
                        attempt,
                        code = error.result_label(),
                        delay_ms = delay.as_millis() as u64,
                        "retrying ECS call"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                _ => return Err(error),
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        credentials: &Credentials,
        action: &'static str,
        params: &[(&str, &str)],
    ) -> Result<(T, Option<jiff::Timestamp>), EcsError> {
        let nonce = uuid::Uuid::new_v4().to_string();
        let now = (self.inner.config.clock)();
        let request = self
            .inner
            .http
            .post(format!("{endpoint}/"))
            .header(reqwest::header::ACCEPT, "application/json");
        let (request, signed_text) = match self.inner.config.signature {
            SignatureVersion::V1 => {
                let timestamp = signer::format_timestamp(now);
                let mut all: Vec<(&str, &str)> = Vec::with_capacity(params.len() + 10);
                all.extend_from_slice(&[
                    ("Action", action),
                    ("Version", API_VERSION),
                    ("Format", "JSON"),
                    ("AccessKeyId", credentials.access_key_id.as_str()),
                    ("SignatureMethod", signer::SIGNATURE_METHOD),
                    ("SignatureVersion", signer::SIGNATURE_VERSION),
                    ("SignatureNonce", nonce.as_str()),
                    ("Timestamp", timestamp.as_str()),
                ]);
                if let Some(token) = &credentials.security_token {
                    all.push(("SecurityToken", token.expose()));
                }
                all.extend_from_slice(params);
                let signed =
                    signer::sign("POST", all.iter().copied(), &credentials.access_key_secret);
                let body = signer::encode_with_signature(all.iter().copied(), &signed.signature);
                let request = request
                    .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
                    .body(body);
                (request, signed.string_to_sign)
            }
            SignatureVersion::V3 => {
                let body = signer::encode_form(params.iter().copied());
                let hashed = signer_v3::hashed_payload(body.as_bytes());
                let host = host_header(endpoint)?;
                let mut headers = signer_v3::CommonHeaders {
                    host: &host,
                    action,
                    version: API_VERSION,
                    date: now,
                    nonce: &nonce,
                    hashed_payload: &hashed,
                    access_key_id: &credentials.access_key_id,
                    security_token: credentials.security_token.as_ref(),
                }
                .to_vec();
                headers.push(("content-type", FORM_CONTENT_TYPE.to_string()));
                let sent: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let signed = signer_v3::sign(
                    &signer_v3::Request {
                        method: "POST",
                        path: "/",
                        query: &[],
                        headers: &sent,
                        hashed_payload: &hashed,
                    },
                    &credentials.access_key_id,
                    &credentials.access_key_secret,
                );
                let mut request = request;
                for (name, value) in &headers {
                    // `host` goes out as the URL's authority, which is what was signed.
                    if *name != "host" {
                        request = request.header(*name, value);
                    }
                }
                let request = request
                    .header(reqwest::header::AUTHORIZATION, &signed.authorization)
                    .body(body);
                (request, signed.canonical_request)
            }
        };

        let network = |e: reqwest::Error| EcsError::Network {
            action,
            endpoint: endpoint.to_string(),
            reason: error_chain(&e),
            timeout: e.is_timeout(),
            never_sent: e.is_connect(),
        };
        let response = request.send().await.map_err(network)?;
        let status = response.status().as_u16();
        if let Some(location) = transport::redirect_target(&response) {
            return Err(EcsError::Redirected {
                action,
                endpoint: endpoint.to_string(),
                status,
                location,
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let time_left = response
            .headers()
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-ratelimit-"))
            .filter_map(|(_, v)| v.to_str().ok())
            .find_map(super::error::time_left);
        let server_time = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        if let Some(server) = server_time {
            self.inner.ecs_clock.record(ClockReading {
                server,
                received: Instant::now(),
            });
            if let Some(observer) = &self.inner.observer {
                observer.clock_offset(server.duration_since((self.inner.config.clock)()));
            }
        }
        let bytes = match transport::read_body(response).await {
            Ok(bytes) => bytes,
            Err(transport::BodyError::Network(e)) => return Err(network(e)),
            Err(transport::BodyError::TooLarge { start }) => {
                return Err(EcsError::UnexpectedBody {
                    action,
                    body: UnexpectedBody {
                        http_status: status,
                        content_type,
                        excerpt: super::error::excerpt(&start),
                        note: Some(transport::too_large()),
                    },
                });
            }
        };

        if (200..300).contains(&status) {
            return serde_json::from_slice::<T>(&bytes)
                .map(|value| (value, server_time))
                .map_err(|_| EcsError::UnexpectedBody {
                    action,
                    body: UnexpectedBody {
                        http_status: status,
                        content_type,
                        excerpt: super::error::excerpt(&bytes),
                        note: None,
                    },
                });
        }
        match parse_error_body(status, content_type.as_deref(), &bytes) {
            Ok(mut error) => {
                error.retry_after = time_left;
                let client_string_to_sign = (error.code == "SignatureDoesNotMatch")
                    .then(|| signer::mask_sensitive(&signed_text));
                Err(EcsError::Api {
                    action,
                    error: Box::new(error),
                    client_string_to_sign,
                })
            }
            Err(body) => Err(EcsError::UnexpectedBody { action, body }),
        }
    }
}

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The most instances DescribeInstances lists for tag filters.
pub const MAX_TAGGED_INSTANCES: usize = 1000;

/// What [`EcsClient::describe_instances_by_tags`] found.
#[derive(Debug, Clone)]
pub struct TaggedInstances {
    pub instances: Vec<Instance>,
    /// ECS's limit for tag filters was reached: more instances may carry the tags.
    pub truncated: bool,
}

/// DescribeInstances pages followed for one call's 100 IDs (one page holds them all).
pub const MAX_PAGES: usize = 5;

/// The `host` a request to `endpoint` carries: the URL's host, with the port when it is not the
/// scheme's default (what the HTTP client sends as `Host`, and what V3 signs).
pub fn host_header(endpoint: &str) -> Result<String, EcsError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| EcsError::InvalidRequest(format!("the ECS endpoint {endpoint:?}: {e}")))?;
    let host = url.host_str().ok_or_else(|| {
        EcsError::InvalidRequest(format!("the ECS endpoint {endpoint:?} has no host"))
    })?;
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// The error and its sources on one line ("error sending request: connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn validate_endpoint(endpoint: &str, allow_insecure_http: bool) -> Result<(), EcsError> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| {
        EcsError::InvalidRequest(format!(
            "the ECS endpoint {endpoint:?} is not a URL ({e}); expected e.g. https://ecs-vpc.cn-hangzhou.aliyuncs.com or http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(EcsError::InvalidRequest(format!(
            "the ECS endpoint {endpoint:?} must be an http:// or https:// URL with a host"
        )));
    }
    if url.query().is_some() || url.username() != "" || url.password().is_some() {
        return Err(EcsError::InvalidRequest(format!(
            "the ECS endpoint {endpoint:?} must not carry a query or credentials"
        )));
    }
    transport::check_scheme(endpoint, "--ecs-endpoint", allow_insecure_http)
        .map_err(EcsError::InvalidRequest)
}

/// The CRD's pattern for `spec.regionId` (`cn-hangzhou`, `ap-southeast-1`,
/// `cn-shanghai-finance-1`): one DNS label, so a region can never name another host or another
/// product's endpoint.
pub const REGION_PATTERN: &str = r"^[a-z]{2,}(-[a-z0-9]+){1,4}$";

/// A region of the SDK's endpoint map, or one that matches [`REGION_PATTERN`] (at most 64 bytes).
pub fn validate_region(region: &str) -> Result<(), EcsError> {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(REGION_PATTERN).expect("REGION_PATTERN is a valid regex")
    });
    let known = super::endpoints::ENDPOINT_MAP
        .iter()
        .any(|(r, _)| *r == region);
    if known || (region.len() <= 64 && PATTERN.is_match(region)) {
        Ok(())
    } else {
        Err(EcsError::InvalidRequest(format!(
            "{region:?} is not an ECS region ID (expected e.g. cn-hangzhou: {REGION_PATTERN})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_endpoint_is_regional_and_override_applies_to_all_regions() {
        let c = EcsClient::new(ClientConfig::default()).unwrap();
        // Alibaba's ECS SDK maps cn-hangzhou to ecs-cn-hangzhou.aliyuncs.com.
        assert_eq!(
            c.endpoint_for("cn-hangzhou").unwrap(),
            "https://ecs-cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            c.endpoint_for("eu-central-1").unwrap(),
            "https://ecs.eu-central-1.aliyuncs.com"
        );
        assert!(c.endpoint_for("evil.com/x").is_err());
        let t = EcsClient::new(ClientConfig {
            endpoint: Some("https://ecs-vpc.{region}.aliyuncs.com".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            t.endpoint_for("cn-beijing").unwrap(),
            "https://ecs-vpc.cn-beijing.aliyuncs.com"
        );
        assert!(t.endpoint_for("evil.com/x").is_err());
        let c = EcsClient::new(ClientConfig {
            endpoint: Some("http://127.0.0.1:9/".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.endpoint_for("cn-beijing").unwrap(), "http://127.0.0.1:9");
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_hint() {
        for bad in [
            "ecs.aliyuncs.com",
            "ftp://x",
            "http://u:p@x",
            "http://x/?a=b",
        ] {
            let err = EcsClient::new(ClientConfig {
                endpoint: Some(bad.into()),
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        let insecure = |allow| {
            EcsClient::new(ClientConfig {
                endpoint: Some("http://10.0.0.5:8080".into()),
                allow_insecure_http: allow,
                ..Default::default()
            })
        };
        let err = insecure(false).unwrap_err().to_string();
        assert!(err.contains("--allow-insecure-http"), "{err}");
        assert!(insecure(true).is_ok());
    }

    #[test]
    fn user_agent_names_project_and_version() {
        assert!(
            USER_AGENT.starts_with(&format!("ecs-vnc-controller/{}", env!("CARGO_PKG_VERSION")))
        );
    }

    #[test]
    fn the_signed_host_is_what_the_http_client_sends() {
        assert_eq!(
            host_header("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            host_header("https://ecs.cn-hangzhou.aliyuncs.com").unwrap(),
            "ecs.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            host_header("https://ECS.example.com:443").unwrap(),
            "ecs.example.com"
        );
        assert_eq!(host_header("http://[::1]:9").unwrap(), "[::1]:9");
    }

    #[test]
    fn regions_are_the_crds_pattern_or_known_and_never_leave_ecss_hosts() {
        for ok in [
            "cn-hangzhou",
            "ap-southeast-1",
            "cn-shanghai-finance-1",
            "cn-hangzhou-internal-test-1",
            "eu-west-1-oxs",
            "xx-nowhere-9",
        ] {
            assert!(validate_region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "hangzhou",
            "cn--hangzhou",
            "1-2",
            "cn-hangzhou-",
            "cn-a-b-c-d-e",
            "cn-hangzhou.evil.com",
            "cn-hangzhou/x",
            "cn-hangzhou@evil",
            "CN-hangzhou",
            "",
        ] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
        // Every endpoint map entry passes, and the CRD states the same pattern.
        for (region, _) in crate::ecs::endpoints::ENDPOINT_MAP {
            assert!(validate_region(region).is_ok(), "{region}");
        }
        let crd = crate::api::crd_yaml().unwrap();
        assert!(
            crd.contains(REGION_PATTERN),
            "the CRD's regionId pattern changed"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_accepted_region_stays_on_an_ecs_host(region in "[a-z0-9.:/@-]{1,40}") {
            let c = EcsClient::new(ClientConfig::default()).unwrap();
            let t = EcsClient::new(ClientConfig {
                endpoint: Some("https://ecs-vpc.{region}.aliyuncs.com".into()),
                ..Default::default()
            })
            .unwrap();
            if let Ok(url) = c.endpoint_for(&region) {
                let url = reqwest::Url::parse(&url).unwrap();
                let host = url.host_str().unwrap();
                proptest::prop_assert!(host.starts_with("ecs") && host.ends_with(".aliyuncs.com"), "{}", host);
                proptest::prop_assert_eq!(url.path(), "/");
                let url = reqwest::Url::parse(&t.endpoint_for(&region).unwrap()).unwrap();
                proptest::prop_assert_eq!(url.host_str().unwrap(), format!("ecs-vpc.{region}.aliyuncs.com"));
            }
        }
    }

    #[test]
    fn reboots_are_not_idempotent() {
        assert!(!is_idempotent("RebootInstance"));
        assert!(is_idempotent("ModifyInstanceVncPasswd"));
    }
}
