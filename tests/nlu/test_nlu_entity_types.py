"""The EntityTypeFeaturizer: entity types in context for the intent classifier, learned from
jackknifed CRF predictions."""

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.errors import InvalidConfig
from server.nlu.dense_featurizer import WIDTH as DENSE_WIDTH
from server.nlu.dense_featurizer import dense_available
from server.nlu.entity_types import (
    EntityTypeFeaturizer,
    carrier_words,
    jackknife_entities,
    typed_words,
)
from server.nlu.message import Message
from server.nlu.pipeline import NLUPipeline
from server.nlu.tokenizer import tokenize
from server.training.nlu_yaml import read_nlu_yaml
from tests.line_budget import lines_run_in


def test_each_entity_span_becomes_one_type_word():
    text = "play the weeknd on spotify and deezer now"
    entities = [
        {"entity": "artist", "start": 5, "end": 15},
        {"entity": "service", "start": 19, "end": 26},
        {"entity": "service", "start": 31, "end": 37},
    ]
    assert typed_words(tokenize(text), entities) == [
        "play",
        "@artist",
        "on",
        "@service",
        "and",
        "@service",
        "now",
    ]


# Odd and even examples put different entity types in the same context: a CRF that never
# saw a sentence tags it with the other parity's type.
ALTERNATING = "\n".join(
    f"    - play [{'foo' if i % 2 == 0 else 'bar'}]({'artist' if i % 2 == 0 else 'track'}) now"
    for i in range(12)
)
JACKKNIFE_DATA = f"""
nlu:
- intent: play
  examples: |
{ALTERNATING}
"""


def test_training_entities_come_from_a_crf_that_did_not_see_the_sentence():
    data = read_nlu_yaml(JACKKNIFE_DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    found = jackknife_entities(messages, data, folds=2, crf_config={})
    types = [[e["entity"] for e in entities] for entities in found]
    assert types == [["track"] if i % 2 == 0 else ["artist"] for i in range(12)]


DATA = """
nlu:
- intent: find_movie
  examples: |
    - find [the matrix](movie_name)
    - when is [alien](movie_name) showing
    - find [heat](movie_name) at the cinema
    - i want to see [up](movie_name)
    - find times for [jaws](movie_name)
    - when does [the thing](movie_name) start
- intent: find_book
  examples: |
    - find [emma](book_name)
    - find the novel [dune](book_name)
    - i want to read [it](book_name)
    - find [ulysses](book_name) please
    - where can i get [beloved](book_name)
    - find a copy of [persuasion](book_name)
- intent: greet
  examples: |
    - hello there
    - good morning
"""

PIPELINE: list[dict[str, Any]] = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CRFEntityExtractor"},
    {"name": "EntityTypeFeaturizer", "folds": 3},
    {"name": "LogisticRegressionClassifier"},
]


def test_the_classifier_reads_the_type_block_and_it_survives_persistence(tmp_path: Path):
    pipeline = NLUPipeline.train(read_nlu_yaml(DATA), PIPELINE)
    featurizer = next(c for k, c in pipeline._components if k == "EntityTypeFeaturizer")
    classifier = next(c for k, c in pipeline._components if k == "IntentClassifier")
    words = next(c for k, c in pipeline._components if k == "CountVectorsFeaturizer")
    assert featurizer.vectors_ is not None and featurizer.vectors_.width > 0
    assert classifier.model_.weights.shape[0] == words.width + featurizer.vectors_.width
    assert featurizer.sources == ["CRFEntityExtractor"]
    message = Message("find jaws", tokenize("find jaws"))
    message.entities = [
        {"entity": "movie_name", "start": 5, "end": 9, "extractor": "CRFEntityExtractor"}
    ]
    featurizer.process(message)
    indices, values, width = message.blocks[-1]
    assert width == featurizer.vectors_.width and indices and values
    # The same span from another extractor (regex, lookup, Duckling) is not what it learned.
    other = Message("find jaws", tokenize("find jaws"))
    other.entities = [{"entity": "movie_name", "start": 5, "end": 9, "extractor": "regex"}]
    featurizer.process(other)
    assert other.blocks[-1][0] != indices
    pipeline.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("find heat", "find the novel emma", "hello there"):
        assert reloaded.parse(text) == pipeline.parse(text)


