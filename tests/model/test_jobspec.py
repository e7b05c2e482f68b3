"""One job body, one set of rules: the reader of stored bodies and files, the spec it builds, and its JSON again."""
import pytest

from model.config import ModelConfig, TrainConfig
from model.jobspec import DEFAULT_ACTIVATE, DEFAULT_MAX_ATTEMPTS, JobError, JobSpec, parse_job

CORPUS = [[7, 2, 8, 4, 3], [7, 2, 8, 4, 3], [7, 6, 5, 2, 8]]


def test_a_body_reads_into_a_spec_that_writes_back_the_same_job():
    spec = parse_job({"dataset": {"sequences": CORPUS}, "model": {"hidden_dim": 8},
                      "training": {"recipe": "seed", "steps": 7, "prefix_lengths": [2, 1, 2]}, "name": "n"})
    assert spec.model == ModelConfig(hidden_dim=8) and spec.sequences == CORPUS and spec.name == "n"
    assert spec.training == TrainConfig(recipe="seed", steps=7, prefix_lengths=(1, 2))
    assert (spec.activate, spec.max_attempts) == (DEFAULT_ACTIVATE, DEFAULT_MAX_ATTEMPTS)
    body = spec.to_dict()
    assert body["training"]["learning_rate"] == 0.005  # the recipe's value, written out when the job is stored
    assert "eval_size" not in body["training"] and parse_job(body) == spec
    random = parse_job({"dataset": {"generator": "random"}, "activate": "never", "max_attempts": 3})
    assert random.sequences is None and parse_job(random.to_dict()) == random


@pytest.mark.parametrize("body,field", [
    ({"dataset": {"sequences": [[1, 2, 3]]}}, "dataset.sequences[0]"),
    ({"dataset": {"sequences": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 10]]}}, "dataset.sequences[1][4]"),
    ({"dataset": {"sequences": [[1, 2, 3, 4, True]]}}, "dataset.sequences[0][4]"),
    ({"dataset": {"generator": "random"}, "model": {"hidden_dim": 513}}, "model.hidden_dim"),
    ({"dataset": {"generator": "random"}, "model": {"vocab_size": 1}}, "model.vocab_size"),
    ({"dataset": {"generator": "random"}, "training": {"steps": 0}}, "training.steps"),
    ({"dataset": {"generator": "random"}, "training": {"learning_rate": "fast"}}, "training.learning_rate"),
    ({"dataset": {"generator": "random"}, "training": {"recipe": "fast"}}, "training.recipe"),
    ({"dataset": {"generator": "random"}, "training": {"prefix_lengths": [6]}}, "training.prefix_lengths"),
    ({"dataset": {"generator": "random"}, "training": {"eval_size": 5}}, "training.eval_size"),
    ({"dataset": {"generator": "random"}, "max_attempts": 11}, "max_attempts"),
    ({"dataset": {"generator": "random"}, "colour": "red"}, "colour"),
    ({"dataset": {"generator": "fibonacci"}}, "dataset.generator"),
    ({"dataset": {"colours": ["red"]}}, "dataset"),
    ({}, "dataset"),
])
def test_a_refusal_names_the_field_as_it_was_sent(body, field):
    with pytest.raises(JobError) as caught:
        parse_job(body)
    assert caught.value.field == field


def test_a_spec_is_valid_however_it_is_built():
    with pytest.raises(JobError, match=r"model\.hidden_dim"):
        JobSpec(ModelConfig(hidden_dim=1000), TrainConfig(), None)
    with pytest.raises(JobError, match=r"dataset\.sequences\[0\]\[1\]: token 12"):
        JobSpec(ModelConfig(), TrainConfig(), [[1, 12, 3, 4, 5]])


def test_a_sampled_corpus_gets_the_width_its_distinct_sequences_call_for():
    """model/config.py sampled_defaults: the default recipe widens the network (and lowers its rate) for a sampled
    corpus with many distinct sequences; a width given, an exact corpus, the seed's recipe and a few hundred
    distinct sequences keep the seed's shape, and the resolved body reads back into the same job."""
    rich = [[a, b, c, d, e] for a in range(10) for b in range(10) for c in range(4) for d in range(3) for e in (0,)]
    assert len(rich) == 1200
    wide = parse_job({"dataset": {"sequences": rich}})
    assert (wide.model.embedding_dim, wide.model.hidden_dim, wide.training.learning_rate,
            wide.training.batch_size) == (32, 128, 0.01, 128)
    assert parse_job(wide.to_dict()) == wide
    assert parse_job({"dataset": {"sequences": rich}, "training": {"learning_rate": 0.02}}).training.learning_rate == 0.02
    assert parse_job({"dataset": {"sequences": rich}, "training": {"batch_size": 32}}).training.batch_size == 32
    seed_shape = ModelConfig()
    for body in ({"dataset": {"sequences": rich}, "model": {"hidden_dim": 32}},
                 {"dataset": {"sequences": rich, "frequencies": "exact"}},
                 {"dataset": {"sequences": rich}, "training": {"recipe": "seed"}},
                 {"dataset": {"sequences": rich[:799] * 2}},
                 {"dataset": {"generator": "random"}}):
        spec = parse_job(body)
        assert (spec.model.embedding_dim, spec.model.hidden_dim) == (seed_shape.embedding_dim, seed_shape.hidden_dim)
        assert spec.training.learning_rate == TrainConfig(recipe=spec.training.recipe).learning_rate
        assert spec.training.batch_size == TrainConfig(recipe=spec.training.recipe).batch_size
