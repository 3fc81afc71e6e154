"""Who gets in, per server security mode: static token, HS256 JWT, RS256 JWT, open."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import warnings
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import APIRouter, Depends, Request

from server.api.app import create_app
from server.api.settings import ApiSettings
from server.auth import AuthConfig, Principal, require_auth
from server.auth.config import JWT_AUDIENCE_ENV, jwt_audience
from server.errors import InvalidConfig, NoModelLoaded
from tests.tls_certificates import self_signed

# The short secrets below are Rasa's documented examples; PyJWT's length warning is noise here.
warnings.filterwarnings("ignore", message="The HMAC key is")
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is")

SECRET = "thisismysecret"
HELP = "https://rasa.com/docs/rasa/user-guide/configuring-http-api/#security-considerations"

NOT_AUTHENTICATED = {
    "version": "3.6.21",
    "status": "failure",
    "message": "User is not authenticated.",
    "reason": "NotAuthenticated",
    "details": {},
    "help": HELP,
    "code": 401,
}
NOT_AUTHORIZED = {
    "version": "3.6.21",
    "status": "failure",
    "message": "User has insufficient permissions.",
    "reason": "NotAuthorized",
    "details": {},
    "help": HELP,
    "code": 403,
}


def protected_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/conversations/{conversation_id:path}/tracker",
        dependencies=[Depends(require_auth("conversation_id"))],
    )
    async def tracker(conversation_id: str, request: Request) -> dict[str, Any]:
        if getattr(request.app.state, "no_model", False):
            raise NoModelLoaded()
        principal: Principal = request.state.principal
        return {"sender_id": conversation_id, "as": principal.kind}

    @router.get("/status", dependencies=[Depends(require_auth())])
    async def status() -> dict[str, bool]:
        return {"ok": True}

    return router


def client_for(auth: AuthConfig, **state: Any) -> httpx.AsyncClient:
    app = create_app(ApiSettings(auth=auth), [protected_router()], state=state)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def hmac_signed(payload: dict[str, Any], key: str) -> str:
    """An HS256 JWT signed with `key`, even a PEM (which PyJWT refuses to sign with)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
    signature = hmac.new(key.encode(), header + b"." + body, hashlib.sha256).digest()
    return b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()


def user(name: str, role: str = "user", **claims: Any) -> dict[str, Any]:
    return {"user": {"username": name, "role": role}, **claims}


def unsigned(payload: dict[str, Any]) -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


# ------------------------------------------------------------------------ static token


TOKEN_CASES = [
    # (description, query, headers, path, status)
    ("no credentials", {}, {}, "/status", 401),
    ("wrong token", {"token": "wrong"}, {}, "/status", 401),
    ("right token", {"token": SECRET}, {}, "/status", 200),
    ("right token, conversation", {"token": SECRET}, {}, "/conversations/u1/tracker", 200),
    ("a token prefix", {"token": SECRET[:-1]}, {}, "/status", 401),
    ("token as a bearer header", {}, bearer(SECRET), "/status", 401),
    ("a JWT is not consulted", {}, bearer(hs256(user("boss", "admin"))), "/status", 401),
]


