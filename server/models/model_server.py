"""Pulling models from a model server (the `models:` section of endpoints.yml).

GET with `If-None-Match: <current fingerprint>`; 200 loads the body (its ETag becomes the
fingerprint), 204/304 mean no change, anything else keeps the current model.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import shutil
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from server.errors import (
    CorruptArchive,
    InvalidConfig,
    ModelError,
    ModelStorageFull,
    ModelSuperseded,
    SignatureError,
    UnsafeArchive,
    UnsupportedModel,
    clipped,
)
from server.http_bodies import Inflater
from server.http_clients import (
    async_client,
    basic_auth_credentials,
    cookie_jar_keeping_none,
    header_values,
)
from server.models.holder import ModelHolder, is_disk_full
from server.models.shared_pulls import SharedPulls, shared_pulls
from server.tasks import stop
from server.urls import safe_url, url_as_rasa_reads
from server.worker_claims import first_to_say

logger = logging.getLogger(__name__)

DEFAULT_WAIT_TIME_BETWEEN_PULLS = 100.0
# The whole exchange, as Rasa's (a large model over a slow link takes time)...
DEFAULT_TIMEOUT = 300.0
# ...but a server that sends nothing for this long (to connect, or between bytes) has failed:
# it held a pull, and the start-up waiting for the first one, for the whole 300 s.
DEFAULT_READ_TIMEOUT = 30.0
_WRITE_BATCH = 1024 * 1024
# How often a worker of `--workers N` that does not pull looks for what the puller loaded.
FOLLOW_SECONDS = 1.0
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class ModelServerConfig:
    """The `models:` endpoint: where to pull from, how, and how often."""

    url: str
    token: str | None = None
    token_name: str = "token"
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, bytes] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None
    # None or 0: pull once at startup, never again.
    wait_time_between_pulls: float | None = DEFAULT_WAIT_TIME_BETWEEN_PULLS
    timeout: float = DEFAULT_TIMEOUT
    # Seconds without a byte (connecting included), at most `timeout`.
    read_timeout: float = DEFAULT_READ_TIMEOUT

    # The keys `from_endpoint` reads.
    SETTINGS_KEYS = frozenset(
        {"url", "token", "token_name", "params", "headers", "basic_auth"}
        | {"wait_time_between_pulls", "timeout", "read_timeout"}
    )

    @property
    def shown_url(self) -> str:
        """`url` as errors, the log and /status show it: no user, password, query (a token,
        a presigned URL's signature) or fragment (`safe_url`)."""
        return safe_url(self.url, tolerant=True)

    @classmethod
    def from_endpoint(cls, config: dict[str, Any]) -> ModelServerConfig:
        """The config of a `models:` section (or a PUT /model body); InvalidConfig if unusable."""
        url = config.get("url")
        if isinstance(url, str):  # `${URL}` from a file ending in a line break: as Rasa
            url = url_as_rasa_reads(url)
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url, re.IGNORECASE):
            shown = safe_url(url, tolerant=True) if isinstance(url, str) else url
            raise InvalidConfig(f"models.url must be an http(s) URL, got {shown!r}")
        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InvalidConfig(
                f"models.url is not a valid URL ({exc}): {clipped(safe_url(url, tolerant=True))!r}"
            ) from None
        try:
            basic_auth = basic_auth_credentials(config.get("basic_auth"))
        except InvalidConfig as exc:
            raise InvalidConfig(f"models: {exc}") from None
        wait = _seconds(config, "wait_time_between_pulls", DEFAULT_WAIT_TIME_BETWEEN_PULLS)
        timeout = _seconds(config, "timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT
        read_timeout = _seconds(config, "read_timeout", DEFAULT_READ_TIMEOUT)
        endpoint = cls(
            url=url,
            token=str(config["token"]) if config.get("token") else None,
            token_name=str(config.get("token_name") or "token"),
            params=_mapping(config, "params"),
            headers=_headers(config),
            basic_auth=basic_auth,
            wait_time_between_pulls=wait or None,
            timeout=timeout,
            read_timeout=min(read_timeout or DEFAULT_READ_TIMEOUT, timeout),
        )
        try:
            endpoint.request_url()
        except httpx.InvalidURL as exc:  # neither quoted: they may hold the token
            raise InvalidConfig(
                f"models: the URL with 'params' and 'token' added is not a valid URL ({exc})"
            ) from None
        return endpoint

    def request_url(self) -> httpx.URL:
        """The URL a pull asks: `params` and the token added to the URL's own query (a
        presigned URL's signature, an `?apikey=`), as aiohttp does for Rasa; httpx's
        `params=` would replace that query, even when empty."""
        params = dict(self.params)
        if self.token:
            params[self.token_name] = self.token
        return httpx.URL(self.url).copy_merge_params(params)


def _seconds(config: dict[str, Any], key: str, default: float) -> float | None:
    """A duration setting: None when unset or null, else a finite number of seconds >= 0."""
    value = config.get(key, default)
    if value in (None, "", "null", "None"):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):  # (an integer no float holds)
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidConfig(f"models.{key} must be seconds, got {value!r}")
    return seconds


