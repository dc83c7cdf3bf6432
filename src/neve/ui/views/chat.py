"""Chat: with the model alone, or grounded in the documents (with citations). Answers
stream in, can be stopped, and take thumbs up or down; conversations are kept by the hub."""

from __future__ import annotations

import textwrap
from typing import Any

import streamlit as st

from neve.client import HubError
from neve.ui import session

MODES = {"Chat": "", "Documents": "rag:"}  # Documents asks for the model as rag:<model>
THUMBS = {1: 1, 0: -1}  # st.feedback's thumbs up and down, as the API's scores
SNIPPET_CHARS = 240
TITLE_CHARS = 60

session.gate()
client = session.client()
state = st.session_state
state.setdefault("messages", [])
state.setdefault("feedback_sent", set())


def new_chat() -> None:
    state.conversation_id = None
    state.messages = []
    state.pop("failure", None)


def resume(conversation_id: str) -> None:
    try:
        found = client.conversation(conversation_id)
    except HubError as exc:
        state.notice = f"Cannot open that conversation: {exc}"
        return
    state.conversation_id = conversation_id
    state.messages = found.get("messages") or []
    state.pop("failure", None)


def forget(conversation_id: str) -> None:
    try:
        client.delete_conversation(conversation_id)
    except HubError as exc:
        state.notice = f"Cannot delete that conversation: {exc}"
        return
    if state.get("conversation_id") == conversation_id:
        new_chat()


def keep(message: dict[str, Any]) -> None:
    """Add a message to the chat and store it with the hub (the first one makes the
    conversation). A hub that cannot store it does not stop the chat; the page says so."""
    try:
        if not state.get("conversation_id"):
            title = textwrap.shorten(message["content"], TITLE_CHARS, placeholder=" …")
            state.conversation_id = client.create_conversation(title or "New chat")["id"]
        fields = {k: message.get(k) for k in ("role", "content", "reasoning", "model", "citations")}
        message["id"] = client.add_message(state.conversation_id, **fields)["id"]
    except HubError as exc:
        state.notice = f"This chat is not being saved: {exc}"
    state.messages.append(message)


def sidebar() -> dict[str, Any]:
    with st.sidebar:
        grounded = "Documents: answers grounded in your documents, with sources"
        mode = st.radio("Mode", list(MODES), horizontal=True, key="mode", help=grounded)
        try:
            names = [m["id"] for m in client.models() if m.get("kind", "chat") == "chat"]
        except HubError as exc:
            names = []
            st.warning(f"Cannot list the models: {exc}")
        model = st.selectbox("Model", names)  # no key: a new list (the hub got ready) starts anew
        with st.expander("Settings"):
            temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.05, key="temperature")
            max_tokens = st.number_input("Max tokens", 1, 32768, 512, key="max_tokens")
            system = st.text_area("System prompt", key="system_prompt")
        st.button("New chat", on_click=new_chat, icon=":material/add:", width="stretch")
        history()
    return {
        "model": f"{MODES[mode]}{model}" if model else None,
        "temperature": temperature,
        "max_tokens": int(max_tokens),
        "system": system.strip(),
    }


def history() -> None:
    try:
        conversations = client.conversations(limit=50)
    except HubError as exc:
        st.caption(f"History unavailable: {exc}")
        return
    if conversations:
        st.caption("History")
    for c in conversations:
        left, right = st.columns([5, 1], vertical_alignment="center")
        current = c["id"] == state.get("conversation_id")
        left.button(c["title"], key=f"open-{c['id']}", on_click=resume, args=(c["id"],),
                    type="primary" if current else "tertiary")  # fmt: skip
        right.button(":material/delete:", key=f"delete-{c['id']}", on_click=forget, args=(c["id"],),
                     help="Delete this conversation", type="tertiary")  # fmt: skip


def show_citations(citations: list[dict[str, Any]]) -> None:
    st.caption("Sources")
    for n, c in enumerate(citations, 1):
        page = f", page {c['page']}" if c.get("page") else ""
        snippet = textwrap.shorten(c.get("text", ""), SNIPPET_CHARS, placeholder=" …")
        st.markdown(f"**[{n}] {c.get('title') or c.get('path')}**{page}  \n{snippet}")


