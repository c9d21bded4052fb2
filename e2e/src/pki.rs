//! Key material of vault objects: key pairs, public JWKs, self-signed
//! certificates, password-less PFX and PEM bundles.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, RsaKeySize,
};
use serde::Serialize;

use crate::error::EmulatorError;
use crate::seed::KeyType;
use crate::util::{b64_std, b64url, rsa_public_components};

/// How to make a key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    Rsa { bits: u32 },
    Ec { curve: Curve },
}

/// Supported EC curves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

impl KeySpec {
    /// Build a spec from seed fields; defaults are RSA-2048 and P-256.
    pub fn from_seed(
        kty: KeyType,
        key_size: Option<u32>,
        crv: Option<&str>,
    ) -> Result<Self, EmulatorError> {
        match kty {
            KeyType::Rsa => {
                let bits = key_size.unwrap_or(2048);
                if ![2048, 3072, 4096].contains(&bits) {
                    return Err(EmulatorError::Seed(format!(
                        "unsupported RSA key size {bits}"
                    )));
                }
                Ok(KeySpec::Rsa { bits })
            }
            KeyType::Ec => {
                let curve = match crv.unwrap_or("P-256") {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    other => {
                        return Err(EmulatorError::Seed(format!("unsupported EC curve {other}")));
                    }
                };
                Ok(KeySpec::Ec { curve })
            }
        }
    }

    /// Generate a fresh key pair.
    pub fn generate(self) -> Result<KeyPair, EmulatorError> {
        Ok(match self {
            KeySpec::Rsa { bits } => {
                let size = match bits {
                    3072 => RsaKeySize::_3072,
                    4096 => RsaKeySize::_4096,
                    _ => RsaKeySize::_2048,
                };
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)?
            }
            KeySpec::Ec { curve: Curve::P256 } => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?
            }
            KeySpec::Ec { curve: Curve::P384 } => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?
            }
        })
    }
}

/// The public half of a key as Key Vault's JsonWebKey: RSA `n`/`e` or EC
/// `crv`/`x`/`y`, base64url without padding. Never private parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl PublicJwk {
    /// The `key_ops` Key Vault reports for software keys of this type.
    pub fn key_ops(&self) -> &'static [&'static str] {
        if self.kty == "RSA" {
            &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
            ]
        } else {
            &["sign", "verify"]
        }
    }
}

/// The public JWK of `key`.
pub fn public_jwk(key: &KeyPair) -> Result<PublicJwk, EmulatorError> {
    let raw = key.public_key_raw();
    let alg = key.algorithm();
    let curve = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        Some(Curve::P256)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Some(Curve::P384)
    } else {
        None
    };
    match curve {
        Some(curve) => {
            let len = curve.coordinate_len();
            if raw.len() != 1 + 2 * len || raw[0] != 0x04 {
                return Err(EmulatorError::Seed(
                    "unexpected EC public key encoding".into(),
                ));
            }
            Ok(PublicJwk {
                kty: "EC",
                n: None,
                e: None,
                crv: Some(curve.jwk_name()),
                x: Some(b64url(&raw[1..1 + len])),
                y: Some(b64url(&raw[1 + len..])),
            })
        }
        None => {
            let (n, e) = rsa_public_components(raw)
                .ok_or_else(|| EmulatorError::Seed("unsupported key algorithm".into()))?;
            Ok(PublicJwk {
                kty: "RSA",
                n: Some(b64url(&n)),
                e: Some(b64url(&e)),
                crv: None,
                x: None,
                y: None,
            })
        }
    }
}

/// A certificate version's material: the leaf certificate and its private key.
pub struct CertificateMaterial {
    /// DER of the leaf certificate.
    pub der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8: Vec<u8>,
    pub jwk: PublicJwk,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for CertificateMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateMaterial")
            .field("subject", &self.subject)
            .field("der_len", &self.der.len())
            .field("key_pkcs8", &"<redacted>")
            .finish()
    }
}

