//! The Secret metadata cache: a metadata-only watch of Secrets feeding a [`SecretDirectory`],
//! which the reconciles read to tell whether a Secret changed since it was applied. A Secret's
//! metadata is the tenant's to fill (up to 256 KiB of annotations, managedFields, labels), so the
//! directory keeps only what the controller reads ([`SecretFacts`]).
//!
//! Hand-written rather than kube-runtime's reflector store: that store keeps a whole `ObjectMeta`
//! per object (360 bytes before any string) and a key with the name, namespace, uid and
//! resourceVersion once more, about 780 bytes per Secret; the directory keeps about 250.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};

use super::namespaces::Held;
use super::watch_backoff;
use crate::api::{
    ANNOTATION_GENERATED_AT, ANNOTATION_OWNER_UID, ANNOTATION_PREVIOUS_IN_EFFECT,
    ANNOTATION_ROTATE_TOKEN,
};

/// What the watch lists and watches: a Secret's metadata.
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
/// read; 50 keep that to about 13 MB, at one list request per 50 Secrets.
const LIST_PAGE: u32 = 50;

/// What the controller keeps of one Secret's metadata: its uid and resourceVersion (what
/// `cached_inputs` compares with `status.applied.secret`), the uid of its controlling owner
/// (whether a generated Secret is this VncPassword's) and the controller's own annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFacts {
    uid: Box<str>,
    resource_version: Box<str>,
    /// Kubernetes allows one controlling owner.
    controller: Option<Box<str>>,
    annotations: Box<[(&'static str, Box<str>)]>,
}

impl SecretFacts {
    pub fn of(meta: &ObjectMeta) -> Self {
        let annotations = meta.annotations.as_ref();
        Self {
            uid: meta.uid.as_deref().unwrap_or_default().into(),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            controller: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.as_str().into()),
            annotations: KEPT_ANNOTATIONS
                .iter()
                .filter_map(|k| Some((*k, annotations?.get(*k)?.as_str().into())))
                .collect(),
        }
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn resource_version(&self) -> &str {
        &self.resource_version
    }

    /// The uid of its controlling owner.
    pub fn controller_uid(&self) -> Option<&str> {
        self.controller.as_deref()
    }

    /// The controller's own annotations it carries.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

type ByName = HashMap<Box<str>, Arc<SecretFacts>>;

#[derive(Default)]
struct Inner {
    /// Namespace → name → facts.
    live: HashMap<Box<str>, ByName>,
    /// A relist in progress (`Init` … `InitDone`): what it has listed so far.
    relisting: Option<HashMap<Box<str>, ByName>>,
}

/// Every watched Secret's [`SecretFacts`], by namespace and name, fed by the watch's events the
/// way kube-runtime's reflector feeds its store: a relist builds a new directory, swapped in at its
/// `InitDone`, so the old one answers until then.
#[derive(Default)]
pub struct SecretDirectory {
    inner: RwLock<Inner>,
}

impl SecretDirectory {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Applies one event of the watch.
    pub fn apply(&self, event: &Event<SecretMeta>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Apply(s) => insert(&mut inner.live, &s.metadata),
            Event::Delete(s) => {
                let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
                    return;
                };
                if let Some(names) = inner.live.get_mut(ns.as_str()) {
                    names.remove(name.as_str());
                    if names.is_empty() {
                        inner.live.remove(ns.as_str());
                    }
                }
            }
            Event::Init => inner.relisting = Some(HashMap::new()),
            Event::InitApply(s) => match inner.relisting.as_mut() {
                Some(listed) => insert(listed, &s.metadata),
                None => insert(&mut inner.live, &s.metadata),
            },
            Event::InitDone => {
                if let Some(listed) = inner.relisting.take() {
                    inner.live = listed;
                }
            }
        }
    }

    /// The facts of Secret `namespace/name`, as the watch last saw it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<SecretFacts>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.live.get(namespace)?.get(name).cloned()
    }

    /// How many Secrets it knows.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.live.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What a merged watch of several namespaces needs of it (`namespaces::Held`): the Secrets it
    /// holds in a namespace, by name.
    pub fn held(self: &Arc<Self>) -> Held<SecretMeta> {
        let directory = self.clone();
        Arc::new(move |namespace| {
            let inner = directory.inner.read().unwrap_or_else(|p| p.into_inner());
            inner
                .live
                .get(namespace)
                .into_iter()
                .flat_map(|names| names.keys())
                .map(|name| {
                    let mut meta = SecretMeta::default();
                    meta.metadata.namespace = Some(namespace.to_string());
                    meta.metadata.name = Some(name.to_string());
                    meta
                })
                .collect()
        })
    }
}

