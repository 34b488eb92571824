//! What the VncPassword cache (the reflector store the reconciles read) keeps of each object.
//!
//! The store holds every watched VncPassword for as long as it exists, so what it keeps is paid
//! per object: a [`CachedVncPassword`], not the `VncPassword` itself. Its metadata keeps what a
//! reader of the cache reads (not managedFields, labels, nor others' annotations). Its spec and its
//! status are kept packed: their JSON, LZ4-compressed with a preset dictionary of typical ones
//! (a status in about 0.4 KB instead of 2.4 KB as a `VncPasswordStatus`, a spec in about 0.1 KB
//! instead of 0.5 KB), the status beside a [`Summary`] of what the gauges and the sets read of
//! every object. A reconcile unpacks them ([`CachedVncPassword::to_full`]): lossless, so every
//! status write still starts from the whole status as the API server last gave it.
//!
//! Hand-written packing rather than a cache crate: what is kept per object is the point, and
//! `lz4_flex` does the compression.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::Deserialize;

use crate::api::{VncPassword, VncPasswordSpec, VncPasswordStatus, condition};

/// The prefix of every annotation the controller reads on a VncPassword: `paused`,
/// `force-apply-requested-at` (and the deprecated `reconcile-requested-at`),
/// `rotate-requested-at`, and a set's `unselected-since` on its children.
const READ_ANNOTATIONS: &str = "ecsvnc.io/";

/// VncPasswords a page when the watch lists them: a page's JSON (about 3.4 KB an object with its
/// status) is held whole while it is parsed, so a page of 100 peaks at about 0.35 MB where the
/// watcher's default of 500 peaked at 1.7 MB, for one more LIST request per 100 objects.
pub const LIST_PAGE: u32 = 100;

/// The LZ4 dictionary the statuses are packed with: typical statuses (the keys, the conditions'
/// usual messages), so a status is mostly references into it. Changing it is safe: it is never
/// stored outside this process.
const DICTIONARY: &[u8] = include_bytes!("status_dictionary.json");

/// The dictionary the specs are packed with: a typical spec.
const SPEC_DICTIONARY: &[u8] = br#"{"credentials":{"secretRef":{"name":"alibaba-credentials"},"serviceAccountRef":{"name":""}},"passwordGeneration":{"rotationInterval":"720h","secretDeletionPolicy":"Delete"},"rebootWindows":[{"schedule":"0 3 * * *","duration":"1h","timeZone":""}],"instanceId":"i-","passwordSecretRef":{"key":"password","name":"-vnc"},"rebootPolicy":"Manual","regionId":"cn-hangzhou"}"#;

/// A value kept as its JSON, LZ4-compressed with a dictionary.
#[derive(Clone, Debug, PartialEq)]
struct Packed {
    bytes: Box<[u8]>,
    len: u32,
}

impl Packed {
    fn pack(value: &impl serde::Serialize, dictionary: &[u8]) -> Self {
        let json = serde_json::to_vec(value).expect("serializes");
        Self {
            bytes: lz4_flex::block::compress_with_dict(&json, dictionary).into_boxed_slice(),
            // An object is bounded by the API server's request size (3 MiB by default).
            len: u32::try_from(json.len()).unwrap_or(u32::MAX),
        }
    }

    fn unpack<T: serde::de::DeserializeOwned>(&self, dictionary: &[u8]) -> T {
        let json =
            lz4_flex::block::decompress_with_dict(&self.bytes, self.len as usize, dictionary)
                .expect("packed by this process");
        serde_json::from_slice(&json).expect("serialized by this process")
    }
}

/// A VncPassword as the cache keeps it. Read from the watch like a `VncPassword` (the same
/// group, version and kind), converted as it is parsed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(from = "VncPassword")]
pub struct CachedVncPassword {
    pub metadata: ObjectMeta,
    spec: Packed,
    status: Option<PackedStatus>,
}

/// A status, packed. `legacy` (read from an earlier version's flat fields) is kept beside it, as
/// it is never serialized.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedStatus {
    packed: Packed,
    legacy: bool,
    summary: Summary,
}

/// What is read of every cached object's status without unpacking it: by the gauges
/// (`ecs_vnc_vncpasswords{ready_reason}`, `ecs_vnc_pending_reboots`) and by a set's pass over its
/// children.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub observed_generation: Option<i64>,
    /// The `Ready` condition's reason, when there is one.
    pub ready_reason: Option<Box<str>>,
    pub ready: bool,
    pub reboot_required: bool,
    /// The `Stalled` condition's reason while it is `True`.
    pub stalled_reason: Option<Box<str>>,
}

impl Summary {
    fn of(status: &VncPasswordStatus) -> Self {
        let stalled = status.condition(condition::STALLED);
        Self {
            observed_generation: status.observed_generation,
            ready_reason: status
                .condition(condition::READY)
                .map(|c| c.reason.as_str().into()),
            ready: status.is_true(condition::READY),
            reboot_required: status.is_true(condition::REBOOT_REQUIRED),
            stalled_reason: stalled
                .filter(|c| c.status == "True")
                .map(|c| c.reason.as_str().into()),
        }
    }
}

