"""Open Inference Protocol requests that no client library sends (issue 19, item 2's bad input), in one process:
each is a 4xx in the protocol's shape, {"error": MESSAGE}, whose message starts with the place of the problem the
way the client wrote it; the protocol's 400 where our own routes answer 422. The tritonclient tests
(test_oip_tritonclient.py) cover what that client sends."""
from __future__ import annotations

import json
import struct

import pytest

INFER = "/v2/models/production/infer"


def tensor(data=None, shape=(1, 2), **extra) -> dict:
    body = {"name": "prefix", "datatype": "INT64", "shape": list(shape), **extra}
    if data is not None:
        body["data"] = data
    return body


def request(*inputs, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary(head: dict, *values: int) -> tuple[bytes, dict]:
    text = json.dumps(head).encode()
    return text + struct.pack(f"<{len(values)}q", *values), {"Inference-Header-Content-Length": str(len(text))}


def refused(r, status: int, starts: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert list(r.json()) == ["error"], r.text
    assert r.json()["error"].startswith(starts), r.text


BAD = [  # body, extra headers, the start of the message
    (b"", {}, "body: a JSON inference request is required"),
    (b'{"inputs": [', {}, "body: the inference request is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, {}, "body: the inference request is not valid JSON: recursion limit exceeded"),
    (b"[1, 2]", {}, ": must be a JSON object"),
    (request(tensor([7, 2]), extra=1), {}, "extra: unknown field; the request takes id, parameters, inputs, outputs"),
    (request(), {}, "inputs: must list exactly one input, prefix"),
    (request(tensor([7, 2]), tensor([7, 2])), {}, "inputs: must list exactly one input"),
    (request(tensor([7, 2], name="tokens")), {}, "inputs[0].name: this model's one input is 'prefix'"),
    (request(tensor([7, 2], datatype="INT32")), {}, "inputs[0].datatype: prefix is INT64"),
    (request(tensor([7, 2], shape=[2])), {}, "inputs[0].shape: prefix has shape [N, L]"),
    (request(tensor([7] * 65, shape=[1, 65])), {}, "inputs[0].shape[1]: must be an integer from 1 to 64"),
    (request(tensor([7], shape=[4097, 1])), {}, "inputs[0].shape[0]: must be an integer from 1 to 4096"),
    (request(tensor([7, 2], shape=[True, 2])), {}, "inputs[0].shape[0]: must be an integer"),
    (request(tensor([7, 2, 3])), {}, "inputs[0].data: holds 3 elements; shape [1, 2] has 2"),
    (request(tensor([[7, 2], [3]], shape=[2, 2])), {}, "inputs[0].data: nested data must be 2 arrays of 2"),
    (request(tensor([7, 2.0])), {}, "inputs[0].data[1]: must be an integer, got 2.0"),
    (request(tensor([7, True])), {}, "inputs[0].data[1]: must be an integer, got true"),
    (request(tensor([7, "2"])), {}, "inputs[0].data[1]: must be an integer"),
    (request(tensor()), {}, "inputs[0].data: must be an array of 2 integers (or binary_data_size)"),
    (request(tensor([7, 1000])), {}, "prefix[0][1]: token 1000 is outside 0..999"),
    (request(tensor([3, 1, 7, -1], shape=[2, 2])), {}, "prefix[1][1]: token -1 is outside 0..999"),
    (request(tensor([3, 1, 7, 10], shape=[2, 2])), {}, "prefix[1]: token 10 is outside the vocabulary 0..9"),
    (request(tensor([7, 2], parameters={"shared_memory_region": "x"})), {},
     "inputs[0].parameters.shared_memory_region: unknown field"),
    (request(tensor([7, 2]), parameters={"timeout": 5}), {}, "parameters.timeout: unknown field"),
    (request(tensor([7, 2]), parameters={"k": 0}), {}, "parameters.k: must be an integer from 1 to 50"),
    (request(tensor([7, 2]), parameters={"k": "3"}), {}, "parameters.k: must be an integer"),
    (request(tensor([7, 2]), parameters={"session": "two words"}), {}, "parameters.session: may hold only"),
    (request(tensor([7, 2]), parameters={"session": 7}), {}, "parameters.session: must be a string"),
    (request(tensor([7, 2]), parameters={"session": "a"}), {"X-Session-ID": "b"}, "session: the X-Session-ID header"),
    (request(tensor([7, 2]), parameters={"binary_data_output": 1}), {}, "parameters.binary_data_output: must be true"),
    (request(tensor([7, 2]), id=7), {}, "id: must be a string of at most 256 characters"),
    (request(tensor([7, 2]), id="x" * 257), {}, "id: must be a string of at most 256 characters"),
    (request(tensor([7, 2]), outputs=[]), {}, "outputs: must be a non-empty array"),
    (request(tensor([7, 2]), outputs=[{"name": "logits"}]), {}, "outputs[0].name: unknown output \"logits\""),
    (request(tensor([7, 2]), outputs=[{"name": "sequence"}, {"name": "sequence"}]), {},
     "outputs[1].name: sequence is asked for twice"),
    (request(tensor([7, 2]), outputs=[{"name": "topk_probabilities"}]), {}, "outputs[0].name: topk_probabilities needs parameters.k"),
    (request(tensor([7, 2]), outputs=[{"name": "sequence", "parameters": {"classification": 3}}]), {},
     "outputs[0].parameters.classification: unknown field"),
    (request(tensor([7, 2])), {"Content-Type": "text/plain"}, "Content-Type: a body without Inference-Header-Content-Length is JSON"),
    (request(tensor([7, 2])), {"Inference-Header-Content-Length": "0"}, "Inference-Header-Content-Length: must be"),
    (request(tensor([7, 2])), {"Inference-Header-Content-Length": "99999"}, "Inference-Header-Content-Length: must be"),
    (request(tensor([7, 2])), {"Inference-Header-Content-Length": "-5"}, "Inference-Header-Content-Length: must be"),
    (*binary({"inputs": [tensor(parameters={"binary_data_size": 8})]}, 7, 2),
     "inputs[0].parameters.binary_data_size: shape [1, 2] of INT64 takes 16 bytes; binary_data_size says 8 and 16"),
    (*binary({"inputs": [tensor(parameters={"binary_data_size": 16})]}, 7, 2, 3),
     "inputs[0].parameters.binary_data_size: shape [1, 2] of INT64 takes 16 bytes; binary_data_size says 16 and 24"),
    (*binary({"inputs": [tensor([7, 2], parameters={"binary_data_size": 16})]}, 7, 2),
     "inputs[0].data: give the data in the JSON or as binary_data_size, not both"),
    (*binary({"inputs": [tensor([7, 2])]}, 7, 2), "inputs[0].parameters.binary_data_size: 16 bytes follow the JSON head"),
    (*binary({"inputs": [tensor(parameters={"binary_data_size": 16})]}, 7, 2**40),
     f"prefix[0][1]: token {2**40} is outside 0..999"),
]


@pytest.mark.parametrize(("body", "headers", "starts"), BAD, ids=range(len(BAD)))
def test_bad_infer_requests_are_400_naming_the_problem(client, body, headers, starts):
    refused(client.post(INFER, content=body, headers={"Content-Type": "application/json", **headers}), 400, starts)


def test_what_the_body_contract_and_the_router_refuse_answers_in_the_protocol_shape(client):
    refused(client.post(INFER, content=b" " * (1024 * 1024 + 1)), 413, "the body exceeds 1048576 bytes")
    refused(client.get(INFER), 405, "Method Not Allowed")
    refused(client.get("/v2/nothing/here"), 404, "Not Found")
    refused(client.get("/v2/models/production/versions/default/infer"), 405, "Method Not Allowed")
    # the rest of the API keeps its own error body
    assert client.post("/predict", json={"start": 12}).json()["error"] == "invalid_input"


def test_answers_are_bounded_before_decoding_for_each_encoding(make_client):
    c = make_client(max_batch_answer_bytes=65_536)  # the least it may be
    rows = [[i % 10, (i // 10) % 10, i // 100 % 10] for i in range(1500)]  # 1,000 distinct, 500 repeated
    data = [t for row in rows for t in row]

    def ask(outputs: list[dict], k: int | None = None):
        parameters = {} if k is None else {"k": k}
        return c.post(INFER, json={"inputs": [tensor(data, shape=[1500, 3])], "outputs": outputs,
                                   "parameters": parameters})

    def binary(name: str) -> dict:
        return {"name": name, "parameters": {"binary_data": True}}

    assert ask([binary("sequence")]).status_code == 200  # 60,000 bytes of INT64 and the head
    assert ask([{"name": "sequence"}, {"name": "probability"}]).status_code == 200  # one digit and a comma a token
    refused(ask([binary("sequence"), {"name": "probability"}]), 400,
            "prefix: the outputs sequence, probability for these 1500 prefixes on model 'default' could answer up to")
    r = ask([binary("topk_sequences")], k=5)
    refused(r, 400, "prefix: the outputs topk_sequences for these 1500 prefixes")
    assert "SEQ2SEQ_MAX_BATCH_ANSWER_BYTES" in r.json()["error"] and "or a smaller k" in r.json()["error"]
    assert len(c.app.state.engine.cache) == 1000  # the greedy answers; nothing was decoded for the refused top-k


def test_the_server_is_not_ready_without_a_model(make_client, tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    c = make_client(weights_dir=empty)
    assert c.get("/v2/health/live").json() == {"live": True}
    refused(c.get("/v2/health/ready"), 503, "no model is ready")
    refused(c.post(INFER, content=request(tensor([7, 2]))), 503, "")
