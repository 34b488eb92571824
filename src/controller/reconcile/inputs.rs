//! observe: what one reconcile knows of the object's Secrets and credentials — from the watch
//! caches when they prove nothing changed since the apply, else read from the API server — and
//! which steps need what.

use kube::ResourceExt;

use crate::api::{
    ANNOTATION_GENERATED_AT, ANNOTATION_OWNER_UID, ANNOTATION_PREVIOUS_IN_EFFECT,
    ANNOTATION_ROTATE_TOKEN, AppliedSecret, LABEL_MANAGED_BY, LABEL_VNCPASSWORD, MANAGED_BY,
    Reason, VncPassword, VncPasswordStatus,
};
use crate::controller::context::Context;
use crate::controller::decide::Failure;
use crate::controller::plan::{self, GeneratedSecret, PasswordInput, Step};
use crate::controller::secret_read;
use crate::controller::service_account::ResolveError;
use crate::controller::tenancy;
use crate::ecs::Credentials;
use crate::password::VncPassword as Password;

use super::ReconcileError;

/// What one reconcile knows of the referenced Secrets and the credentials.
pub(super) struct Inputs {
    pub(super) password: PasswordInput,
    /// The password itself, when read and usable (only the Apply step sends it).
    pub(super) secret_password: Option<Password>,
    /// The credentials' identity (never a secret), or why there are none.
    pub(super) credentials_identity: Result<String, Failure>,
    /// The credentials themselves, when read.
    pub(super) credentials: Option<Credentials>,
    /// With `passwordGeneration`: the Secret's ownership and generation record.
    pub(super) generated: Option<GeneratedSecret>,
    /// The password Secret's resourceVersion (the precondition of a rotation).
    pub(super) secret_version: Option<String>,
    /// Whether the password Secret was read from the API server. When not, the identities above
    /// come from the watch caches, and a step that needs the password reads the Secrets first
    /// (one that needs only the credentials reads only those).
    pub(super) password_read: bool,
}

impl Inputs {
    /// Nothing to read: the plan of a paused or claimed object needs no Secret.
    pub(super) fn none() -> Self {
        Self {
            password: PasswordInput::Unusable(Failure::stalled(Reason::Paused, "")),
            secret_password: None,
            credentials_identity: Err(Failure::stalled(Reason::Paused, "")),
            credentials: None,
            generated: None,
            secret_version: None,
            password_read: true,
        }
    }
}

/// Steps that need the password Secret's contents.
pub(super) fn needs_password(step: &Step) -> bool {
    matches!(
        step,
        Step::GeneratePassword | Step::RotatePassword | Step::Apply
    )
}

/// Steps that need the credentials: every ECS call, and the reboot intent, which is only written
/// when RebootInstance can follow.
pub(super) fn needs_credentials(step: &Step) -> bool {
    matches!(
        step,
        Step::Apply | Step::Describe | Step::RecordRebootIntent | Step::Reboot
    )
}

/// With `passwordGeneration`: what the password Secret's metadata (`None`: no such Secret) says.
/// It is this VncPassword's when it carries its ownerReference (`secretDeletionPolicy: Delete`) or
/// its uid in the annotation `ecsvnc.io/owner-uid` (`Retain`).
pub(super) fn generated_secret(
    obj: &VncPassword,
    secret: Option<(&[String], &std::collections::BTreeMap<String, String>)>,
) -> GeneratedSecret {
    let Some((controllers, annotations)) = secret else {
        return GeneratedSecret::Missing;
    };
    let uid = obj.uid().unwrap_or_default();
    let owner_reference = !uid.is_empty() && controllers.contains(&uid);
    let annotated = !uid.is_empty()
        && annotations
            .get(ANNOTATION_OWNER_UID)
            .is_some_and(|u| *u == uid);
    if !owner_reference && !annotated {
        return GeneratedSecret::NotOurs;
    }
    ours(annotations, owner_reference, false)
}

/// This VncPassword's generated Secret, as its annotations describe it.
fn ours(
    annotations: &std::collections::BTreeMap<String, String>,
    owner_reference: bool,
    adopt: bool,
) -> GeneratedSecret {
    GeneratedSecret::Ours {
        generated_at: annotations
            .get(ANNOTATION_GENERATED_AT)
            .and_then(|t| t.parse().ok()),
        rotate_token: annotations.get(ANNOTATION_ROTATE_TOKEN).cloned(),
        previous_kept: annotations
            .get(ANNOTATION_PREVIOUS_IN_EFFECT)
            .is_some_and(|v| v == "true"),
        owner_reference,
        adopt,
    }
}

