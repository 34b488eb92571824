//! Leader election on a `coordination.k8s.io/v1` Lease, with the semantics of client-go's
//! `tools/leaderelection` (holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
//! leaseTransitions; acquire only a released or expired Lease; optimistic concurrency by
//! resourceVersion; release on shutdown by clearing the holder and setting leaseDurationSeconds=1).
//!
//! Written here rather than taken from a crate: kube-lease-manager 0.13 (the only one on kube 5)
//! keeps reporting leadership while it cannot reach the API server (it has no renew deadline), which
//! defeats fencing by time, and kube-leader-election is still on kube 4.
//!
//! Timing, as in client-go: a candidate decides whether a Lease held by another has expired on its
//! own monotonic clock, from the moment it last saw the Lease record change, never from the
//! holder's `renewTime` (so clock skew between nodes does not matter, only clock rates). The leader
//! counts its renew deadline from the moment *before* it sent its last successful renew, and steps
//! down when that deadline passes, whatever its requests in flight are doing. A candidate can take
//! the Lease no sooner than `lease_duration` after the leader sent that renew, so between the
//! leader stepping down and anyone else leading there are at least
//! `lease_duration - renew_deadline` (see [`LeaderConfig::fencing_margin`]).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// How this process takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    /// holderIdentity: the Pod's name, else hostname + a random suffix.
    pub identity: String,
    /// How long a candidate waits, after it last saw the Lease change, before it takes it over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renew.
    pub renew_deadline: Duration,
    /// Time between two tries to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// client-go's checks: lease duration > renew deadline > retry period > 0, whole seconds for the
    /// lease duration (leaseDurationSeconds is an integer).
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.trim().is_empty() {
            return Err("the leader identity must not be empty".into());
        }
        if self.retry_period.is_zero() {
            return Err("--leader-elect-retry-period must be positive".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err(
                "--leader-elect-renew-deadline must be longer than --leader-elect-retry-period"
                    .into(),
            );
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(
                "--leader-elect-lease-duration must be longer than --leader-elect-renew-deadline"
                    .into(),
            );
        }
        if self.lease_duration.subsec_nanos() != 0 {
            return Err("--leader-elect-lease-duration must be a whole number of seconds".into());
        }
        Ok(())
    }

    /// The least time between the moment a leader that cannot renew stops starting work and the
    /// moment another replica can lead: anything the old leader started must be over by then.
    pub fn fencing_margin(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_deadline)
    }
}

/// The identity to hold the Lease under: `POD_NAME`, else the hostname plus a random suffix (two
/// processes on one host must differ).
pub fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ecs-vnc-controller".to_string());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// The part of a Lease the election reads; two equal records mean "nothing happened".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// `None` when the Lease is released (holderIdentity empty or absent).
    pub holder: Option<String>,
    pub lease_duration: Duration,
    pub acquire_time: Option<jiff::Timestamp>,
    pub renew_time: Option<jiff::Timestamp>,
    pub transitions: i32,
    /// The replica that asked for this Lease (annotation [`ANNOTATION_WANTED_BY`]): its holder
    /// stops renewing it, and while it is free the asker has the first go at it.
    pub wanted_by: Option<String>,
}

/// On a shard Lease: the identity of the replica that asks its holder to hand it over (see
/// `crate::shard::assign`). An annotation rather than `spec.preferredHolder`, which the API server
/// drops unless its CoordinatedLeaderElection feature gate (off by default) is on.
pub const ANNOTATION_WANTED_BY: &str = "ecsvnc.io/shard-wanted-by";

impl Record {
    pub fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let Some(spec) = spec else {
            return Self::default();
        };
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            lease_duration: Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
            ),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            wanted_by: None,
        }
    }

    /// The record of a whole Lease: its spec and who asked for it.
    pub fn from_lease(lease: &Lease) -> Self {
        Self {
            wanted_by: lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_WANTED_BY))
                .filter(|w| !w.is_empty())
                .cloned(),
            ..Self::from_spec(lease.spec.as_ref())
        }
    }
}

/// What a candidate (or the leader) may do with the Lease as it last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Released, or held by another and not renewed for its whole duration: take it.
    Acquire,
    /// Held by this process: renew it.
    Renew,
    /// Held by another, valid until `expires` (on this process's clock) unless renewed again; or
    /// free and asked for by `holder`, who has the first go at it until `expires`.
    Follow { holder: String, expires: Instant },
    /// Held by this process and asked for by another: stop renewing it, so that the asker takes it
    /// once it expires (fencing by time, as for a takeover).
    HandOver { to: String },
}

