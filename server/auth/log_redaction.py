"""A logging filter that keeps secrets out of logs: `token=` and `key=` query values (and
those of a configured endpoint's query names), secret-named keys (token, password, secret,
api-key, authorization...), cookie headers, Bearer/Basic credentials, JWTs, URL passwords
and secrets registered with `redact_also` become `***`.
For text we do not compose; an address our code shows goes through `safe_url` instead.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus, urlsplit

REDACTED = "***"

# A URL's scheme and `://`. Bounded (real schemes have a few letters: postgresql+asyncpg):
# tried from each place of a line, an unbounded one read every run to its end. Not from a
# word's start only: a URL glued to text (`连接redis://...`, a scheme of 40 letters) is one.
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.\-]{0,31}://"

_SCHEMES = re.compile(_SCHEME)
_QUERY_START = re.compile(r"[?#\s]")  # where a URL's path ends
_QUERY_END = re.compile(r"[\s'\"]")  # where its query or fragment ends


def _hide_queries_with_at(text: str) -> str:
    """`text` with each URL's query or fragment holding an '@' hidden: a password holding a
    '?' or '#' that is not percent-encoded (`http://bot:12#x@host/` connects to `bot:12`, as
    `safe_url` shows it), so the line names the host connected to, not `host`. Trailing
    punctuation (`...@host).`) is the sentence's, kept.

    Every URL is tried, those inside another one's query too; the ends found for one are
    kept for the next (they only move forward), so a line is read a bounded number of times."""
    if "@" not in text:
        return text
    shown: list[str] = []
    kept = 0  # what precedes is in `shown`
    path_end = query_end = at = -1
    for scheme in _SCHEMES.finditer(text):
        if scheme.start() < kept:  # inside a query hidden already
            continue
        if path_end < scheme.end():
            found = _QUERY_START.search(text, scheme.end())
            path_end = found.start() if found else len(text)
        if path_end == len(text) or text[path_end] not in "?#":
            continue
        if query_end <= path_end:
            found = _QUERY_END.search(text, path_end + 1)
            query_end = found.start() if found else len(text)
        if at <= path_end:
            at = text.find("@", path_end + 1)
            at = len(text) if at < 0 else at
        if at >= query_end:
            continue
        hidden = text[path_end + 1 : query_end].rstrip(":,;.!)")
        shown += (text[kept : path_end + 1], REDACTED)
        kept = path_end + 1 + len(hidden)
    return "".join(shown) + text[kept:] if shown else text


# After a (name, value) pair's name (httpx shows headers as a list of them), its closing
# quote and a comma, then a quoted value that closes the pair. A secret word quoted before a
# comma is else no pair: a list of setting names (`'password', 'use_ssl', 'key_prefix'`),
# prose (`the "password", which`), a line of code in a traceback; the word after it was
# hidden.
_PAIR_COMMA = r"""["'][ \t]*+,(?=[ \t]*+b?(?:"(?:[^"\\\n]|\\.)*+"|'(?:[^'\\\n]|\\.)*+')[ \t]*+\))"""
# After a key's name, up to its value: a colon or `=`, after its closing quote or not, that
# quote escaped too (JSON held in a JSON string: `{\"password\": \"x\"}`), or a pair's comma.
_NAME_END = r"""(?:""" + _PAIR_COMMA + r"""|\\?["']?[ \t]*+[:=])"""
# A value quoted with escaped quotes (JSON held in a JSON string), to the next one.
_ESCAPED_QUOTED = r'\\"(?:[^\\\n]|\\[^"\n])*+\\"'

# A Cookie or Set-Cookie header's name, then its value: quoted, or to the line's end (any of
# its cookies may be a session) or a quote that closes the text holding it, not one of a
# cookie's value in quotes (`theme="dark"`, JSON's `theme=\"dark\"`) or an apostrophe in a
# word (`o'brien`): those ended it, and the cookies after them showed.
_COOKIE = re.compile(
    r"""((?:set-)?cookie""" + _NAME_END + r"""[ \t]*+)"""
    r"""(?:b?"(?:[^"\\]|\\.)*+"|b?'(?:[^'\\]|\\.)*+'|"""
    + _ESCAPED_QUOTED
    # An unclosed quote after a cookie's `=` is read on over (`a="x; sid=secret`).
    + r"""|(?:(?<==)\\"[^\n"\\]*+\\"|(?<==)"[^\n"]*+"|(?<==)"|(?<=\w)'(?=\w)|\r(?!\n)"""
    r"""|[^\r\n"'])++)""",
    re.IGNORECASE,
)


def _hide_cookies(text: str) -> str:
    # Most lines name no cookie: a substring test spares them the pattern's scan (in any
    # case: the header's name is, and `CooKie:` showed).
    if "ookie" not in text.lower():
        return text
    return _COOKIE.sub(r"\1" + REDACTED, text)


# The rest of a line, without its end (\n or \r\n).
_LINE = r"[^\r\n]*+(?:\r(?!\n)[^\r\n]*+)*+"

# A JWT's first characters, not inside an ASCII word (text in any other script may run
# straight into it: `令牌eyJ...`).
_JWT_START = r"(?<![A-Za-z0-9_])eyJ"

_PATTERNS: tuple[tuple[re.Pattern[str] | None, Any], ...] = (
    # ?token=... / &access_token=... / ?key=... / &sig=... in URLs and query strings, and
    # the signature of an S3 presigned or GCS signed URL (X-Amz-Signature, X-Goog-Signature).
    (
        re.compile(
            r"((?:^|[?&;\s\"'(])"
            r"(?:access_token|token|key|api[-_]?key|sig|(?:x-(?:amz|goog)-)?signature"
            r"|x-(?:amz|goog)-credential)=)"
            r"[^&\s\"';#)]*",
            re.IGNORECASE,
        ),
        r"\1",
    ),
    # An Authorization header's value, whatever its scheme (kept: "Token ***").
    (
        re.compile(
            r"""(\bauthorization""" + _NAME_END + r"""\s*(?:\\?["']|b["'])?"""
            r"""(?:[A-Za-z][\w-]*\s+)?)(?:[^\s"',}\\]|\\(?!"))+""",
            re.IGNORECASE,
        ),
        r"\1",
    ),
    # Secret-named keys in dumped config or dicts: "token": "x", 'password': 'y', secret=z,
    # AWS_SECRET_ACCESS_KEY=..., a service account's "private_key": "...", an ODBC string's
    # `Pwd=`, an `X-Auth:` header, a (name, value) pair (`('x-api-key', 'k')`, as httpx shows
    # headers), JSON held in a JSON string (`{\"token\": \"x\"}`). After a colon, an
    # unquoted value runs on over the words that follow on its line (`password: my secret
    # phrase`), up to a comma, a quote or a word holding a key's `:` or `=`, and so after an
    # `=` between spaces (an INI file's `password = my secret phrase`); after a bare `=` it
    # is one word (`password=x user=y`). Each word is read once (possessive: no backtracking).
    # A YAML block scalar (`password: |`) is its lines that follow, as indented as its first.
    (
        re.compile(
            # From the name's secret word: the words before it (`my_token`) are kept as they
            # are, and reading them from each word's start cost a long line its square. The
            # lookahead of their first letters lets the engine skip to the places worth
            # trying, and the names sharing a letter are tried as one: its scan of a long
            # line costs a third.
            # An X-Auth name has a few words at most: read to the end of a run,
            # `x-auth-x-auth-...` cost its square (3 s for 70 KB).
            r"""(?=[aptsx])((?:token|p(?:ass(?:w(?:or)?d|phrase)|wd|rivate[-_]?key)"""
            r"""|secret(?:[-_]?(?:access[-_]?)?key)?|api[-_]?key|x-auth(?:-\w+){0,3}+)"""
            r"""(?:""" + _PAIR_COMMA + r"""|\\?["']?(?:(\s*:|\s+=)|=))\s*)"""
            # A block scalar: its indicator, blank lines, then each line indented as the first;
            # lines end in \n or \r\n (with \r\n, before, the lines after the key showed).
            r"""(?:[|>][-+1-9]{0,2}[ \t]*+(?:#[^\r\n]*+)?\r?(?:\n[ \t]*+\r?(?=\n))*+"""
            r"""\n([ \t]++)""" + _LINE + r"""(?:\r?\n(?:\3""" + _LINE + r"""|[ \t]*+(?=\r?\n)))*+"""
            # An indicator and its comment with no block after them, to the line's end: the
            # names in the comment are not tried again (each `password: |#` of a line read
            # the rest of it: 600 KB of them cost 3 s of CPU).
            r"""|[|>][-+1-9]{0,2}[ \t]*+#[^\r\n]*+"""
            # A quoted value to its closing quote, over the quotes escaped inside (JSON's \"),
            # a bytes value's (b"x") too, or between escaped quotes (JSON in a JSON string).
            r"""|b?"(?:[^"\\]|\\.)*+"|b?'(?:[^'\\]|\\.)*+'|"""
            + _ESCAPED_QUOTED
            + r"""|[^\s,&}]++"""
            r"""(?(2)(?:[ \t]++[^\s,&}:="']++(?=[\s,&}"']|\Z))*+))""",
            re.IGNORECASE,
        ),
        r"\1",
    ),
    # A Cookie or Set-Cookie header's value, whatever its cookies' names.
    (None, _hide_cookies),
    # Authorization header values, in any spelling of the scheme.
    (re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/=]+", re.IGNORECASE), r"\1\2"),
    # A URL's query or fragment holding an '@' (`_hide_queries_with_at`).
    (None, _hide_queries_with_at),
    # Passwords in URLs: scheme://user:password@host, to the last '@' before the path (an
    # '@' not percent-encoded is the password's: redis-py and yarl read it so).
    (re.compile(rf"({_SCHEME}[^:/@\s]*:)(?:[^@/\s]|@(?=[^@/\s]*+@))++(?=@)"), r"\1"),
    # Anything that looks like a JWT, even without its scheme. Tried from the first `eyJ` of
    # a run of base64url only: when that one is no JWT, no later one before the run's '.' is
    # (each tried, to the '.', cost a long line its square).
    (
        re.compile(
            rf"(?<![A-Za-z0-9_\-])((?:(?!{_JWT_START})[A-Za-z0-9_\-])*+)"
            rf"{_JWT_START}[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
        ),
        r"\1",
    ),
)

# Loggers whose records carry request lines or headers.
DEFAULT_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "server", "httpx")


