//! Look-ups over every watched VncPassword without scanning them: which objects reference a Secret
//! (to map a Secret's watch event to reconciles) and which object owns an instance (claims).
//!
//! A claim follows proven access: an object counts for its instance only once its status carries
//! the controller's keyed proof that it reached the instance with its own credentials
//! (`status.applied.accessProof`, see `fingerprint::FingerprintKey::access_proof`), and among those the
//! oldest wins. An object whose credentials cannot reach the instance (a squatter that knows only
//! the instance ID) never claims it. When the proven set of an instance changes, every object
//! naming the instance is woken ([`Index::wakes`]). The rule itself is `claims::owner` and
//! `claims::overwritten_after`, shared with the look-up from the API server that replaces this
//! index's answer when a replica does not watch every object (`claims`).
//!
//! Kept up to date from the VncPassword watch's own events, beside the reflector store, so that a
//! Secret event or a reconcile costs a hash look-up instead of a pass over every object (at 10,000
//! objects, a pass per Secret event in the initial wave is 10^8 steps). A relist (`Init` …
//! `InitDone`) drops the objects it no longer returns. Lean on purpose (about 0.55 KB per object,
//! `cache_bytes`): keys are `namespace/name` and `region/instance` strings, each kept once and
//! shared by the entries naming it, objects are known by their uid's 16 bytes, and an instance's
//! owner is ranked only when another object names the same instance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use smallvec::SmallVec;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::api::VncPassword;
use crate::controller::cache::{AsFull, CachedVncPassword};
use crate::controller::claims::{self, Claimant};
use crate::controller::fingerprint::FingerprintKey;
use crate::controller::uid::Uid;

/// The uids under one key: most Secrets and instances are named by one object, kept inline.
type Uids = SmallVec<[Uid; 1]>;

struct Entry {
    /// What it references ([`secret_key`], [`service_account_key`]): the password Secret, the
    /// credentials Secret or ServiceAccount. Each the very key of `by_ref` (shared, not copied).
    refs: Box<[Arc<str>]>,
    /// `region/instance`, while the object is not being deleted: the key of `by_instance`.
    instance: Option<Arc<str>>,
    /// Its rank, proof and last apply, as the claim on that instance sees them (the rank also
    /// while it is being deleted, for its namespace and name).
    claimant: Claimant,
}

impl Entry {
    fn object_ref(&self) -> ObjectRef<CachedVncPassword> {
        ObjectRef::new(self.claimant.name()).within(self.claimant.namespace())
    }
}

#[derive(Default)]
struct Inner {
    by_uid: HashMap<Uid, Entry>,
    by_ref: HashMap<Arc<str>, Uids>,
    by_instance: HashMap<Arc<str>, Uids>,
    /// uids seen since the last `Init`, while a relist is in progress.
    relisted: Option<HashSet<Uid>>,
}

#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
    /// Verifies access proofs; without it (tests of the other look-ups) nothing is proven.
    key: Option<FingerprintKey>,
    wakes: Wakes,
}

/// Objects to reconcile because the claim on their instance changed: a set (an object is woken
/// once however often it is named before the controller takes it), drained by [`Index::wakes`].
#[derive(Default)]
struct Wakes {
    pending: std::sync::Mutex<HashSet<ObjectRef<CachedVncPassword>>>,
    notify: tokio::sync::Notify,
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

    /// An index that verifies access proofs with `key` (the controller's).
    pub fn with_key(key: FingerprintKey) -> Self {
        Self {
            key: Some(key),
            ..Self::default()
        }
    }

