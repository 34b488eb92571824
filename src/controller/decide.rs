//! Pure reconcile decisions: what an ECS error means for the object, whether a restart happened
//! after the apply, which conditions describe a phase, and how long to back off.

use std::time::Duration;

use crate::api::{condition, reason};
use crate::controller::conditions::Desired;
use crate::ecs::{EcsError, ErrorClass};

/// A failure that stops progress: either only a person can fix it, or it will pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No ECS retries until the VncPassword or a Secret it references changes.
    Stalled {
        reason: &'static str,
        message: String,
    },
    /// Retried with per-object backoff.
    Retry {
        reason: &'static str,
        message: String,
        throttled: bool,
    },
}

impl Failure {
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Stalled {
            reason,
            message: message.into(),
        }
    }
}

/// What an ECS error means for a VncPassword of `instance_id` in `region`.
///
/// Messages are stable for a given cause (no RequestId, nonce or timestamp in them): a condition
/// message that changed on every attempt would rewrite the status, and every status write wakes the
/// controller again, turning a backoff into a retry storm. RequestIds go to Events instead.
pub fn failure_from_ecs(error: &EcsError, region: &str, instance_id: &str) -> Failure {
    match (error.code(), error.class()) {
        (Some("InvalidInstanceId.NotFound" | "NoSuchResource"), _) => Failure::stalled(
            reason::INSTANCE_NOT_FOUND,
            format!("ECS has no instance {instance_id} in region {region}: check spec.instanceId and spec.regionId, and that the credentials belong to the instance's account"),
        ),
        (Some("InvalidRegionId.NotFound"), _) => Failure::stalled(
            reason::REGION_NOT_FOUND,
            format!("ECS does not know region {region}: set spec.regionId to the instance's region, e.g. cn-hangzhou"),
        ),
        (Some("IncorrectVncPassword.Malformed"), _) => Failure::stalled(
            reason::INVALID_PASSWORD,
            "ECS refused the password as malformed: it must be exactly 6 characters from A-Z, a-z and 0-9; update the Secret",
        ),
        (Some(code), ErrorClass::Credentials) => Failure::stalled(
            reason::AUTH_FAILED,
            format!("ECS refused the credentials with {code}: {}", credentials_hint(code)),
        ),
        (_, ErrorClass::Terminal) => Failure::stalled(
            reason::ECS_REJECTED,
            format!("ECS rejected the request: {}; check the spec and the controller's --ecs-endpoint", summary(error)),
        ),
        (Some("IncorrectInstanceStatus" | "InstanceNotReady"), _) => Failure::Retry {
            reason: reason::INCORRECT_INSTANCE_STATUS,
            message: format!("instance {instance_id} is in a state that refuses the change (IncorrectInstanceStatus); retrying with backoff"),
            throttled: false,
        },
        (_, ErrorClass::Throttled) => Failure::Retry {
            reason: reason::THROTTLED,
            message: "ECS throttled the call (the account's per-API limit is shared with the console and other tools); retrying with backoff".to_string(),
            throttled: true,
        },
        _ => Failure::Retry {
            reason: reason::ECS_UNAVAILABLE,
            message: format!("{}; retrying with backoff", summary(error)),
            throttled: false,
        },
    }
}

fn credentials_hint(code: &str) -> &'static str {
    match code {
        "SignatureDoesNotMatch" | "IncompleteSignature" => {
            "the AccessKeySecret does not belong to the AccessKeyId; fix the credentials Secret (or the controller's credentials)"
        }
        c if c.starts_with("InvalidAccessKeyId.") => {
            "the AccessKeyId does not exist or is disabled; fix the credentials Secret (or the controller's credentials)"
        }
        c if c.starts_with("InvalidSecurityToken.") => {
            "the STS SecurityToken is wrong, expired or not issued for this AccessKeyId; refresh the credentials Secret"
        }
        _ => {
            "the identity may not do this; grant ecs:ModifyInstanceVncPasswd, ecs:DescribeInstances and ecs:RebootInstance on the instance in RAM"
        }
    }
}

/// A stable one-line description of an ECS failure (no RequestId, nonce, timestamp or body).
pub fn summary(error: &EcsError) -> String {
    match error {
        EcsError::Api { action, error, .. } => {
            format!("{action} got {} (HTTP {})", error.code, error.http_status)
        }
        EcsError::UnexpectedBody { action, body } => format!(
            "{action} got HTTP {} with a body that is not an ECS response (a proxy or gateway in the way?)",
            body.http_status
        ),
        EcsError::Network {
            action,
            endpoint,
            timeout,
            ..
        } => {
            if *timeout {
                format!("{action} timed out talking to {endpoint}")
            } else {
                format!("{action} could not reach {endpoint}")
            }
        }
        EcsError::InvalidRequest(message) => message.clone(),
    }
}

