//! VncPasswordSet: one child VncPassword per instance a selector matches (Nodes by label, or ECS
//! instances by tag). Each pass observes the selection and the children, plans (`plan`, pure),
//! then creates, puts back, marks or deletes children and writes the counts to the status. The
//! children are ordinary VncPasswords: claims, tenancy, rotation and reboots are theirs.
//!
//! What must survive a restart lives in the cluster: the children themselves, the annotation
//! `ecsvnc.io/unselected-since` on a child whose instance left, `status.leftToOthers` and
//! `status.lastSelectionTime` (when the next tag resync is due). ECS's last answer for a tag set is
//! only cached in memory until that resync: a restarted controller asks again.

pub mod nodes;
pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::api::{
    ANNOTATION_UNSELECTED_SINCE, FIELD_MANAGER, LABEL_MANAGED_BY, LABEL_SET, MANAGED_BY,
    SET_FIELD_MANAGER, SetReason, VncPassword, VncPasswordSet, VncPasswordSetStatus, condition,
};
use crate::controller::cache::CachedVncPassword;
use crate::controller::context::Context;
use crate::controller::decide::{self, Failure};
use crate::controller::{conditions, schedule, tenancy};
use plan::{Child, ChildState, Selection, Step};

/// Sets whose last status write is remembered before old entries are dropped.
const WRITTEN_REMEMBERED: usize = 4096;

/// Child writes one pass has in flight at once.
const WRITES_AT_ONCE: usize = 8;

/// A set's status is written at most once per this long while only its counts change.
pub const STATUS_PACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("the object has no namespace, name or uid")]
    Unnamed,
    #[error("{what} VncPassword {name}: {source}")]
    Child {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("reading credentials: {0}")]
    Credentials(String),
    #[error("listing the VncPasswords of the namespace: {0}")]
    ListChildren(#[source] kube::Error),
}

/// A tag set's last answer from ECS: the spec generation asked for, and the instance IDs.
type CachedSelection = (i64, Arc<BTreeSet<String>>);

/// What the set controller shares across its reconciles (one per term of leadership).
pub struct SetContext {
    /// The VncPassword controller's context: the API client, ECS, credentials, work slots and the
    /// VncPassword cache the children are read from.
    pub ctx: Arc<Context>,
    /// Nodes, for `selector.nodes`; `None` when the controller watches only some namespaces (it
    /// then has no cluster-wide read of Nodes).
    pub nodes: Option<nodes::NodeCache>,
    /// When each set's status was last written (pacing only: a restart merely writes once more),
    /// and the resourceVersion that write made: a cached set older than that is not acted on.
    written: Mutex<HashMap<String, (Instant, u64)>>,
    /// When each set's last batch of child writes started (pacing only).
    batches: Mutex<HashMap<String, Instant>>,
    /// Each tag set's last answer from ECS (spec generation, instance IDs), until its next resync:
    /// a cache of what ECS said, asked again after a restart (`status.lastSelectionTime` says
    /// when the next resync is due, not what was found).
    selections: Mutex<HashMap<String, CachedSelection>>,
    /// With `--shards`: the VncPassword cache holds only this shard's objects, while a set's
    /// children hash into every shard, so each pass lists the namespace's VncPasswords instead.
    list_objects: bool,
}

impl SetContext {
    pub fn new(ctx: Arc<Context>, nodes: Option<nodes::NodeCache>, list_objects: bool) -> Self {
        Self {
            ctx,
            nodes,
            list_objects,
            written: Mutex::default(),
            batches: Mutex::default(),
            selections: Mutex::default(),
        }
    }

    /// The tag set's cached selection for this spec generation.
    fn selection(&self, uid: &str, generation: i64) -> Option<Arc<BTreeSet<String>>> {
        self.selections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .filter(|(g, _)| *g == generation)
            .map(|(_, ids)| ids.clone())
    }

    fn remember_selection(&self, uid: &str, generation: i64, ids: BTreeSet<String>) {
        let mut selections = self.selections.lock().unwrap_or_else(|p| p.into_inner());
        if selections.len() >= WRITTEN_REMEMBERED && !selections.contains_key(uid) {
            // Bounded: a set whose entry went asks ECS again at its next pass.
            selections.clear();
        }
        selections.insert(uid.to_string(), (generation, Arc::new(ids)));
    }
}

