"""Open Inference Protocol tensors: the infer request read from its JSON, or from a JSON head followed by raw tensor
bytes (Triton's binary tensor extension, which tritonclient sends by default), and the answer written the same two
ways.

A request has one input, `prefix` (INT64, shape [N, L]: N prefixes of L tokens), its data in `data` (flat or
nested, row-major) or as N*L little-endian int64 after the head (`parameters.binary_data_size`, the head's length in
the Inference-Header-Content-Length header). Everything is checked here before any model is asked, and every
problem names its place the way the client sent it (`inputs[0].shape`, `parameters.k`, `outputs[1].name`); the
model's own prefix rule (its vocabulary and length) is the engine's, which names rows as `prefix[3]`.
"""
from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from pydantic_core import from_json

from model.limits import MAX_SEQ_LENGTH, MAX_VOCAB

from ...errors import InvalidInput
from ..lean import JSON, Reply, is_json
from ..schemas import MAX_BATCH, MAX_K
from ..sessions import session_problem

INPUT = "prefix"
SEQUENCE, PROBABILITY = "sequence", "probability"
TOPK_SEQUENCES, TOPK_PROBABILITIES = "topk_sequences", "topk_probabilities"
GREEDY_OUTPUTS = (SEQUENCE, PROBABILITY)
TOPK_OUTPUTS = (TOPK_SEQUENCES, TOPK_PROBABILITIES)
OUTPUTS = GREEDY_OUTPUTS + TOPK_OUTPUTS
PARAMETERS = ("k", "session", "binary_data_output")
HEADER_LENGTH = "inference-header-content-length"
HEADER_LENGTH_KEY = HEADER_LENGTH.encode()
MAX_ID = 256  # characters of a request's id, which the answer repeats
NONE: dict = {}  # an absent object (never written to)
BINARY = b"application/octet-stream"
LITTLE = sys.byteorder == "little"


class InferRequest(NamedTuple):  # made on every request: a tuple builds in a fraction of a dataclass's time
    prefixes: list[list[int]]
    outputs: tuple[tuple[str, bool], ...]  # (name, as binary), in the order the answer lists them
    k: int | None = None
    session: str | None = None
    id: str | None = None
    greedy: bool = True  # a greedy output is asked for
    topk: bool = False  # a top-k output is asked for (k is given)


DEFAULT_OUTPUTS = {(k, binary): tuple((name, binary) for name in (OUTPUTS if k else GREEDY_OUTPUTS))
                   for k in (False, True) for binary in (False, True)}
SINGLE_ROW_OUTPUTS = DEFAULT_OUTPUTS[False, False]  # sequence and probability as JSON: greedy_row's outputs