impl PackedStatus {
    pub fn pack(status: &VncPasswordStatus) -> Self {
        Self {
            packed: Packed::pack(status, DICTIONARY),
            legacy: status.legacy,
            summary: Summary::of(status),
        }
    }

    pub fn unpack(&self) -> VncPasswordStatus {
        let mut status: VncPasswordStatus = self.packed.unpack(DICTIONARY);
        status.legacy = self.legacy;
        status
    }

    /// Bytes held on the heap for the packed status itself.
    pub fn packed_len(&self) -> usize {
        self.packed.bytes.len()
    }
}

impl From<VncPassword> for CachedVncPassword {
    fn from(obj: VncPassword) -> Self {
        let VncPassword {
            mut metadata,
            spec,
            status,
        } = obj;
        slim_metadata(&mut metadata);
        Self {
            metadata,
            spec: Packed::pack(&spec, SPEC_DICTIONARY),
            status: status.as_ref().map(PackedStatus::pack),
        }
    }
}

impl CachedVncPassword {
    /// The whole object again, its status unpacked: what a reconcile works on.
    pub fn to_full(&self) -> VncPassword {
        VncPassword {
            metadata: self.metadata.clone(),
            spec: self.spec(),
            status: self.status(),
        }
    }

    /// The spec, unpacked.
    pub fn spec(&self) -> VncPasswordSpec {
        self.spec.unpack(SPEC_DICTIONARY)
    }

    /// The status, unpacked.
    pub fn status(&self) -> Option<VncPasswordStatus> {
        self.status.as_ref().map(PackedStatus::unpack)
    }

    /// What the gauges and the sets read of the status (all empty without one).
    pub fn summary(&self) -> Cow<'_, Summary> {
        match &self.status {
            Some(packed) => Cow::Borrowed(&packed.summary),
            None => Cow::Owned(Summary::default()),
        }
    }

    pub fn packed_status(&self) -> Option<&PackedStatus> {
        self.status.as_ref()
    }
}

/// A VncPassword whole, from the cache's form or as it is.
pub trait AsFull: Resource {
    fn as_full(&self) -> Cow<'_, VncPassword>;
}

impl AsFull for VncPassword {
    fn as_full(&self) -> Cow<'_, VncPassword> {
        Cow::Borrowed(self)
    }
}

impl AsFull for CachedVncPassword {
    fn as_full(&self) -> Cow<'_, VncPassword> {
        Cow::Owned(self.to_full())
    }
}

