"""The fusion rule (neve/rag/fusion.py) as properties over random rankings: chunks of random
pages, in random orders, with random weights and opening similarities."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from neve.rag.fusion import Place, Ranking, Weights, fuse, place

PAGES = [(f"d{d}", p) for d in range(6) for p in (None, 1, 2)]


@st.composite
def rankings(draw: st.DrawFn) -> tuple[Ranking, Ranking]:
    """Two rankings of chunks (a chunk id names its page), drawn from one pool of chunks."""
    pool = draw(st.lists(st.sampled_from(PAGES), min_size=1, max_size=40))
    chunks = [{"id": f"c{i}", "doc_id": d, "page": p} for i, (d, p) in enumerate(pool)]

    def some() -> Ranking:  # a prefix of an order: a ranking lists its best candidates
        ordered = draw(st.permutations(chunks))
        return [(c, 0.0) for c in ordered[: draw(st.integers(0, len(ordered)))]]

    return some(), some()


weights = st.builds(
    Weights,
    vector=st.floats(0.01, 5),
    text=st.floats(0.01, 5),
    opening=st.floats(0, 5),
    k=st.integers(1, 100),
)
openings = st.dictionaries(st.sampled_from([d for d, _ in PAGES]), st.floats(-1, 1))


def ranks(ranking: Ranking) -> dict[Place, int]:
    """Each page's rank: that of its best chunk among the pages listed."""
    found: dict[Place, int] = {}
    for row, _ in ranking:
        found.setdefault(place(row), len(found) + 1)
    return found


@dataclass(frozen=True)
class Case:
    by_vector: dict[Place, int]
    by_text: dict[Place, int]
    fused: list[Place]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Random rankings fused with random weights and opening similarities."""
    vector, text = draw(rankings())
    fused = fuse(vector, text, draw(weights), 1, draw(openings))
    return Case(ranks(vector), ranks(text), [place(row) for row, _ in fused])


@settings(max_examples=400, deadline=None)
@given(cases())
def test_a_page_first_in_both_rankings_is_first(case: Case) -> None:
    agreed = [p for p, r in case.by_vector.items() if r == 1 and case.by_text.get(p) == 1]
    if agreed:
        assert case.fused[0] == agreed[0]


@settings(max_examples=400, deadline=None)
@given(cases())
def test_a_page_in_both_rankings_outranks_every_page_in_one(case: Case) -> None:
    both = [i for i, p in enumerate(case.fused) if p in case.by_vector and p in case.by_text]
    one = [i for i, p in enumerate(case.fused) if (p in case.by_vector) != (p in case.by_text)]
    if both and one:
        assert max(both) < min(one)


@settings(max_examples=400, deadline=None)
@given(rankings(), st.floats(0.01, 5), st.floats(0.01, 5), st.integers(1, 100))
def test_a_page_better_in_both_rankings_comes_first(
    pair: tuple[Ranking, Ranking], wv: float, wt: float, k: int
) -> None:
    """Without the opening ranking, the order respects dominance: at least as good in each
    ranking (absent is worst) and better in one means above."""
    vector, text = pair
    by_vector, by_text = ranks(vector), ranks(text)
    fused = [place(row) for row, _ in fuse(vector, text, Weights(wv, wt, 0.0, k), 1, {})]
    worst = len(PAGES) + 1
    for p in fused:
        for q in fused:
            pv, pt = by_vector.get(p, worst), by_text.get(p, worst)
            qv, qt = by_vector.get(q, worst), by_text.get(q, worst)
            if pv <= qv and pt <= qt and (pv, pt) != (qv, qt):
                assert fused.index(p) < fused.index(q)


@settings(max_examples=200, deadline=None)
@given(rankings(), weights, openings, st.integers(1, 4))
def test_every_page_listed_once_with_its_best_chunks(
    pair: tuple[Ranking, Ranking], w: Weights, opening: dict[str, float], per_page: int
) -> None:
    vector, text = pair
    fused = fuse(vector, text, w, per_page, opening)
    pages = [place(row) for row, _ in fused]
    listed = set(ranks(vector)) | set(ranks(text))
    assert set(pages) == listed
    for p in listed:
        at = [i for i, q in enumerate(pages) if q == p]
        assert at == list(range(at[0], at[0] + len(at)))  # a page's chunks side by side
        assert 1 <= len(at) <= per_page


def test_a_page_is_not_diluted_across_its_chunks() -> None:
    """Its best vector passage and its best text passage are different chunks: the page is
    still first in both, so first, above a page whose one chunk is second in both."""
    a1 = {"id": "a1", "doc_id": "a", "page": None}
    a2 = {"id": "a2", "doc_id": "a", "page": None}
    b1 = {"id": "b1", "doc_id": "b", "page": None}
    vector = [(a1, 0.9), (b1, 0.8), (a2, 0.7)]
    text = [(a2, 9.0), (b1, 8.0), (a1, 1.0)]
    fused = fuse(vector, text, Weights(), 1, None)
    assert [place(r) for r, _ in fused] == [("a", None), ("b", None)]
