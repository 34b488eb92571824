//! What every reconcile shares: clients, the fingerprint key, settings, metrics, what the watches
//! know ([`Watched`]: the VncPassword index, the Secret metadata store), and two small per-object
//! caches (backoff counts, the resourceVersion of the controller's own last status write). None of
//! them is the truth: the per-object caches are pruned when objects go away, and a restart that
//! forgets them all loses nothing (the truth is in the status and the cluster).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::controller::fingerprint::FingerprintKey;
use crate::controller::index::Index;
use crate::controller::instances::InstanceCache;
use crate::controller::plan::PlanSettings;
use crate::controller::secret_cache::{SecretDirectory, SecretFacts};
use crate::controller::secret_read::SecretReader;
use crate::controller::service_account::ServiceAccountCredentials;
use crate::controller::slots::FairSlots;
use crate::controller::tenancy::AllowedNamespaces;
use crate::controller::uid::Uid;
use crate::ecs::{CredentialsProvider, EcsClient};
use crate::metrics::Metrics;

/// What the watches of one leadership term know, shared with its reconciles.
#[derive(Clone)]
pub struct Watched {
    /// Every VncPassword, as last seen by the watch (in the cache's form, see `cache`).
    pub objects: Store<crate::controller::cache::CachedVncPassword>,
    /// Every VncPassword, by the Secrets it references and the instance it names.
    pub index: Arc<Index>,
    /// The metadata of every Secret, only what the controller reads: identity, its own
    /// annotations, the controlling owner's uid (see `secret_cache`).
    pub secrets: Arc<SecretDirectory>,
    /// True while the store holds a complete list: false until the Secret watch has listed
    /// everything, and again during a relist (the store swaps in the new list at its end).
    pub secrets_synced: tokio::sync::watch::Receiver<bool>,
}

impl Watched {
    /// The metadata of Secret `namespace/name` as last seen by the watch; `None` when it is not
    /// known (absent, or the watch has not listed everything yet).
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretFacts>> {
        if !*self.secrets_synced.borrow() {
            return None;
        }
        self.secrets.get(namespace, name)
    }

    /// Waits (at most `limit`) until the Secret watch has listed everything.
    pub async fn wait_secrets_synced(&self, limit: Duration) {
        let mut synced = self.secrets_synced.clone();
        let _ = tokio::time::timeout(limit, synced.wait_for(|s| *s)).await;
    }
}

/// A reserved RebootInstance slot not come back for within this long after it became due goes back
/// to the bucket.
pub const REBOOT_SLOT_GRACE: Duration = Duration::from_secs(10);

/// How long a reading of ECS's clock is trusted for the offset between the clocks (clocks drift
/// slowly; a leader elected on another node measures its own).
pub const ECS_CLOCK_FRESH: Duration = Duration::from_secs(600);

/// The controller's clock; tests share one with the simulator.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(jiff::Timestamp::now)
}

#[derive(Clone)]
pub struct Settings {
    pub allowed_default_credentials: AllowedNamespaces,
    /// The controller's own credentials (Alibaba's default chain), for allowed namespaces.
    pub default_credentials: Option<CredentialsProvider>,
    /// `spec.credentials.serviceAccountRef`: ServiceAccount tokens exchanged for STS credentials.
    pub service_accounts: ServiceAccountCredentials,
    pub plan: PlanSettings,
    /// Each reconcile is abandoned after this long (below the Pod's termination grace period).
    pub reconcile_timeout: Duration,
    /// An object nothing woke is looked at again after about this long.
    pub resync_interval: Duration,
    /// Reconciles running at once (`--concurrency`): the work slots.
    pub concurrency: usize,
    pub clock: Clock,
    /// Decide instance claims from the API server (a list by field selector) rather than from the
    /// local index alone, for a replica whose watch does not hold every object (`--shards`); see
    /// `claims`. Off by default.
    pub claims_from_api: bool,
    /// The namespaces served (`--watch-namespaces`; empty: all), where claims are looked up.
    pub served_namespaces: crate::controller::namespaces::WatchNamespaces,
}