def test_idle_without_entities():
    data = read_nlu_yaml(
        """
nlu:
- intent: greet
  examples: |
    - hello there
- intent: bye
  examples: |
    - see you
"""
    )
    featurizer = EntityTypeFeaturizer({})
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    featurizer.train(messages, data)
    assert featurizer.vectors_ is None and all(not m.blocks for m in messages)
    pipeline = NLUPipeline.train(data, PIPELINE)
    assert pipeline.parse("hello there")["intent"]["name"] == "greet"


def test_without_a_crf_before_it_training_fails_with_the_reason():
    pipeline = [c for c in PIPELINE if c["name"] != "CRFEntityExtractor"]
    with pytest.raises(InvalidConfig, match="needs a CRF entity extractor"):
        NLUPipeline.train(read_nlu_yaml(DATA), pipeline)


@pytest.mark.skipif(not dense_available(), reason="needs the dense extra: pip install '.[dense]'")
def test_with_sentence_embeddings_both_blocks_reach_the_classifier(tmp_path: Path):
    # bench/nlu.py's dense_entity_types: DIET split so its CRF runs before the featurizer.
    pipeline = NLUPipeline.train(
        read_nlu_yaml(DATA),
        [
            {"name": "WhitespaceTokenizer"},
            {"name": "CountVectorsFeaturizer"},
            {"name": "DenseFeaturizer"},
            {"name": "DIETClassifier", "intent_classification": False},
            {"name": "EntityTypeFeaturizer", "folds": 3},
            {"name": "DIETClassifier", "entity_recognition": False},
        ],
    )
    components = dict(pipeline._components)
    featurizer, words = components["EntityTypeFeaturizer"], components["CountVectorsFeaturizer"]
    assert featurizer.sources == ["DIETClassifier"]
    width = words.width + DENSE_WIDTH + featurizer.vectors_.width
    assert components["IntentClassifier"].model_.weights.shape[0] == width
    pipeline.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("find heat", "find the novel emma", "hello there"):
        assert reloaded.parse(text) == pipeline.parse(text)


