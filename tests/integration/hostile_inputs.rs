//! Hostile and broken input, one table: CSI requests, volume contexts,
//! SecretProviderClasses, provider responses and vault payloads, each with
//! the outcome it must have.
//!
//! A refusal is an exact gRPC code and a message that names the field or
//! object and the fix, and leaves nothing behind: no mount, no target
//! directory, no volume recorded, no write to the API server (pod status or
//! Secret), no API request for a name with `..` in it, and no secret value
//! of any case in the message. Where upstream accepts the input, the volume
//! holds exactly the expected bytes, so does the Secret synced from it, and
//! unpublishing leaves nothing behind either.
//!
//! Every case goes through the CSI Node service in process, over the real
//! driver (see `hostile_inputs/harness.rs`). Mounts need root and /dev/fuse
//! (SECRETFS_SKIP_FUSE_TESTS=1 skips the test).

pub mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use self::harness::*;
use base64::Engine as _;
use secretfs::provider::{FileMode, MountRequest, PodRef, Provider};
use secretfs_csi::proto::csi::{NodePublishVolumeRequest, volume_capability};
use secretfs_csi::proto::provider as pb;
use secretfs_e2e::NewSecretVersion;
use secretfs_secrets::SecretMap;
use serde_json::{Value, json};
use tonic::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Csi,
    VolumeContext,
    Class,
    ProviderResponse,
    VaultPayload,
}

type Edit = Box<dyn Fn(&mut NodePublishVolumeRequest) + Send + Sync>;