    /// Applies one event of the VncPassword watch.
    pub fn apply<K: AsFull>(&self, event: &Event<K>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let key = self.key.as_ref();
        let mut changed: Vec<String> = Vec::new();
        match event {
            Event::Apply(o) => changed.extend(inner.upsert(&o.as_full(), key)),
            Event::Delete(o) => {
                if let Some(uid) = o.uid() {
                    changed.extend(inner.remove(&Uid::from(uid.as_str())));
                }
            }
            Event::Init => inner.relisted = Some(HashSet::new()),
            Event::InitApply(o) => {
                let o = o.as_full();
                if let (Some(seen), Some(uid)) = (inner.relisted.as_mut(), o.uid()) {
                    seen.insert(Uid::from(uid.as_str()));
                }
                changed.extend(inner.upsert(&o, key));
            }
            Event::InitDone => {
                if let Some(seen) = inner.relisted.take() {
                    let gone: Vec<Uid> = inner
                        .by_uid
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        changed.extend(inner.remove(&uid));
                    }
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        let woken: Vec<ObjectRef<CachedVncPassword>> = changed
            .iter()
            .flat_map(|instance| {
                inner
                    .by_instance
                    .get(instance.as_str())
                    .into_iter()
                    .flatten()
            })
            .filter_map(|uid| inner.by_uid.get(uid))
            .map(Entry::object_ref)
            .collect();
        drop(inner);
        if !woken.is_empty() {
            self.wakes
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(woken);
            self.wakes.notify.notify_one();
        }
    }

    /// Asks for a reconcile of `object` through the same queue.
    pub fn wake(&self, object: ObjectRef<CachedVncPassword>) {
        self.wakes
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(object);
        self.wakes.notify.notify_one();
    }

    /// The objects to reconcile because the claim on their instance changed (or that were asked
    /// for again, see [`Index::wake`]), as they come.
    pub fn wakes(
        self: Arc<Self>,
    ) -> impl futures::Stream<Item = ObjectRef<CachedVncPassword>> + Send {
        futures::stream::unfold(
            (self, Vec::<ObjectRef<CachedVncPassword>>::new()),
            |(index, mut ready)| async move {
                loop {
                    if let Some(next) = ready.pop() {
                        return Some((next, (index, ready)));
                    }
                    let notified = index.wakes.notify.notified();
                    ready.extend(
                        index
                            .wakes
                            .pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .drain(),
                    );
                    if ready.is_empty() {
                        notified.await;
                    }
                }
            },
        )
    }

    /// VncPasswords in `namespace` that reference the Secret `name` (password or credentials).
    pub fn referencing(&self, namespace: &str, name: &str) -> Vec<ObjectRef<CachedVncPassword>> {
        self.by_ref(&secret_key(namespace, name))
    }

    /// VncPasswords in `namespace` whose credentials are the ServiceAccount `name`.
    pub fn referencing_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<ObjectRef<CachedVncPassword>> {
        self.by_ref(&service_account_key(namespace, name))
    }

    fn by_ref(&self, k: &str) -> Vec<ObjectRef<CachedVncPassword>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .by_ref
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|uid| inner.by_uid.get(uid))
            .map(Entry::object_ref)
            .collect()
    }

    /// The VncPassword that owns `obj`'s instance when another one does: of the live VncPasswords
    /// naming the same region and instance whose access is proven, the oldest (then the first by
    /// namespace and name) wins, so that two objects never take turns setting different passwords
    /// on one instance, and an object that cannot reach the instance locks nobody out.
    pub fn claimed_by(&self, obj: &VncPassword) -> Option<(String, String)> {
        let uid = Uid::from(obj.uid().unwrap_or_default().as_str());
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        claims::owner(&claims::rank(obj), inner.others(obj, &uid))
    }

    /// Whether another object with proven access applied its password to `obj`'s instance after
    /// `applied_at` (two objects that both applied before either proof was seen): the owner must
    /// apply again, since the instance holds the other's password.
    pub fn overwritten_after(&self, obj: &VncPassword, applied_at: jiff::Timestamp) -> bool {
        let uid = Uid::from(obj.uid().unwrap_or_default().as_str());
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        claims::overwritten_after(inner.others(obj, &uid), applied_at)
    }

    /// Objects indexed, for tests of bounded memory.
    /// Whether a live VncPassword has this uid.
    pub fn knows(&self, uid: &str) -> bool {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.by_uid.contains_key(&Uid::from(uid))
    }

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

/// Files `uid` under `k`; returns the map's own key, to be shared rather than copied.
fn link(map: &mut HashMap<Arc<str>, Uids>, k: &str, uid: &Uid) -> Arc<str> {
    if let Some(key) = map.get_key_value(k).map(|(key, _)| key.clone()) {
        map.entry(key.clone()).or_default().push(uid.clone());
        return key;
    }
    let key: Arc<str> = k.into();
    map.insert(key.clone(), smallvec::smallvec![uid.clone()]);
    key
}

fn unlink(map: &mut HashMap<Arc<str>, Uids>, k: &str, uid: &Uid) {
    if let Some(uids) = map.get_mut(k) {
        uids.retain(|u| u != uid);
        if uids.is_empty() {
            map.remove(k);
        }
    }
}

impl Inner {
    /// The other live objects naming `obj`'s instance, as claimants.
    fn others<'a>(&'a self, obj: &VncPassword, uid: &'a Uid) -> impl Iterator<Item = &'a Claimant> {
        self.by_instance
            .get(key_of(obj).as_str())
            .into_iter()
            .flatten()
            .filter(move |u| *u != uid)
            .filter_map(move |u| self.by_uid.get(u))
            .map(|e| &e.claimant)
    }

