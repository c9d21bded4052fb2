//! The `kv-emulator` binary: its one-line JSON start-up contract (documented
//! in `e2e/README.md` and read by `e2e/sdk-tests/conftest.py`) and that the
//! printed addresses and CA are the ones it serves.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Certificate, Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

use crate::common::*;

/// The keys of the start-up line, as `e2e/README.md` shows them.
const INFO_KEYS: [&str; 7] = [
    "admin",
    "caPath",
    "https",
    "imds",
    "oidcIssuer",
    "tenant",
    "vaults",
];

fn str_of<'a>(info: &'a Value, key: &str) -> &'a str {
    info[key]
        .as_str()
        .unwrap_or_else(|| panic!("start-up key {key} is not a string: {info}"))
}

#[tokio::test]
async fn the_binary_prints_one_json_line_whose_addresses_and_ca_work() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kv-emulator"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("kv-emulator starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let n = timeout(Duration::from_secs(60), stdout.read_line(&mut line))
        .await
        .expect("kv-emulator prints its start-up line within 60 s")
        .expect("stdout readable");
    assert!(n > 0, "kv-emulator closed stdout without a start-up line");
    assert!(
        line.ends_with('\n'),
        "the start-up line is terminated: {line:?}"
    );
    let line = line.trim_end_matches('\n');
    assert!(!line.contains('\n'), "one line");
    let info: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("the start-up line is not JSON ({e}): {line}"));

    let keys: BTreeSet<&str> = info
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(INFO_KEYS),
        "start-up keys changed: update e2e/README.md, conftest.py and this test"
    );
    assert_eq!(str_of(&info, "tenant"), TENANT);
    assert_eq!(info["vaults"], json!(["kv-demo"]), "the built-in demo seed");
    let https: std::net::SocketAddr = str_of(&info, "https").parse().expect("https is ip:port");
    assert!(https.ip().is_loopback() && https.port() != 0, "{https}");
    let admin = str_of(&info, "admin");
    assert!(
        admin.starts_with("http://127.0.0.1:") && admin.ends_with("/admin"),
        "{admin}"
    );
    let imds = str_of(&info, "imds");
    assert!(imds.starts_with("http://127.0.0.1:"), "{imds}");

    // The CA file exists and holds one PEM certificate.
    let ca_path = PathBuf::from(str_of(&info, "caPath"));
    assert!(ca_path.is_absolute(), "{}", ca_path.display());
    let ca_pem = std::fs::read_to_string(&ca_path)
        .unwrap_or_else(|e| panic!("CA file {}: {e}", ca_path.display()));
    assert!(
        ca_pem.starts_with("-----BEGIN CERTIFICATE-----\n")
            && ca_pem.trim_end().ends_with("-----END CERTIFICATE-----")
            && ca_pem.matches("BEGIN").count() == 1,
        "not one PEM certificate: {ca_pem}"
    );
    let ca = Certificate::from_pem(ca_pem.as_bytes()).expect("the CA parses");

    // Only the printed CA is trusted and the vault host resolves to the
    // printed address: a TLS answer proves both.
    let http = Client::builder()
        .tls_certs_only([ca])
        .resolve("kv-demo.vault.azure.net", https)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // Admin API: the info document is the printed line.
    let r = read(http.get(format!("{admin}/info")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json(), info);
    // A token from the admin API opens the vault at the printed address.
    let r = read(
        http.post(format!("{admin}/access-token"))
            .json(&json!({"identity": "app-sp"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json()["accessToken"].as_str().unwrap().to_string();
    let vault = format!(
        "https://kv-demo.vault.azure.net:{}/secrets/sql-password?{API}",
        https.port()
    );
    let r = read(http.get(&vault).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["value"], "Sql-Passw0rd-from-kv-demo");
    // And so does an IMDS token from the printed IMDS address.
    let r = read(
        http.get(format!(
            "{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id={NODE_MI}"
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mi = r.json()["access_token"].as_str().unwrap().to_string();
    let r = read(http.get(&vault).bearer_auth(&mi).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The admin counters saw exactly these two vault reads.
    let r = read(
        http.get(format!("{admin}/counters?route=secrets.get&status=200"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.json()["count"], 2, "{}", r.text);

    // SIGTERM: a clean exit, nothing more on stdout, and the CA file it
    // created under the temp dir is removed.
    let pid = rustix::process::Pid::from_raw(child.id().expect("running") as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("kv-emulator exits within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "", "exactly one line on stdout");
    assert!(
        !ca_path.exists(),
        "the temporary CA file {} is left behind",
        ca_path.display()
    );
}
