//! The `VncPassword` custom resource (`ecsvnc.io/v1alpha1`): spec, status, condition vocabulary.
//!
//! The doc comments on the spec fields become the CRD's OpenAPI descriptions (`kubectl explain`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod set;
pub use set::*;

pub const GROUP: &str = "ecsvnc.io";
/// Field manager for every write the controller makes.
pub const FIELD_MANAGER: &str = "ecs-vnc-controller";
/// Set to a new value to re-apply the password once even when it is unchanged (and, under
/// `rebootPolicy: Automatic`, reboot once more if the instance needs it).
pub const ANNOTATION_FORCE_APPLY_REQUESTED_AT: &str = "ecsvnc.io/force-apply-requested-at";
/// Deprecated name of [`ANNOTATION_FORCE_APPLY_REQUESTED_AT`]: still honoured (when the new one is
/// not set), with a Warning Event `DeprecatedAnnotation` once per token.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "ecsvnc.io/reconcile-requested-at";
/// `"true"` stops all ECS calls for the object until removed.
pub const ANNOTATION_PAUSED: &str = "ecsvnc.io/paused";
/// With `passwordGeneration`: set to a new value to generate and apply a new password now.
pub const ANNOTATION_ROTATE_REQUESTED_AT: &str = "ecsvnc.io/rotate-requested-at";
/// On a generated Secret: when its password was generated (RFC 3339). Written with the password,
/// so a rotation and its record can never part.
pub const ANNOTATION_GENERATED_AT: &str = "ecsvnc.io/generated-at";
/// On a generated Secret: the `ecsvnc.io/rotate-requested-at` value its password answered.
pub const ANNOTATION_ROTATE_TOKEN: &str = "ecsvnc.io/rotate-token";
/// On a generated Secret, during a rotation: `"true"` while the key [`PREVIOUS_KEY`] holds the
/// password the console accepted before the rotation, kept until the new one is in effect.
pub const ANNOTATION_PREVIOUS_IN_EFFECT: &str = "ecsvnc.io/previous-in-effect";
/// The key of a generated Secret that keeps the password from before a rotation until the new
/// password is in effect (ECS accepted it and, on an instance that is not I/O-optimized, a restart
/// followed).
pub const PREVIOUS_KEY: &str = "previous";
/// On a generated Secret: the uid of the VncPassword that created it. With `secretDeletionPolicy:
/// Retain` (no ownerReference) this, with the label below, is how the controller knows the Secret
/// as that VncPassword's own.
pub const ANNOTATION_OWNER_UID: &str = "ecsvnc.io/owner-uid";
/// On a generated Secret: the instance its password was generated for, `<regionId>/<instanceId>`.
/// A Secret kept (`secretDeletionPolicy: Retain`) after its VncPassword was deleted is adopted
/// by a new VncPassword of the same name only if that one names this same instance, so a
/// password is never reused for another instance.
pub const ANNOTATION_INSTANCE: &str = "ecsvnc.io/instance";
/// Label of every Secret the controller creates (and of nothing else it writes): names the
/// VncPassword it was generated for.
pub const LABEL_VNCPASSWORD: &str = "ecsvnc.io/vncpassword";
/// Label of every Secret the controller creates (`app.kubernetes.io/managed-by` value below).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ecs-vnc-controller";
/// On a ServiceAccount named by `spec.credentials.serviceAccountRef` (or the deprecated
/// `spec.credentialsServiceAccountRef`): the ARN of the RAM role its tokens are exchanged for (STS
/// `AssumeRoleWithOIDC`), e.g. `acs:ram::<account>:role/<name>`.
pub const ANNOTATION_ROLE_ARN: &str = "ecsvnc.io/role-arn";
/// The audience of the ServiceAccount tokens exchanged with STS, as ACK's RRSA issues them.
pub const STS_AUDIENCE: &str = "sts.aliyuncs.com";

/// Condition types.
pub mod condition {
    /// kstatus `Current`: the controller's part is done for this spec; nothing more happens
    /// without a change, a person or a reboot window.
    pub const READY: &str = "Ready";
    /// The console accepts the applied password (I/O-optimized, or restarted since the apply).
    pub const IN_EFFECT: &str = "InEffect";
    pub const APPLIED: &str = "Applied";
    pub const REBOOT_REQUIRED: &str = "RebootRequired";
    pub const STALLED: &str = "Stalled";
    pub const RECONCILING: &str = "Reconciling";
}

