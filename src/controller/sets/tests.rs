//! Table tests of the set planner: every transition of a child and of the set's conditions.

use std::collections::BTreeSet;

use super::plan::*;
use crate::api::{
    PasswordGeneration, SetReason, SetSelector, VncPasswordSetSpec, VncPasswordTemplate,
};

fn spec() -> VncPasswordSetSpec {
    VncPasswordSetSpec {
        region_id: "cn-hangzhou".into(),
        selector: SetSelector {
            instance_tags: Some([("pool".to_string(), "a".to_string())].into()),
            nodes: None,
        },
        template: VncPasswordTemplate {
            password_generation: PasswordGeneration::default(),
            credentials: None,
            reboot_policy: Default::default(),
            reboot_windows: Vec::new(),
        },
        removal_grace_period: "10m".into(),
        resync_interval: "5m".into(),
    }
}

fn now() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn child(id: &str, state: ChildState) -> Child {
    let name = child_name("s", id);
    Child {
        uid: format!("uid-{id}"),
        spec: child_spec(&spec(), &name, id),
        name,
        instance_id: id.into(),
        owned: true,
        unselected_since: None,
        state,
    }
}

fn ready() -> ChildState {
    ChildState {
        observed: true,
        ready: true,
        ..Default::default()
    }
}

/// ECS could not be asked (a transient failure): the children stand for the selection.
fn unavailable() -> Selection {
    Selection::Failed {
        reason: SetReason::SelectorUnavailable,
        message: "EcsUnavailable".into(),
        transient: true,
    }
}

fn ids(list: &[&str]) -> Selection {
    Selection::Instances(list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>())
}

fn run(selection: Selection, children: &[Child], grace_s: i64) -> Plan {
    run_gone(selection, children, grace_s, &[])
}

fn run_gone(selection: Selection, children: &[Child], grace_s: i64, gone: &[&str]) -> Plan {
    let gone: BTreeSet<String> = gone.iter().map(|s| s.to_string()).collect();
    run_with(selection, children, grace_s, &gone, &Default::default())
}

fn run_with(
    selection: Selection,
    children: &[Child],
    grace_s: i64,
    gone: &BTreeSet<String>,
    taken: &std::collections::BTreeMap<String, String>,
) -> Plan {
    let spec = spec();
    plan(&Inputs {
        set_name: "s",
        spec: &spec,
        selection,
        children,
        grace: jiff::SignedDuration::from_secs(grace_s),
        now: now(),
        gone,
        taken,
        left_before: &[],
        batch_wait: None,
    })
}

/// A pass while ECS cannot be asked, with the instances the status remembers as left to others.
fn remembering(
    children: &[Child],
    taken: &std::collections::BTreeMap<String, String>,
    left_before: &[String],
) -> Plan {
    let spec = spec();
    plan(&Inputs {
        set_name: "s",
        spec: &spec,
        selection: unavailable(),
        children,
        grace: jiff::SignedDuration::from_secs(600),
        now: now(),
        gone: &BTreeSet::new(),
        taken,
        left_before,
        batch_wait: None,
    })
}

fn reason(plan: &Plan, type_: &str) -> (bool, String) {
    let c = plan.conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status, c.reason.clone())
}

#[test]
fn new_instances_get_children_and_the_set_progresses() {
    let plan = run(ids(&["i-aaaaaaaa01", "i-aaaaaaaa02"]), &[], 600);
    assert_eq!(plan.steps.len(), 2);
    assert!(
        matches!(&plan.steps[0], Step::Apply { name, spec, uid: None } if name == "s-i-aaaaaaaa01" && spec.instance_id == "i-aaaaaaaa01" && spec.password_secret_ref.name == "s-i-aaaaaaaa01" && spec.password_generation.is_some())
    );
    assert_eq!(reason(&plan, "Ready"), (false, "Progressing".into()));
    assert_eq!(reason(&plan, "Reconciling"), (true, "Progressing".into()));
    assert_eq!(plan.counts.selected, 2);
}

#[test]
fn a_pass_within_a_second_of_the_last_batch_writes_no_child() {
    let spec = spec();
    let plan = plan(&Inputs {
        set_name: "s",
        spec: &spec,
        selection: ids(&["i-aaaaaaaa01"]),
        children: &[],
        grace: jiff::SignedDuration::from_secs(600),
        now: now(),
        gone: &BTreeSet::new(),
        taken: &Default::default(),
        left_before: &[],
        batch_wait: Some(std::time::Duration::from_millis(300)),
    });
    assert!(plan.steps.is_empty());
    assert_eq!(plan.requeue, std::time::Duration::from_millis(300));
    assert_eq!(reason(&plan, "Ready"), (false, "Progressing".into()));
}

