//! The planner: observe → **plan** → act → record.
//!
//! [`plan`] is a pure function of what one reconcile observed (spec, status, the referenced
//! Secrets' identities, what ECS said in this reconcile, the time) and returns the one next step.
//! The executor (`reconcile`) performs it, records the outcome in the working status with the pure
//! functions of `record`, and plans again until the plan says `Finish`. Everything that must
//! survive a restart, a second replica or a recreated object is read from the status, never from
//! process memory.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::{
    AppliedSecret, Reason, RebootPolicy, SecretDeletionPolicy, VncPasswordSpec, VncPasswordStatus,
};
use crate::controller::decide::{self, Failure, Pace, Phase, Waiting, floor_minute};
use crate::controller::schedule::{self, WindowState};
use crate::ecs::types::parse_start_time;

/// How long to wait when the object in hand is older than the controller's own last write for it
/// (the watch event of that write is on its way and reconciles it again anyway).
pub const CACHE_BEHIND_RETRY: Duration = Duration::from_secs(1);

/// At most this much of its own is added to an object's earliest automatic reboot.
pub const HERD_SPREAD: Duration = Duration::from_secs(30);
/// At most this much (and a quarter of the window) after a window opens before an object's reboot.
pub const HERD_SPREAD_IN_WINDOW: Duration = Duration::from_secs(60);

/// A delay in `[0, max)` of the object's own: the same for the same uid on every replica and after
/// every restart (a hash, not a random draw), different between objects.
pub fn spread(uid: &str, max: Duration) -> jiff::SignedDuration {
    let digest = Sha256::digest(uid.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let fraction = u64::from_be_bytes(bytes) as f64 / (u64::MAX as f64 + 1.0);
    jiff::SignedDuration::try_from(max.mul_f64(fraction)).unwrap_or(jiff::SignedDuration::ZERO)
}

/// How often an object whose instance another VncPassword claims looks whether it still does.
pub const CLAIM_RECHECK: Duration = Duration::from_secs(30);

/// The password Secret as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordInput {
    /// Missing Secret or key, or a password ECS would refuse.
    Unusable(Failure),
    /// The keyed fingerprint of the password under the current key, and the Secret's identity.
    Usable {
        fingerprint: String,
        secret: AppliedSecret,
    },
}

/// With `passwordGeneration`: the password Secret as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedSecret {
    Missing,
    /// It exists and this VncPassword did not create it: never overwritten.
    NotOurs,
    Ours {
        /// `ecsvnc.io/generated-at` on the Secret.
        generated_at: Option<jiff::Timestamp>,
        /// `ecsvnc.io/rotate-token` on the Secret.
        rotate_token: Option<String>,
        /// `ecsvnc.io/previous-in-effect` on the Secret: a rotation whose new password is not in
        /// effect yet, the one before it kept under the key `previous`.
        previous_kept: bool,
        /// It carries this VncPassword's ownerReference (so it goes with it). Otherwise it is
        /// known as this VncPassword's by its annotation `ecsvnc.io/owner-uid`.
        owner_reference: bool,
        /// Generated for an earlier VncPassword of this name that no longer exists: made this
        /// one's (its uid, its deletion policy) before anything else.
        adopt: bool,
    },
}

/// Settings the planner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// How often an instance that must restart is looked at.
    pub poll: Duration,
    /// How long after RebootInstance a missing restart is reported.
    pub reboot_timeout: Duration,
    /// How often stalls that something outside Kubernetes can fix are checked again.
    pub stall_recheck: Duration,
}

/// What this reconcile already did or learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The object in hand is older than the controller's own last status write for it.
    pub cache_behind: bool,
    /// The instance was described in this reconcile (after any apply of this reconcile).
    pub described: bool,
    /// The reboot intent was written in this reconcile and RebootInstance not yet called.
    pub intent_written: bool,
    pub reboot_called: bool,
    /// What ECS refused in this reconcile.
    pub failure: Option<Failure>,
}

