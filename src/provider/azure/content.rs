//! What Key Vault returns → the bytes of the file, exactly as upstream's
//! provider writes them (`provider.go`: `getSecret`, `getKey`,
//! `getCertificate`, `getContentBytes`).
//!
//! - `secret`: a plain secret's value; a certificate-backed secret (non-empty
//!   `kid`) by `contentType`: `application/x-pem-file` as stored;
//!   `application/x-pkcs12` as stored with `objectFormat: pfx`, else converted
//!   to PEM ([`super::pfx`]). Then `objectEncoding` decodes the text:
//!   `utf-8` (as is), `base64` (Go's `StdEncoding`: padding required, line
//!   breaks ignored) or `hex`.
//! - `key`: the public key as PKIX PEM ([`super::jwk`]).
//! - `cert`: the DER `cer` as one `CERTIFICATE` PEM block.
//!
//! Errors never quote the secret: the base64 and hex decoders' own messages
//! (which name the offending character) are replaced by ours.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use secretfs_secrets::{SecretBytes, SecretString};

use super::jwk::{JsonWebKey, public_key_pem};
use super::objects::{KeyVaultObject, ObjectEncoding, ObjectFormat, ObjectType};
use super::pem;
use super::pfx::pfx_to_pem;
use crate::provider::{ErrorKind, ObjectError};

/// `contentType` of a PEM certificate-backed secret.
pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";
/// `contentType` of a PFX certificate-backed secret.
pub const CONTENT_TYPE_PFX: &str = "application/x-pkcs12";

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits allowed.
pub(crate) fn go_std_base64() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    )
}

/// A secret as Key Vault returned it (`SecretBundle`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedSecret {
    /// `value`.
    pub value: Option<SecretString>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// `kid`: set only on secrets that back a certificate.
    pub kid: Option<String>,
}

/// What was fetched for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// `GetSecret`.
    Secret(FetchedSecret),
    /// `GetKey`'s `key`.
    Key(JsonWebKey),
    /// `GetCertificate`'s `cer` (DER).
    Cert(Vec<u8>),
}

/// The bytes of one file, with anything the user should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The file's bytes.
    pub bytes: SecretBytes,
    /// Non-fatal findings (e.g. an incomplete certificate chain).
    pub warnings: Vec<String>,
}

/// Why an object's content cannot be written. Never holds secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The secret has no value.
    #[error("secret value is nil: Key Vault returned the secret without a value")]
    NoValue,
    /// A certificate-backed secret with an unknown `contentType`.
    #[error(
        "failed to get certificate. unknown content type '{0}': certificate-backed secrets must be application/x-pem-file or application/x-pkcs12"
    )]
    UnknownContentType(String),
    /// `objectEncoding: base64` on a value that is not base64.
    #[error(
        "objectEncoding base64: the secret value is not valid standard base64 (alphabet A-Z a-z 0-9 + /, with '=' padding); use utf-8 if the value is text"
    )]
    Base64,
    /// `objectEncoding: hex` on a value that is not hex.
    #[error(
        "objectEncoding hex: the secret value is not valid hex (an even number of 0-9 a-f A-F characters); use utf-8 if the value is text"
    )]
    Hex,
    /// The PFX value is not base64.
    #[error("the certificate's PFX (application/x-pkcs12) is not valid base64")]
    PfxBase64,
    /// The PFX cannot be decoded with an empty password.
    #[error("failed to decode the certificate's PFX with an empty password: {0}")]
    Pfx(String),
    /// A private key in the PFX cannot be converted.
    #[error("private key {index} of the certificate's PFX cannot be converted to PKCS#8: {reason}")]
    PfxKey {
        /// Position among the PFX's keys.
        index: usize,
        /// Why.
        reason: String,
    },
    /// `kty` is not RSA or EC.
    #[error(
        "failed to get key. key type '{0}' currently not supported: only RSA, RSA-HSM, EC and EC-HSM keys can be written as a public key"
    )]
    KeyType(String),
    /// `crv` is not P-256/384/521.
    #[error("curve {0} is not supported: use P-256, P-384 or P-521")]
    Curve(String),
    /// The EC point is not on its curve.
    #[error("the EC key's x and y are not a point on curve {0}")]
    NotOnCurve(String),
    /// A JWK field is missing.
    #[error("the {kty} key has no {field}")]
    JwkField {
        /// Key type.
        kty: String,
        /// The missing field.
        field: &'static str,
    },
    /// The JWK is malformed.
    #[error("the key is not a valid JSON Web Key: {0}")]
    Jwk(String),
    /// The certificate has no DER.
    #[error("the certificate has no cer (DER) content")]
    NoCertificate,
    /// What was fetched does not match `objectType`.
    #[error("Key Vault returned a {got} for objectType {want}")]
    WrongType {
        /// `objectType`.
        want: &'static str,
        /// What came back.
        got: &'static str,
    },
}

