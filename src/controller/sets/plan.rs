//! What a VncPasswordSet does next, decided from what was observed: which children to create or
//! put back, mark, unmark or delete, and the status. Pure; `sets::reconcile` performs it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::api::{
    PasswordSecretRef, SecretDeletionPolicy, SetReason, VncPasswordSetSpec, VncPasswordSpec,
    condition,
};
use crate::controller::conditions::Desired;

/// Children created or put back per batch: a set of 5,000 instances writes its children at most
/// this many per [`NEXT_BATCH`] (faster than ECS's default quota of ModifyInstanceVncPasswd takes
/// them), so it cannot flood the API server or the work slots.
pub const APPLIES_PER_PASS: usize = 100;
/// The least time from the start of one batch of child writes to the start of the next (passes
/// woken sooner by the children's changes write nothing until then).
pub const NEXT_BATCH: Duration = Duration::from_secs(1);
/// While children are still working, the set looks again at least this often (their changes
/// wake it sooner).
pub const PROGRESS_RECHECK: Duration = Duration::from_secs(30);
/// A settled set (nothing to do but wait for a selection change) looks again this often.
pub const SETTLED_RECHECK: Duration = Duration::from_secs(300);
/// How long a child whose instance is gone is kept past its grace period for its Secret to be
/// handed over (made owned by the child, so that it goes too); then it is deleted regardless and
/// its Secret stays.
pub const SECRET_HANDOVER_WAIT: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// The instances the selector matches, as far as this pass knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Exactly these instance IDs.
    Instances(BTreeSet<String>),
    /// The selector cannot be evaluated; the children are left as they are, and they (with the
    /// instances the status says were left to others) stand for the selection.
    Failed {
        reason: SetReason,
        message: String,
        /// Whether trying again may help without a change (ECS or STS unreachable).
        transient: bool,
    },
}

/// One child VncPassword as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub name: String,
    pub uid: String,
    pub instance_id: String,
    pub spec: VncPasswordSpec,
    /// Whether this set is its controlling owner (a VncPassword of the same name written by hand
    /// is never touched).
    pub owned: bool,
    pub unselected_since: Option<jiff::Timestamp>,
    pub state: ChildState,
}

/// A child's conditions, as the set counts them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChildState {
    /// Its status describes its current spec.
    pub observed: bool,
    pub ready: bool,
    pub reboot_required: bool,
    /// `Stalled=True`: its reason.
    pub stalled: Option<String>,
    /// Its generated Secret is owned by it (an ownerReference: it goes with the child), or does
    /// not exist.
    pub secret_goes_with_it: bool,
}

impl ChildState {
    /// The child found its instance gone (released): its password is live nowhere.
    pub fn instance_gone(&self) -> bool {
        self.stalled.as_deref() == Some(crate::api::Reason::InstanceNotFound.as_str())
    }
}

/// One change to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create the child (`uid: None`), or put the spec of the child of that uid back.
    Apply {
        name: String,
        spec: Box<VncPasswordSpec>,
        uid: Option<String>,
    },
    /// Its instance left the selection: note since when.
    MarkUnselected { name: String },
    /// Its instance is selected again.
    Unmark { name: String },
    /// The grace period has passed: delete the child of this uid.
    Delete { name: String, uid: String },
}

/// The status counts and conditions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub selected: i64,
    pub ready: i64,
    pub reboot_required: i64,
    pub stalled: i64,
    pub pending_removal: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Selected instances left to a VncPassword written by hand: (instance, its name), sorted, at
    /// most [`LEFT_LISTED`].
    pub left_to_others: Vec<(String, String)>,
    pub counts: Counts,
    pub conditions: Vec<Desired>,
    /// When to look again at the latest.
    pub requeue: Duration,
}

/// A child's name: `<set>-<instance-id>`, or, when that is longer than 63 characters (so it
/// stays a valid label value and DNS label), the set's name cut short with 8 hex digits of its
/// hash between it and the instance ID.
pub fn child_name(set: &str, instance_id: &str) -> String {
    const MAX: usize = 63;
    let full = format!("{set}-{instance_id}");
    if full.len() <= MAX {
        return full;
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(set.as_bytes())[..4]);
    let room = MAX.saturating_sub(instance_id.len() + hash.len() + 2);
    let prefix = set[..room.min(set.len())].trim_end_matches(['-', '.']);
    let name = if prefix.is_empty() {
        format!("{hash}-{instance_id}")
    } else {
        format!("{prefix}-{hash}-{instance_id}")
    };
    name.chars().take(MAX).collect()
}

