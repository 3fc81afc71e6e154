"""Every shared bot loads and validates; every valid Rasa reference file loads; the invalid
ones fail with the file and line; broken files name the file and line."""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.dialogue.slot_extraction import extract_slots
from server.errors import InvalidProjectFile
from server.trackers.events import UserUttered
from server.trackers.tracker import Tracker
from server.training import yaml_io
from server.training.config_yaml import config_from_dict, read_config
from server.training.domain_yaml import DomainReader, is_domain_data, read_domain
from server.training.nlu_json import read_nlu_json
from server.training.nlu_yaml import read_nlu_file
from server.training.project import load_project, load_test_stories
from server.training.stories_yaml import read_story_data
from server.training.train import train, train_nlu
from server.training.validation import run_validate, validate_project
from server.training.yaml_io import parse_yaml, read_yaml_file
from tests.shared_data import BOTS, TESTDATA

BOT_DIRS = sorted(p for p in BOTS.iterdir() if (p / "domain.yml").is_file())

# Domains split over several files: each part is only complete when merged with the rest.
DOMAIN_DIRS = [
    "test_domains/test_domain_from_directory",
    "test_domains/test_domain_from_directory_tree",
    "test_domains/test_domain_from_directory_for_entities",
    "test_domains/test_domain_from_multiple_files",
    "test_domains/test_domain_with_duplicates",
    "test_domains/test_domain_without_duplicates",
    "test_domains/test_domain_with_separate_session_config",
]
# Reference files that Rasa 3 itself rejects (they exist to test its errors), with the part
# of our message that says why. Each must fail with an InvalidProjectFile naming file + line.
EXPECTED_INVALID = {
    # broken YAML syntax
    "test_domains/invalid_format.yml": "invalid YAML",
    "test_wrong_yaml_stories/wrong_yaml.yml": "invalid YAML",
    # a custom slot class (Python code): an error naming the file and line, as DESIGN.md says
    "test_domains/custom_slot_domain.yml": "custom slot class",
    # responses that are null, plain strings, or without text/custom (Rasa's response schema)
    "test_domains/empty_response_format.yml": "non-empty list of variations",
    "test_domains/missing_text_for_templates.yml": "must be a mapping",
    "test_domains/wrong_response_format.yml": "must be a mapping",
    "test_domains/wrong_custom_response_format.yml": "unknown key 'super'",
    # a Rasa 1 pipeline template name instead of a list of components
    "test_multi_domain/data/MoodBot/config.yml": "'pipeline' must be a list",
    # a user step with an empty intent and no text (Rasa warns and reads an empty intent)
    "test_yaml_stories/rules_missing_intent.yml": "needs an 'intent'",
    "test_yaml_stories/stories_missing_intent.yml": "needs an 'intent'",
    # a `rule:` under `stories:` (Rasa's schema refuses it when training; its reader test
    # skips the schema)
    "test_mixed_yaml_training_data/training_data.yml": "unknown key 'rule' in an item under",
    # a response given twice (Rasa's YAML reader refuses duplicate keys too)
    "test_domains/duplicate_responses.yml": "'utter_greet' is given twice",
    # intents listed twice in one file (Rasa: "Intents are not unique!")
    "test_domains/duplicate_intents.yml": "intent 'default' is listed twice (and 1 other",
    # an entity, an action listed twice in one file (Rasa: "Duplicate entities in domain",
    # "Duplicate actions in domain"); before, warnings, and they trained
    "test_domains/duplicate_entities.yml": "entity 'name' is listed twice: list each entity",
    "test_domains/duplicate_actions.yml": "action 'utter_default' is listed twice: list each",
    # the graph.v1 recipe (a graph of Rasa's Python classes): it trained an empty model
    "test_config/graph_config.yml": "recipe 'graph.v1' is not supported",
    "test_config/graph_config_short.yml": "recipe 'graph.v1' is not supported",
}
# Not Rasa 3 project files: endpoints / credentials (read by server/config.py) and the
# other formats under examples/ and test/ (Rasa NLU JSON, LUIS, Wit, Dialogflow, txt),
# which botserver does not read; only YAML files are walked here.
NOT_PROJECT_KEYS = {"tracker_store", "event_broker", "model", "nlg", "action_endpoint", "rest"}


def _reference_yaml_files() -> list[str]:
    files = []
    for path in sorted(TESTDATA.rglob("*")):
        if path.suffix not in (".yml", ".yaml"):
            continue
        rel = path.relative_to(TESTDATA).as_posix()
        if any(rel.startswith(d + "/") for d in DOMAIN_DIRS):
            continue
        files.append(rel)
    return files


def load_reference_file(path: Path) -> list[str]:
    """Loads a file with every reader its sections call for; returns the kinds it held."""
    data = read_yaml_file(path)
    kinds = []
    if isinstance(data, dict):
        if is_domain_data(data):
            kinds.append("domain")
            read_domain(path, warnings=[])
        if "nlu" in data or "responses" in data:
            kinds.append("nlu")
            read_nlu_file(path)
        if "stories" in data or "rules" in data:
            kinds.append("stories")
            read_story_data(data, str(path), warnings=[])
        if any(k in data for k in ("pipeline", "policies", "recipe", "language")):
            kinds.append("config")
            config_from_dict(data, str(path))
        if not kinds and set(data) & NOT_PROJECT_KEYS or path.name == "credentials.yml":
            kinds.append("endpoints")
    return kinds


@pytest.mark.parametrize("bot", BOT_DIRS, ids=lambda p: p.name)
def test_every_shared_bot_validates_without_errors(bot: Path) -> None:
    report = validate_project(bot / "config.yml", bot / "domain.yml", [bot / "data"])
    assert report.errors == []


@pytest.mark.parametrize("bot", BOT_DIRS, ids=lambda p: p.name)
def test_every_shared_bot_loads_with_its_test_stories(bot: Path) -> None:
    project = load_project(bot / "config.yml", bot / "domain.yml", [bot / "data"])
    assert project.nlu.examples and project.stories
    assert project.training_stories()
    if (bot / "tests").is_dir():
        assert load_test_stories([bot / "tests"], project.domain)


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    bot = BOTS / "moodbot"
    out = io.StringIO()
    args = argparse.Namespace(
        domain=str(bot / "domain.yml"), data=[str(bot / "data")], config=str(bot / "config.yml")
    )
    assert run_validate(args, out) == 0
    assert "valid" in out.getvalue()

    broken = tmp_path / "data"
    broken.mkdir()
    (broken / "stories.yml").write_text(
        "stories:\n- story: s\n  steps:\n  - intent: greet\n  - action: action_nope\n"
    )
    out = io.StringIO()
    args.data = [str(broken)]
    assert run_validate(args, out) == 1
    assert f"{broken / 'stories.yml'}:5: action 'action_nope'" in out.getvalue()


def test_validate_shows_trains_config_warnings_without_failing_on_them(tmp_path: Path) -> None:
    # moodbot's stock Rasa config (spaCy, DIET, TED, no assistant_id): `train` says how it
    # runs here; `data validate` says the same, and a CI running it with
    # --fail-on-warnings still passes, as with Rasa (once its data no longer gives the
    # example 'good afternoon' to greet and goodbye both, which Rasa warns of too).
    bot = BOTS / "moodbot"
    nlu = tmp_path / "nlu.yml"
    nlu.write_text((bot / "data" / "nlu.yml").read_text().replace("    - good afternoon\n", "", 1))
    out = io.StringIO()
    args = argparse.Namespace(
        domain=str(bot / "domain.yml"),
        data=[str(nlu), str(bot / "data" / "stories.yml"), str(bot / "data" / "rules.yml")],
        config=str(bot / "config.yml"),
        fail_on_warnings=True,
    )
    assert run_validate(args, out) == 0
    printed = out.getvalue()
    assert "warning: Some pipeline components run as botserver equivalents: " in printed
    assert "DIETClassifier -> IntentClassifier" in printed
    assert "warning: Policies trained as botserver equivalents: TEDPolicy -> MLPolicy" in printed
    assert "the 'assistant_id' key is missing" in printed
    assert "--fail-on-warnings does not fail on the 3 about config.yml" in printed


@pytest.mark.parametrize("rel", _reference_yaml_files())
def test_reference_file_loads_or_fails_with_file_and_line(rel: str) -> None:
    path = TESTDATA / rel
    if rel in EXPECTED_INVALID:
        with pytest.raises(InvalidProjectFile) as info:
            load_reference_file(path)
        assert info.value.filename == str(path)
        assert info.value.line is not None
        assert EXPECTED_INVALID[rel] in str(info.value)
    else:
        assert load_reference_file(path), f"{rel} holds no section botserver knows"


@pytest.mark.parametrize("rel", DOMAIN_DIRS)
def test_reference_domain_directories_merge(rel: str) -> None:
    if rel == "test_domains/test_domain_from_directory":
        # Its domain_invalid.yml gives `version` twice: Rasa skips the file with a warning,
        # botserver names it and the line (as for any other broken file of the domain).
        with pytest.raises(InvalidProjectFile, match="'version' is given twice") as info:
            read_domain(TESTDATA / rel, warnings=[])
        assert info.value.filename == str(TESTDATA / rel / "domain_invalid.yml")
        assert info.value.line == 4
        return
    domain = read_domain(TESTDATA / rel, warnings=[])
    assert domain.intents


def test_domain_directory_merges_files_and_reports_duplicates() -> None:
    warnings: list[str] = []
    domain = read_domain(
        TESTDATA / "test_domains/test_domain_from_directory_tree", warnings=warnings
    )
    assert {"utter_skill_1", "utter_skill_2"} <= set(domain.intents)
    assert any("defined more than once" in w for w in warnings)
    separate = read_domain(TESTDATA / "test_domains/test_domain_with_separate_session_config")
    assert separate.session_config.session_expiration_time == 1


# A slot mapping with one condition, to be completed by the condition's key and value.
_CONDITIONED = (
    "entities: [e]\nslots:\n  s:\n    type: text\n    mappings:\n"
    "    - type: from_entity\n      entity: e\n      conditions:\n      - "
)

