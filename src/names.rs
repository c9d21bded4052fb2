//! Every Kubernetes label, annotation, field manager and parameter name the
//! driver reads or writes, in one place.

/// SecretProviderClass parameter: refresh interval of this class's volumes
/// (Go duration, e.g. `30s`, `5m`), overriding `--rotation-poll-interval`.
pub const PARAM_ROTATION_INTERVAL: &str = "secretfs.io/rotation-poll-interval";

/// SecretProviderClass annotation: set it to any new value (a timestamp) to
/// refresh the class's volumes now instead of at the next interval.
pub const ANNOTATION_REFRESH_REQUESTED_AT: &str = "secretfs.io/refresh-requested-at";

/// Label the driver puts on every Secret it syncs (upstream's).
pub const LABEL_MANAGED: &str = "secrets-store.csi.k8s.io/managed";

/// Label on SecretProviderClassPodStatus naming the node (upstream's).
pub const LABEL_NODE_NAME: &str = "internal.secrets-store.csi.k8s.io/node-name";

/// Field manager of the driver's server-side applies.
pub const FIELD_MANAGER: &str = "secretfs";

/// Prefix of parameters that belong to secretfs, not to the provider.
pub const PARAM_PREFIX: &str = "secretfs.io/";

/// SecretProviderClass parameter: `lazy` mounts without asking the vault;
/// each file is fetched on its first access. Default `eager`: a missing
/// object fails the pod's start, as upstream.
pub const PARAM_FETCH: &str = "secretfs.io/fetch";

/// SecretProviderClass annotation: `reads` logs each first open of each
/// file version by each process of the class's volumes (who reads what;
/// see `crate::node::audit`). Any other value is refused at publish.
pub const ANNOTATION_AUDIT: &str = "secretfs.io/audit";
