"""The training budget rule (FitConfig.budget): a number of optimisation steps, so that a small
training set gets enough updates and a large one no more epochs than it needs; patience and
warmup scale with the budget; conflicting settings are refused; the run records what it used."""

from __future__ import annotations

import json
import math

import pytest

from skill.errors import ConfigError
from skill.heads.config import FitConfig
from skill.heads.train import fit

STORE = "unused.zarr"  # the budget reads no store


def config(**fields) -> FitConfig:
    return FitConfig(store=STORE, head="mean", **fields)


def test_a_small_training_set_gets_min_steps_not_thirty_epochs():
    budget = config().budget(train_takes=120)  # the demo's training split
    assert budget.rule == "derived"
    assert budget.steps_per_epoch == 4  # 120 / 32, rounded up
    assert budget.steps >= 1000 and budget.steps == budget.epochs * 4
    assert budget.epochs == 250  # not the 30 that gave 120 steps
    assert budget.warmup_steps == int(0.1 * budget.steps)


def test_a_large_training_set_gets_min_epochs_not_more():
    budget = config().budget(train_takes=2000)  # EgoExo4D's scale
    assert budget.steps_per_epoch == 63
    assert budget.epochs == 30  # min_steps asks for 16 epochs; min_epochs wins
    assert budget.steps == 30 * 63
    # Growing the set never adds epochs; growing the steps it would need never drops below.
    epochs = [config().budget(n).epochs for n in (120, 500, 1000, 2000, 20000)]
    assert epochs == sorted(epochs, reverse=True) and epochs[-1] == 30
    assert all(config().budget(n).steps >= 1000 for n in (1, 120, 500, 1000, 2000, 20000))


def test_patience_is_a_fraction_of_the_budget():
    small, large = config().budget(120), config().budget(2000)
    assert small.patience == math.ceil(0.25 * small.epochs)  # 63 of 250 epochs
    assert large.patience == math.ceil(0.25 * large.epochs)  # 8 of 30 epochs
    assert config(patience_frac=0.5).budget(2000).patience == 15
    assert config(patience_frac=0).budget(2000).patience == 0  # never stop early
    assert config(patience_frac=0.01).budget(2000).patience == 1  # at least one epoch
    assert config(patience=5).budget(120).patience == 5  # given in epochs: kept


def test_steps_or_epochs_given_set_the_budget():
    by_steps = config(steps=1000).budget(2000)
    assert (by_steps.rule, by_steps.epochs, by_steps.steps) == ("steps", 16, 1008)  # whole epochs
    by_epochs = config(epochs=3).budget(120)
    assert (by_epochs.rule, by_epochs.epochs, by_epochs.steps) == ("epochs", 3, 12)
    assert config(min_steps=0).budget(120).epochs == 30
    assert config(min_epochs=1, min_steps=100).budget(120).epochs == 25
    # adapt: a step is grad_accum batches
    assert config(epochs=2, batch_size=2).budget(10, grad_accum=2).steps == 2 * 3


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"steps": 100, "epochs": 3}, "one way: --steps or --epochs"),
        ({"epochs": 3, "min_steps": 50}, "--min-steps"),
        ({"steps": 100, "min_epochs": 5}, "--min-epochs"),
        ({"patience": 4, "patience_frac": 0.5}, "--patience .* or --patience-frac"),
        ({"steps": 0}, "--steps must be at least 1, not 0"),
        ({"patience_frac": 1.5}, "--patience-frac"),
    ],
)
def test_conflicting_or_bad_budget_settings_are_refused(fields, named):
    with pytest.raises(ConfigError, match=named):
        config(**fields)


def test_the_run_records_and_follows_its_budget(store, tmp_path):
    cfg = FitConfig(store=str(store.path), head="mean", hidden=16, batch_size=16, steps=30,
                    patience_frac=0, plots=False, out_dir=str(tmp_path))  # fmt: skip
    result = fit(cfg)
    recorded = json.loads((result.run_dir / "config.json").read_text())
    schedule, peak = recorded["schedule"], recorded["fit"]["lr"]
    n_train = result.metrics["train"]["n"]
    per_epoch = math.ceil(n_train / 16)
    assert schedule["steps_per_epoch"] == per_epoch and schedule["train_takes"] == n_train
    assert schedule["epochs"] == math.ceil(30 / per_epoch) == result.metrics["epochs_run"]
    assert schedule["steps"] == schedule["steps_run"] == schedule["epochs"] * per_epoch
    assert (schedule["rule"], schedule["patience"]) == ("steps", 0)
    lrs = [row["lr"] for row in result.metrics["history"]]
    assert peak == 1e-3  # the mean head's default, resolved in config.json
    assert 0.8 * peak < max(lrs) <= peak and lrs[-1] < 1e-9  # up, then the cosine to 0


def test_adapt_takes_its_budget_the_same_way(tmp_path):
    from skill.adapt.config import AdaptConfig
    from skill.adapt.train import fit_config

    def adapt(**fields) -> AdaptConfig:
        return AdaptConfig.from_settings(tmp_path / "takes.jsonl", tmp_path / "out",
                                         backbone="tiny-timesformer", batch_size=2,
                                         grad_accum=2, **fields)  # fmt: skip

    assert adapt().fit.epochs == 4  # SkillFormer's, when neither is given
    budget = fit_config(adapt(steps=10), "cpu").budget(train_takes=12, grad_accum=2)
    assert (budget.rule, budget.steps_per_epoch, budget.epochs, budget.steps) == ("steps", 3, 4, 12)
    assert fit_config(adapt(), "cpu").budget(12, 2).patience == 0  # adapt's patience: epochs
    with pytest.raises(ConfigError, match="one way: --steps or --epochs"):
        adapt(steps=10, epochs=2)
