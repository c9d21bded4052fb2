//! The node's shared object cache: vault objects keyed by identity, vault,
//! type, name and version spec, so that any number of volumes of one
//! identity cost one vault request per object per refresh interval.
//!
//! - **Single flight**: concurrent requests for one key make one fetch; the
//!   others wait for its result.
//! - **Freshness**: a caller says how old a value it accepts (`max_age`),
//!   or from when (`since`); rotation asks with the refresh interval, so a
//!   key is fetched at most once per interval whatever the number of
//!   volumes. A value's age counts from when its fetch *started*. A
//!   `max_age` caller joins any fetch under way; a `since` caller joins
//!   only one that started late enough for it: a value "fetched since T"
//!   never comes from a request sent before T.
//! - **Byte budget**: least recently used entries are evicted past the
//!   budget. Values hold their secret material in zeroizing types, so an
//!   evicted or replaced value is wiped when its last holder drops it.
//! - **Authorization stays with the caller**: the key includes the identity,
//!   and the provider only asks for a key after the pod's own credentials
//!   authenticated as that identity.
//!
//! Lock order: one mutex; never held across an `.await`.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use lru::LruCache;

/// What counts against the byte budget.
pub trait Weigh {
    /// Bytes of secret material held.
    fn weight(&self) -> usize;
}

type Flight<V, E> = Shared<BoxFuture<'static, Result<Arc<V>, E>>>;

struct Entry<V> {
    value: Arc<V>,
    weight: usize,
    /// When the fetch that produced it started.
    fetched: Instant,
}

struct State<K: Hash + Eq, V, E> {
    entries: LruCache<K, Entry<V>>,
    bytes: usize,
    /// The newest fetch under way per key: its id, when it started, and
    /// its shared result.
    flights: std::collections::HashMap<K, (u64, Instant, Flight<V, E>)>,
    next_flight: u64,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Requests that joined a fetch already under way.
    pub joined: AtomicU64,
    pub evictions: AtomicU64,
}

/// How a value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Fetched,
    /// Another caller's fetch, already under way.
    Joined,
}

/// The cache. `E` must be cheap to clone (it is shared by joined callers).
pub struct ObjectCache<K: Hash + Eq, V, E> {
    state: Mutex<State<K, V, E>>,
    budget: usize,
    counters: CacheCounters,
    /// Where hits, misses and bytes are counted (the process's registry
    /// unless [`ObjectCache::with_metrics`]).
    metrics: &'static crate::metrics::Metrics,
}

impl<K: Hash + Eq, V, E> std::fmt::Debug for ObjectCache<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("ObjectCache")
            .field("budget", &self.budget)
            .field("bytes", &state.bytes)
            .field("entries", &state.entries.len())
            .finish()
    }
}

