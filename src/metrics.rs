//! Prometheus metrics: upstream's names and labels (so its dashboards and
//! alerts keep working) plus our own `secretfs_*`. No secret value is ever
//! a label; `error_type` is a bounded set. Object names appear in one
//! family only, `secretfs_object_expiry_timestamp_seconds` (namespace,
//! class, file and type of each object with a known expiry: one series per
//! distinct object on the node, see [`crate::expiry`]).

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{
    Histogram, exponential_buckets, exponential_buckets_range,
};
use prometheus_client::registry::Registry;

const OS: &str = "linux";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub provider: String,
    pub error_type: String,
    pub os_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OsLabels {
    pub os_type: String,
}

/// The labels of `secretfs_unread_files`: a class of a namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct UnreadLabels {
    pub namespace: String,
    pub class: String,
}

/// The labels of `secretfs_audited_reads_total`: a file of a pod's volume
/// (audited classes only, `secretfs.io/audit: reads`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub namespace: String,
    pub pod: String,
    pub file: String,
}

/// Why an audited read was not attributed (a bounded set, see
/// [`crate::node::audit::Unattributed::code`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub provider: String,
    pub os_type: String,
    pub rotated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationErrorLabels {
    pub provider: String,
    pub error_type: String,
    pub os_type: String,
    pub rotated: String,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub node_publish: Family<ProviderLabels, Counter>,
    pub node_publish_error: Family<ErrorLabels, Counter>,
    pub node_unpublish: Family<OsLabels, Counter>,
    pub node_unpublish_error: Family<OsLabels, Counter>,
    pub rotation_reconcile: Family<RotationLabels, Counter>,
    pub rotation_reconcile_error: Family<RotationErrorLabels, Counter>,
    pub rotation_reconcile_duration: Family<OsLabels, Histogram>,
    pub sync_k8s_secret: Family<ProviderLabels, Counter>,
    /// Upstream declares it (and records nothing into it in v1.6); kept
    /// for dashboards that query it.
    pub k8s_secret_duration: Family<OsLabels, Histogram>,
    pub sync_errors: Counter,
    pub volumes: Gauge,
    /// Vault requests (every attempt) by outcome: ok, not_found, denied,
    /// throttled, transient, invalid.
    pub vault_requests: Family<OutcomeLabels, Counter>,
    pub vault_request_duration: Histogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_bytes: Gauge,
    /// Volumes of a previous process at start: taken over or lost.
    pub restored_volumes: Family<OutcomeLabels, Counter>,
    /// When each mounted object expires (Unix seconds), per distinct
    /// object of the node (the soonest among its volumes).
    pub object_expiry: Family<crate::expiry::ExpiryLabels, Gauge>,
    /// Files of the node's volumes never read for longer than
    /// `--unread-threshold`, per class.
    pub unread_files: Family<UnreadLabels, Gauge>,
    /// First opens of a file version by a process of the volume's pod
    /// (audited classes).
    pub audited_reads: Family<AuditLabels, Counter>,
    /// Audited first opens that could not be attributed, by reason.
    pub audit_unattributed: Family<ReasonLabels, Counter>,
    /// 1 when this node can attribute audited reads to pods, 0 when it
    /// cannot (not in the host PID namespace).
    pub audit_can_attribute: Gauge,
}

fn histogram() -> Histogram {
    // Upstream's buckets, computed as Go's prometheus client does:
    // ExponentialBucketsRange(0.1, 2, 11) = 0.1 × 20^(n/10), n = 0..=10,
    // i.e. 0.1 s to 2.0 s with a factor of about 1.349.
    Histogram::new(exponential_buckets_range(0.1, 2.0, 11))
}

