"""`botserver test`: evaluate a model on test stories (core) and NLU data."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from statistics import fmean, pstdev

from server.dialogue.evaluation import (
    FAILED_STORIES_FILE,
    evaluate_stories,
    write_story_reports,
)
from server.dialogue.processor import DialogueModel
from server.errors import InvalidConfig, ModelError, PredictionErrors
from server.models.archive import read_archive
from server.models.extraction import extraction_directory
from server.models.loading import load_model
from server.models.local import resolve_local_model
from server.training.project import (
    data_files,
    holds_stories,
    load_test_stories,
    read_nlu_files,
)
from server.training.validation import story_reference_problems
from server.training.yaml_io import read_yaml_file

logger = logging.getLogger(__name__)


def load_model_file(path: Path) -> DialogueModel:
    """Reads, checks and builds the model an archive (or the newest in a directory) holds."""
    archive = resolve_local_model(Path(path))
    with extraction_directory() as directory:
        metadata = read_archive(archive, directory)
        return load_model(directory, metadata)


def _existing(path: Path, what: str, flag: str) -> Path:
    if not path.exists():
        raise InvalidConfig(f"{what} not found at '{path}' (give them with {flag})")
    return path


# Where `botserver test` looks for test stories, and where it falls back to without them.
TEST_STORIES = Path("tests")
TRAINING_DATA = Path("data")
# Rasa's name for a file of test stories: its end-to-end test reads only these.
TEST_FILE_PREFIX = "test_"


def _test_story_files(given: str | None, e2e: bool = False, whole: bool = False) -> list[Path]:
    """The files of `--stories`, or else of `tests`; a project without a `tests` folder is
    tested on the stories of `data`, with a warning, as `rasa test core` does (Rasa's example
    bots have no tests folder): with `--e2e`, as Rasa, on its `test_*` files alone, and an
    error says so when there are none. `whole`: for `botserver test`, whose warning says
    `rasa test` tests none of the training stories. A path given with `--stories` is not
    replaced: a typo stays an error."""
    if given is not None:
        return data_files([_existing(Path(given), "test stories", "--stories")])
    if not _falls_back_to_data():
        return data_files([_existing(TEST_STORIES, "test stories", "--stories")])
    if e2e:
        files = _end_to_end_files_of_data()
        if not files:
            raise InvalidConfig(
                f"--e2e tests end-to-end test stories, and there are none: no '{TEST_STORIES}' "
                f"folder, and no {TEST_FILE_PREFIX}*.yml file of stories in '{TRAINING_DATA}' "
                f"(where Rasa's --e2e looks without one). Write test stories in "
                f"'{TEST_STORIES}/' (as `rasa init` does), or give them with --stories."
            )
        # Training reads them too, as Rasa's: they are no held-out data.
        tested = f"the {TEST_FILE_PREFIX}*.yml stories of '{TRAINING_DATA}'"
        why = f"`botserver train` trains on them too, as on every story file of '{TRAINING_DATA}': "
    else:
        files = data_files([TRAINING_DATA])
        tested, why = f"the training stories of '{TRAINING_DATA}'", ""
    rasa, none = "Rasa does", ""
    if whole and not e2e:
        rasa = "`rasa test core` does, on their actions"
        none = f"`rasa test` tests none here, it reads only {TEST_FILE_PREFIX}*.yml files; "
    print(
        f"warning: no test stories at '{TEST_STORIES}'; testing {tested} instead, as {rasa} "
        f"({why}accuracy on data the model was trained on; {none}give test stories with "
        "--stories).",
        file=sys.stderr,
    )
    return files


def _stories_to_test(args: argparse.Namespace, has_nlu: bool) -> tuple[list[Path], bool]:
    """The test story files, and whether they are tested end to end: `botserver test`
    tests them end to end, as `rasa test` (its core test always runs with --e2e), and so do
    `test core --e2e`. Without test stories (no `tests` folder, no `data/test_*.yml`),
    `botserver test` tests the training stories of `data` on their actions, where Rasa
    would test none; `--e2e` given is an error there. A model without NLU (`has_nlu`
    false) is tested on the actions: it cannot read the user texts, whose intents would all
    count as right."""
    e2e = args.e2e or (args.what is None and has_nlu)
    if e2e and not args.e2e and args.stories is None and _falls_back_to_data():
        e2e = bool(_end_to_end_files_of_data())
    return _test_story_files(args.stories, e2e, whole=args.what is None), e2e


def _falls_back_to_data() -> bool:
    """Whether test stories are looked for in `data`, for want of a `tests` folder."""
    return not TEST_STORIES.exists() and TRAINING_DATA.exists()


def _end_to_end_files_of_data() -> list[Path]:
    """As Rasa's: the `test_*` files of stories in `data` (not data/test_nlu.yml)."""
    return [
        f
        for f in data_files([TRAINING_DATA])
        if f.name.startswith(TEST_FILE_PREFIX) and holds_stories(read_yaml_file(f))
    ]


