//! Readers racing a file that is replaced over and over with values of
//! different lengths, in each read mode (docs/SEMANTICS.md, "Rotation and
//! read consistency"):
//!
//! - an open by path reads the newest value, whole: never a torn value, and
//!   never one older than the last replace completed before the open, in
//!   either mode;
//! - a descriptor held open reads one whole value: in page-cache mode (the
//!   default) always the one it opened; in atomic mode the newest;
//! - a file bind-mounted on its own (as kubelet does for `subPath`) follows
//!   the replaces: never stale; in page-cache mode a read that overlaps a
//!   replace can be torn (counted and printed for docs/BENCHMARKS.md).
//!
//! A "read" here is one `read(2)` call big enough for the whole file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secretfs_fuse::{MountOptions, ReadMode};

use super::fixture::*;

const REPLACES: usize = 1000;
const READERS: usize = 8;

/// Value number `i`: a header naming `i` and its length, then a fill byte
/// derived from `i`, so any mix of two values is detectable.
fn value(i: usize) -> Vec<u8> {
    let len = 16 + (i * 7919) % 6000;
    let mut v = format!("v{i:05}:{len:05}|").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

/// One `pread` of the whole file, through `file` or a fresh open.
fn read_once(path: &Path, held: Option<&File>) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = match held {
        Some(file) => file.read_at(&mut buf, 0),
        None => File::open(path).and_then(|f| f.read_at(&mut buf, 0)),
    }
    .unwrap();
    buf.truncate(n);
    buf
}

/// The number of a value read back, or why it is torn.
fn check(read: &[u8]) -> Result<usize, String> {
    let header =
        std::str::from_utf8(read.get(..13).ok_or("too short")?).map_err(|e| e.to_string())?;
    let i: usize = header[1..6]
        .parse()
        .map_err(|_| format!("bad header {header:?}"))?;
    if read != value(i).as_slice() {
        return Err(format!("torn read: header says {i}, {} bytes", read.len()));
    }
    Ok(i)
}

#[derive(Default)]
struct Outcome {
    reads: usize,
    stale: Vec<String>,
    torn: Vec<String>,
    /// Held descriptors: reads of a value other than the one first read.
    moved: Vec<String>,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.reads += other.reads;
        self.stale.extend(other.stale);
        self.torn.extend(other.torn);
        self.moved.extend(other.moved);
    }

    fn print(&self, what: &str) {
        eprintln!(
            "{what}: {} reads: {} stale, {} torn, {} moved from the value first read",
            self.reads,
            self.stale.len(),
            self.torn.len(),
            self.moved.len()
        );
    }
}

/// How a reader reaches the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Opens the path for every read.
    Path,
    /// Opens once, reads through that descriptor.
    Held,
    /// Opens the bind mount of the file for every read.
    Bound,
}

/// Runs `readers` against `REPLACES` replaces of one file; returns what
/// the readers of each kind saw.
fn hammer(mode: ReadMode, readers: &[Reader]) -> Vec<(Reader, Outcome)> {
    let options = MountOptions {
        read_mode: mode,
        ..MountOptions::default()
    };
    let m = mount_with(spec(vec![file("s", 0o644, 0, &value(0))]), &options);
    let bound = readers
        .contains(&Reader::Bound)
        .then(|| BindMount::new(&m.path("s")));
    if bound.is_some() {
        // The mount pins the version it was made of, which from the next
        // replace on follows in place; so does any descriptor of that inode,
        // one opened by path included (docs/SEMANTICS.md). One replace (a
        // new version of value 0) first, so the readers by path never open
        // the pinned inode.
        m.replace("s", &value(0));
    }
    let completed = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = readers
        .iter()
        .map(|&kind| {
            let path = match kind {
                Reader::Bound => bound.as_ref().unwrap().path().to_owned(),
                _ => m.path("s"),
            };
            let (completed, stop, reads) = (completed.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let held = (kind == Reader::Held).then(|| File::open(&path).unwrap());
                let mut outcome = Outcome::default();
                let mut first = None;
                while !stop.load(Ordering::SeqCst) {
                    let floor = completed.load(Ordering::SeqCst);
                    let read = read_once(&path, held.as_ref());
                    outcome.reads += 1;
                    reads.fetch_add(1, Ordering::SeqCst);
                    match check(&read) {
                        Ok(i) => {
                            let first = *first.get_or_insert(i);
                            if kind == Reader::Held && i != first {
                                outcome.moved.push(format!("read {i}, opened at {first}"));
                            }
                            // A held descriptor in page-cache mode keeps the
                            // value it opened, by design (checked above).
                            let keeps = kind == Reader::Held && mode == ReadMode::PageCache;
                            if i < floor && !keeps {
                                outcome
                                    .stale
                                    .push(format!("stale: read {i} after {floor} completed"));
                            }
                        }
                        Err(torn) => outcome.torn.push(torn),
                    }
                }
                (kind, outcome)
            })
        })
        .collect();

    for i in 1..=REPLACES {
        m.replace("s", &value(i));
        completed.store(i, Ordering::SeqCst);
        // Let the readers in between replaces: at least one read each.
        let target = reads.load(Ordering::SeqCst) + readers.len();
        let deadline = Instant::now() + Duration::from_millis(200);
        while reads.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut by_kind: Vec<(Reader, Outcome)> = Vec::new();
    for thread in threads {
        let (kind, outcome) = thread.join().unwrap();
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => total.add(outcome),
            None => by_kind.push((kind, outcome)),
        }
    }
    for (kind, outcome) in &by_kind {
        outcome.print(&format!("{mode:?}, {kind:?} readers, {REPLACES} replaces"));
        assert!(
            outcome.reads >= REPLACES,
            "{kind:?} readers barely ran: {}",
            outcome.reads
        );
    }
    assert_eq!(check(&read_once(&m.path("s"), None)), Ok(REPLACES));
    if let Some(bound) = &bound {
        assert_eq!(check(&read_once(bound.path(), None)), Ok(REPLACES));
    }
    drop(bound);
    by_kind
}

