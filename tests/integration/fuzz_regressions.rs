//! Inputs for the `cargo fuzz` targets (`fuzz/`, run by `scripts/fuzz.sh`),
//! through the same entry points (`secretfs::fuzzing`): a few seeds, so the
//! entry points and their properties cannot rot, and every finding of the
//! fuzzers, minimized, with what was wrong.

use secretfs::fuzzing::{self, Outcome::*, PfxPemOutcome};
use secretfs_csi::proto::provider as pb;

const UID: &str = "0d5cb5a2-1f6b-4d8c-9a57-4f0c3e2b1a90";

/// The volume_context target's input: the target path, then `key=value`
/// lines.
fn publish(target: &[u8], extra: &[&str]) -> Vec<u8> {
    let mut input = target.to_vec();
    for line in [
        "csi.storage.k8s.io/pod.name=nginx".to_owned(),
        "csi.storage.k8s.io/pod.namespace=default".to_owned(),
        format!("csi.storage.k8s.io/pod.uid={UID}"),
        "secretProviderClass=azure-kvname".to_owned(),
    ]
    .iter()
    .map(String::as_str)
    .chain(extra.iter().copied())
    {
        input.push(b'\n');
        input.extend_from_slice(line.as_bytes());
    }
    input
}

fn target() -> String {
    format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/secrets-store-inline/mount")
}

fn file(path: &str, mode: i32, contents: &[u8]) -> pb::File {
    pb::File {
        path: path.into(),
        mode,
        contents: contents.to_vec(),
    }
}

fn response(files: Vec<pb::File>) -> pb::MountResponse {
    pb::MountResponse {
        object_version: vec![pb::ObjectVersion {
            id: "secret/a".into(),
            version: "1".into(),
        }],
        error: None,
        files,
    }
}

// ---- seeds: accepted and refused inputs of each target ----
//
// Each seed states its expected outcome: a parser that refused (or
// accepted) everything fails here, not only one that breaks a property.

#[test]
fn seed_objects() {
    for (input, expected) in [
        (
            "array:\n  - |\n    objectName: sql-password\n    objectAlias: SECRET_1\n    objectType: secret\n",
            Accepted,
        ),
        (
            "array:\n  - |\n    objectName: db\n    objectAlias: dir/creds\n    objectType: secret\n    objectVersionHistory: 3\n    objectFormat: pfx\n    objectEncoding: base64\n    filePermission: \"0440\"\n",
            Accepted,
        ),
        (
            "  array: [\"objectName: a\\nobjectType: secret\", \"{objectName: b, objectType: cert}\"]\n",
            Accepted,
        ),
        // An alias leaving the volume.
        (
            "array:\n  - |\n    objectName: a\n    objectAlias: ../x\n    objectType: secret\n",
            Refused,
        ),
        // More versions than files a volume may have.
        (
            "array:\n  - |\n    objectName: h\n    objectType: secret\n    objectVersionHistory: 1000000000\n",
            Refused,
        ),
        ("array: []", Refused),
        ("\u{feff}: [", Refused),
        ("", Refused),
    ] {
        assert_eq!(fuzzing::objects(input.as_bytes()), expected, "{input:?}");
    }
    assert_eq!(fuzzing::objects(b"\xff\xfe"), Skipped);
}