/// The RequestId of a failure, for Events and logs.
pub fn request_id(error: &EcsError) -> Option<&str> {
    error.api_error().and_then(|e| e.request_id.as_deref())
}

fn floor_minute(t: jiff::Timestamp) -> jiff::Timestamp {
    let s = t.as_second();
    jiff::Timestamp::from_second(s - s.rem_euclid(60)).unwrap_or(t)
}

/// Whether the instance has restarted since the password was applied at `applied`.
///
/// ECS reports `StartTime` to the minute. A restart is recognised when the observed start is in a
/// later minute than the apply (certainly after it), or — for a start in the same minute — when it
/// differs from `baseline`, the start time seen right after the apply. A start in the apply's own
/// minute that matches the baseline is never taken as a restart, so nothing is assumed that did
/// not happen; the only restart this can miss is one that completed between the apply and the
/// controller's first look after it (normally under a second), and the next restart is seen.
pub fn restarted_since_apply(
    applied: jiff::Timestamp,
    baseline: Option<jiff::Timestamp>,
    observed: Option<jiff::Timestamp>,
) -> bool {
    let Some(observed) = observed else {
        return false;
    };
    if floor_minute(observed) > floor_minute(applied) {
        return true;
    }
    // Seconds precision (seen in the wild): compare exactly.
    if observed != floor_minute(observed) && observed > applied {
        return true;
    }
    baseline.is_some_and(|b| observed > b)
}

/// Where an object stands after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Paused,
    Failed {
        failure: Failure,
        applied: bool,
    },
    /// Applied to an instance that must restart; `reboot_reason` is `RebootRequired` or
    /// `RebootRequested`.
    WaitingForRestart {
        reboot_reason: &'static str,
        message: String,
    },
    /// Applied and in effect; `how` is `IoOptimized` or `Restarted`.
    Ready {
        how: &'static str,
    },
}

/// The conditions that describe `phase`. `RebootRequired` is left as it was while the phase does not
/// know (paused, failing), except that it is set `Unknown`-free: absent until first known.
pub fn conditions_for(phase: &Phase, instance_id: &str) -> Vec<Desired> {
    use condition::*;
    let not_stalled = || Desired::new(STALLED, false, reason::AS_EXPECTED, "");
    match phase {
        Phase::Paused => vec![
            Desired::new(
                READY,
                false,
                reason::PAUSED,
                "ecsvnc.io/paused is \"true\": no ECS calls are made for this object until the annotation is removed",
            ),
            Desired::new(RECONCILING, false, reason::PAUSED, ""),
            not_stalled(),
        ],
        Phase::Failed {
            failure: Failure::Stalled { reason, message },
            applied,
        } => vec![
            Desired::new(READY, false, *reason, message.clone()),
            applied_condition(*applied, reason),
            Desired::new(RECONCILING, false, *reason, ""),
            Desired::new(STALLED, true, *reason, message.clone()),
        ],
        Phase::Failed {
            failure: Failure::Retry {
                reason, message, ..
            },
            applied,
        } => vec![
            Desired::new(READY, false, *reason, message.clone()),
            applied_condition(*applied, reason),
            Desired::new(RECONCILING, true, *reason, message.clone()),
            not_stalled(),
        ],
        Phase::WaitingForRestart {
            reboot_reason,
            message,
        } => vec![
            Desired::new(READY, false, reason::REBOOT_REQUIRED, message.clone()),
            applied_condition(true, reason::APPLIED),
            Desired::new(REBOOT_REQUIRED, true, *reboot_reason, message.clone()),
            Desired::new(
                RECONCILING,
                true,
                reason::WAITING_FOR_RESTART,
                format!("waiting for instance {instance_id} to restart"),
            ),
            not_stalled(),
        ],
        Phase::Ready { how } => {
            let message = if *how == reason::IO_OPTIMIZED {
                format!("the password is in effect: instance {instance_id} is I/O-optimized")
            } else {
                format!(
                    "the password is in effect: instance {instance_id} restarted after it was applied"
                )
            };
            vec![
                Desired::new(READY, true, reason::APPLIED, message.clone()),
                applied_condition(true, reason::APPLIED),
                Desired::new(REBOOT_REQUIRED, false, *how, message),
                Desired::new(RECONCILING, false, reason::APPLIED, ""),
                not_stalled(),
            ]
        }
    }
}