/// Why a condition is what it is. Serialized as CamelCase words that alerts, Argo CD and other
/// tooling match on: a rename is a breaking change, said in CHANGELOG.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The Secret's current password is applied and in effect (`Ready`), or applied (`Applied`).
    Applied,
    /// `rebootPolicy: Manual` (or the instance is Stopped): a person must restart the instance.
    RebootRequired,
    /// `rebootPolicy: Automatic`: the controller reboots the instance at the time `status` names
    /// (`Ready=True` while that is in a reboot window that is closed now, `False` while imminent).
    RebootScheduled,
    RebootRequested,
    /// RebootInstance was asked for and no restart was seen within `--reboot-timeout`: a stall.
    RebootNotObserved,
    Restarted,
    IoOptimized,
    Paused,
    /// The instance is changing state (Starting, Stopping): the controller waits for Running.
    WaitingForRestart,
    /// `InEffect=False`: the Secret's current password has not been applied.
    NotApplied,
    IncorrectInstanceStatus,
    /// Another operation on the instance is in progress (`OperationConflict` and its spellings).
    OperationConflict,
    Throttled,
    /// ECS answered 5xx or could not be reached.
    EcsUnavailable,
    /// An ECS refusal the controller does not know; retried slowly, the code is in the message.
    EcsUnknownError,
    /// STS (or the metadata service of a node's RAM role) could not be reached or answered 5xx.
    StsUnavailable,
    /// The API server did not answer a ServiceAccount's TokenRequest with a token.
    TokenRequestFailed,
    /// The API server refused a ServiceAccount's TokenRequest with 403 (the controller's RBAC,
    /// or the token admission policy `deploy/token-policy.yaml`).
    TokenRequestForbidden,
    /// The controller's own credentials file (or OIDC token file) is missing or unreadable; it is
    /// read again at every use.
    CredentialsFileUnreadable,
    AsExpected,
    // Stalled reasons.
    InvalidPassword,
    SecretNotFound,
    SecretKeyNotFound,
    InstanceNotFound,
    RegionNotFound,
    /// The credentials Secret (or a key it must have) does not exist, or the controller has no
    /// default credentials.
    CredentialsNotFound,
    /// The namespace may not use the controller's default credentials.
    CredentialsNotAllowed,
    AuthFailed,
    /// ModifyInstanceVncPasswd succeeded but DescribeInstances returns nothing for the instance:
    /// ECS answers an empty list, not an error, to an identity without `ecs:DescribeInstances`.
    DescribeNotAllowed,
    /// A refusal ECS will repeat until the input changes (the code is in the message).
    EcsRejected,
    /// `passwordGeneration` names a Secret the controller did not create: it is never overwritten.
    SecretNotOwned,
    /// A spec field cannot be used (the message says which).
    InvalidSpec,
    /// An older VncPassword names the same instance: only one sets its password.
    InstanceClaimed,
    /// `spec.credentials.serviceAccountRef` names a ServiceAccount that does not exist in the
    /// object's namespace.
    ServiceAccountNotFound,
    /// That ServiceAccount has no (or an empty) `ecsvnc.io/role-arn` annotation.
    RoleArnNotSet,
    /// Its `ecsvnc.io/role-arn` is not a RAM role ARN (`acs:ram::<account>:role/<name>`).
    RoleArnInvalid,
    /// The controller has no OIDC provider ARN (`--oidc-provider-arn`) to exchange tokens with.
    OidcProviderNotConfigured,
    /// The controller failed on this object (a bug, logged at error level); retried with backoff.
    InternalError,
    /// The controller's credentials serve several namespaces and the instance does not carry the
    /// ECS tag `ecsvnc.io/namespace` with this object's namespace as value.
    InstanceNotAllowed,
    /// The password or credentials Secret is larger than the controller reads (64 KiB).
    SecretTooLarge,
}

