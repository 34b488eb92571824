//! Client-side flow control the way ECS counts: a token bucket per (account, region, action).
//!
//! ECS limits each API per account and region, and the console and every other tool of the account
//! draw from the same quota ("API rate limits", https://www.alibabacloud.com/help/en/ecs/developer-reference/api-throttling).
//! So DescribeInstances never takes ModifyInstanceVncPasswd's calls, and one tenant's account being
//! throttled never slows another's. The account is the one STS `GetCallerIdentity` names for the
//! credential ([`super::accounts`]): RAM users, roles and their temporary keys of one account share
//! its buckets; a credential STS does not vouch for has buckets of its own.
//!
//! Adaptive: a `Throttling*` answer halves the bucket's rate (at most once a second, however many
//! answers arrive together) down to a floor, and puts the bucket in debt for ECS's `TimeLeft`
//! when it says one; the rate then recovers by a tenth of the configured rate per second.
//!
//! Hand-written rather than with `governor` (used elsewhere): its quotas are fixed when a limiter
//! is built, and the adaptive rate is the point here. Callers reserve a slot and sleep on their
//! own, so no lock is held while waiting and a caller waiting on one bucket never delays another.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lowest a bucket slows to, as a fraction of its configured rate.
const FLOOR: f64 = 0.05;
/// Recovery per second, as a fraction of the configured rate.
const RECOVERY: f64 = 0.1;
/// The rate is halved at most this often.
const DECREASE_EVERY: Duration = Duration::from_secs(1);
/// Buckets unused for this long are dropped (when there are many).
const IDLE: Duration = Duration::from_secs(600);
const MANY: usize = 256;

/// `--ecs-qps`: calls per second per account, region and action. A plain number applies to every
/// action; `Action=N` pairs set single actions (a plain number among them sets the others), e.g.
/// `ModifyInstanceVncPasswd=20,DescribeInstances=50,RebootInstance=10` or `10,RebootInstance=2`.
#[derive(Debug, Clone, PartialEq)]
pub struct QpsLimits {
    default: f64,
    per_action: BTreeMap<String, f64>,
}

impl QpsLimits {
    pub fn uniform(qps: f64) -> Self {
        Self {
            default: qps,
            per_action: BTreeMap::new(),
        }
    }

    pub fn for_action(&self, action: &str) -> f64 {
        self.per_action.get(action).copied().unwrap_or(self.default)
    }
}

impl Default for QpsLimits {
    fn default() -> Self {
        Self::uniform(10.0)
    }
}

impl std::fmt::Display for QpsLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.default)?;
        for (action, qps) in &self.per_action {
            write!(f, ",{action}={qps}")?;
        }
        Ok(())
    }
}

impl FromStr for QpsLimits {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |text: &str, what: &str| -> Result<f64, String> {
            match text.trim().parse::<f64>() {
                Ok(q) if q.is_finite() && q > 0.0 => Ok(q),
                _ => Err(format!(
                    "{what}: {text:?} is not a positive number of calls per second"
                )),
            }
        };
        let mut limits = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => limits.default = number(part, "the ECS rate limit")?,
                Some((action, qps)) => {
                    let action = action.trim();
                    if action.is_empty() || !action.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(format!(
                            "{part:?}: expected ApiName=N, e.g. ModifyInstanceVncPasswd=20"
                        ));
                    }
                    let qps = number(qps, action)?;
                    limits.per_action.insert(action.to_string(), qps);
                }
            }
        }
        Ok(limits)
    }
}

/// Which bucket a call draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// The account ID (not a secret), or `unverified.<hash>` for a credential STS did not vouch
    /// for. Never an AccessKeyId: buckets are published on `/metrics`.
    pub account: String,
    pub region: String,
    pub action: &'static str,
}

/// One bucket's state, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketState {
    /// Calls per second it allows now.
    pub rate: f64,
    /// Throttling answers it has seen.
    pub throttles: u64,
}

struct Bucket {
    ceiling: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    rate: f64,
    /// May go negative: reservations not yet covered, or ECS's `TimeLeft` as debt.
    tokens: f64,
    last: Instant,
    last_decrease: Option<Instant>,
    throttles: u64,
    last_used: Instant,
}

