"""LibreTranslate's HTTP API on Starlette: `POST /translate`, `GET /languages`, `/health`, `/metrics`.

`POST /translate` takes JSON or form bodies (urlencoded or multipart) with `q` (a string or
a list of strings; in a form, `q` repeated is a list), `source`, `target`, `format`
(`text`; `html` is refused) and `alternatives` (extra n-best translations). Unknown fields
(`api_key`, ...) are ignored, as LibreTranslate clients expect. A text with line breaks
keeps them: each line is translated on its own and the answer has one line per line.
Errors are `{"error": "..."}` with LibreTranslate's status codes: 400 for a bad request
(LibreTranslate's messages where it has them), 413 for a body larger than the limits
allow, 429 when the queue is full, 500 when the batch a request was in failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nmt.console import info
from nmt.decode.translate import source_ids
from nmt.serve.batcher import Batcher, BatchReport, Job, Result
from nmt.serve.metrics import Metrics
from nmt.serve.models import Pair, languages


@dataclass(frozen=True)
class Limits:
    """The server's request limits and batching settings (`nmt serve` options)."""

    char_limit: int = 5000  # characters per request (all of q); -1 = none (LibreTranslate's --char-limit)
    batch_limit: int = 128  # strings in a q list; -1 = none (LibreTranslate's --batch-limit)
    max_queue: int = 256  # requests waiting for the decoder before 429
    max_wait_ms: float = 5.0  # how long the decoder waits for more requests to join a batch
    batch_tokens: int = 4096  # source tokens the decoder gathers into one batch

    @property
    def max_body_bytes(self) -> int:
        """Bodies past this are refused before parsing: 4 bytes per character (UTF-8) plus room for
        the other fields and the form/JSON quoting (x3), at least 1 MiB; 64 MiB without a char limit."""
        return 64 << 20 if self.char_limit < 0 else max(1 << 20, 12 * self.char_limit + 65536)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Invalid request: the body ({int(declared):,} bytes) is over the limit ({limit:,} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Invalid request: the body is over the limit ({limit:,} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_params(request: Request, limit: int) -> dict[str, Any]:
    """The request's fields from a JSON or form body (and the query string); lists for repeated form keys."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)
    params: dict[str, Any] = {}

    def add(pairs: list[tuple[str, str]]) -> None:
        for key, value in pairs:
            if key in params:
                old = params[key]
                params[key] = [*old, value] if isinstance(old, list) else [old, value]
            else:
                params[key] = value

    try:
        add(parse_qsl(request.url.query, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise ApiError(400, "Invalid request: the query string is not valid UTF-8") from None
    if content_type == "application/json":
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"Invalid request: the body is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid request: the JSON body must be an object with q, source and target")
        params.update(data)
    elif content_type == "application/x-www-form-urlencoded":
        try:
            add(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            raise ApiError(400, "Invalid request: the form body is not valid UTF-8") from None
    elif content_type == "multipart/form-data":
        form = await _multipart(request, body)
        add(form)
    elif body.strip():
        raise ApiError(
            400,
            f"Invalid request: unsupported content type {content_type or '(none)'!r}; send "
            "application/json or form data (application/x-www-form-urlencoded or multipart/form-data)",
        )
    return params


async def _multipart(request: Request, body: bytes) -> list[tuple[str, str]]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # python-multipart's parse errors, a missing boundary, ...
        raise ApiError(400, f"Invalid request: the multipart form cannot be read ({exc})") from None
    out = []
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise ApiError(400, f"Invalid request: {key} must be a text field, not a file")
        out.append((key, value))
    return out


@dataclass
class TranslateRequest:
    texts: list[str]  # the q strings
    as_list: bool  # q was a list: answer with a list
    pair: Pair
    alternatives: int
    auto: bool  # source was "auto"


def parse_translate(params: dict[str, Any], pairs: dict[tuple[str, str], Pair], limits: Limits) -> TranslateRequest:
    q = params.get("q")
    if q is None or q == "" or q == []:
        raise ApiError(400, "Invalid request: missing q parameter")
    as_list = isinstance(q, list)
    texts = q if as_list else [q]
    if not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    for name in ("source", "target"):
        if not params.get(name):
            raise ApiError(400, f"Invalid request: missing {name} parameter")
        if not isinstance(params[name], str):
            raise ApiError(400, f"Invalid request: {name} must be a language code (a string)")
    fmt = params.get("format", "text") or "text"
    if fmt != "text":
        raise ApiError(400, f"Invalid request: format {fmt!r} is not supported; this server translates plain text only")
    alternatives = params.get("alternatives", 0)
    try:
        alternatives = int(alternatives) if not isinstance(alternatives, bool | list | dict | float) else None
    except (TypeError, ValueError):
        alternatives = None
    if alternatives is None or alternatives < 0:
        raise ApiError(400, "Invalid request: alternatives must be a whole number >= 0")
    if as_list and limits.batch_limit >= 0 and len(texts) > limits.batch_limit:
        raise ApiError(400, f"Invalid request: request ({len(texts)}) exceeds text limit ({limits.batch_limit})")
    chars = sum(len(t) for t in texts)
    if limits.char_limit >= 0 and chars > limits.char_limit:
        raise ApiError(400, f"Invalid request: request ({chars}) exceeds text limit ({limits.char_limit})")
    source, target = params["source"], params["target"]
    supported = ", ".join(f"{s}->{t}" for s, t in sorted(pairs))
    auto = source == "auto"
    if auto:
        found = [pair for (s, t), pair in pairs.items() if t == target]
        if len(found) != 1:
            raise ApiError(
                400,
                f"Invalid request: source auto needs language detection, which this server does not do, and "
                f"{len(found)} of its models translate into {target!r}; name the source language "
                f"(supported: {supported})",
            )
        pair = found[0]
    elif (source, target) in pairs:
        pair = pairs[source, target]
    else:
        raise ApiError(400, f"Invalid request: no model for {source}->{target}; supported: {supported}")
    return TranslateRequest(texts, as_list, pair, alternatives, auto)


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def build_app(pairs: dict[tuple[str, str], Pair], limits: Limits) -> tuple[Starlette, Batcher]:
    """The app and its batcher; whoever serves the app runs `batcher.run()` (the app's shutdown
    closes the batcher once every request has been answered)."""
    metrics = Metrics()

    def log_batch(report: BatchReport) -> None:
        metrics.batch(report)
        if report.requests or report.dropped:
            extra = "".join(
                f", {n} {what}" for n, what in ((report.dropped, "dropped"), (report.failed, "failed")) if n
            )
            info(
                f"batch: {report.requests} requests, {report.sentences} lines, {report.src_tokens} source tokens, "
                f"waited {report.waited_s * 1000:.0f} ms, decoded in {report.seconds * 1000:.0f} ms{extra}"
            )

    batcher = Batcher(
        max_queue=limits.max_queue,
        max_wait_s=limits.max_wait_ms / 1000,
        batch_tokens=limits.batch_tokens,
        on_batch=log_batch,
    )

    async def translate(request: Request) -> Response:
        start = time.monotonic()
        try:
            params = await read_params(request, limits.max_body_bytes)
            req = parse_translate(params, pairs, limits)
        except ApiError as exc:
            metrics.request("/translate", exc.status)
            return error(exc.status, exc.message)
        lines = [text.split("\n") for text in req.texts]
        flat = [line for text_lines in lines for line in text_lines]
        src, truncated = source_ids(req.pair.loaded, flat)
        if truncated:
            metrics.truncated(truncated)
            info(f"{truncated} lines of a request were longer than {req.pair.max_len - 1} source tokens: truncated")
        nbest = min(req.alternatives + 1, req.pair.decode.beam)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()

        def done(result: Result) -> None:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

        job = Job(req.pair, src, nbest, done)
        try:
            batcher.submit(job)
        except queue.Full:
            metrics.request("/translate", 429)
            return error(429, "Slowdown: too many requests are waiting; try again later")
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not future.done():  # the client left while queued: drop it from its batch
            job.cancelled = True
            return Response(status_code=499)
        gone.cancel()
        result = future.result()
        if isinstance(result, BaseException):
            metrics.request("/translate", 500, time.monotonic() - start)
            return error(500, f"Cannot translate text: {type(result).__name__}: {result}")
        answers: list[list[str]] = []  # per q string: nbest texts
        offset = 0
        for text_lines in lines:
            rows = result[offset : offset + len(text_lines)]
            offset += len(text_lines)
            answers.append(["\n".join(row[k].text for row in rows) for k in range(nbest)])
        body: dict[str, Any] = {}
        if req.as_list:
            body["translatedText"] = [a[0] for a in answers]
            if req.alternatives:
                body["alternatives"] = [a[1:] for a in answers]
        else:
            body["translatedText"] = answers[0][0]
            if req.alternatives:
                body["alternatives"] = answers[0][1:]
        if req.auto:  # the one model for the target, not a detection: confidence says so
            detected = {"confidence": 100.0, "language": req.pair.source}
            body["detectedLanguage"] = [detected] * len(answers) if req.as_list else detected
        metrics.request("/translate", 200, time.monotonic() - start)
        return JSONResponse(body)

    async def get_languages(request: Request) -> Response:
        metrics.request("/languages", 200)
        return JSONResponse(languages(pairs))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pairs": [pair.key for pair in pairs.values()]})

    async def get_metrics(request: Request) -> Response:
        return PlainTextResponse(
            metrics.render(queue_depth=batcher.depth()), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error(status, str(detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app = Starlette(
        routes=[
            Route("/translate", translate, methods=["POST"]),
            Route("/languages", get_languages, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", get_metrics, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    return app, batcher
