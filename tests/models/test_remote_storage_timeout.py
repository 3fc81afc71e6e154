"""Remote storage that takes the connection and never answers (a hung endpoint, a dead host
behind a load balancer): the download fails after REMOTE_STORAGE_TIMEOUT, with an error
naming the setting, rather than after the SDKs' own minutes of timeouts and retries."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.tcp_proxy import free_port
from server.errors import InvalidConfig, ModelUnavailable
from server.models import ModelHolder, ModelSource, remote_storage
from server.models.remote_storage import download_model
from tests.fake_http import closing_server, serve_json, silent_server
from tests.loop_lag import paced
from tests.models.conftest import STORAGES_AT, azure_at, gcs_at, greeting_loader, s3_at
from tests.models.test_remote_storage_lying import LyingStorage

TIMEOUT = 1.0
# What the bound rules out: the default timeout (30 s) standing in for the one set, and the
# SDKs' own defaults before (measured: boto 314 s, GCS 124 s, Azure 336 s; docs/benchmarks.md).
RULED_OUT = 20.0


@pytest.fixture
def silent_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", f"{TIMEOUT:g}")
    with silent_server() as url:
        yield url


async def done_within(awaitable: Awaitable[Any], seconds: float) -> Any:
    """What `awaitable` gives; a failed assertion when it takes longer than `seconds` (a
    timing test runs again when one fails, not when a TimeoutError does)."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError as exc:
        raise AssertionError(f"not done within {seconds:.1f} s") from exc


def within_two_attempts() -> float:
    """Each request is tried twice at most, a second apart at most."""
    return 2 * TIMEOUT + paced(3, below=RULED_OUT - 2 * TIMEOUT)


# Azure's SDK reads a download's body three times, a second apart (a count of its own, beside
# the retry policy we give it): what a body that stops costs there.
AZURE_BODY_READS = 3 * TIMEOUT + 2.0


