import json
import logging
import time
from pathlib import Path

import pytest

from server.errors import InvalidProjectFile
from server.nlu.training_data import EntityAnnotation
from server.training.nlu_json import read_nlu_json
from server.training.nlu_yaml import nlu_yaml, read_nlu_file, read_nlu_yaml

REFERENCE = Path("/work/shared/reference/rasa-testdata")


def test_annotation_syntaxes_and_offsets():
    data = read_nlu_yaml(
        """
nlu:
- intent: travel
  examples: |
    - go to [Berlin](city) now
    - go to [NYC](city:New York)
    - from [SF]{"entity": "city", "role": "from", "group": "1", "value": "San Francisco"} on
"""
    )
    first, second, third = data.examples
    assert first.text == "go to Berlin now"
    assert first.entities == [EntityAnnotation(6, 12, "Berlin", "city")]
    assert second.entities == [EntityAnnotation(6, 9, "New York", "city")]
    assert third.text == "from SF on"
    assert third.entities == [EntityAnnotation(5, 7, "San Francisco", "city", "from", "1")]


def test_synonyms_regexes_lookups_and_retrieval_responses():
    data = read_nlu_yaml(
        """
version: "3.1"
nlu:
- synonym: New York
  examples: |
    - NYC
- regex: zipcode
  examples: |
    - \\d{5}
- lookup: fruit
  examples: |
    - apple
    - pear
- intent: faq/ask_name
  examples:
  - text: what is your name
    metadata: {sentiment: neutral}
responses:
  utter_faq/ask_name:
  - text: I am a bot
  utter_greet:
  - text: hi
stories:
- story: ignored by this reader
  steps: []
"""
    )
    assert data.synonyms == {"nyc": "New York"}
    assert data.regexes == [("zipcode", r"\d{5}")]
    assert data.lookups == {"fruit": ["apple", "pear"]}
    assert data.examples[0].intent == "faq/ask_name"
    assert data.examples[0].metadata == {"example": {"sentiment": "neutral"}}
    assert data.responses == {"utter_faq/ask_name": [{"text": "I am a bot"}]}
    assert data.retrieval_intents == ["faq"]


def test_broken_entity_json_names_file_and_line():
    text = 'nlu:\n- intent: a\n  examples: |\n    - ok\n    - bad [x]{"entity": }\n'
    with pytest.raises(InvalidProjectFile) as info:
        read_nlu_yaml(text, "data/nlu.yml")
    assert info.value.filename == "data/nlu.yml"
    assert info.value.line == 5


@pytest.mark.parametrize("style", [">", ">-", "|"])
@pytest.mark.parametrize("blanks", [1, 2])
def test_an_error_after_blank_lines_of_a_block_names_its_own_line(style: str, blanks: int):
    """A folded block (`>`) folds each blank line away: before, an error in a later example
    named a line above the real one (5 for 6 with one blank line); a literal block was right."""
    gap = "\n" * blanks
    text = (
        f"nlu:\n- intent: a\n  examples: {style}\n    - ok\n{gap}"
        f'    - fine\n{gap}    - bad [x]{{"entity": }}\n'
    )
    with pytest.raises(InvalidProjectFile) as info:
        read_nlu_yaml(text, "data/nlu.yml")
    assert info.value.line == 4 + 2 * (blanks + 1), text


def test_a_skipped_line_of_a_folded_block_names_its_own_line(caplog: pytest.LogCaptureFixture):
    text = "nlu:\n- intent: a\n  examples: >\n    - ok\n\n    no dash\n"
    data = read_nlu_yaml(text, "data/nlu.yml")
    assert [e.text for e in data.examples] == ["ok"]
    assert "data/nlu.yml:6: training example 'no dash'" in caplog.text


