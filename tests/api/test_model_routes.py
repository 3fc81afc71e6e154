"""The /model routes and GET /domain, each status with its spec-checked body."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request

from server.api.server import ServerOptions, build_app
from server.models.archive import read_archive, write_archive
from server.models.metadata import TRAINING_FORMAT
from tests.api.rasa_spec import RasaSpec
from tests.api.test_openapi_document import our_schema
from tests.loop_lag import loop_hold
from tests.shared_data import BOTS, MOODBOT
from tests.small_disk import temp_files_on_a_small_disk

TRAINING_YAML = """
language: en
pipeline: []
policies:
- name: RulePolicy
intents:
- greet
- goodbye
responses:
  utter_greet:
  - text: "Hey! How are you?"
  utter_goodbye:
  - text: "Bye"
nlu:
- intent: greet
  examples: |
    - hey
    - hello
- intent: goodbye
  examples: |
    - bye
    - goodbye
rules:
- rule: Say goodbye anytime the user says goodbye
  steps:
  - intent: goodbye
  - action: utter_goodbye
"""


def check(spec: RasaSpec, response: httpx.Response, path: str, method: str, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    spec.validate(body, path, method, status)
    return body


async def test_parse(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    body = check(
        rasa_spec,
        await client.post("/model/parse", json={"text": "hello"}),
        "/model/parse",
        "post",
        200,
    )
    assert body["text"] == "hello"
    assert body["intent"]["name"] == "greet"


@pytest.mark.parametrize("mode", ["WIT", "LUIS", "DIALOGFLOW"])
async def test_an_emulated_parse_fits_the_spec_schemathesis_is_given(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, mode: str
) -> None:
    """Rasa's spec offers these modes but describes only its own ParseResult, which an
    emulated answer (Wit's `entities: {}`...) cannot fit: the README's schemathesis run
    against the spec failed on `POST /model/parse?emulation_mode=WIT` (seed 1)."""
    response = await client.post(f"/model/parse?emulation_mode={mode}", json={"text": "hello"})
    check(rasa_spec, response, "/model/parse", "post", 200)


async def test_parse_strips_the_text_as_rasa_and_the_channels_do(
    client: httpx.AsyncClient,
) -> None:
    """Before, "  hello \n" came back unstripped with token offsets into the padding; Rasa
    (and a conversation through any channel) parses "hello", tokens from 0."""
    body = (await client.post("/model/parse", json={"text": "  hello \n"})).json()
    assert body["text"] == "hello"
    assert body["text_tokens"] == [[0, 5]]


async def test_parse_of_an_intent_message_checks_the_models_domain(
    client: httpx.AsyncClient,
) -> None:
    """`/greet` is moodbot's intent, with Rasa's `extractor` on its entities; `/order_pizza`
    is no intent of the domain, so (as in Rasa) the text is parsed by the NLU instead."""
    body = (await client.post("/model/parse", json={"text": '/greet{"name": "Ann"}'})).json()
    assert body["intent"] == {"name": "greet", "confidence": 1.0}
    assert body["entities"] == []  # moodbot's domain has no entity `name`
    unknown = (await client.post("/model/parse", json={"text": "/order_pizza"})).json()
    assert unknown["intent"]["name"] != "order_pizza"


async def test_parse_of_an_intent_message_with_entities_nested_too_deep_is_a_200(
    client: httpx.AsyncClient,
) -> None:
    """Before, the entity JSON's 5,000 levels were a RecursionError: a 500. Rasa goes on
    without entities it cannot read."""
    text = '/greet{"name": ' + "[" * 5000 + "]" * 5000 + "}"
    response = await client.post("/model/parse", json={"text": text})
    assert response.status_code == 200, response.text
    assert response.json()["intent"] == {"name": "greet", "confidence": 1.0}
    assert response.json()["entities"] == []


@pytest.mark.parametrize(
    ("content", "query"),
    [(b"{not json", ""), (b"{}", ""), (b"", ""), (b'{"text": "hi"}', "?emulation_mode=nope")],
    ids=["malformed", "no-text", "empty", "bad-emulation-mode"],
)
async def test_parse_errors_are_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, content: bytes, query: str
) -> None:
    response = await client.post(
        f"/model/parse{query}", content=content, headers={"Content-Type": "application/json"}
    )
    check(rasa_spec, response, "/model/parse", "post", 400)


@pytest.mark.timing
async def test_a_text_too_long_to_be_a_message_is_refused_without_holding_the_loop(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Before, a 1.2 MB text was parsed: its tokenizing held every other conversation and
    /health 0.26 s (in C, though in a thread), then its 4.8 MB answer 0.1 s more. Now a text
    over 100,000 characters is a 400 naming the limit; one at the limit is parsed."""
    words = " ".join(["hello great day"] * 75_000)
    async with loop_hold() as hold:
        response = await client.post("/model/parse", json={"text": words})
    assert hold.busiest < 0.15 * hold.slowness
    check(rasa_spec, response, "/model/parse", "post", 400)
    assert "1,199,999 characters long; at most 100,000" in response.json()["message"]
    assert response.json()["details"] == {"parameter": "text", "in": "body"}
    at_limit = words[:99_999] + "y"  # no trailing space, which the parse would strip
    parsed = await client.post("/model/parse", json={"text": at_limit})
    assert parsed.status_code == 200 and len(parsed.json()["text"]) == 100_000


async def test_predict_on_posted_events(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    events = [
        {"event": "action", "name": "action_listen"},
        {
            "event": "user",
            "text": "hi",
            "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "entities": []},
        },
    ]
    body = check(
        rasa_spec, await client.post("/model/predict", json=events), "/model/predict", "post", 200
    )
    assert body["scores"][0]["action"] == "utter_greet"
    assert len(body["tracker"]["events"]) == 2
    bad = await client.post("/model/predict", json={"event": "user"})
    assert check(rasa_spec, bad, "/model/predict", "post", 400)["details"]["in"] == "body"


async def test_train_yaml_returns_the_archive(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, tmp_path: Path
) -> None:
    response = await client.post(
        "/model/train?save_to_default_model_directory=false",
        content=TRAINING_YAML,
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["filename"].endswith(".tar.gz")
    assert response.content[:2] == b"\x1f\x8b"
    as_json = await client.post("/model/train", json=yaml.safe_load(TRAINING_YAML))
    assert as_json.status_code == 200
    saved = tmp_path / "models" / as_json.headers["filename"]
    assert saved.is_file()
    status = (await client.get("/status")).json()
    assert status["num_active_training_jobs"] == 0


@pytest.mark.parametrize("body", [{}, {"version": "3.1", "pipeline": [], "policies": []}])
async def test_train_without_training_data_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, body: dict[str, Any]
) -> None:
    # Before: a 200 with an archive of an empty model (Rasa: a 500, "finished without a
    # trained model").
    response = await client.post("/model/train", json=body)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert error["message"].startswith("No training data given in the request body")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"version": "3.1", "nlu": [],}', None),  # YAML (a trailing comma is not JSON)
        ('{"version": "3.1", "nlu": [], "stories": [], "rules": []}', "application/json"),
        ('version: "3.1"\nintents: [greet]\nresponses:\n  utter_hi: [{text: hi}]\n', None),
        ('version: "3.1"\nnlu:\n- intent: greet\n  examples: ""\n', "application/yaml"),
    ],
    ids=["empty-nlu", "empty-lists", "domain-only", "intent-without-examples"],
)
async def test_train_a_project_with_nothing_to_train_is_a_400(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    tmp_path: Path,
    body: str,
    content_type: str | None,
) -> None:
    """No stories, no rules, no NLU examples (Rasa 3.6: "No training data given", and no
    model). Before: a 200 with an archive of a model that knows nothing."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/model/train", content=body, headers=headers)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert error["message"].startswith("No training data given in the request body"), error
    assert "no stories, rules or NLU examples" in error["message"], error
    assert not list((tmp_path / "models").glob("*.tar.gz"))


async def test_train_on_a_server_that_verifies_signatures(
    make_client: Any, moodbot_model: Path, tmp_path: Path
) -> None:
    """The server holds only the public key: it trains an unsigned archive, which it would
    refuse to load; it does not try to sign with the public key."""
    from server.models.signing import generate_keypair

    private, public = generate_keypair()
    verify_key = tmp_path / "verify.pem"
    verify_key.write_bytes(public)
    client = await make_client(model_path=None, verify_key=verify_key)

    response = await client.post(
        "/model/train?save_to_default_model_directory=false",
        content=TRAINING_YAML,
        headers={"Content-Type": "application/yaml"},
    )

    assert response.status_code == 200, response.text
    archive = tmp_path / response.headers["filename"]
    archive.write_bytes(response.content)
    load = await client.put("/model", json={"model_file": str(archive)})
    assert load.status_code == 400
    assert "not signed" in load.json()["message"]


@pytest.mark.parametrize(
    "content",
    ["", "- just\n- a list\n", "intents: [greet\n", "nlu: 3\n"],
    ids=["empty", "not-a-mapping", "broken-yaml", "bad-nlu"],
)
async def test_train_bad_data_is_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, content: str
) -> None:
    response = await client.post("/model/train", content=content)
    check(rasa_spec, response, "/model/train", "post", 400)


async def test_train_with_an_example_longer_than_a_message_is_a_400_naming_its_line(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    # Before: trained, about 0.7 KB of memory per character: a body within the 10 MiB limit
    # held about 7 GB.
    body = TRAINING_YAML.replace("    - hello\n", "    - hello\n    - " + "hello" * 30_000 + "\n")
    response = await client.post("/model/train", content=body)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    # The line of the body, inside its `examples: |` block (before: no line, only the
    # part of the body, `data/data.yml`)
    assert error["message"].startswith("request body:19: a training example is ")
    assert "150,000 characters long" in error["message"]


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ("    - bye\n", '    - bye\n    - [x]{"role": "a"}\n', "request body:22: "),
        # Before: trained, with a warning in the log; Rasa refuses such a domain ("Intents
        # are not unique!").
        (
            "- goodbye\nresponses:",
            "- goodbye\n- greet\nresponses:",
            "request body:9: intent 'greet' is listed twice: list each intent once",
        ),
        # Before: trained, with a warning in the log; Rasa refuses such a domain
        # ("Duplicate entities in domain").
        (
            "- goodbye\nresponses:",
            "- goodbye\nentities:\n- city\n- city\nresponses:",
            "request body:11: entity 'city' is listed twice: list each entity once",
        ),
    ],
    ids=["example-in-a-block", "intent-listed-twice", "entity-listed-twice"],
)
async def test_train_names_the_body_line_of_what_it_refuses(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, old: str, new: str, said: str
) -> None:
    response = await client.post("/model/train", content=TRAINING_YAML.replace(old, new))
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert error["message"].startswith(said), error["message"]


async def test_train_with_callback_answers_204_then_posts_the_model(
    make_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    receiver = FastAPI()

    @receiver.post("/done")
    async def done(request: Request) -> dict[str, str]:
        await received.put((request.headers["content-type"], await request.body()))
        return {}

    client = await make_client()
    import server.api.model as model_routes

    real_client = model_routes.async_client_off_loop

    async def to_receiver(**kwargs: Any) -> httpx.AsyncClient:
        return await real_client(transport=httpx.ASGITransport(app=receiver), **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(model_routes, "async_client_off_loop", to_receiver)
        response = await client.post(
            "/model/train?callback_url=http://receiver/done", content=TRAINING_YAML
        )
        assert response.status_code == 204
        content_type, body = await asyncio.wait_for(received.get(), 30)
    assert content_type == "application/octet-stream"
    assert body[:2] == b"\x1f\x8b"


async def test_a_result_the_callback_url_refuses_is_logged_with_the_url_named(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the log said only 'Could not deliver a result to the callback URL: ...': with
    several clients (or jobs) calling back, not whose. Now the URL is named, without the
    credentials it may carry (user, password, query)."""
    import server.api.model as model_routes

    refusing = httpx.MockTransport(lambda request: httpx.Response(503))
    real_client = model_routes.async_client_off_loop

    async def to_receiver(**kwargs: Any) -> httpx.AsyncClient:
        return await real_client(transport=refusing, **kwargs)

    monkeypatch.setattr(model_routes, "async_client_off_loop", to_receiver)
    url = "http://ci:s3cret@receiver.test:8080/results?token=t0ken"
    examples = [{"text": "hi", "intent": "greet", "entities": []}]
    with caplog.at_level(logging.ERROR, logger="server.api.model"):
        response = await client.post(
            "/model/test/intents",
            params={"callback_url": url},
            json={"rasa_nlu_data": {"common_examples": examples}},
        )
        assert response.status_code == 204
        for _ in range(600):
            if "Could not deliver" in caplog.text:
                break
            await asyncio.sleep(0.05)
    assert (
        "Could not deliver a result to the callback URL http://receiver.test:8080/results: "
        in caplog.text
    ), caplog.text
    assert "503" in caplog.text
    assert "s3cret" not in caplog.text and "t0ken" not in caplog.text


