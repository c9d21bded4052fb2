//! The state every handler shares.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::counters::Counters;
use crate::directory::Directory;
use crate::faults::Faults;
use crate::secrets_seen::SecretsSeen;
use crate::store::Store;
use crate::tokens::TokenService;

/// Behaviour switches of a running emulator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Authority put in the 401 challenge, e.g. `https://login.windows.net`.
    pub challenge_authority: String,
    /// Vault served to hosts that name no vault (IPs, `localhost`).
    pub default_vault: Option<String>,
    /// The (stale) api-version written into `nextLink`.
    pub next_link_api_version: String,
    /// Error code of a 404 for a missing *version* of a secret (unverified
    /// in real captures; `SecretNotFound` by default).
    pub secret_version_not_found_code: String,
}

/// Shared by all connections.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub directory: Directory,
    store: RwLock<Store>,
    pub tokens: TokenService,
    pub counters: Counters,
    pub faults: Faults,
    /// Tokens issued, client secrets and assertions received, deleted values.
    pub seen: SecretsSeen,
    /// Set to true when the emulator stops: open connections close.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Assemble the shared state.
    pub fn new(
        settings: Settings,
        directory: Directory,
        store: Store,
        tokens: TokenService,
    ) -> Self {
        Self {
            settings,
            directory,
            store: RwLock::new(store),
            tokens,
            counters: Counters::default(),
            faults: Faults::default(),
            seen: SecretsSeen::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Read the vault contents.
    pub fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Change the vault contents.
    pub fn store_mut(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }
}
