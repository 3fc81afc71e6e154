"""HTTPS: the --ssl-* flags become uvicorn options that serve a real TLS connection."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

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


def _mistakes(tmp_path: Path) -> dict[str, tuple[tuple[Any, ...], dict[str, Any], str]]:
    """Each mistake: ssl_options' arguments, and what it says."""
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = self_signed(tmp_path / "other")
    (tmp_path / "encrypted").mkdir()
    encrypted_cert, encrypted_key = self_signed(tmp_path / "encrypted", PASSWORD)
    no_certificate = "no certificate in it (PEM, '-----BEGIN CERTIFICATE-----')"
    return {
        "no certificate": ((key, key), {}, f"--ssl-certificate {key}: {no_certificate}"),
        "no key": (
            (cert,),
            {},
            f"--ssl-certificate {cert} holds no private key: name the key's file with "
            "--ssl-keyfile",
        ),
        "a keyfile without a key": (
            (cert, cert),
            {},
            f"--ssl-keyfile {cert}: no private key in it (PEM, '-----BEGIN ... PRIVATE KEY-----')",
        ),
        "another certificate's key": (
            (cert, other_key),
            {},
            f"--ssl-keyfile {other_key} is not the key of --ssl-certificate {cert}",
        ),
        # Before, OpenSSL asked for the pass phrase on the terminal, twice (our check, then
        # the server), and with no terminal failed with "PEM lib".
        "an encrypted key without its password": (
            (encrypted_cert, encrypted_key),
            {},
            f"--ssl-keyfile {encrypted_key} is encrypted: give its password with --ssl-password",
        ),
        "a CA file without certificates": (
            (cert, key),
            {"ca_file": key},
            f"--ssl-ca-file {key}: {no_certificate}",
        ),
    }


# Each mistake is named by its flag and file. Before, every one of them was "cannot use the
# TLS certificate/key (wrong --ssl-password, or a key that does not match the
# certificate?): [SSL] PEM lib (_ssl.c:3926)", blaming a password that was not given.
@pytest.mark.parametrize(
    "mistake",
    [
        "no certificate",
        "no key",
        "a keyfile without a key",
        "another certificate's key",
        "an encrypted key without its password",
        "a CA file without certificates",
    ],
)
def test_a_file_that_does_not_hold_what_its_flag_needs(tmp_path: Path, mistake: str) -> None:
    args, kwargs, says = _mistakes(tmp_path)[mistake]
    with pytest.raises(InvalidConfig) as refused:
        ssl_options(*args, **kwargs)
    assert str(refused.value) == says
