//! Injected faults: what happens to one request before the ECS logic sees it (latency, a dropped
//! connection, a 5xx), and flow control after authentication (throttle the next N calls, a token
//! bucket per AccessKey). Decisions take the random source as an argument so they are testable.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;

use super::config::FaultConfig;
use super::state::EcsFault;

/// Distinct AccessKeyIds with a bucket; beyond this (a flood of made-up keys, which fail
/// authentication anyway) the buckets start over rather than grow.
const MAX_BUCKETS: usize = 10_000;

/// Error codes are `&'static str` in `EcsFault`; injected codes are interned once each, at most
/// `MAX_CODES` of them (a test uses a handful; past that every code reads `InjectedError`).
fn leak_code(code: &str) -> &'static str {
    const MAX_CODES: usize = 256;
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static CODES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut codes = CODES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = codes.get(code) {
        return c;
    }
    if codes.len() >= MAX_CODES {
        return "InjectedError";
    }
    let leaked: &'static str = Box::leak(code.to_string().into_boxed_str());
    codes.insert(leaked);
    leaked
}

/// What to do to one request before answering it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub delay: Duration,
    /// Close the connection without an answer.
    pub drop: bool,
    /// Answer this server error instead of serving the call.
    pub error: Option<EcsFault>,
}

pub struct Faults {
    config: FaultConfig,
    buckets: HashMap<String, DefaultDirectRateLimiter>,
    quota: Option<Quota>,
    /// Buckets per (account, action), as ECS limits each API per account.
    api_buckets: HashMap<(String, String), DefaultDirectRateLimiter>,
    api_quota: Option<Quota>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        let config = sanitize(config);
        Self {
            quota: quota(config.qps_per_access_key),
            buckets: HashMap::new(),
            api_quota: quota(config.qps_per_api),
            api_buckets: HashMap::new(),
            config,
        }
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// The fate of the next request.
    pub fn plan(&self, rng: &mut impl Rng) -> Plan {
        let c = &self.config;
        let jitter = if c.latency_jitter_ms > 0 {
            rng.random_range(0..=c.latency_jitter_ms)
        } else {
            0
        };
        let drop = c.drop_rate > 0.0 && rng.random::<f64>() < c.drop_rate;
        let error = (!drop && c.error_rate > 0.0 && rng.random::<f64>() < c.error_rate).then(|| {
            if rng.random::<bool>() {
                EcsFault::new(
                    503,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                )
            } else {
                EcsFault::new(
                    500,
                    "InternalError",
                    "The request processing has failed due to some unknown error, exception or failure.",
                )
            }
        });
        Plan {
            delay: Duration::from_millis(c.latency_ms.saturating_add(jitter)),
            drop,
            error,
        }
    }

    /// Throttles the next `count` authenticated calls (of `action` only, when given).
    pub fn throttle_next(&mut self, count: u32, action: Option<&str>) {
        self.config.throttle_next = count;
        self.config.throttle_action = action.map(str::to_string);
    }

    /// Queues `rule`: its next `count` calls of its action get its error.
    pub fn fail_next(&mut self, rule: super::config::FailNext) {
        self.config.fail_next.push(rule);
    }

    /// The injected error for this authenticated call, if a `failNext` rule applies (it is used up
    /// one call at a time).
    pub fn injected_error(&mut self, action: &str) -> Option<EcsFault> {
        let rules = &mut self.config.fail_next;
        let i = rules
            .iter()
            .position(|r| r.action == action && r.count > 0)?;
        let rule = &mut rules[i];
        rule.count -= 1;
        let fault = EcsFault::new(
            rule.status,
            leak_code(&rule.code),
            format!("Injected by the simulator: {}.", rule.code),
        );
        if rule.count == 0 {
            rules.remove(i);
        }
        Some(fault)
    }

    pub fn set_error_rate(&mut self, rate: f64) {
        self.config.error_rate = unit(rate);
    }

