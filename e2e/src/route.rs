//! Names of the routes the emulator serves; used by counters and fault scopes.

use serde::{Deserialize, Serialize};

/// A served route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    #[serde(rename = "secrets.get")]
    SecretGet,
    #[serde(rename = "secrets.versions")]
    SecretVersions,
    #[serde(rename = "secrets.list")]
    SecretList,
    #[serde(rename = "keys.get")]
    KeyGet,
    #[serde(rename = "keys.versions")]
    KeyVersions,
    #[serde(rename = "keys.list")]
    KeyList,
    #[serde(rename = "certificates.get")]
    CertificateGet,
    #[serde(rename = "certificates.versions")]
    CertificateVersions,
    #[serde(rename = "certificates.list")]
    CertificateList,
    /// A path under a vault that the emulator does not serve.
    #[serde(rename = "keyvault.other")]
    KeyVaultOther,
    #[serde(rename = "entra.token")]
    EntraToken,
    #[serde(rename = "entra.token_v1")]
    EntraTokenV1,
    #[serde(rename = "entra.openid_configuration")]
    EntraOpenIdConfiguration,
    #[serde(rename = "entra.instance_discovery")]
    EntraInstanceDiscovery,
    #[serde(rename = "entra.keys")]
    EntraKeys,
    #[serde(rename = "imds.token")]
    ImdsToken,
    #[serde(rename = "nmi.token")]
    NmiToken,
    /// Anything else (404).
    #[serde(rename = "unknown")]
    Unknown,
}

impl Route {
    /// Every route, for documentation and parsing.
    pub const ALL: [Route; 18] = [
        Route::SecretGet,
        Route::SecretVersions,
        Route::SecretList,
        Route::KeyGet,
        Route::KeyVersions,
        Route::KeyList,
        Route::CertificateGet,
        Route::CertificateVersions,
        Route::CertificateList,
        Route::KeyVaultOther,
        Route::EntraToken,
        Route::EntraTokenV1,
        Route::EntraOpenIdConfiguration,
        Route::EntraInstanceDiscovery,
        Route::EntraKeys,
        Route::ImdsToken,
        Route::NmiToken,
        Route::Unknown,
    ];

    /// The stable name, e.g. `secrets.get`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::SecretGet => "secrets.get",
            Route::SecretVersions => "secrets.versions",
            Route::SecretList => "secrets.list",
            Route::KeyGet => "keys.get",
            Route::KeyVersions => "keys.versions",
            Route::KeyList => "keys.list",
            Route::CertificateGet => "certificates.get",
            Route::CertificateVersions => "certificates.versions",
            Route::CertificateList => "certificates.list",
            Route::KeyVaultOther => "keyvault.other",
            Route::EntraToken => "entra.token",
            Route::EntraTokenV1 => "entra.token_v1",
            Route::EntraOpenIdConfiguration => "entra.openid_configuration",
            Route::EntraInstanceDiscovery => "entra.instance_discovery",
            Route::EntraKeys => "entra.keys",
            Route::ImdsToken => "imds.token",
            Route::NmiToken => "nmi.token",
            Route::Unknown => "unknown",
        }
    }

    /// Parse a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Is this a Key Vault data-plane route?
    pub fn is_keyvault(self) -> bool {
        matches!(
            self,
            Route::SecretGet
                | Route::SecretVersions
                | Route::KeyGet
                | Route::KeyVersions
                | Route::CertificateGet
                | Route::CertificateVersions
                | Route::SecretList
                | Route::KeyList
                | Route::CertificateList
                | Route::KeyVaultOther
        )
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for r in Route::ALL {
            assert_eq!(Route::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
        }
        let mut names: Vec<_> = Route::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Route::ALL.len());
    }
}
