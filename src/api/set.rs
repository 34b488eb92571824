//! The `VncPasswordSet` custom resource (`ecsvnc.io/v1alpha1`): one VncPassword per ECS instance
//! of a node pool (Kubernetes Nodes by label) or of a tag.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CredentialsSource, PasswordGeneration, RebootPolicy, RebootWindow};

/// Label on every child VncPassword: the name of its set.
pub const LABEL_SET: &str = "ecsvnc.io/set";
/// On a child VncPassword whose instance left the set's selection: since when (RFC 3339). The
/// child is deleted once `spec.removalGracePeriod` has passed, unless the instance comes back.
pub const ANNOTATION_UNSELECTED_SINCE: &str = "ecsvnc.io/unselected-since";
/// Field manager of the children's server-side applies.
pub const SET_FIELD_MANAGER: &str = "ecs-vnc-controller/set";

/// Condition reasons of a VncPasswordSet. Serialized as CamelCase words tooling matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetReason {
    /// Every selected instance's VncPassword is Ready.
    AllReady,
    /// Children are being created, updated or removed, or are still working.
    Progressing,
    /// The selector matches no Node or no instance.
    NothingSelected,
    /// `instanceTags` match 1,000 instances or more: DescribeInstances lists at most 1,000
    /// instances for tag filters.
    SelectionTooLarge,
    /// `selector.nodes` while the controller may not list Nodes (namespaced installation).
    NodesNotWatched,
    /// The instances could not be listed with the template's credentials (the message says why:
    /// no credentials, not allowed, refused by ECS).
    SelectorFailed,
    /// ECS or STS could not be reached to list the instances, or the Node watch has not listed
    /// the Nodes yet; retried.
    SelectorUnavailable,
    /// Some children are Stalled and none is still working: a person must act on them.
    ChildrenStalled,
    /// A spec field cannot be used (the message says which).
    InvalidSpec,
}

impl SetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllReady => "AllReady",
            Self::Progressing => "Progressing",
            Self::NothingSelected => "NothingSelected",
            Self::SelectionTooLarge => "SelectionTooLarge",
            Self::NodesNotWatched => "NodesNotWatched",
            Self::SelectorFailed => "SelectorFailed",
            Self::SelectorUnavailable => "SelectorUnavailable",
            Self::ChildrenStalled => "ChildrenStalled",
            Self::InvalidSpec => "InvalidSpec",
        }
    }
}

impl std::fmt::Display for SetReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gives every ECS instance of a node pool (Nodes by label) or of a tag its own VncPassword, with
/// a generated password: one child VncPassword per selected instance.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ecsvnc.io",
    version = "v1alpha1",
    kind = "VncPasswordSet",
    plural = "vncpasswordsets",
    shortname = "vncpwset",
    category = "ecs",
    namespaced,
    status = "VncPasswordSetStatus",
    doc = "One VncPassword, with a generated password, for every ECS instance of a node pool or a tag.",
    validation = Rule::new("size(self.metadata.name) <= 63").message("a VncPasswordSet's name has at most 63 characters (it is the value of its children's label ecsvnc.io/set)"),
    printcolumn = r#"{"name":"Selected","type":"integer","jsonPath":".status.selected"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Reboot-Required","type":"integer","jsonPath":".status.rebootRequired"}"#,
    printcolumn = r#"{"name":"Stalled","type":"integer","priority":1,"jsonPath":".status.stalled"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.removalGracePeriod) >= duration('0s') && duration(self.removalGracePeriod) <= duration('720h')").message("removalGracePeriod must be between 0s and 720h"))]
#[x_kube(validation = Rule::new("duration(self.resyncInterval) >= duration('1m') && duration(self.resyncInterval) <= duration('24h')").message("resyncInterval must be between 1m and 24h"))]
pub struct VncPasswordSetSpec {
    /// Region of the instances, e.g. `cn-hangzhou`. Nodes whose `spec.providerID` names another
    /// region are not selected.
    #[schemars(regex(pattern = r"^[a-z]{2,}(-[a-z0-9]+){1,4}$"), length(max = 64))]
    pub region_id: String,

    /// Which instances: exactly one of `nodes` and `instanceTags`.
    pub selector: SetSelector,

    /// What each child VncPassword gets (its `regionId`, `instanceId` and `passwordSecretRef` come
    /// from the set: the Secret is named like the child, key `password`).
    pub template: VncPasswordTemplate,