macro_rules! reasons {
    ($($name:ident),* $(,)?) => {
        impl Reason {
            pub const ALL: [Reason; [$(stringify!($name)),*].len()] = [$(Reason::$name),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons!(
    Applied,
    RebootRequired,
    RebootScheduled,
    RebootRequested,
    RebootNotObserved,
    Restarted,
    IoOptimized,
    Paused,
    WaitingForRestart,
    NotApplied,
    IncorrectInstanceStatus,
    OperationConflict,
    Throttled,
    EcsUnavailable,
    EcsUnknownError,
    StsUnavailable,
    TokenRequestFailed,
    TokenRequestForbidden,
    CredentialsFileUnreadable,
    AsExpected,
    InvalidPassword,
    SecretNotFound,
    SecretKeyNotFound,
    InstanceNotFound,
    RegionNotFound,
    CredentialsNotFound,
    CredentialsNotAllowed,
    AuthFailed,
    DescribeNotAllowed,
    EcsRejected,
    SecretNotOwned,
    InvalidSpec,
    InstanceClaimed,
    ServiceAccountNotFound,
    RoleArnNotSet,
    RoleArnInvalid,
    OidcProviderNotConfigured,
    InternalError,
    InstanceNotAllowed,
    SecretTooLarge,
);

impl Reason {
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Stalls that something outside Kubernetes can end (an instance created, a region enabled, a
    /// RAM permission granted): ECS is asked again every `--stall-recheck-interval`.
    pub fn fixable_outside_kubernetes(self) -> bool {
        matches!(
            self,
            Reason::InstanceNotFound
                | Reason::RegionNotFound
                | Reason::AuthFailed
                | Reason::DescribeNotAllowed
                | Reason::InstanceNotAllowed
        )
    }
}

impl Reason {
    /// Stalls that show the object's credentials can no longer reach its instance: its claim on
    /// the instance (`status.accessProof`) goes, so that it locks nobody out.
    pub fn revokes_access(self) -> bool {
        matches!(
            self,
            Reason::AuthFailed
                | Reason::InstanceNotFound
                | Reason::RegionNotFound
                | Reason::DescribeNotAllowed
                | Reason::InstanceNotAllowed
                | Reason::CredentialsNotFound
                | Reason::CredentialsNotAllowed
                | Reason::ServiceAccountNotFound
                | Reason::RoleArnNotSet
                | Reason::RoleArnInvalid
        )
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.as_str().to_string()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes an ECS instance's VNC password equal to the one in a Secret of the same namespace.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ecsvnc.io",
    version = "v1alpha1",
    kind = "VncPassword",
    plural = "vncpasswords",
    shortname = "vncpw",
    category = "ecs",
    namespaced,
    status = "VncPasswordStatus",
    doc = "Manages the VNC password of one Alibaba Cloud ECS instance from a Secret in the same namespace.",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instanceId"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.regionId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"In-Effect","type":"string","jsonPath":".status.conditions[?(@.type==\"InEffect\")].status"}"#,
    printcolumn = r#"{"name":"Reboot-Required","type":"string","jsonPath":".status.conditions[?(@.type==\"RebootRequired\")].status"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // `--field-selector spec.instanceId=…,spec.regionId=…`: who names an instance, asked of the
    // API server (the instance claim when this replica does not watch every object, see
    // `controller::claims`). Kubernetes 1.31 or later serves them (beta, on by default; 1.30 has
    // them behind a feature gate and drops them from the CRD).
    selectable = ".spec.instanceId",
    selectable = ".spec.regionId"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.rotationInterval) || (has(self.generatePassword) && self.generatePassword)").message("rotationInterval needs generatePassword: true (both are deprecated: use passwordGeneration.rotationInterval)"))]
#[x_kube(validation = Rule::new("!has(self.rotationInterval) || (duration(self.rotationInterval) >= duration('1h') && duration(self.rotationInterval) <= duration('8784h'))").message("rotationInterval must be between 1h and 8784h (366 days)"))]
#[x_kube(validation = Rule::new("!((has(self.passwordGeneration) || (has(self.generatePassword) && self.generatePassword)) && has(self.passwordSecretRef.key) && self.passwordSecretRef.key == 'previous')").message("with passwordGeneration the key 'previous' is reserved (it keeps the password in effect during a rotation); choose another passwordSecretRef.key"))]
#[x_kube(validation = Rule::new("!(has(self.generatePassword) && has(self.passwordGeneration))").message("generatePassword is deprecated and cannot be combined with passwordGeneration: remove generatePassword"))]
#[x_kube(validation = Rule::new("!(has(self.rotationInterval) && has(self.passwordGeneration))").message("rotationInterval is deprecated and cannot be combined with passwordGeneration: move it to passwordGeneration.rotationInterval"))]
#[x_kube(validation = Rule::new("!(has(self.credentialsSecretRef) && has(self.credentials))").message("credentialsSecretRef is deprecated and cannot be combined with credentials: move it to credentials.secretRef"))]
#[x_kube(validation = Rule::new("!(has(self.credentialsServiceAccountRef) && has(self.credentials))").message("credentialsServiceAccountRef is deprecated and cannot be combined with credentials: move it to credentials.serviceAccountRef"))]
#[x_kube(validation = Rule::new("!(has(self.credentialsSecretRef) && has(self.credentialsServiceAccountRef))").message("set at most one of credentialsSecretRef and credentialsServiceAccountRef (both deprecated: use credentials.secretRef or credentials.serviceAccountRef)"))]
#[x_kube(validation = Rule::new("!has(self.rebootWindows) || size(self.rebootWindows) == 0 || (has(self.rebootPolicy) && self.rebootPolicy == 'Automatic')").message("rebootWindows needs rebootPolicy: Automatic (the controller reboots only under Automatic)"))]
pub struct VncPasswordSpec {
    /// Region of the ECS instance, e.g. `cn-hangzhou` or `ap-southeast-1`.
    #[schemars(regex(pattern = r"^[a-z]{2,}(-[a-z0-9]+){1,4}$"), length(max = 64))]
    pub region_id: String,

    /// ID of the ECS instance, e.g. `i-bp67acfmxazb4ph0001`.
    #[schemars(regex(pattern = r"^i-[a-z0-9]{8,30}$"))]
    pub instance_id: String,

    /// The Secret, in this namespace, that holds the new VNC password: exactly 6 characters, each
    /// A-Z, a-z or 0-9 (one trailing newline is ignored). Changing the Secret changes the password.
    pub password_secret_ref: PasswordSecretRef,

    /// Present: the controller generates the password. It creates the Secret named by
    /// `passwordSecretRef` (labelled `app.kubernetes.io/managed-by: ecs-vnc-controller`) with a
    /// random password of 6 characters with at least one upper-case letter, one lower-case letter
    /// and one digit. A Secret it did not create is never overwritten (`Stalled`,
    /// `SecretNotOwned`). Whoever may read Secrets in this namespace may read the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_generation: Option<PasswordGeneration>,

    /// The Alibaba Cloud credentials to use: exactly one of `secretRef` and `serviceAccountRef`.
    /// Without it the controller's own credentials are used, and only in namespaces the
    /// controller's operator allowed (`--default-credentials-namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSource>,

    /// What to do when the instance is not I/O-optimized and so needs a restart for the new password
    /// to take effect. `Manual` (default): report `RebootRequired` until someone restarts it.
    /// `Automatic`: the controller calls RebootInstance at most once per applied password, only while
    /// the instance is Running and in a later minute than the apply (so the restart shows in ECS's
    /// minute-precision StartTime).
    #[serde(default)]
    pub reboot_policy: RebootPolicy,

    /// Only with `rebootPolicy: Automatic`: RebootInstance is called only inside one of these
    /// windows (at most 10). Without windows, whenever a reboot is needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub reboot_windows: Vec<RebootWindow>,

    /// Deprecated: use `passwordGeneration: {}`. Still accepted (not together with
    /// `passwordGeneration`); `true` means `passwordGeneration` with `secretDeletionPolicy: Retain`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_password: bool,

    /// Deprecated: use `passwordGeneration.rotationInterval`. Still accepted (only with
    /// `generatePassword: true`, not together with `passwordGeneration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub rotation_interval: Option<String>,

    /// Deprecated: use `credentials.secretRef`. Still accepted (not together with `credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Deprecated: use `credentials.serviceAccountRef`. Still accepted (not together with
    /// `credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_service_account_ref: Option<ServiceAccountRef>,
}

/// The controller generates (and optionally rotates) the password Secret.
///
/// Atomic for server-side apply: applying `passwordGeneration: {}` over an earlier
/// `{secretDeletionPolicy: Delete}` then means `{}` (the defaults), where a granular object left
/// `null` behind, which turned generation off.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
#[x_kube(validation = Rule::new("!has(self.rotationInterval) || (duration(self.rotationInterval) >= duration('1h') && duration(self.rotationInterval) <= duration('8784h'))").message("rotationInterval must be between 1h and 8784h (366 days)"))]
pub struct PasswordGeneration {
    /// Generate and apply a new password when this long has passed since the last one was
    /// generated, e.g. `720h` (Go duration; from `1h` to `8784h`). Absent: never rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub rotation_interval: Option<String>,

    /// Whether the generated Secret goes when this VncPassword is deleted. `Retain` (default): it
    /// stays (no ownerReference; the controller knows it as its own by the label
    /// `app.kubernetes.io/managed-by: ecs-vnc-controller` and the annotation
    /// `ecsvnc.io/owner-uid` holding this VncPassword's uid), so deleting the VncPassword (or a
    /// `kubectl delete -k` of its kustomization) never deletes a password the console may still
    /// accept. `Delete`: the Secret is owned by the VncPassword (an ownerReference) and goes
    /// with it. A change is applied to the existing Secret.
    #[serde(default)]
    pub secret_deletion_policy: SecretDeletionPolicy,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SecretDeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Where the credentials come from: exactly one of `secretRef` and `serviceAccountRef`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.serviceAccountRef)").message("set exactly one of credentials.secretRef and credentials.serviceAccountRef"))]
pub struct CredentialsSource {
    /// A Secret, in this namespace, with the Alibaba Cloud credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<CredentialsSecretRef>,

    /// A ServiceAccount, in this namespace, whose identity to use instead of a credentials
    /// Secret (RRSA, as on ACK): the controller requests a short-lived token of it (audience
    /// `sts.aliyuncs.com`) and exchanges it with STS `AssumeRoleWithOIDC` for temporary
    /// credentials of the RAM role named by its annotation `ecsvnc.io/role-arn`. The role's trust
    /// policy must trust the cluster's OIDC provider for
    /// `system:serviceaccount:<namespace>:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountRef>,
}

/// A credentials Secret in the same namespace: AccessKey keys (default `accessKeyId`,
/// `accessKeySecret` and, for STS credentials, `securityToken`), or one key holding an Alibaba
/// credentials file.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.credentialsFileKey) || !(has(self.accessKeyIdKey) || has(self.accessKeySecretKey) || has(self.securityTokenKey))").message("credentialsFileKey cannot be combined with accessKeyIdKey, accessKeySecretKey or securityTokenKey"))]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// The key holding the AccessKeyId (default `accessKeyId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub access_key_id_key: Option<String>,
    /// The key holding the AccessKeySecret (default `accessKeySecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub access_key_secret_key: Option<String>,
    /// The key holding the STS SecurityToken, if any (default `securityToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub security_token_key: Option<String>,
    /// Instead of the keys above: the key holding an Alibaba Cloud credentials file (INI), the
    /// same format as the controller's own default-credentials Secret; its `[default]` profile is
    /// used and must be of `type = access_key` (`access_key_id`, `access_key_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub credentials_file_key: Option<String>,
}

impl CredentialsSecretRef {
    /// Only a name: the default keys.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Default::default()
        }
    }
}

impl VncPasswordSpec {
    /// The password generation in force, from `passwordGeneration` or the deprecated
    /// `generatePassword` and `rotationInterval`.
    pub fn generation(&self) -> Option<PasswordGeneration> {
        match &self.password_generation {
            Some(g) => Some(g.clone()),
            None if self.generate_password => Some(PasswordGeneration {
                rotation_interval: self.rotation_interval.clone(),
                secret_deletion_policy: SecretDeletionPolicy::Retain,
            }),
            None => None,
        }
    }

    /// Whether the controller generates the password.
    pub fn generates_password(&self) -> bool {
        self.password_generation.is_some() || self.generate_password
    }

    /// The rotation interval in force (field text), with either spelling.
    pub fn rotation_interval(&self) -> Option<&str> {
        match &self.password_generation {
            Some(g) => g.rotation_interval.as_deref(),
            None => self.rotation_interval.as_deref(),
        }
    }

    /// The credentials Secret named, with either spelling.
    pub fn credentials_secret(&self) -> Option<CredentialsSecretRef> {
        self.credentials
            .as_ref()
            .and_then(|c| c.secret_ref.clone())
            .or_else(|| {
                self.credentials_secret_ref
                    .as_ref()
                    .map(|r| CredentialsSecretRef::named(&r.name))
            })
    }

    /// The ServiceAccount named, with either spelling.
    pub fn credentials_service_account(&self) -> Option<&ServiceAccountRef> {
        self.credentials
            .as_ref()
            .and_then(|c| c.service_account_ref.as_ref())
            .or(self.credentials_service_account_ref.as_ref())
    }

    /// `(deprecated field, its replacement)` for each deprecated field the spec sets.
    pub fn deprecated_fields(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.generate_password {
            out.push(("generatePassword", "passwordGeneration"));
        }
        if self.rotation_interval.is_some() {
            out.push(("rotationInterval", "passwordGeneration.rotationInterval"));
        }
        if self.credentials_secret_ref.is_some() {
            out.push(("credentialsSecretRef", "credentials.secretRef"));
        }
        if self.credentials_service_account_ref.is_some() {
            out.push((
                "credentialsServiceAccountRef",
                "credentials.serviceAccountRef",
            ));
        }
        out
    }
}

/// A maintenance window: it opens at each time `schedule` names, in `timeZone`, and lasts
/// `duration`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.duration) > duration('0s') && duration(self.duration) <= duration('168h')").message("duration must be longer than 0s and at most 168h (a week)"))]
pub struct RebootWindow {
    /// Five-field cron expression of the window's start, e.g. `0 2 * * SUN` (02:00 every Sunday):
    /// minute, hour, day of month, month, day of week, each of digits, names, `*`, `,`, `-`, `/`
    /// (checked at admission; what each field's numbers and names mean is checked by the
    /// controller, which says `InvalidSpec`).
    #[schemars(
        regex(pattern = r"^[0-9A-Za-z*,/?#-]+( +[0-9A-Za-z*,/?#-]+){4}$"),
        length(max = 128)
    )]
    pub schedule: String,
    /// How long the window stays open, a Go duration longer than 0s and at most `168h`, e.g. `2h`.
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub duration: String,
    /// IANA time zone of `schedule`, e.g. `Europe/Berlin` (default `UTC`). Admission checks the
    /// form of a zone name only (CEL has no time zone database); an unknown zone makes the object
    /// `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"),
        length(max = 64)
    )]
    pub time_zone: Option<String>,
}

