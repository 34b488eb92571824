//! Instants for tests, always derived from the time the test runs: a test never pins a calendar
//! date, so it passes on any day it is run (a fixed date that a clock offset is computed from turns
//! into a negative offset once the date has passed).
#![allow(dead_code)]

/// The first Saturday 12:00 UTC at least a day after `after` (so that a window opening the next
/// Sunday 02:00 UTC is 14 hours ahead).
pub fn next_saturday_noon_utc(after: jiff::Timestamp) -> jiff::Timestamp {
    use jiff::civil::Weekday;
    let earliest = after + jiff::SignedDuration::from_hours(24);
    let day = earliest.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut candidate = day;
    loop {
        if candidate.weekday() == Weekday::Saturday {
            let noon = candidate
                .at(12, 0, 0, 0)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .expect("UTC has every civil time")
                .timestamp();
            if noon >= earliest {
                return noon;
            }
        }
        candidate = candidate.tomorrow().expect("a date before the year 9999");
    }
}

#[test]
fn the_next_saturday_noon_is_a_day_to_eight_days_ahead_on_any_date() {
    use jiff::civil::Weekday;
    // Today, a year ahead, and every 7 hours over two weeks from each (every weekday and hour).
    let now = jiff::Timestamp::now();
    for base in [now, now + jiff::SignedDuration::from_hours(24 * 365)] {
        for step in 0..48 {
            let after = base + jiff::SignedDuration::from_hours(7 * step);
            let t = next_saturday_noon_utc(after);
            let z = t.to_zoned(jiff::tz::TimeZone::UTC);
            assert_eq!(z.weekday(), Weekday::Saturday, "{after}");
            assert_eq!((z.hour(), z.minute(), z.second()), (12, 0, 0), "{after}");
            let ahead = t.duration_since(after);
            assert!(
                ahead >= jiff::SignedDuration::from_hours(24),
                "{after} -> {t}"
            );
            assert!(
                ahead < jiff::SignedDuration::from_hours(24 * 8),
                "{after} -> {t}"
            );
        }
    }
}
