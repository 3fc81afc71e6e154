"""Remote storage settings the SDKs refuse before any request (an account key that is not
base64, an AWS profile or config file that cannot be used): one clear configuration error
naming the storage and the model, never the SDK's bare exception (a traceback at start-up, a
500 from PUT /model)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from server.errors import BotServerError, InvalidConfig, ModelError, ModelUnavailable
from server.models import ModelHolder, ModelSource
from server.models.remote_storage import check_storage_settings, download_model
from tests.models.conftest import STORAGES_AT, azure_at, greeting_loader, s3_at


@pytest.mark.parametrize("key", ["not base64!!", "abcdef", "ab"])
async def test_an_azure_account_key_that_is_not_base64_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    # Before: ModelError "Cannot download ...: Incorrect padding" (a 500 from PUT /model).
    azure_at("http://127.0.0.1:9", monkeypatch)
    monkeypatch.setenv("AZURE_ACCOUNT_KEY", key)

    with pytest.raises(InvalidConfig, match="AZURE_ACCOUNT_KEY is not base64") as caught:
        await download_model("azure", "prod")
    with pytest.raises(InvalidConfig, match="AZURE_ACCOUNT_KEY is not base64"):
        check_storage_settings("azure")  # what `botserver run` checks before it starts

    assert key not in str(caught.value)  # a secret, even a wrong one


def test_a_base64_azure_account_key_passes_the_start_up_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azure_at("http://127.0.0.1:9", monkeypatch)
    check_storage_settings("azure")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    s3_at("http://127.0.0.1:9", monkeypatch)
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    (tmp_path / "broken-config").write_text("{not an ini file")
    return monkeypatch


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("AWS_PROFILE", "nope"),  # botocore's ProfileNotFound
        ("AWS_CONFIG_FILE", "broken"),  # botocore's ConfigParseError
        ("AWS_DEFAULT_REGION", "us east 1"),  # was blamed on AWS_ENDPOINT_URL
    ],
)
async def test_an_unusable_aws_setting_is_a_configuration_error_naming_storage_and_model(
    aws: pytest.MonkeyPatch, tmp_path: Path, setting: str, value: str
) -> None:
    if value == "broken":
        value = str(tmp_path / "broken-config")
    aws.setenv(setting, value)

    with pytest.raises(InvalidConfig) as caught:
        await download_model("aws", "prod")

    message = str(caught.value)
    assert message.startswith("Remote storage 'aws' cannot be set up to download 'prod.tar.gz'")
    assert "AWS_ENDPOINT_URL" not in message


async def test_a_start_up_load_failing_in_the_sdk_logs_one_line_and_starts_without_a_model(
    aws: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: botocore's ProfileNotFound left load_initial, and the start-up, with a traceback.
    aws.setenv("AWS_PROFILE", "nope")
    holder = ModelHolder(greeting_loader)

    with caplog.at_level(logging.INFO, logger="server.models"):
        assert await ModelSource(holder).load_initial("prod", remote_storage="aws") is None

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info for r in errors] == [None]
    assert "Remote storage 'aws' cannot be set up to download 'prod.tar.gz'" in errors[0].message
    assert "The config profile (nope) could not be found" in errors[0].message
    assert holder.current is None


async def test_an_sdk_exception_nobody_foresaw_is_one_error_naming_storage_and_model(
    aws: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An SDK failing in a way none of the mappings name (here botocore, made to raise a bare
    KeyError on its first call): before, the KeyError left the download as it was (a
    traceback at start-up, a generic 500 from PUT /model)."""
    import botocore.client

    def broken(*_args: object, **_kwargs: object) -> None:
        raise KeyError("Credentials")

    aws.setattr(botocore.client.BaseClient, "_make_api_call", broken)
    holder = ModelHolder(greeting_loader)

    with caplog.at_level(logging.INFO, logger="server.models"):
        assert await ModelSource(holder).load_initial("prod", remote_storage="aws") is None

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info for r in errors] == [None]
    assert (
        "Cannot download 'prod.tar.gz' from remote storage 'aws': KeyError: 'Credentials'"
        in errors[0].message
    )


