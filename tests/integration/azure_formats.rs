//! Azure Key Vault content, byte for byte: what Key Vault returns (fixtures in
//! `tests/fixtures/azure/input/`) → the file secretfs writes, compared with
//! the bytes upstream writes (`tests/fixtures/azure/expected/`), which
//! `scripts/gen-azure-fixtures.sh` produced with the openssl CLI.
//! Also: the seed SecretProviderClass, and that no Debug output leaks a secret.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secretfs::provider::ErrorKind;
use secretfs::provider::FileMode;
use secretfs::provider::azure::chain::{ChainWarning, order_chain};
use secretfs::provider::azure::content::{CONTENT_TYPE_PEM, CONTENT_TYPE_PFX};
use secretfs::provider::azure::pfx::canonical_pkcs8;
use secretfs::provider::azure::{
    AzureParameters, ContentError, Fetched, FetchedSecret, IdentityConfig, IdentityInputs,
    IdentityKey, IdentityKeySalt, JsonWebKey, ObjectEncoding, ObjectFormat, ParseOptions, PodInfo,
    cert_content, key_content, object_content, resolve_identity, secret_content,
};
use secretfs_secrets::SecretString;

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(rel: &str) -> String {
    String::from_utf8(fixture(rel)).unwrap()
}

fn plain(value: &str) -> FetchedSecret {
    FetchedSecret {
        value: Some(SecretString::from(value)),
        content_type: None,
        kid: None,
    }
}

fn cert_backed(value: &str, content_type: &str) -> FetchedSecret {
    FetchedSecret {
        value: Some(SecretString::from(value)),
        content_type: Some(content_type.to_owned()),
        kid: Some(
            "https://kv-demo.vault.azure.net/keys/web-tls/0123456789abcdef0123456789abcdef".into(),
        ),
    }
}

fn secret_bytes(fmt: ObjectFormat, enc: ObjectEncoding, s: &FetchedSecret) -> Vec<u8> {
    secret_content(fmt, enc, s).unwrap().bytes.expose().to_vec()
}

/// Compares as text when possible, so a mismatch shows a readable diff.
fn assert_same(got: &[u8], want: &[u8]) {
    match (std::str::from_utf8(got), std::str::from_utf8(want)) {
        (Ok(g), Ok(w)) => assert_eq!(g, w),
        _ => assert_eq!(got, want),
    }
}

// ---- secrets and objectEncoding ----

#[test]
fn plain_secret_utf8_is_written_as_is() {
    let value = text("azure/input/secret-utf8.txt");
    let got = secret_bytes(ObjectFormat::Pem, ObjectEncoding::Utf8, &plain(&value));
    assert_same(&got, &fixture("azure/expected/secret-utf8.txt"));
}

#[test]
fn plain_secret_base64_and_hex_are_decoded() {
    let want = fixture("azure/expected/secret-binary.bin");
    let b64 = text("azure/input/secret-binary.b64");
    assert_eq!(
        secret_bytes(ObjectFormat::Pem, ObjectEncoding::Base64, &plain(&b64)),
        want
    );
    // Go's StdEncoding skips line breaks.
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect();
    assert_eq!(
        secret_bytes(ObjectFormat::Pem, ObjectEncoding::Base64, &plain(&wrapped)),
        want
    );
    let hex = text("azure/input/secret-binary.hex");
    assert_eq!(
        secret_bytes(ObjectFormat::Pem, ObjectEncoding::Hex, &plain(&hex)),
        want
    );
    assert_eq!(
        secret_bytes(
            ObjectFormat::Pem,
            ObjectEncoding::Hex,
            &plain(&hex.to_uppercase())
        ),
        want
    );
}

