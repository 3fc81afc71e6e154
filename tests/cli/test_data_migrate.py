"""`botserver data migrate`: a Rasa 2 domain rewritten in Rasa 3's format, as Rasa's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

# Rasa 2's formbot domain, shortened: form slot mappings, auto_fill, a slot nothing fills.
RASA2_DOMAIN = """\
version: "2.0"
intents:
  - request_restaurant
  - inform
  - affirm
  - deny
  - chitchat
entities:
  - cuisine
  - number
  - seating
slots:
  cuisine:
    type: text
    influence_conversation: false
  num_people:
    type: float
    influence_conversation: false
  outdoor_seating:
    type: bool
    auto_fill: false
    influence_conversation: false
  search_results:
    type: any
responses:
  utter_ask_cuisine:
    - text: "What cuisine?"
  utter_ask_num_people:
    - text: "How many people?"
  utter_ask_outdoor_seating:
    - text: "Do you want to sit outside?"
  utter_submit:
    - text: "All done!"
forms:
  restaurant_form:
    ignored_intents:
      - chitchat
    required_slots:
      cuisine:
        - type: from_entity
          entity: cuisine
          not_intent: chitchat
      num_people:
        - type: from_entity
          entity: number
          intent: [inform, request_restaurant]
      outdoor_seating:
        - type: from_entity
          entity: seating
        - type: from_intent
          intent: affirm
          value: true
        - type: from_intent
          intent: deny
          value: false