def test_a_crf_trained_by_sgd_is_a_model_of_its_own_that_still_tags():
    """`algorithm: l2sgd` trains crfsuite's SGD instead of L-BFGS (about a third of the CPU
    on SNIPS): a different model, the same entities on what it learned."""
    from server.nlu.crf_extractor import CRFEntityExtractor

    data = read_nlu_yaml(DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    default, sgd = CRFEntityExtractor({}), CRFEntityExtractor({"algorithm": "l2sgd"})
    default.train(messages, data)
    sgd.train(messages, data)
    assert sgd.model_ is not None and sgd.model_ != default.model_
    message = Message("find the novel dune", tokenize("find the novel dune"))
    sgd.process(message)
    assert [(e["entity"], e["value"]) for e in message.entities] == [("book_name", "dune")]


def test_a_crf_trained_by_sgd_twice_is_the_same_model_twice():
    """crfsuite's SGD shuffles with the C library's rand(): unseeded, a second training in
    the same process (a server training again) gave another model from the same data."""
    from server.nlu.crf_extractor import CRFEntityExtractor

    data = read_nlu_yaml(DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    models = []
    for _ in range(3):
        crf = CRFEntityExtractor({"algorithm": "l2sgd"})
        crf.train(messages, data)
        models.append(crf.model_)
    assert models[0] == models[1] == models[2]


@contextlib.contextmanager
def another_thread_drawing_from_rand() -> Iterator[None]:
    """A thread calling the C library's rand() in a loop, given the interpreter at each of
    crfsuite's log lines during a training (as onnxruntime's pool threads draw meanwhile)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with called_in_a_thread(ctypes.CDLL(None).rand):
            yield
    finally:
        sys.setswitchinterval(interval)


@contextlib.contextmanager
def called_in_a_thread(call: Callable[[], object]) -> Iterator[None]:
    """`call()` again and again in a thread of its own while the block runs."""
    stop = threading.Event()

    def calling() -> None:
        while not stop.is_set():
            call()

    caller = threading.Thread(target=calling)
    caller.start()
    try:
        yield
    finally:
        stop.set()
        caller.join()


def test_a_crf_trained_by_sgd_is_the_same_while_another_thread_draws_from_rand():
    """Seeding rand() was not enough: any other thread of the process drawing from the C
    library's rand() meanwhile (onnxruntime's thread pool does, left by the static table's
    or the dense featurizer's training) moved crfsuite's shuffles, so two trainings of the
    same SNIPS data gave different CRFs (entity F1 92.41-92.88 %)."""
    from server.nlu.crf_extractor import CRFEntityExtractor

    data = read_nlu_yaml(DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    alone = CRFEntityExtractor({"algorithm": "l2sgd"})
    alone.train(messages, data)
    models = []
    with another_thread_drawing_from_rand():
        for _ in range(3):
            crf = CRFEntityExtractor({"algorithm": "l2sgd"})
            crf.train(messages, data)
            models.append(crf.model_)
    assert models == [alone.model_] * 3


@contextlib.contextmanager
def a_thread_inside_rand() -> Iterator[None]:
    """A thread inside the C library's rand() most of the time: it calls it from C, as
    lfind(3)'s comparison over a million bytes (rand() answers "equal", 0, about once in
    2**31 calls), with no Python between two calls. Two threads calling rand() from Python
    through ctypes were inside it so seldom that a fork met one there once in dozens."""
    libc = ctypes.CDLL(None)
    lfind = libc.lfind
    lfind.restype = ctypes.c_void_p
    lfind.argtypes = [ctypes.c_void_p] * 2 + [ctypes.POINTER(ctypes.c_size_t)]
    lfind.argtypes += [ctypes.c_size_t, ctypes.c_void_p]
    compare = ctypes.cast(libc.rand, ctypes.c_void_p)
    elements = ctypes.create_string_buffer(1_000_000)
    key = ctypes.create_string_buffer(1)
    size = ctypes.c_size_t(len(elements))
    # (ctypes lets go of the GIL for the call)
    with called_in_a_thread(lambda: lfind(key, elements, ctypes.byref(size), 1, compare)):
        yield


@pytest.mark.slow
@pytest.mark.timeout(60)  # a hang is the failure watched for: the suite's 300 s is longer
def test_sgd_crfs_train_while_another_thread_is_inside_rand():
    """A training forked while another thread was inside the C library's rand() gave a child
    that waited for ever on rand()'s lock (held by a thread the child does not have): the
    training never returned. With this thread inside rand(), 17 of 30 such forked trainings
    hung (24 of 40 with two threads): all ten trainings here return from forks about once in
    4,600 runs (once in 120 if only 38 % of forks hung). Two threads calling rand() from
    Python through ctypes made a fork hang only after 1 and after 28 trainings: the test
    trained 60 times then, 9-10 s of CPU."""
    from server.nlu.crf_extractor import CRFEntityExtractor

    data = read_nlu_yaml(DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    models = set()
    with a_thread_inside_rand():
        for _ in range(10):
            crf = CRFEntityExtractor({"algorithm": "l2sgd", "max_iterations": 1})
            crf.train(messages, data)
            models.add(crf.model_)
    assert len(models) == 1 and None not in models


@pytest.mark.parametrize(
    ("program", "said"),
    [
        (
            "echo 'Traceback ...' >&2; echo 'MemoryError: no room' >&2; exit 1",
            "MemoryError: no room",
        ),
        ("kill -9 $$", "killed by SIGKILL"),
    ],
)
def test_an_sgd_training_that_fails_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program: str, said: str
):
    """The training process's own error (its last line) or the signal that killed it (the
    kernel's out-of-memory killer) reaches the user, not a bare exit status."""
    from server.errors import TrainingError
    from server.nlu.crf_extractor import CRFEntityExtractor

    interpreter = tmp_path / "python"
    interpreter.write_text(f"#!/bin/sh\n{program}\n")
    interpreter.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter))
    data = read_nlu_yaml(DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    with pytest.raises(TrainingError, match=f"SGD training failed: {said}$"):
        CRFEntityExtractor({"algorithm": "l2sgd"}).train(messages, data)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "missing"))
    with pytest.raises(TrainingError, match="SGD training could not start"):
        CRFEntityExtractor({"algorithm": "l2sgd"}).train(messages, data)