/// The decision of client-go's `tryAcquireOrRenew`, as a pure function. `observed_at` is when this
/// process last saw `record` change.
pub fn decide(record: &Record, observed_at: Instant, now: Instant, me: &str) -> Decision {
    let asked_by_another = record.wanted_by.as_deref().filter(|w| *w != me);
    match &record.holder {
        None => match asked_by_another {
            Some(asker) if now < observed_at + record.lease_duration => Decision::Follow {
                holder: asker.to_string(),
                expires: observed_at + record.lease_duration,
            },
            _ => Decision::Acquire,
        },
        Some(holder) if holder == me => match asked_by_another {
            Some(asker) => Decision::HandOver {
                to: asker.to_string(),
            },
            None => Decision::Renew,
        },
        Some(holder) => {
            let expires = observed_at + record.lease_duration;
            if now < expires {
                Decision::Follow {
                    holder: holder.clone(),
                    expires,
                }
            } else {
                Decision::Acquire
            }
        }
    }
}

/// The spec to write for an `Acquire` or a `Renew` at wall time `now`.
pub fn held_spec(old: &Record, config: &LeaderConfig, now: jiff::Timestamp) -> LeaseSpec {
    let keeps = old.holder.as_deref() == Some(config.identity.as_str());
    let (acquire_time, transitions) = if keeps {
        (old.acquire_time.unwrap_or(now), old.transitions)
    } else if old == &Record::default() {
        // A Lease created just now: no transition yet.
        (now, 0)
    } else {
        (now, old.transitions.saturating_add(1))
    };
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().min(i32::MAX as u64) as i32),
        acquire_time: Some(MicroTime(acquire_time)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// The spec of a released Lease (client-go's `ReleaseOnCancel`): no holder, a 1 s duration, so that
/// a candidate takes it at its next try.
pub fn released_spec(old: &Record, now: jiff::Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(old.transitions),
        ..Default::default()
    }
}

/// The result of one try to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This process holds the Lease; the instant is taken before the request was sent.
    Held(Instant),
    /// Another holds it and it has not expired.
    HeldByOther(String),
    /// Someone wrote the Lease meanwhile (409): try again.
    Conflict,
    /// This process holds it but another asked for it ([`Decision::HandOver`]): not renewed.
    HandOver(String),
    /// Free or expired, but this process's gate says it holds enough Leases: not taken.
    NotWanted,
}

/// Leadership as the rest of the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Candidate,
    Leader,
    /// Still the leader (renewing), but another replica asked for the Lease: finish the work and
    /// say so ([`Elector::with_release`]); the Lease is then released for the asker.
    Yielding,
}

/// Told of every transition (log line, metric, Event) and of the first time the API answered.
pub trait Observer: Send + Sync {
    fn transition(&self, role: Role, why: &str);
    fn reached_api(&self) {}
}

/// One process's part in the election: its Lease API and what it last saw.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Option<(Record, Instant)>,
    /// When set, a free or expired Lease is taken only while it reads true (shards: see
    /// `crate::shard::assign`); renewing is never gated.
    gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// When set, every record read is published here with the instant it was seen to change.
    view: Option<tokio::sync::watch::Sender<Option<(Record, Instant)>>>,
    /// While yielding, a new value here means "the work has stopped": release the Lease.
    release: Option<tokio::sync::watch::Receiver<u64>>,
    leading: bool,
}

