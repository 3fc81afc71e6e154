"""Ed25519 signatures over an archive manifest (the sha256 of every member).

A signed archive carries `signature.json`; a server started with a verify key refuses any
archive whose manifest does not verify or whose members do not match it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import SignatureError

# cryptography is imported where a key is used: a server started without a verify key
# (the archive module imports this one) skips its 10-15 ms of CPU.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

SIGNATURE_FILE = "signature.json"
ALGORITHM = "Ed25519"

KeySpec = bytes | str | Path


def generate_keypair() -> tuple[bytes, bytes]:
    """A new (private PEM, public PEM) pair, for `botserver train --signing-key`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _key_bytes(key: KeySpec) -> bytes:
    if isinstance(key, Path):
        try:
            return key.read_bytes()
        except OSError as exc:
            raise SignatureError(f"Cannot read key file '{key}': {exc.strerror}") from exc
    if isinstance(key, str):
        return key.encode()
    return key


def load_signing_key(key: KeySpec) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM, or 32 raw bytes, or a file holding either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _key_bytes(key)
    if len(data) == 32 and not data.startswith(b"-----"):
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"Not an unencrypted PEM Ed25519 private key: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SignatureError("The signing key is not an Ed25519 key")
    return loaded


def load_verify_key(key: KeySpec) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, or 32 raw bytes, or a file holding either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _key_bytes(key)
    if len(data) == 32 and not data.startswith(b"-----"):
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"Not a PEM Ed25519 public key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise SignatureError("The verify key is not an Ed25519 key")
    return loaded


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (first 16 hex chars of its sha256)."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def canonical_manifest(files: dict[str, str], format_version: int) -> bytes:
    """The exact bytes that are signed: sorted, compact JSON of member name → sha256."""
    manifest = {"format_version": format_version, "files": dict(sorted(files.items()))}
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def sign_manifest(files: dict[str, str], format_version: int, key: KeySpec) -> bytes:
    """The content of `signature.json` for these member hashes."""
    private = load_signing_key(key)
    message = canonical_manifest(files, format_version)
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private.public_key()),
        "format_version": format_version,
        "files": dict(sorted(files.items())),
        "signature": base64.b64encode(private.sign(message)).decode(),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode()


def verify_signature_document(raw: bytes, verify_key: Ed25519PublicKey) -> dict[str, str]:
    """Check `signature.json`; return the signed member name → sha256 map."""
    from cryptography.exceptions import InvalidSignature

    try:
        document: Any = json.loads(raw)
        algorithm = document["algorithm"]
        files = document["files"]
        format_version = document["format_version"]
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SignatureError(f"{SIGNATURE_FILE} is malformed: {exc}") from exc
    if algorithm != ALGORITHM:
        raise SignatureError(f"Unsupported signature algorithm {algorithm!r}")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise SignatureError(f"{SIGNATURE_FILE} is malformed: 'files' must map names to hashes")
    if not isinstance(format_version, int):
        raise SignatureError(f"{SIGNATURE_FILE} is malformed: bad format_version")
    try:
        verify_key.verify(signature, canonical_manifest(files, format_version))
    except InvalidSignature as exc:
        raise SignatureError(
            "The archive signature does not verify with the configured key "
            f"(key id {key_id(verify_key)}): it was tampered with or signed by another key"
        ) from exc
    return files