pub struct Context {
    pub client: kube::Client,
    pub ecs: EcsClient,
    pub instances: InstanceCache,
    pub key: FingerprintKey,
    pub settings: Settings,
    /// Who the Events say they come from.
    reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// What the watches know: every VncPassword (indexed) and every Secret's metadata.
    pub watched: Watched,
    /// Secret reads, bounded (see `secret_read`).
    pub secret_reads: SecretReader,
    /// The work slots, served fairly per namespace.
    pub slots: FairSlots,
    /// Consecutive failures per object uid, for backoff; cleared on success.
    failures: Mutex<HashMap<Uid, u32>>,
    /// resourceVersion of the controller's last status write per object uid.
    written: Mutex<HashMap<Uid, u64>>,
    /// When this term applied a password per object uid: an instance's state counts for that
    /// apply only when described after it.
    applied: Mutex<HashMap<Uid, std::time::Instant>>,
    /// RebootInstance slots reserved for objects that come back for them when they are due: an
    /// object keeps its place in the account's queue without holding a worker.
    reboot_slots: Mutex<HashMap<Uid, crate::ecs::ratelimit::Reservation>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        ecs: EcsClient,
        instances: InstanceCache,
        key: FingerprintKey,
        settings: Settings,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        watched: Watched,
    ) -> Self {
        // A queued reconcile's turn wakes its object through the index's wake queue.
        let index = watched.index.clone();
        let slots = FairSlots::new(settings.concurrency, move |ticket| index.wake(ticket));
        Self {
            client,
            ecs,
            instances,
            key,
            settings,
            reporter,
            metrics,
            watched,
            secret_reads: SecretReader::default(),
            slots,
            failures: Default::default(),
            written: Default::default(),
            applied: Default::default(),
            reboot_slots: Default::default(),
        }
    }

    /// A recorder for the Events of one reconcile. kube's `Recorder` keeps every Event it published
    /// for six minutes (to count repeats into a series) and scans them all at each publish: shared
    /// by the whole controller, that is an entry per object in a wave of 10,000. The controller
    /// publishes Events on transitions only, so repeats are rare and a fresh recorder each time
    /// loses nothing that matters.
    pub fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    pub fn now(&self) -> jiff::Timestamp {
        (self.settings.clock)()
    }

    /// ECS's clock minus this controller's, from ECS's latest answer with a `Date` (at most
    /// [`ECS_CLOCK_FRESH`] old); `None` without one.
    pub fn ecs_offset(&self) -> Option<jiff::SignedDuration> {
        let reading = self.ecs.ecs_clock()?;
        if reading.received.elapsed() > ECS_CLOCK_FRESH {
            return None;
        }
        reading.offset_from(self.now())
    }

    /// Records one more failure for the object and returns the count.
    pub fn failed(&self, uid: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(Uid::from(uid)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Uid::from(uid));
    }

    /// Remembers the resourceVersion the API server gave the controller's own status write.
    pub fn wrote(&self, uid: &str, resource_version: Option<&str>) {
        if let Some(rv) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let entry = written.entry(Uid::from(uid)).or_insert(rv);
            *entry = (*entry).max(rv);
        }
    }

    /// ECS accepted a password for this object now.
    pub fn applied_now(&self, uid: &str) {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Uid::from(uid), std::time::Instant::now());
    }

    /// Keeps a RebootInstance slot for the object until it comes back for it.
    pub fn hold_reboot_slot(&self, uid: &str, slot: crate::ecs::ratelimit::Reservation) {
        self.reboot_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Uid::from(uid), slot);
    }

    /// The slot kept for the object, unless it became due long ago (the object did not come back
    /// for it: it goes back to the bucket).
    pub fn take_reboot_slot(&self, uid: &str) -> Option<crate::ecs::ratelimit::Reservation> {
        let slot = self
            .reboot_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Uid::from(uid))?;
        (slot.overdue() < REBOOT_SLOT_GRACE).then_some(slot)
    }

    /// When this term last applied a password for the object; `None` when it did not (the apply was
    /// another term's, before this one began).
    pub fn applied_at(&self, uid: &str) -> Option<std::time::Instant> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&Uid::from(uid))
            .copied()
    }

    /// Whether an object with this resourceVersion is older than the controller's own last write
    /// for it. resourceVersions are etcd revisions on every API server this targets; one that is
    /// not a number is never taken as older.
    pub fn is_behind(&self, uid: &str, resource_version: Option<&str>) -> bool {
        let Some(rv) = resource_version.and_then(|v| v.parse::<u64>().ok()) else {
            return false;
        };
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&Uid::from(uid))
            .is_some_and(|w| rv < *w)
    }

    /// Forgets every object that no longer exists.
    pub fn retain_objects(&self, live: &HashSet<Uid>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live.contains(uid));
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live.contains(uid));
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live.contains(uid));
        self.reboot_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, slot| live.contains(uid) && slot.overdue() < REBOOT_SLOT_GRACE);
    }

    /// Forgets the Secret versions found too large that are no longer the cached ones.
    pub fn retain_secret_versions(&self) {
        self.secret_reads.retain(|namespace, name| {
            let m = self.watched.secret(namespace, name)?;
            Some((m.uid().to_string(), m.resource_version().to_string()))
        });
    }

    /// The VncPassword that owns `obj`'s instance when another one does, as far as this replica's
    /// watch knows (see [`Index::claimed_by`]).
    pub fn claimed_by(&self, obj: &crate::api::VncPassword) -> Option<(String, String)> {
        if index_blind() {
            return None;
        }
        self.watched.index.claimed_by(obj)
    }

    /// Whether another proven object applied to `obj`'s instance after `applied_at`, as far as
    /// this replica's watch knows (see [`Index::overwritten_after`]).
    pub fn overwritten_after(
        &self,
        obj: &crate::api::VncPassword,
        applied_at: jiff::Timestamp,
    ) -> bool {
        !index_blind() && self.watched.index.overwritten_after(obj, applied_at)
    }

    /// (failure entries, written entries), for tests of bounded memory.
    pub fn remembered(&self) -> (usize, usize) {
        (
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .len(),
            self.written.lock().unwrap_or_else(|p| p.into_inner()).len(),
        )
    }
}

/// Tests (failpoint `claims-index-blind`) make the index know no other object naming an
/// instance, as a replica whose watch holds only its own shard knows none of the others: the claim
/// then rests on the API server alone (`claims`).
fn index_blind() -> bool {
    #[cfg(feature = "failpoints")]
    if fail::eval("claims-index-blind", |_| ()).is_some() {
        return true;
    }
    false
}
