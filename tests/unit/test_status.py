"""`crossrec status`'s note on a query service's history cache."""

from crossrec.stack.status import cache_note


def test_the_cache_note_gives_users_and_the_share_of_hits() -> None:
    assert cache_note({"users": 2469, "hits": 38000, "misses": 2000, "reports": 5}) == (
        "history cache 2,469 users, 95 % hits"
    )
    assert cache_note({"users": 0, "hits": 0, "misses": 0, "reports": 0}) == "history cache 0 users"
