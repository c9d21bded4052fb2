//! Every secret the e2e world handed out, and a scanner that finds them in
//! text: logs, errors, events, metrics must never contain one.
//!
//! Sources: the emulator records the access tokens it issues, the
//! service-account tokens it mints and the client secrets and assertions it
//! receives, and knows every secret value and certificate private key it
//! stores (deleted versions are recorded before they go); the kubelet
//! stand-in records the credentials it sends (`nodePublishSecretRef` values,
//! service-account tokens). [`LeakScanner`] turns them into the strings to
//! look for (each value plain, base64 at every alignment, hex, escaped,
//! percent-encoded; a JWT's signature; a PEM private key's lines) and finds
//! them, fast, in large texts.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use crate::pki::pem_block;
use crate::store::Store;

/// Shorter values are not searched for: too likely to occur by chance.
pub const MIN_SECRET_LEN: usize = 8;

/// What a recorded secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretKind {
    /// A secret version's value (certificate-backing ones included).
    SecretValue,
    /// The private key of a certificate version.
    PrivateKey,
    /// An access token issued by Entra ID, IMDS or NMI.
    AccessToken,
    /// A service-account token minted for a test.
    ServiceAccountToken,
    /// A client secret known to the directory, received or sent.
    ClientSecret,
    /// A client assertion received by the token endpoint.
    ClientAssertion,
    /// Any other credential (e.g. an API server token, a test's own).
    Credential,
}

impl SecretKind {
    fn label(self) -> &'static str {
        match self {
            SecretKind::SecretValue => "secret value",
            SecretKind::PrivateKey => "private key",
            SecretKind::AccessToken => "access token",
            SecretKind::ServiceAccountToken => "service-account token",
            SecretKind::ClientSecret => "client secret",
            SecretKind::ClientAssertion => "client assertion",
            SecretKind::Credential => "credential",
        }
    }
}

/// One secret; its value never appears in `Debug`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeenSecret {
    pub kind: SecretKind,
    pub value: String,
}

impl SeenSecret {
    pub fn new(kind: SecretKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl fmt::Debug for SeenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenSecret")
            .field("kind", &self.kind)
            .field("len", &self.value.len())
            .finish()
    }
}

/// A shared, append-only record of secrets.
#[derive(Debug, Clone, Default)]
pub struct SecretsSeen {
    inner: Arc<Mutex<BTreeSet<SeenSecret>>>,
}

impl SecretsSeen {
    /// Remember `value` (empty values are ignored).
    pub fn record(&self, kind: SecretKind, value: &str) {
        if value.is_empty() {
            return;
        }
        self.lock().insert(SeenSecret::new(kind, value));
    }

    /// Everything recorded so far.
    pub fn list(&self) -> Vec<SeenSecret> {
        self.lock().iter().cloned().collect()
    }

    /// Remember every secret value and private key `store` holds now.
    pub(crate) fn record_store(&self, store: &Store) {
        self.lock().extend(store_secrets(store));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<SeenSecret>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every secret version value and certificate private key in `store`.
pub(crate) fn store_secrets(store: &Store) -> Vec<SeenSecret> {
    let mut out = Vec::new();
    for vault in store.vaults.values() {
        for version in vault.secrets.values().flatten() {
            out.push(SeenSecret::new(SecretKind::SecretValue, &version.value));
            if let Some(material) = &version.certificate {
                out.push(SeenSecret::new(
                    SecretKind::PrivateKey,
                    pem_block("PRIVATE KEY", &material.key_pkcs8),
                ));
            }
        }
    }
    out
}

/// One string to look for, and what it is (never the value itself).
#[derive(Clone)]
struct Needle {
    bytes: Vec<u8>,
    label: String,
}

/// Finds any form of a set of secrets in text.
pub struct LeakScanner {
    needles: Vec<Needle>,
    /// First [`MIN_SECRET_LEN`] bytes of a needle → the needles.
    index: HashMap<u64, Vec<usize>>,
    /// A bit per hash bucket of `index` keys: most positions are rejected
    /// without a map lookup.
    filter: Vec<u64>,
}

impl fmt::Debug for LeakScanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakScanner")
            .field("needles", &self.needles.len())
            .finish()
    }
}

const FILTER_BITS: u32 = 20;

fn bucket(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

fn key_at(text: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&text[at..at + MIN_SECRET_LEN]);
    u64::from_le_bytes(word)
}

/// Where a needle was found in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    needle: usize,
}

/// A line that holds a secret, masked.
#[derive(Debug, Clone)]
pub struct Leak {
    /// Where the text came from (a file, "metrics", "event POST /api/...").
    pub source: String,
    /// 1-based line in that text.
    pub line: usize,
    /// What leaked ("secret value (base64)", …).
    pub what: Vec<String>,
    /// The line with every secret replaced by `«what»`, shortened.
    pub masked: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.source,
            self.line,
            self.what.join(", "),
            self.masked
        )
    }
}

