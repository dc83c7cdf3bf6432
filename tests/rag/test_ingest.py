"""Chunking, ingestion into a real LanceDB index, and retrieval under access rules."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from neve.rag.chunking import chunk_document
from neve.rag.embedder import Embedder
from neve.rag.index import Access, FilterError, Index
from neve.rag.ingest import Chunking, Ingester, doc_id
from neve.rag.loaders import Block, Document
from tests.rag.documents import HANDBOOK_PAGES, make_pdf

EVERYONE = Access(everything=True)
NOBODY = Access(everything=False)


def test_chunks_fit_the_window_overlap_and_carry_their_heading(embedder: Embedder) -> None:
    sentences = [
        f"Sentence number {i} talks about topic {i % 7} at some length." for i in range(80)
    ]
    document = Document("Guide", "markdown", [
        Block(" ".join(sentences[:60]), "Setup"), Block(" ".join(sentences[60:]), "Usage"),
    ])  # fmt: skip
    chunks = chunk_document(document, embedder.token_counts, size=64, overlap=16)
    assert all(n <= 64 for n in embedder.token_counts([c.text for c in chunks]))
    assert {c.text.split("\n")[0] for c in chunks} == {"Guide — Setup", "Guide — Usage"}
    setup = [c.text.split("\n", 1)[1] for c in chunks if c.section == "Setup"]
    assert len(setup) > 3
    for before, after in itertools.pairwise(setup):
        assert before.split(". ")[-1] in after  # the last sentence starts the next chunk
    # Every sentence lands in some chunk, in order, and no chunk mixes the two sections.
    text = " ".join(c.text for c in chunks)
    assert all(s in text for s in sentences)
    assert all("number 7 is" not in c.text for c in chunks if c.section == "Usage")


def _ingester(tmp_path: Path, embedder: Embedder, **rules: list[str]) -> Ingester:
    index = Index(tmp_path / "index", embedder.dimensions)
    return Ingester(index, embedder, Chunking(200, 40), folder_groups=dict(rules))


def _write_docs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    make_pdf(folder / "handbook.pdf", HANDBOOK_PAGES)
    (folder / "rivers.md").write_text("# Rivers\n\nThe Nile is the longest river in Africa.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")


def test_reingest_is_idempotent_changes_replace_and_prune_forgets(
    tmp_path: Path, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    _write_docs(docs)
    ingester = _ingester(tmp_path, embedder)
    first = ingester.run([docs])
    assert (first.files, first.failed, first.skipped) == (3, 1, 0)
    rows = {Path(d["path"]).name: d for d in ingester.index.list_documents(EVERYONE)}
    assert rows["broken.pdf"]["status"] == "failed" and "PDF" in rows["broken.pdf"]["error"]
    assert rows["handbook.pdf"]["pages"] == 3
    chunks = ingester.index.chunks.count_rows()

    again = ingester.run([docs])
    assert (again.skipped, again.chunks) == (3, 0)
    assert ingester.index.chunks.count_rows() == chunks

    (docs / "rivers.md").write_text("# Rivers\n\nThe Danube flows through ten countries.\n")
    changed = ingester.run([docs])
    assert (changed.skipped, changed.files - changed.skipped) == (2, 1)
    texts = " ".join(ingester.index.chunks.to_arrow()["text"].to_pylist())
    assert "Danube" in texts and "Nile" not in texts

    (docs / "rivers.md").unlink()
    assert ingester.run([docs]).removed == 0  # without --prune, nothing is forgotten
    assert ingester.run([docs], prune=True).removed == 1
    assert "rivers.md" not in {
        Path(d["path"]).name for d in ingester.index.list_documents(EVERYONE)
    }


def test_groups_from_caller_sidecar_and_folder_rule(tmp_path: Path, embedder: Embedder) -> None:
    docs = tmp_path / "docs"
    (docs / "hr").mkdir(parents=True)
    (docs / "hr" / "salaries.md").write_text("# Salaries\n\nEngineers earn 100 pounds.\n")
    (docs / "board.md").write_text("# Board\n\nThe board meets on Mondays.\n")
    (docs / "board.md.groups").write_text("board, executives\n")
    (docs / "open.md").write_text("# Open\n\nThe office opens at nine.\n")
    ingester = _ingester(tmp_path, embedder, **{"*/hr/*": ["hr"]})
    ingester.run([docs])
    groups = {Path(d["path"]).name: d["groups"] for d in ingester.index.list_documents(EVERYONE)}
    assert groups == {"salaries.md": ["hr"], "board.md": ["board", "executives"], "open.md": []}
    ingester.run([docs / "open.md"], groups=["staff"])  # given groups win
    assert ingester.index.document(doc_id((docs / "open.md").resolve()), EVERYONE)["groups"] == [
        "staff"
    ]


@pytest.fixture
def restricted(tmp_path: Path, embedder: Embedder) -> tuple[Index, str]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "secret.md").write_text("# Merger\n\nNorthwind will acquire Contoso in May.\n")
    (docs / "public.md").write_text("# Picnic\n\nThe company picnic is in June.\n")
    ingester = _ingester(tmp_path, embedder)
    ingester.run([docs / "secret.md"], groups=["board"])
    ingester.run([docs / "public.md"])
    return ingester.index, doc_id((docs / "secret.md").resolve())


def _search(index: Index, embedder: Embedder, text: str, access: Access, **kw: object) -> list[str]:
    vector = embedder.encode_array([text])[0]
    found = []
    for mode in ("hybrid", "vector", "text"):
        hits = index.search(text=text, vector=vector, mode=mode, top_k=10, access=access, **kw)  # type: ignore[arg-type]
        found += [h.text for h in hits]
    return found


def test_access_cannot_be_bypassed(restricted: tuple[Index, str], embedder: Embedder) -> None:
    index, secret = restricted
    question = "When will Northwind acquire Contoso?"
    member = Access(False, frozenset({"board"}))
    assert any("Contoso" in t for t in _search(index, embedder, question, member))
    attempts: list[dict[str, object]] = [
        {}, {"document": secret}, {"title": "Merger"}, {"path_prefix": "/"},
        {"title": "x' OR '1'='1"}, {"path": "' OR groups IS NOT NULL OR '"},
    ]  # fmt: skip
    for outsider in (NOBODY, Access(False, frozenset({"staff"}))):
        for filters in attempts:
            found = _search(index, embedder, question, outsider, filters=filters)
            assert not any("Contoso" in t for t in found), filters
        assert index.document(secret, outsider) is None
        assert [d["title"] for d in index.list_documents(outsider)] == ["Picnic"]
    with pytest.raises(FilterError, match="unknown filter 'groups'"):
        _search(index, embedder, question, NOBODY, filters={"groups": "board"})


def test_an_index_opened_before_another_process_ingests_sees_everything(
    tmp_path: Path, embedder: Embedder
) -> None:
    """As a hub does while `neve ingest` runs beside it: text search too, once the other
    writer has built the full-text index."""
    reader = Index(tmp_path / "index", embedder.dimensions)
    (tmp_path / "tides.md").write_text("# Tides\n\nSpring tides follow the full moon.\n")
    _ingester(tmp_path, embedder).run([tmp_path / "tides.md"])
    question = "spring tides moon"
    vector = embedder.encode_array([question])[0]
    deadline = time.monotonic() + 10
    while not reader.search(text=question, vector=vector, mode="text", top_k=3, access=EVERYONE):
        assert time.monotonic() < deadline, "the full-text index stayed unseen"
        time.sleep(0.2)
    hits = reader.search(text=question, vector=vector, mode="hybrid", top_k=3, access=EVERYONE)
    assert hits[0].title == "Tides"
