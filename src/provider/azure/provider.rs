//! [`AzureProvider`]: the Azure Key Vault [`Provider`].
//!
//! Per mount: parse the parameters, check the plan, resolve the identity,
//! take (or build) that identity's credential and the vault's clients from
//! the cache, fetch every object concurrently (bounded), and either return
//! all files or an error naming every failing object.
//!
//! Reuse: one credential per [`IdentityKey`] and one set of clients per
//! identity and vault, kept in an LRU of `max_identities` entries. Tokens
//! live in the credential until shortly before they expire; each client
//! pays its 401 challenge once. A workload identity's assertion (the pod's
//! service-account token, new on every kubelet republish) is stored in the
//! entry's slot on each mount. An entry that gets a denial is dropped, so a
//! fixed configuration takes effect on the next mount.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::Transport;
use futures::StreamExt as _;
use lru::LruCache;
use secretfs_secrets::SecretString;
use tokio::time::Instant;

use super::clients::{Endpoints, VaultClients, http_client, vault_url};
use super::config::{AzureProviderConfig, ConfigError};
use super::credentials::{AssertionSlot, CredentialEnv, build_credential};
use super::fetch::{FetchContext, FetchError, FetchedObject, fetch_object, object_error};
use super::identity::{
    IdentityConfig, IdentityInputs, IdentityKey, IdentityKeySalt, PodInfo, ResolvedIdentity,
    resolve_identity,
};
use super::params::{AzureParameters, ParseOptions, read_cloud_env_file};
use crate::provider::azure::cache::Fresh;
use crate::provider::{
    ErrorKind, MountError, MountRequest, MountResponse, MountedFile, ObjectErrors, Plan, Provider,
};

/// Pods remembered per workload identity as authenticated (least recently
/// published forgotten first; a forgotten pod is exchanged again).
const VERIFIED_PODS: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// The credential and clients of one identity.
struct IdentityEntry {
    credential: Arc<dyn TokenCredential>,
    assertion: Option<Arc<AssertionSlot>>,
    /// Workload identity: the pods (UIDs) whose own service-account token
    /// Entra ID accepted for this identity. A pod not in it has its token
    /// exchanged first, so no pod is served (from the cache or otherwise)
    /// before its own credentials authenticated; its republishes (a new
    /// token from kubelet each time) then cost nothing.
    verified_pods: Mutex<LruCache<String, ()>>,
    vaults: Mutex<HashMap<String, Arc<VaultClients>>>,
}

impl Drop for IdentityEntry {
    fn drop(&mut self) {
        // The last user is gone (evicted and no mount in flight).
        if let Some(slot) = &self.assertion {
            slot.wipe();
        }
    }
}

/// What the shared cache is keyed by: the identity (so a pod is only ever
/// served what its own identity may read), the vault, and what is fetched
/// from it: the object's type, name, version (with how many versions of
/// history), format and encoding. Nothing else: not the alias, mode,
/// position, `optional` flag or class, which only decide where and how a
/// volume shows the fetched files, so classes differing in those share one
/// entry (and one vault request per refresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjectKey {
    identity: IdentityKey,
    vault: String,
    object_type: super::objects::ObjectType,
    name: String,
    /// `None`: the latest.
    version: Option<String>,
    /// `objectVersionHistory`: how many versions are fetched.
    version_history: u32,
    format: super::objects::ObjectFormat,
    encoding: super::objects::ObjectEncoding,
}

impl ObjectKey {
    pub(crate) fn new(
        identity: &IdentityKey,
        vault: &str,
        object: &super::objects::KeyVaultObject,
    ) -> Self {
        let super::objects::KeyVaultObject {
            index: _,
            name,
            alias: _,
            object_type,
            version,
            version_history,
            format,
            encoding,
            file_permission: _,
            optional: _,
        } = object;
        ObjectKey {
            identity: identity.clone(),
            vault: vault.to_owned(),
            object_type: *object_type,
            name: name.clone(),
            version: version.clone(),
            version_history: *version_history,
            format: *format,
            encoding: *encoding,
        }
    }
}

