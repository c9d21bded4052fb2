//! Error kinds shared by providers, and per-object errors reported together.

use std::fmt;

/// What kind of failure a provider error is. Stable: used as a metric label
/// (`error_kind`) and mapped to gRPC codes, so the set and the strings of
/// [`ErrorKind::as_str`] must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The object, version or vault does not exist.
    NotFound,
    /// The identity was refused (401/403, disabled version, missing permission).
    Denied,
    /// The vault or the identity provider throttled us (429).
    Throttled,
    /// A failure that may go away by itself (network, 5xx, timeouts).
    Transient,
    /// The configuration or the vault's content is wrong; retrying will not help.
    Invalid,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests and metric pre-registration.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::NotFound,
        ErrorKind::Denied,
        ErrorKind::Throttled,
        ErrorKind::Transient,
        ErrorKind::Invalid,
    ];

    /// The stable, bounded label for metrics: `not_found`, `denied`,
    /// `throttled`, `transient`, `invalid`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Denied => "denied",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::Invalid => "invalid",
        }
    }

    /// Whether trying again later can succeed without a configuration change.
    pub const fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Transient)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Denied => "denied",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient failure",
            ErrorKind::Invalid => "invalid",
        })
    }
}

/// One object that could not be planned, fetched or converted.
///
/// `object` is the object's id (`secret/db-pass`, `cert/tls/0`, …) and
/// `message` says what went wrong and what is allowed. Neither ever holds
/// secret bytes or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {message}")]
pub struct ObjectError {
    /// The object id, as in `SecretProviderClassPodStatus.status.objects[].id`.
    pub object: String,
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A human-readable explanation (shown in `kubectl describe pod`).
    pub message: String,
    /// The service's `Retry-After`, when it sent one: the refresh scheduler
    /// waits at least this long before trying the volume again.
    pub retry_after: Option<std::time::Duration>,
}

impl ObjectError {
    /// Builds an error about `object`.
    pub fn new(object: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        ObjectError {
            object: object.into(),
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, with the service's `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Option<std::time::Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

/// Several failing objects, reported together so a user fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectErrors(Vec<ObjectError>);

impl ObjectErrors {
    /// An empty collection.
    pub fn new() -> Self {
        ObjectErrors(Vec::new())
    }

    /// Adds one failure.
    pub fn push(&mut self, error: ObjectError) {
        self.0.push(error);
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many objects failed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The failures, in the order they were added.
    pub fn errors(&self) -> &[ObjectError] {
        &self.0
    }

    /// `Ok(())` when nothing failed, otherwise `Err(self)`.
    pub fn into_result(self) -> Result<(), ObjectErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The kind that describes the whole set: the least retryable one wins
    /// (invalid > not found > denied > throttled > transient), so a caller
    /// does not retry what cannot succeed.
    pub fn kind(&self) -> Option<ErrorKind> {
        const ORDER: [ErrorKind; 5] = [
            ErrorKind::Invalid,
            ErrorKind::NotFound,
            ErrorKind::Denied,
            ErrorKind::Throttled,
            ErrorKind::Transient,
        ];
        ORDER
            .into_iter()
            .find(|k| self.0.iter().any(|e| e.kind == *k))
    }
}

impl FromIterator<ObjectError> for ObjectErrors {
    fn from_iter<T: IntoIterator<Item = ObjectError>>(iter: T) -> Self {
        ObjectErrors(iter.into_iter().collect())
    }
}

impl fmt::Display for ObjectErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("no object failed"),
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} objects failed: ", many.len())?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ObjectErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_labels_are_stable_and_distinct() {
        let labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            ["not_found", "denied", "throttled", "transient", "invalid"]
        );
        assert!(ErrorKind::Throttled.is_retryable());
        assert!(ErrorKind::Transient.is_retryable());
        assert!(!ErrorKind::Invalid.is_retryable());
        assert!(!ErrorKind::NotFound.is_retryable());
        assert!(!ErrorKind::Denied.is_retryable());
    }

    #[test]
    fn several_failures_are_reported_together() {
        let errs: ObjectErrors = [
            ObjectError::new("secret/a", ErrorKind::Throttled, "429 from Key Vault"),
            ObjectError::new("key/b", ErrorKind::NotFound, "key b was not found"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            errs.to_string(),
            "2 objects failed: secret/a: 429 from Key Vault; key/b: key b was not found"
        );
        assert_eq!(errs.kind(), Some(ErrorKind::NotFound));
        assert_eq!(errs.len(), 2);
        assert!(errs.clone().into_result().is_err());
        assert_eq!(ObjectErrors::new().kind(), None);
        assert!(ObjectErrors::new().into_result().is_ok());
    }

    #[test]
    fn one_failure_is_shown_alone() {
        let mut errs = ObjectErrors::new();
        errs.push(ObjectError::new(
            "cert/tls",
            ErrorKind::Denied,
            "403 Forbidden",
        ));
        assert_eq!(errs.to_string(), "cert/tls: 403 Forbidden");
        assert_eq!(errs.kind(), Some(ErrorKind::Denied));
    }
}
