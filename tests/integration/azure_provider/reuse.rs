//! Reuse: one token request per identity, one 401 challenge per client (not
//! per mount or per concurrent request), the newest workload identity
//! assertion, and a bounded identity cache.

use std::time::Duration;

use secretfs::provider::azure::AzureProvider;
use secretfs_e2e::{CounterFilter, EmulatorConfig, Route, ServiceAccountTokenRequest};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";

/// Ten new secrets `s0`…`s9` and the `objects` parameter naming them.
fn ten_secrets(emu: &secretfs_e2e::EmulatorHandle) -> String {
    let entries: Vec<String> = (0..10)
        .map(|i| {
            emu.set_secret(VAULT, &format!("s{i}"), &format!("value-{i}"))
                .unwrap();
            object(&format!("s{i}"), "secret", &[])
        })
        .collect();
    objects(&entries.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn one_token_and_one_challenge_for_twenty_mounts_of_one_identity() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(VAULT, &objects(&[&object("rotating", "secret", &[])]));
    for _ in 0..20 {
        let r = mount_ok(&provider, &request).await;
        assert_eq!(file_text(&r, "rotating"), "fifth-value");
    }
    assert_eq!(emu.count(&CounterFilter::route(Route::EntraToken)), 1);
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(401)),
        1
    );
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::SecretGet)
                .identity(APP_SP)
                .status(200)
        ),
        20
    );
    assert_eq!(provider.cached_identities(), 1);
}

#[tokio::test]
async fn concurrent_first_fetches_share_one_challenge_per_client_and_one_token() {
    let emu = start().await;
    let provider = provider(&emu);
    let mut request = sp_request(VAULT, &ten_secrets(&emu));
    let r = mount_ok(&provider, &request).await;
    assert_eq!(r.files.len(), 10);
    for i in 0..10 {
        assert_eq!(file_text(&r, &format!("s{i}")), format!("value-{i}"));
    }
    assert_eq!(emu.count(&CounterFilter::route(Route::EntraToken)), 1);
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(401)),
        1
    );

    // Three object types: one challenge per client, on the first mount only.
    emu.reset_counters();
    request.parameters.insert(
        "objects".into(),
        objects(&[
            &object("rotating", "secret", &[]),
            &object("rsa-key", "key", &[]),
            &object("ec-key", "key", &[]),
            &object("pfx-cert", "cert", &[]),
            &object("pem-cert", "cert", &[]),
        ]),
    );
    for _ in 0..3 {
        mount_ok(&provider, &request).await;
    }
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(401)),
        0
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::KeyGet).status(401)),
        1
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::CertificateGet).status(401)),
        1
    );
    assert_eq!(emu.count(&CounterFilter::route(Route::EntraToken)), 0);
    assert_eq!(
        emu.count(&CounterFilter::route(Route::KeyGet).status(200)),
        6
    );
}

#[tokio::test]
async fn one_imds_request_for_twenty_fetches() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = request(
        "kv-demo",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_MI),
        ],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    for _ in 0..20 {
        mount_ok(&provider, &request).await;
    }
    assert_eq!(emu.count(&CounterFilter::route(Route::ImdsToken)), 1);
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(401)),
        1
    );
}

#[tokio::test]
async fn workload_identity_reuses_its_token_across_republishes() {
    let emu = start().await;
    let provider = provider(&emu);
    let objects = objects(&[&object("rotating", "secret", &[])]);
    for _ in 0..20 {
        // kubelet sends a new service-account token on every republish.
        let request = wi_request(&emu, VAULT, &objects);
        mount_ok(&provider, &request).await;
    }
    assert_eq!(
        emu.count(&CounterFilter::route(Route::EntraToken).identity(WORKLOAD_APP)),
        1
    );
    assert_eq!(provider.cached_identities(), 1);
}

#[tokio::test]
async fn workload_identity_uses_the_newest_assertion() {
    // Access tokens that live less than the refresh margin are fetched anew
    // on every mount, each time with the assertion in the slot.
    let mut config = EmulatorConfig::with_seed(conformance_seed());
    config.token_lifetime = Duration::from_secs(120);
    let emu = start_with(config).await;
    let provider = provider(&emu);
    let objects = objects(&[&object("rotating", "secret", &[])]);
    let short = |emu: &secretfs_e2e::EmulatorHandle| {
        emu.mint_service_account_token(&ServiceAccountTokenRequest {
            issuer: String::new(),
            namespace: "default".into(),
            service_account: "workload-sa".into(),
            audience: None,
            expires_in: Some(1),
        })
        .expect("token")
    };
    let mut request = request(VAULT, &[("clientID", WORKLOAD_APP)], &objects);
    request.service_account_tokens = Some(tokens_json(&short(&emu)));
    mount_ok(&provider, &request).await;
    // The first assertion expires; the republish brings a new one.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    request.service_account_tokens = Some(tokens_json(&short(&emu)));
    mount_ok(&provider, &request).await;
    // First mount: the pod's token is accepted (one exchange), then the
    // vault request renews the 120 s access token (one more); republish:
    // one exchange, with the newest assertion (the expired one would be
    // refused, and the count of successes would stay at 2).
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::EntraToken)
                .identity(WORKLOAD_APP)
                .status(200)
        ),
        3
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::EntraToken).identity(WORKLOAD_APP)),
        3,
        "no refused exchange"
    );
}

