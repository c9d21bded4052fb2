//! open+read+close latency of secretfs against tmpfs, measured in the same
//! run on the same machine, warm and right after a replace; how long the
//! replace itself takes; how many requests reached the file system; and how
//! often a read (an open by path) that overlaps a replace is torn in each
//! read mode.
//!
//! Run as root: `cargo bench -p secretfs-fuse --bench read_latency`
//! (`-- --quick` for a shorter run; `-- --busy` keeps one vCPU busy with
//! `taskset -c <last cpu> yes`, started and stopped by the benchmark).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secretfs_fuse::{
    Content, FileSpec, MountOptions, MountedVolume, OpenAudit, OpenEvent, OpenObserver, ReadMode,
    VolumeId, VolumeSpec,
};
use secretfs_secrets::SecretBytes;

const SIZES: [(&str, usize); 2] = [("1k", 1024), ("64k", 64 * 1024)];

fn open_read_close(path: &Path, buf: &mut [u8]) -> Duration {
    let start = Instant::now();
    let file = File::open(path).unwrap();
    let n = file.read_at(buf, 0).unwrap();
    drop(file);
    let elapsed = start.elapsed();
    assert!(n > 0);
    elapsed
}

#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_nanos() as f64 / 1000.0;
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn content(size: usize, version: usize) -> Vec<u8> {
    let mut v = format!("version {version} ").into_bytes();
    v.resize(size, b'a' + (version % 26) as u8);
    v
}

struct Fs {
    name: &'static str,
    dir: PathBuf,
    mounted: Option<MountedVolume>,
}

impl Fs {
    fn replace(&self, file: &str, bytes: Vec<u8>) {
        match &self.mounted {
            Some(m) => m
                .volume()
                .replace(file, Arc::new(SecretBytes::new(bytes)))
                .unwrap(),
            // tmpfs: what a writer that updates the file in place does.
            None => std::fs::write(self.dir.join(file), bytes).unwrap(),
        }
    }
}

/// Counts the first opens an audited volume reports (what the driver's
/// auditor does after that, reading /proc and writing a line, happens once
/// per process and version, not per read).
#[derive(Default)]
struct CountOpens(AtomicUsize);