@pytest.mark.parametrize("kind", ["intent", "synonym", "lookup"])
def test_a_blocks_lines_are_read_as_rasa_reads_them(caplog: pytest.LogCaptureFixture, kind: str):
    """Rasa's reader skips a '- ' line indented more than the block (its value starts with
    spaces) and warns about it and about each blank line. Before, the indented line was
    stripped and trained (a model Rasa would not make from the same files) and blank lines
    passed without a word."""
    text = f"nlu:\n- {kind}: a\n  examples: |\n    - ok\n      - indented\n\n    - fine\n"
    data = read_nlu_yaml(text, "data/nlu.yml")
    read = {
        "intent": [e.text for e in data.examples],
        "synonym": sorted(data.synonyms),
        "lookup": data.lookups.get("a", []),
    }[kind]
    assert sorted(read) == ["fine", "ok"]
    assert "data/nlu.yml:5: training example '- indented' starts with spaces" in caplog.text
    assert "data/nlu.yml:6: a blank line among the examples" in caplog.text
    assert caplog.text.count("blank line") == 1, caplog.text  # not the block's last break


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_a_unicode_line_separator_in_a_block_ends_an_example_as_in_rasa(
    caplog: pytest.LogCaptureFixture, separator: str
):
    """YAML keeps U+2028 and U+2029 in a block's value as line breaks, where Rasa's reader
    (`splitlines`) splits: `- x<U+2028>    - y` is two examples there. Read as one line here,
    it trained `x\u2028- y`, and an over-indented line after one was trained inside it."""
    block = f"    - x{separator}    - y\n    - z{separator}      - i\n"
    text = "nlu:\n- intent: a\n  examples: |\n" + block
    data = read_nlu_yaml(text, "data/nlu.yml")
    assert [e.text for e in data.examples] == ["x", "y", "z"]
    assert "training example '- i' starts with spaces" in caplog.text


def test_a_blank_line_kept_by_a_folded_block_is_warned_about(caplog: pytest.LogCaptureFixture):
    # A folded block folds one blank line into the break between two lines; a second one
    # stays in the value, where Rasa's reader warns about it.
    one = "nlu:\n- intent: a\n  examples: >\n    - ok\n\n    - fine\n"
    assert [e.text for e in read_nlu_yaml(one, "data/nlu.yml").examples] == ["ok", "fine"]
    assert "blank line" not in caplog.text
    two = one.replace("\n\n", "\n\n\n")
    assert [e.text for e in read_nlu_yaml(two, "data/nlu.yml").examples] == ["ok", "fine"]
    assert caplog.text.count("blank line") == 1, caplog.text
    # Three blank lines keep two, each named by a line of its own (both were line 5).
    caplog.clear()
    three = one.replace("\n\n", "\n\n\n\n")
    assert [e.text for e in read_nlu_yaml(three, "data/nlu.yml").examples] == ["ok", "fine"]
    assert "data/nlu.yml:5: a blank line" in caplog.text
    assert "data/nlu.yml:6: a blank line" in caplog.text


@pytest.mark.parametrize("value", [5, 2.5, -1])
def test_an_entity_jsons_value_may_be_a_number_as_in_rasa(value: float):
    """Rasa's entity schema takes a number (`"value": ["string", "number"]`), which a story
    written from a conversation with a Duckling number holds. Before: refused ("must be
    text, not 5; quote it")."""
    annotation = json.dumps({"entity": "number", "value": value})
    text = f"nlu:\n- intent: a\n  examples: |\n    - ok\n    - take [five]{annotation}\n"
    data = read_nlu_yaml(text, "data/nlu.yml")
    assert data.examples[1].entities == [EntityAnnotation(5, 9, value, "number")]
    # As Rasa's synonym mapper, the text maps to the number's text.
    assert data.synonyms == {"five": str(value)}


@pytest.mark.parametrize(
    "annotation",
    [
        '{"entity": "city", "value": null}',
        '{"entity": "city", "value": true}',
        '{"entity": "city", "value": ["a"]}',
        '{"entity": "city", "role": 5}',
        '{"entity": "city", "group": 1}',
    ],
)
def test_an_entity_jsons_value_role_and_group_must_be_as_rasas_schema_says(annotation: str):
    # As Rasa's entity schema (a value is text or a number, JSON's sense: not true or
    # false). Before, null made "SF" a synonym of "None", and the role 5 became "5".
    text = f"nlu:\n- intent: a\n  examples: |\n    - ok\n    - to [SF]{annotation}\n"
    with pytest.raises(InvalidProjectFile, match="must be text") as info:
        read_nlu_yaml(text, "data/nlu.yml")
    assert (info.value.filename, info.value.line) == ("data/nlu.yml", 5)


def _json_nlu(tmp_path: Path, value: object) -> Path:
    entity = {"start": 0, "end": 2, "entity": "city", "value": value}
    example = {"text": "SF", "intent": "a", "entities": [entity]}
    path = tmp_path / "nlu.json"
    path.write_text(json.dumps({"rasa_nlu_data": {"common_examples": [example]}}))
    return path


