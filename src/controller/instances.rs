//! Batched, cached, shared `DescribeInstances`.
//!
//! Every VncPassword waiting for a restart polls its instance. Asking ECS once per object would
//! spend the account's per-API rate limit quickly, so a look-up for one instance describes, in the
//! same calls (100 IDs each), every instance of that account and region looked up recently, and the
//! answer serves the other objects until it is older than they accept.
//!
//! Per (credentials, region), look-ups that find no fresh enough answer join the batch being
//! assembled. A batch is sent at once when the group sent none within the last `linger` (a lone
//! look-up waits for nothing), else when that much time has passed since the last one or when it
//! holds 100 IDs (one call's worth): in a wave of new objects, DescribeInstances goes out about
//! once per 100 objects instead of once per object. A call's result, error included, is shared by
//! every look-up it covers; no lock is held across the call. When a batch fails with an error that
//! one ID could cause (a refusal, not throttling or bad credentials), a look-up asks for its own ID
//! alone before it reports the error, so one bad ID never fails the others. Groups and answers
//! nobody asked for within `forget_after` are dropped.
//!
//! Hand-written rather than a TTL cache crate: the batching (which IDs go into the next call) and
//! the single shared call per group are the point, and no cache crate does those.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::ecs::{Credentials, EcsClient, EcsError, ErrorClass, Instance};

/// (credentials identity, region). The identity covers the secret too, so that an answer fetched
/// with valid credentials never serves a caller who only knows the AccessKeyId.
type Key = (String, String);

fn identity(credentials: &Credentials) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(credentials.access_key_id.as_bytes());
    h.update([0]);
    h.update(credentials.access_key_secret.expose().as_bytes());
    h.update([0]);
    if let Some(token) = &credentials.security_token {
        h.update(token.expose().as_bytes());
    }
    hex::encode(&h.finalize()[..12])
}

type CallResult = Result<(), Arc<EcsError>>;

/// IDs per DescribeInstances call (ECS's maximum for `InstanceIds`).
const MAX_IDS: usize = 100;

/// What a launched batch describes, and since when.
type Launch = Arc<Mutex<Option<(Instant, Vec<String>)>>>;

struct InFlight {
    seq: u64,
    started: Instant,
    ids: HashSet<String>,
    done: Shared<BoxFuture<'static, CallResult>>,
    launch: Launch,
}

/// A batch being assembled: look-ups join it until it is launched.
struct Pending {
    seq: u64,
    ids: Vec<String>,
    done: Shared<BoxFuture<'static, CallResult>>,
    launch: Launch,
    fire: Arc<tokio::sync::Notify>,
}

struct Group {
    /// Instance IDs looked up recently, with when they were last wanted.
    wanted: HashMap<String, Instant>,
    /// Last answers: `None` means ECS did not return the instance.
    answers: HashMap<String, (Instant, Option<Instance>)>,
    pending: Option<Pending>,
    in_flight: Vec<InFlight>,
    last_call: Option<Instant>,
    last_used: Instant,
    next_seq: u64,
}

impl Group {
    fn new(now: Instant) -> Self {
        Self {
            wanted: HashMap::new(),
            answers: HashMap::new(),
            pending: None,
            in_flight: Vec::new(),
            last_call: None,
            last_used: now,
            next_seq: 0,
        }
    }

    /// Fixes the pending batch's IDs (its look-ups, plus other wanted instances whose answers are
    /// getting old, so that a poll round is one call) and marks it in flight.
    fn launch(&mut self, now: Instant, stale_after: Duration) {
        let Some(p) = self.pending.take() else { return };
        let stale_before = now.checked_sub(stale_after).unwrap_or(now);
        let mut ids: HashSet<String> = p.ids.into_iter().collect();
        let mut extra: Vec<&String> = self
            .wanted
            .keys()
            .filter(|id| !ids.contains(*id))
            .filter(|id| {
                self.answers
                    .get(*id)
                    .is_none_or(|(at, _)| *at < stale_before)
            })
            .collect();
        extra.sort();
        let room = MAX_IDS.saturating_sub(ids.len() % MAX_IDS) % MAX_IDS;
        ids.extend(extra.into_iter().take(room).cloned());
        let mut sorted: Vec<String> = ids.iter().cloned().collect();
        sorted.sort();
        *p.launch.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, sorted));
        p.fire.notify_one();
        self.last_call = Some(now);
        self.in_flight.push(InFlight {
            seq: p.seq,
            started: now,
            ids,
            done: p.done,
            launch: p.launch,
        });
    }
}

type Groups = Arc<Mutex<HashMap<Key, Group>>>;