/// Whether `secret` is one the controller generated for an earlier VncPassword of the same name
/// in this namespace that no longer exists (deleted under `secretDeletionPolicy: Retain`, which
/// keeps the Secret), for the same instance: its labels name this VncPassword and say the
/// controller made it, its `ecsvnc.io/instance` is this object's instance (a password is never
/// reused for another), its `ecsvnc.io/owner-uid` is the uid of no live VncPassword, and nothing
/// controls it. Such a Secret
/// is adopted, so that re-creating a VncPassword (a `kubectl delete -k` and apply, an instance
/// that comes back to a VncPasswordSet) keeps its password instead of stalling on
/// `SecretNotOwned`.
fn orphaned(obj: &VncPassword, secret: &SecretData, alive: impl Fn(&str) -> bool) -> bool {
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    secret.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && secret.labels.get(LABEL_VNCPASSWORD).map(String::as_str) == Some(name)
        && secret.controllers.is_empty()
        && secret.annotations.get(crate::api::ANNOTATION_INSTANCE)
            == Some(&super::steps::instance_annotation(&obj.spec))
        && secret
            .annotations
            .get(ANNOTATION_OWNER_UID)
            .is_some_and(|owner| !owner.is_empty() && !alive(owner))
}

/// The inputs from the watch caches alone, without any API call: only when the cache shows the
/// password Secret at exactly the uid and resourceVersion the status says was applied to this
/// instance under the current fingerprint key (the same version of a Secret is the same password),
/// and the credentials' identity is known without reading them. `None`: read the Secrets.
///
/// A cache that is behind is harmless here: the Secret's change reaches the cache before the
/// watch event that reconciles the object again.
pub(super) fn cached_inputs(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    status: &VncPasswordStatus,
) -> Option<Inputs> {
    let spec = &obj.spec;
    let applied = status.applied.secret.as_ref()?;
    let fingerprint = status.applied.fingerprint.as_deref()?;
    let key_id = ctx.key.id();
    if applied.name != spec.password_secret_ref.name
        || applied.key != spec.password_secret_ref.key
        || status.applied.instance.as_deref() != Some(plan::instance_key(spec).as_str())
        || plan::fingerprint_key_id(fingerprint) != Some(key_id.as_str())
    {
        return None;
    }
    let secret = ctx.watched.secret(namespace, &applied.name)?;
    if secret.uid() != applied.uid || secret.resource_version() != applied.resource_version {
        return None;
    }
    let credentials_identity = match &spec.credentials_secret() {
        // Known for certain only once resolved (the ServiceAccount's uid and resourceVersion, the
        // credentials' AccessKeyId); a step that needs the credentials resolves them and plans
        // again with their identity. A plan that needs no credentials does not look at it.
        None if spec.credentials_service_account().is_some() => {
            Ok(format!("serviceaccount:{namespace}/unresolved"))
        }
        // What the chain is (a role, a file), as known without fetching: for a rotated credentials
        // file the fetched identity names the AccessKeyId, and a step that fetches plans again
        // with it.
        None => default_credentials(ctx, namespace).map(|p| format!("default:{}", p.identity())),
        Some(r) => {
            let m = ctx.watched.secret(namespace, &r.name)?;
            Ok(secret_credentials_identity(m.uid(), m.resource_version()))
        }
    };
    let controllers: Vec<String> = secret
        .controller_uid()
        .map(String::from)
        .into_iter()
        .collect();
    let annotations = &secret.annotations();
    Some(Inputs {
        password: PasswordInput::Usable {
            fingerprint: fingerprint.to_string(),
            secret: applied.clone(),
        },
        secret_password: None,
        credentials_identity,
        credentials: None,
        generated: spec
            .generates_password()
            .then(|| generated_secret(obj, Some((&controllers, annotations)))),
        secret_version: Some(applied.resource_version.clone()),
        password_read: false,
    })
}

