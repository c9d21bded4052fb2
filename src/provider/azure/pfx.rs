//! PFX → PEM for certificate-backed secrets with `contentType:
//! application/x-pkcs12` and `objectFormat: pem`, as upstream's
//! `decodePKCS12`: decode the password-less PFX, write every private key as
//! PKCS#8 `PRIVATE KEY` first (in bag order), then the certificates ordered
//! leaf → root (see [`super::chain`]).
//!
//! Keys are re-encoded the way Go's `x509.MarshalPKCS8PrivateKey` does, since
//! upstream parses each key and marshals it again:
//! - RSA: version 0, `rsaEncryption` with NULL parameters, the PKCS#1 key
//!   re-encoded in DER; PKCS#8 attributes and public key dropped.
//! - EC (P-256/384/521): `id-ecPublicKey` with the named curve, and an inner
//!   SEC1 key of version 1 with the private scalar padded to the curve size,
//!   no parameters, and the uncompressed public key.
//!
//! The EC public key is derived from the private scalar, as Go does (the
//! stored one is ignored, and a key stored without one still works). Other
//! key types fail, as upstream's `ToPEM` does.

use base64::Engine as _;
use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use der::{Decode as _, Encode as _};
use p12_keystore::Pkcs12Archive;
use pkcs8::PrivateKeyInfoRef;
use secretfs_secrets::SecretBytes;
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use super::chain::{ChainWarning, order_chain};
use super::content::{ContentError, go_std_base64};
use super::pem;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// P-256 (prime256v1).
pub(crate) const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// P-384.
pub(crate) const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// P-521.
pub(crate) const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The PEM text of a PFX, and a warning when the chain order was kept.
#[derive(Debug)]
pub struct PfxPem {
    /// Keys then certificates, PEM.
    pub pem: SecretBytes,
    /// Set when the certificates could not be ordered leaf → root.
    pub chain_warning: Option<ChainWarning>,
}

/// Converts the stored value (standard base64 of a password-less PFX) to PEM.
pub fn pfx_to_pem(value: &str) -> Result<PfxPem, ContentError> {
    let der = go_std_base64()
        .decode(value.replace(['\r', '\n'], ""))
        .map(Zeroizing::new)
        .map_err(|_| ContentError::PfxBase64)?;
    let archive =
        Pkcs12Archive::from_pkcs12(&der, "").map_err(|e| ContentError::Pfx(e.to_string()))?;
    let mut out = Zeroizing::new(Vec::new());
    for (i, key) in archive.keys.iter().enumerate() {
        let pkcs8 = canonical_pkcs8(key.key.as_der())
            .map_err(|reason| ContentError::PfxKey { index: i, reason })?;
        pem::encode_into(&mut out, pem::PRIVATE_KEY, &pkcs8);
    }
    let certs: Vec<&[u8]> = archive.certs.iter().map(|c| c.cert.as_der()).collect();
    let (order, chain_warning) = order_chain(&certs);
    for i in order {
        pem::encode_into(&mut out, pem::CERTIFICATE, certs[i]);
    }
    Ok(PfxPem {
        pem: SecretBytes::new(std::mem::take(&mut *out)),
        chain_warning,
    })
}

fn der_err(what: &str) -> impl Fn(der::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Re-encodes a PKCS#8 private key the way Go's `MarshalPKCS8PrivateKey` does.
pub fn canonical_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let info = PrivateKeyInfoRef::from_der(der).map_err(der_err("not a PKCS#8 private key"))?;
    let inner = info.private_key.as_bytes();
    let (params, inner) = match info.algorithm.oid {
        RSA_ENCRYPTION => {
            let key = pkcs1::RsaPrivateKeyRef::from_der(inner)
                .map_err(der_err("not a PKCS#1 RSA private key"))?;
            (
                None,
                Zeroizing::new(key.to_der().map_err(der_err("RSA key"))?),
            )
        }
        EC_PUBLIC_KEY => {
            let key = sec1::EcPrivateKey::from_der(inner)
                .map_err(der_err("not a SEC1 EC private key"))?;
            let outer_curve = match info.algorithm.parameters {
                Some(p) => Some(
                    p.decode_as::<ObjectIdentifier>()
                        .map_err(der_err("EC parameters are not a named curve"))?,
                ),
                None => None,
            };
            let inner_curve = key.parameters.and_then(|p| p.named_curve());
            let curve = outer_curve.or(inner_curve).ok_or("EC key names no curve")?;
            let (size, alg) = match curve {
                SECP256R1 => (32, &aws_lc_rs::agreement::ECDH_P256),
                SECP384R1 => (48, &aws_lc_rs::agreement::ECDH_P384),
                SECP521R1 => (66, &aws_lc_rs::agreement::ECDH_P521),
                other => {
                    return Err(format!(
                        "EC curve {other} is not supported: use P-256, P-384 or P-521"
                    ));
                }
            };
            let scalar = strip_leading_zeros(key.private_key);
            if scalar.len() > size {
                return Err("EC private key is longer than its curve allows".into());
            }
            let mut padded = Zeroizing::new(vec![0u8; size]);
            padded[size - scalar.len()..].copy_from_slice(scalar);
            // Go derives the public key from the private scalar and ignores the
            // stored one; so do we (this also covers keys stored without it).
            let public_key = aws_lc_rs::agreement::PrivateKey::from_private_key(alg, &padded)
                .ok()
                .and_then(|k| k.compute_public_key().ok())
                .ok_or("EC private key is not a valid scalar for its curve")?;
            let canonical = sec1::EcPrivateKey {
                private_key: &padded,
                parameters: None,
                public_key: Some(public_key.as_ref()),
            };
            let curve_der = curve.to_der().map_err(der_err("EC curve"))?;
            (
                Some(curve_der),
                Zeroizing::new(canonical.to_der().map_err(der_err("EC key"))?),
            )
        }
        other => {
            return Err(format!(
                "private key algorithm {other} is not supported: only RSA and EC (P-256, P-384, P-521) keys are"
            ));
        }
    };
    let parameters = match &params {
        Some(curve_der) => AnyRef::from_der(curve_der).map_err(der_err("EC curve"))?,
        None => AnyRef::NULL,
    };
    let octets = OctetStringRef::new(&inner).map_err(der_err("key"))?;
    let out = PrivateKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: info.algorithm.oid,
            parameters: Some(parameters),
        },
        private_key: octets,
        public_key: None,
    };
    Ok(Zeroizing::new(out.to_der().map_err(der_err("PKCS#8"))?))
}

pub(crate) fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}
