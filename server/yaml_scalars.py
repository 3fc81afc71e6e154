"""How plain YAML scalars are typed: as YAML 1.2 reads them (and so Rasa), for the loaders;
and a dumper that quotes any text YAML 1.1 or 1.2 would read as another type."""

from __future__ import annotations

import re
from typing import Any

import yaml

from server.json_values import check_int_digits, check_int_size

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2's plain scalars, which Rasa reads every file as: only true/false are booleans
# (`yes`, `no`, `on`, `off` are text: an intent, a categorical value, a slot's value in a
# story), and `10:30` is text, not 1.1's base-60 number 630; `1e3` is a number; `08` and
# `0777` are the decimal 8 and 777 (1.1's octal is written `0o777`). Underscores are read as
# Rasa's reader (ruamel.yaml) reads them; a number needs a digit (`0x_` is text).
_BOOL_1_2 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
# Each run of digits and underscores is written `_*[0-9][0-9_]*`, which one text matches one
# way only: `[0-9_]*[0-9][0-9_]*` (the same texts) tried every split of the run, and 40,000
# digits ending in a letter, a plain scalar of one line, took 12 s of CPU to read as text.
_INT_1_2 = re.compile(
    r"""^(?:[-+]?0b_*[0-1][0-1_]*
    |[-+]?0o_*[0-7][0-7_]*
    |[-+]?_*[0-9][0-9_]*
    |[-+]?0x_*[0-9a-fA-F][0-9a-fA-F_]*)$""",
    re.X,
)
_INT_BASES = {"0b": 2, "0o": 8, "0x": 16}
_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def resolvers_1_2() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """PyYAML's safe implicit types (it knows only YAML 1.1) with 1.2's booleans, integers
    (`0777` decimal, `0o777` octal; see `construct_int_1_2`), no base-60 integers or floats,
    and floats with an exponent but no point; `1_000` stays as PyYAML reads it."""
    replaced = {_BOOL_TAG: _BOOL_1_2, _INT_TAG: _INT_1_2, _FLOAT_TAG: _FLOAT_1_2}
    firsts = {_BOOL_TAG: "tTfF", _INT_TAG: "-+0123456789", _FLOAT_TAG: "-+0123456789."}
    resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items():
        resolvers[first] = [(tag, regexp) for tag, regexp in entries if tag not in replaced]
    for tag, regexp in replaced.items():
        for first in firsts[tag]:
            resolvers.setdefault(first, []).insert(0 if tag == _FLOAT_TAG else 1, (tag, regexp))
    return resolvers


def construct_int_1_2(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> int:
    """An integer as YAML 1.2 reads it: a leading zero is decimal (PyYAML's 1.1 reading
    took `0777` for octal, 511), `0o` octal, `0x` hexadecimal, `0b` binary."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    base = _INT_BASES.get(digits[:2])
    if base:
        value = int(digits[2:], base)  # read at any length, but written by no Python past
        check_int_size(value, "it")  # 4,300 decimal digits
        return sign * value
    check_int_digits(digits, "it")
    return sign * int(digits, 10)


def _dump_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """PyYAML's YAML 1.1 implicit types followed by 1.2's: text either reads as another type
    (`yes` in 1.1, `1e3` or `2.5e3` in 1.2) is written quoted."""
    resolvers = {
        first: list(entries) for first, entries in yaml.SafeDumper.yaml_implicit_resolvers.items()
    }
    for first, entries in resolvers_1_2().items():
        resolvers.setdefault(first, []).extend(e for e in entries if e not in resolvers[first])
    return resolvers


class SafeDumper12(yaml.SafeDumper):
    """PyYAML's safe dumper writing what reads back the same as YAML 1.1 and 1.2: PyYAML's
    own quotes only what 1.1 types, so the text `1e3` was written plain, and read back by
    Rasa (and botserver) as the number 1000.0. A list or mapping of a subclass (the
    line-aware ones a project file reads as) is written as a plain one: PyYAML's refused it,
    so a list slot a test story set could not be written back."""

    yaml_implicit_resolvers = _dump_resolvers()


SafeDumper12.add_multi_representer(list, SafeDumper12.represent_list)
SafeDumper12.add_multi_representer(dict, SafeDumper12.represent_dict)
