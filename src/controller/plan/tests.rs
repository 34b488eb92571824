//! Table tests for every transition of the planner.

use super::*;
use crate::api::condition;
use crate::controller::conditions::merge;
use crate::controller::decide::conditions_for;
use crate::controller::record;
use crate::ecs::Instance;

const UID: &str = "uid-1";
const KEY: &str = "k1";
const FP: &str = "hmac-sha256:k1:AAAA";
const FP_NEW_KEY: &str = "hmac-sha256:k2:BBBB";
const FP_OTHER_PASSWORD: &str = "hmac-sha256:k1:CCCC";

fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn spec(instance: &str, policy: RebootPolicy) -> VncPasswordSpec {
    serde_json::from_value(serde_json::json!({
        "regionId": "cn-hangzhou",
        "instanceId": instance,
        "passwordSecretRef": {"name": "pw"},
        "rebootPolicy": format!("{policy:?}"),
    }))
    .unwrap()
}

fn secret(rv: &str) -> AppliedSecret {
    AppliedSecret {
        name: "pw".into(),
        key: "password".into(),
        uid: "s-uid".into(),
        resource_version: rv.into(),
    }
}

/// One scenario: everything the planner reads, with sensible defaults.
struct S {
    now: jiff::Timestamp,
    spec: VncPasswordSpec,
    status: VncPasswordStatus,
    password: PasswordInput,
    credentials: Result<String, Failure>,
    key_id: &'static str,
    round: Round,
    paused: bool,
    force: Option<&'static str>,
    generation: i64,
    generated: Option<GeneratedSecret>,
    rotate: Option<&'static str>,
    claimed_by: Option<(&'static str, &'static str)>,
    /// ECS's clock minus the controller's, as measured lately.
    ecs_offset: Option<jiff::SignedDuration>,
    /// ECS's clock minus the controller's at the apply (what the `Date` of its answer says).
    ecs_skew_at_apply: Option<jiff::SignedDuration>,
    overwritten: bool,
    /// The controller's credentials serve several namespaces (and this object uses them).
    shared: bool,
}

impl S {
    fn new(policy: RebootPolicy) -> Self {
        Self {
            now: t("2026-01-01T10:00:40Z"),
            spec: spec("i-aaaaaaaa1", policy),
            status: VncPasswordStatus::default(),
            password: PasswordInput::Usable {
                fingerprint: FP.into(),
                secret: secret("1"),
            },
            credentials: Ok("default:LTAI".into()),
            key_id: KEY,
            round: Round::default(),
            paused: false,
            force: None,
            generation: 1,
            generated: None,
            rotate: None,
            claimed_by: None,
            ecs_offset: None,
            ecs_skew_at_apply: Some(jiff::SignedDuration::ZERO),
            overwritten: false,
            shared: false,
        }
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            now: self.now,
            uid: UID,
            own_namespace: Some("team-a"),
            generation: self.generation,
            spec: &self.spec,
            paused: self.paused,
            force_token: self.force,
            status: &self.status,
            password: &self.password,
            credentials: &self.credentials,
            key_id: self.key_id,
            generated: self.generated.as_ref(),
            rotate_token: self.rotate,
            claimed_by: self.claimed_by,
            round: &self.round,
            settings: PlanSettings {
                poll: Duration::from_secs(30),
                reboot_timeout: Duration::from_secs(900),
                stall_recheck: Duration::from_secs(1800),
            },
            ecs_offset: self.ecs_offset,
            overwritten: self.overwritten,
            shared_credentials: self.shared,
        }
    }

    fn plan(&self) -> Step {
        plan(&self.observed())
    }

    fn key(&self) -> String {
        instance_key(&self.spec)
    }

    /// The status after a successful apply at `now`.
    fn applied(mut self) -> Self {
        let key = self.key();
        record::applied(
            &mut self.status,
            record::Apply {
                fingerprint: FP,
                secret: &secret("1"),
                instance_key: &key,
                request_id: "R1",
                at: self.now,
                ecs_time: self.ecs_skew_at_apply.map(|skew| self.now + skew),
                force_token: None,
            },
        );
        self
    }

    fn described(self, status: &str, start: &str, io: bool) -> Self {
        self.described_tagged(status, start, io, None)
    }

    fn described_tagged(
        mut self,
        status: &str,
        start: &str,
        io: bool,
        ns_tag: Option<&str>,
    ) -> Self {
        let key = self.key();
        let instance = Instance {
            instance_id: self.spec.instance_id.clone(),
            region_id: self.spec.region_id.clone(),
            status: status.into(),
            io_optimized: io,
            start_time: Some(start.into()),
            tags: ns_tag
                .map(|v| [("ecsvnc.io/namespace".to_string(), v.to_string())].into())
                .unwrap_or_default(),
        };
        record::described(&mut self.status, &key, &instance, self.now);
        self.round.described = true;
        self
    }

    /// A later reconcile: nothing done yet in it.
    fn next_round(mut self, now: &str) -> Self {
        self.round = Round::default();
        self.now = t(now);
        self
    }

    /// Writes the conditions of a finished plan into the status, as the executor does.
    fn finish_into_status(mut self) -> Self {
        if let Step::Finish { phase, .. } = self.plan() {
            let desired = conditions_for(&phase, &self.spec.instance_id);
            self.status.conditions = merge(&self.status.conditions, &desired, Some(1), self.now);
        }
        self
    }
}

fn phase(step: Step) -> Phase {
    match step {
        Step::Finish { phase, .. } => phase,
        other => panic!("expected Finish, got {other:?}"),
    }
}

fn requeue(step: Step) -> Requeue {
    match step {
        Step::Finish { requeue, .. } => requeue,
        other => panic!("expected Finish, got {other:?}"),
    }
}

fn stalled(reason: Reason) -> Failure {
    Failure::stalled(reason, "msg")
}

