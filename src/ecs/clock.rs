//! ECS's own clock, as its answers tell it: the HTTP `Date` header (RFC 9110 §6.6.1, an
//! IMF-fixdate such as `Sat, 05 Dec 2026 17:25:56 GMT`, whole seconds).
//!
//! Restart detection compares ECS's `StartTime` with ECS's time of the apply, never with the
//! controller's clock: a node whose clock is minutes off must not turn "not in effect" into "in
//! effect". The latest reading also tells how far the local clock is from ECS's, so that a reboot
//! meant for "a later ECS minute" is timed on ECS's clock.

use std::sync::Mutex;
use std::time::Instant;

/// One reading of ECS's clock: what its `Date` said, and when (locally, monotonic) the answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    pub server: jiff::Timestamp,
    pub received: Instant,
}

impl ClockReading {
    /// ECS's clock minus `local`'s, where `local` is the local clock's reading now (the answer
    /// arrived `received.elapsed()` ago). The `Date` is truncated to the second and written before
    /// the answer travelled, so this errs towards ECS being *behind*: a reboot timed with it reaches
    /// ECS no earlier than planned.
    pub fn offset_from(&self, local_now: jiff::Timestamp) -> Option<jiff::SignedDuration> {
        let elapsed = jiff::SignedDuration::try_from(self.received.elapsed()).ok()?;
        let local_then = local_now.checked_sub(elapsed).ok()?;
        Some(self.server.duration_since(local_then))
    }
}

/// Parses an HTTP `Date` (IMF-fixdate; jiff's RFC 2822 parser reads it, `GMT` included).
pub fn parse_http_date(text: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::parse(text.trim())
        .ok()
        .map(|zoned| zoned.timestamp())
}

/// Formats a time as an HTTP `Date` (what the simulator sends).
pub fn format_http_date(t: jiff::Timestamp) -> String {
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&t)
        .unwrap_or_default()
}

/// The latest reading, shared by every call of one client.
#[derive(Debug, Default)]
pub struct LatestReading(Mutex<Option<ClockReading>>);

impl LatestReading {
    pub fn record(&self, reading: ClockReading) {
        let mut latest = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if latest.is_none_or(|l| l.received <= reading.received) {
            *latest = Some(reading);
        }
    }

    pub fn get(&self) -> Option<ClockReading> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip_and_junk_is_none() {
        let t: jiff::Timestamp = "2026-12-05T17:25:56Z".parse().unwrap();
        let text = format_http_date(t);
        assert_eq!(text, "Sat, 05 Dec 2026 17:25:56 GMT");
        assert_eq!(parse_http_date(&text), Some(t));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn the_offset_is_ecs_minus_local() {
        let local: jiff::Timestamp = "2026-12-05T17:00:00Z".parse().unwrap();
        let reading = ClockReading {
            server: local + jiff::SignedDuration::from_secs(300),
            received: Instant::now(),
        };
        let offset = reading.offset_from(local).unwrap();
        // A few microseconds passed since `received`: ECS looks a hair further ahead, never behind.
        assert!(offset >= jiff::SignedDuration::from_secs(300));
        assert!(offset < jiff::SignedDuration::from_secs(301));
    }

    #[test]
    fn an_older_reading_never_replaces_a_newer_one() {
        let latest = LatestReading::default();
        let t: jiff::Timestamp = "2026-12-05T17:00:00Z".parse().unwrap();
        let old = Instant::now();
        let new = old + std::time::Duration::from_millis(5);
        latest.record(ClockReading {
            server: t,
            received: new,
        });
        latest.record(ClockReading {
            server: t - jiff::SignedDuration::from_secs(9),
            received: old,
        });
        assert_eq!(latest.get().map(|r| r.received), Some(new));
    }
}
