"""The JSON shapes of the HTTP API, as pydantic models for the OpenAPI document only.

Routes build their bodies as plain dicts and return them as Response objects; these models
describe those bodies (and the request bodies routes read themselves) and never validate a
request or a response at run time, so they cost the hot routes nothing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict, models_json_schema

COMPONENTS_REF = "#/components/schemas/{model}"


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def _may_be_absent(description: str) -> Any:
    """A key that may be left out but is never null: not required, and no `default`."""
    return Field(None, description=description, json_schema_extra=_no_default)


class _Documented(BaseModel):
    """A documented body: its validator is never built (its JSON schema, built when the
    OpenAPI document is first asked for, builds what it needs), 30-45 ms of every start."""

    model_config = ConfigDict(defer_build=True)


class _Open(_Documented):
    """An object that may carry more keys than the ones listed (Rasa adds keys over time)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


# --------------------------------------------------------------------------- errors


class Error(_Open):
    """The body of every failure: the status, a category, a message and a link."""

    version: str = Field(description="The Rasa version whose API this server speaks.")
    status: Literal["failure"] = Field(description='Always "failure".')
    message: str = Field(description="What went wrong, for a person to read.")
    reason: str = Field(description="A short category, such as BadRequest or NotFound.")
    details: dict[str, Any] = Field(
        description="Structured facts, e.g. the offending `parameter` and where it is (`in`)."
    )
    help: str | None = Field(
        description="A link to documentation. botserver always sends one; Rasa may send null."
    )
    code: int = Field(description="The HTTP status code again.")


# --------------------------------------------------------------------------- NLU results


class Intent(_Open):
    """An intent with the classifier's confidence (absent for an injected intent)."""

    name: str | None = _may_be_absent("The intent's name; null when no classifier ran.")
    confidence: float = _may_be_absent("The classifier's confidence, 0 to 1.")


class Entity(_Open):
    """An entity found in (or given with) a message."""

    entity: str = Field(description="The entity type.")
    value: Any = Field(description="The extracted value; any JSON value.")
    start: int = _may_be_absent("Offset of the first character in the text.")
    end: int = _may_be_absent("Offset after the last character in the text.")
    confidence: float = _may_be_absent("The extractor's confidence.")
    extractor: str | None = _may_be_absent("The component that found the entity.")
    role: str | None = _may_be_absent("The entity's role, when the domain defines roles.")
    group: str | None = _may_be_absent("The entity's group, when the domain defines groups.")


class ParseResult(_Open):
    """What NLU understood of one message: intent ranking and entities.

    A conversation without user messages reports `{"intent": {}, "text": null, ...}`.
    """

    text: str | None = _may_be_absent("The parsed text.")
    intent: Intent = _may_be_absent("The winning intent; `{}` when there is none.")
    entities: list[Entity] = _may_be_absent("The entities, in text order.")
    intent_ranking: list[Intent] = _may_be_absent("The intents by decreasing confidence.")
    message_id: str | None = _may_be_absent("The message's id.")
    metadata: dict[str, Any] | None = _may_be_absent("Metadata the channel sent along.")
    text_tokens: list[list[int]] = _may_be_absent("[start, end] offsets of each token.")
    response_selector: dict[str, Any] = _may_be_absent("Retrieval-intent results.")


class WitParseResult(_Open):
    """`POST /model/parse?emulation_mode=WIT`: wit.ai's `GET /message` answer."""

    text: str = Field(description="The parsed text.")
    intents: list[dict[str, Any]] = Field(description="The winning intent, if any.")
    entities: dict[str, list[dict[str, Any]]] = Field(description="Entities keyed `<name>:<role>`.")


class LuisParseResult(_Open):
    """`POST /model/parse?emulation_mode=LUIS`: a LUIS v3 `predict` answer."""

    query: str | None = Field(description="The parsed text.")
    prediction: dict[str, Any] = Field(
        description="`normalizedQuery`, `topIntent`, `intents` scored by name, `entities`."
    )


