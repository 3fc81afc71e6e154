"""Prometheus metrics: one registry per app, GET /metrics, and the instrumentation of a running
processor (turns, NLU and policy time, action-server calls, tracker-store latency, model loads).

The dialogue engine knows nothing of Prometheus: `ServerMetrics.instrument` wraps the calls
it measures on the live objects (the processor, its store and action server, the model holder).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import prometheus_client.metrics
from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from server.api.query import FirstValueRoute
from server.errors import ModelSuperseded

F = TypeVar("F", bound=Callable[..., Any])

# Turn latencies: a few ms for a rule-based turn up to seconds with slow action servers.
_TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

_STORE_OPERATIONS = ("load", "load_all", "append", "replace")

# When the histograms' pending observations are moved into their numbers (besides every read):
# every FOLD_TURNS turns (about six values a turn: a short hold of the loop), and every
# FOLD_SECONDS while the app serves, for observations outside turns (the parse and predict APIs).
FOLD_TURNS = 256
FOLD_SECONDS = 60.0

# With `--workers N`, a gauge adds in the snapshots written this recently, and the newest of
# each worker still running: a worker that died leaves its last snapshot, whose counters
# still count but whose state (events queued, connected) is no longer anyone's. Workers write
# theirs every second (`metrics_sharing`); one late (its event loop or the threads writing
# files busy past this) still holds the events it last showed.
WRITTEN = "_written"
PID = "_pid"
GAUGE_FRESH_SECONDS = 10.0

# The event broker's figures (`QueuedBroker.figures`): gauges, how the workers' values combine
# into one (events queued add up; the broker counts as connected while every worker is, and as
# blocked while one is), and counters.
_BROKER_GAUGES = (
    (
        "queued",
        "botserver_event_broker_queued_events",
        "Events queued for the event broker and not yet delivered",
        sum,
    ),
    (
        "connected",
        "botserver_event_broker_connected",
        "1 while the event broker takes events (RabbitMQ: connected), else 0",
        min,
    ),
    (
        "blocked",
        "botserver_event_broker_blocked",
        "1 while RabbitMQ blocks publishing (connection.blocked), else 0",
        max,
    ),
)
_BROKER_COUNTERS = (
    (
        "published",
        "botserver_event_broker_published",
        "Events the event broker took (confirmed, committed, written)",
    ),
    (
        "dropped",
        "botserver_event_broker_dropped",
        "Events dropped: for room in a full queue, or refused by the broker as too large",
    ),
    (
        "failed",
        "botserver_event_broker_failed_attempts",
        "Delivery attempts to the event broker that failed (each retried)",
    ),
)


class CounterValue:
    """One counter series: a number and when it was created."""

    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class ReadValue:
    """A series whose value is read when scraped (a figure another object keeps)."""

    __slots__ = ("read", "created")

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read
        self.created = time.time()

    @property
    def value(self) -> float:
        return float(self.read())


class HistogramValue:
    """One histogram series: a count per bucket (not cumulative: summed when scraped), a sum.

    `observe` is the `append` of a list of pending values: one C call, no Python frame and
    no bucketing on a turn's path, safe from worker threads (the parse of a blocking pipeline)
    under the GIL. `fold` moves the pending values into the counts and the sum; every read
    folds first, and so does `ServerMetrics` every FOLD_TURNS turns and every FOLD_SECONDS
    while the app serves, so the list stays short.
    """

    __slots__ = ("bounds", "counts", "sum", "created", "pending", "observe", "_folding")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()
        self.pending: list[float] = []
        self.observe: Callable[[float], None] = self.pending.append
        self._folding = threading.Lock()

    def fold(self) -> None:
        """Adds the pending values to the counts (each to the first bucket whose bound is >=
        it, as prometheus_client's Histogram) and to the sum (in the order observed)."""
        with self._folding:
            pending = self.pending
            values = pending[:]
            if not values:
                return
            del pending[: len(values)]  # values observed meanwhile by a thread stay, at the end
            indexes = np.searchsorted(self.bounds, values, side="left")
            for index, count in enumerate(np.bincount(indexes, minlength=len(self.counts))):
                self.counts[index] += int(count)
            self.sum = sum(values, self.sum)


class _Family:
    """A metric's name, help and series (by label value), written as prometheus_client would
    write a `Counter` or `Histogram` of the same name."""

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: str,
        label: str | None = None,
        combine: Callable[[list[float]], float] = sum,
    ) -> None:
        self.name, self.documentation, self.kind, self.label = name, documentation, kind, label
        self.series: dict[str, Any] = {}  # label value -> CounterValue | HistogramValue
        self.combine = combine  # a gauge's: the workers' values into one

    def fold(self) -> None:
        """A histogram's pending observations into its numbers (see `HistogramValue`)."""
        if self.kind == "histogram":
            for series in self.series.values():
                series.fold()

    def snapshot(self) -> dict[str, Any]:
        """Each series' numbers as JSON values: a counter's value, a histogram's bucket
        counts followed by its sum."""
        self.fold()
        return {
            label: series.value if self.kind != "histogram" else [*series.counts, series.sum]
            for label, series in self.series.items()
        }

    def collect(self, peers: Sequence[dict[str, Any]] = (), own: bool = True) -> Metric:
        """The family's samples, with the other workers' snapshots (`peers`) added in; with
        `own` False, the peers' numbers alone (this worker's snapshot is among them)."""
        self.fold()
        metric = Metric(self.name, self.documentation, self.kind)
        created = prometheus_client.metrics._use_created
        others = [other for peer in peers if isinstance(other := peer.get(self.name), dict)]
        if self.kind == "gauge":
            others = [
                other for peer in _current(peers) if isinstance(other := peer.get(self.name), dict)
            ]
        for label_value, series in self.series.items():
            labels = {} if self.label is None else {self.label: label_value}
            if self.kind == "gauge":
                values = [series.value] if own else []
                values += [_number(other.get(label_value)) for other in others]
                metric.add_sample(self.name, labels, self.combine(values) if values else 0.0)
                continue
            if self.kind == "counter":
                value = series.value if own else 0.0
                value += sum(_number(other.get(label_value)) for other in others)
                metric.add_sample(f"{self.name}_total", labels, value)
            else:
                counts = list(series.counts) if own else [0] * len(series.counts)
                total_sum = series.sum if own else 0.0
                for other in others:
                    numbers = other.get(label_value)
                    if isinstance(numbers, list) and len(numbers) == len(counts) + 1:
                        counts = [c + _number(n) for c, n in zip(counts, numbers, strict=False)]
                        total_sum += _number(numbers[-1])
                total = 0.0
                for bound, count in zip(series.bounds, counts, strict=True):
                    total += count
                    bucket = {**labels, "le": floatToGoString(bound)}
                    metric.add_sample(f"{self.name}_bucket", bucket, total)
                metric.add_sample(f"{self.name}_count", labels, total)
                metric.add_sample(f"{self.name}_sum", labels, total_sum)
            if created:
                metric.add_sample(f"{self.name}_created", labels, series.created)
        return metric