@pytest.mark.parametrize(
    ("query", "headers", "path", "status"),
    [c[1:] for c in TOKEN_CASES],
    ids=[c[0] for c in TOKEN_CASES],
)
async def test_static_token(query: dict, headers: dict, path: str, status: int) -> None:
    async with client_for(AuthConfig(token=SECRET)) as client:
        response = await client.get(path, params=query, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == NOT_AUTHENTICATED


async def test_a_repeated_token_counts_by_its_first_value_as_in_rasa() -> None:
    async with client_for(AuthConfig(token=SECRET)) as client:
        first_right = await client.get(f"/status?token={SECRET}&token=wrong")
        first_wrong = await client.get(f"/status?token=wrong&token={SECRET}")
        # Sanic drops blank values: the first token given is the first that is not empty.
        first_blank = await client.get(f"/status?token=&token={SECRET}")
    assert first_right.status_code == 200
    assert first_blank.status_code == 200
    assert first_wrong.status_code == 401
    assert first_wrong.json() == NOT_AUTHENTICATED


async def test_documented_token_usage() -> None:
    async with client_for(AuthConfig(token=SECRET)) as client:
        response = await client.get(f"/conversations/default/tracker?token={SECRET}")
    assert response.status_code == 200
    assert response.json() == {"sender_id": "default", "as": "token"}


async def test_the_token_length_does_not_show_in_the_comparison(monkeypatch) -> None:
    """compare_digest returns at once on a length mismatch: only equal-length digests reach it."""
    compared: list[tuple[int, int]] = []
    real_compare = hmac.compare_digest

    def recording_compare(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr("server.auth.static_token.hmac.compare_digest", recording_compare)
    async with client_for(AuthConfig(token=SECRET)) as client:
        statuses = [
            (await client.get("/status", params={"token": guess})).status_code
            for guess in (SECRET[:3], SECRET + "x", SECRET * 2, SECRET)
        ]
    assert statuses == [401, 401, 401, 200]
    assert compared == [(32, 32)] * 4


# ------------------------------------------------------------------------ HS256 JWT

now = int(time.time())

HS256_CASES = [
    ("no credentials", {}, "/conversations/u1/tracker", 401),
    ("garbage bearer", bearer("not.a.jwt"), "/conversations/u1/tracker", 401),
    ("wrong key", bearer(hs256(user("boss", "admin"), "another secret")), "/status", 401),
    ("expired", bearer(hs256(user("boss", "admin", exp=now - 3600))), "/status", 401),
    (
        # Built when the test runs: a token made at import time may be far older by then.
        "expired within leeway",
        lambda: bearer(hs256(user("boss", "admin", exp=int(time.time()) - 2))),
        "/status",
        200,
    ),
    ("not yet valid", bearer(hs256(user("boss", "admin", nbf=now + 3600))), "/status", 401),
    ("alg none", bearer(unsigned(user("boss", "admin"))), "/status", 401),
    (
        "HS512 on an HS256 server",
        bearer(jwt.encode(user("boss", "admin"), SECRET, "HS512")),
        "/status",
        401,
    ),
    ("no Bearer prefix", {"Authorization": hs256(user("boss", "admin"))}, "/status", 401),
    (
        "lower-case scheme",
        {"Authorization": "bearer " + hs256(user("boss", "admin"))},
        "/status",
        200,
    ),
    ("user, own id", bearer(hs256(user("u1"))), "/conversations/u1/tracker", 200),
    ("user, another id", bearer(hs256(user("u2"))), "/conversations/u1/tracker", 403),
    ("user, no conversation", bearer(hs256(user("u1"))), "/status", 403),
    ("user, case differs", bearer(hs256(user("U1"))), "/conversations/u1/tracker", 403),
    ("user, id with a slash", bearer(hs256(user("a/b"))), "/conversations/a/b/tracker", 200),
    ("admin, conversation", bearer(hs256(user("boss", "admin"))), "/conversations/u1/tracker", 200),
    ("admin, no conversation", bearer(hs256(user("boss", "admin"))), "/status", 200),
    ("no role", bearer(hs256({"user": {"username": "u1"}})), "/conversations/u1/tracker", 403),
    ("claims not under user", bearer(hs256({"username": "u1", "role": "admin"})), "/status", 403),
    ("unknown role", bearer(hs256(user("u1", "superuser"))), "/conversations/u1/tracker", 403),
    ("a ?token when none is configured", {}, "/status?token=" + SECRET, 401),
]


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [c[1:] for c in HS256_CASES],
    ids=[c[0] for c in HS256_CASES],
)
async def test_hs256_jwt(headers: Any, path: str, status: int) -> None:
    if callable(headers):
        headers = headers()
    async with client_for(AuthConfig(jwt_secret=SECRET)) as client:
        response = await client.get(path, headers=headers)
    assert response.status_code == status
    expected = {401: NOT_AUTHENTICATED, 403: NOT_AUTHORIZED}.get(status)
    if expected:
        assert response.json() == expected


async def test_rasa_recorded_user_jwt_is_accepted() -> None:
    # Recorded against Rasa 3.6.21 with --jwt-secret secret.
    token = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyIjp7InVzZXJuYW1lIjoidTEiLCJyb2xlIjoidXNl"
        "ciJ9fQ.vYYHMWtmLnP1ue5111EzsKYqw7meVyLqH5_z5QcLTHE"
    )
    async with client_for(AuthConfig(jwt_secret="secret")) as client:
        own = await client.get("/conversations/u1/tracker", headers=bearer(token))
        other = await client.get("/conversations/u2/tracker", headers=bearer(token))
    assert (own.status_code, other.status_code) == (200, 403)