# A form in Rasa 2.0's format: its slots' mappings right under its name.
_RASA_2_FORM = (
    "entities: [cuisine]\nslots:\n  cuisine: {type: text, mappings: [{type: custom}]}\n"
    "forms:\n  f:\n    ignored_intents: [chat]\n"
    "    cuisine:\n    - type: from_entity\n      entity: cuisine\n"
)

# A response variation with one condition, to be completed by one of the condition's keys.
_RESPONSE_CONDITION = "responses:\n  utter_a:\n  - text: a\n    condition:\n    - value: x\n      "


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("slots:\n  mood:\n    type: textual\n    mappings: []\n", 3, "unknown type 'textual'"),
        ("slots:\n  mood:\n    mappings: []\n", 2, "needs a 'type'"),
        (
            "slots:\n  s:\n    type: text\n    mappings:\n    - type: from_entiti\n",
            5,
            "unknown type 'from_entiti'",
        ),
        ("slots:\n  a:\n    type: text\n   mappings: []\n", 4, "invalid YAML"),
        ("responses:\n  utter_a:\n  - txt: hi\n", 3, "unknown key 'txt'"),
        # Before: these trained, and the first turn uttering the response failed.
        ("responses:\n  utter_a:\n  - text: 3\n", 3, "'text' in a variation of response"),
        ("responses:\n  utter_a:\n  - text: a\n    buttons: x\n", 4, "'buttons' in a"),
        ("responses:\n  utter_a:\n  - text: a\n    condition: x\n", 4, "must be a list of"),
        ("session_config:\n  session_expiration_time: -1\n", 2, "0 or more"),
        # Before: these trained, and the model's GET /domain was a 500 (JSON holds neither).
        ("session_config:\n  session_expiration_time: .nan\n", 2, "0 or more"),
        ("session_config:\n  session_expiration_time: 1e400\n", 2, "(0: sessions never"),
        # Before: an OverflowError traceback (an integer no float holds), a 500 from
        # POST /model/train.
        ("session_config:\n  session_expiration_time: 1" + "0" * 400 + "\n", 2, "0 or more"),
        # Before: a traceback from `botserver train`, a 500 from POST /model/train (the
        # domain is stored as JSON, which holds no date, set, bytes or infinity).
        ("responses:\n  utter_a:\n  - custom:\n      when: 2024-01-01\n", 4, "a date"),
        ("responses:\n  utter_a:\n  - custom: {at: 2024-01-01 10:00:00}\n", 3, "a date"),
        ("responses:\n  utter_a:\n  - custom: {x: .inf}\n", 3, "inf"),
        ("responses:\n  utter_a:\n  - custom: {tags: !!set {a, b}}\n", 3, "a set"),
        ("responses:\n  utter_a:\n  - custom: {raw: !!binary aGk=}\n", 3, "bytes"),
        ("responses:\n  utter_a:\n  - custom:\n      2024-01-01: x\n", 4, "quote it"),
        ("slots:\n  s:\n    type: any\n    initial_value: 2024-01-01\n", 4, "a date"),
        (
            "intents: [i]\nslots:\n  s:\n    type: any\n    mappings:\n    - type: from_intent\n"
            "      intent: i\n      value: 2024-01-01\n",
            8,
            "a date",
        ),
        ("forms:\n  f:\n    required_slots: name\n", 3, "list of slot names"),
        # Before: these trained into a form that asked for nothing (activated, it ended at
        # once); Rasa's domain schema refuses a key a form does not have, and Rasa refuses
        # `ignored_intents` without `required_slots`.
        ("forms:\n  f:\n    required_slot: [s]\n", 3, "unknown key 'required_slot' in form"),
        (_RASA_2_FORM, 7, "form 'f' is in Rasa 2's format (slot mappings under the form)"),
        ("intents: [chat]\nforms:\n  f:\n    ignored_intents: chat\n", 4, "needs 'required_"),
        ("intents:\n- greet: {use_entities: maybe}\n", 2, "use_entities"),
        # Before: accepted; Rasa refuses an intent with a ':' and nothing after it.
        ("version: '3.1'\nintents:\n- bye\n- greet:\n", 4, "intent 'greet' has a ':' but no"),
        ("intents:\n- greet: {}\n", 2, "intent 'greet' has a ':' but no properties"),
        # Before: a warning, and the first definition won (entities the second excluded
        # were used); Rasa refuses a repeated intent.
        ("intents:\n- greet\n- greet: {use_entities: []}\n", 3, "'greet' is listed twice"),
        # Before: a warning, and it trained; Rasa refuses the file ("Intents are not unique!
        # Found multiple intents with name(s) ['bye', 'greet']"), and then trains nothing.
        (
            "intents:\n- greet\n- bye\n- greet\n- bye\n",
            4,
            "intent 'greet' is listed twice (and 1 other: 'bye'): list each intent once",
        ),
        # Before: warnings, and they trained; Rasa refuses the file ("Duplicate entities in
        # domain", "Duplicate actions in domain": an e2e action is an action there too).
        ("entities:\n- city\n- name\n- city\n", 4, "entity 'city' is listed twice: list each"),
        ("entities:\n- city\n- city:\n    roles: [a]\n", 3, "entity 'city' is listed twice"),
        (
            "actions:\n- action_a\n- action_b\n- action_a: {send_domain: true}\n- action_b\n",
            4,
            "action 'action_a' is listed twice (and 1 other: 'action_b'): list each action once",
        ),
        ("e2e_actions:\n- Hi there\n- Hi there\n", 3, "e2e action 'Hi there' is listed twice"),
        # Before: "is listed twice" for a name listed three times or more, and deleting the
        # repeat the error pointed at only led to the next one.
        (
            "intents:\n- greet\n- greet\n- bye\n- greet\n- bye\n",
            3,
            "intent 'greet' is listed 3 times, on lines 2, 3 and 5 (and 1 other: 'bye'): list each"
            " intent once",
        ),
        (
            "entities:\n" + "- city\n" * 12,
            3,
            "entity 'city' is listed 12 times, on lines 2, 3, 4, 5, 6, 7, 8, 9 and 4 more: list",
        ),
        # A flow list holds its repeats on one line: before, "on lines 1, 1 and 1".
        ("intents: [greet, greet, bye, greet]\n", 1, "intent 'greet' is listed 3 times: list"),
        ("intents: [greet, greet,\n  greet]\n", 1, "'greet' is listed 3 times, on lines 1 and 2:"),
        # Before: it trained; Rasa skips the file with a warning and trains an empty domain.
        ('version: "9"\nintents: [greet]\n', 1, "'version' '9' is not a format this server"),
        ('version: "3.x"\nintents: [greet]\n', 1, "'version' '3.x' is not a format"),
        # Before: these trained, and the built-in action ran instead of the form (or the
        # response was uttered); Rasa refuses them ("Duplicate actions in domain").
        ("forms:\n  action_restart: {required_slots: []}\n", 2, "form 'action_restart' is"),
        ("forms:\n  action_listen: {required_slots: []}\n", 2, "built-in action"),
        (
            "responses:\n  utter_a: [{text: a}]\nforms:\n  utter_a: {required_slots: []}\n",
            4,
            "form 'utter_a' has the name of a response",
        ),
        # Before: `botserver train` and `data validate` ended in a TypeError traceback
        # (unhashable type) for a list or a mapping; Rasa's domain schema takes a name or
        # null for each.
        (_CONDITIONED + "active_loop: [f, g]\n", 9, "'active_loop' of a mapping condition"),
        (_CONDITIONED + "active_loop: {f: 1}\n", 9, "slot 's' must be a name or null, not {"),
        (_CONDITIONED + "active_loop: 5\n", 9, "must be a name or null, not 5"),
        (_CONDITIONED + "requested_slot: [s]\n", 9, "'requested_slot' of a mapping condition"),
        # Before: these trained; a slot name that is a list or a mapping made every turn
        # uttering the response fail (TypeError), an unknown key (`slot:` for `name:`) left
        # a variation never said. Rasa's response schema refuses each.
        (_RESPONSE_CONDITION + "name: [city]\n", 6, "the name of a slot, not ["),
        (_RESPONSE_CONDITION + "name: {city: 1}\n", 6, "the name of a slot, not {"),
        (_RESPONSE_CONDITION + "name: 5\n", 6, "the name of a slot, not 5"),
        (_RESPONSE_CONDITION + "type: [slot]\n", 6, "'type' of a condition of response"),
        (_RESPONSE_CONDITION + "slot: city\n", 6, "unknown key 'slot' in a condition of"),
        # A name YAML reads as a number. Before, a slot or form `1:` trained as '1', and an
        # intent `- 1: {...}` as '1', where Rasa's schema refuses a slot or form name
        # without a letter (quoted too) and Rasa's domain fails sorting an intent 1 among
        # text names (a TypeError); `- 1` was refused already.
        ("intents:\n- greet\n- 1\n", 3, "not 1; quote it ('- \"1\"')"),
        ("intents:\n- greet\n- 1:\n    use_entities: []\n", 3, "'intents' is 1, a number"),
        ("entities:\n- 2.5:\n    roles: [a]\n", 2, "'entities' is 2.5, a number"),
        ("actions:\n- 7:\n    send_domain: true\n", 2, "'actions' is 7, a number"),
        ("slots:\n  1:\n    type: text\n    mappings: []\n", 2, "slot name '1' has no letter"),
        ("slots:\n  '42':\n    type: any\n    mappings: []\n", 2, "slot name '42' has no"),
        ("forms:\n  1:\n    required_slots: []\n", 2, "form name '1' has no letter"),
        # Rasa's schema takes any response name, then its domain sorts the names (a
        # TypeError for a number among text) or reads one as text (an AttributeError for a
        # number alone); before, a response `1:` trained as '1'. Rasa's schema also refuses
        # an action with properties whose name has no letter.
        ("responses:\n  utter_a: [{text: a}]\n  1: [{text: b}]\n", 3, "response name 1 is"),
        ("responses:\n  true: [{text: b}]\n", 2, "quote it ('\"true\":')"),
        ("actions:\n- '42':\n    send_domain: true\n", 2, "action name '42' has no letter"),
        # Before: it trained, with the project's type (a text slot influencing the
        # conversation, say) for the slot the server fills; Rasa adds the slot to every
        # domain and then refuses one declaring it ("Duplicate slots in domain").
        (
            "intents: [greet]\nslots:\n  session_started_metadata:\n    type: any\n"
            "    mappings: []\n",
            3,
            "slot 'session_started_metadata' is one the server adds to every domain itself",
        ),
    ],
)
def test_broken_domain_names_file_and_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / "domain.yml"
    path.write_text(text)
    with pytest.raises(InvalidProjectFile) as info:
        read_domain(path)
    assert (info.value.filename, info.value.line) == (str(path), line), str(info.value)
    assert fragment in str(info.value)


