"""`data validate`: load a project and report what Rasa reports, as errors (the project
cannot be trained as written) and warnings (inconsistencies Rasa warns about)."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from server.dialogue.domain import DEFAULT_INTENTS, Domain
from server.dialogue.policies.ensemble import PolicyEnsemble, policy_name
from server.dialogue.policies.featurization import (
    PREV_ACTION,
    USER,
    State,
    state_identity,
    state_key,
    states_and_labels,
)
from server.dialogue.story_steps import (
    StoryStep,
    TrainingStory,
    checkpoint_warnings,
    generate_training_stories,
)
from server.errors import BotServerError, InvalidProjectFile, how_many
from server.nlu.pipeline import NLUPipeline
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActiveLoop,
    SlotSet,
    UserUttered,
)
from server.training.config_yaml import ProjectConfig, naming_config_items
from server.training.project import Project, load_project

# Responses Rasa runs by itself (default actions), so they need not appear in stories.
_IMPLICIT_RESPONSES = frozenset(
    {"utter_default", "utter_ask_rephrase", "utter_ask_affirmation", "utter_restart", "utter_back"}
)


@dataclass
class ValidationReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Warnings that fail the validation all the same, as Rasa's validator has them.
    failing_warnings: list[str] = field(default_factory=list)
    # What `train` says of config.yml (a component run as our equivalent, an option ignored):
    # shown, but never failing --fail-on-warnings, as Rasa's config warnings never fail it.
    config_warnings: list[str] = field(default_factory=list)
    # What Rasa's validator does not check (a slot, or an action named without `action_` or
    # `utter_`, that stories use and the domain lacks), or checks without ever failing on it,
    # --fail-on-warnings included (an intent or response no story uses, an intent without
    # NLU examples): shown, never failing, as with Rasa.
    unchecked_warnings: list[str] = field(default_factory=list)
    # An error training meets too (a file it cannot read, a component config.yml cannot
    # have): `train --skip-validation` does not get past it.
    training_stops: bool = False
    # The project read (None when it could not be): `train` trains it rather than reading
    # the files again, each reader warning printed once.
    project: Project | None = None
    # How many of `warnings` are story structure conflicts (the summary line names them).
    conflicts: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_project(
    config: str | Path | None,
    domain: str | Path,
    data: Iterable[str | Path],
    max_history: int | None = None,
    stories_only: bool = False,
    empty_domain_stops: bool = False,
) -> ValidationReport:
    """Loads the project and checks it; a file that cannot be read is one error.
    `max_history`: the turns story conflicts are looked for in (None: whole stories).
    `stories_only`: the story structure alone (conflicts), as `rasa data validate stories`.
    `empty_domain_stops`: a domain that declares nothing is the one error, as in
    `rasa data validate`."""
    report = ValidationReport()
    data = list(data)
    try:
        project = load_project(config, domain, data)
    except BotServerError as exc:
        report.errors.append(str(exc))
        report.training_stops = not _trains_without_domain(config, domain, data)
        return report
    report.project = project
    if stories_only:
        _add_conflicts(project, report, max_history)
        # As Rasa's `data validate stories`: config.yml's mandatory assistant_id, checked
        # whatever is validated.
        report.config_warnings += assistant_id_warnings(project.config)
        return report
    if empty_domain_stops and project.domain.is_empty:
        report.errors.append(
            f"{domain}: Encountered empty domain during validation (it declares no intent, "
            "entity, slot, response, action or form)"
        )
        return report
    report.warnings.extend(w for w in project.warnings if w not in project.unchecked_warnings)
    report.unchecked_warnings.extend(project.unchecked_warnings)
    try:
        report.config_warnings += check_config(
            project.config, with_nlu=bool(project.nlu.examples), project=project
        )
    except BotServerError as exc:
        report.errors.append(str(exc))
        report.training_stops = True
    check_project(project, report, max_history)
    return report


def _trains_without_domain(
    config: str | Path | None, domain: str | Path, data: list[str | Path]
) -> bool:
    """Whether a project validation could not read is read by `train --skip-validation`:
    when the domain file is missing, which training takes as an empty domain (an NLU-only
    model, as Rasa's training does), and the other files are read."""
    if Path(domain).exists():
        return False
    try:
        load_project(config, domain, data, missing_domain_is_empty=True)
    except BotServerError:
        return False
    return True


# The assistant_id of every project `rasa init` makes (Rasa warns while it is left as is).
ASSISTANT_ID_PLACEHOLDER = "placeholder_default"


def placeholder_assistant_id(config: ProjectConfig) -> str | None:
    """The warning for config.yml's `assistant_id` left as `rasa init`'s placeholder (the
    model keeps it, as Rasa 3.6's does), else None."""
    if config.assistant_id != ASSISTANT_ID_PLACEHOLDER:
        return None
    return (
        f"{config.filename or 'config.yml'}: 'assistant_id' is still the placeholder "
        f"'{ASSISTANT_ID_PLACEHOLDER}' that every `rasa init` project has; replace it with a "
        "unique name to tell this assistant's events from others'."
    )


def missing_assistant_id(config: ProjectConfig, made_up: str | None = None) -> str:
    """The warning for a config.yml without `assistant_id`, by training (naming the random
    one it `made_up`) and `data validate` alike."""
    this_time = f" ('{made_up}' this time)" if made_up else ""
    return (
        f"{config.filename or 'config.yml'}: the 'assistant_id' key is missing; each "
        f"training gives the model a new random assistant_id{this_time}. Add a unique "
        "'assistant_id' to config.yml to identify this assistant's events."
    )


def assistant_id_warnings(config: ProjectConfig) -> list[str]:
    """The warning for config.yml's `assistant_id` missing or left as `rasa init`'s
    placeholder, as Rasa's validator warns of it (`data validate`, and `data validate
    stories` too)."""
    if not config.assistant_id:
        return [missing_assistant_id(config)]
    placeholder = placeholder_assistant_id(config)
    return [] if placeholder is None else [placeholder]


def check_config(
    config: ProjectConfig,
    with_nlu: bool = True,
    project: Project | None = None,
    with_policies: bool = True,
) -> list[str]:
    """The checks `train` makes of config.yml's pipeline (`with_nlu`) and policies
    (`with_policies`: an NLU-only model trains none), without training: InvalidProjectFile
    naming config.yml and the item's line if one is refused, else the warnings `train`
    gives about them (with `project`'s data, its synonyms)."""
    warnings = [*config.warnings, *assistant_id_warnings(config)]
    with naming_config_items(config):
        if with_nlu:
            data = project.nlu if project is not None else None
            warnings += NLUPipeline.check(config.pipeline, config.language, data)
        if with_policies:
            warnings += PolicyEnsemble.from_config(config.policies).warnings
    return warnings


def _add_conflicts(project: Project, report: ValidationReport, max_history: int | None) -> None:
    conflicts = _conflicts(project, max_history)
    report.conflicts += len(conflicts)
    report.warnings.extend(conflicts)


def _conflicts(project: Project, max_history: int | None) -> list[str]:
    """Stories that lead to different actions after the same turns. A warning, as in Rasa:
    the policies learn one of the two; --fail-on-warnings fails on it."""
    stories = [
        s for s in generate_training_stories(project.stories, project.domain) if not s.is_rule
    ]
    return story_conflicts(stories, project.domain, max_history)


def check_project(
    project: Project, report: ValidationReport, max_history: int | None = None
) -> None:
    domain = project.domain
    _check_mapping_policy_triggers(project, report)
    _check_intents(project, report)
    _check_entities(project, report)
    _check_story_references(project.stories, domain, report)
    _check_forms(project, report)
    _check_mapping_conditions(project, report)
    _check_responses_of_listed_actions(project, report)
    _check_unused_responses(project, report)
    # Rasa warns of them as it reads the stories; its validator does not fail on them.
    report.unchecked_warnings.extend(checkpoint_warnings(project.stories))
    _add_conflicts(project, report, max_history)
    if story_actions_stop_training(project):
        report.training_stops = True  # training refuses them (see `check_story_actions`)


def _where(step: StoryStep, index: int | None = None) -> str:
    """`file:line: ` of a step, or of its event `index` (negative: condition events)."""
    line = step.line
    if index is not None and 0 <= index < len(step.event_lines):
        line = step.event_lines[index] or step.line
    return _at(step.filename, line)


def _defined_at(project: Project, kind: str, name: str) -> str:
    """`file:line: ` where the domain item `name` of section `kind` was defined, or ""."""
    return _at(*project.origins.get(f"{kind}:{name}", (None, None)))


def _at(filename: str | None, line: int | None) -> str:
    if not filename:
        return ""
    return f"{filename}:{line}: " if line else f"{filename}: "


def story_reference_warnings(project: Project) -> list[str]:
    """Names that stories and rules use but the domain lacks, as training warnings: the bot
    never follows the steps that use them (`data validate` reports some as errors)."""
    return story_reference_problems(project.stories, project.domain)


def missing_response_warnings(project: Project) -> list[str]:
    """The `utter_` actions the domain lists without a response of their name (nor
    retrieval responses under it), as Rasa warns at training: they say nothing unless an NLG
    server writes them. Each names the file and line where the domain lists it."""
    return [warning for _name, warning in _missing_responses(project)]


def _missing_responses(project: Project) -> list[tuple[str, str]]:
    responses = project.domain.responses
    return [
        (
            name,
            f"{_defined_at(project, 'actions', name)}action '{name}' is listed in the domain "
            "but has no response of that name: it says nothing unless an NLG server writes it",
        )
        for name in project.domain.user_actions
        if name.startswith("utter_")
        and name not in responses
        and not project.domain.is_retrieval_action(name)
    ]


def _check_responses_of_listed_actions(project: Project, report: ValidationReport) -> None:
    """An `utter_` action listed without a response: failing --fail-on-warnings when a story
    or rule runs it, as Rasa's validator then finds "not a valid utterance action"; else
    only shown, as Rasa only warns of it while reading the domain."""
    used = _story_actions(project.stories)
    for name, warning in _missing_responses(project):
        (report.warnings if name in used else report.unchecked_warnings).append(warning)


def _story_actions(steps: list[StoryStep]) -> set[str]:
    return {
        event.action_name
        for step in steps
        for event in [*step.condition, *step.events]
        if isinstance(event, ActionExecuted) and event.action_name
    }


def _check_intents(project: Project, report: ValidationReport) -> None:
    domain_intents = set(project.domain.intents)
    nlu_intents = set(project.nlu.intents)
    # Rasa's validator warns of the two "unused" kinds without ever failing on them,
    # --fail-on-warnings included (it keeps the result it had).
    for intent in sorted(domain_intents - nlu_intents - set(DEFAULT_INTENTS)):
        report.unchecked_warnings.append(
            f"{_defined_at(project, 'intents', intent)}intent '{intent}' is in the domain but "
            "has no examples in the NLU data"
        )
    for intent in sorted(nlu_intents - domain_intents - set(DEFAULT_INTENTS)):
        # Rasa's words; a warning, as in Rasa 3.6 (it fails with --fail-on-warnings only).
        report.warnings.append(
            f"There is a message in the training data labeled with intent '{intent}'. "
            "This intent is not listed in your domain. You should need to add that intent "
            "to your domain file!"
        )
    in_stories = {
        event.intent_name
        for step in project.stories
        for event in [*step.condition, *step.events]
        if isinstance(event, UserUttered) and event.intent_name
    }
    for intent in sorted(domain_intents - in_stories - set(DEFAULT_INTENTS)):
        report.unchecked_warnings.append(
            f"{_defined_at(project, 'intents', intent)}intent '{intent}' is not used in any "
            "story or rule"
        )
    _check_examples_under_two_intents(project, report)


def _check_mapping_policy_triggers(project: Project, report: ValidationReport) -> None:
    """An intent's `triggers` (Rasa 2's MappingPolicy) does nothing in Rasa 3: Rasa's
    validator fails on it, in these words; rules do what it did."""
    for name, properties in project.domain.intent_properties.items():
        if properties.triggers is not None:
            warning = (
                f"{_defined_at(project, 'intents', name)}The intent {name} in the domain file "
                "is using the MappingPolicy format which has now been deprecated. Please "
                "migrate to RulePolicy."
            )
            report.warnings.append(warning)
            report.failing_warnings.append(warning)


def _check_examples_under_two_intents(project: Project, report: ValidationReport) -> None:
    """Rasa's `verify_example_repetition_in_intents`, in its words: a text given as an example
    of two intents (entity markup aside) teaches the classifier both."""
    intents_of: dict[str, set[str]] = defaultdict(set)
    for example in project.nlu.examples:
        if example.base_intent:
            intents_of[example.text].add(example.base_intent)
    for text, intents in intents_of.items():
        if len(intents) > 1:
            report.warnings.append(
                f"The example '{text}' was found labeled with multiple different intents in "
                "the training data. Each annotated message should only appear with one intent. "
                f"You should fix that conflict The example is labeled with: "
                f"{', '.join(sorted(intents))}."
            )


def _check_entities(project: Project, report: ValidationReport) -> None:
    known = set(project.domain.entities)
    for entity in sorted(set(project.nlu.entities) - known):
        # Rasa's validator does not check entities: never failing.
        report.unchecked_warnings.append(
            f"entity '{entity}' is annotated in the NLU data but is not listed in the domain"
        )


def story_reference_problems(steps: list[StoryStep], domain: Domain) -> list[str]:
    """What stories name (intents, entities, actions, slots) that `domain` does not have,
    each with its file and line."""
    report = ValidationReport()
    _check_story_references(steps, domain, report)
    return report.errors + report.warnings + report.unchecked_warnings


@dataclass(frozen=True)
class UndeclaredAction:
    """An action a story or rule runs that the domain lacks, where it is first run."""

    name: str
    used_in: str  # "story 'greet'"
    filename: str | None
    line: int | None


def undeclared_story_actions(steps: list[StoryStep], domain: Domain) -> list[UndeclaredAction]:
    """Each action that stories or rules run and the domain lacks (as a response, action or
    form), once."""
    known = set(domain.action_names_or_texts)
    found: dict[str, UndeclaredAction] = {}
    for step in steps:
        for index, event in enumerate([*step.condition, *step.events]):
            if not isinstance(event, ActionExecuted) or not event.action_name:
                continue
            name = event.action_name
            if name not in known and name not in found:
                line = step.event_lines[index] if index < len(step.event_lines) else None
                used_in = f"{step.kind} '{step.name}'"
                found[name] = UndeclaredAction(name, used_in, step.filename, line or step.line)
    return list(found.values())


# Policies that look up, as Rasa 3.6 trains them, every action stories and rules run (its
# TEDPolicy and UnexpecTEDIntentPolicy make labels of them; MLPolicy is botserver's TEDPolicy).
_EVERY_ACTION_LOOKED_UP = frozenset({"TEDPolicy", "UnexpecTEDIntentPolicy", "MLPolicy"})


def _refused_story_actions(
    steps: list[StoryStep], domain: Domain, policies: list[dict[str, Any]]
) -> list[UndeclaredAction]:
    """The undeclared actions Rasa 3.6's training stops on with these policies: any with a
    TEDPolicy; with a RulePolicy checking for contradictions (its default), those rules run,
    as it predicts them over the training data; none with memoization alone, which Rasa
    trains (the bot never follows such a step)."""
    # (`rasa.core.policies.ted_policy.TEDPolicy` is the TEDPolicy, as Rasa reads it)
    names = {policy_name(policy.get("name")) for policy in policies}
    if names & _EVERY_ACTION_LOOKED_UP:
        return undeclared_story_actions(steps, domain)
    if any(
        policy_name(policy.get("name")) == "RulePolicy"
        and policy.get("check_for_contradictions") is not False
        for policy in policies
    ):
        return undeclared_story_actions([step for step in steps if step.is_rule], domain)
    return []


def story_actions_stop_training(project: Project) -> bool:
    """Whether training refuses this project for its stories' actions (`check_story_actions`)."""
    policies = project.config.policies
    return bool(_refused_story_actions(project.stories, project.domain, policies))


def check_story_actions(
    steps: list[StoryStep], domain: Domain, policies: list[dict[str, Any]]
) -> None:
    """InvalidProjectFile when a story or rule runs an action the domain lacks and the
    policies cannot learn to predict it. Rasa 3.6's training stops there too
    (`ActionNotFoundException: Cannot access action ...`, from TEDPolicy or RulePolicy),
    after its validation only warned of an `utter_` one; botserver used to train, and the
    bot never followed that step. With memoization alone, Rasa trains, and so does botserver
    (the action is one of the training warnings)."""
    undeclared = _refused_story_actions(steps, domain, policies)
    if not undeclared:
        return
    first, others = undeclared[0], [f"'{other.name}'" for other in undeclared[1:]]
    more = f" (and {how_many(len(others), 'other')}: {', '.join(others)})" if others else ""
    raise InvalidProjectFile(
        f"action '{first.name}' is used in {first.used_in} but is not listed in the domain "
        f"(as a response, action or form){more}, so no policy can predict it and nothing was "
        "trained: add it to the domain, or correct the name",
        first.filename,
        first.line,
    )


def _check_story_references(
    steps: list[StoryStep], domain: Domain, report: ValidationReport
) -> None:
    """As Rasa 3.6's validator rates them: an intent or an `utter_` action the domain lacks
    is a warning, an `action_` one or a form an error; what it does not check (an entity, a
    slot, an action of another name) is a warning that never fails."""
    intents = set(domain.intents)
    entities = set(domain.entities)
    actions = set(domain.action_names_or_texts)
    slots = set(domain.slots_by_name)
    reported: set[tuple[str, str]] = set()

    def once(kind: str, name: str, message: str, into: list[str]) -> None:
        if (kind, name) in reported:
            return
        reported.add((kind, name))
        into.append(message)

    for step in steps:
        what = f"{step.kind} '{step.name}'"
        for index, event in enumerate([*step.condition, *step.events]):
            where = _where(step, index)
            if isinstance(event, UserUttered):
                intent = event.intent_name
                if intent and intent not in intents:
                    once(
                        "intent",
                        intent,
                        f"{where}intent '{intent}' is used in {what} but is not "
                        "listed in the domain",
                        report.warnings,
                    )
                for entity in event.entities:
                    name = entity.get("entity")
                    if name and name not in entities:
                        once(
                            "entity",
                            name,
                            f"{where}entity '{name}' is used in {what} but is not "
                            "listed in the domain",
                            report.unchecked_warnings,
                        )
            elif isinstance(event, ActionExecuted) and event.action_name:
                name = event.action_name
                if name not in actions:
                    once(
                        "action",
                        name,
                        f"{where}action '{name}' is used in {what} but is "
                        "not listed in the domain (as a response, action or form)",
                        report.errors
                        if name.startswith("action_")
                        else report.warnings
                        if name.startswith("utter_")
                        else report.unchecked_warnings,
                    )
            elif isinstance(event, SlotSet) and event.key not in slots:
                once(
                    "slot",
                    event.key,
                    f"{where}slot '{event.key}' is set in {what} but is not defined in the domain",
                    report.unchecked_warnings,
                )
            elif isinstance(event, ActiveLoop) and event.name and event.name not in domain.forms:
                if event.name not in actions:
                    once(
                        "loop",
                        event.name,
                        f"{where}active_loop '{event.name}' in {what} is not a form of the domain",
                        report.errors,
                    )


def _check_forms(project: Project, report: ValidationReport) -> None:
    domain = project.domain
    for form in domain.forms.values():
        for slot in form.required_slots:
            if slot not in domain.slots_by_name:
                report.errors.append(
                    f"{_defined_at(project, 'forms', form.name)}form '{form.name}' requires "
                    f"slot '{slot}', which is not in the domain"
                )


def _check_mapping_conditions(project: Project, report: ValidationReport) -> None:
    """Rasa's `verify_slot_mappings`, in its words: a mapping conditioned on a form the
    domain lacks never fills (a typo, often), and one conditioned on a form that does not
    require its slot fills a slot that form never asks for. Warnings that fail the
    validation, as in Rasa."""
    domain = project.domain
    for slot in domain.slots:
        for mapping in slot.mappings:
            for condition in mapping.conditions:
                loop = condition.get("active_loop")
                if not loop:
                    continue
                form = domain.forms.get(loop)
                if form is None:
                    problem = (
                        f"Slot '{slot.name}' has a mapping condition for form '{loop}' which is "
                        "not listed in domain forms. Please add this form to the forms section "
                        "or check for typos."
                    )
                elif (
                    form.required_slots
                    and slot.name not in form.required_slots
                    and mapping.type != "from_trigger_intent"
                ):
                    problem = (
                        f"Slot '{slot.name}' has a mapping condition for form '{loop}', but "
                        f"it's not present in '{loop}' form's 'required_slots'. The slot needs "
                        "to be added to this key."
                    )
                else:
                    continue
                warning = f"{_defined_at(project, 'slots', slot.name)}{problem}"
                report.warnings.append(warning)
                report.failing_warnings.append(warning)


def _check_unused_responses(project: Project, report: ValidationReport) -> None:
    domain = project.domain
    used: set[str] = set()
    for step in project.stories:
        for event in step.events:
            if isinstance(event, ActionExecuted) and event.action_name:
                used.add(event.action_name)
    for policy in project.config.policies:
        for key in ("core_fallback_action_name", "fallback_action_name"):
            if isinstance(policy.get(key), str):
                used.add(policy[key])
    asked = {f"utter_ask_{slot}" for form in domain.forms.values() for slot in form.required_slots}
    asked |= {
        f"utter_ask_{form.name}_{slot}"
        for form in domain.forms.values()
        for slot in form.required_slots
    }
    for name in sorted(domain.responses):
        if name in used or name in asked or name in _IMPLICIT_RESPONSES:
            continue
        if "/" in name and name.split("/", 1)[0] in used:
            continue  # a retrieval response, uttered through its base action
        if name.startswith("utter_") and "/" in name:
            continue
        if name in domain.user_actions:
            continue
        report.unchecked_warnings.append(  # never failing, as Rasa's "not used" warning
            f"{_defined_at(project, 'responses', name)}response '{name}' is not used in any "
            "story or rule"
        )


# -- story structure -------------------------------------------------------------------------
def story_conflicts(
    stories: list[TrainingStory], domain: Domain, max_history: int | None = None
) -> list[str]:
    """Two stories with the same last `max_history` states (None: the same states from the
    start, as Rasa without --max-history) that go on with different actions.

    The states are the ones the policies learn from (as Rasa's check uses its trackers'
    states): the latest user input stays in the states after the bot's first action.
    """
    seen: dict[str | int, dict[str, str]] = defaultdict(dict)
    last_states: dict[str | int, State] = {}
    # Whole histories are told apart by a number per distinct history, given from the one
    # before it and its last state: a text key of each history grew with the square of a
    # story's length (a story of 10,000 steps took 40 s to check).
    histories: dict[tuple[int, bytes | str], int] = {}
    for story in stories:
        states, labels = states_and_labels(story.events, domain)
        history = 0
        for index, action in enumerate(labels):
            key: str | int
            if not max_history:  # 0 too, as `states[-0:]` was
                step = (history, state_identity(states[index]))
                history = key = histories.setdefault(step, len(histories) + 1)
            else:
                key = state_key(states[max(0, index + 1 - max_history) : index + 1])
            seen[key].setdefault(action, story.name)
            last_states[key] = states[index]
    conflicts = []
    for key, actions in seen.items():
        if len(actions) < 2:
            continue
        described = ", ".join(f"'{a}' in story '{s}'" for a, s in sorted(actions.items()))
        conflicts.append(
            f"story structure conflict after {_after(last_states[key])}: the same history "
            f"leads to {described}"
        )
    return sorted(conflicts)


def _after(state: State) -> str:
    """What a conflicting history ends with, in words."""
    previous = state.get(PREV_ACTION, {})
    user = state.get(USER, {})
    if previous.get("action_name") == ACTION_LISTEN and user:
        return f"intent '{user.get('intent') or user.get('text')}'"
    name = previous.get("action_name") or previous.get("action_text")
    return f"action '{name}'" if name else "the conversation start"


# -- command line ----------------------------------------------------------------------------
def run_validate(
    args: argparse.Namespace,
    out: TextIO | None = None,
    stories_only: bool = False,
    error: Callable[[str, TextIO], None] | None = None,
) -> int:
    """`botserver data validate`: prints errors and warnings, returns the exit code.

    Reads `args.domain`, `args.data` (a path or a list), `args.config` (optional),
    `args.max_history` and `args.fail_on_warnings` (both optional). Each error is given to
    `error(text, out)` (the command's: printed and logged), else printed on `out`.
    """
    out = out or sys.stdout
    data = args.data if isinstance(args.data, (list, tuple)) else [args.data]
    report = validate_project(
        getattr(args, "config", None),
        args.domain,
        data,
        getattr(args, "max_history", None),
        stories_only,
        empty_domain_stops=True,
    )
    never_failing = [*report.config_warnings, *report.unchecked_warnings]
    for warning in [*never_failing, *report.warnings]:
        print(f"warning: {warning}", file=out)
    for problem in report.errors:
        if error is None:
            print(f"error: {problem}", file=out)
        else:
            error(str(problem), out)
    fail_on_warnings = bool(getattr(args, "fail_on_warnings", False))
    count = len(never_failing) + len(report.warnings)
    let_pass = [
        f"the {n} {what}"
        for n, what in (
            (len(report.config_warnings), "about config.yml"),
            (len(report.unchecked_warnings), "that Rasa's validator never fails on"),
        )
        if n
    ]
    if report.errors or report.failing_warnings or (fail_on_warnings and report.warnings):
        errors, warnings = how_many(len(report.errors), "error"), how_many(count, "warning")
        # Which warnings failed it: a stock Rasa config's notices are among them, never failing.
        failed_on = (
            f"; --fail-on-warnings fails on {len(report.warnings)}, not on {' and '.join(let_pass)}"
            if fail_on_warnings and report.warnings and let_pass
            else ""
        )
        conflicts = (
            f" ({how_many(report.conflicts, 'story structure conflict')} among them)"
            if report.conflicts
            else ""
        )
        print(f"Validation failed: {errors}, {warnings}{conflicts}{failed_on}.", file=out)
        return 1
    settled = (
        f"; --fail-on-warnings does not fail on {' and '.join(let_pass)}"
        if fail_on_warnings and let_pass
        else ""
    )
    if report.conflicts:
        # Rasa's `data validate` exits 0 on them too, without --fail-on-warnings; before, this
        # line said "The project is valid" under the conflicts it had just listed.
        print(
            f"The stories have {how_many(report.conflicts, 'structure conflict')}: the "
            "policies learn only one of the actions each history is followed by "
            f"(--fail-on-warnings fails on them); no error ({how_many(count, 'warning')}"
            f"{settled}).",
            file=out,
        )
        return 0
    print(f"The project is valid ({how_many(count, 'warning')}{settled}).", file=out)
    return 0
