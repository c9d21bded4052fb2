//! The phases of a run, in order: one function each. [`super::run_in`]
//! calls them and takes the measurements between them.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;

use super::model::{ClassSpec, FileRef, History, class_yaml, pod_yaml, seed_class_yaml, value};
use super::node::{Cleanup, spawn_node};
use super::reads::{read_phase, rotator};
use super::report::{Latencies, ReadStats};
use super::*;
use crate::kubelet::{Kubelet, PublishExtras, parse_pod};
use crate::{Control, EmulatorHandle};

/// Phase 1: Secrets: the extra ones (generation 0 written now), then the seed's.
/// Returns their history and sizes.
pub(super) fn write_secrets(
    config: &Config,
    control: &Control,
) -> anyhow::Result<(History, Vec<usize>)> {
    let mut names: Vec<String> = (0..config.secrets)
        .map(|i| format!("load-{i:02}"))
        .collect();
    let mut sizes: Vec<usize> = (0..config.secrets)
        .map(|i| SIZES[i % SIZES.len()])
        .collect();
    let mut values = Vec::new();
    for (name, size) in names.iter().zip(&sizes) {
        let text = value(name, 0, *size);
        control.set_secret(VAULT, name, &text)?;
        values.push(vec![text.into_bytes()]);
    }
    names.push(SEED_SECRET.into());
    sizes.push(SEED_VALUE.len());
    values.push(vec![SEED_VALUE.as_bytes().to_vec()]);
    let history = History {
        seen: names.iter().map(|_| AtomicU32::new(0)).collect(),
        names,
        values: RwLock::new(values),
    };
    Ok((history, sizes))
}

/// Phase 2: Classes: overlapping windows over the extra secrets, plus the seed's
/// (the last secret of `history`), written to `work/classes`. Returns them
/// and the number of distinct secrets they mount.
pub(super) fn write_classes(
    config: &Config,
    history: &History,
    work: &Path,
) -> anyhow::Result<(Vec<ClassSpec>, usize)> {
    let seed_secret = history.names.len() - 1;
    let per_class = config.objects_per_class.min(config.secrets);
    let stride = (config.secrets / config.classes.max(1)).max(1);
    let mut classes: Vec<ClassSpec> = (0..config.classes)
        .map(|c| {
            let secrets: Vec<usize> = (0..per_class)
                .map(|j| (c * stride + j) % config.secrets)
                .collect();
            let names: Vec<String> = secrets.iter().map(|&s| history.names[s].clone()).collect();
            let name = format!("load-{c}");
            ClassSpec {
                yaml: class_yaml(&name, &names),
                files: secrets
                    .iter()
                    .map(|&s| (history.names[s].clone(), s))
                    .collect(),
                name,
            }
        })
        .collect();
    classes.push(ClassSpec {
        name: SEED_CLASS.into(),
        yaml: seed_class_yaml(),
        files: vec![(SEED_FILE.into(), seed_secret)],
    });
    for class in &classes {
        std::fs::write(
            work.join(format!("classes/{}.yaml", class.name)),
            &class.yaml,
        )?;
    }
    let mut distinct: Vec<usize> = classes
        .iter()
        .flat_map(|c| c.files.iter().map(|f| f.1))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    Ok((classes, distinct.len()))
}

/// Phase 3: The node: started (into `cleanup`), then the kubelet stand-in
/// connected to its socket. Returns the stand-in and the node's pid.
pub(super) fn start_node(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    emulator: &EmulatorHandle,
    work: &Path,
    cleanup: &mut Cleanup,
) -> anyhow::Result<(Kubelet, u32)> {
    let socket = work.join("csi.sock");
    let child = spawn_node(config, emulator, work, &socket)?;
    let pid = child.id();
    cleanup.node = Some(child);
    let kubelet = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("the node did not create {}", socket.display());
            }
            if let Some(Some(status)) = cleanup.node.as_mut().map(|c| c.try_wait().ok().flatten()) {
                bail!("the node exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kubelet = Kubelet::connect(&socket, &work.join("kubelet")).await?;
        kubelet.plugin_info().await?;
        Ok(kubelet)
    })?;
    Ok((kubelet, pid))
}

