"""Downloading a model archive from remote storage: `aws`, `gcs` or `azure`.

Configured by the environment variables Rasa uses, and our REMOTE_STORAGE_TIMEOUT. Downloads
go to a private temporary directory (never the working directory), in a worker thread. We
never create buckets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextvars
import itertools
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from server.aws_sessions import boto3_session
from server.errors import (
    BotServerError,
    InvalidConfig,
    ModelError,
    ModelNotFound,
    ModelStorageFull,
    ModelUnavailable,
    StorageNotFound,
    UnsafeArchive,
    needs_extra,
)
from server.models.archive import ARCHIVE_SUFFIX
from server.models.error_bodies import bound_botocore_errors, requests_hook
from server.models.held_sockets import HeldSockets, holding
from server.models.holder import is_disk_full
from server.models.safety import DEFAULT_LIMITS
from server.setting_values import env_number, env_seconds
from server.urls import safe_url

logger = logging.getLogger(__name__)

STORAGES = ("aws", "gcs", "azure")

TIMEOUT_SETTING = "REMOTE_STORAGE_TIMEOUT"
# Seconds to connect, and to wait for each answer or the next bytes of a download. The SDKs'
# own defaults, with their retries, held a storage that never answers for minutes (boto: 60 s
# a read, 5 attempts); a storage that answers at all does so well within this.
DEFAULT_TIMEOUT = 30.0
# Each request is tried this many times in all: a storage that never answers fails after
# about this many timeouts.
ATTEMPTS = 2
# About 31 years. A socket waits at most about 9.2e9 s (nanoseconds in 64 bits): past that,
# every SDK failed with an OverflowError instead of waiting.
MAX_TIMEOUT = 1e9


MIN_RATE_SETTING = "REMOTE_STORAGE_MIN_RATE"
# Bytes a second a download keeps up on average, once it has had GRACE_TIMEOUTS timeouts to
# start: a storage that drips a byte per timeout is held to the whole download's bound,
# not only to each read's. 100 kB/s: a 100 MB model has about 17 minutes, and more than
# 8 timeouts (4 minutes with the default) to be sized and start.
DEFAULT_MIN_RATE = 100_000.0
GRACE_TIMEOUTS = 8


def storage_min_rate() -> float:
    """REMOTE_STORAGE_MIN_RATE in bytes a second (InvalidConfig when not a number > 0)."""
    return env_number(MIN_RATE_SETTING, DEFAULT_MIN_RATE, "bytes a second")


def storage_timeout() -> float:
    """REMOTE_STORAGE_TIMEOUT in seconds (InvalidConfig when it is not a number > 0 and at
    most MAX_TIMEOUT)."""
    seconds = env_seconds(TIMEOUT_SETTING, DEFAULT_TIMEOUT)
    if not seconds <= MAX_TIMEOUT:
        raise InvalidConfig(
            f"{TIMEOUT_SETTING} must be a finite number of seconds, at most {MAX_TIMEOUT:.0f}"
        )
    return seconds


def check_storage_settings(storage: str) -> None:
    """What `botserver run --remote-storage` checks before it starts: the settings no
    download could work with (InvalidConfig). Unset variables and the storage's answers are
    the start-up load's to report."""
    storage_timeout()
    storage_min_rate()
    bucket = os.environ.get("BUCKET_NAME")
    if storage in ("aws", "gcs") and bucket:
        _check_bucket_name(bucket, storage)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if storage == "aws" and endpoint:
        shown = _storage_address("AWS_ENDPOINT_URL", endpoint, _S3_SERVICE)
        if urlsplit(endpoint).query:  # botocore refuses it at the first request
            raise InvalidConfig(
                f"AWS_ENDPOINT_URL {shown!r} is not usable: an endpoint URL takes no query "
                "(botocore: not a valid URI)"
            )
        _check_botocore_host(endpoint, shown)
    account_url = os.environ.get("AZURE_ACCOUNT_URL")
    if storage == "azure" and account_url:
        _storage_address("AZURE_ACCOUNT_URL", account_url, _BLOB_SERVICE)
    container = os.environ.get("AZURE_CONTAINER")
    if storage == "azure" and container:
        _check_container_name(container)
    if storage == "azure" and os.environ.get("AZURE_ACCOUNT_KEY"):
        _azure_account_key()


# What botocore takes for an S3 bucket's name (else "Parameter validation failed").
_S3_BUCKET = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")


def _bucket_name(storage: str) -> str:
    """BUCKET_NAME, if it can name a bucket of `storage` (InvalidConfig otherwise)."""
    bucket = _env("BUCKET_NAME", storage)
    _check_bucket_name(bucket, storage)
    return bucket


def _check_bucket_name(bucket: str, storage: str) -> None:
    """InvalidConfig for a BUCKET_NAME that names more than a bucket (`s3://models`,
    `models/prod`: the storage answered "no such model" for them, or botocore with its
    regexes), or, for S3, a name botocore refuses."""
    if storage == "aws" and bucket.startswith("arn:"):  # an access point's
        return
    _check_name_alone("BUCKET_NAME", bucket, "bucket")
    if storage == "aws" and not _S3_BUCKET.fullmatch(bucket):
        raise InvalidConfig(
            f"BUCKET_NAME {bucket!r} is no bucket name: S3 takes letters, digits, '.', '-' "
            "and '_', or an access point's ARN"
        )


