"""`botserver test`'s result files as Rasa 3.6 writes them: names, JSON keys, and which
are written when."""

from __future__ import annotations

import json
from pathlib import Path

from server.dialogue.evaluation import StoryResult, write_story_reports
from server.dialogue.story_steps import StoryStep
from server.trackers.events import UserUttered
from server.training.stories_yaml import read_story_data
from server.training.yaml_io import parse_yaml

SUMMARY_KEYS = {"accuracy", "micro avg", "macro avg", "weighted avg"}


def _nlu_test_file(project: Path, examples: dict[str, list[str]]) -> Path:
    path = project / "test_nlu.yml"
    path.write_text(
        'version: "3.1"\nnlu:\n'
        + "".join(
            f"- intent: {intent}\n  examples: |\n" + "".join(f"    - {t}\n" for t in texts)
            for intent, texts in examples.items()
        )
    )
    return path


def test_intent_report_has_rows_for_the_tested_intents_and_rasas_averages(
    run_cli, starter_copy: Path
) -> None:
    # Before: a row for an intent only predicted (its zeros lowered the macro avg), and no
    # "micro avg". Rasa reports the test data's intents, with accuracy and micro avg both.
    data = _nlu_test_file(starter_copy, {"greet": ["hello", "are you a bot?"], "goodbye": ["bye"]})

    result = run_cli("test", "nlu", "-u", str(data), "--no-plot", cwd=starter_copy)

    assert result.code == 0, result.err
    results = starter_copy / "results"
    report = json.loads((results / "intent_report.json").read_text())
    assert set(report) == {"greet", "goodbye"} | SUMMARY_KEYS
    assert report["greet"]["confused_with"] == {"bot_challenge": 1}
    assert report["goodbye"]["confused_with"] == {}
    assert report["accuracy"] == 2 / 3
    assert report["macro avg"]["support"] == 3
    assert set(report["micro avg"]) == {"precision", "recall", "f1-score", "support"}
    errors = json.loads((results / "intent_errors.json").read_text())
    assert [e["text"] for e in errors] == ["are you a bot?"]


def test_no_errors_file_when_every_intent_is_right_as_in_rasa(run_cli, starter_copy: Path) -> None:
    # Before: an intent_errors.json of `[]`. Rasa writes none ("Every intent was predicted
    # correctly by the model."), nor a successes file without successes.
    data = _nlu_test_file(starter_copy, {"greet": ["hello"], "goodbye": ["bye"]})

    result = run_cli("test", "nlu", "-u", str(data), "--no-plot", cwd=starter_copy)

    assert result.code == 0, result.err
    written = {path.name for path in (starter_copy / "results").iterdir()}
    assert written == {"intent_report.json"}
    report = json.loads((starter_copy / "results" / "intent_report.json").read_text())
    assert set(report) == {"greet", "goodbye"} | SUMMARY_KEYS


def test_story_report_has_rows_for_the_stories_labels_and_rasas_averages(
    run_cli, starter_copy: Path
) -> None:
    # Before: a row for utter_greet, which the story does not have but the bot predicted,
    # and no "micro avg"; then a confused_with in each row, which Rasa's has not.
    story = starter_copy / "one_story.yml"
    story.write_text(
        'version: "3.1"\nstories:\n- story: wrong answer\n  steps:\n'
        "  - intent: greet\n  - action: utter_goodbye\n"
    )

    result = run_cli("test", "core", "-s", str(story), "--no-plot", cwd=starter_copy)

    assert result.code == 0, result.err
    results = starter_copy / "results"
    report = json.loads((results / "story_report.json").read_text())
    assert set(report) == {"utter_goodbye", "action_listen", "conversation_accuracy"} | (
        SUMMARY_KEYS
    )
    # Rasa's core test reports sklearn's rows as they are: confused_with is its NLU
    # reports' (intent_report.json), not story_report.json's.
    assert set(report["utter_goodbye"]) == {"precision", "recall", "f1-score", "support"}
    assert report["utter_goodbye"]["recall"] == 0.0
    assert report["conversation_accuracy"] == {
        "accuracy": 0.0,
        "correct": 0,
        "with_warnings": 0,
        "total": 1,
    }
    # Rasa's words for a file without stories (no trailing newline, as Rasa writes it).
    assert (results / "stories_with_warnings.yml").read_text() == ("# No warnings for test stories")


