//! Azure clouds: the Entra ID authority, the Key Vault DNS suffix and the
//! Key Vault token resource for each `cloudName`.
//!
//! Names are matched like go-autorest's `EnvironmentFromName`: case-insensitive,
//! with its aliases `AzureCloud` and `AzureUSGovernment`. An empty `cloudName`
//! selects the provider's default (`AzurePublicCloud`).
//!
//! **AzureGermanCloud is rejected** with an error saying that Microsoft Cloud
//! Deutschland closed in October 2021. Upstream still accepts the name (its
//! endpoint table is frozen in go-autorest), but every request then fails on a
//! host that no longer exists; a clear error at mount time is more useful.
//!
//! **AzureStackCloud** reads a custom-cloud JSON file whose path is given
//! explicitly (`cloudEnvFileName`). Upstream sets the process-wide variable
//! `AZURE_ENVIRONMENT_FILEPATH` for it, which races between concurrent mounts;
//! here the path is passed to [`CloudEnvironment::from_json`]'s caller.

use serde::Deserialize;

/// A known cloud, or a custom one from `cloudEnvFileName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEnvironment {
    /// The canonical name (`AzurePublicCloud`, …, or the JSON file's `name`).
    pub name: String,
    /// The Entra ID authority host URL, with a trailing `/`
    /// (`https://login.microsoftonline.com/`).
    pub authority_host: String,
    /// The Key Vault DNS suffix (`vault.azure.net`): vault URLs are
    /// `https://<vault>.<suffix>/`.
    pub key_vault_dns_suffix: String,
    /// The Key Vault token resource, without a trailing `/`
    /// (`https://vault.azure.net`); the scope is `<resource>/.default`.
    pub key_vault_resource: String,
}

/// The name of a cloud as written in `cloudName`, before a custom cloud's
/// file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloudName {
    /// `AzurePublicCloud` (also `AzureCloud`); the default.
    Public,
    /// `AzureChinaCloud`.
    China,
    /// `AzureUSGovernmentCloud` (also `AzureUSGovernment`).
    UsGovernment,
    /// `AzureStackCloud`: endpoints come from the `cloudEnvFileName` JSON.
    Stack,
}

/// The `cloudName` values we accept, for error messages.
pub const ALLOWED_CLOUD_NAMES: &str =
    "AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud or AzureStackCloud";

/// Why `cloudName` or `cloudEnvFileName` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// An unknown `cloudName`.
    #[error(
        "cloudName {0:?} is not valid: use {ALLOWED_CLOUD_NAMES} (empty selects AzurePublicCloud)"
    )]
    Unknown(String),
    /// `AzureGermanCloud`.
    #[error(
        "cloudName {0:?} is not valid: Microsoft Cloud Deutschland (AzureGermanCloud) closed in October 2021; vaults in the Germany regions of the public cloud use AzurePublicCloud"
    )]
    GermanCloudClosed(String),
    /// `AzureStackCloud` without `cloudEnvFileName`.
    #[error(
        "cloudEnvFileName is required when cloudName is AzureStackCloud: set it to the path of the custom cloud JSON file"
    )]
    MissingEnvFile,
    /// The custom-cloud file could not be read.
    #[error("cloudEnvFileName {path:?} could not be read: {reason}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The custom-cloud file is not the expected JSON.
    #[error(
        "cloudEnvFileName {path:?} is not a valid cloud environment JSON: {reason}; it needs the string fields name, activeDirectoryEndpoint, keyVaultEndpoint and keyVaultDNSSuffix"
    )]
    BadJson {
        /// The path.
        path: String,
        /// What is wrong (never the file's content).
        reason: String,
    },
}

impl CloudName {
    /// Parses a `cloudName` value (already trimmed); `""` is `None`, meaning
    /// the provider's default.
    pub fn parse(value: &str) -> Result<Option<CloudName>, CloudError> {
        Ok(Some(match value.to_ascii_uppercase().as_str() {
            "" => return Ok(None),
            "AZUREPUBLICCLOUD" | "AZURECLOUD" => CloudName::Public,
            "AZURECHINACLOUD" => CloudName::China,
            "AZUREUSGOVERNMENTCLOUD" | "AZUREUSGOVERNMENT" => CloudName::UsGovernment,
            "AZURESTACKCLOUD" => CloudName::Stack,
            "AZUREGERMANCLOUD" => return Err(CloudError::GermanCloudClosed(value.to_owned())),
            _ => return Err(CloudError::Unknown(value.to_owned())),
        }))
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudName::Public => "AzurePublicCloud",
            CloudName::China => "AzureChinaCloud",
            CloudName::UsGovernment => "AzureUSGovernmentCloud",
            CloudName::Stack => "AzureStackCloud",
        }
    }

    /// The endpoints of a built-in cloud; `None` for `AzureStackCloud`.
    pub fn builtin(self) -> Option<CloudEnvironment> {
        let (authority, suffix) = match self {
            CloudName::Public => ("login.microsoftonline.com", "vault.azure.net"),
            CloudName::China => ("login.chinacloudapi.cn", "vault.azure.cn"),
            CloudName::UsGovernment => ("login.microsoftonline.us", "vault.usgovcloudapi.net"),
            CloudName::Stack => return None,
        };
        Some(CloudEnvironment {
            name: self.as_str().to_owned(),
            authority_host: format!("https://{authority}/"),
            key_vault_dns_suffix: suffix.to_owned(),
            key_vault_resource: format!("https://{suffix}"),
        })
    }
}

