//! Version pinning and `objectVersionHistory` (listing with the pager).

use secretfs::provider::ErrorKind;
use secretfs_e2e::{CounterFilter, NewSecretVersion, Route};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";

fn v(i: u32) -> String {
    format!("{i:032}")
}

#[tokio::test]
async fn a_pinned_version_is_fetched_and_reported() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(
        VAULT,
        &objects(&[&object("rotating", "secret", &[("objectVersion", &v(2))])]),
    );
    let r = mount_ok(&provider, &request).await;
    assert_eq!(file_text(&r, "rotating"), "second-value");
    assert_eq!(r.versions[0].version, v(2));

    // A disabled version is refused by the vault: Denied, with the fix.
    let request = sp_request(
        VAULT,
        &objects(&[&object("rotating", "secret", &[("objectVersion", &v(3))])]),
    );
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors[0].kind, ErrorKind::Denied);
    assert!(
        errors[0].message.contains("SecretDisabled") && errors[0].message.contains("enable it"),
        "{}",
        errors[0].message
    );
}

/// A class may name one object twice (two aliases, two versions); both
/// have the id `secret/<name>`. Upstream's driver keeps the object versions
/// in a map keyed by id, so the pod status records the version of the later
/// entry in `objects`; the response says the same, once.
#[tokio::test]
async fn one_object_named_twice_reports_the_later_entrys_version_once() {
    let emu = start().await;
    let provider = provider(&emu);
    for (first, second) in [(5, 2), (2, 5)] {
        let request = sp_request(
            VAULT,
            &objects(&[
                &object(
                    "rotating",
                    "secret",
                    &[("objectAlias", "a"), ("objectVersion", &v(first))],
                ),
                &object(
                    "rotating",
                    "secret",
                    &[("objectAlias", "b"), ("objectVersion", &v(second))],
                ),
            ]),
        );
        let r = mount_ok(&provider, &request).await;
        assert_eq!(r.files.len(), 2);
        let versions: Vec<(String, String)> = r
            .versions
            .iter()
            .map(|x| (x.id.clone(), x.version.clone()))
            .collect();
        assert_eq!(versions, [("secret/rotating".to_owned(), v(second))]);
    }
}

#[tokio::test]
async fn history_mounts_the_newest_enabled_versions() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(
        VAULT,
        &objects(&[&object(
            "rotating",
            "secret",
            &[("objectAlias", "db"), ("objectVersionHistory", "3")],
        )]),
    );
    let r = mount_ok(&provider, &request).await;
    // Version 3 is disabled: 5, 4, 2.
    assert_eq!(file_text(&r, "db/0"), "fifth-value");
    assert_eq!(file_text(&r, "db/1"), "fourth-value");
    assert_eq!(file_text(&r, "db/2"), "second-value");
    assert_eq!(r.files.len(), 3);
    let versions: Vec<(String, String)> = r
        .versions
        .iter()
        .map(|x| (x.id.clone(), x.version.clone()))
        .collect();
    assert_eq!(
        versions,
        [
            ("secret/rotating/0".to_owned(), v(5)),
            ("secret/rotating/1".to_owned(), v(4)),
            ("secret/rotating/2".to_owned(), v(2)),
        ]
    );
    let ids: Vec<&str> = r.files.iter().map(|f| f.object_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "secret/rotating/0",
            "secret/rotating/1",
            "secret/rotating/2"
        ]
    );

    // More slots than enabled versions: fewer files. Pinned start.
    let request = sp_request(
        VAULT,
        &objects(&[
            &object("rotating", "secret", &[("objectVersionHistory", "10")]),
            &object(
                "rotating",
                "secret",
                &[
                    ("objectAlias", "from4"),
                    ("objectVersion", &v(4)),
                    ("objectVersionHistory", "2"),
                ],
            ),
        ]),
    );
    let r = mount_ok(&provider, &request).await;
    let mut paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "from4/0",
            "from4/1",
            "rotating/0",
            "rotating/1",
            "rotating/2",
            "rotating/3"
        ]
    );
    assert_eq!(file_text(&r, "rotating/3"), "first-value");
    assert_eq!(file_text(&r, "from4/0"), "fourth-value");
    assert_eq!(file_text(&r, "from4/1"), "second-value");

    // Starting at a disabled version: Denied naming the object.
    let request = sp_request(
        VAULT,
        &objects(&[&object(
            "rotating",
            "secret",
            &[("objectVersion", &v(3)), ("objectVersionHistory", "2")],
        )]),
    );
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors[0].object, "secret/rotating");
    assert_eq!(errors[0].kind, ErrorKind::Denied);
}

#[tokio::test]
async fn history_pages_through_many_versions() {
    let emu = start().await;
    for i in 0..30 {
        let mut new = NewSecretVersion {
            value: format!("value-{i}"),
            ..Default::default()
        };
        new.attributes.created = Some(1_750_000_000 + i);
        new.attributes.enabled = true;
        emu.add_secret_version(VAULT, "many", new).unwrap();
    }
    let provider = provider(&emu);
    let request = sp_request(
        VAULT,
        &objects(&[&object("many", "secret", &[("objectVersionHistory", "3")])]),
    );
    emu.reset_counters();
    let r = mount_ok(&provider, &request).await;
    assert_eq!(file_text(&r, "many/0"), "value-29");
    assert_eq!(file_text(&r, "many/1"), "value-28");
    assert_eq!(file_text(&r, "many/2"), "value-27");
    // 30 versions, 25 per page: two listing requests.
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretVersions).status(200)),
        2
    );
}

#[tokio::test]
async fn key_and_certificate_history() {
    let emu = start().await;
    let provider = provider(&emu);
    emu.add_certificate_version(VAULT, "pem-cert", None)
        .unwrap();
    let request = sp_request(
        VAULT,
        &objects(&[
            &object("rsa-key", "key", &[("objectVersionHistory", "2")]),
            &object("pem-cert", "cert", &[("objectVersionHistory", "2")]),
        ]),
    );
    let r = mount_ok(&provider, &request).await;
    for path in ["rsa-key/0", "rsa-key/1"] {
        assert!(file_text(&r, path).starts_with("-----BEGIN PUBLIC KEY-----"));
    }
    assert_ne!(file_text(&r, "rsa-key/0"), file_text(&r, "rsa-key/1"));
    for path in ["pem-cert/0", "pem-cert/1"] {
        assert!(file_text(&r, path).starts_with("-----BEGIN CERTIFICATE-----"));
    }
    assert_ne!(file_text(&r, "pem-cert/0"), file_text(&r, "pem-cert/1"));
    assert_eq!(r.versions.len(), 4);
}
