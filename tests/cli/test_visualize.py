"""`botserver visualize`: the stories drawn as a graph, in a page that needs no network."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from server.dialogue.story_steps import TrainingStory
from server.trackers.events import ActionExecuted, Event, UserUttered
from server.training.story_graph import build_story_graph
from tests.shared_data import MOODBOT

CHROMIUM = "/usr/bin/chromium"


def _moodbot(tmp_path: Path) -> Path:
    root = tmp_path / "moodbot"
    shutil.copytree(MOODBOT, root)
    return root


def _nodes(page: str) -> dict[str, str]:
    """Node id -> label, as drawn in the page."""
    found = re.findall(
        r'<g class="node \w+" id="node-(\d+)"><title>.*?</title>.*?>([^<>]*)</text>', page
    )
    return dict(found)


def _edges(page: str, nodes: dict[str, str]) -> list[tuple[str, str]]:
    pairs = re.findall(r'<path class="edge" data-from="(\d+)" data-to="(\d+)"', page)
    return [(nodes[a], nodes[b]) for a, b in pairs]


def test_moodbot_page_shows_each_story_in_order_and_merges_the_shared_start(
    run_cli, tmp_path: Path
) -> None:
    bot = _moodbot(tmp_path)
    result = run_cli("visualize", cwd=bot)
    assert result.code == 0, result.err
    page = (bot / "graph.html").read_text()
    nodes = _nodes(page)
    edges = _edges(page, nodes)
    # The three stories start alike: greet and utter_greet are drawn once.
    assert list(nodes.values()).count("greet") == 1
    assert list(nodes.values()).count("utter_greet") == 1
    for path in (
        ["START", "greet", "utter_greet", "mood_great", "utter_happy", "END"],
        ["START", "greet", "utter_greet", "mood_unhappy", "utter_cheer_up",
         "utter_did_that_help", "affirm", "utter_happy", "END"],
        ["START", "greet", "utter_greet", "mood_unhappy", "utter_cheer_up",
         "utter_did_that_help", "deny", "utter_goodbye", "END"],
    ):  # fmt: skip
        for step in zip(path, path[1:], strict=False):
            assert step in edges, f"{step} missing from {edges}"
    # Nothing is fetched: no script at all, and no stylesheet or link elsewhere.
    assert "<script" not in page
    assert not re.search(r"(src|href)\s*=|@import|https?://", page)


def test_max_history_decides_what_merges(tmp_path: Path) -> None:
    def story(*steps: str) -> TrainingStory:
        events: list[Event] = [
            UserUttered(parse_data={"intent": {"name": s[1:]}})
            if s.startswith("/")
            else ActionExecuted(action_name=s)
            for s in steps
        ]
        return TrainingStory("s", False, events)

    stories = [story("/greet", "utter_greet", "/bye", "utter_bye"),
               story("/hello", "utter_greet", "/bye", "utter_bye")]  # fmt: skip
    labels = [n.label for n in build_story_graph(stories, 1).nodes]
    assert labels.count("utter_bye") == 1  # max_history 1: the same step is the same node
    labels = [n.label for n in build_story_graph(stories, 2).nodes]
    assert labels.count("utter_greet") == 2 and labels.count("/bye") == 0
    assert labels.count("bye") == 1  # (utter_greet, bye) is the same window in both
    labels = [n.label for n in build_story_graph(stories, 3).nodes]
    assert labels.count("bye") == 2


def test_nlu_flag_shows_example_messages(run_cli, tmp_path: Path) -> None:
    bot = _moodbot(tmp_path)
    result = run_cli("visualize", "-u", "data/nlu.yml", "--out", "out/mood.html", cwd=bot)
    assert result.code == 0, result.err
    labels = list(_nodes((bot / "out" / "mood.html").read_text()).values())
    assert "greet" not in labels
    assert "hey" in labels  # moodbot's first greet example
    assert "utter_greet" in labels


def test_dot_output(run_cli, tmp_path: Path) -> None:
    bot = _moodbot(tmp_path)
    result = run_cli("visualize", "--out", "graph.dot", "--max-history", "3", cwd=bot)
    assert result.code == 0, result.err
    dot = (bot / "graph.dot").read_text()
    assert dot.startswith("digraph story_graph {")
    ids = dict(re.findall(r'^  (\d+) \[label="([^"]*)"', dot, re.M))
    edges = [(ids[a], ids[b]) for a, b in re.findall(r"^  (\d+) -> (\d+);", dot, re.M)]
    assert ("START", "greet") in edges and ("deny", "utter_goodbye") in edges


def test_broken_stories_name_file_and_line(run_cli, tmp_path: Path) -> None:
    bot = _moodbot(tmp_path)
    stories = bot / "data" / "stories.yml"
    stories.write_text(stories.read_text() + "\n- story: broken\n  steps:\n  - intnt: greet\n")
    result = run_cli("visualize", cwd=bot)
    assert result.code == 1
    assert re.search(r"error: data/stories\.yml:\d+: ", result.err), result.err
    assert "Traceback" not in result.err
    assert not (bot / "graph.html").exists()


def test_out_in_a_missing_directory_under_a_file_fails(run_cli, tmp_path: Path) -> None:
    bot = _moodbot(tmp_path)
    result = run_cli("visualize", "--out", "domain.yml/graph.html", cwd=bot)
    assert result.code == 1
    assert "error: --out" in result.err


def test_page_renders_in_chromium_without_network(run_cli, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test needs chromium at {CHROMIUM}")
        pytest.skip(f"the browser test needs chromium at {CHROMIUM}")
    playwright = pytest.importorskip("playwright.sync_api")
    bot = _moodbot(tmp_path)
    assert run_cli("visualize", cwd=bot).code == 0
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((bot / "graph.html").as_uri())
            box = page.locator("#node-1 rect").bounding_box()
            label = page.locator("#node-1 text").text_content()
            shot = page.screenshot()
            page.goto("about:blank")
            blank = page.screenshot()
        finally:
            browser.close()
    assert requests == [(bot / "graph.html").as_uri()]  # the page alone, nothing else
    assert label == "greet"
    assert box is not None and box["width"] > 20 and box["height"] > 10
    assert shot.startswith(b"\x89PNG") and shot != blank
    assert len(shot) > 3 * len(blank)  # drawn boxes and text, not an empty page


def test_a_loop_in_the_stories_is_drawn_with_its_edge_back(tmp_path: Path) -> None:
    from server.training.graph_render import graph_html

    events: list[Event] = [
        UserUttered(parse_data={"intent": {"name": "ask"}}),
        ActionExecuted(action_name="utter_offer"),
        UserUttered(parse_data={"intent": {"name": "deny"}}),
        ActionExecuted(action_name="utter_offer"),
        UserUttered(parse_data={"intent": {"name": "deny"}}),
        ActionExecuted(action_name="utter_offer"),
    ]
    graph = build_story_graph([TrainingStory("loop", False, events)], 2)
    page = graph_html(graph)
    nodes = _nodes(page)
    edges = _edges(page, nodes)
    assert ("utter_offer", "deny") in edges and ("deny", "utter_offer") in edges
    assert list(nodes.values()).count("utter_offer") == 2  # (ask, offer) and (deny, offer)
    assert len(re.findall(r'd="M[\d.]+,[\d.]+ Q', page)) == 1  # the way back, bent aside


def test_rules_alone_are_not_drawn_and_say_so(run_cli, tmp_path: Path) -> None:
    bot = _moodbot(tmp_path)
    (bot / "data" / "stories.yml").unlink()
    result = run_cli("visualize", cwd=bot)
    assert result.code == 0
    assert "No stories in data" in result.err and "rules are not drawn" in result.err
    assert list(_nodes((bot / "graph.html").read_text()).values()) == ["START", "END"]


def test_a_big_deep_graph_is_laid_out_within_the_bend_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    from server.training import graph_render

    rng = random.Random(1)
    stories = []
    for i in range(100):
        events: list[Event] = []
        for _ in range(rng.randint(2, 12)):
            events.append(UserUttered(parse_data={"intent": {"name": f"i{rng.randint(0, 30)}"}}))
            events.append(ActionExecuted(action_name=f"utter_{rng.randint(0, 40)}"))
        stories.append(TrainingStory(str(i), False, events))
    graph = build_story_graph(stories, 2)
    monkeypatch.setattr(graph_render, "MAX_BENDS", 500, raising=False)
    drawn = graph_render.layout(graph)
    assert len(drawn.x) - len(graph.nodes) <= 500  # bends, past which edges go straight
    assert len(drawn.paths) == len(graph.edges)


def test_retrieval_intents_and_markup_in_messages(tmp_path: Path) -> None:
    from server.nlu.training_data import Example
    from server.training.graph_render import graph_html
    from server.training.story_graph import example_messages

    messages = example_messages(
        [Example("<b>what</b> is your <script>name</script>?", "faq/ask_name")]
    )
    events: list[Event] = [
        UserUttered(parse_data={"intent": {"name": "faq"}}),
        ActionExecuted(action_name="utter_faq"),
    ]
    page = graph_html(build_story_graph([TrainingStory("s", False, events)], 2, messages))
    assert "<script" not in page and "<b>" not in page
    assert "&lt;b&gt;what&lt;/b&gt; is your &lt;script&gt;name&lt;/script&gt;?" in page
