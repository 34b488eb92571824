//! The executor of one reconcile: **observe** (the object, its Secrets), then repeatedly ask the
//! planner for the next step, **act** (at most one ECS call per step) and **record** the outcome in
//! the working status, until the plan finishes; then write the status and Events.
//!
//! The one side effect that must not repeat, RebootInstance, is preceded by a status write of the
//! intent with the object's resourceVersion as precondition: a conflict means someone else (or a
//! newer version of this object) got there first, and nothing is called.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::api::{
    ANNOTATION_GENERATED_AT, ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT,
    ANNOTATION_ROTATE_REQUESTED_AT, ANNOTATION_ROTATE_TOKEN, AppliedSecret, FIELD_MANAGER,
    LABEL_MANAGED_BY, MANAGED_BY, Reason, VncPassword, VncPasswordStatus, condition,
};
use crate::controller::conditions;
use crate::controller::context::Context;
use crate::controller::decide::{self, Failure, Phase};
use crate::controller::plan::{
    self, GeneratedSecret, Observed, PasswordInput, Requeue, Round, Step,
};
use crate::controller::record;
use crate::controller::service_account::ResolveError;
use crate::controller::tenancy;
use crate::ecs::Credentials;
use crate::password::VncPassword as Password;

/// More steps than any plan takes (a read of the Secrets, generate, apply, describe, intent,
/// reboot, finish); a guard against a planner bug turning into a loop of ECS calls.
const MAX_STEPS: usize = 10;

/// The longest a reconcile waits for a slot of the account's ECS quota before it gives its worker
/// up and looks again later.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);

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

