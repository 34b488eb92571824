//! The simulator's state: instances with their set and effective VNC passwords, the call log,
//! the used nonces and the faults. Transitions are plain methods under one short-held lock; time
//! comes from an injectable clock, so a reboot's `Starting` phase ends when the clock says so
//! (checked on every read) rather than by a background task.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use super::config::{AccessKeyConfig, FaultConfig, InstanceConfig, SimulatorConfig};
use super::faults::{Faults, Plan};

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

/// Nonces are remembered for as long as a timestamp is accepted (15 minutes either way)...
const NONCE_WINDOW_SECONDS: i64 = 15 * 60;
/// ...but at most this many (16 bytes each, plus the set's overhead: ~50 MB at most). Past it the
/// oldest are forgotten first, which at 5,000 calls/s still covers more than three minutes.
const MAX_NONCES: usize = 1_000_000;
const MAX_LOGGED_CALLS: usize = 10_000;
/// Distinct action names counted; further unknown names (they come from the request) share one
/// `(other)` entry so the counts stay bounded.
const MAX_COUNTED_ACTIONS: usize = 64;

/// A source of the current time.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

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
    /// The instance's ECS tags, key → value.
    pub tags: BTreeMap<String, String>,
}

/// One `Tag.N` filter of DescribeInstances: the key, and the value unless only the key was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: Option<String>,
}

impl TagFilter {
    /// A key alone matches whatever the value (ListTagResources states the rule for ECS's `Tag.N`
    /// pairs: https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-listtagresources).
    fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(&self.key)
            .is_some_and(|v| self.value.as_ref().is_none_or(|want| want == v))
    }
}

/// With tag filters, DescribeInstances shows at most this many instances ("up to 1,000 resources
/// that are bound with all these tags",
/// https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-describeinstances).
pub const MAX_TAGGED_RESULTS: usize = 1000;

#[derive(Debug, Clone)]
struct Instance {
    view: InstanceView,
    /// While rebooting: when the instance is `Running` again.
    ready_at: Option<jiff::Timestamp>,
}

impl Instance {
    /// Ends a reboot whose time is up.
    fn settle(&mut self, now: jiff::Timestamp) -> &mut Self {
        if self.ready_at.is_some_and(|t| now >= t) {
            self.ready_at = None;
            self.view.status = "Running".into();
        }
        self
    }
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
    /// The request's signature: `v1` (HMAC-SHA1 RPC) or `v3` (ACS3-HMAC-SHA256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
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
    fn no_such_resource() -> Self {
        Self::new(
            404,
            "NoSuchResource",
            "The specified resource is not found.",
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
    /// When temporary keys issued by the simulated STS or metadata service stop working.
    expirations: HashMap<String, jiff::Timestamp>,
    /// Temporary keys issued, by who issued them (`AssumeRoleWithOIDC`, `EcsRamRole`).
    issued: BTreeMap<&'static str, u64>,
    /// Who each temporary key is (the role it was issued for).
    principals: HashMap<String, Principal>,
    /// STS GetCallerIdentity requests received, answered or refused.
    caller_identity_calls: u64,
    /// Metadata session tokens and when they expire.
    metadata_tokens: HashMap<String, jiff::Timestamp>,
    /// Keyed 64-bit hashes of the used nonces (a collision needs ~2^32 nonces in the window).
    nonces: HashSet<u64>,
    nonce_order: VecDeque<(i64, u64)>,
    counts: BTreeMap<String, BTreeMap<String, u64>>,
    calls: VecDeque<CallRecord>,
    faults: Faults,
    reboot_duration: Duration,
    /// Above `reboot_duration`: each reboot takes a random time between the two.
    reboot_duration_max: Duration,
}

pub struct SimState {
    inner: Mutex<Inner>,
    sts: Option<super::config::StsConfig>,
    metadata: Option<super::config::MetadataConfig>,
    clock: RwLock<Clock>,
    nonce_hasher: RandomState,
    /// Keys the `NextToken`s this simulator hands out, so that it recognises only its own.
    token_hasher: RandomState,
}

/// Who a key is, as STS `GetCallerIdentity` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account_id: String,
    pub arn: String,
    /// `RAMUser` or `AssumedRoleUser`.
    pub identity_type: &'static str,
    pub principal_id: String,
    pub user_id: Option<String>,
    pub role_id: Option<String>,
}

impl Principal {
    /// A session of the RAM role `role_arn` (`acs:ram::<account>:role/<name>`).
    pub fn assumed_role(role_arn: &str, session: &str) -> Self {
        let account = role_arn
            .strip_prefix("acs:ram::")
            .and_then(|rest| rest.split(':').next())
            .filter(|a| !a.is_empty())
            .unwrap_or(super::config::DEFAULT_ACCOUNT_ID);
        let name = role_arn.rsplit('/').next().unwrap_or_default();
        let role_id = numeric_id(role_arn);
        Self {
            account_id: account.to_string(),
            arn: format!("acs:ram::{account}:assumed-role/{name}/{session}"),
            identity_type: "AssumedRoleUser",
            principal_id: format!("{role_id}:{session}"),
            user_id: None,
            role_id: Some(role_id),
        }
    }
}

/// A stable 17-digit ID for a simulated user or role (RAM's IDs are numeric).
fn numeric_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    format!("3{:016}", u64::from_be_bytes(n) % 10_000_000_000_000_000)
}

