//! act: one function per planned [`Step`], each doing that step's I/O and recording its outcome in
//! the working status (with the pure functions of `record`). The order that makes the reboot
//! at-most-once is visible here: [`Run::record_reboot_intent`] writes the intent with the object's
//! resourceVersion as precondition, and only a reconcile whose own intent write succeeded reaches
//! [`Run::reboot`].

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::{
    ANNOTATION_GENERATED_AT, ANNOTATION_OWNER_UID, ANNOTATION_PREVIOUS_IN_EFFECT,
    ANNOTATION_ROTATE_TOKEN, AppliedSecret, LABEL_MANAGED_BY, LABEL_VNCPASSWORD, MANAGED_BY,
    PREVIOUS_KEY, Reason, SecretDeletionPolicy, VncPassword,
};
use crate::controller::decide;
use crate::controller::plan::{self, GeneratedSecret, PasswordInput};
use crate::controller::record;
use crate::password::VncPassword as Password;

use super::report::{ecs_failure, normal, not_described, warning, write_status};
use super::{Flow, ReconcileError, Run};

/// The longest a reconcile waits for a slot of the account's ECS quota before it gives its worker
/// up and looks again later.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The longest a reboot intent is recorded ahead of its RebootInstance slot. Short, since an
/// intent recorded and not sent (the process killed meanwhile) costs that instance its reboot: a
/// slot further off is not written for; the object comes back for it.
const REBOOT_LEAD: Duration = Duration::from_secs(1);

