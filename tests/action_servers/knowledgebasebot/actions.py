"""knowledgebasebot's custom action for rasa-sdk: queries an in-memory knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.knowledge_base.actions import ActionQueryKnowledgeBase
from rasa_sdk.knowledge_base.storage import InMemoryKnowledgeBase, KnowledgeBase

DATA = Path(__file__).with_name("knowledge_base_data.json")


def _hotel(obj: dict[str, Any]) -> str:
    return f"{obj['name']} ({obj['city']})"


class MyKnowledgeBaseAction(ActionQueryKnowledgeBase):
    """Loads the knowledge base on first use: Sanic pickles actions into its worker process,
    and a KnowledgeBase (holding lambdas) cannot be pickled."""

    knowledge_base: KnowledgeBase | None

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if self.knowledge_base is None:
            knowledge_base = InMemoryKnowledgeBase(str(DATA))
            knowledge_base.set_representation_function_of_object("hotel", _hotel)
            self.knowledge_base = knowledge_base
        return await super().run(dispatcher, tracker, domain)
