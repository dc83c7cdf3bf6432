"""The script `streamlit run` is given: the pages. Each page signs the caller in first
(session.gate), so a page opened by its address is never shown to the wrong person."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="neve", page_icon="💬", layout="wide")
st.navigation(
    [
        st.Page(HERE / "pages" / "chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page(HERE / "pages" / "documents.py", title="Documents", icon=":material/description:"),
        st.Page(HERE / "pages" / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
    ]
).run()
