"""Routes under /model: train, test stories and intents, predict, parse, load and unload.

Training, evaluation, parsing and prediction run off the event loop; loading a model swaps
it in only once it is fully built, so requests in flight finish on the old one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.background import BackgroundTask

from server.api.body_lines import line_in_body
from server.api.conversations import check_events
from server.api.errors import ApiError, bad_request, response_for
from server.api.openapi import (
    error_responses,
    json_request,
    json_response,
    request_body,
)
from server.api.parse_emulation import EMULATORS
from server.api.query import FirstValueRoute, bool_arg, event_verbosity, int_arg
from server.api.request_body import (
    parse_json,
    parse_json_off_loop,
    read_json_body,
    read_json_object,
    refuse_compressed,
)
from server.api.schemas import (
    EVENT_LIST,
    PARSE_FORMATS,
    ModelRequest,
    NLUEvaluationResult,
    NLUTestData,
    ParseRequest,
    PredictResult,
    StoriesEvaluationResult,
    TrainingRequest,
    ref,
)
from server.api.services import Services, services_of
from server.api.tracker_response import around_prediction, freed_after_sending, tracker_response
from server.auth import keep_endpoint_secrets_out_of_logs, redact, require_auth
from server.dialogue.http_endpoint import Answer
from server.dialogue.messages import MAX_TEXT_CHARS
from server.dialogue.processor import DialogueModel
from server.errors import (
    BotServerError,
    InvalidConfig,
    InvalidEvent,
    InvalidProjectFile,
    ModelNotFound,
    ModelStorageFull,
    ModelSuperseded,
    ModelUnavailable,
    NothingToTrain,
    TrainingError,
    clipped,
    how_many,
)
from server.http_clients import async_client_off_loop, retrying_connect_failures
from server.json_values import OFF_LOOP_JSON_BYTES, key_given_twice
from server.long_jobs import run_long_job
from server.models.archive import read_archive
from server.models.loading import load_model
from server.models.local import resolve_local_model
from server.run_flags import STORAGES
from server.trackers.events import events_from_list, off_loop_for
from server.trackers.freeing import free_off_loop
from server.trackers.tracker import Tracker
from server.training.yaml_io import load_plain_yaml
from server.urls import safe_url
from server.yaml_scalars import SafeDumper12

logger = logging.getLogger(__name__)

HELP_TRAINING_DATA = "https://rasa.com/docs/rasa/training-data-format"
# Keys of a training document that give a model something to learn (a domain or data).
_TRAINABLE_KEYS = frozenset(
    {"intents", "entities", "slots", "responses", "actions", "forms", "nlu", "stories", "rules"}
)

_CONFIG_KEYS = (
    "recipe",
    "language",
    "pipeline",
    "policies",
    "assistant_id",
    "importers",
    "imports",
)
_DATA_KEYS = ("nlu", "stories", "rules")
# Deprecated body fields of Rasa's spec, not part of any project file.
_IGNORED_KEYS = ("force", "save_to_default_model_directory")
# Rasa 2's JSON training request: each of these a YAML file as a string.
_YAML_STRING_PARTS = ("config", "domain", "responses", "nlu", "stories", "rules")
_YAML_STRING_EXAMPLE = {
    "config": "'pipeline' and 'policies'",
    "domain": "'intents' and 'responses'",
    "responses": "'responses'",
    "nlu": "'nlu'",
    "stories": "'stories' and 'rules'",
    "rules": "'rules'",
}
_YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml", "text/yml", "text/x-yaml")


# ------------------------------------------------------------------------------- helpers


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _yaml_document(raw: bytes, what: str, part: str | None = None, or_json: bool = False) -> Any:
    """`raw` read as YAML; errors name the body, or its `part` (a JSON field holding YAML).
    `or_json`: `raw` that opens as JSON and reads as no YAML is read as JSON (`_sniffed_document`);
    YAML it is (a key given twice) stays YAML's to refuse."""
    where = "request body" if part is None else f"'{part}' of the request body"
    details = {"in": "body"} if part is None else {"parameter": part, "in": "body"}
    try:
        return load_plain_yaml(raw.decode("utf-8"))
    except InvalidProjectFile as exc:  # a key given twice, too deep, too many aliases
        at = f"{where}:{exc.line}" if exc.line is not None else where
        raise ApiError(400, "BadRequest", f"{at}: {exc.reason}", details) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        if or_json and _opens_as_json(raw) and not _has_unquoted_key(raw):
            return _json_document(raw)
        refuse_compressed(raw)
        raise ApiError(
            400,
            "BadRequest",
            f"The {where} does not contain valid YAML. Error: {_first_line(exc)}",
            details,
            HELP_TRAINING_DATA,
        ) from None
    except RecursionError:
        raise bad_request(f"The {what} is nested too deeply.") from None


def _sniffed_document(raw: bytes, what: str, content_type: str) -> Any:
    """`raw` read as YAML, or, unless labelled YAML, as JSON when it opens as JSON and reads
    as no YAML: broken JSON then gets the JSON parser's error (line and column), not YAML's
    view of it, and JSON that UTF-8 YAML cannot read (UTF-16) reads. JSON that reads as YAML
    YAML judges: a key given twice is refused with its line, where JSON's parser kept the
    last value without a word (before, a training body's first 'nlu' went)."""
    return _yaml_document(raw, what, or_json=content_type not in _YAML_TYPES)


def _json_document(raw: bytes) -> Any:
    """`raw` read as JSON; a key given twice in one object is a 400 naming its line, as Rasa
    (which reads these bodies as YAML) refuses it, where JSON's parser kept its last value
    without a word (a training body's first 'nlu' list gone)."""
    document = parse_json(raw)
    key = key_given_twice(raw)
    if key is not None:
        _refuse_a_key_given_twice(raw, key)
    return document


