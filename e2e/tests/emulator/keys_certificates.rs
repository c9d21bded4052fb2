//! Keys (public JWK only) and certificates with their backing key and secret.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use secretfs_e2e::ObjectKind;

use crate::common::*;

fn b64url_len(v: &serde_json::Value) -> usize {
    URL_SAFE_NO_PAD
        .decode(v.as_str().expect("base64url string"))
        .expect("base64url without padding")
        .len()
}

#[tokio::test]
async fn rsa_key_has_n_and_e_and_no_private_parts() {
    let env = start().await;
    let j = env
        .get_as_app("kv-conformance", &format!("/keys/rsa-key/?{API}"))
        .await
        .json();
    let key = &j["key"];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(b64url_len(&key["n"]), 384, "latest version is RSA-3072");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(key.get(private).is_none(), "{private} must not be served");
    }
    let kid = key["kid"].as_str().unwrap();
    assert!(is_version(kid.rsplit('/').next().unwrap()), "{kid}");
    assert_eq!(key["key_ops"].as_array().unwrap().len(), 6);
    assert_eq!(j["attributes"]["enabled"], true);
    assert!(j.get("managed").is_none());
    // The first version is RSA-2048.
    let list = env
        .get_as_app("kv-conformance", &format!("/keys/rsa-key/versions?{API}"))
        .await
        .json();
    let first = list["value"][0]["kid"].as_str().unwrap();
    let j = env
        .get_url(&format!("{first}?{API}"), Some(&env.token("app-sp")))
        .await
        .json();
    assert_eq!(b64url_len(&j["key"]["n"]), 256);
}

#[tokio::test]
async fn ec_keys_have_curve_and_coordinates() {
    let env = start().await;
    for (name, crv, len) in [("ec-key", "P-256", 32), ("ec-384-key", "P-384", 48)] {
        let j = env
            .get_as_app("kv-conformance", &format!("/keys/{name}?{API}"))
            .await
            .json();
        let key = &j["key"];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], crv);
        assert_eq!(b64url_len(&key["x"]), len);
        assert_eq!(b64url_len(&key["y"]), len);
        assert!(key.get("d").is_none() && key.get("n").is_none());
    }
}

