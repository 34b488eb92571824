//! The simulator's state: instances with their set and effective VNC passwords, the call log,
//! the used nonces and the faults. Transitions are plain methods under one short-held lock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use super::config::{AccessKeyConfig, FaultConfig, InstanceConfig, SimulatorConfig};

pub const STATUSES: &[&str] = &[
    "Pending", "Running", "Starting", "Stopping", "Stopped", "Released",
];

/// Region IDs ECS knows, besides those of configured instances.
pub const KNOWN_REGIONS: &[&str] = &[
    "cn-hangzhou",
    "cn-shanghai",
    "cn-beijing",
    "cn-shenzhen",
    "cn-qingdao",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-wulanchabu",
    "cn-chengdu",
    "cn-heyuan",
    "cn-guangzhou",
    "cn-nanjing",
    "cn-fuzhou",
    "cn-hongkong",
    "ap-southeast-1",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-northeast-1",
    "ap-northeast-2",
    "eu-central-1",
    "eu-west-1",
    "us-west-1",
    "us-east-1",
    "me-east-1",
    "me-central-1",
];

const NONCE_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_NONCES: usize = 1_000_000;
const MAX_LOGGED_CALLS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    pub region: String,
    pub io_optimized: bool,
    pub status: String,
    /// The password last set through ModifyInstanceVncPasswd.
    pub set_password: Option<String>,
    /// The password a VNC client would need now.
    pub effective_password: Option<String>,
    pub reboot_count: u32,
    /// `yyyy-MM-ddTHH:mmZ`, as ECS reports it.
    pub start_time: String,
}

#[derive(Debug, Clone)]
struct Instance {
    view: InstanceView,
    started: jiff::Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub time: String,
    pub action: String,
    /// `Success` or the ECS error code.
    pub code: String,
    pub http_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The VncPassword received (a test aid of this fake; never logged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vnc_password: Option<String>,
}

/// Errors as ECS reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsFault {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl EcsFault {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }
    pub fn throttled() -> Self {
        Self::new(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        )
    }
    fn instance_not_found() -> Self {
        Self::new(
            404,
            "InvalidInstanceId.NotFound",
            "The specified InstanceId does not exist.",
        )
    }
    fn region_not_found() -> Self {
        Self::new(
            404,
            "InvalidRegionId.NotFound",
            "The specified RegionId does not exist.",
        )
    }
    fn incorrect_status() -> Self {
        Self::new(
            403,
            "IncorrectInstanceStatus",
            "The current status of the resource does not support this operation.",
        )
    }
}

struct Inner {
    instances: BTreeMap<String, Instance>,
    access_keys: HashMap<String, AccessKeyConfig>,
    nonces: HashSet<String>,
    nonce_order: VecDeque<(jiff::Timestamp, String)>,
    counts: BTreeMap<String, BTreeMap<String, u64>>,
    calls: VecDeque<CallRecord>,
    faults: FaultConfig,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

pub struct SimState {
    inner: Mutex<Inner>,
    pub clock: fn() -> jiff::Timestamp,
    pub reboot_duration: Duration,
}

fn minute(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%MZ").to_string()
}

fn limiter_for(faults: &FaultConfig) -> Option<DefaultKeyedRateLimiter<String>> {
    let qps = faults
        .qps_per_access_key
        .filter(|q| q.is_finite() && *q > 0.0)?;
    let burst = NonZeroU32::new(qps.ceil() as u32).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / qps))?.allow_burst(burst);
    Some(RateLimiter::keyed(quota))
}

