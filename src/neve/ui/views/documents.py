"""Documents: upload several files (indexed as they arrive), see each one's status, and
delete or re-index them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from neve.client import HubError
from neve.ui import session

session.gate()
client = session.client()
state = st.session_state


def upload() -> None:
    with st.form("upload", clear_on_submit=True):
        files = st.file_uploader("Files (PDF, HTML, Markdown, text, Word)",
                                 accept_multiple_files=True)  # fmt: skip
        groups = st.text_input("Groups (optional, comma-separated)",
                               help="Only members of these groups will see the documents; "
                               "empty: everyone")  # fmt: skip
        sent = st.form_submit_button("Upload and index", type="primary")
    if not (sent and files):
        return
    named = [g.strip() for g in groups.split(",") if g.strip()]
    with st.spinner(f"Uploading and indexing {len(files)} file(s) …"):
        try:
            rows = client.upload_documents([(f.name, f.getvalue()) for f in files], named)
        except HubError as exc:
            st.error(f"Nothing was uploaded: {exc}")
            return
    for row in rows:
        tell(*outcome(row, "indexed"))


def outcome(row: dict[str, Any], done: str) -> tuple[str, str]:
    if row["status"] == "failed":
        return "error", f"{row['title']}: failed ({row['error']})"
    passages = f"{row['chunks']} passages from {row['pages']} page(s)"
    return "success", f"{row['title']}: {done}, {passages}"


def tell(kind: str, text: str) -> None:
    if kind == "error":
        st.error(text)
    else:
        st.success(text)


def table(documents: list[dict[str, Any]]) -> None:
    st.dataframe(
        [
            {
                "title": d["title"],
                "status": d["status"] if d["status"] == "indexed" else f"failed: {d['error']}",
                "kind": d["kind"],
                "pages": d["pages"],
                "passages": d["chunks"],
                "groups": ", ".join(d["groups"]) or "everyone",
                "indexed": d["indexed_at"],
                "id": d["id"],
            }
            for d in documents
        ],
        hide_index=True,
    )


def actions(documents: list[dict[str, Any]]) -> None:
    titles = {d["id"]: f"{d['title']} ({d['id']})" for d in documents}
    chosen = st.multiselect("Select documents", list(titles), format_func=titles.__getitem__)
    left, right, _ = st.columns([1, 1, 4])
    again = left.button("Re-index", icon=":material/refresh:", disabled=not chosen)
    drop = right.button("Delete", icon=":material/delete:", disabled=not chosen)
    if not (again or drop):
        return
    # Told after the rerun that lists the documents as they now are.
    state.document_notices = notices = []
    for document_id in chosen:
        try:
            if again:
                notices.append(outcome(client.reindex_document(document_id), "re-indexed"))
            else:
                client.delete_document(document_id)
                notices.append(("success", f"{titles[document_id]}: deleted"))
        except HubError as exc:
            notices.append(("error", f"{titles[document_id]}: {exc}"))
    st.rerun()


def main() -> None:
    st.title("Documents")
    for notice in state.pop("document_notices", []):
        tell(*notice)
    upload()
    try:
        documents = client.documents()
    except HubError as exc:
        st.error(f"Cannot list the documents: {exc}")
        return
    st.subheader(f"{len(documents)} document(s)")
    if documents:
        table(documents)
        actions(documents)


main()