fn sample(v: &[String]) -> &[String] {
    &v[..v.len().min(5)]
}

fn of(outcomes: &[(Reader, Outcome)], kind: Reader) -> &Outcome {
    &outcomes.iter().find(|(k, _)| *k == kind).unwrap().1
}

/// The stress run: 8 readers, half opening the path for every
/// read, half through a descriptor held open.
const HALF_HELD: [Reader; READERS] = [
    Reader::Path,
    Reader::Held,
    Reader::Path,
    Reader::Held,
    Reader::Path,
    Reader::Held,
    Reader::Path,
    Reader::Held,
];

#[test]
fn page_cache_mode_opens_by_path_see_no_torn_or_stale_value_and_held_descriptors_keep_theirs() {
    if !fuse_available() {
        return;
    }
    let outcomes = hammer(ReadMode::PageCache, &HALF_HELD);
    let path = of(&outcomes, Reader::Path);
    assert!(path.torn.is_empty(), "{:?}", sample(&path.torn));
    assert!(path.stale.is_empty(), "{:?}", sample(&path.stale));
    let held = of(&outcomes, Reader::Held);
    assert!(held.torn.is_empty(), "{:?}", sample(&held.torn));
    assert!(held.moved.is_empty(), "{:?}", sample(&held.moved));
}

#[test]
fn atomic_mode_eight_readers_see_no_torn_or_stale_value_across_1000_replaces() {
    if !fuse_available() {
        return;
    }
    let outcomes = hammer(ReadMode::Atomic, &HALF_HELD);
    for (kind, outcome) in &outcomes {
        assert!(
            outcome.torn.is_empty(),
            "{kind:?}: {:?}",
            sample(&outcome.torn)
        );
        assert!(
            outcome.stale.is_empty(),
            "{kind:?}: {:?}",
            sample(&outcome.stale)
        );
    }
}

/// A file bind-mounted on its own follows the replaces, never stale, in
/// both modes; torn reads (page-cache mode only: a read that overlaps a
/// replace of the inode the mount pins) are counted. Opens by path beside
/// it, made after the replace that let the mount's inode follow, stay
/// whole.
#[test]
fn a_bind_mounted_file_follows_every_replace() {
    if !fuse_available() {
        return;
    }
    let readers = [Reader::Bound, Reader::Bound, Reader::Path, Reader::Path];
    for mode in [ReadMode::PageCache, ReadMode::Atomic] {
        let outcomes = hammer(mode, &readers);
        let bound = of(&outcomes, Reader::Bound);
        assert!(
            bound.stale.is_empty(),
            "{mode:?}: {:?}",
            sample(&bound.stale)
        );
        if mode == ReadMode::Atomic {
            assert!(bound.torn.is_empty(), "{:?}", sample(&bound.torn));
        } else {
            eprintln!(
                "PageCache, bind mount: {} torn of {} reads, e.g. {:?}",
                bound.torn.len(),
                bound.reads,
                sample(&bound.torn)
            );
        }
        let path = of(&outcomes, Reader::Path);
        assert!(path.torn.is_empty(), "{mode:?}: {:?}", sample(&path.torn));
        assert!(path.stale.is_empty(), "{mode:?}: {:?}", sample(&path.stale));
    }
}
