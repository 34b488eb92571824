//! The `VncPassword` custom resource (`ecsvnc.io/v1alpha1`): spec, status, condition vocabulary.
//!
//! The doc comments on the spec fields become the CRD's OpenAPI descriptions (`kubectl explain`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "ecsvnc.io";
/// Field manager for every write the controller makes.
pub const FIELD_MANAGER: &str = "ecs-vnc-controller";
/// Set to a new value to re-apply the password once even when it is unchanged.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "ecsvnc.io/reconcile-requested-at";
/// `"true"` stops all ECS calls for the object until removed.
pub const ANNOTATION_PAUSED: &str = "ecsvnc.io/paused";
/// With `generatePassword`: set to a new value to generate and apply a new password now.
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
/// Label of every Secret the controller creates (`app.kubernetes.io/managed-by` value below).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ecs-vnc-controller";
/// On a ServiceAccount named by `spec.credentialsServiceAccountRef`: the ARN of the RAM role its
/// tokens are exchanged for (STS `AssumeRoleWithOIDC`), e.g. `acs:ram::<account>:role/<name>`.
pub const ANNOTATION_ROLE_ARN: &str = "ecsvnc.io/role-arn";
/// The audience of the ServiceAccount tokens exchanged with STS, as ACK's RRSA issues them.
pub const STS_AUDIENCE: &str = "sts.aliyuncs.com";

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const APPLIED: &str = "Applied";
    pub const REBOOT_REQUIRED: &str = "RebootRequired";
    pub const STALLED: &str = "Stalled";
    pub const RECONCILING: &str = "Reconciling";
}

/// Why a condition is what it is. Serialized as CamelCase words that alerts, Argo CD and other
/// tooling match on: never rename a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Applied,
    RebootRequired,
    RebootRequested,
    /// RebootInstance was asked for and no restart was seen within `--reboot-timeout`.
    RebootNotObserved,
    Restarted,
    IoOptimized,
    Paused,
    WaitingForRestart,
    IncorrectInstanceStatus,
    /// Another operation on the instance is in progress (`OperationConflict` and its spellings).
    OperationConflict,
    Throttled,
    EcsUnavailable,
    /// An ECS refusal the controller does not know; retried slowly, the code is in the message.
    UnknownEcsError,
    AsExpected,
    // Stalled reasons.
    InvalidPassword,
    SecretNotFound,
    SecretKeyNotFound,
    InstanceNotFound,
    RegionNotFound,
    CredentialsNotFound,
    CredentialsNotAllowed,
    AuthFailed,
    /// ModifyInstanceVncPasswd succeeded but DescribeInstances returns nothing for the instance:
    /// ECS answers an empty list, not an error, to an identity without `ecs:DescribeInstances`.
    DescribeNotAllowed,
    /// A refusal ECS will repeat until the input changes (the code is in the message).
    EcsRejected,
    /// `generatePassword` names a Secret the controller did not create: it is never overwritten.
    SecretNotOwned,
    /// `spec.rotationInterval` or a `spec.rebootWindows` entry cannot be used (the message says which).
    InvalidSpec,
    /// An older VncPassword names the same instance: only one sets its password.
    InstanceClaimed,
    /// `spec.credentialsServiceAccountRef` names a ServiceAccount that does not exist in the
    /// object's namespace.
    ServiceAccountNotFound,
    /// That ServiceAccount has no (or an empty) `ecsvnc.io/role-arn` annotation.
    RoleArnNotSet,
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

