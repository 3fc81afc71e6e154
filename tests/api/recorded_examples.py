"""The request/response pairs recorded from a real Rasa 3.6 server (rasa-recorded-examples.md),
read into values: method, path, status, content type and the parsed body."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tests.shared_data import RECORDED

_SECTION = re.compile(r"^### (.+)$", re.M)
_REQUEST = re.compile(r"```http\n([A-Z]+) (/\S*) HTTP/1\.1\n(.*?)```", re.S)
_RESPONSE = re.compile(r"^Response: \*\*(\d{3})\*\* \(`content-type: ([^`]+)`", re.M)
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


@dataclass(frozen=True)
class RecordedExample:
    title: str
    method: str
    path: str
    query: str
    status: int
    content_type: str
    # The parsed JSON or YAML body; None when there is none or it was cut in the recording.
    body: Any
    # The request's JSON body; None when there is none or it is not JSON.
    request_body: Any = None


def _parse_body(kind: str, text: str) -> Any:
    if kind == "json":
        text = "\n".join(line for line in text.splitlines() if not line.startswith("//"))
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None  # cut in the recording (over 8,000 characters)
    if kind == "yaml":
        return yaml.safe_load(text)
    return None


def _example(title: str, section: str) -> RecordedExample | None:
    request = _REQUEST.search(section)
    response = _RESPONSE.search(section)
    if request is None or response is None:
        return None
    method, target, rest = request.groups()
    _headers, _, sent = rest.partition("\n\n")
    path, _, query = target.partition("?")
    block = _BLOCK.search(section, response.end())
    body = _parse_body(*block.groups()) if block else None
    return RecordedExample(
        title=title,
        method=method,
        path=path,
        query=query,
        status=int(response.group(1)),
        content_type=response.group(2).split(";")[0].strip(),
        body=body,
        request_body=_parse_body("json", sent) if sent.strip() else None,
    )


def recorded_examples() -> list[RecordedExample]:
    """Every recorded exchange with an HTTP request line, in the file's order."""
    text = RECORDED.read_text(encoding="utf-8")
    starts = list(_SECTION.finditer(text))
    examples = []
    for i, heading in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        example = _example(heading.group(1).strip(), text[heading.end() : end])
        if example is not None:
            examples.append(example)
    return examples
