//! A token bucket per vault: caps the rate of vault requests a node makes
//! (default 1,000 per 10 s, a quarter of Key Vault's per-vault limit), so a
//! node full of pods cannot throttle a vault for everyone else. Callers
//! wait for a token; they never fail for lack of one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock: the real one, or the paused one in tests.
use tokio::time::Instant;

/// Bucket settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per `per`.
    pub requests: u32,
    pub per: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests: 1_000,
            per: Duration::from_secs(10),
        }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets by key (the vault host).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn rate(&self) -> f64 {
        f64::from(self.limit.requests.max(1)) / self.limit.per.as_secs_f64().max(1e-9)
    }

    /// Takes a token for `key` now, or says how long to wait for one.
    fn try_take(&self, key: &str) -> Result<(), Duration> {
        let capacity = f64::from(self.limit.requests.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.updated).as_secs_f64() * self.rate())
        .min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate()))
        }
    }

    /// Waits until a request to `key` is allowed.
    pub async fn acquire(&self, key: &str) {
        while let Err(wait) = self.try_take(key) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_limit_passes_then_callers_wait() {
        let limiter = RateLimiter::new(RateLimit {
            requests: 5,
            per: Duration::from_secs(10),
        });
        for _ in 0..5 {
            assert!(limiter.try_take("kv-demo").is_ok());
        }
        let wait = limiter.try_take("kv-demo").unwrap_err();
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        assert!(
            limiter.try_take("other-vault").is_ok(),
            "buckets are per vault"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_paces_requests_at_the_rate() {
        let limiter = RateLimiter::new(RateLimit {
            requests: 10,
            per: Duration::from_secs(1),
        });
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            limiter.acquire("v").await;
        }
        // 10 at once, then 20 more at 10/s.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_millis(2200),
            "{elapsed:?}"
        );
    }
}
