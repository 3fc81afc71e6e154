"""Remote storage `aws` against moto's real S3 server on a free local port."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from shutil import rmtree
from typing import Any

import pytest

from bench.tcp_proxy import free_port
from server.errors import (
    BotServerError,
    CorruptArchive,
    InvalidConfig,
    ModelError,
    ModelNotFound,
    ModelStorageFull,
    ModelUnavailable,
)
from server.models import ModelHolder, ModelSource
from server.models.remote_storage import check_storage_settings, download_model, object_name
from tests.fake_http import serve_handler, serve_json
from tests.models.conftest import greeting_loader, s3_at
from tests.models.test_remote_storage_replaced import REPLACED, downloaded
from tests.small_disk import temp_files_on_a_small_disk
from tests.trackers.persistence_fixtures import botocore_files_read

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("BUCKET_NAME", "models-bucket")
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="models-bucket")
    return client


def test_object_name_adds_the_suffix_like_rasa():
    assert object_name("mybot") == "mybot.tar.gz"
    assert object_name("mybot.tar.gz") == "mybot.tar.gz"


async def test_startup_loads_from_s3_without_touching_the_cwd(
    s3_env, archive_factory, loader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    s3_env.put_object(
        Bucket="models-bucket", Key="prod.tar.gz", Body=archive_factory("s3").read_bytes()
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    holder = ModelHolder(loader)

    info = await ModelSource(holder).load_initial("prod", remote_storage="aws")

    assert info is not None and info.source == "remote:aws"
    assert info.model_file == "prod.tar.gz"
    assert holder.current is not None and holder.current.answer() == "s3"
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "model_file"),
    [
        ("dir/" + "m" * 300, "m" * 300 + ".tar.gz"),  # a key part no file name can hold
        ("odd\x00key", "odd\x00key.tar.gz"),
        ("../up/over", "over.tar.gz"),
    ],
    ids=["long-part", "nul", "dot-dot"],
)
async def test_odd_object_keys_load(
    s3_env, archive_factory, loader, name: str, model_file: str
) -> None:
    s3_env.put_object(
        Bucket="models-bucket", Key=name + ".tar.gz", Body=archive_factory("odd").read_bytes()
    )
    holder = ModelHolder(loader)

    info = await ModelSource(holder).load_from_remote_storage("aws", name)

    assert info.model_file == model_file
    assert holder.current is not None and holder.current.answer() == "odd"


async def test_a_broken_object_is_named_by_its_key(s3_env, loader) -> None:
    # Before, every remote model was 'model.tar.gz' in the error, in /status and in the log,
    # whatever the key: `Model archive 'model.tar.gz' is corrupt` for prod/broken.
    s3_env.put_object(Bucket="models-bucket", Key="prod/broken.tar.gz", Body=b"<html>")
    holder = ModelHolder(loader)

    with pytest.raises(CorruptArchive, match="Model archive 'broken.tar.gz' is corrupt"):
        await ModelSource(holder).load_from_remote_storage("aws", "prod/broken")

    assert (holder.last_error or "").startswith("broken.tar.gz: ")


@pytest.mark.parametrize("name", ["\ud800x", "prod/\udcffx"], ids=["json-escape", "argv-bytes"])
async def test_a_name_that_is_not_utf8_is_a_configuration_error(s3_env, name: str) -> None:
    # Before: a raw UnicodeEncodeError, a 500 from PUT /model and a traceback at startup.
    with pytest.raises(InvalidConfig, match="is not UTF-8 text"):
        await download_model("aws", name)
    holder = ModelHolder(greeting_loader)
    assert await ModelSource(holder).load_initial(name, remote_storage="aws") is None
    # /status sends it as JSON: it must be text UTF-8 can carry (a 500 otherwise).
    assert "is not UTF-8 text" in (holder.last_error or "")
    (holder.last_error or "").encode("utf-8")


async def test_a_failed_download_at_startup_shows_in_the_status(s3_env, loader) -> None:
    # Before, /status answered 409 with empty details: the reason was only in the log.
    holder = ModelHolder(loader)

    assert await ModelSource(holder).load_initial("prod/nope", remote_storage="aws") is None

    assert (
        holder.last_error == "nope.tar.gz: No model 'prod/nope.tar.gz' in S3 bucket 'models-bucket'"
    )
    assert holder.last_error_at is not None


async def test_missing_object_is_model_not_found(s3_env):
    with pytest.raises(ModelNotFound, match="nothing.tar.gz"):
        await download_model("aws", "nothing")


@pytest.mark.parametrize("name", ["models", "prod/"], ids=["rasa-default", "prefix"])
async def test_a_missing_default_or_prefix_says_what_m_names(s3_env, name: str) -> None:
    # Before: only "No model 'models.tar.gz' in S3 bucket ...", for a user who gave no -m
    # or gave the folder that holds the models.
    with pytest.raises(ModelNotFound, match="-m names one object, its key"):
        await download_model("aws", name)


async def test_download_goes_to_a_private_temp_dir(s3_env, archive_factory):
    s3_env.put_object(Bucket="models-bucket", Key="a.tar.gz", Body=b"bytes")
    path = await download_model("aws", "a.tar.gz")
    try:
        assert path.read_bytes() == b"bytes"
        assert path.parent.name.startswith("botserver-remote-")
        assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"
    finally:
        path.unlink()
        path.parent.rmdir()


async def test_a_download_reads_no_botocore_model_file_the_process_read_before(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each download (the start's, each PUT /model) made a botocore session that read
    and parsed the S3 model, the endpoint rules and the partitions again: about 0.1 s of CPU.
    Now the process reads them once; the loader's folders do not grow a download."""
    from server.aws_sessions import boto3_session

    s3_env.put_object(Bucket="models-bucket", Key="prod.tar.gz", Body=b"bytes")
    assert await downloaded("aws") == b"bytes"
    folders = list(boto3_session()._session.get_component("data_loader").search_paths)
    read = botocore_files_read(monkeypatch)

    assert await downloaded("aws") == b"bytes"
    assert await downloaded("aws") == b"bytes"

    assert read == []
    assert boto3_session()._session.get_component("data_loader").search_paths == folders