#[test]
fn bad_encodings_fail_without_quoting_the_secret() {
    let cases = [
        (ObjectEncoding::Base64, "c2VjcmV0!!", ContentError::Base64),
        // Go's StdEncoding requires padding.
        (ObjectEncoding::Base64, "c2VjcmV0IQ", ContentError::Base64),
        (ObjectEncoding::Hex, "abc", ContentError::Hex),
        (ObjectEncoding::Hex, "zz-secret-zz", ContentError::Hex),
    ];
    for (enc, value, want) in cases {
        let err = secret_content(ObjectFormat::Pem, enc, &plain(value)).unwrap_err();
        assert_eq!(err, want);
        assert_eq!(err.kind(), ErrorKind::Invalid);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(value), "{shown}");
        assert!(!shown.contains("secret-zz"), "{shown}");
    }
    let err = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &FetchedSecret::default(),
    )
    .unwrap_err();
    assert_eq!(err, ContentError::NoValue);
    assert!(err.to_string().starts_with("secret value is nil"));
}

// ---- certificate-backed secrets ----

#[test]
fn pem_file_secret_is_verbatim_in_any_format() {
    let stored = text("azure/input/pem-file-rsa.pem");
    let want = fixture("azure/expected/pem-file-rsa.pem");
    for fmt in [ObjectFormat::Pem, ObjectFormat::Pfx] {
        let got = secret_bytes(
            fmt,
            ObjectEncoding::Utf8,
            &cert_backed(&stored, CONTENT_TYPE_PEM),
        );
        assert_same(&got, &want);
    }
}

#[test]
fn pfx_format_writes_the_stored_base64_or_with_base64_encoding_the_pfx() {
    let stored = text("azure/input/pfx-rsa-chain.pfx.b64");
    let secret = cert_backed(&stored, CONTENT_TYPE_PFX);
    let got = secret_bytes(ObjectFormat::Pfx, ObjectEncoding::Utf8, &secret);
    assert_same(&got, &fixture("azure/expected/pfx-rsa-chain.pfx.b64"));
    let got = secret_bytes(ObjectFormat::Pfx, ObjectEncoding::Base64, &secret);
    assert_eq!(got, fixture("azure/expected/pfx-rsa-chain.pfx"));
}

#[test]
fn pfx_to_pem_writes_pkcs8_key_then_chain_leaf_to_root() {
    // The PFXs hold leaf, root, intermediate; the output is leaf, intermediate, root.
    for name in [
        "pfx-rsa-chain",
        "pfx-rsa-3des",
        "pfx-rsa-legacy",
        "pfx-ec-chain",
    ] {
        let stored = text(&format!("azure/input/{name}.pfx.b64"));
        let content = secret_content(
            ObjectFormat::Pem,
            ObjectEncoding::Utf8,
            &cert_backed(&stored, CONTENT_TYPE_PFX),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same(
            content.bytes.expose(),
            &fixture(&format!("azure/expected/{name}.pem")),
        );
        assert!(
            content.warnings.is_empty(),
            "{name}: {:?}",
            content.warnings
        );
    }
}

#[test]
fn pfx_with_incomplete_chain_keeps_stored_order_and_warns() {
    let stored = text("azure/input/pfx-incomplete.pfx.b64");
    let content = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &cert_backed(&stored, CONTENT_TYPE_PFX),
    )
    .unwrap();
    assert_same(
        content.bytes.expose(),
        &fixture("azure/expected/pfx-incomplete.pem"),
    );
    assert_eq!(content.warnings.len(), 1);
    assert!(
        content.warnings[0].contains("certificate chain is not complete"),
        "{:?}",
        content.warnings
    );
}

#[test]
fn pfx_base64_with_line_breaks_is_accepted() {
    let stored = text("azure/input/pfx-rsa-chain.pfx.b64");
    let wrapped: String = stored
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    let got = secret_bytes(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &cert_backed(&wrapped, CONTENT_TYPE_PFX),
    );
    assert_same(&got, &fixture("azure/expected/pfx-rsa-chain.pem"));
}

