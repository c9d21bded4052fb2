//! The Azure CLI's signed-in account as a credential (`secretfs mount`
//! only, see [`super::AzureProviderConfig::azure_cli`]).
//!
//! The SDK's `AzureCliCredential` runs
//! `/bin/sh -c "az account get-access-token -o json --scope <scope> --tenant <tenant>"`
//! (the `az` found on `PATH`) and reads `accessToken` and `expires_on` from
//! its output; it keeps no token, so this wrapper caches each scope's token
//! until five minutes before it expires. The command runs on tokio's process
//! support. The CLI's error text (its stderr) is passed on: it names the
//! problem (`az login` needed, wrong tenant) and holds no token.

use std::ffi::OsStr;
use std::fmt;
use std::sync::Arc;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_identity::{AzureCliCredential, AzureCliCredentialOptions, Executor};

use super::credentials::TokenCache;

/// Runs the CLI with `tokio::process` (the SDK's default executor blocks a
/// thread unless its `tokio` feature is on).
#[derive(Debug)]
struct TokioExecutor;

#[async_trait::async_trait]
impl Executor for TokioExecutor {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<std::process::Output> {
        tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
    }
}

/// The Azure CLI's account in `tenant_id`, tokens cached.
pub struct CliCredential {
    inner: Arc<AzureCliCredential>,
    cache: TokenCache,
}

impl CliCredential {
    /// A credential asking the CLI for tokens of `tenant_id`.
    pub fn new(tenant_id: &str) -> azure_core::Result<Self> {
        let inner = AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id: Some(tenant_id.to_owned()),
            executor: Some(Arc::new(TokioExecutor)),
            ..Default::default()
        }))?;
        Ok(CliCredential {
            inner,
            cache: TokenCache::new(),
        })
    }
}

impl fmt::Debug for CliCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliCredential")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for CliCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.cache
            .get(scopes, || self.inner.get_token(scopes, options))
            .await
    }
}