# Azure's container names, and its three special containers.
_AZURE_CONTAINER = re.compile(r"\$root|\$web|\$logs|(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def _container_name() -> str:
    """AZURE_CONTAINER, if Azure takes it for a container's name (InvalidConfig otherwise:
    Azure answered InvalidResourceName at the first download)."""
    container = _env("AZURE_CONTAINER", "azure")
    _check_container_name(container)
    return container


def _check_container_name(container: str) -> None:
    _check_name_alone("AZURE_CONTAINER", container, "container")
    if not _AZURE_CONTAINER.fullmatch(container):
        raise InvalidConfig(
            f"AZURE_CONTAINER {container!r} is no container name: Azure takes 3 to 63 "
            "lowercase letters, digits and '-' (not first, last, nor two in a row)"
        )


def _check_name_alone(variable: str, value: str, what: str) -> None:
    """InvalidConfig for a bucket or container name given as a URL or with a folder: the
    folder belongs in -m. A URL is shown without user, password and query (a presigned
    URL's session token, a SAS URL's signature)."""
    if "/" not in value:
        return
    if "://" in value:
        shown = safe_url(value, tolerant=True)
        name, folder = _split_url(value, what)
        advice = f"give the {what}'s name alone" + (f", such as {name!r}" if name else "")
    else:
        shown = value
        name, _, folder = value.lstrip("/").partition("/")  # `/models`: the bucket
        advice = f"the {what} is {name!r}"
    if folder.strip("/"):
        advice += f"; a folder in the {what} goes into -m (-m {folder.strip('/')}/my-model)"
    raise InvalidConfig(f"{variable} {shown!r} is no {what} name: {advice}")


# A virtual-hosted bucket's host: the bucket's name, then the service's.
_BUCKET_HOST = re.compile(r"(.+?)\.(?:s3[.-]|storage\.googleapis\.com$)")


def _split_url(url: str, what: str, named: str | None = None) -> tuple[str, str]:
    """The bucket or container a storage URL names, and the path after it (an object's key,
    a folder): `s3://bucket/key`, `gs://...`, Hadoop's `wasbs://container@account.../key`,
    an http(s) URL, virtual-hosted (`bucket.s3.amazonaws.com/key`) or path-style
    (`host/bucket/key`: Azure's, MinIO's, Azurite's after the account). An http(s) URL's
    query (a signature) and fragment are no part of it, and its path is percent-decoded.

    With `named`, the configured bucket or container, a path-style URL whose path does not
    start with it names none (a custom domain in front of the bucket): ("", its path)."""
    scheme, _, rest = url.partition("://")
    web = scheme.lower() in ("http", "https")
    if web:
        rest = unquote(rest.partition("#")[0].partition("?")[0])
    host, _, path = rest.partition("/")
    if not web:
        return re.split("[@?#]", host, maxsplit=1)[0], path
    host = host.rpartition("@")[2].lower()
    virtual = _BUCKET_HOST.match(host)
    if virtual:
        return virtual.group(1), path
    if what == "bucket" and named and host.startswith(f"{named}."):
        return named, path  # a custom domain, the bucket's name first
    name, _, after = path.partition("/")
    account = os.environ.get("AZURE_ACCOUNT_NAME")
    if what == "container" and name and name == account and not host.startswith(f"{account}."):
        name, _, after = after.partition("/")  # Azurite's: the account, then the container
    if named is not None and name != named:
        return "", path
    return name, after


def _check_botocore_host(endpoint: str, shown: str) -> None:
    """InvalidConfig for an endpoint whose host botocore refuses when it makes the client
    ("Invalid endpoint"): a name with '_' (Compose v1's `minio_1`) or not in ASCII."""
    try:
        from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url
    except ImportError:  # the download says boto3 is missing
        return
    if not (is_valid_endpoint_url(endpoint) or is_valid_ipv6_endpoint_url(endpoint)):
        raise InvalidConfig(
            f"AWS_ENDPOINT_URL {shown!r} is not usable: botocore takes its host for no "
            "endpoint (letters, digits, '-' and '.' only, no '_'); give the http(s) URL of "
            + _S3_SERVICE
        )


def _azure_account_key() -> str:
    """AZURE_ACCOUNT_KEY, if the SDK can sign with it: base64, as it decodes it (characters
    outside the alphabet, such as a newline, are skipped). The value is never shown."""
    key = _env("AZURE_ACCOUNT_KEY", "azure")
    try:
        base64.b64decode(key.encode("utf-8"))
    except (binascii.Error, ValueError):
        raise InvalidConfig(
            "AZURE_ACCOUNT_KEY is not base64: give the storage account's access key as the "
            "Azure portal shows it (88 characters ending in '=')"
        ) from None
    return key


def object_name(model_name: str) -> str:
    """The object key for `-m NAME`, as Rasa: NAME, with `.tar.gz` added if missing."""
    return model_name if model_name.endswith(ARCHIVE_SUFFIX) else model_name + ARCHIVE_SUFFIX


def model_file_name(model_name: str) -> str:
    """What /status calls a model downloaded for `-m NAME`: the last part of its key."""
    return object_name(model_name).rsplit("/", 1)[-1]


async def download_model(
    storage: str, model_name: str, max_bytes: int = DEFAULT_LIMITS.max_total_bytes
) -> Path:
    """Download `model_name` from `storage` into a new temp dir; return the file's path.

    The caller removes `path.parent` when done. The file is named as the key's last part,
    which errors then name, unless no file name can hold it (more than 255 bytes, a NUL).
    """
    downloader = _downloader(storage)
    timeout = storage_timeout()
    min_rate = storage_min_rate()
    key = object_name(model_name)
    try:
        key.encode("utf-8")  # what every storage's keys are
    except UnicodeEncodeError:  # a lone surrogate: a JSON escape, or argv bytes not UTF-8
        raise InvalidConfig(f"Remote model name {model_name!r} is not UTF-8 text") from None
    _check_key_length(storage, key)
    directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="botserver-remote-"))
    name = model_file_name(model_name)
    target = directory / (name if _fits_a_file_name(name) else "model.tar.gz")
    try:
        await _download_pinned(
            downloader, key, target, max_bytes, _Bound(storage, key, timeout, min_rate)
        )
    except BaseException as exc:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        if is_disk_full(exc):  # the server's problem, not the model's
            raise ModelStorageFull(f"no space left on the server to download '{key}'") from exc
        missing_model = isinstance(exc, ModelNotFound) and not isinstance(exc, StorageNotFound)
        if missing_model and "://" in model_name:
            raise ModelNotFound(f"{exc}. {_key_not_url(storage, model_name)}") from exc
        if missing_model and (model_name == "models" or key.endswith("/.tar.gz")):
            # Rasa's default -m, or a prefix: the storage holds models, but under other keys.
            raise ModelNotFound(
                f"{exc}. -m names one object, its key with '.tar.gz' added if missing (without "
                "-m, 'models', as in Rasa); a prefix is not searched: give -m prod/my-model"
            ) from exc
        if isinstance(exc, Exception) and not isinstance(exc, BotServerError):
            # An SDK's exception none of the mappings foresaw: one line naming storage and
            # model for the log and the client; the traceback for whoever debugs.
            logger.debug("Remote storage %r failed on %r", storage, key, exc_info=exc)
            raise _hide_addresses(
                ModelError(
                    f"Cannot download '{key}' from remote storage '{storage}': "
                    f"{type(exc).__name__}: {exc}"
                )
            ) from exc
        if isinstance(exc, BotServerError):
            _hide_addresses(exc)
        raise
    return target


# A download that finds its object replaced is started over this many times in all.
DOWNLOADS_OF_A_REPLACED_OBJECT = 2


class _Replaced(Exception):
    """The object changed between the request that sized it and the read pinned to that
    version: the storage answered `answer` (a 412 to the If-Match or ifGenerationMatch, or
    GCS's 404 for the generation gone) from `where`. `version`: the ETag or generation
    sized, which `storage` refused to read."""

    def __init__(self, storage: str, where: str, answer: str, version: object) -> None:
        super().__init__(where, answer)
        self.storage = storage
        self.where = where
        self.answer = answer
        self.version = str(version)


# How each storage pins a read to the version sized: what a storage that refuses the
# version it has just stated does not honour.
_PINNED_BY = {
    "aws": "If-Match with the ETag its HeadObject gave",
    "gcs": "ifGenerationMatch with the generation its metadata gave",
    "azure": "If-Match with the ETag its blob properties gave",
}


# Bytes a download may be behind REMOTE_STORAGE_MIN_RATE once its grace has passed: the
# largest piece an SDK reads before it writes any of it (Azure's ranges, _AZURE_RANGE; S3's
# chunks are 1 MiB, GCS's 8 KiB), which a download keeping up the rate may not have written.
PROGRESS_SLACK = 4 * 1024 * 1024

# Downloads running at once in this process, those given up included until their thread
# ends (once its connections are cut, at its SDK's next step: at most a second, Azure's wait
# before it reads a body again; a connection still being made, at its timeout): on threads
# of their own, so that they never take asyncio's default pool (os.cpu_count() + 4 threads),
# which every turn's parse runs on. Past it, a download is refused at once.
MAX_DOWNLOADS = 4
_POOL = ThreadPoolExecutor(max_workers=MAX_DOWNLOADS, thread_name_prefix="remote-storage")
_RUNNING: set[concurrent.futures.Future[None]] = set()
_RUNNING_LOCK = threading.Lock()


