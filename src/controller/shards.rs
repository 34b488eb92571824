//! `--shards N`: the supervisor that shares the shard Leases out among the replicas (the plan is
//! [`crate::shard::assign`]; each Lease's election is [`crate::leader`]), and the client-side
//! filter that keeps a term to its shard's objects.

use std::collections::HashMap;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leader::{ANNOTATION_WANTED_BY, LeaderConfig, Record, Role};
use crate::shard::ShardRange;
use crate::shard::assign::{self, ShardView};

/// The name of shard `k`'s Lease.
pub fn lease_name(base: &str, shard: u16) -> String {
    format!("{base}-shard-{shard}")
}

/// With `ranges`, only the events of objects whose uid hashes into one of them (the client-side
/// filter; with the API server's sharded watch the others do not even arrive); without, every
/// event. An object without a uid (never served by the API server) is kept.
pub fn in_range_opt<K>(
    events: futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>,
    ranges: Option<Vec<ShardRange>>,
) -> futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: Resource + Send + 'static,
{
    let Some(ranges) = ranges else {
        return events;
    };
    Box::pin(events.try_filter(move |event| {
        let keep = match event {
            Event::Apply(o) | Event::InitApply(o) | Event::Delete(o) => {
                o.meta().uid.as_deref().is_none_or(|u| {
                    let hash = crate::shard::fnv1a64(u.as_bytes());
                    ranges.iter().any(|r| r.contains(hash))
                })
            }
            Event::Init | Event::InitDone => true,
        };
        futures::future::ready(keep)
    }))
}

/// The shards this replica holds, by role ([`Role::Leader`] or [`Role::Yielding`]).
pub type Held = std::collections::BTreeMap<u16, Role>;

/// The shards a new term serves: those led and not being handed over.
pub fn serving(held: &Held) -> std::collections::BTreeSet<u16> {
    held.iter()
        .filter(|(_, r)| **r == Role::Leader)
        .map(|(k, _)| *k)
        .collect()
}

/// Keeps `held` up to date with shard `shard`'s role, until its election ends.
pub async fn follow_role(shard: u16, mut role: watch::Receiver<Role>, held: watch::Sender<Held>) {
    loop {
        let now = *role.borrow_and_update();
        held.send_modify(|h| {
            if now == Role::Candidate {
                h.remove(&shard);
            } else {
                h.insert(shard, now);
            }
        });
        if role.changed().await.is_err() {
            held.send_modify(|h| {
                h.remove(&shard);
            });
            return;
        }
    }
}

/// One shard as the supervisor sees it: what its election last read, and whether this replica
/// leads it now.
pub struct Seen {
    pub view: watch::Receiver<Option<(Record, Instant)>>,
    pub role: watch::Receiver<Role>,
}

/// Every `retry_period / 4`: sets the gate of every shard's election (take free shards or not) and
/// asks for a shard when this replica holds fewer than its share. Ends with `stop`.
pub async fn supervise(
    client: Client,
    config: LeaderConfig,
    shards: Vec<Seen>,
    gate: watch::Sender<bool>,
    stop: impl std::future::Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let me = config.identity.clone();
    // Asks sent and not yet seen in the Lease: not sent again before a lease duration.
    let mut asked: HashMap<usize, Instant> = HashMap::new();
    let tick = (config.retry_period / 4).max(Duration::from_millis(100));
    let mut stop = std::pin::pin!(stop);
    loop {
        let now = Instant::now();
        let mut views = Vec::with_capacity(shards.len());
        for (k, seen) in shards.iter().enumerate() {
            // A shard being handed over counts as held by this replica until it is released.
            let leading = *seen.role.borrow() != Role::Candidate;
            let Some((record, at)) = seen.view.borrow().clone() else {
                break;
            };
            let live = record.holder.is_some() && now < at + record.lease_duration;
            let holder = match record.holder {
                Some(h) if h == me => leading.then_some(h),
                Some(h) => live.then_some(h),
                None => None,
            };
            // An ask stands while the Lease is held, and for a lease duration after it was freed
            // (or expired) for the asker: one nobody took by then is stale (the asker is gone).
            let mut wanted_by = record
                .wanted_by
                .filter(|_| holder.is_some() || now < at + config.lease_duration);
            if wanted_by.is_none()
                && asked
                    .get(&k)
                    .is_some_and(|t| now < *t + config.lease_duration)
            {
                wanted_by = Some(me.clone());
            }
            views.push(ShardView { holder, wanted_by });
        }
        // Until every shard's Lease has been read once, take nothing: a replica that has not
        // seen the others would take every shard.
        let plan = if views.len() == shards.len() {
            assign::plan(&views, &me)
        } else {
            assign::Plan::default()
        };
        gate.send_replace(plan.take_more);
        if let Some(k) = plan.ask_for {
            let name = lease_name(&config.lease_name, k as u16);
            match ask(&api, &name, &me).await {
                Ok(holder) => {
                    asked.insert(k, Instant::now());
                    tracing::info!(shard = k, lease = %name, ?holder, "holding fewer shards than my share: asked for this one");
                }
                Err(e) => {
                    tracing::warn!(shard = k, lease = %name, error = %e, "could not ask for a shard; trying again")
                }
            }
        }
        asked.retain(|_, t| now < *t + config.lease_duration);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// Writes this replica's name into the Lease's [`ANNOTATION_WANTED_BY`] with the resourceVersion
/// read (a PUT, like the election's own writes: the Role needs no `patch`); returns its holder.
async fn ask(api: &Api<Lease>, name: &str, me: &str) -> Result<Option<String>, kube::Error> {
    let mut lease = api.get(name).await?;
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_WANTED_BY.to_string(), me.to_string());
    let lease = api.replace(name, &PostParams::default(), &lease).await?;
    Ok(lease.spec.and_then(|s| s.holder_identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_lease_names_follow_the_base_name() {
        assert_eq!(
            lease_name("ecs-vnc-controller", 3),
            "ecs-vnc-controller-shard-3"
        );
    }
}
