"""CPU time of `fold_states` (what a long conversation's first prediction runs in a thread)
on a session of 100,000 events, with the code on PYTHONPATH (run once with the base's, once
with the head's); the garbage collector off while it folds:

    PYTHONPATH=<checkout> python bench/states_fold.py [repeats]
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

from server.dialogue.domain import Domain
from server.dialogue.policies.featurization import ConversationStates, fold_states
from server.trackers.events import ActionExecuted, Event, UserUttered
from server.trackers.tracker import Tracker

DOMAIN = Domain.from_dict({"intents": ["greet"], "responses": {"utter_greet": [{"text": "Hi"}]}})


def _session(turns: int) -> list[Event]:
    said = {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}
    events: list[Event] = [ActionExecuted(action_name="action_listen")]
    for _ in range(turns):
        events += [
            UserUttered(text="/greet", parse_data=said),
            ActionExecuted(action_name="utter_greet"),
            ActionExecuted(action_name="action_listen"),
        ]
    return events


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    events = _session(33_333)
    times = []
    for _ in range(repeats):
        tracker = Tracker("long", DOMAIN.slot_defaults(), events)
        gc.collect()
        gc.disable()
        start = time.process_time()
        fold_states(tracker, DOMAIN)
        times.append(time.process_time() - start)
        gc.enable()
        assert len(ConversationStates(tracker, DOMAIN).states) == 66_668
    print(
        f"fold_states, {len(events):,} events: median {statistics.median(times) * 1000:.1f} ms "
        f"CPU (min {min(times) * 1000:.1f}, {repeats} runs)"
    )


if __name__ == "__main__":
    main()
