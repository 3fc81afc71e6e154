"""Load a whole Rasa 3 project: config, domain, and the NLU data, stories and rules found in
the data files and directories."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.story_steps import StoryStep, TrainingStory, generate_training_stories
from server.errors import InvalidProjectFile, brief
from server.json_values import loads_untrusted
from server.nlu.training_data import NLUTrainingData
from server.trackers.events import ActionExecuted
from server.training.config_yaml import ProjectConfig, read_config
from server.training.domain_yaml import (
    DOMAIN_KEYS,
    TRAINING_DATA_KEYS,
    DomainReader,
    check_response,
)
from server.training.imports import imported_files
from server.training.nlu_json import foreign_nlu_format, read_nlu_json
from server.training.nlu_yaml import read_nlu_file
from server.training.stories_yaml import read_story_data
from server.training.yaml_io import (
    YAML_SUFFIXES,
    check_json_values,
    check_version,
    folder_files,
    line_of,
    read_yaml_file,
)


@dataclass
class Project:
    """Everything training reads, loaded and checked; `warnings` are what Rasa warns about."""

    config: ProjectConfig
    domain: Domain
    nlu: NLUTrainingData
    stories: list[StoryStep]
    files: list[Path]  # every file read: data and domain (config.yml aside)
    warnings: list[str] = field(default_factory=list)
    # Where each domain item was defined (`intents:greet`, `responses:utter_greet`): its file
    # and line, for the warnings about it.
    origins: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    # Those of `warnings` Rasa's validator does not give: never failing --fail-on-warnings.
    unchecked_warnings: list[str] = field(default_factory=list)

    def training_stories(self) -> list[TrainingStory]:
        return generate_training_stories(self.stories, self.domain)


def data_files(
    paths: Iterable[str | Path], suffixes: tuple[str, ...] = YAML_SUFFIXES
) -> list[Path]:
    """The files of the given files and directories (walked recursively, sorted) whose name
    ends in one of `suffixes`, YAML's by default."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(folder_files(path, suffixes))
        elif path.is_file():
            if path.suffix in suffixes:
                files.append(path)
        else:
            raise InvalidProjectFile("training data not found", str(path))
    seen: dict[Path, Path] = {}  # the same file by two paths (data/x.yml, /abs/data/x.yml)
    for file in files:
        seen.setdefault(file.resolve(), file)
    return list(seen.values())


def nlu_json_files(paths: Iterable[str | Path], warnings: list[str] | None = None) -> list[Path]:
    """The files in Rasa's JSON NLU format among the given files and directories: they train
    too, as in Rasa; other `.json` files are no training data, and another tool's NLU export
    (which Rasa reads) is said in `warnings`."""
    files = []
    for file in data_files(paths, (".json",)):
        if _is_nlu_json(file):
            files.append(file)
        elif warnings is not None and (what := foreign_nlu_format(file)):
            warnings.append(
                f"{file}: {what}, which botserver does not read, is skipped; convert it to "
                "Rasa's YAML (Rasa's `rasa data convert nlu -f yaml` reads it)"
            )
    return files


def read_nlu_files(paths: Iterable[str | Path]) -> NLUTrainingData:
    """The NLU data of the given files and directories, YAML and JSON, as training reads it."""
    paths = list(paths)
    yaml_parts = [read_nlu_file(f) for f in data_files(paths)]
    return NLUTrainingData.merge([*yaml_parts, *map(read_nlu_json, nlu_json_files(paths))])


