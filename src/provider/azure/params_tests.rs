//! Tests of every parameter and each of its errors.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::cloud::{CloudError, CloudName};
use super::objects::ObjectsError;
use super::params::*;

const OBJECTS: &str = "array:\n  - |\n    objectName: s1\n    objectType: secret\n";

fn base() -> BTreeMap<String, String> {
    [
        ("keyvaultName", "kv-demo"),
        ("tenantID", "11111111-2222-3333-4444-555555555555"),
        ("objects", OBJECTS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut m = base();
    for (k, v) in pairs {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    m
}

fn parse(m: &BTreeMap<String, String>) -> Result<AzureParameters, ParamsError> {
    AzureParameters::parse(m, &ParseOptions::default())
}

fn only_error(m: &BTreeMap<String, String>) -> ParamError {
    let mut errs = parse(m).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.remove(0)
}

#[test]
fn minimal_parameters_and_defaults() {
    let p = parse(&base()).unwrap();
    assert_eq!(p.vault_name.as_str(), "kv-demo");
    assert_eq!(p.vault_url(), "https://kv-demo.vault.azure.net/");
    assert_eq!(p.cloud, CloudName::Public.builtin().unwrap());
    assert!(!p.use_pod_identity && !p.use_vm_managed_identity && !p.use_azure_token_proxy);
    assert_eq!(
        (
            p.client_id.as_deref(),
            p.user_assigned_identity_id.as_deref()
        ),
        (None, None)
    );
    assert_eq!(p.objects.len(), 1);
}

#[test]
fn vault_name_rules() {
    for ok in ["abc", "a-1", "KV-Demo-0123456789-abcde"] {
        assert!(parse(&with(&[("keyvaultName", ok)])).is_ok(), "{ok}");
    }
    assert_eq!(
        parse(&with(&[("keyvaultName", "  kv-demo \n")]))
            .unwrap()
            .vault_name
            .as_str(),
        "kv-demo"
    );
    let mut m = base();
    m.remove("keyvaultName");
    assert_eq!(
        only_error(&m).to_string(),
        "keyvaultName is not provided: set it to the name of the Key Vault (3 to 24 letters, digits and '-')"
    );
    for bad in [
        "ab",
        &"a".repeat(25),
        "kv_demo",
        "kv.demo",
        "kv demo",
        "kv/../x",
    ] {
        let e = only_error(&with(&[("keyvaultName", bad)]));
        assert_eq!(
            e.to_string(),
            format!(
                "keyvaultName {bad:?} is not valid: 3 to 24 characters, each a letter, digit or '-'"
            )
        );
    }
}

#[test]
fn tenant_id_before_tenant_id_legacy() {
    let p = parse(&with(&[("tenantId", "legacy-tenant")])).unwrap();
    assert_eq!(p.tenant_id, "11111111-2222-3333-4444-555555555555");
    let mut m = with(&[("tenantId", " legacy-tenant ")]);
    m.remove("tenantID");
    assert_eq!(parse(&m).unwrap().tenant_id, "legacy-tenant");
    // An empty tenantID falls through to tenantId, as upstream.
    m.insert("tenantID".into(), "  ".into());
    assert_eq!(parse(&m).unwrap().tenant_id, "legacy-tenant");
    assert_eq!(
        parse(&with(&[("tenantID", "adfs")])).unwrap().tenant_id,
        "adfs"
    );
    assert_eq!(
        parse(&with(&[("tenantID", "contoso.onmicrosoft.com")]))
            .unwrap()
            .tenant_id,
        "contoso.onmicrosoft.com"
    );
    let mut m = base();
    m.remove("tenantID");
    assert!(
        only_error(&m)
            .to_string()
            .starts_with("tenantID is not provided")
    );
    let e = only_error(&with(&[("tenantID", "t/../../x")]));
    assert!(
        e.to_string()
            .starts_with("tenantID \"t/../../x\" is not valid"),
        "{e}"
    );
}

#[test]
fn cloud_names_and_default() {
    for (name, host) in [
        ("", "https://login.microsoftonline.com/"),
        ("AzurePublicCloud", "https://login.microsoftonline.com/"),
        ("AzureChinaCloud", "https://login.chinacloudapi.cn/"),
        (
            " AzureUSGovernmentCloud ",
            "https://login.microsoftonline.us/",
        ),
    ] {
        let p = parse(&with(&[("cloudName", name)])).unwrap();
        assert_eq!(p.cloud.authority_host, host, "{name}");
    }
    let options = ParseOptions {
        default_cloud: CloudName::China,
        ..ParseOptions::default()
    };
    let p = AzureParameters::parse(&with(&[("cloudName", "")]), &options).unwrap();
    assert_eq!(p.vault_url(), "https://kv-demo.vault.azure.cn/");
    assert!(matches!(
        only_error(&with(&[("cloudName", "Mars")])),
        ParamError::Cloud(CloudError::Unknown(_))
    ));
    assert!(matches!(
        only_error(&with(&[("cloudName", "AzureGermanCloud")])),
        ParamError::Cloud(CloudError::GermanCloudClosed(_))
    ));
}

const STACK_JSON: &str = r#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://adfs.local/","keyVaultEndpoint":"https://vault.local/","keyVaultDNSSuffix":"vault.local"}"#;

fn stack_loader(path: &Path) -> io::Result<Vec<u8>> {
    match path.to_str() {
        Some("/etc/kubernetes/azurestack.json") => Ok(STACK_JSON.as_bytes().to_vec()),
        Some("/etc/kubernetes/broken.json") => Ok(b"{".to_vec()),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        )),
    }
}

#[test]
fn azure_stack_cloud_reads_the_given_file() {
    let options = ParseOptions {
        default_cloud: CloudName::Public,
        load_cloud_env: &stack_loader,
    };
    let m = with(&[
        ("cloudName", "AzureStackCloud"),
        ("cloudEnvFileName", "/etc/kubernetes/azurestack.json"),
        ("tenantID", "adfs"),
    ]);
    let p = AzureParameters::parse(&m, &options).unwrap();
    assert_eq!(p.vault_url(), "https://kv-demo.vault.local/");
    assert_eq!(p.cloud.authority_host, "https://adfs.local/");
    assert_eq!(p.cloud.key_vault_resource, "https://vault.local");

    let errs =
        |m: &BTreeMap<String, String>| AzureParameters::parse(m, &options).unwrap_err().to_string();
    assert_eq!(
        errs(&with(&[("cloudName", "AzureStackCloud")])),
        "cloudEnvFileName is required when cloudName is AzureStackCloud: set it to the path of the custom cloud JSON file"
    );
    assert_eq!(
        errs(&with(&[
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", "/nope.json")
        ])),
        "cloudEnvFileName \"/nope.json\" could not be read: No such file or directory (os error 2)"
    );
    assert!(
        errs(&with(&[
            ("cloudName", "AzureStackCloud"),
            ("cloudEnvFileName", "/etc/kubernetes/broken.json")
        ]))
        .starts_with(
            "cloudEnvFileName \"/etc/kubernetes/broken.json\" is not a valid cloud environment JSON"
        )
    );
    // cloudEnvFileName is only read for AzureStackCloud.
    let p = AzureParameters::parse(&with(&[("cloudEnvFileName", "/nope.json")]), &options).unwrap();
    assert_eq!(p.cloud.name, "AzurePublicCloud");
}

#[test]
fn booleans_parse_like_go_strconv_parse_bool() {
    for key in [
        "usePodIdentity",
        "useVMManagedIdentity",
        "useAzureTokenProxy",
    ] {
        for t in ["1", "t", "T", "true", "TRUE", "True", " true "] {
            let p = parse(&with(&[(key, t)])).unwrap();
            let got = [
                p.use_pod_identity,
                p.use_vm_managed_identity,
                p.use_azure_token_proxy,
            ];
            assert_eq!(got.iter().filter(|b| **b).count(), 1, "{key}={t}");
        }
        for f in ["", "0", "f", "F", "false", "FALSE", "False"] {
            let p = parse(&with(&[(key, f)])).unwrap();
            assert!(
                !p.use_pod_identity && !p.use_vm_managed_identity && !p.use_azure_token_proxy,
                "{key}={f}"
            );
        }
        for bad in ["yes", "tRUE", "on", "2"] {
            let e = only_error(&with(&[(key, bad)]));
            assert_eq!(
                e.to_string(),
                format!(
                    "{key} {bad:?} is not valid: use true or false (also accepted: 1, t, T, TRUE, True, 0, f, F, FALSE, False)"
                )
            );
        }
    }
}

#[test]
fn only_one_identity_mode_at_a_time() {
    let e = only_error(&with(&[
        ("usePodIdentity", "true"),
        ("useVMManagedIdentity", "true"),
    ]));
    assert_eq!(
        e.to_string(),
        "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy (found usePodIdentity and useVMManagedIdentity)"
    );
    let e = only_error(&with(&[
        ("useAzureTokenProxy", "1"),
        ("useVMManagedIdentity", "t"),
        ("usePodIdentity", "T"),
    ]));
    assert!(
        matches!(e, ParamError::ConflictingModes(ref s) if s == "usePodIdentity and useVMManagedIdentity and useAzureTokenProxy")
    );
}

#[test]
fn client_ids() {
    let p = parse(&with(&[
        ("clientID", " 0000-aaaa "),
        ("userAssignedIdentityID", "bbbb"),
    ]))
    .unwrap();
    assert_eq!(p.client_id.as_deref(), Some("0000-aaaa"));
    assert_eq!(p.user_assigned_identity_id.as_deref(), Some("bbbb"));
    for key in ["clientID", "userAssignedIdentityID"] {
        let e = only_error(&with(&[(key, "a b&c")]));
        assert_eq!(
            e.to_string(),
            format!("{key} \"a b&c\" is not valid: use the identity's client id (a GUID)")
        );
    }
}

#[test]
fn objects_parameter_errors() {
    let mut m = base();
    m.remove("objects");
    assert_eq!(only_error(&m), ParamError::Objects(ObjectsError::NotSet));
    assert!(matches!(
        only_error(&with(&[("objects", "array: []")])),
        ParamError::Objects(ObjectsError::Empty)
    ));
}

#[test]
fn unknown_and_legacy_keys_are_ignored() {
    let p = parse(&with(&[
        ("resourceGroup", "rg-demo"),
        ("subscriptionId", "2b7e4f1a-93c4-4d8e-b1f0-6a2c5d8e0f37"),
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("somethingNew", "x"),
    ]))
    .unwrap();
    assert_eq!(p, parse(&base()).unwrap());
}

#[test]
fn all_parameter_errors_are_reported_together() {
    let m: BTreeMap<String, String> = [
        ("keyvaultName", "x"),
        ("usePodIdentity", "maybe"),
        ("cloudName", "Nope"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let errs = parse(&m).unwrap_err();
    let keys: Vec<&str> = errs
        .0
        .iter()
        .map(|e| match e {
            ParamError::Missing { key, .. } | ParamError::Invalid { key, .. } => *key,
            ParamError::Cloud(_) => "cloudName",
            ParamError::Objects(_) => "objects",
            ParamError::ConflictingModes(_) => "modes",
        })
        .collect();
    assert_eq!(
        keys,
        [
            "keyvaultName",
            "tenantID",
            "cloudName",
            "usePodIdentity",
            "objects"
        ]
    );
    assert!(
        errs.to_string().contains("; tenantID is not provided"),
        "{errs}"
    );
}
