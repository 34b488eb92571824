//! Batched, cached, shared `DescribeInstances`.
//!
//! Every VncPassword waiting for a restart polls its instance. Asking ECS once per object would
//! spend the account's per-API rate limit quickly, so a look-up for one instance describes, in the
//! same calls (100 IDs each), every instance of that account and region looked up recently, and the
//! answer serves the other objects until it is older than they accept.
//!
//! Per (credentials, region) at most one call is in flight. Its result, error included, is shared by
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

struct InFlight {
    started: Instant,
    ids: HashSet<String>,
    done: Shared<BoxFuture<'static, CallResult>>,
}

struct Group {
    /// Instance IDs looked up recently, with when they were last wanted.
    wanted: HashMap<String, Instant>,
    /// Last answers: `None` means ECS did not return the instance.
    answers: HashMap<String, (Instant, Option<Instance>)>,
    in_flight: Option<InFlight>,
    last_used: Instant,
}

impl Group {
    fn new(now: Instant) -> Self {
        Self {
            wanted: HashMap::new(),
            answers: HashMap::new(),
            in_flight: None,
            last_used: now,
        }
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
    groups: Groups,
}

enum Next {
    Answer(Option<Instance>),
    /// Wait for this call; `covers` when it describes our ID fresh enough.
    Wait {
        done: Shared<BoxFuture<'static, CallResult>>,
        covers: bool,
        batch: usize,
    },
}

impl InstanceCache {
    pub fn new(client: EcsClient, forget_after: Duration, stale_after: Duration) -> Self {
        Self {
            client,
            forget_after,
            stale_after,
            groups: Default::default(),
        }
    }

    /// (groups, remembered answers), for tests of bounded memory.
    pub fn size(&self) -> (usize, usize) {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        (groups.len(), groups.values().map(|g| g.answers.len()).sum())
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
            let (done, covers, batch) = match next {
                Next::Answer(answer) => return Ok(answer),
                Next::Wait {
                    done,
                    covers,
                    batch,
                } => (done, covers, batch),
            };
            let result = done.await;
            if !covers {
                // Someone else's call: wait for it, then make (or join) one that covers us.
                continue;
            }
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
            k == key || g.in_flight.is_some() || now.duration_since(g.last_used) < forget_after
        });
        let group = groups.entry(key.clone()).or_insert_with(|| Group::new(now));
        group.last_used = now;
        group.wanted.insert(instance_id.to_string(), now);
        if let Some((at, answer)) = group.answers.get(instance_id)
            && *at >= fresh_after
        {
            return Next::Answer(answer.clone());
        }
        if let Some(in_flight) = &group.in_flight {
            return Next::Wait {
                done: in_flight.done.clone(),
                covers: in_flight.started >= fresh_after && in_flight.ids.contains(instance_id),
                batch: in_flight.ids.len(),
            };
        }
        group
            .wanted
            .retain(|_, last| now.duration_since(*last) < forget_after);
        let Group {
            wanted, answers, ..
        } = &mut *group;
        answers.retain(|id, _| wanted.contains_key(id));
        // This instance, plus the others whose answers are getting old: a poll round is then one
        // call, while a burst of applies does not re-describe everything each time.
        let stale_before = now.checked_sub(self.stale_after).unwrap_or(now);
        let mut ids: Vec<String> = wanted
            .keys()
            .filter(|id| {
                *id == instance_id || answers.get(*id).is_none_or(|(at, _)| *at < stale_before)
            })
            .cloned()
            .collect();
        ids.sort();
        let done = self.call(
            key.clone(),
            credentials.clone(),
            region.to_string(),
            ids.clone(),
            now,
        );
        let batch = ids.len();
        group.in_flight = Some(InFlight {
            started: now,
            ids: ids.into_iter().collect(),
            done: done.clone(),
        });
        Next::Wait {
            done,
            covers: true,
            batch,
        }
    }

    /// One DescribeInstances for `ids`, storing the answers in the group when it ends. Polled by
    /// whichever waiter gets there first, so it completes even when the look-up that started it
    /// is cancelled.
    fn call(
        &self,
        key: Key,
        credentials: Credentials,
        region: String,
        ids: Vec<String>,
        started: Instant,
    ) -> Shared<BoxFuture<'static, CallResult>> {
        let client = self.client.clone();
        let groups = self.groups.clone();
        async move {
            let result = client.describe_instances(&credentials, &region, &ids).await;
            let mut groups = groups.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(group) = groups.get_mut(&key) {
                group.in_flight = None;
                if let Ok(found) = &result {
                    let mut by_id: HashMap<&str, &Instance> =
                        found.iter().map(|i| (i.instance_id.as_str(), i)).collect();
                    for id in &ids {
                        let answer = by_id.remove(id.as_str()).cloned();
                        group.answers.insert(id.clone(), (started, answer));
                    }
                }
            }
            result.map(|_| ()).map_err(Arc::new)
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
            group
                .answers
                .insert(instance_id.to_string(), (started, answer.clone()));
        }
        Ok(answer)
    }
}

/// Whether a batch's error may come from one of its IDs rather than from the account or ECS.
fn may_be_one_id(error: &EcsError) -> bool {
    matches!(error.class(), ErrorClass::Terminal | ErrorClass::Unknown)
}