# ------------------------------------------------------------------------ RS256 / ES256


async def test_rs256_verifies_with_the_public_key(rsa_keys: tuple[Any, str]) -> None:
    private, public_pem = rsa_keys
    admin = jwt.encode(user("boss", "admin"), private, algorithm="RS256")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(user("boss", "admin"), other_key, algorithm="RS256")
    async with client_for(AuthConfig(jwt_secret=public_pem, jwt_method="RS256")) as client:
        assert (await client.get("/status", headers=bearer(admin))).status_code == 200
        assert (await client.get("/status", headers=bearer(forged))).status_code == 401
        none = await client.get("/status", headers=bearer(unsigned(user("boss", "admin"))))
        assert none.status_code == 401


async def test_rs256_refuses_hs256_signed_with_the_public_key(rsa_keys: tuple[Any, str]) -> None:
    """Algorithm confusion: the public key is no secret, so it must not work as an HMAC key."""
    _, public_pem = rsa_keys
    forged = hmac_signed(user("boss", "admin"), public_pem)
    async with client_for(AuthConfig(jwt_secret=public_pem, jwt_method="RS256")) as client:
        response = await client.get("/status", headers=bearer(forged))
    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED


async def test_public_key_from_a_file(tmp_path: Any) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "jwt_public.pem"
    key_file.write_bytes(pem)
    token = jwt.encode(user("u1"), private, algorithm="ES256")
    config = AuthConfig(jwt_secret=str(key_file), jwt_method="ES256", jwt_private_key="unused")
    async with client_for(config) as client:
        response = await client.get("/conversations/u1/tracker", headers=bearer(token))
    assert response.status_code == 200


async def test_rs256_verifies_with_a_certificate_as_auth0_gives_it(
    rsa_keys: tuple[Any, str], tmp_path: Any
) -> None:
    # Auth0 offers its signing key as an X.509 certificate (PEM); before, it stopped startup
    # ("must be a public key in PEM format"), and the user had to extract the key by hand.
    private, _ = rsa_keys
    cert_file, _ = self_signed(tmp_path, key=private)
    config = AuthConfig(jwt_secret=str(cert_file), jwt_method="RS256")
    async with client_for(config) as client:
        signed = await client.get(
            "/status", headers=bearer(jwt.encode(user("ops", "admin"), private, algorithm="RS256"))
        )
        forged = await client.get(
            "/status", headers=bearer(hmac_signed(user("ops", "admin"), cert_file.read_text()))
        )
    assert (signed.status_code, forged.status_code) == (200, 401)


@pytest.mark.parametrize(
    ("method", "secret"),
    [("none", SECRET), ("HS257", SECRET), ("RS256", "not a pem key")],
)
def test_unusable_jwt_settings_fail_at_startup(method: str, secret: str) -> None:
    with pytest.raises(InvalidConfig):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=secret, jwt_method=method)))


