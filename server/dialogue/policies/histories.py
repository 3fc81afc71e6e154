"""The histories memoization learns: a tree of state texts (a node per distinct history, an
edge per state) holding the action taken after each, and its archive form."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from server.dialogue.policies.featurization import key_of, state_text
from server.errors import ModelError

ROOT = 0
# Histories of up to this many states are also kept by their texts' tuple, found by one hash
# (of the texts' hashes, which each string keeps) faster than by walking the runs.
SHORT = 16
# A state read by the message's text (end-to-end); in a slot's state too (see `reads_text`).
_TEXT_STATE = '{"text":'
# The most nodes (distinct histories) a memoization policy may hold, learning or loading: about
# 90 bytes of memory a node at the peak of loading (about 20 while an old archive's lookup is
# converted, besides the key being read), so some 270 MB at the bound. Training format 6's
# largest lookup (its 256 MiB policy.json, some 340,000 user turns with `max_history: 5`)
# holds about 2 million.
MAX_NODES = 3_000_000
# The most states a history of an old archive's lookup (training format 6 and older) may hold:
# the trainer wrote a key for each of its prefixes too, n * n / 2 states, which a 256 MiB
# policy.json holds only to some 13,000 (of 3-byte states). A key's states are parsed at once,
# some 100 bytes each: 10 MB at this bound.
MAX_LOOKUP_STATES = 100_000
_DECODER = json.JSONDecoder()


class _Run:
    """States that follow one another with no other way on (a path of the tree with no
    branch), the action after each, and the runs that go on from its last state."""

    __slots__ = ("texts", "actions", "next")

    def __init__(self, texts: Sequence[str], actions: list[str | None]) -> None:
        # A tuple once learned (a list while an old lookup is converted: `_grow`).
        self.texts, self.actions = texts, actions
        self.next: dict[str, _Run] = {}  # by their first state


class Histories:
    """Histories of state texts and the action after each (`action_of`).

    One node per distinct history and one edge per state, so a story of n states costs n
    nodes, where a key per whole history cost n keys of up to n states. A history that led to
    two different actions is ambiguous: it leads to none, whatever a later story does. Once
    learned (`done`), paths without a branch are kept as runs of states, which a prediction
    compares at once instead of state by state; histories of up to `SHORT` states are kept
    by their texts' tuple too, and only so when none is longer (a `max_history` window)."""

    __slots__ = (
        "_edges",
        "_actions",
        "_ambiguous",
        "_texts",
        "_runs",
        "_short",
        "depth",
        "reads_text",
    )

    def __init__(self) -> None:
        # (parent node, the state's text) -> child node; nodes are numbered as they are made,
        # so a parent's number is below its children's. Only while learning.
        self._edges: dict[tuple[int, str], int] = {}
        self._actions: dict[int, str] = {}
        self._ambiguous: set[int] = set()
        # Each distinct text once: a long story repeats a few states many times.
        self._texts: dict[str, str] = {}
        self._runs: dict[str, _Run] = {}  # by their first state
        self._short: dict[tuple[str, ...], str] = {}
        # The most states a learned history holds (a longer window matches none).
        self.depth = 0
        # Whether a history leading to an action holds a state read by its text. (Loose: a
        # slot named `text` also counts.)
        self.reads_text = False

    # -- learning ----------------------------------------------------------------------------
    def child(self, node: int, text: str, depth: int) -> int:
        """The node of `node`'s history followed by the state `text`, made if new; `depth`
        is the new node's number of states."""
        key = (node, text)
        found = self._edges.get(key)
        if found is not None:
            return found
        made = len(self._edges) + 1
        if made > MAX_NODES:
            raise too_many()
        text = self._texts.setdefault(text, text)
        self._edges[(node, text)] = made
        if depth > self.depth:
            self.depth = depth
        return made

    def learn(self, node: int, action: str) -> None:
        """That `action` followed the history of `node`: two different ones make it
        ambiguous for good."""
        if node in self._ambiguous:
            return
        known = self._actions.get(node)
        if known is None:
            self._actions[node] = action
        elif known != action:
            del self._actions[node]
            self._ambiguous.add(node)

    def learn_window(self, texts: Sequence[str], action: str) -> None:
        node = ROOT
        for depth, text in enumerate(texts, 1):
            node = self.child(node, text, depth)
        self.learn(node, action)

    def done(self) -> None:
        """Learning is over: the nodes become runs, and what only learning needs goes."""
        edges = self._edges
        if not edges:
            return  # nothing learned, or done already
        parents, texts = [ROOT] * (len(edges) + 1), [""] * (len(edges) + 1)
        for (parent, text), node in edges.items():
            parents[node], texts[node] = parent, text
        self._edges = edges = {}  # freed before the runs are made
        self._make_runs(parents, texts)

    def _make_runs(self, parents: list[int], texts: list[str]) -> None:
        """The runs and short histories of the tree whose node n (from 1) has the parent
        `parents[n]`, a lower number, and the last state `texts[n]`. A few numbers a node
        meanwhile: only a node with two children or more lists them."""
        actions, size = self._actions, len(parents)
        holds_text = [False] * size
        counts = [0] * size  # of each node's children
        last = [ROOT] * size  # each node's last child
        paths: dict[int, tuple[str, ...]] = {ROOT: ()}  # of the nodes SHORT deep at most
        for node in range(1, size):
            parent, text = parents[node], texts[node]
            holds_text[node] = holds_text[parent] or _TEXT_STATE in text
            counts[parent] += 1
            last[parent] = node
            path = paths.get(parent)
            if path is not None and len(path) < SHORT:
                path = paths[node] = (*path, text)
                if node in actions:
                    self._short[path] = actions[node]
        self.reads_text = any(holds_text[node] for node in actions)
        del holds_text, paths
        if self.depth <= SHORT:  # every history is kept by its texts: no runs
            self._edges, self._actions, self._ambiguous, self._texts = {}, {}, set(), {}
            return
        several: dict[int, list[int]] = {}  # the children of each node with more than one
        for node in range(1, size):
            if counts[parents[node]] > 1:
                several.setdefault(parents[node], []).append(node)

        def children(node: int) -> list[int]:
            return [last[node]] if counts[node] == 1 else several.get(node, [])

        # Each run from a node's child on, as long as each node has one child.
        pending = [(self._runs, node) for node in children(ROOT)]
        while pending:
            into, node = pending.pop()
            run_texts, run_actions = [texts[node]], [actions.get(node)]
            while counts[node] == 1:
                node = last[node]
                run_texts.append(texts[node])
                run_actions.append(actions.get(node))
            run = into[run_texts[0]] = _Run(tuple(run_texts), run_actions)
            pending.extend((run.next, child) for child in children(node))
        self._edges, self._actions, self._ambiguous, self._texts = {}, {}, set(), {}

    # -- predicting --------------------------------------------------------------------------
    def action_of(self, texts: tuple[str, ...]) -> str | None:
        """The action learned after exactly these states (their texts), or None."""
        count = len(texts)
        if count <= SHORT:
            return self._short.get(texts)
        if count > self.depth:
            return None
        runs, start = self._runs, 0
        while True:
            run = runs.get(texts[start])
            if run is None:
                return None
            known = run.texts
            end = start + len(known)
            if end >= count:  # the window ends in this run
                taken = count - start
                if texts[start:] != known[:taken]:
                    return None
                return run.actions[taken - 1]
            if texts[start:end] != known:
                return None
            runs, start = run.next, end

    # -- the archive -------------------------------------------------------------------------
    def as_data(self) -> dict[str, Any]:
        """JSON values: each distinct state text once, each node's parent and state (by
        their numbers; node n is entry n - 1, the root 0 has none) and the actions. Of
        histories all kept by their texts, the nodes on the way to an action, in the
        order of their texts."""
        numbers: dict[str, int] = {}
        parents: list[int] = []
        states: list[int] = []
        ends: list[list[Any]] = []

        def node(parent: int, text: str) -> int:
            parents.append(parent)
            states.append(numbers.setdefault(text, len(numbers)))
            return len(parents)

        if not self._runs:
            # In that order each history comes right after the nodes it shares with the one
            # before, its own last node new.
            way: list[int] = [ROOT]  # the nodes of the history before, from the root
            before: tuple[str, ...] = ()
            for texts in sorted(self._short):
                same, most = 0, min(len(before), len(texts))
                while same < most and before[same] == texts[same]:
                    same += 1
                del way[same + 1 :]
                for text in texts[same:]:
                    way.append(node(way[-1], text))
                ends.append([way[-1], self._short[texts]])
                before = texts
        pending = [(ROOT, run) for run in reversed(self._runs.values())]
        while pending:  # each node after its parent
            parent, run = pending.pop()
            for text, action in zip(run.texts, run.actions, strict=True):
                parent = node(parent, text)
                if action is not None:
                    ends.append([parent, action])
            pending.extend((parent, after) for after in reversed(run.next.values()))
        return {"states": list(numbers), "parents": parents, "node_states": states, "actions": ends}

    @classmethod
    def from_data(cls, data: Any) -> Histories:
        """The histories `as_data` wrote; anything else is a ModelError saying what is wrong
        (the work is linear in the data's size, whatever it holds)."""
        if not isinstance(data, dict):
            raise _malformed("it is not an object")
        texts = _list_of(data, "states", str)
        parents = _list_of(data, "parents", int)
        if len(parents) > MAX_NODES:
            raise too_many()
        states = _list_of(data, "node_states", int)
        actions = _list_of(data, "actions", list)
        if len(parents) != len(states):
            raise _malformed("there are not as many 'parents' as 'node_states'")
        histories = cls()
        node_parents, node_texts, depths = [ROOT], [""], [0]
        counts = [0] * (len(parents) + 1)  # of each node's children
        for number, (parent, state) in enumerate(zip(parents, states, strict=True), 1):
            if not 0 <= parent < number:
                raise _malformed(f"node {number} has parent {parent}, not an earlier node")
            if not 0 <= state < len(texts):
                raise _malformed(f"node {number} has state {state}, not one of the states")
            node_parents.append(parent)
            node_texts.append(texts[state])
            depths.append(depths[parent] + 1)
            counts[parent] += 1
        depth = max(depths)
        del depths
        # Two children of one node with one state: only a node with several can have them.
        siblings: dict[tuple[int, str], int] = {}
        for number in range(1, len(node_parents)):
            parent = node_parents[number]
            if counts[parent] > 1:
                key = (parent, node_texts[number])
                if key in siblings:
                    raise _malformed(f"node {number} repeats node {siblings[key]}")
                siblings[key] = number
        del siblings, counts
        previous = ROOT
        for entry in actions:
            if len(entry) != 2 or not _is_int(entry[0]) or not isinstance(entry[1], str):
                raise _malformed("an action is not [node, name]")
            node, action = entry
            if not previous < node < len(node_parents):
                raise _malformed(f"an action for node {node}: no such node, or out of order")
            histories._actions[node] = action
            previous = node
        histories.depth = depth
        histories._make_runs(node_parents, node_texts)
        return histories

    @classmethod
    def from_lookup(cls, lookup: Any) -> Histories:
        """The histories of the lookup older archives hold: the JSON text of each history's
        states -> its action. A key `state_key` could not have written matched no
        conversation: it is left out. Each key's states go straight into the runs (a run
        split where two histories part, a run without a branch grown), so converting holds
        about what the runs keep: no number, edge or list entry a node besides."""
        if not isinstance(lookup, dict):
            raise ModelError("the memoization lookup is not an object")
        histories = cls()
        nodes = 0
        for key, action in lookup.items():
            if not isinstance(action, str):
                raise ModelError(f"the memoization lookup maps a history to {action!r}")
            # A history of more states than that is refused before they are parsed (3 bytes
            # a state, `{},`, made some 100 bytes of memory each).
            if key.count("},{") >= MAX_LOOKUP_STATES and _deeper(key, MAX_LOOKUP_STATES):
                raise ModelError(
                    f"a history of the memoization lookup holds more than "
                    f"{MAX_LOOKUP_STATES:,} states, more than training writes"
                )
            try:
                states = json.loads(key)
            except (ValueError, RecursionError) as e:
                raise ModelError(f"a memoization lookup key is not JSON: {e}") from e
            if not isinstance(states, list):
                raise ModelError("a memoization lookup key is not a list of states")
            try:
                texts = [state_text(state) for state in states]
            except (TypeError, ValueError, RecursionError):
                continue  # no state's text
            del states
            if not texts or key_of(texts) != key:
                continue
            known = histories._texts
            texts = [known.setdefault(text, text) for text in texts]
            nodes += histories._grow(texts, action)
            if nodes > MAX_NODES:
                raise too_many()
            histories.depth = max(histories.depth, len(texts))
            if len(texts) <= SHORT:
                histories._short[tuple(texts)] = action
            if not histories.reads_text:
                histories.reads_text = any(_TEXT_STATE in text for text in texts)
        if histories.depth <= SHORT:  # every history is kept by its texts: no runs
            histories._runs, histories._texts = {}, {}
        else:
            histories._settle()
        return histories

    def _grow(self, texts: list[str], action: str) -> int:
        """Puts the history `texts` (each text the one `_texts` keeps), followed by
        `action`, into the runs being built (their texts lists until `_settle`); the
        number of nodes it made."""
        runs, start, count = self._runs, 0, len(texts)
        while True:
            run = runs.get(texts[start])
            if run is None:  # a new branch
                rest = count - start
                runs[texts[start]] = _Run(texts[start:], [None] * (rest - 1) + [action])
                return rest
            known: list[str] = run.texts  # type: ignore[assignment]  # a list until settled
            rest = count - start
            same = _shared(known, texts, start, min(len(known), rest))
            if same == rest:  # the history ends in this run
                run.actions[same - 1] = action
                return 0
            if same < len(known):  # it parts from the run: the run's tail becomes a branch
                tail = _Run(known[same:], run.actions[same:])
                tail.next = run.next
                del known[same:], run.actions[same:]
                run.next = {tail.texts[0]: tail}
            elif not run.next:  # the run ends where the history goes on: it grows
                known.extend(texts[start + same :])
                run.actions.extend([None] * (rest - same - 1) + [action])
                return rest - same
            runs, start = run.next, start + same

    def _settle(self) -> None:
        """The runs `_grow` built, as learning leaves them: texts as tuples, and each
        node's branches latest made first (the order `as_data` then numbers them in)."""
        self._runs = dict(reversed(self._runs.items()))
        pending = list(self._runs.values())
        while pending:
            run = pending.pop()
            run.texts = tuple(run.texts)
            if run.next:
                run.next = dict(reversed(run.next.items()))
                pending.extend(run.next.values())
        self._texts = {}


