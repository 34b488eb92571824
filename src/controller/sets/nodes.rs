//! The Node cache of `selector.nodes`: a watch of Nodes, started when the first such set is seen,
//! each Node trimmed to its name, labels and `spec.providerID` (a Node's status, with its image
//! list, is most of its size and is never read).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::controller::watch_backoff;

/// Nodes per page of the list: a Node can be tens of KiB before it is trimmed.
const LIST_PAGE: u32 = 50;

/// The Node watch, started once per term on first use.
pub struct NodeCache {
    client: Client,
    /// The store and the watch task, aborted when the cache (the term) goes.
    watch: OnceLock<(Store<Node>, tokio::task::AbortHandle)>,
    /// Called after every Node event (wakes the node sets).
    on_change: Arc<dyn Fn() + Send + Sync>,
}

impl NodeCache {
    pub fn new(client: Client, on_change: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            client,
            watch: OnceLock::new(),
            on_change,
        }
    }

    /// The store once it has listed all Nodes, or `None` when it has not within a few seconds
    /// (the first list of a large cluster, or no RBAC to list Nodes): a selection must never be
    /// read from a store that has not listed, where every Node would look deleted. Starts the
    /// watch on the first call.
    pub async fn store(&self) -> Option<Store<Node>> {
        let (store, _) = self.watch.get_or_init(|| {
            let (store, writer) = reflector::store();
            let on_change = self.on_change.clone();
            let events = watch_backoff::backoff(watcher(
                Api::<Node>::all(self.client.clone()),
                watcher::Config::default().page_size(LIST_PAGE),
            ))
            .modify(trim)
            .reflect(writer);
            let task = tokio::spawn(async move {
                futures::pin_mut!(events);
                // What a selection reads of each Node (a hash of labels and providerID): a Node's
                // status updates change neither and wake nothing. (kube's `predicate_filter` would
                // also hold back a Delete of an unchanged Node, which must wake the sets.)
                let mut seen: HashMap<String, u64> = HashMap::new();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(node)) => {
                            let name = node.metadata.name.clone().unwrap_or_default();
                            let part = selected_part(&node);
                            if seen.insert(name, part) != Some(part) {
                                on_change();
                            }
                        }
                        Ok(watcher::Event::Delete(node)) => {
                            seen.remove(node.metadata.name.as_deref().unwrap_or_default());
                            on_change();
                        }
                        Ok(watcher::Event::InitApply(node)) => {
                            let name = node.metadata.name.clone().unwrap_or_default();
                            seen.insert(name, selected_part(&node));
                        }
                        Ok(watcher::Event::Init) => seen.clear(),
                        Ok(watcher::Event::InitDone) => on_change(),
                        Err(e) => tracing::warn!(error = %e, "Node watch error; retrying with backoff (selector.nodes needs list and watch on nodes)"),
                    }
                }
            });
            (store, task.abort_handle())
        });
        let store = store.clone();
        match tokio::time::timeout(std::time::Duration::from_secs(5), store.wait_until_ready())
            .await
        {
            Ok(Ok(())) => Some(store),
            _ => None,
        }
    }
}

impl Drop for NodeCache {
    fn drop(&mut self) {
        if let Some((_, task)) = self.watch.get() {
            task.abort();
        }
    }
}

/// A hash of what a selection reads of a Node.
fn selected_part(node: &Node) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.metadata.labels.hash(&mut hasher);
    node.spec
        .as_ref()
        .and_then(|s| s.provider_id.as_ref())
        .hash(&mut hasher);
    hasher.finish()
}

/// Only the name, labels and providerID stay.
fn trim(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    node.metadata = ObjectMeta {
        name: meta.name,
        labels: meta.labels,
        resource_version: meta.resource_version,
        uid: meta.uid,
        ..ObjectMeta::default()
    };
    node.spec = node.spec.take().map(|spec| NodeSpec {
        provider_id: spec.provider_id,
        ..NodeSpec::default()
    });
    node.status = None;
}

/// What a node selector selects: the instance IDs of the matching Nodes in `region`, and how many
/// matching Nodes named no instance of that region.
pub fn select(
    nodes: &[Arc<Node>],
    selector: &LabelSelector,
    region: &str,
) -> Result<(BTreeSet<String>, usize), String> {
    let selector = Selector::try_from(selector.clone()).map_err(|e| e.to_string())?;
    let empty = Default::default();
    let mut ids = BTreeSet::new();
    let mut other = 0;
    for node in nodes {
        if !selector.matches(node.metadata.labels.as_ref().unwrap_or(&empty)) {
            continue;
        }
        match node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(instance_of)
        {
            Some((r, id)) if r == region => {
                ids.insert(id.to_string());
            }
            _ => other += 1,
        }
    }
    Ok((ids, other))
}

/// `<region>.<instance-id>`, as ACK's cloud controller manager sets `spec.providerID`
/// (https://github.com/kubernetes/cloud-provider-alibaba-cloud).
pub fn instance_of(provider_id: &str) -> Option<(&str, &str)> {
    let (region, id) = provider_id.split_once('.')?;
    let valid_id = id.starts_with("i-")
        && id.len() <= 32
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (valid_id && !region.is_empty()).then_some((region, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], provider: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: provider.map(str::to_string),
                ..Default::default()
            }),
            status: None,
        })
    }

    #[test]
    fn provider_ids_name_region_and_instance() {
        assert_eq!(
            instance_of("cn-hangzhou.i-bp67acfmxazb4ph0001"),
            Some(("cn-hangzhou", "i-bp67acfmxazb4ph0001"))
        );
        assert_eq!(instance_of("aws:///us-east-1a/i-0abc"), None);
        assert_eq!(instance_of("cn-hangzhou.192.168.0.1"), None);
        assert_eq!(instance_of("cn-hangzhou.i-"), Some(("cn-hangzhou", "i-")));
    }

    #[test]
    fn a_selector_picks_matching_nodes_of_its_region() {
        let nodes = vec![
            node("a", &[("pool", "p1")], Some("cn-hangzhou.i-aaaaaaaa01")),
            node("b", &[("pool", "p1")], Some("cn-shanghai.i-bbbbbbbb01")),
            node("c", &[("pool", "p2")], Some("cn-hangzhou.i-cccccccc01")),
            node("d", &[("pool", "p1")], None),
        ];
        let selector = LabelSelector {
            match_labels: Some([("pool".to_string(), "p1".to_string())].into()),
            ..Default::default()
        };
        let (ids, other) = select(&nodes, &selector, "cn-hangzhou").unwrap();
        assert_eq!(ids, BTreeSet::from(["i-aaaaaaaa01".to_string()]));
        assert_eq!(other, 2);
    }
}
