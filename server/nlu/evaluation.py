"""`test nlu` as a library: intent and entity reports in Rasa's file layout, plots, and
cross-validation."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import TrainingError
from server.nlu.duckling import logger as duckling_logger
from server.nlu.fallback import FALLBACK_INTENT
from server.nlu.pipeline import NLUPipeline
from server.nlu.pipeline import logger as pipeline_logger
from server.nlu.response_selector import DEFAULT_SELECTOR
from server.nlu.tokenizer import tokenize
from server.nlu.training_data import Example, NLUTrainingData

logger = logging.getLogger(__name__)

# Extractors whose entities come from outside the training data are not evaluated.
_PRETRAINED = {"DucklingEntityExtractor", "SpacyEntityExtractor"}
# The entity extractors evaluated, by component key.
_EVALUATED = frozenset({"CRFEntityExtractor", "RegexEntityExtractor"})
# A token in no entity, in an entity confusion matrix (Rasa's label).
NO_ENTITY = "no_entity"
# What a message that got no intent (or no response) was predicted, as Rasa labels it in
# reports and answers: no intent can be named so ("None" can: LUIS exports have one).
NO_PREDICTION = ""


@dataclass
class Predictions:
    """What the pipeline said about each test example."""

    examples: list[Example] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    entities: list[list[dict[str, Any]]] = field(default_factory=list)
    extractors: set[str] = field(default_factory=set)
    # The extractors that give each entity a confidence (Rasa's CRF and DIET).
    with_confidences: set[str] = field(default_factory=set)
    # The response selector's choice for the example's retrieval intent (`chitchat/ask_name`)
    # and its confidence; None without a response selector.
    responses: list[tuple[str, float] | None] = field(default_factory=list)

    def extend(self, other: Predictions) -> None:
        self.examples += other.examples
        self.intents += other.intents
        self.confidences += other.confidences
        self.entities += other.entities
        self.extractors |= other.extractors
        self.with_confidences |= other.with_confidences
        self.responses += other.responses


def predict(pipeline: NLUPipeline, data: NLUTrainingData) -> Predictions:
    out = Predictions(
        extractors=_extractor_names(pipeline),
        with_confidences=_extractor_names(pipeline, {"CRFEntityExtractor"}),
    )
    for example in data.examples:
        parsed = pipeline.parse(example.text)
        intent = parsed.get("intent") or {}
        ranking = parsed.get("intent_ranking") or []
        if intent.get("name") == FALLBACK_INTENT and len(ranking) >= 2:
            # As Rasa: the FallbackClassifier's verdict does not hide the intent it doubted.
            intent = ranking[1]
        out.examples.append(example)
        out.intents.append(intent.get("name") or NO_PREDICTION)
        out.confidences.append(float(intent.get("confidence") or 0.0))
        out.entities.append(parsed.get("entities", []))
        out.responses.append(_selected_response(parsed.get("response_selector"), example))
    return out


def _selected_response(
    selector: dict[str, Any] | None, example: Example
) -> tuple[str, float] | None:
    """What the selector for the example's retrieval intent (else the default one) chose."""
    if not selector:
        return None
    chosen = selector.get(example.base_intent or "") or selector.get(DEFAULT_SELECTOR) or {}
    response = chosen.get("response") or {}
    key = response.get("intent_response_key") or NO_PREDICTION
    return key, float(response.get("confidence") or 0.0)


def _extractor_names(
    pipeline: NLUPipeline, keys: frozenset[str] | set[str] = _EVALUATED
) -> set[str]:
    return {c.name for k, c in pipeline._components if k in keys and c.name not in _PRETRAINED}


def evaluate(
    pipeline: NLUPipeline, test_data: NLUTrainingData, out_dir: Path, **files: bool
) -> dict[str, Any]:
    """Evaluate on `test_data`; write Rasa's report files to `out_dir` (`files`: which of the
    optional ones, as `write_reports` takes them); return a summary."""
    return write_reports(predict(pipeline, test_data), Path(out_dir), **files)


