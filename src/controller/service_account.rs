//! Per-namespace keyless identity, the RRSA way (`spec.credentials.serviceAccountRef`).
//!
//! A VncPassword names a ServiceAccount of its own namespace (the reference has no namespace
//! field, so another tenant's ServiceAccount can never be named). The controller asks the API
//! server for a short-lived token of it (TokenRequest, audience `sts.aliyuncs.com`), and exchanges
//! the token with STS `AssumeRoleWithOIDC` for temporary credentials of the RAM role named by the
//! ServiceAccount's annotation `ecsvnc.io/role-arn`, with the cluster's OIDC provider ARN from
//! `--oidc-provider-arn`. This is what ACK's RRSA does for a Pod
//! (https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/use-rrsa-to-authorize-pods-to-access-different-cloud-services),
//! with the controller requesting the token instead of the kubelet projecting it.
//!
//! The STS credentials are cached per (namespace, ServiceAccount, role ARN) and exchanged again
//! when `min(180 s, a third of their lifetime)` is left, as the controller's own chain does
//! ([`crate::ecs::provider::refresh_due`]); a changed annotation is another key, so the new role
//! is used at once. An exchange that fails while the credentials in hand still work keeps them.
//! Neither the token nor the credentials ever appear in a log, status or error.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

use crate::api::{ANNOTATION_ROLE_ARN, Reason, STS_AUDIENCE};
use crate::controller::decide::{Failure, Pace};
use crate::ecs::Credentials;
use crate::ecs::provider::{RefreshObserver, http_client, refresh_due};
use crate::ecs::sts::{self, StsError, Temporary};
use crate::secret::SecretString;

/// Lifetime asked of the ServiceAccount token: it is used once, right away. The API server's
/// minimum is 10 minutes.
pub const TOKEN_SECONDS: i64 = 600;

/// How the controller exchanges ServiceAccount tokens.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    /// `--oidc-provider-arn`: the RAM OIDC provider of this cluster's ServiceAccount issuer.
    pub oidc_provider_arn: Option<String>,
    /// Where STS is (`--sts-endpoint`, else as the SDKs choose it).
    pub sts_endpoint: String,
    /// `DurationSeconds` asked of STS (its minimum is 900).
    pub duration_seconds: u32,
    pub timeout: Duration,
}

/// What a reconcile needs from the ServiceAccount: its identity for the stall memo and the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub role_arn: String,
    /// `serviceaccount:<namespace>/<name>:<uid>:<resourceVersion>`: changes when the
    /// ServiceAccount is recreated or its annotation changes. Never a secret.
    pub identity: String,
    pub uid: String,
}

/// The role a ServiceAccount's metadata names, and its identity; or why it cannot be used. Pure.
pub fn target(
    namespace: &str,
    name: &str,
    found: Option<(&str, &str, &BTreeMap<String, String>)>,
    oidc_provider_arn: Option<&str>,
) -> Result<Target, Failure> {
    let Some((uid, resource_version, annotations)) = found else {
        return Err(Failure::stalled(
            Reason::ServiceAccountNotFound,
            format!(
                "ServiceAccount {name} does not exist in namespace {namespace} (spec.credentials.serviceAccountRef always names a ServiceAccount of the VncPassword's own namespace): create it with the annotation {ANNOTATION_ROLE_ARN}: acs:ram::<account>:role/<role>"
            ),
        ));
    };
    let role_arn = annotations
        .get(ANNOTATION_ROLE_ARN)
        .map(|r| r.trim())
        .unwrap_or_default();
    if role_arn.is_empty() {
        return Err(Failure::stalled(
            Reason::RoleArnNotSet,
            format!(
                "ServiceAccount {name} has no annotation {ANNOTATION_ROLE_ARN}: annotate it with the ARN of the RAM role to assume, e.g. acs:ram::<account>:role/<role>"
            ),
        ));
    }
    if !role_arn.starts_with("acs:ram::") || !role_arn.contains(":role/") {
        return Err(Failure::stalled(
            Reason::RoleArnInvalid,
            format!(
                "the annotation {ANNOTATION_ROLE_ARN} of ServiceAccount {name} is not a RAM role ARN (acs:ram::<account>:role/<role>)"
            ),
        ));
    }
    if oidc_provider_arn.is_none_or(|p| p.trim().is_empty()) {
        return Err(Failure::stalled(
            Reason::OidcProviderNotConfigured,
            "the controller has no OIDC provider ARN to exchange ServiceAccount tokens with STS: its operator must set --oidc-provider-arn (or ALIBABA_CLOUD_OIDC_PROVIDER_ARN) to the cluster's RRSA OIDC provider, or use spec.credentials.secretRef",
        ));
    }
    Ok(Target {
        role_arn: role_arn.to_string(),
        identity: format!("serviceaccount:{namespace}/{name}:{uid}:{resource_version}"),
        uid: uid.to_string(),
    })
}

