//! Look-ups over every watched VncPassword without scanning them: which objects reference a Secret
//! (to map a Secret's watch event to reconciles) and which object owns an instance (claims).
//!
//! Kept up to date from the VncPassword watch's own events, beside the reflector store, so that a
//! Secret event or a reconcile costs a hash look-up instead of a pass over every object (at 10,000
//! objects, a pass per Secret event in the initial wave is 10^8 steps). A relist (`Init` …
//! `InitDone`) drops the objects it no longer returns. Lean on purpose (about 0.3 KB per object):
//! keys are `namespace/name` and `region/instance` strings, objects are known by uid, and an
//! instance's owner is ranked only when another object names the same instance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::api::VncPassword;

/// Who wins a claim on an instance: the oldest, then the first by namespace and name.
type Rank = (Option<jiff::Timestamp>, String, String);

struct Entry {
    namespace: String,
    name: String,
    /// What it references ([`secret_key`], [`service_account_key`]): the password Secret, the
    /// credentials Secret or ServiceAccount.
    refs: Vec<String>,
    /// `region/instance`, while the object is not being deleted.
    instance: Option<String>,
    created: Option<jiff::Timestamp>,
}

impl Entry {
    fn rank(&self) -> Rank {
        (self.created, self.namespace.clone(), self.name.clone())
    }
}

#[derive(Default)]
struct Inner {
    by_uid: HashMap<Arc<str>, Entry>,
    by_ref: HashMap<String, Vec<Arc<str>>>,
    by_instance: HashMap<String, Vec<Arc<str>>>,
    /// uids seen since the last `Init`, while a relist is in progress.
    relisted: Option<HashSet<Arc<str>>>,
}

#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

fn key(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

fn secret_key(namespace: &str, name: &str) -> String {
    format!("secret:{namespace}/{name}")
}

fn service_account_key(namespace: &str, name: &str) -> String {
    format!("serviceaccount:{namespace}/{name}")
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event of the VncPassword watch.
    pub fn apply(&self, event: &Event<VncPassword>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Apply(o) => inner.upsert(o),
            Event::Delete(o) => {
                if let Some(uid) = o.uid() {
                    inner.remove(&uid);
                }
            }
            Event::Init => inner.relisted = Some(HashSet::new()),
            Event::InitApply(o) => {
                if let (Some(seen), Some(uid)) = (inner.relisted.as_mut(), o.uid()) {
                    seen.insert(uid.into());
                }
                inner.upsert(o);
            }
            Event::InitDone => {
                if let Some(seen) = inner.relisted.take() {
                    let gone: Vec<Arc<str>> = inner
                        .by_uid
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        inner.remove(&uid);
                    }
                }
            }
        }
    }

    /// VncPasswords in `namespace` that reference the Secret `name` (password or credentials).
    pub fn referencing(&self, namespace: &str, name: &str) -> Vec<ObjectRef<VncPassword>> {
        self.by_ref(&secret_key(namespace, name))
    }

    /// VncPasswords in `namespace` whose credentials are the ServiceAccount `name`.
    pub fn referencing_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<ObjectRef<VncPassword>> {
        self.by_ref(&service_account_key(namespace, name))
    }

    fn by_ref(&self, k: &str) -> Vec<ObjectRef<VncPassword>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .by_ref
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|uid| inner.by_uid.get(uid))
            .map(|e| ObjectRef::new(&e.name).within(&e.namespace))
            .collect()
    }

    /// The VncPassword that owns `obj`'s instance when another one does: of all live VncPasswords
    /// naming the same region and instance, the oldest (then the first by namespace and name) wins,
    /// so that two objects never take turns setting different passwords on one instance.
    pub fn claimed_by(&self, obj: &VncPassword) -> Option<(String, String)> {
        let uid = obj.uid().unwrap_or_default();
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let others = inner
            .by_instance
            .get(&key(&obj.spec.region_id, &obj.spec.instance_id))?;
        let mine = rank(obj);
        others
            .iter()
            .filter(|u| ***u != *uid)
            .filter_map(|u| inner.by_uid.get(u))
            .map(Entry::rank)
            .filter(|r| *r < mine)
            .min()
            .map(|(_, ns, name)| (ns, name))
    }

    /// Objects indexed, for tests of bounded memory.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_uid
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn rank(o: &VncPassword) -> Rank {
    (
        o.creation_timestamp().map(|t| t.0),
        o.namespace().unwrap_or_default(),
        o.name_any(),
    )
}

fn unlink(map: &mut HashMap<String, Vec<Arc<str>>>, k: &str, uid: &str) {
    if let Some(uids) = map.get_mut(k) {
        uids.retain(|u| **u != *uid);
        if uids.is_empty() {
            map.remove(k);
        }
    }
}

