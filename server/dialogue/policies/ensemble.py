"""The policy ensemble: builds policies from config.yml, asks each, picks the winner as Rasa.

The winner has the highest confidence; ties go to the higher priority, then to the policy
listed first. Predictions that do not depend on user input (a form's happy path) overrule
all others, and end-to-end predictions overrule intent-based ones. When every policy reads
only a window of the last states, the winner is remembered by that window.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.dialogue.domain import Domain
from server.dialogue.memo import Memo
from server.dialogue.policies.featurization import (
    NO_RULE_ONLY,
    ConversationStates,
    RuleOnly,
    StepEntry,
    Steps,
    window_step,
)
from server.dialogue.policies.memoization import (
    AugmentedMemoizationPolicy,
    MemoizationPolicy,
    memoization_twin,
)
from server.dialogue.policies.ml import MLPolicy
from server.dialogue.policies.policy import Policy
from server.dialogue.policies.prediction import PolicyPrediction, prediction_from, zeros
from server.dialogue.policies.rule import RulePolicy
from server.dialogue.story_steps import TrainingStory
from server.errors import (
    BotServerError,
    InvalidConfig,
    ModelError,
    TrainingError,
    about_config_item,
)
from server.nlu.state_files import loads_state
from server.rasa_paths import is_rasa_path, rasa_class, rasa_path_hint
from server.trackers.events import Event
from server.trackers.tracker import Tracker
from server.unknown_options import unknown_option_warning

__all__ = ["PolicyEnsemble", "PolicyPrediction", "POLICY_CLASSES", "DEFAULT_POLICIES"]

POLICY_CLASSES: dict[str, type[Policy]] = {
    "RulePolicy": RulePolicy,
    "MemoizationPolicy": MemoizationPolicy,
    "AugmentedMemoizationPolicy": AugmentedMemoizationPolicy,
    "MLPolicy": MLPolicy,
}
# Rasa policies we train as one of ours.
MAPPED_POLICIES = {"TEDPolicy": "MLPolicy"}
IGNORED_POLICIES = ("UnexpecTEDIntentPolicy",)
# Options Rasa's own policies accept that change nothing in ours: taken without a word.
RASA_ONLY_OPTIONS = frozenset({"enable_feature_string_compression"})
# Rasa's default_config.yml policies, used when config.yml lists none.
DEFAULT_POLICIES: list[dict[str, Any]] = [
    {"name": "MemoizationPolicy"},
    {"name": "RulePolicy"},
    {"name": "UnexpecTEDIntentPolicy", "max_history": 5, "epochs": 100},
    {"name": "TEDPolicy", "max_history": 5, "epochs": 100, "constrain_similarities": True},
]
# Rasa 3.6's priority of the policy we leave out.
IGNORED_PRIORITY = 2
ENSEMBLE_FILE = "ensemble.json"
# Distinct inputs (window of states, latest intent and action, ...) whose winner the
# ensemble remembers: about 1 KB each.
PREDICTION_MEMO_SIZE = 1024


def policy_name(name: Any) -> Any:
    """A config.yml policy's `name` as the policy is known: Rasa's module path for one of
    Rasa's policies (`rasa.core.policies.ted_policy.TEDPolicy`), which Rasa accepts, is its
    class name; any other value is returned as it is."""
    if isinstance(name, str) and is_rasa_path(name):
        return rasa_class(name) or name
    return name


def _short_name(name: Any) -> str:
    """A policy's name (`policy_name`); a custom class is refused, and a `rasa.` path that is
    not where Rasa has the policy is an unknown policy."""
    if not isinstance(name, str) or not name:
        raise InvalidConfig(f"each policy in config.yml needs a 'name', got {name!r}")
    if "." in name and not is_rasa_path(name):
        raise InvalidConfig(
            f"'{name}' is a custom policy: botserver never imports code named in config.yml. "
            f"Remove it, or use one of {_known_policies()}"
        )
    if "." in name and rasa_class(name) is None:
        known = {*POLICY_CLASSES, *MAPPED_POLICIES, *IGNORED_POLICIES}
        raise _unknown_policy(name, rasa_path_hint(name, known))
    return str(policy_name(name))


def _policy_of(
    spec: Any, mapped: list[str], ignored: list[str], warnings: list[str]
) -> Policy | None:
    """The untrained policy of one config.yml item (None for one we leave out)."""
    if not isinstance(spec, dict):
        raise InvalidConfig(f"each policy in config.yml must be a mapping, got {spec!r}")
    options = dict(spec)
    name = _short_name(options.pop("name", None))
    priority = options.pop("priority", None)
    if name in IGNORED_POLICIES:
        ignored.append(name)
        return None
    target = MAPPED_POLICIES.get(name, name)
    policy_cls = POLICY_CLASSES.get(target)
    if policy_cls is None:
        raise _unknown_policy(spec.get("name"))
    if target != name:
        mapped.append(f"{name} -> {target}")
    warnings.extend(_unknown_options(name, options, policy_cls, mapped=target != name))
    return policy_cls(name, priority, **options)


def _unknown_policy(name: Any, hint: str = "") -> InvalidConfig:
    hint = f": {hint}" if hint else ""
    return InvalidConfig(
        f"the policy '{name}' is not provided by botserver{hint}; use one of {_known_policies()}"
    )


def _known_policies() -> str:
    return ", ".join([*POLICY_CLASSES, *MAPPED_POLICIES, *IGNORED_POLICIES])


class PolicyEnsemble:
    """The trained policies of a model, asked together for the next action."""

    def __init__(
        self,
        policies: list[Policy],
        warnings: list[str] | None = None,
        memo_size: int = PREDICTION_MEMO_SIZE,
    ) -> None:
        self.policies = policies
        self.warnings: list[str] = list(warnings or [])
        # Winners by the window's identities and `_memo_extra` (a known step's entry holds its
        # own winner too, see `window_step`); the window and whether texts count are taken from the
        # policies at the first prediction for a domain (they are trained by then).
        self._winners: Memo[tuple[Any, ...], PolicyPrediction] = Memo(memo_size)
        # How a conversation's window moves between two predictions (`window_step`):
        # a new memory whenever the winners are forgotten, so no tracker derives from an
        # older one's steps.
        self._steps: Steps | None = Memo(memo_size) if memo_size else None
        self._memo_domain: Domain | None = None
        self._memo_window: int | None = None
        self._memo_reads_text = True
        # What the RulePolicy learned only rules mention (taken with the window).
        self._rule_only: RuleOnly = NO_RULE_ONLY
        # The config.yml items the policies were built from (`from_config`), for `fit`.
        self._specs: list[dict[str, Any]] = []

    @property
    def rule_only(self) -> RuleOnly:
        """What the RulePolicy learned only rules mention (nothing without one)."""
        rules = [p for p in self.policies if isinstance(p, RulePolicy)]
        return rules[0].rule_only_ if rules else NO_RULE_ONLY

    def forget_predictions(self) -> None:
        """Drops the remembered winners (after retraining or restoring a policy in place)."""
        self._winners.clear()
        self._memo_domain = None
        self._new_steps()

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, policies: list[dict[str, Any]] | None) -> PolicyEnsemble:
        """Untrained policies for a config.yml `policies:` list (empty: Rasa's defaults)."""
        specs = policies or DEFAULT_POLICIES
        built: list[Policy] = []
        warnings: list[str] = []
        mapped: list[str] = []
        ignored: list[str] = []
        for index, spec in enumerate(specs):
            with about_config_item("policies", index):
                policy = _policy_of(spec, mapped, ignored, warnings)
            if policy is not None:
                built.append(policy)
        if mapped:
            warnings.append(
                "Policies trained as botserver equivalents: "
                + ", ".join(dict.fromkeys(mapped))
                + " (scikit-learn logistic regression over the last max_history turns; "
                "options such as epochs are ignored)."
            )
        if ignored:
            warnings.append(
                f"{', '.join(dict.fromkeys(ignored))} is not provided by botserver and is ignored."
            )
        if sum(isinstance(p, RulePolicy) for p in built) > 1:
            raise InvalidConfig("config.yml lists the RulePolicy more than once")
        ensemble = cls(built, warnings)
        ensemble._specs = specs
        return ensemble

    @classmethod
    def for_domain(cls, policies: list[dict[str, Any]] | None, domain: Domain) -> PolicyEnsemble:
        """Untrained policies for a config.yml `policies:` list, checked against the domain
        as Rasa checks them before anything trains (forms need the RulePolicy)."""
        ensemble = cls.from_config(policies)
        check_forms_have_rule_policy(policies, domain)
        return ensemble

    def fit(self, stories: list[TrainingStory], domain: Domain) -> PolicyEnsemble:
        """Trains the policies `for_domain` built, after Rasa's warnings about them and the
        stories and rules."""
        self.warnings.extend(_check_against_data(self._specs, stories))
        for policy in self.policies:
            policy.train(stories, domain)
            self.warnings.extend(policy.warnings)
        return self

    @classmethod
    def train(
        cls, policies: list[dict[str, Any]], stories: list[TrainingStory], domain: Domain
    ) -> PolicyEnsemble:
        return cls.for_domain(policies, domain).fit(stories, domain)

    # -- persistence -------------------------------------------------------------------------
    def persist(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, policy in enumerate(self.policies):
            subdirectory = f"{i}_{type(policy).__name__}"
            policy.persist(directory / subdirectory)
            entries.append(
                {
                    "class": type(policy).__name__,
                    "name": policy.name,
                    "priority": policy.priority,
                    "directory": subdirectory,
                }
            )
        (directory / ENSEMBLE_FILE).write_text(
            json.dumps({"policies": entries, "warnings": self.warnings}, indent=2),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, directory: Path, domain: Domain) -> PolicyEnsemble:
        """The policies an archive stores; state they cannot use is a ModelError naming the
        policy, never another exception (a broken or hostile archive)."""
        try:
            text = (directory / ENSEMBLE_FILE).read_text(encoding="utf-8")
        except (OSError, ValueError) as e:  # missing, not UTF-8
            raise ModelError(f"cannot read the policies' {ENSEMBLE_FILE}: {e}") from e
        data = loads_state(text, f"the policies' {ENSEMBLE_FILE}")
        entries = data.get("policies", []) if isinstance(data, dict) else None
        warnings = data.get("warnings", []) if isinstance(data, dict) else None
        if not isinstance(entries, list) or not isinstance(warnings, list):
            raise ModelError(f"the policies' {ENSEMBLE_FILE} is malformed")
        policies: list[Policy] = []
        written: list[tuple[Path, Policy]] = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ModelError(f"policy {index} of {ENSEMBLE_FILE} is malformed")
            class_name = entry.get("class")
            policy_cls = POLICY_CLASSES.get(class_name) if isinstance(class_name, str) else None
            subdirectory = str(entry.get("directory", ""))
            if policy_cls is None or "/" in subdirectory or subdirectory.startswith("."):
                raise ModelError(f"the model names an unknown policy {entry!r}")
            try:
                name, priority, path = (
                    str(entry["name"]),
                    int(entry["priority"]),
                    directory / subdirectory,
                )
                policy: Policy | None = memoization_twin(policy_cls, name, priority, path, written)
                if policy is None:
                    policy = policy_cls.load(path, name, priority, domain)
                policies.append(policy)
                written.append((path, policy))
            except BotServerError:
                raise  # ours already (a refused setting is an OutdatedModel upstream)
            except Exception as e:  # a corrupt state must fail loading, not crash later
                raise ModelError(
                    f"policy {index} ({policy_cls.__name__}) cannot load: {e!r}"
                ) from e
        return cls(policies, [str(w) for w in warnings])

    # -- prediction --------------------------------------------------------------------------
    def predict(self, tracker: Tracker, domain: Domain) -> PolicyPrediction:
        """The next action: the best of every policy's prediction."""
        return self.predict_shared(tracker, domain, True)

    def predict_shared(
        self, tracker: Tracker, domain: Domain, copy: bool = False
    ) -> PolicyPrediction:
        """As `predict`, but a remembered winner comes without a copy: read it at once and
        never modify it (the turn copies what it keeps). A turn's predictions call this
        directly (a frame less than a method calling the prediction)."""
        names = domain.action_names_or_texts
        if not self.policies:
            return prediction_from(zeros(len(names)), names, None, 0)
        rejected = tracker.rejected_action
        conversation: ConversationStates | None = None
        window = self._memo_window if domain is self._memo_domain else self._learn_memo(domain)
        # Remembered only when every policy reads a window of states and no loop is active
        # (its paths read more); `active_loop_name` read without the property's call.
        key: tuple[Any, ...] | None = None
        entry: StepEntry | None = None
        if window is not None and tracker.active_loop.get("name") is None:
            # What the winner reads besides the window: a known step's entry holds its
            # winner, found by that one key.
            extra = self._memo_extra(tracker, rejected)
            # The window's identities without `ConversationStates` (made on a miss only).
            entry = window_step(tracker, domain, window, self._rule_only, self._steps, extra)
            if entry is not None:
                known = entry[2]
                if known is not None:
                    return _copy(known) if copy else known
                identities = entry[1]
            else:
                conversation = ConversationStates(tracker, domain, self._rule_only)
                identities = (
                    conversation.identities(window),
                    conversation.stories().identities(window),
                )
            key = (identities, extra)
            known = self._winners.get(key)
            if known is not None:
                if entry is not None:
                    entry[2] = known
                return _copy(known) if copy else known
        if conversation is None:
            conversation = ConversationStates(tracker, domain, self._rule_only)
        best = self._best(conversation, domain, rejected, names)
        if key is not None and not best.events:
            kept = _copy(best)
            self._winners.put(key, kept)
            if entry is not None:
                entry[2] = kept
        return best

    def _best(
        self,
        conversation: ConversationStates,
        domain: Domain,
        rejected: str | None,
        names: list[str],
    ) -> PolicyPrediction:
        """Every policy's prediction, the rejected action taken out, the best of them. Not
        inline in `predict_shared`: its comprehensions would make it create a cell for each of
        these at every call, a remembered winner's too."""
        predictions = [policy.predict(conversation, domain) for policy in self.policies]
        if rejected is not None:
            predictions = [_without(p, rejected, names) for p in predictions]
        return _pick_best(predictions)

    def _learn_memo(self, domain: Domain) -> int | None:
        """At the first prediction for a domain: the window of states every policy reads
        (None: some policy reads more) and whether a message's text counts."""
        windows = [policy.prediction_window() for policy in self.policies]
        self._memo_window = None if None in windows else max(windows)  # type: ignore[type-var]
        self._memo_reads_text = any(p.reads_message_text() for p in self.policies)
        self._rule_only = self.rule_only
        self._winners.clear()
        self._new_steps()
        self._memo_domain = domain
        return self._memo_window

    def _new_steps(self) -> None:
        if self._steps is not None:
            self._steps = Memo(self._steps.size)

    def _memo_extra(self, tracker: Tracker, rejected: str | None) -> tuple[Any, ...]:
        """What the winner depends on, besides the window's states and story states (by
        identity), when every policy reads a window of states: the latest message's intent
        and text (only whether there is one, when no policy can look a text up), the latest
        action, the rejected action."""
        message = tracker.latest_message
        return (
            message.text if self._memo_reads_text else bool(message.text),
            (message.parse_data.get("intent") or {}).get("name"),  # intent_name, no properties
            tracker.latest_action.get("action_name"),  # latest_action_name, likewise
            rejected,
        )


def _without(prediction: PolicyPrediction, action: str, names: list[str]) -> PolicyPrediction:
    if action not in names:
        return prediction
    index = names.index(action)
    if prediction.probabilities[index] <= 0:
        return prediction
    probabilities = list(prediction.probabilities)
    probabilities[index] = 0.0
    best = prediction_from(probabilities, names, prediction.policy_name, 0)
    return replace(
        prediction,
        probabilities=probabilities,
        action_name=best.action_name,
        confidence=best.confidence,
    )


def _copy(prediction: PolicyPrediction) -> PolicyPrediction:
    """A copy that shares nothing mutable with `prediction` (it has no events)."""
    return prediction.copied([], list(prediction.probabilities))


def _pick_best(predictions: list[PolicyPrediction]) -> PolicyPrediction:
    no_user = any(p.is_no_user_prediction for p in predictions)
    end_to_end = any(p.is_end_to_end_prediction for p in predictions)
    events: list[Event] = []
    best: PolicyPrediction | None = None
    best_score = (-1.0, -1)
    for prediction in predictions:
        events.extend(prediction.events)
        if prediction.is_no_user_prediction != no_user:
            continue
        if not no_user and prediction.is_end_to_end_prediction != end_to_end:
            continue
        score = (prediction.confidence, prediction.policy_priority)
        if best_score < score:
            best_score, best = score, prediction
    assert best is not None
    return best.with_events(events)


def check_forms_have_rule_policy(specs: list[dict[str, Any]] | None, domain: Domain) -> None:
    """As Rasa, before anything trains: a domain with forms needs the RulePolicy, which alone
    runs a form's happy path."""
    names = [_short_name(spec.get("name")) for spec in specs or DEFAULT_POLICIES]
    if domain.forms and "RulePolicy" not in names:
        raise TrainingError(
            "You have defined a form action, but have not added the 'RulePolicy' to your "
            "policy ensemble. Either remove all forms from your domain or add the "
            "'RulePolicy' to your policy configuration."
        )


def _check_against_data(specs: list[dict[str, Any]], stories: list[TrainingStory]) -> list[str]:
    """Rasa's warnings about the policies and the data: no RulePolicy, policies sharing a
    priority, and rules without a policy for them (or the reverse)."""
    names = [_short_name(spec.get("name")) for spec in specs]
    warnings: list[str] = []
    if "RulePolicy" not in names:
        warnings.append(
            "'RulePolicy' is not included in the model's policy configuration. Default "
            "intents such as 'restart' and 'back' will not trigger actions 'action_restart' "
            "and 'action_back'."
        )
    by_priority: dict[Any, list[str]] = {}
    for spec, name in zip(specs, names, strict=True):
        policy_cls = POLICY_CLASSES.get(MAPPED_POLICIES.get(name, name))
        default = policy_cls.default_priority if policy_cls else IGNORED_PRIORITY
        priority = spec.get("priority", default)
        by_priority.setdefault(priority, []).append(name)
    for priority, sharing in by_priority.items():
        if len(sharing) > 1:
            warnings.append(
                f"Found policies {', '.join(sharing)} with same priority {priority} in "
                "PolicyEnsemble. When personalizing priorities, be sure to give all policies "
                "different priorities."
            )
    if stories:
        has_rules = any(story.is_rule for story in stories)
        if "RulePolicy" in names and not has_rules:
            warnings.append(
                "Found a rule-based policy in your configuration but no rule-based training "
                "data. Please add rule-based stories to your training data or remove the "
                "rule-based policy (`RulePolicy`) from your configuration."
            )
        elif "RulePolicy" not in names and has_rules:
            warnings.append(
                "Found rule-based training data but no policy supporting rule-based data. "
                "Please add `RulePolicy` or another rule-supporting policy to the `policies` "
                "section in `config.yml`."
            )
    return warnings


def _unknown_options(
    name: str, options: dict[str, Any], policy_cls: type[Policy], *, mapped: bool
) -> list[str]:
    """Warnings for config.yml options a policy does not know. A policy trained as one of ours
    (TEDPolicy) has many Rasa options ours ignore: only near-misses of ours are named."""
    known = ["priority", *policy_cls.defaults]
    found = (
        unknown_option_warning(name, key, known, list_known=not mapped)
        for key in options
        if key not in known and key not in RASA_ONLY_OPTIONS
    )
    return [w for w in found if w]