def show(message: dict[str, Any], index: int) -> None:
    with st.chat_message(message["role"]):
        if message.get("reasoning"):
            with st.expander("Thinking"):
                st.markdown(message["reasoning"])
        st.markdown(message["content"])
        if message.get("stopped"):
            st.caption("Stopped.")
        if message.get("citations"):
            show_citations(message["citations"])
        if message["role"] == "assistant":
            feedback(message, index)


def feedback(message: dict[str, Any], index: int) -> None:
    key = message.get("id") or f"unsaved-{index}"
    sent = key in state.feedback_sent
    thumbs = st.feedback("thumbs", key=f"thumbs-{key}", disabled=sent)
    if sent:
        st.caption("Thanks, your feedback is recorded.")
        return
    if thumbs is None:
        return
    with st.form(f"feedback-{key}"):
        comment = st.text_input("Comment (optional)", key=f"comment-{key}")
        if not st.form_submit_button("Send feedback"):
            return
    asked = next((m["content"] for m in reversed(state.messages[:index]) if m["role"] == "user"),
                 None)  # fmt: skip
    try:
        client.send_feedback(
            THUMBS[thumbs],
            comment=comment.strip() or None,
            message_id=message.get("id"),
            run_id=message.get("id"),  # sending twice stores once
            conversation_id=state.get("conversation_id"),
            prompt=None if message.get("id") else asked,
            response=None if message.get("id") else message["content"],
            model=message.get("model"),
        )
    except HubError as exc:
        st.error(f"Feedback was not recorded: {exc}")
        return
    state.feedback_sent.add(key)
    st.rerun()


def answer(params: dict[str, Any]) -> None:
    """Stream the answer to the conversation so far. Stop works because any click stops
    this run (at its next update, closing the stream, so the hub stops generating) and
    starts a new one, which keeps what had come (see `left_over`)."""
    history = [{"role": m["role"], "content": m["content"]} for m in state.messages]
    if params["system"]:
        history.insert(0, {"role": "system", "content": params["system"]})
    sampling = {k: params[k] for k in ("model", "temperature", "max_tokens")}
    reply: dict[str, Any] = {"role": "assistant", "content": "", "reasoning": "",
                             "model": params["model"], "citations": None}  # fmt: skip
    state.streaming = reply  # the new run after a Stop may begin before this one ends
    with st.chat_message("assistant"):
        thinking_slot, body, sources = st.empty(), st.empty(), st.container()
        st.button("Stop", icon=":material/stop:")
        thinking = None
        stream = client.chat_stream(history, **sampling)
        try:
            for delta in stream:
                if delta.citations is not None:
                    reply["citations"] = delta.citations
                    with sources:
                        show_citations(delta.citations)
                if delta.reasoning:
                    if thinking is None:
                        thinking = thinking_slot.expander("Thinking").empty()
                    reply["reasoning"] += delta.reasoning
                    thinking.markdown(reply["reasoning"])
                if delta.content:
                    reply["content"] += delta.content
                    body.markdown(reply["content"] + "▌")
        except HubError as exc:
            state.pop("streaming", None)
            state.failure = f"The answer was cut off: {exc}"
        else:
            state.pop("streaming", None)
            keep(reply)
        finally:
            stream.close()
    st.rerun()  # shows the answer with its feedback, or the failure with its Retry


def left_over() -> None:
    """An answer whose run was stopped (Stop, or leaving the page): kept as it stood."""
    reply = state.pop("streaming", None)
    if reply and (reply["content"] or reply["reasoning"]):
        reply["stopped"] = True
        keep(reply)


def main() -> None:
    left_over()
    params = sidebar()
    ready = session.model_ready()
    if notice := state.pop("notice", None):
        st.warning(notice)
    for index, message in enumerate(state.messages):
        show(message, index)
    retry = False
    if failure := state.get("failure"):
        st.error(failure, icon=":material/warning:")
        retry = st.button("Retry", icon=":material/refresh:", disabled=not ready)
    prompt = "Ask your documents" if params["model"] and params["model"].startswith("rag:") \
        else "Send a message"  # fmt: skip
    question = st.chat_input(prompt, disabled=not ready or not params["model"])
    if question:
        state.pop("failure", None)
        keep({"role": "user", "content": question})
        show(state.messages[-1], len(state.messages) - 1)
        answer(params)
    elif retry:
        state.pop("failure", None)
        answer(params)


main()
