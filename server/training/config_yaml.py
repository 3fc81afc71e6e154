"""Read a Rasa 3 `config.yml`: language, pipeline, policies, assistant_id and recipe, with
Rasa's defaults for empty sections and `${VAR}` substitution."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig, InvalidProjectFile, brief
from server.setting_values import near_miss
from server.training.yaml_io import check_json_values, line_of, parse_yaml, read_yaml_file

DEFAULT_RECIPE = "default.v1"


@dataclass
class ProjectConfig:
    """The model configuration of a project; `defaulted` names the sections that were empty."""

    language: str
    pipeline: list[dict[str, Any]]
    policies: list[dict[str, Any]]
    assistant_id: str | None = None
    recipe: str = DEFAULT_RECIPE
    filename: str | None = None
    defaulted: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    # The line of each item of 'pipeline' and 'policies' in the file (none for defaults).
    item_lines: dict[str, list[int | None]] = field(default_factory=dict)
    # What training says of the file's top level (`_misspelt_key_warnings`).
    warnings: list[str] = field(default_factory=list)

    def line_of_item(self, item: tuple[str, int] | None) -> int | None:
        """The line of config.yml's `item` (section, index), if it was read from the file."""
        if item is None:
            return None
        lines = self.item_lines.get(item[0], [])
        return lines[item[1]] if 0 <= item[1] < len(lines) else None

    def as_dict(self) -> dict[str, Any]:
        """The effective configuration, defaults filled in (what a model archive records)."""
        out = {k: v for k, v in self.raw.items() if k not in _KNOWN_KEYS}
        out.update(
            {
                "recipe": self.recipe,
                "language": self.language,
                "assistant_id": self.assistant_id,
                "pipeline": copy.deepcopy(self.pipeline),
                "policies": copy.deepcopy(self.policies),
            }
        )
        return out


@contextmanager
def naming_config_items(config: ProjectConfig) -> Iterator[None]:
    """A component or policy refusing its name or parameters names config.yml and the
    item's line too."""
    try:
        yield
    except InvalidConfig as exc:
        if config.filename is None:
            raise
        raise InvalidProjectFile(str(exc), config.filename, config.line_of_item(exc.item)) from None


_KNOWN_KEYS = frozenset({"recipe", "language", "assistant_id", "pipeline", "policies"})
# The other top-level keys Rasa reads: its schema's, and its importers'.
_RASA_KEYS = _KNOWN_KEYS | {"version", "spaces", "importers", "imports"}
_DEFAULTED = {
    "language": "the language is English",
    "pipeline": "the default pipeline is trained",
    "policies": "the default policies are trained",
}


def _misspelt_key_warnings(
    data: dict[Any, Any], filename: str | None, defaulted: list[str]
) -> list[str]:
    """A warning for each top-level key that is a near miss of one Rasa reads (`polices:`):
    Rasa takes any key (an importer may read its own), so the default policies were trained
    without a word. Other keys say nothing."""
    warnings = []
    for key in data:
        if key in _RASA_KEYS:
            continue
        meant = near_miss(key, sorted(_RASA_KEYS))
        if meant is None:
            continue
        line = line_of(data, key)
        where = f"{filename or 'config.yml'}{'' if line is None else f':{line}'}"
        warning = f"{where}: unknown key '{key}' is not read (nor by Rasa); did you mean '{meant}'?"
        if meant in defaulted:
            warning += f" Without it, {_DEFAULTED[meant]}"
        warnings.append(warning)
    return warnings


@functools.cache
def _default_config_dict() -> dict[str, Any]:
    text = resources.files("server.training").joinpath("default_config.yml").read_text("utf-8")
    data = parse_yaml(text, "default_config.yml")
    assert isinstance(data, dict)
    return data


def default_config() -> dict[str, Any]:
    """Rasa's default configuration (a fresh copy)."""
    return copy.deepcopy(_default_config_dict())


def read_config(path: str | Path | None, env: bool = True) -> ProjectConfig:
    """Reads config.yml; no path (or an empty file) gives Rasa's default configuration.
    `env`: `${VAR}` takes the server's environment (not for a config a client sent)."""
    if path is None:
        return config_from_dict({}, None)
    data = read_yaml_file(path, env=env)
    return config_from_dict(data, str(path))


