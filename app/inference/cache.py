"""A bounded LRU of finished answers. Decoding is deterministic, so a body can be served again as long
as its model exists; every key names its model, and a removed model's entries are purged.

An answer is its finished JSON body and, for top-k, the facts an impression of it states (app.feedback.impressions):
both depend only on the key, so both are built once; what differs per request (an impression's time and session)
is added to the body when it is served, never cached.

Keys are typed: a greedy answer and a top-k answer for the same prefix can never share an entry (a frozen
dataclass compares its class too, where a tuple (model, prefix, True) would equal (model, prefix, 1)).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PredictKey:
    model: str
    prefix: tuple[int, ...]
    attention: bool


@dataclass(frozen=True, slots=True)
class TopKKey:
    model: str
    prefix: tuple[int, ...]
    k: int


CacheKey = PredictKey | TopKKey


class Answer:
    """One decoded answer. Its JSON body is written the first time it is asked for, then kept: a request in
    another encoding (app.http.oip's tensors) reads only the values, and writing the JSON for it cost a sixth of
    its route. Never changed once built (writing the body twice, from two threads, writes the same bytes)."""

    __slots__ = ("_body", "_write", "facts", "probabilities", "sequences")

    def __init__(self, body: bytes | Callable[[], bytes], facts: bytes = b"", sequences: tuple[list[int], ...] = (),
                 probabilities: tuple[float, ...] = ()) -> None:
        self._body: bytes | None = body if isinstance(body, bytes) else None
        self._write: Callable[[], bytes] | None = None if isinstance(body, bytes) else body
        self.facts = facts  # top-k: model, prefix, k and a digest per suggestion, for the impression tokens
        # The same answer as values: greedy, one sequence and its probability; top-k, each suggestion's, best first.
        self.sequences = sequences
        self.probabilities = probabilities

    @property
    def body(self) -> bytes:
        body = self._body
        if body is None:
            assert self._write is not None
            body = self._body = self._write()
        return body


def _nothing() -> None:
    pass


class ResponseCache:
    def __init__(self, capacity: int, on_hit: Callable[[], None] = _nothing, on_miss: Callable[[], None] = _nothing):
        self.capacity = capacity
        self.on_hit, self.on_miss = on_hit, on_miss  # metrics: counted where the lookup happens
        self._data: OrderedDict[CacheKey, Answer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> Answer | None:
        if self.capacity == 0:
            self.on_miss()
            return None
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
        (self.on_miss if value is None else self.on_hit)()
        return value

    def put(self, key: CacheKey, value: Answer) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def forget_model(self, model_id: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k.model == model_id]:
                del self._data[key]

    def __len__(self) -> int:
        return len(self._data)