def test_a_form_named_like_a_default_action_it_lists_under_actions_loads(tmp_path: Path) -> None:
    # As in Rasa: listed under `actions`, the name is the project's own action (run on the
    # action server), so the domain names it once.
    path = tmp_path / "domain.yml"
    path.write_text("forms:\n  action_restart: {required_slots: []}\nactions: [action_restart]\n")
    assert "action_restart" in read_domain(path).forms


def test_a_categorical_slots_values_are_text_as_rasa_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "domain.yml"
    path.write_text("slots:\n  s:\n    type: categorical\n    values: [2024-01-01, .inf, 3]\n")
    assert read_domain(path).slots[0].values == ["2024-01-01", "inf", "3"]


@pytest.mark.parametrize(
    "section",
    [
        "stories:\n- story: s\n  steps:\n  - intent: a\n  - slot_was_set:\n    - s: 2024-01-01\n",
        "nlu:\n- intent: a\n  metadata: {since: 2024-01-01}\n  examples: |\n    - hi\n",
        "x-notes:\n  reviewed: 2024-01-01\n",
    ],
)
def test_a_domain_files_other_sections_may_hold_dates(tmp_path: Path, section: str) -> None:
    # The model keeps none of them in its domain: a story's slot value, an NLU example's
    # metadata (both train when read as data) and a section Rasa ignores. Before: "2024-01-01
    # is read as a date, which a model cannot hold", for a file Rasa trains.
    path = tmp_path / "domain.yml"
    path.write_text(f"intents: [a]\n{section}")
    assert "a" in read_domain(path).intents


@pytest.mark.parametrize("bound", ["max_value: .inf", "min_value: -.inf"])
def test_an_infinite_float_slot_bound_is_named_as_such(tmp_path: Path, bound: str) -> None:
    # Before: "inf is a number, which a model cannot hold ...; quote it to keep it as text",
    # and quoted it was "must be a number". Every value of such a slot featurizes alike (in
    # Rasa too): the slot tells the policies nothing.
    path = tmp_path / "domain.yml"
    path.write_text(
        f"slots:\n  s:\n    type: float\n    {bound}\n    mappings:\n    - type: custom\n"
    )
    with pytest.raises(InvalidProjectFile, match="must be a finite number") as info:
        read_domain(path)
    assert info.value.line == 4
    assert "quote it" not in str(info.value)


def test_a_models_float_slot_with_an_infinite_bound_still_loads(tmp_path: Path) -> None:
    # Trained before the bound was refused (the domain's JSON holds Infinity): it serves.
    from server.models.loading import _read_domain

    domain = {"slots": {"s": {"type": "float", "max_value": math.inf, "mappings": []}}}
    (tmp_path / "domain.json").write_text(json.dumps(domain))
    assert _read_domain(tmp_path / "domain.json").slots[0].max_value == math.inf


def test_empty_sections_still_load(tmp_path: Path) -> None:
    path = tmp_path / "domain.yml"
    path.write_text("intents: [a]\nslots:\nresponses:\nforms:\nconfig:\n")
    assert "a" in read_domain(path).intents


@pytest.mark.parametrize("expiration", [math.inf, math.nan, 10**400])
def test_a_models_domain_with_a_session_expiration_no_json_holds_still_loads(
    tmp_path: Path, expiration: float
) -> None:
    # Trained before training refused it: the model keeps serving, its sessions never
    # expiring (as with the infinity), and GET /domain shows 0 (before: a 500).
    from server.models.loading import _read_domain

    domain: dict[str, Any] = {"session_config": {"session_expiration_time": expiration}}
    (tmp_path / "domain.json").write_text(json.dumps(domain))  # NaN / Infinity, as Python wrote
    built = _read_domain(tmp_path / "domain.json")
    assert not built.session_config.are_sessions_enabled()
    shown = json.dumps(built.as_dict()["session_config"], allow_nan=False)
    assert json.loads(shown)["session_expiration_time"] == 0


def test_a_models_domain_with_a_form_named_like_a_default_action_still_loads() -> None:
    # Trained before training refused it: the model keeps serving.
    domain: dict[str, Any] = {"forms": {"action_restart": {"required_slots": []}}}
    reader = DomainReader(warnings=[], from_archive=True)
    assert "action_restart" in reader.build(domain, "domain.json").forms
    with pytest.raises(InvalidProjectFile, match="form 'action_restart' is named like"):
        DomainReader(warnings=[]).build(domain, "domain.yml")


def test_a_models_form_with_a_key_forms_do_not_have_still_loads() -> None:
    # Trained before training refused it: the model keeps serving, the form as it was.
    forms = {"f": {"required_slot": ["s"]}, "g": {"ignored_intents": "x"}}
    domain: dict[str, Any] = {"forms": forms}
    reader = DomainReader(warnings=[], from_archive=True)
    reader.check(domain, "domain.json")
    assert reader.build(domain, "domain.json").forms["f"].required_slots == []
    with pytest.raises(InvalidProjectFile, match="unknown key 'required_slot' in form 'f'"):
        DomainReader(warnings=[]).check(domain, "domain.yml")


def test_a_models_response_condition_naming_no_slot_still_loads() -> None:
    # Trained before training refused it: the model keeps serving, the condition unmet.
    domain: dict[str, Any] = {
        "responses": {"utter_a": [{"text": "a", "condition": [{"name": ["s"], "value": 1}]}]}
    }
    reader = DomainReader(warnings=[], from_archive=True)
    assert "utter_a" in reader.build(domain, "domain.json").responses
    with pytest.raises(InvalidProjectFile, match="must be the name of a slot"):
        DomainReader(warnings=[]).check(domain, "domain.yml")


def test_domain_semantic_error_points_at_the_slot(tmp_path: Path) -> None:
    path = tmp_path / "domain.yml"
    path.write_text(
        "version: '3.1'\nslots:\n  s:\n    type: categorical\n    values: large\n    mappings: []\n"
    )
    with pytest.raises(InvalidProjectFile) as info:
        read_domain(path)
    assert (info.value.filename, info.value.line) == (str(path), 5)
    assert info.value.reason == "'values' of categorical slot 's' must be a list"


MAPPING = "type: text\n    mappings:\n    - "
FLOAT = "type: float\n    mappings: []\n    "


@pytest.mark.parametrize(
    ("slot", "line", "fragment"),
    [
        # Before: a TypeError traceback ('int' object is not iterable).
        (MAPPING + "{type: from_text, intent: 3}", 6, "'intent' of a mapping of slot 's' must"),
        (MAPPING + "{type: from_text, not_intent: [greet, [x]]}", 6, "'not_intent' of a mapping"),
        # Before: a role 3 that no extracted entity ever matched.
        (MAPPING + "{type: from_entity, entity: e, role: 3}", 6, "'role' of a mapping of slot"),
        # Before: it loaded, and the slot featurized backwards (higher values as lower ones).
        (
            FLOAT + "min_value: 5\n    max_value: 1",
            6,
            "'min_value' of slot 's' (5) is not below its",
        ),
        (
            FLOAT + "min_value: 2",
            6,
            "'min_value' of slot 's' (2) is not below its 'max_value' (1.0)",
        ),
        # Before: it loaded, though Rasa refuses an empty range (every value featurized alike).
        (FLOAT + "min_value: 1", 6, "'min_value' of slot 's' (1) is not below its 'max_value'"),
        (FLOAT + "min_value: true", 6, "'min_value' of slot 's' must be a number"),
        (FLOAT + "max_value: .nan", 6, "'max_value' of slot 's' must be a number"),
        # Before: it trained, and the slot counted as 0.0 on every turn.
        (FLOAT + "initial_value: x", 6, "'initial_value' of float slot 's' must be a number"),
        # Keys Rasa's slot classes do not take (a TypeError in Rasa 3.6); before, ignored,
        # so the misspelt slot still influenced the conversation.
        (
            "type: text\n    influence_conversaton: false\n    mappings: []",
            5,
            "unknown key 'influence_conversaton' in slot 's'; a slot has type, initial_value, "
            "influence_conversation, mappings (values for a categorical slot, min_value and "
            "max_value for a float one)",
        ),
        (
            "type: text\n    values: [a, b]\n    mappings: []",
            5,
            "'values' is a key of categorical slots, and slot 's' is of type text",
        ),
        (
            "type: bool\n    max_value: 5\n    mappings: []",
            5,
            "'max_value' is a key of float slots, and slot 's' is of type bool",
        ),
    ],
)
def test_a_slot_key_of_the_wrong_type_or_range_names_file_and_line(
    tmp_path: Path, slot: str, line: int, fragment: str
) -> None:
    path = tmp_path / "domain.yml"
    path.write_text(f"version: '3.1'\nslots:\n  s:\n    {slot}\n")
    with pytest.raises(InvalidProjectFile) as info:
        read_domain(path)
    assert (info.value.filename, info.value.line) == (str(path), line), str(info.value)
    assert fragment in str(info.value)


def test_form_requiring_an_undefined_slot_loads_as_in_rasa(tmp_path: Path) -> None:
    path = tmp_path / "domain.yml"
    path.write_text("version: '3.1'\nforms:\n  f:\n    required_slots:\n    - nowhere\n")
    assert read_domain(path).forms["f"].required_slots == ["nowhere"]


def test_empty_config_sections_take_rasa_defaults(tmp_path: Path) -> None:
    config = read_config(BOTS / "initial-project-3.6.21" / "config.yml")
    assert config.assistant_id == "placeholder_default"
    assert config.defaulted == ["pipeline", "policies"]
    assert [c["name"] for c in config.policies] == [
        "MemoizationPolicy",
        "RulePolicy",
        "UnexpecTEDIntentPolicy",
        "TEDPolicy",
    ]
    assert config.pipeline[0] == {"name": "WhitespaceTokenizer"}
    assert read_config(None).language == "en"

    own = read_config(BOTS / "formbot" / "config.yml")
    assert own.defaulted == [] and own.policies[-1]["name"] == "RulePolicy"


