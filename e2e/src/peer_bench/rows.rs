//! The short rows: `publish` (NodePublishVolume latency), `read` (warm
//! reads against a tmpfs) and `rss` (the node plugin's memory).

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::config::VALUE_BYTES;
use super::report::{Latencies, Memory, Reads, ms, quantile, sorted};
use super::run::Run;
use crate::{FaultKind, FaultSpec};

pub(super) async fn publish_row(run: &Run, class: &str, vault: &str) -> anyhow::Result<Latencies> {
    let fault = run
        .emulator
        .control()
        .add_fault(FaultSpec::new(FaultKind::Latency { millis: 25 }).vault(vault));
    let mut times = Vec::new();
    for _ in 0..run.config.publishes {
        let pod = run.new_pod(class).await?;
        times.push(ms(run.publish(&pod).await?));
        run.unmount(&pod).await?;
    }
    run.emulator.control().remove_fault(fault);
    let first = times[0];
    let later = sorted(times[1..].to_vec());
    Ok(Latencies {
        first_ms: first,
        p50_ms: quantile(&later, 0.5),
        p99_ms: quantile(&later, 0.99),
        n: later.len(),
    })
}

/// open + one read(2) into 128 KiB + close, `n` times; microseconds.
fn read_loop(path: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut f = std::fs::File::open(path)?;
        let got = f.read(&mut buf)?;
        drop(f);
        out.push(start.elapsed().as_secs_f64() * 1e6);
        if got != VALUE_BYTES {
            bail!("read {got} bytes of {}", path.display());
        }
    }
    Ok(sorted(out))
}

pub(super) async fn read_row(run: &Run) -> anyhow::Result<Reads> {
    let pod = run.mount("kv-read").await?;
    let file = run.target(&pod).join("obj-0");
    let tmpfs = run.work.join("tmpfs");
    std::fs::create_dir_all(&tmpfs)?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&tmpfs)
        .status()?;
    if !status.success() {
        bail!("mount -t tmpfs failed");
    }
    let baseline = tmpfs.join("obj-0");
    std::fs::write(&baseline, std::fs::read(&file)?)?;
    let n = run.config.reads;
    let (file2, baseline2) = (file.clone(), baseline.clone());
    let (ours, base) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        // Warm both, then alternate in blocks so drift hits both alike.
        read_loop(&file2, 1000)?;
        read_loop(&baseline2, 1000)?;
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..10 {
            a.extend(read_loop(&file2, n / 10)?);
            b.extend(read_loop(&baseline2, n / 10)?);
        }
        Ok((sorted(a), sorted(b)))
    })
    .await??;
    let _ = std::process::Command::new("umount").arg(&tmpfs).status();
    run.unmount(&pod).await?;
    Ok(Reads {
        p50_us: quantile(&ours, 0.5),
        p99_us: quantile(&ours, 0.99),
        tmpfs_p50_us: quantile(&base, 0.5),
        tmpfs_p99_us: quantile(&base, 0.99),
    })
}

/// KiB used by the tmpfs mounted at `dir`, 0 if it is no tmpfs.
fn tmpfs_used_kib(dir: &Path) -> u64 {
    match rustix::fs::statfs(dir) {
        Ok(s) if s.f_type == 0x0102_1994 => {
            (s.f_blocks.saturating_sub(s.f_bfree)) * s.f_bsize as u64 / 1024
        }
        _ => 0,
    }
}

pub(super) async fn rss_row(run: &Run, idle: u64) -> anyhow::Result<Memory> {
    let mut pods = Vec::new();
    for _ in 0..110 {
        pods.push(run.mount("kv-rss").await?);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let loaded = run.plugin.rss_kib();
    let tmpfs: u64 = pods.iter().map(|p| tmpfs_used_kib(&run.target(p))).sum();
    for pod in &pods {
        run.unmount(pod).await?;
    }
    Ok(Memory {
        idle_kib: idle,
        loaded_kib: loaded,
        tmpfs_kib: tmpfs,
    })
}
