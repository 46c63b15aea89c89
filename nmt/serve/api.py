"""LibreTranslate's HTTP API on Starlette: `POST /translate`, `GET /languages`, `/health`, `/metrics`.

The request format and its limits are `nmt.serve.protocol`'s; keys and the per-minute limit
`nmt.serve.access`'s. A text with line breaks keeps them: each line is translated on its own
and the answer has one line per line; a text whose source and target are the same language
is its own answer, as in LibreTranslate. A pair no model translates directly goes through a
pivot language when two served pairs join up (`nmt.serve.models.route`: English first, as
Argos Translate pivots): the best translation into the pivot is translated on, and the answer
says so in its `X-Translation-Pivot` header. Errors are `{"error": "..."}` with LibreTranslate's
status codes: 400 for a bad request, 403 for an unknown key, 408/413 for a body too slow or
too large, 429 over the request limit or when the queue is full, 500 when the batch a
request was in failed. Every response is counted in `/metrics` by path and status; an error
no request should cause is a JSON 500 `{"error": "internal error"}` and one line in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nmt.console import info
from nmt.decode.constrained import Terms
from nmt.decode.glossary import line_terms
from nmt.decode.markup import MarkupStats, prepare_fragments, render_fragments
from nmt.decode.translate import fits_model, source_ids
from nmt.serve.access import Access, RateLimiter
from nmt.serve.batcher import Batcher, BatchReport, Job, Result
from nmt.serve.models import Pair, languages
from nmt.serve.prometheus import Metrics
from nmt.serve.protocol import ApiError, Limits, TranslateRequest, parse_translate, read_params

__all__ = ["Limits", "build_app"]  # Limits is protocol's; imported from here by callers of build_app

PATHS = ("/translate", "/languages", "/health", "/metrics")
PIVOT_HEADER = "X-Translation-Pivot"  # on an answer translated through a pivot language: that language


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Counted:
    """ASGI middleware: counts every response by path and status, and answers an exception that
    escapes a route with a JSON 500, logged in one line (no traceback: uvicorn never sees it)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in PATHS else "other"  # no label per path a scanner tries
        start, status = time.monotonic(), None

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        except Exception as exc:
            info(f"internal error on {scope['method']} {path}: {type(exc).__name__}: {' '.join(str(exc).split())}")
            if status is None:
                await error(500, "internal error")(scope, receive, noting)
        except asyncio.CancelledError:  # only uvicorn's shutdown timeout cancels a request
            if status is not None:
                raise
            self.metrics.cut_short()
            # answered, not re-raised: uvicorn would log the cancellation with a traceback
            await error(503, "Service unavailable: the server is stopping")(scope, receive, noting)
        if status is not None:
            self.metrics.request(path, status, time.monotonic() - start if path == "/translate" else None)


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def failed(result: BaseException | None) -> Response:
    """The answer to a decode that gave no translations: 499 (the client left first) or 500 (the batch failed)."""
    if result is None:
        return Response(status_code=499)
    return error(500, f"Cannot translate text: {type(result).__name__}: {result}")


def request_terms(req: TranslateRequest, pair: Pair, lines: list[str], src: list[list[int]]) -> list[Terms] | None:
    """Per line, the target terms of the request's glossary that its translation must hold ([] for an empty
    line); None without a glossary."""
    if req.glossary is None:
        return None
    _, terms, _ = line_terms(pair.loaded.vocab, [req.glossary.split(line) for line in lines])
    return [t if s else [] for t, s in zip(terms, src, strict=True)]


