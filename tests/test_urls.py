"""`safe_url`: an address as errors and the log show it (endpoints, remote storage): no
user, password, query or fragment; an IPv6 host keeps its brackets."""

from __future__ import annotations

import pytest

from server.dialogue.http_endpoint import HttpEndpoint
from server.errors import InvalidConfig, ModelUnavailable
from server.models.model_server import ModelServerConfig
from server.models.remote_storage import download_model
from server.setting_values import http_url
from server.urls import safe_url
from tests.models.conftest import s3_at


@pytest.mark.parametrize("tolerant", [False, True])
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pa55@[::1]:8080/x?token=t#f", "http://[::1]:8080/x"),
        ("https://[2001:db8::1]/models", "https://[2001:db8::1]/models"),
        ("http://bot:pa55@Example.com:5055/webhook?token=t", "http://example.com:5055/webhook"),
    ],
)
def test_the_address_keeps_host_port_and_path_only(url: str, shown: str, tolerant: bool) -> None:
    # Before: http://[::1]:8080/x was shown as http://::1:8080/x, no address at all.
    assert safe_url(url, tolerant=tolerant) == shown


def test_a_port_that_is_no_port_raises_unless_tolerant() -> None:
    with pytest.raises(ValueError):
        safe_url("http://host:99999/x")
    # The port out of range is what the error is about: shown as written (before: left out,
    # "endpoint url 'http://host/x' is not a URL: Port out of range 0-65535").
    assert safe_url("http://u:pa55@host:99999/x?sig=S3CRET", tolerant=True) == "http://host:99999/x"
    assert safe_url("http://u:pa55@host:abc/x", tolerant=True) == "http://host/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Without a scheme there is no netloc: before, shown whole, password included.
        ("bot:pa55@actions:5055/webhook?token=S3CRET", "actions:5055/webhook"),
        ("bot@actions/webhook", "actions/webhook"),
        ("bot:pa55@actions:5055/a//webhook", "actions:5055/a//webhook"),
        ("http:///webhook", "http:///webhook"),
        # A password holding a '#', '?' or '/': before, "bot:s3cr" or the whole address.
        ("bot:s3cr#et@actions:5055/webhook", "actions:5055/webhook"),
        ("bot:s3cr?et@actions:5055/webhook", "actions:5055/webhook"),
        ("bot:s3/cr@actions:5055/webhook", "actions:5055/webhook"),
    ],
)
def test_an_address_without_scheme_is_shown_without_its_user_and_password(
    url: str, shown: str
) -> None:
    assert safe_url(url) == shown
    assert safe_url(url, tolerant=True) == shown


def test_an_endpoint_without_scheme_is_refused_without_its_password() -> None:
    with pytest.raises(InvalidConfig, match="must start with http") as caught:
        HttpEndpoint("bot:pa55@actions:5055/webhook")
    assert "pa55" not in str(caught.value)
    assert "actions:5055/webhook" in str(caught.value)


def test_a_tolerant_address_of_no_url_still_hides_credentials_and_query() -> None:
    shown = safe_url("http://u:pa55@[::1/x?sig=S3CRET", tolerant=True)
    assert "pa55" not in shown and "S3CRET" not in shown
    # A password holding an '@' (not percent-encoded): all of it hidden (before: "pa@55"
    # showed "55@[::1/x").
    assert safe_url("http://u:pa@55@[::1/x", tolerant=True) == "http://[::1/x"


def test_an_endpoint_with_a_bad_port_is_a_configuration_error_without_its_password() -> None:
    with pytest.raises(InvalidConfig, match="is not a URL") as caught:
        HttpEndpoint("http://bot:pa55@localhost:99999/webhook")
    assert "pa55" not in str(caught.value)
    assert "localhost:99999" in str(caught.value)  # the port the error is about


async def test_a_storage_at_an_ipv6_address_is_named_with_its_brackets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "1")
    s3_at("http://[::1]:9", monkeypatch)

    with pytest.raises(ModelUnavailable) as caught:
        await download_model("aws", "prod")

    assert "S3 bucket 'models' at http://[::1]:9 " in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://bot:pa55@ex\uff0fample.com/x",  # a full-width '/' in the host
        "http://bot:pa55\uff20actions:5055/webhook",  # a full-width '@', as an IME types it
    ],
)
def test_an_address_with_full_width_characters_is_refused_without_its_password(
    url: str,
) -> None:
    # Python refuses a host holding what NFKC reads as '/', '?', '#', '@' or ':', quoting
    # the whole netloc: before, the error showed user and password.
    with pytest.raises(InvalidConfig, match="is not a URL") as caught:
        HttpEndpoint(url)
    assert "pa55" not in str(caught.value)
    assert "pa55" not in safe_url(url, tolerant=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://bot:s3cr#et@actions:5055/webhook",  # a password holding a '#'
        "http://bot:s3cr?et@actions:5055/webhook",  # or a '?', not percent-encoded
    ],
)
def test_a_password_read_as_a_port_is_not_quoted_by_the_error(url: str) -> None:
    # urlsplit ends the host at the '#' or '?' and reads the password's start as a port:
    # its error quoted it ("Port could not be cast to integer value as 's3cr'").
    with pytest.raises(InvalidConfig, match="is not a URL") as caught:
        HttpEndpoint(url)
    assert "s3cr" not in str(caught.value)
    with pytest.raises(InvalidConfig) as refused:
        http_url({"url": url}, "url")
    assert "s3cr" not in str(refused.value)


def test_a_port_that_is_no_number_is_quoted_when_no_password_can_be_there() -> None:
    with pytest.raises(InvalidConfig, match="5055x"):
        HttpEndpoint("http://actions:5055x/webhook")


def test_a_numeric_password_read_as_a_port_is_not_shown() -> None:
    assert safe_url("http://bot:12345678#1@actions:5055/webhook", tolerant=True) == "http://bot"


@pytest.mark.parametrize("tolerant", [False, True])
def test_a_fragment_holding_an_at_sign_is_not_shown(tolerant: bool) -> None:
    # A password holding a '#', not percent-encoded: httpx connects to `bot:1234`, what
    # follows the '#' is a fragment, never sent. Shown: the host connected to, no fragment.
    import httpx

    url = "http://bot:1234#x@host/"
    connected = httpx.URL(url)
    assert safe_url(url, tolerant=tolerant) == f"http://{connected.host}:{connected.port}"


@pytest.mark.parametrize(
    "url",
    ["http://bot:pa/SECRET@actions:5055/webhook", "http://bot:pa/SE?CRET@actions:5055/webhook"],
)
def test_a_password_holding_a_slash_is_not_shown_as_a_path(url: str) -> None:
    # urlsplit ends the host at the '/', reads "pa" as a port (left out: no number) and the
    # password's rest as the path: shown before, "http://bot/SECRET@actions:5055/webhook" (in
    # PUT /model's 400, the AWS_ENDPOINT_URL or AZURE_ACCOUNT_URL error). No URL httpx would
    # request: the path, maybe a password's rest, is not shown.
    assert safe_url(url, tolerant=True) == "http://bot"
    with pytest.raises(InvalidConfig) as refused:
        ModelServerConfig.from_endpoint({"url": url})
    assert "SE" not in str(refused.value)
