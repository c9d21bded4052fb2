//! A live mount changes hands: one server releases (or dies), another
//! adopts the same kernel connection. Readers must never see an error.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use secretfs_fuse::{
    Content, ContentSource, FileSpec, LoadError, MountOptions, MountedVolume, Volume,
};
use secretfs_secrets::SecretBytes;

use super::fixture::*;

/// Readers looping open/read/close on `path` until stopped.
struct Readers {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    longest_ns: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(path: std::path::PathBuf, count: usize, allowed: &'static [&'static str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let longest_ns = Arc::new(AtomicU64::new(0));
        let threads = (0..count)
            .map(|_| {
                let (stop, failures, reads, longest) = (
                    stop.clone(),
                    failures.clone(),
                    reads.clone(),
                    longest_ns.clone(),
                );
                let path = path.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let result = std::fs::File::open(&path).and_then(|mut f| {
                            let mut text = String::new();
                            f.read_to_string(&mut text).map(|_| text)
                        });
                        let took = started.elapsed().as_nanos() as u64;
                        longest.fetch_max(took, Ordering::SeqCst);
                        match result {
                            Ok(text) if allowed.contains(&text.as_str()) => {
                                reads.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(text) => panic!("read {text:?}, expected one of {allowed:?}"),
                            Err(e) => {
                                eprintln!("read failed: {e}");
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            failures,
            reads,
            longest_ns,
            threads,
        }
    }

    /// (reads, failures, longest single open+read+close).
    fn finish(self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.reads.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
            Duration::from_nanos(self.longest_ns.load(Ordering::SeqCst)),
        )
    }
}

fn kernel_resends() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 9)
}

/// The next process answers for every inode the kernel holds: the current
/// versions, an older version a descriptor still holds, and one a bind
/// mount pins; then it rotates the file and each reader sees what
/// docs/SEMANTICS.md says.
#[test]
fn a_released_mount_is_adopted_and_readers_only_wait() {
    if !fuse_available() {
        return;
    }
    let cold = || file("dir/COLD", 0o644, 0, b"cold");
    let mut m = mount(vec![file("dir/SECRET", 0o644, 0, b"v1"), cold()]);
    let path = m.path("dir/SECRET");
    // A descriptor of v1, which a replace then retires, and a subPath of
    // v2.
    let held = std::fs::File::open(&path).unwrap();
    m.replace("dir/SECRET", b"v2");
    let sub = BindMount::like_kubelet(&path);
    let mut buf = [0u8; 8];
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"v1", "an fd keeps its version");
    assert_eq!(std::fs::read(sub.path()).unwrap(), b"v2");
    let readers = Readers::start(path.clone(), 4, &["v2", "v3"]);
    std::thread::sleep(Duration::from_millis(100));

    let old = m.mounted.take().unwrap();
    let state = old.session_state();
    assert!(!state.versions.is_empty(), "the versions are recorded");
    let kept = old.connection().unwrap().try_clone_to_owned().unwrap();
    let released = old.release(Duration::from_secs(2));
    assert_eq!(released.unanswered, 0);
    // Warm reads come from the page cache with no server at all; a file
    // never read before needs one, and waits for it.
    let cold_path = m.path("dir/COLD");
    let cold_reader = std::thread::spawn(move || {
        let started = Instant::now();
        let read = std::fs::read(cold_path);
        (read, started.elapsed())
    });
    let gap = Duration::from_millis(300);
    std::thread::sleep(gap);
    assert!(
        mount_line(&m.target).is_some(),
        "released, not unmounted: {:?}",
        mount_line(&m.target)
    );

    // The next process has the newest bytes only (as the keeper holds).
    let volume = Volume::new(spec(vec![file("dir/SECRET", 0o644, 0, b"v2"), cold()])).unwrap();
    let new = MountedVolume::adopt(
        volume,
        &m.target,
        kept,
        &state,
        &MountOptions::default(),
        m.runtime.handle().clone(),
    )
    .unwrap();
    let (cold_read, waited) = cold_reader.join().unwrap();
    assert_eq!(cold_read.unwrap(), b"cold");
    assert!(
        waited >= gap / 2,
        "a read issued in the gap waited for the new server: {waited:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    // The descriptor's older version is answered with the bytes this
    // process has, whole.
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"v2", "an fd held across the takeover");
    new.volume()
        .replace("dir/SECRET", Arc::new(SecretBytes::from_slice(b"v3")))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "v3");
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"v2",
        "an fd keeps its version after the takeover too"
    );
    assert_eq!(
        std::fs::read(sub.path()).unwrap(),
        b"v3",
        "a subPath follows rotations made by the new process"
    );
    assert_eq!(
        std::fs::read_dir(m.path("dir")).unwrap().count(),
        2,
        "listing after the takeover"
    );

    let (reads, failures, longest) = readers.finish();
    eprintln!("{reads} reads, {failures} failed, longest {longest:?}");
    assert_eq!(failures, 0);
    assert!(reads > 10);
    drop(held);
    drop(sub);
    m.mounted = Some(new);
    m.unmount();
    assert!(mount_line(&m.target).is_none());
}