def _refuse_a_key_given_twice(raw: bytes, key: str) -> NoReturn:
    """The 400 for the JSON `raw` whose `key` is given twice, naming its line where YAML reads
    `raw` (a slow parser: run it off the event loop)."""
    try:  # YAML reads most JSON, and names the line (JSON in UTF-16 too, decoded first)
        load_plain_yaml(raw.decode(json.detect_encoding(raw)))
    except InvalidProjectFile as exc:
        if exc.line is not None:
            raise ApiError(
                400, "BadRequest", f"request body:{exc.line}: {exc.reason}", {"in": "body"}
            ) from None
    except (yaml.YAMLError, UnicodeDecodeError):
        pass
    message = f"request body: the key '{key[:100]}' is given twice in one mapping"
    raise ApiError(400, "BadRequest", message, {"in": "body"})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split())[:300] if text else type(exc).__name__


async def _body_document(request: Request, empty_message: str, what: str) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "BadRequest", empty_message)
    content_type = _content_type(request)
    # Off the loop whatever its size, as a training body is read in any case: a key given
    # twice is looked for by a second JSON parse, and its line by YAML's, 40 times slower.
    # Labelled JSON but not opening as JSON: YAML, as Rasa reads every training body.
    if content_type == "application/json" and _opens_as_json(raw):
        return await asyncio.to_thread(_json_document, raw)
    return await asyncio.to_thread(_sniffed_document, raw, what, content_type)


def _model_of(services: Services) -> DialogueModel:
    return services.agent.model()


