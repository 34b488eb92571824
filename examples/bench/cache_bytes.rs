//! Heap bytes per object of the controller's caches, measured: reads `kubectl get -o json` lists of
//! VncPasswords and of Secrets (e.g. from a `controller_scale` run), keeps every object as the
//! controller's watches do (each VncPassword as a `CachedVncPassword` in its reflector store and in
//! its index, each Secret's metadata trimmed into the Secret metadata store) and prints the live heap bytes each
//! cache holds per object. Bytes are counted by this process's allocator, jemalloc as in the
//! controller's binary, as jemalloc hands them out (its size classes included, its own metadata
//! and free pages not). No server is reached.
//!
//!     cargo run --release --example cache_bytes -- vncpasswords.json [secrets.json] [--previous]
//!
//! `--previous` keeps what the caches kept before `CachedVncPassword` (for comparison): the whole
//! `VncPassword`, its status unpacked, without its managedFields, labels and others' annotations;
//! of a Secret also its `apiVersion` and `kind`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;

use ecs_vnc_controller::api::VncPassword;
use ecs_vnc_controller::controller::cache::{AsFull, CachedVncPassword};
use ecs_vnc_controller::controller::{index::Index, secret_cache};

/// Live heap bytes, as jemalloc's usable sizes.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { tikv_jemallocator::Jemalloc.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(
                unsafe { tikv_jemallocator::usable_size(ptr) } as isize,
                Ordering::Relaxed,
            );
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(
            unsafe { tikv_jemallocator::usable_size(ptr) } as isize,
            Ordering::Relaxed,
        );
        unsafe { tikv_jemallocator::Jemalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = unsafe { tikv_jemallocator::usable_size(ptr) } as isize;
        let new = unsafe { tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                unsafe { tikv_jemallocator::usable_size(new) } as isize - old,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The items of a `kubectl get -o json` list, each as its JSON text (the watcher parses each
/// object from the API server's bytes too).
fn items(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let list: serde_json::Value = serde_json::from_str(&text).expect("a JSON list");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i.to_string())
        .collect()
}

/// Keeps every object in a reflector store and in the index, as the VncPassword watch does: the
/// heap bytes both hold, those the store holds alone, and the store.
fn keep<K>(objects: impl Iterator<Item = K>) -> (isize, isize, reflector::Store<K>)
where
    K: AsFull + kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let index = Index::new();
    let (store, mut writer) = reflector::store::<K>();
    let start = live();
    for obj in objects {
        let event = Event::Apply(obj);
        index.apply(&event);
        writer.apply_watcher_event(&event);
    }
    let with_index = live() - start;
    drop(index);
    (with_index, live() - start, store)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let previous = args.iter().any(|a| a == "--previous");
    args.retain(|a| a != "--previous");
    let mut args = args.into_iter();
    let vnc_path = args
        .next()
        .expect("vncpasswords.json [secrets.json] [--previous]");
    let secrets_path = args.next();

    let vnc = items(&vnc_path);
    let n = vnc.len();
    let json_bytes: usize = vnc.iter().map(String::len).sum();
    // As listed: every object parsed, nothing dropped.
    let start = live();
    let listed: Vec<VncPassword> = vnc
        .iter()
        .map(|text| serde_json::from_str(text).expect("a VncPassword"))
        .collect();
    let as_listed = (live() - start) / n.max(1) as isize;
    drop(listed);
    println!(
        "inline sizes: VncPassword {} bytes (its status {}, its metadata {}), CachedVncPassword {} bytes, a Secret's metadata {} bytes",
        std::mem::size_of::<VncPassword>(),
        std::mem::size_of::<Option<ecs_vnc_controller::api::VncPasswordStatus>>(),
        std::mem::size_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(),
        std::mem::size_of::<CachedVncPassword>(),
        std::mem::size_of::<PartialObjectMeta<Secret>>(),
    );

    let (with_index, store_only, packed) = if previous {
        // The cache before `CachedVncPassword`: the whole VncPassword, slimmed of managedFields,
        // labels and others' annotations.
        let (with_index, store_only, _) = keep(vnc.iter().map(|text| {
            let mut obj: VncPassword = serde_json::from_str(text).expect("a VncPassword");
            obj.metadata.managed_fields = None;
            obj.metadata.labels = None;
            if let Some(a) = obj.metadata.annotations.as_mut() {
                a.retain(|k, _| k.starts_with("ecsvnc.io/"));
            }
            obj
        }));
        (with_index, store_only, 0)
    } else {
        let (with_index, store_only, store) =
            keep(vnc.iter().map(|text| {
                serde_json::from_str::<CachedVncPassword>(text).expect("a VncPassword")
            }));
        let packed: usize = store
            .state()
            .iter()
            .filter_map(|o| o.packed_status().map(|p| p.packed_len()))
            .sum();
        (with_index, store_only, packed)
    };
    println!(
        "{n} VncPasswords ({} bytes of JSON each, {as_listed} bytes each as listed): store {} bytes per object{}, index {} bytes per object",
        json_bytes / n.max(1),
        store_only / n.max(1) as isize,
        if previous {
            String::new()
        } else {
            format!(" (its packed status {} bytes)", packed / n.max(1))
        },
        (with_index - store_only) / n.max(1) as isize,
    );

    if let Some(path) = secrets_path {
        let secrets = items(&path);
        let m = secrets.len();
        let start = live();
        let kept = if previous {
            // Before the directory: kube-runtime's reflector store of each Secret's metadata,
            // trimmed to the name, namespace, uid, resourceVersion and the controlling owner.
            let (secret_store, mut secret_writer) = reflector::store::<PartialObjectMeta<Secret>>();
            for text in &secrets {
                let listed: PartialObjectMeta<Secret> =
                    serde_json::from_str(text).expect("a Secret's metadata");
                let meta = PartialObjectMeta::<Secret> {
                    metadata: ObjectMeta {
                        name: listed.metadata.name,
                        namespace: listed.metadata.namespace,
                        uid: listed.metadata.uid,
                        resource_version: listed.metadata.resource_version,
                        owner_references: listed.metadata.owner_references.map(|o| {
                            o.into_iter()
                                .filter(|o| o.controller == Some(true))
                                .collect()
                        }),
                        ..ObjectMeta::default()
                    },
                    ..PartialObjectMeta::default()
                };
                secret_writer.apply_watcher_event(&Event::Apply(meta));
            }
            (live() - start, secret_store.state().len())
        } else {
            let directory = secret_cache::SecretDirectory::new();
            for text in &secrets {
                let meta: PartialObjectMeta<Secret> =
                    serde_json::from_str(text).expect("a Secret's metadata");
                directory.apply(&Event::Apply(meta));
            }
            (live() - start, directory.len())
        };
        let (bytes, kept) = kept;
        println!(
            "{m} Secrets: metadata {} bytes per object",
            bytes / m.max(1) as isize
        );
        assert_eq!(kept, m);
    }
}