def _object(value: object, field: str, allowed: Sequence[str]) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a JSON object, got {_kind(value)}")
    for key in value:
        if key not in allowed:
            raise InvalidInput(f"{field}.{key}"[:100] if field else str(key)[:100],
                               f"unknown field; {field or 'the request'} takes {', '.join(allowed)}")
    return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _int(value: object, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:  # bool is an int subclass: refused too
        raise InvalidInput(field, f"must be an integer from {low} to {high}, got {json.dumps(value)[:40]}")
    return value


def _bool(value: object, field: str) -> bool:
    if type(value) is not bool:
        raise InvalidInput(field, f"must be true or false, got {json.dumps(value)[:40]}")
    return value


def _head_length(header: str | None, size: int) -> int | None:
    if header is None:
        return None
    if not header.isdigit() or len(header) > 9 or not 0 < int(header) <= size:
        raise InvalidInput("Inference-Header-Content-Length", f"must be the length of the JSON head, 1 to the "
                                                             f"body's {size} bytes; got {header[:20]!r}")
    return int(header)


def parse(raw: bytes, header_length: str | None, content_type: str | None) -> InferRequest:
    """The infer request in `raw`; InvalidInput naming the first problem."""
    split = _head_length(header_length, len(raw))
    if split is None and content_type is not None and content_type != JSON and not is_json(content_type):
        raise InvalidInput("Content-Type", f"a body without Inference-Header-Content-Length is JSON; got "
                                           f"{content_type[:60]!r}")
    head, tail = (raw, memoryview(b"")) if split is None else (raw[:split], memoryview(raw)[split:])
    if not head:
        raise InvalidInput("body", "a JSON inference request is required")
    try:
        request = from_json(head)  # pydantic's JSON parser: a sixth of json.loads's time on a one-row request
    except ValueError as exc:  # invalid JSON or UTF-8, or nested too deeply
        raise InvalidInput("body", f"the inference request is not valid JSON: {str(exc)[:120]}") from None
    _object(request, "", ("id", "parameters", "inputs", "outputs"))
    k = session = rid = None
    binary_default = False
    if "parameters" in request:
        parameters = _object(request["parameters"], "parameters", PARAMETERS)
        k = _int(parameters["k"], "parameters.k", 1, MAX_K) if "k" in parameters else None
        session = parameters.get("session")
        if session is not None:
            problem = session_problem(session) if isinstance(session, str) else f"must be a string, got {_kind(session)}"
            if problem is not None:
                raise InvalidInput("parameters.session", problem)
        binary_default = _bool(parameters.get("binary_data_output", False), "parameters.binary_data_output")
    if "id" in request:
        rid = request["id"]
        if not isinstance(rid, str) or len(rid) > MAX_ID:
            raise InvalidInput("id", f"must be a string of at most {MAX_ID} characters")
    prefixes = _prefixes(request.get("inputs"), tail)
    if "outputs" not in request:
        return InferRequest(prefixes, DEFAULT_OUTPUTS[k is not None, binary_default], k, session, rid,
                            greedy=True, topk=k is not None)
    outputs = _outputs(request["outputs"], k, binary_default)
    return InferRequest(prefixes, outputs, k, session, rid, greedy=any(name in GREEDY_OUTPUTS for name, _ in outputs),
                        topk=any(name in TOPK_OUTPUTS for name, _ in outputs))


def _prefixes(inputs: object, tail: memoryview) -> list[list[int]]:
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else _kind(inputs)
        raise InvalidInput("inputs", f"must list exactly one input, {INPUT} (INT64, shape [N, L]); got {got}")
    field = "inputs[0]"
    tensor = _object(inputs[0], field, ("name", "shape", "datatype", "parameters", "data"))
    if tensor.get("name") != INPUT:
        raise InvalidInput(f"{field}.name", f"this model's one input is {INPUT!r}; got {json.dumps(tensor.get('name'))[:40]}")
    if tensor.get("datatype") != "INT64":
        raise InvalidInput(f"{field}.datatype", f"{INPUT} is INT64; got {json.dumps(tensor.get('datatype'))[:40]}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or len(shape) != 2:
        raise InvalidInput(f"{field}.shape", f"{INPUT} has shape [N, L] (N prefixes of L tokens); got "
                                             f"{json.dumps(shape)[:40]}")
    rows = _int(shape[0], "inputs[0].shape[0]", 1, MAX_BATCH)
    length = _int(shape[1], "inputs[0].shape[1]", 1, MAX_SEQ_LENGTH)
    parameters = _object(tensor.get("parameters", NONE), "inputs[0].parameters", ("binary_data_size",))
    count = rows * length
    if "binary_data_size" in parameters:
        if "data" in tensor:
            raise InvalidInput(f"{field}.data", "give the data in the JSON or as binary_data_size, not both")
        size = _int(parameters["binary_data_size"], "inputs[0].parameters.binary_data_size", 0, 2**31)
        if size != count * 8 or len(tail) != size:
            raise InvalidInput(f"{field}.parameters.binary_data_size", f"shape {shape} of INT64 takes {count * 8} "
                                                                       f"bytes; binary_data_size says {size} and "
                                                                       f"{len(tail)} follow the JSON head")
        values = array("q")
        values.frombytes(tail)
        if not LITTLE:
            values.byteswap()
        flat = values.tolist()
    else:
        if len(tail):
            raise InvalidInput(f"{field}.parameters.binary_data_size", f"{len(tail)} bytes follow the JSON head, "
                                                                       "but no input says binary_data_size")
        flat = _json_data(tensor.get("data"), rows, length, "inputs[0].data")
    if count and (min(flat) < 0 or max(flat) >= MAX_VOCAB):
        at = next(i for i, t in enumerate(flat) if not 0 <= t < MAX_VOCAB)
        raise InvalidInput(f"{INPUT}[{at // length}][{at % length}]",
                           f"token {flat[at]} is outside 0..{MAX_VOCAB - 1}")
    return [flat[i:i + length] for i in range(0, count, length)]


def _json_data(data: object, rows: int, length: int, field: str) -> list[int]:
    """The tensor's elements in row-major order, from a flat list or one nested as the shape."""
    if not isinstance(data, list):
        raise InvalidInput(field, f"must be an array of {rows * length} integers (or binary_data_size); got {_kind(data)}")
    if data and isinstance(data[0], list):
        if len(data) != rows or any(not isinstance(row, list) or len(row) != length for row in data):
            raise InvalidInput(field, f"nested data must be {rows} arrays of {length} integers, as the shape says")
        data = [t for row in data for t in row]
    elif len(data) != rows * length:
        raise InvalidInput(field, f"holds {len(data)} elements; shape [{rows}, {length}] has {rows * length}")
    for i, t in enumerate(data):
        if type(t) is not int:
            raise InvalidInput(f"{field}[{i}]", f"must be an integer, got {json.dumps(t)[:40]}")
    return data


def _outputs(outputs: object, k: int | None, binary_default: bool) -> tuple[tuple[str, bool], ...]:
    if not isinstance(outputs, list) or not outputs:
        raise InvalidInput("outputs", f"must be a non-empty array of outputs ({', '.join(OUTPUTS)}), or left out")
    chosen: list[tuple[str, bool]] = []
    for i, output in enumerate(outputs):
        field = f"outputs[{i}]"
        _object(output, field, ("name", "parameters"))
        name = output.get("name")
        if name not in OUTPUTS:
            raise InvalidInput(f"{field}.name", f"unknown output {json.dumps(name)[:40]}; this model has "
                                                f"{', '.join(OUTPUTS)}")
        if any(name == seen for seen, _ in chosen):
            raise InvalidInput(f"{field}.name", f"{name} is asked for twice")
        if name in TOPK_OUTPUTS and k is None:
            raise InvalidInput(f"{field}.name", f"{name} needs parameters.k, how many suggestions (1 to {MAX_K})")
        parameters = _object(output.get("parameters", {}), f"{field}.parameters", ("binary_data",))
        binary = _bool(parameters["binary_data"], f"{field}.parameters.binary_data") \
            if "binary_data" in parameters else binary_default
        chosen.append((name, binary))
    return tuple(chosen)


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    datatype: str  # INT64 or FP32
    shape: list[int]
    values: list  # row-major


def tensors(request: InferRequest, greedy: list, topk: list, seq_length: int) -> list[Tensor]:
    """The outputs asked for, in their order, from the engine's answers (app.inference.cache.Answer): one greedy
    and one top-k answer per row. A top-k row holds min(k, the continuations there are) suggestions; rows share a
    prefix length, so they hold as many, and the answer says how many in its shape."""
    rows = len(request.prefixes)
    width = min((len(a.sequences) for a in topk), default=0)
    out = []
    for name, _ in request.outputs:
        if name == SEQUENCE:
            out.append(Tensor(name, "INT64", [rows, seq_length], [t for a in greedy for t in a.sequences[0]]))
        elif name == PROBABILITY:
            out.append(Tensor(name, "FP32", [rows], [a.probabilities[0] for a in greedy]))
        elif name == TOPK_SEQUENCES:
            out.append(Tensor(name, "INT64", [rows, width, seq_length],
                              [t for a in topk for s in a.sequences[:width] for t in s]))
        else:
            out.append(Tensor(name, "FP32", [rows, width], [p for a in topk for p in a.probabilities[:width]]))
    return out


@lru_cache(maxsize=256)
def _head(name: str, model_id: str) -> str:
    return f'{{"model_name":{json.dumps(name)},"model_version":{json.dumps(model_id)}'


def greedy_row(name: str, model_id: str, request_id: str | None, sequence: Sequence[int], probability: float,
               seq_length: int) -> Reply:
    """encode() of one row's default outputs (sequence and probability, as JSON), byte for byte, in one format: the
    request most clients send one at a time, where tensors() and encode() cost as much as the rest of the route."""
    head, outputs, middle = _row_parts(name, model_id, seq_length)
    rid = b"" if request_id is None else b',"id":' + json.dumps(request_id).encode()
    data = repr(sequence if isinstance(sequence, list) else list(sequence)).replace(" ", "")  # "[7,2,8,4,3]"
    return Reply(b"%s%s%s%s%s%s]}]}" % (head, rid, outputs, data.encode(), middle, float.__repr__(probability).encode()))


@lru_cache(maxsize=256)
def _row_parts(name: str, model_id: str, seq_length: int) -> tuple[bytes, bytes, bytes]:
    """greedy_row's fixed text around the request id, the sequence and the probability."""
    return (_head(name, model_id).encode(),
            f',"outputs":[{{"name":"{SEQUENCE}","datatype":"INT64","shape":[1,{seq_length}],"data":'.encode(),
            f'}},{{"name":"{PROBABILITY}","datatype":"FP32","shape":[1],"data":['.encode())


def encode(name: str, model_id: str, request_id: str | None, parameters: dict[str, str], outputs: list[Tensor],
           binary: dict[str, bool]) -> Reply:
    """The answer: all JSON, or (when any output is asked for as binary) the JSON head, then each binary output's
    raw little-endian bytes in the order the head lists them, the head's length in Inference-Header-Content-Length.
    Written by hand (the names and types are ours, the values numbers; JSON writes a finite float as repr does):
    json.dumps of the same dict cost twice as much."""
    parts = [_head(name, model_id)]
    if request_id is not None:
        parts.append(f',"id":{json.dumps(request_id)}')
    if parameters:
        parts.append(f',"parameters":{json.dumps(parameters, separators=(",", ":"))}')
    parts.append(',"outputs":[')
    blobs = []
    for i, tensor in enumerate(outputs):
        shape = ",".join(map(str, tensor.shape))
        described = f'{"," if i else ""}{{"name":"{tensor.name}","datatype":"{tensor.datatype}","shape":[{shape}],'
        if binary[tensor.name]:
            values = array("q" if tensor.datatype == "INT64" else "f", tensor.values)
            if not LITTLE:
                values.byteswap()
            blob = values.tobytes()
            blobs.append(blob)
            parts.append(f'{described}"parameters":{{"binary_data_size":{len(blob)}}}}}')
        else:
            text = ",".join(map(str if tensor.datatype == "INT64" else float.__repr__, tensor.values))
            parts.append(f'{described}"data":[{text}]}}')
    parts.append("]}")
    head = "".join(parts).encode()
    if not blobs:
        return Reply(head)
    return Reply(head + b"".join(blobs), content_type=BINARY, headers=((HEADER_LENGTH_KEY, str(len(head)).encode()),))
