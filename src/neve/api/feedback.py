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

from neve.api.auth import caller
from neve.api.errors import error_response
from neve.api.neve_protocol import FeedbackIn, FeedbackList, FeedbackRow
from neve.store import feedback as store_feedback
from neve.store import usage
from neve.store.feedback import COLUMNS, FeedbackFilter

router = APIRouter(prefix="/v1")

WINDOW = re.compile(r"^(\d+)([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@router.post("/feedback", status_code=201, response_model=None)
def post_feedback(body: FeedbackIn, request: Request) -> FeedbackRow | JSONResponse:
    allowed = request.app.state.settings.feedback_scores
    if body.score not in allowed:
        return error_response(
            400,
            f"score: {body.score} is not one of {allowed} (setting feedback_scores)",
            code="invalid_request",
            param="score",
        )
    row, new = store_feedback.add_feedback(
        request.app.state.store, body.model_dump(), caller(request).user
    )
    if not new:  # a retry of a row already stored: the stored row, not a second one
        return JSONResponse(FeedbackRow(**row).model_dump(mode="json"), status_code=200)
    request.app.state.metrics.feedback.labels(str(body.score)).inc()
    return FeedbackRow(**row)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # a time without a zone is read as UTC
    return value


@router.get("/feedback", response_model=None)
def get_feedback(
    request: Request,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    score: int | None = None,
    model: str | None = None,
    user: str | None = None,
    conversation_id: str | None = None,
    format: Literal["json", "csv", "jsonl"] = "json",
    order: Literal["oldest", "newest"] = "oldest",
    limit: Annotated[
        int | None, Query(ge=1, description="default: 1000 for json, all else")
    ] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
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
        request.app.state.store, where, limit=limit, offset=offset, newest_first=order == "newest"
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
    window: str = "24h",
    buckets: Annotated[int, Query(ge=1, le=500)] = 30,
) -> dict[str, object] | JSONResponse:
    """Request rate, latency and time-to-first-token percentiles, tokens/s, error rate and
    feedback over the last `window` (e.g. 15m, 1h, 24h, 7d). Admins only."""
    if not caller(request).is_admin:
        return error_response(403, "monitoring needs an admin key", code="forbidden")
    match = WINDOW.match(window)
    if match is None or int(match[1]) == 0:
        return error_response(
            400,
            f"window: {window!r} is not a duration like 15m, 1h, 24h or 7d",
            code="invalid_request",
            param="window",
        )
    request.app.state.request_log.flush()  # the requests just made count too
    until = dt.datetime.now(dt.UTC)
    since = until - dt.timedelta(seconds=int(match[1]) * UNIT_SECONDS[match[2]])
    return {"window": window, **usage.summary(request.app.state.store, since, until, buckets)}