impl Elector {
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            gate: None,
            view: None,
            release: None,
            leading: false,
        }
    }

    /// When this process is asked for the Lease while leading, it says [`Role::Yielding`], keeps
    /// renewing, and releases the Lease once `release` changes (the caller has stopped its work).
    pub fn with_release(mut self, release: tokio::sync::watch::Receiver<u64>) -> Self {
        self.release = Some(release);
        self
    }

    /// Who asked for the Lease this process holds, as last read.
    fn asked_by_another(&self) -> Option<String> {
        self.observed
            .as_ref()
            .and_then(|(r, _)| r.wanted_by.clone())
            .filter(|w| *w != self.config.identity)
    }

    /// Takes a free or expired Lease only while `gate` reads true.
    pub fn with_gate(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Publishes every record read (and when it was seen to change) on `view`.
    pub fn with_view(
        mut self,
        view: tokio::sync::watch::Sender<Option<(Record, Instant)>>,
    ) -> Self {
        self.view = Some(view);
        self
    }

    fn wanted(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| *g.borrow())
    }

    fn observe(&mut self, record: Record, at: Instant) {
        if let Some(view) = &self.view {
            view.send_replace(Some((record.clone(), at)));
        }
        self.observed = Some((record, at));
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// One try of client-go's `tryAcquireOrRenew`: read the Lease (create it if absent), decide,
    /// and write with the resourceVersion read (a concurrent writer gets a 409 and loses).
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = Instant::now();
        let wall = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            if !self.wanted() {
                // Absent: free, as far as the gate's keeper is concerned.
                self.observe(Record::default(), now);
                return Ok(Attempt::NotWanted);
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(held_spec(&Record::default(), &self.config, wall)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(Record::from_lease(&created), now);
                    Ok(Attempt::Held(now))
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        let record = Record::from_lease(&lease);
        // A change is dated when its answer arrived (as client-go's observedTime), never earlier:
        // the holder may have sent it after this request left.
        let seen = Instant::now();
        let observed_at = match &self.observed {
            Some((known, at)) if *known == record => *at,
            _ => seen,
        };
        self.observe(record.clone(), observed_at);
        let decision = decide(&record, observed_at, seen, &self.config.identity);
        match decision {
            Decision::Follow { holder, .. } => Ok(Attempt::HeldByOther(holder)),
            // A candidate does not take back a Lease another asked for; the leader keeps
            // renewing it until its work has stopped (see `run`).
            Decision::HandOver { to } if !self.leading => Ok(Attempt::HandOver(to)),
            Decision::Acquire if !self.wanted() => Ok(Attempt::NotWanted),
            Decision::Acquire | Decision::Renew | Decision::HandOver { .. } => {
                if decision == Decision::Acquire {
                    // Taken: whoever asked for it has it now (or lost the race to it).
                    if let Some(a) = lease.metadata.annotations.as_mut() {
                        a.remove(ANNOTATION_WANTED_BY);
                    }
                }
                lease.spec = Some(held_spec(&record, &self.config, wall));
                match self
                    .api
                    .replace(&self.config.lease_name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(written) => {
                        self.observe(Record::from_lease(&written), now);
                        Ok(Attempt::Held(now))
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the Lease up if this process holds it, so that a candidate takes it at its next try.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            return Ok(());
        };
        let record = Record::from_lease(&lease);
        if record.holder.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let mut spec = released_spec(&record, jiff::Timestamp::now());
        if self.asked_by_another().is_some() || record.wanted_by.is_some() {
            // Handed over on request: the asker has the first go at it for a whole lease duration
            // (it tries only every retry period), the others leave it alone meanwhile.
            spec.lease_duration_seconds =
                Some(self.config.lease_duration.as_secs().min(i32::MAX as u64) as i32);
        }
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await?;
        self.observed = None;
        Ok(())
    }

    /// Runs the election until `stop` turns true: publishes the role on `role` (the leader steps down
    /// the moment its renew deadline passes, even with a renew in flight), and on stop releases the
    /// Lease if held. The caller stops its leader work *before* setting `stop`. A leader asked for
    /// the Lease by another process (annotation [`ANNOTATION_WANTED_BY`]) says [`Role::Yielding`],
    /// keeps renewing, and releases the Lease once the caller bumps [`Elector::with_release`]'s
    /// counter (its work for this Lease has stopped).
    pub async fn run(
        mut self,
        role: tokio::sync::watch::Sender<Role>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        observer: Arc<dyn Observer>,
    ) {
        let cfg = self.config.clone();
        let mut reached = false;
        loop {
            // Candidate: try every retry period until the Lease is ours.
            let mut renewed_at = loop {
                let attempt = tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return,
                    r = tokio::time::timeout(cfg.renew_deadline, self.try_acquire_or_renew()) => r,
                };
                match attempt {
                    Ok(Ok(Attempt::Held(at))) => {
                        if !reached {
                            reached = true;
                            observer.reached_api();
                        }
                        break at;
                    }
                    Ok(Ok(
                        Attempt::HeldByOther(_)
                        | Attempt::Conflict
                        | Attempt::HandOver(_)
                        | Attempt::NotWanted,
                    )) => {
                        if !reached {
                            reached = true;
                            observer.reached_api();
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, lease = %cfg.lease_name, "cannot read or write the leader Lease; retrying")
                    }
                    Err(_) => {
                        tracing::warn!(lease = %cfg.lease_name, "the leader Lease request timed out; retrying")
                    }
                }
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(cfg.retry_period) => {}
                }
            };
            let _ = role.send(Role::Leader);
            self.leading = true;
            observer.transition(Role::Leader, "acquired the Lease");

            // Leader: renew every retry period; step down at the renew deadline. Asked for by
            // another replica: yield, and release once the caller says its work has stopped.
            let mut yielding: Option<(String, u64)> = None;
            let why = loop {
                let deadline = renewed_at + cfg.renew_deadline;
                let next_try = (Instant::now() + cfg.retry_period).min(deadline);
                let released = {
                    let release = self.release.clone();
                    let since = yielding.as_ref().map(|(_, g)| *g);
                    async move {
                        match (release, since) {
                            (Some(mut r), Some(g)) => {
                                if r.wait_for(|v| *v != g).await.is_err() {
                                    std::future::pending::<()>().await
                                }
                            }
                            _ => std::future::pending::<()>().await,
                        }
                    }
                };
                let outcome = tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => {
                        let _ = role.send(Role::Candidate);
                        self.leading = false;
                        match tokio::time::timeout(cfg.renew_deadline, self.release()).await {
                            Ok(Ok(())) => observer.transition(Role::Candidate, "shutting down; released the Lease"),
                            Ok(Err(e)) => observer.transition(Role::Candidate, &format!("shutting down; could not release the Lease: {e}")),
                            Err(_) => observer.transition(Role::Candidate, "shutting down; releasing the Lease timed out"),
                        }
                        return;
                    }
                    _ = tokio::time::sleep_until(deadline) => break "could not renew the Lease before the renew deadline".to_string(),
                    _ = released => {
                        let to = yielding.take().map(|(to, _)| to).unwrap_or_default();
                        break match tokio::time::timeout(cfg.renew_deadline, self.release()).await {
                            Ok(Ok(())) => format!("handed the Lease over to {to}, which asked for it"),
                            Ok(Err(e)) => format!("asked for by {to}; could not release the Lease ({e}): it expires"),
                            Err(_) => format!("asked for by {to}; releasing the Lease timed out: it expires"),
                        };
                    }
                    r = async {
                        tokio::time::sleep_until(next_try).await;
                        self.try_acquire_or_renew().await
                    } => r,
                };
                match outcome {
                    Ok(Attempt::Held(at)) => {
                        renewed_at = at;
                        if yielding.is_none()
                            && let Some(to) = self.asked_by_another()
                        {
                            let generation =
                                self.release.as_ref().map(|r| *r.borrow()).unwrap_or(0);
                            tracing::info!(lease = %cfg.lease_name, asked_by = %to, "asked for the Lease: finishing the work in flight, then releasing it");
                            let _ = role.send(Role::Yielding);
                            yielding = Some((to, generation));
                        }
                    }
                    Ok(Attempt::HeldByOther(_)) => {
                        break "another replica holds the Lease".to_string();
                    }
                    Ok(Attempt::HandOver(to)) => break format!("asked for by {to}"),
                    // Only a free Lease is gated, and this one was ours.
                    Ok(Attempt::NotWanted) => {
                        break "the Lease was found free while leading".to_string();
                    }
                    Ok(Attempt::Conflict) => {
                        tracing::debug!("the Lease changed while renewing it; retrying")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the leader Lease; retrying until the renew deadline")
                    }
                }
            };
            let _ = role.send(Role::Candidate);
            self.leading = false;
            observer.transition(Role::Candidate, &why);
        }
    }
}

async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaderConfig {
        LeaderConfig {
            lease_name: "ecs-vnc-controller".into(),
            namespace: "ecs-vnc-system".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn held_by(holder: &str, secs: u64) -> Record {
        Record {
            holder: Some(holder.into()),
            lease_duration: Duration::from_secs(secs),
            acquire_time: None,
            renew_time: None,
            transitions: 3,
            wanted_by: None,
        }
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn client_go_defaults_are_valid_and_leave_five_seconds_of_fencing() {
        assert_eq!(cfg().validate(), Ok(()));
        assert_eq!(cfg().fencing_margin(), Duration::from_secs(5));
    }

    #[test]
    fn durations_out_of_order_are_refused() {
        let mut c = cfg();
        c.renew_deadline = Duration::from_secs(15);
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.retry_period = Duration::from_secs(10);
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.lease_duration = Duration::from_millis(15_500);
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.identity = " ".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let now = Instant::now();
        for holder in [None, Some(String::new())] {
            let spec = LeaseSpec {
                holder_identity: holder,
                lease_duration_seconds: Some(1),
                ..Default::default()
            };
            assert_eq!(
                decide(&Record::from_spec(Some(&spec)), now, now, "me"),
                Decision::Acquire
            );
        }
    }

    #[test]
    fn another_holder_is_followed_for_the_whole_lease_duration_after_it_was_seen_to_change() {
        let seen = Instant::now();
        let record = held_by("other", 15);
        let expires = seen + Duration::from_secs(15);
        assert_eq!(
            decide(&record, seen, seen + Duration::from_secs(14), "me"),
            Decision::Follow {
                holder: "other".into(),
                expires
            }
        );
        assert_eq!(decide(&record, seen, expires, "me"), Decision::Acquire);
    }

    #[test]
    fn its_own_lease_is_renewed_even_when_expired() {
        let seen = Instant::now();
        assert_eq!(
            decide(
                &held_by("me", 15),
                seen,
                seen + Duration::from_secs(60),
                "me"
            ),
            Decision::Renew
        );
    }

    #[test]
    fn a_renew_keeps_the_acquire_time_and_the_transitions() {
        let mut old = held_by("me", 15);
        old.acquire_time = Some(ts("2026-01-01T10:00:00Z"));
        let spec = held_spec(&old, &cfg(), ts("2026-01-01T10:05:00Z"));
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(
            spec.acquire_time,
            Some(MicroTime(ts("2026-01-01T10:00:00Z")))
        );
        assert_eq!(spec.renew_time, Some(MicroTime(ts("2026-01-01T10:05:00Z"))));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn a_takeover_counts_a_transition_and_a_new_lease_none() {
        let now = ts("2026-01-01T10:05:00Z");
        let spec = held_spec(&held_by("other", 15), &cfg(), now);
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        let released = Record::from_spec(Some(&released_spec(&held_by("other", 15), now)));
        assert_eq!(released.holder, None);
        assert_eq!(released.lease_duration, Duration::from_secs(1));
        assert_eq!(held_spec(&released, &cfg(), now).lease_transitions, Some(4));
        assert_eq!(
            held_spec(&Record::default(), &cfg(), now).lease_transitions,
            Some(0)
        );
    }

    #[test]
    fn a_lease_asked_for_is_handed_over_and_the_asker_has_the_first_go_at_it() {
        let seen = Instant::now();
        let mut mine = held_by("me", 15);
        mine.wanted_by = Some("other".into());
        // Held by this process: not renewed by a candidate, handed over by a leader.
        assert_eq!(
            decide(&mine, seen, seen, "me"),
            Decision::HandOver { to: "other".into() }
        );
        // Released: the asker takes it at once, everybody else follows it for a lease duration.
        let mut released =
            Record::from_spec(Some(&released_spec(&mine, ts("2026-01-01T10:00:00Z"))));
        released.wanted_by = Some("other".into());
        assert_eq!(decide(&released, seen, seen, "other"), Decision::Acquire);
        assert_eq!(
            decide(&released, seen, seen, "third"),
            Decision::Follow {
                holder: "other".into(),
                expires: seen + Duration::from_secs(1)
            }
        );
        assert_eq!(
            decide(&released, seen, seen + Duration::from_secs(1), "third"),
            Decision::Acquire
        );
        // Asked for by this process itself: an ordinary Lease.
        let mut asked = held_by("me", 15);
        asked.wanted_by = Some("me".into());
        assert_eq!(decide(&asked, seen, seen, "me"), Decision::Renew);
    }

    #[test]
    fn the_asker_is_read_from_the_lease_annotation() {
        let lease = Lease {
            metadata: ObjectMeta {
                annotations: Some([(ANNOTATION_WANTED_BY.to_string(), "b".to_string())].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("a".into()),
                ..Default::default()
            }),
        };
        let record = Record::from_lease(&lease);
        assert_eq!(record.holder.as_deref(), Some("a"));
        assert_eq!(record.wanted_by.as_deref(), Some("b"));
    }

    #[test]
    fn the_default_identity_is_the_pod_name_or_unique() {
        // POD_NAME is not set in unit tests; two identities from one host must differ.
        if std::env::var_os("POD_NAME").is_none() {
            assert_ne!(default_identity(), default_identity());
        }
    }
}
