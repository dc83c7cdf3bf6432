"""Documents to text: PDF (per page), HTML (title and main text), Markdown, plain text and
DOCX. Each yields blocks (a paragraph with the section heading above it, and its page), so
chunks can carry where they came from. A file that cannot be read raises LoadError with
the reason; it never stops a run."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from neve.errors import BadRequest

if TYPE_CHECKING:
    from bs4 import Tag

SUFFIXES = {
    ".pdf": "pdf", ".html": "html", ".htm": "html", ".md": "markdown",
    ".markdown": "markdown", ".txt": "text", ".text": "text", ".rst": "text", ".docx": "docx",
}  # fmt: skip


# pypdf warns about every oddity of a broken file; a failed load records the reason.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class LoadError(BadRequest):
    """The file cannot be read as a document; the message is the reason."""


@dataclass
class Block:
    text: str
    section: str = ""
    page: int | None = None


@dataclass(frozen=True)
class Link:
    """A link to another file of the collection: its absolute path, and the link's text."""

    target: str
    text: str


@dataclass
class Document:
    title: str
    kind: str
    blocks: list[Block] = field(default_factory=list)
    pages: int = 1
    links: list[Link] = field(default_factory=list)


def kind_of(path: Path) -> str | None:
    return SUFFIXES.get(path.suffix.lower())


def load(path: Path, data: bytes | None = None) -> Document:
    """Read `path` (or `data`, named by `path`)."""
    kind = kind_of(path)
    if kind is None:
        raise LoadError(f"unsupported file type {path.suffix or '(none)'!r}")
    raw = path.read_bytes() if data is None else data
    if not raw.strip():
        raise LoadError("the file is empty")
    try:
        document = _LOADERS[kind](path, raw)
    except LoadError:
        raise
    except Exception as exc:  # parsers raise many kinds on broken files
        raise LoadError(f"cannot read it as {kind}: {exc.__class__.__name__}: {exc}") from None
    document.blocks = [b for b in document.blocks if b.text.strip()]
    if not document.blocks:
        raise LoadError("no text found (a scanned PDF needs OCR first)")
    return document


def link(source: Path, href: str, text: str) -> Link | None:
    """A link's target as an absolute path (its fragment and query dropped), or None for a
    link out of the collection (another scheme or host), to the page itself, or with no
    words (an image, a pilcrow)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(href.strip())
    text = _squash(text)
    if parts.scheme not in ("", "file") or parts.netloc or not parts.path:
        return None
    if not re.search(r"[^\W\d_]{2}", text):
        return None
    path = unquote(parts.path)
    target = Path(path) if path.startswith("/") else source.parent / path
    target = Path(os.path.realpath(target))  # as find_files names the pages
    if path.endswith("/"):
        target = target / "index.html"
    return None if target == source else Link(str(target), text)


def _paragraphs(text: str) -> Iterator[str]:
    for part in re.split(r"\n\s*\n", text):
        cleaned = re.sub(r"[ \t]+", " ", part).strip()
        if cleaned:
            yield cleaned


def _pdf(path: Path, raw: bytes) -> Document:
    import io

    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted:
            try:
                unlocked = reader.decrypt("")
            except DependencyError as exc:
                raise LoadError(
                    f"encrypted with a cipher this install cannot open: {exc}"
                ) from None
            if not unlocked:
                raise LoadError("encrypted with a password")
        title = ""
        with contextlib.suppress(PdfReadError, FileNotDecryptedError):
            title = str(reader.metadata.title or "").strip() if reader.metadata else ""
        blocks = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            blocks += [Block(p, page=number) for p in _paragraphs(text)]
        pages = len(reader.pages)
    except FileNotDecryptedError:
        raise LoadError("encrypted with a password") from None
    except PdfReadError as exc:
        raise LoadError(f"not a readable PDF: {exc}") from None
    if not title and blocks:
        title = blocks[0].text.splitlines()[0][:120]
    return Document(title or path.stem, "pdf", blocks, pages)


# Page furniture, not content: menus, sidebars, headers and footers (Sphinx's included).
_HTML_NOISE = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form",
               "svg", "[role=navigation]", "[role=banner]", "[role=contentinfo]",
               ".sphinxsidebar", ".related", ".navigation", ".breadcrumbs", ".headerlink",
               "#sidebar", ".sidebar", ".toc", ".footer", ".mobile-nav"]  # fmt: skip
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_TEXT_BLOCKS = {"p", "li", "pre", "dt", "dd", "td", "th", "blockquote", "figcaption",
                "caption"}  # fmt: skip
# A page whose text is this much link text points to other pages (a generated index, a
# table of contents, a site map): its link blocks, indexed, would outrank the pages they
# point to, so they are left out. Content pages keep theirs (a "see also" list, a module's
# directive list): in the three manuals of benchmarks/rag_eval.py index pages are 0.5 to
# 0.96 links, content pages at most 0.43.
LINK_SHARE = 0.5


def _html(path: Path, raw: bytes) -> Document:
    from bs4 import BeautifulSoup, Tag, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():  # XHTML (asciidoc's, say) reads well as HTML
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(raw, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for selector in _HTML_NOISE:
        for node in soup.select(selector):
            node.decompose()
    root = soup.find("main") or soup.select_one("[role=main]") or soup.body or soup
    blocks: list[Block] = []
    section = heading_title = ""
    links = 0  # blocks left out as links
    assert isinstance(root, Tag)
    listing = _link_share(root) >= LINK_SHARE
    for node in root.find_all([*_HEADINGS, *_TEXT_BLOCKS]):
        # A block inside another counted block (a <p> in an <li>) is read with its parent.
        if node.find_parent(_TEXT_BLOCKS) is not None and node.name not in _HEADINGS:
            continue
        text = node.get_text("" if node.name == "pre" else " ", strip=node.name != "pre")
        if node.name in _HEADINGS:
            section = _squash(text).rstrip("¶").strip()
            if node.name == "h1" and not heading_title:
                heading_title = section  # the page's own name, without the site's
            continue
        if node.name != "pre":
            text = _squash(text)
            if listing and _link_share(node) >= LINK_SHARE:
                links += 1
                continue
        blocks.append(Block(text.strip(), section))
    title = heading_title or title or path.stem
    found = [link(path, str(a["href"]), a.get_text(" ")) for a in root.find_all("a", href=True)]
    if not blocks and links:  # nothing but links: the page is known by its title alone
        blocks = [Block(title)]
    elif not blocks:  # pages without block markup: their text, in paragraphs
        blocks = [Block(p) for p in _paragraphs(root.get_text("\n"))]
    return Document(title, "html", blocks, links=[x for x in found if x])


def _link_share(node: Tag) -> float:
    """How much of the node's text is the text of links."""
    text = len(_squash(node.get_text(" ")))
    linked = sum(len(_squash(a.get_text(" "))) for a in node.find_all("a"))
    return linked / text if text else 0.0


