//! `SecretString`: sensitive text, zeroized on drop, redacted in `Debug`.
//!
//! It does not implement `Display`, so a secret cannot end up in a log line
//! or an error message by accident; reading it takes an explicit `expose`.

use std::fmt;

use zeroize::Zeroizing;

use crate::SecretBytes;

/// A token, client secret or secret value as text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `value`; its buffer is zeroized when dropped.
    pub fn new(value: String) -> Self {
        SecretString(Zeroizing::new(value))
    }

    /// The secret text. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString::new(value.to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString::new)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl From<SecretString> for SecretBytes {
    fn from(value: SecretString) -> Self {
        SecretBytes::new(value.expose().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::from("hunter2-token");
        assert_eq!(format!("{s:?}"), "SecretString(<redacted>)");
        assert_eq!(s.expose(), "hunter2-token");
        let b = SecretBytes::from(b"hunter2".to_vec());
        assert_eq!(format!("{b:?}"), "SecretBytes(<redacted 7 bytes>)");
        assert_eq!(b.expose(), b"hunter2");
        assert_eq!(SecretBytes::from(s).expose(), b"hunter2-token");
    }
}
