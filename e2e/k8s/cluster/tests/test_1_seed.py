"""Issue item 1: the seed SecretProviderClass (v1alpha1) and pod, applied byte
for byte from tests/fixtures/seed/, on the real cluster with the chart."""

from conftest import SEED, SEED_VALUE, delete, env_of, exec_in, kjson, kubectl, wait_running


def test_seed_class_and_pod_unchanged_show_the_vault_value_in_the_pod():
    spc_file = SEED / "secretproviderclass.yaml"
    pod_file = SEED / "pod.yaml"
    try:
        kubectl("apply", "-f", str(spc_file))
        kubectl("apply", "-f", str(pod_file))
        pod = wait_running("nginx-secrets-store-inline")
        # The manifest's `image: nginx` went unchanged through the registry mirror.
        assert pod["spec"]["containers"][0]["image"] == "nginx"

        listing = exec_in("nginx-secrets-store-inline", "ls", "-l", "/mnt/secrets-store")
        lines = [line for line in listing.splitlines() if not line.startswith("total")]
        assert len(lines) == 1, listing
        assert lines[0].split()[-1] == "SECRET_1", listing
        assert lines[0].startswith("-rw-r--r--"), listing  # no fsGroup: 0644, root
        assert exec_in("nginx-secrets-store-inline", "cat", "/mnt/secrets-store/SECRET_1") == SEED_VALUE

        # The seed's secretObjects: Secret sqlserver, and the pod's env from it.
        secret = kjson("get", "secret", "sqlserver")
        assert secret["type"] == "Opaque"
        assert env_of("nginx-secrets-store-inline", "dbpassword") == SEED_VALUE
    finally:
        delete("pod", "nginx-secrets-store-inline")
        kubectl("delete", "-f", str(spc_file), "--ignore-not-found")
