//! The controller's own identity: Alibaba's default credentials chain, with temporary credentials
//! cached and refreshed ahead of their expiry.
//!
//! The chain, in the order of Alibaba's credentials SDKs (github.com/aliyun/credentials-go,
//! `providers/default.go`; github.com/aliyun/credentials-java, `DefaultCredentialsProvider`):
//!
//! 1. environment: `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET` (optional
//!    `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! 2. OIDC / RRSA: `ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`,
//!    `ALIBABA_CLOUD_OIDC_TOKEN_FILE` → STS `AssumeRoleWithOIDC` ([`super::sts`]), the token file read
//!    again at every exchange;
//! 3. the credentials file ([`super::profile`]);
//! 4. the ECS RAM role of the instance metadata service, hardened mode ([`super::metadata`]).
//!
//! Temporary credentials are refreshed when `min(180 s, a third of their lifetime)` is left (the
//! SDKs refresh 180 s ahead), once at a time (callers wait for the one exchange in flight), and by
//! a background task so that no ECS call waits for STS. A failed refresh is retried with capped
//! exponential backoff while the credentials in hand still work; only credentials that have
//! really expired make [`CredentialsProvider::credentials`] fail.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::credentials::{Credentials, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET};
use super::metadata;
use super::profile::{self, Profile};
use super::sts::{self, StsError, Temporary};
use super::transport;
use crate::secret::SecretString;

pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
pub const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
pub const ENV_VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
pub const ENV_CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";
pub const ENV_PROFILE: &str = "ALIBABA_CLOUD_PROFILE";
pub const ENV_ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
pub const ENV_ECS_METADATA_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";

/// Refresh at the latest this long before expiry.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(180);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Where STS and the metadata service are, and how long to wait for them.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `None`: as the SDKs choose it from `ALIBABA_CLOUD_STS_REGION` and
    /// `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`.
    pub sts_endpoint: Option<String>,
    /// `None`: [`metadata::DEFAULT_ENDPOINT`].
    pub metadata_endpoint: Option<String>,
    /// `DurationSeconds` asked of STS.
    pub duration_seconds: u32,
    pub timeout: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            sts_endpoint: None,
            metadata_endpoint: None,
            duration_seconds: 3600,
            timeout: Duration::from_secs(10),
        }
    }
}

/// An AssumeRoleWithOIDC identity.
#[derive(Debug, Clone)]
pub struct OidcRole {
    pub role_arn: String,
    pub oidc_provider_arn: String,
    pub token_file: PathBuf,
    pub role_session_name: String,
    pub sts_endpoint: String,
    pub duration_seconds: u32,
}

#[derive(Debug, Clone)]
enum Source {
    Static(Credentials),
    /// An `access_key` profile of the credentials file, read again at every use: a Kubernetes
    /// Secret mounted as that file is updated in place by the kubelet (an atomic swap of the
    /// `..data` symlink), and a rotated key is used without a restart.
    File {
        path: PathBuf,
        profile: String,
    },
    Oidc(OidcRole),
    Metadata {
        endpoint: String,
        role: Option<String>,
    },
}

/// Told about each refresh of temporary credentials (for metrics).
pub trait RefreshObserver: Send + Sync {
    fn refreshed(&self, source: &'static str, ok: bool);
}

/// Why there are no usable credentials. Never quotes a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    /// Worth retrying unchanged (network, 5xx, throttling).
    pub transient: bool,
    /// The code STS or the metadata service refused with, if it did.
    pub code: Option<String>,
    /// A file the configuration names (the credentials file, an OIDC token file) cannot be read
    /// or used: the objects say `CredentialsNotFound`; it is read again at every use.
    pub not_found: bool,
}

#[derive(Default)]
struct State {
    current: Option<Temporary>,
    /// When `current` was fetched.
    fetched: Option<jiff::Timestamp>,
    failures: u32,
    /// No new attempt before this after a failure.
    next_attempt: Option<Instant>,
    last_error: Option<ProviderError>,
}

struct Inner {
    source: Source,
    identity: String,
    http: reqwest::Client,
    /// Held while fetching: one exchange at a time.
    state: tokio::sync::Mutex<State>,
    /// The credentials in hand and when they are due, readable while a fetch is in flight.
    snapshot: Mutex<Option<(Temporary, jiff::Timestamp)>>,
    observer: Mutex<Option<Arc<dyn RefreshObserver>>>,
}

