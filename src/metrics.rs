//! Prometheus metrics of the controller and its ECS calls.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ecs::CallObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
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
struct ReasonLabel {
    ready_reason: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    ecs_calls: Family<CallLabels, Counter>,
    ecs_call_duration: Family<ActionLabel, Histogram>,
    vncpasswords: Family<ReasonLabel, Gauge>,
    pending_reboots: Gauge,
    known_reasons: Mutex<Vec<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps label values bounded: anything that is not a short ECS-code-like word becomes `Other`.
fn bounded(label: &str) -> String {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if ok {
        label.to_string()
    } else {
        "Other".to_string()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ecs_vnc");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.5, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let ecs_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "ecs_calls",
            "ECS HTTP attempts by action and result code (Success, an ECS error code, NetworkError, Timeout, UnexpectedResponse)",
            ecs_calls.clone(),
        );
        let ecs_call_duration = Family::<ActionLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "ecs_call_duration_seconds",
            "Latency of ECS HTTP attempts",
            ecs_call_duration.clone(),
        );
        let vncpasswords = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "vncpasswords",
            "VncPasswords by the reason of their Ready condition",
            vncpasswords.clone(),
        );
        let pending_reboots = Gauge::default();
        registry.register(
            "pending_reboots",
            "VncPasswords whose instance must restart for the password to take effect",
            pending_reboots.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            ecs_calls,
            ecs_call_duration,
            vncpasswords,
            pending_reboots,
            known_reasons: Mutex::new(Vec::new()),
        }
    }

    pub fn reconcile_finished(&self, result: &str, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: bounded(result),
            })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Replaces the per-reason counts; reasons no longer present drop to 0.
    pub fn set_ready_reasons(&self, counts: &BTreeMap<String, i64>) {
        let mut known = self.known_reasons.lock().unwrap_or_else(|p| p.into_inner());
        for reason in known.iter() {
            if !counts.contains_key(reason) {
                self.vncpasswords
                    .get_or_create(&ReasonLabel {
                        ready_reason: reason.clone(),
                    })
                    .set(0);
            }
        }
        for (reason, n) in counts {
            let reason = bounded(reason);
            self.vncpasswords
                .get_or_create(&ReasonLabel {
                    ready_reason: reason.clone(),
                })
                .set(*n);
            if !known.contains(&reason) {
                known.push(reason);
            }
        }
    }

    pub fn set_pending_reboots(&self, n: i64) {
        self.pending_reboots.set(n);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl CallObserver for Metrics {
    fn observe(&self, action: &str, result: &str, elapsed: Duration) {
        let action = bounded(action);
        self.ecs_calls
            .get_or_create(&CallLabels {
                action: action.clone(),
                code: bounded(result),
            })
            .inc();
        self.ecs_call_duration
            .get_or_create(&ActionLabel { action })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let m = Metrics::new();
        m.reconcile_finished("applied", Duration::from_millis(12));
        m.observe(
            "ModifyInstanceVncPasswd",
            "Success",
            Duration::from_millis(30),
        );
        m.observe(
            "ModifyInstanceVncPasswd",
            "<html>weird code</html>",
            Duration::from_millis(30),
        );
        m.set_ready_reasons(
            &[
                ("Applied".to_string(), 2),
                ("RebootRequired".to_string(), 1),
            ]
            .into(),
        );
        m.set_pending_reboots(1);
        let text = m.encode();
        for needle in [
            "ecs_vnc_reconciles_total{result=\"applied\"} 1",
            "ecs_vnc_reconcile_duration_seconds_bucket",
            "ecs_vnc_ecs_calls_total{action=\"ModifyInstanceVncPasswd\",code=\"Success\"} 1",
            "code=\"Other\"",
            "ecs_vnc_ecs_call_duration_seconds_bucket{le=",
            "ecs_vnc_vncpasswords{ready_reason=\"RebootRequired\"} 1",
            "ecs_vnc_pending_reboots 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.set_ready_reasons(&[("Applied".to_string(), 3)].into());
        assert!(
            m.encode()
                .contains("ecs_vnc_vncpasswords{ready_reason=\"RebootRequired\"} 0")
        );
    }
}
