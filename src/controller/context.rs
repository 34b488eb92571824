//! What every reconcile shares: clients, the fingerprint key, settings, metrics, and two small
//! per-object caches (backoff counts, the resourceVersion of the controller's own last status
//! write). Neither is the truth: both are pruned when objects go away, and a restart that forgets
//! them loses nothing (the truth is in the status).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::Recorder;

use crate::controller::fingerprint::FingerprintKey;
use crate::controller::instances::InstanceCache;
use crate::controller::plan::PlanSettings;
use crate::controller::service_account::ServiceAccountCredentials;
use crate::controller::tenancy::AllowedNamespaces;
use crate::ecs::{CredentialsProvider, EcsClient};
use crate::metrics::Metrics;

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
    /// `spec.credentialsServiceAccountRef`: ServiceAccount tokens exchanged for STS credentials.
    pub service_accounts: ServiceAccountCredentials,
    pub plan: PlanSettings,
    /// Each reconcile is abandoned after this long (below the Pod's termination grace period).
    pub reconcile_timeout: Duration,
    pub clock: Clock,
}

pub struct Context {
    pub client: kube::Client,
    pub ecs: EcsClient,
    pub instances: InstanceCache,
    pub key: FingerprintKey,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Every VncPassword the controller watches (for claims on an instance).
    pub objects: kube::runtime::reflector::Store<crate::api::VncPassword>,
    /// Consecutive failures per object uid, for backoff; cleared on success.
    failures: Mutex<HashMap<String, u32>>,
    /// resourceVersion of the controller's last status write per object uid.
    written: Mutex<HashMap<String, u64>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        ecs: EcsClient,
        instances: InstanceCache,
        key: FingerprintKey,
        settings: Settings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        objects: kube::runtime::reflector::Store<crate::api::VncPassword>,
    ) -> Self {
        Self {
            client,
            ecs,
            instances,
            key,
            settings,
            recorder,
            metrics,
            objects,
            failures: Default::default(),
            written: Default::default(),
        }
    }

    pub fn now(&self) -> jiff::Timestamp {
        (self.settings.clock)()
    }

    /// Records one more failure for the object and returns the count.
    pub fn failed(&self, uid: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// Remembers the resourceVersion the API server gave the controller's own status write.
    pub fn wrote(&self, uid: &str, resource_version: Option<&str>) {
        if let Some(rv) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let entry = written.entry(uid.to_string()).or_insert(rv);
            *entry = (*entry).max(rv);
        }
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
            .get(uid)
            .is_some_and(|w| rv < *w)
    }

    /// Forgets every object that no longer exists.
    pub fn retain_objects(&self, live: &HashSet<String>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live.contains(uid));
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uid, _| live.contains(uid));
    }

    /// The VncPassword that owns `obj`'s instance when another one does: of all VncPasswords naming
    /// the same region and instance, the oldest (then the first by namespace and name) wins, so
    /// that two objects never take turns setting different passwords on one instance.
    pub fn claimed_by(&self, obj: &crate::api::VncPassword) -> Option<(String, String)> {
        use kube::ResourceExt as _;
        let rank = |o: &crate::api::VncPassword| {
            (
                o.creation_timestamp().map(|t| t.0),
                o.namespace().unwrap_or_default(),
                o.name_any(),
            )
        };
        let mine = rank(obj);
        self.objects
            .state()
            .iter()
            .filter(|o| {
                o.uid() != obj.uid()
                    && o.metadata.deletion_timestamp.is_none()
                    && o.spec.instance_id == obj.spec.instance_id
                    && o.spec.region_id == obj.spec.region_id
            })
            .map(|o| rank(o))
            .filter(|r| *r < mine)
            .min()
            .map(|(_, ns, name)| (ns, name))
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
