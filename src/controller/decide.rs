//! Pure decisions shared by the planner and the executor: what an ECS error means for the object,
//! whether a restart happened after the apply, which conditions describe a phase, and how long to
//! back off.

use std::time::Duration;

use crate::api::{Reason, condition};
use crate::controller::conditions::Desired;
use crate::ecs::{EcsError, ErrorClass};

/// How fast a retried failure comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// 5 s doubling to 5 min.
    Normal,
    /// ECS's per-API limit: 15 s doubling to 5 min.
    Throttled,
    /// An ECS refusal the controller does not know: 5 min doubling to 1 h.
    Slow,
}

/// A failure that stops progress: either only a change can fix it, or it will pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No ECS call for the same inputs until something changes (see `Reason::fixable_outside_kubernetes`
    /// for the stalls that are checked again now and then).
    Stalled { reason: Reason, message: String },
    /// Retried with per-object backoff.
    Retry {
        reason: Reason,
        message: String,
        pace: Pace,
    },
}

impl Failure {
    pub fn stalled(reason: Reason, message: impl Into<String>) -> Self {
        Self::Stalled {
            reason,
            message: message.into(),
        }
    }

    pub fn retry(reason: Reason, message: impl Into<String>, pace: Pace) -> Self {
        Self::Retry {
            reason,
            message: message.into(),
            pace,
        }
    }

    pub fn reason(&self) -> Reason {
        match self {
            Self::Stalled { reason, .. } | Self::Retry { reason, .. } => *reason,
        }
    }

    pub fn is_stalled(&self) -> bool {
        matches!(self, Self::Stalled { .. })
    }
}

/// What an ECS error means for a VncPassword of `instance_id` in `region`.
///
/// Messages are stable for a given cause (no RequestId, nonce or timestamp in them): a condition
/// message that changed on every attempt would rewrite the status, and every status write wakes the
/// controller again, turning a backoff into a retry storm. RequestIds go to Events and logs instead.
pub fn failure_from_ecs(error: &EcsError, region: &str, instance_id: &str) -> Failure {
    let code = error.code();
    match (code, error.class()) {
        (Some("InvalidInstanceId.NotFound" | "NoSuchResource"), _) => Failure::stalled(
            Reason::InstanceNotFound,
            format!(
                "ECS has no instance {instance_id} in region {region}: check spec.instanceId and spec.regionId, and that the credentials belong to the instance's account"
            ),
        ),
        (Some("InvalidRegionId.NotFound"), _) => Failure::stalled(
            Reason::RegionNotFound,
            format!(
                "ECS does not know region {region}: set spec.regionId to the instance's region, e.g. cn-hangzhou"
            ),
        ),
        // The password passed the local rule (6 of A-Z a-z 0-9) before it was sent, so ECS wants more.
        (Some("IncorrectVncPassword.Malformed"), _) => Failure::stalled(
            Reason::InvalidPassword,
            "ECS refused the password as malformed although it is 6 characters from A-Z, a-z and 0-9: ECS may require at least one upper-case letter, one lower-case letter and one digit; update the Secret",
        ),
        (Some(code), ErrorClass::Credentials) => Failure::stalled(
            Reason::AuthFailed,
            match error.api_error().and_then(|e| e.access_denied.as_deref()) {
                Some(denied) => format!(
                    "ECS refused the credentials with {code} ({denied}): grant that action to the identity in RAM"
                ),
                None => format!(
                    "ECS refused the credentials with {code}: {}",
                    credentials_hint(code)
                ),
            },
        ),
        (_, ErrorClass::Terminal) => Failure::stalled(
            Reason::EcsRejected,
            format!(
                "ECS rejected the request: {}; check the spec and the controller's --ecs-endpoint",
                summary(error)
            ),
        ),
        (Some(c), ErrorClass::Transient)
            if c.starts_with("IncorrectInstanceStatus") || c == "InstanceNotReady" =>
        {
            Failure::retry(
                Reason::IncorrectInstanceStatus,
                format!(
                    "instance {instance_id} is in a state that refuses the change ({c}); retrying with backoff"
                ),
                Pace::Normal,
            )
        }
        (Some(c), ErrorClass::Transient) if c.contains("Conflict") => Failure::retry(
            Reason::OperationConflict,
            format!(
                "another operation on instance {instance_id} is in progress ({c}); retrying with backoff"
            ),
            Pace::Normal,
        ),
        (_, ErrorClass::Throttled) => Failure::retry(
            Reason::Throttled,
            "ECS throttled the call (the account's per-API limit is shared with the console and other tools); retrying with backoff",
            Pace::Throttled,
        ),
        (_, ErrorClass::Unknown) => Failure::retry(
            Reason::EcsUnknownError,
            format!(
                "{}, which the controller does not know; retrying slowly (5 min doubling to 1 h): check the instance and the ECS documentation for this code",
                summary(error)
            ),
            Pace::Slow,
        ),
        _ => Failure::retry(
            Reason::EcsUnavailable,
            format!("{}; retrying with backoff", summary(error)),
            Pace::Normal,
        ),
    }
}

