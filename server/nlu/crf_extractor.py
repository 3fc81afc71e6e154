"""CRF entity extractor (python-crfsuite): BIO tags whose labels carry entity, role and
group; also serves as the entity half of DIETClassifier."""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import InvalidConfig, ModelError, TrainingError
from server.nlu.message import Message, Token
from server.nlu.params import number
from server.nlu.training_data import EntityAnnotation, NLUTrainingData

if TYPE_CHECKING:
    # Training and tagging only: building an extractor (as `data validate` does) needs neither.
    import pycrfsuite

# crfsuite's training algorithms offered, with each one's default number of passes:
# L-BFGS (Rasa's, the default) and SGD with L2 regularisation, about 3x less CPU on SNIPS for
# a span F1 0.1-0.9 point lower (seventeenth NLU round).
ALGORITHMS = {"lbfgs": 50, "l2sgd": 10}
# crfsuite's SGD shuffles the sentences with the C library's rand(), a state the whole
# process shares: seeding it is not enough while any other thread draws from it (onnxruntime's
# thread pool does, left by the static table's or the dense featurizer's training), and two
# trainings of the same data gave different CRFs. So SGD trains in a new process of its own
# (a fresh interpreter, not a fork: a child forked while another thread was inside rand()
# waited for ever on rand()'s lock, which only that thread would have let go of, and kept the
# parent's sockets open), whose one thread seeds rand() and is the only one to draw from it:
# a model is a function of its data. L-BFGS draws no random numbers and trains in process.

# The training process: the sentences (one JSON line each: features and tags; no pickle, so
# nothing read there can run code) from
# the file argv[1], the model to argv[2]; the algorithm and parameters as JSON in argv[3].
# It ends with the process that started it (argv[4]), whose thread waits for it: killed
# (SIGKILL, the OOM killer), that process left it training for nobody until its last pass.
_TRAIN_PROGRAM = """
import ctypes, json, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
except (OSError, AttributeError, TypeError):
    pass
if os.getppid() != int(sys.argv[4]):  # gone already
    sys.exit("the training's parent process ended")
import pycrfsuite
algorithm, params = json.loads(sys.argv[3])
trainer = pycrfsuite.Trainer(algorithm=algorithm, verbose=False)
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        features, tags = json.loads(line)
        trainer.append(pycrfsuite.ItemSequence(features), tags)
trainer.set_params(params)
try:
    ctypes.CDLL(None).srand(1)
except (OSError, AttributeError, TypeError):  # no C library by that name (Windows)
    pass
trainer.train(sys.argv[2])
"""


def _seed_c_rand() -> None:
    try:
        ctypes.CDLL(None).srand(1)
    except (OSError, AttributeError):  # no C library by that name (not Linux or macOS)
        pass


def _train_seeded(algorithm: str, params: dict[str, Any], sentences: str, path: str) -> None:
    """Trains on the `sentences` (JSON lines) into `path`, with rand() seeded and drawn from by
    crfsuite alone: in a process of its own, which inherits no thread, lock or descriptor."""
    command = [sys.executable, "-P", "-c", _TRAIN_PROGRAM, sentences, path]
    command += [json.dumps([algorithm, params]), str(os.getpid())]
    try:
        done = subprocess.run(command, capture_output=True, check=False, stdin=subprocess.DEVNULL)
    except OSError as e:  # no interpreter to start, or no memory or process left
        raise TrainingError(f"crfsuite's SGD training could not start: {e}") from e
    if done.returncode != 0:
        if done.returncode < 0:
            try:
                reason = f"killed by {signal.Signals(-done.returncode).name}"
            except ValueError:  # a signal with no name (a real-time one)
                reason = f"killed by signal {-done.returncode}"
        else:  # the last line of its traceback: the exception and its message
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1][:1000] if lines else f"exit status {done.returncode}"
        raise TrainingError(f"crfsuite's SGD training failed: {reason}")


_ROLE = "|role="
_GROUP = "|group="
_NON_SHAPE = re.compile(r"(.)\1+")


# An ASCII word's shape by one translation (a new word's features are formed at a parse): its
# upper, lower and digit characters are exactly A-Z, a-z and 0-9.
_ASCII_SHAPE = str.maketrans(
    {
        **dict.fromkeys(map(chr, range(ord("A"), ord("Z") + 1)), "X"),
        **dict.fromkeys(map(chr, range(ord("a"), ord("z") + 1)), "x"),
        **dict.fromkeys("0123456789", "d"),
    }
)