impl Resource for CachedVncPassword {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        VncPassword::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        VncPassword::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        VncPassword::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        VncPassword::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Keeps of the metadata what the controller reads from the cache: not its managedFields (often
/// most of its size), its labels (the controller selects no VncPassword by label), nor annotations
/// other than its own (`ecsvnc.io/…`: kubectl's last-applied copy, GitOps tools' tracking
/// annotations).
fn slim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(READ_ANNOTATIONS));
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    fn object(status: serde_json::Value) -> VncPassword {
        serde_json::from_value(json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {
                "name": "vm", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "x"},
                "annotations": {
                    "ecsvnc.io/paused": "true",
                    "ecsvnc.io/unselected-since": "2026-01-01T00:00:00Z",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "argocd.argoproj.io/tracking-id": "app:ecsvnc.io/VncPassword:ns/vm"
                },
                "ownerReferences": [{"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPasswordSet",
                                     "name": "set", "uid": "s1", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"regionId": "cn-hangzhou", "instanceId": "i-1",
                     "passwordSecretRef": {"name": "vm-vnc"}},
            "status": status
        }))
        .unwrap()
    }

    /// A settled status as the controller writes it (a non-I/O-optimized instance, a reboot
    /// requested), with fields outside the dictionary.
    fn settled() -> serde_json::Value {
        json!({
            "observedGeneration": 2,
            "applied": {"accessProof": "hmac-sha256:baa5fe1f:48NCVF", "ecsTime": "2026-12-06T06:42:13Z",
                        "fingerprint": "hmac-sha256:baa5fe1f:Rzkcfd8I", "instance": "cn-hangzhou/i-1",
                        "requestId": "602844D6-C729", "time": "2026-12-06T06:42:13Z",
                        "secret": {"key": "password", "name": "vm-vnc", "resourceVersion": "229", "uid": "c1"},
                        "forceApplyToken": "2026-12-01T00:00:00Z"},
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RebootRequested", "message": "ünïcode ✓",
                 "lastTransitionTime": "2026-12-06T06:42:13Z", "observedGeneration": 2},
                {"type": "RebootRequired", "status": "True", "reason": "RebootRequested", "message": "m",
                 "lastTransitionTime": "2026-12-06T06:42:13Z", "observedGeneration": 2},
                {"type": "Stalled", "status": "True", "reason": "RebootNotObserved", "message": "",
                 "lastTransitionTime": "2026-12-06T06:42:14Z"}
            ],
            "instance": {"ioOptimized": false, "key": "cn-hangzhou/i-1", "status": "Running",
                         "startTimeAtApply": "2026-12-06T05:41:00Z", "leftRunningAfterApply": true},
            "reboot": {"requestedTime": "2026-12-06T06:43:00Z", "requestedFor": "2026-12-06T06:43:00Z",
                       "requestId": "r-1"},
            "rotation": {"nextTime": "2027-01-01T00:00:00Z"},
            "stall": {"inputs": "x", "checkedTime": "2026-12-06T06:42:14Z"}
        })
    }

    /// Only the controller's own annotations stay, managedFields and labels go; the spec, the
    /// owner references and the status come back unchanged.
    #[test]
    fn keeps_what_the_controller_reads_and_the_status_whole() {
        let full = object(settled());
        let cached = CachedVncPassword::from(full.clone());
        assert_eq!(cached.metadata.managed_fields, None);
        assert_eq!(cached.metadata.labels, None);
        let kept: Vec<&str> = cached.annotations().keys().map(String::as_str).collect();
        assert_eq!(kept, ["ecsvnc.io/paused", "ecsvnc.io/unselected-since"]);
        let back = cached.to_full();
        assert_eq!(back.spec, full.spec);
        assert_eq!(back.status, full.status);
        assert_eq!(
            back.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(
            (
                back.uid(),
                back.resource_version(),
                back.metadata.generation
            ),
            (
                full.uid(),
                full.resource_version(),
                full.metadata.generation
            )
        );
        assert_eq!(
            back.metadata.creation_timestamp,
            full.metadata.creation_timestamp
        );
        assert!(cached.packed_status().unwrap().packed_len() < 600);
        assert!(cached.spec.bytes.len() < 100);
    }

    /// Every part of a spec comes back from its packed form.
    #[test]
    fn a_full_spec_comes_back_whole() {
        let mut full = object(settled());
        full.spec = serde_json::from_value(json!({
            "regionId": "ap-southeast-1", "instanceId": "i-t4n0example",
            "passwordSecretRef": {"name": "web-vnc", "key": "vnc"},
            "passwordGeneration": {"rotationInterval": "720h", "secretDeletionPolicy": "Retain"},
            "credentials": {"secretRef": {"name": "creds", "accessKeyIdKey": "id",
                                          "accessKeySecretKey": "secret", "securityTokenKey": "token"}},
            "rebootPolicy": "Automatic",
            "rebootWindows": [{"schedule": "0 3 * * 6", "duration": "2h", "timeZone": "Asia/Shanghai"}]
        }))
        .unwrap();
        let cached = CachedVncPassword::from(full.clone());
        assert_eq!(cached.spec(), full.spec);
        let (back, slim) = (cached.to_full(), full.tap_slim());
        assert_eq!(
            (back.metadata, back.spec, back.status),
            (slim.metadata, slim.spec, slim.status)
        );
    }

    /// Parsed straight from the API server's JSON, as the watch does.
    #[test]
    fn deserializes_as_a_vncpassword_does() {
        let text = serde_json::to_string(&object(settled())).unwrap();
        let cached: CachedVncPassword = serde_json::from_str(&text).unwrap();
        assert_eq!(cached, CachedVncPassword::from(object(settled())));
    }

    #[test]
    fn the_summary_is_what_the_gauges_and_sets_read() {
        let cached = CachedVncPassword::from(object(settled()));
        let summary = cached.summary();
        assert_eq!(summary.observed_generation, Some(2));
        assert_eq!(summary.ready_reason.as_deref(), Some("RebootRequested"));
        assert!(!summary.ready);
        assert!(summary.reboot_required);
        assert_eq!(summary.stalled_reason.as_deref(), Some("RebootNotObserved"));
        let none = CachedVncPassword::from(object(serde_json::Value::Null));
        assert_eq!(*none.summary(), Summary::default());
        assert_eq!(none.status(), None);
    }

    /// A status in an earlier version's flat shape is read as the grouped one and still says it
    /// was legacy (its next write replaces it) once unpacked.
    #[test]
    fn a_legacy_status_stays_legacy() {
        let full = object(json!({"lastAppliedTime": "2026-01-01T00:00:00Z", "ioOptimized": true}));
        assert!(full.status.as_ref().unwrap().legacy);
        let back = CachedVncPassword::from(full.clone()).to_full();
        assert_eq!(back.status, full.status);
    }

    trait TapSlim {
        fn tap_slim(self) -> Self;
    }

    impl TapSlim for VncPassword {
        fn tap_slim(mut self) -> Self {
            slim_metadata(&mut self.metadata);
            self
        }
    }

    /// No annotation of the controller's: none kept at all.
    #[test]
    fn no_annotations_left_is_none() {
        let mut meta = ObjectMeta {
            annotations: Some(
                [(
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".into(),
                )]
                .into(),
            ),
            ..Default::default()
        };
        slim_metadata(&mut meta);
        assert_eq!(meta.annotations, None);
    }
}
