//! Which identity a mount uses, and the key under which its cached values
//! may be shared.
//!
//! Selection (upstream `buildAuthConfig`), after the parameters were checked
//! for conflicting mode flags:
//! 1. `usePodIdentity: true` → aad-pod-identity NMI (deprecated: a warning).
//! 2. `useVMManagedIdentity: true` → the node's managed identity through IMDS,
//!    user-assigned (`userAssignedIdentityID`) or system-assigned.
//! 3. `useAzureTokenProxy: true` → AKS identity binding: not supported yet.
//! 4. `clientID` set and a token for `api://AzureADTokenExchange` present →
//!    workload identity. Tokens are read from the request secrets first
//!    (Kubernetes ≥ 1.35, `serviceAccountTokenInSecrets`), then from the
//!    volume context's `csi.storage.k8s.io/serviceAccount.tokens`.
//! 5. A service principal from `nodePublishSecretRef` (`clientid`,
//!    `clientsecret`, keys matched case-insensitively). When `clientID` is set
//!    but no token came, this is used only if both keys are present (with a
//!    warning); otherwise the workload identity error is returned.
//!
//! An [`IdentityKey`] names the principal precisely enough that two pods share
//! cached values only when they are the same principal, and holds no secret.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::hmac;
use secretfs_secrets::SecretString;
use serde::Deserialize;

use super::params::AzureParameters;
use crate::provider::ErrorKind;

/// Volume-context (or, on Kubernetes ≥ 1.35, secrets) key of the service
/// account tokens kubelet requested for the CSIDriver's `tokenRequests`.
pub const SERVICE_ACCOUNT_TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";
/// The audience of the token exchanged for a workload identity.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";

/// The pod a volume is published for, from kubelet's `podInfoOnMount` keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    /// `csi.storage.k8s.io/pod.name`.
    pub name: String,
    /// `csi.storage.k8s.io/pod.namespace`.
    pub namespace: String,
    /// `csi.storage.k8s.io/serviceAccount.name`.
    pub service_account: String,
}

/// What a mount request carries that the identity depends on.
#[derive(Debug, Clone, Copy)]
pub struct IdentityInputs<'a> {
    /// `NodePublishVolumeRequest.secrets` (the `nodePublishSecretRef` data,
    /// and on Kubernetes ≥ 1.35 possibly the service account tokens).
    pub secrets: &'a BTreeMap<String, SecretString>,
    /// The volume context's `csi.storage.k8s.io/serviceAccount.tokens` JSON.
    pub service_account_tokens: Option<&'a SecretString>,
    /// The pod.
    pub pod: &'a PodInfo,
    /// This node's name (a node identity is only shared on one node).
    pub node_name: &'a str,
}

/// How to get a Key Vault token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityConfig {
    /// Client assertion with the pod's service account token.
    WorkloadIdentity {
        /// Tenant.
        tenant_id: String,
        /// `clientID`.
        client_id: String,
        /// The service account JWT for `api://AzureADTokenExchange`.
        token: SecretString,
    },
    /// Client secret from `nodePublishSecretRef`.
    ServicePrincipal {
        /// Tenant.
        tenant_id: String,
        /// `clientid` from the secret.
        client_id: String,
        /// `clientsecret` from the secret.
        client_secret: SecretString,
    },
    /// The node's managed identity through IMDS.
    ManagedIdentity {
        /// `userAssignedIdentityID`; `None` for the system-assigned identity.
        user_assigned_client_id: Option<String>,
    },
    /// aad-pod-identity's NMI on the node (deprecated).
    PodIdentity {
        /// The pod's name (`podname` header).
        pod_name: String,
        /// The pod's namespace (`podns` header).
        pod_namespace: String,
    },
    /// The Azure CLI's signed-in account (`secretfs mount` only, see
    /// [`azure_cli_identity`]).
    AzureCli {
        /// The class's tenant (`--tenant`).
        tenant_id: String,
    },
}

impl IdentityConfig {
    /// A short name of the mode, for logs and metrics.
    pub fn mode(&self) -> &'static str {
        match self {
            IdentityConfig::WorkloadIdentity { .. } => "workload-identity",
            IdentityConfig::ServicePrincipal { .. } => "service-principal",
            IdentityConfig::ManagedIdentity { .. } => "managed-identity",
            IdentityConfig::PodIdentity { .. } => "pod-identity",
            IdentityConfig::AzureCli { .. } => "azure-cli",
        }
    }
}

