"""`botserver data convert nlu`: NLU data between Rasa's JSON format and Rasa 3 YAML."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from server.errors import InvalidProjectFile
from server.nlu.training_data import NLUTrainingData
from server.training.nlu_json import nlu_json, read_nlu_json
from server.training.nlu_yaml import nlu_yaml, read_nlu_file
from server.training.yaml_io import folder_files, is_yaml_file

logger = logging.getLogger(__name__)

SUFFIXES = {"yaml": ".yml", "json": ".json"}
_FILE_SUFFIXES = (".yml", ".yaml", ".json")


@dataclass
class Converted:
    path: Path
    examples: int


def _input_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += folder_files(path, _FILE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidProjectFile("NLU data not found", raw)
    return files


def read_nlu_data(paths: list[str]) -> NLUTrainingData:
    """The NLU data of JSON and YAML files and directories, merged."""
    parts = []
    for file in _input_files(paths):
        if file.suffix == ".json":
            parts.append(read_nlu_json(file))
        elif is_yaml_file(file):
            parts.append(read_nlu_file(file))
        elif file.suffix == ".md":
            raise InvalidProjectFile(_MARKDOWN, str(file))
        else:
            raise InvalidProjectFile("not NLU data: give a .json, .yml or .yaml file", str(file))
    return NLUTrainingData.merge(parts)


# Rasa 3 reads no Markdown training data either; Rasa 2.x's converter writes YAML from it.
_MARKDOWN = (
    "Rasa 2's Markdown format is not read (Rasa 3 does not read it either): convert it to "
    "YAML with Rasa 2.8's `rasa data convert nlu -f yaml --data <file> --out <file>.yml`"
)


def _markdown_files(paths: list[str]) -> list[Path]:
    """The Markdown files of the given directories (a directory of Rasa 2 data)."""
    return [
        file for raw in paths if Path(raw).is_dir() for file in folder_files(Path(raw), (".md",))
    ]


def output_path(out: Path, first_input: Path, output_format: str) -> Path:
    """`out` when it names a file (.yml, .yaml, .json); else a file in that directory named
    after the input (`demo.json` -> `converted_data/demo.yml`)."""
    if out.suffix in _FILE_SUFFIXES and not out.is_dir():
        return out
    return out / (first_input.stem + SUFFIXES[output_format])


def convert_nlu(paths: list[str], out: Path, output_format: str) -> Converted:
    """Reads the data and writes it in `output_format` ("yaml" or "json")."""
    data = read_nlu_data(paths)
    if not data.examples:
        markdown = _markdown_files(paths)
        if markdown:
            raise InvalidProjectFile(_MARKDOWN, str(markdown[0]))
        raise InvalidProjectFile("no NLU examples to convert", ", ".join(paths))
    target = output_path(out, Path(paths[0]), output_format)
    if output_format == "yaml":
        without_intent = sum(1 for e in data.examples if not e.intent)
        if without_intent:
            left_out = (
                "1 example has no intent: Rasa 3 YAML has no place for it"
                if without_intent == 1
                else f"{without_intent} examples have no intent: Rasa 3 YAML has no place for them"
            )
            logger.warning("%s; left out", left_out)
        if not data.intent_examples:
            raise InvalidProjectFile("no example has an intent: nothing to write", paths[0])
        text = nlu_yaml(data)
        count = len(data.intent_examples)
    else:
        if data.responses:
            logger.warning(
                "Rasa's JSON NLU format has no place for responses; %d left out",
                len(data.responses),
            )
        text = nlu_json(data)
        count = len(data.examples)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return Converted(target, count)