def answer(req: TranslateRequest, per_text: list[list[str]], confidences: list[float] | None = None) -> dict[str, Any]:
    """LibreTranslate's answer body from the best and alternative translations of each q string, and nmt's
    extension `confidence` (per q string; clients that do not know it ignore it)."""
    body: dict[str, Any] = {}
    if req.as_list:
        body["translatedText"] = [a[0] for a in per_text]
        if req.alternatives:  # (format=html: [] each, as LibreTranslate answers it)
            body["alternatives"] = [a[1:] for a in per_text]
        if confidences is not None:
            body["confidence"] = confidences
    else:
        body["translatedText"] = per_text[0][0]
        if req.alternatives:
            body["alternatives"] = per_text[0][1:]
        if confidences is not None:
            body["confidence"] = confidences[0]
    if req.auto and req.route:  # the one model for the target, not a detection: confidence says so
        detected = {"confidence": 100.0, "language": req.route[0].source}
        body["detectedLanguage"] = [detected] * len(per_text) if req.as_list else detected
    return body


class Routes:
    """The routes of one app and what they share: the pairs, limits, keys, counters and batcher."""

    def __init__(self, pairs: dict[tuple[str, str], Pair], limits: Limits, access: Access) -> None:
        self.pairs, self.limits, self.access = pairs, limits, access
        self.metrics = Metrics()
        self.limiter = RateLimiter(access.req_limit) if access.req_limit >= 0 else None
        self.batcher = Batcher(
            max_queue=limits.max_queue,
            max_wait_s=limits.max_wait_ms / 1000,
            batch_tokens=limits.batch_tokens,
            on_batch=self.log_batch,
        )

    def log_batch(self, report: BatchReport) -> None:
        self.metrics.batch(report)
        if report.requests or report.dropped:
            extra = "".join(
                f", {n} {what}" for n, what in ((report.dropped, "dropped"), (report.failed, "failed")) if n
            )
            info(
                f"batch: {report.requests} requests, {report.sentences} lines, {report.src_tokens} source tokens, "
                f"waited {report.waited_s * 1000:.0f} ms, decoded in {report.seconds * 1000:.0f} ms{extra}"
            )

    def admit(self, request: Request, params: dict[str, Any]) -> None:
        """The key check and the per-minute limit, in LibreTranslate's order and words."""
        access = self.access
        refused = access.check_key(params.get("api_key"))
        if refused:
            raise ApiError(*refused)
        if self.limiter is not None:
            identity = (
                f"key {params['api_key']}" if access.api_keys else f"address {getattr(request.client, 'host', '')}"
            )
            wait_s = self.limiter.hit(identity)
            if wait_s is not None:
                retry = str(max(1, math.ceil(wait_s)))
                raise ApiError(429, f"Slowdown: {access.req_limit} per 1 minute", headers={"retry-after": retry})

    async def translate(self, request: Request) -> Response:
        try:
            params = await read_params(request, self.limits)
            self.admit(request, params)
            req = parse_translate(params, self.pairs, self.limits)
        except ApiError as exc:
            if exc.status == 499:  # the client is gone: nothing can be sent, the status is for /metrics
                return Response(status_code=499)
            return error(exc.status, exc.message, exc.headers)
        if not req.route:
            return JSONResponse(answer(req, [[text] for text in req.texts]))
        if req.html:
            return await self.translate_html(request, req)
        flat = [line for text_lines in req.lines for line in text_lines]
        nbest = min(req.alternatives + 1, req.route[-1].decode.beam)
        rows: list[list[str]] = [[line] for line in flat]
        for step, pair in enumerate(req.route):  # a pivot: the first step's best translations are the input
            last = step == len(req.route) - 1
            src, truncated = source_ids(pair.loaded, [row[0] for row in rows], pair.marks)
            if truncated:
                self.metrics.truncated(truncated)
                info(f"{truncated} lines of a request were longer than {pair.max_len - 1} source tokens: truncated")
            terms = request_terms(req, pair, [row[0] for row in rows], src)
            try:
                result = await self.decode(request, pair, src, nbest if last else 1, confidence=last, terms=terms)
            except queue.Full:
                return error(429, "Slowdown: too many requests are waiting; try again later")
            if result is None or isinstance(result, BaseException):
                return failed(result)
            rows = [[t.text for t in translations] for translations in result]
            line_confidence = [translations[0].confidence for translations in result]
        per_text: list[list[str]] = []  # per q string: nbest texts
        confidences: list[float] = []  # per q string: the mean of its translated lines' confidences
        offset = 0
        for text_lines in req.lines:
            chunk = rows[offset : offset + len(text_lines)]
            found = [c for c, row in zip(line_confidence[offset : offset + len(text_lines)], chunk) if row[0] and c]
            confidences.append(round(sum(found) / len(found), 4) if found else 0.0)
            offset += len(text_lines)
            per_text.append(["\n".join(row[k] for row in chunk) for k in range(nbest)])
        headers = {PIVOT_HEADER: req.pivot} if req.pivot else None
        return JSONResponse(answer(req, per_text, confidences), headers=headers)

    async def translate_html(self, request: Request, req: TranslateRequest) -> Response:
        """format=html: each q string an HTML document, its text translated in units with word alignments
        and its markup put back (`nmt.decode.markup`, as `nmt translate --format html`)."""
        pair = req.route[0]
        stats = MarkupStats()
        fragments = prepare_fragments(req.texts, fits=fits_model(pair.loaded, pair.marks), stats=stats)
        if stats.repairs:
            self.metrics.html_repaired(stats.repaired_lines)
        texts = fragments.texts
        src, _ = source_ids(pair.loaded, texts, pair.marks)
        terms = request_terms(req, pair, texts, src)
        try:
            result = await self.decode(request, pair, src, 1, texts=texts, terms=terms)
        except queue.Full:
            return error(429, "Slowdown: too many requests are waiting; try again later")
        if result is None or isinstance(result, BaseException):
            return failed(result)
        done = [(t[0].text, t[0].alignment) for t in result]
        # alternatives: none for HTML (an empty list each, as LibreTranslate answers format=html)
        return JSONResponse(answer(req, [[html] for html in render_fragments(fragments, done)]))

    async def decode(
        self,
        request: Request,
        pair: Pair,
        src: list[list[int]],
        nbest: int,
        *,
        texts: list[str] | None = None,
        confidence: bool = False,
        terms: list[Terms] | None = None,
    ) -> Result | None:
        """The lines `src` decoded by the batcher (word-aligned when their `texts` are given); None when the
        client left (or the shutdown timeout cancelled the request) first, and the job is dropped from its
        batch. queue.Full when full."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()

        def done(result: Result) -> None:
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))

        job = Job(pair, src, nbest, done, texts=texts, confidence=confidence, terms=terms)
        self.batcher.submit(job)
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the client left, or the shutdown timeout cancelled this request: drop it from its batch
            gone.cancel()
            job.cancelled = not future.done()
        return None if job.cancelled else future.result()

    async def get_languages(self, request: Request) -> Response:
        return JSONResponse(languages(self.pairs))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pairs": [pair.key for pair in self.pairs.values()]})

    async def get_metrics(self, request: Request) -> Response:
        if self.access.api_keys is not None:
            bearer = request.headers.get("authorization", "")
            key = bearer[7:].strip() if bearer[:7].lower() == "bearer " else request.query_params.get("api_key")
            refused = self.access.check_key(key)
            if refused:
                return error(*refused)
        return PlainTextResponse(
            self.metrics.render(queue_depth=self.batcher.depth()),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error(status, str(detail))


def build_app(
    pairs: dict[tuple[str, str], Pair], limits: Limits, *, access: Access | None = None
) -> tuple[Starlette, Batcher]:
    """The app (its counters as `app.state.metrics`) and its batcher; whoever serves the app runs
    `batcher.run()` (the app's shutdown closes the batcher once every request has been answered)."""
    routes = Routes(pairs, limits, access or Access())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, routes.batcher.close)

    app = Starlette(
        routes=[
            Route("/translate", routes.translate, methods=["POST"]),
            Route("/languages", routes.get_languages, methods=["GET", "POST"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/metrics", routes.get_metrics, methods=["GET"]),
        ],
        middleware=[Middleware(Counted, metrics=routes.metrics)],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.metrics = routes.metrics
    return app, routes.batcher
