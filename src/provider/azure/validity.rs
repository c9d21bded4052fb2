//! When a fetched object is valid: Key Vault's `nbf` and `exp` attributes,
//! and for a certificate (`objectType: cert`, only the leaf: Key Vault's
//! `cer`) or a certificate-backed secret (the PEM or PFX with its chain) the
//! chain's earliest `notAfter` and latest `notBefore`, each naming the
//! certificate (leaf first, as [`super::chain`] orders them).
//!
//! Only timestamps come out of here; a certificate that does not parse
//! gives no certificate validity (the attributes still count).

use base64::Engine as _;
use p12_keystore::Pkcs12Archive;
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use zeroize::Zeroizing;

use super::chain::order_chain;
use super::content::{CONTENT_TYPE_PEM, CONTENT_TYPE_PFX, Fetched, go_std_base64};
use crate::expiry::{CertificateValidity, Validity, which_certificate};

/// Key Vault's `attributes` of a version (Unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Attributes {
    /// Not valid before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Expires.
    #[serde(default)]
    pub exp: Option<i64>,
}

/// The validity of `version` of an object that returned `fetched` with
/// `attributes`.
pub fn validity(version: &str, attributes: Attributes, fetched: &Fetched) -> Validity {
    Validity {
        version: version.to_owned(),
        not_before: attributes.nbf,
        expires: attributes.exp,
        certificate: certificate_validity(fetched),
    }
}

