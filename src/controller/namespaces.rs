//! Which namespaces the controller watches (`--watch-namespaces`), and one watch stream over
//! several of them.
//!
//! All namespaces (the default) and a single namespace are one watch each, as kube-runtime makes
//! it. A list of namespaces is one watch per namespace, since Kubernetes has no watch over a set of
//! namespaces and a Role grants nothing cluster-wide. Those streams feed one reflector store (and
//! one VncPassword index), which is where care is needed: a store takes a watch's relist
//! (`Init` … `InitApply` … `InitDone`) as its *whole* new content, so one namespace's relist (after
//! a `410 Gone`, an API server restart) passed through as it is would drop every other namespace's
//! objects. [`watch`] therefore gives the store one initial list for the whole set (one `Init`,
//! every namespace's objects, one `InitDone` once every namespace has listed), and afterwards turns
//! a namespace's relist into `Apply` events for what it lists and `Delete` events for that
//! namespace's objects it no longer lists; other namespaces' objects are never touched.
//!
//! The `Delete` events name objects as the store holds them, so the stream reads the store it
//! feeds ([`Held`]): it must be consumed through that store's writer (a reflector's
//! `.reflect(writer)`, or the Secret directory's), with nothing in between that holds events back,
//! which applies each event before the stream is polled again.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Arc;

use futures::stream::{self, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher as watch_api;
use kube::runtime::watcher::{self, Event};

use super::watch_backoff;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// `--watch-namespaces`: a comma list of namespaces; empty for all namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchNamespaces(BTreeSet<String>);

impl WatchNamespaces {
    /// The namespaces, sorted; empty when every namespace is watched.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for WatchNamespaces {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let names = crate::controller::tenancy::comma_list(s);
        if let Some(bad) = names.iter().find(|n| !is_namespace_name(n)) {
            return Err(format!(
                "{bad:?} is not a namespace name (lowercase letters, digits and '-', at most 63; leave the list empty to watch every namespace)"
            ));
        }
        Ok(Self(names))
    }
}

/// A DNS-1123 label, which every namespace name is.
fn is_namespace_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// What the store fed by a merged stream holds of one namespace now (the objects a relist of that
/// namespace may have to `Delete`).
pub type Held<K> = Arc<dyn Fn(&str) -> Vec<K> + Send + Sync>;

/// [`Held`] of a reflector store.
pub fn held_in<K>(store: Store<K>) -> Held<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    Arc::new(move |namespace| {
        store
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .map(|o| (**o).clone())
            .collect()
    })
}
/// One namespace's events, with its index.
type Tagged<K> = BoxStream<'static, (usize, Result<Event<K>, watcher::Error>)>;

/// The watch of `K` over `namespaces` (all when empty), with kube-runtime's default backoff, for
/// the store that `held` reads (see the module's documentation).
pub fn watch<K>(
    client: &Client,
    namespaces: &WatchNamespaces,
    config: watcher::Config,
    held: Held<K>,
) -> Events<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let mut names: Vec<&str> = namespaces.names().collect();
    match names.len() {
        0 => watch_backoff::backoff(watch_api(Api::<K>::all(client.clone()), config)).boxed(),
        1 => watch_backoff::backoff(watch_api(
            Api::<K>::namespaced(client.clone(), names[0]),
            config,
        ))
        .boxed(),
        _ => merge(
            names
                .drain(..)
                .map(|ns| {
                    let events = watch_backoff::backoff(watch_api(
                        Api::<K>::namespaced(client.clone(), ns),
                        config.clone(),
                    ))
                    .boxed();
                    (ns.to_string(), events)
                })
                .collect(),
            held,
        )
        .boxed(),
    }
}

/// The events of `K` over `namespaces` for triggers only (no store: a relist's events are passed
/// on as they are; only the objects they carry matter, see `touched_objects`).
pub fn triggers<K>(
    client: &Client,
    namespaces: &WatchNamespaces,
    config: watcher::Config,
) -> Events<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    if namespaces.is_all() {
        return watch_backoff::backoff(watch_api(Api::<K>::all(client.clone()), config)).boxed();
    }
    stream::select_all(namespaces.names().map(|ns| {
        watch_backoff::backoff(watch_api(
            Api::<K>::namespaced(client.clone(), ns),
            config.clone(),
        ))
        .boxed()
    }))
    .boxed()
}