impl LeakScanner {
    /// A scanner for every form of every secret of at least
    /// [`MIN_SECRET_LEN`] bytes.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a SeenSecret>) -> Self {
        let mut seen = BTreeSet::new();
        let mut needles = Vec::new();
        for secret in secrets {
            if secret.value.len() < MIN_SECRET_LEN {
                continue;
            }
            for (form, bytes) in forms(&secret.value) {
                if bytes.len() >= MIN_SECRET_LEN && seen.insert(bytes.clone()) {
                    needles.push(Needle {
                        bytes,
                        label: format!("{} ({form})", secret.kind.label()),
                    });
                }
            }
        }
        let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut filter = vec![0u64; (1 << FILTER_BITS) / 64];
        for (i, needle) in needles.iter().enumerate() {
            let key = key_at(&needle.bytes, 0);
            index.entry(key).or_default().push(i);
            let b = bucket(key);
            filter[b / 64] |= 1 << (b % 64);
        }
        Self {
            needles,
            index,
            filter,
        }
    }

    /// How many strings are searched for.
    pub fn len(&self) -> usize {
        self.needles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Every occurrence of every needle in `text`, by start offset.
    pub fn find(&self, text: &[u8]) -> Vec<Hit> {
        let mut hits = Vec::new();
        if self.needles.is_empty() || text.len() < MIN_SECRET_LEN {
            return hits;
        }
        for at in 0..=text.len() - MIN_SECRET_LEN {
            let key = key_at(text, at);
            let b = bucket(key);
            if self.filter[b / 64] & (1 << (b % 64)) == 0 {
                continue;
            }
            let Some(candidates) = self.index.get(&key) else {
                continue;
            };
            for &i in candidates {
                let needle = &self.needles[i].bytes;
                if text[at..].starts_with(needle) {
                    hits.push(Hit {
                        start: at,
                        end: at + needle.len(),
                        needle: i,
                    });
                }
            }
        }
        hits
    }

    /// Does `text` contain any secret?
    pub fn contains_secret(&self, text: &str) -> bool {
        !self.find(text.as_bytes()).is_empty()
    }

    /// `text` with every secret replaced by `«what»`.
    pub fn mask(&self, text: &str) -> String {
        self.mask_hits(text, &self.find(text.as_bytes()))
    }

    fn mask_hits(&self, text: &str, hits: &[Hit]) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        let mut i = 0;
        while i < hits.len() {
            let start = hits[i].start.max(pos);
            let mut end = hits[i].end;
            let label = &self.needles[hits[i].needle].label;
            i += 1;
            while i < hits.len() && hits[i].start < end {
                end = end.max(hits[i].end);
                i += 1;
            }
            if end <= pos {
                continue;
            }
            out.extend_from_slice(&bytes[pos..start]);
            out.extend_from_slice(format!("«{label}»").as_bytes());
            pos = end;
        }
        out.extend_from_slice(&bytes[pos..]);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Every line of `text` that holds a secret, masked and shortened.
    pub fn scan(&self, source: &str, text: &str) -> Vec<Leak> {
        let hits = self.find(text.as_bytes());
        let mut leaks: Vec<Leak> = Vec::new();
        let mut i = 0;
        while i < hits.len() {
            let line_start = text[..hits[i].start].rfind('\n').map_or(0, |p| p + 1);
            let line_end = text[hits[i].start..]
                .find('\n')
                .map_or(text.len(), |p| hits[i].start + p);
            let mut in_line = Vec::new();
            while i < hits.len() && hits[i].start < line_end {
                let mut hit = hits[i];
                hit.start -= line_start;
                hit.end = hit.end.min(line_end) - line_start;
                in_line.push(hit);
                i += 1;
            }
            let mut what: Vec<String> = in_line
                .iter()
                .map(|h| self.needles[h.needle].label.clone())
                .collect();
            what.sort();
            what.dedup();
            let line = &text[line_start..line_end];
            leaks.push(Leak {
                source: source.to_owned(),
                line: text[..line_start].matches('\n').count() + 1,
                what,
                masked: shorten(&self.mask_hits(line, &in_line), 600),
            });
        }
        leaks
    }
}

/// At most about `max` bytes of `line`, around its first mask.
fn shorten(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let focus = line.find('«').unwrap_or(0);
    let mut start = focus.saturating_sub(max / 3);
    while !line.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + max).min(line.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        &line[start..end],
        if end < line.len() { "…" } else { "" }
    )
}

