//! PEM encoding exactly as Go's `encoding/pem.EncodeToMemory` writes it (no
//! headers): `-----BEGIN <label>-----\n`, standard base64 with padding in
//! lines of 64 characters each ending in `\n`, then `-----END <label>-----\n`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// `CERTIFICATE`.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// `PRIVATE KEY` (PKCS#8).
pub const PRIVATE_KEY: &str = "PRIVATE KEY";
/// `PUBLIC KEY` (PKIX SubjectPublicKeyInfo).
pub const PUBLIC_KEY: &str = "PUBLIC KEY";

/// Appends one PEM block of `der` to `out`. The caller owns `out`, so secret
/// key material can go straight into a zeroizing buffer.
pub fn encode_into(out: &mut Vec<u8>, label: &str, der: &[u8]) {
    let b64 = zeroize::Zeroizing::new(STANDARD.encode(der));
    out.reserve(b64.len() + b64.len() / 64 + 2 * label.len() + 34);
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
}

/// One PEM block of `der`.
pub fn encode(label: &str, der: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, label, der);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_line_layout() {
        // 48 bytes → exactly 64 base64 characters: one full line.
        let pem = encode("X", &[0u8; 48]);
        let text = String::from_utf8(pem).unwrap();
        assert_eq!(
            text,
            format!("-----BEGIN X-----\n{}\n-----END X-----\n", "A".repeat(64))
        );
        // 49 bytes → 64 + 4 characters with padding.
        let text = String::from_utf8(encode("Y Z", &[0xffu8; 49])).unwrap();
        assert_eq!(
            text,
            format!(
                "-----BEGIN Y Z-----\n{}\n/w==\n-----END Y Z-----\n",
                "/".repeat(64)
            )
        );
        // Empty content: no body line at all, as in Go.
        assert_eq!(
            String::from_utf8(encode("E", &[])).unwrap(),
            "-----BEGIN E-----\n-----END E-----\n"
        );
    }
}
