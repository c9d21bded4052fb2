//! `objectType: key`: the public part of a Key Vault JSON Web Key, written as
//! a PKIX `-----BEGIN PUBLIC KEY-----` PEM, like upstream's
//! `x509.MarshalPKIXPublicKey`:
//! - `RSA`/`RSA-HSM` from `n` and `e` (`rsaEncryption`, NULL parameters);
//! - `EC`/`EC-HSM` from `x` and `y` on P-256, P-384 or P-521
//!   (`id-ecPublicKey` with the named curve, uncompressed point, coordinates
//!   padded to the curve size). The point must lie on the curve.
//!
//! `oct`/`oct-HSM` keys and the `P-256K` curve are rejected with upstream's
//! texts (`key type '…' currently not supported`, `curve … is not supported`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use der::Encode as _;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use serde::{Deserialize, Deserializer};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::content::ContentError;
use super::pem;
use super::pfx::{SECP256R1, SECP384R1, SECP521R1, strip_leading_zeros};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The fields of a Key Vault `JsonWebKey` that a public key needs; byte
/// fields are base64url (padding optional) in JSON and decoded here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct JsonWebKey {
    /// `kty`: `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    pub kty: String,
    /// `crv`: `P-256`, `P-384`, `P-521`, `P-256K`.
    #[serde(default)]
    pub crv: Option<String>,
    /// RSA modulus.
    #[serde(default, deserialize_with = "b64url")]
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    #[serde(default, deserialize_with = "b64url")]
    pub e: Option<Vec<u8>>,
    /// EC x coordinate.
    #[serde(default, deserialize_with = "b64url")]
    pub x: Option<Vec<u8>>,
    /// EC y coordinate.
    #[serde(default, deserialize_with = "b64url")]
    pub y: Option<Vec<u8>>,
}

fn b64url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map(Some)
        .map_err(|_| serde::de::Error::custom("a byte field is not base64url"))
}

impl JsonWebKey {
    /// Parses a `JsonWebKey` (the `key` of a KeyBundle).
    pub fn from_json(json: &[u8]) -> Result<JsonWebKey, ContentError> {
        serde_json::from_slice(json).map_err(|e| ContentError::Jwk(e.to_string()))
    }
}

/// The PEM `PUBLIC KEY` of a JWK.
pub fn public_key_pem(jwk: &JsonWebKey) -> Result<Vec<u8>, ContentError> {
    let der = match jwk.kty.as_str() {
        "RSA" | "RSA-HSM" => rsa_spki(jwk)?,
        "EC" | "EC-HSM" => ec_spki(jwk)?,
        other => return Err(ContentError::KeyType(other.to_owned())),
    };
    Ok(pem::encode(pem::PUBLIC_KEY, &der))
}

fn field<'a>(
    v: &'a Option<Vec<u8>>,
    name: &'static str,
    kty: &str,
) -> Result<&'a [u8], ContentError> {
    match v.as_deref().map(strip_leading_zeros) {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err(ContentError::JwkField {
            kty: kty.to_owned(),
            field: name,
        }),
    }
}

fn encoding(e: der::Error) -> ContentError {
    ContentError::Jwk(format!("cannot encode the public key: {e}"))
}

fn rsa_spki(jwk: &JsonWebKey) -> Result<Vec<u8>, ContentError> {
    let n = field(&jwk.n, "n", &jwk.kty)?;
    let e = field(&jwk.e, "e", &jwk.kty)?;
    if e.len() > 8 {
        return Err(ContentError::Jwk(format!(
            "RSA public exponent e is {} bytes long; at most 8 are supported",
            e.len()
        )));
    }
    let key = pkcs1::RsaPublicKey {
        modulus: UintRef::new(n).map_err(encoding)?,
        public_exponent: UintRef::new(e).map_err(encoding)?,
    };
    let key_der = key.to_der().map_err(encoding)?;
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        subject_public_key: BitStringRef::from_bytes(&key_der).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)
}

fn ec_spki(jwk: &JsonWebKey) -> Result<Vec<u8>, ContentError> {
    let crv = jwk.crv.as_deref().unwrap_or("");
    let (curve, size, alg) = match crv {
        "P-256" => (SECP256R1, 32, &aws_lc_rs::agreement::ECDH_P256),
        "P-384" => (SECP384R1, 48, &aws_lc_rs::agreement::ECDH_P384),
        "P-521" => (SECP521R1, 66, &aws_lc_rs::agreement::ECDH_P521),
        other => return Err(ContentError::Curve(other.to_owned())),
    };
    let x = field(&jwk.x, "x", &jwk.kty)?;
    let y = field(&jwk.y, "y", &jwk.kty)?;
    if x.len() > size || y.len() > size {
        return Err(ContentError::NotOnCurve(crv.to_owned()));
    }
    let mut point = vec![0u8; 1 + 2 * size];
    point[0] = 4;
    point[1 + size - x.len()..1 + size].copy_from_slice(x);
    point[1 + 2 * size - y.len()..].copy_from_slice(y);
    let unparsed = aws_lc_rs::agreement::UnparsedPublicKey::new(alg, &point);
    aws_lc_rs::agreement::ParsedPublicKey::try_from(&unparsed)
        .map_err(|_| ContentError::NotOnCurve(crv.to_owned()))?;
    let curve_der = curve.to_der().map_err(encoding)?;
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(der::Decode::from_der(&curve_der).map_err(encoding)?),
        },
        subject_public_key: BitStringRef::from_bytes(&point).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)
}