def _squash(text: str) -> str:
    """Runs of white space as one space, none at the ends."""
    return re.sub(r"\s+", " ", text).strip()


_MD_LINK = r"(?<!!)\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"


def _markdown(path: Path, raw: bytes) -> Document:
    text = raw.decode("utf-8", errors="replace")
    blocks: list[Block] = []
    links: list[Link | None] = []
    section = title = ""
    fence = False
    lines: list[str] = []

    def flush() -> None:
        if lines:
            blocks.extend(Block(p, section) for p in _paragraphs("\n".join(lines)))
            lines.clear()

    for line in text.splitlines():
        if line.strip().startswith(("```", "~~~")):
            fence = not fence
            continue
        heading = None if fence else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            flush()
            section = heading[2]
            title = title or (section if len(heading[1]) == 1 else "")
            continue
        if not fence:
            links += [link(path, m[2], m[1]) for m in re.finditer(_MD_LINK, line)]
            line = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", line)  # links keep their text
            line = re.sub(r"(\*\*|__|`)", "", line)
        lines.append(line)
    flush()
    return Document(title or path.stem, "markdown", blocks, links=[x for x in links if x])


def _text(path: Path, raw: bytes) -> Document:
    text = raw.decode("utf-8", errors="replace")
    if "\x00" in text:
        raise LoadError("binary data, not text")
    return Document(path.stem, "text", [Block(p) for p in _paragraphs(text)])


def _docx(path: Path, raw: bytes) -> Document:
    import io
    import zipfile

    import docx

    try:
        doc = docx.Document(io.BytesIO(raw))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LoadError(f"not a readable DOCX: {exc}") from None
    title = (doc.core_properties.title or "").strip()
    blocks: list[Block] = []
    section = ""
    for paragraph in doc.paragraphs:
        text = paragraph.text.strip()
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if not text:
            continue
        if style.startswith("Heading") or style == "Title":
            section = text
            title = title or text
            continue
        blocks.append(Block(text, section))
    for table in doc.tables:
        for row in table.rows:
            cells = " | ".join(c.text.strip() for c in row.cells if c.text.strip())
            if cells:
                blocks.append(Block(cells, section))
    return Document(title or path.stem, "docx", blocks)


_LOADERS = {"pdf": _pdf, "html": _html, "markdown": _markdown, "text": _text, "docx": _docx}