#[derive(Clone)]
pub struct InstanceCache {
    client: EcsClient,
    /// Instances (and groups) not wanted for this long are forgotten.
    forget_after: Duration,
    /// Answers older than this are refreshed along with any call that is made anyway.
    stale_after: Duration,
    /// A group sends at most one batch that is not full per this much time.
    linger: Duration,
    groups: Groups,
}

/// The default `linger`: in a wave of 100 new objects a second (or more), batches are full.
pub const LINGER: Duration = Duration::from_secs(1);

enum Next {
    Answer(Option<Instance>),
    /// Wait for this call, which describes our ID fresh enough; `launch` says which IDs it
    /// described.
    Wait {
        done: Shared<BoxFuture<'static, CallResult>>,
        launch: Launch,
    },
}

impl InstanceCache {
    pub fn new(client: EcsClient, forget_after: Duration, stale_after: Duration) -> Self {
        Self {
            client,
            forget_after,
            stale_after,
            linger: LINGER,
            groups: Default::default(),
        }
    }

    /// Replaces [`LINGER`].
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// (groups, remembered answers), for tests of bounded memory.
    pub fn size(&self) -> (usize, usize) {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        (groups.len(), groups.values().map(|g| g.answers.len()).sum())
    }

    /// Batches launched and not yet answered, for tests.
    pub fn in_flight(&self) -> usize {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.values().map(|g| g.in_flight.len()).sum()
    }

    /// The instance as ECS described it at or after `fresh_after`; `Ok(None)` when ECS does not
    /// return it.
    pub async fn describe(
        &self,
        credentials: &Credentials,
        region: &str,
        instance_id: &str,
        fresh_after: Instant,
    ) -> Result<Option<Instance>, EcsError> {
        let key: Key = (identity(credentials), region.to_string());
        loop {
            let next = self.next(&key, credentials, region, instance_id, fresh_after);
            let (done, launch) = match next {
                Next::Answer(answer) => return Ok(answer),
                Next::Wait { done, launch } => (done, launch),
            };
            let result = done.await;
            let batch = launch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or(0, |(_, ids)| ids.len());
            match result {
                Ok(()) => continue,
                Err(error) if batch > 1 && may_be_one_id(&error) => {
                    return self
                        .describe_alone(&key, credentials, region, instance_id)
                        .await;
                }
                Err(error) => return Err((*error).clone()),
            }
        }
    }

    fn next(
        &self,
        key: &Key,
        credentials: &Credentials,
        region: &str,
        instance_id: &str,
        fresh_after: Instant,
    ) -> Next {
        let now = Instant::now();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let forget_after = self.forget_after;
        groups.retain(|k, g| {
            k == key
                || g.pending.is_some()
                || !g.in_flight.is_empty()
                || now.duration_since(g.last_used) < forget_after
        });
        let group = groups.entry(key.clone()).or_insert_with(|| Group::new(now));
        group.last_used = now;
        group.wanted.insert(instance_id.to_string(), now);
        if let Some((at, answer)) = group.answers.get(instance_id)
            && *at >= fresh_after
        {
            return Next::Answer(answer.clone());
        }
        if let Some(f) = group
            .in_flight
            .iter()
            .find(|f| f.started >= fresh_after && f.ids.contains(instance_id))
        {
            return Next::Wait {
                done: f.done.clone(),
                launch: f.launch.clone(),
            };
        }
        if group.pending.is_none() {
            group
                .wanted
                .retain(|_, last| now.duration_since(*last) < forget_after);
            let Group {
                wanted, answers, ..
            } = &mut *group;
            answers.retain(|id, _| wanted.contains_key(id));
            let seq = group.next_seq;
            group.next_seq += 1;
            let delay = group.last_call.map_or(Duration::ZERO, |t| {
                (t + self.linger).saturating_duration_since(now)
            });
            let launch: Launch = Arc::default();
            let fire = Arc::new(tokio::sync::Notify::new());
            let done = self.call(
                key.clone(),
                credentials.clone(),
                region.to_string(),
                seq,
                delay,
                launch.clone(),
                fire.clone(),
            );
            group.pending = Some(Pending {
                seq,
                ids: Vec::new(),
                done,
                launch,
                fire,
            });
        }
        let Some(pending) = group.pending.as_mut() else {
            unreachable!("a pending batch was just made")
        };
        pending.ids.push(instance_id.to_string());
        let (done, launch, batch) = (
            pending.done.clone(),
            pending.launch.clone(),
            pending.ids.len(),
        );
        let lingering = group
            .last_call
            .is_some_and(|t| now.duration_since(t) < self.linger);
        if batch >= MAX_IDS || !lingering {
            group.launch(now, self.stale_after);
        }
        Next::Wait { done, launch }
    }