def _dump_yaml(data: Any, path: Path) -> Path:
    text = yaml.dump(data, Dumper=SafeDumper12, sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class _TrainingJob:
    """What one POST /model/train trains, and how."""

    document: dict[str, Any]
    # The body the document was read from, for the lines of its errors; None when it was
    # put together from parts (Rasa 2's JSON of YAML strings).
    body: bytes | None
    force: bool
    augmentation: int | None


def _project_error(exc: InvalidProjectFile, directory: Path, body: bytes | None) -> ApiError:
    """The error naming its line in the body (`request body:12: ...`), or else the part of
    the body (`config.yml`, `domain.yml`, `data/data.yml`): never a line of the files
    `_write_project` wrote, which the client never saw."""
    reason = exc.reason.replace(str(directory) + "/", "")
    line = None
    if body is not None and exc.filename and exc.line is not None:
        written = Path(exc.filename)
        if written.is_relative_to(directory) and written.is_file():
            text = body.decode("utf-8", "replace")  # JSON in UTF-16 then reads as no YAML
            line = line_in_body(text, written.read_text(encoding="utf-8"), exc.line)
    if line is not None:
        message = f"request body:{line}: {reason}"
    else:
        where = exc.filename.replace(str(directory) + "/", "") + ": " if exc.filename else ""
        message = f"request body: {where}{reason}"
    return ApiError(400, "BadRequest", message, {"in": "body"}, HELP_TRAINING_DATA)


def _write_project(document: dict[str, Any], directory: Path) -> tuple[Path | None, Path, Path]:
    """Splits Rasa's one-document training request into config, domain and data files."""
    config = {k: document[k] for k in _CONFIG_KEYS if k in document}
    data = {k: document[k] for k in _DATA_KEYS if document.get(k) is not None}
    skip = set(_CONFIG_KEYS) | set(_DATA_KEYS) | set(_IGNORED_KEYS)
    domain = {k: v for k, v in document.items() if k not in skip}
    config_path = _dump_yaml(config, directory / "config.yml") if config else None
    domain_path = _dump_yaml(domain, directory / "domain.yml")
    data_dir = directory / "data"
    data_dir.mkdir()
    if data:
        _dump_yaml({"version": document.get("version", "3.1"), **data}, data_dir / "data.yml")
    return config_path, domain_path, data_dir


def _is_of_yaml_strings(document: dict[str, Any]) -> bool:
    return any(isinstance(document.get(key), str) for key in _YAML_STRING_PARTS)


def _merge_yaml_strings(document: dict[str, Any]) -> dict[str, Any]:
    """Rasa 2's JSON training request, each part a YAML file as a string, as one document."""
    merged = {k: v for k, v in document.items() if k not in _YAML_STRING_PARTS}
    origin: dict[str, str] = {}
    for key in _YAML_STRING_PARTS:
        text = document.get(key)
        if text is None:
            continue
        part = _yaml_document(text.encode("utf-8"), key, key) if isinstance(text, str) else None
        if part is None and isinstance(text, str) and not text.strip():
            continue
        if not isinstance(part, dict):
            raise ApiError(
                400,
                "BadRequest",
                f"'{key}' must be a YAML file as a string, with keys such as "
                f"{_YAML_STRING_EXAMPLE[key]}. Markdown training data (Rasa 1 and 2) is not "
                "read: convert it with `rasa data convert` or send one YAML document.",
                {"parameter": key, "in": "body"},
                HELP_TRAINING_DATA,
            )
        for name, value in part.items():
            before = merged.get(name)
            if name not in merged:
                merged[name] = value
                origin[name] = key
            elif isinstance(before, list) and isinstance(value, list):
                merged[name] = before + value
            elif isinstance(before, dict) and isinstance(value, dict):
                if set(before) & set(value):
                    raise bad_request(
                        f"'{clipped(name)}' is given in '{origin.get(name, 'the body')}' and again "
                        f"in '{key}'.",
                        key,
                        "body",
                    )
                merged[name] = {**before, **value}
            # Anything else (each file's own `version`, all "3.1"): the first part's.
    return merged


def _train_sync(job: _TrainingJob, out_dir: Path) -> Path:
    """Train the request's project into `out_dir`. The archive is unsigned: a server holds at
    most the public key that verifies archives (`--verify-key`), never one that signs."""
    from server.training.train import train

    with tempfile.TemporaryDirectory(prefix="botserver-train-request-") as tmp:
        directory = Path(tmp)
        config_path, domain_path, data_dir = _write_project(job.document, directory)
        try:
            result = train(
                config_path,
                domain_path,
                [data_dir],
                out_dir,
                force=job.force,
                env=False,
                augmentation=job.augmentation,
            )
        except NothingToTrain:
            raise ApiError(
                400,
                "BadRequest",
                "No training data given in the request body: it has no stories, rules or NLU "
                "examples (nlu, stories, rules), nothing to train.",
                {"in": "body"},
                HELP_TRAINING_DATA,
            ) from None
        except InvalidProjectFile as exc:
            raise _project_error(exc, directory, job.body) from None
    return result.path


async def _train_off_loop(
    services: Services, job: _TrainingJob, out_dir: Path, temporary: bool
) -> Path:
    """Train on a thread of its own, counted in /status's `num_active_training_jobs`.

    A `temporary` out_dir is removed when the training fails. A request cancelled meanwhile
    (its response timeout, the server stopping) cannot stop the thread: the training stays
    counted until it ends, and a `temporary` out_dir is removed then. Before, the folder
    stayed behind at every failure (empty) and every timeout (with the trained archive).
    """
    training = services.spawn(_counted_training(services, job, out_dir))
    try:
        return await asyncio.shield(training)
    except asyncio.CancelledError:
        training.add_done_callback(
            functools.partial(_abandoned_training, services, out_dir if temporary else None)
        )
        raise
    except BaseException:
        if temporary:
            await asyncio.to_thread(shutil.rmtree, out_dir, True)
        raise


async def _counted_training(services: Services, job: _TrainingJob, out_dir: Path) -> Path:
    with services.holder.training_job():
        return await run_long_job("training", _train_sync, job, out_dir)


def _abandoned_training(
    services: Services, temporary_dir: Path | None, training: asyncio.Task[Path]
) -> None:
    """When the training of a cancelled request ends: say how, remove its temporary folder."""
    if training.cancelled():
        outcome = "was cancelled"
    elif (error := training.exception()) is not None:
        outcome = f"failed: {_first_line(error)}"
    else:
        kept = "removed" if temporary_dir is not None else f"kept as {training.result()}"
        outcome = f"ended; its model is {kept}"
    logger.info("The training of a cancelled request %s", outcome)
    if temporary_dir is not None:
        services.spawn(asyncio.to_thread(shutil.rmtree, temporary_dir, True))


# Of a callback receiver's failed answer, what its log line may quote at most.
CALLBACK_ANSWER_SHOWN_BYTES = 2048


async def _post_callback(url: str, content: bytes, content_type: str) -> None:
    # Named in log lines without the credentials it may carry (user, password, query).
    where = safe_url(url, tolerant=True)
    try:
        # Built off the loop: a client loads the CA bundle (27-42 ms of CPU).
        async with await async_client_off_loop(timeout=60.0) as client:
            # Tried again when it could not connect (nothing was sent: a receiver
            # restarting); httpx's 60 s a phase bounds each try, so no bound on the whole.
            async def post() -> str | None:
                # Its status, and of a failure at most the start of what the receiver said:
                # the rest of its answer is never read (a receiver answering gigabytes cost
                # their memory).
                async with client.stream(
                    "POST", url, content=content, headers={"Content-Type": content_type}
                ) as response:
                    if response.is_success:  # (httpx's own error shows the whole URL)
                        return None
                    said = b""
                    async for piece in response.aiter_bytes():
                        said += piece
                        if len(said) >= CALLBACK_ANSWER_SHOWN_BYTES:
                            break
                    location = response.headers.get("location")
                    answer = Answer(
                        response.status_code, said[:CALLBACK_ANSWER_SHOWN_BYTES], location
                    )
                    return await answer.failure()

            failure = await retrying_connect_failures(
                post, timeout=math.inf, what=f"callback_url {where}"
            )
    except Exception as exc:  # a bad callback must never disturb the server
        failure = _first_line(exc)
    if failure is not None:
        logger.error("Could not deliver a result to the callback URL %s: %s", where, failure)


async def _run_for_callback(url: str, work: Any) -> None:
    """Runs `work` (a coroutine giving a Response) and POSTs its body or error to `url`."""
    try:
        response: Response = await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # every failure is reported to the callback, never raised
        error = (
            exc
            if isinstance(exc, (ApiError, BotServerError))
            else ApiError(
                500, "UnexpectedError", "An unexpected error occurred; the server log has details."
            )
        )
        if error is not exc:
            logger.error("Background request failed", exc_info=exc)
        failed = response_for(error)
        await _post_callback(url, bytes(failed.body), "application/json")
        return
    if isinstance(response, FileResponse):
        content = await asyncio.to_thread(Path(response.path).read_bytes)
        if response.background is not None:
            await response.background()
    else:
        content = bytes(response.body)
    await _post_callback(url, content, response.media_type or "application/octet-stream")


def _invalid_events(reason: str) -> ApiError:
    return ApiError(
        400,
        "BadRequest",
        f"Supplied events are not valid. {reason}",
        {"parameter": "", "in": "body"},
    )


async def _answer_or_call_back(
    callback: str | None, work: Callable[[], Awaitable[Response]], services: Services
) -> Response:
    """`work`'s response now; with a callback URL, 204 now and the response POSTed there later."""
    if callback:
        services.spawn(_run_for_callback(callback, work()))
        return Response(status_code=204)
    return await work()


def _callback_url(value: str | None) -> str | None:
    """The `callback_url` query parameter, checked now: one the result could never be POSTed
    to (no host, a bad port, a control character) was a 204, and the result, perhaps of a
    long training, went only to the server log."""
    if not value:
        return None
    if not value.lower().startswith(("http://", "https://")):
        raise bad_request("'callback_url' must be an http or https URL.", "callback_url", "query")
    try:
        url = httpx.Request("POST", value).url  # parsed as the callback will be sent
        port = url.port
        # A name never holds a `%` (httpx's escape of a space); an IPv6 zone id may.
        escaped = "%" in url.host and ":" not in url.host
        usable = bool(url.host) and not escaped and (port is None or 0 < port < 65536)
        problem = "it names no usable host and port"
    except httpx.InvalidURL as exc:
        usable, problem = False, str(exc)
    if not usable:
        raise bad_request(
            f"'callback_url' is not a URL the result can be sent to ({problem}): "
            f"{redact(value)!r}.",
            "callback_url",
            "query",
        )
    return value


def _augmentation_factor(value: str | None) -> int | None:
    """`?augmentation=N`: the ML policy's `augmentation_factor`, as `botserver train
    --augmentation N` (None: config.yml's or the policy's default). Not an integer: the
    default, with a warning, as in Rasa; below 0 a 400, as the command line refuses it."""
    factor = int_arg("augmentation", value)
    if factor is not None and factor < 0:
        raise bad_request(
            f"'augmentation' must be 0 or more, not {factor}.", "augmentation", "query"
        )
    return factor


def _training_failure(exc: Exception) -> ApiError:
    logger.error("Training failed", exc_info=exc)
    return ApiError(
        500, "TrainingError", "Training failed unexpectedly; the server log has the details."
    )


# ------------------------------------------------------------------------------- evaluation


def _nlu_data_from_json(body: Any) -> Any:
    """Rasa's JSON NLU format (`rasa_nlu_data.common_examples`) as training data, each
    example's entities as sent (overlapping ones too), as Rasa reads them."""
    from server.training.nlu_json import read_nlu_json_examples

    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object with 'rasa_nlu_data'.", "body", "body")
    nlu = body.get("rasa_nlu_data", body)
    examples = nlu.get("common_examples") if isinstance(nlu, dict) else None
    if not isinstance(examples, list):
        raise bad_request(
            "The body needs 'rasa_nlu_data.common_examples', a list of examples.",
            "rasa_nlu_data",
            "body",
        )
    for example in examples:
        if not isinstance(example, dict) or not isinstance(example.get("text"), str):
            raise bad_request("Each example needs a 'text' string.", "common_examples", "body")
        intent = example.get("intent")
        if (
            not isinstance(intent, str)
            or not intent
            or not isinstance(example.get("entities") or [], list)
        ):
            raise bad_request(
                "Each example needs an 'intent' name and a list of 'entities'.",
                "common_examples",
                "body",
            )
    try:
        return read_nlu_json_examples({"common_examples": examples}, "request body")
    except InvalidProjectFile as exc:
        raise ApiError(400, "BadRequest", str(exc), {"in": "body"}) from None


def _evaluation_item(report_path: Path, errors_path: Path | None, averages: str) -> dict[str, Any]:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    summary = report.get(averages) or {}
    item: dict[str, Any] = {
        "report": report,
        "precision": summary.get("precision", 0.0),
        "f1_score": summary.get("f1-score", 0.0),
    }
    if isinstance(report.get("accuracy"), (int, float)):
        item["accuracy"] = report["accuracy"]
    errors: list[Any] = []
    if errors_path is not None and errors_path.is_file():
        errors = json.loads(errors_path.read_text(encoding="utf-8"))
    item["errors"] = errors
    return item


def _nlu_results(out_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "intent_evaluation": {},
        "entity_evaluation": {},
        "response_selection_evaluation": {},
    }
    intent_report = out_dir / "intent_report.json"
    if intent_report.is_file():
        result["intent_evaluation"] = _evaluation_item(
            intent_report, out_dir / "intent_errors.json", "weighted avg"
        )
    responses = out_dir / "response_selection_report.json"
    if responses.is_file():
        result["response_selection_evaluation"] = _evaluation_item(
            responses, out_dir / "response_selection_errors.json", "weighted avg"
        )
    for path in sorted(out_dir.glob("*_report.json")):
        if path.name in ("intent_report.json", responses.name):
            continue
        extractor = path.name[: -len("_report.json")]
        result["entity_evaluation"][extractor] = _evaluation_item(
            path, out_dir / f"{extractor}_errors.json", "weighted avg"
        )
    return result


def own_nlu(model: DialogueModel) -> Any:
    """The model's own NLU pipeline, also when an NLU server (`nlu:`) parses messages."""
    return getattr(model.nlu, "own", model.nlu)


def _evaluate_intents_sync(
    model: DialogueModel | None,
    data: Any,
    folds: int | None,
    document: dict[str, Any] | None,
) -> dict[str, Any]:
    from server.nlu import evaluation

    # The reports are read back from a folder removed after the answer: no images (matplotlib
    # drew them in 0.3 of a moodbot evaluation's 0.32 CPU-s, its import 0.6 more at the first).
    with tempfile.TemporaryDirectory(prefix="botserver-test-nlu-") as tmp:
        out_dir = Path(tmp)
        if folds is not None:
            from server.training.config_yaml import config_from_dict

            config_part = {k: v for k, v in (document or {}).items() if k in _CONFIG_KEYS}
            config = config_from_dict(config_part, "request body")
            summary = evaluation.cross_validate(
                data, config.pipeline, folds, out_dir, config.language, plot=False
            )
            result = _nlu_results(out_dir)
            if "fold_accuracies" in summary:
                result["intent_evaluation"]["fold_accuracies"] = summary["fold_accuracies"]
            return result
        assert model is not None and own_nlu(model) is not None
        predictions = evaluation.predict(own_nlu(model), data)  # type: ignore[arg-type]
        evaluation.write_reports(predictions, out_dir, plot=False)
        result = _nlu_results(out_dir)
        if result["intent_evaluation"]:
            result["intent_evaluation"]["predictions"] = [
                {
                    "text": example.text,
                    "intent": example.base_intent,
                    "predicted": predicted,
                    "confidence": confidence,
                }
                for example, predicted, confidence in zip(
                    predictions.examples,
                    predictions.intents,
                    predictions.confidences,
                    strict=True,
                )
            ]
        if result["response_selection_evaluation"]:
            result["response_selection_evaluation"]["predictions"] = [
                {
                    "text": example.text,
                    "intent_response_key_target": example.intent,
                    "intent_response_key_prediction": response[0],
                    "confidence": response[1],
                }
                for example, response in zip(
                    predictions.examples, predictions.responses, strict=True
                )
                if response is not None and example.intent and "/" in example.intent
            ]
        return result


def _load_model_file(path: Path, services: Services) -> DialogueModel:
    archive = resolve_local_model(path)
    holder = services.holder
    with tempfile.TemporaryDirectory(prefix="botserver-eval-model-") as tmp:
        metadata = read_archive(archive, Path(tmp), holder.verify_key, holder.limits)
        return load_model(Path(tmp), metadata)


def _evaluate_stories_sync(
    text: bytes, content_type: str, model: DialogueModel, e2e: bool
) -> dict[str, Any]:
    from server.dialogue.evaluation import (
        evaluate_stories,
        in_training_data_fraction,
        write_story_reports,
    )
    from server.training.stories_yaml import read_story_data

    document = _sniffed_document(text, "stories", content_type)
    if isinstance(document, list):
        document = {"stories": document}
    if not isinstance(document, dict) or not ("stories" in document or "rules" in document):
        raise bad_request("The body must be YAML test stories (a 'stories' list).", "body", "body")
    slot_types = {s.name: s.type for s in model.domain.slots}
    try:
        steps = read_story_data(document, "request body", slot_types, [])
    except InvalidProjectFile as exc:
        raise ApiError(400, "BadRequest", str(exc), {"in": "body"}, HELP_TRAINING_DATA) from None
    results = evaluate_stories(steps, model, e2e)
    with tempfile.TemporaryDirectory(prefix="botserver-test-stories-") as tmp:
        report = write_story_reports(results, Path(tmp), plot=False)
    gold = [g for r in results for g in r.gold]
    predicted = [p for r in results for p in r.predicted]
    weighted = report.get("weighted avg") or {}
    hits = sum(g == p for g, p in zip(gold, predicted, strict=True))
    return {
        # sklearn's top-level `accuracy` number is the response's own `accuracy` field.
        "report": {k: v for k, v in report.items() if isinstance(v, dict)},
        "precision": weighted.get("precision", 0.0),
        "f1": weighted.get("f1-score", 0.0),
        "accuracy": hits / len(gold) if gold else 0.0,
        "actions": [
            {"action": g, "predicted": p, "confidence": c, "policy": policy}
            for r in results
            for g, p, c, policy in r.actions
        ],
        "in_training_data_fraction": in_training_data_fraction(results),
        "is_end_to_end_evaluation": e2e,
    }


LONGEST_PATH = 4096  # characters: Linux's PATH_MAX


def _check_path_length(path: str, parameter: str, location: str) -> None:
    """A 400 for a path longer than any: not tried, nor quoted back (it names no file, and
    may be megabytes)."""
    if len(path) > LONGEST_PATH:
        raise bad_request(
            f"'{parameter}' is {len(path):,} characters long; a path on this server has at "
            f"most {LONGEST_PATH:,}.",
            parameter,
            location,
        )


async def apply_model_request(services: Services, body: dict[str, Any]) -> None:
    """Load the model a PUT /model body names (ApiError 400 when it cannot)."""
    model_file = body.get("model_file")
    model_server = body.get("model_server")
    remote_storage = body.get("remote_storage")
    if model_file is not None and not isinstance(model_file, str):
        raise bad_request("'model_file' must be a path.", "model_file", "body")
    if model_file is not None:
        _check_path_length(model_file, "model_file", "body")
    if model_server is not None and not isinstance(model_server, dict):
        raise bad_request(
            "'model_server' must be an endpoint configuration object.",
            "model_server",
            "body",
        )
    if remote_storage is not None and remote_storage not in STORAGES:
        raise bad_request(
            f"'remote_storage' must be one of {', '.join(STORAGES)}.",
            "remote_storage",
            "body",
        )
    given_url = (model_server or {}).get("url")
    if isinstance(given_url, str):  # shown as every address is (no password, query)
        given_url = safe_url(given_url, tolerant=True)
    name = model_file or given_url or "models"

    def not_loaded(reason: str | None = None) -> ApiError:
        message = f"Agent with name '{name}' could not be loaded."
        if reason:
            message += f" {reason}"
        # The URL's password and key (the client's, or endpoints.yml's) stay out of the body.
        # `{"parameter": "model", "in": "query"}` is Rasa's answer word for word (recorded
        # from Rasa 3.6), though the model is named in the body: clients may match on it.
        return bad_request(redact(message), "model", "query")

    source = services.source
    server_config = services.models_endpoint or model_server
    if server_config:
        # A body's: kept among the latest few only (bodies one after another, each with
        # names of its own, would grow them without bound).
        keep_endpoint_secrets_out_of_logs(server_config, transient=server_config is model_server)
        url = server_config.get("url")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise bad_request(
                "'model_server' needs an http or https 'url'.", "model_server", "body"
            )
        try:
            info = await source.load_from_model_server(server_config, anew=True)
        except InvalidConfig as exc:
            raise bad_request(redact(str(exc)), "model_server", "body") from None
        except ModelSuperseded as exc:
            _superseded(exc)
            return
        poller = source.poller
        error = poller.last_error if poller is not None else None
        if error and poller is not None and poller.disk_full:
            raise ModelStorageFull(error)  # the server's problem: a 507, not a 400
        if info is None or error:
            raise not_loaded(error)
    elif remote_storage:
        try:
            await source.load_from_remote_storage(remote_storage, model_file or "models")
        except (ModelNotFound, ModelUnavailable) as exc:  # as a model server's 404 or silence
            raise not_loaded(str(exc)) from None
        except ModelSuperseded as exc:
            _superseded(exc)
    elif model_file:
        try:
            await source.load_local(Path(model_file))
        except ModelNotFound as exc:
            # Rasa's body, word for word; why is in the log and /status (last_load_error).
            logger.info("PUT /model: %s", exc.reason)
            raise not_loaded() from None
        except ModelSuperseded as exc:
            _superseded(exc)
    else:
        raise bad_request(
            "Give a 'model_file', a 'model_server' or a 'remote_storage' to load.",
            "model_file",
            "body",
        )


def _say_what_endpoints_models_overrides(body: dict[str, Any]) -> None:
    """As Rasa, endpoints.yml's `models:` is what a PUT /model loads from, whatever the body
    names; said, so a 204 for a file that was never read does not go unexplained."""
    model_file = body.get("model_file")
    named = [
        *([f"'model_file' ({redact(repr(model_file))[:300]})"] if model_file else []),
        *(["'model_server'"] if body.get("model_server") else []),
        *(["'remote_storage'"] if body.get("remote_storage") else []),
    ]
    if named:
        logger.warning(
            "PUT /model: %s ignored: with a models: section in endpoints.yml, the model "
            "is pulled from that model server (as in Rasa); remove the section to load others",
            " and ".join(named),
        )


def _superseded(exc: ModelSuperseded) -> None:
    # As if it had loaded and the newer request had replaced it at once: answered 204.
    logger.info("Model %s; it was not loaded", exc)


def model_request_of(body: dict[str, Any]) -> dict[str, Any]:
    """The part of a PUT /model body that says which model to load."""
    return {k: body[k] for k in ("model_file", "model_server", "remote_storage") if k in body}


# ------------------------------------------------------------------------------- router

_CALLBACK_DOC = {"description": "Accepted: the result will be POSTed to `callback_url`."}


def _has_unquoted_key(raw: bytes) -> bool:
    """Whether JSON's parser stops at a key not in double quotes (`{nlu: [`, `{'nlu': [`):
    YAML's flow style, whose mistake YAML names, where JSON's "Expecting property name
    enclosed in double quotes" at its first key says nothing of it. A trailing comma
    (`{"a": 1,}`) or a body cut short after a comma is JSON's own mistake."""
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        return exc.msg.startswith("Expecting property name") and exc.doc[
            exc.pos : exc.pos + 1
        ] not in ("}", "")
    except (ValueError, RecursionError):  # not UTF-8, -16 or -32; nested too deep
        return False
    return False


def _opens_as_json(raw: bytes) -> bool:
    """Whether `raw` opens as JSON does (`{`, `[`), in the encoding JSON reads it in (UTF-8,
    -16 or -32, a byte order mark and white space before)."""
    head = raw[:64].decode(json.detect_encoding(raw), "replace")
    return head.lstrip("\ufeff \t\r\n")[:1] in ("{", "[")


def model_router() -> APIRouter:
    """The /model routes; services come from `app.state.services` per request."""
    router = APIRouter(
        prefix="/model",
        route_class=FirstValueRoute,
        tags=["Model"],
        dependencies=[Depends(require_auth())],
    )

    @router.post(
        "/train",
        operation_id="trainModel",
        summary="Train a Rasa model",
        response_class=FileResponse,
        responses={
            200: {
                "description": "The trained model archive (its name also in `filename`).",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            },
            204: _CALLBACK_DOC,
            **error_responses(400),
        },
        openapi_extra=request_body(
            {"application/yaml": ref(TrainingRequest), "application/json": ref(TrainingRequest)},
            "Config, domain and training data, as one YAML (or JSON) document.",
        ),
    )
    async def train(
        request: Request,
        save_to_default_model_directory: str | None = None,
        force_training: str | None = None,
        augmentation: str | None = None,
        num_threads: str | None = None,
        callback_url: str | None = None,
        services: Services = Depends(services_of),
    ) -> Response:
        document = await _body_document(
            request,
            "No training data given in the request body. Send the YAML training data "
            "(config, domain, nlu, stories and rules) in the body.",
            "training data",
        )
        if not isinstance(document, dict):
            if isinstance(document, list):  # millions of items, freed where they are dropped
                await free_off_loop(document)
            raise ApiError(
                400,
                "BadRequest",
                "The request body does not contain valid YAML. Error: the training data must "
                "be a mapping with keys such as 'pipeline', 'intents', 'nlu' and 'stories'.",
                {"in": "body"},
                HELP_TRAINING_DATA,
            )
        body: bytes | None = await request.body()  # read once, kept by the request
        if _is_of_yaml_strings(document):
            document = await asyncio.to_thread(_merge_yaml_strings, document)
            body = None  # its lines are not the merged document's
        if not document.keys() & _TRAINABLE_KEYS:
            # `{}` (or config alone) trained an empty model and answered 200 with it; Rasa
            # finds no training data and answers 500.
            raise ApiError(
                400,
                "BadRequest",
                "No training data given in the request body: it needs a domain (intents, "
                "responses...) and training data (nlu, stories, rules), as one YAML document.",
                {"in": "body"},
                HELP_TRAINING_DATA,
            )
        callback = _callback_url(callback_url)
        in_default_dir = bool_arg(
            "save_to_default_model_directory", save_to_default_model_directory, default=True
        )
        force = bool_arg("force_training", force_training)
        augmentation_factor = _augmentation_factor(augmentation)

        async def run() -> Response:
            out_dir = (
                services.models_dir
                if in_default_dir
                else Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="botserver-trained-"))
            )
            try:
                job = _TrainingJob(document, body, force, augmentation_factor)
                path = await _train_off_loop(services, job, out_dir, not in_default_dir)
            except TrainingError as exc:
                # Training stops on data or configuration that cannot give a model: the
                # client's mistake, so a 400 (Rasa answers 500).
                raise ApiError(
                    400, "BadRequest", str(exc), {"in": "body"}, HELP_TRAINING_DATA
                ) from None
            except (ApiError, BotServerError):
                raise
            except Exception as exc:
                raise _training_failure(exc) from None
            cleanup = (
                None
                if in_default_dir
                else BackgroundTask(shutil.rmtree, str(out_dir), ignore_errors=True)
            )
            return FileResponse(
                path,
                media_type="application/octet-stream",
                filename=path.name,
                headers={"filename": path.name},
                background=cleanup,
            )

        return await _answer_or_call_back(callback, run, services)

    @router.post(
        "/test/stories",
        operation_id="testModelStories",
        summary="Evaluate stories",
        openapi_extra=request_body(
            {"text/yml": {"type": "string"}}, "Test stories in the YAML story format."
        ),
        responses={
            200: json_response(StoriesEvaluationResult, "The evaluation."),
            **error_responses(400, 409),
        },
    )
    async def evaluate_stories(
        request: Request,
        e2e: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        model = _model_of(services)
        model.check_predicts()  # an NLU-only model: no dialogue to test
        raw = await request.body()
        if not raw.strip():
            raise ApiError(400, "BadRequest", "No test stories given in the request body.")
        result = await run_long_job(
            "story evaluation",
            _evaluate_stories_sync,
            raw,
            _content_type(request),
            model,
            bool_arg("e2e", e2e),
        )
        return await asyncio.to_thread(JSONResponse, result)

    @router.post(
        "/test/intents",
        operation_id="testModelIntent",
        summary="Perform an intent evaluation",
        openapi_extra=request_body(
            {"application/x-yaml": {"type": "string"}, "application/json": ref(NLUTestData)},
            "NLU test data; in YAML, with the pipeline when cross-validating.",
        ),
        responses={
            200: json_response(NLUEvaluationResult, "The evaluation."),
            204: _CALLBACK_DOC,
            **error_responses(400, 409),
        },
    )
    async def evaluate_intents(
        request: Request,
        model: str | None = None,
        callback_url: str | None = None,
        cross_validation_folds: str | None = None,
        services: Services = Depends(services_of),
    ) -> Response:
        callback = _callback_url(callback_url)
        if model and "://" in model:
            raise bad_request(
                f"'model' must be the path of a model archive on this server, not a URL "
                f"({clipped(model)!r}): load it with PUT /model, or give its path.",
                "model",
                "query",
            )
        if model:
            _check_path_length(model, "model", "query")
        raw = await request.body()
        if not raw.strip():
            raise ApiError(400, "BadRequest", "No NLU test data given in the request body.")
        folds = int_arg("cross_validation_folds", cross_validation_folds)
        content_type = _content_type(request)
        is_yaml = content_type in _YAML_TYPES
        body_json: Any = None
        json_error: ApiError | None = None
        if not is_yaml and content_type != "application/json":
            # Unlabelled (`curl --data-binary @nlu.yml` sends a form's type): JSON when it
            # reads as JSON, else YAML, which /model/train reads whatever the type says.
            try:
                body_json = await parse_json_off_loop(raw)
            except ApiError as exc:
                is_yaml = True
                # JSON with a mistake, unless it is YAML's NLU data or flow style (`{nlu: [`)
                if _opens_as_json(raw) and not (
                    await asyncio.to_thread(_has_unquoted_key, raw)
                    if len(raw) > OFF_LOOP_JSON_BYTES
                    else _has_unquoted_key(raw)
                ):
                    json_error = exc
        if folds is not None and not is_yaml:
            raise ApiError(
                400,
                "TestingError",
                "Cross-validation is only supported for YAML data: send the NLU data and the "
                "pipeline with 'Content-Type: application/x-yaml'.",
                {"parameter": "cross_validation_folds", "in": "query"},
            )
        if folds is not None and folds < 2:
            raise bad_request(
                "'cross_validation_folds' must be at least 2.", "cross_validation_folds", "query"
            )
        document: dict[str, Any] | None = None
        if is_yaml:
            from server.training.nlu_yaml import read_nlu_yaml

            try:
                parsed = await asyncio.to_thread(_yaml_document, raw, "NLU data")
            except ApiError:
                if json_error is None:
                    raise
                raise json_error from None
            if not isinstance(parsed, dict) or "nlu" not in parsed:
                raise json_error or bad_request(
                    "The YAML body needs an 'nlu' section.", "nlu", "body"
                )
            document = parsed
            try:
                data = await asyncio.to_thread(read_nlu_yaml, raw.decode("utf-8"), "request body")
            except InvalidProjectFile as exc:
                raise ApiError(400, "BadRequest", str(exc), {"in": "body"}) from None
        else:
            data = await asyncio.to_thread(
                lambda: _nlu_data_from_json(parse_json(raw) if body_json is None else body_json)
            )
        if not data.examples:
            raise bad_request("The NLU data has no examples.", "nlu", "body")
        if len(set(e.base_intent for e in data.examples)) < 2 and folds is not None:
            raise bad_request("Cross-validation needs at least two intents.", "nlu", "body")
        if folds is not None and folds > len(data.examples):
            raise bad_request(
                f"cannot cross-validate in {folds} folds: the NLU data has "
                f"{how_many(len(data.examples), 'example')}, fewer than the folds",
                "cross_validation_folds",
                "query",
            )

        async def run() -> Response:
            evaluated: DialogueModel | None = None
            if folds is None:
                if model:
                    try:
                        evaluated = await run_long_job(
                            "model load for evaluation", _load_model_file, Path(model), services
                        )
                    except ModelNotFound as exc:
                        raise bad_request(str(exc), "model", "query") from None
                else:
                    evaluated = _model_of(services)
                if own_nlu(evaluated) is None:
                    raise bad_request("The model has no NLU pipeline to evaluate.")
            result = await run_long_job(
                "intent evaluation", _evaluate_intents_sync, evaluated, data, folds, document
            )
            # One prediction per example: a large answer is rendered off the loop as well.
            return await asyncio.to_thread(JSONResponse, result)

        return await _answer_or_call_back(callback, run, services)

    @router.post(
        "/predict",
        operation_id="predictModelAction",
        summary="Predict an action on a temporary state",
        openapi_extra=json_request(EVENT_LIST, "The events of a conversation to predict for."),
        responses={
            200: json_response(PredictResult, "The scores of the next action."),
            **error_responses(400, 409),
        },
    )
    async def tracker_predict(
        request: Request,
        include_events: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        verbosity = event_verbosity(include_events)
        model = _model_of(services)
        body = await read_json_body(
            request, "No events defined in request_body. Add events to the request body."
        )
        if not isinstance(body, list):
            raise _invalid_events("send a list of events.")

        def read() -> Tracker:
            try:
                events = events_from_list(body)
                check_events(events)
                return Tracker("default", model.domain.slot_defaults(), events)
            except InvalidEvent as exc:
                raise _invalid_events(str(exc)) from None

        # A long list is read and folded in a thread, and its tracker written out in one:
        # 100,000 events held the event loop 0.5-0.6 s.
        tracker = await off_loop_for(body, read)
        scores = await asyncio.to_thread(services.agent.scores_for, tracker)
        response = await tracker_response(tracker, verbosity, around_prediction(scores, tracker))
        return freed_after_sending(response, [tracker], [body])

    @router.post(
        "/parse",
        operation_id="parseModelMessage",
        summary="Parse a message using the Rasa model",
        openapi_extra=json_request(ParseRequest),
        responses={
            200: json_response(
                {"anyOf": [ref(model) for model in PARSE_FORMATS]},
                "The intents and entities found; with `emulation_mode`, in that service's format.",
            ),
            **error_responses(400, 409),
        },
    )
    async def parse(
        request: Request,
        emulation_mode: str | None = None,
        services: Services = Depends(services_of),
    ) -> JSONResponse:
        if emulation_mode is not None and emulation_mode.upper() not in EMULATORS:
            raise bad_request(
                "Invalid parameter value for 'emulation_mode'. Should be one of 'WIT', "
                "'LUIS', 'DIALOGFLOW'.",
                "emulation_mode",
                "query",
            )
        _model_of(services)
        body = await read_json_object(
            request,
            "No text message defined in request_body. Add text message to request body in "
            "order to obtain the intent and extracted entities.",
        )
        text = body.get("text")
        if isinstance(text, list) and text:
            text = text[0]
        if not isinstance(text, str):
            raise bad_request("The request body needs a 'text' string to parse.", "text", "body")
        if len(text) > MAX_TEXT_CHARS:
            raise bad_request(
                f"The text is {len(text):,} characters long; at most {MAX_TEXT_CHARS:,} are "
                "parsed.",
                "text",
                "body",
            )
        message_id = body.get("message_id")
        # Rasa parses a UserMessage, which strips the text, as every channel does here too:
        # offsets and `text` then agree with the tracker's copy of the same message.
        result = await asyncio.to_thread(
            services.agent.parse, text.strip(), message_id if isinstance(message_id, str) else None
        )
        if emulation_mode is not None:
            result = EMULATORS[emulation_mode.upper()](result)
        return JSONResponse(result)

    @router.put(
        "",
        operation_id="replaceModel",
        summary="Replace the currently loaded model",
        status_code=204,
        response_class=Response,
        openapi_extra=json_request(ModelRequest),
        responses={
            204: {"description": "The model is loaded."},
            **error_responses(400, 500, 507),
        },
    )
    async def load(request: Request, services: Services = Depends(services_of)) -> Response:
        body = await read_json_object(request, "No path to model file defined in request_body.")
        if services.models_endpoint:  # said by the worker asked only
            _say_what_endpoints_models_overrides(body)
        sync = getattr(request.app.state, "model_sync", None)
        if sync is None:
            await apply_model_request(services, body)
        else:  # `--workers N`: the other workers load it too (server/api/model_sync.py)
            await sync.change(lambda: apply_model_request(services, body), model_request_of(body))
        return Response(status_code=204)

    @router.delete(
        "",
        operation_id="unloadModel",
        summary="Unload the trained model",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "No model is loaded any more."}},
    )
    async def unload(request: Request, services: Services = Depends(services_of)) -> Response:
        sync = getattr(request.app.state, "model_sync", None)
        if sync is None:
            await services.holder.unload()
        else:
            await sync.change(services.holder.unload, None)
        return Response(status_code=204)

    return router
