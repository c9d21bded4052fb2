//! `kubernetes.io/tls` Secrets from mounted PEM and PFX files: `tls.crt` is
//! every certificate in order, `tls.key` the private key as PKCS#1 (RSA) or
//! SEC1 (EC), checked with the openssl CLI.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use secretfs::node::sync::build_secret_data;
use secretfs::provider::{FileMode, MountedFile};
use secretfs::spc::{SecretObject, SecretObjectData};
use secretfs_secrets::SecretBytes;

fn tls(file: &[u8]) -> (String, String) {
    let files = vec![MountedFile {
        path: "web-tls".into(),
        mode: FileMode::DEFAULT,
        contents: Arc::new(SecretBytes::from_slice(file)),
        object_id: "secret/web-tls".into(),
    }];
    let object = SecretObject {
        secret_name: "web".into(),
        secret_type: "kubernetes.io/tls".into(),
        data: ["tls.crt", "tls.key"]
            .iter()
            .map(|k| SecretObjectData {
                object_name: "web-tls".into(),
                key: (*k).into(),
            })
            .collect(),
        ..Default::default()
    };
    let data = build_secret_data(&object, &files).unwrap();
    let text = |k: &str| String::from_utf8(data[k].expose().to_vec()).unwrap();
    (text("tls.crt"), text("tls.key"))
}

fn openssl(args: &[&str], input: &str) -> String {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn certificates(pem: &str) -> Vec<&str> {
    pem.split_inclusive("-----END CERTIFICATE-----\n")
        .filter_map(|b| b.find("-----BEGIN CERTIFICATE-----").map(|i| &b[i..]))
        .collect()
}

#[test]
fn rsa_pem_with_chain_splits_into_the_chain_and_a_pkcs1_key() {
    let pem = std::fs::read_to_string("tests/fixtures/azure/expected/pfx-rsa-chain.pem").unwrap();
    let (crt, key) = tls(pem.as_bytes());
    assert_eq!(
        certificates(&crt),
        certificates(&pem),
        "every certificate, in order"
    );
    assert!(
        key.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"),
        "{}",
        &key[..40]
    );
    openssl(&["rsa", "-check", "-noout"], &key);
    // The key belongs to the leaf certificate.
    let leaf = certificates(&crt)[0];
    assert_eq!(
        openssl(&["rsa", "-modulus", "-noout"], &key),
        openssl(&["x509", "-modulus", "-noout"], leaf)
    );
}

#[test]
fn ec_pem_gives_a_sec1_key_with_its_curve() {
    let pem = std::fs::read_to_string("tests/fixtures/azure/expected/pfx-ec-chain.pem").unwrap();
    let (_, key) = tls(pem.as_bytes());
    assert!(
        key.starts_with("-----BEGIN EC PRIVATE KEY-----\n"),
        "{}",
        &key[..40]
    );
    let text = openssl(&["ec", "-text", "-noout"], &key);
    assert!(
        text.contains("ASN1 OID") || text.contains("NIST CURVE"),
        "the curve is named: {text}"
    );
}

#[test]
fn a_pfx_as_key_vault_stores_it_gives_the_same_secret_as_its_pem() {
    let b64 = std::fs::read("tests/fixtures/azure/input/pfx-rsa-chain.pfx.b64").unwrap();
    let binary = std::fs::read("tests/fixtures/azure/input/pfx-rsa-chain.pfx").unwrap();
    let pem = std::fs::read_to_string("tests/fixtures/azure/expected/pfx-rsa-chain.pem").unwrap();
    let from_pem = tls(pem.as_bytes());
    assert_eq!(tls(&b64), from_pem);
    assert_eq!(tls(&binary), from_pem);
}
