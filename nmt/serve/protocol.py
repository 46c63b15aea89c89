"""LibreTranslate's requests: the limits, reading a body (JSON or form), and a `POST /translate`'s fields.

`POST /translate` takes JSON or form bodies (urlencoded or multipart) with `q` (a string or
a list of strings; in a form, `q` repeated is a list), `source`, `target`, `format`
(`text` or `html`), `alternatives` (extra n-best translations), `api_key`, and nmt's extension
`glossary`: a list of [source term, target term] pairs (in a form, that list as a JSON string)
whose target terms the translation must hold where the source term occurs (`nmt.decode.glossary`).
Unknown fields are ignored, as LibreTranslate clients expect. Every failure is an
`ApiError` with LibreTranslate's status code and, where it has one, its message: 400 for a
bad request, 408 for a body that did not arrive within the read timeout, 413 for a body
larger than the limits allow; 499 (nothing is sent) for a client that left mid-body.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from nmt.decode.glossary import Glossary, parse_pairs
from nmt.serve.models import Pair, language_codes, route


@dataclass(frozen=True)
class Limits:
    """The server's request limits and batching settings (`nmt serve` options)."""

    char_limit: int = 5000  # characters per request (all of q); -1 = none (LibreTranslate's --char-limit)
    batch_limit: int = 128  # strings in a q list; -1 = none (LibreTranslate's --batch-limit)
    line_limit: int = 500  # lines per request, all of q after splitting at line breaks; -1 = none
    max_queue: int = 256  # requests waiting for the decoder before 429
    max_wait_ms: float = 5.0  # how long the decoder waits for more requests to join a batch
    batch_tokens: int = 4096  # source tokens the decoder gathers into one batch
    body_timeout_s: float = 30.0  # seconds a request's body may take to arrive, else 408

    @property
    def max_body_bytes(self) -> int:
        """Bodies past this are refused before parsing: 4 bytes per character (UTF-8) plus room for
        the other fields and the form/JSON quoting (x3), at least 1 MiB; 64 MiB without a char limit."""
        return 64 << 20 if self.char_limit < 0 else max(1 << 20, 12 * self.char_limit + 65536)


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def read_body(request: Request, limits: Limits) -> bytes:
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Invalid request: the body ({int(declared):,} bytes) is over the limit ({limit:,} bytes)")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"Invalid request: the body is over the limit ({limit:,} bytes)")
                chunks.append(chunk)
    except TimeoutError:
        message = f"Request timeout: the body took longer than {limits.body_timeout_s:g} s to arrive"
        raise ApiError(408, message, headers={"connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(499, "the client closed the connection before sending its whole body") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 for whatever Python's json module cannot take (a lone surrogate
    included: it decodes, but no text can hold it)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, f"Invalid request: the body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    except RecursionError:
        raise ApiError(400, "Invalid request: the JSON body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid request: the body is not valid JSON ({exc})") from None
    except ValueError as exc:  # a number of more than 4,300 digits (sys.get_int_max_str_digits)
        raise ApiError(400, f"Invalid request: the JSON body cannot be read ({str(exc).split(':')[0]})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Invalid request: the JSON body must be an object with q, source and target")
    todo: list[Any] = [data]
    while todo:  # iterative: the body may be as deep as json.loads allows
        value = todo.pop()
        if isinstance(value, dict):
            todo += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            todo += value
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                code = ord(value[exc.start])
                raise ApiError(400, f"Invalid request: the JSON body holds a lone surrogate (\\u{code:04x})") from None
    return data


async def read_params(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's fields from a JSON or form body (and the query string); lists for repeated form keys."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limits)
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
        params.update(parse_json(body))
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
    lines: list[list[str]]  # each q string split at its line breaks
    as_list: bool  # q was a list: answer with a list
    route: tuple[Pair, ...]  # the pair, or two through a pivot; () when source and target are the same language
    alternatives: int
    auto: bool  # source was "auto"
    html: bool = False  # format=html: each q string is an HTML document, translated with its markup kept
    glossary: Glossary | None = None  # nmt's extension: terms the translation must hold

    @property
    def pivot(self) -> str | None:
        """The language translated through, when the route has two steps."""
        return self.route[0].target if len(self.route) > 1 else None


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
    if fmt not in ("text", "html"):
        raise ApiError(400, f"Invalid request: format {fmt!r} is not supported; use text or html")
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
    lines = [text.split("\n") for text in texts]
    count = sum(len(t) for t in lines)
    if limits.line_limit >= 0 and count > limits.line_limit:
        raise ApiError(400, f"Invalid request: request ({count} lines) exceeds text limit ({limits.line_limit} lines)")
    source, target = params["source"], params["target"]
    supported = ", ".join(f"{s}->{t}" for s, t in sorted(pairs))
    auto = source == "auto"
    if auto:
        found = [pair for (s, t), pair in pairs.items() if t == target]
        if len(found) != 1:
            raise ApiError(
                400,
                f"Invalid request: source auto needs language detection, which this server does not do, and "
                f"{len(found)} of its language pairs translate into {target!r}; name the source language "
                f"(supported: {supported})",
            )
        steps: tuple[Pair, ...] | None = (found[0],)
    elif source == target and source in language_codes(pairs):
        steps = ()  # as LibreTranslate (Argos Translate) does: a language translates into itself unchanged
    else:
        steps = route(pairs, source, target)
    if steps is None:
        raise ApiError(
            400,
            f"Invalid request: no model for {source}->{target}, directly or through one pivot language; "
            f"supported: {supported}",
        )
    if fmt == "html" and len(steps) > 1:
        raise ApiError(
            400, f"Invalid request: format html needs a model for {source}->{target}; a pivot route cannot keep markup"
        )
    glossary = parse_glossary(params.get("glossary"), steps)
    return TranslateRequest(texts, lines, as_list, steps, alternatives, auto, html=fmt == "html", glossary=glossary)


def parse_glossary(value: object, steps: tuple[Pair, ...]) -> Glossary | None:
    """The request's `glossary` (None when absent or empty); ApiError 400 for a malformed one, or one the
    route cannot enforce (a pivot, or a model decoded by CTranslate2)."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, str):  # a form field carries the list as JSON
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(
                400, "Invalid request: glossary must be a list of [source term, target term] pairs"
            ) from None
    try:
        glossary = parse_pairs(value, where="glossary")
    except ValueError as err:
        raise ApiError(400, f"Invalid request: {err}") from None
    if len(steps) > 1:
        raise ApiError(
            400, "Invalid request: glossary needs a model for the pair itself; a pivot route cannot hold terms"
        )
    if steps and not steps[0].takes_terms:
        raise ApiError(
            400,
            f"Invalid request: glossary terms need nmt's constrained beam search, but {steps[0].key} is served by an "
            "exported CTranslate2 model, which cannot require words in its output; serve the checkpoint (.pt)",
        )
    return glossary