async def test_too_large_object_is_refused(s3_env):
    s3_env.put_object(Bucket="models-bucket", Key="big.tar.gz", Body=b"x" * 2048)
    with pytest.raises(Exception, match="more than 1024"):
        await download_model("aws", "big", max_bytes=1024)


async def test_an_unusable_endpoint_url_is_a_configuration_error(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(InvalidConfig, match="AWS_ENDPOINT_URL 'not a url' is not usable"):
        await download_model("aws", "m")


@pytest.mark.parametrize(
    "written",
    [
        "{endpoint}/?X-Amz-Signature=S3CRET",  # a query: botocore's "not a valid URI"
        "{endpoint}?versionId=1",
        "ftp://127.0.0.1:{port}",  # no http(s)
    ],
)
async def test_an_endpoint_url_botocore_rejects_at_the_request_is_a_configuration_error(
    s3_env: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    # Before: a ModelError ("Custom endpoint `...` was not a valid URI", a 500 from PUT
    # /model) for an address the user must fix, while the running moto server is fine.
    port = s3_endpoint.rpartition(":")[2]
    monkeypatch.setenv("AWS_ENDPOINT_URL", written.format(endpoint=s3_endpoint, port=port))

    with pytest.raises(InvalidConfig, match="AWS_ENDPOINT_URL '.*' is not usable") as caught:
        await download_model("aws", "m")
    assert "S3CRET" not in str(caught.value)


async def test_unknown_storage_and_missing_bucket_env(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(InvalidConfig, match="never import code"):
        await download_model("my_company.persistor.Custom", "m")
    monkeypatch.delenv("BUCKET_NAME", raising=False)
    with pytest.raises(InvalidConfig, match="BUCKET_NAME"):
        await download_model("aws", "m")


async def test_a_download_on_a_full_disk_is_the_servers_problem(
    s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env.put_object(Bucket="models-bucket", Key="big.tar.gz", Body=os.urandom(256 * 1024))
    with temp_files_on_a_small_disk(tmp_path, monkeypatch) as disk:
        with pytest.raises(ModelStorageFull, match="no space left on the server"):
            await download_model("aws", "big")
        assert os.listdir(disk) == []


@pytest.mark.parametrize("name", ["prod", "models", "prod/"], ids=["name", "default", "prefix"])
async def test_a_missing_bucket_is_named_as_the_bucket_not_the_model(
    s3_env, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Before: "No model 'prod.tar.gz' in S3 bucket 'modles'", for a typo in BUCKET_NAME
    # (and for -m's default, advice on what -m names).
    monkeypatch.setenv("BUCKET_NAME", "modles")

    with pytest.raises(ModelNotFound) as caught:
        await download_model("aws", name)

    assert re.fullmatch(
        r"S3 bucket 'modles' at http://127\.0\.0\.1:\d+ does not exist "
        r"\(BUCKET_NAME; botserver never creates buckets\)",
        str(caught.value),
    )


@pytest.mark.parametrize(
    ("bucket", "advice"),
    [
        ("s3://models-bucket", "give the bucket's name alone, such as 'models-bucket'"),
        ("models-bucket/prod", "a folder in the bucket goes into -m (-m prod/my-model)"),
        ("/models-bucket", "no bucket name: the bucket is 'models-bucket'"),  # was: is ''
        ("models bucket", "S3 takes letters, digits, '.', '-' and '_', or an access point's ARN"),
    ],
    ids=["url", "folder", "leading-slash", "space"],
)
async def test_a_bucket_name_that_is_a_url_or_a_path_is_a_configuration_error(
    s3_env, monkeypatch: pytest.MonkeyPatch, bucket: str, advice: str
) -> None:
    # Before: a ModelError quoting botocore's regexes (a 500 from PUT /model), after the
    # server had started without a model.
    monkeypatch.setenv("BUCKET_NAME", bucket)

    with pytest.raises(InvalidConfig, match=f"BUCKET_NAME '{bucket}' is no bucket name") as caught:
        await download_model("aws", "prod")
    assert advice in str(caught.value)
    with pytest.raises(InvalidConfig, match=f"BUCKET_NAME '{bucket}' is no bucket name"):
        check_storage_settings("aws")  # `botserver run` stops before it starts


@pytest.mark.parametrize(
    ("bucket", "shown"),
    [
        (
            "https://models-bucket.s3.us-east-1.amazonaws.com/prod?X-Amz-Security-Token=SECRET",
            "https://models-bucket.s3.us-east-1.amazonaws.com/prod",
        ),
        (
            "https://s3.amazonaws.com/models-bucket/prod/",
            "https://s3.amazonaws.com/models-bucket/prod/",
        ),
        ("http://minio:9000/models-bucket/prod", "http://minio:9000/models-bucket/prod"),
    ],
    ids=["virtual-hosted-presigned", "path-style", "minio"],
)
def test_a_bucket_given_as_its_https_url_is_named_without_the_urls_secrets(
    monkeypatch: pytest.MonkeyPatch, bucket: str, shown: str
) -> None:
    # Before: "... such as 'models-bucket.s3.us-east-1.amazonaws.com'; a folder in the
    # bucket goes into -m (-m prod?X-Amz-Security-Token=SECRET/my-model)", the session
    # token printed twice; for path-style, "such as 's3.amazonaws.com'".
    monkeypatch.setenv("BUCKET_NAME", bucket)

    with pytest.raises(InvalidConfig) as caught:
        check_storage_settings("aws")

    assert str(caught.value) == (
        f"BUCKET_NAME '{shown}' is no bucket name: give the bucket's name alone, such as "
        "'models-bucket'; a folder in the bucket goes into -m (-m prod/my-model)"
    )


def test_an_access_point_arn_passes_the_bucket_name_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUCKET_NAME", "arn:aws:s3:us-east-1:123456789012:accesspoint/models")
    check_storage_settings("aws")


async def test_missing_credentials_are_a_configuration_error(
    s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a ModelError "Cannot download ...: Unable to locate credentials" (a 500).
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(InvalidConfig, match="Remote storage 'aws' found no credentials"):
        await download_model("aws", "prod")


async def _refused_by_a_fake_s3(
    monkeypatch: pytest.MonkeyPatch, code: str, message: str, status: int = 400
) -> tuple[str, BaseException]:
    """The storage's URL and the download's error when S3 answers a HEAD `status` with no
    body and a GET `status` with `code` and `message` (as S3 and MinIO answer)."""
    refusal = (
        '<?xml version="1.0" encoding="UTF-8"?><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    with serve_json(lambda path, body: (status, refusal)) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        with pytest.raises(BotServerError) as caught:
            await download_model("aws", "prod")
    return url, caught.value


@pytest.mark.parametrize("bucket_status", [403, 400, 405])
async def test_a_missing_object_is_not_taken_for_a_missing_bucket_unless_s3_says_so(
    s3_env, monkeypatch: pytest.MonkeyPatch, bucket_status: int
) -> None:
    # Credentials that may list the bucket's objects (a missing one's HEAD is a 404) but not
    # HEAD the bucket (403), or a storage that does not answer HeadBucket: the 404 stands.
    answers = {"/models-bucket/prod.tar.gz": 404, "/models-bucket": bucket_status}
    with serve_json(lambda path, body: (answers.get(path, 500), None)) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)

        with pytest.raises(ModelNotFound) as caught:
            await download_model("aws", "prod")

    assert str(caught.value) == "No model 'prod.tar.gz' in S3 bucket 'models-bucket'"


async def test_refused_credentials_are_a_configuration_error(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks signatures once its no-auth allowance is spent: the keys 'testing' are
    # no IAM user's. Before: a ModelError "... (403) when calling the HeadObject operation:
    # Forbidden", a 500 from PUT /model that did not say what to check; then "(403): check
    # the credentials ... and that they may read it", for keys that are no keys at all.
    monkeypatch.setattr("moto.settings.INITIAL_NO_AUTH_ACTION_COUNT", 0)

    with pytest.raises(InvalidConfig) as caught:
        await download_model("aws", "prod")

    assert re.fullmatch(
        r"S3 bucket 'models-bucket' at http://127\.0\.0\.1:\d+ refused the credentials for "
        r"'prod\.tar\.gz' \(InvalidAccessKeyId\): check AWS_ACCESS_KEY_ID and "
        r"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        str(caught.value),
    )


async def test_access_denied_says_what_the_credentials_may_need(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, error = await _refused_by_a_fake_s3(monkeypatch, "AccessDenied", "Access Denied", 403)

    assert isinstance(error, InvalidConfig) and str(error) == (
        f"S3 bucket 'models-bucket' at {url} refused to give 'prod.tar.gz' (AccessDenied): "
        "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and "
        "that they may read it (s3:GetObject; without s3:ListBucket S3 answers so for a "
        "missing object too)"
    )


async def test_a_clock_that_is_off_is_not_taken_for_refused_credentials(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 answers a HEAD signed by a clock 15 minutes off 403, with no body. Before: "check
    # the credentials", a 400 from PUT /model, for the server's clock.
    _, error = await _refused_by_a_fake_s3(
        monkeypatch,
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
        403,
    )

    assert isinstance(error, ModelError) and not isinstance(error, InvalidConfig)
    assert str(error).endswith(
        "(RequestTimeTooSkewed) when calling the GetObject operation: The difference between "
        "the request time and the current time is too large."
    )


@pytest.mark.parametrize(
    "url",
    [
        "s3://models-bucket/prod/bot.tar.gz",
        # Path-style and presigned (before: "give -m models-bucket/prod/bot.tar.gz", and
        # "give -m prod/bot.tar.gz?X-Amz-Signature=...#top": neither is the key).
        "https://s3.us-east-1.amazonaws.com/models-bucket/prod/bot.tar.gz",
        "https://models-bucket.s3.amazonaws.com/prod/bot.tar.gz?X-Amz-Signature=0a1b#top",
    ],
    ids=["s3", "path-style", "presigned"],
)
async def test_a_model_name_given_as_a_url_says_that_m_names_the_key(
    s3_env, archive_factory, url: str
) -> None:
    # Before: "No model 's3://models-bucket/prod/bot.tar.gz' in S3 bucket 'models-bucket'",
    # with the object there under 'prod/bot.tar.gz'.
    s3_env.put_object(Bucket="models-bucket", Key="prod/bot.tar.gz", Body=b"x")

    with pytest.raises(ModelNotFound) as caught:
        await download_model("aws", url)

    assert str(caught.value).endswith(
        "in S3 bucket 'models-bucket'. -m names the object's key in the bucket (BUCKET_NAME), "
        "not a URL: give -m prod/bot.tar.gz"
    )


async def test_an_expired_session_token_is_a_configuration_error(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 answers a HEAD signed with an expired session token 400, with no body to name it.
    # Before: a ModelError "... An error occurred (400) when calling the HeadObject
    # operation: Bad Request", a 500 from PUT /model.
    with serve_json(lambda path, body: (400, None)) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_SESSION_TOKEN", "expired")

        with pytest.raises(InvalidConfig) as caught:
            await download_model("aws", "prod")

    assert str(caught.value) == (
        f"S3 bucket 'models-bucket' at {url} refused the credentials for 'prod.tar.gz' (400): "
        "a session token (AWS_SESSION_TOKEN, or a role's) that expired or is not valid: "
        "renew the credentials"
    )


async def test_a_bucket_name_the_storage_refuses_is_named_not_taken_for_a_session_token(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MinIO (and S3 for a name it never takes) answers a HEAD on 'Models' 400 with no
    # body; a GET's body names why. Before: "refused the credentials ... a session token
    # that expired or is not valid: renew the credentials", with no session token at all.
    monkeypatch.setenv("BUCKET_NAME", "Models")

    url, error = await _refused_by_a_fake_s3(
        monkeypatch, "InvalidBucketName", "The specified bucket is not valid."
    )

    assert isinstance(error, InvalidConfig) and str(error) == (
        f"BUCKET_NAME 'Models' is no bucket name the storage at {url} takes "
        "(InvalidBucketName: The specified bucket is not valid.): S3's are 3 to 63 lowercase "
        "letters, digits, '.' and '-'"
    )


async def test_an_object_a_head_cannot_read_says_why_as_a_get_is_told(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An object encrypted with a customer's key (SSE-C): S3 answers a HEAD without the key
    # 400, with no body. Before: taken for an expired session token (renew the credentials);
    # then a ModelError with S3's words, a 500 from PUT /model, where GCS's and Azure's 400s
    # are a request the storage refuses (a 400): no retry, nor a fix of botserver's, serves it.
    url, error = await _refused_by_a_fake_s3(
        monkeypatch,
        "InvalidRequest",
        "The object was stored using a form of Server Side Encryption.",
    )

    assert isinstance(error, InvalidConfig) and str(error) == (
        f"S3 bucket 'models-bucket' at {url} refused the request for 'prod.tar.gz' "
        "(InvalidRequest: The object was stored using a form of Server Side Encryption.)"
    )


async def test_a_region_the_storage_refuses_is_a_configuration_error_naming_the_region_setting(
    s3_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MinIO set to a region of its own, AWS_DEFAULT_REGION another: it refuses the signature's
    # region (botocore follows AWS's own answer, not an endpoint's). Before: a ModelError with
    # S3's words, a 500 from PUT /model.
    url, error = await _refused_by_a_fake_s3(
        monkeypatch,
        "AuthorizationHeaderMalformed",
        "The authorization header is malformed; the region 'us-east-1' is wrong; expecting "
        "'eu-west-1'",
    )

    assert isinstance(error, InvalidConfig) and str(error) == (
        f"S3 bucket 'models-bucket' at {url} refused the region the request was signed for "
        "(AuthorizationHeaderMalformed: The authorization header is malformed; the region "
        "'us-east-1' is wrong; expecting 'eu-west-1'): set AWS_DEFAULT_REGION to the storage's"
    )


class StorageWithoutChecksums(BaseHTTPRequestHandler):
    """An S3-compatible storage older than S3's checksums: its GET refuses boto3's
    `x-amz-checksum-mode` (asked for since boto3 1.36) with a 501 NotImplemented, in MinIO's
    words."""

    protocol_version = "HTTP/1.1"
    stored = b"an archive"

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.stored)))
        self.send_header("ETag", '"e1"')
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        status, body = 200, self.stored
        if "x-amz-checksum-mode" in self.headers:
            status, body = (
                501,
                (
                    b"<Error><Code>NotImplemented</Code><Message>A header you provided implies "
                    b"functionality that is not implemented</Message></Error>"
                ),
            )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"e1"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class StorageWithAWrongChecksum(StorageWithoutChecksums):
    """Sends the object with a CRC32 that is not its own (bytes changed on the way, or in
    the storage)."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.stored)))
        self.send_header("ETag", '"e1"')
        self.send_header("x-amz-checksum-crc32", "AAAAAA==")
        self.end_headers()
        self.wfile.write(self.stored)


@pytest.fixture
def storage_without_checksums(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with _serve_s3(StorageWithoutChecksums, monkeypatch) as url:
        yield url


@contextmanager
def _serve_s3(
    handler: type[BaseHTTPRequestHandler], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("BUCKET_NAME", "models")
    with serve_handler(handler) as url:
        s3_at(url, monkeypatch)
        yield url


async def test_a_storage_refusing_checksums_names_the_setting_that_turns_them_off(
    storage_without_checksums: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "S3 bucket 'models' at ... failed to answer for 'prod.tar.gz' (501: A header
    # you provided implies ...); each request tried 2 times at most": an outage, for a
    # feature the storage lacks.
    with pytest.raises(InvalidConfig) as caught:
        await download_model("aws", "prod")

    assert str(caught.value).startswith(
        f"S3 bucket 'models' at {storage_without_checksums} does not implement a request "
        "botserver made for 'prod.tar.gz' (501: GetObject: NotImplemented: A header you "
        "provided implies functionality that is not implemented); this is a refusal, not an "
        "outage"
    )
    assert "set AWS_RESPONSE_CHECKSUM_VALIDATION=when_required" in str(caught.value)

    monkeypatch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")  # as it says
    path = await download_model("aws", "prod")
    try:
        assert path.read_bytes() == StorageWithoutChecksums.stored
    finally:
        rmtree(path.parent, ignore_errors=True)


def _replace_s3_before_each_get(
    monkeypatch: pytest.MonkeyPatch, client: Any, times: int
) -> list[bytes]:
    """Before each of botserver's first `times` GETs of the object (after its HEAD sized it),
    another uploader replaces it: version 2, 3... Returns the versions uploaded."""
    import botocore.session

    uploaded: list[bytes] = []
    get_session = botocore.session.get_session

    def replace(**_: Any) -> None:
        if len(uploaded) < times:
            uploaded.append(f"version {len(uploaded) + 2}".encode())
            client.put_object(Bucket="models-bucket", Key="prod.tar.gz", Body=uploaded[-1])

    def hooked() -> Any:
        session = get_session()
        session.register("before-send.s3.GetObject", replace)
        return session

    monkeypatch.setattr(botocore.session, "get_session", hooked)
    return uploaded


async def test_s3_starts_over_once_with_the_version_that_replaced_the_one_sized(
    s3_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a ModelError with botocore's words (PreconditionFailed), a 500 from PUT /model.
    s3_env.put_object(Bucket="models-bucket", Key="prod.tar.gz", Body=b"version 1")
    uploaded = _replace_s3_before_each_get(monkeypatch, s3_env, times=1)

    assert await downloaded("aws") == b"version 2"
    assert uploaded == [b"version 2"]


async def test_s3_object_replaced_twice_in_a_row_is_a_clear_error(
    s3_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env.put_object(Bucket="models-bucket", Key="prod.tar.gz", Body=b"version 1")
    _replace_s3_before_each_get(monkeypatch, s3_env, times=2)

    with pytest.raises(ModelUnavailable) as caught:
        await download_model("aws", "prod")

    assert str(caught.value).startswith("'prod.tar.gz' in S3 bucket 'models-bucket' at http")
    assert REPLACED in str(caught.value)


async def test_startup_with_an_object_replaced_twice_logs_one_clear_line(
    s3_env: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: "Could not load a model at startup: Cannot download 'prod.tar.gz' from S3
    # bucket ...: An error occurred (PreconditionFailed) when calling the GetObject operation:
    # At least one of the pre-conditions you specified did not hold".
    s3_env.put_object(Bucket="models-bucket", Key="prod.tar.gz", Body=b"version 1")
    _replace_s3_before_each_get(monkeypatch, s3_env, times=2)
    holder = ModelHolder(greeting_loader)
    caplog.set_level(logging.INFO, logger="server.models")

    assert await ModelSource(holder).load_initial("prod", remote_storage="aws") is None

    ours = [r for r in caplog.records if r.name.startswith("server.")]
    errors = [r.getMessage() for r in ours if r.levelname == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "Could not load a model at startup: 'prod.tar.gz' in S3 bucket 'models-bucket' at http"
    )
    assert REPLACED in errors[0]
    replaced_once = [r.getMessage() for r in ours if r.levelname == "INFO"]
    assert any("downloading the new version" in line for line in replaced_once), replaced_once


async def test_an_object_whose_checksum_does_not_match_is_unavailable_for_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: a 500 from PUT /model, "Cannot download 'prod.tar.gz' from S3 bucket ...:
    # Expected checksum AAAAAA== did not match calculated checksum: ...", as if botserver
    # had failed.
    with _serve_s3(StorageWithAWrongChecksum, monkeypatch) as url:
        with pytest.raises(ModelUnavailable) as caught:
            await download_model("aws", "prod")

        assert str(caught.value).startswith(
            f"S3 bucket 'models' at {url} sent 'prod.tar.gz' with bytes that do not match its "
            "checksum (Expected checksum AAAAAA== did not match calculated checksum: "
        )


class StorageInAnotherRegion(BaseHTTPRequestHandler):
    """A bucket in eu-west-1: a request signed for another region is answered as S3 answers
    it, a 301 naming the bucket's region (x-amz-bucket-region); `signed_for` records each
    request's region."""

    protocol_version = "HTTP/1.1"
    stored = b"an archive"
    signed_for: list[str] = []

    def _in_region(self) -> bool:
        scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/", self.headers["Authorization"])
        region = scope.group(1) if scope else ""
        self.signed_for.append(region)
        if region == "eu-west-1":
            return True
        body = b"" if self.command == "HEAD" else b"<Error><Code>PermanentRedirect</Code></Error>"
        self.send_response(301)
        self.send_header("x-amz-bucket-region", "eu-west-1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return False

    def do_HEAD(self) -> None:  # noqa: N802
        if self._in_region():
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.stored)))
            self.send_header("ETag", '"e1"')
            self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        if self._in_region():
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.stored)))
            self.send_header("ETag", '"e1"')
            self.end_headers()
            self.wfile.write(self.stored)

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_bucket_in_another_region_is_still_found_through_s3_s_redirect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # botserver follows no storage's redirects, but S3's 301 naming the bucket's region is
    # botocore's to follow (a bucket outside AWS_DEFAULT_REGION), as for Rasa.
    class Handler(StorageInAnotherRegion):
        signed_for: list[str] = []

    handler = Handler
    with _serve_s3(handler, monkeypatch):
        assert await downloaded("aws") == StorageInAnotherRegion.stored

    assert handler.signed_for == ["us-east-1", "eu-west-1", "eu-west-1"]


class RegionalAddressOfAnotherRegion(StorageInAnotherRegion):
    """AWS_ENDPOINT_URL pinned to a region's address (s3.us-east-1.amazonaws.com) for a bucket
    in eu-west-1: every request is redirected, the one signed for the bucket's region too."""

    def _in_region(self) -> bool:
        super()._in_region()
        self.send_response(301)
        self.send_header("x-amz-bucket-region", "eu-west-1")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False


async def test_a_redirect_to_the_bucket_s_region_twice_advises_the_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: "... answered 'prod.tar.gz' with a redirect (301) to an address it did not
    # give: ...; if that address is the storage's own ..., set AWS_ENDPOINT_URL to it", when
    # the redirect named the bucket's region and the endpoint was the one to change.
    class Handler(RegionalAddressOfAnotherRegion):
        signed_for: list[str] = []

    with _serve_s3(Handler, monkeypatch) as url, pytest.raises(InvalidConfig) as caught:
        await download_model("aws", "prod")
    assert str(caught.value) == (
        f"S3 bucket 'models' at {url} answered 'prod.tar.gz' with a redirect (301) to the "
        "bucket's region, eu-west-1 (x-amz-bucket-region), and again when asked in that "
        "region: AWS_ENDPOINT_URL is an address that does not serve it. For AWS, set "
        "AWS_DEFAULT_REGION=eu-west-1 and leave AWS_ENDPOINT_URL unset (or set it to an "
        "address of eu-west-1)"
    )
    assert Handler.signed_for == ["us-east-1", "eu-west-1"]


def aws_redirecting_to(region: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """AWS itself, reached through botocore's send hook (no network): every request answered
    with a 301 to `region`, the one botocore sends there too. The hosts asked, in order."""
    import botocore.session
    from botocore.awsrequest import AWSResponse

    class Empty:
        def stream(self) -> Iterator[bytes]:
            yield b""

    hosts: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        hosts.append(request.url.split("/")[2])
        headers = {"x-amz-bucket-region": region, "Content-Length": "0"}
        return AWSResponse(request.url, 301, headers, Empty())

    get_session = botocore.session.get_session

    def hooked() -> Any:
        session = get_session()
        session.register("before-send.s3", answer)
        return session

    monkeypatch.setattr(botocore.session, "get_session", hooked)
    s3_at(None, monkeypatch)
    monkeypatch.setenv("BUCKET_NAME", "models")
    return hosts


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("eu-west-1", "models.s3.eu-west-1.amazonaws.com"),
        # The European Sovereign Cloud's (before, "... to an address it did not give").
        ("eusc-de-east-1", "models.s3.eusc-de-east-1.amazonaws.eu"),
    ],
)
async def test_without_an_endpoint_a_redirect_to_the_bucket_s_region_twice_advises_the_region(
    monkeypatch: pytest.MonkeyPatch, region: str, host: str
) -> None:
    hosts = aws_redirecting_to(region, monkeypatch)
    with pytest.raises(InvalidConfig) as caught:
        await download_model("aws", "prod")
    assert hosts == ["models.s3.amazonaws.com", host]
    assert str(caught.value) == (
        "S3 bucket 'models' answered 'prod.tar.gz' with a redirect (301) to the bucket's "
        f"region, {region} (x-amz-bucket-region), and again when asked in that region: set "
        f"AWS_DEFAULT_REGION={region}"
    )


@pytest.mark.parametrize(
    "region",
    ["eu-west-1\r\nX-Injected: 1", "eu-west-1\x1b[2J", "eu-" + "west" * 20_000 + "-1", ""],
    ids=["newline", "escape", "80-kb", "empty"],
)
async def test_a_redirect_to_a_region_that_is_no_region_name_is_not_followed_nor_quoted(
    monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    # Before: botocore took it for the region to ask, and its error quoted it whole ("Cannot
    # download 'prod.tar.gz' from S3 bucket 'models': Provided region_name 'eu-west-1\r\n
    # X-Injected: 1' doesn't match a supported format", 80 kB for the long one) into the
    # log and the status; the 80 kB one was taken for a region's name, and quoted so too.
    hosts = aws_redirecting_to(region, monkeypatch)
    with pytest.raises(InvalidConfig) as caught:
        await download_model("aws", "prod")
    assert hosts == ["models.s3.amazonaws.com"]
    assert str(caught.value) == (
        "S3 bucket 'models' answered 'prod.tar.gz' with a redirect (301) to an address it did "
        "not give: botserver follows no storage's redirects (the model would come from a host "
        "not configured); if that address is the storage's own (an http address redirected to "
        "https), set AWS_ENDPOINT_URL to it"
    )


async def test_an_object_deleted_while_downloaded_is_no_model(
    s3_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deleted between the HEAD that sized it and the read: gone, not replaced.
    import botocore.session

    s3_env.put_object(Bucket="models-bucket", Key="prod.tar.gz", Body=b"version 1")
    get_session = botocore.session.get_session

    def delete(**_: Any) -> None:  # (a hook that returns an answer is sent none)
        s3_env.delete_object(Bucket="models-bucket", Key="prod.tar.gz")

    def hooked() -> Any:
        session = get_session()
        session.register("before-send.s3.GetObject", delete)
        return session

    monkeypatch.setattr(botocore.session, "get_session", hooked)

    with pytest.raises(ModelNotFound) as caught:
        await download_model("aws", "prod")

    assert str(caught.value) == "No model 'prod.tar.gz' in S3 bucket 'models-bucket'"