impl ContentError {
    /// The kind: all of these are [`ErrorKind::Invalid`] (retrying cannot help).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }

    /// The error about object `id`.
    pub fn for_object(&self, id: impl Into<String>) -> ObjectError {
        ObjectError::new(id, self.kind(), self.to_string())
    }
}

/// Applies `objectEncoding` to a secret's text.
pub fn decode_value(value: &str, encoding: ObjectEncoding) -> Result<SecretBytes, ContentError> {
    match encoding {
        ObjectEncoding::Utf8 => Ok(SecretBytes::new(value.as_bytes().to_vec())),
        ObjectEncoding::Base64 => {
            let text = zeroize::Zeroizing::new(value.replace(['\r', '\n'], ""));
            go_std_base64()
                .decode(text.as_bytes())
                .map(SecretBytes::new)
                .map_err(|_| ContentError::Base64)
        }
        ObjectEncoding::Hex => hex::decode(value)
            .map(SecretBytes::new)
            .map_err(|_| ContentError::Hex),
    }
}

/// The file for `objectType: secret`.
pub fn secret_content(
    format: ObjectFormat,
    encoding: ObjectEncoding,
    secret: &FetchedSecret,
) -> Result<Content, ContentError> {
    let value = secret.value.as_ref().ok_or(ContentError::NoValue)?;
    let mut warnings = Vec::new();
    let certificate_backed = secret.kid.as_deref().is_some_and(|k| !k.is_empty());
    let text: SecretString = if certificate_backed {
        match secret.content_type.as_deref().unwrap_or("") {
            CONTENT_TYPE_PEM => value.clone(),
            CONTENT_TYPE_PFX if format == ObjectFormat::Pfx => value.clone(),
            CONTENT_TYPE_PFX => {
                let converted = pfx_to_pem(value.expose())?;
                if let Some(w) = converted.chain_warning {
                    warnings.push(w.to_string());
                }
                // PEM is ASCII, so this conversion cannot fail.
                SecretString::new(String::from_utf8_lossy(converted.pem.expose()).into_owned())
            }
            other => return Err(ContentError::UnknownContentType(other.to_owned())),
        }
    } else {
        value.clone()
    };
    // A non-exportable certificate's secret: Key Vault leaves the key out,
    // and the file is the certificate alone.
    let pem_out =
        secret.content_type.as_deref() == Some(CONTENT_TYPE_PEM) || format == ObjectFormat::Pem;
    if certificate_backed && pem_out && !text.expose().contains("PRIVATE KEY-----") {
        warnings.push(
            "the secret holds no private key: the certificate is not exportable (its policy keeps \
             the key in Key Vault), so the file is the certificate only and no kubernetes.io/tls \
             Secret can be made of it; objectType: cert mounts the same certificate"
                .to_owned(),
        );
    }
    Ok(Content {
        bytes: decode_value(text.expose(), encoding)?,
        warnings,
    })
}

/// The file for `objectType: key`.
pub fn key_content(jwk: &JsonWebKey) -> Result<Content, ContentError> {
    Ok(Content {
        bytes: SecretBytes::new(public_key_pem(jwk)?),
        warnings: Vec::new(),
    })
}

/// The file for `objectType: cert`.
pub fn cert_content(cer: &[u8]) -> Result<Content, ContentError> {
    if cer.is_empty() {
        return Err(ContentError::NoCertificate);
    }
    Ok(Content {
        bytes: SecretBytes::new(pem::encode(pem::CERTIFICATE, cer)),
        warnings: Vec::new(),
    })
}

/// The file of one object; errors name the object (`id` is the object's id,
/// or a history slot's id).
pub fn object_content(
    object: &KeyVaultObject,
    id: &str,
    fetched: &Fetched,
) -> Result<Content, ObjectError> {
    let result = match (object.object_type, fetched) {
        (ObjectType::Secret, Fetched::Secret(s)) => {
            secret_content(object.format, object.encoding, s)
        }
        (ObjectType::Key, Fetched::Key(k)) => key_content(k),
        (ObjectType::Cert, Fetched::Cert(c)) => cert_content(c),
        (want, got) => Err(ContentError::WrongType {
            want: want.as_str(),
            got: match got {
                Fetched::Secret(_) => "secret",
                Fetched::Key(_) => "key",
                Fetched::Cert(_) => "certificate",
            },
        }),
    };
    result.map_err(|e| e.for_object(id))
}