/// Everything the plan depends on.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub now: jiff::Timestamp,
    pub uid: &'a str,
    pub own_namespace: Option<&'a str>,
    pub generation: i64,
    pub spec: &'a VncPasswordSpec,
    pub paused: bool,
    /// The value of `ecsvnc.io/force-apply-requested-at` (or of its deprecated name
    /// `ecsvnc.io/reconcile-requested-at` when the new one is absent).
    pub force_token: Option<&'a str>,
    pub status: &'a VncPasswordStatus,
    pub password: &'a PasswordInput,
    /// The identity of the credentials to use (Secret uid and resourceVersion, or the controller's
    /// default AccessKeyId: never a secret), or why there are none.
    pub credentials: &'a Result<String, Failure>,
    /// The ID of the fingerprint key in use.
    pub key_id: &'a str,
    /// With `passwordGeneration`: the Secret's ownership and generation record.
    pub generated: Option<&'a GeneratedSecret>,
    /// The value of `ecsvnc.io/rotate-requested-at`.
    pub rotate_token: Option<&'a str>,
    /// Another (older) VncPassword naming the same instance: `(namespace, name)`.
    pub claimed_by: Option<(&'a str, &'a str)>,
    pub round: &'a Round,
    pub settings: PlanSettings,
    /// ECS's clock minus the controller's, as this process measured it from ECS's recent answers
    /// (their `Date`); `None` when it has no recent measurement.
    pub ecs_offset: Option<jiff::SignedDuration>,
    /// Another VncPassword with proven access applied its password to this instance after this
    /// one did (both applied before either's claim was seen): apply again.
    pub overwritten: bool,
    /// The object uses the controller's own credentials, which serve more than one namespace:
    /// the instance must carry the tag `ecsvnc.io/namespace` with `own_namespace` before any write.
    pub shared_credentials: bool,
}

/// When to look at the object again after a reconcile that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only a change of the object or a referenced Secret.
    AwaitChange,
    After(Duration),
    /// Per-object backoff at this pace.
    Backoff(Pace),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `passwordGeneration`: create the password Secret with a new random password.
    GeneratePassword,
    /// `passwordGeneration`: write a new random password to the Secret the controller created (with
    /// its resourceVersion as precondition), keeping the current one under the key `previous`
    /// until the new one is in effect; the apply follows from the new Secret version.
    RotatePassword,
    /// `passwordGeneration`: the rotated password is in effect; remove the key `previous` (with the
    /// Secret's resourceVersion as precondition).
    ForgetPrevious,
    /// `passwordGeneration`: give the Secret the controller created the ownership its
    /// `secretDeletionPolicy` says (an ownerReference for `Delete`, none for `Retain`), with its
    /// resourceVersion as precondition. No ECS call; the Secret's new version is only recorded.
    SetSecretOwnership,
    /// Call ModifyInstanceVncPasswd.
    Apply,
    /// The applied password is the Secret's: record the fingerprint under the current key and the
    /// Secret's current identity. No ECS call.
    Record,
    /// Describe the instance (fresh after any apply of this reconcile).
    Describe,
    /// Write the intent to reboot to the status, with the object's resourceVersion as precondition.
    RecordRebootIntent,
    /// Call RebootInstance (only right after its intent was written in this reconcile).
    Reboot,
    /// Do nothing now and look again after this long; no status write.
    Requeue(Duration),
    Finish {
        phase: Phase,
        requeue: Requeue,
    },
}

/// `<regionId>/<instanceId>`.
pub fn instance_key(spec: &VncPasswordSpec) -> String {
    format!("{}/{}", spec.region_id, spec.instance_id)
}

/// The key ID a fingerprint names (`hmac-sha256:<key id>:<mac>`).
pub fn fingerprint_key_id(fingerprint: &str) -> Option<&str> {
    let mut parts = fingerprint.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("hmac-sha256"), Some(id), Some(_)) => Some(id),
        _ => None,
    }
}

