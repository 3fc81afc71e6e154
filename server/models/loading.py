"""Builds the in-memory dialogue model from an extracted, already checked archive."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.policies.ensemble import PolicyEnsemble
from server.dialogue.processor import DialogueModel
from server.errors import (
    InvalidConfig,
    InvalidProjectFile,
    MissingEnvironmentVariable,
    ModelError,
    ModelStorageFull,
    ModelSuperseded,
    NewerModel,
    OutdatedModel,
    UnsupportedModel,
)
from server.models.metadata import ROLES_LISTED_SINCE, TRAINING_FORMAT, training_format_of
from server.nlu.pipeline import NLUPipeline
from server.nlu.remote import RemoteNLU
from server.training.domain_yaml import DomainReader

DOMAIN_FILE = "domain.json"
NLU_DIR = "nlu"
POLICIES_DIR = "policies"

logger = logging.getLogger(__name__)


def _components(directory: Path) -> Path:
    inner = directory / "components"
    return inner if inner.is_dir() else directory


def load_model(directory: Path, metadata: dict[str, Any]) -> DialogueModel:
    """The model a turn runs on: domain, NLU pipeline (if trained) and policies.

    Runs in a worker thread. Reads only data files; nothing named by the archive is imported.
    An archive whose stored settings fail today's parameter checks is an OutdatedModel; one
    of a newer training format holding what this version cannot read, a NewerModel.
    """
    try:
        return _load_model(directory, metadata)
    except Exception as exc:
        refused = _refused_setting(exc)
        made_in = training_format_of(metadata)
        if made_in > TRAINING_FORMAT and (refused is not None or _unreadable(exc)):
            # A newer botserver's archive (a rollback) holding what this one cannot read: a
            # component or setting it lacks. Not broken: of a format this server cannot use.
            raise NewerModel(
                f"the model was trained in training format {made_in} by a newer botserver; "
                f"this botserver reads format {TRAINING_FORMAT}: {refused or exc}. Upgrade "
                "botserver, or retrain the model with this version (`botserver train`)."
            ) from exc
        if refused is None:
            raise
        raise OutdatedModel(
            f"the model was trained with a config.yml setting this botserver refuses ({refused}); "
            "an older botserver accepted it. Correct config.yml and retrain with "
            "`botserver train`."
        ) from exc


def _unreadable(exc: BaseException) -> bool:
    """True for what a newer format may hold: component state this version cannot read (a
    ModelError), not the server's own trouble (a full disk, no memory left, a file it could
    not read) nor a refusal already saying what to do."""
    return (
        isinstance(exc, ModelError)
        and not isinstance(exc, UnsupportedModel | ModelStorageFull | ModelSuperseded)
        and not any(_servers_trouble(cause) for cause in _causes(exc))
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its causes (`raise ... from`), each once: a chain may loop."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__


# A file missing, a directory where a file was (or the reverse), a name no file system holds
# (over 255 bytes) or links that loop: what the archive lays out (a newer format may), not
# the server's own trouble.
_ARCHIVES_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
)


def _servers_trouble(exc: BaseException) -> bool:
    """No memory left, or a file there but unreadable (EMFILE, EIO, EACCES): not the archive."""
    missing = FileNotFoundError | NotADirectoryError | IsADirectoryError  # errno or not
    return isinstance(exc, MemoryError) or (
        isinstance(exc, OSError)
        and not isinstance(exc, missing)
        and exc.errno not in _ARCHIVES_ERRNOS
    )


def _refused_setting(exc: BaseException) -> InvalidConfig | None:
    """The component or policy setting whose check refused the stored config, if that is
    why loading failed: checks made stricter since the model was trained refuse it now."""
    for seen in _causes(exc):
        if isinstance(seen, InvalidConfig) and not isinstance(seen, MissingEnvironmentVariable):
            return seen
    return None


def _load_model(directory: Path, metadata: dict[str, Any]) -> DialogueModel:
    root = _components(Path(directory))
    domain_path = root / DOMAIN_FILE
    if not domain_path.is_file():
        raise UnsupportedModel(
            "the archive has no domain.json; it was not made by `botserver train`. "
            "Retrain it with `botserver train`."
        )
    domain = _read_domain(domain_path)
    made_in = training_format_of(metadata)
    if made_in > TRAINING_FORMAT:
        # A newer botserver's (a rollback): it may hold what this one cannot read.
        logger.warning(
            "The model was trained in training format %d, newer than this botserver's %d; it "
            "is read as format %d and may answer otherwise than where it was trained. Upgrade "
            "botserver, or retrain the model with this version (`botserver train`).",
            made_in,
            TRAINING_FORMAT,
            TRAINING_FORMAT,
        )
    if made_in < ROLES_LISTED_SINCE:
        # Trained when every entity role and group influenced the dialogue: its policies
        # learnt them so, and read them so until it is trained again.
        domain.entity_labels = None
    nlu = NLUPipeline.load(root / NLU_DIR) if (root / NLU_DIR).is_dir() else None
    if nlu is not None and metadata.get("training_type") != "nlu":
        # As Rasa's: `/intent{...}` messages are checked against the domain of a model with
        # a dialogue; an NLU-only model's (made from its examples) would refuse an intent
        # it has no examples of, which Rasa's NLU-only model takes as given.
        nlu.use_domain(domain.intents, domain.entities)
    policies = PolicyEnsemble.load(root / POLICIES_DIR, domain)
    return DialogueModel(
        domain=domain,
        policies=policies,
        nlu=nlu,
        model_id=metadata.get("model_id"),
        assistant_id=metadata.get("assistant_id"),
        metadata=metadata,
    )


def _read_domain(path: Path) -> Domain:
    """The archive's domain, checked as a domain file is at training: a broken or hostile
    `domain.json` is a ModelError here, not a crash in the first turn."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # not UTF-8, not JSON
        raise ModelError(f"cannot read the archive's {DOMAIN_FILE}: {exc}") from exc
    except RecursionError:
        raise ModelError(f"the archive's {DOMAIN_FILE} is nested too deeply") from None
    reader = DomainReader(warnings=[], from_archive=True)
    try:
        reader.check(data, DOMAIN_FILE)
        return reader.build(data, DOMAIN_FILE)
    except InvalidProjectFile as exc:
        raise ModelError(f"the archive's {exc}") from exc


def with_remote_nlu(
    load: Callable[[Path, dict[str, Any]], DialogueModel], nlu: RemoteNLU
) -> Callable[[Path, dict[str, Any]], DialogueModel]:
    """A loader whose models parse with the NLU server of endpoints.yml (`nlu:`), as Rasa
    parses every message there once it is configured, whatever NLU the model holds."""

    def load_with_remote_nlu(directory: Path, metadata: dict[str, Any]) -> DialogueModel:
        model = load(directory, metadata)
        model.nlu = nlu.for_model(model.nlu)
        return model

    return load_with_remote_nlu
