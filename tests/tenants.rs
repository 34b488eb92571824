//! One controller, many tenants: nothing one namespace writes stops the controller, borrows another
//! namespace's power or instances, or locks another team out. Real kube-apiserver, in-process
//! controller, ECS simulator.

mod support;

use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use ecs_vnc_controller::api::VncPassword;
use support::TestNamespace;
use support::case::*;
use support::controller::{put_secret, put_vncpassword, replace_secret};

/// A spec the API server refuses, and the message it gives.
async fn refused(client: &kube::Client, ns: &str, name: &str, spec: serde_json::Value) -> String {
    let object: VncPassword = serde_json::from_value(json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("object");
    Api::<VncPassword>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect_err(name)
        .to_string()
}

/// Values that once crashed the controller (a window of 110,000,000 hours overflowed the time
/// arithmetic) are refused at admission with the field named; the same values stored before these
/// rules existed become `Stalled/InvalidSpec` in the planner (its property test).
#[tokio::test]
async fn the_api_server_refuses_specs_that_would_overflow_or_flood_the_planner() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "hostilespec").await;
    let base = || {
        json!({"regionId": "cn-hangzhou", "instanceId": "i-hostile000001",
               "passwordSecretRef": {"name": "pw"}, "rebootPolicy": "Automatic"})
    };
    let window = |duration: &str| json!({"schedule": "0 2 * * SUN", "duration": duration});
    let mut huge = base();
    huge["rebootWindows"] = json!([window("110000000h")]);
    let message = refused(&client, &ns.name, "huge", huge).await;
    assert!(message.contains("at most 168h"), "{message}");
    let mut many = base();
    many["rebootWindows"] = json!((0..11).map(|_| window("1h")).collect::<Vec<_>>());
    let message = refused(&client, &ns.name, "many", many).await;
    assert!(
        message.contains("rebootWindows") && message.contains("10"),
        "{message}"
    );
    let mut zero = base();
    zero["rebootWindows"] = json!([window("0s")]);
    let message = refused(&client, &ns.name, "zero", zero).await;
    assert!(message.contains("longer than 0s"), "{message}");
    let mut rotation = base();
    rotation["passwordGeneration"] = json!({"rotationInterval": "9000h"});
    let message = refused(&client, &ns.name, "rotation", rotation).await;
    assert!(message.contains("8784h"), "{message}");
    let mut long = base();
    long["rebootWindows"] =
        json!([{"schedule": "0 2 * * SUN", "duration": "1h", "timeZone": "x".repeat(65)}]);
    let message = refused(&client, &ns.name, "longzone", long).await;
    assert!(message.contains("timeZone"), "{message}");
    ns.delete().await;
}

/// The widest values the API server accepts are served like any other spec, and a namespace full
/// of them does not stop another namespace's object from being applied.
#[tokio::test]
async fn extreme_but_valid_specs_never_stop_the_controller() {
    let case = Case::new(
        "extremes",
        &[("i-extremeok0001", true), ("i-extremes00001", false)],
    )
    .await;
    case.secret("fine-vnc", "Fine12").await;
    case.secret("odd-vnc", "Odd123").await;
    case.vncpw(
        "odd",
        "i-extremes00001",
        json!({"rebootPolicy": "Automatic",
               "rebootWindows": (0..10).map(|i| json!({
                   "schedule": if i % 2 == 0 { "0 0 29 2 *" } else { "59 23 31 12 *" },
                   "duration": "168h", "timeZone": "Pacific/Kiritimati"})).collect::<Vec<_>>()}),
    )
    .await;
    case.vncpw("fine", "i-extremeok0001", json!({})).await;
    case.wait("fine", "Ready", "True", Some("Applied")).await;
    // Applied, and waiting for a window (or, inside one, rebooted): never stalled, never stuck.
    let odd = support::eventually("odd to be applied", WAIT, || async {
        let s = status_of(&case, "odd").await;
        s.is_true("Applied").then_some(s)
    })
    .await;
    assert!(!odd.is_true("Stalled"), "{:?}", odd.conditions);
    case.finish().await;
}