impl SimState {
    pub fn new(config: &SimulatorConfig) -> Self {
        let now = jiff::Timestamp::now();
        let state = Self {
            inner: Mutex::new(Inner {
                instances: BTreeMap::new(),
                access_keys: config
                    .access_keys
                    .iter()
                    .map(|k| (k.id.clone(), k.clone()))
                    .collect(),
                nonces: HashSet::new(),
                nonce_order: VecDeque::new(),
                counts: BTreeMap::new(),
                calls: VecDeque::new(),
                limiter: limiter_for(&config.faults),
                faults: config.faults.clone(),
            }),
            clock: jiff::Timestamp::now,
            reboot_duration: Duration::from_secs_f64(config.reboot_seconds.clamp(0.0, 3600.0)),
        };
        for instance in &config.instances {
            state.add_instance_at(instance.clone(), now);
        }
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now(&self) -> jiff::Timestamp {
        (self.clock)()
    }

    /// Adds (or replaces) an instance. Like a real fleet, it last started an hour ago.
    pub fn add_instance(&self, config: InstanceConfig) {
        self.add_instance_at(config, self.now());
    }

    fn add_instance_at(&self, config: InstanceConfig, now: jiff::Timestamp) {
        let started = now - jiff::SignedDuration::from_hours(1);
        let instance = Instance {
            view: InstanceView {
                id: config.id.clone(),
                region: config.region,
                io_optimized: config.io_optimized,
                status: config.status,
                set_password: None,
                effective_password: None,
                reboot_count: 0,
                start_time: minute(started),
            },
            started,
        };
        self.lock().instances.insert(config.id, instance);
    }

    pub fn access_key(&self, id: &str) -> Option<AccessKeyConfig> {
        self.lock().access_keys.get(id).cloned()
    }

    /// Records a nonce; false when it was used within the window.
    pub fn use_nonce(&self, nonce: &str, now: jiff::Timestamp) -> bool {
        let mut inner = self.lock();
        while let Some((at, _)) = inner.nonce_order.front() {
            if now.duration_since(*at).unsigned_abs() < NONCE_WINDOW
                && inner.nonce_order.len() < MAX_NONCES
            {
                break;
            }
            if let Some((_, old)) = inner.nonce_order.pop_front() {
                inner.nonces.remove(&old);
            }
        }
        if !inner.nonces.insert(nonce.to_string()) {
            return false;
        }
        inner.nonce_order.push_back((now, nonce.to_string()));
        true
    }

    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: FaultConfig) {
        let mut inner = self.lock();
        inner.limiter = limiter_for(&faults);
        inner.faults = faults;
    }

    /// Throttles the next `count` authenticated calls (of `action` only, when given).
    pub fn throttle_next(&self, count: u32, action: Option<&str>) {
        let mut inner = self.lock();
        inner.faults.throttle_next = count;
        inner.faults.throttle_action = action.map(str::to_string);
    }

    pub fn set_error_rate(&self, rate: f64) {
        self.lock().faults.error_rate = rate.clamp(0.0, 1.0);
    }

    /// Whether flow control refuses this authenticated call.
    pub fn throttles(&self, access_key_id: &str, action: &str) -> bool {
        let mut inner = self.lock();
        let applies = inner
            .faults
            .throttle_action
            .as_deref()
            .is_none_or(|a| a == action);
        if inner.faults.throttle_next > 0 && applies {
            inner.faults.throttle_next -= 1;
            return true;
        }
        inner
            .limiter
            .as_ref()
            .is_some_and(|l| l.check_key(&access_key_id.to_string()).is_err())
    }

    pub fn record(&self, record: CallRecord) {
        let mut inner = self.lock();
        *inner
            .counts
            .entry(record.action.clone())
            .or_default()
            .entry(record.code.clone())
            .or_default() += 1;
        if inner.calls.len() >= MAX_LOGGED_CALLS {
            inner.calls.pop_front();
        }
        inner.calls.push_back(record);
    }

    /// Calls of `action`, whatever their result.
    pub fn calls(&self, action: &str) -> usize {
        self.lock()
            .counts
            .get(action)
            .map_or(0, |c| c.values().sum::<u64>() as usize)
    }

    pub fn calls_with_code(&self, action: &str, code: &str) -> usize {
        self.lock()
            .counts
            .get(action)
            .and_then(|c| c.get(code))
            .copied()
            .unwrap_or(0) as usize
    }

    pub fn total_calls(&self) -> usize {
        self.lock()
            .counts
            .values()
            .flat_map(|c| c.values())
            .sum::<u64>() as usize
    }

