//! Request counters: every request the emulator answers (or drops) is counted
//! by vault, route, object, identity and status — including 401 challenges
//! and token requests — so tests can assert exact round trips.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::route::Route;

/// What one request is counted as. Empty strings mean "none" (e.g. the
/// identity of an unauthenticated request). `status` 0 means the connection
/// was reset without a response.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    pub vault: String,
    pub route: Route,
    pub object: String,
    /// Client id of the caller (from the token, or the token request).
    pub identity: String,
    pub status: u16,
}

/// A selection of counters; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterFilter {
    pub vault: Option<String>,
    pub route: Option<Route>,
    pub object: Option<String>,
    pub identity: Option<String>,
    pub status: Option<u16>,
}

impl CounterFilter {
    /// Requests of `route`.
    pub fn route(route: Route) -> Self {
        Self {
            route: Some(route),
            ..Self::default()
        }
    }

    /// Restrict to a vault.
    pub fn vault(mut self, vault: &str) -> Self {
        self.vault = Some(vault.to_string());
        self
    }

    /// Restrict to an object name.
    pub fn object(mut self, object: &str) -> Self {
        self.object = Some(object.to_string());
        self
    }

    /// Restrict to an identity (client id).
    pub fn identity(mut self, identity: &str) -> Self {
        self.identity = Some(identity.to_string());
        self
    }

    /// Restrict to a status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    fn matches(&self, k: &RequestKey) -> bool {
        self.vault
            .as_deref()
            .is_none_or(|v| v.eq_ignore_ascii_case(&k.vault))
            && self.route.is_none_or(|r| r == k.route)
            && self.object.as_deref().is_none_or(|o| o == k.object)
            && self
                .identity
                .as_deref()
                .is_none_or(|i| i.eq_ignore_ascii_case(&k.identity))
            && self.status.is_none_or(|s| s == k.status)
    }
}

/// One counter row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    #[serde(flatten)]
    pub key: RequestKey,
    pub count: u64,
}

/// Thread-safe counters, and a gauge of Key Vault requests in flight.
#[derive(Debug, Default)]
pub struct Counters {
    map: Mutex<HashMap<RequestKey, u64>>,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// One Key Vault request being served; dropping it ends it.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counters {
    /// Count one request.
    pub fn record(&self, key: RequestKey) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key).or_insert(0) += 1;
    }

    /// Sum of the counters selected by `filter`.
    pub fn count(&self, filter: &CounterFilter) -> u64 {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(k, _)| filter.matches(k))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every row selected by `filter`, sorted for stable output.
    pub fn rows(&self, filter: &CounterFilter) -> Vec<CounterRow> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<CounterRow> = map
            .iter()
            .filter(|(k, _)| filter.matches(k))
            .map(|(k, n)| CounterRow {
                key: k.clone(),
                count: *n,
            })
            .collect();
        rows.sort_by(|a, b| {
            (
                &a.key.vault,
                a.key.route.as_str(),
                &a.key.object,
                &a.key.identity,
                a.key.status,
            )
                .cmp(&(
                    &b.key.vault,
                    b.key.route.as_str(),
                    &b.key.object,
                    &b.key.identity,
                    b.key.status,
                ))
        });
        rows
    }

    /// A Key Vault request starts; it is in flight until the guard drops.
    pub fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    /// The most Key Vault requests in flight at once since the last reset.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Forget everything; the peak restarts from the requests in flight now.
    pub fn reset(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_and_sum() {
        let c = Counters::default();
        let key = |route, status| RequestKey {
            vault: "kv".into(),
            route,
            object: "s".into(),
            identity: "id".into(),
            status,
        };
        c.record(key(Route::SecretGet, 200));
        c.record(key(Route::SecretGet, 200));
        c.record(key(Route::SecretGet, 401));
        c.record(key(Route::EntraToken, 200));
        assert_eq!(c.count(&CounterFilter::route(Route::SecretGet)), 3);
        assert_eq!(
            c.count(&CounterFilter::route(Route::SecretGet).status(200)),
            2
        );
        assert_eq!(c.count(&CounterFilter::default().vault("KV")), 4);
        assert_eq!(c.count(&CounterFilter::default().identity("other")), 0);
        assert_eq!(c.rows(&CounterFilter::default()).len(), 3);
        c.reset();
        assert_eq!(c.count(&CounterFilter::default()), 0);
    }

    #[test]
    fn the_in_flight_gauge_keeps_its_peak() {
        let c = Counters::default();
        assert_eq!(c.peak_in_flight(), 0);
        let a = c.enter();
        let b = c.enter();
        drop(a);
        let d = c.enter();
        assert_eq!(c.peak_in_flight(), 2);
        drop((b, d));
        assert_eq!(c.peak_in_flight(), 2);
        c.reset();
        assert_eq!(c.peak_in_flight(), 0);
        let _e = c.enter();
        assert_eq!(c.peak_in_flight(), 1);
    }
}
