"""Link texts: each page indexed with what the collection's links to it say, kept up to
date as pages change, under the access rules, and never shown as a passage."""

from __future__ import annotations

from pathlib import Path

import lancedb
import pyarrow as pa

from neve.config import load_settings
from neve.rag.embedder import Embedder
from neve.rag.index import DOCUMENT_SCHEMA, REFERRAL, Access
from neve.rag.loaders import Link, load
from neve.rag.referrals import referred_as
from neve.rag.service import Rag

EVERYONE = Access(everything=True)
PUBLIC = Access(everything=False)


def _page(title: str, body: str, links: str = "") -> str:
    return (f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
            f"<p>{body}</p>{links}</body></html>")  # fmt: skip


def _collection(folder: Path) -> dict[str, Path]:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    pages = {
        "core": folder / "core.html",
        "guide": folder / "guide.html",
        "sub": folder / "sub" / "deep.html",
        "notes": folder / "notes.md",
    }
    pages["core"].write_text(_page(
        "Core directives", "KeepAliveTimeout sets a number of seconds.",
        '<a href="#top">how long the server waits</a>',  # to itself: not counted
    ))  # fmt: skip
    pages["guide"].write_text(_page(
        "Guide", "Start here.",
        '<ul><li><a href="core.html#keepalive">how long the server waits</a></li>'
        '<li><a href="https://example.com/core.html">an outside page</a></li>'
        '<li><a href="missing.html">a page that is not there</a></li>'
        '<li><a href="core.html">next</a></li><li><a href="sub/deep.html">next</a></li>'
        '<li><a href="notes.md">next</a></li></ul>',
    ))  # fmt: skip
    pages["sub"].write_text(_page(
        "Deep page", "Nothing about waiting.",
        '<a href="../core.html">idle connection lifetime</a>',
    ))  # fmt: skip
    pages["notes"].write_text(
        "# Notes\n\nSee [persistent connection limits](core.html) and ![a picture](core.html).\n"
    )
    return pages


def _rag(tmp_path: Path, embedder: Embedder, **settings: object) -> Rag:
    changes = {"data_dir": tmp_path / "data", "rag_link_text_generic": 1, **settings}
    return Rag(load_settings(changes, environ={}), embedder)


def test_loaders_resolve_links_within_the_collection(tmp_path: Path) -> None:
    pages = _collection(tmp_path)
    core = str(pages["core"].resolve())
    guide = load(pages["guide"].resolve())
    assert Link(core, "how long the server waits") in guide.links  # fragment dropped
    assert all("example.com" not in x.target for x in guide.links)
    assert load(pages["core"].resolve()).links == []  # a link to itself
    assert load(pages["sub"].resolve()).links == [Link(core, "idle connection lifetime")]
    notes = load(pages["notes"].resolve())
    assert notes.links == [Link(core, "persistent connection limits")]  # not the image


def test_pages_are_found_by_what_links_to_them_call_them(
    tmp_path: Path, embedder: Embedder
) -> None:
    pages = _collection(tmp_path / "docs")
    rag = _rag(tmp_path, embedder)
    rag.ingester().run([tmp_path / "docs"])
    core = next(d for d in rag.index.list_documents(EVERYONE) if d["title"] == "Core directives")
    texts = referred_as(rag.index, core["doc_id"])
    # Most used first; "next" links several pages (more than rag_link_text_generic): left out;
    # links to missing pages are ignored.
    assert texts[0] == "how long the server waits"
    assert set(texts) == {"how long the server waits", "idle connection lifetime",
                          "persistent connection limits"}  # fmt: skip
    assert core["chunks"] == 1  # the referral chunk is not one of the page's passages
    # Found by a phrase only the links use; the passage shown is the page's own text.
    hits = rag.search("idle connection lifetime", access=EVERYONE, mode="text")
    assert hits[0].doc_id == core["doc_id"]
    quoted = rag.search('What is "idle connection lifetime"?', access=EVERYONE, mode="text")
    assert quoted[0].doc_id == core["doc_id"]  # quotes are not a phrase query
    assert hits[0].position == 0 and "KeepAliveTimeout" in hits[0].text
    assert all(h.position != REFERRAL for h in rag.search("persistent connection limits",
                                                           access=EVERYONE))  # fmt: skip

    # A page that changes its links changes what its targets are called; a removed page's
    # links go with it.
    pages["sub"].write_text(_page("Deep page", "Nothing about waiting.", ""))
    pages["notes"].unlink()
    progress = rag.ingester().run([tmp_path / "docs"], prune=True)
    assert progress.removed == 1
    assert referred_as(rag.index, core["doc_id"]) == ["how long the server waits"]
    pages["guide"].write_text(_page("Guide", "Start here."))
    rag.ingester().run([tmp_path / "docs"])
    assert referred_as(rag.index, core["doc_id"]) == []
    assert rag.index.referrals() == {}


def test_a_restricted_page_lends_no_words_to_a_page_others_read(
    tmp_path: Path, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    _collection(docs)
    (docs / "sub" / "deep.html.groups").write_text("board")
    rag = _rag(tmp_path, embedder)
    rag.ingester().run([docs])
    core = next(d for d in rag.index.list_documents(EVERYONE) if d["title"] == "Core directives")
    assert "idle connection lifetime" not in referred_as(rag.index, core["doc_id"])
    assert rag.search("idle lifetime", access=PUBLIC, mode="text") == []


def test_off_indexes_no_link_texts_and_turning_it_off_removes_them(
    tmp_path: Path, embedder: Embedder
) -> None:
    _collection(tmp_path / "docs")
    _rag(tmp_path, embedder).ingester().run([tmp_path / "docs"])
    rag = _rag(tmp_path, embedder, rag_link_texts=False)
    assert rag.index.referrals()
    rag.ingester().run([tmp_path / "docs"])
    assert rag.index.referrals() == {}


def test_an_index_from_before_links_opens_and_takes_them(
    tmp_path: Path, embedder: Embedder
) -> None:
    """Indexes written before the `links` column existed gain it, keeping their rows."""
    old = pa.schema([f for f in DOCUMENT_SCHEMA if f.name != "links"])
    settings = load_settings({"data_dir": tmp_path / "data"}, environ={})
    db = lancedb.connect(str(settings.rag_path))
    db.create_table("documents", schema=old)
    _collection(tmp_path / "docs")
    rag = _rag(tmp_path, embedder)
    rag.ingester().run([tmp_path / "docs"])
    assert len(rag.index.list_documents(EVERYONE)) == 4
    assert rag.index.referrals()
