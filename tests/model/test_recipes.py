"""Training recipes: the product's defaults, the seed's preset, explicit fields over either, Adam as torch's."""
import importlib.util
import inspect
import itertools
from pathlib import Path
from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from model.config import RECIPES, ModelConfig, Recipe, TrainConfig
from model.jobspec import parse_job
from model.network import Seq2Seq
from model.optim import Adam

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "seed_reference.py"
SEED = {"steps": 2000, "batch_size": 64, "learning_rate": 0.005, "teacher_forcing_ratio": 0.5, "eval_every": 100,
        "lr_decay": 0.0, "full_batch": 0}  # the seed's loop: 2000 epochs of 64, Adam at 0.005, constant


def test_the_seed_preset_is_the_seeds_recipe():
    cfg = TrainConfig(recipe="seed")
    assert {k: getattr(cfg, k) for k in SEED} == SEED
    assert all(cfg.learning_rate_at(s) == 0.005 for s in (1, 1000, 2000))
    assert parse_job({"dataset": {"generator": "random"}, "training": {"recipe": "seed"}}).training == cfg


@pytest.mark.skipif(not REFERENCE.exists(), reason="the seed's reference is not beside this checkout")
def test_the_seed_preset_matches_the_reference_script():
    spec = importlib.util.spec_from_file_location("seed_reference", REFERENCE)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    cfg = TrainConfig(recipe="seed")
    source = inspect.getsource(ref.main)
    assert ref.batch_size == cfg.batch_size
    assert f"lr={cfg.learning_rate}" in source and f'"--epochs", type=int, default={cfg.steps}' in source
    assert f'"--eval-every", type=int, default={cfg.eval_every}' in source
    assert inspect.signature(ref.Seq2Seq.forward).parameters["teacher_forcing_ratio"].default == cfg.teacher_forcing_ratio


def test_defaults_are_the_default_recipe_and_given_fields_override_a_preset():
    assert TrainConfig() == TrainConfig(recipe="default") == TrainConfig.from_dict({})
    assert {k: getattr(TrainConfig(), k) for k in RECIPES["default"]} == RECIPES["default"]
    mixed = TrainConfig.from_dict({"recipe": "seed", "steps": 300, "teacher_forcing_ratio": 1.0, "learning_rate": None})
    assert (mixed.steps, mixed.teacher_forcing_ratio, mixed.batch_size, mixed.learning_rate) == (300, 1.0, 64, 0.005)
    assert TrainConfig.from_dict(mixed.to_dict()) == mixed
    with pytest.raises(ValueError, match="recipe must be one of"):
        TrainConfig(recipe="fast")
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=1.5)


def test_every_recipe_name_has_its_values():
    assert set(get_args(Recipe)) == set(RECIPES)  # the API lists get_args(Recipe); TrainConfig reads RECIPES


def test_the_learning_rate_falls_to_almost_zero_over_the_decay_fraction():
    cfg = TrainConfig(steps=100, learning_rate=0.02, lr_decay=0.5)
    rates = [cfg.learning_rate_at(s) for s in range(1, 101)]
    assert rates[:50] == [0.02] * 50
    assert all(a > b for a, b in itertools.pairwise(rates[49:]))  # from the last constant step on, falling
    assert 0 < rates[-1] < 0.001


def test_adam_gives_torch_adams_weights():
    torch.manual_seed(0)
    a, b = Seq2Seq(ModelConfig()), Seq2Seq(ModelConfig())
    b.load_state_dict(a.state_dict())
    ours, theirs = Adam(a.parameters(), lr=0.01), torch.optim.Adam(b.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randint(1, 10, (16, 5), generator=gen)
        for model, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            F.cross_entropy(model(x, x).reshape(-1, 10), x[:, 1:].reshape(-1)).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