#[tokio::test]
async fn disabled_key_is_403_key_disabled_and_missing_key_404() {
    let env = start().await;
    env.emu
        .set_enabled("kv-conformance", ObjectKind::Key, "ec-key", None, false)
        .unwrap();
    let r = env
        .get_as_app("kv-conformance", &format!("/keys/ec-key?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.kv_error().1.as_deref(), Some("KeyDisabled"));
    let r = env
        .get_as_app("kv-conformance", &format!("/keys/nope?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.kv_error().0, "KeyNotFound");
    let r = env
        .get_as_app("kv-conformance", &format!("/certificates/nope?{API}"))
        .await;
    assert_eq!(r.kv_error().0, "CertificateNotFound");
}

#[tokio::test]
async fn certificate_bundle_links_key_and_secret_of_the_same_version() {
    let env = start().await;
    let port = env.emu.https_addr().port();
    let base = format!("https://kv-conformance.vault.azure.net:{port}");
    let j = env
        .get_as_app("kv-conformance", &format!("/certificates/pfx-cert/?{API}"))
        .await
        .json();
    let id = j["id"].as_str().unwrap();
    let version = id.rsplit('/').next().unwrap();
    assert!(is_version(version));
    assert_eq!(j["kid"], format!("{base}/keys/pfx-cert/{version}"));
    assert_eq!(j["sid"], format!("{base}/secrets/pfx-cert/{version}"));
    let der = STANDARD
        .decode(j["cer"].as_str().unwrap())
        .expect("cer is standard base64");
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    assert_eq!(
        j["x5t"].as_str().unwrap(),
        URL_SAFE_NO_PAD.encode(sha1.as_ref())
    );
    let policy = &j["policy"];
    assert_eq!(policy["key_props"]["kty"], "RSA");
    assert_eq!(policy["key_props"]["key_size"], 2048);
    assert_eq!(
        policy["secret_props"]["contentType"],
        "application/x-pkcs12"
    );
    assert_eq!(policy["x509_props"]["subject"], "CN=pfx.example.test");
    assert_eq!(policy["issuer"]["name"], "Self");

    // Backing secret: password-less PFX holding the same certificate.
    let s = env
        .get_as_app(
            "kv-conformance",
            &format!("/secrets/pfx-cert/{version}?{API}"),
        )
        .await
        .json();
    assert_eq!(s["managed"], true);
    assert_eq!(s["kid"], format!("{base}/keys/pfx-cert/{version}"));
    assert_eq!(s["contentType"], "application/x-pkcs12");
    let pfx = STANDARD.decode(s["value"].as_str().unwrap()).unwrap();
    let store =
        p12_keystore::KeyStore::from_pkcs12(&pfx, "", p12_keystore::Pkcs12ImportPolicy::Strict)
            .expect("empty-password PFX");
    let (_, chain) = store
        .private_key_chain()
        .expect("a private key with its chain");
    assert_eq!(chain.certs()[0].as_der(), der.as_slice());

    // Backing key: same version, managed, same public key type.
    let k = env
        .get_as_app("kv-conformance", &format!("/keys/pfx-cert/{version}?{API}"))
        .await
        .json();
    assert_eq!(k["managed"], true);
    assert_eq!(k["key"]["kty"], "RSA");

    // PFX → PEM conversion on request.
    let pem = env
        .get_as_app(
            "kv-conformance",
            &format!("/secrets/pfx-cert/{version}?{API}&outContentType=application/x-pem-file"),
        )
        .await
        .json();
    assert_eq!(pem["contentType"], "application/x-pem-file");
    let text = pem["value"].as_str().unwrap();
    assert!(
        text.starts_with("-----BEGIN PRIVATE KEY-----\n")
            && text.contains("-----BEGIN CERTIFICATE-----\n")
    );
}

#[tokio::test]
async fn pem_certificate_backing_secret_holds_key_and_chain() {
    let env = start().await;
    let c = env
        .get_as_app("kv-conformance", &format!("/certificates/pem-cert?{API}"))
        .await
        .json();
    assert_eq!(c["policy"]["key_props"]["kty"], "EC");
    assert_eq!(c["policy"]["key_props"]["crv"], "P-256");
    let version = c["id"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let s = env
        .get_as_app("kv-conformance", &format!("/secrets/pem-cert?{API}"))
        .await
        .json();
    assert!(s["id"].as_str().unwrap().ends_with(&version));
    assert_eq!(s["contentType"], "application/x-pem-file");
    let value = s["value"].as_str().unwrap();
    let cert_b64: String = value
        .split("-----BEGIN CERTIFICATE-----\n")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .unwrap()
        .lines()
        .collect();
    assert_eq!(cert_b64, c["cer"].as_str().unwrap());
    // A PEM secret cannot be converted to PFX.
    let r = env
        .get_as_app(
            "kv-conformance",
            &format!("/secrets/pem-cert?{API}&outContentType=application/x-pkcs12"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn renewing_a_certificate_adds_a_version_to_all_three_objects() {
    let env = start().await;
    let v2 = env
        .emu
        .add_certificate_version("kv-conformance", "pfx-cert", None)
        .unwrap();
    for coll in ["certificates", "keys", "secrets"] {
        let j = env
            .get_as_app("kv-conformance", &format!("/{coll}/pfx-cert?{API}"))
            .await
            .json();
        let id = j["id"]
            .as_str()
            .or(j["key"]["kid"].as_str())
            .unwrap()
            .to_string();
        assert!(id.ends_with(&v2), "{coll}: {id}");
    }
}

/// A non-exportable certificate's secret holds the certificate only, as
/// Key Vault serves it: no key in the PEM, no key bag in the PFX, none in a
/// PEM conversion either.
#[tokio::test]
async fn a_non_exportable_certificates_secret_holds_no_private_key() {
    let env = start().await;
    for (name, content_type) in [
        ("locked-pfx", "application/x-pkcs12"),
        ("locked-pem", "application/x-pem-file"),
    ] {
        env.emu
            .add_certificate_version(
                "kv-conformance",
                name,
                Some(&secretfs_e2e::CertificateVersionSeed {
                    content_type: Some(content_type.into()),
                    exportable: Some(false),
                    ..Default::default()
                }),
            )
            .unwrap();
    }
    let c = env
        .get_as_app("kv-conformance", &format!("/certificates/locked-pfx?{API}"))
        .await
        .json();
    assert_eq!(c["policy"]["key_props"]["exportable"], false);
    let pfx = env
        .get_as_app("kv-conformance", &format!("/secrets/locked-pfx?{API}"))
        .await
        .json();
    let der = STANDARD.decode(pfx["value"].as_str().unwrap()).unwrap();
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(&der, "").unwrap();
    assert!(archive.keys.is_empty(), "no key bag");
    assert_eq!(archive.certs.len(), 1, "the certificate");
    for path in [
        format!("/secrets/locked-pem?{API}"),
        format!("/secrets/locked-pfx?{API}&outContentType=application/x-pem-file"),
    ] {
        let s = env.get_as_app("kv-conformance", &path).await.json();
        let value = s["value"].as_str().unwrap();
        assert!(!value.contains("PRIVATE KEY"), "{path}: {value}");
        assert_eq!(
            value.matches("-----BEGIN CERTIFICATE-----").count(),
            1,
            "{path}"
        );
    }
}

/// The routes the official SDKs use beyond plain reads: a certificate's
/// policy is served; key operations and writes are answered as Key Vault
/// answers an identity without that permission (403 `Forbidden` /
/// `AccessDenied`), not 404 or 405.
#[tokio::test]
async fn the_policy_is_served_and_key_operations_and_writes_are_403() {
    let env = start().await;
    let c = env
        .get_as_app("kv-conformance", &format!("/certificates/pfx-cert?{API}"))
        .await
        .json();
    let policy = env
        .get_as_app(
            "kv-conformance",
            &format!("/certificates/pfx-cert/policy?{API}"),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.text);
    assert_eq!(policy.json(), c["policy"]);
    let missing = env
        .get_as_app(
            "kv-conformance",
            &format!("/certificates/no-such-cert/policy?{API}"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let key = env
        .get_as_app("kv-conformance", &format!("/keys/rsa-key?{API}"))
        .await
        .json();
    let kid = key["key"]["kid"].as_str().unwrap().to_owned();
    let token = env.token("app-sp");
    let send = |method: reqwest::Method, url: String| {
        env.http
            .request(method, url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"alg":"RS256","value":"AAAA"}"#)
            .send()
    };
    let cases = [
        (
            reqwest::Method::POST,
            format!("{kid}/sign?{API}"),
            "keys sign",
        ),
        (
            reqwest::Method::POST,
            format!("{kid}/wrapKey?{API}"),
            "keys wrapKey",
        ),
        (
            reqwest::Method::POST,
            format!("{kid}/verify?{API}"),
            "keys verify",
        ),
        (
            reqwest::Method::PUT,
            env.url("kv-conformance", &format!("/secrets/new-one?{API}")),
            "secrets set",
        ),
        (
            reqwest::Method::DELETE,
            env.url("kv-conformance", &format!("/secrets/tagged?{API}")),
            "secrets delete",
        ),
        (
            reqwest::Method::POST,
            env.url(
                "kv-conformance",
                &format!("/certificates/new-cert/create?{API}"),
            ),
            "certificates create",
        ),
    ];
    for (method, url, permission) in cases {
        let reply = read(send(method.clone(), url.clone()).await.unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {url}: {}",
            reply.text
        );
        let (code, inner, message) = reply.kv_error();
        assert_eq!(
            (code.as_str(), inner.as_deref()),
            ("Forbidden", Some("AccessDenied"))
        );
        assert!(
            message.contains(&format!(
                "does not have {permission} permission on key vault 'kv-conformance"
            )),
            "{method} {url}: {message}"
        );
    }
}