_LONG_TRAINING = """
import random, sys
from server.nlu.crf_extractor import CRFEntityExtractor
from server.nlu.message import Message
from server.nlu.tokenizer import tokenize
from server.training.nlu_yaml import read_nlu_yaml
rng = random.Random(0)
words = [f"w{i}" for i in range(300)]
lines = []
for _ in range(4000):
    sentence = rng.sample(words, 8)
    k = rng.randrange(8)  # nothing to learn: SGD goes on for thousands of passes
    sentence[k] = f"[{sentence[k]}](thing)"
    lines.append("    - " + " ".join(sentence))
data = read_nlu_yaml("nlu:\\n- intent: a\\n  examples: |\\n" + "\\n".join(lines) + "\\n")
messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
CRFEntityExtractor({"algorithm": "l2sgd", "max_iterations": 100_000}).train(messages, data)
"""


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.timing
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the parent's death signal is Linux's")
def test_an_sgd_training_ends_with_the_process_that_started_it():
    """A server killed (SIGKILL, the OOM killer) in the middle of an SGD training left the
    training process running for nobody until its last pass (seconds to minutes of CPU)."""
    import subprocess

    from tests.loop_lag import paced

    root = Path(__file__).resolve().parents[2]
    trainer = subprocess.Popen([sys.executable, "-c", _LONG_TRAINING], cwd=root)
    try:
        while not (children := _children(trainer.pid)):
            assert trainer.poll() is None, "the training ended before it could be killed"
            time.sleep(0.05)
        [child] = children
        time.sleep(0.5)  # the training process is past its start
        trainer.kill()
        trainer.wait()
        gone_by = time.monotonic() + paced(2)
        while _running(child) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not _running(child)
    finally:
        trainer.kill()
        trainer.wait()
        for child in children:
            if _running(child):
                os.kill(child, signal.SIGKILL)


def test_a_pipeline_with_sgd_crfs_trained_twice_persists_the_same_files(tmp_path: Path):
    """The same data and config give the same model files, the jackknife CRFs' typed words
    and the classifier's weights included, whatever else the process draws meanwhile."""
    config: list[dict[str, Any]] = [
        {"name": "WhitespaceTokenizer"},
        {"name": "CountVectorsFeaturizer"},
        {"name": "CRFEntityExtractor", "algorithm": "l2sgd"},
        {"name": "EntityTypeFeaturizer", "algorithm": "l2sgd", "folds": 2, "carrier_weight": 0.5},
        {"name": "DIETClassifier", "entity_recognition": False},
    ]
    data = read_nlu_yaml(DATA)
    NLUPipeline.train(data, config).persist(tmp_path / "first")
    with another_thread_drawing_from_rand():
        NLUPipeline.train(data, config).persist(tmp_path / "second")
    first = {f.name: f.read_bytes() for f in (tmp_path / "first").iterdir()}
    second = {f.name: f.read_bytes() for f in (tmp_path / "second").iterdir()}
    assert any(name.endswith(".crfsuite") for name in first)
    assert first == second