def test_config_substitutes_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yml"
    path.write_text("language: en\nassistant_id: ${BOT_ID}\npipeline:\npolicies:\n")
    monkeypatch.setenv("BOT_ID", "my-bot")
    assert read_config(path).assistant_id == "my-bot"
    monkeypatch.delenv("BOT_ID")
    with pytest.raises(Exception, match="BOT_ID"):
        read_config(path)


def test_broken_config_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("language: en\npipeline:\n  - name: WhitespaceTokenizer\n  - epochs: 3\n")
    with pytest.raises(InvalidProjectFile) as info:
        read_config(path)
    assert (info.value.filename, info.value.line) == (str(path), 4)


def test_policies_given_as_a_mapping_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("language: en\npolicies:\n  name: RulePolicy\n")
    with pytest.raises(InvalidProjectFile) as info:
        read_config(path)
    # Before: "... must be a list of policys, ..."
    assert str(info.value) == (
        f"{path}:2: 'policies' must be a list of policies, each with a 'name'"
    )


BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_a_yaml_bomb_is_refused_at_once_with_a_short_message(tmp_path: Path) -> None:
    """Nine anchors of nine aliases each: 387 million values in a 1 KB domain. Before,
    `POST /model/train` with such a slot default ran for minutes, and an error quoting a
    value built a 312 MB message."""
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n'
        + BILLION_LAUGHS
        + "intents: [greet]\nslots:\n  s:\n    type: any\n    initial_value: *i\n"
        "    mappings: [{type: custom}]\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidProjectFile, match="holds more than 1,000,000 values") as raised:
        read_domain(domain)
    assert len(str(raised.value)) < 300


def test_a_document_of_too_many_values_without_aliases_is_not_said_to_use_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit counts every value, an anchor's at each alias: a flow list of a million
    values (2 MB, no alias) was said to expand "through YAML aliases (an anchor referenced
    many times over)", which it has none of (found by review). The limit is lowered to 1,000
    here (a million values took 11 s to parse); the yaml-bomb test above meets the real one."""
    monkeypatch.setattr(yaml_io, "MAX_EXPANDED_VALUES", 1_000)
    with pytest.raises(InvalidProjectFile) as raised:
        parse_yaml("[" + "a, " * 1_001 + "a]")
    assert raised.value.reason == (
        "the document holds more than 1,000 values (those of an anchor counted at each alias to it)"
    )
    assert parse_yaml("[" + "a, " * 998 + "a]") == ["a"] * 999  # (the list is a value too)


def test_too_many_values_name_the_line_of_the_list_that_holds_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: the file only. The line is that of the first list or mapping past the limit
    (for a bomb, the anchor whose aliases add up past it)."""
    monkeypatch.setattr(yaml_io, "MAX_EXPANDED_VALUES", 1_000)
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nintents:\n- greet\nslots:\n  s:\n    type: any\n'
        "    initial_value: [" + "a, " * 1_001 + "a]\n    mappings: [{type: custom}]\n"
    )
    with pytest.raises(InvalidProjectFile) as raised:
        read_domain(domain)
    assert (raised.value.filename, raised.value.line) == (str(domain), 7)
    bomb = "a: &a [" + ", ".join(["x"] * 10) + "]\nb: &b [" + ", ".join(["*a"] * 10) + "]\n"
    bomb += "c: &c [" + ", ".join(["*b"] * 10) + "]\nd: [*c, *c]\n"
    with pytest.raises(InvalidProjectFile, match="more than 1,000 values") as raised:
        parse_yaml(bomb, "f.yml")
    assert raised.value.line == 3  # c: 10 times b's 111 values


def _project_of(root: Path) -> Path:
    (root / "data").mkdir()
    (root / "config.yml").write_text("recipe: default.v1\nlanguage: en\n")
    (root / "domain.yml").write_text('version: "3.1"\nintents:\n- greet\n')
    (root / "data" / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'
    )
    return root


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("domain.yml", "# the bot's domain\n\nintents greet\n", 3),
        ("config.yml", "---\n42\n", 2),
        ("data/nlu.yml", "\n\n'nlu'\n", 3),
        ("endpoints.yml", "\n  http://localhost:5055/webhook\n", 2),
    ],
)
def test_a_file_of_a_single_value_names_its_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    """Before: "a domain file must be a mapping ..." naming the file alone (a data file's
    and a config's too; an endpoints file's also said nothing of where)."""
    from server.config import read_endpoints

    project = _project_of(tmp_path)
    path = project / name
    path.write_text(text)
    with pytest.raises(InvalidProjectFile) as raised:
        if name == "endpoints.yml":
            read_endpoints(path)
        else:
            load_project(project / "config.yml", project / "domain.yml", [project / "data"])
    assert (raised.value.filename, raised.value.line) == (str(path), line)
    assert "holds the single value" in raised.value.reason


def test_a_domain_folder_file_of_a_single_value_is_refused_and_an_empty_one_skipped(
    tmp_path: Path,
) -> None:
    """A file of a domain folder that is one value (a `key: value` line without its colon)
    was skipped without a word, and its intents or responses trained as absent; Rasa also
    skips most of them (see differences-from-rasa.md). Empty, comment-only and `---` files
    are still skipped."""
    project = _project_of(tmp_path)
    folder = project / "domain"
    folder.mkdir()
    (folder / "intents.yml").write_text('version: "3.1"\nintents:\n- greet\n')
    for name, text in [("empty", ""), ("comment", "# later\n"), ("start", "---\n")]:
        (folder / f"{name}.yml").write_text(text)
    assert "greet" in read_domain(folder).intents
    (folder / "responses.yml").write_text("# the bot's words\n\nresponses utter_greet\n")
    with pytest.raises(InvalidProjectFile) as raised:
        read_domain(folder)
    assert (raised.value.filename, raised.value.line) == (str(folder / "responses.yml"), 3)
    assert "holds the single value" in raised.value.reason


def test_a_form_whose_ignored_intents_are_not_names_is_refused_naming_its_line(
    tmp_path: Path,
) -> None:
    """Found by fuzzing: `ignored_intents: 5` was a TypeError traceback from training."""
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nintents: [greet]\nslots:\n  s:\n    type: any\n'
        "    mappings: [{type: custom}]\nforms:\n  f:\n    required_slots: [s]\n"
        "    ignored_intents: 5\n"
    )
    with pytest.raises(InvalidProjectFile) as raised:
        read_domain(domain)
    assert (raised.value.filename, raised.value.line) == (str(domain), 10)
    assert raised.value.reason == (
        "'ignored_intents' of form 'f' must be an intent name or a list of them, not 5"
    )


def test_a_deeply_nested_file_is_refused_naming_its_file_and_line(tmp_path: Path) -> None:
    """Found by fuzzing: 1,000 nested lists in a domain were a RecursionError traceback."""
    domain = tmp_path / "domain.yml"
    domain.write_text('version: "3.1"\nintents:\n- ' + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(InvalidProjectFile) as raised:
        read_domain(domain)
    assert (raised.value.filename, raised.value.line) == (str(domain), 3)
    assert raised.value.reason == "the document nests more than 100 levels deep"


def test_an_error_quotes_a_large_value_in_brief(tmp_path: Path) -> None:
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nintents:\n- [' + ", ".join(["x" * 50] * 1000) + "]\n", encoding="utf-8"
    )
    with pytest.raises(InvalidProjectFile, match="must be a name") as raised:
        read_domain(domain)
    assert len(str(raised.value)) < 600


DUPLICATED = [
    ("credentials.yml", "rest:\nsocketio:\n  namespace: chat\nrest:\n", 4, 1),
    ("endpoints.yml", "tracker_store:\n  type: sql\n  db: a\n  db: b\n", 4, 3),
    ("domain.yml", 'version: "3.1"\nintents: [greet]\nresponses: {}\nintents: [bye]\n', 4, 2),
    ("config.yml", "language: en\npipeline:\n- name: WhitespaceTokenizer\nlanguage: de\n", 4, 1),
    ("data/nlu.yml", "nlu:\n- intent: greet\n  examples: '- hi'\n  examples: '- ho'\n", 4, 3),
    ("data/nlu.yml", "nlu:\n- intent: greet\n  examples: '- hi'\nnlu:\n- intent: bye\n", 4, 1),
]


@pytest.mark.parametrize(("name", "text", "line", "first"), DUPLICATED)
def test_a_key_given_twice_is_an_error_naming_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, first: int
) -> None:
    from server.config import read_credentials, read_endpoints

    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    readers: dict[str, Callable[[Path], object]] = {
        "credentials.yml": read_credentials,
        "endpoints.yml": read_endpoints,
        "domain.yml": read_domain,
        "config.yml": read_config,
        "nlu.yml": read_nlu_file,
    }
    # Before: the last value silently replaced the first (a whole credentials.yml section,
    # an intent's examples), or a second `nlu:` section was read as well.
    with pytest.raises(InvalidProjectFile, match="given twice") as raised:
        readers[path.name](path)
    assert (raised.value.filename, raised.value.line) == (str(path), line)
    assert f"first on line {first}" in str(raised.value)


def test_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "base: &base {type: sql, db: a}\ntracker_store:\n  <<: *base\n  db: b\n", encoding="utf-8"
    )
    assert read_yaml_file(path)["tracker_store"] == {"type": "sql", "db": "b"}


def test_an_nlu_file_of_a_newer_format_names_file_and_line(tmp_path: Path) -> None:
    # Before: it trained; Rasa skips the file with a warning (no NLU examples at all).
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    (tmp_path / "nlu.yml").write_text(
        'version: "4.0"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'
    )
    with pytest.raises(InvalidProjectFile) as info:
        load_project(None, tmp_path / "domain.yml", [tmp_path / "nlu.yml"])
    assert (info.value.filename, info.value.line) == (str(tmp_path / "nlu.yml"), 1)
    assert "'version' '4.0' is not a format" in str(info.value)


