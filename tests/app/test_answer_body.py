"""An answer's JSON body is written when first read, once (app.inference.cache.Answer): an Open Inference Protocol
request reads the values only, and never pays for the JSON."""
import json

from app.inference.cache import Answer


def test_the_body_is_written_on_first_read_and_kept():
    calls = []

    def write() -> bytes:
        calls.append(1)
        return json.dumps({"sequence": [7, 2, 8, 4, 3]}).encode()

    answer = Answer(write, sequences=([7, 2, 8, 4, 3],), probabilities=(0.25,))
    assert answer.sequences == ([7, 2, 8, 4, 3],) and answer.probabilities == (0.25,)
    assert calls == []
    first = answer.body
    assert json.loads(first) == {"sequence": [7, 2, 8, 4, 3]}
    assert answer.body is first
    assert calls == [1]


def test_a_body_given_as_bytes_is_served_as_it_is():
    answer = Answer(b'{"k":1}', facts=b"facts")
    assert answer.body == b'{"k":1}' and answer.facts == b"facts"