#[test]
fn seed_volume_context() {
    let target = target();
    assert_eq!(
        fuzzing::volume_context(&publish(target.as_bytes(), &[])),
        Accepted
    );
    assert_eq!(
        fuzzing::volume_context(&publish(
            target.as_bytes(),
            &[
                "csi.storage.k8s.io/serviceAccount.tokens={\"api\":{\"token\":\"t\"}}",
                "secret:csi.storage.k8s.io/serviceAccount.tokens=",
                "providerName=azure",
            ],
        )),
        Accepted
    );
    // Refused: a pod attribute, another pod's target, a relative target,
    // nothing at all.
    for input in [
        publish(target.as_bytes(), &["keyvaultName=evil"]),
        publish(target.replace(UID, "other").as_bytes(), &[]),
        publish(&target.as_bytes()[1..], &[]),
        Vec::new(),
    ] {
        assert_eq!(
            fuzzing::volume_context(&input),
            Refused,
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn seed_provider_response() {
    assert_eq!(
        fuzzing::provider_response(response(vec![
            file("a", 0o644, b"p@ss"),
            file("dir/b", 0o400, &[0, 1]),
            file("dir/c/d", 0, b""),
        ])),
        Accepted
    );
    // Refused: unsafe paths, bad modes, a file that is also a directory,
    // duplicates, no files, no versions, an error code.
    for files in [
        vec![file("../etc", 0o644, b"")],
        vec![file("a/./b", 0o644, b"")],
        vec![file("a", -1, b"")],
        vec![file("a", 0o1777, b"")],
        vec![file("a", 0o644, b""), file("a/b", 0o644, b"")],
        vec![file("a", 0o644, b""), file("a", 0o644, b"")],
        vec![],
    ] {
        let shown = format!("{files:?}");
        assert_eq!(
            fuzzing::provider_response(response(files)),
            Refused,
            "{shown}"
        );
    }
    let mut no_versions = response(vec![file("a", 0o644, b"")]);
    no_versions.object_version.clear();
    assert_eq!(fuzzing::provider_response(no_versions), Refused);
    let mut failed = response(vec![file("a", 0o644, b"")]);
    failed.error = Some(pb::Error {
        code: "AccessDenied".into(),
    });
    assert_eq!(fuzzing::provider_response(failed), Refused);
}

#[test]
fn seed_pfx_pem() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/azure");
    // (file, split into tls.crt/tls.key as mounted, converted as a PFX's DER)
    for (name, split, pfx) in [
        ("input/pfx-ec-chain.pfx", Accepted, Accepted),
        ("input/pfx-rsa-chain.pfx", Accepted, Accepted),
        ("input/pfx-incomplete.pfx", Accepted, Accepted),
        ("input/pfx-rsa-legacy.pfx", Accepted, Accepted),
        ("input/pfx-ec-chain.pfx.b64", Accepted, Refused),
        ("input/pem-file-rsa.pem", Accepted, Refused),
        ("expected/pfx-ec-chain.pem", Accepted, Refused),
    ] {
        let bytes = std::fs::read(format!("{fixtures}/{name}")).unwrap();
        assert_eq!(
            fuzzing::pfx_pem(&bytes),
            PfxPemOutcome { split, pfx },
            "{name}"
        );
    }
    // The fuzzer's own seeds: PFXs without MAC or encryption, so that
    // mutations are not all stopped by the MAC check.
    for seed in [
        include_bytes!("../../fuzz/seeds/pfx_pem/plain-ec-chain.pfx").as_slice(),
        include_bytes!("../../fuzz/seeds/pfx_pem/plain-ec-leaf.pfx"),
        include_bytes!("../../fuzz/seeds/pfx_pem/plain-rsa-leaf.pfx"),
    ] {
        let b64 = base64_std(seed);
        assert!(
            secretfs::provider::azure::pfx::pfx_to_pem(&b64).is_ok(),
            "the seed must convert"
        );
        assert_eq!(fuzzing::pfx_pem(seed).pfx, Accepted);
    }
    // A certificate block with nothing in it splits (the split sorts PEM
    // blocks, it does not parse certificates; Kubernetes checks tls.crt),
    // and is no PFX; nothing at all is neither.
    assert_eq!(
        fuzzing::pfx_pem(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"),
        PfxPemOutcome {
            split: Accepted,
            pfx: Refused
        }
    );
    assert_eq!(
        fuzzing::pfx_pem(b""),
        PfxPemOutcome {
            split: Refused,
            pfx: Refused
        }
    );
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---- findings ----

/// volume_context: a target path with a name that is not UTF-8 was
/// accepted with that name skipped, so `pods/<not UTF-8>/<uid>/volumes/…`, a
/// directory below another "pod", passed for the pod's own volume
/// (`check_target` matched only the UTF-8 names). Fixed in
/// `src/node/driver/context.rs`: a target that is not UTF-8 is refused.
#[test]
fn target_with_a_non_utf8_name_in_place_of_the_pod_uid() {
    // As minimized by libFuzzer (the pod keys are `publish`'s).
    let mut target = b"/pods/\xbf\xbd\xef\xbf/".to_vec();
    target.extend_from_slice(UID.as_bytes());
    target.extend_from_slice(b"/volumes/kubernetes.io~csi/sli/mount");
    assert_eq!(fuzzing::volume_context(&publish(&target, &[])), Refused);

    use std::os::unix::ffi::OsStrExt as _;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&target));
    let err = secretfs::node::driver::check_target(path, UID).unwrap_err();
    assert_eq!(err.error_type, "UnexpectedTargetPath");
    // A non-UTF-8 name anywhere else is refused too (kubelet never makes one).
    let inside = format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/v/mount");
    let mut extra = inside.clone().into_bytes();
    extra.splice(17..17, b"\xfe/".iter().copied());
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&extra));
    assert!(secretfs::node::driver::check_target(path, UID).is_err());
    assert!(secretfs::node::driver::check_target(std::path::Path::new(&inside), UID).is_ok());
}
