//! What a reconcile waiting for a work slot costs: kube-runtime's `Controller` (its concurrency
//! `slots::kube_window`, as the controller runs it) hands N objects of one namespace to the real
//! `reconcile`, whose one slot is held, so all N queue a ticket; heap bytes are counted by this
//! process's allocator before and while they wait (kube-runtime's scheduler's tables, grown while
//! the N passed through it, included). No server is reached. Then the slot is let go and the N are
//! drained through it, one at a time.
//!
//!     cargo run --release --example waiting_reconciles -- 10000

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use kube::runtime::controller::{Action, Config};
use kube::runtime::{Controller, reflector, watcher};
use serde_json::json;

use ecs_vnc_controller::controller::cache::CachedVncPassword;
use ecs_vnc_controller::controller::context::{Context, Settings, Watched, system_clock};
use ecs_vnc_controller::controller::fingerprint::FingerprintKey;
use ecs_vnc_controller::controller::index::Index;
use ecs_vnc_controller::controller::instances::InstanceCache;
use ecs_vnc_controller::controller::plan::PlanSettings;
use ecs_vnc_controller::controller::reconcile::{ReconcileError, reconcile};
use ecs_vnc_controller::controller::service_account::{ExchangeConfig, ServiceAccountCredentials};
use ecs_vnc_controller::controller::slots;
use ecs_vnc_controller::ecs::{ClientConfig, EcsClient};
use ecs_vnc_controller::metrics::Metrics;

/// Live heap bytes.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn object(i: usize) -> CachedVncPassword {
    serde_json::from_value(json!({
        "apiVersion": "ecsvnc.io/v1alpha1", "kind": "VncPassword",
        "metadata": {"name": format!("vm-{i}"), "namespace": "flood",
                     "uid": format!("00000000-0000-0000-0000-{i:012}"), "resourceVersion": "1",
                     "generation": 1},
        "spec": {"regionId": "cn-hangzhou", "instanceId": format!("i-wait{i:011}"),
                 "passwordSecretRef": {"name": format!("vm-{i}-vnc")}},
    }))
    .expect("object")
}

fn error_policy(_: Arc<CachedVncPassword>, _: &ReconcileError, _: Arc<Context>) -> Action {
    Action::await_change()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    ecs_vnc_controller::ecs::client::install_crypto_provider();
    let nowhere = "http://127.0.0.1:9";
    let client =
        kube::Client::try_from(kube::Config::new(nowhere.parse().expect("url"))).expect("client");
    let ecs = EcsClient::new(ClientConfig {
        endpoint: Some(nowhere.into()),
        ..ClientConfig::default()
    })
    .expect("ECS client");
    let (store, mut writer) = reflector::store::<CachedVncPassword>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..n {
        writer.apply_watcher_event(&watcher::Event::InitApply(object(i)));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let secrets = ecs_vnc_controller::controller::secret_cache::SecretDirectory::new();
    let (_synced_tx, synced) = tokio::sync::watch::channel(true);
    let settings = Settings {
        allowed_default_credentials: Default::default(),
        default_credentials: None,
        service_accounts: ServiceAccountCredentials::new(ExchangeConfig {
            oidc_provider_arn: None,
            sts_endpoint: nowhere.into(),
            duration_seconds: 900,
            timeout: Duration::from_secs(1),
        }),
        plan: PlanSettings {
            poll: Duration::from_secs(30),
            reboot_timeout: Duration::from_secs(900),
            stall_recheck: Duration::from_secs(1800),
        },
        reconcile_timeout: Duration::from_secs(50),
        resync_interval: Duration::from_secs(600),
        concurrency: 1,
        clock: system_clock(),
        claims_from_api: false,
        served_namespaces: Default::default(),
    };
    let index = Arc::new(Index::new());
    let ctx = Arc::new(Context::new(
        client,
        ecs.clone(),
        InstanceCache::new(ecs, Duration::from_secs(120), Duration::from_secs(15)),
        FingerprintKey::generate(),
        settings,
        kube::runtime::events::Reporter {
            controller: "waiting".into(),
            instance: None,
        },
        Arc::new(Metrics::new()),
        Watched {
            objects: store.clone(),
            index: index.clone(),
            secrets,
            secrets_synced: synced,
        },
    ));
    let size = std::mem::size_of_val(&reconcile(Arc::new(object(0)), ctx.clone()));
    // The one slot is held: every reconcile waits.
    let held = ctx.slots.acquire("elsewhere").now_or_never().flatten();
    assert!(held.is_some());

    let before = LIVE.load(Ordering::SeqCst);
    let triggers = futures::stream::iter(0..n)
        .map(|i| Ok::<_, watcher::Error>(object(i)))
        .chain(futures::stream::pending());
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = finished.clone();
    let run = tokio::spawn(
        Controller::for_stream(triggers, store)
            .with_config(Config::default().concurrency(slots::kube_window(1)))
            .reconcile_on(index.clone().wakes())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
                async {}
            }),
    );
    while ctx.slots.waiting() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the runner settle (every trigger consumed and dropped).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = LIVE.load(Ordering::SeqCst) - before;
    println!(
        "{n} reconciles waiting for a work slot as tickets: {:.1} MB of heap in all, {} bytes each (the reconcile's own future: {size} bytes)",
        waiting as f64 / 1e6,
        waiting / n as isize
    );
    // Drained through the one slot: each reconcile fails at once (no server), so this is the
    // queueing's own time: each turn wakes the next object through kube-runtime's scheduler, whose
    // timer has a 1 ms granularity (with more slots, their turns overlap).
    let started = std::time::Instant::now();
    drop(held);
    // Every object is reconciled twice: queued, then run when woken.
    let runs = 2 * n;
    while finished.load(Ordering::SeqCst) < runs {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "  drained one at a time through one slot in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    run.abort();
}
