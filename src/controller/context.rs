//! What every reconcile shares: clients, the fingerprint key, settings, metrics, backoff state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::Recorder;

use crate::controller::fingerprint::FingerprintKey;
use crate::controller::instances::InstanceCache;
use crate::controller::tenancy::AllowedNamespaces;
use crate::ecs::{Credentials, EcsClient};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct Settings {
    pub allowed_default_credentials: AllowedNamespaces,
    /// The controller's own credentials (environment), for allowed namespaces.
    pub default_credentials: Option<Credentials>,
    /// How often an instance that must restart is described again.
    pub reboot_poll_interval: Duration,
}

pub struct Context {
    pub client: kube::Client,
    pub ecs: EcsClient,
    pub instances: InstanceCache,
    pub key: FingerprintKey,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive transient failures per object (namespace, name), for backoff; cleared on success.
    pub failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    /// Records one more failure for the object and returns the count.
    pub fn failed(&self, key: &(String, String)) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, key: &(String, String)) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}
