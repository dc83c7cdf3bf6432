"""The request log: written in the background, so a request never waits on the database
and a database that is away loses nothing until the buffer fills; and the monitoring
summary read from it and from feedback."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections import deque
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError

from neve.store.db import Store
from neve.store.tables import Feedback, RequestLog

log = logging.getLogger("neve.store")


class RequestLogWriter:
    """Rows queue in memory and go to the database in batches from one thread. While the
    database is away they wait; beyond `capacity` the oldest are dropped and counted."""

    def __init__(self, store: Store, capacity: int, interval: float = 0.5) -> None:
        self.store = store
        self.interval = interval
        self.dropped = 0
        self._rows: deque[dict[str, Any]] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()  # one writer at a time: the thread or a flush
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="neve-request-log", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def add(self, row: dict[str, Any]) -> None:
        if len(self._rows) >= self._capacity:
            self._rows.popleft()
            self.dropped += 1
        self._rows.append(row)

    def flush(self) -> bool:
        """Write what is queued now; False when the database refused."""
        with self._lock:
            while self._rows:
                batch = [self._rows.popleft() for _ in range(min(len(self._rows), 500))]
                try:
                    with self.store.writing() as session:
                        session.execute(insert(RequestLog), batch)
                except SQLAlchemyError as exc:
                    self._rows.extendleft(reversed(batch))
                    if not self._failing:
                        log.warning("request log waits for the database", extra={"error": str(exc)})
                    self._failing = True
                    return False
            if self._failing:
                log.warning("request log writes again", extra={"dropped": self.dropped})
            self._failing = False
            return True

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval if not self._failing else self.interval * 4)
            self.flush()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _spread(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in (50, 95, 99)}


def _decode_speed(rows: list[Any]) -> float | None:
    """Generated tokens per second of generating (after the first token), over answers."""
    tokens = seconds = 0.0
    for r in rows:
        if r.completion_tokens and r.ttft_ms is not None and r.latency_ms > r.ttft_ms:
            tokens += r.completion_tokens
            seconds += (r.latency_ms - r.ttft_ms) / 1000
    return tokens / seconds if seconds else None


def summary(store: Store, since: dt.datetime, until: dt.datetime, buckets: int) -> dict[str, Any]:
    """Request rate, latencies, errors, tokens and feedback over [since, until), whole and
    in `buckets` equal slices."""
    with store.reading() as session:
        requests = (
            session.execute(
                select(RequestLog).where(RequestLog.time >= since, RequestLog.time < until)
            )
            .scalars()
            .all()
        )
        feedback = session.execute(
            select(Feedback.timestamp, Feedback.score).where(
                Feedback.timestamp >= since, Feedback.timestamp < until
            )
        ).all()
    span = (until - since).total_seconds()
    width = span / buckets
    by_bucket: list[list[Any]] = [[] for _ in range(buckets)]
    scores_by_bucket: list[list[int]] = [[] for _ in range(buckets)]
    for r in requests:
        by_bucket[min(buckets - 1, int((r.time - since).total_seconds() // width))].append(r)
    for t, s in feedback:
        scores_by_bucket[min(buckets - 1, int((t - since).total_seconds() // width))].append(s)
    series = [
        {
            "start": (since + dt.timedelta(seconds=i * width)).isoformat(),
            **_requests(by_bucket[i], width),
            **_scores(scores_by_bucket[i], flat=True),
        }
        for i in range(buckets)
    ]
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket_seconds": width,
        "requests": _requests(list(requests), span, nested=True),
        "feedback": _scores([s for _, s in feedback]),
        "series": series,
    }


def _requests(rows: list[Any], seconds: float, nested: bool = False) -> dict[str, Any]:
    errors = sum(1 for r in rows if r.status >= 400)
    answered = [r for r in rows if r.model is not None and r.status < 400]
    latency = [r.latency_ms for r in answered]
    ttft = [r.ttft_ms for r in answered if r.ttft_ms is not None]
    out: dict[str, Any] = {
        "requests": len(rows),
        "errors": errors,
        "error_rate": errors / len(rows) if rows else 0.0,
        "per_minute": len(rows) / seconds * 60,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in rows),
        "completion_tokens": sum(r.completion_tokens or 0 for r in rows),
        "tokens_per_second": _decode_speed(answered),
    }
    if nested:
        out["latency_ms"] = _spread(latency)
        out["ttft_ms"] = _spread(ttft)
    else:
        out["latency_p50_ms"] = percentile(latency, 50)
        out["latency_p95_ms"] = percentile(latency, 95)
        out["ttft_p50_ms"] = percentile(ttft, 50)
        out["ttft_p95_ms"] = percentile(ttft, 95)
    return out


def _scores(scores: list[int], flat: bool = False) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for s in scores:
        counts[str(s)] = counts.get(str(s), 0) + 1
    mean = sum(scores) / len(scores) if scores else None
    if flat:
        return {"feedback": len(scores), "mean_score": mean}
    return {"count": len(scores), "by_score": counts, "mean_score": mean}
