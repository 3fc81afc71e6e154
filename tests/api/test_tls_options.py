"""HTTPS: the --ssl-* flags become uvicorn options that serve a real TLS connection."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.api.app import create_app
from server.api.settings import ApiSettings
from server.api.status import info_router
from server.api.tls import ssl_options
from server.errors import InvalidConfig
from tests.serving import serving

PASSWORD = "key-password"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    return cert_file, key_file


async def test_serves_https_with_an_encrypted_key(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    options = ssl_options(cert_file, key_file, ca_file=cert_file, password=PASSWORD)
    app = create_app(ApiSettings(), [info_router()])
    async with serving(app, **options) as url:
        trust = ssl.create_default_context(cafile=str(cert_file))
        async with httpx.AsyncClient(verify=trust) as client:
            response = await client.get(url + "/")
        assert url.startswith("https://")
        assert response.text == "Hello from Rasa: 3.6.21"


def test_no_certificate_means_plain_http() -> None:
    assert ssl_options(None) == {}


def test_options_are_uvicorns(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    assert ssl_options(cert_file, key_file, cert_file, PASSWORD) == {
        "ssl_certfile": str(cert_file),
        "ssl_keyfile": str(key_file),
        "ssl_keyfile_password": PASSWORD,
        "ssl_ca_certs": str(cert_file),
    }


def test_wrong_password_fails_at_startup(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    with pytest.raises(InvalidConfig, match="ssl-password"):
        ssl_options(cert_file, key_file, password="wrong")


def test_missing_files_fail_at_startup(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="no such file"):
        ssl_options(tmp_path / "nope.pem")
    with pytest.raises(InvalidConfig, match="need"):
        ssl_options(None, keyfile=tmp_path / "key.pem")
