"""Archives whose members pass the archive checks but whose component state is broken or
hostile (found by fuzzing: docs/security.md, "Fuzzing"): loading refuses each with a
ModelError that says what is wrong, instead of a KeyError or TypeError traceback at load,
or a model that loads and then fails every turn."""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.errors import ModelError
from server.nlu.crfsuite_file import check_crfsuite_model
from server.training.evaluate import load_model_file
from server.training.train import train
from tests.shared_data import BOTS

REPO = Path(__file__).resolve().parents[2]
CRF_MODEL = "nlu/c5_model.crfsuite"  # formbot's CRFEntityExtractor

Edit = Callable[[Any], Any]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("broken-state-models")
    # moodbot with nearest neighbours blended into plain TF-IDF features (its classifier is
    # component 3 either way).
    blended = out / "moodbot-blended"
    shutil.copytree(BOTS / "moodbot", blended)
    config = (blended / "config.yml").read_text()
    options = "epochs: 1\n    neighbour_weight: 0.5\n    feature_weighting: none\n"
    (blended / "config.yml").write_text(config.replace("epochs: 1\n", options, 1))
    trained = {}
    for bot in ("moodbot", "formbot", "blended", "responseselectorbot"):
        folder = blended if bot == "blended" else BOTS / bot
        result = train(folder / "config.yml", folder / "domain.yml", [folder / "data"], out / bot)
        trained[bot] = Path(result.path)
    return trained