class _Bound:
    """A whole download's bound: GRACE_TIMEOUTS timeouts, then as long as the bytes written
    keep up `min_rate` bytes a second (PROGRESS_SLACK behind at most), and at most the size
    the storage stated at that rate once it is known. Each read's timeout alone let a storage
    dripping a byte per timeout hold a worker thread, and the start-up or the PUT /model
    waiting on it, for as long as it dripped; the stated size alone, a storage stating
    4 GiB, 12 hours."""

    def __init__(self, storage: str, key: str, timeout: float, min_rate: float) -> None:
        self.storage = storage
        self.key = key
        self.timeout = timeout
        self.min_rate = min_rate
        self.size: int | None = None  # stated by the storage, set in the worker thread
        self.received = 0  # bytes written, by the worker thread
        self.given_up = threading.Event()  # the thread's next write then stops it
        self.sockets = HeldSockets()  # the connections the worker thread has made

    def give_up(self) -> None:
        """Nobody waits for the download any more: its connections are cut, so that its
        thread, waiting on one (a storage dripping its bytes), ends now rather than when
        the storage stops."""
        self.given_up.set()
        self.sockets.cut()

    def _behind(self) -> bool:
        """Whether the bytes written, not the stated size, bound the download now."""
        return self.size is not None and self.received + PROGRESS_SLACK < self.size

    def seconds(self) -> float:
        allowed = min(self.size or 0, self.received + PROGRESS_SLACK)
        return GRACE_TIMEOUTS * self.timeout + allowed / self.min_rate

    def exceeded(self) -> ModelUnavailable:
        rate = f"{self.min_rate:g} bytes a second"
        if self._behind():
            return ModelUnavailable(
                f"Remote storage '{self.storage}' sent {self.received} of the {self.size} "
                f"bytes of '{self.key}' in {self.seconds():g} s: slower than {rate} "
                f"({MIN_RATE_SETTING}) once {GRACE_TIMEOUTS} times {TIMEOUT_SETTING} had "
                "passed: a storage sending it too slowly"
            )
        sized = f" and its {self.size} bytes at {rate}" if self.size else ""
        return ModelUnavailable(
            f"Remote storage '{self.storage}' took longer than {self.seconds():g} s to send "
            f"'{self.key}' ({GRACE_TIMEOUTS} times {TIMEOUT_SETTING}{sized}, "
            f"{MIN_RATE_SETTING}): a storage sending it too slowly"
        )


# The bound of the download the current worker thread runs (copied into its context).
_BOUND: ContextVar[_Bound | None] = ContextVar("remote_storage_bound", default=None)


def _start(bound: _Bound, run: Callable[[], None]) -> concurrent.futures.Future[None]:
    """`run` on a thread of the downloads' pool, seeing `bound`; ModelUnavailable at once
    when MAX_DOWNLOADS run already (given up ones among them until their threads end)."""
    context = contextvars.copy_context()
    context.run(_BOUND.set, bound)
    with _RUNNING_LOCK:
        if len(_RUNNING) >= MAX_DOWNLOADS:
            raise ModelUnavailable(
                f"Remote storage '{bound.storage}': {len(_RUNNING)} downloads are running "
                f"already, the most at once (given up ones among them until their threads "
                f"end, within a second or a connection's {TIMEOUT_SETTING}): try "
                f"'{bound.key}' again once they end"
            )
        future = _POOL.submit(context.run, run)
        _RUNNING.add(future)
    future.add_done_callback(_ended)
    return future


def _ended(future: concurrent.futures.Future[None]) -> None:
    with _RUNNING_LOCK:
        _RUNNING.discard(future)


async def _within_bound(bound: _Bound, run: Callable[[], None]) -> None:
    """Run `run` in a worker thread; ModelUnavailable once `bound` has passed. The thread
    can be neither cancelled nor interrupted while it waits on a socket: its connections are
    cut instead (its SDK then fails, and any connection it asks for), and it stops at its
    next write."""
    task = asyncio.wrap_future(_start(bound, run))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while not task.done():
            # The bound grows as the size becomes known and bytes come: asked again when
            # it seems to pass.
            left = started + bound.seconds() - loop.time()
            if left <= 0:
                bound.give_up()
                task.add_done_callback(_forget)
                raise bound.exceeded()
            await asyncio.wait((task,), timeout=min(left, MAX_TIMEOUT))
    except asyncio.CancelledError:
        bound.give_up()
        task.add_done_callback(_forget)
        raise
    task.result()


def _forget(task: asyncio.Future[None]) -> None:
    """A download given up: its end, whatever it is, is nobody's to report."""
    if not task.cancelled():
        task.exception()


async def _download_pinned(
    downloader: Callable[[str, Path, int, float], None],
    key: str,
    target: Path,
    max_bytes: int,
    bound: _Bound,
) -> None:
    """Run `downloader` in a worker thread; if the object was replaced while it was read
    (an upload ending just then), start over with the new version, once: a second
    replacement in a row is ModelUnavailable (an object that keeps changing, or a storage
    that never honours its own version tag), to be tried again later."""
    refused: set[str] = set()  # the versions sized, then refused

    def run() -> None:
        with holding(bound.sockets):  # to be cut when the download is given up
            downloader(key, target, max_bytes, bound.timeout)

    for attempt in range(1, DOWNLOADS_OF_A_REPLACED_OBJECT + 1):
        try:
            await _within_bound(bound, run)
            return
        except _Replaced as replaced:
            refused.add(replaced.version)
            if attempt == DOWNLOADS_OF_A_REPLACED_OBJECT and len(refused) == 1:
                # The same version each time: nothing replaced it (an upload makes a new
                # one); the storage, or a proxy before it, refuses its own version tag.
                raise InvalidConfig(
                    f"{replaced.where} refused, {attempt} times in a row, to read the version "
                    f"it had just stated for '{key}' ({replaced.answer} to "
                    f"{_PINNED_BY[replaced.storage]}: {replaced.version}): it does not honour "
                    "its own version tag (botserver pins its read to it, so that what it reads "
                    "is the object it sized); use a storage that does, or point "
                    f"{_ADDRESS_SETTING[replaced.storage]} at one"
                ) from None
            if attempt == DOWNLOADS_OF_A_REPLACED_OBJECT:
                raise ModelUnavailable(
                    f"'{key}' in {replaced.where} was replaced while it was downloaded, "
                    f"{attempt} times in a row ({replaced.answer} to a read of the version "
                    "sized): try again once the upload that replaces it is done"
                ) from None
            logger.info(
                "'%s' in %s was replaced while it was downloaded (%s): downloading the new version",
                key,
                replaced.where,
                replaced.answer,
            )


# The longest key each storage takes, as it counts: S3 and GCS in UTF-8 bytes, Azure in UTF-16
# code units (an emoji is two), in at most 254 '/'-separated parts. Past these the storage
# answers a 400 that names no limit (Azure's OutOfRangeInput, S3's KeyTooLongError); Azurite
# and moto take any length.
MAX_KEY_LENGTH = 1024
MAX_AZURE_PARTS = 254
_KEY_NAMES = {"aws": "S3 takes object keys", "gcs": "GCS takes object names"}


