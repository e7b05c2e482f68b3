"""A bounded LRU of finished response bodies. Decoding is deterministic, so a body can be served again
as long as its model exists; keys start with the model id, and a removed model's entries are purged."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable


class ResponseCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        if self.capacity == 0:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
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
