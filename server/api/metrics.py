"""Prometheus metrics: one registry per app, GET /metrics, and the instrumentation of a running
processor (turns, NLU and policy time, action-server calls, tracker-store latency, model loads).

The dialogue engine knows nothing of Prometheus: `ServerMetrics.instrument` wraps the calls
it measures on the live objects (the processor, its store and action server, the model holder).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

F = TypeVar("F", bound=Callable[..., Any])

# Turn latencies: a few ms for a rule-based turn up to seconds with slow action servers.
_TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

_STORE_OPERATIONS = ("load", "load_all", "append", "replace")


class ServerMetrics:
    """The metrics of one app, in their own registry (so tests and workers never collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.turns = Counter("botserver_turns_total", "User turns handled", registry=r)
        self.turn_seconds = Histogram(
            "botserver_turn_seconds", "Time of a whole user turn (lock to save)",
            buckets=_TURN_BUCKETS, registry=r,
        )
        self.actions = Counter(
            "botserver_actions_total", "Actions run during user turns", registry=r
        )
        self.nlu_seconds = Histogram(
            "botserver_nlu_seconds", "Time to parse a message", buckets=_FAST_BUCKETS, registry=r
        )
        self.policy_seconds = Histogram(
            "botserver_policy_seconds", "Time to predict the next action",
            buckets=_FAST_BUCKETS, registry=r,
        )
        self.action_server_calls = Counter(
            "botserver_action_server_calls_total", "Calls to the action server", registry=r
        )
        self.action_server_errors = Counter(
            "botserver_action_server_errors_total", "Failed calls to the action server",
            registry=r,
        )
        self.action_server_seconds = Histogram(
            "botserver_action_server_seconds", "Time of an action server call",
            buckets=_TURN_BUCKETS, registry=r,
        )
        self.tracker_store_seconds = Histogram(
            "botserver_tracker_store_seconds", "Time of a tracker store operation",
            ["operation"], buckets=_FAST_BUCKETS, registry=r,
        )
        self.model_loads = Counter(
            "botserver_model_loads_total", "Model loads, by result", ["result"], registry=r
        )
        for result in ("success", "failure"):
            self.model_loads.labels(result=result)
        for operation in _STORE_OPERATIONS:
            self.tracker_store_seconds.labels(operation=operation)

    # -- observations -------------------------------------------------------------------------
    def observe_turn(self, turn: dict[str, Any]) -> None:
        """The processor's `on_turn` callback: {"seconds": float, "actions": [names]}."""
        self.turns.inc()
        self.turn_seconds.observe(float(turn.get("seconds", 0.0)))
        self.actions.inc(len(turn.get("actions") or ()))

    def instrument(self, processor: Any, holder: Any = None) -> None:
        """Measure a live processor (and the model holder, for loads). Call once per app."""
        previous = processor.on_turn

        def on_turn(turn: dict[str, Any]) -> None:
            self.observe_turn(turn)
            if previous is not None:
                previous(turn)

        processor.on_turn = on_turn
        processor.parse = _timed_sync(type(processor).parse, self.nlu_seconds)
        processor.predict_next = _timed_sync(processor.predict_next, self.policy_seconds)
        store = processor.trackers.store
        for operation in _STORE_OPERATIONS:
            method = getattr(store, operation, None)
            if method is not None:
                histogram = self.tracker_store_seconds.labels(operation=operation)
                setattr(store, operation, _timed_async(method, histogram))
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
            except Exception:
                self.model_loads.labels(result="failure").inc()
                raise
            self.model_loads.labels(result="success").inc()
            return info

        return load_archive

    # -- exposition ---------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def router(self) -> APIRouter:
        """GET /metrics, open like Rasa's health routes (scrape it on a private network)."""
        router = APIRouter(tags=["Server Information"])

        @router.get(
            "/metrics",
            operation_id="getMetrics",
            summary="Prometheus metrics",
            response_class=Response,
        )
        async def metrics() -> Response:
            return Response(self.render(), media_type=CONTENT_TYPE_LATEST)

        return router


def _timed_sync(fn: F, histogram: Any) -> F:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - started)

    return timed  # type: ignore[return-value]


def _timed_async(fn: Callable[..., Awaitable[Any]], histogram: Any) -> Any:
    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - started)

    return timed
