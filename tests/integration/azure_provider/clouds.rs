//! `cloudName` end to end: the provider reaches the cloud's own Entra
//! authority and vault DNS suffix, with no authority override. Only that
//! cloud's host names are resolved to the emulator (with its port, as the
//! URLs carry none), so a mount that used another cloud's endpoints could
//! not connect; the token's audience shows which vault resource was asked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secretfs::provider::azure::{AzureProvider, AzureProviderConfig, HostOverride};
use secretfs_e2e::secrets_seen::SecretKind;
use secretfs_e2e::{CounterFilter, EmulatorHandle, Route};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";

/// Every cloud's Entra and vault host names.
const CLOUD_HOSTS: [&str; 8] = [
    "login.microsoftonline.com",
    "*.vault.azure.net",
    "login.chinacloudapi.cn",
    "*.vault.azure.cn",
    "login.microsoftonline.us",
    "*.vault.usgovcloudapi.net",
    "emulator.secretfs.invalid",
    "*.vault.local.azurestack.external",
];

/// A local address where nothing listens: connections are refused.
fn refused_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The test configuration with the cloud's defaults: no authority host,
/// no vault port; `hosts` resolved to the emulator and every other cloud's
/// names to a refusing local port (nothing leaves the machine).
fn cloud_config(emu: &EmulatorHandle, hosts: &[&str]) -> AzureProviderConfig {
    let addr = emu.https_addr();
    let refused = refused_addr();
    let mut resolve: Vec<HostOverride> =
        hosts.iter().map(|h| HostOverride::new(*h, addr)).collect();
    resolve.extend(CLOUD_HOSTS.iter().map(|h| HostOverride::new(*h, refused)));
    resolve.push(HostOverride::new("*.invalid", refused));
    AzureProviderConfig {
        resolve,
        authority_host: None,
        vault_port: None,
        ..config(emu)
    }
}

/// The `aud` claims of every access token the emulator issued.
fn token_audiences(emu: &EmulatorHandle) -> Vec<String> {
    emu.secrets_seen()
        .into_iter()
        .filter(|s| s.kind == SecretKind::AccessToken)
        .map(|s| {
            let payload = s.value.split('.').nth(1).expect("a JWT");
            let claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            claims["aud"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Mounts `rotating` as the service principal with `params`; checks the
/// value, one token from Entra, one vault GET, and the token's audience.
async fn mounts_through_the_cloud(
    emu: &EmulatorHandle,
    provider: &AzureProvider,
    params: &[(&str, &str)],
    audience: &str,
) {
    let mut request = request(
        VAULT,
        params,
        &objects(&[&object("rotating", "secret", &[])]),
    );
    request.secrets = sp_request(VAULT, "").secrets;
    let response = mount_ok(provider, &request).await;
    assert_eq!(file_text(&response, "rotating"), "fifth-value");
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::EntraToken)
                .identity(APP_SP)
                .status(200)
        ),
        1
    );
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::SecretGet)
                .vault(VAULT)
                .object("rotating")
                .status(200)
        ),
        1
    );
    assert_eq!(token_audiences(emu), [audience]);
}

#[tokio::test]
async fn azure_china_cloud_uses_its_authority_and_vault_suffix() {
    let emu = start().await;
    let provider = AzureProvider::new(cloud_config(
        &emu,
        &["*.vault.azure.cn", "login.chinacloudapi.cn"],
    ))
    .expect("provider");
    mounts_through_the_cloud(
        &emu,
        &provider,
        &[("cloudName", "AzureChinaCloud")],
        "https://vault.azure.cn",
    )
    .await;
}

#[tokio::test]
async fn azure_us_government_cloud_uses_its_authority_and_vault_suffix() {
    let emu = start().await;
    let provider = AzureProvider::new(cloud_config(
        &emu,
        &["*.vault.usgovcloudapi.net", "login.microsoftonline.us"],
    ))
    .expect("provider");
    // go-autorest's alias, any case.
    mounts_through_the_cloud(
        &emu,
        &provider,
        &[("cloudName", "azureusgovernment")],
        "https://vault.usgovcloudapi.net",
    )
    .await;
}

#[tokio::test]
async fn a_public_cloud_mount_does_not_reach_a_sovereign_clouds_hosts() {
    // The control for the tests above: with only the China cloud's names
    // resolved to the emulator, the public cloud (the default) reaches
    // nothing.
    let emu = start().await;
    let mut config = cloud_config(&emu, &["*.vault.azure.cn", "login.chinacloudapi.cn"]);
    config.deadline = std::time::Duration::from_secs(3);
    config.connect_timeout = std::time::Duration::from_secs(1);
    config.retry.max_attempts = 1;
    let provider = AzureProvider::new(config).expect("provider");
    let mut request = request(VAULT, &[], &objects(&[&object("rotating", "secret", &[])]));
    request.secrets = sp_request(VAULT, "").secrets;
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(emu.count(&CounterFilter::route(Route::SecretGet)), 0);
    assert!(token_audiences(&emu).is_empty());
}

#[tokio::test]
async fn azure_stack_cloud_reads_its_endpoints_from_the_cloud_env_file() {
    let emu = start().await;
    // A custom cloud whose authority is a host no built-in cloud uses; the
    // vault suffix and resource are Azure Stack Hub's defaults.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azurestackcloud.json");
    std::fs::write(
        &file,
        serde_json::json!({
            "name": "AzureStackCloud",
            "managementPortalURL": "https://portal.local.azurestack.external/",
            "resourceManagerEndpoint": "https://management.local.azurestack.external/",
            "activeDirectoryEndpoint": "https://emulator.secretfs.invalid/",
            "keyVaultEndpoint": "https://vault.local.azurestack.external/",
            "keyVaultDNSSuffix": "vault.local.azurestack.external",
            "resourceIdentifiers": {
                "keyVault": "https://vault.local.azurestack.external"
            }
        })
        .to_string(),
    )
    .unwrap();
    let provider = AzureProvider::new(cloud_config(
        &emu,
        &[
            "*.vault.local.azurestack.external",
            "emulator.secretfs.invalid",
        ],
    ))
    .expect("provider");
    mounts_through_the_cloud(
        &emu,
        &provider,
        &[
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", file.to_str().unwrap()),
        ],
        "https://vault.local.azurestack.external",
    )
    .await;

    // The file decides: a file naming other endpoints sends the mount
    // elsewhere (here: a refusing port).
    let vault_requests = emu.count(&CounterFilter::default());
    let other = dir.path().join("elsewhere.json");
    std::fs::write(
        &other,
        r#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://login.other.invalid/","keyVaultEndpoint":"https://vault.other.invalid/","keyVaultDNSSuffix":"vault.other.invalid"}"#,
    )
    .unwrap();
    let mut config = cloud_config(
        &emu,
        &[
            "*.vault.local.azurestack.external",
            "emulator.secretfs.invalid",
        ],
    );
    config.deadline = std::time::Duration::from_secs(3);
    config.connect_timeout = std::time::Duration::from_secs(1);
    config.retry.max_attempts = 1;
    let provider = AzureProvider::new(config).expect("provider");
    let mut request = request(
        VAULT,
        &[
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", other.to_str().unwrap()),
        ],
        &objects(&[&object("rotating", "secret", &[])]),
    );
    request.secrets = sp_request(VAULT, "").secrets;
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        emu.count(&CounterFilter::default()),
        vault_requests,
        "no request reached the emulator"
    );
}