#[test]
fn certificate_backed_secret_errors() {
    let err = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &cert_backed("x", "application/json"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to get certificate. unknown content type 'application/json': certificate-backed secrets must be application/x-pem-file or application/x-pkcs12"
    );
    // A kid without contentType: the content type is empty.
    let mut s = cert_backed("x", "");
    s.content_type = None;
    let err = secret_content(ObjectFormat::Pem, ObjectEncoding::Utf8, &s).unwrap_err();
    assert_eq!(err, ContentError::UnknownContentType(String::new()));
    // An empty kid is a plain secret: contentType is not looked at.
    let mut s = cert_backed("plain value", "application/json");
    s.kid = Some(String::new());
    assert_eq!(
        secret_bytes(ObjectFormat::Pem, ObjectEncoding::Utf8, &s),
        b"plain value"
    );
    // Not base64, and base64 that is not a PFX.
    let err = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &cert_backed("!!", CONTENT_TYPE_PFX),
    )
    .unwrap_err();
    assert_eq!(err, ContentError::PfxBase64);
    let err = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &cert_backed("aGVsbG8gd29ybGQ=", CONTENT_TYPE_PFX),
    )
    .unwrap_err();
    assert!(matches!(err, ContentError::Pfx(_)), "{err:?}");
    // objectEncoding applies after the conversion, as upstream: PEM is not hex.
    let stored = text("azure/input/pfx-rsa-chain.pfx.b64");
    let err = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Hex,
        &cert_backed(&stored, CONTENT_TYPE_PFX),
    )
    .unwrap_err();
    assert_eq!(err, ContentError::Hex);
}

#[test]
fn private_keys_are_re_encoded_like_go_marshal_pkcs8() {
    // EC keys stored without their public key get it back, on every curve.
    for c in ["p256", "p384", "p521"] {
        let input = fixture(&format!("azure/input/pkcs8-ec-{c}-nopub.der"));
        let want = fixture(&format!("azure/expected/pkcs8-ec-{c}.der"));
        assert_ne!(input, want);
        assert_eq!(*canonical_pkcs8(&input).unwrap(), want, "{c}");
        assert_eq!(
            *canonical_pkcs8(&want).unwrap(),
            want,
            "{c} is already canonical"
        );
    }
    let rsa = fixture("azure/input/pkcs8-rsa.der");
    assert_eq!(
        *canonical_pkcs8(&rsa).unwrap(),
        fixture("azure/expected/pkcs8-rsa.der")
    );
    let err = canonical_pkcs8(b"\x30\x03\x02\x01\x00").unwrap_err();
    assert!(err.starts_with("not a PKCS#8 private key"), "{err}");
    // Ed25519, which upstream's ToPEM rejects too.
    let mut ed25519 = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    ed25519.extend_from_slice(&[7u8; 32]);
    let err = canonical_pkcs8(&ed25519).unwrap_err();
    assert_eq!(
        err,
        "private key algorithm 1.3.101.112 is not supported: only RSA and EC (P-256, P-384, P-521) keys are"
    );
}

// ---- chain order ----

#[test]
fn chain_is_reordered_from_any_permutation() {
    let leaf = fixture("azure/pki/leaf-rsa.der");
    let inter = fixture("azure/pki/inter.der");
    let root = fixture("azure/pki/root.der");
    let certs = [leaf.as_slice(), inter.as_slice(), root.as_slice()];
    let perms = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for p in perms {
        let shuffled: Vec<&[u8]> = p.iter().map(|&i| certs[i]).collect();
        let (order, warning) = order_chain(&shuffled);
        let got: Vec<usize> = order.iter().map(|&i| p[i]).collect();
        assert_eq!(got, [0, 1, 2], "from {p:?}");
        assert_eq!(warning, None);
    }
}

#[test]
fn incomplete_or_unrelated_chains_keep_their_order() {
    let leaf = fixture("azure/pki/leaf-rsa.der");
    let leaf_ec = fixture("azure/pki/leaf-ec.der");
    let root = fixture("azure/pki/root.der");
    let (order, warning) = order_chain(&[root.as_slice(), leaf.as_slice()]);
    assert_eq!(order, [0, 1]);
    assert_eq!(
        warning,
        Some(ChainWarning::Incomplete {
            linked: 1,
            total: 2
        })
    );
    // Two leaves of the same intermediate, without it.
    let (order, warning) = order_chain(&[leaf_ec.as_slice(), leaf.as_slice()]);
    assert_eq!(order, [0, 1]);
    assert!(matches!(warning, Some(ChainWarning::Incomplete { .. })));
    // A single certificate, and garbage.
    assert_eq!(order_chain(&[leaf.as_slice()]), (vec![0], None));
    let (order, warning) = order_chain(&[leaf.as_slice(), b"not a certificate".as_slice()]);
    assert_eq!(order, [0, 1]);
    assert_eq!(warning, Some(ChainWarning::Unparsable { index: 1 }));
}