# Secrets configured under names no pattern can know (a model server's `token_name`).
_pinned_literals: set[str] = set()
# Shorter values are not registered: replacing them everywhere would garble the logs.
MIN_LITERAL_LENGTH = 6
# The query names of configured endpoints (`?auth=`, `params:`, `token_name`), lower case:
# their values are hidden in any URL's query, whatever their length.
_pinned_names: set[str] = set()
# A PUT /model body's model server: the secrets of the most recent few bodies only (the
# model server polled is the last one given). Bodies one after another, each with a token
# or query names of its own, grew these for good: every log line's work with them (10,000
# tokens, 3.8 ms a line instead of 0.14).
MAX_TRANSIENT_ENDPOINTS = 8
_transient: dict[tuple[frozenset[str], frozenset[str]], None] = {}
# What `redact` reads, both kinds together: replaced whole, never changed while a thread
# (a log record's) reads them.
_literals: tuple[str, ...] = ()
_query_names: frozenset[str] = frozenset()
# `_literals` as one pattern: a line is read once for them all, not once for each (20
# secrets in their spellings were some 100 searches of every line). Those longer than
# _LONG_LITERAL (a private key's text) are searched for one by one: in the pattern, one
# key's spellings cost its compiling 30-70 ms, at each secret registered since.
_literal_pattern: re.Pattern[str] | None = None
_literal_starts: re.Pattern[str] | None = None
_long_literals: tuple[str, ...] = ()
_LONG_LITERAL = 100
# Registrations so far (`_merge`), and the one the above were built at: `redact` builds them
# again when these differ.
_registered = 0
_built = 0
# Held to register secrets and to build the above: a log record's thread builds them, while
# another may be registering. Reentrant: a line may be logged on the thread building them (a
# collected task's error, a signal handler's line), and its redaction builds them itself.
_registering = threading.RLock()


