"""$set / $unset / $delete by eventTime (UR-SPEC §1.2): order-independent and idempotent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crossrec.core.properties import PropertyState, aggregate, current, fold

ops = st.lists(
    st.tuples(
        st.sampled_from(["$set", "$unset", "$delete"]),
        st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), min_size=1, max_size=3),
        st.integers(0, 6),
    ),
    max_size=12,
)


def _state(events: list) -> PropertyState:
    state = PropertyState()
    for event, props, time in events:
        fold(state, event, props, time)
    return state


@given(ops, st.randoms())
def test_result_depends_on_event_times_not_arrival_order(events: list, rnd) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert current(_state(events)) == current(_state(shuffled))
    assert _state(events).to_json() == _state(shuffled).to_json()


@given(ops)
def test_replaying_changes_nothing(events: list) -> None:
    once = _state(events)
    twice = _state(events + events)
    assert once.to_json() == twice.to_json()
    assert PropertyState.from_json(once.to_json()).to_json() == once.to_json()


def test_pio_semantics() -> None:
    e = [
        ("i", "$set", {"a": 1, "b": 1}, 10),
        ("i", "$set", {"a": 2}, 5),  # older: loses
        ("i", "$unset", {"b": None}, 10),  # unset at the same time as the set removes it
        ("j", "$set", {"a": 1}, 1),
        ("j", "$delete", {}, 2),  # deleted after its last set: gone
        ("k", "$set", {"a": 1}, 1),
        ("k", "$delete", {}, 2),
        ("k", "$set", {"b": 1}, 3),  # set after the delete: only the later key survives
        ("l", "$unset", {"a": None}, 1),  # never set: no record
    ]
    assert aggregate(e) == {"i": {"a": 1}, "k": {"b": 1}}