@pytest.mark.parametrize(
    ("storage", "variable"), [("aws", "AWS_ENDPOINT_URL"), ("azure", "AZURE_ACCOUNT_URL")]
)
async def test_a_storage_address_with_a_port_out_of_range_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, storage: str, variable: str
) -> None:
    # Before: ModelError (a 500 from PUT /model), "Failed to parse" or "not a valid URI",
    # the address shown without its port.
    monkeypatch.setenv("BUCKET_NAME", "models")
    (s3_at if storage == "aws" else azure_at)("http://127.0.0.1:99999", monkeypatch)

    with pytest.raises(InvalidConfig, match=f"{variable} .* is not usable"):
        await download_model(storage, "prod")


@pytest.mark.parametrize(
    "endpoint",
    [
        # botocore: "Invalid endpoint: <the address>" (client set-up).
        "http://minio:pa55@bad_host!:9000/?X-Amz-Signature=S3CRET",
        "minio:pa55@minio:9000",
        # botocore: "Custom endpoint `<the address>` was not a valid URI" (at the request).
        "https://minio:pa55@127.0.0.1:9/?X-Amz-Signature=S3CRET",
    ],
)
async def test_an_sdk_error_quoting_the_storage_address_shows_it_without_secrets(
    monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    # Before: the message (a PUT /model answer, the start-up log) quoted botocore's error,
    # which holds the address as given: password and signature included.
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "1")
    s3_at(endpoint, monkeypatch)

    with pytest.raises(BotServerError) as caught:
        await download_model("aws", "prod")

    message = str(caught.value)
    assert "pa55" not in message and "S3CRET" not in message
    assert "AWS_ENDPOINT_URL" in message or "S3 bucket 'models'" in message


async def test_credentials_that_cannot_be_fetched_are_not_blamed_on_profile_or_region(
    aws: pytest.MonkeyPatch,
) -> None:
    # botocore fetches ECS container credentials when the client is made: an endpoint that
    # does not answer was "cannot be set up ... (check AWS_PROFILE, AWS_CONFIG_FILE and
    # AWS_DEFAULT_REGION)", an InvalidConfig, though none of these is wrong.
    aws.delenv("AWS_ACCESS_KEY_ID")
    aws.delenv("AWS_SECRET_ACCESS_KEY")
    aws.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/credentials")

    with pytest.raises(ModelUnavailable) as caught:
        await download_model("aws", "prod")

    message = str(caught.value)
    assert message.startswith("Remote storage 'aws' got no credentials for 'prod.tar.gz'")
    assert "container-role" in message
    assert "AWS_PROFILE" not in message


async def test_an_sdk_exception_nobody_foresaw_shows_the_address_without_secrets(
    aws: pytest.MonkeyPatch,
) -> None:
    import botocore.client

    endpoint = "http://minio:pa55@127.0.0.1:9/?X-Amz-Signature=S3CRET"
    aws.setenv("AWS_ENDPOINT_URL", endpoint)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"no answer from {endpoint}")

    aws.setattr(botocore.client.BaseClient, "_make_api_call", broken)

    with pytest.raises(ModelError) as caught:
        await download_model("aws", "prod")

    assert "RuntimeError: no answer from http://127.0.0.1:9/" in str(caught.value)


@pytest.mark.parametrize(
    ("storage", "variable", "address"),
    [
        ("aws", "AWS_ENDPOINT_URL", "http://127.0.0.1:9000/?X-Amz-Signature=S3CRET"),
        ("aws", "AWS_ENDPOINT_URL", "ftp://127.0.0.1:9000"),
        ("azure", "AZURE_ACCOUNT_URL", "ftp://127.0.0.1:10000/devstoreaccount1"),
        ("azure", "AZURE_ACCOUNT_URL", "http://127.0.0.1:99999/devstoreaccount1"),
    ],
)
def test_botserver_run_refuses_a_storage_address_no_request_could_use(
    monkeypatch: pytest.MonkeyPatch, storage: str, variable: str, address: str
) -> None:
    # What `botserver run --remote-storage` checks before it starts (exit code 1): before,
    # it started and its first download failed.
    monkeypatch.setenv(variable, address)

    with pytest.raises(InvalidConfig, match=f"{variable} '.*' is not usable") as caught:
        check_storage_settings(storage)
    assert "S3CRET" not in str(caught.value)