/// Whether a failed RebootInstance may have happened all the same (see
/// [`crate::ecs::client::RebootOutcome`]): then it is never called again for the same intent.
pub fn reboot_may_have_happened(error: &EcsError) -> bool {
    crate::ecs::client::reboot_outcome(error) == crate::ecs::client::RebootOutcome::MayHaveHappened
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
        EcsError::Redirected {
            action,
            status,
            location,
            ..
        } => format!(
            "{action} got HTTP {status}, a redirect to {location} (never followed: check --ecs-endpoint)"
        ),
        EcsError::InvalidRequest(message) => message.clone(),
    }
}

/// The RequestId of a failure, for Events and logs.
pub fn request_id(error: &EcsError) -> Option<&str> {
    error.api_error().and_then(|e| e.request_id.as_deref())
}

pub fn floor_minute(t: jiff::Timestamp) -> jiff::Timestamp {
    let s = t.as_second();
    jiff::Timestamp::from_second(s - s.rem_euclid(60)).unwrap_or(t)
}

/// How far the controller's clock may be from ECS's when ECS gave no time of its own (an answer
/// without `Date`, a status written before the controller kept ECS's time): comparisons that need
/// ECS's time of the apply assume it up to this much later than the controller's.
pub const SKEW_MARGIN: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The latest moment, on **ECS's clock**, at which the password can have been applied: the `Date`
/// of ECS's answer plus the second that `Date` truncates; without it, the controller's time of the
/// apply plus [`SKEW_MARGIN`]. Restarts are judged against this, so a controller clock that is
/// behind ECS's never makes an earlier start look like one after the apply.
pub fn applied_on_ecs_clock(
    local: Option<jiff::Timestamp>,
    ecs: Option<jiff::Timestamp>,
) -> Option<jiff::Timestamp> {
    match (ecs, local) {
        (Some(ecs), _) => ecs.checked_add(jiff::SignedDuration::from_secs(1)).ok(),
        (None, Some(local)) => local.checked_add(SKEW_MARGIN).ok(),
        (None, None) => None,
    }
}

/// Whether `StartTime` shows a restart after the password was applied at `applied`, both on ECS's
/// clock (see [`applied_on_ecs_clock`]).
///
/// ECS reports `StartTime` to the minute. A restart is recognised when the observed start is in a
/// later minute than the apply (certainly after it), or when it moved past `baseline`, the start
/// time seen right after the apply. A start in the apply's own minute that matches the baseline is
/// never taken as a restart, so nothing is assumed that did not happen. That misses a restart that
/// both begins and ends within the apply's minute (or before the first look after the apply); the
/// second signal (a status other than Running seen after the apply, then Running) and, under
/// `rebootPolicy: Automatic`, rebooting only in a later minute close most of that gap.
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

