//! Token-bucket rate limiting per API token, with no clock of its own: callers pass `now`, so
//! the arithmetic is tested without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes one token; when there is none, how long until there will be.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::from_secs(3600))
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A bucket per caller (API token name).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, TokenBucket>,
}

impl RateLimiter {
    /// `rate` requests a second per caller, bursts of up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Admits one request from `caller`, or says how long to wait (`Retry-After`).
    pub fn check(&mut self, caller: &str, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(caller.to_owned())
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_are_paced_at_the_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(100.0, 1000.0);
        for i in 0..1000 {
            assert!(
                limiter.check("ops", t0).is_ok(),
                "request {i} is within the burst"
            );
        }
        let wait = limiter.check("ops", t0).unwrap_err();
        assert!(
            (Duration::from_millis(9)..=Duration::from_millis(11)).contains(&wait),
            "one token every 10 ms: {wait:?}"
        );
        // A second later, 100 more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..100 {
            assert!(limiter.check("ops", t1).is_ok());
        }
        assert!(limiter.check("ops", t1).is_err());
        assert!(
            limiter.check("other-team", t1).is_ok(),
            "each token has its own bucket"
        );
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
    }
}
