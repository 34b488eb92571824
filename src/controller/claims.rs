//! The instance claim, one rule for both ways of knowing who names an instance: the local
//! [`Index`](crate::controller::index::Index) of every watched VncPassword, and a list of them from
//! the API server by field selector (`spec.instanceId`, `spec.regionId` are the CRD's selectable
//! fields), for a replica whose watch does not hold every object (`Settings::claims_from_api`).
//!
//! The rule ([`owner`], [`overwritten_after`]): among the other live VncPasswords naming the same
//! region and instance whose status proves they reached it with their own credentials, the oldest
//! wins, then the first by namespace and name; an owner must apply again when another proven
//! object applied to the instance after it did. [`Claimant::of`] reads an object once, verifying
//! its access proof with the controller's key, whichever way it was found.
//!
//! ## When the API server is asked (claims_from_api)
//!
//! One list per served namespace set (one request for all namespaces, one per namespace with
//! `--watch-namespaces`), at most once per reconcile, and only when the answer can matter:
//!
//! - in `reconcile::Run::observe`, for an object that is not settled on its instance
//!   ([`needs_lookup`]): one that never applied there (its first apply is coming; a claimed one
//!   then reads and generates no Secret, as with the index), one whose status says
//!   `InstanceClaimed`, and one whose apply there is recent ([`settle`]) or not proven. Not when
//!   the index already knows an older proven owner (it is in this replica's watch and its change
//!   wakes this object), nor for a paused object or one whose cache is behind (the plan uses no
//!   claim then).
//! - before a write that a claimed object never makes, when the reconcile has not asked yet
//!   (`reconcile::Run::ask_claim_before`): an ECS write (ModifyInstanceVncPasswd, the reboot
//!   intent that leads to RebootInstance) or a write of its generated password Secret. The plan
//!   is made with the local answer, and when its step is such a write the API server is asked
//!   and the plan made again with its answer. So no write goes out on the local answer alone; a
//!   failed list is a retryable reconcile error.
//!
//! A settled object (applied there with proven access more than [`settle`] ago, not claimed)
//! costs no request when it is only looked at (a resync, a wait for a restart).
//!
//! ## What wakes an object then
//!
//! The index wakes every object naming an instance when its claim changes, but only for objects
//! this replica watches. Across shards nothing is woken, so:
//!
//! - a claimed object (`InstanceClaimed`) is looked at every `plan::CLAIM_RECHECK` (30 s), asks
//!   each time, and takes over at the first look after the owner is gone or lost its proof: it
//!   never waits for a wake that does not come.
//! - two objects that applied at about the same time, each before the other's proof was written,
//!   learn which one owns the instance (and the owner that it was overwritten, so it applies
//!   again) at a look at least [`settle`] after their apply, which the reconcile asks for
//!   ([`settle_requeue`]).
//! - what a settled owner does not learn without a write: that an *older* object of another shard
//!   later proved access and took the instance over. It writes nothing on that account (its next
//!   write asks first and finds itself claimed), but its status says `Ready` until then or until a
//!   change of the object.

use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::api::{VncPassword, VncPasswordStatus};
use crate::controller::fingerprint::FingerprintKey;
use crate::controller::namespaces::WatchNamespaces;

/// Who wins a claim on an instance: the oldest, then the first by namespace and name.
pub type Rank = (Option<jiff::Timestamp>, String, String);

/// A VncPassword as the claim on its instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub rank: Rank,
    /// Its status proves it reached the instance it names with its own credentials.
    pub proven: bool,
    /// When its password was last applied to that instance (ECS's time when known).
    pub applied_at: Option<jiff::Timestamp>,
}

