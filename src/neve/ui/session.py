"""What every page shares: this browser session's API client, sign-in, and waiting for
the hub while it cannot serve."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from neve.client import HubError, NeveClient

# Snowpark Container Services ingress names the signed-in Snowflake user in this header;
# the API believes it only when trust_proxy_identity is set.
PROXY_HEADER = "Sf-Context-Current-User"
UNREACHABLE_RETRY = 2.0


def api_url() -> str:
    url = os.environ.get("NEVE_URL")
    if url:
        return url
    from neve.config import load_settings

    return load_settings().url


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of the browser's request that are passed on to the API."""
    user = headers.get(PROXY_HEADER)
    return {PROXY_HEADER: user} if user else {}


def client() -> NeveClient:
    """One client per browser session, remade when the key or forwarded identity changes."""
    key = st.session_state.get("api_key")
    headers = forwarded(st.context.headers or {})
    wanted = (key, tuple(sorted(headers.items())))
    held: tuple[Any, NeveClient] | None = st.session_state.get("_client")
    if held is None or held[0] != wanted:
        if held is not None:
            held[1].close()
        held = (wanted, NeveClient(api_url(), api_key=key, headers=headers))
        st.session_state["_client"] = held
    return held[1]


def waiting(message: str, retry: float, check: Callable[[], bool]) -> None:
    """Say what the hub is doing, and rerun the page once `check` passes."""
    st.info(f"{message}. Retrying in {retry:g} s.", icon=":material/hourglass_top:")

    @st.fragment(run_every=retry)
    def poll() -> None:
        if check():
            st.rerun()

    poll()


def _answers() -> bool:
    try:
        client().me()
    except HubError as exc:
        return exc.hub_status is not None
    return True


def gate() -> dict[str, Any]:
    """The caller as the API sees them. Every page starts here: when the API wants a key,
    or has never answered this session, the page shows that instead and stops. An API
    that goes away later leaves the page up (with what it was showing) for the page's
    own waiting and retry."""
    try:
        me: dict[str, Any] = client().me()
    except HubError as exc:
        known = st.session_state.get("me")
        if exc.hub_status is not None or known is None:
            _explain(exc)
            st.stop()
        me = known
    st.session_state["me"] = me
    with st.sidebar:
        st.caption(f"Signed in as **{me['user']}** ({me['role']})")
        if st.session_state.get("api_key"):
            st.button("Sign out", on_click=sign_out)
    return me


def _explain(problem: HubError) -> None:
    if problem.hub_status == 401:
        _sign_in_form(bool(st.session_state.get("api_key")))
    elif problem.hub_status is None:
        waiting(f"The API at {api_url()} does not answer", UNREACHABLE_RETRY, _answers)
    else:
        st.error(str(problem))
        st.button("Try again")


def _sign_in_form(rejected: bool) -> None:
    st.title("Sign in")
    if rejected:
        st.error("That key was not accepted (unknown or revoked). Try another.")
    with st.form("sign-in"):
        st.text_input("API key", type="password", key="key_given", help="from `neve keys create`")
        st.form_submit_button("Sign in", type="primary", on_click=_take_key)


def _take_key() -> None:
    key = st.session_state.pop("key_given", "").strip()
    if key:
        st.session_state["api_key"] = key


def sign_out() -> None:
    for name in ("api_key", "me", "conversation_id", "messages"):
        st.session_state.pop(name, None)


def model_ready() -> bool:
    """True when the model can serve; otherwise says why and waits."""
    try:
        ready, detail, retry = client().readiness()
    except HubError:
        waiting(f"The API at {api_url()} does not answer", UNREACHABLE_RETRY, _ready)
        return False
    if ready:
        return True
    if retry is None:
        st.error(f"The hub cannot serve: {detail}. An administrator has to fix its settings.")
        st.button("Check again")
        return False
    waiting(f"The model is not ready yet ({detail})", retry, _ready)
    return False


def _ready() -> bool:
    try:
        return client().readiness()[0]
    except HubError:
        return False
