//! Bad input through the binary: each a clear error, and nothing mounted.

use secretfs_e2e::kubelet::{KubeletError, PublishExtras};
use tonic::Code;

use super::harness::*;

/// The seed's node identity (user-assigned managed identity).
const NODE_IDENTITY: &[(&str, &str)] = &[
    ("useVMManagedIdentity", "true"),
    (
        "userAssignedIdentityID",
        "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21",
    ),
];

/// The names in a volume's root directory.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn object(fields: &str) -> String {
    let body = fields
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!("array:\n  - |\n{body}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_is_a_clear_error_and_mounts_nothing() {
    if !fuse_available() {
        return;
    }
    let secret = |alias: &str| {
        object(&format!(
            "objectName: sql-password\nobjectType: secret\nobjectAlias: {alias:?}"
        ))
    };
    let classes = [
        ("dotdot", secret("../escape")),
        ("absolute", secret("/etc/passwd")),
        ("empty-component", secret("dir//SECRET_1")),
        ("dot", secret(".")),
        (
            "duplicate",
            format!(
                "{}{}",
                secret("same"),
                secret("same").trim_start_matches("array:\n")
            ),
        ),
        (
            "bad-type",
            object("objectName: sql-password\nobjectType: password"),
        ),
        (
            "bad-encoding",
            object("objectName: sql-password\nobjectType: secret\nobjectEncoding: rot13"),
        ),
        (
            "bad-format",
            object("objectName: sql-password\nobjectType: secret\nobjectFormat: der"),
        ),
        ("malformed", "array: [unclosed".to_owned()),
    ];
    let mut manifests: Vec<String> = classes
        .iter()
        .map(|(name, objects)| azure_class(name, &[], objects))
        .collect();
    manifests.push(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: other-provider, namespace: default}\nspec: {provider: vault, parameters: {a: b}}\n".into(),
    );
    let env = Env::start(&manifests).await;

    let expectations: Vec<(&str, Code, &[&str])> = vec![
        ("dotdot", Code::InvalidArgument, &["../escape"]),
        ("absolute", Code::InvalidArgument, &["/etc/passwd"]),
        ("empty-component", Code::InvalidArgument, &["dir//SECRET_1"]),
        ("dot", Code::InvalidArgument, &["objectAlias", "\".\""]),
        ("duplicate", Code::InvalidArgument, &["same"]),
        (
            "bad-type",
            Code::InvalidArgument,
            &["objectType", "password"],
        ),
        (
            "bad-encoding",
            Code::InvalidArgument,
            &["objectEncoding", "rot13"],
        ),
        (
            "bad-format",
            Code::InvalidArgument,
            &["objectFormat", "der"],
        ),
        ("malformed", Code::InvalidArgument, &["objects"]),
        ("other-provider", Code::InvalidArgument, &["\"vault\""]),
        (
            "missing",
            Code::NotFound,
            &["SecretProviderClass default/missing not found"],
        ),
    ];
    for (i, (class, code, mentions)) in expectations.into_iter().enumerate() {
        let pod = pod(
            &format!("bbbbbbbb-0000-4000-8000-{i:012}"),
            Some(class),
            None,
            None,
        );
        let target = env.kubelet.target_path(&pod, VOLUME);
        let err = env
            .kubelet
            .publish(&pod, VOLUME, &PublishExtras::default())
            .await
            .unwrap_err();
        let KubeletError::Driver { code: got, message } = err else {
            panic!("{class}: {err}")
        };
        assert_eq!(got, code, "{class}: {message}");
        for mention in mentions {
            assert!(
                message.contains(mention),
                "{class}: {mention:?} not in {message:?}"
            );
        }
        assert!(!is_mounted(&target), "{class}: nothing mounted");
    }
}

/// An empty `objectAlias` is no alias, as upstream: the file is named after
/// the object (a manifest written for upstream keeps working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_alias_names_the_file_after_the_object() {
    if !fuse_available() {
        return;
    }
    let class = azure_class(
        "empty-alias",
        NODE_IDENTITY,
        &object("objectName: sql-password\nobjectType: secret\nobjectAlias: \"\""),
    );
    let env = Env::start(&[class]).await;
    let pod = pod(
        "cccccccc-0000-4000-8000-000000000001",
        Some("empty-alias"),
        None,
        None,
    );
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let names = file_names(&target);
    assert_eq!(names, ["sql-password"]);
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
}