def _headers(config: dict[str, Any]) -> dict[str, bytes]:
    headers = header_values(_mapping(config, "headers"), "models.headers")
    for name, value in headers.items():
        if not value.isascii():
            raise InvalidConfig(f"models.headers: '{name}' must be an ASCII name and value")
    return headers


def _mapping(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        # The value is not quoted: it may hold a token.
        raise InvalidConfig(f"models.{key} must be a mapping of names to values")
    return dict(value)


class ModelServerPoller:
    """Pulls from a model server into a ModelHolder, once or on a schedule.

    Uses the given shared `httpx.AsyncClient` (or creates and owns one). Its pulls answer the
    request that made it (`ticket`, see ModelHolder.ticket): once a newer request for a model
    (a PUT or DELETE /model) has been served, a pull finishing later is discarded and the
    pulls stop.
    """

    def __init__(
        self,
        holder: ModelHolder[Any],
        config: ModelServerConfig,
        client: httpx.AsyncClient | None = None,
        ticket: int | None = None,
    ):
        self.holder = holder
        self.ticket = holder.ticket() if ticket is None else ticket
        self.superseded = False
        self.config = config
        # Keeping no cookie: Rasa opens a session per pull and never sends one back.
        self._client = client or async_client(cookies=cookie_jar_keeping_none())
        self._owns_client = client is None
        self._task: asyncio.Task[None] | None = None
        # The failure of the latest pull (None once one works), when it happened and since
        # when pulls fail: what GET /status shows as `last_pull_error`.
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.failing_since: datetime | None = None
        self.disk_full = False  # the latest pull failed for want of disk space (the server's)
        # The fingerprint (ETag or sha256) of the latest model refused for its bytes, and
        # why: served again, it is not downloaded (with an ETag) or unpacked (without) again,
        # unless the verify key it was checked with has changed (its file is read at each
        # load: an operator may fix it without a restart).
        self._refused: tuple[str, str] | None = None
        self._refused_key: bytes | str | None = None  # the verify key then
        self._key_now: bytes | str | None = None  # the verify key at this pull
        # With `--workers N`: the pulls one worker makes for all (None in one process).
        self._shared: SharedPulls | None = shared_pulls(config.url)
        self._follow_after = 0.0  # a published model failed to load here: not before then
        # Its own latest pull failed before it began to follow (start()): it pulls on its own
        # until one works, as the worker that pulls for all publishes only a model it changes.
        self._on_its_own = False
        self._anew = False  # the latest pull_once was a PUT /model's (its `anew`)

    async def pull_once(
        self,
        *,
        anew: bool = False,
        keep: Callable[[Path, str, str], Awaitable[None]] | None = None,
    ) -> bool:
        """One exchange with the model server; True when a new model was loaded.

        `anew` (a PUT /model, as Rasa's new agent, which has no fingerprint yet): asked
        without `If-None-Match`, so the model server must send its model; a 204 or 304 is a
        failure then. One with the loaded model's ETag or bytes is kept, not loaded again.
        `keep(archive, fingerprint, model_file)` is awaited once a new model has loaded,
        before its archive is removed.
        """
        self._anew = anew
        if self.holder.superseded(self.ticket):
            self._give_way()
            return False
        # The key is compared with a refused model's only (_check_not_refused): read for
        # that, or else just before a load, not at every pull that brings nothing new.
        self._key_now = await self._verify_key() if self._refused is not None else None
        try:
            download = await self._download(anew)
        except _NoChange:
            self._clear_error()
            return False
        except _StillRefused as exc:
            self._note_error(str(exc))  # as when it was refused (a repeat: at debug)
            return False
        except _PullFailed as exc:
            self._note_error(str(exc), disk_full=exc.disk_full)
            return False
        path, fingerprint, filename = download
        if self._refused is None:
            self._key_now = await self._verify_key()
        try:
            await self.holder.load_archive(
                path, fingerprint, model_file=filename, source="server", ticket=self.ticket
            )
        except ModelSuperseded:
            self._give_way()
            return False
        except ModelError as exc:
            self._note_error(
                f"the model from {self.config.shown_url} failed to load: {exc}",
                disk_full=isinstance(exc, ModelStorageFull),
            )
            if isinstance(exc, _REFUSED_FOR_ITS_BYTES):
                self._refused = (fingerprint, self.last_error or "")
                self._refused_key = self._key_now
            return False
        else:
            if keep is not None:
                await keep(path, fingerprint, filename)
        finally:
            await asyncio.to_thread(shutil.rmtree, path.parent, True)
        if self._refused is not None and self._refused[0] == fingerprint:
            # The refused model loaded (its key file was fixed): no refusal left to compare
            # a key with, so the pulls that bring nothing new read the file no more.
            self._refused = self._refused_key = None
        self._clear_error()
        return True

    async def _download(self, anew: bool) -> tuple[Path, str, str]:
        # httpx's timeout bounds each read; a body dripping a byte at a time would never end.
        try:
            return await asyncio.wait_for(self._fetch(anew), self.config.timeout)
        except TimeoutError as exc:
            raise self._timed_out() from exc

    def _timed_out(self) -> _PullFailed:
        config = self.config
        return _PullFailed(f"model server {config.shown_url} timed out after {config.timeout:g} s")

    async def _fetch(self, anew: bool) -> tuple[Path, str, str]:
        config = self.config
        current = self.holder.info
        headers = {name.encode(): value for name, value in config.headers.items()}
        if not any(name.lower() == b"accept-encoding" for name in headers):
            # What `_archive_bytes` decodes: httpx asks for br and zstd too once installed,
            # and a body in either would be read as sent (no archive).
            headers[b"Accept-Encoding"] = b"gzip, deflate"
        if current is not None and not anew:
            # An ETag is opaque bytes (RFC 9110 allows 0x80-0xFF): sent back as it came.
            headers[b"If-None-Match"] = current.fingerprint.encode("latin-1", "replace")
        url = config.request_url()
        max_bytes = self.holder.limits.max_total_bytes
        try:
            async with self._client.stream(
                "GET",
                url,
                headers=headers,
                auth=config.basic_auth,
                timeout=httpx.Timeout(
                    config.timeout, connect=config.read_timeout, read=config.read_timeout
                ),
            ) as response:
                _check_status(response, config.shown_url, has_model=current is not None, anew=anew)
                too_large = _PullFailed(
                    f"the model from {config.shown_url} is larger than {max_bytes} bytes"
                )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise too_large
                etag = _etag(response)
                if etag is not None and current is not None and etag == current.fingerprint:
                    # A server that ignores If-None-Match: its ETag says the model is ours.
                    logger.debug("Model server %s sent the loaded model again", config.shown_url)
                    raise _NoChange()
                self._check_not_refused(etag)
                filename = _safe_filename(response.headers.get("filename"))
                path, digest = await _save_body(
                    response, filename, max_bytes, too_large, config.shown_url
                )
        except (httpx.ConnectTimeout, httpx.ReadTimeout) as exc:
            if config.read_timeout < config.timeout:
                raise _PullFailed(
                    f"model server {config.shown_url} timed out: it sent nothing for "
                    f"{config.read_timeout:g} s (models.read_timeout)"
                ) from exc
            raise self._timed_out() from exc
        except httpx.TimeoutException as exc:
            raise self._timed_out() from exc
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise _PullFailed(f"cannot reach model server {config.shown_url}: {exc!r}") from exc
        except httpx.DecodingError as exc:  # its text names what the encoding holds
            raise _PullFailed(f"model server {config.shown_url}: {exc}") from exc
        except httpx.HTTPError as exc:  # reached: it answered what is not HTTP, or cut it short
            raise _PullFailed(
                f"model server {config.shown_url} broke off the exchange: {exc!r}"
            ) from exc
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise _PullFailed(
                f"no space left on the server's disk for the model from {config.shown_url}",
                disk_full=True,
            ) from exc
        if etag is None and current is not None and current.fingerprint == digest:
            # A server that ignores If-None-Match and sends no ETag: same bytes, no reload.
            await asyncio.to_thread(shutil.rmtree, path.parent, True)
            raise _NoChange()
        if etag is None:
            try:
                self._check_not_refused(digest)
            except _StillRefused:
                await asyncio.to_thread(shutil.rmtree, path.parent, True)
                raise
        return path, etag if etag is not None else digest, filename

    def _check_not_refused(self, fingerprint: str | None) -> None:
        if (
            self._refused is not None
            and fingerprint == self._refused[0]
            and self._key_now == self._refused_key
        ):
            raise _StillRefused(self._refused[1])

    async def _verify_key(self) -> bytes | str | None:
        """The verify key as this pull's load reads it: a file's bytes, or why it cannot be
        read (one small file, as the load reads it)."""
        key = self.holder.verify_key
        if not isinstance(key, Path):
            return key
        try:
            return await asyncio.to_thread(key.read_bytes)
        except OSError as exc:
            return repr(exc)

    def _give_way(self) -> None:
        if not self.superseded:
            logger.info(
                "No more pulls from %s: a newer PUT or DELETE /model chose the model",
                self.config.shown_url,
            )
        self.superseded = True

    def _note_error(self, message: str, disk_full: bool = False) -> None:
        """The latest pull failed: why, and whether for want of disk space (both replace
        those of the pull before, whatever it was)."""
        kept = self.holder.info.model_file if self.holder.info else "no model"
        # The pull at start-up is made by every worker of `--workers N`: the same failure is
        # said by the first of them.
        said_elsewhere = (
            self._shared is not None
            and self._task is None
            and not self._anew  # a PUT /model's: the others make it once it worked, not alike
            and not first_to_say(f"Model pull failed: {message}")
        )
        if message != self.last_error and not said_elsewhere:
            logger.warning("Model pull failed: %s; keeping %s", message, kept)
        else:
            logger.debug("Model pull failed again: %s", message)
        self.last_error = message
        self.disk_full = disk_full
        self.last_error_at = datetime.now(UTC)
        self.failing_since = self.failing_since or self.last_error_at

    def _clear_error(self) -> None:
        if self.last_error is not None:
            logger.info("Model pulls from %s work again", self.config.shown_url)
        self.last_error = self.last_error_at = self.failing_since = None
        self.disk_full = False

    def error_status(self) -> dict[str, str] | None:
        """Why the latest pull failed, for GET /status; None when it worked or pulls ended."""
        if self.last_error is None or self.superseded:
            return None
        return {
            "message": self.last_error,
            "at": _iso(self.last_error_at),
            "failing_since": _iso(self.failing_since),
        }

    # ---------------------------------------------------------------------------- schedule

    @property
    def pulls_again(self) -> bool:
        """True while pulls run on schedule (not with `wait_time_between_pulls` null or 0)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Pull every wait_time_between_pulls seconds in the background (if it is set)."""
        if not self.config.wait_time_between_pulls or self._task is not None:
            return
        self._on_its_own = self.last_error is not None
        self._task = asyncio.create_task(self._run(), name="pull-model-from-server")

    async def _run(self) -> None:
        wait = self.config.wait_time_between_pulls or DEFAULT_WAIT_TIME_BETWEEN_PULLS
        shared = self._shared
        loop = asyncio.get_running_loop()
        next_pull = loop.time() + wait
        try:
            while not self.superseded:
                # Alone, the worker that pulls for all, or one whose own pull failed: pull.
                # Else follow what the worker that pulls for all loaded.
                leading = shared is None or shared.lead()
                pulling = leading or self._on_its_own
                await asyncio.sleep(
                    max(0.0, next_pull - loop.time()) if pulling else min(FOLLOW_SECONDS, wait)
                )
                try:
                    if not pulling and shared is not None:
                        await self._follow(shared)
                    elif loop.time() >= next_pull:
                        next_pull = loop.time() + wait
                        if shared is not None and leading:
                            await self._pull_for_all(shared)
                        else:
                            await self.pull_once()
                        self._on_its_own = self._on_its_own and self.last_error is not None
                except Exception:  # the schedule must outlive any single failure
                    logger.exception("Unexpected error while pulling a model")
                if not pulling:
                    next_pull = loop.time() + wait  # a worker taking over waits a whole pause
        finally:
            if shared is not None:
                shared.resign()

    async def _pull_for_all(self, shared: SharedPulls) -> None:
        """A pull by the worker that pulls for all: the others find its outcome, and the
        archive of a model it loaded, in the shared directory."""
        published = False

        async def keep(path: Path, fingerprint: str, filename: str) -> None:
            nonlocal published
            try:
                await asyncio.to_thread(shared.publish, None, (path, fingerprint, filename))
            except OSError as exc:
                logger.warning(
                    "The other workers keep their model: %s could not be shared with them "
                    "(%s); they load the next model this worker pulls",
                    filename,
                    exc,
                )
            published = True

        await self.pull_once(keep=keep)
        if not published:
            await asyncio.to_thread(shared.publish, self.error_status())

    async def _follow(self, shared: SharedPulls) -> None:
        """Load the model the worker that pulls for all loaded last, if new here, and show
        how its latest pull went (its failure is logged there, once)."""
        if self.holder.superseded(self.ticket):  # a PUT or DELETE /model chose the model
            self._give_way()
            return
        record = await asyncio.to_thread(shared.read)
        if record is None:
            return
        loop = asyncio.get_running_loop()
        waiting = loop.time() < self._follow_after  # this worker's own failure is shown
        if not waiting:
            self._mirror(record.get("error"))
        model = record.get("model")
        if record["serial"] <= shared.seen or not isinstance(model, dict) or waiting:
            return
        current = self.holder.info
        if current is None or current.fingerprint != model["fingerprint"]:
            try:
                await self.holder.load_archive(
                    shared.archive(record),
                    model["fingerprint"],
                    model_file=model["model_file"],
                    source="server",
                    ticket=self.ticket,
                )
            except ModelSuperseded:
                self._give_way()
                return
            except ModelError as exc:
                self._note_error(
                    f"the model {self.config.shown_url} sent another worker failed to load "
                    f"here: {exc}",
                    disk_full=isinstance(exc, ModelStorageFull),
                )
                self._follow_after = loop.time() + (self.config.wait_time_between_pulls or 0)
                return
        shared.seen = record["serial"]

    def _mirror(self, error: Any) -> None:
        """Show the failure of the puller's latest pull (None: it worked) as this worker's."""
        if not isinstance(error, dict):
            self.last_error = self.last_error_at = self.failing_since = None
            self.disk_full = False
            return
        self.last_error = str(error.get("message"))
        self.last_error_at = _parsed_time(error.get("at"))
        self.failing_since = _parsed_time(error.get("failing_since"))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop(task)
        if self._owns_client:
            await self._client.aclose()


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _parsed_time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def _etag(response: httpx.Response) -> str | None:
    """The ETag as its bytes, one character per byte (httpx would decode UTF-8, which does
    not go back into a header); None when absent or blank (as Rasa, which ignores a falsy
    one): a blank one tells no two models apart."""
    for name, value in response.headers.raw:
        if name.lower() == b"etag":
            return value.decode("latin-1") if value.strip() else None
    return None


def _check_status(response: httpx.Response, url: str, *, has_model: bool, anew: bool) -> None:
    """Raise _NoChange or _PullFailed unless the model server answered 200 (`anew`: asked
    without `If-None-Match`, when only its model will do, as for a PUT /model)."""
    status = response.status_code
    if status == 304 and not has_model:
        raise _PullFailed(
            f"model server {url} answered 304 (not modified), but no model is loaded: it "
            "should send one"
        )
    if status == 304 and anew:
        raise _PullFailed(
            f"model server {url} answered 304 (not modified) to a request without "
            "If-None-Match: it should send its model"
        )
    if status == 204 and anew:
        raise _PullFailed(f"model server {url} answered 204 (no content): it sent no model")
    if status in (204, 304):
        logger.debug("No new model at %s (%s)", url, status)
        raise _NoChange()
    if status == 404:
        raise _PullFailed(
            f"model server {url} has no model (404): nothing trained or tag not assigned yet"
        )
    if response.is_redirect:
        # Not followed: the request's headers and token would go wherever it points. Only
        # the host is named; the rest of a redirect (a signed URL) can be a credential.
        # (httpx has checked Location already: an invalid one is an httpx.HTTPError.)
        target = response.request.url.join(response.headers["Location"]).host or "?"
        raise _PullFailed(
            f"model server {url} answered HTTP {status}, a redirect to {target}; redirects "
            "are not followed: set models.url to the address that serves the model"
        )
    if status in (401, 403):  # the usual cause: a token changed or expired
        raise _PullFailed(
            f"model server {url} answered HTTP {status}: it refuses the credentials sent "
            "(check models.token and token_name, basic_auth, headers)"
        )
    if status != 200:
        raise _PullFailed(f"model server {url} answered HTTP {status}")


class _NoChange(Exception):
    pass


class _StillRefused(Exception):
    """The model server serves the model refused last time: the same bytes, the same refusal."""


# Refusals the archive's bytes decide (OutdatedModel is an UnsupportedModel): the same bytes
# meet them again. A full disk, or a loader short of memory, may pass another time.
_REFUSED_FOR_ITS_BYTES = (UnsafeArchive, CorruptArchive, UnsupportedModel, SignatureError)


class _PullFailed(Exception):
    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def _safe_filename(header: str | None) -> str:
    name = Path(header or "").name
    name = _SAFE_FILENAME.sub("_", name)[:200]
    return name if name and not name.startswith(".") else "model.tar.gz"


# A model archive is gzip-compressed already: a Content-Encoding (gzip, deflate...) can shrink
# it by a little, never by half. A body that its encoding expands more is a bomb (4 GiB of
# zeros in 4 MB), refused before it fills the disk.
_MAX_EXPANSION = 2


def _expanding(response: httpx.Response) -> _PullFailed:
    encoding = response.headers.get("Content-Encoding", "")[:40]
    return _PullFailed(
        f"the model server's Content-Encoding expands the body more than {_MAX_EXPANSION} "
        f"times ({encoding!r}); a model archive is compressed already: serve it as it is"
    )


_GZIP_MAGIC = b"\x1f\x8b"


def _not_an_archive(response: httpx.Response, head: bytes, url: str) -> _PullFailed:
    """A 200 whose body cannot be a model archive: a login page, a proxy's error page, a
    zip, a bare tar... Said at its first bytes, not after downloading and unpacking it."""
    kind = response.headers.get("Content-Type", "no Content-Type")[:80]
    start = repr(head[:16])[2:-1] if head else "nothing: the body is empty"
    return _PullFailed(
        f"model server {url} answered 200 with a body that is not a model archive "
        f"({kind}, starting {start}; a .tar.gz starts with gzip's bytes 1f 8b): check "
        "models.url, and whether a proxy or login page answers in the model server's place"
    )


_GZIP_ENCODINGS = ("gzip", "x-gzip")
_DECODED_ENCODINGS = (*_GZIP_ENCODINGS, "deflate")
# Members one after the other read in a gzip- or deflate-encoded body: an encoder in transit
# writes one; bgzip, one per 64 KB (of a 4 GiB archive: 65,536). Empty ones decode to nothing
# the size limit or the expansion check would count: without a bound, a body of them ran
# until the pull's time limit.
MAX_PULL_MEMBERS = 65_536
# Sent bytes enough to see what a gzip-encoded body starts with.
_HEAD_BYTES = 64 * 1024


async def _archive_bytes(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as the archive they carry: decoded as its Content-Encoding says,
    except a gzip encoding whose decoded bytes are no gzip: then the encoding is the archive's
    own (Apache's `AddEncoding x-gzip .gz`, a .tar.gz object stored gzip-encoded), and the
    body as sent is the archive. Decoded pieces are at most `_WRITE_BATCH` bytes each, so the
    caller's expansion check sees a bomb before it is in memory."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    # Those httpx would undo; it ignores others (the body is then the archive as sent).
    codings = [c for c in (c.strip() for c in encoding.split(",")) if c in _DECODED_ENCODINGS]
    if len(codings) > 1:
        # httpx undid each layer whole, piece by piece, before any size was counted: 658
        # bytes of `gzip, gzip` made 300 MB at once.
        raise _PullFailed(
            f"the model server's answer is encoded {encoding[:40]!r}: a model archive is served "
            "as it is, or encoded once"
        )
    if codings == ["deflate"]:
        async for piece in _inflated(response.aiter_raw()):
            yield piece
        return
    if not codings:
        async for chunk in response.aiter_raw():
            yield chunk
        return
    held = bytearray()  # the sent bytes, until their decoded start tells which
    head: bytes | None = b""  # (an empty body decodes to nothing)
    chunks = response.aiter_raw()
    async for chunk in chunks:
        held += chunk
        head = _decoded_start(held)
        # (A gzip header of endless name or comment fields decodes to nothing: sent as is.)
        if head is None or len(head) >= len(_GZIP_MAGIC) or len(held) > _HEAD_BYTES:
            break
    if head is None or head[: len(_GZIP_MAGIC)] != _GZIP_MAGIC:
        yield bytes(held)  # the archive as sent (or not gzip at all: refused by the caller)
        async for chunk in chunks:
            yield chunk
        return
    decoder = _Decoding("gzip")
    for piece in decoder.pieces(bytes(held)):
        yield piece
    async for chunk in chunks:
        for piece in decoder.pieces(chunk):
            yield piece
    yield decoder.flush()


async def _inflated(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A deflate-encoded body decoded in pieces of at most `_WRITE_BATCH` bytes: zlib's
    wrapper or raw deflate, told by the first byte; told by the first bytes read, raw deflate
    whose first byte came alone was taken for zlib's."""
    decoder = _Decoding("deflate")
    async for chunk in chunks:
        for piece in decoder.pieces(chunk):
            yield piece
    yield decoder.flush()


class _Decoding:
    """A gzip or deflate body decoded in pieces of at most `_WRITE_BATCH` bytes, refused once
    what was sent decodes to less than a `_MAX_EXPANSION`th of it. A model archive is
    compressed: an encoding cannot shrink it, nor grow it by more than a few bytes in 64 KB.
    Empty deflate blocks (5 bytes each, decoding to nothing) can run on for ever in one
    member, which the member limit never sees: before, such a body was read until the pull's
    time limit."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._inflater = Inflater(coding, max_members=MAX_PULL_MEMBERS)
        self._sent = self._decoded = 0

    def pieces(self, sent: bytes) -> Iterator[bytes]:
        self._sent += len(sent)
        for piece in self._inflater.pieces(sent, _WRITE_BATCH):
            self._decoded += len(piece)
            yield piece
        if self._sent > _MAX_EXPANSION * self._decoded + _WRITE_BATCH:
            raise _PullFailed(
                f"the model server's {self._coding}-encoded answer decodes to less than half "
                f"of what was sent ({self._sent} bytes sent, {self._decoded} decoded): it is "
                "padded, and no model archive is; serve the archive as it is"
            )

    def flush(self) -> bytes:
        return self._inflater.flush()


def _decoded_start(sent: bytes | bytearray) -> bytes | None:
    """The first decoded bytes of a gzip-encoded body's start; None when it is no gzip."""
    try:
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(bytes(sent), len(_GZIP_MAGIC))
    except zlib.error:
        return None


async def _save_body(
    response: httpx.Response, filename: str, max_bytes: int, too_large: Exception, url: str
) -> tuple[Path, str]:
    """Stream the body into a private temp dir, size-limited; return its path and sha256.

    `too_large` is raised past `max_bytes`, and a body that does not open as gzip is refused
    at its first bytes; both name `url`, the configured URL (the request's carries the token).
    """
    directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="botserver-pull-"))
    path = directory / filename
    digest = hashlib.sha256()
    size = 0
    try:
        handle = await asyncio.to_thread(path.open, "wb")
        try:
            batch = bytearray()
            async for chunk in _archive_bytes(response):
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                if size > _MAX_EXPANSION * response.num_bytes_downloaded + _WRITE_BATCH:
                    raise _expanding(response)
                if size - len(chunk) < len(_GZIP_MAGIC):  # the body's first bytes
                    head = bytes(batch + chunk)
                    if not _GZIP_MAGIC.startswith(head[: len(_GZIP_MAGIC)]):
                        raise _not_an_archive(response, head, url)
                digest.update(chunk)
                batch += chunk
                if len(batch) >= _WRITE_BATCH:
                    await asyncio.to_thread(handle.write, bytes(batch))
                    batch.clear()
            if size < len(_GZIP_MAGIC):
                raise _not_an_archive(response, bytes(batch), url)
            await asyncio.to_thread(handle.write, bytes(batch))
        finally:
            await asyncio.to_thread(handle.close)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise
    return path, digest.hexdigest()