    pub fn counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.lock().counts.clone()
    }

    pub fn call_log(&self) -> Vec<CallRecord> {
        self.lock().calls.iter().cloned().collect()
    }

    pub fn reset_log(&self) {
        let mut inner = self.lock();
        inner.calls.clear();
        inner.counts.clear();
    }

    pub fn instance(&self, id: &str) -> Option<InstanceView> {
        self.lock().instances.get(id).map(|i| i.view.clone())
    }

    pub fn instances(&self) -> Vec<InstanceView> {
        self.lock()
            .instances
            .values()
            .map(|i| i.view.clone())
            .collect()
    }

    pub fn set_status(&self, id: &str, status: &str) -> Result<(), String> {
        if !STATUSES.contains(&status) {
            return Err(format!("unknown status {status:?}; one of {STATUSES:?}"));
        }
        let mut inner = self.lock();
        let instance = inner
            .instances
            .get_mut(id)
            .ok_or_else(|| format!("no instance {id}"))?;
        instance.view.status = status.to_string();
        Ok(())
    }

    pub fn region_known(&self, region: &str) -> bool {
        KNOWN_REGIONS.contains(&region)
            || self
                .lock()
                .instances
                .values()
                .any(|i| i.view.region == region)
    }

    /// ModifyInstanceVncPasswd after authentication.
    pub fn modify_vnc_password(
        &self,
        region: &str,
        id: &str,
        password: &str,
    ) -> Result<(), EcsFault> {
        if password.len() != 6 || !password.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(EcsFault::new(
                400,
                "IncorrectVncPassword.Malformed",
                "The specified parameter VncPassword is not valid.",
            ));
        }
        if !self.region_known(region) {
            return Err(EcsFault::region_not_found());
        }
        let mut inner = self.lock();
        let instance = inner
            .instances
            .get_mut(id)
            .filter(|i| i.view.region == region)
            .ok_or_else(EcsFault::instance_not_found)?;
        match instance.view.status.as_str() {
            "Released" => Err(EcsFault::new(
                404,
                "NoSuchResource",
                "The specified resource is not found.",
            )),
            "Pending" | "Starting" | "Stopping" => Err(EcsFault::incorrect_status()),
            _ => {
                instance.view.set_password = Some(password.to_string());
                if instance.view.io_optimized {
                    instance.view.effective_password = Some(password.to_string());
                }
                Ok(())
            }
        }
    }

    /// RebootInstance (API or console). The pending password takes effect and `StartTime` moves.
    /// Returns whether the instance passes through `Starting` (the caller finishes it later).
    pub fn reboot(&self, region: Option<&str>, id: &str) -> Result<bool, EcsFault> {
        if let Some(region) = region
            && !self.region_known(region)
        {
            return Err(EcsFault::region_not_found());
        }
        let now = self.now();
        let slow = !self.reboot_duration.is_zero();
        let mut inner = self.lock();
        let instance = inner
            .instances
            .get_mut(id)
            .filter(|i| region.is_none_or(|r| i.view.region == r))
            .ok_or_else(EcsFault::instance_not_found)?;
        match instance.view.status.as_str() {
            "Released" => {
                return Err(EcsFault::new(
                    404,
                    "NoSuchResource",
                    "The specified resource is not found.",
                ));
            }
            "Running" => {}
            _ => return Err(EcsFault::incorrect_status()),
        }
        instance.view.reboot_count += 1;
        instance.view.effective_password = instance.view.set_password.clone();
        instance.started = now;
        instance.view.start_time = minute(now);
        instance.view.status = if slow { "Starting" } else { "Running" }.to_string();
        Ok(slow)
    }

    /// Ends a slow reboot.
    pub fn finish_start(&self, id: &str) {
        if let Some(i) = self.lock().instances.get_mut(id)
            && i.view.status == "Starting"
        {
            i.view.status = "Running".into();
        }
    }

    /// Instances of `region` with the given IDs (all when `ids` is `None`), released ones left out.
    pub fn describe(
        &self,
        region: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<InstanceView>, EcsFault> {
        if !self.region_known(region) {
            return Err(EcsFault::region_not_found());
        }
        Ok(self
            .lock()
            .instances
            .values()
            .filter(|i| i.view.region == region && i.view.status != "Released")
            .filter(|i| ids.is_none_or(|ids| ids.contains(&i.view.id)))
            .map(|i| i.view.clone())
            .collect())
    }
}
