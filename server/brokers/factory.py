"""The event broker chosen by the `event_broker:` section of endpoints.yml."""

from __future__ import annotations

from typing import Any

from server.brokers.broker import EventBroker
from server.errors import InvalidConfig
from server.setting_values import copy_with_lines, warn_of_unknown_keys
from server.trackers.factory import SECTION_KEYS, reading_section, section_type

_RABBITMQ_TYPES = {None, "", "pika", "rabbitmq", "rabbit", "amqp"}
# Rasa's SQL and file brokers take no key they do not know: its start stops, a TypeError.
# A warning here, as for every other section, so that a file Rasa starts with starts.
_RASA_REFUSES = "Rasa stops on it"


def create_event_broker(
    config: dict[str, Any] | None, source: str = "endpoints.yml"
) -> EventBroker | None:
    """The broker for an `event_broker:` section of the endpoints file `source`; None when
    there is no section.

    As in Rasa, a section without `type` is RabbitMQ (`pika`).
    """
    if not config:
        return None
    with reading_section("event_broker", source):
        return _create_event_broker(copy_with_lines(config), f"{source}: event_broker")


def _create_event_broker(config: dict[str, Any], owner: str) -> EventBroker:
    kind = section_type(config)
    if kind in _RABBITMQ_TYPES:
        from server.brokers.rabbitmq import RabbitMQEventBroker

        warn_of_unknown_keys(config, RabbitMQEventBroker.SETTINGS, owner, quiet=SECTION_KEYS)
        return RabbitMQEventBroker(config)
    if kind == "sql":
        from server.brokers.sql import SqlEventBroker

        warn_of_unknown_keys(
            config, SqlEventBroker.SETTINGS, owner, quiet=SECTION_KEYS, rasa=_RASA_REFUSES
        )
        return SqlEventBroker(config)
    if kind == "file":
        from server.brokers.file import FileEventBroker

        warn_of_unknown_keys(
            config, FileEventBroker.SETTINGS, owner, quiet=SECTION_KEYS, rasa=_RASA_REFUSES
        )
        return FileEventBroker(config)
    raise InvalidConfig(
        f"event_broker type '{config['type']}' is not supported; use pika (RabbitMQ), sql or file"
    )