/// One namespace's part of the merged stream once the whole set has listed.
enum Part {
    /// Relisting: the names it has listed so far.
    Listing(HashSet<String>),
    Watching,
}

/// One namespace's part before the whole set has listed (the store is still being filled).
#[derive(Default)]
struct Initial {
    /// It has listed (and is not listing again).
    listed: bool,
    /// What it holds now: its latest list's names, with its watch events since.
    names: HashSet<String>,
    /// The store's buffer may hold its objects that `names` does not: it listed again, or deleted.
    dirty: bool,
}

struct Merge<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + Hash,
{
    inputs: SelectAll<Tagged<K>>,
    namespaces: Vec<String>,
    parts: Vec<Part>,
    /// Until the one `InitDone` for the whole set.
    initial: Option<Vec<Initial>>,
    /// Namespaces whose objects the store may hold without their latest list naming them: checked
    /// against the store (once every event sent before has reached it), `Delete`d from it.
    sweeps: Vec<(usize, HashSet<String>)>,
    out: VecDeque<Result<Event<K>, watcher::Error>>,
    held: Held<K>,
    started: bool,
}

/// Merges per-namespace watch streams (`(namespace, events)`) into the events of one store; see
/// the module's documentation. Public for its tests.
pub fn merge<K>(
    parts: Vec<(String, Events<K>)>,
    held: Held<K>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let n = parts.len();
    let mut namespaces = Vec::with_capacity(n);
    let mut inputs = SelectAll::new();
    for (i, (ns, events)) in parts.into_iter().enumerate() {
        namespaces.push(ns);
        inputs.push(events.map(move |e| (i, e)).boxed());
    }
    let state = Merge {
        inputs,
        namespaces,
        parts: (0..n).map(|_| Part::Watching).collect(),
        initial: Some((0..n).map(|_| Initial::default()).collect()),
        sweeps: Vec::new(),
        out: VecDeque::new(),
        held,
        started: false,
    };
    stream::unfold(state, |mut s| async move {
        let next = s.next().await?;
        Some((next, s))
    })
}

fn name_of<K: Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