async def test_a_callback_receivers_endless_answer_is_not_read(client: httpx.AsyncClient) -> None:
    """Before: the receiver's whole answer was read into memory (a receiver answering 256 MB
    had all 256 MB taken); only its status is needed."""
    total, piece = 256 * 1024 * 1024, b"x" * (1024 * 1024)
    sent = 0
    finished = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            while sent < total:
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the server closed the connection
        finally:
            writer.close()
            finished.set()

    receiver = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = receiver.sockets[0].getsockname()[1]
    async with receiver:
        nlu = (MOODBOT / "data" / "nlu.yml").read_text()
        response = await client.post(
            "/model/test/intents",
            params={"callback_url": f"http://127.0.0.1:{port}/"},
            content=nlu,
            headers={"Content-Type": "application/x-yaml"},
        )
        assert response.status_code == 204
        await asyncio.wait_for(finished.wait(), 60)
    # What the sockets' buffers held at most (a few MB), not the whole answer.
    assert sent < total // 4, f"{sent} bytes of the answer were sent"


NO_IMAGE_NLU = """\
pipeline:
- name: WhitespaceTokenizer
- name: CountVectorsFeaturizer
- name: DIETClassifier
nlu:
- intent: mood_great
  examples: |
    - perfect
    - I am feeling very good
    - so so perfect
    - amazing
- intent: mood_unhappy
  examples: |
    - my day was horrible
    - I am sad
    - I don't feel very well
    - not good
"""


async def test_the_test_routes_answer_without_drawing_images(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test routes answer with the reports: the images `rasa test` draws beside them
    (confusion matrices, histograms) are not drawn. Before, each request drew them into a
    folder removed after the answer: 0.3 of a moodbot evaluation's 0.32 CPU-s, and
    matplotlib's import (0.6 CPU-s) at the first."""
    figure = pytest.importorskip("matplotlib.figure")
    drawn: list[str] = []
    monkeypatch.setattr(figure.Figure, "savefig", lambda _self, path, **_: drawn.append(path))
    # Two folds of this data and pipeline, or the loaded moodbot model, evaluated.
    nlu = NO_IMAGE_NLU.encode()
    path = "/model/test/intents"
    for url in (path, f"{path}?cross_validation_folds=2"):
        response = await client.post(
            url, content=nlu, headers={"Content-Type": "application/x-yaml"}
        )
        assert check(rasa_spec, response, path, "post", 200)["intent_evaluation"]["report"]
        assert drawn == [], url
    stories = (MOODBOT / "data" / "stories.yml").read_text()
    response = await client.post("/model/test/stories", content=stories)
    assert check(rasa_spec, response, "/model/test/stories", "post", 200)["report"]
    assert drawn == []


async def test_test_stories(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    stories = (MOODBOT / "data" / "stories.yml").read_text()
    response = await client.post("/model/test/stories", content=stories)
    body = check(rasa_spec, response, "/model/test/stories", "post", 200)
    assert body["accuracy"] > 0.5
    assert body["report"]["conversation_accuracy"]["total"] > 0
    bare_list = yaml.safe_dump(yaml.safe_load(stories)["stories"])
    assert (await client.post("/model/test/stories", content=bare_list)).status_code == 200
    empty = await client.post("/model/test/stories", content=b"")
    check(rasa_spec, empty, "/model/test/stories", "post", 400)


# Seven anchors of eight aliases each: 2 million values in 300 bytes (the limit is 1 million).
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 8)}]\n"
    for previous, name in zip("abcdef", "bcdefg", strict=True)
)
BOMB_STORIES = (
    YAML_BOMB
    + """stories:
- story: bomb
  steps:
  - intent: greet
    entities:
    - mood: *g
  - action: utter_greet
"""
)
BOMB_CROSS_VALIDATION = (
    YAML_BOMB
    + """pipeline:
- name: WhitespaceTokenizer
  option: *g
- name: CountVectorsFeaturizer
- name: LogisticRegressionClassifier
nlu:
- intent: greet
  examples: |
    - hi
    - hello
- intent: goodbye
  examples: |
    - bye
    - ciao
"""
)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/model/test/stories", BOMB_STORIES),
        ("/model/test/intents?cross_validation_folds=2", BOMB_CROSS_VALIDATION),
    ],
    ids=["stories", "intents"],
)
async def test_a_yaml_bomb_sent_for_testing_is_refused_at_once(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, route: str, body: str
) -> None:
    """Before, the test routes read their body without the alias limit training has: ten
    anchors of ten aliases (10 million values, 378 bytes) held a worker thread for 7 s on
    `/model/test/stories` and 14 s on `/model/test/intents` (a pipeline option): minutes for
    the 387 million values of nine anchors of nine (found by probing)."""
    response = await client.post(
        route, content=body, headers={"Content-Type": "application/x-yaml"}
    )
    answer = check(rasa_spec, response, route.split("?")[0], "post", 400)
    assert answer["message"] == (
        "request body: the document holds more than 1,000,000 values (those of an anchor "
        "counted at each alias to it)"
    )


MISHEARD_STORY = """
stories:
- story: a greeting the NLU would not read as one
  steps:
  - user: I am very sad
    intent: greet
  - action: utter_greet
"""


async def test_test_stories_compare_actions_only_unless_e2e_as_in_rasa(
    client: httpx.AsyncClient,
) -> None:
    """Before, every story's intents were labels too (the report had a row per intent and
    `accuracy` counted them), and a user text the NLU reads otherwise failed the story."""
    actions_only = (await client.post("/model/test/stories", content=MISHEARD_STORY)).json()
    assert set(actions_only["report"]) - {"conversation_accuracy"} == {
        "utter_greet",
        "action_listen",
        "macro avg",
        "weighted avg",
        "micro avg",  # as Rasa's report (get_evaluation_metrics completes it)
    }
    assert actions_only["accuracy"] == 1.0
    assert actions_only["report"]["conversation_accuracy"]["correct"] == 1

    e2e = await client.post("/model/test/stories?e2e=true", content=MISHEARD_STORY)
    body = e2e.json()
    assert body["is_end_to_end_evaluation"] is True
    assert "greet" in body["report"]
    assert body["accuracy"] < 1.0
    assert body["report"]["conversation_accuracy"]["correct"] == 0


async def test_test_stories_tell_the_share_of_memorized_predictions(
    client: httpx.AsyncClient,
) -> None:
    """Before, `in_training_data_fraction` was missing (Rasa 3.6 always sends 0.0)."""
    stories = (MOODBOT / "data" / "stories.yml").read_text()
    body = (await client.post("/model/test/stories", content=stories)).json()
    policies = [a["policy"] for a in body["actions"]]
    memorized = {"RulePolicy", "MemoizationPolicy", "AugmentedMemoizationPolicy"}
    assert body["in_training_data_fraction"] == sum(p in memorized for p in policies) / len(
        policies
    )
    assert body["in_training_data_fraction"] == 1.0  # the training stories themselves
    empty = (await client.post("/model/test/stories", content="stories: []")).json()
    assert empty["in_training_data_fraction"] == 0.0


