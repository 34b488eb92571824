//! The `VncPassword` custom resource (`ecsvnc.io/v1alpha1`): spec, status, condition vocabulary.
//!
//! The doc comments on the spec fields become the CRD's OpenAPI descriptions (`kubectl explain`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "ecsvnc.io";
/// Field manager for every write the controller makes.
pub const FIELD_MANAGER: &str = "ecs-vnc-controller";
/// Set to a new value to re-apply the password once even when it is unchanged.
pub const ANNOTATION_RECONCILE_REQUESTED_AT: &str = "ecsvnc.io/reconcile-requested-at";
/// `"true"` stops all ECS calls for the object until removed.
pub const ANNOTATION_PAUSED: &str = "ecsvnc.io/paused";

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const APPLIED: &str = "Applied";
    pub const REBOOT_REQUIRED: &str = "RebootRequired";
    pub const STALLED: &str = "Stalled";
    pub const RECONCILING: &str = "Reconciling";
}

/// Condition reasons (CamelCase, stable: alerts and tooling match on them).
pub mod reason {
    pub const APPLIED: &str = "Applied";
    pub const REBOOT_REQUIRED: &str = "RebootRequired";
    pub const REBOOT_REQUESTED: &str = "RebootRequested";
    pub const RESTARTED: &str = "Restarted";
    pub const IO_OPTIMIZED: &str = "IoOptimized";
    pub const PAUSED: &str = "Paused";
    pub const WAITING_FOR_RESTART: &str = "WaitingForRestart";
    pub const INCORRECT_INSTANCE_STATUS: &str = "IncorrectInstanceStatus";
    pub const THROTTLED: &str = "Throttled";
    pub const ECS_UNAVAILABLE: &str = "EcsUnavailable";
    pub const AS_EXPECTED: &str = "AsExpected";
    // Stalled reasons.
    pub const INVALID_PASSWORD: &str = "InvalidPassword";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    pub const INSTANCE_NOT_FOUND: &str = "InstanceNotFound";
    pub const REGION_NOT_FOUND: &str = "RegionNotFound";
    pub const CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
    pub const CREDENTIALS_NOT_ALLOWED: &str = "CredentialsNotAllowed";
    pub const AUTH_FAILED: &str = "AuthFailed";
    /// Any other refusal ECS will repeat until something changes (the code is in the message).
    pub const ECS_REJECTED: &str = "EcsRejected";
}

/// Makes an ECS instance's VNC password equal to the one in a Secret of the same namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
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

    /// What to do when the instance is not I/O-optimized and so needs a restart for the new password
    /// to take effect. `Manual` (default): report `RebootRequired` until someone restarts it.
    /// `Automatic`: the controller calls RebootInstance once (only while the instance is Running).
    #[serde(default)]
    pub reboot_policy: RebootPolicy,
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
    /// Whether the instance is I/O-optimized (the password is then live at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_optimized: Option<bool>,
    /// The instance's status at the last look (`Running`, `Stopped`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_status: Option<String>,
    /// When ECS last accepted the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<String>,
    /// RequestId of the last ECS write call, for Alibaba Cloud support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_id: Option<String>,
    /// Keyed HMAC of what was applied (instance and password), so that an unchanged password is not
    /// sent again. Never the password, never a plain hash of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_password_fingerprint: Option<String>,
    /// The instance's `StartTime` seen right after the apply: a later change means a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_at_apply: Option<String>,
    /// When the controller called RebootInstance for the current password (`rebootPolicy: Automatic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested_time: Option<String>,
    /// The last `ecsvnc.io/reconcile-requested-at` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
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
