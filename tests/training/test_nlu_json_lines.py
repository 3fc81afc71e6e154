"""A mistake in Rasa's JSON NLU data names its file and line, as one in YAML does: the line
of the wrong value (its key where it has one), or of a syntax error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidProjectFile
from server.training.nlu_json import read_nlu_json

GOOD = {"text": "hi", "intent": "greet", "entities": []}


def _refusal(tmp_path: Path, text: str) -> InvalidProjectFile:
    path = tmp_path / "nlu.json"
    path.write_text(text)
    with pytest.raises(InvalidProjectFile) as raised:
        read_nlu_json(path)
    assert raised.value.filename == str(path)
    return raised.value


def _mistake(tmp_path: Path, section: dict[str, Any]) -> tuple[InvalidProjectFile, str]:
    text = json.dumps({"rasa_nlu_data": section}, indent=2)
    error = _refusal(tmp_path, text)
    assert error.line is not None
    return error, text.split("\n")[error.line - 1].strip()


@pytest.mark.parametrize(
    ("section", "line_text"),
    [
        # an entity span past the end of its text: the line of its start
        (
            {
                "common_examples": [
                    GOOD,
                    {**GOOD, "entities": [{"start": 1, "end": 9, "entity": "a"}]},
                ]
            },
            '"start": 1,',
        ),
        ({"common_examples": [GOOD, GOOD, {"text": 5, "intent": "greet"}]}, '"text": 5,'),
        ({"common_examples": [GOOD, {"text": "yo", "intent": 7}]}, '"intent": 7'),
        ({"common_examples": [GOOD, "hello"]}, '"hello"'),
        ({"common_examples": {"text": "hi"}}, '"common_examples": {'),
        ({"regex_features": [{"name": "zip", "pattern": "[0-9"}]}, '"pattern": "[0-9"'),
        ({"entity_synonyms": [{"value": "NYC", "synonyms": "New York"}]}, '"synonyms": "New York"'),
        ({"lookup_tables": [{"name": "city", "elements": ["a"]}, {"name": 3}]}, '"name": 3'),
    ],
    ids=["entity-span", "text", "intent", "example", "section", "regex", "synonyms", "lookup"],
)
def test_a_wrong_value_names_its_line(
    tmp_path: Path, section: dict[str, Any], line_text: str
) -> None:
    # Before: the file and the item (`common_examples[1].entities[0]`), no line.
    error, shown = _mistake(tmp_path, section)
    assert shown == line_text


def test_a_syntax_error_names_its_line_and_column(tmp_path: Path) -> None:
    text = (
        '{\n  "rasa_nlu_data": {\n    "common_examples": [\n      {"text": "a" "intent": "b"}\n]}}'
    )
    error = _refusal(tmp_path, text)
    assert error.line == 4
    assert error.reason == "invalid JSON: Expecting ',' delimiter (column 20)"


def test_a_file_without_its_section_names_the_top_level(tmp_path: Path) -> None:
    error = _refusal(tmp_path, '\n\n{"rasa_nlu_data": [1]}\n')
    assert error.line == 3
    assert "needs a 'rasa_nlu_data' object" in error.reason


@pytest.mark.parametrize("text", ['\n\n{"common_examples": []}\n', "\n\n\n[1, 2]\n"])
def test_a_file_whose_section_is_missing_names_where_its_value_starts(
    tmp_path: Path, text: str
) -> None:
    # Before: line 1, a blank line above the value.
    error = _refusal(tmp_path, text)
    assert error.line == len(text) - len(text.lstrip("\n")) + 1
    assert "needs a 'rasa_nlu_data' object" in error.reason


def test_a_file_nested_too_deep_names_the_line_where_it_passes_the_limit(tmp_path: Path) -> None:
    text = '{"rasa_nlu_data": {"common_examples": [\n' + "[" * 60 + "\n" + "[" * 60 + "\n"
    error = _refusal(tmp_path, text + "]" * 120 + "]}}")
    assert error.line == 3
    assert error.reason == "the JSON nests more than 100 levels deep"


def test_a_valid_file_still_loads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "nlu.json"
    entity = {"start": 3, "end": 9, "value": "Berlin", "entity": "city"}
    path.write_text(
        json.dumps(
            {
                "rasa_nlu_data": {
                    "common_examples": [
                        GOOD,
                        {"text": "to Berlin", "intent": "go", "entities": [entity]},
                    ],
                    "regex_features": [{"name": "zip", "pattern": "[0-9]{5}"}],
                    "entity_synonyms": [{"value": "Berlin", "synonyms": ["BER"]}],
                }
            }
        )
    )
    data = read_nlu_json(path)
    assert [(e.text, e.intent) for e in data.examples] == [("hi", "greet"), ("to Berlin", "go")]
    assert data.examples[1].entities[0].value == "Berlin"
    assert data.regexes == [("zip", "[0-9]{5}")]
    assert data.synonyms == {"ber": "Berlin"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # a section written twice: the second is the one read, and the one named
        (
            '{"rasa_nlu_data": {\n"common_examples": [\n{"text": "a", "intent": "b"}\n],\n'
            '"common_examples": [\n{"text": 5, "intent": "b"}\n]}}',
            6,
        ),
        # ... also when the mistake is a key the second one lacks: the line of its item
        (
            '{"rasa_nlu_data": {\n"common_examples": [\n{"text": "a",\n"intent": "b"}\n],\n'
            '"common_examples": [\n{"intent": "b"}\n]}}',
            7,
        ),
        # a key written twice in one example: the last is read
        ('{"rasa_nlu_data": {"common_examples": [\n{"text": "ok",\n"text": 5}\n]}}', 3),
        # keys written with escapes, and brackets and quotes inside the text
        (
            '{"rasa_nlu_data": {"common_examples": [\n{"te\\u0078t": "a \\" [ {", "intent": '
            '"b"},\n{"text": "x\\"y",\n"\\u0069ntent": 4}\n]}}',
            4,
        ),
    ],
    ids=["section-twice", "section-twice-key-missing", "key-twice", "escapes"],
)
def test_a_key_written_twice_names_the_one_read(tmp_path: Path, text: str, line: int) -> None:
    assert _refusal(tmp_path, text).line == line


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"x\\ud800y"', "unpaired UTF-16 surrogate escape"),
        ("1e999", "too large for a double"),
        ("NaN", "NaN is not a JSON value"),
        ("-Infinity", "Infinity is not a JSON value"),
        ("1" + "0" * 5_000, "digits"),
    ],
    ids=["surrogate", "huge-float", "nan", "infinity", "long-integer"],
)
def test_a_value_json_cannot_hold_names_its_line(tmp_path: Path, value: str, reason: str) -> None:
    # Before: the file alone (the reader refuses these after its syntax check).
    text = (
        '{"rasa_nlu_data": {"common_examples": [\n{"text": "1e999 NaN \\\\ud800",'
        f' "intent": "b"}},\n{{"text": "a",\n"intent": "b", "metadata": {value}}}\n]}}}}'
    )
    error = _refusal(tmp_path, text)
    assert reason in error.reason
    assert error.line == 4


@pytest.mark.parametrize("after", ["e5", "-1.5", ".5.5", "x"])
def test_a_value_json_cannot_hold_followed_by_a_mistake_names_its_line(
    tmp_path: Path, after: str
) -> None:
    # The reader stops at the number, before the mistake written right after it. Before: a
    # ValueError of our own (`could not convert string to float: '1e999e5'`), no file, no line.
    text = '{"rasa_nlu_data": {"common_examples": [\n{"text": "a", "intent": 1e999' + after
    error = _refusal(tmp_path, text + "}]}}")
    assert "too large for a double" in error.reason
    assert error.line == 2
