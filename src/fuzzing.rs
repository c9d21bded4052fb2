//! Entry points for the `cargo fuzz` targets in `fuzz/` and for
//! `tests/integration/fuzz_regressions.rs`. Not part of the crate's API.
//!
//! Each function feeds one input to one of the crate's parsers and panics
//! when a property that parser promises does not hold, so a fuzzer reports
//! more than crashes:
//! - [`objects`]: the SecretProviderClass `objects` parameter (and the
//!   Azure parameters around it). An accepted input yields objects with
//!   valid, trimmed names and safe aliases, and a plan of safe paths.
//! - [`volume_context`]: a NodePublishVolume's volume context, secrets and
//!   target path. An accepted request names its pod and class, and its
//!   target is exactly `<…>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount`.
//! - [`provider_response`]: an external provider's `MountResponse`. Every
//!   accepted file has a clean relative path without `..`, a unique path that
//!   is no other file's directory, a mode ≤ `0o777`, and its bytes unchanged.
//! - [`pfx_pem`]: a certificate-backed secret's PFX → PEM, and the split of
//!   a mounted PEM or PFX file into `tls.crt`/`tls.key`. The PEM of an
//!   accepted PFX is laid out as Go writes it, holds canonical PKCS#8 keys
//!   first, and splits back into a TLS pair whose key parses.
//!
//! The inputs are the formats the driver reads (`objects` YAML, a protobuf
//! message decoded by the fuzz target, DER), except the publish request,
//! which has no wire form of its own here: see [`volume_context`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::Decode as _;
use secretfs_csi::proto::provider as pb;
use secretfs_csi::{PublishRequest, VolumeContext, keys};
use secretfs_secrets::{SecretBytes, SecretMap};

use crate::provider::azure::objects::{MAX_FILES, parse_objects, plan_objects};
use crate::provider::azure::params::{AzureParameters, ParseOptions};
use crate::provider::azure::pem;
use crate::provider::azure::pfx::{canonical_pkcs8, pfx_to_pem};
use crate::provider::azure::{CloudName, ObjectEncoding, decode_value};
use crate::provider::{FileMode, MountedFile, validate_relative_path};
use crate::spc::{SecretObject, SecretObjectData};

/// What a parser made of one input: the seed tests assert it, so a parser
/// that refused (or accepted) everything would fail them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    Accepted,
    Refused,
    /// Not a possible input (non-UTF-8 text where only strings arrive).
    Skipped,
}

impl Outcome {
    fn of<T, E>(result: &Result<T, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    }
}

/// The `objects` parameter: `input` is the parameter's text (non-UTF-8
/// input is skipped: a Kubernetes string cannot hold it).
pub fn objects(input: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(input) else {
        return Outcome::Skipped;
    };
    let parsed = parse_objects(text);
    let outcome = Outcome::of(&parsed);
    if let Ok(parsed) = &parsed {
        assert!(!parsed.objects.is_empty(), "accepted an empty array");
        let mut expected_files = 0usize;
        for (i, o) in parsed.objects.iter().enumerate() {
            assert_eq!(o.index, i, "index of {o:?}");
            assert!(!o.name.is_empty(), "empty objectName: {o:?}");
            assert_eq!(o.name.trim(), o.name, "untrimmed objectName: {o:?}");
            assert!(
                o.name.len() <= 127
                    && o.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "objectName outside [-A-Za-z0-9]{{1,127}}: {o:?}"
            );
            if let Some(alias) = &o.alias {
                assert!(!alias.is_empty(), "empty objectAlias: {o:?}");
                assert_eq!(alias.trim(), alias, "untrimmed objectAlias: {o:?}");
                assert!(
                    validate_relative_path(alias).is_ok(),
                    "unsafe objectAlias: {o:?}"
                );
            }
            if let Some(version) = &o.version {
                assert!(
                    (1..=64).contains(&version.len())
                        && version.bytes().all(|b| b.is_ascii_alphanumeric())
                        && !version.eq_ignore_ascii_case("latest"),
                    "objectVersion: {o:?}"
                );
            }
            if let Some(mode) = o.file_permission {
                assert!(mode.bits() <= 0o777, "filePermission: {o:?}");
            }
            assert!(
                o.version_history as usize <= MAX_FILES,
                "objectVersionHistory: {o:?}"
            );
            expected_files += if o.uses_history() {
                o.version_history as usize
            } else {
                1
            };
        }
        assert!(expected_files <= MAX_FILES, "{expected_files} files");
        // The plan of accepted objects: every path is safe, and there are
        // as many files as the objects ask for.
        if let Ok(plan) = plan_objects(&parsed.objects, FileMode::DEFAULT) {
            assert_eq!(plan.files().len(), expected_files, "plan size");
            for f in plan.files() {
                assert!(
                    validate_relative_path(&f.path).is_ok(),
                    "unsafe planned path {:?}",
                    f.path
                );
                assert!(f.mode.bits() <= 0o777);
            }
        }
    }

    // The same text as the `objects` of a class whose other parameters are
    // valid: accepted exactly when the (trimmed) text is, with the same
    // objects.
    let params = BTreeMap::from([
        ("keyvaultName".to_owned(), "kv-fuzz".to_owned()),
        ("tenantID".to_owned(), "tenant.example".to_owned()),
        ("objects".to_owned(), text.to_owned()),
    ]);
    let options = ParseOptions {
        default_cloud: CloudName::Public,
        load_cloud_env: &|_| Err(std::io::Error::other("no files while fuzzing")),
    };
    let whole = AzureParameters::parse(&params, &options);
    let trimmed = if text.trim() == text {
        parsed
    } else {
        parse_objects(text.trim())
    };
    match (whole, trimmed) {
        (Ok(p), Ok(o)) => {
            assert_eq!(p.objects, o.objects);
            assert_eq!(p.warnings, o.warnings);
        }
        (Err(e), Err(o)) => assert!(
            e.0.iter().any(|p| matches!(
                p,
                crate::provider::azure::ParamError::Objects(x) if *x == o
            )),
            "parameters error {e} does not carry the objects error {o}"
        ),
        (w, o) => panic!("parameters {w:?} disagree with objects {o:?}"),
    }
    outcome
}

