//! The readers (open, read, close, each value checked) and the rotator.

use std::fs::File;
use std::io::Read as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::model::{FileRef, History, value};
use super::report::ReadStats;
use super::*;

/// A small generator for the readers' file choice.
pub(super) struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `readers` threads do `reads` open/read/close in total over `files`,
/// spread over `read_time`, checking each value against `history`.
pub(super) fn read_phase(
    files: &[FileRef],
    history: &History,
    reads: usize,
    readers: usize,
    read_time: Duration,
) -> ReadStats {
    let readers = readers.max(1);
    let errors = AtomicU64::new(0);
    let unexpected = AtomicU64::new(0);
    let went_back = AtomicU64::new(0);
    let changes = AtomicU64::new(0);
    let samples = Mutex::new(Vec::<String>::new());
    let note = |text: String| {
        let mut samples = samples.lock().unwrap();
        if samples.len() < 10 {
            samples.push(text);
        }
    };
    let start = Instant::now();
    let latencies: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let share = reads / readers + usize::from(r < reads % readers);
                let (errors, unexpected, went_back, changes, note) =
                    (&errors, &unexpected, &went_back, &changes, &note);
                scope.spawn(move || {
                    let mut buf = vec![0u8; READ_BUFFER];
                    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((r as u64 + 1) << 32));
                    let mut last = vec![u32::MAX; files.len()];
                    let mut latencies = Vec::with_capacity(share);
                    for k in 0..share {
                        if !read_time.is_zero() {
                            // Reader r's k-th read is due at (k + r/readers)
                            // shares of the read time.
                            let due = start
                                + read_time.mul_f64(
                                    (k as f64 + r as f64 / readers as f64) / share.max(1) as f64,
                                );
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                        let index = (rng.next() % files.len() as u64) as usize;
                        let file = &files[index];
                        let began = Instant::now();
                        let result = File::open(&file.path).and_then(|mut f| f.read(&mut buf));
                        latencies.push(began.elapsed().as_nanos() as u64);
                        let n = match result {
                            Ok(n) => n,
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                note(format!("{}: {e}", file.path.display()));
                                continue;
                            }
                        };
                        let Some(generation) = history.generation(file.secret, &buf[..n]) else {
                            unexpected.fetch_add(1, Ordering::Relaxed);
                            note(format!(
                                "{}: {n} bytes that {} never held: {:?}…",
                                file.path.display(),
                                history.names[file.secret],
                                String::from_utf8_lossy(&buf[..n.min(40)])
                            ));
                            continue;
                        };
                        history.seen[file.secret].fetch_max(generation, Ordering::Relaxed);
                        let before = last[index];
                        if before != u32::MAX && generation < before {
                            went_back.fetch_add(1, Ordering::Relaxed);
                            note(format!(
                                "{}: version {generation} after {before}",
                                file.path.display()
                            ));
                        } else if before != u32::MAX && generation > before {
                            changes.fetch_add(1, Ordering::Relaxed);
                        }
                        if before == u32::MAX || generation > before {
                            last[index] = generation;
                        }
                    }
                    latencies
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed();
    ReadStats {
        reads: latencies.len() as u64,
        latencies: Latencies::new(latencies),
        errors: errors.into_inner(),
        unexpected: unexpected.into_inner(),
        went_back: went_back.into_inner(),
        changes_seen: changes.into_inner(),
        elapsed,
        samples: samples.into_inner().unwrap_or_default(),
    }
}

/// Writes new versions every `every` until `stop` (or `ticks` rotations);
/// returns the versions written and when the last was.
pub(super) fn rotator(
    control: &crate::Control,
    history: &History,
    sizes: &[usize],
    config: &Config,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, Instant)> {
    let mut written = 0u64;
    let mut last = Instant::now();
    let mut next_secret = 0usize;
    let mut tick = 0usize;
    let count = history.names.len();
    while !stop.load(Ordering::Relaxed) {
        let until = Instant::now() + config.rotate_every;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Ok((written, last));
            }
            std::thread::sleep(Duration::from_millis(10).min(config.rotate_every));
        }
        for _ in 0..config.rotate_per_tick.min(count) {
            let secret = next_secret % count;
            next_secret += 1;
            let name = &history.names[secret];
            let generation = history.latest(secret) + 1;
            let text = value(name, generation, sizes[secret]);
            // Known before the vault has it, so no reader can see it first.
            history.values.write().unwrap()[secret].push(text.clone().into_bytes());
            control
                .set_secret(VAULT, name, &text)
                .with_context(|| format!("rotating {name}"))?;
            written += 1;
        }
        last = Instant::now();
        tick += 1;
        if config.rotation_ticks > 0 && tick >= config.rotation_ticks {
            break;
        }
    }
    Ok((written, last))
}