/// The certificate chain's validity, for certificates and
/// certificate-backed secrets; `None` for anything else.
pub fn certificate_validity(fetched: &Fetched) -> Option<CertificateValidity> {
    match fetched {
        Fetched::Cert(der) => chain_validity(&[der.as_slice()]),
        Fetched::Secret(secret) if secret.kid.as_deref().is_some_and(|k| !k.is_empty()) => {
            let value = secret.value.as_ref()?;
            match secret.content_type.as_deref() {
                Some(CONTENT_TYPE_PEM) => {
                    let certs = pem_certificates(value.expose());
                    let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
                    chain_validity(&refs)
                }
                Some(CONTENT_TYPE_PFX) => {
                    let der = go_std_base64()
                        .decode(value.expose().replace(['\r', '\n'], ""))
                        .map(Zeroizing::new)
                        .ok()?;
                    let archive = Pkcs12Archive::from_pkcs12(&der, "").ok()?;
                    let refs: Vec<&[u8]> = archive.certs.iter().map(|c| c.cert.as_der()).collect();
                    chain_validity(&refs)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The chain validity of a file whose content is PEM with one or more
/// `CERTIFICATE` blocks (a bundle with a private key too), for providers
/// that report no attributes; `None` for anything else. Only the
/// certificates are decoded; nothing of the content is kept.
pub fn pem_file_validity(contents: &[u8]) -> Option<CertificateValidity> {
    let text = std::str::from_utf8(contents).ok()?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return None;
    }
    let certs = pem_certificates(text);
    let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
    chain_validity(&refs)
}

/// The DER of every `CERTIFICATE` block of a PEM text (private keys and
/// other blocks are skipped, never copied).
pub fn pem_certificates(text: &str) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body_start = start + BEGIN.len();
        let Some(len) = rest[body_start..].find(END) else {
            break;
        };
        let body: String = rest[body_start..body_start + len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push(der);
        }
        rest = &rest[body_start + len + END.len()..];
    }
    out
}

/// The earliest `notAfter` and latest `notBefore` of `certs`, positions
/// counted leaf first. `None` when there is none, or one does not parse.
pub fn chain_validity(certs: &[&[u8]]) -> Option<CertificateValidity> {
    if certs.is_empty() {
        return None;
    }
    let (order, _) = order_chain(certs);
    let mut out: Option<CertificateValidity> = None;
    for (position, &index) in order.iter().enumerate() {
        let cert = Certificate::from_der(certs[index]).ok()?;
        let validity = cert.tbs_certificate().validity();
        let not_before = unix(validity.not_before.to_unix_duration());
        let not_after = unix(validity.not_after.to_unix_duration());
        let name = which_certificate(position, order.len());
        match &mut out {
            None => {
                out = Some(CertificateValidity {
                    not_before,
                    not_before_of: name.clone(),
                    not_after,
                    not_after_of: name,
                })
            }
            Some(v) => {
                if not_after < v.not_after {
                    v.not_after = not_after;
                    v.not_after_of = name.clone();
                }
                if not_before > v.not_before {
                    v.not_before = not_before;
                    v.not_before_of = name;
                }
            }
        }
    }
    out
}

fn unix(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use secretfs_secrets::SecretString;

    use super::*;
    use crate::provider::azure::content::FetchedSecret;

    // tests/fixtures/azure/pki: root → intermediate → leaves, each made a
    // second after the one before, all for 36,500 days.
    const LEAF_RSA: &[u8] = include_bytes!("../../../tests/fixtures/azure/input/cert-leaf-rsa.der");
    const PFX_CHAIN: &str =
        include_str!("../../../tests/fixtures/azure/input/pfx-rsa-chain.pfx.b64");
    const PEM_FILE: &str = include_str!("../../../tests/fixtures/azure/input/pem-file-rsa.pem");
    const LEAF_NOT_BEFORE: i64 = 1_795_707_511;
    const LEAF_NOT_AFTER: i64 = 4_949_307_511;
    const ROOT_NOT_AFTER: i64 = 4_949_307_509;

    fn backed(value: &str, content_type: &str, kid: Option<&str>) -> Fetched {
        Fetched::Secret(FetchedSecret {
            value: Some(SecretString::from(value)),
            content_type: Some(content_type.into()),
            kid: kid.map(str::to_owned),
        })
    }

    const KID: Option<&str> = Some("https://kv.vault.azure.net/keys/web/1");

    #[test]
    fn a_cert_objects_validity_is_its_leafs() {
        let v = validity(
            "v1",
            Attributes {
                nbf: Some(5),
                exp: Some(LEAF_NOT_AFTER + 1),
            },
            &Fetched::Cert(LEAF_RSA.to_vec()),
        );
        let cert = v.certificate.clone().unwrap();
        assert_eq!(
            (cert.not_before, cert.not_after, cert.not_after_of.as_str()),
            (LEAF_NOT_BEFORE, LEAF_NOT_AFTER, "leaf")
        );
        let until = v.expires_at().unwrap();
        assert_eq!(
            (until.at, until.source.as_str()),
            (LEAF_NOT_AFTER, "certificate notAfter (leaf)")
        );
        assert_eq!(
            (v.not_before, v.expires),
            (Some(5), Some(LEAF_NOT_AFTER + 1))
        );
    }

    #[test]
    fn a_chain_gives_its_earliest_not_after_and_names_the_certificate() {
        // The PFX stores leaf, root, intermediate; ordered leaf first, the
        // root (made first) expires first.
        let cert = certificate_validity(&backed(PFX_CHAIN, CONTENT_TYPE_PFX, KID)).unwrap();
        assert_eq!(cert.not_after, ROOT_NOT_AFTER);
        assert_eq!(cert.not_after_of, "chain certificate 3 of 3");
        assert_eq!(
            (cert.not_before, cert.not_before_of.as_str()),
            (LEAF_NOT_BEFORE, "leaf")
        );
        // The PEM form: the key is skipped, the certificates counted.
        let certs = pem_certificates(PEM_FILE);
        assert!(!certs.is_empty());
        assert_eq!(certs[0], LEAF_RSA);
        let pem = certificate_validity(&backed(PEM_FILE, CONTENT_TYPE_PEM, KID)).unwrap();
        assert_eq!(pem.not_before, LEAF_NOT_BEFORE);
        assert!(pem.not_after <= LEAF_NOT_AFTER);
    }

    #[test]
    fn only_certificates_and_certificate_backed_secrets_have_one() {
        // A plain secret holding PEM text is not a certificate.
        assert_eq!(
            certificate_validity(&backed(PEM_FILE, CONTENT_TYPE_PEM, None)),
            None
        );
        assert_eq!(
            certificate_validity(&backed("not base64!", CONTENT_TYPE_PFX, KID)),
            None
        );
        assert_eq!(chain_validity(&[b"not a certificate".as_slice()]), None);
        assert_eq!(chain_validity(&[]), None);
        assert_eq!(certificate_validity(&Fetched::Cert(Vec::new())), None);
    }

    #[test]
    fn a_pem_file_gives_its_chains_validity_and_other_files_none() {
        // Key and three certificates: the key is skipped.
        let pem = pem_file_validity(PEM_FILE.as_bytes()).unwrap();
        assert_eq!(
            Some(pem.clone()),
            certificate_validity(&backed(PEM_FILE, CONTENT_TYPE_PEM, KID))
        );
        assert_eq!(
            (pem.not_before, pem.not_before_of.as_str()),
            (LEAF_NOT_BEFORE, "leaf")
        );
        // The leaf alone.
        let start = PEM_FILE.find("-----BEGIN CERTIFICATE-----").unwrap();
        let end = PEM_FILE[start..].find("-----END CERTIFICATE-----").unwrap()
            + start
            + "-----END CERTIFICATE-----".len();
        let leaf = pem_file_validity(&PEM_FILE.as_bytes()[start..end]).unwrap();
        assert_eq!(
            (leaf.not_after, leaf.not_after_of.as_str()),
            (LEAF_NOT_AFTER, "leaf")
        );
        // Not certificates: a key alone, text, binary, a broken block.
        assert_eq!(pem_file_validity(&PEM_FILE.as_bytes()[..start]), None);
        assert_eq!(pem_file_validity(b"password"), None);
        assert_eq!(pem_file_validity(LEAF_RSA), None);
        assert_eq!(
            pem_file_validity(
                b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
            ),
            None
        );
    }
}