class DialogflowParseResult(_Open):
    """`POST /model/parse?emulation_mode=DIALOGFLOW`: a Dialogflow ES `detectIntent` answer."""

    responseId: str = Field(description="A new id for each answer.")
    queryResult: dict[str, Any] = Field(
        description="`queryText`, the intent as `action` and `intent`, entity `parameters`."
    )


# --------------------------------------------------------------------------- events, tracker


class Event(_Open):
    """One event of a conversation, exactly as Rasa writes it: `event` names its type and the
    other keys depend on it (`user`: text, parse_data; `action`: name, policy; `slot`: name,
    value; `bot`: text, data; ...)."""

    event: str = Field(description="The event type, e.g. user, bot, action, slot, restart.")
    timestamp: float | None = _may_be_absent("Unix time in seconds, a float.")
    metadata: dict[str, Any] | None = _may_be_absent("Free-form metadata.")


class LatestAction(_Open):
    """The last action run: its name, or the text of an end-to-end bot utterance."""

    action_name: str = _may_be_absent("The action's name.")
    action_text: str = _may_be_absent("The bot text, for end-to-end actions.")


class Tracker(_Open):
    """A conversation's state, derived from its events."""

    sender_id: str = Field(description="The conversation id.")
    slots: dict[str, Any] = Field(description="Every slot of the domain with its value.")
    latest_message: ParseResult | None = Field(description="The last user message, parsed.")
    latest_event_time: float | None = Field(description="Timestamp of the last event.")
    followup_action: str | None = Field(description="The action forced to run next, if any.")
    paused: bool = Field(description="Whether the conversation is paused.")
    events: list[Event] | None = Field(
        description="The events chosen by `include_events`; null for NONE."
    )
    latest_input_channel: str | None = Field(description="Channel of the last user message.")
    active_loop: dict[str, Any] = Field(
        description="The active form or loop (`{}` when none), with its `name`."
    )
    latest_action: LatestAction | None = _may_be_absent("The last action run.")
    latest_action_name: str | None = _may_be_absent("Name of the last action run.")


# --------------------------------------------------------------------------- bot output


class BotMessage(_Open):
    """One message of the bot for the channel: text and/or rich parts."""

    recipient_id: str = _may_be_absent("The conversation the message is for.")
    text: str = _may_be_absent("The message text.")
    image: str = _may_be_absent("An image URL.")
    buttons: list[dict[str, Any]] = _may_be_absent("Buttons, each with a title and payload.")
    attachment: Any = _may_be_absent("An attachment, as the response defines it.")
    quick_replies: Any = _may_be_absent("Quick replies, as the response defines them.")
    elements: Any = _may_be_absent("Carousel elements, as the response defines them.")
    custom: Any = _may_be_absent("A custom payload, passed through unchanged.")


class ConversationUpdate(_Documented):
    """The result of running an action or injecting an intent."""

    tracker: Tracker = Field(description="The conversation after the turn.")
    messages: list[BotMessage] = Field(
        default_factory=list,
        description="What the bot said during the turn; absent when `output_channel` named "
        "a channel that only pushes it (socketio, rocketchat), as in Rasa.",
    )


class ActionScore(_Open):
    action: str = Field(description="An action of the domain.")
    score: float = Field(description="The policies' score for it.")


class PredictResult(_Open):
    """The next action's scores, without running anything."""

    scores: list[ActionScore] = Field(description="Every action with its score.")
    policy: str | None = Field(description="The policy whose prediction won; null when forced.")
    confidence: float | None = _may_be_absent("The winning score.")
    tracker: Tracker = _may_be_absent("The state the prediction was made from.")


# --------------------------------------------------------------------------- server


class Version(_Open):
    version: str = Field(description="The Rasa version whose HTTP API this server speaks.")
    minimum_compatible_version: str = Field(
        description="The oldest Rasa model version this server accepts."
    )
    botserver: str = _may_be_absent("botserver's own version.")


