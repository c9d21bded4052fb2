//! Byte for byte over the wire: openssl-made material (tests/fixtures/azure/
//! input) is imported into the emulator, mounted through the provider over
//! HTTPS, and every file is compared with the openssl-made expected bytes
//! (tests/fixtures/azure/expected). No conversion of ours is the oracle.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use secretfs::provider::MountResponse;
use secretfs_e2e::{CertificateImport, KeyImport, VersionAttributesSeed};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).unwrap()
}

/// Compares as text when both are text, so a mismatch shows a readable diff.
fn assert_file(r: &MountResponse, path: &str, expected: &str) {
    let got = file_bytes(r, path);
    let want = fixture(expected);
    match (std::str::from_utf8(&got), std::str::from_utf8(&want)) {
        (Ok(g), Ok(w)) => assert_eq!(g, w, "{path} vs expected/{expected}"),
        _ => assert!(got == want, "{path} differs from expected/{expected}"),
    }
}

fn certificate(value: String, content_type: &str) -> CertificateImport {
    CertificateImport {
        value,
        content_type: Some(content_type.to_owned()),
        attributes: VersionAttributesSeed::default(),
    }
}

#[tokio::test]
async fn imported_certificates_and_keys_mount_as_the_openssl_expected_files() {
    let emu = start().await;
    for (name, input) in [
        ("rsa-chain", "input/pfx-rsa-chain.pfx.b64"),
        ("ec-chain", "input/pfx-ec-chain.pfx.b64"),
        ("rsa-legacy", "input/pfx-rsa-legacy.pfx.b64"),
    ] {
        emu.import_certificate(
            VAULT,
            name,
            &certificate(fixture_text(input), "application/x-pkcs12"),
        )
        .unwrap_or_else(|e| panic!("import {input}: {e}"));
    }
    emu.import_certificate(
        VAULT,
        "pem-file",
        &certificate(
            fixture_text("input/pem-file-rsa.pem"),
            "application/x-pem-file",
        ),
    )
    .expect("import the PEM bundle");
    for (name, input) in [
        ("jwk-rsa", "input/jwk-rsa.json"),
        ("jwk-p256", "input/jwk-ec-p256.json"),
        ("jwk-p384", "input/jwk-ec-p384.json"),
        ("jwk-p521", "input/jwk-ec-p521.json"),
    ] {
        let jwk: serde_json::Value = serde_json::from_slice(&fixture(input)).unwrap();
        emu.import_key(
            VAULT,
            name,
            &KeyImport {
                jwk,
                attributes: VersionAttributesSeed::default(),
            },
        )
        .unwrap_or_else(|e| panic!("import {input}: {e}"));
    }

    let provider = provider(&emu);
    let request = sp_request(
        VAULT,
        &objects(&[
            // Certificate-backed secrets as PEM: PKCS#8 key, then leaf → root.
            &object("rsa-chain", "secret", &[("objectAlias", "rsa-chain.pem")]),
            &object("ec-chain", "secret", &[("objectAlias", "ec-chain.pem")]),
            &object("rsa-legacy", "secret", &[("objectAlias", "rsa-legacy.pem")]),
            &object("pem-file", "secret", &[("objectAlias", "pem-file.pem")]),
            // objectFormat pfx: the stored base64 text; with objectEncoding
            // base64, the PFX bytes.
            &object(
                "rsa-chain",
                "secret",
                &[
                    ("objectAlias", "rsa-chain.pfx.b64"),
                    ("objectFormat", "pfx"),
                ],
            ),
            &object(
                "rsa-chain",
                "secret",
                &[
                    ("objectAlias", "rsa-chain.pfx"),
                    ("objectFormat", "pfx"),
                    ("objectEncoding", "base64"),
                ],
            ),
            // The certificate: the leaf as one PEM block.
            &object("rsa-chain", "cert", &[("objectAlias", "rsa-chain.crt")]),
            &object("pem-file", "cert", &[("objectAlias", "pem-file.crt")]),
            // Keys: PKIX public keys.
            &object("jwk-rsa", "key", &[]),
            &object("jwk-p256", "key", &[]),
            &object("jwk-p384", "key", &[]),
            &object("jwk-p521", "key", &[]),
            // The key of a certificate: the leaf's public key.
            &object("rsa-chain", "key", &[("objectAlias", "rsa-chain.pub")]),
        ]),
    );
    let r = mount_ok(&provider, &request).await;
    assert_eq!(
        r.files.len(),
        13,
        "{:?}",
        r.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );

    assert_file(&r, "rsa-chain.pem", "expected/pfx-rsa-chain.pem");
    assert_file(&r, "ec-chain.pem", "expected/pfx-ec-chain.pem");
    assert_file(&r, "rsa-legacy.pem", "expected/pfx-rsa-legacy.pem");
    assert_file(&r, "pem-file.pem", "expected/pem-file-rsa.pem");
    assert_file(&r, "rsa-chain.pfx.b64", "expected/pfx-rsa-chain.pfx.b64");
    assert_file(&r, "rsa-chain.pfx", "expected/pfx-rsa-chain.pfx");
    assert_file(&r, "rsa-chain.crt", "expected/cert-leaf-rsa.pem");
    assert_file(&r, "pem-file.crt", "expected/cert-leaf-rsa.pem");
    assert_file(&r, "jwk-rsa", "expected/jwk-rsa.pub.pem");
    assert_file(&r, "jwk-p256", "expected/jwk-ec-p256.pub.pem");
    assert_file(&r, "jwk-p384", "expected/jwk-ec-p384.pub.pem");
    assert_file(&r, "jwk-p521", "expected/jwk-ec-p521.pub.pem");
    // The leaf's public key: its DER is the SubjectPublicKeyInfo inside the
    // openssl-made leaf certificate.
    let pem = file_text(&r, "rsa-chain.pub");
    let body: String = pem
        .strip_prefix("-----BEGIN PUBLIC KEY-----\n")
        .and_then(|p| p.strip_suffix("-----END PUBLIC KEY-----\n"))
        .unwrap_or_else(|| panic!("not one PUBLIC KEY block: {pem}"))
        .split('\n')
        .collect();
    let spki = STANDARD.decode(body).unwrap();
    let leaf = fixture("input/cert-leaf-rsa.der");
    assert!(
        spki.len() > 256 && leaf.windows(spki.len()).any(|w| w == spki.as_slice()),
        "the certificate's key is not the leaf's public key"
    );
}