/// What an STS failure means for the object. Refusals stall (`AuthFailed`, STS's code in the
/// message; rechecked every `--stall-recheck-interval` since a RAM change fixes them); an
/// unreachable or busy STS is retried. The token is never quoted.
pub fn sts_failure(error: &StsError, name: &str, role_arn: &str, token: &str) -> Failure {
    match error {
        StsError::Refused { code, message, .. } if !error.transient() => {
            let message = if token.is_empty() {
                message.clone()
            } else {
                message.replace(token, "<token>")
            };
            Failure::stalled(
                Reason::AuthFailed,
                format!(
                    "STS refused AssumeRoleWithOIDC of role {role_arn} for ServiceAccount {name}: {code}: {message}; check that the role's trust policy trusts the cluster's OIDC provider (--oidc-provider-arn) for this ServiceAccount and audience {STS_AUDIENCE}"
                ),
            )
        }
        other => Failure::retry(
            Reason::StsUnavailable,
            format!(
                "exchanging ServiceAccount {name}'s token with STS: {other}; retrying with backoff"
            ),
            Pace::Normal,
        ),
    }
}

/// STS's limits on RoleSessionName: 2-64 of `[A-Za-z0-9._@-]`. Kubernetes names fit, long ones
/// are cut.
pub fn session_name(namespace: &str, name: &str) -> String {
    let full = format!("ecs-vnc.{namespace}.{name}");
    full.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._@-".contains(*c))
        .take(64)
        .collect()
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    name: String,
    role_arn: String,
}

struct Cached {
    uid: String,
    temporary: Temporary,
    due: jiff::Timestamp,
}

/// Cached STS credentials of ServiceAccounts. Cheap to clone (shared).
#[derive(Clone)]
pub struct ServiceAccountCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    config: ExchangeConfig,
    http: reqwest::Client,
    /// One slot per key, each behind its own lock: one exchange at a time per ServiceAccount.
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
    observer: Mutex<Option<Arc<dyn RefreshObserver>>>,
}

/// Why no credentials: what the object's status says, or a Kubernetes API failure (retried).
#[derive(Debug)]
pub enum ResolveError {
    Failure(Failure),
    Kube(kube::Error),
}

impl ServiceAccountCredentials {
    pub fn new(config: ExchangeConfig) -> Self {
        let http = http_client(
            config.timeout,
            crate::ecs::transport::Proxy::FromEnvironment,
        );
        Self {
            inner: Arc::new(Inner {
                config,
                http,
                slots: Mutex::new(HashMap::new()),
                observer: Mutex::new(None),
            }),
        }
    }

    pub fn oidc_provider_arn(&self) -> Option<&str> {
        self.inner.config.oidc_provider_arn.as_deref()
    }