class LoadError(_Documented):
    message: str = Field(description="Why the last model load failed.")
    at: str | None = Field(description="When it failed (ISO 8601).")


class PullError(_Documented):
    message: str = Field(description="Why the latest model-server pull failed.")
    at: str = Field(description="When it failed (ISO 8601).")
    failing_since: str = Field(description="When the pulls began to fail (ISO 8601).")


class Status(_Open):
    """The loaded model and the training jobs in progress."""

    model_file: str = Field(description="File name of the loaded model archive.")
    model_id: str | None = Field(description="The loaded model's id.")
    num_active_training_jobs: int = Field(description="Trainings running right now.")
    fingerprint: Any = _may_be_absent("Fingerprint of the model's training inputs.")
    training_type: Literal["both", "nlu", "core"] = _may_be_absent(
        "What the model holds: NLU and dialogue, the NLU alone (it predicts no action) or "
        "the dialogue alone (it parses only `/intent` messages)."
    )
    last_load_error: LoadError = _may_be_absent(
        "Why the latest request for a model failed, until a request as new or newer is served."
    )
    last_pull_error: PullError = _may_be_absent(
        "While model-server pulls fail: why the latest one did (none once one works)."
    )


# --------------------------------------------------------------------------- domain


class SlotDescription(_Open):
    type: str = Field(description="The slot type: text, bool, categorical, float, list, any.")
    initial_value: Any = _may_be_absent("The value the slot starts with.")
    influence_conversation: bool = _may_be_absent("Whether policies see the slot.")
    values: list[Any] = _may_be_absent("The values of a categorical slot.")
    mappings: list[dict[str, Any]] = _may_be_absent("How the slot is filled.")


class ResponseVariation(_Open):
    """One variation of a bot response; all parts are optional."""

    text: str = _may_be_absent("The text, with {slot} placeholders.")
    image: str = _may_be_absent("An image URL.")
    buttons: list[dict[str, Any]] = _may_be_absent("Buttons with title and payload.")
    channel: str = _may_be_absent("Only for this output channel.")
    condition: list[dict[str, Any]] = _may_be_absent("Slot conditions for this variation.")
    custom: Any = _may_be_absent("A custom payload.")


class Domain(_Open):
    """The loaded model's domain, in the layout of domain.yml."""

    version: str = _may_be_absent("The domain format version.")
    intents: list[str | dict[str, Any]] = _may_be_absent(
        "Intent names, or {name: properties} for intents with properties."
    )
    entities: list[str | dict[str, Any]] = _may_be_absent(
        "Entity names, or {name: {roles, groups}}."
    )
    slots: dict[str, SlotDescription] = _may_be_absent("Slots by name.")
    responses: dict[str, list[ResponseVariation]] = _may_be_absent(
        "Responses by name, each a list of variations."
    )
    actions: list[str] = _may_be_absent("Custom action names.")
    forms: dict[str, Any] = _may_be_absent("Forms by name with their required slots.")
    e2e_actions: list[str] = _may_be_absent("Bot texts that act as actions.")
    session_config: dict[str, Any] = _may_be_absent(
        "session_expiration_time (minutes) and carry_over_slots_to_new_session."
    )
    config: dict[str, Any] = _may_be_absent("Domain-wide settings.")


# --------------------------------------------------------------------------- evaluation


class IntentPrediction(_Open):
    text: str = Field(description="The test example.")
    intent: str | None = Field(description="Its labelled intent.")
    predicted: str | None = Field(description="The predicted intent.")
    confidence: float | None = Field(description="The prediction's confidence.")


class EvaluationItem(_Open):
    """One evaluated component: an sklearn-style report, averages, predictions and errors."""

    report: dict[str, Any] = _may_be_absent("Per-label precision, recall, f1-score, support.")
    accuracy: float = _may_be_absent("Share of correct predictions.")
    f1_score: float = _may_be_absent("Averaged f1-score.")
    precision: float = _may_be_absent("Averaged precision.")
    predictions: list[IntentPrediction] = _may_be_absent("Each example's prediction.")
    errors: list[dict[str, Any]] = _may_be_absent("The wrongly predicted examples.")


