"""A memo bounded by entries and by bytes, for caches whose keys come from outside input."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(Generic[K, V]):
    """A dict that starts over when one more entry would pass ``max_entries`` or ``max_bytes``.

    Starting over, not evicting one entry, keeps a hit one C-level dict lookup (an LRU
    reorders itself on every read); the entries come back on the next requests. ``size`` is
    what the caller counts for an entry (its body and key text); an entry bigger than a
    sixteenth of the budget is not remembered, so a few can never crowd out the rest.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: dict[K, V] = {}
        self.get = self._data.get  # the same dict for its lifetime: clear() empties it

    def put(self, key: K, value: V, size: int) -> None:
        if size > self.max_bytes // 16 or key in self._data:
            return
        if len(self._data) >= self.max_entries or self.bytes + size > self.max_bytes:
            self.clear()
        self._data[key] = value
        self.bytes += size

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)
