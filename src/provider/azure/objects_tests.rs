//! Tests of the `objects` parser and of the plan it makes.

use super::objects::*;
use crate::provider::{FileMode, PlanError};

fn objects(items: &[&str]) -> String {
    let mut s = String::from("array:\n");
    for item in items {
        s.push_str("  - |\n");
        for line in item.lines() {
            s.push_str("    ");
            s.push_str(line);
            s.push('\n');
        }
    }
    s
}

fn one(item: &str) -> KeyVaultObject {
    let parsed = parse_objects(&objects(&[item])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.objects.len(), 1);
    parsed.objects.into_iter().next().unwrap()
}

fn errors(items: &[&str]) -> Vec<String> {
    match parse_objects(&objects(items)) {
        Err(ObjectsError::Objects(errs)) => errs.iter().map(ToString::to_string).collect(),
        other => panic!("expected object errors, got {other:?}"),
    }
}

fn error(item: &str) -> String {
    let errs = errors(&[item]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn the_usual_shape_with_defaults() {
    let o = one(
        "objectName: sql-password\nobjectAlias: SECRET_1 # alias\nobjectType: secret\nobjectVersion: \"\"",
    );
    assert_eq!(
        o,
        KeyVaultObject {
            index: 0,
            name: "sql-password".into(),
            alias: Some("SECRET_1".into()),
            object_type: ObjectType::Secret,
            version: None,
            version_history: 0,
            format: ObjectFormat::Pem,
            encoding: ObjectEncoding::Utf8,
            file_permission: None,
            optional: false,
        }
    );
    assert_eq!(o.file_name(), "SECRET_1");
    assert_eq!(o.id(), "secret/sql-password");
}

#[test]
fn every_field_is_trimmed_and_case_insensitive_where_upstream_is() {
    let o = one(
        "objectName: \"  web-tls \"\nobjectAlias: \" tls/web.pfx \"\nobjectType: \" Secret\"\nobjectVersion: \" 0123456789abcdef0123456789abcdef \"\nobjectFormat: \" PFX \"\nobjectEncoding: \" Base64 \"\nfilePermission: \" 0440 \"",
    );
    assert_eq!(o.name, "web-tls");
    assert_eq!(o.alias.as_deref(), Some("tls/web.pfx"));
    assert_eq!(o.object_type, ObjectType::Secret);
    assert_eq!(
        o.version.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(o.format, ObjectFormat::Pfx);
    assert_eq!(o.encoding, ObjectEncoding::Base64);
    assert_eq!(o.file_permission.map(FileMode::bits), Some(0o440));
    for (text, enc) in [
        ("utf-8", ObjectEncoding::Utf8),
        ("HEX", ObjectEncoding::Hex),
    ] {
        let o = one(&format!(
            "objectName: a\nobjectType: secret\nobjectEncoding: {text}"
        ));
        assert_eq!(o.encoding, enc);
    }
    assert_eq!(
        one("objectName: k\nobjectType: KEY").object_type,
        ObjectType::Key
    );
    assert_eq!(
        one("objectName: c\nobjectType: cert\nobjectFormat: pem").object_type,
        ObjectType::Cert
    );
}

#[test]
fn values_are_read_as_written() {
    // Unquoted numbers keep their text, as Go's decoder does for string fields.
    let o = one(
        "objectName: 0123\nobjectType: secret\nobjectVersion: 00012345678901234567890123456789\nfilePermission: 0600",
    );
    assert_eq!(o.name, "0123");
    assert_eq!(
        o.version.as_deref(),
        Some("00012345678901234567890123456789")
    );
    assert_eq!(o.file_permission.map(FileMode::bits), Some(0o600));
    assert_eq!(
        one("objectName: a\nobjectType: secret\nfilePermission: 755")
            .file_permission
            .map(FileMode::bits),
        Some(0o755)
    );
    // Null, empty and `latest` versions all mean the latest.
    for v in ["~", "null", "", "latest", "LATEST"] {
        assert_eq!(
            one(&format!(
                "objectName: a\nobjectType: secret\nobjectVersion: {v}"
            ))
            .version,
            None,
            "{v}"
        );
    }
}

#[test]
fn version_history_plans_exactly_n_files() {
    let o = one(
        "objectName: db\nobjectAlias: creds\nobjectType: secret\nobjectVersionHistory: 3\nfilePermission: \"0400\"",
    );
    assert!(o.uses_history());
    let files = o.planned_files(FileMode::DEFAULT);
    let got: Vec<(&str, &str, bool, u32)> = files
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                f.object_id.as_str(),
                f.required,
                f.mode.bits(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("creds/0", "secret/db/0", true, 0o400),
            ("creds/1", "secret/db/1", false, 0o400),
            ("creds/2", "secret/db/2", false, 0o400),
        ]
    );
    // 0 and 1 mount one version at the plain path, as upstream.
    for n in ["0", "1", "\"1\""] {
        let o = one(&format!(
            "objectName: db\nobjectType: secret\nobjectVersionHistory: {n}"
        ));
        assert!(!o.uses_history());
        let files = o.planned_files(FileMode::DEFAULT);
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].path.as_str(), files[0].mode),
            ("db", FileMode::DEFAULT)
        );
    }
}