/// Why an applied password is not in effect yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// `rebootPolicy: Manual`: someone must restart the instance.
    Manual,
    /// The instance is stopped: the password takes effect when it is started.
    Stopped,
    /// The instance is between states (Starting, Stopping, Pending).
    InTransition(String),
    /// Automatic: RebootInstance is called at or after this time, in a later minute than the apply
    /// and the last start, so that the restart shows in minute-precision `StartTime`.
    RebootAfter(jiff::Timestamp),
    /// Automatic with `rebootWindows`: outside every window; the next opens at this time.
    RebootWindow(jiff::Timestamp),
    /// Automatic: RebootInstance was asked for at this time.
    RebootRequested(String),
    /// Automatic: asked for at this time, and no restart was seen within `--reboot-timeout`.
    RebootNotObserved(String),
}

/// Where an object stands after a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Paused,
    Failed {
        failure: Failure,
        applied: bool,
    },
    /// Applied to an instance that must restart.
    WaitingForRestart(Waiting),
    /// Applied and in effect; `how` is `IoOptimized` or `Restarted`.
    Ready {
        how: Reason,
    },
}

fn waiting_message(waiting: &Waiting, id: &str) -> String {
    match waiting {
        Waiting::Manual => format!(
            "instance {id} is not I/O-optimized: the new password takes effect after it restarts (console, or RebootInstance; or set rebootPolicy: Automatic)"
        ),
        Waiting::Stopped => format!(
            "instance {id} is Stopped: the new password takes effect when it is started (the controller does not start stopped instances)"
        ),
        Waiting::InTransition(status) => format!(
            "instance {id} is {status}: the new password takes effect once it has restarted; waiting for it to be Running"
        ),
        Waiting::RebootAfter(at) => format!(
            "instance {id} is not I/O-optimized: RebootInstance will be called after {at} (a later minute than the apply and the last start, so the restart shows in ECS's minute-precision StartTime)"
        ),
        Waiting::RebootWindow(next) => format!(
            "instance {id} is not I/O-optimized: RebootInstance waits for the next reboot window (spec.rebootWindows), which opens at {next}"
        ),
        Waiting::RebootRequested(at) => format!(
            "RebootInstance was requested for instance {id} at {at}; waiting for it to start again"
        ),
        Waiting::RebootNotObserved(at) => format!(
            "RebootInstance was requested for instance {id} at {at}, but no restart has been seen since (--reboot-timeout): check the instance in the ECS console (stuck Stopping? the request lost on the way?) and restart it there, or set the annotation ecsvnc.io/force-apply-requested-at to a new value to apply the password and reboot once more"
        ),
    }
}

