"""HTTPS: the --ssl-* flags become uvicorn options that serve a real TLS connection."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from server.api.app import create_app
from server.api.settings import ApiSettings
from server.api.status import info_router
from server.api.tls import ssl_options
from server.errors import InvalidConfig
from tests.serving import serving
from tests.tls_certificates import self_signed

PASSWORD = "key-password"


async def test_serves_https_with_an_encrypted_key(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path, PASSWORD)
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
    cert_file, key_file = self_signed(tmp_path, PASSWORD)
    assert ssl_options(cert_file, key_file, cert_file, PASSWORD) == {
        "ssl_certfile": str(cert_file),
        "ssl_keyfile": str(key_file),
        "ssl_keyfile_password": PASSWORD,
        "ssl_ca_certs": str(cert_file),
    }


def test_wrong_password_fails_at_startup(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path, PASSWORD)
    with pytest.raises(InvalidConfig, match="ssl-password"):
        ssl_options(cert_file, key_file, password="wrong")


def test_missing_files_fail_at_startup(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig, match="no such file"):
        ssl_options(tmp_path / "nope.pem")
    with pytest.raises(InvalidConfig, match="need"):
        ssl_options(None, keyfile=tmp_path / "key.pem")