class ResponsePrediction(_Open):
    text: str = Field(description="The test example.")
    intent_response_key_target: str = Field(
        description="Its labelled retrieval intent (`chitchat/ask_name`)."
    )
    intent_response_key_prediction: str | None = Field(
        description="The retrieval intent whose response was selected."
    )
    confidence: float | None = Field(description="The selection's confidence.")


class ResponseSelectionItem(EvaluationItem):
    """The response selectors' evaluation, by retrieval intent."""

    predictions: list[ResponsePrediction] = _may_be_absent(  # type: ignore[assignment]
        "Each example's selected response."
    )


class NLUEvaluationResult(_Open):
    """Intent, entity and response-selection evaluation of test NLU data.

    A section with nothing to report is `{}`.
    """

    intent_evaluation: EvaluationItem | None = _may_be_absent("The intent classifier.")
    entity_evaluation: dict[str, EvaluationItem] | None = _may_be_absent(
        "Each entity extractor by name."
    )
    response_selection_evaluation: ResponseSelectionItem | None = _may_be_absent(
        "The response selectors."
    )


class StoryActionResult(_Open):
    action: str = Field(description="The action the story expects.")
    predicted: str = Field(description="The action the model predicted.")
    confidence: float | None = Field(description="The confidence of the prediction.")
    policy: str | None = Field(description="The policy that made the prediction.")


class StoriesEvaluationResult(_Open):
    """How well the dialogue model reproduces the test stories."""

    report: dict[str, Any] = Field(
        description="Per-action (and, end to end, per-intent) precision, recall, f1-score."
    )
    precision: float = Field(description="Weighted precision over actions.")
    f1: float = Field(description="Weighted f1-score over actions.")
    accuracy: float = Field(description="Share of correctly predicted actions.")
    actions: list[StoryActionResult] = Field(description="Every expected and predicted action.")
    in_training_data_fraction: float = Field(
        description="Share of the action predictions made by a policy that memorizes the "
        "training data (RulePolicy, MemoizationPolicy, AugmentedMemoizationPolicy)."
    )
    is_end_to_end_evaluation: bool = Field(description="Whether `e2e` was asked for.")


# --------------------------------------------------------------------------- request bodies


class ActionRequest(_Open):
    """The action to run, and optionally the policy and confidence to record with it."""

    name: str = Field(min_length=1, description="An action of the domain.")
    policy: str | None = _may_be_absent("Recorded as the predicting policy.")
    confidence: float | None = _may_be_absent("Recorded as the prediction's confidence.")


class IntentTriggerRequest(_Open):
    """An intent to inject as if the user had sent it, with optional entities."""

    name: str = Field(min_length=1, description="An intent of the domain.")
    entities: dict[str, Any] | list[dict[str, Any]] | None = _may_be_absent(
        "Entity values by entity name, or a list of entities."
    )


class MessageRequest(_Open):
    """A user message to add to a conversation without predicting a reply."""

    text: str = Field(description="The message text.")
    sender: Literal["user"] = Field(description="Only user messages can be added.")
    parse_data: ParseResult = _may_be_absent("NLU results to store instead of parsing.")
    message_id: str = _may_be_absent("An id for the message.")


class ParseRequest(_Open):
    text: str = Field(description="The text to parse.")
    message_id: str = _may_be_absent("An id to echo back in the result.")


class EndpointConfig(_Open):
    """Where to fetch models from, as in endpoints.yml's `models:` section."""

    url: str = Field(description="The model server's http(s) URL.")
    params: dict[str, Any] = _may_be_absent("Query parameters for each request.")
    headers: dict[str, Any] = _may_be_absent("Headers for each request.")
    basic_auth: dict[str, Any] = _may_be_absent("username and password.")
    token: str = _may_be_absent("A token sent as a query parameter.")
    token_name: str = _may_be_absent("The query parameter's name for `token`.")
    wait_time_between_pulls: int | None = _may_be_absent("Seconds between polls.")
    timeout: float = _may_be_absent("Seconds a whole pull may take (default 300).")
    read_timeout: float = _may_be_absent(
        "Ours: seconds the server may stay silent, connecting or between two reads (default 30,"
        " at most `timeout`)."
    )


