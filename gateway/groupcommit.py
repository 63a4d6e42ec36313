"""Group commit: many concurrent requests, one database transaction.

Each request hands its item to the queue and awaits its own outcome. One writer at a time takes
everything queued so far and writes it in one transaction on a worker thread; what arrives
meanwhile waits for the next. Under load a commit carries dozens of requests, so the database sees
one writer with large batches instead of many writers contending for its lock (SQLite) or for
round trips (PostgreSQL). Alone, a request is a batch of one and waits for nothing. A request is
answered only after the transaction holding it has committed.

Purchases and reward orders are written set-based (purchases.ingest, rewards.order_many); other
requests on a hot path (exchanges, redemptions) are grouped by `each_in_savepoint`: each is a
function of the session, run in a savepoint of the shared transaction, so one refused rolls back
alone and its error goes to its own request. On SQLite this also keeps the writer lock's queue
short, so the chain sender's own writes are not stuck behind hundreds of requests.

`FreshRead` does the same for a chain read every request must make (the brand's rate).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from .db import transaction

Item = TypeVar("Item")
Result = TypeVar("Result")
log = logging.getLogger("gateway")


class GroupCommit(Generic[Item, Result]):
    def __init__(self, write: Callable[[list[Item]], list[Result]], max_batch: int = 500):
        self.write = write  # items -> one result per item, in one transaction
        self.max_batch = max_batch
        # A queue and its writer per event loop (a server has one; test clients may start one per
        # request): a future is only ever resolved on its own loop. Both go when the queue is empty.
        self._queues: dict[asyncio.AbstractEventLoop, list[tuple[Item, asyncio.Future]]] = {}
        self._writers: set[asyncio.Task] = set()  # the event loop keeps only weak references to tasks

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if loop not in self._queues:
            self._queues[loop] = []
            writer = loop.create_task(self._drain(loop))
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        self._queues[loop].append((item, future))
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self._queues[loop]
        try:
            await self._write_all(queue)
        finally:
            # Same step as the last emptiness check: no item can be queued in between.
            del self._queues[loop]

    async def _write_all(self, queue: list[tuple[Item, asyncio.Future]]) -> None:
        while queue:
            batch = queue[: self.max_batch]
            del queue[: len(batch)]
            try:
                results = await run_in_threadpool(self.write, [item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _resolve(batch[0][1], error=exc)
                    continue
                # Whatever failed the batch must not fail its neighbours: write each on its own.
                log.warning("a grouped write failed; writing its %d items one by one", len(batch), exc_info=True)
                for item, future in batch:
                    try:
                        [result] = await run_in_threadpool(self.write, [item])
                    except Exception as alone:
                        _resolve(future, error=alone)
                    else:
                        _resolve(future, result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                _resolve(future, result)


def _resolve(future: asyncio.Future, result=None, error: Exception | None = None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def each_in_savepoint(sessions: sessionmaker[Session], items: list[Callable[[Session], Any]]) -> list[Any]:
    """Run each item in a savepoint of one transaction; its result, or the exception that rolled it
    back (returned, not raised: the other items stand). A uniqueness conflict (a retry of the same
    request racing in another process) runs the item once more: it then finds the row."""
    results: list[Any] = []
    with transaction(sessions) as session:
        for item in items:
            for attempt in (1, 2):
                try:
                    with session.begin_nested():
                        results.append(item(session))
                    break
                except IntegrityError as exc:
                    if attempt == 2:
                        results.append(exc)
                except Exception as exc:  # the request's own refusal (4xx) or failure (5xx)
                    results.append(exc)
                    break
    return results


class FreshRead(Generic[Result]):
    """Group commit's twin for a read: callers that arrive together share one call of `read`. Each
    gets the result of a call that began after it arrived (never an older answer, so never a cached
    one: a chain that went away is noticed by the very next caller), yet under load one call serves
    everyone who came while the previous call was out."""

    def __init__(self, read: Callable[[], Result]):
        self.read = read
        self._guard = threading.Lock()
        self._running = threading.Lock()  # held by the call under way
        self._next: Future | None = None  # the call the callers arriving now will share

    def __call__(self) -> Result:
        with self._guard:
            leader = self._next is None
            if leader:
                self._next = Future()
            shared = self._next
        if leader:
            with self._running:  # after the call under way: it may have begun before some of us came
                with self._guard:
                    self._next = None  # who comes from now on shares a later call
                try:
                    shared.set_result(self.read())
                except BaseException as exc:
                    shared.set_exception(exc)
        return shared.result()