/// The controller's current credentials. Cheap to clone (shared).
#[derive(Clone)]
pub struct CredentialsProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsProvider")
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

/// What the chain found, and why it passed over the ways before it (for the log).
#[derive(Debug)]
pub struct Chain {
    pub provider: Option<CredentialsProvider>,
    pub skipped: Vec<String>,
    /// What the operator must hear about (logged at warn): a configured file that cannot be used.
    pub warnings: Vec<String>,
}

/// `ALIBABA_CLOUD_ECS_METADATA_DISABLED`, read as Alibaba's credentials SDKs read it: `true` in any
/// case, nothing else (github.com/aliyun/credentials-go, `providers/ecs_ram_role.go`,
/// `strings.ToLower(os.Getenv(...)) == "true"`; a profile of type `ecs_ram_role` is refused too,
/// since the SDKs build it with the same provider).
fn metadata_disabled(lookup: &impl Fn(&'static str) -> Option<String>) -> bool {
    lookup(ENV_ECS_METADATA_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A client for STS (`Proxy::FromEnvironment`) or the metadata service (`Proxy::Never`), with the
/// rules of [`transport`]: no redirects, bounded answers.
pub(crate) fn http_client(timeout: Duration, proxy: transport::Proxy) -> reqwest::Client {
    transport::builder(timeout.min(Duration::from_secs(5)), timeout, proxy)
        .build()
        // Building fails only without TLS roots; a client without them still refuses redirects.
        .unwrap_or_else(|_| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap_or_default()
        })
}

fn session_name() -> String {
    format!(
        "ecs-vnc-controller-{}",
        jiff::Timestamp::now().as_millisecond()
    )
}

impl CredentialsProvider {
    fn new(source: Source, identity: String, timeout: Duration) -> Self {
        // The metadata service is plain http on a link-local address: never through a proxy.
        let proxy = match source {
            Source::Metadata { .. } => transport::Proxy::Never,
            _ => transport::Proxy::FromEnvironment,
        };
        Self {
            inner: Arc::new(Inner {
                http: http_client(timeout, proxy),
                source,
                identity,
                state: tokio::sync::Mutex::new(State::default()),
                snapshot: Mutex::new(None),
                observer: Mutex::new(None),
            }),
        }
    }

    /// Fixed credentials (an AccessKey from the environment or a file; tests).
    pub fn fixed(credentials: Credentials) -> Self {
        let identity = format!("accesskey:{}", credentials.access_key_id);
        Self::new(
            Source::Static(credentials),
            identity,
            Duration::from_secs(10),
        )
    }

    /// A RAM role assumed with an OIDC token file.
    pub fn oidc(role: OidcRole, timeout: Duration) -> Self {
        let identity = format!("oidc:{}", role.role_arn);
        Self::new(Source::Oidc(role), identity, timeout)
    }

    /// The ECS instance's RAM role (`role` `None`: the one the metadata service names).
    pub fn ecs_ram_role(endpoint: String, role: Option<String>, timeout: Duration) -> Self {
        let identity = format!(
            "ecs-ram-role:{}",
            role.as_deref().unwrap_or("(instance role)")
        );
        Self::new(Source::Metadata { endpoint, role }, identity, timeout)
    }

    /// What the credentials are (never secret, stable across refreshes): `accesskey:<id>`,
    /// `oidc:<role ARN>`, `ecs-ram-role:<role>`, `profile:<profile>:<id>` (the AccessKeyId found
    /// when the chain was built; see [`Self::identity_of`]).
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The identity of `credentials` this provider handed out: as [`Self::identity`], except for
    /// the credentials file, whose AccessKeyId changes when the file is rotated.
    pub fn identity_of(&self, credentials: &Credentials) -> String {
        match &self.inner.source {
            Source::File { profile, .. } => {
                format!("profile:{profile}:{}", credentials.access_key_id)
            }
            _ => self.inner.identity.clone(),
        }
    }

    /// An `access_key` profile of a credentials file, read again at every use.
    pub fn file(path: PathBuf, profile: String, identity: String) -> Self {
        Self::new(
            Source::File { path, profile },
            identity,
            Duration::from_secs(10),
        )
    }

    /// Whether credentials are temporary and refreshed.
    pub fn refreshes(&self) -> bool {
        !matches!(self.inner.source, Source::Static(_) | Source::File { .. })
    }

    pub fn set_observer(&self, observer: Arc<dyn RefreshObserver>) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// The default chain over the process environment.
    pub async fn from_env(config: &ProviderConfig) -> Chain {
        Self::from_lookup(|name| std::env::var(name).ok(), config).await
    }

    /// The default chain over `lookup` (the process environment, or a map in tests). The metadata
    /// service is asked once when nothing before it is configured, and only kept if it answers
    /// (or `ALIBABA_CLOUD_ECS_METADATA` names the role).
    pub async fn from_lookup(
        lookup: impl Fn(&'static str) -> Option<String>,
        config: &ProviderConfig,
    ) -> Chain {
        let var = |name: &'static str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut skipped = Vec::new();
        // 1. Environment.
        match (var(ENV_ACCESS_KEY_ID), var(ENV_ACCESS_KEY_SECRET)) {
            (Some(_), Some(_)) => {
                if let Ok(c) = Credentials::from_lookup(&lookup) {
                    let mut p = Self::fixed(c);
                    if let Some(inner) = Arc::get_mut(&mut p.inner) {
                        inner.identity =
                            format!("env:{}", inner.identity.trim_start_matches("accesskey:"));
                    }
                    return Chain {
                        provider: Some(p),
                        skipped,
                        warnings: Vec::new(),
                    };
                }
            }
            (None, None) => skipped.push(format!("environment: {ENV_ACCESS_KEY_ID} is not set")),
            (Some(_), None) => skipped.push(format!(
                "environment: {ENV_ACCESS_KEY_ID} is set but {ENV_ACCESS_KEY_SECRET} is not"
            )),
            (None, Some(_)) => skipped.push(format!(
                "environment: {ENV_ACCESS_KEY_SECRET} is set but {ENV_ACCESS_KEY_ID} is not"
            )),
        }
        // 2. OIDC (RRSA).
        let sts_endpoint = config.sts_endpoint.clone().unwrap_or_else(|| {
            sts::default_endpoint(
                var(ENV_STS_REGION).as_deref(),
                var(ENV_VPC_ENDPOINT_ENABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")),
            )
        });
        match (var(ENV_ROLE_ARN), var(ENV_OIDC_PROVIDER_ARN), var(ENV_OIDC_TOKEN_FILE)) {
            (Some(role_arn), Some(oidc_provider_arn), Some(token_file)) => {
                let role = OidcRole {
                    role_arn,
                    oidc_provider_arn,
                    token_file: token_file.into(),
                    role_session_name: var(ENV_ROLE_SESSION_NAME).unwrap_or_else(session_name),
                    sts_endpoint,
                    duration_seconds: config.duration_seconds,
                };
                return Chain { provider: Some(Self::oidc(role, config.timeout)), skipped, warnings: Vec::new() };
            }
            _ => skipped.push(format!(
                "OIDC: {ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN} and {ENV_OIDC_TOKEN_FILE} are not all set"
            )),
        }
        // 3. The credentials file. One the operator named (`ALIBABA_CLOUD_CREDENTIALS_FILE`, e.g. a
        // Secret mounted `optional: true`) is never passed over: when it cannot be used, the chain
        // stops here rather than quietly acting as the node's RAM role, and the file is read again at
        // every use so that it is picked up once it is there.
        let metadata_disabled = metadata_disabled(&lookup);
        let explicit = var(ENV_CREDENTIALS_FILE);
        let file = explicit.clone().or_else(|| {
            var("HOME").map(|h| format!("{}/.alibabacloud/credentials", h.trim_end_matches('/')))
        });
        let metadata_endpoint = config
            .metadata_endpoint
            .clone()
            .unwrap_or_else(|| metadata::DEFAULT_ENDPOINT.to_string());
        let mut warnings = Vec::new();
        if let Some(file) = file {
            let name = var(ENV_PROFILE).unwrap_or_else(|| "default".to_string());
            let unusable = match std::fs::read_to_string(&file) {
                Ok(text) => match profile::parse(&text, &name, &file) {
                    Ok(Profile::AccessKey(c)) => {
                        let id = format!("profile:{name}:{}", c.access_key_id);
                        return Chain {
                            provider: Some(Self::file(file.into(), name, id)),
                            skipped,
                            warnings,
                        };
                    }
                    Ok(Profile::EcsRamRole { .. }) if metadata_disabled => {
                        // As the SDKs' ECS RAM role provider refuses to be built.
                        skipped.push(format!(
                            "credentials file: profile [{name}] in {file} is of type ecs_ram_role, but {ENV_ECS_METADATA_DISABLED}=true"
                        ));
                        if explicit.is_some() {
                            return Chain {
                                provider: None,
                                skipped,
                                warnings,
                            };
                        }
                        None
                    }
                    Ok(Profile::EcsRamRole { role_name }) => {
                        let p = Self::ecs_ram_role(metadata_endpoint, role_name, config.timeout);
                        return Chain {
                            provider: Some(p),
                            skipped,
                            warnings,
                        };
                    }
                    Ok(Profile::OidcRoleArn {
                        role_arn,
                        oidc_provider_arn,
                        token_file,
                        role_session_name,
                    }) => {
                        let role = OidcRole {
                            role_arn,
                            oidc_provider_arn,
                            token_file: token_file.into(),
                            role_session_name: role_session_name.unwrap_or_else(session_name),
                            sts_endpoint,
                            duration_seconds: config.duration_seconds,
                        };
                        return Chain {
                            provider: Some(Self::oidc(role, config.timeout)),
                            skipped,
                            warnings,
                        };
                    }
                    Err(e) => Some(e),
                },
                Err(e) => Some(format!("cannot read {file}: {}", e.kind())),
            };
            if let Some(why) = unusable {
                if explicit.is_some() {
                    warnings.push(format!(
                        "the credentials file {file} named by {ENV_CREDENTIALS_FILE} cannot be used ({why}): VncPasswords that use the controller's own credentials fail with CredentialsNotFound until it can; it is read again at every use, and the controller does not fall back to the ECS instance's RAM role"
                    ));
                    let id = format!("profile:{name}:(not yet readable)");
                    return Chain {
                        provider: Some(Self::file(file.into(), name, id)),
                        skipped,
                        warnings,
                    };
                }
                skipped.push(format!("credentials file: {why}"));
            }
        } else {
            skipped.push(
                "credentials file: neither HOME nor ALIBABA_CLOUD_CREDENTIALS_FILE is set".into(),
            );
        }
        // 4. The ECS RAM role.
        if metadata_disabled {
            skipped.push(format!("ECS RAM role: {ENV_ECS_METADATA_DISABLED}=true"));
            return Chain {
                provider: None,
                skipped,
                warnings,
            };
        }
        let named = var(ENV_ECS_METADATA);
        // The metadata service is link-local: the SDKs give it 1 s; off ECS the probe must not
        // hold up start-up.
        let timeout = config.timeout.min(Duration::from_secs(2));
        let p = Self::ecs_ram_role(metadata_endpoint, named.clone(), timeout);
        if named.is_some() {
            return Chain {
                provider: Some(p),
                skipped,
                warnings,
            };
        }
        match p.credentials().await {
            Ok(_) => Chain {
                provider: Some(p),
                skipped,
                warnings,
            },
            Err(e) => {
                skipped.push(format!("ECS RAM role: {e}"));
                Chain {
                    provider: None,
                    skipped,
                    warnings,
                }
            }
        }
    }

    /// Current credentials: cached until they are due for refresh, then fetched once for all
    /// callers. After a failed refresh the credentials in hand are returned while they work.
    pub async fn credentials(&self) -> Result<Credentials, ProviderError> {
        match &self.inner.source {
            Source::Static(c) => return Ok(c.clone()),
            Source::File { path, profile } => return self.read_file(path, profile).await,
            _ => {}
        }
        // Fast path, without waiting for a refresh in flight: credentials not yet due, or (while
        // another caller refreshes) still valid.
        let now = jiff::Timestamp::now();
        let snapshot = self
            .inner
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((t, at)) = &snapshot
            && now < *at
        {
            return Ok(t.credentials.clone());
        }
        let still_valid = snapshot
            .filter(|(t, _)| t.expiration > now)
            .map(|(t, _)| t.credentials);
        let mut state = match (self.inner.state.try_lock(), still_valid) {
            (Ok(state), _) => state,
            (Err(_), Some(c)) => return Ok(c),
            (Err(_), None) => self.inner.state.lock().await,
        };
        let now = jiff::Timestamp::now();
        let valid = state
            .current
            .as_ref()
            .filter(|t| t.expiration > now)
            .map(|t| t.credentials.clone());
        if let (Some(c), Some(at)) = (&valid, refresh_at(&state))
            && now < at
        {
            return Ok(c.clone());
        }
        if state.next_attempt.is_some_and(|n| Instant::now() < n) {
            return match (valid, &state.last_error) {
                (Some(c), _) => Ok(c),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Err(self.error("no credentials yet".into(), true, None)),
            };
        }
        match self.fetch().await {
            Ok(t) => {
                if state.failures > 0 {
                    tracing::info!(identity = %self.inner.identity, "credentials refreshed after {} failed attempts", state.failures);
                }
                let c = t.credentials.clone();
                state.current = Some(t);
                state.fetched = Some(now);
                if let (Some(t), Some(at)) = (&state.current, refresh_at(&state)) {
                    *self
                        .inner
                        .snapshot
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some((t.clone(), at));
                }
                state.failures = 0;
                state.next_attempt = None;
                state.last_error = None;
                self.observe(true);
                Ok(c)
            }
            Err(e) => {
                state.failures += 1;
                let wait = BACKOFF_START
                    .saturating_mul(1 << state.failures.min(10).saturating_sub(1))
                    .min(BACKOFF_MAX);
                state.next_attempt = Some(Instant::now() + wait);
                state.last_error = Some(e.clone());
                self.observe(false);
                tracing::warn!(
                    identity = %self.inner.identity,
                    attempt = state.failures,
                    retry_in_seconds = wait.as_secs_f64(),
                    still_valid = valid.is_some(),
                    "cannot refresh credentials: {e}"
                );
                match valid {
                    Some(c) => Ok(c),
                    None => Err(e),
                }
            }
        }
    }

    /// When the background task should look again.
    async fn next_wakeup(&self) -> Duration {
        let state = self.inner.state.lock().await;
        let now = Instant::now();
        let by_backoff = state.next_attempt.map(|n| n.saturating_duration_since(now));
        let by_expiry = refresh_at(&state).map(|at| {
            let left = at.duration_since(jiff::Timestamp::now());
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        });
        by_backoff
            .or(by_expiry)
            .unwrap_or(BACKOFF_START)
            .clamp(Duration::from_millis(200), Duration::from_secs(300))
    }

    /// Refreshes in the background until the handle is aborted (nothing to do for fixed
    /// credentials).
    pub fn spawn_refresher(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.refreshes() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                let _ = this.credentials().await;
                tokio::time::sleep(this.next_wakeup().await).await;
            }
        }))
    }

    fn observe(&self, ok: bool) {
        let source = match self.inner.source {
            Source::Static(_) | Source::File { .. } => "static",
            Source::Oidc(_) => "oidc",
            Source::Metadata { .. } => "ecs_ram_role",
        };
        let observer = self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(o) = observer {
            o.refreshed(source, ok);
        }
    }

    fn error(&self, message: String, transient: bool, code: Option<String>) -> ProviderError {
        ProviderError {
            message: format!(
                "the controller's credentials ({}): {message}",
                self.inner.identity
            ),
            transient,
            code,
            not_found: false,
        }
    }

    /// A configured file that cannot be read or used (never quoting its contents).
    fn file_error(&self, message: String) -> ProviderError {
        ProviderError {
            not_found: true,
            ..self.error(
                format!("{message}; the file is read again at every use (no restart needed), and the controller does not fall back to the ECS instance's RAM role meanwhile"),
                false,
                None,
            )
        }
    }

    /// The credentials file as it is now (a few hundred bytes: read at every use rather than
    /// watched, so a kubelet's symlink swap, an edit in place and a recreated file all count).
    async fn read_file(
        &self,
        path: &std::path::Path,
        profile: &str,
    ) -> Result<Credentials, ProviderError> {
        let shown = path.display().to_string();
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            self.file_error(format!(
                "cannot read the credentials file {shown}: {}",
                e.kind()
            ))
        })?;
        match profile::parse(&text, profile, &shown) {
            Ok(Profile::AccessKey(c)) => Ok(c),
            Ok(_) => Err(self.file_error(format!(
                "profile [{profile}] in {shown} is not of type access_key: restart the controller to use another type"
            ))),
            Err(e) => Err(self.file_error(e)),
        }
    }

    async fn fetch(&self) -> Result<Temporary, ProviderError> {
        match &self.inner.source {
            Source::File { path, profile } => {
                self.read_file(path, profile).await.map(|c| Temporary {
                    credentials: c,
                    expiration: jiff::Timestamp::MAX,
                })
            }
            Source::Static(c) => Ok(Temporary {
                credentials: c.clone(),
                expiration: jiff::Timestamp::MAX,
            }),
            Source::Oidc(role) => {
                let token = tokio::fs::read_to_string(&role.token_file)
                    .await
                    .map_err(|e| {
                        self.file_error(format!(
                            "cannot read the OIDC token file {}: {}",
                            role.token_file.display(),
                            e.kind()
                        ))
                    })?;
                let token = SecretString::new(token.trim());
                let request = sts::AssumeRoleWithOidc {
                    role_arn: &role.role_arn,
                    oidc_provider_arn: &role.oidc_provider_arn,
                    oidc_token: &token,
                    role_session_name: &role.role_session_name,
                    duration_seconds: role.duration_seconds,
                };
                sts::assume_role_with_oidc(&self.inner.http, &role.sts_endpoint, &request)
                    .await
                    .map_err(|e| {
                        let code = match &e {
                            StsError::Refused { code, .. } => Some(code.clone()),
                            _ => None,
                        };
                        self.error(e.to_string(), e.transient(), code)
                    })
            }
            Source::Metadata { endpoint, role } => {
                metadata::fetch(&self.inner.http, endpoint, role.as_deref())
                    .await
                    .map(|(_, t)| t)
                    .map_err(|e| {
                        let transient = !matches!(e, metadata::MetadataError::NoRole);
                        self.error(e.to_string(), transient, None)
                    })
            }
        }
    }
}