// --- new, rotated, changed -------------------------------------------------------------------

#[test]
fn a_new_object_is_applied_then_described() {
    let s = S::new(RebootPolicy::Manual);
    assert_eq!(s.plan(), Step::Apply);
    let s = s.applied();
    assert_eq!(s.plan(), Step::Describe);
}

#[test]
fn an_io_optimized_instance_is_ready_after_one_look() {
    let s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true);
    assert_eq!(
        phase(s.plan()),
        Phase::Ready {
            how: Reason::IoOptimized
        }
    );
    // A later reconcile asks nothing of ECS, credentials or not.
    let mut s = s.next_round("2026-01-01T12:00:00Z");
    s.credentials = Err(stalled(Reason::CredentialsNotFound));
    let step = s.plan();
    assert_eq!(requeue(step.clone()), Requeue::AwaitChange);
    assert_eq!(
        phase(step),
        Phase::Ready {
            how: Reason::IoOptimized
        }
    );
}

#[test]
fn a_rotated_password_is_applied_again() {
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true)
        .next_round("2026-01-01T11:00:00Z");
    s.password = PasswordInput::Usable {
        fingerprint: FP_OTHER_PASSWORD.into(),
        secret: secret("2"),
    };
    assert_eq!(s.plan(), Step::Apply);
}

#[test]
fn a_new_secret_version_with_the_same_password_is_only_recorded() {
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true)
        .next_round("2026-01-01T11:00:00Z");
    s.password = PasswordInput::Usable {
        fingerprint: FP.into(),
        secret: secret("7"),
    };
    assert_eq!(s.plan(), Step::Record);
}

#[test]
fn an_instance_id_change_applies_and_never_uses_the_old_instance_facts() {
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true)
        .next_round("2026-01-01T11:00:00Z");
    s.spec = spec("i-bbbbbbbb2", RebootPolicy::Manual);
    s.password = PasswordInput::Usable {
        fingerprint: FP_OTHER_PASSWORD.into(),
        secret: secret("1"),
    };
    assert_eq!(s.plan(), Step::Apply);
    let key = s.key();
    record::applied(
        &mut s.status,
        record::Apply {
            fingerprint: FP_OTHER_PASSWORD,
            secret: &secret("1"),
            instance_key: &key,
            request_id: "R2",
            at: s.now,
            ecs_time: Some(s.now),
            force_token: None,
        },
    );
    assert_eq!(s.plan(), Step::Describe);
    // DescribeInstances throttled right after the apply: not Ready on the old instance's facts.
    s.round.described = true;
    s.round.failure = Some(Failure::retry(Reason::Throttled, "t", Pace::Throttled));
    let step = s.plan();
    assert_eq!(requeue(step.clone()), Requeue::Backoff(Pace::Throttled));
    assert!(matches!(phase(step), Phase::Failed { applied: true, .. }));
    // The next reconcile describes the new instance rather than trusting the old facts.
    let s = s.next_round("2026-01-01T11:00:10Z");
    assert_eq!(s.plan(), Step::Describe);
}

#[test]
fn a_region_change_applies_again() {
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true)
        .next_round("2026-01-01T11:00:00Z");
    s.spec.region_id = "cn-beijing".into();
    // Same password, same Secret: the fingerprint (over region and instance) differs.
    s.password = PasswordInput::Usable {
        fingerprint: FP_OTHER_PASSWORD.into(),
        secret: secret("1"),
    };
    assert_eq!(s.plan(), Step::Apply);
}

// --- paused, forced, cache ------------------------------------------------------------------

#[test]
fn paused_objects_do_nothing() {
    let mut s = S::new(RebootPolicy::Automatic);
    s.paused = true;
    assert_eq!(phase(s.plan()), Phase::Paused);
}

#[test]
fn a_new_force_token_applies_once() {
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true)
        .next_round("2026-01-01T11:00:00Z");
    s.force = Some("2026-01-01T11:00:00Z");
    assert_eq!(s.plan(), Step::Apply);
    let key = s.key();
    record::applied(
        &mut s.status,
        record::Apply {
            fingerprint: FP,
            secret: &secret("1"),
            instance_key: &key,
            request_id: "R2",
            at: s.now,
            ecs_time: Some(s.now),
            force_token: s.force,
        },
    );
    assert!(matches!(phase(s.plan()), Phase::Ready { .. }));
}

#[test]
fn a_cache_older_than_our_own_write_does_nothing() {
    let mut s = S::new(RebootPolicy::Automatic);
    s.round.cache_behind = true;
    assert_eq!(s.plan(), Step::Requeue(CACHE_BEHIND_RETRY));
}

// --- Kubernetes-side input ------------------------------------------------------------------

#[test]
fn an_unusable_password_stalls_without_ecs() {
    for reason in [
        Reason::SecretNotFound,
        Reason::SecretKeyNotFound,
        Reason::InvalidPassword,
    ] {
        let mut s = S::new(RebootPolicy::Manual);
        s.password = PasswordInput::Unusable(stalled(reason));
        let step = s.plan();
        assert_eq!(requeue(step.clone()), Requeue::AwaitChange);
        assert!(
            matches!(phase(step), Phase::Failed { applied: false, failure } if failure.reason() == reason)
        );
    }
}

#[test]
fn missing_credentials_matter_only_when_ecs_must_be_called() {
    // Needed: not applied yet.
    let mut s = S::new(RebootPolicy::Manual);
    s.credentials = Err(stalled(Reason::CredentialsNotFound));
    assert!(matches!(
        phase(s.plan()),
        Phase::Failed { applied: false, failure } if failure.reason() == Reason::CredentialsNotFound
    ));
    // Needed: waiting for a restart, Applied stays true.
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T10:00Z", false)
        .next_round("2026-01-01T10:05:00Z");
    s.credentials = Err(stalled(Reason::CredentialsNotFound));
    assert!(matches!(
        phase(s.plan()),
        Phase::Failed { applied: true, .. }
    ));
}