def _check_key_length(storage: str, key: str) -> None:
    """InvalidConfig, naming the limit, for a key longer than `storage` takes."""
    if storage == "azure":
        measures = [
            (len(key.encode("utf-16-le")) // 2, MAX_KEY_LENGTH, "characters ('.tar.gz' included)"),
            (key.count("/") + 1, MAX_AZURE_PARTS, "'/'-separated parts"),
        ]
        rule = "Azure takes blob names"
    else:
        measures = [
            (len(key.encode("utf-8")), MAX_KEY_LENGTH, "bytes in UTF-8 ('.tar.gz' included)")
        ]
        rule = _KEY_NAMES[storage]
    for length, limit, unit in measures:
        if length > limit:
            raise InvalidConfig(
                f"Remote model name '{key[:40]}...' is too long: {rule} of at most {limit} "
                f"{unit}; this one has {length}"
            )


def _key_not_url(storage: str, url: str) -> str:
    """What to give -m instead of the object's URL (`s3://bucket/key`, `gs://...`, an https
    URL, virtual-hosted, path-style or presigned, Azure's
    `https://account.blob.core.windows.net/container/key`): the key alone."""
    place, setting, what = "bucket (BUCKET_NAME)", "BUCKET_NAME", "bucket"
    if storage == "azure":
        place, setting, what = "container (AZURE_CONTAINER)", "AZURE_CONTAINER", "container"
    _, key = _split_url(url, what, named=os.environ.get(setting, ""))
    return f"-m names the object's key in the {place}, not a URL: give -m {key or 'prod/my-model'}"


# The addresses a storage is configured with: an SDK's error may quote them as given.
_ADDRESS_SETTINGS = ("AWS_ENDPOINT_URL", "AZURE_ACCOUNT_URL", "STORAGE_EMULATOR_HOST")


def _hide_addresses(exc: BotServerError) -> BotServerError:
    """`exc`'s message with each configured address it quotes (botocore's "Invalid endpoint:
    URL", "Custom endpoint `URL` was not a valid URI") shown as safe_url shows it: without
    user, password or query (a signature)."""
    message = str(exc)
    for name in _ADDRESS_SETTINGS:
        address = os.environ.get(name)
        if address and address in message:
            message = message.replace(address, safe_url(address, tolerant=True))
    if message != str(exc):
        exc.args = (message,)
    return exc


def _fits_a_file_name(name: str) -> bool:
    try:
        encoded = os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate from a JSON body's escape
        return False
    return b"\x00" not in encoded and len(encoded) <= 255


def _downloader(storage: str) -> Callable[[str, Path, int, float], None]:
    downloaders = {"aws": _download_aws, "gcs": _download_gcs, "azure": _download_azure}
    try:
        return downloaders[storage]
    except KeyError:
        raise InvalidConfig(
            f"Unknown remote storage {storage!r}: use one of {', '.join(STORAGES)}. "
            "(Custom persistor classes are not supported: we never import code by name.)"
        ) from None


def _needs(storage: str, package: str) -> InvalidConfig:
    """The error for a storage whose client library is not installed: the extra of the same
    name installs it."""
    return needs_extra(f"Remote storage '{storage}'", package, storage)


def _env(name: str, storage: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise InvalidConfig(f"Remote storage '{storage}' needs the environment variable {name}")
    return value


# The request google-api-core puts before the storage's reason ("GET https://...: ").
_REQUEST = re.compile(r"^[A-Z]+ \S+: ")


def _api_message(exc: BaseException) -> str:
    """A google-api-core error's reason: the message of GCS's JSON error, else its text
    without the request before it (a media download's holds the whole body, then
    resumable media's "('Request failed with status code', 503, 'Expected one of', ...)")."""
    try:
        return str(exc.response.json()["error"]["message"])  # type: ignore[attr-defined]
    except (AttributeError, KeyError, TypeError, ValueError):
        return _REQUEST.sub("", getattr(exc, "message", "") or str(exc))


def _transport_failure(
    storage: str, where: str, key: str, timeout: float, exc: BaseException
) -> BotServerError:
    """The error for a request to `where` that failed on its way, or with a failure of the
    storage's own: ModelUnavailable when the storage did not answer in time, could not be
    reached (each SDK wraps these differently: found in the chain of causes) or answered a
    5xx (a 501 is _storage_failed's), else a ModelError that names the storage and the
    SDK's reason. A connection that broke while the object came (fewer bytes than its
    Content-Length, a chunk cut short) is ModelUnavailable too."""
    import http.client

    import urllib3  # the transport under every storage SDK

    causes = list(_causes(exc))
    for seen in causes:
        # (urllib3's failure to connect is a kind of its connect timeout: asked first.) A
        # TLS handshake that fails, and a connection closed unanswered (a proxy without a
        # backend), reach no storage either: a model server failing so is one too.
        if isinstance(seen, (ConnectionError, ssl.SSLError, urllib3.exceptions.NewConnectionError)):
            return ModelUnavailable(f"Cannot reach {where} for '{key}': {seen}")
        if isinstance(seen, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return ModelUnavailable(
                f"{where} did not answer within {timeout:g} s for '{key}' ({TIMEOUT_SETTING}; "
                f"each request tried {ATTEMPTS} times at most)"
            )
    for seen in causes:
        # urllib3's "Connection broken: IncompleteRead(10 bytes read, 990 more expected)".
        if isinstance(seen, (http.client.IncompleteRead, urllib3.exceptions.ProtocolError)):
            detail = next((arg for arg in seen.args if isinstance(arg, Exception)), seen)
            return ModelUnavailable(
                f"{where} broke off the download of '{key}' before its end: {detail!r}"
            )
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)  # Azure's, GCS's
    if isinstance(status, int) and status >= 500:
        reason = getattr(exc, "reason", None) or _api_message(exc)
        return _storage_failed(storage, where, key, status, reason)
    return ModelError(f"Cannot download '{key}' from {where}: {exc}")


# The setting that holds each storage's address, for errors that say to change it.
_ADDRESS_SETTING = {
    "aws": "AWS_ENDPOINT_URL",
    "gcs": "STORAGE_EMULATOR_HOST",
    "azure": "AZURE_ACCOUNT_URL",
}


def _redirected(
    storage: str, where: str, key: str, status: int, location: str | None
) -> InvalidConfig:
    """The error for a storage that answered with a redirect (a proxy, an http address
    redirected to https, a host taken over): never followed, so no model comes from a host
    that is not configured, and no request is signed for another one."""
    shown = safe_url(location, tolerant=True) if location else "an address it did not give"
    return InvalidConfig(
        f"{where} answered '{key}' with a redirect ({status}) to {shown}: botserver follows "
        "no storage's redirects (the model would come from a host not configured); if that "
        f"address is the storage's own (an http address redirected to https), set "
        f"{_ADDRESS_SETTING[storage]} to it"
    )


# An AWS region's name, as S3 gives it in x-amz-bucket-region ("eu-west-1", "us-gov-west-1",
# the European Sovereign Cloud's "eusc-de-east-1"), some 40 characters at most: a value
# that is none (a line break, 80 kB) is neither asked nor quoted.
_REGION = re.compile(r"[a-z]{2,4}(-[a-z0-9]{1,12}){2,3}")


def _redirected_to_region(
    where: str, key: str, status: int, region: str, endpoint: str | None
) -> InvalidConfig:
    """The error for S3's redirect to the bucket's region that came again once botocore
    asked there (it follows one): the region is the setting to change, and an endpoint
    given is an address that does not serve that region."""
    advice = (
        "AWS_ENDPOINT_URL is an address that does not serve it. For AWS, set "
        f"AWS_DEFAULT_REGION={region} and leave AWS_ENDPOINT_URL unset (or set it to an "
        f"address of {region})"
        if endpoint
        else f"set AWS_DEFAULT_REGION={region}"
    )
    return InvalidConfig(
        f"{where} answered '{key}' with a redirect ({status}) to the bucket's region, {region} "
        f"(x-amz-bucket-region), and again when asked in that region: {advice}"
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it, as far as the chain goes (each SDK wraps a transport's
    failure its own way; Azure keeps it aside rather than as the cause)."""
    seen: BaseException | None = exc
    for _ in range(20):  # a chain is short; never loop on a cycle
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "inner_exception", None)


def _asked(where: str, key: str) -> str:
    """Who was asked for what, as an error about its answer names them."""
    return f"{where}, asked for '{key}',"


def _refused_request(where: str, key: str, answer: str) -> InvalidConfig:
    """The error for a request the storage answered 400 that no case above names: one it
    never serves as sent (no retry, nor a fix of botserver's, helps), the settings' or the
    object's to change. `answer`: the storage's code and reason."""
    return InvalidConfig(f"{where} refused the request for '{key}' ({answer})")


# What a storage that answers 501 Not Implemented refuses, and what to change.
_NOT_IMPLEMENTED = {
    "aws": (
        "botserver reads the object with HeadObject, then GetObject with If-Match (the ETag "
        "read) and boto3's x-amz-checksum-mode. For a storage without S3's checksums (asked "
        "for by boto3 since 1.36) set AWS_RESPONSE_CHECKSUM_VALIDATION=when_required; else "
        "upgrade the storage, or point AWS_ENDPOINT_URL at one that serves these"
    ),
    "gcs": (
        "botserver reads the object's metadata, then its media with ifGenerationMatch (JSON "
        "API): upgrade the emulator (STORAGE_EMULATOR_HOST), or use one that serves these"
    ),
    "azure": (
        "botserver reads the blob's properties, then the blob in ranges with If-Match (its "
        "ETag): upgrade the storage or emulator, or point AZURE_ACCOUNT_URL at one that "
        "serves these"
    ),
}


def _storage_failed(storage: str, where: str, key: str, status: int, reason: str) -> BotServerError:
    """The error for a storage that answered a failure of its own (a 5xx: an outage, S3's
    SlowDown) after the SDK's retries: unavailable for now, as a model server's 5xx is.
    A 501 is no outage but a feature the storage refuses (MinIO's NotImplemented for a
    header it lacks): a configuration error saying what botserver asks for."""
    if status == 501:
        return InvalidConfig(
            f"{where} does not implement a request botserver made for '{key}' ({status}: "
            f"{reason}); this is a refusal, not an outage: {_NOT_IMPLEMENTED[storage]}"
        )
    return ModelUnavailable(
        f"{where} failed to answer for '{key}' ({status}: {reason}); each request tried "
        f"{ATTEMPTS} times at most"
    )


def _too_large(key: str, size: int | None, max_bytes: int) -> None:
    bound = _BOUND.get()
    if bound is not None and isinstance(size, int):  # the whole download's bound grows
        bound.size = size
    # The archive's fault, as a model server's too large answer is: refused as unsafe.
    if size is not None and size > max_bytes:
        raise UnsafeArchive(f"Remote model '{key}' is {size} bytes, more than {max_bytes}")


class _CappedFile:
    """A file open for writing that refuses to grow past `max_bytes`.

    The size checked before a download is a promise the storage may break: the object can be
    replaced by a larger one just then, or a server can lie. Writes are sequential.
    """

    def __init__(self, path: Path, key: str, max_bytes: int) -> None:
        self._handle = path.open("wb")
        self._key = key
        self._max_bytes = max_bytes
        self._size = 0

    def write(self, data: bytes) -> int:
        bound = _BOUND.get()
        if bound is not None and bound.given_up.is_set():  # the bound passed: nobody waits
            raise bound.exceeded()
        self._size += len(data)
        if bound is not None:
            bound.received = self._size
        if self._size > self._max_bytes:
            raise UnsafeArchive(
                f"Remote model '{self._key}' grew past {self._max_bytes} bytes while it was "
                "downloaded (replaced by a larger one, or the storage's size was wrong)"
            )
        return self._handle.write(data)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _CappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CHUNK_BYTES = 1024 * 1024


def _download_aws(key: str, target: Path, max_bytes: int, timeout: float) -> None:
    try:
        import boto3  # noqa: F401 (missing: the extra is named)
        from botocore.config import Config
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            CredentialRetrievalError,
            EndpointResolutionError,
            FlexibleChecksumError,
            NoCredentialsError,
        )
    except ImportError as exc:
        raise _needs("aws", "boto3") from exc
    bucket = _bucket_name("aws")
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    at = f" at {_storage_address('AWS_ENDPOINT_URL', endpoint, _S3_SERVICE)}" if endpoint else ""
    where = f"S3 bucket '{bucket}'{at}"
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
    )
    # Also the default of the clients its credential providers make: STS, asked for keys
    # when they come from a web identity (EKS), held a download for 5 minutes without it.
    try:
        client = boto3_session(config).client("s3", endpoint_url=endpoint, config=config)
    except CredentialRetrievalError as exc:
        # Fetched as the client is made (ECS container credentials, a credential_process):
        # their source failed, not the settings named below.
        raise ModelUnavailable(
            f"Remote storage 'aws' got no credentials for '{key}': {exc}"
        ) from None
    except BotoCoreError as exc:
        # A profile or config file that cannot be used, a region that is no name: nothing
        # has been asked of the storage yet.
        raise InvalidConfig(
            f"Remote storage 'aws' cannot be set up to download '{key}': {exc} (check "
            "AWS_PROFILE, AWS_CONFIG_FILE and AWS_DEFAULT_REGION)"
        ) from None
    except ValueError as exc:  # botocore's "Invalid endpoint"
        raise _unusable_endpoint(endpoint or "", exc) from None
    client.meta.events.register_first("needs-retry.s3", _refuse_s3_redirect)
    # (botocore's session: no public name reaches it, see _close_pools)
    bound_botocore_errors(client._endpoint.http_session, _asked(where, key))
    pinned: dict[str, str] = {}
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        _too_large(key, head.get("ContentLength"), max_bytes)
        pinned = {"IfMatch": head["ETag"]} if head.get("ETag") else {}  # the object sized
        body = client.get_object(Bucket=bucket, Key=key, **pinned)["Body"]
        with body, _CappedFile(target, key, max_bytes) as handle:
            for chunk in body.iter_chunks(_CHUNK_BYTES):
                handle.write(chunk)
    except ClientError as answer:
        error = answer
        if _s3_code(error) == "PreconditionFailed":  # the If-Match: replaced since the HEAD
            raise _Replaced("aws", where, "PreconditionFailed", pinned.get("IfMatch")) from None
        metadata = error.response.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode")
        if isinstance(status, int) and 300 <= status < 400:  # botocore follows a region's, once
            headers, said = metadata.get("HTTPHeaders", {}), error.response.get("Error", {})
            region = headers.get("x-amz-bucket-region") or said.get("Region")
            if isinstance(region, str) and _REGION.fullmatch(region):
                raise _redirected_to_region(where, key, status, region, endpoint) from None
            location = headers.get("location") or said.get("Endpoint")
            raise _redirected("aws", where, key, status, location) from None
        if _s3_code(error) in ("400", "403") and error.operation_name == "HeadObject":
            # A HEAD's 400 or 403 has no body to say why (an expired session token, a bucket
            # name the storage refuses, an object encrypted with a customer's key, a key
            # that is no key, a clock that is off): a GET's does.
            error = _s3_get_refusal(client, bucket, key) or error
        code = _s3_code(error)
        if code == "InvalidBucketName":
            message = error.response.get("Error", {}).get("Message") or "not valid"
            raise _bucket_name_refused(
                bucket, f"the storage{at}", f"{code}: {message}", _S3_BUCKET_RULE
            ) from None
        if code == "NoSuchBucket" or (
            code in _S3_MISSING and not _s3_bucket_exists(client, bucket)
        ):
            raise StorageNotFound(f"{where} does not exist ({_NEVER_CREATED})") from error
        if code in _S3_MISSING:
            raise ModelNotFound(f"No model '{key}' in S3 bucket '{bucket}'") from error
        if code in ("403", "AccessDenied"):
            raise InvalidConfig(
                f"{where} refused to give '{key}' ({code}): check the credentials "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and that they may "
                "read it (s3:GetObject; without s3:ListBucket S3 answers so for a missing "
                "object too)"
            ) from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise InvalidConfig(
                f"{where} refused the credentials for '{key}' ({code}): check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from None
        if code in _S3_TOKEN_REFUSED:
            raise InvalidConfig(
                f"{where} refused the credentials for '{key}' ({code}): a session token "
                "(AWS_SESSION_TOKEN, or a role's) that expired or is not valid: renew the "
                "credentials"
            ) from None
        if code == "AuthorizationHeaderMalformed":  # MinIO's, of a region not its own
            message = error.response.get("Error", {}).get("Message") or "a region not its own"
            raise InvalidConfig(
                f"{where} refused the region the request was signed for ({code}: {message}): "
                "set AWS_DEFAULT_REGION to the storage's"
            ) from None
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 400:  # a request S3 never serves (an object with a customer's key: SSE-C)
            message = error.response.get("Error", {}).get("Message") or "Bad Request"
            raise _refused_request(where, key, f"{code}: {message}") from None
        if isinstance(status, int) and status >= 500:
            reason = error.response.get("Error", {}).get("Message") or code
            reason = f"{error.operation_name}: {code}: {reason}" if status == 501 else reason
            raise _storage_failed("aws", where, key, status, reason) from error
        raise ModelError(f"Cannot download '{key}' from {where}: {error}") from error
    except NoCredentialsError:
        raise InvalidConfig(
            "Remote storage 'aws' found no credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an IAM role gives them"
        ) from None
    except EndpointResolutionError as exc:
        # Settings botocore cannot make the S3 address from, found at the first request
        # (an AWS_ENDPOINT_URL with a query: "Custom endpoint `...` was not a valid URI").
        if endpoint and "endpoint" in str(exc).lower():
            raise _unusable_endpoint(endpoint, exc) from None
        raise InvalidConfig(
            f"Remote storage 'aws' cannot address S3 bucket '{bucket}': {exc} (check "
            "AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and BUCKET_NAME)"
        ) from None
    except _S3Redirect as redirect:
        raise _redirected("aws", where, key, redirect.status, redirect.location) from None
    except FlexibleChecksumError as exc:  # botocore checks what S3 states, at the end
        raise ModelUnavailable(
            f"{where} sent '{key}' with bytes that do not match its checksum ({exc}): changed "
            "on the way or in the storage; nothing was loaded"
        ) from None
    except BotoCoreError as exc:
        raise _transport_failure("aws", where, key, timeout, exc) from exc
    finally:
        _close_pools(getattr(getattr(client, "_endpoint", None), "http_session", None))
        client.close()  # its connections, else kept past the load


class _S3Redirect(Exception):
    """A redirect that names no region, raised from botocore's retry hook."""

    def __init__(self, status: int, location: str | None) -> None:
        super().__init__(status, location)
        self.status = status
        self.location = location


def _refuse_s3_redirect(response: Any = None, **_: Any) -> None:
    """botocore's hook before its region redirector: a redirect that names no region (no
    x-amz-bucket-region, as S3's own carry) is no region's, and ends the request. Else the
    redirector asks the bucket's region with a HEAD of the bucket, redirected too, and so on
    until a RecursionError, hundreds of requests later. One that names what is no region's
    name ends it too: botocore's error quoted the value whole (a line break, 80 kB)."""
    if response is None or response[0] is None:  # a transport's failure
        return
    answer, parsed = response
    if not 300 <= answer.status_code < 400:
        return
    # botocore's redirector reads the header first, then the body's <Region>.
    region = answer.headers.get("x-amz-bucket-region")
    region = parsed.get("Error", {}).get("Region") if region is None else region
    if isinstance(region, str) and _REGION.fullmatch(region):
        return
    location = answer.headers.get("location") or parsed.get("Error", {}).get("Endpoint")
    raise _S3Redirect(answer.status_code, location)


_NEVER_CREATED = "BUCKET_NAME; botserver never creates buckets"
# The names a storage takes for a bucket, told when it refuses one.
_S3_BUCKET_RULE = "S3's are 3 to 63 lowercase letters, digits, '.' and '-'"
_GCS_BUCKET_RULE = (
    "GCS's are 3 to 63 lowercase letters, digits, '-', '_' and '.' (222 with dots), without "
    "'goog' first nor 'google'"
)


def _bucket_name_refused(bucket: str, storage: str, answer: str, rule: str) -> InvalidConfig:
    """The error for a BUCKET_NAME the storage refused with `answer`: a setting to fix."""
    return InvalidConfig(
        f"BUCKET_NAME {bucket!r} is no bucket name {storage} takes ({answer}): {rule}"
    )


# S3's codes for no such object (a HEAD's answer has no body: its status alone).
_S3_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# A session token refused (a HEAD's 400: botocore follows a wrong region's on its own).
_S3_TOKEN_REFUSED = frozenset({"400", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"})


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_get_refusal(client: Any, bucket: str, key: str) -> Any:
    """The error S3 answers a GET of the object's first byte with (its body names the
    code), or None when the GET answers no S3 error."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
    except ClientError as exc:
        return exc
    except BotoCoreError:
        pass
    return None


def _s3_bucket_exists(client: Any, bucket: str) -> bool:
    """False only when S3 says `bucket` does not exist (a HEAD of a missing object and of
    an object in a missing bucket answer the same 404)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return _s3_code(exc) not in ("404", "NoSuchBucket")
    except BotoCoreError:
        pass  # the object's 404 stands
    return True


def _unusable_endpoint(endpoint: str, exc: Exception) -> InvalidConfig:
    shown = safe_url(endpoint, tolerant=True)  # no credentials
    return InvalidConfig(f"AWS_ENDPOINT_URL {shown!r} is not usable: {exc}")


# What a storage address should name, in the error when it cannot.
_S3_SERVICE = "the S3 service, such as http://127.0.0.1:9000 for MinIO"
_BLOB_SERVICE = "the blob service, such as http://127.0.0.1:10000/devstoreaccount1 for Azurite"


def _storage_address(variable: str, url: str, service: str) -> str:
    """`url`, the address a storage is configured with (`variable`), as errors show it.
    Raises InvalidConfig when no request could go to it: not http(s), no host, a port out of
    range (the SDKs fail only at the request, then with an error of their own)."""
    why = ""
    try:
        parts = urlsplit(url)
        shown = safe_url(url)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError as exc:
        usable, why = False, f"{exc}; "
    if not usable:
        raise InvalidConfig(
            f"{variable} {safe_url(url, tolerant=True)!r} is not usable: {why}give the "
            f"http(s) URL of {service}"
        )
    return shown


def _close_pools(session: Any) -> None:
    """Close the connections an HTTP session keeps (requests', or botocore's own): closing it
    only lets go of its pools (urllib3 2's PoolManager.clear()), whose connections close when
    a pool is collected, and an SDK's error that holds a response, in a cycle of references,
    holds its pool and connection until a garbage collection. The clients' public close()
    (boto3's, GCS's, Azure's) is that clearing; requests' session and urllib3's pools are
    public, botocore's session and its managers are not (nor GCS's client `_http`): no public
    name reaches them in boto3 1.43 or google-cloud-storage 3."""
    managers = [
        getattr(adapter, "poolmanager", None)
        for adapter in getattr(session, "adapters", {}).values()
    ]
    managers.append(getattr(session, "_manager", None))  # botocore's URLLib3Session
    managers.extend(getattr(session, "_proxy_managers", {}).values())
    for manager in managers:
        pools: Any = getattr(manager, "pools", None)
        for key in list(pools.keys()) if pools is not None else []:
            pool = pools.get(key)
            if pool is not None:
                pool.close()


def _gcs_retry_rule() -> Callable[[Exception], bool]:
    """Which failures a GCS request tries again: google-cloud-storage's own rule (its
    DEFAULT_RETRY's, a private function, checked against 3.17), else, in a release without
    it or where it fails, _gcs_transient: the same rule in public terms (before, google-api-core's
    `if_transient_error`, which tried no download again: a media read's 503 is the
    resumable-media InvalidResponse it does not know)."""
    from google.cloud.storage import retry as gcs_retry

    sdk_rule = getattr(gcs_retry, "_should_retry", None)
    if not callable(sdk_rule):
        return _gcs_transient

    def rule(exc: Exception) -> bool:
        try:
            return bool(sdk_rule(exc))
        except Exception:  # a private function whose signature changed
            return _gcs_transient(exc)

    return rule


# The statuses google-cloud-storage tries again (and S3's and Azure's SDKs).
_GCS_RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _gcs_transient(exc: Exception) -> bool:
    """A GCS failure worth one more try: a connection that failed, dropped or timed out, a
    body cut short, or a status in _GCS_RETRIED_STATUSES, whether google-api-core's error
    (metadata) or the InvalidResponse of a media download (`.response.status_code`)."""
    import http.client

    import requests
    import urllib3
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import TransportError

    if isinstance(exc, TransportError) and exc.args and isinstance(exc.args[0], Exception):
        exc = exc.args[0]  # google-auth's wrapper of the transport's failure
    transient = (
        ConnectionError,
        TimeoutError,
        requests.exceptions.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.Timeout,
        http.client.IncompleteRead,
        http.client.BadStatusLine,
        http.client.ResponseNotReady,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.SSLError,
        urllib3.exceptions.TimeoutError,
        urllib3.exceptions.PoolError,
    )
    if isinstance(exc, transient):
        return True
    if isinstance(exc, gexc.GoogleAPICallError):
        return exc.code in _GCS_RETRIED_STATUSES
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status in _GCS_RETRIED_STATUSES


def _download_gcs(key: str, target: Path, max_bytes: int, timeout: float) -> None:
    try:
        import requests  # google-cloud-storage's transport
        import urllib3
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import storage
        from google.cloud.storage.retry import DEFAULT_RETRY
    except ImportError as exc:
        raise _needs("gcs", "google-cloud-storage") from exc
    should_retry = _gcs_retry_rule()
    bucket_name = _bucket_name("gcs")
    where = f"GCS bucket '{bucket_name}'"

    def bounds() -> dict[str, Any]:
        """One request's (connect, read) timeouts and retries: ATTEMPTS tries at most, as
        S3's and Azure's (google-api-core counts no tries: its retries end at a deadline
        alone, so a refused connection, failing at once, was tried with back-off until
        ATTEMPTS timeouts had passed: a minute by default)."""
        failures = itertools.count(1)

        def retried(exc: Exception) -> bool:
            return bool(should_retry(exc)) and next(failures) < ATTEMPTS

        retry = DEFAULT_RETRY.with_timeout(ATTEMPTS * timeout).with_predicate(retried)
        return {"timeout": (timeout, timeout), "retry": retry}

    client = None
    try:
        client = storage.Client()
        # google-cloud-storage 3.17 fetches the bucket's metadata, for tracing, in a thread
        # of its own at the first request: a request more per download (storage.buckets.get,
        # refused to credentials that may read objects alone), tried again for up to 120 s
        # when the storage fails, past the download's end. None turns it off.
        if getattr(client, "_bucket_metadata_cache", None) is not None:
            client._bucket_metadata_cache = None
        # requests follows redirects, to any host: S3's and Azure's clients are told not to.
        client._http.max_redirects = 0
        client._http.hooks["response"].append(requests_hook(_asked(where, key)))
        bucket = client.bucket(bucket_name)
        blob = bucket.get_blob(key, **bounds())
        if blob is None:
            # The same 404 for an object in a missing bucket: told apart (a 403 for the
            # bucket, credentials that may read objects alone: it stands).
            try:
                missing = not bucket.exists(**bounds())
            except gexc.Forbidden:
                missing = False
            if missing:
                raise StorageNotFound(f"{where} does not exist ({_NEVER_CREATED})")
            raise ModelNotFound(f"No model '{key}' in GCS bucket '{bucket_name}'")
        _too_large(key, blob.size, max_bytes)
        with _CappedFile(target, key, max_bytes) as handle:
            # The bytes as stored: an archive is compressed already, and an object stored
            # with `contentEncoding: gzip` would be decompressed (a gzip bomb on the disk).
            try:
                blob.download_to_file(
                    handle, if_generation_match=blob.generation, raw_download=True, **bounds()
                )
            except (gexc.NotFound, gexc.PreconditionFailed) as exc:
                # The generation sized is gone (a 404, the bucket keeping no versions) or no
                # longer the live one (a 412): replaced since (a deleted one: "No model").
                raise _Replaced("gcs", where, str(exc.code), blob.generation) from None
    except gexc.NotFound as exc:
        raise ModelNotFound(f"No model '{key}' in GCS bucket '{bucket_name}'") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise InvalidConfig(
            f"{where} refused to give '{key}' ({exc.code}: {_api_message(exc)}): "
            "check the credentials (GOOGLE_APPLICATION_CREDENTIALS) and that they may read "
            "it (storage.objects.get)"
        ) from None
    except gexc.BadRequest as exc:
        # A request GCS never serves: a bucket name it refuses (a 500 before), a
        # requester-pays bucket read without a billing project.
        reason = _api_message(exc)
        if "bucket name" in reason.lower():
            raise _bucket_name_refused(
                bucket_name, "GCS", f"400: {reason}", _GCS_BUCKET_RULE
            ) from None
        raise _refused_request(where, key, f"400: {reason}") from None
    except gexc.RetryError as exc:  # the retries' time ran out: why the last one failed
        raise _transport_failure("gcs", where, key, timeout, exc.cause or exc) from exc
    except gexc.GoogleAPIError as exc:
        raise _transport_failure("gcs", where, key, timeout, exc) from exc
    except GoogleAuthError as exc:  # no credentials, or unusable ones
        raise InvalidConfig(f"Remote storage 'gcs' cannot authenticate: {exc}") from None
    except requests.exceptions.TooManyRedirects as exc:  # the first: none is followed
        answer = exc.response
        status = answer.status_code if answer is not None else 300
        location = answer.headers.get("Location") if answer is not None else None
        raise _redirected("gcs", where, key, status, location) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
        # Only an emulator's address can make the client's URLs unusable.
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        raise InvalidConfig(
            f"STORAGE_EMULATOR_HOST {host!r} is not usable ({exc}): give the emulator's "
            "http URL, such as http://127.0.0.1:9023"
        ) from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _transport_failure("gcs", where, key, timeout, exc) from exc
    finally:
        if client is not None:  # its HTTP session and connections, else kept past the load
            _close_pools(client._http)
            client.close()


# The size of the reads of a blob's body: azure-storage-blob's own (256 KiB), which it gives
# the transport it makes (azure-core's default is 4 KiB).
_AZURE_READ_BLOCK = 256 * 1024
# The most of a blob azure-storage-blob asks for in one request, its first and each later one
# (its defaults: 32 MiB, then 4 MiB). It reads each answer whole into memory before giving
# any of it, into a list it first sizes at a slot (8 bytes) for each byte the answer states:
# about 11 times what it asked for at its peak (44 MiB here, 350 MiB for its first 32 MiB).
_AZURE_RANGE = 4 * 1024 * 1024
# The most any other success of the blob service may state (a page blob's list of ranges),
# which the SDK reads whole too.
_AZURE_OTHER_BODY = 1024 * 1024


def _azure_transport(where: str, key: str, timeout: float) -> Any:
    """azure-core's requests transport, refusing any answer whose body the SDK would read
    into memory and that states more than it asked for (a range of the blob) or more than
    _AZURE_OTHER_BODY (anything else), or does not state its length: azure-storage-blob
    reads a range's answer until it ends, whatever the range asked. Before, a storage
    answering the first range with a body stating 4 GiB had the SDK ask for a list of 32 GiB
    (a MemoryError), and one stating less had what it sent read into memory."""
    from azure.core.pipeline.transport import RequestsTransport

    bound_body = requests_hook(_asked(where, key))

    class RangeBoundTransport(RequestsTransport):
        def open(self) -> None:
            # An error's body read within MAX_ERROR_BODY as its session receives it: a
            # connection broken meanwhile is azure-core's error (retried), as when it reads.
            super().open()
            hooks = self.session.hooks["response"]
            if bound_body not in hooks:
                hooks.append(bound_body)

        def send(self, request: Any, **kwargs: Any) -> Any:
            response = super().send(request, **kwargs)
            refusal = _azure_body_refusal(request, response, where, key)
            if refusal is not None:
                response.internal_response.close()
                raise refusal
            return response

    return RangeBoundTransport(
        connection_timeout=timeout,
        read_timeout=timeout,
        connection_data_block_size=_AZURE_READ_BLOCK,
    )


_RANGE = re.compile(r"bytes=([0-9]+)-([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit: '²' is a digit int() refuses


def _azure_body_refusal(request: Any, response: Any, where: str, key: str) -> UnsafeArchive | None:
    """Why the SDK must not read `response`'s body, if it must not: a blob not a block blob,
    a range's answer that does not state a length within the range, another success stating
    more than _AZURE_OTHER_BODY, or without a length (an error's body is read within
    MAX_ERROR_BODY)."""
    kind = response.headers.get("x-ms-blob-type")
    if kind is not None and kind != "BlockBlob":
        # The SDK makes up a page blob's bytes missing from its list of ranges (zeros, up to
        # the size stated) instead of reading them. Rasa's uploads and the Azure tools'
        # default are block blobs.
        return UnsafeArchive(
            f"{where} answered a request for '{key}' as a blob of type {kind!r} "
            "(x-ms-blob-type): botserver downloads block blobs only (what Rasa uploads and "
            "the Azure tools make by default): upload the model again as a block blob"
        )
    if request.method == "HEAD" or not 200 <= response.status_code < 300:
        return None
    stated = response.headers.get("Content-Length")
    asked = _RANGE.fullmatch(request.headers.get("x-ms-range") or "")
    if asked is not None:
        most = int(asked.group(2)) - int(asked.group(1)) + 1
        what, bound = f"bytes {asked.group(1)}-{asked.group(2)} of", "the bytes asked for"
    else:
        most, what, bound = _AZURE_OTHER_BODY, "a request for", "what botserver reads of one"
    if stated is not None and _DIGITS.fullmatch(stated) and int(stated) <= most:
        return None
    length = f"{stated} bytes" if stated is not None else "unstated length (no Content-Length)"
    return UnsafeArchive(
        f"{where} answered {what} '{key}' with a body of {length}, more than "
        f"{bound} ({most} bytes): refused before reading it"
    )


def _download_azure(key: str, target: Path, max_bytes: int, timeout: float) -> None:
    try:
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            AzureError,
            HttpResponseError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.storage.blob import BlobServiceClient, LinearRetry
    except ImportError as exc:
        raise _needs("azure", "azure-storage-blob") from exc
    container = _container_name()
    account = _env("AZURE_ACCOUNT_NAME", "azure")
    account_key = _azure_account_key()
    # AZURE_ACCOUNT_URL (our addition) points at Azurite or a sovereign cloud.
    url = os.environ.get("AZURE_ACCOUNT_URL") or f"https://{account}.blob.core.windows.net/"
    shown = _storage_address("AZURE_ACCOUNT_URL", url, _BLOB_SERVICE)
    where = f"Azure container '{container}' at {shown}"
    # Made here, not by the client (which gives it what follows), so that its session is ours
    # to close the connections of, through no private attribute.
    transport = _azure_transport(where, key, timeout)
    try:
        service = BlobServiceClient(
            account_url=url,
            credential={"account_name": account, "account_key": account_key},
            transport=transport,
            # Its default waits 15 s, then 45, then 135 before its three retries.
            retry_policy=LinearRetry(backoff=1, random_jitter_range=1, retry_total=ATTEMPTS - 1),
            permit_redirects=False,  # else followed to any host
            max_single_get_size=_AZURE_RANGE,
            max_chunk_get_size=_AZURE_RANGE,
        )
    except ValueError as exc:  # azure's: a URL no request could go to
        raise InvalidConfig(
            f"AZURE_ACCOUNT_URL {shown!r} is not usable: {exc}; give the http(s) URL of "
            + _BLOB_SERVICE
        ) from None
    etag = None  # the version sized
    try:
        blob = service.get_blob_client(container=container, blob=key)
        properties = blob.get_blob_properties()
        etag = properties.etag
        _too_large(key, properties.size, max_bytes)
        download = blob.download_blob(  # the blob that was sized, or an error
            etag=properties.etag,
            match_condition=MatchConditions.IfNotModified,
            decompress=False,  # the bytes as stored, as for GCS
        )
        with _CappedFile(target, key, max_bytes) as handle:
            for chunk in download.chunks():
                handle.write(chunk)
    except ResourceModifiedError as exc:  # the If-Match of a read: replaced since it was sized
        code = getattr(exc, "error_code", None)
        answer = str(getattr(code, "value", code) or exc.status_code)
        raise _Replaced("azure", where, answer, etag) from None
    except ResourceNotFoundError as exc:
        # (error_code: the storage SDK's addition to azure-core's exception)
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise StorageNotFound(
                f"{where} does not exist (AZURE_CONTAINER; botserver never creates containers)"
            ) from exc
        raise ModelNotFound(f"No model '{key}' in Azure container '{container}'") from exc
    except AzureError as exc:
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        named = getattr(exc, "error_code", None)
        code = getattr(named, "value", named) or status
        if status is not None and 300 <= status < 400:
            response = getattr(exc, "response", None)
            location = response.headers.get("Location") if response is not None else None
            raise _redirected("azure", where, key, status, location) from None
        if status == 400:  # a request Azure never serves (InvalidUri, OutOfRangeInput...)
            reason = getattr(exc, "reason", None) or "Bad Request"
            raise _refused_request(where, key, f"{code}: {reason}") from None
        if status in (401, 403):
            advice = "check AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY"
            if code != "AuthenticationFailed":  # Azure's for a key that signs wrong alone
                # AuthorizationFailure: a firewall's refusal too (and Azurite's for a key);
                # KeyBasedAuthenticationNotPermitted: an account without shared keys.
                advice += (
                    ", and that the account lets this server in (its firewall: networks "
                    "allowed) and allows shared key access"
                )
            raise InvalidConfig(
                f"Azure storage at {shown} refused the credentials of account '{account}' "
                f"({code}): {advice}"
            ) from None
        raise _transport_failure("azure", where, key, timeout, exc) from exc
    finally:
        _close_pools(transport.session)  # None once closed: read before
        service.close()  # its HTTP session and connections, else kept past the load
