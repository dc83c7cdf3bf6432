"""One error family. Every error neve raises on purpose is a NeveError, and carries what
it becomes on the wire: an HTTP status, OpenAI's error type and code, the parameter at
fault, and how long to wait before retrying. The API turns any of them into OpenAI's
error shape in one place (api/errors.py); the CLI prints its message.

A subclass fixes the status and type; `code` names the particular problem where one
status covers several (an upload's unsupported file and its oversized file are both
client errors, but a client branches on which)."""

from __future__ import annotations

from collections.abc import Iterable


class NeveError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"
    retry_after: int | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


def unexpected(exc: BaseException) -> NeveError:
    """What a client is told of a bug: its kind, not its details."""
    return NeveError(f"internal error: {exc.__class__.__name__}")


# --- the client's doing (4xx) -----------------------------------------------------------


class BadRequest(NeveError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextTooLong(BadRequest):
    code = "context_length_exceeded"


class TokenOutOfRange(BadRequest):
    code = "invalid_token_id"


class ModelNotFound(BadRequest):
    """A request naming a model no engine serves: a bad request, answered 404 as OpenAI
    answers it (and so, like any bad request, a relay row's NULL rather than a failed
    batch)."""

    status = 404
    code = "model_not_found"

    @classmethod
    def among(cls, model: str, served: Iterable[str]) -> ModelNotFound:
        """`model` asked of a server that has `served`."""
        has = ", ".join(map(repr, served))
        return cls(f"the model {model!r} does not exist; this server has {has}", param="model")

    @classmethod
    def embedding(cls, model: str | None) -> ModelNotFound:
        """An embedding model asked of an engine that serves none."""
        return cls(f"the embedding model {model!r} does not exist here", param="model")


class Unauthorized(NeveError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(NeveError):
    status = 403
    type = "invalid_request_error"
    code = "forbidden"


class NotFound(NeveError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(NeveError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class TooLarge(NeveError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(NeveError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ClientGone(NeveError):
    """The client disconnected before its whole answer was ready; nobody reads the
    answer, and nginx's 499 marks it in logs and metrics as the client's doing."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


# --- ours, or to be waited out (5xx and 429) ---------------------------------------------


class Overloaded(NeveError):
    status = 429
    type = "rate_limit_error"
    code = "overloaded"
    retry_after = 1


class NotReady(NeveError):
    status = 503
    code = "model_not_ready"
    retry_after = 2


class Unavailable(NeveError):
    """Something the answer needs (an upstream, a model's files, the database) cannot be
    reached now."""

    status = 503
    code = "unavailable"


class ConfigError(NeveError):
    """Settings that cannot work: the CLI names the setting and exits."""

    code = "bad_configuration"