impl Claimant {
    /// `o` as a claimant of the instance it names; `None` while it is being deleted (it owns
    /// nothing then). Its proof is verified with `key` (without one, nothing is proven).
    pub fn of(o: &VncPassword, key: Option<&FingerprintKey>) -> Option<Self> {
        if o.meta().deletion_timestamp.is_some() {
            return None;
        }
        let instance = instance_key(o);
        let uid = o.uid().unwrap_or_default();
        let proven = match (
            key,
            o.status
                .as_ref()
                .and_then(|s| s.applied.access_proof.as_deref()),
        ) {
            (Some(k), Some(proof)) => k.verifies_access(proof, &uid, &instance),
            _ => false,
        };
        Some(Self {
            rank: rank(o),
            proven,
            applied_at: applied_at(o, &instance),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.rank.1
    }

    pub fn name(&self) -> &str {
        &self.rank.2
    }
}

/// `region/instance`, as the index and the access proofs name an instance.
pub fn instance_key(o: &VncPassword) -> String {
    format!("{}/{}", o.spec.region_id, o.spec.instance_id)
}

pub fn rank(o: &VncPassword) -> Rank {
    (
        o.creation_timestamp().map(|t| t.0),
        o.namespace().unwrap_or_default(),
        o.name_any(),
    )
}

/// When `o`'s password was last applied to `instance` (ECS's time when known).
pub fn applied_at(o: &VncPassword, instance: &str) -> Option<jiff::Timestamp> {
    status_applied_at(o.status.as_ref()?, instance)
}

fn status_applied_at(status: &VncPasswordStatus, instance: &str) -> Option<jiff::Timestamp> {
    if status.applied.instance.as_deref() != Some(instance) {
        return None;
    }
    applied_time(status)
}

/// When the status says its password was last applied (ECS's time when known).
fn applied_time(status: &VncPasswordStatus) -> Option<jiff::Timestamp> {
    status
        .applied
        .ecs_time
        .as_deref()
        .or(status.applied.time.as_deref())
        .and_then(|t| t.parse().ok())
}

/// The owner of the instance when it is not the object ranked `mine`: the first by rank of the
/// `others` (every other live object naming the instance) whose access is proven, when it ranks
/// before `mine`. `(namespace, name)`.
pub fn owner<'a>(
    mine: &Rank,
    others: impl IntoIterator<Item = &'a Claimant>,
) -> Option<(String, String)> {
    others
        .into_iter()
        .filter(|c| c.proven)
        .map(|c| &c.rank)
        .filter(|r| *r < mine)
        .min()
        .map(|(_, ns, name)| (ns.clone(), name.clone()))
}

/// Whether one of the `others` with proven access applied its password to the instance after
/// `applied_at`: the owner must apply again, since the instance holds the other's password.
pub fn overwritten_after<'a>(
    others: impl IntoIterator<Item = &'a Claimant>,
    applied_at: jiff::Timestamp,
) -> bool {
    others
        .into_iter()
        .any(|c| c.proven && c.applied_at.is_some_and(|t| t > applied_at))
}

/// The claim on `obj`'s instance as decided from some set of objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Another object owns the instance: `(namespace, name)`.
    pub claimed_by: Option<(String, String)>,
    /// Another proven object applied to the instance after `obj` did.
    pub overwritten: bool,
}

/// When `obj`'s own apply to its instance happened, as its status says.
pub fn own_applied_at(obj: &VncPassword) -> Option<jiff::Timestamp> {
    applied_time(obj.status.as_ref()?)
}

/// The claim on `obj`'s instance among `listed` (objects naming it, `obj` among them or not).
pub fn decide(obj: &VncPassword, listed: &[VncPassword], key: &FingerprintKey) -> Claim {
    let uid = obj.uid().unwrap_or_default();
    let instance = instance_key(obj);
    let others: Vec<Claimant> = listed
        .iter()
        .filter(|o| o.uid().unwrap_or_default() != uid && instance_key(o) == instance)
        .filter_map(|o| Claimant::of(o, Some(key)))
        .collect();
    Claim {
        claimed_by: owner(&rank(obj), &others),
        overwritten: own_applied_at(obj).is_some_and(|at| overwritten_after(&others, at)),
    }
}

/// How long after an apply a race with another object's apply can still come to light: the other
/// object's list (made before this one's proof was written, at most a reconcile after the apply),
/// its apply (within its reconcile) and its own status write (within the same reconcile). Three
/// reconcile timeouts, and a minute for clocks and queues.
pub fn settle(reconcile_timeout: Duration) -> Duration {
    reconcile_timeout * 3 + Duration::from_secs(60)
}

/// Whether the claim on `obj` must be asked of the API server before the plan, rather than only
/// before an ECS write (see the module's documentation): unless its apply to this instance is
/// proven and settled, and it does not say `InstanceClaimed`. (An object that never applied here
/// asks too: a claimed one then reads no Secret and generates none, as with the index.)
///
/// Settled here means twice `settle` after the apply: the look [`settle_requeue`] asks for, at
/// `settle`, still asks even when the queue brings it late (by less than `settle`).
pub fn needs_lookup(
    obj: &VncPassword,
    key: &FingerprintKey,
    now: jiff::Timestamp,
    settle: Duration,
) -> bool {
    let Some(me) = Claimant::of(obj, Some(key)) else {
        return false;
    };
    let claimed = obj.status.as_ref().is_some_and(|s| {
        s.condition(crate::api::condition::STALLED)
            .is_some_and(|c| {
                c.status == "True" && c.reason == crate::api::Reason::InstanceClaimed.as_str()
            })
    });
    let settled = me
        .applied_at
        .and_then(|at| at.checked_add(settle * 2).ok())
        .is_some_and(|settled| now >= settled);
    claimed || !(me.proven && settled)
}

