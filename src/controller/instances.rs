//! Batched, cached `DescribeInstances`.
//!
//! Every VncPassword waiting for a restart polls its instance. Asking ECS once per object would
//! spend the account's per-API rate limit quickly, so a look-up for one instance describes, in the
//! same calls (100 IDs each), every instance of that account and region looked up recently, and the
//! answer serves the other objects until it is older than they accept. Concurrent look-ups for one
//! account and region wait for a single call instead of each making one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ecs::{Credentials, EcsClient, EcsError, Instance};

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

#[derive(Default)]
struct Group {
    /// Instance IDs looked up recently, with when they were last wanted.
    wanted: HashMap<String, Instant>,
    /// Last answers: `None` means ECS did not return the instance.
    answers: HashMap<String, (Instant, Option<Instance>)>,
}

#[derive(Clone)]
pub struct InstanceCache {
    client: EcsClient,
    /// Instances not wanted for this long are no longer described with the others.
    forget_after: Duration,
    /// Answers older than this are refreshed along with any call that is made anyway.
    stale_after: Duration,
    groups: Arc<Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Group>>>>>,
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

    fn group(&self, key: Key) -> Arc<tokio::sync::Mutex<Group>> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.entry(key).or_default().clone()
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
        let group = self.group((identity(credentials), region.to_string()));
        // Held across the call: concurrent look-ups of this account and region wait for it and
        // then read its answer.
        let mut group = group.lock().await;
        let now = Instant::now();
        group.wanted.insert(instance_id.to_string(), now);
        if let Some((at, answer)) = group.answers.get(instance_id)
            && *at >= fresh_after
        {
            return Ok(answer.clone());
        }
        let forget_after = self.forget_after;
        group
            .wanted
            .retain(|_, last| now.duration_since(*last) < forget_after);
        // This instance, plus the others whose answers are getting old: a poll round is then one
        // call, while a burst of applies does not re-describe everything each time.
        let stale_before = now.checked_sub(self.stale_after).unwrap_or(now);
        let mut ids: Vec<String> = group
            .wanted
            .keys()
            .filter(|id| {
                *id == instance_id
                    || group
                        .answers
                        .get(*id)
                        .is_none_or(|(at, _)| *at < stale_before)
            })
            .cloned()
            .collect();
        ids.sort();
        let started = Instant::now();
        let found = self
            .client
            .describe_instances(credentials, region, &ids)
            .await?;
        let mut by_id: HashMap<String, Instance> = found
            .into_iter()
            .map(|i| (i.instance_id.clone(), i))
            .collect();
        let Group { wanted, answers } = &mut *group;
        answers.retain(|id, _| wanted.contains_key(id));
        for id in ids {
            let answer = by_id.remove(&id);
            answers.insert(id, (started, answer));
        }
        Ok(group.answers.get(instance_id).and_then(|(_, a)| a.clone()))
    }
}