def rewritten(archive: Path, member: str, edit: Edit, out: Path) -> Path:
    """A copy of `archive` whose JSON `member` is `edit(parsed)`, or `edit(bytes)`'s bytes."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"broken-{archive.name}"
    with tarfile.open(archive) as source, tarfile.open(target, "w:gz") as copy:
        for info in source.getmembers():
            handle = source.extractfile(info)
            data = handle.read() if handle is not None else None
            if info.name == f"components/{member}":
                assert data is not None
                changed = edit(json.loads(data)) if member.endswith(".json") else edit(data)
                data = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
                info.size = len(data)
            copy.addfile(info, io.BytesIO(data) if data is not None else None)
    return target


def drop(key: str) -> Edit:
    return lambda value: {k: v for k, v in value.items() if k != key}


def setting(path: tuple[Any, ...], new: Any) -> Edit:
    def edit(value: Any) -> Any:
        inner = value
        for part in path[:-1]:
            inner = inner[part]
        inner[path[-1]] = new
        return value

    return edit


def first_vocabulary_column(new: Any) -> Edit:
    def edit(vocabulary: dict[str, Any]) -> dict[str, Any]:
        vocabulary[next(iter(vocabulary))] = new
        return vocabulary

    return edit


def npy_edit(change: Callable[[np.ndarray], np.ndarray]) -> Edit:
    """An .npy member rewritten as `change(array)`."""

    def edit(data: bytes) -> bytes:
        out = io.BytesIO()
        np.save(out, change(np.load(io.BytesIO(data), allow_pickle=False)), allow_pickle=False)
        return out.getvalue()

    return edit


def npy_first_value(new: float) -> Edit:
    """An .npy member whose first value is `new` (NaN, infinity)."""

    def change(array: np.ndarray) -> np.ndarray:
        array.flat[0] = new
        return array

    return npy_edit(change)


CASES = [
    # (bot, member, edit, what the error says)
    ("moodbot", "policies/ensemble.json", lambda _: b"", "cannot read the policies' ensemble"),
    ("moodbot", "policies/ensemble.json", setting(("policies",), 7), "ensemble.json is malformed"),
    (
        "moodbot",
        "policies/0_MLPolicy/policy.json",
        drop("learned"),
        r"policy 0 \(MLPolicy\) cannot load: KeyError\('learned'\)",
    ),
    (
        "moodbot",
        "policies/0_MLPolicy/policy.json",
        setting(("learned", "classes"), [0, "x"]),
        "TEDPolicy classes holds an index out of range",
    ),
    (
        "moodbot",
        "policies/0_MLPolicy/vocabulary.json",
        first_vocabulary_column("utter_greet"),
        "TEDPolicy: its weights do not match its vocabulary",
    ),
    # Loaded before, then every turn's prediction failed with an IndexError.
    (
        "moodbot",
        "policies/0_MLPolicy/vocabulary.json",
        first_vocabulary_column(10**6),
        "TEDPolicy: its weights do not match its vocabulary",
    ),
    (
        "moodbot",
        "policies/2_RulePolicy/policy.json",
        setting(("learned", "loop_unhappy_paths"), "utter_greet"),
        r"policy 2 \(RulePolicy\) cannot load: AttributeError",
    ),
    (
        "moodbot",
        "nlu/pipeline.json",
        setting(("components", 0, "key"), []),
        r"unknown NLU component \[\] in the model",
    ),
    ("moodbot", "domain.json", lambda _: b"\xfd", "cannot read the archive's domain.json"),
    ("moodbot", "domain.json", setting(("intents",), 1), "domain.json: 'intents' must be a list"),
    # Loaded before, then every parse (or prediction) was a 500: NaN and infinity in the
    # answer, which JSON cannot hold.
    ("moodbot", "nlu/c3_weights.npy", npy_first_value(np.nan), "c3_weights.npy holds NaN or inf"),
    ("moodbot", "nlu/c3_bias.npy", npy_first_value(np.inf), "c3_bias.npy holds NaN or inf"),
    ("moodbot", "nlu/c1_idf.npy", npy_first_value(-np.inf), "c1_idf.npy holds NaN or inf"),
    (
        "moodbot",
        "policies/0_MLPolicy/coef.npy",
        npy_first_value(np.nan),
        "coef.npy holds NaN or inf",
    ),
    # Loaded before (Python's JSON reads NaN and Infinity): every parse answered NaN
    # confidences (a 500), or a threshold compared false with every confidence.
    (
        "moodbot",
        "nlu/pipeline.json",
        setting(("components", 3, "state", "temperature"), float("nan")),
        "component state pipeline.json holds NaN, which is not JSON",
    ),
    (
        "moodbot",
        "policies/2_RulePolicy/policy.json",
        setting(("options", "core_fallback_threshold"), float("inf")),
        "component state policy.json holds Infinity, which is not JSON",
    ),
    (
        "moodbot",
        "nlu/c1_vocabulary.json",
        lambda _: b'["a", -Infinity]',
        "component state c1_vocabulary.json holds -Infinity, which is not JSON",
    ),
    (
        "moodbot",
        "policies/ensemble.json",
        lambda _: b'{"policies": [], "warnings": [], "x": 1e400}',
        r"the policies' ensemble.json holds 1e400 \(beyond a double\), which is not JSON",
    ),
    # Loaded before, then the first turn that uttered it failed.
    (
        "formbot",
        "domain.json",
        setting(("responses", "utter_ask_cuisine", 0, "text"), 1),
        "the archive's domain.json: 'text' in a variation of response 'utter_ask_cuisine'",
    ),
    # Loaded before, then every parse answered NaN: a float64 1e300 passed the NaN/inf
    # check and became inf as the float32 the featurizer reads.
    (
        "blended",
        "nlu/c1_idf.npy",
        npy_edit(lambda a: a.astype(np.float64) * 1e300),
        "component state c1_idf.npy holds values beyond a float32",
    ),
    # An int64 2**32 + 1 read as an int32 wrapped to 1 and passed the bounds checks.
    (
        "blended",
        "nlu/c3_nn_indices.npy",
        npy_edit(lambda a: a.astype(np.int64) + 2**32),
        "component state c3_nn_indices.npy holds values beyond an int32",
    ),
    # Loaded before, then a parse with a word past the weights' last row was an IndexError.
    (
        "responseselectorbot",
        "nlu/c3_weights.npy",
        npy_edit(lambda a: a[:3]),
        "ResponseSelector has weights for 3 features, its featurizers give [0-9]+",
    ),
    # Loaded before, then a message of those words divided by a length of 0 (a 500).
    (
        "moodbot",
        "nlu/c1_idf.npy",
        npy_edit(np.zeros_like),
        "CountVectorsFeaturizer: c1_idf.npy holds IDF values below 1",
    ),
    # Training refuses these; loaded, they ranked the intents flat or backwards.
    (
        "blended",
        "nlu/pipeline.json",
        setting(("components", 3, "state", "temperature"), -5.0),
        "linear model temperature must be a number above 0",
    ),
    (
        "responseselectorbot",
        "nlu/pipeline.json",
        setting(("components", 3, "state", "temperature"), 0),
        "linear model temperature must be a number above 0",
    ),
]


@pytest.mark.parametrize(("bot", "member", "edit", "message"), CASES)
def test_broken_component_state_is_a_clear_model_error(
    archives: dict[str, Path], tmp_path: Path, bot: str, member: str, edit: Edit, message: str
) -> None:
    broken = rewritten(archives[bot], member, edit, tmp_path)
    with pytest.raises(ModelError, match=message):
        load_model_file(broken)


def test_the_untouched_archives_load(archives: dict[str, Path], tmp_path: Path) -> None:
    for bot, archive in archives.items():
        copy = rewritten(archive, "domain.json", lambda value: value, tmp_path)
        assert load_model_file(copy).domain.intents, bot


def parsed(archive: Path, text: str) -> dict[str, Any]:
    """`text` parsed by the model in `archive`, checked to be JSON an answer can carry."""
    model = load_model_file(archive)
    assert model.nlu is not None
    result = model.nlu.parse(text)
    json.dumps(result, allow_nan=False)  # NaN: the HTTP API's answer was a 500
    return result


def test_huge_finite_weights_with_neighbours_still_parse_to_finite_confidences(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    """Weights of 1e20 are finite float32s a crafted archive can hold; the neighbour blend
    summed the squares of such scores in float32 (inf, then NaN confidences on every
    parse)."""
    scaled = npy_edit(lambda a: (a * np.float32(1e20)).astype(np.float32))
    broken = rewritten(archives["blended"], "nlu/c3_weights.npy", scaled, tmp_path)
    confidences = [entry["confidence"] for entry in parsed(broken, "hello")["intent_ranking"]]
    assert math.isclose(sum(confidences), 1.0)


def test_a_huge_temperature_puts_all_the_confidence_on_the_best_response(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    """1e300 is a temperature training accepts: scores times it were inf, and the softmax
    answered NaN (a 500 on every parse)."""
    hot = setting(("components", 3, "state", "temperature"), 1e300)
    broken = rewritten(archives["responseselectorbot"], "nlu/pipeline.json", hot, tmp_path)
    scaled = npy_edit(lambda a: (a * np.float32(1e10)).astype(np.float32))
    broken = rewritten(broken, "nlu/c3_weights.npy", scaled, tmp_path / "scaled")
    response = parsed(broken, "what is your name")["response_selector"]["default"]["response"]
    assert (response["intent_response_key"], response["confidence"]) == ("chitchat/ask_name", 1.0)


def load_and_tag_in_a_subprocess(archive: Path) -> subprocess.CompletedProcess[str]:
    """Loads `archive` and parses a message in a child process: a crash in C code is then a
    failed test, not a dead test run. Prints the ModelError if loading refuses it."""
    code = (
        "import sys\n"
        "from server.errors import ModelError\n"
        "from server.training.evaluate import load_model_file\n"
        "try:\n"
        "    model = load_model_file(sys.argv[1])\n"
        "except ModelError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    model.nlu.parse('a table for 4 people serving italian food')\n"
        "    print('loaded')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(archive)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def truncated(data: bytes) -> bytes:
    return data[:2067]


def labels_database_past_the_end(data: bytes) -> bytes:
    """The size field of the labels' string database says it runs past the end of the
    file: libcrfsuite then reads no labels, and tagging dereferenced a null label."""
    off_labels = struct.unpack_from("<I", data, 32)[0]
    changed = bytearray(data)
    struct.pack_into("<I", changed, off_labels + 4, len(data))
    return bytes(changed)


@pytest.mark.parametrize("edit", [truncated, labels_database_past_the_end])
def test_a_broken_crfsuite_model_is_refused_instead_of_crashing_the_process(
    archives: dict[str, Path], tmp_path: Path, edit: Edit
) -> None:
    """Found by fuzzing: libcrfsuite trusts every offset in the file; before, loading (or
    the first message tagged with) such a model killed the server with a segmentation
    fault."""
    broken = rewritten(archives["formbot"], CRF_MODEL, edit, tmp_path)
    result = load_and_tag_in_a_subprocess(broken)
    assert result.returncode == 0, result.stderr[-500:]
    assert "DIETClassifier: invalid crfsuite model (" in result.stdout  # its entity part


def test_a_crfsuite_model_counting_one_label_it_does_not_hold_says_so_in_the_singular(
    archives: dict[str, Path],
) -> None:
    """Before: "the labels database does not hold 1 records"."""
    with tarfile.open(archives["formbot"]) as archive:
        handle = archive.extractfile(f"components/{CRF_MODEL}")
        assert handle is not None
        changed = bytearray(handle.read())
    struct.pack_into("<I", changed, 20, 1)  # the header's count of labels
    with pytest.raises(ModelError) as caught:
        check_crfsuite_model(bytes(changed), "CRF")
    assert str(caught.value) == (
        "CRF: invalid crfsuite model (the labels database does not hold 1 record)"
    )


def test_the_untouched_crfsuite_model_loads_and_tags(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    copy = rewritten(archives["formbot"], CRF_MODEL, lambda data: data, tmp_path)
    result = load_and_tag_in_a_subprocess(copy)
    assert result.stdout == "loaded\n", result.stderr[-500:]


ODD_VALUES: list[Any] = [None, -1, 2**70, 1.5, True, "", "utter_greet", [], [None], {}, {"a": 1}]


def odd_edit(rng: random.Random) -> Edit:
    """Replaces one value found by a random walk into the JSON with one of another type."""

    def edit(value: Any) -> Any:
        parent: Any = None
        key: Any = None
        inner = value
        while isinstance(inner, dict | list) and inner and (parent is None or rng.random() < 0.8):
            keys = list(inner) if isinstance(inner, dict) else list(range(len(inner)))
            parent, key = inner, rng.choice(keys)
            inner = inner[key]
        if parent is None:
            return rng.choice(ODD_VALUES)
        parent[key] = rng.choice([v for v in ODD_VALUES if type(v) is not type(inner)])
        return value

    return edit


def test_random_edits_of_component_state_load_or_are_a_model_error(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    """A small, fixed sample of what the fuzzer tried (docs/security.md, "Fuzzing"): one
    JSON value of a moodbot archive replaced by one of another type. The model loads and
    parses, or loading says why it cannot; nothing else."""
    rng = random.Random(20261205)
    with tarfile.open(archives["moodbot"]) as archive:
        members = sorted(
            name.removeprefix("components/")
            for name in archive.getnames()
            if name.startswith("components/") and name.endswith(".json")
        )
    for attempt in range(40):
        member = rng.choice(members)
        broken = rewritten(archives["moodbot"], member, odd_edit(rng), tmp_path / str(attempt))
        try:
            model = load_model_file(broken)
        except ModelError:
            continue
        assert model.nlu is not None
        model.nlu.parse("I am very happy")


def test_an_archive_with_a_float_slot_of_an_empty_range_still_loads(
    archives: dict[str, Path], tmp_path: Path
) -> None:
    # Training refuses `min_value: 1` with the default maximum 1, as Rasa does; a model
    # trained before that check (one served for months) must still load on upgrade, or the
    # server answers every message 409 until the project is fixed and retrained.
    empty_range = setting(("slots", "num_people", "min_value"), 1.0)
    archive = rewritten(archives["formbot"], "domain.json", empty_range, tmp_path / "equal")
    slot = next(s for s in load_model_file(archive).domain.slots if s.name == "num_people")
    assert (slot.min_value, slot.max_value) == (1.0, 1.0)
    backwards = setting(("slots", "num_people", "min_value"), 2.0)
    archive = rewritten(archives["formbot"], "domain.json", backwards, tmp_path / "backwards")
    with pytest.raises(ModelError, match="'min_value' of slot 'num_people'"):
        load_model_file(archive)
