"""Dynamic batching: requests wait in a bounded queue; one worker thread decodes them in batches.

The event loop never runs the model (the decoder loop runs in `nmt serve`'s main thread,
uvicorn in another). A request becomes a `Job` (its lines as source ids, its language pair
and n-best size) and is put on the queue without waiting: a full queue raises `queue.Full`,
which the API answers with 429. Each round the worker builds one batch:

- short jobs whole, oldest first, gathered for at most `max_wait_s` or until the next would
  take the batch past `batch_tokens` source tokens (that job opens the next batch);
- long jobs (more tokens than about `slice_s` seconds of decoding) in slices: the time left
  of `slice_s` after the short jobs goes to the jobs under way, round robin, and the first
  of them gets at least one line. So a 2,500-line request no longer holds the decoder while
  a one-word request waits: the short one joins the next batch, which ends about `slice_s`
  later. When no short job has come for `QUIET_S`, a slice may take `LONE_SLICE_S`: a long
  job alone decodes in larger, more efficient batches, and a short one arriving then waits
  for at most that one slice. Seconds per source token are measured per model as batches end.

Jobs whose client has gone are dropped, and one `search` runs per (model, nbest) group of
the batch. A job is answered with exactly its own lines, once, through its `done` callback
from the worker thread; a failure inside a group answers that group's jobs with the
exception, and the worker goes on.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nmt.decode.constrained import Terms
from nmt.decode.search import search
from nmt.decode.translate import Translation, to_translations, with_alignments, with_confidences
from nmt.serve.models import Pair

Result = list[list[Translation]] | BaseException  # nbest translations per line, or what went wrong

SLICE_S = 0.25  # (s) decoding time a batch gives the long jobs under way, the short ones' wait
LONE_SLICE_S = 1.0  # (s) the same when no short job has come for QUIET_S
QUIET_S = 2.0  # (s)
FIRST_COST_S = 0.001  # (s per source token) assumed for a model until its first batch is timed
MAX_STARTED = 4  # long jobs decoded in slices at a time; more wait in the queue


@dataclass(eq=False)
class Job:
    """One request's lines, waiting for the worker (and, once under way, how far it got)."""

    pair: Pair
    src: list[list[int]]  # source ids per line (`nmt.decode.translate.source_ids`), [] for an empty line
    nbest: int
    done: Callable[[Result], object]  # called once, from the worker thread
    texts: list[str] | None = None  # the lines as text, when they are to be word-aligned (format=html)
    confidence: bool = False  # give each translation its confidence (nmt.decode.scoring.confidence)
    terms: list[Terms] | None = None  # per line, target terms its translation must hold (a request's glossary)
    cancelled: bool = False  # set by the event loop when the client disconnected
    enqueued: float = field(default_factory=time.monotonic)
    next_line: int = 0  # worker thread only: the first line not yet decoded
    results: list[list[Translation]] = field(default_factory=list)  # worker thread only: lines decoded

    @cached_property
    def tokens(self) -> int:
        return sum(len(s) for s in self.src)

    def lines_within(self, tokens: int, *, at_least_one: bool) -> int:
        """How many of the lines left fit in `tokens` source tokens (at least one if asked)."""
        n, used = 0, 0
        for seq in self.src[self.next_line :]:
            used += len(seq)
            if used > tokens and (n or not at_least_one):
                break
            n += 1
        return n


@dataclass
class BatchReport:
    """What one batch did, for the log line and the metrics."""

    requests: int  # jobs with lines in the batch
    sentences: int  # lines decoded
    src_tokens: int
    dropped: int  # jobs whose client disconnected before they were answered
    failed: int  # jobs answered with an error
    seconds: float
    waited_s: float  # the longest a job that started in this batch spent in the queue
    translated: int = 0  # lines of the jobs answered with their translations


_STOP = object()
IDLE_POLL_S = 0.2  # how often an idle decoder loop checks that the server is still alive
Slice = tuple[Job, int, int]  # a job and the range of its lines decoded in a batch