def _bare_public_keys(private: rsa.RSAPrivateKey, public_pem: str) -> dict[str, str]:
    """A public key the ways an identity provider shows it without PEM lines: Keycloak's
    realm "Public key" (the base64 body, on one line or wrapped), and a JWK of a JWKS."""
    body = "".join(public_pem.strip().splitlines()[1:-1])
    jwk = json.dumps(
        json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())) | {"kid": "k1"}
    )
    return {
        "base64 body": body,
        "wrapped base64 body": "\n".join(public_pem.strip().splitlines()[1:-1]),
        "JWK": jwk,
        "JWKS": json.dumps({"keys": [json.loads(jwk)]}),
    }


@pytest.mark.parametrize("shape", ["base64 body", "wrapped base64 body", "JWK", "JWKS"])
async def test_a_public_key_given_as_an_hmac_secret_stops_startup(
    rsa_keys: tuple[Any, str], shape: str
) -> None:
    # The forgotten `--jwt-method RS256`: with HS256, a public key pasted as Keycloak shows
    # it (no PEM lines) or as a JWK was a shared secret, so anyone holding the public key,
    # which is public, signed admin tokens. PyJWT refuses only a PEM (or ssh) key there.
    secret = _bare_public_keys(*rsa_keys)[shape]
    with pytest.raises(InvalidConfig, match="--jwt-method RS256"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=secret)))


def test_the_body_of_a_key_cryptography_cannot_load_as_an_hmac_secret_stops_startup() -> None:
    # A public key on a curve cryptography does not support (brainpoolP160r1 here): before,
    # start-up ended in an UnsupportedAlgorithm traceback.
    p256_der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    p256, brainpool = bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06092b2403030208010101")
    der = p256_der.replace(p256, brainpool)
    der = bytes([der[0], der[1] + 1, der[2], der[3] + 1]) + der[4:]  # both lengths grow by 1
    secret = base64.b64encode(der).decode()
    with pytest.raises(InvalidConfig, match="--jwt-method RS256"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=secret)))


# ------------------------------------------------------------------------ both, and none


async def test_with_token_and_jwt_either_one_lets_in() -> None:
    config = AuthConfig(token=SECRET, jwt_secret=SECRET)
    admin = bearer(hs256(user("boss", "admin")))
    async with client_for(config) as client:
        assert (await client.get("/status", params={"token": SECRET})).status_code == 200
        wrong_token_good_jwt = await client.get("/status?token=wrong", headers=admin)
        assert wrong_token_good_jwt.status_code == 200
        good_token_bad_jwt = await client.get(
            "/status", params={"token": SECRET}, headers=bearer("garbage")
        )
        assert good_token_bad_jwt.status_code == 200
        assert (await client.get("/status")).status_code == 401


async def test_without_security_everything_is_open() -> None:
    async with client_for(AuthConfig()) as client:
        response = await client.get("/conversations/anyone/tracker")
        assert response.json() == {"sender_id": "anyone", "as": "open"}
        assert (await client.get("/status", headers=bearer("garbage"))).status_code == 200


async def test_auth_runs_before_the_409() -> None:
    async with client_for(AuthConfig(token=SECRET), no_model=True) as client:
        anonymous = await client.get("/conversations/u1/tracker")
        allowed = await client.get("/conversations/u1/tracker", params={"token": SECRET})
    assert anonymous.status_code == 401
    assert allowed.status_code == 409
    assert allowed.json()["reason"] == "Conflict"


def test_auth_config_repr_hides_secrets() -> None:
    text = repr(AuthConfig(token=SECRET, jwt_secret="jwtsecret", jwt_private_key="pk"))
    assert SECRET not in text and "jwtsecret" not in text and "pk'" not in text


async def test_auth_runs_before_body_parsing() -> None:
    from pydantic import BaseModel

    class Body(BaseModel):
        text: str

    router = APIRouter()

    @router.post(
        "/conversations/{conversation_id:path}/messages",
        dependencies=[Depends(require_auth("conversation_id"))],
    )
    async def messages(conversation_id: str, body: Body) -> dict[str, str]:
        return {"text": body.text}

    app = create_app(ApiSettings(auth=AuthConfig(jwt_secret=SECRET)), [router])
    malformed = b"{not json"
    json_type = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        anonymous = await client.post(
            "/conversations/u1/messages", content=malformed, headers=json_type
        )
        other_user = await client.post(
            "/conversations/u1/messages",
            content=malformed,
            headers={**json_type, **bearer(hs256(user("u2")))},
        )
        own_user = await client.post(
            "/conversations/u1/messages",
            content=malformed,
            headers={**json_type, **bearer(hs256(user("u1")))},
        )
    assert anonymous.status_code == 401
    assert other_user.status_code == 403
    assert own_user.status_code == 400


