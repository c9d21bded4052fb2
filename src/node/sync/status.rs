//! SecretProviderClassPodStatus: what a pod mounted (upstream's shape, so
//! tools that read it keep working, plus `objectCount`).

use serde_json::{Value, json};

use crate::names::LABEL_NODE_NAME;
use crate::provider::{ObjectVersion, PodRef};
use crate::spc::GROUP;

/// `<pod>-<namespace>-<class>`, upstream's name.
pub fn name(pod: &PodRef, class: &str) -> String {
    format!("{}-{}-{}", pod.name, pod.namespace, class)
}

/// The object to apply: labelled with the node, owned by the pod (so it is
/// collected with it), objects sorted by id.
///
/// `objectCount` is ours, not upstream's: `kubectl get` prints it as the
/// Objects column (a printer column's JSONPath cannot count a list). Under
/// upstream's CRD the API server prunes it; the other fields are upstream's.
pub fn body(
    node: &str,
    pod: &PodRef,
    class: &str,
    target: &str,
    versions: &[ObjectVersion],
) -> Value {
    let mut objects: Vec<&ObjectVersion> = versions.iter().collect();
    objects.sort();
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "SecretProviderClassPodStatus",
        "metadata": {
            "name": name(pod, class),
            "namespace": pod.namespace,
            "labels": { LABEL_NODE_NAME: node },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "uid": pod.uid,
            }],
        },
        "status": {
            "podName": pod.name,
            "secretProviderClassName": class,
            "mounted": true,
            "targetPath": target,
            "objects": objects.iter().map(|o| json!({"id": o.id, "version": o.version})).collect::<Vec<_>>(),
            "objectCount": objects.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "uid-1".into(),
            service_account: "default".into(),
        }
    }

    fn version(id: &str, version: &str) -> ObjectVersion {
        ObjectVersion {
            id: id.into(),
            version: version.into(),
        }
    }

    #[test]
    fn object_count_matches_the_sorted_objects() {
        let versions = [version("secret/b", "2"), version("key/a", "1")];
        let body = body("node-1", &pod(), "kv", "/t", &versions);
        let status = &body["status"];
        assert_eq!(status["objectCount"], 2);
        assert_eq!(
            status["objects"],
            json!([{"id": "key/a", "version": "1"}, {"id": "secret/b", "version": "2"}])
        );
        assert_eq!(body["metadata"]["name"], "web-0-shop-kv");
    }

    #[test]
    fn a_volume_without_objects_counts_zero() {
        let body = body("node-1", &pod(), "kv", "/t", &[]);
        assert_eq!(body["status"]["objectCount"], 0);
        assert_eq!(body["status"]["objects"], json!([]));
    }
}