def load_project(
    config: str | Path | None,
    domain: str | Path,
    data: Iterable[str | Path],
    env: bool = True,
    missing_domain_is_empty: bool = False,
) -> Project:
    """Reads and checks every project file; the first mistake raises InvalidProjectFile.
    `missing_domain_is_empty`: a domain file that does not exist is an empty domain (as
    Rasa's training reads it), not that error."""
    warnings: list[str] = []
    project_config = read_config(config, env)
    imported = imported_files(config, env)
    domain_reader = DomainReader(warnings)
    if (imported.domain or missing_domain_is_empty) and not Path(domain).exists():
        domain_dict: dict[str, Any] = {}  # the sub-projects' domains are the whole domain
    else:
        domain_dict = domain_reader.read(domain)
    for file in imported.domain:
        domain_dict = domain_reader.add(domain_dict, file, shared=True)
    slot_types = _slot_types(domain_dict)

    data = list(data)
    if imported.data:  # a root project of sub-projects may hold no data of its own
        for absent in [d for d in data if not Path(d).exists()]:
            warnings.append(f"{absent}: training data not found; the imported projects' is used")
            data.remove(absent)
    files = data_files([*data, *imported.data])
    json_files = nlu_json_files([*data, *imported.data], warnings)
    nlu_parts = [read_nlu_json(file) for file in json_files]
    stories: list[StoryStep] = []
    for file in files:
        content = read_yaml_file(file)
        if not isinstance(content, dict):
            if content is not None:
                raise InvalidProjectFile(
                    "a training data file must be a mapping with 'nlu', 'stories', 'rules' or "
                    "'responses'",
                    str(file),
                    getattr(content, "line", None),
                )
            continue
        check_version(content, str(file))
        _warn_unknown_sections(content, str(file), warnings)
        if "nlu" in content or "responses" in content:
            nlu_parts.append(read_nlu_file(file))
        if isinstance(content.get("responses"), dict):
            _add_data_responses(domain_dict, content["responses"], str(file), domain_reader)
        if "stories" in content or "rules" in content:
            stories.extend(read_story_data(content, str(file), slot_types, warnings))
    nlu = NLUTrainingData.merge(nlu_parts)

    # As Rasa's importer does: retrieval responses from NLU files and the bot texts of
    # end-to-end stories become part of the domain.
    responses = dict(domain_dict.get("responses") or {})
    for name, variations in nlu.responses.items():
        responses.setdefault(name, variations)
    if responses:
        domain_dict["responses"] = responses
    # A retrieval intent's answer missing from the responses: the bot would say nothing.
    full_intents = {e.intent for e in nlu.examples if e.intent and "/" in e.intent}
    missing = sorted(name for name in full_intents if f"utter_{name}" not in responses)
    if missing:
        raise InvalidProjectFile(
            f"retrieval intent {missing[0]!r} has no response 'utter_{missing[0]}' in the "
            f"domain or the training data (missing: {', '.join(missing)})",
            str(domain),
        )
    # The ResponseSelector shows a retrieval intent's responses wherever they are written (in
    # the domain too), as Rasa's importer syncs them into the NLU data.
    for name in full_intents:
        nlu.responses[f"utter_{name}"] = responses[f"utter_{name}"]
    # Each retrieval intent gets its `utter_<intent>` action, and is an intent of the domain
    # marked `is_retrieval_intent: true`, as Rasa's importer marks it (GET /domain shows it).
    for intent in nlu.retrieval_intents:
        _add_named(domain_dict, "intents", intent)
        _mark_retrieval_intent(domain_dict, intent)
        _add_named(domain_dict, "actions", f"utter_{intent}")
    action_texts = _action_texts(stories)
    if action_texts:
        existing = list(domain_dict.get("e2e_actions") or [])
        domain_dict["e2e_actions"] = existing + [t for t in action_texts if t not in existing]
    project_domain = domain_reader.build(domain_dict, str(domain))

    # The domain counts in the training fingerprint as read (see train._fingerprint), not
    # by its files' bytes: an edited response retrains, a comment does not.
    return Project(
        project_config,
        project_domain,
        nlu,
        stories,
        files + json_files + nlu.lookup_files,
        warnings,
        domain_reader.origins,
        domain_reader.unchecked,
    )


# Data sections, and the singulars that are their likeliest misspelling.
_DATA_SECTIONS = sorted(TRAINING_DATA_KEYS | {"responses"})
_SINGULARS = {"story": "stories", "rule": "rules", "response": "responses"}