class Batcher:
    """The queue and its worker thread; `start`, `submit` from the event loop, `close` to drain and stop."""

    def __init__(
        self,
        *,
        max_queue: int,
        max_wait_s: float,
        batch_tokens: int,
        slice_s: float = SLICE_S,
        on_batch: Callable[[BatchReport], object] = lambda report: None,
    ) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.max_wait_s = max_wait_s
        self.batch_tokens = batch_tokens
        self.slice_s = slice_s
        self.on_batch = on_batch
        self._carry: Job | None = None  # the job that did not fit into the last batch
        self._started: deque[Job] = deque()  # long jobs under way, decoded a slice per batch
        self._cost_s: dict[str, float] = {}  # pair key -> seconds per source token, smoothed
        self._warm: set[str] = set()  # pair keys decoded at least once
        self._short_seen = -float("inf")  # when the last short job was taken
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
        """Jobs not yet answered outside the batch being decoded: queued, held over, or long ones under way
        (read from the event loop: each part is one atomic read)."""
        return self.queue.qsize() + len(self._started) + (self._carry is not None)

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

    def _tokens_in(self, pair: Pair, seconds: float) -> int:
        """Source tokens of `pair`'s model decoded in about `seconds`, as measured so far."""
        return min(self.batch_tokens, int(seconds / self._cost_s.get(pair.key, FIRST_COST_S)))

    def _gather(self, *, wait: bool) -> tuple[list[Slice], bool]:
        """The next batch: short jobs whole, then slices of the long ones; True when the stop marker was met."""
        whole: list[Job] = []
        tokens, seconds, stop = 0, 0.0, False
        deadline = time.monotonic() + (self.max_wait_s if wait and not self._started else 0.0)
        while tokens < self.batch_tokens:
            try:
                item = self._next(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            if item.tokens > self._tokens_in(item.pair, self.slice_s):
                if len(self._started) >= MAX_STARTED:
                    self._carry = item
                    break
                self._started.append(item)
                continue
            if whole and tokens + item.tokens > self.batch_tokens:
                self._carry = item
                break
            whole.append(item)
            self._short_seen = time.monotonic()
            tokens += item.tokens
            seconds += item.tokens * self._cost_s.get(item.pair.key, FIRST_COST_S)
        batch: list[Slice] = [(job, 0, len(job.src)) for job in whole]
        quiet = time.monotonic() - self._short_seen >= QUIET_S
        slice_s = max(self.slice_s, LONE_SLICE_S) if quiet else self.slice_s
        given = False  # whether a long job got lines in this batch
        for _ in range(len(self._started)):  # round robin over the long jobs, in what is left of slice_s
            job = self._started[0]
            if job.cancelled:
                self._started.popleft()
                batch.append((job, job.next_line, job.next_line))  # no lines: _decode counts it as dropped
                continue
            room = min(self.batch_tokens - tokens, self._tokens_in(job.pair, slice_s - seconds))
            lines = job.lines_within(room, at_least_one=not given)
            if not lines:
                break
            batch.append((job, job.next_line, job.next_line + lines))
            used = sum(len(s) for s in job.src[job.next_line : job.next_line + lines])
            tokens += used
            seconds += used * self._cost_s.get(job.pair.key, FIRST_COST_S)
            given = True
            self._started.rotate(-1)
        return batch, stop

    def _run(self, alive: Callable[[], bool]) -> None:
        stopping = False
        while True:
            if not self._started and self._carry is None:
                try:  # idle: wait for a job (without waiting once stopping: drain what is queued)
                    item = self.queue.get_nowait() if stopping else self.queue.get(timeout=IDLE_POLL_S)
                except queue.Empty:
                    if stopping or not alive():
                        return
                    continue
                if item is _STOP:
                    stopping = True
                    continue
                self._carry = item
            batch, stop = self._gather(wait=not stopping)
            stopping = stopping or stop
            if batch:
                self._decode(batch)

    def _decode(self, batch: list[Slice]) -> None:
        start = time.monotonic()
        live = [(job, a, b) for job, a, b in batch if not job.cancelled]
        dropped = {job for job, _, _ in batch if job.cancelled}
        for job in dropped:
            if job in self._started:
                self._started.remove(job)
        failed = translated = decoded_tokens = 0
        key = lambda piece: (  # noqa: E731
            piece[0].pair.key,
            piece[0].nbest,
            piece[0].texts is not None,
            piece[0].confidence,
        )
        for _, group_iter in itertools.groupby(sorted(live, key=key), key=key):
            group = list(group_iter)
            pair, nbest = group[0][0].pair, group[0][0].nbest
            src = [s for job, a, b in group for s in job.src[a:b]]
            terms = [t for job, a, b in group for t in (job.terms or [[]] * len(job.src))[a:b]]
            group_start = time.monotonic()
            try:
                cfg = dataclasses.replace(pair.decode, nbest=nbest)
                hyps = search(
                    pair.loaded.model, src, cfg, device=pair.device, start_id=pair.marks.start_id,
                    terms=terms if any(terms) else None, glued=pair.glued,
                )  # fmt: skip
                translations = to_translations(pair.loaded.vocab, src, hyps, nbest=nbest)
                if group[0][0].texts is not None:  # word alignments for the markup (format=html)
                    texts = [t for job, a, b in group for t in (job.texts or [])[a:b]]
                    translations = with_alignments(
                        pair.loaded, texts, src, translations, start_id=pair.marks.start_id, marks=pair.marks,
                        device=pair.device,
                    )  # fmt: skip
                if group[0][0].confidence:
                    translations = with_confidences(
                        pair.loaded, src, translations, start_id=pair.marks.start_id, device=pair.device
                    )
            except Exception as exc:  # answered as a 500 for this group only; the server goes on
                for job, _, _ in group:
                    failed += 1
                    job.done(exc)
                    if job in self._started:
                        self._started.remove(job)
                continue
            group_tokens = sum(len(s) for s in src)
            decoded_tokens += group_tokens
            if group_tokens and pair.key in self._warm:  # a model's first batch pays its warm-up: not timed
                measured = (time.monotonic() - group_start) / group_tokens
                old = self._cost_s.get(pair.key)
                self._cost_s[pair.key] = measured if old is None else (old + measured) / 2
            self._warm.add(pair.key)
            offset = 0
            for job, a, b in group:
                job.results += translations[offset : offset + b - a]
                offset += b - a
                job.next_line = b
                if b == len(job.src):
                    translated += len(job.src)
                    job.done(job.results)
                    if job in self._started:
                        self._started.remove(job)
        firsts = [start - job.enqueued for job, a, _ in batch if a == 0]
        self.on_batch(
            BatchReport(
                requests=len({job for job, _, _ in live}),
                sentences=sum(b - a for _, a, b in live),
                src_tokens=decoded_tokens,
                dropped=len(dropped),
                failed=failed,
                seconds=time.monotonic() - start,
                waited_s=max(firsts, default=0.0),
                translated=translated,
            )
        )
