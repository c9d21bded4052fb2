//! A token bucket per vault: caps the rate of vault requests a node makes
//! (default 1,000 per 10 s, a quarter of Key Vault's per-vault limit;
//! `--vault-rate-limit`), so a node full of pods cannot throttle a vault for
//! everyone else. Callers wait for a token; they never fail for lack of one.
//!
//! When a vault answers 429 with `Retry-After`, its bucket is paused for
//! that long: no request of this node (any object, any volume) goes to that
//! vault until the pause ends, and then requests resume at the bucket's
//! rate, without a burst.

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

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.per.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}/{}s", self.requests, ms / 1000)
        } else {
            write!(f, "{}/{ms}ms", self.requests)
        }
    }
}

/// Parses `--vault-rate-limit`: `<requests>/<period>`, the period a Go
/// duration (`1000/10s`, `50/1s`, `6000/1m`; a bare unit means one of it:
/// `100/s`).
pub fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let fix = "write <requests>/<period>, e.g. 1000/10s (the default) or 100/s";
    let (requests, per) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a rate: {fix}"))?;
    let requests: u32 = requests
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("{text:?}: the number of requests must be a whole number above 0: {fix}")
        })?;
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        crate::duration::parse(per)
    } else {
        crate::duration::parse(&format!("1{per}"))
    }
    .map_err(|e| format!("{text:?}: the period {e}: {fix}"))?;
    Ok(RateLimit { requests, per })
}

struct Bucket {
    tokens: f64,
    updated: Instant,
    /// No request before this (the vault's `Retry-After`).
    paused_until: Option<Instant>,
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
            .field("paused_until", &self.paused_until)
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

    /// The limit this limiter applies.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token for `key` now, or says how long to wait for one.
    fn try_take(&self, key: &str) -> Result<(), Duration> {
        let capacity = f64::from(self.limit.requests.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            paused_until: None,
        });
        if let Some(until) = bucket.paused_until {
            if now < until {
                return Err(until - now);
            }
            bucket.paused_until = None;
        }
        bucket.tokens = (bucket.tokens
            + now.saturating_duration_since(bucket.updated).as_secs_f64() * self.rate())
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

    /// The vault `key` answered 429 with `Retry-After: wait`: no request to
    /// it starts before `wait` has passed (a longer pause already set is
    /// kept). Afterwards requests resume at the bucket's rate, starting with
    /// one token: the tokens of the pause are not spent in a burst.
    pub fn pause(&self, key: &str, wait: Duration) {
        let capacity = f64::from(self.limit.requests.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let until = now + wait;
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            paused_until: None,
        });
        if bucket.paused_until.is_some_and(|u| u >= until) {
            return;
        }
        tracing::info!(
            vault = key,
            wait_ms = wait.as_millis() as u64,
            "the vault answered 429 with Retry-After: no request goes to it until then"
        );
        bucket.paused_until = Some(until);
        bucket.tokens = 1.0;
        bucket.updated = until;
    }

    /// How much longer requests to `key` are paused, if they are.
    pub fn paused_for(&self, key: &str) -> Option<Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let until = buckets.get(key)?.paused_until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
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

    #[tokio::test(start_paused = true)]
    async fn a_pause_stops_every_caller_of_that_vault_then_resumes_without_a_burst() {
        let limiter = std::sync::Arc::new(RateLimiter::new(RateLimit {
            requests: 100,
            per: Duration::from_secs(1),
        }));
        limiter.acquire("kv").await;
        limiter.pause("kv", Duration::from_secs(2));
        assert!(limiter.paused_for("kv").unwrap() > Duration::from_millis(1900));
        assert!(limiter.try_take("other").is_ok(), "other vaults go on");
        // A shorter Retry-After does not cut the pause.
        limiter.pause("kv", Duration::from_millis(500));
        let start = Instant::now();
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire("kv").await;
                    Instant::now()
                })
            })
            .collect();
        let mut times = Vec::new();
        for c in callers {
            times.push(c.await.unwrap() - start);
        }
        times.sort();
        assert!(
            times[0] >= Duration::from_secs(2),
            "nobody before the Retry-After: {times:?}"
        );
        // One token at the end of the pause, then 100/s: 5 callers take
        // about 40 ms more, not a burst of the 100 tokens of the pause.
        assert!(
            times[4] >= Duration::from_millis(2030) && times[4] < Duration::from_millis(2100),
            "{times:?}"
        );
        assert_eq!(limiter.paused_for("kv"), None);
    }

    #[test]
    fn the_flag_reads_requests_per_period() {
        assert_eq!(parse_rate_limit("1000/10s").unwrap(), RateLimit::default());
        assert_eq!(
            parse_rate_limit("100/s").unwrap(),
            RateLimit {
                requests: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            parse_rate_limit(" 6000 / 1m ").unwrap(),
            RateLimit {
                requests: 6000,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(RateLimit::default().to_string(), "1000/10s");
        for bad in [
            "1000", "0/10s", "-1/10s", "x/10s", "1000/", "1000/10", "1000/0s",
        ] {
            let err = parse_rate_limit(bad).unwrap_err();
            assert!(err.contains("e.g. 1000/10s"), "{bad}: {err}");
        }
    }
}