class _Collector:
    """Hands the families to the registry at scrape time."""

    def __init__(self, families: list[_Family]) -> None:
        self.families = families
        # Set for one scrape, read synchronously.
        self.peers: Sequence[dict[str, Any]] = ()
        self.own = True

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.collect(self.peers, self.own)


class ServerMetrics:
    """The metrics of one app, in their own registry (so tests and workers never collide).

    Observations update plain numbers (a counter's addition; a histogram's list append,
    bucketed in bulk later: see `HistogramValue`), far less than prometheus_client's
    `Histogram.observe`, which takes a lock per value; the registry reads them when /metrics
    is scraped, in prometheus_client's own text format.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._families: list[_Family] = []
        self.turns = self._counters("botserver_turns", "User turns handled")[""]
        self.turn_seconds = self._histograms(
            "botserver_turn_seconds", "Time of a whole user turn (lock to save)", _TURN_BUCKETS
        )[""]
        self.actions = self._counters("botserver_actions", "Actions run during user turns")[""]
        # A blocking pipeline parses in worker threads (`Processor.parse_off_loop`): an
        # observation is a list's append, safe from any thread.
        self.nlu_seconds = self._histograms(
            "botserver_nlu_seconds", "Time to parse a message", _FAST_BUCKETS
        )[""]
        self.policy_seconds = self._histograms(
            "botserver_policy_seconds", "Time to predict the next action", _FAST_BUCKETS
        )[""]
        self.action_server_calls = self._counters(
            "botserver_action_server_calls", "Calls to the action server"
        )[""]
        self.action_server_errors = self._counters(
            "botserver_action_server_errors", "Failed calls to the action server"
        )[""]
        self.action_server_seconds = self._histograms(
            "botserver_action_server_seconds", "Time of an action server call", _TURN_BUCKETS
        )[""]
        self.tracker_store_seconds = self._histograms(
            "botserver_tracker_store_seconds",
            "Time of a tracker store operation",
            _FAST_BUCKETS,
            ("operation", _STORE_OPERATIONS),
        )
        self.model_loads = self._counters(
            "botserver_model_loads", "Model loads, by result", ("result", ("success", "failure"))
        )
        self._collector = _Collector(self._families)
        self.registry.register(self._collector)  # type: ignore[arg-type]
        # With `--workers N`: what a scrape answers, all the workers' numbers (set by
        # server.api.metrics_sharing); by default this process's own.
        self.exposition: Callable[[], Awaitable[bytes]] = self._own_exposition

    def _counters(
        self, name: str, documentation: str, labels: tuple[str, tuple[str, ...]] | None = None
    ) -> dict[str, CounterValue]:
        """The series of a counter by label value ("" for the one series of an unlabelled one)."""
        family = _Family(name, documentation, "counter", labels[0] if labels else None)
        family.series = {value: CounterValue() for value in _values(labels)}
        self._families.append(family)
        return family.series

    def watch_broker(self, broker: Any) -> None:
        """Shows the event broker's figures (`QueuedBroker.figures`, read at each scrape)."""

        def figure(key: str) -> Callable[[], float]:
            return lambda: broker.figures()[key]

        for key, name, documentation, combine in _BROKER_GAUGES:
            family = _Family(name, documentation, "gauge", combine=combine)
            family.series = {"": ReadValue(figure(key))}
            self._families.append(family)
        for key, name, documentation in _BROKER_COUNTERS:
            family = _Family(name, documentation, "counter")
            family.series = {"": ReadValue(figure(key))}
            self._families.append(family)

    def _histograms(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        labels: tuple[str, tuple[str, ...]] | None = None,
    ) -> dict[str, HistogramValue]:
        family = _Family(name, documentation, "histogram", labels[0] if labels else None)
        family.series = {value: HistogramValue(buckets) for value in _values(labels)}
        self._families.append(family)
        return family.series

    # -- observations -------------------------------------------------------------------------
    def observe_turn(self, turn: dict[str, Any]) -> None:
        """The processor's `on_turn` callback: {"seconds": float, "actions": [names]}."""
        self.turns.value += 1.0
        self.turn_seconds.observe(float(turn.get("seconds", 0.0)))
        self.actions.value += len(turn.get("actions") or ())
        if len(self.turn_seconds.pending) >= FOLD_TURNS:
            self.fold()

    def instrument(self, processor: Any, holder: Any = None) -> None:
        """Measure a live processor (and the model holder, for loads). Call once per app.

        The wrappers of the turn's calls (a parse, two predictions, a load and an append
        per turn) take the calls' own arguments; each observation is one list append.
        """
        previous = processor.on_turn
        if previous is None:
            processor.on_turn = self.observe_turn
        else:

            def on_turn(turn: dict[str, Any]) -> None:
                self.observe_turn(turn)
                previous(turn)

            processor.on_turn = on_turn
        processor.parse = _timed_parse(type(processor).parse, self.nlu_seconds)
        parse_for_turn = getattr(type(processor), "parse_for_turn", None)
        if parse_for_turn is not None:  # the turn's own parse, into the same histogram
            processor.parse_for_turn = _timed_parse(parse_for_turn, self.nlu_seconds)
        processor.predict_next = _timed_prediction(processor.predict_next, self.policy_seconds)
        store = processor.trackers.store
        for operation in _STORE_OPERATIONS:
            method = getattr(store, operation, None)
            if method is not None:
                histogram = self.tracker_store_seconds[operation]
                loads = operation in ("load", "load_all")
                setattr(store, operation, _timed_async(method, histogram, loads))
        if processor.action_server is not None:
            processor.action_server.run = self._counted_action_call(processor.action_server.run)
        if holder is not None:
            holder.load_archive = self._counted_load(holder.load_archive)

    def _counted_action_call(self, call: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(call)
        async def run(*args: Any, **kwargs: Any) -> Any:
            self.action_server_calls.inc()
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            except Exception:
                self.action_server_errors.inc()
                raise
            finally:
                self.action_server_seconds.observe(time.perf_counter() - started)

        return run

    def _counted_load(self, load: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(load)
        async def load_archive(*args: Any, **kwargs: Any) -> Any:
            try:
                info = await load(*args, **kwargs)
            except ModelSuperseded:  # discarded unread, neither success nor failure
                raise
            except Exception:
                self.model_loads["failure"].inc()
                raise
            self.model_loads["success"].inc()
            return info

        return load_archive

    def fold(self) -> None:
        """Moves the histograms' pending observations into their numbers (see
        `HistogramValue`)."""
        for family in self._families:
            family.fold()

    async def keep_folded(self) -> None:
        """Folds every FOLD_SECONDS (run while the app serves: `server.api.runner.server_app`)."""
        while True:
            await asyncio.sleep(FOLD_SECONDS)
            self.fold()

    # -- exposition ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """This process's numbers, by family and label value (JSON-able)."""
        snapshot: dict[str, Any] = {family.name: family.snapshot() for family in self._families}
        snapshot[WRITTEN] = time.time()  # how fresh its gauges are (GAUGE_FRESH_SECONDS)
        snapshot[PID] = os.getpid()  # whether they are still anyone's (`_current`)
        return snapshot

    def render(self, peers: Sequence[dict[str, Any]] = (), own: bool = True) -> bytes:
        """The text exposition, with other workers' snapshots added to this one's numbers
        (with `own` False, the snapshots' numbers alone)."""
        self._collector.peers, self._collector.own = list(peers), own
        try:
            return generate_latest(self.registry)
        finally:
            self._collector.peers, self._collector.own = (), True

    async def _own_exposition(self) -> bytes:
        return self.render()

    def router(self) -> APIRouter:
        """GET /metrics, open like Rasa's health routes (scrape it on a private network)."""
        router = APIRouter(route_class=FirstValueRoute, tags=["Server Information"])

        @router.get(
            "/metrics",
            operation_id="getMetrics",
            summary="Prometheus metrics",
            response_class=Response,
        )
        async def metrics() -> Response:
            return Response(await self.exposition(), media_type=CONTENT_TYPE_LATEST)

        return router


def _current(peers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The snapshots whose gauges count: those written in the last GAUGE_FRESH_SECONDS, and
    the newest of each process still running (a pid a dead worker's replacement got again
    is the replacement's: its snapshot is the newer)."""
    fresh = time.time() - GAUGE_FRESH_SECONDS
    newest: dict[int, float] = {}
    for peer in peers:
        if (pid := _pid(peer)) is not None:
            newest[pid] = max(newest.get(pid, -math.inf), _number(peer[WRITTEN]))
    return [
        peer
        for peer in peers
        if (written := _number(peer.get(WRITTEN))) >= fresh
        or ((pid := _pid(peer)) is not None and newest[pid] == written and _running(pid, written))
    ]


def _pid(peer: dict[str, Any]) -> int | None:
    pid = peer.get(PID)
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and WRITTEN in peer:
        return pid
    return None


def _running(pid: int, written: float) -> bool:
    """Whether process `pid` runs and ran already when the snapshot was `written` (a process
    that got a dead worker's pid since is another)."""
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # another user's (PermissionError): it exists
        pass
    started = _started(pid)
    return started is None or started <= written + 1.0


def _started(pid: int) -> float | None:
    """When process `pid` started (Linux's /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The fields after the command (in parentheses, which may hold anything).
            fields = stat.read().rpartition(b")")[2].split()
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _number(value: Any) -> float:
    """A number from another worker's snapshot; anything else counts as 0."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _values(labels: tuple[str, tuple[str, ...]] | None) -> tuple[str, ...]:
    return labels[1] if labels else ("",)


def _timed_parse(parse: F, histogram: HistogramValue) -> F:
    """`Processor.parse`, observed (from the event loop's thread or a worker thread)."""
    observe, clock = histogram.observe, time.perf_counter

    @functools.wraps(parse)
    def timed(
        model: Any, text: str, message_id: str | None = None, metadata: dict | None = None
    ) -> Any:
        started = clock()
        try:
            return parse(model, text, message_id, metadata)
        finally:
            observe(clock() - started)

    return timed  # type: ignore[return-value]


def _timed_prediction(predict: F, histogram: HistogramValue) -> F:
    """`Processor.predict_next`, observed."""
    observe, clock = histogram.observe, time.perf_counter

    @functools.wraps(predict)
    def timed(tracker: Any, model: Any) -> Any:
        started = clock()
        try:
            return predict(tracker, model)
        finally:
            observe(clock() - started)

    return timed  # type: ignore[return-value]


def _timed_async(fn: Callable[..., Awaitable[Any]], histogram: HistogramValue, loads: bool) -> Any:
    """A store operation, observed. The wrapper takes the operation's own arguments
    (`sender_id`, and `events` unless it `loads`): no tuple and dict of `*args, **kwargs` on
    each of a turn's two store calls."""
    observe, clock = histogram.observe, time.perf_counter

    if loads:  # load, load_all

        @functools.wraps(fn)
        async def timed_load(sender_id: str) -> Any:
            started = clock()
            try:
                return await fn(sender_id)
            finally:
                observe(clock() - started)

        return timed_load

    @functools.wraps(fn)
    async def timed(sender_id: str, events: Any) -> Any:
        started = clock()
        try:
            return await fn(sender_id, events)
        finally:
            observe(clock() - started)

    return timed