/// When the credentials in hand are due: `min(180 s, a third of their lifetime)` before expiry.
fn refresh_at(state: &State) -> Option<jiff::Timestamp> {
    let t = state.current.as_ref()?;
    Some(refresh_due(state.fetched?, t.expiration))
}

/// When temporary credentials fetched at `fetched` and expiring at `expiration` are due for a
/// refresh: `min(180 s, a third of their lifetime)` before expiry, as Alibaba's SDKs do.
pub fn refresh_due(fetched: jiff::Timestamp, expiration: jiff::Timestamp) -> jiff::Timestamp {
    let lifetime = Duration::try_from(expiration.duration_since(fetched)).unwrap_or(Duration::ZERO);
    let ahead = REFRESH_AHEAD.min(lifetime / 3);
    let ahead = jiff::SignedDuration::try_from(ahead).unwrap_or(jiff::SignedDuration::ZERO);
    expiration.checked_sub(ahead).unwrap_or(expiration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&'static str, &str)]) -> impl Fn(&'static str) -> Option<String> {
        let map: HashMap<&'static str, String> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn no_metadata() -> ProviderConfig {
        ProviderConfig {
            // Nothing listens on port 9 of localhost: the metadata probe fails at once.
            metadata_endpoint: Some("http://127.0.0.1:9".into()),
            timeout: Duration::from_secs(2),
            ..ProviderConfig::default()
        }
    }

    #[tokio::test]
    async fn environment_beats_oidc_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(&file, "[default]\naccess_key_id = FILEAK\naccess_key_secret = x\n[other]\ntype = ecs_ram_role\nrole_name = r\n").unwrap();
        let file = file.to_str().unwrap();
        let oidc = [
            (ENV_ROLE_ARN, "acs:ram::1:role/r"),
            (ENV_OIDC_PROVIDER_ARN, "acs:ram::1:oidc-provider/p"),
            (ENV_OIDC_TOKEN_FILE, "/nonexistent"),
        ];
        let env = [(ENV_ACCESS_KEY_ID, "ENVAK"), (ENV_ACCESS_KEY_SECRET, "s")];
        let cfg = no_metadata();
        let all: Vec<_> = env
            .iter()
            .chain(&oidc)
            .copied()
            .chain([(ENV_CREDENTIALS_FILE, file)])
            .collect();
        let chain = CredentialsProvider::from_lookup(lookup(&all), &cfg).await;
        assert_eq!(chain.provider.unwrap().identity(), "env:ENVAK");
        let no_env: Vec<_> = oidc
            .iter()
            .copied()
            .chain([(ENV_CREDENTIALS_FILE, file)])
            .collect();
        let chain = CredentialsProvider::from_lookup(lookup(&no_env), &cfg).await;
        assert_eq!(chain.provider.unwrap().identity(), "oidc:acs:ram::1:role/r");
        assert!(chain.skipped[0].contains("not set"));
        let half: Vec<_> = [(ENV_ACCESS_KEY_ID, "ENVAK"), (ENV_CREDENTIALS_FILE, file)].to_vec();
        let chain = CredentialsProvider::from_lookup(lookup(&half), &cfg).await;
        assert_eq!(chain.provider.unwrap().identity(), "profile:default:FILEAK");
        assert!(
            chain.skipped[0].contains("is set but"),
            "{:?}",
            chain.skipped
        );
        let other = [(ENV_CREDENTIALS_FILE, file), (ENV_PROFILE, "other")];
        let chain = CredentialsProvider::from_lookup(lookup(&other), &cfg).await;
        assert_eq!(chain.provider.unwrap().identity(), "ecs-ram-role:r");
        // Nothing configured and no metadata service: no provider, each way explained.
        let chain = CredentialsProvider::from_lookup(lookup(&[]), &cfg).await;
        assert!(chain.provider.is_none());
        assert_eq!(chain.skipped.len(), 4, "{:?}", chain.skipped);
        let off = [(ENV_ECS_METADATA_DISABLED, "true")];
        let chain = CredentialsProvider::from_lookup(lookup(&off), &cfg).await;
        assert!(chain.provider.is_none() && chain.skipped[3].contains("DISABLED"));
    }

    #[tokio::test]
    async fn metadata_disabled_is_read_as_the_sdks_read_it_and_covers_ecs_ram_role_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\ntype = ecs_ram_role\nrole_name = NodeRole\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        // Named or in the default place, a profile of type ecs_ram_role is the metadata service.
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".alibabacloud")).unwrap();
        std::fs::copy(file, home.join(".alibabacloud/credentials")).unwrap();
        let home = home.to_str().unwrap();
        for disabled in ["true", "TRUE", "True"] {
            for vars in [
                vec![
                    (ENV_CREDENTIALS_FILE, file),
                    (ENV_ECS_METADATA_DISABLED, disabled),
                ],
                vec![("HOME", home), (ENV_ECS_METADATA_DISABLED, disabled)],
            ] {
                let chain = CredentialsProvider::from_lookup(lookup(&vars), &no_metadata()).await;
                assert!(chain.provider.is_none(), "{vars:?}");
                assert!(
                    chain.skipped.iter().any(|s| s.contains("ecs_ram_role")),
                    "{:?}",
                    chain.skipped
                );
            }
        }
        for not_disabled in ["1", "yes", "false", " true"] {
            let vars = [
                (ENV_CREDENTIALS_FILE, file),
                (ENV_ECS_METADATA_DISABLED, not_disabled),
            ];
            let chain = CredentialsProvider::from_lookup(lookup(&vars), &no_metadata()).await;
            assert_eq!(
                chain.provider.map(|p| p.identity().to_string()).as_deref(),
                Some("ecs-ram-role:NodeRole"),
                "{not_disabled:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_named_credentials_file_that_cannot_be_used_stops_the_chain_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let broken = dir.path().join("broken");
        std::fs::write(
            &broken,
            "[default]\ntype = access_key\naccess_key_id = AKID\n",
        )
        .unwrap();
        for file in [&missing, &broken] {
            let shown = file.to_str().unwrap();
            let chain = CredentialsProvider::from_lookup(
                lookup(&[(ENV_CREDENTIALS_FILE, shown)]),
                &no_metadata(),
            )
            .await;
            assert_eq!(chain.warnings.len(), 1, "{:?}", chain.warnings);
            assert!(chain.warnings[0].contains(shown), "{:?}", chain.warnings);
            let p = chain.provider.expect("the named file, read at every use");
            let e = p.credentials().await.unwrap_err();
            assert!(e.not_found && !e.transient, "{e:?}");
            assert!(
                e.message.contains(shown) && e.message.contains("every use"),
                "{e}"
            );
            assert!(!e.message.contains("AKID"), "{e}");
        }
    }

    #[tokio::test]
    async fn an_unreadable_token_file_is_reported_without_secrets_and_backs_off() {
        let p = CredentialsProvider::oidc(
            OidcRole {
                role_arn: "acs:ram::1:role/r".into(),
                oidc_provider_arn: "p".into(),
                token_file: "/nonexistent/token".into(),
                role_session_name: "s".into(),
                sts_endpoint: "http://127.0.0.1:9".into(),
                duration_seconds: 900,
            },
            Duration::from_secs(1),
        );
        let e = p.credentials().await.unwrap_err();
        assert!(
            e.message.contains("/nonexistent/token") && !e.transient,
            "{e}"
        );
        // Within the backoff the same error comes back without a new attempt.
        let again = p.credentials().await.unwrap_err();
        assert_eq!(again.message, e.message);
        assert_eq!(p.inner.state.lock().await.failures, 1);
    }

    #[tokio::test]
    async fn a_rotated_credentials_file_is_used_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        let write = |id: &str, secret: &str| {
            // As the kubelet does: a new file renamed over the old one.
            let tmp = dir.path().join("tmp");
            std::fs::write(&tmp, format!("[default]\ntype = access_key\naccess_key_id = {id}\naccess_key_secret = {secret}\n")).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        };
        write("OLDAK", "old-secret");
        let vars = [(ENV_CREDENTIALS_FILE, file.to_str().unwrap())];
        let p = CredentialsProvider::from_lookup(lookup(&vars), &no_metadata())
            .await
            .provider
            .unwrap();
        let c = p.credentials().await.unwrap();
        assert_eq!(c.access_key_id, "OLDAK");
        assert_eq!(p.identity_of(&c), "profile:default:OLDAK");
        write("NEWAK", "new-secret");
        let c = p.credentials().await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.access_key_secret.expose()),
            ("NEWAK", "new-secret")
        );
        assert_eq!(p.identity_of(&c), "profile:default:NEWAK");
        // Gone (the Secret deleted): no credentials, and the error names the file, not a value.
        std::fs::remove_file(&file).unwrap();
        let e = p.credentials().await.unwrap_err();
        assert!(
            e.message.contains("credentials") && !e.message.contains("new-secret"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_credentials_file_named_but_not_there_yet_is_picked_up_when_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        let vars = [
            (ENV_CREDENTIALS_FILE, file.to_str().unwrap()),
            (ENV_ECS_METADATA_DISABLED, "true"),
        ];
        let chain = CredentialsProvider::from_lookup(lookup(&vars), &no_metadata()).await;
        let p = chain.provider.expect("the named file, read at every use");
        assert!(p.credentials().await.is_err());
        std::fs::write(
            &file,
            "[default]\naccess_key_id = LATEAK\naccess_key_secret = s\n",
        )
        .unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id, "LATEAK");
        // Without an explicit file the chain still ends with nothing, as the SDKs do.
        let chain = CredentialsProvider::from_lookup(
            lookup(&[(ENV_ECS_METADATA_DISABLED, "true")]),
            &no_metadata(),
        )
        .await;
        assert!(chain.provider.is_none());
    }

    #[test]
    fn refresh_is_due_a_third_of_the_lifetime_or_180_s_ahead() {
        let now = jiff::Timestamp::now();
        let state = |secs: i64| State {
            current: Some(Temporary {
                credentials: Credentials::new("a", SecretString::new("b"), None),
                expiration: now + jiff::SignedDuration::from_secs(secs),
            }),
            fetched: Some(now),
            ..State::default()
        };
        let at = |secs| {
            refresh_at(&state(secs))
                .unwrap()
                .duration_since(now)
                .as_secs()
        };
        assert_eq!(at(3600), 3600 - 180);
        assert_eq!(at(30), 20);
    }
}
