# Custom actions: Python code the bot runs through a rasa-sdk action server.
#
# botserver never imports this folder. Run it beside the bot with rasa-sdk
# (`pip install rasa-sdk`), from the project folder:
#
#     python -m rasa_sdk --actions actions
#
# and uncomment `action_endpoint` in endpoints.yml (http://localhost:5055/webhook).
# Name each action under `actions:` in domain.yml, then use it in stories and rules.
# Guide: https://rasa.com/docs/rasa/custom-actions
#
# An example action that answers "Hello World!":
#
# from typing import Any
#
# from rasa_sdk import Action, Tracker
# from rasa_sdk.executor import CollectingDispatcher
#
#
# class ActionHelloWorld(Action):
#     def name(self) -> str:
#         return "action_hello_world"
#
#     def run(
#         self,
#         dispatcher: CollectingDispatcher,
#         tracker: Tracker,
#         domain: dict[str, Any],
#     ) -> list[dict[str, Any]]:
#         dispatcher.utter_message(text="Hello World!")
#         return []
