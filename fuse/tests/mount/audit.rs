//! Open auditing on a real mount (`MountOptions::audit`): the kernel sends
//! each open, and the first open of each version by each process reaches
//! the observer with the opener's pid; reads stay in the page cache.

use std::sync::{Arc, Mutex};

use secretfs_fuse::{MountOptions, OpenAudit, OpenEvent, OpenObserver, ReadMode};

use super::fixture::*;

#[derive(Default)]
struct Recorder(Mutex<Vec<OpenEvent>>);

impl OpenObserver for Recorder {
    fn first_open(&self, event: OpenEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    fn take(&self) -> Vec<OpenEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn audited(mode: ReadMode) -> (Mounted, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let options = MountOptions {
        read_mode: mode,
        audit: Some(OpenAudit(recorder.clone())),
        ..MountOptions::default()
    };
    let m = mount_with(
        spec(vec![
            file("a", 0o644, 0, b"alpha"),
            file("dir/b", 0o644, 0, b"beta"),
        ]),
        &options,
    );
    (m, recorder)
}

/// Runs `cat` on `paths` in a child process; its pid.
fn cat(paths: &[std::path::PathBuf]) -> u32 {
    let child = std::process::Command::new("cat")
        .args(paths)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    pid
}

#[test]
fn each_process_first_open_of_each_version_is_reported_with_its_pid() {
    if !fuse_available() {
        return;
    }
    for mode in [ReadMode::PageCache, ReadMode::Atomic] {
        let (m, recorder) = audited(mode);
        let me = std::process::id();
        // This process (the test's thread, whose tid is not the pid),
        // twice: one event, naming the process.
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
        let events = recorder.take();
        assert_eq!(events.len(), 1, "{mode:?}: {events:?}");
        assert_eq!(events[0].pid, me);
        assert_ne!(events[0].tid, 0);
        assert_eq!(events[0].uid, 0);
        assert_eq!(events[0].path, "a");
        assert!(events[0].current);

        // Two other processes: one event each, with their own pids.
        let first = cat(&[m.path("a")]);
        let second = cat(&[m.path("a"), m.path("dir/b")]);
        let events = recorder.take();
        let seen: Vec<(u32, &str)> = events.iter().map(|e| (e.pid, e.path.as_str())).collect();
        assert_eq!(
            seen,
            [(first, "a"), (second, "a"), (second, "dir/b")],
            "{mode:?}"
        );

        // A new version: this process's first open of it is reported
        // again, once; the older version it opened before is not.
        m.replace("a", b"rotated");
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"rotated");
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"rotated");
        let events = recorder.take();
        assert_eq!(events.len(), 1, "{mode:?}: {events:?}");
        assert_eq!((events[0].pid, events[0].path.as_str()), (me, "a"));
        // Nothing of the bytes is in an event.
        assert!(!format!("{events:?}").contains("rotated"));
    }
}

#[test]
fn audited_reads_stay_in_the_page_cache() {
    if !fuse_available() {
        return;
    }
    let (m, recorder) = audited(ReadMode::PageCache);
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
    let reads = m
        .volume()
        .core()
        .counters()
        .reads
        .load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
    }
    let after = m
        .volume()
        .core()
        .counters()
        .reads
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        after, reads,
        "warm reads of an audited volume left the kernel"
    );
    assert_eq!(recorder.take().len(), 1);
}

#[test]
fn volumes_without_an_observer_report_nothing_and_keep_no_open() {
    if !fuse_available() {
        return;
    }
    // The default path: OPEN answers ENOSYS, so an unaudited mount has no
    // observer to call; reads work as before.
    let m = mount(vec![file("a", 0o644, 0, b"alpha")]);
    assert_eq!(MountOptions::default().audit, None);
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
}