def test_a_retrieval_intent_without_its_responses_names_the_domain(tmp_path: Path) -> None:
    # Before: it trained; 'utter_faq' then ran as a custom action that failed (no action
    # server), or, with some of the responses, the bot said nothing for the others.
    (tmp_path / "domain.yml").write_text(
        'version: "3.1"\nintents: [faq]\nresponses:\n  utter_faq/ask_name: [{text: Sara}]\n'
    )
    (tmp_path / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: faq/ask_name\n  examples: |\n    - your name?\n'
        "- intent: faq/ask_age\n  examples: |\n    - how old are you?\n"
    )
    with pytest.raises(InvalidProjectFile) as info:
        load_project(None, tmp_path / "domain.yml", [tmp_path / "nlu.yml"])
    assert info.value.filename == str(tmp_path / "domain.yml")
    assert "retrieval intent 'faq/ask_age' has no response 'utter_faq/ask_age'" in str(info.value)


def test_retrieval_responses_in_the_domain_reach_the_response_selector(tmp_path: Path) -> None:
    """Before, with `utter_faq/ask_name` in domain.yml (not in an NLU file), the parse said
    `"responses": null` for it; Rasa syncs domain responses into the NLU data."""
    from server.nlu.pipeline import NLUPipeline

    (tmp_path / "domain.yml").write_text(
        'version: "3.1"\nintents: [faq]\nresponses:\n  utter_faq/ask_name: [{text: Sara}]\n'
    )
    (tmp_path / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: faq/ask_name\n  examples: |\n    - your name?\n'
        "    - who are you\n"
    )
    project = load_project(None, tmp_path / "domain.yml", [tmp_path / "nlu.yml"])
    pipeline = NLUPipeline.train(project.nlu, [{"name": "ResponseSelector"}])
    selected = pipeline.parse("your name?")["response_selector"]["default"]["response"]
    assert selected["responses"] == [{"text": "Sara"}]


def _domain_directory(tmp_path: Path, a: str, b: str) -> Path:
    """`tmp_path/domain`, holding the domain files `a.yml` and `b.yml`."""
    folder = tmp_path / "domain"
    folder.mkdir()
    (folder / "a.yml").write_text(a)
    (folder / "b.yml").write_text(b)
    return folder


def test_training_shows_the_domains_warnings_with_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: a domain directory's duplicates and a slot without mappings were logged at debug
    # level only, so `botserver train` trained without a word (Rasa warns at training time).
    _domain_directory(
        tmp_path,
        'version: "3.1"\nintents: [greet]\nresponses:\n  utter_hi: [{text: hi}]\n',
        'version: "3.1"\nintents:\n- greet\nslots:\n  mood: {type: text}\n',
    )
    (tmp_path / "rules.yml").write_text(
        'version: "3.1"\nrules:\n- rule: hi\n  steps: [{intent: greet}, {action: utter_hi}]\n'
    )
    with caplog.at_level(logging.WARNING, logger="server.training"):
        result = train(None, tmp_path / "domain", [tmp_path / "rules.yml"], tmp_path / "models")
    duplicate = f"{tmp_path / 'domain' / 'b.yml'}:3: intent 'greet' is defined more than once"
    no_mappings = f"{tmp_path / 'domain' / 'b.yml'}:5: slot 'mood' has no 'mappings'"
    for expected in (duplicate, no_mappings):
        assert any(w.startswith(expected) for w in result.warnings), result.warnings
        logged = [r for r in caplog.records if r.getMessage().startswith(expected)]
        assert [r.levelno for r in logged] == [logging.WARNING]  # once


def test_a_slot_without_mappings_is_a_warning_saying_rasa_refuses_it(tmp_path: Path) -> None:
    """Rasa 3.6's domain schema requires `mappings` on every slot and refuses the file;
    botserver reads the slot as `mappings: []` (only actions set it, as Rasa 3 would with
    `- type: custom`) and says so with the file and line, and that Rasa refuses it: a Rasa 2
    domain's slot, once filled from its entity of the same name, is filled by no message now.
    Before, the warning did not say Rasa refuses the file."""
    domain_file = tmp_path / "domain.yml"
    domain_file.write_text(
        'version: "3.1"\nintents: [inform]\nentities: [city]\nslots:\n  city:\n    type: text\n'
    )
    warnings: list[str] = []
    domain = read_domain(domain_file, warnings=warnings)
    assert warnings == [
        f"{domain_file}:5: slot 'city' has no 'mappings', which Rasa 3 requires (Rasa refuses "
        "this domain); botserver reads it as `mappings: []`: only actions set it, no message "
        "(`botserver data migrate` turns a Rasa 2 domain's auto_fill and form mappings into "
        "slot mappings)"
    ]
    tracker = Tracker("u", domain.slot_defaults())
    berlin = {"entity": "city", "value": "Berlin", "start": 0, "end": 6}
    tracker.update(UserUttered("Berlin", {"intent": {"name": "inform"}, "entities": [berlin]}))
    assert extract_slots(tracker, domain) == []


def test_a_domain_directory_file_with_nlu_and_responses_is_part_of_the_domain(
    tmp_path: Path,
) -> None:
    # Before: skipped, because it also held `nlu:`; the bot had no 'utter_bye' to say.
    (tmp_path / "domain.yml").write_text("version: '3.1'\nintents: [greet, bye]\n")
    (tmp_path / "bye.yml").write_text(
        "version: '3.1'\nnlu:\n- intent: bye\n  examples: |\n    - ciao\n"
        "responses:\n  utter_bye:\n  - text: Bye!\n"
    )
    warnings: list[str] = []
    domain = read_domain(tmp_path, warnings=warnings)
    assert domain.responses["utter_bye"] == [{"text": "Bye!"}]
    assert warnings == []


TINY_BOT = {
    "config.yml": "pipeline:\n- name: KeywordIntentClassifier\npolicies:\n- name: RulePolicy\n",
    "domain.yml": "version: '3.1'\nintents: [greet]\nresponses:\n  utter_greet: [{text: Hi}]\n",
    "data/rules.yml": "version: '3.1'\nrules:\n- rule: r\n  steps: [{intent: greet}, "
    "{action: utter_greet}]\n",
}


def test_editing_only_the_domain_trains_a_new_model(tmp_path: Path) -> None:
    # Before: the fingerprint covered the data files, not the domain; `botserver train`
    # said "Nothing changed since the last training" and the old response stayed.
    for name, text in TINY_BOT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    args = (tmp_path / "config.yml", tmp_path / "domain.yml", [tmp_path / "data"])
    assert not train(*args, tmp_path / "models").skipped
    assert train(*args, tmp_path / "models").skipped
    (tmp_path / "domain.yml").write_text(TINY_BOT["domain.yml"].replace("Hi", "Hello"))
    assert not train(*args, tmp_path / "models").skipped


def test_editing_a_lookup_file_that_json_nlu_data_names_trains_a_new_model(
    tmp_path: Path,
) -> None:
    """Rasa's JSON lookup table may name a file of one element a line, which trains; before,
    an edit of that file was "Nothing changed since the last training" (`train` and `train
    nlu`), and the model kept the old elements."""
    for name, text in TINY_BOT.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "data" / "cities.txt").write_text("Paris\n")
    table = {"name": "city", "elements": "cities.txt"}
    example = {"text": "hi", "intent": "greet"}
    nlu = {"rasa_nlu_data": {"common_examples": [example], "lookup_tables": [table]}}
    (tmp_path / "data" / "nlu.json").write_text(json.dumps(nlu))
    args = (tmp_path / "config.yml", tmp_path / "domain.yml", [tmp_path / "data"])
    nlu_args = (tmp_path / "config.yml", [tmp_path / "data"], tmp_path / "nlu_models")
    assert not train(*args, tmp_path / "models").skipped
    assert not train_nlu(*nlu_args).skipped
    assert train(*args, tmp_path / "models").skipped
    assert train_nlu(*nlu_args).skipped
    (tmp_path / "data" / "cities.txt").write_text("Paris\nRome\n")
    assert not train(*args, tmp_path / "models").skipped
    assert not train_nlu(*nlu_args).skipped


@pytest.mark.parametrize(
    ("name", "reader"),
    [
        ("domain.yml", read_domain),
        ("nlu.yml", read_nlu_file),
        ("stories.yml", read_yaml_file),
        ("config.yml", read_config),
        ("nlu.json", read_nlu_json),
    ],
)
def test_a_file_that_is_not_utf8_names_the_line_of_the_first_bad_byte(
    tmp_path: Path, name: str, reader: Callable[[Path], object]
) -> None:
    # Before: "cannot read file: 'utf-8' codec can't decode byte 0xe9 in position 59: invalid
    # continuation byte", with no line (a file saved as Latin-1 from an old editor).
    path = tmp_path / name
    path.write_bytes(b'version: "3.1"\n# comment\n# caf\xe9\n')
    with pytest.raises(InvalidProjectFile) as error:
        reader(path)
    assert (error.value.filename, error.value.line) == (str(path), 3)
    assert "not UTF-8 text (byte 0xe9" in error.value.reason


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b"])
def test_a_control_character_names_its_line(tmp_path: Path, character: str) -> None:
    # Before: "invalid YAML: unacceptable character #x0007: control characters are not
    # allowed" and no line (a NUL or a bell pasted into an example).
    path = tmp_path / "nlu.yml"
    path.write_text(f'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi{character}\n')
    with pytest.raises(InvalidProjectFile) as error:
        read_nlu_file(path)
    assert (error.value.filename, error.value.line) == (str(path), 5)
    assert f"unacceptable character #x{ord(character):04x}" in error.value.reason