// --- key lost ------------------------------------------------------------------------------

#[test]
fn a_lost_key_re_records_without_any_ecs_call_when_the_secret_is_unchanged() {
    let mut s = S::new(RebootPolicy::Automatic)
        .applied()
        .described("Running", "2026-01-01T09:00Z", false)
        .next_round("2026-01-01T12:00:00Z");
    s.key_id = "k2";
    s.password = PasswordInput::Usable {
        fingerprint: FP_NEW_KEY.into(),
        secret: secret("1"),
    };
    assert_eq!(s.plan(), Step::Record);
}

#[test]
fn a_lost_key_and_a_changed_secret_apply_again() {
    let mut s = S::new(RebootPolicy::Manual)
        .applied()
        .next_round("2026-01-01T12:00:00Z");
    s.key_id = "k2";
    s.password = PasswordInput::Usable {
        fingerprint: FP_NEW_KEY.into(),
        secret: secret("2"),
    };
    assert_eq!(s.plan(), Step::Apply);
}

// --- restarts -------------------------------------------------------------------------------

#[test]
fn manual_waits_for_a_restart_polling_each_round() {
    let s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T10:00Z", false);
    let step = s.plan();
    assert_eq!(
        requeue(step.clone()),
        Requeue::After(Duration::from_secs(30))
    );
    assert_eq!(phase(step), Phase::WaitingForRestart(Waiting::Manual));
    let s = s.next_round("2026-01-01T10:01:10Z");
    assert_eq!(s.plan(), Step::Describe);
}

#[test]
fn a_restart_seen_in_start_time_makes_it_ready() {
    let s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T10:00Z", false)
        .next_round("2026-01-01T10:03:10Z")
        .described("Running", "2026-01-01T10:03Z", false);
    assert_eq!(
        phase(s.plan()),
        Phase::Ready {
            how: Reason::Restarted
        }
    );
    // Ready stays without asking ECS again.
    let s = s.next_round("2026-01-01T11:00:00Z");
    assert!(matches!(phase(s.plan()), Phase::Ready { .. }));
}

#[test]
fn a_restart_seen_as_stopping_then_running_makes_it_ready() {
    let s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T10:00Z", false)
        .next_round("2026-01-01T10:00:50Z")
        .described("Stopping", "2026-01-01T10:00Z", false);
    assert!(matches!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::Manual)
    ));
    let s = s
        .next_round("2026-01-01T10:00:58Z")
        .described("Running", "2026-01-01T10:00Z", false);
    assert_eq!(
        phase(s.plan()),
        Phase::Ready {
            how: Reason::Restarted
        }
    );
}

#[test]
fn a_stopped_instance_says_so() {
    let s =
        S::new(RebootPolicy::Automatic)
            .applied()
            .described("Stopped", "2026-01-01T09:00Z", false);
    assert_eq!(phase(s.plan()), Phase::WaitingForRestart(Waiting::Stopped));
    let s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Stopped", "2026-01-01T09:00Z", false);
    assert_eq!(phase(s.plan()), Phase::WaitingForRestart(Waiting::Stopped));
}

// --- Automatic reboots ----------------------------------------------------------------------

#[test]
fn automatic_waits_for_a_later_minute_than_the_apply_and_the_last_start() {
    // Started 10:00:05, applied 10:00:40: a reboot before 10:01 could end in the same minute.
    let s =
        S::new(RebootPolicy::Automatic)
            .applied()
            .described("Running", "2026-01-01T10:00Z", false);
    let step = s.plan();
    // 10:01, plus the object's own share of the herd spread.
    let earliest = t("2026-01-01T10:01:00Z") + spread(UID, HERD_SPREAD);
    assert_eq!(
        phase(step.clone()),
        Phase::WaitingForRestart(Waiting::RebootAfter(earliest))
    );
    assert_eq!(
        requeue(step),
        Requeue::After(Duration::try_from(earliest.duration_since(s.now)).unwrap())
    );
    let s = s
        .next_round("2026-01-01T10:01:00Z")
        .described("Running", "2026-01-01T10:00Z", false);
    assert!(matches!(phase(s.plan()), Phase::WaitingForRestart(_)));
    let mut s = s;
    s.now = earliest;
    assert_eq!(s.plan(), Step::RecordRebootIntent);
}

/// The herd spread is the object's own: the same on every replica and after every restart, under
/// its bound, and different between objects.
#[test]
fn the_herd_spread_is_fixed_per_object_bounded_and_spread() {
    let shares: Vec<jiff::SignedDuration> = (0..200)
        .map(|i| spread(&format!("uid-{i}"), HERD_SPREAD))
        .collect();
    assert_eq!(spread("uid-7", HERD_SPREAD), shares[7]);
    assert!(shares.iter().all(|d| *d >= jiff::SignedDuration::ZERO
        && *d < jiff::SignedDuration::try_from(HERD_SPREAD).unwrap()));
    let early = shares.iter().filter(|d| d.as_secs() < 15).count();
    assert!(
        (60..140).contains(&early),
        "{early} of 200 in the first half"
    );
}

