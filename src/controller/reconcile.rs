//! One reconcile of one VncPassword: read its Secret, decide, call ECS only when needed, write the
//! status and Events. Decisions live in `decide`; this file is the I/O around them.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::api::{
    ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT, FIELD_MANAGER, RebootPolicy, VncPassword,
    VncPasswordStatus, condition, reason,
};
use crate::controller::conditions;
use crate::controller::context::Context;
use crate::controller::decide::{self, Failure, Phase};
use crate::controller::tenancy;
use crate::ecs::types::parse_start_time;
use crate::ecs::{Credentials, Instance};
use crate::password::VncPassword as Password;

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
    #[error("writing the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("the object has no namespace or name")]
    Unnamed,
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
        Phase::WaitingForRestart { .. } => "reboot_pending",
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
    let result = reconcile_inner(&obj, &ctx).instrument(span).await;
    let label = match &result {
        Ok((_, label)) => *label,
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconcile_finished(label, started.elapsed());
    result.map(|(action, _)| action)
}

async fn reconcile_inner(
    obj: &VncPassword,
    ctx: &Context,
) -> Result<(Action, &'static str), ReconcileError> {
    let namespace = obj.namespace().ok_or(ReconcileError::Unnamed)?;
    let name = obj.name_any();
    if obj.meta().deletion_timestamp.is_some() {
        // Nothing to undo in ECS: a VNC password cannot be "unset".
        return Ok((Action::await_change(), "unchanged"));
    }
    let object_key = (namespace.clone(), name.clone());
    let previous = obj.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let mut events: Vec<Event> = Vec::new();
    let spec = &obj.spec;

    let (phase, applied_now) =
        if obj.annotations().get(ANNOTATION_PAUSED).map(String::as_str) == Some("true") {
            (Phase::Paused, false)
        } else {
            drive(obj, ctx, &namespace, &mut status, &mut events).await?
        };

    // Requeue: stalled waits for a change; transient failures back off per object.
    let action = match &phase {
        Phase::Paused => Action::await_change(),
        Phase::Ready { .. } => {
            ctx.succeeded(&object_key);
            ctx.forget_stall(&object_key);
            Action::await_change()
        }
        Phase::Failed {
            failure: Failure::Stalled { .. },
            ..
        } => {
            ctx.succeeded(&object_key);
            Action::await_change()
        }
        Phase::Failed {
            failure: Failure::Retry { throttled, .. },
            ..
        } => {
            let n = ctx.failed(&object_key);
            Action::requeue(decide::backoff(n, *throttled, rand::random()))
        }
        Phase::WaitingForRestart { .. } => {
            ctx.succeeded(&object_key);
            ctx.forget_stall(&object_key);
            Action::requeue(ctx.settings.reboot_poll_interval)
        }
    };

    // Events on transitions only, so that a steady state stays quiet.
    match &phase {
        Phase::Failed {
            failure: Failure::Stalled { reason, message },
            ..
        } if previous
            .condition(condition::STALLED)
            .is_none_or(|c| c.status != "True" || c.reason != *reason) =>
        {
            events.push(warning(reason, message.clone(), "Reconcile"));
        }
        Phase::Ready { how }
            if *how == reason::RESTARTED && previous.is_true(condition::REBOOT_REQUIRED) =>
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
        Phase::WaitingForRestart { message, .. }
            if !previous.is_true(condition::REBOOT_REQUIRED) || applied_now =>
        {
            events.push(normal(reason::REBOOT_REQUIRED, message.clone(), "Apply"));
        }
        _ => {}
    }

    let now = jiff::Timestamp::now();
    let desired = conditions::merge(
        &status.conditions,
        &decide::conditions_for(&phase, &spec.instance_id),
        obj.metadata.generation,
        now,
    );
    status.conditions = desired;
    status.observed_generation = obj.metadata.generation;
    let changed = obj.status.as_ref() != Some(&status);
    if changed {
        let api: Api<VncPassword> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": "ecsvnc.io/v1alpha1",
            "kind": "VncPassword",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(ReconcileError::WriteStatus)?;
    }
    let reference = obj.object_ref(&());
    for event in events {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%namespace, %name, error = %e, "could not publish an Event");
        }
    }
    if changed || applied_now {
        tracing::info!(phase = result_label(&phase, applied_now), "reconciled");
    } else {
        tracing::debug!(
            phase = result_label(&phase, applied_now),
            "reconciled, nothing changed"
        );
    }
    Ok((action, result_label(&phase, applied_now)))
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

