"""Keys through azure-keyvault-keys and certificates through
azure-keyvault-certificates, with the backing secret in both formats."""

import base64
import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key, pkcs12

VERSION = re.compile(r"^[0-9a-f]{32}$")


def key_client(emulator, credential):
    from azure.keyvault.keys import KeyClient

    return KeyClient(emulator.vault_url("kv-conformance"), credential, **emulator.client_kwargs())


def certificate_client(emulator, credential):
    from azure.keyvault.certificates import CertificateClient

    return CertificateClient(emulator.vault_url("kv-conformance"), credential, **emulator.client_kwargs())


def test_rsa_key_public_parts(emulator, app_credential):
    client = key_client(emulator, app_credential)
    key = client.get_key("rsa-key")
    assert key.key_type == "RSA"
    assert VERSION.match(key.properties.version)
    assert len(key.key.n) == 384  # latest version is RSA-3072
    assert key.key.e == b"\x01\x00\x01"
    assert key.key.d is None and key.key.p is None and key.key.q is None
    assert set(key.key_operations) == {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
    versions = list(client.list_properties_of_key_versions("rsa-key"))
    assert len(versions) == 2
    first = client.get_key("rsa-key", versions[0].version)
    assert len(first.key.n) == 256
    # The n/e really form an RSA public key.
    rsa.RSAPublicNumbers(int.from_bytes(first.key.e, "big"), int.from_bytes(first.key.n, "big")).public_key()
    # The keys client makes its own challenge round trip.
    assert emulator.count(route="keys.get", status=401) == 1


def test_ec_key_public_parts(emulator, app_credential):
    client = key_client(emulator, app_credential)
    for name, crv, size, curve in [("ec-key", "P-256", 32, ec.SECP256R1()), ("ec-384-key", "P-384", 48, ec.SECP384R1())]:
        key = client.get_key(name)
        assert key.key_type == "EC"
        assert key.key.crv == crv
        assert len(key.key.x) == size and len(key.key.y) == size
        assert key.key.d is None
        ec.EllipticCurvePublicNumbers(int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big"), curve).public_key()


def test_pkcs12_certificate_and_backing_secret(emulator, app_credential, secret_client):
    from azure.keyvault.certificates import CertificateContentType

    cert = certificate_client(emulator, app_credential).get_certificate("pfx-cert")
    version = cert.properties.version
    assert VERSION.match(version)
    assert cert.properties.x509_thumbprint == hashlib.sha1(cert.cer).digest()
    parsed = x509.load_der_x509_certificate(bytes(cert.cer))
    assert parsed.subject.rfc4514_string() == "CN=pfx.example.test"
    assert cert.policy.content_type == CertificateContentType.pkcs12
    assert cert.policy.key_type == "RSA" and cert.policy.key_size == 2048
    assert cert.policy.issuer_name == "Self"
    assert cert.secret_id.endswith(f"/secrets/pfx-cert/{version}")
    assert cert.key_id.endswith(f"/keys/pfx-cert/{version}")

    secret = secret_client().get_secret("pfx-cert", version)
    assert secret.properties.managed is True
    assert secret.properties.key_id == cert.key_id
    assert secret.properties.content_type == "application/x-pkcs12"
    key, leaf, extra = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert leaf.public_bytes(Encoding.DER) == bytes(cert.cer)
    assert extra == []
    assert key.public_key().public_numbers() == parsed.public_key().public_numbers()


def test_pem_certificate_and_backing_secret(emulator, app_credential, secret_client):
    from azure.keyvault.certificates import CertificateContentType

    cert = certificate_client(emulator, app_credential).get_certificate("pem-cert")
    assert cert.policy.content_type == CertificateContentType.pem
    assert cert.policy.key_type == "EC" and cert.policy.key_curve_name == "P-256"
    secret = secret_client().get_secret("pem-cert")
    assert secret.properties.version == cert.properties.version
    assert secret.properties.content_type == "application/x-pem-file"
    assert secret.properties.managed is True
    pem = secret.value.encode()
    key = load_pem_private_key(pem, password=None)
    leaf = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----"):])
    assert leaf == x509.load_der_x509_certificate(bytes(cert.cer))
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()


def test_certificate_versions_and_renewal(emulator, app_credential):
    client = certificate_client(emulator, app_credential)
    before = client.get_certificate("pfx-cert")
    renewed = emulator.admin("POST", "/vaults/kv-conformance/certificates/pfx-cert")["version"]
    after = client.get_certificate("pfx-cert")
    assert after.properties.version == renewed != before.properties.version
    versions = [v.version for v in client.list_properties_of_certificate_versions("pfx-cert")]
    assert versions == [before.properties.version, renewed]
    assert client.get_certificate_version("pfx-cert", before.properties.version).cer == before.cer


def test_certificate_policy_and_a_refused_key_operation(emulator, app_credential):
    """get_certificate_policy is served; a key operation (sign) is answered
    as Key Vault answers an identity without the permission: 403."""
    import pytest
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

    policy = certificate_client(emulator, app_credential).get_certificate_policy("pfx-cert")
    assert policy.key_type == "RSA" and policy.key_size == 2048
    assert policy.issuer_name == "Self"
    key = key_client(emulator, app_credential).get_key("rsa-key")
    crypto = CryptographyClient(key, app_credential, **emulator.client_kwargs())
    with pytest.raises(HttpResponseError) as refused:
        crypto.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"signed").digest())
    assert refused.value.status_code == 403
    assert "does not have keys sign permission" in str(refused.value)