impl crate::provider::azure::cache::Weigh for FetchedObject {
    fn weight(&self) -> usize {
        self.files.iter().map(|f| f.contents.len()).sum()
    }
}

pub struct AzureProvider {
    config: AzureProviderConfig,
    /// Fetched objects shared by every mount and refresh of the node.
    cache: crate::provider::azure::cache::ObjectCache<ObjectKey, FetchedObject, FetchError>,
    /// Requests per vault.
    limiter: Arc<crate::provider::azure::rate::RateLimiter>,
    transport: Transport,
    credential_env: CredentialEnv,
    salt: IdentityKeySalt,
    identities: Mutex<LruCache<IdentityKey, Arc<IdentityEntry>>>,
}

impl AzureProvider {
    /// Parameters, objects and identity checked, no network: what every
    /// mount and plan starts from.
    fn prepare(
        &self,
        request: &MountRequest,
    ) -> Result<(AzureParameters, Plan, ResolvedIdentity), MountError> {
        let options = ParseOptions {
            default_cloud: self.config.default_cloud,
            load_cloud_env: &read_cloud_env_file,
        };
        let params = AzureParameters::parse(&request.parameters, &options)
            .map_err(|e| MountError::config(e.kind(), e.to_string()))?;
        let plan = params
            .plan(request.default_mode)
            .map_err(|e| MountError::config(e.kind(), e.to_string()))?;
        let resolved = if self.config.azure_cli {
            super::identity::azure_cli_identity(&params)
        } else {
            let secrets: BTreeMap<String, SecretString> = request
                .secrets
                .expose()
                .map(|(k, v)| (k.to_owned(), SecretString::from(v)))
                .collect();
            let pod = PodInfo {
                name: request.pod.name.clone(),
                namespace: request.pod.namespace.clone(),
                service_account: request.pod.service_account.clone(),
            };
            let inputs = IdentityInputs {
                secrets: &secrets,
                service_account_tokens: request.service_account_tokens.as_ref(),
                pod: &pod,
                node_name: &request.node_name,
            };
            resolve_identity(&params, &inputs, &self.salt)
                .map_err(|e| MountError::config(e.kind(), e.to_string()))?
        };
        Ok((params, plan, resolved))
    }

    /// The files a lazy volume shows (version-history slots past the newest
    /// are left out, since how many versions exist is only known by
    /// listing).
    fn plan_files(
        &self,
        request: &MountRequest,
    ) -> Result<Vec<crate::provider::PlannedFile>, MountError> {
        let (_, plan, _) = self.prepare(request)?;
        Ok(plan
            .files()
            .iter()
            .filter(|f| f.required)
            .cloned()
            .collect())
    }
}

/// One object's fetch with everything it needs owned, so that concurrent
/// mounts can share it (the cache's single flight).
struct OwnedFetch {
    clients: Arc<VaultClients>,
    limiter: Arc<crate::provider::azure::rate::RateLimiter>,
    vault: String,
    identity: String,
    retry: super::config::RetryConfig,
    deadline: Instant,
    deadline_total: std::time::Duration,
    request_timeout: std::time::Duration,
    default_mode: crate::provider::FileMode,
    object: super::objects::KeyVaultObject,
    metrics: &'static crate::metrics::Metrics,
}

impl OwnedFetch {
    async fn run(self) -> Result<FetchedObject, FetchError> {
        let ctx = FetchContext {
            clients: &self.clients,
            limiter: Some(&self.limiter),
            vault: &self.vault,
            identity: &self.identity,
            retry: &self.retry,
            deadline: self.deadline,
            deadline_total: self.deadline_total,
            request_timeout: self.request_timeout,
            default_mode: self.default_mode,
            metrics: self.metrics,
        };
        fetch_object(&ctx, &self.object).await
    }
}

