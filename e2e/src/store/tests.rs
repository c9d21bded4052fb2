//! Unit tests of the store.
use super::*;

fn store() -> (Store, Directory) {
    let seed = Seed::demo();
    let dir = Directory::from_seed(&seed).unwrap();
    (Store::from_seed(&seed, &dir).unwrap(), dir)
}

#[test]
fn new_version_becomes_latest_and_can_be_disabled_and_deleted() {
    let (mut s, _) = store();
    let v2 = s
        .add_secret_version(
            "kv-demo",
            "sql-password",
            NewSecretVersion {
                value: "v2".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let latest = find_version(&s.vault("kv-demo").unwrap().secrets["sql-password"], None).unwrap();
    assert_eq!(latest.version, v2);
    assert_eq!(latest.value, "v2");
    s.set_enabled(
        "kv-demo",
        ObjectKind::Secret,
        "sql-password",
        Some(&v2),
        false,
    )
    .unwrap();
    assert!(
        !find_version(
            &s.vault("kv-demo").unwrap().secrets["sql-password"],
            Some(&v2)
        )
        .unwrap()
        .attributes
        .enabled
    );
    s.delete("kv-demo", ObjectKind::Secret, "sql-password", Some(&v2))
        .unwrap();
    assert_eq!(s.vault("kv-demo").unwrap().secrets["sql-password"].len(), 1);
    assert!(matches!(
        s.delete("kv-demo", ObjectKind::Secret, "sql-password", Some(&v2)),
        Err(EmulatorError::VersionNotFound { .. })
    ));
}

#[test]
fn bad_names_and_versions_are_rejected() {
    let (mut s, _) = store();
    let bad = NewSecretVersion {
        value: "x".into(),
        ..Default::default()
    };
    assert!(s.add_secret_version("kv-demo", "a_b", bad.clone()).is_err());
    let mut bad_version = bad.clone();
    bad_version.attributes.version = Some("XYZ".into());
    assert!(s.add_secret_version("kv-demo", "ok", bad_version).is_err());
    assert!(matches!(
        s.add_secret_version("nope", "ok", bad),
        Err(EmulatorError::VaultNotFound(_))
    ));
}

#[test]
fn certificate_creates_key_and_secret_with_same_version() {
    let (mut s, _) = store();
    let v = s
        .add_certificate_version(
            "kv-demo",
            "web",
            &CertificateVersionSeed {
                kty: crate::seed::KeyType::Ec,
                content_type: Some(CONTENT_TYPE_PEM.into()),
                ..Default::default()
            },
        )
        .unwrap();
    let vault = s.vault("kv-demo").unwrap();
    assert_eq!(vault.keys["web"][0].version, v);
    assert!(vault.keys["web"][0].managed);
    let secret = &vault.secrets["web"][0];
    assert_eq!(secret.version, v);
    assert!(secret.value.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(
        s.add_secret_version("kv-demo", "web", NewSecretVersion::default())
            .is_err()
    );
}

#[test]
fn validity_days_sets_a_short_not_after_and_its_attributes() {
    let (mut s, _) = store();
    s.add_certificate_version(
        "kv-demo",
        "short",
        &CertificateVersionSeed {
            kty: crate::seed::KeyType::Ec,
            validity_days: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    let cert = &s.vault("kv-demo").unwrap().certificates["short"][0];
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let day = 86_400;
    assert!((now + 3 * day - 60..=now + 3 * day + 60).contains(&cert.material.not_after));
    // exp defaults to the certificate's notAfter, as in Key Vault; the
    // policy counts whole months.
    assert_eq!(cert.attributes.exp, Some(cert.material.not_after));
    assert_eq!(cert.validity_months, 1);
}

#[test]
fn access_is_per_identity_and_operation() {
    let (s, dir) = store();
    let vault = s.vault("kv-demo").unwrap();
    let node = dir.find("node-identity").unwrap();
    assert!(vault.allows(&node.client_id, &node.object_id, ObjectKind::Secret, false));
    assert!(!vault.allows(&node.client_id, &node.object_id, ObjectKind::Key, false));
    assert!(!vault.allows("unknown", "unknown", ObjectKind::Secret, false));
}
