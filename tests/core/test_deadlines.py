"""The deadline book against a brute-force model (hypothesis), and its memory bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.core.deadlines import Deadline, DeadlineBook

ops = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, 5),
              st.lists(st.floats(0, 100, allow_nan=False), max_size=4)),
    st.tuples(st.just("clear"), st.integers(0, 5), st.just([])),
    st.tuples(st.just("pop"), st.integers(0, 100), st.just([])),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_book_matches_a_plain_model(steps: list) -> None:
    book, model = DeadlineBook(), {}
    for op, arg, dues in steps:
        eid = f"E{arg}"
        if op == "set":
            book.set(eid, [Deadline("respond", "breach", d) for d in dues])
            model[eid] = sorted(dues)
        elif op == "clear":
            book.clear(eid)
            model.pop(eid, None)
        else:
            got = sorted((d.due, e) for e, d in book.pop_due(float(arg)))
            want = sorted((d, e) for e, ds in model.items() for d in ds if d <= arg)
            assert got == want
            model = {e: [d for d in ds if d > arg] for e, ds in model.items()}
        live = [d for ds in model.values() for d in ds]
        head = book.head()
        assert (head[0] if head else None) == (min(live) if live else None)


def test_restarting_clocks_keeps_the_heap_bounded() -> None:
    book = DeadlineBook()
    for i in range(100):
        book.set(f"E{i}", [Deadline("respond", "breach", 1000.0 + j) for j in range(6)])
    for _round in range(200):
        for i in range(100):
            book.set(f"E{i}", [Deadline("respond", "breach", 1000.0 + j) for j in range(6)])
    assert len(book) <= 4 * 600 + 1024 + 6
    assert sum(1 for _ in book.pop_due(2000.0)) == 600