@pytest.mark.parametrize("value", [None, True, ["a"], {"a": 1}])
def test_a_json_entitys_value_must_be_text_or_a_number(tmp_path: Path, value: object):
    # Before, it was kept, and `data convert nlu` wrote YAML that would not train.
    with pytest.raises(InvalidProjectFile, match=r"entities\[0\]: 'value' must be text or a"):
        read_nlu_json(_json_nlu(tmp_path, value))


def test_a_json_entitys_value_may_be_a_number(tmp_path: Path):
    # As Rasa's JSON schema; before: refused ("'value' must be text, not 5").
    [example] = read_nlu_json(_json_nlu(tmp_path, 5)).examples
    assert example.entities == [EntityAnnotation(0, 2, 5, "city")]


def test_json_synonyms_of_a_number_as_rasa_writes_them_read(tmp_path: Path):
    """`rasa data convert nlu -f json` of `[five]{"entity": "number", "value": 5}` writes
    the synonym with the number as its value (and "5" for `[5]{...}`), and Rasa reads that
    file back. Before: refused ("needs a 'value' string")."""
    entity = {"start": 5, "end": 9, "value": 5, "entity": "number"}
    example = {"text": "book five seats", "intent": "book", "entities": [entity]}
    synonyms = [{"value": 5, "synonyms": ["five", "5"]}, {"value": 2.5, "synonyms": ["2,5"]}]
    path = tmp_path / "nlu.json"
    document = {"common_examples": [example], "entity_synonyms": synonyms}
    path.write_text(json.dumps({"rasa_nlu_data": document}))
    assert read_nlu_json(path).synonyms == {"five": "5", "2,5": "2.5"}


def _json_annotating(tmp_path: Path, *annotations: tuple[str, str], synonyms=()) -> Path:
    """A JSON NLU file of one example "to <text>" per (text, value) annotated "city"."""
    examples = [
        {
            "text": f"to {text}",
            "intent": "go",
            "entities": [{"entity": "city", "start": 3, "end": 3 + len(text), "value": value}],
        }
        for text, value in annotations
    ]
    path = tmp_path / "nlu.json"
    document = {"common_examples": examples, "entity_synonyms": list(synonyms)}
    path.write_text(json.dumps({"rasa_nlu_data": document}))
    return path


def test_conflicting_json_annotations_warn_as_yaml_ones_do(tmp_path: Path, caplog):
    """Rasa's synonym mapper warns of them at training ("Found conflicting synonym
    definitions"); the YAML reader says it with both places. Before, JSON data said nothing."""
    path = _json_annotating(tmp_path, ("NYC", "New York"), ("LA", "Los Angeles"), ("nyc", "NY"))
    with caplog.at_level("WARNING"):
        read_nlu_json(path)
    assert (
        f"{path}:common_examples[2]: found inconsistent entity synonyms: 'nyc' maps to "
        f"'New York' ({path}:common_examples[0]) and to 'NY'; using 'NY', the last one read"
    ) in caplog.text
    assert caplog.text.count("inconsistent") == 1


def test_a_json_annotation_against_the_files_entity_synonyms_warns(tmp_path: Path, caplog):
    synonyms = [{"value": "Newark", "synonyms": ["NYC"]}, {"value": "New York", "synonyms": ["NY"]}]
    path = _json_annotating(tmp_path, ("nyc", "New York"), ("ny", "New York"), synonyms=synonyms)
    with caplog.at_level("WARNING"):
        assert read_nlu_json(path).synonyms == {"nyc": "Newark", "ny": "New York"}
    assert (
        f"{path}:entity_synonyms[0]: found inconsistent entity synonyms: 'NYC' maps to "
        f"'New York' ({path}:common_examples[0]) and to 'Newark'; using 'Newark', the last one "
        "read"
    ) in caplog.text
    assert caplog.text.count("inconsistent") == 1


def test_a_synonym_named_by_an_unquoted_number_says_to_quote_it():
    """Refused, as by Rasa's schema (a synonym's name is text); the message said
    "such as 'synonym: my_synonym'", which is no synonym's value."""
    with pytest.raises(InvalidProjectFile) as refused:
        read_nlu_yaml("nlu:\n- synonym: 12\n  examples: |\n    - twelve\n", "data/nlu.yml")
    assert str(refused.value) == (
        "data/nlu.yml:2: 'synonym' must be text, the value its examples map to, not 12: "
        'quote it (synonym: "12"), as Rasa\'s schema takes only text'
    )


