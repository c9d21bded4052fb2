//! Imports of given material, as Key Vault's `import` operations: a
//! certificate from a PFX (base64) or a PEM bundle, served back verbatim as
//! its backing secret, and a key from a public JSON Web Key. Tests use them
//! to send fixed bytes (made by openssl, not by the emulator) over the wire.

use std::sync::Arc;

use crate::error::EmulatorError;
use crate::pki::{CertificateMaterial, Curve, KeySpec, PublicJwk, public_jwk};
use crate::seed::{CertificateImport, KeyImport};
use crate::store::{
    Attributes, CONTENT_TYPE_PEM, CONTENT_TYPE_PFX, CertificateVersion, KeyVersion, ObjectKind,
    SecretVersion, Store,
};
use crate::util::{b64_std_decode, b64url_decode, is_version_id, new_version_id, unix_now};

fn invalid(msg: impl Into<String>) -> EmulatorError {
    EmulatorError::Invalid(msg.into())
}

fn check_name(kind: ObjectKind, name: &str) -> Result<(), EmulatorError> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(format!(
            "{} name '{name}' must match ^[0-9a-zA-Z-]+$",
            kind.noun()
        )));
    }
    Ok(())
}

fn pick_version(requested: &Option<String>) -> Result<String, EmulatorError> {
    match requested {
        Some(v) if is_version_id(v) => Ok(v.clone()),
        Some(v) => Err(invalid(format!(
            "version '{v}' is not 32 lowercase hex characters"
        ))),
        None => Ok(new_version_id()),
    }
}

/// Parses a public JWK into the emulator's form, refusing private members.
pub fn parse_public_jwk(jwk: &serde_json::Value) -> Result<PublicJwk, EmulatorError> {
    let field = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        if jwk.get(private).is_some() {
            return Err(invalid(format!(
                "jwk.{private} is a private member; the emulator imports public keys only: remove d, p, q, dp, dq and qi"
            )));
        }
    }
    let b64 = |name: &str| -> Result<String, EmulatorError> {
        let value = field(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(format!("jwk.{name} is missing")))?;
        b64url_decode(value).ok_or_else(|| invalid(format!("jwk.{name} is not base64url")))?;
        Ok(value.to_string())
    };
    match field("kty") {
        Some("RSA") => Ok(PublicJwk {
            kty: "RSA",
            n: Some(b64("n")?),
            e: Some(b64("e")?),
            crv: None,
            x: None,
            y: None,
        }),
        Some("EC") => {
            let (crv, len) = match field("crv") {
                Some("P-256") => ("P-256", 32),
                Some("P-384") => ("P-384", 48),
                Some("P-521") => ("P-521", 66),
                other => {
                    return Err(invalid(format!(
                        "jwk.crv {other:?} is not supported: use P-256, P-384 or P-521"
                    )));
                }
            };
            let (x, y) = (b64("x")?, b64("y")?);
            for (name, value) in [("x", &x), ("y", &y)] {
                let got = b64url_decode(value).map_or(0, |b| b.len());
                if got != len {
                    return Err(invalid(format!(
                        "jwk.{name} of a {crv} key must be {len} bytes, not {got}"
                    )));
                }
            }
            Ok(PublicJwk {
                kty: "EC",
                n: None,
                e: None,
                crv: Some(crv),
                x: Some(x),
                y: Some(y),
            })
        }
        other => Err(invalid(format!(
            "jwk.kty {other:?} is not supported: use RSA or EC"
        ))),
    }
}

/// One DER element: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// What the import needs of a certificate: its validity (Unix seconds) and
/// the subjectPublicKey bits.
struct CertFacts {
    not_before: i64,
    not_after: i64,
    public_key: Vec<u8>,
}

fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let num = |i: usize| -> Option<u8> { rest.get(i..i + 2)?.parse().ok() };
    let month = time::Month::try_from(num(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, num(2)?).ok()?;
    let at = date.with_hms(num(4)?, num(6)?, num(8)?).ok()?;
    Some(at.assume_utc().unix_timestamp())
}

fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    let (_, _, rest) = tlv(rest)?; // serialNumber
    let (_, _, rest) = tlv(rest)?; // signature
    let (_, _, rest) = tlv(rest)?; // issuer
    let (_, validity, rest) = tlv(rest)?;
    let (_, _, rest) = tlv(rest)?; // subject
    let (_, spki, _) = tlv(rest)?;
    let (t1, nb, after) = tlv(validity)?;
    let (t2, na, _) = tlv(after)?;
    let (_, _, bits) = tlv(spki)?; // algorithm
    let (_, bits, _) = tlv(bits)?;
    Some(CertFacts {
        not_before: der_time(t1, nb)?,
        not_after: der_time(t2, na)?,
        public_key: bits.get(1..)?.to_vec(),
    })
}

/// The blocks of a PEM text with `label`, decoded.
fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>, EmulatorError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let stop = body
            .find(&end)
            .ok_or_else(|| invalid(format!("a {label} PEM block has no END line")))?;
        let b64: String = body[..stop].split_whitespace().collect();
        out.push(
            b64_std_decode(&b64)
                .ok_or_else(|| invalid(format!("a {label} PEM block is not base64")))?,
        );
        rest = &body[stop + end.len()..];
    }
    Ok(out)
}

/// What an import holds: its content type, the private key (PKCS#8 DER)
/// and the certificates (DER).
struct Parsed {
    content_type: String,
    key_pkcs8: Vec<u8>,
    certs: Vec<Vec<u8>>,
}

/// The private key and certificates of an import.
fn key_and_certs(import: &CertificateImport) -> Result<Parsed, EmulatorError> {
    let content_type = import
        .content_type
        .clone()
        .unwrap_or_else(|| CONTENT_TYPE_PFX.to_string());
    if content_type == CONTENT_TYPE_PFX {
        let pfx = b64_std_decode(import.value.trim()).ok_or_else(|| {
            invalid("the value of an application/x-pkcs12 import must be the base64 of a PFX")
        })?;
        let archive = p12_keystore::Pkcs12Archive::from_pkcs12(&pfx, "").map_err(|e| {
            EmulatorError::Pkcs12(format!(
                "the PFX cannot be read with an empty password ({e}); export it without a password"
            ))
        })?;
        let [key] = archive.keys.as_slice() else {
            return Err(invalid(format!(
                "the PFX must hold exactly one private key, not {}",
                archive.keys.len()
            )));
        };
        let certs = archive
            .certs
            .iter()
            .map(|c| c.cert.as_der().to_vec())
            .collect();
        Ok(Parsed {
            content_type,
            key_pkcs8: key.key.as_der().to_vec(),
            certs,
        })
    } else if content_type == CONTENT_TYPE_PEM {
        let keys = pem_blocks(&import.value, "PRIVATE KEY")?;
        let [key] = keys.as_slice() else {
            return Err(invalid(format!(
                "the PEM must hold exactly one PKCS#8 PRIVATE KEY block, not {} (convert with openssl pkey)",
                keys.len()
            )));
        };
        Ok(Parsed {
            content_type,
            key_pkcs8: key.clone(),
            certs: pem_blocks(&import.value, "CERTIFICATE")?,
        })
    } else {
        Err(invalid(format!(
            "certificate content type must be {CONTENT_TYPE_PFX} or {CONTENT_TYPE_PEM}"
        )))
    }
}

fn spec_of(jwk: &PublicJwk) -> KeySpec {
    match jwk.crv {
        Some("P-384") => KeySpec::Ec { curve: Curve::P384 },
        Some(_) => KeySpec::Ec { curve: Curve::P256 },
        None => {
            let n = jwk.n.as_deref().and_then(b64url_decode).unwrap_or_default();
            let significant = n.iter().skip_while(|b| **b == 0).count();
            KeySpec::Rsa {
                bits: u32::try_from(significant * 8).unwrap_or(0),
            }
        }
    }
}

