"""Chunking, ingestion into a real LanceDB index, and retrieval under access rules."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from neve.config import load_settings
from neve.rag.chunking import chunk_document
from neve.rag.embedder import Embedder
from neve.rag.index import Access, Ann, FilterError, Index
from neve.rag.ingest import Chunking, Ingester, doc_id
from neve.rag.loaders import Block, Document
from neve.rag.service import ranking
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


def _page(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"


def test_an_index_or_contents_page_does_not_outrank_the_page_it_points_to(
    tmp_path: Path, embedder: Embedder
) -> None:
    """A generated index and a table of contents repeat the words of many pages' titles,
    in short passages; the pages they point to say what the words mean."""
    docs = tmp_path / "docs"
    docs.mkdir()
    topics = {
        "rotating-logs": ("Rotating log files", "Log files grow without end unless they are "
                          "rotated. Pipe the access log through the rotation program, which "
                          "starts a new log file every day or once the file reaches a size "
                          "you choose, without restarting the server."),
        "caching": ("Caching responses", "The cache keeps responses on disk and serves them "
                    "again until they expire, so the backend is asked less often."),
        "proxy": ("Reverse proxy", "Requests for a path can be forwarded to a backend "
                  "application server, and its answers returned to the client."),
        "auth": ("Password protection", "A directory can ask visitors for a user name and "
                 "password, checked against a file of users."),
    }  # fmt: skip
    for name, (title, prose) in topics.items():
        (docs / f"{name}.html").write_text(_page(title, f"<p>{prose}</p>"))
    entries = [
        f'<li><a href="{name}.html">{title}</a><ul><li><a href="{name}.html#more">{title} '
        f"in detail</a></li></ul></li>"
        for name, (title, _) in topics.items()
    ]
    (docs / "contents.html").write_text(_page("Contents", f"<ul>{''.join(entries)}</ul>"))
    terms = ["log files, rotating", "rotation of log files", "logs (rotating)", "cache",
             "reverse proxy", "passwords"]  # fmt: skip
    listed = "".join(f'<dt><a href="rotating-logs.html">{t}</a></dt>' for t in terms)
    (docs / "genindex.html").write_text(_page("Index", f"<dl>{listed}</dl>"))
    ingester = _ingester(tmp_path, embedder)
    ingester.run([docs])
    options = ranking(load_settings(environ={}))
    for question in ("rotating log files", "How do I rotate my log files every day?"):
        for mode in ("hybrid", "vector", "text"):
            vector = embedder.encode_array([question])[0]
            hits = ingester.index.search(
                text=question, vector=vector, mode=mode, top_k=5, access=EVERYONE, **options
            )
            names = [Path(h.path).name for h in hits]
            assert names[0] == "rotating-logs.html", (question, mode, names)


def test_the_approximate_index_grows_with_the_table_and_finds_neighbours(
    tmp_path: Path,
) -> None:
    """From `min_rows` the vector index is approximate, one partition per `partition_rows`
    chunks, rebuilt once the table has doubled them; a search probes them all."""
    rng = np.random.default_rng(3)
    dims = 16
    index = Index(tmp_path / "ann", dims, ann=Ann(min_rows=300, partition_rows=100, ef=100))
    vectors = rng.normal(size=(800, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def add(start: int, stop: int) -> list[str]:
        rows = [
            {"id": f"c{i}", "doc_id": f"d{i}", "path": f"/d/{i}.md", "title": "t", "section": "",
             "page": None, "position": 0, "kind": "markdown", "text": f"chunk {i}",
             "groups": [], "vector": vectors[i].tolist()}
            for i in range(start, stop)
        ]  # fmt: skip
        index.chunks.add(pa.Table.from_pylist(rows, schema=index.chunks.schema))
        index.finish()
        return sorted(i.name for i in index.chunks.list_indices() if "vector" in i.columns)

    assert add(0, 200) == []  # under min_rows: exact search
    assert add(200, 300) == ["vector_p3"]
    assert add(300, 500) == ["vector_p3"]  # 5 partitions' worth: not yet double
    assert add(500, 600) == ["vector_p6"]
    for i in rng.integers(0, 600, 20):
        hits = index.search(text="", vector=vectors[i], mode="vector", top_k=1, access=EVERYONE)
        assert hits[0].id == f"c{i}"


def test_feedback_adds_the_words_the_first_passages_share(
    tmp_path: Path, embedder: Embedder
) -> None:
    from neve.rag.service import Rag, expansion

    folder = tmp_path / "docs"
    folder.mkdir()
    pages = {
        "nile": "The Nile flows north through Egypt; its delta floods each summer.",
        "amazon": "The Amazon carries more water than any river; its delta is vast.",
        "bread": "Yeast makes dough rise by giving off carbon dioxide.",
    }
    for name, text in pages.items():
        (folder / f"{name}.md").write_text(f"# {name.title()}\n\n{text}\n")
    settings = {"data_dir": tmp_path / "data", "rag_min_similarity": -1}
    plain = Rag(load_settings(settings, environ={}), embedder)
    plain.ingester().run([folder])
    question = "Which river is the longest?"
    first = plain.search(question, access=EVERYONE, top_k=3)
    assert {h.title for h in first[:2]} == {"Nile", "Amazon"}
    # "delta" is in both river passages and not in the question; "river" is asked already.
    assert "delta" in expansion(question, first[:2]).split()
    assert "river" not in expansion(question, first[:2]).split()
    for prf in ("vector", "text", "both"):
        fed = Rag(load_settings({**settings, "rag_prf": prf}, environ={}), embedder)
        found = fed.search(question, access=EVERYONE, top_k=3)
        assert {h.title for h in found[:2]} == {"Nile", "Amazon"}, prf