async def test_a_deeply_nested_yaml_body_is_a_400_naming_its_line(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Found by fuzzing: before, 1,000 nested lists were a 500 (a RecursionError); 40,000
    (a 40 KB body) killed the server with a segmentation fault (see tests/cli)."""
    deep = "language: en\npipeline:\n- " + "[" * 1000 + "]" * 1000 + "\n"
    train = await client.post("/model/train", content=deep)
    body = check(rasa_spec, train, "/model/train", "post", 400)
    assert body["message"] == "request body:3: the document nests more than 100 levels deep"
    nlu = "nlu:\n- intent: greet\n  metadata: " + "[" * 1000 + "]" * 1000 + "\n  examples: x\n"
    test = await client.post(
        "/model/test/intents", content=nlu, headers={"Content-Type": "application/x-yaml"}
    )
    assert check(rasa_spec, test, "/model/test/intents", "post", 400)["message"].endswith(
        "the document nests more than 100 levels deep"
    )


async def test_test_intents_yaml_and_json(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    nlu = (MOODBOT / "data" / "nlu.yml").read_text()
    response = await client.post(
        "/model/test/intents", content=nlu, headers={"Content-Type": "application/x-yaml"}
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    assert body["intent_evaluation"]["accuracy"] > 0.8
    assert body["intent_evaluation"]["predictions"][0]["predicted"]
    examples = [
        {"text": "hello there", "intent": "greet", "entities": []},
        {"text": "bye bye", "intent": "goodbye", "entities": []},
    ]
    as_json = await client.post(
        "/model/test/intents", json={"rasa_nlu_data": {"common_examples": examples}}
    )
    assert check(rasa_spec, as_json, "/model/test/intents", "post", 200)["intent_evaluation"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
async def test_test_intents_reads_yaml_sent_without_a_yaml_content_type(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, content_type: str | None
) -> None:
    """`curl --data-binary @nlu.yml` sends `application/x-www-form-urlencoded`. Before, the
    body was then read as JSON only: a 400 "Failed when parsing body as json", where
    `/model/train` and `/model/test/stories` read the same YAML (found by probing). JSON
    without its Content-Type is still read as JSON."""
    headers = {"Content-Type": content_type} if content_type else {}
    nlu = (MOODBOT / "data" / "nlu.yml").read_text()
    response = await client.post("/model/test/intents", content=nlu, headers=headers)
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    assert body["intent_evaluation"]["accuracy"] > 0.8
    examples = [
        {"text": "hello there", "intent": "greet", "entities": []},
        {"text": "bye bye", "intent": "goodbye", "entities": []},
    ]
    as_json = json.dumps({"rasa_nlu_data": {"common_examples": examples}})
    response = await client.post("/model/test/intents", content=as_json, headers=headers)
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    assert len(body["intent_evaluation"]["predictions"]) == 2
    broken = await client.post("/model/test/intents", content="nlu: [", headers=headers)
    assert (
        "does not contain valid YAML"
        in check(rasa_spec, broken, "/model/test/intents", "post", 400)["message"]
    )


@pytest.mark.parametrize(
    "broken",
    [
        '{"rasa_nlu_data": {"common_examples": [{"text": "hi" "intent": "greet"}]}}',
        '{"rasa_nlu_data": {"common_examples": [{"text": "hi", "intent": "greet"},]}}',
        '[{"text": "hi", "intent": "greet"]',
        ' \n\t[{"text": "hi", "intent": "greet"]',
        # JSON may open with a byte order mark (json.loads reads UTF-8, -16 and -32).
        '\ufeff[{"text": "hi", "intent": "greet"]'.encode(),
        '\ufeff [{"text": "hi", "intent": "greet"]'.encode("utf-16"),
    ],
    ids=["missing-comma", "trailing-comma", "unclosed", "space", "utf8-bom", "utf16"],
)
async def test_test_intents_says_why_json_sent_without_its_content_type_did_not_read(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, broken: str | bytes
) -> None:
    """`curl -d '{...}'` sends a form's type: a body that is no JSON is then read as YAML, and
    a JSON mistake (a missing or extra comma) came back as "does not contain valid YAML" or
    "The YAML body needs an 'nlu' section" (found by review). A body that opens as JSON
    and reads as no NLU YAML gets the JSON parser's error, as with its Content-Type; also
    after a byte order mark (before: "does not contain valid YAML", or "'utf-8' codec can't
    decode byte 0xff" for UTF-16)."""
    response = await client.post(
        "/model/test/intents",
        content=broken,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    message = check(rasa_spec, response, "/model/test/intents", "post", 400)["message"]
    assert message.startswith("Failed when parsing body as json: "), message


_BROKEN_JSON: list[str | bytes] = [
    '{"version": "3.1", "nlu": [{"intent": "greet" "examples": "- hi"}]}',
    '{"version": "3.1", "nlu": [1,,2]}',
    '[{"stories": []]',
    ' \n\t{"version": "3.1",',
    '\ufeff{"version": "3.1",'.encode(),
    '\ufeff {"version": "3.1",'.encode("utf-16"),
]


@pytest.mark.parametrize("route", ["/model/train", "/model/test/stories"])
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
@pytest.mark.parametrize(
    "broken",
    _BROKEN_JSON,
    ids=["missing-comma", "extra-comma", "unclosed", "space", "utf8-bom", "utf16"],
)
async def test_json_without_its_content_type_that_does_not_read_gets_the_json_error(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    route: str,
    content_type: str | None,
    broken: str | bytes,
) -> None:
    """A body without a JSON Content-Type is read as YAML: broken JSON (a missing or extra
    comma) came back as "does not contain valid YAML" with YAML's view of where, or
    "'utf-8' codec can't decode byte 0xff" for UTF-16. A body that opens as JSON and reads
    as no YAML now gets the JSON parser's error (line and column), as with its Content-Type
    and as /model/test/intents answers."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(route, content=broken, headers=headers)
    message = check(rasa_spec, response, route, "post", 400)["message"]
    assert message.startswith("Failed when parsing body as json: "), message
    assert re.search(r"line \d+ column \d+", message), message


@pytest.mark.parametrize("route", ["/model/train", "/model/test/stories"])
async def test_json_labelled_yaml_or_opening_as_yaml_gets_the_yaml_error(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, route: str
) -> None:
    """Labelled YAML, a body that opens like JSON is YAML's to judge; and a body that does
    not open like JSON is YAML whatever its type."""
    labelled = await client.post(
        route, content=_BROKEN_JSON[0], headers={"Content-Type": "application/x-yaml"}
    )
    assert (
        "does not contain valid YAML" in check(rasa_spec, labelled, route, "post", 400)["message"]
    )
    unlabelled = await client.post(route, content="stories: [")
    assert (
        "does not contain valid YAML" in check(rasa_spec, unlabelled, route, "post", 400)["message"]
    )


@pytest.mark.parametrize("route", ["/model/train", "/model/test/stories", "/model/test/intents"])
@pytest.mark.parametrize(
    "broken", ["{nlu: [", "{version: '3.1',\n  stories: [\n", "{'stories': [}"], ids=str
)
async def test_broken_flow_style_yaml_gets_the_yaml_error_with_its_line(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, route: str, broken: str
) -> None:
    """A body that opens as JSON does but whose keys are not in double quotes is YAML's flow
    style: before, its mistake came back as JSON's ("Expecting property name enclosed in
    double quotes" at the first key), which does not say what is wrong with it."""
    response = await client.post(route, content=broken)
    message = check(rasa_spec, response, route, "post", 400)["message"]
    assert message.startswith("The request body does not contain valid YAML. Error: "), message
    assert "Expecting property name" not in message
    assert re.search(r"line \d+, column \d+", message), message


@pytest.mark.parametrize(
    ("route", "content_type", "body"),
    [
        ("/model/train", None, "training"),
        ("/model/test/stories", None, '{"stories": [], "rules": [],\n "stories": []}'),
        (
            "/model/test/stories",
            "application/json",
            '{"stories": [], "rules": [],\n "stories": []}',
        ),
    ],
    ids=["train", "stories", "stories-labelled-json"],
)
async def test_json_read_as_yaml_with_a_key_given_twice_is_a_400_naming_its_line(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    route: str,
    content_type: str | None,
    body: str,
) -> None:
    """JSON that YAML reads, but with a key given twice, is refused as a YAML body with one
    is (as Rasa refuses it). Since JSON's error replaced YAML's for JSON that reads as no
    YAML, the JSON parser took it instead, its last value silently replacing the first
    (a training body's first 'nlu' list gone): a 200."""
    if body == "training":  # the training data as JSON on line 1, its language again on 2
        body = json.dumps(yaml.safe_load(TRAINING_YAML))[:-1] + ',\n "language": "de"}'
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(route, content=body, headers=headers)
    message = check(rasa_spec, response, route, "post", 400)["message"]
    assert message.startswith("request body:2: the key "), message
    assert "is given twice in one mapping (first on line 1)" in message, message


@pytest.mark.parametrize(
    ("route", "content_type", "encoding"),
    [
        ("/model/train", "application/json", "utf-8"),
        ("/model/train", "application/json", "utf-16"),
        ("/model/train", None, "utf-16"),
        ("/model/test/stories", None, "utf-16"),
        ("/model/test/stories", "application/json", "utf-16"),
    ],
    ids=["train-json", "train-json-utf16", "train-utf16", "stories-utf16", "stories-json-utf16"],
)
async def test_json_with_a_key_given_twice_is_a_400_naming_its_line(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    route: str,
    content_type: str | None,
    encoding: str,
) -> None:
    """JSON labelled `application/json`, and JSON in UTF-16 (which UTF-8 YAML cannot read),
    went to the JSON parser, which kept a key's last value without a word: a 200 with the
    first 'nlu' list (here the first 'stories') gone. Rasa reads these bodies as YAML and
    refuses the key given twice."""
    if route == "/model/train":
        document = yaml.safe_load(TRAINING_YAML)
        body = json.dumps(document)[:-1] + ',\n "nlu": []}'
    else:
        body = '{"stories": [], "rules": [],\n "stories": []}'
    key = "nlu" if route == "/model/train" else "stories"
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(route, content=body.encode(encoding), headers=headers)
    message = check(rasa_spec, response, route, "post", 400)["message"]
    assert message.startswith(f"request body:2: the key '{key}' "), message
    assert "is given twice in one mapping (first on line 1)" in message, message


async def test_json_yaml_cannot_read_with_a_key_given_twice_is_a_400_naming_the_key(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """A key over 1,024 characters is JSON no YAML reads, so no line can be named; the key
    given twice still is, where its last value was kept without a word."""
    body = json.dumps({"intents": ["greet"], "k" * 1100: 1})[:-1] + ', "intents": []}'
    response = await client.post(
        "/model/train", content=body, headers={"Content-Type": "application/json"}
    )
    message = check(rasa_spec, response, "/model/train", "post", 400)["message"]
    assert message == "request body: the key 'intents' is given twice in one mapping"


async def test_train_reads_json_without_its_content_type_that_yaml_cannot(
    client: httpx.AsyncClient,
) -> None:
    """JSON in UTF-16 (which json.loads reads) is no UTF-8 YAML: it trains as with its type."""
    document = yaml.safe_load(TRAINING_YAML)
    body = json.dumps(document).encode("utf-16")
    response = await client.post("/model/train?save_to_default_model_directory=false", content=body)
    assert response.status_code == 200, response.text
    assert response.content[:2] == b"\x1f\x8b"


async def test_train_reads_yaml_labelled_json_as_rasa(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Rasa reads every training body as YAML, whatever its type: a YAML project sent as
    `application/json` trains. Before: a 400 "Failed when parsing body as json". A body that
    opens as JSON still gets JSON's error."""
    response = await client.post(
        "/model/train?save_to_default_model_directory=false",
        content=TRAINING_YAML,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.content[:2] == b"\x1f\x8b"
    broken = await client.post(
        "/model/train", content='{"nlu": [}', headers={"Content-Type": "application/json"}
    )
    error = check(rasa_spec, broken, "/model/train", "post", 400)
    assert error["message"].startswith("Failed when parsing body as json"), error


@pytest.fixture(scope="module")
def responseselector_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """responseselectorbot trained once for the module's tests that evaluate it."""
    from server.training.train import train

    bot = BOTS / "responseselectorbot"
    folder = tmp_path_factory.mktemp("responseselectorbot")
    return Path(train(bot / "config.yml", bot / "domain.yml", [bot / "data"], folder).path)


async def test_test_intents_evaluates_the_response_selector(
    make_client: Any, rasa_spec: RasaSpec, responseselector_model: Path
) -> None:
    """As Rasa: the examples of retrieval intents (`chitchat/ask_name`) are scored on the
    response selector's `intent_response_key`. Before, `response_selection_evaluation` was
    `{}` for a bot with a ResponseSelector."""
    bot = BOTS / "responseselectorbot"
    client = await make_client(model_path=responseselector_model)
    response = await client.post(
        "/model/test/intents",
        content=(bot / "data" / "nlu.yml").read_text(),
        headers={"Content-Type": "application/x-yaml"},
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    ours = build_app(ServerOptions(model_path=None, enable_api=True)).openapi()
    errors = list(our_schema(ours, "/model/test/intents", "post", 200).iter_errors(body))
    assert not errors, errors[0].message
    selection = body["response_selection_evaluation"]
    assert list(selection) == [
        "report",
        "precision",
        "f1_score",
        "accuracy",
        "errors",
        "predictions",
    ]
    assert selection["accuracy"] > 0.8
    assert {"chitchat/ask_name", "chitchat/ask_weather"} <= set(selection["report"])
    first = selection["predictions"][0]
    assert list(first) == [
        "text",
        "intent_response_key_target",
        "intent_response_key_prediction",
        "confidence",
    ]
    assert first["intent_response_key_target"].startswith("chitchat/")
    assert {p["intent_response_key_target"] for p in selection["predictions"]} == {
        "chitchat/ask_name",
        "chitchat/ask_weather",
    }
    # (its report is no entity extractor's)
    assert "response_selection" not in (body["entity_evaluation"] or {})


async def test_test_intents_evaluates_the_response_selector_as_rasa(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, responseselector_model: Path
) -> None:
    nlu = (BOTS / "responseselectorbot" / "data" / "nlu.yml").read_text()
    response = await client.post(
        f"/model/test/intents?model={responseselector_model}",
        content=nlu,
        headers={"Content-Type": "application/x-yaml"},
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    selection = body["response_selection_evaluation"]
    # Before: {} here, and the response selector's report listed as an entity extractor.
    assert selection["accuracy"] > 0.9
    assert "chitchat/ask_name" in selection["report"]
    assert selection["predictions"][0]["intent_response_key_target"].startswith("chitchat/")
    assert "response_selection" not in body["entity_evaluation"]
    own = RasaSpec((await client.get("/openapi.json")).json())  # our document says so too
    own.validate(body, "/model/test/intents", "post", 200)


async def test_test_intents_lists_each_extractors_entity_errors(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, tmp_path: Path
) -> None:
    from server.training.train import train

    bot = BOTS / "knowledgebasebot"
    model = train(bot / "config.yml", bot / "domain.yml", [bot / "data"], tmp_path).path
    entity = {"start": 5, "end": 9, "value": "zzqx", "entity": "object_type"}
    examples = [{"text": "list zzqx", "intent": "query_knowledge_base", "entities": [entity]}]
    response = await client.post(
        f"/model/test/intents?model={model}",
        json={"rasa_nlu_data": {"common_examples": examples}},
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    # As Rasa's: the example beside what the extractor found (before: always []).
    (evaluation,) = body["entity_evaluation"].values()
    assert evaluation["errors"] == [
        {"text": "list zzqx", "entities": [entity], "predicted_entities": []}
    ]


async def test_test_intents_json_keeps_each_entity_as_sent(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, tmp_path: Path
) -> None:
    """Rasa reads the JSON body's examples as they are. Before, they went through entity
    markup and back: an entity overlapping another was dropped without a word, and a
    number value (Rasa's schema allows one) made the request a 400."""
    from server.training.train import train

    bot = BOTS / "knowledgebasebot"
    model = train(bot / "config.yml", bot / "domain.yml", [bot / "data"], tmp_path).path
    kind = {"start": 5, "end": 9, "value": "zzqx", "entity": "object_type"}
    overlapping = {"start": 0, "end": 9, "value": 2, "entity": "mention"}
    examples = [
        {"text": "list zzqx", "intent": "query_knowledge_base", "entities": [kind, overlapping]}
    ]
    response = await client.post(
        f"/model/test/intents?model={model}",
        json={"rasa_nlu_data": {"common_examples": examples}},
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 200)
    (evaluation,) = body["entity_evaluation"].values()
    [error] = evaluation["errors"]
    assert error["entities"] == [kind, overlapping]
    assert evaluation["report"]["mention"]["support"] == 1


@pytest.mark.parametrize("entity", [5, None, ""])
async def test_test_intents_json_entity_without_a_name_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, entity: object
) -> None:
    """Rasa's schema wants each entity's `entity` to be text. Before, such an entity was
    dropped without a word and the rest evaluated."""
    annotation = {"start": 0, "end": 2, "value": "hi", "entity": entity}
    examples = [{"text": "hi", "intent": "greet", "entities": [annotation]}]
    response = await client.post(
        "/model/test/intents", json={"rasa_nlu_data": {"common_examples": examples}}
    )
    message = check(rasa_spec, response, "/model/test/intents", "post", 400)["message"]
    assert "common_examples[0].entities[0]: needs an 'entity' name" in message


@pytest.mark.parametrize(("start", "end"), [(False, True), (0, True)])
async def test_test_intents_json_entity_offsets_must_be_integers(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, start: object, end: object
) -> None:
    """Rasa's schema wants numbers for `start` and `end`, and `true` is none (the JSON
    reader of training files too). Before, false and true were read as 0 and 1, evaluated,
    and echoed as `"start": false`."""
    annotation = {"start": start, "end": end, "value": "h", "entity": "greeting"}
    examples = [{"text": "hi", "intent": "greet", "entities": [annotation]}]
    response = await client.post(
        "/model/test/intents", json={"rasa_nlu_data": {"common_examples": examples}}
    )
    message = check(rasa_spec, response, "/model/test/intents", "post", 400)["message"]
    assert "common_examples[0].entities[0]: 'start' and 'end' must mark a part" in message


async def test_test_intents_errors(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    path = "/model/test/intents"
    empty = await client.post(path, content=b"")
    check(rasa_spec, empty, path, "post", 400)
    folds_json = await client.post(f"{path}?cross_validation_folds=3", json={})
    assert check(rasa_spec, folds_json, path, "post", 400)["reason"] == "TestingError"
    missing_model = await client.post(
        f"{path}?model=/nowhere/model.tar.gz",
        json={
            "rasa_nlu_data": {
                "common_examples": [{"text": "hi", "intent": "greet", "entities": []}]
            }
        },
    )
    check(rasa_spec, missing_model, path, "post", 400)


async def test_folds_that_are_no_number_are_ignored_with_a_warning_as_in_rasa(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    examples = [
        {"text": "hello there", "intent": "greet", "entities": []},
        {"text": "bye bye", "intent": "goodbye", "entities": []},
    ]
    response = await client.post(
        "/model/test/intents?cross_validation_folds=three",
        json={"rasa_nlu_data": {"common_examples": examples}},
    )
    # The loaded model is evaluated, as in Rasa; before, without a word in the log.
    assert response.status_code == 200
    assert (
        "Query parameter 'cross_validation_folds': 'three' is not an integer; using the "
        "default (None) instead." in caplog.messages
    )


async def test_put_model_missing_file_is_rasas_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    response = await client.put("/model", json={"model_file": "models/nope.tar.gz"})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert body["message"] == "Agent with name 'models/nope.tar.gz' could not be loaded."
    assert body["details"] == {"parameter": "model", "in": "query"}
    for bad in ({"model_server": "http://x"}, {"remote_storage": "ftp"}, {}):
        check(rasa_spec, await client.put("/model", json=bad), "/model", "put", 400)


@pytest.mark.parametrize("name", ["nope.tar.gz", "model.tgz"])
async def test_put_model_says_in_the_log_and_status_why_a_file_was_not_loaded(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    moodbot_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    """Rasa's 400 names the file alone; before, neither the log nor /status said more, so an
    archive saved as `.tgz` read as a model that was not there."""
    if name.endswith(".tgz"):
        shutil.copy(moodbot_model, tmp_path / name)
    given = str(tmp_path / name)
    caplog.set_level(logging.INFO, logger="server")

    response = await client.put("/model", json={"model_file": given})

    body = check(rasa_spec, response, "/model", "put", 400)
    assert body["message"] == f"Agent with name '{given}' could not be loaded."
    why = (
        "is not a model archive: model files end in .tar.gz"
        if name.endswith(".tgz")
        else "No model found at"
    )
    assert [m for m in caplog.messages if m.startswith("PUT /model: ") and why in m]
    status = (await client.get("/status")).json()
    assert status["model_file"] == moodbot_model.name
    assert why in status["last_load_error"]["message"]
    # The command line's hint (train one, pass it with -m) is no help to an API caller.
    assert not [m for m in caplog.messages if "with -m" in m]
    assert "with -m" not in status["last_load_error"]["message"]


async def test_put_model_does_not_echo_the_credentials_it_was_given(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    # Error bodies end up in client logs, proxies and tickets: they name the server, not
    # the password or the key.
    url = "http://bot:hunter2pass@127.0.0.1:9/model?api_key=k3y-9f8e7d"
    response = await client.put("/model", json={"model_server": {"url": url}})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert "127.0.0.1:9/model" in body["message"]
    assert "hunter2pass" not in response.text and "k3y-9f8e7d" not in response.text


@pytest.mark.parametrize(
    "query",
    [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=5ec2e7a9b1",  # S3 presigned
        "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=5ec2e7a9b1",  # GCS signed
    ],
)
async def test_put_model_does_not_echo_a_signed_urls_signature(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, query: str
) -> None:
    # A presigned object URL is a model server too: its signature grants the download.
    # Before, the 400 (and the log, and /status) showed it: only `sig=` was hidden.
    url = f"http://127.0.0.1:9/models/prod.tar.gz?{query}"
    response = await client.put("/model", json={"model_server": {"url": url}})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert "127.0.0.1:9/models/prod.tar.gz" in body["message"]
    assert "5ec2e7a9b1" not in response.text


async def test_put_model_names_the_model_server_as_safe_url_shows_it(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    # One way to show an address: host, port and path. Before, the redaction of the text
    # left `bot:***@`, the query's keys, and a credential no pattern knew (`X-Amz-Credential`).
    url = "http://bot:pa55@[::1]:9/models/prod.tar.gz?X-Amz-Credential=AKIA5EXAMPLE&x=1#f"
    response = await client.put("/model", json={"model_server": {"url": url}})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert "model server http://[::1]:9/models/prod.tar.gz:" in body["message"]
    assert "bot" not in body["message"] and "AKIA5EXAMPLE" not in response.text


@pytest.mark.parametrize(
    ("model_server", "says"),
    [
        ({"url": "http://127.0.0.1:9/m", "timeout": "soon"}, "models.timeout must be seconds"),
        ({"url": "http://127.0.0.1:9/m", "timeout": -5}, "models.timeout must be seconds"),
        # An integer no float holds (JSON keeps it exactly): before, OverflowError, a 500.
        ({"url": "http://127.0.0.1:9/m", "timeout": 10**400}, "models.timeout must be seconds"),
        ({"url": "http://127.0.0.1:9/m", "params": "a=b"}, "models.params must be a mapping"),
        ({"url": "http://127.0.0.1:9/m", "headers": ["x"]}, "models.headers must be a mapping"),
        (
            {"url": "http://127.0.0.1:9/m", "wait_time_between_pulls": -1},
            "models.wait_time_between_pulls must be seconds",
        ),
        ({"url": "http://[::1/m"}, "models.url is not a valid URL"),
        ({"url": "http://127.0.0.1:9/m", "headers": {"X-Key": "clé"}}, "must be an ASCII"),
        # Before, taken: every pull failed, its log line and error quoting the secret.
        (
            {"url": "http://127.0.0.1:9/m", "headers": {"X-Key": "s3cret\n"}},
            "'models.headers': header 'X-Key' holds a line break",
        ),
        (
            {"url": "http://127.0.0.1:9/m", "headers": {"X Key": "s3cret"}},
            "'models.headers': 'X Key' is no header name",
        ),
        # Before, sent as the text "None".
        ({"url": "http://127.0.0.1:9/m", "headers": {"X-Key": None}}, "'X-Key' has no value"),
        # Before, the whole URL quoted back: a 1 MB URL, a 1 MB error.
        ({"url": "http://127.0.0.1:9/" + "m" * 1_000_000}, "models.url is not a valid URL"),
        # A URL httpx takes, made too long by the query added to it: before, a 500 at the pull.
        (
            {"url": "http://127.0.0.1:9/m", "token": "s3cret" + "t" * 70_000},
            "models: the URL with 'params' and 'token' added is not a valid URL",
        ),
        (
            {"url": "http://127.0.0.1:9/m", "params": {"s3cret": "p" * 70_000}},
            "models: the URL with 'params' and 'token' added is not a valid URL",
        ),
    ],
    ids=[
        "timeout-text",
        "timeout-negative",
        "timeout-beyond-a-float",
        "params",
        "headers",
        "wait-negative",
        "url",
        "header-not-ascii",
        "header-line-break",
        "header-name",
        "header-none",
        "url-too-long",
        "token-too-long",
        "params-too-long",
    ],
)
async def test_put_model_with_an_unusable_model_server_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, model_server: dict[str, Any], says: str
) -> None:
    before = (await client.get("/status")).json()["model_id"]
    response = await client.put("/model", json={"model_server": model_server})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert says in body["message"]
    assert "s3cret" not in response.text
    assert len(response.content) < 2000
    assert body["details"] == {"parameter": "model_server", "in": "body"}
    assert (await client.get("/status")).json()["model_id"] == before


async def test_put_model_with_a_file_name_too_long_for_the_disk_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    # Longer than a file name may be (255 bytes), shorter than a path (4,096 characters).
    response = await client.put("/model", json={"model_file": "m" * 300 + ".tar.gz"})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert body["message"].startswith("Agent with name 'mmm")


@pytest.mark.parametrize(
    "content",
    [b"not a gzip file at all", b"\x1f\x8b\x08\x00 truncated gzip"],
    ids=["not-gzip", "truncated"],
)
async def test_put_model_with_a_file_that_is_no_archive_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, tmp_path: Path, content: bytes
) -> None:
    before = (await client.get("/status")).json()["model_id"]
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(content)
    response = await client.put("/model", json={"model_file": str(bad)})
    body = check(rasa_spec, response, "/model", "put", 400)
    assert "corrupt or not a gzip-compressed tar file" in body["message"]
    assert (await client.get("/status")).json()["model_id"] == before


async def test_unload_and_reload(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, moodbot_model: Path
) -> None:
    assert (await client.delete("/model")).status_code == 204
    check(rasa_spec, await client.get("/status"), "/status", "get", 409)
    no_model = await client.post("/model/parse", json={"text": "hi"})
    assert no_model.status_code == 409
    reload = await client.put("/model", json={"model_file": str(moodbot_model)})
    assert reload.status_code == 204 and reload.content == b""
    status = check(rasa_spec, await client.get("/status"), "/status", "get", 200)
    assert status["model_file"] == moodbot_model.name


async def test_domain_by_accept_header(client: httpx.AsyncClient, rasa_spec: RasaSpec) -> None:
    for accept in (None, "*/*", "application/json"):
        headers = {"Accept": accept} if accept else {}
        response = await client.get("/domain", headers=headers)
        body = check(rasa_spec, response, "/domain", "get", 200)
        assert "greet" in body["intents"]
    as_yaml = await client.get("/domain", headers={"Accept": "application/x-yaml"})
    assert as_yaml.headers["content-type"].startswith("application/x-yaml")
    assert yaml.safe_load(as_yaml.text) == json.loads((await client.get("/domain")).text)
    refused = await client.get("/domain", headers={"Accept": "text/html"})
    assert check(rasa_spec, refused, "/domain", "get", 406)["reason"] == "NotAcceptable"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        # Before, the first type listed won whatever its quality: YAML, then JSON.
        ("application/x-yaml;q=0.1, application/json", "application/json"),
        ("application/json;q=0.5, application/x-yaml", "application/x-yaml"),
        ("application/json;q=0, */*", "application/x-yaml"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
        ("application/json, application/x-yaml", "application/json"),
    ],
)
async def test_domain_honours_the_quality_of_each_accepted_type(
    client: httpx.AsyncClient, accept: str, content_type: str
) -> None:
    response = await client.get("/domain", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type


async def test_domain_refuses_an_accept_header_that_rules_out_both_formats(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    for accept in ("application/json;q=0", "*/*;q=0", "text/html"):
        response = await client.get("/domain", headers={"Accept": accept})
        assert check(rasa_spec, response, "/domain", "get", 406)["reason"] == "NotAcceptable"


async def test_a_key_given_twice_in_a_yaml_body_is_a_400_naming_its_line(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    twice = TRAINING_YAML + "language: de\n"
    train = await client.post("/model/train", content=twice)
    stories = "stories:\n- story: a\n  steps:\n  - intent: greet\n  steps: []\n"
    test = await client.post("/model/test/stories", content=stories)
    # Before: the second value silently replaced the first, and the model trained on it.
    body = check(rasa_spec, train, "/model/train", "post", 400)
    line = TRAINING_YAML.count("\n") + 1
    assert body["message"] == (
        f"request body:{line}: the key 'language' is given twice in one mapping (first on line 2)"
    )
    assert test.status_code == 400
    assert "request body:5: the key 'steps' is given twice" in test.json()["message"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2023-02-30", "'2023-02-30' is not a valid timestamp (day is out of range for month)"),
        ("!!float ten", "'ten' is not a valid float"),
        ("!!int ten", "'ten' is not a valid int"),
    ],
)
async def test_a_yaml_value_that_cannot_be_read_is_a_400_naming_its_line(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, value: str, problem: str
) -> None:
    """A plain value YAML types but cannot build (a date that does not exist, a hex number
    without digits, an explicit tag on the wrong text): before, PyYAML's ValueError escaped
    and the request was a 500."""
    body = TRAINING_YAML + f"slots:\n  day:\n    type: text\n    initial_value: {value}\n"
    response = await client.post("/model/train", content=body)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    line = TRAINING_YAML.count("\n") + 4
    assert error["message"].startswith(f"request body:{line}: {problem}")
    assert "quote it" in error["message"]


async def test_a_yaml_integer_too_long_to_read_is_a_400_in_the_clients_terms(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Python reads no integer of more than 4,300 digits. JSON bodies said so plainly, YAML
    ones told the client to call `sys.set_int_max_str_digits()` (found by review)."""
    body = TRAINING_YAML + f"slots:\n  day:\n    type: text\n    initial_value: {'1' * 5000}\n"
    response = await client.post("/model/train", content=body)
    message = check(rasa_spec, response, "/model/train", "post", 400)["message"]
    assert message.endswith(
        "is not a valid int (it has 5,000 digits; at most 4,300 are read); "
        "quote it to keep it as text"
    ), message


@pytest.mark.parametrize(
    "value", ["0x" + "f" * 4000, "0o" + "7" * 5000, "0b" + "1" * 15000], ids=["hex", "oct", "bin"]
)
async def test_a_yaml_hex_octal_or_binary_integer_of_too_many_digits_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, value: str
) -> None:
    """Hexadecimal, octal and binary integers are read at any length, but one above 4,300
    decimal digits is written (in a message, a tracker, a JSON answer) by no Python. Before,
    a slot's `initial_value: 0xfff...` (4,000 digits; or `core_fallback_threshold:`, whose
    check says "not <the number>") was read, and the training failed writing it: a 500
    TrainingError, the log naming `sys.set_int_max_str_digits()` (found by review)."""
    slot = f"slots:\n  day:\n    type: float\n    initial_value: {value}\n"
    response = await client.post("/model/train", content=TRAINING_YAML + slot)
    message = check(rasa_spec, response, "/model/train", "post", 400)["message"]
    assert message.endswith(
        "is not a valid int (it has more than 4,300 decimal digits; at most 4,300 are read); "
        "quote it to keep it as text"
    ), message


@pytest.mark.parametrize("value", ["2024-01-01", ".inf", "!!set {a, b}"])
async def test_a_value_no_json_holds_in_a_training_request_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, value: str
) -> None:
    """The model keeps its domain as JSON: before, a date (or infinity, or set) in a
    response's custom payload was a 500, and the model was not trained."""
    bye = '  - text: "Bye"\n'
    body = TRAINING_YAML.replace(bye, f"{bye}    custom:\n      at: {value}\n")
    response = await client.post("/model/train", content=body)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert "which a model cannot hold (no JSON holds it); quote it" in error["message"]


@pytest.mark.parametrize("value", ["2024-01-01", ".inf", "!!set {a, b}"])
async def test_a_config_value_no_json_holds_in_a_training_request_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, value: str
) -> None:
    """The model keeps its config as JSON: before, a date as a policy's option trained the
    model, then writing its metadata raised a TypeError: a 500."""
    policy = "- name: RulePolicy\n"
    assert policy in TRAINING_YAML
    body = TRAINING_YAML.replace(policy, f"{policy}  when: {value}\n", 1)
    response = await client.post("/model/train", content=body)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert "the value of 'when' (" in error["message"], error["message"]
    assert "which a model cannot hold (no JSON holds it); quote it" in error["message"]


async def test_text_yaml_1_2_reads_as_a_number_keeps_its_type_through_a_training_request(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The request's project is written to files and read back: PyYAML wrote the text `1e3`
    plain (text in YAML 1.1), which YAML 1.2 reads as the number 1000.0. Before, a 400 said
    the response's text 'must be text, not 1000.0'."""
    document = yaml.safe_load(TRAINING_YAML)
    document["responses"]["utter_goodbye"] = [{"text": "1e3"}, {"text": "2.5e3"}]
    response = await client.post(
        "/model/train?save_to_default_model_directory=false", json=document
    )
    assert response.status_code == 200, response.text
    archive = tmp_path / response.headers["filename"]
    archive.write_bytes(response.content)
    domain = read_archive(archive, tmp_path / "model")["domain"]
    assert domain["responses"]["utter_goodbye"] == [{"text": "1e3"}, {"text": "2.5e3"}]


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Temporary files (model extraction) go to a 64 KiB tmpfs, too small for a model."""
    with temp_files_on_a_small_disk(tmp_path, monkeypatch) as mount:
        yield mount


async def test_put_model_on_a_full_disk_is_a_507_and_the_model_keeps_serving(
    client: httpx.AsyncClient,
    moodbot_model: Path,
    full_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = (await client.get("/status")).json()["model_id"]
    caplog.clear()

    response = await client.put("/model", json={"model_file": str(moodbot_model)})

    assert response.status_code == 507
    assert response.json()["reason"] == "InsufficientStorage"
    assert "no disk space left" in response.json()["message"]
    assert (await client.get("/status")).json()["model_id"] == before
    assert (await client.post("/model/parse", json={"text": "hello"})).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no space left" in errors[0].getMessage()
    assert await asyncio.to_thread(os.listdir, full_disk) == []  # no partial extraction left


async def test_put_model_whose_component_state_is_broken_is_a_500_logged_once(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    moodbot_model: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An archive that passes every archive check, but one component cannot load its state:
    a broken model (Rasa's 500 LoadingError), not a client mistake the checks could name."""
    metadata = read_archive(moodbot_model, tmp_path / "x")
    (tmp_path / "x" / "components" / "nlu" / "c1_vocabulary.json").write_text('{"not": "a list"}')
    broken = write_archive(tmp_path / "x" / "components", metadata, tmp_path, "broken")
    before = (await client.get("/status")).json()["model_id"]
    caplog.clear()

    response = await client.put("/model", json={"model_file": str(broken)})

    body = check(rasa_spec, response, "/model", "put", 500)
    assert body["reason"] == "LoadingError" and "broken.tar.gz" in body["message"]
    assert (await client.get("/status")).json()["model_id"] == before
    assert (await client.post("/model/parse", json={"text": "hello"})).status_code == 200
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def still_serving_and_refused_for_testing(
    client: httpx.AsyncClient, before: str, model: Path, said: str
) -> None:
    """The model served before is still served, and `/model/test/intents?model=` refuses the
    archive with a 400 saying `said`."""
    assert (await client.get("/status")).json()["model_id"] == before
    tested = await client.post(
        f"/model/test/intents?model={model}",
        content="nlu:\n- intent: greet\n  examples: |\n    - hello\n",
        headers={"Content-Type": "application/x-yaml"},
    )
    assert tested.status_code == 400 and said in tested.text


async def test_put_model_of_a_newer_botserver_with_a_component_unknown_here_is_a_400_saying_so(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, moodbot_model: Path, tmp_path: Path
) -> None:
    """A rollback: an archive trained by a newer botserver (a training format above ours)
    names a component this version lacks. Before: a 500 LoadingError saying only "unknown NLU
    component", as if the archive were broken; it is one this server cannot use, as an
    archive of a newer archive format is (a 400 saying to upgrade or retrain)."""
    metadata = read_archive(moodbot_model, tmp_path / "x")
    metadata["training_format"] = TRAINING_FORMAT + 1
    manifest_path = tmp_path / "x" / "components" / "nlu" / "pipeline.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["components"][-1]["key"] = "FutureClassifier"
    manifest_path.write_text(json.dumps(manifest))
    future = write_archive(tmp_path / "x" / "components", metadata, tmp_path, "future")
    before = (await client.get("/status")).json()["model_id"]

    response = await client.put("/model", json={"model_file": str(future)})

    body = check(rasa_spec, response, "/model", "put", 400)
    assert body["reason"] == "BadRequest"
    assert body["message"] == (
        f"Could not load model 'future.tar.gz': the model was trained in training format "
        f"{TRAINING_FORMAT + 1} by a newer botserver; this botserver reads format "
        f"{TRAINING_FORMAT}: unknown NLU component 'FutureClassifier' in the model. Upgrade "
        "botserver, or retrain the model with this version (`botserver train`)."
    )
    await still_serving_and_refused_for_testing(client, before, future, "by a newer botserver")


async def test_a_bad_component_parameter_in_a_training_body_is_a_400_naming_it(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    content = TRAINING_YAML.replace(
        "pipeline: []",
        "pipeline:\n- name: WhitespaceTokenizer\n- name: CountVectorsFeaturizer\n"
        "- name: FallbackClassifier\n  threshold: high",
    )
    response = await client.post("/model/train", content=content)
    # Before: a 500 "Training failed unexpectedly" and a ValueError traceback in the log.
    body = check(rasa_spec, response, "/model/train", "post", 400)
    assert body["message"] == (  # the component's line in the body
        "request body:6: FallbackClassifier: 'threshold' must be a number, not 'high'"
    )


async def test_a_training_body_error_gives_no_line_of_a_file_the_client_never_sent(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    # The body is split into config.yml, domain.yml and data.yml, written anew: their lines
    # are not the body's. Before: "request body: domain.yml:1: 'intents' must be a list" for
    # an 'intents' on the body's 5th line.
    content = "\nlanguage: en\npipeline: []\npolicies: [{name: RulePolicy}]\nintents: greet\n"
    response = await client.post("/model/train", content=content)
    body = check(rasa_spec, response, "/model/train", "post", 400)
    assert body["message"] == "request body:5: 'intents' must be a list"


@pytest.mark.parametrize(
    ("old", "new", "marker", "json_marker"),
    [
        ("- goodbye\nresponses", "- goodbye\nslots: 3\nresponses", "slots: 3", '"slots": 3'),
        ('  - text: "Bye"', '  - txt: "Bye"', 'txt: "Bye"', '"txt": "Bye"'),
        ("  - action: utter_goodbye", "  - action: utter_goodbye\n  - foo: bar", "foo", '"foo"'),
        ("- intent: goodbye\n  examples: |", "- intent: goodbye\n  exampels: |", "exa", '"exa'),
    ],
    ids=["domain-section", "response", "rule-step", "nlu-item"],
)
async def test_a_training_body_error_names_its_line_in_the_body(
    client: httpx.AsyncClient,
    rasa_spec: RasaSpec,
    old: str,
    new: str,
    marker: str,
    json_marker: str,
) -> None:
    """As Rasa's schema errors name the body's line, in YAML or JSON. Before, the error named
    only the part (`request body: domain.yml: ...`) of a body the client never split."""
    content = TRAINING_YAML.replace(old, new)
    as_json = json.dumps(yaml.safe_load(content), indent=1)
    for sent, at in ((content, marker), (as_json, json_marker)):
        line = sent[: sent.rindex(at)].count("\n") + 1
        response = await client.post("/model/train", content=sent)
        body = check(rasa_spec, response, "/model/train", "post", 400)
        assert body["message"].startswith(f"request body:{line}: "), (line, body["message"])


async def test_a_training_body_cannot_read_the_servers_environment(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BOTSERVER_TEST_SECRET", "hunter2")
    content = TRAINING_YAML + "assistant_id: ${BOTSERVER_TEST_SECRET}\n"
    response = await client.post(
        "/model/train?save_to_default_model_directory=false", content=content
    )
    assert response.status_code == 200, response.text
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(response.content)
    metadata = read_archive(archive, tmp_path / "model")
    # Before: config.yml's ${VAR} substitution ran on the client's body, and the archive the
    # client got back carried the server's secret as its assistant_id.
    assert metadata["assistant_id"] == "${BOTSERVER_TEST_SECRET}"
    assert "hunter2" not in json.dumps(metadata)


async def test_put_model_trained_with_a_setting_now_refused_says_to_retrain(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, moodbot_model: Path, tmp_path: Path
) -> None:
    """An archive an older botserver trained, with a value its checks let through then
    (RulePolicy core_fallback_threshold: 2): a 400 that says what to do, not a 500."""
    metadata = read_archive(moodbot_model, tmp_path / "x")
    (policy,) = (tmp_path / "x" / "components" / "policies").glob("*_RulePolicy/policy.json")
    stored = json.loads(policy.read_text())
    stored["options"]["core_fallback_threshold"] = 2
    policy.write_text(json.dumps(stored))
    older = write_archive(tmp_path / "x" / "components", metadata, tmp_path, "older")
    before = (await client.get("/status")).json()["model_id"]

    response = await client.put("/model", json={"model_file": str(older)})

    body = check(rasa_spec, response, "/model", "put", 400)
    assert "'core_fallback_threshold' must be between 0 and 1, not 2" in body["message"]
    assert "retrain with `botserver train`" in body["message"]
    await still_serving_and_refused_for_testing(
        client, before, older, "retrain with `botserver train`"
    )


async def test_more_folds_than_examples_is_a_400_naming_the_counts(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Before, the client's own mistake came back as a 500 `TrainingError`."""
    nlu = (
        "pipeline: []\nnlu:\n- intent: greet\n  examples: |\n    - hi\n"
        "- intent: goodbye\n  examples: |\n    - bye\n"
    )
    response = await client.post(
        "/model/test/intents?cross_validation_folds=5",
        content=nlu,
        headers={"Content-Type": "application/x-yaml"},
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 400)
    assert "5 folds" in body["message"] and "2 examples" in body["message"]
    assert body["details"] == {"parameter": "cross_validation_folds", "in": "query"}


async def test_parse_answers_in_the_format_of_the_emulated_service(
    client: httpx.AsyncClient,
) -> None:
    """Before, `?emulation_mode=` was checked and then ignored: Rasa's own format came back
    whatever the client asked for. Rasa 3.6 answers in wit.ai, LUIS v3 and Dialogflow's."""
    own = (await client.post("/model/parse", json={"text": "hello"})).json()
    top = own["intent"]

    wit = (await client.post("/model/parse?emulation_mode=wit", json={"text": "hello"})).json()
    assert wit == {"text": "hello", "intents": [top], "entities": {}}

    luis = (await client.post("/model/parse?emulation_mode=LUIS", json={"text": "hello"})).json()
    assert luis["query"] == "hello"
    assert luis["prediction"]["normalizedQuery"] == "hello"
    assert luis["prediction"]["topIntent"] == "greet"
    assert luis["prediction"]["intents"] == {
        i["name"]: {"score": i["confidence"]} for i in own["intent_ranking"]
    }
    assert luis["prediction"]["entities"] == {"$instance": {}}

    flow = (
        await client.post("/model/parse?emulation_mode=dialogflow", json={"text": ["hello"]})
    ).json()
    assert flow["responseId"]
    assert flow["queryResult"] == {
        "queryText": "hello",
        "action": "greet",
        "parameters": {},
        "fulfillmentText": "",
        "fulfillmentMessages": [],
        "outputContexts": [],
        "intent": {"name": "greet", "displayName": "greet"},
        "intentDetectionConfidence": top["confidence"],
    }


@pytest.mark.timing
async def test_a_large_json_intent_test_set_is_read_off_the_event_loop(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, tmp_path: Path
) -> None:
    """Before, Rasa's JSON NLU format was converted on the event loop: a 7.7 MB body (100,000
    examples, under the 10 MB body limit) held every conversation and /health 0.15 s of CPU
    with the collector off (0.43 s with it on), the 3.1 MB of 40,000 sent here 70 ms. Now it
    is read in a worker thread, as the YAML format already was. The test set is read before
    the model named is looked for: one that is not there answers its 400 with no evaluation."""
    examples = [
        {"text": f"hello number {i} there friend", "intent": f"i{i % 20}", "entities": []}
        for i in range(40_000)
    ]
    body = json.dumps({"rasa_nlu_data": {"common_examples": examples}}).encode()
    del examples
    missing = tmp_path / "missing.tar.gz"
    async with loop_hold() as hold:
        response = await client.post(
            "/model/test/intents",
            params={"model": str(missing)},
            content=body,
            headers={"Content-Type": "application/json"},
        )
    check(rasa_spec, response, "/model/test/intents", "post", 400)
    assert "missing.tar.gz" in response.json()["message"]
    # 11 ms; 70 ms with the conversion on the loop
    assert hold.loop_busiest < 0.035 * hold.slowness, hold


@pytest.mark.timing
async def test_a_large_json_training_body_is_parsed_off_the_event_loop(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Before, a JSON training body was parsed on the event loop: 9 MB (under the 10 MB
    body limit) held every conversation and /health about 0.3 s before its 400."""
    body = b"[" + b",".join([b"{}"] * 3_000_000) + b"]"
    async with loop_hold() as hold:
        response = await client.post(
            "/model/train", content=body, headers={"Content-Type": "application/json"}
        )
    check(rasa_spec, response, "/model/train", "post", 400)
    assert hold.loop_busiest < 0.15 * hold.slowness, hold.loop_busiest


async def test_train_takes_rasa_2s_json_of_yaml_strings(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, tmp_path: Path
) -> None:
    """Rasa 2's training request: JSON whose `config`, `domain`, `nlu`, `stories`/`rules` and
    `responses` are each a YAML file as a string. Before, it was read as one domain with a
    key `config`: a 400 "'config' must be a mapping" that did not say what was wrong."""
    document = yaml.safe_load(TRAINING_YAML)
    as_text = lambda **part: yaml.safe_dump(part)  # noqa: E731
    body = {
        "config": as_text(
            language="en", pipeline=document["pipeline"], policies=document["policies"]
        ),
        "domain": as_text(intents=document["intents"]),
        "responses": as_text(responses=document["responses"]),
        "nlu": as_text(version="3.1", nlu=document["nlu"]),
        "stories": as_text(version="3.1", rules=document["rules"]),
        "force": False,
    }
    response = await client.post("/model/train?save_to_default_model_directory=false", json=body)
    assert response.status_code == 200, response.text
    archive = tmp_path / response.headers["filename"]
    archive.write_bytes(response.content)
    domain = read_archive(archive, tmp_path / "model")["domain"]
    assert sorted(domain["intents"]) == ["goodbye", "greet"]
    assert domain["responses"]["utter_goodbye"] == [{"text": "Bye"}]

    markdown = {**body, "nlu": "## intent:greet\n- hey\n- hello\n"}
    refused = await client.post("/model/train", json=markdown)
    error = check(rasa_spec, refused, "/model/train", "post", 400)
    assert "'nlu'" in error["message"] and "Markdown" in error["message"]
    assert error["details"] == {"parameter": "nlu", "in": "body"}

    broken = await client.post("/model/train", json={**body, "config": "pipeline: ["})
    error = check(rasa_spec, broken, "/model/train", "post", 400)
    assert error["message"].startswith(
        "The 'config' of the request body does not contain valid YAML. Error:"
    )
    assert error["details"] == {"parameter": "config", "in": "body"}
    twice = {**body, "domain": as_text(intents=["greet"], responses={"utter_greet": []})}
    error = (await client.post("/model/train", json=twice)).json()
    assert error["message"] == "'responses' is given in 'domain' and again in 'responses'."


async def test_intent_test_of_a_model_url_says_it_takes_a_path(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """Rasa fetches `?model=<url>` from its model server; we evaluate archives on the
    server's disk. Before, the URL was read as a path and the 400 named a mangled
    'http:/host/m.tar.gz' that was not found; with `callback_url`, that came only later."""
    examples = [{"text": "hi", "intent": "greet", "entities": []}]
    response = await client.post(
        "/model/test/intents?model=http://models.example/m.tar.gz&callback_url=http://x/",
        json={"rasa_nlu_data": {"common_examples": examples}},
    )
    body = check(rasa_spec, response, "/model/test/intents", "post", 400)
    assert body["message"] == (
        "'model' must be the path of a model archive on this server, not a URL "
        "('http://models.example/m.tar.gz'): load it with PUT /model, or give its path."
    )
    assert body["details"] == {"parameter": "model", "in": "query"}


async def test_a_long_name_a_training_or_test_request_repeats_is_quoted_in_brief(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """A training body's key given in two of its parts, or a `?model=` URL, is quoted by
    its first 200 characters and its length; a `?model=` path longer than any is refused
    unquoted. Before, whole: a 1 MB key a 1 MB error, a URL or path as long as the request
    line allows (64 KB) a 64 KB one (found by review)."""
    key = "k" * 1_000_000
    twice = {key: {"a": 1}, "nlu": f"? {key}\n: {{a: 2}}\n"}  # YAML's long-key syntax
    response = await client.post("/model/train", json=twice)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert error["message"].startswith("'" + "k" * 200 + "... (1,000,000 characters)' is given")
    assert len(response.content) < 2000
    url = "http://models.example/" + "m" * 50_000
    response = await client.post(
        f"/model/test/intents?model={url}", json={"rasa_nlu_data": {"common_examples": []}}
    )
    error = check(rasa_spec, response, "/model/test/intents", "post", 400)
    assert f"('{url[:200]}... (50,022 characters)')" in error["message"]
    assert len(response.content) < 2000
    # A path longer than any (as PUT /model's `model_file`): before, "No model found at"
    # quoting it whole.
    path = "/tmp/" + "m" * 30_000
    response = await client.post(
        f"/model/test/intents?model={path}", json={"rasa_nlu_data": {"common_examples": []}}
    )
    error = check(rasa_spec, response, "/model/test/intents", "post", 400)
    assert error["message"] == (
        "'model' is 30,005 characters long; a path on this server has at most 4,096."
    )
    assert error["details"] == {"parameter": "model", "in": "query"}


async def test_test_stories_lists_each_action_with_its_confidence_and_policy(
    client: httpx.AsyncClient,
) -> None:
    """Rasa's `actions` holds the action predictions only, each with the `confidence` and
    `policy` behind it. Before, it held the intents as well (`{"action": "greet", ...}`)
    and neither field."""
    stories = "stories:\n- story: greet\n  steps:\n  - intent: greet\n  - action: utter_greet\n"
    body = (await client.post("/model/test/stories", content=stories)).json()
    assert [(a["action"], a["predicted"]) for a in body["actions"]] == [
        ("utter_greet", "utter_greet"),
        ("action_listen", "action_listen"),
    ]
    for action in body["actions"]:
        assert 0.0 < action["confidence"] <= 1.0
        assert "Policy" in action["policy"]


async def test_a_training_body_that_imports_server_folders_is_a_400(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """`importers` and `imports` belong to config.yml. Before, a training body's were put in
    the domain and ignored: a 200 with a model trained without the sub-projects the client
    named. Now, as docs/configuration.md says, a 400: a sent project must hold its files."""
    body = "importers:\n- name: MultiProjectImporter\nimports:\n- /etc\n" + TRAINING_YAML
    response = await client.post("/model/train", content=body)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert error["message"].startswith("request body:3: ")  # the line of `imports:`
    assert "'imports' of the MultiProjectImporter name folders on the server" in error["message"]
    unknown = "importers:\n- name: my.CustomImporter\n" + TRAINING_YAML
    response = await client.post("/model/train", content=unknown)
    assert "CustomImporter" in check(rasa_spec, response, "/model/train", "post", 400)["message"]


@pytest.mark.parametrize(
    "callback_url",
    ["http://[::1", "http://", "http:///done", "http://receiver:99999/done", "http://a b/done"],
)
async def test_a_callback_url_no_result_can_reach_is_a_400_at_once(
    client: httpx.AsyncClient, rasa_spec: RasaSpec, callback_url: str
) -> None:
    """Before, each was a 204, and the result (of a training perhaps minutes long) went
    only to the server log: 'Could not deliver a result to the callback URL: Invalid port'."""
    examples = [{"text": "hi", "intent": "greet", "entities": []}]
    for path, kwargs in (
        ("/model/test/intents", {"json": {"rasa_nlu_data": {"common_examples": examples}}}),
        ("/model/train", {"content": TRAINING_YAML}),
    ):
        response = await client.post(path, params={"callback_url": callback_url}, **kwargs)
        body = check(rasa_spec, response, path, "post", 400)
        assert body["details"] == {"parameter": "callback_url", "in": "query"}
        assert body["message"].startswith("'callback_url' is not a URL the result can be sent to")


UNTRAINABLE_YAML = """
version: "3.1"
intents: [greet]
nlu:
- intent: greet
  examples: |
    - hi
stories:
- story: a greeting
  steps:
  - intent: greet
policies:
- name: NoSuchPolicy
"""


async def test_a_training_that_fails_or_times_out_leaves_no_temporary_folder(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`save_to_default_model_directory=false` trains into a temporary folder, removed once
    the archive is sent. Before, a training that failed (400) left it behind, empty, and one
    cut by the response timeout (503) with its trained archive, each for good."""
    import server.api.model as model_routes

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    client = await make_client(response_timeout=2.0)
    query = "/model/train?save_to_default_model_directory=false"

    failed = await client.post(query, content=UNTRAINABLE_YAML)
    assert failed.status_code == 400, failed.text
    assert list(temp.glob("botserver-trained-*")) == []

    train = model_routes._train_sync
    released = threading.Event()

    def held_train(*args: Any) -> Path:
        released.wait(60)  # past the response timeout, until the test lets it go
        return train(*args)

    monkeypatch.setattr(model_routes, "_train_sync", held_train)
    timed_out = await client.post(query, content=TRAINING_YAML)
    assert timed_out.status_code == 503, timed_out.text
    # The training goes on in its thread, and /status still counts it until it ends.
    assert (await client.get("/status")).json()["num_active_training_jobs"] == 1
    released.set()
    for _ in range(600):
        if (await client.get("/status")).json()["num_active_training_jobs"] == 0:
            break
        await asyncio.sleep(0.1)
    # The folder is removed in a thread once the training is no longer counted: waited for,
    # as a loaded host may take longer than any fixed pause to run it.
    for _ in range(600):
        if not list(temp.glob("botserver-trained-*")):
            break
        await asyncio.sleep(0.05)
    assert list(temp.glob("botserver-trained-*")) == []


async def test_an_empty_query_parameter_is_absent_as_in_rasa(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Sanic drops blank query values: `?save_to_default_model_directory=` is the default
    (true) and `?emulation_mode=` none. Before: the model went to a temporary folder,
    removed after the answer, and the parse was a 400."""
    trained = await client.post(
        "/model/train?save_to_default_model_directory=", content=TRAINING_YAML
    )
    assert trained.status_code == 200, trained.text
    assert (tmp_path / "models" / trained.headers["filename"]).is_file()
    parsed = await client.post("/model/parse?emulation_mode=", json={"text": "hello"})
    assert parsed.status_code == 200, parsed.text
    assert parsed.json()["intent"]["name"] == "greet"


async def test_a_served_model_leaves_no_extracted_archive_behind(
    moodbot_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extracted archive goes as soon as the model is built: the server answers from
    memory, and a stop, a crash or a kill leaves nothing in the temporary directory. Before,
    every stop (a restart, a deploy, each worker of --workers N) left the extracted model
    there for good: 1,139 of them in this machine's /tmp one evening."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    options = ServerOptions(
        model_path=moodbot_model,
        enable_api=True,
        endpoints={"tracker_store": {"type": "in_memory"}},
        models_dir=tmp_path / "models",
    )
    app = build_app(options)
    async with app.router.lifespan_context(app):
        assert list(temp.glob("botserver-model-*")) == []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            reply = await client.post(
                "/webhooks/rest/webhook", json={"sender": "u", "message": "I am sad"}
            )
        assert reply.status_code == 200 and reply.json(), reply.text
    assert list(temp.glob("botserver-model-*")) == []


async def test_an_entity_annotation_nested_deep_is_a_400_naming_the_data_part(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """An example's entity JSON, one object or a list of them, nested 5,000 levels deep (a
    10 KB body): it is JSON inside a YAML string, which the YAML depth limit cannot see."""
    nested = "[" * 5000 + "]" * 5000
    for markup in (
        f'{{"entity": "city", "x": {nested}}}',
        f'[{{"entity": "city"}}, {{"entity": "x", "x": {nested}}}]',
    ):
        body = TRAINING_YAML.replace("    - hey\n", f"    - hey [Paris]{markup}\n")
        train = await client.post("/model/train", content=body)
        message = check(rasa_spec, train, "/model/train", "post", 400)["message"]
        assert message.startswith("request body:16: ")  # its examples, the entry in error
        assert message.endswith("nests more than 100 levels deep")


async def test_a_put_while_endpoints_has_a_model_server_pulls_anew_and_is_a_400_without_a_model(
    moodbot_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As in Rasa (a new agent, whose fingerprint no model has), endpoints.yml's `models:`
    wins over what a PUT /model body names, and the model server is asked for its model
    without `If-None-Match`: what it serves is the model (here the loaded one: 204, nothing
    reloaded), and an answer without one (204, 304) is Rasa's 400, the model kept. Before,
    the PUT sent the loaded model's ETag and took the 304 for a success: a 204 while the
    model server offered nothing, and a client never learnt it."""
    from tests.models.test_model_server_pull import ModelServer

    served = ModelServer()
    served.behaviour.body = await asyncio.to_thread(moodbot_model.read_bytes)
    body = {"model_file": "models/other.tar.gz", "remote_storage": "aws"}
    try:
        options = ServerOptions(
            model_path=None,
            enable_api=True,
            endpoints={"models": {"url": served.url, "wait_time_between_pulls": None}},
            models_dir=tmp_path / "models",
        )
        app = build_app(options)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                before = (await client.get("/status")).json()
                loaded = app.state.services.holder.info
                with caplog.at_level(logging.WARNING):
                    put = await client.put("/model", json=body)
                asked = served.behaviour.requests[-1]["headers"]
                same = (await client.get("/status")).json()
                refusals = []
                for nothing in ("204", "304"):
                    served.behaviour.mode = nothing
                    refusals.append(await client.put("/model", json=body))
                after = (await client.get("/status")).json()
                kept = app.state.services.holder.info
    finally:
        served.stop()
    assert put.status_code == 204, put.text
    assert "If-None-Match" not in asked, asked
    assert same["model_file"] == before["model_file"] == "served-model.tar.gz"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "'model_file' ('models/other.tar.gz') and 'remote_storage' ignored" in m and "models:" in m
        for m in warned
    ), warned
    for status, refused in zip(("204", "304"), refusals, strict=True):
        assert refused.status_code == 400, refused.text
        message = refused.json()["message"]
        assert message.startswith("Agent with name 'models/other.tar.gz' could not be loaded."), (
            message
        )
        assert f"answered {status}" in message, message
    assert after["model_file"] == "served-model.tar.gz"
    assert kept is loaded  # the same ETag throughout: never loaded again


@pytest.mark.timing
async def test_a_json_body_with_a_key_given_twice_is_looked_at_again_off_the_event_loop(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """A JSON body under the size read on the loop (256 KiB) with a key given twice was read
    a third time, as YAML to name the key's line, on the event loop: 250 KB held every
    conversation and /health about 0.2 s (YAML's parser is 40 times slower than JSON's)."""
    examples = [{"text": f"hello number {i}", "intent": "greet"} for i in range(5_000)]
    body = json.dumps({"rasa_nlu_data": {"common_examples": examples}})[:-1]
    body += ',\n "rasa_nlu_data": {}}'
    assert 200_000 < len(body) < 256 * 1024
    async with loop_hold() as hold:
        response = await client.post(
            "/model/train", content=body, headers={"Content-Type": "application/json"}
        )
    message = check(rasa_spec, response, "/model/train", "post", 400)["message"]
    assert message.startswith("request body:2: the key 'rasa_nlu_data' is given twice"), message
    assert hold.loop_busiest < 0.05 * hold.slowness, hold.loop_busiest


async def test_trainings_running_at_once_hold_up_no_other_request(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each training runs on a thread of its own, as in Rasa. Before, trainings took threads
    of the pool every request's short off-loop work shares (`os.cpu_count() + 4` of them, 6
    on 2 cores): with that many running, a parse waited for one to end, minutes perhaps."""
    import server.api.model as model_routes

    train = model_routes._train_sync
    started: list[int] = []
    released = threading.Event()

    def held_train(*args: Any) -> Path:
        started.append(1)
        released.wait(60)  # until the test lets it go
        return train(*args)

    monkeypatch.setattr(model_routes, "_train_sync", held_train)
    pool_size = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor's
    query = "/model/train?save_to_default_model_directory=false"
    trainings = [
        asyncio.create_task(client.post(query, content=TRAINING_YAML)) for _ in range(pool_size)
    ]
    try:
        for _ in range(300):
            if len(started) == pool_size:
                break
            await asyncio.sleep(0.1)
        assert len(started) == pool_size
        parsed = await asyncio.wait_for(client.post("/model/parse", json={"text": "hello"}), 20)
        assert parsed.json()["intent"]["name"] == "greet"
    finally:
        released.set()
    results = await asyncio.gather(*trainings)
    assert [r.status_code for r in results] == [200] * pool_size


@pytest.mark.parametrize(
    ("query", "factor"),
    [("", None), ("&augmentation=0", 0), ("&augmentation=7", 7), ("&augmentation=many", None)],
    ids=["absent", "none", "seven", "not-a-number"],
)
async def test_train_takes_the_augmentation_factor_as_rasa(
    client: httpx.AsyncClient, tmp_path: Path, query: str, factor: int | None
) -> None:
    """`?augmentation=N` is the ML policy's `augmentation_factor`, as `botserver train
    --augmentation N` sets it (Rasa: TEDPolicy's); a value that is no integer is the default,
    with a warning, as in Rasa. Before, it was accepted and ignored."""
    body = TRAINING_YAML.replace("- name: RulePolicy", "- name: RulePolicy\n- name: TEDPolicy")
    response = await client.post(
        f"/model/train?save_to_default_model_directory=false{query}", content=body
    )
    assert response.status_code == 200, response.text
    archive = tmp_path / response.headers["filename"]
    archive.write_bytes(response.content)
    policies = read_archive(archive, tmp_path / "model")["policies"]
    assert [p.get("augmentation_factor") for p in policies] == [None, factor]


async def test_train_refuses_a_negative_augmentation_factor(
    client: httpx.AsyncClient, rasa_spec: RasaSpec
) -> None:
    """As `botserver train --augmentation -1` refuses it, before anything is trained."""
    response = await client.post("/model/train?augmentation=-1", content=TRAINING_YAML)
    error = check(rasa_spec, response, "/model/train", "post", 400)
    assert error["details"] == {"parameter": "augmentation", "in": "query"}
    assert (await client.get("/status")).json()["num_active_training_jobs"] == 0
