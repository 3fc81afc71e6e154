"""HTTPS for the server: `--ssl-certificate`, `--ssl-keyfile`, `--ssl-ca-file` and
`--ssl-password` turned into uvicorn's keyword arguments.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig


def _existing(path: str | Path, flag: str) -> str:
    if not Path(path).is_file():
        raise InvalidConfig(f"{flag} {path}: no such file")
    return str(path)


def _check_loadable(options: dict[str, Any]) -> None:
    """Fail at startup with a clear message (bad password, key not matching the cert...)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(
            options["ssl_certfile"],
            options.get("ssl_keyfile"),
            options.get("ssl_keyfile_password"),
        )
        if "ssl_ca_certs" in options:
            context.load_verify_locations(options["ssl_ca_certs"])
    except (ssl.SSLError, OSError) as exc:
        raise InvalidConfig(
            f"cannot use the TLS certificate/key (wrong --ssl-password, or a key that does not "
            f"match the certificate?): {exc}"
        ) from None


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
