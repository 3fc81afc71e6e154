"""Every protected route × every kind of credential, on a server with both `--auth-token`
and `--jwt-secret`: who gets in, who gets 401, who gets 403 (auth runs before 409/404)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from server.auth import AuthConfig
from tests.api.rasa_spec import RasaSpec

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is")

TOKEN = "thisismysecret"
JWT_SECRET = "a-jwt-secret-long-enough-for-hs256-keys!"
OWNER = "alice"
AUTH = AuthConfig(token=TOKEN, jwt_secret=JWT_SECRET)

EVENT = [{"event": "action", "name": "action_listen"}]
# (method, path, request kwargs); conversation routes are about OWNER.
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("get", "/status", {}),
    ("get", f"/conversations/{OWNER}/tracker", {}),
    ("post", f"/conversations/{OWNER}/tracker/events", {"json": EVENT}),
    ("put", f"/conversations/{OWNER}/tracker/events", {"json": EVENT}),
    ("get", f"/conversations/{OWNER}/story", {}),
    ("post", f"/conversations/{OWNER}/execute", {"json": {"name": "utter_greet"}}),
    ("post", f"/conversations/{OWNER}/trigger_intent", {"json": {"name": "greet"}}),
    ("post", f"/conversations/{OWNER}/predict", {}),
    ("post", f"/conversations/{OWNER}/messages", {"json": {"text": "hi", "sender": "user"}}),
    ("post", "/model/train", {"content": b""}),
    ("post", "/model/test/stories", {"content": b""}),
    ("post", "/model/test/intents", {"content": b""}),
    ("post", "/model/predict", {"json": EVENT}),
    ("post", "/model/parse", {"json": {"text": "hi"}}),
    ("put", "/model", {"json": {"model_file": "models/nope.tar.gz"}}),
    ("delete", "/model", {}),
    ("get", "/domain", {}),
]


def _hs256(payload: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _alg_none(payload: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def _user(name: str, role: str) -> dict[str, Any]:
    return {"user": {"username": name, "role": role}}


def _bearer(token: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


CREDENTIALS: dict[str, dict[str, Any]] = {
    "none": {},
    "wrong-token": {"params": {"token": "not-the-token"}},
    "right-token": {"params": {"token": TOKEN}},
    "expired-jwt": _bearer(_hs256({**_user("admin", "admin"), "exp": int(time.time()) - 3600})),
    "wrong-key-jwt": _bearer(_hs256(_user("admin", "admin"), "another-secret-of-enough-length!!")),
    "alg-none-jwt": _bearer(_alg_none(_user("admin", "admin"))),
    "user-own-id": _bearer(_hs256(_user(OWNER, "user"))),
    "user-other-id": _bearer(_hs256(_user("mallory", "user"))),
    # Valid signatures over payloads that name no usable role: authenticated, never authorized.
    "no-user-jwt": _bearer(_hs256({"exp": int(time.time()) + 3600})),
    "no-role-jwt": _bearer(_hs256({"user": {"username": OWNER}})),
    "role-not-a-name-jwt": _bearer(_hs256({"user": {"username": OWNER, "role": ["admin"]}})),
    "user-is-a-name-jwt": _bearer(_hs256({"user": "admin"})),
    "admin": _bearer(_hs256(_user("admin", "admin"))),
}
ALLOWED = "allowed"
NO_ROLE = ("no-user-jwt", "no-role-jwt", "role-not-a-name-jwt", "user-is-a-name-jwt")


def expected(credential: str, path: str) -> int | str:
    if credential in ("none", "wrong-token", "expired-jwt", "wrong-key-jwt", "alg-none-jwt"):
        return 401
    if credential in NO_ROLE or credential == "user-other-id":
        return 403
    if credential == "user-own-id":
        return ALLOWED if path.startswith("/conversations/") else 403
    return ALLOWED


def _merge(route_kwargs: dict[str, Any], credential_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**route_kwargs, **credential_kwargs}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
async def test_route_auth_matrix(
    make_client: Any, rasa_spec: RasaSpec, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    client: httpx.AsyncClient = await make_client(auth=AUTH)
    seen: dict[str, int] = {}
    for credential, credential_kwargs in CREDENTIALS.items():
        response = await client.request(method, path, **_merge(kwargs, credential_kwargs))
        seen[credential] = response.status_code
        want = expected(credential, path)
        if want == ALLOWED:
            assert response.status_code not in (401, 403), (credential, response.text)
            assert response.status_code < 500, (credential, response.text)
        else:
            assert response.status_code == want, (credential, response.text)
            body = response.json()
            rasa_spec.validate(body, "/status", "get", want)
            assert body["reason"] == ("NotAuthenticated" if want == 401 else "NotAuthorized")


async def test_auth_runs_before_the_409_and_404_checks(make_client: Any) -> None:
    client: httpx.AsyncClient = await make_client(auth=AUTH, model_path=None)
    for method, path, kwargs in ROUTES:
        response = await client.request(method, path, **kwargs)
        assert response.status_code == 401, (method, path, response.text)
    admin = CREDENTIALS["admin"]
    assert (await client.get("/status", **admin)).status_code == 409
    assert (await client.get(f"/conversations/{OWNER}/story", **admin)).status_code == 409


async def test_channels_and_health_stay_open(make_client: Any) -> None:
    client: httpx.AsyncClient = await make_client(auth=AUTH)
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/version")).status_code == 200


async def test_rest_webhook_is_open_when_the_api_is_secured(make_client: Any) -> None:
    client: httpx.AsyncClient = await make_client(auth=AUTH)
    response = await client.post("/webhooks/rest/webhook", json={"sender": OWNER, "message": "hi"})
    assert response.status_code == 200
    first = response.json()[0]
    assert (first["recipient_id"], first["text"]) == (OWNER, "Hey! How are you?")
