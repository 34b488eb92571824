//! observe → plan → act → **record**: pure changes to the working status after each step.

use crate::api::{AppliedSecret, VncPasswordStatus};
use crate::controller::decide::{applied_on_ecs_clock, restarted_since_apply};
use crate::ecs::Instance;
use crate::ecs::signer::format_timestamp;
use crate::ecs::types::parse_start_time;

/// What ECS accepted, and when.
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    pub fingerprint: &'a str,
    pub secret: &'a AppliedSecret,
    pub instance_key: &'a str,
    pub request_id: &'a str,
    /// The controller's time.
    pub at: jiff::Timestamp,
    /// ECS's time (the `Date` of its answer), when it sent one.
    pub ecs_time: Option<jiff::Timestamp>,
    /// The `ecsvnc.io/force-apply-requested-at` token (or its deprecated name's) this apply answers.
    pub force_token: Option<&'a str>,
}

/// ECS accepted the password: a new apply, whose restart (if one is needed) is still to be seen.
pub fn applied(status: &mut VncPasswordStatus, apply: Apply) {
    let Apply {
        fingerprint,
        secret,
        instance_key,
        request_id,
        at: now,
        ecs_time,
        force_token,
    } = apply;
    status.applied.fingerprint = Some(fingerprint.to_string());
    status.applied.instance = Some(instance_key.to_string());
    status.applied.secret = Some(secret.clone());
    status.applied.time = Some(format_timestamp(now));
    status.applied.ecs_time = ecs_time.map(format_timestamp);
    status.applied.request_id = Some(request_id.to_string());
    status.instance.start_time_at_apply = None;
    status.instance.left_running_after_apply = false;
    status.instance.restart_observed_time = None;
    status.reboot.requested_time = None;
    status.reboot.requested_for = None;
    status.reboot.request_id = None;
    status.stall.inputs = None;
    status.stall.checked_time = None;
    if let Some(token) = force_token {
        status.applied.force_apply_token = Some(token.to_string());
    }
    // Whether this password needs a restart, or is in effect, is not known until the instance is
    // looked at: an InEffect=True of the previous password (or of another instance) must not
    // outlive this apply when the look fails (a throttled DescribeInstances).
    status.conditions.retain(|c| {
        c.type_ != crate::api::condition::REBOOT_REQUIRED
            && c.type_ != crate::api::condition::IN_EFFECT
    });
}

/// The applied password is the Secret's: the fingerprint under the current key and the Secret's
/// current identity. A reboot intent for the old fingerprint stays the intent for this one.
pub fn identity(
    status: &mut VncPasswordStatus,
    fingerprint: &str,
    secret: &AppliedSecret,
    instance_key: &str,
) {
    if status.reboot.requested_for.is_some()
        && status.reboot.requested_for == status.applied.fingerprint
    {
        status.reboot.requested_for = Some(fingerprint.to_string());
    }
    status.applied.fingerprint = Some(fingerprint.to_string());
    status.applied.secret = Some(secret.clone());
    status.applied.instance = Some(instance_key.to_string());
}

/// What DescribeInstances said about the instance, and whether that shows a restart after the
/// apply: `StartTime` moved past the baseline (or into a later minute than the apply), or a status
/// other than Running was seen after the apply and the instance is Running again.
pub fn described(
    status: &mut VncPasswordStatus,
    instance_key: &str,
    instance: &Instance,
    now: jiff::Timestamp,
) {
    status.instance.key = Some(instance_key.to_string());
    status.instance.io_optimized = Some(instance.io_optimized);
    status.instance.namespace_tag = instance
        .tags
        .get(crate::controller::tenancy::NAMESPACE_TAG)
        .cloned();
    status.instance.status = Some(instance.status.clone()).filter(|s| !s.is_empty());
    status.stall.inputs = None;
    status.stall.checked_time = None;
    if status.applied.instance.as_deref() != Some(instance_key)
        || status.instance.restart_observed_time.is_some()
        || instance.io_optimized
    {
        return;
    }
    if status.instance.start_time_at_apply.is_none() {
        // The first look after the apply is the baseline.
        // As RFC 3339 (ECS gives minutes).
        status.instance.start_time_at_apply = instance
            .start_time
            .as_deref()
            .and_then(parse_start_time)
            .map(format_timestamp);
    }
    let running = instance.status == "Running";
    if !running && !instance.status.is_empty() {
        status.instance.left_running_after_apply = true;
    }
    let applied_at = applied_on_ecs_clock(
        parse(status.applied.time.as_deref()),
        parse(status.applied.ecs_time.as_deref()),
    );
    let baseline = status
        .instance
        .start_time_at_apply
        .as_deref()
        .and_then(parse_start_time);
    let by_start_time =
        applied_at.is_some_and(|a| restarted_since_apply(a, baseline, instance.started_at()));
    if by_start_time || (running && status.instance.left_running_after_apply) {
        status.instance.restart_observed_time = Some(format_timestamp(now));
    }
}