/// A key of a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretRef {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
    /// Key in the Secret's data that holds the password.
    #[serde(default = "default_password_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"), length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// A Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
}

/// A ServiceAccount in the same namespace (there is no namespace field: another namespace's
/// ServiceAccount can never be named).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// Name of the ServiceAccount.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(min = 1, max = 253)
    )]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebootPolicy {
    #[default]
    Manual,
    Automatic,
}

/// What the controller last observed and did. Written only by the controller, grouped by what it
/// is about; every time is RFC 3339. A status written by an earlier version (flat fields, see
/// [`LegacyStatus`]) is read as this shape, and the controller's next status write replaces it.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VncPasswordStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `InEffect`, `Applied`, `RebootRequired`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What ECS accepted.
    #[serde(default, skip_serializing_if = "is_default")]
    pub applied: AppliedStatus,
    /// The instance as last described.
    #[serde(default, skip_serializing_if = "is_default")]
    pub instance: InstanceStatus,
    /// `rebootPolicy: Automatic`: the reboot intent and the next window.
    #[serde(default, skip_serializing_if = "is_default")]
    pub reboot: RebootStatus,
    /// `passwordGeneration.rotationInterval`: the next rotation.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rotation: RotationStatus,
    /// A stall ECS gave, remembered so that the same inputs make no ECS call.
    #[serde(default, skip_serializing_if = "is_default")]
    pub stall: StallStatus,
    /// Read from a status in the shape of an earlier version (flat fields): the next write
    /// replaces it even when nothing else changed. Never serialized.
    #[serde(skip)]
    pub legacy: bool,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What ECS accepted, and the tokens the controller handled.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedStatus {
    /// When ECS last accepted the password, by the controller's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub time: Option<String>,
    /// The same moment by ECS's own clock (the `Date` of its answer): the instance's `StartTime`,
    /// also ECS's clock, is compared with this, so the controller's clock never decides whether a
    /// restart came after the apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub ecs_time: Option<String>,
    /// `<regionId>/<instanceId>` the password was applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Keyed HMAC of what was applied (instance and password), so that an unchanged password is
    /// not sent again. `hmac-sha256:<key id>:<mac>`: never the password, never a plain hash of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The password Secret as it was when its password was applied: an unchanged Secret needs no
    /// ECS call, even when the fingerprint key was lost and the fingerprint must be made anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<AppliedSecret>,
    /// RequestId of the ModifyInstanceVncPasswd call, for Alibaba Cloud support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Proof, keyed by the controller, that this object reached `applied.instance` (or
    /// `instance.key`) with its own credentials: its claim on the instance. Only the controller
    /// can make it; a copy on another object proves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_proof: Option<String>,
    /// The last `ecsvnc.io/force-apply-requested-at` (or deprecated
    /// `ecsvnc.io/reconcile-requested-at`) value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_apply_token: Option<String>,
    /// The last `ecsvnc.io/rotate-requested-at` value acted on (a new password generated for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_token: Option<String>,
}