def _shape(word: str) -> str:
    if word.isascii():
        mapped = word.translate(_ASCII_SHAPE)
    else:
        mapped = "".join(
            "X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word
        )
    return _NON_SHAPE.sub(r"\1", mapped)


# Words whose feature names are kept (a message's words repeat across messages: a parse
# formats only the new ones). Bounded: a server parses whatever its users type, so only
# words up to CACHED_WORD characters are kept: 1.6 KB of names a word of ASCII letters up to
# 32 long, 2 KB at 64, 3.8 KB for 64 characters beyond the BMP (tracemalloc, cache entry
# included): once full, 26 MB of ordinary words, at most 62 MB whatever is typed.
WORD_CACHE = 16_384
CACHED_WORD = 64


@functools.lru_cache(maxsize=WORD_CACHE)
def _word_features(word: str) -> tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """One word's share of the feature names: its lowercased text, its own features (after
    `bias`, in token_features' order) and what it gives a neighbour at offsets -2, -1, 1, 2."""
    low = word.lower()
    shape = _shape(word)
    own = [
        f"w={low}",
        f"shape={shape}",
        f"p2={low[:2]}",
        f"p3={low[:3]}",
        f"s2={low[-2:]}",
        f"s3={low[-3:]}",
        f"s4={low[-4:]}",
    ]
    if word.isdigit():
        own.append("digit")
    if word[:1].isupper():
        own.append("title")
    near = tuple(
        (f"{offset}:w={low}", f"{offset}:shape={shape}", f"{offset}:s3={low[-3:]}")
        if abs(offset) == 1
        else (f"{offset}:w={low}",)
        for offset in _OFFSETS
    )
    return low, tuple(own), near


_OFFSETS = (-2, -1, 1, 2)


def token_features(tokens: list[Token], patterns: list[set[str]] | None) -> list[list[str]]:
    """crfsuite attribute names (each of value 1) for each token: the word, its shape,
    affixes and neighbours. Distinct names, so crfsuite reads them as the dict
    {name: 1.0} it was trained on, in the same order."""
    words = [
        _word_features(t.text) if len(t.text) <= CACHED_WORD else _word_features.__wrapped__(t.text)
        for t in tokens
    ]
    out = []
    count = len(tokens)
    for i in range(count):
        low, own, _ = words[i]
        f = ["bias", *own]
        if i == 0:
            f.append("BOS")
        if i == count - 1:
            f.append("EOS")
        for n, offset in enumerate(_OFFSETS):
            j = i + offset
            if 0 <= j < count:
                f.extend(words[j][2][n])
        if i > 0:
            f.append(f"-1|0:w={words[i - 1][0]}|{low}")
        if i < count - 1:
            f.append(f"0|1:w={low}|{words[i + 1][0]}")
        if patterns:
            f.extend(f"pattern={name}" for name in patterns[i])
        out.append(f)
    return out


def _sequences(
    messages: list[Message], data: NLUTrainingData
) -> Iterator[tuple[list[list[str]], list[str]]]:
    """Each tokenised sentence's features and BIO tags, as a CRF trains on them."""
    for message, example in zip(messages, data.examples, strict=True):
        if message.tokens:
            features = token_features(message.tokens, message.token_patterns)
            yield features, bio_tags(message.tokens, example.entities)


def _label(a: EntityAnnotation) -> str:
    label = a.entity
    if a.role:
        label += _ROLE + a.role
    if a.group:
        label += _GROUP + a.group
    return label


def bio_tags(tokens: list[Token], entities: list[EntityAnnotation]) -> list[str]:
    tags = ["O"] * len(tokens)
    for a in entities:
        inside = [i for i, t in enumerate(tokens) if t.start < a.end and t.end > a.start]
        for n, i in enumerate(inside):
            tags[i] = ("B-" if n == 0 else "I-") + _label(a)
    return tags


def _split_label(label: str) -> tuple[str, str | None, str | None]:
    group = role = None
    if _GROUP in label:
        label, group = label.split(_GROUP, 1)
    if _ROLE in label:
        label, role = label.split(_ROLE, 1)
    return label, role, group