/// A NodePublishVolume as [`crate::node::driver`] reads it. `input` is lines: the
/// first is the target path (any bytes but `\n`), then `key=value` for the
/// volume context and `secret:key=value` for the request secrets.
pub fn volume_context(input: &[u8]) -> Outcome {
    let mut lines = input.split(|&b| b == b'\n');
    let target = Path::new(OsStr::from_bytes(lines.next().unwrap_or_default()));
    let mut context = Vec::new();
    let mut secrets = Vec::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        let (key, value) = line.split_once('=').unwrap_or((&line, ""));
        match key.strip_prefix("secret:") {
            Some(key) => secrets.push((key.to_owned(), value.to_owned())),
            None => context.push((key.to_owned(), value.to_owned())),
        }
    }
    let request = PublishRequest {
        volume_id: "csi-fuzz".into(),
        target_path: target.to_owned(),
        volume_context: VolumeContext::new(context),
        secrets: SecretMap::new(secrets),
        mount_group: None,
        mount_flags: Vec::new(),
    };
    let Ok(ctx) = crate::node::driver::context::read(&request) else {
        return Outcome::Refused;
    };
    let ctx_get = |k: &str| request.volume_context.get(k).unwrap_or_default();
    assert!(!ctx.pod.name.is_empty() && ctx.pod.name == ctx_get(keys::POD_NAME));
    assert!(!ctx.pod.namespace.is_empty() && ctx.pod.namespace == ctx_get(keys::POD_NAMESPACE));
    assert!(!ctx.pod.uid.is_empty() && ctx.pod.uid == ctx_get(keys::POD_UID));
    assert!(!ctx.class.is_empty() && ctx.class == ctx_get(keys::SECRET_PROVIDER_CLASS));
    // The class name goes into an API path: a Kubernetes object name only.
    assert!(
        ctx.class.len() <= 253
            && ctx
                .class
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
        "class {:?}",
        ctx.class
    );
    assert!(ctx.tokens.as_ref().is_none_or(|t| !t.is_empty()));
    for (key, _) in request.volume_context.iter() {
        assert!(
            key.starts_with("csi.storage.k8s.io/")
                || key == keys::SECRET_PROVIDER_CLASS
                || key == "providerName",
            "accepted pod attribute {key:?}"
        );
    }
    // The target, compared byte for byte component by component: an
    // absolute path of plain names ending in the pod's volume directory.
    let mut components = target.components();
    assert_eq!(
        components.next(),
        Some(Component::RootDir),
        "relative target {target:?}"
    );
    let names: Vec<&[u8]> = components
        .map(|c| match c {
            Component::Normal(n) => n.as_bytes(),
            other => panic!("target {target:?} accepted with {other:?}"),
        })
        .collect();
    let [.., pods, uid, volumes, plugin, volume, mount] = names.as_slice() else {
        panic!("target {target:?} accepted with fewer than six names");
    };
    assert_eq!(
        [*pods, *uid, *volumes, *plugin, *mount],
        [
            b"pods".as_slice(),
            ctx.pod.uid.as_bytes(),
            b"volumes",
            b"kubernetes.io~csi",
            b"mount"
        ],
        "target {target:?} is not a volume of pod {}",
        ctx.pod.uid
    );
    assert!(!volume.is_empty());
    Outcome::Accepted
}

