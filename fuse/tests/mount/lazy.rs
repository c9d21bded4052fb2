//! Files whose contents load on first access.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use secretfs_fuse::{Content, ContentSource, FileSpec, LoadError};
use secretfs_secrets::SecretBytes;

use super::fixture::*;

/// Counts loads; fails the first `failures` of them; sleeps `delay` each.
struct Source {
    loads: AtomicUsize,
    failures: usize,
    delay: Duration,
    value: &'static [u8],
}

impl Source {
    fn new(value: &'static [u8], failures: usize, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            loads: AtomicUsize::new(0),
            failures,
            delay,
            value,
        })
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

impl ContentSource for Source {
    fn load(&self) -> BoxFuture<'static, Result<Arc<SecretBytes>, LoadError>> {
        let n = self.loads.fetch_add(1, Ordering::SeqCst);
        let (fail, delay, value) = (n < self.failures, self.delay, self.value);
        async move {
            tokio::time::sleep(delay).await;
            if fail {
                Err(LoadError::new("vault unreachable (test)"))
            } else {
                Ok(Arc::new(SecretBytes::from_slice(value)))
            }
        }
        .boxed()
    }
}

fn lazy(path: &str, source: &Arc<Source>) -> FileSpec {
    FileSpec::new(path, 0o644, 0, 0, Content::Lazy(source.clone())).unwrap()
}

#[test]
fn listing_does_not_load_and_the_first_read_does_once() {
    if !fuse_available() {
        return;
    }
    let source = Source::new(b"lazy value", 0, Duration::from_millis(50));
    let m = mount(vec![lazy("l", &source)]);
    let names: Vec<_> = std::fs::read_dir(&m.target).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(source.loads(), 0, "readdir must not load");

    let readers: Vec<_> = (0..8)
        .map(|_| {
            let path = m.path("l");
            std::thread::spawn(move || std::fs::read(path).unwrap())
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), b"lazy value");
    }
    assert_eq!(source.loads(), 1, "concurrent first readers share one load");
    assert_eq!(std::fs::metadata(m.path("l")).unwrap().len(), 10);
}

#[test]
fn a_failed_load_is_eio_and_the_next_access_retries() {
    if !fuse_available() {
        return;
    }
    let source = Source::new(b"eventually", 1, Duration::ZERO);
    let m = mount(vec![lazy("l", &source)]);
    let err = std::fs::read(m.path("l")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(std::fs::read(m.path("l")).unwrap(), b"eventually");
    assert_eq!(source.loads(), 2);
}

#[test]
fn an_unloaded_file_loads_again_on_the_next_read() {
    if !fuse_available() {
        return;
    }
    let source = Source::new(b"reloadable", 0, Duration::ZERO);
    let m = mount(vec![lazy("l", &source)]);
    assert_eq!(std::fs::read(m.path("l")).unwrap(), b"reloadable");
    assert_eq!(std::fs::read(m.path("l")).unwrap(), b"reloadable");
    assert_eq!(source.loads(), 1, "a warm read does not load");
    let held = std::fs::File::open(m.path("l")).unwrap();
    m.volume().unload("l").unwrap();
    assert_eq!(source.loads(), 1, "an unload loads nothing");
    assert_eq!(std::fs::read(m.path("l")).unwrap(), b"reloadable");
    assert_eq!(source.loads(), 2);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
    assert_eq!(
        text, "reloadable",
        "a descriptor opened before keeps its version"
    );
}