@pytest.mark.parametrize("value", [None, True, ["a"]])
def test_a_json_synonyms_value_must_be_text_or_a_number(tmp_path: Path, value: object):
    path = tmp_path / "nlu.json"
    document = {"entity_synonyms": [{"value": value, "synonyms": ["x"]}]}
    path.write_text(json.dumps({"rasa_nlu_data": document}))
    with pytest.raises(InvalidProjectFile, match=r"entity_synonyms\[0\]: needs a 'value'"):
        read_nlu_json(path)


@pytest.mark.parametrize(
    "entry",
    ["- text: ''", "- text: '  '", "- text:", "- text: null", "- ''", "- ~", "- {text: ~}"],
)
@pytest.mark.parametrize("kind", ["intent", "regex", "lookup", "synonym"])
def test_an_empty_example_in_a_list_names_file_and_line(kind: str, entry: str):
    # Before: it trained as the text '' (or 'null', '~'): one empty example of the intent
    # 'thanks' made every message of unknown words 'thanks' at 0.82 (0.37 without it); an
    # empty regex or lookup element is no pattern. A block's empty '- ' line is skipped.
    text = f"nlu:\n- {kind}: x\n  examples:\n  - text: fine\n  {entry}\n"
    with pytest.raises(InvalidProjectFile, match="empty") as info:
        read_nlu_yaml(text, "data/nlu.yml")
    assert (info.value.filename, info.value.line) == ("data/nlu.yml", 5)


@pytest.mark.parametrize(
    ("entry", "hint"),
    [("- text: '  '", False), ('- "\\t"', False), ("- text: ~", True), ("- null", True)],
)
def test_only_a_null_example_is_called_yaml_null(entry: str, hint: bool):
    # Before, a quoted blank text was called "YAML's null; quote it", though quoted.
    text = f"nlu:\n- intent: x\n  examples:\n  - text: fine\n  {entry}\n"
    with pytest.raises(InvalidProjectFile, match="empty") as info:
        read_nlu_yaml(text, "data/nlu.yml")
    assert ("YAML's null" in str(info.value)) is hint


def test_invalid_yaml_names_file_and_line():
    with pytest.raises(InvalidProjectFile) as info:
        read_nlu_yaml("nlu:\n- intent: a\n  examples: [\n", "broken.yml")
    assert info.value.filename == "broken.yml"
    assert info.value.line is not None


def test_missing_item_key_is_an_error():
    with pytest.raises(InvalidProjectFile) as info:
        read_nlu_yaml("nlu:\n- examples: |\n    - hi\n", "x.yml")
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("item", "line", "fragment"),
    [
        # Before: each trained as an empty lookup (a warning in the log), so no entity it
        # listed was ever found.
        ("- lookup: city\n  examples: data/cities.txt\n", 3, "no longer reads lookup tables"),
        ("- lookup: city\n  examples: 3\n", 3, "of lookup 'city' hold no '- ' lines, only '3'"),
        ("- intent: a\n  examples: 3\n", 3, "of intent 'a' hold no '- ' lines, only '3'"),
        # Before: the intent trained as '3'.
        ("- intent: 3\n  examples: |\n    - hi\n", 2, "'intent' must be a name"),
        # As Rasa's NLU schema. Before: the key was skipped (a misspelt `examples` left the
        # intent with no examples).
        ("- intent: greet\n  exmaples: |\n    - hi\n", 3, "unknown key 'exmaples'"),
        ("- intent: a\n  examples: |\n    - hi\n  metdata: {a: 1}\n", 5, "unknown key 'metdata'"),
        ("- intent: a\n  examples:\n  - text: hi\n    metdata: {}\n", 5, "unknown key 'metdata'"),
        ("- synonym: NY\n  examples: |\n    - nyc\n  metadata: {}\n", 5, "unknown key 'metadata'"),
    ],
)
def test_an_item_of_the_wrong_kind_names_file_and_line(item: str, line: int, fragment: str):
    with pytest.raises(InvalidProjectFile) as info:
        read_nlu_yaml("nlu:\n" + item, "data/nlu.yml")
    assert (info.value.filename, info.value.line) == ("data/nlu.yml", line), str(info.value)
    assert fragment in str(info.value)


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference data not present")
def test_rasa_reference_nlu_files_load():
    files = [p for p in REFERENCE.rglob("*.yml") if "\nnlu:" in "\n" + p.read_text()]
    assert len(files) > 30
    for path in files:
        read_nlu_file(path)


