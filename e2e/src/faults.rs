//! Injected faults: 429 with or without `Retry-After`, 5xx, added latency,
//! connection resets and 403s, scoped per vault, route, object or identity,
//! for the next N matching requests or until cleared.
//!
//! Faults apply to requests that reached a handler: on Key Vault routes only
//! after authentication succeeded (a 401 challenge is never faulted), on
//! token routes before the request is processed.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::route::Route;

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultKind {
    /// 429 `Throttled`; `Retry-After: <seconds>` when given.
    #[serde(rename_all = "camelCase")]
    Throttle {
        #[serde(default)]
        retry_after: Option<u32>,
    },
    /// A 5xx answer (default 500).
    #[serde(rename_all = "camelCase")]
    ServerError {
        #[serde(default = "default_5xx")]
        status: u16,
    },
    /// Wait this long, then answer normally.
    #[serde(rename_all = "camelCase")]
    Latency { millis: u64 },
    /// Drop the TCP connection with a reset, without a response.
    ConnectionReset,
    /// A continuous-access-evaluation 401: `error="insufficient_claims"`
    /// with a `claims` challenge (Key Vault routes; 401 elsewhere).
    ClaimsChallenge,
    /// 403 `Forbidden` with this inner code (e.g. `ForbiddenByPolicy`).
    #[serde(rename_all = "camelCase")]
    Forbidden {
        inner_code: String,
        #[serde(default)]
        message: Option<String>,
    },
}

fn default_5xx() -> u16 {
    500
}

/// Which requests a fault hits; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultScope {
    pub vault: Option<String>,
    pub route: Option<Route>,
    pub object: Option<String>,
    /// Client id (names and object ids are resolved when the fault is added).
    pub identity: Option<String>,
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultSpec {
    #[serde(flatten)]
    pub kind: FaultKind,
    #[serde(flatten)]
    pub scope: FaultScope,
    /// Hit the next `count` matching requests; forever when absent.
    #[serde(default)]
    pub count: Option<u32>,
}

impl FaultSpec {
    /// A fault of `kind` for every request, forever.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            scope: FaultScope::default(),
            count: None,
        }
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    /// Only requests to `vault`.
    pub fn vault(mut self, vault: &str) -> Self {
        self.scope.vault = Some(vault.to_string());
        self
    }

    /// Only requests of `route`.
    pub fn route(mut self, route: Route) -> Self {
        self.scope.route = Some(route);
        self
    }

    /// Only requests for object `name`.
    pub fn object(mut self, name: &str) -> Self {
        self.scope.object = Some(name.to_string());
        self
    }

    /// Only requests of identity `client_id`.
    pub fn identity(mut self, client_id: &str) -> Self {
        self.scope.identity = Some(client_id.to_string());
        self
    }
}

/// An installed fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Requests hit so far.
    pub hits: u64,
}

/// What a request is, for matching.
#[derive(Debug, Clone, Copy)]
pub struct FaultTarget<'a> {
    pub vault: &'a str,
    pub route: Route,
    pub object: &'a str,
    pub identity: &'a str,
}

/// The faults that hit one request: total added latency, then at most one
/// answer-changing fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultDecision {
    pub latency_ms: u64,
    pub answer: Option<FaultKind>,
}

/// The fault table.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<(u64, Vec<ActiveFault>)>,
}

impl FaultScope {
    fn matches(&self, t: &FaultTarget<'_>) -> bool {
        self.vault
            .as_deref()
            .is_none_or(|v| v.eq_ignore_ascii_case(t.vault))
            && self.route.is_none_or(|r| r == t.route)
            && self.object.as_deref().is_none_or(|o| o == t.object)
            && self
                .identity
                .as_deref()
                .is_none_or(|i| i.eq_ignore_ascii_case(t.identity))
    }
}

impl Faults {
    /// Install a fault; returns its id.
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let id = g.0;
        g.1.push(ActiveFault { id, spec, hits: 0 });
        id
    }

    /// Remove one fault; false if it was not there.
    pub fn remove(&self, id: u64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = g.1.len();
        g.1.retain(|f| f.id != id);
        g.1.len() != before
    }

    /// Remove every fault.
    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }

    /// The installed faults.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Decide the faults for one request, consuming counts.
    pub fn decide(&self, target: FaultTarget<'_>) -> FaultDecision {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut decision = FaultDecision::default();
        if g.1.is_empty() {
            return decision;
        }
        for f in g.1.iter_mut() {
            if !f.spec.scope.matches(&target) {
                continue;
            }
            let take = match &f.spec.kind {
                FaultKind::Latency { millis } => {
                    decision.latency_ms += millis;
                    true
                }
                other if decision.answer.is_none() => {
                    decision.answer = Some(other.clone());
                    true
                }
                _ => false,
            };
            if take {
                f.hits += 1;
                if let Some(n) = f.spec.count.as_mut() {
                    *n = n.saturating_sub(1);
                }
            }
        }
        g.1.retain(|f| f.spec.count != Some(0));
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(route: Route) -> FaultTarget<'static> {
        FaultTarget {
            vault: "kv",
            route,
            object: "s",
            identity: "id",
        }
    }

    #[test]
    fn counted_faults_expire_and_scopes_match() {
        let f = Faults::default();
        f.add(
            FaultSpec::new(FaultKind::Throttle {
                retry_after: Some(1),
            })
            .times(2)
            .route(Route::SecretGet),
        );
        f.add(FaultSpec::new(FaultKind::Latency { millis: 5 }).times(1));
        let d = f.decide(target(Route::KeyGet));
        assert_eq!(
            d,
            FaultDecision {
                latency_ms: 5,
                answer: None
            }
        );
        assert!(f.decide(target(Route::SecretGet)).answer.is_some());
        assert!(f.decide(target(Route::SecretGet)).answer.is_some());
        assert_eq!(f.decide(target(Route::SecretGet)), FaultDecision::default());
        assert!(f.list().is_empty());
    }

    #[test]
    fn spec_json_shape() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"kind":"throttle","retryAfter":2,"vault":"kv-demo","route":"secrets.get","count":3}"#,
        )
        .unwrap();
        assert_eq!(
            spec.kind,
            FaultKind::Throttle {
                retry_after: Some(2)
            }
        );
        assert_eq!(spec.scope.route, Some(Route::SecretGet));
        assert_eq!(spec.count, Some(3));
        let reset: FaultSpec = serde_json::from_str(r#"{"kind":"connectionReset"}"#).unwrap();
        assert_eq!(reset.kind, FaultKind::ConnectionReset);
    }
}