impl<K, V, E> ObjectCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Weigh + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Counts into `metrics` instead of the process's registry.
    pub fn with_metrics(mut self, metrics: &'static crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A cache holding at most `budget` bytes of values.
    pub fn new(budget: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
                flights: std::collections::HashMap::new(),
                next_flight: 0,
            }),
            budget,
            counters: CacheCounters::default(),
            metrics: crate::metrics::global(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V, E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value for `key` if its fetch started at or after `fresh.since`
    /// (`None`: any value will do), else the result of a fetch under way
    /// (for a strict caller, only one that started at or after
    /// `fresh.since`), else a new fetch. A caller that takes its cutoff once
    /// and then asks for many keys, some only after others finished, gets
    /// the same values as if it had asked for all at once: a relative
    /// `max_age` checked key by key would turn away values that were fresh
    /// when it started. `fetch` runs once, whatever the number of
    /// concurrent callers; a failed fetch stores nothing and leaves an older
    /// value in place (see [`ObjectCache::peek`]).
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: K,
        fresh: Fresh,
        fetch: F,
    ) -> Result<(Arc<V>, Source), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let since = fresh.since;
        let fresh_entry = |started: Instant| since.is_none_or(|since| started >= since);
        let joinable = |started: Instant| !fresh.strict || fresh_entry(started);
        let (id, started, flight, source) = {
            let mut state = self.lock();
            if let Some(entry) = state.entries.get(&key)
                && fresh_entry(entry.fetched)
            {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                self.metrics.cache_hits.inc();
                return Ok((entry.value.clone(), Source::Cache));
            }
            match state.flights.get(&key) {
                Some((id, started, flight)) if joinable(*started) => {
                    self.counters.joined.fetch_add(1, Ordering::Relaxed);
                    (*id, *started, flight.clone(), Source::Joined)
                }
                // None, or one that started too early for this caller: a
                // new fetch, which becomes the one later callers join.
                _ => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    self.metrics.cache_misses.inc();
                    let started = Instant::now();
                    let flight: Flight<V, E> = fetch().map(|r| r.map(Arc::new)).boxed().shared();
                    state.next_flight += 1;
                    let id = state.next_flight;
                    state
                        .flights
                        .insert(key.clone(), (id, started, flight.clone()));
                    (id, started, flight, Source::Fetched)
                }
            }
        };
        // The caller that started a fetch retires it; if that caller is
        // dropped first (a cancelled mount), the guard does, so that later
        // callers do not join a fetch nobody will store.
        let guard = (source == Source::Fetched).then(|| FlightGuard {
            cache: self,
            key: Some(key.clone()),
            id,
        });
        let result = flight.await;
        if let Some(mut guard) = guard {
            guard.key = None;
            let mut state = self.lock();
            retire(&mut state, &key, id);
            // An older fetch that finishes after a newer one must not
            // replace the newer value.
            let newer_stored = state
                .entries
                .peek(&key)
                .is_some_and(|entry| entry.fetched > started);
            if let Ok(value) = &result
                && !newer_stored
            {
                self.store(&mut state, key, value.clone(), started);
            }
        }
        result.map(|value| (value, source))
    }

    /// The value for `key` whatever its age, if any (stale-while-error).
    pub fn peek(&self, key: &K) -> Option<(Arc<V>, Duration)> {
        self.lock()
            .entries
            .peek(key)
            .map(|e| (e.value.clone(), e.fetched.elapsed()))
    }

    /// Drops `key` (its value is wiped when its last holder lets go).
    pub fn invalidate(&self, key: &K) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.pop(key) {
            state.bytes -= entry.weight;
            self.metrics.cache_bytes.dec_by(entry.weight as i64);
        }
    }

    fn store(&self, state: &mut State<K, V, E>, key: K, value: Arc<V>, fetched: Instant) {
        let weight = value.weight();
        let before = state.bytes;
        if let Some(old) = state.entries.put(
            key,
            Entry {
                value,
                weight,
                fetched,
            },
        ) {
            state.bytes -= old.weight;
        }
        state.bytes += weight;
        // Evict the least recently used entries past the budget, but never
        // the one just stored (a single object larger than the budget is
        // still served; it is simply the next to go).
        while state.bytes > self.budget && state.entries.len() > 1 {
            match state.entries.pop_lru() {
                Some((_, old)) => {
                    state.bytes -= old.weight;
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        let after = state.bytes as i64 - before as i64;
        self.metrics.cache_bytes.inc_by(after);
    }
}

/// Removes flight `id` of `key` if it is still the one under way.
fn retire<K: Hash + Eq, V, E>(state: &mut State<K, V, E>, key: &K, id: u64) {
    if state.flights.get(key).is_some_and(|(f, _, _)| *f == id) {
        state.flights.remove(key);
    }
}

/// Retires a flight whose starting caller was dropped before it finished.
struct FlightGuard<'a, K: Hash + Eq, V, E> {
    cache: &'a ObjectCache<K, V, E>,
    /// `None` once the caller retired the flight itself.
    key: Option<K>,
    id: u64,
}

impl<K: Hash + Eq, V, E> Drop for FlightGuard<'_, K, V, E> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut state = self
                .cache
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            retire(&mut state, &key, self.id);
        }
    }
}

/// Which values may answer a caller, taken once when its request starts.
#[derive(Debug, Clone, Copy)]
pub struct Fresh {
    /// Values whose fetch started at or after this (`None`: any value).
    pub since: Option<Instant>,
    /// Whether a fetch under way must also have started at or after
    /// `since` to be joined.
    pub strict: bool,
}

impl Fresh {
    /// Values younger than `max_age` from now; any fetch under way is
    /// joined (it is at least as new as anything stored).
    pub fn max_age(max_age: Duration) -> Self {
        Self {
            since: Instant::now().checked_sub(max_age),
            strict: false,
        }
    }

    /// Only what was asked of the vault at or after `at`, stored or under
    /// way: an on-demand refresh requested at `at`.
    pub fn since(at: Instant) -> Self {
        Self {
            since: Some(at),
            strict: true,
        }
    }
}

