"""Issue item 6: workload identity end to end. Kubelet mints the pod's
service-account token for the chart's tokenRequests audience
(api://AzureADTokenExchange), signed by this API server's key; the Key
Vault emulator's Entra ID trusts this API server's issuer (its
/openid/v1/jwks, given at start) for default/workload-sa as workload-app,
so the exchange succeeds and the object is fetched. The same token offered
for an app whose federation names another issuer is refused."""

import time

from conftest import (
    TENANT, apply, bare_pod, counter, eventually, events_of, exec_in, kubectl, pod, wait_running,
)
import yaml

WORKLOAD_APP = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c"
OUTSIDER_APP = "e1d2c3b4-a596-4877-8899-aabbccddeeff"


def wi_class(name, client_id):
    objects = yaml.safe_dump({"array": [yaml.safe_dump({"objectName": "wi-secret", "objectType": "secret"})]})
    return {"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"provider": "azure", "parameters": {
                "clientID": client_id, "keyvaultName": "kv-wi", "tenantId": TENANT, "objects": objects}}}


def test_kubelet_minted_token_is_exchanged_and_the_object_fetched(cleanup):
    kubectl("create", "serviceaccount", "workload-sa", "-n", "default", check=False)
    cleanup("secretproviderclass", "wi")
    apply(wi_class("wi", WORKLOAD_APP))
    accepted_before = counter(route="entra.token", identity=WORKLOAD_APP, status="200")
    cleanup("pod", "wi")
    apply(bare_pod("wi", "wi", service_account="workload-sa"))
    wait_running("wi")
    assert exec_in("wi", "cat", "/mnt/secrets-store/wi-secret") == "only-for-workload-sa"
    assert counter(route="entra.token", identity=WORKLOAD_APP, status="200") > accepted_before
    assert counter(route="secrets.get", vault="kv-wi", object="wi-secret", identity=WORKLOAD_APP, status="200") >= 1


def test_a_token_of_this_cluster_is_refused_where_another_issuer_is_trusted(cleanup):
    kubectl("create", "serviceaccount", "workload-sa", "-n", "default", check=False)
    cleanup("secretproviderclass", "wi-outsider")
    apply(wi_class("wi-outsider", OUTSIDER_APP))
    cleanup("pod", "wi-outsider")
    apply(bare_pod("wi-outsider", "wi-outsider", service_account="workload-sa"))

    def refused():
        return counter(route="entra.token", identity=OUTSIDER_APP, status="400") >= 1

    eventually("Entra ID refused the exchange for outsider-app", refused, 60)
    mount_failed = eventually("a FailedMount event on the pod", lambda: [
        e for e in events_of("wi-outsider") if e["reason"] == "FailedMount"], 60)
    time.sleep(2)
    assert pod("wi-outsider")["status"]["phase"] == "Pending"
    assert counter(route="entra.token", identity=OUTSIDER_APP, status="200") == 0
    assert counter(route="secrets.get", vault="kv-wi", identity=OUTSIDER_APP) == 0
    # The event tells the user what to fix without carrying the token.
    message = mount_failed[0]["message"]
    assert "eyJ" not in message, message
