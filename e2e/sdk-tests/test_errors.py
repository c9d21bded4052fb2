"""Error envelopes as the SDK surfaces them, and retries on 429."""

import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from conftest import APP_SP, OUTSIDER, OUTSIDER_SECRET, TENANT


def test_missing_secret_is_resource_not_found_with_code(secret_client):
    with pytest.raises(ResourceNotFoundError) as e:
        secret_client().get_secret("does-not-exist")
    assert e.value.status_code == 404
    assert e.value.error.code == "SecretNotFound"
    assert e.value.error.message.startswith("A secret with (name/id) does-not-exist was not found in this key vault.")


def test_missing_version_is_404(secret_client):
    with pytest.raises(ResourceNotFoundError) as e:
        secret_client().get_secret("rotating", "0123456789abcdef0123456789abcdef")
    assert e.value.error.code == "SecretNotFound"
    assert "rotating/0123456789abcdef0123456789abcdef" in e.value.error.message


def test_disabled_secret_is_403_secret_disabled(secret_client):
    with pytest.raises(HttpResponseError) as e:
        secret_client().get_secret("disabled-latest")
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"
    assert e.value.error.message == "Operation get is not allowed on a disabled secret."
    assert e.value.error.innererror == {"code": "SecretDisabled"}


def test_access_policy_denial_is_403_access_denied(emulator, secret_client):
    from azure.identity import ClientSecretCredential

    outsider = ClientSecretCredential(TENANT, OUTSIDER, OUTSIDER_SECRET, **emulator.credential_kwargs())
    with pytest.raises(HttpResponseError) as e:
        secret_client("kv-demo", credential=outsider).get_secret("sql-password")
    assert e.value.status_code == 403
    assert e.value.error.code == "Forbidden"
    assert e.value.error.innererror == {"code": "AccessDenied"}
    assert f"appid={OUTSIDER};" in e.value.error.message
    assert "does not have secrets get permission on key vault 'kv-demo;location=eastus'" in e.value.error.message


def test_rbac_denial_is_forbidden_by_rbac(secret_client):
    with pytest.raises(HttpResponseError) as e:
        secret_client("kv-rbac").get_secret("rbac-secret")
    assert e.value.status_code == 403
    assert e.value.error.innererror == {"code": "ForbiddenByRbac"}
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" in e.value.error.message


def test_429_with_retry_after_is_retried_after_the_delay(emulator, secret_client):
    client = secret_client("kv-demo")
    client.get_secret("sql-password")  # challenge and token out of the way
    emulator.admin("DELETE", "/counters")
    emulator.fault(kind="throttle", retryAfter=1, count=2, vault="kv-demo", route="secrets.get")
    start = time.monotonic()
    secret = client.get_secret("sql-password")
    elapsed = time.monotonic() - start
    assert secret.value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="secrets.get", identity=APP_SP, status=429) == 2
    assert emulator.count(route="secrets.get", identity=APP_SP, status=200) == 1
    assert elapsed >= 2.0, f"Retry-After: 1 twice must delay at least 2 s, took {elapsed:.2f}s"


def test_429_without_retry_after_is_retried(emulator, secret_client):
    client = secret_client("kv-demo")
    emulator.fault(kind="throttle", count=1, vault="kv-demo", route="secrets.get")
    assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="secrets.get", status=429) == 1
    assert emulator.count(route="secrets.get", status=200) == 1


def test_5xx_is_retried(emulator, secret_client):
    client = secret_client("kv-demo")
    emulator.fault(kind="serverError", status=503, count=1, route="secrets.get")
    assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="secrets.get", status=503) == 1


def test_connection_reset_is_retried(emulator, secret_client):
    client = secret_client("kv-demo")
    emulator.fault(kind="connectionReset", count=1, route="secrets.get")
    assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    assert emulator.count(route="secrets.get", status=0) == 1


def test_cae_claims_challenge_gets_a_fresh_token(emulator, secret_client):
    client = secret_client("kv-demo")
    client.get_secret("sql-password")
    emulator.fault(kind="claimsChallenge", count=1, vault="kv-demo", route="secrets.get")
    assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"
    # The claims challenge made the credential ask Entra again.
    assert emulator.count(route="entra.token", identity=APP_SP, status=200) == 2
    assert emulator.count(route="secrets.get", identity=APP_SP, status=401) == 1
    assert emulator.count(route="secrets.get", identity=APP_SP, status=200) == 2
