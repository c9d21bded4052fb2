"""Tokens from azure-identity: client secret, client assertion (workload
identity), and managed identity through IMDS."""

import pytest
from azure.core.exceptions import ClientAuthenticationError

from conftest import APP_SP, NODE_MI, TENANT, WORKLOAD_APP


def test_client_secret_token_is_cached_across_requests(emulator, secret_client):
    client = secret_client("kv-demo")
    for _ in range(20):
        assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="entra.token", identity=APP_SP) == 1
    assert emulator.count(route="secrets.get", identity=APP_SP, status=200) == 20
    assert emulator.count(route="secrets.get", status=401) == 1


def test_wrong_client_secret_is_refused(emulator, secret_client):
    from azure.identity import ClientSecretCredential

    bad = ClientSecretCredential(TENANT, APP_SP, "wrong-secret", **emulator.credential_kwargs())
    with pytest.raises(ClientAuthenticationError) as e:
        secret_client("kv-demo", credential=bad).get_secret("sql-password")
    assert "AADSTS7000215" in str(e.value)


def test_client_assertion_credential_workload_identity(emulator, secret_client):
    from azure.identity import ClientAssertionCredential

    assertion = emulator.sa_token("default", "workload-sa")
    cred = ClientAssertionCredential(TENANT, WORKLOAD_APP, lambda: assertion, **emulator.credential_kwargs())
    assert secret_client("kv-demo", credential=cred).get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="entra.token", identity=WORKLOAD_APP, status=200) == 1
    assert emulator.count(route="secrets.get", identity=WORKLOAD_APP, status=200) == 1


def test_assertion_for_an_unfederated_service_account_is_refused(emulator, secret_client):
    from azure.identity import ClientAssertionCredential

    assertion = emulator.sa_token("default", "some-other-sa")
    cred = ClientAssertionCredential(TENANT, WORKLOAD_APP, lambda: assertion, **emulator.credential_kwargs())
    with pytest.raises(ClientAuthenticationError) as e:
        secret_client("kv-demo", credential=cred).get_secret("sql-password")
    assert "AADSTS70021" in str(e.value)
    assert emulator.count(route="secrets.get", status=200) == 0


def test_workload_identity_credential_reads_the_token_file(emulator, secret_client, tmp_path):
    from azure.identity import WorkloadIdentityCredential

    token_file = tmp_path / "token"
    token_file.write_text(emulator.sa_token("default", "workload-sa"))
    cred = WorkloadIdentityCredential(
        tenant_id=TENANT, client_id=WORKLOAD_APP, token_file_path=str(token_file), **emulator.credential_kwargs()
    )
    assert secret_client("kv-demo", credential=cred).get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"


def test_managed_identity_credential_through_imds(emulator, secret_client, monkeypatch):
    from azure.identity import ManagedIdentityCredential

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds)
    for var in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    cred = ManagedIdentityCredential(client_id=NODE_MI)
    client = secret_client("kv-demo", credential=cred)
    for _ in range(3):
        assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="imds.token", identity=NODE_MI, status=200) == 1
    assert emulator.count(route="secrets.get", identity=NODE_MI, status=200) == 3


def test_managed_identity_without_access_is_denied(emulator, secret_client, monkeypatch):
    from azure.core.exceptions import HttpResponseError
    from azure.identity import ManagedIdentityCredential

    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds)
    cred = ManagedIdentityCredential(client_id="2e4d6c8b-0a1f-4e3d-8c5b-7a9f1e3d5c7b")
    with pytest.raises(HttpResponseError) as e:
        secret_client("kv-demo", credential=cred).get_secret("sql-password")
    assert e.value.status_code == 403
    assert e.value.error.innererror == {"code": "AccessDenied"}
