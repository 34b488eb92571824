//! Time policy as pure functions: Go-style durations, reboot maintenance windows (five-field cron
//! starts in an IANA zone, via `croner` and jiff's time zone database), and rotation due times.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::api::RebootWindow;

/// A Go-style duration (`720h`, `1h30m`, `90s`, `1.5h`), as the CRD's pattern allows.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 720h, 1h30m or 90s");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The longest reboot window (a week): a window that never closes is no window, and a longer one
/// would only serve to overflow the time arithmetic. The CRD refuses longer ones too.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest rotation interval (366 days); the CRD refuses longer ones too.
pub const MAX_ROTATION_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// At most this many reboot windows are considered; the CRD refuses more.
pub const MAX_WINDOWS: usize = 10;

/// Where `now` stands against a VncPassword's reboot windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// No windows: a reboot may happen whenever it is needed.
    Always,
    /// Inside a window that opened at `since` and closes at `until`.
    Open { since: Timestamp, until: Timestamp },
    /// Outside every window; the next opens at `next`.
    Closed { next: Timestamp },
}

struct Window {
    cron: croner::Cron,
    duration: jiff::SignedDuration,
    zone: TimeZone,
}

fn window(i: usize, w: &RebootWindow) -> Result<Window, String> {
    let at = |what: &str| format!("spec.rebootWindows[{i}].{what}");
    if w.schedule.split_whitespace().count() != 5 {
        return Err(format!(
            "{}: {:?} is not a five-field cron expression (minute hour day-of-month month day-of-week), e.g. \"0 2 * * SUN\"",
            at("schedule"),
            w.schedule
        ));
    }
    let cron: croner::Cron = w
        .schedule
        .parse()
        .map_err(|e| format!("{}: {:?}: {e}", at("schedule"), w.schedule))?;
    let duration =
        parse_go_duration(&w.duration).map_err(|e| format!("{}: {e}", at("duration")))?;
    if duration.is_zero() {
        return Err(format!("{}: must be longer than 0", at("duration")));
    }
    if duration > MAX_WINDOW {
        return Err(format!(
            "{}: {:?} is longer than a window may be (168h)",
            at("duration"),
            w.duration
        ));
    }
    let duration = jiff::SignedDuration::try_from(duration)
        .map_err(|_| format!("{}: too long", at("duration")))?;
    let name = w.time_zone.as_deref().unwrap_or("UTC");
    let zone = jiff::tz::db().get(name).map_err(|_| {
        format!(
            "{}: {name:?} is not an IANA time zone such as Europe/Berlin",
            at("timeZone")
        )
    })?;
    Ok(Window {
        cron,
        duration,
        zone,
    })
}

