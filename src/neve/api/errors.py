"""Errors as OpenAI shapes them: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from neve.api.guards import ASGIApp, Message, Receive, Scope, Send
from neve.api.protocol import ErrorBody, ErrorResponse
from neve.engine.base import EngineError

log = logging.getLogger("neve.api")


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type, param=param, code=code))
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def engine_error_body(exc: EngineError) -> dict[str, Any]:
    return ErrorResponse(
        error=ErrorBody(message=exc.message, type=exc.type, param=exc.param, code=exc.code)
    ).model_dump()


async def on_engine_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    return error_response(
        exc.status,
        exc.message,
        type=exc.type,
        code=exc.code,
        param=exc.param,
        retry_after=exc.retry_after,
    )


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


async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_validation(exc)
    return error_response(400, message, code="invalid_request", param=param)


async def on_client_gone(_: Request, exc: Exception) -> Response:
    # Nobody reads this: nginx's 499 marks it in logs and metrics as the client's doing.
    return Response(status_code=499)


def unexpected(exc: BaseException) -> EngineError:
    """What a client is told of a bug: its kind, not its details."""
    return EngineError(f"internal error: {exc.__class__.__name__}")


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
            error = unexpected(exc)
            await error_response(500, error.message, type=error.type, code=error.code)(
                scope, receive, send
            )


async def on_database_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", extra={"error": str(exc).splitlines()[0]})
    return error_response(
        503,
        "the database is unavailable; this route needs it (chat does not). Retry shortly.",
        type="server_error",
        code="database_unavailable",
        retry_after=5,
    )


async def on_not_found(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc), code="not_found")


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}")
    response.headers.update(exc.headers or {})
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
