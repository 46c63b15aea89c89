"""The server's batcher: gathering limits, per-request answers, a failing batch, clients that left."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from nmt.decode.search import search
from nmt.decode.translate import load_for_decoding, source_ids, to_translations
from nmt.serve.batcher import Batcher, BatchReport, Job
from nmt.serve.models import Pair
from nmt.tokens import BOS_ID
from tests.conftest import TinyCheckpoint

LINES = ["3 4 5", "a b c d e", "", "x y", "1 2 3 4 5 6 7 8"]


@pytest.fixture(scope="module")
def pair(tiny_checkpoint: TinyCheckpoint) -> Pair:
    loaded, decode, device = load_for_decoding(tiny_checkpoint.path)
    return Pair("src", "tgt", tiny_checkpoint.path, loaded, decode, device)


class Collect:
    def __init__(self) -> None:
        self.results: dict[int, object] = {}
        self.event = threading.Event()
        self.expected = 0

    def done_for(self, i: int):
        def done(result: object) -> None:
            self.results[i] = result
            if len(self.results) == self.expected:
                self.event.set()

        return done


def run(batcher: Batcher, jobs: list[Job], collect: Collect) -> None:
    collect.expected = sum(not job.cancelled for job in jobs)
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    assert collect.event.wait(60) or collect.expected == 0
    batcher.close(timeout=60)


def test_jobs_share_batches_within_the_token_budget_and_get_their_own_lines(pair: Pair) -> None:
    src, _ = source_ids(pair.loaded, LINES)
    alone = to_translations(
        pair.loaded.vocab, src, search(pair.loaded.model, src, pair.decode, device=pair.device), nbest=1
    )
    reports: list[BatchReport] = []
    batcher = Batcher(max_queue=100, max_wait_s=0.05, batch_tokens=12, on_batch=reports.append)
    collect = Collect()
    jobs = [Job(pair, [s], 1, collect.done_for(i)) for i, s in enumerate(src)]
    run(batcher, jobs, collect)
    got = [collect.results[i] for i in range(len(src))]
    assert [[(t.text, t.ids) for t in job[0]] for job in got] == [[(t.text, t.ids) for t in row] for row in alone]
    # scores as decoded alone, up to float rounding in another batch composition
    assert [job[0][0].score for job in got] == pytest.approx([row[0].score for row in alone], abs=1e-5)
    assert sum(r.requests for r in reports) == len(src)
    for r in reports:  # past the budget only by the one line a long job always gets (src[4] is one)
        assert r.src_tokens <= 12 + len(src[4])
    assert any(r.requests > 1 for r in reports)


def test_a_full_queue_refuses_at_once() -> None:
    import queue

    batcher = Batcher(max_queue=1, max_wait_s=0.0, batch_tokens=10)  # not started: nothing is taken
    job = Job(None, [[5, 2]], 1, lambda result: None)  # type: ignore[arg-type]
    batcher.submit(job)
    with pytest.raises(queue.Full):
        batcher.submit(job)


class Exploding:
    """A decoding engine (the SearchEngine protocol) that fails on any sentence holding `bad`."""

    max_len = 64

    def __init__(self, real: object, bad: int) -> None:
        self.real, self.bad = real, bad

    def search(self, src_seqs, cfg, *, on_batch=None, start_id=BOS_ID):
        if any(self.bad in s for s in src_seqs):
            raise RuntimeError("boom")
        return search(self.real, src_seqs, cfg, device=torch.device("cpu"), start_id=start_id)


def test_a_failing_group_answers_its_jobs_with_the_error_and_the_worker_goes_on(pair: Pair) -> None:
    src, _ = source_ids(pair.loaded, LINES)
    bad = src[1][1]  # a piece of this line only (src[1][0], the word boundary, is in every line)
    exploding = dataclasses.replace(
        pair, loaded=dataclasses.replace(pair.loaded, model=Exploding(pair.loaded.model, bad))
    )
    reports: list[BatchReport] = []
    batcher = Batcher(max_queue=100, max_wait_s=0.0, batch_tokens=1, on_batch=reports.append)  # one job per batch
    collect = Collect()
    clean = [s for s in src if s and bad not in s]
    jobs = [Job(exploding, [src[1]], 1, collect.done_for(0))]
    jobs += [Job(exploding, [s], 1, collect.done_for(i + 1)) for i, s in enumerate(clean)]
    run(batcher, jobs, collect)
    assert isinstance(collect.results[0], RuntimeError)
    assert all(isinstance(collect.results[i + 1], list) for i in range(len(clean)))
    assert clean and [r.failed for r in reports] == [1] + [0] * len(clean)


def test_jobs_of_clients_that_left_are_dropped_from_their_batch(pair: Pair) -> None:
    src, _ = source_ids(pair.loaded, LINES)
    reports: list[BatchReport] = []
    batcher = Batcher(max_queue=100, max_wait_s=0.05, batch_tokens=1000, on_batch=reports.append)
    collect = Collect()
    jobs = [Job(pair, [s], 1, collect.done_for(i)) for i, s in enumerate(src)]
    jobs[1].cancelled = jobs[3].cancelled = True
    run(batcher, jobs, collect)
    assert sorted(collect.results) == [0, 2, 4]
    assert sum(r.dropped for r in reports) == 2 and sum(r.requests for r in reports) == 3


def test_close_answers_what_is_queued(pair: Pair) -> None:
    src, _ = source_ids(pair.loaded, LINES)
    batcher = Batcher(max_queue=100, max_wait_s=0.0, batch_tokens=1)
    collect = Collect()
    jobs = [Job(pair, [s], 1, collect.done_for(i)) for i, s in enumerate(src)]
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    t0 = time.monotonic()
    batcher.close(timeout=60)
    assert time.monotonic() - t0 < 60
    assert sorted(collect.results) == list(range(len(src)))


def test_serve_without_its_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from nmt.errors import NmtError
    from nmt.serve import require_serve_extra

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(NmtError, match="needs uvicorn") as exc:
        require_serve_extra()
    assert exc.value.hint == "pip install 'nmt[serve]'"


def test_a_long_job_is_decoded_in_slices_and_a_short_one_overtakes_it(pair: Pair) -> None:
    src, _ = source_ids(pair.loaded, LINES)
    long_src = [s for s in src if s] * 10  # 40 lines, about 20 times the token budget
    alone = to_translations(
        pair.loaded.vocab, long_src, search(pair.loaded.model, long_src, pair.decode, device=pair.device), nbest=1
    )
    reports: list[BatchReport] = []
    batcher = Batcher(max_queue=100, max_wait_s=0.0, batch_tokens=12, on_batch=reports.append)
    order: list[str] = []
    results: dict[str, object] = {}
    finished = threading.Event()

    def done(name: str):
        def record(result: object) -> None:
            order.append(name)
            results[name] = result
            if len(order) == 2:
                finished.set()

        return record

    batcher.submit(Job(pair, long_src, 1, done("long")))
    batcher.start()
    deadline = time.monotonic() + 30
    while not reports and time.monotonic() < deadline:  # the long job is under way
        time.sleep(0.001)
    batcher.submit(Job(pair, [src[0]], 1, done("short")))
    assert finished.wait(60)
    batcher.close(timeout=60)
    assert order == ["short", "long"]
    long = results["long"]
    assert [[(t.text, t.ids) for t in row] for row in long] == [[(t.text, t.ids) for t in row] for row in alone]
    assert all(r.src_tokens <= 12 or r.sentences == 1 for r in reports)  # slices keep to the budget


def test_lines_of_a_failed_job_are_not_counted_as_translated(pair: Pair) -> None:
    from nmt.serve.prometheus import Metrics

    src, _ = source_ids(pair.loaded, LINES)
    bad = src[1][1]  # a piece of this line only (src[1][0], the word boundary, is in every line)
    exploding = dataclasses.replace(
        pair, loaded=dataclasses.replace(pair.loaded, model=Exploding(pair.loaded.model, bad))
    )
    metrics = Metrics()
    batcher = Batcher(max_queue=100, max_wait_s=0.05, batch_tokens=1000, on_batch=metrics.batch)
    collect = Collect()
    clean = [s for s in src if s and bad not in s]
    jobs = [Job(exploding, [src[1], src[1]], 2, collect.done_for(0))]  # nbest 2: a group of its own, which fails
    jobs += [Job(exploding, [s], 1, collect.done_for(i + 1)) for i, s in enumerate(clean)]
    run(batcher, jobs, collect)
    assert isinstance(collect.results[0], RuntimeError)
    text = metrics.render(queue_depth=0)
    translated = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("nmt_serve_sentences_total "))
    failed = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("nmt_serve_failed_requests_total "))
    assert clean and translated == len(clean) and failed == 1
