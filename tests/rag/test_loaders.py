"""Every loader on real files; broken, encrypted and odd files fail with a reason."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest

from neve.rag.loaders import LoadError, load
from tests.rag.documents import HANDBOOK_PAGES, make_docx, make_pdf


def test_pdf_keeps_page_numbers_and_title(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "handbook.pdf", HANDBOOK_PAGES, title="Northwind Handbook")
    document = load(path)
    assert (document.title, document.kind, document.pages) == ("Northwind Handbook", "pdf", 3)
    by_page = {b.page: b.text for b in document.blocks}
    assert "27 days of paid vacation" in by_page[2]
    assert "reimbursed within 14 days" in by_page[3]


def test_html_keeps_title_headings_and_main_text_only(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Site | Tides</title><style>p{color:red}</style>"
        "<script>var tracking = 1;</script></head><body>"
        "<nav><a href='/'>Home</a> <a href='/about'>About us</a></nav>"
        "<main><h1>Tides</h1><p>Tides rise twice a day.</p>"
        "<h2>Spring tides</h2><p>Spring tides follow new and full moons.</p>"
        "<ul><li>High water</li></ul></main><footer>Copyright 2026</footer></body></html>"
    )
    document = load(path)
    assert document.title == "Tides"
    text = " ".join(b.text for b in document.blocks)
    assert "Tides rise twice a day." in text and "High water" in text
    for dropped in ("tracking", "color", "About us", "Copyright"):
        assert dropped not in text
    assert {b.section for b in document.blocks if "moons" in b.text} == {"Spring tides"}


def test_html_index_pages_keep_their_prose_and_content_pages_their_links(
    tmp_path: Path,
) -> None:
    """A page mostly of links (an index, a table of contents) loses its link lists; a
    content page keeps its own ("see also"), and XHTML reads without a warning."""
    entries = "".join(f'<li><a href="p{i}.html">Topic number {i}</a></li>' for i in range(30))
    index = tmp_path / "contents.html"
    index.write_text(
        f"<html><body><h1>Contents</h1><p>Start with the tutorial.</p><ul>{entries}</ul>"
        "</body></html>"
    )
    assert [b.text for b in load(index).blocks] == ["Start with the tutorial."]
    only_links = tmp_path / "genindex.html"
    only_links.write_text(f"<html><body><h1>Index</h1><ul>{entries}</ul></body></html>")
    assert [b.text for b in load(only_links).blocks] == ["Index"]
    prose = " ".join(f"Sentence {i} explains the topic at some length." for i in range(20))
    page = tmp_path / "topic.html"
    page.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        f"<body><h1>Topic</h1><p>{prose}</p><h2>See also</h2><ul>"
        '<li><a href="other.html">Other topic</a></li></ul></body></html>'
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocks = load(page).blocks
    assert [b.text for b in blocks] == [prose, "Other topic"]


def test_markdown_headings_become_sections(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text(
        "# Rivers\n\nThe **Nile** is long; see [the atlas](http://x/atlas).\n\n"
        "## Amazon\n\n```\n# not a heading\n```\n\nThe Amazon carries the most water.\n"
    )
    document = load(path)
    assert document.title == "Rivers"
    sections = {b.text: b.section for b in document.blocks}
    assert sections["The Nile is long; see the atlas."] == "Rivers"
    assert sections["The Amazon carries the most water."] == "Amazon"
    assert all("not a heading" not in s for s in sections.values())


def test_text_and_docx(tmp_path: Path) -> None:
    text = tmp_path / "memo.txt"
    text.write_text("First paragraph.\n\nSecond paragraph\nstill second.\n")
    assert [b.text for b in load(text).blocks] == [
        "First paragraph.", "Second paragraph\nstill second.",
    ]  # fmt: skip
    docx = make_docx(
        tmp_path / "plan.docx", "Launch plan",
        {"Goals": ["Ship in May."], "Risks": ["Suppliers may be late."]},
    )  # fmt: skip
    document = load(docx)
    assert document.title == "Launch plan"
    assert [(b.section, b.text) for b in document.blocks] == [
        ("Goals", "Ship in May."), ("Risks", "Suppliers may be late."),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.pdf", b"", "the file is empty"),
        ("blank.md", b"\n  \n", "the file is empty"),
        ("notes.pdf", b"%PDF-1.4 this is not really a PDF", "not a readable PDF"),
        ("broken.docx", b"PK\x03\x04 not a zip", "not a readable DOCX"),
        ("binary.txt", b"\x00\x01\x02abc", "binary data"),
        ("table.xlsx", b"whatever", "unsupported file type '.xlsx'"),
    ],
)
def test_unreadable_files_fail_with_a_reason(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError, match=reason):
        load(path)


def test_truncated_pdf_fails_with_a_reason(tmp_path: Path) -> None:
    whole = make_pdf(tmp_path / "whole.pdf", HANDBOOK_PAGES).read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(LoadError):
        load(cut)


def test_every_pdf_of_pypdfs_test_suite_loads_or_fails_with_a_reason(
    pypdf_resources: Path,
) -> None:
    """Broken, encrypted and odd PDFs: never an exception other than LoadError, and each
    in bounded time."""
    pdfs = sorted(pypdf_resources.rglob("*.pdf"))
    assert len(pdfs) > 40
    loaded, failed = [], {}
    for pdf in pdfs:
        began = time.monotonic()
        try:
            document = load(pdf)
        except LoadError as exc:
            failed[pdf.name] = str(exc)
        else:
            assert document.blocks and document.pages >= 1
            loaded.append(pdf.name)
        assert time.monotonic() - began < 60, pdf.name
    assert "crazyones.pdf" in loaded
    for locked in ("r4-user-password.pdf", "r6-both-passwords.pdf",
                   "libreoffice-writer-password.pdf"):  # fmt: skip
        assert failed[locked] == "encrypted with a password"
    assert {"r6-empty-password.pdf", "r4-aes-v2-no-key-length.pdf"} <= set(loaded)
    assert all(reason for reason in failed.values())