def _new_lock() -> None:
    """A forked child has its parent's lock, maybe held, but not the thread holding it."""
    global _registering
    _registering = threading.RLock()


os.register_at_fork(after_in_child=_new_lock)
# A query's `name=value`: each name read from a `?`, `&` or `;` up to the next, once.
_QUERY_PAIR = re.compile(r"([?&;])([^=&;?#\s\"']+)=([^&\s\"';#)]*)")


def _merge() -> None:
    """Marks what `redact` reads as out of date: it is built again before the next line
    is redacted, once however many secrets were registered since. Built at each, 200
    secrets given at start (endpoints.yml, credentials.yml) cost 8 s of CPU."""
    global _registered
    _registered += 1


def _build() -> None:
    global _literals, _query_names, _literal_pattern, _literal_starts, _long_literals, _built
    with _registering:
        registered = _registered
        if _built == registered:  # built by another thread while this one waited
            return
        literals = set(_pinned_literals)
        names = set(_pinned_names)
        for transient_literals, transient_names in _transient:
            literals |= transient_literals
            names |= transient_names
        ordered = tuple(sorted(literals, key=len, reverse=True))
        short = [word for word in ordered if len(word) <= _LONG_LITERAL]
        alternatives = _alternatives(short) if short else None
        pattern = re.compile(alternatives) if alternatives else None
        # Each place a secret starts, its longest there: one starting inside another is
        # found too.
        starts = re.compile(f"(?=({alternatives}))") if alternatives else None
        # Replaced together, once built: a thread reading them meanwhile finds the old ones.
        _literals, _query_names = ordered, frozenset(names)
        _long_literals = tuple(word for word in ordered if len(word) > _LONG_LITERAL)
        _literal_pattern, _literal_starts = pattern, starts
        # Last, and at the registration it read: one made meanwhile (by a line logged while
        # these were built) is built at the next line.
        _built = registered


