"""The script `streamlit run` is given: the pages. Each page signs the caller in first
(session.gate), so a page opened by its address is never shown to the wrong person.
The pages live in views/: a folder named pages/ beside this script would make Streamlit
list its files as pages a second time, under their file names."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="neve", page_icon="💬", layout="wide")
st.navigation(
    [
        st.Page(HERE / "views" / "chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page(HERE / "views" / "documents.py", title="Documents", icon=":material/description:"),
        st.Page(HERE / "views" / "monitoring.py", title="Monitoring", icon=":material/monitoring:"),
    ]
).run()