def test_the_jackknife_crfs_train_with_the_featurizers_algorithm():
    featurizer = EntityTypeFeaturizer({"algorithm": "l2sgd", "max_iterations": 20})
    assert featurizer.crf_config == {"algorithm": "l2sgd", "max_iterations": 20}
    data = read_nlu_yaml(JACKKNIFE_DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    found = jackknife_entities(messages, data, folds=2, crf_config=featurizer.crf_config)
    types = [[e["entity"] for e in entities] for entities in found]
    assert types == [["track"] if i % 2 == 0 else ["artist"] for i in range(12)]


def test_the_carrier_is_the_words_around_the_spans_each_span_one_mark():
    text = "i want to see fear chamber at the grand"
    entities = [
        {"entity": "movie_name", "start": 14, "end": 26},
        {"entity": "location_name", "start": 30, "end": 39},
    ]
    assert carrier_words(tokenize(text), entities) == [
        "^",
        "i",
        "want",
        "to",
        "see",
        "_",
        "at",
        "_",
        "$",
    ]


def test_a_carrier_weight_adds_the_carrier_block_which_survives_persistence(tmp_path: Path):
    with_carrier = [
        {**c, "carrier_weight": 0.5} if c["name"] == "EntityTypeFeaturizer" else c for c in PIPELINE
    ]
    pipeline = NLUPipeline.train(read_nlu_yaml(DATA), with_carrier)
    featurizer = next(c for k, c in pipeline._components if k == "EntityTypeFeaturizer")
    classifier = next(c for k, c in pipeline._components if k == "IntentClassifier")
    words = next(c for k, c in pipeline._components if k == "CountVectorsFeaturizer")
    assert featurizer.vectors_ is not None and featurizer.carrier_vectors_ is not None
    assert "^ find _" in featurizer.carrier_vectors_.vocabulary_
    assert classifier.model_.weights.shape[0] == (
        words.width + featurizer.vectors_.width + featurizer.carrier_vectors_.width
    )
    message = Message("find jaws", tokenize("find jaws"))
    message.entities = [
        {"entity": "movie_name", "start": 5, "end": 9, "extractor": "CRFEntityExtractor"}
    ]
    featurizer.process(message)
    indices, values, width = message.blocks[-1]
    assert width == featurizer.carrier_vectors_.width
    # TF-IDF, L2-normalised, times the weight.
    assert sum(v * v for v in values) == pytest.approx(0.25)
    pipeline.persist(tmp_path)
    reloaded = NLUPipeline.load(tmp_path)
    for text in ("find heat", "find the novel emma", "hello there"):
        assert reloaded.parse(text) == pipeline.parse(text)
    # Off by default: no carrier block.
    plain = NLUPipeline.train(read_nlu_yaml(DATA), PIPELINE)
    plain_featurizer = next(c for k, c in plain._components if k == "EntityTypeFeaturizer")
    assert plain_featurizer.carrier_vectors_ is None


def test_a_parse_gives_the_blocks_training_gives_the_same_words():
    """A parse featurizes the typed and carrier words as plain words; training (and parsing
    before) built a Message of Tokens for them: the same blocks, for hostile texts too."""
    from server.nlu.entity_types import _carrier_message, _scaled, _typed_message
    from tests.nlu.test_nlu_components import HOSTILE_TEXTS

    with_carrier = [
        {**c, "carrier_weight": 0.5} if c["name"] == "EntityTypeFeaturizer" else c for c in PIPELINE
    ]
    pipeline = NLUPipeline.train(read_nlu_yaml(DATA), with_carrier)
    featurizer = next(c for k, c in pipeline._components if k == "EntityTypeFeaturizer")
    assert featurizer.vectors_ is not None and featurizer.carrier_vectors_ is not None
    source = featurizer.sources[0]
    for text in [*HOSTILE_TEXTS, "find jaws", "FIND the Novel emma"]:
        tokens = tokenize(text)
        entities = [
            {"entity": "movie_name", "start": t.start, "end": t.end, "extractor": source}
            for t in tokens[1::2]
        ]
        message = Message(text, tokens, entities=entities)
        featurizer.process(message)
        typed, carrier = _typed_message(tokens, entities), _carrier_message(tokens, entities)
        featurizer.vectors_.process(typed)
        featurizer.carrier_vectors_.process(carrier)
        assert message.blocks == [
            _scaled(typed.blocks[-1], featurizer.weight),
            _scaled(carrier.blocks[-1], featurizer.carrier_weight),
        ]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"carrier_weight": "high"}, "carrier_weight"),
        ({"carrier_weight": [1]}, "carrier_weight"),
        ({"carrier_weight": -1}, "carrier_weight"),
        ({"carrier_weight": float("inf")}, "carrier_weight"),
        ({"weight": "half"}, "weight"),
        ({"folds": "five"}, "folds"),
        ({"folds": 2.5}, "folds"),
        ({"max_ngram": "three"}, "max_ngram"),
    ],
)
def test_bad_options_are_config_errors_naming_the_component(options: dict[str, Any], key: str):
    # Was a ValueError or TypeError from float()/int() (a traceback), or, for a negative or
    # infinite carrier_weight, silently no carrier or a block of inf features.
    pipeline = [
        {"name": "WhitespaceTokenizer"},
        {"name": "CRFEntityExtractor"},
        {"name": "EntityTypeFeaturizer", **options},
        {"name": "IntentClassifier"},
    ]
    with pytest.raises(InvalidConfig, match=f"EntityTypeFeaturizer: '{key}'"):
        NLUPipeline.check(pipeline)


