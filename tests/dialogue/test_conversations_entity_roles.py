"""Entity roles and groups in stories, as Rasa reads them: a role or group label influences
the dialogue only when the domain lists it under its entity's `roles` or `groups`."""

from __future__ import annotations

from typing import Any

import pytest

from server.dialogue.agent import Agent
from tests.dialogue.conversation_fixtures import make_agent, train_files

DOMAIN = """
version: "3.1"
intents: [travel, go]
entities:
- city
- place:
    roles: [from]
    groups: [one]
responses:
  utter_travel: [{text: travelling}]
  utter_from: [{text: leaving}]
  utter_one: [{text: first group}]
  utter_plain: [{text: somewhere}]
"""
STORIES = """
version: "3.1"
stories:
- story: travel to a city
  steps:
  - intent: travel
    entities:
    - city: Berlin
  - action: utter_travel
- story: go from a place
  steps:
  - intent: go
    entities:
    - place: Rome
      role: from
  - action: utter_from
- story: go with a place of group one
  steps:
  - intent: go
    entities:
    - place: Rome
      group: one
  - action: utter_one
- story: go to a place
  steps:
  - intent: go
    entities:
    - place
  - action: utter_plain
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    files = {
        "domain.yml": DOMAIN,
        "config.yml": "policies:\n- name: MemoizationPolicy\n- name: RulePolicy\n",
        "data/stories.yml": STORIES,
    }
    return make_agent(train_files(files, tmp_path_factory.mktemp("roles")))


async def said(agent: Agent, sender: str, intent: str, entity: dict[str, Any]) -> list[Any]:
    _, messages = await agent.trigger_intent(sender, intent, [entity])
    return [m.get("text") for m in messages]


async def test_a_role_the_domain_does_not_list_leaves_the_story_as_written(agent: Agent) -> None:
    # `city` lists no roles, so the extractor's role does not count, as in Rasa: the story
    # written without one is followed. Before: the role made the state unknown (no answer).
    city = {"entity": "city", "value": "Paris", "role": "destination"}
    assert await said(agent, "city-role", "travel", city) == ["travelling"]
    place = {"entity": "place", "value": "Oslo", "role": "to"}
    assert await said(agent, "undeclared-role", "go", place) == ["somewhere"]
    place = {"entity": "place", "value": "Oslo", "group": "two"}
    assert await said(agent, "undeclared-group", "go", place) == ["somewhere"]


async def test_a_listed_role_or_group_picks_its_story(agent: Agent) -> None:
    place = {"entity": "place", "value": "Oslo", "role": "from"}
    assert await said(agent, "from", "go", place) == ["leaving"]
    place = {"entity": "place", "value": "Oslo", "group": "one"}
    assert await said(agent, "group", "go", place) == ["first group"]
    assert await said(agent, "plain", "go", {"entity": "place", "value": "Oslo"}) == ["somewhere"]
