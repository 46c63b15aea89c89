"""Throughput and latency of `nmt serve`, with dynamic batching and with one request per batch,
and a one-line request's latency while a long request is decoded.

    python scripts/bench_serve.py CHECKPOINT_OR_EXPORT [--concurrency 1 8 32] [--requests 200]
                                  [--max-seconds 60] [--split test_2016_flickr] [--port 5077]
                                  [--modes dynamic single long] [--long-lines 2500]

For each mode (dynamic: the server's defaults; single: `--batch-tokens 1`, so every batch
holds one request) it starts `nmt serve` on 127.0.0.1, then for each concurrency C runs C
clients (httpx, asyncio) that each send single-sentence LibreTranslate requests
(`POST /translate`, JSON) from the split's source side until `--requests` are answered or
`--max-seconds` pass, and prints one JSON line: sentences/s, latency p50/p95/p99, the
server's mean requests per batch (from /metrics). Localhost only; needs `nmt[serve]` and
httpx. A markdown table of all rows follows at the end.

Mode long (`--line-limit -1 --char-limit -1`, the server's other defaults): one client sends
one-line requests one after another, first alone (the baseline, same server and sitting),
then while one request of `--long-lines` lines (the split's sentences, repeated) is being
translated, until it is answered or `--requests` are; it prints their p50/p95 in both
phases and how long the long request took.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from nmt.fileio import read_lines


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def metric(text: str, name: str) -> float:
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


async def load(url: str, lines: list[str], pair: tuple[str, str], *, concurrency: int, requests: int, seconds: float):
    latencies: list[float] = []
    failures = 0
    sent = 0
    deadline = time.monotonic() + seconds

    async def client(worker: int) -> None:
        nonlocal sent, failures
        async with httpx.AsyncClient(timeout=120) as http:
            while sent < requests and time.monotonic() < deadline:
                line = lines[sent % len(lines)]
                sent += 1
                t0 = time.monotonic()
                r = await http.post(f"{url}/translate", json={"q": line, "source": pair[0], "target": pair[1]})
                if r.status_code == 200:
                    latencies.append(time.monotonic() - t0)
                else:
                    failures += 1

    start = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return latencies, failures, time.monotonic() - start


async def beside_long_job(url: str, lines: list[str], pair: tuple[str, str], *, long_lines: int, requests: int):
    """One-line requests, one at a time, while one request of `long_lines` lines is translated."""
    text = "\n".join(lines[i % len(lines)] for i in range(long_lines))
    async with httpx.AsyncClient(timeout=1200) as http:
        t0 = time.monotonic()
        long = asyncio.ensure_future(
            http.post(f"{url}/translate", json={"q": text, "source": pair[0], "target": pair[1]})
        )
        await asyncio.sleep(0.5)  # the long request is read, queued and under way
        latencies: list[float] = []
        while not long.done() and len(latencies) < requests:
            line = lines[len(latencies) % len(lines)]
            t1 = time.monotonic()
            r = await http.post(f"{url}/translate", json={"q": line, "source": pair[0], "target": pair[1]})
            if r.status_code == 200:
                latencies.append(time.monotonic() - t1)
        answer = await long
        if answer.status_code != 200:
            sys.exit(f"the long request failed: {answer.status_code} {answer.text[:200]}")
        return latencies, time.monotonic() - t0


def long_row(url: str, lines: list[str], pair: tuple[str, str], *, long_lines: int, requests: int) -> dict:
    alone, _, _ = asyncio.run(load(url, lines, pair, concurrency=1, requests=50, seconds=60))
    latencies, long_s = asyncio.run(beside_long_job(url, lines, pair, long_lines=long_lines, requests=requests))
    if not latencies:
        sys.exit("the long request was answered before any one-line request: raise --long-lines")
    return {
        "mode": "long",
        "long_lines": long_lines,
        "long_s": round(long_s, 1),
        "requests": len(latencies),
        "p50_ms": round(1000 * percentile(latencies, 50)),
        "p95_ms": round(1000 * percentile(latencies, 95)),
        "alone_p50_ms": round(1000 * percentile(alone, 50)),
        "alone_p95_ms": round(1000 * percentile(alone, 95)),
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
        "date": datetime.date.today().isoformat(),
    }


def start_server(model: Path, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nmt", "serve", str(model), "--port", str(port), *extra]
    # the log (a line per batch) goes to a file: a pipe nobody reads fills up and blocks the server
    log = tempfile.NamedTemporaryFile("w+", prefix="bench_serve.", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited {proc.returncode}: {Path(log.name).read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("server did not start in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="requests per (mode, concurrency)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time bound per (mode, concurrency)")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--port", type=int, default=5077)
    parser.add_argument(
        "--modes", nargs="+", default=["dynamic", "single", "long"], choices=["dynamic", "single", "long"]
    )
    parser.add_argument("--long-lines", type=int, default=2500, help="lines of the long request (mode long)")
    parser.add_argument("--serve-args", nargs="*", default=[], help="more `nmt serve` options for both modes")
    args = parser.parse_args()
    data = Path(os.environ["NMT_DATA"]) / "multi30k"
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    long_rows = []
    for mode in args.modes:
        extra = {"single": ["--batch-tokens", "1"], "long": ["--line-limit", "-1", "--char-limit", "-1"]}.get(mode, [])
        proc = start_server(args.model, args.port, [*args.serve_args, *extra])
        try:
            health = httpx.get(f"{url}/health").json()
            pair = tuple(
                health["pairs"][0].split("-", 1)
            )  # the first model's pair (a language's own code is a target too)
            lines = [line for line in read_lines(data / f"{args.split}.{pair[0]}.gz") if line.strip()]
            asyncio.run(load(url, lines[:16], pair, concurrency=1, requests=16, seconds=30))  # warm-up
            if mode == "long":
                long_rows.append(long_row(url, lines, pair, long_lines=args.long_lines, requests=args.requests))
                print(json.dumps(long_rows[-1]), flush=True)
                continue
            for concurrency in args.concurrency:
                before = httpx.get(f"{url}/metrics").text
                latencies, failures, wall = asyncio.run(
                    load(url, lines, pair, concurrency=concurrency, requests=args.requests, seconds=args.max_seconds)
                )
                after = httpx.get(f"{url}/metrics").text
                batches = metric(after, "nmt_serve_batch_requests_count") - metric(
                    before, "nmt_serve_batch_requests_count"
                )
                batched = metric(after, "nmt_serve_batch_requests_sum") - metric(before, "nmt_serve_batch_requests_sum")
                row = {
                    "mode": mode,
                    "concurrency": concurrency,
                    "requests": len(latencies),
                    "failures": failures,
                    "sent_per_s": round(len(latencies) / wall, 1),
                    "p50_ms": round(1000 * percentile(latencies, 50)),
                    "p95_ms": round(1000 * percentile(latencies, 95)),
                    "p99_ms": round(1000 * percentile(latencies, 99)),
                    "requests_per_batch": round(batched / max(batches, 1), 1),
                    "threads": os.environ.get("OMP_NUM_THREADS", "all"),
                    "date": datetime.date.today().isoformat(),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    print("\n| mode | concurrency | sentences/s | p50 ms | p95 ms | p99 ms | requests/batch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['concurrency']} | {r['sent_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['requests_per_batch']} |"
        )
    by = {(r["mode"], r["concurrency"]): r["sent_per_s"] for r in rows}
    for c in args.concurrency:
        if ("dynamic", c) in by and ("single", c) in by:
            print(f"dynamic / single at concurrency {c}: {by['dynamic', c] / max(by['single', c], 1e-9):.2f}x")
    for r in long_rows:
        print(
            f"one-line requests beside a {r['long_lines']}-line request ({r['long_s']} s): p50 {r['p50_ms']} ms, "
            f"p95 {r['p95_ms']} ms ({r['requests']} requests); alone: p50 {r['alone_p50_ms']} ms, "
            f"p95 {r['alone_p95_ms']} ms"
        )


if __name__ == "__main__":
    main()
