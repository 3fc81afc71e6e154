import json
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidConfig, ModelError
from server.nlu.pipeline import NLUPipeline
from server.nlu.regex_message import EXTRACTOR, parse_regex_message
from server.nlu.training_data import NLUTrainingData
from server.training.nlu_yaml import read_nlu_yaml

RECORDED_PARSE_KEYS = [
    "text",
    "intent",
    "entities",
    "text_tokens",
    "intent_ranking",
    "response_selector",
]


def test_parse_matches_rasa_recorded_shape(full_pipeline):
    result = full_pipeline.parse("hello")
    assert list(result) == RECORDED_PARSE_KEYS
    assert result["text"] == "hello"
    assert result["intent"]["name"] == "greet"
    assert set(result["intent"]) == {"name", "confidence"}
    assert result["text_tokens"] == [[0, 5]]
    assert len(result["intent_ranking"]) <= 10
    assert result["intent_ranking"][0] == result["intent"]
    assert set(result["response_selector"]) == {"all_retrieval_intents", "default"}
    assert json.loads(json.dumps(result)) == result


def test_moodbot_confidence_is_well_above_fallback_threshold(load_bot):
    pipeline = NLUPipeline.train(load_bot("moodbot"), [])
    for text, intent in [("hi there", "greet"), ("I am very sad", "mood_unhappy")]:
        result = pipeline.parse(text)
        assert result["intent"]["name"] == intent
        assert result["intent"]["confidence"] > 0.9


def test_entities_roles_regex_and_synonyms(full_pipeline):
    result = full_pipeline.parse("fly from Berlin to Rome")
    cities = {(e["value"], e.get("role")) for e in result["entities"] if e["entity"] == "city"}
    assert cities == {("Berlin", "from"), ("Rome", "to")}
    entity = next(e for e in result["entities"] if e["value"] == "Berlin")
    assert entity["extractor"] == "DIETClassifier"
    assert 0 < entity["confidence_entity"] <= 1

    zips = [e for e in full_pipeline.parse("my zip code is 99999")["entities"]]
    assert {
        "entity": "zipcode",
        "start": 15,
        "end": 20,
        "value": "99999",
        "extractor": "RegexEntityExtractor",
    } in zips

    mapped = [e for e in full_pipeline.parse("flight to NYC please")["entities"]]
    assert any(
        e["value"] == "New York" and e.get("processors") == ["EntitySynonymMapper"] for e in mapped
    )


def test_a_synonym_in_another_case_is_mapped_and_marked_as_in_rasa() -> None:
    """`[new york](city:New York)` makes "new york" a synonym: an extracted "NEW YORK" and
    "New York" both map to "New York" with `processors: ["EntitySynonymMapper"]` (the
    canonical spelling was left unmarked before, where Rasa marks it)."""
    from server.nlu.message import Message
    from server.nlu.synonyms import EntitySynonymMapper
    from server.training.nlu_yaml import read_nlu_yaml

    data = read_nlu_yaml(
        "nlu:\n- intent: go\n  examples: |\n    - to [new york](city:New York)\n", "n.yml"
    )
    mapper = EntitySynonymMapper({})
    mapper.train([], data)
    message = Message("NEW YORK or New York")
    message.entities = [
        {"entity": "city", "start": 0, "end": 8, "value": "NEW YORK"},
        {"entity": "city", "start": 12, "end": 20, "value": "New York"},
    ]
    mapper.process(message)
    for entity in message.entities:
        assert entity["value"] == "New York"
        assert entity["processors"] == ["EntitySynonymMapper"]


def _mapped(data: Any, *values: str) -> list[tuple[str, list[str]]]:
    """Extracted `values` (entity "city") as the mapper trained on `data` leaves them."""
    from server.nlu.message import Message
    from server.nlu.synonyms import EntitySynonymMapper

    mapper = EntitySynonymMapper({})
    mapper.train([], data)
    message = Message(" ".join(values))
    message.entities = [{"entity": "city", "value": v} for v in values]
    mapper.process(message)
    return [(e["value"], e.get("processors", [])) for e in message.entities]


def _json_data(*annotations: tuple[str, str]) -> Any:
    """Rasa JSON NLU data of one example "to <text>" per (text, value) annotated "city"."""
    from server.training.nlu_json import read_nlu_json_examples

    examples = [
        {
            "text": f"to {text}",
            "intent": "go",
            "entities": [{"entity": "city", "start": 3, "end": 3 + len(text), "value": value}],
        }
        for text, value in annotations
    ]
    return read_nlu_json_examples({"common_examples": examples}, "nlu.json")


