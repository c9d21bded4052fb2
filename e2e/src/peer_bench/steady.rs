//! The `steady` row: both drivers at their default interval with every
//! volume mounted for longer than that — vault GETs in one interval, the
//! time from a vault write to the new bytes, and a throttling vault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::Pod;

use super::config::{
    CYCLE_PODS, INTERVAL, M, RETRY_AFTER, ROTATE_PODS, THROTTLE_FOR, THROTTLE_PODS, VOLUME,
};
use super::report::{Cycle, PodStart, Results, Throttle};
use super::run::Run;
use crate::kubelet::PublishExtras;
use crate::{CounterFilter, FaultKind, FaultSpec, Route};

/// Kubelet's retry of a failed mount: 0.5 s, doubling, at most 2 m 2 s;
/// each attempt bounded by kubelet's 2-minute CSI timeout. Seconds until
/// the volume is published, or None after `limit`.
async fn start_pod(run: &Run, pod: &Pod, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(120),
            run.kubelet.publish(pod, VOLUME, &PublishExtras::default()),
        )
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() + backoff > limit {
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(122));
    }
}

async fn read_value(path: &Path) -> Option<Vec<u8>> {
    tokio::fs::read(path).await.ok()
}

/// Waits until every file holds `want`; seconds from `since`, per file.
async fn wait_for_value(
    files: &[PathBuf],
    want: &[u8],
    since: Instant,
    limit: Duration,
) -> Vec<f64> {
    let mut seen: Vec<Option<f64>> = vec![None; files.len()];
    while seen.iter().any(Option::is_none) && since.elapsed() < limit {
        for (i, f) in files.iter().enumerate() {
            if seen[i].is_none() && read_value(f).await.as_deref() == Some(want) {
                seen[i] = Some(since.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.into_iter()
        .map(|s| s.unwrap_or(f64::INFINITY))
        .collect()
}

pub(super) async fn steady_row(run: &Run, results: &mut Results) -> anyhow::Result<()> {
    run.log("steady: mounting 1 + 10 + 100 + 10 + 10 pods");
    let tokens_at_start = run.count(&CounterFilter::route(Route::ImdsToken));
    let challenges_at_start = run.count(&CounterFilter::default().identity("").status(401));
    let mut cycle_pods = BTreeMap::new();
    for p in CYCLE_PODS {
        let class = format!("kv-cycle-{p}");
        let mut pods = Vec::new();
        for _ in 0..p {
            pods.push(run.mount(&class).await?);
        }
        cycle_pods.insert(p, pods);
    }
    let mut rotate_pods = Vec::new();
    for _ in 0..ROTATE_PODS {
        rotate_pods.push(run.mount("kv-rotate").await?);
    }
    let mut throttle_pods = Vec::new();
    for _ in 0..THROTTLE_PODS {
        throttle_pods.push(run.mount("kv-throttle").await?);
    }
    let mounted = Instant::now();
    results.mounts = CYCLE_PODS.iter().sum::<usize>() + ROTATE_PODS + THROTTLE_PODS;
    results.mount_tokens = run.count(&CounterFilter::route(Route::ImdsToken)) - tokens_at_start;
    results.mount_challenges =
        run.count(&CounterFilter::default().identity("").status(401)) - challenges_at_start;
    // Every volume has been mounted longer than the interval: upstream's
    // republishes call the provider from now on, secretfs has refreshed each
    // volume once.
    let ready = mounted + INTERVAL + Duration::from_secs(15);
    run.log("steady: waiting one interval (2 m 15 s)");
    tokio::time::sleep_until(ready.into()).await;
    run.plugin_alive()?;

    // The cycle window: one interval.
    let gets = |p: usize| {
        run.count(
            &CounterFilter::route(Route::SecretGet)
                .vault(&format!("kv-cycle-{p}"))
                .status(200),
        )
    };
    let challenges = |p: usize| {
        run.count(
            &CounterFilter::default()
                .vault(&format!("kv-cycle-{p}"))
                .identity("")
                .status(401),
        )
    };
    let before: Vec<(u64, u64, u64)> = CYCLE_PODS
        .iter()
        .map(|&p| {
            (
                gets(p),
                challenges(p),
                run.republisher.sent(&format!("kv-cycle-{p}")),
            )
        })
        .collect();
    let tokens_before = run.count(&CounterFilter::route(Route::ImdsToken));
    let window_end = ready + INTERVAL;

    // Rotation: `writes` vault writes, each once every pod has the last.
    run.log("steady: rotation writes and the throttle window");
    let rotate_files: Vec<PathBuf> = rotate_pods
        .iter()
        .map(|p| run.target(p).join("value"))
        .collect();
    let rotation = async {
        let mut out = Vec::new();
        for generation in 1..=run.config.writes {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let v = format!("generation-{generation}");
            run.emulator
                .control()
                .set_secret("kv-rotate", "value", &v)?;
            let at = Instant::now();
            out.push(
                wait_for_value(&rotate_files, v.as_bytes(), at, Duration::from_secs(300)).await,
            );
        }
        let mut on_demand = Vec::new();
        if let Some(admin) = &run.plugin.admin_socket {
            // `secretfs refresh` refreshes every volume: not inside the
            // cycle window.
            tokio::time::sleep_until(window_end.into()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let v = "generation-on-demand";
            run.emulator.control().set_secret("kv-rotate", "value", v)?;
            let at = Instant::now();
            let status = tokio::process::Command::new(&run.config.secretfs)
                .arg("refresh")
                .arg(format!("--admin-socket={}", admin.display()))
                .stdout(std::process::Stdio::null())
                .status()
                .await?;
            if !status.success() {
                bail!("secretfs refresh failed");
            }
            on_demand =
                wait_for_value(&rotate_files, v.as_bytes(), at, Duration::from_secs(60)).await;
        }
        anyhow::Ok((out, on_demand))
    };

    // Throttling: 60 s of 429 + Retry-After on kv-throttle; pods start
    // 5 s in: 3 of the class the node already serves, 2 of a new class.
    let throttle = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let all = CounterFilter::default().vault("kv-throttle");
        let requests_before = run.count(&all);
        let throttled_before = run.count(&all.clone().status(429));
        let fault = run.emulator.control().add_fault(
            FaultSpec::new(FaultKind::Throttle {
                retry_after: Some(RETRY_AFTER),
            })
            .vault("kv-throttle"),
        );
        let fault_start = Instant::now();
        let starts = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut pods = Vec::new();
            for class in [
                "kv-throttle",
                "kv-throttle",
                "kv-throttle",
                "kv-throttle-new",
                "kv-throttle-new",
            ] {
                pods.push((class, run.new_pod(class).await?));
            }
            let limit = Duration::from_secs(240);
            let started = futures::future::join_all(pods.iter().map(|(class, p)| async move {
                let started = start_pod(run, p, limit).await;
                if started.is_some() {
                    // Kubelet republishes a running pod's volume from now on.
                    run.republisher.add(p, class);
                }
                let target = run.target(p);
                let count = || {
                    crate::peers::read_volume(&target)
                        .map(|f| f.len())
                        .unwrap_or(0)
                };
                let files_at_start = count();
                let mut complete_s = None;
                if let Some(s) = started {
                    let since = Instant::now() - Duration::from_secs_f64(s);
                    while since.elapsed() < Duration::from_secs(300) {
                        if count() == M {
                            complete_s = Some(since.elapsed().as_secs_f64());
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                PodStart {
                    started_s: started,
                    files_at_start,
                    complete_s,
                }
            }))
            .await;
            anyhow::Ok((pods, started))
        };
        let window = async {
            tokio::time::sleep_until((fault_start + THROTTLE_FOR).into()).await;
            run.emulator.control().remove_fault(fault);
            (
                run.count(&all) - requests_before,
                run.count(&all.clone().status(429)) - throttled_before,
            )
        };
        let (started, (requests, throttled)) = tokio::join!(starts, window);
        let (pods, started) = started?;
        let mut t = Throttle {
            requests,
            throttled,
            ..Throttle::default()
        };
        for ((class, _), s) in pods.iter().zip(started) {
            if *class == "kv-throttle" {
                t.same_class.push(s);
            } else {
                t.new_class.push(s);
            }
        }
        anyhow::Ok((t, pods))
    };

    let cycle = async {
        tokio::time::sleep_until(window_end.into()).await;
        let cycles: Vec<Cycle> = CYCLE_PODS
            .iter()
            .zip(&before)
            .map(|(&p, &(g, c, r))| Cycle {
                pods: p,
                gets: gets(p) - g,
                challenges: challenges(p) - c,
                republishes: run.republisher.sent(&format!("kv-cycle-{p}")) - r,
            })
            .collect();
        (
            cycles,
            run.count(&CounterFilter::route(Route::ImdsToken)) - tokens_before,
        )
    };

    let (rotation, throttle, (cycles, tokens)) = tokio::join!(rotation, throttle, cycle);
    let (rotation, on_demand) = rotation?;
    let (throttle, new_pods) = throttle?;
    results.cycles = cycles;
    results.cycle_tokens = Some(tokens);
    results.rotation_s = rotation;
    results.rotation_on_demand_s = on_demand;
    results.throttle = Some(throttle);
    run.plugin_alive()?;

    run.log("steady: unmounting");
    let all_pods = cycle_pods
        .values()
        .flatten()
        .chain(&rotate_pods)
        .chain(&throttle_pods)
        .chain(new_pods.iter().map(|(_, p)| p));
    for pod in all_pods {
        let _ = run.unmount(pod).await;
    }
    Ok(())
}
