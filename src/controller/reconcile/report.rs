//! record: the end of a reconcile — conditions merged into the working status, one status write
//! when it changed, Events on transitions only — and the status writes that carry preconditions.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use crate::api::{FIELD_MANAGER, Reason, VncPassword, VncPasswordStatus, condition};
use crate::controller::conditions;
use crate::controller::context::Context;
use crate::controller::decide::{self, Failure, Phase};

use super::ReconcileError;

/// Why DescribeInstances did not return the instance. After ModifyInstanceVncPasswd succeeded for
/// it, the instance exists (or did a moment ago): ECS answers an empty list, not an error, to an
/// identity without `ecs:DescribeInstances`.
pub(super) fn not_described(
    obj: &VncPassword,
    status: &VncPasswordStatus,
    instance_key: &str,
) -> Failure {
    let spec = &obj.spec;
    if status.applied.instance.as_deref() == Some(instance_key) {
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

/// Warning Events for deprecated names the object uses: the annotation once per token it handled
/// (when the token is recorded), each deprecated spec field once per generation.
pub(super) fn deprecations(
    obj: &VncPassword,
    previous: &VncPasswordStatus,
    status: &VncPasswordStatus,
    force_token_deprecated: bool,
    events: &mut Vec<Event>,
) {
    let handled = status.force_apply_token();
    if force_token_deprecated && handled.is_some() && handled != previous.force_apply_token() {
        events.push(warning(
            "DeprecatedAnnotation",
            format!(
                "the annotation {} is deprecated: use {} (the token {} was handled)",
                crate::api::ANNOTATION_RECONCILE_REQUESTED_AT,
                crate::api::ANNOTATION_FORCE_APPLY_REQUESTED_AT,
                handled.unwrap_or_default()
            ),
            "Reconcile",
        ));
    }
    let generation_seen = previous.observed_generation.is_some()
        && previous.observed_generation == obj.metadata.generation;
    if !generation_seen {
        for (old, new) in obj.spec.deprecated_fields() {
            events.push(warning(
                "DeprecatedField",
                format!("spec.{old} is deprecated: use spec.{new} (the same meaning)"),
                "Reconcile",
            ));
        }
    }
}

/// Events on transitions only, so that a steady state stays quiet.
pub(super) fn transition_events(
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
                Reason::Restarted.as_str(),
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

/// What the final status write of a reconcile came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// Written, or nothing had changed.
    Done,
    /// Refused: someone else wrote the status since this reconcile read it (another replica that
    /// leads now, or an older controller's late write from before): nothing of this reconcile's
    /// view was written over theirs.
    Fenced,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn finish(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    name: &str,
    uid: &str,
    mut status: VncPasswordStatus,
    base: (&VncPasswordStatus, Option<&str>),
    phase: &Phase,
    rebooted_now: bool,
    events: Vec<Event>,
    label: &'static str,
) -> Result<Written, ReconcileError> {
    let spec = &obj.spec;
    status.conditions = conditions::merge(
        &status.conditions,
        &decide::conditions_for(phase, &spec.instance_id),
        obj.metadata.generation,
        ctx.now(),
    );
    status.observed_generation = obj.metadata.generation;
    // A status in an earlier version's shape is written anew (grouped) even when unchanged.
    let changed = base.0 != &status || status.legacy;
    status.legacy = false;
    let mut outcome = Written::Done;
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
        match write_fenced(ctx, obj, namespace, name, &status, base).await? {
            Some(written) => ctx.wrote(uid, written.resource_version().as_deref()),
            None => {
                tracing::info!(
                    "the status changed since this reconcile read it (another writer); not overwritten, looking again"
                );
                outcome = Written::Fenced;
            }
        }
    }
    let reference = obj.object_ref(&());
    let recorder = ctx.recorder();
    for event in events {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(%namespace, %name, error = %e, "could not publish an Event");
        }
    }
    if changed && outcome == Written::Done {
        tracing::info!(phase = label, "reconciled");
    } else {
        tracing::debug!(phase = label, "reconciled, nothing changed");
    }
    Ok(outcome)
}

/// The status write every reconcile ends with, fenced: it carries the resourceVersion the status
/// was read (or last written by this reconcile) at, so the API server refuses it when anyone wrote
/// since. A late write of a deposed leader can thus never erase what the new leader recorded (a
/// reboot intent, a newer apply). When only the object's metadata or spec changed meanwhile (its
/// status is still the one this reconcile started from) it is written once more at the new
/// resourceVersion. `None`: refused, someone else wrote the status.
async fn write_fenced(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    name: &str,
    status: &VncPasswordStatus,
    (base, precondition): (&VncPasswordStatus, Option<&str>),
) -> Result<Option<VncPassword>, ReconcileError> {
    let conflict = |e: &ReconcileError| matches!(e, ReconcileError::WriteStatus(kube::Error::Api(s)) if s.code == 409);
    match write_status(ctx, obj, namespace, name, status, precondition).await {
        Ok(written) => return Ok(Some(written)),
        Err(e) if conflict(&e) => {}
        Err(e) => return Err(e),
    }
    let api: Api<VncPassword> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(now) = api
        .get_opt(name)
        .await
        .map_err(ReconcileError::WriteStatus)?
    else {
        return Ok(None);
    };
    let same_object = now.metadata.uid == obj.metadata.uid;
    if !same_object || now.status.as_ref().unwrap_or(&Default::default()) != base {
        return Ok(None);
    }
    match write_status(
        ctx,
        obj,
        namespace,
        name,
        status,
        now.resource_version().as_deref(),
    )
    .await
    {
        Ok(written) => Ok(Some(written)),
        Err(e) if conflict(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the whole status (server-side apply, the controller's field manager). With
/// `precondition`, the write fails with 409 Conflict unless the object still has that
/// resourceVersion.
/// A status apply, serialized straight from the status (a `serde_json::Value` of it would be a
/// tree of maps, held by each of `--concurrency` writes in flight).
#[derive(Debug, serde::Serialize)]
struct StatusApply<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: ApplyMeta<'a>,
    status: &'a VncPasswordStatus,
}

#[derive(Debug, serde::Serialize)]
struct ApplyMeta<'a> {
    name: &'a str,
    /// The precondition: the write fails unless the object is still at this version.
    #[serde(rename = "resourceVersion", skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
}

pub(super) async fn write_status(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
    name: &str,
    status: &VncPasswordStatus,
    precondition: Option<&str>,
) -> Result<VncPassword, ReconcileError> {
    let api: Api<VncPassword> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = StatusApply {
        api_version: "ecsvnc.io/v1alpha1",
        kind: "VncPassword",
        metadata: ApplyMeta {
            name,
            resource_version: precondition,
            // Never write a status computed for a deleted object onto its namesake.
            uid: obj.metadata.uid.as_deref(),
        },
        status,
    };
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(ReconcileError::WriteStatus)
}

pub(super) fn normal(reason: &str, note: String, action: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    }
}

pub(super) fn warning(reason: &str, note: String, action: &str) -> Event {
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
pub(super) fn ecs_failure(
    error: &crate::ecs::EcsError,
    obj: &VncPassword,
    action: &str,
) -> Failure {
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