pub async fn reconcile(obj: Arc<VncPassword>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    use tracing::Instrument as _;
    let started = Instant::now();
    let span = tracing::info_span!(
        "reconcile",
        namespace = obj.namespace().as_deref().unwrap_or_default(),
        name = %obj.name_any()
    );
    let deadline = ctx.settings.reconcile_timeout;
    // Abandoning a reconcile is safe at any point: an apply not yet recorded is made again, and a
    // reboot is only ever called after its intent was recorded.
    let result = match tokio::time::timeout(deadline, reconcile_inner(&obj, &ctx))
        .instrument(span)
        .await
    {
        Ok(result) => result,
        Err(_) => Err(ReconcileError::Deadline(deadline)),
    };
    let label = match &result {
        Ok((_, label)) => *label,
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconcile_finished(label, started.elapsed());
    result.map(|(action, _)| action)
}

/// What one reconcile knows of the referenced Secrets and the credentials.
struct Inputs {
    password: PasswordInput,
    /// The password itself, when read and usable (only the Apply step sends it).
    secret_password: Option<Password>,
    /// The credentials' identity (never a secret), or why there are none.
    credentials_identity: Result<String, Failure>,
    /// The credentials themselves, when read.
    credentials: Option<Credentials>,
    /// With `generatePassword`: the Secret's ownership and generation record.
    generated: Option<GeneratedSecret>,
    /// The password Secret's resourceVersion (the precondition of a rotation).
    secret_version: Option<String>,
    /// Whether the password Secret was read from the API server. When not, the identities above
    /// come from the watch caches, and a step that needs the password reads the Secrets first
    /// (one that needs only the credentials reads only those).
    password_read: bool,
}

impl Inputs {
    /// Nothing to read: the plan of a paused or claimed object needs no Secret.
    fn none() -> Self {
        Self {
            password: PasswordInput::Unusable(Failure::stalled(Reason::Paused, "")),
            secret_password: None,
            credentials_identity: Err(Failure::stalled(Reason::Paused, "")),
            credentials: None,
            generated: None,
            secret_version: None,
            password_read: true,
        }
    }
}

/// Steps that need the password Secret's contents.
fn needs_password(step: &Step) -> bool {
    matches!(
        step,
        Step::GeneratePassword | Step::RotatePassword | Step::Apply
    )
}

/// Steps that need the credentials: every ECS call, and the reboot intent, which is only written
/// when RebootInstance can follow.
fn needs_credentials(step: &Step) -> bool {
    matches!(
        step,
        Step::Apply | Step::Describe | Step::RecordRebootIntent | Step::Reboot
    )
}

async fn reconcile_inner(
    obj: &VncPassword,
    ctx: &Context,
) -> Result<(Action, &'static str), ReconcileError> {
    let namespace = obj.namespace().ok_or(ReconcileError::Unnamed)?;
    let name = obj.name_any();
    let uid = obj.uid().ok_or(ReconcileError::Unnamed)?;
    if obj.meta().deletion_timestamp.is_some() {
        // Nothing to undo in ECS: a VNC password cannot be "unset".
        return Ok((Action::await_change(), "unchanged"));
    }
    let spec = &obj.spec;
    let previous = obj.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let mut events: Vec<Event> = Vec::new();
    let mut resource_version = obj.resource_version();
    let paused = obj.annotations().get(ANNOTATION_PAUSED).map(String::as_str) == Some("true");
    let force_token = obj
        .annotations()
        .get(ANNOTATION_RECONCILE_REQUESTED_AT)
        .cloned();
    let rotate_token = obj
        .annotations()
        .get(ANNOTATION_ROTATE_REQUESTED_AT)
        .cloned();
    let claimed_by = ctx.claimed_by(obj);
    // Paused, or another VncPassword owns the instance: the plan reads no Secret, so none is read.
    let mut inputs = if paused || claimed_by.is_some() {
        Inputs::none()
    } else {
        ctx.watched.wait_secrets_synced(SECRETS_SYNC_WAIT).await;
        match cached_inputs(ctx, obj, &namespace, &previous) {
            Some(inputs) => inputs,
            None => observe(ctx, obj, &namespace).await?,
        }
    };
    let key_id = ctx.key.id();
    let instance_key = plan::instance_key(spec);
    let mut round = Round {
        cache_behind: ctx.is_behind(&uid, resource_version.as_deref()),
        ..Round::default()
    };
    let mut applied_at: Option<Instant> = None;
    let mut applied_now = false;

    for _ in 0..MAX_STEPS {
        let now = ctx.now();
        let credentials_identity = inputs.credentials_identity.clone();
        let observed = Observed {
            now,
            uid: &uid,
            own_namespace: Some(namespace.as_str()),
            generation: obj.metadata.generation.unwrap_or_default(),
            spec,
            paused,
            force_token: force_token.as_deref(),
            status: &status,
            password: &inputs.password,
            credentials: &credentials_identity,
            key_id: &key_id,
            generated: inputs.generated.as_ref(),
            rotate_token: rotate_token.as_deref(),
            claimed_by: claimed_by
                .as_ref()
                .map(|(ns, name)| (ns.as_str(), name.as_str())),
            round: &round,
            settings: ctx.settings.plan,
            ecs_offset: ctx.ecs_offset(),
        };
        let next_rotation = plan::next_rotation(&observed);
        let step = plan::plan(&observed);
        let stall_key = plan::stall_inputs(&observed);
        tracing::trace!(?step, "planned");
        // Known from the caches so far: read what the step needs, then plan again with it.
        if !inputs.password_read && needs_password(&step) {
            inputs = observe(ctx, obj, &namespace).await?;
            continue;
        }
        if inputs.credentials.is_none()
            && inputs.credentials_identity.is_ok()
            && needs_credentials(&step)
        {
            match credentials(ctx, obj, &namespace).await? {
                Ok((c, id)) => {
                    inputs.credentials = Some(c);
                    inputs.credentials_identity = Ok(id);
                }
                Err(failure) => inputs.credentials_identity = Err(failure),
            }
            continue;
        }
        match step {
            Step::GeneratePassword | Step::RotatePassword => {
                let rotate = step == Step::RotatePassword;
                match write_generated(
                    ctx,
                    obj,
                    &namespace,
                    &uid,
                    &inputs,
                    rotate_token.as_deref(),
                    now,
                    rotate,
                )
                .await?
                {
                    Some((password, secret, generated)) => {
                        inputs.password = PasswordInput::Usable {
                            fingerprint: ctx.key.fingerprint(
                                &spec.region_id,
                                &spec.instance_id,
                                &password,
                            ),
                            secret: secret.clone(),
                        };
                        inputs.secret_version = Some(secret.resource_version.clone());
                        inputs.secret_password = Some(password);
                        inputs.generated = Some(generated);
                        events.push(normal(
                            if rotate {
                                "PasswordRotated"
                            } else {
                                "PasswordGenerated"
                            },
                            format!(
                                "generated a new VNC password into Secret {} (key {})",
                                spec.password_secret_ref.name, spec.password_secret_ref.key
                            ),
                            if rotate {
                                "RotatePassword"
                            } else {
                                "GeneratePassword"
                            },
                        ));
                    }
                    // The Secret changed (or appeared) since it was read: its watch event brings
                    // the reconcile that sees it.
                    None => return Ok((Action::requeue(Duration::from_secs(1)), "retry")),
                }
            }
            Step::Apply => {
                let (
                    Some(password),
                    Some(credentials),
                    PasswordInput::Usable {
                        fingerprint,
                        secret,
                    },
                ) = (
                    &inputs.secret_password,
                    &inputs.credentials,
                    &inputs.password,
                )
                else {
                    return Err(ReconcileError::TooManySteps);
                };
                // A worker does not sit out a long queue for this account's quota: the object is
                // looked at again when there is room, and other objects (other accounts, other
                // actions) are served meanwhile.
                let backlog =
                    ctx.ecs
                        .backlog(credentials, &spec.region_id, "ModifyInstanceVncPasswd");
                if backlog > MAX_QUEUE_WAIT {
                    let jitter = backlog.mul_f64(rand::random::<f64>() * 0.2);
                    return Ok((Action::requeue(backlog + jitter), "retry"));
                }
                match ctx
                    .ecs
                    .modify_instance_vnc_passwd(
                        credentials,
                        &spec.region_id,
                        &spec.instance_id,
                        password,
                    )
                    .await
                {
                    Ok(accepted) => {
                        let request_id = accepted.request_id;
                        record::applied(
                            &mut status,
                            record::Apply {
                                fingerprint,
                                secret,
                                instance_key: &instance_key,
                                request_id: &request_id,
                                at: ctx.now(),
                                ecs_time: accepted.server_time,
                                force_token: force_token.as_deref(),
                            },
                        );
                        applied_at = Some(Instant::now());
                        applied_now = true;
                        events.push(normal(
                            "PasswordApplied",
                            format!("ECS accepted the new VNC password for instance {} (RequestId {request_id})", spec.instance_id),
                            "ModifyInstanceVncPasswd",
                        ));
                    }
                    Err(e) => {
                        let failure = ecs_failure(&e, obj, "ModifyInstanceVncPasswd");
                        if failure.is_stalled() {
                            record::stalled(&mut status, stall_key.clone(), now);
                        }
                        round.failure = Some(failure);
                    }
                }
            }
            Step::Record => {
                if let PasswordInput::Usable {
                    fingerprint,
                    secret,
                } = &inputs.password
                {
                    if status
                        .applied_password_fingerprint
                        .as_deref()
                        .and_then(plan::fingerprint_key_id)
                        != Some(key_id.as_str())
                    {
                        tracing::info!(
                            "the fingerprint key changed and the password Secret did not: re-recorded without any ECS call"
                        );
                    }
                    record::identity(&mut status, fingerprint, secret, &instance_key);
                }
            }
            Step::Describe => {
                let Some(credentials) = &inputs.credentials else {
                    return Err(ReconcileError::TooManySteps);
                };
                round.described = true;
                let poll = ctx.settings.plan.poll;
                let fresh_after = applied_at.unwrap_or_else(|| {
                    Instant::now()
                        .checked_sub(poll / 2)
                        .unwrap_or_else(Instant::now)
                });
                match ctx
                    .instances
                    .describe(credentials, &spec.region_id, &spec.instance_id, fresh_after)
                    .await
                {
                    Ok(Some(instance)) => {
                        record::described(&mut status, &instance_key, &instance, ctx.now());
                    }
                    Ok(None) => {
                        let failure = not_described(obj, &status, &instance_key);
                        record::stalled(&mut status, stall_key.clone(), now);
                        round.failure = Some(failure);
                    }
                    Err(e) => {
                        let failure = ecs_failure(&e, obj, "DescribeInstances");
                        if failure.is_stalled() {
                            record::stalled(&mut status, stall_key.clone(), now);
                        }
                        round.failure = Some(failure);
                    }
                }
            }
            Step::RecordRebootIntent => {
                record::reboot_intent(&mut status, now);
                match write_status(
                    ctx,
                    obj,
                    &namespace,
                    &name,
                    &status,
                    resource_version.as_deref(),
                )
                .await
                {
                    Ok(written) => {
                        ctx.wrote(&uid, written.resource_version().as_deref());
                        resource_version = written.resource_version();
                        round.intent_written = true;
                    }
                    Err(ReconcileError::WriteStatus(kube::Error::Api(s))) if s.code == 409 => {
                        // The object changed since it was read: re-read and re-plan, no call.
                        tracing::info!(
                            "the object changed before the reboot intent was recorded; planning again"
                        );
                        return Ok((Action::requeue(Duration::from_millis(500)), "retry"));
                    }
                    Err(e) => return Err(e),
                }
            }
            Step::Reboot => {
                let Some(credentials) = &inputs.credentials else {
                    return Err(ReconcileError::TooManySteps);
                };
                round.reboot_called = true;
                match ctx
                    .ecs
                    .reboot_instance(credentials, &spec.region_id, &spec.instance_id)
                    .await
                {
                    Ok(accepted) => {
                        let request_id = accepted.request_id;
                        record::reboot_accepted(&mut status, &request_id);
                        events.push(normal(
                            Reason::RebootRequested.as_str(),
                            format!("called RebootInstance for instance {} so the new VNC password takes effect (RequestId {request_id})", spec.instance_id),
                            "RebootInstance",
                        ));
                    }
                    Err(e) if decide::reboot_may_have_happened(&e) => {
                        // It may have happened: never call it again for this password; the restart,
                        // if any, shows in the instance's status and StartTime.
                        let _ = ecs_failure(&e, obj, "RebootInstance");
                        events.push(warning(
                            Reason::RebootRequested.as_str(),
                            format!("RebootInstance for instance {} got no clear answer ({}); it is not called again for this password, waiting for a restart", spec.instance_id, decide::summary(&e)),
                            "RebootInstance",
                        ));
                    }
                    Err(e) => {
                        record::reboot_refused(&mut status);
                        round.failure = Some(ecs_failure(&e, obj, "RebootInstance"));
                    }
                }
            }
            Step::Requeue(after) => {
                return Ok((Action::requeue(after), "unchanged"));
            }
            Step::Finish { phase, requeue } => {
                status.next_rotation_time = next_rotation.map(crate::ecs::signer::format_timestamp);
                status.next_reboot_window = match &phase {
                    Phase::WaitingForRestart(decide::Waiting::RebootWindow(next)) => {
                        Some(crate::ecs::signer::format_timestamp(*next))
                    }
                    _ => None,
                };
                let action = requeue_action(ctx, &uid, requeue);
                transition_events(&phase, &previous, spec, applied_now, &mut events);
                let label = result_label(&phase, applied_now);
                finish(
                    ctx,
                    obj,
                    &namespace,
                    &name,
                    &uid,
                    status,
                    &phase,
                    round.reboot_called,
                    events,
                    label,
                )
                .await?;
                return Ok((action, label));
            }
        }
    }
    Err(ReconcileError::TooManySteps)
}

fn requeue_action(ctx: &Context, uid: &str, requeue: Requeue) -> Action {
    match requeue {
        Requeue::AwaitChange => {
            ctx.succeeded(uid);
            Action::await_change()
        }
        Requeue::After(after) => {
            ctx.succeeded(uid);
            Action::requeue(after.max(Duration::from_millis(100)))
        }
        Requeue::Backoff(pace) => {
            let n = ctx.failed(uid);
            Action::requeue(decide::backoff(n, pace, rand::random()))
        }
    }
}

/// Why DescribeInstances did not return the instance. After ModifyInstanceVncPasswd succeeded for
/// it, the instance exists (or did a moment ago): ECS answers an empty list, not an error, to an
/// identity without `ecs:DescribeInstances`.
fn not_described(obj: &VncPassword, status: &VncPasswordStatus, instance_key: &str) -> Failure {
    let spec = &obj.spec;
    if status.applied_instance.as_deref() == Some(instance_key) {
        Failure::stalled(
            Reason::DescribeNotAllowed,
            format!(
                "ModifyInstanceVncPasswd succeeded for instance {} but DescribeInstances does not return it: the credentials probably lack ecs:DescribeInstances (ECS then answers an empty list, not an error), or the instance was released; grant ecs:DescribeInstances in RAM",
                spec.instance_id
            ),
        )
    } else {
        Failure::stalled(
            Reason::InstanceNotFound,
            format!(
                "DescribeInstances does not return instance {} in region {}: check spec.instanceId and spec.regionId",
                spec.instance_id, spec.region_id
            ),
        )
    }
}

/// Events on transitions only, so that a steady state stays quiet.
fn transition_events(
    phase: &Phase,
    previous: &VncPasswordStatus,
    spec: &crate::api::VncPasswordSpec,
    applied_now: bool,
    events: &mut Vec<Event>,
) {
    match phase {
        Phase::Failed {
            failure: Failure::Stalled { reason, message },
            ..
        } if previous
            .condition(condition::STALLED)
            .is_none_or(|c| c.status != "True" || c.reason != reason.as_str()) =>
        {
            events.push(warning(reason.as_str(), message.clone(), "Reconcile"));
        }
        Phase::Ready { how }
            if *how == Reason::Restarted && previous.is_true(condition::REBOOT_REQUIRED) =>
        {
            events.push(normal(
                "RestartObserved",
                format!(
                    "instance {} restarted: the new VNC password is in effect",
                    spec.instance_id
                ),
                "ObserveRestart",
            ));
        }
        Phase::WaitingForRestart(_)
            if !previous.is_true(condition::REBOOT_REQUIRED) || applied_now =>
        {
            let desired = decide::conditions_for(phase, &spec.instance_id);
            let message = desired
                .iter()
                .find(|d| d.type_ == condition::REBOOT_REQUIRED)
                .map(|d| d.message.clone())
                .unwrap_or_default();
            events.push(normal(Reason::RebootRequired.as_str(), message, "Apply"));
        }
        Phase::WaitingForRestart(decide::Waiting::RebootNotObserved(_))
            if previous
                .condition(condition::READY)
                .is_none_or(|c| c.reason != Reason::RebootNotObserved.as_str()) =>
        {
            let desired = decide::conditions_for(phase, &spec.instance_id);
            let message = desired
                .iter()
                .find(|d| d.type_ == condition::READY)
                .map(|d| d.message.clone())
                .unwrap_or_default();
            events.push(warning(
                Reason::RebootNotObserved.as_str(),
                message,
                "ObserveRestart",
            ));
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    name: &str,
    uid: &str,
    mut status: VncPasswordStatus,
    phase: &Phase,
    rebooted_now: bool,
    events: Vec<Event>,
    label: &'static str,
) -> Result<(), ReconcileError> {
    let spec = &obj.spec;
    status.conditions = conditions::merge(
        &status.conditions,
        &decide::conditions_for(phase, &spec.instance_id),
        obj.metadata.generation,
        ctx.now(),
    );
    status.observed_generation = obj.metadata.generation;
    let changed = obj.status.as_ref() != Some(&status);
    if changed {
        if rebooted_now {
            // Tests make the status write right after a RebootInstance fail here.
            fail::fail_point!("status-write-after-reboot", |_| Err(
                ReconcileError::WriteStatus(kube::Error::Api(
                    kube::core::Status::failure("failpoint", "InternalError")
                        .with_code(500)
                        .boxed()
                ))
            ));
        }
        let written = write_status(ctx, obj, namespace, name, &status, None).await?;
        ctx.wrote(uid, written.resource_version().as_deref());
    }
    let reference = obj.object_ref(&());
    let recorder = ctx.recorder();
    for event in events {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(%namespace, %name, error = %e, "could not publish an Event");
        }
    }
    if changed {
        tracing::info!(phase = label, "reconciled");
    } else {
        tracing::debug!(phase = label, "reconciled, nothing changed");
    }
    Ok(())
}

/// Writes the whole status (server-side apply, the controller's field manager). With
/// `precondition`, the write fails with 409 Conflict unless the object still has that
/// resourceVersion.
async fn write_status(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    name: &str,
    status: &VncPasswordStatus,
    precondition: Option<&str>,
) -> Result<VncPassword, ReconcileError> {
    let api: Api<VncPassword> = Api::namespaced(ctx.client.clone(), namespace);
    let mut metadata = json!({"name": name});
    if let Some(rv) = precondition {
        metadata["resourceVersion"] = json!(rv);
    }
    if let Some(uid) = obj.uid() {
        // Never write a status computed for a deleted object onto its namesake.
        metadata["uid"] = json!(uid);
    }
    let patch = json!({
        "apiVersion": "ecsvnc.io/v1alpha1",
        "kind": "VncPassword",
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::WriteStatus)
}

fn normal(reason: &str, note: String, action: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

fn warning(reason: &str, note: String, action: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

/// Logs a failed ECS call with its RequestId (which conditions leave out to stay stable) and says
/// what it means for the object.
fn ecs_failure(error: &crate::ecs::EcsError, obj: &VncPassword, action: &str) -> Failure {
    let failure = decide::failure_from_ecs(error, &obj.spec.region_id, &obj.spec.instance_id);
    tracing::warn!(
        namespace = obj.namespace().as_deref().unwrap_or_default(),
        name = %obj.name_any(),
        action,
        code = error.result_label(),
        request_id = decide::request_id(error).unwrap_or("none"),
        class = error.class().as_str(),
        "ECS call failed"
    );
    failure
}

/// A Secret's data, identity and what says who made it.
struct SecretData {
    data: std::collections::BTreeMap<String, Vec<u8>>,
    uid: String,
    resource_version: String,
    /// uids of its controlling owners.
    controllers: Vec<String>,
    annotations: std::collections::BTreeMap<String, String>,
}

/// Reads the Secret, or `None` when it does not exist.
async fn read_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<SecretData>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| ReconcileError::ReadSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })?;
    Ok(secret.map(|s| {
        let resource_version = s.metadata.resource_version.clone().unwrap_or_default();
        let uid = s.metadata.uid.clone().unwrap_or_default();
        let controllers = s
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.controller == Some(true))
            .map(|o| o.uid)
            .collect();
        let annotations = s.metadata.annotations.clone().unwrap_or_default();
        let mut data: std::collections::BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        // stringData is write-only, but a dry-run or odd client may leave it readable.
        for (k, v) in s.string_data.unwrap_or_default() {
            data.entry(k).or_insert_with(|| v.into_bytes());
        }
        SecretData {
            data,
            uid,
            resource_version,
            controllers,
            annotations,
        }
    }))
}

/// With `generatePassword`: what the password Secret's metadata (`None`: no such Secret) says.
fn generated_secret(
    obj: &VncPassword,
    secret: Option<(&[String], &std::collections::BTreeMap<String, String>)>,
) -> GeneratedSecret {
    match secret {
        None => GeneratedSecret::Missing,
        Some((controllers, _)) if !obj.uid().is_some_and(|uid| controllers.contains(&uid)) => {
            GeneratedSecret::NotOurs
        }
        Some((_, annotations)) => GeneratedSecret::Ours {
            generated_at: annotations
                .get(ANNOTATION_GENERATED_AT)
                .and_then(|t| t.parse().ok()),
            rotate_token: annotations.get(ANNOTATION_ROTATE_TOKEN).cloned(),
        },
    }
}

/// The inputs from the watch caches alone, without any API call: only when the cache shows the
/// password Secret at exactly the uid and resourceVersion the status says was applied to this
/// instance under the current fingerprint key (the same version of a Secret is the same password),
/// and the credentials' identity is known without reading them. `None`: read the Secrets.
///
/// A cache that is behind is harmless here: the Secret's change reaches the cache before the
/// watch event that reconciles the object again.
fn cached_inputs(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    status: &VncPasswordStatus,
) -> Option<Inputs> {
    let spec = &obj.spec;
    let applied = status.applied_secret.as_ref()?;
    let fingerprint = status.applied_password_fingerprint.as_deref()?;
    let key_id = ctx.key.id();
    if applied.name != spec.password_secret_ref.name
        || applied.key != spec.password_secret_ref.key
        || status.applied_instance.as_deref() != Some(plan::instance_key(spec).as_str())
        || plan::fingerprint_key_id(fingerprint) != Some(key_id.as_str())
    {
        return None;
    }
    let secret = ctx.watched.secret(namespace, &applied.name)?;
    let meta = &secret.metadata;
    if meta.uid.as_deref() != Some(applied.uid.as_str())
        || meta.resource_version.as_deref() != Some(applied.resource_version.as_str())
    {
        return None;
    }
    let credentials_identity = match &spec.credentials_secret_ref {
        // Known for certain only once resolved (the ServiceAccount's uid and resourceVersion, the
        // credentials' AccessKeyId); a step that needs the credentials resolves them and plans
        // again with their identity. A plan that needs no credentials does not look at it.
        None if spec.credentials_service_account_ref.is_some() => {
            Ok(format!("serviceaccount:{namespace}/unresolved"))
        }
        // What the chain is (a role, a file), as known without fetching: for a rotated credentials
        // file the fetched identity names the AccessKeyId, and a step that fetches plans again
        // with it.
        None => default_credentials(ctx, namespace).map(|p| format!("default:{}", p.identity())),
        Some(r) => {
            let m = &ctx.watched.secret(namespace, &r.name)?.metadata;
            Ok(secret_credentials_identity(
                m.uid.as_deref().unwrap_or_default(),
                m.resource_version.as_deref().unwrap_or_default(),
            ))
        }
    };
    let controllers: Vec<String> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
        .collect();
    let no_annotations = std::collections::BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&no_annotations);
    Some(Inputs {
        password: PasswordInput::Usable {
            fingerprint: fingerprint.to_string(),
            secret: applied.clone(),
        },
        secret_password: None,
        credentials_identity,
        credentials: None,
        generated: spec
            .generate_password
            .then(|| generated_secret(obj, Some((&controllers, annotations)))),
        secret_version: Some(applied.resource_version.clone()),
        password_read: false,
    })
}

