"""Reminders: ReminderScheduled fires its intent later, per conversation, unless cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from server.trackers.events import ReminderCancelled, ReminderScheduled

logger = logging.getLogger(__name__)

# The cancel_reminder events this process handled in a conversation while it had reminders
# waiting or firing, by timestamp: the cancel as applied, or None when only recorded (posted
# without its side effects, it cancels nothing). Read when a reminder's turn begins, so it
# knows the ones handled while it waited for the conversation's lock too.
CancelsKnown = Mapping[float, ReminderCancelled | None]
# (conversation, reminder, the conversation's CancelsKnown)
Fire = Callable[[str, ReminderScheduled, CancelsKnown], Awaitable[None]]


def cancels(cancel: ReminderCancelled, reminder: ReminderScheduled) -> bool:
    """Whether `cancel` names `reminder`. As in Rasa, a filter that is empty (null, `""`,
    `[]`, `{}`) narrows nothing."""
    return (
        (not cancel.name or reminder.name == cancel.name)
        and (not cancel.intent or reminder.intent == cancel.intent)
        and (not cancel.entities or reminder.entities == cancel.entities)
    )


def _delay_seconds(date_time: str) -> float:
    when = datetime.fromisoformat(date_time)
    now = datetime.now(when.tzinfo) if when.tzinfo else datetime.now()
    return max(0.0, (when - now).total_seconds())


class ReminderScheduler:
    """In-process timers, one per (conversation, reminder name)."""

    def __init__(self) -> None:
        # By conversation, then reminder name: a conversation's own are found without going
        # through every conversation's (a user message asks for them).
        self._jobs: dict[str, dict[str, tuple[asyncio.TimerHandle, ReminderScheduled]]] = {}
        # The turns of reminders whose timers ran out: (conversation, reminder name) by task.
        self._tasks: dict[asyncio.Task[None], tuple[str, str]] = {}
        # Per conversation with reminders waiting or firing: the cancel_reminder events
        # handled here (CancelsKnown). A stored one keeps no filters (as in Rasa), so a
        # firing reminder tells the cancels handled here from those another process handled.
        self._cancels_known: dict[str, dict[float, ReminderCancelled | None]] = {}
        # Per conversation: its reminders whose timers ran out and whose turns have not ended.
        self._firing: dict[str, int] = {}

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
        self._jobs.setdefault(sender_id, {})[reminder.name] = (handle, reminder)

    def _start(self, key: tuple[str, str], fire: Fire) -> None:
        job = self._pop(key)
        if job is None:
            return
        sender_id = key[0]
        self._firing[sender_id] = self._firing.get(sender_id, 0) + 1
        known = self._cancels_known.setdefault(sender_id, {})
        task = asyncio.ensure_future(self._run(sender_id, job[1], known, fire))
        self._tasks[task] = key
        task.add_done_callback(self._tasks.pop)

    async def _run(
        self, sender_id: str, reminder: ReminderScheduled, known: CancelsKnown, fire: Fire
    ) -> None:
        try:
            await fire(sender_id, reminder, known)
        except Exception:  # a reminder must never take the server down
            logger.exception("reminder '%s' for %s failed", reminder.name, sender_id)
        finally:
            left = self._firing.pop(sender_id) - 1
            if left:
                self._firing[sender_id] = left
            self._forget_cancels_when_idle(sender_id)

    def cancel(self, sender_id: str, cancel: ReminderCancelled) -> None:
        """Drops the conversation's reminders that `cancel` names (see `cancels`)."""
        for name, (_, reminder) in list(self._jobs.get(sender_id, {}).items()):
            if cancels(cancel, reminder):
                self._drop((sender_id, name))
        self.known(sender_id, cancel, applied=True)

    def known(self, sender_id: str, cancel: ReminderCancelled, applied: bool = False) -> None:
        """Notes that `cancel`, in the conversation's tracker, was handled here: `applied`, or
        only recorded (posted without its side effects, it cancels nothing)."""
        if self.watching(sender_id):
            known = self._cancels_known.setdefault(sender_id, {})
            known[cancel.timestamp] = cancel if applied else None

    def watching(self, sender_id: str) -> bool:
        """Whether the conversation has reminders waiting or firing here."""
        return sender_id in self._firing or sender_id in self._jobs

    def user_spoke(self, sender_id: str) -> None:
        """A user message kills the reminders scheduled with kill_on_user_msg."""
        jobs = self._jobs.get(sender_id)
        if not jobs:  # every turn asks: no copy of an empty list of jobs
            return
        for name, (_, reminder) in list(jobs.items()):
            if reminder.kill_on_user_message:
                self._drop((sender_id, name))

    def cancel_all(self, sender_id: str | None = None) -> list[tuple[str, str]]:
        """Drops the reminders of `sender_id` (of every conversation when None); returns
        the (conversation, reminder name) of each one dropped."""
        dropped = [
            (sid, name)
            for sid, jobs in self._jobs.items()
            if sender_id is None or sid == sender_id
            for name in jobs
        ]
        for key in dropped:
            self._drop(key)
        return dropped

    async def stop(self) -> list[tuple[str, str]]:
        """Drops every reminder, as the process stops: those waiting for their time, and those
        due whose turns wait for their conversation or run (cancelled, before the stores they
        use close); returns the (conversation, reminder name) of each one dropped."""
        dropped = self.cancel_all()
        due = list(self._tasks.items())
        for task, _ in due:
            task.cancel()
        await asyncio.gather(*(task for task, _ in due), return_exceptions=True)
        return dropped + [key for _, key in due]

    def pending(self, sender_id: str) -> list[str]:
        return list(self._jobs.get(sender_id, ()))

    def _pop(self, key: tuple[str, str]) -> tuple[asyncio.TimerHandle, ReminderScheduled] | None:
        jobs = self._jobs.get(key[0])
        if jobs is None:
            return None
        job = jobs.pop(key[1], None)
        if not jobs:
            del self._jobs[key[0]]
        return job

    def _drop(self, key: tuple[str, str]) -> None:
        job = self._pop(key)
        if job is not None:
            job[0].cancel()
            self._forget_cancels_when_idle(key[0])

    def _forget_cancels_when_idle(self, sender_id: str) -> None:
        if sender_id in self._cancels_known and not self.watching(sender_id):
            del self._cancels_known[sender_id]
