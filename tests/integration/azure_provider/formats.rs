//! Every object type and format through the wire, compared with what the
//! pure half makes of the same Key Vault answer fetched directly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secretfs::provider::ErrorKind;
use secretfs::provider::azure::{
    FetchedSecret, JsonWebKey, ObjectEncoding, ObjectFormat, cert_content, key_content,
    secret_content,
};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";

async fn direct_secret(emu: &secretfs_e2e::EmulatorHandle, name: &str) -> FetchedSecret {
    let j = direct_get(emu, VAULT, &format!("/secrets/{name}/")).await;
    FetchedSecret {
        value: j["value"].as_str().map(|s| s.to_owned().into()),
        content_type: j["contentType"].as_str().map(str::to_owned),
        kid: j["kid"].as_str().map(str::to_owned),
    }
}

#[tokio::test]
async fn secrets_keys_and_certificates_match_the_pure_conversion() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(
        VAULT,
        &objects(&[
            &object("tagged", "secret", &[]),
            &object("expired", "secret", &[]),
            &object("not-yet-valid", "secret", &[]),
            &object("rsa-key", "key", &[]),
            &object("ec-key", "key", &[]),
            &object("ec-384-key", "key", &[("objectAlias", "keys/ec384.pem")]),
            &object("pfx-cert", "cert", &[("objectAlias", "pfx.crt")]),
            &object("pem-cert", "cert", &[("objectAlias", "pem.crt")]),
            &object("pfx-cert", "secret", &[("objectAlias", "pfx-as-pem")]),
            &object(
                "pfx-cert",
                "secret",
                &[("objectAlias", "pfx-as-pfx"), ("objectFormat", "pfx")],
            ),
            &object(
                "pfx-cert",
                "secret",
                &[
                    ("objectAlias", "pfx-binary"),
                    ("objectFormat", "pfx"),
                    ("objectEncoding", "base64"),
                    ("filePermission", "0600"),
                ],
            ),
            &object("pem-cert", "secret", &[("objectAlias", "pem-bundle")]),
        ]),
    );
    let r = mount_ok(&provider, &request).await;
    assert_eq!(r.files.len(), 12);

    assert_eq!(file_text(&r, "tagged"), r#"{"user":"app","password":"pw"}"#);
    assert_eq!(file_text(&r, "expired"), "expired-but-readable");
    assert_eq!(file_text(&r, "not-yet-valid"), "future-but-readable");

    for (name, path) in [
        ("rsa-key", "rsa-key"),
        ("ec-key", "ec-key"),
        ("ec-384-key", "keys/ec384.pem"),
    ] {
        let j = direct_get(&emu, VAULT, &format!("/keys/{name}/")).await;
        let jwk: JsonWebKey = serde_json::from_value(j["key"].clone()).expect("JWK");
        let want = key_content(&jwk).expect("public key");
        assert_eq!(file_bytes(&r, path), want.bytes.expose(), "{name}");
        assert!(file_text(&r, path).starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    for (name, path) in [("pfx-cert", "pfx.crt"), ("pem-cert", "pem.crt")] {
        let j = direct_get(&emu, VAULT, &format!("/certificates/{name}/")).await;
        let der = STANDARD.decode(j["cer"].as_str().unwrap()).unwrap();
        let want = cert_content(&der).unwrap();
        assert_eq!(file_bytes(&r, path), want.bytes.expose(), "{name}");
        assert!(file_text(&r, path).starts_with("-----BEGIN CERTIFICATE-----\n"));
    }

    let pfx = direct_secret(&emu, "pfx-cert").await;
    assert!(pfx.kid.is_some(), "the backing secret carries kid");
    let want = secret_content(ObjectFormat::Pem, ObjectEncoding::Utf8, &pfx).unwrap();
    assert_eq!(file_bytes(&r, "pfx-as-pem"), want.bytes.expose());
    let pem = file_text(&r, "pfx-as-pem");
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{}",
        &pem[..40]
    );
    assert!(pem.contains("-----BEGIN CERTIFICATE-----\n"));
    let value = pfx.value.as_ref().unwrap().expose().to_owned();
    assert_eq!(file_text(&r, "pfx-as-pfx"), value);
    assert_eq!(
        file_bytes(&r, "pfx-binary"),
        STANDARD.decode(&value).unwrap()
    );
    let binary = r.files.iter().find(|f| f.path == "pfx-binary").unwrap();
    assert_eq!(binary.mode.bits(), 0o600);

    let pem_secret = direct_secret(&emu, "pem-cert").await;
    assert_eq!(
        file_text(&r, "pem-bundle"),
        pem_secret.value.unwrap().expose()
    );

    // Versions: one per object, sorted by id, each the object's version.
    let ids: Vec<&str> = r.versions.iter().map(|v| v.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(ids.contains(&"cert/pfx-cert") && ids.contains(&"key/rsa-key"));
    assert!(
        r.versions
            .iter()
            .all(|v| v.version.len() == 32 && v.version.bytes().all(|b| b.is_ascii_hexdigit())),
        "{:?}",
        r.versions
    );
}

#[tokio::test]
async fn encodings_decode_the_secret_and_bad_content_is_invalid() {
    let emu = start().await;
    emu.set_secret(VAULT, "b64", "aGVsbG8gd29ybGQ=").unwrap();
    emu.set_secret(VAULT, "hexed", "68656c6c6f").unwrap();
    emu.set_secret(VAULT, "not-b64", "this is not base64!")
        .unwrap();
    let provider = provider(&emu);
    let ok = sp_request(
        VAULT,
        &objects(&[
            &object("b64", "secret", &[("objectEncoding", "base64")]),
            &object("hexed", "secret", &[("objectEncoding", "hex")]),
        ]),
    );
    let r = mount_ok(&provider, &ok).await;
    assert_eq!(file_text(&r, "b64"), "hello world");
    assert_eq!(file_text(&r, "hexed"), "hello");

    let bad = sp_request(
        VAULT,
        &objects(&[&object(
            "not-b64",
            "secret",
            &[("objectEncoding", "base64")],
        )]),
    );
    let errors = mount_objects_err(&provider, &bad).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object, "secret/not-b64");
    assert_eq!(errors[0].kind, ErrorKind::Invalid);
    assert!(
        errors[0].message.contains("base64"),
        "{}",
        errors[0].message
    );
    assert!(!errors[0].message.contains("this is not base64"));
}

/// A non-exportable certificate: Key Vault keeps its private key, so its
/// secret holds the certificate only (PEM, or a PKCS#12 with no key bag).
/// The driver mounts what the vault has, as upstream's provider: the
/// certificate, in the format asked for, and says why no key came.
#[tokio::test]
async fn a_non_exportable_certificates_secret_mounts_without_a_key() {
    let emu = start().await;
    let provider = provider(&emu);
    for (name, content_type) in [
        ("locked-pfx", "application/x-pkcs12"),
        ("locked-pem", "application/x-pem-file"),
    ] {
        emu.add_certificate_version(
            VAULT,
            name,
            Some(&secretfs_e2e::CertificateVersionSeed {
                content_type: Some(content_type.into()),
                exportable: Some(false),
                ..Default::default()
            }),
        )
        .unwrap();
    }
    let request = sp_request(
        VAULT,
        &objects(&[
            &object("locked-pfx", "secret", &[("objectAlias", "pfx-as-pem")]),
            &object("locked-pem", "secret", &[("objectAlias", "pem")]),
            &object("locked-pfx", "cert", &[("objectAlias", "pfx.crt")]),
        ]),
    );
    let r = mount_ok(&provider, &request).await;
    for path in ["pfx-as-pem", "pem"] {
        let text = file_text(&r, path);
        assert!(!text.contains("PRIVATE KEY"), "{path}: {text}");
        assert_eq!(
            text.matches("-----BEGIN CERTIFICATE-----").count(),
            1,
            "{path}: {text}"
        );
    }
    // The certificate the secret holds is the certificate itself.
    assert_eq!(file_text(&r, "pfx-as-pem"), file_text(&r, "pfx.crt"));
    assert!(
        r.warnings.iter().any(|w| w.contains("secret/locked-pfx")
            && w.contains("no private key")
            && w.contains("not exportable")),
        "{:?}",
        r.warnings
    );
}
