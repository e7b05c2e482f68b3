"""The one-row fast answer of the Open Inference Protocol (codec.greedy_row) writes the general encoder's bytes."""
import json

import pytest

from app.http.oip import codec
from app.inference.cache import Answer


@pytest.mark.parametrize("probability", [0.123456789, 1.0, 1e-9, 0.5, 2.5e-05])
@pytest.mark.parametrize("request_id", [None, 'r"1', "é"])
def test_greedy_row_equals_the_general_encoding(probability, request_id):
    body = {"inputs": [{"name": "prefix", "datatype": "INT64", "shape": [1, 4], "data": [7, 2, 8, 4]}]}
    asked = codec.parse(json.dumps(body).encode(), None, None)
    assert asked.outputs == codec.SINGLE_ROW_OUTPUTS
    answer = Answer(b"{}", sequences=((7, 2, 8, 4, 1),), probabilities=(probability,))
    general = codec.encode("production", "default", request_id, {}, codec.tensors(asked, [answer], [], 5),
                           dict(asked.outputs))
    fast = codec.greedy_row("production", "default", request_id, answer.sequences[0], probability, 5)
    assert fast == general
    assert json.loads(fast.body)["outputs"][1]["data"] == [probability]