enum Input {
    /// The request for the `good` class (it mounts file `base`), changed.
    Request(Edit),
    /// A class (provider and parameters) the pod names, and a change to
    /// the request.
    Class(Value, Option<Edit>),
    /// What the external `scripted` provider answers.
    Provider(Reply),
    /// A secret written to the vault (value, contentType), mounted as file
    /// `payload` by an object with these extra fields.
    Vault {
        value: String,
        content_type: Option<&'static str>,
        fields: &'static str,
    },
    /// A secret bundle as Key Vault returns it (the emulator cannot hold
    /// it), mounted as file `payload` by an object with these fields.
    Bundle { bundle: Value, fields: &'static str },
}

enum Expect {
    /// The gRPC code and what the message must say.
    Refused { code: Code, mentions: Vec<String> },
    /// Exactly these files (path → bytes).
    Mounted(Vec<(String, Vec<u8>)>),
}

struct Case {
    name: &'static str,
    layer: Layer,
    input: Input,
    expect: Expect,
    /// Values that must appear in no message (the table's secrets are
    /// checked against every message; these are the case's own).
    secrets: Vec<String>,
}

fn case(name: &'static str, layer: Layer, input: Input, expect: Expect) -> Case {
    Case {
        name,
        layer,
        input,
        expect,
        secrets: Vec::new(),
    }
}

impl Case {
    fn secret(mut self, value: impl Into<String>) -> Self {
        self.secrets.push(value.into());
        self
    }
}

fn edit(f: impl Fn(&mut NodePublishVolumeRequest) + Send + Sync + 'static) -> Input {
    Input::Request(Box::new(f))
}

fn class(spec: Value) -> Input {
    Input::Class(spec, None)
}

fn class_with(
    spec: Value,
    f: impl Fn(&mut NodePublishVolumeRequest) + Send + Sync + 'static,
) -> Input {
    Input::Class(spec, Some(Box::new(f)))
}

/// An Azure class mounting these objects.
fn azure_objects(entries: &[&str]) -> Input {
    class(azure_spec(&[("objects", &objects(entries))]))
}

/// An Azure class mounting the base object with these extra fields.
fn base_with(fields: &str) -> Input {
    azure_objects(&[&object_yaml(
        &[
            ("objectName", BASE_OBJECT),
            ("objectType", "secret"),
            ("objectAlias", "base"),
        ],
        fields,
    )])
}

fn refused(code: Code, mentions: &[&str]) -> Expect {
    Expect::Refused {
        code,
        mentions: mentions.iter().map(|m| (*m).to_owned()).collect(),
    }
}

fn mounted(files: &[(&str, &[u8])]) -> Expect {
    Expect::Mounted(
        files
            .iter()
            .map(|(p, b)| ((*p).to_owned(), b.to_vec()))
            .collect(),
    )
}

fn base_mounted() -> Expect {
    mounted(&[("base", BASE_VALUE.as_bytes())])
}

fn pod_uid(r: &NodePublishVolumeRequest) -> String {
    r.volume_context["csi.storage.k8s.io/pod.uid"].clone()
}

fn set_context(r: &mut NodePublishVolumeRequest, key: &str, value: &str) {
    r.volume_context.insert(key.to_owned(), value.to_owned());
}

const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// A workload identity class; the request sends `tokens` and no
/// nodePublishSecretRef (so there is no service principal to fall back to).
fn workload_identity(tokens: String) -> Input {
    class_with(
        azure_spec(&[
            ("clientID", WORKLOAD_APP),
            (
                "objects",
                &objects(&[&format!(
                    "objectName: {BASE_OBJECT}\nobjectType: secret\nobjectAlias: base"
                )]),
            ),
        ]),
        move |r| {
            r.secrets.clear();
            set_context(r, TOKENS, &tokens);
        },
    )
}

/// A response with these (path, mode, contents) files, one version each.
fn response(files: &[(&str, i32, &[u8])]) -> pb::MountResponse {
    pb::MountResponse {
        object_version: files
            .iter()
            .map(|(p, _, _)| pb::ObjectVersion {
                id: format!("secret/{p}"),
                version: "v1".into(),
            })
            .collect(),
        error: None,
        files: files
            .iter()
            .map(|(p, mode, contents)| pb::File {
                path: (*p).to_owned(),
                mode: *mode,
                contents: contents.to_vec(),
            })
            .collect(),
    }
}

fn provider_files(files: &[(&str, i32, &[u8])]) -> Input {
    Input::Provider(Reply::Response(response(files)))
}

fn vault(
    value: impl Into<String>,
    content_type: Option<&'static str>,
    fields: &'static str,
) -> Input {
    Input::Vault {
        value: value.into(),
        content_type,
        fields,
    }
}

/// A certificate-backed secret bundle (it has a `kid`).
fn cert_bundle(value: Option<&str>, content_type: &str, fields: &'static str) -> Input {
    Input::Bundle {
        bundle: json!({
            "value": value,
            "contentType": content_type,
            "kid": format!("https://{VAULT}.vault.azure.net/keys/hostile-cert/0123456789abcdef0123456789abcdef"),
        }),
        fields,
    }
}

const HUGE_CLIENT_SECRET: &str = "hostile-huge-client-secret-";
const HUGE_TOKEN: &str = "hostile-huge-token-";
const PFX_PASSWORD: &str = "hostile-pfx-password-31b7";
const PROVIDER_SECRET: &str = "hostile-provider-secret-e2a4";

/// The table. `pfx_with_password` is the emulator's `pfx-cert` PFX
/// re-encrypted with [`PFX_PASSWORD`].
#[rustfmt::skip]
fn table(pfx_with_password: &[u8]) -> Vec<Case> {
    use Layer::*;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let big_value: String = (0..25 * 1024)
        .map(|i| char::from(b'!' + (i % 94) as u8))
        .collect();
    let odd_text = "\0nul \u{feff}bom \u{202e}rtl é\r\ncrlf 😀 \u{fffd}";
    let ten_k_files: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("d{}/f{i}", i % 100), format!("{i}").into_bytes()))
        .collect();
    let ten_k_response = pb::MountResponse {
        object_version: vec![pb::ObjectVersion {
            id: "secret/many".into(),
            version: "v1".into(),
        }],
        error: None,
        files: ten_k_files
            .iter()
            .map(|(p, c)| pb::File {
                path: p.clone(),
                mode: 0o440,
                contents: c.clone(),
            })
            .collect(),
    };
    let hundred_k_objects = {
        let mut s = String::from("array:\n");
        for i in 0..100_000 {
            s.push_str(&format!(
                "  - |\n    objectName: s{i}\n    objectType: secret\n"
            ));
        }
        s
    };
    let alias_bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n\
                      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
                      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
                      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
                      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
                      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
                      h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n\
                      i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n\
                      array: *i\n";

    vec![
        // ---- CSI requests -------------------------------------------------
        case("empty volume id", Csi, edit(|r| r.volume_id.clear()),
            refused(Code::InvalidArgument, &["volume_id is missing"])),
        case("empty target path", Csi, edit(|r| r.target_path.clear()),
            refused(Code::InvalidArgument, &["target_path is missing"])),
        case("relative target path", Csi,
            edit(|r| r.target_path = format!("pods/{}/volumes/kubernetes.io~csi/secrets/mount", pod_uid(r))),
            refused(Code::InvalidArgument, &["is not a volume of pod", "/volumes/kubernetes.io~csi/<volume>/mount"])),
        case("target path climbing out with ..", Csi,
            edit(|r| r.target_path = format!(
                "{}/../../../../../../escape/pods/{uid}/volumes/kubernetes.io~csi/x/mount",
                r.target_path, uid = pod_uid(r))),
            refused(Code::InvalidArgument, &["is not a volume of pod"])),
        case("target path of another pod", Csi,
            edit(|r| r.target_path = r.target_path.replace(&pod_uid(r), "ffffffff-0000-4000-8000-000000000000")),
            refused(Code::InvalidArgument, &["is not a volume of pod"])),
        case("target path outside the kubelet directory", Csi,
            edit(|r| r.target_path = "/var/lib/secretfs-hostile-nowhere/mount".into()),
            refused(Code::InvalidArgument, &["is not a volume of pod"])),
        case("target path with a 5000-byte volume name", Csi,
            edit(|r| r.target_path = r.target_path.replace("/secrets/mount", &format!("/{}/mount", "v".repeat(5000)))),
            refused(Code::InvalidArgument, &["target path", "longer than", "not a volume of pod"])),
        case("read-write volume", Csi, edit(|r| r.readonly = false),
            refused(Code::InvalidArgument, &["Readonly is not true", "readOnly: true"])),
        case("no volume capability", Csi, edit(|r| r.volume_capability = None),
            refused(Code::InvalidArgument, &["volume_capability is missing"])),
        case("block volume capability", Csi,
            edit(|r| r.volume_capability.as_mut().unwrap().access_type =
                Some(volume_capability::AccessType::Block(volume_capability::BlockVolume {}))),
            refused(Code::InvalidArgument, &["block volumes are not supported"])),
        case("capability of no known access type", Csi,
            edit(|r| r.volume_capability.as_mut().unwrap().access_type = None),
            refused(Code::InvalidArgument, &["volume_capability.access_type is missing"])),
        case("fsGroup that is not a number", Csi,
            edit(|r| set_mount_group(r, "wheel")),
            refused(Code::InvalidArgument, &["volume_mount_group \"wheel\" is not a numeric group id", "fsGroup"])),
        case("fsGroup beyond 32 bits", Csi,
            edit(|r| set_mount_group(r, "4294967296")),
            refused(Code::InvalidArgument, &["\"4294967296\" is not a numeric group id"])),
        case("empty volume context", Csi, edit(|r| r.volume_context.clear()),
            refused(Code::InvalidArgument, &["volume_context is empty", "secretProviderClass"])),
        case("10k pod volume attributes", Csi,
            edit(|r| for i in 0..10_000 { set_context(r, &format!("attr-{i}"), "x") }),
            refused(Code::InvalidArgument, &["volume attribute \"attr-0\" is not allowed", "spec.parameters"])),
        case("10k kubelet volume attributes (accepted, like upstream)", Csi,
            edit(|r| for i in 0..10_000 { set_context(r, &format!("csi.storage.k8s.io/x-{i}"), "x") }),
            base_mounted()),
        case("1 MiB extra nodePublishSecretRef value (ignored)", Csi,
            edit(|r| { r.secrets.insert("junk".into(), "j".repeat(1 << 20)); }),
            base_mounted()),
        case("1 MiB client secret", Csi,
            edit(|r| { r.secrets.insert("clientsecret".into(), HUGE_CLIENT_SECRET.repeat(40_000)); }),
            refused(Code::PermissionDenied, &[APP_SP, "service principal"]))
            .secret(HUGE_CLIENT_SECRET),

        // ---- volume contexts ---------------------------------------------
        case("pod uid differs from the target's", VolumeContext,
            edit(|r| set_context(r, "csi.storage.k8s.io/pod.uid", "eeeeeeee-0000-4000-8000-000000000000")),
            refused(Code::InvalidArgument, &["is not a volume of pod eeeeeeee-0000-4000-8000-000000000000"])),
        case("no pod uid", VolumeContext,
            edit(|r| { r.volume_context.remove("csi.storage.k8s.io/pod.uid"); }),
            refused(Code::InvalidArgument, &["csi.storage.k8s.io/pod.uid is missing", "podInfoOnMount: true"])),
        case("empty pod namespace", VolumeContext,
            edit(|r| set_context(r, "csi.storage.k8s.io/pod.namespace", "")),
            refused(Code::InvalidArgument, &["csi.storage.k8s.io/pod.namespace is missing"])),
        case("no pod name", VolumeContext,
            edit(|r| { r.volume_context.remove("csi.storage.k8s.io/pod.name"); }),
            refused(Code::InvalidArgument, &["csi.storage.k8s.io/pod.name is missing"])),
        case("no secretProviderClass", VolumeContext,
            edit(|r| { r.volume_context.remove("secretProviderClass"); }),
            refused(Code::InvalidArgument, &["secretProviderClass is missing", "volumeAttributes.secretProviderClass"])),
        case("empty secretProviderClass", VolumeContext,
            edit(|r| set_context(r, "secretProviderClass", "")),
            refused(Code::InvalidArgument, &["secretProviderClass is missing"])),
        case("secretProviderClass climbing to a Secret's API path", VolumeContext,
            edit(|r| set_context(r, "secretProviderClass", "../../../../../api/v1/namespaces/kube-system/secrets/x")),
            refused(Code::InvalidArgument, &["secretProviderClass", "is not a valid SecretProviderClass name"])),
        case("secretProviderClass with a NUL", VolumeContext,
            edit(|r| set_context(r, "secretProviderClass", "good\0x")),
            refused(Code::InvalidArgument, &["is not a valid SecretProviderClass name"])),
        case("secretProviderClass of 300 bytes", VolumeContext,
            edit(|r| set_context(r, "secretProviderClass", &"g".repeat(300))),
            refused(Code::InvalidArgument, &["is not a valid SecretProviderClass name", "253"])),
        case("secretProviderClass that does not exist", VolumeContext,
            edit(|r| set_context(r, "secretProviderClass", "not-there")),
            refused(Code::NotFound, &["SecretProviderClass default/not-there not found", "create it"])),
        case("attribute overriding keyvaultName", VolumeContext,
            edit(|r| set_context(r, "keyvaultName", "kv-evil")),
            refused(Code::InvalidArgument, &["volume attribute \"keyvaultName\" is not allowed", "SecretProviderClass"])),
        case("attribute overriding objects", VolumeContext,
            edit(|r| set_context(r, "objects", "array: []")),
            refused(Code::InvalidArgument, &["volume attribute \"objects\" is not allowed"])),
        case("tokens JSON cut short", VolumeContext,
            workload_identity(r#"{"api://AzureADTokenExchange":{"token":"hostile-cut-token"#.into()),
            refused(Code::InvalidArgument, &["failed to parse workload identity tokens", "line 1 column"]))
            .secret("hostile-cut-token"),
        case("tokens JSON of the wrong type", VolumeContext,
            workload_identity(r#"{"api://AzureADTokenExchange":{"token":42}}"#.into()),
            refused(Code::InvalidArgument, &["failed to parse workload identity tokens"])),
        case("tokens JSON that is an array", VolumeContext,
            workload_identity(r#"["hostile-array-token"]"#.into()),
            refused(Code::InvalidArgument, &["failed to parse workload identity tokens", "expected a JSON object"]))
            .secret("hostile-array-token"),
        case("tokens JSON with a lone surrogate escape", VolumeContext,
            workload_identity(r#"{"api://AzureADTokenExchange":{"token":"\ud800hostile-surrogate"}}"#.into()),
            refused(Code::InvalidArgument, &["failed to parse workload identity tokens"]))
            .secret("hostile-surrogate"),
        case("tokens JSON holding a 1 MiB garbage token", VolumeContext,
            workload_identity(format!(
                r#"{{"api://AzureADTokenExchange":{{"token":"{}","expirationTimestamp":"2099-01-01T00:00:00Z"}}}}"#,
                HUGE_TOKEN.repeat(55_000))),
            refused(Code::PermissionDenied, &["workload identity", WORKLOAD_APP]))
            .secret(HUGE_TOKEN),
        case("tokens for a JWT-looking audience only", VolumeContext,
            workload_identity(r#"{"eyJhbGciOiJub25lIn0.hostile-audience":{"token":"t"}}"#.into()),
            refused(Code::InvalidArgument, &["audiences present: <redacted>", "tokenRequests"]))
            .secret("eyJhbGciOiJub25lIn0.hostile-audience"),
        case("tokens in the request secrets, malformed", VolumeContext,
            class_with(
                azure_spec(&[("clientID", WORKLOAD_APP), ("objects", &objects(&[&format!(
                    "objectName: {BASE_OBJECT}\nobjectType: secret")]))]),
                |r| {
                    r.secrets.clear();
                    r.secrets.insert(TOKENS.into(), "hostile-not-json-token".into());
                }),
            refused(Code::InvalidArgument, &["failed to parse workload identity tokens"]))
            .secret("hostile-not-json-token"),

        // ---- SecretProviderClasses ---------------------------------------
        case("provider that is not installed", Class,
            class(json!({"provider": "vault", "parameters": {"roleName": "app"}})),
            refused(Code::InvalidArgument, &["provider \"vault\" is not built in", "no provider socket exists at", "spec.provider"])),
        case("provider name ../x", Class,
            class(json!({"provider": "../x", "parameters": {}})),
            refused(Code::InvalidArgument, &["provider name \"../x\" is not valid", "^[a-zA-Z0-9_-]{0,30}$"])),
        case("empty provider", Class,
            class(json!({"provider": "", "parameters": {}})),
            refused(Code::InvalidArgument, &["spec.provider is empty"])),
        case("no objects", Class, class(azure_spec(&[])),
            refused(Code::InvalidArgument, &["objects is not set", "array:"])),
        case("objects YAML malformed", Class,
            class(azure_spec(&[("objects", "array: [unclosed")])),
            refused(Code::InvalidArgument, &["objects is not valid YAML"])),
        case("objects YAML alias bomb (billion laughs)", Class,
            class(azure_spec(&[("objects", alias_bomb)])),
            refused(Code::InvalidArgument, &["objects is not valid YAML", "repetition limit exceeded"])),
        case("objects that are a list, not a mapping", Class,
            class(azure_spec(&[("objects", "- objectName: a\n- objectName: b\n")])),
            refused(Code::InvalidArgument, &["objects must be a YAML mapping with the key `array`"])),
        case("objects array empty", Class,
            class(azure_spec(&[("objects", "array: []")])),
            refused(Code::InvalidArgument, &["objects array is empty"])),
        case("object that is a mapping, not a string", Class,
            class(azure_spec(&[("objects", "array:\n  - objectName: a\n    objectType: secret\n")])),
            refused(Code::InvalidArgument, &["objects array[0]: must be a YAML string", "- |"])),
        case("100k objects", Class,
            class(azure_spec(&[("objects", &hundred_k_objects)])),
            refused(Code::InvalidArgument, &["100000 objects", "at most 10000", "several SecretProviderClasses"])),
        case("two objects with one alias", Class,
            azure_objects(&[
                "objectName: a\nobjectType: secret\nobjectAlias: same",
                "objectName: b\nobjectType: secret\nobjectAlias: same"]),
            refused(Code::InvalidArgument, &["secret/a and secret/b both write file \"same\"", "objectAlias"])),
        case("alias that is absolute", Class,
            base_with("objectAlias: /etc/passwd"),
            refused(Code::InvalidArgument, &["array[0] objectAlias", "\"/etc/passwd\" must be relative"])),
        case("alias with ..", Class,
            base_with("objectAlias: a/../../escape"),
            refused(Code::InvalidArgument, &["array[0] objectAlias", "must not contain a '..' element"])),
        case("alias with a NUL", Class,
            base_with("objectAlias: \"a\\0b\""),
            refused(Code::InvalidArgument, &["array[0] objectAlias", "must not contain a NUL character"])),
        case("alias of 300 bytes", Class,
            base_with(&format!("objectAlias: {}", "n".repeat(300))),
            refused(Code::InvalidArgument, &["array[0] objectAlias", "300 bytes long; at most 255"])),
        case("alias with slashes (a subdirectory, accepted)", Class,
            base_with("objectAlias: a/b/c"),
            mounted(&[("a/b/c", BASE_VALUE.as_bytes())])),
        case("object name of 300 bytes", Class,
            azure_objects(&[&format!("objectName: {}\nobjectType: secret", "n".repeat(300))]),
            refused(Code::InvalidArgument, &["array[0] objectName", "1 to 127 letters, digits and '-'"])),
        case("object name with a slash", Class,
            azure_objects(&["objectName: ../keys/x\nobjectType: secret"]),
            refused(Code::InvalidArgument, &["array[0] objectName", "\"../keys/x\" is not a Key Vault object name"])),
        case("unknown objectType", Class,
            base_with("objectType: password"),
            refused(Code::InvalidArgument, &["array[0] objectType", "\"password\" is not valid", "secret, key or cert"])),
        case("unknown objectEncoding", Class,
            base_with("objectEncoding: rot13"),
            refused(Code::InvalidArgument, &["array[0] objectEncoding", "\"rot13\"", "utf-8, base64 or hex"])),
        case("unknown objectFormat", Class,
            base_with("objectFormat: der"),
            refused(Code::InvalidArgument, &["array[0] objectFormat", "\"der\"", "pem or pfx"])),
        case("objectVersion with path characters", Class,
            base_with("objectVersion: ../../keys/x"),
            refused(Code::InvalidArgument, &["array[0] objectVersion", "is not a version id"])),
        case("objectVersionHistory 0 (one version, accepted)", Class,
            base_with("objectVersionHistory: 0"),
            base_mounted()),
        case("objectVersionHistory -1", Class,
            base_with("objectVersionHistory: -1"),
            refused(Code::InvalidArgument, &["array[0] objectVersionHistory", "\"-1\" is not valid"])),
        case("objectVersionHistory 1e9", Class,
            base_with("objectVersionHistory: 1000000000"),
            refused(Code::InvalidArgument, &["array[0] objectVersionHistory", "\"1000000000\" is not valid", "at most 10000"])),
        case("filePermission 999", Class,
            base_with("filePermission: \"999\""),
            refused(Code::InvalidArgument, &["array[0] filePermission", "\"999\" is not valid", "0000 to 0777"])),
        case("filePermission 0x1ff", Class,
            base_with("filePermission: 0x1ff"),
            refused(Code::InvalidArgument, &["array[0] filePermission", "\"0x1ff\" is not valid"])),
        case("filePermission -1", Class,
            base_with("filePermission: -1"),
            refused(Code::InvalidArgument, &["array[0] filePermission", "\"-1\" is not valid"])),
        case("optional that is not a boolean", Class,
            base_with("optional: maybe"),
            refused(Code::InvalidArgument, &["array[0] optional", "\"maybe\" is not valid"])),
        case("misspelt objectName", Class,
            azure_objects(&["objectNmae: a\nobjectType: secret"]),
            refused(Code::InvalidArgument, &["array[0] objectName", "is required"])),
        case("keyvaultName that is a host name", Class,
            class(azure_spec(&[("keyvaultName", "evil.example.com/x"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["keyvaultName \"evil.example.com/x\" is not valid", "3 to 24"])),
        case("empty tenantId", Class,
            class(azure_spec(&[("tenantID", ""), ("tenantId", " "), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["tenantID is not provided"])),
        case("tenantID with a path", Class,
            class(azure_spec(&[("tenantID", "evil.example.com/oauth2?x="), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["tenantID \"evil.example.com/oauth2?x=\" is not valid"])),
        case("unknown cloudName", Class,
            class(azure_spec(&[("cloudName", "MarsCloud"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["cloudName \"MarsCloud\" is not valid"])),
        case("identity flag that is not a boolean", Class,
            class(azure_spec(&[("usePodIdentity", "yes please"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["usePodIdentity \"yes please\" is not valid", "true or false"])),
        case("two identity modes", Class,
            class(azure_spec(&[("usePodIdentity", "true"), ("useVMManagedIdentity", "true"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["only one identity mode", "usePodIdentity and useVMManagedIdentity"])),
        case("clientID with a path", Class,
            class(azure_spec(&[("clientID", "../../x"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["clientID \"../../x\" is not valid"])),
        case("every problem at once", Class,
            class(azure_spec(&[("keyvaultName", "x"), ("cloudName", "MarsCloud"), ("objects", &objects(&[
                "objectName: a\nobjectType: password", "objectName: b\nobjectType: secret\nfilePermission: \"8\""]))])),
            refused(Code::InvalidArgument, &["keyvaultName \"x\"", "cloudName \"MarsCloud\"", "array[0] objectType", "array[1] filePermission"])),
        case("rotation interval that is not a duration", Class,
            class(azure_spec(&[("secretfs.io/rotation-poll-interval", "soon"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["parameter secretfs.io/rotation-poll-interval", "\"soon\" is not a duration"])),
        case("rotation interval of 1e20 hours", Class,
            class(azure_spec(&[("secretfs.io/rotation-poll-interval", "100000000000000000000h"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["parameter secretfs.io/rotation-poll-interval", "\"100000000000000000000h\" is too long"])),
        case("fetch mode that does not exist", Class,
            class(azure_spec(&[("secretfs.io/fetch", "sometimes"), ("objects", &objects(&["objectName: a\nobjectType: secret"]))])),
            refused(Code::InvalidArgument, &["secretfs.io/fetch is \"sometimes\"", "eager (the default) or lazy"])),

        // ---- provider responses ------------------------------------------
        case("absolute path", ProviderResponse,
            provider_files(&[("/etc/passwd", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["provider \"scripted\"", "unsafe file", "\"/etc/passwd\" must be relative"])),
        case("path climbing out with ..", ProviderResponse,
            provider_files(&[("a/../../escape", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["unsafe file", "must not contain a '..' element"])),
        case("path starting with ..", ProviderResponse,
            provider_files(&[("..data/x", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["must not start with '..'"])),
        case("empty path", ProviderResponse,
            provider_files(&[("", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["unsafe file", "file path must not be empty"])),
        case("path that is the volume root", ProviderResponse,
            provider_files(&[(".", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["must name a file, not the volume root"])),
        case("path with a NUL", ProviderResponse,
            provider_files(&[("a\0b", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["must not contain a NUL character"])),
        case("path that is not clean", ProviderResponse,
            provider_files(&[("a//b/", 0o644, b"x")]),
            refused(Code::InvalidArgument, &["is not clean: write it as \"a/b\""])),
        case("file name of 300 bytes", ProviderResponse,
            provider_files(&[(&"n".repeat(300), 0o644, b"x")]),
            refused(Code::InvalidArgument, &["300 bytes long; at most 255"])),
        case("one path twice", ProviderResponse,
            provider_files(&[("a", 0o644, b"x"), ("a", 0o644, b"y")]),
            refused(Code::InvalidArgument, &["returned file \"a\" twice"])),
        case("a path that is a file and a directory", ProviderResponse,
            provider_files(&[("a", 0o644, b"x"), ("a/b", 0o644, b"y")]),
            refused(Code::InvalidArgument, &["file \"a\" and file \"a/b\" below it"])),
        case("mode above 0o777", ProviderResponse,
            provider_files(&[("a", 0o1000, b"x")]),
            refused(Code::InvalidArgument, &["\"a\" with mode 512", "0..=511"])),
        case("negative mode", ProviderResponse,
            provider_files(&[("a", -1, b"x")]),
            refused(Code::InvalidArgument, &["\"a\" with mode -1"])),
        case("no object versions", ProviderResponse,
            Input::Provider(Reply::Response(pb::MountResponse {
                object_version: vec![], ..response(&[("a", 0o644, b"x")]) })),
            refused(Code::InvalidArgument, &["missing object versions"])),
        case("versions but no files", ProviderResponse,
            Input::Provider(Reply::Response(pb::MountResponse {
                files: vec![], ..response(&[("a", 0o644, b"x")]) })),
            refused(Code::InvalidArgument, &["returned object versions but no files", "upgrade the provider"])),
        case("a version with no file (accepted, like upstream)", ProviderResponse,
            Input::Provider(Reply::Response(pb::MountResponse {
                object_version: vec![
                    pb::ObjectVersion { id: "secret/a".into(), version: "v1".into() },
                    pb::ObjectVersion { id: "secret/ghost".into(), version: "v9".into() },
                ],
                ..response(&[("a", 0o644, b"x")]) })),
            mounted(&[("a", b"x")])),
        case("error code", ProviderResponse,
            Input::Provider(Reply::Response(pb::MountResponse {
                error: Some(pb::Error { code: "VaultSealed".into() }), ..response(&[("a", 0o644, b"x")]) })),
            refused(Code::Unknown, &["failed with error code \"VaultSealed\"", "provider's logs"])),
        case("1 MiB error code carrying a secret", ProviderResponse,
            Input::Provider(Reply::Response(pb::MountResponse {
                error: Some(pb::Error { code: format!("token={PROVIDER_SECRET} {}", "e".repeat(1 << 20)) }),
                ..response(&[("a", 0o644, b"x")]) })),
            refused(Code::Unknown, &["failed with an error code that is not a plain code", "not shown", "provider's logs"]))
            .secret(PROVIDER_SECRET),
        case("gRPC PermissionDenied", ProviderResponse,
            Input::Provider(Reply::Status(Code::PermissionDenied, "role app may not read secret/foo".into())),
            refused(Code::PermissionDenied, &["provider \"scripted\"", "PermissionDenied: role app may not read secret/foo"])),
        case("response beyond the message size limit", ProviderResponse,
            provider_files(&[("big", 0o644, &vec![b'x'; 5 << 20])]),
            refused(Code::InvalidArgument, &["larger than --max-call-recv-msg-size (4194304 bytes)", "raise the flag"])),
        case("10k files (accepted)", ProviderResponse,
            Input::Provider(Reply::Response(ten_k_response)),
            Expect::Mounted(ten_k_files)),
        case("empty file (accepted)", ProviderResponse,
            provider_files(&[("empty", 0o644, b"")]),
            mounted(&[("empty", b"")])),

        // ---- vault payloads ----------------------------------------------
        case("25 KiB secret value (Key Vault's limit)", VaultPayload,
            vault(big_value.clone(), None, ""),
            mounted(&[("payload", big_value.as_bytes())])),
        case("control characters, BOM, RTL override, CRLF and emoji", VaultPayload,
            vault(odd_text, Some("text/plain"), "objectEncoding: utf-8"),
            mounted(&[("payload", odd_text.as_bytes())])),
        case("empty secret value", VaultPayload,
            vault("", None, ""),
            mounted(&[("payload", b"")])),
        case("base64 encoding of a value that is not base64", VaultPayload,
            vault("hostile not base64 !!", None, "objectEncoding: base64"),
            refused(Code::InvalidArgument, &["secret/hostile-", "objectEncoding base64", "not valid standard base64", "use utf-8"]))
            .secret("hostile not base64 !!"),
        case("base64 without padding (Go refuses it too)", VaultPayload,
            vault("aG9zdGlsZS1wYWQ", None, "objectEncoding: base64"),
            refused(Code::InvalidArgument, &["objectEncoding base64"]))
            .secret("aG9zdGlsZS1wYWQ"),
        case("base64 of bytes that are not UTF-8", VaultPayload,
            vault(b64(&[0xff, 0xfe, 0xfd, 0x00, 0x80, 0xc3]), None, "objectEncoding: base64"),
            mounted(&[("payload", &[0xff, 0xfe, 0xfd, 0x00, 0x80, 0xc3])])),
        case("base64 with CRLF line breaks", VaultPayload,
            vault("aG9zdGls\r\nZS1saW5l\r\nLWJyZWFr\r\n", None, "objectEncoding: BASE64"),
            mounted(&[("payload", b"hostile-line-break")])),
        case("hex of odd length", VaultPayload,
            vault("abc", None, "objectEncoding: hex"),
            refused(Code::InvalidArgument, &["objectEncoding hex", "not valid hex"])),
        case("hex of bytes that are not UTF-8", VaultPayload,
            vault("00ff80", None, "objectEncoding: hex"),
            mounted(&[("payload", &[0x00, 0xff, 0x80])])),
        case("contentType claiming PKCS#12 on a plain secret (written as is)", VaultPayload,
            vault("hostile plain, not a pfx", Some("application/x-pkcs12"), ""),
            mounted(&[("payload", b"hostile plain, not a pfx")])),
        case("contentType claiming PEM on a plain secret (written as is)", VaultPayload,
            vault("-----BEGIN GARBAGE-----\nnope\n", Some("application/x-pem-file"), "objectFormat: pfx"),
            mounted(&[("payload", b"-----BEGIN GARBAGE-----\nnope\n")])),
        case("object that is not in the vault", VaultPayload,
            azure_objects(&["objectName: hostile-never-written\nobjectType: secret"]),
            refused(Code::NotFound, &["secret/hostile-never-written", "was not found"])),
        case("certificate-backed PEM that is garbage (written as is, like upstream)", VaultPayload,
            cert_bundle(Some("-----BEGIN CERTIFICATE-----\nhostile garbage\n"), "application/x-pem-file", ""),
            mounted(&[("payload", b"-----BEGIN CERTIFICATE-----\nhostile garbage\n")])),
        case("certificate-backed PFX that is not base64", VaultPayload,
            cert_bundle(Some("hostile pfx !!"), "application/x-pkcs12", ""),
            refused(Code::InvalidArgument, &["secret/hostile-cert", "PFX (application/x-pkcs12) is not valid base64"]))
            .secret("hostile pfx !!"),
        case("certificate-backed PFX that is not DER", VaultPayload,
            cert_bundle(Some(&b64(b"hostile-not-der-bytes")), "application/x-pkcs12", ""),
            refused(Code::InvalidArgument, &["secret/hostile-cert", "failed to decode the certificate's PFX with an empty password"])),
        case("certificate-backed PFX with a password", VaultPayload,
            cert_bundle(Some(&b64(pfx_with_password)), "application/x-pkcs12", ""),
            refused(Code::InvalidArgument, &["failed to decode the certificate's PFX with an empty password"]))
            .secret(PFX_PASSWORD),
        case("certificate-backed PFX with a password, objectFormat pfx (as stored)", VaultPayload,
            cert_bundle(Some(&b64(pfx_with_password)), "application/x-pkcs12", "objectFormat: pfx\nobjectEncoding: base64"),
            mounted(&[("payload", pfx_with_password)])),
        case("certificate-backed secret of an unknown contentType", VaultPayload,
            cert_bundle(Some("x"), "application/json", ""),
            refused(Code::InvalidArgument, &["unknown content type 'application/json'", "application/x-pem-file or application/x-pkcs12"])),
        case("secret without a value", VaultPayload,
            cert_bundle(None, "application/x-pem-file", ""),
            refused(Code::InvalidArgument, &["secret/hostile-cert", "secret value is nil"])),
    ]
}

fn set_mount_group(r: &mut NodePublishVolumeRequest, group: &str) {
    if let Some(volume_capability::AccessType::Mount(m)) = r
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        m.volume_mount_group = group.to_owned();
    }
}

/// The emulator's `pfx-cert` PFX, re-encrypted with [`PFX_PASSWORD`].
async fn pfx_with_password(node: &Node) -> Vec<u8> {
    let provider = secretfs::provider::azure::AzureProvider::new(azure_config(&node.emu)).unwrap();
    let request = MountRequest {
        parameters: [
            ("keyvaultName", VAULT),
            ("tenantID", TENANT),
            (
                "objects",
                &objects(&["objectName: pfx-cert\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64"]),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        pod: PodRef {
            name: POD.into(),
            namespace: "default".into(),
            uid: "pfx".into(),
            service_account: SERVICE_ACCOUNT.into(),
        },
        service_account_tokens: None,
        secrets: SecretMap::new([
            ("clientid".to_owned(), APP_SP.to_owned()),
            ("clientsecret".to_owned(), APP_SP_SECRET.to_owned()),
        ]),
        default_mode: FileMode::DEFAULT,
        current: Vec::new(),
        node_name: "node-1".into(),
        max_age: Duration::ZERO,
        fresh_since: None,
    };
    let response = provider.mount(&request).await.expect("pfx-cert");
    let der = response.files[0].contents.expose().to_vec();
    let store = p12_keystore::KeyStore::from_pkcs12(&der, "", Default::default()).unwrap();
    let encrypted = store.writer(PFX_PASSWORD).write().unwrap();
    assert!(
        p12_keystore::KeyStore::from_pkcs12(&encrypted, "", Default::default()).is_err(),
        "the re-encrypted PFX needs its password"
    );
    encrypted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_has_its_exact_outcome() {
    if !fuse_available() {
        return;
    }
    let started = Instant::now();
    let node = Node::start().await;
    let pfx = pfx_with_password(&node).await;
    let cases = table(&pfx);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case {:?} twice", c.name);
    }

    // Every secret of the table, and the node's own, is checked against
    // every message.
    let mut secrets: Vec<String> =
        vec![APP_SP_SECRET.into(), BASE_VALUE.into(), PFX_PASSWORD.into()];
    for c in &cases {
        secrets.extend(c.secrets.iter().cloned());
        if let Input::Vault { value, .. } = &c.input
            && value.len() >= 8
        {
            secrets.push(value.clone());
        }
    }

    let mut failures = Vec::new();
    let mut per_layer: BTreeMap<Layer, usize> = BTreeMap::new();
    let mut slowest = (Duration::ZERO, "");
    for (i, c) in cases.into_iter().enumerate() {
        *per_layer.entry(c.layer).or_default() += 1;
        let case_started = Instant::now();
        if let Err(why) = run(&node, i, &c, &secrets).await {
            failures.push(format!("[{:?}] {}: {why}", c.layer, c.name));
        }
        let took = case_started.elapsed();
        if took > slowest.0 {
            slowest = (took, c.name);
        }
    }
    // No class name with `..` ever reached the API server.
    for path in node.api_paths() {
        if path.contains("/..") {
            failures.push(format!("an API request for {path}"));
        }
    }
    eprintln!(
        "hostile inputs: {per_layer:?} in {:?} (slowest: {:?} {:?})",
        started.elapsed(),
        slowest.1,
        slowest.0
    );
    assert!(
        failures.is_empty(),
        "{} of the table's cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs case `i`; `Err` says what differs from the table.
async fn run(node: &Node, i: usize, c: &Case, secrets: &[String]) -> Result<(), String> {
    let uid = format!("00000000-0000-4000-8000-{i:012}");
    let class = format!("hostile-{i:03}");
    let secret_name = format!("hostile-{i:03}");
    // The file synced to the case's Secret.
    let synced_file = match &c.expect {
        Expect::Mounted(files) => files.first().map_or("payload".to_owned(), |f| f.0.clone()),
        Expect::Refused { .. } => "payload".to_owned(),
    };
    let mut request = node.request(&uid, &class);
    let mut synced_secret = secret_name.clone();
    match &c.input {
        Input::Request(edit) => {
            request = node.request(&uid, GOOD_CLASS);
            synced_secret = "hostile-good".into();
            edit(&mut request);
        }
        Input::Class(spec, edit) => {
            node.add_class(&class, spec.clone(), &secret_name, &synced_file);
            if let Some(edit) = edit {
                edit(&mut request);
            }
        }
        Input::Provider(reply) => {
            node.script(reply.clone());
            node.add_class(
                &class,
                json!({"provider": "scripted", "parameters": {"roleName": "app"}}),
                &secret_name,
                &synced_file,
            );
        }
        Input::Vault {
            value,
            content_type,
            fields,
        } => {
            let object = format!("hostile-{i:03}");
            node.emu
                .add_secret_version(
                    VAULT,
                    &object,
                    NewSecretVersion {
                        value: value.clone(),
                        content_type: content_type.map(str::to_owned),
                        ..Default::default()
                    },
                )
                .map_err(|e| format!("emulator refused the value: {e}"))?;
            let spec = azure_spec(&[(
                "objects",
                &objects(&[&object_yaml(
                    &[
                        ("objectName", &object),
                        ("objectType", "secret"),
                        ("objectAlias", "payload"),
                    ],
                    fields,
                )]),
            )]);
            node.add_class(&class, spec, &secret_name, &synced_file);
        }
        Input::Bundle { bundle, fields } => {
            let spec = json!({"provider": "kv-payload", "parameters": {
                "bundle": bundle.to_string(),
                "objects": objects(&[&object_yaml(
                    &[("objectName", "hostile-cert"), ("objectType", "secret"), ("objectAlias", "payload")],
                    fields,
                )]),
            }});
            node.add_class(&class, spec, &secret_name, &synced_file);
        }
    }
    let target = std::path::PathBuf::from(&request.target_path);
    let volume_id = request.volume_id.clone();
    let writes = node.api_writes();
    let result = node.publish(request).await;
    let gone = |when: &str| -> Result<(), String> {
        if !target.as_os_str().is_empty() && is_mounted(&target) {
            return Err(format!("{when}: {target:?} is mounted"));
        }
        if !target.as_os_str().is_empty() && target.exists() {
            return Err(format!("{when}: {target:?} exists"));
        }
        Ok(())
    };
    match (&c.expect, result) {
        (Expect::Refused { code, mentions }, Err(status)) => {
            let message = status.message();
            let shown: String = message.chars().take(600).collect();
            if status.code() != *code {
                return Err(format!("code {:?}, not {code:?}: {shown}", status.code()));
            }
            for m in mentions {
                if !message.contains(m.as_str()) {
                    return Err(format!("{m:?} is not in: {shown}"));
                }
            }
            for s in secrets {
                if message.contains(s.as_str()) {
                    return Err(format!(
                        "secret {:?} shown in: {shown}",
                        s.chars().take(40).collect::<String>()
                    ));
                }
            }
            if message.len() > 16 * 1024 {
                return Err(format!("a {}-byte message: {shown}", message.len()));
            }
            gone("refused")?;
            if !node.driver.published().await.is_empty() {
                return Err("a volume is recorded".into());
            }
            if node.api_writes() != writes {
                return Err("the API server was written to".into());
            }
            Ok(())
        }
        (Expect::Refused { code, .. }, Ok(())) => {
            let _ = node.unpublish(&volume_id, &target).await;
            Err(format!("mounted; expected {code:?}"))
        }
        (Expect::Mounted(_), Err(status)) => Err(format!(
            "refused with {:?}: {}",
            status.code(),
            status.message().chars().take(600).collect::<String>()
        )),
        (Expect::Mounted(files), Ok(())) => {
            let want: BTreeMap<String, Vec<u8>> = files.iter().cloned().collect();
            let got = tree(&target);
            let checked = if got == want {
                match node.synced_secret(&synced_secret) {
                    Some(bytes) if Some(&bytes) == want.get(&synced_file) => Ok(()),
                    Some(_) => Err(format!("Secret {synced_secret} holds other bytes")),
                    None => Err(format!("Secret {synced_secret} was not written")),
                }
            } else {
                let summary = |t: &BTreeMap<String, Vec<u8>>| {
                    t.iter()
                        .take(5)
                        .map(|(p, b)| format!("{p:?} ({} bytes)", b.len()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(format!(
                    "{} files [{}…], expected {} [{}…]",
                    got.len(),
                    summary(&got),
                    want.len(),
                    summary(&want)
                ))
            };
            node.unpublish(&volume_id, &target)
                .await
                .map_err(|s| format!("unpublish: {}", s.message()))?;
            gone("unpublished")?;
            checked
        }
    }
}