fn minute(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%MZ").to_string()
}

fn reboot_duration(seconds: f64) -> Duration {
    if seconds.is_finite() {
        Duration::from_secs_f64(seconds.clamp(0.0, 3600.0))
    } else {
        Duration::ZERO
    }
}

impl SimState {
    pub fn new(config: &SimulatorConfig) -> Self {
        let state = Self {
            inner: Mutex::new(Inner {
                instances: BTreeMap::new(),
                access_keys: config
                    .access_keys
                    .iter()
                    .map(|k| (k.id.clone(), k.clone()))
                    .collect(),
                expirations: HashMap::new(),
                issued: BTreeMap::new(),
                principals: HashMap::new(),
                caller_identity_calls: 0,
                metadata_tokens: HashMap::new(),
                nonces: HashSet::new(),
                nonce_order: VecDeque::new(),
                counts: BTreeMap::new(),
                calls: VecDeque::new(),
                faults: Faults::new(config.faults.clone()),
                reboot_duration: reboot_duration(config.reboot_seconds),
                reboot_duration_max: reboot_duration(config.reboot_seconds_max),
            }),
            sts: config.sts.clone(),
            metadata: config.metadata.clone(),
            clock: RwLock::new(Arc::new(jiff::Timestamp::now)),
            nonce_hasher: RandomState::new(),
            token_hasher: RandomState::new(),
        };
        for instance in &config.instances {
            state.add_instance(instance.clone());
        }
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The simulator's idea of now: the timestamp window, nonce memory, `StartTime` and the end of
    /// a reboot all follow it.
    pub fn now(&self) -> jiff::Timestamp {
        let clock = self.clock.read().unwrap_or_else(|p| p.into_inner()).clone();
        clock()
    }

    /// Replaces the clock (default `jiff::Timestamp::now`), e.g. to test skew or a slow reboot.
    pub fn set_clock(&self, clock: impl Fn() -> jiff::Timestamp + Send + Sync + 'static) {
        *self.clock.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(clock);
    }

    /// How long a rebooted instance stays `Starting` (0: it is `Running` again at once).
    pub fn set_reboot_duration(&self, duration: Duration) {
        self.lock().reboot_duration = duration;
    }

    /// Adds (or replaces) an instance. Like a real fleet, it last started an hour ago.
    pub fn add_instance(&self, config: InstanceConfig) {
        let started = self.now() - jiff::SignedDuration::from_hours(1);
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
                tags: config.tags,
            },
            ready_at: None,
        };
        self.lock().instances.insert(config.id, instance);
    }

    /// Adds a temporary key of `principal` (an assumed role) that stops working at `expiration`
    /// (issued by `issuer`).
    pub fn add_temporary_key(
        &self,
        key: AccessKeyConfig,
        expiration: jiff::Timestamp,
        issuer: &'static str,
        principal: Principal,
    ) {
        let mut inner = self.lock();
        let now = self.now();
        // Forget keys long expired, so a long run does not grow without bound.
        let stale: Vec<String> = inner
            .expirations
            .iter()
            .filter(|(_, e)| (now.duration_since(**e)).as_secs() > 3600)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            inner.expirations.remove(&k);
            inner.access_keys.remove(&k);
            inner.principals.remove(&k);
        }
        inner.expirations.insert(key.id.clone(), expiration);
        inner.principals.insert(key.id.clone(), principal);
        *inner.issued.entry(issuer).or_default() += 1;
        inner.access_keys.insert(key.id.clone(), key);
    }

    pub fn sts_config(&self) -> Option<&super::config::StsConfig> {
        self.sts.as_ref()
    }

    pub fn metadata_config(&self) -> Option<&super::config::MetadataConfig> {
        self.metadata.as_ref()
    }

    /// Whether `id` is a temporary key past its expiration.
    pub fn key_expired(&self, id: &str) -> bool {
        let expiration = self.lock().expirations.get(id).copied();
        expiration.is_some_and(|e| self.now() >= e)
    }

    /// Who key `id` is, as STS `GetCallerIdentity` answers: the role a temporary key was issued
    /// for, else a RAM user (of the key's `accountId`) named after the key.
    pub fn principal(&self, id: &str) -> Option<Principal> {
        let inner = self.lock();
        if let Some(p) = inner.principals.get(id) {
            return Some(p.clone());
        }
        let key = inner.access_keys.get(id)?;
        let user_id = numeric_id(id);
        Some(Principal {
            account_id: key.account().to_string(),
            arn: format!(
                "acs:ram::{}:user/sim-{}",
                key.account(),
                id.to_ascii_lowercase()
            ),
            identity_type: "RAMUser",
            principal_id: user_id.clone(),
            user_id: Some(user_id),
            role_id: None,
        })
    }

    /// Counts one GetCallerIdentity request.
    pub fn count_caller_identity(&self) {
        self.lock().caller_identity_calls += 1;
    }

    /// GetCallerIdentity requests received so far (answered or refused).
    pub fn caller_identity_calls(&self) -> u64 {
        self.lock().caller_identity_calls
    }

    /// Temporary keys issued so far by `issuer` (`AssumeRoleWithOIDC`, `EcsRamRole`).
    pub fn issued(&self, issuer: &str) -> u64 {
        self.lock().issued.get(issuer).copied().unwrap_or(0)
    }

    pub fn add_metadata_token(&self, token: String, expiration: jiff::Timestamp) {
        let now = self.now();
        let mut inner = self.lock();
        inner.metadata_tokens.retain(|_, e| *e > now);
        inner.metadata_tokens.insert(token, expiration);
    }

    pub fn metadata_token_valid(&self, token: &str) -> bool {
        let now = self.now();
        self.lock()
            .metadata_tokens
            .get(token)
            .is_some_and(|e| *e > now)
    }

    pub fn access_key(&self, id: &str) -> Option<AccessKeyConfig> {
        self.lock().access_keys.get(id).cloned()
    }

    /// Records a nonce; false when it was used within the window.
    pub fn use_nonce(&self, nonce: &str, now: jiff::Timestamp) -> bool {
        let hash = self.nonce_hasher.hash_one(nonce);
        let now = now.as_second();
        let mut inner = self.lock();
        while let Some(&(at, old)) = inner.nonce_order.front() {
            if (now - at).abs() <= NONCE_WINDOW_SECONDS && inner.nonce_order.len() < MAX_NONCES {
                break;
            }
            inner.nonce_order.pop_front();
            inner.nonces.remove(&old);
        }
        if !inner.nonces.insert(hash) {
            return false;
        }
        inner.nonce_order.push_back((now, hash));
        true
    }

    /// Nonces currently remembered.
    pub fn remembered_nonces(&self) -> usize {
        self.lock().nonces.len()
    }

    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.config().clone()
    }

    /// Replaces every fault setting (probabilities are clamped to 0..1).
    pub fn set_faults(&self, faults: FaultConfig) {
        self.lock().faults = Faults::new(faults);
    }

    /// Throttles the next `count` authenticated calls (of `action` only, when given).
    pub fn throttle_next(&self, count: u32, action: Option<&str>) {
        self.lock().faults.throttle_next(count, action);
    }

    /// Answers the next `rule.count` calls of `rule.action` with `rule.code`.
    pub fn fail_next(&self, rule: super::config::FailNext) {
        self.lock().faults.fail_next(rule);
    }

    /// The error a `failNext` rule injects into this authenticated call, if any.
    pub fn injected_error(&self, action: &str) -> Option<EcsFault> {
        self.lock().faults.injected_error(action)
    }

    /// Whether this AccessKey may not describe instances (ECS then answers an empty list).
    pub fn describe_denied(&self, access_key_id: &str) -> bool {
        self.lock()
            .faults
            .config()
            .describe_denied_keys
            .iter()
            .any(|k| k == access_key_id)
    }

    /// Whether one of `ids` is configured to make DescribeInstances fail.
    pub fn refuses_describe_of(&self, ids: &[String]) -> bool {
        let inner = self.lock();
        let refused = &inner.faults.config().refuse_describe_ids;
        ids.iter().any(|id| refused.contains(id))
    }

    /// Probability of a 5xx answer.
    pub fn set_error_rate(&self, rate: f64) {
        self.lock().faults.set_error_rate(rate);
    }

    /// Latency, dropped connection or 5xx for the next request.
    pub fn plan_faults(&self) -> Plan {
        self.lock().faults.plan(&mut rand::rng())
    }

    /// Whether flow control refuses this authenticated call.
    /// Whether flow control refuses this call (per key, or per the key's account and action).
    pub fn throttles(&self, access_key_id: &str, action: &str) -> bool {
        let mut inner = self.lock();
        let account = inner
            .access_keys
            .get(access_key_id)
            .map(|k| k.account().to_string())
            .unwrap_or_default();
        inner.faults.throttles(access_key_id, &account, action)
    }

    pub fn record(&self, mut record: CallRecord) {
        let mut inner = self.lock();
        if !inner.counts.contains_key(&record.action) && inner.counts.len() >= MAX_COUNTED_ACTIONS {
            record.action = "(other)".into();
        }
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
        let now = self.now();
        self.lock()
            .instances
            .get_mut(id)
            .map(|i| i.settle(now).view.clone())
    }

    pub fn instances(&self) -> Vec<InstanceView> {
        let now = self.now();
        self.lock()
            .instances
            .values_mut()
            .map(|i| i.settle(now).view.clone())
            .collect()
    }

    /// Sets an instance's status, as the console would leave it (`Released`: deleted).
    pub fn set_status(&self, id: &str, status: &str) -> Result<(), String> {
        if !STATUSES.contains(&status) {
            return Err(format!("unknown status {status:?}; one of {STATUSES:?}"));
        }
        let mut inner = self.lock();
        let instance = inner
            .instances
            .get_mut(id)
            .ok_or_else(|| format!("no instance {id}"))?;
        instance.ready_at = None;
        instance.view.status = status.to_string();
        Ok(())
    }

    /// Replaces an instance's tags, as the console or TagResources/UntagResources would leave
    /// them; refused outside ECS's limits ([`super::config::validate_tags`]).
    pub fn set_tags(
        &self,
        id: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<InstanceView, String> {
        super::config::validate_tags(&tags)?;
        let now = self.now();
        let mut inner = self.lock();
        let instance = inner
            .instances
            .get_mut(id)
            .ok_or_else(|| format!("no instance {id}"))?;
        instance.view.tags = tags;
        Ok(instance.settle(now).view.clone())
    }

    /// An opaque `NextToken` for the page after the instance `last_id`: the ID and a keyed hash of
    /// it, hex-encoded, so that a token this simulator did not hand out is refused.
    pub fn next_token(&self, last_id: &str) -> String {
        let mut token = hex::encode(last_id);
        token.push_str(&format!("{:016x}", self.token_hasher.hash_one(last_id)));
        token
    }

    /// The instance ID a [`Self::next_token`] token continues after; `None` for anything else.
    pub fn token_after(&self, token: &str) -> Option<String> {
        let split = token.len().checked_sub(16).filter(|n| *n > 0)?;
        let (id, mac) = (token.get(..split)?, token.get(split..)?);
        let id = String::from_utf8(hex::decode(id).ok()?).ok()?;
        (format!("{:016x}", self.token_hasher.hash_one(&id)) == mac).then_some(id)
    }

    fn region_known(inner: &Inner, region: &str) -> bool {
        KNOWN_REGIONS.contains(&region) || inner.instances.values().any(|i| i.view.region == region)
    }

    /// ModifyInstanceVncPasswd after authentication.
    pub fn modify_vnc_password(
        &self,
        region: &str,
        id: &str,
        password: &str,
    ) -> Result<(), EcsFault> {
        let all_kinds = [
            u8::is_ascii_uppercase as fn(&u8) -> bool,
            u8::is_ascii_lowercase,
            u8::is_ascii_digit,
        ]
        .iter()
        .all(|kind| password.bytes().any(|b| kind(&b)));
        let strict = self.lock().faults.config().password_requires_all_kinds;
        if password.len() != 6
            || !password.bytes().all(|b| b.is_ascii_alphanumeric())
            || (strict && !all_kinds)
        {
            return Err(EcsFault::new(
                400,
                "IncorrectVncPassword.Malformed",
                "The specified parameter VncPassword is not valid.",
            ));
        }
        let now = self.now();
        let mut inner = self.lock();
        if !Self::region_known(&inner, region) {
            return Err(EcsFault::region_not_found());
        }
        let instance = inner
            .instances
            .get_mut(id)
            .filter(|i| i.view.region == region)
            .ok_or_else(EcsFault::instance_not_found)?
            .settle(now);
        match instance.view.status.as_str() {
            "Released" => Err(EcsFault::no_such_resource()),
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

    /// RebootInstance (API, or the console when `region` is `None`): only a `Running` instance
    /// reboots; the pending password takes effect, `StartTime` moves to now and the reboot count
    /// goes up; the instance is `Starting` for the reboot duration, then `Running`.
    pub fn reboot(&self, region: Option<&str>, id: &str) -> Result<(), EcsFault> {
        let now = self.now();
        let mut inner = self.lock();
        if let Some(region) = region
            && !Self::region_known(&inner, region)
        {
            return Err(EcsFault::region_not_found());
        }
        let duration = if inner.reboot_duration_max > inner.reboot_duration {
            let (lo, hi) = (inner.reboot_duration, inner.reboot_duration_max);
            lo + (hi - lo).mul_f64(rand::random::<f64>())
        } else {
            inner.reboot_duration
        };
        let instance = inner
            .instances
            .get_mut(id)
            .filter(|i| region.is_none_or(|r| i.view.region == r))
            .ok_or_else(EcsFault::instance_not_found)?
            .settle(now);
        match instance.view.status.as_str() {
            "Released" => return Err(EcsFault::no_such_resource()),
            "Running" => {}
            _ => return Err(EcsFault::incorrect_status()),
        }
        instance.view.reboot_count += 1;
        instance.view.effective_password = instance.view.set_password.clone();
        instance.view.start_time = minute(now);
        if duration.is_zero() {
            instance.view.status = "Running".into();
        } else {
            instance.view.status = "Starting".into();
            instance.ready_at = jiff::SignedDuration::try_from(duration)
                .ok()
                .and_then(|d| now.checked_add(d).ok());
        }
        Ok(())
    }

    /// A reboot from the console: like RebootInstance without the region check.
    pub fn console_reboot(&self, id: &str) -> Result<InstanceView, EcsFault> {
        self.reboot(None, id)?;
        self.instance(id).ok_or_else(EcsFault::instance_not_found)
    }

    /// Instances of `region` with the given IDs (all when `ids` is `None`), released ones left out.
    pub fn describe(
        &self,
        region: &str,
        ids: Option<&[String]>,
    ) -> Result<Vec<InstanceView>, EcsFault> {
        self.describe_matching(region, ids, &[])
    }

    /// [`Self::describe`], keeping only instances that carry every tag of `tags` (ANDed, as
    /// DescribeInstances ANDs all its filters), in the order of their IDs. With tag filters, at most
    /// [`MAX_TAGGED_RESULTS`] instances.
    pub fn describe_matching(
        &self,
        region: &str,
        ids: Option<&[String]>,
        tags: &[TagFilter],
    ) -> Result<Vec<InstanceView>, EcsFault> {
        let now = self.now();
        let mut inner = self.lock();
        if !Self::region_known(&inner, region) {
            return Err(EcsFault::region_not_found());
        }
        let limit = if tags.is_empty() {
            usize::MAX
        } else {
            MAX_TAGGED_RESULTS
        };
        Ok(inner
            .instances
            .values_mut()
            .filter(|i| i.view.region == region && i.view.status != "Released")
            .filter(|i| ids.is_none_or(|ids| ids.contains(&i.view.id)))
            .filter(|i| tags.iter().all(|t| t.matches(&i.view.tags)))
            .take(limit)
            .map(|i| i.settle(now).view.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn state_with_clock() -> (SimState, Arc<AtomicI64>) {
        let state = SimState::new(&SimulatorConfig {
            instances: vec![InstanceConfig {
                id: "i-1".into(),
                region: "cn-hangzhou".into(),
                io_optimized: false,
                status: "Running".into(),
                tags: BTreeMap::new(),
            }],
            reboot_seconds: 30.0,
            ..Default::default()
        });
        let seconds = Arc::new(AtomicI64::new(1_700_000_000));
        let s = seconds.clone();
        state.set_clock(move || {
            jiff::Timestamp::from_second(s.load(Ordering::Relaxed)).unwrap_or_default()
        });
        (state, seconds)
    }

    #[test]
    fn a_slow_reboot_is_starting_until_its_time_is_up_and_refuses_password_changes() {
        let (state, clock) = state_with_clock();
        state
            .modify_vnc_password("cn-hangzhou", "i-1", "Abc123")
            .unwrap();
        assert_eq!(state.instance("i-1").unwrap().effective_password, None);
        let view = state.console_reboot("i-1").unwrap();
        assert_eq!(view.status, "Starting");
        assert_eq!(view.effective_password.as_deref(), Some("Abc123"));
        assert_eq!(view.start_time, "2023-11-14T22:13Z");
        assert_eq!(
            state
                .modify_vnc_password("cn-hangzhou", "i-1", "Abc124")
                .unwrap_err()
                .code,
            "IncorrectInstanceStatus"
        );
        assert_eq!(
            state.reboot(None, "i-1").unwrap_err().code,
            "IncorrectInstanceStatus"
        );
        clock.fetch_add(30, Ordering::Relaxed);
        assert_eq!(state.instance("i-1").unwrap().status, "Running");
        assert_eq!(state.instance("i-1").unwrap().reboot_count, 1);
    }

    #[test]
    fn released_instances_are_no_such_resource_and_not_described() {
        let (state, _) = state_with_clock();
        state.set_status("i-1", "Released").unwrap();
        assert_eq!(
            state
                .modify_vnc_password("cn-hangzhou", "i-1", "Abc123")
                .unwrap_err()
                .code,
            "NoSuchResource"
        );
        assert!(state.describe("cn-hangzhou", None).unwrap().is_empty());
        assert!(state.set_status("i-1", "Exploded").is_err());
    }

    fn tagged(id: &str, tags: &[(&str, &str)]) -> InstanceConfig {
        InstanceConfig {
            id: id.into(),
            region: "cn-hangzhou".into(),
            io_optimized: true,
            status: "Running".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn filter(key: &str, value: Option<&str>) -> TagFilter {
        TagFilter {
            key: key.into(),
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn tag_filters_are_anded_and_a_key_alone_matches_any_value() {
        let (state, _) = state_with_clock();
        state.add_instance(tagged("i-a", &[("team", "a"), ("env", "prod")]));
        state.add_instance(tagged("i-b", &[("team", "b"), ("env", "prod")]));
        state.add_instance(tagged("i-c", &[("team", "a")]));
        let ids = |tags: &[TagFilter]| -> Vec<String> {
            state
                .describe_matching("cn-hangzhou", None, tags)
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect()
        };
        assert_eq!(ids(&[filter("team", Some("a"))]), ["i-a", "i-c"]);
        assert_eq!(
            ids(&[filter("team", Some("a")), filter("env", Some("prod"))]),
            ["i-a"]
        );
        assert_eq!(ids(&[filter("env", None)]), ["i-a", "i-b"]);
        assert!(ids(&[filter("team", Some("A"))]).is_empty(), "exact match");
        assert_eq!(ids(&[]).len(), 4, "no filter: i-1 too");
        let only = ["i-b".to_string(), "i-c".to_string()];
        assert_eq!(
            state
                .describe_matching("cn-hangzhou", Some(&only), &[filter("env", None)])
                .unwrap()
                .len(),
            1
        );
        // Tags are replaced as a whole, within ECS's limits.
        let view = state
            .set_tags("i-c", [("env".to_string(), "dev".to_string())].into())
            .unwrap();
        assert_eq!(view.tags.len(), 1);
        assert_eq!(ids(&[filter("env", None)]), ["i-a", "i-b", "i-c"]);
        assert!(
            state
                .set_tags("i-c", [("acs:x".into(), "v".into())].into())
                .is_err()
        );
        assert!(state.set_tags("i-none", BTreeMap::new()).is_err());
    }

    #[test]
    fn tag_queries_show_at_most_a_thousand_instances() {
        let (state, _) = state_with_clock();
        for n in 0..MAX_TAGGED_RESULTS + 5 {
            state.add_instance(tagged(&format!("i-{n:05}"), &[("fleet", "big")]));
        }
        let tagged = state
            .describe_matching("cn-hangzhou", None, &[filter("fleet", None)])
            .unwrap();
        assert_eq!(tagged.len(), MAX_TAGGED_RESULTS);
        assert_eq!(
            state.describe("cn-hangzhou", None).unwrap().len(),
            MAX_TAGGED_RESULTS + 6
        );
    }

    #[test]
    fn next_tokens_are_recognised_only_as_handed_out() {
        let (state, _) = state_with_clock();
        let token = state.next_token("i-1");
        assert_eq!(state.token_after(&token).as_deref(), Some("i-1"));
        let (other, _) = state_with_clock();
        assert_eq!(other.token_after(&token), None, "another simulator's token");
        let mut tampered = state.next_token("i-2");
        tampered.replace_range(0..2, "6a");
        for bad in ["", "sim-4", "zz", &tampered, &token[..token.len() - 1]] {
            assert_eq!(state.token_after(bad), None, "{bad}");
        }
    }

    #[test]
    fn nonces_are_forgotten_after_the_window() {
        let (state, _) = state_with_clock();
        let t0 = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        assert!(state.use_nonce("n1", t0));
        assert!(!state.use_nonce("n1", t0 + jiff::SignedDuration::from_mins(15)));
        assert!(state.use_nonce("n2", t0 + jiff::SignedDuration::from_secs(15 * 60 + 1)));
        assert_eq!(state.remembered_nonces(), 1, "n1 left the window");
        assert!(state.use_nonce("n1", t0 + jiff::SignedDuration::from_secs(15 * 60 + 1)));
    }

    #[test]
    fn made_up_action_names_share_one_count() {
        let (state, _) = state_with_clock();
        for i in 0..200 {
            state.record(CallRecord {
                time: String::new(),
                action: format!("Made{i}"),
                code: "InvalidAction.NotFound".into(),
                http_status: 404,
                access_key_id: None,
                instance_id: None,
                vnc_password: None,
                signature: None,
            });
        }
        assert_eq!(
            state.counts().len(),
            MAX_COUNTED_ACTIONS + 1,
            "named ones and (other)"
        );
        assert_eq!(state.calls("(other)"), 200 - MAX_COUNTED_ACTIONS);
        assert_eq!(state.total_calls(), 200);
    }
}
