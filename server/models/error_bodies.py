"""The body of a remote storage's answer that is no success (an error, a redirect), read within
a bound: every storage SDK reads it whole into memory to find the error's code and message, and
a storage, or a proxy before it, may send one without end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.errors import UnsafeArchive

# The most of such a body read: S3's, GCS's and Azure's errors are a few hundred bytes, a
# proxy's page a few kilobytes.
MAX_ERROR_BODY = 1024 * 1024
# The most read at once (decoded, for a body read decoded).
_READ_BYTES = 64 * 1024


def error_body_within(raw: Any, status: int, stated: str | None, decode: bool, asked: str) -> bytes:
    """What urllib3's `raw` response holds, at most MAX_ERROR_BODY bytes, decoded if `decode`
    (urllib3 2 inflates no more than it is asked for); UnsafeArchive once past it, or stated
    past it (`stated`: its Content-Length). `asked`: who was asked what, for the error."""
    answered = f"{asked} answered with an error ({status}) whose body"
    if stated is not None and stated.isascii() and stated.isdigit():
        if int(stated) > MAX_ERROR_BODY:
            raise UnsafeArchive(
                f"{answered} states {stated} bytes, more than botserver reads of one "
                f"({MAX_ERROR_BODY} bytes): refused before reading it"
            )
    chunks, size = [], 0
    while chunk := raw.read(_READ_BYTES, decode_content=decode):
        size += len(chunk)
        if size > MAX_ERROR_BODY:
            raise UnsafeArchive(
                f"{answered} goes past {MAX_ERROR_BODY} bytes, what botserver reads of one: "
                "stopped reading it"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def bound_requests_errors(response: Any, asked: str) -> None:
    """Read the body of `response` (requests') within the bound if it is no success, so that
    its SDK (Azure's, GCS's) finds it read; nothing for a success."""
    if response.status_code < 300 or response._content_consumed:
        return
    try:
        body = error_body_within(
            response.raw, response.status_code, response.headers.get("Content-Length"), True, asked
        )
    except BaseException:
        response.close()
        raise
    response._content = body  # what requests' `content` gives, read
    response._content_consumed = True


def requests_hook(asked: str) -> Callable[..., None]:
    """A requests session's response hook bounding the bodies of answers that are no success
    (run before requests reads the body of one not streamed)."""

    def hook(response: Any, *args: Any, **kwargs: Any) -> None:
        bound_requests_errors(response, asked)

    return hook


def bound_botocore_errors(http_session: Any, asked: str) -> None:
    """Have botocore's HTTP session (`URLLib3Session`) read the bodies of answers that are no
    success within the bound: botocore reads them whole (`AWSResponse.content`) before any
    hook of its own runs."""
    send = http_session.send

    def send_bounded(request: Any) -> Any:
        response = send(request)
        if response.status_code >= 300:
            try:
                response._content = error_body_within(
                    response.raw,
                    response.status_code,
                    response.headers.get("Content-Length"),
                    False,  # botocore reads it as sent
                    asked,
                )
            except BaseException:
                response.raw.close()
                raise
        return response

    http_session.send = send_bounded
