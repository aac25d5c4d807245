//! A token bucket per connection: `rate` requests per second on average, `burst` at once.

pub struct RateLimiter {
    tokens: f64,
    last_ms: u64,
    rate_per_ms: f64,
    burst: f64,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: f64, now_ms: u64) -> Self {
        RateLimiter { tokens: burst, last_ms: now_ms, rate_per_ms: rate_per_sec / 1000.0, burst }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token (after a refusal).
    pub fn retry_after_ms(&self) -> u64 {
        ((1.0 - self.tokens).max(0.0) / self.rate_per_ms).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn burst_then_refill() {
        let mut r = RateLimiter::new(10.0, 3.0, 0);
        assert!(r.allow(0) && r.allow(0) && r.allow(0));
        assert!(!r.allow(0));
        assert!(r.allow(100));
        assert!(!r.allow(100));
        assert!(r.allow(10_000) && r.allow(10_000) && r.allow(10_000) && !r.allow(10_000));
    }
}