/// The set that controls `obj`, if a VncPasswordSet does.
pub fn owning_set(obj: &impl kube::Resource) -> Option<ObjectRef<VncPasswordSet>> {
    let owner = obj
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "VncPasswordSet")?;
    Some(ObjectRef::new(&owner.name).within(obj.namespace()?.as_str()))
}

/// The sets a change of `obj` concerns: its own set, or, for a VncPassword written by hand, the
/// sets of its namespace.
pub fn to_wake(
    store: &Store<VncPasswordSet>,
    obj: &impl kube::Resource,
) -> Vec<ObjectRef<VncPasswordSet>> {
    if let Some(set) = owning_set(obj) {
        return vec![set];
    }
    let namespace = obj.meta().namespace.as_deref();
    store
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == namespace)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The work-slot share (`slots`) of a reconcile in `namespace`: the sets' work (their passes and
/// their children's reconciles) has a share of its own beside the namespace's other VncPasswords,
/// so a set of thousands never starves a VncPassword written by hand, and a namespace gains at
/// most one more share however many sets it makes.
pub fn share(namespace: &str, set_work: bool) -> std::borrow::Cow<'_, str> {
    if set_work {
        // `/` cannot appear in a namespace name.
        format!("{namespace}/sets").into()
    } else {
        namespace.into()
    }
}

