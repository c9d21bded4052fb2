//! Listing versions: maxresults, $skiptoken, nextLink quirks.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn versions_page_with_maxresults_and_a_quirky_next_link() {
    let env = start().await;
    let port = env.emu.https_addr().port();
    let token = env.token("app-sp");
    let mut url = env.url(
        "kv-conformance",
        &format!("/secrets/rotating/versions?{API}&maxresults=2"),
    );
    let mut pages = 0;
    let mut items: Vec<Value> = Vec::new();
    loop {
        let r = env.get_url(&url, Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let j = r.json();
        let page = j["value"].as_array().unwrap().clone();
        assert!(page.len() <= 2);
        pages += 1;
        items.extend(page);
        match &j["nextLink"] {
            Value::Null => break,
            Value::String(next) => {
                let prefix = format!(
                    "https://kv-conformance.vault.azure.net:{port}/secrets/rotating/versions?api-version=7.2&$skiptoken="
                );
                assert!(next.starts_with(&prefix), "{next}");
                assert!(next.ends_with("&maxresults=2"), "{next}");
                // Follow it with our own api-version, as the SDKs do.
                url = next.replace("api-version=7.2", API);
            }
            other => panic!("nextLink is {other}"),
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let versions: Vec<&str> = ids
        .iter()
        .map(|id| id.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        versions,
        [
            "00000000000000000000000000000001",
            "00000000000000000000000000000002",
            "00000000000000000000000000000003",
            "00000000000000000000000000000004",
            "00000000000000000000000000000005",
        ]
    );
    for item in &items {
        assert!(
            item.get("value").is_none(),
            "list items carry no value: {item}"
        );
        assert!(item["attributes"]["created"].is_i64());
    }
    assert_eq!(items[2]["attributes"]["enabled"], false);
    assert_eq!(items[0]["attributes"]["created"], 1700000001);
}

#[tokio::test]
async fn default_page_is_25() {
    let env = start().await;
    for i in 0..27 {
        env.emu
            .set_secret("kv-demo", "many", &format!("v{i}"))
            .unwrap();
    }
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/many/versions?{API}"))
        .await;
    let j = r.json();
    assert_eq!(j["value"].as_array().unwrap().len(), 25);
    let next = j["nextLink"].as_str().unwrap();
    assert!(!next.contains("maxresults"), "{next}");
    let r = env
        .get_url(
            &next.replace("api-version=7.2", API),
            Some(&env.token("app-sp")),
        )
        .await;
    let j = r.json();
    assert_eq!(j["value"].as_array().unwrap().len(), 2);
    assert!(j["nextLink"].is_null());
}

#[tokio::test]
async fn out_of_range_maxresults_and_bad_skiptoken_are_400() {
    let env = start().await;
    for bad in ["0", "26", "x"] {
        let r = env
            .get_as_app(
                "kv-demo",
                &format!("/secrets/sql-password/versions?{API}&maxresults={bad}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "maxresults={bad}");
        assert_eq!(r.kv_error().0, "BadParameter");
    }
    let r = env
        .get_as_app(
            "kv-demo",
            &format!("/secrets/sql-password/versions?{API}&$skiptoken=bm9wZQ"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/nope/versions?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.kv_error().0, "SecretNotFound");
}

#[tokio::test]
async fn key_and_certificate_versions_list() {
    let env = start().await;
    let j = env
        .get_as_app("kv-conformance", &format!("/keys/rsa-key/versions?{API}"))
        .await
        .json();
    let items = j["value"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0]["kid"].as_str().unwrap().contains("/keys/rsa-key/"));
    assert!(j["nextLink"].is_null());
    let j = env
        .get_as_app(
            "kv-conformance",
            &format!("/certificates/pfx-cert/versions?{API}"),
        )
        .await
        .json();
    let items = j["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["x5t"].as_str().unwrap().len(), 27);
    // The backing secret shows up as managed in secret listings.
    let j = env
        .get_as_app(
            "kv-conformance",
            &format!("/secrets/pfx-cert/versions?{API}"),
        )
        .await
        .json();
    assert_eq!(j["value"][0]["managed"], true);
    assert_eq!(j["value"][0]["contentType"], "application/x-pkcs12");
}

#[tokio::test]
async fn listing_all_objects_gives_current_versions_without_version_ids() {
    let env = start().await;
    let port = env.emu.https_addr().port();
    let base = format!("https://kv-conformance.vault.azure.net:{port}");
    let j = env
        .get_as_app("kv-conformance", &format!("/secrets?{API}"))
        .await
        .json();
    let items = j["value"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    // Seeded secrets plus the backing secrets of the two certificates, by name.
    for name in [
        "disabled-latest",
        "expired",
        "not-yet-valid",
        "pem-cert",
        "pfx-cert",
        "rotating",
        "tagged",
    ] {
        assert!(
            ids.contains(&format!("{base}/secrets/{name}").as_str()),
            "{name} missing from {ids:?}"
        );
    }
    assert_eq!(ids.len(), 7);
    let pfx = items
        .iter()
        .find(|i| i["id"].as_str().unwrap().ends_with("/pfx-cert"))
        .unwrap();
    assert_eq!(pfx["managed"], true);
    assert!(items.iter().all(|i| i.get("value").is_none()));
    assert!(j["nextLink"].is_null());

    let j = env
        .get_as_app("kv-conformance", &format!("/secrets/?{API}&maxresults=3"))
        .await
        .json();
    assert_eq!(j["value"].as_array().unwrap().len(), 3);
    let next = j["nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{base}/secrets?api-version=7.2&$skiptoken=")),
        "{next}"
    );

    let j = env
        .get_as_app("kv-conformance", &format!("/keys?{API}"))
        .await
        .json();
    let kids: Vec<&str> = j["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&format!("{base}/keys/rsa-key").as_str()),
        "{kids:?}"
    );
    let j = env
        .get_as_app("kv-conformance", &format!("/certificates?{API}"))
        .await
        .json();
    assert_eq!(j["value"].as_array().unwrap().len(), 2);
    assert_eq!(j["value"][0]["x5t"].as_str().unwrap().len(), 27);

    // Listing needs the list permission.
    let r = env
        .get(
            "kv-conformance",
            &format!("/secrets?{API}"),
            Some(&env.token(NODE_MI)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.kv_error()
            .2
            .contains("does not have secrets list permission")
    );
}
