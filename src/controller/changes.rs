//! Which watch events of an object call for its reconcile: those that change what a hash of the
//! object covers (for VncPasswords, `wakes_reconcile`: never the status, so the controller's own
//! status writes do not wake it). kube-runtime's `predicate_filter` does the same, but keeps the
//! object's name, namespace and uid as strings beside each hash (about 240 bytes an object at
//! 10,000); this keeps the uid's 16 bytes and the hash (about 50 bytes an object).
//!
//! Bounded like the watch: a deleted object is forgotten, and a relist (`Init` … `InitDone`) keeps
//! only the objects it returned.

use std::collections::{HashMap, HashSet};

use kube::Resource;
use kube::runtime::watcher::Event;

use crate::controller::uid::Uid;

/// The last hash seen of every watched object.
pub struct Changes<K> {
    hash: fn(&K) -> Option<u64>,
    last: HashMap<Uid, u64>,
    /// Objects seen since the last `Init`, while a relist is in progress.
    relisted: Option<HashSet<Uid>>,
}

impl<K: Resource> Changes<K> {
    pub fn new(hash: fn(&K) -> Option<u64>) -> Self {
        Self {
            hash,
            last: HashMap::new(),
            relisted: None,
        }
    }

    /// Whether `event` goes on: an object seen for the first time or whose hash changed (or that
    /// has no hash, or no uid); every event that is not an object's (re)appearance.
    pub fn admit(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(obj) | Event::InitApply(obj) => {
                let (Some(uid), Some(hash)) = (obj.meta().uid.as_deref(), (self.hash)(obj)) else {
                    return true;
                };
                let uid = Uid::from(uid);
                if let Some(seen) = self.relisted.as_mut() {
                    seen.insert(uid.clone());
                }
                self.last.insert(uid, hash) != Some(hash)
            }
            Event::Delete(obj) => {
                if let Some(uid) = obj.meta().uid.as_deref() {
                    self.last.remove(&Uid::from(uid));
                }
                true
            }
            Event::Init => {
                self.relisted = Some(HashSet::new());
                true
            }
            Event::InitDone => {
                if let Some(seen) = self.relisted.take() {
                    self.last.retain(|uid, _| seen.contains(uid));
                }
                true
            }
        }
    }

    /// Objects remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn obj(uid: &str, generation: i64) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("o-{uid}")),
                uid: Some(uid.into()),
                generation: Some(generation),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn changes() -> Changes<ConfigMap> {
        Changes::new(|o: &ConfigMap| o.metadata.generation.map(|g| g as u64))
    }

    #[test]
    fn only_a_new_object_or_a_changed_hash_goes_on() {
        let mut c = changes();
        assert!(c.admit(&Event::Apply(obj("a", 1))), "first sight");
        assert!(!c.admit(&Event::Apply(obj("a", 1))), "unchanged");
        assert!(c.admit(&Event::Apply(obj("a", 2))), "changed");
        assert!(
            !c.admit(&Event::InitApply(obj("a", 2))),
            "relisted unchanged"
        );
        // Recreated under the same name: another uid, a new object.
        assert!(c.admit(&Event::Apply(obj("b", 2))));
        // No hash, no uid: always on.
        let mut none = Changes::new(|_: &ConfigMap| None);
        assert!(none.admit(&Event::Apply(obj("a", 1))));
        assert!(none.admit(&Event::Apply(obj("a", 1))));
        let mut anonymous = obj("a", 1);
        anonymous.metadata.uid = None;
        assert!(c.admit(&Event::Apply(anonymous.clone())));
        assert!(c.admit(&Event::Apply(anonymous)));
    }

    #[test]
    fn deleted_and_unlisted_objects_are_forgotten() {
        let mut c = changes();
        for uid in ["a", "b", "c"] {
            c.admit(&Event::Apply(obj(uid, 1)));
        }
        assert!(c.admit(&Event::Delete(obj("a", 1))));
        assert_eq!(c.len(), 2);
        // A relist that no longer returns "c".
        assert!(c.admit(&Event::Init));
        assert!(!c.admit(&Event::InitApply(obj("b", 1))));
        assert!(c.admit(&Event::InitDone));
        assert_eq!(c.len(), 1);
        // "a" comes back: a new sight.
        assert!(c.admit(&Event::Apply(obj("a", 1))));
    }
}
