"""Monitoring: feedback (counts by score, score over time, the rows, filtered, as CSV) and,
for admins, requests per minute, latency and time-to-first-token percentiles, tokens/s
and error rate over time."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from neve.client import HubError
from neve.ui import session

# The summary's window names (the API parses them) and their length, for the table's filter.
WINDOWS = {"15m": dt.timedelta(minutes=15), "1h": dt.timedelta(hours=1),
           "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}  # fmt: skip
BUCKETS = 30
TABLE_ROWS = 1000
SCORES = {"all": None, "👍 up": 1, "👎 down": -1}

admin = session.gate()["role"] == "admin"
client = session.client()


def chart(summary: dict[str, Any], title: str, columns: dict[str, str]) -> None:
    """One line per column over the window's buckets, with a point per bucket that has
    data (a lone bucket would draw no line at all)."""
    frame = pd.DataFrame(summary["series"])
    frame["time"] = _utc(frame["start"])
    shown = frame[["time", *columns]].rename(columns=columns)
    points = shown.melt("time", var_name="series", value_name="value").dropna()
    window = [t.isoformat() for t in _utc(pd.Series([summary["since"], summary["until"]]))]
    time = alt.X("time:T", title="UTC", scale=alt.Scale(domain=window))
    st.caption(title)
    st.altair_chart(
        alt.Chart(points)
        .mark_line(point=True)
        .encode(x=time, y=alt.Y("value:Q", title=None), color=alt.Color("series:N", title=None))
        .properties(height=220)
    )


def usage(window: str) -> dict[str, Any] | None:
    try:
        summary = client.monitoring(window, BUCKETS)
    except HubError as exc:
        st.error(f"Cannot read the monitoring summary: {exc}")
        return None
    whole = summary["requests"]
    cells = st.columns(6)
    cells[0].metric("Requests", whole["requests"])
    cells[1].metric("Errors", f"{whole['error_rate']:.1%}")
    cells[2].metric("Latency p50", _ms(whole["latency_ms"]["p50"]))
    cells[3].metric("TTFT p50", _ms(whole["ttft_ms"]["p50"]))
    cells[4].metric("Tokens/s", _number(whole["tokens_per_second"]))
    cells[5].metric("Feedback", summary["feedback"]["count"])
    left, right = st.columns(2)
    with left:
        chart(summary, "Requests per minute", {"per_minute": "requests/min"})
        chart(summary, "Latency (ms)", {"latency_p50_ms": "p50", "latency_p95_ms": "p95"})
        chart(summary, "Tokens per second (decode)", {"tokens_per_second": "tokens/s"})
    with right:
        chart(summary, "Error rate", {"error_rate": "error rate"})
        chart(summary, "Time to first token (ms)", {"ttft_p50_ms": "p50", "ttft_p95_ms": "p95"})
        chart(summary, "Mean feedback score", {"mean_score": "mean score"})
    return summary


def _utc(times: pd.Series) -> pd.Series:
    """Zone-less UTC times: Vega-Lite reads times with an offset inconsistently."""
    return pd.to_datetime(times, utc=True).dt.tz_localize(None)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def feedback_counts(counts: dict[str, int]) -> None:
    st.caption("Feedback by score in this window")
    st.bar_chart(pd.Series(counts, name="count", dtype=int).rename_axis("score"))


def feedback_table(window: str, counts: dict[str, int] | None) -> None:
    st.subheader("Feedback")
    a, b, c = st.columns(3)
    score = SCORES[a.selectbox("Score", list(SCORES))]
    model = b.text_input("Model")
    user = c.text_input("User") if admin else None
    filters = {"score": score, "model": model.strip(), "user": user and user.strip(),
               "since": _since(window)}  # fmt: skip
    try:
        rows = client.feedback(**filters, order="newest", limit=TABLE_ROWS)
    except HubError as exc:
        st.error(f"Cannot read the feedback: {exc}")
        return
    if not rows:
        st.info("No feedback in this window" + (" with these filters." if score or model else "."))
        return
    if counts is None:  # not an admin: their own rows are all there is to count
        counts = dict(Counter(str(row["score"]) for row in rows))
    feedback_counts(counts)
    shown = ["timestamp", "score", "comment", "user_prompt", "assistant_response", "model",
             "username"]  # fmt: skip
    st.dataframe(pd.DataFrame(rows)[shown], hide_index=True)
    st.download_button(
        "Download CSV",
        data=lambda: client.feedback_csv(**filters),
        file_name="feedback.csv",
        mime="text/csv",
        icon=":material/download:",
    )


def _since(window: str) -> str:
    return (dt.datetime.now(dt.UTC) - WINDOWS[window]).isoformat()


def main() -> None:
    st.title("Monitoring")
    window = st.segmented_control("Window", list(WINDOWS), default="24h") or "24h"
    counts = None
    if admin:
        summary = usage(window)
        counts = summary["feedback"]["by_score"] if summary else None
    else:
        st.info("Request charts need an admin key; below is the feedback you gave.")
    feedback_table(window, counts)


main()
