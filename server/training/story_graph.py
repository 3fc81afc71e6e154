"""`botserver visualize`: the stories as one graph of intents and actions, where steps whose
last `max_history` steps are the same become one node (as `rasa visualize` merges them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from server.dialogue.story_steps import TrainingStory
from server.nlu.training_data import Example
from server.trackers.events import ACTION_LISTEN, ActionExecuted, UserUttered

NodeKind = Literal["start", "end", "intent", "action"]
Step = tuple[NodeKind, str]


@dataclass(frozen=True)
class GraphNode:
    """One node: `label` is what is drawn, `title` the full text (a long message is cut)."""

    id: int
    kind: NodeKind
    label: str
    title: str


@dataclass
class StoryGraph:
    """Nodes in the order the stories first reach them (START first, END last), and edges
    (from, to) in the same order, each once."""

    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)


START: Step = ("start", "START")
END: Step = ("end", "END")
MAX_LABEL = 40


def story_steps(story: TrainingStory, messages: dict[str, str] | None = None) -> list[Step]:
    """The steps a story draws: its user turns (the intent, or an example message of it when
    `messages` holds one) and bot actions; `action_listen` and slot events are left out."""
    steps: list[Step] = []
    for event in story.events:
        if isinstance(event, UserUttered):
            intent = event.intent_name
            if intent is None:  # an end-to-end turn: the text is all there is
                steps.append(("intent", event.text or ""))
            else:
                steps.append(("intent", (messages or {}).get(intent, intent)))
        elif isinstance(event, ActionExecuted) and event.action_name != ACTION_LISTEN:
            steps.append(("action", event.action_name or event.action_text or ""))
    return steps


def build_story_graph(
    stories: Iterable[TrainingStory], max_history: int, messages: dict[str, str] | None = None
) -> StoryGraph:
    """One node per distinct window of the last `max_history` steps (START counting as a
    step), so stories sharing their recent context share nodes; rules are not drawn."""
    if max_history < 1:
        raise ValueError("max_history must be 1 or more")
    graph = StoryGraph()
    ids: dict[tuple[Step, ...], int] = {}
    edges: dict[tuple[int, int], None] = {}

    def node(key: tuple[Step, ...]) -> int:
        if key not in ids:
            kind, text = key[-1]
            ids[key] = len(graph.nodes)
            label = text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"
            graph.nodes.append(GraphNode(ids[key], kind, label, text))
        return ids[key]

    start = node((START,))
    end_edges: list[int] = []
    for story in stories:
        if story.is_rule:
            continue
        window: tuple[Step, ...] = (START,)
        previous = start
        for step in story_steps(story, messages):
            window = (*window, step)[-max_history:]
            current = node(window)
            edges.setdefault((previous, current), None)
            previous = current
        if previous != start:
            end_edges.append(previous)
    end = node((END,))
    for last in end_edges:
        edges.setdefault((last, end), None)
    graph.edges = list(edges)
    return graph


def example_messages(examples: Iterable[Example]) -> dict[str, str]:
    """The first training message of each intent: what the graph shows instead of the
    intent's name with `--nlu`. A retrieval intent's (`faq/ask_name`) stands for `faq` too,
    the name stories use."""
    messages: dict[str, str] = {}
    for example in examples:
        if example.intent and example.base_intent and example.text:
            messages.setdefault(example.intent, example.text)
            messages.setdefault(example.base_intent, example.text)
    return messages