"""
ACTIVE = {"active_loop": "restaurant_form"}


def _asked(slot: str) -> dict[str, str]:
    return {**ACTIVE, "requested_slot": slot}


def test_a_rasa_2_domain_becomes_one_rasa_3_trains(run_cli, tmp_path: Path) -> None:
    """Before, `data migrate` was "invalid choice: 'migrate'" (exit 2)."""
    (tmp_path / "domain.yml").write_text(RASA2_DOMAIN)
    result = run_cli("data", "migrate", "-d", "domain.yml", "--out", "new.yml", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "Migrated domain.yml to new.yml; the original is copied to original_domain.yml." in (
        result.out
    )
    assert (tmp_path / "original_domain.yml").read_text() == RASA2_DOMAIN
    assert (tmp_path / "domain.yml").read_text() == RASA2_DOMAIN
    assert "slot 'search_results' got a custom mapping" in result.err

    new = yaml.safe_load((tmp_path / "new.yml").read_text())
    assert new["version"] == "3.1"
    assert new["forms"] == {
        "restaurant_form": {
            "required_slots": ["cuisine", "num_people", "outdoor_seating"],
            "ignored_intents": ["chitchat"],
        }
    }
    slots = new["slots"]
    assert slots["cuisine"] == {
        "type": "text",
        "influence_conversation": False,
        "mappings": [
            {"type": "from_entity", "entity": "cuisine", "not_intent": "chitchat",
             "conditions": [ACTIVE]},
            {"type": "from_entity", "entity": "cuisine"},  # auto_fill: an entity of its name
        ],
    }  # fmt: skip
    assert slots["num_people"]["mappings"] == [
        {"type": "from_entity", "entity": "number", "intent": ["inform", "request_restaurant"],
         "conditions": [ACTIVE]},
    ]  # fmt: skip
    assert slots["outdoor_seating"] == {
        "type": "bool",
        "influence_conversation": False,
        "mappings": [
            {"type": "from_entity", "entity": "seating", "conditions": [ACTIVE]},
            {"type": "from_intent", "intent": "affirm", "value": True,
             "conditions": [_asked("outdoor_seating")]},
            {"type": "from_intent", "intent": "deny", "value": False,
             "conditions": [_asked("outdoor_seating")]},
        ],
    }  # fmt: skip
    assert slots["search_results"] == {"type": "any", "mappings": [{"type": "custom"}]}

    # The migrated domain is one botserver (and Rasa 3) trains from.
    _assert_trains(
        run_cli,
        tmp_path,
        "rules:\n- rule: form\n  steps:\n  - intent: request_restaurant\n"
        "  - action: restaurant_form\n  - active_loop: restaurant_form\n",
    )


def _assert_trains(run_cli, project: Path, data: str) -> None:
    """The migrated `new.yml` trains a dialogue model with the stories or rules `data`."""
    (project / "data").mkdir()
    (project / "data" / "data.yml").write_text('version: "3.1"\n' + data)
    trained = run_cli("train", "core", "-d", "new.yml", cwd=project)
    assert trained.code == 0, trained.err


def test_training_on_a_rasa_2_domain_points_to_data_migrate(run_cli, tmp_path: Path) -> None:
    (tmp_path / "domain.yml").write_text(RASA2_DOMAIN)
    (tmp_path / "data").mkdir()
    result = run_cli("data", "validate", cwd=tmp_path)
    assert (
        "domain.yml:38: form 'restaurant_form' uses the Rasa 2 'required_slots' mapping; Rasa 3 "
        "wants a list of slot names (with the mappings on the slots): `botserver data migrate` "
        "rewrites the domain so"
    ) in result.out


def test_a_mapping_two_forms_share_gets_both_conditions(run_cli, tmp_path: Path) -> None:
    domain = RASA2_DOMAIN + (
        "  feedback_form:\n    required_slots:\n      cuisine:\n"
        "        - type: from_entity\n          entity: cuisine\n          not_intent: chitchat\n"
    )
    (tmp_path / "domain.yml").write_text(domain)
    assert run_cli("data", "migrate", cwd=tmp_path).code == 0
    new = yaml.safe_load((tmp_path / "new_domain.yml").read_text())  # Rasa's default name
    first = new["slots"]["cuisine"]["mappings"][0]
    assert first["conditions"] == [ACTIVE, {"active_loop": "feedback_form"}]


def test_a_domain_directory_migrates_into_a_directory(run_cli, tmp_path: Path) -> None:
    parts = tmp_path / "domain"
    parts.mkdir()
    head, forms = RASA2_DOMAIN.split("forms:\n")
    (parts / "core.yml").write_text(head)
    (parts / "forms.yml").write_text('version: "2.0"\nforms:\n' + forms)
    (parts / "notes.txt").write_text("not a domain file")
    result = run_cli("data", "migrate", "-d", "domain", cwd=tmp_path)
    assert result.code == 0, result.err
    out = tmp_path / "new_domain"
    assert sorted(p.name for p in out.iterdir()) == ["core.yml", "forms.yml"]
    assert sorted(p.name for p in (tmp_path / "original_domain").iterdir()) == [
        "core.yml",
        "forms.yml",
    ]
    core = yaml.safe_load((out / "core.yml").read_text())
    assert core["version"] == "3.1"
    assert core["slots"]["num_people"]["mappings"][0]["conditions"] == [ACTIVE]
    assert yaml.safe_load((out / "forms.yml").read_text())["forms"]["restaurant_form"][
        "required_slots"
    ] == ["cuisine", "num_people", "outdoor_seating"]


@pytest.mark.parametrize(
    ("files", "argv", "message"),
    [
        ({}, [], "error: domain.yml: domain file not found"),
        ({"domain.yml": "intents: [\n"}, [], "error: domain.yml:2: invalid YAML"),
        (
            {"domain.yml": 'version: "3.1"\nintents: [greet]\n'},
            [],
            "error: domain.yml:1: already in Rasa 3's format",
        ),
        (
            {"domain.yml": "forms:\n  f:\n    required_slots:\n      - a\n"},
            [],
            "error: domain.yml:3: form 'f' is already in Rasa 3's format",
        ),
        (
            {"domain.yml": "forms:\n  f:\n    required_slots:\n      a:\n      - entity: x\n"},
            [],
            "error: domain.yml:4: form 'f': the mappings of slot 'a' must be a list of mappings",
        ),
        (
            {"domain.yml": RASA2_DOMAIN, "original_domain.yml": ""},
            [],
            "error: domain.yml: original_domain.yml already exists",
        ),
        (
            {"domain.yml": RASA2_DOMAIN, "new.yml": ""},
            ["--out", "new.yml"],
            "error: domain.yml: --out new.yml already exists",
        ),
        ({"data.yml": "nlu: []\n"}, ["-d", "data.yml"], "error: data.yml: not a domain file"),
    ],
    ids=[
        "missing",
        "invalid-yaml",
        "already-3",
        "form-already-3",
        "bad-mapping",
        "backup-exists",
        "out-exists",
        "not-a-domain",
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(
    run_cli, tmp_path: Path, files: dict[str, str], argv: list[str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_cli("data", "migrate", *argv, cwd=tmp_path)
    assert result.code == 1
    assert result.err.startswith(message), result.err
    assert len(result.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_an_unfeaturized_slot_becomes_one_rasa_3_trains(run_cli, tmp_path: Path) -> None:
    """Rasa 2's `unfeaturized` slot type is gone in Rasa 3: before, it was kept and the
    migrated domain did not train ("unknown type 'unfeaturized'")."""
    (tmp_path / "domain.yml").write_text(
        'version: "2.0"\nintents:\n  - greet\nentities:\n  - name\nslots:\n'
        "  name:\n    type: unfeaturized\n  note:\n    type: unfeaturized\n"
        "    influence_conversation: false\n    initial_value: hello\n"
        "responses:\n  utter_greet:\n    - text: Hi\n"
    )
    assert run_cli("data", "migrate", "--out", "new.yml", cwd=tmp_path).code == 0
    slots = yaml.safe_load((tmp_path / "new.yml").read_text())["slots"]
    assert slots["name"] == {
        "type": "any",
        "influence_conversation": False,
        "mappings": [{"type": "from_entity", "entity": "name"}],
    }
    assert slots["note"] == {
        "type": "any",
        "influence_conversation": False,
        "initial_value": "hello",
        "mappings": [{"type": "custom"}],
    }
    _assert_trains(
        run_cli,
        tmp_path,
        "stories:\n- story: hi\n  steps:\n  - intent: greet\n  - action: utter_greet\n",
    )