    /// One DescribeInstances for a batch: it waits until the batch is launched (full, or `delay`
    /// passed), then describes the batch's IDs and stores the answers in the group. Polled by
    /// whichever waiter gets there first, so it completes even when the look-up that started it
    /// is cancelled.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        key: Key,
        credentials: Credentials,
        region: String,
        seq: u64,
        delay: Duration,
        launch: Launch,
        fire: Arc<tokio::sync::Notify>,
    ) -> Shared<BoxFuture<'static, CallResult>> {
        let client = self.client.clone();
        let groups = self.groups.clone();
        let stale_after = self.stale_after;
        // A task of its own: the batch completes and leaves the group (with its credentials) even
        // when every look-up waiting for it was cancelled (a reconcile past its deadline, a lost
        // Lease).
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = fire.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            let (started, ids) = {
                let mut groups = groups.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(group) = groups.get_mut(&key)
                    && group.pending.as_ref().is_some_and(|p| p.seq == seq)
                {
                    group.launch(Instant::now(), stale_after);
                }
                launch
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| (Instant::now(), Vec::new()))
            };
            let result = client.describe_instances(&credentials, &region, &ids).await;
            let mut groups = groups.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(group) = groups.get_mut(&key) {
                group.in_flight.retain(|f| f.seq != seq);
                if let Ok(found) = &result {
                    let mut by_id: HashMap<&str, &Instance> =
                        found.iter().map(|i| (i.instance_id.as_str(), i)).collect();
                    for id in &ids {
                        let answer = by_id.remove(id.as_str()).cloned();
                        remember(&mut group.answers, id, started, answer);
                    }
                }
            }
            result.map(|_| ()).map_err(Arc::new)
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(EcsError::InvalidRequest(format!(
                    "the DescribeInstances batch failed: {e}"
                ))))
            })
        }
        .boxed()
        .shared()
    }

    async fn describe_alone(
        &self,
        key: &Key,
        credentials: &Credentials,
        region: &str,
        instance_id: &str,
    ) -> Result<Option<Instance>, EcsError> {
        let started = Instant::now();
        let ids = [instance_id.to_string()];
        let found = self
            .client
            .describe_instances(credentials, region, &ids)
            .await?;
        let answer = found.into_iter().find(|i| i.instance_id == instance_id);
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = groups.get_mut(key) {
            remember(&mut group.answers, instance_id, started, answer.clone());
        }
        Ok(answer)
    }
}

/// Keeps an answer unless a newer one is known: a slow batch that returns after a later one must
/// not put an older state of the instance back.
/// Keeps `answer` unless a newer one is kept. Of an instance's tags only the namespace tag is kept
/// (the only one a reconcile reads): an instance may carry dozens, and an answer is kept for every
/// instance looked up in the last `forget_after`.
fn remember(
    answers: &mut HashMap<String, (Instant, Option<Instance>)>,
    id: &str,
    launched: Instant,
    mut answer: Option<Instance>,
) {
    if let Some(instance) = answer.as_mut() {
        instance
            .tags
            .retain(|k, _| k == crate::controller::tenancy::NAMESPACE_TAG);
    }
    match answers.get(id) {
        Some((newer, _)) if *newer > launched => {}
        _ => {
            answers.insert(id.to_string(), (launched, answer));
        }
    }
}

/// Whether a batch's error may come from one of its IDs rather than from the account or ECS.
fn may_be_one_id(error: &EcsError) -> bool {
    matches!(error.class(), ErrorClass::Terminal | ErrorClass::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_only_the_namespace_tag_and_the_newest_wins() {
        let tagged = |id: &str| Instance {
            instance_id: id.into(),
            region_id: "cn-hangzhou".into(),
            status: "Running".into(),
            io_optimized: true,
            start_time: None,
            tags: [
                (
                    crate::controller::tenancy::NAMESPACE_TAG.to_string(),
                    "team-a".to_string(),
                ),
                ("acs:ack:cluster".to_string(), "c1".to_string()),
                ("owner".to_string(), "ops".to_string()),
            ]
            .into(),
        };
        let mut answers = HashMap::new();
        let later = Instant::now();
        let earlier = later - Duration::from_secs(1);
        remember(&mut answers, "i-1", later, Some(tagged("i-1")));
        let kept = answers["i-1"].1.as_ref().unwrap();
        assert_eq!(
            kept.tags.keys().collect::<Vec<_>>(),
            [crate::controller::tenancy::NAMESPACE_TAG]
        );
        // An older call's answer, arriving late, does not replace it.
        remember(&mut answers, "i-1", earlier, None);
        assert!(answers["i-1"].1.is_some());
    }
}