    /// Indexes `o`; returns the instances whose claims may have changed.
    fn upsert(&mut self, o: &VncPassword, key: Option<&FingerprintKey>) -> Vec<String> {
        let Some(uid) = o.uid() else {
            return Vec::new();
        };
        let uid = Uid::from(uid.as_str());
        let before = self.by_uid.get(&uid).map(|e| {
            (
                e.instance.as_deref().map(str::to_string),
                e.claimant.proven,
                e.claimant.applied_at,
            )
        });
        self.remove_quietly(&uid);
        let namespace = o.namespace().unwrap_or_default();
        let mut refs = vec![secret_key(&namespace, &o.spec.password_secret_ref.name)];
        if let Some(c) = &o.spec.credentials_secret() {
            refs.push(secret_key(&namespace, &c.name));
        }
        if let Some(sa) = o.spec.credentials_service_account() {
            refs.push(service_account_key(&namespace, &sa.name));
        }
        refs.dedup();
        let refs: Box<[Arc<str>]> = refs
            .into_iter()
            .map(|r| link(&mut self.by_ref, &r, &uid))
            .collect();
        // Being deleted, it claims nothing: known by its rank only (for its references).
        let (instance, claimant) = match Claimant::of(o, key) {
            Some(c) => (Some(key_of(o)), c),
            None => (
                None,
                Claimant {
                    rank: claims::rank(o),
                    proven: false,
                    applied_at: None,
                },
            ),
        };
        let proven = claimant.proven;
        let after = (instance.clone(), proven, claimant.applied_at);
        let entry = Entry {
            refs,
            instance: instance.map(|i| link(&mut self.by_instance, &i, &uid)),
            claimant,
        };
        self.by_uid.insert(uid, entry);
        // Only a change of what claims depend on wakes the others: an object's own status writes
        // that prove nothing new wake nobody.
        match before {
            Some(before) if before == after => Vec::new(),
            Some((old, was_proven, _)) => {
                let mut changed: Vec<String> = Vec::new();
                if was_proven || proven {
                    changed.extend(old);
                    changed.extend(after.0);
                }
                changed.dedup();
                changed
            }
            None => after.0.filter(|_| proven).into_iter().collect(),
        }
    }

    /// Forgets an object; returns its instance when it held a proven claim.
    fn remove(&mut self, uid: &Uid) -> Vec<String> {
        match self.remove_quietly(uid) {
            Some(Entry {
                instance: Some(i),
                claimant: Claimant { proven: true, .. },
                ..
            }) => vec![i.to_string()],
            _ => Vec::new(),
        }
    }

