//! The seed case (tests/fixtures/seed/README.md, files part) through the binary.

use std::process::Command;

use secretfs_e2e::kubelet::PublishExtras;
use secretfs_e2e::{CounterFilter, Route};

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_pod_sees_secret_1_as_a_file() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[]).await;
    let (name, _) = env.kubelet.plugin_info().await.unwrap();
    assert_eq!(name, "secrets-store.csi.k8s.io");
    let pod = pod("11111111-1111-4111-8111-111111111111", None, None, None);
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["SECRET_1"]);
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    // As a non-root user, as in a container without fsGroup: 0644, readable.
    let out = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "cat"])
        .arg(target.join("SECRET_1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"Sql-Passw0rd-from-kv-demo");

    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
    assert!(!is_mounted(&target));
    assert!(!target.exists());
}

/// The container's view: the target bind-mounted at /mnt/secrets-store in a
/// private mount namespace, read as uid 1000 with gid = fsGroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_with_the_fs_group_reads_it_and_others_are_refused() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[]).await;
    let pod = pod(
        "22222222-2222-4222-8222-222222222222",
        None,
        None,
        Some(2000),
    );
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let container = env.root.join("container-root/mnt/secrets-store");
    std::fs::create_dir_all(&container).unwrap();
    let view = |gid: u32| {
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' '{}' && setpriv --reuid=1000 --regid={gid} --clear-groups sh -c 'ls -la {c} && cat {c}/SECRET_1'",
                target.display(),
                container.display(),
                c = container.display()
            ))
            .output()
            .unwrap()
    };
    let allowed = view(2000);
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(
        stdout.contains("-rw-r-----") && stdout.contains("2000"),
        "{stdout}"
    );
    assert!(stdout.ends_with("Sql-Passw0rd-from-kv-demo"), "{stdout}");
    let refused = view(3000);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permission denied"));
    // The bind lived only in the private namespace.
    assert!(!is_mounted(&container));
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_does_not_remount_or_call_the_vault() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[]).await;
    let pod = pod("33333333-3333-4333-8333-333333333333", None, None, None);
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let held = std::fs::File::open(target.join("SECRET_1")).unwrap();
    let mounts_before = mounts_at(&target);
    assert_eq!(mounts_before.len(), 1, "one mount: {mounts_before:?}");
    let control = env.emulator.control();
    control.reset_counters();
    for _ in 0..5 {
        env.kubelet
            .publish(&pod, VOLUME, &PublishExtras::default())
            .await
            .unwrap();
    }
    assert_eq!(
        mounts_at(&target),
        mounts_before,
        "the same mount (mount id and device), none stacked on it"
    );
    assert_eq!(control.count(&CounterFilter::route(Route::SecretGet)), 0);
    assert_eq!(
        control.count(&CounterFilter::default()),
        0,
        "no request of any kind"
    );
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"Sql-Passw0rd-from-kv-demo",
        "the first mount still serves"
    );
    drop(held);
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pods_publish_concurrently_and_unpublish() {
    if !fuse_available() {
        return;
    }
    let env = std::sync::Arc::new(Env::start(&[]).await);
    let pods: Vec<_> = (0..100)
        .map(|i| {
            pod(
                &format!("aaaaaaaa-0000-4000-8000-{i:012}"),
                None,
                None,
                None,
            )
        })
        .collect();
    let tasks: Vec<_> = pods
        .iter()
        .cloned()
        .map(|p| {
            let env = env.clone();
            tokio::spawn(async move {
                env.kubelet
                    .publish(&p, VOLUME, &PublishExtras::default())
                    .await
            })
        })
        .collect();
    let mut targets = Vec::new();
    for task in tasks {
        targets.push(task.await.unwrap().unwrap());
    }
    for target in &targets {
        assert_eq!(
            std::fs::read(target.join("SECRET_1")).unwrap(),
            b"Sql-Passw0rd-from-kv-demo"
        );
    }
    let tasks: Vec<_> = pods
        .into_iter()
        .map(|p| {
            let env = env.clone();
            tokio::spawn(async move { env.kubelet.unpublish(&p, VOLUME).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(targets.iter().all(|t| !is_mounted(t)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_memory_hygiene_of_the_node() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[]).await;
    let pod = pod("99999999-9999-4999-8999-999999999999", None, None, None);
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    // One failed lookup (ENOENT), counted under its operation.
    assert!(!target.join("no-such-file").exists());
    let missing = super::harness::pod(
        "99999999-9999-4999-8999-999999999998",
        Some("missing"),
        None,
        None,
    );
    assert!(
        env.kubelet
            .publish(&missing, VOLUME, &PublishExtras::default())
            .await
            .is_err()
    );
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();

    let (status, metrics) = env.http_get("/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"node_publish_total{provider="azure",os_type="linux"} 1"#,
        r#"node_publish_error_total{provider="unknown",error_type="SecretProviderClassNotFound",os_type="linux"} 1"#,
        r#"node_unpublish_total{os_type="linux"} 1"#,
        r#"secretfs_vault_requests_total{outcome="ok"}"#,
        r#"secretfs_cache_misses_total 1"#,
        r#"secretfs_fuse_requests_total{op="lookup"}"#,
        "# EOF",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    let lookup_errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"secretfs_fuse_errors_total{op="lookup"} "#))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        lookup_errors >= Some(1),
        "failed lookups by op in\n{metrics}"
    );
    for op in ["getattr", "read", "readdir"] {
        let line = format!(r#"secretfs_fuse_errors_total{{op="{op}"}} "#);
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }
    assert!(!metrics.contains(r#"op="any""#), "{metrics}");
    assert!(!metrics.contains("Sql-Passw0rd"), "no secret in metrics");
    assert_eq!(env.http_get("/healthz").0, 200);
    assert_eq!(env.http_get("/readyz").0, 200);
    assert_eq!(env.http_get("/nope").0, 404);

    let locked = secretfs_secrets::hygiene::locked_kb(env.pid()).unwrap();
    assert!(
        locked > 0,
        "the node's memory is locked (VmLck {locked} kB)"
    );
}

/// Rotation through the real binary: a new version in the vault, then
/// `secretfs refresh` (on demand); `secretfs status` shows what is mounted
/// and never a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_on_demand_refresh_through_the_binary() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[]).await;
    let pod = pod("abababab-abab-4bab-8bab-abababababab", None, None, None);
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let held = std::fs::File::open(target.join("SECRET_1")).unwrap();

    let (ok, json) = env.admin(&["status", "--json"]);
    assert!(ok, "{json}");
    let volumes: serde_json::Value = serde_json::from_str(&json).unwrap();
    let volume = &volumes[0];
    assert_eq!(volume["target"], target.to_str().unwrap());
    assert_eq!(
        volume["pod"],
        "default/pod-abababab-abab-4bab-8bab-abababababab"
    );
    assert_eq!(volume["files"][0]["path"], "SECRET_1");
    assert_eq!(volume["files"][0]["object"], "secret/sql-password");
    assert_eq!(volume["files"][0]["version"].as_str().unwrap().len(), 32);
    assert!(!json.contains("Sql-Passw0rd"), "status never shows a value");
    let (ok, table) = env.admin(&["status"]);
    assert!(
        ok && table.contains("SECRET_1") && table.contains("secret/sql-password"),
        "{table}"
    );
    // The scheduler's plan: the node interval (2m) less up to 10 % jitter.
    let planned = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (next, now) = loop {
        let (ok, json) = env.admin(&["status", "--json"]);
        assert!(ok, "{json}");
        let volumes: serde_json::Value = serde_json::from_str(&json).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if let Some(next) = volumes[0]["next_refresh_at"].as_u64() {
            assert_eq!(volumes[0]["refresh_failures"], 0);
            break (next, now);
        }
        assert!(
            std::time::Instant::now() < planned,
            "no next refresh: {json}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        (now + 100..=now + 120).contains(&next),
        "next refresh within the 2m interval: {next} vs {now}"
    );
    let (ok, table) = env.admin(&["status"]);
    assert!(
        ok && table.contains("node interval; next refresh in "),
        "{table}"
    );

    env.emulator
        .control()
        .set_secret("kv-demo", "sql-password", "rotated-through-the-binary")
        .unwrap();
    let (ok, out) = env.admin(&["refresh", target.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("1 replaced"), "{out}");
    // Same path, no remount: a new open reads the new value; the descriptor
    // opened before keeps the version it opened, whole (the default
    // page-cache mode, docs/SEMANTICS.md).
    assert_eq!(
        std::fs::read(target.join("SECRET_1")).unwrap(),
        b"rotated-through-the-binary"
    );
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"Sql-Passw0rd-from-kv-demo",
        "the descriptor's version"
    );
    drop(held);
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
}

/// `secretfs.io/fetch: lazy` through the binary: the mount asks the vault
/// nothing; the first read fetches, with the node identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_class_mounts_without_vault_calls() {
    if !fuse_available() {
        return;
    }
    let class = azure_class(
        "lazy",
        &[
            ("secretfs.io/fetch", "lazy"),
            ("useVMManagedIdentity", "true"),
            (
                "userAssignedIdentityID",
                "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21",
            ),
        ],
        &one_secret("sql-password", "SECRET_1"),
    );
    let env = Env::start(&[class]).await;
    let control = env.emulator.control();
    control.reset_counters();
    let pod = pod(
        "1a2b3c4d-0000-4000-8000-00000000beef",
        Some("lazy"),
        None,
        None,
    );
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!(
        control.count(&CounterFilter::default()),
        0,
        "no request at mount"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
    assert_eq!(
        control.count(&CounterFilter::route(Route::SecretGet).status(200)),
        1
    );
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
}

/// The mount id and device of every mount at `target`, from mountinfo.
fn mounts_at(target: &std::path::Path) -> Vec<(String, String)> {
    let target = target.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() > 4 && f[4] == target)
        .map(|f| (f[0].to_owned(), f[2].to_owned()))
        .collect()
}

/// SIGTERM removes the CSI and admin sockets (`Env::restart` checks it);
/// after SIGKILL they stay, and the next start replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_removes_its_sockets_and_a_start_replaces_stale_ones() {
    if !fuse_available() {
        return;
    }
    let mut env = Env::start(&[]).await;
    env.restart(Stop::Term, None).await;
    env.restart(Stop::Kill, None).await;
    let (ok, out) = env.admin(&["status"]);
    assert!(ok, "the replaced admin socket serves: {out}");
    assert!(out.contains("no volumes published"), "{out}");
}