impl Reason {
    pub const ALL: [Reason; 33] = [
        Reason::Applied,
        Reason::RebootRequired,
        Reason::RebootRequested,
        Reason::RebootNotObserved,
        Reason::Restarted,
        Reason::IoOptimized,
        Reason::Paused,
        Reason::WaitingForRestart,
        Reason::IncorrectInstanceStatus,
        Reason::OperationConflict,
        Reason::Throttled,
        Reason::EcsUnavailable,
        Reason::UnknownEcsError,
        Reason::AsExpected,
        Reason::InvalidPassword,
        Reason::SecretNotFound,
        Reason::SecretKeyNotFound,
        Reason::InstanceNotFound,
        Reason::RegionNotFound,
        Reason::CredentialsNotFound,
        Reason::CredentialsNotAllowed,
        Reason::AuthFailed,
        Reason::DescribeNotAllowed,
        Reason::EcsRejected,
        Reason::SecretNotOwned,
        Reason::InvalidSpec,
        Reason::InstanceClaimed,
        Reason::ServiceAccountNotFound,
        Reason::RoleArnNotSet,
        Reason::OidcProviderNotConfigured,
        Reason::InternalError,
        Reason::InstanceNotAllowed,
        Reason::SecretTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Applied => "Applied",
            Reason::RebootRequired => "RebootRequired",
            Reason::RebootRequested => "RebootRequested",
            Reason::RebootNotObserved => "RebootNotObserved",
            Reason::Restarted => "Restarted",
            Reason::IoOptimized => "IoOptimized",
            Reason::Paused => "Paused",
            Reason::WaitingForRestart => "WaitingForRestart",
            Reason::IncorrectInstanceStatus => "IncorrectInstanceStatus",
            Reason::OperationConflict => "OperationConflict",
            Reason::Throttled => "Throttled",
            Reason::EcsUnavailable => "EcsUnavailable",
            Reason::UnknownEcsError => "UnknownEcsError",
            Reason::AsExpected => "AsExpected",
            Reason::InvalidPassword => "InvalidPassword",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyNotFound => "SecretKeyNotFound",
            Reason::InstanceNotFound => "InstanceNotFound",
            Reason::RegionNotFound => "RegionNotFound",
            Reason::CredentialsNotFound => "CredentialsNotFound",
            Reason::CredentialsNotAllowed => "CredentialsNotAllowed",
            Reason::AuthFailed => "AuthFailed",
            Reason::DescribeNotAllowed => "DescribeNotAllowed",
            Reason::EcsRejected => "EcsRejected",
            Reason::SecretNotOwned => "SecretNotOwned",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::InstanceClaimed => "InstanceClaimed",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
            Reason::RoleArnNotSet => "RoleArnNotSet",
            Reason::OidcProviderNotConfigured => "OidcProviderNotConfigured",
            Reason::InternalError => "InternalError",
            Reason::InstanceNotAllowed => "InstanceNotAllowed",
            Reason::SecretTooLarge => "SecretTooLarge",
        }
    }

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
    printcolumn = r#"{"name":"Reboot-Required","type":"string","jsonPath":".status.conditions[?(@.type==\"RebootRequired\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.rotationInterval) || (has(self.generatePassword) && self.generatePassword)").message("rotationInterval needs generatePassword: true (the controller only rotates passwords it generates)"))]
#[x_kube(validation = Rule::new("!has(self.rotationInterval) || (duration(self.rotationInterval) >= duration('1h') && duration(self.rotationInterval) <= duration('8784h'))").message("rotationInterval must be between 1h and 8784h (366 days)"))]
#[x_kube(validation = Rule::new("!(has(self.generatePassword) && self.generatePassword && has(self.passwordSecretRef.key) && self.passwordSecretRef.key == 'previous')").message("with generatePassword the key 'previous' is reserved (it keeps the password in effect during a rotation); choose another passwordSecretRef.key"))]
#[x_kube(validation = Rule::new("!(has(self.credentialsSecretRef) && has(self.credentialsServiceAccountRef))").message("set at most one of credentialsSecretRef and credentialsServiceAccountRef"))]
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

    /// A Secret, in this namespace, with the Alibaba Cloud credentials to use: keys `accessKeyId`,
    /// `accessKeySecret` and, for STS credentials, `securityToken`. Without it the controller's own
    /// credentials are used, and only in namespaces the controller's operator allowed
    /// (`--default-credentials-namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// A ServiceAccount, in this namespace, whose identity to use instead of a credentials Secret
    /// (RRSA, as on ACK): the controller requests a short-lived token of it (audience
    /// `sts.aliyuncs.com`) and exchanges it with STS `AssumeRoleWithOIDC` for temporary credentials
    /// of the RAM role named by its annotation `ecsvnc.io/role-arn`. The role's trust policy must
    /// trust the cluster's OIDC provider for `system:serviceaccount:<namespace>:<name>`. At most one
    /// of `credentialsSecretRef` and `credentialsServiceAccountRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_service_account_ref: Option<ServiceAccountRef>,

    /// What to do when the instance is not I/O-optimized and so needs a restart for the new password
    /// to take effect. `Manual` (default): report `RebootRequired` until someone restarts it.
    /// `Automatic`: the controller calls RebootInstance at most once per applied password, only while
    /// the instance is Running and in a later minute than the apply (so the restart shows in ECS's
    /// minute-precision StartTime).
    #[serde(default)]
    pub reboot_policy: RebootPolicy,

    /// The controller generates the password: it creates the Secret named by `passwordSecretRef`
    /// (owned by this VncPassword, labelled `app.kubernetes.io/managed-by: ecs-vnc-controller`)
    /// with a random password of 6 characters with at least one upper-case letter, one lower-case
    /// letter and one digit. A Secret it did not create is never overwritten (`Stalled`,
    /// `SecretNotOwned`). Whoever may read Secrets in this namespace may read the password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate_password: bool,

    /// With `generatePassword`: generate and apply a new password when this long has passed since
    /// the last one was generated, e.g. `720h` (Go duration; from `1h` to `8784h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub rotation_interval: Option<String>,

    /// With `rebootPolicy: Automatic`: RebootInstance is called only inside one of these windows
    /// (at most 10). Without windows, whenever a reboot is needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub reboot_windows: Vec<RebootWindow>,
}

