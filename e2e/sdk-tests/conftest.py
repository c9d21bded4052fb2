"""Fixtures: where the emulator is, a resolver shim for the Azure host names,
credentials, and an admin client for faults and counters.

The emulator runs on 127.0.0.1:443 (CI is root), so the SDK talks to the real
host names (https://kv-demo.vault.azure.net, https://login.microsoftonline.com)
with its default settings, including verify_challenge_resource=True. Only the
name resolution is redirected, inside this process. The only non-default
setting is the trusted CA (connection_verify=<emulator CA>), a documented
azure-core option. If the emulator is not on 443, the SDK's challenge check
would (correctly) fail, so verify_challenge_resource=False is used instead.
"""

import json
import os
import socket

import pytest
import requests

TENANT = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e"
NODE_MI = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21"
APP_SP = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f"
APP_SP_SECRET = "emulator-test-client-secret"
WORKLOAD_APP = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c"
OUTSIDER = "e1d2c3b4-a596-4877-8899-aabbccddeeff"
OUTSIDER_SECRET = "outsider-test-client-secret"

REDIRECTED_SUFFIXES = (
    ".vault.azure.net",
    ".vault.azure.cn",
    ".vault.usgovcloudapi.net",
)
REDIRECTED_HOSTS = ("login.microsoftonline.com", "login.windows.net", "login.microsoft.com")


class Emulator:
    def __init__(self, info):
        self.info = info
        host, port = info["https"].rsplit(":", 1)
        self.port = int(port)
        self.ca_path = info["caPath"]
        self.imds = info["imds"]
        self.admin_url = info["admin"]
        self.default_port = self.port == 443
        self._admin = requests.Session()
        self._admin.trust_env = False

    def _netloc(self, host):
        return host if self.default_port else f"{host}:{self.port}"

    def vault_url(self, vault="kv-demo"):
        return f"https://{self._netloc(vault + '.vault.azure.net')}"

    @property
    def authority(self):
        return self._netloc("login.microsoftonline.com")

    def client_kwargs(self):
        kw = {"connection_verify": self.ca_path}
        if not self.default_port:
            kw["verify_challenge_resource"] = False
        return kw

    def credential_kwargs(self):
        kw = {"connection_verify": self.ca_path}
        if not self.default_port:
            kw["authority"] = f"https://{self.authority}"
            kw["disable_instance_discovery"] = True
        return kw

    # Admin API
    def admin(self, method, path, body=None):
        r = self._admin.request(method, self.admin_url + path, json=body, timeout=30)
        assert r.status_code < 300, f"admin {method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def count(self, **filters):
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        return self.admin("GET", f"/counters?{query}")["count"]

    def fault(self, **spec):
        return self.admin("POST", "/faults", spec)["id"]

    def sa_token(self, namespace="default", service_account="workload-sa", **extra):
        body = {"namespace": namespace, "serviceAccount": service_account, **extra}
        return self.admin("POST", "/service-account-token", body)["token"]


@pytest.fixture(scope="session")
def emulator():
    path = os.environ.get("KV_EMULATOR_INFO")
    if not path:
        pytest.fail("KV_EMULATOR_INFO is not set: run the suite with e2e/sdk-tests/run.sh")
    with open(path) as f:
        info = json.loads(f.readline())
    return Emulator(info)


@pytest.fixture(scope="session", autouse=True)
def resolver_shim():
    """Resolve the Azure host names to 127.0.0.1 inside this process only."""
    real = socket.getaddrinfo

    def shim(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and (host.endswith(REDIRECTED_SUFFIXES) or host in REDIRECTED_HOSTS):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = shim
    yield
    socket.getaddrinfo = real


# Isolation of the SDKs' challenge cache.
#
# Each azure-keyvault-* package keeps the 401 challenge it saw in a
# module-level, process-wide cache keyed by the vault's host. A fresh client
# per test does not reset it (every client of the package shares it), and the
# vault names are fixed by the seed, so per-test vault names are not available
# either. Instead of clearing the cache through the packages' private
# `_shared.http_challenge_cache` modules, every test runs in its own forked
# process (`--forked` from pytest-forked, set in pytest.ini): the pytest main
# process never makes an SDK call, so each test starts as an application's
# first request does, with an empty cache; the tests that count the challenge
# round trip (status=401) check that.
_MAIN_PID = os.getpid()


@pytest.fixture(autouse=True)
def own_process():
    """Refuse to run a test in pytest's main process: without --forked, the
    challenge cached by one test would silently hide the next test's
    challenge round trip."""
    if os.getpid() == _MAIN_PID:
        pytest.fail(
            "this suite must run every test in its own process: keep --forked in "
            "e2e/sdk-tests/pytest.ini and pytest-forked in requirements.txt",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def clean_emulator(own_process, emulator):
    """Every test starts with no faults and zeroed counters."""
    emulator.admin("DELETE", "/faults")
    emulator.admin("DELETE", "/counters")
    yield
    emulator.admin("DELETE", "/faults")


@pytest.fixture
def app_credential(emulator):
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(TENANT, APP_SP, APP_SP_SECRET, **emulator.credential_kwargs())


@pytest.fixture
def secret_client(emulator, app_credential):
    from azure.keyvault.secrets import SecretClient

    def make(vault="kv-conformance", credential=None, **kw):
        return SecretClient(
            emulator.vault_url(vault), credential or app_credential, **emulator.client_kwargs(), **kw
        )

    return make