impl Run<'_> {
    /// `passwordGeneration`: creates the password Secret with a new random password, or (`rotate`)
    /// rewrites the one this object created, with its resourceVersion as precondition.
    pub(super) async fn generate_password(&mut self, rotate: bool) -> Result<Flow, ReconcileError> {
        let now = self.ctx.now();
        let written = write_generated(self, now, rotate).await?;
        let Some((password, secret, generated)) = written else {
            // The Secret changed (or appeared) since it was read: its watch event brings the
            // reconcile that sees it.
            return Ok(Flow::Done(Action::requeue(Duration::from_secs(1)), "retry"));
        };
        let spec = &self.obj.spec;
        self.inputs.password = PasswordInput::Usable {
            fingerprint: self
                .ctx
                .key
                .fingerprint(&spec.region_id, &spec.instance_id, &password),
            secret: secret.clone(),
        };
        self.inputs.secret_version = Some(secret.resource_version.clone());
        self.inputs.secret_password = Some(password);
        self.inputs.generated = Some(generated);
        if let Some(token) = &self.rotate_token {
            // Echoed like the force token: the rotation this token asked for is made.
            self.status.applied.rotate_token = Some(token.clone());
        }
        let (reason, action) = if rotate {
            ("PasswordRotated", "RotatePassword")
        } else {
            ("PasswordGenerated", "GeneratePassword")
        };
        self.events.push(normal(
            reason,
            format!(
                "generated a new VNC password into Secret {} (key {})",
                spec.password_secret_ref.name, spec.password_secret_ref.key
            ),
            action,
        ));
        Ok(Flow::Next)
    }

    /// `passwordGeneration`: the Secret the controller created gets the ownership its
    /// `secretDeletionPolicy` says, with its resourceVersion as precondition (a merge patch of its
    /// metadata only: the password is untouched, so the next plan only records the new version).
    pub(super) async fn set_secret_ownership(&mut self) -> Result<Flow, ReconcileError> {
        let r = &self.obj.spec.password_secret_ref;
        let Some(rv) = self.inputs.secret_version.clone() else {
            return Err(ReconcileError::TooManySteps);
        };
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let write_err = |source| ReconcileError::WriteSecret {
            namespace: self.namespace.clone(),
            name: r.name.clone(),
            source,
        };
        let current = match api.get_opt(&r.name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(Flow::Done(Action::requeue(Duration::from_secs(1)), "retry")),
            Err(e) => return Err(write_err(e)),
        };
        let delete = secret_deletion_policy(self.obj) == SecretDeletionPolicy::Delete;
        let mut owners: Vec<_> = current
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.uid != self.uid)
            .collect();
        if delete {
            owners.push(owner_reference(self.obj, &self.uid));
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": rv,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_VNCPASSWORD: self.name},
                "annotations": {
                    ANNOTATION_OWNER_UID: self.uid,
                    crate::api::ANNOTATION_INSTANCE: instance_annotation(&self.obj.spec),
                },
                "ownerReferences": if owners.is_empty() { serde_json::Value::Null } else { json!(owners) },
            },
        });
        let Some(written) = patch_if_unchanged(&api, &self.namespace, &r.name, &patch).await?
        else {
            return Ok(Flow::Done(Action::requeue(Duration::from_secs(1)), "retry"));
        };
        let version = written.metadata.resource_version.unwrap_or_default();
        if let PasswordInput::Usable { secret, .. } = &mut self.inputs.password {
            secret.resource_version = version.clone();
        }
        self.inputs.secret_version = Some(version);
        if let Some(GeneratedSecret::Ours {
            owner_reference,
            adopt,
            ..
        }) = &mut self.inputs.generated
        {
            *owner_reference = delete;
            *adopt = false;
        }
        tracing::info!(
            secret = %r.name,
            owner_reference = delete,
            "gave the generated Secret the ownership its secretDeletionPolicy says"
        );
        Ok(Flow::Next)
    }

    /// The rotated password is in effect: the key `previous` and its annotation leave the Secret
    /// (with its resourceVersion as precondition). The Secret's new version holds the same
    /// password, so the next plan only records it.
    pub(super) async fn forget_previous(&mut self) -> Result<Flow, ReconcileError> {
        let r = &self.obj.spec.password_secret_ref;
        let Some(rv) = self.inputs.secret_version.clone() else {
            return Err(ReconcileError::TooManySteps);
        };
        let patch = json!({
            "metadata": {"resourceVersion": rv, "annotations": {ANNOTATION_PREVIOUS_IN_EFFECT: null}},
            "data": {PREVIOUS_KEY: null},
        });
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let Some(written) = patch_if_unchanged(&api, &self.namespace, &r.name, &patch).await?
        else {
            return Ok(Flow::Done(Action::requeue(Duration::from_secs(1)), "retry"));
        };
        let version = written.metadata.resource_version.unwrap_or_default();
        if let PasswordInput::Usable { secret, .. } = &mut self.inputs.password {
            secret.resource_version = version.clone();
        }
        self.inputs.secret_version = Some(version);
        if let Some(GeneratedSecret::Ours { previous_kept, .. }) = &mut self.inputs.generated {
            *previous_kept = false;
        }
        self.events.push(normal(
            "PreviousPasswordRemoved",
            format!(
                "the rotated VNC password is in effect on instance {}: removed the key {PREVIOUS_KEY} from Secret {}",
                self.obj.spec.instance_id, r.name
            ),
            "ForgetPrevious",
        ));
        Ok(Flow::Next)
    }

    /// ModifyInstanceVncPasswd. A worker does not sit out a long queue for the account's quota:
    /// the object is looked at again when there is room, and other objects are served meanwhile.
    pub(super) async fn apply(&mut self) -> Result<Flow, ReconcileError> {
        let (
            Some(password),
            Some(credentials),
            PasswordInput::Usable {
                fingerprint,
                secret,
            },
        ) = (
            &self.inputs.secret_password,
            &self.inputs.credentials,
            &self.inputs.password,
        )
        else {
            return Err(ReconcileError::TooManySteps);
        };
        let spec = &self.obj.spec;
        let ctx = self.ctx;
        let backlog = ctx
            .ecs
            .backlog(credentials, &spec.region_id, "ModifyInstanceVncPasswd");
        if backlog > MAX_QUEUE_WAIT {
            let jitter = backlog.mul_f64(rand::random::<f64>() * 0.2);
            return Ok(Flow::Done(Action::requeue(backlog + jitter), "retry"));
        }
        match ctx
            .ecs
            .modify_instance_vnc_passwd(credentials, &spec.region_id, &spec.instance_id, password)
            .await
        {
            Ok(accepted) => {
                let request_id = accepted.request_id;
                record::applied(
                    &mut self.status,
                    record::Apply {
                        fingerprint,
                        secret,
                        instance_key: &self.instance_key,
                        request_id: &request_id,
                        at: ctx.now(),
                        ecs_time: accepted.server_time,
                        force_token: self.force_token.as_deref(),
                    },
                );
                let proof = self.access_proof();
                record::proved_access(&mut self.status, proof);
                self.applied_at = Some(Instant::now());
                ctx.applied_now(&self.uid);
                self.applied_now = true;
                // Whatever another object applied before, the instance holds ours now.
                self.overwritten = false;
                self.events.push(normal(
                    Reason::Applied.as_str(),
                    format!(
                        "ECS accepted the new VNC password for instance {} (RequestId {request_id})",
                        spec.instance_id
                    ),
                    "ModifyInstanceVncPasswd",
                ));
            }
            Err(e) => self.ecs_refused(&e, "ModifyInstanceVncPasswd"),
        }
        Ok(Flow::Next)
    }

    /// The applied password is the Secret's: the fingerprint under the current key and the Secret's
    /// current identity are recorded. No ECS call.
    pub(super) fn record_identity(&mut self) {
        let PasswordInput::Usable {
            fingerprint,
            secret,
        } = &self.inputs.password
        else {
            return;
        };
        if self
            .status
            .applied
            .fingerprint
            .as_deref()
            .and_then(plan::fingerprint_key_id)
            != Some(self.key_id.as_str())
        {
            tracing::info!(
                "the fingerprint key changed and the password Secret did not: re-recorded without any ECS call"
            );
        }
        record::identity(&mut self.status, fingerprint, secret, &self.instance_key);
        // A new key: the proof is made anew too (the old one no longer verifies).
        if self.status.applied.access_proof.is_some() {
            let proof = self.access_proof();
            record::proved_access(&mut self.status, proof);
        }
    }

    /// DescribeInstances (batched and shared, see `instances`): an answer launched after this
    /// term's last apply of the object, and at most half a poll interval old.
    pub(super) async fn describe(&mut self) -> Result<Flow, ReconcileError> {
        let Some(credentials) = &self.inputs.credentials else {
            return Err(ReconcileError::TooManySteps);
        };
        let ctx = self.ctx;
        let spec = &self.obj.spec;
        if !self.applied_now {
            // A worker does not wait out the account's DescribeInstances quota: the object is
            // looked at again when the bucket has room. (Right after an apply it waits, so the
            // apply is recorded with what followed it.)
            let backlog = ctx
                .ecs
                .backlog(credentials, &spec.region_id, "DescribeInstances");
            if backlog > MAX_QUEUE_WAIT {
                let jitter = backlog.mul_f64(rand::random::<f64>() * 0.2);
                return Ok(Flow::Done(Action::requeue(backlog + jitter), "retry"));
            }
        }
        self.round.described = true;
        // An answer counts only when ECS gave it after the apply it judges: a look from before it
        // (a state between two restarts, say) would make a restart of the past look like one after
        // the apply. Otherwise it may be half a poll interval old, shared with other objects.
        let poll = ctx.settings.plan.poll;
        let recent = Instant::now()
            .checked_sub(poll / 2)
            .unwrap_or_else(Instant::now);
        let fresh_after = [self.applied_at, ctx.applied_at(&self.uid), Some(recent)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(recent);
        match ctx
            .instances
            .describe(credentials, &spec.region_id, &spec.instance_id, fresh_after)
            .await
        {
            Ok(Some(instance)) => {
                record::described(&mut self.status, &self.instance_key, &instance, ctx.now());
                // Credentials shared by several namespaces are not this object's own: seeing the
                // instance with them proves access only when the instance is tagged for it.
                let own = !self.shared_credentials()
                    || instance.tags.get(crate::controller::tenancy::NAMESPACE_TAG)
                        == Some(&self.namespace);
                if own {
                    let proof = self.access_proof();
                    record::proved_access(&mut self.status, proof);
                }
            }
            Ok(None) => {
                let failure = not_described(self.obj, &self.status, &self.instance_key);
                record::stalled(&mut self.status, self.stall_key.clone(), ctx.now());
                self.round.failure = Some(failure);
            }
            Err(e) => self.ecs_refused(&e, "DescribeInstances"),
        }
        Ok(Flow::Next)
    }

    /// The intent to reboot, written to the status *before* RebootInstance with the object's
    /// resourceVersion as precondition: a conflict means the object changed (or another writer got
    /// there first), and nothing is called.
    pub(super) async fn record_reboot_intent(&mut self) -> Result<Flow, ReconcileError> {
        let Some(credentials) = &self.inputs.credentials else {
            return Err(ReconcileError::TooManySteps);
        };
        let spec = &self.obj.spec;
        // Reserve, then intend, then act: the slot first, so that an intent is only recorded for a
        // reboot that goes out within REBOOT_LEAD. A slot further off: no intent yet.
        let reservation = match self.ctx.take_reboot_slot(&self.uid) {
            Some(slot) => slot,
            None => {
                self.ctx
                    .ecs
                    .reserve(credentials, &spec.region_id, "RebootInstance")
                    .await
            }
        };
        let wait = reservation.wait();
        if wait > REBOOT_LEAD {
            // Its place in the account's queue is kept; the object comes back for it, and no
            // worker waits meanwhile.
            self.ctx.hold_reboot_slot(&self.uid, reservation);
            return Ok(Flow::Done(Action::requeue(wait - REBOOT_LEAD), "retry"));
        }
        // The window is checked for when the call will go out, not only for now.
        let send_at = self
            .ctx
            .now()
            .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
            .unwrap_or_else(|_| self.ctx.now());
        if !plan::reboot_may_start_at(spec, send_at) {
            return Ok(Flow::Done(
                Action::requeue(wait.max(Duration::from_secs(1))),
                "retry",
            ));
        }
        record::reboot_intent(&mut self.status, self.ctx.now());
        match write_status(
            self.ctx,
            self.obj,
            &self.namespace,
            &self.name,
            &self.status,
            self.resource_version.as_deref(),
        )
        .await
        {
            Ok(written) => {
                self.ctx
                    .wrote(&self.uid, written.resource_version().as_deref());
                self.resource_version = written.resource_version();
                // Written in the grouped shape, whatever it was read in.
                self.status.legacy = false;
                self.written_status = Some(self.status.clone());
                self.round.intent_written = true;
                self.reservation = Some(reservation);
                self.committed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(Flow::Next)
            }
            Err(ReconcileError::WriteStatus(kube::Error::Api(s))) if s.code == 409 => {
                tracing::info!(
                    "the object changed before the reboot intent was recorded; planning again"
                );
                Ok(Flow::Done(
                    Action::requeue(Duration::from_millis(500)),
                    "retry",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// RebootInstance, only right after this reconcile recorded its intent. An answer that may
    /// hide a reboot (no answer, a timeout, a 5xx) keeps the intent, so it is never called again
    /// for this password; a clear refusal withdraws it.
    pub(super) async fn reboot(&mut self) -> Result<Flow, ReconcileError> {
        let Some(credentials) = &self.inputs.credentials else {
            return Err(ReconcileError::TooManySteps);
        };
        let spec = &self.obj.spec;
        self.round.reboot_called = true;
        let reservation = match self.reservation.take() {
            Some(r) => r,
            None => {
                self.ctx
                    .ecs
                    .reserve(credentials, &spec.region_id, "RebootInstance")
                    .await
            }
        };
        let reservation = reservation.ready().await;
        // At send time: still a moment the spec allows (a window that closed meanwhile is never
        // used late). Not sent: the intent is withdrawn, and the slot goes back.
        if !plan::reboot_may_start_at(spec, self.ctx.now()) {
            drop(reservation);
            record::reboot_refused(&mut self.status);
            self.events.push(normal(
                Reason::RebootRequired.as_str(),
                format!(
                    "the reboot window closed before RebootInstance for instance {} could be sent; it waits for the next window",
                    spec.instance_id
                ),
                "RebootInstance",
            ));
            return Ok(Flow::Next);
        }
        match self
            .ctx
            .ecs
            .reboot_instance_on(reservation, credentials, &spec.region_id, &spec.instance_id)
            .await
        {
            Ok(accepted) => {
                record::reboot_accepted(&mut self.status, &accepted.request_id);
                self.events.push(normal(
                    Reason::RebootRequested.as_str(),
                    format!(
                        "called RebootInstance for instance {} so the new VNC password takes effect (RequestId {})",
                        spec.instance_id, accepted.request_id
                    ),
                    "RebootInstance",
                ));
            }
            Err(e) if decide::reboot_may_have_happened(&e) => {
                let _ = ecs_failure(&e, self.obj, "RebootInstance");
                self.events.push(warning(
                    Reason::RebootRequested.as_str(),
                    format!(
                        "RebootInstance for instance {} got no clear answer ({}); it is not called again for this password, waiting for a restart",
                        spec.instance_id,
                        decide::summary(&e)
                    ),
                    "RebootInstance",
                ));
            }
            Err(e) => {
                record::reboot_refused(&mut self.status);
                self.round.failure = Some(ecs_failure(&e, self.obj, "RebootInstance"));
            }
        }
        Ok(Flow::Next)
    }

    /// This object's proof of access to its instance.
    fn access_proof(&self) -> String {
        self.ctx.key.access_proof(&self.uid, &self.instance_key)
    }

    /// An ECS call failed: what it means for the object, remembered as a stall when only a
    /// change of its inputs can help.
    fn ecs_refused(&mut self, error: &crate::ecs::EcsError, action: &'static str) {
        let failure = ecs_failure(error, self.obj, action);
        if let (
            decide::Failure::Retry {
                pace: decide::Pace::Throttled,
                ..
            },
            Some(credentials),
        ) = (&failure, &self.inputs.credentials)
        {
            self.retry_at = Some(self.ctx.ecs.backlog(
                credentials,
                &self.obj.spec.region_id,
                action,
            ));
        }
        if failure.is_stalled() {
            record::stalled(&mut self.status, self.stall_key.clone(), self.ctx.now());
        }
        self.round.failure = Some(failure);
    }
}

/// The value of `ecsvnc.io/instance` for a Secret generated for `spec`'s instance.
pub(super) fn instance_annotation(spec: &crate::api::VncPasswordSpec) -> String {
    format!("{}/{}", spec.region_id, spec.instance_id)
}

/// Creates (or, for a rotation, rewrites with the observed resourceVersion as precondition) the
/// password Secret with a new random password. `None` when the Secret changed or appeared
/// meanwhile (nothing written).
async fn write_generated(
    run: &Run<'_>,
    now: jiff::Timestamp,
    rotate: bool,
) -> Result<Option<(Password, AppliedSecret, GeneratedSecret)>, ReconcileError> {
    use k8s_openapi::ByteString;
    use kube::api::{ObjectMeta, PostParams};
    let (obj, namespace, inputs) = (run.obj, run.namespace.as_str(), &run.inputs);
    let rotate_token = run.rotate_token.as_deref();
    let r = &obj.spec.password_secret_ref;
    let password = Password::generate();
    let generated_at = crate::ecs::signer::format_timestamp(now);
    let mut annotations = std::collections::BTreeMap::from([
        (ANNOTATION_GENERATED_AT.to_string(), generated_at.clone()),
        (
            crate::api::ANNOTATION_INSTANCE.to_string(),
            instance_annotation(&obj.spec),
        ),
    ]);
    if let Some(token) = rotate_token {
        annotations.insert(ANNOTATION_ROTATE_TOKEN.to_string(), token.to_string());
    }
    let api: Api<Secret> = Api::namespaced(run.ctx.client.clone(), namespace);
    let write_err = |source| ReconcileError::WriteSecret {
        namespace: namespace.to_string(),
        name: r.name.clone(),
        source,
    };
    // The password the console accepts now stays readable until the new one is in effect: kept
    // under `previous` (unless a rotation not yet in effect already keeps it there, or the
    // Secret's password was unusable and so never applied).
    let keep = match (&inputs.generated, &inputs.secret_password) {
        (
            Some(GeneratedSecret::Ours {
                previous_kept: true,
                ..
            }),
            _,
        ) => None,
        (_, Some(current)) => Some(current),
        _ => None,
    };
    let previous_kept = rotate
        && (keep.is_some()
            || matches!(
                inputs.generated,
                Some(GeneratedSecret::Ours {
                    previous_kept: true,
                    ..
                })
            ));
    let written = if rotate {
        let Some(rv) = &inputs.secret_version else {
            return Ok(None);
        };
        let mut data = serde_json::Map::new();
        data.insert(
            r.key.clone(),
            json!(ByteString(password.expose().as_bytes().to_vec())),
        );
        if let Some(current) = keep {
            data.insert(
                PREVIOUS_KEY.to_string(),
                json!(ByteString(current.expose().as_bytes().to_vec())),
            );
            annotations.insert(
                ANNOTATION_PREVIOUS_IN_EFFECT.to_string(),
                "true".to_string(),
            );
        }
        let patch = json!({
            "metadata": {"resourceVersion": rv, "annotations": annotations},
            "data": data,
        });
        match patch_if_unchanged(&api, namespace, &r.name, &patch).await? {
            Some(s) => s,
            None => return Ok(None),
        }
    } else {
        // Known as this VncPassword's by the annotation; owned (and so deleted with it) only
        // with `secretDeletionPolicy: Delete`.
        annotations.insert(ANNOTATION_OWNER_UID.to_string(), run.uid.clone());
        let delete = secret_deletion_policy(obj) == SecretDeletionPolicy::Delete;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(r.name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(std::collections::BTreeMap::from([
                    (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                    (LABEL_VNCPASSWORD.to_string(), obj.name_any()),
                ])),
                annotations: Some(annotations),
                owner_references: delete.then(|| vec![owner_reference(obj, &run.uid)]),
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
        previous_kept,
        owner_reference: written
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == run.uid),
        adopt: false,
    };
    Ok(Some((password, identity, generated)))
}

/// A merge patch of Secret `name` that carries its resourceVersion as precondition: `None` when the
/// Secret changed or went meanwhile (its watch event brings the reconcile that sees it).
async fn patch_if_unchanged(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<Option<Secret>, ReconcileError> {
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(s) => Ok(Some(s)),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
        Err(source) => Err(ReconcileError::WriteSecret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

fn secret_deletion_policy(obj: &VncPassword) -> SecretDeletionPolicy {
    obj.spec
        .generation()
        .map(|g| g.secret_deletion_policy)
        .unwrap_or_default()
}

/// The ownerReference that makes a generated Secret go with its VncPassword.
fn owner_reference(
    obj: &VncPassword,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "ecsvnc.io/v1alpha1".into(),
        kind: "VncPassword".into(),
        name: obj.name_any(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}
