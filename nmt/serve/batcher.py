"""Dynamic batching: requests wait in a bounded queue; one worker thread decodes them in batches.

The event loop never runs the model (the decoder loop runs in `nmt serve`'s main thread,
uvicorn in another). A request becomes a `Job` (its lines as source ids,
its language pair and n-best size) and is put on the queue without waiting: a full queue
raises `queue.Full`, which the API answers with 429. The worker takes the oldest job, then
gathers more for at most `max_wait_s` or until the next job would take the batch past
`batch_tokens` source tokens (that job opens the next batch), drops jobs whose client has
gone, and runs one `search` per (model, nbest) group of the batch. Each job is answered
with exactly its own lines through its `done` callback, from the worker thread; a failure
inside a group answers that group's jobs with the exception, and the worker goes on.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nmt.decode.search import search
from nmt.decode.translate import Translation, to_translations
from nmt.serve.models import Pair

Result = list[list[Translation]] | BaseException  # nbest translations per line, or what went wrong


@dataclass(eq=False)
class Job:
    """One request's lines, waiting for the worker."""

    pair: Pair
    src: list[list[int]]  # source ids per line (`nmt.decode.translate.source_ids`), [] for an empty line
    nbest: int
    done: Callable[[Result], object]  # called once, from the worker thread
    cancelled: bool = False  # set by the event loop when the client disconnected while queued
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.src)


@dataclass
class BatchReport:
    """What one batch did, for the log line and the metrics."""

    requests: int
    sentences: int
    src_tokens: int
    dropped: int  # jobs whose client disconnected while queued
    failed: int  # jobs answered with an error
    seconds: float
    waited_s: float  # the oldest job's time in the queue


_STOP = object()
IDLE_POLL_S = 0.2  # how often an idle decoder loop checks that the server is still alive


class Batcher:
    """The queue and its worker thread; `start`, `submit` from the event loop, `close` to drain and stop."""

    def __init__(
        self,
        *,
        max_queue: int,
        max_wait_s: float,
        batch_tokens: int,
        on_batch: Callable[[BatchReport], object] = lambda report: None,
    ) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.max_wait_s = max_wait_s
        self.batch_tokens = batch_tokens
        self.on_batch = on_batch
        self._carry: Job | None = None  # the job that did not fit into the last batch
        self._stopped = threading.Event()

    def start(self) -> threading.Thread:
        """Run the decoder loop in a new thread (`run` runs it in the calling one)."""
        thread = threading.Thread(target=self.run, name="nmt-serve-decoder", daemon=True)
        thread.start()
        return thread

    def run(self, alive: Callable[[], bool] = lambda: True) -> None:
        """The decoder loop, until `close` (after answering what is queued) or until `alive()` is
        False with nothing queued. `nmt serve` runs it in the main thread: torch's intra-op
        threads are much slower driven from another thread (measured: a single sentence at
        beam 5 took 118 ms from a second thread, 45 ms from the main one, 2 threads)."""
        try:
            self._run(alive)
        finally:
            self._stopped.set()

    def submit(self, job: Job) -> None:
        """Queue a job; raises `queue.Full` when `max_queue` jobs are already waiting."""
        self.queue.put_nowait(job)

    def depth(self) -> int:
        return self.queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Answer every queued job, then stop the decoder loop (waits for it up to `timeout` s)."""
        self.queue.put(_STOP)
        self._stopped.wait(timeout)

    # ------------------------------------------------------------ worker thread

    def _next(self, timeout: float | None) -> Any:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        return self.queue.get(timeout=timeout) if timeout is not None else self.queue.get()

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """`first` and the jobs that join it; True when the stop marker was met."""
        batch, tokens = [first], first.tokens
        deadline = time.monotonic() + self.max_wait_s
        while tokens < self.batch_tokens:
            try:
                item = self._next(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            if tokens + item.tokens > self.batch_tokens:
                self._carry = item
                break
            batch.append(item)
            tokens += item.tokens
        return batch, False

    def _run(self, alive: Callable[[], bool]) -> None:
        stopping = False
        while True:
            if stopping and self._carry is None:
                try:  # drain what is still queued, without waiting
                    item = self.queue.get_nowait()
                except queue.Empty:
                    return
            else:
                try:
                    item = self._next(IDLE_POLL_S)
                except queue.Empty:
                    if not alive():
                        return
                    continue
            if item is _STOP:
                stopping = True
                continue
            batch, stop = self._gather(item)
            stopping = stopping or stop
            self._decode(batch)

    def _decode(self, batch: list[Job]) -> None:
        start = time.monotonic()
        live = [job for job in batch if not job.cancelled]
        failed = 0
        groups = itertools.groupby(
            sorted(live, key=lambda job: (job.pair.key, job.nbest)), key=lambda job: (job.pair.key, job.nbest)
        )
        for _, group_iter in groups:
            group = list(group_iter)
            pair, nbest = group[0].pair, group[0].nbest
            src = [s for job in group for s in job.src]
            try:
                cfg = dataclasses.replace(pair.decode, nbest=nbest)
                hyps = search(pair.loaded.model, src, cfg, device=pair.device)
                translations = to_translations(pair.loaded.vocab, src, hyps, nbest=nbest)
            except Exception as exc:  # answered as a 500 for this group only; the server goes on
                failed += len(group)
                for job in group:
                    job.done(exc)
                continue
            offset = 0
            for job in group:
                job.done(translations[offset : offset + len(job.src)])
                offset += len(job.src)
        self.on_batch(
            BatchReport(
                requests=len(live),
                sentences=sum(len(job.src) for job in live),
                src_tokens=sum(job.tokens for job in live),
                dropped=len(batch) - len(live),
                failed=failed,
                seconds=time.monotonic() - start,
                waited_s=start - min(job.enqueued for job in batch),
            )
        )
