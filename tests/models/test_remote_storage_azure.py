"""Remote storage `azure` against Azurite (npm `azurite`) on a free local port.

Skipped when `azurite-blob` is not on PATH (install: `npm install -g azurite`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidConfig, ModelNotFound, ModelUnavailable
from server.models import ModelHolder, ModelSource
from server.models.remote_storage import check_storage_settings, download_model
from tests.fake_http import serve_json
from tests.models.conftest import azure_at
from tests.models.test_remote_storage_replaced import REPLACED, downloaded

blob = pytest.importorskip("azure.storage.blob")

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    if binary is None:
        pytest.skip("azurite-blob not installed (npm install -g azurite)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            binary,
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ],
        cwd=tmp_path_factory.mktemp("azurite"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("Azurite did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def container(azurite_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AZURE_CONTAINER", "models")
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_ACCOUNT_KEY", KEY)
    monkeypatch.setenv("AZURE_ACCOUNT_URL", azurite_url)
    service = blob.BlobServiceClient(
        account_url=azurite_url, credential={"account_name": ACCOUNT, "account_key": KEY}
    )
    client = service.get_container_client("models")
    if not client.exists():
        client.create_container()
    return client


async def test_startup_loads_from_azure(container, archive_factory, loader, tmp_path: Path):
    container.upload_blob("prod.tar.gz", archive_factory("azure").read_bytes(), overwrite=True)
    holder = ModelHolder(loader)

    info = await ModelSource(holder).load_initial("prod", remote_storage="azure")

    assert info is not None and info.source == "remote:azure"
    assert holder.current is not None and holder.current.answer() == "azure"


async def test_missing_blob_is_model_not_found(container):
    with pytest.raises(ModelNotFound, match="missing.tar.gz"):
        await download_model("azure", "missing")


async def test_too_large_blob_is_refused(container):
    container.upload_blob("big.tar.gz", b"x" * 2048, overwrite=True)
    with pytest.raises(Exception, match="more than 1024"):
        await download_model("azure", "big", max_bytes=1024)


@pytest.mark.parametrize("url", ["http://[::1", "ftp://127.0.0.1/devstoreaccount1", "not a url"])
async def test_an_unusable_account_url_is_a_configuration_error(url, monkeypatch):
    # No Azurite needed: the URL is refused before any request. Before, an IPv6 URL left
    # open stopped `botserver run --remote-storage azure` with a ValueError traceback (a
    # 500 from PUT /model), and the others failed later naming a host that is not one.
    monkeypatch.setenv("AZURE_CONTAINER", "models")
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_ACCOUNT_KEY", KEY)
    monkeypatch.setenv("AZURE_ACCOUNT_URL", url)
    with pytest.raises(InvalidConfig, match="AZURE_ACCOUNT_URL .* is not usable"):
        await download_model("azure", "prod")


async def test_a_missing_container_is_named_as_the_container_not_the_model(
    container, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "No model 'prod.tar.gz' in Azure container 'modles'", for a typo.
    monkeypatch.setenv("AZURE_CONTAINER", "modles")

    with pytest.raises(ModelNotFound) as caught:
        await download_model("azure", "prod")

    assert str(caught.value) == (
        f"Azure container 'modles' at {os.environ['AZURE_ACCOUNT_URL']} does not exist "
        "(AZURE_CONTAINER; botserver never creates containers)"
    )


@pytest.mark.parametrize("variable", ["AZURE_ACCOUNT_KEY", "AZURE_ACCOUNT_NAME"])
async def test_refused_credentials_are_a_configuration_error(
    container, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Before: a ModelError over two lines, "... Operation returned an invalid status 'Server
    # failed to authenticate the request. ...'\nErrorCode:AuthorizationFailure" (a 500).
    # Azurite refuses a wrong key so; Azure refuses so a server its firewall keeps out, and
    # an account that allows no shared key (a wrong key there is AuthenticationFailed).
    container.upload_blob("prod.tar.gz", b"x", overwrite=True)
    monkeypatch.setenv(variable, "A" * 86 + "==" if variable == "AZURE_ACCOUNT_KEY" else "other")

    with pytest.raises(InvalidConfig) as caught:
        await download_model("azure", "prod")

    assert str(caught.value) == (
        f"Azure storage at {os.environ['AZURE_ACCOUNT_URL']} refused the credentials of "
        f"account '{os.environ['AZURE_ACCOUNT_NAME']}' (AuthorizationFailure): check "
        "AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY, and that the account lets this server in "
        "(its firewall: networks allowed) and allows shared key access"
    )
    assert "A" * 86 not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Models", "lowercase letters, digits and '-'"),
        ("models/prod", "the container is 'models'; a folder in the container goes into -m"),
    ],
)
async def test_a_container_name_azure_refuses_is_a_configuration_error(
    container, monkeypatch: pytest.MonkeyPatch, name: str, why: str
) -> None:
    # Before: a ModelError with Azure's InvalidResourceName, after the server had started.
    monkeypatch.setenv("AZURE_CONTAINER", name)

    with pytest.raises(InvalidConfig, match=f"AZURE_CONTAINER '{name}' is no container name"):
        await download_model("azure", "prod")
    with pytest.raises(InvalidConfig, match=why):
        check_storage_settings("azure")  # `botserver run` stops before it starts


@pytest.mark.parametrize(
    "url",
    [
        f"https://{ACCOUNT}.blob.core.windows.net/models/prod/bot.tar.gz",
        # Azurite's, the account before the container. Before: "give -m
        # devstoreaccount1/models/prod/bot.tar.gz", the account and container in the key.
        f"http://127.0.0.1:10000/{ACCOUNT}/models/prod/bot.tar.gz",
    ],
    ids=["azure", "azurite"],
)
async def test_a_model_name_given_as_the_blobs_url_says_that_m_names_the_key(
    container, url: str
) -> None:
    # Before: "No model 'https://...' in Azure container 'models'", nothing more.
    with pytest.raises(ModelNotFound) as caught:
        await download_model("azure", url)

    assert str(caught.value).endswith(
        "-m names the object's key in the container (AZURE_CONTAINER), not a URL: give "
        "-m prod/bot.tar.gz"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            f"https://{ACCOUNT}.blob.core.windows.net/models?sp=r&se=2027&sig=SECRET%3D",
            f"https://{ACCOUNT}.blob.core.windows.net/models",
        ),
        (f"http://127.0.0.1:10000/{ACCOUNT}/models", f"http://127.0.0.1:10000/{ACCOUNT}/models"),
        (
            f"wasbs://models@{ACCOUNT}.blob.core.windows.net/",
            f"wasbs://{ACCOUNT}.blob.core.windows.net/",
        ),
    ],
    ids=["sas-url", "azurite", "wasbs"],
)
def test_a_container_given_as_its_url_is_named_without_the_sas_signature(
    monkeypatch: pytest.MonkeyPatch, value: str, shown: str
) -> None:
    # The portal's "Blob SAS URL" of a container, pasted as AZURE_CONTAINER. Before:
    # "... such as 'acct.blob.core.windows.net'; a folder in the container goes into -m
    # (-m models?sp=r&se=2027&sig=SECRET%3D/my-model)", the signature printed twice.
    monkeypatch.setenv("AZURE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_CONTAINER", value)

    with pytest.raises(InvalidConfig) as caught:
        check_storage_settings("azure")

    assert str(caught.value) == (
        f"AZURE_CONTAINER '{shown}' is no container name: give the container's name alone, "
        "such as 'models'"
    )


async def test_a_request_azure_refuses_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Azure's 400 (OutOfRangeInput, InvalidUri...): a request it never serves, whatever the
    # retries. Before: a ModelError "Operation returned an invalid status 'Bad Request'", a
    # 500 from PUT /model as if the storage had failed.
    with serve_json(lambda path, body: (400, None)) as url:
        azure_at(url, monkeypatch)
        monkeypatch.setenv("AZURE_ACCOUNT_KEY", KEY)

        with pytest.raises(InvalidConfig) as caught:
            await download_model("azure", "prod")

    assert str(caught.value) == (
        f"Azure container 'models' at {url}/{ACCOUNT} refused the request for 'prod.tar.gz' "
        "(400: Bad Request)"
    )


async def test_a_blobs_url_is_read_right_for_a_container_named_as_its_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Account and container both 'models': the host's name is the account, not a
    # virtual-hosted container, nor is the path's first part Azurite's account. Before:
    # "give -m models/prod/bot.tar.gz", the container in the key.
    url = "https://models.blob.core.windows.net/models/prod/bot.tar.gz"
    with serve_json(lambda path, body: (404, None)) as address:
        azure_at(address, monkeypatch)
        monkeypatch.setenv("AZURE_ACCOUNT_NAME", "models")
        monkeypatch.setenv("AZURE_ACCOUNT_KEY", KEY)

        with pytest.raises(ModelNotFound) as caught:
            await download_model("azure", url)

    assert str(caught.value).endswith("not a URL: give -m prod/bot.tar.gz"), caught.value


def _replace_azure_before_each_download(
    monkeypatch: pytest.MonkeyPatch, container: Any, times: int
) -> list[bytes]:
    """Before each of botserver's first `times` reads of the blob (after its properties sized
    it), another uploader replaces it."""
    from azure.storage.blob import BlobClient

    uploaded: list[bytes] = []
    download_blob = BlobClient.download_blob

    def replaced_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(uploaded) < times:
            uploaded.append(f"version {len(uploaded) + 2}".encode())
            container.upload_blob("prod.tar.gz", uploaded[-1], overwrite=True)
        return download_blob(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "download_blob", replaced_first)
    return uploaded


@pytest.fixture
def azure_blob(container: Any) -> Any:
    container.upload_blob("prod.tar.gz", b"version 1", overwrite=True)
    return container


async def test_azure_starts_over_once_with_the_version_that_replaced_the_one_sized(
    azure_blob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploaded = _replace_azure_before_each_download(monkeypatch, azure_blob, times=1)

    assert await downloaded("azure") == b"version 2"
    assert uploaded == [b"version 2"]


async def test_azure_blob_replaced_twice_in_a_row_is_a_clear_error(
    azure_blob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a ModelError over two lines (ConditionNotMet), a 500 from PUT /model.
    _replace_azure_before_each_download(monkeypatch, azure_blob, times=2)

    with pytest.raises(ModelUnavailable) as caught:
        await download_model("azure", "prod")

    assert str(caught.value).startswith("'prod.tar.gz' in Azure container 'models' at http")
    assert REPLACED in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_azure_blob_deleted_while_downloaded_is_no_model(
    azure_blob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deleted between the request that sized it and the read: gone, not replaced.
    from azure.storage.blob import BlobClient

    download_blob = BlobClient.download_blob

    def deleted_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        azure_blob.delete_blob("prod.tar.gz")
        return download_blob(self, *args, **kwargs)

    monkeypatch.setattr(BlobClient, "download_blob", deleted_first)

    with pytest.raises(ModelNotFound) as caught:
        await download_model("azure", "prod")

    assert str(caught.value).startswith("No model 'prod.tar.gz' in Azure container 'models'")


async def test_a_blob_is_read_in_azure_storage_blob_s_256_kib_pieces(
    container: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The download's transport is botserver's (its session is closed through public names):
    # it reads as the one azure-storage-blob makes, 256 KiB at a time, not in azure-core's
    # 4 KiB (512 reads of 2 MiB, each a pass through urllib3 and requests).
    import urllib3.response

    stored = os.urandom(2 * 1024 * 1024)
    container.upload_blob("prod.tar.gz", stored, overwrite=True)
    reads: list[int | None] = []
    read = urllib3.response.HTTPResponse.read

    def counted(self: Any, amt: int | None = None, *args: Any, **kwargs: Any) -> Any:
        reads.append(amt)
        return read(self, amt, *args, **kwargs)

    monkeypatch.setattr(urllib3.response.HTTPResponse, "read", counted)
    path = await download_model("azure", "prod")
    try:
        assert path.read_bytes() == stored
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert 8 <= len(reads) <= 16, reads


async def test_a_blob_is_read_4_mib_at_most_at_a_time(container: Any) -> None:
    # azure-storage-blob reads each range it asks for whole into memory before it gives any of
    # it, into a list it first sizes at 8 bytes a byte: its first range was 32 MiB (a list of
    # 256 MiB; the 24 MiB blob came in that one range); now 4 MiB at a time, 44 MiB at most.
    import tracemalloc

    stored = os.urandom(24 * 1024 * 1024)
    container.upload_blob("prod.tar.gz", stored, overwrite=True)
    tracemalloc.start()
    try:
        path = await download_model("azure", "prod")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert path.read_bytes() == stored
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert peak < 64 * 1024 * 1024, f"{peak / 1024**2:.1f} MiB"


@pytest.mark.parametrize(
    "size",
    [0, 1, 4 * 1024 * 1024 - 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 8 * 1024 * 1024 + 3],
    ids=["empty", "1-byte", "a-range-less-1", "one-range", "a-range-and-1", "a-short-last-range"],
)
async def test_a_blob_at_the_edges_of_a_range_downloads_whole(container: Any, size: int) -> None:
    # Each answer's length is checked against the range asked for: an empty blob (its range
    # refused, 416, then asked for whole), a blob of exactly one range, a last range shorter
    # than asked must all pass that check as the blob service answers them.
    stored = os.urandom(size)
    container.upload_blob("prod.tar.gz", stored, overwrite=True)
    path = await download_model("azure", "prod")
    try:
        assert path.read_bytes() == stored
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
