//! Our retry policy (the SDK's is off): 429, 408, 5xx, timeouts and
//! connection errors are retried with exponential backoff and full jitter,
//! honouring `Retry-After` (seconds), within the mount's deadline.
//!
//! [`classify`] turns an `azure_core` error into what a user is told: the
//! [`ErrorKind`], the HTTP status, the service's error code and message.
//! Messages are built from those fields only, never from `Debug` output (a
//! raw response is in there).

use std::future::Future;
use std::time::Duration;

use azure_core::error::ErrorKind as AzErrorKind;
use serde::Deserialize;
use tokio::time::Instant;

use super::config::RetryConfig;
use crate::provider::ErrorKind;

/// One failed attempt, as the user will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind.
    pub kind: ErrorKind,
    /// The HTTP status, if a service answered.
    pub status: Option<u16>,
    /// The service's error code (`SecretNotFound`, `Forbidden/AccessDenied`,
    /// an Entra `AADSTS` number…).
    pub code: Option<String>,
    /// The service's message, or what went wrong on the way.
    pub message: String,
    /// Whether a token could not be obtained (the identity, not the vault).
    pub credential: bool,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// `Retry-After`, when the service sent one.
    pub retry_after: Option<Duration>,
    /// Attempts made (set by [`with_retry`]).
    pub attempts: u32,
    /// Whether the deadline stopped the retries.
    pub deadline_exceeded: bool,
}

impl Failure {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            status: None,
            code: None,
            message: message.into(),
            credential: false,
            retryable: kind.is_retryable(),
            retry_after: None,
            attempts: 1,
            deadline_exceeded: false,
        }
    }

    /// A response that cannot be used (retrying will not help).
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(ErrorKind::Invalid, message)
    }

    /// An attempt that got no answer within `timeout`.
    pub fn timed_out(timeout: Duration) -> Self {
        Failure::new(
            ErrorKind::Transient,
            format!("no answer within {}", secs(timeout)),
        )
    }
}

/// `1.5s`, `20s`.
pub fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[derive(Deserialize)]
struct KvErrorEnvelope {
    error: KvError,
}

#[derive(Deserialize)]
struct KvError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    innererror: Option<KvInner>,
}

#[derive(Deserialize)]
struct KvInner {
    #[serde(default)]
    code: Option<String>,
}

fn kind_of_status(status: u16) -> (ErrorKind, bool) {
    match status {
        404 => (ErrorKind::NotFound, false),
        401 | 403 => (ErrorKind::Denied, false),
        429 => (ErrorKind::Throttled, true),
        408 | 500..=599 => (ErrorKind::Transient, true),
        _ => (ErrorKind::Invalid, false),
    }
}

/// The first line of a message, at most 400 characters.
fn short(text: &str) -> String {
    let line = text.trim();
    let mut out: String = line.chars().take(400).collect();
    if out.len() < line.len() {
        out.push('…');
    }
    out
}

