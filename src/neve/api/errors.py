"""neve's errors (neve/errors.py) in OpenAI's shape, and the handlers that bring every
other failure (a request that does not validate, a framework's HTTP error, the database
gone, a bug) into the same shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from neve.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neve.errors import BadRequest, NeveError, Unavailable, unexpected
from neve.protocol import anthropic
from neve.protocol.openai import ErrorBody, ErrorResponse

ANTHROPIC_ROUTES = "/v1/messages"

log = logging.getLogger("neve.api")


def error_response(
    error: NeveError, headers: Mapping[str, str] | None = None, *, path: str = ""
) -> JSONResponse:
    """The one place an error becomes a response: OpenAI's shape, {"error": {message,
    type, param, code}}, or Anthropic's on its routes (`path`), with its status and
    Retry-After when it has one. (A response is an ASGI app too, so the middlewares
    answer with it as well.)"""
    headers = dict(headers or {})
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if path.startswith(ANTHROPIC_ROUTES):
        body = anthropic.error_body(error.status, error.message, error.code)
    else:
        body = _body(error).model_dump()
    return JSONResponse(body, status_code=error.status, headers=headers or None)


def error_event(error: NeveError) -> str:
    """The error as a server-sent event, for a stream that fails after its 200."""
    return f"data: {_body(error).model_dump_json()}\n\n"


def _body(error: NeveError) -> ErrorResponse:
    return ErrorResponse(
        error=ErrorBody(message=error.message, type=error.type, param=error.param, code=error.code)
    )


async def on_neve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NeveError)
    return error_response(exc, path=request.url.path)


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """One sentence naming the first bad field, and that field. A union reports each of
    its forms; a value refused by one of our own checks says more than "not a string"."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "value_error"), errors[0])
    if err["type"] == "json_invalid":
        return f"the request body is not valid JSON: {err['ctx'].get('error', '')}", None
    where = ("body", "query", "path", "header", "cookie")  # where it came, not its name
    loc = [str(p) for n, p in enumerate(err["loc"]) if n or p not in where]
    # Unions report the branch they tried (e.g. "str"); keep the field path only.
    field = ".".join(p for p in loc if not p.startswith(("str", "list[", "function-")))
    if not field:
        return f"the request body is invalid: {err['msg']}", None
    return f"{field}: {err['msg']}", field.split(".")[0]


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_validation(exc)
    return error_response(BadRequest(message, param=param), path=request.url.path)


class LastResort:
    """Where every unexpected exception ends: logged once, answered in OpenAI's shape with
    status 500, and the connection kept usable. (Starlette's own handler re-raises to the
    server, which logs it a second time and, the response being sent, drops the
    connection without `Connection: close`, so a client's next request on it fails.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = ended = False

        async def watched(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.error("unhandled error", exc_info=exc, extra={"path": scope["path"]})
            if ended:
                return
            if started:  # a streamed body cut short: end it, so the connection lives on
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await error_response(unexpected(exc), path=scope["path"])(scope, receive, send)


async def on_database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"error": str(exc).splitlines()[0]})
    return error_response(
        Unavailable(
            "the database is unavailable; this route needs it (chat does not). Retry shortly.",
            code="database_unavailable",
            retry_after=5,
        ),
        path=request.url.path,
    )


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    error = NeveError(str(exc.detail), code=f"http_{exc.status_code}")
    error.status, error.type = exc.status_code, "invalid_request_error"
    response = error_response(error, exc.headers, path=request.url.path)
    if exc.status_code == 405:  # Starlette names the methods of one route; a path may have more
        response.headers["Allow"] = ", ".join(_methods(request))
    return response


def _methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path."""
    methods: set[str] = set()
    for route in request.app.routes:
        matched = isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
        if matched and route.methods:
            methods |= route.methods
    return sorted(methods)