def report_files(args: argparse.Namespace) -> dict[str, bool]:
    """Which of Rasa's optional result files `botserver test` writes (its flags, as Rasa's)."""
    return {
        "plot": not args.no_plot,
        "errors": not args.no_errors,
        "successes": args.successes,
    }


def test_core(
    model: DialogueModel,
    story_files: list[Path],
    out: Path,
    e2e: bool = False,
    max_stories: int | None = None,
    warnings: bool = True,
    **files: bool,
) -> dict:
    """Tests the stories of `story_files`, writes the reports to `out` and says how many
    stories were right; returns story_report.json's content."""
    stories = load_test_stories(story_files, model.domain)
    for problem in story_reference_problems(stories, model.domain):
        # As Rasa warns: such a step cannot be predicted, its story will fail.
        print(f"warning: {problem}", file=sys.stderr)
    # The first stories as tested: whole conversations, joined at their checkpoints.
    results = evaluate_stories(stories, model, e2e, max_stories)
    report = write_story_reports(results, out, warnings=warnings, **files)
    correct = sum(r.correct for r in results)
    accuracy = correct / len(results) if results else 0.0
    print(
        f"Test stories: {correct}/{len(results)} correct "
        f"(conversation accuracy {accuracy:.1%}); reports in {out}/"
    )
    return report


def test_nlu(model: DialogueModel, nlu_path: Path, out: Path, **files: bool) -> dict | None:
    from server.nlu.evaluation import evaluate

    if model.nlu is None:
        print("The model has no NLU pipeline: nothing to test.")
        return None
    nlu_path = _existing(nlu_path, "NLU test data", "--nlu")
    data = read_nlu_files([nlu_path])
    if not data.examples:
        print(f"NLU: no examples in {nlu_path}: nothing to test (give them with --nlu).")
        return None
    report = evaluate(model.nlu, data, out, **files)  # type: ignore[arg-type]
    intents = report.get("intent_evaluation")
    if intents:
        said = f"intent accuracy {intents['accuracy']}"
    else:  # as Rasa, with two intents or more
        count = len(data.intents)
        said = f"intents not evaluated: the test data has {count} intent{'s' * (count != 1)}"
    selection = report.get("response_selection_evaluation")
    selected = f", response selection accuracy {selection['accuracy']}" if selection else ""
    print(f"NLU: {said}{selected}; reports in {out}/")
    return report


def cross_validate_nlu(args: argparse.Namespace, out: Path) -> None:
    from server.nlu.evaluation import cross_validate
    from server.training.config_yaml import read_config

    config = read_config(args.config)
    data = read_nlu_files([_existing(Path(args.nlu), "NLU test data", "--nlu")])
    report = cross_validate(
        data, config.pipeline, args.folds, out, config.language, **report_files(args)
    )
    for line in cross_validation_lines(args.folds, report["fold_metrics"]):
        print(line)
    print(f"Reports in {out}/ (the held-out examples of every fold).")


