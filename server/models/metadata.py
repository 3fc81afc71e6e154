"""`metadata.json`: what we add to the trainer's dict, and what we accept when reading.

Rasa archives and other format versions are refused with a message that says what to do.
Metadata is data: a value that names code to import is refused, and nothing is imported.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import server
from server.errors import UnsafeArchive, UnsupportedModel

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
# How a model archive's file name ends (`-m`'s check needs it without the archive reader).
ARCHIVE_SUFFIX = ".tar.gz"
RASA2_MARKER = "fingerprint.json"
# The trainer's fingerprint of its inputs (see server.models.fingerprint).
TRAINING_FINGERPRINT_KEY = "fingerprint"
# What `botserver train` makes of a project. Bump TRAINING_FORMAT whenever training the same
# files gives another archive: a new component or archive file, a learnt state read another
# way, a new metadata key a loader decides by. It is in the metadata and the fingerprint, so
# `train` retrains an archive of another format; loaders read every format. The history:
#   0  every entity role and group counted in the dialogue (no marker in the metadata)
#   1  a role or group counts only where the domain lists it (`entity_roles: "listed"`)
#   2  the format itself in the metadata (`training_format`) and the fingerprint
#   3  KeywordIntentClassifier trained as Rasa's (keywords, a null intent without one; was the
#      linear classifier), SGD-trained CRFs the same for the same data
#   4  EntitySynonymMapper maps each value's lower case to the value, as Rasa's
#   5  a story's `or` of a `slot_was_set` with several slots is one alternative per slot
#   6  an NLU block's '- ' line indented more than the block is skipped, as Rasa's reader
#      skips it (was stripped and trained); a block's lines end at U+2028 and U+2029 too
#   7  MemoizationPolicy's histories as a tree (a node per distinct history), not a lookup
#      keyed by each history's text
TRAINING_FORMAT = 7
TRAINING_FORMAT_KEY = "training_format"
# Since this format, a role or group counts only where the domain lists it.
ROLES_LISTED_SINCE = 1
# Since this format, the training fingerprint covers the format (before, it did not).
FORMAT_FINGERPRINTED_SINCE = 2
# Format 1's marker, read from archives without a TRAINING_FORMAT_KEY number. Still written:
# a botserver before format 2 decides by it alone, and would read an archive without it as
# format 0 (every role counting) after a rollback.
ENTITY_ROLES_KEY = "entity_roles"
ENTITY_ROLES_LISTED = "listed"
# What a trainer of today writes in an archive's metadata to say how it trained.
TRAINED_AS_TODAY = {TRAINING_FORMAT_KEY: TRAINING_FORMAT, ENTITY_ROLES_KEY: ENTITY_ROLES_LISTED}

RASA_MESSAGE = "This is a Rasa model; retrain it with `botserver train`"

# Keys that, in formats that load code (Rasa's train_schema, jsonpickle, YAML tags), name a
# module or class to import. We would never import them; an archive carrying them is hostile.
_CODE_KEYS = frozenset(
    {
        "uses",
        "class",
        "class_path",
        "module",
        "module_path",
        "import",
        "import_path",
        "callable",
        "constructor_name",
        "entrypoint",
        "entry_point",
        "factory",
        "loader",
        "persistor",
        "py/object",
        "py/reduce",
        "py/type",
        "py/function",
        "__class__",
        "__module__",
        "__reduce__",
    }
)
_DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+([:.][A-Za-z_]\w*)?$")


def build_metadata(caller: dict[str, Any]) -> dict[str, Any]:
    """The caller's metadata plus format version, botserver version, model id and time."""
    check_names_no_code(caller)
    metadata = dict(caller)
    metadata.update(
        format_version=FORMAT_VERSION,
        botserver_version=server.__version__,
        model_id=uuid.uuid4().hex,
        trained_at=datetime.now(UTC).isoformat(),
    )
    return metadata


def training_format_of(metadata: dict[str, Any]) -> int:
    """The training format an archive was made in (see TRAINING_FORMAT); an archive from
    before the key, or whose value is no format number (a string, a float, a negative), counts
    by format 1's marker."""
    value = metadata.get(TRAINING_FORMAT_KEY)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return ROLES_LISTED_SINCE if metadata.get(ENTITY_ROLES_KEY) == ENTITY_ROLES_LISTED else 0


def parse_metadata(raw: bytes) -> dict[str, Any]:
    """Decode `metadata.json` and refuse what we cannot or must not load."""
    try:
        metadata = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedModel(f"{METADATA_FILE} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise UnsafeArchive(f"{METADATA_FILE} is nested too deeply") from None
    if not isinstance(metadata, dict):
        raise UnsupportedModel(f"{METADATA_FILE} must hold a JSON object")
    if is_rasa_metadata(metadata):
        version = metadata.get("rasa_open_source_version", "3.x")
        raise UnsupportedModel(f"{RASA_MESSAGE} (trained with Rasa {version}).")
    check_format_version(metadata)
    try:
        check_names_no_code(metadata)
    except RecursionError:
        raise UnsafeArchive(f"{METADATA_FILE} is nested too deeply") from None
    return metadata


def is_rasa_metadata(metadata: dict[str, Any]) -> bool:
    return any(key in metadata for key in ("rasa_open_source_version", "train_schema"))


def check_format_version(metadata: dict[str, Any]) -> None:
    version = metadata.get("format_version")
    if version == FORMAT_VERSION:
        return
    if not isinstance(version, int):
        raise UnsupportedModel(
            f"{METADATA_FILE} has no valid format_version; this is not a botserver model. "
            "Train one with `botserver train`."
        )
    trained_with = metadata.get("botserver_version", "an unknown version")
    if version < FORMAT_VERSION:
        raise UnsupportedModel(
            f"The model uses archive format {version} (botserver {trained_with}); this server "
            f"reads format {FORMAT_VERSION}. Retrain it with `botserver train`."
        )
    raise UnsupportedModel(
        f"The model uses archive format {version} (botserver {trained_with}), newer than this "
        f"server's format {FORMAT_VERSION} (botserver {server.__version__}). Upgrade botserver "
        "or train the model with this version."
    )


def check_names_no_code(value: Any, where: str = "") -> None:
    """Refuse metadata in which a code-naming key holds a module path or a YAML code tag."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if str(key) in _CODE_KEYS and _looks_like_code(item):
                raise UnsafeArchive(
                    f"Model metadata '{path}' names code to import ({item!r}); "
                    "botserver archives hold data only"
                )
            check_names_no_code(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_names_no_code(item, f"{where}[{index}]")
    elif isinstance(value, str) and value.startswith(("!!python/", "!python/")):
        raise UnsafeArchive(f"Model metadata '{where}' holds a Python YAML tag ({value!r})")


def _looks_like_code(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_DOTTED_PATH.match(value)) or value.startswith(("!!python/", "!python/"))
    return False