class ModelRequest(_Open):
    """Which model to load: a local file, a model server, or remote storage."""

    model_file: str = _may_be_absent("Path of a model archive, or of a directory of them.")
    model_server: EndpointConfig = _may_be_absent("Fetch the model from this server.")
    remote_storage: Literal["aws", "gcs", "azure"] = _may_be_absent(
        "Fetch `model_file` from this cloud storage."
    )


class TrainingRequest(_Open):
    """A whole project in one document: config, domain and training data keys together."""

    pipeline: list[Any] = _may_be_absent("NLU pipeline, as in config.yml.")
    policies: list[Any] = _may_be_absent("Dialogue policies, as in config.yml.")
    language: str = _may_be_absent("The language code, as in config.yml.")
    intents: list[Any] = _may_be_absent("As in domain.yml.")
    entities: list[Any] = _may_be_absent("As in domain.yml.")
    slots: dict[str, Any] = _may_be_absent("As in domain.yml.")
    responses: dict[str, Any] = _may_be_absent("As in domain.yml.")
    actions: list[Any] = _may_be_absent("As in domain.yml.")
    forms: dict[str, Any] = _may_be_absent("As in domain.yml.")
    session_config: dict[str, Any] = _may_be_absent("As in domain.yml.")
    nlu: list[Any] = _may_be_absent("NLU examples, as in data/nlu.yml.")
    stories: list[Any] = _may_be_absent("Stories, as in data/stories.yml.")
    rules: list[Any] = _may_be_absent("Rules, as in data/rules.yml.")


class CommonExample(_Open):
    text: str = Field(description="The example text, without entity annotations.")
    intent: str = Field(description="Its intent.")
    entities: list[Entity] = _may_be_absent("Its entities, with character offsets.")


class NLUExamples(_Open):
    common_examples: list[CommonExample] = Field(description="The labelled examples.")


class NLUTestData(_Open):
    """NLU test data in Rasa's JSON format (YAML is sent as application/x-yaml instead)."""

    rasa_nlu_data: NLUExamples = Field(description="The examples to evaluate on.")


EVENT_OR_EVENTS: dict[str, Any] = {
    "oneOf": [
        {"$ref": COMPONENTS_REF.format(model="Event")},
        {"type": "array", "items": {"$ref": COMPONENTS_REF.format(model="Event")}},
    ]
}
EVENT_LIST: dict[str, Any] = {
    "type": "array",
    "items": {"$ref": COMPONENTS_REF.format(model="Event")},
}

# The answers of POST /model/parse: Rasa's own, or that of an `emulation_mode`.
PARSE_FORMATS: tuple[type[BaseModel], ...] = (
    ParseResult,
    WitParseResult,
    LuisParseResult,
    DialogflowParseResult,
)

DOCUMENTED_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Version,
    Status,
    Tracker,
    Event,
    ParseResult,
    WitParseResult,
    LuisParseResult,
    DialogflowParseResult,
    ConversationUpdate,
    PredictResult,
    Domain,
    NLUEvaluationResult,
    StoriesEvaluationResult,
    ActionRequest,
    IntentTriggerRequest,
    MessageRequest,
    ParseRequest,
    ModelRequest,
    TrainingRequest,
    NLUTestData,
)


def component_schemas() -> dict[str, Any]:
    """JSON schemas of every documented model and the models they use, by name."""
    _, definitions = models_json_schema(
        [(model, "serialization") for model in DOCUMENTED_MODELS],
        ref_template=COMPONENTS_REF,
    )
    schemas: dict[str, Any] = definitions.get("$defs", {})
    return schemas


def ref(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to a documented model's component schema."""
    return {"$ref": COMPONENTS_REF.format(model=model.__name__)}