def config_from_dict(data: Any, filename: str | None = None) -> ProjectConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidProjectFile(
            "a config file must be a mapping with 'language', 'pipeline' and 'policies'",
            filename,
            line_of(data),
        )
    # The model's metadata keeps the config as JSON: a date (`when: 2020-01-01` unquoted) or
    # a set made that write fail with a traceback once training was done.
    check_json_values(data, filename)
    defaults = _default_config_dict()
    defaulted: list[str] = []

    recipe = data.get("recipe") or DEFAULT_RECIPE
    if recipe != DEFAULT_RECIPE:
        # A graph.v1 config describes its graph in train_schema/predict_schema, which we do
        # not run; training its (empty) pipeline and policies gave a model that knew nothing.
        raise InvalidProjectFile(
            f"recipe {brief(recipe)} is not supported: botserver trains the '{DEFAULT_RECIPE}' "
            "recipe (a 'pipeline' and 'policies'); remove the 'recipe' key or use "
            f"'recipe: {DEFAULT_RECIPE}'",
            filename,
            line_of(data, "recipe"),
        )

    language = data.get("language")
    if language is None or language == "":
        language = defaults["language"]
        defaulted.append("language")
    elif not isinstance(language, str):
        raise InvalidProjectFile(
            f"'language' must be a language code such as 'en', not {brief(language)}",
            filename,
            line_of(data, "language"),
        )

    assistant_id = data.get("assistant_id")
    if assistant_id is not None and not isinstance(assistant_id, (str, int)):
        raise InvalidProjectFile(
            "'assistant_id' must be a name", filename, line_of(data, "assistant_id")
        )

    sections: dict[str, list[dict[str, Any]]] = {}
    item_lines: dict[str, list[int | None]] = {}
    for section in ("pipeline", "policies"):
        value = data.get(section)
        if value in (None, [], ""):
            sections[section] = copy.deepcopy(defaults[section])
            defaulted.append(section)
            continue
        line = line_of(data, section)
        sections[section] = _components(value, section, filename, line)
        item_lines[section] = [line_of(item, "name", line) for item in value]

    return ProjectConfig(
        language=language,
        pipeline=sections["pipeline"],
        policies=sections["policies"],
        assistant_id=None if assistant_id is None else str(assistant_id),
        recipe=recipe,
        filename=filename,
        defaulted=defaulted,
        raw=_plain(data),
        item_lines=item_lines,
        warnings=_misspelt_key_warnings(data, filename, defaulted),
    )


def _components(
    value: Any, section: str, filename: str | None, line: int | None
) -> list[dict[str, Any]]:
    what = "component" if section == "pipeline" else "policy"
    if not isinstance(value, list):
        plural = "components" if section == "pipeline" else "policies"
        raise InvalidProjectFile(
            f"'{section}' must be a list of {plural}, each with a 'name'", filename, line
        )
    components = []
    for index, item in enumerate(value):
        item_line = line_of(value, index, line)
        if not isinstance(item, dict):
            raise InvalidProjectFile(
                f"each {what} in '{section}' must be a mapping with a 'name', not {brief(item)}",
                filename,
                item_line,
            )
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidProjectFile(
                f"a {what} in '{section}' needs a 'name'", filename, line_of(item, "name")
            )
        for key in item:
            if not isinstance(key, str):
                raise InvalidProjectFile(
                    f"the option {_as_written(key)} of {what} {brief(name)} is not a name "
                    f"(YAML reads it as {_yaml_kind(key)}); an option's name is text such as "
                    "'epochs'",
                    filename,
                    # (not line_of, which takes a None key for none)
                    getattr(item, "key_lines", {}).get(key, item_line),
                )
        components.append(_plain(item))
    return components


def _as_written(key: Any) -> str:
    """A key YAML read as a number, a boolean or null, as the file wrote it (`1`, `true`)."""
    return json.dumps(key) if isinstance(key, int | float | bool | type(None)) else brief(key)


def _yaml_kind(key: Any) -> str:
    if isinstance(key, bool):
        return "a boolean"
    if key is None:
        return "null"
    return "a number" if isinstance(key, int | float) else f"a {type(key).__name__}"


def _plain(value: Any) -> Any:
    """Plain dicts and lists (no line bookkeeping) for what is stored and compared."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