class CRFEntityExtractor:
    def __init__(self, config: dict[str, Any], name: str = "CRFEntityExtractor"):
        self.config = config
        self.name = name
        self.algorithm = str(config.get("algorithm", "lbfgs"))
        if self.algorithm not in ALGORITHMS:
            raise InvalidConfig(
                f"{name}: algorithm must be one of {', '.join(ALGORITHMS)}, not {self.algorithm!r}"
            )
        self.c1 = number(config, "L1_c", 0.1, name, minimum=0)
        self.c2 = number(config, "L2_c", 0.01, name, minimum=0)
        self.max_iterations = number(
            config, "max_iterations", ALGORITHMS[self.algorithm], name, whole=True, minimum=1
        )
        self.model_: bytes | None = None
        self._tagger: pycrfsuite.Tagger | None = None
        self._lock = threading.Lock()

    def train(self, messages: list[Message], data: NLUTrainingData) -> None:
        import pycrfsuite

        params: dict[str, Any] = {
            "c2": self.c2,
            "max_iterations": self.max_iterations,
            "feature.possible_transitions": True,
        }
        tagged = False
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "model.crfsuite")
            if self.algorithm == "lbfgs":
                params["c1"] = self.c1  # l2sgd has no L1 term
                trainer = pycrfsuite.Trainer(algorithm=self.algorithm, verbose=False)
                for features, tags in _sequences(messages, data):
                    tagged = tagged or any(t != "O" for t in tags)
                    trainer.append(pycrfsuite.ItemSequence(features), tags)
                if tagged:
                    trainer.set_params(params)
                    trainer.train(path)
            else:
                sentences = str(Path(tmp) / "sentences.jsonl")
                with open(sentences, "w", encoding="utf-8") as f:
                    for features, tags in _sequences(messages, data):
                        tagged = tagged or any(t != "O" for t in tags)
                        f.write(json.dumps([features, tags]) + "\n")
                if tagged:
                    _train_seeded(self.algorithm, params, sentences, path)
            self.model_ = Path(path).read_bytes() if tagged else None
        if tagged:
            self._open()
        else:
            self._tagger = None

    def _open(self) -> None:
        import pycrfsuite

        tagger = pycrfsuite.Tagger()
        try:
            tagger.open_inmemory(self.model_)
        except Exception as e:  # crfsuite raises ValueError/IOError on a bad file
            raise ModelError(f"{self.name}: invalid crfsuite model: {e}") from e
        self._tagger = tagger

    def process(self, message: Message) -> None:
        if self._tagger is None or not message.tokens:
            return
        # A list, not an ItemSequence: the tagger converts it once, where an ItemSequence
        # was converted and then copied.
        features = token_features(message.tokens, message.token_patterns)
        with self._lock:
            tags = self._tagger.tag(features)
            if all(tag == "O" for tag in tags):
                return  # no entity: no confidence to compute (crfsuite's forward-backward)
            # Only the entity tokens' marginals are read: the forward-backward runs once, and
            # each call for an "O" token crossed into crfsuite for nothing.
            marginals = {
                i: self._tagger.marginal(tag, i) for i, tag in enumerate(tags) if tag != "O"
            }
        message.entities.extend(self._entities(message, tags, marginals))

    def _entities(
        self, message: Message, tags: list[str], marginals: dict[int, float]
    ) -> list[dict[str, Any]]:
        spans: list[tuple[str, int, int, list[float]]] = []
        for i, tag in enumerate(tags):
            if tag == "O":
                continue
            prefix, label = tag[:2], tag[2:]
            if prefix == "I-" and spans and spans[-1][0] == label and spans[-1][2] == i - 1:
                label_, first, _, scores = spans[-1]
                spans[-1] = (label_, first, i, scores + [marginals[i]])
            else:
                spans.append((label, i, i, [marginals[i]]))
        entities = []
        for label, first, last, scores in spans:
            entity, role, group = _split_label(label)
            start, end = message.tokens[first].start, message.tokens[last].end
            confidence = float(sum(scores) / len(scores))
            result: dict[str, Any] = {
                "entity": entity,
                "start": start,
                "end": end,
                "confidence_entity": confidence,
            }
            if role is not None:
                result["role"] = role
                result["confidence_role"] = confidence
            if group is not None:
                result["group"] = group
                result["confidence_group"] = confidence
            result["value"] = message.text[start:end]
            result["extractor"] = self.name
            entities.append(result)
        return entities

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        if self.model_ is None:
            return {"trained": False}
        (directory / f"{prefix}model.crfsuite").write_bytes(self.model_)
        return {"trained": True}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> CRFEntityExtractor:
        from server.nlu.crfsuite_file import check_crfsuite_model  # (NumPy: loading only)

        extractor = cls(config, name)
        if state.get("trained"):
            try:
                extractor.model_ = (directory / f"{prefix}model.crfsuite").read_bytes()
            except OSError as e:
                raise ModelError(f"{name}: cannot read the crfsuite model: {e}") from e
            check_crfsuite_model(extractor.model_, name)
            extractor._open()
        return extractor
