//! Which provider serves a SecretProviderClass's `spec.provider`: a
//! built-in one by that name, otherwise the external provider whose socket
//! `<dir>/<name>.sock` exists in the provider directories (upstream's
//! lookup, name rule included). Built-in providers win over sockets of the
//! same name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::Provider;
use super::external::{ExternalClient, ExternalConfig, ExternalProvider, ProviderVolume};

/// Why no provider serves a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error(
        "spec.provider is empty: set it to one of {builtins:?} or to the name of an installed provider"
    )]
    Empty { builtins: Vec<String> },
    #[error(
        "provider name {name:?} is not valid: it must match ^[a-zA-Z0-9_-]{{0,30}}$ (letters, digits, \
         '_' and '-', at most 30); fix spec.provider"
    )]
    InvalidName { name: String },
    #[error(
        "provider {name:?} is not built in (built in: {builtins:?}) and no provider socket exists at {}: \
         install the provider (its DaemonSet creates the socket), or fix spec.provider",
        display_paths(tried)
    )]
    NotFound {
        name: String,
        builtins: Vec<String>,
        tried: Vec<PathBuf>,
    },
    #[error(
        "provider {name:?} is not served by this node: use one of {builtins:?} (external providers are \
         not enabled)"
    )]
    Unknown { name: String, builtins: Vec<String> },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upstream's provider-name rule: `^[a-zA-Z0-9_-]{0,30}$`.
pub fn valid_provider_name(name: &str) -> bool {
    name.len() <= 30
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// External providers: the socket directories and one client per socket.
pub struct ExternalProviders {
    config: Arc<ExternalConfig>,
    clients: Mutex<HashMap<PathBuf, Arc<ExternalClient>>>,
}

impl fmt::Debug for ExternalProviders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalProviders")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ExternalProviders {
    pub fn new(config: ExternalConfig) -> Self {
        Self {
            config: Arc::new(config),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ExternalConfig {
        &self.config
    }

    /// The sockets tried for `name`, in order.
    pub fn candidates(&self, name: &str) -> Vec<PathBuf> {
        self.config
            .dirs
            .iter()
            .map(|dir| dir.join(format!("{name}.sock")))
            .collect()
    }

    /// The client for the first existing socket of `name` (the name must
    /// already be valid), or the paths tried.
    pub fn client(&self, name: &str) -> Result<Arc<ExternalClient>, Vec<PathBuf>> {
        let tried = self.candidates(name);
        let socket = tried
            .iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
            .ok_or_else(|| tried.clone())?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        Ok(clients
            .entry(socket.clone())
            .or_insert_with(|| Arc::new(ExternalClient::new(name, socket, self.config.clone())))
            .clone())
    }
}

/// The providers a driver can use.
pub struct ProviderRegistry {
    builtins: BTreeMap<String, Arc<dyn Provider>>,
    external: Option<ExternalProviders>,
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("builtins", &self.builtins.keys().collect::<Vec<_>>())
            .field("external", &self.external)
            .finish()
    }
}

impl ProviderRegistry {
    /// Built-in providers only.
    pub fn new(builtins: impl IntoIterator<Item = Arc<dyn Provider>>) -> Self {
        Self {
            builtins: builtins
                .into_iter()
                .map(|p| (p.name().to_owned(), p))
                .collect(),
            external: None,
        }
    }

    /// Also serves names that are not built in from provider sockets.
    pub fn with_external(mut self, config: ExternalConfig) -> Self {
        self.external = Some(ExternalProviders::new(config));
        self
    }

    /// The names of the built-in providers.
    pub fn builtin_names(&self) -> Vec<String> {
        self.builtins.keys().cloned().collect()
    }

    pub fn external(&self) -> Option<&ExternalProviders> {
        self.external.as_ref()
    }

    /// The provider for `name`, bound to `volume` when it is external.
    pub fn lookup(
        &self,
        name: &str,
        volume: impl FnOnce() -> ProviderVolume,
    ) -> Result<Arc<dyn Provider>, LookupError> {
        if let Some(builtin) = self.builtins.get(name) {
            return Ok(builtin.clone());
        }
        let builtins = self.builtin_names();
        if name.is_empty() {
            return Err(LookupError::Empty { builtins });
        }
        if !valid_provider_name(name) {
            return Err(LookupError::InvalidName {
                name: name.to_owned(),
            });
        }
        let Some(external) = &self.external else {
            return Err(LookupError::Unknown {
                name: name.to_owned(),
                builtins,
            });
        };
        let client = external
            .client(name)
            .map_err(|tried| LookupError::NotFound {
                name: name.to_owned(),
                builtins,
                tried,
            })?;
        Ok(Arc::new(ExternalProvider::new(client, volume())))
    }
}

impl From<Vec<Arc<dyn Provider>>> for ProviderRegistry {
    fn from(builtins: Vec<Arc<dyn Provider>>) -> Self {
        Self::new(builtins)
    }
}

impl<const N: usize> From<[Arc<dyn Provider>; N]> for ProviderRegistry {
    fn from(builtins: [Arc<dyn Provider>; N]) -> Self {
        Self::new(builtins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_rule_is_upstreams() {
        for ok in ["azure", "aws", "gcp", "vault", "a_b-C9", &"x".repeat(30)] {
            assert!(valid_provider_name(ok), "{ok}");
        }
        for bad in ["../x", "a/b", "a.b", "a b", &"x".repeat(31), "é"] {
            assert!(!valid_provider_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_missing_socket_names_every_path_tried() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let registry = ProviderRegistry::new([]).with_external(ExternalConfig {
            dirs: dirs.iter().map(|d| d.path().to_owned()).collect(),
            ..ExternalConfig::default()
        });
        let volume = || ProviderVolume::new("c", std::path::Path::new("/t"), []);
        let err = registry.lookup("vault", volume).err().unwrap();
        let text = err.to_string();
        for d in &dirs {
            let path = d.path().join("vault.sock");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        let err = registry.lookup("../etc/x", volume).err().unwrap();
        assert!(matches!(err, LookupError::InvalidName { .. }), "{err}");
        // A socket: one client (one channel) per socket, however many
        // volumes use it.
        let socket = dirs[1].path().join("vault.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let external = registry.external().unwrap();
        let first = external.client("vault").unwrap();
        assert_eq!(first.socket(), socket);
        assert!(Arc::ptr_eq(&first, &external.client("vault").unwrap()));
        assert!(registry.lookup("vault", volume).is_ok());
        std::fs::remove_file(&socket).unwrap();
        // A regular file is not a socket.
        std::fs::write(dirs[1].path().join("vault.sock"), "").unwrap();
        assert!(matches!(
            registry.lookup("vault", volume).err().unwrap(),
            LookupError::NotFound { .. }
        ));
    }
}