/// A hash of the inputs an ECS stall is about: the object (uid, generation), the password Secret's
/// identity, the credentials' identity and the force token. Never a secret.
pub fn stall_inputs(o: &Observed) -> String {
    let mut h = Sha256::new();
    let secret = match o.password {
        PasswordInput::Usable { secret, .. } => {
            format!("{}:{}:{}", secret.uid, secret.resource_version, secret.key)
        }
        PasswordInput::Unusable(_) => String::new(),
    };
    let credentials = o.credentials.as_deref().unwrap_or("");
    for part in [
        o.uid,
        &o.generation.to_string(),
        &secret,
        credentials,
        o.force_token.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("sha256:{}", hex::encode(&h.finalize()[..16]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// The status says the Secret's current password is applied to this instance.
    Current,
    /// The same, but the record must be updated (new fingerprint key, new Secret resourceVersion
    /// with the same password, a status from before these fields existed).
    NeedsRecord,
    /// Not applied, or cannot be told: apply.
    Stale,
}

fn applied_state(o: &Observed, fingerprint: &str, secret: &AppliedSecret) -> Applied {
    let status = o.status;
    let here = instance_key(o.spec);
    let Some(recorded) = status.applied.fingerprint.as_deref() else {
        return Applied::Stale;
    };
    let same_instance = status.applied.instance.as_deref() == Some(here.as_str());
    if recorded == fingerprint {
        // The fingerprint covers region and instance, so this is the instance's password.
        return if same_instance && status.applied.secret.as_ref() == Some(secret) {
            Applied::Current
        } else {
            Applied::NeedsRecord
        };
    }
    let key_changed = fingerprint_key_id(recorded) != Some(o.key_id);
    if key_changed && same_instance && status.applied.secret.as_ref() == Some(secret) {
        // The key was lost or replaced, the Secret is exactly the one applied: no ECS call.
        return Applied::NeedsRecord;
    }
    Applied::Stale
}

fn finish(phase: Phase, requeue: Requeue) -> Step {
    Step::Finish { phase, requeue }
}

fn failed(failure: &Failure, applied: bool, o: &Observed) -> Step {
    let requeue = match failure {
        Failure::Retry { pace, .. } => Requeue::Backoff(*pace),
        Failure::Stalled { reason, .. } if reason.fixable_outside_kubernetes() => {
            Requeue::After(o.settings.stall_recheck)
        }
        Failure::Stalled { .. } => Requeue::AwaitChange,
    };
    finish(
        Phase::Failed {
            failure: failure.clone(),
            applied,
        },
        requeue,
    )
}

fn parse_time(text: Option<&str>) -> Option<jiff::Timestamp> {
    text.and_then(|t| t.parse().ok())
}

fn duration_until(now: jiff::Timestamp, then: jiff::Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// A stall ECS gave for exactly these inputs, still in force: no ECS call.
fn remembered_stall(o: &Observed, applied: bool) -> Option<Step> {
    let status = o.status;
    if status.stall.inputs.as_deref() != Some(stall_inputs(o).as_str()) {
        return None;
    }
    let stalled = status
        .condition(crate::api::condition::STALLED)
        .filter(|c| c.status == "True")?;
    let reason = Reason::parse(&stalled.reason)?;
    let failure = Failure::stalled(reason, stalled.message.clone());
    if !reason.fixable_outside_kubernetes() {
        return Some(failed(&failure, applied, o));
    }
    let checked = parse_time(status.stall.checked_time.as_deref())?;
    let due = checked
        .checked_add(o.settings.stall_recheck)
        .unwrap_or(checked);
    if o.now >= due {
        // Something outside Kubernetes may have fixed it: ask ECS again.
        return None;
    }
    Some(finish(
        Phase::Failed { failure, applied },
        Requeue::After(duration_until(o.now, due)),
    ))
}

/// The earliest time, on the controller's clock, RebootInstance may be called: a later minute *on
/// ECS's clock* than both the apply and the last start, so that the restart shows in
/// minute-precision `StartTime`. `ecs_offset` (ECS's clock minus the controller's, as measured from
/// ECS's recent answers) turns that ECS minute into the controller's time; without a measurement
/// the one taken at the apply serves, and without either the time is pushed back by
/// [`decide::SKEW_MARGIN`].
pub fn reboot_not_before(
    status: &VncPasswordStatus,
    ecs_offset: Option<jiff::SignedDuration>,
) -> Option<jiff::Timestamp> {
    let local = parse_time(status.applied.time.as_deref());
    let ecs = parse_time(status.applied.ecs_time.as_deref());
    let applied = decide::applied_on_ecs_clock(local, ecs)?;
    let baseline = status
        .instance
        .start_time_at_apply
        .as_deref()
        .and_then(parse_start_time)
        .unwrap_or(applied);
    let earliest_on_ecs = floor_minute(applied.max(baseline))
        .checked_add(jiff::SignedDuration::from_secs(60))
        .ok()?;
    let offset_at_apply = match (ecs, local) {
        (Some(e), Some(l)) => Some(e.duration_since(l)),
        _ => None,
    };
    match ecs_offset.or(offset_at_apply) {
        Some(offset) => earliest_on_ecs.checked_sub(offset).ok(),
        None => earliest_on_ecs.checked_add(decide::SKEW_MARGIN).ok(),
    }
}

/// The spec field the rotation interval is read from.
fn rotation_field(spec: &VncPasswordSpec) -> &'static str {
    if spec.password_generation.is_some() {
        "spec.passwordGeneration.rotationInterval"
    } else {
        "spec.rotationInterval"
    }
}

fn rotation_interval(o: &Observed) -> Result<Option<Duration>, Failure> {
    let Some(text) = o.spec.rotation_interval() else {
        return Ok(None);
    };
    let invalid = |e: String| {
        Failure::stalled(
            Reason::InvalidSpec,
            format!("{}: {e}", rotation_field(o.spec)),
        )
    };
    let interval = schedule::parse_go_duration(text).map_err(invalid)?;
    if interval < Duration::from_secs(3600) || interval > schedule::MAX_ROTATION_INTERVAL {
        return Err(invalid(format!(
            "{text:?} must be between 1h and 8784h (366 days)"
        )));
    }
    Ok(Some(interval))
}

/// With a rotation interval: when the Secret's password is due to be replaced.
pub fn next_rotation(o: &Observed) -> Option<jiff::Timestamp> {
    let interval = rotation_interval(o).ok().flatten()?;
    match o.generated? {
        GeneratedSecret::Ours {
            generated_at: Some(at),
            ..
        } => at.checked_add(interval).ok(),
        _ => None,
    }
}

/// The next step.
pub fn plan(o: &Observed) -> Step {
    let step = plan_inner(o);
    // In effect: the password kept from before the rotation is no longer the console's.
    if let Step::Finish {
        phase: Phase::Ready { .. },
        ..
    } = &step
        && matches!(
            o.generated,
            Some(GeneratedSecret::Ours {
                previous_kept: true,
                ..
            })
        )
    {
        return Step::ForgetPrevious;
    }
    // A scheduled rotation wakes the object even when nothing else would.
    match (step, next_rotation(o)) {
        (
            Step::Finish {
                phase,
                requeue: Requeue::AwaitChange,
            },
            Some(due),
        ) if !o.paused => finish(phase, Requeue::After(duration_until(o.now, due))),
        (
            Step::Finish {
                phase,
                requeue: Requeue::After(after),
            },
            Some(due),
        ) => finish(phase, Requeue::After(after.min(duration_until(o.now, due)))),
        (step, _) => step,
    }
}

fn not_allowed(o: &Observed) -> Failure {
    Failure::stalled(
        Reason::InstanceNotAllowed,
        format!(
            "the controller's credentials serve several namespaces, so they act only on an instance tagged {}={} in ECS: add that tag to instance {} (ECS console or TagResources), or name credentials of this namespace (credentials.secretRef or credentials.serviceAccountRef)",
            crate::controller::tenancy::NAMESPACE_TAG,
            o.own_namespace.unwrap_or_default(),
            o.spec.instance_id
        ),
    )
}

/// Whether a RebootInstance may go out at `at`: without windows at any time; with windows only
/// inside one that is still open then (a window's last moment is not used: the reboot must start
/// inside it). A spec whose windows cannot be read allows nothing.
pub fn reboot_may_start_at(spec: &VncPasswordSpec, at: jiff::Timestamp) -> bool {
    match schedule::window_state(&spec.reboot_windows, at) {
        Ok(WindowState::Always) => true,
        Ok(WindowState::Open { until, .. }) => at < until,
        Ok(WindowState::Closed { .. }) | Err(_) => false,
    }
}

/// The generated password's own steps, before anything else is decided.
fn generation_step(o: &Observed) -> Option<Step> {
    if !o.spec.generates_password() {
        return None;
    }
    match o.generated? {
        GeneratedSecret::Missing => Some(Step::GeneratePassword),
        GeneratedSecret::NotOurs => Some(failed(
            &Failure::stalled(
                Reason::SecretNotOwned,
                format!(
                    "Secret {} exists and was not created by this VncPassword: with passwordGeneration the controller only writes Secrets it created; delete it, or name another Secret, or remove passwordGeneration to use its password",
                    o.spec.password_secret_ref.name
                ),
            ),
            false,
            o,
        )),
        GeneratedSecret::Ours {
            generated_at,
            rotate_token,
            previous_kept,
            owner_reference,
            adopt,
        } => {
            let delete = o.spec.generation().map(|g| g.secret_deletion_policy)
                == Some(SecretDeletionPolicy::Delete);
            if *adopt || *owner_reference != delete {
                return Some(Step::SetSecretOwnership);
            }
            let interval = match rotation_interval(o) {
                Ok(i) => i,
                Err(failure) => return Some(failed(&failure, false, o)),
            };
            // Its own Secret, edited into something unusable: generate a good one.
            if matches!(o.password, PasswordInput::Unusable(_)) {
                return Some(Step::RotatePassword);
            }
            let forced = o.rotate_token.is_some() && o.rotate_token != rotate_token.as_deref();
            let due = interval.is_some_and(|i| {
                generated_at
                    .and_then(|g| g.checked_add(i).ok())
                    .is_none_or(|due| o.now >= due)
            });
            ((forced || due) && rotation_may_start(o, *previous_kept))
                .then_some(Step::RotatePassword)
        }
    }
}

/// A rotation replaces the Secret's password before ECS has it, so it starts only when it can
/// finish: not while the previous rotation is not in effect yet (its `previous` is the console's
/// password and must not be overwritten), not while the credentials are missing or refused, and
/// not while ECS stalls the object. A due or requested rotation waits and happens once that clears.
fn rotation_may_start(o: &Observed, previous_kept: bool) -> bool {
    let stalled = o
        .status
        .condition(crate::api::condition::STALLED)
        .is_some_and(|c| c.status == "True");
    !previous_kept && o.credentials.is_ok() && !stalled
}

fn plan_inner(o: &Observed) -> Step {
    if o.paused {
        return finish(Phase::Paused, Requeue::AwaitChange);
    }
    if o.round.cache_behind {
        return Step::Requeue(CACHE_BEHIND_RETRY);
    }
    if let Some((namespace, name)) = o.claimed_by {
        // Named only within the namespace: another tenant's object names are not for this one.
        let owner = if Some(namespace) == o.own_namespace {
            format!("VncPassword {name}, created earlier")
        } else {
            "a VncPassword of another namespace, created earlier".to_string()
        };
        return finish(
            Phase::Failed {
                failure: Failure::stalled(
                    Reason::InstanceClaimed,
                    format!(
                        "instance {} is managed by {owner}: two VncPasswords would take turns setting different passwords; delete one of them (this one takes over when the other is gone)",
                        o.spec.instance_id
                    ),
                ),
                applied: false,
            },
            // The owner's deletion wakes nobody else: look again now and then.
            Requeue::After(CLAIM_RECHECK),
        );
    }
    if let Some(step) = generation_step(o) {
        return step;
    }
    let (fingerprint, secret) = match o.password {
        PasswordInput::Unusable(failure) => return failed(failure, false, o),
        PasswordInput::Usable {
            fingerprint,
            secret,
        } => (fingerprint, secret),
    };
    let status = o.status;
    let forced = o
        .force_token
        .is_some_and(|t| Some(t) != status.applied.force_apply_token.as_deref());
    let applied = if forced || o.overwritten {
        Applied::Stale
    } else {
        applied_state(o, fingerprint, secret)
    };
    if applied == Applied::NeedsRecord {
        return Step::Record;
    }
    let current = applied == Applied::Current;
    if let Some(failure) = &o.round.failure {
        return failed(failure, current, o);
    }

    let here = instance_key(o.spec);
    let facts_here = status.instance.key.as_deref() == Some(here.as_str());
    let io_optimized = status.instance.io_optimized.filter(|_| facts_here);
    if current {
        // In effect: nothing to ask ECS, whatever the credentials are doing.
        if io_optimized == Some(true) {
            return finish(
                Phase::Ready {
                    how: Reason::IoOptimized,
                },
                Requeue::AwaitChange,
            );
        }
        if status.instance.restart_observed_time.is_some() {
            return finish(
                Phase::Ready {
                    how: Reason::Restarted,
                },
                Requeue::AwaitChange,
            );
        }
    }

    // From here on ECS must be asked.
    if let Some(step) = remembered_stall(o, current) {
        return step;
    }
    if let Err(failure) = o.credentials {
        return failed(failure, current, o);
    }
    if o.shared_credentials {
        // Shared credentials reach every instance of the account: act only on an instance that
        // names this namespace, as ECS described it in this reconcile, before any write.
        if !o.round.described {
            return Step::Describe;
        }
        let tagged = facts_here
            && status.instance.namespace_tag.is_some()
            && status.instance.namespace_tag.as_deref() == o.own_namespace;
        if !tagged {
            return failed(&not_allowed(o), current, o);
        }
    }
    if !current {
        return Step::Apply;
    }
    if !o.round.described {
        return Step::Describe;
    }
    if io_optimized != Some(false) {
        // Described, and still no facts for this instance: cannot happen unless the executor
        // failed to record them; look again later rather than guess.
        return Step::Requeue(o.settings.poll);
    }

    let poll = Requeue::After(o.settings.poll);
    let waiting = |w: Waiting, requeue: Requeue| finish(Phase::WaitingForRestart(w), requeue);
    let instance_status = status
        .instance
        .status
        .as_deref()
        .filter(|_| facts_here)
        .unwrap_or("");
    if o.spec.reboot_policy == RebootPolicy::Manual {
        return match instance_status {
            "Stopped" => waiting(Waiting::Stopped, poll),
            _ => waiting(Waiting::Manual, poll),
        };
    }

    // rebootPolicy: Automatic.
    let intent = status
        .reboot
        .requested_time
        .as_deref()
        .filter(|_| status.reboot.requested_for == status.applied.fingerprint);
    if let Some(at) = intent {
        if o.round.intent_written && !o.round.reboot_called {
            return Step::Reboot;
        }
        let timed_out = parse_time(Some(at))
            .and_then(|t| t.checked_add(o.settings.reboot_timeout).ok())
            .is_some_and(|deadline| o.now >= deadline);
        return if timed_out {
            waiting(Waiting::RebootNotObserved(at.to_string()), poll)
        } else {
            waiting(Waiting::RebootRequested(at.to_string()), poll)
        };
    }
    match instance_status {
        "Running" => {}
        "Stopped" => return waiting(Waiting::Stopped, poll),
        other => return waiting(Waiting::InTransition(other.to_string()), poll),
    }
    let window = match schedule::window_state(&o.spec.reboot_windows, o.now) {
        Ok(w) => w,
        Err(message) => return failed(&Failure::stalled(Reason::InvalidSpec, message), true, o),
    };
    // No apply time recorded (cannot happen after an apply): a minute from now.
    let earliest = reboot_not_before(status, o.ecs_offset).unwrap_or_else(|| {
        floor_minute(o.now)
            .checked_add(jiff::SignedDuration::from_secs(60))
            .unwrap_or(o.now)
    });
    // Reboots come in herds (objects applied together, one window shared by many): each object
    // waits a little of its own, always the same, so that the herd is spread and one slow call
    // does not hold the others.
    let mut earliest = earliest
        .checked_add(spread(o.uid, HERD_SPREAD))
        .unwrap_or(earliest);
    if let WindowState::Open { since, until } = window {
        let room = Duration::try_from(until.duration_since(since))
            .unwrap_or(Duration::ZERO)
            .div_f64(4.0)
            .min(HERD_SPREAD_IN_WINDOW);
        if let Ok(spread_start) = since.checked_add(spread(o.uid, room)) {
            earliest = earliest.max(spread_start);
        }
    }
    match window {
        WindowState::Closed { next } => waiting(
            Waiting::RebootWindow(next),
            Requeue::After(duration_until(o.now, next).min(o.settings.poll)),
        ),
        // A window that ends before the earliest moment is not used: the next one is.
        WindowState::Open { until, .. } if until <= earliest => {
            match schedule::window_state(&o.spec.reboot_windows, until) {
                Ok(WindowState::Closed { next }) => waiting(Waiting::RebootWindow(next), poll),
                _ => waiting(Waiting::RebootAfter(earliest), poll),
            }
        }
        _ if o.now >= earliest => Step::RecordRebootIntent,
        _ => waiting(
            Waiting::RebootAfter(earliest),
            Requeue::After(duration_until(o.now, earliest).min(o.settings.poll)),
        ),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