/// The reboot must land in a later minute *on ECS's clock*; the controller's clock is minutes off.
#[test]
fn the_reboot_is_timed_on_ecs_clock_whichever_way_the_controller_clock_is_off() {
    let minutes = |m: i64| jiff::SignedDuration::from_secs(60 * m);
    // (ECS minus controller at the apply, measured lately, expected earliest time on the
    // controller's clock). Applied at 10:00:40 by the controller's clock.
    let cases = [
        // ECS 5 minutes ahead: ECS's apply minute is 10:05, the reboot may go at ECS 10:06,
        // which is 10:01 here.
        (Some(minutes(5)), None, "2026-01-01T10:01:00Z"),
        (Some(minutes(5)), Some(minutes(5)), "2026-01-01T10:01:00Z"),
        // ECS 5 minutes behind: ECS's apply minute is 09:55, its next 09:56, which is 10:01 here.
        (Some(-minutes(5)), None, "2026-01-01T10:01:00Z"),
        // The controller moved to a node whose clock is 2 minutes further off: the fresh
        // measurement wins over the one taken at the apply.
        (Some(-minutes(5)), Some(-minutes(7)), "2026-01-01T10:03:00Z"),
        // No ECS time at all: a margin of a minute on both sides of the comparison.
        (None, None, "2026-01-01T10:03:00Z"),
    ];
    for (at_apply, lately, earliest) in cases {
        let mut s = S::new(RebootPolicy::Automatic);
        s.ecs_skew_at_apply = at_apply;
        s.ecs_offset = lately;
        let start = match at_apply {
            // The instance started long before the apply, in ECS's time.
            Some(skew) => format!(
                "{}",
                (t("2026-01-01T09:00:00Z") + skew).strftime("%Y-%m-%dT%H:%MZ")
            ),
            None => "2026-01-01T09:00Z".into(),
        };
        let s = s.applied().described("Running", &start, false);
        assert_eq!(
            phase(s.plan()),
            Phase::WaitingForRestart(Waiting::RebootAfter(t(earliest) + spread(UID, HERD_SPREAD))),
            "{at_apply:?} {lately:?}"
        );
    }
}

#[test]
fn the_reboot_follows_only_its_own_intent_write_and_never_repeats() {
    let mut s = S::new(RebootPolicy::Automatic)
        .applied()
        .described("Running", "2026-01-01T09:00Z", false)
        .next_round("2026-01-01T10:02:00Z")
        .described("Running", "2026-01-01T09:00Z", false);
    assert_eq!(s.plan(), Step::RecordRebootIntent);
    record::reboot_intent(&mut s.status, s.now);
    s.round.intent_written = true;
    assert_eq!(s.plan(), Step::Reboot);
    s.round.reboot_called = true;
    assert!(matches!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::RebootRequested(_))
    ));
    // A crash right after the call, or a status write refused: the next reconcile only observes.
    let s = s
        .next_round("2026-01-01T10:02:30Z")
        .described("Running", "2026-01-01T09:00Z", false);
    assert!(matches!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::RebootRequested(_))
    ));
}

#[test]
fn an_intent_without_a_call_is_never_followed_by_a_call_from_another_reconcile() {
    // Intent written, then the process died before RebootInstance.
    let mut s =
        S::new(RebootPolicy::Automatic)
            .applied()
            .described("Running", "2026-01-01T09:00Z", false);
    record::reboot_intent(&mut s.status, t("2026-01-01T10:02:00Z"));
    let s = s
        .next_round("2026-01-01T10:03:00Z")
        .described("Running", "2026-01-01T09:00Z", false);
    assert!(matches!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::RebootRequested(_))
    ));
    // After --reboot-timeout it says so, and still does not call.
    let s = s
        .next_round("2026-01-01T10:17:01Z")
        .described("Running", "2026-01-01T09:00Z", false);
    let step = s.plan();
    assert!(matches!(
        phase(step.clone()),
        Phase::WaitingForRestart(Waiting::RebootNotObserved(_))
    ));
    let s = s.finish_into_status();
    let ready = s.status.condition(condition::READY).unwrap();
    assert_eq!(ready.reason, "RebootNotObserved");
    // A new force-apply-requested-at token applies again; the reboot after it is a new one.
    let mut s = s.next_round("2026-01-01T10:20:00Z");
    s.force = Some("again");
    assert_eq!(s.plan(), Step::Apply);
}

#[test]
fn a_reboot_refused_with_an_answer_may_be_asked_for_again() {
    let mut s = S::new(RebootPolicy::Automatic)
        .applied()
        .described("Running", "2026-01-01T09:00Z", false)
        .next_round("2026-01-01T10:02:00Z")
        .described("Running", "2026-01-01T09:00Z", false);
    record::reboot_intent(&mut s.status, s.now);
    s.round.intent_written = true;
    s.round.reboot_called = true;
    record::reboot_refused(&mut s.status);
    s.round.failure = Some(Failure::retry(
        Reason::IncorrectInstanceStatus,
        "m",
        Pace::Normal,
    ));
    assert_eq!(requeue(s.plan()), Requeue::Backoff(Pace::Normal));
    let s = s
        .next_round("2026-01-01T10:03:00Z")
        .described("Running", "2026-01-01T09:00Z", false);
    assert_eq!(s.plan(), Step::RecordRebootIntent);
}

#[test]
fn an_instance_in_transition_is_not_rebooted() {
    let s = S::new(RebootPolicy::Automatic)
        .applied()
        .next_round("2026-01-01T10:05:00Z")
        .described("Starting", "2026-01-01T09:00Z", false);
    assert_eq!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::InTransition("Starting".into()))
    );
}

// --- stalls and ECS errors ------------------------------------------------------------------

fn stalled_on(reason: Reason) -> S {
    let mut s = S::new(RebootPolicy::Manual);
    s.round.failure = Some(stalled(reason));
    let inputs = stall_inputs(&s.observed());
    let now = s.now;
    record::stalled(&mut s.status, inputs, now);
    s.finish_into_status()
}

#[test]
fn an_ecs_stall_is_remembered_for_the_same_inputs() {
    let s = stalled_on(Reason::EcsRejected).next_round("2026-01-02T00:00:00Z");
    let step = s.plan();
    assert_eq!(requeue(step.clone()), Requeue::AwaitChange);
    assert!(
        matches!(phase(step), Phase::Failed { failure, .. } if failure.reason() == Reason::EcsRejected)
    );
}