/// An external provider's `MountResponse` (the fuzz target decodes it from
/// protobuf, as the gRPC client does).
pub fn provider_response(response: pb::MountResponse) -> Outcome {
    let input = response.clone();
    let socket = Path::new("/fuzz/provider.sock");
    let result = crate::provider::external::check_response("fuzz", socket, response);
    let code = input.error.as_ref().map_or("", |e| e.code.as_str());
    let out = match result {
        Ok(out) => out,
        Err(
            crate::provider::MountError::External { error_type, .. }
            | crate::provider::MountError::Provider { error_type, .. },
        ) => {
            assert!(
                !error_type.is_empty() && error_type.len() <= 64,
                "error_type {error_type:?}"
            );
            return Outcome::Refused;
        }
        Err(other) => panic!("unexpected error kind {other:?}"),
    };
    assert!(
        code.is_empty(),
        "accepted a response with error code {code:?}"
    );
    assert!(!out.files.is_empty(), "accepted a response without files");
    assert_eq!(out.files.len(), input.files.len());
    let mut paths = BTreeSet::new();
    for (got, sent) in out.files.iter().zip(&input.files) {
        let path = got.path.as_str();
        assert_eq!(path, sent.path);
        assert!(!path.is_empty() && !path.starts_with('/'), "path {path:?}");
        assert!(
            path.split('/')
                .all(|p| !p.is_empty() && p != "." && p != ".."),
            "path {path:?} is not clean"
        );
        assert!(!path.starts_with(".."), "path {path:?}");
        assert!(!path.contains('\0'), "path {path:?}");
        assert!(got.mode.bits() <= 0o777, "mode of {path:?}");
        assert_eq!(i64::from(got.mode.bits()), i64::from(sent.mode), "mode");
        assert_eq!(got.contents.expose(), sent.contents.as_slice());
        assert!(paths.insert(path), "path {path:?} twice");
    }
    for path in &paths {
        let mut dir = *path;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            assert!(
                !paths.contains(parent),
                "{parent:?} is a file and the directory of {path:?}"
            );
            dir = parent;
        }
    }
    let mut sent: Vec<(String, String)> = input
        .object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect();
    sent.sort();
    let got: Vec<(String, String)> = out
        .versions
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect();
    assert_eq!(got, sent, "versions must be kept, sorted");
    assert!(!got.is_empty());
    Outcome::Accepted
}

/// One PEM block: its label and DER.
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(begin) = lines.next() {
        let label = begin
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .unwrap_or_else(|| panic!("not a BEGIN line: {begin:?}"));
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        for line in lines.by_ref() {
            if line == end {
                break;
            }
            body.push_str(line);
        }
        let der = STANDARD
            .decode(&body)
            .unwrap_or_else(|e| panic!("{label} body: {e}"));
        out.push((label.to_owned(), der));
    }
    out
}

/// `tls.crt` and `tls.key` of a `kubernetes.io/tls` Secret synced from a
/// mounted file holding `file`.
fn tls_split(file: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let mounted = [MountedFile {
        path: "tls".into(),
        mode: FileMode::DEFAULT,
        contents: Arc::new(SecretBytes::from_slice(file)),
        object_id: "secret/tls".into(),
    }];
    let object = |keys: &[&str]| SecretObject {
        secret_name: "tls".into(),
        secret_type: "kubernetes.io/tls".into(),
        data: keys
            .iter()
            .map(|k| SecretObjectData {
                object_name: "tls".into(),
                key: (*k).into(),
            })
            .collect(),
        ..SecretObject::default()
    };
    let crt = crate::node::sync::build_secret_data(&object(&["tls.crt"]), &mounted)
        .map_err(|e| e.to_string())?;
    let crt = crt["tls.crt"].expose().to_vec();
    let key = crate::node::sync::build_secret_data(&object(&["tls.key"]), &mounted)
        .ok()
        .map(|k| k["tls.key"].expose().to_vec());
    Ok((crt, key))
}

