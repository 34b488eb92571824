//! Condition bookkeeping: set a condition, keeping `lastTransitionTime` unless its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// One desired condition, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn status_text(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Merges `desired` into `current`: conditions of other types are kept as they are; a condition
/// whose status is unchanged keeps its `lastTransitionTime`.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = current
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let status = status_text(d.status);
        let last_transition_time = current
            .iter()
            .find(|c| c.type_ == d.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        out.push(Condition {
            type_: d.type_.to_string(),
            status: status.to_string(),
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    // A stable order keeps `kubectl describe` readable and status comparisons exact.
    const ORDER: [&str; 6] = [
        "Ready",
        "InEffect",
        "Applied",
        "RebootRequired",
        "Reconciling",
        "Stalled",
    ];
    out.sort_by_key(|c| {
        ORDER
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(ORDER.len())
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let first = merge(
            &[],
            &[Desired::new("Ready", false, "RebootRequired", "wait")],
            Some(1),
            t("2026-01-01T00:00:00Z"),
        );
        let same = merge(
            &first,
            &[Desired::new("Ready", false, "Throttled", "other message")],
            Some(2),
            t("2026-01-01T00:05:00Z"),
        );
        assert_eq!(
            same[0].last_transition_time,
            Time(t("2026-01-01T00:00:00Z"))
        );
        assert_eq!(same[0].reason, "Throttled");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new("Ready", true, "Applied", "ok")],
            Some(2),
            t("2026-01-01T00:09:00Z"),
        );
        assert_eq!(
            flipped[0].last_transition_time,
            Time(t("2026-01-01T00:09:00Z"))
        );
        assert_eq!(flipped[0].status, "True");
    }

    #[test]
    fn other_conditions_are_kept_and_order_is_stable() {
        let now = t("2026-01-01T00:00:00Z");
        let a = merge(
            &[],
            &[
                Desired::new("Stalled", false, "AsExpected", ""),
                Desired::new("RebootRequired", true, "RebootRequired", "x"),
                Desired::new("Ready", false, "RebootRequired", "x"),
            ],
            Some(1),
            now,
        );
        let types: Vec<_> = a.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "RebootRequired", "Stalled"]);
        let b = merge(
            &a,
            &[Desired::new("Ready", true, "Applied", "")],
            Some(1),
            now,
        );
        assert_eq!(b.len(), 3);
    }
}