/// What an `azure_core` error means for the user.
pub fn classify(err: &azure_core::Error) -> Failure {
    let credential = matches!(err.kind(), AzErrorKind::Credential);
    // A credential error wraps the token endpoint's error: find the HTTP one.
    let mut http: Option<&azure_core::Error> = None;
    let mut inner_kind = err.kind();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(az) = e.downcast_ref::<azure_core::Error>() {
            if matches!(az.kind(), AzErrorKind::HttpResponse { .. }) {
                http = Some(az);
                break;
            }
            if !matches!(az.kind(), AzErrorKind::Credential) {
                inner_kind = az.kind();
            }
        }
        cur = e.source();
    }
    if let Some(az) = http
        && let AzErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } = az.kind()
    {
        let status = u16::from(*status);
        let (kind, retryable) = kind_of_status(status);
        let mut code = error_code.clone();
        let mut message = None;
        let mut retry_after = None;
        if let Some(raw) = raw_response {
            if let Ok(env) = serde_json::from_slice::<KvErrorEnvelope>(raw.body().as_ref()) {
                let inner = env.error.innererror.and_then(|i| i.code);
                code = match (env.error.code, inner) {
                    (Some(c), Some(i)) => Some(format!("{c}/{i}")),
                    (Some(c), None) => Some(c),
                    (None, i) => i.or(code),
                };
                message = env.error.message;
            }
            retry_after = raw
                .headers()
                .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
        }
        let message = short(&message.unwrap_or_else(|| az.to_string()));
        // Entra: a refused identity is a 400/401 (unknown client, bad secret,
        // no federation); anything but throttling and outages is a denial.
        let kind = if credential && matches!(kind, ErrorKind::Invalid | ErrorKind::NotFound) {
            ErrorKind::Denied
        } else {
            kind
        };
        return Failure {
            kind,
            status: Some(status),
            code,
            message,
            credential,
            retryable,
            retry_after,
            attempts: 1,
            deadline_exceeded: false,
        };
    }
    let (kind, retryable) = match inner_kind {
        AzErrorKind::Connection | AzErrorKind::Io => (ErrorKind::Transient, true),
        AzErrorKind::DataConversion => (ErrorKind::Invalid, false),
        AzErrorKind::Credential => (ErrorKind::Denied, false),
        _ if credential => (ErrorKind::Denied, false),
        _ => (ErrorKind::Invalid, false),
    };
    let mut f = Failure::new(kind, short(&err.to_string()));
    f.retryable = retryable;
    f.credential = credential;
    f
}

/// Full jitter in `[d/2, d]`.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = if aws_lc_rs::rand::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        u64::from(std::process::id())
    };
    let half = d / 2;
    let span = half.as_nanos().max(1) as u64;
    half + Duration::from_nanos(r % span)
}

/// The wait before attempt `attempt + 1` (`attempt` ≥ 1).
pub fn backoff(config: &RetryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(config.max_retry_after);
    }
    let exp = config
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    jitter(exp.min(config.max_backoff))
}