/// An operator answering a leaked password sets `ecsvnc.io/rotate-requested-at`: a new password is
/// generated and applied at once, once per token.
#[tokio::test]
async fn the_rotate_annotation_rotates_now_once_per_token() {
    let case = Case::new("rotatenow", &[("i-rotatenow0001", true)]).await;
    case.vncpw("web", "i-rotatenow0001", json!({"passwordGeneration": {}}))
        .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let first = password_in(&secret_of(&case, "web-vnc").await.expect("Secret"));
    let annotate =
        |token: &'static str| case.annotate("web", "ecsvnc.io/rotate-requested-at", Some(token));
    annotate("leak-1").await;
    let second = support::eventually(
        "the rotated password to reach ECS",
        Duration::from_secs(20),
        || async {
            let now = password_in(&secret_of(&case, "web-vnc").await?);
            (now != first
                && case.sim.set_password("i-rotatenow0001").as_deref() == Some(now.as_str()))
            .then_some(now)
        },
    )
    .await;
    case.wait("web", "Ready", "True", Some("Applied")).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    // The same token again (a re-apply of the same manifest): nothing.
    annotate("leak-1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 2);
    assert_eq!(
        password_in(&secret_of(&case, "web-vnc").await.expect("Secret")),
        second
    );
    case.finish().await;
}

/// What the Secret says the console accepts now: the key `previous` while a rotation is not in
/// effect (annotation `ecsvnc.io/previous-in-effect`), else the password key.
fn in_effect_per_secret(secret: &k8s_openapi::api::core::v1::Secret) -> String {
    let kept = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ecsvnc.io/previous-in-effect"))
        .is_some_and(|v| v == "true");
    let key = if kept { "previous" } else { "password" };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default()
}

/// A rotation never destroys the only copy of the password in effect: the Secret keeps it under
/// `previous` until the new one is in effect (ECS accepted it and the instance restarted), a
/// rotation does not start while the object is stalled on refused credentials, and at every
/// settled moment the Secret alone tells the password the console accepts.
#[tokio::test]
async fn a_rotation_keeps_the_password_in_effect_readable_until_the_new_one_is() {
    let mut case = Case::new("keepprev", &[("i-keepprev00001", false)]).await;
    // ECS's clock, moved a minute before each console restart so that the restart shows in
    // minute-precision StartTime.
    let ecs = SharedClock::default();
    case.sim.state().set_clock({
        let c = ecs.clone();
        move || c.now()
    });
    case.stop_controller().await;
    case.flags = vec!["--stall-recheck-interval=2".into()];
    case.start_controller(true).await;
    let id = "i-keepprev00001";
    case.vncpw("web", id, json!({"passwordGeneration": {}}))
        .await;
    case.wait("web", "RebootRequired", "True", None).await;
    ecs.advance(60);
    case.sim.console_reboot(id);
    case.wait("web", "Ready", "True", Some("Applied")).await;
    let secret = || async { secret_of(&case, "web-vnc").await.expect("Secret") };
    let first = password_in(&secret().await);
    assert_eq!(case.sim.effective_password(id), Some(first.clone()));
    let annotate =
        |token: &'static str| case.annotate("web", "ecsvnc.io/rotate-requested-at", Some(token));
    // The credentials are refused from now on; a rotation is asked for.
    case.sim
        .fail_next("ModifyInstanceVncPasswd", "Forbidden.RAM", 403, 1000);
    annotate("t1").await;
    case.wait("web", "Stalled", "True", Some("AuthFailed"))
        .await;
    let during = secret().await;
    assert_ne!(password_in(&during), first, "rotated");
    assert_eq!(
        in_effect_per_secret(&during),
        first,
        "the password in effect is kept"
    );
    assert_eq!(case.sim.effective_password(id), Some(first.clone()));
    // Another rotation while stalled: nothing is written.
    annotate("t2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        secret().await.metadata.resource_version,
        during.metadata.resource_version
    );
    // The credentials work again: the rotated password is applied, but not in effect before the
    // restart; the Secret still says the first one is.
    case.sim.with_faults(|f| f.fail_next.clear());
    case.wait("web", "RebootRequired", "True", None).await;
    let applied = secret().await;
    assert_eq!(in_effect_per_secret(&applied), first);
    assert_eq!(case.sim.effective_password(id), Some(first.clone()));
    // The restart: the new password is in effect, `previous` goes, and the waiting rotation (t2)
    // follows, keeping the now effective password as its `previous`.
    ecs.advance(60);
    case.sim.console_reboot(id);
    let effective = case.sim.effective_password(id).expect("effective");
    assert_eq!(effective, password_in(&applied));
    support::eventually(
        "the t2 rotation, keeping the effective password",
        WAIT,
        || async {
            let s = secret_of(&case, "web-vnc").await?;
            let token = s
                .metadata
                .annotations
                .as_ref()?
                .get("ecsvnc.io/rotate-token")?
                .clone();
            (token == "t2").then_some(())
        },
    )
    .await;
    let after = secret().await;
    assert_eq!(in_effect_per_secret(&after), effective);
    case.finish().await;
}

/// A tenant's Secret padded with a large foreign annotation (and labels, finalizers, owners)
/// costs the controller nothing past the event that brought it: the Secret metadata cache keeps
/// only what the controller reads (identity, its own `ecsvnc.io/` annotations, the controlling
/// owner's uid), after the list and after an update alike.
#[tokio::test]
async fn a_secrets_foreign_metadata_never_enters_the_cache() {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};

    let client = support::client().await;
    let ns = TestNamespace::new(&client, "slimcache").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let owner = "0b7e1a52-8f0c-4a57-9d1e-3c3f4b1e2a10";
    let padding = "p".repeat(200_000);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "padded",
            "labels": {"team": "a", "app.kubernetes.io/managed-by": "someone"},
            "annotations": {
                "example.com/padding": padding,
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "ecsvnc.io/generated-at": jiff::Timestamp::now().to_string(),
                "ecsvnc.io/rotate-token": "t1",
                "ecsvnc.io/previous-in-effect": "true",
            },
            "finalizers": ["example.com/keep"],
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other",
                 "uid": "11111111-2222-3333-4444-555555555555"},
                {"apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword", "name": "web",
                 "uid": owner, "controller": true, "blockOwnerDeletion": true},
            ],
        },
        "stringData": {"password": "Slim12"},
    }))
    .expect("secret");
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create");

    let directory = ecs_vnc_controller::controller::secret_cache::SecretDirectory::new();
    let watch = tokio::spawn(
        ecs_vnc_controller::controller::secret_cache::watch(
            Api::namespaced(client.clone(), &ns.name),
            directory.clone(),
        )
        .for_each(|_| async {}),
    );
    let cached_at = |rv: Option<String>| {
        let (directory, ns) = (directory.clone(), ns.name.clone());
        async move {
            support::eventually("the Secret in the cache", WAIT, || async {
                directory
                    .get(&ns, "padded")
                    .filter(|s| Some(s.resource_version()) == rv.as_deref())
            })
            .await
        }
    };
    let uid = created.metadata.uid.clone().expect("uid");
    let check = |cached: &ecs_vnc_controller::controller::secret_cache::SecretFacts| {
        let text = format!("{cached:?}");
        assert!(!text.contains("ppppp"), "the padding is cached");
        assert!(!text.contains("example.com"), "{text}");
        assert!(text.len() < 1024, "cached: {} bytes: {text}", text.len());
        let annotations: Vec<String> = cached.annotations().into_keys().collect();
        assert_eq!(
            annotations,
            [
                "ecsvnc.io/generated-at",
                "ecsvnc.io/previous-in-effect",
                "ecsvnc.io/rotate-token"
            ]
        );
        assert_eq!(cached.controller_uid(), Some(owner));
        assert_eq!(cached.uid(), uid);
    };
    check(&*cached_at(created.metadata.resource_version.clone()).await);
    // An update: another foreign annotation, and the finalizer goes (so the namespace can too).
    let updated = secrets
        .patch(
            "padded",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "annotations": {"example.com/more": "m".repeat(50_000)},
                "finalizers": null,
            }})),
        )
        .await
        .expect("update");
    check(&*cached_at(updated.metadata.resource_version.clone()).await);
    watch.abort();
    ns.delete().await;
}