/// The fields we read from a go-autorest environment JSON file.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentFile {
    name: Option<String>,
    active_directory_endpoint: Option<String>,
    key_vault_endpoint: Option<String>,
    #[serde(rename = "keyVaultDNSSuffix")]
    key_vault_dns_suffix: Option<String>,
    resource_identifiers: Option<ResourceIdentifiers>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceIdentifiers {
    key_vault: Option<String>,
}

fn https_url(path: &str, field: &str, value: Option<String>) -> Result<String, CloudError> {
    let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
    let bad = |reason: String| CloudError::BadJson {
        path: path.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad(format!("{field} is missing or empty")));
    }
    let Some(host) = value.strip_prefix("https://") else {
        return Err(bad(format!("{field} {value:?} must be an https:// URL")));
    };
    if host.is_empty() || host.starts_with('/') || host.contains(char::is_whitespace) {
        return Err(bad(format!(
            "{field} {value:?} must be an https:// URL with a host"
        )));
    }
    Ok(value)
}

impl CloudEnvironment {
    /// Parses a custom-cloud JSON file (go-autorest's `Environment` format);
    /// `path` is only used in error messages.
    pub fn from_json(path: &str, json: &[u8]) -> Result<CloudEnvironment, CloudError> {
        let file: EnvironmentFile =
            serde_json::from_slice(json).map_err(|e| CloudError::BadJson {
                path: path.to_owned(),
                // Only the position: serde's message may quote the file's content.
                reason: format!(
                    "syntax or type error at line {} column {}",
                    e.line(),
                    e.column()
                ),
            })?;
        let name = file.name.map(|n| n.trim().to_owned()).unwrap_or_default();
        if name.is_empty() {
            return Err(CloudError::BadJson {
                path: path.to_owned(),
                reason: "name is missing or empty".to_owned(),
            });
        }
        let mut authority_host = https_url(
            path,
            "activeDirectoryEndpoint",
            file.active_directory_endpoint,
        )?;
        if !authority_host.ends_with('/') {
            authority_host.push('/');
        }
        let endpoint = https_url(path, "keyVaultEndpoint", file.key_vault_endpoint)?;
        let resource = match file.resource_identifiers.and_then(|r| r.key_vault) {
            Some(r) if !r.trim().is_empty() => {
                https_url(path, "resourceIdentifiers.keyVault", Some(r))?
            }
            _ => endpoint,
        };
        let suffix = file
            .key_vault_dns_suffix
            .map(|s| s.trim().trim_start_matches('.').to_owned())
            .unwrap_or_default();
        if suffix.is_empty()
            || !suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(CloudError::BadJson {
                path: path.to_owned(),
                reason: format!(
                    "keyVaultDNSSuffix {suffix:?} must be a DNS name (letters, digits, '.' and '-')"
                ),
            });
        }
        Ok(CloudEnvironment {
            name,
            authority_host,
            key_vault_dns_suffix: suffix,
            key_vault_resource: resource.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL of a vault in this cloud, `https://<vault>.<suffix>/`.
    pub fn vault_url(&self, vault_name: &str) -> String {
        format!("https://{vault_name}.{}/", self.key_vault_dns_suffix)
    }

    /// The OAuth2 scope for Key Vault tokens, `<resource>/.default`.
    pub fn key_vault_scope(&self) -> String {
        format!("{}/.default", self.key_vault_resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_clouds_have_their_endpoints() {
        let public = CloudName::Public.builtin().unwrap();
        assert_eq!(public.authority_host, "https://login.microsoftonline.com/");
        assert_eq!(
            public.vault_url("kv-demo"),
            "https://kv-demo.vault.azure.net/"
        );
        assert_eq!(public.key_vault_scope(), "https://vault.azure.net/.default");
        let china = CloudName::China.builtin().unwrap();
        assert_eq!(china.authority_host, "https://login.chinacloudapi.cn/");
        assert_eq!(china.vault_url("kv"), "https://kv.vault.azure.cn/");
        assert_eq!(china.key_vault_resource, "https://vault.azure.cn");
        let gov = CloudName::UsGovernment.builtin().unwrap();
        assert_eq!(gov.authority_host, "https://login.microsoftonline.us/");
        assert_eq!(gov.key_vault_dns_suffix, "vault.usgovcloudapi.net");
        assert_eq!(CloudName::Stack.builtin(), None);
    }

    #[test]
    fn names_match_like_go_autorest() {
        for (v, want) in [
            ("AzurePublicCloud", CloudName::Public),
            ("azurepubliccloud", CloudName::Public),
            ("AzureCloud", CloudName::Public),
            ("AzureChinaCloud", CloudName::China),
            ("AZUREUSGOVERNMENTCLOUD", CloudName::UsGovernment),
            ("AzureUSGovernment", CloudName::UsGovernment),
            ("AzureStackCloud", CloudName::Stack),
        ] {
            assert_eq!(CloudName::parse(v), Ok(Some(want)), "{v}");
        }
        assert_eq!(CloudName::parse(""), Ok(None));
        let err = CloudName::parse("AzureMoonCloud").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cloudName \"AzureMoonCloud\" is not valid: use AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud or AzureStackCloud (empty selects AzurePublicCloud)"
        );
        let err = CloudName::parse("AzureGermanCloud").unwrap_err();
        assert!(matches!(err, CloudError::GermanCloudClosed(_)));
        assert!(err.to_string().contains("closed in October 2021"), "{err}");
    }

    #[test]
    fn custom_cloud_json() {
        let json = br#"{
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": "https://adfs.local.azurestack.external/",
            "keyVaultEndpoint": "https://vault.local.azurestack.external/",
            "keyVaultDNSSuffix": "vault.local.azurestack.external",
            "resourceManagerEndpoint": "https://management.local.azurestack.external/"
        }"#;
        let env = CloudEnvironment::from_json("/etc/kubernetes/azurestack.json", json).unwrap();
        assert_eq!(env.name, "AzureStackCloud");
        assert_eq!(
            env.authority_host,
            "https://adfs.local.azurestack.external/"
        );
        assert_eq!(
            env.key_vault_resource,
            "https://vault.local.azurestack.external"
        );
        assert_eq!(
            env.vault_url("kv1"),
            "https://kv1.vault.local.azurestack.external/"
        );

        let with_resource = br#"{"name":"x","activeDirectoryEndpoint":"https://login.x","keyVaultEndpoint":"https://vault.x/","keyVaultDNSSuffix":".vault.x","resourceIdentifiers":{"keyVault":"https://kv-resource.x"}}"#;
        let env = CloudEnvironment::from_json("f", with_resource).unwrap();
        assert_eq!(env.authority_host, "https://login.x/");
        assert_eq!(env.key_vault_resource, "https://kv-resource.x");
        assert_eq!(env.key_vault_dns_suffix, "vault.x");
    }

    #[test]
    fn custom_cloud_errors_name_the_file_and_field() {
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "syntax or type error at line 1 column 2"),
            (
                br#"{"activeDirectoryEndpoint":"https://a","keyVaultEndpoint":"https://v","keyVaultDNSSuffix":"v"}"#,
                "name is missing",
            ),
            (
                br#"{"name":"n","keyVaultEndpoint":"https://v","keyVaultDNSSuffix":"v"}"#,
                "activeDirectoryEndpoint is missing",
            ),
            (
                br#"{"name":"n","activeDirectoryEndpoint":"http://a","keyVaultEndpoint":"https://v","keyVaultDNSSuffix":"v"}"#,
                "activeDirectoryEndpoint \"http://a\" must be an https:// URL",
            ),
            (
                br#"{"name":"n","activeDirectoryEndpoint":"https://a","keyVaultDNSSuffix":"v"}"#,
                "keyVaultEndpoint is missing",
            ),
            (
                br#"{"name":"n","activeDirectoryEndpoint":"https://a","keyVaultEndpoint":"https://v","keyVaultDNSSuffix":"v/x"}"#,
                "keyVaultDNSSuffix \"v/x\" must be a DNS name",
            ),
        ];
        for (json, want) in cases {
            let err = CloudEnvironment::from_json("/cfg/cloud.json", json).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("\"/cfg/cloud.json\""), "{msg}");
            assert!(msg.contains(want), "{msg} should contain {want}");
        }
        // A type error must not quote the file's content.
        let err = CloudEnvironment::from_json("f", br#"{"name": ["s3cr3t-value"]}"#).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