/// The pods, one per volume, each with the index of its class.
pub(super) fn pods(config: &Config, classes: &[ClassSpec]) -> anyhow::Result<Vec<(Pod, usize)>> {
    Ok((0..config.volumes)
        .map(|i| {
            let class = i % classes.len();
            parse_pod(&pod_yaml(i, &classes[class].name)).map(|p| (p, class))
        })
        .collect::<Result<_, _>>()?)
}

/// Phase 4: Publish: the first volume alone, then the rest like kubelet
/// (`publish_concurrency` at a time). Returns the first volume's latency,
/// the others', and every volume's target.
pub(super) fn publish(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    kubelet: &Kubelet,
    pods: &[(Pod, usize)],
) -> anyhow::Result<(Duration, Latencies, Vec<PathBuf>)> {
    runtime.block_on(async {
        let began = Instant::now();
        let first = kubelet
            .publish(&pods[0].0, VOLUME, &PublishExtras::default())
            .await
            .context("publishing volume 0")?;
        let first_latency = began.elapsed();
        let permits = Arc::new(tokio::sync::Semaphore::new(
            config.publish_concurrency.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (pod, _)) in pods.iter().enumerate().skip(1) {
            let (kubelet, pod, permits) = (kubelet.clone(), pod.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let began = Instant::now();
                let target = kubelet
                    .publish(&pod, VOLUME, &PublishExtras::default())
                    .await
                    .with_context(|| format!("publishing volume {i}"))?;
                anyhow::Ok((i, target, began.elapsed()))
            });
        }
        let mut targets = vec![PathBuf::new(); pods.len()];
        targets[0] = first;
        let mut latencies = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (i, target, latency) = done??;
            targets[i] = target;
            latencies.push(latency.as_nanos() as u64);
        }
        anyhow::Ok((first_latency, Latencies::new(latencies), targets))
    })
}

/// Phase 5: Every volume shows its class's files. Returns the files, and a
/// problem for each volume that shows others.
pub(super) fn list_files(
    targets: &[PathBuf],
    pods: &[(Pod, usize)],
    classes: &[ClassSpec],
) -> anyhow::Result<(Vec<FileRef>, Vec<String>)> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for (volume, (target, (_, class))) in targets.iter().zip(pods).enumerate() {
        let mut expected: Vec<&str> = classes[*class].files.iter().map(|f| f.0.as_str()).collect();
        expected.sort_unstable();
        let mut found: Vec<String> = std::fs::read_dir(target)
            .with_context(|| format!("listing {}", target.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        found.sort_unstable();
        if found != expected {
            problems.push(format!(
                "{} holds {found:?}, not {expected:?}",
                target.display()
            ));
        }
        for (file, secret) in &classes[*class].files {
            files.push(FileRef {
                path: target.join(file),
                secret: *secret,
                volume,
            });
        }
    }
    Ok((files, problems))
}

/// Phase 6: Baseline: the same files (first versions) on a tmpfs, same readers.
/// Leaves `history.seen` at zero for the next phase.
pub(super) fn tmpfs_baseline(
    config: &Config,
    work: &Path,
    files: &[FileRef],
    history: &History,
) -> anyhow::Result<ReadStats> {
    let tmpfs = work.join("tmpfs");
    std::fs::create_dir_all(&tmpfs)?;
    rustix::mount::mount(
        "tmpfs",
        &tmpfs,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=512m,mode=0700",
    )
    .context("mounting the tmpfs baseline")?;
    let baseline_files: Vec<FileRef> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let dir = tmpfs.join(format!("v{}", i / config.objects_per_class.max(1)));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, &history.values.read().unwrap()[f.secret][0])?;
            anyhow::Ok(FileRef {
                path,
                secret: f.secret,
                volume: f.volume,
            })
        })
        .collect::<Result<_, _>>()?;
    let tmpfs_stats = read_phase(
        &baseline_files,
        history,
        config.reads,
        config.readers,
        config.read_time,
    );
    rustix::mount::unmount(&tmpfs, rustix::mount::UnmountFlags::DETACH)?;
    for seen in &history.seen {
        seen.store(0, Ordering::Relaxed);
    }
    Ok(tmpfs_stats)
}

