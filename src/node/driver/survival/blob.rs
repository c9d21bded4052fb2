//! The secret half of a volume as the keeper holds it: the files' bytes,
//! the pod's tokens and the publish secrets, in one buffer ("SFK1").

use std::collections::BTreeMap;
use std::sync::Arc;

use secretfs_secrets::{SecretBytes, SecretMap, SecretString};
use zeroize::Zeroizing;

use crate::node::driver::Published;

pub(super) const BLOB_MAGIC: &[u8; 4] = b"SFK1";

/// The secret half of a volume, as the keeper holds it.
pub(super) struct Secrets {
    pub(super) tokens: Option<SecretString>,
    pub(super) secrets: SecretMap,
    pub(super) files: BTreeMap<String, Arc<SecretBytes>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Encodes the secret half of a published volume (see [`encode_blob`]).
pub(super) fn encode_secrets(p: &Published) -> Zeroizing<Vec<u8>> {
    let tokens = p
        .request
        .service_account_tokens
        .as_ref()
        .map(|t| t.expose().as_bytes());
    let secrets: Vec<(&str, &str)> = p.request.secrets.expose().collect();
    let files: Vec<(&str, &[u8])> = p
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.contents.expose()))
        .collect();
    encode_blob(tokens, &secrets, &files)
}

/// Encodes the secret half into one buffer allocated at its final size
/// (no reallocation leaves a copy behind): magic, tokens (`u32::MAX` length
/// when absent), secrets as key/value pairs, files as path/bytes pairs;
/// every field a little-endian `u32` length and its bytes.
pub(super) fn encode_blob(
    tokens: Option<&[u8]>,
    secrets: &[(&str, &str)],
    files: &[(&str, &[u8])],
) -> Zeroizing<Vec<u8>> {
    let size = 4
        + 4
        + tokens.map_or(0, <[u8]>::len)
        + 4
        + secrets
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
        + 4
        + files
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    out.extend_from_slice(BLOB_MAGIC);
    match tokens {
        Some(t) => field(&mut out, t),
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    out.extend_from_slice(&(secrets.len() as u32).to_le_bytes());
    for (k, v) in secrets {
        field(&mut out, k.as_bytes());
        field(&mut out, v.as_bytes());
    }
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (k, v) in files {
        field(&mut out, k.as_bytes());
        field(&mut out, v);
    }
    debug_assert_eq!(out.len(), size);
    out
}

pub(super) fn decode_secrets(blob: &[u8]) -> Result<Secrets, &'static str> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
            if self.0.len() < n {
                return Err("truncated");
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u32(&mut self) -> Result<u32, &'static str> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| "truncated")?,
            ))
        }
        fn field(&mut self) -> Result<&'a [u8], &'static str> {
            let n = self.u32()? as usize;
            self.take(n)
        }
        fn text(&mut self) -> Result<String, &'static str> {
            String::from_utf8(self.field()?.to_vec()).map_err(|_| "not UTF-8")
        }
    }
    let mut r = Reader(blob);
    if r.take(4)? != BLOB_MAGIC {
        return Err("unknown format");
    }
    let tokens = match r.u32()? {
        u32::MAX => None,
        n => Some(SecretString::new(
            String::from_utf8(r.take(n as usize)?.to_vec()).map_err(|_| "not UTF-8")?,
        )),
    };
    let mut pairs = Vec::new();
    for _ in 0..r.u32()? {
        pairs.push((r.text()?, r.text()?));
    }
    let secrets = SecretMap::new(pairs);
    let mut files = BTreeMap::new();
    for _ in 0..r.u32()? {
        let path = r.text()?;
        files.insert(path, Arc::new(SecretBytes::from_slice(r.field()?)));
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Secrets {
        tokens,
        secrets,
        files,
    })
}