/// A Secret's data and resourceVersion.
struct SecretData {
    data: std::collections::BTreeMap<String, Vec<u8>>,
    resource_version: String,
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
            resource_version,
        }
    }))
}

/// The password of the referenced Secret (with the Secret's resourceVersion), or why it cannot be
/// used.
async fn password(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
) -> Result<Result<(Password, String), Failure>, ReconcileError> {
    let r = &obj.spec.password_secret_ref;
    let Some(SecretData {
        data,
        resource_version,
    }) = read_secret(ctx, namespace, &r.name).await?
    else {
        return Ok(Err(Failure::stalled(
            reason::SECRET_NOT_FOUND,
            format!(
                "Secret {} does not exist in namespace {namespace}: create it with the password under key {}",
                r.name, r.key
            ),
        )));
    };
    let Some(bytes) = data.get(&r.key) else {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return Ok(Err(Failure::stalled(
            reason::SECRET_KEY_NOT_FOUND,
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
        )));
    };
    Ok(Password::parse_bytes(bytes)
        .map(|p| (p, resource_version))
        .map_err(|e| {
            Failure::stalled(
                reason::INVALID_PASSWORD,
                format!("Secret {} key {}: {e}; update the Secret", r.name, r.key),
            )
        }))
}

/// The credentials to use (with the resourceVersion of their Secret, or `default`), or why none.
async fn credentials(
    ctx: &Context,
    obj: &VncPassword,
    namespace: &str,
) -> Result<Result<(Credentials, String), Failure>, ReconcileError> {
    match &obj.spec.credentials_secret_ref {
        None => Ok(tenancy::default_for(
            namespace,
            &ctx.settings.allowed_default_credentials,
            ctx.settings.default_credentials.as_ref(),
        )
        .map(|c| (c, "default".to_string()))),
        Some(r) => match read_secret(ctx, namespace, &r.name).await? {
            None => Ok(Err(Failure::stalled(
                reason::CREDENTIALS_NOT_FOUND,
                format!(
                    "credentials Secret {} does not exist in namespace {namespace}: create it with keys accessKeyId, accessKeySecret (and securityToken for STS)",
                    r.name
                ),
            ))),
            Some(SecretData {
                data,
                resource_version,
            }) => Ok(tenancy::from_secret_data(&r.name, |k| data.get(k).cloned())
                .map(|c| (c, resource_version))),
        },
    }
}

