"""What a collection says about its own pages: the texts of the links that point to a
page (cross-references, index entries, table-of-contents lines) describe it in other
words than its own, the evidence web search has ranked by since anchor text.

Each document records its links at ingest (`links`: target path and text, as JSON). After
every change, each indexed page gets one more chunk, at position REFERRAL: its title and
the texts of the links to it, most used first, embedded and indexed like its other chunks,
so both rankings can find the page by what others call it. A search result never shows that
chunk: the index puts the page's best passage in its place (see Index.search).

What counts: links between two documents of the index, not to the page itself; a text used
for more than `generic` different pages ("next", "here", "index") says nothing of any.
Access: a text is taken only from a page every reader of the target may read (a public
page, or one whose groups include all of the target's), so a restricted page's words
never show through a page others may see."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from neve.rag.embedder import Embedder
from neve.rag.index import REFERRAL, Access, Index
from neve.rag.loaders import Link


def encoded(links: list[Link]) -> str:
    """The links as a document row holds them."""
    return json.dumps([[x.target, x.text] for x in links], ensure_ascii=False)


def _may_cite(source: dict[str, Any], target: dict[str, Any]) -> bool:
    return not source["groups"] or (
        bool(target["groups"]) and set(target["groups"]) <= set(source["groups"])
    )


def incoming(documents: list[dict[str, Any]], generic: int) -> dict[str, list[str]]:
    """Each page's incoming link texts (by its id), most used first, case folded."""
    by_path = {d["path"]: d for d in documents if d["status"] == "indexed"}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    shown: dict[str, str] = {}
    targets: dict[str, set[str]] = defaultdict(set)
    for source in documents:
        for path, text in json.loads(source.get("links") or "[]"):
            target = by_path.get(path)
            if target is None or target is source or not _may_cite(source, target):
                continue
            key = text.casefold()
            counts[target["doc_id"]][key] += 1
            shown.setdefault(key, text)
            targets[key].add(target["doc_id"])
    texts = {
        doc: [shown[k] for k, _ in found.most_common() if len(targets[k]) <= generic]
        for doc, found in counts.items()
    }
    return {doc: found for doc, found in texts.items() if found}


@dataclass(frozen=True)
class Referrals:
    tokens: int  # a referral chunk's size at most, in the embedder's tokens
    generic: int  # a text linking to more pages than this is left out


def refresh(index: Index, embedder: Embedder, referrals: Referrals | None) -> int:
    """Bring every page's referral chunk up to date (or remove them all, with None); the
    pages whose chunk changed."""
    tokens, generic = (referrals.tokens, referrals.generic) if referrals else (0, 0)
    documents = index.list_documents(Access(everything=True))
    by_id = {d["doc_id"]: d for d in documents}
    wanted: dict[str, str] = {}
    for doc, texts in (incoming(documents, generic) if referrals else {}).items():
        title = by_id[doc]["title"]
        sizes = embedder.token_counts([title, *texts])
        budget, kept = tokens - sizes[0], []
        for text, size in zip(texts, sizes[1:], strict=True):
            if size - 1 > budget:  # [CLS] and [SEP] counted once, the line break is free
                break
            kept.append(text)
            budget -= size - 1
        if kept:
            wanted[doc] = "\n".join([title, *kept])
    held = index.referrals()
    changed = [d for d, text in wanted.items() if held.get(d) != text]
    gone = [d for d in held if d not in wanted]
    if not changed and not gone:
        return 0
    rows = [
        {"id": f"{d}:{REFERRAL}", "doc_id": d, "path": by_id[d]["path"], "title": by_id[d]["title"],
         "section": "", "page": None, "position": REFERRAL, "kind": by_id[d]["kind"],
         "text": wanted[d], "groups": by_id[d]["groups"]}
        for d in changed
    ]  # fmt: skip
    vectors = embedder.encode_array([r["text"] for r in rows]) if rows else None
    index.put_referrals(changed + gone, rows, vectors)
    return len(changed) + len(gone)


def referred_as(index: Index, doc_id: str) -> list[str]:
    """The link texts a page's referral chunk holds."""
    text = index.referrals([doc_id]).get(doc_id)
    return text.split("\n")[1:] if text else []