/// A process that took over records what it serves: the process after it
/// takes over again, with no error for any reader (two takeovers in a row,
/// the second from the first one's record).
#[test]
fn a_mount_survives_two_takeovers_in_a_row() {
    if !fuse_available() {
        return;
    }
    let mut m = mount(vec![file("SECRET", 0o644, 0, b"v1")]);
    let path = m.path("SECRET");
    let readers = Readers::start(path.clone(), 2, &["v1", "v2"]);
    for round in 0..2 {
        let old = m.mounted.take().unwrap();
        let state = old.session_state();
        let kept = old.connection().unwrap().try_clone_to_owned().unwrap();
        old.release(Duration::from_secs(2));
        let volume = Volume::new(spec(vec![file("SECRET", 0o644, 0, b"v1")])).unwrap();
        let new = MountedVolume::adopt(
            volume,
            &m.target,
            kept,
            &state,
            &MountOptions::default(),
            m.runtime.handle().clone(),
        )
        .unwrap();
        m.mounted = Some(new);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(std::fs::read(&path).unwrap(), b"v1", "round {round}");
    }
    m.replace("SECRET", b"v2");
    assert_eq!(std::fs::read(&path).unwrap(), b"v2");
    let (reads, failures, _) = readers.finish();
    assert_eq!(failures, 0, "{reads} reads");
    m.unmount();
}

/// A load that never finishes: the request waits in the old server.
struct Stuck;

impl ContentSource for Stuck {
    fn load(&self) -> BoxFuture<'static, Result<Arc<SecretBytes>, LoadError>> {
        futures::future::pending().boxed()
    }
}

#[test]
fn a_request_a_dead_server_never_answered_is_answered_by_the_next() {
    if !fuse_available() {
        return;
    }
    if !kernel_resends() {
        eprintln!("skipping: FUSE_NOTIFY_RESEND needs Linux 6.9 or newer");
        return;
    }
    let stuck = FileSpec::new("SECRET", 0o644, 0, 0, Content::Lazy(Arc::new(Stuck))).unwrap();
    let mut m = mount(vec![stuck]);
    let path = m.path("SECRET");
    let reader = std::thread::spawn(move || std::fs::read_to_string(path));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!reader.is_finished(), "the reader waits for the stuck load");

    let old = m.mounted.take().unwrap();
    let state = old.session_state().clone();
    let kept = old.connection().unwrap().try_clone_to_owned().unwrap();
    old.abandon();
    std::thread::sleep(Duration::from_millis(100));

    let volume = Volume::new(spec(vec![file("SECRET", 0o644, 0, b"fresh")])).unwrap();
    let new = MountedVolume::adopt(
        volume,
        &m.target,
        kept,
        &state,
        &MountOptions::default(),
        m.runtime.handle().clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "the resent request was answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(reader.join().unwrap().unwrap(), "fresh");
    m.mounted = Some(new);
    m.unmount();
}

#[test]
fn adopting_with_a_state_that_is_not_an_init_request_is_refused() {
    if !fuse_available() {
        return;
    }
    let mut m = mount(vec![file("SECRET", 0o644, 0, b"v1")]);
    let old = m.mounted.as_ref().unwrap();
    let mut state = old.session_state().clone();
    state.init_request.truncate(10);
    let kept = old.connection().unwrap().try_clone_to_owned().unwrap();
    let volume = Volume::new(spec(vec![file("SECRET", 0o644, 0, b"v1")])).unwrap();
    let err = MountedVolume::adopt(
        volume,
        &m.target,
        kept,
        &state,
        &MountOptions::default(),
        m.runtime.handle().clone(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot take over"), "{err}");
    // The mount still works through its first server.
    assert_eq!(std::fs::read_to_string(m.path("SECRET")).unwrap(), "v1");
    m.unmount();
}
