"""bench/nlu_snips_blocks.py: the nineteenth round's gazetteer and carrier words."""

import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.nlu_snips_blocks import carrier_words, gazetteer_features  # noqa: E402


def test_the_longest_training_value_wins_over_the_shorter_ones_inside_it() -> None:
    known: dict[tuple[str, ...], collections.Counter[str]] = {
        ("fear", "chamber"): collections.Counter({"movie_name": 3, "object_name": 1}),
        ("fear",): collections.Counter({"object_name": 2}),
        ("chamber",): collections.Counter({"object_name": 2}),
    }
    found = gazetteer_features("i want to see fear chamber".split(), known, longest=2)
    assert found == {"gaz:movie_name": 0.75, "gaz:object_name": 0.25}


def test_a_value_matches_whole_words_only() -> None:
    known: dict[tuple[str, ...], collections.Counter[str]] = {
        ("heat",): collections.Counter({"movie_name": 1})
    }
    assert gazetteer_features("find heatwave".split(), known, longest=1) == {}


def test_the_carrier_keeps_the_words_around_each_entity_span() -> None:
    text = "i want to see fear chamber at the grand"
    entities = [
        {"start": 14, "end": 26, "entity": "movie_name"},
        {"start": 30, "end": 39, "entity": "location_name"},
    ]
    assert carrier_words(text, entities) == ["^", "i", "want", "to", "see", "_", "at", "_", "$"]