#[test]
fn a_stall_ends_with_any_change_of_its_inputs() {
    // A new generation (spec fixed), a recreated object (new uid), a Secret change, a force token.
    let mut s = stalled_on(Reason::EcsRejected).next_round("2026-01-01T10:01:00Z");
    s.generation = 2;
    assert_eq!(s.plan(), Step::Apply);
    let s = stalled_on(Reason::EcsRejected).next_round("2026-01-01T10:01:00Z");
    let mut other = s.observed();
    other.uid = "uid-recreated";
    assert_eq!(plan(&other), Step::Apply);
    let mut s = stalled_on(Reason::EcsRejected).next_round("2026-01-01T10:01:00Z");
    s.password = PasswordInput::Usable {
        fingerprint: FP.into(),
        secret: secret("2"),
    };
    assert_eq!(s.plan(), Step::Apply);
    let mut s = stalled_on(Reason::EcsRejected).next_round("2026-01-01T10:01:00Z");
    s.credentials = Ok("secret:c-uid:9".into());
    assert_eq!(s.plan(), Step::Apply);
}

#[test]
fn stalls_fixable_outside_kubernetes_are_checked_again_after_the_interval() {
    for reason in [
        Reason::InstanceNotFound,
        Reason::RegionNotFound,
        Reason::AuthFailed,
        Reason::DescribeNotAllowed,
    ] {
        let s = stalled_on(reason).next_round("2026-01-01T10:20:00Z");
        let step = s.plan();
        assert!(
            matches!(requeue(step.clone()), Requeue::After(d) if d <= Duration::from_secs(1800)),
            "{reason}"
        );
        let s = s.next_round("2026-01-01T10:30:41Z");
        assert_eq!(s.plan(), Step::Apply, "{reason}");
    }
    let s = stalled_on(Reason::InvalidPassword).next_round("2026-01-09T00:00:00Z");
    assert!(matches!(phase(s.plan()), Phase::Failed { .. }));
}

#[test]
fn retried_failures_back_off_at_their_pace() {
    for (failure, pace) in [
        (
            Failure::retry(Reason::OperationConflict, "m", Pace::Normal),
            Pace::Normal,
        ),
        (
            Failure::retry(Reason::Throttled, "m", Pace::Throttled),
            Pace::Throttled,
        ),
        (
            Failure::retry(Reason::EcsUnknownError, "m", Pace::Slow),
            Pace::Slow,
        ),
    ] {
        let mut s = S::new(RebootPolicy::Manual);
        s.round.failure = Some(failure);
        assert_eq!(requeue(s.plan()), Requeue::Backoff(pace));
    }
}

#[test]
fn stall_inputs_never_contain_the_inputs_themselves() {
    let s = S::new(RebootPolicy::Manual);
    let h = stall_inputs(&s.observed());
    assert!(h.starts_with("sha256:") && !h.contains(UID) && !h.contains("LTAI"));
}

// --- generated passwords and rotation -------------------------------------------------------

fn generating(interval: Option<&str>) -> S {
    let mut s = S::new(RebootPolicy::Manual);
    s.spec.generate_password = true;
    s.spec.rotation_interval = interval.map(str::to_string);
    s
}

fn ours(at: &str) -> GeneratedSecret {
    GeneratedSecret::Ours {
        generated_at: Some(t(at)),
        rotate_token: None,
        previous_kept: false,
        owner_reference: false,
        adopt: false,
    }
}

#[test]
fn a_missing_generated_secret_is_created_then_applied() {
    let mut s = generating(None);
    s.generated = Some(GeneratedSecret::Missing);
    s.password = PasswordInput::Unusable(stalled(Reason::SecretNotFound));
    assert_eq!(s.plan(), Step::GeneratePassword);
    s.generated = Some(ours("2026-01-01T10:00:40Z"));
    s.password = PasswordInput::Usable {
        fingerprint: FP.into(),
        secret: secret("1"),
    };
    assert_eq!(s.plan(), Step::Apply);
}

#[test]
fn a_secret_the_controller_did_not_create_is_never_overwritten() {
    let mut s = generating(Some("720h"));
    s.generated = Some(GeneratedSecret::NotOurs);
    let step = s.plan();
    assert!(matches!(
        phase(step),
        Phase::Failed { failure, .. } if failure.reason() == Reason::SecretNotOwned
    ));
}

#[test]
fn rotation_is_due_after_the_interval_and_not_before() {
    let mut s = generating(Some("720h"))
        .applied()
        .described("Running", "2026-01-01T09:00Z", true);
    s.generated = Some(ours("2026-01-01T10:00:00Z"));
    // Not due: Ready, and woken when it is.
    let step = s.plan();
    assert!(matches!(phase(step.clone()), Phase::Ready { .. }));
    let due = Duration::from_secs(720 * 3600 - 40);
    assert_eq!(requeue(step), Requeue::After(due));
    assert_eq!(
        next_rotation(&s.observed()),
        Some(t("2026-01-31T10:00:00Z"))
    );
    let s = s.next_round("2026-01-31T10:00:00Z");
    assert_eq!(s.plan(), Step::RotatePassword);
}

