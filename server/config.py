"""endpoints.yml and credentials.yml, with `${VAR}` substituted from the environment.

Each file maps a section name (`tracker_store`, `action_endpoint`, `rest`, `rocketchat`...)
to that section's settings. A missing file is no configuration at all, as in Rasa; a `${VAR}`
whose variable is not set is an error naming the variable and the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from server.errors import InvalidConfig, brief
from server.setting_values import warn_of_unknown_keys
from server.training.yaml_io import LineDict, read_yaml_file

logger = logging.getLogger(__name__)

ENDPOINT_SECTIONS = (
    "models",
    "action_endpoint",
    "nlg",
    "nlu",
    "tracker_store",
    "lock_store",
    "event_broker",
)


def _read_sections(path: str | Path | None, what: str) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        logger.info("no %s file at %s; using defaults", what, path)
        return {}
    data = read_yaml_file(path, env=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidConfig(f"{path}: {what} must be a mapping of section names to settings")
    for name, section in data.items():
        if section is not None and not isinstance(section, dict):
            line = getattr(data, "key_lines", {}).get(name)
            where = f"{path}:{line}" if line is not None else str(path)
            raise InvalidConfig(
                f"{where}: section {brief(name)} must be a mapping of settings, "
                f"not {brief(section)}"
            )
    # Each section as read (a LineDict): a warning about one of its keys names the key's line.
    sections = LineDict((str(k), v) for k, v in data.items())
    sections.key_lines = {str(k): n for k, n in getattr(data, "key_lines", {}).items()}
    return sections


def read_endpoints(path: str | Path | None) -> dict[str, Any]:
    """The sections of endpoints.yml; an unknown one is named in a warning and dropped."""
    sections = _read_sections(path, "endpoints")
    warn_of_unknown_keys(sections, ENDPOINT_SECTIONS, str(path), what="section")
    return {k: v for k, v in sections.items() if k in ENDPOINT_SECTIONS}


def read_credentials(path: str | Path | None) -> dict[str, Any]:
    """The channel sections of credentials.yml (channel name or class path → settings)."""
    return _read_sections(path, "credentials")


def setting_lines(sections: dict[str, Any] | None) -> dict[str, Any]:
    """The lines of the sections' keys and of their settings' keys, as JSON-able values: the
    sections reach a worker (`--workers N`) through JSON, which keeps no lines."""
    sections = sections or {}
    return {
        "sections": _lines_as_json(sections),
        "settings": {
            name: _lines_as_json(section)
            for name, section in sections.items()
            if isinstance(section, dict)
        },
    }


def with_text_keys(value: Any) -> Any:
    """`value` with every mapping's keys as their text, as a warning names them: YAML reads
    `2001-01-01:` as a date and `1:` as a number, keys JSON refuses or writes otherwise
    (`true`, `null`), and the sections reach a worker (`--workers N`) through JSON."""
    if isinstance(value, dict):
        return {str(key): with_text_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_text_keys(item) for item in value]
    return value


def with_setting_lines(sections: dict[str, Any], lines: dict[str, Any]) -> dict[str, Any]:
    """`sections` come through JSON, with the lines `setting_lines` gave of them again: a
    worker's warning about a key named no line, and so was said again, not being word for
    word the parent's (`server.logs.SaidAtStart`)."""
    settings = lines.get("settings") or {}
    result = _with_lines(sections, lines.get("sections") or {})
    for name, section in sections.items():
        if isinstance(section, dict):
            result[name] = _with_lines(section, settings.get(name) or {})
    return result


def _lines_as_json(mapping: dict[Any, Any]) -> dict[str, int]:
    return {str(key): n for key, n in (getattr(mapping, "key_lines", None) or {}).items()}


def _with_lines(mapping: dict[Any, Any], lines: dict[str, int]) -> LineDict:
    result = LineDict(mapping)
    result.key_lines = {key: lines[str(key)] for key in mapping if str(key) in lines}
    return result