    pub fn set_observer(&self, observer: Arc<dyn RefreshObserver>) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// Entries cached (for tests of bounded memory).
    pub fn cached(&self) -> usize {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The credentials of ServiceAccount `name` of `namespace`, with their identity.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<(Credentials, String), ResolveError> {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let meta = api
            .get_metadata_opt(name)
            .await
            .map_err(ResolveError::Kube)?;
        let found = meta.as_ref().map(|m| {
            (
                m.metadata.uid.as_deref().unwrap_or_default(),
                m.metadata.resource_version.as_deref().unwrap_or_default(),
                m.metadata.annotations.as_ref(),
            )
        });
        let empty = BTreeMap::new();
        let target = target(
            namespace,
            name,
            found.map(|(u, rv, a)| (u, rv, a.unwrap_or(&empty))),
            self.oidc_provider_arn(),
        )
        .map_err(ResolveError::Failure)?;
        let key = Key {
            namespace: namespace.to_string(),
            name: name.to_string(),
            role_arn: target.role_arn.clone(),
        };
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            // Forget what has expired (old roles, deleted ServiceAccounts): bounded memory.
            let now = jiff::Timestamp::now();
            slots.retain(|k, slot| {
                *k == key
                    || slot
                        .try_lock()
                        .map(|c| c.as_ref().is_some_and(|c| c.temporary.expiration > now))
                        .unwrap_or(true)
            });
            slots.entry(key).or_default().clone()
        };
        let mut cached = slot.lock().await;
        let now = jiff::Timestamp::now();
        let valid = cached
            .as_ref()
            .filter(|c| c.uid == target.uid && c.temporary.expiration > now);
        if let Some(c) = valid
            && now < c.due
        {
            return Ok((c.temporary.credentials.clone(), target.identity));
        }
        match self.exchange(&api, namespace, name, &target.role_arn).await {
            Ok(temporary) => {
                self.observe(true);
                let credentials = temporary.credentials.clone();
                *cached = Some(Cached {
                    uid: target.uid.clone(),
                    due: refresh_due(now, temporary.expiration),
                    temporary,
                });
                Ok((credentials, target.identity))
            }
            Err(e) => {
                self.observe(false);
                // A refresh that fails while the credentials in hand still work keeps them.
                if let Some(c) = cached
                    .as_ref()
                    .filter(|c| c.uid == target.uid && c.temporary.expiration > now)
                {
                    tracing::warn!(%namespace, serviceaccount = %name, "cannot refresh the ServiceAccount's STS credentials; using those in hand until they expire: {e:?}");
                    return Ok((c.temporary.credentials.clone(), target.identity));
                }
                Err(e)
            }
        }
    }

    /// TokenRequest, then AssumeRoleWithOIDC.
    async fn exchange(
        &self,
        api: &Api<ServiceAccount>,
        namespace: &str,
        name: &str,
        role_arn: &str,
    ) -> Result<Temporary, ResolveError> {
        let config = &self.inner.config;
        let Some(provider) = config.oidc_provider_arn.as_deref() else {
            // `target` checked it; kept total.
            return Err(ResolveError::Failure(Failure::stalled(
                Reason::OidcProviderNotConfigured,
                "no --oidc-provider-arn",
            )));
        };
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![STS_AUDIENCE.to_string()]),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = match api
            .create_token_request(name, &PostParams::default(), &request)
            .await
        {
            Ok(answer) => answer
                .status
                .and_then(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ResolveError::Failure(Failure::retry(
                        Reason::TokenRequestFailed,
                        format!("the API server answered the TokenRequest for ServiceAccount {name} without a token; retrying with backoff"),
                        Pace::Normal,
                    ))
                })?,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(ResolveError::Failure(
                    target(namespace, name, None, Some(provider)).unwrap_err(),
                ));
            }
            // RBAC (deploy/rbac.yaml) or an admission policy (deploy/token-policy.yaml): the API
            // server's message says which, and is stable for a given cause.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(ResolveError::Failure(Failure::retry(
                    Reason::TokenRequestForbidden,
                    format!(
                        "the controller may not request a token of ServiceAccount {name} (HTTP 403: {}): it needs create on serviceaccounts/token (deploy/rbac.yaml) in a namespace deploy/token-policy.yaml allows; retrying with backoff",
                        s.message
                    ),
                    Pace::Normal,
                )));
            }
            Err(e) => return Err(ResolveError::Kube(e)),
        };
        let token = SecretString::new(token);
        let session = session_name(namespace, name);
        sts::assume_role_with_oidc(
            &self.inner.http,
            &config.sts_endpoint,
            &sts::AssumeRoleWithOidc {
                role_arn,
                oidc_provider_arn: provider,
                oidc_token: &token,
                role_session_name: &session,
                duration_seconds: config.duration_seconds,
            },
        )
        .await
        .map_err(|e| ResolveError::Failure(sts_failure(&e, name, role_arn, token.expose())))
    }

    fn observe(&self, ok: bool) {
        let observer = self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(o) = observer {
            o.refreshed("service_account", ok);
        }
    }
}