def test_test_without_a_part_tests_the_stories_end_to_end_as_rasa_test(
    run_cli, starter_copy: Path
) -> None:
    # `rasa test` runs its core test with --e2e: each user text is parsed, and its intent
    # must be the story's. Before, `botserver test` compared only the actions.
    (starter_copy / "tests" / "test_more.yml").write_text(
        'version: "3.1"\nstories:\n- story: misheard\n  steps:\n'
        "  - user: |\n      what time do you open?\n    intent: greet\n"
        "  - action: utter_greet\n"
    )

    result = run_cli("test", "--no-plot", cwd=starter_copy)

    assert result.code == 0, result.err
    results = starter_copy / "results"
    failed = (results / "failed_test_stories.yml").read_text()
    assert "intent: greet  # predicted: ask_opening_hours" in failed
    report = json.loads((results / "story_report.json").read_text())
    assert report["greet"]["recall"] < 1.0
    assert set(report["greet"]) == {"precision", "recall", "f1-score", "support"}


def test_test_data_of_one_intent_gets_no_intent_report_as_in_rasa(
    run_cli, starter_copy: Path
) -> None:
    # Rasa evaluates the intents when the test data has two or more; the summary line said
    # "intent accuracy None" when there was nothing to evaluate.
    data = _nlu_test_file(starter_copy, {"greet": ["hello", "hi"]})

    result = run_cli("test", "nlu", "-u", str(data), "--no-plot", cwd=starter_copy)

    assert result.code == 0, result.err
    assert not (starter_copy / "results" / "intent_report.json").exists()
    assert "None" not in result.out
    assert "intents not evaluated: the test data has 1 intent" in result.out


def test_a_failed_story_keeps_a_retrieval_intents_response_key_as_rasa(tmp_path: Path) -> None:
    """failed_test_stories.yml writes `intent: faq/ask_name` as the test story has it, as
    Rasa's story writer does. Before: `intent: faq`, a story that no longer says which
    answer was expected."""
    story = """version: "3.1"
stories:
- story: asks
  steps:
  - user: who are you
    intent: faq/ask_name
  - action: utter_faq
"""
    [step] = read_story_data(parse_yaml(story), "test.yml")
    result = StoryResult(step, failures=[(2, "utter_faq", "action_listen")])
    write_story_reports([result], tmp_path, plot=False)
    failed = (tmp_path / "failed_test_stories.yml").read_text()
    assert "    intent: faq/ask_name\n" in failed, failed


def test_a_failed_story_keeps_the_entities_its_user_step_was_annotated_with(
    tmp_path: Path,
) -> None:
    """failed_test_stories.yml, read back as test stories, expects the entities the test
    story did. Before: the user step was written as its plain text (`I live in Berlin`), so
    running the failed stories again expected no entity, and counted the one found wrong."""
    story = """version: "3.1"
stories:
- story: lives
  steps:
  - user: I live in [Berlin](city)
    intent: inform
  - action: utter_noted
"""
    [step] = read_story_data(parse_yaml(story), "test.yml")
    result = StoryResult(step, failures=[(2, "utter_noted", "action_listen")])
    write_story_reports([result], tmp_path, plot=False)
    failed = (tmp_path / "failed_test_stories.yml").read_text()
    [again] = read_story_data(parse_yaml(failed), "failed_test_stories.yml")
    said, annotated = again.events[0], step.events[0]
    assert isinstance(said, UserUttered) and isinstance(annotated, UserUttered)
    assert (said.text, said.entities) == (annotated.text, annotated.entities), failed


def _failed_and_read_back(
    story: str, failure: tuple[int, str, str], tmp_path: Path
) -> tuple[StoryStep, str, StoryStep]:
    """The test story's step, the failed_test_stories.yml written for it, and that file read
    back as test stories."""
    [step] = read_story_data(parse_yaml(story), "test.yml")
    write_story_reports([StoryResult(step, failures=[failure])], tmp_path, plot=False)
    failed = (tmp_path / "failed_test_stories.yml").read_text()
    [again] = read_story_data(parse_yaml(failed), "failed_test_stories.yml")
    return step, failed, again


def test_a_failed_story_reads_back_with_its_emoji_and_its_intent_steps_entities(
    tmp_path: Path,
) -> None:
    """failed_test_stories.yml reads back as the test story it came from: a text or slot
    value beyond the BMP (an emoji), and a step written by its intent with its `entities:`.
    Before, the emoji was written as JSON's surrogate pair (`"\\ud83d\\ude00"`), which the
    story reader refused ("invalid Unicode character escape code"), and the step's entities
    were left out, so running the failed stories again set no slot from them."""
    story = """version: "3.1"
stories:
- story: cheers
  steps:
  - user: cheers 😀
    intent: thanks
  - bot: you're welcome 🙂
  - slot_was_set:
    - mood: 😀
  - intent: inform
    entities:
    - city: Berlin
      role: to
  - action: utter_noted
"""
    step, failed, again = _failed_and_read_back(
        story, (4, "utter_noted", "action_listen"), tmp_path
    )
    assert [e.as_dict() for e in again.events] == [e.as_dict() for e in step.events], failed


