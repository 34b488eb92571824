//! Property test: nothing a tenant can write into a CRD-valid spec (or into its status, which a
//! tenant with write access to the status subresource controls too), at any clock, makes the
//! planner, the status recorders or the condition builders panic.

use proptest::prelude::*;

use super::*;
use crate::api::{RebootWindow, condition};
use crate::controller::conditions::merge;
use crate::controller::decide::{Waiting, conditions_for};
use crate::controller::record;
use crate::ecs::Instance;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

fn any_timestamp() -> impl Strategy<Value = jiff::Timestamp> {
    let (min, max) = (
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    prop_oneof![
        Just(jiff::Timestamp::MIN),
        Just(jiff::Timestamp::MAX),
        (min..=max).prop_map(|s| jiff::Timestamp::from_second(s).unwrap()),
        // Around today, where most arithmetic happens.
        (1_700_000_000i64..1_900_000_000).prop_map(|s| jiff::Timestamp::from_second(s).unwrap()),
    ]
}

/// What a status time field may hold: a real time anywhere in jiff's range, ECS's minute format,
/// or junk.
fn time_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        any_timestamp().prop_map(|t| Some(crate::ecs::signer::format_timestamp(t))),
        any_timestamp().prop_map(|t| Some(t.strftime("%Y-%m-%dT%H:%MZ").to_string())),
        Just(Some("9999-12-31T23:59:59Z".to_string())),
        Just(Some("-009999-01-01T00:00:00Z".to_string())),
        ".{0,30}".prop_map(Some),
    ]
}

fn go_duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1h".to_string()),
        Just("168h".to_string()),
        Just("8784h".to_string()),
        Just("110000000h".to_string()),
        Just("0.000000001ns".to_string()),
        "[0-9]{1,20}(\\.[0-9]{1,5})?(ns|us|ms|s|m|h)",
        "([0-9]{1,4}(h|m|s)){1,4}",
    ]
}

fn window() -> impl Strategy<Value = RebootWindow> {
    let field = prop_oneof![
        Just("*".to_string()),
        "[0-9]{1,2}",
        "[0-9]{1,2}-[0-9]{1,2}",
        "\\*/[0-9]{1,3}",
        Just("SUN".to_string()),
        Just("L".to_string()),
        "[A-Z]{3}",
    ];
    let schedule = prop_oneof![
        Just("0 2 * * SUN".to_string()),
        Just("* * * * *".to_string()),
        Just("0 0 29 2 *".to_string()),
        Just("30 3 * * *".to_string()),
        proptest::collection::vec(field, 5).prop_map(|f| f.join(" ")),
    ];
    (
        schedule,
        go_duration(),
        prop_oneof![
            Just(None),
            Just(Some("UTC".to_string())),
            Just(Some("Asia/Shanghai".to_string())),
            Just(Some("America/St_Johns".to_string())),
            Just(Some("Nowhere/Atlantis".to_string())),
        ],
    )
        .prop_map(|(schedule, duration, time_zone)| RebootWindow {
            schedule,
            duration,
            time_zone,
        })
}

fn spec() -> impl Strategy<Value = VncPasswordSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(go_duration()),
        proptest::collection::vec(window(), 0..=10),
        any::<bool>(),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(automatic, generate, rotation_interval, reboot_windows, sa, (new_shape, delete))| {
                let mut spec: VncPasswordSpec = serde_json::from_value(serde_json::json!({
                    "regionId": "cn-hangzhou",
                    "instanceId": "i-aaaaaaaa1",
                    "passwordSecretRef": {"name": "pw"},
                }))
                .unwrap();
                spec.reboot_policy = if automatic {
                    RebootPolicy::Automatic
                } else {
                    RebootPolicy::Manual
                };
                // Either spelling: the deprecated fields or the grouped ones.
                if new_shape {
                    spec.password_generation = generate.then_some(crate::api::PasswordGeneration {
                        rotation_interval,
                        secret_deletion_policy: if delete {
                            crate::api::SecretDeletionPolicy::Delete
                        } else {
                            crate::api::SecretDeletionPolicy::Retain
                        },
                    });
                } else {
                    spec.generate_password = generate;
                    spec.rotation_interval = rotation_interval;
                }
                spec.reboot_windows = reboot_windows;
                if sa {
                    let r = crate::api::ServiceAccountRef { name: "sa".into() };
                    if new_shape {
                        spec.credentials = Some(crate::api::CredentialsSource {
                            service_account_ref: Some(r),
                            ..Default::default()
                        });
                    } else {
                        spec.credentials_service_account_ref = Some(r);
                    }
                }
                spec
            },
        )
}

fn reason() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(Reason::ALL.to_vec()).prop_map(|r| r.as_str().to_string()),
        "[A-Za-z]{0,12}",
    ]
}

