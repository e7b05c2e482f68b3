"""A training process gives way to serving from its first instruction: SCHED_IDLE is set by its parent as it is
spawned, before it imports torch (its own lowering comes only after that import)."""
from __future__ import annotations

import asyncio
import os

from app.jobs.launcher import spawn


def test_a_training_process_is_idle_priority_as_soon_as_it_is_spawned():
    async def started() -> int:
        process = await spawn("--standby", str(os.getpid()))
        try:
            return os.sched_getscheduler(process.proc.pid)
        finally:
            await process.kill()

    assert asyncio.run(started()) == os.SCHED_IDLE