/// The instance as last described (`DescribeInstances`), and its restart after the apply.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// `<regionId>/<instanceId>` these facts describe: facts about another instance are never
    /// used for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Whether it is I/O-optimized (the password is then live at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_optimized: Option<bool>,
    /// Its status at the last look (`Running`, `Stopped`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The value of its ECS tag `ecsvnc.io/namespace` at the last look (absent: no such tag).
    /// With credentials shared by several namespaces, the controller acts on an instance only
    /// when this is the VncPassword's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_tag: Option<String>,
    /// Its `StartTime` (ECS's clock, minute precision) seen right after the apply: a later change
    /// means a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_time_at_apply: Option<String>,
    /// A status other than `Running` (Stopping, Starting, Stopped) was seen after the apply: the
    /// next `Running` is a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left_running_after_apply: bool,
    /// When a restart after the apply was seen: the password is in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub restart_observed_time: Option<String>,
}

/// `rebootPolicy: Automatic`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebootStatus {
    /// The controller's intent to call RebootInstance, written before the call with the object's
    /// resourceVersion as precondition. Never followed by a second call for the same applied
    /// password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub requested_time: Option<String>,
    /// The `applied.fingerprint` that reboot was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_for: Option<String>,
    /// RequestId of the RebootInstance call, for Alibaba Cloud support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// With `rebootWindows`, while a reboot waits for one: when the next window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_window: Option<String>,
}

