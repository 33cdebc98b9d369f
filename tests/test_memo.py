"""BoundedMemo: a memo that outside input may key, held under its entry and byte bounds."""

from __future__ import annotations

from gateway.serving.memo import BoundedMemo


def test_it_starts_over_at_the_entry_bound() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(max_entries=3, max_bytes=1 << 20)
    for i in range(3):
        memo.put(i, str(i), 10)
    assert len(memo) == 3 and memo.bytes == 30
    memo.put(3, "3", 10)
    assert len(memo) == 1 and memo.get(3) == "3" and memo.get(0) is None and memo.bytes == 10


def test_it_starts_over_at_the_byte_bound() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(max_entries=1000, max_bytes=1600)
    for i in range(16):
        memo.put(i, "x", 100)
    assert memo.bytes == 1600
    memo.put(16, "x", 100)
    assert len(memo) == 1 and memo.bytes == 100


def test_an_entry_too_big_for_its_share_is_not_remembered() -> None:
    memo: BoundedMemo[str, str] = BoundedMemo(max_entries=10, max_bytes=1600)
    memo.put("small", "s", 100)
    memo.put("big", "b", 101)  # over a sixteenth of the budget
    assert memo.get("big") is None and memo.get("small") == "s" and memo.bytes == 100


def test_putting_a_key_again_counts_it_once() -> None:
    memo: BoundedMemo[str, str] = BoundedMemo(max_entries=10, max_bytes=1600)
    memo.put("k", "v", 50)
    memo.put("k", "v", 50)
    assert len(memo) == 1 and memo.bytes == 50


def test_clear_empties_the_same_dict_that_get_reads() -> None:
    memo: BoundedMemo[str, str] = BoundedMemo(max_entries=10, max_bytes=1600)
    memo.put("k", "v", 50)
    memo.clear()
    assert memo.get("k") is None and len(memo) == 0 and memo.bytes == 0