def test_a_quoted_variable_in_endpoints_is_said_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from server.config import read_endpoints

    # As Rasa, only unquoted values are substituted: a quoted one stays as written. Before,
    # nothing said so, and the store failed later on a host or password named `${...}`.
    monkeypatch.setenv("DB_PASSWORD", "s3cret")
    path = tmp_path / "endpoints.yml"
    path.write_text(
        "tracker_store:\n"
        "  type: sql\n"
        "  password: ${DB_PASSWORD}\n"
        '  username: "${DB_USER}"\n'
        "  db: 'pre_${DB_NAME}'\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        store = read_endpoints(path)["tracker_store"]
    assert store["password"] == "s3cret"
    assert (store["username"], store["db"]) == ("${DB_USER}", "pre_${DB_NAME}")
    said = [r.getMessage() for r in caplog.records if "not substituted" in r.getMessage()]
    assert [m.split(": ")[0] for m in said] == [f"{path}:4", f"{path}:5"]


def test_a_slot_mapping_naming_an_entity_or_intent_the_domain_lacks_is_a_warning(
    tmp_path: Path,
) -> None:
    # Before: trained without a word, so a typo (`entity: citty`) left the slot empty for
    # good; Rasa warns of such a mapping at every message and skips it.
    _domain_directory(
        tmp_path,
        'version: "3.1"\nintents: [inform]\nentities: [city]\n',
        'version: "3.1"\nslots:\n  dest:\n    type: text\n    mappings:\n'
        "    - {type: from_entity, entity: citty}\n"
        "    - {type: from_entity, entity: city}\n"
        "    - {type: from_intent, intent: [inform, infrom], value: x}\n",
    )
    warnings: list[str] = []
    read_domain(tmp_path / "domain", warnings=warnings)
    where = f"{tmp_path / 'domain' / 'b.yml'}:3:"
    assert warnings == [
        f"{where} slot 'dest' has a from_entity mapping for the entity 'citty', which the "
        "domain does not list (Rasa skips this mapping)",
        f"{where} slot 'dest' has a from_intent mapping for the intent 'infrom', which the "
        "domain does not list (Rasa skips this mapping)",
    ]


@pytest.mark.parametrize("kind", ["from_intent", "from_trigger_intent"])
@pytest.mark.parametrize("value", ["", "\n      value: null"])
def test_an_intent_mapping_without_a_value_names_the_file_and_line(
    tmp_path: Path, kind: str, value: str
) -> None:
    # Before: trained without a word, and the slot was never set (set back to null when the
    # intent came while it held a value). Rasa's domain refuses such a mapping ("You need to
    # specify a value for the key 'value'").
    path = tmp_path / "domain.yml"
    path.write_text(
        'version: "3.1"\nintents: [affirm]\nslots:\n  ok:\n    type: bool\n    mappings:\n'
        f"    - type: {kind}\n      intent: affirm{value}\n"
    )
    with pytest.raises(InvalidProjectFile) as raised:
        read_domain(path)
    assert (raised.value.filename, raised.value.line) == (str(path), 7)
    assert raised.value.reason == (
        f"a {kind} mapping of slot 'ok' needs a 'value': the value the slot takes when the "
        "intent comes"
    )


def test_a_trained_intent_mapping_without_a_value_still_loads() -> None:
    # A model trained before the check above: its domain loads as it was trained.
    mapping = {"type": "from_intent", "intent": "affirm"}
    data = {"intents": ["affirm"], "slots": {"ok": {"type": "bool", "mappings": [mapping]}}}
    reader = DomainReader(warnings=[], from_archive=True)
    reader.check(data, "domain.json")
    domain = reader.build(data, "domain.json")
    assert domain.slots_by_name["ok"].mappings[0].value is None


def domain_warnings(folder: Path, text: str) -> tuple[Path, list[str]]:
    """The warnings of reading `text` as `folder`/domain.yml, and that file's path."""
    path = folder / "domain.yml"
    path.write_text(text)
    warnings: list[str] = []
    read_domain(path, warnings=warnings)
    return path, warnings


def test_null_among_a_categorical_slots_values_is_a_warning(tmp_path: Path) -> None:
    # Before: dropped without a word, so a slot set to the text "null" featurized as
    # `__other__`; Rasa warns that `null` is the unset slot's value and is ignored.
    path = tmp_path / "domain.yml"
    path.write_text(
        'version: "3.1"\nslots:\n  answer:\n    type: categorical\n'
        "    values: [yes, null]\n    mappings: [{type: custom}]\n"
    )
    warnings: list[str] = []
    domain = read_domain(path, warnings=warnings)
    assert domain.slots_by_name["answer"].values == ["yes"]
    assert warnings == [
        f"{path}:5: categorical slot 'answer' lists null among its values: null is the value "
        'of an unset slot, so it is ignored (write "null", quoted, for the text)'
    ]


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        # Before: loaded without a word, and the slot featurized as its maximum from the
        # start; Rasa warns of it.
        (
            'version: "3.1"\nslots:\n  amount:\n    type: float\n    max_value: 10\n'
            "    initial_value: 50\n    mappings: [{type: custom}]\n",
            "6: the initial_value of float slot 'amount' (50) is outside its range "
            "(0.0 to 10); it featurizes as the nearest end",
        ),
        # Rasa warns when it looks the id up (with an NLG server) and sends no id; botserver
        # did the same without a word, so the NLG server got `id: null` and nobody knew why.
        (
            'version: "3.1"\nresponses:\n  utter_hi:\n  - text: Hi\n    id: hi\n'
            "  - text: Hello\n    id: hi\n  - text: Hey\n    id: hey\n  - text: Yo\n",
            "7: response 'utter_hi' gives the id 'hi' to more than one variation: an NLG "
            "server is sent no id (null) when they may both be said, as in Rasa",
        ),
    ],
)
def test_a_domain_mistake_that_still_loads_is_a_warning_with_its_line(
    tmp_path: Path, text: str, warning: str
) -> None:
    path, warnings = domain_warnings(tmp_path, text)
    assert warnings == [f"{path}:{warning}"]


@pytest.mark.parametrize(
    "variations",
    [
        # One for Slack, one for every other channel: never picked from together, so Rasa
        # sends each its id and never warns.
        "  - text: Hi\n    id: hi\n    channel: slack\n  - text: Hello\n    id: hi\n",
        # Conditions no slot value meets at once (one tier or the other).
        "  - text: Hi gold\n    id: hi\n    condition: [{type: slot, name: tier, value: gold}]\n"
        "  - text: Hi\n    id: hi\n    condition: [{type: slot, name: tier, value: Silver}]\n",
        # With a condition, and without: the met ones are picked from, else the others.
        "  - text: Hi gold\n    id: hi\n    condition: [{type: slot, name: tier, value: gold}]\n"
        "  - text: Hi\n    id: hi\n",
    ],
)
def test_an_id_of_variations_never_picked_from_together_is_no_warning(
    tmp_path: Path, variations: str
) -> None:
    # Before: "gives the id 'hi' to more than one variation: an NLG server is sent no id
    # (null)", which it never was.
    _, warnings = domain_warnings(
        tmp_path,
        'version: "3.1"\nslots:\n  tier:\n    type: text\n    mappings: [{type: custom}]\n'
        "responses:\n  utter_hi:\n" + variations,
    )
    assert warnings == []


def test_an_id_of_variations_with_conditions_met_at_once_is_a_warning(tmp_path: Path) -> None:
    path, warnings = domain_warnings(
        tmp_path,
        'version: "3.1"\nslots:\n  tier:\n    type: text\n    mappings: [{type: custom}]\n'
        "responses:\n  utter_hi:\n"
        "  - text: Hi gold\n    id: hi\n    condition: [{type: slot, name: tier, value: gold}]\n"
        "  - text: Hi\n    id: hi\n    condition: [{type: slot, name: tier, value: Gold}]\n",
    )
    assert warnings == [
        f"{path}:12: response 'utter_hi' gives the id 'hi' to more than one variation: an NLG "
        "server is sent no id (null) when they may both be said, as in Rasa"
    ]


def test_an_id_repeated_in_a_data_files_response_is_a_warning_with_its_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    responses = tmp_path / "responses.yml"
    responses.write_text(
        'version: "3.1"\nresponses:\n  utter_hi:\n  - text: Hi\n    id: hi\n'
        "  - text: Hello\n    id: hi\n"
    )
    project = load_project(None, tmp_path / "domain.yml", [responses])
    assert project.warnings == [
        f"{responses}:7: response 'utter_hi' gives the id 'hi' to more than one variation: an "
        "NLG server is sent no id (null) when they may both be said, as in Rasa"
    ]


def test_yes_no_on_off_and_times_are_text_as_rasa_reads_its_yaml(tmp_path: Path) -> None:
    """Rasa reads every file as YAML 1.2: `yes`, `no`, `on` and `off` are words and `10:30`
    is text. Read as YAML 1.1 (PyYAML's own), the categorical slot's values became 'true'
    and 'false', so the entity value 'yes' never matched them, the intent 'no' became the
    boolean False and the story's 'yes' a True no conversation ever set."""
    (tmp_path / "domain.yml").write_text(
        'version: "3.1"\n'
        "intents: [greet, no]\n"
        "entities: [answer]\n"
        "slots:\n"
        "  answer:\n"
        "    type: categorical\n"
        "    values: [yes, no, on, off]\n"
        "    mappings:\n"
        "    - type: from_entity\n"
        "      entity: answer\n"
        "  opening:\n"
        "    type: text\n"
        "    initial_value: 10:30\n"
        "    mappings: []\n"
        "responses:\n"
        "  utter_ok:\n"
        "  - text: fine\n"
        "    condition:\n"
        "    - type: slot\n"
        "      name: answer\n"
        "      value: yes\n"
        "  - text: hm\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'
        "- intent: no\n  examples: |\n    - [nope](answer:no)\n    - [no way](answer:off)\n"
    )
    (data / "stories.yml").write_text(
        'version: "3.1"\nstories:\n- story: s\n  steps:\n  - intent: greet\n'
        "  - slot_was_set:\n    - answer: yes\n  - action: utter_ok\n"
    )
    project = load_project(None, tmp_path / "domain.yml", [data])
    domain = project.domain
    slots = {slot.name: slot for slot in domain.slots}
    assert slots["answer"].values == ["yes", "no", "on", "off"]
    assert slots["opening"].initial_value == "10:30"
    assert "no" in domain.user_intents
    assert domain.responses["utter_ok"][0]["condition"][0]["value"] == "yes"
    story_events = [e for step in project.stories for e in step.events]
    assert {"answer": "yes"} in [
        {getattr(e, "key", None): getattr(e, "value", None)} for e in story_events
    ]


