"""Issue item 2: secretObjects on the real API server: a Secret from an entry
naming the file's alias and one naming the vault object; its data, type,
labels and ownerReferences (the pod's status object for a bare pod, the
ReplicaSet for a Deployment's pod); the pod's env var from it."""

import base64

from conftest import (
    SEED_VALUE, apply, azure_class, bare_pod, deployment, env_of, eventually, exec_in, kjson, owner_uids,
    pods_of, status_object_name, wait_running,
)

OBJECTS = [
    {"objectName": "sql-password", "objectAlias": "SECRET_1", "objectType": "secret"},
    {"objectName": "api-key", "objectType": "secret"},
]


def secret_objects(secret_name):
    return [{
        "secretName": secret_name,
        "type": "Opaque",
        "labels": {"team": "payments"},
        "data": [
            {"objectName": "SECRET_1", "key": "by-alias"},   # the file's alias
            {"objectName": "api-key", "key": "by-object"},    # the vault object's name (no alias)
        ],
    }]


def decoded(secret):
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_secret_objects_by_alias_and_by_object_name_bare_pod_owned_by_its_status_object(cleanup):
    api_key = "api-key-version-1"  # the seed's (e2e/k8s/cluster/emulator-seed.yaml)
    cleanup("secretproviderclass", "sync-bare")
    apply(azure_class("sync-bare", OBJECTS, secret_objects=secret_objects("synced-bare")))
    cleanup("pod", "sync-bare")
    env = [{"name": "BY_ALIAS", "valueFrom": {"secretKeyRef": {"name": "synced-bare", "key": "by-alias"}}}]
    apply(bare_pod("sync-bare", "sync-bare", env=env))
    pod = wait_running("sync-bare")

    secret = kjson("get", "secret", "synced-bare")
    assert secret["type"] == "Opaque"
    assert decoded(secret) == {"by-alias": SEED_VALUE, "by-object": api_key}
    labels = secret["metadata"]["labels"]
    assert labels["team"] == "payments"
    assert labels["secrets-store.csi.k8s.io/managed"] == "true"

    status = kjson("get", "secretproviderclasspodstatus", status_object_name("sync-bare", "default", "sync-bare"))
    owners = secret["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("SecretProviderClassPodStatus", status["metadata"]["name"], status["metadata"]["uid"])
    ]
    # The status object itself is owned by the pod, so the Secret goes with it.
    assert owner_uids(status) == {pod["metadata"]["uid"]}

    assert env_of("sync-bare", "BY_ALIAS") == SEED_VALUE
    # The file the vault-name entry came from is there under its own name.
    assert exec_in("sync-bare", "cat", "/mnt/secrets-store/api-key") == api_key


def test_secret_objects_of_a_deployment_are_owned_by_its_replicaset(cleanup):
    cleanup("secretproviderclass", "sync-deploy")
    apply(azure_class("sync-deploy", OBJECTS, secret_objects=secret_objects("synced-deploy")))
    cleanup("deployment", "sync-deploy")
    env = [{"name": "BY_OBJECT", "valueFrom": {"secretKeyRef": {"name": "synced-deploy", "key": "by-object"}}}]
    apply(deployment("sync-deploy", "sync-deploy", replicas=2, env=env))

    def two_running():
        pods = [p for p in pods_of("app=sync-deploy") if p["status"].get("phase") == "Running"]
        return pods if len(pods) == 2 else None

    pods = eventually("two sync-deploy pods Running", two_running, 120)
    replicasets = kjson("get", "replicasets", "-l", "app=sync-deploy")["items"]
    assert len(replicasets) == 1
    rs = replicasets[0]
    secret = kjson("get", "secret", "synced-deploy")
    assert [(o["kind"], o["name"], o["uid"]) for o in secret["metadata"]["ownerReferences"]] == [
        ("ReplicaSet", rs["metadata"]["name"], rs["metadata"]["uid"])
    ]
    assert decoded(secret)["by-alias"] == SEED_VALUE
    for p in pods:
        assert env_of(p["metadata"]["name"], "BY_OBJECT") == decoded(secret)["by-object"]