/// Runs `op` until it succeeds, fails for good, runs out of attempts, or the
/// next try would end after `deadline`. Each attempt gets at most
/// `request_timeout` (and never more than what is left).
pub async fn with_retry<T, F, Fut>(
    config: &RetryConfig,
    metrics: &crate::metrics::Metrics,
    deadline: Instant,
    request_timeout: Duration,
    mut op: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let budget = left.min(request_timeout);
        let result = if budget.is_zero() {
            Err(Failure::timed_out(Duration::ZERO))
        } else {
            match tokio::time::timeout(budget, op()).await {
                Ok(r) => r,
                Err(_) => {
                    // `op` counts the attempts that end; this one was cut.
                    metrics.vault_request("transient", budget.as_secs_f64());
                    Err(Failure::timed_out(budget))
                }
            }
        };
        let mut failure = match result {
            Ok(v) => return Ok(v),
            Err(f) => f,
        };
        failure.attempts = attempt;
        if !failure.retryable || attempt >= config.max_attempts.max(1) {
            return Err(failure);
        }
        let wait = backoff(config, attempt, failure.retry_after);
        // Leave room for the next attempt to do something useful.
        if Instant::now() + wait + Duration::from_millis(50) >= deadline {
            failure.deadline_exceeded = true;
            return Err(failure);
        }
        tracing::debug!(
            attempt,
            wait_ms = wait.as_millis() as u64,
            status = failure.status,
            "retrying a Key Vault request"
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_retry_after: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let c = cfg();
        for attempt in 1..6 {
            let want = Duration::from_millis(10 * (1 << (attempt - 1))).min(c.max_backoff);
            let got = backoff(&c, attempt, None);
            assert!(got >= want / 2 && got <= want, "{attempt}: {got:?}");
        }
        assert_eq!(
            backoff(&c, 1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff(&c, 1, Some(Duration::from_secs(100))),
            Duration::from_secs(2)
        );
    }

    fn http_error(status: u16, body: &str, retry_after: Option<&str>) -> azure_core::Error {
        use azure_core::http::headers::{Headers, RETRY_AFTER};
        use azure_core::http::{RawResponse, StatusCode};
        let mut headers = Headers::new();
        if let Some(v) = retry_after {
            headers.insert(RETRY_AFTER, v.to_owned());
        }
        let raw = RawResponse::from_bytes(StatusCode::from(status), headers, body.to_owned());
        azure_core::Error::with_message(
            AzErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: None,
                raw_response: Some(Box::new(raw)),
            },
            format!("HTTP {status}"),
        )
    }

    #[test]
    fn classifies_statuses_codes_and_retry_after() {
        let f = classify(&http_error(
            404,
            r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) db was not found in this key vault."}}"#,
            None,
        ));
        assert_eq!(
            (f.kind, f.status, f.code.as_deref(), f.retryable),
            (
                ErrorKind::NotFound,
                Some(404),
                Some("SecretNotFound"),
                false
            )
        );
        assert!(f.message.starts_with("A secret with (name/id) db"));
        let f = classify(&http_error(
            403,
            r#"{"error":{"code":"Forbidden","message":"no","innererror":{"code":"AccessDenied"}}}"#,
            None,
        ));
        assert_eq!(f.code.as_deref(), Some("Forbidden/AccessDenied"));
        assert_eq!(f.kind, ErrorKind::Denied);
        let f = classify(&http_error(429, "{}", Some("7")));
        assert_eq!((f.kind, f.retryable), (ErrorKind::Throttled, true));
        assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
        let f = classify(&http_error(503, "not json", None));
        assert_eq!(
            (f.kind, f.retryable, f.retry_after),
            (ErrorKind::Transient, true, None)
        );
        assert_eq!(f.message, "HTTP 503");
        let f = classify(&http_error(400, "{}", None));
        assert_eq!((f.kind, f.retryable), (ErrorKind::Invalid, false));

        // A token endpoint's refusal inside a credential error is a denial;
        // its outage stays retryable.
        let wrap = |e: azure_core::Error| {
            let m = e.to_string();
            azure_core::Error::with_error(AzErrorKind::Credential, e, m)
        };
        let f = classify(&wrap(http_error(400, "{}", None)));
        assert_eq!(
            (f.kind, f.credential, f.status),
            (ErrorKind::Denied, true, Some(400))
        );
        let f = classify(&wrap(http_error(500, "{}", None)));
        assert_eq!((f.kind, f.retryable), (ErrorKind::Transient, true));
        let f = classify(&azure_core::Error::with_message(
            AzErrorKind::Connection,
            "refused",
        ));
        assert_eq!((f.kind, f.retryable), (ErrorKind::Transient, true));
        let f = classify(&azure_core::Error::with_message(
            AzErrorKind::DataConversion,
            "bad",
        ));
        assert_eq!((f.kind, f.retryable), (ErrorKind::Invalid, false));
    }

    #[tokio::test]
    async fn retries_retryable_failures_then_gives_up() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let r: Result<(), Failure> = with_retry(
            &cfg(),
            crate::metrics::global(),
            deadline,
            Duration::from_secs(5),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Failure::new(ErrorKind::Throttled, "429")) }
            },
        )
        .await;
        let f = r.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(f.attempts, 4);
        assert_eq!(f.kind, ErrorKind::Throttled);

        let calls = AtomicU32::new(0);
        let r: Result<(), Failure> = with_retry(
            &cfg(),
            crate::metrics::global(),
            deadline,
            Duration::from_secs(5),
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Failure::new(ErrorKind::NotFound, "404")) }
            },
        )
        .await;
        assert_eq!(r.unwrap_err().attempts, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_slow_attempt_times_out_within_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(300);
        let start = Instant::now();
        let r: Result<(), Failure> = with_retry(
            &cfg(),
            crate::metrics::global(),
            deadline,
            Duration::from_secs(10),
            || async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            },
        )
        .await;
        let f = r.unwrap_err();
        assert_eq!(f.kind, ErrorKind::Transient);
        assert!(f.message.starts_with("no answer within"), "{}", f.message);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
