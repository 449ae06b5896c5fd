"""Coalescing concurrent requests into one model call, without letting one request fail another."""

from __future__ import annotations

import asyncio
import logging

import anyio

log = logging.getLogger("autopdm.serving.batching")


class MicroBatcher:
    """Coalesce concurrent calls into one call of `fn(list_of_items) -> list_of_results`, run in a
    worker thread. No timer: whatever queued up while the previous batch ran forms the next one,
    so a lone request is never delayed and a burst costs one model call per batch.

    Isolation: when `fn` raises for a group, each item of the group is run again alone, so the
    error reaches only the request that causes it (requests are validated before they get here;
    this is the guard for what validation did not foresee)."""

    def __init__(self, fn, max_batch: int = 256) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._queue: asyncio.Queue | None = None

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
                results = await anyio.to_thread.run_sync(self._isolated, [b[0] for b in batch])
            except BaseException:  # cancelled at shutdown: nobody may wait forever
                for _, fut in batch:
                    fut.cancel()
                raise
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _isolated(self, items: list) -> list:
        try:
            return self.fn(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning("a batch of %d failed (%s: %s); answering each request alone", len(items), type(exc).__name__, exc)
            return [self._isolated([it])[0] for it in items]
