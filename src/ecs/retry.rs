//! Retry timing: capped exponential backoff with full jitter, as a pure function.

use std::time::Duration;

use super::error::ErrorClass;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retries.
    pub max_retries: u32,
    /// First backoff cap for transient errors; doubles every attempt.
    pub base_delay: Duration,
    /// First backoff cap for throttling. ECS refuses a throttled caller until the next minute, so
    /// this starts higher than `base_delay`.
    pub throttle_base_delay: Duration,
    /// No backoff is ever longer than this.
    pub max_delay: Duration,
    /// Whether a throttled call is retried within the call. The controller says no: it looks at
    /// the object again when the bucket has a slot, and no worker waits out a throttled account.
    pub retry_throttled: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(200),
            throttle_base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(20),
            retry_throttled: true,
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry number `attempt + 1`, or `None` when the error must not be
    /// retried or the retries are used up. `unit` is a random number in `[0, 1)` (full jitter: the
    /// wait is uniform between zero and the capped exponential).
    pub fn delay(&self, class: ErrorClass, attempt: u32, unit: f64) -> Option<Duration> {
        if !class.is_retryable() || attempt >= self.max_retries {
            return None;
        }
        let base = match class {
            // A stale timestamp or nonce only needs a new signature.
            ErrorClass::Resign => return Some(Duration::ZERO),
            ErrorClass::Throttled => self.throttle_base_delay,
            _ => self.base_delay,
        };
        Some(capped_exponential(base, self.max_delay, attempt).mul_f64(unit.clamp(0.0, 1.0)))
    }
}

/// `min(cap, base * 2^attempt)` without overflow.
pub fn capped_exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 2u32.checked_pow(attempt.min(30)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_and_credentials_errors_are_never_retried() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(ErrorClass::Terminal, 0, 0.5), None);
        assert_eq!(p.delay(ErrorClass::Credentials, 0, 0.5), None);
    }

    #[test]
    fn retries_stop_after_the_configured_number() {
        let p = RetryPolicy {
            max_retries: 2,
            ..Default::default()
        };
        assert!(p.delay(ErrorClass::Transient, 1, 0.5).is_some());
        assert_eq!(p.delay(ErrorClass::Transient, 2, 0.5), None);
        let none = RetryPolicy {
            max_retries: 0,
            ..Default::default()
        };
        assert_eq!(none.delay(ErrorClass::Throttled, 0, 0.5), None);
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_from_zero() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(ErrorClass::Transient, 0, 0.999_999)
                .map(|d| d.as_millis()),
            Some(199)
        );
        assert_eq!(
            p.delay(ErrorClass::Transient, 3, 1.0),
            Some(Duration::from_millis(1600))
        );
        assert_eq!(p.delay(ErrorClass::Transient, 30, 1.0), None);
        let long = RetryPolicy {
            max_retries: 100,
            ..Default::default()
        };
        assert_eq!(
            long.delay(ErrorClass::Transient, 60, 1.0),
            Some(long.max_delay)
        );
        assert_eq!(
            long.delay(ErrorClass::Transient, 5, 0.0),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn throttling_backs_off_longer_and_resign_retries_at_once() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(ErrorClass::Throttled, 1, 1.0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.delay(ErrorClass::Resign, 0, 0.9), Some(Duration::ZERO));
    }
}
