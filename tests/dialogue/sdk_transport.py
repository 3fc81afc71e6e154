"""rasa-sdk actions served in-process: an httpx transport that answers the action server's
webhook with rasa-sdk's own executor, for tests that need custom actions without a process."""

from __future__ import annotations

import json

import httpx
from rasa_sdk import Action
from rasa_sdk.executor import ActionExecutor
from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

WEBHOOK = "http://actions.test/webhook"


class SdkTransport(httpx.AsyncBaseTransport):
    """Runs the registered rasa-sdk actions, answering as rasa-sdk's /webhook does."""

    def __init__(self, *actions: type[Action], domain_cache: bool = True) -> None:
        """`domain_cache=False` answers as rasa-sdk before 3.7, the one Rasa 3.6 projects
        run: a call without the domain runs the action on an empty one (3.7 and later
        answer 449 and wait for the domain)."""
        self.domain_cache = domain_cache
        self.executor = ActionExecutor()
        for action in actions:
            self.executor.register_action(action)
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = json.loads(await request.aread())
        self.calls.append(call["next_action"])
        if not self.domain_cache and not call.get("domain"):
            self.executor.domain, self.executor.domain_digest = {}, None
            call = {**call, "domain": {}}
        try:
            result = await self.executor.run(call)
        except ActionExecutionRejection as e:
            return httpx.Response(400, json={"error": e.message, "action_name": e.action_name})
        except ActionNotFoundException as e:
            return httpx.Response(404, json={"error": e.message, "action_name": e.action_name})
        return httpx.Response(200, json=result.model_dump() if result else None)
