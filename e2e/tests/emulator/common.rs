//! Shared set-up: an emulator with the conformance seed and a reqwest client
//! that trusts its CA and resolves the Azure host names to it.

use std::time::Duration;

use reqwest::{Certificate, Client, StatusCode, header::HeaderMap};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};
use serde_json::Value;

pub const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
pub const NODE_MI: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
pub const SECOND_MI: &str = "2e4d6c8b-0a1f-4e3d-8c5b-7a9f1e3d5c7b";
pub const APP_SP: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
pub const APP_SP_SECRET: &str = "emulator-test-client-secret";
pub const WORKLOAD_APP: &str = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c";
pub const OUTSIDER: &str = "e1d2c3b4-a596-4877-8899-aabbccddeeff";
pub const API: &str = "api-version=7.4";

pub fn conformance_seed() -> Seed {
    Seed::from_yaml(include_str!("../../seeds/conformance.yaml")).expect("conformance seed")
}

/// A running emulator and a client for it.
pub struct Env {
    pub emu: EmulatorHandle,
    pub http: Client,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` and `error.innererror.code` of a Key Vault error.
    pub fn kv_error(&self) -> (String, Option<String>, String) {
        let j = self.json();
        let e = &j["error"];
        (
            e["code"].as_str().unwrap_or("").to_string(),
            e["innererror"]["code"].as_str().map(String::from),
            e["message"].as_str().unwrap_or("").to_string(),
        )
    }
}

pub fn client_for(emu: &EmulatorHandle) -> Client {
    let addr = emu.https_addr();
    let mut b = Client::builder()
        .tls_certs_only([Certificate::from_pem(emu.ca_pem().as_bytes()).expect("CA PEM")])
        .timeout(Duration::from_secs(20));
    for (host, addr) in emu.resolve_overrides() {
        b = b.resolve(&host, addr);
    }
    // A vault the seed does not have, for VaultNotFound tests.
    b = b.resolve("kv-missing.vault.azure.net", addr);
    b.build().expect("client")
}

pub async fn start() -> Env {
    start_with(EmulatorConfig::with_seed(conformance_seed())).await
}

pub async fn start_with(config: EmulatorConfig) -> Env {
    let emu = Emulator::start(config).await.expect("emulator starts");
    let http = client_for(&emu);
    Env { emu, http }
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
    }
}

impl Env {
    /// `https://<vault>.vault.azure.net:<port><path>`
    pub fn url(&self, vault: &str, path: &str) -> String {
        format!("{}{path}", self.emu.vault_url(vault))
    }

    /// An access token for an identity (name or client id), minted in process.
    pub fn token(&self, identity: &str) -> String {
        self.emu
            .access_token(identity, "https://vault.azure.net", 3599)
            .expect("token")
    }

    /// GET a vault path with an optional bearer token.
    pub async fn get(&self, vault: &str, path: &str, token: Option<&str>) -> Reply {
        self.get_url(&self.url(vault, path), token).await
    }

    pub async fn get_url(&self, url: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send().await.expect("request is answered")).await
    }

    /// GET as the app service principal (which may read everything).
    pub async fn get_as_app(&self, vault: &str, path: &str) -> Reply {
        let t = self.token("app-sp");
        self.get(vault, path, Some(&t)).await
    }

    pub fn entra_url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.authority_url())
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Reply {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request answered");
        read(resp).await
    }

    pub async fn imds(&self, path_and_query: &str, metadata: bool) -> Reply {
        let mut req = self
            .http
            .get(format!("{}{path_and_query}", self.emu.imds_url()));
        if metadata {
            req = req.header("Metadata", "true");
        }
        read(req.send().await.expect("imds answered")).await
    }

    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.emu.admin_url())
    }
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Is `s` a 32-character lowercase hex version id?
pub fn is_version(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