/// A maintenance window: it opens at each time `schedule` names, in `timeZone`, and lasts
/// `duration`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.duration) > duration('0s') && duration(self.duration) <= duration('168h')").message("duration must be longer than 0s and at most 168h (a week)"))]
pub struct RebootWindow {
    /// Five-field cron expression of the window's start, e.g. `0 2 * * SUN` (02:00 every Sunday).
    #[schemars(regex(pattern = r"^\S+( +\S+){4}$"), length(max = 128))]
    pub schedule: String,
    /// How long the window stays open, a Go duration longer than 0s and at most `168h`, e.g. `2h`.
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub duration: String,
    /// IANA time zone of `schedule`, e.g. `Europe/Berlin` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
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

/// What the controller last observed and did. Written only by the controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VncPasswordStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Applied`, `RebootRequired`, `Stalled`, `Reconciling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Whether the instance named by `describedInstance` is I/O-optimized (the password is then
    /// live at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_optimized: Option<bool>,
    /// That instance's status at the last look (`Running`, `Stopped`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_status: Option<String>,
    /// The value of that instance's ECS tag `ecsvnc.io/namespace` at the last look (absent: no
    /// such tag). With credentials shared by several namespaces, the controller acts on an
    /// instance only when this is the VncPassword's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_namespace_tag: Option<String>,
    /// `<regionId>/<instanceId>` that `ioOptimized` and `instanceStatus` describe: facts about
    /// another instance are never used for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub described_instance: Option<String>,
    /// When ECS last accepted the password, by the controller's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<String>,
    /// The same moment by ECS's own clock (the `Date` of its answer): the instance's `StartTime`,
    /// also ECS's clock, is compared with this, so the controller's clock never decides whether a
    /// restart came after the apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_ecs_time: Option<String>,
    /// RequestId of the last ECS write call, for Alibaba Cloud support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_id: Option<String>,
    /// Keyed HMAC of what was applied (instance and password), so that an unchanged password is not
    /// sent again. `hmac-sha256:<key id>:<mac>`: never the password, never a plain hash of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_password_fingerprint: Option<String>,
    /// `<regionId>/<instanceId>` the password was applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_instance: Option<String>,
    /// Proof, keyed by the controller, that this object reached `appliedInstance` (or
    /// `describedInstance`) with its own credentials: its claim on the instance. Only the
    /// controller can make it; a copy on another object proves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_proof: Option<String>,
    /// The password Secret as it was when its password was applied: an unchanged Secret needs no
    /// ECS call, even when the fingerprint key was lost and the fingerprint must be made anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_secret: Option<AppliedSecret>,
    /// The instance's `StartTime` seen right after the apply: a later change means a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_at_apply: Option<String>,
    /// A status other than `Running` (Stopping, Starting, Stopped) was seen after the apply: the
    /// next `Running` is a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left_running_after_apply: bool,
    /// When a restart after the apply was seen: the password is in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_observed_time: Option<String>,
    /// The controller's intent to call RebootInstance (`rebootPolicy: Automatic`), written before
    /// the call with the object's resourceVersion as precondition. Never followed by a second call
    /// for the same applied password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested_time: Option<String>,
    /// The `appliedPasswordFingerprint` that reboot was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested_for: Option<String>,
    /// The last `ecsvnc.io/reconcile-requested-at` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// Hash of the inputs (object uid and generation, Secret versions, force token) ECS refused
    /// with a stall: no call for the same inputs, across restarts. Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_inputs: Option<String>,
    /// When ECS was last asked about a stall that something outside Kubernetes can fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_checked_time: Option<String>,
    /// With `rotationInterval`: when the next password will be generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,
    /// With `rebootWindows`, while a reboot waits for one: when the next window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_reboot_window: Option<String>,
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
}

/// The CRD as YAML, as `ecs-vnc-controller crd` prints it and `crds/vncpassword.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&VncPassword::crd())
}