/// The default budget: 64 MiB.
pub const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug)]
    struct Blob(Vec<u8>);

    impl Weigh for Blob {
        fn weight(&self) -> usize {
            self.0.len()
        }
    }

    type Cache = ObjectCache<String, Blob, String>;

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_fresh_value_is_served_without_fetching() {
        let cache = Cache::new(1024);
        let fetches = Arc::new(AtomicUsize::new(0));
        for expected in [Source::Fetched, Source::Cache, Source::Cache] {
            let f = fetches.clone();
            let (v, source) = cache
                .get_or_fetch("k".into(), Fresh::max_age(HOUR), move || async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(Blob(vec![1, 2, 3]))
                })
                .await
                .unwrap();
            assert_eq!(v.0, [1, 2, 3]);
            assert_eq!(source, expected);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes(), 3);
    }

    #[tokio::test]
    async fn a_value_older_than_max_age_is_fetched_again() {
        let cache = Cache::new(1024);
        cache
            .get_or_fetch("k".into(), Fresh::max_age(HOUR), || async {
                Ok(Blob(vec![1]))
            })
            .await
            .unwrap();
        let (v, source) = cache
            .get_or_fetch("k".into(), Fresh::max_age(Duration::ZERO), || async {
                Ok(Blob(vec![2, 2]))
            })
            .await
            .unwrap();
        assert_eq!((v.0.as_slice(), source), (&[2u8, 2][..], Source::Fetched));
        assert_eq!(cache.bytes(), 2, "the replaced value no longer counts");
    }

    #[tokio::test]
    async fn a_caller_never_joins_a_fetch_that_started_before_its_cutoff() {
        let cache = Arc::new(Cache::new(1024));
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch("k".into(), Fresh::max_age(HOUR), || async {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok(Blob(vec![1]))
                    })
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let since = Instant::now();
        let (v, source) = cache
            .get_or_fetch("k".into(), Fresh::since(since), || async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Blob(vec![2, 2]))
            })
            .await
            .unwrap();
        assert_eq!((v.0.as_slice(), source), (&[2u8, 2][..], Source::Fetched));
        let (old, source) = slow.await.unwrap();
        assert_eq!((old.0.as_slice(), source), (&[1u8][..], Source::Fetched));
        // The slow fetch finished last but started first: the newer value
        // stays, and only it counts against the budget.
        let fetches = Arc::new(AtomicUsize::new(0));
        let f = fetches.clone();
        let (v, source) = cache
            .get_or_fetch("k".into(), Fresh::max_age(HOUR), move || async move {
                f.fetch_add(1, Ordering::SeqCst);
                Ok(Blob(vec![3]))
            })
            .await
            .unwrap();
        assert_eq!((v.0.as_slice(), source), (&[2u8, 2][..], Source::Cache));
        assert_eq!(fetches.load(Ordering::SeqCst), 0);
        assert_eq!(cache.bytes(), 2);
    }

    #[tokio::test]
    async fn a_cutoff_taken_once_accepts_what_was_fetched_after_it() {
        let cache = Cache::new(1024);
        let fetches = Arc::new(AtomicUsize::new(0));
        let since = Fresh::since(Instant::now());
        for expected in [Source::Fetched, Source::Cache, Source::Cache] {
            let f = fetches.clone();
            let (_, source) = cache
                .get_or_fetch("k".into(), since, move || async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(Blob(vec![1]))
                })
                .await
                .unwrap();
            assert_eq!(source, expected);
            // However long the caller takes between keys.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A later cutoff turns the value away.
        let (_, source) = cache
            .get_or_fetch("k".into(), Fresh::since(Instant::now()), || async {
                Ok(Blob(vec![2]))
            })
            .await
            .unwrap();
        assert_eq!(source, Source::Fetched);
    }

    #[tokio::test]
    async fn a_fetch_whose_caller_is_cancelled_is_not_joined_later() {
        let cache = Cache::new(1024);
        let cancelled = tokio::time::timeout(
            Duration::from_millis(20),
            cache.get_or_fetch("k".into(), Fresh::max_age(HOUR), || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Blob(vec![1]))
            }),
        )
        .await;
        assert!(cancelled.is_err(), "the first caller was cancelled");
        let (v, source) = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or_fetch("k".into(), Fresh::max_age(HOUR), || async {
                Ok(Blob(vec![2]))
            }),
        )
        .await
        .expect("the next caller does not wait for the abandoned fetch")
        .unwrap();
        assert_eq!((v.0.as_slice(), source), (&[2u8][..], Source::Fetched));
        let (_, source) = cache
            .get_or_fetch("k".into(), Fresh::max_age(HOUR), || async {
                Ok(Blob(vec![3]))
            })
            .await
            .unwrap();
        assert_eq!(source, Source::Cache, "and its value is stored");
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_key_make_one_fetch() {
        let cache = Arc::new(Cache::new(1024));
        let fetches = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, f) = (cache.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch("k".into(), Fresh::max_age(HOUR), move || async move {
                            f.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(Blob(vec![7]))
                        })
                        .await
                        .unwrap()
                        .1
                })
            })
            .collect();
        let mut sources = Vec::new();
        for t in tasks {
            sources.push(t.await.unwrap());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(sources.iter().filter(|s| **s == Source::Fetched).count(), 1);
        assert_eq!(cache.counters().joined.load(Ordering::Relaxed), 49);
    }

    #[tokio::test]
    async fn errors_are_shared_not_stored_and_the_old_value_survives() {
        let cache = Cache::new(1024);
        cache
            .get_or_fetch("k".into(), Fresh::max_age(HOUR), || async {
                Ok(Blob(vec![1]))
            })
            .await
            .unwrap();
        let err = cache
            .get_or_fetch("k".into(), Fresh::max_age(Duration::ZERO), || async {
                Err::<Blob, _>("throttled".to_owned())
            })
            .await
            .unwrap_err();
        assert_eq!(err, "throttled");
        let (old, _) = cache.peek(&"k".to_owned()).unwrap();
        assert_eq!(old.0, [1], "last good value kept for stale-while-error");
        let (_, source) = cache
            .get_or_fetch("k".into(), Fresh::max_age(Duration::ZERO), || async {
                Ok(Blob(vec![3]))
            })
            .await
            .unwrap();
        assert_eq!(
            source,
            Source::Fetched,
            "a failed fetch is retried next time"
        );
    }

    #[tokio::test]
    async fn the_byte_budget_evicts_least_recently_used() {
        let cache = Cache::new(10);
        for k in ["a", "b", "c"] {
            cache
                .get_or_fetch(k.into(), Fresh::max_age(HOUR), || async {
                    Ok(Blob(vec![0; 4]))
                })
                .await
                .unwrap();
            if k == "b" {
                // Touch "a" so that "b" is the least recently used.
                cache
                    .get_or_fetch("a".into(), Fresh::max_age(HOUR), || async {
                        Ok(Blob(vec![]))
                    })
                    .await
                    .unwrap();
            }
        }
        assert_eq!(cache.bytes(), 8);
        assert!(cache.peek(&"b".to_owned()).is_none(), "b evicted");
        assert!(cache.peek(&"a".to_owned()).is_some() && cache.peek(&"c".to_owned()).is_some());
        assert_eq!(cache.counters().evictions.load(Ordering::Relaxed), 1);

        // One value larger than the whole budget is still served.
        let (v, _) = cache
            .get_or_fetch("big".into(), Fresh::max_age(HOUR), || async {
                Ok(Blob(vec![0; 100]))
            })
            .await
            .unwrap();
        assert_eq!(v.0.len(), 100);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn an_evicted_value_is_wiped_when_its_last_holder_drops_it() {
        use secretfs_secrets::SecretBytes;
        struct Secret(SecretBytes);
        impl Weigh for Secret {
            fn weight(&self) -> usize {
                self.0.len()
            }
        }
        let cache: ObjectCache<u8, Secret, ()> = ObjectCache::new(4);
        let (held, _) = cache
            .get_or_fetch(1, Fresh::max_age(HOUR), || async {
                Ok(Secret(SecretBytes::from_slice(b"abcd")))
            })
            .await
            .unwrap();
        cache
            .get_or_fetch(2, Fresh::max_age(HOUR), || async {
                Ok(Secret(SecretBytes::from_slice(b"wxyz")))
            })
            .await
            .unwrap();
        assert!(cache.peek(&1).is_none(), "evicted");
        assert_eq!(
            held.0.expose(),
            b"abcd",
            "a holder keeps its copy until it lets go"
        );
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the cache no longer holds it; dropping wipes it"
        );
    }
}
