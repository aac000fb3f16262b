"""Schedules against values recorded from torch.optim.lr_scheduler (tests/fixtures/schedules.json).

The fixture script steps each torch scheduler once per update; value `t` is the rate torch uses
for update `t`, which is what `schedule(t)` must give. The functions below are the documented
mapping from torch's arguments to ours; torch itself is not needed to run these tests.
"""

import json
import pathlib

import keras
import numpy as np
import pytest

from keras_momentum import schedules

FIXTURES = json.loads(
    (pathlib.Path(__file__).parent / "fixtures" / "schedules.json").read_text()
)["cases"]
CASES = {case["name"]: case for case in FIXTURES}


def _part(base_lr, name, kwargs):
    """One torch scheduler as our schedule, for a parameter group whose rate is `base_lr`."""
    if name == "StepLR":
        return schedules.StepDecay(base_lr, kwargs["step_size"], kwargs.get("gamma", 0.1))
    if name == "MultiStepLR":
        return schedules.MultiStepDecay(base_lr, kwargs["milestones"], kwargs.get("gamma", 0.1))
    if name == "ExponentialLR":
        return schedules.ExponentialDecay(base_lr, 1, kwargs["gamma"])
    if name == "CosineAnnealingLR":
        return schedules.CosineDecay(base_lr, kwargs["T_max"], kwargs.get("eta_min", 0.0))
    if name == "CosineAnnealingWarmRestarts":
        return schedules.CosineRestarts(
            base_lr,
            kwargs["T_0"],
            t_mul=float(kwargs.get("T_mult", 1)),
            min_learning_rate=kwargs.get("eta_min", 0.0),
        )
    if name == "LinearLR":
        return schedules.Linear(
            base_lr * kwargs.get("start_factor", 1.0 / 3),
            base_lr * kwargs.get("end_factor", 1.0),
            kwargs.get("total_iters", 5),
        )
    if name == "CyclicLR":
        return schedules.Cyclical(
            kwargs["base_lr"], kwargs["max_lr"], kwargs["step_size_up"], kwargs["mode"],
            kwargs["gamma"],
        )
    if name == "OneCycleLR":
        return schedules.OneCycle(
            kwargs["max_lr"],
            kwargs["total_steps"],
            pct_start=kwargs["pct_start"],
            div_factor=kwargs["div_factor"],
            final_div_factor=kwargs["final_div_factor"],
            anneal=kwargs["anneal_strategy"],
            three_phase=kwargs["three_phase"],
        )
    if name == "SequentialLR":
        parts = [_part(base_lr, part, part_kwargs) for part, part_kwargs in kwargs["parts"]]
        return schedules.Sequential(parts, kwargs["milestones"])
    raise AssertionError(f"no mapping for {name}")


def _values(schedule, steps):
    return np.array([float(keras.ops.convert_to_numpy(schedule(t))) for t in range(steps)])


def _assert_matches(actual, expected):
    np.testing.assert_allclose(actual, np.array(expected), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_learning_rates_match_torch(name):
    case = CASES[name]
    schedule = _part(case["base_lr"], case["scheduler"], case["kwargs"])
    _assert_matches(_values(schedule, len(case["learning_rates"])), case["learning_rates"])


@pytest.mark.parametrize("name", sorted(n for n in CASES if "momenta" in CASES[n]))
def test_one_cycle_momentum_matches_torch(name):
    case = CASES[name]
    kwargs = case["kwargs"]
    momentum = _part(case["base_lr"], case["scheduler"], kwargs).momentum_schedule(
        base_momentum=kwargs["base_momentum"], max_momentum=kwargs["max_momentum"]
    )
    _assert_matches(_values(momentum, len(case["momenta"])), case["momenta"])


def test_exponential_decay_over_several_steps_is_torch_gamma_root():
    # torch's ExponentialLR(gamma) decays per step: decay_rate per 4 steps is gamma ** 4.
    case = CASES["exponential_per_4_steps"]
    schedule = schedules.ExponentialDecay(case["base_lr"], decay_steps=4, decay_rate=0.5)
    _assert_matches(_values(schedule, len(case["learning_rates"])), case["learning_rates"])


def test_linear_warmup_wrapper_matches_torch_sequential():
    # LinearLR(start_factor=0.1, total_iters=5) then CosineAnnealingLR(T_max=20) in SequentialLR
    # is a linear warmup from 0.01 into a cosine that starts at the end of warmup.
    case = CASES["sequential_warmup_cosine"]
    schedule = schedules.Warmup(
        schedules.CosineDecay(0.1, 20), warmup_steps=5, initial_learning_rate=0.01
    )
    _assert_matches(_values(schedule, len(case["learning_rates"])), case["learning_rates"])


def test_fixtures_cover_every_torch_scheduler_named_in_the_brief():
    covered = {case["scheduler"] for case in FIXTURES}
    assert covered >= {
        "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts", "OneCycleLR", "CyclicLR", "LinearLR", "SequentialLR",
    }
    one_cycle = [case["kwargs"] for case in FIXTURES if case["scheduler"] == "OneCycleLR"]
    assert {(k["anneal_strategy"], k["three_phase"]) for k in one_cycle} == {
        ("cos", False), ("cos", True), ("linear", False), ("linear", True)
    }
    assert {c["kwargs"]["mode"] for c in FIXTURES if c["scheduler"] == "CyclicLR"} == {
        "triangular", "triangular2", "exp_range"
    }
