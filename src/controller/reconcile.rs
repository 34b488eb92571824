//! The executor of one reconcile, a short dispatch loop: **observe** (the object, and its Secrets
//! from the watch caches or the API server: `inputs`), then repeatedly **plan** (the pure
//! `plan::plan`), **act** (one function per step, at most one ECS call each: `steps`) and record the
//! outcome in the working status, until the plan finishes; then **record** (one status write and
//! the Events: `report`).
//!
//! The one side effect that must not repeat, RebootInstance, is preceded by a status write of the
//! intent with the object's resourceVersion as precondition: a conflict means someone else (or a
//! newer version of this object) got there first, and nothing is called.

pub(crate) mod inputs;
mod report;
mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::{Resource, ResourceExt};

use crate::api::{
    ANNOTATION_FORCE_APPLY_REQUESTED_AT, ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT,
    ANNOTATION_ROTATE_REQUESTED_AT, VncPassword, VncPasswordStatus,
};
use crate::controller::cache::CachedVncPassword;
use crate::controller::claims;
use crate::controller::context::Context;
use crate::controller::decide::{self, Failure, Phase};
use crate::controller::plan::{self, Observed, Requeue, Round, Step};
use crate::controller::sets;
use crate::controller::slots::{self, Admission};
use inputs::Inputs;

/// More steps than any plan takes (a read of the Secrets, with claims from the API server the
/// claim's list, generate, apply, describe, intent, reboot, finish); a guard against a planner bug
/// turning into a loop of ECS calls.
const MAX_STEPS: usize = 12;

/// How long a reconcile waits, after a start, for the Secret watch to list everything before it
/// reads the Secrets it needs from the API server instead.
const SECRETS_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Failures of the Kubernetes side (the ECS side ends up in the status instead).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Secret {namespace}/{name}: {source}")]
    WriteSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading ServiceAccount {namespace}/{name} or requesting its token: {source}")]
    ServiceAccount {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("listing the VncPasswords that name the instance (its claim): {0}")]
    ClaimLookup(#[source] kube::Error),
    #[error("the object has no namespace, name or uid")]
    Unnamed,
    #[error("the reconcile took longer than {0:?} and was abandoned")]
    Deadline(Duration),
    #[error("the planner did not finish within {MAX_STEPS} steps (a bug; please report it)")]
    TooManySteps,
}

impl ReconcileError {
    pub fn metric_label(&self) -> &'static str {
        "error"
    }
}

/// Outcome labels for `ecs_vnc_reconciles_total{result}`.
fn result_label(phase: &Phase, applied_now: bool) -> &'static str {
    match phase {
        Phase::Paused => "paused",
        Phase::Failed {
            failure: Failure::Stalled { .. },
            ..
        } => "stalled",
        Phase::Failed {
            failure: Failure::Retry { .. },
            ..
        } => "retry",
        Phase::WaitingForRestart(_) => "reboot_pending",
        Phase::Ready { .. } if applied_now => "applied",
        Phase::Ready { .. } => "unchanged",
    }
}

/// Takes a work slot (served in turn per namespace, and within a namespace between the sets'
/// children and the other VncPasswords, see `slots` and `sets::share`), then reconciles the object
/// as the watch shows it by then. With no slot free, the object queues a ticket and this reconcile
/// ends at once: the object is woken when its turn comes, and its next reconcile takes the slot
/// reserved for it. So a due object costs its ticket while it waits, not a reconcile's future.
pub async fn reconcile(
    obj: Arc<CachedVncPassword>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let share = sets::share(namespace, sets::owning_set(obj.as_ref()).is_some());
    let ticket = slots::ticket(&obj);
    let _slot = match ctx.slots.admit(&share, &ticket) {
        Admission::Run(slot) => slot,
        // Woken when its turn comes (its ticket holds its place).
        Admission::Queued => return Ok(Action::await_change()),
        // Shutting down: what has not started does not start.
        Admission::Closed => return Ok(Action::await_change()),
    };
    // It may have queued long: a newer version (or its deletion) seen meanwhile counts.
    let Some(obj) = ctx.watched.objects.get(&ticket) else {
        return Ok(Action::await_change());
    };
    // The whole object, its status unpacked, only while its reconcile runs.
    let obj = Arc::new(obj.to_full());
    Box::pin(reconcile_now(obj, ctx.clone())).await
}