/// The sets with a node selector, to wake on a Node change.
pub fn node_sets(store: &Store<VncPasswordSet>) -> Vec<ObjectRef<VncPasswordSet>> {
    store
        .state()
        .iter()
        .filter(|s| s.spec.selector.nodes.is_some())
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

pub async fn reconcile(
    set: Arc<VncPasswordSet>,
    sctx: Arc<SetContext>,
) -> Result<Action, SetError> {
    let (Some(namespace), Some(uid)) = (set.namespace(), set.uid()) else {
        return Err(SetError::Unnamed);
    };
    let name = set.name_any();
    if set.meta().deletion_timestamp.is_some() {
        // The children go with it (their ownerReference).
        return Ok(Action::await_change());
    }
    let ctx = sctx.ctx.clone();
    // The children are read from the VncPassword cache: not before it has listed them all (an
    // empty cache would look like a set without children). With shards they are listed instead.
    if !sctx.list_objects
        && tokio::time::timeout(
            Duration::from_secs(5),
            ctx.watched.objects.wait_until_ready(),
        )
        .await
        .is_err()
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Never act on a cache older than the last status write: the status is the selection's memory
    // (`leftToOthers`, `lastSelectionTime`). The watch brings the write shortly.
    let cached_version = set
        .resource_version()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let behind = sctx
        .written
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&uid)
        .is_some_and(|(_, written)| cached_version < *written);
    if behind {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    // A set's pass takes a work slot of its namespace's set share, like its children's reconciles.
    let share = share(&namespace, true);
    let Some(_slot) = ctx.slots.acquire(&share).await else {
        return Ok(Action::await_change());
    };
    let now = ctx.now();
    let status = set.status.clone().unwrap_or_default();
    let fresh_spec = status.observed_generation != set.meta().generation;

    let listed = if sctx.list_objects {
        // A consistent read (no resourceVersion): newer than any write this replica made.
        let api: kube::Api<CachedVncPassword> =
            kube::Api::namespaced(ctx.client.clone(), &namespace);
        let list = api
            .list(&kube::api::ListParams::default())
            .await
            .map_err(SetError::ListChildren)?;
        Some(list.items.into_iter().map(Arc::new).collect::<Vec<_>>())
    } else {
        None
    };
    let objects = match &listed {
        Some(items) => items.clone(),
        None => ctx.watched.objects.state(),
    };
    let (mut children, taken) = children_of(&ctx, &objects, &namespace, &uid, &set.spec.region_id);
    let mut last_selection_time = status.last_selection_time.clone();
    let durations = durations(&set);
    let (selection, grace) = match &durations {
        Err(message) => (
            Selection::Failed {
                reason: SetReason::InvalidSpec,
                message: message.clone(),
                transient: false,
            },
            jiff::SignedDuration::ZERO,
        ),
        Ok((grace, resync)) => {
            let (grace, resync) = (*grace, *resync);
            let selection = if let Some(selector) = &set.spec.selector.nodes {
                match &sctx.nodes {
                    None => Selection::Failed {
                        reason: SetReason::NodesNotWatched,
                        message: "selector.nodes needs the controller's cluster-wide read of Nodes, which it does not have when it watches only some namespaces (--watch-namespaces): use selector.instanceTags".to_string(),
                        transient: false,
                    },
                    Some(cache) => match cache.store().await {
                        None => Selection::Failed {
                            reason: SetReason::SelectorUnavailable,
                            message: "the Node watch has not listed the Nodes yet (the controller needs list and watch on nodes); the children are left as they are".to_string(),
                            transient: true,
                        },
                        Some(store) => match nodes::select(&store.state(), selector, &set.spec.region_id) {
                            Ok((ids, _)) => Selection::Instances(ids),
                            Err(e) => Selection::Failed {
                                reason: SetReason::InvalidSpec,
                                message: format!("selector.nodes: {e}"),
                                transient: false,
                            },
                        },
                    },
                }
            } else {
                let due = last_selection_time
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .and_then(|t| t.checked_add(resync).ok())
                    .is_none_or(|due| due <= now);
                // An instance left to a VncPassword written by hand that no longer names it may
                // belong to the set again: ask ECS now.
                let released = status
                    .left_to_others
                    .iter()
                    .any(|l| taken.get(&l.instance_id) != Some(&l.vnc_password));
                let generation = set.meta().generation.unwrap_or_default();
                let cached = sctx.selection(&uid, generation);
                match cached {
                    Some(ids) if !(fresh_spec || due || released) => {
                        Selection::Instances((*ids).clone())
                    }
                    _ => {
                        let selection = tagged(&ctx, &set, &namespace).await?;
                        if let Selection::Instances(ids) = &selection {
                            last_selection_time = Some(now.to_string());
                            sctx.remember_selection(&uid, generation, ids.clone());
                        }
                        selection
                    }
                }
            };
            (
                selection,
                jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX),
            )
        }
    };

    children.extend(name_collisions(
        &ctx, &objects, &name, &namespace, &selection, &children,
    ));
    let gone = gone_instances(
        &ctx,
        &set,
        &namespace,
        plan::due_retained(&children, grace, now),
    )
    .await;
    let left_before: Vec<String> = status
        .left_to_others
        .iter()
        .map(|l| l.instance_id.clone())
        .collect();
    let batch_wait = sctx
        .batches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&uid)
        .map(Instant::elapsed)
        .filter(|since| *since < plan::NEXT_BATCH)
        .map(|since| plan::NEXT_BATCH - since);
    let plan = plan::plan(&plan::Inputs {
        set_name: &name,
        spec: &set.spec,
        selection,
        children: &children,
        grace,
        now,
        gone: &gone,
        taken: &taken,
        left_before: &left_before,
        batch_wait,
    });
    tracing::debug!(
        %namespace, set = %name, resource_version = cached_version,
        taken = taken.len(), left_before = ?left_before, left = ?plan.left_to_others,
        selected = plan.counts.selected, steps = plan.steps.len(),
        "set pass"
    );
    let api = Api::<VncPassword>::namespaced(ctx.client.clone(), &namespace);
    // A batch is at most `plan::APPLIES_PER_PASS` writes to the API server, a few at a time.
    if plan.steps.iter().any(|s| matches!(s, Step::Apply { .. })) {
        let mut batches = sctx.batches.lock().unwrap_or_else(|p| p.into_inner());
        if batches.len() >= WRITTEN_REMEMBERED {
            batches.retain(|_, at| at.elapsed() < plan::NEXT_BATCH);
        }
        batches.insert(uid.clone(), Instant::now());
    }
    let writes: Vec<_> = plan
        .steps
        .iter()
        .map(|step| perform(&api, &set, &uid, step, now))
        .collect();
    let results: Vec<Result<(), SetError>> = futures::stream::iter(writes)
        .buffer_unordered(WRITES_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), SetError>>()?;
    publish(&ctx, &set, &status, &plan).await;
    let mut requeue = plan.requeue;
    // A tag set looks again when its next resync is due.
    if set.spec.selector.instance_tags.is_some()
        && let Ok((_, resync)) = durations
        && let Some(last) = last_selection_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        let due = last.checked_add(resync).unwrap_or(last);
        let wait = Duration::try_from(now.duration_until(due)).unwrap_or(Duration::ZERO);
        requeue = requeue.min(wait.max(Duration::from_secs(1)));
    }
    let new_status = VncPasswordSetStatus {
        observed_generation: set.meta().generation,
        selected: plan.counts.selected,
        ready: plan.counts.ready,
        reboot_required: plan.counts.reboot_required,
        stalled: plan.counts.stalled,
        pending_removal: plan.counts.pending_removal,
        left_to_others: plan
            .left_to_others
            .iter()
            .map(|(id, name)| crate::api::LeftInstance {
                instance_id: id.clone(),
                vnc_password: name.clone(),
            })
            .collect(),
        last_selection_time,
        conditions: conditions::merge(
            &status.conditions,
            &plan.conditions,
            set.meta().generation,
            now,
        ),
    };
    if !same_status(&status, &new_status) {
        // What the status remembers (the selection's memory) is written at once; only counts
        // and messages wait for the pace.
        let urgent = fresh_spec
            || new_status.last_selection_time != status.last_selection_time
            || new_status.left_to_others != status.left_to_others
            || condition_changed(&status, &new_status, condition::READY)
            || condition_changed(&status, &new_status, condition::STALLED);
        let since = sctx
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&uid)
            .map(|(at, _)| at.elapsed());
        match since {
            Some(since) if !urgent && since < STATUS_PACE => {
                requeue = requeue.min(STATUS_PACE - since);
            }
            _ => {
                let version = write_status(&ctx, &namespace, &name, &new_status).await?;
                let mut written = sctx.written.lock().unwrap_or_else(|p| p.into_inner());
                if written.len() >= WRITTEN_REMEMBERED {
                    // Bounded: deleted sets' entries go once they are old (a set written in the
                    // last minutes keeps its own).
                    written.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(600));
                }
                written.insert(uid.clone(), (Instant::now(), version));
            }
        }
    }
    Ok(Action::requeue(requeue))
}

