//! The resync: every watched object is looked at again once per `--resync-interval`, a safety net
//! for a lost event. Each object comes back at a point of the interval fixed by the hash of its
//! uid, so the objects of one wave are spread over the whole interval and nothing is kept per
//! object between looks: a sweep over the store every [`tick`] wakes those whose point it passed.
//! (A requeue per object in kube-runtime's scheduler held a timer and a copy of the object's
//! reference each, about 0.5 KB per object.)

use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::controller::cache::CachedVncPassword;
use crate::shard::fnv1a64;

/// How often the store is swept: about sixty times an interval, between 100 ms and 10 s.
pub fn tick(interval: Duration) -> Duration {
    (interval / 60).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// An object's point in the interval, in milliseconds from the interval's start.
fn point(uid: &str, interval_ms: u64) -> u64 {
    fnv1a64(uid.as_bytes()) % interval_ms.max(1)
}

/// Whether a point of a repeating interval lies in `(from, to]`, both counted in milliseconds
/// since the first interval began.
fn passed(point: u64, from: u64, to: u64, interval_ms: u64) -> bool {
    let interval_ms = interval_ms.max(1);
    if to <= from {
        return false;
    }
    if to - from >= interval_ms {
        return true;
    }
    let (a, b) = (from % interval_ms, to % interval_ms);
    if a < b {
        a < point && point <= b
    } else {
        point > a || point <= b
    }
}

/// The objects of `store` due for their resync, as their points pass; each once per `interval`.
pub fn sweep(
    store: Store<CachedVncPassword>,
    interval: Duration,
) -> impl Stream<Item = ObjectRef<CachedVncPassword>> + Send {
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    let start = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(start + tick(interval), tick(interval));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(
        (ticks, 0u64, Vec::<ObjectRef<CachedVncPassword>>::new()),
        move |(mut ticks, mut swept, mut due)| {
            let store = store.clone();
            async move {
                loop {
                    if let Some(next) = due.pop() {
                        return Some((next, (ticks, swept, due)));
                    }
                    let now = ticks.tick().await;
                    let to = u64::try_from((now - start).as_millis()).unwrap_or(u64::MAX);
                    due.extend(
                        store
                            .state()
                            .iter()
                            .filter(|o| {
                                o.metadata.uid.as_deref().is_some_and(|uid| {
                                    passed(point(uid, interval_ms), swept, to, interval_ms)
                                })
                            })
                            .map(|o| ObjectRef::from_obj(o.as_ref())),
                    );
                    swept = to;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_passed_once_per_interval() {
        let interval = 1_000;
        for point in [0, 1, 499, 999] {
            // Windows of 70 ms over five intervals: each point is passed exactly five times.
            let passes = (0..)
                .map(|k| (k * 70, (k + 1) * 70))
                .take_while(|(_, to)| *to <= 5_000 + 70)
                .filter(|(from, to)| passed(point, *from, (*to).min(5_000), interval))
                .count();
            assert_eq!(passes, 5, "point {point}");
        }
    }

    #[test]
    fn windows_that_wrap_or_span_an_interval() {
        // (from, to] crossing the interval's end.
        assert!(passed(950, 900, 1_050, 1_000));
        assert!(passed(30, 900, 1_050, 1_000));
        assert!(!passed(500, 900, 1_050, 1_000));
        // A late sweep covering a whole interval passes every point.
        assert!(passed(500, 100, 1_100, 1_000));
        // An empty window passes nothing.
        assert!(!passed(100, 100, 100, 1_000));
    }

    #[test]
    fn points_spread_over_the_interval_and_ticks_stay_bounded() {
        let interval_ms = 600_000;
        let mut tenths = [0usize; 10];
        for i in 0..10_000 {
            let uid = format!("8d0e5a7c-0000-4000-8000-{i:012}");
            tenths[(point(&uid, interval_ms) * 10 / interval_ms) as usize] += 1;
        }
        assert!(
            tenths.iter().all(|n| (800..1_200).contains(n)),
            "{tenths:?}"
        );
        assert_eq!(tick(Duration::from_secs(600)), Duration::from_secs(10));
        assert_eq!(tick(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(
            tick(Duration::from_secs(24 * 3600)),
            Duration::from_secs(10)
        );
    }
}
