//! RS256 JSON Web Tokens: signing with a key generated at start, verification,
//! and the JWKS that publishes the public key.

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey};
use rcgen::{KeyPair, SigningKey as _};
use serde_json::{Value, json};
use thiserror::Error;

use crate::error::EmulatorError;
use crate::pki::{KeySpec, PublicJwk, public_jwk};
use crate::util::{b64url, b64url_decode, hex, random_bytes};

/// Why a token was not accepted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is not a three-part JWT")]
    Malformed,
    #[error("the token header or payload is not base64url JSON")]
    BadEncoding,
    #[error("the token's algorithm '{0}' is not RS256")]
    Algorithm(String),
    #[error("the token signature is invalid")]
    Signature,
}

/// An RS256 signer with a key id.
pub struct JwtSigner {
    key: KeyPair,
    kid: String,
    jwk: PublicJwk,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// A signer with a fresh RSA-2048 key.
    pub fn generate() -> Result<Self, EmulatorError> {
        let key = KeySpec::Rsa { bits: 2048 }.generate()?;
        let jwk = public_jwk(&key)?;
        Ok(Self {
            key,
            kid: hex(&random_bytes(10)),
            jwk,
        })
    }

    /// Sign `claims` into a compact JWT.
    pub fn sign(&self, claims: &Value) -> Result<String, EmulatorError> {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid});
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self.key.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", b64url(&sig)))
    }

    /// Check the signature of `token` and return its claims.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let parts = decode_parts(token)?;
        if parts.header.get("alg").and_then(Value::as_str) != Some("RS256") {
            let alg = parts
                .header
                .get("alg")
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(JwtError::Algorithm(alg.to_string()));
        }
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, self.key.public_key_raw())
            .verify(parts.signing_input.as_bytes(), &parts.signature)
            .map_err(|_| JwtError::Signature)?;
        Ok(parts.claims)
    }

    /// The JWKS document publishing this key.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.jwk.n,
            "e": self.jwk.e,
        }]})
    }
}

/// The public RSA keys of an OIDC issuer's JWKS (`{"keys": [...]}`), e.g. a
/// Kubernetes API server's `/openid/v1/jwks`; keys of other types are
/// skipped, as a verifier that only does RS256 would.
#[derive(Debug, Clone)]
pub struct RsaJwks {
    keys: Vec<RsaJwk>,
}

#[derive(Debug, Clone)]
struct RsaJwk {
    kid: Option<String>,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaJwks {
    /// Parse a JWKS document; an error names what is missing.
    pub fn from_json(jwks: &Value) -> Result<Self, EmulatorError> {
        let invalid = |what: &str| EmulatorError::Invalid(format!("JWKS: {what}"));
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no \"keys\" array"))?;
        let mut keys = Vec::new();
        for key in list {
            if key.get("kty").and_then(Value::as_str) != Some("RSA") {
                continue;
            }
            let part = |name: &str| {
                key.get(name)
                    .and_then(Value::as_str)
                    .and_then(b64url_decode)
                    .ok_or_else(|| invalid(&format!("RSA key without base64url \"{name}\"")))
            };
            keys.push(RsaJwk {
                kid: key.get("kid").and_then(Value::as_str).map(String::from),
                n: part("n")?,
                e: part("e")?,
            });
        }
        if keys.is_empty() {
            return Err(invalid("no RSA key"));
        }
        Ok(Self { keys })
    }

    /// Check the RS256 signature of `token` with the key its `kid` names
    /// (every key when it names none) and return its claims.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let parts = decode_parts(token)?;
        let alg = parts
            .header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or("");
        if alg != "RS256" {
            return Err(JwtError::Algorithm(alg.to_string()));
        }
        let kid = parts.header.get("kid").and_then(Value::as_str);
        let verified = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .any(|k| {
                RsaPublicKeyComponents { n: &k.n, e: &k.e }
                    .verify(
                        &RSA_PKCS1_2048_8192_SHA256,
                        parts.signing_input.as_bytes(),
                        &parts.signature,
                    )
                    .is_ok()
            });
        if verified {
            Ok(parts.claims)
        } else {
            Err(JwtError::Signature)
        }
    }
}

/// The decoded pieces of a compact JWT, signature not checked.
#[derive(Debug)]
pub struct JwtParts {
    pub header: Value,
    pub claims: Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

/// Split and decode a compact JWT without checking its signature.
pub fn decode_parts(token: &str) -> Result<JwtParts, JwtError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed);
    };
    let decode_json = |seg: &str| -> Result<Value, JwtError> {
        let bytes = b64url_decode(seg).ok_or(JwtError::BadEncoding)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::BadEncoding)
    };
    Ok(JwtParts {
        header: decode_json(h)?,
        claims: decode_json(p)?,
        signing_input: format!("{h}.{p}"),
        signature: b64url_decode(s).ok_or(JwtError::BadEncoding)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_without_rsa_keys_is_refused_with_the_reason() {
        let err = RsaJwks::from_json(&json!({"keys": [{"kty": "EC"}]})).unwrap_err();
        assert_eq!(err.to_string(), "invalid request: JWKS: no RSA key");
        let err = RsaJwks::from_json(&json!({"keys": [{"kty": "RSA", "e": "AQAB"}]})).unwrap_err();
        assert!(err.to_string().contains("\"n\""), "{err}");
        assert!(RsaJwks::from_json(&json!({})).is_err());
    }

    #[test]
    fn sign_then_verify_round_trips_and_tampering_fails() {
        let signer = JwtSigner::generate().unwrap();
        let token = signer.sign(&json!({"sub": "a", "n": 1})).unwrap();
        assert_eq!(signer.verify(&token).unwrap()["sub"], "a");

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64url(json!({"sub": "b", "n": 1}).to_string().as_bytes());
        parts[1] = &forged;
        assert_eq!(signer.verify(&parts.join(".")), Err(JwtError::Signature));

        let other = JwtSigner::generate().unwrap();
        assert_eq!(other.verify(&token), Err(JwtError::Signature));

        // The same key through its published JWKS.
        let jwks = RsaJwks::from_json(&signer.jwks()).unwrap();
        assert_eq!(jwks.verify(&token).unwrap()["sub"], "a");
        assert_eq!(jwks.verify(&parts.join(".")), Err(JwtError::Signature));
        let others = RsaJwks::from_json(&other.jwks()).unwrap();
        assert_eq!(others.verify(&token), Err(JwtError::Signature));
        assert_eq!(signer.verify("a.b"), Err(JwtError::Malformed));
    }
}