impl fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureProvider")
            .field("config", &self.config)
            .field("cached_identities", &self.cached_identities())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who a mount authenticates as, for messages (no secrets).
fn describe(identity: &IdentityConfig) -> String {
    match identity {
        IdentityConfig::WorkloadIdentity { client_id, .. } => {
            format!("workload identity {client_id}")
        }
        IdentityConfig::ServicePrincipal { client_id, .. } => {
            format!("service principal {client_id}")
        }
        IdentityConfig::ManagedIdentity {
            user_assigned_client_id: Some(id),
        } => format!("the node's user-assigned managed identity {id}"),
        IdentityConfig::ManagedIdentity {
            user_assigned_client_id: None,
        } => "the node's system-assigned managed identity".to_owned(),
        IdentityConfig::PodIdentity {
            pod_name,
            pod_namespace,
        } => format!("the pod identity of {pod_namespace}/{pod_name} (NMI)"),
        IdentityConfig::AzureCli { tenant_id } => {
            format!("the Azure CLI's signed-in account (tenant {tenant_id})")
        }
    }
}

impl AzureProvider {
    /// A provider with `config`; the HTTP client is built here (no request
    /// is sent until the first mount).
    pub fn new(config: AzureProviderConfig) -> Result<Self, ConfigError> {
        if let Some(authority) = &config.authority_host {
            let url = reqwest::Url::parse(authority).map_err(|e| ConfigError::Url {
                field: "authority_host",
                value: authority.clone(),
                reason: e.to_string(),
            })?;
            if url.scheme() != "https" {
                return Err(ConfigError::AuthorityNotHttps(authority.clone()));
            }
        }
        for (field, value) in [("imds_url", &config.imds_url), ("nmi_url", &config.nmi_url)] {
            reqwest::Url::parse(value).map_err(|e| ConfigError::Url {
                field,
                value: value.clone(),
                reason: e.to_string(),
            })?;
        }
        let http = http_client(&config, Endpoints::Remote)?;
        let node_http = http_client(&config, Endpoints::Node)?;
        let transport = Transport::new(Arc::new(http));
        let salt = IdentityKeySalt::random().map_err(|_| ConfigError::Random)?;
        let capacity = NonZeroUsize::new(config.max_identities.max(1)).unwrap_or(NonZeroUsize::MIN);
        Ok(AzureProvider {
            cache: crate::provider::azure::cache::ObjectCache::new(config.cache_bytes)
                .with_metrics(config.metrics),
            limiter: Arc::new(crate::provider::azure::rate::RateLimiter::new(
                config.rate_limit,
            )),
            credential_env: CredentialEnv {
                node_http,
                transport: transport.clone(),
                imds_url: config.imds_url.clone(),
                nmi_url: config.nmi_url.clone(),
            },
            transport,
            salt,
            identities: Mutex::new(LruCache::new(capacity)),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AzureProviderConfig {
        &self.config
    }

    /// How many identities have a cached credential.
    pub fn cached_identities(&self) -> usize {
        lock(&self.identities).len()
    }

    /// Drops every cached credential and client.
    pub fn clear_cache(&self) {
        lock(&self.identities).clear();
    }

    /// The cached entry of `key`, or a new one. A workload identity's slot
    /// gets the newest token.
    fn entry(
        &self,
        key: &IdentityKey,
        identity: &IdentityConfig,
        authority: &str,
    ) -> Result<Arc<IdentityEntry>, MountError> {
        let mut cache = lock(&self.identities);
        if let Some(entry) = cache.get(key) {
            // A workload identity's new token goes into the slot only once
            // Entra ID accepted it (`verify_assertion`).
            return Ok(entry.clone());
        }
        let built = build_credential(&self.credential_env, identity, authority).map_err(|e| {
            MountError::config(
                ErrorKind::Invalid,
                format!(
                    "failed to build the credential of {}: {}",
                    describe(identity),
                    super::retry::classify(&e).message
                ),
            )
        })?;
        let entry = Arc::new(IdentityEntry {
            credential: built.credential,
            assertion: built.assertion,
            verified_pods: Mutex::new(LruCache::new(VERIFIED_PODS)),
            vaults: Mutex::new(HashMap::new()),
        });
        if let Some((evicted_key, evicted)) = cache.push(key.clone(), entry.clone())
            && evicted_key != *key
        {
            tracing::debug!(identity = ?evicted_key, "evicting a cached identity");
            drop(evicted);
        }
        Ok(entry)
    }

    /// Workload identity: exchanges the service-account token of a pod
    /// not yet seen for this identity with Entra ID, and only then makes it
    /// the identity's assertion. A republish (kubelet's new token for a pod
    /// already accepted) costs nothing; a new pod of the same service account
    /// costs one token request (as upstream makes for every mount), never a
    /// vault call.
    async fn verify_assertion(
        &self,
        entry: &IdentityEntry,
        identity: &IdentityConfig,
        authority: &str,
        scope: &str,
        pod_uid: &str,
    ) -> Result<(), super::retry::Failure> {
        let (IdentityConfig::WorkloadIdentity { token, .. }, Some(slot)) =
            (identity, &entry.assertion)
        else {
            return Ok(());
        };
        let first = {
            let mut pods = lock(&entry.verified_pods);
            if pods.get(pod_uid).is_some() {
                slot.set(token.clone());
                return Ok(());
            }
            pods.is_empty()
        };
        let result = if first {
            // A new identity: its credential holds this very token, and the
            // access token it gets now serves the first vault requests too.
            entry.credential.get_token(&[scope], None).await
        } else {
            match build_credential(&self.credential_env, identity, authority) {
                Ok(built) => built.credential.get_token(&[scope], None).await,
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(_) => {
                slot.set(token.clone());
                lock(&entry.verified_pods).put(pod_uid.to_owned(), ());
                Ok(())
            }
            Err(e) => {
                let mut failure = super::retry::classify(&e);
                failure.credential = true;
                failure.attempts = failure.attempts.max(1);
                Err(failure)
            }
        }
    }

    fn forget(&self, key: &IdentityKey, entry: &Arc<IdentityEntry>) {
        let mut cache = lock(&self.identities);
        if cache.peek(key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            cache.pop(key);
        }
    }

    fn clients(&self, entry: &IdentityEntry, url: &str) -> Result<Arc<VaultClients>, MountError> {
        let mut vaults = lock(&entry.vaults);
        if let Some(c) = vaults.get(url) {
            return Ok(c.clone());
        }
        let clients =
            VaultClients::new(url, entry.credential.clone(), &self.transport, &self.config)
                .map(Arc::new)
                .map_err(|e| {
                    MountError::config(
                        ErrorKind::Invalid,
                        format!(
                            "failed to create the Key Vault clients for {url}: {}",
                            super::retry::classify(&e).message
                        ),
                    )
                })?;
        vaults.insert(url.to_owned(), clients.clone());
        Ok(clients)
    }
}

#[async_trait::async_trait]
impl Provider for AzureProvider {
    fn name(&self) -> &str {
        "azure"
    }

    fn plan(
        &self,
        request: &MountRequest,
    ) -> Option<Result<Vec<crate::provider::PlannedFile>, MountError>> {
        Some(self.plan_files(request))
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        let started = Instant::now();
        let fresh = match request.fresh_since {
            Some(at) => Fresh::since(at),
            None => Fresh::max_age(request.max_age),
        };
        let deadline = started + self.config.deadline;
        let (params, _, resolved) = self.prepare(request)?;
        let identity = describe(&resolved.config);
        let authority = self
            .config
            .authority_host
            .clone()
            .unwrap_or_else(|| params.cloud.authority_host.clone());
        let entry = self.entry(&resolved.key, &resolved.config, &authority)?;
        let scope = format!("{}/.default", params.cloud.key_vault_resource);
        let verified = self
            .verify_assertion(
                &entry,
                &resolved.config,
                &authority,
                &scope,
                &request.pod.uid,
            )
            .await;
        let url = vault_url(
            params.vault_name.as_str(),
            &params.cloud.key_vault_dns_suffix,
            self.config.vault_port,
        );
        let clients = self.clients(&entry, &url)?;
        if let Err(failure) = verified {
            // Refused before anything is served: every object fails as a
            // fetch refused for the identity would.
            let ctx = FetchContext {
                clients: &clients,
                limiter: None,
                vault: params.vault_name.as_str(),
                identity: &identity,
                retry: &self.config.retry,
                deadline,
                deadline_total: self.config.deadline,
                request_timeout: self.config.request_timeout,
                default_mode: request.default_mode,
                metrics: self.config.metrics,
            };
            let mut errors = ObjectErrors::new();
            for object in &params.objects {
                errors.push(object_error(
                    &ctx,
                    object,
                    object.version.as_deref(),
                    "get",
                    &failure,
                ));
            }
            if lock(&entry.verified_pods).is_empty() {
                // Never accepted: build anew next time.
                self.forget(&resolved.key, &entry);
            }
            return Err(MountError::Objects(errors));
        }

        // Each object through the shared cache: one vault request per object
        // per `max_age`, however many volumes of this identity ask. The
        // cutoff is taken once (`fresh`, when the request came in): objects
        // queued behind the concurrency bound are judged as of this
        // request, not as of their turn.
        let fetches: Vec<_> = params
            .objects
            .iter()
            .map(|object| {
                // Keyed by what is fetched, not by where it goes: aliases,
                // modes and positions are applied per volume below.
                let spec = object.fetch_spec();
                let key = ObjectKey::new(&resolved.key, &url, object);
                let owned = OwnedFetch {
                    clients: clients.clone(),
                    limiter: self.limiter.clone(),
                    vault: params.vault_name.as_str().to_owned(),
                    identity: identity.clone(),
                    retry: self.config.retry.clone(),
                    deadline,
                    deadline_total: self.config.deadline,
                    request_timeout: self.config.request_timeout,
                    default_mode: request.default_mode,
                    object: spec,
                    metrics: self.config.metrics,
                };
                async move {
                    self.cache
                        .get_or_fetch(key, fresh, move || owned.run())
                        .await
                        .map(|(fetched, _)| fetched)
                }
            })
            .collect();
        let results: Vec<_> = futures::stream::iter(fetches)
            .buffered(self.config.concurrency.max(1))
            .collect()
            .await;

        let mut response = MountResponse::default();
        response.warnings.extend(params.warnings.iter().cloned());
        response.warnings.extend(resolved.warnings.iter().cloned());
        let mut errors = ObjectErrors::new();
        let mut identity_refused = false;
        for (object, result) in params.objects.iter().zip(results) {
            match result {
                Ok(fetched) => {
                    let mode = object.file_permission.unwrap_or(request.default_mode);
                    for file in &fetched.files {
                        let path = object.place_path(&file.path).ok_or_else(|| {
                            MountError::config(
                                ErrorKind::Invalid,
                                format!(
                                    "internal error: fetched file {:?} does not belong to object {}",
                                    file.path,
                                    object.id()
                                ),
                            )
                        })?;
                        if let Some(validity) = fetched.validity.get(&file.path) {
                            response.validity.insert(path.clone(), validity.clone());
                        }
                        response.files.push(MountedFile {
                            path,
                            mode,
                            contents: file.contents.clone(),
                            object_id: file.object_id.clone(),
                        });
                    }
                    response.versions.extend(fetched.versions.iter().cloned());
                    response.warnings.extend(fetched.warnings.iter().cloned());
                }
                // A missing optional object leaves its file out (upstream
                // #567); any other failure still fails the mount.
                Err(e) if object.optional && e.error.kind == ErrorKind::NotFound => {
                    response.warnings.push(format!(
                        "optional object {} is not in the vault; its file {:?} is left out",
                        object.id(),
                        object.file_name()
                    ));
                }
                Err(e) => {
                    identity_refused |= e.identity_refused;
                    errors.push(e.error);
                }
            }
        }
        tracing::debug!(
            vault = params.vault_name.as_str(),
            identity = %identity,
            objects = params.objects.len(),
            failed = errors.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "azure mount"
        );
        if !errors.is_empty() {
            if identity_refused {
                // Build anew next time: a fixed secret or federation applies.
                self.forget(&resolved.key, &entry);
            }
            return Err(MountError::Objects(errors));
        }
        response.versions =
            crate::provider::last_version_per_id(std::mem::take(&mut response.versions));
        Ok(response)
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use crate::provider::azure::objects::parse_objects;

    fn identity(client: &str) -> IdentityKey {
        IdentityKey::ManagedIdentity {
            node: "node-1".into(),
            identity: client.into(),
        }
    }

    /// The one object of a class's `objects` parameter, written as YAML
    /// fields (`objectName: db`, …).
    fn object(fields: &str) -> crate::provider::azure::objects::KeyVaultObject {
        let objects = format!("array:\n  - |\n    {}\n", fields.replace(", ", "\n    "));
        parse_objects(&objects).unwrap().objects.remove(0)
    }

    const VAULT: &str = "https://kv.vault.azure.net";

    fn key(fields: &str) -> ObjectKey {
        ObjectKey::new(&identity("system"), VAULT, &object(fields))
    }

    #[test]
    fn classes_differing_only_in_alias_mode_or_position_share_an_entry() {
        let base = "objectName: db, objectType: secret";
        let same = [
            "objectName: db, objectType: secret, objectAlias: DB_PASSWORD",
            "objectName: db, objectType: secret, filePermission: \"0400\"",
            "objectName: db, objectType: secret, optional: true",
            // `latest` is the latest.
            "objectName: db, objectType: secret, objectVersion: latest",
        ];
        for fields in same {
            assert_eq!(key(base), key(fields), "{fields}");
        }
        // Another position in another class's array.
        let mut later = object(base);
        later.index = 7;
        assert_eq!(
            key(base),
            ObjectKey::new(&identity("system"), VAULT, &later)
        );
    }

    #[test]
    fn each_keyed_field_makes_its_own_entry() {
        let base = key("objectName: db, objectType: secret");
        let different = [
            ("type", key("objectName: db, objectType: key")),
            ("name", key("objectName: db2, objectType: secret")),
            (
                "version",
                key(
                    "objectName: db, objectType: secret, objectVersion: 0123456789abcdef0123456789abcdef",
                ),
            ),
            (
                "history",
                key("objectName: db, objectType: secret, objectVersionHistory: 3"),
            ),
            (
                "format",
                key("objectName: db, objectType: secret, objectFormat: pfx"),
            ),
            (
                "encoding",
                key("objectName: db, objectType: secret, objectEncoding: base64"),
            ),
            (
                "vault",
                ObjectKey::new(
                    &identity("system"),
                    "https://other.vault.azure.net",
                    &object("objectName: db, objectType: secret"),
                ),
            ),
            (
                "identity",
                ObjectKey::new(
                    &identity("client-2"),
                    VAULT,
                    &object("objectName: db, objectType: secret"),
                ),
            ),
        ];
        for (field, other) in &different {
            assert_ne!(&base, other, "{field}");
        }
        let distinct: std::collections::HashSet<&ObjectKey> =
            different.iter().map(|(_, k)| k).chain([&base]).collect();
        assert_eq!(distinct.len(), different.len() + 1);
    }
}