class _Counted(int):
    """An offset that counts how often it is compared."""

    comparisons = 0

    def _count(self, other: object, result: bool) -> bool:
        _Counted.comparisons += 1
        return result

    def __lt__(self, other: object) -> bool:
        return self._count(other, int(self) < int(other))  # type: ignore[call-overload]

    def __gt__(self, other: object) -> bool:
        return self._count(other, int(self) > int(other))  # type: ignore[call-overload]

    def __le__(self, other: object) -> bool:
        return self._count(other, int(self) <= int(other))  # type: ignore[call-overload]

    def __ge__(self, other: object) -> bool:
        return self._count(other, int(self) >= int(other))  # type: ignore[call-overload]


@pytest.mark.parametrize("words", [typed_words, carrier_words])
def test_a_long_message_full_of_entities_costs_comparisons_in_proportion(words: Any):
    # 50,000 numbers fit in the 100,000 characters a message may hold, and a CRF trained on
    # `[3](count)` tags each one: each token used to scan the spans before its own (n²/2
    # comparisons, minutes of CPU for one parse).
    n = 2000
    text = " ".join(["3"] * n)
    tokens = tokenize(text)
    entities = [
        {"entity": "count", "start": _Counted(t.start), "end": _Counted(t.end)} for t in tokens
    ]
    _Counted.comparisons = 0
    found = words(tokens, entities)
    assert found.count("@count" if words is typed_words else "_") == n
    assert _Counted.comparisons < 50 * n


def test_more_folds_than_messages_are_one_message_per_fold():
    # Before, `folds: 1000000000` went round a billion folds, each reading every message.
    from server.nlu import entity_types

    data = read_nlu_yaml(JACKKNIFE_DATA)
    messages = [Message(e.text, tokenize(e.text)) for e in data.examples]
    found: list[Any] = []

    def jackknife() -> None:
        found.extend(jackknife_entities(messages, data, folds=1_000_000_000, crf_config={}))

    lines_run_in(entity_types.__file__, jackknife, 20_000)
    assert found == jackknife_entities(messages, data, folds=len(messages), crf_config={})