impl<K> Merge<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    async fn next(&mut self) -> Option<Result<Event<K>, watcher::Error>> {
        if !self.started {
            self.started = true;
            return Some(Ok(Event::Init));
        }
        loop {
            if let Some(e) = self.out.pop_front() {
                return Some(e);
            }
            // Everything sent so far has reached the store (its reflector applies an event before
            // it asks for the next), so the store can be compared with a namespace's latest list.
            if self.initial.is_none() && !self.sweeps.is_empty() {
                self.sweep();
                continue;
            }
            let (i, event) = self.inputs.next().await?;
            self.take(i, event);
        }
    }

    /// `Delete` for each object the store holds in a swept namespace that its list did not name.
    fn sweep(&mut self) {
        let sweeps = std::mem::take(&mut self.sweeps);
        for (i, listed) in sweeps {
            let ns = self.namespaces[i].as_str();
            for obj in (self.held)(ns) {
                if !listed.contains(&name_of(&obj)) {
                    tracing::debug!(namespace = ns, name = ?obj.meta().name, "gone after the namespace's relist");
                    self.out.push_back(Ok(Event::Delete(obj)));
                }
            }
        }
    }

    fn take(&mut self, i: usize, event: Result<Event<K>, watcher::Error>) {
        let event = match event {
            Ok(e) => e,
            Err(e) => return self.out.push_back(Err(e)),
        };
        match self.initial.as_mut() {
            Some(initial) => {
                // The store is being filled for the first time: everything goes to its buffer as
                // InitApply; what a namespace deletes or stops listing meanwhile cannot be taken
                // out of that buffer, so it is swept once the buffer has become the store.
                let part = &mut initial[i];
                match event {
                    Event::Init => {
                        part.dirty |= part.listed || !part.names.is_empty();
                        part.listed = false;
                        part.names.clear();
                    }
                    Event::InitApply(o) | Event::Apply(o) => {
                        part.names.insert(name_of(&o));
                        self.out.push_back(Ok(Event::InitApply(o)));
                    }
                    Event::Delete(o) => {
                        part.names.remove(&name_of(&o));
                        part.dirty = true;
                    }
                    Event::InitDone => part.listed = true,
                }
                if initial.iter().all(|p| p.listed) {
                    for (j, part) in self
                        .initial
                        .take()
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                    {
                        if part.dirty {
                            self.sweeps.push((j, part.names));
                        }
                    }
                    self.out.push_back(Ok(Event::InitDone));
                }
            }
            None => match event {
                // A relist of this namespace alone.
                Event::Init => {
                    tracing::debug!(namespace = %self.namespaces[i], "relisting one namespace");
                    self.parts[i] = Part::Listing(HashSet::new());
                }
                Event::InitApply(o) => {
                    if let Part::Listing(names) = &mut self.parts[i] {
                        names.insert(name_of(&o));
                    }
                    self.out.push_back(Ok(Event::Apply(o)));
                }
                Event::InitDone => {
                    if let Part::Listing(names) =
                        std::mem::replace(&mut self.parts[i], Part::Watching)
                    {
                        self.sweeps.push((i, names));
                    }
                }
                e @ (Event::Apply(_) | Event::Delete(_)) => self.out.push_back(Ok(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::reflector;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c.data = Some([("v".to_string(), v.to_string())].into());
        c
    }

    type Tx = mpsc::UnboundedSender<Result<Event<ConfigMap>, watcher::Error>>;

    /// Two namespaces' watch streams fed by hand, merged into one reflector store.
    struct Rig {
        a: Tx,
        b: Tx,
        store: Store<ConfigMap>,
        events: BoxStream<'static, Result<Event<ConfigMap>, watcher::Error>>,
        seen: Vec<String>,
    }

    impl Rig {
        fn new() -> Self {
            let (store, writer) = reflector::store::<ConfigMap>();
            let (a, ra) = mpsc::unbounded();
            let (b, rb) = mpsc::unbounded();
            let events = merge(
                vec![("a".into(), ra.boxed()), ("b".into(), rb.boxed())],
                held_in(store.clone()),
            )
            .reflect(writer)
            .boxed();
            Self {
                a,
                b,
                store,
                events,
                seen: Vec::new(),
            }
        }

        /// Takes every event the merged stream has ready, as short strings.
        async fn drain(&mut self) -> Vec<String> {
            let mut got = Vec::new();
            while let Ok(Some(e)) =
                tokio::time::timeout(std::time::Duration::from_millis(50), self.events.next()).await
            {
                let e = e.expect("no error");
                let s = match &e {
                    Event::Init => "Init".to_string(),
                    Event::InitDone => "InitDone".to_string(),
                    Event::InitApply(o) => {
                        format!("InitApply {}", o.metadata.name.as_ref().unwrap())
                    }
                    Event::Apply(o) => format!(
                        "Apply {}/{}",
                        o.metadata.namespace.as_ref().unwrap(),
                        o.metadata.name.as_ref().unwrap()
                    ),
                    Event::Delete(o) => format!(
                        "Delete {}/{}",
                        o.metadata.namespace.as_ref().unwrap(),
                        o.metadata.name.as_ref().unwrap()
                    ),
                };
                got.push(s);
            }
            self.seen.extend(got.clone());
            got
        }

        fn held(&self) -> BTreeSet<String> {
            self.store
                .state()
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}={}",
                        o.metadata.namespace.as_ref().unwrap(),
                        o.metadata.name.as_ref().unwrap(),
                        o.data.as_ref().unwrap()["v"]
                    )
                })
                .collect()
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn list(tx: &Tx, objects: &[ConfigMap]) {
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        for o in objects {
            tx.unbounded_send(Ok(Event::InitApply(o.clone()))).unwrap();
        }
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
    }

    #[tokio::test]
    async fn one_namespace_relisting_keeps_the_other_namespaces_objects() {
        let mut rig = Rig::new();
        list(&rig.a, &[cm("a", "x", "1"), cm("a", "y", "1")]);
        assert_eq!(
            rig.drain().await,
            ["Init", "InitApply x", "InitApply y"],
            "no InitDone before every namespace has listed"
        );
        list(&rig.b, &[cm("b", "x", "1")]);
        rig.drain().await;
        assert_eq!(rig.held(), set(&["a/x=1", "a/y=1", "b/x=1"]));
        assert!(rig.store.wait_until_ready().await.is_ok());

        // a relists (410 Gone): y was deleted and z created during the gap, x changed.
        list(&rig.a, &[cm("a", "x", "2"), cm("a", "z", "1")]);
        assert_eq!(
            rig.drain().await,
            ["Apply a/x", "Apply a/z", "Delete a/y"],
            "a relist is applies and deletes of that namespace only"
        );
        assert_eq!(rig.held(), set(&["a/x=2", "a/z=1", "b/x=1"]));
        // An empty relist of b drops b's objects only; the watch goes on.
        list(&rig.b, &[]);
        rig.b
            .unbounded_send(Ok(Event::Apply(cm("b", "w", "1"))))
            .unwrap();
        assert_eq!(rig.drain().await, ["Delete b/x", "Apply b/w"]);
        assert_eq!(rig.held(), set(&["a/x=2", "a/z=1", "b/w=1"]));
        rig.a
            .unbounded_send(Ok(Event::Delete(cm("a", "x", "2"))))
            .unwrap();
        rig.drain().await;
        assert_eq!(rig.held(), set(&["a/z=1", "b/w=1"]));
        assert_eq!(
            rig.seen.iter().filter(|e| *e == "Init").count(),
            1,
            "one Init for the whole set: {:?}",
            rig.seen
        );
    }

    #[tokio::test]
    async fn a_namespace_that_restarts_or_deletes_before_the_set_has_listed_is_swept() {
        let mut rig = Rig::new();
        // a lists, then watches: p deleted, q added, while b has not listed yet.
        list(&rig.a, &[cm("a", "p", "1"), cm("a", "r", "1")]);
        rig.a
            .unbounded_send(Ok(Event::Delete(cm("a", "p", "1"))))
            .unwrap();
        rig.a
            .unbounded_send(Ok(Event::Apply(cm("a", "q", "1"))))
            .unwrap();
        // b's list fails half-way and starts over: s is gone by the second list.
        rig.b.unbounded_send(Ok(Event::Init)).unwrap();
        rig.b
            .unbounded_send(Ok(Event::InitApply(cm("b", "s", "1"))))
            .unwrap();
        rig.drain().await;
        assert!(
            rig.held().is_empty(),
            "nothing in the store before InitDone"
        );
        list(&rig.b, &[cm("b", "t", "1")]);
        let events = rig.drain().await;
        assert_eq!(
            events.iter().filter(|e| *e == "InitDone").count(),
            1,
            "{events:?}"
        );
        assert_eq!(rig.held(), set(&["a/q=1", "a/r=1", "b/t=1"]));
    }

    #[test]
    fn the_flag_takes_a_comma_list_of_namespace_names() {
        let parsed: WatchNamespaces = " team-b,team-a,,team-b ".parse().unwrap();
        assert_eq!(parsed.names().collect::<Vec<_>>(), ["team-a", "team-b"]);
        assert!("".parse::<WatchNamespaces>().unwrap().is_all());
        for bad in ["Team-A", "team_a", "-a", "a-", "*", &"a".repeat(64)] {
            let e = bad.parse::<WatchNamespaces>().unwrap_err();
            assert!(e.contains("is not a namespace name"), "{bad}: {e}");
        }
        let run = |flags: &[&str]| crate::controller::RunArgs::from_flags(flags.iter().copied());
        let names = |flags: &[&str]| -> Vec<String> {
            let args = run(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
            args.watch_namespaces.names().map(str::to_string).collect()
        };
        assert_eq!(
            names(&["--watch-namespaces=team-a,team-b"]),
            ["team-a", "team-b"]
        );
        assert_eq!(names(&["--watch-namespaces", "team-a"]), ["team-a"]);
        // The former flag is the same one.
        assert_eq!(names(&["--namespace=team-a"]), ["team-a"]);
        assert!(names(&[]).is_empty());
        let refused = run(&["--watch-namespaces=team-a,Team-B"])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("\"Team-B\" is not a namespace name"),
            "{refused}"
        );
    }
}
