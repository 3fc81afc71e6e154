"""`botserver train`: NLU and dialogue trained together into one model archive."""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server import __version__
from server.dialogue.domain import Domain
from server.dialogue.policies.ensemble import PolicyEnsemble, policy_name
from server.dialogue.story_steps import checkpoint_warnings
from server.errors import BotServerError, InvalidProjectFile, NothingToTrain, how_many
from server.models.archive import check_archive_target, random_name, write_archive
from server.models.fingerprint import (
    find_archive_with_fingerprint,
    find_other_format_archive,
    fingerprint_inputs,
    with_training_format,
)
from server.models.loading import DOMAIN_FILE, NLU_DIR, POLICIES_DIR
from server.models.metadata import TRAINED_AS_TODAY, TRAINING_FORMAT
from server.nlu.pipeline import NLUPipeline
from server.nlu.training_data import NLUTrainingData
from server.trackers.events import ActionExecuted, UserUttered
from server.training.config_yaml import ProjectConfig, naming_config_items
from server.training.project import Project, load_project
from server.training.validation import (
    check_config,
    check_story_actions,
    missing_assistant_id,
    missing_response_warnings,
    placeholder_assistant_id,
    story_reference_warnings,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

# Rasa's file name prefixes of archives from `train core` and `train nlu`.
CORE_PREFIX = "core-"
NLU_PREFIX = "nlu-"


@dataclass
class TrainResult:
    """Where the model is, whether training was skipped, and what it took."""

    path: Path
    skipped: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def assistant_id_for(config: ProjectConfig) -> tuple[str, list[str]]:
    """The model's assistant_id and the warning to give: as Rasa 3.5+, a config.yml without
    one gets a random name at each training (every event then carries it). Rasa's
    placeholder (`rasa init`'s `placeholder_default`) is kept, as Rasa 3.6 keeps it, with
    Rasa's warning: every assistant trained from an unedited `rasa init` shares the name."""
    placeholder = placeholder_assistant_id(config)
    if placeholder is not None:
        return config.assistant_id or "", [placeholder]
    if config.assistant_id:
        return config.assistant_id, []
    made_up = random_name()
    return made_up, [missing_assistant_id(config, made_up)]


# The policies learning from stories glued together (Rasa's augmented trackers): TEDPolicy's
# stand-in. Memoization policies learn from the stories as written, as in Rasa.
_AUGMENTED_POLICIES = frozenset({"MLPolicy", "TEDPolicy"})


def set_augmentation(project: Project, factor: int | None) -> None:
    """`--augmentation N`, as Rasa's: how many glued stories the ML policy learns from, over
    its `augmentation_factor` in config.yml (None: config.yml's or the default). Part of the
    configuration an archive records, so another factor is another model."""
    if factor is None:
        return
    policies = copy.deepcopy(project.config.policies)
    for spec in policies:
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and policy_name(name) in _AUGMENTED_POLICIES:
            spec["augmentation_factor"] = factor
    project.config.policies = policies


def model_kind(project: Project) -> str:
    """The `training_type` `botserver train` gives a project's model, as Rasa 3.6 decides it:
    "nlu" without a domain or without stories and rules, "core" without NLU examples (no
    NLU is trained), else "both"."""
    if not project.stories or project.domain.is_empty:
        return "nlu"
    return "both" if project.nlu.examples else "core"


def _marker(project: Project, core_only: bool) -> str | None:
    """The model kind the fingerprint names: a `train core` model, or an NLU-only one, is
    another model than the full one of the same files (`botserver train` after `train core`,
    or after an older botserver trained the stories-less project whole, trains again)."""
    if core_only:
        return "core"
    return "nlu" if model_kind(project) == "nlu" else None


def _fingerprint(
    project: Project, marker: str | None = None, training_format: int = TRAINING_FORMAT
) -> str:
    # The domain as read (a response's new text must retrain, a comment need not), and the
    # training format: a newer botserver may train the same files differently. `marker`:
    # see `_marker`.
    config: dict[str, object] = {
        "language": project.config.language,
        "pipeline": project.config.pipeline,
        "policies": project.config.policies,
        "assistant_id": project.config.assistant_id,
        "domain": project.domain.as_dict(full=True),
        "botserver": __version__,
    }
    if marker is not None:
        config["training_type"] = marker
    return fingerprint_inputs(
        sorted(set(project.files)), with_training_format(config, training_format)
    )


def _up_to_date_archive(fingerprint: str, out: Path, fixed_model_name: str | None) -> Path | None:
    """The archive in `out` trained from these very inputs, by their `_fingerprint` (under that
    name, if one is fixed)."""
    existing = find_archive_with_fingerprint(out, fingerprint)
    if existing is None or (
        fixed_model_name is not None and existing.name != f"{fixed_model_name}.tar.gz"
    ):
        return None
    return existing


def _say_if_other_format(
    out: Path, fingerprint_in: Callable[[int], str], dry: bool = False
) -> None:
    """Says why an archive trained from these very files is trained again (by a `dry` run:
    needs it): another botserver trained it in another training format (see
    TRAINING_FORMAT)."""
    found = find_other_format_archive(out, fingerprint_in)
    if found is not None:
        archive, made_in = found
        logger.info(
            "%s: %s was trained from these files in training format %d; this botserver "
            "trains in format %d.",
            "Needs training again" if dry else "Training again",
            archive,
            made_in,
            TRAINING_FORMAT,
        )


# `botserver train --dry-run` exit codes, as Rasa 3's bitmask.
DRY_RUN_UP_TO_DATE = 0
DRY_RUN_NEEDS_TRAINING = 1
DRY_RUN_FORCED = 8


def dry_run(
    project: Project, out: Path, fixed_model_name: str | None = None, force: bool = False
) -> tuple[int, Path | None]:
    """Trains nothing: Rasa's dry-run code for a loaded project, and the archive that is up to
    date (if any)."""
    marker = _marker(project, core_only=False)
    existing = _up_to_date_archive(_fingerprint(project, marker), Path(out), fixed_model_name)
    if force:
        return DRY_RUN_FORCED, existing
    if existing is None:
        _say_if_other_format(
            Path(out), lambda made_in: _fingerprint(project, marker, made_in), dry=True
        )
    return (DRY_RUN_UP_TO_DATE if existing else DRY_RUN_NEEDS_TRAINING), existing


def train(
    config: Path | None,
    domain: Path,
    data: list[Path],
    out: Path,
    fixed_model_name: str | None = None,
    force: bool = False,
    signing_key: bytes | Path | None = None,
    progress: Progress | None = None,
    env: bool = True,
    augmentation: int | None = None,
    project: Project | None = None,
    said: Collection[str] = (),
) -> TrainResult:
    """Trains a full model; skips when an archive with the same inputs already exists.
    `env=False` for a project a client sent: its `${VAR}` stays text, the server's
    environment (secrets) never reaches the model it gets back. `augmentation`: see
    `set_augmentation`. `project`: these files as validation read them (with `env`), trained
    without reading them again (each reader warning printed once). `said`: the warnings that
    validation printed, kept in the model's but not logged again."""
    check_archive_target(out, fixed_model_name)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    say("reading the project")
    if project is None:
        # As Rasa's: without its domain file (validation, unless skipped, stops on it first)
        # the NLU is trained alone (`model_kind`), saying so.
        project = load_project(config, domain, data, env, missing_domain_is_empty=True)
    check_training_data(project, data)
    set_augmentation(project, augmentation)
    return _train_project(
        project,
        Path(out),
        fixed_model_name,
        force,
        signing_key,
        say,
        started,
        core_only=False,
        said=said,
    )


def check_training_data(project: Project, data: Iterable[Path]) -> None:
    """NothingToTrain when the project has no stories or rules and no NLU data (examples,
    synonyms, regexes, lookup tables), as Rasa 3.6 refuses it ("No training data given"),
    or stories without NLU data and an empty domain (only the NLU would be trained). Before,
    such a project trained a model that knew nothing."""
    nlu = project.nlu
    has_nlu = bool(nlu.examples or nlu.synonyms or nlu.regexes or nlu.lookups)
    if has_nlu or (project.stories and model_kind(project) != "nlu"):
        return
    if project.stories:  # an empty domain: only the NLU would be trained
        raise NothingToTrain(
            "the domain is empty, so only the NLU would be trained, and there is no NLU data: "
            "nothing to train (give the domain with --domain)",
            ", ".join(map(str, data)) or None,
        )
    raise NothingToTrain(
        "no training data: no stories, rules or NLU examples, nothing to train",
        ", ".join(map(str, data)) or None,
    )


def train_core(
    config: Path | None,
    domain: Path,
    stories: list[Path],
    out: Path,
    fixed_model_name: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    augmentation: int | None = None,
) -> TrainResult:
    """Trains the dialogue policies alone (`botserver train core`), into a `core-` archive
    without NLU: a server with it parses only `/intent{...}` messages, as Rasa's does."""
    check_archive_target(out, fixed_model_name)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    say("reading the domain and stories")
    project = load_project(config, domain, stories)
    set_augmentation(project, augmentation)
    _check_core_project(project, domain)
    return _train_project(
        project, Path(out), fixed_model_name, force, None, say, started, core_only=True
    )


def _check_core_project(project: Project, domain: Path) -> None:
    """What Rasa refuses to train a dialogue model from (it says so, and trains nothing)."""
    if project.domain.as_dict() == Domain.empty().as_dict():
        raise InvalidProjectFile(
            "the domain is empty: give a domain with --domain to train the dialogue",
            str(domain),
        )
    for step in project.stories:
        for index, event in enumerate(step.events):
            user_text = isinstance(event, UserUttered) and event.text is not None
            bot_text = isinstance(event, ActionExecuted) and event.action_text is not None
            if user_text or bot_text:
                lines = step.event_lines
                at = len(step.condition) + index
                raise InvalidProjectFile(
                    f"{step.kind} '{step.name}' is end-to-end (it holds the text of a message); "
                    "train it with `botserver train`, which trains the NLU too",
                    step.filename,
                    lines[at] if at < len(lines) else step.line,
                )
    if not any(step.events for step in project.stories):
        raise InvalidProjectFile(
            "no stories or rules: give them with --stories to train the dialogue",
            ", ".join(sorted({str(f) for f in project.files})) or None,
        )


def _train_project(
    project: Project,
    out: Path,
    fixed_model_name: str | None,
    force: bool,
    signing_key: bytes | Path | None,
    say: Progress,
    started: float,
    core_only: bool,
    said: Collection[str] = (),
) -> TrainResult:
    """Trains a loaded project (its NLU too unless `core_only`; its dialogue unless it is
    NLU-only, see `model_kind`), or finds it trained."""
    kind = "core" if core_only else model_kind(project)
    if kind != "nlu":  # before the archive is looked for: older versions trained such stories
        check_story_actions(project.stories, project.domain, project.config.policies)
    marker = _marker(project, core_only)
    fingerprint = _fingerprint(project, marker)
    with_nlu = kind != "core"
    if not force:
        existing = _up_to_date_archive(fingerprint, out, fixed_model_name)
        if existing is not None:
            # An older botserver may have trained it from settings this one refuses.
            check_config(project.config, with_nlu, with_policies=kind != "nlu")
            return TrainResult(existing, skipped=True, seconds=time.perf_counter() - started)
        _say_if_other_format(out, lambda made_in: _fingerprint(project, marker, made_in))
    # What Rasa warns about in the domain and the files, said before the training starts;
    # then the components' own warnings (the NLU pipeline logs its own as it trains).
    assistant_id, assistant_warning = assistant_id_for(project.config)
    if missing_assistant_id(project.config) in said:  # validation said it, bar the name made up
        said = {*said, *assistant_warning}
    warnings: list[str] = [*project.config.warnings, *project.warnings, *assistant_warning]
    if not core_only:
        warnings += _kind_warnings(project, kind)
    if kind != "nlu":  # an NLU-only model learns nothing from the stories
        warnings += [
            *checkpoint_warnings(project.stories),
            *story_reference_warnings(project),
            *missing_response_warnings(project),
        ]
    for warning in warnings:
        if warning not in said:
            logger.warning(warning)
    logged = len(warnings)
    planned = None
    if kind != "nlu":
        # As Rasa's, the policies are checked against the domain before anything trains.
        with naming_config_items(project.config):
            planned = PolicyEnsemble.for_domain(project.config.policies, project.domain)
    with tempfile.TemporaryDirectory(prefix="botserver-train-") as tmp:
        content = Path(tmp)
        (content / DOMAIN_FILE).write_text(
            json.dumps(project.domain.as_dict(full=True), ensure_ascii=False), encoding="utf-8"
        )
        if with_nlu:
            say(f"training NLU on {how_many(len(project.nlu.examples), 'example')}")
            with naming_config_items(project.config):
                nlu = NLUPipeline.train(
                    project.nlu, project.config.pipeline, project.config.language, said
                )
            nlu.persist(content / NLU_DIR)
            warnings += nlu.warnings
            logged = len(warnings)
        if kind == "nlu":
            # No policy runs on it (the processor predicts nothing); the archive keeps the
            # layout every botserver reads.
            ensemble = PolicyEnsemble.train([{"name": "RulePolicy"}], [], project.domain)
        else:
            stories_and_rules = how_many(len(project.stories), "story or rule", "stories and rules")
            say(f"training dialogue on {stories_and_rules}")
            stories = project.training_stories()
            assert planned is not None
            with naming_config_items(project.config):
                ensemble = planned.fit(stories, project.domain)
            warnings += ensemble.warnings
        ensemble.persist(content / POLICIES_DIR)
        say("writing the model archive")
        metadata = {
            "fingerprint": fingerprint,
            "assistant_id": assistant_id,
            "language": project.config.language,
            "pipeline": [] if core_only else project.config.pipeline,
            "policies": [] if kind == "nlu" else project.config.policies,
            "domain": project.domain.as_dict(),
            "training_type": kind,
            "warnings": warnings,
            **TRAINED_AS_TODAY,
        }
        out.mkdir(parents=True, exist_ok=True)
        path = write_archive(
            content,
            metadata,
            out,
            fixed_model_name,
            signing_key,
            prefix={"core": CORE_PREFIX, "nlu": NLU_PREFIX}.get(kind, ""),
        )
    for warning in warnings[logged:]:
        if warning not in said:
            logger.warning(warning)
    return TrainResult(path, seconds=time.perf_counter() - started, warnings=warnings)


def _kind_warnings(project: Project, kind: str) -> list[str]:
    """Rasa's words when `botserver train` trains one part alone (see `model_kind`)."""
    if kind == "nlu" and project.domain.is_empty:
        return [
            "Core training was skipped because no valid domain file was found: only an NLU "
            "model is trained. Give a domain with --domain, or check that the domain file "
            "exists."
        ]
    if kind == "nlu":
        return ["No stories present. Just a Rasa NLU model will be trained."]
    if kind == "core":
        return ["No NLU data present. Just a Rasa Core model will be trained."]
    return []


def _retrieval_responses(
    domain: Path, data: NLUTrainingData, named: bool
) -> dict[str, list[dict[str, Any]]]:
    """The domain's responses of the data's retrieval intents (`utter_faq/ask_name`) that
    the NLU files do not give themselves. A domain not `named` (domain.yml, read because it
    is there) is read only for retrieval intents, and one that does not read is a warning."""
    from server.training.domain_yaml import DomainReader

    wanted = {f"utter_{e.intent}" for e in data.examples if e.intent and "/" in e.intent}
    if not named and not wanted:
        return {}
    try:
        responses = DomainReader().read(domain).get("responses") or {}
    except BotServerError as exc:
        if named:
            raise
        logger.warning(
            "%s not read (name it with -d to make this an error), so the retrieval intents "
            "answer with the responses of the NLU files only: %s",
            domain,
            exc,
        )
        return {}
    return {
        name: responses[name]
        for name in sorted(wanted)
        if name in responses and name not in data.responses
    }


def train_nlu(
    config: Path | None,
    nlu_data: list[Path],
    out: Path,
    fixed_model_name: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    domain_path: Path | None = None,
    domain_named: bool = True,
) -> TrainResult:
    """Trains the NLU pipeline alone (`botserver train nlu`); the model parses but has no
    dialogue beyond the default rules. Of `domain_path`, only the responses of the retrieval
    intents are read (the ResponseSelector's answers), as Rasa's `train nlu -d` reads them."""
    from server.nlu.training_data import NLUTrainingData
    from server.training.config_yaml import read_config
    from server.training.nlu_json import read_nlu_json
    from server.training.nlu_yaml import read_nlu_file
    from server.training.project import nlu_json_files
    from server.training.yaml_io import folder_files

    check_archive_target(out, fixed_model_name)
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    project_config = read_config(config)
    files: list[Path] = []
    json_files: list[Path] = []
    for path in map(Path, nlu_data):
        if path.is_dir():
            files += folder_files(path)
            json_files += nlu_json_files([path])
        else:  # a file named is read whatever its name, a `.json` one as Rasa's JSON format
            (json_files if path.suffix == ".json" else files).append(path)
    data = NLUTrainingData.merge([*map(read_nlu_file, files), *map(read_nlu_json, json_files)])
    files += json_files + data.lookup_files
    if not (data.examples or data.synonyms or data.regexes or data.lookups):
        # As Rasa ("doesn't contain valid NLU data"); synonyms, regexes or lookup tables
        # alone train, as in Rasa, whose classifiers then skip their training.
        raise InvalidProjectFile(
            "no NLU training data (examples, synonyms, regexes or lookup tables): nothing "
            "to train (give the NLU data with --nlu)",
            ", ".join(map(str, nlu_data)),
        )
    domain_responses = (
        {} if domain_path is None else _retrieval_responses(domain_path, data, domain_named)
    )
    data.responses.update(domain_responses)
    inputs = {"pipeline": project_config.pipeline, "nlu": True, "botserver": __version__}
    if domain_responses:  # they change the model; the rest of the domain does not
        inputs["domain_responses"] = domain_responses
    fingerprint = fingerprint_inputs(files, with_training_format(inputs, TRAINING_FORMAT))
    out = Path(out)
    if not force:
        existing = find_archive_with_fingerprint(out, fingerprint)
        if existing is not None:
            NLUPipeline.check(project_config.pipeline, project_config.language)
            return TrainResult(existing, skipped=True, seconds=time.perf_counter() - started)
        _say_if_other_format(
            out, lambda made_in: fingerprint_inputs(files, with_training_format(inputs, made_in))
        )
    assistant_id, assistant_warning = assistant_id_for(project_config)
    for warning in [*project_config.warnings, *assistant_warning]:
        logger.warning(warning)
    intents = sorted({e.intent for e in data.examples if e.intent})
    entities = sorted({a.entity for e in data.examples for a in e.entities})
    domain = Domain.from_dict({"intents": intents, "entities": entities})
    with tempfile.TemporaryDirectory(prefix="botserver-train-") as tmp:
        content = Path(tmp)
        (content / DOMAIN_FILE).write_text(json.dumps(domain.as_dict(full=True)), "utf-8")
        say(f"training NLU on {how_many(len(data.examples), 'example')}")
        nlu = NLUPipeline.train(data, project_config.pipeline, project_config.language)
        nlu.persist(content / NLU_DIR)
        ensemble = PolicyEnsemble.train([{"name": "RulePolicy"}], [], domain)
        ensemble.persist(content / POLICIES_DIR)
        metadata = {
            "fingerprint": fingerprint,
            "assistant_id": assistant_id,
            "language": project_config.language,
            "pipeline": project_config.pipeline,
            "policies": [],
            "domain": domain.as_dict(),
            "training_type": "nlu",
            "warnings": nlu.warnings,
            **TRAINED_AS_TODAY,
        }
        out.mkdir(parents=True, exist_ok=True)
        path = write_archive(content, metadata, out, fixed_model_name, prefix=NLU_PREFIX)
    return TrainResult(path, seconds=time.perf_counter() - started, warnings=nlu.warnings)
