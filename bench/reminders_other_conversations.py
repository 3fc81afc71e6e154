"""Benchmark: what a user message costs the reminder scheduler while other conversations
hold pending reminders (a bot reminding each of its users daily).

    PYTHONPATH=<tree> python bench/reminders_other_conversations.py

`user_spoke` (asked at every user message with text) of a conversation without reminders,
with 10,000 and 100,000 other conversations holding one each; the best of 3 x 20 calls.
"""

from __future__ import annotations

import asyncio
import datetime
import timeit
from typing import Any

from server.dialogue.reminders import ReminderScheduler
from server.trackers.events import ReminderScheduled


async def main() -> None:
    scheduler = ReminderScheduler()
    tomorrow = (datetime.datetime.now() + datetime.timedelta(days=1)).isoformat()

    async def fire(*_: Any) -> None:
        return None

    for count in (10_000, 100_000):
        scheduler.cancel_all()
        for i in range(count):
            daily = ReminderScheduled(
                intent="remind", trigger_date_time=tomorrow, kill_on_user_message=False
            )
            scheduler.schedule(f"user-{i}", daily, fire)
        runs = timeit.repeat(lambda: scheduler.user_spoke("someone"), number=20, repeat=3)
        print(f"{count} other conversations: {min(runs) / 20 * 1000:.4f} ms per user message")
    scheduler.cancel_all()


if __name__ == "__main__":
    asyncio.run(main())
