"""`botserver data split stories` and `botserver data convert nlu`, as Rasa's commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from server.training.nlu_yaml import read_nlu_file
from tests.shared_data import TESTDATA

DEMO_JSON = TESTDATA / "examples" / "rasa" / "demo-rasa.json"
DEMO_YAML = TESTDATA / "examples" / "rasa" / "demo-rasa.yml"


def _more_stories(project: Path, count: int) -> list[str]:
    """Adds `count` stories to data/stories.yml; every story name in it."""
    stories = project / "data" / "stories.yml"
    text = stories.read_text()
    for n in range(count):
        text += (
            f"\n- story: thanks {n}\n  steps:\n  - intent: thanks\n"
            "  - action: utter_youre_welcome\n"
        )
    stories.write_text(text)
    return [story["story"] for story in yaml.safe_load(text)["stories"]]


def test_split_stories_counts_one_story_in_good_english(run_cli, starter_copy: Path) -> None:
    """Before: "data/stories.yml: 1 stories to ..."."""
    result = run_cli("data", "split", "stories", "--training-fraction", "0.5", cwd=starter_copy)
    assert result.code == 0, result.err
    assert "data/stories.yml: 1 story to train_test_split/train_stories.yml, 2 to" in result.out


def _names(path: Path) -> list[str]:
    return [story["story"] for story in yaml.safe_load(path.read_text())["stories"]]


def test_split_stories_then_test_on_the_held_out_part(run_cli, starter_copy: Path) -> None:
    """Before, `data split stories` was "invalid choice: 'stories'" (exit 2)."""
    names = _more_stories(starter_copy, 7)  # 10 stories
    result = run_cli(
        "data", "split", "stories", "--training-fraction", "0.7", "--random-seed", "3",
        cwd=starter_copy,
    )  # fmt: skip
    assert result.code == 0, result.err
    out = starter_copy / "train_test_split"
    train, test = out / "train_stories.yml", out / "test_stories.yml"
    assert "data/stories.yml: 7 stories to train_test_split/train_stories.yml, 3 to" in result.out
    assert sorted(_names(train) + _names(test)) == sorted(names)
    assert len(_names(test)) == 3  # 30 %, rounded up as Rasa's split rounds it

    # A seed chooses the stories Rasa's split (scikit-learn's) chooses, of the same count:
    # Rasa's share, 1 - 0.7 = 0.30000000000000004, made it 4 of 10 for the test part.
    from sklearn.model_selection import train_test_split

    _, rasa_test = train_test_split(names, test_size=3, random_state=3)
    assert sorted(_names(test)) == sorted(rasa_test)
    again = run_cli("data", "split", "stories", "--training-fraction", "0.7", "--random-seed", "3",
                    "--out", "again", cwd=starter_copy)  # fmt: skip
    assert again.code == 0
    assert (starter_copy / "again" / "test_stories.yml").read_text() == test.read_text()

    # The training file keeps the file's other sections; the test file is test stories.
    assert yaml.safe_load(train.read_text())["version"] == "3.1"
    assert yaml.safe_load(test.read_text())["version"] == "3.1"  # Rasa's has no version
    tested = run_cli("test", "core", "-s", str(test), cwd=starter_copy)
    assert tested.code == 0, tested.err
    assert "Test stories: 3/3 correct" in tested.out


def test_split_stories_skips_files_without_stories(run_cli, starter_copy: Path) -> None:
    result = run_cli("data", "split", "stories", cwd=starter_copy)
    assert result.code == 0, result.err
    written = sorted(p.name for p in (starter_copy / "train_test_split").iterdir())
    assert written == ["test_stories.yml", "train_stories.yml"]  # not rules.yml, nlu.yml


@pytest.mark.parametrize(
    ("files", "argv", "message"),
    [
        (
            {"one.yml": 'version: "3.1"\nstories:\n- story: a\n  steps:\n  - intent: greet\n'},
            ["-u", "one.yml"],
            "error: one.yml:2: 1 story cannot be split with --training-fraction 0.8: the "
            "training part would be empty",
        ),
        ({}, ["-u", "data/rules.yml"], "error: data/rules.yml: no stories to split"),
        ({}, ["-u", "nowhere"], "error: nowhere: training data not found"),
        (
            {"bad.yml": 'version: "3.1"\nstories:\n- story: a\n  steps: [\n'},
            ["-u", "bad.yml"],
            "error: bad.yml:5: invalid YAML",
        ),
        (
            {"bad.yml": 'version: "3.1"\nstories:\n- story: a\n  steps:\n  - intnt: greet\n'},
            ["-u", "bad.yml"],
            "error: bad.yml:5: unknown key 'intnt' in a story step",
        ),
        (
            {
                "a/s.yml": 'version: "3.1"\nstories:\n- story: a\n  steps:\n  - intent: greet\n'
                "- story: b\n  steps:\n  - intent: greet\n",
                "b/s.yml": 'version: "3.1"\nstories:\n- story: c\n  steps:\n  - intent: greet\n'
                "- story: d\n  steps:\n  - intent: greet\n",
            },
            ["-u", "a", "b"],
            "error: b/s.yml: the split of a/s.yml is also named train_s.yml and test_s.yml",
        ),
    ],
    ids=["one-story", "no-stories", "missing", "invalid-yaml", "broken-story", "same-name"],
)
def test_split_stories_bad_input_is_one_error_line(
    run_cli, starter_copy: Path, files: dict[str, str], argv: list[str], message: str
) -> None:
    for name, text in files.items():
        (starter_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (starter_copy / name).write_text(text)
    result = run_cli("data", "split", "stories", *argv, cwd=starter_copy)
    assert result.code == 1
    assert result.err.startswith(message), result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (starter_copy / "train_test_split").exists()


# -- data convert nlu ------------------------------------------------------------------------
def _as_data(data) -> tuple:
    examples = sorted(
        (e.text, e.intent, sorted((a.start, a.end, a.value, a.entity) for a in e.entities))
        for e in data.examples
    )
    return examples, data.synonyms, sorted(data.regexes), data.lookups


def test_convert_rasas_json_demo_gives_rasas_yaml_demo(run_cli, tmp_path: Path) -> None:
    """Before, `data convert` was "invalid choice: 'convert'" (exit 2)."""
    result = run_cli(
        "data", "convert", "nlu", "--data", str(DEMO_JSON), "--out", "nlu.yml", "-f", "yaml",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Wrote 46 examples to nlu.yml." in result.out
    assert _as_data(read_nlu_file(tmp_path / "nlu.yml")) == _as_data(read_nlu_file(DEMO_YAML))

    # and back, into a directory, named after the input
    from server.training.nlu_json import read_nlu_json

    back = run_cli(
        "data", "convert", "nlu", "--data", "nlu.yml", "--out", "json", "-f", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert back.code == 0, back.err
    assert _as_data(read_nlu_json(tmp_path / "json" / "nlu.json")) == _as_data(
        read_nlu_json(DEMO_JSON)
    )


def test_convert_keeps_synonyms_that_differ_only_in_case(run_cli, tmp_path: Path) -> None:
    """Before, demo-rasa.json's `"Chines"` and `"chines"` became one `- chines` in YAML."""
    run_cli("data", "convert", "nlu", "--data", str(DEMO_JSON), "--out", "nlu.yml", cwd=tmp_path)
    items = yaml.safe_load((tmp_path / "nlu.yml").read_text())["nlu"]
    chinese = next(item for item in items if item.get("synonym") == "chinese")
    assert chinese["examples"] == "- Chinese\n- Chines\n- chines\n"

    run_cli("data", "convert", "nlu", "--data", "nlu.yml", "--out", "back.json", "-f", "json",
            cwd=tmp_path)  # fmt: skip
    synonyms = json.loads((tmp_path / "back.json").read_text())["rasa_nlu_data"]["entity_synonyms"]
    original = json.loads(DEMO_JSON.read_text())["rasa_nlu_data"]["entity_synonyms"]
    assert {s["value"]: sorted(s["synonyms"]) for s in synonyms} == {
        s["value"]: sorted(s["synonyms"]) for s in original
    }