/// What [`read_while_rotating`] measured.
pub(super) struct Rotated {
    pub(super) stats: ReadStats,
    pub(super) versions_written: u64,
    pub(super) last_rotation: Instant,
    pub(super) versions_seen: u64,
}

/// Phase 7: Reads on secretfs while the rotator writes new versions.
pub(super) fn read_while_rotating(
    config: &Config,
    control: &Control,
    history: &History,
    sizes: &[usize],
    files: &[FileRef],
) -> anyhow::Result<Rotated> {
    let stop = AtomicBool::new(false);
    let (secretfs_stats, rotated) = std::thread::scope(|scope| {
        let rotation = scope.spawn(|| rotator(control, history, sizes, config, &stop));
        let stats = read_phase(
            files,
            history,
            config.reads,
            config.readers,
            config.read_time,
        );
        stop.store(true, Ordering::Relaxed);
        (stats, rotation.join())
    });
    let (versions_written, last_rotation) = match rotated {
        Ok(result) => result?,
        Err(_) => bail!("the rotator panicked"),
    };
    let versions_seen: u64 = history
        .seen
        .iter()
        .map(|g| u64::from(g.load(Ordering::Relaxed)))
        .sum();
    Ok(Rotated {
        stats: secretfs_stats,
        versions_written,
        last_rotation,
        versions_seen,
    })
}

/// What [`converge`] found.
pub(super) struct Converged {
    /// Files at their latest version.
    pub(super) files: usize,
    /// Volumes with a file behind.
    pub(super) volumes_behind: usize,
    /// From the last rotation to the end of the wait.
    pub(super) after: Duration,
    /// Up to 5 files behind, as problems.
    pub(super) behind: Vec<String>,
}

/// Phase 8: Every file reaches its latest version within a few intervals.
pub(super) fn converge(
    config: &Config,
    files: &[FileRef],
    history: &History,
    last_rotation: Instant,
) -> Converged {
    let deadline = last_rotation + config.rotation_poll_interval * 3 + Duration::from_secs(5);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut behind = Vec::new();
    let mut lagging = std::collections::BTreeSet::new();
    let (converged, converged_after) = loop {
        let mut at_latest = 0;
        behind.clear();
        lagging.clear();
        for file in files {
            let read = File::open(&file.path).and_then(|mut f| f.read(&mut buf));
            let seen = read
                .as_ref()
                .ok()
                .and_then(|&n| history.generation(file.secret, &buf[..n]));
            let latest = history.latest(file.secret);
            if seen == Some(latest) {
                at_latest += 1;
                continue;
            }
            lagging.insert(file.volume);
            if behind.len() < 5 {
                behind.push(match read {
                    Ok(n) => format!(
                        "{} shows version {seen:?} ({n} bytes), not {latest}",
                        file.path.display()
                    ),
                    Err(e) => format!("{}: {e}", file.path.display()),
                });
            }
        }
        if at_latest == files.len() || Instant::now() > deadline {
            break (at_latest, last_rotation.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Converged {
        files: converged,
        volumes_behind: lagging.len(),
        after: converged_after,
        behind,
    }
}

/// Phase 9: Unpublish everything, like kubelet. Returns the number of failures.
pub(super) fn unpublish(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    kubelet: &Kubelet,
    pods: &[(Pod, usize)],
) -> u64 {
    runtime.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            config.publish_concurrency.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (pod, _) in pods {
            let (kubelet, pod, permits) = (kubelet.clone(), pod.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                kubelet.unpublish(&pod, VOLUME).await
            });
        }
        let mut errors = 0u64;
        while let Some(done) = tasks.join_next().await {
            if !matches!(done, Ok(Ok(()))) {
                errors += 1;
            }
        }
        errors
    })
}