def write_reports(
    predictions: Predictions,
    out_dir: Path,
    *,
    plot: bool = True,
    errors: bool = True,
    successes: bool = False,
) -> dict[str, Any]:
    """The reports; as `rasa test nlu` unless told otherwise (`--no-plot`, `--no-errors`,
    `--successes`), also the errors files and the plots, and the successes files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    intent_rows = [
        (e.base_intent, p, c, e)
        for e, p, c in zip(
            predictions.examples, predictions.intents, predictions.confidences, strict=True
        )
        if e.base_intent
    ]
    if len({row[0] for row in intent_rows}) >= 2:
        # As Rasa's: the intents are evaluated when the test data has two or more.
        summary["intent_evaluation"] = _label_reports(
            intent_rows, out_dir, INTENTS, plot=plot, errors=errors, successes=successes
        )
    response_rows = [
        (e.intent, r[0], r[1], e)
        for e, r in zip(predictions.examples, predictions.responses, strict=True)
        if r is not None and e.intent and "/" in e.intent
    ]
    if len({row[0] for row in response_rows}) >= 2:
        # As Rasa's: the examples of retrieval intents, by the response key chosen, when they
        # name two responses or more.
        summary["response_selection_evaluation"] = _label_reports(
            response_rows, out_dir, RESPONSES, plot=plot, errors=errors, successes=successes
        )
    entity_summary = {}
    for extractor in _active_extractors(predictions):
        # Each test token's labels, worked out once for the report, the files and the plots.
        by_example = _token_labels(predictions, extractor)
        tokens = _joined(by_example)
        report = labels_report(tokens[0], tokens[1], exclude=NO_ENTITY)
        _write_json(out_dir / f"{extractor}_report.json", report)
        entity_summary[extractor] = report.get("weighted avg", {})
        if errors:
            _write_unless_empty(
                out_dir / f"{extractor}_errors.json",
                _entity_examples(predictions, extractor, by_example, False),
            )
        if successes:
            _write_unless_empty(
                out_dir / f"{extractor}_successes.json",
                _entity_examples(predictions, extractor, by_example, True),
            )
        if plot:
            _entity_plots(predictions, extractor, tokens, out_dir)
    if entity_summary:
        summary["entity_evaluation"] = entity_summary
    return summary


def _active_extractors(predictions: Predictions) -> list[str]:
    """The extractors evaluated: none unless the test data annotates entities, as in Rasa.
    Rasa then evaluates only those that found an entity in it; here one that found none
    gets its report too (every annotated entity missed), rather than no word of it."""
    if not any(example.entities for example in predictions.examples):
        return []
    return sorted(predictions.extractors)


@dataclass(frozen=True)
class _Labels:
    """What is evaluated (intents or retrieval responses): its files and JSON keys, Rasa's."""

    prefix: str  # intent -> intent_report.json, intent_errors.json, intent_histogram.png...
    target_key: str
    prediction_key: str
    title: str


INTENTS = _Labels("intent", "intent", "intent_prediction", "Intent")
RESPONSES = _Labels(
    "response_selection",
    "intent_response_key_target",
    "intent_response_key_prediction",
    "Response Selection",
)


def _label_reports(
    rows: list[tuple[Any, str, float, Example]],
    out_dir: Path,
    labelled: _Labels,
    *,
    plot: bool,
    errors: bool,
    successes: bool,
) -> dict[str, Any]:
    targets = [r[0] for r in rows]
    predicted = [r[1] for r in rows]
    report = labels_report(targets, predicted)
    labels = sorted(set(targets) | set(predicted))
    name = labelled.prefix
    _write_json(out_dir / f"{name}_report.json", report)
    wrong = _predictions(rows, labelled, hits=False)
    if errors:
        _write_unless_empty(out_dir / f"{name}_errors.json", wrong)
    if successes:
        hits = _predictions(rows, labelled, hits=True)
        _write_unless_empty(out_dir / f"{name}_successes.json", hits)
    if plot:
        matrix = _confusion_matrix(targets, predicted, labels)
        _plots(targets, predicted, [r[2] for r in rows], labels, matrix, out_dir, labelled)
    weighted = report.get("weighted avg", {})
    return {
        "accuracy": report["accuracy"],
        "precision": weighted.get("precision"),
        "f1_score": weighted.get("f1-score"),
        "errors": len(wrong),
    }