impl std::fmt::Debug for ServiceAccountCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountCredentials")
            .field("oidc_provider_arn", &self.inner.config.oidc_provider_arn)
            .field("sts_endpoint", &self.inner.config.sts_endpoint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER: &str = "acs:ram::1:oidc-provider/ack";

    fn annotated(role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ANNOTATION_ROLE_ARN.to_string(), role.to_string())])
    }

    fn reason(r: Result<Target, Failure>) -> Reason {
        match r {
            Err(Failure::Stalled { reason, message }) => {
                assert!(!message.is_empty());
                reason
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_missing_piece_has_its_own_stall() {
        let role = annotated("acs:ram::1:role/web");
        assert_eq!(
            reason(target("ns", "sa", None, Some(PROVIDER))),
            Reason::ServiceAccountNotFound
        );
        let none = BTreeMap::new();
        assert_eq!(
            reason(target("ns", "sa", Some(("u", "1", &none)), Some(PROVIDER))),
            Reason::RoleArnNotSet
        );
        assert_eq!(
            reason(target(
                "ns",
                "sa",
                Some(("u", "1", &annotated(" "))),
                Some(PROVIDER)
            )),
            Reason::RoleArnNotSet
        );
        assert_eq!(
            reason(target(
                "ns",
                "sa",
                Some(("u", "1", &annotated("web"))),
                Some(PROVIDER)
            )),
            Reason::RoleArnInvalid
        );
        assert_eq!(
            reason(target("ns", "sa", Some(("u", "1", &role)), None)),
            Reason::OidcProviderNotConfigured
        );
        assert_eq!(
            reason(target("ns", "sa", Some(("u", "1", &role)), Some(""))),
            Reason::OidcProviderNotConfigured
        );
        let t = target("ns", "sa", Some(("u", "1", &role)), Some(PROVIDER)).unwrap();
        assert_eq!(t.role_arn, "acs:ram::1:role/web");
        assert_eq!(t.identity, "serviceaccount:ns/sa:u:1");
    }

    #[test]
    fn the_identity_changes_with_the_service_account_not_with_time() {
        let role = annotated("acs:ram::1:role/web");
        let id = |uid, rv| {
            target("ns", "sa", Some((uid, rv, &role)), Some(PROVIDER))
                .unwrap()
                .identity
        };
        assert_eq!(id("u", "1"), id("u", "1"));
        assert_ne!(id("u", "1"), id("u", "2"), "annotation changed");
        assert_ne!(id("u", "1"), id("v", "1"), "recreated");
    }

    #[test]
    fn sts_refusals_stall_with_the_code_and_never_the_token() {
        let refused = StsError::Refused {
            status: 401,
            code: "AuthenticationFail.NoPermission".into(),
            message: "token eyJhbGc.secret.part rejected".into(),
        };
        match sts_failure(&refused, "sa", "acs:ram::1:role/web", "eyJhbGc.secret.part") {
            Failure::Stalled { reason, message } => {
                assert_eq!(reason, Reason::AuthFailed);
                assert!(
                    message.contains("AuthenticationFail.NoPermission"),
                    "{message}"
                );
                assert!(!message.contains("eyJhbGc"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let busy = StsError::Refused {
            status: 503,
            code: "ServiceUnavailable".into(),
            message: String::new(),
        };
        assert!(!sts_failure(&busy, "sa", "r", "t").is_stalled());
        let down = StsError::Network {
            endpoint: "https://sts".into(),
            reason: "refused".into(),
        };
        assert!(!sts_failure(&down, "sa", "r", "t").is_stalled());
    }

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(session_name("team-a", "vnc"), "ecs-vnc.team-a.vnc");
        let long = session_name(&"a".repeat(63), &"b".repeat(63));
        assert_eq!(long.len(), 64);
    }
}