/// Reads the password Secret and the credentials.
async fn observe(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
) -> Result<Inputs, ReconcileError> {
    let secret = read_secret(ctx, namespace, &obj.spec.password_secret_ref.name).await?;
    let generated = obj.spec.generate_password.then(|| {
        generated_secret(
            obj,
            secret
                .as_ref()
                .map(|s| (s.controllers.as_slice(), &s.annotations)),
        )
    });
    let secret_version = secret.as_ref().map(|s| s.resource_version.clone());
    let (password, secret_password) = match password(obj, namespace, secret) {
        Ok((p, secret)) => (
            PasswordInput::Usable {
                fingerprint: ctx
                    .key
                    .fingerprint(&obj.spec.region_id, &obj.spec.instance_id, &p),
                secret,
            },
            Some(p),
        ),
        Err(f) => (PasswordInput::Unusable(f), None),
    };
    let (credentials, credentials_identity) = match credentials(ctx, obj, namespace).await? {
        Ok((c, id)) => (Some(c), Ok(id)),
        Err(failure) => (None, Err(failure)),
    };
    Ok(Inputs {
        password,
        secret_password,
        credentials_identity,
        credentials,
        generated,
        secret_version,
        password_read: true,
    })
}

/// Creates (or, for a rotation, rewrites with the observed resourceVersion as precondition) the
/// password Secret with a new random password. `None` when the Secret changed or appeared
/// meanwhile (nothing written).
#[allow(clippy::too_many_arguments)]
async fn write_generated(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    uid: &str,
    inputs: &Inputs,
    rotate_token: Option<&str>,
    now: jiff::Timestamp,
    rotate: bool,
) -> Result<Option<(Password, AppliedSecret, GeneratedSecret)>, ReconcileError> {
    use k8s_openapi::ByteString;
    use kube::api::{ObjectMeta, PostParams};
    let r = &obj.spec.password_secret_ref;
    let password = Password::generate();
    let generated_at = crate::ecs::signer::format_timestamp(now);
    let mut annotations = std::collections::BTreeMap::from([(
        ANNOTATION_GENERATED_AT.to_string(),
        generated_at.clone(),
    )]);
    if let Some(token) = rotate_token {
        annotations.insert(ANNOTATION_ROTATE_TOKEN.to_string(), token.to_string());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let write_err = |source| ReconcileError::WriteSecret {
        namespace: namespace.to_string(),
        name: r.name.clone(),
        source,
    };
    let written = if rotate {
        let Some(rv) = &inputs.secret_version else {
            return Ok(None);
        };
        let patch = json!({
            "metadata": {"resourceVersion": rv, "annotations": annotations},
            "data": {r.key.clone(): ByteString(password.expose().as_bytes().to_vec())},
        });
        match api
            .patch(&r.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => return Ok(None),
            Err(e) => return Err(write_err(e)),
        }
    } else {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(r.name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(std::collections::BTreeMap::from([
                    (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                    ("ecsvnc.io/vncpassword".to_string(), obj.name_any()),
                ])),
                annotations: Some(annotations),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "ecsvnc.io/v1alpha1".into(),
                        kind: "VncPassword".into(),
                        name: obj.name_any(),
                        uid: uid.to_string(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    },
                ]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(std::collections::BTreeMap::from([(
                r.key.clone(),
                ByteString(password.expose().as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(None),
            Err(e) => return Err(write_err(e)),
        }
    };
    let identity = AppliedSecret {
        name: r.name.clone(),
        key: r.key.clone(),
        uid: written.metadata.uid.clone().unwrap_or_default(),
        resource_version: written
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default(),
    };
    let generated = GeneratedSecret::Ours {
        generated_at: Some(now),
        rotate_token: rotate_token.map(str::to_string),
    };
    Ok(Some((password, identity, generated)))
}

/// The password of the referenced Secret (with the Secret's identity), or why it cannot be used.
fn password(
    obj: &VncPassword,
    namespace: &str,
    secret: Option<SecretData>,
) -> Result<(Password, AppliedSecret), Failure> {
    let r = &obj.spec.password_secret_ref;
    let Some(SecretData {
        data,
        uid,
        resource_version,
        ..
    }) = secret
    else {
        return Err(Failure::stalled(
            Reason::SecretNotFound,
            format!(
                "Secret {} does not exist in namespace {namespace}: create it with the password under key {}",
                r.name, r.key
            ),
        ));
    };
    let Some(bytes) = data.get(&r.key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Err(Failure::stalled(
            Reason::SecretKeyNotFound,
            format!(
                "Secret {} has no key {} (its keys: {}): add it, or set spec.passwordSecretRef.key",
                r.name,
                r.key,
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ),
        ));
    };
    let identity = AppliedSecret {
        name: r.name.clone(),
        key: r.key.clone(),
        uid,
        resource_version,
    };
    Password::parse_bytes(bytes)
        .map(|p| (p, identity))
        .map_err(|e| {
            Failure::stalled(
                Reason::InvalidPassword,
                format!("Secret {} key {}: {e}; update the Secret", r.name, r.key),
            )
        })
}

/// The credentials to use with their identity (the Secret's uid and resourceVersion, or the
/// default AccessKeyId: never a secret), or why none.
async fn credentials(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
) -> Result<Result<(Credentials, String), Failure>, ReconcileError> {
    if let Some(r) = &obj.spec.credentials_service_account_ref {
        if obj.spec.credentials_secret_ref.is_some() {
            // The CRD schema refuses both; an object stored before that rule still gets a clear
            // answer.
            return Ok(Err(Failure::stalled(
                Reason::InvalidSpec,
                "set at most one of credentialsSecretRef and credentialsServiceAccountRef",
            )));
        }
        // Always the object's own namespace: the reference has no namespace field.
        return match ctx
            .settings
            .service_accounts
            .resolve(&ctx.client, namespace, &r.name)
            .await
        {
            Ok(resolved) => Ok(Ok(resolved)),
            Err(ResolveError::Failure(failure)) => Ok(Err(failure)),
            Err(ResolveError::Kube(source)) => Err(ReconcileError::ServiceAccount {
                namespace: namespace.to_string(),
                name: r.name.clone(),
                source,
            }),
        };
    }
    match &obj.spec.credentials_secret_ref {
        None => {
            let provider = match default_credentials(ctx, namespace) {
                Ok(p) => p,
                Err(failure) => return Ok(Err(failure)),
            };
            // Only credentials that have expired without a successful refresh get here. STS
            // refusing the exchange stalls (rechecked like any AuthFailed); anything else (STS or
            // the metadata service unreachable, the token file missing mid-rotation) is retried.
            Ok(match provider.credentials().await {
                // The identity is what the credentials are (an AccessKeyId, a role): stable across
                // refreshes of temporary credentials, new when the credentials file is rotated.
                Ok(c) => {
                    let id = format!("default:{}", provider.identity_of(&c));
                    Ok((c, id))
                }
                Err(e) if e.code.is_some() && !e.transient => {
                    Err(Failure::stalled(Reason::AuthFailed, e.message))
                }
                // A configured credentials (or token) file that cannot be read: retried, since it
                // is read again at every use.
                Err(e) if e.not_found => Err(Failure::retry(
                    Reason::CredentialsNotFound,
                    e.message,
                    crate::controller::decide::Pace::Normal,
                )),
                Err(e) => Err(Failure::retry(
                    Reason::EcsUnavailable,
                    e.message,
                    crate::controller::decide::Pace::Normal,
                )),
            })
        }
        Some(r) => match read_secret(ctx, namespace, &r.name).await? {
            None => Ok(Err(Failure::stalled(
                Reason::CredentialsNotFound,
                format!(
                    "credentials Secret {} does not exist in namespace {namespace}: create it with keys accessKeyId, accessKeySecret (and securityToken for STS)",
                    r.name
                ),
            ))),
            Some(SecretData {
                data,
                uid,
                resource_version,
                ..
            }) => Ok(tenancy::from_secret_data(&r.name, |k| data.get(k).cloned())
                .map(|c| (c, secret_credentials_identity(&uid, &resource_version)))),
        },
    }
}

/// The controller's own credentials for this namespace, or why not.
fn default_credentials(
    ctx: &Context,
    namespace: &str,
) -> Result<crate::ecs::CredentialsProvider, Failure> {
    tenancy::default_for(
        namespace,
        &ctx.settings.allowed_default_credentials,
        ctx.settings.default_credentials.as_ref(),
    )
}

/// The identity of credentials read from a Secret: its uid and resourceVersion.
fn secret_credentials_identity(uid: &str, resource_version: &str) -> String {
    format!("secret:{uid}:{resource_version}")
}
