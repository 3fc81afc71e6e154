"""Remote storage `gcs` against gcp-storage-emulator on a free local port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.errors import InvalidConfig, ModelNotFound
from server.models import ModelHolder, ModelSource
from server.models.remote_storage import check_storage_settings, download_model
from tests.fake_http import serve_json
from tests.models.conftest import gcs_at

storage = pytest.importorskip("google.cloud.storage")
emulator = pytest.importorskip("gcp_storage_emulator.server")


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="models")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    monkeypatch.setenv("BUCKET_NAME", "models")
    return storage.Client().bucket("models")


async def test_startup_loads_from_gcs(bucket, archive_factory, loader, tmp_path: Path):
    bucket.blob("prod.tar.gz").upload_from_filename(str(archive_factory("gcs")))
    holder = ModelHolder(loader)

    info = await ModelSource(holder).load_initial("prod", remote_storage="gcs")

    assert info is not None and info.source == "remote:gcs"
    assert holder.current is not None and holder.current.answer() == "gcs"


async def test_missing_blob_is_model_not_found(bucket):
    with pytest.raises(ModelNotFound, match="missing.tar.gz"):
        await download_model("gcs", "missing")


async def test_too_large_blob_is_refused(bucket):
    bucket.blob("big.tar.gz").upload_from_string(b"x" * 2048)
    with pytest.raises(Exception, match="more than 1024"):
        await download_model("gcs", "big", max_bytes=1024)


async def test_missing_credentials_are_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login either
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # nor a metadata server to ask

    with pytest.raises(InvalidConfig, match="'gcs' cannot authenticate"):
        await download_model("gcs", "prod")


@pytest.mark.parametrize("host", ["http://[::1", "not a url"], ids=["ipv6-open", "no-scheme"])
async def test_an_unusable_emulator_host_is_a_configuration_error(
    host: str, monkeypatch: pytest.MonkeyPatch
):
    # Before: requests' InvalidURL or MissingSchema escaped raw, a traceback that stopped
    # `botserver run --remote-storage gcs` and a 500 from PUT /model.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
    monkeypatch.setenv("BUCKET_NAME", "models")

    with pytest.raises(InvalidConfig, match="STORAGE_EMULATOR_HOST .* is not usable"):
        await download_model("gcs", "prod")


async def test_a_missing_bucket_is_named_as_the_bucket_not_the_model(
    bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "No model 'prod.tar.gz' in GCS bucket 'modles'", for a typo in BUCKET_NAME.
    monkeypatch.setenv("BUCKET_NAME", "modles")

    with pytest.raises(ModelNotFound) as caught:
        await download_model("gcs", "prod")

    assert str(caught.value) == (
        "GCS bucket 'modles' does not exist (BUCKET_NAME; botserver never creates buckets)"
    )


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("gs://models/prod/", "give the bucket's name alone, such as 'models'; a folder in "
         "the bucket goes into -m (-m prod/my-model)"),
        ("models/prod", "the bucket is 'models'; a folder in the bucket goes into -m "
         "(-m prod/my-model)"),
    ],
    ids=["url", "folder"],
)  # fmt: skip
async def test_a_bucket_name_that_is_a_url_or_a_path_is_a_configuration_error(
    bucket, monkeypatch: pytest.MonkeyPatch, name: str, advice: str
) -> None:
    # Before: "No model 'prod.tar.gz' in GCS bucket 'gs://models/prod/'", the bucket there.
    bucket.blob("prod/prod.tar.gz").upload_from_string(b"x")
    monkeypatch.setenv("BUCKET_NAME", name)

    with pytest.raises(InvalidConfig) as caught:
        await download_model("gcs", "prod")
    assert str(caught.value) == f"BUCKET_NAME '{name}' is no bucket name: {advice}"
    with pytest.raises(InvalidConfig, match="is no bucket name"):
        check_storage_settings("gcs")  # `botserver run` stops before it starts


async def test_refused_credentials_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GCS's answer to credentials that may not read the bucket. Before: a ModelError
    # "Cannot download ... 403 GET ...", a 500 from PUT /model that did not say what to check.
    denied = {"error": {"code": 403, "message": "robot@p.iam has no storage.objects.get"}}
    with serve_json(lambda path, body: (403, denied)) as url:
        gcs_at(url, monkeypatch)
        monkeypatch.setenv("BUCKET_NAME", "models")

        with pytest.raises(InvalidConfig) as caught:
            await download_model("gcs", "prod")

    assert str(caught.value) == (
        "GCS bucket 'models' refused to give 'prod.tar.gz' (403: robot@p.iam has no "
        "storage.objects.get): check the credentials (GOOGLE_APPLICATION_CREDENTIALS) and "
        "that they may read it (storage.objects.get)"
    )


async def test_a_missing_object_is_not_taken_for_a_missing_bucket_the_credentials_cannot_see(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Credentials that may read objects (storage.objects.get) but not the bucket's metadata
    # (storage.buckets.get, as roles/storage.objectViewer): the object's 404 stands.
    def respond(path: str, body: bytes) -> tuple[int, object]:
        if "/o/" in path:
            return 404, {"error": {"code": 404, "message": "No such object: models/prod.tar.gz"}}
        return 403, {"error": {"code": 403, "message": "robot@p.iam has no storage.buckets.get"}}

    with serve_json(respond) as url:
        gcs_at(url, monkeypatch)
        monkeypatch.setenv("BUCKET_NAME", "models")

        with pytest.raises(ModelNotFound) as caught:
            await download_model("gcs", "prod")

    assert str(caught.value) == "No model 'prod.tar.gz' in GCS bucket 'models'"


@pytest.mark.parametrize(
    ("bucket_name", "reason", "expected"),
    [
        # A name GCS never takes (here: one holding "google").
        ("my-google-models", "Invalid bucket name: 'my-google-models'",
         "BUCKET_NAME 'my-google-models' is no bucket name GCS takes (400: Invalid bucket "
         "name: 'my-google-models'): GCS's are 3 to 63 lowercase letters, digits, '-', '_' "
         "and '.' (222 with dots), without 'goog' first nor 'google'"),
        # A requester-pays bucket read without a billing project.
        ("models", "Bucket is a requester pays bucket but no user project provided.",
         "GCS bucket 'models' refused the request for 'prod.tar.gz' (400: Bucket is a "
         "requester pays bucket but no user project provided.)"),
    ],
    ids=["bucket-name", "requester-pays"],
)  # fmt: skip
async def test_a_request_gcs_refuses_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, bucket_name: str, reason: str, expected: str
) -> None:
    # GCS's 400. Before: a ModelError "Cannot download ... 400 GET ...: <reason>", a 500
    # from PUT /model, as if the storage had failed.
    refused = {"error": {"code": 400, "message": reason}}
    with serve_json(lambda path, body: (400, refused)) as url:
        gcs_at(url, monkeypatch)
        monkeypatch.setenv("BUCKET_NAME", bucket_name)

        with pytest.raises(InvalidConfig) as caught:
            await download_model("gcs", "prod")

    assert str(caught.value) == expected
