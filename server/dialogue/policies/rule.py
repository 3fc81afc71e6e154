"""RulePolicy: rules (with conditions and `...` gaps), forms' happy paths, core fallback.

Rules are learned as lookups from the states a rule requires (its condition, then its
steps) to the next action; a rule applies when all its states are found, in order, at the
end of the conversation. Contradictions between rules and stories fail training.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from server.dialogue.domain import RULE_SNIPPET_ACTION, Domain
from server.dialogue.memo import Memo
from server.dialogue.policies.featurization import (
    ACTIVE_LOOP,
    NO_RULE_ONLY,
    PREV_ACTION,
    SHOULD_NOT_BE_SET,
    SLOTS,
    USER,
    ConversationStates,
    RuleOnly,
    State,
    label_of,
    state_key,
    states_and_labels,
    states_from_key,
    strip_before_snippet,
    training_examples,
)
from server.dialogue.policies.policy import Policy
from server.dialogue.policies.prediction import PolicyPrediction, prediction_from, zeros
from server.dialogue.story_steps import TrainingStory
from server.errors import InvalidConfig, TrainingError
from server.nlu.params import flag, number
from server.trackers.events import (
    ACTION_LISTEN,
    ActionExecuted,
    ActionExecutionRejected,
    ActiveLoop,
    Event,
    LoopInterrupted,
    SlotSet,
    UserUttered,
)
from server.trackers.tracker import Tracker, collapse_loop_happy_paths

# Rasa 3.6's priorities: RulePolicy 4, MemoizationPolicy 3, UnexpecTEDIntentPolicy 2, TED 1.
RULE_PRIORITY = 4
# Built-in rules on Rasa's default intents.
DEFAULT_ACTION_MAPPINGS = {
    "restart": "action_restart",
    "back": "action_back",
    "session_start": "action_session_start",
}
# Values of the loop unhappy-path lookup.
DO_NOT_VALIDATE_LOOP = "do_not_validate_loop"
DO_NOT_PREDICT_LOOP_ACTION = "do_not_predict_loop_action"
# Prediction sources that are not rule keys (rule keys are JSON lists): + the intent, + the
# loop's name (then + LOOP_LISTEN for the listen after it).
SOURCE_DEFAULT = "default:"
SOURCE_LOOP = "loop:"
LOOP_LISTEN = "|action_listen"
# Distinct windows of states whose applicable rules a loaded lookup remembers.
APPLICABLE_CACHE_SIZE = 4096


def rule_events(rule: TrainingStory) -> list[Event]:
    """A rule as one event sequence: condition, `...` unless it starts a conversation, steps,
    and `...` instead of the final action_listen when it does not wait for the user."""
    events: list[Event] = []
    for event in rule.condition:
        if isinstance(event, SlotSet) and event.value is None:
            events.append(SlotSet(key=event.key, value=SHOULD_NOT_BE_SET, timestamp=0.0))
        elif isinstance(event, ActiveLoop) and event.name is None:
            events.append(ActiveLoop(name=SHOULD_NOT_BE_SET, timestamp=0.0))
        else:
            events.append(event)
    if not rule.conversation_start:
        events.append(ActionExecuted(action_name=RULE_SNIPPET_ACTION, timestamp=0.0))
    events.extend(rule.events)
    if not rule.wait_for_user_input:
        events.append(ActionExecuted(action_name=RULE_SNIPPET_ACTION, timestamp=0.0))
    return events


def _matches(rule_state: State, state: State) -> bool:
    """Whether every feature the rule state names is in the conversation state."""
    for kind, rule_sub in rule_state.items():
        sub = state.get(kind, {})
        for key, value in rule_sub.items():
            actual = sub.get(key)
            if value == SHOULD_NOT_BE_SET:
                if actual and actual != SHOULD_NOT_BE_SET:
                    return False
            elif value and actual != value:
                return False
    return True


def _applies(rule: list[State], states: Sequence[State]) -> bool:
    """Whether the rule's states are the last states of the conversation."""
    for i in range(1, min(len(rule), len(states)) + 1):
        rule_state, state = rule[-i], states[-i]
        rule_prev, prev = rule_state.get(PREV_ACTION), state.get(PREV_ACTION)
        if not rule_prev and not prev:
            # both are conversation starts: slots with initial values are in both
            continue
        if not rule_prev or not prev:
            return False
        if not _matches(rule_state, state):
            return False
    return True