def test_convert_writes_texts_ending_in_a_line_break_as_they_read_back(
    run_cli, tmp_path: Path
) -> None:
    """Before, `"yes\\n"` turned its intent's examples into `- text: |` blocks, which read back
    as "yes" all the same (YAML example texts are stripped, by Rasa's reader too)."""
    examples = [
        {"text": "yes\n", "intent": "affirm"},
        {"text": "sure ", "intent": "affirm"},
        {"text": " I want chinese\r\n", "intent": "order",
         "entities": [{"start": 8, "end": 15, "value": "chinese", "entity": "cuisine"}]},
    ]  # fmt: skip
    (tmp_path / "in.json").write_text(json.dumps({"rasa_nlu_data": {"common_examples": examples}}))
    result = run_cli("data", "convert", "nlu", "--data", "in.json", "--out", "out.yml",
                     cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    items = yaml.safe_load((tmp_path / "out.yml").read_text())["nlu"]
    assert items[0] == {"intent": "affirm", "examples": "- yes\n- sure\n"}
    assert items[1] == {"intent": "order", "examples": "- I want [chinese](cuisine)\n"}
    back = read_nlu_file(tmp_path / "out.yml").examples
    assert [(e.text, [(a.start, a.end, a.value) for a in e.entities]) for e in back] == [
        ("yes", []),
        ("sure", []),
        ("I want chinese", [(7, 14, "chinese")]),
    ]


def test_convert_counts_the_examples_left_out_in_good_english(run_cli, tmp_path: Path) -> None:
    """An example without an intent has no place in Rasa 3 YAML; the warning counts them.
    Before: "1 examples have no intent"."""
    examples = [{"text": "hello", "intent": "greet"}, {"text": "what"}]
    (tmp_path / "in.json").write_text(json.dumps({"rasa_nlu_data": {"common_examples": examples}}))
    result = run_cli("data", "convert", "nlu", "--data", "in.json", "--out", "out.yml",
                     cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    assert "1 example has no intent: Rasa 3 YAML has no place for it; left out" in result.err
    assert "Wrote 1 example to out.yml." in result.out  # before: "1 examples"


def test_convert_keeps_metadata_roles_and_lookups(run_cli, tmp_path: Path) -> None:
    source = {
        "rasa_nlu_data": {
            "common_examples": [
                {
                    "text": "fly from Berlin",
                    "intent": "book",
                    "entities": [
                        {"start": 9, "end": 15, "value": "Berlin", "entity": "city", "role": "from"}
                    ],
                    "metadata": {"sentiment": "neutral"},
                },
                {"text": "fly", "intent": "book", "entities": []},
            ],
            "lookup_tables": [{"name": "city", "elements": ["Berlin", "Paris"]}],
        }
    }
    (tmp_path / "in.json").write_text(json.dumps(source))
    result = run_cli("data", "convert", "nlu", "--data", "in.json", "--out", "out.yml",
                     cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    data = read_nlu_file(tmp_path / "out.yml")
    first = data.examples[0]
    assert first.text == "fly from Berlin"
    assert (first.entities[0].entity, first.entities[0].role) == ("city", "from")
    assert first.metadata == {"example": {"sentiment": "neutral"}}
    assert data.lookups == {"city": ["Berlin", "Paris"]}


def test_convert_writes_entity_fields_in_rasas_order(run_cli, tmp_path: Path) -> None:
    """Rasa writes entity, role, group, value; before, the value came second."""
    entity = {"start": 5, "end": 7, "value": "San Francisco", "entity": "city", "role": "from",
              "group": "1"}  # fmt: skip
    examples = [{"text": "from SF on", "intent": "fly", "entities": [entity]}]
    (tmp_path / "in.json").write_text(json.dumps({"rasa_nlu_data": {"common_examples": examples}}))
    result = run_cli("data", "convert", "nlu", "--data", "in.json", "--out", "out.yml",
                     cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    assert yaml.safe_load((tmp_path / "out.yml").read_text())["nlu"][0]["examples"] == (
        '- from [SF]{"entity": "city", "role": "from", "group": "1", "value": "San Francisco"} on\n'
    )


def test_convert_warns_of_an_entity_overlapping_another(run_cli, tmp_path: Path) -> None:
    """Rasa's markup cannot hold two entities over overlapping text: the later is left out,
    the text kept, with a warning naming it. Before (as Rasa), the overlapped text was
    written twice, `[New York](city)[York City](place) now`, so the example read back as
    another text; then, for a while, the entity was left out without a word."""
    entities = [
        {"start": 0, "end": 8, "entity": "city", "value": "New York"},
        {"start": 4, "end": 13, "entity": "place", "value": "York City"},
    ]
    examples = [{"text": "New York City now", "intent": "go", "entities": entities}]
    (tmp_path / "in.json").write_text(json.dumps({"rasa_nlu_data": {"common_examples": examples}}))
    result = run_cli("data", "convert", "nlu", "--data", "in.json", "--out", "out.yml",
                     cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    written = yaml.safe_load((tmp_path / "out.yml").read_text())["nlu"][0]["examples"]
    assert written == "- [New York](city) City now\n"
    assert "'place'" in result.err and "'New York City now'" in result.err, result.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"rasa_nlu_data": {"common_examples": [\n{"text": "hi",}\n]}}',
            "in.json:2: invalid JSON",
        ),
        ('{"luis_schema_version": "7.0"}', "this looks like a LUIS export, which is not converted"),
        (
            '{"rasa_nlu_data": {"common_examples": [{"text": "hi", "intent": "greet"}, '
            '{"intent": "greet"}]}}',
            "in.json:1: rasa_nlu_data.common_examples[1]: needs a 'text' string",
        ),
        (
            '{"rasa_nlu_data": {"common_examples": [{"text": "hi", "intent": "greet", '
            '"entities": [{"start": 0, "end": 9, "entity": "x"}]}]}}',
            "common_examples[0].entities[0]: 'start' and 'end' must mark a part of the text",
        ),
        (  # before, "(1 characters)"
            '{"rasa_nlu_data": {"common_examples": [{"text": "a", "intent": "greet", '
            '"entities": [{"start": 0, "end": 2, "entity": "x"}]}]}}',
            "'start' and 'end' must mark a part of the text (1 character)",
        ),
        (
            '{"rasa_nlu_data": {"lookup_tables": [{"name": "city", "elements": "cities.txt"}]}}',
            "lookup_tables[0]: the lookup table file 'cities.txt' does not exist",
        ),
    ],
    ids=["syntax", "luis", "no-text", "entity-span", "entity-span-one-character", "lookup-file"],
)
def test_convert_bad_input_is_one_error_line(
    run_cli, tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "in.json").write_text(text)
    result = run_cli("data", "convert", "nlu", "--data", "in.json", "--out", "out.yml",
                     cwd=tmp_path)  # fmt: skip
    assert result.code == 1
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "out.yml").exists()


