//! Prometheus metrics of the controller and of its ECS calls, served at `/metrics` by [`crate::http`].
//!
//! Exposed (OpenMetrics text; prometheus-client adds `_total` to counters itself):
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `ecs_vnc_reconciles_total` | counter | `result`: one of [`RECONCILE_RESULTS`] or `other` |
//! | `ecs_vnc_reconcile_duration_seconds` | histogram | |
//! | `ecs_vnc_reconcile_panics_total` | counter | reconciles that panicked (caught; the object says `InternalError`) |
//! | `ecs_vnc_claim_lookups_total` | counter | instance claims asked of the API server (only with claims from the API server, see `controller::claims`) |
//! | `ecs_vnc_ecs_calls_total` | counter | `action`, `code` (`Success`, an ECS error code, `NetworkError`, ...) |
//! | `ecs_vnc_ecs_call_duration_seconds` | histogram | `action` |
//! | `ecs_vnc_vncpasswords` | gauge | `namespace` (the objects' own; at most [`MAX_NAMESPACES`], the rest `_other`), `ready_reason` |
//! | `ecs_vnc_pending_reboots` | gauge | |
//! | `ecs_vnc_reconciles_waiting` | gauge | reconciles due and waiting for one of the `--concurrency` work slots |
//! | `ecs_vnc_leader` | gauge | 1 while this replica leads (always 1 without `--leader-elect`), else 0; with `--shards`, 1 while it holds any shard |
//! | `ecs_vnc_shard_owned` | gauge | `shard` (0 to `--shards` - 1): 1 while this replica holds that shard's Lease and serves its objects, else 0 (only with `--shards` above 1) |
//! | `ecs_vnc_ecs_rate_limit_qps` | gauge | `account` (the account ID STS names, or `unverified.<hash>`; never an AccessKeyId), `region`, `action`: the bucket's current rate |
//! | `ecs_vnc_ecs_throttles_total` | counter | `account`, `region`, `action`: `Throttling*` answers |
//! | `ecs_vnc_clock_offset_seconds` | gauge | ECS's clock (the `Date` of its latest answer) minus the controller's |
//!
//! Every label value is bounded: values come from a fixed list or must look like an ECS error code
//! (short, `[A-Za-z0-9._]`), anything else is counted as `other`/`Other`, so a strange response body
//! or a user-chosen string can never create unbounded series.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::ecs::CallObserver;

/// The `result` label values of `ecs_vnc_reconciles_total`; anything else is counted as `other`.
pub const RECONCILE_RESULTS: &[&str] = &[
    "applied",
    "unchanged",
    "reboot_pending",
    "stalled",
    "retry",
    "error",
    "paused",
    "panic",
];

/// Seconds; from a cache-hit reconcile (~1 ms) to an ECS call that used its whole retry budget (60 s).
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The longest label value taken as is; ECS codes are well below this.
const MAX_LABEL_LEN: usize = 64;
/// Distinct `ready_reason` values kept; the controller's vocabulary is about 20, so hitting this
/// means something unexpected is writing reasons, and the rest are counted as `Other`.
const MAX_READY_REASONS: usize = 32;
const OTHER: &str = "Other";
/// Namespaces with their own `ecs_vnc_vncpasswords` series (those with the most objects, then by
/// name); the objects of the rest are counted under [`OTHER_NAMESPACE`].
pub const MAX_NAMESPACES: usize = 500;
/// Not a possible namespace name (those are lowercase DNS labels), so never mistaken for one.
pub const OTHER_NAMESPACE: &str = "_other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    source: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    action: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabels {
    account: String,
    region: String,
    action: String,
}

/// Distinct accounts with their own rate-limit series; the rest are `Other`.
const MAX_ACCOUNTS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, Ord, PartialOrd, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, Ord, PartialOrd, EncodeLabelSet)]
struct ReasonLabel {
    namespace: String,
    ready_reason: String,
}

/// The Ready reasons seen so far (bounded) and the `ecs_vnc_vncpasswords` series exported now.
#[derive(Default)]
struct KnownSeries {
    reasons: BTreeSet<String>,
    series: BTreeSet<ReasonLabel>,
}

