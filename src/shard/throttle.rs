//! Replication throttles (Kafka's `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate`, as `kafka-reassign-partitions --throttle` sets them):
//! one token bucket per shard per direction, in bytes per second.
//!
//! Lives on: one shard (each shard holds its own pair, so the rate applies per shard).
//!
//! Kafka's rule, kept: a throttled replica that is out of sync gets nothing while the bucket is
//! empty; when it is not empty, a whole read goes through and is charged after (the bucket may
//! go into debt, so one batch larger than a second's worth still moves, and what follows waits
//! for the debt to be paid). Replicas that are not throttled, and throttled ones in sync, are
//! never slowed: they do not touch the bucket.

use std::time::Instant;

/// A token bucket of bytes: refilled at `rate` bytes per second, holding at most one second's
/// worth; without a rate it never limits.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Option<u64>,
    /// Bytes that may go now (negative: a debt).
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Option<u64>, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate.map_or(0.0, |r| r as f64),
            last: now,
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// A new rate (a dynamic config changed): the tokens are capped at the new burst.
    pub fn set_rate(&mut self, rate: Option<u64>, now: Instant) {
        if rate == self.rate {
            return;
        }
        self.refill(now);
        self.rate = rate;
        if let Some(r) = rate {
            self.tokens = self.tokens.min(r as f64);
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(r) = self.rate {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * r as f64).min(r as f64);
        }
        self.last = now;
    }

    /// Whether a throttled read may go now (the bucket is not empty).
    pub fn allows(&mut self, now: Instant) -> bool {
        if self.rate.is_none() {
            return true;
        }
        self.refill(now);
        self.tokens > 0.0
    }

    /// Charges `bytes` that went through.
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        if self.rate.is_none() {
            return;
        }
        self.refill(now);
        self.tokens -= bytes as f64;
    }
}

/// A shard's two buckets.
#[derive(Clone, Debug)]
pub struct Throttles {
    /// What this shard's leaders serve to throttled followers.
    pub leader: TokenBucket,
    /// What this shard's followers fetch for throttled partitions.
    pub follower: TokenBucket,
}

impl Throttles {
    pub fn new(leader: Option<u64>, follower: Option<u64>, now: Instant) -> Throttles {
        Throttles {
            leader: TokenBucket::new(leader, now),
            follower: TokenBucket::new(follower, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_limits_to_its_rate_and_allows_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Some(1000), t0);
        assert!(b.allows(t0));
        // A read larger than the burst goes through, then nothing until the debt is paid.
        b.charge(3000, t0);
        assert!(!b.allows(t0));
        assert!(!b.allows(t0 + Duration::from_millis(1500)));
        assert!(b.allows(t0 + Duration::from_millis(2100)));
        // Refill is capped at one second's worth.
        let mut b = TokenBucket::new(Some(1000), t0);
        b.charge(1000, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(b.allows(later));
        b.charge(1001, later);
        assert!(!b.allows(later));
        // Without a rate nothing is limited.
        let mut b = TokenBucket::new(None, t0);
        b.charge(u64::MAX / 2, t0);
        assert!(b.allows(t0));
    }

    #[test]
    fn a_new_rate_caps_the_tokens() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(None, t0);
        b.set_rate(Some(10), t0);
        assert_eq!(b.rate(), Some(10));
        b.charge(10, t0);
        assert!(!b.allows(t0));
        b.set_rate(None, t0);
        assert!(b.allows(t0));
    }
}