def labels_report(
    targets: list[str],
    predicted: list[str],
    exclude: str | None = None,
    confused_with: bool = True,
) -> dict[str, Any]:
    """Rasa's classification report (intent_report.json, story_report.json): a row for each
    label of `targets` (`exclude` aside) with precision, recall, f1-score, support and, for
    the NLU's reports (`confused_with`; Rasa's story report has none), the labels most often
    predicted instead, then "accuracy", "macro avg", "weighted avg" and "micro avg"; {}
    without a label."""
    from sklearn.metrics import classification_report

    rows = sorted(set(targets) - {exclude})
    if not rows:
        return {}
    report: dict[str, Any] = classification_report(
        targets, predicted, labels=rows, output_dict=True, zero_division=0
    )
    accuracy = float(np.mean([t == p for t, p in zip(targets, predicted, strict=True)]))
    if "micro avg" in report:
        report["accuracy"] = accuracy
    else:  # sklearn's accuracy is the micro average when the rows are every label
        report["micro avg"] = {
            "precision": accuracy,
            "recall": accuracy,
            "f1-score": accuracy,
            "support": report["macro avg"]["support"],
        }
    if not confused_with:
        return report
    labels = sorted(set(targets) | set(predicted))
    matrix = _confusion_matrix(targets, predicted, labels)
    # As Rasa's: among the three largest cells of the label's row, the other labels.
    candidates = np.argsort(matrix, axis=1)[:, ::-1][:, : min(3, len(labels))]
    for i, label in enumerate(labels):
        if label == exclude or not isinstance(report.get(label), dict):
            continue
        report[label]["confused_with"] = {
            labels[j]: int(matrix[i, j])
            for j in candidates[i]
            if labels[j] not in (label, exclude) and matrix[i, j] > 0
        }
    return report