/// A rotation keeps the password the console accepts now under `previous` until the new one is
/// in effect; meanwhile no other rotation starts (it would overwrite `previous`), and none starts
/// while the object is stalled or its credentials are missing: the password in effect is never
/// known to no one.
#[test]
fn no_rotation_starts_that_could_lose_the_password_in_effect() {
    let base = || {
        let mut s =
            generating(Some("1h"))
                .applied()
                .described("Running", "2026-01-01T09:00Z", false);
        s.now = t("2026-01-01T12:00:00Z");
        s
    };
    // Due, nothing in the way: rotate.
    let mut s = base();
    s.generated = Some(ours("2026-01-01T10:00:00Z"));
    assert_eq!(s.plan(), Step::RotatePassword);
    // Due, but the last rotation is not in effect yet (a restart is awaited).
    s.generated = Some(GeneratedSecret::Ours {
        generated_at: Some(t("2026-01-01T10:00:00Z")),
        rotate_token: None,
        previous_kept: true,
        owner_reference: false,
        adopt: false,
    });
    assert!(matches!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::Manual)
    ));
    // A forced rotation waits as well.
    s.rotate = Some("leak");
    assert!(matches!(phase(s.plan()), Phase::WaitingForRestart(_)));
    // Stalled on refused credentials: no rotation.
    let mut s = base();
    s.generated = Some(ours("2026-01-01T10:00:00Z"));
    s.status
        .conditions
        .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: condition::STALLED.into(),
            status: "True".into(),
            reason: "AuthFailed".into(),
            message: "m".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.now),
            observed_generation: Some(1),
        });
    assert_ne!(s.plan(), Step::RotatePassword);
    // No credentials: no rotation.
    let mut s = base();
    s.generated = Some(ours("2026-01-01T10:00:00Z"));
    s.credentials = Err(stalled(Reason::CredentialsNotFound));
    assert_ne!(s.plan(), Step::RotatePassword);
}

/// Once the rotated password is in effect, `previous` goes; not before.
#[test]
fn the_previous_password_is_forgotten_once_the_new_one_is_in_effect() {
    let kept = GeneratedSecret::Ours {
        generated_at: Some(t("2026-01-01T10:00:00Z")),
        rotate_token: None,
        previous_kept: true,
        owner_reference: false,
        adopt: false,
    };
    // I/O-optimized: in effect once applied.
    let mut s = generating(None)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true);
    s.generated = Some(kept.clone());
    assert_eq!(s.plan(), Step::ForgetPrevious);
    // Not I/O-optimized: kept while the restart is awaited, forgotten after it.
    let mut s = generating(None)
        .applied()
        .described("Running", "2026-01-01T09:00Z", false);
    s.generated = Some(kept);
    assert!(matches!(phase(s.plan()), Phase::WaitingForRestart(_)));
    let s = s
        .next_round("2026-01-01T10:05:00Z")
        .described("Running", "2026-01-01T10:04Z", false);
    assert_eq!(s.plan(), Step::ForgetPrevious);
}

#[test]
fn a_rotate_token_rotates_once() {
    let mut s = generating(None)
        .applied()
        .described("Running", "2026-01-01T09:00Z", true);
    s.generated = Some(ours("2026-01-01T10:00:00Z"));
    s.rotate = Some("now");
    assert_eq!(s.plan(), Step::RotatePassword);
    s.generated = Some(GeneratedSecret::Ours {
        generated_at: Some(t("2026-01-01T10:00:40Z")),
        rotate_token: Some("now".into()),
        previous_kept: true,
        owner_reference: false,
        adopt: false,
    });
    // The Secret's new version: applied next, and no second rotation.
    s.password = PasswordInput::Usable {
        fingerprint: FP_OTHER_PASSWORD.into(),
        secret: secret("2"),
    };
    assert_eq!(s.plan(), Step::Apply);
}

#[test]
fn an_unusable_password_in_its_own_secret_is_regenerated() {
    let mut s = generating(None);
    s.generated = Some(ours("2026-01-01T10:00:00Z"));
    s.password = PasswordInput::Unusable(stalled(Reason::InvalidPassword));
    assert_eq!(s.plan(), Step::RotatePassword);
}

// --- reboot windows -------------------------------------------------------------------------

fn windowed(now: &str) -> S {
    let mut s = S::new(RebootPolicy::Automatic);
    // 2026-01-04 is a Sunday.
    s.spec.reboot_windows = vec![crate::api::RebootWindow {
        schedule: "0 2 * * SUN".into(),
        duration: "2h".into(),
        time_zone: None,
    }];
    s.now = t("2026-01-01T10:00:40Z");
    let s = s.applied().described("Running", "2026-01-01T09:00Z", false);
    s.next_round(now)
        .described("Running", "2026-01-01T09:00Z", false)
}

#[test]
fn outside_a_window_the_reboot_waits_for_the_next_one() {
    let s = windowed("2026-01-02T12:00:00Z");
    let step = s.plan();
    assert_eq!(
        phase(step.clone()),
        Phase::WaitingForRestart(Waiting::RebootWindow(t("2026-01-04T02:00:00Z")))
    );
    assert_eq!(requeue(step), Requeue::After(Duration::from_secs(30)));
    let s = s.finish_into_status();
    // Only the window ends this wait: Ready (kstatus Current), not in effect.
    let ready = s.status.condition(condition::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "RebootScheduled")
    );
    let in_effect = s.status.condition(condition::IN_EFFECT).unwrap();
    assert_eq!(
        (in_effect.status.as_str(), in_effect.reason.as_str()),
        ("False", "RebootScheduled")
    );
    assert!(!s.status.is_true(condition::RECONCILING));
    assert!(
        ready.message.contains("2026-01-04T02:00:00Z"),
        "{}",
        ready.message
    );
}

#[test]
fn inside_a_window_the_reboot_happens_once() {
    let s = windowed("2026-01-04T02:10:00Z");
    assert_eq!(s.plan(), Step::RecordRebootIntent);
}

#[test]
fn a_window_that_ended_is_never_used_late() {
    let s = windowed("2026-01-04T04:00:00Z");
    assert_eq!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::RebootWindow(t("2026-01-11T02:00:00Z")))
    );
}

