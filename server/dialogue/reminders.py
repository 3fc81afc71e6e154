"""Reminders: ReminderScheduled fires its intent later, per conversation, unless cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime

from server.outages import RepeatsCounted
from server.setting_values import env_whole_number
from server.trackers.events import Event, ReminderCancelled, ReminderScheduled

logger = logging.getLogger(__name__)

# The pending reminders a conversation may hold in a process. Rasa sets no bound: a custom
# action, or a client posting `reminder` events, that names each reminder anew (a reminder
# of a pending one's name replaces it) held one timer more each time, without end.
MAX_REMINDERS_ENV = "BOTSERVER_MAX_REMINDERS_PER_CONVERSATION"
MAX_REMINDERS_PER_CONVERSATION = 100
# A flood of refused reminders is one line a conversation a minute, and a count.
_REFUSED = RepeatsCounted(logger, 60.0)
# How late a reminder may be set and still fire: Rasa's scheduler (APScheduler's default
# `misfire_grace_time`) skips a job more than a second late. Fired at once instead, a
# reminder set in the past by the action its intent runs ran that action again without end.
MOST_LATE_SECONDS = 1.0
_LATE = RepeatsCounted(logger, 60.0)  # (as for refused ones)


def max_reminders_setting() -> int:
    """MAX_REMINDERS_ENV's value: a whole number, 1 or more (MAX_REMINDERS_PER_CONVERSATION
    when unset)."""
    return env_whole_number(MAX_REMINDERS_ENV, MAX_REMINDERS_PER_CONVERSATION, "reminders")


# (conversation, reminder, the output channel named in the turn that set it, if any)
Fire = Callable[[str, ReminderScheduled, str | None], Awaitable[None]]

# The metadata a process writes on the reminder events it applies (not on those only recorded,
# posted without their side effects): the stored events then tell every process (worker, host)
# which reminder replaced which and what a cancel named. A stored `cancel_reminder` keeps no
# filters of its own, as in Rasa; they are kept here.
SCHEDULED = "reminder_scheduled"
CANCELLED = "reminders_cancelled"


def mark_applied(event: ReminderScheduled | ReminderCancelled) -> None:
    """Writes into `event`'s metadata that it was applied (and a cancel's filters)."""
    if isinstance(event, ReminderScheduled):
        event.metadata[SCHEDULED] = True
    else:
        filters = {"name": event.name, "intent": event.intent, "entities": event.entities}
        event.metadata[CANCELLED] = filters


def mark_recorded(event: ReminderScheduled | ReminderCancelled) -> None:
    """Takes out of `event`'s metadata any mark of having been applied: one posted without its
    side effects is only recorded, whatever marks it came with (copied from another
    conversation's stored events, say)."""
    if event.metadata:
        event.metadata.pop(SCHEDULED, None)
        event.metadata.pop(CANCELLED, None)


class Admission:
    """What a ReminderScheduler will do with the reminders posted to a conversation, read
    from a copy of its pending ones taken on the event loop (a bulk POST's are marked in a
    thread): a reminder of a new name past the cap is refused (see `refused`), one whose
    time cannot be read too, and a cancel drops those it names."""

    def __init__(self, pending: dict[str, ReminderScheduled], cap: int) -> None:
        self.pending = pending
        self.cap = cap
        self.refused: list[ReminderScheduled] = []  # past the cap, to be logged on the loop

    def admits(self, reminder: ReminderScheduled) -> bool:
        refusal = _refusal(reminder, self.pending, self.cap)
        if refusal == _PAST_THE_CAP:
            self.refused.append(reminder)
        if refusal is not None:
            return False
        self.pending[reminder.name] = reminder
        return True

    def cancel(self, cancel: ReminderCancelled) -> None:
        for name, reminder in list(self.pending.items()):
            if cancels(cancel, reminder):
                del self.pending[name]


def mark_posted(events: list[Event], applied: bool, admission: Admission | None = None) -> None:
    """Marks the reminder events among `events` posted to a conversation: `applied` (posted
    with their side effects) or only recorded (see `mark_applied`, `mark_recorded`). With an
    `admission`, a reminder it refuses is marked only recorded: marked scheduled, another
    process would read it as the replacement of its pending reminder of that name."""
    if not applied:
        for event in events:
            if isinstance(event, _REMINDER_EVENTS):
                mark_recorded(event)
        return
    for event in events:
        if isinstance(event, ReminderScheduled):
            if admission is None or admission.admits(event):
                mark_applied(event)
            else:
                mark_recorded(event)
        elif isinstance(event, ReminderCancelled):
            mark_applied(event)
            if admission is not None:
                admission.cancel(event)


_REMINDER_EVENTS = (ReminderScheduled, ReminderCancelled)  # (a tuple: isinstance's fastest)


def was_scheduled(event: ReminderScheduled) -> bool:
    """Whether a process scheduled the stored `event` (else it was only recorded)."""
    return event.metadata.get(SCHEDULED) is True


def applied_cancel(event: ReminderCancelled) -> ReminderCancelled | None:
    """The stored `event` as the process that applied it read it, with its filters; None for
    one only recorded (it cancels nothing, as in Rasa). The filters are taken as they were
    (`cancels` only compares them): a name that is a number names that reminder alone, as
    in the process that applied it; read as no name, it cancelled every reminder."""
    filters = event.metadata.get(CANCELLED)
    if not isinstance(filters, dict):
        return None
    return ReminderCancelled(
        name=filters.get("name"), intent=filters.get("intent"), entities=filters.get("entities")
    )


def cancels(cancel: ReminderCancelled, reminder: ReminderScheduled) -> bool:
    """Whether `cancel` names `reminder`. As in Rasa, a filter that is empty (null, `""`,
    `[]`, `{}`) narrows nothing."""
    return (
        (not cancel.name or reminder.name == cancel.name)
        and (not cancel.intent or reminder.intent == cancel.intent)
        and (not cancel.entities or reminder.entities == cancel.entities)
    )


# Why `_refusal` refuses a reminder.
_INVALID_TIME = "invalid date_time"
_PAST_THE_CAP = "past the cap"


def _refusal(reminder: ReminderScheduled, pending: Collection[str], cap: int) -> str | None:
    """Why `reminder` is not scheduled, None when it is: its time cannot be read (logged), or
    it has a new name and its conversation holds `cap` (its `pending` names) already. The
    one rule of `schedule` and of `Admission`."""
    try:
        _seconds_until(reminder.trigger_date_time)
    except ValueError:
        logger.error("reminder '%s' has an invalid date_time", reminder.name)
        return _INVALID_TIME
    if reminder.name not in pending and len(pending) >= cap:
        return _PAST_THE_CAP
    return None


def _seconds_until(date_time: str) -> float:
    """The seconds from now to `date_time` (ISO 8601): less than 0 once it has passed."""
    when = datetime.fromisoformat(date_time)
    if when.tzinfo is None:
        # The server's local time, with the offset of that day, as Rasa's scheduler reads it:
        # today's would be an hour off past a change to or from summer time.
        try:
            when = when.astimezone()
        except (ValueError, OverflowError, OSError):  # the calendar's first or last day
            return (when - datetime.now()).total_seconds()
    return (when - datetime.now(UTC)).total_seconds()


# A reminder's timer, the reminder, and the output channel named when it was set.
_Job = tuple[asyncio.TimerHandle, ReminderScheduled, str | None]


class ReminderScheduler:
    """In-process timers, one per (conversation, reminder name)."""

    def __init__(self, max_per_conversation: int | None = None) -> None:
        # A reminder of a new name past this many pending in its conversation is refused.
        self.max_per_conversation = max_per_conversation or max_reminders_setting()
        # By conversation, then reminder name: a conversation's own are found without going
        # through every conversation's (a user message asks for them). With each reminder,
        # the output channel named in the turn that set it (None: the conversation's own).
        self._jobs: dict[str, dict[str, _Job]] = {}
        # The turns of reminders whose timers ran out: (conversation, reminder name) by task.
        self._tasks: dict[asyncio.Task[None], tuple[str, str]] = {}

    def schedule(
        self,
        sender_id: str,
        reminder: ReminderScheduled,
        fire: Fire,
        output_channel: str | None = None,
    ) -> None:
        """Times `reminder` (replacing the conversation's reminder of its name) and marks it
        scheduled (see `mark_applied`); its messages go to `output_channel` when named. One of
        a new name is refused, with a warning, when the conversation holds
        `max_per_conversation` already. One whose time passed more than MOST_LATE_SECONDS
        ago does not fire, with a warning, as in Rasa; it still replaces the pending one of
        its name, as Rasa's scheduler replaces a job before it finds it late."""
        refusal = _refusal(reminder, self._jobs.get(sender_id, {}), self.max_per_conversation)
        if refusal is not None:
            # Stored as only recorded, whatever marks it came with (an action's copy of a
            # stored event): marked scheduled, another process would read it as the
            # replacement of its pending reminder of that name.
            mark_recorded(reminder)
            if refusal == _PAST_THE_CAP:
                self.log_refused(sender_id, [reminder])
            return
        delay = _seconds_until(reminder.trigger_date_time)
        mark_applied(reminder)
        key = (sender_id, reminder.name)
        self._drop(key)
        if delay < -MOST_LATE_SECONDS:
            _LATE.log(
                f"late reminders of conversation {sender_id}",
                "reminder '%s' of conversation %s does not fire: its date_time (%s) passed "
                "%.1f s ago, and a reminder more than %s s late is skipped, as in Rasa",
                reminder.name,
                sender_id,
                reminder.trigger_date_time,
                -delay,
                MOST_LATE_SECONDS,
            )
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, delay), self._start, key, fire)
        self._jobs.setdefault(sender_id, {})[reminder.name] = (handle, reminder, output_channel)

    def admission(self, sender_id: str) -> Admission:
        """What `schedule` will do with the reminders posted to `sender_id` now (see
        `mark_posted`); read on the event loop, used in any thread."""
        pending = {name: job[1] for name, job in self._jobs.get(sender_id, {}).items()}
        return Admission(pending, self.max_per_conversation)

    def log_refused(self, sender_id: str, refused: list[ReminderScheduled]) -> None:
        """Warns of reminders refused past the cap: one line a conversation a minute, and a
        count of the others."""
        for reminder in refused:
            _REFUSED.log(
                f"reminders of conversation {sender_id} refused",
                "reminder '%s' of conversation %s is not scheduled: the conversation has %d "
                "reminders pending, the most %s allows. Cancel some, reuse their names (a "
                "reminder replaces the pending one of its name) or raise the setting",
                reminder.name,
                sender_id,
                self.max_per_conversation,
                MAX_REMINDERS_ENV,
            )

    def _start(self, key: tuple[str, str], fire: Fire) -> None:
        job = self._pop(key)
        if job is None:
            return
        _, reminder, output_channel = job
        task = asyncio.ensure_future(self._run(key[0], reminder, output_channel, fire))
        self._tasks[task] = key
        task.add_done_callback(self._tasks.pop)

    async def _run(
        self, sender_id: str, reminder: ReminderScheduled, output_channel: str | None, fire: Fire
    ) -> None:
        try:
            await fire(sender_id, reminder, output_channel)
        except Exception:  # a reminder must never take the server down
            logger.exception("reminder '%s' for %s failed", reminder.name, sender_id)

    def cancel(self, sender_id: str, cancel: ReminderCancelled) -> None:
        """Drops the conversation's reminders that `cancel` names (see `cancels`), and marks
        it applied with its filters (see `mark_applied`): a reminder whose timer runs out in
        another process reads them from the stored event."""
        mark_applied(cancel)
        for name, (_, reminder, _) in list(self._jobs.get(sender_id, {}).items()):
            if cancels(cancel, reminder):
                self._drop((sender_id, name))

    def user_spoke(self, sender_id: str) -> None:
        """A user message kills the reminders scheduled with kill_on_user_msg."""
        jobs = self._jobs.get(sender_id)
        if not jobs:  # every turn asks: no copy of an empty list of jobs
            return
        for name, (_, reminder, _) in list(jobs.items()):
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

    def _pop(self, key: tuple[str, str]) -> _Job | None:
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
