//! What every reconcile shares: clients, the fingerprint key, settings, metrics, backoff state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::events::Recorder;

use crate::controller::decide::Failure;
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
    /// Objects ECS stalled, with the inputs (generation, Secret versions, force token) it refused.
    pub stalls: Mutex<HashMap<(String, String), Stall>>,
}

#[derive(Debug, Clone)]
pub struct Stall {
    inputs: String,
    failure: Failure,
    applied: bool,
}

impl Context {
    /// Records one more failure for the object and returns the count.
    pub fn failed(&self, key: &(String, String)) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The failure ECS gave for exactly these inputs, if it stalled the object.
    pub fn stalled_on(&self, key: &(String, String), inputs: &str) -> Option<(Failure, bool)> {
        let stalls = self.stalls.lock().unwrap_or_else(|p| p.into_inner());
        stalls
            .get(key)
            .filter(|s| s.inputs == inputs)
            .map(|s| (s.failure.clone(), s.applied))
    }

    pub fn remember_stall(
        &self,
        key: &(String, String),
        inputs: &str,
        failure: &Failure,
        applied: bool,
    ) {
        self.stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                Stall {
                    inputs: inputs.to_string(),
                    failure: failure.clone(),
                    applied,
                },
            );
    }

    pub fn forget_stall(&self, key: &(String, String)) {
        self.stalls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    pub fn succeeded(&self, key: &(String, String)) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}