#[test]
fn creation_is_bounded_per_pass() {
    let many: Vec<String> = (0..APPLIES_PER_PASS + 7)
        .map(|n| format!("i-aaaaaa{n:04}"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let plan = run(ids(&refs), &[], 600);
    assert_eq!(plan.steps.len(), APPLIES_PER_PASS);
    assert_eq!(plan.requeue, NEXT_BATCH);
}

#[test]
fn all_children_ready_make_the_set_ready_and_reboots_are_counted() {
    let mut pending = ready();
    pending.reboot_required = true;
    let children = [
        child("i-aaaaaaaa01", ready()),
        child("i-aaaaaaaa02", pending),
    ];
    let plan = run(ids(&["i-aaaaaaaa01", "i-aaaaaaaa02"]), &children, 600);
    assert!(plan.steps.is_empty());
    assert_eq!(reason(&plan, "Ready"), (true, "AllReady".into()));
    assert_eq!((plan.counts.ready, plan.counts.reboot_required), (2, 1));
    assert!(!reason(&plan, "Reconciling").0 && !reason(&plan, "Stalled").0);
}

#[test]
fn a_child_edited_by_hand_is_put_back() {
    let mut edited = child("i-aaaaaaaa01", ready());
    edited.spec.reboot_policy = crate::api::RebootPolicy::Automatic;
    let plan = run(ids(&["i-aaaaaaaa01"]), &[edited], 600);
    assert!(
        matches!(&plan.steps[..], [Step::Apply { spec, uid: Some(_), .. }] if spec.reboot_policy == crate::api::RebootPolicy::Manual)
    );
}

#[test]
fn a_child_whose_status_is_behind_is_still_working() {
    let plan = run(
        ids(&["i-aaaaaaaa01"]),
        &[child(
            "i-aaaaaaaa01",
            ChildState {
                observed: false,
                ready: true,
                ..Default::default()
            },
        )],
        600,
    );
    assert_eq!(reason(&plan, "Ready"), (false, "Progressing".into()));
}

#[test]
fn an_instance_that_leaves_is_marked_then_deleted_after_the_grace_period() {
    let children = [
        child("i-aaaaaaaa01", ready()),
        child("i-aaaaaaaa02", ready()),
    ];
    let plan = run(ids(&["i-aaaaaaaa01"]), &children, 600);
    assert_eq!(
        plan.steps,
        vec![Step::MarkUnselected {
            name: "s-i-aaaaaaaa02".into()
        }]
    );
    assert_eq!(plan.counts.pending_removal, 1);

    let mut marked = child("i-aaaaaaaa02", ready());
    marked.unselected_since = Some(now() - jiff::SignedDuration::from_secs(300));
    let children = [child("i-aaaaaaaa01", ready()), marked.clone()];
    let plan = run(ids(&["i-aaaaaaaa01"]), &children, 600);
    assert!(plan.steps.is_empty());
    assert_eq!(plan.requeue, std::time::Duration::from_secs(300));
    assert_eq!(reason(&plan, "Ready"), (true, "AllReady".into()));

    marked.unselected_since = Some(now() - jiff::SignedDuration::from_secs(600));
    let children = [child("i-aaaaaaaa01", ready()), marked];
    let plan = run(ids(&["i-aaaaaaaa01"]), &children, 600);
    assert_eq!(
        plan.steps,
        vec![Step::Delete {
            name: "s-i-aaaaaaaa02".into(),
            uid: "uid-i-aaaaaaaa02".into(),
        }]
    );
}

#[test]
fn an_instance_that_comes_back_within_the_grace_period_is_unmarked() {
    let mut marked = child("i-aaaaaaaa01", ready());
    marked.unselected_since = Some(now());
    let plan = run(ids(&["i-aaaaaaaa01"]), &[marked], 600);
    assert_eq!(
        plan.steps,
        vec![Step::Unmark {
            name: "s-i-aaaaaaaa01".into()
        }]
    );
}

#[test]
fn while_ecs_cannot_be_asked_the_children_stand_for_the_selection() {
    let mut marked = child("i-aaaaaaaa02", ready());
    marked.unselected_since = Some(now());
    let plan = run(
        unavailable(),
        &[child("i-aaaaaaaa01", ready()), marked],
        600,
    );
    assert!(plan.steps.is_empty());
    assert_eq!((plan.counts.selected, plan.counts.pending_removal), (1, 1));
}

#[test]
fn a_selector_that_fails_leaves_the_children_alone() {
    let failed = Selection::Failed {
        reason: SetReason::SelectorFailed,
        message: "AuthFailed: no".into(),
        transient: false,
    };
    let plan = run(failed, &[child("i-aaaaaaaa01", ready())], 600);
    assert!(plan.steps.is_empty());
    assert_eq!(reason(&plan, "Stalled"), (true, "SelectorFailed".into()));
    assert_eq!(reason(&plan, "Ready"), (false, "SelectorFailed".into()));

    let unavailable = Selection::Failed {
        reason: SetReason::SelectorUnavailable,
        message: "EcsUnavailable".into(),
        transient: true,
    };
    let plan = run(unavailable, &[child("i-aaaaaaaa01", ready())], 600);
    assert!(plan.steps.is_empty());
    assert_eq!(
        reason(&plan, "Reconciling"),
        (true, "SelectorUnavailable".into())
    );
    assert!(!reason(&plan, "Stalled").0);
}

#[test]
fn nothing_selected_is_a_stall() {
    let plan = run(ids(&[]), &[], 600);
    assert_eq!(reason(&plan, "Stalled"), (true, "NothingSelected".into()));
}

#[test]
fn stalled_children_stall_the_set_once_nothing_else_works() {
    let stalled = ChildState {
        observed: true,
        stalled: Some("InstanceClaimed".into()),
        ..Default::default()
    };
    let plan = run(
        ids(&["i-aaaaaaaa01", "i-aaaaaaaa02"]),
        &[
            child("i-aaaaaaaa01", ready()),
            child("i-aaaaaaaa02", stalled),
        ],
        600,
    );
    let (status, why) = reason(&plan, "Stalled");
    assert!(status && why == "ChildrenStalled");
    let message = &plan
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message;
    assert!(
        message.contains("s-i-aaaaaaaa02") && message.contains("InstanceClaimed"),
        "{message}"
    );
}

#[test]
fn a_vncpassword_of_the_childs_name_written_by_hand_is_never_touched() {
    let mut theirs = child("i-aaaaaaaa01", ready());
    theirs.owned = false;
    theirs.spec.reboot_policy = crate::api::RebootPolicy::Automatic;
    let plan = run(ids(&["i-aaaaaaaa01"]), &[theirs], 0);
    assert!(plan.steps.is_empty());
    assert_eq!(plan.counts.stalled, 1);
    assert_eq!(reason(&plan, "Stalled"), (true, "ChildrenStalled".into()));
}

#[test]
fn long_names_are_cut_with_a_hash_and_keep_the_instance() {
    let set = "a".repeat(63);
    let name = child_name(&set, "i-bp67acfmxazb4ph0001aaaaaaaaaaa");
    assert!(name.len() <= 63, "{name}");
    assert!(name.ends_with("-i-bp67acfmxazb4ph0001aaaaaaaaaaa"));
    assert_ne!(
        name,
        child_name(&"a".repeat(62), "i-bp67acfmxazb4ph0001aaaaaaaaaaa")
    );
    assert_eq!(child_name("pool", "i-1234567890"), "pool-i-1234567890");
}

#[test]
fn the_secret_of_a_released_instance_goes_with_its_child() {
    use crate::api::SecretDeletionPolicy::{Delete, Retain};
    let mut leaving = child("i-aaaaaaaa02", ready());
    leaving.unselected_since = Some(now() - jiff::SignedDuration::from_secs(600));
    let kept = [child("i-aaaaaaaa01", ready()), leaving.clone()];
    // Due, Retain: ask ECS whether the instance still exists.
    assert_eq!(
        due_retained(&kept, jiff::SignedDuration::from_secs(600), now()),
        vec!["i-aaaaaaaa02".to_string()]
    );
    // It exists: the child goes, its Secret stays (its password may be live).
    let plan = run_gone(ids(&["i-aaaaaaaa01"]), &kept, 600, &[]);
    assert!(matches!(&plan.steps[..], [Step::Delete { .. }]));
    // It is gone: first the Secret is handed to the child (policy Delete), nothing deleted yet.
    let plan = run_gone(ids(&["i-aaaaaaaa01"]), &kept, 600, &["i-aaaaaaaa02"]);
    assert!(
        matches!(&plan.steps[..], [Step::Apply { spec, uid: Some(_), .. }] if spec.password_generation.as_ref().unwrap().secret_deletion_policy == Delete)
    );
    // Handed over, the Secret not yet owned by the child: wait.
    let mut handed = leaving.clone();
    handed
        .spec
        .password_generation
        .as_mut()
        .unwrap()
        .secret_deletion_policy = Delete;
    assert!(
        due_retained(
            &[handed.clone()],
            jiff::SignedDuration::from_secs(600),
            now()
        )
        .is_empty()
    );
    let plan = run(
        ids(&["i-aaaaaaaa01"]),
        &[child("i-aaaaaaaa01", ready()), handed.clone()],
        600,
    );
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    // Owned by the child now: the child goes, and the Secret with it.
    handed.state.secret_goes_with_it = true;
    let plan = run(
        ids(&["i-aaaaaaaa01"]),
        &[child("i-aaaaaaaa01", ready()), handed.clone()],
        600,
    );
    assert!(matches!(&plan.steps[..], [Step::Delete { .. }]));
    // Never taken within the wait: the child goes anyway (its Secret stays).
    handed.state.secret_goes_with_it = false;
    handed.unselected_since =
        Some(now() - jiff::SignedDuration::from_secs(600) - SECRET_HANDOVER_WAIT);
    let plan = run(
        ids(&["i-aaaaaaaa01"]),
        &[child("i-aaaaaaaa01", ready()), handed],
        600,
    );
    assert!(matches!(&plan.steps[..], [Step::Delete { .. }]));
    let _ = Retain;
}

#[test]
fn set_work_has_its_own_share_in_the_namespace() {
    assert_eq!(super::share("team-a", false), "team-a");
    assert_eq!(super::share("team-a", true), "team-a/sets");
    assert_ne!(
        super::share("team-a", true),
        super::share("team-a-sets", false)
    );
}

#[test]
fn an_instance_named_by_a_vncpassword_written_by_hand_is_left_to_it() {
    let taken = [("i-aaaaaaaa02".to_string(), "by-hand".to_string())].into();
    // No child for it; counted as stalled with the reason.
    let plan = run_with(
        ids(&["i-aaaaaaaa01", "i-aaaaaaaa02"]),
        &[child("i-aaaaaaaa01", ready())],
        600,
        &BTreeSet::new(),
        &taken,
    );
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(
        (plan.counts.selected, plan.counts.ready, plan.counts.stalled),
        (2, 1, 1)
    );
    let (status, why) = reason(&plan, "Stalled");
    assert!(status && why == "ChildrenStalled");
    let message = &plan
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap()
        .message;
    assert!(message.contains("by-hand"), "{message}");
    // A child made before the VncPassword written by hand goes, as if its instance had left.
    let children = [
        child("i-aaaaaaaa01", ready()),
        child("i-aaaaaaaa02", ready()),
    ];
    let plan = run_with(
        ids(&["i-aaaaaaaa01", "i-aaaaaaaa02"]),
        &children,
        600,
        &BTreeSet::new(),
        &taken,
    );
    assert_eq!(
        plan.steps,
        vec![Step::MarkUnselected {
            name: "s-i-aaaaaaaa02".into()
        }]
    );
    assert_eq!(
        plan.left_to_others,
        vec![("i-aaaaaaaa02".to_string(), "by-hand".to_string())]
    );
    // While ECS cannot be asked, the status remembers it: still selected, still counted.
    let remembered = ["i-aaaaaaaa02".to_string()];
    let later = remembering(&[child("i-aaaaaaaa01", ready())], &taken, &remembered);
    assert_eq!((later.counts.selected, later.counts.stalled), (2, 1));
    // No longer named by hand: it is not remembered (the set asks ECS again, see `reconcile`).
    let freed = remembering(
        &[child("i-aaaaaaaa01", ready())],
        &Default::default(),
        &remembered,
    );
    assert_eq!((freed.counts.selected, freed.counts.stalled), (1, 0));
}

#[test]
fn a_settled_set_with_no_grace_period_does_not_spin() {
    let plan = run(ids(&["i-aaaaaaaa01"]), &[child("i-aaaaaaaa01", ready())], 0);
    assert!(plan.steps.is_empty());
    assert_eq!(plan.requeue, SETTLED_RECHECK);
}