#[test]
fn a_window_closing_before_the_later_minute_is_skipped() {
    // Applied at 03:59:30 inside the window: a reboot must wait for 04:00, when it has closed.
    let mut s = S::new(RebootPolicy::Automatic);
    s.spec.reboot_windows = vec![crate::api::RebootWindow {
        schedule: "0 2 * * SUN".into(),
        duration: "2h".into(),
        time_zone: None,
    }];
    s.now = t("2026-01-04T03:59:30Z");
    let s = s.applied().described("Running", "2026-01-01T09:00Z", false);
    assert_eq!(
        phase(s.plan()),
        Phase::WaitingForRestart(Waiting::RebootWindow(t("2026-01-11T02:00:00Z")))
    );
}

/// At send time, not only when planned: a reboot may start only inside a window that is still
/// open at that moment.
#[test]
fn a_reboot_may_start_only_inside_a_window_still_open_at_the_send() {
    let s = windowed("2026-01-04T02:10:00Z");
    // 2026-01-04 is a Sunday; the window is 02:00-04:00.
    assert!(reboot_may_start_at(&s.spec, t("2026-01-04T02:00:00Z")));
    assert!(reboot_may_start_at(&s.spec, t("2026-01-04T03:59:59Z")));
    assert!(!reboot_may_start_at(&s.spec, t("2026-01-04T04:00:00Z")));
    assert!(!reboot_may_start_at(&s.spec, t("2026-01-04T01:59:59Z")));
    let mut always = S::new(RebootPolicy::Automatic);
    always.spec.reboot_windows.clear();
    assert!(reboot_may_start_at(&always.spec, t("2026-01-04T01:59:59Z")));
    let mut broken = windowed("2026-01-04T02:10:00Z");
    broken.spec.reboot_windows[0].time_zone = Some("Nowhere/Atlantis".into());
    assert!(!reboot_may_start_at(
        &broken.spec,
        t("2026-01-04T02:10:00Z")
    ));
}

#[test]
fn an_invalid_window_stalls_with_the_field_named() {
    let mut s = windowed("2026-01-04T02:10:00Z");
    s.spec.reboot_windows[0].time_zone = Some("Nowhere/Atlantis".into());
    match phase(s.plan()) {
        Phase::Failed { failure, applied } => {
            assert!(applied);
            assert_eq!(failure.reason(), Reason::InvalidSpec);
        }
        other => panic!("{other:?}"),
    }
}

// --- one instance, several VncPasswords -----------------------------------------------------

/// With the controller's credentials shared by several namespaces, nothing is written to an
/// instance before ECS has described it with the tag `ecsvnc.io/namespace` naming this namespace.
#[test]
fn shared_credentials_write_only_to_an_instance_tagged_for_this_namespace() {
    let mut s = S::new(RebootPolicy::Automatic);
    s.shared = true;
    assert_eq!(s.plan(), Step::Describe, "described before the first write");
    let untagged = s.described_tagged("Running", "2026-01-01T09:00Z", false, None);
    match phase(untagged.plan()) {
        Phase::Failed { failure, .. } => {
            assert_eq!(failure.reason(), Reason::InstanceNotAllowed);
            assert!(failure.is_stalled());
        }
        other => panic!("{other:?}"),
    }
    let mut other_ns = S::new(RebootPolicy::Automatic);
    other_ns.shared = true;
    let other_ns = other_ns.described_tagged("Running", "2026-01-01T09:00Z", false, Some("team-b"));
    assert!(matches!(phase(other_ns.plan()), Phase::Failed { .. }));
    let mut tagged = S::new(RebootPolicy::Automatic);
    tagged.shared = true;
    let tagged = tagged.described_tagged("Running", "2026-01-01T09:00Z", false, Some("team-a"));
    assert_eq!(tagged.plan(), Step::Apply);
    // The reboot, a write too, is checked the same way in its own reconcile.
    let mut later = tagged.applied().next_round("2026-01-01T10:05:00Z");
    assert_eq!(later.plan(), Step::Describe);
    later = later.described_tagged("Running", "2026-01-01T09:00Z", false, None);
    assert!(matches!(phase(later.plan()), Phase::Failed { .. }));
}

/// Two objects applied before either's claim was seen, and the other applied last: the winner
/// applies again; the instance holds the other's password.
#[test]
fn an_owner_whose_instance_was_overwritten_applies_again() {
    let mut s =
        S::new(RebootPolicy::Manual)
            .applied()
            .described("Running", "2026-01-01T09:00Z", true);
    assert!(matches!(phase(s.plan()), Phase::Ready { .. }));
    s.overwritten = true;
    assert_eq!(s.plan(), Step::Apply);
}

