"""HTTPS for the server: `--ssl-certificate`, `--ssl-keyfile`, `--ssl-ca-file` and
`--ssl-password` turned into uvicorn's keyword arguments.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig


def _existing(path: str | Path, flag: str) -> str:
    if not Path(path).is_file():
        raise InvalidConfig(f"{flag} {path}: no such file")
    return str(path)


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def _pem_blocks(path: str) -> list[str]:
    """The kinds of PEM block in a file (`CERTIFICATE`, `PRIVATE KEY`...), in order."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidConfig(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return [kind.decode() for kind in _PEM_BLOCK.findall(text)]


def _is_encrypted_key(path: str) -> bool:
    """A PKCS#8 `ENCRYPTED PRIVATE KEY`, or an OpenSSL legacy key with `Proc-Type: 4,ENCRYPTED`."""
    text = Path(path).read_bytes()
    return b"ENCRYPTED PRIVATE KEY-----" in text or b"Proc-Type: 4,ENCRYPTED" in text


def _check_files(
    certificate: str, keyfile: str | None, ca_file: str | None, password: str | None
) -> None:
    """Each file holds what its flag needs, named by the flag: OpenSSL's own message for all
    of these is "PEM lib", and with an encrypted key and no password it asks on the terminal."""
    no_certificate = "no certificate in it (PEM, '-----BEGIN CERTIFICATE-----')"
    if "CERTIFICATE" not in _pem_blocks(certificate):
        raise InvalidConfig(f"--ssl-certificate {certificate}: {no_certificate}")
    if ca_file is not None and "CERTIFICATE" not in _pem_blocks(ca_file):
        raise InvalidConfig(f"--ssl-ca-file {ca_file}: {no_certificate}")
    has_key = any(kind.endswith("PRIVATE KEY") for kind in _pem_blocks(keyfile or certificate))
    if keyfile is None and not has_key:
        raise InvalidConfig(
            f"--ssl-certificate {certificate} holds no private key: name the key's file with "
            "--ssl-keyfile"
        )
    if not has_key:
        raise InvalidConfig(
            f"--ssl-keyfile {keyfile}: no private key in it "
            "(PEM, '-----BEGIN ... PRIVATE KEY-----')"
        )
    if password is None and _is_encrypted_key(keyfile or certificate):
        flag = "--ssl-keyfile" if keyfile else "--ssl-certificate"
        raise InvalidConfig(
            f"{flag} {keyfile or certificate} is encrypted: give its password with --ssl-password"
        )


def _check_loadable(options: dict[str, Any]) -> None:
    """Fail at startup with a clear message (bad password, key not matching the cert...)."""
    certificate, keyfile = options["ssl_certfile"], options.get("ssl_keyfile")
    password = options.get("ssl_keyfile_password")
    _check_files(certificate, keyfile, options.get("ssl_ca_certs"), password)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certificate, keyfile, password)
        if "ssl_ca_certs" in options:
            context.load_verify_locations(options["ssl_ca_certs"])
    except (ssl.SSLError, OSError) as exc:
        key = f"--ssl-keyfile {keyfile}" if keyfile else f"the key in {certificate}"
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise InvalidConfig(
                f"{key} is not the key of --ssl-certificate {certificate}"
            ) from None
        if password is not None and _is_encrypted_key(keyfile or certificate):
            raise InvalidConfig(
                f"{key} cannot be decrypted: wrong --ssl-password? ({exc})"
            ) from None
        raise InvalidConfig(f"cannot use the TLS certificate and key: {exc}") from None


def ssl_options(
    certificate: str | Path | None,
    keyfile: str | Path | None = None,
    ca_file: str | Path | None = None,
    password: str | None = None,
    require_client_certificate: bool = False,
) -> dict[str, Any]:
    """uvicorn kwargs for TLS; `{}` (plain HTTP) when no certificate is given.

    The key may sit in the certificate file (then `keyfile` is omitted). `ca_file` is the
    bundle client certificates are checked against; as in Rasa, presenting one is optional
    unless `require_client_certificate` asks for mutual TLS.
    """
    if certificate is None:
        if keyfile or ca_file or password:
            raise InvalidConfig(
                "--ssl-keyfile, --ssl-ca-file and --ssl-password need --ssl-certificate"
            )
        return {}
    options: dict[str, Any] = {"ssl_certfile": _existing(certificate, "--ssl-certificate")}
    if keyfile is not None:
        options["ssl_keyfile"] = _existing(keyfile, "--ssl-keyfile")
    if password is not None:
        options["ssl_keyfile_password"] = password
    if ca_file is not None:
        options["ssl_ca_certs"] = _existing(ca_file, "--ssl-ca-file")
    _check_loadable(options)
    if require_client_certificate:
        if ca_file is None:
            raise InvalidConfig("mutual TLS needs --ssl-ca-file")
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