def _shared(known: Sequence[str], texts: list[str], start: int, most: int) -> int:
    """How many states `known` and `texts[start:]` begin with alike (at most `most`; the
    first is alike)."""
    if known[:most] == texts[start : start + most]:
        return most
    same = 1
    while known[same] == texts[start + same]:
        same += 1
    return same


def too_many() -> ModelError:
    return ModelError(
        f"the memoized histories hold more than {MAX_NODES:,} distinct histories, the most "
        "a memoization policy may hold"
    )


def _deeper(key: str, most: int) -> bool:
    """Whether the JSON list `key` holds more than `most` items, read one at a time (none
    kept); False for text that is no such list."""
    if not key.startswith("["):
        return False
    count, at, end = 0, 1, len(key)
    while at < end and key[at] != "]":
        try:
            _, at = _DECODER.raw_decode(key, at)
        except (ValueError, RecursionError):
            return False
        count += 1
        if count > most:
            return True
        if key.startswith(",", at):
            at += 1
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS = {int: "an integer", str: "a text", list: "a list"}


def _list_of(data: dict[str, Any], key: str, kind: type) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise _malformed(f"it has no list {key!r}")
    check = _is_int if kind is int else (lambda item: isinstance(item, kind))
    if not all(map(check, value)):
        raise _malformed(f"an entry of {key!r} is not {_KINDS[kind]}")
    return value


def _malformed(why: str) -> ModelError:
    return ModelError(f"the memoized histories of policy.json are malformed: {why}")