#[test]
fn outer_shape_errors() {
    assert_eq!(parse_objects(""), Err(ObjectsError::NotSet));
    assert_eq!(parse_objects("  \n "), Err(ObjectsError::NotSet));
    assert!(matches!(
        parse_objects("array: [unclosed"),
        Err(ObjectsError::Yaml(_))
    ));
    for bad in ["- objectName: a", "just text", "items:\n  - x", "array: 5"] {
        assert_eq!(parse_objects(bad), Err(ObjectsError::NoArray), "{bad}");
    }
    assert_eq!(parse_objects("array: []"), Err(ObjectsError::Empty));
    assert!(ObjectsError::NoArray.to_string().contains("`array`"));
}

#[test]
fn one_volume_makes_at_most_max_files() {
    // Objects beyond the limit are refused before any of them is parsed.
    let many: Vec<String> = (0..=MAX_FILES)
        .map(|i| format!("objectName: s{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        parse_objects(&objects(&refs)),
        Err(ObjectsError::TooManyObjects(MAX_FILES + 1))
    );
    assert!(parse_objects(&objects(&refs[..MAX_FILES])).is_ok());
    // A history beyond it is a field error; histories adding up beyond it
    // are refused as a whole.
    assert!(
        error("objectName: a\nobjectType: secret\nobjectVersionHistory: 1000000000")
            .contains("\"1000000000\" is not valid: use a whole number, at most 10000")
    );
    let max = one(&format!(
        "objectName: a\nobjectType: secret\nobjectVersionHistory: {MAX_FILES}"
    ));
    assert_eq!(max.planned_files(FileMode::DEFAULT).len(), MAX_FILES);
    let err = parse_objects(&objects(&[
        "objectName: a\nobjectType: secret\nobjectVersionHistory: 6000",
        "objectName: b\nobjectType: secret\nobjectVersionHistory: 4000",
        "objectName: c\nobjectType: secret",
    ]))
    .unwrap_err();
    assert_eq!(err, ObjectsError::TooManyFiles(10_001));
    assert!(
        err.to_string().contains("lower objectVersionHistory"),
        "{err}"
    );
}

#[test]
fn entry_shape_errors_name_the_index() {
    // A mapping written directly under array instead of a string.
    let errs = match parse_objects("array:\n  - objectName: a\n    objectType: secret\n") {
        Err(ObjectsError::Objects(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(errs[0].index, 0);
    assert!(
        errs[0]
            .to_string()
            .starts_with("objects array[0]: must be a YAML string"),
        "{}",
        errs[0]
    );
    assert!(error("just-a-name").starts_with("objects array[0]: must be a YAML mapping"));
    assert!(error("objectName: [a").starts_with("objects array[0]: is not valid YAML"));
    assert!(
        error("objectName:\n  nested: map\nobjectType: secret").starts_with("objects array[0]: ")
    );
}

#[test]
fn each_field_error_names_index_field_and_what_is_allowed() {
    let cases = [
        (
            "objectType: secret",
            "objects array[0] objectName: is required",
        ),
        (
            "objectName: a_b\nobjectType: secret",
            "objects array[0] objectName: \"a_b\" is not a Key Vault object name: use 1 to 127 letters, digits and '-'",
        ),
        (
            "objectName: a",
            "objects array[0] objectType: is required: use secret, key or cert",
        ),
        (
            "objectName: a\nobjectType: certificate",
            "objects array[0] objectType: \"certificate\" is not valid: use secret, key or cert",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectAlias: /etc/passwd",
            "objects array[0] objectAlias: file path \"/etc/passwd\" must be relative",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectAlias: ../../x",
            "objects array[0] objectAlias: file path \"../../x\" must not contain a '..' element",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectAlias: ..data",
            "objects array[0] objectAlias: file path \"..data\" must not start with '..'",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectAlias: a//b",
            "objects array[0] objectAlias: file path \"a//b\" is not clean: write it as \"a/b\"",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersion: ../v",
            "objects array[0] objectVersion: \"../v\" is not a version id",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersionHistory: -1",
            "objects array[0] objectVersionHistory: \"-1\" is not valid: use a whole number",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectVersionHistory: two",
            "objects array[0] objectVersionHistory: \"two\" is not valid",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectFormat: der",
            "objects array[0] objectFormat: \"der\" is not valid: use pem or pfx",
        ),
        (
            "objectName: a\nobjectType: cert\nobjectFormat: pfx",
            "objects array[0] objectFormat: pfx is only supported with objectType: secret, not cert",
        ),
        (
            "objectName: a\nobjectType: secret\nobjectEncoding: utf8",
            "objects array[0] objectEncoding: \"utf8\" is not valid: use utf-8, base64 or hex",
        ),
        (
            "objectName: a\nobjectType: key\nobjectEncoding: base64",
            "objects array[0] objectEncoding: is only supported with objectType: secret, not key",
        ),
        (
            "objectName: a\nobjectType: secret\nfilePermission: 0800",
            "objects array[0] filePermission: \"0800\" is not valid: use an octal mode from 0000 to 0777",
        ),
        (
            "objectName: a\nobjectType: secret\nfilePermission: 04755",
            "objects array[0] filePermission: \"04755\" is not valid",
        ),
        (
            "objectName: a\nobjectType: secret\nfilePermission: rw-r--r--",
            "objects array[0] filePermission: \"rw-r--r--\" is not valid",
        ),
        (
            "objectName: a\nobjectType: secret\nfilePermission: \"+644\"",
            "objects array[0] filePermission: \"+644\" is not valid",
        ),
    ];
    for (item, want) in cases {
        let got = error(item);
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
    }
    let long = format!("objectName: {}\nobjectType: secret", "n".repeat(128));
    assert!(error(&long).contains("is not a Key Vault object name"));
}

#[test]
fn all_problems_of_all_objects_are_reported_together() {
    let errs = errors(&[
        "objectName: ok\nobjectType: secret",
        "objectName: bad_name\nobjectType: blob",
        "objectName: c\nobjectType: cert\nobjectEncoding: hex",
    ]);
    assert_eq!(
        errs,
        [
            "objects array[1] objectName: \"bad_name\" is not a Key Vault object name: use 1 to 127 letters, digits and '-'",
            "objects array[1] objectType: \"blob\" is not valid: use secret, key or cert",
            "objects array[2] objectEncoding: is only supported with objectType: secret, not cert",
        ]
    );
    let whole = parse_objects(&objects(&["objectName: x", "objectType: key"])).unwrap_err();
    assert_eq!(
        whole.to_string(),
        "objects array[0] objectType: is required: use secret, key or cert; objects array[1] objectName: is required: the name of the Key Vault object"
    );
}

#[test]
fn unknown_fields_are_ignored_with_a_warning() {
    let parsed = parse_objects(&objects(&[
        "objectName: a\nobjectType: secret\nobjectAllias: typo\nextra:\n  nested: 1",
    ]))
    .unwrap();
    assert_eq!(parsed.objects[0].alias, None);
    assert_eq!(parsed.warnings.len(), 2, "{:?}", parsed.warnings);
    assert!(parsed.warnings[0].starts_with("objects array[0]: unknown field \"extra\" ignored"));
    assert!(parsed.warnings[1].contains("\"objectAllias\""));
}

#[test]
fn plan_checks_clashes_between_objects() {
    let parsed = parse_objects(&objects(&[
        "objectName: a\nobjectType: secret\nobjectAlias: same",
        "objectName: b\nobjectType: key\nobjectAlias: same",
    ]))
    .unwrap();
    assert_eq!(
        plan_objects(&parsed.objects, FileMode::DEFAULT).unwrap_err(),
        PlanError::Duplicate {
            path: "same".into(),
            first: "secret/a".into(),
            second: "key/b".into()
        }
    );
    // The history directory `h` clashes with a file named `h`.
    let parsed = parse_objects(&objects(&[
        "objectName: a\nobjectType: secret\nobjectAlias: h\nobjectVersionHistory: 2",
        "objectName: h\nobjectType: cert",
    ]))
    .unwrap();
    assert!(matches!(
        plan_objects(&parsed.objects, FileMode::DEFAULT),
        Err(PlanError::FileIsDirectory { .. })
    ));
    // Same object name, different types and aliases: fine, in order.
    let parsed = parse_objects(&objects(&[
        "objectName: tls\nobjectType: secret\nobjectAlias: tls.pem\nfilePermission: \"0400\"",
        "objectName: tls\nobjectType: cert\nobjectAlias: tls.crt",
        "objectName: tls\nobjectType: key",
    ]))
    .unwrap();
    let plan = plan_objects(&parsed.objects, FileMode::new(0o640).unwrap()).unwrap();
    let got: Vec<(&str, &str, u32)> = plan
        .files()
        .iter()
        .map(|f| (f.path.as_str(), f.object_id.as_str(), f.mode.bits()))
        .collect();
    assert_eq!(
        got,
        [
            ("tls.pem", "secret/tls", 0o400),
            ("tls.crt", "cert/tls", 0o640),
            ("tls", "key/tls", 0o640),
        ]
    );
}

#[test]
fn optional_is_a_go_bool() {
    assert!(one("objectName: maybe\nobjectType: secret\noptional: true").optional);
    assert!(!one("objectName: maybe\nobjectType: secret").optional);
    let err = parse_objects(
        "array:\n  - |\n    objectName: maybe\n    objectType: secret\n    optional: perhaps\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("optional") && err.contains("perhaps"), "{err}");
}
