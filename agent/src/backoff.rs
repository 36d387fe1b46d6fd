//! Capped exponential backoff with full jitter, for reconnecting to the controller forever.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay: `min * 2^attempt`, capped at `max`.
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniformly random in `[ceiling/2, ceiling]`, so agents that lost the
    /// controller together do not all come back in the same instant.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter = rand::rng().random_range(0..=ceiling.saturating_sub(half).as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// Delays that follow can be no shorter than the maximum: for failures that retrying soon
    /// cannot fix (a rejected certificate), without giving up.
    pub fn give_up_fast_retries(&mut self) {
        self.attempt = 31;
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_stays_within_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..40 {
            let ceiling = b.ceiling();
            assert!(ceiling >= last_ceiling);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            last_ceiling = ceiling;
        }
        assert_eq!(last_ceiling, Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        b.give_up_fast_retries();
        assert!(b.next_delay() >= Duration::from_secs(1));
    }

    #[test]
    fn delays_are_jittered() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
            b.next_delay();
            seen.insert(b.next_delay());
        }
        assert!(seen.len() > 1, "twenty agents picked the same delay");
    }
}