// ---- cert and key ----

#[test]
fn cert_is_the_leaf_as_one_pem_block() {
    let content = cert_content(&fixture("azure/input/cert-leaf-rsa.der")).unwrap();
    assert_same(
        content.bytes.expose(),
        &fixture("azure/expected/cert-leaf-rsa.pem"),
    );
    assert_eq!(cert_content(&[]).unwrap_err(), ContentError::NoCertificate);
}

fn jwk(name: &str) -> JsonWebKey {
    JsonWebKey::from_json(&fixture(&format!("azure/input/{name}.json"))).unwrap()
}

fn key_pem(jwk: &JsonWebKey) -> Result<Vec<u8>, ContentError> {
    key_content(jwk).map(|c| c.bytes.expose().to_vec())
}

#[test]
fn rsa_key_is_pkix_public_key_pem() {
    let want = fixture("azure/expected/jwk-rsa.pub.pem");
    let mut key = jwk("jwk-rsa");
    assert_same(&key_pem(&key).unwrap(), &want);
    key.kty = "RSA-HSM".into();
    assert_same(&key_pem(&key).unwrap(), &want);
    // A leading zero byte in n does not change the key.
    let n = key.n.clone().unwrap();
    key.n = Some([vec![0u8], n].concat());
    assert_same(&key_pem(&key).unwrap(), &want);
    key.n = None;
    assert_eq!(
        key_pem(&key).unwrap_err().to_string(),
        "the RSA-HSM key has no n"
    );
}

#[test]
fn ec_keys_on_each_curve_are_pkix_public_key_pem() {
    for name in ["jwk-ec-p256", "jwk-ec-p384", "jwk-ec-p521"] {
        let want = fixture(&format!("azure/expected/{name}.pub.pem"));
        let mut key = jwk(name);
        assert_same(&key_pem(&key).unwrap(), &want);
        key.kty = "EC-HSM".into();
        assert_same(&key_pem(&key).unwrap(), &want);
        // Coordinates with their leading zeros stripped are padded back.
        let mut short = key.clone();
        short.x = Some(
            short
                .x
                .as_deref()
                .map(|x| x.iter().skip_while(|b| **b == 0).copied().collect())
                .unwrap(),
        );
        assert_same(&key_pem(&short).unwrap(), &want);
    }
}

#[test]
fn unsupported_keys_and_curves_are_rejected_with_upstream_texts() {
    let mut key = jwk("jwk-ec-p256");
    key.crv = Some("P-256K".into());
    assert_eq!(
        key_pem(&key).unwrap_err().to_string(),
        "curve P-256K is not supported: use P-256, P-384 or P-521"
    );
    let oct = JsonWebKey::from_json(br#"{"kty":"oct","k":"c2VjcmV0"}"#).unwrap();
    let err = key_pem(&oct).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to get key. key type 'oct' currently not supported"),
        "{err}"
    );
    // A point that is not on the curve.
    let mut key = jwk("jwk-ec-p384");
    let mut y = key.y.clone().unwrap();
    y[10] ^= 1;
    key.y = Some(y);
    assert_eq!(
        key_pem(&key).unwrap_err(),
        ContentError::NotOnCurve("P-384".into())
    );
    // The wrong curve for the coordinates' size.
    let mut key = jwk("jwk-ec-p521");
    key.crv = Some("P-256".into());
    assert!(matches!(key_pem(&key), Err(ContentError::NotOnCurve(_))));
    assert!(matches!(
        JsonWebKey::from_json(br#"{"kty":"RSA","n":"!!","e":"AQAB"}"#),
        Err(ContentError::Jwk(_))
    ));
}

#[test]
fn object_content_names_the_object_in_errors() {
    let params = seed_parameters();
    let object = &params.objects[0];
    let err = object_content(object, &object.id(), &Fetched::Cert(vec![1, 2, 3])).unwrap_err();
    assert_eq!(err.object, "secret/sql-password");
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "secret/sql-password: Key Vault returned a certificate for objectType secret"
    );
    let ok = object_content(object, &object.id(), &Fetched::Secret(plain("Pa55w0rd!"))).unwrap();
    assert_eq!(ok.bytes.expose(), b"Pa55w0rd!");
    let err = object_content(
        object,
        "secret/sql-password/3",
        &Fetched::Secret(FetchedSecret::default()),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("secret/sql-password/3: secret value is nil"),
        "{err}"
    );
}

