"""Request, latency and batch counters, rendered in the Prometheus text format (`GET /metrics`).

Written by the event loop (requests, connections) and the worker thread (batches), hence the
lock. Labels are paths and status codes only: never a key, a client address or an unknown path.
No client library: the format is a few lines of text (version 0.0.4).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from nmt.serve.batcher import BatchReport

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def render(self, name: str, help: str) -> list[str]:
        lines = [f"# HELP {name} {help}", f"# TYPE {name} histogram"]
        lines += [f'{name}_bucket{{le="{bound:g}"}} {n}' for bound, n in zip(self.buckets, self.counts, strict=True)]
        lines += [
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.total:.6f}",
            f"{name}_count {self.count}",
        ]
        return lines


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (path, status) -> count
        self.latency = Histogram(LATENCY_BUCKETS)  # seconds per /translate request
        self.batch_requests = Histogram(SIZE_BUCKETS)
        self.batch_sentences = Histogram(SIZE_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.sentences = 0
        self.src_tokens = 0
        self.truncated_lines = 0
        self.html_repaired_texts = 0
        self.dropped = 0
        self.failed = 0
        self.refused_connections = 0  # over --max-connections
        self.idle_closed = 0  # connections closed for sending no complete request head in time
        self.cut_at_shutdown = 0  # requests answered 503 at the shutdown timeout

    def connection(self, *, refused: bool = False, idle_closed: bool = False) -> None:
        with self._lock:
            self.refused_connections += refused
            self.idle_closed += idle_closed

    def cut_short(self) -> None:
        with self._lock:
            self.cut_at_shutdown += 1

    def request(self, path: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[path, status] += 1
            if seconds is not None:
                self.latency.observe(seconds)

    def truncated(self, lines: int) -> None:
        with self._lock:
            self.truncated_lines += lines

    def html_repaired(self, texts: int) -> None:
        with self._lock:
            self.html_repaired_texts += texts

    def batch(self, report: BatchReport) -> None:
        with self._lock:
            if report.requests:
                self.batch_requests.observe(report.requests)
                self.batch_sentences.observe(report.sentences)
                self.batch_seconds.observe(report.seconds)
            self.sentences += report.translated  # lines of failed or dropped jobs are not translations
            self.src_tokens += report.src_tokens
            self.dropped += report.dropped
            self.failed += report.failed

    def render(self, *, queue_depth: int) -> str:
        with self._lock:
            lines = [
                "# HELP nmt_serve_requests_total HTTP requests answered, by path (other: unknown paths) and status "
                "code (499: the client left first).",
                "# TYPE nmt_serve_requests_total counter",
            ]
            lines += [
                f'nmt_serve_requests_total{{path="{path}",code="{status}"}} {n}'
                for (path, status), n in sorted(self.requests.items())
            ]
            lines += self.latency.render("nmt_serve_request_seconds", "Time to answer a /translate request.")
            lines += self.batch_requests.render("nmt_serve_batch_requests", "Requests decoded together in a batch.")
            lines += self.batch_sentences.render("nmt_serve_batch_sentences", "Lines decoded together in a batch.")
            lines += self.batch_seconds.render("nmt_serve_batch_seconds", "Time to decode a batch.")
            for name, help, value in (
                ("nmt_serve_sentences_total", "Lines translated.", self.sentences),
                ("nmt_serve_source_tokens_total", "Source tokens decoded.", self.src_tokens),
                ("nmt_serve_truncated_lines_total", "Lines cut to the model's maximum length.", self.truncated_lines),
                (
                    "nmt_serve_html_repaired_total",
                    "format=html texts that were malformed HTML, repaired as an HTML parser does.",
                    self.html_repaired_texts,
                ),
                ("nmt_serve_dropped_requests_total", "Requests whose client left before their answer.", self.dropped),
                ("nmt_serve_failed_requests_total", "Requests answered 500 by a failed batch.", self.failed),
                ("nmt_serve_refused_connections_total", "Connections refused at the cap.", self.refused_connections),
                (
                    "nmt_serve_idle_connections_closed_total",
                    "Connections closed for no complete request head within the read timeout.",
                    self.idle_closed,
                ),
            ):
                lines += [f"# HELP {name} {help}", f"# TYPE {name} counter", f"{name} {value}"]
            lines += [
                "# HELP nmt_serve_queue_depth Requests waiting for the decoder (long ones under way included).",
                "# TYPE nmt_serve_queue_depth gauge",
                f"nmt_serve_queue_depth {queue_depth}",
            ]
        return "\n".join(lines) + "\n"