    /// Whether flow control refuses this authenticated call of `access_key_id` (of `account`). A
    /// call refused by `throttle_next` takes no token from the bucket.
    pub fn throttles(&mut self, access_key_id: &str, account: &str, action: &str) -> bool {
        let applies = self
            .config
            .throttle_action
            .as_deref()
            .is_none_or(|a| a == action);
        if self.config.throttle_next > 0 && applies {
            self.config.throttle_next -= 1;
            return true;
        }
        if let Some(quota) = self.api_quota {
            let key = (account.to_string(), action.to_string());
            if !self.api_buckets.contains_key(&key) && self.api_buckets.len() >= MAX_BUCKETS {
                self.api_buckets.clear();
            }
            let refused = self
                .api_buckets
                .entry(key)
                .or_insert_with(|| RateLimiter::direct(quota))
                .check()
                .is_err();
            if refused {
                return true;
            }
        }
        let Some(quota) = self.quota else {
            return false;
        };
        if !self.buckets.contains_key(access_key_id) && self.buckets.len() >= MAX_BUCKETS {
            self.buckets.clear();
        }
        self.buckets
            .entry(access_key_id.to_string())
            .or_insert_with(|| RateLimiter::direct(quota))
            .check()
            .is_err()
    }
}

fn unit(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn sanitize(mut c: FaultConfig) -> FaultConfig {
    c.error_rate = unit(c.error_rate);
    c.drop_rate = unit(c.drop_rate);
    c.qps_per_access_key = c.qps_per_access_key.filter(|q| q.is_finite() && *q > 0.0);
    c.qps_per_api = c.qps_per_api.filter(|q| q.is_finite() && *q > 0.0);
    c
}

/// Burst = one second's worth (at least one call), refilled at `qps`.
fn quota(qps: Option<f64>) -> Option<Quota> {
    let qps = qps?;
    let burst = NonZeroU32::new(qps.ceil().min(f64::from(u32::MAX)) as u32)?;
    Quota::with_period(Duration::from_secs_f64(1.0 / qps)).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn no_faults_by_default() {
        let f = Faults::new(FaultConfig::default());
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(f.plan(&mut rng), Plan::default());
        }
    }

    #[test]
    fn certain_faults_always_happen_and_latency_stays_in_its_range() {
        let mut rng = StdRng::seed_from_u64(2);
        let f = Faults::new(FaultConfig {
            error_rate: 1.0,
            latency_ms: 10,
            latency_jitter_ms: 5,
            ..Default::default()
        });
        for _ in 0..100 {
            let p = f.plan(&mut rng);
            assert!(!p.drop);
            assert!(matches!(
                p.error.map(|e| (e.status, e.code)),
                Some((503, "ServiceUnavailable")) | Some((500, "InternalError"))
            ));
            assert!((10..=15).contains(&p.delay.as_millis()));
        }
        let f = Faults::new(FaultConfig {
            drop_rate: 7.0, // clamped to 1
            error_rate: f64::NAN,
            ..Default::default()
        });
        let p = f.plan(&mut rng);
        assert!(p.drop && p.error.is_none());
    }

    #[test]
    fn throttle_next_counts_down_for_its_action_only() {
        let mut f = Faults::new(FaultConfig::default());
        f.throttle_next(2, Some("ModifyInstanceVncPasswd"));
        assert!(!f.throttles("k", "1", "DescribeInstances"));
        assert!(f.throttles("k", "1", "ModifyInstanceVncPasswd"));
        assert!(f.throttles("k", "1", "ModifyInstanceVncPasswd"));
        assert!(!f.throttles("k", "1", "ModifyInstanceVncPasswd"));
    }

    #[test]
    fn the_token_bucket_is_per_access_key() {
        let mut f = Faults::new(FaultConfig {
            qps_per_access_key: Some(2.0),
            ..Default::default()
        });
        let a: Vec<bool> = (0..4).map(|_| f.throttles("a", "1", "X")).collect();
        assert_eq!(a, [false, false, true, true]);
        assert!(!f.throttles("b", "1", "X"), "per key");
        let mut f = Faults::new(FaultConfig {
            qps_per_api: Some(2.0),
            ..Default::default()
        });
        let a: Vec<bool> = (0..2).map(|_| f.throttles("a", "1", "X")).collect();
        assert_eq!(a, [false, false]);
        assert!(f.throttles("b", "1", "X"), "per account and action");
        assert!(
            !f.throttles("a", "1", "Y"),
            "another action has its own bucket"
        );
        assert!(
            !f.throttles("c", "2", "X"),
            "another account has its own bucket"
        );
        assert!(
            Faults::new(FaultConfig {
                qps_per_access_key: Some(-1.0),
                ..Default::default()
            })
            .quota
            .is_none()
        );
    }
}
