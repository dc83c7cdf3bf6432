"""How the vector and text rankings become one: reciprocal rank fusion over pages, with
agreement first.

The rule. Each ranking lists chunks best first. A *place* is a document's page (a whole
document when it has no pages), and a place's rank in a ranking is the rank of its best
chunk among the places that ranking lists, so a page whose best vector passage and best
text passage are different chunks is not split into two half-scored entries. A place
scores the sum over rankings of weight / (k + rank), nothing from a ranking that does not
list it. A third ranking, of the same places by how well their document's opening (its
title and first lines) matches the question, adds its weight / (k + rank) too; it only
reorders the places the two retrievals found.

Places are then ordered by:
1. agreement: a place both retrievals list comes before a place only one lists;
2. a place first in both comes first;
3. the score.
Within a place its chunks follow their own fused score, at most `per_page` of them, each
carrying the place's score.

What follows (tests/rag/test_fusion.py checks each over random rankings): a place first in
both retrievals is first whatever the weights; a place in both is above every place in
one; and without the opening ranking, a place at least as good as another in both
retrievals, and better in one, comes first.

Why agreement is a rule and not a weight: on documentation the team did not tune on, the
opening ranking alone pulled broad pages (a neighbouring topic's overview, a glossary)
above the specific page both retrievals put first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]  # a chunk: "id", "doc_id" and "page" are read here
Ranking = Sequence[tuple[Row, float]]  # best first, with the ranking's own score
Place = tuple[str, int | None]


@dataclass(frozen=True)
class Weights:
    vector: float = 1.0
    text: float = 1.0
    opening: float = 0.0
    k: int = 60


def place(row: Row) -> Place:
    return (row["doc_id"], row["page"])


def fuse(
    vector: Ranking,
    text: Ranking,
    weights: Weights,
    per_page: int = 1,
    opening: Mapping[str, float] | None = None,
) -> list[tuple[Row, float]]:
    """The chunks of the best places, best first, each with its place's fused score.
    `opening` maps a document to its opening's similarity to the question."""
    k = weights.k
    score: dict[Place, float] = {}
    chunk_score: dict[str, float] = {}
    rows: dict[str, Row] = {}
    listed: list[dict[Place, int]] = []
    for ranking, weight in ((vector, weights.vector), (text, weights.text)):
        ranks: dict[Place, int] = {}
        for rank, (row, _) in enumerate(ranking, start=1):
            rows.setdefault(row["id"], row)
            chunk_score[row["id"]] = chunk_score.get(row["id"], 0.0) + weight / (k + rank)
            ranks.setdefault(place(row), len(ranks) + 1)
        for where, rank in ranks.items():
            score[where] = score.get(where, 0.0) + weight / (k + rank)
        listed.append(ranks)
    if opening is not None and weights.opening:
        about = sorted(score, key=lambda p: -opening.get(p[0], -1.0))
        for rank, where in enumerate(about, start=1):
            score[where] += weights.opening / (k + rank)
    by_vector, by_text = listed

    def order(where: Place) -> tuple[bool, bool, float]:
        both = where in by_vector and where in by_text
        first = both and by_vector[where] == 1 and by_text[where] == 1
        return (not both, not first, -score[where])

    chunks: dict[Place, list[str]] = {}
    for chunk in sorted(chunk_score, key=lambda c: -chunk_score[c]):
        chunks.setdefault(place(rows[chunk]), []).append(chunk)
    return [(rows[c], score[p]) for p in sorted(score, key=order) for c in chunks[p][:per_page]]