def cross_validation_lines(
    folds: int, fold_metrics: dict[str, dict[str, list[float]]]
) -> list[str]:
    """Rasa's summary of a cross-validation: per evaluation, each metric's mean over the
    folds and (its standard deviation). Rasa also gives the figures on the training folds;
    only the held-out ones are measured here."""
    lines = [f"CV evaluation (n={folds})"]
    entities = [key for key in fold_metrics if key.startswith("entity:")]
    for key in ["intent", *entities, "response"]:
        if key not in fold_metrics:
            continue
        if key == "intent":
            lines.append("Intent evaluation results")
        elif key == "response":
            lines.append("Response Selection evaluation results")
        else:
            if key == entities[0]:
                lines.append("Entity evaluation results")
            lines.append(f"Entity extractor: {key.removeprefix('entity:')}")
        for name, values in fold_metrics[key].items():
            lines.append(f"test {name}: {fmean(values):.3f} ({pstdev(values):.3f})")
    return lines


def _parts_to_test(model: DialogueModel, what: str | None, path: str) -> tuple[bool, bool]:
    """Whether to test the stories and the NLU: a model of one part (`train nlu`, `train
    core`) is tested on that part, as Rasa skips the part a model lacks; asked for the
    missing part alone (`test core` on an NLU-only model), it is an error."""
    trained = model.metadata.get("training_type")
    lacks = {"nlu": "core", "core": "nlu"}.get(str(trained))
    core, nlu = what in (None, "core") and lacks != "core", what in (None, "nlu") and lacks != "nlu"
    if lacks is None:
        return core, nlu
    missing, needs = (
        (
            "no dialogue (it was trained without stories or rules, or by `botserver train nlu`)",
            "stories or rules",
        )
        if lacks == "core"
        else (
            "no NLU (it was trained without NLU examples, or by `botserver train core`)",
            "NLU examples",
        )
    )
    if what == lacks:
        raise ModelError(
            f"{path}: the model has {missing}: there is nothing for `botserver test {what}` "
            f"to test; train the whole model with `botserver train` on a project with {needs}"
        )
    if what is None:
        print(
            f"warning: {path}: the model has {missing}; only its "
            f"{'NLU' if lacks == 'core' else 'test stories'} are tested",
            file=sys.stderr,
        )
    return core, nlu


def run_test(args: argparse.Namespace) -> int:
    out = Path(args.out)
    files = report_files(args)
    if args.what == "nlu" and args.cross_validation:
        cross_validate_nlu(args, out)
        return 0
    model = load_model_file(Path(args.model))
    core, nlu = _parts_to_test(model, args.what, args.model)
    if nlu or args.cross_validation:
        # A typo in -u stops the command before the stories are tested, as one in -s does
        # (Rasa warns and tests the NLU on `data`, the training data).
        _existing(Path(args.nlu), "NLU test data", "--nlu")
    failed = 0
    if core:
        story_files, e2e = _stories_to_test(args, model.nlu is not None)
        report = test_core(
            model, story_files, out, e2e, args.max_stories, not args.no_warnings, **files
        )
        stories = report.get("conversation_accuracy", {"total": 0, "correct": 0})
        failed = stories["total"] - stories["correct"]
    if args.what is None and args.cross_validation:
        # As `rasa test --cross-validation`: the stories on the model, the NLU data in folds.
        cross_validate_nlu(args, out)
    elif nlu:
        test_nlu(model, Path(args.nlu), out, **files)
    if failed and args.fail_on_prediction_errors:
        # (An error the command ends with: printed and logged as any other.)
        raise PredictionErrors(
            f"{failed} test stor{'y' if failed == 1 else 'ies'} failed "
            f"(--fail-on-prediction-errors); see {out / FAILED_STORIES_FILE}"
        )
    return 0