/// The forms a secret may take in text, named.
fn forms(value: &str) -> Vec<(&'static str, Vec<u8>)> {
    let raw = value.as_bytes();
    let mut out = vec![("plain", raw.to_vec())];
    // Base64 of the value alone or inside a larger encoded text: at each of
    // the three byte alignments, the characters that depend only on it.
    for shift in 0..3 {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(raw);
        let encoded = STANDARD_NO_PAD.encode(&padded);
        let skip = [0, 2, 3][shift];
        let keep = if padded.len() % 3 == 0 {
            encoded.len()
        } else {
            encoded.len() - 1
        };
        if keep > skip {
            let core = &encoded[skip..keep];
            out.push(("base64", core.as_bytes().to_vec()));
            let url: String = core
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            out.push(("base64url", url.into_bytes()));
        }
    }
    // `{:?}` of the bytes (`[83, 113, …]`) and of `bytes::Bytes` (`b"…"`).
    let list = format!("{raw:?}");
    out.push((
        "byte list",
        list.trim_matches(['[', ']']).as_bytes().to_vec(),
    ));
    out.push(("byte string", raw.escape_ascii().to_string().into_bytes()));
    let hex = crate::util::hex(raw);
    out.push(("hex", hex.to_ascii_uppercase().into_bytes()));
    out.push(("hex", hex.into_bytes()));
    out.push(("escaped", value.escape_debug().to_string().into_bytes()));
    out.push(("escaped", value.escape_default().to_string().into_bytes()));
    if let Ok(json) = serde_json::to_string(value) {
        out.push(("JSON", json.trim_matches('"').as_bytes().to_vec()));
    }
    out.push((
        "percent-encoded",
        crate::util::percent_encode(value).into_bytes(),
    ));
    out.push((
        "form-encoded",
        form_urlencoded::byte_serialize(raw)
            .collect::<String>()
            .into_bytes(),
    ));
    // A JWT: its signature alone proves possession.
    let parts: Vec<&str> = value.split('.').collect();
    if parts.len() == 3 && value.starts_with("eyJ") {
        out.push(("JWT signature", parts[2].as_bytes().to_vec()));
        if let Ok(bytes) = URL_SAFE_NO_PAD.decode(parts[2]) {
            out.push(("JWT signature, hex", crate::util::hex(&bytes).into_bytes()));
        }
    }
    // PEM: each line of a private key's body (a certificate is public).
    let mut in_private = false;
    for line in value.lines() {
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            in_private = label.contains("PRIVATE KEY");
        } else if line.starts_with("-----END ") {
            in_private = false;
        } else if in_private && line.len() >= 16 {
            out.push(("PEM private key line", line.as_bytes().to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner(values: &[&str]) -> LeakScanner {
        let secrets: Vec<SeenSecret> = values
            .iter()
            .map(|v| SeenSecret::new(SecretKind::SecretValue, *v))
            .collect();
        LeakScanner::new(&secrets)
    }

    #[test]
    fn finds_plain_base64_hex_and_escaped_forms() {
        let s = scanner(&["Sql-Passw0rd-from-kv-demo", "two\nlines \"quoted\""]);
        assert!(s.contains_secret("value=Sql-Passw0rd-from-kv-demo."));
        let b64 = STANDARD_NO_PAD.encode("Sql-Passw0rd-from-kv-demo");
        assert!(s.contains_secret(&format!("data: {b64}==")));
        // Inside a larger base64 text, at any alignment.
        for prefix in ["", "a", "ab", "abc"] {
            let inner = STANDARD_NO_PAD.encode(format!("{prefix}Sql-Passw0rd-from-kv-demo!"));
            assert!(s.contains_secret(&inner), "{prefix:?}");
        }
        assert!(s.contains_secret(&crate::util::hex(b"Sql-Passw0rd-from-kv-demo")));
        assert!(s.contains_secret(r#"msg="two\nlines \"quoted\"""#));
        let bytes = format!("{:?}", b"Sql-Passw0rd-from-kv-demo".to_vec());
        assert!(s.contains_secret(&format!("contents: {bytes}")));
        assert!(s.contains_secret(&format!("b\"{}\"", b"two\nlines \"quoted\"".escape_ascii())));
        assert!(!s.contains_secret("Sql-Passw0rd-from-kv-dem0"));
    }

    #[test]
    fn short_values_are_not_searched() {
        let s = scanner(&["demo", "1234567"]);
        assert!(s.is_empty());
        assert!(!s.contains_secret("demo 1234567"));
    }

    #[test]
    fn reports_each_line_masked() {
        let s = scanner(&["hunter2-hunter2"]);
        let text = "fine\nleak: hunter2-hunter2 and hunter2-hunter2\nfine\n";
        let leaks = s.scan("log", text);
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].line, 2);
        assert_eq!(leaks[0].what, ["secret value (plain)"]);
        assert!(!leaks[0].masked.contains("hunter2"), "{}", leaks[0].masked);
        assert_eq!(
            leaks[0].masked,
            "leak: «secret value (plain)» and «secret value (plain)»"
        );
        assert!(!format!("{:?}", leaks[0]).contains("hunter2-hunter2"));
    }

    #[test]
    fn jwt_signatures_and_private_key_lines() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVzLW9mLXRoZS10b2tlbg";
        let pem = pem_block("PRIVATE KEY", &[7u8; 120]);
        let s = LeakScanner::new(&[
            SeenSecret::new(SecretKind::AccessToken, token),
            SeenSecret::new(SecretKind::PrivateKey, pem.clone()),
        ]);
        assert!(s.contains_secret("sig=c2lnbmF0dXJlLWJ5dGVzLW9mLXRoZS10b2tlbg"));
        // The header alone is no secret.
        assert!(!s.contains_secret("eyJhbGciOiJSUzI1NiJ9"));
        let line = pem.lines().nth(1).unwrap();
        assert!(s.contains_secret(&format!("key line {line}")));
        assert!(!s.contains_secret("-----BEGIN PRIVATE KEY-----"));
    }
}