/// The sum of every `ecs_vnc_reconciles_total` series on the controller's /metrics.
async fn reconciles_total(case: &Case) -> f64 {
    let Some(addr) = case.controller.as_ref().map(|c| c.metrics_addr) else {
        return 0.0;
    };
    let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return 0.0;
    };
    response
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ecs_vnc_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A Secret larger than the controller reads (64 KiB), as a password Secret named by ten objects
/// or as a credentials Secret, stalls them with `SecretTooLarge` naming the Secret and the limit;
/// it is read at most once per version per read in flight (never once per object, and not again
/// when only the objects change); a change that makes it small ends the stall.
#[tokio::test]
async fn an_oversized_secret_stalls_and_is_not_read_again_until_it_changes() {
    const OBJECTS: usize = 10;
    let instance = |i: usize| format!("i-oversize{i:05}");
    let ids: Vec<String> = (0..=OBJECTS).map(instance).collect();
    let fleet: Vec<(&str, bool)> = ids.iter().map(|id| (id.as_str(), true)).collect();
    let mut case = Case::new("oversize", &fleet).await;
    let (recording, requests) = support::recording_client().await;
    case.stop_controller().await;
    // Two reconciles at a time: at most two reads can be in flight before the first answers.
    case.flags = vec!["--concurrency=2".into()];
    case.controller_client = Some(recording);
    case.start_controller(true).await;
    let padding = "p".repeat(100_000);
    put_secret(
        &case.client,
        case.ns(),
        "big-vnc",
        &[("password", "Big123"), ("padding", &padding)],
    )
    .await;
    for i in 0..OBJECTS {
        put_vncpassword(
            &case.client,
            case.ns(),
            &format!("vm-{i}"),
            json!({"regionId": "cn-hangzhou", "instanceId": instance(i),
                   "passwordSecretRef": {"name": "big-vnc"}}),
        )
        .await;
    }
    for i in 0..OBJECTS {
        let status = case
            .wait(
                &format!("vm-{i}"),
                "Stalled",
                "True",
                Some("SecretTooLarge"),
            )
            .await;
        let message = &status.condition("Stalled").expect("Stalled").message;
        assert!(
            message.contains("big-vnc") && message.contains("64 KiB"),
            "{message}"
        );
    }
    let path = format!("GET /api/v1/namespaces/{}/secrets/big-vnc", case.ns());
    let reads = || {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| **r == path)
            .count()
    };
    let first = reads();
    assert!(
        (1..=2).contains(&first),
        "{first} reads of the first version"
    );
    assert_eq!(case.sim.calls("ModifyInstanceVncPasswd"), 0);

    // Every object looks again (a VncPassword change): the same version is not read again.
    let before = reconciles_total(&case).await;
    for i in 0..OBJECTS {
        Api::<VncPassword>::namespaced(case.client.clone(), case.ns())
            .patch(
                &format!("vm-{i}"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                    "ecsvnc.io/force-apply-requested-at": "again"}}})),
            )
            .await
            .expect("annotate");
    }
    support::eventually("every object reconciled again", WAIT, || async {
        (reconciles_total(&case).await >= before + OBJECTS as f64).then_some(())
    })
    .await;
    assert_eq!(reads(), first, "the same version was read again");

    // A change that keeps it too large: read again, once or twice, not once per object.
    let before = reconciles_total(&case).await;
    let more = "q".repeat(100_000);
    put_secret(
        &case.client,
        case.ns(),
        "big-vnc",
        &[("password", "Big123"), ("padding", &more)],
    )
    .await;
    support::eventually("every object reconciled after the change", WAIT, || async {
        (reconciles_total(&case).await >= before + OBJECTS as f64).then_some(())
    })
    .await;
    let second = reads() - first;
    assert!(
        (1..=2).contains(&second),
        "{second} reads of the second version"
    );

    // Small again: the stall ends.
    replace_secret(
        &case.client,
        case.ns(),
        "big-vnc",
        &[("password", "Big123")],
    )
    .await;
    for i in 0..OBJECTS {
        case.wait(&format!("vm-{i}"), "Ready", "True", Some("Applied"))
            .await;
    }

    // A credentials Secret too large: the same stall, naming it.
    put_secret(
        &case.client,
        case.ns(),
        "big-creds",
        &[
            ("accessKeyId", AK),
            ("accessKeySecret", AK_SECRET),
            ("padding", &padding),
        ],
    )
    .await;
    case.secret("own-vnc", "Own123").await;
    let own = instance(OBJECTS);
    case.vncpw(
        "own",
        &own,
        json!({"credentials": {"secretRef": {"name": "big-creds"}}}),
    )
    .await;
    let status = case
        .wait("own", "Stalled", "True", Some("SecretTooLarge"))
        .await;
    let message = &status.condition("Stalled").expect("Stalled").message;
    assert!(
        message.contains("credentials Secret big-creds") && message.contains("64 KiB"),
        "{message}"
    );
    replace_secret(
        &case.client,
        case.ns(),
        "big-creds",
        &[("accessKeyId", AK), ("accessKeySecret", AK_SECRET)],
    )
    .await;
    case.wait("own", "Ready", "True", Some("Applied")).await;
    case.finish().await;
}