def test_bots_load(mixed_data):
    assert "greet" in mixed_data.intents
    assert "chitchat" in mixed_data.retrieval_intents


def _mapped(data, values: list[str]) -> list[dict]:
    from server.nlu.message import Message
    from server.nlu.synonyms import EntitySynonymMapper

    mapper = EntitySynonymMapper({})
    mapper.train([], data)
    message = Message(" ".join(values))
    message.entities = [{"entity": "city", "value": v} for v in values]
    mapper.process(message)
    return message.entities


def test_conflicting_synonyms_warn_with_both_places_and_the_last_one_wins(caplog):
    """Before, "NYC" listed under two values (or annotated with another value) trained
    silently, and which value won depended on the component: a synonym block lost to an
    inline annotation wherever it stood. Now the last one read wins, with a warning."""
    from server.nlu.training_data import NLUTrainingData

    text = """nlu:
- synonym: New York
  examples: |
    - NYC
- intent: go
  examples: |
    - to [nyc](city:New York City)
"""
    with caplog.at_level("WARNING"):
        data = read_nlu_yaml(text, "data/nlu.yml")
    assert [e["value"] for e in _mapped(data, ["NYC"])] == ["New York City"]
    assert (
        "data/nlu.yml:7: found inconsistent entity synonyms: 'nyc' maps to 'New York' "
        "(data/nlu.yml:4) and to 'New York City'; using 'New York City', the last one read"
    ) in caplog.text

    caplog.clear()
    other = read_nlu_yaml("nlu:\n- synonym: NY\n  examples: |\n    - Nyc\n", "data/more.yml")
    with caplog.at_level("WARNING"):
        merged = NLUTrainingData.merge([data, other])
    assert merged.synonyms["nyc"] == "NY"
    assert "data/more.yml:4" in caplog.text and "(data/nlu.yml:7)" in caplog.text


def test_a_synonym_block_listing_its_own_value_maps_only_other_spellings():
    """As in Rasa, `- New York` under `synonym: New York` maps nothing (before, it mapped
    an extracted "new york" to "New York" and marked "New York" as processed, where Rasa
    leaves both alone); `- NEW YORK` makes "new york" in any case map to "New York"."""
    exact = read_nlu_yaml("nlu:\n- synonym: New York\n  examples: |\n    - New York\n")
    assert exact.synonyms == {}
    assert _mapped(exact, ["New York", "new york"]) == [
        {"entity": "city", "value": "New York"},
        {"entity": "city", "value": "new york"},
    ]
    other_case = read_nlu_yaml("nlu:\n- synonym: New York\n  examples: |\n    - NEW YORK\n")
    for entity in _mapped(other_case, ["new york", "NEW YORK"]):
        assert entity["value"] == "New York"
        assert entity["processors"] == ["EntitySynonymMapper"]


def test_one_text_annotated_with_several_entities():
    # Rasa's `[text][{...}, {...}]`: before, the example trained with the brackets and JSON
    # as its words, and no entity.
    data = read_nlu_yaml(
        "nlu:\n- intent: travel\n  examples: |\n"
        '    - fly to [Paris][{"entity": "city"}, {"entity": "place", "role": "to"}] now\n'
    )
    (example,) = data.examples
    assert example.text == "fly to Paris now"
    assert example.entities == [
        EntityAnnotation(7, 12, "Paris", "city"),
        EntityAnnotation(7, 12, "Paris", "place", "to"),
    ]


def test_several_entities_on_one_text_are_written_as_they_read():
    text = (
        "nlu:\n- intent: travel\n  examples: |\n"
        '    - [LA][{"entity": "city", "value": "Los Angeles"}, {"entity": "place"}] and [x](y)\n'
    )
    data = read_nlu_yaml(text)
    assert [e.entity for e in data.examples[0].entities] == ["city", "place", "y"]
    assert read_nlu_yaml(nlu_yaml(data)).examples == data.examples