def _loop_name(state: State) -> str | None:
    name = state.get(ACTIVE_LOOP, {}).get("name")
    return None if name == SHOULD_NOT_BE_SET else name


def _prev_is_listen(state: State) -> bool:
    return state.get(PREV_ACTION, {}).get("action_name") == ACTION_LISTEN


def _unhappy_states(states: Sequence[State]) -> list[State]:
    """The last state and the action before it: what a loop's unhappy path depends on."""
    if len(states) == 1 or not states[-2].get(PREV_ACTION):
        return [states[-1]]
    return [{PREV_ACTION: states[-2][PREV_ACTION]}, states[-1]]


# How Rasa writes a value a rule says must not be set, and the categorical value it adds.
RASA_SHOULD_NOT_BE_SET = "should_not_be_set"
RASA_OTHER_VALUE = "__other__"


def rasa_key_length(states: Sequence[State], domain: Domain | None) -> int:
    """The length of Rasa's key for a rule's states: of the rules that apply, Rasa follows
    the one whose key is the longest, its states written by Python's `json.dumps` (keys
    sorted, spaces after `,` and `:`), each slot as its feature list (a categorical slot
    one number per value, and one for `__other__`). Our keys hold shorter slot values,
    which could choose another rule; without a domain, our key's length."""
    if domain is None:
        return len(state_key(states))
    written = []
    for state in states:
        slots = state.get(SLOTS)
        if slots:
            state = {**state, SLOTS: {k: _rasa_feature(domain, k, v) for k, v in slots.items()}}
        if _loop_name(state) is None and ACTIVE_LOOP in state:
            state = {**state, ACTIVE_LOOP: {"name": RASA_SHOULD_NOT_BE_SET}}
        written.append(state)
    return len(json.dumps(written, sort_keys=True))


def _rasa_feature(domain: Domain, name: str, value: Any) -> Any:
    """A slot's value in a rule state (ours) as Rasa's rule key holds it."""
    slot = domain.slots_by_name.get(name)
    if value == SHOULD_NOT_BE_SET:
        return RASA_SHOULD_NOT_BE_SET
    if slot is None:
        return value
    if slot.type == "bool":
        return [1.0, 1.0 if value == "true" else 0.0]
    if slot.type == "categorical":
        values = [*slot.values, *([] if RASA_OTHER_VALUE in slot.values else [RASA_OTHER_VALUE])]
        return [1.0 if v == value else 0.0 for v in values]
    if slot.type == "float":
        # Set, then the value's place in the slot's range (ours in tenths, Rasa's exact).
        try:
            return [1.0, float(value)]
        except (TypeError, ValueError):
            return value
    return [1.0]


class _Lookup:
    """Rule keys with their parsed states, for matching against a conversation.

    Which rules apply depends only on the conversation's last `longest` states: the
    answer is remembered by those states' texts (a lookup never changes once built).
    States that end in the user's text are remembered only when some rule names a text:
    otherwise every new message would add an entry that no other message can use.
    """

    def __init__(
        self,
        entries: dict[str, str],
        domain: Domain | None = None,
        parsed: dict[str, list[State]] | None = None,
        rank: dict[str, int] | None = None,
    ) -> None:
        """`parsed` and `rank`, when given, are the entries' states and ranks."""
        self.entries = entries
        if parsed is None:
            parsed = {key: states_from_key(key) for key in entries}
        self.parsed = parsed
        # Which of several applicable rules wins: the longest as Rasa writes rules.
        if rank is None:
            rank = {key: rasa_key_length(rule, domain) for key, rule in parsed.items()}
        self.rank = rank
        self.longest = max((len(rule) for rule in self.parsed.values()), default=0)
        self.names_texts = any(
            "text" in state.get(USER, {}) for rule in self.parsed.values() for state in rule
        )
        self._applicable: Memo[tuple[str, ...], list[str]] = Memo(APPLICABLE_CACHE_SIZE)

    def without(self, key: str) -> _Lookup:
        """This lookup without the rule `key` (the others' states are not read again)."""
        return _Lookup(
            {k: v for k, v in self.entries.items() if k != key},
            parsed={k: v for k, v in self.parsed.items() if k != key},
            rank={k: r for k, r in self.rank.items() if k != key},
        )

    def applicable(self, states: Sequence[State]) -> list[str]:
        return [key for key, rule in self.parsed.items() if _applies(rule, states)]

    def applicable_in(self, conversation: ConversationStates, by_text: bool) -> list[str]:
        """`applicable` to the conversation's states (or its text states)."""
        if not self.parsed:
            return []
        if by_text and not self.names_texts:
            states = conversation.text_states()
            assert states is not None
            return self.applicable(states)
        window = conversation.texts(self.longest, by_text)
        keys = self._applicable.get(window)
        if keys is None:
            states = conversation.text_states() if by_text else conversation.states
            assert states is not None
            keys = self.applicable(states)
            self._applicable.put(window, keys)
        return list(keys)