/// Reads the password Secret and the credentials.
pub(super) async fn observe(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
) -> Result<Inputs, ReconcileError> {
    let secret = read_secret(ctx, namespace, &obj.spec.password_secret_ref.name).await?;
    // Too large: nothing is known of it but that, so nothing is generated over it either.
    let generated = match &secret {
        SecretRead::TooLarge => None,
        SecretRead::Found(s) => obj.spec.generates_password().then(|| {
            let generated = generated_secret(obj, Some((s.controllers.as_slice(), &s.annotations)));
            if generated == GeneratedSecret::NotOurs
                && orphaned(obj, s, |uid| ctx.watched.index.knows(uid))
            {
                ours(&s.annotations, false, true)
            } else {
                generated
            }
        }),
        SecretRead::Missing => obj
            .spec
            .generates_password()
            .then(|| generated_secret(obj, None)),
    };
    let secret_version = match &secret {
        SecretRead::Found(s) => Some(s.resource_version.clone()),
        _ => None,
    };
    let (password, secret_password) = match password(obj, namespace, secret) {
        Ok((p, secret)) => (
            PasswordInput::Usable {
                fingerprint: ctx
                    .key
                    .fingerprint(&obj.spec.region_id, &obj.spec.instance_id, &p),
                secret,
            },
            Some(p),
        ),
        Err(f) => (PasswordInput::Unusable(f), None),
    };
    let (credentials, credentials_identity) = match credentials(ctx, &obj.spec, namespace).await? {
        Ok((c, id)) => (Some(c), Ok(id)),
        Err(failure) => (None, Err(failure)),
    };
    Ok(Inputs {
        password,
        secret_password,
        credentials_identity,
        credentials,
        generated,
        secret_version,
        password_read: true,
    })
}