/// Does the work: validate, apply when needed, observe the instance, reboot when asked.
/// Returns the phase and whether a password was applied in this reconcile.
async fn drive(
    obj: &VncPassword,
    ctx: &Context,
    namespace: &str,
    status: &mut VncPasswordStatus,
    events: &mut Vec<Event>,
) -> Result<(Phase, bool), ReconcileError> {
    let spec = &obj.spec;
    let (region, instance_id) = (spec.region_id.as_str(), spec.instance_id.as_str());
    let fail = |failure: Failure, applied: bool| Ok((Phase::Failed { failure, applied }, false));

    let (password, password_version) = match password(ctx, obj, namespace).await? {
        Ok(p) => p,
        Err(f) => return fail(f, false),
    };
    let (credentials, credentials_version) = match credentials(ctx, obj, namespace).await? {
        Ok(c) => c,
        Err(f) => return fail(f, false),
    };
    // ECS refused these very inputs before, with an answer only a person can change: no new call
    // until the spec, a referenced Secret or the force annotation changes.
    let inputs = format!(
        "{}|{password_version}|{credentials_version}|{:?}",
        obj.metadata.generation.unwrap_or_default(),
        obj.annotations().get(ANNOTATION_RECONCILE_REQUESTED_AT)
    );
    let object_key = (namespace.to_string(), obj.name_any());
    if let Some((failure, applied)) = ctx.stalled_on(&object_key, &inputs) {
        return fail(failure, applied);
    }
    let fail = |failure: Failure, applied: bool| {
        if matches!(failure, Failure::Stalled { .. }) {
            ctx.remember_stall(&object_key, &inputs, &failure, applied);
        } else {
            ctx.forget_stall(&object_key);
        }
        Ok((Phase::Failed { failure, applied }, false))
    };
    let fingerprint = ctx.key.fingerprint(region, instance_id, &password);
    let requested = obj
        .annotations()
        .get(ANNOTATION_RECONCILE_REQUESTED_AT)
        .cloned();
    let forced = requested.is_some() && requested != status.last_handled_reconcile_at;
    let mut applied_now = false;

    if status.applied_password_fingerprint.as_deref() != Some(fingerprint.as_str()) || forced {
        match ctx
            .ecs
            .modify_instance_vnc_passwd(&credentials, region, instance_id, &password)
            .await
        {
            Ok(request_id) => {
                applied_now = true;
                status.applied_password_fingerprint = Some(fingerprint);
                status.last_applied_time =
                    Some(crate::ecs::signer::format_timestamp(jiff::Timestamp::now()));
                status.last_request_id = Some(request_id.clone());
                status.start_time_at_apply = None;
                status.reboot_requested_time = None;
                // Whether this password needs a restart is not known yet.
                status
                    .conditions
                    .retain(|c| c.type_ != condition::REBOOT_REQUIRED);
                if requested.is_some() {
                    status.last_handled_reconcile_at = requested;
                }
                events.push(normal(
                    "PasswordApplied",
                    format!("ECS accepted the new VNC password for instance {instance_id} (RequestId {request_id})"),
                    "ModifyInstanceVncPasswd",
                ));
            }
            Err(e) => return fail(ecs_failure(&e, obj, "ModifyInstanceVncPasswd"), false),
        }
    }

    // From here the Secret's password is applied.
    let rebooted_already = status
        .condition(condition::REBOOT_REQUIRED)
        .is_some_and(|c| c.status == "False");
    if !applied_now && status.io_optimized == Some(true) {
        return Ok((
            Phase::Ready {
                how: reason::IO_OPTIMIZED,
            },
            false,
        ));
    }
    if !applied_now && status.io_optimized == Some(false) && rebooted_already {
        return Ok((
            Phase::Ready {
                how: reason::RESTARTED,
            },
            false,
        ));
    }

    let fresh_after = if applied_now {
        Instant::now()
    } else {
        Instant::now()
            .checked_sub(ctx.settings.reboot_poll_interval / 2)
            .unwrap_or_else(Instant::now)
    };
    let instance = match ctx
        .instances
        .describe(&credentials, region, instance_id, fresh_after)
        .await
    {
        Ok(Some(i)) => i,
        Ok(None) => {
            return fail(
                Failure::stalled(
                    reason::INSTANCE_NOT_FOUND,
                    format!(
                        "DescribeInstances does not return instance {instance_id} in region {region}: check spec.instanceId and spec.regionId"
                    ),
                ),
                true,
            );
        }
        Err(e) => return fail(ecs_failure(&e, obj, "DescribeInstances"), true),
    };
    status.io_optimized = Some(instance.io_optimized);
    status.instance_status = Some(instance.status.clone()).filter(|s| !s.is_empty());
    if applied_now {
        status.start_time_at_apply = instance.start_time.clone();
    }
    if instance.io_optimized {
        return Ok((
            Phase::Ready {
                how: reason::IO_OPTIMIZED,
            },
            applied_now,
        ));
    }

    let applied_at = status
        .last_applied_time
        .as_deref()
        .and_then(|t| t.parse().ok());
    let baseline = status
        .start_time_at_apply
        .as_deref()
        .and_then(parse_start_time);
    if let Some(applied_at) = applied_at
        && decide::restarted_since_apply(applied_at, baseline, instance.started_at())
    {
        return Ok((
            Phase::Ready {
                how: reason::RESTARTED,
            },
            applied_now,
        ));
    }
    Ok((
        waiting_for_restart(obj, ctx, &credentials, &instance, status, events).await,
        applied_now,
    ))
}