class RulePolicy(Policy):
    """Follows rules exactly; predicts the fallback action when no rule applies."""

    default_priority = RULE_PRIORITY
    defaults = {
        "core_fallback_threshold": 0.3,
        "core_fallback_action_name": "action_default_fallback",
        "enable_fallback_prediction": True,
        "restrict_rules": True,
        "check_for_contradictions": True,
        "use_nlu_confidence_as_score": False,
    }

    def __init__(self, name: str, priority: int | None = None, **options: Any) -> None:
        super().__init__(name, priority, **options)
        # Checked here, not where they are read: a wrong type would otherwise train and
        # then fail (or quietly mean something else) on every turn.
        for key in ("enable_fallback_prediction", "restrict_rules", "check_for_contradictions"):
            self.options[key] = flag(self.options, key, True, name)
        key = "use_nlu_confidence_as_score"
        self.options[key] = flag(self.options, key, False, name)
        self.options["core_fallback_threshold"] = number(
            self.options, "core_fallback_threshold", 0.3, name, minimum=0, maximum=1
        )
        if not isinstance(self.options["core_fallback_action_name"], str):
            raise InvalidConfig(
                f"{name}: 'core_fallback_action_name' must be an action name, "
                f"not {self.options['core_fallback_action_name']!r}"
            )
        self.rules_ = _Lookup({})
        self.unhappy_ = _Lookup({})
        self.rule_sources_: dict[str, list[str]] = {}
        # Sources whose predictions no story follows: their turns are `hide_rule_turn`.
        self.not_in_stories_: frozenset[str] = frozenset()
        self.rule_only_: RuleOnly = NO_RULE_ONLY

    # -- training ----------------------------------------------------------------------------
    def train(self, stories: list[TrainingStory], domain: Domain) -> None:
        rules = [s for s in stories if s.is_rule]
        plain = [s for s in stories if not s.is_rule]
        if self.option("restrict_rules"):
            _check_rule_restriction(rules)
        # As Rasa: the incomplete-rule check, like the one for contradictions and the
        # search for what only rules mention, is part of `check_for_contradictions`.
        if self.option("check_for_contradictions"):
            _check_incomplete_rules(rules, domain)
        unseen = _conditions_on_unseen_slots(rules, domain)
        if unseen:
            unseen = (
                "RulePolicy: these rules' conditions name slots that do not influence the "
                "conversation (influence_conversation: false, or type any; requested_slot "
                "unless the domain declares it with influence_conversation: true), so the "
                f"rules apply whatever the slots hold: {unseen}"
            )
            self.warnings.append(unseen)
        fallback = self.option("core_fallback_action_name")
        if not domain.is_known_action(fallback):
            raise TrainingError(
                f"RulePolicy: core_fallback_action_name '{fallback}' is not an action of the domain"
            )

        entries: dict[str, str] = {}
        sources: dict[str, list[str]] = {}
        errors: list[str] = []
        rule_event_lists = [(rule, rule_events(rule)) for rule in rules]
        for rule, events in rule_event_lists:
            for states, action in training_examples(events, domain, omit_unset_slots=True):
                if action == RULE_SNIPPET_ACTION:
                    continue
                kept = strip_before_snippet(states)
                if not kept:
                    continue
                key = state_key(kept)
                if key in entries and entries[key] != action:
                    errors.append(
                        f"- the prediction of the action '{action}' in rule '{rule.name}' "
                        f"is contradicting with rule(s) '{', '.join(sources[key])}' "
                        f"which predicted action '{entries[key]}'."
                    )
                    continue
                entries[key] = action
                if rule.name not in sources.setdefault(key, []):
                    sources[key].append(rule.name)

        unhappy: dict[str, str] = {}
        examples = [
            ex
            for _, events in rule_event_lists
            for ex in training_examples(events, domain, omit_unset_slots=True)
        ] + [ex for story in plain for ex in training_examples(story.events, domain)]
        for states, action in examples:
            loop = _loop_name(states[-1])
            if not loop:
                continue
            kept = strip_before_snippet(_unhappy_states(states))
            if not kept:
                continue
            key = state_key(kept)
            if _prev_is_listen(states[-1]) and action == loop:
                unhappy[key] = DO_NOT_VALIDATE_LOOP
            elif not _prev_is_listen(states[-1]) and action != loop:
                unhappy[key] = DO_NOT_PREDICT_LOOP_ACTION

        self.rules_ = _Lookup(entries, domain)
        self.unhappy_ = _Lookup(unhappy)
        self.rule_sources_ = sources
        self.rule_only_ = NO_RULE_ONLY
        if self.option("check_for_contradictions"):
            self.rule_only_ = _rule_only(
                [states_and_labels(events, domain, True)[0] for _, events in rule_event_lists],
                [states_and_labels(story.events, domain)[0] for story in plain],
            )
        if self.option("check_for_contradictions"):
            in_stories: set[str] = set()
            errors.extend(self._contradictions(rule_event_lists, plain, domain, in_stories))
            every = {
                *self.rules_.entries,
                *(SOURCE_DEFAULT + intent for intent in DEFAULT_ACTION_MAPPINGS),
                *(SOURCE_LOOP + form for form in domain.forms),
                *(SOURCE_LOOP + form + LOOP_LISTEN for form in domain.forms),
            }
            self.not_in_stories_ = frozenset(every - in_stories)
        if errors:
            raise TrainingError(
                "Contradicting rules or stories found:\n"
                + "\n".join(dict.fromkeys(errors))
                + "\nPlease update your stories and rules so that they don't contradict "
                "each other." + (f"\n{unseen}." if unseen else "")
            )

    def _contradictions(
        self,
        rules: list[tuple[TrainingStory, list[Event]]],
        stories: list[TrainingStory],
        domain: Domain,
        in_stories: set[str],
    ) -> list[str]:
        """The contradictions between rules and stories; adds to `in_stories` the sources of
        the rule predictions the stories follow.

        As Rasa, in two passes: the rules first, to learn what each source (a rule's key, a
        default intent's action, a form's happy path) predicts in them, then every rule and
        story against that, so a story going against a form's happy path or a default
        intent's action that a rule also takes is named too."""
        predicted_by: dict[str, dict[str, str]] = {}  # source -> {rule or behaviour: action}
        for rule, events in rules:
            for gold, predicted, source in self._predictions(rule.name, events, domain):
                if predicted is None or not source:
                    continue
                if source in self.rules_.entries:
                    predicted_by.setdefault(source, {}).setdefault(rule.name, gold)
                else:
                    predicted_by.setdefault(source, {})[_behaviour(source)] = predicted
        errors: list[str] = []
        used: set[str] = set()
        trackers: list[tuple[str, str, list[Event]]] = [
            ("rule", rule.name, events) for rule, events in rules
        ] + [("story", story.name, story.events) for story in stories]
        for kind, name, events in trackers:
            for gold, predicted, source in self._predictions(name, events, domain):
                if source in self.rules_.entries:
                    used.add(source)
                if kind == "story" and predicted == gold:
                    in_stories.add(source)
                if predicted is None or predicted == gold or not source:
                    continue
                if (
                    kind == "story"
                    and predicted == ACTION_LISTEN
                    and source in self.rules_.entries
                    and source.count(PREV_ACTION) <= 1
                    and self._continued(source)
                ):
                    # a rule's implicit "listen after this action", where another
                    # rule goes on from the same state: stories may go on
                    self._forget(source)
                    continue
                against = [n for n, act in predicted_by.get(source, {}).items() if act != gold]
                if self.rules_.entries.get(source, gold) != gold:
                    against.extend(self.rule_sources_.get(source, []))
                if not against:
                    continue
                message = (
                    f"- the prediction of the action '{gold}' in {kind} '{name}' is "
                    f"contradicting with rule(s) '{', '.join(dict.fromkeys(against))}'"
                )
                if predicted != self.option("core_fallback_action_name"):
                    message += f" which predicted action '{predicted}'"
                errors.append(message + ".")
        unused = [
            name
            for name in dict.fromkeys(r.name for r, _ in rules)
            if not any(name in self.rule_sources_.get(key, []) for key in used)
        ]
        if unused:
            self.warnings.append(
                "RulePolicy: these rules are never applied during training, they may be "
                f"incomplete or shadowed by other rules: {', '.join(unused)}"
            )
        return errors

    def _predictions(
        self, name: str, events: list[Event], domain: Domain
    ) -> Iterator[tuple[str, str | None, str]]:
        """(the action taken, the action predicted, its source) at every
        predictable action of a rule or story: not its first, nor one after a `...`. As
        Rasa, a loop's happy path reads as one run: the answers it takes, and its runs on
        them, are not predicted (a story's form taking `restart` contradicts no rule)."""
        running = Tracker(name, domain.slot_defaults())
        unpredictable = True
        for event in collapse_loop_happy_paths(events):
            if isinstance(event, ActionExecuted):
                if event.action_name == RULE_SNIPPET_ACTION or unpredictable:
                    unpredictable = event.action_name == RULE_SNIPPET_ACTION
                else:
                    gold = label_of(event)
                    predicted, source = self._check_prediction(running, domain, gold)
                    yield gold, predicted, source
            running.update(event)

    def _continued(self, key: str) -> bool:
        """Whether another rule's states begin as `key`'s single state does (Rasa's test:
        only then is a story going on after the rule's listen no contradiction)."""
        start = key[:-2]
        return any(other != key and other.startswith(start) for other in self.rules_.entries)

    def _forget(self, key: str) -> None:
        self.rules_ = self.rules_.without(key)
        self.rule_sources_.pop(key, None)

    def _check_prediction(
        self, running: Tracker, domain: Domain, gold: str
    ) -> tuple[str | None, str]:
        conversation = ConversationStates(running, domain)
        action, source, _, _ = self._find_action(conversation)
        loop = _active_loop(running, domain)
        if loop and action == loop and gold != loop:
            # inside a loop the rules speak only once the loop has rejected the input (as
            # Rasa: only where the conversation does not run the loop itself)
            running.update(ActionExecutionRejected(action_name=loop, timestamp=0.0))
            action, source, _, _ = self._find_action(ConversationStates(running, domain))
        return action, source

    # -- prediction --------------------------------------------------------------------------
    def _find_action(self, conversation: ConversationStates) -> tuple[str | None, str, bool, bool]:
        """(action or None, prediction source, whether a loop returns from an unhappy path,
        whether a rule naming the message's text was found)."""
        tracker = conversation.tracker
        loop = _active_loop(tracker, conversation.domain)
        # As Rasa: a rule naming the message's text overrules a default action's intent;
        # a loop's happy path overrules the rules.
        by_text: tuple[str | None, str, bool] = (None, "", False)
        if conversation.text_states() is not None:
            by_text = self._find_action_from_rules(conversation, True, loop)
        intent = tracker.latest_message.intent_name
        if (
            tracker.latest_action_name == ACTION_LISTEN
            and intent in DEFAULT_ACTION_MAPPINGS
            and by_text[0] is None
        ):
            return DEFAULT_ACTION_MAPPINGS[intent], SOURCE_DEFAULT + intent, False, False
        if loop and not tracker.is_active_loop_rejected and tracker.latest_action:
            if tracker.latest_action_name != loop:
                return loop, SOURCE_LOOP + loop, False, False
            return ACTION_LISTEN, SOURCE_LOOP + loop + LOOP_LISTEN, False, False
        if by_text[0] is not None:
            return (*by_text, True)
        action, source, returning = self._find_action_from_rules(conversation, False, loop)
        return action, source, returning or by_text[2], False

    def _find_action_from_rules(
        self, conversation: ConversationStates, by_text: bool, loop: str | None
    ) -> tuple[str | None, str, bool]:
        keys = self.rules_.applicable_in(conversation, by_text)
        action: str | None = None
        best = ""
        if keys:
            best = max(keys, key=self.rules_.rank.__getitem__)
            action = self.rules_.entries[best]
        returning_from_unhappy_path = False
        if loop:
            conditions = {
                self.unhappy_.entries[k] for k in self.unhappy_.applicable_in(conversation, by_text)
            }
            from_general_rule = action == ACTION_LISTEN and not _loop_name(
                self.rules_.parsed[best][-1]
            )
            if from_general_rule:
                if DO_NOT_PREDICT_LOOP_ACTION not in conditions:
                    return loop, best, False
                action = None
            if DO_NOT_VALIDATE_LOOP in conditions:
                returning_from_unhappy_path = True
        return action, best, returning_from_unhappy_path

    def predict(self, conversation: ConversationStates, domain: Domain) -> PolicyPrediction:
        action, source, returning, by_text = self._find_action(conversation)
        names = domain.action_names_or_texts
        probabilities = zeros(len(names))
        # As Rasa, the fallback keeps its threshold beside a rule's action: it is what runs
        # when that action is rejected, and `/predict` lists it.
        if self.option("enable_fallback_prediction"):
            fallback = domain.index_of_action(self.option("core_fallback_action_name"))
            if fallback is not None:
                probabilities[fallback] = float(self.option("core_fallback_threshold"))
        index = domain.index_of_action(action) if action is not None else None
        if index is not None:
            probabilities[index] = self.action_score(conversation)
        return prediction_from(
            probabilities,
            names,
            self.name,
            self.priority,
            events=[LoopInterrupted(is_interrupted=True)] if returning else [],
            is_no_user_prediction=source.startswith(SOURCE_LOOP),
            is_end_to_end_prediction=by_text and index is not None,
            # As Rasa: a turn no story has (a rule's own) is marked for the tracker's readers.
            hide_rule_turn=index is not None and source in self.not_in_stories_,
        )

    def prediction_window(self) -> int | None:
        if self.option("use_nlu_confidence_as_score"):
            return None  # the confidence is the message's, not the window's
        # A rule matches the last states (as many as it has), and the default rules read
        # the latest intent and action; a loop's path reads more (the ensemble skips loops).
        return max(self.rules_.longest, self.unhappy_.longest, 1)

    def reads_message_text(self) -> bool:
        return self.rules_.names_texts or self.unhappy_.names_texts

    # -- persistence -------------------------------------------------------------------------
    def learned_state(self) -> dict[str, Any]:
        return {
            "rules": self.rules_.entries,
            "loop_unhappy_paths": self.unhappy_.entries,
            "rule_sources": self.rule_sources_,
            "rules_not_in_stories": sorted(self.not_in_stories_),
            "rule_only_slots": sorted(self.rule_only_.slots),
            "rule_only_loops": sorted(self.rule_only_.loops),
        }

    def restore(self, state: dict[str, Any], directory: Path, domain: Domain) -> None:
        self.rules_ = _Lookup({str(k): str(v) for k, v in state.get("rules", {}).items()}, domain)
        self.unhappy_ = _Lookup(
            {str(k): str(v) for k, v in state.get("loop_unhappy_paths", {}).items()}
        )
        self.rule_sources_ = {
            str(k): [str(n) for n in v] for k, v in state.get("rule_sources", {}).items()
        }
        self.not_in_stories_ = frozenset(str(k) for k in state.get("rules_not_in_stories", []))
        slots = frozenset(str(n) for n in state.get("rule_only_slots", []))
        loops = frozenset(str(n) for n in state.get("rule_only_loops", []))
        self.rule_only_ = RuleOnly(slots, loops) if slots or loops else NO_RULE_ONLY


