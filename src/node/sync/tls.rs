//! `kubernetes.io/tls` Secrets: `tls.crt` and `tls.key` from a mounted PEM
//! (key and chain) or PKCS#12 file, re-encoded as upstream does: every
//! `CERTIFICATE` block in order for `tls.crt`; the private key as PKCS#1
//! `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY` for `tls.key`.

use std::sync::Arc;

use base64::Engine;
use der::{Decode, Encode};
use secretfs_secrets::SecretBytes;
use zeroize::Zeroizing;

use crate::provider::azure::pem;

/// The two halves of a TLS Secret.
pub struct TlsPair {
    pub certificates: Arc<SecretBytes>,
    pub key: Option<Arc<SecretBytes>>,
}

/// Splits `file` (PEM text, or a PKCS#12 file as binary or base64) into
/// certificates and key.
pub fn split(file: &[u8]) -> Result<TlsPair, String> {
    match std::str::from_utf8(file) {
        Ok(text) if text.contains("-----BEGIN ") => split_pem(text),
        _ => {
            // PFX: the base64 text Key Vault stores, or binary.
            let encoded = match std::str::from_utf8(file) {
                Ok(text) => Zeroizing::new(text.trim().to_owned()),
                Err(_) => Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(file)),
            };
            let pem =
                crate::provider::azure::pfx::pfx_to_pem(&encoded).map_err(|e| e.to_string())?;
            let text = std::str::from_utf8(pem.pem.expose()).map_err(|e| e.to_string())?;
            split_pem(text)
        }
    }
}

fn split_pem(text: &str) -> Result<TlsPair, String> {
    let mut certificates = String::new();
    let mut key: Option<Zeroizing<Vec<u8>>> = None;
    for block in blocks(text) {
        match block.label.as_str() {
            "CERTIFICATE" => certificates.push_str(&block.text),
            "PRIVATE KEY" if key.is_none() => key = Some(pkcs8_to_traditional(&block.der)?),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" if key.is_none() => {
                key = Some(Zeroizing::new(block.text.into_bytes()))
            }
            _ => {}
        }
    }
    if certificates.is_empty() {
        return Err("no CERTIFICATE block in the file".into());
    }
    Ok(TlsPair {
        certificates: Arc::new(SecretBytes::new(certificates.into_bytes())),
        key: key.map(|k| Arc::new(SecretBytes::from_slice(&k))),
    })
}

struct Block {
    label: String,
    text: String,
    der: Zeroizing<Vec<u8>>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = after[..label_end].to_owned();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let block_text = &rest[start..start + end + end_marker.len()];
        let body: String = block_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .unwrap_or_default(),
        );
        out.push(Block {
            label,
            text: format!("{block_text}\n"),
            der,
        });
        rest = &rest[start + end + end_marker.len()..];
    }
    out
}

/// PKCS#8 → PKCS#1 (RSA) or SEC1 (EC) PEM, as upstream's `tls.key`.
fn pkcs8_to_traditional(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let info = pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|e| format!("private key: {e}"))?;
    let rsa = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    let ec = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    let private_key = info.private_key.as_bytes();
    if info.algorithm.oid == rsa {
        Ok(Zeroizing::new(pem::encode("RSA PRIVATE KEY", private_key)))
    } else if info.algorithm.oid == ec {
        // SEC1 inside PKCS#8 may omit the curve: put it back, as Go's
        // x509.MarshalECPrivateKey does.
        let mut key = sec1::EcPrivateKey::from_der(private_key)
            .map_err(|e| format!("EC private key: {e}"))?;
        if key.parameters.is_none() {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| format!("EC curve: {e}"))?;
            key.parameters = Some(sec1::EcParameters::NamedCurve(curve));
        }
        let der = Zeroizing::new(key.to_der().map_err(|e| format!("EC private key: {e}"))?);
        Ok(Zeroizing::new(pem::encode("EC PRIVATE KEY", &der)))
    } else {
        Err(format!(
            "private key algorithm {} is not supported for kubernetes.io/tls (RSA or EC only)",
            info.algorithm.oid
        ))
    }
}
