"""The bounded map kept per site."""

from __future__ import annotations

from reid_stream.lru import Lru


def test_the_least_recently_used_goes_and_is_made_again_when_asked_for():
    made: list[str] = []
    lru: Lru[str, str] = Lru(2)

    def make(key: str) -> str:
        made.append(key)
        return key.upper()

    assert lru.get_or_make("a", lambda: make("a")) == "A"
    assert lru.get_or_make("b", lambda: make("b")) == "B"
    assert lru.get("a") == "A"  # a is now the most recent
    lru.put("c", "C")
    assert list(lru) == ["a", "c"] and lru.get("b") is None
    assert lru.get_or_make("b", lambda: make("b")) == "B" and made == ["a", "b", "b"]
    assert list(lru) == ["c", "b"] and len(lru) == 2
    lru.pop("c")
    lru.pop("nobody")
    assert list(lru) == ["b"] and lru["b"] == "B"