/// The spec every child gets: the template, the set's region, its instance, and a Secret named
/// like the child.
pub fn child_spec(set: &VncPasswordSetSpec, name: &str, instance_id: &str) -> VncPasswordSpec {
    VncPasswordSpec {
        region_id: set.region_id.clone(),
        instance_id: instance_id.to_string(),
        password_secret_ref: PasswordSecretRef {
            name: name.to_string(),
            key: "password".to_string(),
        },
        password_generation: Some(set.template.password_generation.clone()),
        credentials: set.template.credentials.clone(),
        reboot_policy: set.template.reboot_policy,
        reboot_windows: set.template.reboot_windows.clone(),
        generate_password: false,
        rotation_interval: None,
        credentials_secret_ref: None,
        credentials_service_account_ref: None,
    }
}

/// Everything one pass decides from.
pub struct Inputs<'a> {
    pub set_name: &'a str,
    pub spec: &'a VncPasswordSetSpec,
    pub selection: Selection,
    pub children: &'a [Child],
    pub grace: jiff::SignedDuration,
    pub now: jiff::Timestamp,
    /// Instances ECS no longer knows, among those [`due_retained`] named.
    pub gone: &'a BTreeSet<String>,
    /// Instances of the set's region that a VncPassword of the namespace written by hand (not a
    /// set's child) names, and its name: the set leaves them to it.
    pub taken: &'a BTreeMap<String, String>,
    /// The selected instances the last status says were left to such VncPasswords: part of the
    /// selection while the selector fails, like the children.
    pub left_before: &'a [String],
    /// How long until another batch of child writes may start (`None`: now).
    pub batch_wait: Option<Duration>,
}

/// How many instances left to others the status lists by name.
pub const LEFT_LISTED: usize = 100;

/// Whether the child's grace period has passed.
fn due(c: &Child, grace: jiff::SignedDuration, now: jiff::Timestamp) -> bool {
    c.unselected_since
        .is_some_and(|since| since.checked_add(grace).unwrap_or(since) <= now)
}

fn retains_secret(c: &Child) -> bool {
    c.spec.generation().map(|g| g.secret_deletion_policy) == Some(SecretDeletionPolicy::Retain)
}

/// The instances of children due for deletion whose Secret would stay (`Retain`): whether they
/// still exist decides whether their Secret goes too (ask ECS, then plan with [`Inputs::gone`]).
pub fn due_retained(
    children: &[Child],
    grace: jiff::SignedDuration,
    now: jiff::Timestamp,
) -> Vec<String> {
    children
        .iter()
        .filter(|c| c.owned && due(c, grace, now) && retains_secret(c))
        .map(|c| c.instance_id.clone())
        .collect()
}

