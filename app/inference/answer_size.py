"""Upper bounds on the bytes of an inference answer, known from the model before anything is decoded, so a
batch whose answer would be too large is refused before it costs anything.

The bounds follow the engine's JSON (compact separators): every token at its widest for the vocabulary,
every float at the longest repr Python writes for a finite double. Measured on the shipped model (length 5, vocabulary 10): a top-k suggestion is 85-89 bytes (bound 96,
so the issue's 4,096 x top-50 batch, 18.4 MB, is bounded at 20.3 MB); a /predict item for a 3-token prefix
220 bytes (bound 248), 357 with attention (bound 419). A top-k item's impression is counted exactly (its length follows
from the model id, the prefix, k and the session). The bound is what a client may be made to read, so it
errs high, by a little.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from model.config import ModelConfig
from model.cost import known_tokens

from ..feedback.impressions import encoded_length

FLOAT = len("-1.2345678901234567e-100")  # the longest JSON float for a finite double: 24


def _token(config: ModelConfig) -> int:
    return len(str(config.vocab_size - 1)) + 1  # its digits and a comma


@lru_cache(maxsize=4096)
def topk_item(config: ModelConfig, model_id: str, prefix_len: int, k: int) -> int:
    """One /topk answer: the prefix and k suggestions of seq_length tokens, each with two floats."""
    token = _token(config)
    suggestion = len('{"sequence":[],"score":,"probability":},') + config.seq_length * token + 2 * FLOAT
    return (len('{"model":,"prefix":[],"k":,"suggestions":[]}') + len(json.dumps(model_id)) + prefix_len * token
            + len(str(k)) + k * suggestion)


def impression(model_id: str, prefix_len: int, k: int, session_len: int, tag_len: int | None = None) -> int:
    """What an impression adds to a top-k item, `,"impression":"TOKEN"`: exact for k suggestions (a token's
    length follows from what it holds; tag_len: its rollout tag's, if any)."""
    return len(',"impression":""') + encoded_length(model_id, prefix_len, k, session_len, tag_len)


@lru_cache(maxsize=4096)
def predict_item(config: ModelConfig, model_id: str, prefix_len: int, attention: bool) -> int:
    """One /predict answer: prefix, sequence, score and probability, a step per generated position and, with
    attention, a row of prefix_len weights per step."""
    token, steps = _token(config), config.seq_length - known_tokens(prefix_len, config.seq_length)
    size = (len('{"model":,"prefix":[],"sequence":[],"score":,"probability":,"steps":[]}') + len(json.dumps(model_id))
            + (prefix_len + config.seq_length) * token + 2 * FLOAT
            + steps * (len('{"token":,"probability":},') + token + FLOAT))
    if attention:
        size += len(',"attention":[]') + steps * (len("[],") + prefix_len * (FLOAT + 1))
    return size


ALIAS_BYTES = len('"alias":"",') + 32  # the alias the request came through, at its longest (app.http.routes.inference)


SCORE_ITEM = len('{"log_probability":,"probability":},') + 2 * FLOAT  # one POST /score result


def batch(model_id: str, prefix_lengths: Iterable[int], item_bytes) -> int:
    """A batch answer, `{"alias": ..., "model": ..., "results": [...]}`, every item counted (repeats too);
    item_bytes(length) is the bound for one item of a prefix of that length."""
    lengths = Counter(prefix_lengths)
    return (len('{"model":,"results":[]}') + ALIAS_BYTES + len(json.dumps(model_id))
            + sum(count * (item_bytes(size) + 1) for size, count in lengths.items()))


OIP_OUTPUT = len('{"name":"topk_probabilities","datatype":"INT64","shape":[],"parameters":{"binary_data_size":}},') + 3 * 11 + 20
OIP_HEAD = len('{"model_name":,"model_version":,"id":,"parameters":{},"outputs":[]}')
OIP_ROLLOUT = len('"rollout":"","arm":"candidate",') + 64  # the rollout's id and arm (app.http.oip), at their longest
INT64, FP32 = 8, 4  # bytes an element takes in a binary tensor


def oip_tensor(elements: int, binary: bool, json_element: int, binary_element: int) -> int:
    """One output of an Open Inference Protocol answer: its description, and its elements as JSON or raw bytes."""
    return OIP_OUTPUT + (elements * binary_element if binary else len(',"data":[]') + elements * (json_element + 1))


@lru_cache(maxsize=4096)
def oip(config: ModelConfig, name: str, model_id: str, rows: int, k: int, outputs: tuple[tuple[str, bool], ...],
        request_id: int, impression: int) -> int:
    """An Open Inference Protocol answer (app.http.oip): its JSON head, then each output asked for, as JSON or as
    binary (Triton's extension): `sequence` INT64 [rows, seq_length], `probability` FP32 [rows], `topk_sequences`
    INT64 [rows, k, seq_length] and `topk_probabilities` FP32 [rows, k]. request_id: the bytes the request's id
    takes as JSON; impression: one impression token's bytes (0: none minted)."""
    token, length = _token(config), config.seq_length
    elements = {"sequence": (rows * length, token, INT64), "probability": (rows, FLOAT, FP32),
                "topk_sequences": (rows * k * length, token, INT64), "topk_probabilities": (rows * k, FLOAT, FP32)}
    size = OIP_HEAD + len(json.dumps(name)) + len(json.dumps(model_id)) + request_id + OIP_ROLLOUT
    if impression:
        size += len('"impressions":""') + rows * (impression + 1)
    return size + sum(oip_tensor(elements[output][0], binary, *elements[output][1:]) for output, binary in outputs)