def _behaviour(source: str) -> str:
    """How Rasa names a prediction source that is no rule: a default intent's action, or a
    form's happy path (its run, or the listen after it)."""
    if source.startswith(SOURCE_DEFAULT):
        return "predicting default action with intent " + source[len(SOURCE_DEFAULT) :]
    loop = source[len(SOURCE_LOOP) :]
    if loop.endswith(LOOP_LISTEN):
        return f"handling active loops and forms - {loop[: -len(LOOP_LISTEN)]} - {ACTION_LISTEN}"
    return f"handling active loops and forms - {loop}"


def _active_loop(tracker: Tracker, domain: Domain) -> str | None:
    name = tracker.active_loop_name
    if name is None or name == SHOULD_NOT_BE_SET:
        return None
    return domain.known_loop(name)


def _rule_only(rules: list[list[State]], stories: list[list[State]]) -> RuleOnly:
    """The slots and loops rules' states name and no story's (as Rasa finds them)."""

    def named(conversations: list[list[State]]) -> tuple[set[str], set[str]]:
        slots: set[str] = set()
        loops: set[str] = set()
        for states in conversations:
            for state in states:
                slots.update(state.get(SLOTS, ()))
                loop = state.get(ACTIVE_LOOP, {}).get("name")
                if loop and loop != SHOULD_NOT_BE_SET:
                    loops.add(loop)
        return slots, loops

    rule_slots, rule_loops = named(rules)
    story_slots, story_loops = named(stories)
    slots, loops = frozenset(rule_slots - story_slots), frozenset(rule_loops - story_loops)
    return RuleOnly(slots, loops) if slots or loops else NO_RULE_ONLY