pub fn plan(inputs: &Inputs) -> Plan {
    let by_name: BTreeMap<&str, &Child> = inputs
        .children
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    // When the selector fails, the selection is the children not marked as left, and the
    // instances left to others.
    let selected: BTreeSet<String> = match &inputs.selection {
        Selection::Instances(ids) => ids.clone(),
        Selection::Failed { .. } => inputs
            .children
            .iter()
            .filter(|c| c.owned && c.unselected_since.is_none())
            .map(|c| c.instance_id.clone())
            .chain(
                inputs
                    .left_before
                    .iter()
                    .filter(|id| inputs.taken.contains_key(*id))
                    .cloned(),
            )
            .collect(),
    };
    let evaluated = matches!(inputs.selection, Selection::Instances(_));
    let mut steps = Vec::new();
    let mut applies = 0usize;
    let mut more_applies = false;
    // Within [`NEXT_BATCH`] of the last batch: no child writes in this pass.
    let budget = if inputs.batch_wait.is_some() {
        0
    } else {
        APPLIES_PER_PASS
    };
    let mut counts = Counts {
        selected: selected.len() as i64,
        ..Counts::default()
    };
    let mut working = 0i64;
    let mut first_stalled: Option<(String, String)> = None;
    // A selected instance that a VncPassword written by hand names is left to that one: no child
    // (an existing child is removed like one whose instance left), counted as stalled.
    let yielded: BTreeMap<&str, &str> = selected
        .iter()
        .filter_map(|id| inputs.taken.get(id).map(|n| (id.as_str(), n.as_str())))
        .collect();
    for id in &selected {
        let name = child_name(inputs.set_name, id);
        if let Some(owner) = yielded.get(id.as_str()) {
            counts.stalled += 1;
            first_stalled.get_or_insert((
                name,
                format!("InstanceClaimed, the instance is left to VncPassword {owner}"),
            ));
            continue;
        }
        let desired = child_spec(inputs.spec, &name, id);
        let child = by_name.get(name.as_str()).copied();
        match child {
            Some(c) if !c.owned => {
                // A VncPassword of that name written by hand: never touched.
                counts.stalled += 1;
                first_stalled.get_or_insert((c.name.clone(), "NotOwnedBySet".to_string()));
            }
            Some(c) => {
                if c.unselected_since.is_some() && evaluated {
                    steps.push(Step::Unmark {
                        name: c.name.clone(),
                    });
                }
                if c.spec != desired {
                    if applies < budget {
                        applies += 1;
                        steps.push(Step::Apply {
                            name: c.name.clone(),
                            spec: Box::new(desired),
                            uid: Some(c.uid.clone()),
                        });
                    } else {
                        more_applies = true;
                    }
                    working += 1;
                    continue;
                }
                match &c.state {
                    s if !s.observed => working += 1,
                    s if s.stalled.is_some() => {
                        counts.stalled += 1;
                        first_stalled
                            .get_or_insert((c.name.clone(), s.stalled.clone().unwrap_or_default()));
                    }
                    s if s.ready => {
                        counts.ready += 1;
                        if s.reboot_required {
                            counts.reboot_required += 1;
                        }
                    }
                    _ => working += 1,
                }
            }
            None => {
                working += 1;
                if applies < budget {
                    applies += 1;
                    steps.push(Step::Apply {
                        name,
                        spec: Box::new(desired),
                        uid: None,
                    });
                } else {
                    more_applies = true;
                }
            }
        }
    }
    // Children whose instance is no longer selected.
    let mut next_removal: Option<jiff::Timestamp> = None;
    for c in inputs.children.iter().filter(|c| c.owned) {
        if selected.contains(&c.instance_id)
            && !yielded.contains_key(c.instance_id.as_str())
            && c.name == child_name(inputs.set_name, &c.instance_id)
        {
            continue;
        }
        counts.pending_removal += 1;
        match c.unselected_since {
            None => steps.push(Step::MarkUnselected {
                name: c.name.clone(),
            }),
            Some(since) => {
                let due = since.checked_add(inputs.grace).unwrap_or(since);
                let handover_until = due.checked_add(SECRET_HANDOVER_WAIT).unwrap_or(due);
                let retained = retains_secret(c);
                let gone = c.state.instance_gone() || inputs.gone.contains(&c.instance_id);
                if due > inputs.now {
                    next_removal = Some(next_removal.map_or(due, |t| t.min(due)));
                } else if gone && retained && inputs.now < handover_until {
                    // Its instance is gone, so its password is live nowhere: the Secret is handed
                    // to the child (policy Delete: the child's reconcile adds the ownerReference)
                    // and goes with it, instead of staying forever under Retain.
                    let mut spec = c.spec.clone();
                    if let Some(g) = spec.password_generation.as_mut() {
                        g.secret_deletion_policy = SecretDeletionPolicy::Delete;
                    }
                    steps.push(Step::Apply {
                        name: c.name.clone(),
                        spec: Box::new(spec),
                        uid: Some(c.uid.clone()),
                    });
                    next_removal = Some(next_removal.map_or(inputs.now, |t| t.min(inputs.now)));
                } else if !retained
                    && inputs
                        .spec
                        .template
                        .password_generation
                        .secret_deletion_policy
                        == SecretDeletionPolicy::Retain
                    && !c.state.secret_goes_with_it
                    && inputs.now < handover_until
                {
                    // Handed over; waiting for the child's reconcile to take the Secret.
                    next_removal = Some(next_removal.map_or(inputs.now, |t| t.min(inputs.now)));
                } else {
                    steps.push(Step::Delete {
                        name: c.name.clone(),
                        uid: c.uid.clone(),
                    });
                }
            }
        }
    }
    if inputs.grace.is_zero()
        && steps
            .iter()
            .any(|s| matches!(s, Step::MarkUnselected { .. }))
    {
        // With a grace period of 0s a child marked now is deleted in the next pass.
        next_removal.get_or_insert(inputs.now);
    }

    let (ready, reconciling, stalled, requeue) = match &inputs.selection {
        Selection::Failed {
            reason,
            message,
            transient,
        } => {
            let requeue = if *transient {
                Duration::from_secs(60)
            } else {
                SETTLED_RECHECK
            };
            let failed = (reason.as_str().to_string(), message.clone());
            if *transient {
                (
                    Desired::new(condition::READY, false, failed.0.clone(), failed.1.clone()),
                    Some(failed),
                    None,
                    requeue,
                )
            } else {
                (
                    Desired::new(condition::READY, false, failed.0.clone(), failed.1.clone()),
                    None,
                    Some(failed),
                    requeue,
                )
            }
        }
        _ if selected.is_empty() => {
            let message = "the selector matches no instance: check selector (Node labels, or instance tags in this region)".to_string();
            (
                Desired::new(
                    condition::READY,
                    false,
                    SetReason::NothingSelected.as_str(),
                    message.clone(),
                ),
                None,
                Some((SetReason::NothingSelected.as_str().to_string(), message)),
                SETTLED_RECHECK,
            )
        }
        _ if working > 0 || !steps.is_empty() => {
            let message = format!(
                "{} of {} instances ready, {} in progress",
                counts.ready, counts.selected, working
            );
            let requeue = if more_applies {
                inputs.batch_wait.unwrap_or(NEXT_BATCH)
            } else {
                PROGRESS_RECHECK
            };
            (
                Desired::new(
                    condition::READY,
                    false,
                    SetReason::Progressing.as_str(),
                    message.clone(),
                ),
                Some((SetReason::Progressing.as_str().to_string(), message)),
                None,
                requeue,
            )
        }
        _ if counts.stalled > 0 => {
            let (name, reason) = first_stalled.clone().unwrap_or_default();
            let message = format!(
                "{} of {} instances stalled (e.g. VncPassword {name}: {reason}); {} ready",
                counts.stalled, counts.selected, counts.ready
            );
            (
                Desired::new(
                    condition::READY,
                    false,
                    SetReason::ChildrenStalled.as_str(),
                    message.clone(),
                ),
                None,
                Some((SetReason::ChildrenStalled.as_str().to_string(), message)),
                SETTLED_RECHECK,
            )
        }
        _ => (
            Desired::new(
                condition::READY,
                true,
                SetReason::AllReady.as_str(),
                format!("all {} instances ready", counts.selected),
            ),
            None,
            None,
            SETTLED_RECHECK,
        ),
    };
    let mut requeue = requeue;
    if let Some(due) = next_removal {
        let wait = Duration::try_from(inputs.now.duration_until(due)).unwrap_or(Duration::ZERO);
        requeue = requeue.min(wait.max(Duration::from_secs(1)));
    }
    let conditions = vec![
        ready,
        match reconciling {
            Some((reason, message)) => Desired::new(condition::RECONCILING, true, reason, message),
            None => Desired::new(
                condition::RECONCILING,
                false,
                SetReason::AllReady.as_str(),
                "",
            ),
        },
        match stalled {
            Some((reason, message)) => Desired::new(condition::STALLED, true, reason, message),
            None => Desired::new(condition::STALLED, false, SetReason::AllReady.as_str(), ""),
        },
    ];
    let left_to_others = yielded
        .iter()
        .take(LEFT_LISTED)
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect();
    Plan {
        steps,
        left_to_others,
        counts,
        conditions,
        requeue,
    }
}
