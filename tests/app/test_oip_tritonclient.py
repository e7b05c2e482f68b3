"""The Open Inference Protocol (issue 19, items 1 and 2) driven by a client we did not write, tritonclient[http]
from PyPI, against real servers: every endpoint, JSON and binary tensors both ways, one and many rows, requested
output subsets; the answers equal /predict's and /topk's for the same prefixes; versions are the model ids an alias
has pointed to; sessions pick a rollout's arm and impressions ride in `parameters` and are taken by /feedback."""
from __future__ import annotations

import random

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import TEST_KEY, Server, poll

KEY = {"Authorization": f"Bearer {TEST_KEY}"}
OUTPUTS = ("sequence", "probability", "topk_sequences", "topk_probabilities")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("oip"), SEQ2SEQ_JOB_WORKERS="0").start()
    server.wait_ready()
    yield server
    server.stop()


def client_of(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def prefixes(rows: int, length: int, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    return np.array([[rng.randrange(10) for _ in range(length)] for _ in range(rows)], dtype=np.int64)


def infer(client, data: np.ndarray, *, binary_in: bool = True, outputs=None, binary_out: bool = True, name="production",
          version: str = "", **kw):
    tensor = triton.InferInput("prefix", list(data.shape), "INT64")
    tensor.set_data_from_numpy(data, binary_data=binary_in)
    asked = None if outputs is None else [triton.InferRequestedOutput(o, binary_data=binary_out) for o in outputs]
    return client.infer(name, [tensor], model_version=version, outputs=asked, **kw)


def test_health_server_and_model_metadata(srv):
    client = client_of(srv)
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "seq2seq-serve" and "binary_tensor_data" in meta["extensions"]
    for name, version in (("production", ""), ("production", "default"), ("default", ""), ("default", "default")):
        model = client.get_model_metadata(name, version)
        assert model["name"] == name and model["versions"] == ["default"]
        assert model["inputs"] == [{"name": "prefix", "datatype": "INT64", "shape": [-1, -1]}]
        assert [(o["name"], o["datatype"], o["shape"]) for o in model["outputs"]] == [
            ("sequence", "INT64", [-1, 5]), ("probability", "FP32", [-1]), ("topk_sequences", "INT64", [-1, -1, 5]),
            ("topk_probabilities", "FP32", [-1, -1])]
        assert client.is_model_ready(name, version)
    assert not client.is_model_ready("production", "m-never-registered")
    assert not client.is_model_ready("nope")
    with pytest.raises(InferenceServerException) as refused:
        client.get_model_metadata("nope")  # without the key an unknown name costs nothing: 403, not a lookup
    assert refused.value.status() == "403" and "management key" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("nope", headers=KEY)
    assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException) as no_version:
        client.get_model_metadata("production", "m-never-registered", headers=KEY)
    assert no_version.value.status() == "404" and "has no version 'm-never-registered'" in no_version.value.message()


@pytest.mark.parametrize("rows", [1, 48])
@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)])
def test_infer_answers_what_predict_and_topk_answer(srv, rows, binary_in, binary_out):
    client = client_of(srv)
    length = 2 + rows % 3
    data = prefixes(rows, length, seed=rows * 10 + 2 * binary_in + binary_out)
    result = infer(client, data, binary_in=binary_in, binary_out=binary_out, outputs=OUTPUTS, parameters={"k": 4})
    answer = result.get_response()
    assert (answer["model_name"], answer["model_version"]) == ("production", "default")
    for output in answer["outputs"]:  # each output the way it was asked for
        assert ("binary_data_size" in (output.get("parameters") or {})) == binary_out, output
        assert ("data" in output) == (not binary_out)
    sequence, probability = result.as_numpy("sequence"), result.as_numpy("probability")
    topk_sequences, topk_probabilities = result.as_numpy("topk_sequences"), result.as_numpy("topk_probabilities")
    assert sequence.dtype == np.int64 and sequence.shape == (rows, 5) and probability.dtype == np.float32
    assert topk_sequences.shape == (rows, 4, 5) and topk_probabilities.shape == (rows, 4)
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for i, prefix in enumerate(data.tolist()):
            single = http.post("/predict", json={"prefix": prefix}).json()
            assert sequence[i].tolist() == single["sequence"]
            assert probability[i] == np.float32(single["probability"])
            top = http.get("/topk", params={"prefix": ",".join(map(str, prefix)), "k": 4}).json()["suggestions"]
            assert topk_sequences[i].tolist() == [s["sequence"] for s in top]
            assert topk_probabilities[i].tolist() == np.array([s["probability"] for s in top], np.float32).tolist()