@pytest.mark.parametrize("separator", ["\n", "\u2028", "\u2029", "\r", "\x0c"])
def test_an_example_of_several_lines_is_written_as_it_reads(separator: str):
    """`data convert` of a JSON text with a line break the block reader splits at (as Rasa's,
    `splitlines`) wrote it in the block: read back, its second line was skipped."""
    quoted = json.dumps(f"one{separator}two")  # escaped, as a YAML text holds it
    text = f"nlu:\n- intent: a\n  examples:\n  - text: {quoted}\n  - text: three\n"
    data = read_nlu_yaml(text)
    assert [e.text for e in data.examples] == [f"one{separator}two", "three"]
    assert read_nlu_yaml(nlu_yaml(data)).examples == data.examples


def test_a_broken_entity_in_a_list_names_file_and_line():
    text = (
        "nlu:\n- intent: a\n  examples: |\n    - ok\n"
        '    - to [SF][{"entity": "city"}, {"role": "to"}]\n'
    )
    with pytest.raises(InvalidProjectFile, match="needs an 'entity'") as info:
        read_nlu_yaml(text, "data/nlu.yml")
    assert (info.value.filename, info.value.line) == ("data/nlu.yml", 5)


@pytest.mark.parametrize("piece", ["[a][{", "[a](", "[a]{", "["])
def test_an_example_of_unclosed_annotations_is_read_in_linear_time(piece: str) -> None:
    """Each `[` began a search of the rest of the line: 100 KB of `[` took 40 s of CPU, and
    of `[a][{` (the list form) 25 s, holding the GIL, so a `POST /model/train` body stalled
    the whole server. Now a few milliseconds (CPU time, bounded loosely for a loaded
    machine)."""
    # Just under the 100,000 characters an example may have, with the "x " before it.
    text = piece * (99_990 // len(piece))
    started = time.process_time()
    data = read_nlu_yaml(f"nlu:\n- intent: odd\n  examples: |\n    - x {text}\n")
    assert time.process_time() - started < 2
    assert data.examples[0].text == f"x {text}"
    assert data.examples[0].entities == []


@pytest.mark.parametrize("kind", ["lookup", "synonym", "regex"])
@pytest.mark.parametrize("examples", ['""', "[]", "|\n"])
def test_an_item_with_empty_examples_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture, kind: str, examples: str
) -> None:
    """As Rasa's reader ("doesn't have any examples. It will be skipped."): before, nothing
    was said, and a lookup table was kept empty, enough for a model to be trained."""
    data = read_nlu_yaml(f"nlu:\n- {kind}: city\n  examples: {examples}\n", "data/nlu.yml")
    assert not (data.lookups or data.synonyms or data.regexes)
    assert f"data/nlu.yml:3: {kind} 'city' has no examples; it is skipped" in caplog.text


@pytest.mark.parametrize("kind", ["lookup", "synonym", "regex"])
def test_an_item_without_an_examples_key_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """As Rasa's reader, which takes a missing `examples` for empty ("doesn't have any
    examples. It will be skipped."), and as an empty `examples:` here (before: an error
    that stopped training)."""
    data = read_nlu_yaml(f"nlu:\n- intent: greet\n  examples: '- hi'\n- {kind}: city\n", "nlu.yml")
    assert not (data.lookups or data.synonyms or data.regexes)
    assert [example.text for example in data.examples] == ["hi"]
    assert f"nlu.yml:4: {kind} 'city' has no examples; it is skipped" in caplog.text


def test_a_file_of_many_blank_or_skipped_lines_logs_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture,
):
    """Each such line is worth a warning, but 10,000 blank lines (a paste, a generator's
    output) logged 10,000 lines and 15,000 with 5,000 indented ones: the first few are named
    with their line, the rest counted in one line."""
    indented = "".join(f"      - x{i}\n" for i in range(5_000))
    text = (
        "nlu:\n- intent: a\n  examples: |\n    - ok\n" + "\n" * 10_000 + "    - fine\n" + indented
    )
    data = read_nlu_yaml(text, "data/nlu.yml")
    assert [e.text for e in data.examples] == ["ok", "fine"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 11, len(warned)
    assert warned[0].startswith("data/nlu.yml:5: a blank line among the examples")
    assert warned[-1] == (
        "data/nlu.yml: 14990 more blank or skipped example lines from line 15 on, not listed "
        "one by one (15000 in all)"
    )