impl CertificateMaterial {
    /// Issue a self-signed certificate (issuer `Self`, as Key Vault does).
    pub fn self_signed(
        subject: &str,
        dns_names: &[String],
        spec: KeySpec,
        validity_months: u32,
    ) -> Result<Self, EmulatorError> {
        Self::self_signed_for_days(subject, dns_names, spec, 30 * validity_months.max(1))
    }

    /// [`Self::self_signed`], valid for `days` (at least 1) from now.
    pub fn self_signed_for_days(
        subject: &str,
        dns_names: &[String],
        spec: KeySpec,
        days: u32,
    ) -> Result<Self, EmulatorError> {
        let key = spec.generate()?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        params.distinguished_name = parse_subject(subject);
        let now = time::OffsetDateTime::now_utc();
        let not_before = now - time::Duration::minutes(5);
        let not_after = now + time::Duration::days(i64::from(days.max(1)));
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            der: cert.der().to_vec(),
            key_pkcs8: key.serialize_der(),
            jwk: public_jwk(&key)?,
            subject: subject.to_string(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        })
    }

    /// `x5t`: SHA-1 thumbprint of the DER, base64url without padding.
    pub fn x5t(&self) -> String {
        b64url(self.sha1().as_ref())
    }

    /// SHA-1 thumbprint bytes.
    pub fn sha1(&self) -> aws_lc_rs::digest::Digest {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der)
    }

    /// The certificate in standard base64 (`cer`).
    pub fn cer_base64(&self) -> String {
        b64_std(&self.der)
    }

    /// PEM bundle as Key Vault serves it: the private key (PKCS#8), then the
    /// certificate chain.
    pub fn pem_bundle(&self) -> String {
        let mut out = pem_block("PRIVATE KEY", &self.key_pkcs8);
        out.push_str(&pem_block("CERTIFICATE", &self.der));
        out
    }

    /// The backing secret's PEM of a non-exportable certificate: Key
    /// Vault leaves the private key out, so only the certificate is there.
    pub fn pem_certificate_only(&self) -> String {
        pem_block("CERTIFICATE", &self.der)
    }

    /// The backing secret's PKCS#12 of a non-exportable certificate: the
    /// certificate only, no key bag (empty password, before base64).
    pub fn pfx_certificate_only(&self) -> Result<Vec<u8>, EmulatorError> {
        let cert = p12_keystore::Certificate::from_der(&self.der)
            .map_err(|e| EmulatorError::Pkcs12(e.to_string()))?;
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("1", p12_keystore::KeyStoreEntry::Certificate(cert));
        store
            .writer("")
            .write()
            .map_err(|e| EmulatorError::Pkcs12(e.to_string()))
    }

    /// PKCS#12 with an empty password, as the backing secret of a
    /// `application/x-pkcs12` certificate holds it (before base64): the
    /// legacy form Key Vault serves, an HMAC-SHA-1 MAC and PKCS#12 PBE with
    /// SHA-1 and 3DES (the upstream Azure provider reads it with
    /// golang.org/x/crypto/pkcs12, which reads no other).
    pub fn pfx(&self) -> Result<Vec<u8>, EmulatorError> {
        let cert = p12_keystore::Certificate::from_der(&self.der)
            .map_err(|e| EmulatorError::Pkcs12(e.to_string()))?;
        let key = p12_keystore::PrivateKey::from_der(&self.key_pkcs8)
            .map_err(|e| EmulatorError::Pkcs12(e.to_string()))?;
        let local_key_id = self.sha1().as_ref().to_vec();
        let chain = p12_keystore::PrivateKeyChain::new(local_key_id, key, vec![cert]);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("1", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        store
            .writer("")
            .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
            .write()
            .map_err(|e| EmulatorError::Pkcs12(e.to_string()))
    }
}