@pytest.mark.parametrize(
    ("start", "ending"), [("", "\n"), ("", "\r\n"), ("", ""), ("\ufeff", "\r\n")]
)
async def test_a_secret_file_written_by_echo_verifies_tokens_signed_without_its_newline(
    tmp_path: Any, start: str, ending: str
) -> None:
    # `echo thisismysecret > k; botserver run --jwt-secret k`, then a token signed with the secret.
    # Windows Notepad opens its UTF-8 files with a byte order mark: before, part of the secret.
    key_file = tmp_path / "k"
    key_file.write_bytes((start + SECRET + ending).encode())
    async with client_for(AuthConfig(jwt_secret=str(key_file))) as client:
        ok = await client.get("/status", headers=bearer(hs256(user("boss", "admin"))))
        other = await client.get("/status", headers=bearer(hs256(user("boss", "admin"), "x")))
    assert (ok.status_code, other.status_code) == (200, 401)


@pytest.mark.parametrize("path", ["/run/secrets/jwt_secret", "./secrets/jwt.key", "~/jwt.key"])
def test_a_jwt_secret_naming_a_file_that_is_not_there_stops_startup(path: str) -> None:
    # `--jwt-secret /run/secrets/jwt_secret` with the secret not mounted: the path itself was
    # the HMAC secret, and it is written in compose files and guides, so anyone could sign
    # admin tokens (Rasa too).
    with pytest.raises(InvalidConfig, match="there is no such file"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=path)))


async def test_a_secret_file_under_the_home_folder_is_read_from_there(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `BOTSERVER_JWT_SECRET=~/jwt.key` in a systemd unit or a .env file reaches us unexpanded;
    # before, start-up stopped saying there was no such file, though there was.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "jwt.key").write_text(SECRET + "\n")
    async with client_for(AuthConfig(jwt_secret="~/jwt.key")) as client:
        ok = await client.get("/status", headers=bearer(hs256(user("boss", "admin"))))
    assert ok.status_code == 200


def test_a_jwt_secret_naming_a_huge_file_stops_startup(tmp_path: Any) -> None:
    # A log or a dump named by mistake: before, read whole into memory and used as the secret
    # (every token a 401, or the server out of memory for a file of gigabytes).
    big = tmp_path / "server.log"
    big.write_text("x" * (2 << 20))
    with pytest.raises(InvalidConfig, match="--jwt-secret: .*server.log is larger than"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=str(big))))


def test_a_key_file_that_is_no_text_stops_startup_with_a_clear_error(
    rsa_keys: tuple[Any, str], tmp_path: Any
) -> None:
    # A DER key (`openssl ... -outform DER`) for RS256: before, a UnicodeDecodeError traceback.
    private, _ = rsa_keys
    der = tmp_path / "public.der"
    der.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(InvalidConfig, match="--jwt-secret: .*public.der is not text"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=str(der), jwt_method="RS256")))


@pytest.mark.parametrize("relative", [False, True])
def test_a_jwt_secret_naming_a_directory_says_so(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    # Docker makes a directory of a bind-mounted secret file missing on the host; before,
    # "there is no such file" (absolute), or the path itself became the secret (relative).
    (tmp_path / "secrets" / "jwt").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    path = "secrets/jwt" if relative else str(tmp_path / "secrets" / "jwt")
    with pytest.raises(InvalidConfig, match="names a directory"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=path)))