impl Store {
    /// Import a certificate version (with its backing key and secret);
    /// returns the version id.
    pub fn import_certificate(
        &mut self,
        vault: &str,
        name: &str,
        import: &CertificateImport,
    ) -> Result<String, EmulatorError> {
        check_name(ObjectKind::Certificate, name)?;
        let Parsed {
            content_type,
            key_pkcs8,
            certs,
        } = key_and_certs(import)?;
        let key = rcgen::KeyPair::try_from(key_pkcs8.as_slice()).map_err(|e| {
            invalid(format!(
                "the private key is not a PKCS#8 RSA, P-256 or P-384 key ({e})"
            ))
        })?;
        let (leaf, facts) = certs
            .iter()
            .find_map(|der| {
                cert_facts(der)
                    .filter(|f| f.public_key == key.public_key_raw())
                    .map(|f| (der, f))
            })
            .ok_or_else(|| {
                invalid(format!(
                    "none of the {} certificates matches the private key; include the leaf certificate",
                    certs.len()
                ))
            })?;
        let subject = p12_keystore::Certificate::from_der(leaf)
            .map_err(|e| EmulatorError::Pkcs12(e.to_string()))?
            .subject()
            .to_string();
        let jwk = public_jwk(&key)?;
        let spec = spec_of(&jwk);
        let material = Arc::new(CertificateMaterial {
            der: leaf.clone(),
            key_pkcs8,
            jwk,
            subject,
            not_before: facts.not_before,
            not_after: facts.not_after,
        });
        let version = pick_version(&import.attributes.version)?;
        let created = import.attributes.created.unwrap_or_else(unix_now);
        let mut attributes = Attributes::from_seed(&import.attributes, created);
        attributes.nbf = Some(import.attributes.nbf.unwrap_or(material.not_before));
        attributes.exp = Some(import.attributes.exp.unwrap_or(material.not_after));
        let months = (material.not_after - material.not_before) / (30 * 24 * 3600);
        let v = self
            .vaults
            .get_mut(&vault.to_ascii_lowercase())
            .ok_or_else(|| EmulatorError::VaultNotFound(vault.to_string()))?;
        if v.secrets
            .get(name)
            .is_some_and(|s| s.first().is_some_and(|x| x.certificate.is_none()))
            || v.keys
                .get(name)
                .is_some_and(|k| k.first().is_some_and(|x| !x.managed))
        {
            return Err(invalid(format!(
                "a plain secret or key named '{name}' exists; a certificate cannot share its name"
            )));
        }
        if v.certificates
            .get(name)
            .is_some_and(|c| c.iter().any(|x| x.version == version))
        {
            return Err(invalid(format!("version {version} already exists")));
        }
        let tags = import.attributes.tags.clone();
        v.certificates
            .entry(name.to_string())
            .or_default()
            .push(CertificateVersion {
                version: version.clone(),
                material: material.clone(),
                tags: tags.clone(),
                attributes: attributes.clone(),
                content_type: content_type.clone(),
                exportable: true,
                spec,
                validity_months: u32::try_from(months.max(1)).unwrap_or(u32::MAX),
                dns_names: Vec::new(),
            });
        v.keys
            .entry(name.to_string())
            .or_default()
            .push(KeyVersion {
                version: version.clone(),
                jwk: material.jwk.clone(),
                tags: tags.clone(),
                attributes: attributes.clone(),
                managed: true,
            });
        v.secrets
            .entry(name.to_string())
            .or_default()
            .push(SecretVersion {
                version: version.clone(),
                value: import.value.clone(),
                content_type: Some(content_type),
                tags,
                attributes,
                certificate: Some(material),
            });
        Ok(version)
    }