/// Whether `now` is inside one of `windows`, or when the next one opens. A window that has closed
/// is never used late; across a DST change a window opens at the wall-clock time its schedule
/// names in its zone (croner's rules: a skipped time moves to the first valid one).
pub fn window_state(windows: &[RebootWindow], now: Timestamp) -> Result<WindowState, String> {
    if windows.is_empty() {
        return Ok(WindowState::Always);
    }
    if windows.len() > MAX_WINDOWS {
        return Err(format!(
            "spec.rebootWindows: {} windows, at most {MAX_WINDOWS} are allowed",
            windows.len()
        ));
    }
    let out_of_range = |i: usize| {
        format!(
            "spec.rebootWindows[{i}]: the window cannot be placed around {now} (out of the time range)"
        )
    };
    let mut open_until: Option<Timestamp> = None;
    let mut open_since: Option<Timestamp> = None;
    let mut next: Option<Timestamp> = None;
    for (i, w) in windows.iter().enumerate() {
        let w = window(i, w)?;
        let here = now.to_zoned(w.zone.clone());
        // A start in (now - duration, now] is a window open now.
        let earliest = now
            .checked_sub(w.duration)
            .map_err(|_| out_of_range(i))?
            .to_zoned(w.zone.clone());
        if let Ok(start) = w.cron.find_next_occurrence(&earliest, false)
            && start.timestamp() <= now
        {
            let until = start
                .timestamp()
                .checked_add(w.duration)
                .map_err(|_| out_of_range(i))?;
            open_until = Some(open_until.map_or(until, |u| u.max(until)));
            let since = start.timestamp();
            open_since = Some(open_since.map_or(since, |s| s.min(since)));
        }
        match w.cron.find_next_occurrence(&here, false) {
            Ok(start) => {
                let start = start.timestamp();
                next = Some(next.map_or(start, |n| n.min(start)));
            }
            Err(e) => {
                return Err(format!(
                    "spec.rebootWindows[{i}].schedule: no next start ({e})"
                ));
            }
        }
    }
    Ok(match (open_until, next) {
        (Some(until), _) => WindowState::Open {
            since: open_since.unwrap_or(now),
            until,
        },
        (None, Some(next)) => WindowState::Closed { next },
        (None, None) => return Err("spec.rebootWindows: no window ever opens".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn w(schedule: &str, duration: &str, zone: Option<&str>) -> RebootWindow {
        RebootWindow {
            schedule: schedule.into(),
            duration: duration.into(),
            time_zone: zone.map(str::to_string),
        }
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(
            parse_go_duration("720h"),
            Ok(Duration::from_secs(720 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("90s"), Ok(Duration::from_secs(90)));
        for bad in ["", "h", "5", "5d", "1h-2m", "abc"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_windows_means_always() {
        assert_eq!(
            window_state(&[], t("2026-01-04T02:30:00Z")),
            Ok(WindowState::Always)
        );
    }

    #[test]
    fn open_inside_closed_outside_and_never_used_late() {
        let windows = [w("0 2 * * SUN", "2h", None)];
        // 2026-01-04 is a Sunday.
        assert_eq!(
            window_state(&windows, t("2026-01-04T02:30:00Z")),
            Ok(WindowState::Open {
                since: t("2026-01-04T02:00:00Z"),
                until: t("2026-01-04T04:00:00Z")
            })
        );
        assert_eq!(
            window_state(&windows, t("2026-01-04T02:00:00Z")),
            Ok(WindowState::Open {
                since: t("2026-01-04T02:00:00Z"),
                until: t("2026-01-04T04:00:00Z")
            })
        );
        // The window ended at 04:00: closed, the next is a week later.
        assert_eq!(
            window_state(&windows, t("2026-01-04T04:00:00Z")),
            Ok(WindowState::Closed {
                next: t("2026-01-11T02:00:00Z")
            })
        );
        assert_eq!(
            window_state(&windows, t("2026-01-03T23:00:00Z")),
            Ok(WindowState::Closed {
                next: t("2026-01-04T02:00:00Z")
            })
        );
    }

    #[test]
    fn time_zones_place_the_window() {
        // 02:00 in Berlin is 01:00 UTC in winter.
        let windows = [w("0 2 * * *", "1h", Some("Europe/Berlin"))];
        assert_eq!(
            window_state(&windows, t("2026-01-10T01:30:00Z")),
            Ok(WindowState::Open {
                since: t("2026-01-10T01:00:00Z"),
                until: t("2026-01-10T02:00:00Z")
            })
        );
        assert!(matches!(
            window_state(&windows, t("2026-01-10T02:30:00Z")),
            Ok(WindowState::Closed { .. })
        ));
    }

    #[test]
    fn daylight_saving_time_moves_the_window_with_the_wall_clock() {
        // Europe/Berlin: summer time starts 2026-03-29 at 02:00 (clocks jump to 03:00).
        let windows = [w("30 3 * * *", "1h", Some("Europe/Berlin"))];
        // Before: 03:30 CET = 02:30 UTC.
        assert!(matches!(
            window_state(&windows, t("2026-03-28T02:45:00Z")),
            Ok(WindowState::Open { .. })
        ));
        // After: 03:30 CEST = 01:30 UTC.
        assert_eq!(
            window_state(&windows, t("2026-03-29T01:45:00Z")),
            Ok(WindowState::Open {
                since: t("2026-03-29T01:30:00Z"),
                until: t("2026-03-29T02:30:00Z")
            })
        );
    }

    #[test]
    fn the_earliest_of_several_windows_is_next() {
        let windows = [w("0 2 * * SUN", "2h", None), w("0 12 * * *", "30m", None)];
        assert_eq!(
            window_state(&windows, t("2026-01-05T09:00:00Z")),
            Ok(WindowState::Closed {
                next: t("2026-01-05T12:00:00Z")
            })
        );
    }

    #[test]
    fn bad_windows_say_which_field() {
        for (bad, field) in [
            (w("0 2 * *", "2h", None), "schedule"),
            (w("0 2 * * FUNDAY", "2h", None), "schedule"),
            (w("0 2 * * SUN", "2d", None), "duration"),
            (w("0 2 * * SUN", "0s", None), "duration"),
            (w("0 2 * * SUN", "110000000h", None), "duration"),
            (w("0 2 * * SUN", "169h", None), "duration"),
            (w("0 2 * * SUN", "2h", Some("Mars/Olympus")), "timeZone"),
        ] {
            let e = window_state(&[bad], t("2026-01-05T09:00:00Z")).unwrap_err();
            assert!(e.contains(&format!("spec.rebootWindows[0].{field}")), "{e}");
        }
    }

    #[test]
    fn the_ends_of_time_are_an_error_never_a_panic() {
        let windows = [w("0 2 * * SUN", "168h", None)];
        for now in [Timestamp::MIN, Timestamp::MAX] {
            let _ = window_state(&windows, now);
        }
        let many = vec![w("0 2 * * SUN", "1h", None); MAX_WINDOWS + 1];
        assert!(window_state(&many, t("2026-01-05T09:00:00Z")).is_err());
    }
}