impl OpenObserver for CountOpens {
    fn first_open(&self, _event: OpenEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn secretfs(
    name: &'static str,
    dir: PathBuf,
    mode: ReadMode,
    audit: Option<OpenAudit>,
    rt: &tokio::runtime::Runtime,
) -> Fs {
    std::fs::create_dir(&dir).unwrap();
    let files = SIZES
        .iter()
        .map(|(file, size)| {
            FileSpec::new(file, 0o644, 0, 0, Content::bytes(content(*size, 0))).unwrap()
        })
        .collect();
    let spec = VolumeSpec {
        id: VolumeId::new(name),
        dir_uid: 0,
        dir_gid: 0,
        files,
    };
    let options = MountOptions {
        read_mode: mode,
        audit,
        ..MountOptions::default()
    };
    let mounted = MountedVolume::mount(spec, &dir, &options, rt.handle().clone()).unwrap();
    Fs {
        name,
        dir,
        mounted: Some(mounted),
    }
}

/// Share of reads, by 4 readers, that return a torn value while `replaces`
/// replaces of `file` run back to back.
fn torn_share(fs: &Fs, replaces: usize) -> (usize, usize) {
    let path = fs.dir.join("1k");
    let stop = Arc::new(AtomicBool::new(false));
    let torn = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (path, stop, torn, reads) =
                (path.clone(), stop.clone(), torn.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    let n = File::open(&path).unwrap().read_at(&mut buf, 0).unwrap();
                    let read = &buf[..n];
                    let text = String::from_utf8_lossy(read);
                    let version: usize = text
                        .split(' ')
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(usize::MAX);
                    if version == usize::MAX || read != content(len_of(version), version) {
                        torn.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for version in 1..=replaces {
        fs.replace("1k", content(len_of(version), version));
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    fs.replace("1k", content(1024, 0));
    (torn.load(Ordering::Relaxed), reads.load(Ordering::Relaxed))
}

/// Lengths vary between replaces (that is what exposes tearing).
fn len_of(version: usize) -> usize {
    if version == 0 {
        1024
    } else {
        100 + (version * 7919) % 3000
    }
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("read_latency needs root (it mounts tmpfs and FUSE)");
        std::process::exit(2);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let busy = std::env::args().any(|a| a == "--busy").then(BusyCpu::start);
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if let Some(busy) = &busy {
        println!(
            "one vCPU kept busy: `taskset -c {} yes > /dev/null`",
            busy.cpu
        );
    }
    let (warm_n, replace_n) = if quick { (2_000, 300) } else { (20_000, 2_000) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let opens = Arc::new(CountOpens::default());

    let tmpfs_dir = root.path().join("tmpfs");
    std::fs::create_dir(&tmpfs_dir).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &tmpfs_dir,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    for (file, size) in SIZES {
        std::fs::write(tmpfs_dir.join(file), content(size, 0)).unwrap();
    }
    let systems = [
        Fs {
            name: "tmpfs",
            dir: tmpfs_dir.clone(),
            mounted: None,
        },
        secretfs(
            "secretfs page-cache",
            root.path().join("pc"),
            ReadMode::PageCache,
            None,
            &rt,
        ),
        secretfs(
            "secretfs atomic",
            root.path().join("atomic"),
            ReadMode::Atomic,
            None,
            &rt,
        ),
        // Opt-in auditing (`secretfs.io/audit: reads`): page-cache reads,
        // but every open is sent to the server (FOPEN_KEEP_CACHE).
        secretfs(
            "secretfs audited",
            root.path().join("audited"),
            ReadMode::PageCache,
            Some(OpenAudit(opens.clone())),
            &rt,
        ),
    ];

    let mut buf = vec![0u8; 128 * 1024];
    println!("open+read+close, {warm_n} warm and {replace_n} after-replace samples per row (µs)\n");
    println!(
        "{:<22} {:>5} {:>9} {:>9} {:>13} {:>13} {:>14} {:>13}",
        "file system",
        "file",
        "warm p50",
        "warm p99",
        "after rpl p50",
        "after rpl p99",
        "requests/warm",
        "replace() p50"
    );
    let mut ratios = Vec::new();
    // The file systems take turns, a few samples each, so that all of them
    // see the same machine (this VM's speed drifts by tens of percent
    // within a minute).
    const TURN: usize = 10;
    for (file, size) in SIZES {
        let paths: Vec<PathBuf> = systems.iter().map(|fs| fs.dir.join(file)).collect();
        for path in &paths {
            for _ in 0..200 {
                open_read_close(path, &mut buf);
            }
        }
        let before: Vec<_> = systems
            .iter()
            .map(|fs| {
                fs.mounted
                    .as_ref()
                    .map(|m| m.volume().core().counters().snapshot())
            })
            .collect();
        let mut warm: Vec<Vec<Duration>> = vec![Vec::with_capacity(warm_n); systems.len()];
        for _ in 0..warm_n / TURN {
            for (samples, path) in warm.iter_mut().zip(&paths) {
                for _ in 0..TURN {
                    samples.push(open_read_close(path, &mut buf));
                }
            }
        }
        let requests: Vec<String> = systems
            .iter()
            .zip(&before)
            .map(|(fs, before)| match (&fs.mounted, before) {
                (Some(m), Some(b)) => {
                    let after = m.volume().core().counters().snapshot();
                    let total: u64 = after.iter().zip(b.iter()).map(|(a, b)| a - b).sum();
                    format!("{:.2}", total as f64 / warm_n as f64)
                }
                _ => "-".to_owned(),
            })
            .collect();
        let mut replaces: Vec<Vec<Duration>> = vec![Vec::new(); systems.len()];
        let mut reads: Vec<Vec<Duration>> = vec![Vec::new(); systems.len()];
        for i in 0..replace_n {
            for (k, fs) in systems.iter().enumerate() {
                let started = Instant::now();
                fs.replace(file, content(size, i + 1));
                replaces[k].push(started.elapsed());
                reads[k].push(open_read_close(&paths[k], &mut buf));
            }
        }
        let mut base: Option<(Stats, Stats)> = None;
        for (k, fs) in systems.iter().enumerate() {
            fs.replace(file, content(size, 0));
            let warm = stats(std::mem::take(&mut warm[k]));
            let replace = stats(std::mem::take(&mut replaces[k]));
            let after_replace = stats(std::mem::take(&mut reads[k]));
            println!(
                "{:<22} {:>5} {:>9.2} {:>9.2} {:>13.2} {:>13.2} {:>14} {:>13.1}",
                fs.name,
                file,
                warm.p50,
                warm.p99,
                after_replace.p50,
                after_replace.p99,
                requests[k],
                replace.p50
            );
            match base {
                None => base = Some((warm, after_replace)),
                Some((b_warm, b_replace)) => ratios.push(format!(
                    "{:<22} {:>5}  warm p50 {:.2}×  warm p99 {:.2}×  after-replace p50 {:.2} µs ({:.2}×; tmpfs rewrite {:.2} µs)",
                    fs.name,
                    file,
                    warm.p50 / b_warm.p50,
                    warm.p99 / b_warm.p99,
                    after_replace.p50,
                    after_replace.p50 / b_replace.p50,
                    b_replace.p50
                )),
            }
        }
    }
    // Where a warm 1 KiB open+read+close spends its time: the open and
    // close, or the read (through a descriptor held open).
    println!("\nwarm 1k, split (p50 µs): open+close, pread of a held descriptor, stat");
    for fs in &systems {
        let path = fs.dir.join("1k");
        let open_close = stats(
            (0..warm_n)
                .map(|_| {
                    let start = Instant::now();
                    drop(File::open(&path).unwrap());
                    start.elapsed()
                })
                .collect(),
        );
        let held = File::open(&path).unwrap();
        let pread = stats(
            (0..warm_n)
                .map(|_| {
                    let start = Instant::now();
                    let n = held.read_at(&mut buf, 0).unwrap();
                    let elapsed = start.elapsed();
                    assert!(n > 0);
                    elapsed
                })
                .collect(),
        );
        let stat = stats(
            (0..warm_n)
                .map(|_| {
                    let start = Instant::now();
                    std::fs::metadata(&path).unwrap();
                    start.elapsed()
                })
                .collect(),
        );
        println!(
            "  {:<22} open+close {:>6.2}  pread {:>6.2}  stat {:>6.2}",
            fs.name, open_close.p50, pread.p50, stat.p50
        );
    }

    println!(
        "\naudited volume: {} first opens reported (one per process and version)",
        opens.0.load(Ordering::Relaxed)
    );
    println!("\nsecretfs / tmpfs (same run):");
    for line in ratios {
        println!("  {line}");
    }

    println!(
        "\nreads torn by a concurrent replace (4 readers opening the path, 1k file, lengths varying):"
    );
    for fs in &systems[1..] {
        let (torn, reads) = torn_share(fs, if quick { 300 } else { 2_000 });
        println!(
            "  {:<22} {torn} of {reads} reads torn ({:.3}%)",
            fs.name,
            100.0 * torn as f64 / reads.max(1) as f64
        );
    }

    drop(systems);
    rustix::mount::unmount(&tmpfs_dir, rustix::mount::UnmountFlags::DETACH).unwrap();
    drop(busy);
}

/// `yes > /dev/null` pinned to the last CPU, for the "one vCPU busy" runs;
/// killed on drop.
struct BusyCpu {
    cpu: usize,
    child: std::process::Child,
}

impl BusyCpu {
    fn start() -> Self {
        let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        let child = std::process::Command::new("taskset")
            .args(["-c", &cpu.to_string(), "yes"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("taskset and yes (util-linux, coreutils) keep one vCPU busy");
        Self { cpu, child }
    }
}

impl Drop for BusyCpu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
