"""ServerMetrics writes what prometheus_client's own Counter and Histogram would write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from server.api.metrics import _FAST_BUCKETS, _STORE_OPERATIONS, FOLD_TURNS, ServerMetrics
from server.api.metrics_sharing import SharedMetrics

# On the bounds, between them, beyond the last one: `le` buckets hold values <= their bound.
SECONDS = [0.0, 0.0005, 0.0004999, 0.0005001, 0.001, 0.003, 0.05, 5.0, 5.0001, 42.0, 1e-9]


def without_created(text: bytes) -> str:
    return re.sub(r"(?m)^(\w+_created(\{[^}]*\})?) \S+$", r"\1 <time>", text.decode())


def test_the_text_equals_prometheus_clients_for_the_same_observations() -> None:
    ours = ServerMetrics()
    reference = CollectorRegistry()
    turns = Counter("botserver_turns", "User turns handled", registry=reference)
    policy = Histogram(
        "botserver_policy_seconds",
        "Time to predict the next action",
        buckets=_FAST_BUCKETS,
        registry=reference,
    )
    store = Histogram(
        "botserver_tracker_store_seconds",
        "Time of a tracker store operation",
        ["operation"],
        buckets=_FAST_BUCKETS,
        registry=reference,
    )
    for operation in _STORE_OPERATIONS:
        store.labels(operation=operation)
    for seconds in SECONDS:
        ours.turns.inc()
        turns.inc()
        ours.policy_seconds.observe(seconds)
        policy.observe(seconds)
        ours.tracker_store_seconds["append"].observe(seconds * 2)
        store.labels(operation="append").observe(seconds * 2)

    text = without_created(ours.render())
    for name, metric in (
        ("botserver_turns", turns),
        ("botserver_policy_seconds", policy),
        ("botserver_tracker_store_seconds", store),
    ):
        expected = without_created(generate_latest(reference))
        block = re.compile(rf"(?ms)^# HELP {name}(_total)? .*?(?=^# HELP (?!{name}_created))")
        found = block.search(text + "# HELP end")
        wanted = block.search(expected + "# HELP end")
        assert found is not None and wanted is not None, name
        assert found.group(0) == wanted.group(0), metric


def test_counts_after_a_number_of_observations_parse_as_prometheus_text() -> None:
    metrics = ServerMetrics()
    for _ in range(7):
        metrics.observe_turn({"seconds": 0.004, "actions": ["utter_greet", "action_listen"]})
    metrics.observe_turn({"seconds": 0.2, "actions": ["action_listen"]})
    metrics.model_loads["failure"].inc()

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("botserver_turns_total", ())] == 8
    assert samples[("botserver_actions_total", ())] == 15
    assert samples[("botserver_turn_seconds_count", ())] == 8
    assert samples[("botserver_turn_seconds_bucket", (("le", "0.005"),))] == 7
    assert samples[("botserver_turn_seconds_bucket", (("le", "0.1"),))] == 7
    assert samples[("botserver_turn_seconds_bucket", (("le", "0.25"),))] == 8
    assert samples[("botserver_turn_seconds_sum", ())] == pytest.approx(7 * 0.004 + 0.2)
    assert samples[("botserver_model_loads_total", (("result", "failure"),))] == 1
    assert samples[("botserver_model_loads_total", (("result", "success"),))] == 0
    assert families["botserver_turn_seconds"].type == "histogram"


def test_an_instrumented_processor_still_calls_its_own_turn_callback_and_calls() -> None:
    seen: list[dict] = []

    class Processor:
        on_turn = seen.append
        action_server = None
        trackers = type("Repository", (), {"store": object()})()

        @staticmethod
        def parse(model, text, message_id=None, metadata=None):  # type: ignore[no-untyped-def]
            return {"text": text, "message_id": message_id, "metadata": metadata}

        @staticmethod
        def predict_next(tracker, model):  # type: ignore[no-untyped-def]
            return (tracker, model)

    processor = Processor()
    metrics = ServerMetrics()
    metrics.instrument(processor)
    processor.on_turn({"seconds": 0.02, "actions": ["utter_greet", "action_listen"]})
    assert processor.parse("model", "hi", metadata={"a": 1}) == {
        "text": "hi",
        "message_id": None,
        "metadata": {"a": 1},
    }
    assert processor.predict_next("tracker", "model") == ("tracker", "model")

    assert seen == [{"seconds": 0.02, "actions": ["utter_greet", "action_listen"]}]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert samples[("botserver_turns_total", ())] == 1
    assert samples[("botserver_actions_total", ())] == 2
    assert samples[("botserver_nlu_seconds_count", ())] == 1
    assert samples[("botserver_policy_seconds_count", ())] == 1


def samples(text: bytes) -> dict[tuple[str, str], float]:
    """Every sample but the creation times, by name and labels."""
    return {
        (sample.name, str(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_a_scrape_adds_the_other_workers_snapshots_as_one_process_would_count() -> None:
    """With `--workers N` each worker counts its own turns; a scrape of any of them shows
    what one process that saw every observation would show."""
    workers = [ServerMetrics() for _ in range(3)]
    alone = ServerMetrics()
    for n, seconds in enumerate(SECONDS):
        for metrics in (workers[n % 3], alone):
            metrics.turns.inc()
            metrics.policy_seconds.observe(seconds)
            metrics.tracker_store_seconds["append"].observe(seconds)
    workers[1].model_loads["failure"].inc()
    alone.model_loads["failure"].inc()
    # Through JSON, as they travel between processes.
    snapshots = [json.loads(json.dumps(metrics.snapshot())) for metrics in workers]
    for k, metrics in enumerate(workers):
        others = snapshots[:k] + snapshots[k + 1 :]
        assert samples(metrics.render(others)) == pytest.approx(samples(alone.render()))
    # The snapshot was added for that scrape only.
    assert "botserver_turns_total 4.0" in workers[0].render().decode()


def test_a_damaged_snapshot_of_another_worker_counts_as_nothing() -> None:
    metrics = ServerMetrics()
    metrics.turns.inc(2)
    metrics.policy_seconds.observe(0.003)
    damaged = {
        "botserver_turns": {"": "many"},
        "botserver_policy_seconds": {"": [1, 2]},
        "botserver_actions": [1],
        "botserver_tracker_store_seconds": {"append": None},
    }
    assert samples(metrics.render([damaged])) == samples(metrics.render())


def test_counters_never_go_down_between_scrapes_of_different_workers(tmp_path: Path) -> None:
    """Scrapes of `--workers N` reach any worker: a number one scrape showed is never less in
    the next scrape, whichever worker answers it (Prometheus would read a counter reset)."""
    workers = [ServerMetrics() for _ in range(2)]
    clients = []
    for metrics in workers:
        SharedMetrics(metrics, tmp_path)
        app = FastAPI()
        app.include_router(metrics.router())
        clients.append(TestClient(app))
    shown = []
    for turns_since, scraped in ((5, 1), (3, 0), (2, 1), (4, 0)):
        workers[1].turns.inc(turns_since)  # between timed publications: on no disk yet
        response = clients[scraped].get("/metrics")
        assert response.headers["content-type"] == CONTENT_TYPE_LATEST
        shown.append(samples(response.content)[("botserver_turns_total", "[]")])
    assert shown == [5.0, 5.0, 10.0, 10.0]  # worker 1 shows what worker 0 then reads


def test_turns_fold_their_observations_without_a_scrape() -> None:
    """Observations wait in a list until folded into the numbers: every FOLD_TURNS turns
    fold them, so the lists do not grow with the turns of a server nobody scrapes."""
    metrics = ServerMetrics()
    for _ in range(FOLD_TURNS):
        metrics.policy_seconds.observe(0.001)
        metrics.observe_turn({"seconds": 0.004, "actions": ["action_listen"]})
    assert not metrics.policy_seconds.pending and not metrics.turn_seconds.pending
    assert sum(metrics.policy_seconds.counts) == sum(metrics.turn_seconds.counts) == FOLD_TURNS