impl Bucket {
    fn new(ceiling: f64, burst: f64, now: Instant) -> Self {
        Self {
            ceiling,
            burst,
            state: Mutex::new(State {
                rate: ceiling,
                tokens: burst,
                last: now,
                last_decrease: None,
                throttles: 0,
                last_used: now,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn advance(&self, s: &mut State, now: Instant) {
        let dt = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = s.last.max(now);
        let recovering = s
            .last_decrease
            .is_none_or(|d| now.saturating_duration_since(d) >= DECREASE_EVERY);
        if recovering && s.rate < self.ceiling {
            s.rate = (s.rate + self.ceiling * RECOVERY * dt).min(self.ceiling);
        }
        s.tokens = (s.tokens + dt * s.rate).min(self.burst);
    }

    /// How long until `deficit` more tokens have come in, at the rate as it recovers (a tenth of
    /// the configured rate more per second, up to it): a bucket slowed by throttling is not priced
    /// as if it stayed slow.
    fn time_for(&self, s: &State, now: Instant, deficit: f64) -> Duration {
        if deficit <= 0.0 {
            return Duration::ZERO;
        }
        let (r0, c) = (s.rate.max(f64::MIN_POSITIVE), self.ceiling);
        let k = c * RECOVERY;
        // Right after a decrease the rate holds for a while before it recovers.
        let hold = s
            .last_decrease
            .map(|d| {
                (d + DECREASE_EVERY)
                    .saturating_duration_since(now)
                    .as_secs_f64()
            })
            .unwrap_or(0.0);
        let seconds = if r0 >= c || k <= 0.0 || deficit <= r0 * hold {
            deficit / r0
        } else if hold > 0.0 {
            let rest = self.time_for(
                &State {
                    last_decrease: None,
                    ..*s
                },
                now,
                deficit - r0 * hold,
            );
            hold + rest.as_secs_f64()
        } else {
            // Tokens over t while recovering: r0·t + k·t²/2, until the rate reaches c at t_c.
            let t_c = (c - r0) / k;
            let during = r0 * t_c + k * t_c * t_c / 2.0;
            if deficit <= during {
                (-r0 + (r0 * r0 + 2.0 * k * deficit).sqrt()) / k
            } else {
                t_c + (deficit - during) / c
            }
        };
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }

    /// Takes one slot; returns how long the caller must wait before sending.
    fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.lock();
        self.advance(&mut s, now);
        s.last_used = now;
        s.tokens -= 1.0;
        self.time_for(&s, now, -s.tokens)
    }

    /// Gives back a slot taken and never used (its caller was cancelled or chose not to call).
    fn refund(&self, now: Instant) {
        let mut s = self.lock();
        self.advance(&mut s, now);
        s.tokens = (s.tokens + 1.0).min(self.burst);
    }

    /// How long a call taking the next slot would wait (nothing is taken).
    fn backlog(&self, now: Instant) -> Duration {
        let mut s = self.lock();
        self.advance(&mut s, now);
        self.time_for(&s, now, 1.0 - s.tokens)
    }

    fn throttled(&self, now: Instant, time_left: Option<Duration>) {
        let mut s = self.lock();
        self.advance(&mut s, now);
        s.throttles += 1;
        if s.last_decrease
            .is_none_or(|d| now.saturating_duration_since(d) >= DECREASE_EVERY)
        {
            s.rate = (s.rate / 2.0).max(self.ceiling * FLOOR);
            s.last_decrease = Some(now);
        }
        // Nothing more until ECS's window resets (or for one call's worth of time). The pause does
        // not stack: ten answers saying "1 s left" mean one second, not ten.
        let pause = time_left.unwrap_or_else(|| Duration::from_secs_f64(1.0 / s.rate));
        s.tokens = s.tokens.min(-(pause.as_secs_f64() * s.rate));
    }

    fn snapshot(&self) -> BucketState {
        let s = self.lock();
        BucketState {
            rate: s.rate,
            throttles: s.throttles,
        }
    }
}

/// Every bucket of one client.
pub struct RateLimits {
    limits: QpsLimits,
    burst: u32,
    buckets: Mutex<HashMap<BucketKey, Arc<Bucket>>>,
}

impl RateLimits {
    pub fn new(limits: QpsLimits, burst: u32) -> Self {
        Self {
            limits,
            burst,
            buckets: Mutex::default(),
        }
    }

    fn bucket(&self, key: &BucketKey, now: Instant) -> Arc<Bucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get(key) {
            return b.clone();
        }
        if buckets.len() >= MANY {
            buckets.retain(|_, b| now.saturating_duration_since(b.lock().last_used) < IDLE);
        }
        let ceiling = self.limits.for_action(key.action);
        // At least one call, at most one second's worth at once.
        let burst = f64::from(self.burst.max(1)).min(ceiling.ceil().max(1.0));
        let bucket = Arc::new(Bucket::new(ceiling, burst, now));
        buckets.insert(key.clone(), bucket.clone());
        bucket
    }

    /// How long the caller must wait before sending one call for `key` (the slot is taken).
    pub fn reserve(&self, key: &BucketKey, now: Instant) -> Duration {
        self.bucket(key, now).reserve(now)
    }

    /// Gives back a slot [`Self::reserve`] took and nobody used.
    pub fn refund(&self, key: &BucketKey, now: Instant) {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get(key) {
            b.refund(now);
        }
    }

    /// How long the next call for `key` would wait for its slot (nothing is taken). Lets a caller
    /// with other work do it instead of waiting.
    pub fn backlog(&self, key: &BucketKey, now: Instant) -> Duration {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(key) {
            Some(b) => b.backlog(now),
            None => Duration::ZERO,
        }
    }

    /// Waits for a slot. Cancelled while waiting, it gives the slot back.
    pub async fn acquire(self: &Arc<Self>, key: &BucketKey) {
        Reservation::take(self.clone(), key.clone())
            .ready()
            .await
            .used();
    }

    /// ECS answered `Throttling*` for a call of `key`.
    pub fn throttled(&self, key: &BucketKey, now: Instant, time_left: Option<Duration>) {
        self.bucket(key, now).throttled(now, time_left);
    }

    pub fn state(&self, key: &BucketKey) -> Option<BucketState> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get(key).map(|b| b.snapshot())
    }

    /// Every bucket's state, for metrics.
    pub fn snapshot(&self) -> Vec<(BucketKey, BucketState)> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = buckets
            .iter()
            .map(|(k, b)| (k.clone(), b.snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// One slot of a bucket, taken ahead of the call: given back when dropped unused, so a call that
/// never goes out (its reconcile cancelled, or a reboot not sent) costs the account nothing.
pub struct Reservation {
    limits: Arc<RateLimits>,
    key: BucketKey,
    /// When the slot is the caller's.
    at: tokio::time::Instant,
    used: bool,
}

impl Reservation {
    pub fn take(limits: Arc<RateLimits>, key: BucketKey) -> Self {
        let wait = limits.reserve(&key, Instant::now());
        let at = tokio::time::Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        Self {
            limits,
            key,
            at,
            used: false,
        }
    }

    /// How long ago the slot became the caller's (zero while it is still ahead).
    pub fn overdue(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.at)
    }

    /// How long until the slot is the caller's.
    pub fn wait(&self) -> Duration {
        self.at
            .saturating_duration_since(tokio::time::Instant::now())
    }

    pub fn key(&self) -> &BucketKey {
        &self.key
    }

    /// Waits until the slot is the caller's (dropped meanwhile, the slot goes back).
    pub async fn ready(self) -> Self {
        tokio::time::sleep_until(self.at).await;
        self
    }

    /// The call goes out on this slot.
    pub fn used(mut self) {
        self.used = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            self.limits.refund(&self.key, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(account: &str, action: &'static str) -> BucketKey {
        BucketKey {
            account: account.into(),
            region: "cn-hangzhou".into(),
            action,
        }
    }

    #[test]
    fn flag_values_parse_with_clear_errors() {
        let l: QpsLimits = "20".parse().unwrap();
        assert_eq!(l.for_action("DescribeInstances"), 20.0);
        let l: QpsLimits = "ModifyInstanceVncPasswd=20,DescribeInstances=50, RebootInstance=10"
            .parse()
            .unwrap();
        assert_eq!(l.for_action("ModifyInstanceVncPasswd"), 20.0);
        assert_eq!(l.for_action("DescribeInstances"), 50.0);
        assert_eq!(
            l.for_action("StartInstance"),
            10.0,
            "the default for the rest"
        );
        let l: QpsLimits = "RebootInstance=2,30".parse().unwrap();
        assert_eq!(
            (l.for_action("RebootInstance"), l.for_action("X")),
            (2.0, 30.0)
        );
        assert_eq!(l.to_string().parse::<QpsLimits>().unwrap(), l);
        for bad in [
            "0",
            "-1",
            "x",
            "DescribeInstances=0",
            "=5",
            "Describe Instances=5",
            "nan",
        ] {
            let e = bad.parse::<QpsLimits>().unwrap_err();
            assert!(
                e.contains("positive") || e.contains("ApiName=N"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_bucket_paces_at_its_rate_after_its_burst() {
        let limits = RateLimits::new("10".parse().unwrap(), 3);
        let t0 = Instant::now();
        let k = key("a", "ModifyInstanceVncPasswd");
        let waits: Vec<Duration> = (0..5).map(|_| limits.reserve(&k, t0)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_millis(100));
        assert_eq!(waits[4], Duration::from_millis(200));
        // The next one would wait 300 ms; asking does not take a slot.
        assert_eq!(limits.backlog(&k, t0), Duration::from_millis(300));
        assert_eq!(limits.backlog(&k, t0), Duration::from_millis(300));
        assert_eq!(limits.backlog(&key("other", "X"), t0), Duration::ZERO);
    }

    #[test]
    fn actions_and_accounts_never_share_a_bucket() {
        let limits = RateLimits::new(
            "ModifyInstanceVncPasswd=1,DescribeInstances=1"
                .parse()
                .unwrap(),
            1,
        );
        let t0 = Instant::now();
        assert!(
            limits
                .reserve(&key("a", "ModifyInstanceVncPasswd"), t0)
                .is_zero()
        );
        assert!(
            !limits
                .reserve(&key("a", "ModifyInstanceVncPasswd"), t0)
                .is_zero()
        );
        assert!(limits.reserve(&key("a", "DescribeInstances"), t0).is_zero());
        assert!(
            limits
                .reserve(&key("b", "ModifyInstanceVncPasswd"), t0)
                .is_zero()
        );
        let other_region = BucketKey {
            region: "cn-beijing".into(),
            ..key("a", "ModifyInstanceVncPasswd")
        };
        assert!(limits.reserve(&other_region, t0).is_zero());
    }

    #[test]
    fn throttling_halves_the_rate_once_per_second_honours_time_left_and_recovers() {
        let limits = RateLimits::new("100".parse().unwrap(), 1);
        let k = key("a", "DescribeInstances");
        let t0 = Instant::now();
        assert!(limits.reserve(&k, t0).is_zero());
        // Three answers at once: one decrease.
        for _ in 0..3 {
            limits.throttled(&k, t0, Some(Duration::from_millis(500)));
        }
        let s = limits.state(&k).unwrap();
        assert_eq!((s.rate, s.throttles), (50.0, 3));
        // Nothing goes out before ECS's window resets.
        assert!(limits.reserve(&k, t0) >= Duration::from_millis(500));
        // Throttled every second: it recovers a little and halves again, settling well below the
        // configured rate, never below the floor.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..10 {
            limits.throttled(&k, t1 + Duration::from_secs(i), None);
            let r = limits.state(&k).unwrap().rate;
            assert!((100.0 * FLOOR..=50.0).contains(&r), "{r}");
        }
        assert!(limits.state(&k).unwrap().rate < 15.0);
        // Recovery: a tenth of the configured rate per second, up to it.
        let later = t1 + Duration::from_secs(10);
        let _ = limits.reserve(&k, later);
        let r = limits.state(&k).unwrap().rate;
        assert!(r > 100.0 * FLOOR && r < 100.0, "recovering: {r}");
        let _ = limits.reserve(&k, later + Duration::from_secs(20));
        assert_eq!(limits.state(&k).unwrap().rate, 100.0);
    }

    /// Ten throttling answers each saying "1 s left" pause the bucket one second, not ten.
    #[test]
    fn throttling_debt_does_not_stack() {
        let limits = RateLimits::new("10".parse().unwrap(), 1);
        let k = key("a", "DescribeInstances");
        let t0 = Instant::now();
        let _ = limits.reserve(&k, t0);
        for _ in 0..10 {
            limits.throttled(&k, t0, Some(Duration::from_secs(1)));
        }
        let wait = limits.backlog(&k, t0);
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
        assert!(wait < Duration::from_millis(1500), "stacked: {wait:?}");
    }

    /// A slowed bucket's wait is priced at the rate as it recovers: at 5 % of 100/s, 60 calls
    /// queued take about 10 s to clear, not the 12 s of a rate that stayed at 5 %.
    #[test]
    fn a_slowed_bucket_is_priced_at_its_recovering_rate() {
        let limits = RateLimits::new("100".parse().unwrap(), 1);
        let k = key("a", "DescribeInstances");
        let t0 = Instant::now();
        let _ = limits.reserve(&k, t0);
        // Throttled every second until the rate sits at the floor.
        for i in 0..6 {
            limits.throttled(&k, t0 + Duration::from_secs(i), Some(Duration::ZERO));
        }
        let t = t0 + Duration::from_secs(6);
        let waits: Vec<Duration> = (0..60).map(|_| limits.reserve(&k, t)).collect();
        let last = *waits.last().unwrap();
        let rate = limits.state(&k).unwrap().rate;
        let naive = Duration::from_secs_f64(60.0 / rate);
        assert!(last < naive, "{last:?} vs {naive:?} at {rate}/s");
        assert!(
            waits.windows(2).all(|w| w[0] <= w[1]),
            "later slots never come earlier"
        );
    }

    /// A slot taken and dropped unused goes back: the next caller does not wait for it.
    #[tokio::test]
    async fn a_reservation_dropped_unused_is_refunded() {
        let limits = Arc::new(RateLimits::new("1".parse().unwrap(), 1));
        let k = key("a", "RebootInstance");
        let first = Reservation::take(limits.clone(), k.clone());
        assert!(first.wait().is_zero());
        let second = Reservation::take(limits.clone(), k.clone());
        assert!(second.wait() > Duration::from_millis(900));
        drop(second);
        drop(first);
        let third = Reservation::take(limits.clone(), k.clone());
        assert!(third.wait().is_zero(), "{:?}", third.wait());
        third.used();
        assert!(limits.backlog(&k, Instant::now()) > Duration::from_millis(900));
    }
}