/// `optional: true` (upstream #567): a missing object leaves its file out
/// and the pod starts; the same object required fails the publish, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_optional_object_is_left_out_and_a_required_one_fails() {
    if !fuse_available() {
        return;
    }
    let present = "objectName: sql-password\nobjectType: secret\nobjectAlias: SECRET_1";
    let missing = "objectName: not-in-vault\nobjectType: secret\nobjectAlias: MISSING";
    let both = |extra: &str| {
        format!(
            "{}{}",
            object(present),
            object(&format!("{missing}{extra}")).trim_start_matches("array:\n")
        )
    };
    let env = Env::start(&[
        azure_class("optional", NODE_IDENTITY, &both("\noptional: true")),
        azure_class("required", NODE_IDENTITY, &both("")),
    ])
    .await;
    let pod_a = pod(
        "cccccccc-0000-4000-8000-000000000002",
        Some("optional"),
        None,
        None,
    );
    let target = env
        .kubelet
        .publish(&pod_a, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let names = file_names(&target);
    assert_eq!(names, ["SECRET_1"]);
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
    env.kubelet.unpublish(&pod_a, VOLUME).await.unwrap();

    let pod_b = pod(
        "cccccccc-0000-4000-8000-000000000003",
        Some("required"),
        None,
        None,
    );
    let target = env.kubelet.target_path(&pod_b, VOLUME);
    let err = env
        .kubelet
        .publish(&pod_b, VOLUME, &PublishExtras::default())
        .await
        .unwrap_err();
    let KubeletError::Driver { code, message } = err else {
        panic!("{err}")
    };
    assert_eq!(code, Code::NotFound, "{message}");
    assert!(message.contains("not-in-vault"), "{message}");
    assert!(!is_mounted(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_kubelet_would_not_send_are_refused() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[]).await;
    let good = pod("cccccccc-0000-4000-8000-000000000001", None, None, None);
    let base = env
        .kubelet
        .publish_request(&good, VOLUME, &PublishExtras::default())
        .unwrap();
    type Break = fn(&mut secretfs_csi::proto::csi::NodePublishVolumeRequest);
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "another pod's target",
            |r| {
                r.target_path = r.target_path.replace(
                    "cccccccc-0000-4000-8000-000000000001",
                    "dddddddd-0000-4000-8000-000000000001",
                )
            },
            "is not a volume of pod",
        ),
        (
            "no pod uid",
            |r| {
                r.volume_context.remove("csi.storage.k8s.io/pod.uid");
            },
            "pod.uid",
        ),
        (
            "no pod name",
            |r| {
                r.volume_context.remove("csi.storage.k8s.io/pod.name");
            },
            "pod.name",
        ),
        ("read-write", |r| r.readonly = false, "Readonly is not true"),
        (
            "keyvaultName attribute",
            |r| {
                r.volume_context
                    .insert("keyvaultName".into(), "kv-evil".into());
            },
            "keyvaultName",
        ),
        (
            "clientID attribute",
            |r| {
                r.volume_context.insert(
                    "clientID".into(),
                    "00000000-0000-0000-0000-000000000000".into(),
                );
            },
            "clientID",
        ),
    ];
    for (what, break_it, mention) in cases {
        let mut request = base.clone();
        break_it(&mut request);
        let target = std::path::PathBuf::from(&request.target_path);
        let err = env.kubelet.send_publish(request).await.unwrap_err();
        let KubeletError::Driver { code, message } = err else {
            panic!("{what}: {err}")
        };
        assert_eq!(code, Code::InvalidArgument, "{what}: {message}");
        assert!(
            message.contains(mention),
            "{what}: {mention:?} not in {message:?}"
        );
        assert!(!is_mounted(&target), "{what}: nothing mounted");
    }
}
