"""How the HTTP API is secured: a static token, a JWT key, or nothing (open).

`AuthConfig` is what the CLI flags `--auth-token`, `--jwt-secret`, `--jwt-method` and
`--jwt-private-key` become; `key_text` reads a key given inline or as a file path.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

from server.errors import InvalidConfig

logger = logging.getLogger(__name__)


@cache
def supported_jwt_methods() -> frozenset[str]:
    """The JWT methods we verify: `none` never, every other algorithm PyJWT knows. PyJWT
    (and the cryptography it loads) is imported here, by a server that uses JWTs only."""
    from jwt.algorithms import get_default_algorithms

    return frozenset(a for a in get_default_algorithms() if a != "none")


DEFAULT_LEEWAY_SECONDS = 10.0
_MIN_HMAC_KEY_BYTES = 32
# A PEM certificate chain is a few KiB; a file past this is a log or a dump named by mistake.
_MAX_KEY_FILE_CHARS = 1 << 20


@dataclass(frozen=True)
class AuthConfig:
    """The security settings of the HTTP API; with neither token nor JWT it is open.

    `jwt_secret` is the shared secret for HS* methods, or the public key (PEM text or the
    path of a PEM file) for RS*/ES*/PS*/EdDSA. `jwt_private_key` is accepted for
    compatibility with `rasa run` and never used: the server only verifies.
    """

    token: str | None = None
    jwt_secret: str | None = None
    jwt_method: str = "HS256"
    jwt_private_key: str | None = None
    jwt_leeway: float = DEFAULT_LEEWAY_SECONDS
    # Our addition: the `aud` values accepted. Empty (Rasa's way): a JWT with `aud` is refused.
    jwt_audience: tuple[str, ...] = ()

    @property
    def uses_token(self) -> bool:
        return bool(self.token)

    @property
    def uses_jwt(self) -> bool:
        # Rasa enables JWT only when both the secret and the method are set.
        return bool(self.jwt_secret) and bool(self.jwt_method)

    @property
    def is_open(self) -> bool:
        return not self.uses_token and not self.uses_jwt

    def __repr__(self) -> str:
        # Never print secrets, not even in a traceback or a debug dump.
        return (
            f"AuthConfig(token={'***' if self.token else None}, "
            f"jwt_secret={'***' if self.jwt_secret else None}, jwt_method={self.jwt_method!r}, "
            f"jwt_private_key={'***' if self.jwt_private_key else None}, "
            f"jwt_leeway={self.jwt_leeway}, jwt_audience={self.jwt_audience!r})"
        )


JWT_AUDIENCE_ENV = "BOTSERVER_JWT_AUDIENCE"


def jwt_audience(flags: list[str] | None) -> list[str]:
    """The audiences of `--jwt-audience` flags, else of BOTSERVER_JWT_AUDIENCE (comma-separated)."""
    values = flags if flags else os.environ.get(JWT_AUDIENCE_ENV, "").split(",")
    return [value.strip() for value in values if value.strip()]


# A value only a path would be: `~/`, `./` or `../` then path characters, or `/` then two or
# more segments of them. A random base64 secret holds `+` or `=` (or is the rare exception).
_PATH_CHARACTERS = re.compile(r"/?[\w.-]+(?:/[\w.-]+)+")
_PATH_LIKE = re.compile(r"(?:(?:~|\.{1,2})/[\w.-]+(?:/[\w.-]+)*|/[\w.-]+(?:/[\w.-]+)+)")


def verification_key(config: AuthConfig) -> Any:
    """The prepared key that verifies JWTs for `config`; raises InvalidConfig if unusable."""
    method = config.jwt_method
    if method not in supported_jwt_methods():
        raise InvalidConfig(
            f"--jwt-method {method!r} is not supported; use one of "
            f"{', '.join(sorted(supported_jwt_methods()))}"
        )
    if not config.jwt_secret:
        raise InvalidConfig("--jwt-secret is required to verify JWTs")
    return prepared_key(key_text(config.jwt_secret, "--jwt-secret"), method, "--jwt-secret")


def key_text(value: str, name: str) -> str:
    """The key the setting `name` gives: the contents of the file `value` names (`~` is the
    home folder), else `value`.

    The line ends closing a file are dropped: `echo secret > file` writes "secret\n", and the
    tokens were signed with "secret". A PEM key verifies the same with or without them.
    Raises InvalidConfig when `value` names a directory or a file that is no text, or can
    only be a path and names no file.
    """
    if "\n" in value or len(value) >= 4096:
        return value  # PEM text, never a path
    # `~/jwt.key` from a systemd unit or a .env file reaches us without a shell to expand it.
    path = os.path.expanduser(value)
    if os.path.isfile(path):
        return _key_file_text(path, name)
    if "/" in value and os.path.isdir(path):
        raise InvalidConfig(f"{name} names a directory, {path}, not a file holding the key")
    if _PATH_LIKE.fullmatch(value) or _names_a_missing_file_of_a_folder(value):
        # Not shown: in the rare case it is a secret after all, it stays out of the logs.
        raise InvalidConfig(
            f"{name} looks like the path of a file, and there is no such file (or it "
            "cannot be read): the path itself would be the secret, and anyone who read it in "
            "your configuration could sign tokens. Fix the path; if it is the secret itself, "
            "write it into a file and give that file's path (tokens signed with it keep "
            "working)"
        )
    return value


def _names_a_missing_file_of_a_folder(value: str) -> bool:
    """`value` is path characters naming a file, not there, in an existing folder other than
    `/` (`secrets/jwt_secret` with `secrets/` there): a random secret's leading segments
    naming a folder is out of reach; a typo is not."""
    folder = os.path.dirname(value)
    return (
        bool(_PATH_CHARACTERS.fullmatch(value))
        and folder not in ("", "/")
        and (os.path.isdir(folder))
    )


def _key_file_text(path: str, name: str) -> str:
    """The text of the key file `path` without its closing line ends; InvalidConfig naming the
    setting `name` when it cannot be read as text."""
    try:
        # utf-8-sig: Windows Notepad opens its files with a byte order mark, no part of a key.
        with open(path, encoding="utf-8-sig") as f:
            text = f.read(_MAX_KEY_FILE_CHARS + 1)
    except OSError as exc:
        raise InvalidConfig(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidConfig(
            f"{name}: {path} is not text (UTF-8); give a key as PEM (a DER key becomes one "
            "with `openssl pkey -pubin -inform DER -in KEY -out key.pem`)"
        ) from None
    if len(text) > _MAX_KEY_FILE_CHARS:
        raise InvalidConfig(
            f"{name}: {path} is larger than {_MAX_KEY_FILE_CHARS // 1024} KiB, which no key "
            "file is; name the file holding the key"
        )
    return text.rstrip("\r\n")


def asymmetric_key_shape(raw: str) -> str | None:
    """What `raw` is when it is a key pair's half, or a certificate, in a form PyJWT takes for
    an HMAC secret (it refuses only PEM and ssh keys): the base64 body of a PEM without its
    lines (how Keycloak shows a realm's public key), a JWK or a JWK set. None otherwise."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if isinstance(value, dict) and "kty" in value:
            return "a JWK (a key of a JWKS)"
        if isinstance(value, dict) and isinstance(value.get("keys"), list):
            return "a JWK set (JWKS)"
        return None
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    loaders = (
        serialization.load_der_public_key,
        lambda data: serialization.load_der_private_key(data, password=None),
        x509.load_der_x509_certificate,
    )
    for load in loaders:
        try:
            load(der)
        except UnsupportedAlgorithm:
            pass  # a key, of a kind (a curve) cryptography does not load
        except (ValueError, TypeError):
            continue
        return "the base64 body of a key or certificate (PEM without its BEGIN/END lines)"
    return None


def _certificate_key(raw: str) -> Any:
    """The public key of the X.509 certificate (PEM) `raw`, as Auth0 gives its signing key;
    raises ValueError when it is none."""
    from cryptography import x509

    return x509.load_pem_x509_certificate(raw.strip().encode()).public_key()


def prepared_key(raw: str, method: str, name: str) -> Any:
    """`raw` made ready to verify `method` JWTs (the public half of a private key); raises
    InvalidConfig naming the setting `name` when it is no key for `method`."""
    import jwt
    from jwt.exceptions import InvalidKeyError

    algorithm = jwt.get_algorithm_by_name(method)
    if method.startswith("HS"):
        shape = asymmetric_key_shape(raw)
        if shape is not None:
            method_setting = "--jwt-method" if name.startswith("--") else "'jwt_method'"
            raise InvalidConfig(
                f"{name} is {shape}, and {method} would use it as a shared secret: anyone "
                f"holding that key could sign tokens. For tokens signed with a private key, "
                f"set {method_setting} RS256 (or the method they name) and give the public "
                "key as PEM text or a PEM file"
            )
    try:
        certificate = not method.startswith("HS") and "-----BEGIN CERTIFICATE-----" in raw
        key = algorithm.prepare_key(_certificate_key(raw) if certificate else raw)
    except (InvalidKeyError, ValueError, TypeError) as exc:
        kind = (
            "a shared secret" if method.startswith("HS") else "a public key or certificate in PEM"
        )
        raise InvalidConfig(f"{name} must be {kind} for {method}: {exc}") from None
    if method.startswith("HS"):
        if len(raw.encode("utf-8")) < _MIN_HMAC_KEY_BYTES:
            logger.warning(
                "The JWT secret %s is shorter than %d bytes; a longer random secret is safer.",
                name,
                _MIN_HMAC_KEY_BYTES,
            )
        # Warned once above; PyJWT would repeat it on every request.
        try:
            from jwt.warnings import InsecureKeyLengthWarning
        except ImportError:  # PyJWT < 2.10 does not warn about short keys
            pass
        else:
            warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
        return key
    # Verifying needs the public half; accept a private key PEM and derive it.
    public_key = getattr(key, "public_key", None)
    if callable(public_key) and not hasattr(key, "verify"):
        key = public_key()
    return key


def keep_auth_secrets_out_of_logs(config: AuthConfig) -> None:
    """The token, an HS* method's secret and a private key stay out of every log line from
    now on, wherever a client or a library puts them (`?tokn=`, an error message): the value
    given, or the text of the key file it names (its path is no secret, and stays shown).
    An asymmetric method's `jwt_secret` is a public key: no secret."""
    from server.auth.log_redaction import redact_also

    redact_also(config.token)
    keys = [("--jwt-private-key", config.jwt_private_key)]
    if config.jwt_method.upper().startswith("HS"):
        keys.append(("--jwt-secret", config.jwt_secret))
    for name, value in keys:
        if not value:
            continue
        try:
            redact_also(key_text(value, name))
        except InvalidConfig:  # refused where it is used; if a secret after all, hidden
            redact_also(value)