/// `passwordGeneration.rotationInterval`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// When the next password will be generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_time: Option<String>,
}

/// A stall ECS gave for some inputs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StallStatus {
    /// Hash of the inputs (object uid and generation, Secret versions, credentials, force token)
    /// ECS refused: no call for the same inputs, across restarts. Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// When ECS was last asked about a stall that something outside Kubernetes can fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub checked_time: Option<String>,
}

/// What the controller last observed and did, grouped by what it is about; every time is RFC 3339.
/// Written only by the controller. The flat fields marked deprecated are those of earlier
/// versions: kept in the schema so that a status written before an upgrade is read (no ECS call,
/// no reboot for it), and replaced by the grouped fields at the controller's next status write.
#[derive(Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "VncPasswordStatus")]
pub struct StoredStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `InEffect`, `Applied`, `RebootRequired`, `Reconciling`, `Stalled` (see
    /// docs/reference/status.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    /// What ECS accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedStatus>,
    /// The instance as last described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceStatus>,
    /// `rebootPolicy: Automatic`: the reboot intent and the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootStatus>,
    /// `passwordGeneration.rotationInterval`: the next rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// A stall ECS gave, remembered so that the same inputs make no ECS call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallStatus>,
    #[serde(flatten)]
    pub legacy: LegacyStatus,
}

