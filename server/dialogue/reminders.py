"""Reminders: ReminderScheduled fires its intent later, per conversation, unless cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from server.trackers.events import ReminderCancelled, ReminderScheduled

logger = logging.getLogger(__name__)

# (conversation, reminder, timestamps of the cancel_reminder events this process handled in
# the conversation while the reminder waited)
Fire = Callable[[str, ReminderScheduled, frozenset[float]], Awaitable[None]]


def _delay_seconds(date_time: str) -> float:
    when = datetime.fromisoformat(date_time)
    now = datetime.now(when.tzinfo) if when.tzinfo else datetime.now()
    return max(0.0, (when - now).total_seconds())


class ReminderScheduler:
    """In-process timers, one per (conversation, reminder name)."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], tuple[asyncio.TimerHandle, ReminderScheduled]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Per conversation with reminders waiting: the timestamps of the cancel_reminder
        # events handled here (applied, or recorded without their side effects). A stored
        # one keeps no filters (as in Rasa), so a firing reminder tells the cancels it was
        # spared from those another process handled.
        self._cancels_applied: dict[str, set[float]] = {}

    def schedule(self, sender_id: str, reminder: ReminderScheduled, fire: Fire) -> None:
        try:
            delay = _delay_seconds(reminder.trigger_date_time)
        except ValueError:
            logger.error("reminder '%s' has an invalid date_time", reminder.name)
            return
        key = (sender_id, reminder.name)
        self._drop(key)
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, self._start, key, fire)
        self._jobs[key] = (handle, reminder)

    def _start(self, key: tuple[str, str], fire: Fire) -> None:
        job = self._jobs.pop(key, None)
        if job is None:
            return
        sender_id = key[0]
        applied = frozenset(self._cancels_applied.get(sender_id, ()))
        self._forget_cancels_when_idle(sender_id)
        task = asyncio.ensure_future(self._run(sender_id, job[1], applied, fire))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run(
        sender_id: str, reminder: ReminderScheduled, applied: frozenset[float], fire: Fire
    ) -> None:
        try:
            await fire(sender_id, reminder, applied)
        except Exception:  # a reminder must never take the server down
            logger.exception("reminder '%s' for %s failed", reminder.name, sender_id)

    def cancel(self, sender_id: str, cancel: ReminderCancelled) -> None:
        """Drops the conversation's reminders that `cancel` names. As in Rasa, a filter that
        is empty (null, `""`, `[]`, `{}`) narrows nothing."""
        for key, (_, reminder) in list(self._jobs.items()):
            if key[0] != sender_id:
                continue
            if cancel.name and reminder.name != cancel.name:
                continue
            if cancel.intent and reminder.intent != cancel.intent:
                continue
            if cancel.entities and reminder.entities != cancel.entities:
                continue
            self._drop(key)
        self.known(sender_id, cancel)

    def known(self, sender_id: str, cancel: ReminderCancelled) -> None:
        """Notes that `cancel`, in the conversation's tracker, was handled here: applied, or
        only recorded (posted without its side effects). The reminders it spared fire."""
        if self.pending(sender_id):
            self._cancels_applied.setdefault(sender_id, set()).add(cancel.timestamp)

    def user_spoke(self, sender_id: str) -> None:
        """A user message kills the reminders scheduled with kill_on_user_msg."""
        if not self._jobs:  # every turn asks: no copy of an empty list of jobs
            return
        for key, (_, reminder) in list(self._jobs.items()):
            if key[0] == sender_id and reminder.kill_on_user_message:
                self._drop(key)

    def cancel_all(self, sender_id: str | None = None) -> list[tuple[str, str]]:
        """Drops the reminders of `sender_id` (of every conversation when None); returns
        the (conversation, reminder name) of each one dropped."""
        dropped = [key for key in self._jobs if sender_id is None or key[0] == sender_id]
        for key in dropped:
            self._drop(key)
        return dropped

    def pending(self, sender_id: str) -> list[str]:
        return [name for (sid, name) in self._jobs if sid == sender_id]

    def _drop(self, key: tuple[str, str]) -> None:
        job = self._jobs.pop(key, None)
        if job is not None:
            job[0].cancel()
            self._forget_cancels_when_idle(key[0])

    def _forget_cancels_when_idle(self, sender_id: str) -> None:
        if sender_id in self._cancels_applied and not self.pending(sender_id):
            del self._cancels_applied[sender_id]
