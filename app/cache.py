"""A bounded, thread-safe LRU for data that can never change (that of locked nodes)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Evicts least recently used entries once their total weight exceeds ``capacity``.

    The weight of an entry is ``weigh(value)``: 1 by default (a count), ``len`` for bytes.
    """

    def __init__(self, capacity: int, weigh: Callable[[V], int] = lambda _: 1) -> None:
        self.capacity = capacity
        self.weigh = weigh
        self.weight = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return value

    def discard(self, key: str) -> None:
        """Forget ``key`` (if held): for entries found to lead nowhere."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.weight -= self.weigh(old)

    def put(self, key: str, value: V) -> None:
        weight = self.weigh(value)
        if weight > self.capacity:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.weight -= self.weigh(old)
            self._entries[key] = value
            self.weight += weight
            while self.weight > self.capacity:
                _, evicted = self._entries.popitem(last=False)
                self.weight -= self.weigh(evicted)

    def __len__(self) -> int:
        return len(self._entries)
