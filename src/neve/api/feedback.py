"""Feedback in (POST /v1/feedback) and out (GET /v1/feedback, as JSON, CSV or JSONL), and
the monitoring summary over the request log and feedback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator

from neve.api.auth import caller
from neve.api.state import state_of
from neve.errors import BadRequest, Forbidden
from neve.protocol.neve import FeedbackIn, FeedbackList, FeedbackRow
from neve.store import feedback as store_feedback
from neve.store import usage
from neve.store.feedback import COLUMNS, FeedbackFilter

router = APIRouter(prefix="/v1")

# At most four digits: 9999d reaches back 27 years, well inside what dates can hold.
WINDOW = re.compile(r"^0*([1-9][0-9]{0,3})([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DB_INT_MAX = 2**63 - 1  # a database integer's largest: a number past it cannot be asked for


def _iso_time(value: object) -> object:
    """ISO 8601 only, as documented (pydantic alone would read a number as Unix time)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[\d.]+([eE][+-]?\d+)?\s*", value):
        raise ValueError("must be an ISO 8601 time such as 2026-11-21T09:00:00Z")
    return value


Time = Annotated[dt.datetime, BeforeValidator(_iso_time)]


@router.post(
    "/feedback",
    status_code=201,
    response_model=None,
    responses={201: {"model": FeedbackRow}, 200: {
        "model": FeedbackRow, "description": "a run_id already stored: that row, unchanged"}},
)  # fmt: skip
def post_feedback(body: FeedbackIn, request: Request) -> FeedbackRow | JSONResponse:
    allowed = state_of(request).settings.feedback_scores
    if body.score not in allowed:
        raise BadRequest(
            f"score: {body.score} is not one of {allowed} (setting feedback_scores)",
            param="score",
        )
    row, new = store_feedback.add_feedback(
        state_of(request).store, body.model_dump(), caller(request).user
    )
    if not new:  # a retry of a row already stored: the stored row, not a second one
        return JSONResponse(FeedbackRow(**row).model_dump(mode="json"), status_code=200)
    state_of(request).metrics.feedback.labels(str(body.score)).inc()
    return FeedbackRow(**row)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # a time without a zone is read as UTC
    return value


_TEXT = {"schema": {"type": "string"}}


@router.get(
    "/feedback",
    response_model=None,
    responses={200: {"model": FeedbackList, "content": {"text/csv": _TEXT,
                                                        "application/x-ndjson": _TEXT}}},
)  # fmt: skip
def get_feedback(
    request: Request,
    since: Time | None = None,
    until: Time | None = None,
    score: Annotated[int | None, Query(ge=-DB_INT_MAX - 1, le=DB_INT_MAX)] = None,
    model: str | None = None,
    user: str | None = None,
    conversation_id: str | None = None,
    format: Literal["json", "csv", "jsonl"] = "json",
    order: Literal["oldest", "newest"] = "oldest",
    limit: Annotated[
        int | None, Query(ge=1, le=DB_INT_MAX, description="default: 1000 for json, all else")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> FeedbackList | Response:
    """Feedback rows, oldest first unless order=newest. A caller who is not an admin sees
    their own only."""
    who = caller(request)
    where = FeedbackFilter(
        since=_utc(since),
        until=_utc(until),
        score=score,
        model=model,
        user=user if who.is_admin else who.user,
        conversation_id=conversation_id,
    )
    if limit is None and format == "json":
        limit = 1000
    rows = store_feedback.find_feedback(
        state_of(request).store, where, limit=limit, offset=offset, newest_first=order == "newest"
    )
    if format == "json":
        return FeedbackList(data=[FeedbackRow(**r) for r in rows])
    if format == "jsonl":
        text = "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in rows)
        return _download(text, "application/x-ndjson", "feedback.jsonl")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return _download(out.getvalue(), "text/csv; charset=utf-8", "feedback.csv")


def _download(text: str, media_type: str, name: str) -> Response:
    return Response(
        text,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/monitoring/summary", response_model=None)
def monitoring_summary(
    request: Request,
    window: Annotated[
        str,
        # Documented here, checked below: the check's message says what a duration is.
        Query(
            description="a duration: 15m, 1h, 24h, 7d",
            json_schema_extra={"pattern": WINDOW.pattern},
        ),
    ] = "24h",
    buckets: Annotated[int, Query(ge=1, le=500)] = 30,
) -> dict[str, object]:
    """Request rate, latency and time-to-first-token percentiles, tokens/s, error rate and
    feedback over the last `window` (e.g. 15m, 1h, 24h, 7d). Admins only."""
    if not caller(request).is_admin:
        raise Forbidden("monitoring needs an admin key")
    match = WINDOW.match(window)
    if match is None:
        raise BadRequest(
            f"window: {window!r} is not a duration like 15m, 1h, 24h or 7d (at most 9999d)",
            param="window",
        )
    state_of(request).request_log.flush()  # the requests just made count too
    until = dt.datetime.now(dt.UTC)
    since = until - dt.timedelta(seconds=int(match[1]) * UNIT_SECONDS[match[2]])
    return {"window": window, **usage.summary(state_of(request).store, since, until, buckets)}