fn parse(text: Option<&str>) -> Option<jiff::Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// The object reached its instance with its own credentials (ECS accepted its password or
/// described the instance to it): its claim on the instance, as the controller's keyed proof.
pub fn proved_access(status: &mut VncPasswordStatus, proof: String) {
    status.applied.access_proof = Some(proof);
}

/// The object's credentials can no longer reach its instance: its claim goes.
pub fn lost_access(status: &mut VncPasswordStatus) {
    status.applied.access_proof = None;
}

/// The intent to reboot, for the applied password, recorded before RebootInstance.
pub fn reboot_intent(status: &mut VncPasswordStatus, now: jiff::Timestamp) {
    status.reboot.requested_time = Some(format_timestamp(now));
    status.reboot.requested_for = status.applied.fingerprint.clone();
}

/// ECS accepted RebootInstance.
pub fn reboot_accepted(status: &mut VncPasswordStatus, request_id: &str) {
    status.reboot.request_id = Some(request_id.to_string());
}

/// ECS refused RebootInstance with an answer, so no reboot happened: the intent is withdrawn and a
/// later reconcile may ask again.
pub fn reboot_refused(status: &mut VncPasswordStatus) {
    status.reboot.requested_time = None;
    status.reboot.requested_for = None;
}

/// ECS stalled the object on these inputs.
pub fn stalled(status: &mut VncPasswordStatus, inputs: String, now: jiff::Timestamp) {
    status.stall.inputs = Some(inputs);
    status.stall.checked_time = Some(format_timestamp(now));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(status: &str, start: &str, io: bool) -> Instance {
        Instance {
            instance_id: "i-1".into(),
            region_id: "r".into(),
            status: status.into(),
            io_optimized: io,
            start_time: Some(start.into()),
            tags: Default::default(),
        }
    }

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn after_apply(at: &str) -> VncPasswordStatus {
        let mut s = VncPasswordStatus::default();
        let secret = AppliedSecret::default();
        applied(
            &mut s,
            Apply {
                fingerprint: "fp",
                secret: &secret,
                instance_key: "r/i-1",
                request_id: "R1",
                at: t(at),
                ecs_time: Some(t(at)),
                force_token: None,
            },
        );
        s
    }

    #[test]
    fn the_first_look_after_the_apply_is_the_baseline() {
        let mut s = after_apply("2026-01-01T10:00:40Z");
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:00Z", false),
            t("2026-01-01T10:00:41Z"),
        );
        assert_eq!(
            s.instance.start_time_at_apply.as_deref(),
            Some("2026-01-01T10:00:00Z")
        );
        assert!(s.instance.restart_observed_time.is_none());
        // A reboot within the same minute: StartTime unchanged, but Stopping/Starting was seen.
        described(
            &mut s,
            "r/i-1",
            &instance("Starting", "2026-01-01T10:00Z", false),
            t("2026-01-01T10:00:50Z"),
        );
        assert!(s.instance.left_running_after_apply && s.instance.restart_observed_time.is_none());
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:00Z", false),
            t("2026-01-01T10:00:58Z"),
        );
        assert!(s.instance.restart_observed_time.is_some());
    }

    #[test]
    fn a_start_in_a_later_minute_is_a_restart() {
        let mut s = after_apply("2026-01-01T10:00:40Z");
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:00Z", false),
            t("2026-01-01T10:00:41Z"),
        );
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:02Z", false),
            t("2026-01-01T10:02:30Z"),
        );
        assert!(s.instance.restart_observed_time.is_some());
    }

    #[test]
    fn facts_of_another_instance_track_no_restart() {
        let mut s = after_apply("2026-01-01T10:00:40Z");
        described(
            &mut s,
            "r/i-2",
            &instance("Stopped", "2026-01-01T11:00Z", false),
            t("2026-01-01T11:00:41Z"),
        );
        assert_eq!(s.instance.key.as_deref(), Some("r/i-2"));
        assert!(!s.instance.left_running_after_apply);
        assert!(
            s.instance.restart_observed_time.is_none() && s.instance.start_time_at_apply.is_none()
        );
    }

    #[test]
    fn a_new_apply_forgets_the_previous_restart_and_reboot() {
        let mut s = after_apply("2026-01-01T10:00:40Z");
        reboot_intent(&mut s, t("2026-01-01T10:01:05Z"));
        assert_eq!(s.reboot.requested_for.as_deref(), Some("fp"));
        s.instance.restart_observed_time = Some("x".into());
        applied(
            &mut s,
            Apply {
                fingerprint: "fp2",
                secret: &AppliedSecret::default(),
                instance_key: "r/i-1",
                request_id: "R2",
                at: t("2026-01-01T11:00:00Z"),
                ecs_time: None,
                force_token: Some("tok"),
            },
        );
        assert!(s.reboot.requested_time.is_none() && s.instance.restart_observed_time.is_none());
        assert_eq!(s.applied.force_apply_token.as_deref(), Some("tok"));
    }

    #[test]
    fn re_recording_under_a_new_key_keeps_the_reboot_intent() {
        let mut s = after_apply("2026-01-01T10:00:40Z");
        reboot_intent(&mut s, t("2026-01-01T10:01:05Z"));
        identity(&mut s, "fp-new-key", &AppliedSecret::default(), "r/i-1");
        assert_eq!(s.reboot.requested_for.as_deref(), Some("fp-new-key"));
        assert_eq!(s.applied.fingerprint.as_deref(), Some("fp-new-key"));
    }

    /// The controller's clock 5 minutes behind ECS's; the instance booted 2 minutes (ECS time)
    /// before the apply. Judged by the controller's clock, that start lies after the apply.
    #[test]
    fn a_controller_clock_behind_ecs_never_makes_an_earlier_start_a_restart() {
        let mut s = VncPasswordStatus::default();
        let local = t("2026-01-01T10:00:40Z");
        let ecs = t("2026-01-01T10:05:40Z");
        applied(
            &mut s,
            Apply {
                fingerprint: "fp",
                secret: &AppliedSecret::default(),
                instance_key: "r/i-1",
                request_id: "R1",
                at: local,
                ecs_time: Some(ecs),
                force_token: None,
            },
        );
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:03Z", false),
            local,
        );
        assert!(
            s.instance.restart_observed_time.is_none(),
            "no restart happened"
        );
        // A real restart, in a later ECS minute: seen.
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:07Z", false),
            local,
        );
        assert!(s.instance.restart_observed_time.is_some());
    }

    /// The controller's clock 5 minutes ahead of ECS's, and the restart happened before the first
    /// look after the apply (so the baseline is already the new start): ECS's time still shows it.
    #[test]
    fn a_controller_clock_ahead_of_ecs_never_misses_a_restart() {
        let mut s = VncPasswordStatus::default();
        let local = t("2026-01-01T10:05:40Z");
        let ecs = t("2026-01-01T10:00:40Z");
        applied(
            &mut s,
            Apply {
                fingerprint: "fp",
                secret: &AppliedSecret::default(),
                instance_key: "r/i-1",
                request_id: "R1",
                at: local,
                ecs_time: Some(ecs),
                force_token: None,
            },
        );
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:02Z", false),
            local,
        );
        assert!(s.instance.restart_observed_time.is_some());
    }

    /// No `Date` from ECS: the controller's time plus the margin stands in, so a start up to the
    /// margin after the controller's apply time is not taken for a restart.
    #[test]
    fn without_ecs_time_a_margin_keeps_a_near_start_from_counting() {
        let mut s = VncPasswordStatus::default();
        let local = t("2026-01-01T10:00:40Z");
        applied(
            &mut s,
            Apply {
                fingerprint: "fp",
                secret: &AppliedSecret::default(),
                instance_key: "r/i-1",
                request_id: "R1",
                at: local,
                ecs_time: None,
                force_token: None,
            },
        );
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:01Z", false),
            local,
        );
        assert!(s.instance.restart_observed_time.is_none());
        described(
            &mut s,
            "r/i-1",
            &instance("Running", "2026-01-01T10:03Z", false),
            local,
        );
        assert!(s.instance.restart_observed_time.is_some());
    }
}