    /// How long a child whose instance left the selection (Node deleted, tag removed, instance
    /// released) is kept before it is deleted, a Go duration from `0s` (at once) to `720h`
    /// (default `10m`): an instance that comes back within it keeps its password.
    #[serde(default = "default_removal_grace_period")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub removal_grace_period: String,

    /// With `instanceTags`: how often ECS is asked again which instances carry the tags, a Go
    /// duration from `1m` to `24h` (default `5m`). A spec change asks at once.
    #[serde(default = "default_resync_interval")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    pub resync_interval: String,
}

fn default_removal_grace_period() -> String {
    "10m".to_string()
}

fn default_resync_interval() -> String {
    "5m".to_string()
}

/// Exactly one of `nodes` and `instanceTags`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.nodes) != has(self.instanceTags)").message("set exactly one of selector.nodes and selector.instanceTags"))]
pub struct SetSelector {
    /// Kubernetes Nodes with these labels, e.g. `matchLabels: {alibabacloud.com/nodepool-id:
    /// np-4a5b}`; each Node's instance is read from its `spec.providerID`
    /// (`<region>.<instance-id>`, as ACK sets it). Needs the controller's cluster-wide read of
    /// Nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,

    /// ECS instances of the region carrying all these tags (key: value; an empty value matches
    /// any value of the key), 1 to 20 tags, found with DescribeInstances every `resyncInterval`.
    /// With the controller's default credentials, only instances also tagged
    /// `ecsvnc.io/namespace: <this namespace>` are selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minProperties" = 1, "maxProperties" = 20))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) >= 1 && size(k) <= 128)").message("instanceTags keys have 1 to 128 characters"))]
    #[x_kube(validation = Rule::new("self.all(k, size(self[k]) <= 128)").message("instanceTags values have at most 128 characters"))]
    pub instance_tags: Option<BTreeMap<String, String>>,
}

/// The part of a VncPassword spec that every child of a set shares.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.rebootWindows) || size(self.rebootWindows) == 0 || (has(self.rebootPolicy) && self.rebootPolicy == 'Automatic')").message("template.rebootWindows needs template.rebootPolicy: Automatic"))]
pub struct VncPasswordTemplate {
    /// Each child generates (and rotates) its instance's password in its own Secret, as
    /// `passwordGeneration` of a VncPassword. `secretDeletionPolicy: Delete` deletes a child's
    /// Secret with the child; with `Retain` (default) it stays when the child is removed, unless
    /// ECS no longer knows the instance (released: its password is live nowhere).
    pub password_generation: PasswordGeneration,

    /// Credentials for the children and for listing tagged instances, as `credentials` of a
    /// VncPassword. Without it, the controller's own credentials, where its operator allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSource>,

    /// As `rebootPolicy` of a VncPassword (default `Manual`).
    #[serde(default)]
    pub reboot_policy: RebootPolicy,

    /// As `rebootWindows` of a VncPassword (at most 10, only with `Automatic`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub reboot_windows: Vec<RebootWindow>,
}

/// What the set last observed: counts over its children, never a list of instances.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VncPasswordSetStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Instances the selector matches now.
    #[serde(default)]
    pub selected: i64,
    /// Selected instances whose VncPassword is Ready.
    #[serde(default)]
    pub ready: i64,
    /// Selected instances whose VncPassword waits for a restart (`RebootRequired=True`).
    #[serde(default)]
    pub reboot_required: i64,
    /// Selected instances whose VncPassword is Stalled (including one that lost its instance to a
    /// VncPassword written by hand: `InstanceClaimed`).
    #[serde(default)]
    pub stalled: i64,
    /// Children whose instance left the selection, kept until `removalGracePeriod` has passed.
    #[serde(default)]
    pub pending_removal: i64,
    /// Selected instances the set leaves to a VncPassword of its namespace written by hand (which
    /// then sets their password), at most 100 (all are counted in `stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub left_to_others: Vec<LeftInstance>,
    /// With `instanceTags`: when ECS was last asked for the tagged instances (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_selection_time: Option<String>,
    /// `Ready`, `Reconciling` and `Stalled`, as kstatus reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A selected instance and the VncPassword written by hand that names it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeftInstance {
    pub instance_id: String,
    pub vnc_password: String,
}

impl VncPasswordSetStatus {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The set CRD as YAML, as `ecs-vnc-controller crd --kind VncPasswordSet` prints it and
/// `crds/vncpasswordset.yaml` holds it.
pub fn set_crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&VncPasswordSet::crd())
}
