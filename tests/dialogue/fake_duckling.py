"""A tiny stand-in for a Duckling server: answers POST /parse with `number` matches for digits
and English number words, in Duckling's JSON shape. Runs in a thread on a free port."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

from tests.fake_http import serve_json

WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
NUMBER = re.compile(r"\b(\d+(?:\.\d+)?|" + "|".join(WORDS) + r")\b", re.IGNORECASE)


def number_matches(text: str) -> list[dict[str, object]]:
    """Duckling's answer for `text` with the `number` dimension."""
    matches = []
    for m in NUMBER.finditer(text):
        body = m.group(1)
        value: float = WORDS.get(body.lower()) or float(body)
        matches.append(
            {
                "body": body,
                "start": m.start(1),
                "end": m.end(1),
                "dim": "number",
                "latent": False,
                "value": {"value": value, "type": "value"},
            }
        )
    return matches


Answer = Callable[[dict[str, list[str]]], list[dict[str, Any]]]


def _number_answer(form: dict[str, list[str]]) -> list[dict[str, Any]]:
    return number_matches((form.get("text") or [""])[0])


@contextmanager
def serve_form(answer: Answer) -> Iterator[str]:
    """Yields the base URL of a fake Duckling whose POST /parse answers `answer(form)`."""

    def respond(path: str, body: bytes) -> tuple[int, Any]:
        return (200 if path == "/parse" else 404), answer(parse_qs(body.decode()))

    with serve_json(respond) as url:
        yield url


@contextmanager
def fake_duckling() -> Iterator[str]:
    """Yields the base URL of a running fake Duckling that finds numbers."""
    with serve_form(_number_answer) as url:
        yield url