/// The flat status fields of versions before the grouped status (deprecated: read once after an
/// upgrade, never written).
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyStatus {
    /// Deprecated: `instance.ioOptimized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_optimized: Option<bool>,
    /// Deprecated: `instance.status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_status: Option<String>,
    /// Deprecated: `instance.namespaceTag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_namespace_tag: Option<String>,
    /// Deprecated: `instance.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub described_instance: Option<String>,
    /// Deprecated: `applied.time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<String>,
    /// Deprecated: `applied.ecsTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_ecs_time: Option<String>,
    /// Deprecated: `applied.requestId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_id: Option<String>,
    /// Deprecated: `applied.fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_password_fingerprint: Option<String>,
    /// Deprecated: `applied.instance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_instance: Option<String>,
    /// Deprecated: `applied.accessProof`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_proof: Option<String>,
    /// Deprecated: `applied.secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_secret: Option<AppliedSecret>,
    /// Deprecated: `instance.startTimeAtApply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_at_apply: Option<String>,
    /// Deprecated: `instance.leftRunningAfterApply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_running_after_apply: Option<bool>,
    /// Deprecated: `instance.restartObservedTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_observed_time: Option<String>,
    /// Deprecated: `reboot.requestedTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested_time: Option<String>,
    /// Deprecated: `reboot.requestedFor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested_for: Option<String>,
    /// Deprecated: `applied.forceApplyToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Deprecated: `stall.inputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_inputs: Option<String>,
    /// Deprecated: `stall.checkedTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_checked_time: Option<String>,
    /// Deprecated: `rotation.nextTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    /// Deprecated: `reboot.nextWindow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_reboot_window: Option<String>,
}

/// A time of an earlier version's status as RFC 3339 (`StartTime` had minute precision).
fn rfc3339(text: Option<String>) -> Option<String> {
    let text = text?;
    match crate::ecs::types::parse_start_time(&text) {
        Some(t) => Some(crate::ecs::signer::format_timestamp(t)),
        None => Some(text),
    }
}

impl From<StoredStatus> for VncPasswordStatus {
    fn from(stored: StoredStatus) -> Self {
        let l = stored.legacy;
        let legacy = l != LegacyStatus::default();
        // A grouped field wins; a flat one fills what the grouped status lacks.
        let mut applied = stored.applied.unwrap_or_default();
        let mut instance = stored.instance.unwrap_or_default();
        let mut reboot = stored.reboot.unwrap_or_default();
        let mut rotation = stored.rotation.unwrap_or_default();
        let mut stall = stored.stall.unwrap_or_default();
        fn fill<T>(slot: &mut Option<T>, old: Option<T>) {
            if slot.is_none() {
                *slot = old;
            }
        }
        fill(&mut applied.time, rfc3339(l.last_applied_time));
        fill(&mut applied.ecs_time, rfc3339(l.last_applied_ecs_time));
        fill(&mut applied.instance, l.applied_instance);
        fill(&mut applied.fingerprint, l.applied_password_fingerprint);
        fill(&mut applied.secret, l.applied_secret);
        fill(&mut applied.request_id, l.last_request_id);
        fill(&mut applied.access_proof, l.access_proof);
        fill(&mut applied.force_apply_token, l.last_handled_reconcile_at);
        fill(&mut instance.key, l.described_instance);
        fill(&mut instance.io_optimized, l.io_optimized);
        fill(&mut instance.status, l.instance_status);
        fill(&mut instance.namespace_tag, l.instance_namespace_tag);
        fill(
            &mut instance.start_time_at_apply,
            rfc3339(l.start_time_at_apply),
        );
        instance.left_running_after_apply |= l.left_running_after_apply.unwrap_or(false);
        fill(
            &mut instance.restart_observed_time,
            rfc3339(l.restart_observed_time),
        );
        fill(&mut reboot.requested_time, rfc3339(l.reboot_requested_time));
        fill(&mut reboot.requested_for, l.reboot_requested_for);
        fill(&mut reboot.next_window, rfc3339(l.next_reboot_window));
        fill(&mut rotation.next_time, rfc3339(l.next_rotation_time));
        fill(&mut stall.inputs, l.stalled_inputs);
        fill(&mut stall.checked_time, rfc3339(l.stall_checked_time));
        Self {
            observed_generation: stored.observed_generation,
            conditions: stored.conditions.unwrap_or_default(),
            applied,
            instance,
            reboot,
            rotation,
            stall,
            legacy,
        }
    }
}

impl<'de> Deserialize<'de> for VncPasswordStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StoredStatus::deserialize(deserializer).map(Self::from)
    }
}