// ---- the seed SecretProviderClass ----

fn seed_spec_parameters() -> BTreeMap<String, String> {
    let spc: serde_yaml::Value =
        serde_yaml::from_slice(&fixture("seed/secretproviderclass.yaml")).unwrap();
    assert_eq!(spc["apiVersion"], "secrets-store.csi.x-k8s.io/v1alpha1");
    serde_yaml::from_value(spc["spec"]["parameters"].clone()).unwrap()
}

fn seed_parameters() -> AzureParameters {
    AzureParameters::parse(&seed_spec_parameters(), &ParseOptions::default()).unwrap()
}

#[test]
fn seed_secret_provider_class_is_accepted_unchanged() {
    let raw = seed_spec_parameters();
    assert!(raw.contains_key("resourceGroup") && raw.contains_key("subscriptionId"));
    let params = seed_parameters();
    assert_eq!(params.vault_name.as_str(), "kv-demo");
    assert_eq!(params.vault_url(), "https://kv-demo.vault.azure.net/");
    assert_eq!(params.tenant_id, "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e");
    assert_eq!(params.cloud.name, "AzurePublicCloud");
    assert!(params.use_vm_managed_identity && !params.use_pod_identity);
    assert_eq!(
        params.user_assigned_identity_id.as_deref(),
        Some("5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21")
    );
    assert_eq!(params.objects.len(), 1);
    let o = &params.objects[0];
    assert_eq!(
        (o.name.as_str(), o.alias.as_deref()),
        ("sql-password", Some("SECRET_1"))
    );
    assert_eq!(o.version, None);
    assert!(params.warnings.is_empty(), "{:?}", params.warnings);

    let plan = params.plan(FileMode::DEFAULT).unwrap();
    assert_eq!(plan.len(), 1);
    let file = plan
        .file("SECRET_1")
        .expect("secretObjects' objectName SECRET_1 is a planned file");
    assert_eq!(file.object_id, "secret/sql-password");
    assert_eq!(file.mode, FileMode::DEFAULT);

    let resolved = resolve_identity(
        &params,
        &IdentityInputs {
            secrets: &BTreeMap::new(),
            service_account_tokens: None,
            pod: &PodInfo {
                name: "web-0".into(),
                namespace: "default".into(),
                service_account: "default".into(),
            },
            node_name: "node-a",
        },
        &IdentityKeySalt::from_bytes(b"salt"),
    )
    .unwrap();
    assert_eq!(
        resolved.config,
        IdentityConfig::ManagedIdentity {
            user_assigned_client_id: Some("5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21".into())
        }
    );
    assert_eq!(
        resolved.key,
        IdentityKey::ManagedIdentity {
            node: "node-a".into(),
            identity: "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21".into()
        }
    );
}

/// File contents, fetched secrets and conversion results print no secret bytes.
#[test]
fn debug_of_contents_never_holds_secret_bytes() {
    let value = "Sup3rS3cretValue-do-not-log";
    let fetched = Fetched::Secret(plain(value));
    let content = secret_content(ObjectFormat::Pem, ObjectEncoding::Utf8, &plain(value)).unwrap();
    let stored = text("azure/input/pfx-rsa-chain.pfx.b64");
    let pem = secret_content(
        ObjectFormat::Pem,
        ObjectEncoding::Utf8,
        &cert_backed(&stored, CONTENT_TYPE_PFX),
    )
    .unwrap();
    let shown = format!(
        "{fetched:?} {content:?} {pem:?} {:?}",
        cert_backed(&stored, CONTENT_TYPE_PFX)
    );
    assert!(shown.contains("SecretBytes(<redacted"), "{shown}");
    for needle in [value, "S3cret", "PRIVATE KEY", &stored[..40], "MII"] {
        assert!(!shown.contains(needle), "{needle} leaked in {shown}");
    }
}
