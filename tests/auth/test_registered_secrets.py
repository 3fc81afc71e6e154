"""Registered secrets (flags, endpoints.yml, credentials.yml) are hidden whole in any log line:
however they overlap there, and however a client percent-encodes them in a URL."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from urllib.parse import unquote, unquote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.auth import log_redaction, redact
from tests.logging_state import logging_restored

# Few letters, so that secrets overlap each other and the text around them often; none that
# the patterns for secret-named keys, JWTs or URLs would read.
_LETTERS = "abcxy"
_SECRETS = st.lists(
    st.text(alphabet="abc", min_size=log_redaction.MIN_LITERAL_LENGTH, max_size=12),
    min_size=1,
    max_size=4,
)


def _hidden_by_hand(text: str, secrets: list[str]) -> str:
    """Each stretch of `text` that occurrences of `secrets` cover, as one `***`."""
    covered = [False] * len(text)
    for secret in secrets:
        at = text.find(secret)
        while at >= 0:
            covered[at : at + len(secret)] = [True] * len(secret)
            at = text.find(secret, at + 1)
    marked = "".join("\x00" if hidden else char for char, hidden in zip(text, covered, strict=True))
    return re.sub("\x00+", "***", marked)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secrets=_SECRETS,
    pieces=st.lists(
        st.one_of(st.text(alphabet=_LETTERS + " ", max_size=8), st.integers(0, 3)), max_size=10
    ),
    cuts=st.lists(st.integers(0, 12), min_size=20, max_size=20),
)
def test_no_character_of_a_registered_secret_shows_however_they_overlap(
    secrets: list[str], pieces: list[str | int], cuts: list[int]
) -> None:
    """Secrets one inside another, one running into the next (`abcdef` then `defghi` in
    `abcdefghi`), side by side, partly written: each character of each is hidden, and the
    text around them is kept. Before, one found first hid its own characters only: those of
    one overlapping it showed (`***ghi`)."""
    # A line of secrets, pieces of them (a secret's start or end glued to another) and text.
    parts = []
    for n, piece in enumerate(pieces):
        if isinstance(piece, int):
            secret = secrets[piece % len(secrets)]
            start, end = sorted((cuts[2 * n % 20] % (len(secret) + 1), len(secret)))
            parts.append(secret[start:] if n % 3 == 0 else secret[: end or len(secret)])
            parts.append(secret)
        else:
            parts.append(piece)
    line = "".join(parts)
    with logging_restored():
        for secret in secrets:
            log_redaction.redact_also(secret)
        shown = redact(line)
    for secret in secrets:
        assert secret not in shown, (line, shown)
    # Side by side, two secrets are one `***` or two: the same to a reader.
    assert re.sub(r"(\*\*\*)+", "***", shown) == _hidden_by_hand(line, secrets)


def test_a_secret_starting_inside_another_is_hidden_whole() -> None:
    log_redaction.redact_also("abcdefgh")
    log_redaction.redact_also("efghijkl")
    log_redaction.redact_also("0123456789")
    log_redaction.redact_also("345678")
    assert redact("user abcdefghijkl said") == "user *** said"
    assert redact("ids 0123456789xyz and 3456789") == "ids ***xyz and ***9"


def test_a_secret_longer_than_a_pattern_holds_is_hidden_whole_beside_a_short_one() -> None:
    """Long secrets (a private key's text) are searched for apart from the short ones."""
    key = "k" * 120 + "tail-of-the-key"
    log_redaction.redact_also(key)
    log_redaction.redact_also("the-key-and-more")
    assert redact(f"key: {key}-and-more!") == "key: ***!"
    assert redact(f"x {key[:-4]}") == f"x {key[:-4]}"


# Characters a secret may hold: some a URL keeps as they are, some it must encode.
_SECRET_CHARS = st.sampled_from(list("abcXYZ019.-_~ +/=!*'()$,:@?&#%é☃"))


@st.composite
def _spelt(draw: st.DrawFn) -> tuple[str, str]:
    """A secret, and a spelling of it a client may send in a URL's query: each character as
    it is (where a URL may hold it), or each byte as `%XX` in upper or lower case hex, a space
    as `+` when the client writes spaces so (its `+` is `%2B` then)."""
    secret = draw(st.text(_SECRET_CHARS, min_size=log_redaction.MIN_LITERAL_LENGTH, max_size=16))
    plus_for_space = draw(st.booleans())
    spelt = []
    for char in secret:
        raw_ok = char not in " &#%?" and not (plus_for_space and char == "+")
        how = draw(st.sampled_from(["raw", "upper", "lower", "plus"]))
        if how == "plus" and char == " " and plus_for_space:
            spelt.append("+")
        elif how == "raw" and raw_ok:
            spelt.append(char)
        else:
            hexes = [f"{byte:02X}" for byte in char.encode()]
            if how == "lower":
                hexes = [h.lower() for h in hexes]
            spelt.append("".join(f"%{h}" for h in hexes))
    return secret, "".join(spelt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spelling=_spelt(), name=st.sampled_from(["tokn", "q", "next"]))
def test_a_registered_secret_percent_encoded_any_way_is_hidden_in_an_access_line(
    spelling: tuple[str, str], name: str
) -> None:
    """uvicorn's access line shows the path and query as the client wrote them: `%2E` for a
    `.`, lower case hex, every byte encoded, `+` for a space. Before, only the spellings of a
    few clients were hidden, and a secret otherwise spelt showed in the log."""
    secret, spelt = spelling
    line = f'127.0.0.1:5000 - "GET /status?{name}={spelt}&page=2 HTTP/1.1" 401'
    with logging_restored():
        log_redaction.redact_also(secret)
        shown = redact(line)
    assert secret not in unquote(shown), (line, shown)
    assert secret not in unquote_plus(shown), (line, shown)
    assert shown == f'127.0.0.1:5000 - "GET /status?{name}=***&page=2 HTTP/1.1" 401'


def test_spellings_beyond_the_usual_are_hidden() -> None:
    log_redaction.redact_also("my.secret token~1")
    for spelt in (
        "my%2Esecret%20token~1",
        "my%2esecret+token%7e1",
        "%6D%79%2E%73%65%63%72%65%74%20%74%6F%6B%65%6E%7E%31",
        "%6d%79%2E%73%65%63%72%65%74+%74%6F%6b%65%6e%7E%31",
    ):
        assert redact(f"GET /x?t={spelt}&u=1 HTTP/1.1") == "GET /x?t=***&u=1 HTTP/1.1", spelt
    # Percent-encoded text that holds no secret is left as it is.
    assert redact("GET /caf%C3%A9?q=a+b%2Ec HTTP/1.1") == "GET /caf%C3%A9?q=a+b%2Ec HTTP/1.1"


def test_a_secret_holding_stars_costs_a_few_searches_however_the_line_is_built() -> None:
    """A secret holding `***` (`x***yy`) spells itself again around the `***` that hides it
    in `xx***yyyy`: hidden a round at a time, a line of 10,000 `x`s around one took 10,000
    searches of the line (1.6 s; seconds more for a longer one). After a few rounds the line
    is hidden whole: no character of a secret shows, and the searches are few."""
    searches = 0
    holds = log_redaction._holds_literal

    def counted(text: str) -> bool:
        nonlocal searches
        searches += 1
        return holds(text)

    with logging_restored():
        log_redaction.redact_also("x***yy")
        log_redaction._holds_literal = counted  # type: ignore[assignment]
        try:
            shown = redact("x" * 10_000 + "x***yy" + "y" * 20_000)
        finally:
            log_redaction._holds_literal = holds  # type: ignore[assignment]
        assert "x***yy" not in shown and "x" not in shown and "y" not in shown
        assert searches <= 8, searches
        # A line where it shows once is hidden as any other.
        assert redact("at x***yy: x***y") == "at ***: x***y"


def test_registering_many_secrets_builds_their_pattern_once() -> None:
    """Secrets registered one after another (200 in endpoints.yml and credentials.yml) are
    put in one pattern when a line is next redacted, not again at each: before, each secret
    built the pattern of all those before it anew (8 s of CPU at start for 200). A secret
    registered after a line was redacted is hidden in the next."""
    built: list[int] = []
    alternatives = log_redaction._alternatives

    def counted(words: list[str]) -> str:
        built.append(len(words))
        return alternatives(words)

    secrets = [f"many-secrets-{i:03d}.x~y" for i in range(200)]
    with logging_restored():
        log_redaction._alternatives = counted  # type: ignore[assignment]
        try:
            for secret in secrets:
                log_redaction.redact_also(secret)
            shown = [redact(f"GET /x?a={s}&b={s.replace('-', '%2D')}") for s in secrets]
            log_redaction.redact_also("registered-later")
            later = redact("GET /x?a=registered-later")
        finally:
            log_redaction._alternatives = alternatives  # type: ignore[assignment]
        assert shown == ["GET /x?a=***&b=***"] * len(secrets)
        assert later == "GET /x?a=***"
        assert len(built) == 2, built


def test_a_registered_secret_encoded_twice_is_hidden_in_an_access_line() -> None:
    """uvicorn's access line shows the path and query as the client sent them: a client or a
    proxy that quotes a URL it was given encoded sends a secret encoded twice (`%` as `%25`),
    which a reader of the log decodes as easily as once. Before, it showed; text encoded
    twice that holds no secret is kept."""
    with logging_restored():
        log_redaction.redact_also("my.secret token~1")
        for spelt in (
            "my%252Esecret%2520token~1",
            "my%252esecret%2Btoken%257e1",
            "%256D%2579%252E%2573ecret%20token%7E1",
            "my.secret%2Btoken~1",
        ):
            line = f'127.0.0.1:5000 - "GET /status?t={spelt}&page=2 HTTP/1.1" 401'
            assert redact(line) == '127.0.0.1:5000 - "GET /status?t=***&page=2 HTTP/1.1" 401'
        kept = '127.0.0.1:5000 - "GET /caf%25C3%25A9?q=a%252Eb HTTP/1.1" 200'
        assert redact(kept) == kept


def test_a_line_logged_while_the_secrets_pattern_is_built_is_hidden_and_hangs_nothing() -> None:
    """A line may be logged on the very thread building the pattern of the secrets registered
    (a collected task's "Task was destroyed" error, a signal handler's line): it is redacted
    with the secrets registered so far, and both lines are written. Before, that thread waited
    for ever on the lock it held itself, and every thread logging after it too."""
    logger = logging.getLogger("server.tests.nested-line")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    redacting = log_redaction.RedactSecretsFilter()
    alternatives = log_redaction._alternatives
    nested: list[bool] = []

    def logging_meanwhile(words: list[str]) -> str:
        if not nested:  # once: the line's own redaction builds the pattern too
            nested.append(True)
            logger.error("collected: the-nested-secret-1 and the-outer-secret-2")
        return alternatives(words)

    with logging_restored():
        logger.addHandler(handler)
        logger.addFilter(redacting)
        log_redaction._alternatives = logging_meanwhile  # type: ignore[assignment]
        lock = log_redaction._registering
        try:
            log_redaction.redact_also("the-nested-secret-1")
            log_redaction.redact_also("the-outer-secret-2")
            thread = threading.Thread(
                target=logger.warning, args=("outer: the-outer-secret-2",), daemon=True
            )
            thread.start()
            thread.join(timeout=10)
            hung = thread.is_alive()
        finally:
            log_redaction._alternatives = alternatives  # type: ignore[assignment]
            logger.removeHandler(handler)
            logger.removeFilter(redacting)
            if log_redaction._registering is lock and thread.is_alive():
                # The hung thread keeps its lock: later tests get a free one.
                log_redaction._registering = threading.RLock()
        assert not hung, "the thread logging while the pattern was built hangs"
        assert lines == ["collected: *** and ***", "outer: ***"]


def test_a_process_forked_while_secrets_are_registered_redacts_its_lines() -> None:
    """A process forked while another thread registers secrets (a library's worker, a forked
    test runner) has that thread's lock, not the thread: its first line after a registration
    is redacted, not held for ever on a lock nobody in it will release."""
    with logging_restored():
        log_redaction.redact_also("the-forked-secret-1")
        held, release = threading.Event(), threading.Event()

        def registering() -> None:
            with log_redaction._registering:
                held.set()
                release.wait(30)

        thread = threading.Thread(target=registering, daemon=True)
        thread.start()
        try:
            assert held.wait(30)
            pid = os.fork()
            if pid == 0:  # the child: its exit status says what its line became
                status = 1
                try:
                    status = 0 if redact("child: the-forked-secret-1") == "child: ***" else 2
                finally:
                    os._exit(status)
            for _ in range(1000):  # 10 s at most
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.01)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        finally:
            release.set()
            thread.join()
        assert done, "the forked process hangs on its first line"
        assert os.waitstatus_to_exitcode(status) == 0
