"""Rocket.Chat's conversation ids (`<room id>:<user id>`), apart from the channel's module and
its API client: the conversations router reads a conversation's room without importing them."""

from __future__ import annotations


def conversation_id(room_id: str, user_id: str) -> str:
    """One conversation per user per room."""
    return f"{room_id}:{user_id}"


def room_of(conversation: str) -> str:
    """The room of a conversation id (a bare room id, as Rasa uses, is accepted too)."""
    return conversation.partition(":")[0]