RASA2_MARKDOWN = "## intent:greet\n- hey\n- hello\n"


def test_convert_rasa_2_markdown_says_what_to_do(run_cli, tmp_path: Path) -> None:
    """Before: `old.md: not NLU data: give a .json, .yml or .yaml file`, and for a directory
    of Markdown files `no NLU examples to convert`, naming no Markdown."""
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "nlu.md").write_text(RASA2_MARKDOWN)
    for data in ("md/nlu.md", "md"):
        result = run_cli("data", "convert", "nlu", "--data", data, "--out", "out.yml",
                         cwd=tmp_path)  # fmt: skip
        assert result.code == 1
        assert "md/nlu.md: Rasa 2's Markdown format" in result.err
        assert "rasa data convert nlu -f yaml" in result.err
        assert not (tmp_path / "out.yml").exists()


def test_convert_a_missing_file_or_no_data_flag(run_cli, tmp_path: Path) -> None:
    missing = run_cli("data", "convert", "nlu", "--data", "nope.json", cwd=tmp_path)
    assert missing.code == 1
    assert "error: nope.json: NLU data not found" in missing.err
    # without --data, Rasa's default: the data directory
    no_flag = run_cli("data", "convert", "nlu", cwd=tmp_path)
    assert no_flag.code == 1
    assert "error: data: NLU data not found" in no_flag.err