def _confusion_matrix(targets: list[str], predicted: list[str], labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(targets, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    return matrix


def _predictions(
    rows: list[tuple[Any, str, float, Example]], labelled: _Labels, hits: bool
) -> list[dict]:
    """The examples whose label was (`hits`) or was not found, in the layout of Rasa's
    intent_errors.json (response_selection_errors.json)."""
    return [
        {
            "text": example.text,
            labelled.target_key: target,
            labelled.prediction_key: {"name": pred, "confidence": confidence},
        }
        for target, pred, confidence, example in rows
        if (target == pred) == hits
    ]


def _entity_examples(
    predictions: Predictions, extractor: str, labels: list[_TokenLabels], hits: bool
) -> list[dict]:
    """As Rasa's `<extractor>_errors.json` (`hits`: `_successes.json`): the examples with a
    token whose entity `extractor` got wrong (`hits`: one in an entity it got right), by
    their token `labels` (`_token_labels`)."""
    out = []
    by_example = zip(predictions.examples, predictions.entities, labels, strict=True)
    for example, entities, (annotated, found, _) in by_example:
        pairs = list(zip(annotated, found, strict=True))
        if hits:
            listed = any(a == f != NO_ENTITY for a, f in pairs)
        else:
            listed = any(a != f for a, f in pairs)
        if listed:
            out.append(
                {
                    "text": example.text,
                    "entities": [a.as_dict() for a in example.entities],
                    "predicted_entities": [e for e in entities if e.get("extractor") == extractor],
                }
            )
    return out


def entity_report(predictions: Predictions, extractor: str) -> dict[str, Any]:
    """Rasa's `<extractor>_report.json`: each test token's entity label, as annotated against
    as found (`no_entity` outside entities, not a row), in `labels_report`'s layout."""
    annotated, found, _ = entity_token_labels(predictions, extractor)
    return labels_report(annotated, found, exclude=NO_ENTITY)


def entity_token_labels(
    predictions: Predictions, extractor: str
) -> tuple[list[str], list[str], list[float | None]]:
    """Each test token's entity label, as annotated and as `extractor` found it (`no_entity`
    outside any entity), and the confidence of the entity found there (0.0 where none was
    found, None where the extractor gives none): what Rasa's entity reports and plots
    count."""
    return _joined(_token_labels(predictions, extractor))


# A text's tokens' entity labels, as annotated and as found, and the confidences found.
_TokenLabels = tuple[list[str], list[str], list[float | None]]


def _joined(by_example: list[_TokenLabels]) -> _TokenLabels:
    """The labels of every example's tokens, one after the other."""
    annotated: list[str] = []
    found: list[str] = []
    confidences: list[float | None] = []
    for example_annotated, example_found, example_confidences in by_example:
        annotated += example_annotated
        found += example_found
        confidences += example_confidences
    return annotated, found, confidences


def _token_labels(predictions: Predictions, extractor: str) -> list[_TokenLabels]:
    """`entity_token_labels`, for each example."""
    out = []
    for example, entities in zip(predictions.examples, predictions.entities, strict=True):
        gold: list[_Span] = [
            (a.start, a.end, _entity_label(a.entity, a.group, a.role), None)
            for a in example.entities
        ]
        spans: list[_Span] = [
            (
                e["start"],
                e["end"],
                _entity_label(e["entity"], e.get("group"), e.get("role")),
                e.get("confidence_entity"),
            )
            for e in entities
            if e.get("extractor") == extractor
        ]
        tokens = tokenize(example.text)
        annotated = [_entity_at(t.start, t.end, gold)[0] for t in tokens]
        found_here = [_entity_at(t.start, t.end, spans) for t in tokens]
        out.append((annotated, [f[0] for f in found_here], [f[1] for f in found_here]))
    return out


def _entity_label(entity: str, group: Any, role: Any) -> str:
    """As Rasa labels a token: the entity type, then its group and role (`city.destination`)."""
    return ".".join(str(part) for part in (entity, group, role) if part)


_Span = tuple[int, int, str, float | None]


def _entity_at(start: int, end: int, spans: list[_Span]) -> tuple[str, float | None]:
    """The label and confidence of the entity overlapping [start, end) the most (the first
    of those overlapping as much), as Rasa picks it; else (`no_entity`, 0.0)."""
    best: tuple[str, float | None] = (NO_ENTITY, 0.0)
    overlap = 0
    for low, high, label, confidence in spans:
        shared = min(end, high) - max(start, low)
        if shared > overlap:
            best, overlap = (label, confidence), shared
    return best


def _entity_plots(
    predictions: Predictions, extractor: str, tokens: _TokenLabels, out_dir: Path
) -> None:
    """Rasa's `<extractor>_confusion_matrix.png`, and `<extractor>_histogram.png` (the
    confidences of the tokens in an entity, annotated or found) when it gives confidences,
    from the test tokens' labels (`entity_token_labels`)."""
    annotated, found, confidences = tokens
    labels = sorted(set(annotated) | set(found))
    plt = _pyplot() if labels else None
    if plt is None:
        return
    # Counted here: scikit-learn's confusion_matrix warns of a test set of one label (a bot
    # whose test messages hold no entity), which is a plain matrix of one cell.
    matrix = _confusion_matrix(annotated, found, labels)
    _draw_matrix(
        plt,
        matrix,
        labels,
        "Entity Confusion matrix",
        out_dir / f"{extractor}_confusion_matrix.png",
    )
    in_entities = [
        (a == f, c)
        for a, f, c in zip(annotated, found, confidences, strict=True)
        if a != NO_ENTITY or f != NO_ENTITY
    ]
    if extractor in predictions.with_confidences:
        _draw_histogram(
            plt,
            [c or 0.0 for hit, c in in_entities if hit],
            [c or 0.0 for hit, c in in_entities if not hit],
            "Entity Prediction Confidence Distribution",
            out_dir / f"{extractor}_histogram.png",
        )


def _plots(
    targets: list[Any],
    predicted: list[str],
    confidences: list[float],
    labels: list[str],
    matrix: np.ndarray,
    out_dir: Path,
    labelled: _Labels,
) -> None:
    plt = _pyplot()
    if plt is None:
        return
    _draw_matrix(
        plt,
        matrix,
        labels,
        f"{labelled.title} Confusion matrix",
        out_dir / f"{labelled.prefix}_confusion_matrix.png",
    )
    _draw_histogram(
        plt,
        [c for t, p, c in zip(targets, predicted, confidences, strict=True) if t == p],
        [c for t, p, c in zip(targets, predicted, confidences, strict=True) if t != p],
        f"{labelled.title} Prediction Confidence Distribution",
        out_dir / f"{labelled.prefix}_histogram.png",
    )


def _draw_histogram(
    plt: Any, hits: list[float], misses: list[float], title: str, path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    bins = [i / 20 for i in range(21)]
    ax.hist([hits, misses], bins=bins, label=["hits", "misses"], color=["#009292", "#ff6db6"])
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Number of samples")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pyplot() -> Any:
    """matplotlib's pyplot drawing to files, or None (with a warning) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning(
            "matplotlib is not installed: skipping the confusion matrices and histograms"
        )
        return None
    return plt


def _draw_matrix(plt: Any, matrix: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    size = max(6.0, 0.25 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


def _write_unless_empty(path: Path, examples: list[dict]) -> None:
    """An errors or successes file, as Rasa's: written only when it lists an example (Rasa
    logs "Every intent was predicted correctly by the model." instead)."""
    if examples:
        _write_json(path, examples)
    else:
        path.unlink(missing_ok=True)


def cross_validate(
    data: NLUTrainingData,
    pipeline: list[dict],
    folds: int,
    out_dir: Path,
    language: str = "en",
    **files: bool,
) -> dict[str, Any]:
    """Stratified k-fold: train on k-1 folds, predict the held-out one, report on all."""
    from sklearn.model_selection import StratifiedKFold

    examples = data.examples
    if len(examples) < folds:
        raise TrainingError(
            f"cannot cross-validate in {folds} folds: the NLU data has {len(examples)} "
            "examples, fewer than the folds"
        )
    labels = [e.base_intent or "" for e in examples]
    counts = Counter(labels)
    # Classes rarer than `folds` cannot be stratified; give them a shared bucket, or, when
    # that too is rarer than `folds`, the most common class's (sklearn warns of a stratum
    # rarer than the folds; there are at least `folds` examples, so that class has enough).
    rare = sum(n for n in counts.values() if n < folds)
    bucket = "__rare__" if rare >= folds else counts.most_common(1)[0][0]
    strata = [label if counts[label] >= folds else bucket for label in labels]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=42)
    combined = Predictions()
    fold_accuracies = []
    fold_metrics: dict[str, dict[str, list[float]]] = {}
    # Each fold trains its own pipeline, which warns anew: an unreachable Duckling too.
    with _each_said_once(pipeline_logger), _each_said_once(duckling_logger):
        for train_idx, test_idx in splitter.split(np.zeros(len(strata)), strata):
            train = _subset(data, train_idx)
            test = _subset(data, test_idx)
            model = NLUPipeline.train(train, pipeline, language)
            fold = predict(model, test)
            hits = [e.base_intent == p for e, p in zip(fold.examples, fold.intents, strict=True)]
            fold_accuracies.append(float(np.mean(hits)) if hits else 0.0)
            for evaluation, metrics in _fold_metrics(fold).items():
                for name, value in metrics.items():
                    fold_metrics.setdefault(evaluation, {}).setdefault(name, []).append(value)
            combined.extend(fold)
    summary = write_reports(combined, Path(out_dir), **files)
    summary["fold_accuracies"] = fold_accuracies
    summary["fold_metrics"] = fold_metrics
    return summary


def _fold_metrics(fold: Predictions) -> dict[str, dict[str, float]]:
    """One fold's figures as `rasa test nlu --cross-validation` gives them (accuracy, and the
    weighted F1-score and precision), for the intents, each entity extractor and the
    responses chosen for retrieval intents."""

    def figures(report: dict[str, Any]) -> dict[str, float]:
        weighted = report.get("weighted avg", {})
        return {
            "Accuracy": float(report.get("accuracy", report["micro avg"]["f1-score"])),
            "F1-score": float(weighted.get("f1-score", 0.0)),
            "Precision": float(weighted.get("precision", 0.0)),
        }

    rows = [(e.base_intent, p) for e, p in zip(fold.examples, fold.intents, strict=True)]
    intents = labels_report(
        [t for t, _ in rows if t], [p for t, p in rows if t], confused_with=False
    )
    metrics = {"intent": figures(intents)} if intents else {}
    chosen = [
        (e.intent, r[0])
        for e, r in zip(fold.examples, fold.responses, strict=True)
        if r is not None and e.intent and "/" in e.intent
    ]
    responses = labels_report([t for t, _ in chosen], [p for _, p in chosen], confused_with=False)
    if responses:
        metrics["response"] = figures(responses)
    for extractor in _active_extractors(fold):
        report = entity_report(fold, extractor)
        if report:
            metrics[f"entity:{extractor}"] = figures(report)
    return metrics


@contextlib.contextmanager
def _each_said_once(log: logging.Logger) -> Iterator[None]:
    """A message of `log` is written the first time only: cross-validation trains the
    pipeline once per fold, and its warnings (a component run as an equivalent, an option
    ignored) are the same each time. Only this thread's: the logger is the process's, and the
    server may train (POST /model/train) in another thread meanwhile."""
    said: set[str] = set()
    mine = threading.get_ident()

    def first_time(record: logging.LogRecord) -> bool:
        if record.thread != mine:
            return True
        message = record.getMessage()
        if message in said:
            return False
        said.add(message)
        return True

    log.addFilter(first_time)
    try:
        yield
    finally:
        log.removeFilter(first_time)


def _subset(data: NLUTrainingData, indices: np.ndarray) -> NLUTrainingData:
    return NLUTrainingData(
        examples=[data.examples[i] for i in indices],
        synonyms=data.synonyms,
        regexes=data.regexes,
        lookups=data.lookups,
        responses=data.responses,
    )