impl Metrics {
    /// A registry of its own. The process has one ([`global`]); a test
    /// gives its driver and provider another ([`Metrics::isolated`]), so
    /// the counts it asserts are its own whatever runs beside it.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            node_publish: Family::default(),
            node_publish_error: Family::default(),
            node_unpublish: Family::default(),
            node_unpublish_error: Family::default(),
            rotation_reconcile: Family::default(),
            rotation_reconcile_error: Family::default(),
            rotation_reconcile_duration: Family::new_with_constructor(histogram),
            sync_k8s_secret: Family::default(),
            k8s_secret_duration: Family::new_with_constructor(histogram),
            sync_errors: Counter::default(),
            volumes: Gauge::default(),
            vault_requests: Family::default(),
            vault_request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_bytes: Gauge::default(),
            restored_volumes: Family::default(),
            object_expiry: Family::default(),
            unread_files: Family::default(),
            audited_reads: Family::default(),
            audit_unattributed: Family::default(),
            audit_can_attribute: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "node_publish",
            "Successful NodePublishVolume calls",
            metrics.node_publish.clone(),
        );
        registry.register(
            "node_publish_error",
            "Failed NodePublishVolume calls",
            metrics.node_publish_error.clone(),
        );
        registry.register(
            "node_unpublish",
            "Successful NodeUnpublishVolume calls",
            metrics.node_unpublish.clone(),
        );
        registry.register(
            "node_unpublish_error",
            "Failed NodeUnpublishVolume calls",
            metrics.node_unpublish_error.clone(),
        );
        registry.register(
            "rotation_reconcile",
            "Volume refreshes (rotated: whether a file changed)",
            metrics.rotation_reconcile.clone(),
        );
        registry.register(
            "rotation_reconcile_error",
            "Failed volume refreshes",
            metrics.rotation_reconcile_error.clone(),
        );
        registry.register(
            "rotation_reconcile_duration_sec",
            "Duration of volume refreshes in seconds",
            metrics.rotation_reconcile_duration.clone(),
        );
        registry.register(
            "sync_k8s_secret",
            "Kubernetes Secrets written from secretObjects",
            metrics.sync_k8s_secret.clone(),
        );
        registry.register(
            "k8s_secret_duration_sec",
            "Duration of Kubernetes Secret writes from secretObjects in seconds",
            metrics.k8s_secret_duration.clone(),
        );
        registry.register(
            "secretfs_sync_errors",
            "Failed syncs of pod statuses and Secrets",
            metrics.sync_errors.clone(),
        );
        registry.register(
            "secretfs_volumes",
            "Volumes mounted now",
            metrics.volumes.clone(),
        );
        registry.register(
            "secretfs_vault_requests",
            "Vault requests (each attempt) by outcome",
            metrics.vault_requests.clone(),
        );
        registry.register(
            "secretfs_vault_request_duration_seconds",
            "Duration of vault requests",
            metrics.vault_request_duration.clone(),
        );
        registry.register(
            "secretfs_cache_hits",
            "Objects served from the shared cache",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "secretfs_cache_misses",
            "Objects the shared cache had to fetch",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "secretfs_cache_bytes",
            "Bytes of secret material in the shared cache",
            metrics.cache_bytes.clone(),
        );
        registry.register(
            "secretfs_restored_volumes",
            "Volumes of a previous process at start, by outcome (adopted: served again with no remount; lost: the pod needs a restart)",
            metrics.restored_volumes.clone(),
        );
        registry.register(
            "secretfs_object_expiry_timestamp_seconds",
            "When each mounted object expires, in Unix seconds: the earlier of Key Vault's exp and its certificate chain's earliest notAfter (the soonest among the node's volumes that show it; built-in Azure provider only)",
            metrics.object_expiry.clone(),
        );
        registry.register(
            "secretfs_unread_files",
            "Files of the node's volumes not read since they were mounted or rotated, for longer than --unread-threshold (mounted but unused: consider removing them from the class), by class",
            metrics.unread_files.clone(),
        );
        registry.register(
            "secretfs_audited_reads",
            "First opens of a file version by a process of the volume's own pod, for classes annotated secretfs.io/audit: reads (one JSON line each on the audit log)",
            metrics.audited_reads.clone(),
        );
        registry.register(
            "secretfs_audit_unattributed_reads",
            "Audited first opens that could not be attributed to the volume's pod, by reason (pid-not-visible: run the node in the host PID namespace)",
            metrics.audit_unattributed.clone(),
        );
        registry.register(
            "secretfs_audit_can_attribute",
            "1 when this node can attribute audited reads to pods; 0 when it cannot (the driver does not see readers' pids: hostPID is not set)",
            metrics.audit_can_attribute.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// A fresh registry that lives as long as the process (leaked: tests
    /// make a few), for a [`crate::node::driver::Driver`] and an Azure provider
    /// to count into instead of the process's.
    pub fn isolated() -> &'static Metrics {
        Box::leak(Box::new(Metrics::new()))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn vault_request(&self, outcome: &str, seconds: f64) {
        self.vault_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.vault_request_duration.observe(seconds);
    }

    pub fn published(&self, provider: &str) {
        self.node_publish
            .get_or_create(&provider_labels(provider))
            .inc();
        self.volumes.inc();
    }

    pub fn publish_failed(&self, provider: &str, error_type: &str) {
        self.node_publish_error
            .get_or_create(&ErrorLabels {
                provider: provider.to_owned(),
                error_type: error_type.to_owned(),
                os_type: OS.into(),
            })
            .inc();
    }

    pub fn unpublished(&self, had_volume: bool) {
        self.node_unpublish.get_or_create(&os()).inc();
        if had_volume {
            self.volumes.dec();
        }
    }

    /// Volumes of a previous process taken over (`adopted`) or `lost`.
    pub fn restored(&self, adopted: usize, lost: usize) {
        for (outcome, n) in [("adopted", adopted), ("lost", lost)] {
            self.restored_volumes
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(n as u64);
            if outcome == "adopted" {
                self.volumes.inc_by(n as i64);
            }
        }
    }

    /// Applies changes of the node's expiry series (`None`: removed).
    pub fn object_expiry_changed(&self, changes: Vec<(crate::expiry::ExpiryLabels, Option<i64>)>) {
        for (labels, value) in changes {
            match value {
                Some(at) => {
                    self.object_expiry.get_or_create(&labels).set(at);
                }
                None => {
                    self.object_expiry.remove(&labels);
                }
            }
        }
    }

    pub fn unpublish_failed(&self) {
        self.node_unpublish_error.get_or_create(&os()).inc();
    }

    pub fn refreshed(&self, provider: &str, rotated: bool, seconds: f64) {
        self.rotation_reconcile
            .get_or_create(&RotationLabels {
                provider: provider.to_owned(),
                os_type: OS.into(),
                rotated: rotated.to_string(),
            })
            .inc();
        self.rotation_reconcile_duration
            .get_or_create(&os())
            .observe(seconds);
    }

    pub fn refresh_failed(&self, provider: &str, error_type: &str) {
        self.rotation_reconcile_error
            .get_or_create(&RotationErrorLabels {
                provider: provider.to_owned(),
                error_type: error_type.to_owned(),
                os_type: OS.into(),
                rotated: "false".into(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn os() -> OsLabels {
    OsLabels { os_type: OS.into() }
}

fn provider_labels(provider: &str) -> ProviderLabels {
    ProviderLabels {
        provider: provider.to_owned(),
        os_type: OS.into(),
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_labels_are_exported() {
        let m = Metrics::new();
        m.published("azure");
        m.publish_failed("azure", "SecretProviderClassNotFound");
        m.unpublished(true);
        m.refreshed("azure", true, 0.2);
        let text = m.render();
        for line in [
            r#"node_publish_total{provider="azure",os_type="linux"} 1"#,
            r#"node_publish_error_total{provider="azure",error_type="SecretProviderClassNotFound",os_type="linux"} 1"#,
            r#"node_unpublish_total{os_type="linux"} 1"#,
            r#"rotation_reconcile_total{provider="azure",os_type="linux",rotated="true"} 1"#,
            "secretfs_volumes 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(
            text.contains("rotation_reconcile_duration_sec_bucket"),
            "{text}"
        );
        // Declared like upstream's; like every family here it shows once
        // observed.
        m.k8s_secret_duration.get_or_create(&os()).observe(0.3);
        let text = m.render();
        assert!(
            text.contains(r#"k8s_secret_duration_sec_count{os_type="linux"} 1"#)
                && text.contains(r#"k8s_secret_duration_sec_bucket{le="2.0"#),
            "{text}"
        );
    }

    /// Upstream's `ExponentialBucketsRange(0.1, 2, 11)`, as Go computes it.
    #[test]
    fn rotation_buckets_are_upstreams() {
        let m = Metrics::new();
        m.refreshed("azure", false, 0.05);
        let text = m.render();
        let bounds: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("rotation_reconcile_duration_sec_bucket"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
            .filter(|le: &f64| le.is_finite())
            .collect();
        let expected = [
            0.1, 0.1349, 0.1821, 0.2456, 0.3314, 0.4472, 0.6034, 0.8142, 1.0986, 1.4823, 2.0,
        ];
        assert_eq!(bounds.len(), expected.len(), "{text}");
        for (got, want) in bounds.iter().zip(expected) {
            assert!((got - want).abs() < 1e-4, "bucket {got} != {want}\n{text}");
        }
        assert!(text.contains(r#"le="+Inf""#), "{text}");
    }
}