/// Checks a TLS pair: certificates only in `tls.crt`, and a traditional key
/// that parses in `tls.key`.
fn check_tls_pair(crt: &[u8], key: Option<&[u8]>, strict: bool) {
    assert!(
        crt.starts_with(b"-----BEGIN CERTIFICATE-----"),
        "tls.crt does not start with a certificate"
    );
    let Some(key) = key else { return };
    let text = std::str::from_utf8(key).expect("tls.key is text");
    if !strict {
        // Keys copied from the file as they are: only their label is ours.
        assert!(
            text.starts_with("-----BEGIN RSA PRIVATE KEY-----")
                || text.starts_with("-----BEGIN EC PRIVATE KEY-----")
        );
        return;
    }
    let blocks = pem_blocks(text);
    let [(label, der)] = blocks.as_slice() else {
        panic!("tls.key holds {} blocks", blocks.len());
    };
    match label.as_str() {
        "RSA PRIVATE KEY" => {
            pkcs1::RsaPrivateKeyRef::from_der(der).expect("tls.key is PKCS#1");
        }
        "EC PRIVATE KEY" => {
            let key = sec1::EcPrivateKey::from_der(der).expect("tls.key is SEC1");
            assert!(
                key.parameters.and_then(|p| p.named_curve()).is_some(),
                "tls.key names no curve"
            );
        }
        other => panic!("tls.key is a {other}"),
    }
}

/// What [`pfx_pem`] made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct PfxPemOutcome {
    /// The input as a mounted file, split into `tls.crt`/`tls.key`.
    pub split: Outcome,
    /// The input as the DER of a PFX, converted to PEM.
    pub pfx: Outcome,
}

/// A PFX (`input` as DER) or a mounted PEM/PFX file (`input` as is).
pub fn pfx_pem(input: &[u8]) -> PfxPemOutcome {
    // 1. The file as mounted, split for a kubernetes.io/tls Secret: PEM text,
    //    the base64 text of a PFX, or a binary PFX.
    let direct = tls_split(input);
    if let Ok((crt, key)) = &direct {
        check_tls_pair(crt, key.as_deref(), false);
    }
    if let Ok(text) = std::str::from_utf8(input) {
        for encoding in [ObjectEncoding::Base64, ObjectEncoding::Hex] {
            let _ = decode_value(text, encoding);
        }
    }

    let mut outcome = PfxPemOutcome {
        split: Outcome::of(&direct),
        pfx: Outcome::Refused,
    };

    // 2. `input` as the DER of a PFX that Key Vault returns in base64.
    let Ok(converted) = pfx_to_pem(&STANDARD.encode(input)) else {
        return outcome;
    };
    outcome.pfx = Outcome::Accepted;
    let pem_bytes = converted.pem.expose();
    let text = std::str::from_utf8(pem_bytes).expect("PEM is ASCII");
    let blocks = pem_blocks(text);
    // Laid out exactly as Go's pem.Encode writes it.
    let mut again = Vec::new();
    for (label, der) in &blocks {
        pem::encode_into(&mut again, label, der);
    }
    assert_eq!(again, pem_bytes, "PEM layout");
    // Keys first (canonical PKCS#8: converting again changes nothing), then
    // certificates.
    let keys = blocks
        .iter()
        .take_while(|(l, _)| l == pem::PRIVATE_KEY)
        .count();
    let certificates = &blocks[keys..];
    for (label, der) in &blocks[..keys] {
        let again = canonical_pkcs8(der).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(again.as_slice(), der.as_slice(), "PKCS#8 is not canonical");
    }
    assert!(
        certificates.iter().all(|(l, _)| l == pem::CERTIFICATE),
        "PEM blocks out of order"
    );
    if certificates.is_empty() {
        assert!(tls_split(pem_bytes).is_err());
        return outcome;
    }

    // 3. Back: the PEM splits into the TLS pair, with every certificate in
    //    tls.crt and the first key, re-encoded, in tls.key.
    let (crt, key) = tls_split(pem_bytes).expect("the PEM of an accepted PFX splits");
    let mut expected_crt = Vec::new();
    for (_, der) in certificates {
        pem::encode_into(&mut expected_crt, pem::CERTIFICATE, der);
    }
    assert_eq!(crt, expected_crt, "tls.crt");
    assert_eq!(key.is_some(), keys > 0, "tls.key");
    check_tls_pair(&crt, key.as_deref(), true);
    // A binary PFX mounted as is splits the same way.
    if std::str::from_utf8(input).is_err() {
        assert_eq!(direct, Ok((crt, key)), "binary PFX split");
    }
    outcome
}