fn status() -> impl Strategy<Value = VncPasswordStatus> {
    let times = proptest::collection::vec(time_text(), 9);
    let facts = (
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![
            Just("Running".to_string()),
            Just("Stopped".to_string()),
            "[A-Za-z]{0,10}",
        ]),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(reason()),
        any::<bool>(),
    );
    (times, facts, any::<bool>()).prop_map(
        |(t, (io, instance_status, here, same_fp, stalled_reason, stalled_true), coherent)| {
            let mut s = VncPasswordStatus::default();
            s.instance.io_optimized = io;
            s.instance.status = instance_status;
            s.instance.key = here.then(|| "cn-hangzhou/i-aaaaaaaa1".to_string());
            s.applied.instance = here.then(|| "cn-hangzhou/i-aaaaaaaa1".to_string());
            s.applied.fingerprint = Some(if same_fp { "hmac-sha256:k1:AAAA" } else { "x" }.into());
            s.applied.secret = same_fp.then(|| AppliedSecret {
                name: "pw".into(),
                key: "password".into(),
                uid: "s".into(),
                resource_version: "1".into(),
            });
            s.applied.time = t[0].clone();
            s.applied.ecs_time = t[1].clone();
            s.instance.start_time_at_apply = t[2].clone();
            s.instance.restart_observed_time = t[3].clone();
            s.reboot.requested_time = t[4].clone();
            s.reboot.requested_for = same_fp.then(|| "hmac-sha256:k1:AAAA".to_string());
            s.stall.checked_time = t[5].clone();
            s.rotation.next_time = t[6].clone();
            s.reboot.next_window = t[7].clone();
            s.applied.force_apply_token = t[8].clone();
            if coherent {
                // Applied and described, not I/O-optimized, Running, no intent: the deepest path,
                // where reboot timing and windows are computed.
                s.instance.io_optimized = Some(false);
                s.instance.status = Some("Running".into());
                s.instance.key = Some("cn-hangzhou/i-aaaaaaaa1".into());
                s.applied.instance = s.instance.key.clone();
                s.applied.fingerprint = Some("hmac-sha256:k1:AAAA".into());
                s.applied.secret = Some(AppliedSecret {
                    name: "pw".into(),
                    key: "password".into(),
                    uid: "s".into(),
                    resource_version: "1".into(),
                });
                s.instance.restart_observed_time = None;
                s.reboot.requested_time = None;
                return s;
            }
            if let Some(reason) = stalled_reason {
                s.conditions.push(Condition {
                    type_: condition::STALLED.into(),
                    status: if stalled_true { "True" } else { "False" }.into(),
                    reason,
                    message: "m".into(),
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                    observed_generation: None,
                });
            }
            s
        },
    )
}

fn generated() -> impl Strategy<Value = Option<GeneratedSecret>> {
    prop_oneof![
        Just(None),
        Just(Some(GeneratedSecret::Missing)),
        Just(Some(GeneratedSecret::NotOurs)),
        (
            proptest::option::of(any_timestamp()),
            proptest::option::of("[a-z]{0,4}"),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(generated_at, rotate_token, previous_kept, owner_reference)| {
                    Some(GeneratedSecret::Ours {
                        generated_at,
                        rotate_token,
                        previous_kept,
                        owner_reference,
                        adopt: false,
                    })
                }
            ),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0u64..=u64::MAX).prop_map(Duration::from_secs),
        (1u64..100_000).prop_map(Duration::from_secs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn no_spec_status_or_clock_makes_the_planner_panic(
        now in any_timestamp(),
        spec in spec(),
        status in status(),
        generated in generated(),
        usable in any::<bool>(),
        credentials_ok in any::<bool>(),
        flags in proptest::collection::vec(any::<bool>(), 6),
        force in proptest::option::of("[a-z]{0,3}"),
        rotate in proptest::option::of("[a-z]{0,3}"),
        settings in (duration(), duration(), duration()),
        offset in proptest::option::of(any::<i64>()),
        start_time in time_text(),
    ) {
        let password = if usable {
            PasswordInput::Usable {
                fingerprint: "hmac-sha256:k1:AAAA".into(),
                secret: AppliedSecret {
                    name: "pw".into(),
                    key: "password".into(),
                    uid: "s".into(),
                    resource_version: "1".into(),
                },
            }
        } else {
            PasswordInput::Unusable(Failure::stalled(Reason::SecretNotFound, "m"))
        };
        let credentials = if credentials_ok {
            Ok("default:x".to_string())
        } else {
            Err(Failure::stalled(Reason::AuthFailed, "m"))
        };
        let round = Round {
            cache_behind: flags[0],
            described: flags[1],
            intent_written: flags[2],
            reboot_called: flags[3],
            failure: flags[4].then(|| Failure::retry(Reason::Throttled, "m", Pace::Throttled)),
        };
        let o = Observed {
            now,
            uid: "u",
            own_namespace: Some("ns"),
            generation: 1,
            spec: &spec,
            paused: flags[5],
            force_token: force.as_deref(),
            status: &status,
            password: &password,
            credentials: &credentials,
            key_id: "k1",
            generated: generated.as_ref(),
            rotate_token: rotate.as_deref(),
            claimed_by: None,
            round: &round,
            settings: PlanSettings {
                poll: settings.0,
                reboot_timeout: settings.1,
                stall_recheck: settings.2,
            },
            ecs_offset: offset.map(jiff::SignedDuration::from_secs),
            overwritten: flags[0] && flags[5],
            shared_credentials: flags[1] && flags[4],
        };
        let step = plan(&o);
        let _ = next_rotation(&o);
        let _ = stall_inputs(&o);
        let _ = reboot_not_before(&status, o.ecs_offset);
        if let Step::Finish { phase, .. } = &step {
            let desired = conditions_for(phase, &spec.instance_id);
            let _ = merge(&status.conditions, &desired, Some(1), now);
        }
        for waiting in [
            Waiting::RebootAfter(now),
            Waiting::RebootWindow(now),
            Waiting::RebootNotObserved("x".into()),
        ] {
            let _ = conditions_for(&Phase::WaitingForRestart(waiting), "i-1");
        }
        // What ECS says is recorded without panicking too, whatever the times.
        let mut after = status.clone();
        let instance = Instance {
            instance_id: "i-aaaaaaaa1".into(),
            region_id: "cn-hangzhou".into(),
            status: "Running".into(),
            io_optimized: false,
            start_time: start_time.clone(),
            tags: Default::default(),
        };
        record::described(&mut after, "cn-hangzhou/i-aaaaaaaa1", &instance, now);
        record::reboot_intent(&mut after, now);
    }
}
