"""Secrets through azure-keyvault-secrets: latest, by version, paging,
attributes, and the wire round trips the SDK makes (from the counters)."""

import re

import pytest

from conftest import APP_SP

VERSION = re.compile(r"^[0-9a-f]{32}$")


def test_latest_secret_with_default_sdk_settings(emulator, secret_client):
    client = secret_client("kv-demo")
    secret = client.get_secret("sql-password")
    assert secret.value == "Sql-Passw0rd-from-kv-demo"
    props = secret.properties
    assert props.name == "sql-password"
    assert VERSION.match(props.version), props.version
    assert props.vault_url == emulator.vault_url("kv-demo")
    assert props.id == f"{emulator.vault_url('kv-demo')}/secrets/sql-password/{props.version}"
    assert props.content_type == "text/plain"
    assert props.enabled is True
    assert props.created_on is not None and props.updated_on is not None
    assert props.recovery_level == "Recoverable+Purgeable"
    assert props.managed is None and props.key_id is None
    # One challenge, one token request (client secret), one authorised GET.
    assert emulator.count(route="secrets.get", vault="kv-demo", status=401, identity="") == 1
    assert emulator.count(route="entra.token", identity=APP_SP, status=200) == 1
    assert emulator.count(route="secrets.get", vault="kv-demo", identity=APP_SP, status=200) == 1


def test_secret_by_version_and_version_listing(secret_client):
    client = secret_client()
    versions = list(client.list_properties_of_secret_versions("rotating"))
    assert [v.version for v in versions] == [f"{i:032d}" for i in range(1, 6)]
    assert [v.enabled for v in versions] == [True, True, False, True, True]
    assert all(v.created_on is not None for v in versions)
    assert int(versions[0].created_on.timestamp()) == 1700000001
    second = client.get_secret("rotating", versions[1].version)
    assert second.value == "second-value"
    assert second.properties.version == f"{2:032d}"
    assert client.get_secret("rotating").value == "fifth-value"


def test_paging_with_max_page_size_follows_next_link(emulator, secret_client):
    client = secret_client()
    pages = [list(page) for page in client.list_properties_of_secret_versions("rotating", max_page_size=2).by_page()]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert emulator.count(route="secrets.versions", vault="kv-conformance", identity=APP_SP, status=200) == 3


def test_default_page_size_is_25(emulator, secret_client):
    for i in range(27):
        emulator.admin("POST", "/vaults/kv-conformance/secrets/bulk", {"value": f"v{i}"})
    client = secret_client()
    pages = [list(page) for page in client.list_properties_of_secret_versions("bulk").by_page()]
    assert [len(p) for p in pages] == [25, 2]


def test_new_version_written_by_admin_is_the_latest(emulator, secret_client):
    client = secret_client()
    first = emulator.admin("POST", "/vaults/kv-conformance/secrets/admin-written", {"value": "one"})["version"]
    assert client.get_secret("admin-written").value == "one"
    second = emulator.admin("POST", "/vaults/kv-conformance/secrets/admin-written", {"value": "two"})["version"]
    latest = client.get_secret("admin-written")
    assert latest.value == "two"
    assert latest.properties.version == second
    assert client.get_secret("admin-written", first).value == "one"
    emulator.admin("PATCH", f"/vaults/kv-conformance/secrets/admin-written/{second}", {"enabled": False})
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as e:
        client.get_secret("admin-written")
    assert e.value.error.innererror == {"code": "SecretDisabled"}


def test_expired_and_not_yet_valid_secrets_are_readable(secret_client):
    client = secret_client()
    expired = client.get_secret("expired")
    assert expired.value == "expired-but-readable"
    assert int(expired.properties.expires_on.timestamp()) == 1600000000
    assert int(expired.properties.not_before.timestamp()) == 1500000000
    assert client.get_secret("not-yet-valid").value == "future-but-readable"


def test_tags_and_content_type(secret_client):
    s = secret_client().get_secret("tagged")
    assert s.properties.tags == {"env": "test", "owner": "secretfs"}
    assert s.properties.content_type == "application/json"


@pytest.mark.parametrize("api_version", ["7.4", "7.5", "7.6", "2025-07-01"])
def test_older_api_versions_are_served(emulator, app_credential, api_version):
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(
        emulator.vault_url("kv-demo"), app_credential, api_version=api_version, **emulator.client_kwargs()
    )
    assert client.get_secret("sql-password").value == "Sql-Passw0rd-from-kv-demo"


def test_list_properties_of_secrets(emulator, secret_client):
    seeded = {"disabled-latest", "expired", "not-yet-valid", "pem-cert", "pfx-cert", "rotating", "tagged"}
    props = list(secret_client().list_properties_of_secrets())
    names = [p.name for p in props]
    assert seeded <= set(names), names
    assert len(names) == len(set(names))
    assert all(p.version is None for p in props)
    assert {p.name for p in props if p.managed} == {"pem-cert", "pfx-cert"}
    pages = [list(p) for p in secret_client().list_properties_of_secrets(max_page_size=3).by_page()]
    assert all(len(p) == 3 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 3
    assert sum(len(p) for p in pages) == len(names)
    assert emulator.count(route="secrets.list", status=200) == 1 + len(pages)