fn applied_condition(applied: bool, why_not: &str) -> Desired {
    if applied {
        Desired::new(
            condition::APPLIED,
            true,
            reason::APPLIED,
            "ECS accepted the Secret's current password",
        )
    } else {
        Desired::new(
            condition::APPLIED,
            false,
            why_not.to_string(),
            "the Secret's current password has not been applied",
        )
    }
}

/// Per-object backoff after `failures` consecutive transient failures: exponential from 5 s (15 s
/// when throttled, since ECS refuses until the next minute), capped at 5 minutes, with "equal
/// jitter" (between half and all of it) so retries never collapse to zero. `unit` is in `[0, 1)`.
pub fn backoff(failures: u32, throttled: bool, unit: f64) -> Duration {
    let base = if throttled {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(5)
    };
    let full = crate::ecs::retry::capped_exponential(
        base,
        Duration::from_secs(300),
        failures.saturating_sub(1),
    );
    full / 2 + (full / 2).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_start_in_a_later_minute_is_a_restart() {
        let applied = t("2026-01-01T10:00:30Z");
        assert!(restarted_since_apply(
            applied,
            None,
            Some(t("2026-01-01T10:01:00Z"))
        ));
        assert!(!restarted_since_apply(
            applied,
            None,
            Some(t("2026-01-01T09:59:00Z"))
        ));
        assert!(!restarted_since_apply(applied, None, None));
    }

    #[test]
    fn a_start_in_the_apply_minute_counts_only_when_it_moved_past_the_baseline() {
        let applied = t("2026-01-01T10:00:30Z");
        let same_minute = Some(t("2026-01-01T10:00:00Z"));
        // Started earlier in the same minute, before the apply: not assumed.
        assert!(!restarted_since_apply(applied, same_minute, same_minute));
        assert!(!restarted_since_apply(applied, None, same_minute));
        // The baseline after the apply showed an older start; now it shows this minute.
        assert!(restarted_since_apply(
            applied,
            Some(t("2026-01-01T09:00:00Z")),
            same_minute
        ));
    }

    #[test]
    fn seconds_precision_start_times_are_compared_exactly() {
        let applied = t("2026-01-01T10:00:30Z");
        assert!(restarted_since_apply(
            applied,
            None,
            Some(t("2026-01-01T10:00:45Z"))
        ));
        assert!(!restarted_since_apply(
            applied,
            None,
            Some(t("2026-01-01T10:00:10Z"))
        ));
    }

    #[test]
    fn backoff_grows_is_capped_and_never_zero() {
        assert!(backoff(1, false, 0.0) >= Duration::from_millis(2500));
        assert!(backoff(1, false, 0.99) <= Duration::from_secs(5));
        assert!(backoff(3, false, 0.0) >= Duration::from_secs(10));
        assert!(backoff(50, false, 1.0) <= Duration::from_secs(300));
        assert!(backoff(1, true, 0.0) >= Duration::from_millis(7500));
    }

    #[test]
    fn ready_phase_has_every_kstatus_condition() {
        let c = conditions_for(
            &Phase::Ready {
                how: reason::IO_OPTIMIZED,
            },
            "i-x",
        );
        let ready = c.iter().find(|d| d.type_ == "Ready").unwrap();
        assert!(ready.status);
        assert_eq!(ready.reason, "Applied");
        assert!(c.iter().any(|d| d.type_ == "Stalled" && !d.status));
        assert!(c.iter().any(|d| d.type_ == "Reconciling" && !d.status));
    }

    #[test]
    fn stalled_phase_names_the_reason_in_ready_and_stalled() {
        let c = conditions_for(
            &Phase::Failed {
                failure: Failure::stalled(reason::SECRET_NOT_FOUND, "create it"),
                applied: false,
            },
            "i-x",
        );
        let ready = c.iter().find(|d| d.type_ == "Ready").unwrap();
        let stalled = c.iter().find(|d| d.type_ == "Stalled").unwrap();
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (false, "SecretNotFound")
        );
        assert_eq!(
            (stalled.status, stalled.reason.as_str()),
            (true, "SecretNotFound")
        );
    }

    #[test]
    fn waiting_for_restart_is_in_progress_for_kstatus() {
        let c = conditions_for(
            &Phase::WaitingForRestart {
                reboot_reason: reason::REBOOT_REQUIRED,
                message: "restart it".into(),
            },
            "i-x",
        );
        let get = |t: &str| c.iter().find(|d| d.type_ == t).unwrap().clone();
        assert_eq!(get("Ready").reason, "RebootRequired");
        assert!(get("RebootRequired").status);
        assert!(get("Reconciling").status);
        assert!(get("Applied").status);
    }
}