    fn remove_quietly(&mut self, uid: &Uid) -> Option<Entry> {
        let entry = self.by_uid.remove(uid)?;
        for r in &entry.refs {
            unlink(&mut self.by_ref, r, uid);
        }
        if let Some(i) = &entry.instance {
            unlink(&mut self.by_instance, i, uid);
        }
        Some(entry)
    }
}

fn key_of(o: &VncPassword) -> String {
    key(&o.spec.region_id, &o.spec.instance_id)
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

    fn names(refs: Vec<ObjectRef<CachedVncPassword>>) -> Vec<String> {
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

    /// `o` with the controller's proof that it reached its instance.
    fn proven(key: &FingerprintKey, mut o: VncPassword) -> VncPassword {
        let proof = key.access_proof(&o.metadata.uid.clone().unwrap(), &key_of(&o));
        o.status
            .get_or_insert_with(Default::default)
            .applied
            .access_proof = Some(proof);
        o
    }

    #[test]
    fn the_oldest_object_with_proven_access_owns_an_instance() {
        let k = FingerprintKey::generate();
        let i = Index::with_key(k.clone());
        let old = proven(&k, obj("b", "old", "1", "2026-01-01T00:00:00Z", "i-1", "s"));
        let new = proven(&k, obj("a", "new", "2", "2026-02-01T00:00:00Z", "i-1", "s"));
        // Created in the same second: the namespace decides.
        let tie = proven(&k, obj("c", "tie", "3", "2026-01-01T00:00:00Z", "i-1", "s"));
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

    /// A squatter that knows only the instance ID (an older object whose credentials never reach
    /// the instance, or with a proof copied from another object, or forged) claims nothing.
    #[test]
    fn an_object_without_proven_access_claims_nothing() {
        let k = FingerprintKey::generate();
        let i = Index::with_key(k.clone());
        let squatter = obj("evil", "squat", "1", "2026-01-01T00:00:00Z", "i-1", "s");
        let owner = obj("team", "web", "2", "2026-02-01T00:00:00Z", "i-1", "s");
        i.apply(&Event::Apply(squatter.clone()));
        i.apply(&Event::Apply(owner.clone()));
        assert_eq!(i.claimed_by(&owner), None);
        // The owner proves access and keeps the instance: being older proves nothing. (The squatter
        // may still try with its own credentials, which ECS refuses.)
        let owner = proven(&k, owner);
        i.apply(&Event::Apply(owner.clone()));
        assert_eq!(i.claimed_by(&owner), None);
        // A proof copied from the owner, or made with another key, proves nothing.
        let mut copied = squatter.clone();
        copied.status = owner.status.clone();
        i.apply(&Event::Apply(copied));
        let forged = proven(&FingerprintKey::generate(), squatter.clone());
        i.apply(&Event::Apply(forged));
        assert_eq!(i.claimed_by(&owner), None);
    }

    #[test]
    fn a_change_of_claim_wakes_every_object_naming_the_instance_and_nothing_else_does() {
        use futures::StreamExt;
        let k = FingerprintKey::generate();
        let i = Arc::new(Index::with_key(k.clone()));
        let a = obj("a", "a", "1", "2026-01-01T00:00:00Z", "i-1", "s");
        let b = obj("b", "b", "2", "2026-02-01T00:00:00Z", "i-1", "s");
        let other = obj("c", "c", "3", "2026-02-01T00:00:00Z", "i-2", "s");
        for o in [&a, &b, &other] {
            i.apply(&Event::Apply(o.clone()));
        }
        let pending = || i.wakes.pending.lock().unwrap().len();
        assert_eq!(pending(), 0, "unproven objects change no claim");
        i.apply(&Event::Apply(proven(&k, a.clone())));
        assert_eq!(pending(), 2, "both objects naming i-1");
        let mut wakes = Box::pin(i.clone().wakes());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut woken = rt.block_on(async {
            vec![
                wakes.next().await.unwrap().name,
                wakes.next().await.unwrap().name,
            ]
        });
        woken.sort();
        assert_eq!(woken, ["a", "b"]);
        // The same proof again (a status write of the owner): nobody is woken.
        i.apply(&Event::Apply(proven(&k, a.clone())));
        assert_eq!(pending(), 0);
        // The owner goes: the other is woken.
        i.apply(&Event::Delete(proven(&k, a)));
        assert_eq!(pending(), 1);
    }

    #[test]
    fn an_instance_overwritten_by_another_proven_object_is_seen() {
        let k = FingerprintKey::generate();
        let i = Index::with_key(k.clone());
        let a = obj("a", "a", "1", "2026-01-01T00:00:00Z", "i-1", "s");
        let mut b = proven(&k, obj("b", "b", "2", "2026-02-01T00:00:00Z", "i-1", "s"));
        let status = b.status.as_mut().unwrap();
        status.applied.instance = Some("cn-hangzhou/i-1".into());
        status.applied.ecs_time = Some("2026-03-01T10:00:05Z".into());
        i.apply(&Event::Apply(b));
        assert!(i.overwritten_after(&a, "2026-03-01T10:00:00Z".parse().unwrap()));
        assert!(!i.overwritten_after(&a, "2026-03-01T10:00:06Z".parse().unwrap()));
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
        i.apply(&Event::<VncPassword>::Init);
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
        i.apply(&Event::<VncPassword>::InitDone);
        assert_eq!(i.len(), 1);
        assert!(i.referencing("a", "s").is_empty());
        assert_eq!(names(i.referencing("a", "t")), ["y"]);
    }
}