#[test]
fn an_instance_claimed_by_an_older_object_is_left_to_it() {
    let mut s = S::new(RebootPolicy::Automatic);
    s.claimed_by = Some(("team-a", "web-old"));
    let step = s.plan();
    assert_eq!(requeue(step.clone()), Requeue::After(CLAIM_RECHECK));
    match phase(step) {
        Phase::Failed {
            failure: Failure::Stalled { reason, message },
            applied,
        } => {
            assert_eq!(reason, Reason::InstanceClaimed);
            assert!(!applied);
            assert!(message.contains("web-old"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Another tenant's object is not named.
    s.claimed_by = Some(("team-b", "secret-project"));
    match phase(s.plan()) {
        Phase::Failed {
            failure: Failure::Stalled { message, .. },
            ..
        } => {
            assert!(
                !message.contains("secret-project") && !message.contains("team-b"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

// --- credentials from a ServiceAccount (RRSA) --------------------------------------------------

#[test]
fn service_account_credentials_stall_by_reason_and_only_sts_refusals_are_rechecked() {
    for (reason, rechecked) in [
        (Reason::ServiceAccountNotFound, false),
        (Reason::RoleArnNotSet, false),
        (Reason::OidcProviderNotConfigured, false),
        (Reason::AuthFailed, true),
    ] {
        let mut s = S::new(RebootPolicy::Manual);
        s.credentials = Err(stalled(reason));
        let step = s.plan();
        let want = if rechecked {
            Requeue::After(Duration::from_secs(1800))
        } else {
            // The ServiceAccount watch brings the next reconcile.
            Requeue::AwaitChange
        };
        assert_eq!(requeue(step.clone()), want, "{reason}");
        assert!(
            matches!(phase(step), Phase::Failed { applied: false, failure } if failure.reason() == reason),
            "{reason}"
        );
    }
}

#[test]
fn an_ecs_stall_ends_when_the_service_account_or_its_role_changes() {
    let sa = |rv: &str| Ok(format!("serviceaccount:team-a/vnc:sa-uid:{rv}"));
    let mut s = S::new(RebootPolicy::Manual);
    s.credentials = sa("5");
    s.round.failure = Some(stalled(Reason::EcsRejected));
    let inputs = stall_inputs(&s.observed());
    let now = s.now;
    record::stalled(&mut s.status, inputs, now);
    let mut s = s.finish_into_status().next_round("2026-01-01T10:01:00Z");
    s.credentials = sa("5");
    assert!(
        matches!(s.plan(), Step::Finish { .. }),
        "same ServiceAccount: remembered"
    );
    // The role annotation changed (a new resourceVersion): ECS is asked again.
    s.credentials = sa("6");
    assert_eq!(s.plan(), Step::Apply);
}

// --- the generated Secret's ownership, and the deprecated spec fields ---------------------------

fn generating_new_shape(policy: crate::api::SecretDeletionPolicy) -> S {
    let mut s = S::new(RebootPolicy::Manual);
    s.spec.password_generation = Some(crate::api::PasswordGeneration {
        rotation_interval: None,
        secret_deletion_policy: policy,
    });
    s
}

#[test]
fn the_generated_secret_gets_the_ownership_its_deletion_policy_says() {
    use crate::api::SecretDeletionPolicy::{Delete, Retain};
    for (policy, owner_reference, expect_sync) in [
        (Retain, false, false),
        (Retain, true, true),
        (Delete, true, false),
        (Delete, false, true),
    ] {
        let mut s = generating_new_shape(policy);
        s.generated = Some(GeneratedSecret::Ours {
            generated_at: Some(t("2026-01-01T10:00:00Z")),
            rotate_token: None,
            previous_kept: false,
            owner_reference,
            adopt: false,
        });
        let step = s.plan();
        assert_eq!(
            step == Step::SetSecretOwnership,
            expect_sync,
            "{policy:?}, ownerReference {owner_reference}: {step:?}"
        );
        if !expect_sync {
            assert_eq!(step, Step::Apply);
        }
    }
    // The deprecated generatePassword means Retain: an owned Secret of an earlier version loses
    // its ownerReference (no ECS call for it).
    let mut s = generating(None);
    s.generated = Some(GeneratedSecret::Ours {
        generated_at: Some(t("2026-01-01T10:00:00Z")),
        rotate_token: None,
        previous_kept: false,
        owner_reference: true,
        adopt: false,
    });
    assert_eq!(s.plan(), Step::SetSecretOwnership);
}

#[test]
fn the_deprecated_fields_plan_as_their_replacements() {
    let now = "2026-02-01T10:00:40Z";
    let old = {
        let mut s = generating(Some("720h"));
        s.now = t(now);
        s.generated = Some(ours("2026-01-01T10:00:40Z"));
        s
    };
    let new = {
        let mut s = generating_new_shape(crate::api::SecretDeletionPolicy::Retain);
        s.spec
            .password_generation
            .as_mut()
            .unwrap()
            .rotation_interval = Some("720h".into());
        s.now = t(now);
        s.generated = Some(ours("2026-01-01T10:00:40Z"));
        s
    };
    assert_eq!(old.plan(), Step::RotatePassword);
    assert_eq!(new.plan(), old.plan());
    assert_eq!(
        next_rotation(&new.observed()),
        next_rotation(&old.observed())
    );
    // An unusable interval names the field it was read from.
    let mut bad = generating_new_shape(crate::api::SecretDeletionPolicy::Retain);
    bad.spec
        .password_generation
        .as_mut()
        .unwrap()
        .rotation_interval = Some("1s".into());
    bad.generated = Some(ours("2026-01-01T10:00:40Z"));
    match phase(bad.plan()) {
        Phase::Failed {
            failure: Failure::Stalled { reason, message },
            ..
        } => {
            assert_eq!(reason, Reason::InvalidSpec);
            assert!(
                message.contains("spec.passwordGeneration.rotationInterval"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        old.spec.deprecated_fields(),
        [
            ("generatePassword", "passwordGeneration"),
            ("rotationInterval", "passwordGeneration.rotationInterval")
        ]
    );
    assert!(new.spec.deprecated_fields().is_empty());
}

/// A pending restart that only a person can end is Ready (kstatus Current) and not in effect;
/// the restart makes it in effect.
#[test]
fn a_manual_restart_is_ready_but_not_in_effect_until_it_happens() {
    let s = S::new(RebootPolicy::Manual)
        .applied()
        .described("Running", "2026-01-01T10:00Z", false)
        .finish_into_status();
    let get = |s: &S, t: &str| {
        let c = s.status.condition(t).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(get(&s, "Ready"), ("True".into(), "RebootRequired".into()));
    assert_eq!(
        get(&s, "InEffect"),
        ("False".into(), "RebootRequired".into())
    );
    assert_eq!(
        get(&s, "RebootRequired"),
        ("True".into(), "RebootRequired".into())
    );
    assert_eq!(get(&s, "Reconciling").0, "False");
    let s = s
        .next_round("2026-01-01T10:05:00Z")
        .described("Running", "2026-01-01T10:04Z", false)
        .finish_into_status();
    assert_eq!(get(&s, "Ready"), ("True".into(), "Applied".into()));
    assert_eq!(get(&s, "InEffect"), ("True".into(), "Restarted".into()));
}