impl JsonSchema for VncPasswordStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        StoredStatus::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        StoredStatus::json_schema(generator)
    }
}

/// A Secret's identity: a changed resourceVersion or a recreated Secret (new uid) may hold a new
/// password.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedSecret {
    pub name: String,
    pub key: String,
    pub uid: String,
    pub resource_version: String,
}

impl VncPasswordStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }

    /// The force-apply token last handled.
    pub fn force_apply_token(&self) -> Option<&str> {
        self.applied.force_apply_token.as_deref()
    }
}

/// The CRD as YAML, as `ecs-vnc-controller crd` prints it and `crds/vncpassword.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&VncPassword::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as the previous version wrote it (flat fields) is read into the grouped shape,
    /// times as RFC 3339, and marked for rewriting; it is written back grouped only.
    #[test]
    fn a_flat_status_of_the_previous_version_is_read_grouped() {
        let old = serde_json::json!({
            "observedGeneration": 3,
            "conditions": [],
            "ioOptimized": false,
            "instanceStatus": "Running",
            "describedInstance": "cn-hangzhou/i-1",
            "lastAppliedTime": "2026-01-01T10:00:40Z",
            "lastAppliedEcsTime": "2026-01-01T10:00:41Z",
            "lastRequestId": "R1",
            "appliedPasswordFingerprint": "hmac-sha256:k:m",
            "appliedInstance": "cn-hangzhou/i-1",
            "accessProof": "p",
            "appliedSecret": {"name": "s", "key": "password", "uid": "u", "resourceVersion": "7"},
            "startTimeAtApply": "2026-01-01T10:00Z",
            "leftRunningAfterApply": true,
            "rebootRequestedTime": "2026-01-01T10:01:05Z",
            "rebootRequestedFor": "hmac-sha256:k:m",
            "lastHandledReconcileAt": "tok",
            "stalledInputs": "sha256:x",
            "stallCheckedTime": "2026-01-01T09:00:00Z",
            "nextRotationTime": "2026-02-01T10:00:00Z",
            "nextRebootWindow": "2026-01-04T02:00:00Z",
        });
        let s: VncPasswordStatus = serde_json::from_value(old).unwrap();
        assert!(s.legacy);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.applied.fingerprint.as_deref(), Some("hmac-sha256:k:m"));
        assert_eq!(s.applied.secret.as_ref().unwrap().resource_version, "7");
        assert_eq!(s.applied.force_apply_token.as_deref(), Some("tok"));
        assert_eq!(s.applied.request_id.as_deref(), Some("R1"));
        assert_eq!(s.instance.key.as_deref(), Some("cn-hangzhou/i-1"));
        assert_eq!(s.instance.io_optimized, Some(false));
        assert_eq!(
            s.instance.start_time_at_apply.as_deref(),
            Some("2026-01-01T10:00:00Z")
        );
        assert!(s.instance.left_running_after_apply);
        assert_eq!(s.reboot.requested_for.as_deref(), Some("hmac-sha256:k:m"));
        assert_eq!(
            s.reboot.next_window.as_deref(),
            Some("2026-01-04T02:00:00Z")
        );
        assert_eq!(s.stall.inputs.as_deref(), Some("sha256:x"));
        assert_eq!(
            s.rotation.next_time.as_deref(),
            Some("2026-02-01T10:00:00Z")
        );
        let written = serde_json::to_value(&s).unwrap();
        let keys: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "applied",
                "instance",
                "observedGeneration",
                "reboot",
                "rotation",
                "stall"
            ]
        );
        // Read back: the same, and no longer legacy.
        let again: VncPasswordStatus = serde_json::from_value(written).unwrap();
        assert!(!again.legacy);
        assert_eq!(
            VncPasswordStatus {
                legacy: true,
                ..again
            },
            s
        );
    }

    #[test]
    fn the_deprecated_spec_fields_map_to_the_new_shape() {
        let spec: VncPasswordSpec = serde_json::from_value(serde_json::json!({
            "regionId": "cn-hangzhou",
            "instanceId": "i-aaaaaaaa1",
            "passwordSecretRef": {"name": "pw"},
            "generatePassword": true,
            "rotationInterval": "720h",
            "credentialsSecretRef": {"name": "creds"},
        }))
        .unwrap();
        assert_eq!(
            spec.generation(),
            Some(PasswordGeneration {
                rotation_interval: Some("720h".into()),
                secret_deletion_policy: SecretDeletionPolicy::Retain,
            })
        );
        assert_eq!(
            spec.credentials_secret(),
            Some(CredentialsSecretRef::named("creds"))
        );
        assert_eq!(spec.deprecated_fields().len(), 3);
    }

    #[test]
    fn every_reason_has_its_own_word() {
        let words: std::collections::BTreeSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(words.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("UnknownEcsError"), None);
    }
}
