//! SecretProviderClassPodStatus: what a pod mounted (upstream's shape, so
//! tools that read it keep working).

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
        },
    })
}