def _check_rule_restriction(rules: Iterable[TrainingStory]) -> None:
    too_long = [
        rule.name for rule in rules if sum(isinstance(e, UserUttered) for e in rule.events) > 1
    ]
    if too_long:
        raise TrainingError(
            f"Found rules '{', '.join(too_long)}' that contain more than 1 user message. "
            "Rules are not meant to hardcode a state machine. Please use stories for these "
            "cases, or set `restrict_rules: false` for the RulePolicy."
        )


def _conditions_on_unseen_slots(rules: list[TrainingStory], domain: Domain) -> str:
    """The rules whose conditions name a slot of the domain no policy sees, as
    `'rule' (slot 'a', 'b')` items; empty if none. Built-in slots too: `requested_slot`, which
    Rasa's docs condition rules on, is read only when the domain declares it influencing."""
    items: list[str] = []
    for rule in rules:
        slots = [
            event.key
            for event in rule.condition
            if isinstance(event, SlotSet)
            and event.key in domain.slots_by_name
            and not domain.slots_by_name[event.key].influence_conversation
        ]
        if slots:
            names = ", ".join(f"'{name}'" for name in dict.fromkeys(slots))
            items.append(f"'{rule.name}' (slot {names})")
    return ", ".join(items)


def _check_incomplete_rules(rules: list[TrainingStory], domain: Domain) -> None:
    """Rasa's incomplete-rule check: an action that sets slots in one rule must set them (or
    the rule name them, `null` included) in every rule that goes on after it; otherwise
    which rule applies after that action depends on slots the rules do not say."""
    featurized = {slot.name for slot in domain.slots if slot.influence_conversation}
    sets: dict[str, set[str]] = {}
    for rule in rules:
        for action, slots in _slots_after_actions(rule_events(rule)):
            sets.setdefault(action, set()).update(slots & featurized)
    errors: list[str] = []
    for rule in rules:
        mentioned: set[str] = set()
        previous: str | None = None
        for event in rule_events(rule):
            if isinstance(event, SlotSet):
                mentioned.add(event.key)
            elif isinstance(event, ActionExecuted):
                name = label_of(event)
                missing = sets.get(previous or "", set()) - mentioned
                if missing and RULE_SNIPPET_ACTION not in (previous, name):
                    errors.append(
                        f"- the action '{previous}' in rule '{rule.name}' does not set some "
                        "of the slots that it sets in other rules. Slots not set in rule "
                        f"'{rule.name}': '{', '.join(sorted(missing))}'. Please update the "
                        "rule with an appropriate slot or, if it is the rule's last action, "
                        "add 'wait_for_user_input: false' to the rule."
                    )
                previous = name
    if errors:
        raise TrainingError(
            "Incomplete rules found:\n"
            + "\n".join(dict.fromkeys(errors))
            + "\nPlease note that if some slots should not be set during prediction you need "
            "to explicitly set them to 'null' in the rules."
        )


def _slots_after_actions(events: list[Event]) -> list[tuple[str, set[str]]]:
    """(action, the slots set right after it, before the next action or user message)."""
    found: list[tuple[str, set[str]]] = []
    for event in events:
        if isinstance(event, ActionExecuted):
            found.append((label_of(event), set()))
        elif isinstance(event, UserUttered):
            found.append(("", set()))  # slots set by a message's entities are not the action's
        elif isinstance(event, SlotSet) and found:
            found[-1][1].add(event.key)
    return [(action, slots) for action, slots in found if action]


__all__ = ["RulePolicy", "rule_events", "states_and_labels"]