async fn reconcile_now(obj: Arc<VncPassword>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    use tracing::Instrument as _;
    let started = Instant::now();
    let span = tracing::info_span!(
        "reconcile",
        namespace = obj.namespace().as_deref().unwrap_or_default(),
        name = %obj.name_any()
    );
    let deadline = ctx.settings.reconcile_timeout;
    // Abandoning a reconcile is safe at any point before a reboot intent is recorded: an apply not
    // yet recorded is made again. Once the intent is recorded the deadline no longer cuts it: the
    // RebootInstance it announces goes out (on its reserved slot, bounded by the client's own
    // timeouts) or is withdrawn, never left announced and unsent.
    let committed = std::sync::atomic::AtomicBool::new(false);
    // A panic (a bug) ends this reconcile only: caught here, before it could unwind through
    // kube-runtime into the process, and reported on the object.
    let inner = std::panic::AssertUnwindSafe(reconcile_inner(&obj, &ctx, &committed))
        .catch_unwind()
        .instrument(span.clone());
    tokio::pin!(inner);
    let outcome = tokio::select! {
        outcome = &mut inner => Some(outcome),
        _ = tokio::time::sleep(deadline) => None,
    };
    let outcome = match outcome {
        Some(outcome) => Some(outcome),
        None if committed.load(std::sync::atomic::Ordering::SeqCst) => Some(inner.await),
        None => None,
    };
    let result = match outcome {
        Some(Ok(result)) => result,
        Some(Err(panic)) => {
            let what = panic_message(panic.as_ref());
            internal_error(&obj, &ctx, what).instrument(span).await
        }
        None => Err(ReconcileError::Deadline(deadline)),
    };
    let label = match &result {
        Ok((_, label)) => *label,
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconcile_finished(label, started.elapsed());
    result.map(|(action, _)| action)
}

/// After a panic: counted, logged at error, and the object says `Stalled`, reason
/// `InternalError`, while it is retried with backoff (a later version, or a changed spec, may
/// not panic). The rest of its status is left as it was read.
async fn internal_error(
    obj: &VncPassword,
    ctx: &Context,
    what: String,
) -> Result<(Action, &'static str), ReconcileError> {
    ctx.metrics.reconcile_panicked();
    tracing::error!(panic = %what, "the reconcile panicked (a bug; please report it with this log line): the object is marked InternalError and retried with backoff");
    let failures = obj.uid().map(|uid| ctx.failed(&uid)).unwrap_or(1);
    let retry_in = decide::backoff(failures, decide::Pace::Normal, rand::random());
    let phase = Phase::Failed {
        failure: Failure::stalled(
            crate::api::Reason::InternalError,
            "the controller failed on this object (an internal error, logged at error level with this object's namespace and name; please report it); it is retried with backoff",
        ),
        applied: obj
            .status
            .as_ref()
            .is_some_and(|s| s.is_true(crate::api::condition::APPLIED)),
    };
    let mut status = obj.status.clone().unwrap_or_default();
    status.conditions = crate::controller::conditions::merge(
        &status.conditions,
        &decide::conditions_for(&phase, &obj.spec.instance_id),
        obj.metadata.generation,
        ctx.now(),
    );
    status.observed_generation = obj.metadata.generation;
    let legacy = status.legacy;
    status.legacy = false;
    if let (Some(namespace), Some(uid)) = (obj.namespace(), obj.uid())
        && (legacy || obj.status.as_ref() != Some(&status))
    {
        // Fenced like every status write: a newer status than the one read stays.
        match report::write_status(
            ctx,
            obj,
            &namespace,
            &obj.name_any(),
            &status,
            obj.resource_version().as_deref(),
        )
        .await
        {
            Ok(written) => ctx.wrote(&uid, written.resource_version().as_deref()),
            Err(ReconcileError::WriteStatus(kube::Error::Api(s))) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok((Action::requeue(retry_in), "panic"))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// What a step tells the loop.
enum Flow {
    /// Plan again.
    Next,
    /// The reconcile ends here, with this requeue and metric label (no status write).
    Done(Action, &'static str),
}

/// One reconcile in progress: what was observed and what has been done so far.
struct Run<'a> {
    obj: &'a VncPassword,
    ctx: &'a Context,
    namespace: String,
    name: String,
    uid: String,
    /// The status as read; `status` is the working copy the steps record into.
    previous: VncPasswordStatus,
    status: VncPasswordStatus,
    events: Vec<Event>,
    /// The object's resourceVersion, then that of this reconcile's own intent write: every status
    /// write carries it as precondition.
    resource_version: Option<String>,
    /// The status as this reconcile's own intent write left it.
    written_status: Option<VncPasswordStatus>,
    paused: bool,
    /// `ecsvnc.io/force-apply-requested-at` (or its deprecated name).
    force_token: Option<String>,
    /// The force token came from the deprecated `ecsvnc.io/reconcile-requested-at`.
    force_token_deprecated: bool,
    /// `ecsvnc.io/rotate-requested-at`.
    rotate_token: Option<String>,
    claimed_by: Option<(String, String)>,
    /// Another object with proven access applied to the instance after this one did.
    overwritten: bool,
    /// `claimed_by` and `overwritten` come from the API server (`claims_from_api`), not from the
    /// local index: asked at most once per reconcile.
    claim_asked: bool,
    inputs: Inputs,
    round: Round,
    key_id: String,
    instance_key: String,
    /// The stall inputs of the latest plan (what an ECS stall is remembered under).
    stall_key: String,
    applied_at: Option<Instant>,
    applied_now: bool,
    /// The RebootInstance slot reserved before the intent was written.
    reservation: Option<crate::ecs::ratelimit::Reservation>,
    /// Set once the reboot intent is recorded: the reconcile deadline no longer cuts it.
    committed: &'a std::sync::atomic::AtomicBool,
    /// When the account's bucket has room again after ECS throttled a call: the object is looked
    /// at then, rather than after a backoff of its own on top of the bucket's.
    retry_at: Option<Duration>,
}

async fn reconcile_inner(
    obj: &VncPassword,
    ctx: &Context,
    committed: &std::sync::atomic::AtomicBool,
) -> Result<(Action, &'static str), ReconcileError> {
    if obj.meta().deletion_timestamp.is_some() {
        // Nothing to undo in ECS: a VNC password cannot be "unset".
        return Ok((Action::await_change(), "unchanged"));
    }
    // Tests make the reconcile of the object named by the failpoint's argument panic.
    #[cfg(feature = "failpoints")]
    if fail::eval("reconcile-panic", |name| name)
        .flatten()
        .is_some_and(|name| name == obj.name_any())
    {
        panic!("failpoint reconcile-panic");
    }
    // Each step's future is boxed: a reconcile holds the one it is in, not room for the largest.
    let mut run = Box::pin(Run::observe(obj, ctx, committed)).await?;
    for _ in 0..MAX_STEPS {
        let (step, next_rotation) = run.plan();
        tracing::trace!(?step, "planned");
        // An ECS write planned from the local index's claim: decided from the API server first.
        if Box::pin(run.ask_claim_before(&step)).await? {
            continue;
        }
        // Known from the caches so far: read what the step needs, then plan again with it.
        if Box::pin(run.read_missing_inputs(&step)).await? {
            continue;
        }
        let flow = match step {
            Step::GeneratePassword => Box::pin(run.generate_password(false)).await?,
            Step::RotatePassword => Box::pin(run.generate_password(true)).await?,
            Step::ForgetPrevious => Box::pin(run.forget_previous()).await?,
            Step::SetSecretOwnership => Box::pin(run.set_secret_ownership()).await?,
            Step::Apply => Box::pin(run.apply()).await?,
            Step::Record => {
                run.record_identity();
                Flow::Next
            }
            Step::Describe => Box::pin(run.describe()).await?,
            Step::RecordRebootIntent => Box::pin(run.record_reboot_intent()).await?,
            Step::Reboot => Box::pin(run.reboot()).await?,
            Step::Requeue(after) => Flow::Done(Action::requeue(after), "unchanged"),
            Step::Finish { phase, requeue } => {
                return Box::pin(run.finish(phase, requeue, next_rotation)).await;
            }
        };
        if let Flow::Done(action, label) = flow {
            return Ok((action, label));
        }
    }
    Err(ReconcileError::TooManySteps)
}

impl<'a> Run<'a> {
    /// The object as read, and its Secrets' and credentials' identities from the watch caches when
    /// they prove nothing changed since the apply (else read from the API server).
    async fn observe(
        obj: &'a VncPassword,
        ctx: &'a Context,
        committed: &'a std::sync::atomic::AtomicBool,
    ) -> Result<Self, ReconcileError> {
        let namespace = obj.namespace().ok_or(ReconcileError::Unnamed)?;
        let uid = obj.uid().ok_or(ReconcileError::Unnamed)?;
        let annotation = |key: &str| obj.annotations().get(key).cloned();
        let paused = annotation(ANNOTATION_PAUSED).as_deref() == Some("true");
        let mut claimed_by = ctx.claimed_by(obj);
        let previous = obj.status.clone().unwrap_or_default();
        let mut overwritten =
            claims::own_applied_at(obj).is_some_and(|at| ctx.overwritten_after(obj, at));
        // Older than the controller's own last write (the watch has not brought that yet): the
        // plan only waits for it, so nothing is read.
        let cache_behind = ctx.is_behind(&uid, obj.resource_version().as_deref());
        // With claims from the API server, an object that is not settled on its instance asks
        // here, before anything is read for it (see `claims`: a settled one asks only before an
        // ECS write, in `ask_claim_before`). A claim the index already knows needs no list: that
        // owner is in this replica's watch, and its change wakes this object.
        let claim_asked = ctx.settings.claims_from_api
            && !paused
            && !cache_behind
            && claimed_by.is_none()
            && claims::needs_lookup(
                obj,
                &ctx.key,
                ctx.now(),
                claims::settle(ctx.settings.reconcile_timeout),
            );
        if claim_asked {
            let claim = ask_claim(ctx, obj).await?;
            claimed_by = claim.claimed_by;
            overwritten = claim.overwritten;
        }
        // Paused, or another VncPassword owns the instance: the plan reads no Secret, so none is read.
        let inputs = if paused || claimed_by.is_some() || cache_behind {
            Inputs::none()
        } else {
            ctx.watched.wait_secrets_synced(SECRETS_SYNC_WAIT).await;
            match inputs::cached_inputs(ctx, obj, &namespace, &previous) {
                Some(inputs) => inputs,
                None => inputs::observe(ctx, obj, &namespace).await?,
            }
        };
        let round = Round {
            cache_behind,
            ..Round::default()
        };
        Ok(Self {
            obj,
            ctx,
            name: obj.name_any(),
            namespace,
            status: previous.clone(),
            previous,
            events: Vec::new(),
            resource_version: obj.resource_version(),
            written_status: None,
            paused,
            force_token: annotation(ANNOTATION_FORCE_APPLY_REQUESTED_AT)
                .or_else(|| annotation(ANNOTATION_RECONCILE_REQUESTED_AT)),
            force_token_deprecated: annotation(ANNOTATION_FORCE_APPLY_REQUESTED_AT).is_none()
                && annotation(ANNOTATION_RECONCILE_REQUESTED_AT).is_some(),
            rotate_token: annotation(ANNOTATION_ROTATE_REQUESTED_AT),
            claimed_by,
            overwritten,
            claim_asked,
            inputs,
            round,
            key_id: ctx.key.id(),
            instance_key: plan::instance_key(&obj.spec),
            stall_key: String::new(),
            applied_at: None,
            applied_now: false,
            reservation: None,
            committed,
            retry_at: None,
            uid,
        })
    }

    /// The next step (pure), and when the next rotation falls due.
    fn plan(&mut self) -> (Step, Option<jiff::Timestamp>) {
        let observed = Observed {
            now: self.ctx.now(),
            uid: &self.uid,
            own_namespace: Some(self.namespace.as_str()),
            generation: self.obj.metadata.generation.unwrap_or_default(),
            spec: &self.obj.spec,
            paused: self.paused,
            force_token: self.force_token.as_deref(),
            status: &self.status,
            password: &self.inputs.password,
            credentials: &self.inputs.credentials_identity,
            key_id: &self.key_id,
            generated: self.inputs.generated.as_ref(),
            rotate_token: self.rotate_token.as_deref(),
            claimed_by: self
                .claimed_by
                .as_ref()
                .map(|(ns, name)| (ns.as_str(), name.as_str())),
            round: &self.round,
            settings: self.ctx.settings.plan,
            ecs_offset: self.ctx.ecs_offset(),
            overwritten: self.overwritten,
            shared_credentials: self.shared_credentials(),
        };
        let step = plan::plan(&observed);
        let next_rotation = plan::next_rotation(&observed);
        let stall_key = plan::stall_inputs(&observed);
        self.stall_key = stall_key;
        (step, next_rotation)
    }

    /// Whether this object acts with the controller's own credentials while they serve more than
    /// one namespace (then an instance must be tagged for its namespace).
    fn shared_credentials(&self) -> bool {
        let spec = &self.obj.spec;
        spec.credentials_secret().is_none()
            && spec.credentials_service_account().is_none()
            && self.ctx.settings.allowed_default_credentials.shared()
    }

    /// With claims from the API server: when `step` is a write that an object whose instance is
    /// claimed never makes (an ECS write: an apply, or the reboot intent that leads to
    /// RebootInstance; or a write of its generated password Secret) and the claim was not asked of
    /// the API server in this reconcile yet, asks it and replaces the local answer. `true`: plan
    /// again with it.
    ///
    /// The cheapest correct point: a reconcile that writes nothing (most of them: an object
    /// applied long ago, a wait for a restart, whose Describe is only a read) costs no list, and
    /// no write goes out on the local index's answer alone, which knows only this replica's objects.
    async fn ask_claim_before(&mut self, step: &Step) -> Result<bool, ReconcileError> {
        let writes = matches!(
            step,
            Step::Apply
                | Step::RecordRebootIntent
                | Step::Reboot
                | Step::GeneratePassword
                | Step::RotatePassword
                | Step::ForgetPrevious
                | Step::SetSecretOwnership
        );
        if !self.ctx.settings.claims_from_api || self.claim_asked || !writes {
            return Ok(false);
        }
        let claim = ask_claim(self.ctx, self.obj).await?;
        self.claim_asked = true;
        self.claimed_by = claim.claimed_by;
        self.overwritten = claim.overwritten;
        Ok(true)
    }

    /// Reads the password Secret or the credentials when `step` needs them and they are known only
    /// from the caches so far. `true`: something was read, plan again.
    async fn read_missing_inputs(&mut self, step: &Step) -> Result<bool, ReconcileError> {
        if !self.inputs.password_read && inputs::needs_password(step) {
            self.inputs = inputs::observe(self.ctx, self.obj, &self.namespace).await?;
            return Ok(true);
        }
        if self.inputs.credentials.is_none()
            && self.inputs.credentials_identity.is_ok()
            && inputs::needs_credentials(step)
        {
            match inputs::credentials(self.ctx, &self.obj.spec, &self.namespace).await? {
                Ok((c, id)) => {
                    self.inputs.credentials = Some(c);
                    self.inputs.credentials_identity = Ok(id);
                }
                Err(failure) => self.inputs.credentials_identity = Err(failure),
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The plan finished: conditions and times into the status, one write when it changed, the
    /// Events of this reconcile, and when to look again.
    async fn finish(
        mut self,
        phase: Phase,
        requeue: Requeue,
        next_rotation: Option<jiff::Timestamp>,
    ) -> Result<(Action, &'static str), ReconcileError> {
        if let Phase::Failed {
            failure: Failure::Stalled { reason, .. },
            ..
        } = &phase
            && reason.revokes_access()
        {
            crate::controller::record::lost_access(&mut self.status);
        }
        let format = crate::ecs::signer::format_timestamp;
        self.status.rotation.next_time = next_rotation.map(format);
        self.status.reboot.next_window = match &phase {
            Phase::WaitingForRestart(decide::Waiting::RebootWindow(next)) => Some(format(*next)),
            _ => None,
        };
        report::deprecations(
            self.obj,
            &self.previous,
            &self.status,
            self.force_token_deprecated,
            &mut self.events,
        );
        report::transition_events(
            &phase,
            &self.previous,
            &self.obj.spec,
            self.applied_now,
            &mut self.events,
        );
        let label = result_label(&phase, self.applied_now);
        // With claims from the API server, an apply that may have raced another object's is looked
        // at again once it is settled (see `claims`): no other object's change wakes this one from
        // another shard.
        let settle_in = self
            .ctx
            .settings
            .claims_from_api
            .then(|| {
                claims::settle_requeue(
                    &self.status,
                    &self.instance_key,
                    self.ctx.now(),
                    claims::settle(self.ctx.settings.reconcile_timeout),
                )
            })
            .flatten()
            .map(|d| d + Duration::from_secs(1));
        let base = self.written_status.as_ref().unwrap_or(&self.previous);
        let written = report::finish(
            self.ctx,
            self.obj,
            &self.namespace,
            &self.name,
            &self.uid,
            self.status,
            (base, self.resource_version.as_deref()),
            &phase,
            self.round.reboot_called,
            self.events,
            label,
        )
        .await?;
        if written == report::Written::Fenced {
            // Another writer's status is newer than this reconcile's view: look again from it.
            return Ok((Action::requeue(Duration::from_millis(500)), "retry"));
        }
        // Only now: a status write that fails must not reset the object's backoff.
        let action = match (requeue, self.retry_at) {
            // Throttled: back when the bucket has room, as ECS's answers say, not after an
            // exponential backoff of its own on top.
            (Requeue::Backoff(decide::Pace::Throttled), Some(at)) => {
                let jitter = 1.0 + rand::random::<f64>() * 0.2;
                Action::requeue(at.max(Duration::from_secs(1)).mul_f64(jitter))
            }
            // The sooner of the two; with neither, back on a change or at its resync (`resync`).
            _ => match requeue_after(self.ctx, &self.uid, requeue)
                .into_iter()
                .chain(settle_in)
                .min()
            {
                Some(after) => Action::requeue(after),
                None => Action::await_change(),
            },
        };
        Ok((action, label))
    }
}

/// The claim on `obj`'s instance from the API server (see `claims`); a failed list fails the
/// reconcile (retried with backoff), so that no ECS write goes out without the answer.
async fn ask_claim(ctx: &Context, obj: &VncPassword) -> Result<claims::Claim, ReconcileError> {
    ctx.metrics.claim_looked_up();
    let listed = claims::list_naming(&ctx.client, &ctx.settings.served_namespaces, obj)
        .await
        .map_err(ReconcileError::ClaimLookup)?;
    let claim = claims::decide(obj, &listed, &ctx.key);
    tracing::debug!(listed = listed.len(), claimed_by = ?claim.claimed_by, overwritten = claim.overwritten, "claim asked of the API server");
    Ok(claim)
}

fn requeue_after(ctx: &Context, uid: &str, requeue: Requeue) -> Option<Duration> {
    match requeue {
        Requeue::AwaitChange => {
            ctx.succeeded(uid);
            None
        }
        Requeue::After(after) => {
            ctx.succeeded(uid);
            Some(after.max(Duration::from_millis(100)))
        }
        Requeue::Backoff(pace) => {
            let n = ctx.failed(uid);
            Some(decide::backoff(n, pace, rand::random()))
        }
    }
}