def test_convert_out_under_a_file_fails_before_reading(run_cli, tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("a file")
    result = run_cli(
        "data", "convert", "nlu", "--data", str(DEMO_JSON), "--out", "notes/nlu.yml",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 1
    assert "error: --out notes: notes is a file, not a directory" in result.err


# -- data validate stories -------------------------------------------------------------------
CONFLICT = (
    "\n- story: deny after greet\n  steps:\n  - intent: greet\n  - action: utter_greet\n"
    "  - intent: deny\n  - action: utter_goodbye\n"
    "\n- story: deny after thanks\n  steps:\n  - intent: thanks\n"
    "  - action: utter_youre_welcome\n  - intent: deny\n  - action: utter_greet\n"
)


def test_validate_stories_checks_only_the_story_structure(run_cli, starter_copy: Path) -> None:
    """Before, `data validate stories` was "unrecognized arguments: stories" (exit 2)."""
    nlu = starter_copy / "data" / "nlu.yml"
    # The whole validation fails on this (an intent the domain lacks, with
    # --fail-on-warnings); the stories' does not.
    nlu.write_text(nlu.read_text() + "\n- intent: order_pizza\n  examples: |\n    - a pizza\n")
    assert run_cli("data", "validate", "--fail-on-warnings", cwd=starter_copy).code == 1
    clean = run_cli("data", "validate", "stories", "--fail-on-warnings", cwd=starter_copy)
    assert clean.code == 0, clean.out
    assert "The project is valid (0 warnings)." in clean.out

    stories = starter_copy / "data" / "stories.yml"
    stories.write_text(stories.read_text() + CONFLICT)
    relaxed = run_cli("data", "validate", "stories", "--max-history", "1", cwd=starter_copy)
    assert relaxed.code == 0
    assert "warning: story structure conflict after intent 'deny'" in relaxed.out
    # flags before `stories` count too
    strict = run_cli(
        "data", "validate", "--max-history", "1", "--fail-on-warnings", "stories",
        cwd=starter_copy,
    )  # fmt: skip
    assert strict.code == 1
    # was "1 warning(s)"
    assert "Validation failed: 0 errors, 1 warning (1 story structure conflict among them)." in (
        strict.out
    )


@pytest.mark.parametrize(
    ("assistant_id", "said"),
    [
        (None, "warning: config.yml: the 'assistant_id' key is missing; each training gives"),
        ("placeholder_default", "warning: config.yml: 'assistant_id' is still the placeholder"),
    ],
)
def test_validate_stories_warns_of_the_assistant_id_as_data_validate_does(
    run_cli, starter_copy: Path, assistant_id: str | None, said: str
) -> None:
    """As Rasa 3.6's `rasa data validate stories`, which warns of config.yml's mandatory
    keys after the story structure as `rasa data validate` does, and exits 0 on it with
    --fail-on-warnings too. Before, it said nothing: "The project is valid (0 warnings)"."""
    config = starter_copy / "config.yml"
    kept = [line for line in config.read_text().splitlines() if "assistant_id" not in line]
    if assistant_id is not None:
        kept.append(f"assistant_id: {assistant_id}")
    config.write_text("\n".join(kept) + "\n")

    whole = run_cli("data", "validate", cwd=starter_copy)
    stories = run_cli("data", "validate", "stories", "--fail-on-warnings", cwd=starter_copy)

    [warning] = [line for line in whole.out.splitlines() if line.startswith(said)]
    assert stories.code == 0, stories.out
    assert stories.out.splitlines() == [
        warning,
        "The project is valid (1 warning; --fail-on-warnings does not fail on the 1 about "
        "config.yml).",
    ]


def test_validate_stories_on_a_broken_file_names_file_and_line(run_cli, starter_copy: Path) -> None:
    stories = starter_copy / "data" / "stories.yml"
    stories.write_text(stories.read_text() + "\n- story: broken\n  steps:\n  - intent: [\n")
    result = run_cli("data", "validate", "stories", cwd=starter_copy)
    assert result.code == 1
    assert "error: data/stories.yml:" in result.out and "invalid YAML" in result.out
