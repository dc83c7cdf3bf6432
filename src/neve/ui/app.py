"""The script `streamlit run` is given: sign-in first, then the pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from neve.ui import session

HERE = Path(__file__).parent

st.set_page_config(page_title="neve", page_icon="💬", layout="wide")

me, problem = session.caller()
if problem is not None:
    shown = problem

    def sign_in() -> None:
        session.explain(shown)

    st.navigation([st.Page(sign_in, title="neve")], position="hidden").run()
else:
    assert me is not None
    pages = [
        st.Page(HERE / "pages" / "chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page(HERE / "pages" / "documents.py", title="Documents", icon=":material/description:"),
        st.Page(HERE / "pages" / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
    ]
    page = st.navigation(pages)
    with st.sidebar:
        st.caption(f"Signed in as **{me['user']}** ({me['role']})")
        if st.session_state.get("api_key"):
            st.button("Sign out", on_click=session.sign_out)
    page.run()