/// Names a principal; equal keys may share cached tokens and values.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKey {
    /// One service account federated to one client id in one tenant.
    WorkloadIdentity {
        /// Authority host (cloud).
        authority: String,
        /// Tenant.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// `<namespace>/<service account>`.
        service_account: String,
    },
    /// One client id with one particular secret.
    ServicePrincipal {
        /// Authority host (cloud).
        authority: String,
        /// Tenant.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// HMAC-SHA-256 of the secret under a per-process salt: two secrets of
        /// one client id do not share, and the value cannot be tested offline.
        secret_fingerprint: [u8; 32],
    },
    /// A node's managed identity.
    ManagedIdentity {
        /// The node.
        node: String,
        /// The user-assigned client id, or `system`.
        identity: String,
    },
    /// One pod through NMI.
    PodIdentity {
        /// `<namespace>/<pod>`.
        pod: String,
    },
    /// The Azure CLI's account in one tenant (one process, one user).
    AzureCli {
        /// Tenant.
        tenant_id: String,
    },
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityKey::WorkloadIdentity {
                tenant_id,
                client_id,
                service_account,
                ..
            } => write!(
                f,
                "WorkloadIdentity({tenant_id}/{client_id} as {service_account})"
            ),
            IdentityKey::ServicePrincipal {
                tenant_id,
                client_id,
                secret_fingerprint,
                ..
            } => write!(
                f,
                "ServicePrincipal({tenant_id}/{client_id}, secret #{})",
                hex::encode(&secret_fingerprint[..4])
            ),
            IdentityKey::ManagedIdentity { node, identity } => {
                write!(f, "ManagedIdentity({identity} on {node})")
            }
            IdentityKey::PodIdentity { pod } => write!(f, "PodIdentity({pod})"),
            IdentityKey::AzureCli { tenant_id } => write!(f, "AzureCli({tenant_id})"),
        }
    }
}

/// The per-process salt of service principal fingerprints.
#[derive(Clone)]
pub struct IdentityKeySalt(hmac::Key);

impl IdentityKeySalt {
    /// A fresh random salt.
    pub fn random() -> Result<IdentityKeySalt, IdentityError> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| IdentityError::Random)?;
        Ok(IdentityKeySalt::from_bytes(&bytes[..]))
    }

    /// A salt from given bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> IdentityKeySalt {
        IdentityKeySalt(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn fingerprint(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

impl fmt::Debug for IdentityKeySalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKeySalt(<redacted>)")
    }
}

/// The chosen identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIdentity {
    /// How to authenticate.
    pub config: IdentityConfig,
    /// The cache key.
    pub key: IdentityKey,
    /// Things the user should know (deprecated modes, fallbacks).
    pub warnings: Vec<String>,
}

/// Why no identity could be chosen. Never holds a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// `csi.storage.k8s.io/pod.name` is missing.
    #[error("pod name is not provided: the CSIDriver must set podInfoOnMount: true")]
    MissingPodName,
    /// `csi.storage.k8s.io/pod.namespace` is missing.
    #[error("pod namespace is not provided: the CSIDriver must set podInfoOnMount: true")]
    MissingPodNamespace,
    /// Workload identity without `csi.storage.k8s.io/serviceAccount.name`.
    #[error(
        "service account name is not provided: workload identity (clientID) needs csi.storage.k8s.io/serviceAccount.name, which kubelet sends when the CSIDriver sets podInfoOnMount: true"
    )]
    MissingServiceAccount,
    /// `useAzureTokenProxy: true`.
    #[error(
        "useAzureTokenProxy (AKS identity binding) is not supported by secretfs yet: use workload identity (clientID with a federated credential) instead"
    )]
    TokenProxyUnsupported,
    /// No secrets and no workload identity.
    #[error(
        "failed to get credentials, nodePublishSecretRef secret is not set: set clientID for workload identity, useVMManagedIdentity, or nodePublishSecretRef to a Secret with the keys clientid and clientsecret"
    )]
    SecretsNotSet,
    /// The secret has no `clientid`.
    #[error(
        "could not find clientid in secrets: the nodePublishSecretRef Secret needs the keys clientid and clientsecret"
    )]
    MissingClientId,
    /// The secret has no `clientsecret`.
    #[error(
        "could not find clientsecret in secrets: the nodePublishSecretRef Secret needs the keys clientid and clientsecret"
    )]
    MissingClientSecret,
    /// `clientID` set, but kubelet sent no tokens.
    #[error(
        "service account tokens not found: clientID is set (workload identity) but kubelet sent no csi.storage.k8s.io/serviceAccount.tokens; the CSIDriver needs tokenRequests with audience api://AzureADTokenExchange"
    )]
    TokensNotFound,
    /// The tokens JSON does not parse.
    #[error(
        "failed to parse workload identity tokens (csi.storage.k8s.io/serviceAccount.tokens) at line {line} column {column}: expected a JSON object {{\"<audience>\": {{\"token\": \"<jwt>\", \"expirationTimestamp\": \"…\"}}}}"
    )]
    TokensParse {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// No token for the audience.
    #[error(
        "token for audience {audience} not found (audiences present: {found}): add the audience to the CSIDriver's tokenRequests"
    )]
    AudienceNotFound {
        /// The audience we need.
        audience: &'static str,
        /// The audiences that were present.
        found: String,
    },
    /// The system RNG failed.
    #[error("could not get random bytes for the identity key salt")]
    Random,
}