def _warn_unknown_sections(content: dict[Any, Any], filename: str, warnings: list[str]) -> None:
    """A data file's top-level key that misspells a section (`rule:` for `rules:`) is a
    warning naming its line: the file's rules were skipped without a word (Rasa ignores
    unknown keys too). Other keys (a domain's, a config's) say nothing."""
    for key in content:
        if not isinstance(key, str) or key in _DATA_SECTIONS or key in DOMAIN_KEYS:
            continue
        # In whatever case it is written (`NLU:`, `Story:`): keys are read in lower case.
        near = _SINGULARS.get(key.lower()) or next(
            iter(difflib.get_close_matches(key.lower(), _DATA_SECTIONS, 1, cutoff=0.75)), None
        )
        if near:
            line = line_of(content, key)
            where = f"{filename}:{line}" if line else filename
            warnings.append(
                f"{where}: unknown section {brief(key)} is ignored (did you mean '{near}'?)"
            )


def _is_nlu_json(path: Path) -> bool:
    """Whether a `.json` file holds Rasa's JSON NLU data at its top level, as Rasa tells it
    (another file naming `rasa_nlu_data` deeper is skipped, as by Rasa); a broken one naming
    it is read, for its error to name the line."""
    try:
        raw = path.read_bytes()
    except OSError:
        return True  # read_nlu_json says why it cannot be read
    if b'"rasa_nlu_data"' not in raw:
        return False
    try:
        document = loads_untrusted(raw)
    except ValueError:  # not JSON, or nested too deep (TooDeep)
        return True
    return isinstance(document, dict) and "rasa_nlu_data" in document


def _add_data_responses(
    domain_dict: dict[str, Any],
    section: dict[str, Any],
    filename: str,
    reader: DomainReader,
) -> None:
    """As Rasa's importer does, a data file's responses (`data/responses.yml`) become part of
    the domain, and win over the domain's own (retrieval ones: see `read_nlu_file`)."""
    responses = dict(domain_dict.get("responses") or {})
    for name, variations in section.items():
        name = str(name)
        if "/" in name:
            continue
        line = line_of(section, name)
        check_response(name, variations, filename, line)
        reader.check_response_ids(name, variations, filename, line)
        check_json_values(variations, filename, line)
        if name in responses and responses[name] != variations:
            reader.warn(f"response '{name}' is also in the domain; this one wins", filename, line)
        responses[name] = variations
        reader.origins[f"responses:{name}"] = (filename, line)
    domain_dict["responses"] = responses


def load_test_stories(
    paths: Iterable[str | Path],
    domain: Domain | None = None,
    warnings: list[str] | None = None,
) -> list[StoryStep]:
    """Reads the stories (and rules) of test story files, such as `tests/test_stories.yml`."""
    slot_types = {s.name: s.type for s in domain.slots} if domain else {}
    steps: list[StoryStep] = []
    for file in data_files(paths):
        content = read_yaml_file(file)
        if holds_stories(content):
            steps.extend(read_story_data(content, str(file), slot_types, warnings))
    return steps


def holds_stories(content: Any) -> bool:
    """Whether a data file's YAML holds stories or rules (a story file, as Rasa tells one)."""
    return isinstance(content, dict) and ("stories" in content or "rules" in content)


def _slot_types(domain_dict: dict[str, Any]) -> dict[str, str]:
    types: dict[str, str] = {}
    for name, spec in (domain_dict.get("slots") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            types[str(name)] = spec["type"]
    return types


def _action_texts(stories: list[StoryStep]) -> list[str]:
    texts: dict[str, None] = {}
    for step in stories:
        for event in step.events:
            if isinstance(event, ActionExecuted) and event.action_text and not event.action_name:
                texts.setdefault(event.action_text, None)
    return list(texts)


def _add_named(domain_dict: dict[str, Any], section: str, name: str) -> None:
    items = list(domain_dict.get(section) or [])
    names = {item if isinstance(item, str) else next(iter(item)) for item in items}
    if name not in names:
        items.append(name)
    domain_dict[section] = items


def _mark_retrieval_intent(domain_dict: dict[str, Any], name: str) -> None:
    items = []
    for item in domain_dict["intents"]:
        if (item if isinstance(item, str) else next(iter(item))) == name:
            props = {} if isinstance(item, str) else dict(item[name] or {})
            item = {name: {**props, "is_retrieval_intent": True}}
        items.append(item)
    domain_dict["intents"] = items