def test_a_value_yaml_cannot_build_names_its_file_and_line(tmp_path: Path) -> None:
    """`2023-02-30` is a YAML timestamp of a day that does not exist: PyYAML's ValueError
    escaped, a traceback from `botserver train`, the file not named."""
    domain = tmp_path / "domain.yml"
    domain.write_text('version: "3.1"\nresponses:\n  utter_when:\n  - text: 2023-02-30\n')
    nlu = tmp_path / "nlu.yml"
    nlu.write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  metadata:\n    since: 2023-13-01\n'
        "  examples: |\n    - hi\n"
    )
    with pytest.raises(InvalidProjectFile) as domain_error:
        read_domain(domain)
    with pytest.raises(InvalidProjectFile) as nlu_error:
        read_nlu_file(nlu)
    assert str(domain_error.value).startswith(
        f"{domain}:4: '2023-02-30' is not a valid timestamp (day is out of range for month)"
    )
    assert str(nlu_error.value).startswith(f"{nlu}:5: '2023-13-01' is not a valid timestamp")


@pytest.mark.parametrize("key", ["initial_value", "max_value"])
def test_a_float_slot_number_beyond_a_float_names_its_line(tmp_path: Path, key: str) -> None:
    """An integer of 400 digits is a YAML number no float holds: float() raised
    OverflowError, a traceback from `botserver train`, a 500 from `POST /model/train`."""
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nslots:\n  amount:\n    type: float\n'
        f"    {key}: 1{'0' * 400}\n    mappings:\n    - type: custom\n"
    )
    with pytest.raises(InvalidProjectFile) as error:
        read_domain(domain)
    assert str(error.value).startswith(f"{domain}:5: '{key}' of ")
    assert "must be a number" in str(error.value)


def test_integers_with_leading_zeros_read_as_rasa_reads_them(tmp_path: Path) -> None:
    """YAML 1.2, as Rasa reads it: `08` and `0777` are the decimal numbers 8 and 777, `0o17`
    is octal. Read with PyYAML's 1.1 integers, `0777` was 511, `010` 8, and `08` and `09`
    text, so a categorical slot's months `[07, 08, 09, 10]` held 7, '08', '09' and 10."""
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nslots:\n  month:\n    type: categorical\n'
        "    values: [07, 08, 09, 010, 0777, 0o17, -012, 0x1F, 0b11]\n"
        "    mappings:\n    - type: custom\n"
    )
    read = read_yaml_file(domain)
    assert read["slots"]["month"]["values"] == [7, 8, 9, 10, 777, 15, -12, 31, 3]


def test_an_utter_action_without_a_response_is_a_warning_as_in_rasa(tmp_path: Path) -> None:
    """Rasa warns at training that such an action says nothing unless an NLG server writes
    it. Before, training and validation said nothing; the bot then stayed silent there."""
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nintents: [greet]\nactions: [utter_hello, utter_faq]\n'
        "responses:\n  utter_faq/ask_age: [{text: old enough}]\n"
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(
        'version: "3.1"\nrules:\n- rule: hi\n  steps: [{intent: greet}, {action: utter_hello}]\n'
    )
    expected = (
        f"{domain}:3: action 'utter_hello' is listed in the domain but has no response of "
        "that name: it says nothing unless an NLG server writes it"
    )
    report = validate_project(None, domain, [rules])
    assert [w for w in report.warnings if "has no response" in w] == [expected]
    result = train(None, domain, [rules], tmp_path / "models")
    assert [w for w in result.warnings if "has no response" in w] == [expected]


def test_validate_names_the_domain_file_and_line_of_a_domain_warning(tmp_path: Path) -> None:
    """As the loader's errors do. Before, `response 'utter_unused' is not used...` with no
    file: in a domain directory of many files, the user had to search for it."""
    files = {
        "domain/intents.yml": "intents:\n- greet\n- unheard\n",
        "domain/forms.yml": "forms:\n  order_form:\n    required_slots:\n    - nowhere\n",
        "domain/responses.yml": "responses:\n  utter_greet:\n  - text: hi\n"
        "  utter_unused:\n  - text: never said\n",
        "data/nlu.yml": "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n",
        "data/responses.yml": "responses:\n  utter_also_unused:\n  - text: nor this\n",
        "data/stories.yml": "stories:\n- story: s\n  steps:\n  - intent: greet\n"
        "  - action: utter_greet\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("version: '3.1'\n" + text)
    out = io.StringIO()
    args = argparse.Namespace(
        domain=str(tmp_path / "domain"), data=[str(tmp_path / "data")], config=None
    )
    assert run_validate(args, out) == 1
    domain, data = tmp_path / "domain", tmp_path / "data"
    expected = [
        f"warning: {domain / 'intents.yml'}:4: intent 'unheard' is in the domain but has no "
        "examples in the NLU data",
        f"warning: {domain / 'responses.yml'}:5: response 'utter_unused' is not used in any "
        "story or rule",
        f"warning: {data / 'responses.yml'}:3: response 'utter_also_unused' is not used in "
        "any story or rule",
        f"error: {domain / 'forms.yml'}:3: form 'order_form' requires slot 'nowhere', which "
        "is not in the domain",
    ]
    printed = out.getvalue().splitlines()
    assert [line for line in expected if line not in printed] == [], printed


def test_a_mapping_conditioned_on_a_form_it_is_not_part_of_fails_validation(
    tmp_path: Path,
) -> None:
    # Before: validated without a word, and the mapping never filled (a typo in the form's
    # name) or filled a slot the form never asks for. Rasa's validator warns in these words,
    # and the validation fails ("Project validation completed with errors").
    domain = tmp_path / "domain.yml"
    domain.write_text(
        'version: "3.1"\nintents: [greet, vip]\nentities: [city]\nslots:\n'
        "  city:\n    type: text\n    mappings:\n    - type: from_entity\n"
        "      entity: city\n      conditions: [{active_loop: trip_fom}]\n"
        "  note:\n    type: text\n    mappings:\n    - type: from_text\n"
        "      conditions: [{active_loop: trip_form}]\n"
        "  vip:\n    type: bool\n    mappings:\n    - type: from_trigger_intent\n"
        "      intent: vip\n      value: true\n      conditions: [{active_loop: trip_form}]\n"
        "forms:\n  trip_form:\n    required_slots: [city]\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n'
        "- intent: vip\n  examples: |\n    - vip\n"
    )
    report = validate_project(None, domain, [data])
    expected = [
        f"{domain}:5: Slot 'city' has a mapping condition for form 'trip_fom' which is not "
        "listed in domain forms. Please add this form to the forms section or check for typos.",
        f"{domain}:11: Slot 'note' has a mapping condition for form 'trip_form', but it's not "
        "present in 'trip_form' form's 'required_slots'. The slot needs to be added to this key.",
    ]
    assert report.failing_warnings == expected
    assert [w for w in expected if w not in report.warnings] == []


def test_mappings_of_a_built_in_slot_are_a_warning(tmp_path: Path) -> None:
    # Rasa's slot extraction leaves these slots out, and so does ours: the mappings do
    # nothing, which the project's author should hear of.
    path, warnings = domain_warnings(
        tmp_path,
        'version: "3.1"\nentities: [city]\nslots:\n  requested_slot:\n    type: any\n'
        "    mappings: [{type: from_entity, entity: city}]\n"
        "  knowledge_base_listed_objects:\n    type: any\n    mappings: []\n",
    )
    assert warnings == [
        f"{path}:4: slot 'requested_slot' is one the server sets itself: no message fills it, "
        "so its mappings are ignored"
    ]


def test_a_built_in_slot_declared_as_set_by_actions_is_no_warning(tmp_path: Path) -> None:
    # Rasa 3's domains want 'mappings' on every slot, and a bare `type: custom` is how one
    # says "set by actions": the way to give requested_slot a categorical type that
    # influences the conversation, or to declare the knowledge base slots. A custom mapping
    # naming an action would run it, and still does not for these slots.
    path, warnings = domain_warnings(
        tmp_path,
        'version: "3.1"\nslots:\n  requested_slot:\n    type: categorical\n'
        "    values: [cuisine, seats]\n    influence_conversation: true\n"
        "    mappings:\n    - type: custom\n"
        "  knowledge_base_last_object:\n    type: any\n    mappings: [{type: custom}]\n"
        "  knowledge_base_listed_objects:\n"
        "    type: any\n    mappings: [{type: custom, action: action_list}]\n",
    )
    assert warnings == [
        f"{path}:12: slot 'knowledge_base_listed_objects' is one the server sets itself: no "
        "message fills it, so its mappings are ignored"
    ]


def test_a_repeat_across_the_files_of_a_domain_directory_is_a_warning(tmp_path: Path) -> None:
    """Rasa merges the files and warns ("The following duplicated entities have been found
    across multiple domain files"); in one file, each of these is an error."""
    (tmp_path / "a.yml").write_text("entities: [city]\nactions: [action_a]\n")
    (tmp_path / "b.yml").write_text("entities: [city]\nactions: [action_a]\n")
    warnings: list[str] = []
    domain = read_domain(tmp_path, warnings=warnings)
    assert domain.entities == ["city"]
    assert warnings == [
        f"{tmp_path / 'b.yml'}:1: entity 'city' is defined more than once",
        f"{tmp_path / 'b.yml'}:2: action 'action_a' is defined more than once",
    ]


def test_a_default_action_listed_twice_is_a_warning(tmp_path: Path) -> None:
    """Rasa drops the repeat of a default action without a word (it is no duplicate there)."""
    (tmp_path / "domain.yml").write_text("actions:\n- action_restart\n- action_restart\n")
    warnings: list[str] = []
    read_domain(tmp_path / "domain.yml", warnings=warnings)
    assert warnings == [
        f"{tmp_path / 'domain.yml'}:3: action 'action_restart' is defined more than once"
    ]


def test_a_data_files_response_with_a_date_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "domain.yml").write_text("intents: [greet]\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "responses.yml").write_text("responses:\n  utter_a:\n  - custom: {at: 2024-01-01}\n")
    with pytest.raises(InvalidProjectFile, match="read as a date") as info:
        load_project(None, tmp_path / "domain.yml", [data])
    assert (info.value.filename, info.value.line) == (str(data / "responses.yml"), 3)


def test_rasas_json_nlu_data_in_the_data_folder_trains(tmp_path: Path) -> None:
    """As `rasa train` reads it. Before, `data/nlu.json` was skipped without a word: its
    intents had no examples, and the model never predicted them."""
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet, travel]\n')
    data = tmp_path / "data" / "nlu"
    data.mkdir(parents=True)
    (data / "greet.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    example = {
        "text": "to Paris",
        "intent": "travel",
        "entities": [{"start": 3, "end": 8, "value": "Paris", "entity": "city"}],
    }
    (data / "travel.json").write_text(json.dumps({"rasa_nlu_data": {"common_examples": [example]}}))
    (data / "notes.json").write_text('{"not": "training data"}')  # ignored, as by Rasa
    # Nor is a request body kept beside the data read, though it names the format
    (data / "request.json").write_text('{"body": {"rasa_nlu_data": {"common_examples": []}}}')
    project = load_project(None, tmp_path / "domain.yml", [tmp_path / "data"])
    examples = {e.text: e for e in project.nlu.examples}
    assert sorted(examples) == ["hi", "to Paris"]
    assert [a.entity for a in examples["to Paris"].entities] == ["city"]
    assert data / "travel.json" in project.files  # an edit retrains