def test_a_failed_steps_note_of_a_text_over_two_lines_stays_on_its_line(tmp_path: Path) -> None:
    """The `# predicted:` note of an end-to-end step whose text holds a line break (a
    `user: |` block) writes the break escaped (`\\n`). Before, the text's second line
    landed outside the comment and the file was no longer YAML."""
    story = """version: "3.1"
stories:
- story: two lines
  steps:
  - user: |
      hello
      - action: x
    intent: greet
  - action: utter_greet
"""
    step, failed, again = _failed_and_read_back(
        story, (0, "greet", "deny: hello\n- action: x"), tmp_path
    )
    assert "    intent: greet  # predicted: deny: hello\\n- action: x\n" in failed, failed
    assert [e.as_dict() for e in again.events] == [e.as_dict() for e in step.events], failed


# A story ending at a checkpoint two stories go on from: one right, one wrong on the starter.
CHECKPOINT_STORIES = (
    'version: "3.1"\nstories:\n'
    "- story: hours asked\n  steps:\n"
    "  - intent: greet\n  - action: utter_greet\n"
    "  - intent: ask_opening_hours\n  - action: utter_opening_hours\n"
    "  - action: utter_anything_else\n  - checkpoint: anything_else\n"
    "- story: nothing else\n  steps:\n"
    "  - checkpoint: anything_else\n  - intent: deny\n  - action: utter_goodbye\n"
    "- story: wrong ending\n  steps:\n"
    "  - checkpoint: anything_else\n  - intent: deny\n  - action: utter_greet\n"
)


def test_test_stories_joined_at_a_checkpoint_are_tested_as_one_conversation_as_in_rasa(
    run_cli, starter_copy: Path
) -> None:
    # Before, each part was tested alone: the parts after the checkpoint, replayed from an
    # empty conversation, could pass or fail on their own (2 of 3 right here, where Rasa tests
    # 2 conversations, 1 right).
    story = starter_copy / "checkpoints.yml"
    story.write_text(CHECKPOINT_STORIES)

    tested = run_cli("test", "core", "-s", str(story), "--no-plot", cwd=starter_copy)

    assert "Test stories: 1/2 correct" in tested.out, tested.err
    failed = (starter_copy / "results" / "failed_test_stories.yml").read_text()
    # The whole conversation, named after its parts, placed at its first part.
    assert "- story: hours asked > wrong ending\n" in failed
    assert f"# {story}:3\n" in failed
    assert "  - intent: greet\n" in failed
    assert "  - action: utter_greet  # predicted: utter_goodbye\n" in failed


def test_a_test_story_written_twice_is_tested_twice_as_before(run_cli, starter_copy: Path) -> None:
    # Joining at checkpoints kept one of two stories with the same steps (as training
    # does): the count of stories fell from 2 to 1 though the file has no checkpoint.
    steps = (
        "  steps:\n  - intent: greet\n  - action: utter_greet\n"
        "  - intent: ask_opening_hours\n  - action: utter_opening_hours\n"
        "  - action: utter_anything_else\n  - intent: deny\n  - action: utter_goodbye\n"
    )
    story = starter_copy / "twice.yml"
    story.write_text(f'version: "3.1"\nstories:\n- story: one\n{steps}- story: two\n{steps}')

    tested = run_cli("test", "core", "-s", str(story), "--no-plot", cwd=starter_copy)

    assert "Test stories: 2/2 correct" in tested.out, (tested.out, tested.err)


def test_max_stories_counts_the_conversations_joined_at_checkpoints(
    run_cli, starter_copy: Path
) -> None:
    # Before, --max-stories cut the file's parts before joining them: `--max-stories 1`
    # tested the part before the checkpoint alone, as a whole conversation.
    story = starter_copy / "checkpoints.yml"
    story.write_text(CHECKPOINT_STORIES)

    flags = ("--no-plot", "--successes", "--max-stories", "1")
    tested = run_cli("test", "core", "-s", str(story), *flags, cwd=starter_copy)

    assert "Test stories: 1/1 correct" in tested.out, (tested.out, tested.err)
    passed = (starter_copy / "results" / "successful_test_stories.yml").read_text()
    assert "- story: hours asked > nothing else\n" in passed, passed
    assert "  - action: utter_goodbye\n" in passed, passed
