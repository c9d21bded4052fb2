//! IMDS and the NMI endpoint.

use reqwest::StatusCode;
use secretfs_e2e::{CounterFilter, Route};

use crate::common::*;

const TOKEN_PATH: &str =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";

#[tokio::test]
async fn imds_requires_the_metadata_header_and_returns_string_numbers() {
    let env = start().await;
    let r = env
        .imds(&format!("{TOKEN_PATH}&client_id={NODE_MI}"), false)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "bad_request_102");
    assert_eq!(
        r.json()["error_description"],
        "Required metadata header not specified"
    );

    let r = env
        .imds(&format!("{TOKEN_PATH}&client_id={NODE_MI}"), true)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    for k in ["expires_in", "expires_on", "not_before", "ext_expires_in"] {
        assert!(j[k].is_string(), "{k} must be a string: {j}");
    }
    assert_eq!(j["refresh_token"], "");
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["resource"], "https://vault.azure.net");
    assert_eq!(j["client_id"], NODE_MI);
    let token = j["access_token"].as_str().unwrap();
    let s = env
        .get(
            "kv-demo",
            &format!("/secrets/sql-password/?{API}"),
            Some(token),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json()["value"], "Sql-Passw0rd-from-kv-demo");
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::ImdsToken).identity(NODE_MI)),
        1
    );
}

#[tokio::test]
async fn imds_selects_identities_by_client_id_object_id_or_resource_id() {
    let env = start().await;
    let res_id = "/subscriptions/2b7e4f1a-93c4-4d8e-b1f0-6a2c5d8e0f37/resourceGroups/rg-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/second-node-identity";
    let r = env
        .imds(&format!("{TOKEN_PATH}&msi_res_id={res_id}"), true)
        .await;
    assert_eq!(r.json()["client_id"], SECOND_MI);
    let r = env
        .imds(
            &format!("{TOKEN_PATH}&object_id=0b3f9a2e-5c1d-4e8f-a7b6-2d4c6e8f1a3b"),
            true,
        )
        .await;
    assert_eq!(r.json()["client_id"], NODE_MI);
    // Two user-assigned identities and no selector: IMDS cannot choose.
    let r = env.imds(TOKEN_PATH, true).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Multiple user assigned identities exist")
    );
    // A service principal is not a managed identity of this node.
    let r = env
        .imds(&format!("{TOKEN_PATH}&client_id={APP_SP}"), true)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error_description"], "Identity not found");
    let r = env
        .imds(
            "/metadata/identity/oauth2/token?resource=https://vault.azure.net",
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = env
        .imds(
            &format!("/metadata/identity/oauth2/token?api-version=2018-02-01&client_id={NODE_MI}"),
            true,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn demo_seed_has_a_single_node_identity_chosen_by_default() {
    let env = start_with(secretfs_e2e::EmulatorConfig::default()).await;
    let r = env.imds(TOKEN_PATH, true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["client_id"], NODE_MI);
}

#[tokio::test]
async fn nmi_serves_pod_identity_tokens() {
    let env = start().await;
    let url = format!(
        "{}/host/token/?resource=https://vault.azure.net",
        env.emu.imds_url()
    );
    let r = read(
        env.http
            .get(&url)
            .header("podname", "nginx")
            .header("podns", "default")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert_eq!(j["clientid"], NODE_MI);
    assert!(j["token"]["access_token"].is_string());
    assert!(j["token"]["expires_on"].is_string());
    let r = read(
        env.http
            .get(&url)
            .header("podname", "nginx")
            .header("podns", "other")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = read(env.http.get(&url).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