fn insert(directory: &mut HashMap<Box<str>, ByName>, meta: &ObjectMeta) {
    let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) else {
        return;
    };
    let facts = Arc::new(SecretFacts::of(meta));
    match directory.get_mut(ns.as_str()) {
        Some(names) => {
            names.insert(name.as_str().into(), facts);
        }
        None => {
            directory.insert(ns.as_str().into(), [(name.as_str().into(), facts)].into());
        }
    }
}

/// The watch of `api`'s Secrets (metadata only), feeding `directory`.
pub fn watch(
    api: Api<SecretMeta>,
    directory: Arc<SecretDirectory>,
) -> impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static {
    store(
        watch_backoff::backoff(kube::runtime::watcher(api, config())),
        directory,
    )
}

/// The watcher configuration of the Secret metadata watch (lists of [`LIST_PAGE`] a page).
pub fn config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// `events` of a Secret metadata watch (made with [`config`]; one watch, or several namespaces'
/// merged by `controller::namespaces`), each applied to `directory` before it is passed on.
pub fn store(
    events: impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static,
    directory: Arc<SecretDirectory>,
) -> impl Stream<Item = Result<watcher::Event<SecretMeta>, watcher::Error>> + Send + 'static {
    events.inspect_ok(move |event| directory.apply(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn secret(ns: &str, name: &str, rv: &str) -> SecretMeta {
        SecretMeta {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..SecretMeta::default()
        }
    }

    #[test]
    fn facts_keep_the_uid_version_controlling_owner_and_own_annotations_only() {
        let mut s = secret("a", "pw", "7");
        s.metadata.annotations = Some(
            [
                (ANNOTATION_OWNER_UID.to_string(), "o-1".to_string()),
                ("team.example/notes".to_string(), "x".repeat(1000)),
            ]
            .into(),
        );
        s.metadata.labels = Some([("l".to_string(), "v".to_string())].into());
        s.metadata.owner_references = Some(vec![
            OwnerReference {
                uid: "other".into(),
                ..OwnerReference::default()
            },
            OwnerReference {
                uid: "o-1".into(),
                controller: Some(true),
                ..OwnerReference::default()
            },
        ]);
        let facts = SecretFacts::of(&s.metadata);
        assert_eq!(facts.uid(), "uid-pw");
        assert_eq!(facts.resource_version(), "7");
        assert_eq!(facts.controller_uid(), Some("o-1"));
        assert_eq!(
            facts.annotations(),
            [(ANNOTATION_OWNER_UID.to_string(), "o-1".to_string())].into()
        );
    }

    /// A relist answers from the old directory until its `InitDone`, then from what it listed
    /// only; watch events in between go to the old one.
    #[test]
    fn a_relist_swaps_in_at_its_end() {
        let d = SecretDirectory::new();
        d.apply(&Event::Init);
        d.apply(&Event::InitApply(secret("a", "one", "1")));
        d.apply(&Event::InitApply(secret("b", "two", "1")));
        d.apply(&Event::InitDone);
        assert_eq!(d.len(), 2);
        d.apply(&Event::Apply(secret("a", "one", "2")));
        assert_eq!(d.get("a", "one").unwrap().resource_version(), "2");
        d.apply(&Event::Init);
        d.apply(&Event::InitApply(secret("a", "one", "3")));
        assert_eq!(d.get("b", "two").unwrap().resource_version(), "1");
        d.apply(&Event::InitDone);
        assert_eq!(d.get("a", "one").unwrap().resource_version(), "3");
        assert!(d.get("b", "two").is_none(), "not relisted: gone");
        d.apply(&Event::Delete(secret("a", "one", "3")));
        assert!(d.is_empty());
        assert!((d.held())("a").is_empty());
    }

    #[test]
    fn held_names_a_namespaces_secrets() {
        let d = SecretDirectory::new();
        d.apply(&Event::Apply(secret("a", "one", "1")));
        d.apply(&Event::Apply(secret("b", "two", "1")));
        let held = (d.held())("a");
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].metadata.name.as_deref(), Some("one"));
        assert_eq!(held[0].metadata.namespace.as_deref(), Some("a"));
    }
}
