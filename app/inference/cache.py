"""A bounded LRU of finished response bodies. Decoding is deterministic, so a body can be served again
as long as its model exists; keys start with the model id, and a removed model's entries are purged."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class ResponseCache:
    def __init__(self, capacity: int, on_hit=lambda: None, on_miss=lambda: None):
        self.capacity = capacity
        self.on_hit, self.on_miss = on_hit, on_miss  # metrics: counted where the lookup happens
        self._data: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        if self.capacity == 0:
            self.on_miss()
            return None
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        (self.on_miss if value is None else self.on_hit)()
        return value

    def put(self, key: tuple, value: bytes) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def forget_model(self, model_id: Hashable) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == model_id]:
                del self._data[key]

    def __len__(self) -> int:
        return len(self._data)
