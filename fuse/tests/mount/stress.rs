//! Readers never see a value older than the last completed replace, in
//! either read mode, while the file is replaced over and over with values
//! of different lengths; in atomic mode (the default) they never see a
//! torn value either. In page-cache mode a read that overlaps a replace can
//! be torn (docs/SEMANTICS.md); that test prints how many were, for
//! docs/BENCHMARKS.md.
//!
//! A "read" here is one `read(2)` call big enough for the whole file: that
//! is the unit the file system makes atomic. A reader that needs several
//! calls for one file can see the file change between them, as on any file
//! system that updates files in place (docs/SEMANTICS.md).

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

struct Outcome {
    reads: usize,
    stale: Vec<String>,
    torn: Vec<String>,
}

fn hammer(mode: ReadMode) -> Outcome {
    let options = MountOptions {
        read_mode: mode,
        ..MountOptions::default()
    };
    let m = mount_with(spec(vec![file("s", 0o644, 0, &value(0))]), &options);
    let completed = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let (path, completed, stop) = (m.path("s"), completed.clone(), stop.clone());
            let reads = reads.clone();
            std::thread::spawn(move || {
                // Half the readers open the file each time; half keep one
                // descriptor open for the whole run.
                let held = (reader % 2 == 1).then(|| File::open(&path).unwrap());
                let mut outcome = Outcome {
                    reads: 0,
                    stale: Vec::new(),
                    torn: Vec::new(),
                };
                while !stop.load(Ordering::SeqCst) {
                    let floor = completed.load(Ordering::SeqCst);
                    let read = read_once(&path, held.as_ref());
                    outcome.reads += 1;
                    reads.fetch_add(1, Ordering::SeqCst);
                    match check(&read) {
                        Ok(i) if i < floor => outcome
                            .stale
                            .push(format!("stale: read {i} after {floor} completed")),
                        Ok(_) => {}
                        Err(torn) => outcome.torn.push(torn),
                    }
                }
                outcome
            })
        })
        .collect();

    for i in 1..=REPLACES {
        m.replace("s", &value(i));
        completed.store(i, Ordering::SeqCst);
        // Let the readers in between replaces: at least READERS reads each.
        let target = reads.load(Ordering::SeqCst) + READERS;
        let deadline = Instant::now() + Duration::from_millis(200);
        while reads.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = Outcome {
        reads: 0,
        stale: Vec::new(),
        torn: Vec::new(),
    };
    for reader in readers {
        let outcome = reader.join().unwrap();
        total.reads += outcome.reads;
        total.stale.extend(outcome.stale);
        total.torn.extend(outcome.torn);
    }
    eprintln!(
        "{mode:?}: {} reads during {REPLACES} replaces: {} stale, {} torn",
        total.reads,
        total.stale.len(),
        total.torn.len()
    );
    assert!(
        total.reads >= REPLACES * READERS / 2,
        "readers barely ran: {}",
        total.reads
    );
    assert_eq!(check(&read_once(&m.path("s"), None)), Ok(REPLACES));
    total
}

fn sample(v: &[String]) -> &[String] {
    &v[..v.len().min(5)]
}

#[test]
fn atomic_mode_eight_readers_see_no_torn_or_stale_value_across_1000_replaces() {
    if !fuse_available() {
        return;
    }
    let outcome = hammer(ReadMode::Atomic);
    assert!(outcome.torn.is_empty(), "{:?}", sample(&outcome.torn));
    assert!(outcome.stale.is_empty(), "{:?}", sample(&outcome.stale));
}

/// Page-cache mode: every read that starts after `replace` returned sees
/// that value or a newer one (the invalidation dropped the old pages and
/// size, also under the descriptors held open). Torn reads, which only a
/// read overlapping a replace can produce here, are counted, not refused.
#[test]
fn page_cache_mode_eight_readers_see_no_stale_value_across_1000_replaces() {
    if !fuse_available() {
        return;
    }
    let outcome = hammer(ReadMode::PageCache);
    assert!(outcome.stale.is_empty(), "{:?}", sample(&outcome.stale));
    eprintln!(
        "PageCache: {} torn of {} reads ({:.1} %), e.g. {:?}",
        outcome.torn.len(),
        outcome.reads,
        100.0 * outcome.torn.len() as f64 / outcome.reads.max(1) as f64,
        sample(&outcome.torn)
    );
}
