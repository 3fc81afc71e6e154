"""The body of a remote storage's answer that its SDK reads whole into memory, read within a
bound: one that is no success (an error, a redirect: every SDK reads it to find the error's
code and message) and GCS's JSON (an object's metadata). A storage, or a proxy before it, may
send one without end."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from server.errors import UnsafeArchive

# The most of such a body read: S3's, GCS's and Azure's errors are a few hundred bytes, a
# proxy's page and GCS's metadata of an object a few kilobytes.
MAX_ERROR_BODY = 1024 * 1024
# The most read at once (decoded, for a body read decoded).
_READ_BYTES = 64 * 1024


def body_within(chunks: Iterable[bytes], status: int, stated: str | None, asked: str) -> bytes:
    """The body `chunks` give (decoded where its SDK decodes it: urllib3 2.6 and later inflate
    no more than asked for, earlier ones a whole read of the wire, up to about 1,000 times its
    64 KiB of gzip), at most MAX_ERROR_BODY bytes; UnsafeArchive once past it, or stated past
    it (`stated`: its Content-Length). `asked`: who was asked what, for the error."""
    answered = (
        f"{asked} answered with an error ({status}) whose body"
        if status >= 300
        else f"{asked} answered ({status}) with a body that"
    )
    if stated is not None and stated.isascii() and stated.isdigit():
        if int(stated) > MAX_ERROR_BODY:
            raise UnsafeArchive(
                f"{answered} states {stated} bytes, more than botserver reads of one "
                f"({MAX_ERROR_BODY} bytes): refused before reading it"
            )
    read, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_ERROR_BODY:
            raise UnsafeArchive(
                f"{answered} goes past {MAX_ERROR_BODY} bytes, what botserver reads of one: "
                "stopped reading it"
            )
        read.append(chunk)
    return b"".join(read)


def _bound_requests_body(response: Any, asked: str, streamed: bool) -> None:
    """Read the body of `response` (requests') within the bound if it is no success, or a
    success not `streamed` (requests reads it whole at once), so that its SDK (Azure's,
    GCS's) finds it read; nothing for a success streamed (the archive's bytes). Read as
    requests reads it: decoded, a connection broken meanwhile raised as requests' own errors
    (which each SDK retries, read in a hook)."""
    if (
        (response.status_code < 300 and streamed)
        or response._content_consumed
        or response.request.method == "HEAD"  # no body (its length: the object's)
    ):
        return
    stated = response.headers.get("Content-Length")
    try:
        body = body_within(response.iter_content(_READ_BYTES), response.status_code, stated, asked)
    except BaseException:
        response.close()
        raise
    response._content = body  # what requests' `content` gives, read
    response._content_consumed = True


def requests_hook(asked: str) -> Callable[..., None]:
    """A requests session's response hook bounding the bodies of answers that are no success
    and of those not streamed (run before requests reads the body of one not streamed)."""

    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        _bound_requests_body(response, asked, streamed=bool(kwargs.get("stream")))

    return hook


def bound_botocore_errors(http_session: Any, asked: str) -> None:
    """Have botocore's HTTP session (`URLLib3Session`) read the bodies of answers that are no
    success within the bound: botocore reads them whole (`AWSResponse.content`) before any
    hook of its own runs. Read as sent (botocore inflates none); a connection broken meanwhile
    raised as botocore's session raises it (an error botocore retries)."""
    from botocore.exceptions import ConnectionClosedError, ReadTimeoutError
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

    send = http_session.send

    def send_bounded(request: Any) -> Any:
        response = send(request)
        if response.status_code < 300 or request.method == "HEAD":  # (no body)
            return response
        raw = response.raw
        try:
            stated = response.headers.get("Content-Length")
            chunks = raw.stream(_READ_BYTES, decode_content=False)
            response._content = body_within(chunks, response.status_code, stated, asked)
        except Urllib3ReadTimeout as exc:
            raw.close()
            raise ReadTimeoutError(endpoint_url=request.url, error=exc) from exc
        except ProtocolError as exc:
            raw.close()
            raise ConnectionClosedError(
                error=exc, request=request, endpoint_url=request.url
            ) from exc
        except BaseException:
            raw.close()
            raise
        return response

    http_session.send = send_bounded
