//! Whether the providers this node depends on answer: part of readiness
//! (CSI `Probe`, `/readyz`) and of `--provider-health-check`.
//!
//! The rule (docs/CONFIGURATION.md, "Readiness"):
//! - built-in providers (`azure`) run in this process: always reachable;
//! - an external provider is checked when a volume mounted on this node uses
//!   it, or when its socket `<dir>/<name>.sock` exists in a provider
//!   directory (it is installed, so new pods may ask for it);
//! - a checked provider must answer `Version` within [`CHECK_TIMEOUT`]
//!   (`UNIMPLEMENTED` counts as an answer: old providers lack it); a provider
//!   in use whose socket is gone fails too;
//! - an external provider that nothing uses and that has no socket is not
//!   checked: a node is never unready for a provider it does not need;
//!   neither is one that nothing uses whose socket nobody listens on (a
//!   stale socket left by an uninstalled provider: the file outlives the
//!   process, and on a hostPath it would keep the node unready forever).

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use std::time::Duration;

use secretfs_csi::Readiness;

use crate::provider::ProviderRegistry;
use crate::provider::registry::{ExternalProviders, valid_provider_name};

/// How long one provider has to answer: several are checked at once, and
/// the whole check stays below the liveness sidecar's 3 s probe timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The external providers whose socket exists in a provider directory now.
fn installed(external: &ExternalProviders) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in &external.config().dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".sock"));
            if let Some(name) = name.filter(|n| is_socket && valid_provider_name(n)) {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Why one provider is not healthy, or `None` when it answered.
async fn check_one(external: &ExternalProviders, name: &str, in_use: bool) -> Option<String> {
    let client = match external.client(name) {
        Ok(client) => client,
        // Gone between the directory listing and now: nothing to check
        // unless a volume needs it.
        Err(tried) if in_use => {
            return Some(format!(
                "provider {name:?} is used by volumes on this node but no socket exists at {}: \
                 start the provider (its DaemonSet creates the socket)",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Err(_) => return None,
    };
    if !in_use
        && let Err(e) = tokio::net::UnixStream::connect(client.socket()).await
        && e.kind() == std::io::ErrorKind::ConnectionRefused
    {
        // Nobody listens: a socket left behind, not an installed provider.
        return None;
    }
    match tokio::time::timeout(CHECK_TIMEOUT, client.version()).await {
        Ok(Ok(_)) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!(
            "provider {name:?} (socket {}) did not answer Version within {CHECK_TIMEOUT:?}: check \
             the provider's logs, or remove its socket if it was uninstalled",
            client.socket().display()
        )),
    }
}

/// The problems of the providers this node depends on (empty: all answer).
/// `in_use`: the providers of the volumes mounted now.
pub async fn provider_problems(
    registry: &ProviderRegistry,
    in_use: &BTreeSet<String>,
) -> Vec<String> {
    let Some(external) = registry.external() else {
        return Vec::new();
    };
    let builtins = registry.builtin_names();
    let mut names: BTreeSet<String> = installed(external);
    names.extend(in_use.iter().cloned());
    names.retain(|n| !builtins.contains(n));
    let checks = names
        .iter()
        .map(|name| check_one(external, name, in_use.contains(name)));
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Readiness from [`provider_problems`].
pub async fn providers_ready(registry: &ProviderRegistry, in_use: &BTreeSet<String>) -> Readiness {
    let problems = provider_problems(registry, in_use).await;
    if problems.is_empty() {
        Readiness::Ready
    } else {
        Readiness::NotReady(problems.join("; "))
    }
}

/// `--provider-health-check`: every `interval`, checks the providers (as
/// readiness does) and logs each that does not answer, and each that
/// answers again (upstream only logs, at V(4)).
pub fn spawn_checker(
    driver: Arc<crate::node::driver::Driver>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = BTreeSet::new();
        let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let problems: BTreeSet<String> = driver.provider_problems().await.into_iter().collect();
            for problem in problems.difference(&failing) {
                tracing::warn!(problem = %problem, "provider health check failed");
            }
            if !failing.is_empty() && problems.is_empty() {
                tracing::info!("provider health check: every provider answers again");
            }
            failing = problems;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use secretfs_e2e::test_provider::TestProvider;

    use super::*;
    use crate::provider::external::ExternalConfig;

    fn not_ready(readiness: Readiness) -> String {
        match readiness {
            Readiness::NotReady(why) => why,
            Readiness::Ready => panic!("ready, expected not ready"),
        }
    }

    #[tokio::test]
    async fn providers_in_use_or_installed_must_answer_and_others_do_not_matter() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let registry = ProviderRegistry::new([]).with_external(ExternalConfig {
            dirs: dirs.iter().map(|d| d.path().to_owned()).collect(),
            ..ExternalConfig::default()
        });
        let none = BTreeSet::new();
        let vault: BTreeSet<String> = ["vault".to_owned()].into();
        // Nothing installed, nothing used: an absent provider is no reason.
        assert_eq!(providers_ready(&registry, &none).await, Readiness::Ready);
        // Used by a volume, but its socket is gone.
        let why = not_ready(providers_ready(&registry, &vault).await);
        assert!(
            why.contains("\"vault\"") && why.contains("no socket exists"),
            "{why}"
        );
        assert!(
            why.contains(&dirs[1].path().join("vault.sock").display().to_string()),
            "{why}"
        );

        // Installed and answering: ready whether used or not.
        let socket = dirs[1].path().join("vault.sock");
        let provider = TestProvider::start(&socket).await.unwrap();
        assert_eq!(providers_ready(&registry, &vault).await, Readiness::Ready);
        assert_eq!(providers_ready(&registry, &none).await, Readiness::Ready);
        assert!(provider.version_calls() >= 2, "checked with Version");
        // It stops (its socket goes): not ready while a volume uses it.
        provider.stop().await;
        let why = not_ready(providers_ready(&registry, &vault).await);
        assert!(why.contains("\"vault\""), "{why}");
        assert_eq!(providers_ready(&registry, &none).await, Readiness::Ready);
        // Back: ready again (the client reconnects).
        let provider = TestProvider::start(&socket).await.unwrap();
        assert_eq!(providers_ready(&registry, &vault).await, Readiness::Ready);

        // A socket left by a provider that died or was uninstalled (nobody
        // listens): no reason while no volume uses it, a reason as soon as
        // one does.
        let stale = dirs[0].path().join("aws.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert_eq!(providers_ready(&registry, &none).await, Readiness::Ready);
        let aws: BTreeSet<String> = ["aws".to_owned()].into();
        let why = not_ready(providers_ready(&registry, &aws).await);
        assert!(why.contains("\"aws\"") && !why.contains("vault"), "{why}");
        std::fs::remove_file(&stale).unwrap();
        assert_eq!(providers_ready(&registry, &none).await, Readiness::Ready);

        // A provider that accepts and never answers: not ready within the
        // check's timeout, not the provider's.
        let hung = dirs[0].path().join("gcp.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&hung).unwrap();
        let started = Instant::now();
        let why = not_ready(providers_ready(&registry, &vault).await);
        assert!(
            started.elapsed() < CHECK_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
        assert!(
            why.contains("\"gcp\"") && why.contains("did not answer Version"),
            "{why}"
        );
        // Files that are not provider sockets are ignored.
        std::fs::remove_file(&hung).unwrap();
        std::fs::write(dirs[0].path().join("notes.sock"), "").unwrap();
        std::fs::write(dirs[0].path().join("README"), "").unwrap();
        assert_eq!(providers_ready(&registry, &vault).await, Readiness::Ready);
        provider.stop().await;
    }

    #[tokio::test]
    async fn without_external_providers_only_builtins_serve_and_they_are_ready() {
        let registry = ProviderRegistry::new([]);
        let vault: BTreeSet<String> = ["vault".to_owned()].into();
        assert!(provider_problems(&registry, &vault).await.is_empty());
    }
}
