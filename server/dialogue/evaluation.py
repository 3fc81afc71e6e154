"""Test stories: replay each story against the model and compare actions (and, end to end,
the intents and entities the NLU finds in the user's text).

As in Rasa, the gold events are applied after each prediction, so one mistake does not hide
the rest of the story; a story is correct when every compared label matches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.dialogue.actions import full_retrieval_name
from server.dialogue.processor import DialogueModel, note_text_featurization, predict_next_action
from server.dialogue.story_export import (
    LINE_BREAK,
    entity_lines,
    story_intent,
    user_markup,
    yaml_scalar,
)
from server.dialogue.story_steps import StoryStep, entity_slots, join_test_stories
from server.nlu.evaluation import labels_report
from server.nlu.training_data import message_markup
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActionExecutionRejected,
    Event,
    SlotSet,
    UserUttered,
)
from server.trackers.tracker import Tracker

logger = logging.getLogger(__name__)

REPORT_FILE = "story_report.json"
FAILED_STORIES_FILE = "failed_test_stories.yml"
# Rasa lists there the stories that passed with `action_unlikely_intent` predicted; we have no
# UnexpecTEDIntentPolicy, so it is always the "no warnings" file, as Rasa writes it then.
WARNINGS_FILE = "stories_with_warnings.yml"
SUCCESSFUL_STORIES_FILE = "successful_test_stories.yml"


@dataclass
class StoryResult:
    """How one test story went: the gold and predicted labels (actions, and intents end to
    end, in order), the steps that went wrong, and the `action_listen` missed before event i
    (i = the number of events: at the story's end)."""

    story: StoryStep
    gold: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (event index, gold, got)
    # Each action step: (gold, predicted, confidence, policy), as Rasa's `actions` list.
    actions: list[tuple[str, str, float | None, str | None]] = field(default_factory=list)
    missed_listens: dict[int, str] = field(default_factory=dict)
    # The slots the entities of the user step at event i filled (as Rasa's test tracker
    # has them, after that step), written back with the story.
    entity_slots: dict[int, list[SlotSet]] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return not self.failures and not self.missed_listens


def _action_label(event: ActionExecuted) -> str:
    return event.action_name or event.action_text or ""


def _predict(tracker: Tracker, model: DialogueModel, result: StoryResult, gold: str) -> str:
    """The action the model picks next (the active form, where the story says otherwise,
    counts as rejected, as Rasa's evaluation assumes), noted in `result`."""
    confidence: float | None = None
    policy: str | None = None
    try:
        prediction = predict_next_action(tracker, model)
        note_text_featurization(tracker, model, prediction)
        if prediction.action_name != gold and _form_might_reject(
            tracker, model, prediction.action_name
        ):
            tracker.update(ActionExecutionRejected(action_name=prediction.action_name))
            prediction = predict_next_action(tracker, model)
        got, confidence, policy = (
            _action_predicted(tracker, model, prediction.action_name, gold),
            prediction.confidence,
            prediction.policy_name,
        )
    except Exception as exc:  # a policy error is a failed step, not a crashed test run
        logger.error("prediction failed in story '%s': %s", result.story.name, exc)
        got = "None"
    result.gold.append(gold)
    result.predicted.append(got)
    result.actions.append((gold, got, confidence, policy))
    return got


def _action_predicted(tracker: Tracker, model: DialogueModel, predicted: str, gold: str) -> str:
    """As Rasa's: a retrieval action (`utter_faq`) the story does not name as it is is named
    by the response it utters (`utter_faq/ask_name`), so a step `action: utter_faq/ask_name`
    holds only when the response selector chose that response."""
    if predicted == gold or not model.domain.is_retrieval_action(predicted):
        return predicted
    return full_retrieval_name(tracker.latest_message.parse_data, predicted) or predicted


def _expect_listen(result: StoryResult, tracker: Tracker, model: DialogueModel, at: int) -> None:
    """As Rasa, the bot must stop (predict `action_listen`) before each user message but the
    story's first, and at the story's end."""
    if tracker.latest_action_name == ACTION_LISTEN and isinstance(
        tracker.events[-1], ActionExecuted
    ):
        return
    got = _predict(tracker, model, result, ACTION_LISTEN)
    if got != ACTION_LISTEN:
        result.missed_listens[at] = got
    tracker.update(ActionExecuted(action_name=ACTION_LISTEN))


def evaluate_story(story: StoryStep, model: DialogueModel, e2e: bool = False) -> StoryResult:
    """Replays one story. As Rasa's: the actions are compared; with `e2e`, so are the intent
    and entities the model's NLU finds in each user text. Otherwise a user step is read as the
    story writes it (its text parsed only when it names no intent)."""
    result = StoryResult(story)
    tracker = Tracker(story.name, model.domain.slot_defaults())
    tracker.update(ActionExecuted(action_name=ACTION_LISTEN))
    for index, event in enumerate(story.events):
        if isinstance(event, UserUttered):
            if index > 0:
                _expect_listen(result, tracker, model, index)
            # A retrieval intent with its response key (`faq/ask_name`) as the story gives it.
            gold_intent = story_intent(event)
            parse_data = dict(event.parse_data)
            if gold_intent is not None:
                parse_data["intent"] = {**event.intent, "confidence": 1.0}
            got_intent = gold_intent
            if event.text and model.nlu is not None and (e2e or gold_intent is None):
                parsed = model.nlu.parse(event.text)
                got_intent = _intent_predicted(parsed, gold_intent)
                wrong_intent = gold_intent is not None and got_intent != gold_intent
                misread = e2e and (
                    wrong_intent
                    or _entity_spans(event.entities) != _entity_spans(parsed.get("entities") or [])
                )
                if misread:
                    # As Rasa, a user step fails on its intent or its entities, and the
                    # comment shows what was understood: `predicted: intent: [text](entity)`.
                    result.failures.append(
                        (index, str(gold_intent), f"{got_intent}: {_understood(parsed)}")
                    )
                if gold_intent is None:
                    # The intent the NLU finds (the story gives none), and the entities the
                    # story marks up in its text, as it goes on after any other step.
                    parse_data = {**parsed, "entities": list(event.entities)}
                elif not misread and "response_selector" in parsed:
                    # As Rasa's, the story goes on with the intent and entities it gives, read
                    # right or not (one misread step does not make the next ones fail too),
                    # with the response chosen on a text read right: the next
                    # `action: utter_faq/ask_name` holds only on that choice.
                    parse_data["response_selector"] = parsed["response_selector"]
            if e2e and gold_intent is not None:
                result.gold.append(gold_intent)
                # No intent is "", as `test nlu` labels it ("None" names an intent in bots).
                result.predicted.append("" if got_intent is None else str(got_intent))
            tracker.update(
                UserUttered(text=event.text, parse_data=parse_data, message_id=event.message_id)
            )
            if model.domain.store_entities_as_slots:
                # As Rasa's test, and as training reads stories: the slots the story's
                # entities fill (from_entity mappings outside forms); no other mapping runs,
                # so a slot changes only as the story says (its `slot_was_set` steps).
                filled = entity_slots(event.entities, model.domain)
                if filled:
                    result.entity_slots[index] = filled
                    tracker.update_many(filled)
        elif isinstance(event, ActionExecuted):
            gold = _action_label(event)
            got = _predict(tracker, model, result, gold)
            if got != gold:
                result.failures.append((index, gold, got))
            tracker.update(event)
        else:
            tracker.update(event)
    if not story.end_checkpoints:
        _expect_listen(result, tracker, model, len(story.events))
    return result


def _intent_predicted(parsed: dict[str, Any], gold: str | None) -> str | None:
    """The intent found, as Rasa's evaluation names it: with its response key
    (`faq/ask_name`, the response selector's choice) where the name alone is not the story's,
    so a step `intent: faq/ask_name` holds only when that response was chosen."""
    intent = parsed.get("intent") or {}
    name = intent.get("name")
    full_name = intent.get("full_retrieval_intent_name")
    if name != gold and isinstance(full_name, str) and full_name:
        return full_name
    return name


def _entity_spans(entities: list[dict[str, Any]]) -> set[tuple[str, Any, Any, str]]:
    """Entities as Rasa's evaluation compares them: type, span and value (as text)."""
    return {
        (str(e.get("entity")), e.get("start"), e.get("end"), str(e.get("value"))) for e in entities
    }


def _understood(parsed: dict[str, Any]) -> str:
    """The parsed text with the entities found marked up, as Rasa's test stories write it."""
    return message_markup(str(parsed.get("text") or ""), parsed.get("entities") or [])


def _form_might_reject(tracker: Tracker, model: DialogueModel, predicted: str) -> bool:
    return predicted == tracker.active_loop_name and predicted in model.domain.forms


def evaluate_stories(
    stories: list[StoryStep],
    model: DialogueModel,
    e2e: bool = False,
    max_stories: int | None = None,
) -> list[StoryResult]:
    """Each story, joined at its checkpoints as Rasa tests them (`join_test_stories`); with
    `max_stories`, the first so many of these conversations."""
    joined = join_test_stories(stories, max_stories)
    return [evaluate_story(s, model, e2e) for s in joined if s.kind == "story"]


# The policies that answer from the training data itself (a remembered story or a rule).
_MEMORIZING_POLICIES = {"RulePolicy", "MemoizationPolicy", "AugmentedMemoizationPolicy"}


def in_training_data_fraction(results: list[StoryResult]) -> float:
    """The share of action predictions a memorizing policy made, as Rasa means it (Rasa 3.6
    looks for `_RulePolicy`-style names its 3.x predictions no longer carry: always 0)."""
    policies = [policy for r in results for _, _, _, policy in r.actions]
    if not policies:
        return 0.0
    return sum(p in _MEMORIZING_POLICIES for p in policies) / len(policies)


def write_story_reports(
    results: list[StoryResult],
    out_dir: Path,
    *,
    plot: bool = True,
    errors: bool = True,
    warnings: bool = True,
    successes: bool = False,
) -> dict[str, Any]:
    """Writes story_report.json and, as `rasa test` does unless told otherwise
    (`--no-errors`, `--no-warnings`, `--no-plot`, `--successes`), failed_test_stories.yml,
    stories_with_warnings.yml, the confusion matrix and successful_test_stories.yml."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gold = [g for r in results for g in r.gold]
    predicted = [p for r in results for p in r.predicted]
    # As Rasa's core test: sklearn's report and averages, without the NLU's confused_with.
    report = labels_report(gold, predicted, confused_with=False)
    correct = sum(r.correct for r in results)
    total = len(results)
    if total:  # as Rasa's: no stories, no conversation_accuracy (the report is {})
        report["conversation_accuracy"] = {
            "accuracy": correct / total,
            "correct": correct,
            "with_warnings": 0,
            "total": total,
        }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if errors:
        _write_stories(
            [r for r in results if not r.correct],
            out_dir / FAILED_STORIES_FILE,
            "# None of the test stories failed - all good!",
        )
    if successes:
        _write_stories(
            [r for r in results if r.correct],
            out_dir / SUCCESSFUL_STORIES_FILE,
            "# None of the test stories succeeded :(",
        )
    if warnings:
        # Rasa's words, without a closing line break, as Rasa writes them.
        (out_dir / WARNINGS_FILE).write_text("# No warnings for test stories", encoding="utf-8")
    if gold and plot:
        _confusion_matrix(gold, predicted, out_dir / "story_confusion_matrix.png")
    return report


def _write_stories(results: list[StoryResult], path: Path, if_none: str) -> None:
    """The stories as test stories, each wrong prediction noted beside its step, and (as
    Rasa's) a `slot_was_set` step after a user step for each slot its entities set."""
    if not results:
        path.write_text(if_none, encoding="utf-8")
        return
    lines = ['version: "3.1"', "stories:"]
    for result in results:
        lines.append(f"- story: {yaml_scalar(result.story.name)}")
        if result.story.filename:
            lines.append(f"  # {result.story.filename}:{result.story.line}")
        lines.append("  steps:")
        wrong = {index: (g, p) for index, g, p in result.failures}
        listen = ActionExecuted(action_name=ACTION_LISTEN)
        for index, event in enumerate(result.story.events):
            if index in result.missed_listens:
                lines.extend(_step_lines(listen, ("", result.missed_listens[index])))
            lines.extend(_step_lines(event, wrong.get(index)))
            for filled in result.entity_slots.get(index, []):
                lines.extend(_step_lines(filled, None))
        end = len(result.story.events)
        if end in result.missed_listens:
            lines.extend(_step_lines(listen, ("", result.missed_listens[end])))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _step_lines(event: Event, failure: tuple[str, str] | None) -> list[str]:
    # (a comment ends at a line break: the text's own are written escaped, `\n`)
    note = f"  # predicted: {_one_line(failure[1])}" if failure else ""
    if isinstance(event, UserUttered):
        out = []
        # The text marked up with the step's entities: read back, it expects them again.
        # (in YAML's own escapes: JSON's surrogate pairs for an emoji do not read back)
        text = user_markup(event.text, event.entities) if event.text else None
        intent = story_intent(event)
        if text and intent is None:  # text alone, as the story gave it (as Rasa writes it)
            out.append(f"  - user: {yaml_scalar(text)}{note}")
        elif text:
            out.append(f"  - user: {yaml_scalar(text)}")
            out.append(f"    intent: {yaml_scalar(intent)}{note}")
        else:  # written by its intent: its entities are listed, as the story had them
            out.append(f"  - intent: {yaml_scalar(intent)}{note}")
            out.extend(entity_lines(event.entities))
        return out
    if isinstance(event, ActionExecuted):
        if event.action_name:
            return [f"  - action: {yaml_scalar(event.action_name)}{note}"]
        return [f"  - bot: {yaml_scalar(event.action_text)}{note}"]
    d = event.as_dict()
    if d["event"] == "slot":
        return ["  - slot_was_set:", f"    - {yaml_scalar(d['name'])}: {yaml_scalar(d['value'])}"]
    if d["event"] == "active_loop":
        return [f"  - active_loop: {yaml_scalar(d['name'] or None)}"]
    return []


def _one_line(text: str) -> str:
    """`text` with each character YAML reads as a line break escaped (`\\n`, `\\u2028`)."""
    return LINE_BREAK.sub(lambda found: repr(found.group())[1:-1], text)


def _confusion_matrix(gold: list[str], predicted: list[str], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import ConfusionMatrixDisplay
    except ImportError:
        logger.warning("matplotlib is not installed: no confusion matrix image")
        return
    labels = sorted(set(gold) | set(predicted))
    size = max(6.0, len(labels) * 0.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        gold, predicted, labels=labels, ax=ax, xticks_rotation="vertical", colorbar=False
    )
    ax.set_title("Action confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