/// The password of the referenced Secret (with the Secret's identity), or why it cannot be used.
pub(super) fn password(
    obj: &VncPassword,
    namespace: &str,
    secret: SecretRead,
) -> Result<(Password, AppliedSecret), Failure> {
    let r = &obj.spec.password_secret_ref;
    let SecretData {
        data,
        uid,
        resource_version,
        ..
    } = match secret {
        SecretRead::Found(s) => s,
        SecretRead::TooLarge => {
            return Err(too_large(format!("Secret {}", r.name), "the password"));
        }
        SecretRead::Missing => {
            return Err(Failure::stalled(
                Reason::SecretNotFound,
                format!(
                    "Secret {} does not exist in namespace {namespace}: create it with the password under key {}",
                    r.name, r.key
                ),
            ));
        }
    };
    let Some(bytes) = data.get(&r.key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Err(Failure::stalled(
            Reason::SecretKeyNotFound,
            format!(
                "Secret {} has no key {} (its keys: {}): add it, or set spec.passwordSecretRef.key",
                r.name,
                r.key,
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        ));
    };
    let identity = AppliedSecret {
        name: r.name.clone(),
        key: r.key.clone(),
        uid,
        resource_version,
    };
    Password::parse_bytes(bytes)
        .map(|p| (p, identity))
        .map_err(|e| {
            Failure::stalled(
                Reason::InvalidPassword,
                format!("Secret {} key {}: {e}; update the Secret", r.name, r.key),
            )
        })
}

/// The credentials to use with their identity (the Secret's uid and resourceVersion, or the
/// default AccessKeyId: never a secret), or why none.
pub(crate) async fn credentials(
    ctx: &Context,
    spec: &crate::api::VncPasswordSpec,
    namespace: &str,
) -> Result<Result<(Credentials, String), Failure>, ReconcileError> {
    if let Some(r) = spec.credentials_service_account() {
        if spec.credentials_secret().is_some() {
            // The CRD schema refuses both; an object stored before that rule still gets a clear
            // answer.
            return Ok(Err(Failure::stalled(
                Reason::InvalidSpec,
                "set exactly one of credentials.secretRef and credentials.serviceAccountRef",
            )));
        }
        // Always the object's own namespace: the reference has no namespace field.
        return match ctx
            .settings
            .service_accounts
            .resolve(&ctx.client, namespace, &r.name)
            .await
        {
            Ok(resolved) => Ok(Ok(resolved)),
            Err(ResolveError::Failure(failure)) => Ok(Err(failure)),
            Err(ResolveError::Kube(source)) => Err(ReconcileError::ServiceAccount {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                source,
            }),
        };
    }
    match &spec.credentials_secret() {
        None => {
            let provider = match default_credentials(ctx, namespace) {
                Ok(p) => p,
                Err(failure) => return Ok(Err(failure)),
            };
            // Only credentials that have expired without a successful refresh get here. STS
            // refusing the exchange stalls (rechecked like any AuthFailed); anything else (STS or
            // the metadata service unreachable, the token file missing mid-rotation) is retried.
            Ok(match provider.credentials().await {
                // The identity is what the credentials are (an AccessKeyId, a role): stable across
                // refreshes of temporary credentials, new when the credentials file is rotated.
                Ok(c) => {
                    let id = format!("default:{}", provider.identity_of(&c));
                    Ok((c, id))
                }
                Err(e) if e.code.is_some() && !e.transient => {
                    Err(Failure::stalled(Reason::AuthFailed, e.message))
                }
                // A configured credentials (or token) file that cannot be read: retried, since it
                // is read again at every use.
                Err(e) if e.not_found => Err(Failure::retry(
                    Reason::CredentialsFileUnreadable,
                    e.message,
                    crate::controller::decide::Pace::Normal,
                )),
                Err(e) => Err(Failure::retry(
                    Reason::StsUnavailable,
                    e.message,
                    crate::controller::decide::Pace::Normal,
                )),
            })
        }
        Some(r) => match read_secret(ctx, namespace, &r.name).await? {
            SecretRead::TooLarge => Ok(Err(too_large(
                format!("credentials Secret {}", r.name),
                "accessKeyId, accessKeySecret (and securityToken)",
            ))),
            SecretRead::Missing => Ok(Err(Failure::stalled(
                Reason::CredentialsNotFound,
                format!(
                    "credentials Secret {} does not exist in namespace {namespace}: create it with the keys spec.credentials.secretRef names (default accessKeyId, accessKeySecret, and securityToken for STS)",
                    r.name
                ),
            ))),
            SecretRead::Found(SecretData {
                data,
                uid,
                resource_version,
                ..
            }) => Ok(tenancy::from_secret_ref(r, |k| data.get(k).cloned())
                .map(|c| (c, secret_credentials_identity(&uid, &resource_version)))),
        },
    }
}

/// The controller's own credentials for this namespace, or why not.
pub(super) fn default_credentials(
    ctx: &Context,
    namespace: &str,
) -> Result<crate::ecs::CredentialsProvider, Failure> {
    tenancy::default_for(
        namespace,
        &ctx.settings.allowed_default_credentials,
        ctx.settings.default_credentials.as_ref(),
    )
}

/// The identity of credentials read from a Secret: its uid and resourceVersion.
pub(super) fn secret_credentials_identity(uid: &str, resource_version: &str) -> String {
    format!("secret:{uid}:{resource_version}")
}
/// A Secret's data, identity and what says who made it.
pub(super) struct SecretData {
    pub(super) data: std::collections::BTreeMap<String, Vec<u8>>,
    pub(super) uid: String,
    pub(super) resource_version: String,
    /// uids of its controlling owners.
    pub(super) controllers: Vec<String>,
    pub(super) annotations: std::collections::BTreeMap<String, String>,
    pub(super) labels: std::collections::BTreeMap<String, String>,
}

/// A Secret as read.
pub(super) enum SecretRead {
    Found(SecretData),
    Missing,
    /// Larger than the controller reads ([`secret_read::MAX_SECRET_BYTES`]).
    TooLarge,
}

/// `Stalled`/`SecretTooLarge` for `what` (which Secret), which should hold only `keep`.
fn too_large(what: String, keep: &str) -> Failure {
    Failure::stalled(
        Reason::SecretTooLarge,
        format!(
            "{what} is larger than the {} the controller reads of a Secret (its data and metadata as the API server returns them): keep only {keep} in it",
            secret_read::limit_text()
        ),
    )
}

/// Reads the Secret (bounded: see `secret_read`).
pub(super) async fn read_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<SecretRead, ReconcileError> {
    let cached = ctx.watched.secret(namespace, name);
    let version = cached.as_ref().map(|m| (m.uid(), m.resource_version()));
    let read = ctx
        .secret_reads
        .read(&ctx.client, namespace, name, version)
        .await
        .map_err(|source| ReconcileError::ReadSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })?;
    let s = match read {
        secret_read::Read::Found(s) => s,
        secret_read::Read::Missing => return Ok(SecretRead::Missing),
        secret_read::Read::TooLarge => return Ok(SecretRead::TooLarge),
    };
    Ok(SecretRead::Found({
        let resource_version = s.metadata.resource_version.clone().unwrap_or_default();
        let uid = s.metadata.uid.clone().unwrap_or_default();
        let controllers = s
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.controller == Some(true))
            .map(|o| o.uid)
            .collect();
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        let labels = s.metadata.labels.clone().unwrap_or_default();
        let mut data: std::collections::BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        // stringData is write-only, but a dry-run or odd client may leave it readable.
        for (k, v) in s.string_data.unwrap_or_default() {
            data.entry(k).or_insert_with(|| v.into_bytes());
        }
        SecretData {
            data,
            uid,
            resource_version,
            controllers,
            annotations,
            labels,
        }
    }))
}
