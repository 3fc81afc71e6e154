"""URLs as text: an endpoint's URL as Rasa reads it (`url_as_rasa_reads`), and any address as
errors and the log show it (`safe_url`: no user, password, query or fragment)."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit, urlunsplit

# What urlsplit strips before a URL and drops inside it (the URL standard's rules).
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_OR_LINE_BREAK = str.maketrans("", "", "\t\r\n")


def url_as_rasa_reads(url: str) -> str:
    """`url` as urlsplit reads it, and so Rasa's aiohttp (yarl): without a tab or line break
    (`${URL}` from a file ending in one), and without what precedes the scheme (spaces). httpx
    refuses the one and reads the other as a path."""
    return url.lstrip(_C0_OR_SPACE).translate(_TAB_OR_LINE_BREAK)


def safe_url(url: str, tolerant: bool = False) -> str:
    """`url` as errors and the log may show it: scheme, host, port and path, without user,
    password, query (a token, a SAS signature, a presigned URL's X-Amz-/X-Goog- signature and
    credential) or fragment; an IPv6 host in its brackets. The one way our code shows an
    address (endpoints, model server, remote storage); `server.auth.redact` only scrubs text
    we do not compose (httpx's request lines, uvicorn's access log, an SDK's message).
    A password holding a '#' that is not percent-encoded (`http://bot:12#x@host/`) shows what
    httpx connects to, `http://bot:12`, without the fragment.

    Raises ValueError for what is no URL (a port out of range, an unclosed bracket), unless
    `tolerant`: then a port out of range is shown as written (what the error is about), one
    that is no number is left out (and the path, when an '@' follows: a password's rest,
    `http://bot:pa/SECRET@host` shows `http://bot`), and what urlsplit cannot read is shown
    up to its query, without what precedes its last `@`. An address without scheme
    (`bot:pw@host:5055/x`, no URL but what a user may write) is shown without what precedes
    its last `@` too."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError as e:
        if not tolerant:
            raise _without_netloc(e) from None
        # NFKC: a full-width '@' or '?' (which made urlsplit refuse it) reads as one here.
        shown = _before_query(unicodedata.normalize("NFKC", url))
        return re.sub(r"//[^/]*@", "//", shown, count=1)
    if not parts.netloc:
        # No `//` after a scheme: urlsplit reads `bot:pw@host` as scheme `bot`, the rest as
        # a path. What follows the last `@`: a password may hold a '/', '?' or '#'.
        return _before_query(url.rpartition("@")[2])
    if ":" in host:  # an IPv6 address: without brackets, its last part reads as a port
        host = f"[{host}]"
    try:
        port: int | str | None = parts.port
    except ValueError as e:
        # A password holding a '/', '?' or '#' ends the netloc there (`bot:s3cr#et@host`
        # reads `s3cr` as the port): what urlsplit read as a port is not shown then.
        maybe_password = "@" in parts.path + parts.query + parts.fragment
        if not tolerant:
            raise (_no_number() if maybe_password else e) from None
        written = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        # No number: maybe a password.
        port = written if written.isdigit() and not maybe_password else None
        if maybe_password:  # the path may be its rest (`bot:pa/SECRET@host`): no URL anyway
            return urlunsplit((parts.scheme, host, "", "", ""))
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _without_netloc(error: ValueError) -> ValueError:
    """urlsplit's error, without the netloc (user and password) it quotes for a host holding
    what NFKC reads as '/', '?', '#', '@' or ':'."""
    if "NFKC" not in str(error):
        return error
    return ValueError(
        "its host holds a character that reads as '/', '?', '#', '@' or ':' once normalized "
        "(NFKC), such as a full-width one"
    )


def _no_number() -> ValueError:
    return ValueError(
        "its port is no number from 0 to 65535 (or a password holds a '/', '?' or '#')"
    )


def _before_query(url: str) -> str:
    return re.split(r"[?#]", url, maxsplit=1)[0]