def test_an_annotation_of_a_text_spelled_as_another_value_maps_it_in_json_data() -> None:
    """JSON examples' annotations are mapped by the mapper itself: "New York" annotated as
    written, then "new york" as "NY". The first one's self-reference ("new york" ->
    "New York") must not hide the second's mapping, as in Rasa (which warns)."""
    data = _json_data(("New York", "New York"), ("new york", "NY"))
    assert _mapped(data, "NEW YORK", "ny") == [
        ("NY", ["EntitySynonymMapper"]),
        ("NY", ["EntitySynonymMapper"]),
    ]


def test_of_two_annotations_of_one_text_in_json_data_the_last_one_wins() -> None:
    """As Rasa's mapper, which walks the examples in order and overwrites (with a warning):
    "NYC" annotated "New York", then "nyc" annotated "NY", maps to "NY", as the one read
    last does in YAML data. Before, the first annotation kept the text."""
    data = _json_data(("NYC", "New York"), ("nyc", "NY"))
    assert _mapped(data, "Nyc", "new york") == [
        ("NY", ["EntitySynonymMapper"]),
        ("New York", ["EntitySynonymMapper"]),
    ]


def test_response_selector_output(full_pipeline):
    selector = full_pipeline.parse("what is your name")["response_selector"]
    assert selector["all_retrieval_intents"] == ["chitchat"]
    response = selector["default"]["response"]
    assert response["intent_response_key"] == "chitchat/ask_name"
    assert response["utter_action"] == "utter_chitchat/ask_name"
    assert response["responses"] == [{"text": "I am a bot."}]
    assert set(selector["default"]["ranking"][0]) == {"id", "confidence", "intent_response_key"}


