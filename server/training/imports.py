"""Rasa's training data importers in config.yml: `MultiProjectImporter` and its `imports`
(sub-project folders, relative to the config file, followed through each sub-project's own
config.yml), whose domain and data files join the project's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import InvalidProjectFile, brief
from server.training.domain_yaml import TRAINING_DATA_KEYS, is_domain_data
from server.training.yaml_io import folder_files, line_of, read_yaml_file

MULTI_PROJECT = "MultiProjectImporter"
# RasaFileImporter is Rasa's default: the files given on the command line, as we read them.
SUPPORTED_IMPORTERS = ("RasaFileImporter", MULTI_PROJECT)
_CONFIG_NAMES = ("config.yml", "config.yaml")


@dataclass
class ImportedFiles:
    """The domain and training data files of the imported sub-projects."""

    domain: list[Path] = field(default_factory=list)
    data: list[Path] = field(default_factory=list)


def imported_files(config_file: str | Path | None, env: bool = True) -> ImportedFiles:
    """The files config.yml's MultiProjectImporter imports (none without it). An importer
    botserver does not run, or an import that is not there, is an error with file and line.
    `env=False`, a project a client sent: imports would read the server's disk, refused."""
    found = ImportedFiles()
    if config_file is None:
        return found
    path = Path(config_file)
    data = read_yaml_file(path, env=env)
    if not isinstance(data, dict) or not _uses_multi_project(data, str(path)):
        return found
    if data.get("imports") and not env:
        raise InvalidProjectFile(
            f"'imports' of the {MULTI_PROJECT} name folders on the server; a project sent for "
            "training must hold all its files",
            str(path),
            line_of(data, "imports"),
        )
    _follow(path, data, {path.resolve()}, found)
    return found


def _uses_multi_project(data: dict[str, Any], filename: str) -> bool:
    importers = data.get("importers")
    if importers is None:
        return False
    if not isinstance(importers, list):
        raise InvalidProjectFile(
            "'importers' must be a list such as '- name: MultiProjectImporter'",
            filename,
            line_of(data, "importers"),
        )
    names = []
    for index, item in enumerate(importers):
        name = item.get("name") if isinstance(item, dict) else None
        if name not in SUPPORTED_IMPORTERS:
            what = f"importer {brief(name)}" if name is not None else f"importer {brief(item)}"
            raise InvalidProjectFile(
                f"{what} is not supported: botserver reads the project's files itself "
                f"(as RasaFileImporter) and sub-projects with {MULTI_PROJECT}; custom "
                "importers (Python code) cannot be loaded",
                filename,
                line_of(importers, index, line_of(data, "importers")),
            )
        names.append(name)
    return MULTI_PROJECT in names


def _follow(config_file: Path, data: dict[str, Any], seen: set[Path], found: ImportedFiles) -> None:
    """Reads the folders `data['imports']` names, relative to `config_file`'s folder."""
    imports = data.get("imports") or []
    if not isinstance(imports, list):
        raise InvalidProjectFile(
            "'imports' must be a list of sub-project folders",
            str(config_file),
            line_of(data, "imports"),
        )
    for index, entry in enumerate(imports):
        line = line_of(imports, index, line_of(data, "imports"))
        if not isinstance(entry, str) or not entry:
            raise InvalidProjectFile(
                f"each import must be a folder path, not {brief(entry)}", str(config_file), line
            )
        target = (config_file.parent / entry).resolve()
        if target in seen:
            continue
        seen.add(target)
        if target.is_dir():
            _read_project(target, seen, found)
        elif target.is_file() and target.name in _CONFIG_NAMES:
            _read_config(target, seen, found)
        else:
            raise InvalidProjectFile(
                f"import '{entry}' is not a folder (nor a config.yml) under {config_file.parent}",
                str(config_file),
                line,
            )


def _read_config(path: Path, seen: set[Path], found: ImportedFiles) -> None:
    """A sub-project's config.yml: only its `imports` count (the root config trains)."""
    seen.add(path.resolve())
    data = read_yaml_file(path)
    if isinstance(data, dict):
        _follow(path, data, seen, found)


def _read_project(folder: Path, seen: set[Path], found: ImportedFiles) -> None:
    for file in folder_files(folder):
        if file.name in _CONFIG_NAMES:
            if file.resolve() not in seen:
                _read_config(file, seen, found)
            continue
        if _is_test_stories(file, folder):
            continue
        content = read_yaml_file(file)
        if is_domain_data(content):
            found.domain.append(file)
        if isinstance(content, dict) and any(key in content for key in TRAINING_DATA_KEYS):
            found.data.append(file)


def _is_test_stories(file: Path, folder: Path) -> bool:
    """Test stories (`tests/`, `test_*.yml`) are for `botserver test`, not training."""
    relative = file.relative_to(folder)
    return file.name.startswith("test_") or "tests" in relative.parts[:-1]