def test_a_broken_json_nlu_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    (tmp_path / "nlu.json").write_text('{"rasa_nlu_data": {\n  "common_examples": [,]}}')
    with pytest.raises(InvalidProjectFile) as info:
        load_project(None, tmp_path / "domain.yml", [tmp_path])
    assert (info.value.filename, info.value.line) == (str(tmp_path / "nlu.json"), 2)


def test_a_data_files_misspelt_section_is_a_warning_naming_file_and_line(tmp_path: Path) -> None:
    """Before: `rule:` for `rules:` skipped the file's rules without a word (Rasa's schema
    lets any top-level key through, and ignores it too)."""
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    data = tmp_path / "data"
    data.mkdir()
    (data / "rules.yml").write_text(
        'version: "3.1"\nrule:\n- rule: r\n  steps: [{intent: greet}, {action: utter_hi}]\n'
    )
    (data / "domain_part.yml").write_text("intents: [greet]\n")  # domain sections: no warning
    project = load_project(None, tmp_path / "domain.yml", [data])
    assert project.warnings == [
        f"{data / 'rules.yml'}:2: unknown section 'rule' is ignored (did you mean 'rules'?)"
    ]


def test_a_data_section_written_in_capitals_is_a_warning_naming_the_one_meant(
    tmp_path: Path,
) -> None:
    """Before: `NLU:` or `Stories:` skipped the file's examples or stories without a word (a
    misspelling in lower case was named; keys are read as written, in lower case)."""
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    data = tmp_path / "data"
    data.mkdir()
    (data / "nlu.yml").write_text("NLU:\n- intent: greet\n  examples: |\n    - hi\n")
    (data / "stories.yml").write_text("Story:\n- story: s\n  steps: [{intent: greet}]\n")
    project = load_project(None, tmp_path / "domain.yml", [data])
    assert sorted(project.warnings) == [
        f"{data / 'nlu.yml'}:1: unknown section 'NLU' is ignored (did you mean 'nlu'?)",
        f"{data / 'stories.yml'}:1: unknown section 'Story' is ignored (did you mean 'stories'?)",
    ]


def test_a_linked_folder_in_the_data_or_domain_folder_is_read_as_rasa_reads_it(
    tmp_path: Path,
) -> None:
    """Rasa follows links when it walks a folder; before, a linked folder (NLU shared by
    several bots) was skipped without a word. A link back up the tree is read once."""
    shared = tmp_path / "shared"
    (shared / "domain").mkdir(parents=True)
    (shared / "domain" / "bye.yml").write_text("intents: [bye]\n")
    (shared / "data").mkdir()
    (shared / "data" / "bye.yml").write_text("nlu:\n- intent: bye\n  examples: |\n    - ciao\n")
    bot = tmp_path / "bot"
    (bot / "domain").mkdir(parents=True)
    (bot / "domain" / "greet.yml").write_text("intents: [greet]\n")
    (bot / "domain" / "shared").symlink_to(shared / "domain")
    (bot / "data").mkdir()
    (bot / "data" / "greet.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    (bot / "data" / "shared").symlink_to(shared / "data")
    (bot / "data" / "loop").symlink_to(bot / "data")  # a cycle
    project = load_project(None, bot / "domain", [bot / "data"])
    assert sorted(e.text for e in project.nlu.examples) == ["ciao", "hi"]
    assert {"bye", "greet"} <= set(project.domain.intents)


def test_a_folder_linked_several_times_is_named_by_its_first_link_in_name_order(
    tmp_path: Path,
) -> None:
    """A folder reached through several links is read once, under the link that comes first
    by name. Before, under whichever link the file system listed first (on tmpfs the last
    made), so a warning or error named a different path from one machine to the next."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "rules.yml").write_text("rule:\n- rule: r\n  steps: []\n")
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    data = tmp_path / "data"
    data.mkdir()
    (data / "greet.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    for number in range(30):
        (data / f"link{number:02}").symlink_to(shared)
    project = load_project(None, tmp_path / "domain.yml", [data])
    assert project.warnings == [
        f"{data / 'link00' / 'rules.yml'}:1: unknown section 'rule' is ignored "
        "(did you mean 'rules'?)"
    ]
    assert yaml_io.folder_files(data) == [data / "greet.yml", data / "link00" / "rules.yml"]


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("luis.json", {"luis_schema_version": "2.2.0", "utterances": []}, "a LUIS export"),
        ("wit.json", {"utterances": []}, "a Wit export"),
        ("agent.json", {"supportedLanguages": ["en"]}, "a Dialogflow agent"),
        ("greet_usersays_en.json", [{"data": []}], "a Dialogflow agent"),
    ],
)
def test_another_tools_nlu_export_in_the_data_folder_is_a_warning(
    tmp_path: Path, name: str, content: object, what: str
) -> None:
    """Rasa trains from these; botserver does not read them. Before: skipped without a word,
    their intents trained with no examples."""
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / name).write_text(json.dumps(content))
    project = load_project(None, tmp_path / "domain.yml", [tmp_path / "data"])
    assert project.warnings == [
        f"{tmp_path / 'data' / name}: {what}, which botserver does not read, is skipped; "
        "convert it to Rasa's YAML (Rasa's `rasa data convert nlu -f yaml` reads it)"
    ]


def test_json_in_the_data_folder_nested_too_deep_is_refused_or_skipped(tmp_path: Path) -> None:
    """The YAML files' depth limit holds for JSON: 5,000 nested lists (10 KB) in a JSON NLU
    file are an error naming it, in another `.json` file (no training data) nothing. Before,
    both were a RecursionError and its traceback, where another `.json` file was skipped
    before botserver read JSON NLU files."""
    (tmp_path / "domain.yml").write_text('version: "3.1"\nintents: [greet]\n')
    data = tmp_path / "data"
    data.mkdir()
    (data / "nlu.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    nested = "[" * 5000 + "]" * 5000
    (data / "notes.json").write_text(f'{{"utterances": {nested}}}')
    project = load_project(None, tmp_path / "domain.yml", [data])
    assert [e.text for e in project.nlu.examples] == ["hi"]
    for depth in (5000, 150):  # a RecursionError; deeper than a YAML file may nest
        example = '{"text": "hey", "metadata": {"x": ' + "[" * depth + "]" * depth + "}}"
        (data / "nlu.json").write_text(f'{{"rasa_nlu_data": {{"common_examples": [{example}]}}}}')
        with pytest.raises(InvalidProjectFile, match="nests more than 100 levels deep") as info:
            load_project(None, tmp_path / "domain.yml", [data])
        assert info.value.filename == str(data / "nlu.json")


def test_a_models_slot_with_a_key_rasa_does_not_take_still_loads() -> None:
    # Trained before training refused it: the model keeps serving, the key ignored.
    domain: dict[str, Any] = {"slots": {"s": {"type": "text", "values": ["a"], "mappings": []}}}
    reader = DomainReader(warnings=[], from_archive=True)
    reader.check(domain, "domain.json")
    assert reader.build(domain, "domain.json").slots_by_name["s"].type == "text"
    with pytest.raises(InvalidProjectFile, match="'values' is a key of categorical slots"):
        DomainReader(warnings=[]).check(domain, "domain.yml")


def test_rasa_2s_auto_fill_is_a_warning_pointing_to_data_migrate(tmp_path: Path) -> None:
    path = tmp_path / "domain.yml"
    path.write_text("version: '3.1'\nslots:\n  s:\n    type: text\n    auto_fill: false\n")
    warnings: list[str] = []
    read_domain(path, warnings=warnings)
    assert (
        f"{path}:5: slot 's' has Rasa 2's 'auto_fill', which Rasa 3 refuses and botserver "
        "ignores: `botserver data migrate` turns it into a mapping"
    ) in warnings


@pytest.mark.parametrize(
    ("file", "text", "line"),
    [
        ("data/nlu.yml", 'version: "3.1"\nnlu:\n- intent: 1\n  examples: |\n    - one\n', 3),
        (
            "data/stories.yml",
            'version: "3.1"\nstories:\n- story: s\n  steps:\n  - intent: 1\n  - action: utter_a\n',
            5,
        ),
    ],
)
def test_an_intent_written_as_a_number_in_data_names_file_and_line(
    tmp_path: Path, file: str, text: str, line: int
) -> None:
    """As Rasa's schema refuses `intent: 1` (not text); quoted, the intent `1` trains in
    both, domain and data alike."""
    quoted = text.replace("intent: 1", "intent: '1'")
    (tmp_path / "data").mkdir()
    (tmp_path / "domain.yml").write_text("intents:\n- '1'\nresponses:\n  utter_a:\n  - text: a\n")
    (tmp_path / file).write_text(quoted)
    project = load_project(None, tmp_path / "domain.yml", [tmp_path / "data"])
    assert "1" in project.domain.intents
    (tmp_path / file).write_text(text)
    with pytest.raises(InvalidProjectFile, match="not 1; quote it") as info:
        load_project(None, tmp_path / "domain.yml", [tmp_path / "data"])
    assert (info.value.filename, info.value.line) == (str(tmp_path / file), line)
