//! What the VncPassword cache (the reflector store the reconciles read) keeps of each object.
//!
//! The store holds every watched VncPassword for as long as it exists, so what it keeps is paid
//! per object. The object stays a `VncPassword` (kube-runtime's `Controller` reconciles the store's
//! own type); [`slim_vncpassword`] drops from it what no reader of the cache reads. (The store
//! keeps a clone of each object it is given, so vectors hold no spare capacity there anyway.)

use crate::api::VncPassword;

/// The prefix of every annotation the controller reads on a VncPassword: `paused`,
/// `force-apply-requested-at` (and the deprecated `reconcile-requested-at`),
/// `rotate-requested-at`, and a set's `unselected-since` on its children.
const READ_ANNOTATIONS: &str = "ecsvnc.io/";

/// Keeps of `obj` what the controller reads from the cache: not its managedFields (often most of
/// its size), its labels (the controller selects no VncPassword by label), nor annotations other
/// than its own (`ecsvnc.io/…`: kubectl's last-applied copy, GitOps tools' tracking annotations).
/// The spec and the status are kept whole: a status write carries the whole status, starting from
/// the cached one.
pub fn slim_vncpassword(obj: &mut VncPassword) {
    let meta = &mut obj.metadata;
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

    /// Only the controller's own annotations stay, managedFields and labels go, and the rest of
    /// the object (spec, status, owner references) is unchanged.
    #[test]
    fn keeps_what_the_controller_reads() {
        let full: VncPassword = serde_json::from_value(json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {
                "name": "vm", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "generation": 2,
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
            "status": {"observedGeneration": 2, "conditions": [
                {"type": "Ready", "status": "True", "reason": "Applied", "message": "m",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]}
        }))
        .unwrap();
        let mut slim = full.clone();
        slim_vncpassword(&mut slim);
        assert_eq!(slim.metadata.managed_fields, None);
        assert_eq!(slim.metadata.labels, None);
        let kept: Vec<&str> = slim.annotations().keys().map(String::as_str).collect();
        assert_eq!(kept, ["ecsvnc.io/paused", "ecsvnc.io/unselected-since"]);
        assert_eq!(slim.spec, full.spec);
        assert_eq!(slim.status, full.status);
        assert_eq!(
            slim.metadata.owner_references,
            full.metadata.owner_references
        );
        assert_eq!(
            (slim.metadata.uid, slim.metadata.resource_version),
            (full.metadata.uid, full.metadata.resource_version)
        );
    }

    /// No annotation of the controller's: none kept at all.
    #[test]
    fn no_annotations_left_is_none() {
        let mut obj: VncPassword = serde_json::from_value(json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"name": "vm", "namespace": "ns",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"regionId": "cn-hangzhou", "instanceId": "i-1",
                     "passwordSecretRef": {"name": "vm-vnc"}}
        }))
        .unwrap();
        slim_vncpassword(&mut obj);
        assert_eq!(obj.metadata.annotations, None);
    }
}