/// Parse `CN=a, O=b, OU=c, C=d, L=e, ST=f` into a distinguished name; an
/// unparsable subject becomes a CN.
fn parse_subject(subject: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for part in subject.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let ty = match k.trim().to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "C" => DnType::CountryName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            _ => continue,
        };
        dn.push(ty, v.trim());
    }
    if dn.iter().next().is_none() {
        dn.push(DnType::CommonName, subject);
    }
    dn
}

/// One PEM block with 64-character lines.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = b64_std(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::b64url_decode;

    #[test]
    fn rsa_jwk_has_n_and_aqab() {
        let key = KeySpec::Rsa { bits: 2048 }.generate().unwrap();
        let jwk = public_jwk(&key).unwrap();
        assert_eq!(jwk.kty, "RSA");
        assert_eq!(jwk.e.as_deref(), Some("AQAB"));
        assert_eq!(b64url_decode(jwk.n.as_deref().unwrap()).unwrap().len(), 256);
        assert!(jwk.crv.is_none() && jwk.x.is_none());
    }

    #[test]
    fn ec_jwk_has_coordinates() {
        let key = KeySpec::Ec { curve: Curve::P384 }.generate().unwrap();
        let jwk = public_jwk(&key).unwrap();
        assert_eq!(jwk.crv, Some("P-384"));
        assert_eq!(b64url_decode(jwk.x.as_deref().unwrap()).unwrap().len(), 48);
        assert_eq!(b64url_decode(jwk.y.as_deref().unwrap()).unwrap().len(), 48);
    }

    #[test]
    fn certificate_pem_bundle_and_pfx() {
        let m = CertificateMaterial::self_signed(
            "CN=unit.test",
            &["unit.test".to_string()],
            KeySpec::Ec { curve: Curve::P256 },
            12,
        )
        .unwrap();
        let pem = m.pem_bundle();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.contains("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(m.x5t().len(), 27);
        let pfx = m.pfx().unwrap();
        let back =
            p12_keystore::KeyStore::from_pkcs12(&pfx, "", p12_keystore::Pkcs12ImportPolicy::Strict)
                .unwrap();
        let (_, chain) = back.private_key_chain().unwrap();
        assert_eq!(chain.certs()[0].as_der(), m.der.as_slice());
    }

    /// Whether `needle` occurs in `haystack`.
    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Key Vault's PFX is the legacy PKCS#12 form: an HMAC-SHA-1 MAC and
    /// PKCS#12 password-based encryption with SHA-1 and 3DES, not PBES2 (AES)
    /// or a SHA-256 MAC. The upstream Azure provider decodes certificate-backed
    /// secrets with golang.org/x/crypto/pkcs12, which reads nothing else
    /// ("pkcs12: unknown digest algorithm: 2.16.840.1.101.3.4.2.1" otherwise),
    /// and that is its path against the real Key Vault.
    #[test]
    fn pfx_is_the_legacy_form_key_vault_serves() {
        let m = CertificateMaterial::self_signed(
            "CN=unit.test",
            &["unit.test".to_string()],
            KeySpec::Rsa { bits: 2048 },
            12,
        )
        .unwrap();
        let pfx = m.pfx().unwrap();
        // DER of the OIDs: sha1 (1.3.14.3.2.26), sha256 (2.16.840.1.101.3.4.2.1),
        // pbeWithSHAAnd3-KeyTripleDES-CBC (1.2.840.113549.1.12.1.3),
        // PBES2 (1.2.840.113549.1.5.13).
        let sha1 = [0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
        let sha256 = [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ];
        let pbe_3des = [
            0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03,
        ];
        let pbes2 = [
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d,
        ];
        assert!(contains(&pfx, &sha1), "no SHA-1 MAC");
        assert!(!contains(&pfx, &sha256), "a SHA-256 MAC or PRF");
        assert!(contains(&pfx, &pbe_3des), "no PBE-SHA1-3DES");
        assert!(!contains(&pfx, &pbes2), "PBES2 encryption");
    }
}
