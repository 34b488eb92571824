//! The Secret metadata cache: a metadata-only watch of Secrets feeding a reflector store, which
//! the reconciles read to tell whether a Secret changed since it was applied. A Secret's metadata
//! is the tenant's to fill (up to 256 KiB of annotations, managedFields, labels), so the store
//! keeps only what the controller reads.

use futures::Stream;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};

use super::watch_backoff;
use crate::api::{
    ANNOTATION_GENERATED_AT, ANNOTATION_OWNER_UID, ANNOTATION_PREVIOUS_IN_EFFECT,
    ANNOTATION_ROTATE_TOKEN,
};

pub type SecretMeta = PartialObjectMeta<Secret>;

/// The annotations the controller reads (`reconcile::inputs::generated_secret`); it wrote them.
const KEPT_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_OWNER_UID,
    ANNOTATION_GENERATED_AT,
    ANNOTATION_ROTATE_TOKEN,
    ANNOTATION_PREVIOUS_IN_EFFECT,
];

/// Secrets per page of the list (the watcher's default is 500). A Secret's metadata can hold
/// 256 KiB of annotations alone, so a page of 500 could hold 125 MiB of them before they are
/// trimmed; 50 keep that to about 13 MB, at one list request per 50 Secrets.
const LIST_PAGE: u32 = 50;

/// The watch of `api`'s Secrets (metadata only), each object trimmed to what the controller reads
/// before `writer`'s store keeps it.
pub fn watch(
    api: Api<SecretMeta>,
    writer: Writer<SecretMeta>,
) -> impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static {
    store(watch_backoff::backoff(watcher(api, config())), writer)
}

/// The watcher configuration of the Secret metadata watch (lists of [`LIST_PAGE`] a page).
pub fn config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// `events` of a Secret metadata watch (made with [`config`]; one watch, or several namespaces'
/// merged by `controller::namespaces`), each object trimmed to what the controller reads before
/// `writer`'s store keeps it.
pub fn store(
    events: impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static,
    writer: Writer<SecretMeta>,
) -> impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static {
    events.modify(keep_what_is_read).reflect(writer)
}

/// Name, namespace, uid and resourceVersion (the store's key, and what `cached_inputs` compares
/// with `status.applied.secret`), the controller's own annotations, and the uid of the controlling
/// owner (whether a generated Secret is this VncPassword's); nothing else, not even the list's
/// `apiVersion` and `kind` (the store knows its objects are Secrets).
pub fn keep_what_is_read(secret: &mut SecretMeta) {
    secret.types = None;
    let meta = std::mem::take(&mut secret.metadata);
    let annotations = meta.annotations.map(|mut all| {
        all.retain(|k, _| KEPT_ANNOTATIONS.contains(&k.as_str()));
        all
    });
    // Kubernetes allows one controlling owner.
    let controller = meta
        .owner_references
        .into_iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerReference {
            uid: o.uid,
            controller: Some(true),
            ..OwnerReference::default()
        });
    secret.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        annotations: annotations.filter(|a| !a.is_empty()),
        owner_references: controller.map(|o| vec![o]),
        ..ObjectMeta::default()
    };
}
