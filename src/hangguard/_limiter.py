"""A FIFO limiter for the task group's ``limit`` and serial mode."""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Limiter"]


class Limiter:
    """A FIFO semaphore: with ``limit=1`` (serial mode) tasks run in submit order."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            elif fut in self._waiters:
                # Not yet skipped by release() (which drops cancelled waiters itself).
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
