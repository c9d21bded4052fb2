//! Small helpers shared by every part of the emulator: ids, clocks, encodings.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Seconds since the Unix epoch, as Key Vault and Entra ID report times.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `n` random bytes from the system generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // `fill` only fails when the OS has no entropy source; zeros are then
    // still unique enough for ids in a test emulator, so do not panic.
    let _ = aws_lc_rs::rand::fill(&mut buf);
    buf
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// A Key Vault object version id: 32 lowercase hex characters.
pub fn new_version_id() -> String {
    hex(&random_bytes(16))
}

/// Is `s` a well-formed Key Vault version id (32 lowercase hex characters)?
pub fn is_version_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A random GUID in the usual 8-4-4-4-12 form (request ids, object ids).
pub fn new_guid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Standard base64 with padding (certificate `cer`, PFX secret values).
pub fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decode standard base64 with padding.
pub fn b64_std_decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// Base64url without padding (JWK fields, JWT segments, `x5t`).
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode base64url without padding.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass through).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The modulus and public exponent of a DER `RSAPublicKey` (PKCS#1):
/// `SEQUENCE { INTEGER n, INTEGER e }`. Leading zero bytes are stripped, as
/// JWK requires.
pub fn rsa_public_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (tag, body, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag_n, n, rest) = der_element(body)?;
    let (tag_e, e, _) = der_element(rest)?;
    if tag_n != 0x02 || tag_e != 0x02 {
        return None;
    }
    Some((
        strip_leading_zeros(n).to_vec(),
        strip_leading_zeros(e).to_vec(),
    ))
}

fn strip_leading_zeros(mut b: &[u8]) -> &[u8] {
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    b
}

/// One DER element: (tag, contents, the bytes after it).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let count = first & 0x7f;
        if count == 0 || count > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..count {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    let body = input.get(header..end)?;
    Some((tag, body, &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_are_32_lowercase_hex() {
        let v = new_version_id();
        assert!(is_version_id(&v), "{v}");
        assert!(!is_version_id("ABCDEF0123456789abcdef0123456789"));
        assert!(!is_version_id("abc"));
    }

    #[test]
    fn guid_shape() {
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(g.matches('-').count(), 4);
        assert_eq!(&g[14..15], "4");
    }

    #[test]
    fn percent_encoding_escapes_base64_specials() {
        assert_eq!(percent_encode("a+b/c="), "a%2Bb%2Fc%3D");
    }

    #[test]
    fn rsa_public_key_der_is_parsed() {
        // SEQUENCE { INTEGER 0x00c1, INTEGER 0x010001 }
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xc1, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        let (n, e) = rsa_public_components(&der).unwrap();
        assert_eq!(n, vec![0xc1]);
        assert_eq!(e, vec![0x01, 0x00, 0x01]);
        assert!(rsa_public_components(&der[..5]).is_none());
    }
}
