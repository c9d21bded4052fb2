//! `SecretMap`: request secrets (nodePublishSecretRef data, and
//! service-account tokens on Kubernetes ≥ 1.35) as key → value text.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

/// Values that must never be printed: request secrets (nodePublishSecretRef
/// data, and service-account tokens on Kubernetes ≥ 1.35). Wiped on drop.
#[derive(Default, Clone)]
pub struct SecretMap(BTreeMap<String, Zeroizing<String>>);

impl SecretMap {
    pub fn new(map: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (k, Zeroizing::new(v)))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    /// Case-insensitive lookup (upstream matches `clientid` that way).
    pub fn get_ignore_case(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Key → value pairs, for handing on to a provider (never for logging).
    pub fn expose(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_keys_only() {
        let m = SecretMap::new([("clientSecret".to_owned(), "hunter2".to_owned())]);
        let shown = format!("{m:?} {m:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("clientSecret"), "{shown}");
        assert_eq!(m.get_ignore_case("CLIENTSECRET"), Some("hunter2"));
    }
}
