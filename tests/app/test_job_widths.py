"""POST /jobs's schema leaves a width unset unless the body gives one, so the default recipe's width rule
(model.config.sampled_defaults) decides it from the corpus, as it does for `python -m model train --job`."""
import itertools
import random

import pytest

from app.http.job_schemas import JobRequest


def corpus(distinct: int) -> list[list[int]]:
    seqs = [list(s) for s in itertools.islice(itertools.product(range(10), repeat=5), distinct)]
    random.Random(0).shuffle(seqs)
    return seqs + seqs[:10]  # repeats do not count


@pytest.mark.parametrize(("distinct", "frequencies", "model", "widths"), [
    (800, "sampled", {}, (32, 128)),
    (799, "sampled", {}, (16, 32)),
    (800, "exact", {}, (16, 32)),
    (800, "sampled", {"hidden_dim": 48}, (16, 48)),
    (800, "sampled", {"embedding_dim": None, "hidden_dim": None}, (32, 128)),
])
def test_a_body_without_widths_gets_the_corpus_width(distinct, frequencies, model, widths):
    body = {"dataset": {"sequences": corpus(distinct), "frequencies": frequencies}, "model": model}
    spec = JobRequest.model_validate(body).to_spec()
    assert (spec.model.embedding_dim, spec.model.hidden_dim) == widths