    /// Import a key version from a public JWK; returns the version id.
    pub fn import_key(
        &mut self,
        vault: &str,
        name: &str,
        import: &KeyImport,
    ) -> Result<String, EmulatorError> {
        check_name(ObjectKind::Key, name)?;
        let jwk = parse_public_jwk(&import.jwk)?;
        let version = pick_version(&import.attributes.version)?;
        let created = import.attributes.created.unwrap_or_else(unix_now);
        let v = self
            .vaults
            .get_mut(&vault.to_ascii_lowercase())
            .ok_or_else(|| EmulatorError::VaultNotFound(vault.to_string()))?;
        let versions = v.keys.entry(name.to_string()).or_default();
        if versions.first().is_some_and(|k| k.managed) {
            return Err(invalid(format!("key '{name}' backs a certificate")));
        }
        if versions.iter().any(|k| k.version == version) {
            return Err(invalid(format!("version {version} already exists")));
        }
        versions.push(KeyVersion {
            version: version.clone(),
            jwk,
            tags: import.attributes.tags.clone(),
            attributes: Attributes::from_seed(&import.attributes, created),
            managed: false,
        });
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{KeyType, VersionAttributesSeed};

    #[test]
    fn der_times_parse() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x18, b"20380119031408Z"), Some(2_147_483_648));
        assert_eq!(der_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(der_time(0x17, b"7001010000Z"), None);
        assert_eq!(der_time(0x04, b"700101000000Z"), None);
    }

    #[test]
    fn a_generated_certificate_imports_from_pfx_and_pem() {
        let m = CertificateMaterial::self_signed(
            "CN=import.test",
            &[],
            KeySpec::from_seed(KeyType::Ec, None, None).unwrap(),
            12,
        )
        .unwrap();
        let facts = cert_facts(&m.der).unwrap();
        assert_eq!(facts.not_before, m.not_before);
        assert_eq!(facts.not_after, m.not_after);
        let mut store = Store::default();
        store.vaults.insert(
            "kv".into(),
            crate::store::Vault {
                name: "kv".into(),
                tenant: "t".into(),
                location: "eastus".into(),
                permission_model: Default::default(),
                access: Vec::new(),
                secrets: Default::default(),
                keys: Default::default(),
                certificates: Default::default(),
            },
        );
        let pfx = CertificateImport {
            value: crate::util::b64_std(&m.pfx().unwrap()),
            content_type: None,
            attributes: VersionAttributesSeed::default(),
        };
        store.import_certificate("kv", "from-pfx", &pfx).unwrap();
        let pem = CertificateImport {
            value: m.pem_bundle(),
            content_type: Some(CONTENT_TYPE_PEM.into()),
            attributes: VersionAttributesSeed::default(),
        };
        store.import_certificate("KV", "from-pem", &pem).unwrap();
        let vault = &store.vaults["kv"];
        for name in ["from-pfx", "from-pem"] {
            let c = &vault.certificates[name][0];
            assert_eq!(c.material.der, m.der, "{name}");
            assert_eq!(c.material.subject, "CN=import.test");
            assert_eq!(vault.keys[name][0].jwk, m.jwk);
        }
        assert_eq!(vault.secrets["from-pfx"][0].value, pfx.value);
        assert_eq!(vault.secrets["from-pem"][0].value, pem.value);

        let err = store
            .import_certificate(
                "kv",
                "no-key",
                &CertificateImport {
                    value: crate::pki::pem_block("CERTIFICATE", &m.der),
                    content_type: Some(CONTENT_TYPE_PEM.into()),
                    attributes: VersionAttributesSeed::default(),
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
    }

    #[test]
    fn public_jwks_parse_and_private_ones_are_refused() {
        let p521 = serde_json::json!({"kty": "EC", "crv": "P-521",
            "x": crate::util::b64url(&[1u8; 66]), "y": crate::util::b64url(&[2u8; 66])});
        assert_eq!(parse_public_jwk(&p521).unwrap().crv, Some("P-521"));
        let short = serde_json::json!({"kty": "EC", "crv": "P-521",
            "x": crate::util::b64url(&[1u8; 65]), "y": crate::util::b64url(&[2u8; 66])});
        assert!(
            parse_public_jwk(&short)
                .unwrap_err()
                .to_string()
                .contains("66 bytes")
        );
        let private = serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"});
        assert!(
            parse_public_jwk(&private)
                .unwrap_err()
                .to_string()
                .contains("jwk.d")
        );
        let oct = serde_json::json!({"kty": "oct", "k": "AQAB"});
        assert!(
            parse_public_jwk(&oct)
                .unwrap_err()
                .to_string()
                .contains("RSA or EC")
        );
    }
}
