//! Shared set-up: an emulator with the conformance seed, a provider aimed at
//! it, and mount requests.

use std::collections::BTreeMap;
use std::time::Duration;

use secretfs::provider::azure::{AzureProvider, AzureProviderConfig, HostOverride, RetryConfig};
use secretfs::provider::{
    FileMode, MountError, MountRequest, MountResponse, ObjectError, PodRef, Provider,
};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};
use secretfs_secrets::{SecretMap, SecretString};

pub const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
pub const NODE_MI: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
pub const SECOND_MI: &str = "2e4d6c8b-0a1f-4e3d-8c5b-7a9f1e3d5c7b";
pub const APP_SP: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
pub const APP_SP_SECRET: &str = "emulator-test-client-secret";
pub const WORKLOAD_APP: &str = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c";
pub const OUTSIDER: &str = "e1d2c3b4-a596-4877-8899-aabbccddeeff";
pub const OUTSIDER_SECRET: &str = "outsider-test-client-secret";

pub fn conformance_seed() -> Seed {
    Seed::from_yaml(include_str!("../../../e2e/seeds/conformance.yaml")).expect("conformance seed")
}

/// The emulator with the conformance seed.
pub async fn start() -> EmulatorHandle {
    start_with(EmulatorConfig::with_seed(conformance_seed())).await
}

pub async fn start_with(config: EmulatorConfig) -> EmulatorHandle {
    Emulator::start(config).await.expect("emulator starts")
}

/// A provider configuration that reaches `emu`: its CA trusted, the vault
/// and authority names resolved to it, its port on vault URLs. Short
/// deadlines and backoffs keep failing tests fast.
pub fn config(emu: &EmulatorHandle) -> AzureProviderConfig {
    let addr = emu.https_addr();
    AzureProviderConfig {
        extra_ca_pem: Some(emu.ca_pem().to_owned()),
        resolve: vec![
            HostOverride::new("*.vault.azure.net", addr),
            HostOverride::new("login.microsoftonline.com", addr),
        ],
        vault_port: Some(addr.port()),
        authority_host: Some(emu.authority_url()),
        imds_url: emu.imds_url(),
        nmi_url: emu.imds_url(),
        deadline: Duration::from_secs(30),
        request_timeout: Duration::from_secs(10),
        retry: RetryConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(5),
        },
        ..Default::default()
    }
}

pub fn provider(emu: &EmulatorHandle) -> AzureProvider {
    AzureProvider::new(config(emu)).expect("provider")
}

/// The `objects` parameter for these object YAML snippets.
pub fn objects(entries: &[&str]) -> String {
    let mut out = String::from("array:\n");
    for e in entries {
        out.push_str("  - |\n");
        for line in e.lines() {
            out.push_str("    ");
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out
}

/// One object: `name`, `type`, then optional `key: value` lines.
pub fn object(name: &str, object_type: &str, extra: &[(&str, &str)]) -> String {
    let mut s = format!("objectName: {name}\nobjectType: {object_type}\n");
    for (k, v) in extra {
        s.push_str(&format!("{k}: \"{v}\"\n"));
    }
    s
}

/// The pod every test mounts for (service account `workload-sa`, federated
/// to the workload app).
pub fn pod() -> PodRef {
    PodRef {
        name: "app-pod".into(),
        namespace: "default".into(),
        uid: "6a0b3c1e-0000-4000-8000-000000000001".into(),
        service_account: "workload-sa".into(),
    }
}

/// A request for `vault` with these extra parameters and objects.
pub fn request(vault: &str, params: &[(&str, &str)], objects_param: &str) -> MountRequest {
    let mut parameters = BTreeMap::new();
    parameters.insert("keyvaultName".to_owned(), vault.to_owned());
    parameters.insert("tenantID".to_owned(), TENANT.to_owned());
    parameters.insert("objects".to_owned(), objects_param.to_owned());
    for (k, v) in params {
        parameters.insert((*k).to_owned(), (*v).to_owned());
    }
    MountRequest {
        parameters,
        pod: pod(),
        service_account_tokens: None,
        secrets: SecretMap::default(),
        default_mode: FileMode::DEFAULT,
        current: Vec::new(),
        node_name: "node-1".into(),
        max_age: std::time::Duration::ZERO,
        fresh_since: None,
    }
}

/// A request authenticating as the `app-sp` service principal.
pub fn sp_request(vault: &str, objects_param: &str) -> MountRequest {
    let mut r = request(vault, &[], objects_param);
    r.secrets = SecretMap::new([
        ("clientid".to_owned(), APP_SP.to_owned()),
        ("clientsecret".to_owned(), APP_SP_SECRET.to_owned()),
    ]);
    r
}

/// The kubelet tokens JSON holding `token` for the workload identity audience.
pub fn tokens_json(token: &str) -> SecretString {
    SecretString::from(format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{token}","expirationTimestamp":"2099-01-01T00:00:00Z"}}}}"#
    ))
}

/// A workload identity request with a freshly minted service-account token.
pub fn wi_request(emu: &EmulatorHandle, vault: &str, objects_param: &str) -> MountRequest {
    let mut r = request(vault, &[("clientID", WORKLOAD_APP)], objects_param);
    let token = emu
        .service_account_token("default", "workload-sa")
        .expect("SA token");
    r.service_account_tokens = Some(tokens_json(&token));
    r
}

/// The file at `path`, as text.
pub fn file_text(response: &MountResponse, path: &str) -> String {
    let file = response
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| {
            panic!(
                "no file {path}; files: {:?}",
                response.files.iter().map(|f| &f.path).collect::<Vec<_>>()
            )
        });
    String::from_utf8(file.contents.expose().to_vec()).expect("UTF-8 file")
}

pub fn file_bytes(response: &MountResponse, path: &str) -> Vec<u8> {
    response
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no file {path}"))
        .contents
        .expose()
        .to_vec()
}

/// Mounts and expects success.
pub async fn mount_ok(provider: &AzureProvider, request: &MountRequest) -> MountResponse {
    match provider.mount(request).await {
        Ok(r) => r,
        Err(e) => panic!("mount failed: {e}"),
    }
}

/// Mounts and expects per-object errors.
pub async fn mount_objects_err(
    provider: &AzureProvider,
    request: &MountRequest,
) -> Vec<ObjectError> {
    match provider.mount(request).await {
        Ok(r) => panic!(
            "mount succeeded with files {:?}",
            r.files.iter().map(|f| &f.path).collect::<Vec<_>>()
        ),
        Err(MountError::Objects(errors)) => errors.errors().to_vec(),
        Err(e) => panic!("expected object errors, got a configuration error: {e}"),
    }
}

/// A Key Vault access token for direct reads (expected values).
pub fn direct_client(emu: &EmulatorHandle) -> (reqwest::Client, String) {
    let addr = emu.https_addr();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).expect("CA")])
        .resolve("kv-conformance.vault.azure.net", addr)
        .resolve("kv-demo.vault.azure.net", addr)
        .resolve("login.microsoftonline.com", addr)
        .build()
        .expect("client");
    let token = emu
        .access_token("app-sp", "https://vault.azure.net", 3599)
        .expect("token");
    (client, token)
}

/// GET `path` of `vault` directly, as JSON.
pub async fn direct_get(emu: &EmulatorHandle, vault: &str, path: &str) -> serde_json::Value {
    let (client, token) = direct_client(emu);
    let url = format!("{}{path}?api-version=7.4", emu.vault_url(vault));
    let rsp = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("direct GET");
    assert!(rsp.status().is_success(), "{url}: {}", rsp.status());
    rsp.json().await.expect("JSON")
}