/// How long until the apply `status` records to `instance` is [`settle`]d, for a look then
/// (`None`: settled, or nothing applied there).
pub fn settle_requeue(
    status: &VncPasswordStatus,
    instance: &str,
    now: jiff::Timestamp,
    settle: Duration,
) -> Option<Duration> {
    let settled = status_applied_at(status, instance)?
        .checked_add(settle)
        .ok()?;
    (now < settled).then(|| Duration::try_from(settled.duration_since(now)).unwrap_or_default())
}

/// Every VncPassword naming `obj`'s region and instance in the namespaces the controller serves,
/// from the API server (a field selector on the CRD's selectable fields; the list is a consistent
/// read). One request per served namespace set: one for all namespaces.
pub async fn list_naming(
    client: &kube::Client,
    namespaces: &WatchNamespaces,
    obj: &VncPassword,
) -> Result<Vec<VncPassword>, kube::Error> {
    // Both values match the CRD's patterns (`^i-[a-z0-9]+$`, `^[a-z]…(-[a-z0-9]+)…$`): nothing in
    // them needs a field selector's escaping.
    let params = ListParams::default().fields(&format!(
        "spec.instanceId={},spec.regionId={}",
        obj.spec.instance_id, obj.spec.region_id
    ));
    if namespaces.is_all() {
        return Ok(Api::<VncPassword>::all(client.clone())
            .list(&params)
            .await?
            .items);
    }
    let mut found = Vec::new();
    for ns in namespaces.names() {
        found.extend(
            Api::<VncPassword>::namespaced(client.clone(), ns)
                .list(&params)
                .await?
                .items,
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, uid: &str, created: &str, instance: &str) -> VncPassword {
        serde_json::from_value(json!({
            "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
            "metadata": {"namespace": ns, "name": name, "uid": uid, "creationTimestamp": created},
            "spec": {"regionId": "cn-hangzhou", "instanceId": instance, "passwordSecretRef": {"name": "s"}}
        }))
        .unwrap()
    }

    fn proven(key: &FingerprintKey, mut o: VncPassword, applied: Option<&str>) -> VncPassword {
        let instance = instance_key(&o);
        let proof = key.access_proof(&o.metadata.uid.clone().unwrap(), &instance);
        let status = o.status.get_or_insert_with(Default::default);
        status.applied.access_proof = Some(proof);
        if let Some(at) = applied {
            status.applied.instance = Some(instance);
            status.applied.ecs_time = Some(at.into());
        }
        o
    }

    fn claimant(created: &str, ns: &str, name: &str, proven: bool) -> Claimant {
        Claimant {
            rank: (Some(created.parse().unwrap()), ns.into(), name.into()),
            proven,
            applied_at: None,
        }
    }

    /// The rule as a table: (others, expected owner of "me", created 2026-02-01 in namespace m).
    #[test]
    fn the_oldest_proven_other_owns_the_instance() {
        let me: Rank = (
            Some("2026-02-01T00:00:00Z".parse().unwrap()),
            "m".into(),
            "me".into(),
        );
        let old = "2026-01-01T00:00:00Z";
        let same = "2026-02-01T00:00:00Z";
        let young = "2026-03-01T00:00:00Z";
        type Case = (Vec<Claimant>, Option<(&'static str, &'static str)>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            // Older but unproven: a squatter claims nothing.
            (vec![claimant(old, "x", "a", false)], None),
            (vec![claimant(old, "x", "a", true)], Some(("x", "a"))),
            // Younger and proven: mine.
            (vec![claimant(young, "a", "a", true)], None),
            // Same second: namespace, then name decide.
            (vec![claimant(same, "a", "z", true)], Some(("a", "z"))),
            (vec![claimant(same, "z", "a", true)], None),
            (vec![claimant(same, "m", "ma", true)], Some(("m", "ma"))),
            (vec![claimant(same, "m", "mz", true)], None),
            // The first by rank among several proven older ones.
            (
                vec![
                    claimant(old, "y", "b", true),
                    claimant(old, "x", "c", true),
                    claimant("2025-12-01T00:00:00Z", "z", "d", false),
                ],
                Some(("x", "c")),
            ),
        ];
        for (i, (others, want)) in cases.into_iter().enumerate() {
            let want = want.map(|(ns, n)| (ns.to_string(), n.to_string()));
            assert_eq!(owner(&me, &others), want, "case {i}");
        }
    }

    #[test]
    fn only_a_proven_later_apply_overwrites() {
        let at = |t: &str| Some(t.parse().unwrap());
        let mut later = claimant("2026-01-01T00:00:00Z", "a", "a", true);
        later.applied_at = at("2026-03-01T10:00:05Z");
        let mut unproven = later.clone();
        unproven.proven = false;
        let t = "2026-03-01T10:00:00Z".parse().unwrap();
        assert!(overwritten_after([&later], t));
        assert!(!overwritten_after([&unproven], t));
        assert!(!overwritten_after(
            [&later],
            "2026-03-01T10:00:06Z".parse().unwrap()
        ));
    }

    /// What the API server lists is decided like the index: the object itself, objects of another
    /// instance or region, objects being deleted and forged proofs do not count.
    #[test]
    fn a_listed_set_is_decided_by_the_same_rule() {
        let k = FingerprintKey::generate();
        let me = proven(
            &k,
            obj("m", "me", "1", "2026-02-01T00:00:00Z", "i-1"),
            Some("2026-03-01T10:00:00Z"),
        );
        let mut other_region = proven(&k, obj("a", "r", "2", "2026-01-01T00:00:00Z", "i-1"), None);
        other_region.spec.region_id = "cn-beijing".into();
        let mut deleting = proven(&k, obj("a", "d", "3", "2026-01-01T00:00:00Z", "i-1"), None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-03-01T00:00:00Z".parse().unwrap(),
            ));
        let forged = proven(
            &FingerprintKey::generate(),
            obj("a", "f", "4", "2026-01-01T00:00:00Z", "i-1"),
            None,
        );
        let younger_later = proven(
            &k,
            obj("z", "y", "5", "2026-02-15T00:00:00Z", "i-1"),
            Some("2026-03-01T10:00:05Z"),
        );
        let listed = vec![
            me.clone(),
            other_region,
            deleting,
            forged,
            younger_later.clone(),
        ];
        assert_eq!(
            decide(&me, &listed, &k),
            Claim {
                claimed_by: None,
                overwritten: true
            }
        );
        assert_eq!(
            decide(&younger_later, &listed, &k),
            Claim {
                claimed_by: Some(("m".into(), "me".into())),
                overwritten: false
            }
        );
    }

    #[test]
    fn only_unsettled_objects_are_looked_up_before_the_plan() {
        let k = FingerprintKey::generate();
        let settle = Duration::from_secs(300);
        let now: jiff::Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let fresh = obj("m", "me", "1", "2026-02-01T00:00:00Z", "i-1");
        let here = instance_key(&fresh);
        assert!(needs_lookup(&fresh, &k, now, settle), "nothing applied yet");
        let recent = proven(&k, fresh.clone(), Some("2026-03-01T11:58:00Z"));
        assert!(needs_lookup(&recent, &k, now, settle));
        assert_eq!(
            settle_requeue(recent.status.as_ref().unwrap(), &here, now, settle),
            Some(Duration::from_secs(180))
        );
        let settled = proven(&k, fresh.clone(), Some("2026-03-01T11:00:00Z"));
        assert!(!needs_lookup(&settled, &k, now, settle));
        let status = settled.status.as_ref().unwrap();
        assert_eq!(settle_requeue(status, &here, now, settle), None);
        // The look settle_requeue asked for, come late: it still asks, and asks for no other.
        let looked = proven(&k, fresh.clone(), Some("2026-03-01T11:52:00Z"));
        assert!(needs_lookup(&looked, &k, now, settle));
        let status = looked.status.as_ref().unwrap();
        assert_eq!(settle_requeue(status, &here, now, settle), None);
        // Applied long ago, but without a proof that verifies (another key's): asks.
        let unproven = proven(
            &FingerprintKey::generate(),
            fresh.clone(),
            Some("2026-03-01T11:00:00Z"),
        );
        assert!(needs_lookup(&unproven, &k, now, settle));
        let mut claimed = settled.clone();
        claimed.status.as_mut().unwrap().conditions.push(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: crate::api::condition::STALLED.into(),
                status: "True".into(),
                reason: crate::api::Reason::InstanceClaimed.as_str().into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                observed_generation: None,
            },
        );
        assert!(needs_lookup(&claimed, &k, now, settle));
    }
}