#[tokio::test]
async fn the_identity_cache_is_bounded() {
    let emu = start().await;
    let mut config = config(&emu);
    config.max_identities = 2;
    let provider = AzureProvider::new(config).unwrap();
    let objects = objects(&[&object("sql-password", "secret", &[])]);
    let mi = request(
        "kv-demo",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_MI),
        ],
        &objects,
    );
    let sp = sp_request("kv-demo", &objects);
    let wi = wi_request(&emu, "kv-demo", &objects);
    for r in [&mi, &sp, &wi] {
        mount_ok(&provider, r).await;
    }
    assert_eq!(provider.cached_identities(), 2);
    // The evicted (least recently used) managed identity is built anew.
    mount_ok(&provider, &mi).await;
    assert_eq!(emu.count(&CounterFilter::route(Route::ImdsToken)), 2);
    assert_eq!(provider.cached_identities(), 2);
    for r in [&sp, &wi, &mi] {
        mount_ok(&provider, r).await;
    }
    assert_eq!(provider.cached_identities(), 2);
}

#[tokio::test]
async fn simultaneous_first_mounts_share_one_token_and_one_challenge() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(VAULT, &ten_secrets(&emu));
    let mounts = (0..5).map(|_| mount_ok(&provider, &request));
    let results = futures::future::join_all(mounts).await;
    assert!(results.iter().all(|r| r.files.len() == 10));
    assert_eq!(emu.count(&CounterFilter::route(Route::EntraToken)), 1);
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(401)),
        1
    );
    // The shared cache's single flight: concurrent mounts of one identity
    // share each object's request (upstream: 5 × 10).
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(200)),
        10
    );
}

/// The cost of a refresh cycle depends on distinct objects, not volumes:
/// 100 volumes × 10 objects of one identity make 10 vault GETs; a second
/// identity doubles that, never more.
#[tokio::test]
async fn a_hundred_volumes_of_one_identity_cost_ten_gets_per_cycle() {
    let emu = start().await;
    let provider = provider(&emu);
    let objects = ten_secrets(&emu);
    let mut sp = sp_request(VAULT, &objects);
    let mut wi = wi_request(&emu, VAULT, &objects);
    // Warm tokens and challenges, then count only vault reads.
    mount_ok(&provider, &sp).await;
    mount_ok(&provider, &wi).await;
    let gets = || emu.count(&CounterFilter::route(Route::SecretGet).status(200));

    for cycle in 0..2 {
        // Everything cached is older than this cycle's max age: refetch.
        tokio::time::sleep(Duration::from_millis(60)).await;
        sp.max_age = Duration::from_millis(50);
        wi.max_age = Duration::from_millis(50);
        emu.reset_counters();
        let volumes = (0..100).map(|_| mount_ok(&provider, &sp));
        let results = futures::future::join_all(volumes).await;
        assert!(results.iter().all(|r| r.files.len() == 10));
        assert_eq!(
            gets(),
            10,
            "cycle {cycle}: one GET per object for 100 volumes"
        );
        let volumes = (0..100).map(|_| mount_ok(&provider, &wi));
        futures::future::join_all(volumes).await;
        assert_eq!(
            gets(),
            20,
            "cycle {cycle}: a second identity fetches its own"
        );
    }
    // Within max age nothing is asked again.
    sp.max_age = Duration::from_secs(3600);
    emu.reset_counters();
    mount_ok(&provider, &sp).await;
    assert_eq!(gets(), 0);
}

/// Two classes that name the same vault objects under other aliases, at other
/// positions, with other modes, history layouts and `optional` flags share the
/// cache: the second class makes no vault request, and each gets its own
/// file names and modes.
#[tokio::test]
async fn classes_naming_one_object_differently_share_one_fetch() {
    let emu = start().await;
    let provider = provider(&emu);
    emu.set_secret(VAULT, "shared", "shared-value").unwrap();
    let mut first = sp_request(
        VAULT,
        &objects(&[
            &object("shared", "secret", &[]),
            &object("rotating", "secret", &[("objectVersionHistory", "2")]),
        ]),
    );
    first.max_age = Duration::from_secs(3600);
    let r1 = mount_ok(&provider, &first).await;
    let mut second = sp_request(
        VAULT,
        &objects(&[
            &object(
                "rotating",
                "secret",
                &[("objectVersionHistory", "2"), ("objectAlias", "hist")],
            ),
            &object(
                "shared",
                "secret",
                &[
                    ("objectAlias", "dir/other-name"),
                    ("filePermission", "0400"),
                    ("optional", "true"),
                ],
            ),
        ]),
    );
    second.max_age = Duration::from_secs(3600);
    second.default_mode = secretfs::provider::FileMode::new(0o640).unwrap();
    emu.reset_counters();
    let r2 = mount_ok(&provider, &second).await;
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet)),
        0,
        "the second class is served from the cache"
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretVersions)),
        0,
        "the version listing too"
    );

    let modes = |r: &secretfs::provider::MountResponse| -> Vec<(String, u32)> {
        let mut v: Vec<_> = r
            .files
            .iter()
            .map(|f| (f.path.clone(), f.mode.bits()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        modes(&r1),
        [
            ("rotating/0".to_owned(), 0o644),
            ("rotating/1".to_owned(), 0o644),
            ("shared".to_owned(), 0o644),
        ]
    );
    assert_eq!(
        modes(&r2),
        [
            ("dir/other-name".to_owned(), 0o400),
            ("hist/0".to_owned(), 0o640),
            ("hist/1".to_owned(), 0o640),
        ]
    );
    assert_eq!(file_text(&r2, "dir/other-name"), "shared-value");
    assert_eq!(file_text(&r2, "hist/0"), file_text(&r1, "rotating/0"));
    assert_eq!(file_text(&r2, "hist/1"), file_text(&r1, "rotating/1"));
    assert_ne!(file_text(&r2, "hist/0"), file_text(&r2, "hist/1"));
    // The status ids name vault objects, not files: the same for both.
    assert_eq!(r1.versions, r2.versions);
}