impl Inner {
    fn upsert(&mut self, o: &VncPassword) {
        let Some(uid) = o.uid() else { return };
        self.remove(&uid);
        let uid: Arc<str> = uid.into();
        let namespace = o.namespace().unwrap_or_default();
        let mut refs = vec![secret_key(&namespace, &o.spec.password_secret_ref.name)];
        if let Some(c) = &o.spec.credentials_secret_ref {
            refs.push(secret_key(&namespace, &c.name));
        }
        if let Some(sa) = &o.spec.credentials_service_account_ref {
            refs.push(service_account_key(&namespace, &sa.name));
        }
        refs.dedup();
        for r in &refs {
            self.by_ref.entry(r.clone()).or_default().push(uid.clone());
        }
        let instance = o
            .metadata
            .deletion_timestamp
            .is_none()
            .then(|| key(&o.spec.region_id, &o.spec.instance_id));
        if let Some(i) = &instance {
            self.by_instance
                .entry(i.clone())
                .or_default()
                .push(uid.clone());
        }
        let entry = Entry {
            namespace,
            name: o.name_any(),
            refs,
            instance,
            created: o.creation_timestamp().map(|t| t.0),
        };
        self.by_uid.insert(uid, entry);
    }

    fn remove(&mut self, uid: &str) {
        let Some(entry) = self.by_uid.remove(uid) else {
            return;
        };
        for r in &entry.refs {
            unlink(&mut self.by_ref, r, uid);
        }
        if let Some(i) = &entry.instance {
            unlink(&mut self.by_instance, i, uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(
        ns: &str,
        name: &str,
        uid: &str,
        created: &str,
        instance: &str,
        secret: &str,
    ) -> VncPassword {
        serde_json::from_value(json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"namespace": ns, "name": name, "uid": uid, "creationTimestamp": created},
            "spec": {"regionId": "cn-hangzhou", "instanceId": instance, "passwordSecretRef": {"name": secret}}
        }))
        .unwrap()
    }

    fn names(refs: Vec<ObjectRef<VncPassword>>) -> Vec<String> {
        let mut v: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        v.sort();
        v
    }

    #[test]
    fn secrets_map_to_the_objects_of_their_namespace_only() {
        let i = Index::new();
        i.apply(&Event::Apply(obj(
            "a",
            "x",
            "1",
            "2026-01-01T00:00:00Z",
            "i-1",
            "s",
        )));
        i.apply(&Event::Apply(obj(
            "a",
            "y",
            "2",
            "2026-01-01T00:00:00Z",
            "i-2",
            "s",
        )));
        i.apply(&Event::Apply(obj(
            "b",
            "z",
            "3",
            "2026-01-01T00:00:00Z",
            "i-3",
            "s",
        )));
        assert_eq!(names(i.referencing("a", "s")), ["x", "y"]);
        // A changed reference moves the object.
        i.apply(&Event::Apply(obj(
            "a",
            "y",
            "2",
            "2026-01-01T00:00:00Z",
            "i-2",
            "t",
        )));
        assert_eq!(names(i.referencing("a", "s")), ["x"]);
        assert_eq!(names(i.referencing("a", "t")), ["y"]);
        i.apply(&Event::Delete(obj(
            "a",
            "x",
            "1",
            "2026-01-01T00:00:00Z",
            "i-1",
            "s",
        )));
        assert!(i.referencing("a", "s").is_empty());
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn the_oldest_object_owns_an_instance() {
        let i = Index::new();
        let old = obj("b", "old", "1", "2026-01-01T00:00:00Z", "i-1", "s");
        let new = obj("a", "new", "2", "2026-02-01T00:00:00Z", "i-1", "s");
        // Created in the same second: the namespace decides.
        let tie = obj("c", "tie", "3", "2026-01-01T00:00:00Z", "i-1", "s");
        for o in [&old, &new, &tie] {
            i.apply(&Event::Apply(o.clone()));
        }
        assert_eq!(i.claimed_by(&old), None);
        assert_eq!(i.claimed_by(&new), Some(("b".into(), "old".into())));
        assert_eq!(i.claimed_by(&tie), Some(("b".into(), "old".into())));
        i.apply(&Event::Delete(old.clone()));
        assert_eq!(i.claimed_by(&new), Some(("c".into(), "tie".into())));
        // Being deleted, it owns nothing.
        let mut deleting = tie.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-03-01T00:00:00Z".parse().unwrap(),
            ));
        i.apply(&Event::Apply(deleting));
        assert_eq!(i.claimed_by(&new), None);
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_returns() {
        let i = Index::new();
        i.apply(&Event::Apply(obj(
            "a",
            "x",
            "1",
            "2026-01-01T00:00:00Z",
            "i-1",
            "s",
        )));
        i.apply(&Event::Apply(obj(
            "a",
            "y",
            "2",
            "2026-01-01T00:00:00Z",
            "i-2",
            "t",
        )));
        i.apply(&Event::Init);
        i.apply(&Event::InitApply(obj(
            "a",
            "y",
            "2",
            "2026-01-01T00:00:00Z",
            "i-2",
            "t",
        )));
        // Until the relist ends, nothing is dropped.
        assert_eq!(i.len(), 2);
        i.apply(&Event::InitDone);
        assert_eq!(i.len(), 1);
        assert!(i.referencing("a", "s").is_empty());
        assert_eq!(names(i.referencing("a", "t")), ["y"]);
    }
}