/// Events on the set: how many children a pass created and removed, and the transitions of
/// `Ready` and `Stalled` (reason as the condition's).
async fn publish(
    ctx: &Context,
    set: &VncPasswordSet,
    before: &VncPasswordSetStatus,
    plan: &plan::Plan,
) {
    use kube::runtime::events::{Event, EventType};
    let event = |type_, reason: &str, note: String, action: &str| Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    let created = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Apply { uid: None, .. }))
        .count();
    let removed = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Delete { .. }))
        .count();
    let mut events = Vec::new();
    if created > 0 {
        events.push(event(
            EventType::Normal,
            "ChildrenCreated",
            format!("created {created} VncPasswords for newly selected instances"),
            "Create",
        ));
    }
    if removed > 0 {
        events.push(event(
            EventType::Normal,
            "ChildrenRemoved",
            format!("deleted {removed} VncPasswords whose instances left the selection"),
            "Delete",
        ));
    }
    let was = |type_: &str| {
        before
            .condition(type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    for desired in &plan.conditions {
        let now = (
            if desired.status { "True" } else { "False" }.to_string(),
            desired.reason.clone(),
        );
        if was(desired.type_).as_ref() == Some(&now) || !desired.status {
            continue;
        }
        match desired.type_ {
            condition::STALLED => events.push(event(
                EventType::Warning,
                &desired.reason,
                desired.message.clone(),
                "Select",
            )),
            condition::READY => events.push(event(
                EventType::Normal,
                &desired.reason,
                desired.message.clone(),
                "Select",
            )),
            _ => {}
        }
    }
    if events.is_empty() {
        return;
    }
    let reference = set.object_ref(&());
    let recorder = ctx.recorder();
    for e in events {
        if let Err(error) = recorder.publish(&e, &reference).await {
            tracing::warn!(namespace = ?set.namespace(), name = %set.name_any(), %error, "could not publish an Event");
        }
    }
}

/// `removalGracePeriod` and `resyncInterval`, or what is wrong with them.
fn durations(set: &VncPasswordSet) -> Result<(Duration, Duration), String> {
    let grace = schedule::parse_go_duration(&set.spec.removal_grace_period)
        .map_err(|e| format!("spec.removalGracePeriod: {e}"))?;
    let resync = schedule::parse_go_duration(&set.spec.resync_interval)
        .map_err(|e| format!("spec.resyncInterval: {e}"))?;
    if resync < Duration::from_secs(60) {
        return Err("spec.resyncInterval must be at least 1m".to_string());
    }
    Ok((grace, resync))
}

/// The set's children as the cache holds them, and (instance → name) the VncPasswords of
/// `namespace` in `region` that no set controls: one pass over the cache.
fn children_of(
    ctx: &Context,
    objects: &[Arc<CachedVncPassword>],
    namespace: &str,
    uid: &str,
    region: &str,
) -> (Vec<Child>, std::collections::BTreeMap<String, String>) {
    let mut children = Vec::new();
    let mut by_hand = std::collections::BTreeMap::new();
    for o in objects {
        if o.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        if owned_by(o.as_ref(), uid) {
            children.push(child(ctx, o, true));
        } else if owning_set(o.as_ref()).is_none() {
            let spec = o.spec();
            if spec.region_id == region {
                by_hand.insert(spec.instance_id, o.name_any());
            }
        }
    }
    (children, by_hand)
}

/// VncPasswords that have the name of a selected instance's child but another owner (written by
/// hand): never touched, counted as stalled.
fn name_collisions(
    ctx: &Context,
    objects: &[Arc<CachedVncPassword>],
    set_name: &str,
    namespace: &str,
    selection: &Selection,
    children: &[Child],
) -> Vec<Child> {
    let Selection::Instances(ids) = selection else {
        return Vec::new();
    };
    let own: BTreeSet<&str> = children.iter().map(|c| c.name.as_str()).collect();
    ids.iter()
        .map(|id| plan::child_name(set_name, id))
        .filter(|name| !own.contains(name.as_str()))
        .filter_map(|name| {
            objects.iter().find(|o| {
                o.metadata.name.as_deref() == Some(name.as_str())
                    && o.metadata.namespace.as_deref() == Some(namespace)
            })
        })
        .map(|o| child(ctx, o, false))
        .collect()
}

fn owned_by(obj: &impl Resource, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

fn child(ctx: &Context, obj: &CachedVncPassword, owned: bool) -> Child {
    let status = obj.summary();
    let spec = obj.spec();
    let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
    let secret_goes_with_it = match ctx
        .watched
        .secret(namespace, &spec.password_secret_ref.name)
    {
        None => true,
        Some(secret) => secret
            .controller_uid()
            .is_some_and(|uid| Some(uid) == obj.metadata.uid.as_deref()),
    };
    let state = ChildState {
        observed: obj.packed_status().is_some()
            && status.observed_generation == obj.metadata.generation,
        ready: status.ready,
        reboot_required: status.reboot_required,
        stalled: status.stalled_reason.as_deref().map(str::to_string),
        secret_goes_with_it,
    };
    Child {
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        instance_id: spec.instance_id.clone(),
        spec,
        owned,
        unselected_since: obj
            .annotations()
            .get(ANNOTATION_UNSELECTED_SINCE)
            .and_then(|t| t.parse().ok()),
        state,
    }
}

/// The instances carrying the set's tags (and, with the controller's own credentials, the
/// namespace tag), with the template's credentials.
async fn tagged(
    ctx: &Context,
    set: &VncPasswordSet,
    namespace: &str,
) -> Result<Selection, SetError> {
    let template = &set.spec.template;
    let credentials = match set_credentials(ctx, set, namespace).await? {
        Err(failure) => return Ok(failed(&failure)),
        Ok(credentials) => credentials,
    };
    let mut tags: Vec<(String, String)> = set
        .spec
        .selector
        .instance_tags
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    if template.credentials.is_none() && ctx.settings.allowed_default_credentials.shared() {
        // Shared credentials act only on instances tagged for this namespace: list only those.
        tags.retain(|(k, _)| k != tenancy::NAMESPACE_TAG);
        tags.push((tenancy::NAMESPACE_TAG.to_string(), namespace.to_string()));
    }
    match ctx
        .ecs
        .describe_instances_by_tags(&credentials, &set.spec.region_id, &tags)
        .await
    {
        Ok(found) if found.truncated => Ok(Selection::Failed {
            reason: SetReason::SelectionTooLarge,
            message: format!(
                "the tags match {} instances or more, the most DescribeInstances lists for tag filters: add a tag to narrow the selection, or split it into several sets",
                crate::ecs::client::MAX_TAGGED_INSTANCES
            ),
            transient: false,
        }),
        Ok(found) => Ok(Selection::Instances(
            found.instances.into_iter().map(|i| i.instance_id).collect(),
        )),
        Err(e) => Ok(failed(&decide::failure_from_ecs(
            &e,
            &set.spec.region_id,
            "",
        ))),
    }
}

/// The template's credentials, resolved exactly as a child's would be.
async fn set_credentials(
    ctx: &Context,
    set: &VncPasswordSet,
    namespace: &str,
) -> Result<Result<crate::ecs::Credentials, Failure>, SetError> {
    let probe = plan::child_spec(&set.spec, "probe", "i-00000000");
    match crate::controller::reconcile::inputs::credentials(ctx, &probe, namespace).await {
        Err(e) => Err(SetError::Credentials(e.to_string())),
        Ok(Err(failure)) => Ok(Err(failure)),
        Ok(Ok((credentials, _))) => Ok(Ok(credentials)),
    }
}

/// Which of `ids` ECS no longer knows (released instances are absent from DescribeInstances).
/// When that cannot be learnt, none: their Secrets are kept.
async fn gone_instances(
    ctx: &Context,
    set: &VncPasswordSet,
    namespace: &str,
    ids: Vec<String>,
) -> BTreeSet<String> {
    if ids.is_empty() {
        return BTreeSet::new();
    }
    let credentials = match set_credentials(ctx, set, namespace).await {
        Ok(Ok(c)) => c,
        _ => return BTreeSet::new(),
    };
    match ctx
        .ecs
        .describe_instances(&credentials, &set.spec.region_id, &ids)
        .await
    {
        Ok(found) => {
            let found: BTreeSet<String> = found.into_iter().map(|i| i.instance_id).collect();
            ids.into_iter().filter(|id| !found.contains(id)).collect()
        }
        Err(e) => {
            tracing::info!(namespace, set = %set.name_any(), error = %e, "cannot tell whether removed instances still exist; their Secrets are kept");
            BTreeSet::new()
        }
    }
}

/// A credentials or ECS failure of the selector.
fn failed(failure: &Failure) -> Selection {
    let (reason, message, transient) = match failure {
        Failure::Stalled { reason, message } => (
            SetReason::SelectorFailed,
            format!("{reason}: {message}"),
            false,
        ),
        Failure::Retry {
            reason, message, ..
        } => (
            SetReason::SelectorUnavailable,
            format!("{reason}: {message}"),
            true,
        ),
    };
    Selection::Failed {
        reason,
        message,
        transient,
    }
}

async fn perform(
    api: &Api<VncPassword>,
    set: &VncPasswordSet,
    uid: &str,
    step: &Step,
    now: jiff::Timestamp,
) -> Result<(), SetError> {
    let err = |what: &'static str, name: &str| {
        let name = name.to_string();
        move |source| SetError::Child { what, name, source }
    };
    match step {
        Step::Apply {
            name,
            spec,
            uid: child_uid,
        } => {
            let object = json!({
                "apiVersion": "ecsvnc.io/v1alpha1",
                "kind": "VncPassword",
                "metadata": {
                    "name": name,
                    "labels": {LABEL_SET: set.name_any(), LABEL_MANAGED_BY: MANAGED_BY},
                    "ownerReferences": [{
                        "apiVersion": "ecsvnc.io/v1alpha1",
                        "kind": "VncPasswordSet",
                        "name": set.name_any(),
                        "uid": uid,
                        "controller": true,
                    }],
                },
                "spec": spec,
            });
            // A new child is created (POST: a VncPassword of that name written by hand meanwhile
            // makes it fail, and is never taken over); an existing one, the set's own as the cache
            // says, gets its fields back by server-side apply.
            let applied = if let Some(child_uid) = child_uid {
                // The uid makes the API server refuse (409) the apply if the name now belongs to
                // another object.
                let mut object = object;
                object["metadata"]["uid"] = json!(child_uid);
                match api
                    .patch(
                        name,
                        &PatchParams::apply(SET_FIELD_MANAGER).force(),
                        &Patch::Apply(&object),
                    )
                    .await
                {
                    Ok(applied) => applied,
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return Ok(()),
                    Err(e) => return Err(err("applying", name)(e)),
                }
            } else {
                let object: VncPassword = serde_json::from_value(object).expect("a VncPassword");
                let params = PostParams {
                    field_manager: Some(SET_FIELD_MANAGER.to_string()),
                    ..PostParams::default()
                };
                match api.create(&params, &object).await {
                    Ok(created) => created,
                    Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
                    Err(e) => return Err(err("creating", name)(e)),
                }
            };
            if !owned_by(&applied, uid) {
                return Ok(());
            }
            if applied.spec != **spec {
                // Fields someone else added (another field manager) stay under an apply: the spec
                // is replaced, on the version just read (a conflict: the next pass looks again).
                let mut replaced = applied;
                replaced.spec = (**spec).clone();
                replaced.status = None;
                let params = PostParams {
                    field_manager: Some(SET_FIELD_MANAGER.to_string()),
                    ..PostParams::default()
                };
                match api.replace(name, &params, &replaced).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(err("replacing the spec of", name)(e)),
                }
            }
        }
        Step::MarkUnselected { name } | Step::Unmark { name } => {
            let value = match step {
                Step::MarkUnselected { .. } => json!(now.to_string()),
                _ => serde_json::Value::Null,
            };
            let patch = json!({"metadata": {"annotations": {ANNOTATION_UNSELECTED_SINCE: value}}});
            match api
                .patch(
                    name,
                    &PatchParams {
                        field_manager: Some(SET_FIELD_MANAGER.to_string()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(err("marking", name)(e)),
            }
        }
        Step::Delete {
            name,
            uid: child_uid,
        } => {
            // Only that child: a VncPassword of the same name made since is not deleted.
            let child_uid = child_uid.clone();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(child_uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(err("deleting", name)(e)),
            }
        }
    }
    Ok(())
}

/// Equal but for the conditions' transition times.
fn same_status(a: &VncPasswordSetStatus, b: &VncPasswordSetStatus) -> bool {
    let strip = |s: &VncPasswordSetStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

fn condition_changed(a: &VncPasswordSetStatus, b: &VncPasswordSetStatus, type_: &str) -> bool {
    let key = |s: &VncPasswordSetStatus| {
        s.condition(type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    key(a) != key(b)
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &VncPasswordSetStatus,
) -> Result<u64, SetError> {
    let patch = json!({
        "apiVersion": "ecsvnc.io/v1alpha1",
        "kind": "VncPasswordSet",
        "status": status,
    });
    Api::<VncPasswordSet>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|written| {
            written
                .resource_version()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
        .map_err(SetError::WriteStatus)
}

/// Kubernetes-side failures: per-set backoff, 5 s doubling to 5 min.
pub fn error_policy(set: Arc<VncPasswordSet>, error: &SetError, sctx: Arc<SetContext>) -> Action {
    let failures = set.uid().map(|uid| sctx.ctx.failed(&uid)).unwrap_or(1);
    let delay = decide::backoff(failures, decide::Pace::Normal, rand::random());
    tracing::warn!(namespace = ?set.namespace(), name = %set.name_any(), error = %error, failures, retry_in_ms = delay.as_millis() as u64, "VncPasswordSet reconcile failed; retrying");
    Action::requeue(delay)
}

/// Runs the set controller until `shutdown`: a watch of VncPasswordSets, woken by their children's
/// changes (`child_wakes`) and, for node sets, by Node changes.
pub async fn run(
    sctx: Arc<SetContext>,
    sets: impl futures::Stream<Item = Result<VncPasswordSet, kube::runtime::watcher::Error>>
    + Send
    + 'static,
    store: Store<VncPasswordSet>,
    wakes: impl futures::Stream<Item = ObjectRef<VncPasswordSet>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use kube::runtime::Controller;
    use kube::runtime::controller::Config as ControllerConfig;
    Controller::for_stream(sets, store)
        .with_config(ControllerConfig::default().concurrency(0))
        .trigger_backoff(crate::controller::watch_backoff::Unpaced)
        .reconcile_on(wakes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, sctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                use kube::runtime::controller::Error as ControllerError;
                match e {
                    ControllerError::ReconcilerFailed(..) | ControllerError::ObjectNotFound(_) => {}
                    e => tracing::warn!(error = %e, "VncPasswordSet watch or queue error; retrying with backoff"),
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
