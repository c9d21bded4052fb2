//! The provider protocol's wire contract (`csi/proto/provider.proto`):
//! service names and field numbers, checked against hand-encoded bytes.

use prost::Message;
use secretfs_csi::proto::health;
use secretfs_csi::proto::provider as pb;

#[test]
fn service_names_match_upstream() {
    assert_eq!(
        pb::csi_driver_provider_server::SERVICE_NAME,
        "v1alpha1.CSIDriverProvider"
    );
    assert_eq!(health::health_server::SERVICE_NAME, "grpc.health.v1.Health");
}

#[test]
fn mount_request_fields_have_upstreams_numbers() {
    let request = pb::MountRequest {
        attributes: "a".into(),
        secrets: "b".into(),
        target_path: "c".into(),
        permission: "420".into(),
        current_object_version: vec![pb::ObjectVersion {
            id: "i".into(),
            version: "v".into(),
        }],
    };
    let expected: &[u8] = &[
        0x0a, 1, b'a', // 1: attributes
        0x12, 1, b'b', // 2: secrets
        0x1a, 1, b'c', // 3: target_path
        0x22, 3, b'4', b'2', b'0', // 4: permission
        0x2a, 6, 0x0a, 1, b'i', 0x12, 1,
        b'v', // 5: current_object_version {1: id, 2: version}
    ];
    assert_eq!(request.encode_to_vec(), expected);
}

#[test]
fn mount_response_fields_have_upstreams_numbers() {
    let response = pb::MountResponse {
        object_version: vec![pb::ObjectVersion {
            id: "i".into(),
            version: "v".into(),
        }],
        error: Some(pb::Error { code: "e".into() }),
        files: vec![pb::File {
            path: "p".into(),
            mode: 420,
            contents: b"x".to_vec(),
        }],
    };
    let expected: &[u8] = &[
        0x0a, 6, 0x0a, 1, b'i', 0x12, 1, b'v', // 1: object_version
        0x12, 3, 0x0a, 1, b'e', // 2: error {1: code}
        0x1a, 9, 0x0a, 1, b'p', 0x10, 0xa4, 0x03, 0x1a, 1,
        b'x', // 3: files {1: path, 2: mode, 3: contents}
    ];
    assert_eq!(response.encode_to_vec(), expected);
}

#[test]
fn version_fields_have_upstreams_numbers() {
    let response = pb::VersionResponse {
        version: "v".into(),
        runtime_name: "n".into(),
        runtime_version: "r".into(),
    };
    assert_eq!(
        response.encode_to_vec(),
        [0x0a, 1, b'v', 0x12, 1, b'n', 0x1a, 1, b'r']
    );
    assert_eq!(
        pb::VersionRequest {
            version: "v1alpha1".into()
        }
        .encode_to_vec(),
        [&[0x0a, 8][..], b"v1alpha1"].concat()
    );
}
