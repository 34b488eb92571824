//! How many shard Leases a replica should hold, as a pure function of what it sees of them.
//!
//! Every replica competes for the N shard Leases (`<lease-name>-shard-<k>`), each with the
//! election of [`crate::leader`] (fencing by time included). On top of it, this plan keeps the
//! shards spread over the replicas: a replica takes a free or expired shard only while it holds
//! fewer than its fair share (N divided by the replicas it sees, rounded up), and a replica that
//! holds fewer than N divided by the replicas rounded down, with no free shard left, asks the
//! replica holding the most to hand one over (the Lease annotation
//! [`crate::leader::ANNOTATION_WANTED_BY`]). The holder then stops renewing it and the asker takes
//! it when it expires, so a handover is as safe as a takeover after a crash.
//!
//! A replica sees the others only through the Leases they hold (and itself), so there is no
//! membership list to keep: a new replica holding nothing counts itself, finds itself below its
//! share and asks; a dead one's Leases expire and it stops counting. Views may differ for a retry
//! period; the worst that does is one shard too many taken or asked for, corrected on the next
//! rounds.

use std::collections::BTreeMap;

/// What this replica last saw of one shard Lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardView {
    /// Its holder, while the Lease is valid (on this replica's clock) or held by this replica.
    pub holder: Option<String>,
    /// The replica that asked for it (while the ask is current: the caller drops one on a free
    /// Lease nobody took for a lease duration).
    pub wanted_by: Option<String>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Take free or expired shards (the gate of every shard's election).
    pub take_more: bool,
    /// Ask the holder of this shard to hand it over.
    pub ask_for: Option<usize>,
}

pub fn plan(shards: &[ShardView], me: &str) -> Plan {
    let n = shards.len();
    // Who each shard is going to: its asker when asked for (held or already released to it),
    // else its holder.
    let going_to = |s: &ShardView| -> Option<String> { s.wanted_by.clone().or(s.holder.clone()) };
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    held.insert(me.to_string(), 0);
    for owner in shards.iter().filter_map(going_to) {
        *held.entry(owner).or_default() += 1;
    }
    let replicas = held.len();
    let mine = held.get(me).copied().unwrap_or(0);
    let ceil = n.div_ceil(replicas);
    let floor = n / replicas;
    let take_more = mine < ceil;
    // Free for anyone: nobody holds it and nobody else asked for it.
    let free = shards
        .iter()
        .any(|s| s.holder.is_none() && s.wanted_by.as_deref().is_none_or(|w| w == me));
    let ask_for = if mine < floor && !free {
        // The replica with the most shards (then the first by identity) gives up its highest one
        // nobody has asked for yet, if it holds at least two more than this replica.
        held.iter()
            .filter(|(r, _)| r.as_str() != me)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .filter(|(_, count)| **count >= mine + 2)
            .and_then(|(donor, _)| {
                shards.iter().rposition(|s| {
                    s.holder.as_deref() == Some(donor.as_str()) && s.wanted_by.is_none()
                })
            })
    } else {
        None
    };
    Plan { take_more, ask_for }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(holders: &[Option<&str>]) -> Vec<ShardView> {
        holders
            .iter()
            .map(|h| ShardView {
                holder: h.map(String::from),
                wanted_by: None,
            })
            .collect()
    }

    #[test]
    fn alone_a_replica_takes_every_shard() {
        let p = plan(&view(&[None, None, None, None]), "a");
        assert_eq!(
            p,
            Plan {
                take_more: true,
                ask_for: None
            }
        );
        let p = plan(&view(&[Some("a"), Some("a"), Some("a"), None]), "a");
        assert!(p.take_more);
        let p = plan(&view(&[Some("a"); 4]), "a");
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn two_replicas_take_two_each_and_no_more() {
        let p = plan(&view(&[Some("a"), Some("a"), Some("b"), None]), "a");
        assert!(!p.take_more, "b is seen: a's share is 2");
        // b has not been seen yet: it sees itself.
        let p = plan(&view(&[Some("a"), Some("a"), None, None]), "b");
        assert!(p.take_more);
        let p = plan(&view(&[Some("a"), Some("a"), Some("b"), None]), "b");
        assert!(p.take_more);
    }

    #[test]
    fn a_new_replica_asks_the_richest_for_its_highest_shard() {
        let p = plan(&view(&[Some("a"); 4]), "b");
        assert_eq!(
            p,
            Plan {
                take_more: true,
                ask_for: Some(3)
            }
        );
        // A shard asked for counts as the asker's: b asks for a second one, which is its share.
        let mut v = view(&[Some("a"); 4]);
        v[3].wanted_by = Some("b".into());
        assert_eq!(plan(&v, "b").ask_for, Some(2));
        v[2].wanted_by = Some("b".into());
        assert_eq!(plan(&v, "b"), Plan::default());
        // Another newcomer then has one to ask for (a keeps two, b gets two, c none: the next
        // round of a three-way split).
        v[2].wanted_by = None;
        assert_eq!(plan(&v, "c").ask_for, Some(2));
        // Once b has one, it still asks for a second (its share is 2).
        let v = view(&[Some("a"), Some("a"), Some("a"), Some("b")]);
        assert_eq!(plan(&v, "b").ask_for, Some(2));
    }

    #[test]
    fn three_replicas_over_four_shards_settle_at_two_one_one() {
        let v = view(&[Some("a"), Some("a"), Some("b"), Some("c")]);
        for me in ["a", "b", "c"] {
            assert_eq!(plan(&v, me).ask_for, None, "{me}");
        }
        assert!(!plan(&v, "a").take_more);
        // A fourth replica is below its share of one and asks a, the only one with two.
        assert_eq!(plan(&v, "d").ask_for, Some(1));
        // Nobody asks a replica holding only one more than itself.
        let v = view(&[Some("a"), Some("a"), Some("b"), None]);
        assert_eq!(plan(&v, "b").ask_for, None);
    }

    #[test]
    fn the_shards_of_a_dead_replica_are_taken_by_the_survivors() {
        // c's Leases expired: they are no longer held in this replica's view.
        let v = view(&[Some("a"), Some("b"), None, None]);
        assert!(plan(&v, "a").take_more);
        assert!(plan(&v, "b").take_more);
        assert_eq!(plan(&v, "a").ask_for, None);
    }

    #[test]
    fn a_shard_released_to_its_asker_stays_the_askers() {
        // a handed shard 3 over to b: free, but asked for by b.
        let mut v = view(&[Some("a"), Some("a"), Some("a"), None]);
        v[3].wanted_by = Some("b".into());
        // a counts b and does not take it back; b takes it.
        assert!(
            !plan(&v, "a").take_more,
            "a holds its share of 2 ... and more"
        );
        assert!(plan(&v, "b").take_more);
        // A third replica sees no free shard, and asks a for one instead.
        let c = plan(&v, "c");
        assert_eq!(c.ask_for, Some(2));
    }

    #[test]
    fn more_replicas_than_shards_leave_some_idle() {
        let v = view(&[Some("a"), Some("b")]);
        assert_eq!(plan(&v, "c").ask_for, None);
    }
}