def test_a_subset_of_outputs_mixed_encodings_and_fewer_continuations_than_k(srv):
    client = client_of(srv)
    data = prefixes(5, 4, seed=7)
    tensor = triton.InferInput("prefix", [5, 4], "INT64")
    tensor.set_data_from_numpy(data)
    result = client.infer("production", [tensor], parameters={"k": 20}, outputs=[
        triton.InferRequestedOutput("topk_probabilities", binary_data=False),
        triton.InferRequestedOutput("sequence", binary_data=True)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["topk_probabilities", "sequence"]
    assert result.as_numpy("probability") is None and result.as_numpy("topk_sequences") is None
    # a 4-token prefix of a 5-token model has 10 continuations: top-20 answers all 10, and the shape says so
    assert result.as_numpy("topk_probabilities").shape == (5, 10)
    top = httpx.get(f"{srv.url}/topk", params={"prefix": ",".join(map(str, data[0].tolist())), "k": 20}).json()
    assert len(top["suggestions"]) == 10
    only = infer(client, data, outputs=["probability"], binary_out=False)
    assert [o["name"] for o in only.get_response()["outputs"]] == ["probability"]
    np.testing.assert_array_equal(only.as_numpy("probability"), infer(client, data).as_numpy("probability"))
    default = infer(client, data, binary_in=False)  # no outputs named: tritonclient asks binary_data_output
    assert [o["name"] for o in default.get_response()["outputs"]] == ["sequence", "probability"]
    np.testing.assert_array_equal(default.as_numpy("sequence"), result.as_numpy("sequence"))
    with_k = infer(client, data, parameters={"k": 2})
    assert [o["name"] for o in with_k.get_response()["outputs"]] == list(OUTPUTS)


def test_bad_requests_are_4xx_naming_the_problem_through_tritonclient(srv):
    client = client_of(srv)

    def refused(call) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as caught:
            call()
        return caught.value.status(), caught.value.message()

    status, message = refused(lambda: infer(client, np.array([[7, 12]], dtype=np.int64)))
    assert status == "400" and message.startswith("prefix[0]: token 12 is outside the vocabulary 0..9")
    status, message = refused(lambda: infer(client, np.array([[7] * 6], dtype=np.int64)))
    assert status == "400" and message.startswith("prefix[0]:")
    status, message = refused(lambda: infer(client, prefixes(2, 2, 0), outputs=["topk_sequences"]))
    assert status == "400" and "needs parameters.k" in message and message.startswith("outputs[0].name")
    status, message = refused(lambda: infer(client, prefixes(2, 2, 0), parameters={"k": 51}))
    assert status == "400" and message.startswith("parameters.k: must be an integer from 1 to 50")
    status, message = refused(lambda: infer(client, prefixes(2, 2, 0), timeout=1000))  # tritonclient's own parameter
    assert status == "400" and message.startswith("parameters.timeout: unknown field")
    wrong = triton.InferInput("tokens", [1, 2], "INT64")
    wrong.set_data_from_numpy(np.array([[1, 2]], dtype=np.int64))
    status, message = refused(lambda: client.infer("production", [wrong]))
    assert status == "400" and message.startswith("inputs[0].name: this model's one input is 'prefix'")
    floats = triton.InferInput("prefix", [1, 2], "FP32")
    floats.set_data_from_numpy(np.array([[1, 2]], dtype=np.float32))
    status, message = refused(lambda: client.infer("production", [floats]))
    assert status == "400" and message.startswith("inputs[0].datatype: prefix is INT64")
    status, message = refused(lambda: infer(client, prefixes(4096, 5, 1), parameters={"k": 50}))
    assert status == "400" and "SEQ2SEQ_MAX_BATCH_ANSWER_BYTES" in message and message.startswith("prefix:")
    status, message = refused(lambda: infer(client, prefixes(1, 2, 0), name="m-never-registered"))
    assert status == "403"
    status, message = refused(lambda: infer(client, prefixes(1, 2, 0), name="m-never-registered", headers=KEY))
    assert status == "404"


def test_versions_are_the_models_an_alias_named_and_a_version_pins_the_model(make_server, weights_copy):
    server = make_server(weights_dir=weights_copy, SEQ2SEQ_JOB_WORKERS="0").start()
    server.wait_ready()
    client = client_of(server)
    with server.client() as http:
        assert http.put("/aliases/champion", json={"model": "default", "public": True}).status_code == 200
        assert http.put("/aliases/champion", json={"model": "alt"}).status_code == 200
        assert http.post("/models/alt/activate").status_code == 200
    data = prefixes(3, 3, seed=3)
    for name in ("champion", "production"):
        assert client.get_model_metadata(name)["versions"] == ["alt", "default"]
        assert client.get_model_metadata(name)["parameters"]["model"] == "alt"
        assert client.get_model_metadata(name, "default", headers=KEY)["parameters"]["model"] == "default"
        assert infer(client, data, name=name).get_response()["model_version"] == "alt"
        pinned = infer(client, data, name=name, version="default", headers=KEY)
        assert pinned.get_response()["model_version"] == "default"
        np.testing.assert_array_equal(pinned.as_numpy("sequence"), infer(client, data, name=name).as_numpy("sequence"))
        with pytest.raises(InferenceServerException) as refused:  # an older version is a model id like any other
            infer(client, data, name=name, version="default")
        assert refused.value.status() == "403"
        assert infer(client, data, name=name, version="alt").get_response()["model_version"] == "alt"
    assert client.get_model_metadata("alt", headers=KEY)["versions"] == ["alt"]
    with pytest.raises(InferenceServerException) as elsewhere:  # a model id's only version is itself
        infer(client, data, name="alt", version="default", headers=KEY)
    assert elsewhere.value.status() == "404"


def test_sessions_pick_the_rollout_arm_and_impressions_ride_in_parameters(make_server, weights_copy):
    server = make_server(weights_dir=weights_copy, SEQ2SEQ_JOB_WORKERS="0", SEQ2SEQ_ROLLOUT_DECIDE_S="60").start()
    server.wait_ready()
    client = client_of(server)
    with server.client() as http:
        started = http.post("/rollouts", json={"candidate": "alt", "steps": [50, 100]})
        assert started.status_code == 201, started.text
        rollout = started.json()["id"]
    data = prefixes(2, 2, seed=5)

    def arm(session: str) -> dict:
        return infer(client, data, parameters={"k": 3, "session": session}).get_response()

    poll(lambda: "rollout" in (arm("s-0").get("parameters") or {}), 10, message="the rollout to be followed")
    seen = {}
    for i in range(40):
        answer = arm(f"s-{i}")
        seen[answer["parameters"]["arm"]] = answer
        assert answer["parameters"]["rollout"] == rollout
        assert answer["model_version"] == {"control": "default", "candidate": "alt"}[answer["parameters"]["arm"]]
        assert arm(f"s-{i}")["parameters"]["arm"] == answer["parameters"]["arm"]  # a session keeps its arm
    assert set(seen) == {"control", "candidate"}
    header = infer(client, data, parameters={"k": 3}, headers={"X-Session-ID": "s-7"}).get_response()
    assert header["parameters"]["arm"] == arm("s-7")["parameters"]["arm"]  # the header is the same session
    result = infer(client, data, parameters={"k": 3, "session": "user-42"})
    tokens = result.get_response()["parameters"]["impressions"].split(",")
    assert len(tokens) == 2
    for token, suggestions in zip(tokens, result.as_numpy("topk_sequences").tolist()):
        taken = httpx.post(f"{server.url}/feedback", json={"impression": token, "accepted": suggestions[1]})
        assert taken.status_code == 202, taken.text
    greedy_only = infer(client, data, parameters={"session": "user-42"}).get_response()
    assert "impressions" not in greedy_only["parameters"]  # impressions name suggestions shown: top-k only
