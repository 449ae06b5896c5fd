"""Coalescing concurrent requests into one model call."""

from __future__ import annotations

import asyncio

import anyio

class MicroBatcher:
    """Coalesce concurrent calls into one call of `fn(list_of_items) -> list_of_results`, run in a
    worker thread. No timer: whatever queued up while the previous batch ran forms the next one,
    so a lone request is never delayed and a burst costs one model call per batch."""

    def __init__(self, fn, max_batch: int = 256) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._queue = None

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        fut = loop.create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                results = await anyio.to_thread.run_sync(self.fn, [b[0] for b in batch])
            except Exception as exc:  # each caller sees the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