/// A namespace as a label value: a valid namespace name is one already; anything else (never
/// from the API server) is `_other`.
fn bounded_namespace(namespace: &str) -> &str {
    let valid = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid { namespace } else { OTHER_NAMESPACE }
}

/// The controller's metrics; shared as `Arc<Metrics>` by the reconciler, the ECS client (as its
/// [`CallObserver`]) and the HTTP server.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    reconcile_panics: Counter,
    claim_lookups: Counter,
    ecs_calls: Family<CallLabels, Counter>,
    ecs_call_duration: Family<ActionLabel, Histogram>,
    vncpasswords: Family<ReasonLabel, Gauge>,
    pending_reboots: Gauge,
    reconciles_waiting: Gauge,
    leader: Gauge,
    shard_owned: Family<ShardLabel, Gauge>,
    owned_shards: Mutex<BTreeSet<u16>>,
    credential_refreshes: Family<RefreshLabels, Counter>,
    rate_limit: Family<BucketLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    throttles: Family<BucketLabels, Counter>,
    clock_offset: Gauge<f64, std::sync::atomic::AtomicU64>,
    known_accounts: Mutex<BTreeSet<String>>,
    /// Reasons ever exported: one that disappears from a snapshot is set to 0 rather than dropped,
    /// so `rate()`/alerts see it fall instead of going stale.
    known_reasons: Mutex<KnownSeries>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `label` if it looks like an ECS error code or action name (`Throttling.User`,
/// `InvalidInstanceId.NotFound`), else `Other`.
fn bounded(label: &str) -> &str {
    let ok = !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if ok { label } else { OTHER }
}

/// `region` if it looks like a region ID (`cn-hangzhou`), else `Other`.
fn bounded_region(region: &str) -> &str {
    let ok = !region.is_empty()
        && region.len() <= MAX_LABEL_LEN
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { region } else { OTHER }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ecs_vnc");

        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of VncPasswords by result",
            reconciles.clone(),
        );
        let reconcile_duration = duration_histogram();
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one VncPassword reconcile, ECS calls included",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconcile_panics = Counter::default();
        registry.register(
            "reconcile_panics",
            "Reconciles that panicked (a bug): caught, logged at error level, and reported on the object as Stalled, reason InternalError; the process and other objects go on",
            reconcile_panics.clone(),
        );
        let claim_lookups = Counter::default();
        registry.register(
            "claim_lookups",
            "Instance claims decided from the API server (a VncPassword list by field selector per served namespace set), when the controller does not watch every object",
            claim_lookups.clone(),
        );
        let ecs_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "ecs_calls",
            "ECS API attempts by action and result code (Success, an ECS error code, NetworkError, Timeout, UnexpectedResponse, InvalidRequest; Other for anything unrecognisable)",
            ecs_calls.clone(),
        );
        let ecs_call_duration =
            Family::<ActionLabel, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        registry.register_with_unit(
            "ecs_call_duration",
            "Latency of one ECS API attempt",
            Unit::Seconds,
            ecs_call_duration.clone(),
        );
        let vncpasswords = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "vncpasswords",
            "VncPasswords by namespace and the reason of their Ready condition (Unknown: no Ready condition yet); at most 500 namespaces (those with the most objects) have series of their own, the others' objects are counted under namespace=\"_other\"",
            vncpasswords.clone(),
        );
        let pending_reboots = Gauge::default();
        registry.register(
            "pending_reboots",
            "VncPasswords whose instance must restart for the applied password to take effect",
            pending_reboots.clone(),
        );
        let reconciles_waiting = Gauge::default();
        registry.register(
            "reconciles_waiting",
            "Reconciles due and waiting for one of the --concurrency work slots (served in turn per namespace)",
            reconciles_waiting.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles (always 1 without --leader-elect), else 0",
            leader.clone(),
        );
        let shard_owned = Family::<ShardLabel, Gauge>::default();
        registry.register(
            "shard_owned",
            "With --shards above 1: 1 while this replica holds the shard's Lease and serves the objects of that shard, else 0",
            shard_owned.clone(),
        );
        let credential_refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "credential_refreshes",
            "Fetches of temporary credentials (STS AssumeRoleWithOIDC and the ECS RAM role for the controller itself; source service_account for credentials.serviceAccountRef) by source and result (success, failure)",
            credential_refreshes.clone(),
        );
        let rate_limit =
            Family::<BucketLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "ecs_rate_limit_qps",
            "ECS calls per second a rate-limit bucket (account, region, action) allows now: the configured --ecs-qps, less after throttling",
            rate_limit.clone(),
        );
        let throttles = Family::<BucketLabels, Counter>::default();
        registry.register(
            "ecs_throttles",
            "Throttling answers from ECS per rate-limit bucket (account, region, action)",
            throttles.clone(),
        );
        let clock_offset = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "clock_offset",
            "ECS's clock (the Date header of its latest answer, whole seconds) minus the controller's clock; restarts are judged on ECS's clock, but ECS refuses signatures more than 15 minutes off",
            Unit::Seconds,
            clock_offset.clone(),
        );
        Self {
            registry,
            reconciles,
            clock_offset,
            rate_limit,
            throttles,
            known_accounts: Mutex::new(BTreeSet::new()),
            credential_refreshes,
            reconcile_duration,
            reconcile_panics,
            claim_lookups,
            ecs_calls,
            ecs_call_duration,
            vncpasswords,
            pending_reboots,
            reconciles_waiting,
            leader,
            shard_owned,
            owned_shards: Mutex::new(BTreeSet::new()),
            known_reasons: Mutex::new(KnownSeries::default()),
        }
    }

    /// Counts one finished reconcile. `result` is one of [`RECONCILE_RESULTS`]; any other value is
    /// counted as `other`.
    pub fn reconcile_finished(&self, result: &str, elapsed: Duration) {
        let result = if RECONCILE_RESULTS.contains(&result) {
            result
        } else {
            "other"
        };
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one reconcile that panicked.
    pub fn reconcile_panicked(&self) {
        self.reconcile_panics.inc();
    }

    /// One instance claim was asked of the API server.
    pub fn claim_looked_up(&self) {
        self.claim_lookups.inc();
    }

    /// Replaces the snapshot of `ecs_vnc_vncpasswords`: `counts` is keyed by (namespace, Ready's
    /// reason). Namespaces beyond [`MAX_NAMESPACES`] (the fewest objects, then by name) count as
    /// [`OTHER_NAMESPACE`]; reasons beyond [`MAX_READY_REASONS`] distinct ones as `Other`. Series of
    /// a namespace that has objects drop to 0 for reasons it no longer has; series of namespaces
    /// without objects (or past the bound) are removed, so that series do not pile up.
    pub fn set_ready_reasons(&self, counts: &BTreeMap<(String, String), i64>) {
        let mut per_namespace: BTreeMap<&str, i64> = BTreeMap::new();
        for ((namespace, _), n) in counts {
            *per_namespace.entry(namespace.as_str()).or_default() += *n;
        }
        let mut ranked: Vec<(&str, i64)> = per_namespace.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let own: BTreeSet<&str> = ranked
            .iter()
            .take(MAX_NAMESPACES)
            .map(|(ns, _)| *ns)
            .collect();
        let mut known = self
            .known_reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut snapshot: BTreeMap<ReasonLabel, i64> = BTreeMap::new();
        for ((namespace, reason), n) in counts {
            let mut label = bounded(reason);
            if !known.reasons.contains(label) && known.reasons.len() >= MAX_READY_REASONS {
                label = OTHER;
            }
            known.reasons.insert(label.to_string());
            let namespace = if own.contains(namespace.as_str()) {
                bounded_namespace(namespace)
            } else {
                OTHER_NAMESPACE
            };
            *snapshot
                .entry(ReasonLabel {
                    namespace: namespace.to_string(),
                    ready_reason: label.to_string(),
                })
                .or_default() += *n;
        }
        let namespaces: BTreeSet<&str> = snapshot.keys().map(|l| l.namespace.as_str()).collect();
        let mut exported = BTreeSet::new();
        for namespace in &namespaces {
            for reason in known.reasons.iter() {
                let label = ReasonLabel {
                    namespace: namespace.to_string(),
                    ready_reason: reason.clone(),
                };
                let n = snapshot.get(&label).copied().unwrap_or(0);
                self.vncpasswords.get_or_create(&label).set(n);
                exported.insert(label);
            }
        }
        for gone in known.series.difference(&exported) {
            self.vncpasswords.remove(gone);
        }
        known.series = exported;
    }

    pub fn set_pending_reboots(&self, n: i64) {
        self.pending_reboots.set(n);
    }

    pub fn set_reconciles_waiting(&self, n: usize) {
        self.reconciles_waiting
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether this replica holds shard `shard` (`--shards`); `ecs_vnc_leader` follows: 1 while it
    /// holds any.
    pub fn set_shard_owned(&self, shard: u16, owned: bool) {
        self.shard_owned
            .get_or_create(&ShardLabel {
                shard: shard.to_string(),
            })
            .set(i64::from(owned));
        let mut held = self.owned_shards.lock().unwrap_or_else(|p| p.into_inner());
        if owned {
            held.insert(shard);
        } else {
            held.remove(&shard);
        }
        self.leader.set(i64::from(!held.is_empty()));
    }

    /// The exposition of every metric, in OpenMetrics text format (ends with `# EOF`); serve it as
    /// [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails if a metric's own encoder fails, which none of ours
        // does; an empty body then makes the scrape fail visibly rather than half-succeed.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl crate::ecs::provider::RefreshObserver for Metrics {
    fn refreshed(&self, source: &'static str, ok: bool) {
        self.credential_refreshes
            .get_or_create(&RefreshLabels {
                source: source.to_string(),
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
    }
}

impl CallObserver for Metrics {
    fn clock_offset(&self, offset: jiff::SignedDuration) {
        self.clock_offset.set(offset.as_secs_f64());
    }

    fn observe(&self, action: &str, result: &str, elapsed: Duration) {
        let action = bounded(action).to_string();
        self.ecs_calls
            .get_or_create(&CallLabels {
                action: action.clone(),
                code: bounded(result).to_string(),
            })
            .inc();
        self.ecs_call_duration
            .get_or_create(&ActionLabel { action })
            .observe(elapsed.as_secs_f64());
    }

    fn rate_limit(
        &self,
        key: &crate::ecs::ratelimit::BucketKey,
        state: crate::ecs::ratelimit::BucketState,
    ) {
        let account = {
            let mut known = self
                .known_accounts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let account = bounded(&key.account);
            if known.contains(account) || known.len() < MAX_ACCOUNTS {
                known.insert(account.to_string());
                account.to_string()
            } else {
                OTHER.to_string()
            }
        };
        let labels = BucketLabels {
            account,
            region: bounded_region(&key.region).to_string(),
            action: bounded(key.action).to_string(),
        };
        self.rate_limit.get_or_create(&labels).set(state.rate);
        let counter = self.throttles.get_or_create(&labels);
        let seen = counter.get();
        if state.throttles > seen {
            counter.inc_by(state.throttles - seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn metrics_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Metrics>();
        let _observer: std::sync::Arc<dyn CallObserver> = std::sync::Arc::new(Metrics::new());
    }

    #[test]
    fn every_documented_metric_is_exposed_under_its_exact_name() {
        let m = Metrics::new();
        m.reconcile_finished("applied", Duration::from_millis(12));
        m.observe(
            "ModifyInstanceVncPasswd",
            "Success",
            Duration::from_millis(30),
        );
        m.set_ready_reasons(&by_namespace(&[
            ("team-a", "Applied", 2),
            ("team-a", "RebootRequired", 1),
        ]));
        m.set_pending_reboots(1);
        m.set_leader(true);
        m.rate_limit(
            &crate::ecs::ratelimit::BucketKey {
                account: "LTAIexample".into(),
                region: "cn-hangzhou".into(),
                action: "DescribeInstances",
            },
            crate::ecs::ratelimit::BucketState {
                rate: 12.5,
                throttles: 2,
            },
        );
        let text = m.encode();
        let lines = lines(&text);
        for line in [
            "# TYPE ecs_vnc_leader gauge",
            "ecs_vnc_leader 1",
            "# TYPE ecs_vnc_reconciles counter",
            "ecs_vnc_reconciles_total{result=\"applied\"} 1",
            "# TYPE ecs_vnc_reconcile_duration_seconds histogram",
            "# UNIT ecs_vnc_reconcile_duration_seconds seconds",
            "ecs_vnc_reconcile_duration_seconds_count 1",
            "# TYPE ecs_vnc_ecs_calls counter",
            "ecs_vnc_ecs_calls_total{action=\"ModifyInstanceVncPasswd\",code=\"Success\"} 1",
            "# TYPE ecs_vnc_ecs_call_duration_seconds histogram",
            "ecs_vnc_ecs_call_duration_seconds_count{action=\"ModifyInstanceVncPasswd\"} 1",
            "# TYPE ecs_vnc_vncpasswords gauge",
            "ecs_vnc_vncpasswords{namespace=\"team-a\",ready_reason=\"Applied\"} 2",
            "ecs_vnc_vncpasswords{namespace=\"team-a\",ready_reason=\"RebootRequired\"} 1",
            "# TYPE ecs_vnc_pending_reboots gauge",
            "ecs_vnc_pending_reboots 1",
            "# TYPE ecs_vnc_ecs_rate_limit_qps gauge",
            "ecs_vnc_ecs_rate_limit_qps{account=\"LTAIexample\",region=\"cn-hangzhou\",action=\"DescribeInstances\"} 12.5",
            "# TYPE ecs_vnc_ecs_throttles counter",
            "ecs_vnc_ecs_throttles_total{account=\"LTAIexample\",region=\"cn-hangzhou\",action=\"DescribeInstances\"} 2",
        ] {
            assert!(lines.contains(&line), "missing line {line:?} in\n{text}");
        }
        assert_eq!(lines.last(), Some(&"# EOF"), "OpenMetrics ends with # EOF");
        assert!(
            !text.contains("_total_total"),
            "counter names must not be registered with a _total suffix:\n{text}"
        );
    }

    #[test]
    fn duration_buckets_span_a_millisecond_to_a_minute() {
        let m = Metrics::new();
        m.reconcile_finished("unchanged", Duration::from_micros(500));
        m.reconcile_finished("unchanged", Duration::from_secs(45));
        m.reconcile_finished("unchanged", Duration::from_secs(600));
        let text = m.encode();
        let lines = lines(&text);
        for line in [
            "ecs_vnc_reconcile_duration_seconds_bucket{le=\"0.001\"} 1",
            "ecs_vnc_reconcile_duration_seconds_bucket{le=\"30.0\"} 1",
            "ecs_vnc_reconcile_duration_seconds_bucket{le=\"60.0\"} 2",
            "ecs_vnc_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(lines.contains(&line), "missing line {line:?} in\n{text}");
        }
    }

    #[test]
    fn an_unknown_reconcile_result_is_counted_as_other() {
        let m = Metrics::new();
        for result in RECONCILE_RESULTS {
            m.reconcile_finished(result, Duration::from_millis(1));
        }
        m.reconcile_finished("Some Debug output {..}", Duration::from_millis(1));
        m.reconcile_finished("another", Duration::from_millis(1));
        let text = m.encode();
        for result in RECONCILE_RESULTS {
            let line = format!("ecs_vnc_reconciles_total{{result=\"{result}\"}} 1");
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l == "ecs_vnc_reconciles_total{result=\"other\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn ecs_codes_keep_their_name_but_garbage_becomes_other() {
        let m = Metrics::new();
        let d = Duration::from_millis(5);
        m.observe("DescribeInstances", "Throttling.User", d);
        m.observe("DescribeInstances", "InvalidInstanceId.NotFound", d);
        m.observe("DescribeInstances", "NetworkError", d);
        m.observe("DescribeInstances", "<html>502 Bad Gateway</html>", d);
        m.observe("DescribeInstances", "", d);
        m.observe("DescribeInstances", &"A".repeat(65), d);
        m.observe("DescribeInstances", "code-with-dash", d);
        m.observe("DescribeInstances", "Ünïcode", d);
        let text = m.encode();
        let lines = lines(&text);
        for line in [
            "ecs_vnc_ecs_calls_total{action=\"DescribeInstances\",code=\"Throttling.User\"} 1",
            "ecs_vnc_ecs_calls_total{action=\"DescribeInstances\",code=\"InvalidInstanceId.NotFound\"} 1",
            "ecs_vnc_ecs_calls_total{action=\"DescribeInstances\",code=\"NetworkError\"} 1",
            "ecs_vnc_ecs_calls_total{action=\"DescribeInstances\",code=\"Other\"} 5",
            "ecs_vnc_ecs_call_duration_seconds_count{action=\"DescribeInstances\"} 8",
        ] {
            assert!(lines.contains(&line), "missing line {line:?} in\n{text}");
        }
        // A 64-character code is still a code.
        m.observe("DescribeInstances", &"B".repeat(64), d);
        assert!(m.encode().contains(&format!("code=\"{}\"", "B".repeat(64))));
    }

    fn by_namespace(pairs: &[(&str, &str, i64)]) -> BTreeMap<(String, String), i64> {
        pairs
            .iter()
            .map(|(ns, r, n)| ((ns.to_string(), r.to_string()), *n))
            .collect()
    }

    #[test]
    fn a_new_ready_snapshot_replaces_the_previous_one() {
        let m = Metrics::new();
        m.set_ready_reasons(&by_namespace(&[
            ("team-a", "Applied", 2),
            ("team-a", "RebootRequired", 1),
            ("team-b", "Applied", 1),
        ]));
        m.set_ready_reasons(&by_namespace(&[
            ("team-a", "Applied", 3),
            ("team-a", "InvalidPassword", 1),
        ]));
        let text = m.encode();
        let lines = lines(&text);
        for line in [
            "ecs_vnc_vncpasswords{namespace=\"team-a\",ready_reason=\"Applied\"} 3",
            "ecs_vnc_vncpasswords{namespace=\"team-a\",ready_reason=\"InvalidPassword\"} 1",
            "ecs_vnc_vncpasswords{namespace=\"team-a\",ready_reason=\"RebootRequired\"} 0",
        ] {
            assert!(lines.contains(&line), "missing line {line:?} in\n{text}");
        }
        assert!(
            !text.contains("team-b"),
            "a namespace without objects keeps no series:\n{text}"
        );
        m.set_ready_reasons(&BTreeMap::new());
        let text = m.encode();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("ecs_vnc_vncpasswords{"))
                .count(),
            0,
            "an empty snapshot leaves no series:\n{text}"
        );
    }

    #[test]
    fn ready_reasons_are_bounded_in_form_and_number() {
        let m = Metrics::new();
        let mut counts = by_namespace(&[("ns", "not a reason!", 2), ("ns", "<html>", 3)]);
        for i in 0..100 {
            counts.insert(("ns".into(), format!("Reason{i:03}")), 1);
        }
        m.set_ready_reasons(&counts);
        let text = m.encode();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ecs_vnc_vncpasswords{"))
            .collect();
        assert!(series.len() <= MAX_READY_REASONS, "{text}");
        let total: i64 = series
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum();
        assert_eq!(
            total, 105,
            "no object is lost when labels collapse:\n{text}"
        );
        // The first invalid reasons claimed `Other`; all overflow is counted there too.
        assert!(
            series.contains(&"ecs_vnc_vncpasswords{namespace=\"ns\",ready_reason=\"Other\"} 74"),
            "{text}"
        );
    }

    #[test]
    fn namespaces_are_bounded_the_largest_keep_their_own_series() {
        let m = Metrics::new();
        let mut counts = BTreeMap::new();
        // 600 namespaces of one object each, and one of 5: that one and the first 499 by name
        // keep their series, the other 101 objects are counted under `_other`.
        for i in 0..600 {
            counts.insert((format!("ns-{i:03}"), "Applied".to_string()), 1);
        }
        counts.insert(("zz-big".to_string(), "Applied".to_string()), 5);
        m.set_ready_reasons(&counts);
        let text = m.encode();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ecs_vnc_vncpasswords{"))
            .collect();
        assert_eq!(
            series.len(),
            MAX_NAMESPACES + 1,
            "500 namespaces and _other"
        );
        assert!(
            series
                .contains(&"ecs_vnc_vncpasswords{namespace=\"zz-big\",ready_reason=\"Applied\"} 5")
        );
        assert!(
            series
                .contains(&"ecs_vnc_vncpasswords{namespace=\"ns-498\",ready_reason=\"Applied\"} 1")
        );
        assert!(!text.contains("ns-499"));
        assert!(
            series.contains(
                &"ecs_vnc_vncpasswords{namespace=\"_other\",ready_reason=\"Applied\"} 101"
            )
        );
        assert!(
            text.contains("at most 500 namespaces"),
            "the help says the bound"
        );
    }
}