/// The instance must restart; with `rebootPolicy: Automatic`, ask for it once.
async fn waiting_for_restart(
    obj: &VncPassword,
    ctx: &Context,
    credentials: &Credentials,
    instance: &Instance,
    status: &mut VncPasswordStatus,
    events: &mut Vec<Event>,
) -> Phase {
    let spec = &obj.spec;
    let id = spec.instance_id.as_str();
    let manual = || Phase::WaitingForRestart {
        reboot_reason: reason::REBOOT_REQUIRED,
        message: format!(
            "instance {id} is not I/O-optimized: the new password takes effect after it restarts (console, or RebootInstance; or set rebootPolicy: Automatic)"
        ),
    };
    if spec.reboot_policy == RebootPolicy::Manual {
        return manual();
    }
    if let Some(at) = &status.reboot_requested_time {
        return Phase::WaitingForRestart {
            reboot_reason: reason::REBOOT_REQUESTED,
            message: format!(
                "RebootInstance was called for instance {id} at {at}; waiting for it to start again"
            ),
        };
    }
    match instance.status.as_str() {
        "Running" => {}
        "Stopped" => {
            return Phase::WaitingForRestart {
                reboot_reason: reason::REBOOT_REQUIRED,
                message: format!(
                    "instance {id} is Stopped: the new password takes effect when it is started (the controller does not start stopped instances)"
                ),
            };
        }
        other => {
            return Phase::Failed {
                failure: Failure::Retry {
                    reason: reason::INCORRECT_INSTANCE_STATUS,
                    message: format!(
                        "instance {id} is {other}; RebootInstance needs it Running, retrying with backoff"
                    ),
                    throttled: false,
                },
                applied: true,
            };
        }
    }
    let requested_at = crate::ecs::signer::format_timestamp(jiff::Timestamp::now());
    match ctx
        .ecs
        .reboot_instance(credentials, &spec.region_id, id)
        .await
    {
        Ok(request_id) => {
            status.reboot_requested_time = Some(requested_at.clone());
            status.last_request_id = Some(request_id.clone());
            events.push(normal(
                reason::REBOOT_REQUESTED,
                format!("called RebootInstance for instance {id} so the new VNC password takes effect (RequestId {request_id})"),
                "RebootInstance",
            ));
            Phase::WaitingForRestart {
                reboot_reason: reason::REBOOT_REQUESTED,
                message: format!(
                    "RebootInstance was called for instance {id} at {requested_at}; waiting for it to start again"
                ),
            }
        }
        Err(e) => match ecs_failure(&e, obj, "RebootInstance") {
            // No answer or a 5xx: the reboot may have happened. Never reboot twice; the restart,
            // if any, will be seen in StartTime.
            Failure::Retry {
                reason: reason::ECS_UNAVAILABLE,
                message,
                ..
            } => {
                status.reboot_requested_time = Some(requested_at);
                Phase::WaitingForRestart {
                    reboot_reason: reason::REBOOT_REQUESTED,
                    message: format!(
                        "RebootInstance for instance {id} got no clear answer ({message}); not calling it again, waiting for a restart"
                    ),
                }
            }
            failure => Phase::Failed {
                failure,
                applied: true,
            },
        },
    }
}