@pytest.mark.parametrize("address", ["http://minio_1:9000", "http://mínio:9000"])
def test_botserver_run_refuses_an_s3_endpoint_botocore_refuses(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    # A host botocore takes for no endpoint (a Compose v1 name with '_', a non-ASCII name):
    # before, the check let it by and the server started without a model, its first download
    # failing with "Invalid endpoint".
    pytest.importorskip("botocore")
    monkeypatch.setenv("AWS_ENDPOINT_URL", address)

    with pytest.raises(InvalidConfig, match="AWS_ENDPOINT_URL '.*' is not usable"):
        check_storage_settings("aws")


@pytest.mark.parametrize(
    "address",
    [
        "http://minio:9000",
        "http://minio:9000/",
        "http://localhost:4566",
        "https://0123abcd.r2.cloudflarestorage.com",
        "https://s3.eu-central-1.amazonaws.com/prefix/",
        "http://[::1]:9000",
    ],
)
def test_the_s3_endpoints_people_use_pass_the_check(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", address)
    check_storage_settings("aws")


@pytest.mark.parametrize(
    ("storage", "name", "why"),
    [
        # Azure counts UTF-16 code units: 509 emoji and '.tar.gz' are 1,025.
        ("azure", "\N{GRINNING FACE}" * 509, "Azure takes blob names of at most 1024 "
         "characters ('.tar.gz' included); this one has 1025"),
        ("azure", "a/" * 254 + "m", "Azure takes blob names of at most 254 '/'-separated "
         "parts; this one has 255"),
        # S3 and GCS count UTF-8 bytes: 509 'é' and '.tar.gz' are 1,025.
        ("aws", "\N{LATIN SMALL LETTER E WITH ACUTE}" * 509, "S3 takes object keys of at "
         "most 1024 bytes in UTF-8 ('.tar.gz' included); this one has 1025"),
        ("gcs", "m" * 1018, "GCS takes object names of at most 1024 bytes in UTF-8 "
         "('.tar.gz' included); this one has 1025"),
    ],
    ids=["azure-length", "azure-parts", "aws-length", "gcs-length"],
)  # fmt: skip
async def test_a_model_name_longer_than_the_storage_takes_names_the_limit(
    monkeypatch: pytest.MonkeyPatch, storage: str, name: str, why: str
) -> None:
    # Azure answers such a name 400 OutOfRangeInput, S3 KeyTooLongError: before, a
    # ModelError with the SDK's words (a 500 from PUT /model, naming no limit); against
    # Azurite, which takes any length, "No model ...". Refused before any request.
    monkeypatch.setenv("BUCKET_NAME", "models")
    STORAGES_AT[storage]("http://127.0.0.1:9", monkeypatch)

    with pytest.raises(InvalidConfig) as caught:
        await download_model(storage, name)

    message = str(caught.value)
    assert message.startswith(f"Remote model name '{name[:40]}...' is too long: "), message
    assert message.endswith(why)
    assert len(message) < 300  # the name is not printed whole


@pytest.mark.parametrize(
    ("storage", "module", "package"),
    [
        ("aws", "boto3", "boto3"),
        ("gcs", "google.cloud", "google-cloud-storage"),
        ("azure", "azure.storage.blob", "azure-storage-blob"),
    ],
)
async def test_a_missing_client_library_says_which_extra_installs_it(
    monkeypatch: pytest.MonkeyPatch, storage: str, module: str, package: str
) -> None:
    # Before, each storage had its own wording, and GCS and Azure named a bare package
    # rather than the extra, which pins the version botserver is tested with.
    monkeypatch.setitem(sys.modules, module, None)  # its import fails, as when not installed

    with pytest.raises(InvalidConfig) as caught:
        await download_model(storage, "prod")

    assert str(caught.value) == (
        f"Remote storage '{storage}' needs {package}: pip install 'botserver[{storage}]'"
    )