async def test_a_random_secret_taken_for_a_path_can_be_kept_in_a_file(tmp_path: Any) -> None:
    # One unpadded base64 secret in ~300 (`openssl rand -base64 48`) is only path characters
    # and is refused; the error must say how to keep it, not only to rotate every token.
    secret = "/8F2vQxk/Lw9aZ3mT1bY7cR5dE0fG4hJ6iK8lM2nO4pQ6rS8tU0vW2xY4zA6bC8dE0fG2"
    with pytest.raises(InvalidConfig) as refused:
        create_app(ApiSettings(auth=AuthConfig(jwt_secret=secret)))
    assert "if it is the secret itself, write it into a file" in str(refused.value)
    assert secret not in str(refused.value)
    (tmp_path / "jwt").write_text(secret + "\n")
    async with client_for(AuthConfig(jwt_secret=str(tmp_path / "jwt"))) as client:
        ok = await client.get("/status", headers=bearer(hs256(user("boss", "admin"), secret)))
    assert ok.status_code == 200


def test_a_relative_path_into_an_existing_folder_naming_no_file_stops_startup(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--jwt-secret secrets/jwt_secret` run from the project, whose secrets/ holds `jwt`: a
    # typo, and before, the path itself was the secret, readable in the compose file.
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "jwt").write_text(SECRET)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidConfig, match="there is no such file"):
        create_app(ApiSettings(auth=AuthConfig(jwt_secret="secrets/jwt_secret")))


@pytest.mark.parametrize("secret", ["/8F2vQ+xk/Lw9aZ3mT1bY7cR5dE0fG4hJ6iK8lM2nO4=", "a/b c/d"])
async def test_a_secret_with_slashes_that_is_no_path_is_still_a_secret(secret: str) -> None:
    async with client_for(AuthConfig(jwt_secret=secret)) as client:
        ok = await client.get("/status", headers=bearer(hs256(user("boss", "admin"), secret)))
    assert ok.status_code == 200


# ------------------------------------------------------------------------ audience (our addition)


async def test_a_jwt_naming_an_audience_is_refused_with_a_hint_unless_one_is_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keycloak_like = hs256(user("boss", "admin", aud="account"))
    async with client_for(AuthConfig(jwt_secret=SECRET)) as client:
        with caplog.at_level("INFO", logger="server.auth"):
            response = await client.get("/status", headers=bearer(keycloak_like))
    assert response.status_code == 401 and response.json() == NOT_AUTHENTICATED
    assert "set --jwt-audience" in caplog.text


@pytest.mark.parametrize(
    ("aud", "status"),
    [("botserver", 200), (["account", "botserver"], 200), ("other", 401), (None, 401)],
    ids=["accepted", "one-of-a-list", "another-audience", "no-aud-claim"],
)
async def test_jwt_audience_accepts_only_tokens_for_it(aud: Any, status: int) -> None:
    claims = {"aud": aud} if aud is not None else {}
    token = hs256(user("boss", "admin", **claims))
    config = AuthConfig(jwt_secret=SECRET, jwt_audience=("botserver",))
    async with client_for(config) as client:
        assert (await client.get("/status", headers=bearer(token))).status_code == status


def test_jwt_audience_comes_from_the_flags_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(JWT_AUDIENCE_ENV, "account, botserver,")
    assert jwt_audience(None) == ["account", "botserver"]
    assert jwt_audience(["cli"]) == ["cli"]
    monkeypatch.delenv(JWT_AUDIENCE_ENV)
    assert jwt_audience(None) == []


@pytest.mark.parametrize(("token", "warned"), [("hunter2", True), ("x" * 24, False)])
def test_a_short_static_token_is_warned_about_at_startup(
    caplog: pytest.LogCaptureFixture, token: str, warned: bool
) -> None:
    # Every guess costs one request: a 6-letter token falls to a patient script.
    caplog.set_level(logging.WARNING, logger="server")
    create_app(ApiSettings(auth=AuthConfig(token=token)), [protected_router()])
    assert ("--auth-token is shorter than" in caplog.text) is warned
    assert token not in caplog.text
