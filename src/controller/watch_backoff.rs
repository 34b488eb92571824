//! The backoff of the controller's watches: kube-runtime's default (800 ms doubling to 30 s,
//! jittered, reset after 120 s without errors), except that a watch the API server ends with
//! 410 Gone ("too old resource version", e.g. after an API server restart and a compaction)
//! relists at once. That answer is the signal to relist, not a fault, and client-go's reflector
//! relists on it without waiting; kube-runtime's `StreamBackoff` backs off on every error, so after
//! a restart a watch whose connection attempts had already raised the backoff waited up to a
//! minute more before relisting. kube-runtime's backoff sees no error, hence the flag set by the
//! stream just before it is asked for a delay. Bounded: a second 410 before the watch delivers
//! anything backs off as any error does, so no answer of the API server makes a relist loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff};

/// `events` with the backoff above.
pub fn backoff<T, S>(events: S) -> impl Stream<Item = Result<T, watcher::Error>> + Send + 'static
where
    S: Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    let gone = Arc::new(AtomicBool::new(false));
    let seen = gone.clone();
    events
        .inspect(move |event| {
            if let Err(e) = event {
                seen.store(is_gone(e), Ordering::Relaxed);
            }
        })
        .backoff(RelistAtOnce {
            gone,
            relisted: false,
            errors: DefaultBackoff::default(),
        })
}

/// Whether the API server answered 410 Gone: the resourceVersion is too old and the watcher
/// (which has already dropped it) relists on its next poll.
pub fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

struct RelistAtOnce {
    gone: Arc<AtomicBool>,
    /// A 410 was followed at once and nothing has come since.
    relisted: bool,
    errors: DefaultBackoff,
}

impl Iterator for RelistAtOnce {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if self.gone.swap(false, Ordering::Relaxed) && !self.relisted {
            self.relisted = true;
            Some(Duration::ZERO)
        } else {
            self.errors.next()
        }
    }
}

impl Backoff for RelistAtOnce {
    fn reset(&mut self) {
        self.relisted = false;
        self.errors.reset();
    }
}

/// The backoff of the controller's merged trigger stream: none. Each watch in it backs off on its
/// own errors (above); kube-runtime's default for the merged stream would add a second, shared
/// backoff on top, pausing every watch (up to 30 s and more) whenever one of them reports an error,
/// a 410 included.
pub struct Unpaced;

impl Iterator for Unpaced {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for Unpaced {
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use kube::core::Status;

    fn gone() -> watcher::Error {
        watcher::Error::WatchError(Box::new(
            Status::failure("too old resource version", "Expired").with_code(410),
        ))
    }

    #[test]
    fn only_a_410_is_gone() {
        assert!(is_gone(&gone()));
        let other = watcher::Error::WatchError(Box::new(
            Status::failure("boom", "InternalError").with_code(500),
        ));
        assert!(!is_gone(&other));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }

    #[tokio::test(start_paused = true)]
    async fn a_410_after_failures_is_followed_at_once_and_other_errors_back_off() {
        // Three failures raise the backoff; the 410 after them must not wait for it.
        let items = vec![
            Err(watcher::Error::NoResourceVersion),
            Err(watcher::Error::NoResourceVersion),
            Err(watcher::Error::NoResourceVersion),
            Err(gone()),
            Ok(1),
            Err(gone()),
            Err(gone()),
            Ok(2),
        ];
        let start = tokio::time::Instant::now();
        let mut events = Box::pin(backoff(stream::iter(items)));
        let mut at = Vec::new();
        while let Some(item) = events.next().await {
            at.push((item.is_ok(), start.elapsed()));
        }
        // The delay after the third error (before the 410) is the default backoff's, at least
        // 800 ms * 4; the Ok after the 410 comes with no delay at all.
        let before_gone = at[3].1 - at[2].1;
        assert!(before_gone >= Duration::from_millis(3200), "{at:?}");
        assert_eq!(at[4].1, at[3].1, "{at:?}");
        // After something came, a 410 is followed at once again; a second 410 in a row backs off.
        assert_eq!(at[5].1, at[4].1, "{at:?}");
        assert_eq!(at[6].1, at[5].1, "{at:?}");
        assert!(at[7].1 > at[6].1, "{at:?}");
    }
}
