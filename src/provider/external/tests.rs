//! External providers: the response checks, the client's retries and
//! error mapping.

use super::validate::*;
use super::*;

fn file(path: &str, mode: i32) -> pb::File {
    pb::File {
        path: path.into(),
        mode,
        contents: b"x".to_vec(),
    }
}

fn response(files: Vec<pb::File>) -> pb::MountResponse {
    pb::MountResponse {
        object_version: vec![
            pb::ObjectVersion {
                id: "secret/b".into(),
                version: "1".into(),
            },
            pb::ObjectVersion {
                id: "secret/a".into(),
                version: "2".into(),
            },
        ],
        error: None,
        files,
    }
}

fn check(files: Vec<pb::File>) -> Result<MountResponse, MountError> {
    check_response("vault", Path::new("/p/vault.sock"), response(files))
}

#[test]
fn a_good_response_becomes_files_and_sorted_versions() {
    let out = check(vec![file("a", 420), file("dir/b", 0o400)]).unwrap();
    assert_eq!(out.files.len(), 2);
    assert_eq!(out.files[1].mode.bits(), 0o400);
    assert_eq!(out.versions[0].id, "secret/a");
}

#[test]
fn bad_paths_and_modes_are_refused_with_the_path() {
    for (f, needle) in [
        (file("/etc/passwd", 420), "relative"),
        (file("a/../b", 420), "'..'"),
        (file("..data", 420), "start with '..'"),
        (file("a//b", 420), "not clean"),
        (file("a", 512), "mode 512"),
        (file("a", -1), "mode -1"),
    ] {
        let err = check(vec![f]).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
        assert!(err.to_string().contains("vault.sock"), "{err}");
    }
    let err = check(vec![file("a", 420), file("a", 420)]).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let err = check(vec![file("a", 420), file("a/b", 420)]).unwrap_err();
    assert!(
        err.to_string().contains("both a file and a directory"),
        "{err}"
    );
}

#[test]
fn pem_certificate_files_report_their_validity_and_others_none() {
    const PEM: &str = include_str!("../../../tests/fixtures/azure/input/pem-file-rsa.pem");
    let pem = |path: &str| pb::File {
        path: path.into(),
        mode: 0o400,
        contents: PEM.as_bytes().to_vec(),
    };
    // "secret/a" is an object's id, "b" the end of one: their
    // versions; "tls.pem" neither: no version.
    let out = check(vec![
        pem("secret/a"),
        pem("b"),
        pem("tls.pem"),
        file("plain", 420),
    ])
    .unwrap();
    assert_eq!(
        out.validity.keys().collect::<Vec<_>>(),
        ["b", "secret/a", "tls.pem"]
    );
    assert_eq!(out.validity["b"].version, "1");
    let a = &out.validity["secret/a"];
    assert_eq!(a.version, "2");
    assert_eq!((a.not_before, a.expires), (None, None));
    let until = a.expires_at().unwrap();
    assert!(
        until.source.starts_with("certificate notAfter ("),
        "{}",
        until.source
    );
    assert_eq!(out.validity["tls.pem"].version, "");
    // One object: its version.
    let mut one = response(vec![pem("tls.pem")]);
    one.object_version.truncate(1);
    let out = check_response("vault", Path::new("/s"), one).unwrap();
    assert_eq!(out.validity["tls.pem"].version, "1");
}

#[test]
fn error_codes_become_bounded_labels() {
    assert_eq!(error_type_label("AccessDenied"), "AccessDenied");
    assert_eq!(error_type_label("has space"), "ProviderErrorOther");
    let mut r = response(vec![file("a", 420)]);
    r.error = Some(pb::Error {
        code: "AccessDenied".into(),
    });
    match check_response("vault", Path::new("/s"), r).unwrap_err() {
        MountError::Provider {
            error_type,
            message,
        } => {
            assert_eq!(error_type, "AccessDenied");
            assert!(message.contains("AccessDenied"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Anything but a plain code is neither a label nor shown.
    let mut r = response(vec![file("a", 420)]);
    r.error = Some(pb::Error {
        code: format!("denied: token=s3cr3t {}", "x".repeat(1 << 20)),
    });
    match check_response("vault", Path::new("/s"), r).unwrap_err() {
        MountError::Provider {
            error_type,
            message,
        } => {
            assert_eq!(error_type, "ProviderErrorOther");
            assert!(!message.contains("s3cr3t"), "{message}");
            assert!(message.len() < 512, "{message}");
            assert!(message.contains("1048597 bytes, not shown"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