def within_the_body_reads(storage: str) -> float:
    """How long a download whose body stops may take: two attempts, or Azure's three reads."""
    if storage != "azure":
        return within_two_attempts()
    return AZURE_BODY_READS + paced(3, below=RULED_OUT - AZURE_BODY_READS)


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.timing
async def test_a_storage_that_never_answers_fails_within_the_timeout(
    silent_storage: str, monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    # Before: aws held the download for 5 minutes, gcs and azure for several.
    setup(silent_storage, monkeypatch)
    started = time.monotonic()

    with pytest.raises(ModelUnavailable, match=r"did not answer within 1 s") as caught:
        await done_within(download_model(storage, "prod"), within_two_attempts())

    assert time.monotonic() - started < within_two_attempts()
    assert "REMOTE_STORAGE_TIMEOUT" in str(caught.value)
    assert "prod.tar.gz" in str(caught.value)


@pytest.mark.timing
async def test_a_silent_storage_keeps_the_current_model_and_says_why_in_the_status(
    silent_storage: str, monkeypatch: pytest.MonkeyPatch, archive_factory: Any
) -> None:
    STORAGES_AT["aws"](silent_storage, monkeypatch)
    holder = ModelHolder(greeting_loader)
    await holder.load_archive(archive_factory("current"))

    with pytest.raises(ModelUnavailable):
        await done_within(
            ModelSource(holder).load_from_remote_storage("aws", "prod"), within_two_attempts()
        )

    assert holder.current is not None and holder.current.answer() == "current"
    assert (holder.last_error or "").startswith("prod.tar.gz: ")
    assert "did not answer within 1 s" in (holder.last_error or "")


@pytest.mark.timing
async def test_aws_credentials_from_a_web_identity_wait_no_longer_than_the_timeout(
    silent_storage: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Credentials as EKS gives them (a role and a web identity token, exchanged with STS for
    keys): before, an STS endpoint that never answered held the download for 307 s with a
    timeout of 1 s, then the error said 1 s."""
    s3_at(silent_storage, monkeypatch)  # STS too: AWS_ENDPOINT_URL is every service's
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / "web-identity-token"
    token.write_text("eyJhbGciOiJub25lIn0.e30.")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/botserver")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(ModelUnavailable, match=r"did not answer within 1 s"):
        await done_within(download_model("aws", "prod"), within_two_attempts())


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        *(("REMOTE_STORAGE_TIMEOUT", value) for value in ["soon", "0", "-3", "nan"]),
        *(("REMOTE_STORAGE_MIN_RATE", value) for value in ["fast", "0", "-1", "nan"]),
    ],
)
async def test_an_unusable_timeout_or_minimum_rate_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    STORAGES_AT["aws"]("http://127.0.0.1:9", monkeypatch)
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv(setting, value)

    with pytest.raises(InvalidConfig, match=f"{setting} must be"):
        await download_model("aws", "prod")


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.timing
async def test_a_timeout_longer_than_a_socket_can_wait_is_a_configuration_error(
    silent_storage: str, monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    """A very long timeout meant as "wait as long as it takes": before, past about 9.2e9 s
    (what a socket can wait), gcs and azure failed with a bare OverflowError (a 500 from PUT
    /model, a traceback at startup) and aws with "timestamp out of range"."""
    setup(silent_storage, monkeypatch)
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "1e10")

    with pytest.raises(InvalidConfig, match="REMOTE_STORAGE_TIMEOUT must be .* at most"):
        await done_within(download_model(storage, "prod"), within_two_attempts())


class StallingStorage(LyingStorage):
    """States a 10-byte object (S3, GCS and Azure Blob alike), then stops sending it after two
    bytes, until `stop` is set."""

    stop = threading.Event()

    def _body_answered(self, size: int) -> bool:
        """The status and headers of a `size`-byte body, in the protocol of the request:
        False when GCS asked for the object's metadata (answered whole)."""
        if self.path.startswith("/storage/v1/b/"):  # GCS object metadata
            super().do_GET()
            return False
        asked = self.headers.get("x-ms-range")  # Azure asks for the first chunk
        self.send_response(206 if asked else 200)
        if asked:  # "bytes=0-33554431": the part of the object asked for
            last = min(int(asked.rpartition("-")[2]), size - 1)
            self.send_header("Content-Range", f"bytes 0-{last}/{size}")
            size = last + 1
        self._headers(size)
        return True

    def do_GET(self) -> None:  # noqa: N802
        if not self._body_answered(10):
            return
        self.wfile.write(b"\x1f\x8b")
        self.wfile.flush()
        self.stop.wait()


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.timing
async def test_a_download_whose_body_stops_fails_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", f"{TIMEOUT:g}")

    with storage_serving(StallingStorage, setup, monkeypatch):
        with pytest.raises(ModelUnavailable, match=r"did not answer within 1 s"):
            await done_within(download_model(storage, "prod"), within_the_body_reads(storage))


@contextmanager
def storage_serving(
    handler: type[StallingStorage], setup: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """`handler` served (with a `stop` of its own), the storage's settings pointing at it;
    its answers stopped on exit."""

    class Handler(handler):  # type: ignore[valid-type,misc]
        stop = threading.Event()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    setup(f"http://127.0.0.1:{server.server_address[1]}", monkeypatch)
    try:
        yield
    finally:
        Handler.stop.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("storage", "setup"), [("aws", s3_at), ("azure", azure_at)])
async def test_the_storage_address_is_named_without_its_credentials(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    monkeypatch.setenv("BUCKET_NAME", "models")
    setup("http://user:pa55word@127.0.0.1:9", monkeypatch)
    if storage == "azure":
        monkeypatch.setenv("AZURE_ACCOUNT_URL", "http://127.0.0.1:9/devstoreaccount1?sig=S3CRET")

    with pytest.raises(ModelUnavailable, match="Cannot reach") as caught:
        await download_model(storage, "prod")

    assert "http://127.0.0.1:9" in str(caught.value)
    assert "pa55word" not in str(caught.value) and "S3CRET" not in str(caught.value)


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failures that come at once, tried again without the waits between tries (GCS's,
    boto's and Azure's wait up to 1 or 2 s before the second try; here not at all). Nothing
    here waits for the timeout itself."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", f"{TIMEOUT / 2:g}")
    waits = {
        "botocore.retries.standard.ExponentialBackoff.delay_amount": lambda self, context: 0.0,
        "azure.storage.blob.LinearRetry.get_backoff_time": lambda self, settings: 0.0,
        # google-api-core sleeps between tries with its module's `time.sleep`.
        "google.api_core.retry.retry_unary.time": SimpleNamespace(
            monotonic=time.monotonic, sleep=lambda seconds: None
        ),
    }
    for target, no_wait in waits.items():
        try:
            monkeypatch.setattr(target, no_wait)
        except ImportError:  # the SDK is not installed: its storage's tests skip
            pass


@pytest.mark.parametrize(
    ("storage", "failure"),
    [*((storage, "tls") for storage in STORAGES_AT), ("azure", "closed")],  # the fastest to retry
)
@pytest.mark.usefixtures("quick_retries")
async def test_a_storage_the_exchange_fails_with_is_one_that_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch, storage: str, failure: str
) -> None:
    # An https address whose TLS fails (here: an http port; a certificate that does not
    # verify), or a host that closes the connection unanswered. Before: a ModelError with the
    # SDK's words, a 500 from PUT /model, where a model server failing so is a 400.
    with serve_json(lambda path, body: (200, {})) if failure == "tls" else closing_server() as url:
        if failure == "tls":
            url = url.replace("http://", "https://")
        STORAGES_AT[storage](url, monkeypatch)

        with pytest.raises(ModelUnavailable) as caught:
            await download_model(storage, "prod")

    message = str(caught.value)
    assert message.startswith("Cannot reach "), message
    assert ("SSL" if failure == "tls" else "closed") in message, message


@pytest.mark.parametrize("storage", STORAGES_AT)
@pytest.mark.usefixtures("quick_retries")
async def test_a_storage_failing_with_a_5xx_is_unavailable_for_now(
    monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    # A 503 (S3's SlowDown, an outage) after the SDK's retries. Before: a ModelError, a 500
    # from PUT /model as if botserver had failed (Azure's over two lines), where a model
    # server's 5xx is a 400 "could not be loaded".
    failed = {"error": {"code": 503, "message": "Service Unavailable"}}
    with serve_json(lambda path, body: (503, failed)) as url:
        STORAGES_AT[storage](url, monkeypatch)

        with pytest.raises(ModelUnavailable) as caught:
            await download_model(storage, "prod")

    assert str(caught.value).endswith(
        "failed to answer for 'prod.tar.gz' (503: Service Unavailable); each request tried 2 "
        "times at most"
    )


@pytest.mark.usefixtures("quick_retries")
async def test_a_gcs_download_failing_with_a_5xx_gives_gcs_s_reason_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The media read's failure. Before: "(503: {"error": {"code": 503, "message": "Service
    # Unavailable"}}: ('Request failed with status code', 503, 'Expected one of', ...))".
    def storage(path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/download/"):
            return 503, {"error": {"code": 503, "message": "Service Unavailable"}}
        return 200, {"name": "prod.tar.gz", "bucket": "models", "size": "10", "generation": "1"}

    with serve_json(storage) as url:
        gcs_at(url, monkeypatch)

        with pytest.raises(ModelUnavailable) as caught:
            await download_model("gcs", "prod")

    assert str(caught.value) == (
        "GCS bucket 'models' failed to answer for 'prod.tar.gz' (503: Service Unavailable); "
        "each request tried 2 times at most"
    )


@pytest.mark.parametrize("storage", STORAGES_AT)
@pytest.mark.usefixtures("quick_retries")
async def test_a_storage_answering_501_not_implemented_is_a_setting_to_change(
    monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    # A 501 (MinIO's NotImplemented: "A header you provided implies functionality that is
    # not implemented") refuses a feature; no retry or wait helps. Before: "failed to answer
    # ... (501: Not Implemented)", unavailable for now, as if the storage were down.
    refused = {"error": {"code": 501, "message": "Not Implemented"}}
    with serve_json(lambda path, body: (501, refused)) as url:
        STORAGES_AT[storage](url, monkeypatch)

        with pytest.raises(InvalidConfig) as caught:
            await download_model(storage, "prod")

    message = str(caught.value)
    assert "does not implement a request botserver made for 'prod.tar.gz' (501: " in message
    assert "this is a refusal, not an outage: botserver reads " in message
    setting = {"aws": "AWS_ENDPOINT_URL", "gcs": "STORAGE_EMULATOR_HOST"}
    assert setting.get(storage, "AZURE_ACCOUNT_URL") in message


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The connections the SDKs open, to a port nothing listens on (a storage down, a wrong
    port): one a try."""
    import urllib3.util.connection

    connect = urllib3.util.connection.create_connection
    attempts: list[object] = []

    def counted(address: object, *args: Any, **kwargs: Any) -> Any:
        attempts.append(address)
        return connect(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counted)
    return attempts


@pytest.mark.parametrize("storage", STORAGES_AT)
@pytest.mark.usefixtures("quick_retries")
async def test_a_storage_that_refuses_the_connection_is_tried_twice_at_most(
    monkeypatch: pytest.MonkeyPatch, connections: list[object], storage: str
) -> None:
    # Before: GCS tried again with back-off until twice REMOTE_STORAGE_TIMEOUT had passed (a
    # minute by default), where S3 and Azure give up after their second try.
    STORAGES_AT[storage](f"http://127.0.0.1:{free_port()}", monkeypatch)

    with pytest.raises(ModelUnavailable, match="^Cannot reach "):
        await download_model(storage, "prod")

    assert len(connections) == 2, connections


@pytest.mark.usefixtures("quick_retries")
async def test_gcs_without_the_sdk_s_private_retry_rule_still_downloads_and_tries_twice(
    monkeypatch: pytest.MonkeyPatch, connections: list[object]
) -> None:
    # Which failures google-cloud-storage tries again is a private function of it
    # (`retry._should_retry`): a release that renames it must not be told as "the gcs extra is
    # not installed" (before: it was, the import failing beside the package's own).
    gcs_at(f"http://127.0.0.1:{free_port()}", monkeypatch)
    monkeypatch.delattr("google.cloud.storage.retry._should_retry")

    with pytest.raises(ModelUnavailable, match="^Cannot reach "):
        await download_model("gcs", "prod")

    assert len(connections) == 2, connections


@pytest.mark.parametrize("sdk_rule", ["present", "absent", "failing"])
@pytest.mark.usefixtures("quick_retries")
async def test_a_gcs_download_answered_503_once_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, sdk_rule: str
) -> None:
    # A media read's 503 is resumable-media's InvalidResponse, which google-api-core's public
    # `if_transient_error` (the fallback before) does not know: without the SDK's private rule
    # the download failed at once ("failed to answer ... (503 ...)") instead of trying again.
    if sdk_rule == "absent":
        monkeypatch.delattr("google.cloud.storage.retry._should_retry")
    if sdk_rule == "failing":  # a release whose private rule takes other arguments
        monkeypatch.setattr("google.cloud.storage.retry._should_retry", lambda exc, _: False)
    media: list[str] = []

    def storage(path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/download/"):
            media.append(path)
            if len(media) == 1:
                return 503, {"error": {"code": 503, "message": "Service Unavailable"}}
            return 200, b"an archive"
        return 200, {"name": "prod.tar.gz", "bucket": "models", "size": "10", "generation": "1"}

    with serve_json(storage) as url:
        gcs_at(url, monkeypatch)
        path = await download_model("gcs", "prod")

    try:
        assert path.read_bytes() == b"an archive"
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert len(media) == 2, media


@pytest.mark.usefixtures("quick_retries")
async def test_a_gcs_download_asks_for_nothing_beyond_the_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # google-cloud-storage 3.17 fetches the bucket's metadata (for tracing) in a thread of its
    # own at a client's first request: one more request per download (storage.buckets.get,
    # refused to credentials that may read objects alone), tried again for up to 120 s
    # against a storage failing so, past REMOTE_STORAGE_TIMEOUT and the download's end.
    asked: list[str] = []

    def failing(path: str, body: object) -> tuple[int, object]:
        asked.append(path.partition("?")[0])
        return 503, {"error": {"code": 503, "message": "Service Unavailable"}}

    with serve_json(failing) as url:
        gcs_at(url, monkeypatch)

        with pytest.raises(ModelUnavailable):
            await download_model("gcs", "prod")

    assert asked and set(asked) == {"/storage/v1/b/models/o/prod.tar.gz"}, asked


class DrippingStorage(StallingStorage):
    """States a 200-byte object (S3, GCS and Azure Blob alike), then sends it a byte every
    0.2 s (each read well within the timeout: 40 s in all), until `stop` is set."""

    stated = 200
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        if not self._body_answered(self.stated):
            return
        try:
            for _ in range(200):
                if self.stop.wait(0.2):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.timing
async def test_a_download_that_drips_fails_within_its_whole_bound(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    """Before, each read's timeout alone bounded it: the drip held the download for 40 s.
    Now 8 timeouts (4 s) and its 200 bytes at 100 bytes a second (2 s)."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "0.5")
    monkeypatch.setenv("REMOTE_STORAGE_MIN_RATE", "100")

    with storage_serving(DrippingStorage, setup, monkeypatch):
        started = time.monotonic()
        with pytest.raises(ModelUnavailable, match=r"took longer than 6 s") as caught:
            await done_within(download_model(storage, "prod"), 6 + paced(4, below=20))
        assert time.monotonic() - started >= 6  # the bound, not an earlier timeout
    assert "REMOTE_STORAGE_MIN_RATE" in str(caught.value)
    assert "200 bytes at 100 bytes a second" in str(caught.value)


class HugeDrippingStorage(DrippingStorage):
    """States 4 GiB (the most an archive may be), then drips as DrippingStorage."""

    stated = 4 * 1024**3


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.timing
async def test_a_storage_stating_a_huge_size_fails_once_its_bytes_fall_behind(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    """Before, the stated size alone bounded it: 4 GiB at the minimum rate (128 s here, 12 h
    with the defaults). Now 8 timeouts (4 s), then the bytes come at the rate, 4 MiB (0.125 s
    here) behind at most."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "0.5")
    monkeypatch.setenv("REMOTE_STORAGE_MIN_RATE", str(32 * 1024**2))

    with storage_serving(HugeDrippingStorage, setup, monkeypatch):
        with pytest.raises(ModelUnavailable, match=r"sent 0 of the 4294967296 bytes") as caught:
            await done_within(download_model(storage, "prod"), 5 + paced(4, below=20))
    assert "REMOTE_STORAGE_MIN_RATE" in str(caught.value)


async def no_download_running() -> None:
    """Given-up downloads' threads end once their storage stops (a read's timeout)."""
    for _ in range(200):
        if not remote_storage._RUNNING:
            return
        await asyncio.sleep(0.05)


@pytest.mark.timing
async def test_downloads_hold_no_thread_a_turn_needs_nor_more_than_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A storage that drips holds a download's thread while the download lasts. Before, on
    asyncio's default pool, the threads every turn's parse runs on: a few PUT /model calls
    (here as many as a pool of 2 threads) left every turn waiting while it dripped. Now they
    run on a pool of their own, and past MAX_DOWNLOADS a download is refused at once."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "0.5")
    monkeypatch.setenv("REMOTE_STORAGE_MIN_RATE", "1000")  # 4.2 s for its 200 bytes
    await no_download_running()  # an earlier test's
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))

    with storage_serving(DrippingStorage, STORAGES_AT["aws"], monkeypatch):
        running = [
            asyncio.ensure_future(download_model("aws", f"prod-{n}"))
            for n in range(remote_storage.MAX_DOWNLOADS)
        ]
        try:
            for _ in range(1000):  # each started once its temp dir is made
                if len(remote_storage._RUNNING) == remote_storage.MAX_DOWNLOADS:
                    break
                await asyncio.sleep(0.01)
            await done_within(asyncio.to_thread(time.sleep, 0), paced(1, below=4))
            started = time.monotonic()
            with pytest.raises(ModelUnavailable, match=r"downloads are running already"):
                await download_model("aws", "prod")
            # at once, not after its own bound (4 s of grace, then 4.2 s for its 200 bytes)
            assert time.monotonic() - started < paced(2, below=4)
            assert not any(task.done() for task in running)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    await no_download_running()


async def downloads_ended() -> None:
    for _ in range(10_000):  # polled: a thread's end has no event to wait on
        if not remote_storage._RUNNING:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("storage", "setup"), STORAGES_AT.items())
@pytest.mark.timing
async def test_a_download_given_up_lets_go_of_its_thread_while_its_storage_still_drips(
    monkeypatch: pytest.MonkeyPatch, storage: str, setup: Any
) -> None:
    """Before, the thread of a download given up waited on its storage until the drip ended
    (40 s after the first byte here: some 35 s after the download was given up), one of the
    MAX_DOWNLOADS places taken as long. Now its connections are cut as it is given up: the
    thread ends at once (Azure's after its SDK's wait of 1 s before it reads a body again)."""
    monkeypatch.setenv("BUCKET_NAME", "models")
    monkeypatch.setenv("REMOTE_STORAGE_TIMEOUT", "0.5")
    monkeypatch.setenv("REMOTE_STORAGE_MIN_RATE", str(32 * 1024**2))
    await no_download_running()  # an earlier test's

    with storage_serving(HugeDrippingStorage, setup, monkeypatch):
        with pytest.raises(ModelUnavailable, match=r"sent 0 of the 4294967296 bytes"):
            await download_model(storage, "prod")
        await done_within(downloads_ended(), 1 + paced(2, below=20))