def test_a_retrieval_intent_without_responses_answers_its_key_as_rasa(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Trained without the domain (`botserver train nlu`), a retrieval intent has no
    responses: the selector's `responses` were null; Rasa's are [{"text": "faq/hours"}],
    with a warning that the training data lacks them."""
    data = read_nlu_yaml(
        "nlu:\n"
        "- intent: faq/hours\n  examples: |\n    - when do you open\n    - opening hours\n"
        "- intent: faq/place\n  examples: |\n    - where are you\n    - your address\n",
        "faq.yml",
    )
    pipeline = NLUPipeline.train(
        data, [{"name": "CountVectorsFeaturizer"}, {"name": "ResponseSelector"}]
    )
    for _ in range(2):
        response = pipeline.parse("when do you open")["response_selector"]["default"]["response"]
    assert response["intent_response_key"] == "faq/hours"
    assert response["responses"] == [{"text": "faq/hours"}]
    assert caplog.text.count("no responses for faq/hours") == 1


def test_an_empty_text_has_one_empty_token_as_in_rasa(full_pipeline) -> None:
    """Rasa's WhitespaceTokenizer makes a text without words one token of the whole text, an
    empty text too: its `text_tokens` are [[0, 0]] (before: [])."""
    assert full_pipeline.parse("")["text_tokens"] == [[0, 0]]


def test_a_retrieval_intent_names_its_full_retrieval_intent(full_pipeline):
    """Before, `intent` was only {"name": "chitchat", ...}: a client (and a story's
    `chitchat/ask_name`) could not see which response the selector chose; Rasa adds
    `full_retrieval_intent_name`."""
    result = full_pipeline.parse("what is your name")
    assert result["intent"]["name"] == "chitchat"
    assert result["intent"]["full_retrieval_intent_name"] == "chitchat/ask_name"
    assert "full_retrieval_intent_name" not in full_pipeline.parse("hello")["intent"]


def test_fallback_classifier_predicts_nlu_fallback(mixed_data):
    pipeline = NLUPipeline.train(
        mixed_data, [{"name": "DIETClassifier"}, {"name": "FallbackClassifier", "threshold": 0.99}]
    )
    result = pipeline.parse("purple elephants dance")
    assert result["intent"] == {"name": "nlu_fallback", "confidence": 0.99}
    assert result["intent_ranking"][0] == result["intent"]


def test_intent_message_syntax(full_pipeline):
    result = full_pipeline.parse('/book_flight{"city": ["Rome", "Oslo"]}')
    assert result == {
        "text": '/book_flight{"city": ["Rome", "Oslo"]}',
        "intent": {"name": "book_flight", "confidence": 1.0},
        "entities": [
            {"entity": "city", "value": "Rome", "start": 12, "end": 38, "extractor": EXTRACTOR},
            {"entity": "city", "value": "Oslo", "start": 12, "end": 38, "extractor": EXTRACTOR},
        ],
        "intent_ranking": [{"name": "book_flight", "confidence": 1.0}],
    }
    assert full_pipeline.parse("/greet@0.5")["intent"] == {"name": "greet", "confidence": 0.5}


def test_intent_messages_are_checked_against_the_domain_as_rasa_does(
    mixed_data: NLUTrainingData, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, `/anything` was taken as the intent `anything` (a policy then met an intent no
    domain has) and entities of any type were kept; Rasa's RegexMessageHandler parses an
    unknown intent as text and leaves out entity types the domain lacks, with warnings."""
    pipeline = NLUPipeline.train(mixed_data, [{"name": "DIETClassifier"}])
    pipeline.use_domain(["greet", "book_flight"], ["city"])
    unknown = pipeline.parse("/buy_ticket")
    assert unknown["intent"]["name"] != "buy_ticket"
    assert "text_tokens" in unknown  # the pipeline parsed it as text
    known = pipeline.parse('/book_flight{"city": "Rome", "price": "cheap"}')
    assert known["intent"] == {"name": "book_flight", "confidence": 1.0}
    assert [e["entity"] for e in known["entities"]] == ["city"]
    assert "'buy_ticket'" in caplog.text and "'price'" in caplog.text


def test_what_follows_an_intent_messages_entities_is_logged_short(
    full_pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """What follows the entities is ignored with a warning, as in Rasa; the warning quoted
    it and the message whole (before: 200,000 characters logged for a 100 KB message, on
    every parse of it), and that of an unreadable confidence all of it, where the other
    warnings of such messages quote 200 characters."""
    text = '/book_flight{"city": "Rome"}' + " and more" * 11_000
    result = full_pipeline.parse(text)
    assert [e["value"] for e in result["entities"]] == ["Rome"]
    assert "Ignoring ' and more and more" in caplog.text
    assert len(caplog.text) < 1_000
    caplog.clear()  # an unreadable confidence, as long, likewise
    result = full_pipeline.parse("/book_flight@" + "1." * 45_000)
    assert result["intent"] == {"name": "book_flight", "confidence": 0.0}
    assert "Invalid confidence '@1.1.1." in caplog.text
    assert len(caplog.text) < 1_000
    caplog.clear()  # thousands of entity types the domain lacks: a few named
    entities = ", ".join(f'"e{i}": 0' for i in range(8_000))
    text = '/book_flight{"city": "Rome", ' + entities + "}"
    result = parse_regex_message(text, {"book_flight"}, {"city"})
    assert result is not None and [e["value"] for e in result["entities"]] == ["Rome"]
    assert "Leaving out the entities 'e0', 'e1'" in caplog.text and "7,990 more" in caplog.text
    assert len(caplog.text) < 1_000


def test_intent_message_entities_nested_too_deep_are_ignored_with_a_warning(
    full_pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, 5,000 levels were a RecursionError (a 500 from /model/parse and every channel)
    and 150 levels an entity value no store could write back. As when the entities are no
    JSON object (Rasa: "Continuing without entities"), they are left out with a warning."""
    for depth in (150, 5000):
        text = '/book_flight{"city": ' + "[" * depth + "]" * depth + "}"
        result = full_pipeline.parse(text)
        assert result["intent"] == {"name": "book_flight", "confidence": 1.0}
        assert result["entities"] == []
    assert "nested too deeply" in caplog.text
    shallow = full_pipeline.parse('/book_flight{"city": [[["Rome"]]]}')
    assert [e["value"] for e in shallow["entities"]] == [[["Rome"]]]


@pytest.mark.parametrize(
    ("entities", "problem"),
    [
        ('{"city": NaN}', "NaN is not a JSON value"),
        ('{"city": -Infinity}', "not a JSON value"),
        ('{"city": 1e400}', "too large for a double"),
        ('{"city": "\\ud800"}', "unpaired UTF-16 surrogate"),
    ],
    ids=["nan", "infinity", "1e400", "surrogate"],
)
def test_intent_message_entities_no_answer_can_hold_are_ignored_with_a_warning(
    full_pipeline, caplog: pytest.LogCaptureFixture, entities: str, problem: str
) -> None:
    """Before, `/book_flight{"city": NaN}` (Python's JSON reads it), an infinity or half a
    surrogate pair became an entity value no JSON answer or store could hold again. Now the
    entities are left out with a warning, as entity JSON that is no object is."""
    result = full_pipeline.parse("/book_flight" + entities)
    assert result["intent"] == {"name": "book_flight", "confidence": 1.0}
    assert result["entities"] == []
    assert problem in caplog.text


def test_persistence_round_trip_gives_identical_parses(full_pipeline, tmp_path: Path):
    full_pipeline.persist(tmp_path)
    loaded = NLUPipeline.load(tmp_path)
    for text in ["hello", "fly from Berlin to Rome", "my zip code is 12345", "who are you"]:
        assert loaded.parse(text) == full_pipeline.parse(text)
    assert loaded.intents == full_pipeline.intents
    assert loaded.entities == full_pipeline.entities


def test_persisted_files_are_data_only(full_pipeline, tmp_path: Path):
    full_pipeline.persist(tmp_path)
    suffixes = {p.suffix for p in tmp_path.iterdir()}
    assert suffixes <= {".json", ".npy", ".crfsuite"}
    for path in tmp_path.iterdir():
        assert b"\x80\x04\x95" not in path.read_bytes()[:64]  # no pickle protocol header


def test_load_refuses_unknown_component(full_pipeline, tmp_path: Path):
    full_pipeline.persist(tmp_path)
    manifest = json.loads((tmp_path / "pipeline.json").read_text())
    manifest["components"][0]["key"] = "os.system"
    (tmp_path / "pipeline.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError):
        NLUPipeline.load(tmp_path)


def test_unknown_component_is_named_in_the_error(load_bot):
    with pytest.raises(InvalidConfig, match="my_module.MyClassifier"):
        NLUPipeline.train(load_bot("moodbot"), [{"name": "my_module.MyClassifier"}])


def test_spacy_components_map_with_one_warning(load_bot):
    pipeline = NLUPipeline.train(
        load_bot("moodbot"),
        [
            {"name": "SpacyNLP", "model": "en_core_web_md"},
            {"name": "SpacyTokenizer"},
            {"name": "SpacyFeaturizer"},
            {"name": "DIETClassifier", "entity_recognition": False},
        ],
    )
    mapping = [w for w in pipeline.warnings if "equivalents" in w]
    assert len(mapping) == 1
    assert "SpacyFeaturizer" in mapping[0] and "DIETClassifier" in mapping[0]
    assert pipeline.parse("hello")["intent"]["name"] == "greet"


def test_duckling_unreachable_yields_no_entities(caplog):
    pipeline = NLUPipeline.train(
        NLUTrainingData(),
        [{"name": "DucklingEntityExtractor", "url": "http://127.0.0.1:9", "timeout": 0.5}],
    )
    assert pipeline.parse("tomorrow at 5pm")["entities"] == []
    assert "Duckling" in caplog.text


def test_duckling_is_asked_for_the_configured_dimensions_only() -> None:
    """Before, Duckling was asked for every dimension and the answer filtered here: in
    "table at 5" its time "at 5" hid the number 5, so `dimensions: [number]` found nothing.
    As Rasa, the request names the dimensions (`dims`), and Duckling finds the number."""
    from tests.dialogue.fake_duckling import serve_form

    def duckling(form: dict[str, list[str]]) -> list[dict[str, Any]]:
        if json.loads(form.get("dims", ["[]"])[0]) == ["number"]:
            return [
                {
                    "body": "5",
                    "start": 9,
                    "end": 10,
                    "dim": "number",
                    "value": {"type": "value", "value": 5},
                }
            ]
        return [
            {
                "body": "at 5",
                "start": 6,
                "end": 10,
                "dim": "time",
                "value": {"type": "value", "value": "2026-12-05T05:00:00.000-08:00"},
            }
        ]

    with serve_form(duckling) as url:
        data = NLUTrainingData(examples=[])
        config = {"name": "DucklingEntityExtractor", "url": url, "dimensions": ["number"]}
        pipeline = NLUPipeline.train(data, [{"name": "WhitespaceTokenizer"}, config])
        entities = pipeline.parse("table at 5")["entities"]
    assert [(e["entity"], e["value"], e["start"], e["end"]) for e in entities] == [
        ("number", 5, 9, 10)
    ]


def test_synonyms_without_a_synonym_mapper_are_warned_about(caplog) -> None:
    """Before, synonyms trained with a pipeline lacking EntitySynonymMapper were silently
    never applied; Rasa warns at training, and so do we now."""
    from server.training.nlu_yaml import read_nlu_yaml

    data = read_nlu_yaml(
        "nlu:\n- intent: go\n  examples: |\n    - to [NYC](city:New York)\n    - to [Rome](city)\n"
    )
    tokenizer = [{"name": "WhitespaceTokenizer"}, {"name": "RegexEntityExtractor"}]
    with caplog.at_level("WARNING"):
        without = NLUPipeline.train(data, tokenizer)
    assert any("does not include an 'EntitySynonymMapper'" in w for w in without.warnings)
    assert "add an 'EntitySynonymMapper' to your configuration" in caplog.text
    with_mapper = NLUPipeline.train(data, [*tokenizer, {"name": "EntitySynonymMapper"}])
    assert not any("EntitySynonymMapper" in w for w in with_mapper.warnings)