def _alternatives(words: Iterable[str]) -> str:
    """A pattern matching any of `words`, the longest where several start at one place (one
    holding another is hidden whole), its alternatives sharing their common starts: the
    spellings of a secret share most of theirs, and the engine tries each character of a
    line against the first characters of all of them at once. Nested at branches only: a
    private key's thousands of characters are one run."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def pattern(node: dict[str, Any]) -> str:
        run = []
        while len(node) == 1 and "" not in node:  # one way on: a run of plain characters
            char, node = next(iter(node.items()))
            run.append(re.escape(char))
        branches = [re.escape(char) + pattern(child) for char, child in node.items() if char]
        if not branches:
            return "".join(run)
        body = "(?:" + "|".join(branches) + ")"
        # Optional where a word ends: the longer words are tried first, then the end.
        return "".join(run) + (body + "?" if "" in node else body)

    return pattern(trie)


_HEX = re.compile(r"%[0-9A-F]{2}")


# How clients percent-encode a query's value, each keeping its own characters as they are
# (besides letters, digits and `_.-`): Python's `quote` (curl too) keeps `~`; httpx,
# requests and `urlencode` write a space as `+`; a browser's encodeURIComponent keeps
# `!'()*~`; its URLSearchParams (the /inspect page's) keeps `*` and writes `~` as `%7E`, a
# space as `+`; yarl (aiohttp) keeps `!$'()*,/:@?`, a space as `+`.
_CLIENT_SPELLINGS: tuple[Callable[[str], str], ...] = (
    partial(quote, safe=""),
    partial(quote_plus, safe=""),
    partial(quote, safe="!'()*"),
    lambda secret: quote_plus(secret, safe="*").replace("~", "%7E"),
    partial(quote_plus, safe="!$'()*,/:@?"),
)


def _spellings(secret: str) -> set[str]:
    """`secret` as written, and percent-encoded as each client carries it in a URL's query
    (`_CLIENT_SPELLINGS`; a base64 token's `+/=`), in upper or lower case hex. Before, an
    access log line showed a token so spelt."""
    spelt = {secret}
    for spell in _CLIENT_SPELLINGS:
        encoded = spell(secret)
        spelt |= {encoded, _HEX.sub(lambda code: code[0].lower(), encoded)}
    return spelt


def redact_also(secret: str | None) -> None:
    """Redact `secret` itself (and its percent-encoded spellings) wherever it appears in a
    log record from now on."""
    if secret and len(secret) >= MIN_LITERAL_LENGTH and secret not in _pinned_literals:
        spellings = _spellings(secret)
        with _registering:
            _pinned_literals.update(spellings)
            _merge()


# The keys of endpoints.yml and credentials.yml whose values are secrets: passwords (SQL,
# Redis, RabbitMQ, Kafka's sasl_password, Rocket.Chat's), tokens (an action server's, a
# channel's webhook token), secrets and keys (AWS's, a signing secret, socket.io's jwt_key).
# `*_name` keys name a secret's query parameter, and `key_prefix` a Redis key: no secrets.
_SECRET_SETTING = re.compile(
    r"token|pass(?:w(?:or)?d|phrase)|(?<![a-z])pass\b|passwd|pwd|secret"
    r"|private[-_]?key|api[-_]?key|access[-_]?key|jwt[-_]?key|signature",
    re.IGNORECASE,
)
# Environment variables holding secrets of the remote storages (boto3's, Azure's).
SECRET_ENVIRONMENT = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_ACCOUNT_KEY")


def keep_configured_secrets_out_of_logs(config: Any) -> None:
    """Hides from now on, wherever a log line quotes them (a library's error message, a
    dumped object), the values under secret-named keys of `config` (endpoints.yml or
    credentials.yml, at any depth) and the password of each URL in it. Values shorter than
    MIN_LITERAL_LENGTH are left to the patterns (`password: x`, `redis://:x@host`), and so
    is a secret that is also the value of a setting shown in the logs (a user name): hidden
    alone, `postgres` garbled every `postgresql://postgres@db` line, and shows there anyway."""
    secrets: list[str] = []
    shown: set[str] = set()
    _secrets_and_shown(config, secrets, shown)
    for secret in secrets:
        if secret not in shown:
            redact_also(secret)


def _secrets_and_shown(config: Any, secrets: list[str], shown: set[str]) -> None:
    if isinstance(config, dict):
        for key, value in config.items():
            name = str(key)
            if (
                _SECRET_SETTING.search(name)
                and not name.lower().endswith("_name")
                and isinstance(value, (str, int))
                and not isinstance(value, bool)
            ):
                secrets.append(str(value))
            else:
                _secrets_and_shown(value, secrets, shown)
    elif isinstance(config, list):
        for item in config:
            _secrets_and_shown(item, secrets, shown)
    elif isinstance(config, str):
        shown.add(config)
        if "@" in config and "://" in config:
            try:
                parts = urlsplit(config.strip())
                user, password = parts.username, parts.password
            except ValueError:  # no URL: refused where it is used
                user = password = None
            if user:
                shown.update((user, unquote_plus(user)))
            if password:
                secrets += (password, unquote_plus(password))


def keep_environment_secrets_out_of_logs(environ: Mapping[str, str]) -> None:
    """Hides the values of SECRET_ENVIRONMENT that `environ` sets."""
    for variable in SECRET_ENVIRONMENT:
        redact_also(environ.get(variable))


def keep_endpoint_secrets_out_of_logs(
    config: dict[str, Any] | None, *, transient: bool = False
) -> None:
    """Hides an endpoint's secrets (endpoints.yml, credentials.yml, a PUT /model body) in the
    log lines of others (httpx's request line at `-vv`): its `token`, which travels as
    `?<token_name>=` under a name of the user's choosing, and the value of each name of its
    `url:` query and `params:` (`?auth=...`), the query `safe_url` leaves out of ours.
    `transient`: a PUT /model body's, kept while among the MAX_TRANSIENT_ENDPOINTS latest."""
    if not isinstance(config, dict):
        return
    literals: set[str] = set()
    names: set[str] = set()
    token = config.get("token")
    if token:
        if len(str(token)) >= MIN_LITERAL_LENGTH:
            literals |= _spellings(str(token))
        names.add(str(config.get("token_name") or "token").lower())
    url = config.get("url")
    if isinstance(url, str):
        try:
            query = urlsplit(url).query
        except ValueError:  # no URL: refused where it is used
            query = ""
        names.update(name.lower() for name, _ in parse_qsl(query, True))
    params = config.get("params")
    if isinstance(params, dict):
        names.update(str(name).lower() for name in params)
    with _registering:
        if not transient:
            if literals <= _pinned_literals and names <= _pinned_names:
                return
            _pinned_literals.update(literals)
            _pinned_names.update(names)
        else:
            key = (frozenset(literals), frozenset(names))
            _transient.pop(key, None)  # given again: the latest
            _transient[key] = None
            while len(_transient) > MAX_TRANSIENT_ENDPOINTS:
                del _transient[next(iter(_transient))]
        _merge()


# The query names the first pattern knows, for their percent-encoded spellings (`?%74oken=`,
# which a server reads as `?token=`, and lets in with the token).
_SECRET_QUERY_NAMES = frozenset(
    ("access_token", "token", "key", "apikey", "api_key", "api-key", "sig", "signature")
    + ("x-amz-signature", "x-goog-signature", "x-amz-credential", "x-goog-credential")
)


def _hide_configured_query_values(text: str) -> str:
    names = _query_names | _SECRET_QUERY_NAMES if "%" in text else _query_names
    if not names or "=" not in text:
        return text

    def hidden(pair: re.Match[str]) -> str:
        if unquote_plus(pair[2]).lower() not in names:
            return pair[0]
        return f"{pair[1]}{pair[2]}={REDACTED}"

    return _QUERY_PAIR.sub(hidden, text)


def _holds_literal(text: str) -> bool:
    if _literal_pattern is not None and _literal_pattern.search(text):
        return True
    return any(literal in text for literal in _long_literals)


def _literal_spans(text: str) -> list[tuple[int, int]]:
    """Where registered secrets are in `text`, each occurrence, overlapping ones too."""
    spans = []
    for literal in _long_literals:
        at = text.find(literal)
        while at >= 0:
            spans.append((at, at + len(literal)))
            at = text.find(literal, at + 1)
    if _literal_starts is not None:
        spans += [(found.start(), found.end(1)) for found in _literal_starts.finditer(text)]
    return spans


# A run of a line that may be a URL or a query, holding a `%` or a `+` (and the quotes
# around it, which change nothing to a search in it): a URL holds no space. Tried from a
# run's start only, and read once (possessive).
_ENCODED_RUN = re.compile(r"(?<!\S)[^\s%+]*+[%+]\S*+")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
# How many times over a secret may be percent-encoded and still be found: a URL encoded again
# whole (`%` as `%25`: a client or a proxy quoting a URL it was given encoded) holds it
# twice encoded, and a reader decodes it as easily.
_ENCODINGS = 3


def _decoded_escapes(escapes: re.Match[str]) -> str:
    return bytes.fromhex(escapes[0].replace("%", "")).decode("utf-8", "surrogateescape")


def _decoded(run: str, plus: bool) -> tuple[str, list[int]]:
    """`run` percent-decoded (`+` as a space when `plus`), and where each character of the
    decoded text starts in `run` (then `len(run)`). Bytes that are no UTF-8 stay one
    character each (a surrogate)."""
    chars: list[str] = []
    origins: list[int] = []
    done = 0
    for escapes in _ESCAPES.finditer(run):
        for at in range(done, escapes.start()):
            chars.append(" " if plus and run[at] == "+" else run[at])
            origins.append(at)
        at = escapes.start()
        for char in _decoded_escapes(escapes):
            chars.append(char)
            origins.append(at)
            at += 3 if 0xDC80 <= ord(char) <= 0xDCFF else 3 * len(char.encode())
        done = escapes.end()
    for at in range(done, len(run)):
        chars.append(" " if plus and run[at] == "+" else run[at])
        origins.append(at)
    origins.append(len(run))
    return "".join(chars), origins


def _encoded_literal_spans(text: str) -> list[tuple[int, int]]:
    """Where a registered secret is in `text` percent-encoded in any way (each byte or some,
    in upper or lower case hex, `+` for a space), as a client may write it in a URL, and
    encoded again (`%252E`), up to _ENCODINGS times."""
    # Most such lines hold none: the words split apart and decoded, without their places.
    if not any(_holds_encoded_literal(word) for word in text.split() if "%" in word or "+" in word):
        return []
    spans: list[tuple[int, int]] = []
    for run in _ENCODED_RUN.finditer(text):
        raw = run[0]
        for plus in (False, True) if "+" in raw else (False,):
            decoded, origins = _decoded(raw, plus)
            offset = run.start()
            for encodings in range(1, _ENCODINGS + 1):
                spans += [
                    (offset + origins[start], offset + origins[end])
                    for start, end in _literal_spans(decoded)
                ]
                if encodings == _ENCODINGS or not (
                    ("%" in decoded and _ESCAPES.search(decoded)) or (plus and "+" in decoded)
                ):
                    break
                again, places = _decoded(decoded, plus)
                # Where each character of the text decoded again starts in `raw`.
                decoded, origins = again, [origins[at] for at in places]
    return spans


def _holds_encoded_literal(word: str) -> bool:
    for plus in (False, True) if "+" in word else (False,):
        decoded = word
        for _ in range(_ENCODINGS):
            again = _ESCAPES.sub(_decoded_escapes, decoded.replace("+", " ") if plus else decoded)
            if again == decoded:
                break
            if _holds_literal(again):
                return True
            if "%" not in again and not (plus and "+" in again):  # nothing more to decode
                break
            decoded = again
    return False


# Rounds of `_hide_literals`: one hides, the next finds nothing, but where a secret holding
# `*` spells itself again around the `***` hiding it.
_HIDING_ROUNDS = 4


def _hide_literals(text: str) -> str:
    """`text` with every character of each registered secret hidden, however the secrets
    overlap there (one inside, or running into, another), and in any percent-encoding in a
    URL: each stretch they cover becomes `***`. Again on the result, until no secret shows:
    text around a `***` could spell one holding `*`. After _HIDING_ROUNDS the text is hidden
    whole: a line built for it (`x***yy` in `xx***yyyy`, ten thousand `x`s) would take a
    round for each character."""
    if _literal_pattern is None and not _long_literals:
        return text
    for _ in range(_HIDING_ROUNDS):
        spans = _literal_spans(text) if _holds_literal(text) else []
        if "%" in text or "+" in text:
            spans += _encoded_literal_spans(text)
        if not spans:
            return text
        spans.sort()
        shown: list[str] = []
        kept = 0  # what precedes is in `shown`, or hidden
        for start, end in spans:
            if start >= kept:
                shown += (text[kept:start], REDACTED)
            kept = max(kept, end)
        text = "".join(shown) + text[kept:]
    return text if not _holds_literal(text) and not _encoded_literal_spans(text) else REDACTED


def redact(text: str) -> str:
    """`text` with every secret-looking value replaced by `***`."""
    if _built != _registered:
        _build()
    text = _hide_literals(text)
    for pattern, keep in _PATTERNS:
        if pattern is None:
            text = keep(text)
        else:
            text = pattern.sub(keep + REDACTED, text)
    # Last: a value hidden whole would hide a key the patterns know (`?a=password: x y`).
    return _hide_configured_query_values(text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("latin-1")).encode("latin-1")
    if value is None or isinstance(value, (int, float)):
        return value
    # URL objects (httpx.URL, yarl) and the like: replaced by their redacted text if needed.
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


# Formats a record's traceback as logging does, for the filter to redact it.
_TRACEBACKS = logging.Formatter()


class RedactSecretsFilter(logging.Filter):
    """Rewrites a record's message and arguments, its traceback and stack in place; never
    drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # An exception's message may hold what the line's own message does not (a store's
        # URL, password and all): its traceback, as logging would print it, redacted. The
        # formatters print `exc_text` when it is set.
        if record.exc_info and not record.exc_text:  # (another filter's pass formatted it)
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        done = record.__dict__.get("_redacted")
        if done is not None and done[0] is record.msg and done[1] is record.args:
            return True  # by the logger's filter, or another handler's: nothing changed since
        self._redact_message(record)
        record.__dict__["_redacted"] = (record.msg, record.args)
        return True

    @staticmethod
    def _redact_message(record: logging.LogRecord) -> None:
        args = record.args
        if not args:
            if isinstance(record.msg, str):
                record.msg = redact(record.msg)
            elif record.msg is not None:  # a dict or an exception logged as the message
                whole = str(record.msg)
                if redact(whole) != whole:
                    record.msg = redact(whole)
            return
        # The line as it will be printed, read whole: a dict given alone is logging's mapping
        # of named arguments (`"%s", {"password": p}` prints the dict), a key may be in one
        # argument and its value in the next (`"%s=%s", "password", p`), or in the format
        # with its value an argument (`"token: %s", t`). Each read alone, those showed.
        text: str | None
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format: logging reports it, as ever
            text = None
        shown = None if text is None else redact(text)
        if shown is not None and shown == text:
            return  # nothing to hide: the record as it was
        # Each argument redacted alone keeps the record's shape (uvicorn's access formatter
        # unpacks its arguments), when that hides what the whole line shows hidden.
        if isinstance(args, tuple):
            args = tuple(_redact_value(a) for a in args)
        elif isinstance(args, dict):
            args = {k: _redact_value(v) for k, v in args.items()}
        msg = redact(record.msg) if isinstance(record.msg, str) else record.msg
        if shown is not None:
            try:
                kept = str(msg) % args == shown
            except Exception:
                kept = False
            if not kept:
                msg, args = shown, None
        record.msg, record.args = msg, args


def install_log_redaction(loggers: Iterable[str] = DEFAULT_LOGGERS) -> RedactSecretsFilter:
    """Attach one RedactSecretsFilter to the named loggers and to every root handler.

    Logger filters see records logged on that very logger; handler filters see propagated
    ones too. Installing twice is harmless.
    """
    the_filter = next(
        (f for f in logging.getLogger().filters if isinstance(f, RedactSecretsFilter)),
        RedactSecretsFilter(),
    )
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in loggers]
    targets.append(logging.getLogger())
    targets.extend(logging.getLogger().handlers)
    for target in targets:
        if not any(isinstance(f, RedactSecretsFilter) for f in target.filters):
            target.addFilter(the_filter)
    return the_filter