impl IdentityError {
    /// [`ErrorKind::Transient`] for a failing RNG, otherwise
    /// [`ErrorKind::Invalid`] (the pod, CSIDriver or SecretProviderClass must
    /// change).
    pub fn kind(&self) -> ErrorKind {
        match self {
            IdentityError::Random => ErrorKind::Transient,
            _ => ErrorKind::Invalid,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenEntry {
    token: Option<SecretString>,
}

/// An audience as shown in an error. Audiences are URIs, but the map comes
/// from a request: anything that could be a token (a JWT, or just long) is
/// not shown.
fn shown_audience(audience: &str) -> String {
    let plausible = audience.len() <= 100
        && !audience.starts_with("eyJ")
        && audience.bytes().all(|b| b.is_ascii_graphic());
    if plausible {
        audience.to_owned()
    } else {
        "<redacted>".to_owned()
    }
}

/// Finds the workload identity token: secrets first, then the volume context.
fn workload_identity_token(inputs: &IdentityInputs<'_>) -> Result<SecretString, IdentityError> {
    let json = inputs
        .secrets
        .get(SERVICE_ACCOUNT_TOKENS_KEY)
        .or(inputs.service_account_tokens)
        .filter(|s| !s.expose().trim().is_empty())
        .ok_or(IdentityError::TokensNotFound)?;
    let mut tokens: BTreeMap<String, TokenEntry> =
        serde_json::from_str(json.expose()).map_err(|e| IdentityError::TokensParse {
            line: e.line(),
            column: e.column(),
        })?;
    match tokens
        .remove(WORKLOAD_IDENTITY_AUDIENCE)
        .and_then(|t| t.token)
    {
        Some(token) if !token.expose().trim().is_empty() => Ok(token),
        _ => Err(IdentityError::AudienceNotFound {
            audience: WORKLOAD_IDENTITY_AUDIENCE,
            found: if tokens.is_empty() {
                "none".to_owned()
            } else {
                tokens
                    .keys()
                    .map(|a| shown_audience(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

/// `clientid` and `clientsecret` from the request secrets, keys matched
/// case-insensitively; surrounding whitespace (a classic `echo` newline) is
/// removed from both.
fn service_principal(
    secrets: &BTreeMap<String, SecretString>,
) -> Result<(String, SecretString), IdentityError> {
    let credential_keys = secrets
        .keys()
        .filter(|k| k.as_str() != SERVICE_ACCOUNT_TOKENS_KEY);
    if credential_keys.count() == 0 {
        return Err(IdentityError::SecretsNotSet);
    }
    let find = |name: &str| {
        secrets
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.expose().trim().is_empty())
            .map(|(_, v)| v)
    };
    let client_id = find("clientid").ok_or(IdentityError::MissingClientId)?;
    let client_secret = find("clientsecret").ok_or(IdentityError::MissingClientSecret)?;
    Ok((
        client_id.expose().trim().to_owned(),
        SecretString::new(client_secret.expose().trim().to_owned()),
    ))
}

/// The Azure CLI's account in the class's tenant, whatever identity the
/// class names: only when the provider runs with
/// [`super::AzureProviderConfig::azure_cli`] (`secretfs mount`).
pub fn azure_cli_identity(params: &AzureParameters) -> ResolvedIdentity {
    ResolvedIdentity {
        key: IdentityKey::AzureCli {
            tenant_id: params.tenant_id.clone(),
        },
        config: IdentityConfig::AzureCli {
            tenant_id: params.tenant_id.clone(),
        },
        warnings: Vec::new(),
    }
}

/// Chooses the identity of a mount; see the module docs for the rules.
pub fn resolve_identity(
    params: &AzureParameters,
    inputs: &IdentityInputs<'_>,
    salt: &IdentityKeySalt,
) -> Result<ResolvedIdentity, IdentityError> {
    let pod = inputs.pod;
    if pod.name.trim().is_empty() {
        return Err(IdentityError::MissingPodName);
    }
    if pod.namespace.trim().is_empty() {
        return Err(IdentityError::MissingPodNamespace);
    }
    let tenant_id = params.tenant_id.clone();
    let authority = params.cloud.authority_host.clone();
    let mut warnings = Vec::new();

    if params.use_pod_identity {
        warnings.push(
            "usePodIdentity is deprecated: aad-pod-identity is retired; move to workload identity (clientID with a federated credential)".to_owned(),
        );
        return Ok(ResolvedIdentity {
            config: IdentityConfig::PodIdentity {
                pod_name: pod.name.clone(),
                pod_namespace: pod.namespace.clone(),
            },
            key: IdentityKey::PodIdentity {
                pod: format!("{}/{}", pod.namespace, pod.name),
            },
            warnings,
        });
    }
    if params.use_vm_managed_identity {
        warnings.push(
            "useVMManagedIdentity lets every pod on the node use the node's identity; prefer workload identity (clientID)".to_owned(),
        );
        let user_assigned = params.user_assigned_identity_id.clone();
        return Ok(ResolvedIdentity {
            key: IdentityKey::ManagedIdentity {
                node: inputs.node_name.to_owned(),
                identity: user_assigned.clone().unwrap_or_else(|| "system".to_owned()),
            },
            config: IdentityConfig::ManagedIdentity {
                user_assigned_client_id: user_assigned,
            },
            warnings,
        });
    }
    if params.use_azure_token_proxy {
        return Err(IdentityError::TokenProxyUnsupported);
    }

    let sp = |warnings: Vec<String>| -> Result<ResolvedIdentity, IdentityError> {
        let (client_id, client_secret) = service_principal(inputs.secrets)?;
        let secret_fingerprint = salt.fingerprint(&[
            authority.as_bytes(),
            tenant_id.as_bytes(),
            client_id.as_bytes(),
            client_secret.expose().as_bytes(),
        ]);
        Ok(ResolvedIdentity {
            key: IdentityKey::ServicePrincipal {
                authority: authority.clone(),
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret_fingerprint,
            },
            config: IdentityConfig::ServicePrincipal {
                tenant_id: tenant_id.clone(),
                client_id,
                client_secret,
            },
            warnings,
        })
    };

    let Some(client_id) = params.client_id.clone() else {
        return sp(warnings);
    };
    match workload_identity_token(inputs) {
        Ok(token) => {
            if pod.service_account.trim().is_empty() {
                return Err(IdentityError::MissingServiceAccount);
            }
            Ok(ResolvedIdentity {
                key: IdentityKey::WorkloadIdentity {
                    authority: authority.clone(),
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    service_account: format!("{}/{}", pod.namespace, pod.service_account),
                },
                config: IdentityConfig::WorkloadIdentity {
                    tenant_id,
                    client_id,
                    token,
                },
                warnings,
            })
        }
        Err(
            wi_error @ (IdentityError::TokensNotFound | IdentityError::AudienceNotFound { .. }),
        ) => {
            // Upstream falls back to a service principal when no token came.
            warnings.push(format!(
                "clientID is set but there is no token for {WORKLOAD_IDENTITY_AUDIENCE}; using the nodePublishSecretRef service principal"
            ));
            sp(warnings).map_err(|_| wi_error)
        }
        Err(e) => Err(e),
    }
}