/// The conditions that describe `phase`.
///
/// `Ready` is kstatus's `Current`: `True` when the controller's part is done for this spec and
/// nothing more happens without a change, a person or a reboot window (`Applied`,
/// `RebootRequired`, `RebootScheduled` in a closed window, `Paused`); `False` while the controller
/// works or fails. `InEffect` says whether the console accepts the applied password.
/// `Reconciling=True` only while the controller itself works through something (retries, an
/// imminent or requested reboot, an instance changing state); `Stalled=True` for every stall,
/// `RebootNotObserved` included. `RebootRequired` and `InEffect` are left as they were while the
/// phase does not know (paused, failing with the password applied); absent until first known.
pub fn conditions_for(phase: &Phase, instance_id: &str) -> Vec<Desired> {
    use condition::*;
    let not_stalled = || Desired::new(STALLED, false, Reason::AsExpected, "");
    let not_reconciling = |reason: Reason| Desired::new(RECONCILING, false, reason, "");
    let not_in_effect = |applied: bool, reason: Reason| {
        (!applied).then(|| {
            Desired::new(
                IN_EFFECT,
                false,
                Reason::NotApplied,
                format!(
                    "the Secret's current password has not been applied to instance {instance_id} ({reason})"
                ),
            )
        })
    };
    match phase {
        Phase::Paused => vec![
            Desired::new(
                READY,
                true,
                Reason::Paused,
                "ecsvnc.io/paused is \"true\": no ECS calls are made for this object until the annotation is removed",
            ),
            not_reconciling(Reason::Paused),
            not_stalled(),
        ],
        Phase::Failed {
            failure: Failure::Stalled { reason, message },
            applied,
        } => [
            Some(Desired::new(READY, false, *reason, message.clone())),
            not_in_effect(*applied, *reason),
            Some(applied_condition(*applied, *reason)),
            Some(not_reconciling(*reason)),
            Some(Desired::new(STALLED, true, *reason, message.clone())),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Phase::Failed {
            failure: Failure::Retry {
                reason, message, ..
            },
            applied,
        } => [
            Some(Desired::new(READY, false, *reason, message.clone())),
            not_in_effect(*applied, *reason),
            Some(applied_condition(*applied, *reason)),
            Some(Desired::new(RECONCILING, true, *reason, message.clone())),
            Some(not_stalled()),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Phase::WaitingForRestart(waiting) => {
            let message = waiting_message(waiting, instance_id);
            // (Ready's status and reason, InEffect's and RebootRequired's reason, the reason of a
            // Reconciling=True, whether it is a stall).
            let (ready, ready_reason, in_effect_reason, reboot_reason, reconciling, stalled) =
                match waiting {
                    // Only a person ends these.
                    Waiting::Manual | Waiting::Stopped => (
                        true,
                        Reason::RebootRequired,
                        Reason::RebootRequired,
                        Reason::RebootRequired,
                        None,
                        false,
                    ),
                    // Only a window ends this.
                    Waiting::RebootWindow(_) => (
                        true,
                        Reason::RebootScheduled,
                        Reason::RebootScheduled,
                        Reason::RebootRequired,
                        None,
                        false,
                    ),
                    // The controller's own work, soon.
                    Waiting::RebootAfter(_) => (
                        false,
                        Reason::RebootScheduled,
                        Reason::RebootScheduled,
                        Reason::RebootRequired,
                        Some(Reason::RebootScheduled),
                        false,
                    ),
                    Waiting::InTransition(_) => (
                        false,
                        Reason::WaitingForRestart,
                        Reason::RebootRequired,
                        Reason::RebootRequired,
                        Some(Reason::WaitingForRestart),
                        false,
                    ),
                    Waiting::RebootRequested(_) => (
                        false,
                        Reason::RebootRequested,
                        Reason::RebootRequested,
                        Reason::RebootRequested,
                        Some(Reason::RebootRequested),
                        false,
                    ),
                    // A person must look.
                    Waiting::RebootNotObserved(_) => (
                        false,
                        Reason::RebootNotObserved,
                        Reason::RebootNotObserved,
                        Reason::RebootRequested,
                        None,
                        true,
                    ),
                };
            vec![
                Desired::new(READY, ready, ready_reason, message.clone()),
                Desired::new(IN_EFFECT, false, in_effect_reason, message.clone()),
                applied_condition(true, Reason::Applied),
                Desired::new(REBOOT_REQUIRED, true, reboot_reason, message.clone()),
                match reconciling {
                    Some(reason) => Desired::new(RECONCILING, true, reason, message.clone()),
                    None => not_reconciling(ready_reason),
                },
                if stalled {
                    Desired::new(STALLED, true, ready_reason, message)
                } else {
                    not_stalled()
                },
            ]
        }
        Phase::Ready { how } => {
            let message = if *how == Reason::IoOptimized {
                format!("the password is in effect: instance {instance_id} is I/O-optimized")
            } else {
                format!(
                    "the password is in effect: instance {instance_id} restarted after it was applied"
                )
            };
            vec![
                Desired::new(READY, true, Reason::Applied, message.clone()),
                Desired::new(IN_EFFECT, true, *how, message.clone()),
                applied_condition(true, Reason::Applied),
                Desired::new(REBOOT_REQUIRED, false, *how, message),
                not_reconciling(Reason::Applied),
                not_stalled(),
            ]
        }
    }
}

fn applied_condition(applied: bool, why_not: Reason) -> Desired {
    if applied {
        Desired::new(
            condition::APPLIED,
            true,
            Reason::Applied,
            "ECS accepted the Secret's current password",
        )
    } else {
        Desired::new(
            condition::APPLIED,
            false,
            why_not,
            "the Secret's current password has not been applied",
        )
    }
}

/// Per-object backoff after `failures` consecutive failures, with "equal jitter" (between half and
/// all of it) so retries never collapse to zero. `unit` is in `[0, 1)`.
pub fn backoff(failures: u32, pace: Pace, unit: f64) -> Duration {
    let (base, cap) = match pace {
        Pace::Normal => (Duration::from_secs(5), Duration::from_secs(300)),
        // ECS refuses a throttled caller until its window passes.
        Pace::Throttled => (Duration::from_secs(15), Duration::from_secs(300)),
        Pace::Slow => (Duration::from_secs(300), Duration::from_secs(3600)),
    };
    let full = crate::ecs::retry::capped_exponential(base, cap, failures.saturating_sub(1));
    full / 2 + (full / 2).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::ApiError;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn api(code: &str, status: u16) -> EcsError {
        EcsError::Api {
            action: "ModifyInstanceVncPasswd",
            error: Box::new(ApiError {
                http_status: status,
                code: code.into(),
                message: "m".into(),
                request_id: Some("R".into()),
                recommend: None,
                access_denied: None,
                retry_after: None,
            }),
            client_string_to_sign: None,
        }
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
        assert!(!restarted_since_apply(applied, same_minute, same_minute));
        assert!(!restarted_since_apply(applied, None, same_minute));
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
        assert!(backoff(1, Pace::Normal, 0.0) >= Duration::from_millis(2500));
        assert!(backoff(1, Pace::Normal, 0.99) <= Duration::from_secs(5));
        assert!(backoff(3, Pace::Normal, 0.0) >= Duration::from_secs(10));
        assert!(backoff(50, Pace::Normal, 1.0) <= Duration::from_secs(300));
        assert!(backoff(1, Pace::Throttled, 0.0) >= Duration::from_millis(7500));
        assert!(backoff(1, Pace::Slow, 0.0) >= Duration::from_secs(150));
        assert!(backoff(1, Pace::Slow, 1.0) <= Duration::from_secs(300));
        assert_eq!(backoff(60, Pace::Slow, 1.0), Duration::from_secs(3600));
    }

    #[test]
    fn ecs_error_classes_map_to_reasons() {
        let f = |code: &str, status: u16| failure_from_ecs(&api(code, status), "r", "i-1");
        let cases: &[(&str, u16, Reason, bool)] = &[
            (
                "InvalidInstanceId.NotFound",
                404,
                Reason::InstanceNotFound,
                true,
            ),
            (
                "InvalidRegionId.NotFound",
                404,
                Reason::RegionNotFound,
                true,
            ),
            (
                "IncorrectVncPassword.Malformed",
                400,
                Reason::InvalidPassword,
                true,
            ),
            ("Forbidden.RAM", 403, Reason::AuthFailed, true),
            ("InvalidAccessKeyId.NotFound", 404, Reason::AuthFailed, true),
            ("InvalidParameter", 400, Reason::EcsRejected, true),
            (
                "IncorrectInstanceStatus",
                403,
                Reason::IncorrectInstanceStatus,
                false,
            ),
            (
                "IncorrectInstanceStatus.Initializing",
                403,
                Reason::IncorrectInstanceStatus,
                false,
            ),
            ("OperationConflict", 409, Reason::OperationConflict, false),
            ("Operation.Conflict", 403, Reason::OperationConflict, false),
            (
                "InvalidOperation.Conflict",
                403,
                Reason::OperationConflict,
                false,
            ),
            ("Throttling.User", 400, Reason::Throttled, false),
            ("Rejected.Throttling", 400, Reason::Throttled, false),
            ("ServiceUnavailable", 503, Reason::EcsUnavailable, false),
            ("Brand.NewCode", 400, Reason::EcsUnknownError, false),
        ];
        for (code, status, reason, stalled) in cases {
            let failure = f(code, *status);
            assert_eq!(failure.reason(), *reason, "{code}");
            assert_eq!(failure.is_stalled(), *stalled, "{code}");
        }
        match f("Brand.NewCode", 400) {
            Failure::Retry { pace, message, .. } => {
                assert_eq!(pace, Pace::Slow);
                assert!(message.contains("Brand.NewCode"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every kind of failed RebootInstance, and whether it may have rebooted (never sent again)
    /// or certainly did not (asked for again).
    #[test]
    fn reboot_outcomes_by_class() {
        use crate::ecs::error::UnexpectedBody;
        let body = |status: u16| EcsError::UnexpectedBody {
            action: "RebootInstance",
            body: UnexpectedBody {
                http_status: status,
                content_type: Some("text/html".into()),
                excerpt: "<html>gateway</html>".into(),
                note: None,
            },
        };
        let network = |timeout: bool, never_sent: bool| EcsError::Network {
            action: "RebootInstance",
            endpoint: "https://ecs.example".into(),
            reason: "r".into(),
            timeout,
            never_sent,
        };
        let cases: Vec<(&str, EcsError, bool)> = vec![
            ("5xx from ECS", api("InternalError", 500), true),
            ("ServiceUnavailable", api("ServiceUnavailable", 503), true),
            (
                "a nonce ECS has seen: a copy was delivered",
                api("SignatureNonceUsed", 400),
                true,
            ),
            ("throttled, 400", api("Throttling.User", 400), false),
            ("throttled, 503", api("Throttling", 503), false),
            ("throttled, 429", api("Throttling.Api", 429), false),
            (
                "a stale timestamp: refused",
                api("InvalidTimeStamp.Expired", 400),
                false,
            ),
            (
                "refused for the state",
                api("IncorrectInstanceStatus", 403),
                false,
            ),
            ("a proxy's 408", body(408), true),
            ("a proxy's 499", body(499), true),
            ("a gateway's 502", body(502), true),
            ("a gateway's 504", body(504), true),
            ("a proxy's 403 page", body(403), false),
            ("a 200 that is not ECS's", body(200), true),
            ("no answer in time", network(true, false), true),
            ("reset after sending", network(false, false), true),
            ("never connected", network(false, true), false),
            (
                "a redirect, never followed",
                EcsError::Redirected {
                    action: "RebootInstance",
                    endpoint: "https://ecs.example".into(),
                    status: 307,
                    location: "http://elsewhere".into(),
                },
                false,
            ),
        ];
        for (what, error, may) in cases {
            assert_eq!(reboot_may_have_happened(&error), may, "{what}");
        }
    }

    #[test]
    fn ready_phase_has_every_kstatus_condition() {
        let c = conditions_for(
            &Phase::Ready {
                how: Reason::IoOptimized,
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
                failure: Failure::stalled(Reason::SecretNotFound, "create it"),
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

    /// Every phase's conditions: (Ready, its reason, InEffect, Reconciling, Stalled); `None` where
    /// the phase leaves the condition as it was. kstatus's rule: Reconciling=True is InProgress,
    /// Stalled=True Failed, then Ready=True Current and Ready=False InProgress; so a state only a
    /// person or a closed window can end has Ready=True, and one that needs a person to look has
    /// Stalled=True.
    #[test]
    fn every_phase_sets_the_conditions_of_its_health() {
        let at = t("2026-01-04T02:00:00Z");
        type Row = (
            Phase,
            bool,
            &'static str,
            Option<bool>,
            bool,
            bool,
            &'static str,
        );
        let rows: Vec<Row> = vec![
            (Phase::Paused, true, "Paused", None, false, false, "Current"),
            (
                Phase::Ready {
                    how: Reason::IoOptimized,
                },
                true,
                "Applied",
                Some(true),
                false,
                false,
                "Current",
            ),
            (
                Phase::Ready {
                    how: Reason::Restarted,
                },
                true,
                "Applied",
                Some(true),
                false,
                false,
                "Current",
            ),
            (
                Phase::WaitingForRestart(Waiting::Manual),
                true,
                "RebootRequired",
                Some(false),
                false,
                false,
                "Current",
            ),
            (
                Phase::WaitingForRestart(Waiting::Stopped),
                true,
                "RebootRequired",
                Some(false),
                false,
                false,
                "Current",
            ),
            (
                Phase::WaitingForRestart(Waiting::RebootWindow(at)),
                true,
                "RebootScheduled",
                Some(false),
                false,
                false,
                "Current",
            ),
            (
                Phase::WaitingForRestart(Waiting::RebootAfter(at)),
                false,
                "RebootScheduled",
                Some(false),
                true,
                false,
                "InProgress",
            ),
            (
                Phase::WaitingForRestart(Waiting::InTransition("Starting".into())),
                false,
                "WaitingForRestart",
                Some(false),
                true,
                false,
                "InProgress",
            ),
            (
                Phase::WaitingForRestart(Waiting::RebootRequested("T".into())),
                false,
                "RebootRequested",
                Some(false),
                true,
                false,
                "InProgress",
            ),
            (
                Phase::WaitingForRestart(Waiting::RebootNotObserved("T".into())),
                false,
                "RebootNotObserved",
                Some(false),
                false,
                true,
                "Failed",
            ),
            (
                Phase::Failed {
                    failure: Failure::retry(Reason::Throttled, "m", Pace::Throttled),
                    applied: false,
                },
                false,
                "Throttled",
                Some(false),
                true,
                false,
                "InProgress",
            ),
            (
                Phase::Failed {
                    failure: Failure::retry(Reason::Throttled, "m", Pace::Throttled),
                    applied: true,
                },
                false,
                "Throttled",
                None,
                true,
                false,
                "InProgress",
            ),
            (
                Phase::Failed {
                    failure: Failure::stalled(Reason::SecretNotFound, "m"),
                    applied: false,
                },
                false,
                "SecretNotFound",
                Some(false),
                false,
                true,
                "Failed",
            ),
        ];
        for (phase, ready, reason, in_effect, reconciling, stalled, kstatus) in rows {
            let c = conditions_for(&phase, "i-x");
            let get = |t: &str| c.iter().find(|d| d.type_ == t);
            let r = get("Ready").expect("Ready");
            assert_eq!((r.status, r.reason.as_str()), (ready, reason), "{phase:?}");
            assert_eq!(get("InEffect").map(|d| d.status), in_effect, "{phase:?}");
            assert_eq!(get("Reconciling").unwrap().status, reconciling, "{phase:?}");
            assert_eq!(get("Stalled").unwrap().status, stalled, "{phase:?}");
            // kstatus's verdict from these alone.
            let verdict = if reconciling {
                "InProgress"
            } else if stalled {
                "Failed"
            } else if ready {
                "Current"
            } else {
                "InProgress"
            };
            assert_eq!(verdict, kstatus, "{phase:?}");
            // Never both: kstatus takes the first in the list.
            assert!(!(reconciling && stalled), "{phase:?}");
            for d in &c {
                assert!(
                    !d.status
                        || d.type_ == "Ready"
                        || d.type_ == "InEffect"
                        || d.type_ == "Applied"
                        || d.type_ == "RebootRequired"
                        || !d.message.is_empty(),
                    "{phase:?}: {} True without a message",
                    d.type_
                );
            }
        }
    }

    #[test]
    fn a_reboot_not_observed_is_a_stall_saying_what_to_do() {
        let c = conditions_for(
            &Phase::WaitingForRestart(Waiting::RebootNotObserved("T".into())),
            "i-x",
        );
        let get = |t: &str| c.iter().find(|d| d.type_ == t).unwrap().clone();
        assert_eq!(get("Ready").reason, "RebootNotObserved");
        assert_eq!(get("Stalled").reason, "RebootNotObserved");
        assert!(get("Stalled").message.contains("force-apply-requested-at"));
        assert_eq!(get("RebootRequired").reason, "RebootRequested");
        assert!(get("RebootRequired").status);
    }
}
